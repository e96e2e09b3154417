//! The self-test that proves a freshly attached rule enforces: a forked
//! child takes on the rule's scope, waits until the programs are attached,
//! performs the operation once and reports the result. The programs count
//! its operations apart from everyone else's (`self_test_tgid`), so the
//! test leaves no denial and no record behind.
//!
//! Rules whose operation is not safe to perform (exec of the denied file,
//! a module autoload in audit mode) are not tested.

use std::io;

use super::rules::{BpfSpare, Rule, Scope};

/// What the child does once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// `socket(family, type, 0)`.
    Socket { family: i32, socket_type: i32 },
    /// `init_module` of 64 zero bytes: checked by the `kernel_load_data`
    /// hook, then rejected as an invalid module if nothing denies it.
    InitModule,
    /// `unshare(CLONE_NEWUSER)`.
    UnshareUserns,
    /// `PTRACE_ATTACH` to a child of the test process.
    PtraceAttach,
    /// `bpf(BPF_PROG_GET_NEXT_ID)`.
    Bpf,
}

impl Trigger {
    /// Describes the operation for messages.
    pub fn describe(self) -> String {
        match self {
            Trigger::Socket { family, socket_type } => format!("socket({family}, {socket_type}, 0)"),
            Trigger::InitModule => "init_module() of an invalid image".into(),
            Trigger::UnshareUserns => "unshare(CLONE_NEWUSER)".into(),
            Trigger::PtraceAttach => "ptrace(PTRACE_ATTACH) to its own child".into(),
            Trigger::Bpf => "bpf(BPF_PROG_GET_NEXT_ID)".into(),
        }
    }
}

/// `AF_DECnet`: its family slot has been empty since Linux 6.1 removed
/// DECnet, so a socket of it always makes the kernel request a module.
const UNREGISTERED_FAMILY: i32 = 12;
/// The uid that the test takes when the rule spares root.
const NOBODY: u32 = 65534;

/// How the test child runs: the trigger, and who it runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub trigger: Trigger,
    pub uid: Option<u32>,
    pub comm: String,
    /// Whether a success proves that the hook ran.
    pub success_reaches_hook: bool,
    /// Whether a denial shows in the operation's result: a denied module
    /// request only makes the socket fail as it would without the module.
    pub denial_visible: bool,
}

/// Chooses the self-test for a rule, or returns why there is none.
pub fn plan(rule: &Rule, audit: bool, scope: &Scope) -> Result<Plan, String> {
    if let Some((path, _)) = &scope.cgroup {
        return Err(format!(
            "the self-test would have to move a process into cgroup {}, which it does not do",
            path.display()
        ));
    }
    let mut uid = scope.uid;
    let mut success_reaches_hook = true;
    let mut denial_visible = true;
    let trigger = match rule {
        Rule::DenySocket { family, socket_type } => Trigger::Socket {
            family: family.0,
            socket_type: socket_type.map_or(libc::SOCK_DGRAM, |socket_type| socket_type.0),
        },
        Rule::DenyModuleAutoload { name } => {
            if audit {
                return Err("in audit mode the test request would really load a module".into());
            }
            let family = match name {
                None => UNREGISTERED_FAMILY,
                Some(name) => match name.strip_prefix("net-pf-").and_then(|n| n.parse::<i32>().ok()) {
                    Some(family) => family,
                    None => return Err(format!("no safe operation requests module `{name}`")),
                },
            };
            // The socket succeeds without a module request when the family
            // is registered already.
            success_reaches_hook = false;
            denial_visible = false;
            Trigger::Socket { family, socket_type: libc::SOCK_DGRAM }
        }
        Rule::DenyModuleLoad => Trigger::InitModule,
        Rule::DenyUserns { all_users } => {
            if !all_users && uid.is_none_or(|uid| uid == 0) {
                if uid == Some(0) {
                    return Err("the scope is uid 0, which the rule spares without --all-users".into());
                }
                uid = Some(NOBODY);
            }
            Trigger::UnshareUserns
        }
        Rule::DenyExec { path, .. } => {
            return Err(format!("executing {} to test the rule is not safe", path.display()));
        }
        Rule::DenyPtrace => Trigger::PtraceAttach,
        Rule::DenyBpf { spare: BpfSpare::Tool } => {
            return Err("the test process runs this tool, which the rule spares".into());
        }
        Rule::DenyBpf { spare: BpfSpare::Root } => {
            if uid.is_none_or(|uid| uid == 0) {
                if uid == Some(0) {
                    return Err("the scope is uid 0, which the rule spares".into());
                }
                uid = Some(NOBODY);
            }
            Trigger::Bpf
        }
    };
    let comm = scope.comm.clone().unwrap_or_else(|| "probe-selftest".to_owned());
    Ok(Plan { trigger, uid, comm, success_reaches_hook, denial_visible })
}

/// A forked test child, blocked until [`Child::run`].
pub struct Child {
    pid: libc::pid_t,
    go: libc::c_int,
    result: libc::c_int,
}

