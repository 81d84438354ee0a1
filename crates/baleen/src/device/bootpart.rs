//! Finding and mounting the boot partition of the disk the root came from,
//! never a partition with the same label on another disk.

use anyhow::{Context, Result, bail};
use bootstage::disks::{self, BOOT_LABEL};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subprocess::Cmd;

/// The `root=UUID=` value of a kernel command line.
pub fn root_uuid(cmdline: &str) -> Option<String> {
    bootstage::cmdline::split(cmdline)
        .into_iter()
        .find_map(|w| w.strip_prefix("root=UUID=").map(str::to_lowercase))
}

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
        for disk in disks::gather(Path::new("/sys/class/block"), Path::new("/dev")) {
            let holds_root = disk.partitions.iter().any(|p| {
                diskimage::read_ext4_superblock(&mut match std::fs::File::open(&p.dev) {
                    Ok(f) => f,
                    Err(_) => return false,
                })
                .is_ok_and(|info| info.uuid.to_string() == uuid)
            });
            if holds_root {
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
    let uuid = root_uuid(&cmdline).context("/proc/cmdline has no root=UUID=")?;
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
    fn root_uuid_from_cmdline() {
        assert_eq!(
            root_uuid("console=ttyS0 root=UUID=BA1EADEF-1 ro").as_deref(),
            Some("ba1eadef-1")
        );
        assert_eq!(root_uuid("root=/dev/vda2"), None);
    }

    #[test]
    fn mountinfo_targets() {
        let info = "36 35 98:0 / /mnt/boot rw,noatime master:1 - vfat /dev/vda1 rw\n";
        assert!(is_mounted(info, "/mnt/boot"));
        assert!(!is_mounted(info, "/mnt/boo"));
    }
}
