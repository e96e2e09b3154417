//! `probe run`: compile a script, attach it, stream its output until it
//! calls `exit()`, its `-c` command ends, or a signal arrives.

use std::{
    fs,
    io::{self, Write},
    os::fd::AsRawFd as _,
    path::PathBuf,
};

use anyhow::Context as _;
use log::info;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use super::{
    CliError,
    child::{HeldChild, WatchedProcess},
};
use crate::{
    kprobe_link::MAX_ACTIVE_LIMIT,
    kernel,
    runtime::{self, Format, Loaded, Record},
    script::{
        aggregate::json,
        compile::{self, CompileOptions, Compiled},
        diagnostic,
        env::Environment,
        span::Source,
    },
};

/// Options of `probe run`.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Script file to run (use -e for a program on the command line).
    // Not `required_unless_present`: `--emit asm FILE` takes the script
    // as the option's second value, which clap does not know.
    #[arg(value_name = "FILE", conflicts_with = "program")]
    pub file: Option<PathBuf>,

    /// Program text to run, for example
    /// 'tracepoint:syscalls:sys_enter_openat { printf("%s\n", comm); }'.
    #[arg(short = 'e', value_name = "PROGRAM")]
    pub program: Option<String>,

    /// Run this command once every probe is attached, give its process id
    /// to the script as `cpid`, and end when it exits.
    #[arg(short = 'c', value_name = "COMMAND")]
    pub command: Option<String>,

    /// Only run probes in the process with this id.
    #[arg(short = 'p', value_name = "PID")]
    pub pid: Option<u32>,

    /// Write the output to this file instead of standard output.
    #[arg(short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print the compiled code instead of running it: `asm` prints each
    /// program's instructions with the script line that produced them,
    /// `obj FILE` writes the ELF object to FILE.
    #[arg(long, value_name = "KIND [FILE]", num_args = 1..=2)]
    pub emit: Vec<String>,

    /// Compile and load the programs into the kernel, then unload them
    /// without attaching.
    #[arg(long)]
    pub dry_run: bool,

    /// Size of the output ring buffer in bytes: a power of two, at least
    /// one page (4096).
    #[arg(long, value_name = "BYTES", default_value_t = compile::DEFAULT_EVENTS_BUFFER)]
    pub buffer_size: u32,

    /// Output format: `text` prints as bpftrace does, `json` prints one
    /// JSON object per line (see the README for the schema).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Maximum number of entries of each map; updates beyond it are
    /// dropped and counted.
    #[arg(long, value_name = "N", default_value_t = compile::DEFAULT_MAP_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    pub map_size: u32,

    /// Fail when some kernel functions that a glob or a shared name
    /// matches cannot be attached to, instead of attaching to the rest.
    #[arg(long)]
    pub strict: bool,

    /// Return instances to keep for each kretprobe (1 to 4096; the
    /// kernel's default is max(10, 2 * CPUs)). Raise it when the exit
    /// report shows missed returns.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ACTIVE_LIMIT)))]
    pub maxactive: Option<u32>,

    /// Allow uprobes that can crash the traced program: uretprobes on Go
    /// programs (Go moves goroutine stacks, which breaks the return
    /// address a uretprobe plants), and addresses outside any function,
    /// which cannot be checked to start an instruction.
    #[arg(long)]
    pub unsafe_uprobes: bool,

    /// Explain what was resolved, chosen and loaded; repeat for debug
    /// output.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// What `--emit` asked for.
enum Emit {
    Nothing,
    Asm,
    Object(PathBuf),
}

pub fn run(args: &RunArgs) -> Result<(), CliError> {
    let mut args = args.clone();
    let emit = parse_emit(&mut args)?;
    if !args.buffer_size.is_power_of_two() || args.buffer_size < 4096 {
        return Err(CliError::usage(format!(
            "invalid --buffer-size {}: use a power of two of at least 4096, for example 1048576",
            args.buffer_size
        )));
    }
    let source = read_source(&args)?;
    if let Some(pid) = args.pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(CliError::usage(format!("invalid -p {pid}: no process has that id")));
        }
    }
    let only_compile = !matches!(emit, Emit::Nothing);
    if !only_compile && !kernel::is_root() {
        return Err(CliError::runtime(
            "must run as root: loading BPF programs needs CAP_BPF and CAP_PERFMON; try again with sudo",
        ));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(run_script(&args, &source, emit))
}

