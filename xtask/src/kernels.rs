//! The Debian `cloud-amd64` kernels that the VM tests boot.
//!
//! Each series is cached under `target/vm/kernels/<series>/`. `root/` contains
//! the package's `boot/` (vmlinuz, config, System.map) and `lib/modules/`,
//! and the file `package` names the installed package. That file is written
//! last, so an interrupted download is redone on the next setup.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::command;
use crate::paths;

/// A kernel release series that the tests run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Series {
    /// Linux 6.12, in bookworm-security and bookworm-backports.
    #[value(name = "6.12")]
    Linux6_12,
    /// Linux 6.1, bookworm's own kernel.
    #[value(name = "6.1")]
    Linux6_1,
}

impl Series {
    pub const ALL: [Series; 2] = [Series::Linux6_12, Series::Linux6_1];

    pub fn as_str(self) -> &'static str {
        match self {
            Series::Linux6_12 => "6.12",
            Series::Linux6_1 => "6.1",
        }
    }

    fn cache_dir(self) -> PathBuf {
        paths::vm_dir().join("kernels").join(self.as_str())
    }
}

impl fmt::Display for Series {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

const PACKAGE_PREFIX: &str = "linux-image-";
const FLAVOUR_SUFFIX: &str = "-cloud-amd64";
const UNSIGNED_SUFFIX: &str = "-unsigned";

/// A kernel extracted under the target directory.
#[derive(Debug)]
pub struct InstalledKernel {
    pub series: Series,
    /// The Debian package it came from.
    pub package: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`, from which the initramfs takes modules.
    pub modules: PathBuf,
}

/// Returns the kernel release that a package installs:
/// `linux-image-6.1.0-57-cloud-amd64-unsigned` installs `6.1.0-57-cloud-amd64`.
fn release_of(package: &str) -> &str {
    let name = package.strip_prefix(PACKAGE_PREFIX).unwrap_or(package);
    name.strip_suffix(UNSIGNED_SUFFIX).unwrap_or(name)
}

/// Returns the installed kernel of `series`, or an error that names the
/// command that installs it.
pub fn installed(series: Series) -> Result<InstalledKernel> {
    let dir = series.cache_dir();
    let package_file = dir.join("package");
    let package = match fs::read_to_string(&package_file) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => bail!(
            "the {series} test kernel is not installed ({} is missing); run `cargo xtask setup`",
            package_file.display()
        ),
    };
    let release = release_of(&package).to_owned();
    let root = dir.join("root");
    let kernel = InstalledKernel {
        series,
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
        package,
    };
    if !kernel.vmlinuz.is_file() {
        bail!(
            "{} is missing although {} names {}; delete {} and run `cargo xtask setup`",
            kernel.vmlinuz.display(),
            package_file.display(),
            kernel.package,
            dir.display()
        );
    }
    Ok(kernel)
}

/// Returns the name of the installed package of `series`, if any.
pub fn installed_package(series: Series) -> Option<String> {
    installed(series).ok().map(|kernel| kernel.package)
}

/// Searches the apt package lists for the newest `cloud-amd64` kernel image
/// of `series`. Returns `None` when the lists hold none.
pub fn find_newest_package(series: Series) -> Result<Option<String>> {
    let pattern = format!(
        "^{}{}[.-].*{}",
        PACKAGE_PREFIX,
        series.as_str().replace('.', r"\."),
        FLAVOUR_SUFFIX
    );
    let output =
        command::stdout_of(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let names = output
        .lines()
        .filter_map(|line| line.split_whitespace().next());
    Ok(newest_package(series, names))
}

/// Picks the newest kernel image of `series` from package names. It prefers
/// the signed package and takes `-unsigned` only when a release has no
/// signed one. Debug-symbol (`-dbg`) and meta packages never match.
fn newest_package<'a>(series: Series, names: impl Iterator<Item = &'a str>) -> Option<String> {
    let version_prefix = format!("{}.", series.as_str());
    let mut best: Option<(Vec<u64>, bool, &str)> = None;
    for name in names {
        let release = release_of(name);
        if !name.starts_with(PACKAGE_PREFIX) {
            continue;
        }
        let Some(version) = release.strip_suffix(FLAVOUR_SUFFIX) else {
            continue;
        };
        // "6.1." must not match 6.12 releases, and the meta package
        // linux-image-6.12-cloud-amd64 has no version after the series.
        if !version.starts_with(&version_prefix) {
            continue;
        }
        let key = version_key(version);
        let signed = !name.ends_with(UNSIGNED_SUFFIX);
        let better = match &best {
            None => true,
            Some((best_key, best_signed, _)) => (&key, signed) > (best_key, *best_signed),
        };
        if better {
            best = Some((key, signed, name));
        }
    }
    best.map(|(_, _, name)| name.to_owned())
}

/// Orders Debian kernel versions by their numbers: `6.12.90+deb12.1` gives
/// [6, 12, 90, 12, 1] and sorts after `6.12.90+deb12`, which gives
/// [6, 12, 90, 12].
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Downloads `package` with apt and extracts its kernel and modules into the
/// cache directory of `series`, replacing what was there.
pub fn download_and_extract(series: Series, package: &str) -> Result<()> {
    let dir = series.cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {} failed", dir.display()))?;
    remove_debs(&dir)?;

    // apt downloads as the `_apt` user unless APT::Sandbox::User is set, and
    // that user cannot write to the target directory.
    command::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(&dir),
    )?;
    let deb = find_deb(&dir, package)?;

    let staging = dir.join("root.new");
    remove_dir_if_present(&staging)?;
    command::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
    // Only boot/ and lib/modules/ are used, so usr/ (documentation) goes.
    remove_dir_if_present(&staging.join("usr"))?;

    let root = dir.join("root");
    let package_file = dir.join("package");
    if package_file.exists() {
        fs::remove_file(&package_file)
            .with_context(|| format!("removing {} failed", package_file.display()))?;
    }
    remove_dir_if_present(&root)?;
    fs::rename(&staging, &root).with_context(|| {
        format!(
            "renaming {} to {} failed",
            staging.display(),
            root.display()
        )
    })?;
    fs::remove_file(&deb).with_context(|| format!("removing {} failed", deb.display()))?;
    fs::write(&package_file, format!("{package}\n"))
        .with_context(|| format!("writing {} failed", package_file.display()))?;

    installed(series).map(|_| ())
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {} failed", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(path);
        }
    }
    bail!(
        "apt-get download reported success but left no {prefix}*.deb in {}",
        dir.display()
    )
}

fn remove_debs(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {} failed", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "deb") {
            fs::remove_file(&path)
                .with_context(|| format!("removing {} failed", path.display()))?;
        }
    }
    Ok(())
}

fn remove_dir_if_present(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {} failed", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEARCH_6_1: &[&str] = &[
        "linux-image-6.1.0-9-cloud-amd64",
        "linux-image-6.1.0-47-cloud-amd64",
        "linux-image-6.1.0-47-cloud-amd64-unsigned",
        "linux-image-6.1.0-57-cloud-amd64",
        "linux-image-6.1.0-57-cloud-amd64-dbg",
        "linux-image-6.1.0-57-cloud-amd64-unsigned",
        "linux-image-6.12.118+deb12-cloud-amd64",
        "linux-image-cloud-amd64",
    ];

    const SEARCH_6_12: &[&str] = &[
        "linux-image-6.12-cloud-amd64",
        "linux-image-6.12.90+deb12-cloud-amd64",
        "linux-image-6.12.90+deb12.1-cloud-amd64",
        "linux-image-6.12.118+deb12-cloud-amd64",
        "linux-image-6.12.118+deb12-cloud-amd64-dbg",
        "linux-image-6.12.118+deb12-cloud-amd64-unsigned",
        "linux-image-6.1.0-57-cloud-amd64",
    ];

    #[test]
    fn newest_6_1_is_numeric_not_lexical() {
        let newest = newest_package(Series::Linux6_1, SEARCH_6_1.iter().copied());
        assert_eq!(newest.as_deref(), Some("linux-image-6.1.0-57-cloud-amd64"));
    }

    #[test]
    fn newest_6_12_skips_meta_and_dbg() {
        let newest = newest_package(Series::Linux6_12, SEARCH_6_12.iter().copied());
        assert_eq!(
            newest.as_deref(),
            Some("linux-image-6.12.118+deb12-cloud-amd64")
        );
    }

    #[test]
    fn debian_revision_suffix_sorts_later() {
        let names = [
            "linux-image-6.12.90+deb12.1-cloud-amd64",
            "linux-image-6.12.90+deb12-cloud-amd64",
        ];
        let newest = newest_package(Series::Linux6_12, names.into_iter());
        assert_eq!(
            newest.as_deref(),
            Some("linux-image-6.12.90+deb12.1-cloud-amd64")
        );
    }

    #[test]
    fn unsigned_taken_when_no_signed_exists() {
        let names = [
            "linux-image-6.12.12+bpo-cloud-amd64-unsigned",
            "linux-image-6.12.10+bpo-cloud-amd64",
        ];
        let newest = newest_package(Series::Linux6_12, names.into_iter());
        assert_eq!(
            newest.as_deref(),
            Some("linux-image-6.12.12+bpo-cloud-amd64-unsigned")
        );
    }

    #[test]
    fn no_match_returns_none() {
        let names = ["linux-image-cloud-amd64", "linux-image-6.12-cloud-amd64"];
        assert_eq!(newest_package(Series::Linux6_12, names.into_iter()), None);
    }

    #[test]
    fn release_strips_prefix_and_unsigned() {
        assert_eq!(
            release_of("linux-image-6.1.0-57-cloud-amd64-unsigned"),
            "6.1.0-57-cloud-amd64"
        );
        assert_eq!(
            release_of("linux-image-6.12.118+deb12-cloud-amd64"),
            "6.12.118+deb12-cloud-amd64"
        );
    }
}
