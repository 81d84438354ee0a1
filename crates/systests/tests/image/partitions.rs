//! The partition table and the filesystems' labels.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use systests::{DEVICE, manifest, run, test_image};

use crate::inputs::{device_type, toml_u64};
use crate::readers::{partition, partitions};

const MIB: u64 = 1024 * 1024;
/// balenaOS's BALENA_IMAGE_ALIGNMENT.
const ALIGNMENT: u64 = 4 * MIB;
const SECTOR: u64 = 512;
/// GPT type GUIDs, spelled out rather than taken from diskimage.
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const LINUX_FS_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const LABELS: [&str; 5] = [
    "resin-boot",
    "resin-rootA",
    "resin-rootB",
    "resin-state",
    "resin-data",
];
const EXT4_LABELS: [&str; 4] = ["resin-rootA", "resin-rootB", "resin-state", "resin-data"];

fn check_partition_table(variant: &str) {
    let image = test_image(variant);
    let parts = partitions(&image);
    let got: Vec<(u32, &str)> = parts.iter().map(|p| (p.number, p.name.as_str())).collect();
    let expected: Vec<(u32, &str)> = (1..).zip(LABELS).collect();
    assert_eq!(got, expected, "GPT partitions of {}", image.display());

    for p in &parts {
        let expected_type = if p.name == "resin-boot" {
            ESP_TYPE
        } else {
            LINUX_FS_TYPE
        };
        assert_eq!(
            p.type_guid.to_string(),
            expected_type,
            "type GUID of {}",
            p.name
        );
        assert_eq!(
            p.offset_bytes % ALIGNMENT,
            0,
            "{} starts at {}, not a multiple of 4 MiB",
            p.name,
            p.offset_bytes
        );
        assert_eq!(
            p.size_bytes % ALIGNMENT,
            0,
            "{} is {} bytes, not a multiple of 4 MiB",
            p.name,
            p.size_bytes
        );
    }
    assert_eq!(
        parts[0].offset_bytes,
        4 * MIB,
        "resin-boot must start at 4 MiB"
    );
    assert_eq!(parts[0].size_bytes, 100 * MIB, "resin-boot must be 100 MiB");
    assert_eq!(
        parts[1].size_bytes, parts[2].size_bytes,
        "resin-rootA and resin-rootB must be the same size"
    );

    let device = device_type();
    let from_device: Vec<u64> = [
        "boot_size_mib",
        "root_size_mib",
        "root_size_mib",
        "state_size_mib",
        "data_size_mib",
    ]
    .iter()
    .map(|key| toml_u64(&device, key) * MIB)
    .collect();
    let sizes: Vec<u64> = parts.iter().map(|p| p.size_bytes).collect();
    assert_eq!(
        sizes, from_device,
        "partition sizes vs devices/{DEVICE}.toml"
    );

    for pair in parts.windows(2) {
        assert!(
            pair[0].offset_bytes + pair[0].size_bytes <= pair[1].offset_bytes,
            "{} ({}+{}) overlaps {} (at {})",
            pair[0].name,
            pair[0].offset_bytes,
            pair[0].size_bytes,
            pair[1].name,
            pair[1].offset_bytes
        );
    }

    let m = manifest(variant);
    let listed: Vec<(u64, String, u64, u64)> = m["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no partitions array: {m}"))
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().expect("partition number"),
                p["name"].as_str().expect("partition name").to_string(),
                p["offsetBytes"].as_u64().expect("partition offsetBytes"),
                p["sizeBytes"].as_u64().expect("partition sizeBytes"),
            )
        })
        .collect();
    let read: Vec<(u64, String, u64, u64)> = parts
        .iter()
        .map(|p| {
            (
                u64::from(p.number),
                p.name.clone(),
                p.offset_bytes,
                p.size_bytes,
            )
        })
        .collect();
    assert_eq!(read, listed, "partition table vs the build manifest");

    // The backup GPT, checked with an independent GPT implementation: both
    // headers valid, the backup in the last sector, every partition inside
    // the usable area and before the backup entries.
    let size = std::fs::metadata(&image).expect("image metadata").len();
    assert_eq!(
        m["image"]["sizeBytes"].as_u64(),
        Some(size),
        "manifest image size vs the file"
    );
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .open(&image)
        .unwrap_or_else(|e| panic!("gpt crate reading {}: {e}", image.display()));
    let primary = gpt.primary_header().expect("primary GPT header");
    let backup = gpt.backup_header().expect("backup GPT header");
    let last_lba = size / SECTOR - 1;
    assert_eq!(primary.backup_lba, last_lba, "primary header's backup LBA");
    assert_eq!(backup.current_lba, last_lba, "backup header LBA");
    for p in &parts {
        assert!(
            p.first_lba >= primary.first_usable
                && p.last_lba <= primary.last_usable
                && p.last_lba < backup.part_start,
            "{} (LBA {}..={}) is outside the usable area {}..={} or reaches the backup entries at {}",
            p.name,
            p.first_lba,
            p.last_lba,
            primary.first_usable,
            primary.last_usable,
            backup.part_start
        );
    }
    let theirs: Vec<(u32, String, u64, u64, String)> = gpt
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| {
            (
                *n,
                p.name.clone(),
                p.first_lba,
                p.last_lba,
                p.part_type_guid.guid.to_string(),
            )
        })
        .collect();
    let ours: Vec<(u32, String, u64, u64, String)> = parts
        .iter()
        .map(|p| {
            (
                p.number,
                p.name.clone(),
                p.first_lba,
                p.last_lba,
                p.type_guid.to_string(),
            )
        })
        .collect();
    assert_eq!(ours, theirs, "diskimage vs the gpt crate");
}

