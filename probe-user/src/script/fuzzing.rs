//! Invariant checks for the cargo-fuzz targets in `probe-user/fuzz/` and
//! for the unit test that replays every input saved under
//! `probe-user/fuzz/regressions/`.
//!
//! Each check runs one input through the compiler and panics when an
//! invariant breaks. libFuzzer then saves the input as a crash, and the
//! replay test fails on it, so a saved crash stays a plain `cargo test`
//! regression.
//!
//! Not a stable interface: it is public only because the fuzz crate can
//! reach nothing else.

#![doc(hidden)]

use object::{Object as _, ObjectSection as _};

use super::{
    compile::{self, Compiled, CompileOptions},
    diagnostic::{Diagnostic, has_errors},
    env::Environment,
    parser,
    regalloc::STACK_LIMIT,
    span::Source,
};
use crate::tracepoint::Format;

#[cfg(test)]
mod tests;

/// Name under which fuzz inputs appear in rendered diagnostics.
const SOURCE_NAME: &str = "fuzz.bt";

/// Prefix of the messages for compiler bugs that are reported as
/// diagnostics instead of panics.
const INTERNAL_ERROR: &str = "internal compiler error";

/// Tracepoint formats of the fixed environment, as tracefs printed them on
/// Linux 6.18 (x86_64). Between them they have an integer syscall argument,
/// a `const char *` user pointer, a signed return value, a `__data_loc`
/// string, a fixed `char` array and a fixed `unsigned long` array.
const FORMATS: [(&str, &str, &str); 7] = [
    (
        "syscalls",
        "sys_enter_openat",
        "name: sys_enter_openat
ID: 782
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int dfd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;
\tfield:int flags;\toffset:32;\tsize:8;\tsigned:0;
\tfield:umode_t mode;\toffset:40;\tsize:8;\tsigned:0;

print fmt: \"dfd: 0x%08lx, filename: 0x%08lx, flags: 0x%08lx, mode: 0x%08lx\", ((unsigned long)(REC->dfd)), ((unsigned long)(REC->filename)), ((unsigned long)(REC->flags)), ((unsigned long)(REC->mode))
",
    ),
    (
        "syscalls",
        "sys_exit_openat",
        "name: sys_exit_openat
ID: 781
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
",
    ),
    (
        "syscalls",
        "sys_exit_read",
        "name: sys_exit_read
ID: 841
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"0x%lx\", REC->ret
",
    ),
    (
        "raw_syscalls",
        "sys_enter",
        "name: sys_enter
ID: 443
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:unsigned long args[6];\toffset:16;\tsize:48;\tsigned:0;

print fmt: \"NR %ld (%lx, %lx, %lx, %lx, %lx, %lx)\", REC->id, REC->args[0], REC->args[1], REC->args[2], REC->args[3], REC->args[4], REC->args[5]
",
    ),
    (
        "raw_syscalls",
        "sys_exit",
        "name: sys_exit
ID: 442
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:long id;\toffset:8;\tsize:8;\tsigned:1;
\tfield:long ret;\toffset:16;\tsize:8;\tsigned:1;

print fmt: \"NR %ld = %ld\", REC->id, REC->ret
",
    ),
    (
        "sched",
        "sched_process_exec",
        "name: sched_process_exec
ID: 365
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;

print fmt: \"filename=%s pid=%d old_pid=%d\", __get_str(filename), REC->pid, REC->old_pid
",
    ),
    (
        "signal",
        "signal_generate",
        "name: signal_generate
ID: 261
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int sig;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int errno;\toffset:12;\tsize:4;\tsigned:1;
\tfield:int code;\toffset:16;\tsize:4;\tsigned:1;
\tfield:char comm[16];\toffset:20;\tsize:16;\tsigned:0;
\tfield:pid_t pid;\toffset:36;\tsize:4;\tsigned:1;
\tfield:int group;\toffset:40;\tsize:4;\tsigned:1;
\tfield:int result;\toffset:44;\tsize:4;\tsigned:1;

print fmt: \"sig=%d errno=%d code=%d comm=%s pid=%d grp=%d res=%d\", REC->sig, REC->errno, REC->code, REC->comm, REC->pid, REC->group, REC->result
",
    ),
];

/// Returns the check that the fuzz target `target` runs, or `None` for an
/// unknown name. The replay test uses it to pick the check for each
/// directory under `fuzz/regressions/`.
pub fn check_for_target(target: &str) -> Option<fn(&[u8])> {
    match target {
        "parse" => Some(check_parse),
        "compile" => Some(check_compile),
        _ => None,
    }
}

