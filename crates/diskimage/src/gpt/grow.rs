//! First-boot expansion: fix the backup GPT of a disk that is larger than
//! the image written to it, and grow `resin-data` into the new space
//! (balenaOS `resindataexpander`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::format::{self, HeaderProblem};
use super::{Geometry, PartitionInfo, Table, write_tables};
use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::layout::{ALIGNMENT, DATA_LABEL, MIB};

/// Grow only when at least this much is gained, as balenaOS does.
pub const MIN_GROWTH_BYTES: u64 = 10 * MIB;

/// What [`grow_last_partition`] changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrowOutcome {
    /// The GPT was rewritten to fit the disk: the backup moved to the last
    /// block (the disk had grown), or a damaged copy was repaired.
    pub headers_fixed: bool,
    /// `resin-data` as it is now, if it was grown.
    pub grown: Option<PartitionInfo>,
}

/// [`grow_disk`] for an open device of `disk_size_bytes` (e.g. from
/// `BLKGETSIZE64`). Returns `resin-data` as it is now if it was grown.
/// Errors name the device as `/proc/self/fd` knows it.
pub fn grow_last_partition(dev: &mut File, disk_size_bytes: u64) -> Result<Option<PartitionInfo>> {
    let name = std::fs::read_link(format!("/proc/self/fd/{}", dev.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("the disk"));
    let file = dev
        .try_clone()
        .ctx(|| format!("duplicating the descriptor of {}", name.display()))?;
    let mut disk = Disk::from_file(file, name);
    Ok(grow(&mut disk, disk_size_bytes)?.grown)
}

/// Move the backup GPT to the real end of the disk and extend `resin-data`,
/// which must be the last partition, up to the last 4 MiB boundary before the
/// backup table, if that gains more than [`MIN_GROWTH_BYTES`].
///
/// Nothing is written when both are already right. Writes go backup first,
/// then primary, then a sync; a stale backup header left inside the grown
/// partition is wiped last. The kernel's view of the partitions is not
/// refreshed here (`BLKRRPART` is the caller's business), nor is the
/// filesystem resized.
pub fn grow_disk(disk: &mut Disk) -> Result<GrowOutcome> {
    let size = disk.size()?;
    grow(disk, size)
}

fn grow(disk: &mut Disk, size: u64) -> Result<GrowOutcome> {
    let table = Table::read(disk, size)?;
    let bs = table.block_size;
    let fail = |reason: String| Error::Grow {
        path: disk.path().to_path_buf(),
        label: DATA_LABEL.to_string(),
        reason,
    };
    let geometry = Geometry {
        first_usable: table.header.first_usable,
        ..Geometry::new(
            table.total_blocks,
            bs,
            table.header.entry_count,
            table.header.entry_size,
        )
        .ok_or_else(|| fail("the disk is too small for its partition table".into()))?
    };

    let parts = table.partitions();
    let data = super::find_partition(&parts, DATA_LABEL, disk.path())?.clone();
    if let Some(beyond) = parts.iter().find(|p| p.last_lba > geometry.last_usable) {
        return Err(fail(format!(
            "partition {} ends at block {} but the disk's last usable block is {}",
            beyond.name, beyond.last_lba, geometry.last_usable
        )));
    }
    if let Some(after) = parts.iter().find(|p| p.last_lba > data.last_lba) {
        return Err(fail(format!(
            "it is not the last partition ({} comes after it)",
            after.name
        )));
    }

    let align = (ALIGNMENT / bs).max(1);
    let new_last = ((geometry.last_usable + 1) / align * align).saturating_sub(1);
    let grows = new_last > data.last_lba && (new_last - data.last_lba) * bs > MIN_GROWTH_BYTES;
    let headers_right = table.primary_ok
        && table.backup_at_end
        && table.header.last_usable == geometry.last_usable
        && table.header.first_usable == geometry.first_usable;
    if !grows && headers_right {
        return Ok(GrowOutcome {
            headers_fixed: false,
            grown: None,
        });
    }

    let mut entries = table.entries.clone();
    if grows {
        let size = table.header.entry_size as usize;
        let slot = (data.number - 1) as usize * size;
        format::set_entry_last_lba(&mut entries[slot..slot + size], new_last);
    }
    write_tables(disk, &geometry, table.header.disk_guid, &entries)?;
    disk.sync()?;

    // The old backup header, if it was elsewhere, now lies in free space or in
    // the grown partition beyond its filesystem. Wipe it so no tool mistakes it
    // for a table.
    let old_backup = if table.header.current_lba == 1 {
        table.header.backup_lba
    } else {
        table.header.current_lba
    };
    if old_backup != geometry.backup_lba()
        && old_backup > data.last_lba
        && old_backup < table.total_blocks
    {
        wipe_stale_header(disk, bs, old_backup)?;
    }

    let grown = grows.then(|| PartitionInfo {
        last_lba: new_last,
        size_bytes: (new_last + 1 - data.first_lba) * bs,
        ..data
    });
    Ok(GrowOutcome {
        headers_fixed: !headers_right,
        grown,
    })
}

/// Zero the block at `lba` if it holds a GPT header signature.
fn wipe_stale_header(disk: &mut Disk, bs: u64, lba: u64) -> Result<()> {
    let path = disk.path().to_path_buf();
    let file = disk.file();
    let mut block = vec![0u8; bs as usize];
    (|| {
        file.seek(SeekFrom::Start(lba * bs))?;
        file.read_exact(&mut block)?;
        if format::Header::decode(&block, lba) == Err(HeaderProblem::NoSignature) {
            return Ok(());
        }
        block.fill(0);
        file.seek(SeekFrom::Start(lba * bs))?;
        file.write_all(&block)?;
        file.sync_all()
    })()
    .ctx(|| format!("wiping the old backup GPT header of {}", path.display()))
}
