//! The compiler's intermediate representation: BPF-shaped instructions over
//! virtual registers, symbolic labels, named stack slots and symbolic map
//! references.
//!
//! Code generation emits IR without caring how many machine registers
//! exist; register allocation (`regalloc`) maps virtual registers to
//! `r1`-`r9` or stack spill slots, lays out the stack, and resolves labels
//! and maps in one final pass.

use std::fmt;

use super::insn::{AluOp, JmpOp, Size};

/// A virtual register: any number of them, each holding 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VReg(pub u32);

/// A jump target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(pub u32);

/// A stack object (a buffer for a key, a string, a record) whose frame
/// offset is chosen during allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(pub u32);

/// A map, by its index in the program's map table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapRef(pub u32);

/// A source operand: a register or a 32-bit immediate, which the machine
/// sign-extends to 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    Reg(VReg),
    Imm(i32),
}

impl From<VReg> for Value {
    fn from(reg: VReg) -> Self {
        Value::Reg(reg)
    }
}

/// One IR instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inst {
    /// `dst = context pointer` (r1 at program entry). Only valid as the
    /// first instruction.
    LoadCtx { dst: VReg },
    /// `dst = src`.
    Mov { dst: VReg, src: Value },
    /// `dst = value`, any 64-bit constant.
    Imm64 { dst: VReg, value: u64 },
    /// `dst = map` (a map pointer for helper calls).
    LoadMap { dst: VReg, map: MapRef },
    /// `dst op= src`; `wide` selects 64-bit rather than 32-bit arithmetic.
    Alu {
        op: AluOp,
        dst: VReg,
        src: Value,
        wide: bool,
    },
    /// `dst = -dst` on 64 bits.
    Neg { dst: VReg },
    /// `dst = *(size *)(base + off)`.
    Load {
        size: Size,
        dst: VReg,
        base: VReg,
        off: i16,
    },
    /// `*(size *)(base + off) = src`.
    Store {
        size: Size,
        base: VReg,
        off: i16,
        src: Value,
    },
    /// `dst = *(size *)(slot + off)`.
    LoadStack {
        size: Size,
        dst: VReg,
        slot: Slot,
        off: i16,
    },
    /// `*(size *)(slot + off) = src`.
    StoreStack {
        size: Size,
        slot: Slot,
        off: i16,
        src: Value,
    },
    /// `dst = address of slot + off`.
    StackAddr { dst: VReg, slot: Slot, off: i16 },
    /// `lock *(size *)(base + off) += src`.
    AtomicAdd {
        size: Size,
        base: VReg,
        off: i16,
        src: VReg,
    },
    /// Calls a helper with up to five arguments; the result, if wanted,
    /// goes to `ret`.
    Call {
        helper: i32,
        args: Vec<Value>,
        ret: Option<VReg>,
    },
    Jump { target: Label },
    /// `if lhs op rhs goto target`, comparing 64 bits.
    Branch {
        op: JmpOp,
        lhs: VReg,
        rhs: Value,
        target: Label,
    },
    Label(Label),
    /// `return value`.
    Exit { value: Value },
}

impl Inst {
    /// Registers this instruction reads.
    pub fn uses(&self) -> Vec<VReg> {
        let mut regs = Vec::new();
        let mut value = |v: &Value| {
            if let Value::Reg(r) = v {
                regs.push(*r);
            }
        };
        match self {
            Inst::Mov { src, .. } | Inst::StoreStack { src, .. } | Inst::Exit { value: src } => {
                value(src)
            }
            Inst::Alu { dst, src, .. } => {
                value(src);
                regs.push(*dst);
            }
            Inst::Neg { dst } => regs.push(*dst),
            Inst::Load { base, .. } => regs.push(*base),
            Inst::Store { base, src, .. } => {
                value(src);
                regs.push(*base);
            }
            Inst::AtomicAdd { base, src, .. } => {
                regs.push(*base);
                regs.push(*src);
            }
            Inst::Call { args, .. } => args.iter().for_each(value),
            Inst::Branch { lhs, rhs, .. } => {
                value(rhs);
                regs.push(*lhs);
            }
            Inst::LoadCtx { .. }
            | Inst::Imm64 { .. }
            | Inst::LoadMap { .. }
            | Inst::LoadStack { .. }
            | Inst::StackAddr { .. }
            | Inst::Jump { .. }
            | Inst::Label(_) => {}
        }
        regs
    }

