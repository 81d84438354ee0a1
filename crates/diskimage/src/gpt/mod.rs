//! GUID partition tables: write a balenaOS layout, read any GPT back.
//!
//! Written here rather than with the `gpt` crate (4.1), which asserts (panics)
//! on entry sizes other than 128, does not check the entry-array CRC, and keeps
//! the backup header where the primary says it was when a disk has grown. The
//! boot stage runs this as PID 1 against whatever disk it finds, so the reader
//! returns errors for every malformed input instead. Tests cross-check the
//! output against the `gpt` crate and `sfdisk`.

mod format;
mod grow;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use uuid::Uuid;

use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::layout::Layout;
use format::{ENTRY_COUNT, ENTRY_SIZE, Entry, Header, HeaderProblem};

pub use grow::{GrowOutcome, MIN_GROWTH_BYTES, grow_disk, grow_last_partition};

/// Logical block size of the images we write.
pub const BLOCK_SIZE: u64 = 512;
/// Block sizes the reader tries, in order.
const READ_BLOCK_SIZES: [u64; 2] = [512, 4096];

/// One used entry of a partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// 1-based entry number (the `N` of `/dev/vdaN`).
    pub number: u32,
    /// GPT partition name (balenaOS sets it to the filesystem label).
    pub name: String,
    pub type_guid: Uuid,
    /// Unique partition GUID (`PARTUUID`).
    pub part_guid: Uuid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub offset_bytes: u64,
    pub size_bytes: u64,
}

impl PartitionInfo {
    fn from_entry(number: u32, entry: &Entry, block_size: u64) -> Self {
        PartitionInfo {
            number,
            name: entry.name.clone(),
            type_guid: entry.type_guid,
            part_guid: entry.part_guid,
            first_lba: entry.first_lba,
            last_lba: entry.last_lba,
            offset_bytes: entry.first_lba * block_size,
            size_bytes: (entry.last_lba + 1).saturating_sub(entry.first_lba) * block_size,
        }
    }
}

/// The partition named `label`, or an error naming the disk.
pub fn find_partition<'a>(
    parts: &'a [PartitionInfo],
    label: &str,
    disk: &Path,
) -> Result<&'a PartitionInfo> {
    parts
        .iter()
        .find(|p| p.name == label)
        .ok_or_else(|| Error::PartitionNotFound {
            path: disk.to_path_buf(),
            label: label.to_string(),
        })
}

/// Write a protective MBR and primary and backup GPT for `layout`.
///
/// The backup GPT goes at the end of the disk as it is now (its current
/// size), which must hold the layout. Partition GUIDs are random v4 UUIDs;
/// `disk_guid` defaults to a random one too. Returns the partitions as written.
pub fn write_partition_table(
    disk: &mut Disk,
    layout: &Layout,
    disk_guid: Option<Uuid>,
) -> Result<Vec<PartitionInfo>> {
    let size = disk.size()?;
    let fail = |reason: String| Error::GptWrite {
        path: disk.path().to_path_buf(),
        reason,
    };
    if size < layout.total_bytes {
        return Err(fail(format!(
            "the layout needs {} bytes but the disk has only {size}",
            layout.total_bytes
        )));
    }
    let total_blocks = size / BLOCK_SIZE;
    let geometry = Geometry::new(total_blocks, BLOCK_SIZE, ENTRY_COUNT, ENTRY_SIZE)
        .ok_or_else(|| fail(format!("a disk of {size} bytes cannot hold a GPT")))?;
    let mut entries = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
    let mut written = Vec::with_capacity(layout.partitions.len());
    let mut used_guids = Vec::new();
    for spec in &layout.partitions {
        let first_lba = spec.offset_bytes / BLOCK_SIZE;
        let blocks = spec.size_bytes / BLOCK_SIZE;
        let aligned = spec.offset_bytes % BLOCK_SIZE == 0 && spec.size_bytes % BLOCK_SIZE == 0;
        if !aligned || blocks == 0 || !(1..=ENTRY_COUNT).contains(&spec.number) {
            return Err(fail(format!(
                "partition {} is malformed: {spec:?}",
                spec.name
            )));
        }
        let last_lba = first_lba + blocks - 1;
        if first_lba < geometry.first_usable || last_lba > geometry.last_usable {
            return Err(fail(format!(
                "partition {} (bytes {}..{}) does not fit on a disk of {size} bytes",
                spec.name,
                spec.offset_bytes,
                spec.end_bytes()
            )));
        }
        let mut part_guid = Uuid::new_v4();
        while used_guids.contains(&part_guid) {
            part_guid = Uuid::new_v4();
        }
        used_guids.push(part_guid);
        let entry = Entry {
            type_guid: spec.type_guid,
            part_guid,
            first_lba,
            last_lba,
            attributes: 0,
            name: spec.name.to_string(),
        };
        let slot = (spec.number - 1) as usize * ENTRY_SIZE as usize;
        entry.encode(&mut entries[slot..slot + ENTRY_SIZE as usize]);
        written.push(PartitionInfo::from_entry(spec.number, &entry, BLOCK_SIZE));
    }
    let disk_guid = disk_guid.unwrap_or_else(Uuid::new_v4);
    write_tables(disk, &geometry, disk_guid, &entries)?;
    Ok(written)
}

