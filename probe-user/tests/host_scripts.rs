//! `probe run` on the host kernel (as root): scripts on real tracepoints,
//! driven by `probe-test-helper` or by the tool's own process, with their
//! output checked against what the workload did. The last group runs the
//! same scripts under bpftrace and compares the lines.

mod common;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{bin, helper, text};

/// How long one `probe run` or bpftrace run may take before the test kills
/// it and fails. Runs normally take well under a second; the generous
/// limit only keeps a hang from blocking the test run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished run printed.
struct Outcome {
    /// Exit code; `None` when a signal ended the process.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// Fails the test unless the run exited with 0.
    fn success(self) -> Self {
        assert_eq!(self.code, Some(0), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Lines of stdout that start with `prefix`, with the prefix removed.
    fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(prefix))
            .map(str::to_owned)
            .collect()
    }
}

/// Tells whether the tests can load BPF programs, printing why not.
fn can_load_bpf() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: loading BPF programs needs root");
    }
    root
}

/// Runs `command` to completion with stdin closed, killing it after
/// [`RUN_TIMEOUT`].
fn run_command(command: &mut Command) -> Outcome {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("failed to start {description}: {err}"));
    let stdout = read_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));

    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{description} ran for more than {RUN_TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_in_background(mut stream: impl std::io::Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        text(&bytes)
    })
}

/// `probe run ARGS`.
fn probe_run(args: &[&str]) -> Outcome {
    run_command(Command::new(bin("probe")).arg("run").args(args))
}

/// `probe run -e SCRIPT -c "probe-test-helper HELPER_ARGS"`.
fn probe_run_with_helper(script: &str, helper_args: &str) -> Outcome {
    probe_run(&["-e", script, "-c", &helper_command(helper_args)])
}

fn helper_command(args: &str) -> String {
    format!("{} {args}", bin("probe-test-helper").display())
}

/// A scratch file path for one test, removed when dropped.
struct ScratchPath(PathBuf);

impl ScratchPath {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("probe-host-scripts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        ScratchPath(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for ScratchPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `script` to a scratch file and returns its path.
fn script_file(name: &str, script: &str) -> ScratchPath {
    let path = ScratchPath::new(name);
    std::fs::write(&path.0, script).expect("write the script");
    path
}

#[test]
fn cat_opens_etc_hostname() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"tracepoint:syscalls:sys_enter_openat /comm == "cat"/ { printf("%s\n", str(args.filename)); }"#,
        "-c",
        "cat /etc/hostname",
    ])
    .success();
    assert!(outcome.stdout.lines().any(|line| line == "/etc/hostname"), "{}", outcome.stdout);
    assert_eq!(outcome.stderr, "Attaching 1 probe...\n");
}

/// Every length of a `comm` literal loads, and a process whose name has
/// that length matches it. A 16-character literal never matches, since
/// the kernel keeps 15 characters of a name, and the compiler warns.
#[test]
fn comm_predicate_of_each_length() {
    if !can_load_bpf() {
        return;
    }
    let directory = ScratchPath::new("comm-lengths");
    std::fs::create_dir(&directory.0).expect("create a scratch directory");
    let alphabet = "abcdefghijklmnop";
    for length in 1..=16 {
        // A link named with `length` characters gives the process that
        // name, cut to 15 characters.
        let name = &alphabet[..length];
        let link = directory.0.join(name);
        std::os::unix::fs::symlink(bin("probe-test-helper"), &link).expect("link the helper");
        let script = format!(
            r#"tracepoint:syscalls:sys_enter_openat /comm == "{name}"/ {{ printf("%s %s\n", comm, str(args.filename)); }}"#
        );
        let outcome = probe_run(&["-e", &script, "-c", &format!("{} open /etc/hostname", link.display())]).success();

        let seen = outcome.lines_with(&format!("{name} "));
        if length <= 15 {
            assert!(seen.contains(&"/etc/hostname".to_owned()), "comm {name}:\n{}", outcome.stdout);
            assert!(!outcome.stderr.contains("warning"), "comm {name}:\n{}", outcome.stderr);
        } else {
            assert!(seen.is_empty(), "comm {name}:\n{}", outcome.stdout);
            assert!(
                outcome.stderr.contains("`comm` has at most 15 characters, so it never equals this 16-character string"),
                "{}",
                outcome.stderr
            );
        }
    }
}

