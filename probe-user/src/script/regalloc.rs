//! Register allocation and lowering: IR in, BPF instructions out.
//!
//! 1. Liveness: backward data flow over the basic blocks gives, for every
//!    instruction, the virtual registers live after it.
//! 2. Linear scan over live intervals. Helper calls clobber `r1`-`r5`, so a
//!    register live across a call goes to `r6`-`r9` or to the stack. When
//!    the registers run out, the interval that ends last is spilled to its
//!    own 8-byte stack slot for its whole life.
//! 3. Lowering: each IR instruction becomes one or a few BPF instructions.
//!    `r0` is always a scratch register (helpers return in it and `exit`
//!    reads it); when anything is spilled, `r9` becomes a second scratch.
//!    Labels and map loads are resolved last, into jump offsets and
//!    relocation records.

use std::collections::HashMap;

use thiserror::Error;

use super::{
    insn::{AluOp, Insn, Reg, Size},
    ir::{Function, Inst, Label, MapRef, VReg, Value},
};

/// The BPF stack limit per program, in bytes.
pub const STACK_LIMIT: u32 = 512;

/// Errors from allocation and lowering.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllocError {
    #[error(
        "the program needs {needed} bytes of BPF stack, over the kernel's limit of {STACK_LIMIT}; \
         split the work across fewer values per statement or use shorter strings"
    )]
    StackTooLarge { needed: u32 },
    #[error("internal compiler error: jump to undefined label L{0}")]
    MissingLabel(u32),
    #[error("the program is too large: a jump spans {0} instructions, more than a BPF jump can reach")]
    JumpTooFar(i64),
    #[error("internal compiler error: virtual register {0} is read before it is written")]
    Uninitialized(u32),
}

/// A lowered program, ready for the object writer.
#[derive(Clone, Debug, Default)]
pub struct Lowered {
    pub insns: Vec<Insn>,
    /// Script line of each instruction (0 when none); the second half of a
    /// 64-bit load repeats the first's line.
    pub lines: Vec<u32>,
    /// Instructions that load a map: index of the first half of the
    /// `ld_imm64`, and the map.
    pub map_loads: Vec<(usize, MapRef)>,
    /// Bytes of stack used, for listings.
    pub stack_size: u32,
}

/// Where a virtual register lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Location {
    Reg(Reg),
    /// Frame-pointer-relative offset of an 8-byte spill slot.
    Spill(i16),
}

const SCRATCH: Reg = Reg::R0;
const SECOND_SCRATCH: Reg = Reg::R9;
const CALLER_SAVED: [Reg; 5] = [Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5];

/// Allocates registers and lowers `function` to BPF instructions.
pub fn lower(function: &Function) -> Result<Lowered, AllocError> {
    let liveness = Liveness::compute(function)?;

    // First try with r6-r9 all available; spilling needs r9 as a second
    // scratch register, so allocate again without it if anything spilled.
    let mut callee_saved = vec![Reg::R6, Reg::R7, Reg::R8, Reg::R9];
    let mut assignment = linear_scan(&liveness, &callee_saved);
    if assignment.spilled > 0 {
        callee_saved.pop();
        assignment = linear_scan(&liveness, &callee_saved);
    }

    // Frame layout: stack objects first, then spill slots.
    let mut frame: u32 = 0;
    let mut slot_offsets = Vec::with_capacity(function.slots.len());
    for slot in &function.slots {
        frame += slot.size.div_ceil(slot.align) * slot.align;
        slot_offsets.push(-(frame as i32));
    }
    let spill_base = frame;
    frame += 8 * assignment.spilled;
    if frame > STACK_LIMIT {
        return Err(AllocError::StackTooLarge { needed: frame });
    }
    let locations: Vec<Option<Location>> = assignment
        .locations
        .iter()
        .map(|location| {
            location.map(|l| match l {
                Assigned::Reg(reg) => Location::Reg(reg),
                Assigned::Spill(index) => Location::Spill(-((spill_base + 8 * (index + 1)) as i32) as i16),
            })
        })
        .collect();

    let mut emitter = Emitter {
        locations,
        slot_offsets,
        out: Lowered {
            stack_size: frame,
            ..Lowered::default()
        },
        labels: HashMap::new(),
        fixups: Vec::new(),
        line: 0,
    };
    for (inst, line) in function.insts.iter().zip(&function.lines) {
        emitter.line = *line;
        emitter.lower(inst);
    }
    emitter.resolve_jumps()?;
    Ok(emitter.out)
}

