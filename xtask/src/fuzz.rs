//! The fuzz tier of `cargo xtask test`: builds the cargo-fuzz targets in
//! `probe-user/fuzz/`, runs each for a bounded time, and keeps every input
//! that crashes one as a regression test.
//!
//! A target reads three corpus directories: its working corpus in
//! `fuzz/corpus/TARGET` (not committed, and the only one that libFuzzer
//! writes to), the committed seed scripts in `fuzz/seeds/TARGET`, and the
//! saved crashes in `fuzz/regressions/TARGET`. A new crash is copied into
//! `fuzz/regressions/TARGET`, where the probe-user unit test
//! `script::fuzzing::tests` replays it on every `cargo test`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::command;
use crate::paths;

/// Maximum time that one input may run before libFuzzer reports a
/// timeout, in seconds. The slowest inputs measured, kprobes on unknown
/// functions, take about a second each in the instrumented build on a
/// 2-core x86_64 machine, because they read and search `/proc/kallsyms`.
const INPUT_TIMEOUT_SECS: u64 = 20;

/// Maximum number of lines of the fuzzer's log to print when a run fails.
const LOG_EXCERPT_LINES: usize = 150;

/// The outcome of one fuzz target's run.
pub enum FuzzOutcome {
    /// The time ran out without a crash.
    Passed,
    /// libFuzzer saved a crashing input, now copied to `saved`.
    Crashed {
        /// The failure, such as "crashed" or "timed out".
        problem: &'static str,
        saved: PathBuf,
    },
    /// The target could not be built or run.
    Error(String),
}

/// The result of fuzzing one target.
pub struct FuzzRun {
    pub target: String,
    pub outcome: FuzzOutcome,
}

impl FuzzRun {
    /// Returns the failure message for the summary: the saved input and the
    /// command that reproduces the crash.
    pub fn crash_message(&self) -> Option<String> {
        let FuzzOutcome::Crashed { problem, saved } = &self.outcome else {
            return None;
        };
        let relative = saved.strip_prefix(probe_user_dir()).unwrap_or(saved);
        Some(format!(
            "fuzz target `{}` {problem}; the input is saved as probe-user/{}, reproduce with \
             `cd probe-user && cargo +nightly fuzz run {} {}`",
            self.target,
            relative.display(),
            self.target,
            relative.display()
        ))
    }
}

fn probe_user_dir() -> PathBuf {
    paths::workspace_root().join("probe-user")
}

fn fuzz_dir() -> PathBuf {
    probe_user_dir().join("fuzz")
}

/// Returns `cargo +nightly fuzz`, run in `probe-user/`. cargo-fuzz needs
/// the nightly toolchain for the sanitizer and coverage flags.
fn cargo_fuzz() -> Command {
    let mut command = Command::new("cargo");
    command
        .args(["+nightly", "fuzz"])
        .current_dir(probe_user_dir());
    command
}

