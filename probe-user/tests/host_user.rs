//! User-space probes on the host kernel (as root): uprobes and uretprobes
//! on probe-test-helper's `chain_a` -> `chain_b` -> `chain_c` and
//! `take_string`, user and kernel stacks, strings of many lengths, and
//! the errors for binaries and functions that do not exist.
//!
//! User frames are named from the traced process's mappings while it
//! runs, so the helper lingers for a second after its calls.

mod common;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{bin, run, text};

/// The characters that `probe-test-helper strings` repeats.
const PATTERN: &str = "0123456789abcdefghijklmnopqrstuvwxyz";

fn pattern(length: usize) -> String {
    PATTERN.chars().cycle().take(length).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: loading BPF programs needs root");
    }
    root
}

fn helper_path() -> String {
    bin("probe-test-helper").display().to_string()
}

/// `probe run -e SCRIPT -c 'probe-test-helper HELPER_ARGS'`: returns
/// stdout, and fails the test unless the run succeeded.
fn run_script(script: &str, helper_args: &str) -> String {
    let output = run(Command::new(bin("probe")).args([
        "run",
        "-e",
        script,
        "-c",
        &format!("{} {helper_args}", helper_path()),
    ]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "probe run failed\nstdout:\n{stdout}\nstderr:\n{}", text(&output.stderr));
    stdout
}

/// Returns the index of the first frame line that starts with `name`.
fn frame_index(frames: &[&str], name: &str) -> usize {
    frames
        .iter()
        .position(|frame| frame.starts_with(name))
        .unwrap_or_else(|| panic!("no `{name}` frame in {frames:?}"))
}

#[test]
fn ustack_shows_every_caller() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let stdout = run_script(&format!("uprobe:{helper}:chain_c {{ printf(\"stack%s--\\n\", ustack); }}"), "call-chain 1 --linger-ms 1000");
    let frames: Vec<&str> = stdout
        .lines()
        .skip_while(|line| *line != "stack")
        .skip(1)
        .take_while(|line| *line != "--")
        .map(str::trim)
        .collect();
    let c = frame_index(&frames, "chain_c+");
    let b = frame_index(&frames, "chain_b+");
    let a = frame_index(&frames, "chain_a+");
    assert_eq!((c, b, a), (0, 1, 2), "chain_c, chain_b, chain_a are not the first three frames: {frames:?}");
    let main = frames.iter().position(|frame| frame.starts_with("main+"));
    assert!(main.is_some_and(|main| main > a), "no `main` frame below chain_a: {frames:?}");
    assert!(
        frames.iter().any(|frame| frame.starts_with("probe_test_helper::main+")),
        "the Rust main function is missing: {frames:?}"
    );
}

#[test]
fn ustack_key_counts_calls() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let stdout = run_script(&format!("uprobe:{helper}:chain_c /pid == cpid/ {{ @[ustack(3)] = count(); }}"), "call-chain 5 --linger-ms 1000");
    // Map keys indent frames by 4 spaces, printf by 8, as bpftrace does.
    let expected_start = "@[\n    chain_c+0";
    assert!(stdout.contains(expected_start), "no chain_c stack key:\n{stdout}");
    let key: Vec<&str> = stdout.lines().skip_while(|line| *line != "@[").skip(1).take(3).map(str::trim).collect();
    assert!(key[1].starts_with("chain_b+"), "the second frame is not chain_b: {key:?}:\n{stdout}");
    assert!(key[2].starts_with("chain_a+"), "the third frame is not chain_a: {key:?}:\n{stdout}");
    assert!(stdout.contains("]: 5"), "the stack was not counted 5 times:\n{stdout}");
}

#[test]
fn uretprobe_reads_return_value() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    // chain_a(0) calls chain_b(1), which calls chain_c(3), which returns 6.
    let stdout = run_script(
        &format!("uretprobe:{helper}:chain_c {{ printf(\"%s returned %d\\n\", func, retval); }}"),
        "call-chain 1",
    );
    assert!(stdout.contains("chain_c returned 6"), "no return value:\n{stdout}");
}

