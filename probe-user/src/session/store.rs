//! Sessions as they live in bpffs: one directory per session under
//! [`ROOT`], named after the session. It contains the pinned links
//! (`link_SYMBOL`), the pinned maps (`events`, `lost`, `drops`, `map_N`),
//! the pinned `END` programs (`end_SYMBOL`), and the description and the
//! script as symbolic links (`meta_N`, `script_N`), because bpffs accepts
//! only pinned objects, directories and symbolic links. A symbolic link's
//! target contains at most 4095 bytes, so longer text is split over several.
//!
//! Locks live in the run directory [`RUN_DIR`]: `NAME.lock` is held while
//! a session is started or stopped, `NAME.reader` while a process reads its
//! ring buffer, and `stats.lock` while `kernel.bpf_stats_enabled` changes.

use std::{
    fs, io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

/// The directory that contains one directory per session.
pub const ROOT: &str = "/sys/fs/bpf/probe/sessions";
/// The directory of the lock files.
pub const RUN_DIR: &str = "/run/probe/sessions";
/// Prefix of the directory of a session being started, followed by the
/// starting process's pid; renamed to the session's name at the end.
pub const PARTIAL_PREFIX: &str = "partial-";
/// The maximum length of a session name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Bytes of text per symbolic link, below the kernel's 4095-byte limit.
const CHUNK: usize = 4000;

/// Checks that `name` can name a session: 1 to 64 letters, digits, `_`
/// or `-`, not starting with `-` or the partial prefix.
pub fn validate_name(name: &str) -> Result<(), String> {
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !valid_chars || name.starts_with('-') {
        return Err(format!(
            "invalid session name `{name}`: use 1 to {MAX_NAME_LEN} letters, digits, `_` or `-`, not starting with `-`"
        ));
    }
    if name.starts_with(PARTIAL_PREFIX) {
        return Err(format!("invalid session name `{name}`: names starting with `{PARTIAL_PREFIX}` are reserved"));
    }
    Ok(())
}

/// Returns the directory of session `name`.
pub fn dir_of(name: &str) -> PathBuf {
    Path::new(ROOT).join(name)
}

/// Returns the pin name of the link of program `symbol`.
pub fn link_pin(symbol: &str) -> String {
    format!("link_{symbol}")
}

/// Returns the pin name of the `END` program `symbol`.
pub fn end_pin(symbol: &str) -> String {
    format!("end_{symbol}")
}

/// One attached probe of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    /// Kernel id of the program.
    pub program_id: u32,
    /// The probe as `probe run -v` names it, with its mechanism:
    /// `fentry:vfs_read`, `tracepoint:syscalls:sys_enter_getppid`.
    pub name: String,
}

/// The description of a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub name: String,
    /// `CLOCK_REALTIME` seconds when it started.
    pub created_unix: u64,
    /// `CLOCK_BOOTTIME` nanoseconds after which the programs do nothing;
    /// 0 for none.
    pub deadline_boot_ns: u64,
    /// The compile options that the script was compiled with, so that
    /// later commands compile it again to the same maps and outputs.
    pub map_size: u32,
    pub buffer_size: u32,
    /// Whether the session asked for `kernel.bpf_stats_enabled`.
    pub stats: bool,
    pub probes: Vec<ProbeRecord>,
    /// Kernel ids of the pinned `END` programs.
    pub end_program_ids: Vec<u32>,
}

