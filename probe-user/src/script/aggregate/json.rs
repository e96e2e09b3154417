//! ## JSON output (`--format json`)
//!
//! With `--format json`, every message is one JSON object on its own line,
//! with a `type` and a `data` field. The shapes follow `bpftrace -f json`
//! (checked against bpftrace 0.17), so tools written for it can read ours
//! apart from the differences listed below.
//!
//! ```text
//! {"type": "attached_probes", "data": {"probes": 2}}
//! {"type": "printf", "data": "opened /etc/passwd\n", "probe": "tracepoint:syscalls:sys_enter_openat"}
//! {"type": "map", "data": {"@": {"cargo": 8, "rustc": 364}}}
//! {"type": "map", "data": {"@bytes": {"bash,3": -12}}}
//! {"type": "map", "data": {"@total": 42}}
//! {"type": "hist", "data": {"@h": [{"min": 1, "max": 1, "count": 107}, {"min": 2, "max": 3, "count": 0}, {"min": 4, "max": 7, "count": 5}]}}
//! {"type": "hist", "data": {"@l": [{"max": -1, "count": 1}, {"min": 0, "max": 99, "count": 290}, {"min": 1000, "count": 506}]}}
//! {"type": "stats", "data": {"@s": {"count": 1014, "average": 6136, "total": 6222387}}}
//! {"type": "stats", "data": {"@a": {"bash": 825}}}
//! {"type": "lost_events", "data": {"events": 3}}
//! ```
//!
//! | `type`            | when                                       | `data`                                      |
//! |-------------------|--------------------------------------------|---------------------------------------------|
//! | `attached_probes` | after attaching                            | `{"probes": N}`                             |
//! | `printf`          | each `printf()`                            | the formatted text, newlines included       |
//! | `map`             | plain maps, `count`, `sum`, `min`, `max`   | `{"@name": V}` or `{"@name": {"key": V}}`  |
//! | `hist`            | `hist`, `lhist`                            | as `map`, each `V` an array of buckets      |
//! | `stats`           | `avg`, `stats`                             | as `map`, `V` the average or an object      |
//! | `lost_events`     | records dropped because the buffer was full| `{"events": N}`                             |
//!
//! Map messages:
//!
//! - A map without keys has its value directly under `"@name"`. A map
//!   with keys has an object whose keys are the key parts formatted as in
//!   text output and joined by `,` with no space: `@m["bash", 3]` is
//!   `"bash,3"`.
//! - Entries come in the text output's order (ascending by value), and
//!   `print(@m, top, div)` selects and divides them as in text output.
//! - Integers are JSON numbers, signed or unsigned as the map declares
//!   (a `u64` may exceed 2^53). Strings are JSON strings.
//! - A histogram is an array of `{"min": A, "max": B, "count": N}` objects
//!   with inclusive bounds, from the first to the last non-zero bucket.
//!   The bucket below the range has no `"min"` (`hist`: `"max": -1`;
//!   `lhist`: `"max": min - 1`) and the `lhist` bucket at or above `max`
//!   has no `"max"`. An all-zero histogram is `[]`.
//! - `avg()` values are the average; `stats()` values are
//!   `{"count": N, "average": A, "total": T}`. Averages truncate toward
//!   zero.
//! - A map with no entries prints no line, except that a `count()` map
//!   without keys prints 0.
//!
//! `printf` messages carry two fields beyond bpftrace's, each present only
//! when the runtime has the information. `"probe"` is the probe that ran
//! the `printf`. `"time_ns"` is the `CLOCK_MONOTONIC` time in nanoseconds
//! at which the BPF program sent the record, as `bpf_ktime_get_ns` reads it.
//!
//! Other differences from bpftrace 0.17:
//!
//! - At exit bpftrace prints two empty lines before the maps even in JSON
//!   mode; we print none, so every line is a JSON object.
//! - bpftrace escapes each byte of a non-ASCII character as a broken
//!   `\uffffffXX` sequence; we write UTF-8 text as it is, and replace
//!   invalid UTF-8 with U+FFFD.
//! - `hist` buckets reach `2^62..=2^63-1`; bpftrace 0.17 puts every value
//!   of 2^31 or more in `{"min": 2147483648, "max": 4294967295}`.

use std::fmt::Write as _;

use super::{
    Entry, Key, MapSpec, PrintOptions, Value, ValueKind, entries_to_print,
    hist::{LhistParams, hist_bucket_range, lhist_row_range},
    sort_maps_by_name,
    text::format_key_part,
};

