//! Repair of the `.` and `..` entries fatfs 0.3.6 writes in new directories.
//!
//! fatfs 0.3.6 (the latest release) writes a long-name entry before each of
//! them, so a new directory starts `LFN, ".", LFN, ".."`; and on FAT32 it
//! points `..` of a top-level directory at the root cluster instead of 0.
//! `fsck.fat` "repairs" both by renaming and deleting entries
//! (rafalh/rust-fatfs#117; fixed upstream in #99/#100, unreleased). After
//! fatfs is done, this pass walks the tree and rewrites exactly that pattern
//! to `".", "..", deleted, deleted`. Remove it once a fixed fatfs is released.

use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};

const ENTRY: usize = 32;
const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DELETED: u8 = 0xE5;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";
const MAX_DEPTH: usize = 64;

#[derive(Debug)]
struct Geometry {
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    clusters: u32,
    fat_bits: u8,
    root: DirLocation,
}

#[derive(Debug, Clone, Copy)]
enum DirLocation {
    /// FAT12/16 root directory: a fixed region.
    Fixed {
        offset: u64,
        entries: u64,
    },
    Cluster(u32),
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected FAT layout: {what}"),
    )
}

fn read_at<S: Read + Seek>(dev: &mut S, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    dev.seek(SeekFrom::Start(offset))?;
    dev.read_exact(buf)
}

impl Geometry {
    fn read<S: Read + Seek>(dev: &mut S) -> io::Result<Self> {
        let mut b = [0u8; 512];
        read_at(dev, 0, &mut b)?;
        let u16_at = |at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
        let u32_at =
            |at: usize| u64::from(u32::from_le_bytes(b[at..at + 4].try_into().expect("4")));
        let bps = u16_at(0x0B);
        let spc = u64::from(b[0x0D]);
        if bps == 0 || spc == 0 {
            return Err(invalid("zero sector or cluster size"));
        }
        let fat_size = if u16_at(0x16) != 0 {
            u16_at(0x16)
        } else {
            u32_at(0x24)
        };
        let total = if u16_at(0x13) != 0 {
            u16_at(0x13)
        } else {
            u32_at(0x20)
        };
        let root_entries = u16_at(0x11);
        let fats_start = u16_at(0x0E);
        let root_start = fats_start + u64::from(b[0x10]) * fat_size;
        let data_start = root_start + (root_entries * ENTRY as u64).div_ceil(bps);
        let clusters = total
            .checked_sub(data_start)
            .ok_or_else(|| invalid("data area past the end"))?
            / spc;
        let fat_bits = match clusters {
            0..4085 => 12,
            4085..65525 => 16,
            _ => 32,
        };
        let root = if fat_bits == 32 {
            DirLocation::Cluster(u32_at(0x2C) as u32)
        } else {
            DirLocation::Fixed {
                offset: root_start * bps,
                entries: root_entries,
            }
        };
        Ok(Geometry {
            cluster_bytes: bps * spc,
            fat_offset: fats_start * bps,
            data_offset: data_start * bps,
            clusters: u32::try_from(clusters).map_err(|_| invalid("too many clusters"))?,
            fat_bits,
            root,
        })
    }

    fn valid(&self, cluster: u32) -> bool {
        (2..self.clusters.saturating_add(2)).contains(&cluster)
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes
    }

    fn next<S: Read + Seek>(&self, dev: &mut S, cluster: u32) -> io::Result<Option<u32>> {
        let c = u64::from(cluster);
        let next = match self.fat_bits {
            12 => {
                let mut v = [0u8; 2];
                read_at(dev, self.fat_offset + c + c / 2, &mut v)?;
                let v = u16::from_le_bytes(v);
                u32::from(if cluster % 2 == 1 { v >> 4 } else { v & 0x0FFF })
            }
            16 => {
                let mut v = [0u8; 2];
                read_at(dev, self.fat_offset + 2 * c, &mut v)?;
                u32::from(u16::from_le_bytes(v))
            }
            _ => {
                let mut v = [0u8; 4];
                read_at(dev, self.fat_offset + 4 * c, &mut v)?;
                u32::from_le_bytes(v) & 0x0FFF_FFFF
            }
        };
        Ok(self.valid(next).then_some(next))
    }

    /// All entries of a directory, up to the end marker.
    fn entries<S: Read + Seek>(
        &self,
        dev: &mut S,
        dir: DirLocation,
    ) -> io::Result<Vec<[u8; ENTRY]>> {
        let mut raw = Vec::new();
        match dir {
            DirLocation::Fixed { offset, entries } => {
                raw.resize(entries as usize * ENTRY, 0);
                read_at(dev, offset, &mut raw)?;
            }
            DirLocation::Cluster(first) => {
                let mut cluster = Some(first).filter(|&c| self.valid(c));
                let mut hops = 0;
                while let Some(c) = cluster {
                    hops += 1;
                    if hops > self.clusters {
                        return Err(invalid("cluster chain loops"));
                    }
                    let start = raw.len();
                    raw.resize(start + self.cluster_bytes as usize, 0);
                    read_at(dev, self.cluster_offset(c), &mut raw[start..])?;
                    cluster = self.next(dev, c)?;
                }
            }
        }
        Ok(raw
            .chunks_exact(ENTRY)
            .map(|e| e.try_into().expect("32 bytes"))
            .take_while(|e: &[u8; ENTRY]| e[0] != 0)
            .collect())
    }
}

