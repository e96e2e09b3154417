//! The built-in mitigation rules and the values they take: socket
//! families and types, durations and scopes, parsed from command-line text
//! into what the kernel-side programs compare against.

use std::{fmt, fs, os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use probe_common::TASK_COMM_LEN;

/// One kernel-side program of a rule: its symbol in the mitigation object
/// and the LSM hook it attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleProgram {
    pub symbol: &'static str,
    pub hook: &'static str,
}

/// Whose `bpf()` calls the bpf rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BpfSpare {
    /// Processes with real uid 0.
    Root,
    /// Processes running the same executable as this tool.
    Tool,
}

/// A built-in rule with its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Socket creation from user space for one family, optionally one type.
    DenySocket {
        family: SocketFamily,
        socket_type: Option<SocketType>,
    },
    /// Module autoloading: every request, or only requests for one module
    /// name (as `request_module()` formats it, `net-pf-17` for example).
    DenyModuleAutoload { name: Option<String> },
    /// Explicit module loads through `init_module` and `finit_module`.
    DenyModuleLoad,
    /// Creating user namespaces; root is spared unless `all_users`.
    DenyUserns { all_users: bool },
    /// exec of one file, identified by its device and inode.
    DenyExec { path: PathBuf, identity: FileIdentity },
    /// ptrace attach (`PTRACE_ATTACH`, `PTRACE_SEIZE`) and `PTRACE_TRACEME`.
    DenyPtrace,
    /// The bpf() system call for everyone but `spare`.
    DenyBpf { spare: BpfSpare },
}

impl Rule {
    /// Returns the rule's name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::DenySocket { .. } => "deny-socket",
            Rule::DenyModuleAutoload { .. } => "deny-module-autoload",
            Rule::DenyModuleLoad => "deny-module-load",
            Rule::DenyUserns { .. } => "deny-userns",
            Rule::DenyExec { .. } => "deny-exec",
            Rule::DenyPtrace => "deny-ptrace",
            Rule::DenyBpf { .. } => "deny-bpf",
        }
    }

    /// Returns the kernel-side programs that carry out the rule.
    pub fn programs(&self) -> &'static [RuleProgram] {
        match self {
            Rule::DenySocket { .. } => &[RuleProgram { symbol: "mt_socket", hook: "socket_create" }],
            Rule::DenyModuleAutoload { .. } => &[RuleProgram { symbol: "mt_kmod_request", hook: "kernel_module_request" }],
            Rule::DenyModuleLoad => &[
                RuleProgram { symbol: "mt_kmod_file", hook: "kernel_read_file" },
                RuleProgram { symbol: "mt_kmod_data", hook: "kernel_load_data" },
            ],
            Rule::DenyUserns { .. } => &[RuleProgram { symbol: "mt_userns", hook: "userns_create" }],
            Rule::DenyExec { .. } => &[RuleProgram { symbol: "mt_exec", hook: "bprm_check_security" }],
            Rule::DenyPtrace => &[
                RuleProgram { symbol: "mt_ptrace", hook: "ptrace_access_check" },
                RuleProgram { symbol: "mt_traceme", hook: "ptrace_traceme" },
            ],
            Rule::DenyBpf { .. } => &[RuleProgram { symbol: "mt_bpf", hook: "bpf" }],
        }
    }
}

impl fmt::Display for Rule {
    /// Writes the rule as a command line would give it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            Rule::DenySocket { family, socket_type } => {
                write!(f, " --family {family}")?;
                if let Some(socket_type) = socket_type {
                    write!(f, " --type {socket_type}")?;
                }
                Ok(())
            }
            Rule::DenyModuleAutoload { name: Some(name) } => write!(f, " {name}"),
            Rule::DenyUserns { all_users: true } => f.write_str(" --all-users"),
            Rule::DenyExec { path, .. } => write!(f, " {}", path.display()),
            Rule::DenyBpf { spare: BpfSpare::Tool } => f.write_str(" --spare tool"),
            _ => Ok(()),
        }
    }
}

