//! BPF instructions: registers, opcodes, builders, the 8-byte encoding and a
//! disassembly listing.
//!
//! An instruction is plain data (opcode, registers, offset, immediate). The
//! opcode layout follows the kernel's `Documentation/bpf/standardization/
//! instruction-set.rst`: the low three bits are the class, ALU and jump
//! instructions put the operation in the high four bits and the source
//! (immediate or register) in bit 3, and loads and stores put the mode in
//! the high three bits and the size in bits 3-4.

use std::fmt;

/// A machine register. `R10` is the read-only frame pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reg(pub u8);

impl Reg {
    pub const R0: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);
    pub const R5: Reg = Reg(5);
    pub const R6: Reg = Reg(6);
    pub const R7: Reg = Reg(7);
    pub const R8: Reg = Reg(8);
    pub const R9: Reg = Reg(9);
    pub const FP: Reg = Reg(10);

    /// Argument registers of a helper call, in order.
    pub const ARGS: [Reg; 5] = [Reg::R1, Reg::R2, Reg::R3, Reg::R4, Reg::R5];
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

// Instruction classes.
const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;

// Source operand: immediate or register.
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;

// Load and store modes.
const MODE_IMM: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const MODE_ATOMIC: u8 = 0xc0;

/// `src` value of a 64-bit immediate load whose immediate is a map file
/// descriptor, resolved by the loader from a relocation.
pub const PSEUDO_MAP_FD: u8 = 1;

/// Width of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    B,
    H,
    W,
    DW,
}

impl Size {
    fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }

    /// Number of bytes accessed.
    pub fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    /// Returns the access size for a value of `bytes` bytes, if there is
    /// one.
    pub fn from_bytes(bytes: u32) -> Option<Size> {
        Some(match bytes {
            1 => Size::B,
            2 => Size::H,
            4 => Size::W,
            8 => Size::DW,
            _ => return None,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Size::B => "u8",
            Size::H => "u16",
            Size::W => "u32",
            Size::DW => "u64",
        }
    }

    fn from_bits(bits: u8) -> Size {
        match bits & 0x18 {
            0x00 => Size::W,
            0x08 => Size::H,
            0x10 => Size::B,
            _ => Size::DW,
        }
    }
}

/// Arithmetic and logic operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    Add,
    Sub,
    Mul,
    Div,
    Or,
    And,
    Lsh,
    Rsh,
    Neg,
    Mod,
    Xor,
    Mov,
    Arsh,
}

impl AluOp {
    fn code(self) -> u8 {
        match self {
            AluOp::Add => 0x00,
            AluOp::Sub => 0x10,
            AluOp::Mul => 0x20,
            AluOp::Div => 0x30,
            AluOp::Or => 0x40,
            AluOp::And => 0x50,
            AluOp::Lsh => 0x60,
            AluOp::Rsh => 0x70,
            AluOp::Neg => 0x80,
            AluOp::Mod => 0x90,
            AluOp::Xor => 0xa0,
            AluOp::Mov => 0xb0,
            AluOp::Arsh => 0xc0,
        }
    }

    fn from_code(code: u8) -> Option<AluOp> {
        Some(match code {
            0x00 => AluOp::Add,
            0x10 => AluOp::Sub,
            0x20 => AluOp::Mul,
            0x30 => AluOp::Div,
            0x40 => AluOp::Or,
            0x50 => AluOp::And,
            0x60 => AluOp::Lsh,
            0x70 => AluOp::Rsh,
            0x80 => AluOp::Neg,
            0x90 => AluOp::Mod,
            0xa0 => AluOp::Xor,
            0xb0 => AluOp::Mov,
            0xc0 => AluOp::Arsh,
            _ => return None,
        })
    }

