//! Cargo invocations shared by the VM runner, the tests and the demo.

use std::env;
use std::process::Command;

use anyhow::{Context, Result};

use crate::command;
use crate::paths;

/// The binaries that every VM gets in /usr/bin, as built by
/// [`build_binaries`] into the debug target directory.
pub const VM_BINARIES: [&str; 3] = ["probe", "kprobe-attach", "probe-test-helper"];

/// Returns a `cargo` command that runs in the workspace root with the same cargo
/// that runs xtask.
pub fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(paths::workspace_root());
    command
}

/// Builds the binaries listed in [`VM_BINARIES`] with the debug profile.
/// The host integration tests run them from the target directory too.
pub fn build_binaries() -> Result<()> {
    println!("building probe-user and probe-test-helper (debug) ...");
    command::run(cargo().args(["build", "-p", "probe-user", "-p", "probe-test-helper"]))
        .context("building probe-user and probe-test-helper failed")
}
