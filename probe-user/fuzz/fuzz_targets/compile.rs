//! Feeds arbitrary text through the parser and the whole compiler, against
//! fixed tracepoint formats and no BTF, so that tracepoint, BEGIN/END and
//! raw tracepoint scripts reach code generation, register allocation and
//! the ELF writer. The invariants are in
//! `probe_user::script::fuzzing::check_compile`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_user::script::fuzzing::check_compile;

fuzz_target!(|data: &[u8]| check_compile(data));
