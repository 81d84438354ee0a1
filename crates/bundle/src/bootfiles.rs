//! Boot file archives: the uncompressed content of the `boot` payload.
//!
//! A boot partition is FAT: regular files and directories, no links, no owners. So instead of
//! tar this is a list of `(kind, relative path, mode, bytes)` entries with length-prefixed
//! framing, all integers little-endian:
//!
//! ```text
//! magic     8 bytes  "BALEENF\0"
//! entry*    kind u8: 1 = directory, 2 = regular file
//!           path_len u16, path (UTF-8, path_len bytes)
//!           mode u32 (permission bits only, <= 0o7777)
//!           file only: size u64, then size bytes of content
//! end       kind u8 = 0, and nothing after it
//! ```
//!
//! Paths are relative, `/`-separated, 1 to 1024 bytes, with no empty, `.` or `..` component
//! and no NUL or `\`; each appears once. Parents need not be listed before their contents.
//! [`pack_dir`] writes a directory's entries depth-first in byte order of names, each directory
//! before its contents, so the same tree always gives the same bytes.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::Error;

/// The first eight bytes of a boot file archive.
pub const ARCHIVE_MAGIC: [u8; 8] = *b"BALEENF\0";
/// Longest entry path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

const KIND_END: u8 = 0;
const KIND_DIR: u8 = 1;
const KIND_FILE: u8 = 2;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A regular file with content.
    File,
}

/// Writes a boot file archive entry by entry.
pub struct ArchiveWriter<W: Write> {
    out: W,
    seen: HashSet<String>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive (writes the magic).
    pub fn new(mut out: W) -> Result<Self, Error> {
        out.write_all(&ARCHIVE_MAGIC)
            .map_err(|source| write_err(Path::new(""), source))?;
        Ok(Self {
            out,
            seen: HashSet::new(),
        })
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), Error> {
        self.entry_header(KIND_DIR, path, mode, None)
    }

    /// Adds a file of exactly `size` bytes read from `content`; fails if `content` holds fewer
    /// or more bytes.
    pub fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
    ) -> Result<(), Error> {
        self.add_file_from(path, mode, size, content, Path::new(path))
    }

    /// Writes the end entry and returns the writer.
    pub fn finish(mut self) -> Result<W, Error> {
        self.out
            .write_all(&[KIND_END])
            .and_then(|()| self.out.flush())
            .map_err(|source| write_err(Path::new(""), source))?;
        Ok(self.out)
    }

    fn add_file_from(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        content: &mut dyn Read,
        origin: &Path,
    ) -> Result<(), Error> {
        self.entry_header(KIND_FILE, path, mode, Some(size))?;
        let read_err = |source| Error::BootFiles {
            action: "reading boot file",
            path: origin.to_owned(),
            source,
        };
        let mut limited = content.take(size);
        let mut buf = vec![0u8; 64 << 10];
        let mut copied = 0u64;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            self.out
                .write_all(&buf[..n])
                .map_err(|source| write_err(Path::new(path), source))?;
            copied += n as u64;
        }
        let changed = |detail: String| Error::InvalidInput {
            reason: format!("boot file {}: {detail}", origin.display()),
        };
        if copied != size {
            return Err(changed(format!(
                "it ended after {copied} of its {size} bytes (did it change while being packed?)"
            )));
        }
        let mut extra = [0u8; 1];
        if limited.into_inner().read(&mut extra).map_err(read_err)? != 0 {
            return Err(changed(format!(
                "it has more than its {size} bytes (did it change while being packed?)"
            )));
        }
        Ok(())
    }

    fn entry_header(
        &mut self,
        kind: u8,
        path: &str,
        mode: u32,
        size: Option<u64>,
    ) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidInput {
            reason: format!("boot file archive entry {path:?}: {reason}"),
        };
        check_path(path).map_err(invalid)?;
        if mode > 0o7777 {
            return Err(invalid(format!("mode {mode:#o} has bits beyond 0o7777")));
        }
        if !self.seen.insert(path.to_owned()) {
            return Err(invalid("it is added twice".into()));
        }
        let mut header = Vec::with_capacity(1 + 2 + path.len() + 4 + 8);
        header.push(kind);
        header.extend_from_slice(&(path.len() as u16).to_le_bytes());
        header.extend_from_slice(path.as_bytes());
        header.extend_from_slice(&mode.to_le_bytes());
        if let Some(size) = size {
            header.extend_from_slice(&size.to_le_bytes());
        }
        self.out
            .write_all(&header)
            .map_err(|source| write_err(Path::new(path), source))
    }
}

