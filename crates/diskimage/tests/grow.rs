//! First-boot growth of resin-data on a disk larger than the image.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

use common::{MIB, image_with_table, sfdisk_json, small_layout};
use diskimage::gpt::MIN_GROWTH_BYTES;
use diskimage::{Disk, GrowOutcome, grow_disk, grow_last_partition, read_partition_table};

fn set_len(path: &std::path::Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn block_at(path: &std::path::Path, offset: u64) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut block = vec![0u8; 512];
    f.read_exact(&mut block).unwrap();
    block
}

#[test]
fn data_grows_to_the_last_4mib_boundary_and_the_backup_moves_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let layout = small_layout();
    let (path, before) = image_with_table(dir.path(), &layout);
    // Grow the "disk" by 100 MiB and three odd sectors.
    let new_len = layout.total_bytes + 100 * MIB + 3 * 512;
    set_len(&path, new_len);

    let outcome = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap();
    let grown = outcome.grown.clone().expect("resin-data grew");
    assert!(outcome.headers_fixed);
    assert_eq!(grown.name, "resin-data");
    assert_eq!(grown.first_lba, before[4].first_lba);
    // Last usable LBA is new_len/512 - 34; the end is rounded down to 4 MiB.
    let end = (grown.last_lba + 1) * 512;
    assert_eq!(end % (4 * MIB), 0);
    assert_eq!(end, layout.total_bytes - 4 * MIB + 100 * MIB);
    assert_eq!(grown.size_bytes, 116 * MIB);

    let after = read_partition_table(&path).unwrap();
    assert_eq!(after[..4], before[..4], "other partitions untouched");
    assert_eq!(after[4], grown);

    // The backup is valid at the new end, and the old one is gone.
    let other = gpt::GptConfig::new()
        .only_valid_headers(true)
        .open(&path)
        .unwrap();
    assert_eq!(
        other.backup_header().unwrap().current_lba,
        new_len / 512 - 1
    );
    assert_eq!(other.partitions()[&5].last_lba, grown.last_lba);
    assert!(
        block_at(&path, layout.total_bytes - 512)
            .iter()
            .all(|&b| b == 0)
    );
    if let Some((json, stderr)) = sfdisk_json(&path) {
        assert_eq!(stderr, "");
        assert_eq!(json["partitiontable"]["lastlba"], new_len / 512 - 34);
        assert_eq!(
            json["partitiontable"]["partitions"][4]["size"],
            116 * MIB / 512
        );
    }

    // Idempotent: a second run changes nothing.
    let digest = std::fs::read(&path).unwrap();
    let again = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap();
    assert_eq!(
        again,
        GrowOutcome {
            headers_fixed: false,
            grown: None
        }
    );
    assert!(std::fs::read(&path).unwrap() == digest, "image unchanged");
}

#[test]
fn a_fresh_image_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = image_with_table(dir.path(), &small_layout());
    let digest = std::fs::read(&path).unwrap();
    let outcome = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap();
    assert_eq!(outcome.grown, None);
    assert!(!outcome.headers_fixed);
    assert!(std::fs::read(&path).unwrap() == digest, "image unchanged");
}

#[test]
fn small_growth_only_fixes_the_backup_header() {
    let dir = tempfile::tempdir().unwrap();
    let layout = small_layout();
    let (path, before) = image_with_table(dir.path(), &layout);
    set_len(&path, layout.total_bytes + MIN_GROWTH_BYTES - 4 * MIB);

    let outcome = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap();
    assert!(outcome.headers_fixed);
    assert_eq!(outcome.grown, None);
    assert_eq!(read_partition_table(&path).unwrap(), before);
    gpt::GptConfig::new()
        .only_valid_headers(true)
        .open(&path)
        .expect("backup header at the new end");
}

#[test]
fn a_damaged_primary_is_repaired_from_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (path, before) = image_with_table(dir.path(), &small_layout());
    let mut f = OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(512)).unwrap();
    f.write_all(b"EFI PARX").unwrap();
    drop(f);

    let outcome = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap();
    assert!(outcome.headers_fixed);
    assert_eq!(outcome.grown, None);
    assert_eq!(&block_at(&path, 512)[..8], b"EFI PART");
    assert_eq!(read_partition_table(&path).unwrap(), before);
}

#[test]
fn missing_data_partition_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = small_layout();
    layout.partitions.pop();
    let (path, _) = image_with_table(dir.path(), &layout);
    let err = grow_disk(&mut Disk::open_rw(&path).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("partition resin-data not found in {}", path.display())
    );
}

#[test]
fn the_file_and_size_form_reports_the_grown_partition() {
    let dir = tempfile::tempdir().unwrap();
    let layout = small_layout();
    let (path, _) = image_with_table(dir.path(), &layout);
    let size = layout.total_bytes + 64 * MIB;
    set_len(&path, size);
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();

    let grown = grow_last_partition(&mut dev, size).unwrap().expect("grown");
    assert_eq!(grown.size_bytes, 16 * MIB + 64 * MIB);
    assert_eq!(grow_last_partition(&mut dev, size).unwrap(), None);

    let mut layout = layout;
    layout.partitions.pop();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (path, _) = image_with_table(&other, &layout);
    let mut dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let err = grow_last_partition(&mut dev, layout.total_bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "partition resin-data not found in {}",
            path.canonicalize().unwrap().display()
        )
    );
}
