//! Strings: `str()`, string values on the stack, copies and comparisons.
//!
//! A string value is a NUL-terminated buffer in a stack slot. Every byte
//! that the code reads from a slot has been written first (by a helper, a
//! store or the zeroing at program start), which the verifier checks.

use super::{Codegen, Result, Val, helper};

/// Most characters `str()` reads into a `printf` or `print` record.
pub const MAX_PRINTED_STRLEN: u32 = 4095;
/// Most characters `str(pointer, length)` reads into a record when
/// `length` is not a literal: the record always has room for this many.
pub const MAX_RUNTIME_STRLEN: u32 = 1024;
/// Most characters of a string kept on the 512-byte BPF stack: in a
/// variable, a map key or value, or a comparison.
pub const MAX_STACK_STRLEN: u32 = 200;
use crate::{
    btf::Kind,
    script::{
        ast::{Expr, ExprKind},
        diagnostic::Diagnostic,
        insn::{AluOp, JmpOp, Size},
        ir::{Inst, Label, Slot, VReg, Value},
        span::Span,
    },
};

/// A `str()` argument of `printf` or `print`.
pub(crate) enum RecordString {
    /// Up to `chars` characters, with room for one more that shows a cut.
    Fixed { address: VReg, user: bool, chars: u32 },
    /// Up to `count` characters, a register at most `capacity`.
    Sized { address: VReg, user: bool, count: VReg, capacity: u32 },
    /// Already a string value, such as a `char` array field.
    Value(Val),
}

/// Pieces of at most 8 bytes that cover `len` bytes: `(offset, size)`.
pub(crate) fn pieces(len: u32) -> impl Iterator<Item = (u32, Size)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let left = len - offset;
        let size = match left {
            0 => return None,
            8.. => Size::DW,
            4..=7 => Size::W,
            2..=3 => Size::H,
            _ => Size::B,
        };
        let piece = (offset, size);
        offset += size.bytes();
        Some(piece)
    })
}

