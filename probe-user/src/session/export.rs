//! Prometheus metrics of a session, in the text exposition format 0.0.4,
//! served over HTTP/1.1 by a small blocking server.
//!
//! Metrics, each labelled `session="NAME"`:
//!
//! * `probe_session_map_value{map, key}`: each entry of a map of a plain
//!   integer, `count()`, `sum()`, `min()` or `max()`. `key` is the
//!   key's parts joined with `,`, empty for a map without keys.
//! * `probe_session_map_count{map, key}` and `probe_session_map_sum{map,
//!   key}`: the count and total of `avg()` and `stats()` entries.
//! * `probe_session_lost_events_total`: output records dropped because the
//!   ring buffer was full.
//! * `probe_session_probe_runs_total{probe}` and
//!   `probe_session_probe_run_seconds_total{probe}`: runs of each probe's
//!   program and the time spent in it, present only while
//!   `kernel.bpf_stats_enabled` is 1.
//!
//! Histograms and string values are not exported.

use std::{
    fmt::Write as _,
    io::{self, BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
    time::Duration,
};

use crate::script::aggregate::{Entry, KeyPart, MapSpec, Value};

/// The metric names, for `probe session export --help`.
pub const METRICS_HELP: &str = "Metrics, each labelled session=\"NAME\":
  probe_session_map_value{map,key}       entries of integer, count(), sum(), min() and max() maps
  probe_session_map_count{map,key}       count of avg() and stats() entries
  probe_session_map_sum{map,key}         total of avg() and stats() entries
  probe_session_lost_events_total        output records dropped because the ring buffer was full
  probe_session_probe_runs_total{probe}  runs of each probe (while kernel.bpf_stats_enabled is 1)
  probe_session_probe_run_seconds_total{probe}  time spent in each probe (likewise)
`key` is the key's parts joined with `,`; histograms and strings are not exported.";

/// Returns the label value of a map's name, `@name`.
fn map_label(spec: &MapSpec) -> String {
    format!("@{}", spec.name)
}

/// Renders a key as the `key` label: its parts joined with `,`.
fn key_label(entry: &Entry) -> String {
    let parts: Vec<String> = entry
        .key
        .0
        .iter()
        .map(|part| match part {
            KeyPart::Int(value) => value.to_string(),
            KeyPart::Uint(value) => value.to_string(),
            KeyPart::Str(text) => text.clone(),
            // Stacks and symbols are rendered to text when the map is read.
            KeyPart::Raw(_, bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        })
        .collect();
    parts.join(",")
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The per-probe statistics to export.
pub struct ProbeRuns {
    pub probe: String,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Renders the metrics of session `session`.
pub fn render(session: &str, maps: &[(&MapSpec, Vec<Entry>)], lost: u64, runs: Option<&[ProbeRuns]>) -> String {
    let session = escape(session);
    let mut values = String::new();
    let mut counts = String::new();
    let mut sums = String::new();
    for (spec, entries) in maps {
        let map = escape(&map_label(spec));
        for entry in entries {
            let labels = format!("session=\"{session}\",map=\"{map}\",key=\"{}\"", escape(&key_label(entry)));
            match &entry.value {
                Value::Int(value) => {
                    let _ = writeln!(values, "probe_session_map_value{{{labels}}} {value}");
                }
                Value::Uint(value) => {
                    let _ = writeln!(values, "probe_session_map_value{{{labels}}} {value}");
                }
                Value::Avg { count, total } | Value::Stats { count, total } => {
                    let _ = writeln!(counts, "probe_session_map_count{{{labels}}} {count}");
                    let _ = writeln!(sums, "probe_session_map_sum{{{labels}}} {total}");
                }
                Value::Str(_) | Value::Hist(_) | Value::Lhist { .. } => {}
            }
        }
    }
    let mut text = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &str| {
        if !samples.is_empty() {
            let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{samples}");
        }
    };
    family(
        "probe_session_map_value",
        "gauge",
        "Value of a map entry that holds an integer, count(), sum(), min() or max().",
        &values,
    );
    family("probe_session_map_count", "gauge", "Number of values that an avg() or stats() entry has seen.", &counts);
    family("probe_session_map_sum", "gauge", "Total of the values that an avg() or stats() entry has seen.", &sums);
    family(
        "probe_session_lost_events_total",
        "counter",
        "Output records dropped because the session's ring buffer was full.",
        &format!("probe_session_lost_events_total{{session=\"{session}\"}} {lost}\n"),
    );
    if let Some(runs) = runs {
        let mut counts = String::new();
        let mut seconds = String::new();
        for run in runs {
            let labels = format!("session=\"{session}\",probe=\"{}\"", escape(&run.probe));
            let _ = writeln!(counts, "probe_session_probe_runs_total{{{labels}}} {}", run.run_count);
            let _ = writeln!(seconds, "probe_session_probe_run_seconds_total{{{labels}}} {:.9}", run.run_time_ns as f64 / 1e9);
        }
        family("probe_session_probe_runs_total", "counter", "Runs of the probe's program.", &counts);
        family("probe_session_probe_run_seconds_total", "counter", "Time spent running the probe's program.", &seconds);
    }
    text
}

/// Serves HTTP requests on `listener` until `accept` fails. `GET /metrics`
/// (or `/`) gets the body that `metrics()` returns, or its error message
/// with status 503. Other paths get 404, other methods 405.
pub fn serve(listener: &TcpListener, mut metrics: impl FnMut() -> Result<String, String>) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept()?;
        if let Err(err) = answer(stream, &mut metrics) {
            log::warn!("failed to respond to {peer}: {err}");
        }
    }
}

fn answer(mut stream: TcpStream, metrics: &mut impl FnMut() -> Result<String, String>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers are read and ignored, up to the empty line.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 2 {
        header.clear();
    }
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics" | "/") => match metrics() {
            Ok(body) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body),
            Err(message) => ("503 Service Unavailable", "text/plain; charset=utf-8", format!("{message}\n")),
        },
        ("GET" | "HEAD", _) => ("404 Not Found", "text/plain; charset=utf-8", "the metrics are at /metrics\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "use GET\n".to_owned()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::aggregate::{Key, ValueKind};

    #[test]
    fn metrics_have_labels_and_types() {
        let calls = MapSpec { name: "calls".into(), key: Vec::new(), value: ValueKind::Count };
        let latency = MapSpec { name: "".into(), key: Vec::new(), value: ValueKind::Avg };
        let maps = [
            (&calls, vec![Entry { key: Key(vec![KeyPart::Str("a\"b".into()), KeyPart::Int(-3)]), value: Value::Uint(7) }]),
            (&latency, vec![Entry { key: Key(Vec::new()), value: Value::Avg { count: 2, total: 30 } }]),
        ];
        let runs = [ProbeRuns { probe: "tracepoint:syscalls:sys_enter_getppid".into(), run_count: 5, run_time_ns: 1_500 }];
        let text = render("s1", &maps, 4, Some(&runs));
        let expected = [
            "# TYPE probe_session_map_value gauge",
            "probe_session_map_value{session=\"s1\",map=\"@calls\",key=\"a\\\"b,-3\"} 7",
            "probe_session_map_count{session=\"s1\",map=\"@\",key=\"\"} 2",
            "probe_session_map_sum{session=\"s1\",map=\"@\",key=\"\"} 30",
            "probe_session_lost_events_total{session=\"s1\"} 4",
            "probe_session_probe_runs_total{session=\"s1\",probe=\"tracepoint:syscalls:sys_enter_getppid\"} 5",
            "probe_session_probe_run_seconds_total{session=\"s1\",probe=\"tracepoint:syscalls:sys_enter_getppid\"} 0.000001500",
        ];
        for line in expected {
            assert!(text.lines().any(|l| l == line), "missing {line} in:\n{text}");
        }
        assert!(!render("s1", &[], 0, None).contains("probe_runs"));
    }
}
