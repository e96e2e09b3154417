//! Integration tests of `probe mitigate`, which need an active BPF LSM:
//! they run inside the test VM (`cargo xtask test --tier vm`). A kernel
//! booted without `bpf` in its LSM list runs only
//! `no_bpf_lsm_is_explained`, which the runner selects by setting
//! `PROBE_EXPECT_NO_BPF_LSM`; every other test skips there, and fails on a
//! kernel that the runner states has the LSM (`lsm` in
//! `PROBE_EXPECT_KERNEL_FEATURES`) when it is missing.
//!
//! Every test starts and ends with no mitigation applied.

mod common;

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{bin, helper, kernel_expected_to_have, run, text};

const ROOT: &str = "/sys/fs/bpf/probe/mitigations";

fn probe() -> Command {
    Command::new(bin("probe"))
}

/// Tells whether the BPF LSM is active; prints why a test skips when it
/// is not, and fails when the runner states it must be.
fn bpf_lsm_active() -> bool {
    let active = fs::read_to_string("/sys/kernel/security/lsm")
        .map(|list| list.trim().split(',').any(|name| name == "bpf"))
        .unwrap_or(false);
    if !active {
        assert!(
            !kernel_expected_to_have("lsm"),
            "this kernel should have the BPF LSM active but /sys/kernel/security/lsm lacks `bpf`"
        );
        eprintln!("skipped: the BPF LSM is not active on this kernel");
    }
    active
}

/// Runs `probe mitigate ARGS` and returns its output.
fn mitigate(args: &[&str]) -> Output {
    run(probe().arg("mitigate").args(args))
}

/// Applies a rule and returns its id, failing the test on an error.
fn apply(args: &[&str]) -> u32 {
    let output = mitigate(args);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "probe mitigate {args:?} failed: {}{stdout}",
        text(&output.stderr)
    );
    parse_id(&stdout).unwrap_or_else(|| panic!("no id in {stdout:?}"))
}

/// Parses the id of `Applied mitigation ID: ...`.
fn parse_id(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("Applied mitigation "))
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
}

/// Removes every mitigation and waits until no mitigation program is
/// loaded.
fn remove_all() {
    let output = mitigate(&["remove", "--all"]);
    assert!(output.status.success(), "remove --all failed: {}", text(&output.stderr));
    wait_for_no_programs("after remove --all");
}

/// Names of the loaded mitigation programs (all start with `mt_`). A
/// program that the kernel frees between the helper's listing of its id
/// and its info read fails the listing, which is then tried again.
fn mitigation_programs() -> Vec<String> {
    let mut attempts = 0;
    loop {
        let output = run(helper().args(["bpf-objects", "--name-prefix", "mt_"]));
        attempts += 1;
        if !output.status.success() && attempts < 5 {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        assert!(output.status.success(), "bpf-objects failed {attempts} times: {}", text(&output.stderr));
        return text(&output.stdout)
            .lines()
            .filter(|line| line.starts_with("prog "))
            .filter_map(|line| line.split_whitespace().nth(3).map(str::to_owned))
            .collect();
    }
}

fn wait_for_no_programs(context: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = mitigation_programs();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{context}: programs still loaded after 10 s: {left:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs the helper with `args` and returns the number it printed after
/// `name`.
fn helper_result(args: &[&str], name: &str) -> i64 {
    let output = run(helper().args(args));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "helper {args:?} failed: {}{stdout}", text(&output.stderr));
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("helper {args:?} printed no `{name}` line: {stdout:?}"))
}

/// socket(AF_PACKET, SOCK_RAW) as the helper with extra identity options.
fn packet_socket(identity: &[&str]) -> i64 {
    let mut args = identity.to_vec();
    args.extend(["socket", "17", "3"]);
    helper_result(&args, "socket")
}

fn inet_socket() -> i64 {
    helper_result(&["socket", "2", "2"], "socket")
}

const EPERM: i64 = -1;
const ENOEXEC: i64 = -8;

/// A row of `probe mitigate list`: the rule, mode and counts.
#[derive(Debug)]
struct Row {
    rule: String,
    mode: String,
    denied: u64,
    audited: u64,
}

fn list_rows() -> Vec<(u32, Row)> {
    let output = mitigate(&["list"]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "list failed: {}{stdout}", text(&output.stderr));
    let mut lines = stdout.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    if header.starts_with("No mitigations") {
        return Vec::new();
    }
    let start = |name: &str| header.find(name).unwrap_or_else(|| panic!("no {name} column in {header:?}"));
    let (rule, mode, scope, denied, audited) =
        (start("RULE"), start("MODE"), start("SCOPE"), start("DENIED"), start("AUDITED"));
    lines
        .map(|line| {
            let cell = |from: usize, to: usize| line.get(from..to.min(line.len())).unwrap_or("").trim().to_owned();
            let id = cell(0, rule).parse().expect("numeric id");
            let row = Row {
                rule: cell(rule, mode),
                mode: cell(mode, scope),
                denied: cell(denied, audited).parse().expect("denied count"),
                audited: cell(audited, line.len()).parse().expect("audited count"),
            };
            (id, row)
        })
        .collect()
}

fn row(id: u32) -> Row {
    list_rows()
        .into_iter()
        .find_map(|(row_id, row)| (row_id == id).then_some(row))
        .unwrap_or_else(|| panic!("mitigation {id} is not listed"))
}

/// Waits until `condition` holds, for at most `timeout`.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(250));
    }
    condition()
}

