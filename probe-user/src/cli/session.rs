//! `probe session`: start a script that outlives the command, list the
//! running sessions with their cost, read their maps and output, export
//! their counters to Prometheus, and stop them.

use std::{
    fs,
    io::Write as _,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    CliError,
    run::{self, Output},
};
use crate::{
    kernel,
    mitigate::{self, rules},
    runtime::{self, Loaded, pin::Pinned},
    script::{
        compile::{self, CompileOptions, Compiled},
        parser,
        span::Source,
    },
    session::{
        self, detached, export,
        store::{self, Meta},
    },
};

/// Options of `probe session`.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    #[command(subcommand)]
    command: SessionCommand,

    /// Explain what was resolved, chosen and loaded; repeat for debug
    /// output.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, clap::Subcommand)]
enum SessionCommand {
    /// Compile, load, attach and pin a script, then return: the probes keep
    /// running with no process of ours. BEGIN runs now, and its output is
    /// printed with whatever the probes printed meanwhile. END runs at `stop`.
    /// Interval and profile probes, and exit(), clear(), zero() and print()
    /// of a whole map outside END, need a live reader and are rejected.
    Start(StartArgs),
    /// List the sessions and mitigations: age, time left, probes, hits,
    /// lost events, and the run time of each probe's program.
    List,
    /// Print a session's maps now, as `probe run` prints them at exit.
    Show {
        /// The session's name.
        name: String,
    },
    /// Print a session's printf() output as it happens, until Ctrl-C,
    /// which ends this reader but not the session. One reader at a time.
    Attach {
        /// The session's name.
        name: String,
    },
    /// Run END, print the final maps, and detach and unpin everything.
    Stop {
        /// The session's name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Stop every session.
        #[arg(long)]
        all: bool,
    },
    /// Serve a session's counters and sums as Prometheus metrics over
    /// HTTP at /metrics, until killed.
    #[command(after_help = export::METRICS_HELP)]
    Export {
        /// The session's name.
        name: String,
        /// Address to listen on, for example 127.0.0.1:9464. Only this
        /// address is served.
        #[arg(long, value_name = "ADDRESS:PORT")]
        listen: String,
    },
}

/// Options of `probe session start`.
#[derive(Debug, clap::Args)]
struct StartArgs {
    /// Name of the session: 1 to 64 letters, digits, `_` or `-`.
    name: String,

    /// Script file to run (use -e for a program on the command line).
    #[arg(value_name = "FILE", conflicts_with = "program", required_unless_present = "program")]
    file: Option<PathBuf>,

    /// Program text to run.
    #[arg(short = 'e', value_name = "PROGRAM")]
    program: Option<String>,

    /// Stop the probes after this long, such as 30s, 10m, 2h or 1d. The
    /// programs check the deadline themselves, and the next `probe`
    /// command removes the session.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,

    /// Turn on kernel.bpf_stats_enabled until the last session started
    /// with --stats stops, so that `list` and `top` show hits and run time.
    #[arg(long)]
    stats: bool,

    /// Size of the output ring buffer in bytes: a power of two, at least
    /// 4096.
    #[arg(long, value_name = "BYTES", default_value_t = compile::DEFAULT_EVENTS_BUFFER)]
    buffer_size: u32,

    /// Maximum number of entries of each map.
    #[arg(long, value_name = "N", default_value_t = compile::DEFAULT_MAP_SIZE, value_parser = clap::value_parser!(u32).range(1..))]
    map_size: u32,
}

pub fn run(args: &SessionArgs) -> Result<(), CliError> {
    if !kernel::is_root() {
        return Err(CliError::runtime(
            "sessions need root: loading and pinning BPF programs needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN; try again with sudo",
        ));
    }
    match &args.command {
        SessionCommand::Start(start_args) => start(start_args, args.verbose > 0),
        SessionCommand::List => list(),
        SessionCommand::Show { name } => show(name),
        SessionCommand::Attach { name } => attach(name),
        SessionCommand::Stop { name: Some(name), .. } => stop(name),
        SessionCommand::Stop { name: None, .. } => stop_all(),
        SessionCommand::Export { name, listen } => export_metrics(name, listen),
    }
}

