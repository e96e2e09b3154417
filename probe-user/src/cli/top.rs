//! `probe top`: a terminal view of every session and mitigation,
//! refreshed every second, with keys to stop them.
//!
//! The terminal is restored on every way out. `q`, Esc, Ctrl-C and errors
//! return through a guard that restores it when dropped. ratatui's panic
//! hook restores it on a panic. SIGTERM, SIGINT and SIGHUP set a flag that
//! the event loop checks at least four times a second.

use std::{
    collections::HashMap,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use ratatui::{
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    widgets::{Block, Paragraph, Row, Table, TableState},
};

use super::CliError;
use crate::{
    kernel,
    mitigate::{self, rules},
    script::compile::LOST_MAP_NAME,
    session::{self, store},
};

/// Options of `probe top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Seconds between two refreshes.
    #[arg(long, value_name = "SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

/// Set by the signal handler; the event loop ends when it is set.
static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::Relaxed);
}

/// One line of the view: a session or a mitigation.
#[derive(Clone, Debug)]
struct Item {
    /// `session NAME` or `mitigation ID`.
    label: String,
    /// The arguments of this program that `s` runs to stop it.
    stop_args: Vec<String>,
    probes: String,
    program_ids: Vec<u32>,
    lost: Option<u64>,
    left: String,
}

/// Run counters of one item at one time.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    runs: u64,
    run_time_ns: u64,
}

/// Restores the terminal when dropped, so that an error return restores it
/// too.
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn run(args: &TopArgs) -> Result<(), CliError> {
    if !kernel::is_root() {
        return Err(CliError::runtime("probe top needs root to read BPF program statistics; try again with sudo"));
    }
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
    let mut terminal = ratatui::try_init().map_err(|err| CliError::runtime(format!("failed to set up the terminal: {err}")))?;
    let _guard = TerminalGuard;
    let interval = Duration::from_secs(args.interval);
    let mut state = TableState::default().with_selected(Some(0));
    let mut previous: HashMap<String, Sample> = HashMap::new();
    let mut rates: HashMap<String, (f64, f64)> = HashMap::new();
    let mut message = String::from("↑/↓ select, s stops the selected session or mitigation, q quits");
    let mut items = collect();
    let mut next_refresh = Instant::now();
    loop {
        if SIGNALLED.load(Ordering::Relaxed) {
            return Ok(());
        }
        if Instant::now() >= next_refresh {
            items = collect();
            update_rates(&items, &mut previous, &mut rates);
            next_refresh = Instant::now() + interval;
        }
        if state.selected().is_some_and(|index| index >= items.len()) {
            state.select(Some(items.len().saturating_sub(1)));
        }
        let stats_on = session::stats_enabled();
        terminal
            .draw(|frame| {
                let [table_area, footer_area] = Layout::vertical([Constraint::Min(3), Constraint::Length(2)]).areas(frame.area());
                let header = Row::new(["NAME", "PROBES", "EVENTS/S", "CPU/S", "LOST", "LEFT"])
                    .style(Style::default().add_modifier(Modifier::BOLD));
                let rows = items.iter().map(|item| {
                    let (events, cpu) = match rates.get(&item.label) {
                        Some((events, cpu_ms)) if stats_on => (format!("{events:.1}"), format!("{cpu_ms:.3} ms")),
                        _ => ("-".to_owned(), "-".to_owned()),
                    };
                    let lost = item.lost.map_or("-".to_owned(), |lost| lost.to_string());
                    Row::new([item.label.clone(), item.probes.clone(), events, cpu, lost, item.left.clone()])
                });
                let table = Table::new(
                    rows,
                    [
                        Constraint::Length(24),
                        Constraint::Min(20),
                        Constraint::Length(10),
                        Constraint::Length(12),
                        Constraint::Length(8),
                        Constraint::Length(10),
                    ],
                )
                .header(header)
                .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
                .block(Block::bordered().title(format!(" probe top: {} sessions and mitigations ", items.len())));
                frame.render_stateful_widget(table, table_area, &mut state);
                let stats_note = if stats_on {
                    ""
                } else {
                    " | events and CPU time need kernel.bpf_stats_enabled=1 (start a session with --stats)"
                };
                frame.render_widget(Paragraph::new(format!("{message}{stats_note}")), footer_area);
            })
            .map_err(|err| CliError::runtime(format!("failed to draw the terminal: {err}")))?;

        if !event::poll(Duration::from_millis(250)).map_err(|err| CliError::runtime(format!("failed to read the terminal: {err}")))? {
            continue;
        }
        let Event::Key(key) = event::read().map_err(|err| CliError::runtime(format!("failed to read the terminal: {err}")))? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
            KeyCode::Down | KeyCode::Char('j') => state.select_next(),
            KeyCode::Up | KeyCode::Char('k') => state.select_previous(),
            KeyCode::Char('s') => {
                if let Some(item) = state.selected().and_then(|index| items.get(index)) {
                    message = stop(item);
                    next_refresh = Instant::now();
                }
            }
            _ => {}
        }
    }
}

