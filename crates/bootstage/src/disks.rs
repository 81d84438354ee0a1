//! Finding the disk we booted from. Gathering reads sysfs and partition
//! tables; choosing is pure: the disk whose `resin-boot` partition the firmware
//! loaded us from (`LoaderDevicePartUUID`), narrowed by the PCI path of the
//! firmware's boot option when copies of one image sit on several disks.
//! A second disk carrying the same labels is never chosen by label alone.

use crate::efi::{self, PciNode};
use std::path::{Path, PathBuf};

/// The label of the boot partition (GPT partition name and FAT label).
pub const BOOT_LABEL: &str = "resin-boot";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    /// GPT partition name, e.g. `resin-rootA`.
    pub name: String,
    /// GPT unique partition GUID, lower-case.
    pub part_guid: String,
    /// Device node, e.g. `/dev/vda2`.
    pub dev: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. `vda`, `nvme0n1`.
    pub name: String,
    pub dev: PathBuf,
    /// Resolved sysfs device path (for the PCI hops).
    pub sysfs_path: String,
    pub partitions: Vec<Partition>,
}

impl Disk {
    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// How the boot disk was told apart from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// The only disk with a `resin-boot` partition.
    OnlyCandidate,
    /// Its boot partition GUID is the one the firmware loaded us from.
    LoaderPartition,
    /// Several disks share that GUID; the firmware's boot option names this one.
    FirmwareBootPath,
    /// Nothing told the copies apart; the first was taken.
    FirstOfIdentical,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error("no disk with a {BOOT_LABEL} partition found (disks seen: {0})")]
    NoBootDisk(String),
    #[error(
        "the firmware loaded us from partition {uuid}, which no disk carries (disks with {BOOT_LABEL}: {seen})"
    )]
    LoaderPartitionMissing { uuid: String, seen: String },
}

/// Chooses the boot disk among `disks`.
pub fn select<'a>(
    disks: &'a [Disk],
    loader_part_uuid: Option<&str>,
    boot_pci_path: Option<&[PciNode]>,
) -> Result<(&'a Disk, Evidence), SelectError> {
    let mut candidates: Vec<&Disk> = disks
        .iter()
        .filter(|d| d.partition(BOOT_LABEL).is_some())
        .collect();
    if candidates.is_empty() {
        let seen: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        return Err(SelectError::NoBootDisk(if seen.is_empty() {
            "none".into()
        } else {
            seen.join(", ")
        }));
    }
    // When the firmware says which partition it loaded us from, only a disk
    // carrying it qualifies: another disk with the same labels that shows up
    // first must not win the race.
    if let Some(uuid) = loader_part_uuid {
        let matching: Vec<&Disk> = candidates
            .iter()
            .copied()
            .filter(|d| {
                d.partitions
                    .iter()
                    .any(|p| p.part_guid.eq_ignore_ascii_case(uuid))
            })
            .collect();
        match matching.len() {
            0 => {
                let seen: Vec<&str> = candidates.iter().map(|d| d.name.as_str()).collect();
                return Err(SelectError::LoaderPartitionMissing {
                    uuid: uuid.to_string(),
                    seen: seen.join(", "),
                });
            }
            1 => return Ok((matching[0], Evidence::LoaderPartition)),
            _ => candidates = matching,
        }
    } else if candidates.len() == 1 {
        return Ok((candidates[0], Evidence::OnlyCandidate));
    }
    if let Some(path) = boot_pci_path.filter(|p| !p.is_empty()) {
        let matching: Vec<&Disk> = candidates
            .iter()
            .copied()
            .filter(|d| efi::sysfs_pci_path(&d.sysfs_path) == path)
            .collect();
        if matching.len() == 1 {
            return Ok((matching[0], Evidence::FirmwareBootPath));
        }
    }
    Ok((candidates[0], Evidence::FirstOfIdentical))
}

/// The UUID of the ext4 filesystem on `dev`, lower-case.
pub fn ext4_uuid(dev: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(dev)?;
    let info = diskimage::read_ext4_superblock(&mut f).map_err(std::io::Error::other)?;
    Ok(info.uuid.to_string())
}

/// The disk and partition carrying the ext4 filesystem `uuid`, if any.
pub fn holding_ext4_uuid<'a>(disks: &'a [Disk], uuid: &str) -> Option<(&'a Disk, &'a Partition)> {
    disks.iter().find_map(|disk| {
        let part = disk
            .partitions
            .iter()
            .find(|p| ext4_uuid(&p.dev).is_ok_and(|u| u == uuid))?;
        Some((disk, part))
    })
}

