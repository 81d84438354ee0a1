//! Throwaway qcow2 overlays on a base image, written directly (no `qemu-img` needed).
//!
//! An overlay is a fresh qcow2 v3 image whose every cluster is unallocated, so QEMU reads the
//! backing file until the guest writes. The layout is the one `qemu-img create` uses:
//! cluster 0 header (+ backing-format extension + backing file name), cluster 1 refcount table,
//! cluster 2 the first refcount block, clusters 3.. the L1 table.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MAGIC: u32 = 0x5146_49fb; // "QFI\xfb"
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Guest bytes one L2 table maps: (cluster / 8 entries) * cluster.
const L2_COVERAGE: u64 = (CLUSTER / 8) * CLUSTER;
const HEADER_LEN: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const MAX_BACKING_NAME: usize = 1023;

/// On-disk format of a disk image given to QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    /// The name QEMU uses (`format=` / backing format).
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The virtual (guest-visible) size of a disk image in bytes.
pub fn virtual_size(path: &Path, format: DiskFormat) -> Result<u64> {
    match format {
        DiskFormat::Raw => fs::metadata(path)
            .map(|m| m.len())
            .map_err(|e| Error::io_path("reading size of", path, e)),
        DiskFormat::Qcow2 => {
            let mut head = [0u8; 32];
            File::open(path)
                .and_then(|mut f| f.read_exact(&mut head))
                .map_err(|e| Error::io_path("reading qcow2 header of", path, e))?;
            if be32(&head, 0) != MAGIC {
                return Err(Error::Image {
                    path: path.to_owned(),
                    reason: "not a qcow2 image (bad magic)".into(),
                });
            }
            Ok(be64(&head, 24))
        }
    }
}

