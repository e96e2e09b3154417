//! The syntax tree of a bpftrace-language script, as the parser builds it.
//!
//! The tree is plain data: later stages match on it exhaustively, and every
//! node that a later stage may report a problem about carries a [`Span`].
//! The parser accepts more than the compiler supports, so that later stages
//! can reject a construct with a precise message instead of a syntax error.
//!
//! What exists:
//!
//! * [`Program`]: C definitions (`#include`, `#define`, `struct X { ... }`)
//!   kept as raw text, then probes.
//! * [`Probe`]: one or more [`AttachPoint`]s, an optional predicate
//!   `/expr/`, and a [`Block`].
//! * [`AttachPoint`]: the provider as written and normalized to a
//!   [`Provider`] (`t` and `tracepoint` are both `Provider::Tracepoint`), and
//!   an [`AttachTarget`] with each part as a [`Name`] or number with its span.
//! * [`StatementKind`]: expression statements, assignments to variables and
//!   maps (plain and compound), `let`, `if`/`else if`/`else`, `unroll`,
//!   `while`, `for ($k : @map)` and `for ($i : a..b)`, `return`, `break`,
//!   `continue`, and nested blocks. `delete(@m[k])`, `printf(...)` and
//!   `exit()` are calls, like every other builtin function.
//! * [`ExprKind`]: integer, string and boolean literals, identifiers,
//!   `$var`, `$1` and `$#`, maps `@m` and `@m[k1, k2]`, calls, unary and
//!   binary operators, `?:`, casts, `.field` and `->field`, `[index]`,
//!   tuples, `++`/`--`, `sizeof` and `offsetof`. Builtins such as `pid`,
//!   `comm`, `arg0` and `args` are identifiers until the type checker
//!   resolves them.
//!
//! [`Program::to_sexpr`] prints the tree as S-expressions for tests and for
//! dumping the tree.

mod sexpr;

use super::span::Span;

/// A whole script.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub c_definitions: Vec<CDefinition>,
    pub probes: Vec<Probe>,
    pub span: Span,
}

/// C source at the top of a script, kept as raw text.
#[derive(Clone, Debug, PartialEq)]
pub struct CDefinition {
    pub kind: CDefinitionKind,
    pub text: String,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CDefinitionKind {
    /// A preprocessor line such as `#include <linux/sched.h>`.
    Preprocessor,
    /// A `struct`, `union` or `enum` definition, or a `typedef`.
    Type,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub attach_points: Vec<AttachPoint>,
    pub predicate: Option<Expr>,
    pub body: Block,
    pub span: Span,
}

/// One attach point, such as `kprobe:vfs_read` or `interval:ms:100`.
#[derive(Clone, Debug, PartialEq)]
pub struct AttachPoint {
    pub provider: Provider,
    /// The provider as written (`t`, `kfunc`, ...), for messages.
    pub provider_name: Name,
    pub target: AttachTarget,
    /// The whole attach point as written, quotes included.
    pub raw: String,
    pub span: Span,
}

/// The kind of event an attach point names. Aliases map to one variant:
/// `k` to `Kprobe`, `kfunc` and `f` to `Fentry`, `t` to `Tracepoint`, and
/// so on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    Begin,
    End,
    Kprobe,
    Kretprobe,
    Uprobe,
    Uretprobe,
    Usdt,
    Tracepoint,
    RawTracepoint,
    Fentry,
    Fexit,
    Software,
    Hardware,
    Profile,
    Interval,
    Watchpoint,
    AsyncWatchpoint,
    Iter,
    Lsm,
}

impl Provider {
    /// Returns the provider's full name, which messages use.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Begin => "BEGIN",
            Provider::End => "END",
            Provider::Kprobe => "kprobe",
            Provider::Kretprobe => "kretprobe",
            Provider::Uprobe => "uprobe",
            Provider::Uretprobe => "uretprobe",
            Provider::Usdt => "usdt",
            Provider::Tracepoint => "tracepoint",
            Provider::RawTracepoint => "rawtracepoint",
            Provider::Fentry => "fentry",
            Provider::Fexit => "fexit",
            Provider::Software => "software",
            Provider::Hardware => "hardware",
            Provider::Profile => "profile",
            Provider::Interval => "interval",
            Provider::Watchpoint => "watchpoint",
            Provider::AsyncWatchpoint => "asyncwatchpoint",
            Provider::Iter => "iter",
            Provider::Lsm => "lsm",
        }
    }
}

