//! Prints the syntax tree as S-expressions, one line per top-level item,
//! and types as C-like text.
//!
//! The output shows the tree's structure without spans: `@x[pid] = 1 + 2 *
//! 3` prints as `(= (@x pid) (+ 1 (* 2 3)))`. Providers are printed by their
//! full name, so `t:a:b` prints as `(tracepoint a b)`.

use std::fmt::{self, Write as _};

use super::{
    AssignTarget, AttachPoint, AttachTarget, Block, CDefinitionKind, ElseBranch, Expr, ExprKind,
    ForIterable, IncrementOp, IncrementPosition, IntegerLiteral, IntegerSuffix, Location,
    MapAccess, Name, Probe, Program, SizeofArg, Statement, StatementKind, TypeExpr, TypeKind,
};

impl Program {
    /// Prints the program as S-expressions, one line per C definition and
    /// per probe, each line ending with a newline.
    pub fn to_sexpr(&self) -> String {
        let mut out = String::new();
        for definition in &self.c_definitions {
            let tag = match definition.kind {
                CDefinitionKind::Preprocessor => "preprocessor",
                CDefinitionKind::Type => "c-type",
            };
            out.push('(');
            out.push_str(tag);
            out.push(' ');
            write_string(&mut out, definition.text.as_bytes());
            out.push_str(")\n");
        }
        for probe in &self.probes {
            out.push_str(&probe.to_sexpr());
            out.push('\n');
        }
        out
    }
}

impl Probe {
    /// Prints the probe as one S-expression: `(probe ATTACH... [(predicate
    /// EXPR)] (block ...))`.
    pub fn to_sexpr(&self) -> String {
        let mut out = String::from("(probe");
        for attach_point in &self.attach_points {
            out.push(' ');
            write_attach_point(&mut out, attach_point);
        }
        if let Some(predicate) = &self.predicate {
            out.push_str(" (predicate ");
            write_expr(&mut out, predicate);
            out.push(')');
        }
        out.push(' ');
        write_block(&mut out, &self.body);
        out.push(')');
        out
    }
}

impl Statement {
    pub fn to_sexpr(&self) -> String {
        let mut out = String::new();
        write_statement(&mut out, self);
        out
    }
}

impl Expr {
    pub fn to_sexpr(&self) -> String {
        let mut out = String::new();
        write_expr(&mut out, self);
        out
    }
}

/// Prints a type as C does: `uint32`, `struct task_struct *`, `uint8[16]`.
impl fmt::Display for TypeExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TypeKind::Integer { signed, bits } => {
                write!(f, "{}int{bits}", if *signed { "" } else { "u" })
            }
            TypeKind::Bool => f.write_str("bool"),
            TypeKind::Void => f.write_str("void"),
            TypeKind::Struct(name) => write!(f, "struct {name}"),
            TypeKind::Union(name) => write!(f, "union {name}"),
            TypeKind::Enum(name) => write!(f, "enum {name}"),
            TypeKind::Named(name) => f.write_str(name),
            TypeKind::Pointer(pointee) if matches!(pointee.kind, TypeKind::Pointer(_)) => {
                write!(f, "{pointee}*")
            }
            TypeKind::Pointer(pointee) => write!(f, "{pointee} *"),
            TypeKind::Array { element, length } => write!(f, "{element}[{length}]"),
        }
    }
}

fn write_attach_point(out: &mut String, attach_point: &AttachPoint) {
    out.push('(');
    out.push_str(attach_point.provider.name());
    match &attach_point.target {
        AttachTarget::None => {}
        AttachTarget::Kprobe { module, location } => {
            write_optional_name(out, ":module", module.as_ref());
            write_location(out, location);
        }
        AttachTarget::Fentry { module, function } => {
            write_optional_name(out, ":module", module.as_ref());
            write_name(out, function);
        }
        AttachTarget::Uprobe {
            binary,
            language,
            location,
        } => {
            write_optional_name(out, ":binary", binary.as_ref());
            write_optional_name(out, ":language", language.as_ref());
            write_location(out, location);
        }
        AttachTarget::Usdt {
            binary,
            provider,
            name,
        } => {
            write_optional_name(out, ":binary", binary.as_ref());
            write_optional_name(out, ":provider", provider.as_ref());
            write_name(out, name);
        }
        AttachTarget::Tracepoint { category, name } => {
            write_name(out, category);
            write_name(out, name);
        }
        AttachTarget::RawTracepoint { module, name } => {
            write_optional_name(out, ":module", module.as_ref());
            write_name(out, name);
        }
        AttachTarget::PerfEvent { event, count } => {
            write_name(out, event);
            if let Some(count) = count {
                let _ = write!(out, " {}", count.value);
            }
        }
        AttachTarget::Timer { unit, value, .. } => {
            let _ = write!(out, " {} {}", unit.name(), value.value);
        }
        AttachTarget::Watchpoint {
            address,
            length,
            mode,
        } => {
            write_name(out, address);
            let _ = write!(out, " {}", length.value);
            write_name(out, mode);
        }
        AttachTarget::Iter { object, pin } => {
            write_name(out, object);
            write_optional_name(out, ":pin", pin.as_ref());
        }
        AttachTarget::Lsm { hook } => write_name(out, hook),
    }
    out.push(')');
}