fn write_err(path: &Path, source: io::Error) -> Error {
    Error::BootFiles {
        action: "writing boot file archive entry",
        path: path.to_owned(),
        source,
    }
}

/// Writes the archive of everything under `dir` (not `dir` itself) to `out`.
///
/// Only regular files and directories are allowed; names must be UTF-8. Modes are the
/// permission bits on disk.
pub fn pack_dir<W: Write>(dir: &Path, out: W) -> Result<W, Error> {
    let mut writer = ArchiveWriter::new(out)?;
    pack_tree(dir, "", &mut writer)?;
    writer.finish()
}

fn pack_tree<W: Write>(
    dir: &Path,
    prefix: &str,
    writer: &mut ArchiveWriter<W>,
) -> Result<(), Error> {
    let list_err = |source| Error::BootFiles {
        action: "listing boot file directory",
        path: dir.to_owned(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(list_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(list_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(Error::InvalidInput {
                reason: format!("boot file {} has a name that is not UTF-8", path.display()),
            });
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(|source| Error::BootFiles {
            action: "reading boot file",
            path: path.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            writer.add_dir(&rel, mode)?;
            pack_tree(&path, &rel, writer)?;
        } else if meta.is_file() {
            let mut file = fs::File::open(&path).map_err(|source| Error::BootFiles {
                action: "reading boot file",
                path: path.clone(),
                source,
            })?;
            writer.add_file_from(&rel, mode, meta.len(), &mut file, &path)?;
        } else {
            return Err(Error::InvalidInput {
                reason: format!(
                    "boot file {} is not a regular file or directory: a boot file archive holds \
                     only those (the boot partition is FAT)",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

/// One entry of an archive being read; a file entry reads as its content.
pub struct Entry<'a, R> {
    /// The entry's relative path.
    pub path: String,
    /// Directory or file.
    pub kind: EntryKind,
    /// Its permission bits.
    pub mode: u32,
    /// Content length (0 for a directory).
    pub size: u64,
    reader: &'a mut R,
    remaining: &'a mut u64,
}

impl<R: Read> Read for Entry<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(*self.remaining).unwrap_or(usize::MAX));
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                Error::InvalidBootArchive {
                    reason: format!(
                        "it ends inside the content of {:?} ({} bytes missing)",
                        self.path, self.remaining
                    ),
                },
            ));
        }
        *self.remaining -= n as u64;
        Ok(n)
    }
}

/// Reads a boot file archive entry by entry, checking each header.
///
/// Reading from a [`PayloadReader`](crate::PayloadReader), the payload's own checks run as the
/// archive is read; [`next_entry`](Self::next_entry) returns `None` only after the end entry
/// and the end of the stream, so only after the payload verified.
pub struct ArchiveReader<R> {
    inner: R,
    /// Content bytes of the previous file entry not yet read.
    remaining: u64,
    current: String,
    seen: HashSet<String>,
    ended: bool,
}

impl<R: Read> ArchiveReader<R> {
    /// Reads and checks the magic.
    pub fn new(mut inner: R) -> Result<Self, Error> {
        let mut magic = [0u8; 8];
        read_exact(&mut inner, &mut magic, "the magic")?;
        if magic != ARCHIVE_MAGIC {
            return Err(invalid(format!(
                "it starts with {magic:02x?} instead of \"BALEENF\\0\""
            )));
        }
        Ok(Self {
            inner,
            remaining: 0,
            current: String::new(),
            seen: HashSet::new(),
            ended: false,
        })
    }

    /// The next entry, or `None` after the end entry. Unread content of the previous entry
    /// is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_, R>>, Error> {
        if self.ended {
            return Ok(None);
        }
        if self.remaining > 0 {
            let skipped = io::copy(&mut (&mut self.inner).take(self.remaining), &mut io::sink())
                .map_err(|e| from_io(e, "the content of the previous entry"))?;
            if skipped < self.remaining {
                return Err(invalid(format!(
                    "it ends inside the content of {:?}",
                    self.current
                )));
            }
            self.remaining = 0;
        }
        let mut kind = [0u8; 1];
        read_exact(&mut self.inner, &mut kind, "an entry header")?;
        let kind = match kind[0] {
            KIND_END => {
                let mut extra = [0u8; 1];
                loop {
                    match self.inner.read(&mut extra) {
                        Ok(0) => break,
                        Ok(_) => return Err(invalid("it has bytes after its end entry".into())),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(from_io(e, "the end of the archive")),
                    }
                }
                self.ended = true;
                return Ok(None);
            }
            KIND_DIR => EntryKind::Directory,
            KIND_FILE => EntryKind::File,
            other => return Err(invalid(format!("entry kind {other} is unknown"))),
        };
        let mut len = [0u8; 2];
        read_exact(&mut self.inner, &mut len, "an entry header")?;
        let mut path = vec![0u8; usize::from(u16::from_le_bytes(len))];
        read_exact(&mut self.inner, &mut path, "an entry path")?;
        let path =
            String::from_utf8(path).map_err(|_| invalid("an entry path is not UTF-8".into()))?;
        check_path(&path).map_err(|reason| invalid(format!("entry {path:?}: {reason}")))?;
        let mut word = [0u8; 4];
        read_exact(&mut self.inner, &mut word, "an entry header")?;
        let mode = u32::from_le_bytes(word);
        if mode > 0o7777 {
            return Err(invalid(format!(
                "entry {path:?}: mode {mode:#o} has bits beyond 0o7777"
            )));
        }
        let size = if kind == EntryKind::File {
            let mut size = [0u8; 8];
            read_exact(&mut self.inner, &mut size, "an entry header")?;
            u64::from_le_bytes(size)
        } else {
            0
        };
        if !self.seen.insert(path.clone()) {
            return Err(invalid(format!("entry {path:?} appears twice")));
        }
        self.remaining = size;
        self.current.clone_from(&path);
        Ok(Some(Entry {
            path,
            kind,
            mode,
            size,
            reader: &mut self.inner,
            remaining: &mut self.remaining,
        }))
    }

    /// Writes every entry under `dest`, which should be a new, empty directory the caller
    /// owns (a staging directory; files are never overwritten). Modes are applied at creation,
    /// subject to the umask; FAT ignores them. Each file is flushed to disk. Returns the
    /// entries' relative paths in archive order.
    ///
    /// On error, what was written so far stays: remove `dest`. When reading from a payload,
    /// `Ok` also means the payload verified.
    pub fn unpack(self, dest: &Path) -> Result<Vec<String>, Error> {
        self.unpack_with(dest, |_| ())
    }

    /// [`unpack`](Self::unpack), calling `written(path)` after each entry is on disk (progress
    /// reports, test pause points).
    pub fn unpack_with(
        mut self,
        dest: &Path,
        mut on_written: impl FnMut(&str),
    ) -> Result<Vec<String>, Error> {
        let mut written = Vec::new();
        while let Some(mut entry) = self.next_entry()? {
            let target = dest.join(&entry.path);
            match entry.kind {
                EntryKind::Directory => {
                    let made = fs::DirBuilder::new()
                        .recursive(false)
                        .mode(entry.mode & 0o777)
                        .create(&target);
                    match made {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                        Err(e) => return Err(unpack_err("creating directory", &target)(e)),
                    }
                }
                EntryKind::File => {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)
                            .map_err(unpack_err("creating directory", parent))?;
                    }
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(entry.mode)
                        .open(&target)
                        .map_err(unpack_err("creating file", &target))?;
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        let n = match entry.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(from_io(e, "a file's content")),
                        };
                        file.write_all(&buf[..n])
                            .map_err(unpack_err("writing file", &target))?;
                    }
                    file.sync_all()
                        .map_err(unpack_err("writing file", &target))?;
                }
            }
            on_written(&entry.path);
            written.push(entry.path);
        }
        Ok(written)
    }
}

