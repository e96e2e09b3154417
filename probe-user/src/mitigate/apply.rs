//! Applying a mitigation: checks, loading the rule's programs, writing
//! their parameters, attaching and pinning everything, then the
//! self-test.
//!
//! Everything is first pinned in a directory named after this process
//! (`partial-PID`) and renamed to the mitigation's id at the end. On any
//! failure before the rename the directory is removed and the programs,
//! whose only references were this process's descriptors, are detached:
//! nothing stays attached. A process killed half-way leaves at most the
//! partial directory, which the next `probe` command removes.

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData},
    programs::{Lsm, ProgramError, links::FdLink},
};
use aya_log::EbpfLogger;
use log::info;
use probe_common::{
    TASK_COMM_LEN,
    mitigation::{
        FLAG_AUDIT, FLAG_MATCH_NAME, FLAG_MATCH_TYPE, FLAG_SCOPE_CGROUP, FLAG_SCOPE_COMM, FLAG_SCOPE_UID,
        FLAG_SPARE_EXE, FLAG_SPARE_ROOT, MAX_EXCEPT_COMMS, MitigationConfig, NAME_LEN, OFFSET_BPRM_FILE,
        OFFSET_FILE_INODE, OFFSET_INODE_INO, OFFSET_INODE_SB, OFFSET_MM_EXE_FILE, OFFSET_SB_DEV, OFFSET_TASK_MM,
    },
};

use super::{
    checks,
    rules::{BpfSpare, FileIdentity, Rule, Scope},
    self_test::{self, Child, Plan},
    store::{self, Meta},
};
use crate::{btf::Btf, runtime::error_chain};

/// The mitigation programs' object file, built by `build.rs`.
static MITIGATION_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-mitigate"));

/// A mitigation to apply: the rule and its options.
#[derive(Clone, Debug)]
pub struct Request {
    pub rule: Rule,
    pub ttl: Option<Duration>,
    pub audit: bool,
    pub scope: Scope,
    pub except_comms: Vec<String>,
}

/// The result of the self-test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// The test operation was denied (or, in audit mode, recorded).
    Verified(String),
    /// No test ran, or its result proves nothing; the reason.
    NotVerified(String),
    /// The test operation was allowed although it should have been denied.
    NotEnforcing(String),
}

/// An applied mitigation and its self-test result.
#[derive(Debug)]
pub struct Applied {
    pub meta: Meta,
    pub verification: Verification,
}

