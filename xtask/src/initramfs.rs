//! Building the initramfs that the test VM boots: busybox, the workspace's
//! binaries, extra files, their shared libraries, and an `/init` script that
//! runs one command and powers the VM off.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::command::{self, shell_quote};

/// The line the guest prints when the command has finished, followed by a
/// space and the command's exit status.
pub const EXIT_MARKER: &str = "xtask-vm: command exit status";

/// Path of the binary that the busybox-static package installs.
const BUSYBOX: &str = "/bin/busybox";

/// A host file or directory and where it goes in the guest.
#[derive(Clone, Debug)]
pub struct GuestFile {
    pub host: PathBuf,
    /// An absolute path in the guest.
    pub guest: PathBuf,
}

impl GuestFile {
    /// Parses `HOST_PATH[:GUEST_PATH]`. Without a guest path the file keeps
    /// its absolute host path.
    pub fn parse(spec: &str) -> Result<Self> {
        let (host, guest) = match spec.split_once(':') {
            Some((host, guest)) => (host, Some(guest)),
            None => (spec, None),
        };
        if host.is_empty() {
            bail!("invalid --file `{spec}`: the host path is empty");
        }
        let host = PathBuf::from(host);
        let guest = match guest {
            Some(guest) => PathBuf::from(guest),
            None => std::path::absolute(&host)
                .with_context(|| format!("resolving {} failed", host.display()))?,
        };
        if !guest.is_absolute() {
            bail!("invalid --file `{spec}`: the guest path must be absolute");
        }
        Ok(Self { host, guest })
    }
}

/// Contents of the initramfs besides busybox.
pub struct Contents<'a> {
    pub files: &'a [GuestFile],
    /// Environment variables that `/init` exports before the command.
    pub env: &'a [(String, String)],
    /// The command and its arguments.
    pub command: &'a [String],
    /// The kernel's `lib/modules/<release>` directory, from which
    /// [`GUEST_MODULES`] are copied.
    pub modules: Option<&'a Path>,
}

/// Kernel modules that the VM tests load and unload: `dummy` is a network
/// driver with no hardware and no dependencies.
pub const GUEST_MODULES: &[&str] = &["kernel/drivers/net/dummy"];

/// Builds an uncompressed newc cpio archive at `output`, staging the tree in
/// `staging` (which must not exist yet).
pub fn build(contents: &Contents<'_>, staging: &Path, output: &Path) -> Result<()> {
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "etc", "root", "run",
    ] {
        create_dir(&staging.join(dir))?;
    }
    let mut executables = Vec::new();

    install_busybox(staging)?;
    executables.push(staging.join(BUSYBOX.trim_start_matches('/')));

    for file in contents.files {
        let destination = guest_path(staging, &file.guest)?;
        copy_tree(&file.host, &destination, &mut executables).with_context(|| {
            format!("copying {} into the initramfs failed", file.host.display())
        })?;
    }

    copy_shared_libraries(staging, &executables)?;

    if let Some(modules) = contents.modules {
        install_modules(modules, staging)?;
    }

    write_file(&staging.join("etc/hostname"), "probe-vm\n", 0o644)?;
    write_file(
        &staging.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write_file(&staging.join("etc/group"), "root:x:0:\n", 0o644)?;
    write_file(
        &staging.join("init"),
        &init_script(contents.env, contents.command)?,
        0o755,
    )?;

    write_cpio(staging, output)
}

/// Returns the `/init` shell script that mounts the kernel's file systems,
/// runs the command with `env` exported, prints [`EXIT_MARKER`] and powers
/// off.
pub fn init_script(env: &[(String, String)], command: &[String]) -> Result<String> {
    let mut script = String::from(
        "#!/bin/sh\n\
         # Written by `cargo xtask vm`: runs one command and powers the VM off.\n\
         export PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         export HOME=/root\n\
         \n\
         mount_fs() {\n\
         \x20   mount -t \"$1\" \"$1\" \"$2\" || echo \"init: mounting $1 on $2 failed\" >&2\n\
         }\n\
         mount_fs proc /proc\n\
         mount_fs sysfs /sys\n\
         mount_fs devtmpfs /dev\n\
         mount_fs bpf /sys/fs/bpf\n\
         mount_fs tracefs /sys/kernel/tracing\n\
         mount_fs debugfs /sys/kernel/debug\n\
         mount_fs securityfs /sys/kernel/security\n\
         hostname -F /etc/hostname\n\
         ip link set lo up || echo 'init: bringing lo up failed' >&2\n\
         # Background activity, as a real system's daemons make: a process\n\
         # that opens a file twice a second, so that probes on common\n\
         # kernel paths such as do_sys_openat2 see calls.\n\
         (while true; do cat /proc/loadavg >/dev/null; sleep 0.5; done) &\n\
         \n",
    );
    for (key, value) in env {
        validate_env_name(key)?;
        script.push_str(&format!("export {key}={}\n", shell_quote(value)));
    }
    let words: Vec<String> = command.iter().map(|word| shell_quote(word)).collect();
    script.push_str(&format!(
        "cd /\n\
         {} </dev/null\n\
         status=$?\n\
         echo \"{EXIT_MARKER} $status\"\n\
         poweroff -f\n\
         # poweroff -f returns only if the reboot system call failed. Exiting\n\
         # would make the kernel panic, which also ends the VM.\n\
         echo o >/proc/sysrq-trigger\n\
         sleep 10\n",
        words.join(" ")
    ));
    Ok(script)
}