/// The target of an attach point, by provider.
#[derive(Clone, Debug, PartialEq)]
pub enum AttachTarget {
    /// `BEGIN` and `END`.
    None,
    /// `kprobe:[MODULE:]FUNCTION[+OFFSET]`, `kprobe:ADDRESS`, and the same
    /// for `kretprobe`.
    Kprobe {
        module: Option<Name>,
        location: Location,
    },
    /// `fentry:[MODULE:]FUNCTION`, and the same for `fexit`.
    Fentry {
        module: Option<Name>,
        function: Name,
    },
    /// `uprobe:[BINARY:][LANGUAGE:]LOCATION`, and the same for `uretprobe`.
    /// The binary is omitted when a PID selects the process.
    Uprobe {
        binary: Option<Name>,
        language: Option<Name>,
        location: Location,
    },
    /// `usdt:[BINARY:][PROVIDER:]NAME`.
    Usdt {
        binary: Option<Name>,
        provider: Option<Name>,
        name: Name,
    },
    /// `tracepoint:CATEGORY:NAME`.
    Tracepoint { category: Name, name: Name },
    /// `rawtracepoint:[MODULE:]NAME`.
    RawTracepoint { module: Option<Name>, name: Name },
    /// `software:EVENT[:COUNT]` and `hardware:EVENT[:COUNT]`; the count is
    /// the sampling period in events.
    PerfEvent { event: Name, count: Option<Number> },
    /// `profile:UNIT:N`, `interval:UNIT:N`, or the short forms
    /// `interval:100ms` and `profile:99hz`.
    Timer {
        unit: RateUnit,
        unit_span: Span,
        value: Number,
    },
    /// `watchpoint:ADDRESS:LENGTH:MODE`; the address is kept as text because
    /// it may also be written `FUNCTION+argN`.
    Watchpoint {
        address: Name,
        length: Number,
        mode: Name,
    },
    /// `iter:OBJECT[:PIN_PATH]`.
    Iter { object: Name, pin: Option<Name> },
    /// `lsm:HOOK`.
    Lsm { hook: Name },
}

/// A symbol or an address inside a kernel function or a binary.
#[derive(Clone, Debug, PartialEq)]
pub enum Location {
    /// `FUNCTION` or `FUNCTION+OFFSET`; the name may contain the wildcards
    /// `*` and `?`.
    Symbol { name: Name, offset: Option<Number> },
    /// A numeric address such as `0xffffffff81000000`.
    Address(Number),
}

/// The unit of a `profile` or `interval` attach point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    Hertz,
    Seconds,
    Milliseconds,
    Microseconds,
}

impl RateUnit {
    /// Returns the unit as written in an attach point.
    pub fn name(self) -> &'static str {
        match self {
            RateUnit::Hertz => "hz",
            RateUnit::Seconds => "s",
            RateUnit::Milliseconds => "ms",
            RateUnit::Microseconds => "us",
        }
    }
}

/// A piece of text from the script with its span, such as a function name
/// in an attach point or a field name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

impl Name {
    /// Returns true if the name contains a `*` or `?` wildcard.
    pub fn has_wildcard(&self) -> bool {
        self.text.contains(['*', '?'])
    }
}

/// A number inside an attach point, with its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number {
    pub value: u64,
    pub span: Span,
}

/// A `{ ... }` list of statements.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub statements: Vec<Statement>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub kind: StatementKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StatementKind {
    Expr(Expr),
    /// `target = value`, or `target op= value` when `op` is set.
    Assign {
        target: AssignTarget,
        op: Option<BinaryOp>,
        value: Expr,
    },
    /// `let $x`, `let $x = value` or `let $x: type = value`.
    Let {
        variable: Variable,
        ty: Option<TypeExpr>,
        value: Option<Expr>,
    },
    If {
        condition: Expr,
        then_block: Block,
        else_branch: Option<ElseBranch>,
    },
    /// `unroll (count) { ... }`; the count must be a constant, which the type
    /// checker enforces.
    Unroll {
        count: Expr,
        body: Block,
    },
    While {
        condition: Expr,
        body: Block,
    },
    For {
        variable: Variable,
        iterable: ForIterable,
        body: Block,
    },
    Return(Option<Expr>),
    Break,
    Continue,
    Block(Block),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ElseBranch {
    /// `else if (...) { ... }`; the statement is always `StatementKind::If`.
    If(Box<Statement>),
    Block(Block),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ForIterable {
    /// `for ($kv : @map)`: each element is a `(key, value)` tuple.
    Map(MapRef),
    /// `for ($i : start..end)`, end excluded.
    Range { start: Expr, end: Expr },
}

/// The variable or map element that an assignment, `++` or `--` writes.
#[derive(Clone, Debug, PartialEq)]
pub enum AssignTarget {
    Variable(Variable),
    Map(MapAccess),
}

impl AssignTarget {
    pub fn span(&self) -> Span {
        match self {
            AssignTarget::Variable(variable) => variable.span,
            AssignTarget::Map(map) => map.span,
        }
    }
}

/// A scratch variable `$name`, without the `$`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub span: Span,
}

