//! Expressions: builtins, arithmetic, comparisons, casts, and reading
//! kernel data through `args` and BTF-typed pointers.

use super::{Codegen, IntTy, NAMES_MAP, Reported, Result, Val, Variable, helper, unassigned_variable};
use crate::{
    btf::{Kind, ValueFormat},
    script::{
        ast::{BinaryOp, Expr, ExprKind, IncrementOp, Name, TypeKind, UnaryOp},
        diagnostic::Diagnostic,
        insn::{AluOp, JmpOp, Size},
        ir::{Inst, Label, Slot, VReg, Value},
        probes::{ArgSource, ProbeKind},
        span::Span,
    },
    suggest,
    tracepoint::Field,
};

/// Offsets of the argument registers in x86-64 `struct pt_regs`, in the
/// order of the calling convention: rdi, rsi, rdx, rcx, r8, r9.
const PT_REGS_ARGS: [i16; 6] = [112, 104, 96, 88, 72, 64];
/// Offset of rax, which contains the return value, in `struct pt_regs`.
const PT_REGS_RAX: i16 = 80;

/// Builtins that a later version will support, with what they do.
const PLANNED_BUILTINS: &[&str] = &[
    "curtask", "cgroup", "rand", "username", "jiffies",
];

const BUILTINS: &[&str] = &[
    "pid", "tid", "uid", "gid", "cpu", "comm", "nsecs", "elapsed", "func", "probe", "args",
    "retval", "cpid", "arg0", "arg1", "arg2", "arg3", "arg4", "arg5", "kstack", "ustack",
];

const FUNCTIONS: &[&str] = &[
    "printf", "print", "exit", "str", "deny", "kstack", "ustack", "ksym", "usym", "kaddr", "ntop", "buf",
];

