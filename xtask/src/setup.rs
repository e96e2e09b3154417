//! `cargo xtask setup`: installs what building and testing need, and only
//! what is missing, printing one line per step.
//!
//! On a machine where everything is present it runs no `apt-get update` and
//! finishes in seconds.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, anyhow};

use crate::command::{self, CommandFailed};
use crate::kernels::{self, Series};

/// Debian packages: LLVM 22 for bpf-linker, QEMU, busybox, cpio and xz
/// (to unpack kernel modules) for the test VM, bpftrace and bpftool as
/// references to compare with, and tmux and curl, which the session tests
/// drive `probe top` and scrape the metrics endpoint with.
const DEBIAN_PACKAGES: [&str; 12] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "xz-utils",
    "bpftrace",
    "bpftool",
    "tmux",
    "curl",
];

/// bpf-linker must be built against the LLVM of the nightly toolchain that
/// builds probe-ebpf. 0.13 builds with Debian's LLVM 22 through the
/// `llvm-22` feature.
const BPF_LINKER_VERSION: &str = "^0.13";
const LLVM_BIN_DIR: &str = "/usr/lib/llvm-22/bin";

/// cargo-fuzz runs the fuzz targets in the test command's fuzz tier. 0.13.2
/// builds with stable Rust 1.95 from its lock file and drives the nightly
/// toolchain that the fuzz targets need.
const CARGO_FUZZ_VERSION: &str = "^0.13";

const APT_SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// Runs every setup step in order.
pub fn run() -> Result<()> {
    let mut apt = Apt::default();
    step(
        "apt source for backports",
        "check that /etc/apt/sources.list.d is writable and that /etc/os-release names the Debian release",
        || ensure_backports_source(&mut apt),
    )?;
    step(
        "Debian packages",
        "run the command by hand to see its full message; if apt-get failed, check that deb.debian.org is reachable",
        || ensure_debian_packages(&mut apt),
    )?;
    step(
        "rust-src for nightly",
        "install the nightly toolchain that builds probe-ebpf (`rustup toolchain install nightly`), then retry",
        ensure_nightly_rust_src,
    )?;
    step(
        "bpf-linker",
        "check that llvm-22-dev is installed and crates.io is reachable; the build log above names the failing crate",
        ensure_bpf_linker,
    )?;
    step(
        "cargo-fuzz",
        "check that crates.io is reachable; the build log above names the failing crate",
        ensure_cargo_fuzz,
    )?;
    for series in Series::ALL {
        step(
            &format!("{series} test kernel"),
            "if apt failed, check that deb.debian.org is reachable; if the cache under target/vm/kernels is damaged, delete it",
            || ensure_kernel(&mut apt, series),
        )?;
    }
    Ok(())
}

/// Runs one step and turns its failure into a message that names the step,
/// the failed command and what to try.
fn step(name: &str, hint: &str, action: impl FnOnce() -> Result<()>) -> Result<()> {
    let Err(error) = action() else {
        return Ok(());
    };
    let mut message = format!("setup step `{name}` failed");
    match error
        .chain()
        .find_map(|cause| cause.downcast_ref::<CommandFailed>())
    {
        Some(failed) => {
            message.push_str(&format!(
                "\n  command: {}\n  problem: {}",
                failed.command, failed.problem
            ));
            for cause in error
                .chain()
                .take_while(|cause| !cause.is::<CommandFailed>())
            {
                message.push_str(&format!("\n  context: {cause}"));
            }
        }
        None => message.push_str(&format!("\n  problem: {error:#}")),
    }
    message.push_str(&format!("\n  try: {hint}"));
    Err(anyhow!(message))
}

/// State of the apt package lists during one setup: `apt-get update` runs
/// at most once, and only when a step needs it.
#[derive(Default)]
struct Apt {
    updated: bool,
    sources_changed: bool,
}

impl Apt {
    fn update(&mut self) -> Result<()> {
        if self.updated {
            return Ok(());
        }
        println!("updating the apt package lists ...");
        command::run(Command::new("apt-get").args(["update", "-q"]))?;
        self.updated = true;
        self.sources_changed = false;
        Ok(())
    }

    fn update_if_sources_changed(&mut self) -> Result<()> {
        if self.sources_changed {
            self.update()
        } else {
            Ok(())
        }
    }
}

fn apt_get_install() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive").args([
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
    ]);
    command
}