/// Creates `overlay` as a qcow2 image backed by `backing` (stored as an absolute path).
///
/// The overlay's virtual size is `size` if given, else the backing image's size; it may not be
/// smaller than the backing image. Returns the virtual size.
pub fn create_overlay(
    backing: &Path,
    backing_format: DiskFormat,
    overlay: &Path,
    size: Option<u64>,
) -> Result<u64> {
    let backing_abs: PathBuf =
        fs::canonicalize(backing).map_err(|e| Error::io_path("resolving", backing, e))?;
    let base_size = virtual_size(&backing_abs, backing_format)?;
    let size = match size {
        Some(s) if s < base_size => {
            return Err(Error::Config(format!(
                "overlay size {s} is smaller than base image {} ({base_size} bytes)",
                backing_abs.display()
            )));
        }
        Some(s) => s,
        None => base_size,
    };
    let name = backing_abs.to_str().ok_or_else(|| Error::Image {
        path: backing_abs.clone(),
        reason: "path is not UTF-8".into(),
    })?;
    let bytes = overlay_bytes(name, backing_format, size).map_err(|reason| Error::Image {
        path: backing_abs.clone(),
        reason,
    })?;
    let mut f = File::create(overlay).map_err(|e| Error::io_path("creating", overlay, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io_path("writing", overlay, e))?;
    tracing::debug!(overlay = %overlay.display(), backing = %backing_abs.display(), size, "created qcow2 overlay");
    Ok(size)
}

/// The complete bytes of a fresh overlay image (pure; see the module docs for the layout).
fn overlay_bytes(
    backing_name: &str,
    backing_format: DiskFormat,
    size: u64,
) -> Result<Vec<u8>, String> {
    if backing_name.is_empty() || backing_name.len() > MAX_BACKING_NAME {
        return Err(format!(
            "backing file name must be 1..={MAX_BACKING_NAME} bytes, is {}",
            backing_name.len()
        ));
    }
    let size = size.div_ceil(512) * 512;
    let l1_entries = size.div_ceil(L2_COVERAGE).max(1);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let total_clusters = 3 + l1_clusters;
    if total_clusters > CLUSTER / 2 {
        return Err(format!(
            "virtual size {size} is too large for a simple overlay"
        ));
    }
    let l1_entries = u32::try_from(l1_entries).map_err(|_| "L1 table too large".to_owned())?;

    let mut img = vec![0u8; usize::try_from(total_clusters * CLUSTER).expect("fits in memory")];
    let h = &mut img[..CLUSTER as usize];
    put32(h, 0, MAGIC);
    put32(h, 4, 3); // version
    // backing_file_offset / _size filled below, once the extensions are laid out.
    put32(h, 20, CLUSTER_BITS);
    put64(h, 24, size);
    put32(h, 32, 0); // no encryption
    put32(h, 36, l1_entries);
    put64(h, 40, 3 * CLUSTER); // L1 table
    put64(h, 48, CLUSTER); // refcount table
    put32(h, 56, 1); // refcount table clusters
    // nb_snapshots, snapshots_offset, feature bitmaps: zero.
    put32(h, 96, 4); // refcount_order: 16-bit refcounts
    put32(h, 100, HEADER_LEN);

    let mut at = HEADER_LEN as usize;
    let fmt = backing_format.as_str().as_bytes();
    put32(h, at, EXT_BACKING_FORMAT);
    put32(h, at + 4, fmt.len() as u32);
    h[at + 8..at + 8 + fmt.len()].copy_from_slice(fmt);
    at += 8 + fmt.len().div_ceil(8) * 8;
    at += 8; // end-of-extensions marker: type 0, length 0
    if at + backing_name.len() > CLUSTER as usize {
        return Err("backing file name does not fit in the header cluster".into());
    }
    put64(h, 8, at as u64);
    put32(h, 16, backing_name.len() as u32);
    h[at..at + backing_name.len()].copy_from_slice(backing_name.as_bytes());

    // Refcount table: one block, at cluster 2.
    put64(&mut img, CLUSTER as usize, 2 * CLUSTER);
    // Refcount block: every metadata cluster is referenced once.
    for c in 0..total_clusters as usize {
        let off = 2 * CLUSTER as usize + 2 * c;
        img[off..off + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    // L1 table: all zero (nothing allocated, reads fall through to the backing file).
    Ok(img)
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn header_fields() {
        let img = overlay_bytes("/var/base.img", DiskFormat::Raw, 3 * GIB).unwrap();
        assert_eq!(img.len() as u64, 4 * CLUSTER); // header, reftable, refblock, L1
        assert_eq!(&img[0..4], b"QFI\xfb");
        assert_eq!(be32(&img, 4), 3);
        assert_eq!(be32(&img, 20), 16);
        assert_eq!(be64(&img, 24), 3 * GIB);
        assert_eq!(be32(&img, 36), 6); // 3 GiB / 512 MiB per L2 table
        assert_eq!(be64(&img, 40), 3 * CLUSTER);
        assert_eq!(be64(&img, 48), CLUSTER);
        assert_eq!(be32(&img, 56), 1);
        assert_eq!(be32(&img, 96), 4);
        assert_eq!(be32(&img, 100), 104);
        // Backing format extension, then the end marker, then the name.
        assert_eq!(be32(&img, 104), EXT_BACKING_FORMAT);
        assert_eq!(be32(&img, 108), 3);
        assert_eq!(&img[112..115], b"raw");
        assert_eq!(be64(&img, 120), 0);
        let name_at = be64(&img, 8) as usize;
        assert_eq!(name_at, 128);
        assert_eq!(be32(&img, 16), 13);
        assert_eq!(&img[name_at..name_at + 13], b"/var/base.img");
    }

    #[test]
    fn refcounts_cover_metadata_only() {
        let img = overlay_bytes("/b", DiskFormat::Qcow2, GIB).unwrap();
        assert_eq!(be64(&img, CLUSTER as usize), 2 * CLUSTER);
        let rb = 2 * CLUSTER as usize;
        let counts: Vec<u16> = (0..6)
            .map(|i| u16::from_be_bytes([img[rb + 2 * i], img[rb + 2 * i + 1]]))
            .collect();
        assert_eq!(counts, [1, 1, 1, 1, 0, 0]);
        assert!(img[3 * CLUSTER as usize..].iter().all(|&b| b == 0));
        assert_eq!(&img[112..117], b"qcow2");
    }

    #[test]
    fn size_rounds_to_sectors_and_l1_grows() {
        let img = overlay_bytes("/b", DiskFormat::Raw, 1000).unwrap();
        assert_eq!(be64(&img, 24), 1024);
        assert_eq!(be32(&img, 36), 1);
        // 8192 L1 entries fill one cluster; one more needs a second L1 cluster.
        let img = overlay_bytes("/b", DiskFormat::Raw, 8193 * L2_COVERAGE).unwrap();
        assert_eq!(img.len() as u64, 5 * CLUSTER);
    }

    #[test]
    fn rejects_overlong_backing_name() {
        let long = "/x".repeat(600);
        assert!(overlay_bytes(&long, DiskFormat::Raw, GIB).is_err());
    }

    #[test]
    fn create_reads_base_size_and_refuses_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.img");
        File::create(&base).unwrap().set_len(64 << 20).unwrap();
        let ov = dir.path().join("ov.qcow2");
        assert_eq!(
            create_overlay(&base, DiskFormat::Raw, &ov, None).unwrap(),
            64 << 20
        );
        assert_eq!(virtual_size(&ov, DiskFormat::Qcow2).unwrap(), 64 << 20);
        assert_eq!(
            create_overlay(&base, DiskFormat::Raw, &ov, Some(GIB)).unwrap(),
            GIB
        );
        let err = create_overlay(&base, DiskFormat::Raw, &ov, Some(1 << 20)).unwrap_err();
        assert!(err.to_string().contains("smaller than base image"), "{err}");
        let err = virtual_size(&base, DiskFormat::Qcow2).unwrap_err();
        assert!(err.to_string().contains("bad magic"), "{err}");
    }
}
