//! Live tracing sessions: compiled scripts whose links, maps and ring
//! buffer are pinned in bpffs, so that the probes keep running after the
//! command that started them exits. Later commands list them, read their
//! maps and output, and stop them.
//!
//! A `--ttl` deadline is compiled into every program, which does nothing
//! past it, and the next `probe` command removes expired sessions.

pub mod detached;
pub mod export;
pub mod store;
pub mod sys;

use std::{fs, io, path::Path};

use store::Meta;

/// The sysctl that makes the kernel count runs and run time of every BPF
/// program (Linux 5.1 and later).
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The file in [`store::RUN_DIR`] that contains the sysctl's value from
/// before a session turned it on, to restore when the last such session
/// stops.
const STATS_RESTORE_FILE: &str = "stats_restore";

/// Removes the sessions past their deadline and the directories of
/// interrupted starts, and returns the messages to print: the removed
/// sessions, and a restored statistics sysctl. Does nothing, quickly, when not
/// root or when no session was ever started.
pub fn remove_expired_if_any() -> Vec<String> {
    if !crate::kernel::is_root() || !Path::new(store::ROOT).exists() {
        return Vec::new();
    }
    let mut messages = Vec::new();
    if let Err(err) = store::remove_stale_partials() {
        log::warn!("failed to remove interrupted session starts in {}: {err}", store::ROOT);
    }
    let now = crate::mitigate::store::boot_time_ns();
    let Ok(found) = store::list() else {
        return messages;
    };
    for session in found {
        let Ok(meta) = &session.meta else {
            continue;
        };
        if !meta.expired(now) {
            continue;
        }
        let Ok(_lock) = store::name_lock(&session.name) else {
            continue;
        };
        match store::remove(&session.dir) {
            Ok(_) => {
                messages.push(format!("removed expired session {}", session.name));
                if let Some(message) = release_stats(&session.name) {
                    messages.push(message);
                }
            }
            Err(err) => log::warn!("failed to remove expired session {} ({}): {err}", session.name, session.dir.display()),
        }
    }
    messages
}

/// Turns on `kernel.bpf_stats_enabled` for a session that asked for
/// statistics, and returns what to tell the user.
pub fn enable_stats() -> Result<String, String> {
    let _lock = store::Lock::acquire("stats.lock").map_err(|err| err.to_string())?;
    let current = fs::read_to_string(BPF_STATS_SYSCTL)
        .map_err(|err| format!("failed to read {BPF_STATS_SYSCTL}, which --stats needs (Linux 5.1 and later): {err}"))?;
    if current.trim() != "0" {
        return Ok("kernel.bpf_stats_enabled is already on; run counts and run times are counted".into());
    }
    let restore = Path::new(store::RUN_DIR).join(STATS_RESTORE_FILE);
    fs::write(&restore, "0\n").map_err(|err| format!("failed to write {}: {err}", restore.display()))?;
    fs::write(BPF_STATS_SYSCTL, "1\n").map_err(|err| format!("failed to turn on {BPF_STATS_SYSCTL}: {err}"))?;
    Ok("turned on kernel.bpf_stats_enabled, which adds two clock reads to every run of every BPF program on this \
        machine; it is turned off again when the last session started with --stats stops"
        .into())
}

/// Restores `kernel.bpf_stats_enabled` when no session but `stopped`
/// asked for statistics and a session turned it on. Returns what to tell
/// the user.
pub fn release_stats(stopped: &str) -> Option<String> {
    let _lock = store::Lock::acquire("stats.lock").ok()?;
    let restore = Path::new(store::RUN_DIR).join(STATS_RESTORE_FILE);
    let previous = fs::read_to_string(&restore).ok()?;
    let others_asked = store::list()
        .unwrap_or_default()
        .iter()
        .any(|session| session.name != stopped && session.meta.as_ref().is_ok_and(|meta| meta.stats));
    if others_asked {
        return None;
    }
    if let Err(err) = fs::write(BPF_STATS_SYSCTL, previous.trim()) {
        return Some(format!("failed to restore {BPF_STATS_SYSCTL} to {}: {err}", previous.trim()));
    }
    let _ = fs::remove_file(&restore);
    Some(format!("restored kernel.bpf_stats_enabled to {}", previous.trim()))
}

/// Tells whether `kernel.bpf_stats_enabled` is on.
pub fn stats_enabled() -> bool {
    fs::read_to_string(BPF_STATS_SYSCTL).is_ok_and(|value| value.trim() != "0")
}

/// Run statistics of one program, from `bpf_prog_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub loaded: bool,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Reads the run statistics of the programs `ids`, in that order. A
/// program that is no longer loaded has `loaded: false`.
pub fn run_stats(ids: &[u32]) -> Vec<RunStats> {
    let mut stats = vec![RunStats::default(); ids.len()];
    for program in aya::programs::loaded_programs().filter_map(Result::ok) {
        for (index, id) in ids.iter().enumerate() {
            if program.id() == *id {
                stats[index] = RunStats {
                    loaded: true,
                    run_count: program.run_count(),
                    run_time_ns: program.run_time().as_nanos() as u64,
                };
            }
        }
    }
    stats
}

/// Sums a pinned per-CPU `u64` counter at index 0, such as `lost`.
pub fn read_counter(dir: &Path, pin: &str) -> io::Result<u64> {
    use aya::maps::{Map, MapData, PerCpuArray};
    let data = MapData::from_pin(dir.join(pin)).map_err(io::Error::other)?;
    let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(io::Error::other)?;
    Ok(array.get(&0, 0).map(|values| values.iter().sum()).unwrap_or(0))
}

/// Reads the description and the script of the session `name`.
pub fn read_session(name: &str) -> Result<(Meta, String), String> {
    let dir = store::dir_of(name);
    if !dir.exists() {
        return Err(format!("no session named `{name}`; `probe session list` lists them"));
    }
    let meta = store::read_text(&dir, "meta")
        .map_err(|err| err.to_string())
        .and_then(|text| Meta::from_text(&text))?;
    let script = store::read_text(&dir, "script").map_err(|err| err.to_string())?;
    Ok((meta, script))
}

#[cfg(test)]
mod tests {
    use crate::script::{
        codegen::helper,
        compile::{self, CompileOptions},
        env::Environment,
        insn::Insn,
        probes::ProbeKind,
        span::Source,
    };

    #[test]
    fn deadline_check_comes_first() {
        let source = Source::new("-e", "BEGIN { @b = 1; } interval:s:1 { @x = count(); } END { @e = 1; }");
        let mut options = CompileOptions::default();
        options.codegen.deadline_boot_ns = 123_000_000_000;
        let compiled = compile::compile(&source, &Environment::fixed(None, Vec::new()), &options).expect("compiles");
        for probe in &compiled.probes {
            let calls: Vec<i32> = probe.code.insns.iter().filter(|insn| insn.opcode == Insn::call(0).opcode).map(|insn| insn.imm).collect();
            let checks_deadline = calls.first() == Some(&helper::KTIME_GET_BOOT_NS);
            match probe.kind {
                ProbeKind::Begin | ProbeKind::End => assert!(!calls.contains(&helper::KTIME_GET_BOOT_NS), "{calls:?}"),
                _ => assert!(checks_deadline, "{} calls {calls:?}", probe.kind.display_name()),
            }
        }

        let without = compile::compile(&source, &Environment::fixed(None, Vec::new()), &CompileOptions::default()).expect("compiles");
        for probe in &without.probes {
            assert!(probe.code.insns.iter().all(|insn| insn.imm != helper::KTIME_GET_BOOT_NS || insn.opcode != Insn::call(0).opcode));
        }
    }
}
