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
