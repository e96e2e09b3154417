//! Typed translation of a resolved probe's AST to IR.
//!
//! One pass per program: statements and expressions are type-checked as
//! they are translated, against BTF and tracepoint formats, and every
//! problem becomes a diagnostic with the span of the construct at fault.
//! Values stay in 64-bit virtual registers, sign- or zero-extended from
//! their type's width; strings live in stack slots.

mod expr;
mod lsm;
pub mod maps;
mod output;
mod special;
mod strings;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use super::{
    ast::{AssignTarget, Block, ElseBranch, Expr, ExprKind, Statement, StatementKind},
    diagnostic::Diagnostic,
    env::Environment,
    insn::{AluOp, JmpOp, Size},
    ir::{Function, Inst, Label, MapRef, Slot, VReg, Value},
    probes::ResolvedProbe,
    span::{Source, Span},
};

pub use maps::MapTable;
pub use output::{ArgSpec, BUILD_ID_FRAME_SIZE, Frame, MapAction, OutputSpec, Symbols, TRUNCATION_MARK};

/// The ring buffer that carries `printf`, `print` and `exit` records.
pub const EVENTS_MAP: MapRef = MapRef(0);
/// Per-CPU counter of records dropped because the ring buffer was full.
pub const LOST_MAP: MapRef = MapRef(1);
/// The names of kprobe.multi targets, indexed by BPF cookie.
pub const NAMES_MAP: MapRef = MapRef(4);
/// A one-entry array that `exit()` sets to 1, after which the probes of a
/// script that calls `exit()` do nothing.
pub const EXIT_MAP: MapRef = MapRef(5);
/// Largest entry of the names map: longer kernel function names are cut
/// to 127 bytes.
pub const MAX_NAME_SIZE: u32 = 128;

/// Returns the entry size of a names map that contains `names`: the longest
/// name with its NUL, rounded up to 8 bytes, at most [`MAX_NAME_SIZE`].
/// Sizing it to the names keeps `func` small on the BPF stack.
pub fn name_size<'a>(names: impl Iterator<Item = &'a String>) -> u32 {
    let longest = names.map(|name| name.len() as u32 + 1).max().unwrap_or(1);
    longest.next_multiple_of(8).min(MAX_NAME_SIZE)
}

/// Kernel helper function numbers, from `enum bpf_func_id` in
/// `include/uapi/linux/bpf.h`.
pub mod helper {
    pub const MAP_LOOKUP_ELEM: i32 = 1;
    pub const KTIME_GET_NS: i32 = 5;
    pub const KTIME_GET_BOOT_NS: i32 = 125;
    pub const GET_SMP_PROCESSOR_ID: i32 = 8;
    pub const GET_CURRENT_PID_TGID: i32 = 14;
    pub const GET_CURRENT_UID_GID: i32 = 15;
    pub const GET_CURRENT_COMM: i32 = 16;
    pub const GET_STACKID: i32 = 27;
    pub const GET_STACK: i32 = 67;
    pub const PROBE_READ_USER: i32 = 112;
    pub const PROBE_READ_KERNEL: i32 = 113;
    pub const PROBE_READ_USER_STR: i32 = 114;
    pub const PROBE_READ_KERNEL_STR: i32 = 115;
    pub const RINGBUF_RESERVE: i32 = 131;
    pub const RINGBUF_SUBMIT: i32 = 132;
    pub const GET_ATTACH_COOKIE: i32 = 174;
}

/// Settings that change the generated code.
#[derive(Clone, Debug)]
pub struct CodegenOptions {
    /// Only run probes in this process (`-p`).
    pub pid: Option<u32>,
    /// Process id of the `-c` command, for `cpid`.
    pub cpid: Option<u32>,
    /// Default and maximum length of `str()` buffers, NUL included.
    pub max_strlen: u32,
    /// `bpf_ktime_get_ns()` when the run started, for `elapsed`.
    pub start_ktime_ns: u64,
    /// Entry size of the names map that kprobe.multi programs read `func`
    /// and `probe` from.
    pub name_size: u32,
    /// `CLOCK_BOOTTIME` nanoseconds (`bpf_ktime_get_boot_ns`, Linux 5.8
    /// and later) after which every probe but `BEGIN` and `END` returns
    /// at once; 0 for no deadline.
    pub deadline_boot_ns: u64,
}

