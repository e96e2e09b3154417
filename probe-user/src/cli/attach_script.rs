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
    btf::Btf,
    kernel::{self, KprobeSupport},
    runtime,
    script::{
        compile::{self, CompileOptions},
        span::Source,
    },
    tracer::{Mechanism, MechanismChoice},
};

/// Compiles, attaches and runs `script` on `args.function`.
pub async fn run(
    args: &AttachArgs,
    script: &str,
    signals: [&mut tokio::signal::unix::Signal; 3],
) -> Result<(), CliError> {
    let btf = Btf::from_sys_fs().ok();
    let has_btf = btf
        .as_ref()
        .is_some_and(|btf| btf.find_function(&args.function).is_some());
    if !has_btf {
        super::attach::ensure_text_symbol(&args.function, btf.as_ref())?;
    }
    drop(btf);

    let mut candidates = Vec::new();
    let mut reasons: Vec<String> = Vec::new();
    if args.mechanism != MechanismChoice::Kprobe {
        if has_btf {
            candidates.push(Mechanism::Fentry);
        } else {
            reasons.push(format!(
                "fentry: `{}` has no BTF prototype in the kernel's BTF, which fentry needs",
                args.function
            ));
        }
    }
    if args.mechanism != MechanismChoice::Fentry {
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
        let compiled = run::compile_source(&source, &options)?;
        match runtime::load(&compiled, &source, false, args.verbose > 0) {
            Ok(mut loaded) => {
                info!("attached the script with {provider}");
                status!(
                    "Running the script at each {} of {} with {provider}. Ctrl-C to end.",
                    if args.return_probe { "return" } else { "call" },
                    args.function
                );
                let mut output = Output::open(None)?;
                let target = args.pid.and_then(super::child::WatchedProcess::new);
                let end = run::stream(&mut loaded, &compiled, &mut output, None, signals, args.count, target.as_ref()).await?;
                info!("stopping: {end}");
                loaded.detach();
                if !matches!(end, End::OutputClosed | End::CountReached) {
                    run::drain(&mut loaded, &compiled, &mut output);
                }
                if !matches!(end, End::OutputClosed) {
                    run::finish_maps(&loaded, &mut output);
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

    if let Some(reason) = kernel::untraceable_reason(&args.function) {
        reasons.push(reason);
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