    fn symbol(self) -> &'static str {
        match self {
            AluOp::Add => "+=",
            AluOp::Sub => "-=",
            AluOp::Mul => "*=",
            AluOp::Div => "/=",
            AluOp::Or => "|=",
            AluOp::And => "&=",
            AluOp::Lsh => "<<=",
            AluOp::Rsh => ">>=",
            AluOp::Neg => "= -",
            AluOp::Mod => "%=",
            AluOp::Xor => "^=",
            AluOp::Mov => "=",
            AluOp::Arsh => "s>>=",
        }
    }
}

/// Conditional jump operations. The `S` variants compare as signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpOp {
    Eq,
    Gt,
    Ge,
    Set,
    Ne,
    Sgt,
    Sge,
    Lt,
    Le,
    Slt,
    Sle,
}

impl JmpOp {
    fn code(self) -> u8 {
        match self {
            JmpOp::Eq => 0x10,
            JmpOp::Gt => 0x20,
            JmpOp::Ge => 0x30,
            JmpOp::Set => 0x40,
            JmpOp::Ne => 0x50,
            JmpOp::Sgt => 0x60,
            JmpOp::Sge => 0x70,
            JmpOp::Lt => 0xa0,
            JmpOp::Le => 0xb0,
            JmpOp::Slt => 0xc0,
            JmpOp::Sle => 0xd0,
        }
    }

    fn from_code(code: u8) -> Option<JmpOp> {
        Some(match code {
            0x10 => JmpOp::Eq,
            0x20 => JmpOp::Gt,
            0x30 => JmpOp::Ge,
            0x40 => JmpOp::Set,
            0x50 => JmpOp::Ne,
            0x60 => JmpOp::Sgt,
            0x70 => JmpOp::Sge,
            0xa0 => JmpOp::Lt,
            0xb0 => JmpOp::Le,
            0xc0 => JmpOp::Slt,
            0xd0 => JmpOp::Sle,
            _ => return None,
        })
    }

    /// Returns the condition that is true exactly when this one is false.
    pub fn negate(self) -> JmpOp {
        match self {
            JmpOp::Eq => JmpOp::Ne,
            JmpOp::Ne => JmpOp::Eq,
            JmpOp::Gt => JmpOp::Le,
            JmpOp::Le => JmpOp::Gt,
            JmpOp::Ge => JmpOp::Lt,
            JmpOp::Lt => JmpOp::Ge,
            JmpOp::Sgt => JmpOp::Sle,
            JmpOp::Sle => JmpOp::Sgt,
            JmpOp::Sge => JmpOp::Slt,
            JmpOp::Slt => JmpOp::Sge,
            // There is no "bits clear" jump; callers branch around instead.
            JmpOp::Set => JmpOp::Set,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            JmpOp::Eq => "==",
            JmpOp::Gt => ">",
            JmpOp::Ge => ">=",
            JmpOp::Set => "&",
            JmpOp::Ne => "!=",
            JmpOp::Sgt => "s>",
            JmpOp::Sge => "s>=",
            JmpOp::Lt => "<",
            JmpOp::Le => "<=",
            JmpOp::Slt => "s<",
            JmpOp::Sle => "s<=",
        }
    }
}

const JMP_JA: u8 = 0x00;
const JMP_CALL: u8 = 0x80;
const JMP_EXIT: u8 = 0x90;
const ATOMIC_ADD: i32 = 0x00;

