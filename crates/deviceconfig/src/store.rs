//! Writing `config.json` on the FAT boot partition so that a power cut at any
//! instant leaves the old or the new content — never an empty, truncated or
//! missing file — and concurrent writers never lose each other's keys.
//!
//! # Why not a temporary file and `rename()`
//!
//! vfat has no journal and writes file data, the FAT and directory blocks
//! back in no particular order unless they are fsync'd. Its `rename()` over
//! an existing file rewrites two directory entries (the target's and the
//! source's) that may sit in different sectors: a power cut between the two
//! writes can leave both names on one cluster chain, or neither name at all.
//! So this protocol never renames. It keeps a checksummed copy of the new
//! content beside the file, and rewrites `config.json` in place only while
//! that copy is on disk.
//!
//! # The files
//!
//! * `config.json`: the file everyone reads, plain JSON.
//! * `CONF587C.NEW`: the complete new content.
//! * `CONF587C.SUM`: `<sha256 of the new content>  CONF587C.NEW` (the
//!   `sha256sum -c` format). It vouches for `.NEW`: a write is *committed*
//!   once both files exist and the checksum matches.
//!
//! The side files are named after the target ([`pending_name`],
//! [`checksum_name`]). The name starts with up to four of its letters and
//! digits and ends with hex digits of its SHA-256, so `config.json` and
//! `config.txt` in one directory never share side files. The names are
//! upper-case 8.3 on purpose. A long name takes extra directory slots beside
//! the short one, written and erased as separate sector writes. A power cut
//! between them can leave the file under its short alias only
//! (`CONFIG~1.SUM`), where no reader would look for it or remove it. Linux
//! vfat (default `shortname=mixed`) stores an upper-case 8.3 name in a single
//! slot, and that name resolves the same with or without long-name slots
//! (`fatfs` always writes one).
//!
//! # Writing ([`write_in`])
//!
//! Under the lock, after recovery (below), and only if the content changes:
//!
//! 1. Write `.NEW`, fsync it. Its data, FAT chain and entry reach the disk
//!    before any checksum names it. A `.SUM` written while `.NEW` was still in
//!    the page cache could, after a power cut, sit beside stale clusters of an
//!    earlier `.NEW` with the same length.
//! 2. Write `.SUM`, fsync it, fsync the directory. This is the **commit
//!    point**. The directory fsync makes the entries of both files durable: a
//!    vfat file's fsync writes its own entry but not always the directory
//!    block holding a new one.
//! 3. Write `config.json` in place (truncate, write), fsync it, then fsync the
//!    directory for a `config.json` that did not exist before.
//! 4. Remove `.SUM` and `.NEW`, fsync the directory. `config.json` is already
//!    durable, and neither leftover is trusted alone, so neither the order nor
//!    the durability of the removals matters. The fsync only leaves a clean
//!    directory behind.
//!
//! # Reading and recovery ([`read_in`])
//!
//! Readers take the lock too, because a read may have to finish a write:
//!
//! * `.NEW` with a matching `.SUM`: a write passed its commit point. Fsync
//!   both files and the directory first. The writer may have died as a
//!   process after its writes but before its fsyncs, and `config.json` is about
//!   to be overwritten. Then do steps 3 and 4. The content is `.NEW`'s.
//! * Any other leftover (`.NEW` alone, `.SUM` alone, a mismatch) is a write
//!   that never reached its commit point, and `config.json` was not touched.
//!   Remove both, then fsync the directory.
//! * Then read `config.json`, or return [`Error::NotFound`].
//!
//! # What a power cut leaves
//!
//! | cut during | `config.json`          | `.NEW` + `.SUM`                        | the next read returns               |
//! |------------|------------------------|----------------------------------------|-------------------------------------|
//! | step 1     | old                    | `.NEW` absent, torn or whole; no `.SUM` | old; leftovers removed              |
//! | step 2     | old                    | `.SUM` absent, torn or whole           | old if it does not verify, else new |
//! | step 3     | old, empty, torn, new  | verified                               | new; steps 3 and 4 redone           |
//! | step 4     | new                    | verified, torn, one or both absent     | new (rewritten if still verified)   |
//! | after      | new                    | absent                                 | new                                 |
//!
//! The invariant behind the table: `config.json` is touched only while a
//! verified, durable copy of the new content exists. That copy is retired
//! only once `config.json` holds the new content durably. A recovery cut
//! short is itself one of these rows.
//!
//! Assumptions:
//!
//! * Writing one sector is atomic.
//! * `fsck.vfat -a` repairs the boot partition's metadata before it is mounted
//!   (the boot stage runs it). That covers lost clusters and entries that
//!   point at freed clusters.
//!
//! Recovery looks only at names and checksums, so whatever fsck truncates
//! still resolves to old or new.
//!
//! The price of not renaming: a process that reads `config.json` without
//! this module can see it empty or partial during step 3, for as long as one
//! `write()` of a few KiB takes.
//!
//! # Compared with balenaOS's fatrw
//!
//! fatrw writes the content to `.config.json.<random>.<md5>.md5sum`, with the
//! checksum in the name. It copies that file to a `.tmp` and renames the
//! `.tmp` over the target, relying on vfat's two-entry rename. The copy is not
//! fsynced, and a directory fsync does not flush file data, so the target's
//! data can still be in the page cache when the `.md5sum` copy is removed.
//! Random names allow several pending writes at once, and a reader commits the
//! first one that verifies, in glob order, which is not always the newest.
//! The long hidden names have the short-alias problem described above.
//! Writers do not lock each other. When the disk is full, fatrw falls back to
//! an unsafe in-place write.
//!
//! Here:
//!
//! * Fixed 8.3 side-file names allow at most one pending write.
//! * There is no rename.
//! * `config.json` is fsynced before its safety copy goes.
//! * A reader makes a pending commit durable before acting on it.
//! * One `flock` spans read, edit and write.
//! * A full disk is an error that leaves `config.json` untouched.
//!
//! # The lock
//!
//! [`Store`] takes a `flock` on a file outside the FAT partition
//! (`/run/baleen/config.lock` on the device: tmpfs, fresh at every boot,
//! nothing left on the boot partition). The lock is held across recovery,
//! read, edit and write, so two [`Store::update`]s that change different keys
//! both survive.
//!
//! # One protocol, any directory
//!
//! The steps run over the small [`Dir`] trait. [`FsDir`] is a mounted
//! directory (`std::fs`). An image tool implements [`Dir`] over `fatfs`, as
//! this module's tests do, and calls [`read_in`], [`write_in`] and
//! [`update_in`] with the same guarantees.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use sha2::{Digest, Sha256};