/// A map named without keys, as in `for ($kv : @map)`. The name has no `@`
/// and is empty for the anonymous map `@`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapRef {
    pub name: String,
    pub span: Span,
}

/// A map element `@name[k1, k2]`, or the map's single value `@name` when
/// there are no keys. The name has no `@` and is empty for `@`.
#[derive(Clone, Debug, PartialEq)]
pub struct MapAccess {
    pub name: String,
    pub keys: Vec<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Integer(IntegerLiteral),
    /// A string literal's bytes after escapes are resolved; `\xff` makes it
    /// invalid UTF-8, so it is not a `String`.
    String(Vec<u8>),
    Bool(bool),
    /// A bare name: a builtin (`pid`, `comm`, `arg0`, `args`, `kstack`, ...)
    /// or, later, an enum value.
    Identifier(String),
    /// `$name`, without the `$`.
    Variable(String),
    /// A positional parameter `$1`, `$2`, ...
    Positional(u32),
    /// `$#`, the number of positional parameters.
    PositionalCount,
    Map(MapAccess),
    /// `name(args...)`.
    Call {
        name: Name,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `condition ? then_expr : else_expr`.
    Ternary {
        condition: Box<Expr>,
        then_expr: Box<Expr>,
        else_expr: Box<Expr>,
    },
    /// `(type) operand`.
    Cast {
        ty: TypeExpr,
        operand: Box<Expr>,
    },
    /// `base.field` or, with `arrow`, `base->field`. The field is a name or a
    /// tuple index such as `0`.
    Field {
        base: Box<Expr>,
        field: Name,
        arrow: bool,
    },
    /// `base[index]` on anything but a map name.
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    /// `(a, b, ...)`.
    Tuple(Vec<Expr>),
    /// `++x`, `x++`, `--x`, `x--`.
    Increment {
        target: AssignTarget,
        op: IncrementOp,
        position: IncrementPosition,
    },
    /// `sizeof(type)` or `sizeof(expr)`.
    Sizeof(Box<SizeofArg>),
    /// `offsetof(struct X, a.b)`; the path has at least one field.
    Offsetof {
        arg: Box<SizeofArg>,
        fields: Vec<Name>,
    },
    /// Stands in for an expression that failed to parse; a program that
    /// contains it also has an error diagnostic.
    Error,
}

/// An integer literal's value and its C-style suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegerLiteral {
    pub value: u64,
    pub suffix: IntegerSuffix,
}

/// The C-style suffix of an integer literal (`1u`, `2ul`, `3ll`), case
/// ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegerSuffix {
    None,
    Unsigned,
    Long,
    UnsignedLong,
    LongLong,
    UnsignedLongLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `!`
    Not,
    /// `~`
    BitNot,
    /// `-`
    Negate,
    /// `+`
    Plus,
    /// `*`
    Deref,
    /// `&`
    AddressOf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Shl,
    Shr,
    BitAnd,
    BitOr,
    BitXor,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    LogicalAnd,
    LogicalOr,
}

impl BinaryOp {
    /// Returns the operator as written in a script.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Shl => "<<",
            BinaryOp::Shr => ">>",
            BinaryOp::BitAnd => "&",
            BinaryOp::BitOr => "|",
            BinaryOp::BitXor => "^",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::LogicalAnd => "&&",
            BinaryOp::LogicalOr => "||",
        }
    }
}

impl UnaryOp {
    /// Returns the operator as written in a script.
    pub fn symbol(self) -> &'static str {
        match self {
            UnaryOp::Not => "!",
            UnaryOp::BitNot => "~",
            UnaryOp::Negate => "-",
            UnaryOp::Plus => "+",
            UnaryOp::Deref => "*",
            UnaryOp::AddressOf => "&",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrementOp {
    Increment,
    Decrement,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncrementPosition {
    Prefix,
    Postfix,
}

/// The argument of `sizeof` or `offsetof`.
// NOTE: a bare typedef name, as in `sizeof(pid_t)`, parses as
// `Expr(Identifier)` because the parser cannot tell it from a builtin such
// as `pid`, and `(pid_t)x` is not parsed as a cast. Only `struct`, `union`,
// `enum`, builtin type names and names followed by `*` are parsed as types.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeofArg {
    Type(TypeExpr),
    Expr(Expr),
}

/// A type as written in a cast, `sizeof`, `offsetof` or `let`.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// `int8` ... `int64` and `uint8` ... `uint64`.
    Integer {
        signed: bool,
        bits: u8,
    },
    Bool,
    Void,
    Struct(String),
    Union(String),
    Enum(String),
    /// Any other name, such as a kernel typedef (`pid_t`) or `char`, for the
    /// type checker to look up in BTF.
    Named(String),
    Pointer(Box<TypeExpr>),
    Array {
        element: Box<TypeExpr>,
        length: u64,
    },
}
