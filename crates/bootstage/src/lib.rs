//! baleen's boot stage: PID 1 of the initramfs inside the unified kernel image
//! on `resin-boot`. It finds the disk it booted from, reads `bootenv`, counts
//! boots, does first-boot work (filesystem UUIDs, fsck, growing `resin-data`),
//! mounts the chosen root read-only and kexecs that root's own kernel.
//!
//! The library holds the pure parts (command line, firmware variables, disk
//! choice) and the initramfs description shared with the image builder.

pub mod cmdline;
pub mod disks;
pub mod efi;
pub mod state;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the image builder writes [`StageConfig`] inside the initramfs.
pub const CONFIG_PATH: &str = "/etc/baleen-boot.json";

/// What the image builder tells the boot stage (written into the initramfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// What this initramfs is for.
    pub role: Role,
    /// HOSTOS_VERSION of the image that built this boot stage.
    pub os_version: String,
    /// Device type slug.
    pub device: String,
    /// Development image: on failure drop to a shell instead of rebooting.
    pub development: bool,
    /// Kernel modules to load, as paths inside the initramfs, in waves: a
    /// module's dependencies are all in earlier waves, so each wave loads
    /// concurrently.
    pub module_waves: Vec<Vec<String>>,
    /// The root kernel's command line, before `root=UUID=… ro`. The unified
    /// kernel image's own line adds `quiet`: the boot stage logs its steps
    /// itself, and a kernel log on a serial console costs boot time.
    pub root_cmdline: String,
}

/// The two initramfs `baleen-boot` runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In the unified kernel image on `resin-boot`: pick the root and kexec its kernel.
    Stage,
    /// In a root's `/boot/baleen-initrd.img`, started by that kexec: mount the
    /// root named by `root=UUID=` read-only and hand over to its init.
    Root,
}

/// The unified kernel image's command line for a root command line.
pub fn stage_cmdline(root_cmdline: &str) -> String {
    let words = cmdline::split(root_cmdline);
    if words.iter().any(|w| w == "quiet") {
        root_cmdline.to_string()
    } else {
        format!("{root_cmdline} quiet").trim().to_string()
    }
}

/// Paths of the root's kernel and initrd, relative to the root (build-made
/// relative symlinks to the versioned files).
pub const ROOT_KERNEL: &str = "boot/vmlinuz";
/// baleen's own initrd for the root's kernel (role [`Role::Root`]).
pub const ROOT_INITRD: &str = "boot/baleen-initrd.img";
/// Debian's initrd, used when a root has no baleen initrd.
pub const ROOT_DEBIAN_INITRD: &str = "boot/initrd.img";

/// Modules the root's initramfs loads besides the device type's boot modules: it mounts
/// `resin-boot` (FAT; codepage 437, Debian's default character set `ascii`) before the root's
/// init starts, so that nothing waits for udev to find the boot partition. The boot stage
/// itself reads FAT in userspace and does not need them.
pub const ROOT_EXTRA_MODULES: [&str; 3] = ["vfat", "nls_cp437", "nls_ascii"];

/// The boot stage's and the root's initramfs module lists: the device type's boot modules,
/// and for [`Role::Root`] also [`ROOT_EXTRA_MODULES`] (each name once, in order).
pub fn role_modules(role: Role, boot_modules: &[String]) -> Vec<String> {
    let mut names = boot_modules.to_vec();
    if role == Role::Root {
        for extra in ROOT_EXTRA_MODULES {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.to_string());
            }
        }
    }
    names
}

/// Why a path inside a root could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("/{0} not found in the root")]
    NotFound(String),
    #[error("/{0} leaves the root ({1})")]
    Escapes(String, String),
    #[error("/{0} is not a regular file")]
    NotAFile(String),
    #[error("/{0}: too many levels of symbolic links")]
    Loop(String),
    #[error("resolving /{0}: {1}")]
    Io(String, std::io::Error),
}

/// Resolves `rel` inside `root`, refusing paths that leave it (a symlink in the
/// root is interpreted against the root, not against the initramfs).
pub fn resolve_in_root(root: &Path, rel: &str) -> Result<PathBuf, ResolveError> {
    let mut path = root.join(rel);
    for _ in 0..16 {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    std::fs::read_link(&path).map_err(|e| ResolveError::Io(rel.into(), e))?;
                path = if target.is_absolute() {
                    root.join(target.strip_prefix("/").unwrap_or(&target))
                } else {
                    path.parent().unwrap_or(root).join(target)
                };
            }
            Ok(m) if m.is_file() => {
                let canonical =
                    std::fs::canonicalize(&path).map_err(|e| ResolveError::Io(rel.into(), e))?;
                if !canonical.starts_with(root) {
                    return Err(ResolveError::Escapes(
                        rel.into(),
                        canonical.display().to_string(),
                    ));
                }
                return Ok(canonical);
            }
            Ok(_) => return Err(ResolveError::NotAFile(rel.into())),
            Err(_) => return Err(ResolveError::NotFound(rel.into())),
        }
    }
    Err(ResolveError::Loop(rel.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_root_role_adds_the_boot_partition_s_modules() {
        let boot = vec!["virtio_blk".to_string(), "nls_ascii".to_string()];
        assert_eq!(role_modules(Role::Stage, &boot), boot);
        assert_eq!(
            role_modules(Role::Root, &boot),
            ["virtio_blk", "nls_ascii", "vfat", "nls_cp437"]
        );
    }

    #[test]
    fn stage_cmdline_is_quiet() {
        assert_eq!(
            stage_cmdline("console=ttyS0 panic=10"),
            "console=ttyS0 panic=10 quiet"
        );
        assert_eq!(stage_cmdline("console=ttyS0 quiet"), "console=ttyS0 quiet");
    }

    #[test]
    fn resolves_relative_and_absolute_links_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1"), b"k").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1", r.join("boot/vmlinuz")).unwrap();
        std::os::unix::fs::symlink("/boot/vmlinuz-6.1", r.join("boot/abs")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", r.join("boot/escape")).unwrap();
        let canon = std::fs::canonicalize(r).unwrap();
        assert_eq!(
            resolve_in_root(&canon, "boot/vmlinuz").unwrap(),
            canon.join("boot/vmlinuz-6.1")
        );
        assert_eq!(
            resolve_in_root(&canon, "boot/abs").unwrap(),
            canon.join("boot/vmlinuz-6.1")
        );
        assert_eq!(
            resolve_in_root(&canon, "boot/initrd.img")
                .unwrap_err()
                .to_string(),
            "/boot/initrd.img not found in the root"
        );
        assert!(matches!(
            resolve_in_root(&canon, "boot/escape").unwrap_err(),
            ResolveError::Escapes(..)
        ));
    }
}