fn validate_env_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic());
    if !valid_start || !chars.all(|c| c == '_' || c.is_ascii_alphanumeric()) {
        bail!(
            "invalid environment variable name `{name}`: use letters, digits and `_`, not starting with a digit"
        );
    }
    Ok(())
}

/// Maps an absolute guest path to its place in the staging tree.
fn guest_path(staging: &Path, guest: &Path) -> Result<PathBuf> {
    let mut path = staging.to_path_buf();
    for component in guest.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => path.push(part),
            _ => bail!(
                "invalid guest path {}: use an absolute path without `.` or `..`",
                guest.display()
            ),
        }
    }
    if path == staging {
        bail!(
            "invalid guest path {}: it is the root directory",
            guest.display()
        );
    }
    Ok(path)
}

/// Copies [`GUEST_MODULES`] to `/lib/modules/<release>/`, unpacking
/// `.ko.xz` files because busybox's `insmod` cannot, and writes a
/// `modules.dep` so that `modprobe NAME` finds them.
fn install_modules(modules: &Path, staging: &Path) -> Result<()> {
    let release = modules
        .file_name()
        .with_context(|| format!("{} has no release name", modules.display()))?;
    let destination = staging.join("lib/modules").join(release);
    create_dir(&destination)?;
    let mut dependencies = String::new();
    for module in GUEST_MODULES {
        let name = Path::new(module).file_name().and_then(|n| n.to_str()).unwrap_or(module);
        let target = destination.join(format!("{name}.ko"));
        let plain = modules.join(format!("{module}.ko"));
        let compressed = modules.join(format!("{module}.ko.xz"));
        if plain.is_file() {
            copy_file(&plain, &target)?;
        } else if compressed.is_file() {
            let bytes = command::stdout_bytes_of(Command::new("xz").arg("-dc").arg(&compressed))
                .with_context(|| format!("unpacking {} failed (is xz-utils installed?)", compressed.display()))?;
            fs::write(&target, bytes).with_context(|| format!("writing {} failed", target.display()))?;
        } else {
            bail!("module {module} not found under {}", modules.display());
        }
        dependencies.push_str(&format!("{name}.ko:\n"));
    }
    write_file(&destination.join("modules.dep"), &dependencies, 0o644)
}

fn install_busybox(staging: &Path) -> Result<()> {
    let busybox = Path::new(BUSYBOX);
    if !busybox.is_file() {
        bail!("{BUSYBOX} not found; install busybox-static (`cargo xtask setup` does)");
    }
    copy_file(busybox, &staging.join("bin/busybox"))?;
    let applets = command::stdout_of(Command::new(busybox).arg("--list-full"))?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
    {
        let link = staging.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        create_dir(link.parent().expect("applet paths have a directory"))?;
        symlink("/bin/busybox", &link)
            .with_context(|| format!("creating symlink {} failed", link.display()))?;
    }
    Ok(())
}

/// Copies a file, or a directory recursively, and records the ELF files it
/// copies in `executables`. A destination that exists (a busybox applet
/// link, for example) is replaced.
fn copy_tree(source: &Path, destination: &Path, executables: &mut Vec<PathBuf>) -> Result<()> {
    let metadata =
        fs::metadata(source).with_context(|| format!("{} not found", source.display()))?;
    if metadata.is_dir() {
        create_dir(destination)?;
        let mut entries: Vec<_> = fs::read_dir(source)
            .with_context(|| format!("reading {} failed", source.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            copy_tree(
                &entry.path(),
                &destination.join(entry.file_name()),
                executables,
            )?;
        }
        return Ok(());
    }
    if let Some(parent) = destination.parent() {
        create_dir(parent)?;
    }
    if destination.symlink_metadata().is_ok() {
        fs::remove_file(destination)
            .with_context(|| format!("replacing {} failed", destination.display()))?;
    }
    copy_file(source, destination)?;
    if is_elf(source)? {
        executables.push(destination.to_path_buf());
    }
    Ok(())
}

/// Hard-links `source` to `destination`, or copies it when they are on
/// different file systems. Hard links keep large debug binaries from being
/// copied on every boot.
fn copy_file(source: &Path, destination: &Path) -> Result<()> {
    let source =
        fs::canonicalize(source).with_context(|| format!("{} not found", source.display()))?;
    if fs::hard_link(&source, destination).is_err() {
        fs::copy(&source, destination).with_context(|| {
            format!(
                "copying {} to {} failed",
                source.display(),
                destination.display()
            )
        })?;
    }
    Ok(())
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut file =
        fs::File::open(path).with_context(|| format!("opening {} failed", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// Copies the shared libraries and the dynamic loader that `ldd` lists for
/// each executable to the same paths in the guest.
fn copy_shared_libraries(staging: &Path, executables: &[PathBuf]) -> Result<()> {
    let mut libraries = BTreeSet::new();
    for executable in executables {
        let output = command::capture_any_status(Command::new("ldd").arg(executable))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stdout.contains("not a dynamic executable")
                || stderr.contains("not a dynamic executable")
            {
                continue;
            }
            bail!("`ldd {}` failed: {}", executable.display(), stderr.trim());
        }
        libraries.extend(parse_ldd(&stdout));
    }
    for library in libraries {
        let destination = guest_path(staging, &library)?;
        if destination.exists() {
            continue;
        }
        create_dir(
            destination
                .parent()
                .expect("library paths have a directory"),
        )?;
        copy_file(&library, &destination)?;
    }
    Ok(())
}

/// Extracts the library paths from `ldd` output. The vDSO has no file and
/// is skipped. A library that `ldd` cannot find is reported by the loader
/// in the guest.
fn parse_ldd(output: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for line in output.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)".
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default();
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        }
    }
    paths
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {} failed", dir.display()))
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {} failed", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {} failed", path.display()))
}

