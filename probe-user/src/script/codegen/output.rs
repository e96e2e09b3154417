//! Output statements: `printf`, `print` and `exit` send records through the
//! events ring buffer, and user space renders them from an [`OutputSpec`].
//!
//! A record starts with an 8-byte header: the output's index (u32) and 4
//! bytes of padding. Integer arguments follow as 8-byte values, strings as
//! their buffers rounded up to 8 bytes. Literal arguments are not sent:
//! the spec carries them.

use super::{
    Codegen, EVENTS_MAP, IntTy, LOST_MAP, Result, Val,
    expr::function_names,
    helper,
    special::{BufArguments, MAX_BUF_LEN},
    strings::RecordString,
};
use crate::{
    script::{
        aggregate::Special,
        ast::{Expr, ExprKind, Name},
        diagnostic::Diagnostic,
        insn::{AluOp, JmpOp, Size},
        ir::{Inst, Label, Slot, VReg, Value},
        printf::{self, Arg, Conversion, Segment},
        span::Span,
    },
    suggest,
};

/// Size of a record's header.
pub const RECORD_HEADER: u32 = 8;

/// How to render one kind of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputSpec {
    /// `printf` and `print`: a format and where each argument is.
    Printf { segments: Vec<Segment>, args: Vec<ArgSpec> },
    /// `exit()`: end the run.
    Exit,
    /// `print(@m)`, `clear(@m)` or `zero(@m)`, which user space carries
    /// out on the map.
    MapAction(MapAction),
}

/// A map operation that user space performs when the record arrives.
/// `map` is the map's index in the script's map table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapAction {
    /// Print the map; `top` keeps only the largest entries (0 keeps all)
    /// and `div` divides every value.
    Print { map: usize, top: usize, div: u32 },
    /// Delete every entry.
    Clear { map: usize },
    /// Set every value to zero, keeping the keys.
    Zero { map: usize },
}

/// Where one `printf` argument is in a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgSpec {
    Int { offset: u32, ty: IntTy },
    Str { offset: u32, len: u32 },
    /// A string that `str(pointer, chars)` read straight into the record,
    /// in a buffer of `chars + 2` bytes: a string longer than `chars`
    /// fills the extra byte and prints cut, with `...` after it.
    CappedStr { offset: u32, chars: u32 },
    /// A string that `str(pointer, count)` read with a run-time count:
    /// the count (u64), then a buffer of `capacity + 2` bytes.
    SizedStr { offset: u32, capacity: u32 },
    /// A stack from `bpf_get_stack`: the byte count (i64), the process
    /// id (u64), then up to `frames` entries: addresses (8 bytes each)
    /// for kernel stacks, [`BUILD_ID_FRAME_SIZE`]-byte build-id frames for
    /// user stacks.
    Stack { offset: u32, user: bool, frames: u32 },
    /// Bytes that user space renders, laid out as [`Special`] describes.
    Special { offset: u32, special: Special },
    Const(Arg),
}

/// Size of one frame of a user stack: `struct bpf_stack_build_id`, a
/// status (i32), a 20-byte build id, and a file offset or, when the
/// kernel could not read the build id, an address (u64).
pub const BUILD_ID_FRAME_SIZE: u32 = 32;

/// One stack frame as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// An address in the traced process or the kernel.
    Address(u64),
    /// An offset into the file with this GNU build id, which still names
    /// the frame after the process exited.
    FileOffset { build_id: [u8; 20], offset: u64 },
}

impl Frame {
    /// Decodes the frames of a user stack: `struct bpf_stack_build_id`
    /// entries, whose status is 1 for a build id and offset, 2 for an
    /// address, and 0 past the last frame.
    pub fn decode_user(bytes: &[u8]) -> Vec<Frame> {
        bytes
            .chunks_exact(BUILD_ID_FRAME_SIZE as usize)
            .map_while(|entry| {
                let status = i32::from_le_bytes(entry[0..4].try_into().unwrap_or([0; 4]));
                let value = u64::from_le_bytes(entry[24..32].try_into().unwrap_or([0; 8]));
                match status {
                    1 => Some(Frame::FileOffset { build_id: entry[4..24].try_into().unwrap_or([0; 20]), offset: value }),
                    2 => Some(Frame::Address(value)),
                    _ => None,
                }
            })
            .collect()
    }

