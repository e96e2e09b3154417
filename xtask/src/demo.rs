//! `cargo xtask demo`: kprobe-attach tracing `do_sys_openat2` on each test
//! kernel while a background process keeps opening a file.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::cargo;
use crate::kernels::{self, Series};
use crate::setup;
use crate::vm::{self, Accel, VmConfig, VmOutcome};

/// The guest's shell script: a workload that opens /etc/hostname every
/// 200 ms, then ten entry events and five return events.
const DEMO_SCRIPT: &str = "\
probe-test-helper open-loop /etc/hostname 200 0 &
echo '$ kprobe-attach --count 10 do_sys_openat2'
kprobe-attach --count 10 do_sys_openat2 || exit
echo
echo '$ kprobe-attach --return --count 5 do_sys_openat2'
kprobe-attach --return --count 5 do_sys_openat2
";

const DEMO_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs `cargo xtask demo`.
pub fn run() -> Result<ExitCode> {
    setup::run()?;
    cargo::build_binaries()?;
    let files = vm::vm_binaries(true)?;
    let command = ["sh".to_owned(), "-c".to_owned(), DEMO_SCRIPT.to_owned()];

    let mut failed = Vec::new();
    for series in Series::ALL {
        let kernel = kernels::installed(series)?;
        println!("\n==== Linux {series}: {} ====", kernel.package);
        let config = VmConfig {
            kernel: &kernel,
            append: None,
            timeout: DEMO_TIMEOUT,
            env: &[],
            files: &files,
            command: &command,
            accel: Accel::Auto,
            show_qemu_stderr: true,
        };
        match vm::run(&config, &mut |line| println!("{line}"))? {
            VmOutcome::Exited(0) => {}
            VmOutcome::Exited(status) => {
                eprintln!("error: the demo on {series} exited with status {status}");
                failed.push(series);
            }
            VmOutcome::Failed { message, .. } => {
                eprintln!("error: {message}");
                failed.push(series);
            }
        }
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
