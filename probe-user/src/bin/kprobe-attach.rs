//! `kprobe-attach FUNC`: trace every call of one kernel function.

fn main() -> std::process::ExitCode {
    probe_user::cli::kprobe_attach_main()
}