/// Socket address families by name (`AF_*` in `include/linux/socket.h`),
/// indexed by number; empty where Linux has no family.
const FAMILIES: [&str; 46] = [
    "unspec", "unix", "inet", "ax25", "ipx", "appletalk", "netrom", "bridge", "atmpvc", "x25",
    "inet6", "rose", "decnet", "netbeui", "security", "key", "netlink", "packet", "ash", "econet",
    "atmsvc", "rds", "sna", "irda", "pppox", "wanpipe", "llc", "ib", "mpls", "can", "tipc",
    "bluetooth", "iucv", "rxrpc", "isdn", "phonet", "ieee802154", "caif", "alg", "nfc", "vsock",
    "kcm", "qipcrtr", "smc", "xdp", "mctp",
];

/// A socket address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketFamily(pub i32);

impl SocketFamily {
    /// Parses `packet`, `AF_PACKET`, `PF_PACKET` or `17`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower
            .strip_prefix("af_")
            .or_else(|| lower.strip_prefix("pf_"))
            .unwrap_or(&lower);
        let name = match name {
            "local" => "unix",
            "ipv4" => "inet",
            "ipv6" => "inet6",
            other => other,
        };
        if let Ok(number) = name.parse::<i32>() {
            if (1..FAMILIES.len() as i32).contains(&number) {
                return Ok(Self(number));
            }
            return Err(format!(
                "invalid socket family {text}: Linux numbers families from 1 to {}",
                FAMILIES.len() - 1
            ));
        }
        match FAMILIES.iter().position(|family| *family == name) {
            Some(index) if index > 0 => Ok(Self(index as i32)),
            _ => {
                let matches = crate::suggest::close_matches(name, FAMILIES[1..].iter().copied(), 3);
                let mut message = format!("unknown socket family `{text}`");
                if !matches.is_empty() {
                    message.push_str(&format!("; did you mean: {}?", matches.join(", ")));
                }
                message.push_str(" (use a name such as packet, inet6, vsock, or the AF_ number)");
                Err(message)
            }
        }
    }

    /// Returns the family's lower-case name without `AF_`, or its number.
    pub fn name(self) -> String {
        FAMILIES
            .get(self.0 as usize)
            .filter(|name| !name.is_empty())
            .map_or_else(|| self.0.to_string(), |name| (*name).to_owned())
    }
}

impl fmt::Display for SocketFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Socket types (`SOCK_*`), by name and number.
const TYPES: [(&str, i32); 7] = [
    ("stream", 1),
    ("dgram", 2),
    ("raw", 3),
    ("rdm", 4),
    ("seqpacket", 5),
    ("dccp", 6),
    ("packet", 10),
];

/// A socket type, without the `SOCK_NONBLOCK` and `SOCK_CLOEXEC` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketType(pub i32);

impl SocketType {
    /// Parses `raw`, `SOCK_RAW` or `3`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let name = lower.strip_prefix("sock_").unwrap_or(&lower);
        if let Ok(number) = name.parse::<i32>()
            && TYPES.iter().any(|(_, value)| *value == number)
        {
            return Ok(Self(number));
        }
        TYPES
            .iter()
            .find(|(type_name, _)| *type_name == name)
            .map(|(_, value)| Self(*value))
            .ok_or_else(|| {
                let names: Vec<&str> = TYPES.iter().map(|(type_name, _)| *type_name).collect();
                format!("unknown socket type `{text}` (use one of {})", names.join(", "))
            })
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match TYPES.iter().find(|(_, value)| *value == self.0) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A file's identity as the kernel records it: the file system's kernel
/// device number (`MAJOR << 20 | MINOR`, unlike `st_dev`) and the inode
/// number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
}