    /// Decodes the frames of a kernel stack: addresses, 0 past the last.
    pub fn decode_kernel(bytes: &[u8]) -> Vec<Frame> {
        bytes
            .chunks_exact(8)
            .map(|entry| u64::from_le_bytes(entry.try_into().unwrap_or([0; 8])))
            .take_while(|&address| address != 0)
            .map(Frame::Address)
            .collect()
    }
}

/// Renders what only user space can: stacks and symbols. The runtime
/// implements it with kallsyms, the stack trace maps and the traced
/// processes' ELF files.
pub trait Symbols {
    /// Formats up to `frames` stack frames as bpftrace does: a newline,
    /// then one indented `symbol+offset` line per frame. Kernel stacks
    /// first lose the frames of BPF programs and trampolines at the top.
    fn stack(&self, user: bool, pid: u32, stack: &[Frame], frames: usize) -> String;
    /// Formats the bytes of a special value.
    fn special(&self, special: Special, bytes: &[u8]) -> String;
}

/// Marks a string that `str()` cut at its length.
pub const TRUNCATION_MARK: &str = "...";

impl OutputSpec {
    /// Renders a record of this kind. Returns `None` for `exit`.
    pub fn render(&self, record: &[u8], out: &mut String, symbols: &dyn Symbols) -> Option<()> {
        let OutputSpec::Printf { segments, args } = self else {
            return None;
        };
        let values: Vec<Arg> = args
            .iter()
            .map(|spec| match spec {
                ArgSpec::Int { offset, ty } => {
                    let start = *offset as usize;
                    let raw = record
                        .get(start..start + 8)
                        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                        .unwrap_or(0);
                    Arg::Int { raw, size: u32::from(ty.bytes), signed: ty.signed }
                }
                ArgSpec::Str { offset, len } => {
                    let start = (*offset as usize).min(record.len());
                    let end = (start + *len as usize).min(record.len());
                    let bytes = &record[start..end];
                    let text_end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    Arg::Str(String::from_utf8_lossy(&bytes[..text_end]).into_owned())
                }
                ArgSpec::CappedStr { offset, chars } => Arg::Str(capped_string(record, *offset as usize, *chars as usize)),
                ArgSpec::SizedStr { offset, capacity } => {
                    let start = *offset as usize;
                    let count = record
                        .get(start..start + 8)
                        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
                    let chars = count.min(u64::from(*capacity)) as usize;
                    Arg::Str(capped_string(record, start + 8, chars))
                }
                ArgSpec::Stack { offset, user, frames } => {
                    let entry_size = if *user { BUILD_ID_FRAME_SIZE } else { 8 } as usize;
                    let start = (*offset as usize).min(record.len());
                    let end = (start + 16 + *frames as usize * entry_size).min(record.len());
                    let bytes = &record[start..end];
                    let word = |index: usize| {
                        bytes
                            .get(index * 8..index * 8 + 8)
                            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                    };
                    let written = (word(0) as i64).clamp(0, (bytes.len().saturating_sub(16)) as i64) as usize;
                    let entries = bytes.get(16..16 + written).unwrap_or(&[]);
                    let stack = if *user { Frame::decode_user(entries) } else { Frame::decode_kernel(entries) };
                    Arg::Str(symbols.stack(*user, word(1) as u32, &stack, *frames as usize))
                }
                ArgSpec::Special { offset, special } => {
                    let start = (*offset as usize).min(record.len());
                    let end = (start + special.size()).min(record.len());
                    Arg::Str(symbols.special(*special, &record[start..end]))
                }
                ArgSpec::Const(arg) => arg.clone(),
            })
            .collect();
        printf::render(segments, &values, out);
        Some(())
    }
}

/// Returns the string at `start` in a record, cut to `chars` characters
/// with [`TRUNCATION_MARK`] when the buffer's one extra character shows
/// that it was longer.
fn capped_string(record: &[u8], start: usize, chars: usize) -> String {
    let start = start.min(record.len());
    let end = (start + chars + 2).min(record.len());
    let bytes = &record[start..end];
    let text_end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut text = String::from_utf8_lossy(&bytes[..text_end.min(chars)]).into_owned();
    if text_end > chars {
        text.push_str(TRUNCATION_MARK);
    }
    text
}