/// Rejects rules that would keep the operator from running this tool or
/// from calling bpf(), which listing and removing mitigations need.
fn check_lockout(request: &Request) -> Result<(), String> {
    if let Rule::DenyExec { path, identity } = &request.rule {
        let own = fs::metadata("/proc/self/exe").map(|metadata| FileIdentity::from_metadata(&metadata));
        if own.is_ok_and(|own| own == *identity) {
            return Err(format!(
                "deny-exec {} would stop this tool from running, so the mitigation could not be listed or removed \
                 before its deadline; refusing",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Applies a mitigation and runs its self-test.
pub fn apply(request: &Request) -> Result<Applied, String> {
    checks::check_root()?;
    check_lockout(request)?;
    checks::check_bpf_lsm()?;
    let btf = Btf::from_sys_fs().map_err(|err| format!("failed to read the kernel's BTF, which LSM programs need: {err}"))?;
    for program in request.rule.programs() {
        checks::check_hook(&btf, program.hook)?;
    }
    let mut config = build_config(request, &btf)?;

    let mut ebpf = EbpfLoader::new()
        .load(MITIGATION_OBJECT)
        .map_err(|err| format!("failed to load the mitigation programs' object: {}", error_chain(&err)))?;
    let mut logger = match EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(err) => {
            info!("kernel-side logging is off: {err}");
            None
        }
    };
    let aya_btf = aya::Btf::from_sys_fs().map_err(|err| format!("failed to read the kernel's BTF: {err}"))?;
    let mut program_ids = Vec::new();
    for program in request.rule.programs() {
        let lsm = lsm_program(&mut ebpf, program.symbol)?;
        lsm.load(program.hook, &aya_btf).map_err(|err| describe_load_error(program.hook, &err))?;
        if let Ok(info) = lsm.info() {
            program_ids.push(info.id());
        }
        info!("loaded {} for the LSM hook {}", program.symbol, program.hook);
    }

    // bpffs is mounted only once the kernel has accepted the programs, so
    // that a kernel that rejects them is left as it was.
    checks::ensure_bpffs()?;
    if let Err(err) = store::remove_expired() {
        log::warn!("failed to remove expired mitigations: {err}");
    }

    let plan = self_test::plan(&request.rule, request.audit, &request.scope);
    let child = match &plan {
        Ok(plan) => Some(Child::spawn(plan).map_err(|err| format!("failed to start the self-test process: {err}"))?),
        Err(_) => None,
    };
    config.self_test_tgid = child.as_ref().map_or(0, Child::pid);

    let partial = PathBuf::from(store::ROOT).join(format!("{}{}", store::PARTIAL_PREFIX, std::process::id()));
    let meta = Meta {
        id: 0,
        rule: request.rule.to_string(),
        audit: request.audit,
        scope: request.scope.to_string(),
        except_comms: request.except_comms.clone(),
        created_unix: store::real_time_ns() / 1_000_000_000,
        deadline_boot_ns: config.deadline_ns,
        program_ids,
    };
    let pinned = pin_and_attach(&mut ebpf, request, &config, &partial).and_then(|()| publish(&partial, meta));
    let meta = match pinned {
        Ok(meta) => meta,
        Err(err) => {
            if partial.exists()
                && let Err(cleanup) = store::remove(&partial)
            {
                log::warn!("failed to remove {}: {cleanup}", partial.display());
            }
            return Err(err);
        }
    };

    let verification = match (plan, child) {
        (Ok(plan), Some(child)) => verify(&mut ebpf, &mut config, &plan, child, request.audit, &store::dir_of(meta.id)),
        (Err(reason), _) => Verification::NotVerified(reason),
        (Ok(_), None) => Verification::NotVerified("no self-test process".into()),
    };
    if let Some(logger) = logger.as_mut() {
        logger.flush();
    }
    Ok(Applied { meta, verification })
}

fn lsm_program<'a>(ebpf: &'a mut Ebpf, symbol: &str) -> Result<&'a mut Lsm, String> {
    let program = ebpf
        .program_mut(symbol)
        .ok_or_else(|| format!("the mitigation object has no program `{symbol}`"))?;
    program
        .try_into()
        .map_err(|err: ProgramError| format!("program `{symbol}` is not an LSM program: {err}"))
}

/// Turns a load failure into one message with the likely cause.
fn describe_load_error(hook: &str, err: &ProgramError) -> String {
    let mut message = format!("the kernel rejected the LSM program for the hook `{hook}`");
    if let ProgramError::LoadError { io_error, verifier_log } = err {
        message.push_str(&format!(" ({io_error})"));
        if io_error.raw_os_error() == Some(libc::EPERM) {
            message.push_str(
                ": this kernel or its security policy does not allow BPF LSM programs, although `bpf` is in the \
                 active LSM list; try the mitigation in a VM or on a host that allows them",
            );
        } else {
            let log = verifier_log.to_string();
            log::debug!("verifier log of the program for `{hook}`:\n{log}");
            let tail: Vec<&str> = log.lines().rev().take(3).collect::<Vec<_>>().into_iter().rev().collect();
            if !tail.is_empty() {
                message.push_str(&format!("; verifier: {}", tail.join(" / ")));
            }
        }
        return message;
    }
    format!("{message}: {}", error_chain(err))
}

/// Builds the kernel-side parameters of a request.
fn build_config(request: &Request, btf: &Btf) -> Result<MitigationConfig, String> {
    let mut config = MitigationConfig::empty();
    if let Some(ttl) = request.ttl {
        config.deadline_ns = store::boot_time_ns().saturating_add(ttl.as_nanos().min(u128::from(u64::MAX)) as u64);
    }
    if request.audit {
        config.flags |= FLAG_AUDIT;
    }
    if let Some(uid) = request.scope.uid {
        config.flags |= FLAG_SCOPE_UID;
        config.scope_uid = uid;
    }
    if let Some(comm) = &request.scope.comm {
        config.flags |= FLAG_SCOPE_COMM;
        config.scope_comm = comm_bytes(comm);
    }
    if let Some((_, id)) = &request.scope.cgroup {
        config.flags |= FLAG_SCOPE_CGROUP;
        config.scope_cgroup_id = *id;
    }
    if request.except_comms.len() > MAX_EXCEPT_COMMS {
        return Err(format!("too many --except-comm values: at most {MAX_EXCEPT_COMMS}"));
    }
    for (slot, comm) in config.except_comms.iter_mut().zip(&request.except_comms) {
        *slot = comm_bytes(comm);
    }

    match &request.rule {
        Rule::DenySocket { family, socket_type } => {
            config.params[0] = family.0 as u64;
            if let Some(socket_type) = socket_type {
                config.flags |= FLAG_MATCH_TYPE;
                config.params[1] = socket_type.0 as u64;
            }
        }
        Rule::DenyModuleAutoload { name } => {
            if let Some(name) = name {
                if name.is_empty() || name.len() >= NAME_LEN {
                    return Err(format!("invalid module name `{name}`: use 1 to {} bytes", NAME_LEN - 1));
                }
                config.flags |= FLAG_MATCH_NAME;
                config.name[..name.len()].copy_from_slice(name.as_bytes());
            }
        }
        Rule::DenyModuleLoad => {
            let value = |enum_name: &str, enumerator: &str| {
                btf.enum_value(enum_name, enumerator).ok_or_else(|| {
                    format!("the kernel's BTF has no {enumerator} in enum {enum_name}, which deny-module-load needs")
                })
            };
            config.params[0] = value("kernel_read_file_id", "READING_MODULE")? as u64;
            config.params[1] = value("kernel_load_data_id", "LOADING_MODULE")? as u64;
        }
        Rule::DenyUserns { all_users } => {
            if !all_users {
                config.flags |= FLAG_SPARE_ROOT;
            }
        }
        Rule::DenyExec { identity, .. } => {
            set_file_offsets(&mut config, btf)?;
            config.offsets[OFFSET_BPRM_FILE] = offset(btf, "linux_binprm", "file")?;
            config.params[2] = identity.device;
            config.params[3] = identity.inode;
        }
        Rule::DenyPtrace => {}
        Rule::DenyBpf { spare } => match spare {
            BpfSpare::Root => config.flags |= FLAG_SPARE_ROOT,
            BpfSpare::Tool => {
                // NOTE: the tool is identified by the device and inode of its
                // executable now; an upgrade that replaces the file is no
                // longer spared. `rm -r` of the mitigation's directory in
                // bpffs still removes it, without calling bpf().
                set_file_offsets(&mut config, btf)?;
                config.offsets[OFFSET_TASK_MM] = offset(btf, "task_struct", "mm")?;
                config.offsets[OFFSET_MM_EXE_FILE] = offset(btf, "mm_struct", "exe_file")?;
                let own = FileIdentity::of(Path::new("/proc/self/exe"))
                    .map_err(|err| format!("failed to identify this tool's executable (/proc/self/exe): {err}"))?;
                config.flags |= FLAG_SPARE_EXE;
                config.params[2] = own.device;
                config.params[3] = own.inode;
            }
        },
    }
    Ok(config)
}

/// Sets the offsets that identify a `struct file` by device and inode.
fn set_file_offsets(config: &mut MitigationConfig, btf: &Btf) -> Result<(), String> {
    config.offsets[OFFSET_FILE_INODE] = offset(btf, "file", "f_inode")?;
    config.offsets[OFFSET_INODE_INO] = offset(btf, "inode", "i_ino")?;
    config.offsets[OFFSET_INODE_SB] = offset(btf, "inode", "i_sb")?;
    config.offsets[OFFSET_SB_DEV] = offset(btf, "super_block", "s_dev")?;
    Ok(())
}

fn offset(btf: &Btf, struct_name: &str, member: &str) -> Result<u32, String> {
    btf.member_offset(struct_name, member)
        .ok_or_else(|| format!("the kernel's BTF has no field {member} in struct {struct_name}, which this rule reads"))
}

fn comm_bytes(comm: &str) -> [u8; TASK_COMM_LEN] {
    let mut bytes = [0u8; TASK_COMM_LEN];
    let length = comm.len().min(TASK_COMM_LEN - 1);
    bytes[..length].copy_from_slice(&comm.as_bytes()[..length]);
    bytes
}

fn write_config(ebpf: &mut Ebpf, config: &MitigationConfig) -> Result<(), String> {
    let map = ebpf.map_mut("CONFIG").ok_or("the mitigation object has no CONFIG map")?;
    let mut array: Array<&mut MapData, MitigationConfig> =
        Array::try_from(map).map_err(|err| format!("CONFIG is not an array: {err}"))?;
    array.set(0, config, 0).map_err(|err| format!("failed to write the mitigation's parameters: {err}"))
}

/// Writes the parameters, pins the maps and attaches and pins every
/// program, all inside `partial`.
fn pin_and_attach(ebpf: &mut Ebpf, request: &Request, config: &MitigationConfig, partial: &Path) -> Result<(), String> {
    write_config(ebpf, config)?;
    fs::create_dir_all(store::ROOT).map_err(|err| format!("failed to create {}: {err}", store::ROOT))?;
    if partial.exists() {
        store::remove(partial).map_err(|err| format!("failed to remove the stale {}: {err}", partial.display()))?;
    }
    fs::create_dir(partial).map_err(|err| format!("failed to create {}: {err}", partial.display()))?;
    for (map_name, pin) in [
        ("CONFIG", store::CONFIG_PIN),
        ("COUNTERS", store::COUNTERS_PIN),
        ("EVENTS", store::EVENTS_PIN),
        ("EVENT_CURSOR", store::EVENT_CURSOR_PIN),
    ] {
        let map = ebpf.map(map_name).ok_or_else(|| format!("the mitigation object has no map {map_name}"))?;
        map.pin(partial.join(pin))
            .map_err(|err| format!("failed to pin map {map_name} in {}: {}", partial.display(), error_chain(&err)))?;
    }
    for program in request.rule.programs() {
        let lsm = lsm_program(ebpf, program.symbol)?;
        let link_id = lsm
            .attach()
            .map_err(|err| format!("failed to attach to the LSM hook `{}`: {}", program.hook, error_chain(&err)))?;
        let link = lsm.take_link(link_id).map_err(|err| error_chain(&err))?;
        let path = partial.join(store::link_pin(program.symbol));
        FdLink::from(link)
            .pin(&path)
            .map_err(|err| format!("failed to pin the link of {} at {}: {}", program.symbol, path.display(), error_chain(&err)))?;
        info!("attached {} to the LSM hook {}", program.symbol, program.hook);
    }
    crate::fault::check("mitigate-after-attach").map_err(|err| err.to_string())
}

/// Gives the partial directory its id: writes the description and renames
/// it, taking the next id when another command took this one meanwhile.
fn publish(partial: &Path, mut meta: Meta) -> Result<Meta, String> {
    for _ in 0..16 {
        meta.id = store::next_id().map_err(|err| format!("failed to list {}: {err}", store::ROOT))?;
        let meta_path = partial.join(store::META_PIN);
        if meta_path.symlink_metadata().is_ok() {
            fs::remove_file(&meta_path).map_err(|err| format!("failed to replace {}: {err}", meta_path.display()))?;
        }
        store::write_meta(partial, &meta).map_err(|err| format!("failed to write {}: {err}", meta_path.display()))?;
        let target = store::dir_of(meta.id);
        match fs::rename(partial, &target) {
            Ok(()) => return Ok(meta),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => continue,
            Err(err) => return Err(format!("failed to rename {} to {}: {err}", partial.display(), target.display())),
        }
    }
    Err(format!("failed to find a free mitigation id in {}", store::ROOT))
}

/// Runs the self-test and clears the self-test pid afterwards.
fn verify(ebpf: &mut Ebpf, config: &mut MitigationConfig, plan: &Plan, child: Child, audit: bool, dir: &Path) -> Verification {
    let before = store::read_counts(dir).map(|counts| counts.self_test).unwrap_or(0);
    let result = child.run();
    let after = store::read_counts(dir).map(|counts| counts.self_test).unwrap_or(0);
    config.self_test_tgid = 0;
    if let Err(err) = write_config(ebpf, config) {
        log::warn!("failed to clear the self-test process id: {err}");
    }
    let operation = plan.trigger.describe();
    let errno = match result {
        Ok(errno) => errno,
        Err(err) => return Verification::NotVerified(format!("the self-test failed: {err}")),
    };
    let outcome = if errno == 0 { "succeeded".to_owned() } else { format!("failed with {}", io::Error::from_raw_os_error(errno)) };
    let ran = after > before;
    match (ran, audit, errno) {
        (true, true, _) => Verification::Verified(format!("{operation} in a test process was recorded and {outcome}")),
        (true, false, libc::EPERM) => Verification::Verified(format!("{operation} in a test process was denied with EPERM")),
        (true, false, _) if !plan.denial_visible => {
            Verification::Verified(format!("the program denied what {operation} in a test process requested"))
        }
        (true, false, _) => Verification::NotEnforcing(format!("the program ran, but {operation} in a test process {outcome}")),
        (false, false, 0) if plan.success_reaches_hook => {
            Verification::NotEnforcing(format!("{operation} in a test process {outcome}, and the program did not see it"))
        }
        (false, _, _) => Verification::NotVerified(format!(
            "{operation} in a test process {outcome} without reaching the hook"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mitigate::rules::{SocketFamily, SocketType};
    use probe_common::mitigation::OFFSET_COUNT;

    fn request(rule: Rule) -> Request {
        Request {
            rule,
            ttl: Some(Duration::from_secs(60)),
            audit: false,
            scope: Scope::default(),
            except_comms: Vec::new(),
        }
    }

    /// Returns the running kernel's BTF, or `None` after saying why the
    /// test skips.
    fn kernel_btf() -> Option<Btf> {
        let btf = Btf::from_sys_fs().ok();
        if btf.is_none() {
            eprintln!("skipped: this kernel has no BTF in {}", crate::btf::VMLINUX_BTF_PATH);
        }
        btf
    }

    #[test]
    fn socket_config_sets_family_type_and_deadline() {
        let Some(btf) = kernel_btf() else {
            return;
        };
        let mut socket = request(Rule::DenySocket {
            family: SocketFamily(17),
            socket_type: Some(SocketType(3)),
        });
        socket.except_comms = vec!["dhclient".into()];
        socket.scope.uid = Some(1000);
        let before = store::boot_time_ns();
        let config = build_config(&socket, &btf).expect("valid request");
        assert_eq!(config.params[..2], [17, 3]);
        assert_eq!(config.flags, FLAG_MATCH_TYPE | FLAG_SCOPE_UID);
        assert_eq!(config.scope_uid, 1000);
        assert_eq!(&config.except_comms[0][..9], b"dhclient\0");
        assert!(config.deadline_ns >= before + 60_000_000_000);
        assert!(config.deadline_ns < before + 70_000_000_000);
    }

    #[test]
    fn module_load_config_reads_enum_values() {
        let Some(btf) = kernel_btf() else {
            return;
        };
        let config = build_config(&request(Rule::DenyModuleLoad), &btf).expect("enums in BTF");
        // READING_MODULE and LOADING_MODULE are the third entries of
        // their enums in include/linux/kernel_read_file.h.
        assert_eq!(config.params[..2], [2, 2]);
    }

    #[test]
    fn exec_config_reads_struct_offsets() {
        let Some(btf) = kernel_btf() else {
            return;
        };
        let identity = FileIdentity::of(Path::new("/proc/self/exe")).expect("own executable");
        let rule = Rule::DenyExec { path: PathBuf::from("/bin/true"), identity };
        let config = build_config(&request(rule), &btf).expect("struct fields in BTF");
        assert_eq!(config.params[2..], [identity.device, identity.inode]);
        // i_ino and i_sb are never the first field of struct inode.
        assert_ne!(config.offsets[OFFSET_INODE_INO], 0);
        assert_ne!(config.offsets[OFFSET_INODE_SB], 0);
        assert_eq!(config.offsets.len(), OFFSET_COUNT);
    }

    #[test]
    fn bpf_config_spares_root_or_the_tool() {
        let Some(btf) = kernel_btf() else {
            return;
        };
        let root = build_config(&request(Rule::DenyBpf { spare: BpfSpare::Root }), &btf).expect("valid");
        assert_eq!(root.flags, FLAG_SPARE_ROOT);
        let tool = build_config(&request(Rule::DenyBpf { spare: BpfSpare::Tool }), &btf).expect("valid");
        assert_eq!(tool.flags, FLAG_SPARE_EXE);
        assert_ne!(tool.offsets[OFFSET_MM_EXE_FILE], 0, "mm_struct.exe_file is inside an anonymous struct");
    }

    #[test]
    fn lockout_check_rejects_own_executable() {
        let identity = FileIdentity::of(Path::new("/proc/self/exe")).expect("own executable");
        let own = request(Rule::DenyExec { path: PathBuf::from("/proc/self/exe"), identity });
        let error = check_lockout(&own).expect_err("denying this tool locks the operator out");
        assert!(error.contains("would stop this tool from running"), "{error}");
        let other = FileIdentity::of(Path::new("/")).expect("root directory");
        assert!(check_lockout(&request(Rule::DenyExec { path: PathBuf::from("/"), identity: other })).is_ok());
    }
}