/// Returns the names of the fuzz targets: the files in
/// `probe-user/fuzz/fuzz_targets/`, sorted.
pub fn target_names() -> Result<Vec<String>> {
    let directory = fuzz_dir().join("fuzz_targets");
    let entries = fs::read_dir(&directory)
        .with_context(|| format!("reading {} failed", directory.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {} failed", directory.display()))?
            .path();
        if path.extension().is_some_and(|extension| extension == "rs")
            && let Some(stem) = path.file_stem()
        {
            names.push(stem.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Builds every fuzz target, then fuzzes each for `seconds`.
pub fn run_all(seconds: u64) -> Result<Vec<FuzzRun>> {
    let targets = target_names()?;

    println!("building the fuzz targets (several minutes the first time) ...");
    let start = Instant::now();
    if let Err(error) = command::run(cargo_fuzz().arg("build")) {
        let message = format!("building the fuzz targets failed: {error:#}");
        eprintln!("error: {message}");
        return Ok(targets
            .into_iter()
            .map(|target| FuzzRun {
                target,
                outcome: FuzzOutcome::Error(message.clone()),
            })
            .collect());
    }
    println!("built the fuzz targets in {:.0?}", start.elapsed());

    let mut runs = Vec::new();
    for target in targets {
        let outcome = run_target(&target, seconds)?;
        let run = FuzzRun { target, outcome };
        if let Some(message) = run.crash_message() {
            eprintln!("error: {message}");
        }
        runs.push(run);
    }
    Ok(runs)
}

/// Fuzzes one target for `seconds`, writing libFuzzer's output to a log
/// file under the target directory, and saves a crashing input.
fn run_target(target: &str, seconds: u64) -> Result<FuzzOutcome> {
    let corpus = fuzz_dir().join("corpus").join(target);
    fs::create_dir_all(&corpus).with_context(|| format!("creating {} failed", corpus.display()))?;
    let read_only: Vec<PathBuf> = ["seeds", "regressions"]
        .iter()
        .map(|kind| fuzz_dir().join(kind).join(target))
        .filter(|directory| directory.is_dir())
        .collect();

    let log_dir = paths::target_dir().join("fuzz");
    fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating {} failed", log_dir.display()))?;
    let log_path = log_dir.join(format!("{target}.log"));
    let log = File::create(&log_path)
        .with_context(|| format!("creating {} failed", log_path.display()))?;
    let log_copy = log
        .try_clone()
        .with_context(|| format!("duplicating the handle of {} failed", log_path.display()))?;

    // The first corpus directory is where libFuzzer saves new inputs.
    let mut fuzz = cargo_fuzz();
    fuzz.args(["run", target])
        .arg(&corpus)
        .args(&read_only)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_copy);
    let description = command::describe(&fuzz);
    println!(
        "fuzzing `{target}` for {seconds} s, output in {} ...",
        log_path.display()
    );
    let status = fuzz
        .status()
        .with_context(|| format!("starting `{description}` failed"))?;

    let output =
        fs::read(&log_path).with_context(|| format!("reading {} failed", log_path.display()))?;
    let output = String::from_utf8_lossy(&output);
    for line in output.lines().filter(|line| is_final_stats(line)) {
        println!("{line}");
    }
    if status.success() {
        return Ok(FuzzOutcome::Passed);
    }

    println!("from {}:", log_path.display());
    println!("{}", failure_excerpt(&output));
    let Some((problem, artifact)) = saved_artifact(&output) else {
        return Ok(FuzzOutcome::Error(format!(
            "`{description}` failed ({status}) without saving a crashing input; see {}",
            log_path.display()
        )));
    };
    let artifact = probe_user_dir().join(artifact);
    let saved = save_regression(target, &artifact)?;

    // The saved file is lost with the checkout when CI finds the crash, so
    // the input also goes to the test log, as a Rust byte string literal.
    let data = fs::read(&saved).with_context(|| format!("reading {} failed", saved.display()))?;
    println!("the input: b\"{}\"", data.escape_ascii());
    Ok(FuzzOutcome::Crashed { problem, saved })
}

/// Tells whether `line` is one of libFuzzer's closing statistics lines,
/// such as `#4996 DONE cov: 6866 ...` (a tab after the run count) or
/// `Done 4996 runs in 21 second(s)`.
fn is_final_stats(line: &str) -> bool {
    line.starts_with("Done ") || (line.starts_with('#') && line.contains("DONE"))
}

/// Returns the part of the fuzzer's log that explains a failure: the
/// lines from the first panic or sanitizer report on, or the last lines
/// when there is no such report, at most [`LOG_EXCERPT_LINES`] either way.
fn failure_excerpt(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    // libFuzzer and the sanitizers start their reports with `==PID==`, as
    // in `==123== ERROR: libFuzzer: deadly signal`.
    let start = lines
        .iter()
        .position(|line| {
            line.contains("panicked at") || (line.starts_with("==") && line.contains("ERROR: "))
        })
        .unwrap_or(lines.len().saturating_sub(LOG_EXCERPT_LINES));
    let end = lines.len().min(start + LOG_EXCERPT_LINES);
    lines[start..end].join("\n")
}

/// Finds the input that libFuzzer saved for a failure, from its
/// `Test unit written to PATH` line, with the failure's description. Slow
/// inputs (`slow-unit-*`) are saved the same way but are no failure.
fn saved_artifact(output: &str) -> Option<(&'static str, PathBuf)> {
    const MARKER: &str = "Test unit written to ";
    const PROBLEMS: [(&str, &str); 4] = [
        ("crash-", "crashed"),
        ("oom-", "ran out of memory"),
        ("timeout-", "timed out"),
        ("leak-", "leaked memory"),
    ];
    output.lines().find_map(|line| {
        let (_, path) = line.split_once(MARKER)?;
        let path = PathBuf::from(path.trim());
        let name = path.file_name()?.to_string_lossy().into_owned();
        let (_, problem) = PROBLEMS
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))?;
        Some((*problem, path))
    })
}

/// Copies `artifact` into `fuzz/regressions/TARGET/` and returns its new
/// path, or returns the path of a saved input with the same content.
fn save_regression(target: &str, artifact: &Path) -> Result<PathBuf> {
    let data =
        fs::read(artifact).with_context(|| format!("reading {} failed", artifact.display()))?;
    let directory = fuzz_dir().join("regressions").join(target);
    fs::create_dir_all(&directory)
        .with_context(|| format!("creating {} failed", directory.display()))?;

    let entries = fs::read_dir(&directory)
        .with_context(|| format!("reading {} failed", directory.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() && fs::read(&path).is_ok_and(|existing| existing == data) {
            return Ok(path);
        }
    }

    let name = artifact
        .file_name()
        .with_context(|| format!("{} has no file name", artifact.display()))?;
    let saved = directory.join(name);
    fs::write(&saved, &data).with_context(|| format!("writing {} failed", saved.display()))?;
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_artifact_finds_crash() {
        let output = "==123== ERROR: libFuzzer: deadly signal\n\
                      artifact_prefix='/w/fuzz/artifacts/compile/'; Test unit written to /w/fuzz/artifacts/compile/crash-0a1b\n\
                      Base64: YQ==\n";
        let (problem, path) = saved_artifact(output).expect("an artifact");
        assert_eq!(problem, "crashed");
        assert_eq!(path, PathBuf::from("/w/fuzz/artifacts/compile/crash-0a1b"));
    }

    #[test]
    fn saved_artifact_ignores_slow_units() {
        let output = "Slowest unit: 11 s:\n\
                      artifact_prefix='a/'; Test unit written to a/slow-unit-0a1b\n";
        assert!(saved_artifact(output).is_none());
    }

    #[test]
    fn saved_artifact_names_timeouts() {
        let output = "artifact_prefix='a/'; Test unit written to a/timeout-99\n";
        let (problem, _) = saved_artifact(output).expect("an artifact");
        assert_eq!(problem, "timed out");
    }

    #[test]
    fn final_stats_lines() {
        assert!(is_final_stats(
            "#4996\tDONE   cov: 6866 ft: 16953 corp: 626/141Kb exec/s: 237"
        ));
        assert!(is_final_stats("Done 4996 runs in 21 second(s)"));
        assert!(!is_final_stats("#4096\tpulse  cov: 6817 ft: 16796"));
        assert!(!is_final_stats("#12\tNEW    cov: 5198 ft: 10334"));
    }

    #[test]
    fn failure_excerpt_starts_at_panic() {
        let output = "Compiling probe-user\n\
                      #12\tNEW cov: 5\n\
                      thread '<unnamed>' panicked at src/script/ir.rs:10:5:\n\
                      index out of bounds\n\
                      ==99== ERROR: libFuzzer: deadly signal\n";
        let excerpt = failure_excerpt(output);
        assert!(
            excerpt.starts_with("thread '<unnamed>' panicked at"),
            "{excerpt}"
        );
        assert!(excerpt.ends_with("deadly signal"), "{excerpt}");
    }

    #[test]
    fn failure_excerpt_starts_at_sanitizer_report() {
        let output = "#12\tNEW cov: 5\n==99==ERROR: AddressSanitizer: stack-overflow\n";
        assert_eq!(
            failure_excerpt(output),
            "==99==ERROR: AddressSanitizer: stack-overflow"
        );
    }

    #[test]
    fn failure_excerpt_without_report_is_tail() {
        let lines: Vec<String> = (0..LOG_EXCERPT_LINES + 10)
            .map(|i| format!("line {i}"))
            .collect();
        let excerpt = failure_excerpt(&lines.join("\n"));
        assert_eq!(excerpt.lines().count(), LOG_EXCERPT_LINES);
        assert!(excerpt.starts_with("line 10\n"), "{excerpt}");
    }
}