/// One value to put in a record.
enum Part {
    Int(VReg, IntTy),
    Str(Slot, u32),
    Const(Arg),
    /// `str(address, chars)`, read straight into the record.
    ReadStr { address: VReg, user: bool, chars: u32 },
    /// `str(address, count)` with a count known at run time.
    ReadSizedStr { address: VReg, user: bool, count: VReg, capacity: u32 },
    /// `buf()` read straight into the record.
    ReadBuf(BufArguments),
    Stack { user: bool, frames: u32 },
    Special(Slot, Special),
}

const PLANNED_FUNCTIONS: &[&str] = &[
    "has_key", "len", "uaddr", "join", "system",
    "cat", "signal", "override", "time", "strftime", "reg", "cgroupid", "macaddr",
];

impl Codegen<'_> {
    /// Translates a call to a builtin function.
    pub(crate) fn call(&mut self, name: &Name, args: &[Expr], span: Span) -> Result<Val> {
        match name.text.as_str() {
            "printf" => self.printf(args, span),
            "print" => self.print(args, span),
            "exit" => {
                if !args.is_empty() {
                    return Err(self.error(Diagnostic::error(span, "exit() takes no arguments")));
                }
                self.maps.uses_exit = true;
                let flag = self.exit_flag();
                let skip = self.f.label();
                self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: flag, rhs: Value::Imm(0), target: skip });
                self.f.push(Inst::Store { size: Size::DW, base: flag, off: 0, src: Value::Imm(1) });
                self.f.push(Inst::Label(skip));
                let record = self.reserve_record();
                let index = self.add_output(OutputSpec::Exit);
                self.submit_record(record, index, RECORD_HEADER);
                // The rest of the probe does not run, as in bpftrace.
                let done = self.done;
                self.f.push(Inst::Jump { target: done });
                Ok(Val::Void)
            }
            "str" => self.str_call(args, span),
            "kstack" => self.stack(false, args, span),
            "ustack" => self.stack(true, args, span),
            "ksym" => self.symbol(false, args, span),
            "usym" => self.symbol(true, args, span),
            "kaddr" => self.kaddr(args, span),
            "ntop" => self.ntop(args, span),
            "buf" => self.buf(args, span),
            "deny" => self.deny(args, span),
            "delete" => self.delete(args, span),
            "clear" | "zero" => {
                let [map] = args else {
                    return Err(self.error(Diagnostic::error(span, format!("{}() takes one map: {}(@name)", name.text, name.text))));
                };
                let map = self.map_argument(map, &name.text)?;
                let action = if name.text == "clear" { MapAction::Clear { map } } else { MapAction::Zero { map } };
                self.send_map_action(action);
                Ok(Val::Void)
            }
            text if super::maps::aggregation_kind(text).is_some() => Err(self.error(
                Diagnostic::error(name.span, format!("{text}() must be assigned to a map element"))
                    .with_hint(format!("for example `@calls[comm] = {text}({})`", if text == "count" { "" } else { "value" })),
            )),
            text if PLANNED_FUNCTIONS.contains(&text) => Err(self.error(Diagnostic::error(
                name.span,
                format!("the function `{text}()` is not supported yet"),
            ))),
            text => {
                let matches = suggest::close_matches(text, function_names().iter().copied(), 3);
                let mut diagnostic = Diagnostic::error(name.span, format!("unknown function `{text}()`"));
                if !matches.is_empty() {
                    diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
                }
                Err(self.error(diagnostic))
            }
        }
    }

    /// `print(@m[, top[, divisor]])`.
    fn print_map(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        if args.len() > 3 {
            return Err(self.error(Diagnostic::error(span, "print() of a map takes at most 3 arguments: print(@map, top, divisor)")));
        }
        let map = self.map_argument(&args[0], "print")?;
        let mut numbers = [0u64, 1];
        for (slot, arg) in numbers.iter_mut().zip(&args[1..]) {
            let ExprKind::Integer(literal) = &arg.kind else {
                return Err(self.error(Diagnostic::error(arg.span, "print() needs integer literals for top and divisor")));
            };
            *slot = literal.value;
        }
        let [top, div] = numbers;
        if div == 0 || div > u64::from(u32::MAX) {
            return Err(self.error(Diagnostic::error(args[2].span, format!("invalid divisor {div}: use 1 to {}", u32::MAX))));
        }
        self.send_map_action(MapAction::Print { map, top: top as usize, div: div as u32 });
        Ok(Val::Void)
    }

    /// Sends a record asking user space to act on a map.
    fn send_map_action(&mut self, action: MapAction) {
        let record = self.reserve_record();
        let index = self.add_output(OutputSpec::MapAction(action));
        self.submit_record(record, index, RECORD_HEADER);
    }

    fn add_output(&mut self, spec: OutputSpec) -> u32 {
        self.outputs.push(spec);
        self.outputs.len() as u32 - 1
    }

    fn printf(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let Some((format, values)) = args.split_first() else {
            return Err(self.error(Diagnostic::error(span, "printf() needs a format string")
                .with_hint("printf(\"%d\\n\", pid)")));
        };
        let ExprKind::String(bytes) = &format.kind else {
            return Err(self.error(Diagnostic::error(format.span, "the first argument of printf() must be a string literal")));
        };
        let text = String::from_utf8_lossy(bytes).into_owned();
        let segments = match printf::parse(&text) {
            Ok(segments) => segments,
            Err(err) => {
                return Err(self.error(Diagnostic::error(format.span, format!("invalid format string: {}", err.message))));
            }
        };
        let conversions: Vec<Conversion> = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Conversion(c) => Some(c.clone()),
                Segment::Literal(_) => None,
            })
            .collect();
        if conversions.len() != values.len() {
            return Err(self.error(Diagnostic::error(
                span,
                format!(
                    "the format string has {} conversion{} but {} argument{} follow{}",
                    conversions.len(),
                    if conversions.len() == 1 { "" } else { "s" },
                    values.len(),
                    if values.len() == 1 { "" } else { "s" },
                    if values.len() == 1 { "s" } else { "" },
                ),
            )));
        }

        // The record is reserved first and each argument goes into it as
        // soon as it is computed, so that the stack contains one argument's
        // strings at a time. When the ring buffer is full, the arguments
        // are not computed at all.
        let record = self.reserve_record();
        let mut specs = Vec::with_capacity(values.len());
        let mut offset = RECORD_HEADER;
        let mut failed = false;
        for (conversion, value_expr) in conversions.iter().zip(values) {
            let mark = self.f.temporaries_mark();
            match self.printf_part(conversion, value_expr) {
                Ok(part) => specs.push(self.write_part(&record, &mut offset, part)),
                Err(_) => failed = true,
            }
            self.f.release_temporaries(mark);
        }
        if failed {
            return Err(super::Reported);
        }
        let index = self.add_output(OutputSpec::Printf { segments, args: specs });
        self.submit_record(record, index, offset);
        Ok(Val::Void)
    }

    fn printf_part(&mut self, conversion: &Conversion, expr: &Expr) -> Result<Part> {
        let value = match &expr.kind {
            ExprKind::Call { name, args } if name.text == "buf" && conversion.kind == 'r' => {
                let arguments = self.buf_arguments(args, expr.span, MAX_BUF_LEN, MAX_BUF_LEN)?;
                return Ok(Part::ReadBuf(arguments));
            }
            ExprKind::Call { name, args } if name.text == "str" && conversion.kind == 's' => {
                match self.str_for_record(args, expr.span)? {
                    RecordString::Fixed { address, user, chars } => return Ok(Part::ReadStr { address, user, chars }),
                    RecordString::Sized { address, user, count, capacity } => {
                        return Ok(Part::ReadSizedStr { address, user, count, capacity });
                    }
                    RecordString::Value(value) => value,
                }
            }
            _ => self.expr(expr)?,
        };
        if conversion.kind == 'r' {
            return match value {
                Val::Special { slot, special: special @ Special::Buf { .. } } => Ok(Part::Special(slot, special)),
                other => {
                    let description = self.describe(&other);
                    Err(self.error(Diagnostic::error(expr.span, format!("`%r` needs a buf() value, found {description}"))
                        .with_hint("`%r` prints the bytes of buf(pointer, length); print strings with `%s`")))
                }
            };
        }
        if conversion.takes_string() {
            return match value {
                Val::Stack { user, frames } => Ok(Part::Stack { user, frames }),
                Val::Special { special: Special::Buf { .. }, .. } => Err(self.error(
                    Diagnostic::error(expr.span, "`%s` cannot print a buf() value").with_hint("print it with `%r`"),
                )),
                Val::Special { slot, special } => Ok(Part::Special(slot, special)),
                Val::Lit(bytes) => Ok(Part::Const(Arg::Str(String::from_utf8_lossy(&bytes).into_owned()))),
                Val::Int { .. } | Val::Ptr { .. } => {
                    let description = self.describe(&value);
                    let mut diagnostic =
                        Diagnostic::error(expr.span, format!("`%s` needs a string, found {description}"));
                    if matches!(value, Val::Ptr { .. }) {
                        diagnostic = diagnostic.with_hint("read the string with str(...)");
                    } else {
                        diagnostic = diagnostic.with_hint("print integers with `%d`");
                    }
                    Err(self.error(diagnostic))
                }
                other => {
                    let (slot, len) = self.string_value(other, expr.span)?;
                    Ok(Part::Str(slot, len))
                }
            };
        }
        match value {
            Val::Int { reg, ty } => Ok(Part::Int(reg, ty)),
            Val::Ptr { reg, .. } => Ok(Part::Int(reg, IntTy::U64)),
            other => {
                let description = self.describe(&other);
                Err(self.error(Diagnostic::error(
                    expr.span,
                    format!("`%{}` needs an integer, found {description}", conversion.kind),
                )
                .with_hint("print strings with `%s`")))
            }
        }
    }

    fn print(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        if let Some(Expr { kind: ExprKind::Map(map), .. }) = args.first() {
            if map.keys.is_empty() && args.len() > 1 {
                return self.print_map(args, span);
            }
        }
        let [value] = args else {
            return Err(self.error(Diagnostic::error(span, format!("print() takes 1 argument, got {}", args.len()))
                .with_hint("print(value), or print(@map[, top[, divisor]]) for a whole map")));
        };
        if let ExprKind::Map(map) = &value.kind {
            if map.keys.is_empty() {
                return self.print_map(args, span);
            }
        }
        if let ExprKind::Call { name, .. } = &value.kind {
            if let Some(kind) = match name.text.as_str() {
                "str" => Some('s'),
                "buf" => Some('r'),
                _ => None,
            } {
                let conversion = Conversion { kind, ..Conversion::default() };
                let part = self.printf_part(&conversion, value)?;
                return Ok(self.print_part(kind, part));
            }
        }
        let value_span = value.span;
        let value = self.expr(value)?;
        let (kind, part) = match value {
            Val::Stack { user, frames } => ('s', Part::Stack { user, frames }),
            Val::Special { slot, special: special @ Special::Buf { .. } } => ('r', Part::Special(slot, special)),
            Val::Special { slot, special } => ('s', Part::Special(slot, special)),
            Val::Int { reg, ty } => (if ty.signed { 'd' } else { 'u' }, Part::Int(reg, ty)),
            Val::Ptr { reg, .. } => ('p', Part::Int(reg, IntTy::U64)),
            Val::Lit(bytes) => ('s', Part::Const(Arg::Str(String::from_utf8_lossy(&bytes).into_owned()))),
            other => {
                let (slot, len) = self.string_value(other, value_span)?;
                ('s', Part::Str(slot, len))
            }
        };
        Ok(self.print_part(kind, part))
    }

    /// Sends one value that `print()` prints with conversion `kind` and a
    /// newline.
    fn print_part(&mut self, kind: char, part: Part) -> Val {
        let segments = vec![
            Segment::Conversion(Conversion { kind, ..Conversion::default() }),
            Segment::Literal("\n".into()),
        ];
        let record = self.reserve_record();
        let mut offset = RECORD_HEADER;
        let spec = self.write_part(&record, &mut offset, part);
        let index = self.add_output(OutputSpec::Printf { segments, args: vec![spec] });
        self.submit_record(record, index, offset);
        Val::Void
    }

    /// Reserves a record in the events ring buffer and jumps to the end of
    /// the record's code when the buffer is full. The record's size is
    /// filled in by [`Codegen::submit_record`], once every part is placed.
    fn reserve_record(&mut self) -> Reservation {
        let map = self.f.vreg();
        self.f.push(Inst::LoadMap { dst: map, map: EVENTS_MAP });
        let pointer = self.f.vreg();
        let call = self.f.insts.len();
        self.f.push(Inst::Call {
            helper: helper::RINGBUF_RESERVE,
            args: vec![map.into(), Value::Imm(0), Value::Imm(0)],
            ret: Some(pointer),
        });
        let full = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: pointer, rhs: Value::Imm(0), target: full });
        Reservation { pointer, call, full }
    }

    /// Writes one part into the record at `offset`, moves `offset` past it,
    /// and returns where the renderer finds it.
    fn write_part(&mut self, record: &Reservation, offset: &mut u32, part: Part) -> ArgSpec {
        match part {
            Part::Int(reg, ty) => {
                self.f.push(Inst::Store { size: Size::DW, base: record.pointer, off: *offset as i16, src: reg.into() });
                let spec = ArgSpec::Int { offset: *offset, ty };
                *offset += 8;
                spec
            }
            Part::Str(slot, len) => {
                self.store_string(record.pointer, *offset, slot, len);
                let spec = ArgSpec::Str { offset: *offset, len };
                *offset += len.div_ceil(8) * 8;
                spec
            }
            Part::Const(arg) => ArgSpec::Const(arg),
            Part::ReadBuf(arguments) => {
                let special = Special::Buf { len: arguments.capacity as u16 };
                self.write_buf(record.pointer, *offset, &arguments);
                let spec = ArgSpec::Special { offset: *offset, special };
                *offset += special.size() as u32;
                spec
            }
            Part::ReadSizedStr { address, user, count, capacity } => {
                self.f.push(Inst::Store { size: Size::DW, base: record.pointer, off: *offset as i16, src: count.into() });
                // One character more than asked shows whether the string
                // was longer.
                let len = self.f.vreg();
                self.f.push(Inst::Mov { dst: len, src: count.into() });
                self.f.push(Inst::Alu { op: AluOp::Add, dst: len, src: Value::Imm(2), wide: true });
                self.read_string_to_record(record.pointer, *offset + 8, address, user, len.into());
                let spec = ArgSpec::SizedStr { offset: *offset, capacity };
                *offset += 8 + (capacity + 2).div_ceil(8) * 8;
                spec
            }
            Part::ReadStr { address, user, chars } => {
                let len = chars + 2;
                self.read_string_to_record(record.pointer, *offset, address, user, Value::Imm(len as i32));
                let spec = ArgSpec::CappedStr { offset: *offset, chars };
                *offset += len.div_ceil(8) * 8;
                spec
            }
            Part::Stack { user, frames } => {
                self.write_stack(record.pointer, *offset, user, frames);
                let spec = ArgSpec::Stack { offset: *offset, user, frames };
                *offset += 16 + frames * if user { BUILD_ID_FRAME_SIZE } else { 8 };
                spec
            }
            Part::Special(slot, special) => {
                self.store_string(record.pointer, *offset, slot, special.size() as u32);
                let spec = ArgSpec::Special { offset: *offset, special };
                *offset += special.size() as u32;
                spec
            }
        }
    }

    /// Sets the reserved size to `size`, writes the header of output
    /// `index` and submits the record. When the ring buffer was full, it
    /// counts the record as lost instead.
    fn submit_record(&mut self, record: Reservation, index: u32, size: u32) {
        if let Inst::Call { args, .. } = &mut self.f.insts[record.call] {
            args[1] = Value::Imm(size as i32);
        }
        let end = self.f.label();
        self.f.push(Inst::Store { size: Size::W, base: record.pointer, off: 0, src: Value::Imm(index as i32) });
        self.f.push(Inst::Store { size: Size::W, base: record.pointer, off: 4, src: Value::Imm(0) });
        self.f.push(Inst::Call { helper: helper::RINGBUF_SUBMIT, args: vec![record.pointer.into(), Value::Imm(0)], ret: None });
        self.f.push(Inst::Jump { target: end });

        self.f.push(Inst::Label(record.full));
        let counter = self.first_element(LOST_MAP);
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: counter, rhs: Value::Imm(0), target: end });
        let value = self.f.vreg();
        self.f.push(Inst::Load { size: Size::DW, dst: value, base: counter, off: 0 });
        self.f.push(Inst::Alu { op: AluOp::Add, dst: value, src: Value::Imm(1), wide: true });
        self.f.push(Inst::Store { size: Size::DW, base: counter, off: 0, src: value.into() });
        self.f.push(Inst::Label(end));
    }
}