fn write_location(out: &mut String, location: &Location) {
    match location {
        Location::Symbol { name, offset } => {
            write_name(out, name);
            if let Some(offset) = offset {
                let _ = write!(out, "+{}", offset.value);
            }
        }
        Location::Address(address) => {
            let _ = write!(out, " {:#x}", address.value);
        }
    }
}

fn write_optional_name(out: &mut String, keyword: &str, name: Option<&Name>) {
    if let Some(name) = name {
        out.push(' ');
        out.push_str(keyword);
        write_name(out, name);
    }
}

/// Writes a space and the name, quoted if it contains characters that
/// would make the S-expression ambiguous.
fn write_name(out: &mut String, name: &Name) {
    out.push(' ');
    let plain = !name.text.is_empty()
        && name
            .text
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '(' | ')' | '"' | '\\'));
    if plain {
        out.push_str(&name.text);
    } else {
        write_string(out, name.text.as_bytes());
    }
}

fn write_block(out: &mut String, block: &Block) {
    out.push_str("(block");
    for statement in &block.statements {
        out.push(' ');
        write_statement(out, statement);
    }
    out.push(')');
}

fn write_statement(out: &mut String, statement: &Statement) {
    match &statement.kind {
        StatementKind::Expr(expr) => write_expr(out, expr),
        StatementKind::Assign { target, op, value } => {
            let op = op.map_or("", |op| op.symbol());
            let _ = write!(out, "({op}= ");
            write_target(out, target);
            out.push(' ');
            write_expr(out, value);
            out.push(')');
        }
        StatementKind::Let {
            variable,
            ty,
            value,
        } => {
            let _ = write!(out, "(let ${}", variable.name);
            if let Some(ty) = ty {
                let _ = write!(out, " : <{ty}>");
            }
            if let Some(value) = value {
                out.push_str(" = ");
                write_expr(out, value);
            }
            out.push(')');
        }
        StatementKind::If {
            condition,
            then_block,
            else_branch,
        } => {
            out.push_str("(if ");
            write_expr(out, condition);
            out.push(' ');
            write_block(out, then_block);
            match else_branch {
                Some(ElseBranch::If(statement)) => {
                    out.push(' ');
                    write_statement(out, statement);
                }
                Some(ElseBranch::Block(block)) => {
                    out.push(' ');
                    write_block(out, block);
                }
                None => {}
            }
            out.push(')');
        }
        StatementKind::Unroll { count, body } => {
            out.push_str("(unroll ");
            write_expr(out, count);
            out.push(' ');
            write_block(out, body);
            out.push(')');
        }
        StatementKind::While { condition, body } => {
            out.push_str("(while ");
            write_expr(out, condition);
            out.push(' ');
            write_block(out, body);
            out.push(')');
        }
        StatementKind::For {
            variable,
            iterable,
            body,
        } => {
            let _ = write!(out, "(for ${} ", variable.name);
            match iterable {
                ForIterable::Map(map) => {
                    let _ = write!(out, "@{}", map.name);
                }
                ForIterable::Range { start, end } => {
                    out.push_str("(range ");
                    write_expr(out, start);
                    out.push(' ');
                    write_expr(out, end);
                    out.push(')');
                }
            }
            out.push(' ');
            write_block(out, body);
            out.push(')');
        }
        StatementKind::Return(None) => out.push_str("(return)"),
        StatementKind::Return(Some(value)) => {
            out.push_str("(return ");
            write_expr(out, value);
            out.push(')');
        }
        StatementKind::Break => out.push_str("(break)"),
        StatementKind::Continue => out.push_str("(continue)"),
        StatementKind::Block(block) => write_block(out, block),
    }
}

fn write_target(out: &mut String, target: &AssignTarget) {
    match target {
        AssignTarget::Variable(variable) => {
            let _ = write!(out, "${}", variable.name);
        }
        AssignTarget::Map(map) => write_map(out, map),
    }
}

fn write_map(out: &mut String, map: &MapAccess) {
    if map.keys.is_empty() {
        let _ = write!(out, "@{}", map.name);
        return;
    }
    let _ = write!(out, "(@{}", map.name);
    for key in &map.keys {
        out.push(' ');
        write_expr(out, key);
    }
    out.push(')');
}

