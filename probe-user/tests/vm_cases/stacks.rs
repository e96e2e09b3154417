//! Kernel stacks on a real kernel: `kstack` as a map key and in `printf`,
//! from a kprobe and from fentry, must start at the probed function and
//! include its immediate caller and the system call entry.

use super::common::{bin, kernel_expected_to_have, run, text};
use std::process::Command;

/// Runs `probe run -e SCRIPT -c 'cat /proc/version'` and returns stdout.
fn run_with_cat(script: &str) -> String {
    let output = run(Command::new(bin("probe")).args(["run", "-e", script, "-c", "cat /proc/version"]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "probe run failed\nstdout:\n{stdout}\nstderr:\n{}", text(&output.stderr));
    stdout
}

/// Returns the frame lines of the first `@NAME[` key in `stdout`.
fn first_key_frames<'a>(stdout: &'a str, map: &str) -> Vec<&'a str> {
    let start = format!("{map}[");
    let mut lines = stdout.lines().skip_while(|line| *line != start).skip(1);
    let frames: Vec<&str> = lines.by_ref().take_while(|line| !line.starts_with(']')).map(str::trim).collect();
    assert!(!frames.is_empty(), "no {start} key in:\n{stdout}");
    frames
}

fn assert_syscall_stack(frames: &[&str], context: &str) {
    assert!(frames[0].starts_with("do_sys_openat2+"), "{context}: first frame is not the probed function: {frames:?}");
    assert!(
        frames.get(1).is_some_and(|frame| frame.starts_with("__x64_sys_openat+") || frame.starts_with("do_sys_open+")),
        "{context}: the immediate caller is missing: {frames:?}"
    );
    assert!(frames.iter().any(|frame| frame.starts_with("do_syscall_64+")), "{context}: no do_syscall_64: {frames:?}");
    assert!(
        frames.iter().any(|frame| frame.starts_with("entry_SYSCALL_64")),
        "{context}: no system call entry frame: {frames:?}"
    );
}

#[test]
fn kstack_key_shows_syscall_entry() {
    if !kernel_expected_to_have("kprobe") {
        eprintln!("skipped: the kernel has no kprobes");
        return;
    }
    let stdout = run_with_cat("kprobe:do_sys_openat2 /comm == \"cat\"/ { @[kstack] = count(); }");
    assert_syscall_stack(&first_key_frames(&stdout, "@"), "kprobe key");
    assert!(stdout.lines().any(|line| line.starts_with("]: ")), "no count after the stack:\n{stdout}");
}

#[test]
fn fentry_kstack_keeps_immediate_caller() {
    if !kernel_expected_to_have("fentry") {
        eprintln!("skipped: the kernel has no fentry");
        return;
    }
    // The kprobe shares the map, so both programs key it by one stack
    // trace map.
    let stdout = run_with_cat(
        "fentry:do_sys_openat2 /comm == \"cat\"/ { @f[kstack(5)] = count(); printf(\"printed%s--\\n\", kstack(3)); } \
         kprobe:do_sys_openat2 /comm == \"cat\"/ { @f[kstack(5)] = count(); }",
    );
    assert_syscall_stack(&first_key_frames(&stdout, "@f"), "fentry key");
    let printed: Vec<&str> = stdout
        .lines()
        .skip_while(|line| *line != "printed")
        .skip(1)
        .take_while(|line| *line != "--")
        .map(str::trim)
        .collect();
    assert_eq!(printed.len(), 3, "kstack(3) printed another frame count:\n{stdout}");
    assert_syscall_stack(&[printed[0], printed[1], "do_syscall_64+0", "entry_SYSCALL_64+0"], "fentry printf");
    assert!(!stdout.contains("bpf_trampoline"), "trampoline frames were printed:\n{stdout}");
}

#[test]
fn example_follow_open_crosses_into_kernel() {
    if !kernel_expected_to_have("kprobe") {
        eprintln!("skipped: the kernel has no kprobes");
        return;
    }
    let examples = std::env::var("PROBE_EXAMPLES_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../examples").to_owned());
    let helper = bin("probe-test-helper");
    let output = run(Command::new(bin("probe")).args([
        "run",
        &format!("{examples}/follow_open.bt"),
        "-c",
        // The helper exits at once: its user frames are named through the
        // build ids of its files.
        &format!("{} open /etc/hostname", helper.display()),
    ]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{}", text(&output.stderr));

    let lines: Vec<&str> = stdout.lines().collect();
    let position = |wanted: &str| {
        lines
            .iter()
            .position(|line| line.contains(wanted))
            .unwrap_or_else(|| panic!("no line with `{wanted}` in:\n{stdout}"))
    };
    let called = position("called openat(\"/etc/hostname\") from:");
    let entered = position("entered the system call openat(\"/etc/hostname\")");
    let kernel = position("kernel do_filp_open, reached through:");
    let returned = position("openat returned 3");
    assert!(called < entered, "the system call comes before the libc call:\n{stdout}");
    assert!(entered < kernel, "do_filp_open comes before the system call:\n{stdout}");
    assert!(kernel < returned, "the return comes before do_filp_open:\n{stdout}");

    let user_stack = &lines[called + 1..entered];
    assert!(user_stack[0].trim().starts_with("openat"), "the user stack does not start in openat:\n{stdout}");
    // open_read_only may be inlined into open_all.
    assert!(
        user_stack[1].contains("probe_test_helper::open_"),
        "the user stack does not show the helper's caller of openat:\n{stdout}"
    );
    let kernel_stack: Vec<&str> = lines[kernel + 1..returned].iter().map(|line| line.trim()).collect();
    assert!(kernel_stack[0].starts_with("do_filp_open+"), "the kernel stack does not start at do_filp_open: {kernel_stack:?}");
    assert!(kernel_stack.iter().any(|frame| frame.starts_with("do_sys_openat2+")), "{kernel_stack:?}");
}
