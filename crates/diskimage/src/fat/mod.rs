//! The boot partition's FAT filesystem, formatted and edited in place with
//! `fatfs` on a [`Slice`](crate::Slice) of the disk — no mount, no mtools.

mod dotfix;
mod shared;
mod volume_id;

use std::cell::Cell;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions, ReadWriteSeek};

use crate::error::{Error, IoContext, Result};
use crate::layout::BOOT_LABEL;
use shared::Shared;

pub use volume_id::{fat_uuid_string, fat_volume_id, set_fat_volume_id};

/// How to format a FAT filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFormat {
    /// Volume label, at most 11 ASCII bytes; kept as given (balenaOS uses lower case).
    pub label: String,
    /// Volume serial number (shown by blkid as `XXXX-XXXX`).
    pub volume_id: u32,
    /// FAT32 instead of letting the size decide (FAT16 for the 100 MiB boot partition).
    pub fat32: bool,
    /// Cluster size in bytes; `None` lets the size decide.
    pub bytes_per_cluster: Option<u32>,
}

/// Cluster size of the boot filesystem. Firmware FAT drivers read a file a
/// cluster at a time: with the default 2 KiB, OVMF needs ~2.5 s under
/// emulation to load a 13 MB unified kernel image; 16 KiB clusters cut the
/// requests eightfold. 100 MiB / 16 KiB = 6400 clusters: still FAT16.
pub const BOOT_CLUSTER_BYTES: u32 = 16 * 1024;

impl FatFormat {
    /// The balenaOS boot filesystem: label `resin-boot`, FAT type by size.
    pub fn boot(volume_id: u32) -> Self {
        FatFormat {
            label: BOOT_LABEL.to_string(),
            volume_id,
            fat32: false,
            bytes_per_cluster: Some(BOOT_CLUSTER_BYTES),
        }
    }
}

/// Format a FAT filesystem over all of `region` (positioned at its start).
pub fn format_fat<S: ReadWriteSeek>(region: S, opts: &FatFormat) -> Result<()> {
    let action = || format!("formatting FAT filesystem {}", opts.label);
    let label = label_bytes(&opts.label).ok_or_else(|| Error::Fat {
        action: action(),
        reason: "a FAT label is at most 11 printable ASCII characters".into(),
    })?;
    let mut options = FormatVolumeOptions::new()
        .volume_id(opts.volume_id)
        .volume_label(label);
    if opts.fat32 {
        options = options.fat_type(FatType::Fat32);
    }
    if let Some(bytes) = opts.bytes_per_cluster {
        options = options.bytes_per_cluster(bytes);
    }
    fatfs::format_volume(region, options).ctx(action)
}

/// Format the balenaOS boot filesystem (`resin-boot`) over `region`.
pub fn format_boot_fs<S: ReadWriteSeek>(region: S, volume_id: u32) -> Result<()> {
    format_fat(region, &FatFormat::boot(volume_id))
}

fn label_bytes(label: &str) -> Option<[u8; 11]> {
    let ok = label.len() <= 11 && label.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| {
        let mut bytes = [b' '; 11];
        bytes[..label.len()].copy_from_slice(label.as_bytes());
        bytes
    })
}

/// An open FAT filesystem; `name` (e.g. `resin-boot in disk.img`) is what errors name.
///
/// Call [`FatFs::close`] on the happy path: it writes the FSInfo sector,
/// clears the dirty flag, repairs the entries of new directories (see
/// `dotfix`) and reports failure. Dropping without closing does the same but
/// can only log.
pub struct FatFs<S: ReadWriteSeek> {
    /// `None` once closed.
    fs: Option<FileSystem<Shared<S>>>,
    storage: Shared<S>,
    name: String,
    /// Set before the first write; reads alone never write anything.
    modified: Cell<bool>,
}

impl<S: ReadWriteSeek> FatFs<S> {
    /// Open the FAT filesystem in `region` (positioned at its start).
    pub fn open(region: S, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let storage = Shared::new(region);
        let fs = FileSystem::new(storage.clone(), FsOptions::new())
            .ctx(|| format!("opening FAT filesystem {name}"))?;
        Ok(FatFs {
            fs: Some(fs),
            storage,
            name,
            modified: Cell::new(false),
        })
    }

    fn fs(&self) -> &FileSystem<Shared<S>> {
        self.fs
            .as_ref()
            .expect("FatFs is only closed by close() and drop")
    }

    /// What errors call this filesystem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Volume label from the boot sector, without padding.
    pub fn label(&self) -> String {
        self.fs().volume_label()
    }

    /// Volume serial number.
    pub fn volume_id(&self) -> u32 {
        self.fs().volume_id()
    }

    /// 12, 16 or 32.
    pub fn fat_bits(&self) -> u8 {
        match self.fs().fat_type() {
            FatType::Fat12 => 12,
            FatType::Fat16 => 16,
            FatType::Fat32 => 32,
        }
    }

    /// Create or replace the file at `path` (`/`-separated, parents created).
    pub fn write_file(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.write_from(path, &mut &bytes[..])
    }