impl Meta {
    /// Serializes the description as `key=value` lines.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "name={}\ncreated_unix={}\ndeadline_boot_ns={}\nmap_size={}\nbuffer_size={}\nstats={}\n",
            self.name,
            self.created_unix,
            self.deadline_boot_ns,
            self.map_size,
            self.buffer_size,
            u8::from(self.stats),
        );
        for probe in &self.probes {
            text.push_str(&format!("probe={} {}\n", probe.program_id, probe.name));
        }
        for id in &self.end_program_ids {
            text.push_str(&format!("end={id}\n"));
        }
        text
    }

    /// Parses [`Meta::to_text`] output; unknown keys are ignored.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut meta = Meta::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let number = |value: &str| value.parse::<u64>().map_err(|_| format!("invalid {key} `{value}`"));
            match key {
                "name" => meta.name = value.to_owned(),
                "created_unix" => meta.created_unix = number(value)?,
                "deadline_boot_ns" => meta.deadline_boot_ns = number(value)?,
                "map_size" => meta.map_size = number(value)? as u32,
                "buffer_size" => meta.buffer_size = number(value)? as u32,
                "stats" => meta.stats = value == "1",
                "probe" => {
                    let (id, name) = value.split_once(' ').ok_or_else(|| format!("invalid probe `{value}`"))?;
                    meta.probes.push(ProbeRecord { program_id: number(id)? as u32, name: name.to_owned() });
                }
                "end" => meta.end_program_ids.push(number(value)? as u32),
                _ => {}
            }
        }
        if meta.name.is_empty() {
            return Err("the description has no name".into());
        }
        Ok(meta)
    }

    /// Tells whether the deadline has passed at `now_boot_ns`.
    pub fn expired(&self, now_boot_ns: u64) -> bool {
        crate::mitigate::store::deadline_passed(self.deadline_boot_ns, now_boot_ns)
    }

    /// Seconds until the deadline, `None` without one.
    pub fn seconds_left(&self, now_boot_ns: u64) -> Option<u64> {
        crate::mitigate::store::seconds_until(self.deadline_boot_ns, now_boot_ns)
    }

    /// Kernel ids of every program of the session.
    pub fn program_ids(&self) -> Vec<u32> {
        self.probes.iter().map(|probe| probe.program_id).chain(self.end_program_ids.iter().copied()).collect()
    }
}

/// Writes `text` into `dir` as symbolic links `PREFIX_0`, `PREFIX_1`, ...
pub fn write_text(dir: &Path, prefix: &str, text: &str) -> io::Result<()> {
    let mut rest = text;
    let mut index = 0;
    loop {
        let mut end = rest.len().min(CHUNK);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (chunk, tail) = rest.split_at(end);
        // An empty target is invalid, so empty text is one space.
        let target = if chunk.is_empty() { " " } else { chunk };
        std::os::unix::fs::symlink(target, dir.join(format!("{prefix}_{index}")))?;
        rest = tail;
        index += 1;
        if rest.is_empty() {
            return Ok(());
        }
    }
}

/// Reads text that [`write_text`] wrote.
pub fn read_text(dir: &Path, prefix: &str) -> io::Result<String> {
    let mut text = String::new();
    for index in 0.. {
        let path = dir.join(format!("{prefix}_{index}"));
        match fs::read_link(&path) {
            Ok(target) => text.push_str(&target.to_string_lossy()),
            Err(err) if err.kind() == io::ErrorKind::NotFound && index > 0 => break,
            Err(err) => return Err(io::Error::new(err.kind(), format!("failed to read {}: {err}", path.display()))),
        }
    }
    Ok(if text == " " { String::new() } else { text })
}

/// A session found in bpffs.
#[derive(Debug)]
pub struct Found {
    pub name: String,
    pub dir: PathBuf,
    /// The description, or why it could not be read.
    pub meta: Result<Meta, String>,
}

