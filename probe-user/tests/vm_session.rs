//! `probe session` on kprobes and fentry, inside the test VM (`cargo xtask
//! test --tier vm`); the host tests run the same scenarios on tracepoints.
//! The VM has neither tmux nor curl, so `probe top` and the metrics
//! endpoint are tested on the host only.

mod common;
#[path = "common/session.rs"]
mod session;

use common::kernel_expected_to_have;

const KPROBE: &str = "kprobe:__x64_sys_kill";
const FENTRY: &str = "fentry:__x64_sys_kill";
/// A glob: one kprobe.multi link where the kernel has fprobe (the 6.12
/// test kernel), one kprobe per function elsewhere.
const KPROBE_GLOB: &str = "kprobe:__x64_sys_kil?";
const TRACEPOINT: &str = "tracepoint:syscalls:sys_enter_kill";

/// Tells whether the kernel has `feature`; prints why a test skips when
/// it has not, and fails when the runner states that it must.
fn has(feature: &str) -> bool {
    let present = match feature {
        "kprobe" => common::kernel_has_kprobes(),
        _ => std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
    };
    if !present {
        assert!(!kernel_expected_to_have(feature), "this kernel should have {feature}");
        eprintln!("skipped: this kernel has no {feature}");
    }
    present
}

#[test]
fn kprobe_lifecycle() {
    if has("kprobe") {
        session::lifecycle("vm-kprobe", KPROBE);
    }
}

#[test]
fn fentry_lifecycle() {
    if has("fentry") {
        session::lifecycle("vm-fentry", FENTRY);
    }
}

#[test]
fn kprobe_glob_lifecycle() {
    if has("kprobe") {
        session::lifecycle("vm-glob", KPROBE_GLOB);
    }
}

#[test]
fn tracepoint_lifecycle() {
    session::lifecycle("vm-tracepoint", TRACEPOINT);
}

#[test]
fn kprobe_ttl_expiry() {
    if has("kprobe") {
        session::ttl_expiry("vm-ttl", KPROBE, 15);
    }
}

#[test]
fn fentry_ttl_expiry() {
    if has("fentry") {
        session::ttl_expiry("vm-fttl", FENTRY, 15);
    }
}

#[test]
fn half_way_failure_kprobe_then_fentry() {
    if has("kprobe") && has("fentry") {
        session::half_way_failure("vm-half", KPROBE, FENTRY);
    }
}

#[test]
fn stop_cleans_partly_removed_kprobe() {
    if has("kprobe") {
        session::stop_after_manual_removal("vm-partial", KPROBE);
    }
}

#[test]
fn bad_starts_are_rejected() {
    if has("kprobe") {
        session::rejected_starts(KPROBE);
    }
}

#[test]
fn concurrent_kprobe_sessions() {
    if has("kprobe") {
        session::concurrent_starts(KPROBE);
    }
}

#[test]
fn lsm_session_counts_and_stops() {
    let lsm_active = std::fs::read_to_string("/sys/kernel/security/lsm").is_ok_and(|list| list.split(',').any(|name| name.trim() == "bpf"));
    if !lsm_active {
        assert!(!kernel_expected_to_have("lsm"), "this kernel should have the BPF LSM active");
        eprintln!("skipped: the BPF LSM is not active");
        return;
    }
    let script = "lsm:socket_create /comm == \"probe-test-help\"/ { @sockets[args.family] = count(); }";
    session::session_ok(&["start", "vm-lsm", "-e", script]);
    let ids = session::program_ids("vm-lsm");
    for _ in 0..2 {
        let output = common::run(common::helper().args(["socket", "1", "1"]));
        assert!(output.status.success(), "{}", common::text(&output.stderr));
    }
    let shown = session::session_ok(&["show", "vm-lsm"]);
    assert!(common::text(&shown.stdout).contains("@sockets[1]: 2"), "{}", common::text(&shown.stdout));
    session::session_ok(&["stop", "vm-lsm"]);
    assert!(!std::path::Path::new(session::ROOT).join("vm-lsm").exists());
    session::assert_programs_gone(&ids, "after the LSM session");
}
