//! `baleen device state-probe DEVNODE LABEL`: the udev helper behind
//! `/dev/disk/by-state/` (65-baleen-by-state.rules). It prints
//! `BALENA_FS_USE=<label>` only for partitions on the disk the running root
//! was mounted from, and `BALENA_UPDATE_STATE=active|inactive` for the two
//! root partitions, the variables balenaOS's rules use. A second disk with
//! the same labels gets nothing, so nothing mounts it by mistake.
//!
//! The root is found by its device number (`stat /`), not by a UUID lookup:
//! exact, and free of the UUID handoff balenaOS needs after it regenerates
//! UUIDs (the boot stage regenerated them before this kernel started).

use anyhow::{Context, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Major and minor of a Linux `dev_t` (glibc's encoding).
pub fn split_dev(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// The sysfs directory of the disk a block device (major, minor) belongs to:
/// the parent of a partition, the device itself for a whole disk.
pub fn disk_of(sys: &Path, (major, minor): (u64, u64)) -> Result<PathBuf> {
    let link = sys.join(format!("dev/block/{major}:{minor}"));
    let dir = link
        .canonicalize()
        .with_context(|| format!("resolving {}", link.display()))?;
    if dir.join("partition").exists() {
        Ok(dir.parent().map(Path::to_path_buf).unwrap_or(dir))
    } else {
        Ok(dir)
    }
}

/// The udev properties for a partition with `label`.
pub fn properties(
    sys: &Path,
    part: (u64, u64),
    root: (u64, u64),
    label: &str,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    if !layout::label::is_managed(label) {
        return Ok(out);
    }
    if disk_of(sys, part)? != disk_of(sys, root)? {
        return Ok(out);
    }
    out.push(("BALENA_FS_USE".to_string(), label.to_string()));
    if layout::label::is_root(label) {
        let state = if part == root { "active" } else { "inactive" };
        out.push(("BALENA_UPDATE_STATE".to_string(), state.to_string()));
    }
    Ok(out)
}

/// Prints the properties for `devnode` to stdout, in udev's `KEY=value` form.
pub fn probe(devnode: &Path, label: &str) -> Result<()> {
    let part = std::fs::metadata(devnode)
        .with_context(|| format!("reading {}", devnode.display()))?
        .rdev();
    let root = std::fs::metadata("/").context("reading /")?.dev();
    for (key, value) in properties(Path::new("/sys"), split_dev(part), split_dev(root), label)? {
        println!("{key}={value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A sysfs with two disks, vda (boot) and vdb (a copy with the same labels).
    fn sysfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path();
        std::fs::create_dir_all(s.join("dev/block")).unwrap();
        for (disk, major) in [("vda", 253), ("vdb", 254)] {
            let d = s.join(format!("devices/pci0/virtio/block/{disk}"));
            std::fs::create_dir_all(&d).unwrap();
            symlink(&d, s.join(format!("dev/block/{major}:0"))).unwrap();
            for n in 1..=5 {
                let p = d.join(format!("{disk}{n}"));
                std::fs::create_dir_all(&p).unwrap();
                std::fs::write(p.join("partition"), format!("{n}\n")).unwrap();
                symlink(&p, s.join(format!("dev/block/{major}:{n}"))).unwrap();
            }
        }
        dir
    }

    #[test]
    fn boot_disk_partitions_get_links_and_roots_their_state() {
        let s = sysfs();
        let root = (253, 2);
        let props = |part, label| properties(s.path(), part, root, label).unwrap();
        assert_eq!(
            props((253, 4), "resin-state"),
            vec![("BALENA_FS_USE".into(), "resin-state".into())]
        );
        assert_eq!(
            props((253, 2), "resin-rootA"),
            vec![
                ("BALENA_FS_USE".into(), "resin-rootA".into()),
                ("BALENA_UPDATE_STATE".into(), "active".into())
            ]
        );
        assert_eq!(props((253, 3), "resin-rootB")[1].1, "inactive");
    }

    #[test]
    fn another_disk_with_the_same_labels_gets_nothing() {
        let s = sysfs();
        assert!(
            properties(s.path(), (254, 4), (253, 2), "resin-state")
                .unwrap()
                .is_empty()
        );
        assert!(
            properties(s.path(), (254, 2), (253, 2), "resin-rootA")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unmanaged_labels_get_nothing() {
        let s = sysfs();
        assert!(
            properties(s.path(), (253, 1), (253, 2), "EFI")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn dev_numbers_split_like_glibc() {
        assert_eq!(split_dev(0xfd02), (253, 2));
        assert_eq!(split_dev((259 << 8) | 5), (259, 5));
        assert_eq!(split_dev(3_222_760), (300, 1000));
    }
}
