//! `probe mitigate`: apply, list, remove and read the log of temporary
//! mitigations.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use clap::{Args, Subcommand, ValueEnum};
use probe_common::mitigation::{
    ACTION_AUDITED, AuditRecord, HOOK_BPF, HOOK_BPRM_CHECK_SECURITY, HOOK_KERNEL_LOAD_DATA,
    HOOK_KERNEL_MODULE_REQUEST, HOOK_KERNEL_READ_FILE, HOOK_PTRACE_ACCESS_CHECK, HOOK_PTRACE_TRACEME,
    HOOK_SOCKET_CREATE, HOOK_USERNS_CREATE,
};

use super::CliError;
use crate::{
    format::{comm_str, write_time_of_day},
    mitigate::{
        self,
        apply::{self, Request, Verification},
        checks,
        rules::{self, BpfSpare, FileIdentity, Rule, Scope, SocketFamily, SocketType},
        store,
    },
};

#[derive(Debug, Args)]
pub struct MitigateArgs {
    #[command(subcommand)]
    command: MitigateCommand,
}

impl MitigateArgs {
    pub fn verbosity(&self) -> u8 {
        match &self.command {
            MitigateCommand::DenySocket { options, .. }
            | MitigateCommand::DenyModuleAutoload { options, .. }
            | MitigateCommand::DenyModuleLoad { options }
            | MitigateCommand::DenyUserns { options, .. }
            | MitigateCommand::DenyExec { options, .. }
            | MitigateCommand::DenyPtrace { options }
            | MitigateCommand::DenyBpf { options, .. } => options.verbose,
            _ => 0,
        }
    }
}

