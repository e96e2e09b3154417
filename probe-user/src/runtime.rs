//! Running a compiled script: loading its object with aya, attaching each
//! program, running `BEGIN` and `END`, and turning ring buffer records into
//! output.
//!
//! `BEGIN` and `END` compile to raw tracepoint programs that are never
//! attached: the tool runs them itself with `BPF_PROG_TEST_RUN`, so they
//! execute exactly once, in this process, on this CPU.

use std::fmt::Write as _;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{
        FEntry, FExit, KProbe, ProgramError, RawTracePoint, TracePoint,
        RawTracePointRunOptions, TestRun,
    },
};
use log::{debug, info};

use crate::{
    kernel::{self, KprobeSupport},
    script::{
        codegen::OutputSpec,
        compile::{Compiled, CompiledProbe, EVENTS_MAP_NAME, LOST_MAP_NAME},
        probes::ProbeKind,
        span::Source,
    },
};

/// Why a script could not be loaded or attached.
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
    pub events: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    begin: Vec<String>,
    end: Vec<String>,
    pub attached: usize,
}

/// Loads every program of `compiled` and, unless `dry_run`, attaches them.
/// On failure nothing stays loaded: everything belongs to the returned
/// value or is dropped before the error returns.
pub fn load(compiled: &Compiled, source: &Source, dry_run: bool, verbose: bool) -> Result<Loaded, RuntimeError> {
    let mut ebpf = EbpfLoader::new()
        .load(&compiled.object)
        .map_err(|err| RuntimeError::Object(error_chain(&err)))?;
    let events = ebpf
        .take_map(EVENTS_MAP_NAME)
        .ok_or_else(|| RuntimeError::Object("the object has no events map".into()))
        .and_then(|map| RingBuf::try_from(map).map_err(|err| RuntimeError::Object(err.to_string())))?;
    let lost = ebpf
        .take_map(LOST_MAP_NAME)
        .ok_or_else(|| RuntimeError::Object("the object has no lost-record map".into()))
        .and_then(|map| PerCpuArray::try_from(map).map_err(|err| RuntimeError::Object(err.to_string())))?;

    let mut btf: Option<aya::Btf> = None;
    let mut begin = Vec::new();
    let mut end = Vec::new();
    let mut attached = 0;
    for probe in &compiled.probes {
        load_one(&mut ebpf, probe, &mut btf).map_err(|err| describe_load_error(probe, &err, source, verbose))?;
        debug!("loaded {} as {}", probe.kind.display_name(), probe.symbol);
        match &probe.kind {
            ProbeKind::Begin => begin.push(probe.symbol.clone()),
            ProbeKind::End => end.push(probe.symbol.clone()),
            _ if dry_run => {}
            kind => {
                attach_one(&mut ebpf, probe).map_err(|err| describe_attach_error(kind, &err))?;
                info!("attached {}", kind.display_name());
                attached += 1;
            }
        }
    }
    Ok(Loaded {
        ebpf: Some(ebpf),
        events,
        lost,
        begin,
        end,
        attached,
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
    }
}

fn attach_one(ebpf: &mut Ebpf, probe: &CompiledProbe) -> Result<(), ProgramError> {
    let program = ebpf
        .program_mut(&probe.symbol)
        .ok_or_else(|| ProgramError::UnexpectedProgramType)?;
    match &probe.kind {
        ProbeKind::Kprobe { function } | ProbeKind::Kretprobe { function } => {
            let program: &mut KProbe = program.try_into()?;
            program.attach(function, 0).map(drop)
        }
        ProbeKind::Fentry { .. } => {
            let program: &mut FEntry = program.try_into()?;
            program.attach().map(drop)
        }
        ProbeKind::Fexit { .. } => {
            let program: &mut FExit = program.try_into()?;
            program.attach().map(drop)
        }
        ProbeKind::Tracepoint { category, name } => {
            let program: &mut TracePoint = program.try_into()?;
            program.attach(category, name).map(drop)
        }
        ProbeKind::RawTracepoint { name } => {
            let program: &mut RawTracePoint = program.try_into()?;
            program.attach(name).map(drop)
        }
        ProbeKind::Begin | ProbeKind::End => Ok(()),
    }
}

/// Turns a load failure into a message; a verifier rejection names the
/// script line of the failing instruction.
fn describe_load_error(probe: &CompiledProbe, err: &ProgramError, source: &Source, verbose: bool) -> RuntimeError {
    let name = probe.kind.display_name();
    match err {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            let mut message = format!("the kernel rejected the program for {name} ({io_error})");
            if io_error.raw_os_error() == Some(libc::EPERM) && log.trim().is_empty() {
                message.push_str(&mechanism_refusal_hint(&probe.kind));
                return RuntimeError::Rejected(message);
            }
            if let Some(line) = failing_line(&log, probe) {
                let text = source.line_text(line as usize).trim().to_owned();
                let _ = write!(message, " at {}:{line}:\n    {text}", source.name());
            }
            let summary: Vec<&str> = log.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect();
            if verbose {
                let _ = write!(message, "\nverifier log:\n{log}");
            } else if !summary.is_empty() {
                let summary: Vec<&str> = summary.into_iter().rev().collect();
                let _ = write!(message, "\nverifier: {}\n(run with -v for the whole verifier log)", summary.join("\n          "));
            }
            RuntimeError::Rejected(message)
        }
        other => RuntimeError::Rejected(format!("failed to load the program for {name}: {}", error_chain(other))),
    }
}

/// What to tell a user whose kernel refuses a program type outright.
fn mechanism_refusal_hint(kind: &ProbeKind) -> String {
    match kind {
        ProbeKind::Fentry { .. } | ProbeKind::Fexit { .. } => {
            "; this kernel or its security policy does not allow fentry/fexit programs: use kprobe/kretprobe instead".into()
        }
        _ => "; this kernel or its security policy does not allow this program type".into(),
    }
}

/// Finds the script line of the last instruction the verifier mentions.
fn failing_line(log: &str, probe: &CompiledProbe) -> Option<u32> {
    let index = log.lines().rev().find_map(|line| {
        let (number, rest) = line.split_once(':')?;
        if !rest.trim_start().starts_with('(') {
            return None;
        }
        number.trim().parse::<usize>().ok()
    })?;
    probe.code.lines.get(index).copied().filter(|&line| line > 0)
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
    RuntimeError::Attach(message)
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

    /// Detaches and unloads every program; the ring buffer stays readable.
    pub fn detach(&mut self) {
        self.ebpf = None;
    }

    /// Records dropped because the ring buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// What a record asks for.
pub enum Record {
    /// Text to print.
    Text,
    /// `exit()` was called.
    Exit,
    /// A record that does not match the compiled outputs.
    Invalid,
}

/// Renders one ring buffer record into `out`.
pub fn render_record(outputs: &[OutputSpec], record: &[u8], out: &mut String) -> Record {
    let Some(header) = record.get(..4) else {
        return Record::Invalid;
    };
    let index = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    match outputs.get(index) {
        Some(OutputSpec::Exit) => Record::Exit,
        Some(spec) => {
            spec.render(record, out);
            Record::Text
        }
        None => Record::Invalid,
    }
}