impl Codegen<'_> {
    /// Translates an expression to a value.
    pub(crate) fn expr(&mut self, expr: &Expr) -> Result<Val> {
        match &expr.kind {
            ExprKind::Integer(literal) => {
                let reg = self.f.constant(literal.value as i64);
                let signed = i64::try_from(literal.value).is_ok();
                Ok(Val::Int { reg, ty: IntTy { bytes: 8, signed } })
            }
            ExprKind::String(bytes) => Ok(Val::Lit(bytes.clone())),
            ExprKind::Bool(value) => {
                let reg = self.f.constant(i64::from(*value));
                Ok(Val::Int { reg, ty: IntTy { bytes: 1, signed: false } })
            }
            ExprKind::Identifier(name) => self.builtin(name, expr.span),
            ExprKind::Variable(name) => match self.variables.get(name).cloned() {
                Some(Variable::Int { reg, ty }) => Ok(Val::Int { reg, ty }),
                Some(Variable::Ptr { reg, pointee, user }) => Ok(Val::Ptr { reg, pointee, user }),
                Some(Variable::Str { slot, len }) => Ok(Val::Str { slot, len }),
                None => Err(self.error(unassigned_variable(name, expr.span))),
            },
            ExprKind::Positional(_) | ExprKind::PositionalCount => Err(self.error(Diagnostic::error(
                expr.span,
                "positional parameters are not supported yet",
            ))),
            ExprKind::Map(map) => self.read_map(map),
            ExprKind::Call { name, args } => self.call(name, args, expr.span),
            ExprKind::Unary { op, operand } => self.unary(*op, operand, expr.span),
            ExprKind::Binary { op, left, right } => {
                let left_value = self.expr(left)?;
                self.binary_values(*op, left_value, left.span, right, expr.span)
            }
            ExprKind::Ternary {
                condition,
                then_expr,
                else_expr,
            } => self.ternary(condition, then_expr, else_expr, expr.span),
            ExprKind::Cast { ty, operand } => self.cast(&ty.kind, ty.span, operand),
            ExprKind::Field { base, field, arrow } => {
                let base_value = self.expr(base)?;
                self.field(base_value, base.span, field, *arrow)
            }
            ExprKind::Index { .. } => Err(self.error(Diagnostic::error(
                expr.span,
                "indexing with `[...]` is not supported yet",
            ))),
            ExprKind::Tuple(_) => Err(self.error(Diagnostic::error(expr.span, "tuples are not supported yet"))),
            ExprKind::Increment { target, op, position } => {
                let variable = match target {
                    super::super::ast::AssignTarget::Variable(variable) => variable,
                    super::super::ast::AssignTarget::Map(access) => {
                        let delta = if *op == IncrementOp::Increment { 1 } else { -1 };
                        let postfix = *position == super::super::ast::IncrementPosition::Postfix;
                        return self.update_map_integer(access, BinaryOp::Add, Value::Imm(delta), IntTy::I64, expr.span, postfix);
                    }
                };
                let Some(Variable::Int { reg, ty }) = self.variables.get(&variable.name).cloned() else {
                    if !self.variables.contains_key(&variable.name) {
                        return Err(self.error(unassigned_variable(&variable.name, variable.span)));
                    }
                    return Err(self.error(Diagnostic::error(
                        variable.span,
                        format!("`${}` must be an integer variable to increment it", variable.name),
                    )));
                };
                let before = self.f.vreg();
                self.f.push(Inst::Mov { dst: before, src: reg.into() });
                let delta = if *op == IncrementOp::Increment { 1 } else { -1 };
                self.f.push(Inst::Alu { op: AluOp::Add, dst: reg, src: Value::Imm(delta), wide: true });
                self.extend(reg, ty);
                let result = match position {
                    super::super::ast::IncrementPosition::Prefix => reg,
                    super::super::ast::IncrementPosition::Postfix => before,
                };
                let copy = self.f.vreg();
                self.f.push(Inst::Mov { dst: copy, src: result.into() });
                Ok(Val::Int { reg: copy, ty })
            }
            ExprKind::Sizeof(_) | ExprKind::Offsetof { .. } => Err(self.error(Diagnostic::error(
                expr.span,
                "`sizeof` and `offsetof` are not supported yet",
            ))),
            // The parser already reported this expression.
            ExprKind::Error => Err(Reported),
        }
    }

    /// Translates an expression that must be an integer (pointers count as
    /// unsigned 64-bit integers).
    pub(crate) fn int_expr(&mut self, expr: &Expr) -> Result<(VReg, IntTy)> {
        let value = self.expr(expr)?;
        self.as_int(value, expr.span)
    }

    pub(crate) fn as_int(&mut self, value: Val, span: Span) -> Result<(VReg, IntTy)> {
        match value {
            Val::Int { reg, ty } => Ok((reg, ty)),
            Val::Ptr { reg, .. } => Ok((reg, IntTy::U64)),
            other => {
                let description = self.describe(&other);
                let mut diagnostic =
                    Diagnostic::error(span, format!("expected an integer, found {description}"));
                if matches!(other, Val::Str { .. } | Val::Lit(_)) {
                    diagnostic = diagnostic.with_hint("strings can be compared with `==` and `!=`, and printed with `%s`");
                }
                Err(self.error(diagnostic))
            }
        }
    }

    /// Sign- or zero-extends `reg` in place from `ty`'s width to 64 bits.
    pub(crate) fn extend(&mut self, reg: VReg, ty: IntTy) {
        if ty.bytes >= 8 {
            return;
        }
        let shift = 64 - 8 * i32::from(ty.bytes);
        if ty.signed {
            self.f.push(Inst::Alu { op: AluOp::Lsh, dst: reg, src: Value::Imm(shift), wide: true });
            self.f.push(Inst::Alu { op: AluOp::Arsh, dst: reg, src: Value::Imm(shift), wide: true });
        } else if ty.bytes == 4 {
            // A 32-bit move clears the upper half.
            self.f.push(Inst::Alu { op: AluOp::Mov, dst: reg, src: reg.into(), wide: false });
        } else {
            let mask = (1i32 << (8 * ty.bytes)) - 1;
            self.f.push(Inst::Alu { op: AluOp::And, dst: reg, src: Value::Imm(mask), wide: true });
        }
    }

    fn call_helper(&mut self, helper: i32, args: Vec<Value>) -> VReg {
        let ret = self.f.vreg();
        self.f.push(Inst::Call { helper, args, ret: Some(ret) });
        ret
    }

    fn builtin(&mut self, name: &str, span: Span) -> Result<Val> {
        let int = |reg, bytes, signed| Ok(Val::Int { reg, ty: IntTy { bytes, signed } });
        match name {
            "pid" | "tid" => {
                let reg = self.call_helper(helper::GET_CURRENT_PID_TGID, vec![]);
                if name == "pid" {
                    self.f.push(Inst::Alu { op: AluOp::Rsh, dst: reg, src: Value::Imm(32), wide: true });
                } else {
                    self.extend(reg, IntTy::U32);
                }
                int(reg, 4, false)
            }
            "uid" | "gid" => {
                let reg = self.call_helper(helper::GET_CURRENT_UID_GID, vec![]);
                if name == "gid" {
                    self.f.push(Inst::Alu { op: AluOp::Rsh, dst: reg, src: Value::Imm(32), wide: true });
                } else {
                    self.extend(reg, IntTy::U32);
                }
                int(reg, 4, false)
            }
            "cpu" => {
                let reg = self.call_helper(helper::GET_SMP_PROCESSOR_ID, vec![]);
                int(reg, 4, false)
            }
            "nsecs" => {
                let reg = self.call_helper(helper::KTIME_GET_NS, vec![]);
                int(reg, 8, false)
            }
            "elapsed" => {
                let reg = self.call_helper(helper::KTIME_GET_NS, vec![]);
                let start = self.f.vreg();
                self.f.push(Inst::Imm64 { dst: start, value: self.options.start_ktime_ns });
                self.f.push(Inst::Alu { op: AluOp::Sub, dst: reg, src: start.into(), wide: true });
                int(reg, 8, false)
            }
            "comm" => {
                let slot = self.f.slot(16);
                let address = self.f.vreg();
                self.f.push(Inst::StackAddr { dst: address, slot, off: 0 });
                self.f.push(Inst::Call {
                    helper: helper::GET_CURRENT_COMM,
                    args: vec![address.into(), Value::Imm(16)],
                    ret: None,
                });
                Ok(Val::Str { slot, len: 16 })
            }
            "func" | "probe" if matches!(self.probe.kind, ProbeKind::KprobeMulti { .. }) => {
                Ok(self.multi_probe_name(name == "probe"))
            }
            "func" | "probe" => {
                let text = if let (ProbeKind::Uprobe { name: function, .. }, "func") = (&self.probe.kind, name) {
                    function.clone()
                } else if name == "func" {
                    let Some(function) = self.probe.kind.function() else {
                        return Err(self.error(Diagnostic::error(
                            span,
                            format!("`func` is only available in probes on functions, not in {}", self.probe.kind.display_name()),
                        )));
                    };
                    // `MODULE:FUNC` names the function `FUNC`.
                    function.rsplit(':').next().unwrap_or(function).to_owned()
                } else {
                    self.probe.kind.display_name()
                };
                // One fixed size for every program of the script, so that
                // the names compare and key maps alike.
                let mut bytes = text.into_bytes();
                bytes.resize(self.options.name_size.saturating_sub(1).max(bytes.len() as u32) as usize, 0);
                let (slot, len) = self.string_value(Val::Lit(bytes), span)?;
                Ok(Val::Str { slot, len })
            }
            "cpid" => match self.options.cpid {
                Some(cpid) => {
                    let reg = self.f.constant(i64::from(cpid));
                    int(reg, 4, false)
                }
                None => Err(self.error(Diagnostic::error(span, "`cpid` needs a command to run")
                    .with_hint("start one with -c 'COMMAND'"))),
            },
            "args" => match &self.probe.args {
                ArgSource::Tracepoint(_) | ArgSource::Trampoline(_) | ArgSource::Registers(Some(_)) => Ok(Val::Args),
                ArgSource::Registers(None) => {
                    let reason = self.probe.untyped_reason.clone().unwrap_or_else(|| {
                        "`args` needs the function's BTF prototype, which this function does not have".to_owned()
                    });
                    Err(self.error(Diagnostic::error(span, reason).with_hint("read raw arguments with arg0 ... arg5")))
                }
                ArgSource::RawArgs | ArgSource::None => Err(self.error(Diagnostic::error(
                    span,
                    format!("`args` is not available in {}", self.probe.kind.display_name()),
                )
                .with_hint("`args` works in tracepoint, kprobe, kretprobe, fentry and fexit probes"))),
            },
            "retval" => self.retval(span),
            "kstack" => self.stack(false, &[], span),
            "ustack" => self.stack(true, &[], span),
            _ if name.len() == 4 && name.starts_with("arg") && name.as_bytes()[3].is_ascii_digit() => {
                let index = u32::from(name.as_bytes()[3] - b'0');
                self.raw_arg(index, span)
            }
            _ if PLANNED_BUILTINS.contains(&name) => Err(self.error(Diagnostic::error(
                span,
                format!("the builtin `{name}` is not supported yet"),
            ))),
            _ => {
                let matches = suggest::close_matches(name, BUILTINS.iter().copied(), 3);
                let mut diagnostic = Diagnostic::error(span, format!("unknown identifier `{name}`"));
                if !matches.is_empty() {
                    diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
                } else {
                    diagnostic = diagnostic.with_hint("variables start with `$`, maps with `@`");
                }
                Err(self.error(diagnostic))
            }
        }
    }

    /// Rejects function arguments in a kretprobe: at the return, the
    /// argument registers hold whatever the function left in them.
    fn reject_arguments_at_return(&mut self, what: &str, span: Span) -> Result<()> {
        let function = match &self.probe.kind {
            ProbeKind::Kretprobe { function, .. } => Some(function.clone()),
            ProbeKind::KprobeMulti { pattern, ret: true, .. } => Some(pattern.clone()),
            ProbeKind::Uprobe { name, ret: true, .. } => Some(name.clone()),
            _ => None,
        };
        if let Some(function) = function {
            return Err(self.error(
                Diagnostic::error(span, format!("{what} is not available in a kretprobe: the argument registers no longer hold the arguments at the return"))
                    .with_hint(format!("use fexit:{function}, which keeps them, or save them at entry: `kprobe:{function} {{ @arg[tid] = arg0; }}`")),
            ));
        }
        Ok(())
    }

    fn raw_arg(&mut self, index: u32, span: Span) -> Result<Val> {
        let name = format!("arg{index}");
        self.reject_arguments_at_return(&format!("`{name}`"), span)?;
        let offset = match &self.probe.args {
            ArgSource::Registers(_) if index < 6 => PT_REGS_ARGS[index as usize],
            ArgSource::Trampoline(signature) if index < signature.slots => (8 * index) as i16,
            ArgSource::Trampoline(signature) => {
                let slots = signature.slots;
                return Err(self.error(Diagnostic::error(
                    span,
                    format!("`{name}` does not exist: the function takes {slots} argument slots"),
                )));
            }
            ArgSource::RawArgs if index < 12 => (8 * index) as i16,
            ArgSource::Tracepoint(_) => {
                return Err(self.error(Diagnostic::error(span, format!("`{name}` is not available in tracepoints"))
                    .with_hint("use `args.NAME`; the fields are listed in the tracepoint's format file")));
            }
            _ => {
                return Err(self.error(Diagnostic::error(
                    span,
                    format!("`{name}` is not available in {}", self.probe.kind.display_name()),
                )));
            }
        };
        let reg = self.f.vreg();
        self.f.push(Inst::Load { size: Size::DW, dst: reg, base: self.ctx, off: offset });
        Ok(Val::Int { reg, ty: IntTy::U64 })
    }

    fn retval(&mut self, span: Span) -> Result<Val> {
        let (offset, return_type) = match (&self.probe.kind, &self.probe.args) {
            (
                ProbeKind::Kretprobe { .. } | ProbeKind::KprobeMulti { ret: true, .. } | ProbeKind::Uprobe { ret: true, .. },
                ArgSource::Registers(signature),
            ) => {
                (PT_REGS_RAX, signature.as_ref().map(|s| s.return_type))
            }
            (ProbeKind::Fexit { .. }, ArgSource::Trampoline(signature)) => {
                ((8 * signature.slots) as i16, Some(signature.return_type))
            }
            _ => {
                return Err(self.error(Diagnostic::error(
                    span,
                    format!("`retval` is not available in {}", self.probe.kind.display_name()),
                )
                .with_hint("use it in a kretprobe, uretprobe or fexit probe")));
            }
        };
        if return_type == Some(0) {
            let function = self.probe.kind.function().unwrap_or("the function").to_owned();
            return Err(self.error(Diagnostic::error(
                span,
                format!("`{function}` returns void, so there is no `retval`"),
            )));
        }
        let reg = self.f.vreg();
        self.f.push(Inst::Load { size: Size::DW, dst: reg, base: self.ctx, off: offset });
        match return_type {
            Some(type_id) => self.typed_value(reg, type_id, false, span),
            None => Ok(Val::Int { reg, ty: IntTy::U64 }),
        }
    }

    /// Gives a raw 64-bit value the BTF type `type_id`.
    fn typed_value(&mut self, reg: VReg, type_id: u32, user: bool, span: Span) -> Result<Val> {
        let Some(btf) = self.btf() else {
            return Ok(Val::Int { reg, ty: IntTy::U64 });
        };
        match btf.value_format(type_id) {
            ValueFormat::Signed(bytes) => {
                let ty = IntTy { bytes: bytes.min(8) as u8, signed: true };
                self.extend(reg, ty);
                Ok(Val::Int { reg, ty })
            }
            ValueFormat::Unsigned(bytes) => {
                let ty = IntTy { bytes: bytes.min(8) as u8, signed: false };
                self.extend(reg, ty);
                Ok(Val::Int { reg, ty })
            }
            ValueFormat::Bool | ValueFormat::Char => {
                let ty = IntTy { bytes: 1, signed: false };
                self.extend(reg, ty);
                Ok(Val::Int { reg, ty })
            }
            ValueFormat::Pointer => {
                let pointee = btf.resolve(type_id).map(|t| t.size_or_type).unwrap_or(0);
                Ok(Val::Ptr { reg, pointee, user })
            }
            ValueFormat::Raw => Err(self.error(Diagnostic::error(
                span,
                format!("values of type `{}` are not supported yet", btf.type_name(type_id)),
            ))),
        }
    }

    /// Reads `bytes` bytes at `address + offset` into a new register, as an
    /// unsigned value. A failed read gives 0.
    fn read_memory(&mut self, address: VReg, offset: i64, bytes: u32, user: bool) -> VReg {
        let source = self.f.vreg();
        self.f.push(Inst::Mov { dst: source, src: address.into() });
        if offset != 0 {
            let delta = self.operand(offset);
            self.f.push(Inst::Alu { op: AluOp::Add, dst: source, src: delta, wide: true });
        }
        let buffer = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: buffer, slot: self.read_buffer, off: 0 });
        let helper = if user { helper::PROBE_READ_USER } else { helper::PROBE_READ_KERNEL };
        let status = self.f.vreg();
        self.f.push(Inst::Call {
            helper,
            args: vec![buffer.into(), Value::Imm(bytes as i32), source.into()],
            ret: Some(status),
        });
        let value = self.f.vreg();
        let size = Size::from_bytes(bytes).unwrap_or(Size::DW);
        self.f.push(Inst::LoadStack { size, dst: value, slot: self.read_buffer, off: 0 });
        value
    }

    /// Returns a value as an instruction operand: an immediate when it fits.
    fn operand(&mut self, value: i64) -> Value {
        match i32::try_from(value) {
            Ok(imm) => Value::Imm(imm),
            Err(_) => Value::Reg(self.f.constant(value)),
        }
    }

    /// The value of a BTF-typed object at `address`: scalars and pointers
    /// are read, aggregates stay in memory.
    fn memory_value(&mut self, address: VReg, offset: i64, type_id: u32, user: bool, span: Span) -> Result<Val> {
        let Some(btf) = self.btf() else {
            return Err(self.error(Diagnostic::error(span, "reading kernel data needs the kernel's BTF")));
        };
        let resolved = btf.resolve(type_id).map_err(|err| self.error(Diagnostic::error(span, err.to_string())))?;
        match resolved.kind {
            Kind::Struct | Kind::Union | Kind::Array => {
                let addr = self.f.vreg();
                self.f.push(Inst::Mov { dst: addr, src: address.into() });
                if offset != 0 {
                    let delta = self.operand(offset);
                    self.f.push(Inst::Alu { op: AluOp::Add, dst: addr, src: delta, wide: true });
                }
                Ok(Val::Mem { addr, type_id: resolved.id, user })
            }
            _ => {
                let size = btf.size_of(type_id).unwrap_or(8);
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return Err(self.error(Diagnostic::error(
                        span,
                        format!("cannot read a {size}-byte `{}`", btf.type_name(type_id)),
                    )));
                }
                let reg = self.read_memory(address, offset, size, user);
                self.typed_value(reg, type_id, user, span)
            }
        }
    }

    /// `base.field` and `base->field`.
    fn field(&mut self, base: Val, base_span: Span, field: &Name, arrow: bool) -> Result<Val> {
        match base {
            Val::Args => self.args_field(field),
            Val::Ptr { reg, pointee, user } => {
                let Some(btf) = self.btf() else {
                    return Err(self.error(Diagnostic::error(field.span, "field access needs the kernel's BTF")));
                };
                let target = btf.resolve(pointee).ok().filter(|t| matches!(t.kind, Kind::Struct | Kind::Union));
                let Some(target) = target else {
                    let description = self.describe(&Val::Ptr { reg, pointee, user });
                    return Err(self.error(Diagnostic::error(
                        base_span,
                        format!("`{}` needs a pointer to a struct or union, found {description}", if arrow { "->" } else { "." }),
                    )
                    .with_hint("cast the pointer first, for example `((struct task_struct *)arg0)->pid`")));
                };
                self.struct_field(reg, target.id, user, field)
            }
            Val::Mem { addr, type_id, user } => {
                if arrow {
                    return Err(self.error(Diagnostic::error(
                        field.span,
                        format!("`->{}` is used on a struct value, not a pointer", field.text),
                    )
                    .with_hint(format!("use `.{}`", field.text))));
                }
                self.struct_field(addr, type_id, user, field)
            }
            other => {
                let description = self.describe(&other);
                Err(self.error(Diagnostic::error(
                    base_span,
                    format!("cannot access field `{}` of {description}", field.text),
                )))
            }
        }
    }

    /// Reads member `field` of the struct or union of type `type_id` at
    /// `address`, searching anonymous members too.
    fn struct_field(&mut self, address: VReg, type_id: u32, user: bool, field: &Name) -> Result<Val> {
        let Some(btf) = self.btf() else {
            return Err(self.error(Diagnostic::error(field.span, "field access needs the kernel's BTF")));
        };
        let Some((bit_offset, member_type, bitfield)) = find_member(&btf, type_id, &field.text) else {
            let ty = btf.type_by_id(type_id).ok();
            let members: Vec<String> = ty
                .map(|t| btf.members(&t).iter().map(|m| m.name.to_owned()).collect())
                .unwrap_or_default();
            let matches = suggest::close_matches(&field.text, members.iter().map(String::as_str), 3);
            let mut diagnostic = Diagnostic::error(
                field.span,
                format!("`{}` has no field `{}`", btf.type_name(type_id), field.text),
            );
            if !matches.is_empty() {
                diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
            }
            return Err(self.error(diagnostic));
        };
        if bitfield > 0 {
            let byte_offset = i64::from(bit_offset / 8);
            let reg = self.read_memory(address, byte_offset, 8, user);
            let shift = (bit_offset % 8) as i32;
            if shift > 0 {
                self.f.push(Inst::Alu { op: AluOp::Rsh, dst: reg, src: Value::Imm(shift), wide: true });
            }
            let mask = self.operand(((1u64 << bitfield) - 1) as i64);
            self.f.push(Inst::Alu { op: AluOp::And, dst: reg, src: mask, wide: true });
            return Ok(Val::Int { reg, ty: IntTy::U64 });
        }
        self.memory_value(address, i64::from(bit_offset / 8), member_type, user, field.span)
    }

    fn args_field(&mut self, field: &Name) -> Result<Val> {
        match self.probe.args.clone() {
            ArgSource::Tracepoint(format) => {
                let Some(found) = format.field(&field.text).cloned() else {
                    let names: Vec<&str> = format.arguments().map(|f| f.name.as_str()).collect();
                    let matches = suggest::close_matches(&field.text, names.iter().copied(), 3);
                    let mut diagnostic = Diagnostic::error(
                        field.span,
                        format!("tracepoint {}:{} has no field `{}`", format.category, format.name, field.text),
                    );
                    diagnostic = if matches.is_empty() {
                        diagnostic.with_hint(format!("its fields: {}", names.join(", ")))
                    } else {
                        diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")))
                    };
                    return Err(self.error(diagnostic));
                };
                // Pointers in system call tracepoints point to user memory.
                let user = format.category == "syscalls";
                if found.is_data_loc() {
                    let location = self.f.vreg();
                    self.f.push(Inst::Load { size: Size::W, dst: location, base: self.ctx, off: found.offset as i16 });
                    self.f.push(Inst::Alu { op: AluOp::And, dst: location, src: Value::Imm(0xffff), wide: true });
                    let addr = self.f.vreg();
                    self.f.push(Inst::Mov { dst: addr, src: self.ctx.into() });
                    self.f.push(Inst::Alu { op: AluOp::Add, dst: addr, src: location.into(), wide: true });
                    // Treated as a char array of the largest string length.
                    let slot = self.f.slot(self.options.max_strlen);
                    self.read_string_into(addr, false, slot, self.options.max_strlen);
                    return Ok(Val::Str { slot, len: self.options.max_strlen });
                }
                if let Some(length) = found.array_len {
                    if found.is_char_array() {
                        let len = length.min(self.options.max_strlen).max(1);
                        let slot = self.f.slot(len);
                        let addr = self.f.vreg();
                        self.f.push(Inst::Mov { dst: addr, src: self.ctx.into() });
                        self.f.push(Inst::Alu { op: AluOp::Add, dst: addr, src: Value::Imm(found.offset as i32), wide: true });
                        self.read_string_into(addr, false, slot, len);
                        return Ok(Val::Str { slot, len });
                    }
                    return Err(self.error(Diagnostic::error(
                        field.span,
                        format!("array field `{}` is not supported yet", field.text),
                    )));
                }
                let Some(size) = Size::from_bytes(found.size) else {
                    return Err(self.error(Diagnostic::error(
                        field.span,
                        format!("field `{}` has an unsupported size of {} bytes", field.text, found.size),
                    )));
                };
                let reg = self.f.vreg();
                self.f.push(Inst::Load { size, dst: reg, base: self.ctx, off: found.offset as i16 });
                if found.is_pointer() {
                    let pointee = if found.type_name.contains("char") { CHAR_POINTEE } else { 0 };
                    return Ok(Val::Ptr { reg, pointee, user });
                }
                let ty = field_int_type(&found);
                self.extend(reg, ty);
                Ok(Val::Int { reg, ty })
            }
            ArgSource::Registers(Some(signature)) | ArgSource::Trampoline(signature) => {
                self.reject_arguments_at_return(&format!("`args.{}`", field.text), field.span)?;
                let Some((index, param)) = signature.params.iter().enumerate().find(|(_, p)| p.name == field.text) else {
                    let names: Vec<&str> = signature.params.iter().map(|p| p.name.as_str()).collect();
                    let function = self.probe.kind.function().unwrap_or("the function").to_owned();
                    let matches = suggest::close_matches(&field.text, names.iter().copied(), 3);
                    let mut diagnostic = Diagnostic::error(
                        field.span,
                        format!("`{function}` has no parameter `{}`", field.text),
                    );
                    diagnostic = if matches.is_empty() {
                        diagnostic.with_hint(format!("its parameters: {}", names.join(", ")))
                    } else {
                        diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")))
                    };
                    return Err(self.error(diagnostic));
                };
                let offset = match &self.probe.args {
                    ArgSource::Trampoline(_) => (8 * param.slot) as i16,
                    _ if index < 6 => PT_REGS_ARGS[index],
                    _ => {
                        return Err(self.error(Diagnostic::error(
                            field.span,
                            format!("parameter `{}` is passed on the stack, which kprobes cannot read yet", field.text),
                        )));
                    }
                };
                let reg = self.f.vreg();
                self.f.push(Inst::Load { size: Size::DW, dst: reg, base: self.ctx, off: offset });
                let type_id = param.type_id;
                self.typed_value(reg, type_id, false, field.span)
            }
            _ => Err(self.error(Diagnostic::error(field.span, "`args` is not available here"))),
        }
    }

    fn unary(&mut self, op: UnaryOp, operand: &Expr, span: Span) -> Result<Val> {
        match op {
            UnaryOp::Plus => {
                let (reg, ty) = self.int_expr(operand)?;
                Ok(Val::Int { reg, ty })
            }
            UnaryOp::Negate => {
                let (reg, _) = self.int_expr(operand)?;
                let result = self.copy(reg);
                self.f.push(Inst::Neg { dst: result });
                Ok(Val::Int { reg: result, ty: IntTy::I64 })
            }
            UnaryOp::BitNot => {
                let (reg, ty) = self.int_expr(operand)?;
                let result = self.copy(reg);
                self.f.push(Inst::Alu { op: AluOp::Xor, dst: result, src: Value::Imm(-1), wide: true });
                self.extend(result, ty);
                Ok(Val::Int { reg: result, ty })
            }
            UnaryOp::Not => self.boolean(|codegen, false_label| codegen.condition_not(operand, false_label)),
            UnaryOp::Deref => {
                let value = self.expr(operand)?;
                match value {
                    Val::Ptr { reg, pointee, user } if pointee != 0 && pointee != CHAR_POINTEE => {
                        self.memory_value(reg, 0, pointee, user, span)
                    }
                    Val::Ptr { reg, user, .. } => {
                        let value = self.read_memory(reg, 0, 8, user);
                        Ok(Val::Int { reg: value, ty: IntTy::U64 })
                    }
                    other => {
                        let description = self.describe(&other);
                        Err(self.error(Diagnostic::error(span, format!("cannot dereference {description}"))))
                    }
                }
            }
            UnaryOp::AddressOf => Err(self.error(Diagnostic::error(span, "`&` is not supported yet"))),
        }
    }

    /// Materializes a condition as 0 or 1.
    fn boolean(&mut self, branch: impl FnOnce(&mut Self, Label) -> Result<()>) -> Result<Val> {
        let result = self.f.vreg();
        let false_label = self.f.label();
        self.f.push(Inst::Mov { dst: result, src: Value::Imm(0) });
        branch(self, false_label)?;
        self.f.push(Inst::Mov { dst: result, src: Value::Imm(1) });
        self.f.push(Inst::Label(false_label));
        Ok(Val::Int { reg: result, ty: IntTy { bytes: 1, signed: false } })
    }

    fn copy(&mut self, reg: VReg) -> VReg {
        let copy = self.f.vreg();
        self.f.push(Inst::Mov { dst: copy, src: reg.into() });
        copy
    }

    /// Jumps to `false_label` unless `expr` is true.
    pub(crate) fn condition(&mut self, expr: &Expr, false_label: Label) -> Result<()> {
        match &expr.kind {
            ExprKind::Binary { op: BinaryOp::LogicalAnd, left, right } => {
                self.condition(left, false_label)?;
                self.condition(right, false_label)
            }
            ExprKind::Binary { op: BinaryOp::LogicalOr, left, right } => {
                let right_label = self.f.label();
                let true_label = self.f.label();
                self.condition(left, right_label)?;
                self.f.push(Inst::Jump { target: true_label });
                self.f.push(Inst::Label(right_label));
                self.condition(right, false_label)?;
                self.f.push(Inst::Label(true_label));
                Ok(())
            }
            ExprKind::Unary { op: UnaryOp::Not, operand } => self.condition_not(operand, false_label),
            ExprKind::Binary { op, left, right } if is_comparison(*op) => {
                let left_value = self.expr(left)?;
                self.compare(*op, left_value, left.span, right, false_label, expr.span)
            }
            _ => {
                let value = self.expr(expr)?;
                if matches!(value, Val::Str { .. } | Val::Lit(_)) {
                    return Err(self.error(Diagnostic::error(expr.span, "a string is not a condition")
                        .with_hint("compare it: `str(...) == \"text\"`")));
                }
                let (reg, _) = self.as_int(value, expr.span)?;
                self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: reg, rhs: Value::Imm(0), target: false_label });
                Ok(())
            }
        }
    }

    /// Jumps to `false_label` if `expr` is true.
    fn condition_not(&mut self, expr: &Expr, false_label: Label) -> Result<()> {
        let true_label = self.f.label();
        self.condition(expr, true_label)?;
        self.f.push(Inst::Jump { target: false_label });
        self.f.push(Inst::Label(true_label));
        Ok(())
    }

    /// Compares `left op right`, jumping to `false_label` when false.
    fn compare(&mut self, op: BinaryOp, left: Val, left_span: Span, right: &Expr, false_label: Label, span: Span) -> Result<()> {
        let right_value = self.expr(right)?;
        let is_string = |v: &Val| matches!(v, Val::Str { .. } | Val::Lit(_) | Val::Mem { .. });
        if is_string(&left) || is_string(&right_value) {
            if !matches!(op, BinaryOp::Eq | BinaryOp::Ne) {
                return Err(self.error(Diagnostic::error(span, format!("strings cannot be compared with `{}`", op.symbol()))
                    .with_hint("use `==` or `!=`")));
            }
            let equal_label = self.f.label();
            let (mismatch, matched) = if op == BinaryOp::Eq { (false_label, None) } else { (equal_label, Some(false_label)) };
            self.string_equal(left, left_span, right_value, right.span, mismatch)?;
            if let Some(target) = matched {
                self.f.push(Inst::Jump { target });
            }
            self.f.push(Inst::Label(equal_label));
            return Ok(());
        }
        let (l, lty) = self.as_int(left, left_span)?;
        let (r, rty) = self.as_int(right_value, right.span)?;
        let signed = common_signedness(lty, rty);
        let jump_if_false = match (op, signed) {
            (BinaryOp::Eq, _) => JmpOp::Ne,
            (BinaryOp::Ne, _) => JmpOp::Eq,
            (BinaryOp::Lt, false) => JmpOp::Ge,
            (BinaryOp::Le, false) => JmpOp::Gt,
            (BinaryOp::Gt, false) => JmpOp::Le,
            (BinaryOp::Ge, false) => JmpOp::Lt,
            (BinaryOp::Lt, true) => JmpOp::Sge,
            (BinaryOp::Le, true) => JmpOp::Sgt,
            (BinaryOp::Gt, true) => JmpOp::Sle,
            (BinaryOp::Ge, true) => JmpOp::Slt,
            _ => unreachable!("only comparisons reach compare"),
        };
        self.f.push(Inst::Branch { op: jump_if_false, lhs: l, rhs: r.into(), target: false_label });
        Ok(())
    }

    /// `left op right`, with `left` already translated.
    pub(crate) fn binary_values(&mut self, op: BinaryOp, left: Val, left_span: Span, right: &Expr, span: Span) -> Result<Val> {
        if is_comparison(op) {
            return self.boolean(|codegen, false_label| codegen.compare(op, left, left_span, right, false_label, span));
        }
        if matches!(op, BinaryOp::LogicalAnd | BinaryOp::LogicalOr) {
            let (l, _) = self.as_int(left, left_span)?;
            return self.boolean(|codegen, false_label| {
                if op == BinaryOp::LogicalAnd {
                    codegen.f.push(Inst::Branch { op: JmpOp::Eq, lhs: l, rhs: Value::Imm(0), target: false_label });
                    codegen.condition(right, false_label)
                } else {
                    let true_label = codegen.f.label();
                    codegen.f.push(Inst::Branch { op: JmpOp::Ne, lhs: l, rhs: Value::Imm(0), target: true_label });
                    codegen.condition(right, false_label)?;
                    codegen.f.push(Inst::Label(true_label));
                    Ok(())
                }
            });
        }

        let pointer = match &left {
            Val::Ptr { pointee, user, .. } if matches!(op, BinaryOp::Add | BinaryOp::Sub) => Some((*pointee, *user)),
            _ => None,
        };
        let (l, lty) = self.as_int(left, left_span)?;
        let (r, rty) = self.int_expr(right)?;
        let signed = common_signedness(lty, rty);
        let result = self.copy(l);
        let mut right_operand = r;
        if let Some((pointee, _)) = pointer {
            // Pointer arithmetic moves by whole elements.
            let element = self.btf().and_then(|btf| btf.size_of(pointee).ok()).filter(|&s| s > 1);
            if let Some(element) = element {
                right_operand = self.copy(r);
                self.f.push(Inst::Alu { op: AluOp::Mul, dst: right_operand, src: Value::Imm(element as i32), wide: true });
            }
        }
        match op {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::Shl => {
                let alu = match op {
                    BinaryOp::Add => AluOp::Add,
                    BinaryOp::Sub => AluOp::Sub,
                    BinaryOp::Mul => AluOp::Mul,
                    BinaryOp::BitAnd => AluOp::And,
                    BinaryOp::BitOr => AluOp::Or,
                    BinaryOp::BitXor => AluOp::Xor,
                    _ => AluOp::Lsh,
                };
                self.f.push(Inst::Alu { op: alu, dst: result, src: right_operand.into(), wide: true });
            }
            BinaryOp::Shr => {
                let alu = if lty.signed { AluOp::Arsh } else { AluOp::Rsh };
                self.f.push(Inst::Alu { op: alu, dst: result, src: r.into(), wide: true });
            }
            BinaryOp::Div | BinaryOp::Mod => self.divide(op, result, r, signed),
            _ => unreachable!("comparisons and logical operators are handled above"),
        }
        if matches!(op, BinaryOp::Shl | BinaryOp::Shr) {
            let small_literal = matches!(&right.kind, ExprKind::Integer(literal) if literal.value < 64);
            if !small_literal {
                self.clamp_shift(result, r, op == BinaryOp::Shr && lty.signed);
            }
            // A shift has the type of its promoted left operand.
            return Ok(Val::Int { reg: result, ty: IntTy { bytes: 8, signed: promoted_signedness(lty) } });
        }
        if let Some((pointee, user)) = pointer {
            return Ok(Val::Ptr { reg: result, pointee, user });
        }
        let ty = IntTy { bytes: 8, signed };
        Ok(Val::Int { reg: result, ty })
    }

    /// Fixes `result`, a 64-bit shift by `amount`, for amounts of 64 or
    /// more (negative ones included): the machine shifts by the amount
    /// modulo 64, but a shift that moves every bit out gives 0, or -1 for
    /// an arithmetic right shift of a negative value.
    fn clamp_shift(&mut self, result: VReg, amount: VReg, arithmetic: bool) {
        let in_range = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Le, lhs: amount, rhs: Value::Imm(63), target: in_range });
        if arithmetic {
            // The machine's shift kept the sign bit, so shifting by 63
            // more gives 0 or -1.
            self.f.push(Inst::Alu { op: AluOp::Arsh, dst: result, src: Value::Imm(63), wide: true });
        } else {
            self.f.push(Inst::Mov { dst: result, src: Value::Imm(0) });
        }
        self.f.push(Inst::Label(in_range));
    }

    /// `result = result / divisor` or `%`, giving 0 when the divisor is 0
    /// (as bpftrace does) and C's truncating signed semantics when either
    /// operand is signed.
    fn divide(&mut self, op: BinaryOp, result: VReg, divisor: VReg, signed: bool) {
        let alu = if op == BinaryOp::Div { AluOp::Div } else { AluOp::Mod };
        let zero = self.f.label();
        let end = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: divisor, rhs: Value::Imm(0), target: zero });
        if signed {
            // |a| op |b|, then fix the sign: a quotient is negative when the
            // signs differ, a remainder takes the dividend's sign.
            let negative = self.f.vreg();
            self.f.push(Inst::Mov { dst: negative, src: Value::Imm(0) });
            let positive_dividend = self.f.label();
            self.f.push(Inst::Branch { op: JmpOp::Sge, lhs: result, rhs: Value::Imm(0), target: positive_dividend });
            self.f.push(Inst::Neg { dst: result });
            self.f.push(Inst::Mov { dst: negative, src: Value::Imm(1) });
            self.f.push(Inst::Label(positive_dividend));
            let magnitude = self.copy(divisor);
            let positive_divisor = self.f.label();
            self.f.push(Inst::Branch { op: JmpOp::Sge, lhs: magnitude, rhs: Value::Imm(0), target: positive_divisor });
            self.f.push(Inst::Neg { dst: magnitude });
            if op == BinaryOp::Div {
                self.f.push(Inst::Alu { op: AluOp::Xor, dst: negative, src: Value::Imm(1), wide: true });
            }
            self.f.push(Inst::Label(positive_divisor));
            self.f.push(Inst::Alu { op: alu, dst: result, src: magnitude.into(), wide: true });
            self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: negative, rhs: Value::Imm(0), target: end });
            self.f.push(Inst::Neg { dst: result });
        } else {
            self.f.push(Inst::Alu { op: alu, dst: result, src: divisor.into(), wide: true });
        }
        self.f.push(Inst::Jump { target: end });
        self.f.push(Inst::Label(zero));
        self.f.push(Inst::Mov { dst: result, src: Value::Imm(0) });
        self.f.push(Inst::Label(end));
    }

    fn ternary(&mut self, condition: &Expr, then_expr: &Expr, else_expr: &Expr, span: Span) -> Result<Val> {
        let else_label = self.f.label();
        let end = self.f.label();
        let result = self.f.vreg();
        self.f.push(Inst::Mov { dst: result, src: Value::Imm(0) });
        self.condition(condition, else_label)?;
        let then_value = self.expr(then_expr)?;
        if matches!(then_value, Val::Str { .. } | Val::Lit(_)) {
            return self.string_ternary(then_value, then_expr, else_expr, else_label, end);
        }
        let then_kind = self.ternary_arm(then_value, result, then_expr.span)?;
        self.f.push(Inst::Jump { target: end });
        self.f.push(Inst::Label(else_label));
        let else_value = self.expr(else_expr)?;
        let else_kind = self.ternary_arm(else_value, result, else_expr.span)?;
        self.f.push(Inst::Label(end));
        match (then_kind, else_kind) {
            (Ok(a), Ok(b)) => Ok(Val::Int { reg: result, ty: IntTy { bytes: 8, signed: common_signedness(a, b) } }),
            (Err((pointee, user)), Err(_)) => Ok(Val::Ptr { reg: result, pointee, user }),
            _ => Err(self.error(Diagnostic::error(span, "both arms of `?:` must be integers, or both pointers"))),
        }
    }

    /// Moves one arm's value into `result`; returns its integer type, or
    /// the pointer's pointee and origin.
    fn ternary_arm(&mut self, value: Val, result: VReg, span: Span) -> Result<std::result::Result<IntTy, (u32, bool)>> {
        match value {
            Val::Int { reg, ty } => {
                self.f.push(Inst::Mov { dst: result, src: reg.into() });
                Ok(Ok(ty))
            }
            Val::Ptr { reg, pointee, user } => {
                self.f.push(Inst::Mov { dst: result, src: reg.into() });
                Ok(Err((pointee, user)))
            }
            other => {
                let description = self.describe(&other);
                Err(self.error(Diagnostic::error(span, format!("`?:` arms must be integers or pointers, found {description}"))
                    .with_hint("both arms of `?:` must be integers, both pointers or both strings")))
            }
        }
    }

    /// Finishes a `?:` whose first arm is the string `then_value`, with the
    /// code of the condition already emitted: both arms copy their string
    /// into one zeroed buffer.
    fn string_ternary(&mut self, then_value: Val, then_expr: &Expr, else_expr: &Expr, else_label: Label, end: Label) -> Result<Val> {
        let len = self.static_string_len(then_expr).max(self.static_string_len(else_expr));
        let result = self.f.slot(len);
        let (slot, slot_len) = self.string_value(then_value, then_expr.span)?;
        self.fill_string(result, len, slot, slot_len);
        self.f.push(Inst::Jump { target: end });

        self.f.push(Inst::Label(else_label));
        let else_value = self.expr(else_expr)?;
        if !matches!(else_value, Val::Str { .. } | Val::Lit(_) | Val::Mem { .. }) {
            let description = self.describe(&else_value);
            return Err(self.error(Diagnostic::error(
                else_expr.span,
                format!("the first arm of `?:` is a string, so the second must be one too, not {description}"),
            )));
        }
        let (slot, slot_len) = self.string_value(else_value, else_expr.span)?;
        self.fill_string(result, len, slot, slot_len);
        self.f.push(Inst::Label(end));
        Ok(Val::Str { slot: result, len })
    }

    /// Returns the buffer size, NUL included, for the string that `expr`
    /// yields, as far as the syntax tells: a literal's or a variable's own
    /// size, and `str()`'s maximum for everything else.
    fn static_string_len(&self, expr: &Expr) -> u32 {
        match &expr.kind {
            ExprKind::String(bytes) => bytes.len() as u32 + 1,
            ExprKind::Variable(name) => match self.variables.get(name) {
                Some(Variable::Str { len, .. }) => *len,
                _ => self.options.max_strlen,
            },
            ExprKind::Ternary { then_expr, else_expr, .. } => {
                self.static_string_len(then_expr).max(self.static_string_len(else_expr))
            }
            _ => self.options.max_strlen,
        }
    }

    /// Zeroes `target` and copies the string in `source` into it, so that
    /// every byte of `target` is written on this path.
    fn fill_string(&mut self, target: Slot, target_len: u32, source: Slot, source_len: u32) {
        for offset in (0..target_len).step_by(8) {
            self.f.push(Inst::StoreStack { size: Size::DW, slot: target, off: offset as i16, src: Value::Imm(0) });
        }
        self.copy_string(source, source_len, target, target_len);
    }

    fn cast(&mut self, ty: &TypeKind, ty_span: Span, operand: &Expr) -> Result<Val> {
        match ty {
            TypeKind::Integer { signed, bits } => {
                let (reg, _) = self.int_expr(operand)?;
                let result = self.copy(reg);
                let ty = IntTy { bytes: bits / 8, signed: *signed };
                self.extend(result, ty);
                Ok(Val::Int { reg: result, ty })
            }
            TypeKind::Bool => {
                let (reg, _) = self.int_expr(operand)?;
                self.boolean(|codegen, false_label| {
                    codegen.f.push(Inst::Branch { op: JmpOp::Eq, lhs: reg, rhs: Value::Imm(0), target: false_label });
                    Ok(())
                })
            }
            TypeKind::Pointer(target) => {
                // A cast keeps the address space the value came from: a
                // user pointer of a system call stays one, and so do the
                // integer arguments of a uprobe.
                let value = self.expr(operand)?;
                let user = match value {
                    Val::Ptr { user, .. } => user,
                    _ => self.in_user_space(),
                };
                let (reg, _) = self.as_int(value, operand.span)?;
                let pointee = self.pointee_id(&target.kind, target.span)?;
                let result = self.copy(reg);
                Ok(Val::Ptr { reg: result, pointee, user })
            }
            _ => Err(self.error(Diagnostic::error(ty_span, "casts to this type are not supported")
                .with_hint("cast to an integer type such as `uint32`, or to a pointer such as `struct task_struct *`"))),
        }
    }

    /// Returns the BTF type id that a cast's pointer points to.
    fn pointee_id(&mut self, kind: &TypeKind, span: Span) -> Result<u32> {
        match kind {
            TypeKind::Struct(name) | TypeKind::Union(name) => {
                let union = matches!(kind, TypeKind::Union(_));
                match self.env.find_struct(name, union) {
                    Some(id) => Ok(id),
                    None => Err(self.error(Diagnostic::error(
                        span,
                        format!("{} `{name}` is not in the kernel's BTF", if union { "union" } else { "struct" }),
                    ))),
                }
            }
            TypeKind::Named(name) if name == "char" => Ok(CHAR_POINTEE),
            TypeKind::Void => Ok(0),
            TypeKind::Named(name) => {
                let found = self.btf().and_then(|btf| {
                    btf.types()
                        .find(|t| matches!(t.kind, Kind::Typedef | Kind::Int) && t.name == name.as_str())
                        .map(|t| t.id)
                });
                match found {
                    Some(id) => Ok(id),
                    None => Err(self.error(Diagnostic::error(span, format!("type `{name}` is not in the kernel's BTF")))),
                }
            }
            TypeKind::Integer { .. } => Ok(0),
            _ => Err(self.error(Diagnostic::error(span, "pointers to this type are not supported"))),
        }
    }
}

