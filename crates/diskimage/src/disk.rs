//! An open disk image or block device, carrying the path its errors name.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::gpt::PartitionInfo;
use crate::slice::Slice;

/// A disk image file or a block device, opened for reading or for writing.
///
/// Every operation in this crate reports errors against [`Disk::path`], so
/// messages read `reading GPT from /dev/vda: …` whatever the caller did.
#[derive(Debug)]
pub struct Disk {
    file: File,
    path: PathBuf,
}

impl Disk {
    /// Open an existing image or device read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(|| format!("opening {}", path.display()))?;
        Ok(Disk::from_file(file, path))
    }

    /// Open an existing image or device for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx(|| format!("opening {} for writing", path.display()))?;
        Ok(Disk::from_file(file, path))
    }

    /// Create (or truncate) a sparse image file of exactly `size_bytes`.
    pub fn create(path: impl AsRef<Path>, size_bytes: u64) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .ctx(|| format!("creating {}", path.display()))?;
        file.set_len(size_bytes)
            .ctx(|| format!("sizing {} to {size_bytes} bytes", path.display()))?;
        Ok(Disk::from_file(file, path))
    }

    /// Wrap an already open file; `path` is only used in messages.
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> Self {
        Disk {
            file,
            path: path.into(),
        }
    }

    /// The path errors name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Give back the underlying file.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Size in bytes. Works for block devices too, where file metadata says 0.
    pub fn size(&mut self) -> Result<u64> {
        let path = &self.path;
        self.file
            .seek(SeekFrom::End(0))
            .ctx(|| format!("finding the size of {}", path.display()))
    }

    /// The byte range `[offset, offset + len)` as a stream of its own.
    pub fn region(&mut self, offset: u64, len: u64) -> Slice<&mut File> {
        Slice::new(&mut self.file, offset, len)
    }

    /// The bytes of one partition as a stream of their own.
    pub fn partition(&mut self, part: &PartitionInfo) -> Slice<&mut File> {
        self.region(part.offset_bytes, part.size_bytes)
    }

    /// Flush everything written so far to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_all()
            .ctx(|| format!("syncing {}", self.path.display()))
    }
}
