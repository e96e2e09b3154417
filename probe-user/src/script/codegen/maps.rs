//! Maps and aggregations: `@name[keys] = value`, `count()`, `sum()`,
//! `min()`, `max()`, `avg()`, `stats()`, `hist()`, `lhist()`, reads,
//! `++`/`+=`, `delete()`, and the map actions `print()`, `clear()` and
//! `zero()` that user space carries out.
//!
//! Keys and values follow the byte layout documented in
//! [`crate::script::aggregate`]. A map's key and value types are fixed by
//! its first assignment in the script. The compiler runs code generation
//! twice, so a read that comes before the assignment in the text (a
//! kretprobe written above its kprobe) still has the types.

use std::collections::HashMap;

use super::{Codegen, IntTy, Reported, Result, Val, helper};
use crate::script::{
    aggregate::{HIST_BUCKETS, KeyPartType, LhistParams, MapSpec, ValueKind},
    ast::{Expr, ExprKind, MapAccess},
    diagnostic::Diagnostic,
    insn::{AluOp, JmpOp, Size},
    ir::{Inst, Label, MapRef, Slot, VReg, Value},
    span::Span,
};

/// A zero-filled one-entry array whose value initializes new per-CPU
/// entries: `hist()` values are larger than the BPF stack.
pub const ZERO_MAP: MapRef = MapRef(2);
/// Per-CPU array counting, for each script map, the updates dropped
/// because the map was full.
pub const DROPS_MAP: MapRef = MapRef(3);
/// `MapRef` of the first script map.
pub const FIRST_SCRIPT_MAP: u32 = 6;

/// `BPF_NOEXIST`: create the entry only if it does not exist yet.
const BPF_NOEXIST: i32 = 1;
const MAP_UPDATE_ELEM: i32 = 2;
const MAP_DELETE_ELEM: i32 = 3;
/// `-EEXIST`, which `BPF_NOEXIST` returns when another CPU created the
/// entry first.
const EEXIST: i32 = -17;

/// The maps of one script, shared by all its probes.
#[derive(Clone, Debug, Default)]
pub struct MapTable {
    maps: Vec<MapDecl>,
    /// Stack trace maps, one per kind and frame limit: `(user, frames)`.
    stacks: Vec<(bool, u32)>,
    by_name: HashMap<String, usize>,
    /// Whether some probe calls `exit()`, so that every probe checks the
    /// exit flag first.
    pub uses_exit: bool,
    /// Set during the first code generation pass, which only collects
    /// declarations: a read of a map not declared yet then yields 0, so
    /// that the assignments after it are still seen.
    pub discovering: bool,
}

/// One script map: its types and where it was first assigned.
#[derive(Clone, Debug)]
pub struct MapDecl {
    pub spec: MapSpec,
    pub span: Span,
    /// Whether some probe writes the map.
    pub written: bool,
}

impl MapTable {
    /// Returns every map, in order of first assignment.
    pub fn maps(&self) -> &[MapDecl] {
        &self.maps
    }

    fn lookup(&self, name: &str) -> Option<(usize, &MapDecl)> {
        let index = *self.by_name.get(name)?;
        Some((index, &self.maps[index]))
    }

    /// Returns the `MapRef` of map number `index`.
    pub fn map_ref(index: usize) -> MapRef {
        MapRef(FIRST_SCRIPT_MAP + index as u32)
    }

    /// Returns the index of the stack trace map for `user` stacks of up
    /// to `frames` frames, adding it on first use.
    pub fn stack_map(&mut self, user: bool, frames: u32) -> usize {
        if let Some(index) = self.stacks.iter().position(|&kind| kind == (user, frames)) {
            return index;
        }
        self.stacks.push((user, frames));
        self.stacks.len() - 1
    }

    /// Returns the stack trace maps: `(user, frames)` each.
    pub fn stack_maps(&self) -> &[(bool, u32)] {
        &self.stacks
    }

    /// Returns the `MapRef` of stack trace map `index`, which follows the
    /// `script_maps` script maps.
    pub fn stack_map_ref(script_maps: usize, index: usize) -> MapRef {
        MapRef(FIRST_SCRIPT_MAP + (script_maps + index) as u32)
    }

    /// Returns the largest value slot of any map, which sizes the zero map.
    pub fn largest_value(&self) -> usize {
        self.maps
            .iter()
            .map(|m| m.spec.value.slot_size())
            .max()
            .unwrap_or(8)
    }
}

/// Returns the bytes a map key takes: 8 for a map without keys.
pub fn key_size(key: &[KeyPartType]) -> usize {
    if key.is_empty() {
        8
    } else {
        key.iter().map(KeyPartType::size).sum()
    }
}

