//! Mitigation programs: BPF LSM programs that deny one kind of operation,
//! loaded and pinned by `probe mitigate`.
//!
//! Every program reads its parameters from `CONFIG` and decides in the
//! same order. Past the deadline it allows everything, even when the tool
//! that applied it never runs again. Outside the scope, or for an excepted
//! comm, it allows. Otherwise it denies with `-EPERM`, or in audit mode
//! allows and records. Denials and audit records are counted per CPU in
//! `COUNTERS` and written to the per-CPU ring `EVENTS`, which
//! `probe mitigate log` reads. The operations of the loader's self-test
//! process are only counted in `COUNTER_SELF_TEST` and logged through
//! aya-log, which `probe mitigate -v` prints while it applies the rule.
//!
//! Returning 0 lets the next LSM (or the next BPF program on the hook)
//! decide; a negative errno ends the check with that error.

#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_boot_ns},
    },
    macros::{lsm, map},
    maps::{Array, PerCpuArray},
    programs::LsmContext,
};
use aya_log_ebpf::info;
use probe_common::{
    TASK_COMM_LEN,
    mitigation::{
        ACTION_AUDITED, ACTION_DENIED, AuditRecord, COUNTER_AUDITED, COUNTER_COUNT,
        COUNTER_DENIED, COUNTER_SELF_TEST, EVENT_SLOTS, FLAG_AUDIT, FLAG_MATCH_NAME,
        FLAG_MATCH_TYPE, FLAG_SCOPE_CGROUP, FLAG_SCOPE_COMM, FLAG_SCOPE_UID, FLAG_SPARE_EXE,
        FLAG_SPARE_ROOT, HOOK_BPF, HOOK_BPRM_CHECK_SECURITY, HOOK_KERNEL_LOAD_DATA,
        HOOK_KERNEL_MODULE_REQUEST, HOOK_KERNEL_READ_FILE, HOOK_PTRACE_ACCESS_CHECK,
        HOOK_PTRACE_TRACEME, HOOK_SOCKET_CREATE, HOOK_USERNS_CREATE, MitigationConfig, NAME_LEN,
        OFFSET_BPRM_FILE, OFFSET_FILE_INODE, OFFSET_INODE_INO, OFFSET_INODE_SB,
        OFFSET_MM_EXE_FILE, OFFSET_SB_DEV, OFFSET_TASK_MM,
    },
};

/// The mitigation's parameters, written by the loader before it attaches.
#[map]
static CONFIG: Array<MitigationConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by the `COUNTER_*` constants.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Per-CPU ring of the latest denied or audited operations.
#[map]
static EVENTS: PerCpuArray<AuditRecord> = PerCpuArray::with_max_entries(EVENT_SLOTS, 0);

/// Per-CPU index of the next `EVENTS` slot to write.
#[map]
static EVENT_CURSOR: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `SOCK_TYPE_MASK`: the socket type without `SOCK_NONBLOCK` and
/// `SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: i32 = 0xf;
/// `-EPERM`, what a denial returns. A constant, because Linux 6.10 and
/// later reject LSM programs whose return value the verifier cannot prove
/// to be 0 or a negative errno.
const DENIED: i32 = -1;
/// `PTRACE_MODE_ATTACH`: the access check is for attaching, not for
/// reading `/proc` files.
const PTRACE_MODE_ATTACH: u32 = 0x02;

/// The operation that a program checks: its arguments for the event ring
/// and, for module autoloading, the module name.
struct Operation<'a> {
    hook: u32,
    args: [u64; 2],
    name: Option<&'a [u8; NAME_LEN]>,
}

/// Compares two byte arrays whose length is a multiple of 8, eight bytes
/// at a time: a plain `==` on arrays becomes a `memcmp` call, which BPF
/// programs cannot make.
#[inline(always)]
fn bytes_equal<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    let mut offset = 0;
    while offset + 8 <= N {
        // SAFETY: `offset + 8 <= N`, so both 8-byte reads are in bounds;
        // read_unaligned accepts any alignment.
        let (x, y) = unsafe {
            (
                core::ptr::read_unaligned(a.as_ptr().add(offset).cast::<u64>()),
                core::ptr::read_unaligned(b.as_ptr().add(offset).cast::<u64>()),
            )
        };
        if x != y {
            return false;
        }
        offset += 8;
    }
    true
}

#[inline(always)]
fn add_to_counter(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a successful per-CPU array lookup
        // and stays valid for this program run. Another program on this
        // CPU can interleave only when this one is preempted; a lost
        // increment is then the worst outcome.
        unsafe { *counter += 1 };
    }
}

