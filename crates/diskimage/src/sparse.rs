//! Copying filesystem images into a disk image without filling its holes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::disk::Disk;
use crate::error::{Error, IoContext, Result};
use crate::gpt::PartitionInfo;

/// Granularity of hole detection: the usual filesystem block.
const BLOCK: usize = 4096;
/// Bytes read per round.
const CHUNK: usize = 256 * BLOCK;

/// Whether every byte of `bytes` is zero.
///
/// Compares 16 bytes at a time: a byte loop with an early exit is not vectorised, and under
/// QEMU's emulation (TCG) it ran at 0.3 GiB/s against 4.4 GiB/s for this; natively 1 GiB/s
/// against 24 GiB/s. Callers scan whole root filesystems with it.
pub fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(16);
    let tail = words.remainder();
    words
        .map(<[u8; 16]>::try_from)
        .all(|w| w.is_ok_and(|w| u128::from_ne_bytes(w) == 0))
        && tail.iter().all(|&b| b == 0)
}

/// Copy `len` bytes from `src` (from its current position) to `dst` at
/// `dst_offset`, seeking over every all-zero 4 KiB block instead of writing it.
///
/// The destination must be a regular file whose range already reads as zeros
/// (a fresh sparse image made by [`Disk::create`]): skipped blocks are not
/// written, so this is not for block devices. If the destination is
/// shorter than `dst_offset + len` it is extended. Returns the number of bytes
/// actually written.
pub fn copy_sparse<R: Read>(src: &mut R, dst: &mut Disk, dst_offset: u64, len: u64) -> Result<u64> {
    let path = dst.path().to_path_buf();
    copy_sparse_io(src, dst.file(), dst_offset, len).ctx(|| {
        format!(
            "copying {len} bytes into {} at offset {dst_offset}",
            path.display()
        )
    })
}

fn copy_sparse_io<R: Read>(
    src: &mut R,
    dst: &mut File,
    dst_offset: u64,
    len: u64,
) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut written = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(CHUNK, |left| left.min(CHUNK));
        let chunk = &mut buf[..want];
        src.read_exact(chunk)?;
        // Write each maximal run of non-zero blocks with one call.
        let mut run_start: Option<usize> = None;
        for (i, block) in chunk.chunks(BLOCK).enumerate() {
            let zero = is_zero(block);
            match (zero, run_start) {
                (false, None) => run_start = Some(i * BLOCK),
                (true, Some(start)) => {
                    write_at(
                        dst,
                        dst_offset + done + start as u64,
                        &chunk[start..i * BLOCK],
                    )?;
                    written += (i * BLOCK - start) as u64;
                    run_start = None;
                }
                _ => {}
            }
        }
        if let Some(start) = run_start {
            write_at(dst, dst_offset + done + start as u64, &chunk[start..])?;
            written += (want - start) as u64;
        }
        done += want as u64;
    }
    let end = dst_offset + len;
    let meta = dst.metadata()?;
    if meta.is_file() && meta.len() < end {
        dst.set_len(end)?;
    }
    dst.flush()?;
    Ok(written)
}

fn write_at(dst: &mut File, offset: u64, bytes: &[u8]) -> io::Result<()> {
    dst.seek(SeekFrom::Start(offset))?;
    dst.write_all(bytes)
}

/// Copy the filesystem image at `src_path` into `part` of `disk`, sparsely.
/// The image must fit; a smaller image leaves the rest of the partition as it was.
pub fn write_partition_image(
    disk: &mut Disk,
    part: &PartitionInfo,
    src_path: &Path,
) -> Result<u64> {
    let mut src = File::open(src_path).ctx(|| format!("opening {}", src_path.display()))?;
    let size = src
        .metadata()
        .ctx(|| format!("reading the size of {}", src_path.display()))?
        .len();
    if size > part.size_bytes {
        return Err(Error::DoesNotFit {
            source_path: src_path.to_path_buf(),
            path: disk.path().to_path_buf(),
            label: part.name.clone(),
            size,
            capacity: part.size_bytes,
        });
    }
    copy_sparse(&mut src, disk, part.offset_bytes, size)
}