#[test]
fn str_keeps_requested_lengths() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let lengths = [15, 16, 63, 64, 65, 255, 1000];
    let arguments: Vec<String> = lengths.iter().map(usize::to_string).collect();
    let stdout = run_script(
        &format!(
            "uprobe:{helper}:take_string {{ printf(\"full %d %s\\n\", arg1, str(arg0, 1000)); \
             printf(\"default %d %s\\n\", arg1, str(arg0)); printf(\"sixteen %d %s\\n\", arg1, str(arg0, 16)); \
             printf(\"sized %d %s\\n\", arg1, str(arg0, arg1)); printf(\"half %d %s\\n\", arg1, str(arg0, arg1 / 2)); \
             print(str(arg0, 1000)); }}"
        ),
        &format!("strings {}", arguments.join(" ")),
    );
    for length in lengths {
        let text = pattern(length);
        let full = format!("full {length} {text}");
        assert!(stdout.lines().any(|line| line == full), "str(arg0, 1000) of {length} characters is not exact:\n{stdout}");

        // The default length is 63 characters, as bpftrace's 64-byte buffer.
        let default = if length <= 63 { text.clone() } else { format!("{}...", &text[..63]) };
        let default = format!("default {length} {default}");
        assert!(stdout.lines().any(|line| line == default), "expected `{default}` in:\n{stdout}");

        // A count known only at run time reads up to 1024 characters.
        let sized = format!("sized {length} {text}");
        assert!(stdout.lines().any(|line| line == sized), "str(arg0, arg1) of {length} characters is not exact:\n{stdout}");
        let half = format!("half {length} {}...", &text[..length / 2]);
        assert!(stdout.lines().any(|line| line == half), "expected `{half}` in:\n{stdout}");
        assert!(stdout.lines().any(|line| line == text), "print(str(arg0, 1000)) of {length} characters:\n{stdout}");

        let sixteen = if length <= 16 { text.clone() } else { format!("{}...", &text[..16]) };
        let sixteen = format!("sixteen {length} {sixteen}");
        assert!(stdout.lines().any(|line| line == sixteen), "expected `{sixteen}` in:\n{stdout}");
    }
}

#[test]
fn buf_and_symbols_render() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let stdout = run_script(
        &format!(
            "uprobe:{helper}:take_string {{ printf(\"buf %r\\n\", buf(arg0, 5)); printf(\"ntop %s\\n\", ntop(0x0100007f)); \
             printf(\"ksym %s\\n\", ksym(kaddr(\"vfs_read\"))); printf(\"func %s\\n\", func); }}"
        ),
        "strings 10",
    );
    assert!(stdout.contains("buf 01234\n"), "buf(arg0, 5):\n{stdout}");
    assert!(stdout.contains("ntop 127.0.0.1\n"), "ntop:\n{stdout}");
    assert!(stdout.contains("ksym vfs_read\n"), "ksym(kaddr(\"vfs_read\")):\n{stdout}");
    assert!(stdout.contains("func take_string\n"), "func:\n{stdout}");

    // Long buffers go straight into the record: up to 1024 bytes, with a
    // run-time length too, and a cut one is marked.
    let long = run_script(
        &format!(
            "uprobe:{helper}:take_string {{ printf(\"long %d %r\\n\", arg1, buf(arg0, 1000)); \
             printf(\"sized %d %r\\n\", arg1, buf(arg0, arg1)); printf(\"over %d %r\\n\", arg1, buf(arg0, arg1 + 100)); }}"
        ),
        "strings 1000",
    );
    let text = pattern(1000);
    assert!(long.contains(&format!("long 1000 {text}\n")), "buf(arg0, 1000):\n{long}");
    assert!(long.contains(&format!("sized 1000 {text}\n")), "buf(arg0, arg1):\n{long}");
    let over = long.lines().find(|line| line.starts_with("over 1000 ")).unwrap_or_else(|| panic!("no over line:\n{long}"));
    assert!(over.starts_with(&format!("over 1000 {text}\\x00")), "{over}");
    assert!(over.ends_with("..."), "a buffer cut at 1024 bytes is not marked: {over}");
}

#[test]
fn usym_names_function_pointer() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let stdout = run_script(
        &format!("uprobe:{helper}:take_function {{ printf(\"usym %s\\n\", usym(arg0)); @[usym(arg0)] = count(); }}"),
        "call-chain 1 --linger-ms 1000",
    );
    assert!(stdout.contains("usym chain_c\n"), "usym(arg0) in printf:\n{stdout}");
    assert!(stdout.contains("@[chain_c]: 1"), "usym(arg0) as a map key:\n{stdout}");
}