#[test]
fn partition_table_dev() {
    check_partition_table("dev");
}

#[test]
fn partition_table_prod() {
    check_partition_table("prod");
}

// ---------------------------------------------------------------------------
// 2. Filesystem labels.

/// `blkid -p` on one partition: an independent witness of type and label.
fn blkid(image: &Path, part: &diskimage::PartitionInfo) -> BTreeMap<String, String> {
    let out = run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(part.offset_bytes.to_string())
        .arg(image));
    assert!(
        out.success(),
        "blkid on {} of {}: {out}",
        part.name,
        image.display()
    );
    out.stdout_text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check_labels(variant: &str) {
    let image = test_image(variant);
    for label in EXT4_LABELS {
        let info = diskimage::read_ext4_info(&image, label)
            .unwrap_or_else(|e| panic!("{variant}: {label} is not ext4: {e}"));
        assert_eq!(
            info.label, label,
            "{variant}: ext4 label of partition {label}"
        );
        let part = partition(&image, label);
        assert_eq!(
            info.size_bytes(),
            part.size_bytes,
            "{variant}: the {label} filesystem should fill its partition"
        );
        let ids = blkid(&image, &part);
        assert_eq!(ids.get("TYPE").map(String::as_str), Some("ext4"), "{ids:?}");
        assert_eq!(ids.get("LABEL").map(String::as_str), Some(label), "{ids:?}");
    }

    let mut disk = diskimage::Disk::open(&image).unwrap_or_else(|e| panic!("{e}"));
    let fs = diskimage::open_fat_partition(&mut disk, "resin-boot")
        .unwrap_or_else(|e| panic!("{variant}: resin-boot is not FAT: {e}"));
    assert_eq!(
        fs.label(),
        "resin-boot",
        "{variant}: FAT label of resin-boot"
    );
    drop(fs);
    let ids = blkid(&image, &partition(&image, "resin-boot"));
    assert_eq!(ids.get("TYPE").map(String::as_str), Some("vfat"), "{ids:?}");
    assert_eq!(
        ids.get("LABEL").map(String::as_str),
        Some("resin-boot"),
        "{ids:?}"
    );
}

#[test]
fn labels_dev() {
    check_labels("dev");
}

#[test]
fn labels_prod() {
    check_labels("prod");
}
