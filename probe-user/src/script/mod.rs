//! The script compiler: bpftrace-language scripts to BPF bytecode, in
//! process and without LLVM.
//!
//! Pipeline: lexer, parser (AST with source spans), semantic analysis
//! (types from the kernel's BTF and tracepoint formats), IR with virtual
//! registers, register allocation and lowering, BPF encoding, and an
//! in-memory ELF object for aya's loader.

pub mod aggregate;
pub mod ast;
pub mod codegen;
pub mod compile;
pub mod diagnostic;
pub mod elf;
pub mod env;
pub mod fuzzing;
pub mod insn;
pub mod ir;
pub mod lexer;
pub mod parser;
pub mod printf;
pub mod probes;
pub mod regalloc;
pub mod span;
pub mod token;
