//! Partition table round trips, cross-checked against the `gpt` crate and sfdisk.

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};

use common::{MIB, image_with_table, sfdisk_json, small_layout};
use diskimage::layout::{ESP_TYPE, LINUX_FS_TYPE};
use diskimage::{Disk, Layout, PartitionSizes, read_partition_table, write_partition_table};
use uuid::Uuid;

#[test]
fn written_table_reads_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let layout = small_layout();
    let (path, written) = image_with_table(dir.path(), &layout);

    let read = read_partition_table(&path).unwrap();
    assert_eq!(read, written);
    let summary: Vec<_> = read
        .iter()
        .map(|p| {
            (
                p.number,
                p.name.as_str(),
                p.offset_bytes / MIB,
                p.size_bytes / MIB,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "resin-boot", 4, 8),
            (2, "resin-rootA", 12, 4),
            (3, "resin-rootB", 16, 4),
            (4, "resin-state", 20, 4),
            (5, "resin-data", 24, 16),
        ]
    );
    assert_eq!(read[0].type_guid, ESP_TYPE);
    assert!(read[1..].iter().all(|p| p.type_guid == LINUX_FS_TYPE));
    for (p, spec) in read.iter().zip(&layout.partitions) {
        assert_eq!(p.first_lba * 512, spec.offset_bytes);
        assert_eq!((p.last_lba + 1) * 512, spec.end_bytes());
    }
    let mut guids: Vec<Uuid> = read.iter().map(|p| p.part_guid).collect();
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), 5, "partition GUIDs are unique");
    assert!(guids.iter().all(|g| g.get_version_num() == 4));
}

#[test]
fn the_gpt_crate_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let layout = small_layout();
    let disk_guid = Uuid::from_u128(0x5EED_0000_0000_4000_8000_0000_0000_0001);
    let mut disk = Disk::create(&path, layout.total_bytes).unwrap();
    let written = write_partition_table(&mut disk, &layout, Some(disk_guid)).unwrap();
    drop(disk);

    let other = gpt::GptConfig::new()
        .only_valid_headers(true)
        .open(&path)
        .expect("both GPT headers valid for the gpt crate");
    assert_eq!(*other.guid(), disk_guid);
    let primary = other.primary_header().unwrap();
    let backup = other.backup_header().unwrap();
    let last_lba = layout.total_bytes / 512 - 1;
    assert_eq!((primary.current_lba, primary.backup_lba), (1, last_lba));
    assert_eq!(
        (backup.current_lba, backup.part_start),
        (last_lba, last_lba - 32)
    );
    assert_eq!(
        (primary.first_usable, primary.last_usable),
        (34, last_lba - 33)
    );
    let theirs: Vec<_> = other
        .partitions()
        .iter()
        .map(|(n, p)| {
            (
                *n,
                p.name.clone(),
                p.part_type_guid.guid,
                p.part_guid,
                p.first_lba,
                p.last_lba,
            )
        })
        .collect();
    let ours: Vec<_> = written
        .iter()
        .map(|p| {
            (
                p.number,
                p.name.clone(),
                p.type_guid,
                p.part_guid,
                p.first_lba,
                p.last_lba,
            )
        })
        .collect();
    assert_eq!(theirs, ours);
}

#[test]
fn sfdisk_agrees_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = image_with_table(dir.path(), &small_layout());
    let Some((json, stderr)) = sfdisk_json(&path) else {
        return;
    };
    assert_eq!(stderr, "", "sfdisk has no complaints");
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["firstlba"], 34);
    let parts = table["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), written.len());
    for (theirs, ours) in parts.iter().zip(&written) {
        assert_eq!(theirs["name"], ours.name.as_str());
        assert_eq!(theirs["start"], ours.first_lba);
        assert_eq!(theirs["size"], ours.last_lba - ours.first_lba + 1);
        let ty = theirs["type"].as_str().unwrap().to_lowercase();
        assert_eq!(ty, ours.type_guid.to_string());
        let uuid = theirs["uuid"].as_str().unwrap().to_lowercase();
        assert_eq!(uuid, ours.part_guid.to_string());
    }
}

fn corrupt(path: &std::path::Path, offset: u64) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[0x5A]).unwrap();
}

#[test]
fn a_damaged_primary_falls_back_to_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (path, written) = image_with_table(dir.path(), &small_layout());
    corrupt(&path, 512 + 40); // primary header: first_usable
    assert_eq!(read_partition_table(&path).unwrap(), written);

    let (path, written) = image_with_table(dir.path(), &small_layout());
    corrupt(&path, 2 * 512 + 56); // primary entry array: name of partition 1
    assert_eq!(read_partition_table(&path).unwrap(), written);
}

#[test]
fn no_gpt_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blank.img");
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let err = read_partition_table(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("reading GPT from {}: no GPT header found", path.display())
    );

    let (path, _) = image_with_table(dir.path(), &small_layout());
    let last = std::fs::metadata(&path).unwrap().len() - 512;
    corrupt(&path, 512 + 40);
    corrupt(&path, last + 40);
    let err = read_partition_table(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "reading GPT from {}: no valid GPT header found (primary header: header CRC mismatch; \
             backup header: header CRC mismatch)",
            path.display()
        )
    );
}

#[test]
fn a_layout_larger_than_the_disk_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.img");
    let layout = Layout::compute(&PartitionSizes::default());
    let mut disk = Disk::create(&path, 64 * MIB).unwrap();
    let err = write_partition_table(&mut disk, &layout, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "writing GPT to {}: the layout needs 1740636160 bytes but the disk has only 67108864",
            path.display()
        )
    );
}
