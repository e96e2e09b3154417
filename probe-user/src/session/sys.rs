//! The few bpf() commands that sessions need and aya 0.14 does not offer
//! for raw file descriptors: pinning any object, and reading a program's
//! id, map ids and run-time statistics.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

/// `BPF_OBJ_PIN` and `BPF_OBJ_GET_INFO_BY_FD` from `enum bpf_cmd`.
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct PinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid `union bpf_attr` prefix for `command`, of
    // the size passed, and every pointer in it outlives the call.
    let result = unsafe { libc::syscall(libc::SYS_bpf, command, attr as *mut T, size_of::<T>() as u32) };
    if result < 0 { Err(io::Error::last_os_error()) } else { Ok(result) }
}

/// Pins the BPF object behind `fd` (a program, map or link) at `path` in
/// bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = PinAttr {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Facts from `bpf_prog_info` about a loaded program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgramFacts {
    pub id: u32,
    pub map_ids: Vec<u32>,
    /// Runs and nanoseconds spent running, counted only while
    /// `kernel.bpf_stats_enabled` is 1.
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Reads the id, map ids and statistics of the program behind `fd`.
pub fn program_facts(fd: BorrowedFd<'_>) -> io::Result<ProgramFacts> {
    // `struct bpf_prog_info`: id at byte 4, nr_map_ids at 52, map_ids at
    // 56, run_time_ns at 192 and run_cnt at 200 (Linux 5.1 and later).
    let mut map_ids = vec![0u32; 64];
    let mut info = [0u64; 32];
    info[6] = u64::from(map_ids.len() as u32) << 32;
    info[7] = map_ids.as_mut_ptr() as u64;
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let count = ((info[6] >> 32) as usize).min(map_ids.len());
    map_ids.truncate(count);
    Ok(ProgramFacts {
        id: (info[0] >> 32) as u32,
        map_ids,
        run_time_ns: info[24],
        run_count: info[25],
    })
}
