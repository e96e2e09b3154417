//! The attach planner on a real kernel: compiler clones, static functions
//! that share a name, module functions, wildcards, functions that cannot
//! be traced, and the counters of missed events. The test kernel's own
//! lists decide which functions to use, so that the tests follow the
//! kernel rather than hard-coded names.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::common::{self, Tracer, assert_nothing_attached, bin, helper, kernel_expected_to_have, run, text};

/// One text symbol of /proc/kallsyms.
#[derive(Clone, Debug)]
struct Symbol {
    address: String,
    name: String,
    module: Option<String>,
}

fn text_symbols() -> Vec<Symbol> {
    let table = fs::read_to_string("/proc/kallsyms").expect("/proc/kallsyms is readable");
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?.to_owned();
            let kind = fields.next()?;
            let name = fields.next()?.to_owned();
            let module = fields.next().map(|m| m.trim_matches(['[', ']']).to_owned());
            matches!(kind, "t" | "T").then_some(Symbol { address, name, module })
        })
        .collect()
}

/// Functions ftrace can attach to, with their module.
fn traceable() -> BTreeSet<(String, Option<String>)> {
    mount_if_missing("tracefs", "/sys/kernel/tracing", "/sys/kernel/tracing/available_filter_functions");
    let list = fs::read_to_string("/sys/kernel/tracing/available_filter_functions").expect("available_filter_functions is readable");
    list.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let name = fields.next()?.to_owned();
            Some((name, fields.next().map(|m| m.trim_matches(['[', ']']).to_owned())))
        })
        .collect()
}

fn blacklist() -> BTreeSet<String> {
    mount_if_missing("debugfs", "/sys/kernel/debug", "/sys/kernel/debug/kprobes/blacklist");
    fs::read_to_string("/sys/kernel/debug/kprobes/blacklist")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn mount_if_missing(fstype: &str, target: &str, probe_file: &str) {
    if !std::path::Path::new(probe_file).exists() {
        let _ = Command::new("mount").args(["-t", fstype, fstype, target]).status();
    }
}

/// Splits `foo.isra.0` into `foo` when the suffix is a compiler clone's.
fn clone_base(name: &str) -> Option<&str> {
    let (base, suffix) = name.split_once('.')?;
    let kinds = ["isra", "constprop", "part"];
    let valid = suffix
        .split('.')
        .all(|part| kinds.contains(&part) || part.bytes().all(|b| b.is_ascii_digit()));
    (valid && kinds.iter().any(|kind| suffix.contains(kind))).then_some(base)
}

fn probe() -> Command {
    Command::new(bin("probe"))
}

/// Starts `kprobe-attach ARGS`, waits until it runs, interrupts it, and
/// returns its exit code and standard error.
fn attach_and_interrupt(args: &[&str]) -> (Option<i32>, String) {
    // Without a SCRIPT, kprobe-attach prints "Tracing each call ...".
    let has_script = args.iter().any(|arg| arg.trim_start().starts_with('{'));
    let tracer = if has_script { Tracer::start_script(args) } else { Tracer::start(args) };
    tracer.signal(libc::SIGINT);
    let (code, _, stderr) = tracer.finish();
    (code, stderr)
}

fn skip_unless_kprobes() -> bool {
    if common::kernel_has_kprobes() {
        return true;
    }
    assert!(!kernel_expected_to_have("kprobe"), "this kernel should have kprobes");
    eprintln!("skipped: this kernel has no kprobes");
    false
}

#[test]
fn clone_only_function_is_traced_as_its_clone() {
    if !skip_unless_kprobes() {
        return;
    }
    let symbols = text_symbols();
    let names: BTreeSet<&str> = symbols.iter().map(|s| s.name.as_str()).collect();
    let traceable = traceable();
    let blacklist = blacklist();
    let mut clones_by_base: BTreeMap<&str, Vec<&Symbol>> = BTreeMap::new();
    for symbol in symbols.iter().filter(|s| s.module.is_none()) {
        if let Some(base) = clone_base(&symbol.name) {
            clones_by_base.entry(base).or_default().push(symbol);
        }
    }
    let (base, clone) = clones_by_base
        .iter()
        .find(|(base, clones)| {
            clones.len() == 1
                && !names.contains(*base)
                && traceable.contains(&(clones[0].name.clone(), None))
                && !blacklist.contains(&clones[0].name)
        })
        .map(|(base, clones)| (*base, clones[0].name.clone()))
        .expect("the kernel has a function that exists only as a compiler clone");

    let (code, stderr) = attach_and_interrupt(&[base]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("exists only as the compiler clone {clone}")), "{stderr}");
    assert_nothing_attached("after tracing a clone");
}

