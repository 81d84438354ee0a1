//! The few ext4 superblock fields the image tools and the boot stage need.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use uuid::Uuid;

use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::gpt::{find_partition, read_partition_table_from};

const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;

/// Identity and size of an ext2/3/4 filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Info {
    /// `s_uuid`, what `root=UUID=` and `/dev/disk/by-uuid` use.
    pub uuid: Uuid,
    /// `s_volume_name`, up to 16 bytes.
    pub label: String,
    pub block_count: u64,
    pub block_size: u32,
}

impl Ext4Info {
    /// Filesystem size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.block_count * u64::from(self.block_size)
    }
}

/// Parse the superblock of the filesystem that starts at offset 0 of `reader`
/// (a partition [`Slice`](crate::Slice), a partition device or an image file).
pub fn read_ext4_superblock<R: Read + Seek>(reader: &mut R) -> Result<Ext4Info> {
    read_named(reader, String::new())
}

/// The ext4 identity of the partition labelled `label` in `image`.
pub fn read_ext4_info(image: &Path, label: &str) -> Result<Ext4Info> {
    let mut disk = Disk::open(image)?;
    let parts = read_partition_table_from(&mut disk)?;
    let part = find_partition(&parts, label, image)?.clone();
    read_named(
        &mut disk.partition(&part),
        format!(" of {label} in {}", image.display()),
    )
}

fn read_named<R: Read + Seek>(reader: &mut R, of: String) -> Result<Ext4Info> {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    match reader
        .seek(SeekFrom::Start(SUPERBLOCK_OFFSET))
        .and_then(|_| reader.read_exact(&mut sb))
    {
        Ok(()) => parse_superblock(&sb).map_err(|reason| Error::Ext4 { of, reason }),
        Err(e) => Err(e).ctx(|| format!("reading ext4 superblock{of}")),
    }
}

/// Parse a 1024-byte superblock.
fn parse_superblock(sb: &[u8; SUPERBLOCK_SIZE]) -> std::result::Result<Ext4Info, String> {
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != MAGIC {
        return Err(format!("no ext2/3/4 magic (found {magic:#06x})"));
    }
    let log_block_size = u32_at(0x18);
    if log_block_size > 6 {
        return Err(format!("implausible block size 2^(10+{log_block_size})"));
    }
    let mut block_count = u64::from(u32_at(0x04));
    if u32_at(0x60) & INCOMPAT_64BIT != 0 {
        block_count |= u64::from(u32_at(0x150)) << 32;
    }
    let name = &sb[0x78..0x88];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Ok(Ext4Info {
        uuid: Uuid::from_bytes(sb[0x68..0x78].try_into().expect("16 bytes")),
        label: String::from_utf8_lossy(name).into_owned(),
        block_count,
        block_size: 1024 << log_block_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built superblock, so the parser is tested without e2fsprogs.
    fn fixture(uuid: Uuid, label: &str, blocks: u64, log_block_size: u32) -> Vec<u8> {
        let mut image = vec![0u8; 4096];
        let sb = &mut image[1024..2048];
        sb[0x04..0x08].copy_from_slice(&(blocks as u32).to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&log_block_size.to_le_bytes());
        sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
        if blocks >> 32 != 0 {
            sb[0x60..0x64].copy_from_slice(&INCOMPAT_64BIT.to_le_bytes());
            sb[0x150..0x154].copy_from_slice(&((blocks >> 32) as u32).to_le_bytes());
        }
        sb[0x68..0x78].copy_from_slice(uuid.as_bytes());
        sb[0x78..0x78 + label.len()].copy_from_slice(label.as_bytes());
        image
    }

    #[test]
    fn parses_a_hand_built_superblock() {
        let uuid = Uuid::from_u128(0x1234_5678_9ABC_DEF0_1122_3344_5566_7788);
        let image = fixture(uuid, "resin-rootA", 163_840, 2);
        let info = read_ext4_superblock(&mut std::io::Cursor::new(image)).unwrap();
        assert_eq!(
            info,
            Ext4Info {
                uuid,
                label: "resin-rootA".into(),
                block_count: 163_840,
                block_size: 4096,
            }
        );
        assert_eq!(info.size_bytes(), 640 * 1024 * 1024);
    }

    #[test]
    fn sixteen_byte_labels_and_64bit_counts() {
        let image = fixture(Uuid::nil(), "sixteen-chars-ab", (5 << 32) + 7, 0);
        let info = read_ext4_superblock(&mut std::io::Cursor::new(image)).unwrap();
        assert_eq!(info.label, "sixteen-chars-ab");
        assert_eq!(info.block_count, (5 << 32) + 7);
        assert_eq!(info.block_size, 1024);
    }

    #[test]
    fn non_ext4_is_an_error() {
        let err = read_ext4_superblock(&mut std::io::Cursor::new(vec![0u8; 4096])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading ext4 superblock: no ext2/3/4 magic (found 0x0000)"
        );
    }
}
