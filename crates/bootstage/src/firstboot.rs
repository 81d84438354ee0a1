//! Work on the boot disk before the root is mounted: filesystem UUIDs with the
//! balena prefixes (first boot), filesystem checks (every boot) and growing
//! `resin-data` to the end of the disk (once the disk is bigger than the image).

use crate::log::Log;
use crate::sys;
use anyhow::{Context, Result};
use bootstage::disks::{BOOT_LABEL, Disk};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::time::Duration;
use subprocess::Cmd;

/// ext4 UUIDs of a device that booted once start with this (as balenaOS).
pub const EXT4_UUID_PREFIX: &str = "ba1eadef";
/// FAT serials of a device that booted once start with this (`BDEF-xxxx`).
pub const FAT_SERIAL_PREFIX: u32 = 0xBDEF_0000;

/// The ext4 partitions, rootA last: its UUID is the "done" marker.
pub const EXT4_LABELS: [&str; 4] = ["resin-rootB", "resin-state", "resin-data", "resin-rootA"];

pub fn ext4_uuid(dev: &Path) -> Result<String> {
    let mut f = File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let info = diskimage::read_ext4_superblock(&mut f)
        .with_context(|| format!("reading the ext4 superblock of {}", dev.display()))?;
    Ok(info.uuid.to_string())
}

/// Gives every filesystem of the boot disk a fresh UUID with the balena prefix,
/// unless it has one already. Images flashed to many devices share UUIDs; after
/// this, `root=UUID=` names this device's root and nothing else.
pub fn regenerate_uuids(log: &Log, disk: &Disk) -> Result<()> {
    for label in EXT4_LABELS {
        let Some(part) = disk.partition(label) else {
            continue;
        };
        let uuid = ext4_uuid(&part.dev)?;
        if uuid.starts_with(EXT4_UUID_PREFIX) {
            continue;
        }
        let new = balena_ext4_uuid();
        Cmd::new("/sbin/tune2fs")
            .arg("-U")
            .arg(&new)
            .arg(&part.dev)
            .timeout(Duration::from_secs(60))
            .run()?;
        log.info(format!("{label}: filesystem UUID {uuid} -> {new}"));
    }
    if let Some(boot) = disk.partition(BOOT_LABEL) {
        let mut f = OpenOptions::new().read(true).write(true).open(&boot.dev)?;
        let serial =
            diskimage::fat_volume_id(&mut f).context("reading the FAT serial of resin-boot")?;
        if serial & 0xFFFF_0000 != FAT_SERIAL_PREFIX {
            let new = FAT_SERIAL_PREFIX | (rand::random::<u32>() & 0xFFFF);
            diskimage::set_fat_volume_id(&mut f, new)
                .context("writing the FAT serial of resin-boot")?;
            f.sync_all()?;
            log.info(format!(
                "{BOOT_LABEL}: FAT serial {serial:08X} -> {new:08X}"
            ));
        }
    }
    Ok(())
}

fn balena_ext4_uuid() -> String {
    let random = uuid::Uuid::new_v4().to_string();
    format!("{EXT4_UUID_PREFIX}{}", &random[8..])
}

/// Checks every filesystem of the boot disk the way `fsck -p` would, all at
/// once (they are independent); problems are logged and left to the mount
/// that follows to refuse.
pub fn check_filesystems(log: &Log, disk: &Disk) {
    let mut checks: Vec<(&str, Cmd)> = Vec::new();
    if let Some(boot) = disk.partition(BOOT_LABEL) {
        checks.push((
            BOOT_LABEL,
            Cmd::new("/sbin/fsck.fat")
                .args(["-a", "-w"])
                .arg(&boot.dev)
                .ok_codes(&[0, 1]),
        ));
    }
    for label in EXT4_LABELS {
        let Some(part) = disk.partition(label) else {
            continue;
        };
        // 1: errors corrected, 2: corrected, reboot advised (only matters for a mounted root).
        checks.push((
            label,
            Cmd::new("/sbin/e2fsck")
                .arg("-p")
                .arg(&part.dev)
                .ok_codes(&[0, 1, 2])
                .timeout(Duration::from_secs(900)),
        ));
    }
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
            Ok(run) => report(log, label, run),
            Err(_) => log.info(format!("{label}: filesystem check thread panicked")),
        }
    }
}

fn report(log: &Log, label: &str, run: Result<subprocess::Output, subprocess::Error>) {
    match run {
        Ok(out) if out.code != 0 => log.info(format!(
            "{label}: filesystem errors corrected (fsck exit {})",
            out.code
        )),
        Ok(_) => {}
        Err(e) => log.info(format!("{label}: filesystem check failed: {e}")),
    }
}

/// Grows `resin-data` to the end of the disk when the disk has room for it.
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
    sys::reread_partitions(&dev)
        .with_context(|| format!("re-reading the partition table of {}", disk.dev.display()))?;
    drop(dev);
    let part = disk
        .partition("resin-data")
        .context("resin-data partition missing")?;
    wait_for_node(&part.dev)?;
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

fn wait_for_node(dev: &Path) -> Result<()> {
    for _ in 0..200 {
        if dev.exists() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    anyhow::bail!(
        "{} did not reappear after re-reading the partition table",
        dev.display()
    )
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