/// Display name of a map: `@name`, or `@` for the anonymous map.
pub fn display_name(name: &str) -> String {
    format!("@{name}")
}

/// A key part evaluated for a map access.
enum KeyPiece {
    Int(VReg),
    Str(Slot, u32),
    /// Bytes copied as they are.
    Raw(Slot, u32),
}

impl Codegen<'_> {
    /// Evaluates the keys of `@m[k...]` into pieces and their types.
    fn key_pieces(&mut self, access: &MapAccess) -> Result<Vec<(KeyPiece, KeyPartType)>> {
        let mut pieces = Vec::with_capacity(access.keys.len());
        for key in &access.keys {
            let value = self.expr(key)?;
            let piece = match value {
                Val::Int { reg, ty } => (KeyPiece::Int(reg), KeyPartType::Int { bytes: ty.bytes, signed: ty.signed }),
                Val::Ptr { reg, .. } => (KeyPiece::Int(reg), KeyPartType::Int { bytes: 8, signed: false }),
                other @ (Val::Str { .. } | Val::Lit(_) | Val::Mem { .. }) => {
                    let (slot, len) = self.string_value(other, key.span)?;
                    (KeyPiece::Str(slot, len), KeyPartType::Str { len: len as usize })
                }
                Val::Stack { user, frames } => match self.stack_id(user, frames) {
                    Val::Special { slot, special } => (KeyPiece::Raw(slot, special.size() as u32), KeyPartType::Special(special)),
                    _ => unreachable!("stack_id returns a special value"),
                },
                Val::Special { slot, special } => (KeyPiece::Raw(slot, special.size() as u32), KeyPartType::Special(special)),
                other => {
                    let description = self.describe(&other);
                    return Err(self.error(Diagnostic::error(key.span, format!("a map key cannot be {description}"))
                        .with_hint("keys are integers, strings, or several of them: @m[pid, comm]")));
                }
            };
            pieces.push(piece);
        }
        Ok(pieces)
    }

    /// Declares `name` with these types on first use, or checks them
    /// against the declaration. Returns the map's index.
    fn declare(&mut self, access: &MapAccess, key: Vec<KeyPartType>, value: ValueKind, span: Span) -> Result<usize> {
        if let Some((index, decl)) = self.maps.lookup(&access.name) {
            let decl = decl.clone();
            if decl.spec.key.len() != key.len() {
                return Err(self.error(
                    Diagnostic::error(access.span, format!(
                        "{} has {} key{} here but {} where it is first assigned",
                        display_name(&access.name),
                        key.len(),
                        if key.len() == 1 { "" } else { "s" },
                        decl.spec.key.len()
                    ))
                    .with_note_at(decl.span, "first assigned here"),
                ));
            }
            for (part, (declared, used)) in decl.spec.key.iter().zip(&key).enumerate() {
                let compatible = match (declared, used) {
                    (KeyPartType::Int { .. }, KeyPartType::Int { .. }) | (KeyPartType::Str { .. }, KeyPartType::Str { .. }) => true,
                    (KeyPartType::Special(a), KeyPartType::Special(b)) => a == b,
                    _ => false,
                };
                if !compatible {
                    return Err(self.error(
                        Diagnostic::error(access.keys.get(part).map_or(access.span, |k| k.span), format!(
                            "key {} of {} is {} here but {} where it is first assigned",
                            part + 1,
                            display_name(&access.name),
                            part_description(used),
                            part_description(declared)
                        ))
                        .with_note_at(decl.span, "first assigned here"),
                    ));
                }
            }
            if !value_compatible(&decl.spec.value, &value) {
                return Err(self.error(
                    Diagnostic::error(span, format!(
                        "{} holds {} but is assigned {} here",
                        display_name(&access.name),
                        value_description(&decl.spec.value),
                        value_description(&value)
                    ))
                    .with_note_at(decl.span, "first assigned here")
                    .with_hint("use another map name for a different kind of value"),
                ));
            }
            self.maps.maps[index].written = true;
            return Ok(index);
        }
        let index = self.maps.maps.len();
        self.maps.maps.push(MapDecl {
            spec: MapSpec {
                name: access.name.clone(),
                key,
                value,
            },
            span: access.span,
            written: true,
        });
        self.maps.by_name.insert(access.name.clone(), index);
        Ok(index)
    }

    /// Writes the key of `map` into a new zeroed stack slot and returns the
    /// slot.
    fn build_key(&mut self, map: usize, pieces: Vec<(KeyPiece, KeyPartType)>) -> Slot {
        let declared = self.maps.maps[map].spec.key.clone();
        let size = key_size(&declared) as u32;
        let slot = self.f.slot(size);
        for offset in (0..size).step_by(8) {
            self.f.push(Inst::StoreStack { size: Size::DW, slot, off: offset as i16, src: Value::Imm(0) });
        }
        let mut offset = 0u32;
        for ((piece, _), part) in pieces.into_iter().zip(&declared) {
            match (piece, part) {
                (KeyPiece::Int(reg), _) => {
                    self.f.push(Inst::StoreStack { size: Size::DW, slot, off: offset as i16, src: reg.into() });
                }
                (KeyPiece::Str(source, len), KeyPartType::Str { len: declared_len }) => {
                    let target_len = *declared_len as u32;
                    let copied = len.min(target_len);
                    for (piece_offset, piece_size) in super::strings::pieces(copied) {
                        let value = self.f.vreg();
                        self.f.push(Inst::LoadStack { size: piece_size, dst: value, slot: source, off: piece_offset as i16 });
                        self.f.push(Inst::StoreStack { size: piece_size, slot, off: (offset + piece_offset) as i16, src: value.into() });
                    }
                    if len > target_len {
                        // Keep the key's string NUL-terminated.
                        self.f.push(Inst::StoreStack { size: Size::B, slot, off: (offset + target_len - 1) as i16, src: Value::Imm(0) });
                    }
                }
                (KeyPiece::Raw(source, len), _) => {
                    for (piece_offset, piece_size) in super::strings::pieces(len.min(part.size() as u32)) {
                        let value = self.f.vreg();
                        self.f.push(Inst::LoadStack { size: piece_size, dst: value, slot: source, off: piece_offset as i16 });
                        self.f.push(Inst::StoreStack { size: piece_size, slot, off: (offset + piece_offset) as i16, src: value.into() });
                    }
                }
                (KeyPiece::Str(..), _) => {}
            }
            offset += part.size() as u32;
        }
        slot
    }

    fn stack_address(&mut self, slot: Slot) -> VReg {
        let address = self.f.vreg();
        self.f.push(Inst::StackAddr { dst: address, slot, off: 0 });
        address
    }

    fn map_pointer(&mut self, map: MapRef) -> VReg {
        let reg = self.f.vreg();
        self.f.push(Inst::LoadMap { dst: reg, map });
        reg
    }

    /// Counts one dropped update of map `index` (the map was full).
    fn count_drop(&mut self, index: usize) {
        let key = self.f.slot(4);
        self.f.push(Inst::StoreStack { size: Size::W, slot: key, off: 0, src: Value::Imm(index as i32) });
        let key_address = self.stack_address(key);
        let drops = self.map_pointer(DROPS_MAP);
        let counter = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![drops.into(), key_address.into()], ret: Some(counter) });
        let done = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: counter, rhs: Value::Imm(0), target: done });
        let one = self.f.constant(1);
        self.f.push(Inst::AtomicAdd { size: Size::DW, base: counter, off: 0, src: one });
        self.f.push(Inst::Label(done));
    }

    /// Returns a pointer to the value of `key` in map `index`, creating a
    /// zeroed entry when there is none. Jumps to `skip` when the map is
    /// full.
    fn entry_pointer(&mut self, index: usize, key: Slot, skip: Label) -> VReg {
        let map = MapTable::map_ref(index);
        let have = self.f.label();
        let pointer = self.f.vreg();

        let map_reg = self.map_pointer(map);
        let key_address = self.stack_address(key);
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![map_reg.into(), key_address.into()], ret: Some(pointer) });
        self.f.push(Inst::Branch { op: JmpOp::Ne, lhs: pointer, rhs: Value::Imm(0), target: have });

        let zero_key = self.f.slot(4);
        self.f.push(Inst::StoreStack { size: Size::W, slot: zero_key, off: 0, src: Value::Imm(0) });
        let zero_key_address = self.stack_address(zero_key);
        let zero_map = self.map_pointer(ZERO_MAP);
        let zero_value = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![zero_map.into(), zero_key_address.into()], ret: Some(zero_value) });
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: zero_value, rhs: Value::Imm(0), target: skip });
        let map_reg = self.map_pointer(map);
        let key_address = self.stack_address(key);
        let status = self.f.vreg();
        self.f.push(Inst::Call {
            helper: MAP_UPDATE_ELEM,
            args: vec![map_reg.into(), key_address.into(), zero_value.into(), Value::Imm(BPF_NOEXIST)],
            ret: Some(status),
        });
        let created = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: status, rhs: Value::Imm(0), target: created });
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: status, rhs: Value::Imm(EEXIST), target: created });
        self.count_drop(index);
        self.f.push(Inst::Jump { target: skip });
        self.f.push(Inst::Label(created));
        let map_reg = self.map_pointer(map);
        let key_address = self.stack_address(key);
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![map_reg.into(), key_address.into()], ret: Some(pointer) });
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: pointer, rhs: Value::Imm(0), target: skip });
        self.f.push(Inst::Label(have));
        pointer
    }

    /// `@m[k] = value`.
    pub(crate) fn assign_map(&mut self, access: &MapAccess, value: &Expr, span: Span) -> Result<()> {
        if let ExprKind::Call { name, args } = &value.kind {
            if let Some(kind) = aggregation_kind(&name.text) {
                return self.aggregate(access, kind, args, value.span);
            }
        }
        let pieces = self.key_pieces(access)?;
        let key_types: Vec<KeyPartType> = pieces.iter().map(|(_, t)| *t).collect();
        let value_span = value.span;
        let value = self.expr(value)?;
        match value {
            Val::Int { reg, ty } => {
                let index = self.declare(access, key_types, ValueKind::Int { bytes: ty.bytes, signed: ty.signed }, span)?;
                let key = self.build_key(index, pieces);
                let slot = self.f.slot(8);
                self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: reg.into() });
                self.update(index, key, slot);
                Ok(())
            }
            Val::Ptr { reg, .. } => {
                let index = self.declare(access, key_types, ValueKind::Int { bytes: 8, signed: false }, span)?;
                let key = self.build_key(index, pieces);
                let slot = self.f.slot(8);
                self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: reg.into() });
                self.update(index, key, slot);
                Ok(())
            }
            other @ (Val::Str { .. } | Val::Lit(_) | Val::Mem { .. }) => {
                let (source, len) = self.string_value(other, value_span)?;
                let declared_len = match self.maps.lookup(&access.name).map(|(_, d)| d.spec.value) {
                    Some(ValueKind::Str { len }) => len as u32,
                    _ => len,
                };
                let index = self.declare(access, key_types, ValueKind::Str { len: declared_len as usize }, span)?;
                let key = self.build_key(index, pieces);
                let size = declared_len.next_multiple_of(8);
                let slot = self.f.slot(size);
                for offset in (0..size).step_by(8) {
                    self.f.push(Inst::StoreStack { size: Size::DW, slot, off: offset as i16, src: Value::Imm(0) });
                }
                self.copy_string(source, len, slot, declared_len);
                self.update(index, key, slot);
                Ok(())
            }
            other => {
                let description = self.describe(&other);
                Err(self.error(Diagnostic::error(value_span, format!("a map value cannot be {description}"))))
            }
        }
    }

    /// `bpf_map_update_elem(map, key, value, BPF_ANY)`, counting a drop
    /// when the map is full.
    fn update(&mut self, index: usize, key: Slot, value: Slot) {
        let map = self.map_pointer(MapTable::map_ref(index));
        let key_address = self.stack_address(key);
        let value_address = self.stack_address(value);
        let status = self.f.vreg();
        self.f.push(Inst::Call {
            helper: MAP_UPDATE_ELEM,
            args: vec![map.into(), key_address.into(), value_address.into(), Value::Imm(0)],
            ret: Some(status),
        });
        let done = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: status, rhs: Value::Imm(0), target: done });
        self.count_drop(index);
        self.f.push(Inst::Label(done));
    }

    /// `@m[k] = count()`, `sum(x)`, and the other aggregations.
    fn aggregate(&mut self, access: &MapAccess, function: &str, args: &[Expr], span: Span) -> Result<()> {
        let expected_args = match function {
            "count" => 0,
            "lhist" => 4,
            _ => 1,
        };
        if args.len() != expected_args {
            return Err(self.error(Diagnostic::error(span, format!(
                "{function}() takes {expected_args} argument{}, got {}",
                if expected_args == 1 { "" } else { "s" },
                args.len()
            ))
            .with_hint(aggregation_usage(function))));
        }
        let lhist = if function == "lhist" {
            let mut constants = [0i64; 3];
            for (slot, arg) in constants.iter_mut().zip(&args[1..]) {
                *slot = self.constant_argument(arg, function)?;
            }
            let [min, max, step] = constants;
            match LhistParams::new(min, max, step) {
                Ok(params) => Some(params),
                Err(err) => return Err(self.error(Diagnostic::error(span, err.to_string()))),
            }
        } else {
            None
        };
        let pieces = self.key_pieces(access)?;
        let key_types: Vec<KeyPartType> = pieces.iter().map(|(_, t)| *t).collect();
        let operand = match args.first() {
            Some(arg) => Some(self.int_expr(arg)?),
            None => None,
        };
        let signed = operand.is_none_or(|(_, ty)| ty.signed);
        let kind = match function {
            "count" => ValueKind::Count,
            "sum" => ValueKind::Sum { signed },
            "min" => ValueKind::Min { signed },
            "max" => ValueKind::Max { signed },
            "avg" => ValueKind::Avg,
            "stats" => ValueKind::Stats,
            "hist" => ValueKind::Hist,
            _ => ValueKind::Lhist(lhist.expect("lhist parameters were checked")),
        };
        let index = self.declare(access, key_types, kind, span)?;
        let kind = self.maps.maps[index].spec.value;
        let key = self.build_key(index, pieces);
        let skip = self.f.label();
        let pointer = self.entry_pointer(index, key, skip);
        let value = operand.map(|(reg, _)| reg);
        match kind {
            ValueKind::Count => self.add_at(pointer, 0, None),
            ValueKind::Sum { .. } => self.add_at(pointer, 0, value),
            ValueKind::Avg | ValueKind::Stats => {
                self.add_at(pointer, 0, None);
                self.add_at(pointer, 8, value);
            }
            ValueKind::Min { signed } | ValueKind::Max { signed } => {
                let is_min = matches!(kind, ValueKind::Min { .. });
                let value = value.expect("min and max take a value");
                let store = self.f.label();
                let flag = self.f.vreg();
                self.f.push(Inst::Load { size: Size::DW, dst: flag, base: pointer, off: 8 });
                self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: flag, rhs: Value::Imm(0), target: store });
                let current = self.f.vreg();
                self.f.push(Inst::Load { size: Size::DW, dst: current, base: pointer, off: 0 });
                // Keep the current value unless the new one beats it.
                let keep = match (is_min, signed) {
                    (true, true) => JmpOp::Sge,
                    (true, false) => JmpOp::Ge,
                    (false, true) => JmpOp::Sle,
                    (false, false) => JmpOp::Le,
                };
                self.f.push(Inst::Branch { op: keep, lhs: value, rhs: current.into(), target: skip });
                self.f.push(Inst::Label(store));
                self.f.push(Inst::Store { size: Size::DW, base: pointer, off: 0, src: value.into() });
                self.f.push(Inst::Store { size: Size::DW, base: pointer, off: 8, src: Value::Imm(1) });
            }
            ValueKind::Hist => {
                let value = value.expect("hist takes a value");
                let bucket = self.hist_bucket(value);
                self.increment_bucket(pointer, bucket, HIST_BUCKETS as i32 - 1);
            }
            ValueKind::Lhist(params) => {
                let value = value.expect("lhist takes a value");
                let bucket = self.lhist_bucket(value, params);
                self.increment_bucket(pointer, bucket, params.rows() as i32 - 1);
            }
            ValueKind::Int { .. } | ValueKind::Str { .. } => unreachable!("not an aggregation"),
        }
        self.f.push(Inst::Label(skip));
        Ok(())
    }

    /// Reads an integer literal argument (or a negated one).
    fn constant_argument(&mut self, arg: &Expr, function: &str) -> Result<i64> {
        match &arg.kind {
            ExprKind::Integer(literal) => i64::try_from(literal.value)
                .map_err(|_| self.error(Diagnostic::error(arg.span, "the value is too large"))),
            ExprKind::Unary { op: crate::script::ast::UnaryOp::Negate, operand } => match &operand.kind {
                ExprKind::Integer(literal) => i64::try_from(literal.value)
                    .map(|v| -v)
                    .map_err(|_| self.error(Diagnostic::error(arg.span, "the value is too large"))),
                _ => Err(self.error(Diagnostic::error(arg.span, format!("{function}() needs integer literals here")))),
            },
            _ => Err(self.error(Diagnostic::error(arg.span, format!("{function}() needs integer literals here"))
                .with_hint(aggregation_usage(function)))),
        }
    }

    /// `*(u64 *)(pointer + offset) += value` (1 when `value` is `None`),
    /// atomically: a per-CPU slot can still be updated by a nested program
    /// on the same CPU.
    fn add_at(&mut self, pointer: VReg, offset: i16, value: Option<VReg>) {
        let addend = match value {
            Some(reg) => reg,
            None => self.f.constant(1),
        };
        self.f.push(Inst::AtomicAdd { size: Size::DW, base: pointer, off: offset, src: addend });
    }

    /// Adds one to counter `bucket` of the value at `pointer`. The bucket
    /// is clamped to `last` because the verifier accepts only a bounded
    /// offset into a map value.
    fn increment_bucket(&mut self, pointer: VReg, bucket: VReg, last: i32) {
        let in_range = self.f.label();
        self.f.push(Inst::Branch { op: JmpOp::Le, lhs: bucket, rhs: Value::Imm(last), target: in_range });
        self.f.push(Inst::Mov { dst: bucket, src: Value::Imm(last) });
        self.f.push(Inst::Label(in_range));
        self.f.push(Inst::Alu { op: AluOp::Lsh, dst: bucket, src: Value::Imm(3), wide: true });
        let address = self.f.vreg();
        self.f.push(Inst::Mov { dst: address, src: pointer.into() });
        self.f.push(Inst::Alu { op: AluOp::Add, dst: address, src: bucket.into(), wide: true });
        self.add_at(address, 0, None);
    }

    /// Computes the `hist()` bucket of `value`: 0 below zero, 1 for zero,
    /// and `2 + floor(log2(value))` above, found by a binary search over
    /// the bit width without loops.
    fn hist_bucket(&mut self, value: VReg) -> VReg {
        let bucket = self.f.vreg();
        let done = self.f.label();
        self.f.push(Inst::Mov { dst: bucket, src: Value::Imm(0) });
        self.f.push(Inst::Branch { op: JmpOp::Slt, lhs: value, rhs: Value::Imm(0), target: done });
        self.f.push(Inst::Mov { dst: bucket, src: Value::Imm(1) });
        self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: value, rhs: Value::Imm(0), target: done });
        let rest = self.f.vreg();
        self.f.push(Inst::Mov { dst: rest, src: value.into() });
        self.f.push(Inst::Mov { dst: bucket, src: Value::Imm(2) });
        for shift in [32, 16, 8, 4, 2, 1] {
            let smaller = self.f.label();
            let limit = self.f.constant(1i64 << shift);
            self.f.push(Inst::Branch { op: JmpOp::Lt, lhs: rest, rhs: limit.into(), target: smaller });
            self.f.push(Inst::Alu { op: AluOp::Add, dst: bucket, src: Value::Imm(shift), wide: true });
            self.f.push(Inst::Alu { op: AluOp::Rsh, dst: rest, src: Value::Imm(shift), wide: true });
            self.f.push(Inst::Label(smaller));
        }
        self.f.push(Inst::Label(done));
        bucket
    }

    /// Computes the `lhist()` row of `value`: 0 below `min`, then one row
    /// per `step`, with everything at or above the last row's end in the
    /// overflow row.
    fn lhist_bucket(&mut self, value: VReg, params: LhistParams) -> VReg {
        let bucket = self.f.vreg();
        let done = self.f.label();
        let overflow = params.rows() as i64 - 1;
        self.f.push(Inst::Mov { dst: bucket, src: Value::Imm(0) });
        let min = self.f.constant(params.min());
        self.f.push(Inst::Branch { op: JmpOp::Slt, lhs: value, rhs: min.into(), target: done });
        self.f.push(Inst::Mov { dst: bucket, src: value.into() });
        self.f.push(Inst::Alu { op: AluOp::Sub, dst: bucket, src: min.into(), wide: true });
        let step = self.f.constant(params.step());
        self.f.push(Inst::Alu { op: AluOp::Div, dst: bucket, src: step.into(), wide: true });
        self.f.push(Inst::Alu { op: AluOp::Add, dst: bucket, src: Value::Imm(1), wide: true });
        let limit = self.f.constant(overflow);
        self.f.push(Inst::Branch { op: JmpOp::Le, lhs: bucket, rhs: limit.into(), target: done });
        self.f.push(Inst::Mov { dst: bucket, src: limit.into() });
        self.f.push(Inst::Label(done));
        bucket
    }

    /// Reads `@m[k]`: the value, or 0 (an empty string) for a missing key.
    pub(crate) fn read_map(&mut self, access: &MapAccess) -> Result<Val> {
        let Some((index, decl)) = self.maps.lookup(&access.name) else {
            if self.maps.discovering {
                let reg = self.f.constant(0);
                return Ok(Val::Int { reg, ty: IntTy::I64 });
            }
            return Err(self.error(Diagnostic::error(access.span, format!(
                "{} is read but never assigned",
                display_name(&access.name)
            ))
            .with_hint(format!("assign it somewhere in the script, for example `{}[...] = ...`", display_name(&access.name)))));
        };
        let decl = decl.clone();
        let pieces = self.key_pieces(access)?;
        if pieces.len() != decl.spec.key.len() {
            return Err(self.error(Diagnostic::error(access.span, format!(
                "{} has {} key{}, but {} given here",
                display_name(&access.name),
                decl.spec.key.len(),
                if decl.spec.key.len() == 1 { "" } else { "s" },
                pieces.len()
            ))
            .with_note_at(decl.span, "first assigned here")));
        }
        let key = self.build_key(index, pieces);
        let map = self.map_pointer(MapTable::map_ref(index));
        let key_address = self.stack_address(key);
        let pointer = self.f.vreg();
        self.f.push(Inst::Call { helper: helper::MAP_LOOKUP_ELEM, args: vec![map.into(), key_address.into()], ret: Some(pointer) });
        let missing = self.f.label();
        let done = self.f.label();
        match decl.spec.value {
            ValueKind::Int { bytes, signed } => {
                let result = self.f.vreg();
                self.f.push(Inst::Mov { dst: result, src: Value::Imm(0) });
                self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: pointer, rhs: Value::Imm(0), target: done });
                self.f.push(Inst::Load { size: Size::DW, dst: result, base: pointer, off: 0 });
                self.f.push(Inst::Label(done));
                self.f.push(Inst::Label(missing));
                Ok(Val::Int { reg: result, ty: IntTy { bytes, signed } })
            }
            ValueKind::Str { len } => {
                let len = len as u32;
                let slot = self.f.slot(len);
                for (offset, size) in super::strings::pieces(len) {
                    self.f.push(Inst::StoreStack { size, slot, off: offset as i16, src: Value::Imm(0) });
                }
                self.f.push(Inst::Branch { op: JmpOp::Eq, lhs: pointer, rhs: Value::Imm(0), target: missing });
                for (offset, size) in super::strings::pieces(len) {
                    let byte = self.f.vreg();
                    self.f.push(Inst::Load { size, dst: byte, base: pointer, off: offset as i16 });
                    self.f.push(Inst::StoreStack { size, slot, off: offset as i16, src: byte.into() });
                }
                self.f.push(Inst::Label(missing));
                self.f.push(Inst::Label(done));
                Ok(Val::Str { slot, len })
            }
            _ => Err(self.error(Diagnostic::error(access.span, format!(
                "{} is an aggregation ({}), which can be printed but not read in a probe",
                display_name(&access.name),
                value_description(&decl.spec.value)
            ))
            .with_hint("keep a plain copy in another map if a probe needs the value: @copy[k] = ..."))),
        }
    }

    /// `@m[k]++`, `@m[k] += n` and the other compound assignments on an
    /// integer map. Returns the value before (`postfix`) or after.
    pub(crate) fn update_map_integer(&mut self, access: &MapAccess, op: crate::script::ast::BinaryOp, operand: Value, operand_ty: IntTy, span: Span, postfix: bool) -> Result<Val> {
        let current = match self.maps.lookup(&access.name) {
            Some(_) => self.read_map(access)?,
            None => {
                let pieces = self.key_pieces(access)?;
                let key_types = pieces.iter().map(|(_, t)| *t).collect();
                self.declare(access, key_types, ValueKind::Int { bytes: 8, signed: operand_ty.signed }, span)?;
                let reg = self.f.constant(0);
                Val::Int { reg, ty: IntTy { bytes: 8, signed: operand_ty.signed } }
            }
        };
        let Val::Int { reg: before, ty } = current else {
            return Err(self.error(Diagnostic::error(span, format!("{} must hold an integer for this operator", display_name(&access.name)))));
        };
        let after = self.f.vreg();
        self.f.push(Inst::Mov { dst: after, src: before.into() });
        let alu = match op {
            crate::script::ast::BinaryOp::Add => AluOp::Add,
            crate::script::ast::BinaryOp::Sub => AluOp::Sub,
            crate::script::ast::BinaryOp::Mul => AluOp::Mul,
            crate::script::ast::BinaryOp::BitAnd => AluOp::And,
            crate::script::ast::BinaryOp::BitOr => AluOp::Or,
            crate::script::ast::BinaryOp::BitXor => AluOp::Xor,
            crate::script::ast::BinaryOp::Shl => AluOp::Lsh,
            crate::script::ast::BinaryOp::Shr => if ty.signed { AluOp::Arsh } else { AluOp::Rsh },
            other => {
                return Err(self.error(Diagnostic::error(span, format!("`{}=` is not supported on maps yet", other.symbol()))));
            }
        };
        self.f.push(Inst::Alu { op: alu, dst: after, src: operand, wide: true });
        self.extend(after, ty);
        let pieces = self.key_pieces(access)?;
        let index = self.maps.lookup(&access.name).map(|(i, _)| i).ok_or(Reported)?;
        self.maps.maps[index].written = true;
        let key = self.build_key(index, pieces);
        let slot = self.f.slot(8);
        self.f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: after.into() });
        self.update(index, key, slot);
        let result = if postfix { before } else { after };
        Ok(Val::Int { reg: result, ty })
    }

    /// `delete(@m[k])`.
    pub(crate) fn delete(&mut self, args: &[Expr], span: Span) -> Result<Val> {
        let [target] = args else {
            return Err(self.error(Diagnostic::error(span, "delete() takes one map element: delete(@m[key])")));
        };
        let ExprKind::Map(access) = &target.kind else {
            return Err(self.error(Diagnostic::error(target.span, "delete() takes a map element such as @m[key]")));
        };
        let Some((index, decl)) = self.maps.lookup(&access.name) else {
            return Err(self.error(Diagnostic::error(access.span, format!("{} is deleted from but never assigned", display_name(&access.name)))));
        };
        let declared_keys = decl.spec.key.len();
        let pieces = self.key_pieces(access)?;
        if pieces.len() != declared_keys {
            return Err(self.error(Diagnostic::error(access.span, format!(
                "{} has {declared_keys} key{}, but {} given here",
                display_name(&access.name),
                if declared_keys == 1 { "" } else { "s" },
                pieces.len()
            ))));
        }
        let key = self.build_key(index, pieces);
        let map = self.map_pointer(MapTable::map_ref(index));
        let key_address = self.stack_address(key);
        self.f.push(Inst::Call { helper: MAP_DELETE_ELEM, args: vec![map.into(), key_address.into()], ret: None });
        Ok(Val::Void)
    }

    /// Resolves the map argument of `print(@m)`, `clear(@m)` and
    /// `zero(@m)` to its index.
    pub(crate) fn map_argument(&mut self, arg: &Expr, function: &str) -> Result<usize> {
        let ExprKind::Map(access) = &arg.kind else {
            return Err(self.error(Diagnostic::error(arg.span, format!("{function}() takes a map such as @name"))));
        };
        if !access.keys.is_empty() {
            return Err(self.error(Diagnostic::error(access.span, format!("{function}() takes a whole map, without keys"))
                .with_hint(format!("{function}({})", display_name(&access.name)))));
        }
        match self.maps.lookup(&access.name) {
            Some((index, _)) => Ok(index),
            None => Err(self.error(Diagnostic::error(access.span, format!("{} is never assigned", display_name(&access.name))))),
        }
    }
}