    /// Returns the register this instruction writes, if any.
    pub fn def(&self) -> Option<VReg> {
        match self {
            Inst::LoadCtx { dst }
            | Inst::Mov { dst, .. }
            | Inst::Imm64 { dst, .. }
            | Inst::LoadMap { dst, .. }
            | Inst::Alu { dst, .. }
            | Inst::Neg { dst }
            | Inst::Load { dst, .. }
            | Inst::LoadStack { dst, .. }
            | Inst::StackAddr { dst, .. } => Some(*dst),
            Inst::Call { ret, .. } => *ret,
            Inst::Store { .. }
            | Inst::StoreStack { .. }
            | Inst::AtomicAdd { .. }
            | Inst::Jump { .. }
            | Inst::Branch { .. }
            | Inst::Label(_)
            | Inst::Exit { .. } => None,
        }
    }
}

impl fmt::Display for VReg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Reg(r) => write!(f, "{r}"),
            Value::Imm(i) => write!(f, "{i}"),
        }
    }
}

impl fmt::Display for Inst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inst::LoadCtx { dst } => write!(f, "{dst} = ctx"),
            Inst::Mov { dst, src } => write!(f, "{dst} = {src}"),
            Inst::Imm64 { dst, value } => write!(f, "{dst} = {value:#x} ll"),
            Inst::LoadMap { dst, map } => write!(f, "{dst} = map#{}", map.0),
            Inst::Alu { op, dst, src, wide } => {
                write!(f, "{dst} {op:?}{} {src}", if *wide { "" } else { "32" })
            }
            Inst::Neg { dst } => write!(f, "{dst} = -{dst}"),
            Inst::Load { size, dst, base, off } => write!(f, "{dst} = *({size:?} *)({base} {off:+})"),
            Inst::Store { size, base, off, src } => write!(f, "*({size:?} *)({base} {off:+}) = {src}"),
            Inst::LoadStack { size, dst, slot, off } => {
                write!(f, "{dst} = *({size:?} *)(slot{} {off:+})", slot.0)
            }
            Inst::StoreStack { size, slot, off, src } => {
                write!(f, "*({size:?} *)(slot{} {off:+}) = {src}", slot.0)
            }
            Inst::StackAddr { dst, slot, off } => write!(f, "{dst} = &slot{} {off:+}", slot.0),
            Inst::AtomicAdd { size, base, off, src } => {
                write!(f, "lock *({size:?} *)({base} {off:+}) += {src}")
            }
            Inst::Call { helper, args, ret } => {
                let args: Vec<String> = args.iter().map(ToString::to_string).collect();
                match ret {
                    Some(ret) => write!(f, "{ret} = call {helper}({})", args.join(", ")),
                    None => write!(f, "call {helper}({})", args.join(", ")),
                }
            }
            Inst::Jump { target } => write!(f, "goto L{}", target.0),
            Inst::Branch { op, lhs, rhs, target } => {
                write!(f, "if {lhs} {op:?} {rhs} goto L{}", target.0)
            }
            Inst::Label(label) => write!(f, "L{}:", label.0),
            Inst::Exit { value } => write!(f, "exit {value}"),
        }
    }
}

/// A stack object's size and alignment, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    pub size: u32,
    pub align: u32,
}

/// One BPF program in IR form.
#[derive(Clone, Debug, Default)]
pub struct Function {
    pub insts: Vec<Inst>,
    /// The script line each instruction came from, 0 when none.
    pub lines: Vec<u32>,
    pub slots: Vec<SlotLayout>,
    vreg_count: u32,
    label_count: u32,
    /// Line given to instructions emitted from now on.
    current_line: u32,
    /// Temporary slots handed out and not released yet, oldest first.
    temporaries: Vec<Slot>,
    /// Released temporary slots, which later requests reuse.
    free_slots: Vec<Slot>,
}

