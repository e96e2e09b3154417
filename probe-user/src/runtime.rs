//! Running a compiled script: loading its object with aya, attaching each
//! program, running `BEGIN` and `END`, and turning ring buffer records into
//! output.
//!
//! `BEGIN` and `END` compile to raw tracepoint programs that are never
//! attached: the tool runs them itself with `BPF_PROG_TEST_RUN`, so they
//! execute exactly once, in this process, on this CPU.

use std::{
    fmt::Write as _,
    io::Write as _,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{Map, MapData, PerCpuArray, RingBuf},
    programs::{
        FEntry, FExit, KProbe, Lsm, PerfEvent, Program, ProgramError, RawTracePoint, TracePoint, UProbe,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        RawTracePointRunOptions, TestRun,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use log::{debug, info};

use crate::{
    kernel::{self, KprobeSupport},
    kprobe_link::{self, KprobeLocation, PerfKprobe, TracefsKretprobe},
    mapio::{self, RawMap},
    script::{
        aggregate::{Entry, KeyPart, MapSpec, PrintOptions, json, text},
        codegen::{MapAction, OutputSpec, Symbols},
        compile::{
            Compiled, CompiledProbe, DROPS_MAP_NAME, EVENTS_MAP_NAME, LOST_MAP_NAME, NAMES_MAP_NAME, script_map_name,
            stack_map_name,
        },
        probes::ProbeKind,
        span::Source,
    },
    symbolize::Resolver,
};

pub mod pin;

/// Error from loading or attaching a script.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("failed to load the compiled object: {0}")]
    Object(String),
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Attach(String),
}

/// A loaded script: its programs (attached unless this is a dry run), the
/// events ring buffer and the lost-record counter.
pub struct Loaded {
    ebpf: Option<Ebpf>,
    /// Kprobes attached without aya, detached when dropped.
    kprobes: Vec<KprobeAttachment>,
    /// The missed-event report, taken just before the programs go.
    missed: Vec<String>,
    /// Set once the probes are detached, while BEGIN and END stay.
    probes_detached: bool,
    pub events: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    /// The script's maps, in the order of `Compiled::maps`.
    maps: Vec<(MapSpec, MapData)>,
    /// Per-map counters of updates dropped because the map was full.
    drops: Option<PerCpuArray<MapData, u64>>,
    /// Entries per script map, for the dropped-update report.
    map_size: u32,
    /// Renders stacks and symbols in records and map keys.
    pub symbols: Resolver,
    begin: Vec<String>,
    end: Vec<String>,
    pub attached: usize,
    /// Kernel functions the attached programs run on.
    pub functions: usize,
}

/// Loads every program of `compiled` and, unless `dry_run`, attaches them.
/// On failure nothing stays loaded: everything belongs to the returned
/// value or is dropped before the error returns.
pub fn load(compiled: &Compiled, source: &Source, dry_run: bool, verbose: bool) -> Result<Loaded, RuntimeError> {
    // Error messages and statistics only. A full instruction trace of a
    // program that fails late can reach megabytes, and aya verifies the
    // program again for every larger log buffer it tries: a `while` loop of
    // 10,000,000 iterations took 18 s to fail on a 2-core Linux 6.18 VM,
    // against 0.7 s now. A failure is loaded a second time with the trace,
    // to find its script line.
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(VerifierLogLevel::STATS)
        .load(&compiled.object)
        .map_err(|err| RuntimeError::Object(error_chain(&err)))?;
    // Programs loaded without aya need the maps' descriptors, taken before
    // the maps move out of `ebpf`.
    let multi_maps = if compiled.probes.iter().any(|probe| matches!(probe.kind, ProbeKind::KprobeMulti { .. })) {
        fill_names_map(&ebpf, compiled)?;
        map_descriptors(&ebpf, compiled)?
    } else {
        Vec::new()
    };

    let events = ebpf
        .take_map(EVENTS_MAP_NAME)
        .ok_or_else(|| RuntimeError::Object("the object has no events map".into()))
        .and_then(|map| RingBuf::try_from(map).map_err(|err| RuntimeError::Object(err.to_string())))?;
    let lost = ebpf
        .take_map(LOST_MAP_NAME)
        .ok_or_else(|| RuntimeError::Object("the object has no lost-record map".into()))
        .and_then(|map| PerCpuArray::try_from(map).map_err(|err| RuntimeError::Object(err.to_string())))?;

    let mut maps = Vec::with_capacity(compiled.maps.len());
    for (index, spec) in compiled.maps.iter().enumerate() {
        let name = script_map_name(index);
        let map = ebpf
            .take_map(&name)
            .ok_or_else(|| RuntimeError::Object(format!("the object has no map {name}")))?;
        let data = match map {
            Map::HashMap(data) | Map::PerCpuHashMap(data) => data,
            _ => return Err(RuntimeError::Object(format!("map {name} has an unexpected type"))),
        };
        maps.push((spec.clone(), data));
    }
    let mut stack_maps = Vec::with_capacity(compiled.stack_maps.len());
    for (index, &(user, frames)) in compiled.stack_maps.iter().enumerate() {
        let name = stack_map_name(index);
        let map = ebpf
            .take_map(&name)
            .ok_or_else(|| RuntimeError::Object(format!("the object has no map {name}")))?;
        let Map::StackTraceMap(data) = map else {
            return Err(RuntimeError::Object(format!("map {name} has an unexpected type")));
        };
        stack_maps.push((data, user, frames));
    }
    let drops = ebpf
        .take_map(DROPS_MAP_NAME)
        .and_then(|map| PerCpuArray::try_from(map).ok());

    if compiled.maxactive.is_some() && !dry_run {
        kprobe_link::remove_stale_events();
    }
    let mut btf: Option<aya::Btf> = None;
    let mut begin = Vec::new();
    let mut end = Vec::new();
    let mut kprobes = Vec::new();
    let mut skipped: Vec<(String, String)> = Vec::new();
    let mut attached = 0;
    let mut progress = Progress::new(compiled.probes.len());
    for probe in &compiled.probes {
        if let Some(signal) = crate::interrupt::received().filter(|_| !dry_run) {
            // Returning drops what was attached, which detaches it.
            return Err(RuntimeError::Attach(format!(
                "stopped by {signal} while attaching: {attached} of {} programs were attached and are detached again",
                compiled.probes.len()
            )));
        }
        if let ProbeKind::KprobeMulti { .. } = &probe.kind {
            kprobes.push(load_multi(probe, compiled.maxactive, &multi_maps, dry_run, source, verbose)?);
            if !dry_run {
                info!("attached {}", probe.kind.display_name());
                attached += 1;
            }
            continue;
        }
        let may_skip = probe.optional && !compiled.strict;
        if let Err(err) = load_one(&mut ebpf, probe, &mut btf) {
            if may_skip && !fails_for_every_function(&err) {
                skipped.push((probe.kind.display_name(), error_chain(&err)));
                continue;
            }
            let traced = trace_load_failure(compiled, probe, &err);
            return Err(describe_load_error(probe, traced.as_ref().unwrap_or(&err), source, verbose));
        }
        debug!("loaded {} as {}", probe.kind.display_name(), probe.symbol);
        match &probe.kind {
            ProbeKind::Begin => begin.push(probe.symbol.clone()),
            ProbeKind::End => end.push(probe.symbol.clone()),
            _ if dry_run => {}
            kind => match attach_one(&mut ebpf, probe, compiled.maxactive, kprobes.len()) {
                Ok(attachment) => {
                    kprobes.extend(attachment);
                    info!("attached {}", kind.display_name());
                    attached += 1;
                    progress.advance(attached);
                }
                Err(err) if may_skip => {
                    // Unload it, so that it keeps no kernel memory.
                    if let Some(program) = ebpf.program_mut(&probe.symbol) {
                        let _ = unload(program);
                    }
                    skipped.push((kind.display_name(), error_chain(&err)));
                }
                Err(err) => return Err(describe_attach_error(kind, &err)),
            },
        }
    }
    progress.finish(attached);
    let functions: usize = compiled
        .probes
        .iter()
        .map(|probe| match &probe.kind {
            ProbeKind::KprobeMulti { targets, .. } => targets.len(),
            kind if kind.function().is_some() => 1,
            _ => 0,
        })
        .sum::<usize>()
        .saturating_sub(skipped.len());
    if !dry_run {
        info!(
            "attached {attached} program{} in {:.0} ms ({functions} kernel function{})",
            plural(attached),
            progress.start.elapsed().as_secs_f64() * 1000.0,
            plural(functions)
        );
    }
    report_skipped(&skipped);
    // A kernel whose active LSM list lacks `bpf` loads and attaches LSM
    // programs but never runs them: a `deny()` would silently deny nothing.
    if !dry_run && compiled.probes.iter().any(|probe| matches!(probe.kind, ProbeKind::Lsm { .. })) {
        crate::mitigate::checks::check_bpf_lsm()
            .map_err(|message| RuntimeError::Attach(format!("lsm probes would never run: {message}")))?;
    }
    if !dry_run && attached == 0 && !skipped.is_empty() {
        return Err(RuntimeError::Attach(format!(
            "none of the {} programs could be attached; the first failure: {}: {}",
            skipped.len(),
            skipped[0].0,
            skipped[0].1
        )));
    }
    Ok(Loaded {
        ebpf: Some(ebpf),
        kprobes,
        missed: Vec::new(),
        probes_detached: false,
        events,
        lost,
        maps,
        drops,
        map_size: compiled.map_size,
        symbols: resolver(compiled, stack_maps),
        begin,
        end,
        attached,
        functions,
    })
}

/// Returns the symbolizer of a script with these stack trace maps, with
/// the script's uprobe binaries among the files it reads build ids from.
fn resolver(compiled: &Compiled, stack_maps: Vec<(MapData, bool, u32)>) -> Resolver {
    let symbols = Resolver::new(stack_maps);
    symbols.add_files(compiled.probes.iter().filter_map(|probe| match &probe.kind {
        ProbeKind::Uprobe { path, .. } => Some(std::path::PathBuf::from(path)),
        _ => None,
    }));
    symbols
}

/// A kprobe attachment that this module made itself, with what the
/// missed-event report needs.
struct KprobeAttachment {
    /// The probe's name, for reports.
    name: String,
    ret: bool,
    /// The program, when it was loaded here rather than by aya.
    program: Option<OwnedFd>,
    link: KprobeLinkFd,
}

enum KprobeLinkFd {
    /// Not attached: a dry run.
    None,
    Perf(PerfKprobe),
    Tracefs(TracefsKretprobe),
    Multi(OwnedFd),
    /// A uprobe that aya attached; dropping the link detaches it.
    Uprobe(#[expect(dead_code, reason = "held only to be dropped")] aya::programs::uprobe::UProbeLink),
}

impl KprobeAttachment {
    fn link(&self) -> Option<BorrowedFd<'_>> {
        match &self.link {
            KprobeLinkFd::None => None,
            KprobeLinkFd::Perf(kprobe) => Some(kprobe.link()),
            KprobeLinkFd::Tracefs(_) | KprobeLinkFd::Uprobe(_) => None,
            KprobeLinkFd::Multi(fd) => Some(fd.as_fd()),
        }
    }
}

/// Detaches kprobes and uprobes from several threads at once. Removing
/// one waits for an RCU grace period (tens of milliseconds), and waits in
/// parallel share grace periods. One at a time, a thousand kprobes took
/// 49 s to detach on a Linux 6.1 VM, and 349 uprobes 40 s on Linux 6.18.
fn detach_kprobes(kprobes: Vec<KprobeAttachment>) {
    const PER_THREAD: usize = 16;
    if kprobes.len() <= PER_THREAD {
        return;
    }
    if kprobes.len() >= 100 {
        let _ = writeln!(
            std::io::stderr(),
            "detaching {} probes; the kernel removes each after a grace period, which can take a while",
            kprobes.len()
        );
    }
    let threads = kprobes.len().div_ceil(PER_THREAD).min(64);
    let mut chunks: Vec<Vec<KprobeAttachment>> = (0..threads).map(|_| Vec::new()).collect();
    for (index, kprobe) in kprobes.into_iter().enumerate() {
        chunks[index % threads].push(kprobe);
    }
    std::thread::scope(|scope| {
        for chunk in chunks {
            scope.spawn(move || drop(chunk));
        }
    });
}

/// Prints a progress line on standard error while attaching takes more
/// than a second, as with hundreds of functions without kprobe.multi.
struct Progress {
    start: Instant,
    last: Instant,
    total: usize,
    shown: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        let now = Instant::now();
        Self { start: now, last: now, total, shown: false }
    }

    fn advance(&mut self, attached: usize) {
        let now = Instant::now();
        if now.duration_since(self.start) < Duration::from_secs(1) || now.duration_since(self.last) < Duration::from_secs(1) {
            return;
        }
        self.last = now;
        self.shown = true;
        let _ = writeln!(std::io::stderr(), "attaching: {attached} of {} programs", self.total);
    }

    fn finish(&self, attached: usize) {
        if self.shown {
            let _ = writeln!(
                std::io::stderr(),
                "attached {attached} program{} in {:.1} s",
                plural(attached),
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

/// Tells whether a load failure would repeat for every function a glob
/// matched: a verifier rejection (the script's error), or EPERM with no
/// log (the kernel refuses the program type).
fn fails_for_every_function(err: &ProgramError) -> bool {
    matches!(
        err,
        ProgramError::LoadError { verifier_log, io_error }
            if !verifier_log.to_string().trim().is_empty() || io_error.raw_os_error() == Some(libc::EPERM)
    )
}

/// Reports the programs of a glob or shared name that could not be
/// attached, each with its reason, on standard error.
fn report_skipped(skipped: &[(String, String)]) {
    if skipped.is_empty() {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "warning: {} of the matched functions could not be attached and are skipped (--strict makes this an error):",
        skipped.len()
    );
    for (name, reason) in skipped.iter().take(10) {
        let _ = writeln!(stderr, "  {name}: {reason}");
    }
    if skipped.len() > 10 {
        let _ = writeln!(stderr, "  ... and {} more", skipped.len() - 10);
    }
}

/// Unloads a program of any type this runtime loads.
fn unload(program: &mut Program) -> Result<(), ProgramError> {
    match program {
        Program::KProbe(program) => program.unload(),
        Program::TracePoint(program) => program.unload(),
        Program::RawTracePoint(program) => program.unload(),
        Program::FEntry(program) => program.unload(),
        Program::FExit(program) => program.unload(),
        Program::PerfEvent(program) => program.unload(),
        Program::Lsm(program) => program.unload(),
        _ => Ok(()),
    }
}

/// Writes the function and probe names that kprobe.multi programs read
/// at their cookie into the names map.
fn fill_names_map(ebpf: &Ebpf, compiled: &Compiled) -> Result<(), RuntimeError> {
    let map = ebpf
        .map(NAMES_MAP_NAME)
        .and_then(map_data)
        .ok_or_else(|| RuntimeError::Object("the object has no names map".into()))?;
    let size = compiled.name_size as usize;
    let raw = RawMap::new(map.fd(), 4, size, false, 1);
    for (index, name) in compiled.function_names.iter().enumerate() {
        let mut value = vec![0u8; size];
        let bytes = name.as_bytes();
        let len = bytes.len().min(value.len() - 1);
        value[..len].copy_from_slice(&bytes[..len]);
        raw.update(&(index as u32).to_ne_bytes(), &value)
            .map_err(|err| RuntimeError::Object(format!("failed to fill the names map: {err}")))?;
    }
    Ok(())
}

/// Duplicates the file descriptor of every map, in `MapRef` order, for
/// programs that this module loads itself.
fn map_descriptors(ebpf: &Ebpf, compiled: &Compiled) -> Result<Vec<OwnedFd>, RuntimeError> {
    compiled
        .map_names()
        .iter()
        .map(|name| {
            let data = ebpf
                .map(name)
                .and_then(map_data)
                .ok_or_else(|| RuntimeError::Object(format!("the object has no map {name}")))?;
            data.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|err| RuntimeError::Object(format!("failed to duplicate the descriptor of map {name}: {err}")))
        })
        .collect()
}

fn map_data(map: &Map) -> Option<&MapData> {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data)
        | Map::LruHashMap(data) => Some(data),
        _ => None,
    }
}

/// Loads a kprobe.multi program with raw system calls (aya 0.14 cannot
/// load one) and, unless this is a dry run, links it to every target.
fn load_multi(
    probe: &CompiledProbe,
    compiled_maxactive: Option<u32>,
    maps: &[OwnedFd],
    dry_run: bool,
    source: &Source,
    verbose: bool,
) -> Result<KprobeAttachment, RuntimeError> {
    let ProbeKind::KprobeMulti { targets, ret, first_cookie, .. } = &probe.kind else {
        unreachable!("load_multi is only called for kprobe.multi probes");
    };
    let mut insns = probe.code.insns.clone();
    for (index, map) in &probe.code.map_loads {
        insns[*index].imm = maps[map.0 as usize].as_raw_fd();
    }
    let program = kprobe_link::load_multi_program(&probe.symbol, &insns).map_err(|err| {
        let error = ProgramError::LoadError {
            io_error: err.error,
            verifier_log: aya_obj::VerifierLog::new(err.log),
        };
        describe_load_error(probe, &error, source, verbose)
    })?;
    let name = probe.kind.display_name();
    if *ret && compiled_maxactive.is_some() {
        log::warn!("{name}: --maxactive does not apply to kprobe.multi links, which keep their own return instances");
    }
    let link = if dry_run {
        KprobeLinkFd::None
    } else {
        let addresses: Vec<u64> = targets.iter().map(|target| target.address).collect();
        let cookies: Vec<u64> = (0..targets.len() as u64).map(|i| u64::from(*first_cookie) + i).collect();
        if addresses.contains(&0) {
            return Err(RuntimeError::Attach(format!(
                "cannot attach {name}: /proc/kallsyms hides function addresses from this process (kernel.kptr_restrict); run as root, or set `sysctl kernel.kptr_restrict=1`"
            )));
        }
        let link = kprobe_link::attach_multi(program.as_fd(), &addresses, &cookies, *ret).map_err(|err| {
            RuntimeError::Attach(format!(
                "failed to attach {name} to {} functions with a kprobe.multi link: {err}",
                targets.len()
            ))
        })?;
        KprobeLinkFd::Multi(link)
    };
    Ok(KprobeAttachment {
        name,
        ret: *ret,
        program: Some(program),
        link,
    })
}

fn load_one(ebpf: &mut Ebpf, probe: &CompiledProbe, btf: &mut Option<aya::Btf>) -> Result<(), ProgramError> {
    let program = ebpf
        .program_mut(&probe.symbol)
        .ok_or_else(|| ProgramError::UnexpectedProgramType)?;
    match &probe.kind {
        ProbeKind::Kprobe { .. } | ProbeKind::Kretprobe { .. } => {
            let program: &mut KProbe = program.try_into()?;
            program.load()
        }
        ProbeKind::KprobeMulti { .. } => unreachable!("kprobe.multi programs are loaded by load_multi"),
        ProbeKind::Fentry { function } | ProbeKind::Fexit { function } => {
            if btf.is_none() {
                *btf = Some(aya::Btf::from_sys_fs().map_err(|err| {
                    ProgramError::Btf(err)
                })?);
            }
            let btf = btf.as_ref().expect("BTF was just read");
            if matches!(probe.kind, ProbeKind::Fentry { .. }) {
                let program: &mut FEntry = program.try_into()?;
                program.load(function, btf)
            } else {
                let program: &mut FExit = program.try_into()?;
                program.load(function, btf)
            }
        }
        ProbeKind::Tracepoint { .. } => {
            let program: &mut TracePoint = program.try_into()?;
            program.load()
        }
        ProbeKind::RawTracepoint { .. } | ProbeKind::Begin | ProbeKind::End => {
            let program: &mut RawTracePoint = program.try_into()?;
            program.load()
        }
        ProbeKind::Interval { .. } | ProbeKind::Profile { .. } => {
            let program: &mut PerfEvent = program.try_into()?;
            program.load()
        }
        ProbeKind::Uprobe { .. } => {
            let program: &mut UProbe = program.try_into()?;
            program.load()
        }
        ProbeKind::Lsm { hook } => {
            if btf.is_none() {
                *btf = Some(aya::Btf::from_sys_fs().map_err(ProgramError::Btf)?);
            }
            let btf = btf.as_ref().expect("BTF was just read");
            let program: &mut Lsm = program.try_into()?;
            program.load(hook, btf)
        }
    }
}

/// Attaches one loaded program. Kprobes are attached here rather than by
/// aya, at the function's address when kallsyms gave one, and returned.
fn attach_one(
    ebpf: &mut Ebpf,
    probe: &CompiledProbe,
    maxactive: Option<u32>,
    index: usize,
) -> Result<Option<KprobeAttachment>, ProgramError> {
    let program = ebpf
        .program_mut(&probe.symbol)
        .ok_or_else(|| ProgramError::UnexpectedProgramType)?;
    match &probe.kind {
        ProbeKind::Kprobe { function, address } | ProbeKind::Kretprobe { function, address } => {
            let ret = probe.kind.is_return();
            let program: &mut KProbe = program.try_into()?;
            let location = if *address != 0 {
                KprobeLocation::Address(*address)
            } else {
                KprobeLocation::Symbol(function)
            };
            let link = match maxactive {
                Some(maxactive) if ret => {
                    let kretprobe = TracefsKretprobe::attach(program.fd()?.as_fd(), location, maxactive, index).map_err(
                        |io_error| ProgramError::SyscallError(aya::sys::SyscallError { call: "kprobe_events", io_error }),
                    )?;
                    KprobeLinkFd::Tracefs(kretprobe)
                }
                _ => {
                    let kprobe = PerfKprobe::attach(program.fd()?.as_fd(), location, ret).map_err(|io_error| {
                        ProgramError::SyscallError(aya::sys::SyscallError { call: "perf_event_open", io_error })
                    })?;
                    KprobeLinkFd::Perf(kprobe)
                }
            };
            return Ok(Some(KprobeAttachment {
                name: probe.kind.display_name(),
                ret,
                program: None,
                link,
            }));
        }
        ProbeKind::KprobeMulti { .. } => unreachable!("kprobe.multi programs are attached by load_multi"),
        ProbeKind::Fentry { .. } => {
            let program: &mut FEntry = program.try_into()?;
            program.attach().map(|_| None)
        }
        ProbeKind::Fexit { .. } => {
            let program: &mut FExit = program.try_into()?;
            program.attach().map(|_| None)
        }
        ProbeKind::Tracepoint { category, name } => {
            let program: &mut TracePoint = program.try_into()?;
            program.attach(category, name).map(|_| None)
        }
        ProbeKind::RawTracepoint { name } => {
            let program: &mut RawTracePoint = program.try_into()?;
            program.attach(name).map(|_| None)
        }
        ProbeKind::Begin | ProbeKind::End => Ok(None),
        ProbeKind::Uprobe { path, offset, pid, .. } => {
            let program: &mut UProbe = program.try_into()?;
            let scope = match pid.and_then(std::num::NonZeroU32::new) {
                Some(pid) => UProbeScope::OneProcess(pid),
                None => UProbeScope::AllProcesses,
            };
            let id = program.attach(UProbeAttachLocation::AbsoluteOffset(*offset), path, scope)?;
            // Kept here rather than in aya, to be detached from several
            // threads as kprobes are: removing a uprobe also waits for a
            // grace period.
            let link = program.take_link(id)?;
            Ok(Some(KprobeAttachment {
                name: probe.kind.display_name(),
                ret: false,
                program: None,
                link: KprobeLinkFd::Uprobe(link),
            }))
        }
        ProbeKind::Lsm { .. } => {
            let program: &mut Lsm = program.try_into()?;
            program.attach().map(|_| None)
        }
        ProbeKind::Interval { period_ns, .. } => {
            // One CPU's clock drives the probe, so it fires once per period.
            let program: &mut PerfEvent = program.try_into()?;
            program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu: 0 },
                    SamplePolicy::Period(*period_ns),
                    false,
                )
                .map(|_| None)
        }
        ProbeKind::Profile { hz, period_ns, .. } => {
            let program: &mut PerfEvent = program.try_into()?;
            let policy = match hz {
                Some(hz) => SamplePolicy::Frequency(*hz),
                None => SamplePolicy::Period(*period_ns),
            };
            let cpus = aya::util::online_cpus().map_err(|(path, io_error)| {
                ProgramError::SyscallError(aya::sys::SyscallError { call: path, io_error })
            })?;
            for cpu in cpus {
                program.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    policy,
                    false,
                )?;
            }
            Ok(None)
        }
    }
}

