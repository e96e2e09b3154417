//! Types shared by the mitigation programs (`probe-mitigate`, BPF LSM
//! programs that deny one kind of operation) and `probe mitigate`.
//!
//! Each applied mitigation has its own copy of the maps. `CONFIG` contains
//! one [`MitigationConfig`], and `COUNTERS` the per-CPU counters indexed by
//! the `COUNTER_*` constants. `EVENTS` is a per-CPU ring of
//! [`AuditRecord`]s, and `EVENT_CURSOR` the index of each CPU's next slot.

/// Length of a module name as `request_module()` formats it, including
/// the terminating NUL (`MODULE_NAME_LEN` is 56; 64 leaves room).
pub const NAME_LEN: usize = 64;
/// Number of `--except-comm` names one mitigation can hold.
pub const MAX_EXCEPT_COMMS: usize = 4;
/// Number of records in each CPU's event ring.
pub const EVENT_SLOTS: u32 = 128;

/// `MitigationConfig::flags`: record would-be denials and allow them.
pub const FLAG_AUDIT: u32 = 1 << 0;
/// Only tasks whose real uid is `scope_uid` are subject to the rule.
pub const FLAG_SCOPE_UID: u32 = 1 << 1;
/// Only tasks whose comm is `scope_comm` are subject to the rule.
pub const FLAG_SCOPE_COMM: u32 = 1 << 2;
/// Only tasks in the cgroup (v2) whose id is `scope_cgroup_id` are subject
/// to the rule.
pub const FLAG_SCOPE_CGROUP: u32 = 1 << 3;
/// Tasks with real uid 0 are not subject to the rule.
pub const FLAG_SPARE_ROOT: u32 = 1 << 4;
/// Tasks running the executable identified by `params[2]` (device) and
/// `params[3]` (inode) are not subject to the rule.
pub const FLAG_SPARE_EXE: u32 = 1 << 5;
/// The rule matches only `name` (the module name).
pub const FLAG_MATCH_NAME: u32 = 1 << 6;
/// The socket rule matches only the socket type in `params[1]`.
pub const FLAG_MATCH_TYPE: u32 = 1 << 7;

/// Index of the counter of denied operations.
pub const COUNTER_DENIED: u32 = 0;
/// Index of the counter of operations recorded in audit mode.
pub const COUNTER_AUDITED: u32 = 1;
/// Index of the counter of operations by the self-test process, which the
/// other counters and the event ring leave out.
pub const COUNTER_SELF_TEST: u32 = 2;
/// Number of entries in the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = 3;

/// Indexes into `MitigationConfig::offsets`: byte offsets of the kernel
/// struct fields that the exec and bpf rules read, taken from the running
/// kernel's BTF by the loader.
pub const OFFSET_BPRM_FILE: usize = 0;
pub const OFFSET_FILE_INODE: usize = 1;
pub const OFFSET_INODE_INO: usize = 2;
pub const OFFSET_INODE_SB: usize = 3;
pub const OFFSET_SB_DEV: usize = 4;
pub const OFFSET_TASK_MM: usize = 5;
pub const OFFSET_MM_EXE_FILE: usize = 6;
pub const OFFSET_COUNT: usize = 8;

/// `AuditRecord::action` values.
pub const ACTION_DENIED: u32 = 1;
pub const ACTION_AUDITED: u32 = 2;

/// A mitigation's parameters, the single entry of its `CONFIG` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MitigationConfig {
    /// `CLOCK_BOOTTIME` in nanoseconds after which the programs allow
    /// everything; 0 for no deadline.
    pub deadline_ns: u64,
    /// cgroup v2 id (the cgroup directory's inode number) for
    /// `FLAG_SCOPE_CGROUP`.
    pub scope_cgroup_id: u64,
    /// Rule parameters. Socket: family, type. Module load: the
    /// `READING_MODULE` and `LOADING_MODULE` enum values. Exec and the bpf
    /// rule's spared executable: `params[2]` is the kernel's device number
    /// of the file system, `params[3]` the inode number.
    pub params: [u64; 4],
    /// Kernel struct field offsets, indexed by the `OFFSET_*` constants.
    pub offsets: [u32; OFFSET_COUNT],
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Real uid for `FLAG_SCOPE_UID`.
    pub scope_uid: u32,
    /// Process id (tgid) of the loader's self-test child, 0 when none: its
    /// operations count as self-test, not as denials or audit records.
    pub self_test_tgid: u32,
    /// Unused, zero; keeps the struct free of padding.
    pub reserved: u32,
    /// comm for `FLAG_SCOPE_COMM`, NUL-padded.
    pub scope_comm: [u8; crate::TASK_COMM_LEN],
    /// comms that are never subject to the rule, NUL-padded; an all-zero
    /// entry is unused.
    pub except_comms: [[u8; crate::TASK_COMM_LEN]; MAX_EXCEPT_COMMS],
    /// Module name for `FLAG_MATCH_NAME`, NUL-padded.
    pub name: [u8; NAME_LEN],
}

impl MitigationConfig {
    /// A configuration with no flags and no deadline.
    pub const fn empty() -> Self {
        Self {
            deadline_ns: 0,
            scope_cgroup_id: 0,
            params: [0; 4],
            offsets: [0; OFFSET_COUNT],
            flags: 0,
            scope_uid: 0,
            self_test_tgid: 0,
            reserved: 0,
            scope_comm: [0; crate::TASK_COMM_LEN],
            except_comms: [[0; crate::TASK_COMM_LEN]; MAX_EXCEPT_COMMS],
            name: [0; NAME_LEN],
        }
    }
}

/// One denied or audited operation, in the per-CPU event ring.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AuditRecord {
    /// `CLOCK_BOOTTIME` in nanoseconds; 0 marks an unused slot.
    pub time_ns: u64,
    /// The operation's arguments, as the program's hook gives them (socket
    /// family and type, enum id, device and inode, bpf command, ptrace mode).
    pub args: [u64; 2],
    /// Process id (tgid).
    pub pid: u32,
    /// Real uid.
    pub uid: u32,
    /// `ACTION_DENIED` or `ACTION_AUDITED`.
    pub action: u32,
    /// The program that recorded it, one of the `HOOK_*` constants.
    pub hook: u32,
    pub comm: [u8; crate::TASK_COMM_LEN],
    /// The requested module name, for module autoloading; zero otherwise.
    pub name: [u8; NAME_LEN],
}

/// `AuditRecord::hook` values, one per mitigation program.
pub const HOOK_SOCKET_CREATE: u32 = 1;
pub const HOOK_KERNEL_MODULE_REQUEST: u32 = 2;
pub const HOOK_KERNEL_READ_FILE: u32 = 3;
pub const HOOK_KERNEL_LOAD_DATA: u32 = 4;
pub const HOOK_USERNS_CREATE: u32 = 5;
pub const HOOK_BPRM_CHECK_SECURITY: u32 = 6;
pub const HOOK_PTRACE_ACCESS_CHECK: u32 = 7;
pub const HOOK_PTRACE_TRACEME: u32 = 8;
pub const HOOK_BPF: u32 = 9;

#[cfg(feature = "user")]
mod user {
    // SAFETY: both types are `#[repr(C)]`, `Copy`, contain only integers
    // and integer arrays with no padding between fields, and every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::MitigationConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AuditRecord {}
}
