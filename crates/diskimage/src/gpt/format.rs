//! GPT on-disk structures (UEFI spec §5.3): header and partition entries.
//! Pure encode/decode; I/O lives in the parent module.

use std::fmt;

use uuid::Uuid;

use crate::crc32::crc32;

pub(crate) const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
const HEADER_SIZE: u32 = 92;
/// Entry size and count written by us (and by every common tool).
pub(crate) const ENTRY_SIZE: u32 = 128;
pub(crate) const ENTRY_COUNT: u32 = 128;
/// Refuse entry arrays larger than this when reading (the usual one is 16 KiB).
const MAX_ENTRY_ARRAY_BYTES: u64 = 1024 * 1024;
/// UTF-16 code units in a partition name.
pub(crate) const NAME_UNITS: usize = 36;

/// Why a block is not a usable GPT header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    NoSignature,
    BadHeaderSize(u32),
    HeaderCrc,
    BadEntryArray { count: u32, size: u32 },
    WrongLocation { expected: u64, found: u64 },
    EntriesCrc,
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::NoSignature => write!(f, "no GPT signature"),
            HeaderProblem::BadHeaderSize(n) => write!(f, "unsupported header size {n}"),
            HeaderProblem::HeaderCrc => write!(f, "header CRC mismatch"),
            HeaderProblem::BadEntryArray { count, size } => {
                write!(
                    f,
                    "unsupported partition entry array ({count} entries of {size} bytes)"
                )
            }
            HeaderProblem::WrongLocation { expected, found } => {
                write!(f, "header says it is at LBA {found}, not {expected}")
            }
            HeaderProblem::EntriesCrc => write!(f, "partition entry array CRC mismatch"),
        }
    }
}

/// A GPT header, primary or backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub current_lba: u64,
    pub backup_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub disk_guid: Uuid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc: u32,
}

impl Header {
    /// Bytes in the partition entry array.
    pub fn entries_bytes(&self) -> u64 {
        u64::from(self.entry_count) * u64::from(self.entry_size)
    }

    /// Encode into one block of `block_size` bytes, computing the header CRC.
    pub fn encode(&self, block_size: usize) -> Vec<u8> {
        let mut b = vec![0u8; block_size];
        b[0..8].copy_from_slice(SIGNATURE);
        put_u32(&mut b, 8, REVISION_1_0);
        put_u32(&mut b, 12, HEADER_SIZE);
        put_u64(&mut b, 24, self.current_lba);
        put_u64(&mut b, 32, self.backup_lba);
        put_u64(&mut b, 40, self.first_usable);
        put_u64(&mut b, 48, self.last_usable);
        b[56..72].copy_from_slice(&self.disk_guid.to_bytes_le());
        put_u64(&mut b, 72, self.entries_lba);
        put_u32(&mut b, 80, self.entry_count);
        put_u32(&mut b, 84, self.entry_size);
        put_u32(&mut b, 88, self.entries_crc);
        let crc = crc32(&b[..HEADER_SIZE as usize]);
        put_u32(&mut b, 16, crc);
        b
    }

    /// Decode and check a header block read from `lba`.
    pub fn decode(block: &[u8], lba: u64) -> Result<Header, HeaderProblem> {
        if block.len() < HEADER_SIZE as usize || &block[0..8] != SIGNATURE {
            return Err(HeaderProblem::NoSignature);
        }
        let size = get_u32(block, 12);
        if size < HEADER_SIZE || size as usize > block.len() {
            return Err(HeaderProblem::BadHeaderSize(size));
        }
        let mut covered = block[..size as usize].to_vec();
        covered[16..20].fill(0);
        if crc32(&covered) != get_u32(block, 16) {
            return Err(HeaderProblem::HeaderCrc);
        }
        let header = Header {
            current_lba: get_u64(block, 24),
            backup_lba: get_u64(block, 32),
            first_usable: get_u64(block, 40),
            last_usable: get_u64(block, 48),
            disk_guid: Uuid::from_bytes_le(block[56..72].try_into().expect("16 bytes")),
            entries_lba: get_u64(block, 72),
            entry_count: get_u32(block, 80),
            entry_size: get_u32(block, 84),
            entries_crc: get_u32(block, 88),
        };
        let entry_ok = header.entry_size >= ENTRY_SIZE && header.entry_size % 8 == 0;
        if !entry_ok || header.entries_bytes() > MAX_ENTRY_ARRAY_BYTES {
            return Err(HeaderProblem::BadEntryArray {
                count: header.entry_count,
                size: header.entry_size,
            });
        }
        if header.current_lba != lba {
            return Err(HeaderProblem::WrongLocation {
                expected: lba,
                found: header.current_lba,
            });
        }
        Ok(header)
    }

