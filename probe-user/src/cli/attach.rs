//! `kprobe-attach FUNC` and `probe attach FUNC`: trace every call of one
//! kernel function with the default tracer and print one line per call.

use std::{
    io::{self, Write as _},
    os::fd::AsRawFd as _,
    path::Path,
};

use anyhow::Context as _;
use log::info;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use super::{CliError, Exit};
use crate::{
    btf::Btf,
    format::CallFormatter,
    kallsyms::Kallsyms,
    kernel,
    kprobe_link::MAX_ACTIVE_LIMIT,
    planner::{KernelFunctions, Request},
    suggest,
    tracer::{self, AttachError, Attached, DEFAULT_BUFFER_SIZE, Mechanism, MechanismChoice, TraceRequest},
};

/// Options of the attach command.
#[derive(Clone, Debug, clap::Args)]
pub struct AttachArgs {
    /// Kernel function to trace, as /proc/kallsyms names it (for example
    /// do_sys_openat2), `MODULE:FUNC` for a module function, or a glob
    /// such as 'tcp_*'. Compiler clones (FUNC.isra.0 and the like) are
    /// traced with FUNC.
    #[arg(value_name = "FUNC")]
    pub function: String,

    /// Script to run at each call instead of printing the call: an action
    /// block with an optional predicate, in bpftrace's language, such as
    /// '/pid == 42/ { printf("%s\n", str(args.filename)); }', or @FILE to
    /// read it from a file.
    #[arg(value_name = "SCRIPT")]
    pub script: Option<String>,

    /// Trace returns instead of entries, and print each return value after
    /// the arguments.
    #[arg(long = "return", short = 'r')]
    pub return_probe: bool,

    /// Trace only the process with this process id.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,

    /// Stop after printing this many calls (with a SCRIPT: this many
    /// output records).
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// How to attach: fentry/fexit, kprobe/kretprobe, or the best that the
    /// kernel supports.
    #[arg(long, value_enum, default_value_t = MechanismChoice::Auto)]
    pub mechanism: MechanismChoice,

    /// Attach only to the function that starts at this address (hex, as
    /// /proc/kallsyms prints it), when several functions share the name.
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    pub address: Option<u64>,

    /// Fail when some functions that FUNC matches cannot be attached to,
    /// instead of attaching to the rest.
    #[arg(long)]
    pub strict: bool,

    /// With --return: return instances to keep for each kretprobe (1 to
    /// 4096; the kernel's default is max(10, 2 * CPUs)). Raise it when the
    /// exit report shows missed returns.
    #[arg(long, value_name = "N", requires = "return_probe", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ACTIVE_LIMIT)))]
    pub maxactive: Option<u32>,

    /// Size of the event ring buffer in bytes: a power of two, at least one
    /// page (4096).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_BUFFER_SIZE)]
    pub buffer_size: u32,

    /// Explain what was chosen and loaded; repeat for debug output.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

fn parse_address(text: &str) -> Result<u64, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| format!("`{text}` is not a hexadecimal address; copy one from /proc/kallsyms, such as ffffffff81234560"))
}

/// Why the event stream ended.
enum StreamEnd {
    Signal(&'static str),
    CountReached,
    OutputClosed,
    TargetExited,
}

/// Runs the attach command to completion.
pub fn run(args: &AttachArgs) -> Result<(), CliError> {
    validate(args)?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(trace(args))
}

fn validate(args: &AttachArgs) -> Result<(), CliError> {
    if !args.buffer_size.is_power_of_two() || args.buffer_size < 4096 {
        return Err(CliError::usage(format!(
            "invalid --buffer-size {}: use a power of two of at least 4096, for example 1048576",
            args.buffer_size
        )));
    }
    if !kernel::is_root() {
        return Err(CliError::runtime(
            "must run as root: loading BPF programs needs CAP_BPF and CAP_PERFMON; try again with sudo",
        ));
    }
    if let Some(pid) = args.pid {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(CliError::usage(format!(
                "invalid -p {pid}: no process has that id (check with `ps -p {pid}`)"
            )));
        }
    }
    Ok(())
}