/// Loads the object again with the verifier's instruction trace and
/// returns the failure of `probe` with that longer log. Returns `None`
/// when the first log explains enough, or the second load does not fail.
fn trace_load_failure(compiled: &Compiled, probe: &CompiledProbe, err: &ProgramError) -> Option<ProgramError> {
    let ProgramError::LoadError { io_error, verifier_log } = err else {
        return None;
    };
    let log = verifier_log.to_string();
    // An empty log means that the kernel rejected the program type itself,
    // and a program over the instruction limit would take seconds to trace.
    if log.trim().is_empty() || io_error.raw_os_error() == Some(libc::EPERM) || exceeds_instruction_limit(&log) {
        return None;
    }
    let mut ebpf = EbpfLoader::new()
        .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
        .load(&compiled.object)
        .ok()?;
    load_one(&mut ebpf, probe, &mut None).err()
}

/// Tells whether the verifier gave up because the program needs more
/// steps than its limit (1,000,000 instructions for privileged programs).
fn exceeds_instruction_limit(log: &str) -> bool {
    log.contains("BPF program is too large")
        || log.lines().any(|line| {
            let Some(rest) = line.strip_prefix("processed ") else {
                return false;
            };
            let mut words = rest.split_whitespace();
            let processed = words.next().and_then(|w| w.parse::<u64>().ok());
            let limit = rest
                .split_once("(limit ")
                .and_then(|(_, tail)| tail.split(')').next())
                .and_then(|w| w.parse::<u64>().ok());
            matches!((processed, limit), (Some(processed), Some(limit)) if processed > limit)
        })
}