/// A ring buffer record being written.
struct Reservation {
    /// The record's address, 0 when the buffer was full.
    pointer: VReg,
    /// Index of the reserve call, whose size argument is set last.
    call: usize,
    /// Start of the code that runs when the buffer is full.
    full: Label,
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSymbols;

    impl Symbols for NoSymbols {
        fn stack(&self, _user: bool, _pid: u32, stack: &[Frame], _frames: usize) -> String {
            stack.iter().map(|frame| format!("{frame:?};")).collect()
        }

        fn special(&self, _special: Special, bytes: &[u8]) -> String {
            format!("{} bytes", bytes.len())
        }
    }

    #[test]
    fn user_frames_decode_until_empty() {
        let mut bytes = vec![0u8; 4 * BUILD_ID_FRAME_SIZE as usize];
        bytes[0] = 1;
        bytes[4..24].copy_from_slice(&[7; 20]);
        bytes[24..32].copy_from_slice(&0x1234u64.to_le_bytes());
        bytes[32] = 2;
        bytes[56..64].copy_from_slice(&0x7f00u64.to_le_bytes());
        // The third entry has status 0, so the fourth is never read.
        bytes[96] = 1;
        assert_eq!(
            Frame::decode_user(&bytes),
            vec![Frame::FileOffset { build_id: [7; 20], offset: 0x1234 }, Frame::Address(0x7f00)]
        );
        let kernel: Vec<u8> = [0xffff_ffff_8100_0000u64, 0, 5].iter().flat_map(|word| word.to_le_bytes()).collect();
        assert_eq!(Frame::decode_kernel(&kernel), vec![Frame::Address(0xffff_ffff_8100_0000)]);
    }

