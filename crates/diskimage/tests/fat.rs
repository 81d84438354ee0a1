//! The boot filesystem: format, fill from a host tree, read back, serials.

mod common;

use std::fs;

use common::{MIB, find_tool, image_with_table};
use diskimage::fat::fat_uuid_string;
use diskimage::{
    Disk, FatFormat, FatFs, Layout, PartitionSizes, fat_volume_id, find_partition, format_boot_fs,
    format_fat, list_files, read_file, set_fat_volume_id,
};

/// A host tree shaped like a balenaOS boot partition.
fn host_tree(root: &std::path::Path) {
    fs::create_dir_all(root.join("system-connections")).unwrap();
    fs::create_dir_all(root.join("splash")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("config.json"), br#"{"deviceType":"qemux86-64"}"#).unwrap();
    fs::write(root.join("balena-image"), b"DO NOT REMOVE THIS FILE").unwrap();
    fs::write(root.join("system-connections/README.ignore"), b"readme").unwrap();
    fs::write(root.join("zero-length"), b"").unwrap();
    let logo: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("splash/balena-logo.png"), logo).unwrap();
}

#[test]
fn format_fill_and_read_back_through_the_gpt() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("boot");
    host_tree(&tree);
    let (path, parts) = image_with_table(dir.path(), &common::small_layout());
    let boot = find_partition(&parts, "resin-boot", &path).unwrap().clone();

    let mut disk = Disk::open_rw(&path).unwrap();
    format_boot_fs(disk.partition(&boot), 0xBDEF_0001).unwrap();
    let fs = FatFs::open(disk.partition(&boot), "resin-boot").unwrap();
    fs.write_tree(&tree).unwrap();
    let efi: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
    fs.write_file("EFI/BOOT/BOOTX64.EFI", &efi).unwrap();
    assert_eq!(fs.label(), "resin-boot");
    assert_eq!(fs.volume_id(), 0xBDEF_0001);
    fs.close().unwrap();
    drop(disk);
    fsck_clean(&path, boot.offset_bytes, boot.size_bytes);

    assert_eq!(
        read_file(&path, "resin-boot", "EFI/BOOT/BOOTX64.EFI").unwrap(),
        efi
    );
    assert_eq!(
        read_file(&path, "resin-boot", "/splash/balena-logo.png").unwrap(),
        fs::read(tree.join("splash/balena-logo.png")).unwrap()
    );
    assert_eq!(read_file(&path, "resin-boot", "zero-length").unwrap(), b"");
    assert_eq!(
        list_files(&path, "resin-boot").unwrap(),
        [
            "EFI/",
            "EFI/BOOT/",
            "EFI/BOOT/BOOTX64.EFI",
            "balena-image",
            "config.json",
            "empty/",
            "splash/",
            "splash/balena-logo.png",
            "system-connections/",
            "system-connections/README.ignore",
            "zero-length",
        ]
    );
}

/// `fsck.fat -n` finds nothing to repair, when dosfstools is installed.
fn fsck_clean(image: &std::path::Path, offset: u64, size: u64) {
    let Some(fsck) = find_tool("fsck.fat") else {
        return;
    };
    let region = image.with_extension("fat");
    let bytes = fs::read(image).unwrap();
    fs::write(&region, &bytes[offset as usize..(offset + size) as usize]).unwrap();
    let out = std::process::Command::new(fsck)
        .arg("-n")
        .arg(&region)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fsck.fat found problems:\n{stdout}");
    assert_eq!(
        stdout.lines().count(),
        2,
        "fsck.fat is silent but for its summary:\n{stdout}"
    );
}

