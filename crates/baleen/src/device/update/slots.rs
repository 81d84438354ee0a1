//! The device's two roots and the `bootenv` that chooses between them, as the
//! running OS sees them: which slot runs, where each partition is, and the
//! one write that switches slots.

use anyhow::{Context, Result, bail};
use bootenv::{BootEnv, EnvBlock, Slot};
use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

/// The bootenv file on the boot partition, relative to the root.
pub const BOOTENV: &str = "mnt/boot/bootenv";

/// The GPT name (and filesystem label) of a slot's partition.
pub fn label(slot: Slot) -> &'static str {
    match slot {
        Slot::A => layout::label::ROOT_A,
        Slot::B => layout::label::ROOT_B,
    }
}

/// The running root and its partitions, found through `/dev/disk/by-state`
/// (links made only for partitions of the boot disk).
#[derive(Debug, Clone)]
pub struct Slots {
    /// The slot the running OS was booted from.
    pub active: Slot,
    /// Partition device of slot A.
    pub a: PathBuf,
    /// Partition device of slot B.
    pub b: PathBuf,
}

impl Slots {
    /// Reads the `/dev/disk/by-state` links under `root`.
    pub fn probe(root: &Path) -> Result<Slots> {
        let by_state = root.join(layout::BY_STATE.trim_start_matches('/'));
        let resolve = |name: &str| -> Result<PathBuf> {
            let link = by_state.join(name);
            fs::canonicalize(&link).with_context(|| {
                format!(
                    "{} is missing: udev has not linked the boot disk's partitions \
                     (is this a baleen device?)",
                    link.display()
                )
            })
        };
        let a = resolve(layout::label::ROOT_A)?;
        let b = resolve(layout::label::ROOT_B)?;
        let active_dev = resolve("active")?;
        let active = if active_dev == a {
            Slot::A
        } else if active_dev == b {
            Slot::B
        } else {
            bail!(
                "the running root {} is neither {} ({}) nor {} ({})",
                active_dev.display(),
                layout::label::ROOT_A,
                a.display(),
                layout::label::ROOT_B,
                b.display()
            );
        };
        Ok(Slots { active, a, b })
    }

    /// The partition device of `slot`.
    pub fn device(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// The slot that is not running.
    pub fn inactive(&self) -> Slot {
        self.active.other()
    }
}

/// Size in bytes of the block device `dev` (from sysfs, in 512-byte sectors).
pub fn device_size(dev: &Path) -> Result<u64> {
    let name = dev
        .file_name()
        .with_context(|| format!("{} has no device name", dev.display()))?;
    let path = Path::new("/sys/class/block").join(name).join("size");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let sectors: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a number", path.display()))?;
    Ok(sectors * 512)
}

/// The bootenv as stored: the typed balena keys (other keys are kept on writes).
#[derive(Debug, Clone)]
pub struct StoredEnv {
    pub env: BootEnv,
}

/// Reads `<root>/mnt/boot/bootenv`.
pub fn read_bootenv(root: &Path) -> Result<StoredEnv> {
    let path = root.join(BOOTENV);
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let block = EnvBlock::parse(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let env = BootEnv::from_block(&block).with_context(|| format!("reading {}", path.display()))?;
    Ok(StoredEnv { env })
}

/// Writes `env` into the bootenv so that a power cut leaves the old or the new block, never
/// a torn one.
///
/// The balena keys sit in the block's first 512-byte sector, and nothing else changes, so the
/// block is rewritten **in place**, as GRUB's `save_env` does: the disk rewrites that one
/// sector and the FAT's metadata (cluster chain, directory entry size) is never touched. A
/// rename would be worse on FAT: it rewrites directory entries and the allocation table in
/// an order nothing guarantees. When the change spans sectors (other keys in front of ours),
/// or there is no bootenv yet, the new block goes to `bootenv.new`, is synced and renamed
/// over. `staged` runs just before the switching write (a test pause point).
pub fn write_bootenv(root: &Path, env: &BootEnv, staged: impl FnOnce()) -> Result<()> {
    let path = root.join(BOOTENV);
    let old = fs::read(&path).ok();
    let mut block = old
        .as_deref()
        .and_then(|bytes| EnvBlock::parse(bytes).ok())
        .unwrap_or_default();
    env.apply_to(&mut block);
    let bytes = block
        .to_bytes()
        .with_context(|| format!("encoding {}", path.display()))?;
    if let Some(sector) = old.as_deref().and_then(|old| changed_sector(old, &bytes)) {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        staged();
        let range = sector * SECTOR..(sector + 1) * SECTOR;
        file.seek(std::io::SeekFrom::Start(range.start as u64))?;
        file.write_all(&bytes[range])
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let tmp = path.with_extension("new");
    let mut file = fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(file);
    staged();
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    sync_dir(path.parent().unwrap_or(root))?;
    Ok(())
}

const SECTOR: usize = 512;

/// The one sector in which `old` and `new` (both whole blocks) differ, if exactly one does.
/// `Some(0)` also when nothing differs (the write is then harmless).
fn changed_sector(old: &[u8], new: &[u8]) -> Option<usize> {
    if old.len() != new.len() || new.len() % SECTOR != 0 {
        return None;
    }
    let mut changed = old
        .chunks(SECTOR)
        .zip(new.chunks(SECTOR))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i);
    let first = changed.next().unwrap_or(0);
    changed.next().is_none().then_some(first)
}

/// fsync of a directory, so a rename or a new entry in it is on disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootenv_write_is_a_full_block_and_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("mnt/boot")).unwrap();
        let mut block = EnvBlock::new();
        block.set("extra_os_cmdline", "quiet").unwrap();
        fs::write(root.join(BOOTENV), block.to_bytes().unwrap()).unwrap();
        let mut staged = false;
        let env = BootEnv {
            resin_root_part: Slot::B,
            upgrade_available: true,
            bootcount: 0,
        };
        write_bootenv(root, &env, || staged = true).unwrap();
        assert!(staged);
        let bytes = fs::read(root.join(BOOTENV)).unwrap();
        assert_eq!(bytes.len(), bootenv::BLOCK_SIZE);
        let stored = read_bootenv(root).unwrap();
        assert_eq!(stored.env, env);
        let block = EnvBlock::parse(&bytes).unwrap();
        assert_eq!(block.get("extra_os_cmdline"), Some("quiet"));
        assert!(!root.join("mnt/boot/bootenv.new").exists());
    }

    #[test]
    fn a_switch_rewrites_one_sector_in_place() {
        let old = EnvBlock::new();
        let mut new = EnvBlock::new();
        BootEnv {
            resin_root_part: Slot::B,
            upgrade_available: true,
            bootcount: 0,
        }
        .apply_to(&mut new);
        let (old, new) = (old.to_bytes().unwrap(), new.to_bytes().unwrap());
        assert_eq!(changed_sector(&old, &new), Some(0));
        assert_eq!(changed_sector(&old, &old), Some(0));
        let mut both = new;
        both[700] = b'x';
        assert_eq!(changed_sector(&old, &both), None, "two sectors differ");
        assert_eq!(changed_sector(&old[..100], &new), None);
    }

    #[test]
    fn missing_bootenv_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_bootenv(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("mnt/boot/bootenv"));
    }
}