#[test]
fn socket_denied_until_deadline() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let applied_at = Instant::now();
    let id = apply(&["deny-socket", "--family", "packet", "--ttl", "20s"]);

    assert_eq!(packet_socket(&[]), EPERM, "AF_PACKET must be denied");
    assert!(inet_socket() >= 0, "AF_INET must still work");
    let listed = row(id);
    assert_eq!(listed.rule, "deny-socket --family packet");
    assert_eq!(listed.mode, "enforce");
    assert_eq!(listed.denied, 1, "{listed:?}");

    // Past the deadline the program allows the socket by itself: no probe
    // command runs in between, and the mitigation is still pinned.
    let works_again = wait_until(Duration::from_secs(40), || packet_socket(&[]) >= 0);
    assert!(works_again, "AF_PACKET still denied {:?} after a 20 s deadline", applied_at.elapsed());
    assert!(applied_at.elapsed() >= Duration::from_secs(19), "allowed too early: {:?}", applied_at.elapsed());
    assert!(Path::new(ROOT).join(id.to_string()).exists(), "only a probe command removes it");

    let output = mitigate(&["list"]);
    assert!(
        text(&output.stderr).contains(&format!("removed expired mitigation {id} (deny-socket --family packet)")),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(text(&output.stdout).contains("No mitigations applied."), "{}", text(&output.stdout));
    wait_for_no_programs("after expiry");
}

#[test]
fn deadline_holds_after_sigkill() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let applied_at = Instant::now();
    let mut child = probe()
        .args(["mitigate", "deny-socket", "--family", "packet", "--ttl", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probe starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    // SIGKILL as soon as the mitigation is applied, before its self-test
    // result or anything else.
    child.kill().expect("SIGKILL probe");
    let _ = child.wait();
    assert!(first.starts_with("Applied mitigation "), "first line: {first:?}");

    assert_eq!(packet_socket(&[]), EPERM, "the mitigation outlives the killed command");
    let works_again = wait_until(Duration::from_secs(40), || packet_socket(&[]) >= 0);
    assert!(works_again, "AF_PACKET still denied after the deadline");
    assert!(applied_at.elapsed() >= Duration::from_secs(19), "allowed too early");
    remove_all();
}

#[test]
fn failure_half_way_leaves_nothing() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let output = run(probe()
        .args(["mitigate", "deny-socket", "--family", "packet"])
        .env("PROBE_INJECT_FAULT", "mitigate-after-attach"));
    assert_eq!(output.status.code(), Some(1), "stderr: {}", text(&output.stderr));
    assert!(text(&output.stderr).contains("injected failure"), "{}", text(&output.stderr));
    let entries: Vec<PathBuf> = fs::read_dir(ROOT)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "left in {ROOT}: {entries:?}");
    wait_for_no_programs("after a failure half-way");
    assert!(packet_socket(&[]) >= 0, "nothing may stay attached");
}