fn unpack_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> Error + 'p {
    move |source| Error::BootFiles {
        action,
        path: path.to_owned(),
        source,
    }
}

/// `read_exact` whose end-of-data error names what was being read.
fn read_exact(reader: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), Error> {
    reader.read_exact(buf).map_err(|e| from_io(e, what))
}

/// An I/O error while reading the archive: this crate's error if one is inside (the payload
/// failed verification), a truncation, or a read failure.
fn from_io(err: io::Error, what: &'static str) -> Error {
    Error::unwrap_io(err, |source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            invalid(format!("it ends inside {what}"))
        } else {
            Error::BootArchiveRead { what, source }
        }
    })
}

fn invalid(reason: String) -> Error {
    Error::InvalidBootArchive { reason }
}

/// The path rules of the format.
fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(format!("the path is not 1 to {MAX_PATH_LEN} bytes long"));
    }
    if path.contains(['\0', '\\']) {
        return Err("the path contains NUL or a backslash".into());
    }
    if path.starts_with('/') {
        return Err("the path is absolute".into());
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err("the path has an empty, \".\" or \"..\" component".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut ArchiveWriter<&mut Vec<u8>>)) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut writer = ArchiveWriter::new(&mut bytes).unwrap();
        build(&mut writer);
        writer.finish().unwrap();
        bytes
    }

    #[test]
    fn writes_the_documented_bytes() {
        let bytes = archive(|w| {
            w.add_dir("EFI", 0o755).unwrap();
            w.add_file("EFI/a", 0o644, 2, &mut &b"hi"[..]).unwrap();
        });
        let mut expected = b"BALEENF\0".to_vec();
        expected.extend_from_slice(b"\x01\x03\x00EFI\xed\x01\x00\x00");
        expected.extend_from_slice(b"\x02\x05\x00EFI/a\xa4\x01\x00\x00");
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(b"hi\x00");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn reads_back_entries_and_content() {
        let bytes = archive(|w| {
            w.add_dir("d", 0o700).unwrap();
            w.add_file("d/one", 0o600, 3, &mut &b"abc"[..]).unwrap();
            w.add_file("two", 0o644, 0, &mut &b""[..]).unwrap();
        });
        let mut reader = ArchiveReader::new(&bytes[..]).unwrap();
        let e = reader.next_entry().unwrap().unwrap();
        assert_eq!(
            (e.path.as_str(), e.kind, e.mode),
            ("d", EntryKind::Directory, 0o700)
        );
        let mut e = reader.next_entry().unwrap().unwrap();
        let mut content = String::new();
        e.read_to_string(&mut content).unwrap();
        assert_eq!((e.path.as_str(), content.as_str()), ("d/one", "abc"));
        // "two" is left unread; the reader skips it.
        assert_eq!(reader.next_entry().unwrap().unwrap().path, "two");
        assert!(reader.next_entry().unwrap().is_none());
        assert!(reader.next_entry().unwrap().is_none());
    }

    #[test]
    fn writer_refuses_bad_paths_modes_and_sizes() {
        let mut sink = Vec::new();
        let mut w = ArchiveWriter::new(&mut sink).unwrap();
        for (path, reason) in [
            ("/abs", "the path is absolute"),
            ("a/../b", "the path has an empty, \".\" or \"..\" component"),
            ("a//b", "the path has an empty, \".\" or \"..\" component"),
            ("", "the path is not 1 to 1024 bytes long"),
            ("a\\b", "the path contains NUL or a backslash"),
        ] {
            assert_eq!(
                w.add_dir(path, 0o755).unwrap_err().to_string(),
                format!("cannot make the bundle: boot file archive entry {path:?}: {reason}")
            );
        }
        assert!(w.add_dir("x", 0o10755).is_err());
        w.add_dir("x", 0o755).unwrap();
        assert!(
            w.add_dir("x", 0o755)
                .unwrap_err()
                .to_string()
                .ends_with("it is added twice")
        );
        assert_eq!(
            w.add_file("short", 0o644, 5, &mut &b"abc"[..])
                .unwrap_err()
                .to_string(),
            "cannot make the bundle: boot file short: it ended after 3 of its 5 bytes (did it \
             change while being packed?)"
        );
        assert!(w.add_file("long", 0o644, 2, &mut &b"abc"[..]).is_err());
    }

    #[test]
    fn reader_refuses_damage() {
        let good = archive(|w| {
            w.add_file("f", 0o644, 3, &mut &b"abc"[..]).unwrap();
        });
        let read_all = |bytes: &[u8]| -> Result<(), Error> {
            let mut r = ArchiveReader::new(bytes)?;
            while r.next_entry()?.is_some() {}
            Ok(())
        };
        read_all(&good).unwrap();
        for cut in 0..good.len() {
            assert!(
                read_all(&good[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(
            read_all(&extra).unwrap_err().to_string(),
            "boot file archive is invalid: it has bytes after its end entry"
        );
        let mut evil = b"BALEENF\0\x02\x04\x00../x\xa4\x01\x00\x00".to_vec();
        evil.extend_from_slice(&0u64.to_le_bytes());
        evil.push(0);
        assert_eq!(
            read_all(&evil).unwrap_err().to_string(),
            "boot file archive is invalid: entry \"../x\": the path has an empty, \".\" or \"..\" \
             component"
        );
        let mut twice = b"BALEENF\0".to_vec();
        twice.extend_from_slice(b"\x01\x01\x00d\xed\x01\x00\x00");
        twice.extend_from_slice(b"\x01\x01\x00d\xed\x01\x00\x00\x00");
        assert_eq!(
            read_all(&twice).unwrap_err().to_string(),
            "boot file archive is invalid: entry \"d\" appears twice"
        );
    }

    #[test]
    fn packs_and_unpacks_a_directory() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("EFI/BOOT")).unwrap();
        fs::create_dir(src.path().join("empty")).unwrap();
        fs::write(src.path().join("EFI/BOOT/BOOTX64.EFI"), vec![7u8; 100_000]).unwrap();
        fs::write(src.path().join("config.txt"), "x=1\n").unwrap();
        fs::set_permissions(
            src.path().join("config.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let bytes = pack_dir(src.path(), Vec::new()).unwrap();
        // Deterministic.
        assert_eq!(pack_dir(src.path(), Vec::new()).unwrap(), bytes);

        let dest = tempfile::tempdir().unwrap();
        let paths = ArchiveReader::new(&bytes[..])
            .unwrap()
            .unpack(dest.path())
            .unwrap();
        assert_eq!(
            paths,
            [
                "EFI",
                "EFI/BOOT",
                "EFI/BOOT/BOOTX64.EFI",
                "config.txt",
                "empty"
            ]
        );
        assert_eq!(
            fs::read(dest.path().join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            vec![7u8; 100_000]
        );
        assert!(dest.path().join("empty").is_dir());
        let mode = fs::metadata(dest.path().join("config.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // Unpacking again over the same files refuses to overwrite.
        let again = ArchiveReader::new(&bytes[..]).unwrap().unpack(dest.path());
        assert!(again.unwrap_err().to_string().starts_with("creating file "));
    }

    #[test]
    fn pack_refuses_links() {
        let src = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("target", src.path().join("link")).unwrap();
        let err = pack_dir(src.path(), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("is not a regular file or directory"), "{err}");
    }
}
