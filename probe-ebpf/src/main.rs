//! The default tracer: one event per call of a kernel function.
//!
//! `kprobe-attach FUNC` without a script loads these programs. Entry
//! programs (fentry, kprobe) report the arguments; exit programs (fexit,
//! kretprobe) report the return value, and with `--return` also the
//! arguments: fexit reads them from its context, while kretprobe takes them
//! from `ENTRY_ARGS`, where a companion kprobe saved them at entry.
//!
//! Every program filters on `TARGET_TGID` (0 traces every process) and sends
//! a `CallEvent` through the `EVENTS` ring buffer. A full ring buffer drops
//! the event and counts it in `COUNTERS[COUNTER_LOST]`.

#![no_std]
#![no_main]

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_get_func_arg, bpf_get_func_arg_cnt, bpf_get_func_ret},
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use aya_log_ebpf::warn;
use probe_common::{
    CallEvent, COUNTER_ARGS_DROPPED, COUNTER_COUNT, COUNTER_LOST, EVENT_HAS_ARGS,
    EVENT_HAS_RETVAL, MAX_ARGS,
};

/// Process to trace, set by the loader; 0 traces every process.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Ring buffer for `CallEvent`s. The loader may resize it before loading.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU loss counters, indexed by the `COUNTER_*` constants.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Arguments saved at function entry, by thread id, for kretprobe with
/// `--return`. Sized for the number of threads that can be inside one
/// function at the same time.
#[map]
static ENTRY_ARGS: HashMap<u32, [u64; MAX_ARGS]> = HashMap::with_max_entries(16384, 0);

/// Returns `(tgid, tid)` of the current task when it passes the process
/// filter.
#[inline(always)]
fn current_task_if_traced() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: the loader writes TARGET_TGID before loading; the volatile read
    // keeps the compiler from folding the initial 0 into the code.
    let target = unsafe { core::ptr::read_volatile(&raw const TARGET_TGID) };
    if target != 0 && target != tgid {
        return None;
    }
    Some((tgid, pid_tgid as u32))
}

/// Adds one to a loss counter and, on its first increment on this CPU, logs
/// a warning so that `-v` shows when losses start.
#[inline(always)]
fn count_loss<C: EbpfContext>(ctx: &C, index: u32) {
    let Some(counter) = COUNTERS.get_ptr_mut(index) else {
        return;
    };
    // SAFETY: the pointer comes from a successful per-CPU array lookup, which
    // stays valid for the whole program run, and no other program run can
    // use this CPU's slot at the same time.
    let previous = unsafe {
        let previous = *counter;
        *counter = previous + 1;
        previous
    };
    if previous == 0 {
        if index == COUNTER_LOST {
            warn!(ctx, "ring buffer full: dropping events");
        } else {
            warn!(ctx, "entry argument map full: return events lose their arguments");
        }
    }
}

/// Reserves, fills and submits one event. `fill` writes the arguments and
/// return value.
#[inline(always)]
fn emit<C: EbpfContext>(ctx: &C, tgid: u32, tid: u32, fill: impl FnOnce(&mut CallEvent)) {
    let Some(mut entry) = EVENTS.reserve::<CallEvent>(0) else {
        count_loss(ctx, COUNTER_LOST);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to a reserved, exclusively owned ring buffer
    // slot of `size_of::<CallEvent>()` bytes; every field is written below
    // before the slot is submitted.
    unsafe {
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event).pid = tgid;
        (*event).tid = tid;
        (*event).flags = 0;
        (*event).arg_count = 0;
        (*event).args = [0; MAX_ARGS];
        (*event).retval = 0;
        (*event).comm = bpf_get_current_comm().unwrap_or_default();
        fill(&mut *event);
    }
    entry.submit(0);
}

#[inline(always)]
fn registers(ctx: &ProbeContext) -> [u64; MAX_ARGS] {
    let mut args = [0u64; MAX_ARGS];
    for (i, slot) in args.iter_mut().enumerate() {
        *slot = ctx.arg(i).unwrap_or(0);
    }
    args
}

