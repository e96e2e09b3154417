//! Feeds arbitrary text to the script lexer and parser. No input may make
//! them panic, overflow the stack or hang. Their results must also agree:
//! every diagnostic span lies inside the text, and a program comes back
//! exactly when there is no error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use probe_user::script::diagnostic::has_errors;
use probe_user::script::parser::parse;
use probe_user::script::span::Source;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = Source::new("fuzz.bt", text.as_ref());
    let (program, diagnostics) = parse(&source);

    for diagnostic in &diagnostics {
        assert!(diagnostic.span.start <= diagnostic.span.end);
        assert!(diagnostic.span.end <= text.len(), "span {:?} past the end", diagnostic.span);
        diagnostic.render(&source);
    }
    assert_eq!(program.is_some(), !has_errors(&diagnostics));
    if let Some(program) = program {
        program.to_sexpr();
    }
});