impl Child {
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Forks the child. It takes the plan's uid and comm at once and
    /// waits for [`Child::run`].
    pub fn spawn(plan: &Plan) -> io::Result<Child> {
        let mut go = [0; 2];
        let mut result = [0; 2];
        // SAFETY: both arrays have room for the two descriptors.
        if unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::pipe2(result.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            let error = io::Error::last_os_error();
            close_all(&go);
            return Err(error);
        }
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut comm = [0u8; 16];
        let length = plan.comm.len().min(15);
        comm[..length].copy_from_slice(&plan.comm.as_bytes()[..length]);

        // SAFETY: the tool is single-threaded while it applies a
        // mitigation, and the child calls only async-signal-safe functions
        // on memory prepared before the fork, then `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let error = io::Error::last_os_error();
            close_all(&go);
            close_all(&result);
            return Err(error);
        }
        if pid == 0 {
            // SAFETY: see the fork above; this never returns. The child
            // closes the parent's ends, so that it reads end-of-file on
            // `go` when the parent dies before releasing it.
            unsafe {
                libc::close(go[1]);
                libc::close(result[0]);
                child_main(plan.trigger, plan.uid, &comm, go[0], result[1], parent);
            }
        }
        // SAFETY: the descriptors are the child's ends, open and ours.
        unsafe {
            libc::close(go[0]);
            libc::close(result[1]);
        }
        Ok(Child { pid, go: go[1], result: result[0] })
    }

    /// Releases the child and returns the operation's result: 0 or the
    /// errno.
    pub fn run(mut self) -> io::Result<i32> {
        let byte = [1u8];
        // SAFETY: `self.go` is an open pipe and `byte` is readable.
        if unsafe { libc::write(self.go, byte.as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
        let mut errno = [0u8; 4];
        // SAFETY: `self.result` is an open pipe and `errno` is writable.
        let read = unsafe { libc::read(self.result, errno.as_mut_ptr().cast(), 4) };
        self.reap();
        if read != 4 {
            return Err(io::Error::other("the self-test process ended without a result"));
        }
        Ok(i32::from_ne_bytes(errno))
    }

    fn reap(&mut self) {
        if self.pid <= 0 {
            return;
        }
        let mut status = 0;
        // SAFETY: `self.pid` is our unreaped child.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.pid = 0;
    }
}

impl Drop for Child {
    /// Ends a child that was never released.
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: `self.pid` is our unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }
        close_all(&[self.go, self.result]);
    }
}

fn close_all(fds: &[libc::c_int]) {
    for &fd in fds {
        // SAFETY: each descriptor is open and owned by the caller.
        unsafe { libc::close(fd) };
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The forked child: takes the identity, waits for the go byte, performs
/// the trigger once and writes its errno.
///
/// # Safety
///
/// Must run only in a child right after `fork`; it calls only
/// async-signal-safe functions and ends with `_exit`.
unsafe fn child_main(
    trigger: Trigger,
    uid: Option<u32>,
    comm: &[u8; 16],
    go: libc::c_int,
    result: libc::c_int,
    parent: libc::pid_t,
) -> ! {
    // SAFETY: plain system calls on valid arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // A parent that died before the prctl call is not signalled for.
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, comm.as_ptr());
        if let Some(uid) = uid
            && (libc::setgid(uid) != 0 || libc::setuid(uid) != 0)
        {
            libc::_exit(2);
        }
        let mut byte = [0u8];
        if libc::read(go, byte.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(0);
        }
        let outcome = perform(trigger);
        let bytes = outcome.to_ne_bytes();
        libc::write(result, bytes.as_ptr().cast(), 4);
        libc::_exit(0);
    }
}

/// Performs the operation; returns 0 or the errno.
///
/// # Safety
///
/// As [`child_main`].
unsafe fn perform(trigger: Trigger) -> i32 {
    // SAFETY: plain system calls on valid arguments; every pointer points
    // to live, sized memory.
    unsafe {
        match trigger {
            Trigger::Socket { family, socket_type } => {
                let fd = libc::socket(family, socket_type, 0);
                if fd < 0 {
                    return errno();
                }
                libc::close(fd);
                0
            }
            Trigger::InitModule => {
                // The size of an ELF header, below which the kernel rejects
                // the image before the LSM hook.
                let image = [0u8; 64];
                let result = libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), c"".as_ptr());
                if result == 0 { 0 } else { errno() }
            }
            Trigger::UnshareUserns => {
                if libc::unshare(libc::CLONE_NEWUSER) == 0 { 0 } else { errno() }
            }
            Trigger::PtraceAttach => {
                let target = libc::fork();
                if target < 0 {
                    return errno();
                }
                if target == 0 {
                    libc::pause();
                    libc::_exit(0);
                }
                let result = libc::ptrace(libc::PTRACE_ATTACH, target, 0, 0);
                let outcome = if result == 0 { 0 } else { errno() };
                libc::kill(target, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(target, &mut status, 0);
                outcome
            }
            Trigger::Bpf => {
                // BPF_PROG_GET_NEXT_ID with start_id 0 in a zeroed attr.
                let mut attr = [0u64; 2];
                let result = libc::syscall(libc::SYS_bpf, 11, attr.as_mut_ptr(), 16);
                if result >= 0 { 0 } else { errno() }
            }
        }
    }
}