async fn trace(args: &AttachArgs) -> Result<(), CliError> {
    // Handlers go in before anything is attached, so that a signal arriving
    // at any point from here on ends the run through the same clean path.
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("failed to handle SIGHUP")?;
    crate::interrupt::watch();

    if let Some(script) = &args.script {
        let script = read_script(script)?;
        return super::attach_script::run(args, &script, false, [&mut interrupt, &mut terminate, &mut hangup]).await;
    }
    // The default tracer attaches to one vmlinux function by name. Globs,
    // clones, functions that share a name and module functions go through
    // the script path, with a script that prints what the tracer would.
    if needs_planner(args)? {
        let script = if args.return_probe {
            r#"{ printf("%-16s %7d %7d %s = %d\n", comm, pid, tid, func, retval); }"#
        } else {
            r#"{ printf("%-16s %7d %7d %s\n", comm, pid, tid, func); }"#
        };
        return super::attach_script::run(args, script, true, [&mut interrupt, &mut terminate, &mut hangup]).await;
    }

    let btf = match Btf::from_sys_fs() {
        Ok(btf) => Some(btf),
        Err(err) => {
            info!("no kernel BTF, arguments will print as raw registers: {err}");
            None
        }
    };
    let signature = btf.as_ref().and_then(|btf| btf.find_function(&args.function));
    if signature.is_none() {
        ensure_text_symbol(&args.function, btf.as_ref())?;
        info!("`{}` has no BTF prototype: fentry is not possible", args.function);
    }
    let formatter = CallFormatter::new(
        &args.function,
        btf.as_ref().zip(signature.as_ref()),
    );

    let request = TraceRequest {
        function: args.function.clone(),
        return_probe: args.return_probe,
        pid: args.pid,
        mechanism: args.mechanism,
        buffer_size: args.buffer_size,
        has_btf: signature.is_some(),
    };
    let mut attached = tracer::attach(&request).map_err(|err| match err {
        AttachError::NoMechanism { .. } => CliError::runtime(format!(
            "{err}\ntracepoints, raw tracepoints, uprobes and perf events still work on this kernel; \
             for system calls, the syscalls:sys_enter_* and syscalls:sys_exit_* tracepoints cover \
             most of what their kernel functions do"
        )),
        other => CliError::runtime(other.to_string()),
    })?;
    let mechanism = match (attached.mechanism, args.return_probe) {
        (Mechanism::Fentry, false) => "fentry",
        (Mechanism::Fentry, true) => "fexit",
        (Mechanism::Kprobe, false) => "kprobe",
        (Mechanism::Kprobe, true) => "kretprobe",
    };
    status!(
        "Tracing {} of {} with {mechanism}. Ctrl-C to end.",
        if args.return_probe { "returns" } else { "calls" },
        args.function,
    );

    let mut seen: u64 = 0;
    let target = args.pid.and_then(super::child::WatchedProcess::new);
    let end = stream_events(
        &mut attached,
        &formatter,
        args.count,
        &mut seen,
        [&mut interrupt, &mut terminate, &mut hangup],
        target.as_ref(),
    )
    .await?;

    attached.detach();
    let losses = attached.losses();
    match end {
        StreamEnd::Signal(name) => info!("received {name}, detached"),
        StreamEnd::CountReached => info!("printed {seen} calls, detached"),
        StreamEnd::OutputClosed => info!("output closed, detached"),
        StreamEnd::TargetExited => info!("the -p process exited, detached"),
    }
    let mut summary = format!(
        "{seen} {} traced, {} {} lost (ring buffer full)",
        if seen == 1 { "call" } else { "calls" },
        losses.events,
        if losses.events == 1 { "event" } else { "events" },
    );
    if losses.arguments > 0 {
        summary.push_str(&format!(
            ", {} returns printed without arguments (entry map full)",
            losses.arguments
        ));
    }
    status!("{summary}");
    Ok(())
}

/// Returns the script text: the argument itself, or the contents of the
/// file that `@FILE` names.
fn read_script(argument: &str) -> Result<String, CliError> {
    let script = match argument.strip_prefix('@') {
        Some("") => return Err(CliError::usage("missing file name after `@`: use @FILE to read the script from FILE")),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| CliError::usage(format!("failed to read script file {path}: {err}")))?,
        None => argument.to_owned(),
    };
    if script.trim().is_empty() {
        return Err(CliError::usage(
            "the SCRIPT is empty: give an action block such as '{ printf(\"%s\\n\", comm); }', or leave it out to print every call",
        ));
    }
    let first_word = script
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == '{' || c == '/' || c == ',')
        .next()
        .unwrap_or("");
    if first_word.contains(':') || first_word == "BEGIN" || first_word == "END" {
        return Err(CliError::usage(format!(
            "the SCRIPT starts with a probe (`{first_word}`), but kprobe-attach takes one action block for its function: \
             an optional /predicate/ and {{ ... }}; run a script with its own probes with `probe run -e`"
        )));
    }
    Ok(script)
}

/// Checks that `function` is a text symbol in kallsyms, and otherwise
/// returns a "not found" error with close matches.
pub(crate) fn ensure_text_symbol(function: &str, btf: Option<&Btf>) -> Result<(), CliError> {
    let kallsyms = Kallsyms::read().context("failed to read /proc/kallsyms")?;
    if kallsyms.text_symbols(function).next().is_some() {
        return Ok(());
    }
    if let Some(symbol) = kallsyms.symbol(function) {
        return Err(CliError::usage(format!(
            "`{function}` is a data symbol (type {} in /proc/kallsyms), not a function; only functions can be traced",
            symbol.kind
        )));
    }
    let btf_names = btf.into_iter().flat_map(|btf| btf.function_names());
    let candidates = kallsyms.text_names().chain(btf_names);
    let matches = suggest::close_matches(function, candidates, 5);
    let mut message = format!(
        "kernel function `{function}` not found in /proc/kallsyms or the kernel's BTF"
    );
    if matches.is_empty() {
        message.push_str("; check the spelling, or load the module that defines it");
    } else {
        message.push_str(&format!("; did you mean: {}?", matches.join(", ")));
    }
    Err(CliError::usage(message))
}