    /// Check the partition entry array this header describes.
    pub fn check_entries(&self, entries: &[u8]) -> Result<(), HeaderProblem> {
        if crc32(entries) == self.entries_crc {
            Ok(())
        } else {
            Err(HeaderProblem::EntriesCrc)
        }
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub type_guid: Uuid,
    pub part_guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

impl Entry {
    /// Encode into `slot` (one entry, at least 128 bytes, zeroed by the caller).
    pub fn encode(&self, slot: &mut [u8]) {
        slot[0..16].copy_from_slice(&self.type_guid.to_bytes_le());
        slot[16..32].copy_from_slice(&self.part_guid.to_bytes_le());
        put_u64(slot, 32, self.first_lba);
        put_u64(slot, 40, self.last_lba);
        put_u64(slot, 48, self.attributes);
        for (i, unit) in self.name.encode_utf16().take(NAME_UNITS).enumerate() {
            slot[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
    }

    /// Decode one entry slot; `None` for an unused slot (nil type GUID).
    pub fn decode(slot: &[u8]) -> Option<Entry> {
        let type_guid = Uuid::from_bytes_le(slot[0..16].try_into().expect("16 bytes"));
        if type_guid.is_nil() {
            return None;
        }
        let units: Vec<u16> = slot[56..56 + 2 * NAME_UNITS]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(Entry {
            type_guid,
            part_guid: Uuid::from_bytes_le(slot[16..32].try_into().expect("16 bytes")),
            first_lba: get_u64(slot, 32),
            last_lba: get_u64(slot, 40),
            attributes: get_u64(slot, 48),
            name: String::from_utf16_lossy(&units),
        })
    }
}

/// Set the last LBA of the entry in `slot` (used when growing a partition in place).
pub(crate) fn set_entry_last_lba(slot: &mut [u8], last_lba: u64) {
    put_u64(slot, 40, last_lba);
}

/// A protective MBR partition record covering the whole disk (UEFI spec §5.2.3),
/// applied to an existing first sector so any boot code is kept.
pub(crate) fn protect(mbr: &mut [u8; 512], total_blocks: u64) {
    let size = u32::try_from(total_blocks - 1).unwrap_or(u32::MAX);
    mbr[446..510].fill(0);
    mbr[446..462].copy_from_slice(&[
        0x00, 0x00, 0x02, 0x00, 0xEE, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 0, 0, 0, 0,
    ]);
    mbr[458..462].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            current_lba: 1,
            backup_lba: 99,
            first_usable: 34,
            last_usable: 66,
            disk_guid: Uuid::from_u128(0x0102_0304_0506_0708_090A_0B0C_0D0E_0F10),
            entries_lba: 2,
            entry_count: ENTRY_COUNT,
            entry_size: ENTRY_SIZE,
            entries_crc: 0xDEAD_BEEF,
        }
    }

    #[test]
    fn header_round_trips_and_guid_is_mixed_endian() {
        let block = header().encode(512);
        assert_eq!(&block[56..60], &[4, 3, 2, 1]);
        assert_eq!(Header::decode(&block, 1), Ok(header()));
        assert_eq!(
            Header::decode(&block, 99),
            Err(HeaderProblem::WrongLocation {
                expected: 99,
                found: 1
            })
        );
    }

    #[test]
    fn corrupt_headers_are_refused() {
        let mut block = header().encode(512);
        block[40] ^= 1;
        assert_eq!(Header::decode(&block, 1), Err(HeaderProblem::HeaderCrc));
        assert_eq!(
            Header::decode(&[0u8; 512], 1),
            Err(HeaderProblem::NoSignature)
        );
        let mut odd = header();
        odd.entry_size = 100;
        assert!(matches!(
            Header::decode(&odd.encode(512), 1),
            Err(HeaderProblem::BadEntryArray { .. })
        ));
    }

    #[test]
    fn entry_round_trips() {
        let entry = Entry {
            type_guid: crate::layout::ESP_TYPE,
            part_guid: Uuid::from_u128(7),
            first_lba: 8192,
            last_lba: 16383,
            attributes: 0,
            name: "resin-boot".into(),
        };
        let mut slot = [0u8; 128];
        entry.encode(&mut slot);
        // Type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B on disk.
        assert_eq!(
            &slot[..8],
            &[0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11]
        );
        assert_eq!(Entry::decode(&slot), Some(entry));
        assert_eq!(Entry::decode(&[0u8; 128]), None);
    }

    #[test]
    fn protective_mbr_caps_at_32_bits() {
        let mut mbr = [0u8; 512];
        mbr[0] = 0xEB;
        protect(&mut mbr, 1 << 40);
        assert_eq!(mbr[0], 0xEB, "boot code kept");
        assert_eq!(mbr[450], 0xEE);
        assert_eq!(&mbr[454..458], &[1, 0, 0, 0]);
        assert_eq!(&mbr[458..462], &[0xFF; 4]);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    }
}
