//! `kprobe-attach FUNC SCRIPT`: run a script at each call (or, with
//! `--return`, each return) of one kernel function.
//!
//! The script is an action block with an optional predicate. It is compiled
//! as a fentry (fexit) probe when the function has a BTF prototype and the
//! kernel accepts tracing programs, and as a kprobe (kretprobe) otherwise;
//! `args.NAME` and `retval` mean the same under both.

use std::fmt::Write as _;

use log::info;

use super::{
    CliError,
    attach::AttachArgs,
    run::{self, End, Output},
};
use crate::{
    kernel::{self, KprobeSupport},
    planner::PlanError,
    runtime,
    script::{
        compile::{self, CompileOptions},
        env::Environment,
        span::Source,
    },
    tracer::{Mechanism, MechanismChoice},
};

/// Compiles, attaches and runs `script` on `args.function`, which may be
/// a glob or `MODULE:FUNC` and may match several functions.
/// `default_script` marks the script that replaces the default tracer,
/// so the messages do not call it a script.
pub async fn run(
    args: &AttachArgs,
    script: &str,
    default_script: bool,
    signals: [&mut tokio::signal::unix::Signal; 3],
) -> Result<(), CliError> {
    let mut env = Environment::running_kernel();
    env.function_address = args.address;
    let request = super::attach::parse_request(args)?;
    let plan = match env.functions() {
        Some(functions) => Some(functions.plan(&request).map_err(|err| plan_error(&err))?),
        None => {
            if request.is_wildcard() || request.module.is_some() || args.address.is_some() {
                return Err(CliError::runtime(format!(
                    "`{}` needs the kernel's symbol table (/proc/kallsyms), which cannot be read; run as root",
                    args.function
                )));
            }
            None
        }
    };
    // One plain vmlinux function gets fentry when it has a BTF prototype;
    // several functions, clones and module functions get kprobes, which
    // attach to all of them at once.
    // fentry attaches by name, so a copy picked by address needs a kprobe.
    let several = args.address.is_some()
        || plan.as_ref().is_some_and(|plan| {
        plan.wildcard
            || plan.targets.len() > 1
            || plan.targets.iter().any(|target| target.module.is_some() || target.is_clone())
    });
    let has_btf = !several && env.btf().is_some_and(|btf| btf.find_function(&request.name).is_some());
    if let Some(plan) = &plan {
        for target in &plan.targets {
            info!("target {} at {:#x}", target.qualified_name(), target.address);
        }
    }
    if several {
        info!(
            "kprobes first: fentry cannot reach clones, namesakes or module functions, and {}",
            if env.kprobe_multi() {
                "this kernel attaches many functions with one kprobe.multi link"
            } else {
                "this kernel does not attach kprobe.multi links (Linux 5.18 and CONFIG_FPROBE needed), so each function gets its own kprobe"
            }
        );
    } else if has_btf {
        info!("fentry first: `{}` has a BTF prototype", request.name);
    } else {
        info!("kprobe: `{}` has no BTF prototype, which fentry needs", request.name);
    }

    let mut candidates = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    // --maxactive only means something to kretprobes.
    let kprobe_first = several || args.maxactive.is_some();
    if kprobe_first && args.mechanism != MechanismChoice::Fentry {
        candidates.push(Mechanism::Kprobe);
    }
    if args.mechanism != MechanismChoice::Kprobe {
        if has_btf || several {
            candidates.push(Mechanism::Fentry);
        } else {
            reasons.push(format!(
                "fentry: `{}` has no BTF prototype in the kernel's BTF, which fentry needs",
                args.function
            ));
        }
    }
    if !kprobe_first && args.mechanism != MechanismChoice::Fentry {
        candidates.push(Mechanism::Kprobe);
    }

    let body = script.trim();
    let body = if body.starts_with('{') || body.starts_with('/') {
        body.to_owned()
    } else {
        format!("{{ {body} }}")
    };

    let mut options = CompileOptions::default();
    options.events_buffer = args.buffer_size;
    options.map_size = compile::DEFAULT_MAP_SIZE;
    options.strict = args.strict;
    options.maxactive = args.maxactive;
    options.codegen.pid = args.pid;
    options.codegen.start_ktime_ns = run::monotonic_ns();

    for mechanism in candidates {
        if mechanism == Mechanism::Kprobe {
            if let KprobeSupport::Missing(facts) = kernel::kprobe_support() {
                reasons.push(format!("kprobe: this kernel has no kprobes ({facts})"));
                continue;
            }
        }
        let provider = match (mechanism, args.return_probe) {
            (Mechanism::Fentry, false) => "fentry",
            (Mechanism::Fentry, true) => "fexit",
            (Mechanism::Kprobe, false) => "kprobe",
            (Mechanism::Kprobe, true) => "kretprobe",
        };
        let source = Source::new("SCRIPT", format!("{provider}:{} {body}\n", args.function));
        let compiled = run::compile_source_in(&source, &env, &options)?;
        match runtime::load(&compiled, &source, false, args.verbose > 0) {
            Ok(mut loaded) => {
                info!("attached the script with {provider}");
                for reason in &reasons {
                    status!("note: {reason}; used {provider} instead");
                }
                let what = match loaded.functions {
                    count if count > 1 => format!("{} ({count} functions)", args.function),
                    _ => args.function.clone(),
                };
                let event = if args.return_probe { "return" } else { "call" };
                if default_script {
                    status!("Tracing each {event} of {what} with {provider}. Ctrl-C to end.");
                } else {
                    status!("Running the script at each {event} of {what} with {provider}. Ctrl-C to end.");
                }
                let mut output = Output::open(None)?;
                let target = args.pid.and_then(super::child::WatchedProcess::new);
                let end = run::stream(&mut loaded, &compiled, &mut output, None, signals, args.count, target.as_ref()).await?;
                info!("stopping: {end}");
                loaded.detach();
                if !matches!(end, End::OutputClosed | End::CountReached) {
                    run::drain(&mut loaded, &compiled, &mut output, args.count);
                }
                if !matches!(end, End::OutputClosed) {
                    run::finish_maps(&loaded, &mut output);
                }
                for line in loaded.missed_report() {
                    status!("{line}");
                }
                let lost = loaded.lost();
                let mut summary = format!(
                    "{} output record{} printed",
                    output.printed,
                    if output.printed == 1 { "" } else { "s" }
                );
                if lost > 0 {
                    let _ = write!(summary, ", {lost} lost because the ring buffer was full (raise --buffer-size)");
                }
                status!("{summary}");
                return Ok(());
            }
            Err(err) => {
                info!("{provider} failed: {err}");
                reasons.push(format!("{mechanism}: {err}"));
            }
        }
    }

    if plan.is_none() {
        if let Some(reason) = kernel::untraceable_reason(&args.function) {
            reasons.push(reason);
        }
    }
    Err(CliError::runtime(format!(
        "cannot attach to kernel function `{}` on this kernel (Linux {}):\n{}\n\
         tracepoints, raw tracepoints, uprobes and perf events still work on this kernel: \
         try `probe run -e 'tracepoint:CATEGORY:NAME {{ ... }}'`",
        args.function,
        kernel::release(),
        reasons
            .iter()
            .map(|reason| format!("  - {reason}"))
            .collect::<Vec<_>>()
            .join("\n")
    )))
}

/// Turns a planner error into the command's error, with a next step.
pub(crate) fn plan_error(err: &PlanError) -> CliError {
    let hint = match err {
        PlanError::NotFound { .. } => {
            "; check the spelling, or load the module that defines it; `probe list 'PATTERN'` lists what can be traced"
        }
        PlanError::Untraceable { .. } | PlanError::AllUntraceable { .. } => {
            "; trace a caller instead, or a tracepoint near it (`probe list 'tracepoint:*'`)"
        }
        _ => "",
    };
    match err {
        PlanError::ModuleNotLoaded { .. } | PlanError::Untraceable { .. } | PlanError::AllUntraceable { .. } => {
            CliError::runtime(format!("{err}{hint}"))
        }
        _ => CliError::usage(format!("{err}{hint}")),
    }
}