/// One 8-byte instruction. A 64-bit immediate load takes two of them: the
/// first carries the low 32 bits, the second (opcode 0) the high 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Insn {
    pub opcode: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// Encodes the instruction in little-endian byte order.
    pub fn encode(&self) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes[0] = self.opcode;
        bytes[1] = (self.src << 4) | (self.dst & 0x0f);
        bytes[2..4].copy_from_slice(&self.off.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.imm.to_le_bytes());
        bytes
    }

    /// Decodes one little-endian instruction.
    pub fn decode(bytes: [u8; 8]) -> Insn {
        Insn {
            opcode: bytes[0],
            dst: bytes[1] & 0x0f,
            src: bytes[1] >> 4,
            off: i16::from_le_bytes([bytes[2], bytes[3]]),
            imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    fn new(opcode: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            opcode,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        }
    }

    /// `dst op= imm` on 64 bits.
    pub fn alu64_imm(op: AluOp, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_K | op.code(), dst, Reg(0), 0, imm)
    }

    /// `dst op= src` on 64 bits.
    pub fn alu64_reg(op: AluOp, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | SRC_X | op.code(), dst, src, 0, 0)
    }

    /// `dst op= imm` on the low 32 bits; the upper 32 bits become zero.
    pub fn alu32_imm(op: AluOp, dst: Reg, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | SRC_K | op.code(), dst, Reg(0), 0, imm)
    }

    /// `dst op= src` on the low 32 bits; the upper 32 bits become zero.
    pub fn alu32_reg(op: AluOp, dst: Reg, src: Reg) -> Insn {
        Insn::new(CLASS_ALU | SRC_X | op.code(), dst, src, 0, 0)
    }

    pub fn mov64_imm(dst: Reg, imm: i32) -> Insn {
        Insn::alu64_imm(AluOp::Mov, dst, imm)
    }

    pub fn mov64_reg(dst: Reg, src: Reg) -> Insn {
        Insn::alu64_reg(AluOp::Mov, dst, src)
    }

    pub fn neg64(dst: Reg) -> Insn {
        Insn::new(CLASS_ALU64 | AluOp::Neg.code(), dst, Reg(0), 0, 0)
    }

    /// Builds the two instructions of `dst = imm64`.
    pub fn ld_imm64(dst: Reg, value: u64) -> [Insn; 2] {
        Insn::ld_imm64_src(dst, 0, value)
    }

    /// Builds the two instructions of `dst = map`, with the map's file descriptor
    /// left 0 for the loader to fill in from a relocation.
    pub fn ld_map_fd(dst: Reg) -> [Insn; 2] {
        Insn::ld_imm64_src(dst, PSEUDO_MAP_FD, 0)
    }

    fn ld_imm64_src(dst: Reg, src: u8, value: u64) -> [Insn; 2] {
        [
            Insn::new(CLASS_LD | MODE_IMM | Size::DW.bits(), dst, Reg(src), 0, value as u32 as i32),
            Insn::new(0, Reg(0), Reg(0), 0, (value >> 32) as u32 as i32),
        ]
    }

    /// `dst = *(size *)(src + off)`.
    pub fn load(size: Size, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = src`.
    pub fn store_reg(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(CLASS_STX | MODE_MEM | size.bits(), dst, src, off, 0)
    }

    /// `*(size *)(dst + off) = imm`.
    pub fn store_imm(size: Size, dst: Reg, off: i16, imm: i32) -> Insn {
        Insn::new(CLASS_ST | MODE_MEM | size.bits(), dst, Reg(0), off, imm)
    }

    /// `lock *(size *)(dst + off) += src`, for 32- or 64-bit sizes.
    pub fn atomic_add(size: Size, dst: Reg, off: i16, src: Reg) -> Insn {
        Insn::new(CLASS_STX | MODE_ATOMIC | size.bits(), dst, src, off, ATOMIC_ADD)
    }

    /// Unconditional jump by `off` instructions.
    pub fn ja(off: i16) -> Insn {
        Insn::new(CLASS_JMP | JMP_JA, Reg(0), Reg(0), off, 0)
    }

    /// `if dst op imm goto +off`, comparing 64 bits.
    pub fn jmp_imm(op: JmpOp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_K | op.code(), dst, Reg(0), off, imm)
    }

    /// `if dst op src goto +off`, comparing 64 bits.
    pub fn jmp_reg(op: JmpOp, dst: Reg, src: Reg, off: i16) -> Insn {
        Insn::new(CLASS_JMP | SRC_X | op.code(), dst, src, off, 0)
    }

    /// `if dst op imm goto +off`, comparing the low 32 bits.
    pub fn jmp32_imm(op: JmpOp, dst: Reg, imm: i32, off: i16) -> Insn {
        Insn::new(CLASS_JMP32 | SRC_K | op.code(), dst, Reg(0), off, imm)
    }

    /// Calls helper number `helper`.
    pub fn call(helper: i32) -> Insn {
        Insn::new(CLASS_JMP | JMP_CALL, Reg(0), Reg(0), 0, helper)
    }

    pub fn exit() -> Insn {
        Insn::new(CLASS_JMP | JMP_EXIT, Reg(0), Reg(0), 0, 0)
    }

    /// Tells whether this is the first half of a 64-bit immediate load.
    pub fn is_ld_imm64(&self) -> bool {
        self.opcode == CLASS_LD | MODE_IMM | Size::DW.bits()
    }

    /// Tells whether this is a jump with a relative offset (not a call or
    /// exit).
    pub fn is_jump(&self) -> bool {
        let class = self.opcode & 0x07;
        let op = self.opcode & 0xf0;
        (class == CLASS_JMP || class == CLASS_JMP32) && op != JMP_CALL && op != JMP_EXIT
    }
}

/// Renders instructions as a listing, one per line, in a C-like notation
/// (`r1 = r10`, `if r0 == 0 goto +3`, `call 6`). `lines[i]`, when present,
/// is appended as a comment to instruction `i`.
pub fn listing(insns: &[Insn], comments: &[Option<String>]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < insns.len() {
        let insn = insns[i];
        let mut text = describe(insn);
        let mut width = 1;
        if insn.is_ld_imm64() {
            let high = insns.get(i + 1).map_or(0, |next| next.imm as u32 as u64);
            let value = (insn.imm as u32 as u64) | (high << 32);
            text = if insn.src == PSEUDO_MAP_FD {
                format!("r{} = map_fd", insn.dst)
            } else {
                format!("r{} = {value:#x} ll", insn.dst)
            };
            width = 2;
        }
        let comment = comments.get(i).and_then(|c| c.as_deref());
        match comment {
            Some(comment) => out.push_str(&format!("{i:5}: {text:<36} ; {comment}\n")),
            None => out.push_str(&format!("{i:5}: {text}\n")),
        }
        i += width;
    }
    out
}

/// Describes one instruction in a C-like notation.
pub fn describe(insn: Insn) -> String {
    let class = insn.opcode & 0x07;
    let dst = Reg(insn.dst);
    let src = Reg(insn.src);
    match class {
        CLASS_ALU | CLASS_ALU64 => {
            let op = AluOp::from_code(insn.opcode & 0xf0);
            let prefix = if class == CLASS_ALU { "w" } else { "r" };
            let operand = if insn.opcode & SRC_X != 0 {
                format!("{prefix}{}", insn.src)
            } else {
                insn.imm.to_string()
            };
            match op {
                Some(AluOp::Neg) => format!("{prefix}{} = -{prefix}{}", insn.dst, insn.dst),
                Some(op) => format!("{prefix}{} {} {operand}", insn.dst, op.symbol()),
                None => format!("unknown alu {:#04x}", insn.opcode),
            }
        }
        CLASS_JMP | CLASS_JMP32 => {
            let op = insn.opcode & 0xf0;
            let prefix = if class == CLASS_JMP32 { "w" } else { "r" };
            match op {
                JMP_JA => format!("goto {:+}", insn.off),
                JMP_CALL => format!("call {}", insn.imm),
                JMP_EXIT => "exit".to_owned(),
                _ => {
                    let operand = if insn.opcode & SRC_X != 0 {
                        format!("{prefix}{}", insn.src)
                    } else {
                        insn.imm.to_string()
                    };
                    match JmpOp::from_code(op) {
                        Some(op) => format!(
                            "if {prefix}{} {} {operand} goto {:+}",
                            insn.dst,
                            op.symbol(),
                            insn.off
                        ),
                        None => format!("unknown jump {:#04x}", insn.opcode),
                    }
                }
            }
        }
        CLASS_LDX => format!(
            "{dst} = *({} *)({src} {:+})",
            Size::from_bits(insn.opcode).suffix(),
            insn.off
        ),
        CLASS_STX if insn.opcode & 0xe0 == MODE_ATOMIC => format!(
            "lock *({} *)({dst} {:+}) += {src}",
            Size::from_bits(insn.opcode).suffix(),
            insn.off
        ),
        CLASS_STX => format!(
            "*({} *)({dst} {:+}) = {src}",
            Size::from_bits(insn.opcode).suffix(),
            insn.off
        ),
        CLASS_ST => format!(
            "*({} *)({dst} {:+}) = {}",
            Size::from_bits(insn.opcode).suffix(),
            insn.off,
            insn.imm
        ),
        _ => format!("unknown {:#04x}", insn.opcode),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(insn: Insn) -> [u8; 8] {
        insn.encode()
    }

    /// Builder calls against the bytes that the kernel documentation and
    /// `llvm-objdump` give for the same instructions.
    #[test]
    fn encoding_table() {
        let cases: &[(Insn, [u8; 8])] = &[
            (Insn::mov64_imm(Reg::R0, 0), [0xb7, 0x00, 0, 0, 0, 0, 0, 0]),
            (Insn::mov64_imm(Reg::R1, -1), [0xb7, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]),
            (Insn::mov64_reg(Reg::R6, Reg::R1), [0xbf, 0x16, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_imm(AluOp::Add, Reg::R2, -8), [0x07, 0x02, 0, 0, 0xf8, 0xff, 0xff, 0xff]),
            (Insn::alu64_reg(AluOp::Sub, Reg::R3, Reg::R4), [0x1f, 0x43, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_reg(AluOp::Mul, Reg::R1, Reg::R2), [0x2f, 0x21, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_reg(AluOp::Div, Reg::R1, Reg::R2), [0x3f, 0x21, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_imm(AluOp::Rsh, Reg::R0, 32), [0x77, 0x00, 0, 0, 32, 0, 0, 0]),
            (Insn::alu64_imm(AluOp::Arsh, Reg::R0, 32), [0xc7, 0x00, 0, 0, 32, 0, 0, 0]),
            (Insn::alu64_reg(AluOp::Mod, Reg::R5, Reg::R6), [0x9f, 0x65, 0, 0, 0, 0, 0, 0]),
            (Insn::alu64_reg(AluOp::Xor, Reg::R1, Reg::R1), [0xaf, 0x11, 0, 0, 0, 0, 0, 0]),
            (Insn::alu32_imm(AluOp::Mov, Reg::R1, 5), [0xb4, 0x01, 0, 0, 5, 0, 0, 0]),
            (Insn::alu32_reg(AluOp::Add, Reg::R1, Reg::R2), [0x0c, 0x21, 0, 0, 0, 0, 0, 0]),
            (Insn::neg64(Reg::R7), [0x87, 0x07, 0, 0, 0, 0, 0, 0]),
            (Insn::load(Size::DW, Reg::R1, Reg::FP, -8), [0x79, 0xa1, 0xf8, 0xff, 0, 0, 0, 0]),
            (Insn::load(Size::W, Reg::R2, Reg::R1, 4), [0x61, 0x12, 4, 0, 0, 0, 0, 0]),
            (Insn::load(Size::H, Reg::R2, Reg::R1, 2), [0x69, 0x12, 2, 0, 0, 0, 0, 0]),
            (Insn::load(Size::B, Reg::R2, Reg::R1, 1), [0x71, 0x12, 1, 0, 0, 0, 0, 0]),
            (Insn::store_reg(Size::DW, Reg::FP, -16, Reg::R1), [0x7b, 0x1a, 0xf0, 0xff, 0, 0, 0, 0]),
            (Insn::store_reg(Size::W, Reg::FP, -4, Reg::R0), [0x63, 0x0a, 0xfc, 0xff, 0, 0, 0, 0]),
            (Insn::store_imm(Size::DW, Reg::FP, -8, 0), [0x7a, 0x0a, 0xf8, 0xff, 0, 0, 0, 0]),
            (Insn::store_imm(Size::B, Reg::FP, -1, 7), [0x72, 0x0a, 0xff, 0xff, 7, 0, 0, 0]),
            (Insn::atomic_add(Size::DW, Reg::R0, 0, Reg::R1), [0xdb, 0x10, 0, 0, 0, 0, 0, 0]),
            (Insn::ja(3), [0x05, 0x00, 3, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(JmpOp::Eq, Reg::R0, 0, 5), [0x15, 0x00, 5, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(JmpOp::Ne, Reg::R1, -1, -2), [0x55, 0x01, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]),
            (Insn::jmp_reg(JmpOp::Sgt, Reg::R1, Reg::R2, 1), [0x6d, 0x21, 1, 0, 0, 0, 0, 0]),
            (Insn::jmp_reg(JmpOp::Lt, Reg::R1, Reg::R2, 1), [0xad, 0x21, 1, 0, 0, 0, 0, 0]),
            (Insn::jmp_imm(JmpOp::Sle, Reg::R1, 0, 1), [0xd5, 0x01, 1, 0, 0, 0, 0, 0]),
            (Insn::jmp32_imm(JmpOp::Eq, Reg::R1, 0, 1), [0x16, 0x01, 1, 0, 0, 0, 0, 0]),
            (Insn::call(6), [0x85, 0x00, 0, 0, 6, 0, 0, 0]),
            (Insn::exit(), [0x95, 0x00, 0, 0, 0, 0, 0, 0]),
        ];
        for (insn, expected) in cases {
            assert_eq!(bytes(*insn), *expected, "{}", describe(*insn));
            assert_eq!(Insn::decode(*expected), *insn, "decode {expected:02x?}");
        }
    }

    #[test]
    fn ld_imm64_splits_value() {
        let [low, high] = Insn::ld_imm64(Reg::R1, 0x1122_3344_5566_7788);
        assert_eq!(bytes(low), [0x18, 0x01, 0, 0, 0x88, 0x77, 0x66, 0x55]);
        assert_eq!(bytes(high), [0, 0, 0, 0, 0x44, 0x33, 0x22, 0x11]);
        let [map, _] = Insn::ld_map_fd(Reg::R1);
        assert_eq!(bytes(map), [0x18, 0x11, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn listing_reads_like_c() {
        let mut insns = vec![Insn::mov64_reg(Reg::R6, Reg::R1)];
        insns.extend(Insn::ld_imm64(Reg::R1, 0x1_0000_0000));
        insns.push(Insn::jmp_imm(JmpOp::Eq, Reg::R0, 0, 1));
        insns.push(Insn::exit());
        let comments = vec![Some("line 1".to_owned()), None, None, None, None];
        let text = listing(&insns, &comments);
        assert_eq!(
            text,
            "    0: r6 = r1                              ; line 1\n\
             \x20   1: r1 = 0x100000000 ll\n\
             \x20   3: if r0 == 0 goto +1\n\
             \x20   4: exit\n"
        );
    }

    #[test]
    fn negated_conditions_are_opposites() {
        for op in [JmpOp::Eq, JmpOp::Gt, JmpOp::Ge, JmpOp::Ne, JmpOp::Sgt, JmpOp::Sge, JmpOp::Lt, JmpOp::Le, JmpOp::Slt, JmpOp::Sle] {
            assert_eq!(op.negate().negate(), op);
            assert_ne!(op.negate(), op);
        }
    }
}