fn runtime_error(err: impl std::fmt::Display) -> CliError {
    CliError::runtime(err.to_string())
}

/// Compiles a session's script with the options it was started with.
fn compile_session(source: &Source, meta: &Meta, deadline_boot_ns: u64) -> Result<Compiled, CliError> {
    let mut options = CompileOptions::default();
    options.events_buffer = meta.buffer_size;
    options.map_size = meta.map_size;
    options.codegen.start_ktime_ns = run::monotonic_ns();
    options.codegen.deadline_boot_ns = deadline_boot_ns;
    run::compile_source(source, &options)
}

fn start(args: &StartArgs, verbose: bool) -> Result<(), CliError> {
    store::validate_name(&args.name).map_err(CliError::usage)?;
    if !args.buffer_size.is_power_of_two() || args.buffer_size < 4096 {
        return Err(CliError::usage(format!(
            "invalid --buffer-size {}: use a power of two of at least 4096, for example 1048576",
            args.buffer_size
        )));
    }
    let ttl = args.ttl.as_deref().map(rules::parse_duration).transpose().map_err(CliError::usage)?;
    if ttl.is_some_and(|ttl| ttl.is_zero()) {
        return Err(CliError::usage("invalid --ttl 0: use a positive duration such as 30s"));
    }
    let source = match (&args.program, &args.file) {
        (Some(program), _) => Source::new("-e", program.clone()),
        (None, Some(path)) => {
            let text = fs::read_to_string(path)
                .map_err(|err| CliError::usage(format!("failed to read script {}: {err}", path.display())))?;
            Source::new(path.display().to_string(), text)
        }
        (None, None) => return Err(CliError::usage("no program: give a script FILE or -e 'PROGRAM'")),
    };

    let deadline_boot_ns = ttl.map_or(0, |ttl| {
        mitigate::store::boot_time_ns().saturating_add(ttl.as_nanos().min(u128::from(u64::MAX)) as u64)
    });
    let mut meta = Meta {
        name: args.name.clone(),
        created_unix: mitigate::store::real_time_ns() / 1_000_000_000,
        deadline_boot_ns,
        map_size: args.map_size,
        buffer_size: args.buffer_size,
        stats: args.stats,
        probes: Vec::new(),
        end_program_ids: Vec::new(),
    };
    let compiled = compile_session(&source, &meta, deadline_boot_ns)?;
    if let (Some(program), _) = parser::parse(&source) {
        detached::check(&program, &source).map_err(CliError::usage)?;
    }

    mitigate::checks::ensure_bpffs().map_err(CliError::runtime)?;
    let _lock = store::name_lock(&args.name).map_err(runtime_error)?;
    let dir = store::dir_of(&args.name);
    if dir.exists() {
        return Err(CliError::usage(format!(
            "a session named `{}` is already running; stop it with `probe session stop {}` or pick another name",
            args.name, args.name
        )));
    }
    let loaded = runtime::load(&compiled, &source, true, verbose).map_err(runtime_error)?;

    fs::create_dir_all(store::ROOT).with_context(|| format!("failed to create {}", store::ROOT))?;
    let partial = PathBuf::from(store::ROOT).join(format!("{}{}", store::PARTIAL_PREFIX, std::process::id()));
    if partial.exists() {
        store::remove(&partial).with_context(|| format!("failed to remove the stale {}", partial.display()))?;
    }
    fs::create_dir(&partial).with_context(|| format!("failed to create {}", partial.display()))?;
    let result = pin_and_publish(loaded, &compiled, &source, &mut meta, &partial, &dir);
    let mut loaded = match result {
        Ok(loaded) => loaded,
        Err(err) => {
            if let Err(cleanup) = store::remove(&partial) {
                status!("probe session: failed to remove {}: {cleanup}", partial.display());
            }
            return Err(err);
        }
    };
    let mechanisms: Vec<&str> = meta.probes.iter().map(|probe| probe.name.as_str()).collect();
    let expiry = match ttl {
        Some(ttl) => format!(", expires in {}", rules::format_seconds(ttl.as_secs())),
        None => String::new(),
    };
    status!(
        "Started session {} with {} probe{} ({}){expiry}.",
        meta.name,
        meta.probes.len(),
        if meta.probes.len() == 1 { "" } else { "s" },
        mechanisms.join(", ")
    );
    if args.stats {
        match session::enable_stats() {
            Ok(message) => status!("{message}"),
            Err(message) => status!("probe session: warning: {message}"),
        }
    }
    // BEGIN's output, and whatever the probes printed meanwhile.
    let mut output = Output::open(None)?;
    run::drain(&mut loaded, &compiled, &mut output, None);
    Ok(())
}