#[test]
fn function_and_its_clone_are_both_traced() {
    if !skip_unless_kprobes() {
        return;
    }
    let symbols = text_symbols();
    let traceable = traceable();
    let blacklist = blacklist();
    let usable = |name: &str| traceable.contains(&(name.to_owned(), None)) && !blacklist.contains(name);
    let vmlinux: Vec<&Symbol> = symbols.iter().filter(|s| s.module.is_none()).collect();
    let count_of = |name: &str| vmlinux.iter().filter(|s| s.name == name).count();
    let (base, clone) = vmlinux
        .iter()
        .filter_map(|symbol| clone_base(&symbol.name).map(|base| (base, symbol.name.as_str())))
        .find(|(base, clone)| {
            count_of(base) == 1
                && usable(base)
                && usable(clone)
                && vmlinux.iter().filter(|s| clone_base(&s.name) == Some(base)).count() == 1
        })
        .expect("the kernel has a function with both a plain and a clone symbol");

    let (code, stderr) = attach_and_interrupt(&[base]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("`{base}` attaches to 2 places")), "{stderr}");
    assert!(stderr.contains(&format!("compiler clone {clone}")), "{stderr}");
    assert!(stderr.contains("(2 functions)"), "{stderr}");
    assert_nothing_attached("after tracing a function and its clone");
}

#[test]
fn duplicate_static_names_are_all_traced_or_picked() {
    if !skip_unless_kprobes() {
        return;
    }
    let symbols = text_symbols();
    let traceable = traceable();
    let blacklist = blacklist();
    let mut copies: BTreeMap<&str, Vec<&Symbol>> = BTreeMap::new();
    for symbol in symbols.iter().filter(|s| s.module.is_none() && !s.name.starts_with("__pfx_") && !s.name.contains('.')) {
        copies.entry(symbol.name.as_str()).or_default().push(symbol);
    }
    // Aliases at one address are one function.
    let (name, list) = copies
        .iter()
        .find(|(name, list)| {
            let addresses: BTreeSet<&str> = list.iter().map(|s| s.address.as_str()).collect();
            addresses.len() == 2
                && list.len() == 2
                && traceable.contains(&(name.to_string(), None))
                && !blacklist.contains(**name)
        })
        .map(|(name, list)| (*name, list.clone()))
        .expect("the kernel has two static functions with one name");

    let (code, stderr) = attach_and_interrupt(&[name]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("2 functions with this name"), "{stderr}");
    assert!(stderr.contains("--address"), "{stderr}");
    assert_nothing_attached("after tracing two functions with one name");

    let address = list[1].address.as_str();
    let (code, stderr) = attach_and_interrupt(&["--address", address, name]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("functions with this name"), "{stderr}");
    assert!(!stderr.contains("(2 functions)"), "{stderr}");
    assert_nothing_attached("after tracing one copy by address");

    let output = run(common::kprobe_attach().args(["--address", "ffffffff00000000", name]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("no function `{name}` starts at 0xffffffff00000000")), "{stderr}");
    assert!(stderr.contains(&format!("0x{}", list[0].address.trim_start_matches('0'))), "{stderr}");
}

/// Loads the dummy network driver, which the VM's initramfs carries.
fn load_dummy() -> bool {
    let status = Command::new("modprobe").arg("dummy").status().expect("modprobe runs");
    assert!(status.success(), "modprobe dummy failed");
    true
}

fn unload_dummy() {
    let status = Command::new("rmmod").arg("dummy").status().expect("rmmod runs");
    assert!(status.success(), "rmmod dummy failed");
}