/// Live ranges of every virtual register.
struct Liveness {
    /// `(first, last)` instruction positions where the register is defined,
    /// used or live; `None` for registers that never appear.
    intervals: Vec<Option<(usize, usize)>>,
    /// Whether the register is live across some helper call.
    crosses_call: Vec<bool>,
}

/// A fixed-size bit set over virtual registers.
#[derive(Clone, PartialEq, Eq)]
struct RegSet(Vec<u64>);

impl RegSet {
    fn new(count: u32) -> Self {
        RegSet(vec![0; (count as usize).div_ceil(64)])
    }
    fn insert(&mut self, reg: VReg) {
        self.0[reg.0 as usize / 64] |= 1 << (reg.0 % 64);
    }
    fn remove(&mut self, reg: VReg) {
        self.0[reg.0 as usize / 64] &= !(1 << (reg.0 % 64));
    }
    fn union_with(&mut self, other: &RegSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn iter(&self) -> impl Iterator<Item = VReg> + '_ {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, word)| **word != 0)
            .flat_map(|(word_index, &word)| {
                let mut bits = word;
                std::iter::from_fn(move || {
                    if bits == 0 {
                        return None;
                    }
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    Some(VReg(word_index as u32 * 64 + bit))
                })
            })
    }
    fn first(&self) -> Option<VReg> {
        self.iter().next()
    }
}

