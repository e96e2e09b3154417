//! Values that user space renders: `kstack` and `ustack`, `ksym()`,
//! `usym()`, `ntop()` and `buf()`, and the compile-time `kaddr()`.
//!
//! The kernel side only collects raw bytes: addresses, a stack id, an
//! address family. Symbol names come from kallsyms and the traced
//! program's ELF files when the record or map is printed.

use super::{Codegen, IntTy, Result, Val, helper, output::BUILD_ID_FRAME_SIZE};
use crate::script::{
    aggregate::Special,
    probes::ArgSource,
    ast::{Expr, ExprKind},
    codegen::maps::MapTable,
    diagnostic::Diagnostic,
    insn::{AluOp, JmpOp, Size},
    ir::{Inst, Slot, VReg, Value},
    span::Span,
};

/// Frames a stack keeps when no limit is given, the kernel's
/// `PERF_MAX_STACK_DEPTH`.
pub const DEFAULT_STACK_FRAMES: u32 = 127;
/// `BPF_F_USER_STACK`: collect the user-space stack.
const BPF_F_USER_STACK: i32 = 1 << 8;
/// `BPF_F_USER_BUILD_ID`: report user frames as build id and file offset.
const BPF_F_USER_BUILD_ID: i32 = 1 << 11;
/// Largest `buf()` length in bytes, in `printf` and `print`.
pub const MAX_BUF_LEN: u32 = 1024;
/// Largest `buf()` length in bytes where the bytes are kept on the
/// 512-byte BPF stack: map keys and variables.
pub const MAX_STACK_BUF_LEN: u32 = 200;
/// Bytes kept on the stack for a `buf()` length known only at run time.
const DEFAULT_BUF_LEN: u32 = 64;

/// The evaluated arguments of `buf()`.
pub(crate) struct BufArguments {
    pub address: VReg,
    pub user: bool,
    /// The length as the script computed it, which may exceed `capacity`.
    pub requested: VReg,
    /// The bytes to read: `requested`, at most `capacity`.
    pub count: VReg,
    pub capacity: u32,
}
/// `AF_INET` and `AF_INET6`.
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