#[test]
fn several_strings_in_one_printf() {
    if !can_load_bpf() {
        return;
    }
    let args = ", str(args.filename)".repeat(10);
    let format = "%s|".repeat(10);
    let script = format!(
        r#"tracepoint:syscalls:sys_enter_openat /pid == cpid/ {{ printf("P {format}%s|%d\n"{args}, comm, pid == cpid); }}"#
    );
    let outcome = probe_run_with_helper(&script, "open /etc/hostname /no/such/file").success();
    let lines = outcome.lines_with("P ");
    let expected_hostname = format!("{}probe-test-help|1", "/etc/hostname|".repeat(10));
    let expected_missing = format!("{}probe-test-help|1", "/no/such/file|".repeat(10));
    assert!(lines.contains(&expected_hostname), "{}", outcome.stdout);
    assert!(lines.contains(&expected_missing), "{}", outcome.stdout);
}

#[test]
fn printf_with_many_arguments() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"BEGIN { printf("%d %i %u %x %X %o %c %s %5d|%-5d|%05d %s %%\n", -1, 2, 3, 255, 255, 8, 65, "str", 42, 42, -42, comm); exit(); }"#,
    ])
    .success();
    assert_eq!(outcome.stdout, "-1 2 3 ff FF 10 A str    42|42   |-0042 probe %\n");
}

/// Division and modulo by values only known when the probe runs, zero
/// included: x / 0 and x % 0 are 0, as in bpftrace, and signed operands
/// truncate toward zero, as in C.
#[test]
fn division_by_runtime_values() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"BEGIN {
            $zero = pid - pid; $seven = 7; $minus_seven = -7; $two = 2 + $zero;
            printf("%d %d %d %d\n", $seven / $zero, $seven % $zero, $minus_seven / $zero, 100 / ($zero * 5));
            printf("%d %d %d %d\n", $seven / $two, $seven % $two, $minus_seven / $two, $minus_seven % $two);
            printf("%d %d %d\n", $seven / -$two, $seven % -$two, (uint64)$seven / $two);
            exit();
        }"#,
    ])
    .success();
    assert_eq!(outcome.stdout, "0 0 0 0\n3 1 -3 -1\n-3 1 3\n");
}

/// Divisors from a tracepoint: the helper's open of a path below a regular
/// file fails with ENOTDIR (20). The dynamic loader's failed opens, which
/// come first, fail with ENOENT.
#[test]
fn division_by_tracepoint_value() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run_with_helper(
        r#"tracepoint:syscalls:sys_exit_openat /pid == cpid && args.ret == -20/ {
            printf("P %d %d %d %d %d\n", 100 / args.ret, 100 % args.ret, 101 % args.ret, args.ret / (args.ret + 20), 1000 % (args.ret * -3));
        }"#,
        "open /etc/hostname/x",
    )
    .success();
    assert_eq!(outcome.lines_with("P "), ["-5 0 1 0 40"]);
}

/// `args.ret` of sys_exit_openat is a signed long: printed with %d it is
/// the negative errno that the helper itself prints, and it compares as
/// signed with zero and with unsigned 32-bit values.
#[test]
fn errno_prints_and_compares_signed() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run_with_helper(
        r#"tracepoint:syscalls:sys_exit_openat /pid == cpid/ {
            printf("P %d %d %d %d %lu\n", args.ret, args.ret < 0, args.ret < pid, (uint64)args.ret > 0, args.ret);
        }"#,
        "open /etc/hostname /no/such/file",
    )
    .success();
    let helper_results: Vec<&str> = outcome
        .stdout
        .lines()
        .filter_map(|line| line.strip_prefix("/no/such/file ").or_else(|| line.strip_prefix("/etc/hostname ")))
        .collect();
    assert_eq!(helper_results.len(), 2, "{}", outcome.stdout);
    let lines = outcome.lines_with("P ");
    let fd = helper_results[0];
    let errno = helper_results[1];
    assert_eq!(errno, "-2");
    assert!(lines.contains(&format!("{fd} 0 1 1 {fd}")), "{}", outcome.stdout);
    assert!(lines.contains(&format!("{errno} 1 1 1 18446744073709551614")), "{}", outcome.stdout);
}