/// Lists the sessions, by name. A missing [`ROOT`] means none.
pub fn list() -> io::Result<Vec<Found>> {
    let entries = match fs::read_dir(ROOT) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(PARTIAL_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let meta = read_text(&dir, "meta").map_err(|err| err.to_string()).and_then(|text| Meta::from_text(&text));
        found.push(Found { name, dir, meta });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// An exclusive `flock` on a file in [`RUN_DIR`], released when dropped.
pub struct Lock {
    file: fs::File,
    pub path: PathBuf,
}

impl Lock {
    /// Waits for the lock `NAME` (a file name in [`RUN_DIR`]).
    pub fn acquire(name: &str) -> io::Result<Lock> {
        let lock = Self::open(name)?;
        lock.flock(libc::LOCK_EX)?;
        Ok(lock)
    }

    /// Takes the lock `NAME` unless another process has it, and writes
    /// this process's id into its file. Returns `Ok(Err(holder))`, with
    /// the id that the file contains, when another process has the lock.
    pub fn try_acquire(name: &str) -> io::Result<Result<Lock, String>> {
        let lock = Self::open(name)?;
        match lock.flock(libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                lock.file.set_len(0)?;
                io::Write::write_all(&mut &lock.file, format!("{}\n", std::process::id()).as_bytes())?;
                Ok(Ok(lock))
            }
            Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                let holder = fs::read_to_string(&lock.path).unwrap_or_default().trim().to_owned();
                Ok(Err(holder))
            }
            Err(err) => Err(err),
        }
    }

    fn open(name: &str) -> io::Result<Lock> {
        fs::create_dir_all(RUN_DIR).map_err(|err| io::Error::new(err.kind(), format!("failed to create {RUN_DIR}: {err}")))?;
        let path = Path::new(RUN_DIR).join(name);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|err| io::Error::new(err.kind(), format!("failed to open {}: {err}", path.display())))?;
        Ok(Lock { file, path })
    }

    fn flock(&self, operation: libc::c_int) -> io::Result<()> {
        // SAFETY: flock has no memory-safety preconditions; the descriptor
        // is owned by `self.file`.
        if unsafe { libc::flock(self.file.as_raw_fd(), operation) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// Waits for the lock that `start` and `stop` of session `name` take.
pub fn name_lock(name: &str) -> io::Result<Lock> {
    Lock::acquire(&format!("{name}.lock"))
}

/// Takes the lock of the one reader of session `name`'s ring buffer.
pub fn reader_lock(name: &str) -> io::Result<Result<Lock, String>> {
    Lock::try_acquire(&format!("{name}.reader"))
}

/// Removes the session in `dir`: unpins its links, maps and programs. The
/// kernel detaches the programs shortly after, once no descriptor refers
/// to them. Returns the names of the pinned objects that were there.
pub fn remove(dir: &Path) -> io::Result<Vec<String>> {
    let mut found: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries.flatten().filter_map(|entry| entry.file_name().to_str().map(str::to_owned)).collect(),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    found.sort();
    fs::remove_dir_all(dir)?;
    Ok(found)
}

/// Removes the directories that an interrupted `session start` left
/// behind: `partial-PID` of a process that no longer runs.
pub fn remove_stale_partials() -> io::Result<()> {
    let Ok(entries) = fs::read_dir(ROOT) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(PARTIAL_PREFIX)) else {
            continue;
        };
        let alive = pid.parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let meta = Meta {
            name: "reads".into(),
            created_unix: 1_700_000_000,
            deadline_boot_ns: 42_000_000_000,
            map_size: 4096,
            buffer_size: 1 << 20,
            stats: true,
            probes: vec![
                ProbeRecord { program_id: 17, name: "fentry:vfs_read".into() },
                ProbeRecord { program_id: 18, name: "tracepoint:syscalls:sys_enter_getppid".into() },
            ],
            end_program_ids: vec![19],
        };
        assert_eq!(Meta::from_text(&meta.to_text()), Ok(meta.clone()));
        assert_eq!(meta.program_ids(), [17, 18, 19]);
    }

    #[test]
    fn meta_without_name_is_invalid() {
        assert!(Meta::from_text("created_unix=1\n").is_err());
        assert!(Meta::from_text("name=a\nprobe=x\n").is_err());
    }

    #[test]
    fn names_are_validated() {
        for good in ["reads", "a", "open-calls_2"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "a.b", "a/b", "-x", "partial-1", "é", long.as_str()] {
            let error = validate_name(bad).expect_err(bad);
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
    }

    #[test]
    fn text_is_split_and_joined() {
        let dir = std::env::temp_dir().join(format!("probe-session-text-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("temporary directory");
        let text = "é".repeat(5000) + "\nend";
        write_text(&dir, "script", &text).expect("write");
        assert!(dir.join("script_2").symlink_metadata().is_ok());
        assert_eq!(read_text(&dir, "script").expect("read"), text);
        write_text(&dir, "empty", "").expect("write");
        assert_eq!(read_text(&dir, "empty").expect("read"), "");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
