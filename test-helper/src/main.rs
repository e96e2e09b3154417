//! Deterministic workloads and BPF inspection for the integration tests,
//! on the host and inside the test VM.
//!
//! Every command prints one line per item so that a test can parse it.
//! System call results are printed the way the kernel returns them: the
//! return value on success, the negative errno on failure.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use aya::programs::links::LinkType;
use aya::programs::{loaded_links, loaded_programs};
use clap::{Parser, Subcommand};

mod operations;

#[derive(Parser)]
#[command(
    name = "probe-test-helper",
    about = "Workloads and BPF inspection for the probe integration tests"
)]
struct Cli {
    #[command(flatten)]
    identity: operations::Identity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open each PATH read-only with openat(2) and print `PATH RESULT`,
    /// where RESULT is the file descriptor or the negative errno.
    ///
    /// Every descriptor stays open until the program exits, so each path
    /// gets a different descriptor.
    Open {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Milliseconds to sleep before exiting, so that a tracer can
        /// still read this process's mappings to name user stack frames.
        #[arg(long, default_value_t = 0)]
        linger_ms: u64,
    },

    /// Open and close PATH COUNT times, sleeping INTERVAL_MS milliseconds
    /// between two opens. A COUNT of 0 repeats until the process is killed.
    ///
    /// Prints nothing on success. Failed opens are reported on stderr and
    /// make the exit status 1.
    OpenLoop {
        path: PathBuf,
        interval_ms: u64,
        count: u64,
    },

    /// Print every loaded BPF program as `prog ID TYPE NAME` and every BPF
    /// link as `link ID TYPE PROG_ID`.
    ///
    /// Types use bpftool's names (kprobe, tracing, lsm, perf_event, ...).
    /// A program without a name is printed with the name `-`.
    BpfObjects {
        /// Print only programs whose name starts with this prefix, and only
        /// the links of those programs. The kernel keeps the first 15 bytes
        /// of a program's name.
        #[arg(long, value_name = "PREFIX")]
        name_prefix: Option<String>,
    },

    /// Print the sum of every value of the pinned per-CPU hash map at
    /// PATH, whose keys and values must be 8 bytes, such as a script's
    /// `@m = count()` or `@m[1] = count()`.
    MapSum { path: PathBuf },

    /// Call kill(PID, 0) for each PID and print `PID RESULT`, where RESULT
    /// is 0 or the negative errno (-3 is ESRCH: no such process).
    KillZero {
        #[arg(required = true, allow_negative_numbers = true)]
        pids: Vec<i32>,
    },

    /// Start a child, stop it under ptrace, read its registers COUNT times
    /// with PTRACE_GETREGS (which runs the kernel's `genregs_get`), kill
    /// it, and print `getregs RESULT` for the last read.
    PtraceGetregs { count: u32 },

    /// Start THREADS threads that each sleep MS milliseconds in
    /// nanosleep(2) at the same time, wait for them, and print `slept
    /// THREADS`.
    SleepThreads { threads: u32, ms: u64 },

