//! config.json injection into a built image.

mod common;

use common::{image_with_table, sha256, small_layout};
use diskimage::{Disk, FatFs, format_boot_fs, inject_config, read_config, read_file};

/// An image with a formatted boot partition holding config.json and one more file.
fn boot_image(dir: &std::path::Path) -> std::path::PathBuf {
    let (path, parts) = image_with_table(dir, &small_layout());
    let mut disk = Disk::open_rw(&path).unwrap();
    format_boot_fs(disk.partition(&parts[0]), 0xBDEF_0000).unwrap();
    let fs = FatFs::open(disk.partition(&parts[0]), "resin-boot").unwrap();
    fs.write_file("config.json", br#"{"deviceType":"qemux86-64","persistentLogging":false,"hostname":"a-much-longer-name-than-later"}"#)
        .unwrap();
    fs.write_file("os-release", b"ID=balena-os\n").unwrap();
    fs.close().unwrap();
    path
}

#[test]
fn injected_config_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_image(dir.path());
    let a = br#"{"deviceType":"qemux86-64","hostname":"a"}"#;
    inject_config(&path, a).unwrap();
    assert_eq!(read_config(&path).unwrap(), a);
    let b = b"{\n  \"deviceType\": \"qemux86-64\",\n  \"developmentMode\": true\n}\n";
    inject_config(&path, b).unwrap();
    assert_eq!(read_config(&path).unwrap(), b);
    assert_eq!(
        read_file(&path, "resin-boot", "os-release").unwrap(),
        b"ID=balena-os\n"
    );
}

#[test]
fn invalid_json_leaves_the_image_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_image(dir.path());
    let before = sha256(&path);
    let shown = path.display();

    let err = inject_config(&path, br#"{"a": }"#).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config.json for {shown} is not valid JSON: expected value at line 1 column 7")
    );
    let err = inject_config(&path, b"[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("config.json for {shown} must be a JSON object, not an array")
    );
    let err = inject_config(&path, b"").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "config.json for {shown} is not valid JSON: EOF while parsing a value at line 1 column 0"
        )
    );
    assert_eq!(sha256(&path), before);
}

#[test]
fn images_without_a_boot_partition_or_gpt_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = boot_image(dir.path());
    let err = read_file(&path, "flash-boot", "config.json").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("partition flash-boot not found in {}", path.display())
    );

    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let err = inject_config(&blank, b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("reading GPT from {}: no GPT header found", blank.display())
    );

    let missing = dir.path().join("missing.img");
    let err = inject_config(&missing, b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("opening {} for writing", missing.display())
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.starts_with("No such file or directory"), "{cause}");
}