    #[test]
    fn capped_string_marks_cut() {
        let spec = OutputSpec::Printf {
            segments: printf::parse("%s|%s").unwrap(),
            args: vec![ArgSpec::CappedStr { offset: 8, chars: 3 }, ArgSpec::CappedStr { offset: 16, chars: 3 }],
        };
        let mut record = vec![0u8; 24];
        record[8..12].copy_from_slice(b"abcd");
        record[16..19].copy_from_slice(b"abc");
        let mut out = String::new();
        spec.render(&record, &mut out, &NoSymbols).expect("printf renders");
        assert_eq!(out, "abc...|abc");
    }

    #[test]
    fn renders_record() {
        let spec = OutputSpec::Printf {
            segments: printf::parse("%s %d %s\n").unwrap(),
            args: vec![
                ArgSpec::Str { offset: 8, len: 16 },
                ArgSpec::Int { offset: 24, ty: IntTy { bytes: 4, signed: true } },
                ArgSpec::Const(Arg::Str("do_sys_openat2".into())),
            ],
        };
        let mut record = vec![0u8; 32];
        record[8..11].copy_from_slice(b"cat");
        record[24..32].copy_from_slice(&(-2i64).to_le_bytes());
        let mut out = String::new();
        spec.render(&record, &mut out, &NoSymbols).expect("printf renders");
        assert_eq!(out, "cat -2 do_sys_openat2\n");
        assert!(OutputSpec::Exit.render(&record, &mut out, &NoSymbols).is_none());
    }
}