/// Pins everything in `partial`, runs BEGIN, writes the description and
/// renames `partial` to `dir`.
fn pin_and_publish(
    loaded: Loaded,
    compiled: &Compiled,
    source: &Source,
    meta: &mut Meta,
    partial: &Path,
    dir: &Path,
) -> Result<Loaded, CliError> {
    let Pinned { mut loaded, probes, end_program_ids } = loaded.attach_pinned(compiled, partial).map_err(runtime_error)?;
    meta.probes = probes;
    meta.end_program_ids = end_program_ids;
    store::write_text(partial, "script", source.text()).with_context(|| format!("failed to write the script into {}", partial.display()))?;
    store::write_text(partial, "meta", &meta.to_text())
        .with_context(|| format!("failed to write the description into {}", partial.display()))?;
    crate::fault::check("session-before-publish").map_err(runtime_error)?;
    loaded.run_begin().map_err(runtime_error)?;
    fs::rename(partial, dir).with_context(|| format!("failed to rename {} to {}", partial.display(), dir.display()))?;
    Ok(loaded)
}

/// A session's state read back from bpffs.
struct Opened {
    meta: Meta,
    compiled: Compiled,
    loaded: Loaded,
    dir: PathBuf,
}

fn open(name: &str) -> Result<Opened, CliError> {
    store::validate_name(name).map_err(CliError::usage)?;
    let (meta, script) = session::read_session(name).map_err(CliError::runtime)?;
    let source = Source::new(format!("session {name}"), script);
    let compiled = compile_session(&source, &meta, 0)?;
    let dir = store::dir_of(name);
    let loaded = Loaded::open_pinned(&compiled, &dir).map_err(runtime_error)?;
    Ok(Opened { meta, compiled, loaded, dir })
}

fn show(name: &str) -> Result<(), CliError> {
    let opened = open(name)?;
    let mut output = Output::open(None)?;
    run::finish_maps(&opened.loaded, &mut output);
    let lost = opened.loaded.lost();
    if lost > 0 {
        status!("{lost} output records lost because the ring buffer was full (read them with `probe session attach {name}`)");
    }
    Ok(())
}

fn attach(name: &str) -> Result<(), CliError> {
    let Opened { mut loaded, compiled, dir, .. } = open(name)?;
    let _reader = match store::reader_lock(name).map_err(runtime_error)? {
        Ok(lock) => lock,
        Err(holder) => {
            return Err(CliError::runtime(format!(
                "session {name} already has a reader (process {holder}); a ring buffer has one consumer, so end that \
                 `probe session attach` first"
            )));
        }
    };
    status!("Reading the output of session {name}. Ctrl-C ends this reader; the session keeps running.");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let mut interrupt = signal(SignalKind::interrupt()).context("failed to handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("failed to handle SIGTERM")?;
        let mut hangup = signal(SignalKind::hangup()).context("failed to handle SIGHUP")?;
        let mut output = Output::open(None)?;
        let stopped = async {
            while dir.exists() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::select! {
            end = run::stream(&mut loaded, &compiled, &mut output, None, [&mut interrupt, &mut terminate, &mut hangup], None, None) => {
                end?;
            }
            () = stopped => status!("session {name} was stopped"),
        }
        Ok::<(), CliError>(())
    })
}

