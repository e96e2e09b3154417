//! The `-c` command: started before the probes are attached, so that its
//! pid is known to the script as `cpid`, but held stopped until they are.
//!
//! The child is forked by hand: between `fork` and `exec` it stops itself
//! with `SIGSTOP`, and the tool resumes it with `SIGCONT` once every probe
//! is attached. Stopping makes no system call that a script would see as
//! the command's own (a gate read from a pipe would show up in every
//! `sys_exit_read` script filtered on `cpid`). The child also requests
//! `SIGKILL` if the tool dies before resuming it, so that a killed tool
//! leaves no stopped process behind.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use log::info;
use tokio::io::{Interest, unix::AsyncFd};

use super::CliError;

/// A `-c` command, stopped before `exec` until [`HeldChild::release`].
pub struct HeldChild {
    pub pid: u32,
    /// A pidfd, readable once the child exits.
    pidfd: Option<AsyncFd<OwnedFd>>,
    released: bool,
    reaped: bool,
}

impl HeldChild {
    /// Forks the command and waits until it has stopped itself.
    pub fn spawn(command: &str) -> Result<HeldChild, CliError> {
        let words = split_command(command)
            .map_err(|message| CliError::usage(format!("invalid -c command `{command}`: {message}")))?;
        let Some((program, _)) = words.split_first() else {
            return Err(CliError::usage("invalid -c command: it is empty"));
        };
        let executable = find_executable(program).ok_or_else(|| {
            CliError::usage(format!("failed to start -c command: `{program}` not found in PATH"))
        })?;

        // Everything the child needs is allocated before fork: after it,
        // the child may only call async-signal-safe functions.
        let path = CString::new(executable.as_os_str().as_bytes())
            .map_err(|_| CliError::usage(format!("invalid -c command: `{program}` contains a NUL byte")))?;
        let arguments: Vec<CString> = words
            .iter()
            .map(|word| CString::new(word.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| CliError::usage("invalid -c command: an argument contains a NUL byte"))?;
        let mut argv: Vec<*const libc::c_char> = arguments.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };

        // SAFETY: the child branch below calls only async-signal-safe
        // functions (prctl, raise, getppid, execv, _exit) on memory that
        // was prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(CliError::runtime(format!("failed to fork the -c command: {}", io::Error::last_os_error())));
        }
        if pid == 0 {
            // SAFETY: see above; `path` and `argv` outlive the exec.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(125);
                }
                libc::raise(libc::SIGSTOP);
                // Resumed: from here on the command must not depend on the
                // tool staying alive.
                libc::prctl(libc::PR_SET_PDEATHSIG, 0);
                libc::execv(path.as_ptr(), argv.as_ptr());
                libc::_exit(127);
            }
        }

        let mut child = HeldChild {
            pid: pid as u32,
            pidfd: None,
            released: false,
            reaped: false,
        };
        child.wait_stopped()?;
        info!("started -c command as pid {pid}, stopped until the probes are attached");
        Ok(child)
    }

    /// Waits until the child has stopped itself.
    fn wait_stopped(&mut self) -> Result<(), CliError> {
        let mut status = 0;
        // SAFETY: `status` is a valid int to write to; the pid is our child.
        let result = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WUNTRACED) };
        if result < 0 {
            return Err(CliError::runtime(format!("failed to wait for the -c command: {}", io::Error::last_os_error())));
        }
        if libc::WIFSTOPPED(status) {
            return Ok(());
        }
        self.reaped = true;
        Err(CliError::runtime("the -c command ended before it could start"))
    }

    /// Lets the command run, and starts watching for its exit.
    pub fn release(&mut self) -> Result<(), CliError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::pid_t, 0) };
        if fd >= 0 {
            // SAFETY: the descriptor was just returned to us.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: the AsyncFd owns the descriptor, so it stays open
            // and unchanged for the registration's life.
            self.pidfd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok();
        }
        // SAFETY: kill has no memory-safety preconditions; the child has
        // not been reaped, so the pid is still ours.
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
        Ok(())
    }

    /// Waits until the command exits, and reaps it.
    pub async fn wait_exit(&mut self) -> Result<(), CliError> {
        match &self.pidfd {
            Some(pidfd) => {
                let mut guard = pidfd
                    .readable()
                    .await
                    .map_err(|err| CliError::runtime(format!("failed to wait for the -c command: {err}")))?;
                guard.retain_ready();
            }
            None => {
                // Kernels before 5.3 have no pidfd: poll.
                while !self.exited() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        self.exited();
        Ok(())
    }

    /// Reaps the child if it has exited; returns whether it has.
    fn exited(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        let mut status = 0;
        // SAFETY: `status` is a valid int; the pid is our child.
        let result = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
        if result == self.pid as i32 || result < 0 {
            self.reaped = true;
        }
        self.reaped
    }

    /// Ends a command that never ran.
    pub fn abandon(mut self) {
        // SAFETY: as in `release`.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.reap_within(Duration::from_secs(2));
    }

    /// Stops the command if it still runs, and reaps it.
    pub fn finish(mut self) {
        if !self.exited() {
            // SAFETY: as in `release`.
            unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
            if !self.released {
                // SAFETY: as above; a stopped process only sees SIGTERM
                // once it runs again.
                unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
            }
            if !self.reap_within(Duration::from_secs(2)) {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
                self.reap_within(Duration::from_secs(2));
            }
        }
    }

    fn reap_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        if !self.reaped && !self.released {
            // SAFETY: as in `release`: a command that never ran must not
            // stay stopped.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
            self.reap_within(Duration::from_secs(1));
        }
    }
}

/// A process that the run follows with `-p`: the run ends when it exits.
pub struct WatchedProcess {
    pidfd: AsyncFd<OwnedFd>,
}

impl WatchedProcess {
    /// Starts watching `pid`. Returns `None` when the kernel has no pidfd
    /// (before Linux 5.3); the run then simply does not end on its own.
    pub fn new(pid: u32) -> Option<WatchedProcess> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new
        // descriptor that we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the descriptor was just returned to us.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the descriptor for its whole life.
        let pidfd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }.ok()?;
        Some(WatchedProcess { pidfd })
    }

    /// Waits until the process exits.
    pub async fn exited(&self) {
        if let Ok(mut guard) = self.pidfd.readable().await {
            guard.retain_ready();
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// Finds `program` the way `execvp` would: a name with a slash is a path,
/// anything else is searched in `PATH`.
pub fn find_executable(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let is_executable = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return is_executable(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

/// Splits a command line into words, honouring single and double quotes
/// and backslash escapes, without running a shell.
pub fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => word.push(c),
            (Some(_), '\\') | (None, '\\') => match chars.next() {
                Some(next) => {
                    word.push(next);
                    in_word = true;
                }
                None => return Err("it ends with a backslash".into()),
            },
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err("a quote is not closed".into());
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split_command;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(split_command("cat /etc/hostname").unwrap(), ["cat", "/etc/hostname"]);
        assert_eq!(split_command("sh -c 'echo a b'").unwrap(), ["sh", "-c", "echo a b"]);
        assert_eq!(split_command(r#"echo "x \"y\"" z\ w"#).unwrap(), ["echo", "x \"y\"", "z w"]);
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert!(split_command("echo 'open").is_err());
    }
}