/// An expression with more live values than registers, across helper
/// calls, so that the allocator spills to the stack.
#[test]
fn expression_that_needs_spilling() {
    if !can_load_bpf() {
        return;
    }
    // Forty terms: pid + tid + nsecs*0 + 1 + tid + nsecs*0 + 2 + ...
    let mut expression = String::from("pid");
    for i in 1..=13 {
        expression.push_str(&format!(" + tid + nsecs * 0 + {i}"));
    }
    // And a right-nested one, which keeps every left operand live.
    let mut nested = String::from("0");
    for i in 1..=15 {
        nested = format!("cpu * 0 + pid - tid + {i} + ({nested})");
    }
    let script = format!(
        r#"BEGIN {{ $a = pid; $b = tid; $c = $a * 2; $d = $b * 3; $e = $a + $b;
            printf("%d %d %d %d\n", pid, tid, {expression}, {nested});
            printf("%d\n", $a + $b + $c + $d + $e + ({expression}) * 0 + $a * $b / ($a + 1) * 0);
            exit(); }}"#
    );
    let outcome = probe_run(&["-e", &script]).success();
    let lines: Vec<&str> = outcome.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", outcome.stdout);
    let values: Vec<i64> = lines[0].split(' ').map(|word| word.parse().expect("a number")).collect();
    let (pid, tid) = (values[0], values[1]);
    assert_eq!(values[2], pid + 13 * tid + (1..=13).sum::<i64>(), "{}", outcome.stdout);
    assert_eq!(values[3], 15 * (pid - tid) + (1..=15).sum::<i64>(), "{}", outcome.stdout);
    assert_eq!(lines[1], (pid + tid + 2 * pid + 3 * tid + pid + tid).to_string());
}

#[test]
fn control_flow_statements() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"BEGIN {
            $x = 5;
            if ($x > 7) { printf("big\n"); } else if ($x > 3) { printf("middle\n"); } else { printf("small\n"); }
            if (!($x == 5)) { printf("wrong\n"); }
            printf("%d %d %s\n", $x > 4 ? 10 : 20, $x < 4 ? 10 : 20, $x == 5 ? "five" : "other");
            $i = 0; unroll(5) { $i = $i + 2; } printf("unroll %d\n", $i);
            $i = 0; $sum = 0;
            while ($i < 10) { $i++; if ($i % 2 == 0) { continue; } $sum += $i; }
            printf("while %d %d\n", $i, $sum);
            $i = 0; while (1) { $i++; if ($i >= 6) { break; } } printf("break %d\n", $i);
            if ($x > 1 && $x < 10 || $x == 0) { printf("logic\n"); }
            exit();
            printf("after exit\n");
        }"#,
    ])
    .success();
    // exit() also ends the probe, as in bpftrace.
    assert_eq!(outcome.stdout, "middle\n10 20 five\nunroll 10\nwhile 10 25\nbreak 6\nlogic\n");
}

#[test]
fn variables_of_each_type() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"BEGIN {
            $int = -3; $small = (uint8)300; $signed = (int16)65535;
            $ptr = (struct task_struct *)0; $null = (int8 *)0;
            $literal = "hello"; $name = comm; $copy = $literal;
            printf("%d %u %d %p %p %s %s %s\n", $int, $small, $signed, $ptr, $null, $literal, $name, $copy);
            $literal = "bye"; $int += 10; $name = "x";
            printf("%s %d %s %s\n", $literal, $int, $name, $copy);
            exit();
        }"#,
    ])
    .success();
    assert_eq!(outcome.stdout, "-3 44 -1 (nil) (nil) hello probe hello\nbye 7 x hello\n");
}

