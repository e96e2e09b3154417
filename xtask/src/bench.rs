//! `cargo xtask bench`: our `probe run` against bpftrace on the host kernel.
//!
//! Each case runs both tools in turn for the same number of runs, after one
//! warm-up run of each, and alternates which tool goes first. A figure is
//! reported as median, min and max over the runs, and the ratio
//! ours/bpftrace is taken per pair of runs (run i of ours against run i of
//! bpftrace) before its median, min and max are taken.
//!
//! The tools' standard output goes to a pipe that this process reads and
//! discards, because bpftrace writes "Attaching N probes..." and
//! "Lost N events" to its output, and `-o /dev/null` would hide them.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::cargo;
use crate::command;
use crate::kernels::{self, Series};
use crate::paths;
use crate::vm::{self, Accel, VmConfig, VmOutcome};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Measured runs of each case per tool, after one warm-up run each.
    #[arg(long, value_name = "N", default_value_t = 7)]
    runs: usize,

    /// Run each case once with no warm-up and fewer syscalls, and check
    /// only that every case runs and produces figures. Timings are never
    /// checked.
    #[arg(long)]
    smoke: bool,

    /// Write the figures, the machine, the tool versions and the commands
    /// as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// The reference tool, installed by `cargo xtask setup`.
pub const BPFTRACE: &str = "/usr/bin/bpftrace";

/// Time a tool may take to attach, or to exit after SIGINT, before the
/// case fails.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Wait after the "Attaching" line before the measured loop starts, because
/// bpftrace 0.17 prints that line before it attaches the probes.
const ATTACH_SETTLE: Duration = Duration::from_millis(200);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tool {
    Ours,
    Bpftrace,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Ours => "ours",
            Tool::Bpftrace => "bpftrace",
        }
    }
}

/// Settings that differ between the full bench and the smoke run.
struct Plan {
    runs: usize,
    warm_up: bool,
    /// getppid calls in each per-event loop.
    per_event_calls: u64,
    /// getppid calls the throughput producer makes.
    throughput_calls: u64,
}

impl Plan {
    fn new(args: &BenchArgs) -> Plan {
        if args.smoke {
            Plan {
                runs: 1,
                warm_up: false,
                per_event_calls: 10_000,
                throughput_calls: 10_000,
            }
        } else {
            Plan {
                runs: args.runs.max(1),
                warm_up: true,
                per_event_calls: 1_000_000,
                throughput_calls: 500_000,
            }
        }
    }
}

/// One row of the table: a figure measured for both tools.
struct Row {
    case: String,
    metric: String,
    unit: String,
    ours: Vec<f64>,
    bpftrace: Vec<f64>,
    /// The reason the row has no figures, when it was not run.
    not_run: Option<String>,
    /// Set for rows that only this tool can be measured on.
    ours_only: bool,
}

impl Row {
    fn new(case: &str, metric: &str, unit: &str) -> Row {
        Row {
            case: case.to_owned(),
            metric: metric.to_owned(),
            unit: unit.to_owned(),
            ours: Vec::new(),
            bpftrace: Vec::new(),
            not_run: None,
            ours_only: false,
        }
    }

    fn push(&mut self, tool: Tool, value: f64) {
        match tool {
            Tool::Ours => self.ours.push(value),
            Tool::Bpftrace => self.bpftrace.push(value),
        }
    }

    /// Ratios ours/bpftrace of the runs with the same index.
    fn ratios(&self) -> Vec<f64> {
        self.ours
            .iter()
            .zip(&self.bpftrace)
            .filter(|(_, theirs)| **theirs != 0.0)
            .map(|(ours, theirs)| ours / theirs)
            .collect()
    }
}

/// Median, min and max of a non-empty set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(samples: &[f64]) -> Option<Spread> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    let median = if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    };
    Some(Spread {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
    })
}

/// Everything the bench measured, with the context to reproduce it.
struct Report {
    rows: Vec<Row>,
    /// Case name and the exact command line each tool ran for it.
    commands: Vec<(String, String)>,
    machine: Value,
}

impl Report {
    fn record_command(&mut self, case: &str, command: &Command) {
        let line = command::describe(command);
        if !self.commands.iter().any(|(_, known)| *known == line) {
            self.commands.push((case.to_owned(), line));
        }
    }
}

/// Runs `cargo xtask bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    let report = run_cases(&args)?;
    print_table(&report);
    if let Some(path) = &args.json {
        write_json(&report, &args, path)?;
        println!("wrote {}", path.display());
    }
    if args.smoke {
        check_smoke(&report)?;
        println!("bench smoke run: every case ran and produced figures");
    }
    Ok(())
}

