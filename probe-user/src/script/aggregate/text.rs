//! Maps printed in bpftrace's text layout, byte for byte as bpftrace 0.17
//! prints them for `print(@m)` and at exit, apart from the differences
//! listed in the parent module.
//!
//! Each entry is `@name[key, parts]: value` (or `@name: value` without
//! keys), strings unquoted. A histogram entry is `@name[key]: ` followed by
//! its table on the next lines. Entries are separated by one newline. What
//! follows the last entry depends on the value kind, and an empty map
//! prints only that:
//!
//! | value kind                                  | after the last entry |
//! |---------------------------------------------|----------------------|
//! | plain, `count`, `sum`, `min`, `max`         | `\n`                 |
//! | `hist`, `lhist` (each table ends in `\n`)   | `\n`                 |
//! | `avg`, `stats`                              | `\n\n`               |
//!
//! So histograms, `avg()` and `stats()` leave a blank line after
//! themselves, and the other kinds do not.

use std::fmt::Write as _;

use super::{
    Entry, Key, KeyPart, MapSpec, PrintOptions, Value, ValueKind, entries_to_print,
    hist::{BAR_WIDTH, LhistParams, hist_row_label, lhist_row_label},
    sort_maps_by_name,
};

/// Renders `print(@m, top, div)`.
///
/// `top` and `div` apply as in bpftrace 0.17. `div` divides plain values,
/// `count()`, `sum()`, `min()`, `max()`, `avg()` and the count column of
/// `hist()`, but not its bars. `lhist()` and `stats()` ignore `div`, and
/// `stats()` ignores `top` as well.
pub fn render_map(spec: &MapSpec, entries: &[Entry], options: PrintOptions) -> String {
    let top = if matches!(spec.value, ValueKind::Stats) {
        0
    } else {
        options.top
    };
    let div = options.div.max(1);

    let lines: Vec<String> = entries_to_print(spec, entries, top)
        .iter()
        .map(|entry| render_entry(&spec.name, entry, div))
        .collect();

    let mut out = lines.join("\n");
    out.push_str(terminator(&spec.value));
    out
}

/// Renders every map as bpftrace does at exit: two newlines, then each map
/// in name order (see the module documentation for the separators).
pub fn render_exit(maps: &[(&MapSpec, &[Entry])]) -> String {
    let mut out = String::from("\n\n");
    for (spec, entries) in sort_maps_by_name(maps) {
        out.push_str(&render_map(spec, entries, PrintOptions::default()));
    }
    out
}

/// Formats `@name[part, part]`, or `@name` without keys.
pub fn format_map_key(name: &str, key: &Key) -> String {
    let mut out = format!("@{name}");
    if key.0.is_empty() {
        return out;
    }

    out.push('[');
    for (index, part) in key.0.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        out.push_str(&format_key_part(part));
    }
    out.push(']');
    out
}

/// Formats one key part as bpftrace prints it: integers in decimal,
/// strings without quotes.
pub(super) fn format_key_part(part: &KeyPart) -> String {
    match part {
        KeyPart::Int(value) => value.to_string(),
        KeyPart::Uint(value) => value.to_string(),
        KeyPart::Str(text) => text.clone(),
        KeyPart::Raw(_, bytes) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
    }
}

fn terminator(kind: &ValueKind) -> &'static str {
    match kind {
        ValueKind::Avg | ValueKind::Stats => "\n\n",
        _ => "\n",
    }
}

fn render_entry(name: &str, entry: &Entry, div: u32) -> String {
    let key = format_map_key(name, &entry.key);
    match &entry.value {
        Value::Int(value) => format!("{key}: {}", value / i64::from(div)),
        Value::Uint(value) => format!("{key}: {}", value / u64::from(div)),
        Value::Str(text) => format!("{key}: {text}"),
        Value::Avg { count, total } => {
            format!("{key}: {}", Value::average(*count, *total) / i64::from(div))
        }
        Value::Stats { count, total } => format!(
            "{key}: count {count}, average {}, total {total}",
            Value::average(*count, *total)
        ),
        Value::Hist(counts) => format!("{key}: \n{}", hist_table(counts, div)),
        Value::Lhist { counts, params } => format!("{key}: \n{}", lhist_table(counts, params)),
    }
}

/// Renders a `hist()` table; `div` divides the count column only.
pub(super) fn hist_table(counts: &[u64], div: u32) -> String {
    histogram_table(counts, u64::from(div), hist_row_label)
}

/// Renders an `lhist()` table.
pub(super) fn lhist_table(counts: &[u64], params: &LhistParams) -> String {
    histogram_table(counts, 1, |row| lhist_row_label(params, row))
}

/// Renders the rows from the first to the last non-zero counter, zero rows
/// between them included. Each row is the label left-aligned in 16
/// columns, the count right-aligned in 8, then a bar of `@` scaled so the
/// largest counter fills [`BAR_WIDTH`] columns. An all-zero histogram
/// renders as an empty string.
fn histogram_table(counts: &[u64], div: u64, label: impl Fn(usize) -> String) -> String {
    let first = counts.iter().position(|&count| count > 0);
    let last = counts.iter().rposition(|&count| count > 0);
    let (Some(first), Some(last)) = (first, last) else {
        return String::new();
    };
    let largest = counts.iter().copied().max().unwrap_or(1);

    let mut out = String::new();
    for (index, &count) in counts.iter().enumerate().take(last + 1).skip(first) {
        // bpftrace scales in single precision and truncates; doing the same
        // keeps bar lengths identical at the rounding edges.
        let bar_len = (count as f32 / largest as f32 * BAR_WIDTH as f32) as usize;
        let bar = "@".repeat(bar_len);
        let _ = writeln!(
            out,
            "{:<16}{:>8} |{bar:<BAR_WIDTH$}|",
            label(index),
            count / div
        );
    }
    out
}