#[derive(Debug, Subcommand)]
enum MitigateCommand {
    /// Deny creating sockets of one address family (and type) from user
    /// space; sockets the kernel creates for itself are not affected.
    DenySocket {
        /// Address family: a name such as packet, inet6, vsock, or AF_ number.
        #[arg(long, value_name = "NAME|NUMBER")]
        family: String,
        /// Socket type: stream, dgram, raw, seqpacket, ... (all types by default).
        #[arg(long = "type", value_name = "NAME")]
        socket_type: Option<String>,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny module autoloading: every request, or requests for one module
    /// name as the kernel requests it (net-pf-17, fs-cramfs, ...).
    DenyModuleAutoload {
        name: Option<String>,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny explicit module loads (init_module and finit_module).
    DenyModuleLoad {
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny creating user namespaces, for every user but root by default.
    DenyUserns {
        /// Deny root too.
        #[arg(long)]
        all_users: bool,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny exec of one file (the file, not the path: hard links and
    /// other paths to it are denied too).
    DenyExec {
        path: PathBuf,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny ptrace attach (PTRACE_ATTACH, PTRACE_SEIZE) and PTRACE_TRACEME.
    DenyPtrace {
        #[command(flatten)]
        options: RuleOptions,
    },
    /// Deny the bpf() system call to everyone but root, or everyone but
    /// this tool.
    DenyBpf {
        /// Whose bpf() calls stay allowed.
        #[arg(long, value_enum, default_value = "root")]
        spare: SpareChoice,
        #[command(flatten)]
        options: RuleOptions,
    },
    /// List applied mitigations with their time left and counts.
    List,
    /// Remove mitigations by id, or all of them.
    Remove {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<u32>,
        #[arg(long)]
        all: bool,
    },
    /// Print the latest denied or audited operations of a mitigation.
    Log { id: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SpareChoice {
    /// Processes whose real uid is 0.
    Root,
    /// Processes running this tool's executable.
    Tool,
    /// Nobody: rejected, because it would deny this tool's own bpf() calls.
    None,
}

/// Options every rule takes.
#[derive(Debug, Args)]
struct RuleOptions {
    /// Time after which the rule allows everything and is removed, such as
    /// 30s, 10m, 2h or 1d. Without it, the rule stays until removed or
    /// until the next reboot.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Deny nothing: record every operation the rule would deny, for
    /// `probe mitigate log ID`.
    #[arg(long)]
    audit: bool,
    /// Apply the rule only to some tasks: uid=UID (or a user name),
    /// comm=NAME, cgroup=PATH (cgroup v2). Repeatable; all must match.
    #[arg(long, value_name = "KIND=VALUE")]
    scope: Vec<String>,
    /// Never apply the rule to tasks with this command name (repeatable,
    /// at most 4).
    #[arg(long = "except-comm", value_name = "NAME")]
    except_comm: Vec<String>,
    /// Log what is checked, loaded and attached.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Runs `probe mitigate`.
pub fn run(args: &MitigateArgs) -> Result<(), CliError> {
    match &args.command {
        MitigateCommand::List => list(),
        MitigateCommand::Remove { ids, all } => remove(ids, *all),
        MitigateCommand::Log { id } => log(*id),
        command => {
            let request = request(command)?;
            apply_request(&request)
        }
    }
}

/// Builds the request of a rule command, checking every value.
fn request(command: &MitigateCommand) -> Result<Request, CliError> {
    let (rule, options) = match command {
        MitigateCommand::DenySocket { family, socket_type, options } => {
            let family = SocketFamily::parse(family).map_err(CliError::usage)?;
            let socket_type = socket_type.as_deref().map(SocketType::parse).transpose().map_err(CliError::usage)?;
            (Rule::DenySocket { family, socket_type }, options)
        }
        MitigateCommand::DenyModuleAutoload { name, options } => {
            (Rule::DenyModuleAutoload { name: name.clone() }, options)
        }
        MitigateCommand::DenyModuleLoad { options } => (Rule::DenyModuleLoad, options),
        MitigateCommand::DenyUserns { all_users, options } => (Rule::DenyUserns { all_users: *all_users }, options),
        MitigateCommand::DenyExec { path, options } => {
            let identity = FileIdentity::of(path).map_err(|err| {
                CliError::usage(format!("cannot deny exec of {}: {err}; give the path of an existing file", path.display()))
            })?;
            if path.is_dir() {
                return Err(CliError::usage(format!(
                    "cannot deny exec of {}: it is a directory; give the path of an executable file",
                    path.display()
                )));
            }
            if path.to_string_lossy().contains('\n') {
                return Err(CliError::usage(format!("invalid path {path:?}: it contains a newline")));
            }
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            (Rule::DenyExec { path, identity }, options)
        }
        MitigateCommand::DenyPtrace { options } => (Rule::DenyPtrace, options),
        MitigateCommand::DenyBpf { spare, options } => {
            let spare = match spare {
                SpareChoice::Root => BpfSpare::Root,
                SpareChoice::Tool => BpfSpare::Tool,
                SpareChoice::None => {
                    return Err(CliError::usage(
                        "deny-bpf --spare none would also deny this tool's own bpf() calls, so the mitigation could \
                         not be listed or removed before its deadline; use --spare root (the default) or --spare tool",
                    ));
                }
            };
            (Rule::DenyBpf { spare }, options)
        }
        MitigateCommand::List | MitigateCommand::Remove { .. } | MitigateCommand::Log { .. } => {
            unreachable!("handled by run")
        }
    };
    let ttl = options.ttl.as_deref().map(rules::parse_duration).transpose().map_err(CliError::usage)?;
    let mut scope = Scope::default();
    for text in &options.scope {
        scope.add(text).map_err(CliError::usage)?;
    }
    let mut except_comms = Vec::new();
    for comm in &options.except_comm {
        except_comms.push(rules::check_comm(comm).map_err(CliError::usage)?);
    }
    if except_comms.len() > probe_common::mitigation::MAX_EXCEPT_COMMS {
        return Err(CliError::usage(format!(
            "too many --except-comm values ({}): at most {}",
            except_comms.len(),
            probe_common::mitigation::MAX_EXCEPT_COMMS
        )));
    }
    Ok(Request { rule, ttl, audit: options.audit, scope, except_comms })
}

fn apply_request(request: &Request) -> Result<(), CliError> {
    let applied = apply::apply(request).map_err(CliError::runtime)?;
    let meta = &applied.meta;
    let expiry = match request.ttl {
        Some(ttl) => format!("expires in {}", rules::format_seconds(ttl.as_secs())),
        None => "no deadline: it stays until `probe mitigate remove` or a reboot".to_owned(),
    };
    println!(
        "Applied mitigation {}: {} ({}, scope {}{}), {expiry}.",
        meta.id,
        meta.rule,
        meta.mode(),
        meta.scope,
        except_text(&meta.except_comms),
    );
    match &applied.verification {
        Verification::Verified(how) => {
            println!("{}: {how}.", if request.audit { "Auditing" } else { "Enforcing" });
            Ok(())
        }
        Verification::NotVerified(why) => {
            println!("Attached; not verified: {why}.");
            Ok(())
        }
        Verification::NotEnforcing(what) => Err(CliError::runtime(format!(
            "mitigation {} is attached but not enforcing: {what}; remove it with `probe mitigate remove {}`",
            meta.id, meta.id
        ))),
    }
}

fn except_text(comms: &[String]) -> String {
    if comms.is_empty() { String::new() } else { format!(" except {}", comms.join(",")) }
}

/// Returns an error unless the caller is root, which reading pinned maps
/// needs.
fn check_store_access() -> Result<(), CliError> {
    checks::check_root().map_err(CliError::runtime)
}

fn list() -> Result<(), CliError> {
    check_store_access()?;
    let applied = store::list().map_err(|err| CliError::runtime(format!("failed to list {}: {err}", store::ROOT)))?;
    if applied.is_empty() {
        println!("No mitigations applied.");
        return Ok(());
    }
    let now = store::boot_time_ns();
    let mut rows = vec![["ID", "RULE", "MODE", "SCOPE", "LEFT", "DENIED", "AUDITED"].map(str::to_owned)];
    for mitigation in &applied {
        let (rule, mode, scope, left) = match &mitigation.meta {
            Ok(meta) => (
                meta.rule.clone(),
                meta.mode().to_owned(),
                format!("{}{}", meta.scope, except_text(&meta.except_comms)),
                meta.seconds_left(now).map_or_else(|| "no deadline".to_owned(), rules::format_seconds),
            ),
            Err(err) => (format!("? ({err})"), "?".into(), "?".into(), "?".into()),
        };
        let (denied, audited) = match store::read_counts(&mitigation.dir) {
            Ok(counts) => (counts.denied.to_string(), counts.audited.to_string()),
            Err(err) => {
                log::warn!("mitigation {}: {err}", mitigation.id);
                ("?".into(), "?".into())
            }
        };
        rows.push([mitigation.id.to_string(), rule, mode, scope, left, denied, audited]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// Formats rows as columns separated by two spaces, the last one unpadded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[index]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn remove(ids: &[u32], all: bool) -> Result<(), CliError> {
    check_store_access()?;
    let applied = store::list().map_err(|err| CliError::runtime(format!("failed to list {}: {err}", store::ROOT)))?;
    let targets: Vec<&store::Applied> = if all {
        applied.iter().collect()
    } else {
        let mut targets = Vec::new();
        for id in ids {
            match applied.iter().find(|mitigation| mitigation.id == *id) {
                // `remove 1 1` removes mitigation 1 once.
                Some(_) if targets.iter().any(|known: &&store::Applied| known.id == *id) => {}
                Some(mitigation) => targets.push(mitigation),
                None => {
                    return Err(CliError::usage(format!(
                        "no mitigation with id {id}; `probe mitigate list` shows the applied ones"
                    )));
                }
            }
        }
        targets
    };
    if targets.is_empty() {
        println!("No mitigations applied.");
        return Ok(());
    }
    for mitigation in targets {
        store::remove(&mitigation.dir)
            .map_err(|err| CliError::runtime(format!("failed to remove {}: {err}", mitigation.dir.display())))?;
        let (rule, ids) = match &mitigation.meta {
            Ok(meta) => (meta.rule.clone(), meta.program_ids.clone()),
            Err(_) => ("?".to_owned(), Vec::new()),
        };
        if mitigate::wait_unloaded(&ids, Duration::from_secs(2)) {
            println!("Removed mitigation {} ({rule}).", mitigation.id);
        } else {
            println!(
                "Removed mitigation {} ({rule}); the kernel has not unloaded its programs yet, which it does once \
                 nothing refers to them.",
                mitigation.id
            );
        }
    }
    Ok(())
}

fn log(id: u32) -> Result<(), CliError> {
    check_store_access()?;
    let dir = store::dir_of(id);
    if !dir.exists() {
        return Err(CliError::usage(format!(
            "no mitigation with id {id}; `probe mitigate list` shows the applied ones"
        )));
    }
    let records = store::read_events(&dir).map_err(CliError::runtime)?;
    let realtime_minus_boot = i128::from(store::real_time_ns()) - i128::from(store::boot_time_ns());
    let mut rows = vec![["TIME", "ACTION", "PID", "UID", "COMM", "OPERATION"].map(str::to_owned)];
    for record in &records {
        let mut time = String::new();
        write_time_of_day(i128::from(record.time_ns) + realtime_minus_boot, &mut time);
        let action = if record.action == ACTION_AUDITED { "audited" } else { "denied" };
        rows.push([
            time,
            action.to_owned(),
            record.pid.to_string(),
            record.uid.to_string(),
            comm_str(&record.comm),
            describe_operation(record),
        ]);
    }
    if records.is_empty() {
        println!("No operations recorded for mitigation {id}.");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

/// Describes a recorded operation with the hook's arguments.
fn describe_operation(record: &AuditRecord) -> String {
    let [first, second] = record.args;
    match record.hook {
        HOOK_SOCKET_CREATE => format!(
            "socket(family={}, type={})",
            SocketFamily(first as i32),
            SocketType(second as i32)
        ),
        HOOK_KERNEL_MODULE_REQUEST => format!("request_module({})", comm_str(&record.name)),
        HOOK_KERNEL_READ_FILE => "finit_module".to_owned(),
        HOOK_KERNEL_LOAD_DATA => "init_module".to_owned(),
        HOOK_USERNS_CREATE => "create user namespace".to_owned(),
        HOOK_BPRM_CHECK_SECURITY => format!("exec(device={}:{}, inode={second})", first >> 20, first & 0xf_ffff),
        HOOK_PTRACE_ACCESS_CHECK => format!("ptrace attach (mode={first:#x})"),
        HOOK_PTRACE_TRACEME => "ptrace(PTRACE_TRACEME)".to_owned(),
        HOOK_BPF => format!("bpf(cmd={first})"),
        other => format!("hook {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let rows = [
            ["ID", "RULE", "LEFT"].map(str::to_owned),
            ["12", "deny-ptrace", "5s"].map(str::to_owned),
        ];
        assert_eq!(table(&rows), "ID  RULE         LEFT\n12  deny-ptrace  5s\n");
    }

    #[test]
    fn operations_are_described() {
        let mut record = AuditRecord {
            time_ns: 1,
            args: [17, 3],
            pid: 1,
            uid: 0,
            action: ACTION_AUDITED,
            hook: HOOK_SOCKET_CREATE,
            comm: [0; 16],
            name: [0; 64],
        };
        assert_eq!(describe_operation(&record), "socket(family=packet, type=raw)");
        record.hook = HOOK_KERNEL_MODULE_REQUEST;
        record.name[..9].copy_from_slice(b"net-pf-12");
        assert_eq!(describe_operation(&record), "request_module(net-pf-12)");
    }
}