/// Runs the smoke bench for `cargo xtask test`. Returns the reason when it
/// cannot run at all (no bpftrace), and fails when a case does not run.
pub fn run_smoke() -> Result<Option<String>> {
    if !Path::new(BPFTRACE).is_file() {
        return Ok(Some(format!(
            "{BPFTRACE} not found (run `cargo xtask setup`)"
        )));
    }
    run(BenchArgs {
        runs: 1,
        smoke: true,
        json: None,
    })?;
    Ok(None)
}

fn run_cases(args: &BenchArgs) -> Result<Report> {
    if !Path::new(BPFTRACE).is_file() {
        bail!("{BPFTRACE} not found: run `cargo xtask setup` to install bpftrace");
    }
    let plan = Plan::new(args);
    println!("building probe-user (release) ...");
    command::run(cargo::cargo().args(["build", "--release", "-p", "probe-user"]))
        .context("building probe-user (release) failed")?;
    let ours = paths::target_dir().join("release/probe");
    let work_dir = paths::target_dir().join("bench");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {} failed", work_dir.display()))?;

    let tools = Tools { ours: ours.clone() };
    let mut report = Report {
        rows: Vec::new(),
        commands: Vec::new(),
        machine: describe_machine(&ours)?,
    };

    println!("case 1: start-up");
    bench_start_up(&tools, &plan, &mut report)?;
    println!("case 2: per-event cost");
    bench_per_event(&tools, &plan, &mut report)?;
    println!("case 3: throughput");
    bench_throughput(&tools, &plan, &mut report)?;
    println!("case 4: size");
    bench_size(&tools, &mut report)?;
    println!("case 5: compile time");
    bench_compile(&tools, &plan, &work_dir, &mut report)?;

    println!("case 6: wide attach (in the VM)");
    bench_wide_attach(&plan, &mut report)?;
    Ok(report)
}

/// Globs that together match about 1,000 traceable functions on the
/// Debian 6.1 and 6.12 cloud kernels.
const WIDE_ATTACH_SCRIPT: &str =
    "kprobe:__x64_sys_*, kprobe:do_*, kprobe:blk_*, kprobe:vfs_* { @ = count(); } interval:ms:200 { exit(); }";