/// Builds the environment that the `compile` target compiles against: the
/// tracepoint formats in [`FORMATS`] and no BTF.
///
/// Without BTF, fentry and fexit probes fail before they reach code
/// generation. kprobe and kretprobe probes still compile, with untyped
/// arguments.
///
/// NOTE: resolving a kprobe without BTF reads `/proc/kallsyms`, and an
/// unknown tracepoint reads tracefs's `available_events` for suggestions,
/// so those inputs do read the running kernel (both reads have no side
/// effects when tracefs is mounted).
pub fn environment() -> Environment {
    let formats = FORMATS
        .iter()
        .map(|(category, name, text)| {
            Format::parse(category, name, text)
                .unwrap_or_else(|message| panic!("fixed format {category}:{name} is invalid: {message}"))
        })
        .collect();
    Environment::fixed(None, formats)
}

/// Runs the lexer and parser on `data`, read as lossy UTF-8, and checks
/// that every diagnostic lies inside the text and renders, and that a
/// program comes back exactly when there is no error.
pub fn check_parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let source = Source::new(SOURCE_NAME, text.as_ref());
    let (program, diagnostics) = parser::parse(&source);

    check_diagnostics(&diagnostics, &source);
    assert_eq!(
        program.is_some(),
        !has_errors(&diagnostics),
        "a program must come back exactly when there is no error"
    );
    if let Some(program) = program {
        program.to_sexpr();
    }
}

/// Runs [`check_parse`], then compiles `data` against [`environment`] and
/// checks the result.
///
/// A failed compilation must carry at least one error, every diagnostic
/// must lie inside the text and render, and none may be an internal
/// compiler error. A successful one must contain at least one program,
/// each within the BPF stack limit and with a section of the right size in
/// a non-empty ELF object, and its listing must render.
pub fn check_compile(data: &[u8]) {
    check_parse(data);

    let text = String::from_utf8_lossy(data);
    let source = Source::new(SOURCE_NAME, text.as_ref());
    let env = environment();
    match compile::compile(&source, &env, &CompileOptions::default()) {
        Ok(compiled) => {
            check_diagnostics(&compiled.warnings, &source);
            assert!(
                !has_errors(&compiled.warnings),
                "a successful compilation returned errors:\n{}",
                render(&compiled.warnings, &source)
            );
            check_compiled(&compiled, &source);
        }
        Err(diagnostics) => {
            check_diagnostics(&diagnostics, &source);
            assert!(
                has_errors(&diagnostics),
                "a failed compilation returned no error:\n{}",
                render(&diagnostics, &source)
            );
        }
    }
}

fn check_compiled(compiled: &Compiled, source: &Source) {
    assert!(!compiled.object.is_empty(), "the ELF object is empty");
    assert!(!compiled.probes.is_empty(), "a successful compilation has no program");
    let file = object::File::parse(compiled.object.as_slice())
        .unwrap_or_else(|error| panic!("the ELF object does not parse: {error}"));

    for probe in &compiled.probes {
        let code = &probe.code;
        assert!(!code.insns.is_empty(), "program {} has no instructions", probe.symbol);
        assert_eq!(
            code.lines.len(),
            code.insns.len(),
            "program {} has a line number for {} of {} instructions",
            probe.symbol,
            code.lines.len(),
            code.insns.len()
        );
        assert!(
            code.stack_size <= STACK_LIMIT,
            "program {} uses {} bytes of stack, over the limit of {STACK_LIMIT}",
            probe.symbol,
            code.stack_size
        );

        let section_name = probe.kind.section(&probe.symbol);
        let section = file
            .section_by_name(&section_name)
            .unwrap_or_else(|| panic!("the ELF object has no section {section_name}"));
        let size = section
            .data()
            .unwrap_or_else(|error| panic!("section {section_name} is unreadable: {error}"))
            .len();
        assert_eq!(size, code.insns.len() * 8, "section {section_name} has the wrong size");
    }

    compiled.listing(source);
}

/// Checks that every span of `diagnostics` lies inside the source text,
/// that each diagnostic renders, and that none reports a compiler bug.
fn check_diagnostics(diagnostics: &[Diagnostic], source: &Source) {
    let len = source.text().len();
    for diagnostic in diagnostics {
        let spans = std::iter::once(diagnostic.span).chain(diagnostic.notes.iter().filter_map(|note| note.span));
        for span in spans {
            assert!(span.start <= span.end, "reversed span {span:?}: {}", diagnostic.message);
            assert!(span.end <= len, "span {span:?} past the end ({len}): {}", diagnostic.message);
        }

        let rendered = diagnostic.render(source);
        assert!(
            rendered.contains(&diagnostic.message),
            "the rendered diagnostic lacks its message:\n{rendered}"
        );
        assert!(
            !diagnostic.message.starts_with(INTERNAL_ERROR),
            "the compiler reported a bug:\n{rendered}"
        );
    }
}

fn render(diagnostics: &[Diagnostic], source: &Source) -> String {
    super::diagnostic::render_all(diagnostics, source)
}