fn parse_emit(args: &mut RunArgs) -> Result<Emit, CliError> {
    let values = std::mem::take(&mut args.emit);
    let Some(kind) = values.first() else {
        return Ok(Emit::Nothing);
    };
    match kind.as_str() {
        "asm" => {
            // `--emit asm script.bt`: the second value is the script.
            if let Some(file) = values.get(1) {
                if args.file.is_some() || args.program.is_some() {
                    return Err(CliError::usage(format!("unexpected argument `{file}` after --emit asm")));
                }
                args.file = Some(PathBuf::from(file));
            }
            Ok(Emit::Asm)
        }
        "obj" => match values.get(1) {
            Some(path) => Ok(Emit::Object(PathBuf::from(path))),
            None => Err(CliError::usage("--emit obj needs a file to write: --emit obj FILE")),
        },
        other => Err(CliError::usage(format!("invalid --emit `{other}`: use `asm` or `obj FILE`"))),
    }
}

fn read_source(args: &RunArgs) -> Result<Source, CliError> {
    if let Some(program) = &args.program {
        return Ok(Source::new("-e", program.clone()));
    }
    let Some(path) = &args.file else {
        return Err(CliError::usage("no program: give a script FILE or -e 'PROGRAM'"));
    };
    let text = fs::read_to_string(path).map_err(|err| {
        CliError::usage(format!("failed to read script {}: {err}", path.display()))
    })?;
    Ok(Source::new(path.display().to_string(), text))
}

/// Compiles `source`, printing warnings, or returns the rendered errors.
pub fn compile_source(source: &Source, options: &CompileOptions) -> Result<Compiled, CliError> {
    compile_source_in(source, &Environment::running_kernel(), options)
}

/// Compiles `source` against `env`, which callers that compile several
/// times share so that the kernel's lists are read once.
pub fn compile_source_in(source: &Source, env: &Environment, options: &CompileOptions) -> Result<Compiled, CliError> {
    let started = std::time::Instant::now();
    let result = compile::compile(source, env, options);
    info!("compiled in {:.1} ms", started.elapsed().as_secs_f64() * 1000.0);
    match result {
        Ok(compiled) => {
            if !compiled.warnings.is_empty() {
                status_text!("{}", diagnostic::render_all(&compiled.warnings, source));
            }
            Ok(compiled)
        }
        Err(diagnostics) => {
            status_text!("{}", diagnostic::render_all(&diagnostics, source));
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            Err(CliError::usage(format!(
                "the script has {errors} error{}",
                if errors == 1 { "" } else { "s" }
            )))
        }
    }
}

/// Monotonic time in nanoseconds, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