/// Turns a load failure into a message; a verifier rejection names the
/// script line of the failing instruction.
fn describe_load_error(probe: &CompiledProbe, err: &ProgramError, source: &Source, verbose: bool) -> RuntimeError {
    let name = probe.kind.display_name();
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let too_large = exceeds_instruction_limit(&log);
            let mut message = format!("the kernel rejected the program for {name}");
            // ENOSPC only means that the log did not fit in aya's largest
            // buffer, and E2BIG ("argument list too long") that the program
            // was too large. The message below explains the latter in words.
            if io_error.raw_os_error() != Some(libc::ENOSPC) && !too_large {
                let _ = write!(message, " ({io_error})");
            }
            if io_error.raw_os_error() == Some(libc::EPERM) && log.trim().is_empty() {
                message.push_str(&mechanism_refusal_hint(&probe.kind));
                return RuntimeError::Rejected(message);
            }
            let quote = |line: u32| format!("{}:{line}:\n    {}", source.name(), source.line_text(line as usize).trim());
            if too_large {
                message.push_str(
                    "\nthe verifier checks every iteration of a loop, and this program takes more steps than \
                     its limit of 1000000 instructions; lower the loop bound or the unroll count",
                );
                for line in loop_lines(probe) {
                    let _ = write!(message, "\nloop at {}", quote(line));
                }
            } else if let Some(line) = failing_line(&log, probe) {
                let _ = write!(message, " at {}", quote(line));
            }
            let summary = verifier_summary(&log);
            if verbose {
                let _ = write!(message, "\nverifier log:\n{log}");
            } else if !summary.is_empty() {
                let _ = write!(message, "\nverifier: {}\n(run with -v for the whole verifier log)", summary.join("\n          "));
            }
            RuntimeError::Rejected(message)
        }
        other => RuntimeError::Rejected(format!("failed to load the program for {name}: {}", error_chain(other))),
    }
}