/// A pointee id that stands for `char` when the pointer came from a
/// tracepoint format or a cast rather than BTF: the highest id, which no
/// real BTF type has.
pub(crate) const CHAR_POINTEE: u32 = u32::MAX;

/// Tells whether arithmetic or a comparison on two integers is signed.
/// Arithmetic is done in 64 bits, so every integer narrower than that is
/// first promoted to int64, which holds all its values. Then C's usual
/// conversions apply: a uint64 operand makes the operation unsigned.
pub(crate) fn common_signedness(a: IntTy, b: IntTy) -> bool {
    promoted_signedness(a) && promoted_signedness(b)
}

/// Tells whether an integer is signed once promoted to 64 bits.
pub(crate) fn promoted_signedness(ty: IntTy) -> bool {
    ty.signed || ty.bytes < 8
}

/// Returns the integer type of a tracepoint field. System call tracepoints
/// store every argument in 8 bytes marked unsigned, whatever its C type,
/// so a field declared with a narrower C type (`int dfd`) is read as that
/// type: `AT_FDCWD` is then -100, as in bpftrace, and not 4294967196.
pub(crate) fn field_int_type(field: &Field) -> IntTy {
    let declared = c_integer_type(&field.type_name);
    match declared {
        Some(ty) if u32::from(ty.bytes) < field.size => ty,
        _ => IntTy { bytes: field.size.clamp(1, 8) as u8, signed: field.signed },
    }
}

