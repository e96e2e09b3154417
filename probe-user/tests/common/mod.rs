//! Helpers shared by the host and VM integration tests: locating the
//! binaries under test, running them, and listing what is left attached.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Directory of the binaries under test: `PROBE_BIN_DIR` when set (the VM
/// tests run from an initramfs), otherwise cargo's output directory.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROBE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_kprobe-attach"))
        .parent()
        .expect("binary has a parent directory")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing; build it first (cargo build -p probe-user -p probe-test-helper)",
        path.display()
    );
    path
}

pub fn kprobe_attach() -> Command {
    Command::new(bin("kprobe-attach"))
}

pub fn helper() -> Command {
    Command::new(bin("probe-test-helper"))
}

/// Runs a command to completion and returns its output.
pub fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("failed to run {command:?}: {err}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Tells whether the test kernel is expected to support `feature`
/// (`kprobe`, `fentry`, `lsm`), as the VM runner states in
/// `PROBE_EXPECT_KERNEL_FEATURES`.
pub fn kernel_expected_to_have(feature: &str) -> bool {
    std::env::var("PROBE_EXPECT_KERNEL_FEATURES")
        .map(|list| list.split(',').any(|f| f.trim() == feature))
        .unwrap_or(false)
}

pub fn kernel_has_kprobes() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// Returns the names of loaded BPF programs whose name starts with one of
/// the default tracer's program names or the `probe_` of compiled scripts
/// (the kernel keeps 15 characters).
pub fn tracer_programs() -> Vec<String> {
    let output = run(helper().arg("bpf-objects"));
    assert!(
        output.status.success(),
        "probe-test-helper bpf-objects failed: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("prog "))
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
        .filter(|name| name.starts_with("trace_") || name.starts_with("save_entry") || name.starts_with("probe_"))
        .collect()
}

/// Waits until no program of the default tracer is loaded. The kernel frees
/// programs asynchronously after their last file descriptor closes, so a
/// short wait is normal; a program still loaded after 10 s is a leak.
pub fn assert_nothing_attached(context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = tracer_programs();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: programs still loaded 10 s after exit: {left:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    for path in [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ] {
        if let Ok(events) = std::fs::read_to_string(path) {
            assert!(
                events.trim().is_empty(),
                "{context}: kprobe events left in {path}: {events}"
            );
        }
    }
}

/// A running `kprobe-attach` whose stdout is collected in the background.
pub struct Tracer {
    pub child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Tracer {
    /// Starts `kprobe-attach ARGS` and waits until it reports that it is
    /// tracing, or fails the test with its error output.
    pub fn start(args: &[&str]) -> Self {
        Self::start_waiting_for(args, "Tracing ")
    }

    /// Starts `kprobe-attach ARGS` with a script and waits until the script
    /// runs.
    pub fn start_script(args: &[&str]) -> Self {
        Self::start_waiting_for(args, "Running the script")
    }

    fn start_waiting_for(args: &[&str], ready: &str) -> Self {
        let mut child = kprobe_attach()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kprobe-attach starts");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let (sender, receiver) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut tracer = Self {
            child,
            stdout: Some(stdout),
            stderr_lines: receiver,
            stderr_seen: Vec::new(),
        };
        tracer.wait_for_stderr(ready);
        tracer
    }

    /// Waits for a stderr line starting with `prefix`.
    pub fn wait_for_stderr(&mut self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let found = line.starts_with(prefix);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        self.drain_stderr();
                        panic!(
                            "kprobe-attach exited with {status} before printing {prefix:?}; stderr:\n{}",
                            self.stderr_seen.join("\n")
                        );
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "kprobe-attach did not print {prefix:?}; stderr so far:\n{}",
            self.stderr_seen.join("\n")
        );
    }

    fn drain_stderr(&mut self) {
        while let Ok(line) = self.stderr_lines.recv_timeout(Duration::from_millis(500)) {
            self.stderr_seen.push(line);
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child, which has not been reaped yet.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(result, 0, "kill({}, {signal}) failed", self.child.id());
    }

    /// Waits for exit and returns `(exit code, stdout, stderr)`. The exit
    /// code is `None` when a signal killed the process.
    pub fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().expect("wait for kprobe-attach");
        let stdout = self
            .stdout
            .take()
            .expect("stdout collected once")
            .join()
            .expect("stdout reader thread");
        self.drain_stderr();
        (status.code(), stdout, self.stderr_seen.join("\n"))
    }
}

/// Event lines of kprobe-attach output: every line but the header.
pub fn event_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter(|line| !line.starts_with("TIME "))
        .collect()
}

/// Splits an event line into `(comm, pid, tid, call)`.
pub fn parse_event(line: &str) -> (String, u32, u32, String) {
    // TIME COMM PID TID CALL, where COMM may contain spaces but is padded to
    // 16 characters after one space.
    let (_, rest) = line.split_once(' ').expect("time column");
    let comm = rest.get(..16).unwrap_or(rest).trim_end().to_owned();
    let mut fields = rest.get(17..).unwrap_or("").split_whitespace();
    let pid = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let tid = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
    let call = fields.collect::<Vec<_>>().join(" ");
    (comm, pid, tid, call)
}