async fn run_script(args: &RunArgs, source: &Source, emit: Emit) -> Result<(), CliError> {
    let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("failed to handle SIGHUP")?;
    crate::interrupt::watch();

    let mut child = match (&args.command, &emit) {
        (Some(command), Emit::Nothing) => Some(HeldChild::spawn(command)?),
        _ => None,
    };

    let mut options = CompileOptions::default();
    options.events_buffer = args.buffer_size;
    options.map_size = args.map_size;
    options.strict = args.strict;
    options.maxactive = args.maxactive;
    options.codegen.pid = args.pid;
    options.codegen.cpid = child.as_ref().map(|c| c.pid);
    options.codegen.start_ktime_ns = monotonic_ns();
    let mut env = Environment::running_kernel();
    env.target_pid = args.pid;
    env.unsafe_uprobes = args.unsafe_uprobes;
    let compiled = compile_source_in(source, &env, &options);
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(err) => {
            if let Some(child) = child.take() {
                child.abandon();
            }
            return Err(err);
        }
    };

    match emit {
        Emit::Asm => {
            print!("{}", compiled.listing(source));
            return Ok(());
        }
        Emit::Object(path) => {
            fs::write(&path, &compiled.object)
                .map_err(|err| CliError::runtime(format!("failed to write {}: {err}", path.display())))?;
            status!("wrote {} ({} bytes)", path.display(), compiled.object.len());
            return Ok(());
        }
        Emit::Nothing => {}
    }

    // The output opens first, so that a bad -o path fails before anything
    // is loaded or attached. A dry run writes no output.
    let output = if args.dry_run { None } else { Some(Output::open(args.output.as_deref())?) };

    // User frames of the -c command name their files by build id, which
    // these files provide once the command has exited. They are read
    // before anything is attached, so that the probes do not see it.
    let command_files = match &args.command {
        Some(command) if compiled.uses_user_stacks() => crate::uprobe::program_files(command),
        _ => Vec::new(),
    };
    let loaded = runtime::load(&compiled, source, args.dry_run, args.verbose > 0);
    let mut loaded = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            if let Some(child) = child.take() {
                child.abandon();
            }
            return Err(CliError::runtime(err.to_string()));
        }
    };
    loaded.symbols.add_files(command_files);
    let Some(mut output) = output else {
        status!(
            "compiled and loaded {} program{}; nothing was attached",
            compiled.probes.len(),
            if compiled.probes.len() == 1 { "" } else { "s" }
        );
        return Ok(());
    };

    let count = compiled.probes.len();
    output.format = args.format;
    match output.format {
        Format::Text => status!("Attaching {count} probe{}...", if count == 1 { "" } else { "s" }),
        Format::Json => {
            let line = json::attached_probes_line(count as u64);
            let _ = output.writer.write_all(line.as_bytes());
            let _ = output.writer.flush();
        }
    }
    loaded.run_begin().map_err(|err| CliError::runtime(err.to_string()))?;

    if let Some(child) = child.as_mut() {
        child.release()?;
    }
    let target = args.pid.and_then(WatchedProcess::new);
    let mut end = stream(&mut loaded, &compiled, &mut output, child.as_mut(), [&mut interrupt, &mut terminate, &mut hangup], None, target.as_ref()).await?;
    info!("stopping: {end}");

    // As in bpftrace, the probes are detached before END runs, so that
    // END's output comes last. The records after an exit() are dropped,
    // because the run ended there; bpftrace drops them too.
    loaded.detach_probes();
    if !matches!(end, End::Exit | End::OutputClosed) {
        // What the probes wrote before the detach and the tool has not
        // read yet: the -c command may have exited, or a signal come,
        // before an exit() record in it was read.
        if let Some(stop) = print_records(&mut loaded, &compiled, &mut output, None) {
            end = stop;
        }
    }
    if matches!(end, End::Exit) {
        let dropped = loaded.discard_records();
        if dropped > 0 {
            info!("dropped {dropped} output records written after exit()");
        }
    }
    if !matches!(end, End::OutputClosed) {
        loaded.run_end().map_err(|err| CliError::runtime(err.to_string()))?;
    }
    loaded.detach();
    if !matches!(end, End::OutputClosed) {
        drain(&mut loaded, &compiled, &mut output, None);
    }
    for line in loaded.missed_report() {
        status!("{line}");
    }
    if let Some(child) = child.take() {
        child.finish();
    }
    if !matches!(end, End::OutputClosed) {
        finish_maps(&loaded, &mut output);
    }
    let lost = loaded.lost();
    if lost > 0 {
        status!("{lost} output record{} lost because the ring buffer was full (raise --buffer-size)", if lost == 1 { " was" } else { "s were" });
        if output.format == Format::Json {
            let _ = output.writer.write_all(json::lost_events_line(lost).as_bytes());
            let _ = output.writer.flush();
        }
    }
    Ok(())
}

/// Prints every non-empty map, as bpftrace does at the end of a run, and
/// reports maps that dropped updates because they were full.
pub(crate) fn finish_maps(loaded: &Loaded, output: &mut Output) {
    match loaded.exit_maps(output.format) {
        Ok(text) => {
            let _ = output.writer.write_all(text.as_bytes());
            let _ = output.writer.flush();
        }
        Err(err) => status!("probe: failed to print the maps: {err}"),
    }
    for line in loaded.dropped_updates() {
        status!("{line}");
    }
}

/// Why streaming stopped.
pub enum End {
    Signal(&'static str),
    Exit,
    ChildExited,
    OutputClosed,
    CountReached,
    TargetExited,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Signal(name) => write!(f, "received {name}"),
            End::Exit => f.write_str("the script called exit()"),
            End::ChildExited => f.write_str("the -c command exited"),
            End::OutputClosed => f.write_str("the output was closed"),
            End::CountReached => f.write_str("the --count limit was reached"),
            End::TargetExited => f.write_str("the -p process exited"),
        }
    }
}

/// Where output goes: standard output or a file, flushed after every
/// batch of records so that a reader sees each line as it happens.
pub struct Output {
    writer: Box<dyn Write>,
    line: String,
    /// Records printed so far.
    pub printed: u64,
    pub format: Format,
}

impl Output {
    pub fn open(path: Option<&std::path::Path>) -> Result<Output, CliError> {
        let writer: Box<dyn Write> = match path {
            Some(path) => Box::new(io::BufWriter::new(fs::File::create(path).map_err(|err| {
                CliError::usage(format!("failed to create output file {}: {err}", path.display()))
            })?)),
            None => Box::new(io::BufWriter::new(io::stdout())),
        };
        Ok(Output { writer, line: String::with_capacity(256), printed: 0, format: Format::Text })
    }
}

