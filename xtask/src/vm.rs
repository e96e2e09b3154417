//! Booting a test kernel in QEMU to run one command.
//!
//! The guest's console is the serial port, which QEMU connects to its
//! standard output. The runner streams it line by line, hides the line with
//! [`initramfs::EXIT_MARKER`] and takes the command's exit status from it.
//! Without that line the run failed: the kernel panicked, QEMU exited, or
//! the timeout passed. QEMU is killed on every path out of [`run`].

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::cargo::{self, VM_BINARIES};
use crate::command;
use crate::initramfs::{self, EXIT_MARKER, GuestFile};
use crate::kernels::{self, InstalledKernel, Series};
use crate::paths;

/// Exit status of `cargo xtask vm` when the VM timed out, as timeout(1) uses.
pub const EXIT_TIMEOUT: u8 = 124;
/// Exit status of `cargo xtask vm` when the VM failed before the command
/// finished (kernel panic, QEMU error).
pub const EXIT_VM_FAILED: u8 = 125;

/// How long QEMU may take to exit after the guest printed the exit status.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
/// How long the KVM probe may take to boot a minimal initramfs.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// The kernel command line before any `--append` arguments. `panic=-1`
/// reboots at once on a panic, and QEMU's `-no-reboot` turns that reboot
/// into an exit.
const BASE_KERNEL_ARGS: &str = "console=ttyS0 quiet panic=-1";

#[derive(Args, Debug)]
pub struct VmArgs {
    /// Kernel series to boot.
    #[arg(long, value_enum, default_value = "6.12")]
    pub kernel: Series,

    /// Extra kernel command line arguments, appended to
    /// `console=ttyS0 quiet panic=-1`.
    #[arg(long, value_name = "KERNEL_ARGS")]
    pub append: Option<String>,

    /// Seconds from QEMU's start until the VM is killed and the run fails
    /// with exit status 124.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,

    /// Environment variable to export for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Host file or directory to copy into the VM (repeatable). Without
    /// GUEST_PATH it keeps its absolute host path.
    #[arg(long = "file", value_name = "HOST_PATH[:GUEST_PATH]", value_parser = GuestFile::parse)]
    pub files: Vec<GuestFile>,

    /// Use the binaries in target/debug as they are instead of running
    /// `cargo build -p probe-user -p probe-test-helper` first.
    #[arg(long)]
    pub no_build: bool,

    /// CPU emulation. `auto` uses KVM when a test boot with it works (the
    /// verdict is cached in target/vm/accel) and TCG otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,

    /// The command to run in the VM, and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_env(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => bail!("invalid --env `{text}`: expected K=V"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Auto,
    Kvm,
    Tcg,
}

/// One VM run.
pub struct VmConfig<'a> {
    pub kernel: &'a InstalledKernel,
    pub append: Option<&'a str>,
    pub timeout: Duration,
    pub env: &'a [(String, String)],
    pub files: &'a [GuestFile],
    pub command: &'a [String],
    pub accel: Accel,
    /// Whether QEMU's own messages go to stderr. The KVM probe hides them.
    pub show_qemu_stderr: bool,
}

/// The end of a VM run: the command's exit status, or why the VM failed.
#[derive(Debug, PartialEq, Eq)]
pub enum VmOutcome {
    /// The command ran and exited with this status.
    Exited(i32),
    /// The VM ended before the command finished.
    Failed { timed_out: bool, message: String },
}

/// Runs `cargo xtask vm`: builds the binaries unless `--no-build`, boots the
/// kernel, streams the guest's output to stdout and returns the command's
/// exit status.
pub fn run_command(args: VmArgs) -> Result<ExitCode> {
    if !args.no_build {
        cargo::build_binaries()?;
    }
    let kernel = kernels::installed(args.kernel)?;
    let mut files = vm_binaries(!args.no_build)?;
    files.extend(args.files.iter().cloned());
    let config = VmConfig {
        kernel: &kernel,
        append: args.append.as_deref(),
        timeout: Duration::from_secs(args.timeout),
        env: &args.env,
        files: &files,
        command: &args.command,
        accel: args.accel,
        show_qemu_stderr: true,
    };
    let outcome = run(&config, &mut |line| println!("{line}"))?;
    Ok(exit_code(&outcome))
}

/// Converts an outcome into the exit status of `cargo xtask vm`, printing
/// the failure message if there is one.
pub fn exit_code(outcome: &VmOutcome) -> ExitCode {
    match outcome {
        VmOutcome::Exited(status) => ExitCode::from(u8::try_from(*status).unwrap_or(1)),
        VmOutcome::Failed { timed_out, message } => {
            eprintln!("error: {message}");
            if *timed_out {
                eprintln!("  raise --timeout if the command needs longer");
            }
            ExitCode::from(if *timed_out {
                EXIT_TIMEOUT
            } else {
                EXIT_VM_FAILED
            })
        }
    }
}