/// Reads the arguments of a fentry/fexit program through
/// `bpf_get_func_arg`, which knows the function's real argument count.
#[inline(always)]
fn trampoline_args(ctx: *mut c_void) -> ([u64; MAX_ARGS], u32) {
    let mut args = [0u64; MAX_ARGS];
    // SAFETY: `ctx` is the tracing program's context pointer, which is what
    // these helpers expect.
    let count = unsafe { bpf_get_func_arg_cnt(ctx) } as u32;
    for (i, slot) in args.iter_mut().enumerate() {
        if i as u32 >= count {
            break;
        }
        let mut value = 0u64;
        // SAFETY: as above; `value` is a valid u64 to write to.
        if unsafe { bpf_get_func_arg(ctx, i as u32, &mut value) } == 0 {
            *slot = value;
        }
    }
    (args, count)
}

#[fentry]
pub fn trace_entry_fentry(ctx: FEntryContext) -> u32 {
    let Some((tgid, tid)) = current_task_if_traced() else {
        return 0;
    };
    let (args, count) = trampoline_args(ctx.as_ptr());
    emit(&ctx, tgid, tid, |event| {
        event.args = args;
        event.arg_count = count;
        event.flags = EVENT_HAS_ARGS;
    });
    0
}

#[fexit]
pub fn trace_exit_fexit(ctx: FExitContext) -> u32 {
    let Some((tgid, tid)) = current_task_if_traced() else {
        return 0;
    };
    let (args, count) = trampoline_args(ctx.as_ptr());
    let mut retval = 0u64;
    // SAFETY: fexit context pointer and a valid u64 to write to.
    let status = unsafe { bpf_get_func_ret(ctx.as_ptr(), &mut retval) };
    emit(&ctx, tgid, tid, |event| {
        event.args = args;
        event.arg_count = count;
        event.retval = retval;
        event.flags = EVENT_HAS_ARGS | if status == 0 { EVENT_HAS_RETVAL } else { 0 };
    });
    0
}

#[kprobe]
pub fn trace_entry_kprobe(ctx: ProbeContext) -> u32 {
    let Some((tgid, tid)) = current_task_if_traced() else {
        return 0;
    };
    let args = registers(&ctx);
    emit(&ctx, tgid, tid, |event| {
        event.args = args;
        event.arg_count = MAX_ARGS as u32;
        event.flags = EVENT_HAS_ARGS;
    });
    0
}

/// Companion of `trace_exit_kretprobe`: saves the arguments at entry so that
/// the return event can report them.
#[kprobe]
pub fn save_entry_args_kprobe(ctx: ProbeContext) -> u32 {
    let Some((_, tid)) = current_task_if_traced() else {
        return 0;
    };
    let args = registers(&ctx);
    if ENTRY_ARGS.insert(&tid, &args, 0).is_err() {
        count_loss(&ctx, COUNTER_ARGS_DROPPED);
    }
    0
}

#[kretprobe]
pub fn trace_exit_kretprobe(ctx: RetProbeContext) -> u32 {
    let Some((tgid, tid)) = current_task_if_traced() else {
        return 0;
    };
    let retval: u64 = ctx.ret();
    // SAFETY: the value is copied out before the entry is deleted, and only
    // this thread writes the entry for its own tid.
    let saved = unsafe { ENTRY_ARGS.get(&tid).copied() };
    if saved.is_some() {
        let _ = ENTRY_ARGS.remove(&tid);
    }
    emit(&ctx, tgid, tid, |event| {
        event.retval = retval;
        event.flags = EVENT_HAS_RETVAL;
        if let Some(args) = saved {
            event.args = args;
            event.arg_count = MAX_ARGS as u32;
            event.flags |= EVENT_HAS_ARGS;
        }
    });
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