impl Liveness {
    fn compute(function: &Function) -> Result<Self, AllocError> {
        let insts = &function.insts;
        let count = function.vreg_count();

        // Basic blocks: a label starts one, a jump or exit ends one.
        let mut starts = vec![0usize];
        for (i, inst) in insts.iter().enumerate() {
            match inst {
                Inst::Label(_) if i > 0 => starts.push(i),
                Inst::Jump { .. } | Inst::Branch { .. } | Inst::Exit { .. } => starts.push(i + 1),
                _ => {}
            }
        }
        starts.sort_unstable();
        starts.dedup();
        starts.retain(|&s| s < insts.len());
        let block_of_label: HashMap<u32, usize> = starts
            .iter()
            .enumerate()
            .filter_map(|(b, &s)| match insts[s] {
                Inst::Label(label) => Some((label.0, b)),
                _ => None,
            })
            .collect();
        let ends: Vec<usize> = starts
            .iter()
            .skip(1)
            .copied()
            .chain(std::iter::once(insts.len()))
            .collect();

        let successors: Vec<Vec<usize>> = (0..starts.len())
            .map(|b| {
                let last = &insts[ends[b] - 1];
                let fallthrough = (b + 1 < starts.len()).then_some(b + 1);
                let target = |label: &Label| block_of_label.get(&label.0).copied();
                match last {
                    Inst::Jump { target: label } => target(label).into_iter().collect(),
                    Inst::Branch { target: label, .. } => {
                        target(label).into_iter().chain(fallthrough).collect()
                    }
                    Inst::Exit { .. } => Vec::new(),
                    _ => fallthrough.into_iter().collect(),
                }
            })
            .collect();

        // Per-block upward-exposed uses and definitions.
        let mut gen_sets = vec![RegSet::new(count); starts.len()];
        let mut kill_sets = vec![RegSet::new(count); starts.len()];
        for b in 0..starts.len() {
            for inst in insts[starts[b]..ends[b]].iter().rev() {
                if let Some(def) = inst.def() {
                    gen_sets[b].remove(def);
                    kill_sets[b].insert(def);
                }
                for used in inst.uses() {
                    gen_sets[b].insert(used);
                }
            }
        }

        let mut live_in = vec![RegSet::new(count); starts.len()];
        let mut live_out = vec![RegSet::new(count); starts.len()];
        let mut changed = true;
        while changed {
            changed = false;
            for b in (0..starts.len()).rev() {
                let mut out = RegSet::new(count);
                for &s in &successors[b] {
                    out.union_with(&live_in[s]);
                }
                let mut input = out.clone();
                for (word, kill) in input.0.iter_mut().zip(&kill_sets[b].0) {
                    *word &= !kill;
                }
                input.union_with(&gen_sets[b]);
                if input != live_in[b] || out != live_out[b] {
                    live_in[b] = input;
                    live_out[b] = out;
                    changed = true;
                }
            }
        }
        if let Some(first) = live_in.first().and_then(RegSet::first) {
            return Err(AllocError::Uninitialized(first.0));
        }

        let mut intervals: Vec<Option<(usize, usize)>> = vec![None; count as usize];
        let mut crosses_call = vec![false; count as usize];
        let mut extend = |reg: VReg, position: usize| {
            let interval = &mut intervals[reg.0 as usize];
            *interval = Some(match *interval {
                Some((start, end)) => (start.min(position), end.max(position)),
                None => (position, position),
            });
        };
        for b in 0..starts.len() {
            let mut live = live_out[b].clone();
            for position in (starts[b]..ends[b]).rev() {
                let inst = &insts[position];
                let def = inst.def();
                for reg in live.iter() {
                    extend(reg, position);
                    if matches!(inst, Inst::Call { .. }) && Some(reg) != def {
                        crosses_call[reg.0 as usize] = true;
                    }
                }
                if let Some(def) = def {
                    extend(def, position);
                    live.remove(def);
                }
                for used in inst.uses() {
                    extend(used, position);
                    live.insert(used);
                }
            }
        }
        Ok(Liveness {
            intervals,
            crosses_call,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Assigned {
    Reg(Reg),
    /// Index of the spill slot.
    Spill(u32),
}

struct Assignment {
    locations: Vec<Option<Assigned>>,
    spilled: u32,
}

fn linear_scan(liveness: &Liveness, callee_saved: &[Reg]) -> Assignment {
    let mut order: Vec<(usize, usize, VReg)> = liveness
        .intervals
        .iter()
        .enumerate()
        .filter_map(|(i, interval)| interval.map(|(start, end)| (start, end, VReg(i as u32))))
        .collect();
    order.sort_unstable();

    let mut locations: Vec<Option<Assigned>> = vec![None; liveness.intervals.len()];
    let mut spilled = 0;
    // (end, register holder, machine register)
    let mut active: Vec<(usize, VReg, Reg)> = Vec::new();

    for (start, end, reg) in order {
        active.retain(|&(active_end, _, _)| active_end >= start);
        let in_use = |r: Reg, active: &[(usize, VReg, Reg)]| active.iter().any(|&(_, _, a)| a == r);
        let must_survive_calls = liveness.crosses_call[reg.0 as usize];
        let preferred: Vec<Reg> = if must_survive_calls {
            callee_saved.to_vec()
        } else {
            CALLER_SAVED.iter().chain(callee_saved).copied().collect()
        };

        if let Some(&free) = preferred.iter().find(|&&r| !in_use(r, &active)) {
            locations[reg.0 as usize] = Some(Assigned::Reg(free));
            active.push((end, reg, free));
            continue;
        }

        // No register is free: spill whichever interval ends last, among
        // this one and the active ones holding a register it may use.
        let victim = active
            .iter()
            .enumerate()
            .filter(|(_, (_, _, r))| preferred.contains(r))
            .max_by_key(|(_, (active_end, _, _))| *active_end)
            .map(|(index, &entry)| (index, entry));
        match victim {
            Some((index, (victim_end, victim_reg, machine))) if victim_end > end => {
                locations[victim_reg.0 as usize] = Some(Assigned::Spill(spilled));
                spilled += 1;
                active.remove(index);
                locations[reg.0 as usize] = Some(Assigned::Reg(machine));
                active.push((end, reg, machine));
            }
            _ => {
                locations[reg.0 as usize] = Some(Assigned::Spill(spilled));
                spilled += 1;
            }
        }
    }
    Assignment { locations, spilled }
}

/// A register-to-register, stack-to-register or constant move, part of a
/// parallel move into the argument registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MoveSource {
    Reg(Reg),
    Spill(i16),
    Imm(i32),
}

struct Emitter {
    locations: Vec<Option<Location>>,
    slot_offsets: Vec<i32>,
    out: Lowered,
    /// Label id to instruction index.
    labels: HashMap<u32, usize>,
    /// Jump instruction index and its target label.
    fixups: Vec<(usize, Label)>,
    line: u32,
}

impl Emitter {
    fn emit(&mut self, insn: Insn) {
        self.out.insns.push(insn);
        self.out.lines.push(self.line);
    }

    fn location(&self, reg: VReg) -> Location {
        // Registers that liveness never saw are only ever written (a dead
        // definition); any register will do.
        self.locations
            .get(reg.0 as usize)
            .copied()
            .flatten()
            .unwrap_or(Location::Reg(SCRATCH))
    }

    /// Returns a machine register holding `reg`, loading it into `scratch`
    /// when it is spilled.
    fn read(&mut self, reg: VReg, scratch: Reg) -> Reg {
        match self.location(reg) {
            Location::Reg(machine) => machine,
            Location::Spill(offset) => {
                self.emit(Insn::load(Size::DW, scratch, Reg::FP, offset));
                scratch
            }
        }
    }

    /// Returns the machine register to compute `reg` in.
    fn target(&self, reg: VReg, scratch: Reg) -> Reg {
        match self.location(reg) {
            Location::Reg(machine) => machine,
            Location::Spill(_) => scratch,
        }
    }

    /// Stores `machine` back to `reg`'s spill slot, if it has one.
    fn write_back(&mut self, reg: VReg, machine: Reg) {
        if let Location::Spill(offset) = self.location(reg) {
            self.emit(Insn::store_reg(Size::DW, Reg::FP, offset, machine));
        }
    }

    fn slot_offset(&self, slot: super::ir::Slot, off: i16) -> i16 {
        (self.slot_offsets[slot.0 as usize] + i32::from(off)) as i16
    }

    fn lower(&mut self, inst: &Inst) {
        match *inst {
            Inst::LoadCtx { dst } => {
                let d = self.target(dst, SCRATCH);
                if d != Reg::R1 {
                    self.emit(Insn::mov64_reg(d, Reg::R1));
                }
                self.write_back(dst, d);
            }
            Inst::Mov { dst, src } => self.lower_mov(dst, src),
            Inst::Imm64 { dst, value } => {
                let d = self.target(dst, SCRATCH);
                for insn in Insn::ld_imm64(d, value) {
                    self.emit(insn);
                }
                self.write_back(dst, d);
            }
            Inst::LoadMap { dst, map } => {
                let d = self.target(dst, SCRATCH);
                self.out.map_loads.push((self.out.insns.len(), map));
                for insn in Insn::ld_map_fd(d) {
                    self.emit(insn);
                }
                self.write_back(dst, d);
            }
            Inst::Alu { op, dst, src, wide } => {
                let d = self.read(dst, SCRATCH);
                let insn = match src {
                    Value::Imm(imm) if wide => Insn::alu64_imm(op, d, imm),
                    Value::Imm(imm) => Insn::alu32_imm(op, d, imm),
                    Value::Reg(src) => {
                        let s = self.read(src, SECOND_SCRATCH);
                        if wide {
                            Insn::alu64_reg(op, d, s)
                        } else {
                            Insn::alu32_reg(op, d, s)
                        }
                    }
                };
                self.emit(insn);
                self.write_back(dst, d);
            }
            Inst::Neg { dst } => {
                let d = self.read(dst, SCRATCH);
                self.emit(Insn::neg64(d));
                self.write_back(dst, d);
            }
            Inst::Load { size, dst, base, off } => {
                let b = self.read(base, SCRATCH);
                let d = self.target(dst, SCRATCH);
                self.emit(Insn::load(size, d, b, off));
                self.write_back(dst, d);
            }
            Inst::Store { size, base, off, src } => {
                let b = self.read(base, SCRATCH);
                match src {
                    Value::Imm(imm) => self.emit(Insn::store_imm(size, b, off, imm)),
                    Value::Reg(src) => {
                        let s = self.read(src, SECOND_SCRATCH);
                        self.emit(Insn::store_reg(size, b, off, s));
                    }
                }
            }
            Inst::LoadStack { size, dst, slot, off } => {
                let d = self.target(dst, SCRATCH);
                let offset = self.slot_offset(slot, off);
                self.emit(Insn::load(size, d, Reg::FP, offset));
                self.write_back(dst, d);
            }
            Inst::StoreStack { size, slot, off, src } => {
                let offset = self.slot_offset(slot, off);
                match src {
                    Value::Imm(imm) => self.emit(Insn::store_imm(size, Reg::FP, offset, imm)),
                    Value::Reg(src) => {
                        let s = self.read(src, SCRATCH);
                        self.emit(Insn::store_reg(size, Reg::FP, offset, s));
                    }
                }
            }
            Inst::StackAddr { dst, slot, off } => {
                let d = self.target(dst, SCRATCH);
                let offset = self.slot_offset(slot, off);
                self.emit(Insn::mov64_reg(d, Reg::FP));
                self.emit(Insn::alu64_imm(AluOp::Add, d, i32::from(offset)));
                self.write_back(dst, d);
            }
            Inst::AtomicAdd { size, base, off, src } => {
                let b = self.read(base, SCRATCH);
                let s = self.read(src, SECOND_SCRATCH);
                self.emit(Insn::atomic_add(size, b, off, s));
            }
            Inst::Call {
                helper,
                ref args,
                ret,
            } => {
                let moves: Vec<(Reg, MoveSource)> = args
                    .iter()
                    .zip(Reg::ARGS)
                    .map(|(arg, target)| {
                        let source = match *arg {
                            Value::Imm(imm) => MoveSource::Imm(imm),
                            Value::Reg(reg) => match self.location(reg) {
                                Location::Reg(machine) => MoveSource::Reg(machine),
                                Location::Spill(offset) => MoveSource::Spill(offset),
                            },
                        };
                        (target, source)
                    })
                    .collect();
                self.parallel_move(moves);
                self.emit(Insn::call(helper));
                if let Some(ret) = ret {
                    match self.location(ret) {
                        Location::Reg(machine) => self.emit(Insn::mov64_reg(machine, Reg::R0)),
                        Location::Spill(offset) => {
                            self.emit(Insn::store_reg(Size::DW, Reg::FP, offset, Reg::R0))
                        }
                    }
                }
            }
            Inst::Jump { target } => {
                self.fixups.push((self.out.insns.len(), target));
                self.emit(Insn::ja(0));
            }
            Inst::Branch { op, lhs, rhs, target } => {
                let l = self.read(lhs, SCRATCH);
                let insn = match rhs {
                    Value::Imm(imm) => Insn::jmp_imm(op, l, imm, 0),
                    Value::Reg(rhs) => {
                        let r = self.read(rhs, SECOND_SCRATCH);
                        Insn::jmp_reg(op, l, r, 0)
                    }
                };
                self.fixups.push((self.out.insns.len(), target));
                self.emit(insn);
            }
            Inst::Label(label) => {
                self.labels.insert(label.0, self.out.insns.len());
            }
            Inst::Exit { value } => {
                match value {
                    Value::Imm(imm) => self.emit(Insn::mov64_imm(Reg::R0, imm)),
                    Value::Reg(reg) => match self.location(reg) {
                        Location::Reg(machine) => self.emit(Insn::mov64_reg(Reg::R0, machine)),
                        Location::Spill(offset) => {
                            self.emit(Insn::load(Size::DW, Reg::R0, Reg::FP, offset))
                        }
                    },
                }
                self.emit(Insn::exit());
            }
        }
    }

    fn lower_mov(&mut self, dst: VReg, src: Value) {
        match (self.location(dst), src) {
            (Location::Reg(d), Value::Imm(imm)) => self.emit(Insn::mov64_imm(d, imm)),
            (Location::Spill(offset), Value::Imm(imm)) => {
                self.emit(Insn::store_imm(Size::DW, Reg::FP, offset, imm))
            }
            (dst_location, Value::Reg(src)) => {
                if dst_location == self.location(src) {
                    return;
                }
                match dst_location {
                    Location::Reg(d) => match self.location(src) {
                        Location::Reg(s) => self.emit(Insn::mov64_reg(d, s)),
                        Location::Spill(offset) => self.emit(Insn::load(Size::DW, d, Reg::FP, offset)),
                    },
                    Location::Spill(offset) => {
                        let s = self.read(src, SCRATCH);
                        self.emit(Insn::store_reg(Size::DW, Reg::FP, offset, s));
                    }
                }
            }
        }
    }

    /// Emits moves that behave as if they all happened at once: register
    /// sources are read before any argument register they occupy is
    /// overwritten, with `r0` breaking cycles.
    fn parallel_move(&mut self, moves: Vec<(Reg, MoveSource)>) {
        let mut pending: Vec<(Reg, Reg)> = Vec::new();
        let mut later: Vec<(Reg, MoveSource)> = Vec::new();
        for (target, source) in moves {
            match source {
                MoveSource::Reg(reg) if reg == target => {}
                MoveSource::Reg(reg) => pending.push((target, reg)),
                other => later.push((target, other)),
            }
        }
        while !pending.is_empty() {
            let ready = pending
                .iter()
                .position(|&(target, _)| !pending.iter().any(|&(_, source)| source == target));
            match ready {
                Some(index) => {
                    let (target, source) = pending.remove(index);
                    self.emit(Insn::mov64_reg(target, source));
                }
                None => {
                    // Every target is still needed as a source: a cycle.
                    // Save one target in r0 and redirect its readers there.
                    let (target, _) = pending[0];
                    self.emit(Insn::mov64_reg(SCRATCH, target));
                    for entry in &mut pending {
                        if entry.1 == target {
                            entry.1 = SCRATCH;
                        }
                    }
                }
            }
        }
        for (target, source) in later {
            match source {
                MoveSource::Imm(imm) => self.emit(Insn::mov64_imm(target, imm)),
                MoveSource::Spill(offset) => self.emit(Insn::load(Size::DW, target, Reg::FP, offset)),
                MoveSource::Reg(_) => {}
            }
        }
    }

    fn resolve_jumps(&mut self) -> Result<(), AllocError> {
        for &(index, label) in &self.fixups {
            let target = *self
                .labels
                .get(&label.0)
                .ok_or(AllocError::MissingLabel(label.0))?;
            let distance = target as i64 - (index as i64 + 1);
            let offset = i16::try_from(distance).map_err(|_| AllocError::JumpTooFar(distance))?;
            self.out.insns[index].off = offset;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::insn::{JmpOp, describe};

    fn text(lowered: &Lowered) -> Vec<String> {
        let mut lines = Vec::new();
        let mut i = 0;
        while i < lowered.insns.len() {
            lines.push(describe(lowered.insns[i]));
            i += if lowered.insns[i].is_ld_imm64() { 2 } else { 1 };
        }
        lines
    }

    #[test]
    fn simple_return() {
        let mut f = Function::new();
        let a = f.constant(7);
        f.push(Inst::Exit { value: a.into() });
        let lowered = lower(&f).expect("lowers");
        assert_eq!(text(&lowered), ["r1 = 7", "r0 = r1", "exit"]);
    }

    #[test]
    fn value_live_across_call_uses_callee_saved() {
        let mut f = Function::new();
        let ctx = f.vreg();
        f.push(Inst::LoadCtx { dst: ctx });
        let time = f.vreg();
        f.push(Inst::Call { helper: 5, args: vec![], ret: Some(time) });
        let a = f.vreg();
        f.push(Inst::Load { size: Size::DW, dst: a, base: ctx, off: 8 });
        f.push(Inst::Alu { op: AluOp::Add, dst: a, src: time.into(), wide: true });
        f.push(Inst::Exit { value: a.into() });
        let lowered = lower(&f).expect("lowers");
        let lines = text(&lowered);
        assert_eq!(lines[0], "r6 = r1", "ctx must survive the call: {lines:?}");
        assert_eq!(lines[1], "call 5");
    }

    #[test]
    fn branches_resolve_to_offsets() {
        let mut f = Function::new();
        let a = f.constant(1);
        let skip = f.label();
        f.push(Inst::Branch { op: JmpOp::Eq, lhs: a, rhs: Value::Imm(0), target: skip });
        f.push(Inst::Mov { dst: a, src: Value::Imm(2) });
        f.push(Inst::Label(skip));
        f.push(Inst::Exit { value: a.into() });
        let lowered = lower(&f).expect("lowers");
        assert_eq!(text(&lowered), ["r1 = 1", "if r1 == 0 goto +1", "r1 = 2", "r0 = r1", "exit"]);
    }

    #[test]
    fn missing_label_is_an_error() {
        let mut f = Function::new();
        let nowhere = f.label();
        f.push(Inst::Jump { target: nowhere });
        assert_eq!(lower(&f).err(), Some(AllocError::MissingLabel(0)));
    }

    #[test]
    fn read_before_write_is_an_error() {
        let mut f = Function::new();
        let a = f.vreg();
        f.push(Inst::Exit { value: a.into() });
        assert_eq!(lower(&f).err(), Some(AllocError::Uninitialized(0)));
    }

    #[test]
    fn argument_cycle_is_broken_with_r0() {
        // a in r1 and b in r2 passed as (b, a): a swap.
        let mut f = Function::new();
        let a = f.constant(1);
        let b = f.constant(2);
        f.push(Inst::Call { helper: 1, args: vec![b.into(), a.into()], ret: None });
        f.push(Inst::Exit { value: Value::Imm(0) });
        let lowered = lower(&f).expect("lowers");
        assert_eq!(
            text(&lowered),
            ["r1 = 1", "r2 = 2", "r0 = r1", "r1 = r2", "r2 = r0", "call 1", "r0 = 0", "exit"]
        );
    }

    /// Many values live at once across calls: more than r6-r9 can hold.
    #[test]
    fn spills_when_registers_run_out() {
        let mut f = Function::new();
        let values: Vec<VReg> = (0..12).map(|i| f.constant(i)).collect();
        f.push(Inst::Call { helper: 5, args: vec![], ret: None });
        let sum = f.constant(0);
        for v in &values {
            f.push(Inst::Alu { op: AluOp::Add, dst: sum, src: (*v).into(), wide: true });
        }
        f.push(Inst::Exit { value: sum.into() });
        let lowered = lower(&f).expect("lowers");
        assert!(lowered.stack_size >= 8 * 9, "stack {}", lowered.stack_size);
        // Simulate the result: registers and stack as a tiny interpreter.
        assert_eq!(simulate(&lowered), (0..12).sum::<i64>());
    }

    /// Interprets the straight-line subset the tests produce.
    fn simulate(lowered: &Lowered) -> i64 {
        let mut regs = [0i64; 11];
        let mut stack = vec![0u8; 512];
        regs[10] = 512;
        let mut pc = 0;
        loop {
            let insn = lowered.insns[pc];
            let class = insn.opcode & 7;
            let dst = insn.dst as usize;
            let src = insn.src as usize;
            match (class, insn.opcode) {
                (_, 0x95) => return regs[0],
                (_, 0x85) => {
                    for r in 1..=5 {
                        regs[r] = 0xdead;
                    }
                    regs[0] = 0;
                }
                (_, 0xb7) => regs[dst] = i64::from(insn.imm),
                (_, 0xbf) => regs[dst] = regs[src],
                (_, 0x0f) => regs[dst] = regs[dst].wrapping_add(regs[src]),
                (_, 0x07) => regs[dst] = regs[dst].wrapping_add(i64::from(insn.imm)),
                (_, 0x7b) => {
                    let at = (regs[dst] + i64::from(insn.off)) as usize;
                    stack[at..at + 8].copy_from_slice(&regs[src].to_le_bytes());
                }
                (_, 0x7a) => {
                    let at = (regs[dst] + i64::from(insn.off)) as usize;
                    stack[at..at + 8].copy_from_slice(&i64::from(insn.imm).to_le_bytes());
                }
                (_, 0x79) => {
                    let at = (regs[src] + i64::from(insn.off)) as usize;
                    regs[dst] = i64::from_le_bytes(stack[at..at + 8].try_into().unwrap());
                }
                other => panic!("simulator does not know {other:?}: {}", describe(insn)),
            }
            pc += 1;
        }
    }

    #[test]
    fn stack_limit_is_enforced() {
        let mut f = Function::new();
        let slot = f.slot(600);
        f.push(Inst::StoreStack { size: Size::DW, slot, off: 0, src: Value::Imm(0) });
        f.push(Inst::Exit { value: Value::Imm(0) });
        assert_eq!(lower(&f).err(), Some(AllocError::StackTooLarge { needed: 600 }));
    }
}
