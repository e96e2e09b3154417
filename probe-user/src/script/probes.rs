//! Resolving attach points: which kernel object a probe names, which
//! program type and section it compiles to, and where its arguments and
//! return value come from.

use std::rc::Rc;

use super::{
    ast::{AttachPoint, AttachTarget, Location, Provider, RateUnit},
    diagnostic::Diagnostic,
    env::Environment,
};
use crate::{btf::Btf, suggest, tracepoint::{self, Format}};

/// The kind of program a probe compiles to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Runs once before any other probe, in the tool's own process.
    Begin,
    /// Runs once when the run ends.
    End,
    Kprobe { function: String },
    Kretprobe { function: String },
    Fentry { function: String },
    Fexit { function: String },
    Tracepoint { category: String, name: String },
    RawTracepoint { name: String },
    /// `interval:UNIT:N`: runs on one CPU every `period_ns` nanoseconds.
    Interval { period_ns: u64, text: String },
    /// `profile:UNIT:N`: runs on every CPU, `hz` times a second or every
    /// `period_ns` nanoseconds.
    Profile { hz: Option<u64>, period_ns: u64, text: String },
    /// `lsm:HOOK`: a BPF LSM program on the hook's `bpf_lsm_HOOK` function,
    /// which may deny the operation with `deny()`.
    Lsm { hook: String },
}

impl ProbeKind {
    /// The ELF section that tells aya the program type.
    pub fn section(&self, symbol: &str) -> String {
        match self {
            // BEGIN and END are raw tracepoint programs that the tool runs
            // itself with BPF_PROG_TEST_RUN, never attached.
            ProbeKind::Begin | ProbeKind::End => format!("raw_tracepoint/{symbol}"),
            ProbeKind::Kprobe { .. } => format!("kprobe/{symbol}"),
            ProbeKind::Kretprobe { .. } => format!("kretprobe/{symbol}"),
            ProbeKind::Fentry { .. } => format!("fentry/{symbol}"),
            ProbeKind::Fexit { .. } => format!("fexit/{symbol}"),
            ProbeKind::Tracepoint { .. } => format!("tracepoint/{symbol}"),
            ProbeKind::RawTracepoint { .. } => format!("raw_tracepoint/{symbol}"),
            ProbeKind::Interval { .. } | ProbeKind::Profile { .. } => format!("perf_event/{symbol}"),
            ProbeKind::Lsm { .. } => format!("lsm/{symbol}"),
        }
    }

    /// The probe's full name, as the `probe` builtin returns it.
    pub fn display_name(&self) -> String {
        match self {
            ProbeKind::Begin => "BEGIN".into(),
            ProbeKind::End => "END".into(),
            ProbeKind::Kprobe { function } => format!("kprobe:{function}"),
            ProbeKind::Kretprobe { function } => format!("kretprobe:{function}"),
            ProbeKind::Fentry { function } => format!("fentry:{function}"),
            ProbeKind::Fexit { function } => format!("fexit:{function}"),
            ProbeKind::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            ProbeKind::RawTracepoint { name } => format!("rawtracepoint:{name}"),
            ProbeKind::Interval { text, .. } => format!("interval:{text}"),
            ProbeKind::Profile { text, .. } => format!("profile:{text}"),
            ProbeKind::Lsm { hook } => format!("lsm:{hook}"),
        }
    }

    /// The kernel function the probe is on, if any.
    pub fn function(&self) -> Option<&str> {
        match self {
            ProbeKind::Kprobe { function }
            | ProbeKind::Kretprobe { function }
            | ProbeKind::Fentry { function }
            | ProbeKind::Fexit { function } => Some(function),
            _ => None,
        }
    }

    /// Tells whether the probe fires at a function's return.
    pub fn is_return(&self) -> bool {
        matches!(self, ProbeKind::Kretprobe { .. } | ProbeKind::Fexit { .. })
    }
}

/// A function parameter with its BTF type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub type_id: u32,
    /// Index of the parameter's first 8-byte slot in a fentry/fexit
    /// context: parameters larger than 8 bytes take two slots.
    pub slot: u32,
}

/// A kernel function's prototype from BTF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub params: Vec<Param>,
    /// 0 for `void`.
    pub return_type: u32,
    /// Number of 8-byte context slots the arguments take.
    pub slots: u32,
}

impl Signature {
    fn from_btf(btf: &Btf, function: &str) -> Option<Signature> {
        let signature = btf.find_function(function)?;
        let mut slot = 0;
        let params = signature
            .params
            .iter()
            .map(|param| {
                let size = btf.size_of(param.type_id).unwrap_or(8);
                let this = Param {
                    name: param.name.to_owned(),
                    type_id: param.type_id,
                    slot,
                };
                slot += size.div_ceil(8).clamp(1, 2);
                this
            })
            .collect();
        Some(Signature {
            params,
            return_type: signature.return_type,
            slots: slot,
        })
    }
}