/// Name of the configuration file in the boot partition.
pub const CONFIG_JSON: &str = "config.json";
/// The mounted boot partition, relative to the root.
pub const BOOT_DIR: &str = "mnt/boot";
/// The lock that serialises config.json's readers and writers, relative to
/// the root.
pub const LOCK_FILE: &str = "run/baleen/config.lock";

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while reading or writing a stored file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither the file nor a committed write of it exists.
    #[error("{path} does not exist")]
    NotFound { path: String },

    /// An I/O operation failed; `action` says what was being done to what.
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whether the file simply does not exist yet.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// The directory operations the protocol is made of. Each operation acts on
/// a file `name` directly in the directory.
///
/// There is no `rename`. The protocol does not need one, and on FAT it could
/// not be trusted.
pub trait Dir {
    /// How errors name `name` (`/mnt/boot/config.json`).
    fn display(&self, name: &str) -> String;
    /// Whether `name` exists.
    fn exists(&mut self, name: &str) -> io::Result<bool>;
    /// The contents of `name`, or `None` when it does not exist.
    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Creates `name`, or truncates it in place, and writes `bytes`.
    /// Nothing has to be durable yet.
    fn write(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes the data of `name` and its directory entry durable (`fsync`).
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Removes `name`; a missing file is not an error.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Makes the directory's entries durable (`fsync` of the directory).
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// The side files' stem for `name`: up to four of its letters and digits in
/// upper case, then hex digits of its SHA-256, eight characters in all.
fn side_stem(name: &str) -> String {
    let prefix = name.chars().filter(char::is_ascii_alphanumeric).take(4);
    let mut stem: String = prefix.map(|c| c.to_ascii_uppercase()).collect();
    let digest = hex::encode_upper(Sha256::digest(name.as_bytes()));
    stem.push_str(&digest[..8 - stem.len()]);
    stem
}

/// The pending copy of `name` during a write (`config.json` → `CONF587C.NEW`).
pub fn pending_name(name: &str) -> String {
    format!("{}.NEW", side_stem(name))
}

/// The checksum that commits the pending copy (`config.json` → `CONF587C.SUM`).
pub fn checksum_name(name: &str) -> String {
    format!("{}.SUM", side_stem(name))
}

/// The content of the checksum file for `bytes`, in `sha256sum` format.
fn checksum_line(name: &str, bytes: &[u8]) -> Vec<u8> {
    let digest = hex::encode(Sha256::digest(bytes));
    format!("{digest}  {}\n", pending_name(name)).into_bytes()
}

/// Recovers any interrupted write, then returns the content of `name`.
pub fn read_in<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<Vec<u8>> {
    recover(dir, name)?.ok_or_else(|| Error::NotFound {
        path: dir.display(name),
    })
}

/// Replaces the content of `name` with `bytes` by the protocol above
/// (recovering an interrupted write first). Returns whether anything changed.
pub fn write_in<D: Dir + ?Sized>(dir: &mut D, name: &str, bytes: &[u8]) -> Result<bool> {
    if recover(dir, name)?.as_deref() == Some(bytes) {
        return Ok(false);
    }
    commit(dir, name, bytes)?;
    Ok(true)
}

/// Reads `name` (after recovery), passes the content to `edit` and writes
/// what it returns, if that differs. Returns whether anything changed.
pub fn update_in<D, E, F>(dir: &mut D, name: &str, edit: F) -> Result<bool, E>
where
    D: Dir + ?Sized,
    E: From<Error>,
    F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
{
    let current = read_in(dir, name)?;
    let new = edit(&current)?;
    if new == current {
        return Ok(false);
    }
    commit(dir, name, &new)?;
    Ok(true)
}

/// Steps 1 to 4.
fn commit<D: Dir + ?Sized>(dir: &mut D, name: &str, bytes: &[u8]) -> Result<()> {
    let pending = pending_name(name);
    let checksum = checksum_name(name);
    write(dir, &pending, bytes)?;
    sync(dir, &pending)?;
    write(dir, &checksum, &checksum_line(name, bytes))?;
    sync(dir, &checksum)?;
    sync_dir(dir, name)?;
    finish(dir, name, bytes)
}

/// Steps 3 and 4, with a durable, verified copy of `bytes` beside `name`.
fn finish<D: Dir + ?Sized>(dir: &mut D, name: &str, bytes: &[u8]) -> Result<()> {
    write(dir, name, bytes)?;
    sync(dir, name)?;
    sync_dir(dir, name)?;
    remove(dir, &checksum_name(name))?;
    remove(dir, &pending_name(name))?;
    sync_dir(dir, name)
}

/// Finishes a committed write or discards an uncommitted one, and returns
/// the content of `name`, if any.
fn recover<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<Option<Vec<u8>>> {
    let pending = pending_name(name);
    let checksum = checksum_name(name);
    match read(dir, &checksum)? {
        Some(line) => match read(dir, &pending)? {
            Some(bytes) if line == checksum_line(name, &bytes) => {
                sync(dir, &pending)?;
                sync(dir, &checksum)?;
                sync_dir(dir, name)?;
                finish(dir, name, &bytes)?;
                return Ok(Some(bytes));
            }
            _ => {
                remove(dir, &checksum)?;
                remove(dir, &pending)?;
                sync_dir(dir, name)?;
            }
        },
        None => {
            let leftover = dir
                .exists(&pending)
                .map_err(|source| io_error("looking for", dir, &pending, source))?;
            if leftover {
                remove(dir, &pending)?;
                sync_dir(dir, name)?;
            }
        }
    }
    read(dir, name)
}

fn io_error<D: Dir + ?Sized>(action: &str, dir: &D, name: &str, source: io::Error) -> Error {
    Error::Io {
        action: format!("{action} {}", dir.display(name)),
        source,
    }
}

fn read<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<Option<Vec<u8>>> {
    dir.read(name)
        .map_err(|source| io_error("reading", dir, name, source))
}

fn write<D: Dir + ?Sized>(dir: &mut D, name: &str, bytes: &[u8]) -> Result<()> {
    dir.write(name, bytes)
        .map_err(|source| io_error("writing", dir, name, source))
}

fn sync<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<()> {
    dir.sync(name)
        .map_err(|source| io_error("flushing", dir, name, source))
}

fn remove<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<()> {
    dir.remove(name)
        .map_err(|source| io_error("removing", dir, name, source))
}

fn sync_dir<D: Dir + ?Sized>(dir: &mut D, name: &str) -> Result<()> {
    dir.sync_dir()
        .map_err(|source| io_error("flushing the directory of", dir, name, source))
}

/// A directory of a mounted filesystem.
#[derive(Debug, Clone)]
pub struct FsDir {
    path: PathBuf,
}

impl FsDir {
    pub fn new(path: &Path) -> Self {
        FsDir {
            path: path.to_path_buf(),
        }
    }
}

fn found<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Dir for FsDir {
    fn display(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }

    fn exists(&mut self, name: &str) -> io::Result<bool> {
        Ok(found(fs::symlink_metadata(self.path.join(name)))?.is_some())
    }

    fn read(&mut self, name: &str) -> io::Result<Option<Vec<u8>>> {
        found(fs::read(self.path.join(name)))
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        File::create(self.path.join(name))?.write_all(bytes)
    }

    /// `fsync` through a new descriptor: Linux flushes the inode, whichever
    /// descriptor wrote it.
    fn sync(&mut self, name: &str) -> io::Result<()> {
        File::open(self.path.join(name))?.sync_all()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        found(fs::remove_file(self.path.join(name))).map(drop)
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// A file in a mounted directory, read and written by the protocol under a
/// `flock` that every reader and writer of it takes.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    name: String,
    lock: PathBuf,
}

impl Store {
    /// The file `name` in `dir`, serialised by a lock on `lock_path`, which
    /// should be outside `dir`'s filesystem (its directory is created when
    /// missing).
    pub fn new(dir: &Path, name: &str, lock_path: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            lock: lock_path.to_path_buf(),
        }
    }

    /// The device's `config.json` under `root`: `/mnt/boot/config.json`,
    /// locked by `/run/baleen/config.lock`.
    pub fn on_device(root: &Path) -> Self {
        Store::new(&root.join(BOOT_DIR), CONFIG_JSON, &root.join(LOCK_FILE))
    }

    /// The stored file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// The file's content, after finishing or discarding an interrupted write.
    pub fn read(&self) -> Result<Vec<u8>> {
        let _lock = self.lock()?;
        read_in(&mut FsDir::new(&self.dir), &self.name)
    }

    /// Replaces the content with `bytes`; returns whether it changed.
    pub fn write(&self, bytes: &[u8]) -> Result<bool> {
        let _lock = self.lock()?;
        write_in(&mut FsDir::new(&self.dir), &self.name, bytes)
    }

    /// Reads, edits and writes back under one lock, so concurrent updates
    /// never lose each other's changes. Returns whether the content changed.
    pub fn update<E, F>(&self, edit: F) -> Result<bool, E>
    where
        E: From<Error>,
        F: FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    {
        let _lock = self.lock()?;
        update_in(&mut FsDir::new(&self.dir), &self.name, edit)
    }

    /// Takes the lock; it is released when the returned descriptor closes.
    fn lock(&self) -> Result<File> {
        let path = &self.lock;
        let io = |action: &str, source| Error::Io {
            action: format!("{action} {}", path.display()),
            source,
        };
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| io("opening", e))?;
        loop {
            match flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(io("locking", errno.into())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
