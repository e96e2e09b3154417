//! Command-line front ends shared by the `probe` and `kprobe-attach`
//! binaries.
//!
//! Exit status: 0 on success, 1 on a runtime failure (including a kernel
//! that cannot attach), 2 on a usage error (a bad option value, or a
//! function that does not exist).

/// Writes a line to standard error. Unlike `eprintln!`, which panics when
/// stderr is a closed pipe (`probe run ... 2>&1 | head -1`), it ignores a
/// failed write: there is nobody left to tell.
macro_rules! status {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Writes text to standard error without a newline, ignoring a failed
/// write as [`status!`] does.
macro_rules! status_text {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod attach;
mod attach_script;
mod child;
pub mod list;
pub mod mitigate;
pub mod run;
pub mod session;
pub mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit status for a runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error, as clap uses for bad options.
pub const EXIT_USAGE: u8 = 2;

/// An error that ends a command, with the exit status it maps to.
#[derive(Debug)]
pub struct CliError {
    pub status: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_USAGE,
            error: anyhow::anyhow!(message.into()),
        }
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Self {
            status: EXIT_FAILURE,
            error: anyhow::anyhow!(message.into()),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        Self {
            status: EXIT_FAILURE,
            error,
        }
    }
}

/// Options every command has.
pub trait Exit {
    fn verbosity(&self) -> u8;
}

/// Sets up logging: warnings and errors only by default, `-v` adds what was
/// chosen and loaded, `-vv` adds debug output. `RUST_LOG` overrides both.
fn init_logging(verbosity: u8) {
    let level = match verbosity {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .parse_default_env();
    let _ = builder.try_init();
    crate::kernel::raise_open_file_limit();
}

/// Runs a command and turns its result into an exit status, printing an
/// error once, prefixed with the program name and with its causes on one
/// line.
fn finish(program: &str, result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError { status, error }) => {
            let mut message = error.to_string();
            for cause in error.chain().skip(1) {
                message.push_str(": ");
                message.push_str(&cause.to_string());
            }
            status!("{program}: error: {message}");
            ExitCode::from(status)
        }
    }
}

/// Trace every call of one kernel function, live, with eBPF.
#[derive(Debug, Parser)]
#[command(name = "kprobe-attach", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
struct KprobeAttachCli {
    #[command(flatten)]
    attach: attach::AttachArgs,
}

/// Live kernel instrumentation with eBPF: trace kernel functions without a
/// reboot.
#[derive(Debug, Parser)]
#[command(name = "probe", version, about, long_about = None, after_help = EXIT_STATUS_HELP)]
struct ProbeCli {
    #[command(subcommand)]
    command: ProbeCommand,
}

#[derive(Debug, Subcommand)]
enum ProbeCommand {
    /// Trace every call of one kernel function (the same as kprobe-attach).
    Attach(attach::AttachArgs),
    /// Compile and run a script in bpftrace's language.
    Run(run::RunArgs),
    /// List the probes this kernel offers: kernel functions, tracepoints,
    /// raw tracepoints and LSM hooks.
    List(list::ListArgs),
    /// Apply, list and remove temporary mitigations: BPF LSM rules that
    /// deny one kind of operation, for a stated time.
    Mitigate(mitigate::MitigateArgs),
    /// Start scripts that keep running after the command returns, list,
    /// read, export and stop them.
    Session(session::SessionArgs),
    /// A live view of every session and mitigation, refreshed every
    /// second: events, CPU time and lost events.
    Top(top::TopArgs),
}

const EXIT_STATUS_HELP: &str =
    "Exit status: 0 on success, 1 on a runtime failure, 2 on a usage error.";

/// Entry point of the `kprobe-attach` binary.
pub fn kprobe_attach_main() -> ExitCode {
    let cli = KprobeAttachCli::parse();
    init_logging(cli.attach.verbosity());
    remove_expired_mitigations("kprobe-attach");
    finish("kprobe-attach", attach::run(&cli.attach))
}

/// Entry point of the `probe` binary.
pub fn probe_main() -> ExitCode {
    let cli = ProbeCli::parse();
    let verbosity = match &cli.command {
        ProbeCommand::Attach(args) => args.verbosity(),
        ProbeCommand::Run(args) => args.verbose,
        ProbeCommand::List(_) => 0,
        ProbeCommand::Mitigate(args) => args.verbosity(),
        ProbeCommand::Session(args) => args.verbose,
        ProbeCommand::Top(_) => 0,
    };
    init_logging(verbosity);
    remove_expired_mitigations("probe");
    match cli.command {
        ProbeCommand::Attach(args) => finish("probe attach", attach::run(&args)),
        ProbeCommand::Run(args) => finish("probe run", run::run(&args)),
        ProbeCommand::List(args) => finish("probe list", list::run(&args)),
        ProbeCommand::Mitigate(args) => finish("probe mitigate", mitigate::run(&args)),
        ProbeCommand::Session(args) => finish("probe session", session::run(&args)),
        ProbeCommand::Top(args) => finish("probe top", top::run(&args)),
    }
}

/// Removes the mitigations and sessions past their deadline, as every command does
/// first, and prints which.
fn remove_expired_mitigations(program: &str) {
    for meta in crate::mitigate::remove_expired_if_any() {
        status!("{program}: removed expired mitigation {} ({})", meta.id, meta.rule);
    }
    for message in crate::session::remove_expired_if_any() {
        status!("{program}: {message}");
    }
}