/// Whole disks the boot stage considers (no loop, ram, zram, device-mapper or md).
pub fn is_candidate_disk_name(name: &str) -> bool {
    !["loop", "ram", "zram", "dm-", "md", "sr", "fd"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Reads every whole disk under `sys_block` (normally `/sys/class/block`) with
/// its GPT partitions; disks without a readable GPT are skipped.
pub fn gather(sys_block: &Path, dev: &Path) -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_candidate_disk_name(n) && !sys_block.join(n).join("partition").exists())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| read_disk(sys_block, dev, &name))
        .collect()
}

fn read_disk(sys_block: &Path, dev: &Path, name: &str) -> Option<Disk> {
    let disk_dev = dev.join(name);
    let table = diskimage::read_partition_table(&disk_dev).ok()?;
    let nodes = partition_nodes(&sys_block.join(name));
    let partitions = table
        .into_iter()
        .filter_map(|p| {
            let node = nodes.iter().find(|(n, _)| *n == p.number)?;
            Some(Partition {
                number: p.number,
                name: p.name.clone(),
                part_guid: p.part_guid.to_string().to_lowercase(),
                dev: dev.join(&node.1),
            })
        })
        .collect();
    let sysfs_path = std::fs::canonicalize(sys_block.join(name))
        .ok()?
        .to_string_lossy()
        .into_owned();
    Some(Disk {
        name: name.to_string(),
        dev: disk_dev,
        sysfs_path,
        partitions,
    })
}

/// (partition number, kernel name) of the partitions sysfs lists under a disk.
fn partition_nodes(disk_sys: &Path) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir(disk_sys) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let number = std::fs::read_to_string(e.path().join("partition"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((number, e.file_name().to_string_lossy().into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, pci: &str, boot_guid: &str) -> Disk {
        Disk {
            name: name.into(),
            dev: PathBuf::from(format!("/dev/{name}")),
            sysfs_path: format!("/sys/devices/pci0000:00/0000:00:{pci}.0/virtio1/block/{name}"),
            partitions: vec![
                Partition {
                    number: 1,
                    name: BOOT_LABEL.into(),
                    part_guid: boot_guid.into(),
                    dev: format!("/dev/{name}1").into(),
                },
                Partition {
                    number: 2,
                    name: "resin-rootA".into(),
                    part_guid: "r".into(),
                    dev: format!("/dev/{name}2").into(),
                },
            ],
        }
    }

    #[test]
    fn no_boot_disk_is_an_error_naming_the_disks() {
        let mut d = disk("vda", "03", "g");
        d.partitions.clear();
        let err = select(std::slice::from_ref(&d), None, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no disk with a resin-boot partition found (disks seen: vda)"
        );
        assert_eq!(
            select(&[], None, None).unwrap_err().to_string(),
            "no disk with a resin-boot partition found (disks seen: none)"
        );
    }

    #[test]
    fn single_candidate_wins_without_firmware_evidence() {
        let disks = [disk("vda", "03", "g1")];
        assert_eq!(
            select(&disks, None, None).unwrap().1,
            Evidence::OnlyCandidate
        );
        assert_eq!(
            select(&disks, Some("g1"), None).unwrap().1,
            Evidence::LoaderPartition
        );
    }

    #[test]
    fn a_lone_disk_without_the_loader_partition_is_not_taken() {
        let disks = [disk("vdb", "04", "other")];
        assert_eq!(
            select(&disks, Some("g1"), None).unwrap_err().to_string(),
            "the firmware loaded us from partition g1, which no disk carries \
             (disks with resin-boot: vdb)"
        );
    }

    #[test]
    fn loader_partition_picks_among_different_disks() {
        let disks = [disk("vda", "03", "g1"), disk("vdb", "04", "g2")];
        let (d, ev) = select(&disks, Some("G2"), None).unwrap();
        assert_eq!((d.name.as_str(), ev), ("vdb", Evidence::LoaderPartition));
    }

    #[test]
    fn identical_copies_are_told_apart_by_the_firmware_path() {
        let disks = [disk("vda", "03", "g"), disk("vdb", "04", "g")];
        let path = [PciNode {
            device: 4,
            function: 0,
        }];
        let (d, ev) = select(&disks, Some("g"), Some(&path)).unwrap();
        assert_eq!((d.name.as_str(), ev), ("vdb", Evidence::FirmwareBootPath));
    }

    #[test]
    fn identical_copies_without_evidence_take_the_first() {
        let disks = [disk("vda", "03", "g"), disk("vdb", "04", "g")];
        let (d, ev) = select(&disks, None, None).unwrap();
        assert_eq!((d.name.as_str(), ev), ("vda", Evidence::FirstOfIdentical));
    }

    #[test]
    fn candidate_names() {
        assert!(
            is_candidate_disk_name("vda")
                && is_candidate_disk_name("nvme0n1")
                && is_candidate_disk_name("mmcblk0")
        );
        assert!(
            !is_candidate_disk_name("loop0")
                && !is_candidate_disk_name("zram0")
                && !is_candidate_disk_name("dm-1")
        );
    }
}
