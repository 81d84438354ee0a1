//! Finding and mounting the boot partition of the disk the root came from,
//! never a partition with the same label on another disk.

use anyhow::{Context, Result, bail};
use bootstage::disks::{self, BOOT_LABEL};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subprocess::Cmd;

/// Whether `target` is a mount point according to a mountinfo text.
pub fn is_mounted(mountinfo: &str, target: &str) -> bool {
    mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(target))
}

/// The boot partition device on the disk holding the root with `uuid`.
pub fn find_boot_partition(uuid: &str) -> Result<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = disks::gather(Path::new("/sys/class/block"), Path::new("/dev"));
        if let Some((disk, _)) = disks::holding_ext4_uuid(&found, uuid) {
            return disk
                .partition(BOOT_LABEL)
                .map(|p| p.dev.clone())
                .with_context(|| {
                    format!(
                        "disk {} holds the root but has no {BOOT_LABEL} partition",
                        disk.dev.display()
                    )
                });
        }
        if Instant::now() > deadline {
            bail!("no disk holds the root filesystem UUID={uuid} (from /proc/cmdline) after 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Mounts the boot partition at `<root>/mnt/boot` unless it is mounted already.
pub fn mount_boot(root: &Path) -> Result<PathBuf> {
    let target = root.join("mnt/boot");
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    if is_mounted(&mountinfo, &target.to_string_lossy()) {
        return Ok(target);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let uuid =
        bootstage::cmdline::root_uuid(&cmdline).context("/proc/cmdline has no root=UUID=")?;
    let dev = find_boot_partition(&uuid)?;
    Cmd::new("mount")
        .package("mount")
        .args([
            "-t",
            "vfat",
            "-o",
            "rw,noatime,nosuid,nodev,noexec,fmask=0077,dmask=0077",
        ])
        .arg(&dev)
        .arg(&target)
        .run()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_targets() {
        let info = "36 35 98:0 / /mnt/boot rw,noatime master:1 - vfat /dev/vda1 rw\n";
        assert!(is_mounted(info, "/mnt/boot"));
        assert!(!is_mounted(info, "/mnt/boo"));
    }
}
