//! `probe session` and `probe top` on the host kernel (run as root), with
//! tracepoint sessions: the host has no kprobes, fentry or BPF LSM. The
//! VM runs the same scenarios on kprobes and fentry (`vm_session.rs`).

mod common;
#[path = "common/session.rs"]
mod session;


const POINT: &str = "tracepoint:syscalls:sys_enter_kill";

#[test]
fn lifecycle_start_to_stop() {
    session::lifecycle("host-life", POINT);
}

#[test]
fn ttl_stops_counting_and_removes() {
    session::ttl_expiry("host-ttl", POINT, 3);
}

#[test]
fn half_way_failure_leaves_nothing() {
    session::half_way_failure("host-half", POINT, "tracepoint:syscalls:sys_enter_getppid");
}

#[test]
fn stop_cleans_partly_removed_state() {
    session::stop_after_manual_removal("host-partial", POINT);
}

#[test]
fn bad_starts_are_rejected() {
    session::rejected_starts(POINT);
}

#[test]
fn concurrent_sessions_do_not_interfere() {
    session::concurrent_starts(POINT);
}

#[test]
fn top_shows_and_stops_a_session() {
    session::top_in_tmux("host-top", POINT);
}

#[test]
fn export_serves_prometheus_metrics() {
    session::export_with_curl("host-export", POINT, 19464);
}