/// Lists every path under `dir`, relative to it, parents before children.
fn list_tree(dir: &Path, prefix: &Path, paths: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("reading {} failed", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let relative = prefix.join(entry.file_name());
        paths.push(relative.clone());
        if entry.file_type()?.is_dir() {
            list_tree(&entry.path(), &relative, paths)?;
        }
    }
    Ok(())
}

/// Archives the staging tree with `cpio -o -H newc`, every file owned by root.
fn write_cpio(staging: &Path, output: &Path) -> Result<()> {
    let mut paths = Vec::new();
    list_tree(staging, Path::new("."), &mut paths)?;
    let mut list = Vec::new();
    for path in &paths {
        list.extend_from_slice(path.as_os_str().as_encoded_bytes());
        list.push(0);
    }

    let archive = fs::File::create(output)
        .with_context(|| format!("creating {} failed", output.display()))?;
    let mut cpio = Command::new("cpio");
    cpio.args([
        "--create",
        "--null",
        "--format=newc",
        "--owner=0:0",
        "--quiet",
    ])
    .current_dir(staging)
    .stdin(Stdio::piped())
    .stdout(archive);
    let description = command::describe(&cpio);
    let mut child = cpio.spawn().with_context(|| {
        format!("starting `{description}` failed; install cpio (`cargo xtask setup` does)")
    })?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&list)
        .with_context(|| format!("writing the file list to `{description}` failed"))?;
    let status = child.wait()?;
    if !status.success() {
        bail!("`{description}` failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_file_with_guest_path() {
        let file = GuestFile::parse("target/debug/vm-abc:/usr/bin/vm-tests").unwrap();
        assert_eq!(file.host, PathBuf::from("target/debug/vm-abc"));
        assert_eq!(file.guest, PathBuf::from("/usr/bin/vm-tests"));
    }

    #[test]
    fn guest_file_defaults_to_absolute_host_path() {
        let file = GuestFile::parse("/etc/hostname").unwrap();
        assert_eq!(file.guest, PathBuf::from("/etc/hostname"));
    }

    #[test]
    fn guest_file_rejects_relative_guest_path() {
        assert!(GuestFile::parse("a:usr/bin/a").is_err());
    }

    #[test]
    fn guest_path_rejects_parent_components() {
        assert!(guest_path(Path::new("/stage"), Path::new("/usr/../etc")).is_err());
        assert_eq!(
            guest_path(Path::new("/stage"), Path::new("/usr/bin/x")).unwrap(),
            PathBuf::from("/stage/usr/bin/x")
        );
    }

    #[test]
    fn parse_ldd_lists_files_only() {
        let output = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                      \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2e)\n\
                      \t/lib64/ld-linux-x86-64.so.2 (0x00007f2e)\n";
        assert_eq!(
            parse_ldd(output),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn init_script_quotes_command_and_env() {
        let env = [
            ("PROBE_BIN_DIR".to_owned(), "/usr/bin".to_owned()),
            ("MSG".to_owned(), "a b".to_owned()),
        ];
        let command = ["sh".to_owned(), "-c".to_owned(), "exit 3".to_owned()];
        let script = init_script(&env, &command).unwrap();
        assert!(script.contains("export PROBE_BIN_DIR=/usr/bin\n"));
        assert!(script.contains("export MSG='a b'\n"));
        assert!(script.contains("sh -c 'exit 3' </dev/null\n"));
        assert!(script.contains(&format!("echo \"{EXIT_MARKER} $status\"")));
    }

    #[test]
    fn init_script_rejects_invalid_env_name() {
        let env = [("1BAD".to_owned(), "x".to_owned())];
        assert!(init_script(&env, &["true".to_owned()]).is_err());
    }
}