/// Returns the lines of a verifier log that give the reason for the
/// rejection: those after the last instruction it printed, without the
/// statistics.
fn verifier_summary(log: &str) -> Vec<&str> {
    let is_statistic = |line: &str| {
        line.starts_with("verification time")
            || line.starts_with("stack depth")
            || line.starts_with("processed ")
            || line.starts_with("cur state:")
            || line.starts_with("old state:")
    };
    let lines: Vec<&str> = log.lines().map(str::trim_end).filter(|line| !line.trim().is_empty()).collect();
    let after_trace = lines
        .iter()
        .rposition(|line| instruction_index(line).is_some())
        .map_or(0, |index| index + 1);
    let summary: Vec<&str> = lines[after_trace..].iter().copied().filter(|line| !is_statistic(line)).take(3).collect();
    if !summary.is_empty() {
        return summary;
    }
    // Nothing after the trace: the last lines that are not statistics.
    let mut tail: Vec<&str> = lines.iter().rev().copied().filter(|line| !is_statistic(line)).take(3).collect();
    tail.reverse();
    tail
}

/// Parses the instruction index of a verifier trace line such as
/// `12: (85) call bpf_ringbuf_reserve#131`.
fn instruction_index(line: &str) -> Option<usize> {
    let (number, rest) = line.split_once(':')?;
    if !rest.trim_start().starts_with('(') {
        return None;
    }
    number.trim().parse().ok()
}