/// Returns the Debian release codename, such as `bookworm`.
fn debian_codename() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release")
        .map_err(|error| anyhow!("reading /etc/os-release failed: {error}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .ok_or_else(|| anyhow!("/etc/os-release has no VERSION_CODENAME"))
}

/// Adds `<codename>-backports` to apt's sources unless a source already
/// names it. Debian publishes newer kernel series for a stable release there
/// (on bookworm, 6.12 is also in bookworm-security, and setup takes the
/// newest package of either).
fn ensure_backports_source(apt: &mut Apt) -> Result<()> {
    let suite = format!("{}-backports", debian_codename()?);
    if apt_sources_mention(&suite)? {
        println!("ok: apt source {suite} already present");
        return Ok(());
    }
    let path = Path::new(APT_SOURCES_DIR).join(format!("{suite}.sources"));
    println!("adding apt source {suite} in {} ...", path.display());
    let source = format!(
        "# Added by `cargo xtask setup`: the test kernels come from Debian.\n\
         Types: deb\n\
         URIs: http://deb.debian.org/debian\n\
         Suites: {suite}\n\
         Components: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    fs::write(&path, source)
        .map_err(|error| anyhow!("writing {} failed: {error}", path.display()))?;
    apt.sources_changed = true;
    Ok(())
}

/// Reports whether any apt source file names `suite`.
fn apt_sources_mention(suite: &str) -> Result<bool> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = fs::read_dir(APT_SOURCES_DIR) {
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            // apt ignores files with other extensions, such as `.disabled`.
            if name.ends_with(".list") || name.ends_with(".sources") {
                files.push(path);
            }
        }
    }
    for file in files {
        if let Ok(text) = fs::read_to_string(&file) {
            let mentions = text
                .lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .any(|line| line.split_whitespace().any(|word| word == suite));
            if mentions {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn ensure_debian_packages(apt: &mut Apt) -> Result<()> {
    let missing = missing_debian_packages(&DEBIAN_PACKAGES)?;
    if missing.is_empty() {
        println!(
            "ok: Debian packages already present ({})",
            DEBIAN_PACKAGES.join(" ")
        );
        return Ok(());
    }
    println!("installing Debian packages {} ...", missing.join(" "));
    apt.update()?;
    command::run(apt_get_install().args(&missing))
}

/// Returns the packages that dpkg does not list as installed.
fn missing_debian_packages(packages: &[&str]) -> Result<Vec<String>> {
    // dpkg-query exits with status 1 when it has no record of a package, so
    // the exit status is ignored and only the listed states count.
    let output = command::capture_any_status(
        Command::new("dpkg-query")
            .args(["--show", "--showformat=${Package} ${db:Status-Abbrev}\\n"])
            .args(packages),
    )?;
    let listing = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        // The second letter of the abbreviated status is the package state,
        // `i` for installed. The first is the selection (install, hold, ...).
        .filter(|(_, status)| status.chars().nth(1) == Some('i'))
        .map(|(package, _)| package)
        .collect();
    Ok(packages
        .iter()
        .filter(|package| !installed.contains(package))
        .map(|package| package.to_string())
        .collect())
}

fn ensure_nightly_rust_src() -> Result<()> {
    let installed = command::stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if installed
        .lines()
        .any(|line| line.trim().starts_with("rust-src"))
    {
        println!("ok: rust-src for the nightly toolchain already present");
        return Ok(());
    }
    println!("installing rust-src for the nightly toolchain ...");
    command::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

/// Returns where the program `name` is installed: on PATH or in cargo's bin
/// directory.
fn find_installed(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    match env::var_os("CARGO_HOME") {
        Some(cargo_home) => dirs.push(PathBuf::from(cargo_home).join("bin")),
        None => {
            if let Some(home) = env::var_os("HOME") {
                dirs.push(PathBuf::from(home).join(".cargo/bin"));
            }
        }
    }
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn ensure_bpf_linker() -> Result<()> {
    if let Some(path) = find_installed("bpf-linker") {
        println!("ok: bpf-linker already present ({})", path.display());
        return Ok(());
    }
    println!(
        "installing bpf-linker {BPF_LINKER_VERSION} (builds against LLVM 22, about a minute) ..."
    );
    let path = env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![PathBuf::from(LLVM_BIN_DIR)];
    dirs.extend(env::split_paths(&path));
    let path = env::join_paths(dirs).map_err(|error| anyhow!("building PATH failed: {error}"))?;
    command::run(
        Command::new("cargo")
            .env("PATH", path)
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"]),
    )
}

fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(path) = find_installed("cargo-fuzz") {
        println!("ok: cargo-fuzz already present ({})", path.display());
        return Ok(());
    }
    println!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute) ...");
    command::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn ensure_kernel(apt: &mut Apt, series: Series) -> Result<()> {
    apt.update_if_sources_changed()?;
    let newest = newest_kernel_package(apt, series)?;
    let installed = kernels::installed_package(series);
    if installed.as_deref() == Some(newest.as_str()) {
        println!("ok: {series} test kernel {newest} already present");
        return Ok(());
    }
    match installed {
        Some(old) => println!("replacing {series} test kernel {old} with {newest} ..."),
        None => println!("installing {series} test kernel {newest} ..."),
    }
    let Err(error) = kernels::download_and_extract(series, &newest) else {
        return Ok(());
    };
    if apt.updated {
        return Err(error);
    }
    // Old package lists can name a package that the archive has removed.
    println!(
        "downloading {newest} failed, so the package lists may be old; updating them and retrying ..."
    );
    apt.update()?;
    let newest = newest_kernel_package(apt, series)?;
    println!("installing {series} test kernel {newest} ...");
    kernels::download_and_extract(series, &newest)
}

/// Returns the newest kernel package of `series` in the apt package lists,
/// updating the lists once if they contain none.
fn newest_kernel_package(apt: &mut Apt, series: Series) -> Result<String> {
    let mut newest = kernels::find_newest_package(series)?;
    if newest.is_none() && !apt.updated {
        // The package lists may be empty on a fresh machine.
        apt.update()?;
        newest = kernels::find_newest_package(series)?;
    }
    newest.ok_or_else(|| {
        anyhow!(
            "no linux-image-{series}.*-cloud-amd64 package is in the apt package lists, even after `apt-get update`"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_packages_include_unknown_names() {
        let missing = missing_debian_packages(&["no-such-package-xtask-test"]).unwrap();
        assert_eq!(missing, vec!["no-such-package-xtask-test".to_owned()]);
    }
}
