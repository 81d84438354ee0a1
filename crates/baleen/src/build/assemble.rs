//! The disk image, made without loop devices or mounts: a sparse file, a GPT
//! written by code, ext4 filesystems made from directories by `mkfs.ext4 -d`
//! at their partition's offset, and the FAT boot filesystem written by code.

use anyhow::{Context, Result, bail};
use diskimage::{Disk, Layout, PartitionInfo};
use std::path::Path;
use std::time::Duration;
use subprocess::Cmd;

/// Makes an ext4 filesystem inside `image` at the partition's offset, filled
/// from `content` when given. metadata_csum_seed lets the boot stage give the
/// filesystem a new UUID in an instant on first boot.
pub fn mkfs_ext4(image: &Path, part: &PartitionInfo, content: Option<&Path>) -> Result<()> {
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut cmd = Cmd::new("mkfs.ext4")
        .package("e2fsprogs")
        .args([
            "-F",
            "-q",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-i",
            "8192",
            "-O",
            "metadata_csum_seed",
        ])
        .arg("-L")
        .arg(&part.name)
        .arg("-U")
        .arg(&uuid)
        .arg("-E")
        .arg(format!(
            "offset={},lazy_itable_init=0,lazy_journal_init=0",
            part.offset_bytes
        ))
        .timeout(Duration::from_secs(1800));
    if let Some(dir) = content {
        cmd = cmd.arg("-d").arg(dir);
    }
    let blocks = part.size_bytes / 4096;
    cmd.arg(image)
        .arg(blocks.to_string())
        .run()
        .with_context(|| format!("making the {} filesystem", part.name))?;
    Ok(())
}

/// Bytes a directory tree occupies on an ext4 filesystem, roughly (file data
/// rounded up to blocks, plus an inode each).
pub fn tree_bytes(dir: &Path) -> Result<u64> {
    let out = Cmd::new("du")
        .package("coreutils")
        .args(["-s", "-B1", "--apparent-size"])
        .arg(dir)
        .run()?;
    let apparent: u64 = out
        .stdout
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("reading du output")?;
    let files = Cmd::new("sh")
        .args(["-c", "find \"$0\" -xdev | wc -l"])
        .arg(dir)
        .run()?;
    let count: u64 = files.stdout.trim().parse().unwrap_or(0);
    Ok(apparent + count * 4096)
}

/// Writes the whole image at `path` (which must not exist yet).
pub fn write_image(
    path: &Path,
    layout: &Layout,
    staging: &Path,
    boot_tree: &Path,
) -> Result<Vec<PartitionInfo>> {
    let needed = tree_bytes(staging)?;
    let root = layout
        .partition(diskimage::layout::ROOT_A_LABEL)
        .context("layout has no rootA")?;
    // ext4 keeps ~5 % for the journal, inode tables and reserved blocks.
    if needed + needed / 10 > root.size_bytes {
        bail!(
            "the root filesystem needs about {} MiB but resin-rootA is {} MiB: raise root_size_mib in the device type file",
            (needed + needed / 10) >> 20,
            root.size_bytes >> 20
        );
    }
    let mut disk = Disk::create(path, layout.total_bytes)?;
    let parts = diskimage::write_partition_table(&mut disk, layout, None)?;
    disk.sync()?;
    drop(disk);
    for part in &parts {
        match part.name.as_str() {
            "resin-boot" => {}
            "resin-rootA" => mkfs_ext4(path, part, Some(staging))?,
            _ => mkfs_ext4(path, part, None)?,
        }
    }
    let mut disk = Disk::open_rw(path)?;
    let boot = diskimage::find_partition(&parts, diskimage::layout::BOOT_LABEL, path)?.clone();
    let serial = rand_serial();
    diskimage::format_boot_fs(disk.partition(&boot), serial)?;
    let fs = diskimage::FatFs::open(disk.partition(&boot), "resin-boot")?;
    fs.write_tree(boot_tree)?;
    fs.close()?;
    disk.sync()?;
    Ok(parts)
}

fn rand_serial() -> u32 {
    // Not BDEF-prefixed: the boot stage gives the device its own on first boot.
    uuid::Uuid::new_v4().as_u128() as u32 & 0x7FFF_FFFF
}