/// Returns the advice for a kernel that rejects a program type outright.
fn mechanism_refusal_hint(kind: &ProbeKind) -> String {
    match kind {
        ProbeKind::Fentry { .. } | ProbeKind::Fexit { .. } => {
            "; this kernel or its security policy does not allow fentry/fexit programs: use kprobe/kretprobe instead".into()
        }
        ProbeKind::Lsm { .. } => match crate::mitigate::checks::check_bpf_lsm() {
            Err(reason) => format!("; {reason}"),
            Ok(()) => "; this kernel or its security policy does not allow BPF LSM programs, although `bpf` is in \
                       the active LSM list"
                .into(),
        },
        _ => "; this kernel or its security policy does not allow this program type".into(),
    }
}

/// Finds the script line of the instruction the verifier rejected: the one
/// its message names (`... at insn 4`), or else the last one it traced.
fn failing_line(log: &str, probe: &CompiledProbe) -> Option<u32> {
    let named = verifier_summary(log).iter().find_map(|line| {
        let (_, after) = line.split_once("insn ")?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<usize>().ok()
    });
    let index = named.or_else(|| log.lines().rev().find_map(instruction_index))?;
    probe.code.lines.get(index).copied().filter(|&line| line > 0)
}

/// Returns the script lines of the program's loops, found by their
/// backward jumps.
fn loop_lines(probe: &CompiledProbe) -> Vec<u32> {
    let mut lines: Vec<u32> = probe
        .code
        .insns
        .iter()
        .zip(&probe.code.lines)
        .filter(|(insn, _)| insn.is_jump() && insn.off < 0)
        .map(|(_, &line)| line)
        .filter(|&line| line > 0)
        .collect();
    lines.sort_unstable();
    lines.dedup();
    lines
}

