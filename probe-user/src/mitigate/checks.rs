//! Checks that pass before a mitigation is attached: root, a mounted bpffs,
//! an active BPF LSM and the rule's hooks in the kernel's BTF. Each check
//! fails with a message that names the fact and the fix.

use std::{ffi::CString, fs, io, path::Path};

use log::info;

use crate::{
    btf::Btf,
    kernel::{self, ConfigValue},
};

/// The usual mount point of bpffs.
pub const BPFFS_PATH: &str = "/sys/fs/bpf";
/// The usual mount point of securityfs.
const SECURITYFS_PATH: &str = "/sys/kernel/security";
/// The list of active LSMs, in the order the kernel calls them.
pub const LSM_LIST_PATH: &str = "/sys/kernel/security/lsm";
/// `BPF_FS_MAGIC` from `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Returns the file system magic number of `path`.
fn fs_magic(path: &Path) -> io::Result<i64> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: an all-zero statfs is a valid value for statfs to overwrite.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` is writable.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64)
}

fn mount(fs_type: &str, target: &str) -> io::Result<()> {
    let source = CString::new(fs_type).expect("file system names have no NUL");
    let target_c = CString::new(target).expect("mount points have no NUL");
    // SAFETY: all three strings are NUL-terminated and outlive the call;
    // no mount data is passed.
    let result = unsafe {
        libc::mount(source.as_ptr(), target_c.as_ptr(), source.as_ptr(), 0, std::ptr::null())
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells whether bpffs is mounted at [`BPFFS_PATH`].
pub fn bpffs_mounted() -> bool {
    fs_magic(Path::new(BPFFS_PATH)).is_ok_and(|magic| magic == BPF_FS_MAGIC)
}

/// Mounts bpffs at [`BPFFS_PATH`] unless it is there already.
pub fn ensure_bpffs() -> Result<(), String> {
    if bpffs_mounted() {
        return Ok(());
    }
    mount("bpf", BPFFS_PATH).map_err(|err| {
        format!(
            "bpffs is not mounted at {BPFFS_PATH} and mounting it failed ({err}); \
             mount it with `mount -t bpf bpf {BPFFS_PATH}`, which mitigations need to outlive this command"
        )
    })?;
    info!("mounted bpffs at {BPFFS_PATH}");
    Ok(())
}

/// Reads the active LSM list, mounting securityfs first when needed.
pub fn active_lsms() -> Result<Vec<String>, String> {
    if !Path::new(LSM_LIST_PATH).exists() {
        mount("securityfs", SECURITYFS_PATH).map_err(|err| {
            format!(
                "{LSM_LIST_PATH} does not exist and mounting securityfs failed ({err}); \
                 mount it with `mount -t securityfs securityfs {SECURITYFS_PATH}`"
            )
        })?;
        info!("mounted securityfs at {SECURITYFS_PATH}");
    }
    let text = fs::read_to_string(LSM_LIST_PATH).map_err(|err| format!("failed to read {LSM_LIST_PATH}: {err}"))?;
    Ok(text.trim().split(',').filter(|name| !name.is_empty()).map(str::to_owned).collect())
}

/// Checks that the BPF LSM is active and explains how to turn it on when
/// it is not.
pub fn check_bpf_lsm() -> Result<(), String> {
    let active = active_lsms()?;
    if active.iter().any(|name| name == "bpf") {
        return Ok(());
    }
    let list = active.join(",");
    let mut message = format!("the BPF LSM is not active on this kernel: {LSM_LIST_PATH} lists `{list}`, without `bpf`");
    match kernel::kernel_config_option("CONFIG_BPF_LSM") {
        Some(ConfigValue::NotSet) => {
            message.push_str(
                "; this kernel was also built without CONFIG_BPF_LSM, so it needs a kernel built with CONFIG_BPF_LSM=y",
            );
        }
        _ => {
            let fixed = if list.is_empty() { "bpf".to_owned() } else { format!("{list},bpf") };
            message.push_str(&format!(
                "; add `lsm={fixed}` to the kernel command line (for example to GRUB_CMDLINE_LINUX in \
                 /etc/default/grub, then run update-grub) and reboot"
            ));
        }
    }
    Err(message)
}

/// Checks that the kernel has the LSM hook `hook`: its `bpf_lsm_HOOK`
/// function in BTF, which BPF LSM programs attach to.
pub fn check_hook(btf: &Btf, hook: &str) -> Result<(), String> {
    if btf.find_function(&format!("bpf_lsm_{hook}")).is_some() {
        return Ok(());
    }
    Err(format!(
        "the LSM hook `{hook}` does not exist on this kernel (Linux {}): {} has no function bpf_lsm_{hook}",
        kernel::release(),
        crate::btf::VMLINUX_BTF_PATH
    ))
}

/// Checks that the process runs as root.
pub fn check_root() -> Result<(), String> {
    if kernel::is_root() {
        Ok(())
    } else {
        Err("mitigations need root (CAP_SYS_ADMIN and CAP_BPF to load and pin LSM programs); run with sudo".into())
    }
}