impl Codegen<'_> {
    /// Puts a string-like value in a stack slot and returns the slot and
    /// its length.
    pub(crate) fn string_value(&mut self, value: Val, span: Span) -> Result<(Slot, u32)> {
        match value {
            Val::Str { slot, len } => Ok((slot, len)),
            Val::Lit(bytes) => {
                let len = bytes.len() as u32 + 1;
                let slot = self.f.slot(len);
                let mut padded = bytes;
                padded.resize(len as usize, 0);
                for (offset, size) in pieces(len) {
                    let chunk = &padded[offset as usize..(offset + size.bytes()) as usize];
                    let mut raw = [0u8; 8];
                    raw[..chunk.len()].copy_from_slice(chunk);
                    let value = i64::from_le_bytes(raw);
                    let src = match i32::try_from(value) {
                        Ok(imm) => Value::Imm(imm),
                        _ => Value::Reg(self.f.constant(value)),
                    };
                    self.f.push(Inst::StoreStack { size, slot, off: offset as i16, src });
                }
                Ok((slot, len))
            }
            Val::Mem { addr, type_id, user } => {
                let array_len = self.char_array_len(type_id);
                let Some(array_len) = array_len else {
                    let description = self.describe(&Val::Mem { addr, type_id, user });
                    return Err(self.error(Diagnostic::error(span, format!("expected a string, found {description}"))));
                };
                let len = array_len.clamp(1, self.options.max_strlen);
                let slot = self.f.slot(len);
                self.read_string_into(addr, user, slot, len);
                Ok((slot, len))
            }
            other => {
                let description = self.describe(&other);
                let mut diagnostic = Diagnostic::error(span, format!("expected a string, found {description}"));
                if matches!(other, Val::Ptr { .. }) {
                    diagnostic = diagnostic.with_hint("read the string the pointer points to with str()");
                }
                Err(self.error(diagnostic))
            }
        }
    }

    /// The element count of a `char` array type, if `type_id` is one.
    fn char_array_len(&self, type_id: u32) -> Option<u32> {
        let btf = self.btf()?;
        let ty = btf.resolve(type_id).ok()?;
        let (element, count) = btf.array_info(&ty)?;
        let element = btf.resolve(element).ok()?;
        (element.kind == Kind::Int && element.size_or_type == 1).then_some(count)
    }

    /// Copies a string between stack slots, keeping the target
    /// NUL-terminated when the source is longer.
    pub(crate) fn copy_string(&mut self, source: Slot, source_len: u32, target: Slot, target_len: u32) {
        let len = source_len.min(target_len);
        for (offset, size) in pieces(len) {
            let value = self.f.vreg();
            self.f.push(Inst::LoadStack { size, dst: value, slot: source, off: offset as i16 });
            self.f.push(Inst::StoreStack { size, slot: target, off: offset as i16, src: value.into() });
        }
        if source_len > target_len {
            self.f.push(Inst::StoreStack { size: Size::B, slot: target, off: (target_len - 1) as i16, src: Value::Imm(0) });
        }
    }

    /// Reads a NUL-terminated string at `address` into `slot`, trying
    /// kernel memory first and then user memory, unless the address is
    /// known to be a user address.
    pub(crate) fn read_string_into(&mut self, address: VReg, user: bool, slot: Slot, len: u32) {
        let buffer = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: buffer, slot, off: 0 });
        let args = vec![buffer.into(), Value::Imm(len as i32), address.into()];
        if user {
            self.f.push(Inst::Call { helper: helper::PROBE_READ_USER_STR, args, ret: None });
            return;
        }
        let status = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::PROBE_READ_KERNEL_STR, args: args.clone(), ret: Some(status) });
        let done = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Sge, lhs: status, rhs: Value::Imm(0), target: done });
        let buffer = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: buffer, slot, off: 0 });
        self.f.push(Inst::Call {
            helper: helper::PROBE_READ_USER_STR,
            args: vec![buffer.into(), Value::Imm(len as i32), address.into()],
            ret: None,
        });
        self.f.push(Inst::Label(done));
    }

    /// Returns the character count that `str()`'s arguments ask for: the
    /// literal length, at most `max` characters, or the default length.
    fn str_length(&mut self, args: &[Expr], span: Span, max: u32, where_: &str) -> Result<u32> {
        if args.is_empty() || args.len() > 2 {
            return Err(self.error(Diagnostic::error(span, format!("str() takes 1 or 2 arguments, got {}", args.len()))
                .with_hint("str(pointer) or str(pointer, length)")));
        }
        let Some(length) = args.get(1) else {
            return Ok(self.options.max_strlen - 1);
        };
        let ExprKind::Integer(literal) = &length.kind else {
            return Err(self.error(Diagnostic::error(length.span, "the length of str() must be an integer literal")));
        };
        if literal.value == 0 {
            return Err(self.error(Diagnostic::error(length.span, "the length of str() must be at least 1")));
        }
        if literal.value > u64::from(max) {
            let mut diagnostic = Diagnostic::error(
                length.span,
                format!("str() reads at most {max} characters {where_}, not {}", literal.value),
            );
            if max < MAX_PRINTED_STRLEN {
                diagnostic = diagnostic.with_hint(format!(
                    "printf(\"%s\", str(pointer, N)) and print(str(pointer, N)) read up to {MAX_PRINTED_STRLEN} characters"
                ));
            }
            return Err(self.error(diagnostic));
        }
        Ok(literal.value as u32)
    }

    /// `str(pointer [, length])` as a `printf` or `print` argument: reads
    /// the string straight into the record, so that it may be longer than
    /// the BPF stack. Returns the value instead when the argument is
    /// already a string.
    pub(crate) fn str_for_record(&mut self, args: &[Expr], span: Span) -> Result<RecordString> {
        let runtime_length = args.get(1).filter(|length| !matches!(length.kind, ExprKind::Integer(_)));
        let chars = match runtime_length {
            Some(_) if args.len() == 2 => MAX_RUNTIME_STRLEN,
            _ => self.str_length(args, span, MAX_PRINTED_STRLEN, "in printf")?,
        };
        let (address, user, chars) = match self.expr(&args[0])? {
            Val::Ptr { reg, user, .. } => (reg, user, chars),
            Val::Int { reg, .. } => (reg, self.in_user_space(), chars),
            Val::Mem { addr, type_id, user } if self.char_array_len(type_id).is_some() => {
                let array_len = self.char_array_len(type_id).unwrap_or(1);
                (addr, user, chars.min(array_len.max(1)))
            }
            value @ (Val::Str { .. } | Val::Lit(_)) if runtime_length.is_none() => return Ok(RecordString::Value(value)),
            other => {
                let description = self.describe(&other);
                return Err(self.error(Diagnostic::error(args[0].span, format!("str() needs a pointer, found {description}"))));
            }
        };
        let Some(length) = runtime_length else {
            return Ok(RecordString::Fixed { address, user, chars });
        };
        let (requested, _) = self.int_expr(length)?;
        // The count, as unsigned, kept in [0, chars] where the verifier
        // can see it: a negative count reads the most.
        let count = self.f.vreg();
        self.f.push(Inst::Mov { dst: count, src: requested.into() });
        let within = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Le, lhs: count, rhs: Value::Imm(chars as i32), target: within });
        self.f.push(Inst::Mov { dst: count, src: Value::Imm(chars as i32) });
        self.f.push(Inst::Label(within));
        Ok(RecordString::Sized { address, user, count, capacity: chars })
    }

    /// Reads a NUL-terminated string at `address` into a record at
    /// `offset`, as [`Codegen::read_string_into`] does into a slot. `len`
    /// is the buffer size, a constant or a register the verifier can
    /// bound.
    pub(crate) fn read_string_to_record(&mut self, record: VReg, offset: u32, address: VReg, user: bool, len: Value) {
        let buffer_at = |codegen: &mut Self| {
            let buffer = codegen.f.vreg();
            codegen.f.push(Inst::Mov { dst: buffer, src: record.into() });
            codegen.f.push(Inst::Alu { op: AluOp::Add, dst: buffer, src: Value::Imm(offset as i32), wide: true });
            buffer
        };
        let buffer = buffer_at(self);
        let args = vec![buffer.into(), len.clone(), address.into()];
        if user {
            self.f.push(Inst::Call { helper: helper::PROBE_READ_USER_STR, args, ret: None });
            return;
        }
        let status = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::PROBE_READ_KERNEL_STR, args, ret: Some(status) });
        let done = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Sge, lhs: status, rhs: Value::Imm(0), target: done });
        let buffer = buffer_at(self);
        self.f.push(Inst::Call {
            helper: helper::PROBE_READ_USER_STR,
            args: vec![buffer.into(), len, address.into()],
            ret: None,
        });
        self.f.push(Inst::Label(done));
    }

    /// `str(pointer [, length])`.
    pub(crate) fn str_call(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let chars = self.str_length(args, span, MAX_STACK_STRLEN, "outside printf and print")?;
        // The buffer contains the characters and the terminating NUL.
        let len = chars + 1;
        let value = self.expr(&args[0])?;
        match value {
            Val::Ptr { reg, user, .. } => {
                let slot = self.f.slot(len);
                self.read_string_into(reg, user, slot, len);
                Ok(Val::Str { slot, len })
            }
            Val::Int { reg, .. } => {
                let slot = self.f.slot(len);
                let user = self.in_user_space();
                self.read_string_into(reg, user, slot, len);
                Ok(Val::Str { slot, len })
            }
            Val::Mem { addr, type_id, user } if self.char_array_len(type_id).is_some() => {
                let array_len = self.char_array_len(type_id).unwrap_or(len);
                let len = len.min(array_len.max(1));
                let slot = self.f.slot(len);
                self.read_string_into(addr, user, slot, len);
                Ok(Val::Str { slot, len })
            }
            value @ (Val::Str { .. } | Val::Lit(_)) => Ok(value),
            other => {
                let description = self.describe(&other);
                Err(self.error(Diagnostic::error(args[0].span, format!("str() needs a pointer, found {description}"))))
            }
        }
    }

    /// Jumps to `mismatch` unless the two strings are equal.
    pub(crate) fn string_equal(&mut self, left: Val, left_span: Span, right: Val, right_span: Span, mismatch: Label) -> Result<()> {
        match (left, right) {
            (Val::Lit(a), Val::Lit(b)) => {
                if a != b {
                    self.f.push(Inst::Jump { target: mismatch });
                }
                Ok(())
            }
            (Val::Lit(literal), other) => self.equal_to_literal(other, right_span, &literal, left_span, mismatch),
            (other, Val::Lit(literal)) => self.equal_to_literal(other, left_span, &literal, right_span, mismatch),
            (left, right) => {
                let (a, a_len) = self.string_value(left, left_span)?;
                let (b, b_len) = self.string_value(right, right_span)?;
                let equal = self.f.label();
                for offset in 0..a_len.min(b_len) {
                    let x = self.f.vreg();
                    let y = self.f.vreg();
                    self.f.push(Inst::LoadStack { size: Size::B, dst: x, slot: a, off: offset as i16 });
                    self.f.push(Inst::LoadStack { size: Size::B, dst: y, slot: b, off: offset as i16 });
                    self.f.push(Inst::Branch { op: JmpOp::Ne, lhs: x, rhs: y.into(), target: mismatch });
                    self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: x, rhs: Value::Imm(0), target: equal });
                }
                self.f.push(Inst::Label(equal));
                Ok(())
            }
        }
    }

    /// Jumps to `mismatch` unless the string `value` equals `literal`. A
    /// literal that the value's buffer cannot hold makes the comparison
    /// false at compile time, with a warning.
    fn equal_to_literal(&mut self, value: Val, span: Span, literal: &[u8], literal_span: Span, mismatch: Label) -> Result<()> {
        let (slot, len) = self.string_value(value, span)?;
        // Every string buffer ends with a NUL, so it contains at most
        // `len - 1` characters.
        if literal.len() as u32 >= len {
            let text = self.source.slice(span).to_owned();
            self.diagnostics.push(
                Diagnostic::warning(
                    literal_span,
                    format!(
                        "`{text}` has at most {} characters, so it never equals this {}-character string",
                        len - 1,
                        literal.len()
                    ),
                ),
            );
            self.f.push(Inst::Jump { target: mismatch });
            return Ok(());
        }
        self.compare_with_literal(slot, len, literal, mismatch);
        Ok(())
    }

    /// Compares a stack string with a literal, up to and including the
    /// literal's NUL.
    fn compare_with_literal(&mut self, slot: Slot, len: u32, literal: &[u8], mismatch: Label) {
        let compared = (literal.len() as u32 + 1).min(len);
        let mut expected = literal.to_vec();
        expected.resize(compared as usize, 0);
        for (offset, size) in pieces(compared) {
            let chunk = &expected[offset as usize..(offset + size.bytes()) as usize];
            let mut raw = [0u8; 8];
            raw[..chunk.len()].copy_from_slice(chunk);
            let value = self.f.vreg();
            self.f.push(Inst::LoadStack { size, dst: value, slot, off: offset as i16 });
            let constant = self.f.constant(i64::from_le_bytes(raw));
            self.f.push(Inst::Branch { op: JmpOp::Ne, lhs: value, rhs: constant.into(), target: mismatch });
        }
    }

    /// Copies a stack string into memory at `base + offset` (a ring buffer
    /// record).
    pub(crate) fn store_string(&mut self, base: VReg, offset: u32, slot: Slot, len: u32) {
        for (piece, size) in pieces(len) {
            let value = self.f.vreg();
            self.f.push(Inst::LoadStack { size, dst: value, slot, off: piece as i16 });
            self.f.push(Inst::Store { size, base, off: (offset + piece) as i16, src: value.into() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_exactly() {
        let sizes = |len| pieces(len).map(|(o, s)| (o, s.bytes())).collect::<Vec<_>>();
        assert_eq!(sizes(16), [(0, 8), (8, 8)]);
        assert_eq!(sizes(15), [(0, 8), (8, 4), (12, 2), (14, 1)]);
        assert_eq!(sizes(1), [(0, 1)]);
        assert!(sizes(0).is_empty());
    }
}