/// Writes one record to this CPU's event ring.
#[inline(always)]
fn record(operation: &Operation<'_>, action: u32, pid: u32, uid: u32, comm: &[u8; TASK_COMM_LEN]) {
    let Some(cursor) = EVENT_CURSOR.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `add_to_counter`, a per-CPU slot valid for this run.
    let index = unsafe {
        let index = *cursor % EVENT_SLOTS;
        *cursor = (index + 1) % EVENT_SLOTS;
        index
    };
    let Some(slot) = EVENTS.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: `slot` points to this CPU's record at `index`, valid for
    // this run; every field is written.
    unsafe {
        (*slot).time_ns = bpf_ktime_get_boot_ns();
        (*slot).args = operation.args;
        (*slot).pid = pid;
        (*slot).uid = uid;
        (*slot).action = action;
        (*slot).hook = operation.hook;
        (*slot).comm = *comm;
        (*slot).name = match operation.name {
            Some(name) => *name,
            None => [0; NAME_LEN],
        };
    }
}

/// Reads a `u64` (or a pointer) at `base + offset` in kernel memory; 0 when
/// the read fails.
#[inline(always)]
fn read_u64(base: u64, offset: u32) -> u64 {
    if base == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead
    // of faulting.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u64).unwrap_or(0) }
}

#[inline(always)]
fn read_u32(base: u64, offset: u32) -> u32 {
    if base == 0 {
        return 0;
    }
    // SAFETY: as in `read_u64`.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const u32).unwrap_or(0) }
}

/// Returns `(device, inode)` of a `struct file`: the file system's kernel
/// device number (`MAJOR << 20 | MINOR`) and the inode number.
#[inline(always)]
fn file_identity(config: &MitigationConfig, file: u64) -> (u64, u64) {
    let inode = read_u64(file, config.offsets[OFFSET_FILE_INODE]);
    let ino = read_u64(inode, config.offsets[OFFSET_INODE_INO]);
    let super_block = read_u64(inode, config.offsets[OFFSET_INODE_SB]);
    let device = read_u32(super_block, config.offsets[OFFSET_SB_DEV]);
    (u64::from(device), ino)
}

/// Tells whether the current task runs the executable that
/// `params[2..4]` identifies.
#[inline(always)]
fn current_exe_is(config: &MitigationConfig) -> bool {
    // SAFETY: bpf_get_current_task has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let mm = read_u64(task, config.offsets[OFFSET_TASK_MM]);
    let exe_file = read_u64(mm, config.offsets[OFFSET_MM_EXE_FILE]);
    if exe_file == 0 {
        return false;
    }
    file_identity(config, exe_file) == (config.params[2], config.params[3])
}

/// Decides an operation that matches the rule. It is allowed past the
/// deadline, outside the scope and for excepted comms. Otherwise it is
/// denied, or in audit mode allowed and recorded.
#[inline(always)]
fn decide(ctx: &LsmContext, config: &MitigationConfig, operation: &Operation<'_>) -> i32 {
    let deadline = config.deadline_ns;
    // SAFETY: bpf_ktime_get_boot_ns has no preconditions.
    if deadline != 0 && unsafe { bpf_ktime_get_boot_ns() } >= deadline {
        return 0;
    }

    let flags = config.flags;
    let uid = bpf_get_current_uid_gid() as u32;
    if flags & FLAG_SCOPE_UID != 0 && uid != config.scope_uid {
        return 0;
    }
    if flags & FLAG_SPARE_ROOT != 0 && uid == 0 {
        return 0;
    }
    // SAFETY: bpf_get_current_cgroup_id has no preconditions.
    if flags & FLAG_SCOPE_CGROUP != 0 && unsafe { bpf_get_current_cgroup_id() } != config.scope_cgroup_id {
        return 0;
    }
    let comm = bpf_get_current_comm().unwrap_or_default();
    if flags & FLAG_SCOPE_COMM != 0 && !bytes_equal(&comm, &config.scope_comm) {
        return 0;
    }
    for except in &config.except_comms {
        if except[0] != 0 && bytes_equal(&comm, except) {
            return 0;
        }
    }
    if flags & FLAG_SPARE_EXE != 0 && current_exe_is(config) {
        return 0;
    }

    let audit = flags & FLAG_AUDIT != 0;
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let verdict = if audit { 0 } else { DENIED };
    if config.self_test_tgid != 0 && pid == config.self_test_tgid {
        add_to_counter(COUNTER_SELF_TEST);
        info!(ctx, "self-test: the operation of pid {} matched the rule", pid);
        return verdict;
    }
    if audit {
        add_to_counter(COUNTER_AUDITED);
        record(operation, ACTION_AUDITED, pid, uid, &comm);
    } else {
        add_to_counter(COUNTER_DENIED);
        record(operation, ACTION_DENIED, pid, uid, &comm);
    }
    verdict
}