/// The aggregation a function call stands for, if any.
pub(crate) fn aggregation_kind(function: &str) -> Option<&'static str> {
    ["count", "sum", "min", "max", "avg", "stats", "hist", "lhist"]
        .into_iter()
        .find(|&f| f == function)
}

fn aggregation_usage(function: &str) -> String {
    match function {
        "count" => "@m[key] = count()".into(),
        "lhist" => "@m[key] = lhist(value, min, max, step), with integer literals for min, max and step".into(),
        other => format!("@m[key] = {other}(value)"),
    }
}

fn part_description(part: &KeyPartType) -> &'static str {
    match part {
        KeyPartType::Int { .. } => "an integer",
        KeyPartType::Str { .. } => "a string",
        KeyPartType::Special(special) => super::special_description(special),
    }
}

fn value_description(value: &ValueKind) -> String {
    match value {
        ValueKind::Int { .. } => "an integer".into(),
        ValueKind::Str { .. } => "a string".into(),
        ValueKind::Count => "count()".into(),
        ValueKind::Sum { .. } => "sum()".into(),
        ValueKind::Min { .. } => "min()".into(),
        ValueKind::Max { .. } => "max()".into(),
        ValueKind::Avg => "avg()".into(),
        ValueKind::Stats => "stats()".into(),
        ValueKind::Hist => "hist()".into(),
        ValueKind::Lhist(_) => "lhist()".into(),
    }
}

/// Tells whether a later assignment may store `new` into a map declared
/// with `declared`.
fn value_compatible(declared: &ValueKind, new: &ValueKind) -> bool {
    match (declared, new) {
        (ValueKind::Int { .. }, ValueKind::Int { .. }) => true,
        (ValueKind::Str { .. }, ValueKind::Str { .. }) => true,
        (ValueKind::Sum { .. }, ValueKind::Sum { .. }) => true,
        (ValueKind::Min { .. }, ValueKind::Min { .. }) => true,
        (ValueKind::Max { .. }, ValueKind::Max { .. }) => true,
        (a, b) => a == b,
    }
}