    /// Sleep DELAY_MS milliseconds, call `chain_a`, which calls `chain_b`,
    /// which calls `chain_c`, COUNT times, pass `chain_c` to
    /// `take_function` once, print `chain COUNT`, then sleep
    /// LINGER_MS milliseconds so that a tracer can still read this
    /// process's mappings.
    CallChain {
        count: u32,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long, default_value_t = 300)]
        linger_ms: u64,
    },

    /// For each LENGTH, call `take_string(text, LENGTH)` with a string of
    /// that many characters (`0123456789abcdefghijklmnopqrstuvwxyz`
    /// repeated), print `string LENGTH`, then sleep LINGER_MS
    /// milliseconds.
    Strings {
        #[arg(required = true)]
        lengths: Vec<usize>,
        #[arg(long, default_value_t = 300)]
        linger_ms: u64,
    },

    /// Open a TCP connection to ADDRESS (`127.0.0.1:PORT` or
    /// `[::1]:PORT`), print `connected ADDRESS`, and close it.
    TcpConnect { address: std::net::SocketAddr },

    /// Call socket(FAMILY, TYPE, 0) with numeric values and print `socket
    /// RESULT`.
    Socket { family: i32, socket_type: i32 },

    /// Call unshare(CLONE_NEWUSER) and print `unshare RESULT`.
    UnshareUserns,

    /// Call init_module on an invalid 64-byte image and print
    /// `init_module RESULT` (-8, ENOEXEC, unless denied).
    InitModule,

    /// Call finit_module on PATH and print `finit_module RESULT`.
    FinitModule { path: PathBuf },

    /// Write 64 zero bytes to PATH: a file that is not a valid module.
    WriteInvalidModule { path: PathBuf },

    /// Run PATH with ARGS and print `exec STATUS`, or `exec -ERRNO` when
    /// exec failed.
    Exec {
        path: PathBuf,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },

    /// PTRACE_ATTACH to a forked child and read its /proc/PID/environ;
    /// print `ptrace_attach RESULT` and `read_environ RESULT`.
    PtraceAttach,

    /// Call PTRACE_TRACEME in a forked child; print `ptrace_traceme RESULT`.
    PtraceTraceme,

    /// Call bpf(BPF_PROG_GET_NEXT_ID) and print `bpf RESULT`.
    Bpf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = cli.identity.apply() {
        eprintln!("probe-test-helper: {error:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Open { paths, linger_ms } => {
            let result = open_all(&paths);
            std::thread::sleep(Duration::from_millis(linger_ms));
            result
        }
        Command::OpenLoop {
            path,
            interval_ms,
            count,
        } => open_loop(&path, Duration::from_millis(interval_ms), count),
        Command::BpfObjects { name_prefix } => print_bpf_objects(name_prefix.as_deref()),
        Command::MapSum { path } => print_map_sum(&path),
        Command::KillZero { pids } => {
            kill_zero(&pids);
            Ok(true)
        }
        Command::PtraceGetregs { count } => ptrace_getregs(count),
        Command::SleepThreads { threads, ms } => sleep_threads(threads, Duration::from_millis(ms)),

        Command::CallChain { count, delay_ms, linger_ms } => {
            std::thread::sleep(Duration::from_millis(delay_ms));
            call_chain(count, Duration::from_millis(linger_ms));
            Ok(true)
        }
        Command::Strings { lengths, linger_ms } => {
            pass_strings(&lengths, Duration::from_millis(linger_ms));
            Ok(true)
        }
        Command::TcpConnect { address } => tcp_connect(address),
        Command::Socket { family, socket_type } => {
            operations::socket(family, socket_type);
            Ok(true)
        }
        Command::UnshareUserns => {
            operations::unshare_userns();
            Ok(true)
        }
        Command::InitModule => {
            operations::init_module();
            Ok(true)
        }
        Command::FinitModule { path } => operations::finit_module(&path).map(|()| true),
        Command::WriteInvalidModule { path } => operations::write_invalid_module(&path).map(|()| true),
        Command::Exec { path, args } => {
            operations::exec(&path, &args);
            Ok(true)
        }
        Command::PtraceAttach => {
            operations::ptrace_attach();
            Ok(true)
        }
        Command::PtraceTraceme => {
            operations::ptrace_traceme();
            Ok(true)
        }
        Command::Bpf => {
            operations::bpf();
            Ok(true)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("probe-test-helper: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Opens `path` read-only and returns the file descriptor or the negative
/// errno. The caller owns the descriptor.
/// The pattern that `strings` repeats: each position in a string shows
/// where the string was cut.
const STRING_PATTERN: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Returns the string of `length` characters that `strings` passes.
pub fn pattern_string(length: usize) -> Vec<u8> {
    STRING_PATTERN.iter().copied().cycle().take(length).collect()
}

// The probe targets for the uprobe tests: plain C-ABI symbols that are
// never inlined, so that each call enters the function and each frame
// shows in a user stack.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chain_c(value: u64) -> u64 {
    std::hint::black_box(value + 3)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chain_b(value: u64) -> u64 {
    std::hint::black_box(chain_c(value + 2))
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chain_a(value: u64) -> u64 {
    std::hint::black_box(chain_b(value + 1))
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn take_string(text: *const std::ffi::c_char, length: usize) -> usize {
    std::hint::black_box(text);
    std::hint::black_box(length)
}

/// Receives a function pointer, for `usym()` to name.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn take_function(function: extern "C" fn(u64) -> u64) -> u64 {
    std::hint::black_box(function as usize as u64)
}

fn tcp_connect(address: std::net::SocketAddr) -> Result<bool> {
    let stream = std::net::TcpStream::connect(address).with_context(|| format!("failed to connect to {address}"))?;
    println!("connected {address}");
    drop(stream);
    Ok(true)
}

fn call_chain(count: u32, linger: Duration) {
    for index in 0..count {
        std::hint::black_box(chain_a(u64::from(index)));
    }
    take_function(chain_c);
    println!("chain {count}");
    std::thread::sleep(linger);
}

fn pass_strings(lengths: &[usize], linger: Duration) {
    for &length in lengths {
        let text = std::ffi::CString::new(pattern_string(length)).expect("the pattern has no NUL");
        take_string(text.as_ptr(), length);
        println!("string {length}");
    }
    std::thread::sleep(linger);
}

fn open_read_only(path: &Path) -> Result<i32> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("invalid path {}: it contains a NUL byte", path.display()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::openat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    Ok(if fd >= 0 { fd } else { negative_errno() })
}

fn negative_errno() -> i32 {
    -io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open_all(paths: &[PathBuf]) -> Result<bool> {
    // The descriptors are never closed here, so the kernel closes them when
    // the process exits and every path gets its own descriptor.
    for path in paths {
        let result = open_read_only(path)?;
        println!("{} {result}", path.display());
    }
    Ok(true)
}

fn open_loop(path: &Path, interval: Duration, count: u64) -> Result<bool> {
    let mut failures: u64 = 0;
    let mut iteration: u64 = 0;
    while count == 0 || iteration < count {
        if iteration > 0 {
            thread::sleep(interval);
        }
        iteration += 1;

        let fd = open_read_only(path)?;
        if fd >= 0 {
            // SAFETY: `fd` was returned by openat above and is closed once.
            unsafe { libc::close(fd) };
            continue;
        }
        failures += 1;
        // Report the first failure only, so that an endless loop on a
        // missing file does not flood the console.
        if failures == 1 {
            eprintln!(
                "probe-test-helper: open-loop: opening {} failed: {}",
                path.display(),
                io::Error::from_raw_os_error(-fd)
            );
        }
    }
    if failures > 0 {
        eprintln!("probe-test-helper: open-loop: {failures} of {count} opens failed");
    }
    Ok(failures == 0)
}

fn print_map_sum(path: &Path) -> Result<bool> {
    use aya::maps::{Map, MapData, PerCpuHashMap};
    let data = MapData::from_pin(path).with_context(|| format!("failed to open the pinned map {}", path.display()))?;
    let map: PerCpuHashMap<MapData, u64, u64> = PerCpuHashMap::try_from(Map::PerCpuHashMap(data))
        .with_context(|| format!("{} is not a per-CPU hash map of 8-byte keys and values", path.display()))?;
    let mut sum = 0u64;
    for entry in map.iter() {
        let (_, values) = entry.with_context(|| format!("failed to read {}", path.display()))?;
        sum += values.iter().sum::<u64>();
    }
    println!("{sum}");
    Ok(true)
}

fn print_bpf_objects(name_prefix: Option<&str>) -> Result<bool> {
    let mut errors = Vec::new();
    let mut printed_programs = Vec::new();

    for program in loaded_programs() {
        let program = match program {
            Ok(program) => program,
            // A program can be unloaded between listing its id and reading
            // its info, so one failure does not end the listing.
            Err(error) => {
                errors.push(format!("reading a BPF program's info failed: {error}"));
                continue;
            }
        };
        let name = String::from_utf8_lossy(program.name()).into_owned();
        if name_prefix.is_some_and(|prefix| !name.starts_with(prefix)) {
            continue;
        }
        let type_name = format!("{:?}", program.program_type())
            .trim_start_matches("BPF_PROG_TYPE_")
            .to_lowercase();
        let name = if name.is_empty() {
            "-".to_owned()
        } else {
            name
        };
        println!("prog {} {type_name} {name}", program.id());
        printed_programs.push(program.id());
    }

    for link in loaded_links() {
        let link = match link {
            Ok(link) => link,
            Err(error) => {
                errors.push(format!("reading a BPF link's info failed: {error}"));
                continue;
            }
        };
        if name_prefix.is_some() && !printed_programs.contains(&link.program_id()) {
            continue;
        }
        let type_name = match link.link_type() {
            Ok(link_type) => link_type_name(link_type),
            Err(error) => format!("unknown({error})"),
        };
        println!("link {} {type_name} {}", link.id(), link.program_id());
    }

    for error in &errors {
        eprintln!("probe-test-helper: bpf-objects: {error}");
    }
    Ok(errors.is_empty())
}

/// Returns bpftool's name for a link type.
fn link_type_name(link_type: LinkType) -> String {
    let name = match link_type {
        LinkType::Unspecified => "unspec",
        LinkType::RawTracePoint => "raw_tracepoint",
        LinkType::Tracing => "tracing",
        LinkType::Cgroup => "cgroup",
        LinkType::Iter => "iter",
        LinkType::Netns => "netns",
        LinkType::Xdp => "xdp",
        LinkType::PerfEvent => "perf_event",
        LinkType::KProbeMulti => "kprobe_multi",
        LinkType::StructOps => "struct_ops",
        LinkType::Netfilter => "netfilter",
        LinkType::Tcx => "tcx",
        LinkType::UProbeMulti => "uprobe_multi",
        LinkType::Netkit => "netkit",
        other => return format!("{other:?}").to_lowercase(),
    };
    name.to_owned()
}

fn kill_zero(pids: &[i32]) {
    for &pid in pids {
        // SAFETY: signal 0 only checks that the process exists and that we
        // may signal it; nothing is delivered.
        let result = unsafe { libc::kill(pid, 0) };
        let result = if result == 0 { 0 } else { negative_errno() };
        println!("{pid} {result}");
    }
}

fn ptrace_getregs(count: u32) -> Result<bool> {
    // SAFETY: the child only calls async-signal-safe functions (ptrace,
    // raise, _exit) before it is killed.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork failed");
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns into Rust code.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: `status` is a valid pointer for the call.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut result = 0;
    for _ in 0..count {
        // SAFETY: `regs` is a writable user_regs_struct, which
        // PTRACE_GETREGS fills.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        result = unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs as *mut libc::user_regs_struct) };
        if result < 0 {
            result = negative_errno() as libc::c_long;
        }
    }
    // SAFETY: `pid` is our stopped child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
    println!("getregs {result}");
    Ok(result == 0)
}

fn sleep_threads(threads: u32, duration: Duration) -> Result<bool> {
    let handles: Vec<_> = (0..threads).map(|_| thread::spawn(move || thread::sleep(duration))).collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a sleeping thread panicked"))?;
    }
    println!("slept {threads}");
    Ok(true)
}
