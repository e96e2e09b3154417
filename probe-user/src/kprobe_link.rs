//! Kprobes that aya 0.14 cannot create. A kprobe at an address picks one
//! of several static functions that share a name. A kprobe.multi link puts
//! one program on many functions with one system call. The kernel also
//! counts the events it could not deliver, which this module reads.
//!
//! Everything here goes through `bpf(2)` and `perf_event_open(2)` directly.
//! Each attachment is owned by file descriptors, so dropping it detaches.

use std::{
    ffi::CString,
    fs, io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use crate::script::insn::{Insn, Reg};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_PERF_EVENT: u32 = 41;
const BPF_TRACE_KPROBE_MULTI: u32 = 42;
const BPF_F_KPROBE_MULTI_RETURN: u32 = 1;
const BPF_LINK_TYPE_PERF_EVENT: u32 = 7;
const BPF_LINK_TYPE_KPROBE_MULTI: u32 = 8;

/// `PERF_FLAG_FD_CLOEXEC` from `linux/perf_event.h`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

const KPROBE_PMU_TYPE: &str = "/sys/bus/event_source/devices/kprobe/type";
const KPROBE_PMU_RETPROBE: &str = "/sys/bus/event_source/devices/kprobe/format/retprobe";

/// Size of the verifier log buffer for programs loaded here.
const LOG_SIZE: usize = 1 << 20;

/// The prefix of `union bpf_attr` for `BPF_PROG_LOAD`, up to
/// `expected_attach_type`; the kernel zero-extends shorter attributes.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with the kprobe.multi or
/// perf-event part of its union.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    /// `kprobe_multi.flags`, or the low half of `perf_event.bpf_cookie`.
    multi_flags: u32,
    /// `kprobe_multi.cnt`, or the high half of `perf_event.bpf_cookie`.
    multi_count: u32,
    multi_symbols: u64,
    multi_addresses: u64,
    multi_cookies: u64,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed, and
    // the pointers inside it point to buffers that the caller keeps alive
    // for the duration of the call.
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, size_of::<T>() as u32) };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor, and nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// A program load that the kernel rejected, with the verifier's log.
#[derive(Debug)]
pub struct LoadError {
    pub error: io::Error,
    pub log: String,
}

/// Loads kprobe instructions as a program that kprobe.multi links accept
/// (`expected_attach_type` `BPF_TRACE_KPROBE_MULTI`, which aya 0.14 never
/// sets). Map references must already hold map file descriptors.
pub fn load_multi_program(name: &str, insns: &[Insn]) -> Result<OwnedFd, LoadError> {
    let license = c"GPL";
    let code: Vec<u8> = insns.iter().flat_map(Insn::encode).collect();
    let mut log = vec![0u8; LOG_SIZE];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: insns.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        expected_attach_type: BPF_TRACE_KPROBE_MULTI,
        ..ProgLoadAttr::default()
    };
    for (slot, byte) in attr.prog_name.iter_mut().zip(name.bytes().take(15)) {
        *slot = if byte.is_ascii_alphanumeric() || byte == b'_' { byte } else { b'_' };
    }
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(error) => {
            // Load again with a log only on failure: logging slows the
            // verifier down.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(LoadError {
                error,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
    }
}

/// Attaches a program loaded by [`load_multi_program`] to every address,
/// with `cookies[i]` as the BPF cookie at `addresses[i]`.
pub fn attach_multi(program: BorrowedFd<'_>, addresses: &[u64], cookies: &[u64], ret: bool) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        attach_type: BPF_TRACE_KPROBE_MULTI,
        multi_flags: if ret { BPF_F_KPROBE_MULTI_RETURN } else { 0 },
        multi_count: addresses.len() as u32,
        multi_addresses: addresses.as_ptr() as u64,
        multi_cookies: cookies.as_ptr() as u64,
        ..LinkCreateAttr::default()
    };
    bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// Tells whether the kernel creates kprobe.multi links: they need Linux
/// 5.18 and `CONFIG_FPROBE`. The check loads a two-instruction program
/// and requests a link to no functions, which fails with `EINVAL` when
/// the kernel supports kprobe.multi and `EOPNOTSUPP` when it does not.
pub fn multi_supported() -> bool {
    let insns = [Insn::mov64_imm(Reg::R0, 0), Insn::exit()];
    let Ok(program) = load_multi_program("probe_feature", &insns) else {
        return false;
    };
    match attach_multi(program.as_fd(), &[], &[], false) {
        Err(err) => err.raw_os_error() == Some(libc::EINVAL),
        // A kernel that accepts an empty link: it works, too.
        Ok(_) => true,
    }
}