/// Parses FUNC and `--address` into a planner request, rejecting
/// combinations that cannot pick anything.
pub(crate) fn parse_request(args: &AttachArgs) -> Result<Request, CliError> {
    let mut request = Request::parse(&args.function);
    if request.module.as_deref() == Some("") || request.name.is_empty() {
        return Err(CliError::usage(format!(
            "invalid FUNC `{}`: use FUNC or MODULE:FUNC, for example vfs_read or dummy:dummy_xmit",
            args.function
        )));
    }
    if args.address.is_some() && request.is_wildcard() {
        return Err(CliError::usage(format!(
            "--address picks one of several functions that share a name; it cannot be combined with the glob `{}`",
            args.function
        )));
    }
    request.address = args.address;
    Ok(request)
}

/// Tells whether `args.function` needs more than the default tracer's
/// attach by name: it is a glob, a module function, a function with
/// compiler clones or namesakes, or `--address` picks one copy. Errors
/// when it matches nothing traceable.
fn needs_planner(args: &AttachArgs) -> Result<bool, CliError> {
    let request = parse_request(args)?;
    let simple = !request.is_wildcard() && request.module.is_none() && args.address.is_none() && args.maxactive.is_none();
    let functions = match KernelFunctions::read() {
        Ok(functions) => functions,
        Err(err) if simple => {
            info!("cannot read /proc/kallsyms ({err}); attaching by name");
            return Ok(false);
        }
        Err(err) => return Err(CliError::runtime(format!("failed to read /proc/kallsyms: {err}"))),
    };
    let plan = functions.plan(&request).map_err(|err| super::attach_script::plan_error(&err))?;
    let one_plain = plan.targets.len() == 1 && plan.targets[0].symbol == request.name && plan.targets[0].module.is_none();
    Ok(!(simple && one_plain))
}

/// Prints events until a signal, the count limit, or a closed output ends
/// the stream.
async fn stream_events(
    attached: &mut Attached,
    formatter: &CallFormatter,
    limit: Option<u64>,
    seen: &mut u64,
    signals: [&mut tokio::signal::unix::Signal; 3],
    target: Option<&super::child::WatchedProcess>,
) -> Result<StreamEnd, CliError> {
    let [interrupt, terminate, hangup] = signals;
    // SAFETY: both descriptors belong to maps owned by `attached`, which
    // outlives these registrations: they are dropped when this function
    // returns, and `attached` is borrowed for all of it.
    let events_fd = unsafe { AsyncFd::register_with_interest(attached.events.as_raw_fd(), Interest::READABLE) }
        .map_err(io::Error::from)
        .context("failed to poll the event ring buffer")?;
    let logger_fd = match &attached.logger {
        // SAFETY: as above.
        Some(logger) => Some(
            unsafe { AsyncFd::register_with_interest(logger.as_raw_fd(), Interest::READABLE) }
                .map_err(io::Error::from)
                .context("failed to poll the log ring buffer")?,
        ),
        None => None,
    };

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    if writeln!(out, "{}", CallFormatter::header()).and_then(|()| out.flush()).is_err() {
        return Ok(StreamEnd::OutputClosed);
    }
    let mut line = String::with_capacity(256);

    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(StreamEnd::Signal("SIGINT")),
            _ = async {
                match target {
                    Some(target) => target.exited().await,
                    None => std::future::pending().await,
                }
            } => return Ok(StreamEnd::TargetExited),
            _ = terminate.recv() => return Ok(StreamEnd::Signal("SIGTERM")),
            _ = hangup.recv() => return Ok(StreamEnd::Signal("SIGHUP")),
            ready = async {
                match &logger_fd {
                    Some(fd) => fd.readable().await,
                    None => std::future::pending().await,
                }
            } => {
                let mut guard = ready.context("failed to poll the log ring buffer")?;
                if let Some(logger) = attached.logger.as_mut() {
                    logger.flush();
                }
                guard.clear_ready();
            }
            ready = events_fd.readable() => {
                let mut guard = ready.context("failed to poll the event ring buffer")?;
                while let Some(item) = attached.events.next() {
                    let Some(event) = decode(&item) else {
                        continue;
                    };
                    line.clear();
                    formatter.write_event(&event, &mut line);
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_err() {
                        return Ok(StreamEnd::OutputClosed);
                    }
                    *seen += 1;
                    if limit.is_some_and(|limit| *seen >= limit) {
                        let _ = out.flush();
                        return Ok(StreamEnd::CountReached);
                    }
                }
                if out.flush().is_err() {
                    return Ok(StreamEnd::OutputClosed);
                }
                guard.clear_ready();
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Option<probe_common::CallEvent> {
    if bytes.len() < size_of::<probe_common::CallEvent>() {
        return None;
    }
    // SAFETY: the slice holds at least `size_of::<CallEvent>()` bytes, the
    // read is unaligned, and every bit pattern is a valid `CallEvent`.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

impl Exit for AttachArgs {
    fn verbosity(&self) -> u8 {
        self.verbose
    }
}