fn stop_all() -> Result<(), CliError> {
    let found = store::list().with_context(|| format!("failed to list {}", store::ROOT))?;
    if found.is_empty() {
        status!("No sessions running.");
        return Ok(());
    }
    let mut failed = 0;
    for session in found {
        if let Err(err) = stop(&session.name) {
            status!("probe session stop: error: {}", err.error);
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(CliError::runtime(format!("{failed} sessions could not be stopped")));
    }
    Ok(())
}

fn stop(name: &str) -> Result<(), CliError> {
    store::validate_name(name).map_err(CliError::usage)?;
    let _lock = store::name_lock(name).map_err(runtime_error)?;
    let dir = store::dir_of(name);
    if !dir.exists() {
        return Err(CliError::runtime(format!("no session named `{name}`; `probe session list` lists them")));
    }
    let _reader = match store::reader_lock(name).map_err(runtime_error)? {
        Ok(lock) => lock,
        Err(holder) => {
            return Err(CliError::runtime(format!(
                "session {name} has a reader (process {holder}, `probe session attach`); end it with Ctrl-C, then stop the session"
            )));
        }
    };
    let opened = open(name);
    let mut program_ids = Vec::new();
    match opened {
        Ok(Opened { meta, compiled, mut loaded, dir }) => {
            program_ids = meta.program_ids();
            // As in `probe run`, the probes go before END runs, so that
            // END's output comes last.
            unpin_links(&dir, &compiled);
            let mut output = Output::open(None)?;
            run::drain(&mut loaded, &compiled, &mut output, None);
            if let Err(err) = loaded.run_pinned_end(&dir) {
                status!("probe session: {err}");
            }
            run::drain(&mut loaded, &compiled, &mut output, None);
            run::finish_maps(&loaded, &mut output);
            let lost = loaded.lost();
            if lost > 0 {
                status!("{lost} output records were lost because the ring buffer was full (raise --buffer-size)");
            }
            store::remove(&dir).with_context(|| format!("failed to remove {}", dir.display()))?;
            status!("Stopped session {name}.");
        }
        Err(err) => {
            // Part of the state was removed by hand, or the script no
            // longer compiles on this kernel: remove what is left.
            let found = store::remove(&dir).with_context(|| format!("failed to remove {}", dir.display()))?;
            status!("session {name} could not be read, so END and the final maps are not printed: {}", err.error);
            if found.is_empty() {
                status!("Removed the empty directory {}.", dir.display());
            } else {
                status!("Removed what was left in {}: {}.", dir.display(), found.join(", "));
            }
        }
    }
    if let Some(message) = session::release_stats(name) {
        status!("{message}");
    }
    if !program_ids.is_empty() && !mitigate::wait_unloaded(&program_ids, Duration::from_secs(5)) {
        status!("probe session: warning: some programs of session {name} are still loaded 5 s after their links were removed");
    }
    Ok(())
}

/// Removes the pinned links of the session in `dir`, which detaches its
/// probes once no descriptor refers to them.
fn unpin_links(dir: &Path, compiled: &Compiled) {
    for probe in &compiled.probes {
        let path = dir.join(store::link_pin(&probe.symbol));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => status!("probe session: failed to remove {}: {err}", path.display()),
        }
    }
}

/// Formats nanoseconds as a short duration: `840ns`, `12.3us`, `4.1ms`, `2.0s`.
fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.1}s", ns as f64 / 1e9),
    }
}