/// Prints every record now in the ring buffer. Returns `Some` when a
/// record, the output or the record limit ends the run.
fn print_records(loaded: &mut Loaded, compiled: &Compiled, output: &mut Output, limit: Option<u64>) -> Option<End> {
    let mut end = None;
    loop {
        let Some(item) = loaded.events.next() else {
            break;
        };
        output.line.clear();
        let record = runtime::render_record(&compiled.outputs, &item, &mut output.line, &loaded.symbols);
        let length = item.len();
        drop(item);
        match record {
            Record::Text => {
                if output.format == Format::Json {
                    let message = std::mem::take(&mut output.line);
                    output.line = json::printf_line(&message, None, None);
                }
                if output.writer.write_all(output.line.as_bytes()).is_err() {
                    return Some(End::OutputClosed);
                }
                output.printed += 1;
                if limit.is_some_and(|limit| output.printed >= limit) {
                    end = Some(End::CountReached);
                }
            }
            Record::Exit => end = Some(End::Exit),
            Record::MapAction(action) => match loaded.map_action(action, output.format) {
                Ok(text) => {
                    if output.writer.write_all(text.as_bytes()).is_err() {
                        return Some(End::OutputClosed);
                    }
                }
                Err(err) => log::warn!("{err}"),
            },
            Record::Invalid => log::warn!("skipped a malformed output record of {length} bytes"),
        }
        if end.is_some() {
            break;
        }
    }
    if output.writer.flush().is_err() {
        return Some(End::OutputClosed);
    }
    end
}

pub(crate) fn drain(loaded: &mut Loaded, compiled: &Compiled, output: &mut Output, limit: Option<u64>) {
    while let Some(end) = print_records(loaded, compiled, output, limit) {
        if matches!(end, End::OutputClosed | End::CountReached) {
            break;
        }
    }
}

/// Prints records until a signal, `exit()`, the end of the `-c` command,
/// a closed output, or `limit` printed records ends the run.
pub(crate) async fn stream(
    loaded: &mut Loaded,
    compiled: &Compiled,
    output: &mut Output,
    mut child: Option<&mut HeldChild>,
    signals: [&mut tokio::signal::unix::Signal; 3],
    limit: Option<u64>,
    target: Option<&WatchedProcess>,
) -> Result<End, CliError> {
    let [interrupt, terminate, hangup] = signals;
    // SAFETY: the ring buffer's descriptor belongs to `loaded`, which
    // outlives this registration: it is dropped when this function returns.
    let events = unsafe { AsyncFd::register_with_interest(loaded.events.as_raw_fd(), Interest::READABLE) }
        .map_err(io::Error::from)
        .context("failed to poll the output ring buffer")?;

    // BEGIN may already have produced output, or called exit().
    if let Some(end) = print_records(loaded, compiled, output, limit) {
        return Ok(end);
    }
    // Once a second, new losses are logged, which -v shows as they happen.
    let mut loss_check = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut lost_before = 0;
    // User addresses in map keys can only be named while their process
    // runs: they are named every 100 ms and kept for the printing.
    let mut name_user_keys = tokio::time::interval(std::time::Duration::from_millis(100));
    let has_user_keys = loaded.has_user_symbol_keys();
    loop {
        tokio::select! {
            _ = name_user_keys.tick(), if has_user_keys => loaded.name_user_symbols(),
            _ = loss_check.tick() => {
                if log::log_enabled!(log::Level::Info) {
                    let lost = loaded.lost();
                    if lost > lost_before {
                        info!("{} output records lost in the last second because the ring buffer was full ({lost} in all)", lost - lost_before);
                        lost_before = lost;
                    }
                }
            }
            _ = interrupt.recv() => return Ok(End::Signal("SIGINT")),
            _ = terminate.recv() => return Ok(End::Signal("SIGTERM")),
            _ = hangup.recv() => return Ok(End::Signal("SIGHUP")),
            _ = async {
                match target {
                    Some(target) => target.exited().await,
                    None => std::future::pending().await,
                }
            } => return Ok(End::TargetExited),
            exited = async {
                match child.as_mut() {
                    Some(child) => child.wait_exit().await,
                    None => std::future::pending().await,
                }
            } => {
                exited?;
                return Ok(End::ChildExited);
            }
            ready = events.readable() => {
                let mut guard = ready.context("failed to poll the output ring buffer")?;
                if let Some(end) = print_records(loaded, compiled, output, limit) {
                    return Ok(end);
                }
                guard.clear_ready();
            }
        }
    }
}
