//! `cargo xtask test`: the test tiers and their summary.
//!
//! 1. unit: `cargo test --lib --bins` over the workspace.
//! 2. fuzz: each cargo-fuzz target in `probe-user/fuzz/` for a bounded
//!    time, counted as one test per target (see `fuzz.rs`).
//! 3. host: every `probe-user/tests/*.rs` but the `vm*.rs` files, on the
//!    host kernel, as root.
//! 4. vm: `probe-user/tests/vm.rs` and `vm_mitigate.rs` inside QEMU on each
//!    test kernel, then `vm_mitigate.rs` once more on the 6.1 kernel booted
//!    with an LSM list without `bpf` ([`NO_BPF_LSM_ARGS`]), where the
//!    mitigation tests expect a clear error and nothing attached.
//!
//! Between the host and the VM tier, `bench-smoke` runs `cargo xtask bench
//! --smoke` once and counts as one test: it fails only when a bench case
//! does not run, never on timings, and is skipped without bpftrace.
//!
//! The counts of the tiers other than fuzz and bench-smoke come from
//! libtest's `test result:` lines.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cargo_metadata::Message;
use clap::{Args, ValueEnum};

use crate::bench;
use crate::cargo;
use crate::fuzz::{self, FuzzOutcome};
use crate::initramfs::GuestFile;
use crate::kernels::{self, Series};
use crate::paths;
use crate::setup;
use crate::vm::{self, Accel, VmConfig, VmOutcome};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Run only this tier (repeatable). All of them run by default.
    #[arg(long, value_enum)]
    tier: Vec<Tier>,

    /// Run the VM tier only on this kernel series (repeatable). Both run by
    /// default.
    #[arg(long, value_enum)]
    kernel: Vec<Series>,

    /// Seconds that one VM run of the VM tests may take before it is killed.
    #[arg(long, value_name = "SECS", default_value_t = 1200)]
    vm_timeout: u64,

    /// Seconds that the fuzz tier runs each fuzz target.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    fuzz_seconds: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Tier {
    Unit,
    Fuzz,
    Host,
    BenchSmoke,
    Vm,
}

/// Test counts from libtest's `test result:` lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} passed, {} failed", self.passed, self.failed)?;
        if self.ignored > 0 {
            write!(formatter, ", {} ignored", self.ignored)?;
        }
        Ok(())
    }
}

/// Parses a libtest summary line such as
/// `test result: FAILED. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn parse_test_result(line: &str) -> Option<Counts> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let mut counts = Counts::default();
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // The first part starts with "ok." or "FAILED." before the number.
        let [.., number, label] = words.as_slice() else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match *label {
            "passed" => counts.passed = number,
            "failed" => counts.failed = number,
            "ignored" => counts.ignored = number,
            _ => {}
        }
    }
    Some(counts)
}

/// The result of one test run: a `cargo test` invocation or one VM boot.
struct RunReport {
    name: String,
    outcome: RunOutcome,
}

enum RunOutcome {
    /// The run reported test results. `clean` is false when the runner
    /// exited unsuccessfully although no test failed.
    Finished { counts: Counts, clean: bool },
    /// The run was not attempted.
    Skipped(String),
    /// The run reported failed tests, with a message for the summary.
    Failed { counts: Counts, message: String },
    /// The run ended without reporting test results.
    Error(String),
}

/// Collects `test result:` counts from streamed output lines.
#[derive(Default)]
struct ResultCollector {
    counts: Counts,
    seen_result: bool,
}

impl ResultCollector {
    fn observe(&mut self, line: &str) {
        if let Some(counts) = parse_test_result(line) {
            self.counts.add(counts);
            self.seen_result = true;
        }
    }

    fn finish(self, success: bool, failure: impl FnOnce() -> String) -> RunOutcome {
        if self.seen_result {
            RunOutcome::Finished {
                counts: self.counts,
                clean: success,
            }
        } else if success {
            RunOutcome::Finished {
                counts: self.counts,
                clean: true,
            }
        } else {
            RunOutcome::Error(failure())
        }
    }
}

/// Runs `cargo xtask test`.
pub fn run(args: TestArgs) -> Result<ExitCode> {
    setup::run()?;
    let tiers = if args.tier.is_empty() {
        vec![
            Tier::Unit,
            Tier::Fuzz,
            Tier::Host,
            Tier::BenchSmoke,
            Tier::Vm,
        ]
    } else {
        args.tier.clone()
    };
    let series_list = if args.kernel.is_empty() {
        Series::ALL.to_vec()
    } else {
        args.kernel.clone()
    };

    let mut reports = Vec::new();
    if tiers.contains(&Tier::Unit) {
        heading("tier 1: unit tests");
        reports.push(run_unit_tests()?);
    }
    if tiers.contains(&Tier::Fuzz) {
        heading("tier 2: fuzz targets");
        reports.extend(run_fuzz_tests(args.fuzz_seconds)?);
    }
    if tiers.contains(&Tier::Host) {
        heading("tier 3: host integration tests");
        reports.push(run_host_tests()?);
    }
    if tiers.contains(&Tier::BenchSmoke) {
        heading("tier 3b: bench smoke run");
        reports.push(run_bench_smoke());
    }
    if tiers.contains(&Tier::Vm) {
        reports.extend(run_vm_tests(
            &series_list,
            Duration::from_secs(args.vm_timeout),
        )?);
    }
    Ok(print_summary(&reports))
}