#[test]
fn audit_records_without_denying() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let id = apply(&["deny-socket", "--family", "packet", "--audit", "--ttl", "10m"]);
    for _ in 0..3 {
        assert!(packet_socket(&["--comm", "audited-proc"]) >= 0, "audit mode must not deny");
    }
    let listed = row(id);
    assert_eq!(listed.mode, "audit");
    assert_eq!((listed.denied, listed.audited), (0, 3), "{listed:?}");

    let output = mitigate(&["log", &id.to_string()]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "log failed: {}", text(&output.stderr));
    let records: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(records.len(), 3, "{stdout}");
    for record in records {
        assert!(record.contains("audited"), "{record}");
        assert!(record.contains("audited-proc"), "{record}");
        assert!(record.contains("socket(family=packet, type=raw)"), "{record}");
    }
    remove_all();
}

#[test]
fn list_and_remove_round_trip() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let socket_id = apply(&["deny-socket", "--family", "packet"]);
    let ptrace_id = apply(&["deny-ptrace", "--ttl", "1h"]);
    let ids: Vec<u32> = list_rows().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [socket_id, ptrace_id]);
    assert_eq!(packet_socket(&[]), EPERM);
    assert_eq!(helper_result(&["ptrace-attach"], "ptrace_attach"), EPERM);

    let output = mitigate(&["remove", &socket_id.to_string()]);
    assert!(output.status.success(), "remove failed: {}", text(&output.stderr));
    assert!(text(&output.stdout).contains(&format!("Removed mitigation {socket_id}")), "{}", text(&output.stdout));
    assert!(wait_until(Duration::from_secs(5), || packet_socket(&[]) >= 0), "the removed rule still denies");
    assert_eq!(helper_result(&["ptrace-attach"], "ptrace_attach"), EPERM, "the other rule must stay");
    let ids: Vec<u32> = list_rows().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [ptrace_id]);

    let output = mitigate(&["remove", "999"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no mitigation with id 999"), "{}", text(&output.stderr));

    remove_all();
    assert!(list_rows().is_empty());
    assert_eq!(helper_result(&["ptrace-attach"], "ptrace_attach"), 0);
}

/// socket(AF_UNIX, TYPE) as the helper with extra identity options; any
/// user may create these, so only a mitigation denies them.
fn unix_socket(identity: &[&str], socket_type: &str) -> i64 {
    let mut args = identity.to_vec();
    args.extend(["socket", "1", socket_type]);
    helper_result(&args, "socket")
}

#[test]
fn socket_type_and_scope() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let id = apply(&["deny-socket", "--family", "unix", "--type", "dgram", "--scope", "uid=65534", "--except-comm", "spared"]);
    assert!(unix_socket(&[], "2") >= 0, "root is outside the scope");
    assert_eq!(unix_socket(&["--uid", "65534"], "2"), EPERM, "uid 65534 is in the scope");
    assert!(unix_socket(&["--uid", "65534", "--comm", "spared"], "2") >= 0, "an excepted comm is spared");
    assert!(unix_socket(&["--uid", "65534"], "1") >= 0, "only SOCK_DGRAM is denied");
    assert_eq!(row(id).denied, 1, "the one denial is the mitigation's");
    remove_all();
}

