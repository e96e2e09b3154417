//! Replays the saved fuzz inputs and checks that the fixed environment lets
//! realistic scripts reach code generation.

use std::fs;
use std::path::{Path, PathBuf};
use std::panic;

use super::*;

/// Saved inputs in one directory per fuzz target: every input that crashed
/// a target, and hand-made inputs at the compiler's limits.
const REGRESSIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");

/// Returns the files in `dir`, sorted, leaving out hidden files such as
/// `.gitkeep`.
fn input_files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|error| panic!("reading {} failed: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .filter(|path| !path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.')))
        .collect();
    files.sort();
    files
}

/// Runs every saved input of `target` through its check and fails with
/// the list of inputs that panicked. Each panic's message is printed as it
/// happens.
fn replay(target: &str) {
    let check = check_for_target(target).expect("a known fuzz target");
    let dir = Path::new(REGRESSIONS_DIR).join(target);
    let files = input_files(&dir);
    assert!(!files.is_empty(), "{} has no inputs to replay", dir.display());

    let mut failed = Vec::new();
    for path in &files {
        let data = fs::read(path).unwrap_or_else(|error| panic!("reading {} failed: {error}", path.display()));
        if panic::catch_unwind(|| check(&data)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} saved inputs fail the `{target}` check (reproduce one with \
         `cargo +nightly fuzz run {target} FILE` from probe-user/):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
}

#[test]
fn parse_regressions_pass() {
    replay("parse");
}

#[test]
fn compile_regressions_pass() {
    replay("compile");
}

#[test]
fn regression_dirs_name_fuzz_targets() {
    let entries = fs::read_dir(REGRESSIONS_DIR).expect("fuzz/regressions exists");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        assert!(
            check_for_target(&name).is_some(),
            "{} is not named after a fuzz target, so its inputs would never be replayed",
            path.display()
        );
    }
}

#[test]
fn fixed_formats_parse() {
    let env = environment();
    for (category, name, _) in FORMATS {
        let format = env.tracepoint(category, name).expect("no loader error");
        assert!(format.is_some(), "{category}:{name} is missing");
    }
}

/// The example scripts that need neither BTF nor kallsyms must compile
/// against the fixed environment, or the `compile` target would rarely get
/// past probe resolution.
#[test]
fn tracepoint_examples_compile() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let names = [
        "execsnoop.bt",
        "opensnoop.bt",
        "read_sizes.bt",
        "signals.bt",
        "syscall_counts.bt",
        "syscall_errors.bt",
    ];
    for name in names {
        let path = examples.join(name);
        let text = fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {} failed: {error}", path.display()));
        let source = Source::new(name, text.as_str());
        let result = compile::compile(&source, &environment(), &CompileOptions::default());
        if let Err(diagnostics) = result {
            panic!("{name} does not compile:\n{}", render(&diagnostics, &source));
        }
        check_compile(text.as_bytes());
    }
}

#[test]
fn fentry_without_btf_is_an_error() {
    let source = Source::new("fentry.bt", "fentry:vfs_open { printf(\"%d\\n\", pid); }");
    let diagnostics = compile::compile(&source, &environment(), &CompileOptions::default())
        .err()
        .expect("fentry needs BTF");
    let rendered = render(&diagnostics, &source);
    assert!(rendered.contains("need the kernel's BTF"), "{rendered}");
}