/// Case 6: time to attach and to detach about 1,000 kernel functions
/// matched by globs, in the VM on each kernel series: 6.12 attaches them
/// with one kprobe.multi link per glob, 6.1 (no fprobe) with one program
/// per function. The figures come from `probe run -v`, which times both
/// steps. bpftrace is not measured here: the VM image carries only our
/// binaries, and bpftrace with its LLVM and clang libraries is about
/// 140 MB. The VM runs under TCG emulation and the debug build, so the
/// figures show the shape (seconds, not minutes), not native speed.
fn bench_wide_attach(plan: &Plan, report: &mut Report) -> Result<()> {
    cargo::build_binaries()?;
    let files = vm::vm_binaries(true)?;
    for series in [Series::Linux6_12, Series::Linux6_1] {
        let kernel = kernels::installed(series)?;
        let case = format!("6. wide attach, Linux {series}");
        let mut functions = Row::new(&case, "functions attached", "count");
        let mut attach = Row::new(&case, "attach", "s");
        let mut detach = Row::new(&case, "detach", "s");
        for row in [&mut functions, &mut attach, &mut detach] {
            row.ours_only = true;
        }
        let command = [
            "probe".to_owned(),
            "run".to_owned(),
            "-v".to_owned(),
            "-e".to_owned(),
            WIDE_ATTACH_SCRIPT.to_owned(),
        ];
        report.commands.push((case.clone(), format!("cargo xtask vm --kernel {series} -- {}", command.iter().map(|a| command::shell_quote(a)).collect::<Vec<_>>().join(" "))));
        for _ in 0..plan.runs {
            let mut lines = Vec::new();
            let config = VmConfig {
                kernel: &kernel,
                append: None,
                timeout: Duration::from_secs(900),
                env: &[],
                files: &files,
                command: &command,
                accel: Accel::Auto,
                show_qemu_stderr: false,
            };
            let outcome = vm::run(&config, &mut |line| lines.push(line.to_owned()))?;
            if outcome != VmOutcome::Exited(0) {
                bail!("{case}: the VM run ended with {outcome:?}; output:\n{}", lines.join("\n"));
            }
            let (count, attach_ms) = lines
                .iter()
                .find_map(|line| parse_timing(line, "attached "))
                .with_context(|| format!("{case}: no \"attached N programs in T ms\" line in:\n{}", lines.join("\n")))?;
            let (_, detach_ms) = lines
                .iter()
                .find_map(|line| parse_timing(line, "detached "))
                .with_context(|| format!("{case}: no \"detached N programs in T ms\" line"))?;
            // `attached 4 programs in 812 ms (1012 kernel functions)`
            let attached_functions = lines
                .iter()
                .filter(|line| line.contains(" kernel function"))
                .find_map(|line| line.rsplit_once('(')?.1.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(count);
            functions.push(Tool::Ours, attached_functions);
            attach.push(Tool::Ours, attach_ms / 1000.0);
            detach.push(Tool::Ours, detach_ms / 1000.0);
        }
        report.rows.extend([functions, attach, detach]);
    }
    Ok(())
}

/// Parses `... attached 1000 programs in 812 ms` (after `word`) into the
/// count and the milliseconds.
fn parse_timing(line: &str, word: &str) -> Option<(f64, f64)> {
    let (_, rest) = line.split_once(word)?;
    let mut words = rest.split_whitespace();
    let count = words.next()?.parse().ok()?;
    if !matches!(words.next()?, "programs" | "program") || words.next()? != "in" {
        return None;
    }
    let ms = words.next()?.parse().ok()?;
    // The progress line "attached N programs in 17.1 s" is not the timing.
    (words.next()? == "ms").then_some((count, ms))
}

/// The two binaries under test.
struct Tools {
    ours: PathBuf,
}

impl Tools {
    /// Returns the command that runs `script` with `tool`, with `extra`
    /// options before the script.
    fn command(&self, tool: Tool, extra: &[&str], script: &str) -> Command {
        let mut command = match tool {
            Tool::Ours => {
                let mut command = Command::new(&self.ours);
                command.arg("run");
                command
            }
            Tool::Bpftrace => Command::new(BPFTRACE),
        };
        command.args(extra).args(["-e", script]);
        command
    }
}

/// Returns the order of the two tools in run `index`, alternated so that neither
/// always runs on a machine the other has just warmed.
fn tool_order(index: usize) -> [Tool; 2] {
    if index.is_multiple_of(2) {
        [Tool::Ours, Tool::Bpftrace]
    } else {
        [Tool::Bpftrace, Tool::Ours]
    }
}

/// Run indices to execute: `None` is the warm-up, whose figures are dropped.
fn run_indices(plan: &Plan) -> Vec<Option<usize>> {
    let warm_up = plan.warm_up.then_some(None);
    warm_up
        .into_iter()
        .chain((0..plan.runs).map(Some))
        .collect()
}

/// Resource use of a child that has exited, from wait4.
struct Finished {
    status: i32,
    wall: Duration,
    cpu: Duration,
    max_rss_kib: i64,
}

impl Finished {
    fn success(&self) -> bool {
        libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0
    }

    fn describe_status(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exited with status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("was killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("ended with wait status {:#x}", self.status)
        }
    }
}

fn timeval(value: libc::timeval) -> Duration {
    Duration::from_secs(value.tv_sec as u64) + Duration::from_micros(value.tv_usec as u64)
}

/// Waits for `child` with wait4, polling every 100 µs so that a hung tool
/// is killed after `timeout`. `started` is when the child was spawned.
/// After this returns, the child is reaped, so `Child::wait` must not be
/// called on it.
fn wait_with_rusage(child: &mut Child, started: Instant, timeout: Duration) -> Result<Finished> {
    let pid = child.id() as libc::pid_t;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pid is our own unreaped child; the pointers are valid.
        let result = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if result == pid {
            return Ok(Finished {
                status,
                wall: started.elapsed(),
                cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
                max_rss_kib: usage.ru_maxrss,
            });
        }
        if result < 0 {
            let error = std::io::Error::last_os_error();
            bail!("wait4 on process {pid} failed: {error}");
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            bail!(
                "process {pid} did not exit within {} s and was killed",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// A message from a thread that reads a tool's output.
enum Signal {
    Attached,
    Event,
}

/// Counts and status lines that a reader thread collected from one
/// output stream.
#[derive(Default)]
struct StreamSummary {
    /// Lines that are neither status lines nor map output: the printf
    /// lines of the scripts this bench runs.
    events: u64,
    /// When the last event line was read.
    last_event: Option<Instant>,
    /// Sum of the lost-record counts that the tool reported.
    lost: u64,
    /// Status lines, kept for error messages (at most 50).
    status_lines: Vec<String>,
}

/// Parses a lost-record line: bpftrace 0.17 prints `Lost N events` (several
/// times during a run), we print `N output records were lost because ...`
/// once at exit.
fn parse_lost(line: &str) -> Option<u64> {
    if let Some(rest) = line.strip_prefix("Lost ") {
        return rest.strip_suffix(" events")?.parse().ok();
    }
    if line.contains(" lost because ") && line.contains(" output record") {
        return line.split_whitespace().next()?.parse().ok();
    }
    None
}

/// Returns whether `line` is a status line, a map printed at exit, or a warning,
/// not the output of a printf the bench expects.
fn is_status_line(line: &str) -> bool {
    line.is_empty()
        || line.starts_with("Attaching ")
        || line.starts_with('@')
        || line.starts_with('[')
        || line.starts_with("ERROR")
        || line.starts_with("WARNING")
        || line.starts_with("error")
        || line.starts_with("warning")
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    signals: Sender<Signal>,
    count_events: bool,
) -> JoinHandle<StreamSummary> {
    thread::spawn(move || {
        let mut summary = StreamSummary::default();
        let mut reader = BufReader::with_capacity(1 << 16, stream);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buffer);
            let line = line.trim_end();
            if line.starts_with("Attaching ") {
                let _ = signals.send(Signal::Attached);
            }
            if let Some(lost) = parse_lost(line) {
                summary.lost += lost;
            } else if count_events && !is_status_line(line) {
                summary.events += 1;
                summary.last_event = Some(Instant::now());
                if summary.events == 1 {
                    let _ = signals.send(Signal::Event);
                }
            } else if summary.status_lines.len() < 50 {
                summary.status_lines.push(line.to_owned());
            }
        }
        summary
    })
}

/// A tool running a script, with threads that read both output streams.
struct Session {
    child: Child,
    started: Instant,
    signals: Receiver<Signal>,
    stdout: JoinHandle<StreamSummary>,
    stderr: JoinHandle<StreamSummary>,
    description: String,
}

/// The end of a session: resource use and both streams' summaries.
struct SessionEnd {
    finished: Finished,
    stdout: StreamSummary,
    stderr: StreamSummary,
}

impl SessionEnd {
    fn lost(&self) -> u64 {
        self.stdout.lost + self.stderr.lost
    }

    fn status_text(&self) -> String {
        let mut lines = self.stdout.status_lines.clone();
        lines.extend(self.stderr.status_lines.iter().cloned());
        lines.join("\n")
    }
}

impl Session {
    fn start(command: &mut Command) -> Result<Session> {
        let description = command::describe(command);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting `{description}` failed"))?;
        let (sender, signals) = mpsc::channel();
        let stdout = spawn_reader(
            child.stdout.take().expect("stdout is piped"),
            sender.clone(),
            true,
        );
        let stderr = spawn_reader(child.stderr.take().expect("stderr is piped"), sender, false);
        Ok(Session {
            child,
            started,
            signals,
            stdout,
            stderr,
            description,
        })
    }

    /// Waits for the "Attaching" line, then for [`ATTACH_SETTLE`].
    fn wait_attached(self) -> Result<Session> {
        let deadline = Instant::now() + TOOL_TIMEOUT;
        loop {
            match self.signals.recv_timeout(Duration::from_millis(50)) {
                Ok(Signal::Attached) => break,
                Ok(Signal::Event) => {}
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    let description = self.description.clone();
                    let end = self.stop()?;
                    bail!(
                        "`{description}` {} before printing \"Attaching\":\n{}",
                        end.finished.describe_status(),
                        end.status_text()
                    );
                }
            }
        }
        thread::sleep(ATTACH_SETTLE);
        Ok(self)
    }

    /// Sends SIGINT and waits for the exit. A tool that has already exited
    /// is a zombie until the wait, so the signal cannot reach another process.
    fn stop(self) -> Result<SessionEnd> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill has no memory effects. The child is not reaped yet,
        // so its pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.wait()
    }

    fn wait(mut self) -> Result<SessionEnd> {
        let finished = wait_with_rusage(&mut self.child, self.started, TOOL_TIMEOUT)
            .with_context(|| format!("waiting for `{}` failed", self.description))?;
        let stdout = self
            .stdout
            .join()
            .expect("the stdout reader does not panic");
        let stderr = self
            .stderr
            .join()
            .expect("the stderr reader does not panic");
        Ok(SessionEnd {
            finished,
            stdout,
            stderr,
        })
    }
}

fn getppid() {
    // SAFETY: getppid takes no arguments and touches no memory of ours.
    unsafe { libc::syscall(libc::SYS_getppid) };
}

/// Calls getppid `calls` times and returns the mean time per call in ns.
fn getppid_loop(calls: u64) -> f64 {
    let started = Instant::now();
    for _ in 0..calls {
        getppid();
    }
    started.elapsed().as_nanos() as f64 / calls as f64
}

fn require_success(end: &SessionEnd, description: &str) -> Result<()> {
    if !end.finished.success() {
        bail!(
            "`{description}` {}:\n{}",
            end.finished.describe_status(),
            end.status_text()
        );
    }
    Ok(())
}

const START_UP_SCRIPT: &str = "BEGIN { exit(); } tracepoint:syscalls:sys_enter_getppid { }";

/// Case 1 and the RSS part of case 4: launch to exit for a script that
/// exits in BEGIN, and launch to the first event delivered.
fn bench_start_up(tools: &Tools, plan: &Plan, report: &mut Report) -> Result<()> {
    let case = "1. start-up";
    let mut wall = Row::new(case, "launch to exit, wall", "ms");
    let mut cpu = Row::new(case, "launch to exit, CPU (user+sys)", "ms");
    let mut rss = Row::new("4. memory", "peak RSS at start-up", "MiB");
    let mut first_event = Row::new(case, "launch to first event delivered", "ms");
    let first_event_script = format!(
        "tracepoint:syscalls:sys_enter_getppid /pid == {}/ {{ printf(\"first\\n\"); exit(); }}",
        std::process::id()
    );

    for index in run_indices(plan) {
        for tool in tool_order(index.unwrap_or(0)) {
            let mut command = tools.command(tool, &[], START_UP_SCRIPT);
            report.record_command(case, &command);
            let description = command::describe(&command);
            let end = Session::start(&mut command)?.wait()?;
            require_success(&end, &description)?;
            if index.is_some() {
                wall.push(tool, end.finished.wall.as_secs_f64() * 1e3);
                cpu.push(tool, end.finished.cpu.as_secs_f64() * 1e3);
                rss.push(tool, end.finished.max_rss_kib as f64 / 1024.0);
            }

            let mut command = tools.command(tool, &[], &first_event_script);
            report.record_command(case, &command);
            let latency = measure_first_event(&mut command)?;
            if index.is_some() {
                first_event.push(tool, latency.as_secs_f64() * 1e3);
            }
        }
    }
    report.rows.extend([wall, cpu, first_event, rss]);
    Ok(())
}

/// Starts `command`, calls getppid every 200 µs, and returns the time from
/// the launch to the first line of output that is not a status line.
fn measure_first_event(command: &mut Command) -> Result<Duration> {
    let description = command::describe(command);
    let session = Session::start(command)?;
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let latency = loop {
        getppid();
        match session.signals.try_recv() {
            Ok(Signal::Event) => break Some(session.started.elapsed()),
            Ok(Signal::Attached) | Err(mpsc::TryRecvError::Empty) => {}
            Err(mpsc::TryRecvError::Disconnected) => break None,
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_micros(200));
    };
    let end = session.wait()?;
    match latency {
        Some(latency) => {
            require_success(&end, &description)?;
            Ok(latency)
        }
        None => bail!(
            "`{description}` {} without printing an event:\n{}",
            end.finished.describe_status(),
            end.status_text()
        ),
    }
}

/// Case 2: the cost a probe adds to each getppid call.
fn bench_per_event(tools: &Tools, plan: &Plan, report: &mut Report) -> Result<()> {
    let case = "2. per-event";
    let programs = [
        ("empty program (floor)", "{ }"),
        ("@[comm] = count()", "{ @[comm] = count(); }"),
        ("@ = hist(pid)", "{ @ = hist(pid); }"),
        (
            "printf 3 ints, output read and discarded",
            "{ printf(\"%d %d %d\\n\", pid, tid, cpu); }",
        ),
    ];
    let mut baseline = Vec::new();
    let mut rows: Vec<Row> = programs
        .iter()
        .map(|(name, _)| Row::new(case, &format!("added ns/call: {name}"), "ns"))
        .collect();

    for index in run_indices(plan) {
        for ((_, action), row) in programs.iter().zip(rows.iter_mut()) {
            let script = format!("tracepoint:syscalls:sys_enter_getppid {action}");
            let no_probe = getppid_loop(plan.per_event_calls);
            if index.is_some() {
                baseline.push(no_probe);
            }
            for tool in tool_order(index.unwrap_or(0)) {
                let mut command = tools.command(tool, &[], &script);
                report.record_command(case, &command);
                let description = command::describe(&command);
                let mut retried = false;
                let with_probe = loop {
                    let session = Session::start(&mut command)?.wait_attached()?;
                    let with_probe = getppid_loop(plan.per_event_calls);
                    match session.stop() {
                        Ok(end) => {
                            require_success(&end, &description)?;
                            break with_probe;
                        }
                        // bpftrace 0.17 once ignored SIGINT for over 60 s
                        // after the printf case on this machine. It is
                        // killed and the run repeated once, so that a hang
                        // of the reference tool does not fail the bench.
                        Err(err) if tool == Tool::Bpftrace && !retried => {
                            println!("note: {err:#}; running it once more");
                            retried = true;
                        }
                        Err(err) => return Err(err),
                    }
                };
                if index.is_some() {
                    row.push(tool, with_probe);
                }
            }
        }
    }

    // The added cost subtracts the median no-probe figure of the whole
    // case, so a noisy baseline run does not distort one pair only.
    let no_probe = spread(&baseline).map_or(0.0, |spread| spread.median);
    for row in &mut rows {
        for value in row.ours.iter_mut().chain(row.bpftrace.iter_mut()) {
            *value -= no_probe;
        }
    }
    let mut baseline_row = Row::new(case, "getppid with no probe", "ns");
    baseline_row.ours = baseline.clone();
    baseline_row.bpftrace = baseline;
    report.rows.push(baseline_row);
    report.rows.extend(rows);
    Ok(())
}

/// Case 3: events per second delivered for one printf per event under a
/// producer that calls getppid as fast as it can.
fn bench_throughput(tools: &Tools, plan: &Plan, report: &mut Report) -> Result<()> {
    let case = "3. throughput";
    let script = format!(
        "tracepoint:syscalls:sys_enter_getppid /pid == {}/ {{ printf(\"%d %d %d\\n\", pid, tid, cpu); }}",
        std::process::id()
    );
    let mut rate = Row::new(case, "events delivered per second", "events/s");
    let mut produced = Row::new(case, "producer calls per second", "calls/s");
    let mut lost = Row::new(case, "events reported lost", "events");
    let mut unaccounted = Row::new(case, "calls - (delivered + lost)", "events");

    for index in run_indices(plan) {
        for tool in tool_order(index.unwrap_or(0)) {
            let mut command = tools.command(tool, &[], &script);
            report.record_command(case, &command);
            let description = command::describe(&command);
            let session = Session::start(&mut command)?.wait_attached()?;
            let started = Instant::now();
            for _ in 0..plan.throughput_calls {
                getppid();
            }
            let producer_time = started.elapsed();
            // Give the tool time to drain its buffers before it is stopped.
            thread::sleep(Duration::from_millis(500));
            let end = session.stop()?;
            require_success(&end, &description)?;
            let delivered = end.stdout.events;
            let Some(last_event) = end.stdout.last_event else {
                bail!(
                    "`{description}` delivered no event for {} getppid calls",
                    plan.throughput_calls
                );
            };
            let delivery_time = last_event.duration_since(started).max(producer_time);
            if index.is_some() {
                let calls = plan.throughput_calls as f64;
                rate.push(tool, delivered as f64 / delivery_time.as_secs_f64());
                produced.push(tool, calls / producer_time.as_secs_f64());
                lost.push(tool, end.lost() as f64);
                unaccounted.push(tool, calls - (delivered + end.lost()) as f64);
            }
        }
    }
    report.rows.extend([rate, produced, lost, unaccounted]);
    Ok(())
}

/// Case 4 without RSS: the size of each binary and of the shared libraries
/// it loads.
fn bench_size(tools: &Tools, report: &mut Report) -> Result<()> {
    let case = "4. memory";
    let mut binary = Row::new(case, "binary size", "MiB");
    let mut libraries = Row::new(case, "shared libraries (ldd), total size", "MiB");
    let mut library_count = Row::new(case, "shared libraries (ldd), count", "files");
    for (tool, path) in [
        (Tool::Ours, tools.ours.clone()),
        (Tool::Bpftrace, PathBuf::from(BPFTRACE)),
    ] {
        binary.push(tool, file_size(&path)? as f64 / MIB);
        let found = shared_libraries(&path)?;
        let mut total = 0;
        for library in &found {
            total += file_size(library)?;
        }
        libraries.push(tool, total as f64 / MIB);
        library_count.push(tool, found.len() as f64);
    }
    report.rows.extend([binary, libraries, library_count]);
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

/// Returns the size of the file `path` points to, following symlinks.
fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {} failed", path.display()))?
        .len())
}