/// Returns the width and signedness of a C or kernel integer type name,
/// for the names that tracepoint formats use; `None` for other names.
fn c_integer_type(name: &str) -> Option<IntTy> {
    let name = name.trim_start_matches("const ").trim_start_matches("volatile ").trim();
    let (bytes, signed) = match name {
        // `char` is signed on x86-64.
        "char" | "signed char" | "s8" | "__s8" | "int8_t" => (1, true),
        "unsigned char" | "u8" | "__u8" | "uint8_t" | "bool" | "_Bool" => (1, false),
        "short" | "short int" | "signed short" | "s16" | "__s16" | "int16_t" => (2, true),
        "unsigned short" | "unsigned short int" | "u16" | "__u16" | "uint16_t" | "umode_t" => (2, false),
        "int" | "signed int" | "signed" | "s32" | "__s32" | "int32_t" | "pid_t" | "key_serial_t" | "clockid_t"
        | "timer_t" | "mqd_t" | "rwf_t" | "key_t" => (4, true),
        "unsigned int" | "unsigned" | "u32" | "__u32" | "uint32_t" | "uid_t" | "gid_t" | "qid_t" => (4, false),
        _ => return None,
    };
    Some(IntTy { bytes, signed })
}

fn is_comparison(op: BinaryOp) -> bool {
    matches!(op, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
}

/// Finds member `name` of a struct or union, looking inside anonymous
/// members. Returns its bit offset from the start, its type and its
/// bitfield width (0 for an ordinary member).
fn find_member(btf: &crate::btf::Btf, type_id: u32, name: &str) -> Option<(u32, u32, u32)> {
    let ty = btf.resolve(type_id).ok()?;
    for member in btf.members(&ty) {
        if member.name == name {
            return Some((member.bit_offset, member.type_id, member.bitfield_size));
        }
        if member.name.is_empty() {
            if let Some((offset, member_type, bits)) = find_member(btf, member.type_id, name) {
                return Some((member.bit_offset + offset, member_type, bits));
            }
        }
    }
    None
}

/// Names the script may call, for "did you mean" hints.
pub(crate) fn function_names() -> &'static [&'static str] {
    FUNCTIONS
}