impl Default for CodegenOptions {
    fn default() -> Self {
        Self {
            pid: None,
            cpid: None,
            max_strlen: 64,
            start_ktime_ns: 0,
            name_size: 8,
            deadline_boot_ns: 0,
        }
    }
}

/// An integer type: width in bytes and signedness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntTy {
    pub bytes: u8,
    pub signed: bool,
}

impl IntTy {
    pub const U64: IntTy = IntTy { bytes: 8, signed: false };
    pub const I64: IntTy = IntTy { bytes: 8, signed: true };
    pub const U32: IntTy = IntTy { bytes: 4, signed: false };
}

/// A typed value produced by an expression.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// An integer, extended to 64 bits according to its type.
    Int { reg: VReg, ty: IntTy },
    /// A pointer. `pointee` is a BTF type id, 0 when unknown or `void`;
    /// `user` marks a user-space address.
    Ptr { reg: VReg, pointee: u32, user: bool },
    /// A NUL-terminated string in a stack slot of `len` bytes.
    Str { slot: Slot, len: u32 },
    /// A string literal, known at compile time.
    Lit(Vec<u8>),
    /// A struct, union or array in kernel or user memory, not read yet.
    Mem { addr: VReg, type_id: u32, user: bool },
    /// `kstack` or `ustack` with a frame limit, collected where it is
    /// used: into the record by `printf` and `print`, as a stack id in a
    /// map key.
    Stack { user: bool, frames: u32 },
    /// Bytes that user space renders (a symbol, an address, a buffer), in
    /// a stack slot.
    Special { slot: Slot, special: crate::script::aggregate::Special },
    /// The `args` builtin itself.
    Args,
    /// The result of a call that returns nothing.
    Void,
}

/// A scratch variable's storage, fixed by its first assignment.
#[derive(Clone, Debug)]
enum Variable {
    Int { reg: VReg, ty: IntTy },
    Ptr { reg: VReg, pointee: u32, user: bool },
    Str { slot: Slot, len: u32 },
}

/// The most IR instructions one probe may expand to. Real scripts stay
/// far below it; the limit stops nested `unroll` blocks from making the
/// compiler spend minutes and gigabytes on a program the kernel would
/// refuse anyway.
const MAX_INSTRUCTIONS: usize = 65_536;

/// Marks a construct that already produced an error diagnostic.
#[derive(Debug)]
pub(crate) struct Reported;

pub(crate) type Result<T> = std::result::Result<T, Reported>;

/// The code generator for one program.
pub(crate) struct Codegen<'a> {
    pub(crate) f: Function,
    env: &'a Environment,
    probe: &'a ResolvedProbe,
    source: &'a Source,
    options: &'a CodegenOptions,
    outputs: &'a mut Vec<OutputSpec>,
    maps: &'a mut MapTable,
    diagnostics: &'a mut Vec<Diagnostic>,
    ctx: VReg,
    variables: HashMap<String, Variable>,
    /// Zeroing of every variable, placed at the program start so that each
    /// variable is initialized on every path.
    variable_inits: Vec<Inst>,
    /// An 8-byte slot that memory reads go through.
    read_buffer: Slot,
    /// `(continue, break)` targets of the enclosing loops.
    loops: Vec<(Label, Label)>,
    /// The program's end, where it returns 0.
    done: Label,
    /// Whether the size limit was already reported.
    too_large: bool,
}