fn heading(text: &str) {
    println!("\n==== {text} ====");
}

/// Runs a `cargo test` command, streaming its stdout while counting results.
fn run_cargo_test(name: &str, args: &[&str]) -> Result<RunReport> {
    let mut command = cargo::cargo();
    command.args(args).stdout(Stdio::piped());
    let description = crate::command::describe(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{description}` failed"))?;
    let mut collector = ResultCollector::default();
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    for line in stdout.lines() {
        let line = line.with_context(|| format!("reading the output of `{description}` failed"))?;
        println!("{line}");
        collector.observe(&line);
    }
    let status = child.wait()?;
    let outcome = collector.finish(status.success(), || {
        format!("`{description}` failed ({status}) before reporting test results")
    });
    Ok(RunReport {
        name: name.to_owned(),
        outcome,
    })
}

fn run_unit_tests() -> Result<RunReport> {
    // probe-ebpf is #![no_std] and #![no_main] for the BPF target, so it
    // cannot be built as a host test binary. Without --no-fail-fast, cargo
    // stops at the first crate with a failing test, and the counts would
    // miss the crates after it.
    run_cargo_test(
        "unit",
        &[
            "test",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--lib",
            "--bins",
            "--no-fail-fast",
        ],
    )
}

/// Runs every fuzz target for `seconds`, one test each: a target passes
/// when the time runs out without a crash.
fn run_fuzz_tests(seconds: u64) -> Result<Vec<RunReport>> {
    let runs = fuzz::run_all(seconds)?;
    let reports = runs
        .iter()
        .map(|run| {
            let outcome = match &run.outcome {
                FuzzOutcome::Passed => RunOutcome::Finished {
                    counts: Counts {
                        passed: 1,
                        ..Counts::default()
                    },
                    clean: true,
                },
                FuzzOutcome::Crashed { .. } => RunOutcome::Failed {
                    counts: Counts {
                        failed: 1,
                        ..Counts::default()
                    },
                    message: run.crash_message().unwrap_or_default(),
                },
                FuzzOutcome::Error(message) => RunOutcome::Error(message.clone()),
            };
            RunReport {
                name: format!("fuzz {}", run.target),
                outcome,
            }
        })
        .collect();
    Ok(reports)
}

fn integration_test_exists(name: &str) -> bool {
    paths::workspace_root()
        .join("probe-user/tests")
        .join(format!("{name}.rs"))
        .is_file()
}

/// Names of the host integration test files: every `probe-user/tests/*.rs`
/// except the `vm*.rs` files, which run inside the VM.
fn host_test_names() -> Vec<String> {
    let directory = paths::workspace_root().join("probe-user/tests");
    let mut names: Vec<String> = std::fs::read_dir(&directory)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    let path = entry.path();
                    let is_rust = path.extension().is_some_and(|e| e == "rs");
                    let stem = path.file_stem()?.to_str()?.to_owned();
                    (is_rust && !stem.starts_with("vm")).then_some(stem)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn run_host_tests() -> Result<RunReport> {
    let names = host_test_names();
    if names.is_empty() {
        return Ok(RunReport {
            name: "host".to_owned(),
            outcome: RunOutcome::Skipped("probe-user/tests has no host test files".to_owned()),
        });
    }
    // The host tests run probe-test-helper, which `cargo test -p probe-user`
    // does not build.
    if let Err(error) = cargo::build_binaries() {
        return Ok(RunReport {
            name: "host".to_owned(),
            outcome: RunOutcome::Error(format!("{error:#}")),
        });
    }
    let mut args: Vec<&str> = vec!["test", "-p", "probe-user", "--no-fail-fast"];
    for name in &names {
        args.push("--test");
        args.push(name);
    }
    args.extend(["--", "--test-threads=1"]);
    run_cargo_test("host", &args)
}

/// Runs `cargo xtask bench --smoke`, counted as one test.
fn run_bench_smoke() -> RunReport {
    let outcome = match bench::run_smoke() {
        Ok(Some(reason)) => RunOutcome::Skipped(reason),
        Ok(None) => RunOutcome::Finished {
            counts: Counts {
                passed: 1,
                ..Counts::default()
            },
            clean: true,
        },
        Err(error) => {
            let message = format!("{error:#}");
            eprintln!("error: {message}");
            RunOutcome::Failed {
                counts: Counts {
                    failed: 1,
                    ..Counts::default()
                },
                message,
            }
        }
    };
    RunReport {
        name: "bench-smoke".to_owned(),
        outcome,
    }
}

/// The VM test targets, each with the path of its binary in the guest.
const VM_TEST_TARGETS: [(&str, &str); 3] = [
    ("vm", "/usr/bin/vm-tests"),
    ("vm_mitigate", "/usr/bin/vm-mitigate-tests"),
    ("vm_session", "/usr/bin/vm-session-tests"),
];

/// The kernel command line of the boot without the BPF LSM: Debian's LSM
/// list for Linux 6.1 without `bpf`.
const NO_BPF_LSM_ARGS: &str = "lsm=landlock,lockdown,yama,loadpin,safesetid,integrity,apparmor";

/// Builds a VM test binary and returns its path.
fn build_vm_test_binary(target: &str) -> Result<PathBuf> {
    let mut command = cargo::cargo();
    command
        .args([
            "test",
            "-p",
            "probe-user",
            "--test",
            target,
            "--no-run",
            "--message-format=json",
        ])
        .stdout(Stdio::piped());
    let description = crate::command::describe(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{description}` failed"))?;
    let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut executable = None;
    for message in Message::parse_stream(stdout) {
        let message =
            message.with_context(|| format!("reading the output of `{description}` failed"))?;
        if let Message::CompilerArtifact(artifact) = message
            && artifact.target.name == target
            && artifact.profile.test
        {
            executable = artifact.executable.map(PathBuf::from);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{description}` failed ({status})");
    }
    executable
        .with_context(|| format!("`{description}` reported no executable for the `{target}` test target"))
}

fn run_vm_tests(series_list: &[Series], timeout: Duration) -> Result<Vec<RunReport>> {
    let mut names: Vec<String> = series_list
        .iter()
        .map(|series| format!("vm {series}"))
        .collect();
    if series_list.contains(&Series::Linux6_1) {
        names.push(format!("vm {} without BPF LSM", Series::Linux6_1));
    }
    let missing: Vec<&str> = VM_TEST_TARGETS
        .iter()
        .map(|(target, _)| *target)
        .filter(|target| !integration_test_exists(target))
        .collect();
    if !missing.is_empty() {
        let reason = format!("probe-user/tests has no {}", missing.join(".rs, no ") + ".rs");
        return Ok(names
            .into_iter()
            .map(|name| RunReport {
                name,
                outcome: RunOutcome::Skipped(reason.clone()),
            })
            .collect());
    }

    heading("tier 4: building the VM tests");
    let built = cargo::build_binaries().and_then(|()| {
        VM_TEST_TARGETS
            .iter()
            .map(|(target, guest)| {
                Ok(GuestFile {
                    host: build_vm_test_binary(target)?,
                    guest: PathBuf::from(guest),
                })
            })
            .collect::<Result<Vec<GuestFile>>>()
    });
    let test_binaries = match built {
        Ok(test_binaries) => test_binaries,
        Err(error) => {
            let message = format!("{error:#}");
            eprintln!("error: {message}");
            return Ok(names
                .into_iter()
                .map(|name| RunReport {
                    name,
                    outcome: RunOutcome::Error(message.clone()),
                })
                .collect());
        }
    };

    let mut files = vm::vm_binaries(true)?;
    files.extend(test_binaries);
    files.push(GuestFile {
        host: paths::workspace_root().join("examples"),
        guest: PathBuf::from("/examples"),
    });
    let mut env = vec![
        ("PROBE_BIN_DIR".to_owned(), "/usr/bin".to_owned()),
        ("PROBE_EXAMPLES_DIR".to_owned(), "/examples".to_owned()),
        (
            "PROBE_EXPECT_KERNEL_FEATURES".to_owned(),
            "kprobe,fentry,lsm".to_owned(),
        ),
    ];
    // The binaries run in one boot; the exit status is non-zero when any
    // failed, and each prints its own `test result:` line.
    let all_binaries = [
        "sh".to_owned(),
        "-c".to_owned(),
        "status=0; for tests in vm-tests vm-mitigate-tests vm-session-tests; do \
         $tests --test-threads=1 || status=$?; done; exit $status"
            .to_owned(),
    ];

    let mut reports = Vec::new();
    for (&series, name) in series_list.iter().zip(names.iter().cloned()) {
        let kernel = kernels::installed(series)?;
        heading(&format!(
            "tier 4: VM integration tests on {} ({})",
            series, kernel.package
        ));
        reports.push(run_vm_boot(&kernel, None, &env, &files, &all_binaries, timeout, name)?);
    }

    if series_list.contains(&Series::Linux6_1) {
        let kernel = kernels::installed(Series::Linux6_1)?;
        heading(&format!(
            "tier 4: mitigation tests on {} booted with `{NO_BPF_LSM_ARGS}`",
            kernel.package
        ));
        env.retain(|(key, _)| key != "PROBE_EXPECT_KERNEL_FEATURES");
        env.push(("PROBE_EXPECT_KERNEL_FEATURES".to_owned(), "kprobe,fentry".to_owned()));
        env.push(("PROBE_EXPECT_NO_BPF_LSM".to_owned(), "1".to_owned()));
        let command = ["vm-mitigate-tests".to_owned(), "--test-threads=1".to_owned()];
        let name = format!("vm {} without BPF LSM", Series::Linux6_1);
        reports.push(run_vm_boot(&kernel, Some(NO_BPF_LSM_ARGS), &env, &files, &command, timeout, name)?);
    }
    Ok(reports)
}

/// Boots one kernel, runs `command` and collects its test results.
fn run_vm_boot(
    kernel: &kernels::InstalledKernel,
    append: Option<&str>,
    env: &[(String, String)],
    files: &[GuestFile],
    command: &[String],
    timeout: Duration,
    name: String,
) -> Result<RunReport> {
    let config = VmConfig {
        kernel,
        append,
        timeout,
        env,
        files,
        command,
        accel: Accel::Auto,
        show_qemu_stderr: true,
    };
    let mut collector = ResultCollector::default();
    let outcome = vm::run(&config, &mut |line| {
        println!("{line}");
        collector.observe(line);
    })?;
    let outcome = match outcome {
        VmOutcome::Exited(status) => collector.finish(status == 0, || {
            format!("the VM tests exited with status {status} before reporting test results")
        }),
        VmOutcome::Failed {
            timed_out: true,
            message,
        } => RunOutcome::Error(format!(
            "{message} (raise --vm-timeout if the tests need longer)"
        )),
        VmOutcome::Failed { message, .. } => RunOutcome::Error(message),
    };
    Ok(RunReport { name, outcome })
}

/// Prints one line per run and the totals, and returns the exit status:
/// failure if any test failed or any run ended without results.
fn print_summary(reports: &[RunReport]) -> ExitCode {
    heading("summary");
    let mut total = Counts::default();
    let mut all_clean = true;
    let width = reports
        .iter()
        .map(|report| report.name.len())
        .max()
        .unwrap_or(0);
    for report in reports {
        let text = match &report.outcome {
            RunOutcome::Finished { counts, clean } => {
                total.add(*counts);
                all_clean &= *clean && counts.failed == 0;
                if *clean || counts.failed > 0 {
                    counts.to_string()
                } else {
                    format!("{counts}, but the test runner exited unsuccessfully")
                }
            }
            RunOutcome::Failed { counts, message } => {
                total.add(*counts);
                all_clean = false;
                format!("{counts}: {message}")
            }
            RunOutcome::Skipped(reason) => format!("skipped: {reason}"),
            RunOutcome::Error(message) => {
                all_clean = false;
                format!("error: {message}")
            }
        };
        println!("{:width$}  {text}", report.name);
    }
    println!("{total}");
    if all_clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ok_result() {
        let line = "test result: ok. 12 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.03s";
        assert_eq!(
            parse_test_result(line),
            Some(Counts {
                passed: 12,
                failed: 0,
                ignored: 2
            })
        );
    }

    #[test]
    fn parse_failed_result() {
        let line = "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s";
        assert_eq!(
            parse_test_result(line),
            Some(Counts {
                passed: 3,
                failed: 1,
                ignored: 0
            })
        );
    }

    #[test]
    fn parse_ignores_other_lines() {
        assert_eq!(parse_test_result("running 3 tests"), None);
        assert_eq!(parse_test_result("test lexer::numbers ... ok"), None);
    }

    #[test]
    fn collector_without_results_is_error_on_failure() {
        let collector = ResultCollector::default();
        assert!(
            matches!(collector.finish(false, || "boom".to_owned()), RunOutcome::Error(message) if message == "boom")
        );
    }

    #[test]
    fn collector_sums_several_binaries() {
        let mut collector = ResultCollector::default();
        collector.observe("test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        collector.observe("test result: FAILED. 1 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        let RunOutcome::Finished { counts, clean } = collector.finish(false, String::new) else {
            panic!("expected finished results");
        };
        assert_eq!(
            counts,
            Counts {
                passed: 3,
                failed: 1,
                ignored: 1
            }
        );
        assert!(!clean);
    }
}
