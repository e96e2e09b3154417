//! Scenarios of `probe session` and `probe top`, shared by the host tests
//! (tracepoints) and the VM tests (kprobes and fentry). Each takes the
//! attach point to count `kill(2)` calls at; the workload is
//! `probe-test-helper kill-zero`, whose comm is `probe-test-help`.

#![allow(dead_code, reason = "the VM tests have no tmux or curl, so they leave the top and export scenarios unused")]

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::common::{bin, helper, run, text};

pub const ROOT: &str = "/sys/fs/bpf/probe/sessions";

pub fn probe(args: &[&str]) -> Output {
    run(Command::new(bin("probe")).args(args))
}

/// Runs `probe session ARGS` and fails the test unless it succeeds.
pub fn session_ok(args: &[&str]) -> Output {
    let output = probe(&[&["session"], args].concat());
    assert!(
        output.status.success(),
        "probe session {args:?} failed with {:?}:\nstdout: {}\nstderr: {}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

/// Calls kill(1, 0) `count` times from probe-test-helper.
pub fn kills(count: usize) {
    let pids: Vec<String> = vec!["1".to_owned(); count];
    let output = run(helper().arg("kill-zero").args(&pids));
    assert!(output.status.success(), "kill-zero: {}", text(&output.stderr));
}

/// Returns a script counting the helper's kill calls at `point`, with BEGIN and
/// END output.
pub fn counting_script(point: &str) -> String {
    format!(
        "BEGIN {{ printf(\"begin\\n\"); }}\n\
         {point} /comm == \"probe-test-help\"/ {{ @kills = count(); printf(\"kill seen\\n\"); }}\n\
         END {{ printf(\"end of session\\n\"); }}"
    )
}

fn session_dir(name: &str) -> std::path::PathBuf {
    Path::new(ROOT).join(name)
}

/// Lists what is left of session `name` in bpffs and in the run
/// directory's partial starts.
fn leftovers(name: &str) -> Vec<String> {
    let mut left = Vec::new();
    if session_dir(name).exists() {
        left.push(session_dir(name).display().to_string());
    }
    if let Ok(entries) = std::fs::read_dir(ROOT) {
        left.extend(
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|entry| entry.starts_with("partial-")),
        );
    }
    left
}

/// Returns the kernel ids of session `name`'s programs, from its
/// description in bpffs.
pub fn program_ids(name: &str) -> Vec<u32> {
    let meta = std::fs::read_link(session_dir(name).join("meta_0")).expect("the session's description");
    meta.to_string_lossy()
        .lines()
        .filter_map(|line| {
            let value = line.strip_prefix("probe=").or_else(|| line.strip_prefix("end="))?;
            value.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// Waits until none of the programs `ids` is loaded. The kernel frees a
/// program shortly after its last link and pin are gone; one still loaded
/// after 10 s is a leak. Other tools' programs on the same kernel do not
/// matter, unlike in `common::assert_nothing_attached`.
pub fn assert_programs_gone(ids: &[u32], context: &str) {
    assert!(!ids.is_empty(), "{context}: no program ids to check");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = run(helper().arg("bpf-objects"));
        let listing = text(&output.stdout);
        let left: Vec<u32> = listing
            .lines()
            .filter_map(|line| line.strip_prefix("prog ")?.split(' ').next()?.parse().ok())
            .filter(|id| ids.contains(id))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{context}: programs {left:?} still loaded 10 s later");
        thread::sleep(Duration::from_millis(100));
    }
}

fn stats_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default().trim().to_owned()
}

/// Start, the starting process gone, events, show, list, attach with a
/// second reader refused, stop, and nothing left.
pub fn lifecycle(name: &str, point: &str) {
    let stats_before = stats_sysctl();
    let script = counting_script(point);
    let started = session_ok(&["start", name, "--stats", "--ttl", "10m", "-e", &script]);
    // `output()` returned, so the starting process has exited.
    assert_eq!(text(&started.stdout), "begin\n", "BEGIN runs at start");
    let stderr = text(&started.stderr);
    assert!(stderr.contains(&format!("Started session {name} with 1 probe")), "{stderr}");
    assert!(stderr.contains("turned on kernel.bpf_stats_enabled") || stderr.contains("already on"), "{stderr}");
    assert_eq!(stats_sysctl(), "1");
    assert!(session_dir(name).join("meta_0").symlink_metadata().is_ok());
    let ids = program_ids(name);
    assert_eq!(ids.len(), 2, "one probe and one END program: {ids:?}");

    kills(3);
    let shown = session_ok(&["show", name]);
    assert!(text(&shown.stdout).contains("@kills: 3"), "show: {}", text(&shown.stdout));

    let listed = session_ok(&["list"]);
    let listing = text(&listed.stdout);
    let row = listing
        .lines()
        .find(|line| line.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in:\n{listing}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    // SESSION AGE LEFT LOST PROBE HITS RUN-TIME PER-HIT
    assert_eq!(columns[3], "0", "lost: {row}");
    // A glob is named by its pattern, or by the function it matched where
    // each function gets its own program.
    assert!(columns[4].starts_with(point.trim_end_matches(['?', '*'])), "probe: {row}");
    let hits: u64 = columns[5].parse().unwrap_or_else(|_| panic!("hits in {row}"));
    assert!(hits >= 3, "hits: {row}");
    assert!(columns[6].ends_with('s'), "run time: {row}");
    assert_ne!(columns[6], "0ns", "run time: {row}");
    assert!(columns[2].starts_with("9m") || columns[2].starts_with("10m"), "time left: {row}");

    // The first reader gets the records written so far, then new ones.
    let mut reader = Command::new(bin("probe"))
        .args(["session", "attach", name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("probe session attach starts");
    let mut reader_err = BufReader::new(reader.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    reader_err.read_line(&mut line).expect("reader's first line");
    assert!(line.starts_with("Reading the output of session"), "{line}");
    let second = probe(&["session", "attach", name]);
    assert_eq!(second.status.code(), Some(1), "a second reader is refused");
    let second_err = text(&second.stderr);
    assert!(second_err.contains("already has a reader"), "{second_err}");
    assert!(second_err.contains(&reader.id().to_string()), "{second_err}");
    let refused_stop = probe(&["session", "stop", name]);
    assert!(!refused_stop.status.success(), "stop waits for the reader to end");
    assert!(text(&refused_stop.stderr).contains("has a reader"), "{}", text(&refused_stop.stderr));

    kills(2);
    let mut stdout = BufReader::new(reader.stdout.take().expect("piped stdout"));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 && Instant::now() < deadline {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("reader output") == 0 {
            break;
        }
        seen.push(line);
    }
    assert_eq!(seen, vec!["kill seen\n"; 5], "3 records from before the reader and 2 after");
    // SAFETY: kill has no memory-safety preconditions; the pid is our
    // unreaped child.
    assert_eq!(unsafe { libc::kill(reader.id() as i32, libc::SIGINT) }, 0);
    let status = reader.wait().expect("reader exits");
    assert!(status.success(), "Ctrl-C ends the reader normally: {status}");
    assert!(session_dir(name).exists(), "the session outlives its reader");

    let stopped = session_ok(&["stop", name]);
    let stdout = text(&stopped.stdout);
    assert!(stdout.contains("end of session\n"), "END runs at stop: {stdout}");
    assert!(stdout.contains("@kills: 5"), "final maps at stop: {stdout}");
    assert!(text(&stopped.stderr).contains(&format!("Stopped session {name}.")), "{}", text(&stopped.stderr));
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    assert_programs_gone(&ids, "after session stop");
    assert_eq!(stats_sysctl(), stats_before, "kernel.bpf_stats_enabled is restored");
    let again = probe(&["session", "stop", name]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains(&format!("no session named `{name}`")), "{}", text(&again.stderr));
}

/// Reads the sum of every value of the pinned per-CPU map at `path`
/// without a `probe` command, which would remove an expired session.
fn pinned_total(path: &Path) -> u64 {
    let output = run(helper().arg("map-sum").arg(path));
    assert!(output.status.success(), "map-sum {}: {}", path.display(), text(&output.stderr));
    text(&output.stdout).trim().parse().unwrap_or_else(|_| panic!("map-sum printed {:?}", text(&output.stdout)))
}

/// Past the deadline the programs count nothing, and the next command
/// removes the session. `ttl_seconds` must cover the start itself, which
/// takes seconds in an emulated VM.
pub fn ttl_expiry(name: &str, point: &str, ttl_seconds: u64) {
    let script = format!("{point} /comm == \"probe-test-help\"/ {{ @kills = count(); }}");
    let ttl = format!("{ttl_seconds}s");
    let started = Instant::now();
    session_ok(&["start", name, "--ttl", &ttl, "-e", &script]);
    let map = session_dir(name).join("map_0");
    let ids = program_ids(name);

    kills(2);
    assert_eq!(pinned_total(&map), 2, "counted before the deadline");

    // Wait for the deadline that the session recorded, on the clock that
    // the programs read.
    let meta = std::fs::read_link(session_dir(name).join("meta_0")).expect("the session's description");
    let deadline: u64 = meta
        .to_string_lossy()
        .lines()
        .find_map(|line| line.strip_prefix("deadline_boot_ns="))
        .and_then(|value| value.parse().ok())
        .expect("deadline_boot_ns in the description");
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
    let now = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
    assert!(deadline > now, "the deadline passed during the start, {:?} after it began", started.elapsed());
    assert!(deadline - now <= ttl_seconds * 1_000_000_000, "the deadline is more than {ttl_seconds} s away");
    thread::sleep(Duration::from_nanos(deadline - now) + Duration::from_millis(200));
    kills(4);
    assert_eq!(pinned_total(&map), 2, "nothing counted after the deadline");

    let listed = session_ok(&["list"]);
    assert!(
        text(&listed.stderr).contains(&format!("removed expired session {name}")),
        "{}",
        text(&listed.stderr)
    );
    assert!(!text(&listed.stdout).contains(name), "{}", text(&listed.stdout));
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    assert_programs_gone(&ids, "after the session expired");
}

/// Returns the program ids that a `probe session start -v` logged as
/// attached.
fn logged_program_ids(stderr: &str) -> Vec<u32> {
    stderr
        .lines()
        .filter_map(|line| line.split("(program id ").nth(1)?.strip_suffix(')')?.parse().ok())
        .collect()
}

/// Checks that a failure while attaching the second probe leaves
/// nothing pinned or attached.
pub fn half_way_failure(name: &str, first: &str, second: &str) {
    let script = format!("{first} {{ @a = count(); }}\n{second} {{ @b = count(); }}");
    let output = run(Command::new(bin("probe"))
        .args(["session", "start", "-v", name, "-e", &script])
        .env("PROBE_INJECT_FAULT", "session-attach-2"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("injected failure at `session-attach-2`"), "{stderr}");
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    let ids = logged_program_ids(&stderr);
    assert_eq!(ids.len(), 1, "the first probe was attached before the failure: {stderr}");
    assert_programs_gone(&ids, "after a failed start");

    let output = run(Command::new(bin("probe"))
        .args(["session", "start", "-v", name, "-e", &script])
        .env("PROBE_INJECT_FAULT", "session-before-publish"));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    let ids = logged_program_ids(&stderr);
    assert_eq!(ids.len(), 2, "both probes were attached before the failure: {stderr}");
    assert_programs_gone(&ids, "after a start that failed once everything was pinned");
}

/// `stop` after part of the bpffs state was removed by hand removes the
/// rest and lists what it found.
pub fn stop_after_manual_removal(name: &str, point: &str) {
    let script = format!("{point} {{ @calls = count(); }}");
    session_ok(&["start", name, "-e", &script]);
    let dir = session_dir(name);
    let ids = program_ids(name);
    std::fs::remove_file(dir.join("map_0")).expect("remove map_0 by hand");
    std::fs::remove_file(dir.join("meta_0")).expect("remove meta_0 by hand");
    let stopped = session_ok(&["stop", name]);
    let stderr = text(&stopped.stderr);
    assert!(stderr.contains(&format!("session {name} could not be read")), "{stderr}");
    assert!(stderr.contains("Removed what was left in"), "{stderr}");
    assert!(stderr.contains("link_probe_0_0"), "{stderr}");
    assert!(!stderr.contains("map_0,"), "map_0 was already gone: {stderr}");
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    assert_programs_gone(&ids, "after stopping an incomplete session");
}

/// Bad input gets a clear error that names the value, and starts nothing.
pub fn rejected_starts(point: &str) {
    let cases: [(&[&str], &str); 4] = [
        (&["start", "bad.name", "-e", "BEGIN {}"], "invalid session name `bad.name`"),
        (&["start", "ok", "--ttl", "5x", "-e", "BEGIN {}"], "invalid duration `5x`"),
        (&["start", "ok", "-e", "interval:s:1 { @x = count(); }"], "interval:s:1 (line 1) cannot run in a session"),
        (&["start", "ok", "-e", &format!("{point} {{ exit(); }}")], "exit() at line 1 cannot run in a session"),
    ];
    for (args, expected) in cases {
        let output = probe(&[&["session"], args].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output.stderr));
        assert!(text(&output.stderr).contains(expected), "{args:?}: {}", text(&output.stderr));
        assert!(leftovers("ok").is_empty());
    }
    let script = format!("{point} {{ @x = count(); }}");
    session_ok(&["start", "dup", "-e", &script]);
    let ids = program_ids("dup");
    let second = probe(&["session", "start", "dup", "-e", &script]);
    assert_eq!(second.status.code(), Some(2), "{}", text(&second.stderr));
    assert!(text(&second.stderr).contains("a session named `dup` is already running"), "{}", text(&second.stderr));
    session_ok(&["stop", "dup"]);
    assert_programs_gone(&ids, "after the rejected starts");
}

/// Starts and stops of different sessions from two threads at once.
pub fn concurrent_starts(point: &str) {
    let script = format!("{point} {{ @x = count(); }}");
    let workers: Vec<_> = ["para", "parb"]
        .into_iter()
        .map(|prefix| {
            let script = script.clone();
            thread::spawn(move || {
                let mut ids = Vec::new();
                for round in 0..4 {
                    let name = format!("{prefix}{round}");
                    session_ok(&["start", &name, "-e", &script]);
                    ids.extend(program_ids(&name));
                    session_ok(&["show", &name]);
                    session_ok(&["stop", &name]);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(worker.join().expect("worker thread"));
    }
    let listed = session_ok(&["list"]);
    assert!(!text(&listed.stdout).contains("par"), "{}", text(&listed.stdout));
    assert_programs_gone(&ids, "after concurrent sessions");
}

fn tool_present(tool: &str) -> bool {
    let present = Command::new(tool).arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !present {
        eprintln!("skipped: {tool} is not installed (cargo xtask setup installs it)");
    }
    present
}

fn tmux(args: &[&str]) -> String {
    let output = run(Command::new("tmux").args(args));
    assert!(output.status.success(), "tmux {args:?}: {}", text(&output.stderr));
    text(&output.stdout)
}

/// Waits until the tmux pane shows `expected`, and returns the pane.
fn wait_for_pane(pane: &str, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", pane]);
        if screen.contains(expected) {
            return screen;
        }
        assert!(Instant::now() < deadline, "the pane never showed {expected:?}:\n{screen}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// `probe top` in tmux shows a session, stops it with `s`, and restores
/// the terminal when `q` ends it.
pub fn top_in_tmux(name: &str, point: &str) {
    if !tool_present("tmux") {
        return;
    }
    let script = format!("{point} {{ @x = count(); }}");
    session_ok(&["start", name, "--stats", "-e", &script]);
    let ids = program_ids(name);
    let tmux_session = format!("probe-top-{}", std::process::id());
    let command = format!("{} top; echo top-exited-$?; sleep 60", bin("probe").display());
    tmux(&["new-session", "-d", "-s", &tmux_session, "-x", "150", "-y", "20", &command]);
    let pane = tmux_session.as_str();
    let screen = wait_for_pane(pane, &format!("session {name}"));
    assert!(screen.contains("EVENTS/S"), "{screen}");
    assert!(screen.contains("CPU/S"), "{screen}");
    tmux(&["send-keys", "-t", pane, "s"]);
    let screen = wait_for_pane(pane, &format!("stopped session {name}"));
    assert!(screen.contains("probe top: 0 sessions"), "{screen}");
    assert!(leftovers(name).is_empty(), "left: {:?}", leftovers(name));
    tmux(&["send-keys", "-t", pane, "q"]);
    let screen = wait_for_pane(pane, "top-exited-0");
    assert!(!screen.contains("EVENTS/S"), "the alternate screen is left: {screen}");
    let _ = run(Command::new("tmux").args(["kill-session", "-t", pane]));
    assert_programs_gone(&ids, "after probe top stopped the session");

    // SIGTERM ends it too, with the terminal restored.
    let pane = format!("probe-top-term-{}", std::process::id());
    tmux(&["new-session", "-d", "-s", &pane, "-x", "150", "-y", "20", &command]);
    wait_for_pane(&pane, "EVENTS/S");
    let shell = tmux(&["display", "-p", "-t", &pane, "#{pane_pid}"]).trim().to_owned();
    let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).expect("the shell's children");
    let top: i32 = children.split_whitespace().next().and_then(|pid| pid.parse().ok()).expect("probe top's pid");
    // SAFETY: kill has no memory-safety preconditions; `top` is the pid
    // of the probe top this test started.
    assert_eq!(unsafe { libc::kill(top, libc::SIGTERM) }, 0);
    let screen = wait_for_pane(&pane, "top-exited-0");
    assert!(!screen.contains("EVENTS/S"), "the alternate screen is left after SIGTERM: {screen}");
    let _ = run(Command::new("tmux").args(["kill-session", "-t", &pane]));
}

/// `probe session export` serves the session's counters to curl.
pub fn export_with_curl(name: &str, point: &str, port: u16) {
    if !tool_present("curl") {
        return;
    }
    let script = format!("{point} /comm == \"probe-test-help\"/ {{ @kills[comm] = count(); @sizes = sum(7); }}");
    session_ok(&["start", name, "-e", &script]);
    let ids = program_ids(name);
    kills(3);

    let invalid = probe(&["session", "export", name, "--listen", "localhost"]);
    assert_eq!(invalid.status.code(), Some(2), "{}", text(&invalid.stderr));
    assert!(text(&invalid.stderr).contains("invalid --listen `localhost`"), "{}", text(&invalid.stderr));

    let address = format!("127.0.0.1:{port}");
    let mut server = Command::new(bin("probe"))
        .args(["session", "export", name, "--listen", &address])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("export starts");
    let url = format!("http://{address}/metrics");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let output = run(Command::new("curl").args(["-sS", "--fail", &url]));
        if output.status.success() {
            break text(&output.stdout);
        }
        assert!(Instant::now() < deadline, "curl {url}: {}", text(&output.stderr));
        thread::sleep(Duration::from_millis(200));
    };
    let other = run(Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &format!("http://{address}/other")]));
    assert_eq!(text(&other.stdout), "404");

    let _ = server.kill();
    let mut stderr = String::new();
    let _ = server.stderr.take().map(|mut pipe| pipe.read_to_string(&mut stderr));
    let _ = server.wait();
    session_ok(&["stop", name]);

    let expected = [
        "# TYPE probe_session_map_value gauge".to_owned(),
        format!("probe_session_map_value{{session=\"{name}\",map=\"@kills\",key=\"probe-test-help\"}} 3"),
        format!("probe_session_map_value{{session=\"{name}\",map=\"@sizes\",key=\"\"}} 21"),
        format!("probe_session_lost_events_total{{session=\"{name}\"}} 0"),
    ];
    for line in &expected {
        assert!(body.lines().any(|l| l == line), "missing {line} in:\n{body}\nstderr: {stderr}");
    }
    assert_programs_gone(&ids, "after the export test");
}