#[test]
fn rewriting_a_file_replaces_it_entirely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fat.img");
    let mut disk = Disk::create(&path, 8 * MIB).unwrap();
    format_boot_fs(disk.region(0, 8 * MIB), 1).unwrap();
    let fs = FatFs::open(disk.region(0, 8 * MIB), "fat.img").unwrap();
    fs.write_file("a/b/c.txt", &[b'x'; 10_000]).unwrap();
    fs.write_file("a/b/c.txt", b"short").unwrap();
    assert_eq!(fs.read_file("a/b/c.txt").unwrap(), b"short");
    let err = fs.read_file("a/missing").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reading a/missing from fat.img"),
        "{err}"
    );
    let err = fs.write_file("../escape", b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        "writing ../escape to fat.img: \"../escape\" is not a plain relative path"
    );
    fs.close().unwrap();
}

#[test]
fn the_default_boot_partition_is_fat16() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::compute(&PartitionSizes::default());
    let (path, parts) = image_with_table(dir.path(), &layout);
    let mut disk = Disk::open_rw(&path).unwrap();
    format_boot_fs(disk.partition(&parts[0]), 7).unwrap();
    let fs = FatFs::open(disk.partition(&parts[0]), "resin-boot").unwrap();
    assert_eq!(fs.fat_bits(), 16);
    fs.close().unwrap();
}

#[test]
fn volume_serial_is_set_on_fat16_and_fat32() {
    let dir = tempfile::tempdir().unwrap();
    for (fat32, size) in [(false, 16 * MIB), (true, 64 * MIB)] {
        let path = dir.path().join(format!("fat{fat32}.img"));
        let mut disk = Disk::create(&path, size).unwrap();
        let opts = FatFormat {
            label: "resin-boot".into(),
            volume_id: 0x1234_5678,
            fat32,
            bytes_per_cluster: None,
        };
        format_fat(disk.region(0, size), &opts).unwrap();
        assert_eq!(
            fat_volume_id(&mut disk.region(0, size)).unwrap(),
            0x1234_5678
        );

        set_fat_volume_id(&mut disk.region(0, size), 0xBDEF_4242).unwrap();
        assert_eq!(
            fat_volume_id(&mut disk.region(0, size)).unwrap(),
            0xBDEF_4242
        );
        let fs = FatFs::open(disk.region(0, size), "x").unwrap();
        assert_eq!(fs.volume_id(), 0xBDEF_4242);
        assert_eq!(fs.fat_bits(), if fat32 { 32 } else { 16 });
        fs.write_file("EFI/BOOT/BOOTX64.EFI", b"MZ").unwrap();
        fs.close().unwrap();
        drop(disk);
        fsck_clean(&path, 0, size);

        // Reading, even through a writable handle, changes nothing.
        let before = fs::read(&path).unwrap();
        let mut disk = Disk::open_rw(&path).unwrap();
        let fs = FatFs::open(disk.region(0, size), "x").unwrap();
        assert_eq!(fs.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(), b"MZ");
        assert_eq!(fs.list_files().unwrap().len(), 3);
        drop(fs);
        drop(disk);
        assert!(
            fs::read(&path).unwrap() == before,
            "reads leave the image as it was"
        );

        let bytes = fs::read(&path).unwrap();
        let offset = if fat32 { 0x43 } else { 0x27 };
        assert_eq!(bytes[offset..offset + 4], 0xBDEF_4242u32.to_le_bytes());
        if fat32 {
            let backup = 6 * 512 + 0x43;
            assert_eq!(bytes[backup..backup + 4], 0xBDEF_4242u32.to_le_bytes());
        }
    }
    assert_eq!(fat_uuid_string(0xBDEF_4242), "BDEF-4242");
}

#[test]
fn a_bad_label_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fat.img");
    let mut disk = Disk::create(&path, 8 * MIB).unwrap();
    let opts = FatFormat {
        label: "much-too-long-label".into(),
        volume_id: 0,
        fat32: false,
        bytes_per_cluster: None,
    };
    let err = format_fat(disk.region(0, 8 * MIB), &opts).unwrap_err();
    assert_eq!(
        err.to_string(),
        "formatting FAT filesystem much-too-long-label: a FAT label is at most 11 printable ASCII characters"
    );
    assert!(fs::read(&path).unwrap().iter().all(|&b| b == 0));
}
