//! Temporary mitigations: BPF LSM programs that deny one kind of operation
//! (a socket family, module loading, user namespaces, exec of a file,
//! ptrace, bpf()) for a stated time, pinned in bpffs so that they outlive
//! the command that applied them.
//!
//! The deadline is enforced inside the programs: past it they allow
//! everything, even when no `probe` command ever runs again. Expired
//! mitigations are removed by the next `probe` command.

pub mod apply;
pub mod checks;
pub mod rules;
mod self_test;
pub mod store;

use std::{path::Path, thread, time::{Duration, Instant}};

/// Removes expired mitigations, and returns their descriptions. Does
/// nothing, quickly, when not root or when no mitigation was ever applied.
pub fn remove_expired_if_any() -> Vec<store::Meta> {
    if !crate::kernel::is_root() || !Path::new(store::ROOT).exists() {
        return Vec::new();
    }
    match store::remove_expired() {
        Ok(removed) => removed,
        Err(err) => {
            log::warn!("failed to remove expired mitigations in {}: {err}", store::ROOT);
            Vec::new()
        }
    }
}

/// Waits until none of the programs `ids` is loaded any more, for at
/// most `timeout`. The kernel frees a program shortly after its last
/// pinned link is unlinked, once an RCU grace period has passed. Returns
/// whether they are gone.
pub fn wait_unloaded(ids: &[u32], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let loaded = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .any(|program| ids.contains(&program.id()));
        if !loaded {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