/// Where a probe's arguments come from.
#[derive(Clone, Debug)]
pub enum ArgSource {
    /// BEGIN and END have no arguments.
    None,
    /// kprobe: registers in `struct pt_regs`, typed by BTF when the
    /// function has a prototype.
    Registers(Option<Rc<Signature>>),
    /// fentry/fexit: 8-byte slots in the context, typed by BTF.
    Trampoline(Rc<Signature>),
    Tracepoint(Rc<Format>),
    /// Raw tracepoint: untyped 8-byte arguments.
    RawArgs,
}

/// A resolved attach point.
#[derive(Clone, Debug)]
pub struct ResolvedProbe {
    pub kind: ProbeKind,
    pub args: ArgSource,
}

/// Attach-point providers the compiler supports today.
const SUPPORTED: &str = "BEGIN, END, kprobe, kretprobe, fentry (kfunc), fexit (kretfunc), tracepoint (t), rawtracepoint (rt), interval, profile and lsm";

/// Resolves one attach point against the kernel's BTF and tracepoints.
pub fn resolve(point: &AttachPoint, env: &Environment) -> Result<ResolvedProbe, Diagnostic> {
    match (&point.provider, &point.target) {
        (Provider::Begin, _) => Ok(ResolvedProbe {
            kind: ProbeKind::Begin,
            args: ArgSource::None,
        }),
        (Provider::End, _) => Ok(ResolvedProbe {
            kind: ProbeKind::End,
            args: ArgSource::None,
        }),
        (Provider::Kprobe | Provider::Kretprobe, AttachTarget::Kprobe { module, location }) => {
            if let Some(module) = module {
                return Err(Diagnostic::error(module.span, "module-qualified kprobes are not supported yet")
                    .with_hint(format!("drop `{}:` and name the function alone", module.text)));
            }
            let Location::Symbol { name, offset } = location else {
                return Err(Diagnostic::error(point.span, "kprobes on addresses are not supported yet")
                    .with_hint("name the function instead"));
            };
            if let Some(offset) = offset {
                return Err(Diagnostic::error(offset.span, "kprobes at an offset are not supported yet"));
            }
            check_plain_name(&name.text, name.span)?;
            let signature = env
                .btf()
                .and_then(|btf| Signature::from_btf(&btf, &name.text))
                .map(Rc::new);
            if signature.is_none() {
                check_kernel_function(&name.text, name.span, env)?;
            }
            let function = name.text.clone();
            let kind = if point.provider == Provider::Kprobe {
                ProbeKind::Kprobe { function }
            } else {
                ProbeKind::Kretprobe { function }
            };
            Ok(ResolvedProbe {
                kind,
                args: ArgSource::Registers(signature),
            })
        }
        (Provider::Fentry | Provider::Fexit, AttachTarget::Fentry { module, function }) => {
            if let Some(module) = module {
                return Err(Diagnostic::error(module.span, "module-qualified fentry probes are not supported yet")
                    .with_hint(format!("drop `{}:` and name the function alone", module.text)));
            }
            check_plain_name(&function.text, function.span)?;
            let Some(btf) = env.btf() else {
                return Err(Diagnostic::error(function.span, "fentry and fexit need the kernel's BTF, which this kernel does not provide")
                    .with_hint("use kprobe or kretprobe instead, which work without BTF"));
            };
            let Some(signature) = Signature::from_btf(&btf, &function.text) else {
                let mut diagnostic = Diagnostic::error(
                    function.span,
                    format!("kernel function `{}` has no BTF prototype, which fentry and fexit need", function.text),
                );
                let matches = suggest::close_matches(&function.text, btf.function_names(), 3);
                if !matches.is_empty() {
                    diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
                }
                return Err(diagnostic.with_hint("functions without BTF can still be traced with kprobe"));
            };
            let function = function.text.clone();
            let kind = if point.provider == Provider::Fentry {
                ProbeKind::Fentry { function }
            } else {
                ProbeKind::Fexit { function }
            };
            Ok(ResolvedProbe {
                kind,
                args: ArgSource::Trampoline(Rc::new(signature)),
            })
        }
        (Provider::Tracepoint, AttachTarget::Tracepoint { category, name }) => {
            check_plain_name(&category.text, category.span)?;
            check_plain_name(&name.text, name.span)?;
            let format = env
                .tracepoint(&category.text, &name.text)
                .map_err(|message| Diagnostic::error(point.span, message))?;
            let Some(format) = format else {
                let wanted = format!("{}:{}", category.text, name.text);
                let mut diagnostic = Diagnostic::error(point.span, format!("tracepoint `{wanted}` not found"));
                if let Ok(all) = tracepoint::list_all() {
                    let matches = suggest::close_matches(&wanted, all.iter().map(String::as_str), 3);
                    if !matches.is_empty() {
                        diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
                    }
                }
                return Err(diagnostic.with_hint("list tracepoints with `cat /sys/kernel/tracing/available_events`"));
            };
            Ok(ResolvedProbe {
                kind: ProbeKind::Tracepoint {
                    category: category.text.clone(),
                    name: name.text.clone(),
                },
                args: ArgSource::Tracepoint(format),
            })
        }
        (Provider::RawTracepoint, AttachTarget::RawTracepoint { module, name }) => {
            if let Some(module) = module {
                return Err(Diagnostic::error(module.span, "module-qualified raw tracepoints are not supported yet"));
            }
            check_plain_name(&name.text, name.span)?;
            Ok(ResolvedProbe {
                kind: ProbeKind::RawTracepoint {
                    name: name.text.clone(),
                },
                args: ArgSource::RawArgs,
            })
        }
        (Provider::Interval | Provider::Profile, AttachTarget::Timer { unit, unit_span, value }) => {
            let interval = point.provider == Provider::Interval;
            let count = value.value;
            if count == 0 {
                return Err(Diagnostic::error(value.span, "the rate or period must be at least 1"));
            }
            let text = format!("{}:{count}", unit.name());
            let nanoseconds = |per_unit: u64| count.checked_mul(per_unit);
            let (hz, period_ns) = match unit {
                RateUnit::Hertz => {
                    if count > 1_000_000 {
                        return Err(Diagnostic::error(value.span, format!("{count} Hz is too fast")).with_hint("use at most 1000000 Hz"));
                    }
                    (Some(count), 1_000_000_000 / count)
                }
                RateUnit::Seconds => (None, nanoseconds(1_000_000_000).unwrap_or(u64::MAX)),
                RateUnit::Milliseconds => (None, nanoseconds(1_000_000).unwrap_or(u64::MAX)),
                RateUnit::Microseconds => (None, nanoseconds(1_000).unwrap_or(u64::MAX)),
            };
            if period_ns < 10_000 {
                return Err(Diagnostic::error(*unit_span, "periods shorter than 10 us would swamp the CPU")
                    .with_hint("use a period of at least 10 us (100000 Hz)"));
            }
            let kind = if interval {
                ProbeKind::Interval { period_ns, text }
            } else {
                ProbeKind::Profile { hz, period_ns, text }
            };
            Ok(ResolvedProbe { kind, args: ArgSource::None })
        }
        (Provider::Lsm, AttachTarget::Lsm { hook }) => resolve_lsm(&hook.text, hook.span, env),
        (provider, _) => Err(Diagnostic::error(
            point.span,
            format!("`{}` probes are not supported yet", provider.name()),
        )
        .with_hint(format!("supported providers: {SUPPORTED}"))),
    }
}

