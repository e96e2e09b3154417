//! Integration tests that need kprobes or fentry: they run inside the test
//! VM (`cargo xtask test --tier vm`), where the runner sets
//! `PROBE_EXPECT_KERNEL_FEATURES` to the features the kernel must have. A
//! test whose feature is missing skips with a reason, unless the runner
//! says the kernel has it, in which case it fails.

mod common;
#[path = "vm_cases/planner.rs"]
mod planner;
#[path = "vm_cases/stacks.rs"]
mod stacks;

use std::{process::Stdio, thread, time::Duration};

use common::{
    Tracer, assert_nothing_attached, event_lines, helper, kernel_expected_to_have,
    kernel_has_kprobes, parse_event, run, text,
};

const FUNCTION: &str = "do_sys_openat2";

/// Returns false, after printing why, when the kernel cannot run the test;
/// panics when the runner said the kernel must have the feature.
fn kernel_supports(mechanism: &str) -> bool {
    let available = match mechanism {
        "kprobe" => kernel_has_kprobes(),
        // fentry support is only known by trying; the runner's list decides.
        "fentry" => kernel_expected_to_have("fentry"),
        _ => false,
    };
    if !available {
        assert!(
            !kernel_expected_to_have(mechanism),
            "this kernel should support {mechanism} but does not"
        );
        eprintln!("skipped: this kernel has no {mechanism} support");
    }
    available
}