#[test]
fn cgroup_scope() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let root = Path::new("/sys/fs/cgroup");
    if !root.join("cgroup.procs").exists() {
        fs::create_dir_all(root).expect("create /sys/fs/cgroup");
        let status = Command::new("mount").args(["-t", "cgroup2", "none", "/sys/fs/cgroup"]).status();
        assert!(status.is_ok_and(|status| status.success()), "mounting cgroup2 failed");
    }
    let cgroup = root.join("probe-test");
    let _ = fs::create_dir(&cgroup);
    apply(&["deny-socket", "--family", "packet", "--scope", "cgroup=probe-test"]);
    assert!(packet_socket(&[]) >= 0, "the root cgroup is outside the scope");
    let cgroup_arg = cgroup.to_string_lossy().into_owned();
    assert_eq!(packet_socket(&["--cgroup", &cgroup_arg]), EPERM, "the scoped cgroup is denied");
    remove_all();
    let _ = fs::remove_dir(&cgroup);
}

/// Points the kernel's module loader at a script that records each
/// request in `log`, and returns the previous loader path.
fn fake_modprobe(log: &Path) -> String {
    let script = Path::new("/tmp/fake-modprobe");
    fs::write(script, format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display())).expect("write the script");
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(script, fs::Permissions::from_mode(0o755)).expect("make the script executable");
    let previous = fs::read_to_string("/proc/sys/kernel/modprobe").expect("read the modprobe path");
    fs::write("/proc/sys/kernel/modprobe", script.to_string_lossy().as_bytes()).expect("set the modprobe path");
    previous.trim().to_owned()
}

fn requested_modules(log: &Path) -> String {
    fs::read_to_string(log).unwrap_or_default()
}

#[test]
fn module_autoload_denied() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let log = Path::new("/tmp/modprobe-requests");
    let _ = fs::remove_file(log);
    let previous = fake_modprobe(log);

    // AF_DECnet (12) and AF_NETBEUI (13) have no family in Linux 6.1 and
    // later, so each socket of them requests a module.
    helper_result(&["socket", "12", "2"], "socket");
    assert!(
        wait_until(Duration::from_secs(5), || requested_modules(log).contains("net-pf-12")),
        "without a rule the kernel runs the loader: {:?}",
        requested_modules(log)
    );

    let _ = fs::remove_file(log);
    let id = apply(&["deny-module-autoload", "net-pf-12"]);
    helper_result(&["socket", "12", "2"], "socket");
    helper_result(&["socket", "13", "2"], "socket");
    assert!(
        wait_until(Duration::from_secs(5), || requested_modules(log).contains("net-pf-13")),
        "other modules still load: {:?}",
        requested_modules(log)
    );
    assert!(!requested_modules(log).contains("net-pf-12"), "{:?}", requested_modules(log));
    assert_eq!(row(id).denied, 1);
    remove_all();

    let _ = fs::remove_file(log);
    apply(&["deny-module-autoload"]);
    helper_result(&["socket", "13", "2"], "socket");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(requested_modules(log), "", "every autoload is denied");
    remove_all();
    fs::write("/proc/sys/kernel/modprobe", previous).expect("restore the modprobe path");
}

#[test]
fn module_load_denied() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let module = "/tmp/invalid.ko";
    helper_result_ok(&["write-invalid-module", module]);
    assert_eq!(helper_result(&["init-module"], "init_module"), ENOEXEC);
    assert_eq!(helper_result(&["finit-module", module], "finit_module"), ENOEXEC);

    let id = apply(&["deny-module-load"]);
    assert_eq!(helper_result(&["init-module"], "init_module"), EPERM);
    assert_eq!(helper_result(&["finit-module", module], "finit_module"), EPERM);
    assert!(helper_result(&["socket", "2", "2"], "socket") >= 0, "unrelated operations still work");
    assert_eq!(row(id).denied, 2);
    remove_all();
}

fn helper_result_ok(args: &[&str]) {
    let output = run(helper().args(args));
    assert!(output.status.success(), "helper {args:?} failed: {}", text(&output.stderr));
}

#[test]
fn userns_denied_for_unprivileged() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    assert_eq!(helper_result(&["--uid", "65534", "unshare-userns"], "unshare"), 0);
    apply(&["deny-userns"]);
    assert_eq!(helper_result(&["--uid", "65534", "unshare-userns"], "unshare"), EPERM);
    assert_eq!(helper_result(&["unshare-userns"], "unshare"), 0, "root is spared by default");
    remove_all();

    apply(&["deny-userns", "--all-users"]);
    assert_eq!(helper_result(&["unshare-userns"], "unshare"), EPERM);
    remove_all();
}

