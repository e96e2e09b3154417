//! Locations in the workspace and under its target directory.

use std::env;
use std::path::{Path, PathBuf};

/// Returns the workspace root, the parent of the xtask crate.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the xtask crate lives in a subdirectory of the workspace")
        .to_path_buf()
}

/// Returns cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/`
/// in the workspace root.
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => env::current_dir()
            .map(|cwd| cwd.join(&dir))
            .unwrap_or_else(|_| PathBuf::from(dir)),
        None => workspace_root().join("target"),
    }
}

/// Returns the directory of the debug-profile binaries.
pub fn debug_dir() -> PathBuf {
    target_dir().join("debug")
}

/// Returns the directory for what the VM runner downloads, caches and builds.
pub fn vm_dir() -> PathBuf {
    target_dir().join("vm")
}
