//! Resolving attach points: which kernel object a probe names, which
//! program type and section it compiles to, and where its arguments and
//! return value come from.

use std::rc::Rc;

use super::{
    ast::{AttachPoint, AttachTarget, Location, Provider, RateUnit},
    diagnostic::Diagnostic,
    env::Environment,
};
use super::span::Span;
use crate::{
    btf::Btf,
    kallsyms::KALLSYMS_PATH,
    planner::{FunctionTarget, Plan, PlanError, Request, clone_base},
    suggest,
    tracepoint::{self, Format},
};

/// The kind of program a probe compiles to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Runs once before any other probe, in the tool's own process.
    Begin,
    /// Runs once when the run ends.
    End,
    /// A kprobe on one function entry. `function` is the kallsyms name,
    /// `MODULE:FUNC` for module functions. A nonzero `address` attaches at
    /// that address, which picks one of several functions with one name.
    Kprobe { function: String, address: u64 },
    Kretprobe { function: String, address: u64 },
    /// One program attached to many functions through a kprobe.multi link
    /// (Linux 5.18 and later, with `CONFIG_FPROBE`). Target `i` gets
    /// the BPF cookie `first_cookie + i`, which names it in the `names`
    /// map for `func` and `probe`.
    KprobeMulti {
        pattern: String,
        targets: Vec<FunctionTarget>,
        ret: bool,
        first_cookie: u32,
    },
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
    /// `uprobe:` and `uretprobe:` on a user-space function. The kernel
    /// attaches at `offset` in the file at `path`; `pid` limits the probe
    /// to one process (`-p`). `name` is the function as written.
    Uprobe {
        path: String,
        offset: u64,
        name: String,
        ret: bool,
        pid: Option<u32>,
    },
}

impl ProbeKind {
    /// The ELF section that tells aya the program type.
    pub fn section(&self, symbol: &str) -> String {
        match self {
            // BEGIN and END are raw tracepoint programs that the tool runs
            // itself with BPF_PROG_TEST_RUN, never attached.
            ProbeKind::Begin | ProbeKind::End => format!("raw_tracepoint/{symbol}"),
            ProbeKind::Kprobe { .. } | ProbeKind::KprobeMulti { ret: false, .. } => format!("kprobe/{symbol}"),
            ProbeKind::Kretprobe { .. } | ProbeKind::KprobeMulti { ret: true, .. } => format!("kretprobe/{symbol}"),
            ProbeKind::Fentry { .. } => format!("fentry/{symbol}"),
            ProbeKind::Fexit { .. } => format!("fexit/{symbol}"),
            ProbeKind::Tracepoint { .. } => format!("tracepoint/{symbol}"),
            ProbeKind::RawTracepoint { .. } => format!("raw_tracepoint/{symbol}"),
            ProbeKind::Interval { .. } | ProbeKind::Profile { .. } => format!("perf_event/{symbol}"),
            ProbeKind::Lsm { .. } => format!("lsm/{symbol}"),
            ProbeKind::Uprobe { ret: false, .. } => format!("uprobe/{symbol}"),
            ProbeKind::Uprobe { ret: true, .. } => format!("uretprobe/{symbol}"),
        }
    }

    /// The probe's full name, as the `probe` builtin returns it.
    pub fn display_name(&self) -> String {
        match self {
            ProbeKind::Begin => "BEGIN".into(),
            ProbeKind::End => "END".into(),
            ProbeKind::Kprobe { function, .. } => format!("kprobe:{function}"),
            ProbeKind::Kretprobe { function, .. } => format!("kretprobe:{function}"),
            ProbeKind::KprobeMulti { pattern, ret, .. } => {
                format!("{}:{pattern}", if *ret { "kretprobe" } else { "kprobe" })
            }
            ProbeKind::Fentry { function } => format!("fentry:{function}"),
            ProbeKind::Fexit { function } => format!("fexit:{function}"),
            ProbeKind::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            ProbeKind::RawTracepoint { name } => format!("rawtracepoint:{name}"),
            ProbeKind::Interval { text, .. } => format!("interval:{text}"),
            ProbeKind::Profile { text, .. } => format!("profile:{text}"),
            ProbeKind::Lsm { hook } => format!("lsm:{hook}"),
            ProbeKind::Uprobe { path, name, ret, .. } => {
                format!("{}:{path}:{name}", if *ret { "uretprobe" } else { "uprobe" })
            }
        }
    }

