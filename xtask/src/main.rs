//! Development tasks for the probe workspace, run as `cargo xtask COMMAND`.
//!
//! The kernels the tests need (kprobes, fentry, the BPF LSM) are not
//! available on every host, so the integration tests also run inside QEMU
//! on Debian's cloud kernels. `setup` installs those kernels and the tools,
//! `vm` runs one command in such a VM, and `test` runs every test tier.

mod bench;
mod cargo;
mod command;
mod demo;
mod fuzz;
mod initramfs;
mod kernels;
mod paths;
mod setup;
mod test;
mod vm;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Development tasks: setup, test VMs, tests, the demo and the bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: Debian packages, nightly rust-src,
    /// bpf-linker, cargo-fuzz and the 6.12 and 6.1 test kernels.
    Setup,
    /// Boot a test kernel in QEMU, run COMMAND in it and exit with its
    /// status (124 when the VM times out, 125 when it fails otherwise).
    Vm(vm::VmArgs),
    /// Run setup, then the unit, fuzz, host, bench-smoke and VM test
    /// tiers, and print a summary.
    Test(test::TestArgs),
    /// Show kprobe-attach tracing do_sys_openat2 on each test kernel.
    Demo,
    /// Compare `probe run` with bpftrace on the host kernel: start-up,
    /// per-event cost, throughput, memory and size, and compile time.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<ExitCode> = match cli.command {
        Command::Setup => setup::run().map(|()| ExitCode::SUCCESS),
        Command::Vm(args) => vm::run_command(args),
        Command::Test(args) => test::run(args),
        Command::Demo => demo::run(),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
