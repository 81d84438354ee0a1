//! The FAT volume serial number, read and set directly in the boot sector.
//!
//! balenaOS gives the boot filesystem a fresh serial on first boot (its
//! "UUID" as blkid shows it, `XXXX-XXXX`). The serial lives in the extended
//! BPB: offset 0x27 on FAT12/16, 0x43 on FAT32, where the backup boot sector
//! (usually sector 6) carries a copy that must match.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::error::{Error, IoContext, Result};

const EXTENDED_BOOT_SIGNATURE: u8 = 0x29;

/// Where the serial is, as found in a boot sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bpb {
    /// Offset of the 4-byte serial.
    serial_offset: usize,
    /// Byte offset of the FAT32 backup boot sector, if there is one.
    backup_offset: Option<u64>,
}

fn parse(sector: &[u8; 512]) -> std::result::Result<Bpb, String> {
    if sector[510..] != [0x55, 0xAA] {
        return Err("no boot sector signature".into());
    }
    let bytes_per_sector = u16::from_le_bytes([sector[0x0B], sector[0x0C]]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return Err(format!("implausible sector size {bytes_per_sector}"));
    }
    // A FAT32 BPB has a zero 16-bit FAT size (Microsoft FAT spec §3.2).
    let fat32 = u16::from_le_bytes([sector[0x16], sector[0x17]]) == 0;
    let (signature_offset, serial_offset) = if fat32 { (0x42, 0x43) } else { (0x26, 0x27) };
    if sector[signature_offset] != EXTENDED_BOOT_SIGNATURE {
        return Err("no extended boot signature, so no volume serial".into());
    }
    let backup_offset = fat32
        .then(|| {
            let reserved = u16::from_le_bytes([sector[0x0E], sector[0x0F]]);
            let backup = u16::from_le_bytes([sector[0x32], sector[0x33]]);
            (backup != 0 && backup < reserved)
                .then_some(u64::from(backup) * u64::from(bytes_per_sector))
        })
        .flatten();
    Ok(Bpb {
        serial_offset,
        backup_offset,
    })
}

fn read_sector<R: Read + Seek>(region: &mut R, offset: u64) -> std::io::Result<[u8; 512]> {
    let mut sector = [0u8; 512];
    region.seek(SeekFrom::Start(offset))?;
    region.read_exact(&mut sector)?;
    Ok(sector)
}

/// The volume serial of the FAT filesystem at the start of `region`.
pub fn fat_volume_id<R: Read + Seek>(region: &mut R) -> Result<u32> {
    let action = || "reading the FAT volume serial".to_string();
    let sector = read_sector(region, 0).ctx(action)?;
    let bpb = parse(&sector).map_err(|reason| Error::Fat {
        action: action(),
        reason,
    })?;
    let at = bpb.serial_offset;
    Ok(u32::from_le_bytes(
        sector[at..at + 4].try_into().expect("4 bytes"),
    ))
}

/// Set the volume serial of the FAT filesystem at the start of `region`
/// (and of its FAT32 backup boot sector). The filesystem must not be open.
pub fn set_fat_volume_id<S: Read + Write + Seek>(region: &mut S, id: u32) -> Result<()> {
    let action = || format!("setting the FAT volume serial to {}", fat_uuid_string(id));
    let sector = read_sector(region, 0).ctx(action)?;
    let bpb = parse(&sector).map_err(|reason| Error::Fat {
        action: action(),
        reason,
    })?;
    let serial = id.to_le_bytes();
    (|| {
        if let Some(backup) = bpb.backup_offset {
            region.seek(SeekFrom::Start(backup + bpb.serial_offset as u64))?;
            region.write_all(&serial)?;
        }
        region.seek(SeekFrom::Start(bpb.serial_offset as u64))?;
        region.write_all(&serial)?;
        region.flush()
    })()
    .ctx(action)
}

/// The serial as blkid and `/dev/disk/by-uuid` spell it: `ABCD-1234`.
pub fn fat_uuid_string(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_string_matches_blkid() {
        assert_eq!(fat_uuid_string(0xBDEF_0012), "BDEF-0012");
    }

    #[test]
    fn garbage_is_refused() {
        let mut zeros = std::io::Cursor::new(vec![0u8; 4096]);
        let err = fat_volume_id(&mut zeros).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reading the FAT volume serial: no boot sector signature"
        );
    }
}