impl FileIdentity {
    /// Reads the identity of the file at `path`, following symbolic links
    /// as exec does.
    pub fn of(path: &std::path::Path) -> std::io::Result<Self> {
        let metadata = fs::metadata(path)?;
        Ok(Self::from_metadata(&metadata))
    }

    pub fn from_metadata(metadata: &fs::Metadata) -> Self {
        let st_dev = metadata.dev();
        let major = libc::major(st_dev);
        let minor = libc::minor(st_dev);
        Self {
            device: (u64::from(major) << 20) | u64::from(minor),
            inode: metadata.ino(),
        }
    }
}

/// Parses a duration such as `90s`, `10m`, `2h`, `1d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration `{text}`: use a number with a unit, such as 30s, 10m, 2h or 1d");
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(invalid()),
        };
        let value: u64 = digits.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(invalid)?;
        digits.clear();
        saw_unit = true;
    }
    if !digits.is_empty() || !saw_unit {
        return Err(invalid());
    }
    if total == 0 {
        return Err(format!("invalid duration `{text}`: it must be at least 1s"));
    }
    // A temporary mitigation that outlives a year is a configuration
    // problem, and the kernel's boot-time clock counts in u64 nanoseconds.
    const MAX_SECONDS: u64 = 366 * 86_400;
    if total > MAX_SECONDS {
        return Err(format!("invalid duration `{text}`: the longest is 366d; apply it again when it expires"));
    }
    Ok(Duration::from_secs(total))
}

/// Formats seconds as `1h02m03s`, `4m05s` or `6s`.
pub fn format_seconds(seconds: u64) -> String {
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m{secs:02}s")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// The tasks a rule applies to. Every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    pub uid: Option<u32>,
    pub comm: Option<String>,
    /// cgroup v2 path as given, with its id (the directory's inode number).
    pub cgroup: Option<(PathBuf, u64)>,
}

impl Scope {
    /// Adds one `--scope` value: `uid=N` (or a user name), `comm=NAME` or
    /// `cgroup=PATH`.
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let Some((key, value)) = text.split_once('=') else {
            return Err(format!("invalid scope `{text}`: use uid=UID, comm=NAME or cgroup=PATH"));
        };
        let already = match key {
            "uid" => self.uid.is_some(),
            "comm" => self.comm.is_some(),
            "cgroup" => self.cgroup.is_some(),
            _ => false,
        };
        if already {
            return Err(format!(
                "invalid scope `{text}`: a scope takes one {key}; give --scope {key}=... once (different keys may be combined)"
            ));
        }
        match key {
            "uid" => self.uid = Some(parse_uid(value)?),
            "comm" => self.comm = Some(check_comm(value)?),
            "cgroup" => self.cgroup = Some(cgroup_id(value)?),
            _ => return Err(format!("invalid scope `{text}`: use uid=UID, comm=NAME or cgroup=PATH")),
        }
        Ok(())
    }

    pub fn is_everyone(&self) -> bool {
        self.uid.is_none() && self.comm.is_none() && self.cgroup.is_none()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(uid) = self.uid {
            parts.push(format!("uid={uid}"));
        }
        if let Some(comm) = &self.comm {
            parts.push(format!("comm={comm}"));
        }
        if let Some((path, _)) = &self.cgroup {
            parts.push(format!("cgroup={}", path.display()));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// Parses a numeric uid or looks a user name up in `/etc/passwd`.
fn parse_uid(text: &str) -> Result<u32, String> {
    if let Ok(uid) = text.parse::<u32>() {
        return Ok(uid);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(text)).then(|| fields.nth(1)?.parse().ok())?
        })
        .ok_or_else(|| format!("invalid uid `{text}`: not a number and not a user in /etc/passwd"))
}

/// Checks that `comm` fits the kernel's 15 visible characters.
pub fn check_comm(comm: &str) -> Result<String, String> {
    if comm.is_empty() || comm.len() >= TASK_COMM_LEN {
        return Err(format!(
            "invalid comm `{comm}`: the kernel keeps 1 to {} bytes of a command name",
            TASK_COMM_LEN - 1
        ));
    }
    Ok(comm.to_owned())
}