/// Runs the helper's `open` command on paths and returns each result (fd
/// or negative errno) in order, and the helper's pid.
fn open_paths(paths: &[&str]) -> (u32, Vec<i64>) {
    let child = helper()
        .arg("open")
        .args(paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probe-test-helper starts");
    let pid = child.id();
    let output = child.wait_with_output().expect("probe-test-helper runs");
    assert!(output.status.success(), "helper failed: {}", text(&output.stderr));
    let results = text(&output.stdout)
        .lines()
        .map(|line| {
            line.rsplit_once(' ')
                .and_then(|(_, result)| result.parse().ok())
                .unwrap_or_else(|| panic!("unexpected helper line {line:?}"))
        })
        .collect();
    (pid, results)
}

/// Starts a helper that opens `/etc/hostname` every 20 ms until killed.
fn background_opener() -> std::process::Child {
    helper()
        .args(["open-loop", "/etc/hostname", "20", "0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("probe-test-helper open-loop starts")
}

fn count_prints_real_calls(mechanism: &str) {
    if !kernel_supports(mechanism) {
        return;
    }
    let mut opener = background_opener();
    let tracer = Tracer::start(&["--mechanism", mechanism, "--count", "5", FUNCTION]);
    let (code, stdout, stderr) = tracer.finish();
    let _ = opener.kill();
    let _ = opener.wait();

    assert_eq!(code, Some(0), "stderr: {stderr}");
    assert!(stderr.contains(&format!("with {mechanism}.")), "{stderr}");
    assert!(stderr.contains("5 calls traced"), "{stderr}");
    let lines = event_lines(&stdout);
    assert_eq!(lines.len(), 5, "stdout:\n{stdout}");
    for line in lines {
        let (comm, pid, tid, call) = parse_event(line);
        assert!(!comm.is_empty(), "{line}");
        assert!(pid > 0 && tid > 0, "{line}");
        assert!(call.starts_with("do_sys_openat2(dfd="), "{line}");
        assert!(call.contains("filename=0x"), "{line}");
    }
    assert_nothing_attached("after --count");
}

#[test]
fn count_with_fentry() {
    count_prints_real_calls("fentry");
}

#[test]
fn count_with_kprobe() {
    count_prints_real_calls("kprobe");
}

/// Traces returns while the helper opens known paths, and checks that the
/// helper's own calls returned exactly what the helper got.
fn return_values_match(mechanism: &str) {
    if !kernel_supports(mechanism) {
        return;
    }
    let tracer = Tracer::start(&["--mechanism", mechanism, "--return", FUNCTION]);
    let (pid, results) = open_paths(&["/etc/hostname", "/no/such/file", "/proc/version", "/"]);
    // Let the last events reach the ring buffer reader before stopping.
    thread::sleep(Duration::from_millis(500));
    tracer.signal(libc::SIGINT);
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");

    let traced: Vec<i64> = event_lines(&stdout)
        .into_iter()
        .map(parse_event)
        .filter(|(_, event_pid, _, _)| *event_pid == pid)
        .map(|(comm, _, _, call)| {
            assert_eq!(comm, "probe-test-help", "comm of {call}");
            call.rsplit_once(" = ")
                .and_then(|(_, value)| value.parse().ok())
                .unwrap_or_else(|| panic!("no return value in {call:?}"))
        })
        .collect();
    assert_eq!(results.len(), 4, "helper results {results:?}");
    assert!(results[1] == -2, "opening a missing file gives -ENOENT: {results:?}");
    // The dynamic loader opens libraries before the helper's own calls, so
    // the helper's results must be the last calls of that process.
    assert!(
        traced.ends_with(&results),
        "traced returns {traced:?} should end with the helper's results {results:?}\nstdout:\n{stdout}"
    );
    assert_nothing_attached("after SIGINT");
}

#[test]
fn return_values_with_fexit() {
    return_values_match("fentry");
}

#[test]
fn return_values_with_kretprobe() {
    return_values_match("kprobe");
}

#[test]
fn pid_filter_traces_one_process() {
    if !kernel_supports("kprobe") {
        return;
    }
    let mut opener = background_opener();
    let mut other = background_opener();
    let pid = opener.id().to_string();
    let tracer = Tracer::start(&["-p", &pid, "--count", "3", FUNCTION]);
    let (code, stdout, stderr) = tracer.finish();
    for child in [&mut opener, &mut other] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(code, Some(0), "stderr: {stderr}");
    for line in event_lines(&stdout) {
        let (_, event_pid, _, _) = parse_event(line);
        assert_eq!(event_pid.to_string(), pid, "{line}");
    }
}

#[test]
fn verbose_explains_mechanism() {
    if !kernel_supports("fentry") {
        return;
    }
    let mut opener = background_opener();
    let tracer = Tracer::start(&["-v", "--count", "1", FUNCTION]);
    let (code, _, stderr) = tracer.finish();
    let _ = opener.kill();
    let _ = opener.wait();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("attached with fentry"), "{stderr}");
}

/// Each way a run can end, after which nothing may stay attached.
fn exit_path_leaves_nothing(signal: i32, name: &str) {
    if !kernel_supports("kprobe") {
        return;
    }
    for mechanism in ["fentry", "kprobe"] {
        if mechanism == "fentry" && !kernel_expected_to_have("fentry") {
            continue;
        }
        let tracer = Tracer::start(&["--mechanism", mechanism, "--return", FUNCTION]);
        assert!(
            !common::tracer_programs().is_empty(),
            "{name}/{mechanism}: the tracer's programs should be loaded while it runs"
        );
        tracer.signal(signal);
        let (code, _, stderr) = tracer.finish();
        if signal == libc::SIGKILL {
            assert_eq!(code, None, "{name}: killed by a signal");
        } else {
            assert_eq!(code, Some(0), "{name}/{mechanism}: {stderr}");
            assert!(stderr.contains("traced"), "{name}/{mechanism}: summary missing: {stderr}");
        }
        assert_nothing_attached(&format!("after {name} with {mechanism}"));
    }
}

#[test]
fn sigint_leaves_nothing() {
    exit_path_leaves_nothing(libc::SIGINT, "SIGINT");
}

#[test]
fn sigterm_leaves_nothing() {
    exit_path_leaves_nothing(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_leaves_nothing() {
    exit_path_leaves_nothing(libc::SIGHUP, "SIGHUP");
}

#[test]
fn sigkill_leaves_nothing() {
    exit_path_leaves_nothing(libc::SIGKILL, "SIGKILL");
}

#[test]
fn failure_half_way_leaves_nothing() {
    if !kernel_supports("kprobe") {
        return;
    }
    // With --return, the kprobe mechanism attaches an entry program and then
    // a return program; the injected fault fires after the first attach.
    let output = run(common::kprobe_attach()
        .args(["--mechanism", "kprobe", "--return", FUNCTION])
        .env("PROBE_INJECT_FAULT", "after-attach"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("injected failure"), "{stderr}");
    assert_nothing_attached("after a failure half-way through attaching");
}

#[test]
fn unknown_function_in_vm() {
    let output = run(common::kprobe_attach().arg("do_sys_opneat2"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did you mean: do_sys_openat2"), "{stderr}");
}

/// Runs `kprobe-attach [--return] --mechanism M FUNCTION SCRIPT` while the
/// helper opens `paths`; returns the script's output lines printed for the
/// helper (its comm is "probe-test-help") and the helper's results.
fn script_run(mechanism: &str, return_probe: bool, script: &str, paths: &[&str]) -> (Vec<String>, Vec<i64>) {
    let mut args = vec!["--mechanism", mechanism];
    if return_probe {
        args.push("--return");
    }
    args.extend([FUNCTION, script]);
    let mut tracer = Tracer::start_script(&args);
    let (_, results) = open_paths(paths);
    thread::sleep(Duration::from_millis(500));
    tracer.signal(libc::SIGINT);
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "stderr: {stderr}");
    let provider = match (mechanism, return_probe) {
        ("fentry", true) => "fexit",
        ("kprobe", true) => "kretprobe",
        (other, _) => other,
    };
    assert!(stderr.contains(&format!("with {provider}.")), "{stderr}");
    let lines = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("probe-test-help "))
        .map(str::to_owned)
        .collect();
    (lines, results)
}

fn script_prints_opened_paths(mechanism: &str) {
    if !kernel_supports(mechanism) {
        return;
    }
    let paths = ["/etc/hostname", "/no/such/file", "/proc/version"];
    let (lines, _) = script_run(
        mechanism,
        false,
        r#"/comm == "probe-test-help"/ { printf("%s %s\n", comm, str(args.filename)); }"#,
        &paths,
    );
    // The dynamic loader's opens come first; the helper's own are last.
    assert!(
        lines.ends_with(&paths.map(str::to_owned)),
        "script output {lines:?} should end with {paths:?}"
    );
    assert_nothing_attached("after a script run");
}

#[test]
fn script_paths_with_fentry() {
    script_prints_opened_paths("fentry");
}

#[test]
fn script_paths_with_kprobe() {
    script_prints_opened_paths("kprobe");
}

fn script_prints_return_values(mechanism: &str) {
    if !kernel_supports(mechanism) {
        return;
    }
    let (lines, results) = script_run(
        mechanism,
        true,
        r#"/comm == "probe-test-help"/ { printf("%s %d\n", comm, retval); }"#,
        &["/etc/hostname", "/no/such/file", "/", "/etc/passwd"],
    );
    let values: Vec<i64> = lines
        .iter()
        .map(|line| line.trim().parse().unwrap_or_else(|_| panic!("not a number: {line:?}")))
        .collect();
    assert_eq!(results[1], -2, "{results:?}");
    assert!(values.ends_with(&results), "script printed {values:?}, the helper got {results:?}");
}

#[test]
fn script_retval_with_fexit() {
    script_prints_return_values("fentry");
}

#[test]
fn script_retval_with_kretprobe() {
    script_prints_return_values("kprobe");
}

#[test]
fn script_error_names_the_parameter() {
    if !kernel_supports("fentry") {
        return;
    }
    let output = run(common::kprobe_attach().args([FUNCTION, "{ printf(\"%s\\n\", str(args.filenme)); }"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`do_sys_openat2` has no parameter `filenme`"), "{stderr}");
    assert!(stderr.contains("did you mean: filename?"), "{stderr}");
    assert_nothing_attached("after a script error");
}

fn example(name: &str) -> String {
    let directory = std::env::var("PROBE_EXAMPLES_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../examples").to_owned());
    format!("{directory}/{name}")
}

/// Runs an example with `probe run FILE -c 'probe-test-helper open PATHS'`.
fn run_example(name: &str, paths: &[&str]) -> String {
    let command = format!("{} open {}", common::bin("probe-test-helper").display(), paths.join(" "));
    let output = run(std::process::Command::new(common::bin("probe"))
        .args(["run", &example(name), "-c", &command]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{name}: {stderr}");
    text(&output.stdout)
}

#[test]
fn example_vfs_open() {
    if !kernel_supports("fentry") {
        return;
    }
    let stdout = run_example("vfs_open.bt", &["/etc/hostname"]);
    assert!(
        stdout.lines().any(|l| l.starts_with("probe-test-help") && l.ends_with(" hostname")),
        "{stdout}"
    );
}

#[test]
fn example_open_failures() {
    if !kernel_supports("kprobe") {
        return;
    }
    let stdout = run_example("open_failures.bt", &["/no/such/file", "/etc/hostname"]);
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("probe-test-help")).collect();
    assert!(lines.iter().any(|l| l.ends_with("failed with -2")), "{stdout}");
    assert!(lines.iter().all(|l| l.contains("failed with -")), "{stdout}");
}

/// The latency idiom on vfs_read with the given entry and return
/// providers: the histogram's total must equal the number of reads that
/// busybox dd made (bs=2 over 6 bytes: 2, 2, 2, then 0 at the end).
fn latency_histogram_counts_calls(entry: &str, exit: &str, feature: &str) {
    if !kernel_supports(feature) {
        return;
    }
    let data = std::env::temp_dir().join(format!("probe-latency-{}", std::process::id()));
    std::fs::write(&data, b"abcdef").expect("write data file");
    let script = format!(
        "{entry}:vfs_read /pid == cpid/ {{ @start[tid] = nsecs; }} \
         {exit}:vfs_read /@start[tid]/ {{ @ns = hist(nsecs - @start[tid]); delete(@start[tid]); }}"
    );
    let command = format!("busybox dd if={} of=/dev/null bs=2", data.display());
    let output = run(std::process::Command::new(common::bin("probe")).args(["run", "-e", &script, "-c", &command]));
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let total: u64 = stdout
        .lines()
        .skip_while(|l| !l.starts_with("@ns:"))
        .skip(1)
        .take_while(|l| l.starts_with('['))
        .filter_map(|l| l.split_whitespace().nth(2).and_then(|n| n.parse::<u64>().ok()))
        .sum();
    assert_eq!(total, 4, "{entry}/{exit}: four reads, histogram:\n{stdout}");
    assert!(!stdout.contains("@start["), "every start was deleted:\n{stdout}");
    let _ = std::fs::remove_file(data);
}

#[test]
fn latency_idiom_with_kprobes() {
    latency_histogram_counts_calls("kprobe", "kretprobe", "kprobe");
}

#[test]
fn latency_idiom_with_fentry() {
    latency_histogram_counts_calls("fentry", "fexit", "fentry");
}

#[test]
fn example_vfs_read_latency() {
    if !kernel_supports("kprobe") {
        return;
    }
    let output = run(std::process::Command::new(common::bin("probe"))
        .args(["run", &example("vfs_read_latency.bt"), "-c", "busybox dd if=/etc/hostname of=/dev/null bs=1"]));
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(stdout.contains("@us: \n"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("[0]") || l.starts_with("[1]") || l.starts_with("[2,")), "{stdout}");
}

#[test]
fn data_symbol_is_not_a_function() {
    // The Debian kernels list data symbols in /proc/kallsyms
    // (CONFIG_KALLSYMS_ALL); jiffies is one.
    let output = run(common::kprobe_attach().arg("jiffies"));
    let stderr = text(&output.stderr);
    if stderr.contains("not found") {
        eprintln!("skipped: this kernel's /proc/kallsyms lists no data symbols");
        return;
    }
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`jiffies` is a data symbol"), "{stderr}");
}

#[test]
fn untraceable_function_is_explained() {
    if !kernel_supports("kprobe") {
        return;
    }
    // memcpy is written in assembly and never traceable; both mechanisms
    // fail, and the message says why instead of only giving errnos.
    let output = run(common::kprobe_attach().arg("memcpy"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`memcpy` cannot be traced"), "{stderr}");
    assert!(stderr.contains("not in available_filter_functions"), "{stderr}");
    assert_nothing_attached("after an untraceable function");
}

#[test]
fn tracer_ends_when_p_process_exits() {
    if !kernel_supports("kprobe") {
        return;
    }
    let mut sleeper = std::process::Command::new("sleep").arg("3").spawn().expect("sleep starts");
    let pid = sleeper.id().to_string();
    let output = run(common::kprobe_attach().args(["-p", &pid, FUNCTION]));
    let _ = sleeper.wait();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("calls traced"), "{stderr}");
    assert_nothing_attached("after the -p process exited");
}
