//! Types shared by the kernel-side programs in `probe-ebpf` and the user-space
//! tool in `probe-user`.
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so each one
//! is `#[repr(C)]`, has no padding that the kernel side leaves uninitialised,
//! and keeps its layout stable between the two sides of one build.

#![no_std]

/// Length of `task_struct::comm`, including the terminating NUL.
pub const TASK_COMM_LEN: usize = 16;

/// Number of register arguments the default tracer records: the x86-64
/// calling convention passes the first six integer arguments in registers.
pub const MAX_ARGS: usize = 6;

/// `CallEvent::flags` bit: `args` holds the function's arguments.
pub const EVENT_HAS_ARGS: u32 = 1 << 0;
/// `CallEvent::flags` bit: `retval` holds the function's return value.
pub const EVENT_HAS_RETVAL: u32 = 1 << 1;

/// One call of a traced kernel function, as the default tracer reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEvent {
    /// `bpf_ktime_get_ns()` at the probe: nanoseconds since boot, not
    /// counting suspend.
    pub timestamp_ns: u64,
    /// Raw 64-bit argument values, valid when `flags` has `EVENT_HAS_ARGS`.
    pub args: [u64; MAX_ARGS],
    /// Raw 64-bit return value, valid when `flags` has `EVENT_HAS_RETVAL`.
    pub retval: u64,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    /// `EVENT_HAS_ARGS` and `EVENT_HAS_RETVAL` bits.
    pub flags: u32,
    /// Number of arguments the kernel reported for fentry/fexit programs;
    /// `MAX_ARGS` for kprobes, which cannot know it.
    pub arg_count: u32,
    /// The task's command name, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Index of the event-loss counter in the tracer's `COUNTERS` per-CPU array:
/// events dropped because the ring buffer was full.
pub const COUNTER_LOST: u32 = 0;
/// Index of the counter of entry records dropped because the per-thread
/// argument map was full (kretprobe with arguments only).
pub const COUNTER_ARGS_DROPPED: u32 = 1;
/// Number of entries in the `COUNTERS` array.
pub const COUNTER_COUNT: u32 = 2;

#[cfg(feature = "user")]
mod user {
    // SAFETY: `CallEvent` is `#[repr(C)]`, `Copy`, contains only integers and
    // integer arrays, and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::CallEvent {}
}

pub mod mitigation;
