//! ext4 superblocks of real filesystems, when e2fsprogs is installed.

mod common;

use std::process::Command;

use common::{MIB, find_tool, image_with_table, small_layout};
use diskimage::{
    Disk, find_partition, read_ext4_info, read_ext4_superblock, write_partition_image,
};
use uuid::Uuid;

#[test]
fn mkfs_ext4_output_is_read_back_from_a_partition() {
    let Some(mkfs) = find_tool("mkfs.ext4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fs_image = dir.path().join("rootA.ext4");
    std::fs::File::create(&fs_image)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    let uuid = Uuid::from_u128(0x6BA7_B810_9DAD_41D1_80B4_00C0_4FD4_30C8);
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-b", "4096", "-L", "resin-rootA", "-U"])
        .arg(uuid.to_string())
        .arg(&fs_image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let info = read_ext4_superblock(&mut std::fs::File::open(&fs_image).unwrap()).unwrap();
    assert_eq!(info.uuid, uuid);
    assert_eq!(info.label, "resin-rootA");
    assert_eq!(info.block_size, 4096);
    assert_eq!(info.size_bytes(), 4 * MIB);

    let (image, parts) = image_with_table(dir.path(), &small_layout());
    let root_a = find_partition(&parts, "resin-rootA", &image)
        .unwrap()
        .clone();
    let mut disk = Disk::open_rw(&image).unwrap();
    write_partition_image(&mut disk, &root_a, &fs_image).unwrap();
    drop(disk);
    assert_eq!(read_ext4_info(&image, "resin-rootA").unwrap(), info);

    let err = read_ext4_info(&image, "resin-rootB").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "reading ext4 superblock of resin-rootB in {}: no ext2/3/4 magic (found 0x0000)",
            image.display()
        )
    );
}