#[test]
fn module_function_by_both_names_and_unloaded() {
    if !skip_unless_kprobes() {
        return;
    }
    load_dummy();
    // `ip link set dummy0 up` runs the driver's set_multicast_list
    // (ndo_set_rx_mode), whose argument is typed by the module's BTF.
    let toggler = thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let _ = Command::new("ip").args(["link", "set", "dummy0", "up"]).status();
            let _ = Command::new("ip").args(["link", "set", "dummy0", "down"]).status();
            if fs::metadata("/tmp/stop-toggling").is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let script = r#"{ printf("dev %s\n", str(args.dev->name)); }"#;
    for name in ["dummy:set_multicast_list", "set_multicast_list"] {
        let output = run(common::kprobe_attach().args(["--count", "1", name, script]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{name}: {stderr}");
        assert_eq!(text(&output.stdout).trim(), "dev dummy0", "{name}: {stderr}");
    }
    let output = run(common::kprobe_attach().args(["--count", "1", "dummy:set_multicast_list"]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("set_multicast_list"), "{}", text(&output.stdout));
    fs::write("/tmp/stop-toggling", "").expect("write the stop file");
    toggler.join().expect("toggler thread");
    let _ = fs::remove_file("/tmp/stop-toggling");
    assert_nothing_attached("after tracing a module function");

    unload_dummy();
    let output = run(common::kprobe_attach().arg("dummy:set_multicast_list"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("module `dummy` is not loaded"), "{stderr}");
    assert!(stderr.contains("modprobe dummy"), "{stderr}");
}

#[test]
fn retval_of_void_function_is_an_error() {
    for probe_point in ["kretprobe:kfree", "fexit:kfree"] {
        let output = run(probe().args(["run", "--dry-run", "-e", &format!("{probe_point} {{ printf(\"%d\\n\", retval); }}")]));
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{probe_point}: {stderr}");
        assert!(stderr.contains("`kfree` returns void, so there is no `retval`"), "{probe_point}: {stderr}");
    }
}

/// `genregs_get(struct task_struct *, const struct user_regset *, struct
/// membuf to)` takes a 16-byte struct by value and returns 0. At fexit,
/// the return value follows four 8-byte argument slots; a tracer that
/// counted one slot per argument would read `to.left` instead.
fn struct_by_value_return(mechanism: &str) {
    if mechanism == "kprobe" && !skip_unless_kprobes() {
        return;
    }
    if mechanism == "fentry" && !kernel_expected_to_have("fentry") {
        eprintln!("skipped: this kernel has no fentry");
        return;
    }
    let mut tracer = Tracer::start_script(&[
        "--mechanism",
        mechanism,
        "--return",
        "--count",
        "2",
        "genregs_get",
        r#"{ printf("ret %d\n", retval); }"#,
    ]);
    let output = run(helper().args(["ptrace-getregs", "3"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    tracer.wait_for_stderr("2 output records");
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["ret 0", "ret 0"], "{stderr}");
}

#[test]
fn struct_by_value_return_with_fexit() {
    struct_by_value_return("fentry");
}

#[test]
fn struct_by_value_return_with_kretprobe() {
    struct_by_value_return("kprobe");
}

#[test]
fn blacklisted_function_is_explained() {
    if !skip_unless_kprobes() {
        return;
    }
    let traceable = traceable();
    let symbols: BTreeSet<String> = text_symbols().into_iter().filter(|s| s.module.is_none()).map(|s| s.name).collect();
    let name = blacklist()
        .into_iter()
        .find(|name| symbols.contains(name) && traceable.contains(&(name.clone(), None)))
        .expect("a blacklisted function that ftrace could trace");
    let output = run(common::kprobe_attach().arg(&name));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("`{name}` cannot be traced")), "{stderr}");
    assert!(stderr.contains("kprobe blacklist"), "{stderr}");
    assert_nothing_attached("after a blacklisted function");
}

#[test]
fn wildcard_names_each_function_that_fired() {
    if !skip_unless_kprobes() {
        return;
    }
    let traceable = traceable();
    let matched: BTreeSet<String> = traceable
        .iter()
        .filter(|(name, module)| module.is_none() && name.starts_with("__x64_sys_"))
        .map(|(name, _)| name.clone())
        .collect();
    assert!(matched.len() > 300, "only {} __x64_sys_ functions", matched.len());

    let tracer = Tracer::start_script(&[
        "__x64_sys_*",
        r#"{ @[func, probe] = count(); }"#,
    ]);
    let output = run(helper().args(["open", "/etc/hostname", "/etc/passwd"]));
    assert!(output.status.success());
    let output = run(helper().args(["ptrace-getregs", "1"]));
    assert!(output.status.success());
    tracer.signal(libc::SIGINT);
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let attached: usize = stderr
        .split_once(" functions)")
        .and_then(|(head, _)| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no function count in {stderr}"));
    assert!(attached > 300, "{stderr}");

    let mut seen = BTreeSet::new();
    for line in stdout.lines().filter(|line| line.starts_with("@[")) {
        // @[__x64_sys_openat, kprobe:__x64_sys_openat]: 3
        let inside = line.trim_start_matches("@[").split(']').next().expect("key");
        let (func, probe_name) = inside.split_once(", ").expect("two key parts");
        assert!(matched.contains(func), "{func} does not match __x64_sys_*: {line}");
        assert_eq!(probe_name, format!("kprobe:{func}"), "{line}");
        seen.insert(func.to_owned());
    }
    for expected in ["__x64_sys_openat", "__x64_sys_ptrace", "__x64_sys_wait4"] {
        assert!(seen.contains(expected), "{expected} fired but is not named: {seen:?}");
    }
    assert_nothing_attached("after a wildcard");
}

#[test]
fn wildcard_skips_what_cannot_be_traced_unless_strict() {
    if !skip_unless_kprobes() {
        return;
    }
    // memcpy is never traceable, and `memcp*` matches other functions
    // that are, such as memcpy_orig or memcpy_fromio on some kernels;
    // a pattern with a known untraceable match is built from kallsyms.
    let traceable = traceable();
    let symbols = text_symbols();
    let untraceable: BTreeSet<&str> = symbols
        .iter()
        .filter(|s| s.module.is_none() && !s.name.starts_with("__pfx_") && !s.name.contains('.'))
        .filter(|s| !traceable.contains(&(s.name.clone(), None)))
        .map(|s| s.name.as_str())
        .collect();
    let prefix = ["vfs_", "ksys_", "do_", "__x64_sys_"]
        .into_iter()
        .find(|prefix| untraceable.iter().any(|name| name.starts_with(prefix)))
        .expect("a prefix with an untraceable function");
    let pattern = format!("{prefix}*");

    let (code, stderr) = attach_and_interrupt(&[&pattern, "{ }"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("cannot be traced and"), "{stderr}");
    assert!(stderr.contains("skipped"), "{stderr}");

    let output = run(common::kprobe_attach().args(["--strict", &pattern, "{ }"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--strict"), "{stderr}");
    assert_nothing_attached("after a wildcard with skipped functions");
}

#[test]
fn kretprobe_misses_are_reported() {
    if !skip_unless_kprobes() {
        return;
    }
    // 64 threads sleep inside the function at once, more than the default
    // number of kretprobe instances (max(10, 2 * CPUs)), so the kernel
    // misses some returns.
    let tracer = Tracer::start_script(&[
        "-v",
        "--mechanism",
        "kprobe",
        "--return",
        "hrtimer_nanosleep",
        r#"{ @ = count(); }"#,
    ]);
    let output = helper()
        .args(["sleep-threads", "64", "1000"])
        .stdout(Stdio::piped())
        .output()
        .expect("sleep-threads runs");
    assert!(output.status.success());
    tracer.signal(libc::SIGINT);
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    if !kernel_counts_kretprobe_misses() {
        assert!(stderr.contains("cannot count missed kretprobe returns"), "{stderr}");
        eprintln!("skipped the count check: this kernel does not report kretprobe misses for perf kprobes");
        return;
    }
    let line = stderr
        .lines()
        .find(|line| line.contains("returns missed"))
        .unwrap_or_else(|| panic!("no miss report; stdout {stdout}, stderr {stderr}"));
    let missed: u64 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable miss report {line:?}"));
    let counted: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("@: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(missed > 0, "{stderr}");
    // Every sleeping thread's return was either counted or missed.
    assert!(counted + missed >= 64, "counted {counted} + missed {missed} < 64: {stderr}");
}

/// Linux 6.7 and later report missed kretprobe returns in the link
/// information of perf kprobes.
fn kernel_counts_kretprobe_misses() -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 7)
}

#[test]
fn maxactive_removes_kretprobe_misses() {
    if !skip_unless_kprobes() {
        return;
    }
    // With more instances than sleeping threads, no return is missed, and
    // the tracefs event that carries the limit is gone afterwards.
    let tracer = Tracer::start_script(&[
        "--mechanism",
        "kprobe",
        "--return",
        "--maxactive",
        "128",
        "hrtimer_nanosleep",
        r#"{ @ = count(); }"#,
    ]);
    let output = run(helper().args(["sleep-threads", "64", "1000"]));
    assert!(output.status.success());
    tracer.signal(libc::SIGINT);
    let (code, stdout, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("returns missed"), "{stderr}");
    let counted: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("@: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(counted >= 64, "counted {counted} returns of 64 sleeps: {stdout}");
    assert_nothing_attached("after a kretprobe with --maxactive");

    // Without the higher limit the same load misses returns, which the
    // tracefs event counts on every kernel.
    let tracer = Tracer::start_script(&[
        "--mechanism",
        "kprobe",
        "--return",
        "--maxactive",
        "2",
        "hrtimer_nanosleep",
        r#"{ @ = count(); }"#,
    ]);
    let output = run(helper().args(["sleep-threads", "64", "1000"]));
    assert!(output.status.success());
    tracer.signal(libc::SIGINT);
    let (code, _, stderr) = tracer.finish();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("returns missed"), "{stderr}");
    assert_nothing_attached("after a kretprobe with --maxactive 2");
}