    /// Create or replace the file at `path` with everything `src` yields.
    pub fn write_from(&self, path: &str, src: &mut impl Read) -> Result<()> {
        let action = || format!("writing {path} to {}", self.name);
        let parts = split_path(path).map_err(|reason| Error::Fat {
            action: action(),
            reason,
        })?;
        let (file_name, parents) = parts.split_last().expect("split_path is never empty");
        let dir = self.ensure_dirs(parents).ctx(action)?;
        (|| {
            let mut file = dir.create_file(file_name)?;
            file.truncate()?;
            io::copy(src, &mut file)?;
            file.flush()
        })()
        .ctx(action)
    }

    /// Create the directory at `path` and its parents; existing ones are kept.
    pub fn create_dir_all(&self, path: &str) -> Result<()> {
        let action = || format!("creating directory {path} in {}", self.name);
        let parts = split_path(path).map_err(|reason| Error::Fat {
            action: action(),
            reason,
        })?;
        self.ensure_dirs(&parts).map(drop).ctx(action)
    }

    fn ensure_dirs(&self, parts: &[&str]) -> io::Result<fatfs::Dir<'_, Shared<S>>> {
        self.modified.set(true);
        let mut dir = self.fs().root_dir();
        for part in parts {
            dir = dir.create_dir(part)?;
        }
        Ok(dir)
    }

    /// Copy the host directory `host_dir` into the filesystem root, recursively,
    /// in name order. Symbolic links are followed.
    pub fn write_tree(&self, host_dir: &Path) -> Result<()> {
        self.write_tree_at(host_dir, "")
    }

    fn write_tree_at(&self, host_dir: &Path, prefix: &str) -> Result<()> {
        let read_action = || format!("reading {}", host_dir.display());
        let mut entries = fs::read_dir(host_dir)
            .and_then(|it| it.collect::<io::Result<Vec<_>>>())
            .ctx(read_action)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let host_path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                return Err(Error::Fat {
                    action: format!("copying {} to {}", host_path.display(), self.name),
                    reason: "the file name is not UTF-8".into(),
                });
            };
            let fat_path = format!("{prefix}{name}");
            let meta =
                fs::metadata(&host_path).ctx(|| format!("reading {}", host_path.display()))?;
            if meta.is_dir() {
                self.create_dir_all(&fat_path)?;
                self.write_tree_at(&host_path, &format!("{fat_path}/"))?;
            } else if meta.is_file() {
                let mut src = fs::File::open(&host_path)
                    .ctx(|| format!("opening {}", host_path.display()))?;
                self.write_from(&fat_path, &mut src)?;
            } else {
                return Err(Error::Fat {
                    action: format!("copying {} to {}", host_path.display(), self.name),
                    reason: "not a regular file or directory".into(),
                });
            }
        }
        Ok(())
    }

    /// The contents of the file at `path`.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let action = || format!("reading {path} from {}", self.name);
        let parts = split_path(path).map_err(|reason| Error::Fat {
            action: action(),
            reason,
        })?;
        let mut bytes = Vec::new();
        self.fs()
            .root_dir()
            .open_file(&parts.join("/"))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .ctx(action)?;
        Ok(bytes)
    }

    /// Every directory (ending in `/`) and file, as `/`-separated paths from
    /// the root, sorted.
    pub fn list_files(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        list_into(self.fs().root_dir(), "", &mut out)
            .ctx(|| format!("listing files of {}", self.name))?;
        out.sort();
        Ok(out)
    }

    /// Flush the filesystem metadata and repair new directories.
    pub fn close(mut self) -> Result<()> {
        self.finish()
            .ctx(|| format!("closing FAT filesystem {}", self.name))
    }

    fn finish(&mut self) -> io::Result<()> {
        let Some(fs) = self.fs.take() else {
            return Ok(());
        };
        if !self.modified.get() {
            return fs.unmount();
        }
        if fs.fat_type() == FatType::Fat32 {
            // Counting free clusters records the count in FSInfo, which
            // fsck.fat otherwise reports as uninitialized.
            fs.stats()?;
        }
        fs.unmount()?;
        dotfix::fix_dot_entries(&mut self.storage.clone())?;
        self.storage.clone().flush()
    }
}

impl<S: ReadWriteSeek> Drop for FatFs<S> {
    fn drop(&mut self) {
        if let Err(err) = self.finish() {
            tracing::warn!("closing FAT filesystem {} failed: {err}", self.name);
        }
    }
}

fn list_into<S: ReadWriteSeek>(
    dir: fatfs::Dir<'_, S>,
    prefix: &str,
    out: &mut Vec<String>,
) -> io::Result<()> {
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        if entry.is_dir() {
            let path = format!("{prefix}{name}/");
            out.push(path.clone());
            list_into(entry.to_dir(), &path, out)?;
        } else if entry.is_file() {
            out.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}

/// Split a `/`-separated path into components, refusing `.`, `..` and empty ones.
fn split_path(path: &str) -> std::result::Result<Vec<&str>, String> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!("{path:?} is not a plain relative path"));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_plain() {
        assert_eq!(
            split_path("/EFI/BOOT/x.efi").unwrap(),
            ["EFI", "BOOT", "x.efi"]
        );
        assert_eq!(split_path("config.json").unwrap(), ["config.json"]);
        for bad in ["", "/", "a//b", "a/../b", "./a", "a/"] {
            assert!(split_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_are_padded_ascii() {
        assert_eq!(&label_bytes("resin-boot").unwrap(), b"resin-boot ");
        assert!(label_bytes("resin-boot-long").is_none());
        assert!(label_bytes("bööt").is_none());
    }
}
