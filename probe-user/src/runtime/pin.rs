//! Sessions: attaching a loaded script through BPF links pinned in bpffs,
//! so that the probes outlive this process, and opening a session's maps
//! and ring buffer from bpffs again.
//!
//! Only BPF links can be pinned. fentry, fexit, LSM, raw tracepoint and
//! kprobe.multi attachments are links on every kernel that has them.
//! Kprobes here are perf-event links (Linux 5.15 and later). aya attaches
//! tracepoints through a perf-event link on the same kernels, and through
//! an ioctl, which cannot be pinned, on older ones.

use std::{os::fd::AsFd as _, path::Path};

use aya::{
    maps::{Map, MapData, PerCpuArray, RingBuf},
    programs::{
        FEntry, FExit, KProbe, Lsm, RawTracePoint, TracePoint, UProbe,
        links::FdLink,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};

use super::{KprobeAttachment, Loaded, RuntimeError, error_chain};
use crate::{
    kprobe_link::{self, KprobeLocation, PerfKprobe},
    script::{
        compile::{Compiled, CompiledProbe, DROPS_MAP_NAME, EVENTS_MAP_NAME, LOST_MAP_NAME, script_map_name, stack_map_name},
        probes::ProbeKind,
    },
    session::{
        store::{self, ProbeRecord},
        sys,
    },
};

/// The result of [`Loaded::attach_pinned`]: the loaded script and the
/// pinned probes.
pub struct Pinned {
    pub loaded: Loaded,
    pub probes: Vec<ProbeRecord>,
    pub end_program_ids: Vec<u32>,
}

/// Returns why `kind` cannot run in a session, or `None` when it can.
pub fn detached_refusal(kind: &ProbeKind) -> Option<String> {
    match kind {
        ProbeKind::Interval { .. } | ProbeKind::Profile { .. } => Some(format!(
            "{} cannot run in a session: interval and profile probes exist to print at a steady rate to a live \
             reader, and their perf-event attachment cannot be pinned by this tool; run the script with `probe run`",
            kind.display_name()
        )),
        _ => None,
    }
}

impl Loaded {
    /// Attaches every probe of a script that [`super::load`] loaded as a
    /// dry run, pinning each link, the maps and the `END` programs in
    /// `dir`. On failure the caller removes `dir`, and dropping the error
    /// path's descriptors detaches what was attached.
    pub fn attach_pinned(mut self, compiled: &Compiled, dir: &Path) -> Result<Pinned, RuntimeError> {
        let pin_failed = |what: &str, path: &Path, err: String| {
            RuntimeError::Attach(format!("failed to pin {what} at {}: {err}", path.display()))
        };
        let path = dir.join(EVENTS_MAP_NAME);
        sys::pin(self.events.as_fd(), &path).map_err(|err| pin_failed("the ring buffer", &path, err.to_string()))?;
        for (index, (spec, data)) in self.maps.iter().enumerate() {
            let path = dir.join(script_map_name(index));
            data.pin(&path).map_err(|err| pin_failed(&format!("map @{}", spec.name), &path, error_chain(&err)))?;
        }
        for (index, (data, _, _)) in self.symbols.stack_maps().iter().enumerate() {
            let path = dir.join(stack_map_name(index));
            data.pin(&path).map_err(|err| pin_failed("a stack trace map", &path, error_chain(&err)))?;
        }
        let path = dir.join(LOST_MAP_NAME);
        self.lost.pin(&path).map_err(|err| pin_failed("the lost-record counter", &path, error_chain(&err)))?;
        let lost = open_per_cpu_array(&path)?;
        let mut drops = None;
        if let Some(map) = self.drops.take() {
            let path = dir.join(DROPS_MAP_NAME);
            map.pin(&path).map_err(|err| pin_failed("the dropped-update counters", &path, error_chain(&err)))?;
            drops = Some(open_per_cpu_array(&path)?);
        }
        let mut loaded = Loaded { lost, drops, ..self };

        let mut multi: std::vec::IntoIter<KprobeAttachment> = std::mem::take(&mut loaded.kprobes).into_iter();
        let ebpf = loaded
            .ebpf
            .as_mut()
            .ok_or_else(|| RuntimeError::Object("the programs are not loaded".into()))?;
        let mut probes = Vec::new();
        let mut end_program_ids = Vec::new();
        for probe in &compiled.probes {
            if let Some(reason) = detached_refusal(&probe.kind) {
                return Err(RuntimeError::Attach(reason));
            }
            let name = probe.kind.display_name();
            let link_path = dir.join(store::link_pin(&probe.symbol));
            match &probe.kind {
                ProbeKind::Begin => {}
                ProbeKind::End => {
                    let program: &mut RawTracePoint = program_mut(ebpf, probe)?;
                    let path = dir.join(store::end_pin(&probe.symbol));
                    program.pin(&path).map_err(|err| pin_failed("the END program", &path, error_chain(&err)))?;
                    end_program_ids.extend(program.info().ok().map(|info| info.id()));
                }
                ProbeKind::KprobeMulti { targets, ret, first_cookie, .. } => {
                    crate::fault::check(&format!("session-attach-{}", probes.len() + 1))
                        .map_err(|err| RuntimeError::Attach(err.to_string()))?;
                    let attachment = multi
                        .next()
                        .ok_or_else(|| RuntimeError::Object(format!("the program for {name} is not loaded")))?;
                    let program = attachment
                        .program
                        .as_ref()
                        .ok_or_else(|| RuntimeError::Object(format!("the program for {name} is not loaded")))?;
                    let addresses: Vec<u64> = targets.iter().map(|target| target.address).collect();
                    if addresses.contains(&0) {
                        return Err(RuntimeError::Attach(format!(
                            "cannot attach {name}: /proc/kallsyms hides function addresses from this process (kernel.kptr_restrict); run as root"
                        )));
                    }
                    let cookies: Vec<u64> = (0..targets.len() as u64).map(|i| u64::from(*first_cookie) + i).collect();
                    let link = kprobe_link::attach_multi(program.as_fd(), &addresses, &cookies, *ret).map_err(|err| {
                        RuntimeError::Attach(format!("failed to attach {name} to {} functions with a kprobe.multi link: {err}", targets.len()))
                    })?;
                    sys::pin(link.as_fd(), &link_path).map_err(|err| pin_failed("the link", &link_path, err.to_string()))?;
                    let program_id = sys::program_facts(program.as_fd()).map(|facts| facts.id).unwrap_or(0);
                    log::info!("attached and pinned {name} (program id {program_id})");
                    probes.push(ProbeRecord { program_id, name });
                }
                _ => {
                    crate::fault::check(&format!("session-attach-{}", probes.len() + 1))
                        .map_err(|err| RuntimeError::Attach(err.to_string()))?;
                    match attach_link(ebpf, probe, &link_path) {
                        Ok(program_id) => {
                            log::info!("attached and pinned {name} (program id {program_id})");
                            probes.push(ProbeRecord { program_id, name });
                        }
                        Err(err) if probe.optional && !compiled.strict => {
                            log::warn!("{name} could not be attached and is skipped: {err}");
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
        }
        if probes.is_empty() {
            return Err(RuntimeError::Attach("no probe could be attached".into()));
        }
        Ok(Pinned { loaded, probes, end_program_ids })
    }

    /// Opens the maps and the ring buffer of the session in `dir`, whose
    /// script compiled to `compiled`. The returned value runs no program:
    /// the pinned links keep the session's programs attached.
    pub fn open_pinned(compiled: &Compiled, dir: &Path) -> Result<Loaded, RuntimeError> {
        let events_path = dir.join(EVENTS_MAP_NAME);
        let events = MapData::from_pin(&events_path)
            .map_err(|err| open_failed(&events_path, &err))
            .and_then(|data| RingBuf::try_from(Map::RingBuf(data)).map_err(|err| open_failed(&events_path, &err)))?;
        let lost = open_per_cpu_array(&dir.join(LOST_MAP_NAME))?;
        let drops_path = dir.join(DROPS_MAP_NAME);
        let drops = if drops_path.exists() { Some(open_per_cpu_array(&drops_path)?) } else { None };
        let mut maps = Vec::with_capacity(compiled.maps.len());
        for (index, spec) in compiled.maps.iter().enumerate() {
            let path = dir.join(script_map_name(index));
            let data = MapData::from_pin(&path).map_err(|err| open_failed(&path, &err))?;
            maps.push((spec.clone(), data));
        }
        let mut stack_maps = Vec::with_capacity(compiled.stack_maps.len());
        for (index, &(user, frames)) in compiled.stack_maps.iter().enumerate() {
            let path = dir.join(stack_map_name(index));
            let data = MapData::from_pin(&path).map_err(|err| open_failed(&path, &err))?;
            stack_maps.push((data, user, frames));
        }
        let end = compiled
            .probes
            .iter()
            .filter(|probe| matches!(probe.kind, ProbeKind::End))
            .map(|probe| probe.symbol.clone())
            .collect();
        Ok(Loaded {
            ebpf: None,
            kprobes: Vec::new(),
            missed: Vec::new(),
            probes_detached: true,
            events,
            lost,
            maps,
            drops,
            map_size: compiled.map_size,
            symbols: super::resolver(compiled, stack_maps),
            begin: Vec::new(),
            end,
            attached: 0,
            functions: 0,
        })
    }

    /// Runs the pinned `END` programs of the session in `dir` once each.
    pub fn run_pinned_end(&self, dir: &Path) -> Result<(), RuntimeError> {
        for symbol in &self.end {
            let path = dir.join(store::end_pin(symbol));
            let program = RawTracePoint::from_pin(&path).map_err(|err| open_failed(&path, &err))?;
            aya::programs::TestRun::test_run(&program, aya::programs::RawTracePointRunOptions::new())
                .map_err(|err| RuntimeError::Attach(format!("failed to run END: {}", error_chain(&err))))?;
        }
        Ok(())
    }
}

fn open_failed(path: &Path, err: &dyn std::error::Error) -> RuntimeError {
    RuntimeError::Object(format!("failed to open {}: {}", path.display(), error_chain(err)))
}

fn open_per_cpu_array(path: &Path) -> Result<PerCpuArray<MapData, u64>, RuntimeError> {
    let data = MapData::from_pin(path).map_err(|err| open_failed(path, &err))?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(|err| open_failed(path, &err))
}

fn program_mut<'a, T>(ebpf: &'a mut aya::Ebpf, probe: &CompiledProbe) -> Result<&'a mut T, RuntimeError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let program = ebpf
        .program_mut(&probe.symbol)
        .ok_or_else(|| RuntimeError::Object(format!("program {} is missing", probe.symbol)))?;
    program
        .try_into()
        .map_err(|err: aya::programs::ProgramError| RuntimeError::Object(format!("program {}: {err}", probe.symbol)))
}

/// Attaches one program through a BPF link, pins the link at `path`, and
/// returns the program's kernel id.
fn attach_link(ebpf: &mut aya::Ebpf, probe: &CompiledProbe, path: &Path) -> Result<u32, RuntimeError> {
    let name = probe.kind.display_name();
    let attach_failed = |err: &dyn std::error::Error| RuntimeError::Attach(format!("failed to attach {name}: {}", error_chain(err)));
    let pin_link = |link: FdLink| {
        link.pin(path)
            .map(drop)
            .map_err(|err| RuntimeError::Attach(format!("failed to pin the link of {name} at {}: {}", path.display(), error_chain(&err))))
    };
    let id = |info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>| info.map(|info| info.id()).unwrap_or(0);
    match &probe.kind {
        ProbeKind::Kprobe { function, address } | ProbeKind::Kretprobe { function, address } => {
            let program: &mut KProbe = program_mut(ebpf, probe)?;
            let location = if *address != 0 { KprobeLocation::Address(*address) } else { KprobeLocation::Symbol(function) };
            let fd = program.fd().map_err(|err| attach_failed(&err))?;
            let kprobe = PerfKprobe::attach(fd.as_fd(), location, probe.kind.is_return()).map_err(|err| attach_failed(&err))?;
            sys::pin(kprobe.link(), path)
                .map_err(|err| RuntimeError::Attach(format!("failed to pin the link of {name} at {}: {err}", path.display())))?;
            Ok(id(program.info()))
        }
        ProbeKind::Fentry { .. } => {
            let program: &mut FEntry = program_mut(ebpf, probe)?;
            let link_id = program.attach().map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            pin_link(link.into())?;
            Ok(id(program.info()))
        }
        ProbeKind::Fexit { .. } => {
            let program: &mut FExit = program_mut(ebpf, probe)?;
            let link_id = program.attach().map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            pin_link(link.into())?;
            Ok(id(program.info()))
        }
        ProbeKind::Lsm { .. } => {
            crate::mitigate::checks::check_bpf_lsm()
                .map_err(|message| RuntimeError::Attach(format!("lsm probes would never run: {message}")))?;
            let program: &mut Lsm = program_mut(ebpf, probe)?;
            let link_id = program.attach().map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            pin_link(link.into())?;
            Ok(id(program.info()))
        }
        ProbeKind::RawTracepoint { name: tracepoint } => {
            let program: &mut RawTracePoint = program_mut(ebpf, probe)?;
            let link_id = program.attach(tracepoint).map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            pin_link(link.into())?;
            Ok(id(program.info()))
        }
        ProbeKind::Tracepoint { category, name: tracepoint } => {
            let program: &mut TracePoint = program_mut(ebpf, probe)?;
            let link_id = program.attach(category, tracepoint).map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            let link = FdLink::try_from(link).map_err(|_| {
                RuntimeError::Attach(format!(
                    "cannot keep {name} attached without a process: this kernel attaches tracepoints without a BPF link \
                     (perf-event links came in Linux 5.15), so it cannot be pinned; run the script with `probe run`"
                ))
            })?;
            pin_link(link)?;
            Ok(id(program.info()))
        }
        ProbeKind::Uprobe { path: binary, offset, pid, .. } => {
            let program: &mut UProbe = program_mut(ebpf, probe)?;
            let scope = match pid.and_then(std::num::NonZeroU32::new) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            };
            let link_id = program
                .attach(UProbeAttachLocation::AbsoluteOffset(*offset), binary, scope)
                .map_err(|err| attach_failed(&err))?;
            let link = program.take_link(link_id).map_err(|err| attach_failed(&err))?;
            let link = FdLink::try_from(link).map_err(|_| {
                RuntimeError::Attach(format!(
                    "cannot keep {name} attached without a process: this kernel attaches uprobes without a BPF link \
                     (perf-event links came in Linux 5.15), so it cannot be pinned; run the script with `probe run`"
                ))
            })?;
            pin_link(link)?;
            Ok(id(program.info()))
        }
        ProbeKind::Begin | ProbeKind::End | ProbeKind::KprobeMulti { .. } | ProbeKind::Interval { .. } | ProbeKind::Profile { .. } => {
            unreachable!("{name} is not attached by attach_link")
        }
    }
}

impl Loaded {
    /// Reads every script map, decoded, in the order of `Compiled::maps`.
    pub fn map_entries(&self) -> Result<Vec<(&crate::script::aggregate::MapSpec, Vec<crate::script::aggregate::Entry>)>, RuntimeError> {
        (0..self.maps.len()).map(|index| Ok((&self.maps[index].0, self.entries(index)?))).collect()
    }
}
