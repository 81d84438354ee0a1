//! Work on the boot disk before the root is mounted: filesystem UUIDs with the
//! balena prefixes (first boot), filesystem checks (every boot) and growing
//! `resin-data` to the end of the disk (once the disk is bigger than the image).

use crate::log::Log;
use crate::sys;
use anyhow::{Context, Result};
use bootstage::disks::{BOOT_LABEL, Disk};
use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;
use subprocess::Cmd;

/// ext4 UUIDs of a device that booted once start with this (as balenaOS).
pub const EXT4_UUID_PREFIX: &str = "ba1eadef";
/// FAT serials of a device that booted once start with this (`BDEF-xxxx`).
pub const FAT_SERIAL_PREFIX: u32 = 0xBDEF_0000;

/// The ext4 partitions, rootA last: its UUID is the "done" marker.
pub const EXT4_LABELS: [&str; 4] = ["resin-rootB", "resin-state", "resin-data", "resin-rootA"];

/// Every filesystem of a balenaOS disk.
pub const ALL_LABELS: [&str; 5] = [
    BOOT_LABEL,
    "resin-rootA",
    "resin-rootB",
    "resin-state",
    "resin-data",
];

pub fn ext4_uuid(dev: &Path) -> Result<String> {
    bootstage::disks::ext4_uuid(dev)
        .with_context(|| format!("reading the ext4 filesystem UUID of {}", dev.display()))
}

/// Gives every filesystem of the boot disk a fresh UUID with the balena prefix,
/// unless it has one already. Images flashed to many devices share UUIDs; after
/// this, `root=UUID=` names this device's root and nothing else. A partition
/// that fails is reported and the others still get theirs.
pub fn regenerate_uuids(log: &Log, disk: &Disk) {
    for label in EXT4_LABELS {
        let Some(part) = disk.partition(label) else {
            continue;
        };
        if let Err(e) = regenerate_ext4_uuid(log, label, &part.dev) {
            log.info(format!(
                "{label}: regenerating the filesystem UUID failed (retried next boot): {e:#}"
            ));
        }
    }
    if let Err(e) = regenerate_fat_serial(log, disk) {
        log.info(format!(
            "{BOOT_LABEL}: regenerating the FAT serial failed (retried next boot): {e:#}"
        ));
    }
}

fn regenerate_ext4_uuid(log: &Log, label: &str, dev: &Path) -> Result<()> {
    let uuid = ext4_uuid(dev)?;
    if uuid.starts_with(EXT4_UUID_PREFIX) {
        return Ok(());
    }
    let new = balena_ext4_uuid();
    Cmd::new("/sbin/tune2fs")
        .arg("-U")
        .arg(&new)
        .arg(dev)
        .timeout(Duration::from_secs(60))
        .run()?;
    log.info(format!("{label}: filesystem UUID {uuid} -> {new}"));
    Ok(())
}

fn regenerate_fat_serial(log: &Log, disk: &Disk) -> Result<()> {
    let Some(boot) = disk.partition(BOOT_LABEL) else {
        return Ok(());
    };
    let mut f = OpenOptions::new().read(true).write(true).open(&boot.dev)?;
    let serial = diskimage::fat_volume_id(&mut f).context("reading the FAT serial")?;
    if serial & 0xFFFF_0000 != FAT_SERIAL_PREFIX {
        let new = FAT_SERIAL_PREFIX | (rand::random::<u32>() & 0xFFFF);
        diskimage::set_fat_volume_id(&mut f, new).context("writing the FAT serial")?;
        f.sync_all()?;
        log.info(format!(
            "{BOOT_LABEL}: FAT serial {serial:08X} -> {new:08X}"
        ));
    }
    Ok(())
}

fn balena_ext4_uuid() -> String {
    let random = uuid::Uuid::new_v4().to_string();
    format!("{EXT4_UUID_PREFIX}{}", &random[8..])
}

/// The check for one filesystem, `fsck -p` style.
fn fsck(disk: &Disk, label: &str) -> Option<Cmd> {
    let dev = &disk.partition(label)?.dev;
    Some(if label == BOOT_LABEL {
        Cmd::new("/sbin/fsck.fat")
            .args(["-a", "-w"])
            .arg(dev)
            .ok_codes(&[0, 1])
    } else {
        // 1: errors corrected, 2: corrected, reboot advised (only matters for a mounted root).
        Cmd::new("/sbin/e2fsck")
            .arg("-p")
            .arg(dev)
            .ok_codes(&[0, 1, 2])
            .timeout(Duration::from_secs(900))
    })
}

/// Checks the named filesystems of the boot disk, all at once (they are
/// independent); problems are logged and left to the mount that follows to refuse.
pub fn check_filesystems<'a>(log: &Log, disk: &Disk, labels: impl IntoIterator<Item = &'a str>) {
    let checks: Vec<(&str, Cmd)> = labels
        .into_iter()
        .filter_map(|l| Some((l, fsck(disk, l)?)))
        .collect();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = checks
            .iter()
            .map(|(label, cmd)| (*label, scope.spawn(move || cmd.run())))
            .collect();
        handles
            .into_iter()
            .map(|(label, h)| (label, h.join()))
            .collect()
    });
    for (label, result) in results {
        match result {
            Ok(Ok(out)) if out.code != 0 => log.info(format!(
                "{label}: filesystem errors corrected (fsck exit {})",
                out.code
            )),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log.info(format!("{label}: filesystem check failed: {e}")),
            Err(_) => log.info(format!("{label}: filesystem check thread panicked")),
        }
    }
}

/// Grows `resin-data` to the end of the disk when the disk has room for it.
/// The kernel learns the new size through BLKPG, which works while the root
/// (another partition of the same disk) is mounted.
pub fn expand_data(log: &Log, disk: &Disk) -> Result<()> {
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk.dev)
        .with_context(|| format!("opening {}", disk.dev.display()))?;
    let size = sys::block_device_size(&dev)
        .with_context(|| format!("reading the size of {}", disk.dev.display()))?;
    let Some(grown) =
        diskimage::grow_last_partition(&mut dev, size).context("growing resin-data")?
    else {
        return Ok(());
    };
    dev.sync_all()?;
    sys::resize_partition(&dev, grown.number, grown.offset_bytes, grown.size_bytes).with_context(
        || {
            format!(
                "telling the kernel that resin-data on {} grew",
                disk.dev.display()
            )
        },
    )?;
    drop(dev);
    let part = disk
        .partition("resin-data")
        .context("resin-data partition missing")?;
    Cmd::new("/sbin/resize2fs")
        .arg("-f")
        .arg(&part.dev)
        .timeout(Duration::from_secs(900))
        .run()?;
    log.info(format!(
        "resin-data: grown to {} MiB",
        grown.size_bytes >> 20
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext4_uuids_carry_the_prefix() {
        let u = balena_ext4_uuid();
        assert!(u.starts_with("ba1eadef-"), "{u}");
        assert!(uuid::Uuid::parse_str(&u).is_ok());
    }
}