impl Function {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn vreg(&mut self) -> VReg {
        self.vreg_count += 1;
        VReg(self.vreg_count - 1)
    }

    pub fn label(&mut self) -> Label {
        self.label_count += 1;
        Label(self.label_count - 1)
    }

    /// Allocates a temporary stack object of at least `size` bytes,
    /// aligned to 8. It may share its memory with temporaries released
    /// before by [`Function::release_temporaries`].
    pub fn slot(&mut self, size: u32) -> Slot {
        // The smallest free slot that is large enough; failing that, the
        // largest one, grown to `size`.
        let fitting = self
            .free_slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| self.slots[slot.0 as usize].size >= size)
            .min_by_key(|(_, slot)| self.slots[slot.0 as usize].size)
            .or_else(|| {
                self.free_slots
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, slot)| self.slots[slot.0 as usize].size)
            })
            .map(|(index, _)| index);
        let slot = match fitting {
            Some(index) => {
                let slot = self.free_slots.swap_remove(index);
                let layout = &mut self.slots[slot.0 as usize];
                layout.size = layout.size.max(size);
                slot
            }
            None => self.permanent_slot(size),
        };
        self.temporaries.push(slot);
        slot
    }

    /// Allocates a stack object of `size` bytes, aligned to 8, that no
    /// other object ever shares: for values that live across statements.
    pub fn permanent_slot(&mut self, size: u32) -> Slot {
        self.slots.push(SlotLayout { size, align: 8 });
        Slot(self.slots.len() as u32 - 1)
    }

    /// Marks the current set of temporaries, for
    /// [`Function::release_temporaries`].
    pub fn temporaries_mark(&self) -> usize {
        self.temporaries.len()
    }

    /// Releases the temporaries allocated since `mark`, so that later
    /// temporaries reuse their memory. The caller guarantees that no
    /// instruction emitted from now on reads what they hold.
    pub fn release_temporaries(&mut self, mark: usize) {
        if mark < self.temporaries.len() {
            let released = self.temporaries.split_off(mark);
            self.free_slots.extend(released);
        }
    }

    pub fn vreg_count(&self) -> u32 {
        self.vreg_count
    }

    /// Sets the script line recorded for the instructions that follow.
    pub fn set_line(&mut self, line: u32) {
        self.current_line = line;
    }

    pub fn push(&mut self, inst: Inst) {
        self.insts.push(inst);
        self.lines.push(self.current_line);
    }

    /// Emits `dst = value`, choosing the short form when it fits.
    pub fn mov_const(&mut self, dst: VReg, value: i64) {
        match i32::try_from(value) {
            Ok(imm) => self.push(Inst::Mov {
                dst,
                src: Value::Imm(imm),
            }),
            Err(_) => self.push(Inst::Imm64 {
                dst,
                value: value as u64,
            }),
        }
    }

    /// Returns a new register holding `value`.
    pub fn constant(&mut self, value: i64) -> VReg {
        let dst = self.vreg();
        self.mov_const(dst, value);
        dst
    }

    /// Removes the instructions that no path from the start reaches, such
    /// as code after a `break` or a comparison that is false at compile
    /// time. The kernel's verifier rejects a program with unreachable
    /// instructions.
    pub fn remove_unreachable(&mut self) {
        let labels: std::collections::HashMap<u32, usize> = self
            .insts
            .iter()
            .enumerate()
            .filter_map(|(index, inst)| match inst {
                Inst::Label(label) => Some((label.0, index)),
                _ => None,
            })
            .collect();
        let mut reachable = vec![false; self.insts.len()];
        let mut pending = vec![0];
        while let Some(index) = pending.pop() {
            if index >= self.insts.len() || reachable[index] {
                continue;
            }
            reachable[index] = true;
            match &self.insts[index] {
                Inst::Jump { target } => pending.extend(labels.get(&target.0)),
                Inst::Branch { target, .. } => {
                    pending.extend(labels.get(&target.0));
                    pending.push(index + 1);
                }
                Inst::Exit { .. } => {}
                _ => pending.push(index + 1),
            }
        }
        let mut keep = reachable.iter();
        self.insts.retain(|_| *keep.next().unwrap_or(&false));
        let mut keep = reachable.iter();
        self.lines.retain(|_| *keep.next().unwrap_or(&false));
    }

    /// Renders the IR as a listing, one instruction per line.
    pub fn listing(&self) -> String {
        let mut out = String::new();
        for inst in &self.insts {
            match inst {
                Inst::Label(_) => out.push_str(&format!("{inst}\n")),
                _ => out.push_str(&format!("    {inst}\n")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_and_defs() {
        let mut f = Function::new();
        let a = f.vreg();
        let b = f.vreg();
        let alu = Inst::Alu {
            op: AluOp::Add,
            dst: a,
            src: Value::Reg(b),
            wide: true,
        };
        assert_eq!(alu.def(), Some(a));
        assert_eq!(alu.uses(), vec![b, a]);
        let call = Inst::Call {
            helper: 14,
            args: vec![Value::Reg(b), Value::Imm(3)],
            ret: Some(a),
        };
        assert_eq!(call.uses(), vec![b]);
        assert_eq!(call.def(), Some(a));
        assert_eq!(Inst::Label(Label(0)).def(), None);
    }

    #[test]
    fn large_constants_use_imm64() {
        let mut f = Function::new();
        let small = f.constant(-5);
        let large = f.constant(1 << 40);
        assert_eq!(f.insts[0], Inst::Mov { dst: small, src: Value::Imm(-5) });
        assert_eq!(f.insts[1], Inst::Imm64 { dst: large, value: 1 << 40 });
    }

    #[test]
    fn released_temporaries_are_reused() {
        let mut f = Function::new();
        let permanent = f.permanent_slot(8);
        let mark = f.temporaries_mark();
        let first = f.slot(64);
        let second = f.slot(16);
        f.release_temporaries(mark);
        assert_eq!(f.slot(16), second, "the smallest slot that fits");
        assert_eq!(f.slot(100), first, "the largest free slot, grown");
        assert_eq!(f.slots[first.0 as usize].size, 100);
        let third = f.slot(8);
        assert!(third != permanent && third != first && third != second, "nothing is free: {third:?}");
        assert_eq!(f.slots.len(), 4);
    }

    #[test]
    fn unreachable_code_is_removed() {
        let mut f = Function::new();
        let a = f.constant(1);
        let top = f.label();
        let end = f.label();
        f.push(Inst::Label(top));
        f.push(Inst::Branch { op: JmpOp::Eq, lhs: a, rhs: Value::Imm(0), target: end });
        f.push(Inst::Jump { target: end });
        // After an unconditional jump, up to the next label that a
        // reachable jump names.
        f.push(Inst::Mov { dst: a, src: Value::Imm(2) });
        f.push(Inst::Jump { target: top });
        f.push(Inst::Label(end));
        f.push(Inst::Exit { value: Value::Imm(0) });
        f.push(Inst::Mov { dst: a, src: Value::Imm(3) });
        f.remove_unreachable();
        assert_eq!(
            f.listing(),
            "    %0 = 1\nL0:\n    if %0 Eq 0 goto L1\n    goto L1\nL1:\n    exit 0\n"
        );
        assert_eq!(f.lines.len(), f.insts.len());
    }

    #[test]
    fn listing_shows_labels_and_lines() {
        let mut f = Function::new();
        let a = f.constant(1);
        let end = f.label();
        f.push(Inst::Branch {
            op: JmpOp::Eq,
            lhs: a,
            rhs: Value::Imm(0),
            target: end,
        });
        f.push(Inst::Label(end));
        f.push(Inst::Exit { value: Value::Imm(0) });
        assert_eq!(
            f.listing(),
            "    %0 = 1\n    if %0 Eq 0 goto L0\nL0:\n    exit 0\n"
        );
    }
}
