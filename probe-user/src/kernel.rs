//! Facts about the running kernel that decide what can be attached, each
//! read from the file that states it, so that error messages can name the
//! fact behind a refusal.

use std::{fs, io::Read as _, path::Path};

/// The kprobe PMU that `perf_event_open` uses to create kprobes without
/// tracefs (Linux 4.17 and later).
pub const KPROBE_PMU_PATH: &str = "/sys/bus/event_source/devices/kprobe";
/// The tracefs interface for kprobes, in both usual mount points.
const KPROBE_EVENTS_PATHS: [&str; 2] = [
    "/sys/kernel/tracing/kprobe_events",
    "/sys/kernel/debug/tracing/kprobe_events",
];
const CONFIG_GZ_PATH: &str = "/proc/config.gz";

/// Whether this kernel can create kprobes, and the evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KprobeSupport {
    Available,
    /// No kprobes; the string names the facts, for example that the kprobe
    /// PMU is missing and `CONFIG_KPROBES` is not set.
    Missing(String),
}

/// Checks for kprobe support.
pub fn kprobe_support() -> KprobeSupport {
    if Path::new(KPROBE_PMU_PATH).exists()
        || KPROBE_EVENTS_PATHS.iter().any(|p| Path::new(p).exists())
    {
        return KprobeSupport::Available;
    }
    let mut facts = format!("{KPROBE_PMU_PATH} does not exist");
    match kernel_config_option("CONFIG_KPROBES") {
        Some(ConfigValue::Set(value)) => {
            facts.push_str(&format!(" although {CONFIG_GZ_PATH} has CONFIG_KPROBES={value}"));
        }
        Some(ConfigValue::NotSet) => {
            facts.push_str(&format!(
                " and CONFIG_KPROBES is not set in {CONFIG_GZ_PATH}"
            ));
        }
        None => {}
    }
    KprobeSupport::Missing(facts)
}

/// A kernel configuration option's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigValue {
    Set(String),
    NotSet,
}

/// Looks `option` up in `/proc/config.gz`. Returns `None` when the kernel
/// does not publish its configuration.
pub fn kernel_config_option(option: &str) -> Option<ConfigValue> {
    let compressed = fs::read(CONFIG_GZ_PATH).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(compressed.as_slice())
        .read_to_string(&mut text)
        .ok()?;
    Some(config_value(&text, option))
}

fn config_value(config: &str, option: &str) -> ConfigValue {
    for line in config.lines() {
        if let Some(value) = line
            .strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return ConfigValue::Set(value.to_owned());
        }
    }
    ConfigValue::NotSet
}

/// Explains why `function` cannot be traced, from the kernel's own lists:
/// the functions ftrace can attach to (`available_filter_functions`) and
/// the kprobe blacklist. Returns `None` when neither list explains it,
/// or when they cannot be read.
pub fn untraceable_reason(function: &str) -> Option<String> {
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = format!("{root}/available_filter_functions");
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let listed = text
            .lines()
            .any(|line| line.split_whitespace().next() == Some(function));
        if !listed {
            return Some(format!(
                "`{function}` is not in {path}: the kernel cannot trace it because it is marked notrace, \
                 inlined into its callers, or otherwise excluded from tracing; trace a caller or a tracepoint instead"
            ));
        }
        break;
    }
    if let Ok(text) = fs::read_to_string("/sys/kernel/debug/kprobes/blacklist") {
        if text.lines().any(|line| line.split_whitespace().nth(1) == Some(function)) {
            return Some(format!(
                "`{function}` is on the kernel's kprobe blacklist (/sys/kernel/debug/kprobes/blacklist): probing it could crash the kernel"
            ));
        }
    }
    None
}

/// Raises the soft limit on open files to the hard limit: every attached
/// program keeps descriptors (a program and a link per kprobe), and
/// hundreds of functions pass the usual soft limit of 1024.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::debug!("failed to raise the open file limit: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Tells whether the current process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns the kernel release, as `uname -r` prints it.
pub fn release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_value_set_and_unset() {
        let config = "CONFIG_BPF=y\n# CONFIG_KPROBES is not set\nCONFIG_HZ=250\n";
        assert_eq!(config_value(config, "CONFIG_BPF"), ConfigValue::Set("y".into()));
        assert_eq!(config_value(config, "CONFIG_HZ"), ConfigValue::Set("250".into()));
        assert_eq!(config_value(config, "CONFIG_KPROBES"), ConfigValue::NotSet);
    }

    #[test]
    fn config_value_needs_whole_name() {
        let config = "CONFIG_KPROBES_ON_FTRACE=y\n";
        assert_eq!(config_value(config, "CONFIG_KPROBES"), ConfigValue::NotSet);
    }
}