/// Walk the filesystem at the start of `dev` and repair every directory that
/// begins with fatfs 0.3.6's pattern. Returns how many were repaired.
pub(crate) fn fix_dot_entries<S: Read + Write + Seek>(dev: &mut S) -> io::Result<usize> {
    let geo = Geometry::read(dev)?;
    let mut visited = HashSet::new();
    let mut fixed = 0;
    walk(dev, &geo, geo.root, true, 0, &mut visited, &mut fixed)?;
    dev.flush()?;
    Ok(fixed)
}

fn walk<S: Read + Write + Seek>(
    dev: &mut S,
    geo: &Geometry,
    dir: DirLocation,
    is_root: bool,
    depth: usize,
    visited: &mut HashSet<u32>,
    fixed: &mut usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(invalid("directories nested too deep"));
    }
    for entry in geo.entries(dev, dir)? {
        let attr = entry[11];
        let skip = entry[0] == DELETED
            || attr == ATTR_LFN
            || attr & ATTR_VOLUME != 0
            || attr & ATTR_DIR == 0
            || entry[0] == b'.';
        if skip {
            continue;
        }
        let hi = if geo.fat_bits == 32 {
            u32::from(u16::from_le_bytes([entry[20], entry[21]]))
        } else {
            0
        };
        let cluster = hi << 16 | u32::from(u16::from_le_bytes([entry[26], entry[27]]));
        if !geo.valid(cluster) || !visited.insert(cluster) {
            continue;
        }
        if fix_directory(dev, geo, cluster, is_root)? {
            *fixed += 1;
        }
        walk(
            dev,
            geo,
            DirLocation::Cluster(cluster),
            false,
            depth + 1,
            visited,
            fixed,
        )?;
    }
    Ok(())
}

/// Repair the first four entries of the directory at `cluster` if needed.
fn fix_directory<S: Read + Write + Seek>(
    dev: &mut S,
    geo: &Geometry,
    cluster: u32,
    parent_is_root: bool,
) -> io::Result<bool> {
    if geo.cluster_bytes < 4 * ENTRY as u64 {
        return Ok(false);
    }
    let offset = geo.cluster_offset(cluster);
    let mut head = [0u8; 4 * ENTRY];
    read_at(dev, offset, &mut head)?;
    let slot = |i: usize| &head[i * ENTRY..(i + 1) * ENTRY];
    let is = |i: usize, name: &[u8; 11]| &slot(i)[..11] == name && slot(i)[11] & ATTR_DIR != 0;
    let buggy = slot(0)[11] == ATTR_LFN && is(1, DOT) && slot(2)[11] == ATTR_LFN && is(3, DOTDOT);
    if !buggy {
        return Ok(false);
    }
    let mut fixed = [0u8; 4 * ENTRY];
    fixed[..ENTRY].copy_from_slice(slot(1));
    fixed[ENTRY..2 * ENTRY].copy_from_slice(slot(3));
    fixed[2 * ENTRY] = DELETED;
    fixed[3 * ENTRY] = DELETED;
    if parent_is_root {
        // ".." of a top-level directory is cluster 0, also on FAT32.
        fixed[ENTRY + 20..ENTRY + 22].fill(0);
        fixed[ENTRY + 26..ENTRY + 28].fill(0);
    }
    dev.seek(SeekFrom::Start(offset))?;
    dev.write_all(&fixed)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Directories made by plain fatfs, counted before and after the repair.
    fn repairs(size: usize, fat_type: fatfs::FatType) -> (usize, usize, Vec<u8>) {
        let mut dev = Cursor::new(vec![0u8; size]);
        let opts = fatfs::FormatVolumeOptions::new().fat_type(fat_type);
        fatfs::format_volume(&mut dev, opts).unwrap();
        dev.set_position(0);
        {
            let fs = fatfs::FileSystem::new(&mut dev, fatfs::FsOptions::new()).unwrap();
            {
                let top = fs.root_dir().create_dir("top").unwrap();
                top.create_dir("inner").unwrap();
                top.create_file("inner/file.txt").unwrap();
                fs.root_dir().create_dir("other").unwrap();
            }
            fs.unmount().unwrap();
        }
        let first = fix_dot_entries(&mut dev).unwrap();
        let second = fix_dot_entries(&mut dev).unwrap();
        (first, second, dev.into_inner())
    }

    #[test]
    fn every_new_directory_is_repaired_once() {
        for (size, fat_type) in [
            (2 << 20, fatfs::FatType::Fat12),
            (16 << 20, fatfs::FatType::Fat16),
            (40 << 20, fatfs::FatType::Fat32),
        ] {
            let (first, second, image) = repairs(size, fat_type);
            assert_eq!((first, second), (3, 0), "{fat_type:?}");
            // The repaired tree still reads back through fatfs.
            let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new()).unwrap();
            let names: Vec<String> = fs
                .root_dir()
                .open_dir("top")
                .unwrap()
                .iter()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, [".", "..", "inner"], "{fat_type:?}");
            assert!(fs.root_dir().open_file("top/inner/file.txt").is_ok());
        }
    }
}
