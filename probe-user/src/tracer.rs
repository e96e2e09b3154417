//! Loading and attaching the default tracer (`probe-ebpf`) to one kernel
//! function, choosing between fentry/fexit and kprobe/kretprobe.
//!
//! Nothing here is pinned: every program, link and map belongs to file
//! descriptors of this process, so the kernel detaches and frees all of it
//! when the process exits, however it exits.

use std::fmt;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{FEntry, FExit, KProbe, ProgramError},
};
use aya_log::EbpfLogger;
use log::info;
use probe_common::{COUNTER_ARGS_DROPPED, COUNTER_LOST};

use crate::{
    fault,
    kernel::{self, KprobeSupport},
};

/// The default tracer's object file, built by `build.rs`.
static TRACER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

/// Default size of the event ring buffer, in bytes.
pub const DEFAULT_BUFFER_SIZE: u32 = 1 << 20;

/// How to attach to a kernel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// fentry/fexit: BPF trampolines, typed by BTF (Linux 5.5 and later).
    Fentry,
    /// kprobe/kretprobe: breakpoints, on any traceable text symbol.
    Kprobe,
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
        })
    }
}

/// The user's choice of mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MechanismChoice {
    /// fentry/fexit when the function has a BTF prototype and the kernel
    /// accepts tracing programs, otherwise kprobe/kretprobe.
    Auto,
    Fentry,
    Kprobe,
}

/// What to attach.
#[derive(Clone, Debug)]
pub struct TraceRequest {
    pub function: String,
    /// Trace returns (fexit/kretprobe) instead of entries.
    pub return_probe: bool,
    /// Process id to trace; `None` traces every process.
    pub pid: Option<u32>,
    pub mechanism: MechanismChoice,
    pub buffer_size: u32,
    /// Whether the function has a BTF prototype (fentry needs one).
    pub has_btf: bool,
}

/// Why a function could not be traced.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("failed to load the tracer's eBPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("failed to read the kernel's BTF for fentry: {0}")]
    Btf(#[source] aya::BtfError),
    #[error("cannot attach to kernel function `{function}` on this kernel (Linux {release}):\n{reasons}")]
    NoMechanism {
        function: String,
        release: String,
        reasons: String,
    },
    #[error("{0}")]
    Other(String),
}

/// A traced function: the loaded programs with their links, the event ring
/// buffer and the loss counters. Dropping it detaches everything.
pub struct Attached {
    /// Reader of the kernel-side log records. It must live as long as the
    /// programs: dropping it closes the log ring buffer.
    pub logger: Option<EbpfLogger<&'static dyn log::Log>>,
    pub mechanism: Mechanism,
    pub events: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    /// The programs and their links; taken out in `detach`.
    ebpf: Option<Ebpf>,
}

/// Loss figures read from the kernel side at the end of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events dropped because the ring buffer was full.
    pub events: u64,
    /// kretprobe entries whose arguments were not saved because the
    /// per-thread argument map was full.
    pub arguments: u64,
}

impl Attached {
    /// Detaches every program now, keeping the counters readable.
    pub fn detach(&mut self) {
        self.ebpf = None;
    }

    /// Sums the per-CPU loss counters.
    pub fn losses(&self) -> Losses {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        Losses {
            events: sum(COUNTER_LOST),
            arguments: sum(COUNTER_ARGS_DROPPED),
        }
    }
}