#[test]
fn pid_filter_limits_uprobes() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let start = |count: &str| {
        Command::new(&helper)
            .args(["call-chain", count, "--delay-ms", "1500", "--linger-ms", "300"])
            .stdout(Stdio::null())
            .spawn()
            .expect("start probe-test-helper")
    };
    let mut traced = start("3");
    let mut other = start("4");
    let output = run(Command::new(bin("probe")).args([
        "run",
        "-p",
        &traced.id().to_string(),
        "-e",
        &format!("uprobe:{helper}:chain_c {{ @calls[pid] = count(); }}"),
    ]));
    let _ = traced.wait();
    let _ = other.wait();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "probe run failed:\n{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains(&format!("@calls[{}]: 3", traced.id())), "the traced process was not counted:\n{stdout}");
    assert!(!stdout.contains(&format!("@calls[{}]", other.id())), "the other process was traced too:\n{stdout}");
}

#[test]
fn missing_function_fails_fast() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let marker = std::env::temp_dir().join(format!("probe-host-user-{}-marker", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let started = Instant::now();
    let output = run(Command::new(bin("probe")).args([
        "run",
        "-e",
        &format!("uprobe:{helper}:chain_z {{ printf(\"hit\\n\"); }}"),
        "-c",
        &format!("/usr/bin/touch {}", marker.display()),
    ]));
    let elapsed = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(elapsed < Duration::from_secs(1), "failing took {elapsed:?}");
    assert!(stderr.contains("function `chain_z` not found"), "the function is not named:\n{stderr}");
    assert!(stderr.contains(&helper), "the binary is not named:\n{stderr}");
    assert!(stderr.contains("chain_a") || stderr.contains("chain_c"), "no close matches:\n{stderr}");
    // The -c command was never let run.
    thread::sleep(Duration::from_millis(100));
    assert!(!marker.exists(), "the -c command ran although the script failed");
}

#[test]
fn missing_binary_fails_fast() {
    if !is_root() {
        return;
    }
    let missing = PathBuf::from("/nonexistent/probe-test-binary");
    let started = Instant::now();
    let output = run(Command::new(bin("probe")).args(["run", "-e", &format!("uprobe:{}:main {{ }}", missing.display())]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(started.elapsed() < Duration::from_secs(1), "failing took {:?}", started.elapsed());
    assert!(stderr.contains("binary `/nonexistent/probe-test-binary` not found"), "stderr:\n{stderr}");
    assert!(stderr.contains("uprobe:/nonexistent/probe-test-binary:main"), "the function is not shown:\n{stderr}");
}

#[test]
fn library_name_resolves_like_loader() {
    if !is_root() {
        return;
    }
    // A dry run resolves the library by name and loads the program
    // without attaching it.
    let output = run(Command::new(bin("probe")).args(["run", "--dry-run", "-e", "uprobe:libc:getpid { @ = count(); }"]));
    assert!(output.status.success(), "stderr:\n{}", text(&output.stderr));
    let output = run(Command::new(bin("probe")).args(["run", "--dry-run", "-e", "uretprobe:libc:getpidd { }"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("function `getpidd` not found in `"), "stderr:\n{stderr}");
    assert!(stderr.contains("libc.so"), "the library's path is not named:\n{stderr}");
    assert!(stderr.contains("getpid"), "no close match:\n{stderr}");
}

#[test]
fn go_binary_refuses_uretprobe() {
    if !is_root() {
        return;
    }
    // A copy of the helper with the section that marks Go programs; the
    // tool recognizes Go by it. objcopy comes with binutils, which cargo's
    // linker needs anyway.
    let copy = std::env::temp_dir().join(format!("probe-host-user-{}-go", std::process::id()));
    let status = Command::new("objcopy")
        .args(["--add-section", ".gopclntab=/dev/null"])
        .arg(bin("probe-test-helper"))
        .arg(&copy)
        .status()
        .expect("run objcopy");
    assert!(status.success(), "objcopy failed");
    let path = copy.display().to_string();

    let output = run(Command::new(bin("probe")).args(["run", "--dry-run", "-e", &format!("uretprobe:{path}:chain_c {{ }}")]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("is a Go program, and a uretprobe can crash it"), "stderr:\n{stderr}");
    assert!(stderr.contains("--unsafe-uprobes"), "no way to force it:\n{stderr}");

    let forced = run(Command::new(bin("probe")).args([
        "run",
        "--dry-run",
        "--unsafe-uprobes",
        "-e",
        &format!("uretprobe:{path}:chain_c {{ }}"),
    ]));
    assert!(forced.status.success(), "stderr:\n{}", text(&forced.stderr));
    let entry = run(Command::new(bin("probe")).args(["run", "--dry-run", "-e", &format!("uprobe:{path}:chain_c {{ }}")]));
    assert!(entry.status.success(), "a uprobe on a Go program was refused:\n{}", text(&entry.stderr));
    let _ = std::fs::remove_file(&copy);
}

#[test]
fn uprobe_glob_attaches_each_match() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let stdout = run_script(&format!("uprobe:{helper}:chain_? /pid == cpid/ {{ @[func] = count(); }}"), "call-chain 2 --linger-ms 1000");
    for function in ["chain_a", "chain_b", "chain_c"] {
        assert!(stdout.contains(&format!("@[{function}]: 2")), "{function} was not counted twice:\n{stdout}");
    }
}

#[test]
fn list_shows_binary_functions() {
    let helper = helper_path();
    let output = run(Command::new(bin("probe")).args(["list", &format!("uprobe:{helper}:chain_*")]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "stderr:\n{}", text(&output.stderr));
    let expected: Vec<String> = ["chain_a", "chain_b", "chain_c"].iter().map(|name| format!("uprobe:{helper}:{name}")).collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected);

    let output = run(Command::new(bin("probe")).args(["list", &format!("uprobe:{helper}:no_such_*")]));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no function in"), "stderr:\n{}", text(&output.stderr));
}

#[test]
fn ntop_reads_tracepoint_addresses() {
    if !is_root() {
        return;
    }
    for (listen, family) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
        let listener = match std::net::TcpListener::bind(listen) {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("skipped {listen}: {err}");
                continue;
            }
        };
        let port = listener.local_addr().expect("listener address").port();
        let accept = thread::spawn(move || listener.accept().map(drop));
        let field = if family.contains(':') { "_v6" } else { "" };
        let script = format!(
            "tracepoint:sock:inet_sock_set_state /args.dport == {port} && args.newstate == 1/ \
             {{ printf(\"%s -> %s\\n\", ntop(args.saddr{field}), ntop(args.daddr{field})); }}"
        );
        let address = listener_address(listen, port);
        let stdout = run_script(&script, &format!("tcp-connect {address}"));
        let _ = accept.join();
        assert!(stdout.contains(&format!("{family} -> {family}\n")), "no {family} connection:\n{stdout}");
    }
}

fn listener_address(listen: &str, port: u16) -> String {
    let host = listen.rsplit_once(':').map_or(listen, |(host, _)| host);
    format!("{host}:{port}")
}

#[test]
fn ustack_named_after_process_exits() {
    if !is_root() {
        return;
    }
    // The helper exits right after its calls, before the map is printed:
    // the frames are named through the build id of the helper's file.
    let helper = helper_path();
    let stdout = run_script(&format!("uprobe:{helper}:chain_c /pid == cpid/ {{ @[ustack(3)] = count(); }}"), "call-chain 4 --linger-ms 0");
    let key: Vec<&str> = stdout.lines().skip_while(|line| *line != "@[").skip(1).take(3).map(str::trim).collect();
    assert_eq!(key.len(), 3, "no stack key:\n{stdout}");
    assert!(key[0].starts_with("chain_c+0"), "{key:?}");
    assert!(key[1].starts_with("chain_b+"), "{key:?}");
    assert!(key[2].starts_with("chain_a+"), "{key:?}");
    assert!(stdout.contains("]: 4"), "{stdout}");
}

#[test]
fn uprobe_offsets_must_start_instructions() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let dry_run = |point: &str| run(Command::new(bin("probe")).args(["run", "--dry-run", "-e", &format!("{point} {{ }}")]));

    // chain_c starts with `push %rbp` (1 byte), then `mov %rsp,%rbp`
    // (3 bytes): frame pointers are on for the whole workspace.
    let inside = dry_run(&format!("uprobe:{helper}:chain_c+2"));
    let stderr = text(&inside.stderr);
    assert_eq!(inside.status.code(), Some(2), "a uprobe inside an instruction was accepted:\n{stderr}");
    assert!(stderr.contains("chain_c+0x2 is in the middle of an instruction"), "{stderr}");
    assert!(stderr.contains("chain_c+0x1 and chain_c+0x4"), "no nearest instructions:\n{stderr}");
    let boundary = dry_run(&format!("uprobe:{helper}:chain_c+1"));
    assert!(boundary.status.success(), "chain_c+1 starts an instruction:\n{}", text(&boundary.stderr));

    let return_offset = dry_run(&format!("uretprobe:{helper}:chain_c+4"));
    let stderr = text(&return_offset.stderr);
    assert_eq!(return_offset.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("a uretprobe cannot attach at an offset"), "{stderr}");

    let data = dry_run(&format!("uprobe:{helper}:0x1"));
    let stderr = text(&data.stderr);
    assert_eq!(data.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("in a segment without code"), "{stderr}");
}

#[test]
fn cast_syscall_pointer_reads_user_memory() {
    if !is_root() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let port = listener.local_addr().expect("listener address").port();
    let accept = thread::spawn(move || listener.accept().map(drop));
    let stdout = run_script(
        "tracepoint:syscalls:sys_enter_connect /pid == cpid/ { $s = (struct sockaddr_in *)args.uservaddr; \
         printf(\"family %d port %d address %s\\n\", $s->sin_family, ($s->sin_port >> 8) | (($s->sin_port & 0xff) << 8), ntop($s->sin_addr.s_addr)); }",
        &format!("tcp-connect 127.0.0.1:{port}"),
    );
    let _ = accept.join();
    assert!(stdout.contains(&format!("family 2 port {port} address 127.0.0.1\n")), "{stdout}");
}

#[test]
fn tracepoint_ustack_has_no_bogus_frames() {
    if !is_root() {
        return;
    }
    // The first openat() of a process comes from the dynamic loader,
    // whose internal functions are named only in its detached debug file
    // (libc6-dbg), when that is installed.
    let stdout = run_script(
        "tracepoint:syscalls:sys_enter_openat /pid == cpid/ { printf(\"stack%s--\\n\", ustack(5)); }",
        "open /etc/hostname",
    );
    let frames: Vec<&str> = stdout.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with("stack") && *line != "--").collect();
    assert!(frames.iter().any(|frame| frame.starts_with("openat")), "no openat frame:\n{stdout}");
    assert!(frames.iter().any(|frame| frame.starts_with("probe_test_helper::open_all+")), "no caller of openat:\n{stdout}");
    assert!(!frames.iter().any(|frame| *frame == "0x0" || frame.contains("+0xffff")), "a bogus frame is printed:\n{stdout}");
    if loader_debug_file_exists() {
        assert!(
            frames.iter().any(|frame| frame.starts_with("_dl_map_object+") || frame.contains("open_nocancel")),
            "the dynamic loader's frames are not named from its debug file:\n{stdout}"
        );
    }
}

/// Tells whether the dynamic loader's detached debug file is installed,
/// where its build id names it.
fn loader_debug_file_exists() -> bool {
    let Ok(data) = std::fs::read("/lib64/ld-linux-x86-64.so.2") else {
        return false;
    };
    let Ok(file) = object::File::parse(&*data) else {
        return false;
    };
    let Ok(Some(id)) = object::Object::build_id(&file) else {
        return false;
    };
    let hex: String = id.iter().map(|byte| format!("{byte:02x}")).collect();
    PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..])).is_file()
}

