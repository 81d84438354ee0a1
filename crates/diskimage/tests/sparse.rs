//! Sparse copies keep the holes of the output image.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{MIB, image_with_table, small_layout};
use diskimage::{Disk, copy_sparse, find_partition, is_zero, write_partition_image};

/// 8 MiB + 100 bytes of explicit zeros with data in three places.
fn mostly_zero() -> Vec<u8> {
    let mut data = vec![0u8; 8 * MIB as usize + 100];
    data[..10].copy_from_slice(b"superblock");
    data[3 * MIB as usize + 5000..3 * MIB as usize + 5004].copy_from_slice(b"data");
    let len = data.len();
    data[len - 3..].copy_from_slice(b"end");
    data
}

#[test]
fn zero_blocks_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src_path = dir.path().join("src.img");
    let src = mostly_zero();
    fs::write(&src_path, &src).unwrap();

    let dst_path = dir.path().join("dst.img");
    let mut dst = Disk::create(&dst_path, 4 * MIB).unwrap();
    let offset = 4 * MIB;
    let written = copy_sparse(
        &mut fs::File::open(&src_path).unwrap(),
        &mut dst,
        offset,
        src.len() as u64,
    )
    .unwrap();
    drop(dst);
    // Three 4 KiB blocks hold data; the last one is the 100-byte tail's block.
    assert_eq!(written, 2 * 4096 + 100);

    let out = fs::read(&dst_path).unwrap();
    assert_eq!(
        out.len() as u64,
        offset + src.len() as u64,
        "extended to fit"
    );
    assert!(out[..offset as usize].iter().all(|&b| b == 0));
    assert!(out[offset as usize..] == src[..]);
    let allocated = fs::metadata(&dst_path).unwrap().blocks() * 512;
    assert!(
        allocated <= 64 * 1024,
        "only the data blocks are allocated: {allocated} bytes"
    );
}

#[test]
fn partition_images_must_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (image, parts) = image_with_table(dir.path(), &small_layout());
    let state = find_partition(&parts, "resin-state", &image)
        .unwrap()
        .clone();
    let src_path = dir.path().join("state.ext4");
    fs::write(&src_path, mostly_zero()).unwrap();
    let mut disk = Disk::open_rw(&image).unwrap();
    let err = write_partition_image(&mut disk, &state, &src_path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "writing {} into partition resin-state of {}: the image is 8388708 bytes but the partition holds only 4194304",
            src_path.display(),
            image.display()
        )
    );
}

#[test]
fn is_zero_sees_one_set_byte_wherever_it_is() {
    assert!(is_zero(&[]));
    // Lengths around the 16-byte words: shorter than one, whole words, words and a tail.
    for len in [1, 15, 16, 17, 31, 32, 33, 4096, 4096 + 7] {
        let mut bytes = vec![0u8; len];
        assert!(is_zero(&bytes), "{len} zero bytes");
        for at in 0..len {
            for bit in [0x01, 0x80] {
                bytes[at] = bit;
                assert!(!is_zero(&bytes), "byte {at} of {len} set to {bit:#x}");
                bytes[at] = 0;
            }
        }
    }
}
