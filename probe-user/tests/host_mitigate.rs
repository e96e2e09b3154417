//! `probe mitigate` on the host kernel (run as root). The development host
//! lists `bpf` among its LSMs but rejects LSM programs, so these tests check
//! what a user of such a kernel sees: a clear error and nothing left
//! behind. Enforcement itself is tested in the VM (`vm_mitigate.rs`).

mod common;

use std::{path::Path, process::Command};

use common::{bin, helper, run, text};

fn mitigate(args: &[&str]) -> std::process::Output {
    run(Command::new(bin("probe")).arg("mitigate").args(args))
}

fn mitigation_programs() -> Vec<String> {
    let output = run(helper().args(["bpf-objects", "--name-prefix", "mt_"]));
    text(&output.stdout).lines().filter(|line| line.starts_with("prog ")).map(str::to_owned).collect()
}

#[test]
fn rejected_lsm_is_explained() {
    let output = mitigate(&["deny-socket", "--family", "packet", "--ttl", "20s"]);
    let stderr = text(&output.stderr);
    if output.status.success() {
        let _ = mitigate(&["remove", "--all"]);
        eprintln!("skipped: this kernel accepts BPF LSM programs, so there is no refusal to explain");
        return;
    }
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.starts_with("probe mitigate: error: "), "{stderr}");
    let explained = stderr.contains("does not allow BPF LSM programs") || stderr.contains("the BPF LSM is not active");
    assert!(explained, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(text(&output.stdout).is_empty(), "nothing is applied: {}", text(&output.stdout));
    let root = Path::new("/sys/fs/bpf/probe/mitigations");
    let left: Vec<_> = std::fs::read_dir(root).map(|dir| dir.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", root.display());
    assert!(mitigation_programs().is_empty(), "{:?}", mitigation_programs());
}

#[test]
fn list_without_mitigations() {
    let output = mitigate(&["list"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "No mitigations applied.\n");
}

#[test]
fn usage_errors_name_the_value() {
    let cases: [(&[&str], &str); 4] = [
        (&["deny-socket", "--family", "pakcet"], "unknown socket family `pakcet`; did you mean: packet?"),
        (&["deny-socket", "--family", "inet", "--type", "bogus"], "unknown socket type `bogus`"),
        (&["deny-userns", "--ttl", "5x"], "invalid duration `5x`"),
        (&["deny-bpf", "--spare", "none"], "could not be listed or removed"),
    ];
    for (args, expected) in cases {
        let output = mitigate(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        assert!(text(&output.stderr).contains(expected), "{args:?}: {}", text(&output.stderr));
    }
}

/// Compiles a script without loading it (`--emit asm`).
fn compile(script: &str) -> std::process::Output {
    run(Command::new(bin("probe")).args(["run", "--emit", "asm", "-e", script]))
}

fn kernel_has_lsm_hooks() -> bool {
    let output = run(Command::new(bin("probe")).args(["list", "lsm:socket_create"]));
    let found = text(&output.stdout).contains("lsm:socket_create");
    if !found {
        eprintln!("skipped: this kernel's BTF has no LSM hooks");
    }
    found
}

#[test]
fn deny_compiles_to_negative_errno() {
    if !kernel_has_lsm_hooks() {
        return;
    }
    // Listing lines look like `   36: r0 = -13`, some with a comment.
    let returns = |listing: &str, value: &str| {
        listing.lines().any(|line| line.split(';').next().unwrap_or("").trim().ends_with(&format!(": r0 = {value}")))
    };
    let output = compile("lsm:socket_create /args.family == 17/ { deny(EACCES); }");
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(returns(&stdout, "-13"), "{stdout}");
    let output = compile("lsm:socket_create { deny(); }");
    assert!(returns(&text(&output.stdout), "-1"), "{}", text(&output.stdout));
}

#[test]
fn deny_errors_are_rendered() {
    if !kernel_has_lsm_hooks() {
        return;
    }
    let cases = [
        (
            "lsm:task_free { deny(); }",
            "error: the LSM hook `task_free` returns void, so deny() cannot make it fail\n  --> -e:1:17\n",
        ),
        (
            "lsm:socket_create { deny(5000); }",
            "error: invalid errno 5000: the kernel accepts 1 to 4095\n  --> -e:1:26\n",
        ),
        (
            "lsm:socket_creat { deny(); }",
            "error: LSM hook `socket_creat` not found: the kernel's BTF has no function bpf_lsm_socket_creat\n",
        ),
        (
            "tracepoint:syscalls:sys_enter_openat { deny(); }",
            "error: deny() works only in lsm probes, not in tracepoint:syscalls:sys_enter_openat\n",
        ),
    ];
    for (script, expected) in cases {
        let output = compile(script);
        assert_eq!(output.status.code(), Some(2), "{script}");
        assert!(text(&output.stderr).starts_with(expected), "{script}:\n{}", text(&output.stderr));
    }
}

#[test]
fn lsm_script_rejection_is_explained() {
    if !kernel_has_lsm_hooks() {
        return;
    }
    let output = run(Command::new(bin("probe")).args(["run", "-e", "lsm:socket_create { deny(); }"]));
    if output.status.success() {
        eprintln!("skipped: this kernel accepts BPF LSM programs");
        return;
    }
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the kernel rejected the program for lsm:socket_create"), "{stderr}");
    assert!(stderr.contains("LSM"), "{stderr}");
}