impl Codegen<'_> {
    /// `kstack`, `ustack`, `kstack(N)` and `ustack(N)`.
    pub(crate) fn stack(&mut self, user: bool, args: &[Expr], span: Span) -> Result<Val> {
        let name = if user { "ustack" } else { "kstack" };
        if let Some(mode) = args.first().filter(|arg| matches!(arg.kind, ExprKind::Identifier(_))) {
            let text = self.source.slice(mode.span).to_owned();
            return Err(self.error(Diagnostic::error(mode.span, format!("the stack mode `{text}` is not supported yet"))
                .with_hint(format!("stacks print in bpftrace's default mode; give only a frame limit: {name}(5)"))));
        }
        let frames = match args {
            [] => DEFAULT_STACK_FRAMES,
            [limit] => {
                let ExprKind::Integer(literal) = &limit.kind else {
                    return Err(self.error(Diagnostic::error(limit.span, format!("the frame limit of {name}() must be an integer literal"))
                        .with_hint(format!("for example {name}(5)"))));
                };
                if literal.value == 0 || literal.value > u64::from(DEFAULT_STACK_FRAMES) {
                    return Err(self.error(Diagnostic::error(limit.span, format!("invalid frame limit {}", literal.value))
                        .with_hint(format!("use 1 to {DEFAULT_STACK_FRAMES} frames"))));
                }
                literal.value as u32
            }
            _ => {
                return Err(self.error(Diagnostic::error(span, format!("{name}() takes at most 1 argument, the frame limit"))));
            }
        };
        if user && !self.can_read_user_stack() {
            return Err(self.error(Diagnostic::error(span, format!("`ustack` is not available in {}", self.probe.kind.display_name()))
                .with_hint("BEGIN and END run in the tool's own process")));
        }
        Ok(Val::Stack { user, frames })
    }

    /// Returns the `bpf_get_stack` flags for a stack: the user-space flag
    /// for user stacks. Kernel stacks of trampoline programs (fentry,
    /// fexit, lsm) skip two frames, the program's own and the
    /// trampoline's, so that they start at the traced function as a
    /// kprobe's do. The count was measured on Linux 6.1 and 6.12, and user
    /// space still drops any BPF frames left at the top.
    fn stack_flags(&self, user: bool) -> i32 {
        use super::super::probes::ProbeKind;
        if user {
            return BPF_F_USER_STACK;
        }
        match self.probe.kind {
            ProbeKind::Fentry { .. } | ProbeKind::Fexit { .. } | ProbeKind::Lsm { .. } => 2,
            _ => 0,
        }
    }

    fn can_read_user_stack(&self) -> bool {
        !matches!(self.probe.kind, super::super::probes::ProbeKind::Begin | super::super::probes::ProbeKind::End)
    }

    /// Collects a stack as a stack id in its stack trace map, for a map
    /// key.
    pub(crate) fn stack_id(&mut self, user: bool, frames: u32) -> Val {
        let index = self.maps.stack_map(user, frames);
        let slot = self.f.slot(16);
        let map = self.f.vreg();
        self.f.push(Inst::LoadMap { dst: map, map: MapTable::stack_map_ref(self.maps.maps().len(), index) });
        let id = self.f.vreg();
        self.f.push(Inst::Call {
            helper: helper::GET_STACKID,
            args: vec![self.ctx.into(), map.into(), Value::Imm(self.stack_flags(user))],
            ret: Some(id),
        });
        self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: id.into() });
        let special = if user {
            let pid = self.current_pid();
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 8, src: pid.into() });
            Special::Ustack { frames: frames as u8, map: index as u16 }
        } else {
            Special::Kstack { frames: frames as u8, map: index as u16 }
        };
        Val::Special { slot, special }
    }

    /// Writes a stack into a record at `address`: the byte count that
    /// `bpf_get_stack` returned (i64, negative on failure), the process id
    /// (u64), then up to `frames` frames. User frames carry the build id
    /// of their file and the offset in it, which names them even after
    /// the process exited.
    pub(crate) fn write_stack(&mut self, record: VReg, offset: u32, user: bool, frames: u32) {
        let (entry_size, flags) = if user {
            (BUILD_ID_FRAME_SIZE, self.stack_flags(true) | BPF_F_USER_BUILD_ID)
        } else {
            (8, self.stack_flags(false))
        };
        let buffer = self.f.vreg();
        self.f.push(Inst::Mov { dst: buffer, src: record.into() });
        self.f.push(Inst::Alu { op: AluOp::Add, dst: buffer, src: Value::Imm((offset + 16) as i32), wide: true });
        let written = self.f.vreg();
        self.f.push(Inst::Call {
            helper: helper::GET_STACK,
            args: vec![
                self.ctx.into(),
                buffer.into(),
                Value::Imm((frames * entry_size) as i32),
                Value::Imm(flags),
            ],
            ret: Some(written),
        });
        self.f.push(Inst::Store { size: Size::DW, base: record, off: offset as i16, src: written.into() });
        let pid = self.current_pid();
        self.f.push(Inst::Store { size: Size::DW, base: record, off: (offset + 8) as i16, src: pid.into() });
    }

    fn current_pid(&mut self) -> VReg {
        let pid = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::GET_CURRENT_PID_TGID, args: vec![], ret: Some(pid) });
        self.f.push(Inst::Alu { op: AluOp::Rsh, dst: pid, src: Value::Imm(32), wide: true });
        pid
    }

    /// `ksym(addr)` and `usym(addr)`: the function an address is in.
    pub(crate) fn symbol(&mut self, user: bool, args: &[Expr], span: Span) -> Result<Val> {
        let name = if user { "usym" } else { "ksym" };
        let [address] = args else {
            return Err(self.error(Diagnostic::error(span, format!("{name}() takes 1 argument, an address"))));
        };
        let (reg, _) = self.int_expr(address)?;
        let slot = self.f.slot(16);
        self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: reg.into() });
        if user {
            let pid = self.current_pid();
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 8, src: pid.into() });
            return Ok(Val::Special { slot, special: Special::Usym });
        }
        Ok(Val::Special { slot, special: Special::Ksym })
    }

    /// `kaddr("symbol")`: a kernel symbol's address, from kallsyms at
    /// compile time.
    pub(crate) fn kaddr(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let [name] = args else {
            return Err(self.error(Diagnostic::error(span, "kaddr() takes 1 argument, a symbol name in quotes")));
        };
        let ExprKind::String(bytes) = &name.kind else {
            return Err(self.error(Diagnostic::error(name.span, "kaddr() needs a string literal")
                .with_hint("for example kaddr(\"jiffies\")")));
        };
        let symbol = String::from_utf8_lossy(bytes).into_owned();
        let Some(functions) = self.env.functions() else {
            return Err(self.error(Diagnostic::error(name.span, "kaddr() needs the kernel's symbol table (/proc/kallsyms), which cannot be read")
                .with_hint("run as root")));
        };
        let Some(address) = functions.kallsyms().symbol(&symbol).map(|found| found.address) else {
            return Err(self.error(Diagnostic::error(name.span, format!("kernel symbol `{symbol}` not found in /proc/kallsyms"))));
        };
        if address == 0 {
            return Err(self.error(Diagnostic::error(name.span, format!("the address of `{symbol}` reads as 0"))
                .with_hint("kallsyms hides addresses from readers without CAP_SYSLOG, or when kernel.kptr_restrict is 2")));
        }
        let reg = self.f.constant(address as i64);
        Ok(Val::Int { reg, ty: IntTy::U64 })
    }

    /// `ntop(addr)` and `ntop(af, addr)`: an IPv4 or IPv6 address in its
    /// text form. A 4-byte integer or array is IPv4, a 16-byte array IPv6.
    pub(crate) fn ntop(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let (family, address) = match args {
            [address] => (None, address),
            [family, address] => (Some(family), address),
            _ => {
                return Err(self.error(Diagnostic::error(span, format!("ntop() takes 1 or 2 arguments, got {}", args.len()))
                    .with_hint("ntop(address) or ntop(family, address)")));
            }
        };
        let slot = self.f.slot(24);
        for offset in [0, 8, 16] {
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off: offset, src: Value::Imm(0) });
        }
        if let Some((offset, size)) = self.tracepoint_address_field(address)? {
            // A `__u8 addr[4]` or `__u8 addr[16]` field of the tracepoint's
            // record, read from the context.
            let pieces: &[(i16, Size)] = if size == 4 { &[(0, Size::W)] } else { &[(0, Size::DW), (8, Size::DW)] };
            for &(piece, piece_size) in pieces {
                let value = self.f.vreg();
                self.f.push(Inst::Load { size: piece_size, dst: value, base: self.ctx, off: offset + piece });
                self.f.push(Inst::StoreStack { size: piece_size, slot, off: 8 + piece, src: value.into() });
            }
            let inferred = if size == 4 { AF_INET } else { AF_INET6 };
            return self.finish_ntop(slot, family, inferred);
        }
        let value = self.expr(address)?;
        let inferred = match value {
            Val::Int { reg, .. } => {
                self.f.push(Inst::StoreStack { size: Size::W, slot, off: 8, src: reg.into() });
                AF_INET
            }
            Val::Mem { addr, type_id, user } => {
                let size = self.btf().and_then(|btf| btf.size_of(type_id).ok()).unwrap_or(0);
                let (family, bytes) = match size {
                    4 => (AF_INET, 4),
                    16 => (AF_INET6, 16),
                    _ => {
                        return Err(self.error(Diagnostic::error(address.span, format!("ntop() needs a 4-byte or 16-byte address, found {size} bytes"))));
                    }
                };
                self.read_into_slot(addr, user, slot, 8, bytes);
                family
            }
            other => {
                let description = self.describe(&other);
                return Err(self.error(Diagnostic::error(address.span, format!("ntop() needs an address, found {description}"))
                    .with_hint("pass an IPv4 address as an integer, or an in_addr/in6_addr field")));
            }
        };
        self.finish_ntop(slot, family, inferred)
    }

    /// Stores the address family of an `ntop()` value: `family` when
    /// given, otherwise the one the address's size implies.
    fn finish_ntop(&mut self, slot: Slot, family: Option<&Expr>, inferred: i32) -> Result<Val> {
        match family {
            None => self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: Value::Imm(inferred) }),
            Some(family) => {
                let (reg, _) = self.int_expr(family)?;
                self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: reg.into() });
            }
        }
        Ok(Val::Special { slot, special: Special::Inet })
    }

    /// Returns the context offset and size of `args.FIELD` when `expr` is a
    /// tracepoint's 4-byte or 16-byte array field, such as `saddr` and
    /// `daddr_v6` of `sock:inet_sock_set_state`.
    fn tracepoint_address_field(&mut self, expr: &Expr) -> Result<Option<(i16, u32)>> {
        let ExprKind::Field { base, field, .. } = &expr.kind else {
            return Ok(None);
        };
        let (ExprKind::Identifier(name), ArgSource::Tracepoint(format)) = (&base.kind, &self.probe.args) else {
            return Ok(None);
        };
        if name != "args" {
            return Ok(None);
        }
        let Some(found) = format.field(&field.text) else {
            return Ok(None);
        };
        if found.array_len.is_none() {
            return Ok(None);
        }
        if !matches!(found.size, 4 | 16) {
            return Err(self.error(Diagnostic::error(
                expr.span,
                format!("ntop() needs a 4-byte or 16-byte address, and `args.{}` has {} bytes", field.text, found.size),
            )));
        }
        Ok(Some((found.offset as i16, found.size)))
    }

    /// Evaluates the arguments of `buf(pointer, length)`. `max` is the
    /// largest literal length, `runtime` the bytes kept for a length
    /// known only at run time.
    pub(crate) fn buf_arguments(&mut self, args: &[Expr], span: Span, max: u32, runtime: u32) -> Result<BufArguments> {
        let [pointer, length] = args else {
            return Err(self.error(Diagnostic::error(span, format!("buf() takes 2 arguments, got {}", args.len()))
                .with_hint("buf(pointer, length)")));
        };
        let capacity = match &length.kind {
            ExprKind::Integer(literal) => {
                if literal.value == 0 || literal.value > u64::from(max) {
                    let mut diagnostic = Diagnostic::error(length.span, format!("invalid buf() length {}", literal.value))
                        .with_hint(format!("use 1 to {max} bytes here"));
                    if max < MAX_BUF_LEN {
                        diagnostic = diagnostic.with_hint(format!("printf(\"%r\", buf(pointer, N)) reads up to {MAX_BUF_LEN} bytes"));
                    }
                    return Err(self.error(diagnostic));
                }
                literal.value as u32
            }
            _ => runtime,
        };
        let (address, user) = match self.expr(pointer)? {
            Val::Ptr { reg, user, .. } => (reg, user),
            Val::Int { reg, .. } => (reg, self.in_user_space()),
            Val::Mem { addr, user, .. } => (addr, user),
            other => {
                let description = self.describe(&other);
                return Err(self.error(Diagnostic::error(pointer.span, format!("buf() needs a pointer, found {description}"))));
            }
        };
        let (requested, _) = self.int_expr(length)?;
        // The count to read, kept in [0, capacity] where the verifier can
        // see it; the requested count is kept too, to mark a cut.
        let count = self.f.vreg();
        self.f.push(Inst::Mov { dst: count, src: requested.into() });
        let within = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Le, lhs: count, rhs: Value::Imm(capacity as i32), target: within });
        self.f.push(Inst::Mov { dst: count, src: Value::Imm(capacity as i32) });
        self.f.push(Inst::Label(within));
        Ok(BufArguments { address, user, requested, count, capacity })
    }

    /// `buf(pointer, length)` kept on the stack, for map keys and
    /// variables: up to [`MAX_STACK_BUF_LEN`] bytes.
    pub(crate) fn buf(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let arguments = self.buf_arguments(args, span, MAX_STACK_BUF_LEN, DEFAULT_BUF_LEN)?;
        let special = Special::Buf { len: arguments.capacity as u16 };
        let slot = self.f.slot(special.size() as u32);
        for offset in (0..special.size() as u32).step_by(8) {
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off: offset as i16, src: Value::Imm(0) });
        }
        self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: arguments.requested.into() });
        let buffer = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: buffer, slot, off: 8 });
        let read = if arguments.user { helper::PROBE_READ_USER } else { helper::PROBE_READ_KERNEL };
        self.f.push(Inst::Call {
            helper: read,
            args: vec![buffer.into(), arguments.count.into(), arguments.address.into()],
            ret: None,
        });
        Ok(Val::Special { slot, special })
    }

    /// Writes `buf()` bytes into a record at `offset`, laid out as
    /// [`Special::Buf`] describes.
    pub(crate) fn write_buf(&mut self, record: VReg, offset: u32, arguments: &BufArguments) {
        self.f.push(Inst::Store { size: Size::DW, base: record, off: offset as i16, src: arguments.requested.into() });
        let buffer = self.f.vreg();
        self.f.push(Inst::Mov { dst: buffer, src: record.into() });
        self.f.push(Inst::Alu { op: AluOp::Add, dst: buffer, src: Value::Imm((offset + 8) as i32), wide: true });
        let read = if arguments.user { helper::PROBE_READ_USER } else { helper::PROBE_READ_KERNEL };
        self.f.push(Inst::Call {
            helper: read,
            args: vec![buffer.into(), arguments.count.into(), arguments.address.into()],
            ret: None,
        });
    }

    /// Reads `bytes` bytes at `address` into `slot` at `offset`.
    fn read_into_slot(&mut self, address: VReg, user: bool, slot: Slot, offset: i16, bytes: i32) {
        let buffer = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: buffer, slot, off: offset });
        let read = if user { helper::PROBE_READ_USER } else { helper::PROBE_READ_KERNEL };
        self.f.push(Inst::Call { helper: read, args: vec![buffer.into(), Value::Imm(bytes), address.into()], ret: None });
    }
}
