//! Applied mitigations as they live in bpffs: one directory per
//! mitigation under [`ROOT`], named by its id. It contains the pinned links
//! (`link_PROGRAM`), the pinned maps (`config`, `counters`, `events`,
//! `event_cursor`) and `meta`, a symbolic link whose target is the
//! mitigation's description as `key=value` lines. bpffs accepts only pinned
//! objects, directories and symbolic links, so the description is a
//! symbolic link rather than a regular file, and `readlink` prints it.
//!
//! Removing the directory unpins the links, and the kernel detaches the
//! programs once no file descriptor refers to them.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData, PerCpuArray};
use probe_common::mitigation::{AuditRecord, COUNTER_AUDITED, COUNTER_DENIED, COUNTER_SELF_TEST, EVENT_SLOTS};

/// The directory that contains one directory per applied mitigation.
pub const ROOT: &str = "/sys/fs/bpf/probe/mitigations";
/// Prefix of the directory of a mitigation being applied, followed by the
/// applying process's pid; renamed to the id once everything is pinned.
/// bpffs rejects names that contain a dot.
pub const PARTIAL_PREFIX: &str = "partial-";

/// Names of the pinned maps and of the description.
pub const CONFIG_PIN: &str = "config";
pub const COUNTERS_PIN: &str = "counters";
pub const EVENTS_PIN: &str = "events";
pub const EVENT_CURSOR_PIN: &str = "event_cursor";
pub const META_PIN: &str = "meta";

/// The directory of mitigation `id`.
pub fn dir_of(id: u32) -> PathBuf {
    Path::new(ROOT).join(id.to_string())
}

/// The pinned link of program `symbol`.
pub fn link_pin(symbol: &str) -> String {
    format!("link_{symbol}")
}

/// Returns `CLOCK_BOOTTIME` in nanoseconds, the clock that the programs'
/// deadlines use (`bpf_ktime_get_boot_ns`): unlike `CLOCK_MONOTONIC`, it
/// keeps counting while the machine is suspended.
pub fn boot_time_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// Returns `CLOCK_REALTIME` in nanoseconds.
pub fn real_time_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and the clock id exists on
    // every Linux kernel since 2.6.39.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The description of an applied mitigation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub id: u32,
    /// The rule as a command line gives it, `deny-socket --family packet`.
    pub rule: String,
    pub audit: bool,
    /// The scope as `--scope` gives it, `all` for everyone.
    pub scope: String,
    pub except_comms: Vec<String>,
    /// `CLOCK_REALTIME` seconds when it was applied.
    pub created_unix: u64,
    /// `CLOCK_BOOTTIME` nanoseconds after which the programs allow
    /// everything; 0 for none.
    pub deadline_boot_ns: u64,
    /// Kernel ids of the programs, to wait for their unloading.
    pub program_ids: Vec<u32>,
}

impl Meta {
    /// Serializes the description as `key=value` lines.
    pub fn to_text(&self) -> String {
        let ids: Vec<String> = self.program_ids.iter().map(u32::to_string).collect();
        format!(
            "id={}\nrule={}\nmode={}\nscope={}\nexcept_comm={}\ncreated_unix={}\ndeadline_boot_ns={}\nprogram_ids={}\n",
            self.id,
            self.rule,
            if self.audit { "audit" } else { "enforce" },
            self.scope,
            self.except_comms.join(","),
            self.created_unix,
            self.deadline_boot_ns,
            ids.join(","),
        )
    }

    /// Parses [`Meta::to_text`] output; unknown keys are ignored.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let mut meta = Meta::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let number = |value: &str| value.parse::<u64>().map_err(|_| format!("invalid {key} `{value}`"));
            let list = |value: &str| -> Vec<String> {
                value.split(',').filter(|part| !part.is_empty()).map(str::to_owned).collect()
            };
            match key {
                "id" => meta.id = number(value)? as u32,
                "rule" => meta.rule = value.to_owned(),
                "mode" => meta.audit = value == "audit",
                "scope" => meta.scope = value.to_owned(),
                "except_comm" => meta.except_comms = list(value),
                "created_unix" => meta.created_unix = number(value)?,
                "deadline_boot_ns" => meta.deadline_boot_ns = number(value)?,
                "program_ids" => {
                    meta.program_ids = list(value).iter().filter_map(|id| id.parse().ok()).collect();
                }
                _ => {}
            }
        }
        if meta.rule.is_empty() {
            return Err("the description has no rule".into());
        }
        Ok(meta)
    }

    /// Tells whether the deadline has passed at `now_boot_ns`.
    pub fn expired(&self, now_boot_ns: u64) -> bool {
        deadline_passed(self.deadline_boot_ns, now_boot_ns)
    }

    /// Seconds until the deadline, `None` without one.
    pub fn seconds_left(&self, now_boot_ns: u64) -> Option<u64> {
        seconds_until(self.deadline_boot_ns, now_boot_ns)
    }

    pub fn mode(&self) -> &'static str {
        if self.audit { "audit" } else { "enforce" }
    }
}

/// Tells whether a boot-time deadline (0 for none) has passed at
/// `now_boot_ns`. Mitigations and sessions share it.
pub fn deadline_passed(deadline_boot_ns: u64, now_boot_ns: u64) -> bool {
    deadline_boot_ns != 0 && now_boot_ns >= deadline_boot_ns
}

/// Returns the seconds until a boot-time deadline, rounded up, or `None`
/// without one (0).
pub fn seconds_until(deadline_boot_ns: u64, now_boot_ns: u64) -> Option<u64> {
    (deadline_boot_ns != 0).then(|| deadline_boot_ns.saturating_sub(now_boot_ns).div_ceil(1_000_000_000))
}