#[test]
fn begin_printf_and_exit() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&["-e", r#"BEGIN { printf("hello %s\n", probe); exit(); }"#]).success();
    assert_eq!(outcome.stdout, "hello BEGIN\n");
    assert_eq!(outcome.stderr, "Attaching 1 probe...\n");
}

#[test]
fn end_runs_after_exit() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&["-e", r#"BEGIN { printf("begin\n"); exit(); } END { printf("end %s\n", probe); }"#]).success();
    assert_eq!(outcome.stdout, "begin\nend END\n");
}

/// The probes are detached before END runs, so END's output is the last,
/// even with a probe that every system call fires, the tool's own too.
#[test]
fn end_output_comes_last() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run_with_helper(
        r#"tracepoint:raw_syscalls:sys_enter { printf("event %d\n", pid); } END { printf("end\n"); }"#,
        "open-loop /etc/hostname 0 200",
    )
    .success();
    assert!(outcome.stdout.lines().any(|line| line.starts_with("event ")), "{}", outcome.stderr);
    assert_eq!(outcome.stdout.lines().last(), Some("end"));
}

/// Output that probes write after exit() is dropped, as in bpftrace.
#[test]
fn output_after_exit_is_dropped() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run_with_helper(
        r#"tracepoint:syscalls:sys_enter_openat /pid == cpid/ {
            printf("P %s\n", str(args.filename));
            if (str(args.filename) == "/etc/hostname") { exit(); }
        } END { printf("P end\n"); }"#,
        "open /etc/hostname /etc/passwd /etc/group",
    )
    .success();
    let lines = outcome.lines_with("P ");
    assert_eq!(lines.iter().rev().take(2).collect::<Vec<_>>(), ["end", "/etc/hostname"], "{}", outcome.stdout);
}

#[test]
fn end_runs_at_sigint() {
    if !can_load_bpf() {
        return;
    }
    let mut child = Command::new(bin("probe"))
        .args(["run", "-e", r#"BEGIN { printf("begin\n"); } END { printf("end\n"); }"#])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start probe run");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = read_in_background(child.stderr.take().expect("piped stderr"));

    // The first output line shows that BEGIN ran and the run waits.
    let (sender, receiver) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut collected = Vec::new();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdout.read(&mut byte) {
            collected.push(byte[0]);
            if byte[0] == b'\n' {
                let _ = sender.send(());
            }
        }
        text(&collected)
    });
    if receiver.recv_timeout(RUN_TIMEOUT).is_err() {
        let _ = child.kill();
        panic!("BEGIN printed nothing; stderr:\n{}", stderr.join().unwrap_or_default());
    }

    // SAFETY: kill has no memory-safety preconditions; the child has not
    // been reaped, so its pid is still ours.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = child.wait().expect("wait for probe run");
    let stdout = reader.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(stdout, "begin\nend\n", "stderr:\n{stderr}");
}