#[test]
fn exec_denied_for_one_file() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    let dir = Path::new("/tmp/exec-test");
    let _ = fs::create_dir(dir);
    let denied = dir.join("true");
    let other = dir.join("other/true");
    fs::create_dir_all(other.parent().expect("parent")).expect("create dir");
    fs::copy("/bin/busybox", &denied).expect("copy busybox");
    fs::copy("/bin/busybox", &other).expect("copy busybox");
    let hard_link = dir.join("hard-link");
    let _ = fs::remove_file(&hard_link);
    fs::hard_link(&denied, &hard_link).expect("hard link");
    // busybox picks its applet from argv[0]; `true` exits with 0.
    let exec = |path: &Path| helper_result(&["exec", &path.to_string_lossy(), "true"], "exec");
    assert_eq!(exec(&denied), 0);

    let output = mitigate(&["deny-exec", &denied.to_string_lossy()]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("not verified"), "{}", text(&output.stdout));
    assert_eq!(exec(&denied), EPERM);
    assert_eq!(exec(&hard_link), EPERM, "the file is denied under any name");
    assert_eq!(exec(&other), 0, "another copy is another file");
    remove_all();

    let output = mitigate(&["deny-exec", &bin("probe").to_string_lossy()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("would stop this tool from running"), "{}", text(&output.stderr));
    wait_for_no_programs("after a refused deny-exec");
}

#[test]
fn ptrace_attach_denied() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    assert_eq!(helper_result(&["ptrace-attach"], "ptrace_attach"), 0);
    apply(&["deny-ptrace"]);
    assert_eq!(helper_result(&["ptrace-attach"], "ptrace_attach"), EPERM);
    assert_eq!(helper_result(&["ptrace-attach"], "read_environ"), 0, "reading /proc files still works");
    assert_eq!(helper_result(&["ptrace-traceme"], "ptrace_traceme"), EPERM);
    remove_all();
    assert_eq!(helper_result(&["ptrace-traceme"], "ptrace_traceme"), 0);
}

#[test]
fn bpf_denied_but_root_or_tool_spared() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    apply(&["deny-bpf"]);
    assert_ne!(helper_result(&["bpf"], "bpf"), EPERM, "root is spared");
    // Linux 6.1 rejects this call by itself (kernel.unprivileged_bpf_disabled)
    // before the LSM hook; Linux 6.12 reaches the hook.
    assert_eq!(helper_result(&["--uid", "65534", "bpf"], "bpf"), EPERM);
    remove_all();

    apply(&["deny-bpf", "--spare", "tool", "--ttl", "10m"]);
    assert_eq!(helper_result(&["bpf"], "bpf"), EPERM, "root's other programs are denied");
    assert_eq!(list_rows().len(), 1, "the tool itself still works");
    remove_all();
    assert_ne!(helper_result(&["bpf"], "bpf"), EPERM);

    let output = mitigate(&["deny-bpf", "--spare", "none"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("could not be listed or removed"), "{}", text(&output.stderr));
}