/// Stops an item by running this program's own stop command, whose output
/// would otherwise draw over the view, and returns the outcome in one line.
fn stop(item: &Item) -> String {
    let output = Command::new("/proc/self/exe").args(&item.stop_args).output();
    match output {
        Ok(output) if output.status.success() => format!("stopped {}", item.label),
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            format!("failed to stop {}: {}", item.label, stderr.lines().last().unwrap_or("").trim())
        }
        Err(err) => format!("failed to stop {}: {err}", item.label),
    }
}

/// Reads the sessions and mitigations now.
fn collect() -> Vec<Item> {
    let now = mitigate::store::boot_time_ns();
    let left = |seconds: Option<u64>| seconds.map_or("-".to_owned(), rules::format_seconds);
    let mut items = Vec::new();
    for found in store::list().unwrap_or_default() {
        let Ok(meta) = &found.meta else {
            continue;
        };
        let names: Vec<&str> = meta.probes.iter().map(|probe| probe.name.as_str()).collect();
        items.push(Item {
            label: format!("session {}", meta.name),
            stop_args: vec!["session".into(), "stop".into(), meta.name.clone()],
            probes: names.join(", "),
            program_ids: meta.probes.iter().map(|probe| probe.program_id).collect(),
            lost: session::read_counter(&found.dir, LOST_MAP_NAME).ok(),
            left: left(meta.seconds_left(now)),
        });
    }
    for applied in mitigate::store::list().unwrap_or_default() {
        let Ok(meta) = &applied.meta else {
            continue;
        };
        items.push(Item {
            label: format!("mitigation {}", meta.id),
            stop_args: vec!["mitigate".into(), "remove".into(), meta.id.to_string()],
            probes: format!("{} ({})", meta.rule, meta.mode()),
            program_ids: meta.program_ids.clone(),
            lost: None,
            left: left(meta.seconds_left(now)),
        });
    }
    items
}

/// Updates each item's events per second and CPU milliseconds per second
/// from the change of its programs' run counters since the last sample.
fn update_rates(items: &[Item], previous: &mut HashMap<String, Sample>, rates: &mut HashMap<String, (f64, f64)>) {
    let now = Instant::now();
    for item in items {
        let stats = session::run_stats(&item.program_ids);
        let sample = Sample {
            at: now,
            runs: stats.iter().map(|stats| stats.run_count).sum(),
            run_time_ns: stats.iter().map(|stats| stats.run_time_ns).sum(),
        };
        if let Some(before) = previous.get(&item.label) {
            let seconds = sample.at.duration_since(before.at).as_secs_f64().max(1e-3);
            let events = sample.runs.saturating_sub(before.runs) as f64 / seconds;
            let cpu_ms = sample.run_time_ns.saturating_sub(before.run_time_ns) as f64 / 1e6 / seconds;
            rates.insert(item.label.clone(), (events, cpu_ms));
        }
        previous.insert(item.label.clone(), sample);
    }
    previous.retain(|label, _| items.iter().any(|item| &item.label == label));
}