/// `CGROUP2_SUPER_MAGIC` from `include/uapi/linux/magic.h`.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Resolves a cgroup v2 path, absolute or relative to `/sys/fs/cgroup`,
/// to its id, which is the inode number of its directory.
fn cgroup_id(text: &str) -> Result<(PathBuf, u64), String> {
    let path = if text.starts_with("/sys/fs/cgroup") {
        PathBuf::from(text)
    } else {
        PathBuf::from("/sys/fs/cgroup").join(text.trim_start_matches('/'))
    };
    let metadata = fs::metadata(&path).map_err(|err| format!("invalid cgroup `{text}`: {}: {err}", path.display()))?;
    if !metadata.is_dir() {
        return Err(format!("invalid cgroup `{text}`: {} is not a directory", path.display()));
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("invalid cgroup `{text}`: the path contains a NUL byte"))?;
    // SAFETY: an all-zero statfs is a valid value for statfs to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is writable.
    let result = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    if result != 0 || stat.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "invalid cgroup `{text}`: {} is not in a cgroup v2 hierarchy, which the cgroup scope needs",
            path.display()
        ));
    }
    Ok((path, metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_and_numbers() {
        assert_eq!(SocketFamily::parse("packet"), Ok(SocketFamily(17)));
        assert_eq!(SocketFamily::parse("AF_PACKET"), Ok(SocketFamily(17)));
        assert_eq!(SocketFamily::parse("PF_INET6"), Ok(SocketFamily(10)));
        assert_eq!(SocketFamily::parse("17"), Ok(SocketFamily(17)));
        assert_eq!(SocketFamily::parse("local"), Ok(SocketFamily(1)));
        assert_eq!(SocketFamily(40).to_string(), "vsock");
    }

    #[test]
    fn family_errors_name_the_value() {
        let error = SocketFamily::parse("pakcet").unwrap_err();
        assert!(error.contains("`pakcet`"), "{error}");
        assert!(error.contains("did you mean: packet?"), "{error}");
        let error = SocketFamily::parse("99").unwrap_err();
        assert!(error.contains("99"), "{error}");
        assert!(SocketFamily::parse("0").is_err());
    }

    #[test]
    fn socket_types() {
        assert_eq!(SocketType::parse("raw"), Ok(SocketType(3)));
        assert_eq!(SocketType::parse("SOCK_DGRAM"), Ok(SocketType(2)));
        assert!(SocketType::parse("bogus").unwrap_err().contains("stream"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["20", "s", "", "5x", "0s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(7), "7s");
        assert_eq!(format_seconds(65), "1m05s");
        assert_eq!(format_seconds(3723), "1h02m03s");
    }

    #[test]
    fn scopes() {
        let mut scope = Scope::default();
        assert!(scope.is_everyone());
        scope.add("uid=1000").unwrap();
        scope.add("comm=curl").unwrap();
        assert_eq!(scope.to_string(), "uid=1000,comm=curl");
        assert!(scope.add("comm=a-name-longer-than-15").is_err());
        assert!(scope.add("user=1").is_err());
        assert!(scope.add("uid").is_err());
        assert!(scope.add("cgroup=/no/such/cgroup").is_err());
    }

    #[test]
    fn rules_display_as_command_lines() {
        let rule = Rule::DenySocket {
            family: SocketFamily(17),
            socket_type: Some(SocketType(3)),
        };
        assert_eq!(rule.to_string(), "deny-socket --family packet --type raw");
        assert_eq!(
            Rule::DenyModuleAutoload { name: Some("net-pf-12".into()) }.to_string(),
            "deny-module-autoload net-pf-12"
        );
        assert_eq!(Rule::DenyBpf { spare: BpfSpare::Root }.to_string(), "deny-bpf");
    }
}