impl Codegen<'_> {
    /// Reads the name of the function that fired (or the probe's full
    /// name) from the names map, at the program's BPF cookie. A kprobe.multi
    /// program serves many functions, so the name is only known at run
    /// time.
    fn multi_probe_name(&mut self, probe_name: bool) -> Val {
        let size = self.options.name_size;
        let slot = self.f.slot(size);
        for off in (0..size as i16).step_by(8) {
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off, src: Value::Imm(0) });
        }
        let cookie = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::GET_ATTACH_COOKIE, args: vec![self.ctx.into()], ret: Some(cookie) });
        self.f.push(Inst::Alu { op: AluOp::Lsh, dst: cookie, src: Value::Imm(1), wide: true });
        if probe_name {
            self.f.push(Inst::Alu { op: AluOp::Add, dst: cookie, src: Value::Imm(1), wide: true });
        }
        let key = self.f.slot(4);
        self.f.push(Inst::StoreStack { size: Size::W, slot: key, off: 0, src: cookie.into() });
        let key_address = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: key_address, slot: key, off: 0 });
        let map = self.f.vreg();
        self.f.push(Inst::LoadMap { dst: map, map: NAMES_MAP });
        let entry = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![map.into(), key_address.into()], ret: Some(entry) });
        let missing = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: entry, rhs: Value::Imm(0), target: missing });
        let destination = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: destination, slot, off: 0 });
        self.f.push(Inst::Call {
            helper: helper::PROBE_READ_KERNEL,
            args: vec![destination.into(), Value::Imm(size as i32), entry.into()],
            ret: None,
        });
        self.f.push(Inst::Label(missing));
        Val::Str { slot, len: size }
    }
}