/// Read the partition table of the image or block device at `path`.
pub fn read_partition_table(path: impl AsRef<Path>) -> Result<Vec<PartitionInfo>> {
    read_partition_table_from(&mut Disk::open(path)?)
}

/// Read the partition table of an open disk.
///
/// Uses the primary GPT if it is valid, otherwise the backup at the end of the
/// disk. Tries 512-byte logical blocks, then 4096.
pub fn read_partition_table_from(disk: &mut Disk) -> Result<Vec<PartitionInfo>> {
    let size = disk.size()?;
    Ok(Table::read(disk, size)?.partitions())
}

/// Placement of the GPT structures on a disk of `total_blocks`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Geometry {
    block_size: u64,
    total_blocks: u64,
    entry_count: u32,
    entry_size: u32,
    first_usable: u64,
    last_usable: u64,
    backup_entries_lba: u64,
}

impl Geometry {
    /// The standard placement: entries right after the primary header, and
    /// right before the backup header in the last block.
    fn new(total_blocks: u64, block_size: u64, entry_count: u32, entry_size: u32) -> Option<Self> {
        let entries_blocks = (u64::from(entry_count) * u64::from(entry_size)).div_ceil(block_size);
        let first_usable = 2 + entries_blocks;
        let backup_entries_lba = total_blocks.checked_sub(1 + entries_blocks)?;
        let last_usable = backup_entries_lba.checked_sub(1)?;
        (first_usable <= last_usable).then_some(Geometry {
            block_size,
            total_blocks,
            entry_count,
            entry_size,
            first_usable,
            last_usable,
            backup_entries_lba,
        })
    }

    fn backup_lba(&self) -> u64 {
        self.total_blocks - 1
    }

    fn header(&self, disk_guid: Uuid, entries_crc: u32, primary: bool) -> Header {
        let (current_lba, backup_lba, entries_lba) = if primary {
            (1, self.backup_lba(), 2)
        } else {
            (self.backup_lba(), 1, self.backup_entries_lba)
        };
        Header {
            current_lba,
            backup_lba,
            first_usable: self.first_usable,
            last_usable: self.last_usable,
            disk_guid,
            entries_lba,
            entry_count: self.entry_count,
            entry_size: self.entry_size,
            entries_crc,
        }
    }
}

/// Write backup entries and header, then primary ones, then the protective
/// MBR, and flush. Writing the backup first means a crash leaves the old
/// primary (and the old backup it points at) intact.
fn write_tables(
    disk: &mut Disk,
    geometry: &Geometry,
    disk_guid: Uuid,
    entries: &[u8],
) -> Result<()> {
    let entries_crc = crate::crc32::crc32(entries);
    let bs = geometry.block_size;
    let backup = geometry.header(disk_guid, entries_crc, false);
    let primary = geometry.header(disk_guid, entries_crc, true);
    let path = disk.path().to_path_buf();
    let file = disk.file();
    let write_at = |file: &mut std::fs::File, offset: u64, bytes: &[u8]| {
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    };
    let mut mbr = [0u8; 512];
    (|| {
        write_at(file, geometry.backup_entries_lba * bs, entries)?;
        write_at(file, backup.current_lba * bs, &backup.encode(bs as usize))?;
        write_at(file, 2 * bs, entries)?;
        write_at(file, bs, &primary.encode(bs as usize))?;
        file.seek(SeekFrom::Start(0))?;
        file.read_exact(&mut mbr)?;
        format::protect(&mut mbr, geometry.total_blocks);
        write_at(file, 0, &mbr)?;
        file.flush()
    })()
    .ctx(|| format!("writing GPT to {}", path.display()))
}