fn describe_attach_error(kind: &ProbeKind, err: &ProgramError) -> RuntimeError {
    let name = kind.display_name();
    let mut message = format!("failed to attach {name}: {}", error_chain(err));
    if matches!(kind, ProbeKind::Kprobe { .. } | ProbeKind::Kretprobe { .. }) {
        if let KprobeSupport::Missing(facts) = kernel::kprobe_support() {
            message = format!("cannot attach {name}: this kernel has no kprobes ({facts})");
            if let Some(function) = kind.function() {
                let _ = write!(message, "; try fentry:{function} if the kernel allows tracing programs, or a tracepoint");
            }
        }
    }
    if let (ProbeKind::Uprobe { pid: Some(pid), .. }, ProgramError::SyscallError(syscall)) = (kind, err) {
        if syscall.io_error.raw_os_error() == Some(libc::ESRCH) {
            message = format!("cannot attach {name}: process {pid} exited");
        }
    }
    RuntimeError::Attach(message)
}

/// Returns the plural ending for `count` things.
fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}

/// Formats an error with its causes on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl Loaded {
    /// Runs the `BEGIN` programs once each.
    pub fn run_begin(&mut self) -> Result<(), RuntimeError> {
        let names = self.begin.clone();
        self.run_once(&names)
    }

    /// Runs the `END` programs once each.
    pub fn run_end(&mut self) -> Result<(), RuntimeError> {
        let names = self.end.clone();
        self.run_once(&names)
    }

    fn run_once(&mut self, names: &[String]) -> Result<(), RuntimeError> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Ok(());
        };
        for name in names {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| RuntimeError::Object(format!("program {name} is missing")))?
                .try_into()
                .map_err(|err: ProgramError| RuntimeError::Object(err.to_string()))?;
            program
                .test_run(RawTracePointRunOptions::new())
                .map_err(|err| RuntimeError::Attach(format!("failed to run BEGIN/END: {}", error_chain(&err))))?;
        }
        Ok(())
    }

    /// Detaches and unloads every program but `BEGIN` and `END`, so that
    /// no later event adds output. The maps and the ring buffer stay
    /// readable, and `END` can still run.
    pub fn detach_probes(&mut self) {
        self.take_missed_report();
        let started = Instant::now();
        let count = self.attached;
        self.probes_detached = true;
        detach_kprobes(std::mem::take(&mut self.kprobes));
        let Loaded { ebpf, begin, end, .. } = self;
        let Some(ebpf) = ebpf.as_mut() else {
            return;
        };
        for (name, program) in ebpf.programs_mut() {
            // kprobe.multi programs were never loaded through aya.
            if begin.iter().chain(end.iter()).any(|kept| kept == name) || program.fd().is_err() {
                continue;
            }
            if let Err(err) = unload(program) {
                log::warn!("failed to detach program {name}: {}", error_chain(&err));
            }
        }
        info!("detached {count} program{} in {:.0} ms", plural(count), started.elapsed().as_secs_f64() * 1000.0);
    }

    /// Reads and drops every record in the ring buffer; returns how many
    /// there were.
    pub fn discard_records(&mut self) -> usize {
        let mut count = 0;
        while self.events.next().is_some() {
            count += 1;
        }
        count
    }

    /// Detaches and unloads every program; the ring buffer stays readable.
    pub fn detach(&mut self) {
        self.take_missed_report();
        let started = Instant::now();
        let had_programs = !self.probes_detached && self.ebpf.is_some();
        detach_kprobes(std::mem::take(&mut self.kprobes));
        self.ebpf = None;
        if had_programs {
            info!(
                "detached {} program{} in {:.0} ms",
                self.attached,
                plural(self.attached),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
    }

    /// Lines reporting events that probes missed: kretprobe returns lost
    /// because every return instance was in use, kprobe hits skipped
    /// while another kprobe ran, and programs skipped because one was
    /// already running on the CPU. Empty when nothing was missed, or when
    /// the kernel does not count it.
    pub fn missed_report(&self) -> &[String] {
        &self.missed
    }

    fn take_missed_report(&mut self) {
        if !self.missed.is_empty() || (self.kprobes.is_empty() && self.ebpf.is_none()) {
            return;
        }
        for kprobe in &self.kprobes {
            let counted = match &kprobe.link {
                KprobeLinkFd::Tracefs(kretprobe) => kretprobe.missed(),
                _ => kprobe.link().and_then(kprobe_link::missed_events),
            };
            if counted.is_none() && kprobe.ret {
                info!(
                    "{}: this kernel (Linux {}) cannot count missed kretprobe returns; Linux 6.7 and later report them",
                    kprobe.name,
                    kernel::release()
                );
            }
            let missed = counted.unwrap_or(0);
            if missed > 0 {
                let what = if kprobe.ret {
                    "returns missed (every kretprobe instance was in use; raise --maxactive)"
                } else {
                    "hits missed (another kprobe was running on the CPU)"
                };
                self.missed.push(format!("{}: {missed} {what}", kprobe.name));
            }
            let recursion = kprobe.program.as_ref().and_then(|fd| kprobe_link::recursion_misses(fd.as_fd())).unwrap_or(0);
            if recursion > 0 {
                self.missed.push(format!("{}: {recursion} runs skipped because the program was already running on the CPU", kprobe.name));
            }
        }
        let Some(ebpf) = self.ebpf.as_ref() else {
            return;
        };
        for (name, program) in ebpf.programs() {
            let Ok(fd) = program.fd() else {
                continue;
            };
            let recursion = kprobe_link::recursion_misses(fd.as_fd()).unwrap_or(0);
            if recursion > 0 {
                self.missed.push(format!("{name}: {recursion} runs skipped because the program was already running on the CPU"));
            }
        }
    }

    /// Records dropped because the ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// Output format of map contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// bpftrace's text layout.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Loaded {
    /// Reads map `index` and decodes its entries.
    fn entries(&self, index: usize) -> Result<Vec<Entry>, RuntimeError> {
        let (spec, data) = &self.maps[index];
        let cpus = mapio::possible_cpus().map_err(|err| RuntimeError::Object(format!("failed to count CPUs: {err}")))?;
        let raw = RawMap::new(data.fd(), spec.key_size(), spec.value.slot_size(), spec.value.is_per_cpu(), cpus);
        let pairs = raw
            .entries()
            .map_err(|err| RuntimeError::Object(format!("failed to read @{}: {err}", spec.name)))?;
        let mut entries = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            match spec.decode_entry(&key, &value) {
                Ok(Some(mut entry)) => {
                    self.render_key(&mut entry.key);
                    entries.push(entry)
                }
                Ok(None) => {}
                Err(err) => return Err(RuntimeError::Object(err.to_string())),
            }
        }
        Ok(entries)
    }

    /// Tells whether some map key contains user stacks or user symbols,
    /// which [`Loaded::name_user_symbols`] names while their processes
    /// run.
    pub fn has_user_symbol_keys(&self) -> bool {
        self.maps.iter().any(|(spec, _)| spec.key.iter().any(is_user_symbol_part))
    }

    /// Symbolizes the user addresses in every map key now, so that the
    /// names stay known after the processes exit.
    pub fn name_user_symbols(&self) {
        for (index, (spec, _)) in self.maps.iter().enumerate() {
            if spec.key.iter().any(is_user_symbol_part) {
                if let Err(err) = self.entries(index) {
                    log::debug!("cannot read @{} to name its user addresses: {err}", spec.name);
                }
            }
        }
    }

    /// Replaces the raw parts of a key (stacks, symbols, addresses) with
    /// their text.
    fn render_key(&self, key: &mut crate::script::aggregate::Key) {
        for part in &mut key.0 {
            if let KeyPart::Raw(special, bytes) = part {
                *part = KeyPart::Str(self.symbols.special(*special, bytes));
            }
        }
    }

    /// Carries out a map action and returns the text to print.
    pub fn map_action(&self, action: MapAction, format: Format) -> Result<String, RuntimeError> {
        match action {
            MapAction::Print { map, top, div } => {
                let entries = self.entries(map)?;
                let spec = &self.maps[map].0;
                let options = PrintOptions { top, div };
                Ok(match format {
                    Format::Text => text::render_map(spec, &entries, options),
                    Format::Json => json::render_map(spec, &entries, options),
                })
            }
            MapAction::Clear { map } | MapAction::Zero { map } => {
                let (spec, data) = &self.maps[map];
                let cpus = mapio::possible_cpus().map_err(|err| RuntimeError::Object(format!("failed to count CPUs: {err}")))?;
                let raw = RawMap::new(data.fd(), spec.key_size(), spec.value.slot_size(), spec.value.is_per_cpu(), cpus);
                let result = if matches!(action, MapAction::Clear { .. }) { raw.clear() } else { raw.zero() };
                result.map_err(|err| RuntimeError::Object(format!("failed to change @{}: {err}", spec.name)))?;
                Ok(String::new())
            }
        }
    }

    /// Renders every non-empty map as bpftrace prints them at exit.
    pub fn exit_maps(&self, format: Format) -> Result<String, RuntimeError> {
        let mut all = Vec::with_capacity(self.maps.len());
        for index in 0..self.maps.len() {
            let entries = self.entries(index)?;
            if !entries.is_empty() {
                all.push((&self.maps[index].0, entries));
            }
        }
        if all.is_empty() {
            return Ok(String::new());
        }
        let borrowed: Vec<(&MapSpec, &[Entry])> = all.iter().map(|(spec, entries)| (*spec, entries.as_slice())).collect();
        Ok(match format {
            Format::Text => text::render_exit(&borrowed),
            Format::Json => json::render_exit(&borrowed),
        })
    }

    /// Returns one line per map that dropped updates because it was full.
    pub fn dropped_updates(&self) -> Vec<String> {
        let Some(drops) = &self.drops else {
            return Vec::new();
        };
        self.maps
            .iter()
            .enumerate()
            .filter_map(|(index, (spec, _))| {
                let count: u64 = drops.get(&(index as u32), 0).map(|v| v.iter().sum()).unwrap_or(0);
                (count > 0).then(|| {
                    format!(
                        "@{}: {count} update{} dropped, map full at {} entries (raise --map-size)",
                        spec.name,
                        if count == 1 { "" } else { "s" },
                        self.map_size
                    )
                })
            })
            .collect()
    }
}