/// Resolves `lsm:HOOK` through the hook's `bpf_lsm_HOOK` prototype in
/// BTF, which types its arguments as fentry's are typed.
fn resolve_lsm(hook: &str, span: super::span::Span, env: &Environment) -> Result<ResolvedProbe, Diagnostic> {
    check_plain_name(hook, span)?;
    let Some(btf) = env.btf() else {
        return Err(Diagnostic::error(span, "LSM probes need the kernel's BTF, which this kernel does not provide"));
    };
    let Some(signature) = Signature::from_btf(&btf, &format!("bpf_lsm_{hook}")) else {
        let hooks = btf.function_names().filter_map(|name| name.strip_prefix("bpf_lsm_"));
        let matches = suggest::close_matches(hook, hooks, 3);
        let mut diagnostic = Diagnostic::error(
            span,
            format!("LSM hook `{hook}` not found: the kernel's BTF has no function bpf_lsm_{hook}"),
        );
        if !matches.is_empty() {
            diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
        }
        return Err(diagnostic.with_hint("list the hooks with `probe list 'lsm:*'`"));
    };
    Ok(ResolvedProbe {
        kind: ProbeKind::Lsm { hook: hook.to_owned() },
        args: ArgSource::Trampoline(Rc::new(signature)),
    })
}

fn check_plain_name(name: &str, span: super::span::Span) -> Result<(), Diagnostic> {
    if name.contains(['*', '?']) {
        return Err(Diagnostic::error(span, format!("wildcards in probe names (`{name}`) are not supported yet"))
            .with_hint("name one function or tracepoint per attach point; several attach points may share a block: `kprobe:a, kprobe:b { ... }`"));
    }
    Ok(())
}

/// Checks that a function without BTF exists in kallsyms.
fn check_kernel_function(name: &str, span: super::span::Span, env: &Environment) -> Result<(), Diagnostic> {
    let Ok(kallsyms) = crate::kallsyms::Kallsyms::read() else {
        // Without a readable symbol table, the attach step reports a
        // missing function.
        return Ok(());
    };
    if kallsyms.text_symbols(name).next().is_some() {
        return Ok(());
    }
    let btf = env.btf();
    let btf_names = btf.iter().flat_map(|btf| btf.function_names());
    let matches = suggest::close_matches(name, kallsyms.text_names().chain(btf_names), 3);
    let mut diagnostic = Diagnostic::error(span, format!("kernel function `{name}` not found"));
    if !matches.is_empty() {
        diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
    }
    Err(diagnostic)
}