#[test]
fn invalid_values_are_named() {
    let cases: [(&[&str], &str); 5] = [
        (&["deny-socket", "--family", "pakcet"], "unknown socket family `pakcet`; did you mean: packet?"),
        (&["deny-socket", "--family", "packet", "--ttl", "20"], "invalid duration `20`"),
        (&["deny-socket", "--family", "packet", "--scope", "user=1"], "invalid scope `user=1`"),
        (&["deny-exec", "/no/such/file"], "cannot deny exec of /no/such/file"),
        (&["log", "4242"], "no mitigation with id 4242"),
    ];
    for (args, expected) in cases {
        let output = mitigate(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        assert!(text(&output.stderr).contains(expected), "{args:?}: {}", text(&output.stderr));
    }
}

/// Runs an example script from `examples/` with `sh`.
fn run_example(name: &str) -> Output {
    let dir = std::env::var("PROBE_EXAMPLES_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../examples").to_owned());
    let path = Path::new(&dir).join(name);
    run(Command::new("sh").arg(&path).env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", common::bin_dir().display())))
}

#[test]
fn example_mitigations_apply() {
    if !bpf_lsm_active() {
        return;
    }
    remove_all();
    for (name, rule) in [
        ("mitigate-af-packet.sh", "deny-socket --family packet"),
        ("mitigate-unprivileged-userns.sh", "deny-userns"),
        ("mitigate-module-autoload.sh", "deny-module-autoload"),
    ] {
        let output = run_example(name);
        assert!(output.status.success(), "{name}: {}{}", text(&output.stderr), text(&output.stdout));
        let rules: Vec<String> = list_rows().into_iter().map(|(_, row)| row.rule).collect();
        assert!(rules.iter().any(|listed| listed.starts_with(rule)), "{name}: {rules:?}");
        remove_all();
    }
}

#[test]
fn no_bpf_lsm_is_explained() {
    if std::env::var_os("PROBE_EXPECT_NO_BPF_LSM").is_none() {
        eprintln!("skipped: the kernel was not booted without the BPF LSM (PROBE_EXPECT_NO_BPF_LSM is unset)");
        return;
    }
    let output = mitigate(&["deny-socket", "--family", "packet", "--ttl", "20s"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("the BPF LSM is not active on this kernel"), "{stderr}");
    assert!(stderr.contains(",bpf` to the kernel command line"), "{stderr}");
    let entries: Vec<PathBuf> = fs::read_dir(ROOT)
        .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "left in {ROOT}: {entries:?}");
    assert!(mitigation_programs().is_empty(), "programs loaded: {:?}", mitigation_programs());
    assert!(packet_socket(&[]) >= 0);

    // The kernel attaches LSM programs here but never runs them, so a
    // script that denies must not pretend to work.
    let output = probe_run(&["-e", "lsm:socket_create { deny(); }"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("lsm probes would never run"), "{stderr}");
    assert!(stderr.contains("the BPF LSM is not active on this kernel"), "{stderr}");
}

/// Runs `probe run ARGS` and returns its output.
fn probe_run(args: &[&str]) -> Output {
    run(probe().arg("run").args(args))
}

#[test]
fn script_deny_in_lsm_probe() {
    if !bpf_lsm_active() {
        return;
    }
    let script = r#"lsm:socket_create /pid == cpid && args.family == 17/ { printf("denied %s\n", comm); deny(EACCES); }"#;
    let helper_path = bin("probe-test-helper");
    let command = format!("{} socket 17 3", helper_path.display());
    let output = probe_run(&["-e", script, "-c", &command]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    assert!(stdout.contains("socket -13"), "deny(EACCES) returns -EACCES: {stdout}");
    assert!(stdout.contains("denied probe-test-help"), "{stdout}");

    // Other processes and families are not affected, and nothing stays
    // attached after the run.
    assert!(packet_socket(&[]) >= 0);
    let command = format!("{} socket 2 2", helper_path.display());
    let output = probe_run(&["-e", script, "-c", &command]);
    let stdout = text(&output.stdout);
    assert!(stdout.lines().any(|line| line.starts_with("socket ") && !line.starts_with("socket -")), "{stdout}");
}

#[test]
fn example_deny_vsock() {
    if !bpf_lsm_active() {
        return;
    }
    let dir = std::env::var("PROBE_EXAMPLES_DIR").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../examples").to_owned());
    let script = Path::new(&dir).join("deny_vsock.bt");
    let command = format!("{} socket 40 1", bin("probe-test-helper").display());
    let output = probe_run(&[&script.to_string_lossy(), "-c", &command]);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}{stdout}", text(&output.stderr));
    assert!(stdout.contains("socket -1"), "{stdout}");
    assert!(stdout.contains("denied vsock socket for probe-test-help"), "{stdout}");
}
