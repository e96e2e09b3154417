//! Every script in `examples/` that runs on the host kernel, run with a
//! workload whose effects it must show. The examples that need kprobes or
//! fentry run in the VM tests.

mod common;

use std::{path::PathBuf, process::Command};

use common::{bin, run, text};

fn example(name: &str) -> PathBuf {
    let directory = std::env::var_os("PROBE_EXAMPLES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples"));
    let path = directory.join(name);
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

/// Runs `probe run EXAMPLE -c COMMAND` and returns (exit code, stdout,
/// stderr).
fn run_example(name: &str, command: &str) -> (Option<i32>, String, String) {
    let output = run(Command::new(bin("probe"))
        .arg("run")
        .arg(example(name))
        .arg("-c")
        .arg(command));
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

fn helper_command(args: &str) -> String {
    format!("{} {args}", bin("probe-test-helper").display())
}

#[test]
fn opensnoop_shows_opened_paths() {
    let (code, stdout, stderr) = run_example("opensnoop.bt", &helper_command("open /etc/hostname /no/such/file"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("COMM "), "BEGIN prints the header first:\n{stdout}");
    assert!(stdout.trim_end().ends_with("done"), "END prints last:\n{stdout}");
    let helper_lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("probe-test-help ")).collect();
    assert!(helper_lines.iter().any(|l| l.ends_with(" /etc/hostname")), "{stdout}");
    assert!(helper_lines.iter().any(|l| l.ends_with(" /no/such/file")), "{stdout}");
}

#[test]
fn execsnoop_shows_exec() {
    let helper = bin("probe-test-helper");
    let (code, stdout, stderr) = run_example("execsnoop.bt", &helper_command("open /etc/hostname"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.lines().any(|l| l.contains("probe-test-help") && l.ends_with(&helper.display().to_string())),
        "the helper's exec is listed with its path:\n{stdout}"
    );
}

#[test]
fn syscall_errors_shows_enoent() {
    let (code, stdout, stderr) = run_example("syscall_errors.bt", &helper_command("open /no/such/file"));
    assert_eq!(code, Some(0), "{stderr}");
    // openat is system call 257 on x86-64; ENOENT is 2.
    assert!(
        stdout.lines().any(|l| l.starts_with("probe-test-help") && l.ends_with("syscall 257 returned -2")),
        "{stdout}"
    );
}

#[test]
fn signals_shows_sender_and_target() {
    let (code, stdout, stderr) = run_example("signals.bt", "sh -c 'trap \"\" USR1; kill -USR1 $$'");
    assert_eq!(code, Some(0), "{stderr}");
    // SIGUSR1 is 10 on x86-64; the shell signals itself.
    let line = stdout
        .lines()
        .find(|l| l.contains("sent signal 10 to"))
        .unwrap_or_else(|| panic!("no SIGUSR1 line:\n{stdout}"));
    let (sender, target) = line.split_once(" sent signal 10 to ").expect("line shape");
    assert_eq!(sender.split(" (").next(), Some("sh"), "{line}");
    assert!(target.starts_with("sh ("), "{line}");
}

#[test]
fn syscall_counts_prints_every_second() {
    let (code, stdout, stderr) = run_example("syscall_counts.bt", "sleep 2.5");
    assert_eq!(code, Some(0), "{stderr}");
    // Two interval prints during the command; each lists `@[comm]: N`
    // lines, and the sleep command itself appears at least once.
    let entries: Vec<&str> = stdout.lines().filter(|l| l.starts_with("@[")).collect();
    assert!(entries.len() >= 2, "{stdout}");
    assert!(entries.iter().any(|l| l.starts_with("@[sleep]: ")), "{stdout}");
    for line in &entries {
        let count = line.rsplit_once(": ").and_then(|(_, n)| n.parse::<u64>().ok());
        assert!(count.is_some_and(|n| n > 0), "{line}");
    }
}

#[test]
fn read_sizes_histogram_of_dd() {
    let path = std::env::temp_dir().join(format!("probe-read-sizes-{}", std::process::id()));
    std::fs::write(&path, b"abcdefghij").expect("write data file");
    // busybox is statically linked, so dd's reads are exactly 4, 4, 2, 0.
    let command = format!("/bin/busybox dd if={} of=/dev/null bs=4", path.display());
    let (code, stdout, stderr) = run_example("read_sizes.bt", &command);
    assert_eq!(code, Some(0), "{stderr}");
    let expected = "\
@bytes[busybox]: 
[0]                    1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |
[1]                    0 |                                                    |
[2, 4)                 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@                          |
[4, 8)                 2 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
";
    assert!(stdout.contains(expected), "{stdout}");
    let _ = std::fs::remove_file(path);
}