/// Renders `print(@m, top, div)` as one line ending in `\n`, or an empty
/// string for a map with nothing to print.
pub fn render_map(spec: &MapSpec, entries: &[Entry], options: PrintOptions) -> String {
    let top = if matches!(spec.value, ValueKind::Stats) {
        0
    } else {
        options.top
    };
    let div = options.div.max(1);

    let selected = entries_to_print(spec, entries, top);
    if selected.is_empty() {
        return String::new();
    }

    let message_type = match spec.value {
        ValueKind::Hist | ValueKind::Lhist(_) => "hist",
        ValueKind::Avg | ValueKind::Stats => "stats",
        _ => "map",
    };

    let mut out = format!("{{\"type\": \"{message_type}\", \"data\": {{");
    write_string(&mut out, &format!("@{}", spec.name));
    out.push_str(": ");

    if spec.key.is_empty() {
        for entry in &selected {
            write_value(&mut out, &entry.value, div);
        }
    } else {
        out.push('{');
        for (index, entry) in selected.iter().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            write_string(&mut out, &join_key(&entry.key));
            out.push_str(": ");
            write_value(&mut out, &entry.value, div);
        }
        out.push('}');
    }

    out.push_str("}}\n");
    out
}

/// Renders every map at exit, one line each in name order, with no blank
/// lines before them.
pub fn render_exit(maps: &[(&MapSpec, &[Entry])]) -> String {
    let mut out = String::new();
    for (spec, entries) in sort_maps_by_name(maps) {
        out.push_str(&render_map(spec, entries, PrintOptions::default()));
    }
    out
}

/// Renders a `printf` message. `probe` and `time_ns` are left out when
/// `None`.
pub fn printf_line(message: &str, probe: Option<&str>, time_ns: Option<u64>) -> String {
    let mut out = String::from("{\"type\": \"printf\", \"data\": ");
    write_string(&mut out, message);
    if let Some(probe) = probe {
        out.push_str(", \"probe\": ");
        write_string(&mut out, probe);
    }
    if let Some(time_ns) = time_ns {
        let _ = write!(out, ", \"time_ns\": {time_ns}");
    }
    out.push_str("}\n");
    out
}

/// Renders the message with the number of attached probes.
pub fn attached_probes_line(probes: u64) -> String {
    format!("{{\"type\": \"attached_probes\", \"data\": {{\"probes\": {probes}}}}}\n")
}

/// Renders the message with the number of records the BPF programs
/// dropped because the buffer was full.
pub fn lost_events_line(events: u64) -> String {
    format!("{{\"type\": \"lost_events\", \"data\": {{\"events\": {events}}}}}\n")
}

/// Appends `text` as a JSON string literal. Quotes, backslashes and
/// control characters are escaped (`\n`, `\r` and `\t` by name, the others
/// as `\u00XX`); everything else is copied, non-ASCII characters included.
pub fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Joins key parts with `,` as bpftrace does for JSON object keys.
fn join_key(key: &Key) -> String {
    let parts: Vec<String> = key.0.iter().map(format_key_part).collect();
    parts.join(",")
}

fn write_value(out: &mut String, value: &Value, div: u32) {
    match value {
        Value::Int(value) => {
            let _ = write!(out, "{}", value / i64::from(div));
        }
        Value::Uint(value) => {
            let _ = write!(out, "{}", value / u64::from(div));
        }
        Value::Str(text) => write_string(out, text),
        Value::Avg { count, total } => {
            let _ = write!(out, "{}", Value::average(*count, *total) / i64::from(div));
        }
        Value::Stats { count, total } => {
            let average = Value::average(*count, *total);
            let _ = write!(
                out,
                "{{\"count\": {count}, \"average\": {average}, \"total\": {total}}}"
            );
        }
        Value::Hist(counts) => write_buckets(out, counts, u64::from(div), hist_bucket_range),
        Value::Lhist { counts, params } => write_lhist(out, counts, params),
    }
}

fn write_lhist(out: &mut String, counts: &[u64], params: &LhistParams) {
    write_buckets(out, counts, 1, |row| lhist_row_range(params, row));
}

/// Writes the buckets from the first to the last non-zero one.
fn write_buckets(
    out: &mut String,
    counts: &[u64],
    div: u64,
    range: impl Fn(usize) -> (Option<i64>, Option<i64>),
) {
    out.push('[');
    let first = counts.iter().position(|&count| count > 0);
    let last = counts.iter().rposition(|&count| count > 0);
    if let (Some(first), Some(last)) = (first, last) {
        for (index, &count) in counts.iter().enumerate().take(last + 1).skip(first) {
            if index > first {
                out.push_str(", ");
            }
            out.push('{');
            let (low, high) = range(index);
            if let Some(low) = low {
                let _ = write!(out, "\"min\": {low}, ");
            }
            if let Some(high) = high {
                let _ = write!(out, "\"max\": {high}, ");
            }
            let _ = write!(out, "\"count\": {}}}", count / div);
        }
    }
    out.push(']');
}