/// A `-c` command waits until the probes are attached; when `probe run`
/// dies before that, the command must not run at all.
#[test]
fn held_command_never_runs_after_kill() {
    if !can_load_bpf() {
        return;
    }
    // The verifier takes most of a second to reject this loop, which
    // leaves time to kill the tool while the command is held.
    let script = script_file("slow-load.bt", "BEGIN { $i = 0; while ($i < 10000000) { $i++; } }\n");
    let marker = ScratchPath::new("held-marker");
    let mut child = Command::new(bin("probe"))
        .args(["run", script.as_str(), "-c", &format!("touch {}", marker.as_str())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start probe run");
    thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();

    // The held shell notices the closed pipe at once; give it time to run
    // the command if it wrongly would.
    thread::sleep(Duration::from_millis(500));
    assert!(!marker.0.exists(), "the -c command ran although probe run was killed");
}

/// `-p` keeps only the events of one process, while another process does
/// the same system calls.
#[test]
fn pid_option_filters_events() {
    if !can_load_bpf() {
        return;
    }
    let spawn_loop = |path: &str| {
        helper()
            .args(["open-loop", path, "20", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start probe-test-helper open-loop")
    };
    let mut traced = spawn_loop("/etc/hostname");
    let mut other = spawn_loop("/etc/passwd");
    let traced_pid = traced.id().to_string();

    let outcome = probe_run(&[
        "-p",
        &traced_pid,
        "-e",
        // A few events, then the run ends by itself.
        r#"tracepoint:syscalls:sys_enter_openat { printf("P %d %s\n", pid, str(args.filename)); if (nsecs % 4 == 0) { exit(); } }"#,
    ]);
    let _ = traced.kill();
    let _ = other.kill();
    let _ = traced.wait();
    let _ = other.wait();

    let outcome = outcome.success();
    let lines = outcome.lines_with("P ");
    assert!(!lines.is_empty(), "no events:\n{}", outcome.stderr);
    for line in &lines {
        assert_eq!(line, &format!("{traced_pid} /etc/hostname"), "{}", outcome.stdout);
    }
}

#[test]
fn output_option_writes_file() {
    if !can_load_bpf() {
        return;
    }
    let output = ScratchPath::new("output.txt");
    let outcome = probe_run(&["-o", output.as_str(), "-e", r#"BEGIN { printf("to the file\n"); exit(); } END { print(7); }"#])
        .success();
    assert_eq!(outcome.stdout, "");
    assert_eq!(std::fs::read_to_string(&output.0).expect("the output file"), "to the file\n7\n");
}

/// A bad `-o` path fails before anything is attached or run.
#[test]
fn output_option_bad_path_fails_first() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&["-o", "/nonexistent/directory/out.txt", "-e", r#"BEGIN { printf("begin\n"); exit(); }"#]);
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert_eq!(
        outcome.stderr,
        "probe run: error: failed to create output file /nonexistent/directory/out.txt: No such file or directory (os error 2)\n"
    );
    assert_eq!(outcome.stdout, "");
}

#[test]
fn emit_asm_lists_script_lines() {
    let script = script_file("listing.bt", "BEGIN\n{\n  $x = nsecs;\n  printf(\"%d\\n\", $x);\n}\n");
    let outcome = probe_run(&["--emit", "asm", script.as_str()]).success();
    assert!(outcome.stdout.starts_with("BEGIN (probe_0_0, "), "{}", outcome.stdout);
    let call_ktime = outcome
        .stdout
        .lines()
        .find(|line| line.contains("call 5"))
        .unwrap_or_else(|| panic!("no call to bpf_ktime_get_ns:\n{}", outcome.stdout));
    assert!(call_ktime.ends_with(&format!("; {}:3: $x = nsecs;", script.as_str())), "{call_ktime}");
    assert!(
        outcome.stdout.contains(&format!("; {}:4: printf(\"%d\\n\", $x);", script.as_str())),
        "{}",
        outcome.stdout
    );
}

#[test]
fn emit_obj_writes_elf() {
    let object = ScratchPath::new("probe.o");
    let outcome = probe_run(&[
        "--emit",
        "obj",
        object.as_str(),
        "-e",
        r#"tracepoint:syscalls:sys_enter_openat { printf("%s\n", comm); }"#,
    ])
    .success();
    let bytes = std::fs::read(&object.0).expect("the object file");
    assert_eq!(outcome.stderr, format!("wrote {} ({} bytes)\n", object.as_str(), bytes.len()));
    assert_eq!(&bytes[..4], b"\x7fELF");
    // e_machine, at offset 18 of a 64-bit little-endian header: EM_BPF.
    assert_eq!(u16::from_le_bytes([bytes[18], bytes[19]]), 247);

    // A disassembler, where one is installed, reads the program section.
    let disassembler = ["llvm-objdump-22", "llvm-objdump"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").stdout(Stdio::null()).status().is_ok());
    match disassembler {
        Some(name) => {
            let listing = run_command(Command::new(name).arg("-d").arg(&object.0)).success();
            assert!(listing.stdout.contains("tracepoint/probe_0_0"), "{}", listing.stdout);
            assert!(listing.stdout.contains("call 0x10"), "bpf_get_current_comm:\n{}", listing.stdout);
        }
        None => eprintln!("no llvm-objdump installed: the object's contents are not disassembled"),
    }
}

#[test]
fn dry_run_attaches_nothing() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "--dry-run",
        "-e",
        r#"tracepoint:syscalls:sys_enter_openat { printf("%s\n", comm); } BEGIN { printf("begin\n"); }"#,
    ])
    .success();
    assert_eq!(outcome.stdout, "", "BEGIN does not run in a dry run");
    assert_eq!(outcome.stderr, "compiled and loaded 2 programs; nothing was attached\n");
}

/// Compile errors print the rendered diagnostics and exit with 2.
#[test]
fn compile_errors_exit_2() {
    let cases = [
        (
            r#"BEGIN { printf("%d\n", pdi); }"#,
            r#"error: unknown identifier `pdi`
  --> -e:1:24
  |
1 | BEGIN { printf("%d\n", pdi); }
  |                        ^^^
  = hint: did you mean: pid?
"#,
        ),
        (
            r#"tracepoint:syscalls:sys_enter_openat { printf("%s\n", str(args.filenme)); }"#,
            r#"error: tracepoint syscalls:sys_enter_openat has no field `filenme`
  --> -e:1:64
  |
1 | tracepoint:syscalls:sys_enter_openat { printf("%s\n", str(args.filenme)); }
  |                                                                ^^^^^^^
  = hint: did you mean: filename?
"#,
        ),
        (
            r#"BEGIN { printf("%d %s\n", pid); }"#,
            r#"error: the format string has 2 conversions but 1 argument follows
  --> -e:1:9
  |
1 | BEGIN { printf("%d %s\n", pid); }
  |         ^^^^^^^^^^^^^^^^^^^^^^
"#,
        ),
        (
            r#"BEGIN { printf("%s\n", pid); }"#,
            r#"error: `%s` needs a string, found an integer (uint32)
  --> -e:1:24
  |
1 | BEGIN { printf("%s\n", pid); }
  |                        ^^^
  = hint: print integers with `%d`
"#,
        ),
    ];
    for (script, diagnostic) in cases {
        let outcome = probe_run(&["-e", script]);
        assert_eq!(outcome.code, Some(2), "{script}\n{}", outcome.stderr);
        assert_eq!(outcome.stderr, format!("{diagnostic}probe run: error: the script has 1 error\n"), "{script}");
        assert_eq!(outcome.stdout, "");
    }
}

/// A loop the verifier cannot prove to end: the message names the script
/// line of the instruction it stopped at and quotes the verifier.
#[test]
fn verifier_rejection_names_line() {
    if !can_load_bpf() {
        return;
    }
    let script = script_file("endless.bt", "BEGIN {\n  $i = 1;\n  while ($i > 0) {\n    $i = $i;\n  }\n}\n");
    let outcome = probe_run(&[script.as_str()]);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    let expected = format!(
        "probe run: error: the kernel rejected the program for BEGIN (Invalid argument (os error 22)) at {}:3:\n    while ($i > 0) {{\nverifier: infinite loop detected at insn ",
        script.as_str()
    );
    assert!(outcome.stderr.starts_with(&expected), "{}", outcome.stderr);
    assert!(outcome.stderr.ends_with("(run with -v for the whole verifier log)\n"), "{}", outcome.stderr);
}

/// A loop with too many iterations for the verifier's instruction limit.
#[test]
fn verifier_limit_names_loop() {
    if !can_load_bpf() {
        return;
    }
    let script = script_file("long-loop.bt", "BEGIN {\n  $i = 0;\n  while ($i < 10000000) {\n    $i++;\n  }\n}\n");
    let outcome = probe_run(&[script.as_str()]);
    assert_eq!(outcome.code, Some(1), "{}", outcome.stderr);
    assert!(
        outcome.stderr.starts_with("probe run: error: the kernel rejected the program for BEGIN\n"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stderr.contains("its limit of 1000000 instructions; lower the loop bound"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains(&format!("loop at {}:3:\n    while ($i < 10000000) {{\n", script.as_str())),
        "{}",
        outcome.stderr
    );
}

#[test]
fn shifts_and_mixed_signedness() {
    if !can_load_bpf() {
        return;
    }
    let outcome = probe_run(&[
        "-e",
        r#"BEGIN {
            $big = 70; $minus = -8;
            printf("%d %d %d %d %d %d\n", 1 << 3, 1 << 70, 1 << $big, $minus >> 1, $minus >> $big, (uint64)$minus >> $big);
            printf("%d %d %d %d\n", pid > -1, -1 < pid, (uint64)pid > -1, (int8)255 == -1);
            exit();
        }"#,
    ])
    .success();
    // pid is a 32-bit unsigned value, which C compares with a signed
    // 64-bit value as signed; a 64-bit unsigned value makes it unsigned.
    assert_eq!(outcome.stdout, "8 0 0 -4 -1 0\n1 1 0 1\n");
}

// The same scripts under bpftrace.

/// Tells whether bpftrace can run, printing why not.
fn bpftrace_available() -> bool {
    if !can_load_bpf() {
        return false;
    }
    if Command::new("bpftrace").arg("--version").stdout(Stdio::null()).status().is_err() {
        eprintln!("skipped: bpftrace is not installed");
        return false;
    }
    // bpftrace reads tracepoint formats from tracefs but does not mount it.
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let mounted = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            eprintln!("skipped: tracefs is not mounted at /sys/kernel/tracing and mounting it failed");
            return false;
        }
    }
    true
}

/// Runs `script` under bpftrace and under `probe run`, each with the
/// helper as `-c` command, and returns the lines that start with `P ` from
/// each, sorted.
///
/// The lines are sorted because bpftrace 0.17 reads one perf buffer per
/// CPU, so lines from a process that moved between CPUs can come out of
/// order. `probe run` reads one ring buffer in event order.
fn run_both(script: &str, helper_args: &str) -> (Vec<String>, Vec<String>) {
    let reference = run_command(Command::new("bpftrace").args(["-e", script, "-c", &helper_command(helper_args)]));
    assert_eq!(reference.code, Some(0), "bpftrace failed on {script}:\n{}", reference.stderr);
    let ours = probe_run_with_helper(script, helper_args).success();
    let mut reference_lines = reference.lines_with("P ");
    let mut our_lines = ours.lines_with("P ");
    reference_lines.sort();
    our_lines.sort();
    assert!(!our_lines.is_empty(), "{script} printed nothing:\n{}", ours.stderr);
    (reference_lines, our_lines)
}

#[test]
fn bpftrace_same_openat_arguments() {
    if !bpftrace_available() {
        return;
    }
    let (reference, ours) = run_both(
        r#"tracepoint:syscalls:sys_enter_openat /pid == cpid/ { printf("P %s %d %d %s\n", str(args->filename), args->flags, args->dfd, comm); }"#,
        "open /etc/hostname /no/such/file",
    );
    // A path in a page the process has not touched yet cannot be read at
    // syscall entry (BPF programs cannot fault pages in), so either tool
    // may print such a path as empty. Lines with an empty path are left
    // out, and each one only excuses a line missing from the other side.
    let is_unread = |line: &String| line.starts_with(' ');
    let reference_unread = reference.iter().filter(|l| is_unread(l)).count();
    let our_unread = ours.iter().filter(|l| is_unread(l)).count();
    let reference: Vec<String> = reference.into_iter().filter(|l| !is_unread(l)).collect();
    // bpftrace 0.17 cuts a path at 63 characters silently; this tool marks
    // the cut with `...`, which is dropped before comparing.
    let ours: Vec<String> = ours.into_iter().filter(|l| !is_unread(l)).collect();
    let cut_paths = |lines: &[String]| lines.iter().filter(|line| line.split(' ').next().is_some_and(|path| path.len() == 63)).count();
    let marked = ours.iter().filter(|line| line.split(' ').next().is_some_and(|path| path.ends_with("..."))).count();
    assert!(marked <= cut_paths(&reference) + our_unread, "paths marked as cut that bpftrace printed whole:\n{ours:?}");
    let ours: Vec<String> = ours.into_iter().map(|line| line.replacen("... ", " ", 1)).collect();
    let missing_from_ours = reference.iter().filter(|l| !ours.contains(l)).count();
    let missing_from_reference = ours.iter().filter(|l| !reference.contains(l)).count();
    assert!(ours.iter().any(|l| l.starts_with("/etc/hostname ")), "{ours:?}");
    assert!(missing_from_ours <= our_unread, "bpftrace {reference:?}\nours {ours:?}");
    assert!(missing_from_reference <= reference_unread, "bpftrace {reference:?}\nours {ours:?}");
}

#[test]
fn bpftrace_same_openat_results() {
    if !bpftrace_available() {
        return;
    }
    let (reference, ours) = run_both(
        r#"tracepoint:syscalls:sys_exit_openat /pid == cpid/ {
            if (args->ret < 0) { printf("P fail %d %d %d %s\n", -args->ret, args->ret * 3, args->ret == -2, args->ret < 0 ? "neg" : "pos"); }
            else { printf("P ok %-6s|%6s|%05d|%x\n", comm, "ab", args->ret, args->ret + 10); }
        }"#,
        "open /etc/hostname /no/such/file",
    );
    assert_eq!(ours, reference);
}

#[test]
fn bpftrace_same_kill_events() {
    if !bpftrace_available() {
        return;
    }
    let (reference, ours) = run_both(
        r#"tracepoint:syscalls:sys_enter_kill /pid == cpid/ { printf("P enter %d %d\n", args->pid, args->sig); }
           tracepoint:syscalls:sys_exit_kill /pid == cpid/ { printf("P exit %d\n", args->ret); }"#,
        "kill-zero 1 999999",
    );
    assert_eq!(ours, reference);
}

#[test]
fn bpftrace_same_exec_event() {
    if !bpftrace_available() {
        return;
    }
    let (reference, ours) = run_both(
        r#"tracepoint:sched:sched_process_exec /pid == cpid/ { printf("P %s %s %d\n", str(args->filename), comm, args->pid == pid); }"#,
        "open /etc/hostname",
    );
    assert_eq!(ours, reference);
    assert_eq!(ours, [format!("{} probe-test-help 1", bin("probe-test-helper").display())]);
}

/// Where the two tools differ on purpose.
#[test]
fn bpftrace_differs_on_purpose() {
    if !bpftrace_available() {
        return;
    }
    // ENOTDIR (20), which only the helper's own open returns.
    let (reference, ours) = run_both(
        r#"tracepoint:syscalls:sys_exit_openat /pid == cpid && args->ret == -20/ { printf("P %u %x\n", args->ret, args->ret); }"#,
        "open /etc/hostname/x",
    );
    // bpftrace 0.17 prints %u and %x with a 32-bit operand unless a
    // length modifier sets another, as C's printf reads an `unsigned int`.
    // probe prints the argument's own width (`long` here), so no bits are
    // lost. Both print `%u` of a 32-bit value the same way.
    assert_eq!(reference, ["4294967276 ffffffec"]);
    assert_eq!(ours, ["18446744073709551596 ffffffffffffffec"]);

    let (reference, ours) = run_both(
        r#"tracepoint:syscalls:sys_exit_openat /pid == cpid && args->ret == -20/ { printf("P %d %d %d\n", args->ret / 3, args->ret % 3, 70 / args->ret); }"#,
        "open /etc/hostname/x",
    );
    // Signed division: probe truncates toward zero, as C does. bpftrace
    // 0.17 warns that signed division is undefined and gives other results.
    assert_eq!(ours, ["-6 -2 -3"]);
    assert_ne!(reference, ours, "bpftrace now divides as C does; update this test");
}