/// Returns the paths of the shared libraries that `ldd` lists for `binary`,
/// the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let output = command::stdout_of(Command::new("ldd").arg(binary))?;
    Ok(parse_ldd(&output))
}

/// Parses lines such as `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1
/// (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`. The vDSO has no
/// file and is skipped.
fn parse_ldd(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The number of probes in the compile-time script.
const COMPILE_PROBES: usize = 200;

/// Returns a script of [`COMPILE_PROBES`] probes, five lines each.
fn compile_script() -> String {
    let mut script = String::new();
    for index in 1..=COMPILE_PROBES {
        let _ = write!(
            script,
            "tracepoint:syscalls:sys_enter_getppid\n\
             /pid == {index}/ {{\n  \
             $a = pid + {index};\n  \
             printf(\"probe {index}: %d %d\\n\", $a, tid);\n\
             }}\n"
        );
    }
    script
}

/// Case 5: compiling a 1,000-line script to an ELF object without loading
/// it: `probe run --emit obj FILE` against bpftrace's `--emit-elf FILE`,
/// which bpftrace 0.17's help lists as a dry run that writes the ELF file.
fn bench_compile(tools: &Tools, plan: &Plan, work_dir: &Path, report: &mut Report) -> Result<()> {
    let case = "5. compile";
    let script_path = work_dir.join("compile-200-probes.bt");
    std::fs::write(&script_path, compile_script())
        .with_context(|| format!("writing {} failed", script_path.display()))?;
    let lines = compile_script().lines().count();
    let mut wall = Row::new(
        case,
        &format!("{COMPILE_PROBES} probes, {lines} lines to ELF, wall"),
        "ms",
    );
    let mut cpu = Row::new(
        case,
        &format!("{COMPILE_PROBES} probes, {lines} lines to ELF, CPU"),
        "ms",
    );

    for index in run_indices(plan) {
        for tool in tool_order(index.unwrap_or(0)) {
            let object = work_dir.join(format!("compile-{}.o", tool.name()));
            let mut command = match tool {
                Tool::Ours => {
                    let mut command = Command::new(&tools.ours);
                    command.arg("run").arg("--emit").arg("obj").arg(&object);
                    command
                }
                Tool::Bpftrace => {
                    let mut command = Command::new(BPFTRACE);
                    command.arg("--emit-elf").arg(&object);
                    command
                }
            };
            command.arg(&script_path);
            report.record_command(case, &command);
            let description = command::describe(&command);
            let end = Session::start(&mut command)?.wait()?;
            require_success(&end, &description)?;
            if file_size(&object)? == 0 {
                bail!("`{description}` wrote an empty object file");
            }
            if index.is_some() {
                wall.push(tool, end.finished.wall.as_secs_f64() * 1e3);
                cpu.push(tool, end.finished.cpu.as_secs_f64() * 1e3);
            }
        }
    }
    report.rows.extend([wall, cpu]);
    Ok(())
}

/// Records nproc, memory, CPU model, kernel release and both tools'
/// versions.
fn describe_machine(ours: &Path) -> Result<Value> {
    let cpus = thread::available_parallelism().map_or(0, |count| count.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease failed")?;
    let ours_version = command::stdout_of(Command::new(ours).arg("--version"))?;
    let bpftrace_version = command::stdout_of(Command::new(BPFTRACE).arg("--version"))?;
    Ok(json!({
        "nproc": cpus,
        "memory": memory,
        "cpu_model": cpu_model,
        "kernel": kernel.trim(),
        "ours": { "path": ours.display().to_string(), "version": ours_version.trim() },
        "bpftrace": { "path": BPFTRACE, "version": bpftrace_version.trim() },
    }))
}

fn format_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 10_000.0 {
        format!("{value:.0}")
    } else if magnitude >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn format_spread(samples: &[f64]) -> String {
    match spread(samples) {
        Some(s) if samples.len() == 1 => format_number(s.median),
        Some(s) => format!(
            "{} ({}..{})",
            format_number(s.median),
            format_number(s.min),
            format_number(s.max)
        ),
        None => "-".to_owned(),
    }
}

fn print_table(report: &Report) {
    println!("\n==== bench results ====");
    let machine = &report.machine;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    println!(
        "machine: {} CPUs, {} memory, {}; kernel {}",
        machine["nproc"],
        text(&machine["memory"]),
        text(&machine["cpu_model"]),
        text(&machine["kernel"])
    );
    println!(
        "tools: {} ({}), {}",
        text(&machine["ours"]["version"]),
        text(&machine["ours"]["path"]),
        text(&machine["bpftrace"]["version"])
    );
    println!("figures: median (min..max) over the runs; ratio per pair of runs\n");
    let header = [
        "case",
        "metric",
        "unit",
        "ours",
        "bpftrace",
        "ours/bpftrace",
    ];
    let mut lines = vec![header.map(str::to_owned).to_vec()];
    for row in report.rows.iter().filter(|row| row.not_run.is_none()) {
        lines.push(vec![
            row.case.clone(),
            row.metric.clone(),
            row.unit.clone(),
            format_spread(&row.ours),
            format_spread(&row.bpftrace),
            format_spread(&row.ratios()),
        ]);
    }

    // Rows that were not run print their reason after the unit column.
    let mut not_run = Vec::new();
    for row in &report.rows {
        if let Some(reason) = &row.not_run {
            not_run.push(vec![
                row.case.clone(),
                row.metric.clone(),
                row.unit.clone(),
                reason.clone(),
            ]);
        }
    }

    let widths: Vec<usize> = (0..header.len())
        .map(|column| {
            // The reason of a not-run row sits in the "ours" column and
            // is left out of that column's width.
            let labels = not_run.iter().filter(|_| column < 3);
            lines
                .iter()
                .chain(labels)
                .map(|cells| cells[column].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for cells in lines.iter().chain(&not_run) {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    }

    println!("\ncommands:");
    for (case, line) in &report.commands {
        println!("  [{case}] {line}");
    }
}

fn spread_json(samples: &[f64]) -> Value {
    match spread(samples) {
        Some(s) => json!({ "median": s.median, "min": s.min, "max": s.max, "samples": samples }),
        None => Value::Null,
    }
}

fn write_json(report: &Report, args: &BenchArgs, path: &Path) -> Result<()> {
    let rows: Vec<Value> = report
        .rows
        .iter()
        .map(|row| {
            json!({
                "case": row.case,
                "metric": row.metric,
                "unit": row.unit,
                "not_run": row.not_run,
                "ours": spread_json(&row.ours),
                "bpftrace": spread_json(&row.bpftrace),
                "ratio_ours_over_bpftrace": spread_json(&row.ratios()),
            })
        })
        .collect();
    let commands: Vec<Value> = report
        .commands
        .iter()
        .map(|(case, line)| json!({ "case": case, "command": line }))
        .collect();
    let document = json!({
        "command": format!(
            "cargo xtask bench --runs {}{}",
            args.runs,
            if args.smoke { " --smoke" } else { "" }
        ),
        "machine": report.machine,
        "rows": rows,
        "commands": commands,
    });
    let text = serde_json::to_string_pretty(&document)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {} failed", path.display()))
}

/// Fails unless every row that was run has a finite figure for each tool.
fn check_smoke(report: &Report) -> Result<()> {
    for row in report.rows.iter().filter(|row| row.not_run.is_none()) {
        for (tool, samples) in [(Tool::Ours, &row.ours), (Tool::Bpftrace, &row.bpftrace)] {
            if tool == Tool::Bpftrace && row.ours_only {
                continue;
            }
            if samples.is_empty() || samples.iter().any(|value| !value.is_finite()) {
                bail!(
                    "case \"{}\", metric \"{}\": no finite figure for {}",
                    row.case,
                    row.metric,
                    tool.name()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_lines_parse() {
        let line = "[INFO ] attached 1012 programs in 812 ms (1012 kernel functions)";
        assert_eq!(parse_timing(line, "attached "), Some((1012.0, 812.0)));
        assert_eq!(parse_timing("attached 3 probes", "attached "), None);
        assert_eq!(parse_timing("attached 1064 programs in 17.1 s", "attached "), None);
    }

    #[test]
    fn spread_of_even_count() {
        let result = spread(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(result.median, 2.5);
        assert_eq!(result.min, 1.0);
        assert_eq!(result.max, 4.0);
    }

    #[test]
    fn spread_of_nothing() {
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn parse_lost_both_tools() {
        assert_eq!(parse_lost("Lost 97 events"), Some(97));
        assert_eq!(
            parse_lost(
                "257270 output records were lost because the ring buffer was full (raise --buffer-size)"
            ),
            Some(257270)
        );
        assert_eq!(
            parse_lost(
                "1 output record was lost because the ring buffer was full (raise --buffer-size)"
            ),
            Some(1)
        );
        assert_eq!(parse_lost("12 34 5"), None);
    }

    #[test]
    fn parse_ldd_lines() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(output),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn compile_script_size() {
        let script = compile_script();
        assert_eq!(script.lines().count(), COMPILE_PROBES * 5);
        assert_eq!(script.matches("tracepoint:").count(), COMPILE_PROBES);
    }

    #[test]
    fn ratios_pair_runs() {
        let mut row = Row::new("case", "metric", "ms");
        row.ours = vec![1.0, 3.0];
        row.bpftrace = vec![2.0, 6.0];
        assert_eq!(row.ratios(), vec![0.5, 0.5]);
    }
}