/// Returns the workspace binaries for /usr/bin in the guest. A missing
/// binary is an error after a build, and only a warning with `--no-build`.
pub fn vm_binaries(built: bool) -> Result<Vec<GuestFile>> {
    let mut files = Vec::new();
    for name in VM_BINARIES {
        let host = paths::debug_dir().join(name);
        if !host.is_file() {
            if built {
                bail!("{} is missing after the build", host.display());
            }
            eprintln!(
                "warning: {} not found, so the VM has no /usr/bin/{name}",
                host.display()
            );
            continue;
        }
        files.push(GuestFile {
            host,
            guest: PathBuf::from("/usr/bin").join(name),
        });
    }
    Ok(files)
}

/// Boots the VM described by `config`, passes each line of guest output to
/// `on_line` and returns how the run ended. Errors are for problems on the
/// host side, such as a missing QEMU or a failed initramfs build.
pub fn run(config: &VmConfig<'_>, on_line: &mut dyn FnMut(&str)) -> Result<VmOutcome> {
    let accel = match config.accel {
        Accel::Auto => detect_accel(config.kernel)?,
        other => other,
    };
    let run_dir = RunDir::create()?;
    let initrd = run_dir.path.join("initrd.cpio");
    let contents = initramfs::Contents {
        files: config.files,
        env: config.env,
        command: config.command,
        modules: Some(&config.kernel.modules),
    };
    initramfs::build(&contents, &run_dir.path.join("root"), &initrd)
        .context("building the initramfs failed")?;

    let mut kernel_args = BASE_KERNEL_ARGS.to_owned();
    if let Some(append) = config.append {
        kernel_args.push(' ');
        kernel_args.push_str(append);
    }
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", if accel == Accel::Kvm { "kvm" } else { "tcg" }])
        .args([
            "-cpu",
            "max",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        // qboot (from qemu-system-data) boots the kernel about a second
        // sooner than SeaBIOS and prints no banner on the serial console.
        .args(["-bios", "qboot.rom"])
        .arg("-kernel")
        .arg(&config.kernel.vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", &kernel_args])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe. PR_SET_PDEATHSIG makes the kernel
    // kill QEMU if xtask dies without running its cleanup.
    unsafe {
        qemu.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let description = command::describe(&qemu);
    let child = qemu.spawn().with_context(|| {
        format!(
            "starting `{description}` failed; install qemu-system-x86 (`cargo xtask setup` does)"
        )
    })?;
    let mut qemu = QemuGuard(child);
    let outcome = watch(&mut qemu, config, on_line)?;
    drop(qemu);
    drop(run_dir);
    Ok(outcome)
}

/// Kills and reaps QEMU when dropped, whatever path leaves [`run`].
struct QemuGuard(Child);

impl Drop for QemuGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Closed,
}

fn spawn_line_reader(
    stream: impl Read + Send + 'static,
    to_event: fn(Vec<u8>) -> Event,
    sender: mpsc::Sender<Event>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if sender.send(to_event(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sender.send(Event::Closed);
    });
}

/// Strips the line ending, which the serial console may turn into `\r\n`.
fn normalise_line(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\n', '\r'])
        .to_owned()
}

/// Reads QEMU's output until it exits, the guest reports the exit status,
/// or the timeout passes.
fn watch(
    qemu: &mut QemuGuard,
    config: &VmConfig<'_>,
    on_line: &mut dyn FnMut(&str),
) -> Result<VmOutcome> {
    let (sender, receiver) = mpsc::channel();
    spawn_line_reader(
        qemu.0.stdout.take().expect("stdout is piped"),
        Event::Stdout,
        sender.clone(),
    );
    spawn_line_reader(
        qemu.0.stderr.take().expect("stderr is piped"),
        Event::Stderr,
        sender,
    );

    let started = Instant::now();
    let mut deadline = started + config.timeout;
    let mut open_streams = 2;
    let mut exit_status = None;
    let mut panic_line = None;
    let mut kvm_error = None;
    let mut recent_stderr: Vec<String> = Vec::new();

    while open_streams > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let event = match receiver.recv_timeout(deadline - now) {
            Ok(event) => event,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Event::Closed => open_streams -= 1,
            Event::Stderr(line) => {
                let line = normalise_line(&line);
                if config.show_qemu_stderr {
                    eprintln!("{line}");
                }
                if line.contains("KVM internal error") {
                    // QEMU pauses the VM instead of exiting on this error.
                    kvm_error = Some(line.clone());
                    break;
                }
                recent_stderr.push(line);
                if recent_stderr.len() > 10 {
                    recent_stderr.remove(0);
                }
            }
            Event::Stdout(line) => {
                // Output after the exit status is the shutdown, and from
                // processes the command left running in the background.
                if exit_status.is_some() {
                    continue;
                }
                let line = normalise_line(&line);
                if let Some(position) = line.find(EXIT_MARKER) {
                    let before = &line[..position];
                    if !before.is_empty() {
                        on_line(before);
                    }
                    let status_text = line[position + EXIT_MARKER.len()..].trim();
                    let status = status_text.parse().with_context(|| {
                        format!("the guest printed an invalid exit status line: {line:?}")
                    })?;
                    exit_status = Some(status);
                    deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
                    continue;
                }
                if line.contains("Kernel panic - not syncing") {
                    panic_line = Some(line.clone());
                }
                on_line(&line);
            }
        }
    }

    let timed_out = open_streams > 0 && kvm_error.is_none();
    let _ = qemu.0.kill();
    let qemu_status = qemu.0.wait().context("waiting for QEMU failed")?;

    if let Some(status) = exit_status {
        return Ok(VmOutcome::Exited(status));
    }
    let series = config.kernel.series;
    let message = if let Some(line) = kvm_error {
        format!("QEMU stopped the {series} VM: {line}; run with --accel tcg")
    } else if timed_out {
        format!(
            "the {series} VM timed out after {} s and was killed",
            config.timeout.as_secs()
        )
    } else if let Some(line) = panic_line {
        format!("the {series} kernel panicked before the command finished: {line}")
    } else {
        describe_early_exit(series, qemu_status, &recent_stderr)
    };
    Ok(VmOutcome::Failed { timed_out, message })
}

fn describe_early_exit(series: Series, status: ExitStatus, recent_stderr: &[String]) -> String {
    let mut message = format!(
        "QEMU exited ({status}) before the command in the {series} VM finished, without printing its exit status"
    );
    if !recent_stderr.is_empty() {
        message.push_str("; QEMU's last messages:\n  ");
        message.push_str(&recent_stderr.join("\n  "));
    }
    message
}

/// Picks KVM when `/dev/kvm` can be opened and a test boot with it works,
/// else TCG. The test boot's verdict is cached in `target/vm/accel`, so only
/// the first run pays for it.
fn detect_accel(kernel: &InstalledKernel) -> Result<Accel> {
    let kvm_openable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !kvm_openable {
        return Ok(Accel::Tcg);
    }
    let cache = paths::vm_dir().join("accel");
    if let Ok(text) = fs::read_to_string(&cache) {
        match text.lines().next() {
            Some("kvm") => return Ok(Accel::Kvm),
            Some("tcg") => return Ok(Accel::Tcg),
            _ => {}
        }
    }

    eprintln!(
        "testing whether KVM works (once; the verdict is cached in {}) ...",
        cache.display()
    );
    let command = ["true".to_owned()];
    let probe = VmConfig {
        kernel,
        append: None,
        timeout: KVM_PROBE_TIMEOUT,
        env: &[],
        files: &[],
        command: &command,
        accel: Accel::Kvm,
        show_qemu_stderr: false,
    };
    let outcome = run(&probe, &mut |_| {})?;
    let (accel, reason) = match outcome {
        VmOutcome::Exited(0) => (Accel::Kvm, "a test boot with KVM worked".to_owned()),
        VmOutcome::Exited(status) => (
            Accel::Tcg,
            format!("the test command exited with status {status} under KVM"),
        ),
        VmOutcome::Failed { message, .. } => (Accel::Tcg, message),
    };
    let name = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    if accel == Accel::Tcg {
        eprintln!("note: KVM does not work on this host, so the VM uses TCG: {reason}");
        eprintln!("note: delete {} to test KVM again", cache.display());
    }
    fs::create_dir_all(paths::vm_dir())?;
    fs::write(&cache, format!("{name}\n{reason}\n"))
        .with_context(|| format!("writing {} failed", cache.display()))?;
    Ok(accel)
}

/// A per-run directory under `target/vm/run/`, removed when dropped, so
/// that concurrent runs do not share an initramfs.
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> Result<Self> {
        static NEXT_RUN: AtomicU32 = AtomicU32::new(0);
        let parent = paths::vm_dir().join("run");
        remove_stale_run_dirs(&parent);
        let pid = std::process::id();
        let path = parent.join(format!(
            "{pid}-{}",
            NEXT_RUN.fetch_add(1, Ordering::Relaxed)
        ));
        if path.exists() {
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing {} failed", path.display()))?;
        }
        fs::create_dir_all(&path).with_context(|| format!("creating {} failed", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Removes run directories left behind by xtask processes that no longer
/// exist, for example after a SIGKILL.
fn remove_stale_run_dirs(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_line_strips_crlf() {
        assert_eq!(
            normalise_line(b"Linux probe-vm 6.12\r\r\n"),
            "Linux probe-vm 6.12"
        );
        assert_eq!(normalise_line(b"no newline"), "no newline");
    }

    #[test]
    fn parse_env_splits_at_first_equals() {
        assert_eq!(
            parse_env("A=b=c").unwrap(),
            ("A".to_owned(), "b=c".to_owned())
        );
        assert!(parse_env("=x").is_err());
        assert!(parse_env("novalue").is_err());
    }
}
