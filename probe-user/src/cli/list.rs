//! `probe list [PATTERN]`: the probes this kernel offers, as scripts name
//! them: kernel functions (`kprobe:`), tracepoints, raw tracepoints and LSM
//! hooks.

use std::{
    collections::BTreeSet,
    io::{self, Write as _},
};

use super::CliError;
use crate::{btf::Btf, btf::Kind, kallsyms::Kallsyms, planner::glob_match, tracepoint, uprobe};

/// Options of `probe list`.
#[derive(Clone, Debug, clap::Args)]
pub struct ListArgs {
    /// Glob of the probes to list, with `*` and `?`: matched against the
    /// whole name (`kprobe:vfs_*`, `tracepoint:syscalls:*`) when it
    /// contains a `:`, otherwise against the part after the provider
    /// (`vfs_*`).
    #[arg(value_name = "PATTERN")]
    pub pattern: Option<String>,

    /// Also print each function's prototype from BTF and each
    /// tracepoint's fields.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Lists the matching probes on standard output.
pub fn run(args: &ListArgs) -> Result<(), CliError> {
    let pattern = args.pattern.as_deref().unwrap_or("*");
    for provider in ["uprobe:", "uretprobe:"] {
        if let Some(rest) = pattern.strip_prefix(provider) {
            return list_user_functions(rest);
        }
    }
    let matches = |provider: &str, target: &str| {
        if pattern.contains(':') {
            glob_match(pattern, &format!("{provider}:{target}"))
        } else {
            glob_match(pattern, target)
        }
    };
    let btf = Btf::from_sys_fs().ok();
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut write = |line: String| -> bool { writeln!(out, "{line}").is_ok() };

    // Kernel functions: BTF functions and kallsyms text symbols, once each.
    let mut functions: BTreeSet<String> = BTreeSet::new();
    if let Some(btf) = &btf {
        functions.extend(btf.function_names().filter(|name| !name.starts_with("bpf_lsm_")).map(str::to_owned));
    }
    if let Ok(kallsyms) = Kallsyms::read() {
        functions.extend(kallsyms.text_names().filter(|name| !name.starts_with("__pfx_")).map(str::to_owned));
    }
    for function in functions.iter().filter(|f| matches("kprobe", f)) {
        let mut line = format!("kprobe:{function}");
        if args.verbose > 0 {
            if let Some(prototype) = btf.as_ref().and_then(|btf| prototype(btf, function)) {
                line = format!("{line}\n    {prototype}");
            }
        }
        if !write(line) {
            return Ok(());
        }
    }

    if let Ok(events) = tracepoint::list_all() {
        for event in events {
            let Some((category, name)) = event.split_once(':') else {
                continue;
            };
            if !matches("tracepoint", &event) {
                continue;
            }
            let mut line = format!("tracepoint:{category}:{name}");
            if args.verbose > 0 {
                if let Ok(Some(format)) = tracepoint::read_format(category, name) {
                    for field in format.arguments() {
                        line.push_str(&format!("\n    {} {}", field.type_name, field.name));
                    }
                }
            }
            if !write(line) {
                return Ok(());
            }
        }
    }

    if let Some(btf) = &btf {
        let mut raw: BTreeSet<&str> = BTreeSet::new();
        let mut hooks: BTreeSet<&str> = BTreeSet::new();
        for ty in btf.types() {
            if ty.kind == Kind::Typedef {
                if let Some(name) = ty.name.strip_prefix("btf_trace_") {
                    raw.insert(name);
                }
            } else if ty.kind == Kind::Func {
                if let Some(hook) = ty.name.strip_prefix("bpf_lsm_") {
                    hooks.insert(hook);
                }
            }
        }
        for name in raw.into_iter().filter(|n| matches("rawtracepoint", n)) {
            if !write(format!("rawtracepoint:{name}")) {
                return Ok(());
            }
        }
        for hook in hooks.into_iter().filter(|h| matches("lsm", h)) {
            let mut line = format!("lsm:{hook}");
            if args.verbose > 0 {
                if let Some(prototype) = prototype(btf, &format!("bpf_lsm_{hook}")) {
                    line = format!("{line}\n    {prototype}");
                }
            }
            if !write(line) {
                return Ok(());
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

/// Renders a function's BTF prototype as C: `long f(int a, char *b)`.
fn prototype(btf: &Btf, function: &str) -> Option<String> {
    let signature = btf.find_function(function)?;
    let params: Vec<String> = signature
        .params
        .iter()
        .map(|param| format!("{} {}", btf.type_name(param.type_id), param.name))
        .collect();
    Some(format!(
        "{} {function}({})",
        btf.type_name(signature.return_type),
        params.join(", ")
    ))
}

/// Lists the functions of one binary: `BINARY[:GLOB]` after `uprobe:`.
fn list_user_functions(target: &str) -> Result<(), CliError> {
    let (binary, glob) = target.split_once(':').unwrap_or((target, "*"));
    let path = uprobe::resolve_binary(binary, None).map_err(|err| {
        let hint = err.hint.map(|hint| format!(" ({hint})")).unwrap_or_default();
        CliError::usage(format!("{}{hint}", err.message))
    })?;
    let names = uprobe::function_names(&path).map_err(|err| CliError::usage(err.message))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut listed = 0;
    for name in names.iter().filter(|name| glob_match(glob, name)) {
        if writeln!(out, "uprobe:{}:{name}", path.display()).is_err() {
            return Ok(());
        }
        listed += 1;
    }
    let _ = out.flush();
    if listed == 0 {
        return Err(CliError::usage(format!("no function in `{}` matches `{glob}`", path.display())));
    }
    Ok(())
}
