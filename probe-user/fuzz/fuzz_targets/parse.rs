//! Feeds arbitrary text to the script lexer and parser. No input may make
//! them panic, overflow the stack or hang. Their results must also agree:
//! every diagnostic span lies inside the text, and a program comes back
//! exactly when there is no error. The invariants are in
//! `probe_user::script::fuzzing::check_parse`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_user::script::fuzzing::check_parse;

fuzz_target!(|data: &[u8]| check_parse(data));