fn is_user_symbol_part(part: &crate::script::aggregate::KeyPartType) -> bool {
    use crate::script::aggregate::{KeyPartType, Special};
    matches!(part, KeyPartType::Special(Special::Ustack { .. } | Special::Usym))
}

/// The kind of a ring buffer record.
pub enum Record {
    /// Text to print.
    Text,
    /// `exit()` was called.
    Exit,
    /// `print(@m)`, `clear(@m)` or `zero(@m)`.
    MapAction(MapAction),
    /// A record that does not match the compiled outputs.
    Invalid,
}

/// Renders one ring buffer record into `out`.
pub fn render_record(outputs: &[OutputSpec], record: &[u8], out: &mut String, symbols: &dyn Symbols) -> Record {
    let Some(header) = record.get(..4) else {
        return Record::Invalid;
    };
    let index = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    match outputs.get(index) {
        Some(OutputSpec::Exit) => Record::Exit,
        Some(OutputSpec::MapAction(action)) => Record::MapAction(*action),
        Some(spec) => {
            spec.render(record, out, symbols);
            Record::Text
        }
        None => Record::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{
        insn::{Insn, JmpOp, Reg},
        regalloc::Lowered,
    };

    /// A verifier log as Linux 6.18 wrote it for a `while` loop on script
    /// line 3 that never ends.
    const INFINITE_LOOP_LOG: &str = "0: R1=ctx() R10=fp0
0: (b7) r1 = 0                        ; R1=0
1: (b7) r2 = 1                        ; R2=1
2: (bf) r1 = r2                       ; R1=1 R2=1
3: (b7) r2 = 0                        ; R2=0
4: (dd) if r1 s<= r2 goto pc+1        ; R1=1 R2=0
5: (05) goto pc-3
3: (b7) r2 = 0
infinite loop detected at insn 4
cur state: R1=1 R2=0 R10=fp0
old state: R1=P1 R2=P0 R10=fp0
verification time 63 usec
stack depth 0
processed 11 insns (limit 1000000) max_states_per_insn 0 total_states 1 peak_states 1 mark_read 0
";

    fn probe_with_lines(lines: Vec<u32>, insns: Vec<Insn>) -> CompiledProbe {
        CompiledProbe {
            symbol: "probe_0_0".into(),
            kind: ProbeKind::Begin,
            optional: false,
            code: Lowered { insns, lines, ..Lowered::default() },
        }
    }

    #[test]
    fn summary_is_the_message_after_the_trace() {
        assert_eq!(verifier_summary(INFINITE_LOOP_LOG), ["infinite loop detected at insn 4"]);
        let log = "0: (85) call bpf_ktime_get_ns#5\nR1 type=scalar expected=fp\nprocessed 3 insns (limit 1000000)\n";
        assert_eq!(verifier_summary(log), ["R1 type=scalar expected=fp"]);
        let statistics_only = "unreachable insn 13\nverification time 15 usec\nstack depth 0\n";
        assert_eq!(verifier_summary(statistics_only), ["unreachable insn 13"]);
    }

    #[test]
    fn failing_line_prefers_the_named_instruction() {
        // Instruction 4 is on line 3; the last traced one, 3, on line 2.
        let probe = probe_with_lines(vec![1, 2, 2, 2, 3, 3], Vec::new());
        assert_eq!(failing_line(INFINITE_LOOP_LOG, &probe), Some(3));
        let log = "0: (b7) r1 = 0\n1: (85) call 5\nsomething failed\n";
        assert_eq!(failing_line(log, &probe), Some(2));
    }

    #[test]
    fn instruction_limit_is_recognized() {
        let log = "BPF program is too large. Processed 1000001 insn\n\
                   processed 1000001 insns (limit 1000000) max_states_per_insn 4 total_states 16668\n";
        assert!(exceeds_instruction_limit(log));
        assert!(exceeds_instruction_limit("processed 1000001 insns (limit 1000000) max_states_per_insn 4\n"));
        assert!(!exceeds_instruction_limit(INFINITE_LOOP_LOG));
    }

    #[test]
    fn loops_are_found_by_backward_jumps() {
        let insns = vec![
            Insn::mov64_imm(Reg::R1, 0),
            Insn::jmp_imm(JmpOp::Gt, Reg::R1, 9, 2),
            Insn::alu64_imm(crate::script::insn::AluOp::Add, Reg::R1, 1),
            Insn::ja(-3),
            Insn::exit(),
        ];
        let probe = probe_with_lines(vec![1, 2, 3, 2, 4], insns);
        assert_eq!(loop_lines(&probe), [2]);
    }
}
