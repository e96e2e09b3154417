//! Single operations that the mitigation rules deny: each runs once and
//! prints `NAME RESULT`, where RESULT is the system call's result (a file
//! descriptor, 0, or an exit status) or the negative errno.

use std::{
    ffi::CString,
    fs,
    os::unix::process::ExitStatusExt as _,
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The identity the process takes before the operation.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Identity {
    /// Switch to this uid (and the same gid) first.
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Set the process's comm (the kernel's command name) first.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,
    /// Move the process into this cgroup v2 directory first.
    #[arg(long, value_name = "DIR")]
    pub cgroup: Option<std::path::PathBuf>,
}

impl Identity {
    /// Takes on the identity: cgroup first, while still root, then the
    /// comm and the uid.
    pub fn apply(&self) -> Result<()> {
        if let Some(cgroup) = &self.cgroup {
            let procs = cgroup.join("cgroup.procs");
            fs::write(&procs, std::process::id().to_string())
                .with_context(|| format!("moving into {} failed", procs.display()))?;
        }
        if let Some(comm) = &self.comm {
            let name = CString::new(comm.as_str()).context("the comm contains a NUL byte")?;
            // SAFETY: `name` is NUL-terminated; the kernel copies at most
            // 15 bytes of it.
            if unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) } != 0 {
                bail!("prctl(PR_SET_NAME) failed: {}", std::io::Error::last_os_error());
            }
        }
        if let Some(uid) = self.uid {
            // SAFETY: plain system calls; the gid goes first, while the
            // process may still change it.
            let failed = unsafe { libc::setgid(uid) != 0 || libc::setuid(uid) != 0 };
            if failed {
                bail!("switching to uid {uid} failed: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn errno() -> i64 {
    -i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Returns the result of a system call that returns -1 on failure.
fn result_of(value: i64) -> i64 {
    if value < 0 { errno() } else { value }
}

/// `socket(family, type, 0)`; the socket is closed again.
pub fn socket(family: i32, socket_type: i32) {
    // SAFETY: plain system call.
    let fd = result_of(i64::from(unsafe { libc::socket(family, socket_type, 0) }));
    if fd >= 0 {
        // SAFETY: `fd` is the socket just created.
        unsafe { libc::close(fd as i32) };
    }
    println!("socket {fd}");
}

/// `unshare(CLONE_NEWUSER)`.
pub fn unshare_userns() {
    // SAFETY: plain system call; it changes only this process.
    let result = result_of(i64::from(unsafe { libc::unshare(libc::CLONE_NEWUSER) }));
    println!("unshare {result}");
}

/// `init_module` of 64 zero bytes, which the kernel rejects as an invalid
/// module (ENOEXEC) unless something denies it first.
pub fn init_module() {
    let image = [0u8; 64];
    // SAFETY: `image` is readable for its length and the parameters are a
    // NUL-terminated empty string.
    let result = result_of(unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), c"".as_ptr()) });
    println!("init_module {result}");
}

/// `finit_module` of the file at `path`.
pub fn finit_module(path: &Path) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {} failed", path.display()))?;
    use std::os::fd::AsRawFd as _;
    // SAFETY: the descriptor is open for the duration of the call and the
    // parameters are a NUL-terminated empty string.
    let result = result_of(unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) });
    println!("finit_module {result}");
    Ok(())
}

/// Starts `path` with `args` and prints its exit status, or the negative
/// errno when exec failed.
pub fn exec(path: &Path, args: &[String]) {
    let result = match Command::new(path).args(args).status() {
        Ok(status) => i64::from(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))),
        Err(error) => -i64::from(error.raw_os_error().unwrap_or(0)),
    };
    println!("exec {result}");
}

/// Forks a child that waits, then prints the result of `PTRACE_ATTACH` to
/// it, and of reading its `/proc/PID/environ`, which needs only the read
/// access that ptrace rules leave alone.
pub fn ptrace_attach() {
    // SAFETY: the child only pauses until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: async-signal-safe calls only, in the forked child.
        unsafe {
            libc::pause();
            libc::_exit(0);
        }
    }
    // SAFETY: `child` is our own child; a null address and data are valid
    // for PTRACE_ATTACH.
    let attach = result_of(unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) });
    let environ = match fs::read(format!("/proc/{child}/environ")) {
        Ok(_) => 0,
        Err(error) => -i64::from(error.raw_os_error().unwrap_or(0)),
    };
    // SAFETY: `child` is our own unreaped child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    println!("ptrace_attach {attach}");
    println!("read_environ {environ}");
}

/// Forks a child that calls `PTRACE_TRACEME` and prints its result.
pub fn ptrace_traceme() {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    // SAFETY: the child makes one system call and writes its result.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: async-signal-safe calls only, in the forked child.
        unsafe {
            let result = libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            let value: i32 = if result == 0 { 0 } else { -*libc::__errno_location() };
            libc::write(fds[1], (&raw const value).cast(), 4);
            libc::_exit(0);
        }
    }
    let mut value = [0u8; 4];
    // SAFETY: `fds[0]` is the pipe's read end and `value` is writable.
    unsafe {
        libc::read(fds[0], value.as_mut_ptr().cast(), 4);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    println!("ptrace_traceme {}", i32::from_ne_bytes(value));
}

/// `bpf(BPF_PROG_GET_NEXT_ID)` from id 0: 0, or -ENOENT (-2) when no
/// program is loaded, unless denied.
pub fn bpf() {
    let mut attr = [0u32; 4];
    // SAFETY: `attr` is a zeroed 16-byte bpf_attr prefix of the size given.
    let result = result_of(unsafe { libc::syscall(libc::SYS_bpf, 11, attr.as_mut_ptr(), 16) });
    println!("bpf {result}");
}

/// Writes `path` with 64 zero bytes, a file that is not a valid module.
pub fn write_invalid_module(path: &Path) -> Result<()> {
    fs::write(path, [0u8; 64]).with_context(|| format!("writing {} failed", path.display()))
}
