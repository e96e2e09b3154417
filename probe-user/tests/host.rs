//! Integration tests on the host kernel (run as root). The development
//! host has no kprobes and refuses fentry programs, so kernel-function
//! tracing itself is tested in the VM; here we check what a user of such a
//! kernel sees, and the usage errors.

mod common;

use common::{assert_nothing_attached, kernel_has_kprobes, kprobe_attach, run, text};

fn host_cannot_attach() -> bool {
    !kernel_has_kprobes()
}

#[test]
fn attach_without_kprobes_or_fentry_explains() {
    if !host_cannot_attach() {
        eprintln!("skipped: this kernel has kprobes, so the explanation does not apply");
        return;
    }
    let output = run(kprobe_attach().arg("do_sys_openat2"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.starts_with("kprobe-attach: error: cannot attach to kernel function `do_sys_openat2`"),
        "{stderr}"
    );
    assert!(stderr.contains("this kernel has no kprobes"), "{stderr}");
    assert!(stderr.contains("CONFIG_KPROBES"), "{stderr}");
    assert!(stderr.contains("fentry"), "{stderr}");
    assert!(stderr.contains("tracepoints"), "{stderr}");
    assert!(text(&output.stdout).is_empty(), "nothing on stdout");
    assert_nothing_attached("after the refused attach");
}

#[test]
fn glob_without_kprobes_or_fentry_explains() {
    if !host_cannot_attach() {
        eprintln!("skipped: this kernel has kprobes, so the explanation does not apply");
        return;
    }
    let output = run(kprobe_attach().args(["vfs_rea*", "{ }"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("cannot attach to kernel function `vfs_rea*`"), "{stderr}");
    assert!(stderr.contains("this kernel has no kprobes"), "{stderr}");
    assert!(stderr.contains("does not allow fentry"), "{stderr}");
    assert!(!stderr.contains("Verifier output"), "a raw load error leaked: {stderr}");
    assert_nothing_attached("after the refused glob");
}

#[test]
fn attach_refused_with_forced_kprobe() {
    if !host_cannot_attach() {
        eprintln!("skipped: this kernel has kprobes");
        return;
    }
    let output = run(kprobe_attach().args(["--mechanism", "kprobe", "do_sys_openat2"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("kprobe: this kernel has no kprobes"), "{stderr}");
    assert!(!stderr.contains("fentry:"), "fentry was not requested: {stderr}");
}

#[test]
fn unknown_function_suggests_close_names() {
    let output = run(kprobe_attach().arg("do_sys_opneat2"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("kernel function `do_sys_opneat2` not found"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean: do_sys_openat2"), "{stderr}");
}

#[test]
fn unknown_function_without_close_names() {
    let output = run(kprobe_attach().arg("zzqx_no_such_function_qqq"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(stderr.contains("check the spelling"), "{stderr}");
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "FUNC"),
        (&["--count", "0", "vfs_read"], "--count"),
        (&["--buffer-size", "1000", "vfs_read"], "invalid --buffer-size 1000"),
        (&["--mechanism", "uprobe", "vfs_read"], "--mechanism"),
        (&["-p", "999999999", "vfs_read"], "invalid -p 999999999"),
        (&["--no-such-option", "vfs_read"], "--no-such-option"),
    ];
    for (args, expected) in cases {
        let output = run(kprobe_attach().args(*args));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "args {args:?}: {stderr}");
        assert!(stderr.contains(expected), "args {args:?}: {stderr}");
    }
}

#[test]
fn probe_attach_matches_kprobe_attach() {
    let output = run(std::process::Command::new(common::bin("probe")).args(["attach", "do_sys_opneat2"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("probe attach: error:"), "{stderr}");
    assert!(stderr.contains("did you mean: do_sys_openat2"), "{stderr}");
}

#[test]
fn kretprobe_arguments_are_rejected() {
    for (script, what) in [
        ("kretprobe:do_sys_openat2 { print(arg0); }", "`arg0`"),
        ("kretprobe:do_sys_openat2 { print(args.dfd); }", "`args.dfd`"),
    ] {
        let output = run(std::process::Command::new(common::bin("probe")).args(["run", "-e", script]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{script}: {stderr}");
        assert!(stderr.contains(&format!("{what} is not available in a kretprobe")), "{script}: {stderr}");
        assert!(stderr.contains("use fexit:do_sys_openat2"), "{script}: {stderr}");
    }
}

#[test]
fn closed_stderr_is_not_a_crash() {
    // `probe ... 2>&1 | head -1` closes stderr early; the tools must not
    // panic (exit 101) when their messages can no longer be written.
    let cases: [&[&str]; 2] = [&["run", "-e", "BEGIN { printf(\"x\\n\"); exit(); }"], &["attach", "nosuch_fn_x"]];
    for args in cases {
        let mut child = std::process::Command::new(common::bin("probe"))
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("probe starts");
        drop(child.stderr.take());
        let status = child.wait().expect("probe exits");
        assert_ne!(status.code(), Some(101), "{args:?} panicked");
        assert!(status.code().is_some(), "{args:?} was killed by a signal");
    }
}

#[test]
fn script_argument_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "the SCRIPT is empty"),
        ("@", "missing file name after `@`"),
        ("@/no/such/script.bt", "failed to read script file /no/such/script.bt"),
        ("BEGIN { exit(); }", "the SCRIPT starts with a probe (`BEGIN`)"),
        ("tracepoint:syscalls:sys_enter_openat { }", "with its own probes with `probe run -e`"),
    ];
    for (script, expected) in cases {
        let output = run(kprobe_attach().args(["do_sys_openat2", script]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{script:?}: {stderr}");
        assert!(stderr.contains(expected), "{script:?}: {stderr}");
    }
}

#[test]
fn list_functions_and_tracepoints() {
    let list = |args: &[&str]| {
        let output = run(std::process::Command::new(common::bin("probe")).arg("list").args(args));
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", text(&output.stderr));
        text(&output.stdout)
    };
    let functions = list(&["do_sys_openat*"]);
    assert!(functions.lines().any(|l| l == "kprobe:do_sys_openat2"), "{functions}");
    let verbose = list(&["-v", "kprobe:do_sys_openat2"]);
    assert!(verbose.contains("do_sys_openat2(int dfd, const char * filename"), "{verbose}");
    let tracepoints = list(&["-v", "tracepoint:syscalls:sys_enter_openat"]);
    assert!(tracepoints.starts_with("tracepoint:syscalls:sys_enter_openat\n"), "{tracepoints}");
    assert!(tracepoints.contains("    const char * filename\n"), "{tracepoints}");
    assert!(list(&["zzqx_no_such_probe_*"]).is_empty());
}