/// An applied mitigation found in bpffs.
#[derive(Debug)]
pub struct Applied {
    pub id: u32,
    pub dir: PathBuf,
    /// The description, or why it could not be read.
    pub meta: Result<Meta, String>,
}

/// Counter values summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub denied: u64,
    pub audited: u64,
    pub self_test: u64,
}

/// Lists the applied mitigations, by id. A missing [`ROOT`] means none.
pub fn list() -> io::Result<Vec<Applied>> {
    let entries = match fs::read_dir(ROOT) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut applied = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        let meta = read_meta(&dir);
        applied.push(Applied { id, dir, meta });
    }
    applied.sort_by_key(|applied| applied.id);
    Ok(applied)
}

/// Reads the description of the mitigation in `dir`.
pub fn read_meta(dir: &Path) -> Result<Meta, String> {
    let path = dir.join(META_PIN);
    let target = fs::read_link(&path).map_err(|err| format!("failed to read {}: {err}", path.display()))?;
    Meta::from_text(&target.to_string_lossy()).map_err(|err| format!("invalid {}: {err}", path.display()))
}

/// Writes the description of a mitigation into `dir`.
pub fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    std::os::unix::fs::symlink(meta.to_text(), dir.join(META_PIN))
}

/// Opens a pinned map of the mitigation in `dir`.
fn pinned_map(dir: &Path, name: &str) -> Result<MapData, String> {
    let path = dir.join(name);
    MapData::from_pin(&path).map_err(|err| format!("failed to open {}: {}", path.display(), crate::runtime::error_chain(&err)))
}

/// Reads the counters of the mitigation in `dir`.
pub fn read_counts(dir: &Path) -> Result<Counts, String> {
    let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(pinned_map(dir, COUNTERS_PIN)?))
        .map_err(|err| format!("{COUNTERS_PIN} is not a per-CPU array: {err}"))?;
    let sum = |index: u32| counters.get(&index, 0).map(|values| values.iter().sum()).unwrap_or(0);
    Ok(Counts {
        denied: sum(COUNTER_DENIED),
        audited: sum(COUNTER_AUDITED),
        self_test: sum(COUNTER_SELF_TEST),
    })
}

/// Reads every recorded operation of the mitigation in `dir`, oldest
/// first. Each CPU keeps its latest records.
pub fn read_events(dir: &Path) -> Result<Vec<AuditRecord>, String> {
    let events: PerCpuArray<MapData, AuditRecord> = PerCpuArray::try_from(Map::PerCpuArray(pinned_map(dir, EVENTS_PIN)?))
        .map_err(|err| format!("{EVENTS_PIN} is not a per-CPU array: {err}"))?;
    let mut records = Vec::new();
    for index in 0..EVENT_SLOTS {
        let values = events
            .get(&index, 0)
            .map_err(|err| format!("failed to read {EVENTS_PIN}[{index}]: {err}"))?;
        records.extend(values.iter().copied().filter(|record| record.time_ns != 0));
    }
    records.sort_by_key(|record| record.time_ns);
    Ok(records)
}

/// Removes the mitigation in `dir`: unpins its links and maps. The kernel
/// detaches the programs shortly after, once no descriptor refers to them.
pub fn remove(dir: &Path) -> io::Result<()> {
    fs::remove_dir_all(dir)
}

/// Removes the mitigations past their deadline, and the directories that
/// an interrupted `probe mitigate` left behind. Returns the descriptions
/// of the removed mitigations.
pub fn remove_expired() -> io::Result<Vec<Meta>> {
    let now = boot_time_ns();
    let mut removed = Vec::new();
    for applied in list()? {
        let Ok(meta) = applied.meta else {
            continue;
        };
        if meta.expired(now) {
            remove(&applied.dir)?;
            removed.push(meta);
        }
    }
    if let Ok(entries) = fs::read_dir(ROOT) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|name| name.strip_prefix(PARTIAL_PREFIX)) else {
                continue;
            };
            let alive = pid.parse::<u32>().is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                remove(&entry.path())?;
            }
        }
    }
    Ok(removed)
}

/// Returns the lowest id greater than every id in use.
pub fn next_id() -> io::Result<u32> {
    Ok(list()?.iter().map(|applied| applied.id).max().unwrap_or(0) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip() {
        let meta = Meta {
            id: 3,
            rule: "deny-socket --family packet".into(),
            audit: true,
            scope: "uid=1000".into(),
            except_comms: vec!["sshd".into(), "dhclient".into()],
            created_unix: 1_700_000_000,
            deadline_boot_ns: 42_000_000_000,
            program_ids: vec![17, 18],
        };
        assert_eq!(Meta::from_text(&meta.to_text()), Ok(meta));
    }

    #[test]
    fn meta_without_rule_is_invalid() {
        assert!(Meta::from_text("id=1\n").is_err());
    }

    #[test]
    fn deadline_and_time_left() {
        let meta = Meta {
            rule: "deny-ptrace".into(),
            deadline_boot_ns: 10_000_000_000,
            ..Meta::default()
        };
        assert!(!meta.expired(9_999_999_999));
        assert!(meta.expired(10_000_000_000));
        assert_eq!(meta.seconds_left(8_500_000_000), Some(2));
        let forever = Meta { deadline_boot_ns: 0, ..meta };
        assert!(!forever.expired(u64::MAX));
        assert_eq!(forever.seconds_left(1), None);
    }
}