fn write_expr(out: &mut String, expr: &Expr) {
    match &expr.kind {
        ExprKind::Integer(literal) => write_integer(out, *literal),
        ExprKind::String(bytes) => write_string(out, bytes),
        ExprKind::Bool(value) => {
            let _ = write!(out, "{value}");
        }
        ExprKind::Identifier(name) => out.push_str(name),
        ExprKind::Variable(name) => {
            let _ = write!(out, "${name}");
        }
        ExprKind::Positional(index) => {
            let _ = write!(out, "${index}");
        }
        ExprKind::PositionalCount => out.push_str("$#"),
        ExprKind::Map(map) => write_map(out, map),
        ExprKind::Call { name, args } => {
            let _ = write!(out, "(call {}", name.text);
            write_args(out, args);
        }
        ExprKind::Unary { op, operand } => {
            let _ = write!(out, "({} ", op.symbol());
            write_expr(out, operand);
            out.push(')');
        }
        ExprKind::Binary { op, left, right } => {
            let _ = write!(out, "({} ", op.symbol());
            write_expr(out, left);
            out.push(' ');
            write_expr(out, right);
            out.push(')');
        }
        ExprKind::Ternary {
            condition,
            then_expr,
            else_expr,
        } => {
            out.push_str("(? ");
            write_expr(out, condition);
            out.push(' ');
            write_expr(out, then_expr);
            out.push(' ');
            write_expr(out, else_expr);
            out.push(')');
        }
        ExprKind::Cast { ty, operand } => {
            let _ = write!(out, "(cast <{ty}> ");
            write_expr(out, operand);
            out.push(')');
        }
        ExprKind::Field { base, field, arrow } => {
            let _ = write!(out, "({} ", if *arrow { "->" } else { "." });
            write_expr(out, base);
            let _ = write!(out, " {})", field.text);
        }
        ExprKind::Index { base, index } => {
            out.push_str("([] ");
            write_expr(out, base);
            out.push(' ');
            write_expr(out, index);
            out.push(')');
        }
        ExprKind::Tuple(elements) => {
            out.push_str("(tuple");
            write_args(out, elements);
        }
        ExprKind::Increment {
            target,
            op,
            position,
        } => {
            let position = match position {
                IncrementPosition::Prefix => "pre",
                IncrementPosition::Postfix => "post",
            };
            let op = match op {
                IncrementOp::Increment => "++",
                IncrementOp::Decrement => "--",
            };
            let _ = write!(out, "({position}{op} ");
            write_target(out, target);
            out.push(')');
        }
        ExprKind::Sizeof(arg) => {
            out.push_str("(sizeof ");
            write_sizeof_arg(out, arg);
            out.push(')');
        }
        ExprKind::Offsetof { arg, fields } => {
            out.push_str("(offsetof ");
            write_sizeof_arg(out, arg);
            for field in fields {
                let _ = write!(out, " {}", field.text);
            }
            out.push(')');
        }
        ExprKind::Error => out.push_str("<error>"),
    }
}

/// Writes ` ARG ARG...)`.
fn write_args(out: &mut String, args: &[Expr]) {
    for arg in args {
        out.push(' ');
        write_expr(out, arg);
    }
    out.push(')');
}

fn write_sizeof_arg(out: &mut String, arg: &SizeofArg) {
    match arg {
        SizeofArg::Type(ty) => {
            let _ = write!(out, "<{ty}>");
        }
        SizeofArg::Expr(expr) => write_expr(out, expr),
    }
}

fn write_integer(out: &mut String, literal: IntegerLiteral) {
    let suffix = match literal.suffix {
        IntegerSuffix::None => "",
        IntegerSuffix::Unsigned => "u",
        IntegerSuffix::Long => "l",
        IntegerSuffix::UnsignedLong => "ul",
        IntegerSuffix::LongLong => "ll",
        IntegerSuffix::UnsignedLongLong => "ull",
    };
    let _ = write!(out, "{}{suffix}", literal.value);
}

/// Writes bytes as a double-quoted string: printable ASCII as it is, `\n`,
/// `\t`, `\r`, `\"` and `\\` escaped, and every other byte as `\xHH`.
fn write_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &byte in bytes {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(byte)),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use crate::script::ast::{Expr, ExprKind, TypeExpr, TypeKind};
    use crate::script::span::Span;

    fn ty(kind: TypeKind) -> TypeExpr {
        TypeExpr {
            kind,
            span: Span::default(),
        }
    }

    #[test]
    fn types_print_like_c() {
        let task = ty(TypeKind::Struct("task_struct".into()));
        assert_eq!(task.to_string(), "struct task_struct");
        let pointer = ty(TypeKind::Pointer(Box::new(task)));
        assert_eq!(pointer.to_string(), "struct task_struct *");
        let double = ty(TypeKind::Pointer(Box::new(pointer)));
        assert_eq!(double.to_string(), "struct task_struct **");
        let element = ty(TypeKind::Integer {
            signed: false,
            bits: 8,
        });
        let array = ty(TypeKind::Array {
            element: Box::new(element),
            length: 16,
        });
        assert_eq!(array.to_string(), "uint8[16]");
        assert_eq!(
            ty(TypeKind::Integer {
                signed: true,
                bits: 64
            })
            .to_string(),
            "int64"
        );
    }

    #[test]
    fn strings_escape_bytes() {
        let expr = Expr {
            kind: ExprKind::String(b"a\"b\\\n\xff\x01".to_vec()),
            span: Span::default(),
        };
        assert_eq!(expr.to_sexpr(), r#""a\"b\\\n\xff\x01""#);
    }
}
