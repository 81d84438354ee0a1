//! Shared helpers for the image tests: small sparse images in temp dirs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::{Disk, Layout, PartitionInfo, PartitionSizes, write_partition_table};
use sha2::{Digest, Sha256};

pub const MIB: u64 = 1024 * 1024;

/// A layout small enough to make in milliseconds: 44 MiB in all.
pub fn small_layout() -> Layout {
    Layout::compute(&PartitionSizes {
        boot_mib: 8,
        root_mib: 4,
        state_mib: 4,
        data_mib: 16,
    })
}

/// A fresh sparse image with `layout`'s partition table, at `dir/disk.img`.
pub fn image_with_table(dir: &Path, layout: &Layout) -> (PathBuf, Vec<PartitionInfo>) {
    let path = dir.join("disk.img");
    let mut disk = Disk::create(&path, layout.total_bytes).unwrap();
    let parts = write_partition_table(&mut disk, layout, None).unwrap();
    (path, parts)
}

pub fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

/// The absolute path of `tool` if it is installed (searching the sbin dirs
/// too, which are not on every user's PATH).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(tool))
        .find(|candidate| candidate.is_file())
}

/// `sfdisk --json` of an image as JSON, with its stderr, if sfdisk is installed.
pub fn sfdisk_json(image: &Path) -> Option<(serde_json::Value, String)> {
    let sfdisk = find_tool("sfdisk")?;
    let out = Command::new(sfdisk)
        .arg("--json")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