fn list() -> Result<(), CliError> {
    let sessions = store::list().with_context(|| format!("failed to list {}", store::ROOT))?;
    let mitigations = mitigate::store::list().with_context(|| format!("failed to list {}", mitigate::store::ROOT))?;
    if sessions.is_empty() && mitigations.is_empty() {
        println!("No sessions running and no mitigations applied.");
        return Ok(());
    }
    let stats_on = session::stats_enabled();
    let now_boot = mitigate::store::boot_time_ns();
    let now_unix = mitigate::store::real_time_ns() / 1_000_000_000;
    let mut rows: Vec<[String; 8]> = vec![[
        "SESSION", "AGE", "LEFT", "LOST", "PROBE", "HITS", "RUN TIME", "PER HIT",
    ]
    .map(str::to_owned)];
    let left = |seconds: Option<u64>| seconds.map_or("-".to_owned(), rules::format_seconds);
    for found in &sessions {
        let meta = match &found.meta {
            Ok(meta) => meta,
            Err(err) => {
                rows.push([found.name.clone(), "?".into(), "?".into(), "?".into(), format!("(unreadable: {err})"), String::new(), String::new(), String::new()]);
                continue;
            }
        };
        let lost = session::read_counter(&found.dir, compile::LOST_MAP_NAME).map_or("?".to_owned(), |lost| lost.to_string());
        let ids: Vec<u32> = meta.probes.iter().map(|probe| probe.program_id).collect();
        let stats = session::run_stats(&ids);
        for (index, (probe, stats)) in meta.probes.iter().zip(&stats).enumerate() {
            let (hits, time, per_hit) = if !stats.loaded {
                ("detached".to_owned(), "-".to_owned(), "-".to_owned())
            } else if stats_on {
                let per_hit = stats.run_time_ns.checked_div(stats.run_count).map_or("-".to_owned(), format_ns);
                (stats.run_count.to_string(), format_ns(stats.run_time_ns), per_hit)
            } else {
                ("-".to_owned(), "-".to_owned(), "-".to_owned())
            };
            let first = index == 0;
            rows.push([
                if first { meta.name.clone() } else { String::new() },
                if first { rules::format_seconds(now_unix.saturating_sub(meta.created_unix)) } else { String::new() },
                if first { left(meta.seconds_left(now_boot)) } else { String::new() },
                if first { lost.clone() } else { String::new() },
                probe.name.clone(),
                hits,
                time,
                per_hit,
            ]);
        }
    }
    for applied in &mitigations {
        let Ok(meta) = &applied.meta else {
            continue;
        };
        let counts = mitigate::store::read_counts(&applied.dir).unwrap_or_default();
        let stats = session::run_stats(&meta.program_ids);
        let run_time: u64 = stats.iter().map(|stats| stats.run_time_ns).sum();
        let runs: u64 = stats.iter().map(|stats| stats.run_count).sum();
        rows.push([
            format!("mitigation {}", meta.id),
            rules::format_seconds(now_unix.saturating_sub(meta.created_unix)),
            left(meta.seconds_left(now_boot)),
            "-".into(),
            format!("{} ({})", meta.rule, meta.mode()),
            format!("{} denied, {} audited", counts.denied, counts.audited),
            if stats_on { format_ns(run_time) } else { "-".into() },
            if stats_on && runs > 0 { format_ns(run_time / runs) } else { "-".into() },
        ]);
    }
    let mut stdout = std::io::stdout().lock();
    let widths: Vec<usize> = (0..8).map(|column| rows.iter().map(|row| row[column].chars().count()).max().unwrap_or(0)).collect();
    for row in &rows {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            if column + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[column]));
            }
        }
        let _ = writeln!(stdout, "{}", line.trim_end());
    }
    if !stats_on {
        let _ = writeln!(
            stdout,
            "HITS and RUN TIME need kernel.bpf_stats_enabled=1: start a session with --stats, or run `sysctl kernel.bpf_stats_enabled=1`."
        );
    }
    Ok(())
}

fn export_metrics(name: &str, listen: &str) -> Result<(), CliError> {
    let address: SocketAddr = listen.parse().map_err(|_| {
        CliError::usage(format!("invalid --listen `{listen}`: use ADDRESS:PORT, for example 127.0.0.1:9464"))
    })?;
    let opened = open(name)?;
    let listener = TcpListener::bind(address).map_err(|err| CliError::runtime(format!("failed to listen on {address}: {err}")))?;
    status!("Serving the metrics of session {name} at http://{address}/metrics. Ctrl-C ends it; the session keeps running.");
    let Opened { meta, loaded, dir, .. } = opened;
    export::serve(&listener, || {
        if !dir.exists() {
            return Err(format!("session {name} was stopped"));
        }
        let maps = loaded.map_entries().map_err(|err| err.to_string())?;
        let runs = session::stats_enabled().then(|| {
            let ids: Vec<u32> = meta.probes.iter().map(|probe| probe.program_id).collect();
            meta.probes
                .iter()
                .zip(session::run_stats(&ids))
                .map(|(probe, stats)| export::ProbeRuns {
                    probe: probe.name.clone(),
                    run_count: stats.run_count,
                    run_time_ns: stats.run_time_ns,
                })
                .collect::<Vec<_>>()
        });
        Ok(export::render(name, &maps, loaded.lost(), runs.as_deref()))
    })
    .map_err(|err| CliError::runtime(format!("failed to serve on {address}: {err}")))
}

