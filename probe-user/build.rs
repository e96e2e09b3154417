//! Builds the eBPF programs in `probe-ebpf` for the BPF target with
//! aya-build, which runs the nightly toolchain with `-Z build-std=core` and
//! links with bpf-linker. The object lands in `OUT_DIR` and is embedded in
//! the binaries with `include_bytes_aligned!`.

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("failed to run cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf is missing from the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