/// `socket_create(int family, int type, int protocol, int kern)`: sockets
/// that the kernel creates for itself (`kern != 0`) are never denied.
#[lsm(hook = "socket_create")]
pub fn mt_socket(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let family: i32 = ctx.arg(0);
    let socket_type: i32 = ctx.arg(1);
    let kern: i32 = ctx.arg(3);
    if kern != 0 || i64::from(family) as u64 != config.params[0] {
        return 0;
    }
    let socket_type = socket_type & SOCK_TYPE_MASK;
    if config.flags & FLAG_MATCH_TYPE != 0 && socket_type as u64 != config.params[1] {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_SOCKET_CREATE,
        args: [family as u64, socket_type as u64],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `kernel_module_request(char *kmod_name)`: a module autoload request.
#[lsm(hook = "kernel_module_request")]
pub fn mt_kmod_request(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let name_ptr: *const u8 = ctx.arg(0);
    let mut name = [0u8; NAME_LEN];
    // SAFETY: bpf_probe_read_kernel_str checks the address; `name` is a
    // valid buffer of NAME_LEN bytes.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(name_ptr, &mut name) };
    if config.flags & FLAG_MATCH_NAME != 0 && !bytes_equal(&name, &config.name) {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_KERNEL_MODULE_REQUEST,
        args: [0, 0],
        name: Some(&name),
    };
    decide(&ctx, config, &operation)
}

/// `kernel_read_file(struct file *file, enum kernel_read_file_id id, bool
/// contents)`: `finit_module` reads the module file with id
/// `READING_MODULE` (`params[0]`).
#[lsm(hook = "kernel_read_file")]
pub fn mt_kmod_file(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let id: u32 = ctx.arg(1);
    if u64::from(id) != config.params[0] {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_KERNEL_READ_FILE,
        args: [u64::from(id), 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `kernel_load_data(enum kernel_load_data_id id, bool contents)`:
/// `init_module` loads a module image from memory with id
/// `LOADING_MODULE` (`params[1]`).
#[lsm(hook = "kernel_load_data")]
pub fn mt_kmod_data(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let id: u32 = ctx.arg(0);
    if u64::from(id) != config.params[1] {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_KERNEL_LOAD_DATA,
        args: [u64::from(id), 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `userns_create(const struct cred *cred)` (Linux 6.1 and later).
#[lsm(hook = "userns_create")]
pub fn mt_userns(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let operation = Operation {
        hook: HOOK_USERNS_CREATE,
        args: [0, 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `bprm_check_security(struct linux_binprm *bprm)`: an exec of the file
/// that `params[2..4]` identifies by device and inode.
#[lsm(hook = "bprm_check_security")]
pub fn mt_exec(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let bprm: u64 = ctx.arg(0);
    let file = read_u64(bprm, config.offsets[OFFSET_BPRM_FILE]);
    let (device, ino) = file_identity(config, file);
    if device != config.params[2] || ino != config.params[3] {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_BPRM_CHECK_SECURITY,
        args: [device, ino],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `ptrace_access_check(struct task_struct *child, unsigned int mode)`:
/// only attach checks (`PTRACE_ATTACH`, `PTRACE_SEIZE`, and access to
/// `/proc/PID/mem` for writing), not the read checks behind most `/proc`
/// files.
#[lsm(hook = "ptrace_access_check")]
pub fn mt_ptrace(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let operation = Operation {
        hook: HOOK_PTRACE_ACCESS_CHECK,
        args: [u64::from(mode), 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `ptrace_traceme(struct task_struct *parent)`: `PTRACE_TRACEME`.
#[lsm(hook = "ptrace_traceme")]
pub fn mt_traceme(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let operation = Operation {
        hook: HOOK_PTRACE_TRACEME,
        args: [0, 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

/// `bpf(int cmd, union bpf_attr *attr, unsigned int size)`: every bpf()
/// system call.
#[lsm(hook = "bpf")]
pub fn mt_bpf(ctx: LsmContext) -> i32 {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let command: i32 = ctx.arg(0);
    let operation = Operation {
        hook: HOOK_BPF,
        args: [command as u64, 0],
        name: None,
    };
    decide(&ctx, config, &operation)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