/// A kprobe or kretprobe created through the kprobe PMU, with a BPF link
/// that runs a program on it. The link keeps the perf event, so closing
/// the link removes the kprobe.
pub struct PerfKprobe {
    link: OwnedFd,
}

/// The location of a [`PerfKprobe`].
pub enum KprobeLocation<'a> {
    /// A function name, `MODULE:FUNC` for module functions.
    Symbol(&'a str),
    /// A function entry address from kallsyms.
    Address(u64),
}

impl PerfKprobe {
    /// Creates the kprobe and attaches `program` to it.
    pub fn attach(program: BorrowedFd<'_>, location: KprobeLocation<'_>, ret: bool) -> io::Result<Self> {
        let pmu_type: u32 = read_number(KPROBE_PMU_TYPE)?;
        let mut config = 0u64;
        if ret {
            config |= 1 << retprobe_bit()?;
        }
        let symbol;
        let (function, address) = match location {
            KprobeLocation::Symbol(name) => {
                symbol = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                (symbol.as_ptr() as u64, 0)
            }
            KprobeLocation::Address(address) => (0, address),
        };
        let attr = PerfEventAttr {
            kind: pmu_type,
            size: size_of::<PerfEventAttr>() as u32,
            config,
            config1: function,
            config2: address,
            ..PerfEventAttr::default()
        };
        // `symbol` outlives the call, which reads the name through config1.
        let link = link_perf_event(program, attr)?;
        Ok(Self { link })
    }

    /// Returns the link's file descriptor, for [`missed_events`].
    pub fn link(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}

/// Opens the perf event that `attr` describes, for all processes on CPU 0,
/// and links `program` to it. A kprobe or tracepoint event runs its
/// program on every CPU whichever CPU it was opened on. The link keeps its
/// own reference to the event, so only the link is returned.
fn link_perf_event(program: BorrowedFd<'_>, mut attr: PerfEventAttr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid `perf_event_attr` of the size it states,
    // and any string it points to is owned by the caller for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &mut attr as *mut PerfEventAttr,
            -1 as libc::pid_t,
            0 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let event = owned(fd);
    let mut link_attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_fd: event.as_raw_fd() as u32,
        attach_type: BPF_PERF_EVENT,
        ..LinkCreateAttr::default()
    };
    bpf(BPF_LINK_CREATE, &mut link_attr).map(owned)
}

/// `struct perf_event_attr` as far as kprobes need it, padded to the
/// 128 bytes of `PERF_ATTR_SIZE_VER7`.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    padding: [u64; 7],
}

fn read_number<T: std::str::FromStr>(path: &str) -> io::Result<T> {
    let text = fs::read_to_string(path)?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("invalid content {:?} in {path}: expected a number", text.trim())))
}

/// Returns the `config` bit that makes a kprobe PMU event a kretprobe,
/// from the PMU's format file (`config:0` on every kernel so far).
fn retprobe_bit() -> io::Result<u32> {
    let text = fs::read_to_string(KPROBE_PMU_RETPROBE)?;
    text.trim()
        .strip_prefix("config:")
        .and_then(|bit| bit.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("invalid content {:?} in {KPROBE_PMU_RETPROBE}: expected `config:BIT`", text.trim())))
}

/// Returns how many times a kprobe or kprobe.multi link could not run its
/// program: for kretprobes, returns lost because every return instance
/// was in use; for all kprobes, hits while another kprobe was running.
/// `None` when the kernel does not report it (before Linux 6.7).
pub fn missed_events(link: BorrowedFd<'_>) -> Option<u64> {
    let mut info = [0u64; 32];
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    if !kernel_reports_missed() {
        return None;
    }
    let link_type = info[0] as u32;
    // `struct bpf_link_info`: type, id, prog_id, then the union at byte 16.
    match link_type {
        // kprobe_multi: addrs (16), count and flags (24), missed (32).
        BPF_LINK_TYPE_KPROBE_MULTI => Some(info[4]),
        // perf_event: type (16), then kprobe: func_name (24), name_len and
        // offset (32), addr (40), missed (48).
        BPF_LINK_TYPE_PERF_EVENT => Some(info[6]),
        _ => None,
    }
}

/// Tells whether the kernel fills the `missed` fields of kprobe link
/// information (Linux 6.7 and later). Older kernels leave them zero.
fn kernel_reports_missed() -> bool {
    let release = crate::kernel::release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 7)
}

/// Returns how many times the kernel skipped a program because it was
/// already running on the same CPU (`recursion_misses` of
/// `bpf_prog_info`, Linux 5.12 and later).
pub fn recursion_misses(program: BorrowedFd<'_>) -> Option<u64> {
    // `struct bpf_prog_info` puts recursion_misses at byte 208.
    let mut info = [0u64; 32];
    let mut attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    (attr.info_len >= 216).then_some(info[26])
}