#[test]
fn exit_stops_later_events() {
    if !is_root() {
        return;
    }
    // Every system call of the machine prints a stack until exit() runs.
    // After it the probes do nothing, so no record is lost because the
    // reader has stopped.
    let output = run(Command::new(bin("probe")).args([
        "run",
        "--buffer-size",
        "8192",
        "-e",
        "tracepoint:raw_syscalls:sys_enter { print(kstack); exit(); }",
        "-c",
        "sleep 1",
    ]));
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("lost"), "records after exit() were reported lost:\n{stderr}");
}

#[test]
fn session_keeps_uprobe_stacks() {
    if !is_root() {
        return;
    }
    let helper = helper_path();
    let name = format!("host-user-{}", std::process::id());
    let probe = |args: &[&str]| run(Command::new(bin("probe")).arg("session").args(args));
    let started = probe(&["start", &name, "-e", &format!("uprobe:{helper}:chain_c {{ @[ustack(3)] = count(); }}")]);
    assert!(started.status.success(), "start failed:\n{}", text(&started.stderr));

    // The helper exits before the maps are read: the frames are named
    // from the uprobe binary's build id.
    let calls = run(Command::new(&helper).args(["call-chain", "2", "--linger-ms", "0"]));
    assert!(calls.status.success());
    let shown = probe(&["show", &name]);
    let stopped = probe(&["stop", &name]);
    let shown_text = text(&shown.stdout);
    assert!(shown.status.success(), "show failed:\n{}", text(&shown.stderr));
    assert!(stopped.status.success(), "stop failed:\n{}", text(&stopped.stderr));
    assert!(shown_text.contains("@[\n    chain_c+0"), "no chain_c stack in show:\n{shown_text}");
    assert!(shown_text.contains("]: 2"), "the stack was not counted twice:\n{shown_text}");
    assert!(text(&stopped.stdout).contains("]: 2"), "stop did not print the final map:\n{}", text(&stopped.stdout));
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/probe/sessions/{name}")).exists(), "the session's pins are left");
}