/// Translates one probe body, with its optional predicate, to IR.
pub fn generate(
    probe: &ResolvedProbe,
    predicate: Option<&Expr>,
    body: &Block,
    env: &Environment,
    source: &Source,
    options: &CodegenOptions,
    outputs: &mut Vec<OutputSpec>,
    maps: &mut MapTable,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Function> {
    let mut f = Function::new();
    let ctx = f.vreg();
    let read_buffer = f.permanent_slot(8);
    let done = f.label();
    f.push(Inst::LoadCtx { dst: ctx });
    let prologue_end = f.insts.len();

    let errors_before = diagnostics.iter().filter(|d| d.is_error()).count();
    let mut codegen = Codegen {
        f,
        env,
        probe,
        source,
        options,
        outputs,
        maps,
        diagnostics,
        ctx,
        variables: HashMap::new(),
        variable_inits: Vec::new(),
        read_buffer,
        loops: Vec::new(),
        done,
        too_large: false,
    };

    let is_begin_or_end = matches!(
        probe.kind,
        super::probes::ProbeKind::Begin | super::probes::ProbeKind::End
    );
    if codegen.maps.uses_exit && !is_begin_or_end {
        codegen.skip_after_exit();
    }
    if let (Some(pid), false) = (options.pid, is_begin_or_end) {
        codegen.pid_filter(pid);
    }
    if options.deadline_boot_ns != 0 && !is_begin_or_end {
        codegen.deadline_check(options.deadline_boot_ns);
    }
    if let Some(predicate) = predicate {
        codegen.set_line(predicate.span);
        let mark = codegen.f.temporaries_mark();
        let _ = codegen.condition(predicate, done);
        codegen.f.release_temporaries(mark);
    }
    codegen.block(body);

    let Codegen {
        mut f,
        variable_inits,
        diagnostics,
        ..
    } = codegen;
    f.push(Inst::Label(done));
    f.push(Inst::Exit { value: Value::Imm(0) });

    let errors_after = diagnostics.iter().filter(|d| d.is_error()).count();
    if errors_after > errors_before {
        return None;
    }
    // Variable zeroing goes right after the context load.
    let line = f.lines.first().copied().unwrap_or(0);
    for (i, inst) in variable_inits.into_iter().enumerate() {
        f.insts.insert(prologue_end + i, inst);
        f.lines.insert(prologue_end + i, line);
    }
    f.remove_unreachable();
    Some(f)
}

impl Codegen<'_> {
    /// Returns the BTF that types this probe: its module's split BTF for a
    /// module function, the kernel's otherwise.
    pub(crate) fn btf(&self) -> Option<std::rc::Rc<crate::btf::Btf>> {
        self.probe.module_btf.clone().or_else(|| self.env.btf())
    }

    /// Tells whether the probe runs on a user-space function, whose
    /// untyped pointers point to user memory.
    pub(crate) fn in_user_space(&self) -> bool {
        matches!(self.probe.kind, super::probes::ProbeKind::Uprobe { .. })
    }

    pub(crate) fn error(&mut self, diagnostic: Diagnostic) -> Reported {
        self.diagnostics.push(diagnostic);
        Reported
    }

    fn set_line(&mut self, span: Span) {
        let line = self.source.line_column(span.start).line as u32;
        self.f.set_line(line);
    }

    /// Returns from the program once `exit()` has run, because the events
    /// after it would only fill a ring buffer that is no longer read.
    fn skip_after_exit(&mut self) {
        let value = self.exit_flag();
        let done = self.done;
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: value, rhs: Value::Imm(0), target: done });
        let flag = self.f.vreg();
        self.f.push(Inst::Load { size: Size::DW, dst: flag, base: value, off: 0 });
        self.f.push(Inst::Branch { op: JmpOp::Ne, lhs: flag, rhs: Value::Imm(0), target: done });
    }

    /// Returns a pointer to the exit flag, 0 when the lookup fails.
    pub(crate) fn exit_flag(&mut self) -> VReg {
        self.first_element(EXIT_MAP)
    }

    /// Returns a pointer to element 0 of array `map`, 0 when the lookup
    /// fails.
    pub(crate) fn first_element(&mut self, map: MapRef) -> VReg {
        let key = self.f.slot(4);
        self.f.push(Inst::StoreStack { size: Size::W, slot: key, off: 0, src: Value::Imm(0) });
        let key_address = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: key_address, slot: key, off: 0 });
        let map_address = self.f.vreg();
        self.f.push(Inst::LoadMap { dst: map_address, map });
        let value = self.f.vreg();
        self.f.push(Inst::Call {
            helper: helper::MAP_LOOKUP_ELEM,
            args: vec![map_address.into(), key_address.into()],
            ret: Some(value),
        });
        value
    }

    /// Returns from the program unless the current process is `pid`.
    fn pid_filter(&mut self, pid: u32) {
        let pid_tgid = self.f.vreg();
        self.f.push(Inst::Call {
            helper: helper::GET_CURRENT_PID_TGID,
            args: vec![],
            ret: Some(pid_tgid),
        });
        self.f.push(Inst::Alu {
            op: AluOp::Rsh,
            dst: pid_tgid,
            src: Value::Imm(32),
            wide: true,
        });
        let pid = self.f.constant(i64::from(pid));
        let done = self.done;
        self.f.push(Inst::Branch {
            op: JmpOp::Ne,
            lhs: pid_tgid,
            rhs: Value::Reg(pid),
            target: done,
        });
    }

    /// Ends the program when the boot-time clock is past `deadline`.
    fn deadline_check(&mut self, deadline: u64) {
        let now = self.f.vreg();
        self.f.push(Inst::Call {
            helper: helper::KTIME_GET_BOOT_NS,
            args: vec![],
            ret: Some(now),
        });
        let limit = self.f.vreg();
        self.f.push(Inst::Imm64 { dst: limit, value: deadline });
        let done = self.done;
        self.f.push(Inst::Branch {
            op: JmpOp::Gt,
            lhs: now,
            rhs: Value::Reg(limit),
            target: done,
        });
    }

    fn block(&mut self, block: &Block) {
        for statement in &block.statements {
            // An error in one statement does not stop the others from being
            // checked, so that one run reports every problem.
            let _ = self.statement(statement);
        }
    }

    /// Translates one statement. The stack slots of its intermediate
    /// values are free for the statements after it.
    fn statement(&mut self, statement: &Statement) -> Result<()> {
        let mark = self.f.temporaries_mark();
        let result = self.statement_kind(statement);
        self.f.release_temporaries(mark);
        result
    }

    fn statement_kind(&mut self, statement: &Statement) -> Result<()> {
        self.set_line(statement.span);
        if self.f.insts.len() > MAX_INSTRUCTIONS {
            if !self.too_large {
                self.too_large = true;
                return Err(self.error(
                    Diagnostic::error(
                        statement.span,
                        format!("the probe expands to more than {MAX_INSTRUCTIONS} instructions"),
                    )
                    .with_hint("use smaller `unroll` counts or fewer nested `unroll` blocks"),
                ));
            }
            return Err(Reported);
        }
        match &statement.kind {
            StatementKind::Expr(expr) => {
                self.expr(expr)?;
                Ok(())
            }
            StatementKind::Assign { target, op, value } => self.assign(target, *op, value, statement.span),
            StatementKind::Let { variable, ty, value } => {
                if ty.is_some() {
                    return Err(self.error(Diagnostic::error(
                        statement.span,
                        "typed `let` declarations are not supported yet",
                    )
                    .with_hint(format!("assign a value instead: `${} = ...`", variable.name))));
                }
                match value {
                    Some(value) => self.assign_variable(&variable.name, variable.span, value),
                    None => Ok(()),
                }
            }
            StatementKind::If {
                condition,
                then_block,
                else_branch,
            } => {
                let else_label = self.f.label();
                let end = self.f.label();
                self.condition(condition, else_label)?;
                self.block(then_block);
                self.f.push(Inst::Jump { target: end });
                self.f.push(Inst::Label(else_label));
                match else_branch {
                    Some(ElseBranch::If(statement)) => {
                        let _ = self.statement(statement);
                    }
                    Some(ElseBranch::Block(block)) => self.block(block),
                    None => {}
                }
                self.f.push(Inst::Label(end));
                Ok(())
            }
            StatementKind::Unroll { count, body } => {
                let ExprKind::Integer(literal) = &count.kind else {
                    return Err(self.error(Diagnostic::error(
                        count.span,
                        "the unroll count must be an integer literal",
                    )));
                };
                if literal.value == 0 || literal.value > 100 {
                    return Err(self.error(
                        Diagnostic::error(count.span, format!("invalid unroll count {}", literal.value))
                            .with_hint("use a count from 1 to 100"),
                    ));
                }
                for _ in 0..literal.value {
                    self.block(body);
                }
                Ok(())
            }
            StatementKind::While { condition, body } => {
                let top = self.f.label();
                let end = self.f.label();
                self.f.push(Inst::Label(top));
                self.condition(condition, end)?;
                self.loops.push((top, end));
                self.block(body);
                self.loops.pop();
                // The jump back carries the loop's line, which messages
                // about loops name.
                self.set_line(statement.span);
                self.f.push(Inst::Jump { target: top });
                self.f.push(Inst::Label(end));
                Ok(())
            }
            StatementKind::For { .. } => Err(self.error(Diagnostic::error(
                statement.span,
                "`for` loops are not supported yet",
            )
            .with_hint("use `while` or `unroll`"))),
            StatementKind::Return(value) => {
                if let Some(value) = value {
                    return Err(self.error(Diagnostic::error(
                        value.span,
                        "`return` takes no value in a probe",
                    )));
                }
                let done = self.done;
                self.f.push(Inst::Jump { target: done });
                Ok(())
            }
            StatementKind::Break | StatementKind::Continue => {
                let Some(&(top, end)) = self.loops.last() else {
                    let word = if matches!(statement.kind, StatementKind::Break) { "break" } else { "continue" };
                    return Err(self.error(Diagnostic::error(
                        statement.span,
                        format!("`{word}` outside a `while` loop"),
                    )));
                };
                let target = if matches!(statement.kind, StatementKind::Break) { end } else { top };
                self.f.push(Inst::Jump { target });
                Ok(())
            }
            StatementKind::Block(block) => {
                self.block(block);
                Ok(())
            }
        }
    }

    fn assign(
        &mut self,
        target: &AssignTarget,
        op: Option<super::ast::BinaryOp>,
        value: &Expr,
        span: Span,
    ) -> Result<()> {
        match target {
            AssignTarget::Map(map) => match op {
                None => self.assign_map(map, value, span),
                Some(op) => {
                    let (operand, ty) = self.int_expr(value)?;
                    self.update_map_integer(map, op, operand.into(), ty, span, false).map(drop)
                }
            },
            AssignTarget::Variable(variable) => match op {
                None => self.assign_variable(&variable.name, variable.span, value),
                Some(op) => {
                    let Some(Variable::Int { reg, ty }) = self.variables.get(&variable.name).cloned() else {
                        if !self.variables.contains_key(&variable.name) {
                            return Err(self.error(unassigned_variable(&variable.name, variable.span)));
                        }
                        return Err(self.error(Diagnostic::error(
                            variable.span,
                            format!("`${}` must hold an integer for `{}=`", variable.name, op.symbol()),
                        )));
                    };
                    let current = Val::Int { reg, ty };
                    let result = self.binary_values(op, current, variable.span, value, span)?;
                    self.store_variable(&variable.name, variable.span, result)
                }
            },
        }
    }

    fn assign_variable(&mut self, name: &str, span: Span, value: &Expr) -> Result<()> {
        let value = self.expr(value)?;
        self.store_variable(name, span, value)
    }

    /// Stores `value` into variable `name`, creating it on first use.
    fn store_variable(&mut self, name: &str, span: Span, value: Val) -> Result<()> {
        let existing = self.variables.get(name).cloned();
        match (existing, value) {
            (None, Val::Int { reg, ty }) => {
                let storage = self.f.vreg();
                self.variable_inits.push(Inst::Mov { dst: storage, src: Value::Imm(0) });
                self.f.push(Inst::Mov { dst: storage, src: reg.into() });
                self.variables.insert(name.to_owned(), Variable::Int { reg: storage, ty });
                Ok(())
            }
            (None, Val::Ptr { reg, pointee, user }) => {
                let storage = self.f.vreg();
                self.variable_inits.push(Inst::Mov { dst: storage, src: Value::Imm(0) });
                self.f.push(Inst::Mov { dst: storage, src: reg.into() });
                self.variables.insert(name.to_owned(), Variable::Ptr { reg: storage, pointee, user });
                Ok(())
            }
            (None, value @ (Val::Str { .. } | Val::Lit(_) | Val::Mem { .. })) => {
                let (source, len) = self.string_value(value, span)?;
                let slot = self.f.permanent_slot(len);
                for offset in (0..len).step_by(8) {
                    self.variable_inits.push(Inst::StoreStack {
                        size: Size::DW,
                        slot,
                        off: offset as i16,
                        src: Value::Imm(0),
                    });
                }
                self.copy_string(source, len, slot, len);
                self.variables.insert(name.to_owned(), Variable::Str { slot, len });
                Ok(())
            }
            (Some(Variable::Int { reg: storage, ty }), Val::Int { reg, ty: new_ty }) => {
                self.f.push(Inst::Mov { dst: storage, src: reg.into() });
                if new_ty.signed != ty.signed || new_ty.bytes > ty.bytes {
                    // Keep the first assignment's type; the value takes it.
                    self.extend(storage, ty);
                }
                Ok(())
            }
            (Some(Variable::Ptr { reg: storage, .. }), Val::Ptr { reg, .. }) => {
                self.f.push(Inst::Mov { dst: storage, src: reg.into() });
                Ok(())
            }
            (Some(Variable::Str { slot, len }), value @ (Val::Str { .. } | Val::Lit(_) | Val::Mem { .. })) => {
                let (source, source_len) = self.string_value(value, span)?;
                self.copy_string(source, source_len, slot, len);
                Ok(())
            }
            (Some(existing), value) => Err(self.error(Diagnostic::error(
                span,
                format!(
                    "`${name}` holds {} but is assigned {}",
                    variable_description(&existing),
                    self.describe(&value)
                ),
            )
            .with_hint("a variable keeps the type of its first assignment; use another variable"))),
            (None, value @ Val::Stack { .. }) => Err(self.error(
                Diagnostic::error(span, format!("cannot assign {} to a variable", self.describe(&value)))
                    .with_hint("print the stack with printf(\"%s\", ...) or print(), or count it in a map: @[kstack] = count()"),
            )),
            (None, value) => Err(self.error(Diagnostic::error(
                span,
                format!("cannot assign {} to a variable", self.describe(&value)),
            ))),
        }
    }

    /// Describes a value's type for messages.
    pub(crate) fn describe(&self, value: &Val) -> String {
        match value {
            Val::Int { ty, .. } => format!("an integer ({}int{})", if ty.signed { "" } else { "u" }, ty.bytes * 8),
            Val::Ptr { pointee, .. } => match self.btf() {
                _ if *pointee == expr::CHAR_POINTEE => "a pointer (char *)".into(),
                Some(btf) if *pointee != 0 => format!("a pointer ({} *)", btf.type_name(*pointee)),
                _ => "a pointer".into(),
            },
            Val::Str { .. } | Val::Lit(_) => "a string".into(),
            Val::Mem { type_id, .. } => match self.btf() {
                Some(btf) => format!("a `{}` value", btf.type_name(*type_id)),
                None => "a struct value".into(),
            },
            Val::Stack { user: false, .. } => "a kernel stack".into(),
            Val::Stack { user: true, .. } => "a user stack".into(),
            Val::Special { special, .. } => special_description(special).into(),
            Val::Args => "`args`".into(),
            Val::Void => "nothing (the call returns no value)".into(),
        }
    }
}

/// Returns the error for a read of a variable that has no value yet.
pub(crate) fn unassigned_variable(name: &str, span: Span) -> Diagnostic {
    Diagnostic::error(span, format!("`${name}` is used before it is assigned")).with_hint(
        "a `$variable` lives for one run of one probe: assign it earlier in this probe, \
         or share a value between probes with a map (`@name`)",
    )
}

fn special_description(special: &crate::script::aggregate::Special) -> &'static str {
    use crate::script::aggregate::Special;
    match special {
        Special::Kstack { .. } => "a kernel stack",
        Special::Ustack { .. } => "a user stack",
        Special::Ksym => "a kernel symbol (ksym)",
        Special::Usym => "a user symbol (usym)",
        Special::Inet => "an IP address (ntop)",
        Special::Buf { .. } => "a byte buffer (buf)",
    }
}

fn variable_description(variable: &Variable) -> &'static str {
    match variable {
        Variable::Int { .. } => "an integer",
        Variable::Ptr { .. } => "a pointer",
        Variable::Str { .. } => "a string",
    }
}
