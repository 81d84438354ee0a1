//! The initramfs as a set of entries written out as a newc cpio archive.

use crate::{Error, Result, elf, modules};
use bootstage::StageConfig;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDevice { major: u32, minor: u32, mode: u32 },
}

/// An initramfs under construction: absolute path → entry. Parents are added
/// implicitly; entries are written in path order, so parents come first.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for part in path
            .split('/')
            .take(path.split('/').count().saturating_sub(1))
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry::Dir);
        }
        self.entries.insert(path, entry);
    }

    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add(path, Entry::File { data, mode });
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the archive zstd-compressed: the firmware reads the unified
    /// kernel image from FAT slowly, and the kernel unpacks zstd quickly.
    pub fn write_compressed<W: Write>(&self, out: W) -> std::io::Result<W> {
        let encoder = zstd::Encoder::new(out, 19)?;
        self.write_cpio(encoder)?.finish()
    }

    /// Writes the newc archive, uncompressed.
    pub fn write_cpio<W: Write>(&self, mut out: W) -> std::io::Result<W> {
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let builder = cpio::newc::Builder::new(path)
                .ino(ino as u32 + 1)
                .uid(0)
                .gid(0)
                .mtime(0);
            let (builder, data): (_, &[u8]) = match entry {
                Entry::Dir => (builder.mode(0o040755).nlink(2), &[]),
                Entry::File { data, mode } => (builder.mode(0o100000 | mode).nlink(1), data),
                Entry::Symlink(target) => (builder.mode(0o120777).nlink(1), target.as_bytes()),
                Entry::CharDevice { major, minor, mode } => (
                    builder
                        .mode(0o020000 | mode)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor),
                    &[],
                ),
            };
            let mut w = builder.write(out, data.len() as u32);
            w.write_all(data)?;
            out = w.finish()?;
        }
        cpio::newc::trailer(out)
    }
}

/// Programs from the target root the boot stage runs.
pub const TOOLS: [&str; 4] = [
    "/sbin/e2fsck",
    "/sbin/tune2fs",
    "/sbin/resize2fs",
    "/sbin/fsck.fat",
];

/// What goes into one of `baleen-boot`'s initramfs images.
pub struct Spec<'a> {
    /// The boot stage in the unified kernel image, or a root's own initrd.
    pub role: bootstage::Role,
    /// The target root filesystem (staging tree).
    pub root: &'a Path,
    /// The `baleen-boot` binary (static).
    pub stage_binary: &'a Path,
    pub os_version: String,
    pub device: String,
    pub development: bool,
    pub modules: &'a [String],
    /// The command line the root's kernel gets (before `root=UUID=`).
    pub root_cmdline: String,
}

/// Assembles the initramfs: `/init`, modules, e2fsprogs and dosfstools with
/// their libraries, the stage config, and busybox on development images.
pub fn assemble(spec: &Spec) -> Result<Initramfs> {
    let mut fs = Initramfs::default();
    let init = std::fs::read(spec.stage_binary).map_err(|source| Error::Read {
        path: spec.stage_binary.to_owned(),
        source,
    })?;
    if elf::needs(spec.stage_binary, &init)?.interpreter.is_some() {
        return Err(Error::NotStatic {
            path: spec.stage_binary.to_owned(),
        });
    }
    fs.add_file("/init", init, 0o755);
    for dir in ["/dev", "/proc", "/sys", "/run", "/sysroot", "/tmp"] {
        fs.add(dir, Entry::Dir);
    }
    fs.add(
        "/dev/console",
        Entry::CharDevice {
            major: 5,
            minor: 1,
            mode: 0o600,
        },
    );
    fs.add(
        "/dev/null",
        Entry::CharDevice {
            major: 1,
            minor: 3,
            mode: 0o666,
        },
    );
    fs.add("/etc/mtab", Entry::Symlink("/proc/self/mounts".into()));
    // No RTC can be trusted at this point: keep e2fsck from acting on odd times.
    fs.add_file(
        "/etc/e2fsck.conf",
        b"[options]\n\tbroken_system_clock = 1\n".to_vec(),
        0o644,
    );

    let (version, waves) = modules::resolve(spec.root, spec.modules)?;
    let mut module_waves = Vec::new();
    for wave in &waves {
        let mut targets = Vec::new();
        for rel in wave {
            let source = spec.root.join("usr/lib/modules").join(&version).join(rel);
            let target = modules::initramfs_path(&version, rel)
                .to_string_lossy()
                .into_owned();
            fs.add_file(&target, modules::read_uncompressed(&source)?, 0o644);
            targets.push(target);
        }
        module_waves.push(targets);
    }

    // The root role only mounts a filesystem the boot stage already checked.
    let mut programs: Vec<&str> = match spec.role {
        bootstage::Role::Stage => TOOLS.to_vec(),
        bootstage::Role::Root => Vec::new(),
    };
    let busybox = spec.development && bootstage::resolve_in_root(spec.root, "bin/busybox").is_ok();
    if busybox {
        programs.push("/bin/busybox");
        fs.add("/bin/sh", Entry::Symlink("busybox".into()));
    }
    for file in elf::closure(spec.root, &programs)? {
        let real = bootstage::resolve_in_root(spec.root, file.trim_start_matches('/'))?;
        let data = std::fs::read(&real).map_err(|source| Error::Read {
            path: real.clone(),
            source,
        })?;
        fs.add_file(&file, data, 0o755);
    }

    let config = StageConfig {
        role: spec.role,
        os_version: spec.os_version.clone(),
        device: spec.device.clone(),
        development: spec.development,
        module_waves,
        root_cmdline: spec.root_cmdline.clone(),
    };
    let json = serde_json::to_vec_pretty(&config).expect("stage config serializes");
    fs.add_file(bootstage::CONFIG_PATH, json, 0o644);
    Ok(fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implicit_and_ordered_first() {
        let mut fs = Initramfs::default();
        fs.add_file("/usr/lib/modules/6/a.ko", vec![1], 0o644);
        fs.add(
            "/dev/console",
            Entry::CharDevice {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        let paths: Vec<&String> = fs.entries.keys().collect();
        assert_eq!(
            paths,
            vec![
                "dev",
                "dev/console",
                "usr",
                "usr/lib",
                "usr/lib/modules",
                "usr/lib/modules/6",
                "usr/lib/modules/6/a.ko"
            ]
        );
    }

    #[test]
    fn cpio_round_trips() {
        let mut fs = Initramfs::default();
        fs.add_file("/init", b"hello".to_vec(), 0o755);
        fs.add("/bin/sh", Entry::Symlink("busybox".into()));
        let bytes = fs.write_cpio(Vec::new()).unwrap();
        let mut reader = cpio::NewcReader::new(&bytes[..]).unwrap();
        let mut names = Vec::new();
        loop {
            if reader.entry().is_trailer() {
                break;
            }
            names.push((
                reader.entry().name().to_string(),
                reader.entry().mode(),
                reader.entry().file_size(),
            ));
            reader = cpio::NewcReader::new(reader.finish().unwrap()).unwrap();
        }
        assert_eq!(
            names,
            vec![
                ("bin".into(), 0o040755, 0),
                ("bin/sh".into(), 0o120777, 7),
                ("init".into(), 0o100755, 5)
            ]
        );
    }
}