/// Group of the kretprobes this tool creates in tracefs. Each event is
/// named `p<PID>_<N>`, so the events of a process that died before it
/// removed them can be found and removed.
const TRACEFS_GROUP: &str = "probetool";
/// `PERF_TYPE_TRACEPOINT`: perf events on tracefs events by id.
const PERF_TYPE_TRACEPOINT: u32 = 2;
/// The kernel's limit on kretprobe instances (`KRETPROBE_MAXACTIVE_MAX`).
pub const MAX_ACTIVE_LIMIT: u32 = 4096;

/// A kretprobe created through tracefs's `kprobe_events`, which, unlike
/// the kprobe PMU, takes the number of return instances to keep
/// (`maxactive`) and reports missed returns in `kprobe_profile` on every
/// kernel. Dropping it detaches the program and removes the event.
pub struct TracefsKretprobe {
    link: Option<OwnedFd>,
    tracefs: std::path::PathBuf,
    /// `p<PID>_<N>`.
    event: String,
}

impl TracefsKretprobe {
    /// Creates the event with `maxactive` instances and attaches `program`.
    pub fn attach(program: BorrowedFd<'_>, location: KprobeLocation<'_>, maxactive: u32, index: usize) -> io::Result<Self> {
        let tracefs = crate::tracepoint::tracefs_root()?;
        let event = format!("p{}_{index}", std::process::id());
        let target = match location {
            KprobeLocation::Symbol(name) => name.to_owned(),
            KprobeLocation::Address(address) => format!("{address:#x}"),
        };
        append(&tracefs.join("kprobe_events"), &format!("r{maxactive}:{TRACEFS_GROUP}/{event} {target}\n"))?;
        // From here on, dropping `probe` removes the event again.
        let mut probe = Self {
            link: None,
            tracefs,
            event,
        };
        let id: u64 = read_number(&probe.event_dir().join("id").to_string_lossy())?;
        let attr = PerfEventAttr {
            kind: PERF_TYPE_TRACEPOINT,
            size: size_of::<PerfEventAttr>() as u32,
            config: id,
            sample_period: 1,
            ..PerfEventAttr::default()
        };
        probe.link = Some(link_perf_event(program, attr)?);
        Ok(probe)
    }

    fn event_dir(&self) -> std::path::PathBuf {
        self.tracefs.join("events").join(TRACEFS_GROUP).join(&self.event)
    }

    /// Returns the missed returns that `kprobe_profile` reports: returns
    /// lost because every instance was in use, plus hits while another
    /// kprobe ran.
    pub fn missed(&self) -> Option<u64> {
        let profile = fs::read_to_string(self.tracefs.join("kprobe_profile")).ok()?;
        profile.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?;
            // Older kernels print the event name alone, newer ones
            // GROUP/EVENT.
            if name != self.event && name != format!("{TRACEFS_GROUP}/{}", self.event) {
                return None;
            }
            fields.nth(1)?.parse().ok()
        })
    }
}

impl Drop for TracefsKretprobe {
    fn drop(&mut self) {
        // The event can only be removed once nothing uses it.
        self.link = None;
        let removal = format!("-:{TRACEFS_GROUP}/{}\n", self.event);
        if let Err(err) = append(&self.tracefs.join("kprobe_events"), &removal) {
            log::warn!("failed to remove the kretprobe event {TRACEFS_GROUP}/{}: {err}", self.event);
        }
    }
}

fn append(path: &std::path::Path, line: &str) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(line.as_bytes())
}

/// Removes the kretprobe events that earlier runs of this tool left in
/// tracefs because they were killed before they could remove them.
pub fn remove_stale_events() {
    let Ok(tracefs) = crate::tracepoint::tracefs_root() else {
        return;
    };
    let Ok(events) = fs::read_to_string(tracefs.join("kprobe_events")) else {
        return;
    };
    for line in events.lines() {
        // r16:probetool/p123_0 vfs_read
        let Some(name) = line.split_whitespace().next().and_then(|head| head.split_once(':')).map(|(_, name)| name) else {
            continue;
        };
        let Some(event) = name.strip_prefix(&format!("{TRACEFS_GROUP}/")) else {
            continue;
        };
        let pid = event.strip_prefix('p').and_then(|rest| rest.split('_').next()).and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            match append(&tracefs.join("kprobe_events"), &format!("-:{name}\n")) {
                Ok(()) => log::info!("removed the kretprobe event {name} that a killed run left behind"),
                Err(err) => log::warn!("failed to remove the stale kretprobe event {name}: {err}"),
            }
        }
    }
}