/// Loads the default tracer and attaches it to `request.function`, trying
/// the mechanisms that `request.mechanism` allows in order of preference.
pub fn attach(request: &TraceRequest) -> Result<Attached, AttachError> {
    let mut reasons: Vec<String> = Vec::new();
    let try_fentry = request.mechanism != MechanismChoice::Kprobe;
    let try_kprobe = request.mechanism != MechanismChoice::Fentry;

    if try_fentry && !request.has_btf {
        reasons.push(format!(
            "fentry: `{}` has no BTF prototype in the kernel's BTF, which fentry needs",
            request.function
        ));
    }

    if try_fentry && request.has_btf {
        let mut attached = load(request)?;
        match attach_fentry(&mut attached, request) {
            Ok(()) => {
                info!("attached with fentry: the function has a BTF prototype and the kernel accepts tracing programs");
                return Ok(attached);
            }
            Err(reason) => {
                if try_kprobe {
                    info!("fentry failed ({reason}); falling back to kprobe");
                }
                reasons.push(format!("fentry: {reason}"));
            }
        }
    }

    if try_kprobe {
        match kernel::kprobe_support() {
            KprobeSupport::Missing(facts) => {
                reasons.push(format!("kprobe: this kernel has no kprobes ({facts})"));
            }
            KprobeSupport::Available => {
                let mut attached = load(request)?;
                attached.mechanism = Mechanism::Kprobe;
                match attach_kprobe(&mut attached, request) {
                    Ok(()) => {
                        info!("attached with kprobe");
                        return Ok(attached);
                    }
                    Err(reason) => reasons.push(format!("kprobe: {reason}")),
                }
            }
        }
    }

    if let Some(reason) = kernel::untraceable_reason(&request.function) {
        reasons.push(reason);
    }
    Err(AttachError::NoMechanism {
        function: request.function.clone(),
        release: kernel::release(),
        reasons: reasons
            .iter()
            .map(|reason| format!("  - {reason}"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// Loads the object: creates the maps and sets the process filter. Programs
/// are loaded into the kernel later, by the mechanism that uses them.
fn load(request: &TraceRequest) -> Result<Attached, AttachError> {
    let target_tgid = request.pid.unwrap_or(0);
    let mut ebpf = EbpfLoader::new()
        .override_global("TARGET_TGID", &target_tgid, true)
        .map_max_entries("EVENTS", request.buffer_size)
        .load(TRACER_OBJECT)
        .map_err(AttachError::Object)?;

    let logger = match EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(err) => {
            info!("kernel-side logging is off: {err}");
            None
        }
    };

    let missing = |name: &str| AttachError::Other(format!("the tracer object has no map `{name}`"));
    let events = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or_else(|| missing("EVENTS"))?)
        .map_err(|err| AttachError::Other(format!("EVENTS is not a ring buffer: {err}")))?;
    let counters = PerCpuArray::try_from(ebpf.take_map("COUNTERS").ok_or_else(|| missing("COUNTERS"))?)
        .map_err(|err| AttachError::Other(format!("COUNTERS is not a per-CPU array: {err}")))?;

    Ok(Attached {
        logger,
        mechanism: Mechanism::Fentry,
        events,
        counters,
        ebpf: Some(ebpf),
    })
}

fn ebpf_mut(attached: &mut Attached) -> &mut Ebpf {
    attached
        .ebpf
        .as_mut()
        .expect("programs are attached only before detach")
}

fn attach_fentry(attached: &mut Attached, request: &TraceRequest) -> Result<(), String> {
    let btf = aya::Btf::from_sys_fs().map_err(|err| format!("failed to read the kernel's BTF: {err}"))?;
    let ebpf = ebpf_mut(attached);
    let function = request.function.as_str();
    if request.return_probe {
        let program: &mut FExit = program(ebpf, "trace_exit_fexit")?;
        program
            .load(function, &btf)
            .map_err(|err| describe_program_error("fexit", &err))?;
        program
            .attach()
            .map_err(|err| describe_program_error("fexit", &err))?;
    } else {
        let program: &mut FEntry = program(ebpf, "trace_entry_fentry")?;
        program
            .load(function, &btf)
            .map_err(|err| describe_program_error("fentry", &err))?;
        program
            .attach()
            .map_err(|err| describe_program_error("fentry", &err))?;
    }
    fault::check("after-attach").map_err(|err| err.to_string())
}

fn attach_kprobe(attached: &mut Attached, request: &TraceRequest) -> Result<(), String> {
    let ebpf = ebpf_mut(attached);
    let function = request.function.as_str();
    let names: &[&str] = if request.return_probe {
        // The entry program saves the arguments that the return program
        // reports, so it is attached first.
        &["save_entry_args_kprobe", "trace_exit_kretprobe"]
    } else {
        &["trace_entry_kprobe"]
    };
    for name in names {
        let program: &mut KProbe = program(ebpf, name)?;
        let kind = if name.contains("kretprobe") { "kretprobe" } else { "kprobe" };
        program
            .load()
            .map_err(|err| describe_program_error(kind, &err))?;
        program
            .attach(function, 0)
            .map_err(|err| describe_program_error(kind, &err))?;
        fault::check("after-attach").map_err(|err| err.to_string())?;
    }
    Ok(())
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("the tracer object has no program `{name}`"))?;
    program
        .try_into()
        .map_err(|err: ProgramError| format!("program `{name}` has the wrong type: {err}"))
}

/// Turns a program error into one line that names the failed step and, for
/// a verifier rejection, the last lines of the verifier log.
fn describe_program_error(kind: &str, err: &ProgramError) -> String {
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            let mut message = format!("the kernel rejected the {kind} program (BPF_PROG_LOAD: {io_error})");
            if io_error.raw_os_error() == Some(libc::EPERM) {
                message.push_str(&format!(
                    ": this kernel or its security policy does not allow {kind} programs"
                ));
            }
            if !tail.is_empty() {
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                message.push_str(&format!("; verifier: {}", tail.join(" / ")));
            }
            message
        }
        other => {
            let mut message = format!("{kind} failed: {other}");
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        }
    }
}