/// A partition table as read from a disk.
#[derive(Debug)]
struct Table {
    block_size: u64,
    total_blocks: u64,
    header: Header,
    /// The raw entry array, kept so rewrites preserve entries byte for byte.
    entries: Vec<u8>,
    /// Whether the primary header (and its entries) are valid.
    primary_ok: bool,
    /// Whether a valid backup header sits in the last block of the disk.
    backup_at_end: bool,
}

impl Table {
    /// Read the table of `disk`, taken to be `size` bytes long.
    fn read(disk: &mut Disk, size: u64) -> Result<Table> {
        let path = disk.path().to_path_buf();
        let mut problems = Vec::new();
        for block_size in READ_BLOCK_SIZES {
            let total_blocks = size / block_size;
            if total_blocks < 3 {
                continue;
            }
            let last = total_blocks - 1;
            let primary = read_header(disk, size, block_size, 1)?;
            let backup = read_header(disk, size, block_size, last)?;
            let primary_ok = primary.is_ok();
            let backup_at_end = backup.is_ok();
            for (which, found) in [("primary", primary), ("backup", backup)] {
                match found {
                    Ok((header, entries)) => {
                        return Ok(Table {
                            block_size,
                            total_blocks,
                            header,
                            entries,
                            primary_ok,
                            backup_at_end,
                        });
                    }
                    Err(HeaderProblem::NoSignature) => {}
                    Err(problem) => problems.push(format!("{which} header: {problem}")),
                }
            }
        }
        let reason = if problems.is_empty() {
            "no GPT header found".to_string()
        } else {
            format!("no valid GPT header found ({})", problems.join("; "))
        };
        Err(Error::InvalidGpt { path, reason })
    }

    fn partitions(&self) -> Vec<PartitionInfo> {
        (1u32..)
            .zip(self.entries.chunks_exact(self.header.entry_size as usize))
            .filter_map(|(number, slot)| {
                Entry::decode(slot).map(|e| PartitionInfo::from_entry(number, &e, self.block_size))
            })
            .collect()
    }
}

type Found = std::result::Result<(Header, Vec<u8>), HeaderProblem>;

/// Read and check the header at `lba` and the entry array it points to.
/// I/O errors are errors; a malformed header is a `HeaderProblem`.
fn read_header(disk: &mut Disk, size: u64, block_size: u64, lba: u64) -> Result<Found> {
    let path = disk.path().to_path_buf();
    let mut block = vec![0u8; block_size as usize];
    let file = disk.file();
    file.seek(SeekFrom::Start(lba * block_size))
        .and_then(|_| file.read_exact(&mut block))
        .ctx(|| format!("reading GPT from {}", path.display()))?;
    let header = match Header::decode(&block, lba) {
        Ok(header) => header,
        Err(problem) => return Ok(Err(problem)),
    };
    let start = header.entries_lba.checked_mul(block_size);
    let end = start.and_then(|s| s.checked_add(header.entries_bytes()));
    if end.is_none_or(|end| end > size) || header.entries_lba == lba {
        return Ok(Err(HeaderProblem::BadEntryArray {
            count: header.entry_count,
            size: header.entry_size,
        }));
    }
    let mut entries = vec![0u8; header.entries_bytes() as usize];
    let file = disk.file();
    file.seek(SeekFrom::Start(header.entries_lba * block_size))
        .and_then(|_| file.read_exact(&mut entries))
        .ctx(|| format!("reading GPT entries from {}", path.display()))?;
    Ok(header.check_entries(&entries).map(|()| (header, entries)))
}