    /// The kernel function the probe is on, if any.
    pub fn function(&self) -> Option<&str> {
        match self {
            ProbeKind::Kprobe { function, .. }
            | ProbeKind::Kretprobe { function, .. }
            | ProbeKind::Fentry { function }
            | ProbeKind::Fexit { function } => Some(function),
            _ => None,
        }
    }

    /// Tells whether the probe fires at a function's return.
    pub fn is_return(&self) -> bool {
        matches!(
            self,
            ProbeKind::Kretprobe { .. }
                | ProbeKind::Fexit { .. }
                | ProbeKind::KprobeMulti { ret: true, .. }
                | ProbeKind::Uprobe { ret: true, .. }
        )
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
    /// The reason `args` is unavailable when `args` is `Registers(None)`.
    pub untyped_reason: Option<String>,
    /// The split BTF that types a module function's arguments; `None`
    /// for vmlinux functions, typed by the kernel's own BTF.
    pub module_btf: Option<Rc<Btf>>,
    /// Set for one of several programs that a glob or a shared name
    /// expanded to, which may fail alone.
    pub optional: bool,
}

impl ResolvedProbe {
    fn new(kind: ProbeKind, args: ArgSource) -> Self {
        Self {
            kind,
            args,
            untyped_reason: None,
            module_btf: None,
            optional: false,
        }
    }
}

/// Attach-point providers the compiler supports today.
const SUPPORTED: &str = "BEGIN, END, kprobe, kretprobe, uprobe, uretprobe, fentry (kfunc), fexit (kretfunc), tracepoint (t), rawtracepoint (rt), interval, profile and lsm";

/// Resolves one attach point against the kernel's symbols, BTF and
/// tracepoints. A probe on several kernel functions may become several
/// programs; notes on what was matched or skipped go to `notes`.
pub fn resolve(point: &AttachPoint, env: &Environment, notes: &mut Vec<Diagnostic>) -> Result<Vec<ResolvedProbe>, Diagnostic> {
    match (&point.provider, &point.target) {
        (Provider::Kprobe | Provider::Kretprobe, AttachTarget::Kprobe { module, location }) => {
            let Location::Symbol { name, offset } = location else {
                return Err(Diagnostic::error(point.span, "kprobes on addresses are not supported yet")
                    .with_hint("name the function instead"));
            };
            if let Some(offset) = offset {
                return Err(Diagnostic::error(offset.span, "kprobes at an offset are not supported yet"));
            }
            let request = Request {
                module: module.as_ref().map(|m| m.text.clone()),
                name: name.text.clone(),
                address: env.function_address,
            };
            resolve_kprobes(&request, point.provider == Provider::Kretprobe, point.span, env, notes)
        }
        (Provider::Fentry | Provider::Fexit, AttachTarget::Fentry { module, function }) => {
            let request = Request {
                module: module.as_ref().map(|m| m.text.clone()),
                name: function.text.clone(),
                address: env.function_address,
            };
            resolve_fentry(&request, point.provider == Provider::Fexit, function.span, env, notes)
        }
        (Provider::Uprobe | Provider::Uretprobe, AttachTarget::Uprobe { binary, language, location }) => {
            resolve_uprobe(point, binary.as_ref(), language.as_ref(), location, env, notes)
        }
        _ => resolve_one(point, env).map(|probe| vec![probe]),
    }
}

/// Resolves an attach point that names one object.
fn resolve_one(point: &AttachPoint, env: &Environment) -> Result<ResolvedProbe, Diagnostic> {
    match (&point.provider, &point.target) {
        (Provider::Begin, _) => Ok(ResolvedProbe::new(ProbeKind::Begin, ArgSource::None)),
        (Provider::End, _) => Ok(ResolvedProbe::new(ProbeKind::End, ArgSource::None)),
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
            Ok(ResolvedProbe::new(
                ProbeKind::Tracepoint {
                    category: category.text.clone(),
                    name: name.text.clone(),
                },
                ArgSource::Tracepoint(format),
            ))
        }
        (Provider::RawTracepoint, AttachTarget::RawTracepoint { module, name }) => {
            if let Some(module) = module {
                return Err(Diagnostic::error(module.span, "module-qualified raw tracepoints are not supported yet"));
            }
            check_plain_name(&name.text, name.span)?;
            Ok(ResolvedProbe::new(
                ProbeKind::RawTracepoint {
                    name: name.text.clone(),
                },
                ArgSource::RawArgs,
            ))
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
            Ok(ResolvedProbe::new(kind, ArgSource::None))
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
    Ok(ResolvedProbe::new(
        ProbeKind::Lsm { hook: hook.to_owned() },
        ArgSource::Trampoline(Rc::new(signature)),
    ))
}

/// Resolves `uprobe:BINARY:FUNCTION[+OFFSET]` and `uprobe:BINARY:ADDRESS`
/// (and `uretprobe:`) to a file and an offset in it. Without a binary,
/// `-p PID` names the process's executable.
fn resolve_uprobe(
    point: &AttachPoint,
    binary: Option<&super::ast::Name>,
    language: Option<&super::ast::Name>,
    location: &Location,
    env: &Environment,
    notes: &mut Vec<Diagnostic>,
) -> Result<Vec<ResolvedProbe>, Diagnostic> {
    use crate::uprobe::{self, LocationChecks, UserLocation};

    let ret = point.provider == Provider::Uretprobe;
    if let Some(language) = language {
        return Err(Diagnostic::error(language.span, format!("`{}` names are not supported yet", language.text))
            .with_hint("give the mangled symbol name instead"));
    }
    let path = match (binary, env.target_pid) {
        (Some(binary), _) => uprobe::resolve_binary(&binary.text, env.target_pid)
            .map_err(|err| target_diagnostic(err, binary.span))?,
        (None, Some(pid)) => std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|err| {
            Diagnostic::error(point.span, format!("cannot find the executable of process {pid}: {err}"))
        })?,
        (None, None) => {
            return Err(Diagnostic::error(point.span, "the uprobe names no binary")
                .with_hint("write `uprobe:BINARY:FUNCTION`, or give -p PID to probe that process's executable"));
        }
    };
    let checks = LocationChecks { ret, unchecked: env.unsafe_uprobes };
    let targets = match location {
        Location::Symbol { name, offset } if crate::planner::is_glob(&name.text) => {
            if let Some(offset) = offset {
                return Err(Diagnostic::error(offset.span, "a wildcard uprobe cannot take an offset")
                    .with_hint("name one function to attach at an offset into it"));
            }
            uprobe::resolve_glob(&path, &name.text).map_err(|err| target_diagnostic(err, name.span))?
        }
        Location::Symbol { name, offset } => {
            let offset = offset.as_ref().map_or(0, |number| number.value);
            let location = UserLocation::Symbol { name: name.text.clone(), offset };
            vec![uprobe::resolve_location(&path, &location, checks).map_err(|err| target_diagnostic(err, name.span))?]
        }
        Location::Address(number) => {
            let location = UserLocation::Address(number.value);
            vec![uprobe::resolve_location(&path, &location, checks).map_err(|err| target_diagnostic(err, number.span))?]
        }
    };
    if let Some(pid) = env.target_pid {
        if uprobe::process_maps_file(pid, &path) == Some(false) {
            notes.push(Diagnostic::warning(
                point.span,
                format!("process {pid} does not map `{}`, so this probe fires only if it loads it later", path.display()),
            ));
        }
    }
    let go = targets.first().is_some_and(|target| target.go);
    if ret && go && !env.unsafe_uprobes {
        return Err(Diagnostic::error(
            point.span,
            format!("`{}` is a Go program, and a uretprobe can crash it", path.display()),
        )
        .with_hint("Go moves goroutine stacks, which breaks the return address a uretprobe plants; trace the returns with uprobes on the function's `RET` instructions, or pass --unsafe-uprobes to attach anyway"));
    }
    let optional = targets.len() > 1;
    Ok(targets
        .into_iter()
        .map(|target| {
            let mut probe = ResolvedProbe::new(
                ProbeKind::Uprobe {
                    path: target.path.display().to_string(),
                    offset: target.file_offset,
                    name: target.name,
                    ret,
                    pid: env.target_pid,
                },
                ArgSource::Registers(None),
            );
            probe.untyped_reason = Some("user-space functions have no BTF prototypes here: use arg0 ... arg5".into());
            probe.optional = optional;
            probe
        })
        .collect())
}

fn target_diagnostic(err: crate::uprobe::TargetError, span: Span) -> Diagnostic {
    let diagnostic = Diagnostic::error(span, err.message);
    match err.hint {
        Some(hint) => diagnostic.with_hint(hint),
        None => diagnostic,
    }
}

fn check_plain_name(name: &str, span: super::span::Span) -> Result<(), Diagnostic> {
    if name.contains(['*', '?']) {
        return Err(Diagnostic::error(span, format!("wildcards (`{name}`) are supported in kprobe, kretprobe, fentry and fexit probes only"))
            .with_hint("name one object per attach point; several attach points may share a block: `tracepoint:a:b, tracepoint:a:c { ... }`"));
    }
    Ok(())
}

/// Resolves `kprobe:` and `kretprobe:` on a function, a glob, or
/// `MODULE:FUNC`. One target is one program, typed by BTF when the
/// function has a prototype. Several targets become one kprobe.multi
/// program when the kernel has them, or one program per target otherwise.
fn resolve_kprobes(
    request: &Request,
    ret: bool,
    span: Span,
    env: &Environment,
    notes: &mut Vec<Diagnostic>,
) -> Result<Vec<ResolvedProbe>, Diagnostic> {
    let Some(functions) = env.functions() else {
        return resolve_kprobe_by_name(request, ret, span, env);
    };
    let plan = functions.plan(request).map_err(|err| plan_diagnostic(&err, span))?;
    note_plan(&plan, request, span, notes);

    if plan.targets.len() == 1 && !plan.wildcard {
        return Ok(vec![single_kprobe(&plan.targets[0], ret, env)]);
    }
    let reason = format!(
        "`args` is not available on `{}`: it matches {} functions, whose prototypes can differ",
        request_text(request),
        plan.targets.len()
    );
    if env.kprobe_multi() {
        log::info!(
            "`{}` matches {} functions: one kprobe.multi program and link",
            request_text(request),
            plan.targets.len()
        );
        let kind = ProbeKind::KprobeMulti {
            pattern: request_text(request),
            targets: plan.targets,
            ret,
            first_cookie: 0,
        };
        let mut probe = ResolvedProbe::new(kind, ArgSource::Registers(None));
        probe.untyped_reason = Some(reason);
        return Ok(vec![probe]);
    }
    log::info!(
        "`{}` matches {} functions and this kernel has no kprobe.multi links: one program per function",
        request_text(request),
        plan.targets.len()
    );
    Ok(plan
        .targets
        .iter()
        .map(|target| {
            let mut probe = single_kprobe(target, ret, env);
            probe.args = ArgSource::Registers(None);
            probe.untyped_reason = Some(reason.clone());
            probe.optional = true;
            probe
        })
        .collect())
}

/// A kprobe on one function entry, at its address when the name alone
/// could be ambiguous.
fn single_kprobe(target: &FunctionTarget, ret: bool, env: &Environment) -> ResolvedProbe {
    let function = target.qualified_name();
    let kind = if ret {
        ProbeKind::Kretprobe { function, address: target.address }
    } else {
        ProbeKind::Kprobe { function, address: target.address }
    };
    if let Some(base) = clone_base(&target.symbol) {
        let mut probe = ResolvedProbe::new(kind, ArgSource::Registers(None));
        probe.untyped_reason = Some(format!(
            "`{}` is a compiler clone of `{base}` whose arguments may differ from `{base}`'s prototype",
            target.symbol
        ));
        return probe;
    }
    let (signature, module_btf) = target_signature(target, env);
    let mut probe = ResolvedProbe::new(kind, ArgSource::Registers(signature));
    probe.module_btf = module_btf;
    probe
}

/// Looks a function's prototype up in vmlinux BTF, or in its module's.
fn target_signature(target: &FunctionTarget, env: &Environment) -> (Option<Rc<Signature>>, Option<Rc<Btf>>) {
    match &target.module {
        None => {
            let signature = env.btf().and_then(|btf| Signature::from_btf(&btf, &target.symbol));
            (signature.map(Rc::new), None)
        }
        Some(module) => {
            let Some(btf) = env.module_btf(module) else {
                return (None, None);
            };
            let signature = Signature::from_btf(&btf, &target.symbol).map(Rc::new);
            (signature, Some(btf))
        }
    }
}

/// Reports that a glob or `MODULE:FUNC` cannot be resolved without
/// `/proc/kallsyms`.
fn symbol_table_missing(request: &Request, span: Span) -> Diagnostic {
    Diagnostic::error(
        span,
        format!("`{}` needs the kernel's symbol table ({KALLSYMS_PATH}), which cannot be read", request_text(request)),
    )
    .with_hint("run as root, or name one vmlinux function")
}

/// Resolves a kprobe by name alone, when the symbol table cannot be read.
fn resolve_kprobe_by_name(request: &Request, ret: bool, span: Span, env: &Environment) -> Result<Vec<ResolvedProbe>, Diagnostic> {
    if request.is_wildcard() || request.module.is_some() {
        return Err(symbol_table_missing(request, span));
    }
    let target = FunctionTarget {
        symbol: request.name.clone(),
        module: None,
        address: 0,
    };
    Ok(vec![single_kprobe(&target, ret, env)])
}

/// Resolves `fentry:` and `fexit:`: one program per function, each typed
/// by its BTF prototype. Targets that fentry cannot reach are skipped
/// with their reason.
fn resolve_fentry(
    request: &Request,
    ret: bool,
    span: Span,
    env: &Environment,
    notes: &mut Vec<Diagnostic>,
) -> Result<Vec<ResolvedProbe>, Diagnostic> {
    let Some(btf) = env.btf() else {
        return Err(Diagnostic::error(span, "fentry and fexit need the kernel's BTF, which this kernel does not provide")
            .with_hint("use kprobe or kretprobe instead, which work without BTF"));
    };
    let targets = match env.functions() {
        Some(functions) => {
            let plan = functions.plan(request).map_err(|err| plan_diagnostic(&err, span))?;
            note_plan(&plan, request, span, notes);
            plan.targets
        }
        None if !request.is_wildcard() && request.module.is_none() => vec![FunctionTarget {
            symbol: request.name.clone(),
            module: None,
            address: 0,
        }],
        None => {
            return Err(symbol_table_missing(request, span));
        }
    };

    let mut seen = std::collections::HashSet::new();
    let duplicated: Vec<&str> = targets
        .iter()
        .filter(|target| !seen.insert(target.symbol.as_str()))
        .map(|target| target.symbol.as_str())
        .collect();
    let mut probes = Vec::new();
    let mut skipped = Vec::new();
    let optional = targets.len() > 1;
    for target in &targets {
        let reason = if target.module.is_some() {
            Some("fentry on module functions is not supported; use kprobe".to_owned())
        } else if clone_base(&target.symbol).is_some() {
            Some("a compiler clone has no BTF prototype; use kprobe".to_owned())
        } else if duplicated.contains(&target.symbol.as_str()) {
            Some("several functions share this name and fentry attaches by name; use kprobe".to_owned())
        } else {
            None
        };
        let signature = match reason {
            Some(reason) => Err(reason),
            None => Signature::from_btf(&btf, &target.symbol).ok_or_else(|| "it has no BTF prototype, which fentry needs".to_owned()),
        };
        match signature {
            Ok(signature) => {
                let function = target.symbol.clone();
                let kind = if ret { ProbeKind::Fexit { function } } else { ProbeKind::Fentry { function } };
                let mut probe = ResolvedProbe::new(kind, ArgSource::Trampoline(Rc::new(signature)));
                probe.optional = optional;
                probes.push(probe);
            }
            Err(reason) => skipped.push((target.qualified_name(), reason)),
        }
    }
    if probes.is_empty() {
        let (name, reason) = &skipped[0];
        let mut diagnostic = Diagnostic::error(span, format!("cannot attach fentry to `{name}`: {reason}"));
        if !request.is_wildcard() {
            let matches = suggest::close_matches(&request.name, btf.function_names(), 3);
            if !matches.is_empty() && targets.is_empty() {
                diagnostic = diagnostic.with_hint(format!("did you mean: {}?", matches.join(", ")));
            }
        }
        return Err(diagnostic.with_hint("functions without BTF can still be traced with kprobe"));
    }
    if !skipped.is_empty() {
        let list: Vec<String> = skipped.iter().take(5).map(|(name, reason)| format!("{name} ({reason})")).collect();
        let more = if skipped.len() > 5 { format!(", and {} more", skipped.len() - 5) } else { String::new() };
        notes.push(Diagnostic::warning(
            span,
            format!("{} of the matching functions are skipped: {}{more}", skipped.len(), list.join(", ")),
        ));
    }
    Ok(probes)
}

/// Reports what a plan matched beyond the obvious: clones, duplicates and
/// skipped matches.
fn note_plan(plan: &Plan, request: &Request, span: Span, notes: &mut Vec<Diagnostic>) {
    if let Some(description) = plan.describe(&request_text(request)) {
        notes.push(Diagnostic::note(span, description));
    }
    if !plan.skipped.is_empty() {
        let list: Vec<String> = plan.skipped.iter().take(5).map(|skipped| skipped.name.clone()).collect();
        let more = if plan.skipped.len() > 5 { format!(", and {} more", plan.skipped.len() - 5) } else { String::new() };
        let reason = plan.skipped[0].reason;
        notes.push(
            Diagnostic::warning(
                span,
                format!(
                    "{} matching function{} cannot be traced and {} skipped: {}{more}",
                    plan.skipped.len(),
                    if plan.skipped.len() == 1 { "" } else { "s" },
                    if plan.skipped.len() == 1 { "is" } else { "are" },
                    list.join(", ")
                ),
            )
            .with_hint(format!("the first is {reason}")),
        );
    }
}

fn request_text(request: &Request) -> String {
    match &request.module {
        Some(module) => format!("{module}:{}", request.name),
        None => request.name.clone(),
    }
}

/// Turns a planner error into a diagnostic at the probe name.
fn plan_diagnostic(err: &PlanError, span: Span) -> Diagnostic {
    let diagnostic = Diagnostic::error(span, err.to_string());
    match err {
        PlanError::NotFound { .. } => diagnostic.with_hint(
            "check the spelling, or load the module that defines it; `probe list 'PATTERN'` lists what exists",
        ),
        PlanError::Untraceable { .. } | PlanError::AllUntraceable { .. } => {
            diagnostic.with_hint("trace a caller, or a tracepoint near it (`probe list 'tracepoint:*NAME*'`)")
        }
        _ => diagnostic,
    }
}
