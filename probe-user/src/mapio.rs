//! Reading and changing BPF maps whose key and value sizes are known only
//! at run time, through the `bpf(2)` map element commands.
//!
//! aya's typed maps fix key and value types at compile time. A script's
//! maps get their layout from the script, so this module works on raw
//! bytes. Per-CPU maps return one value slot per possible CPU, each slot
//! rounded up to 8 bytes.

use std::{
    fs, io,
    os::fd::{AsFd, AsRawFd as _, BorrowedFd},
};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
/// `BPF_EXIST`: update only an entry that exists.
const BPF_EXIST: u64 = 2;

/// The part of `union bpf_attr` that the map element commands use.
#[repr(C)]
#[derive(Default)]
struct ElementAttr {
    map_fd: u32,
    padding: u32,
    key: u64,
    /// `value` for lookups and updates, `next_key` for `GET_NEXT_KEY`.
    value: u64,
    flags: u64,
}

fn bpf(command: libc::c_long, attr: &mut ElementAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid, initialized `bpf_attr` prefix of the
    // size passed; the pointers inside it point to buffers that the
    // callers keep alive and size for the map.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut ElementAttr,
            size_of::<ElementAttr>() as u32,
        )
    };
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Number of possible CPUs, which sizes per-CPU values.
pub fn possible_cpus() -> io::Result<usize> {
    let text = fs::read_to_string("/sys/devices/system/cpu/possible")?;
    let mut count = 0;
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        let parse = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("invalid CPU range `{range}`")))
        };
        count += parse(last)? - parse(first)? + 1;
    }
    Ok(count.max(1))
}

/// A map seen as raw bytes.
pub struct RawMap<'a> {
    fd: BorrowedFd<'a>,
    key_size: usize,
    /// Bytes a lookup returns: the value size, times the number of
    /// possible CPUs (with 8-byte slots) for per-CPU maps.
    value_size: usize,
}

impl<'a> RawMap<'a> {
    pub fn new(fd: &'a impl AsFd, key_size: usize, value_size: usize, per_cpu: bool, cpus: usize) -> Self {
        let value_size = if per_cpu {
            value_size.next_multiple_of(8) * cpus
        } else {
            value_size
        };
        Self {
            fd: fd.as_fd(),
            key_size,
            value_size,
        }
    }

    fn attr(&self) -> ElementAttr {
        ElementAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            ..ElementAttr::default()
        }
    }

    /// Returns every key in the map. A map that changes meanwhile may yield a key
    /// that no longer exists, which `lookup` then skips.
    pub fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        loop {
            let mut next = vec![0u8; self.key_size];
            let mut attr = self.attr();
            attr.key = current.as_ref().map_or(0, |key| key.as_ptr() as u64);
            attr.value = next.as_mut_ptr() as u64;
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
                Err(err) => return Err(err),
            }
            keys.push(next.clone());
            current = Some(next);
        }
    }

    /// Returns the value of `key`, or `None` when the key is gone.
    pub fn lookup(&self, key: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut value = vec![0u8; self.value_size];
        let mut attr = self.attr();
        attr.key = key.as_ptr() as u64;
        attr.value = value.as_mut_ptr() as u64;
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Returns every `(key, value)` pair.
    pub fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut entries = Vec::new();
        for key in self.keys()? {
            if let Some(value) = self.lookup(&key)? {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }

    /// Sets the value of `key`, creating the entry if needed.
    pub fn update(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let mut attr = self.attr();
        attr.key = key.as_ptr() as u64;
        attr.value = value.as_ptr() as u64;
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)
    }

    /// Deletes every entry.
    pub fn clear(&self) -> io::Result<()> {
        for key in self.keys()? {
            let mut attr = self.attr();
            attr.key = key.as_ptr() as u64;
            match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Sets every existing value to zero, on every CPU.
    pub fn zero(&self) -> io::Result<()> {
        let zeroes = vec![0u8; self.value_size];
        for key in self.keys()? {
            let mut attr = self.attr();
            attr.key = key.as_ptr() as u64;
            attr.value = zeroes.as_ptr() as u64;
            attr.flags = BPF_EXIST;
            match bpf(BPF_MAP_UPDATE_ELEM, &mut attr) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::possible_cpus;

    #[test]
    fn possible_cpus_is_positive() {
        assert!(possible_cpus().expect("sysfs lists possible CPUs") >= 1);
    }
}
