//! `probe`: live kernel instrumentation with eBPF.

fn main() -> std::process::ExitCode {
    probe_user::cli::probe_main()
}
