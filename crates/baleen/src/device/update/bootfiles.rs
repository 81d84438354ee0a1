//! Both releases' boot files on the boot partition.
//!
//! The firmware boots the files at the partition's top (`EFI/BOOT/BOOTX64.EFI`,
//! and `os-release`, `image-version-info`, `device-type.json` beside them):
//! the *live* set. Each slot's own set is kept under `baleen/slot-<A|B>/`. An
//! install stages the new release's set in its slot's directory and leaves
//! the live set alone; the live set becomes the new one only when the update
//! is committed, and is put back from the old slot's directory on a rollback.
//! So the files the running root needs are never overwritten by an install
//! (balenaOS's `1-bootfiles` replaces them before the reboot, and a rollback
//! has to copy them back).

use anyhow::{Context, Result, bail};
use bootenv::Slot;
use bundle::PayloadReader;
use bundle::bootfiles::ArchiveReader;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::progress::Progress;
use super::slots::sync_dir;

/// The boot partition, relative to the root.
const BOOT: &str = "mnt/boot";
/// Where the slots' sets live, relative to the boot partition.
const SETS: &str = "baleen";
/// Written last into a complete set.
const COMPLETE: &str = ".complete";
/// Room left free on the boot partition after staging (as balenaOS's `1-bootfiles`).
const MARGIN: u64 = 512 * 1024;

/// The live files that belong to a release (see `RELEASE_BOOT_FILES` of `bundle create`).
fn is_release_file(rel: &str) -> bool {
    crate::bundlecmd::is_release_boot_file(rel)
}

fn sets_dir(root: &Path) -> PathBuf {
    root.join(BOOT).join(SETS)
}

/// The directory holding `slot`'s boot files.
pub fn set_dir(root: &Path, slot: Slot) -> PathBuf {
    sets_dir(root).join(format!("slot-{}", slot.as_str()))
}

fn staging_dir(root: &Path, slot: Slot) -> PathBuf {
    sets_dir(root).join(format!("slot-{}.new", slot.as_str()))
}

fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE).is_file()
}

/// Files under `dir`, as paths relative to it (`/`-separated), sorted.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        let entries = match fs::read_dir(&here) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", here.display())),
        };
        for entry in entries {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(child);
            } else {
                out.push(child.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn tree_size(dir: &Path) -> u64 {
    files_under(dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|f| fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// The live files of the running release, relative to the boot partition.
fn live_release_files(root: &Path) -> Result<Vec<String>> {
    Ok(files_under(&root.join(BOOT))?
        .into_iter()
        .filter(|f| !f.starts_with(&format!("{SETS}/")) && is_release_file(f))
        .collect())
}

/// Removes the files `fsck.fat -a` makes of lost cluster chains (`FSCK0000.REC`… in the
/// partition's top directory). On the boot partition they are the remains of writes a power
/// cut interrupted (typically a half-staged boot-file set): the boot stage's check keeps them
/// as files rather than free space, and without this each cut would leak their room until
/// updates no longer fit. Returns the bytes freed.
pub fn remove_recovered_chains(root: &Path) -> Result<u64> {
    let boot = root.join(BOOT);
    let mut freed = 0;
    for entry in fs::read_dir(&boot).with_context(|| format!("listing {}", boot.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_ascii_uppercase();
        let recovered = name.len() == 12
            && name.starts_with("FSCK")
            && name.ends_with(".REC")
            && name[4..8].bytes().all(|b| b.is_ascii_digit());
        if recovered && entry.file_type()?.is_file() {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            tracing::info!(
                "removed {} ({size} bytes): clusters fsck.fat recovered after a power cut",
                entry.path().display()
            );
            freed += size;
        }
    }
    Ok(freed)
}

/// Refuses an install whose boot files would not fit on the boot partition.
pub fn check_space(root: &Path, active: Slot, target: Slot, new_size: u64) -> Result<()> {
    let boot = root.join(BOOT);
    remove_recovered_chains(root)?;
    let stat = rustix::fs::statvfs(&boot)
        .with_context(|| format!("reading the free space of {}", boot.display()))?;
    let free = stat.f_bavail * stat.f_frsize;
    let reclaimed = tree_size(&set_dir(root, target)) + tree_size(&staging_dir(root, target));
    let mut needed = new_size + MARGIN;
    if !is_complete(&set_dir(root, active)) {
        needed += live_release_files(root)?
            .iter()
            .filter_map(|f| fs::metadata(boot.join(f)).ok())
            .map(|m| m.len())
            .sum::<u64>();
    }
    // Each file takes whole clusters: allow one more per file.
    needed += 32 * stat.f_frsize;
    if needed > free + reclaimed {
        bail!(
            "the boot partition {} has {:.1} MiB free ({:.1} MiB more after removing slot {}'s \
             old boot files) but the update needs {:.1} MiB for its boot files; remove files \
             you added to {} and try again",
            boot.display(),
            free as f64 / MIB,
            reclaimed as f64 / MIB,
            target,
            needed as f64 / MIB,
            boot.display()
        );
    }
    Ok(())
}

/// Makes sure the running release's boot files are kept in its slot's directory (copied
/// from the live set the first time), so they can be put back after a rollback.
pub fn keep_running_set(root: &Path, active: Slot) -> Result<()> {
    let dir = set_dir(root, active);
    if is_complete(&dir) {
        return Ok(());
    }
    let staging = staging_dir(root, active);
    remove_tree(&staging)?;
    remove_tree(&dir)?;
    sync_fs(&root.join(BOOT))?;
    let boot = root.join(BOOT);
    for rel in live_release_files(root)? {
        let target = staging.join(&rel);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        copy_synced(&boot.join(&rel), &target)?;
    }
    finish_set(&staging, &dir)
}

/// Unpacks the `boot` payload into `slot`'s directory (through a staging directory renamed
/// into place once the payload verified).
pub fn stage<R: Read>(
    root: &Path,
    slot: Slot,
    payload: PayloadReader<'_, R>,
    progress: &mut Progress,
) -> Result<()> {
    let dir = set_dir(root, slot);
    let staging = staging_dir(root, slot);
    remove_tree(&staging)?;
    remove_tree(&dir)?;
    // The freed clusters reach the disk before new ones are allocated: fewer lost chains if
    // the power goes while the new set is written.
    sync_fs(&root.join(BOOT))?;
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let mut count = 0;
    let files = ArchiveReader::new(payload)?.unpack_with(&staging, |_| {
        count += 1;
        progress.point(&format!("boot-files:{count}"));
    })?;
    progress.event(
        "progress",
        serde_json::json!({"phase": "boot-files", "done": files.len(), "total": files.len()}),
        &format!("boot files: {} staged in {}", files.len(), dir.display()),
    );
    progress.point("boot-files-unpacked");
    finish_set(&staging, &dir)
}

/// Marks a staged set complete and moves it into place.
fn finish_set(staging: &Path, dir: &Path) -> Result<()> {
    let marker = staging.join(COMPLETE);
    fs::write(&marker, "").with_context(|| format!("writing {}", marker.display()))?;
    fs::File::open(&marker)?.sync_all()?;
    sync_dir(staging)?;
    fs::rename(staging, dir)
        .with_context(|| format!("renaming {} to {}", staging.display(), dir.display()))?;
    sync_dir(dir.parent().unwrap_or(dir))
}

/// Makes `slot`'s kept set the live one: each file that differs is replaced atomically.
/// Returns how many files changed. A missing set changes nothing (an image older than
/// this mechanism, or a set that was never kept).
pub fn make_live(root: &Path, slot: Slot) -> Result<usize> {
    let dir = set_dir(root, slot);
    if !is_complete(&dir) {
        tracing::warn!(
            "{} is missing or incomplete: the live boot files stay as they are",
            dir.display()
        );
        return Ok(0);
    }
    let boot = root.join(BOOT);
    let mut changed = 0;
    for rel in files_under(&dir)? {
        if rel == COMPLETE {
            continue;
        }
        let new = fs::read(dir.join(&rel))
            .with_context(|| format!("reading {}", dir.join(&rel).display()))?;
        let live = boot.join(&rel);
        if fs::read(&live).ok().as_deref() == Some(&new[..]) {
            continue;
        }
        if let Some(parent) = live.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        crate::device::config::write_atomic(&live, &new)?;
        changed += 1;
    }
    Ok(changed)
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::File::open(to)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {}", to.display()))
}

/// `syncfs` of the filesystem holding `dir`.
fn sync_fs(dir: &Path) -> Result<()> {
    let handle = fs::File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    rustix::fs::syncfs(&handle).with_context(|| format!("syncing {}", dir.display()))
}

fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn live(root: &Path, uki: &str, version: &str) {
        let boot = root.join(BOOT);
        fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
        fs::write(boot.join("EFI/BOOT/BOOTX64.EFI"), uki).unwrap();
        fs::write(boot.join("os-release"), format!("VERSION=\"{version}\"\n")).unwrap();
        fs::write(boot.join("config.json"), "{}").unwrap();
    }

    #[test]
    fn running_set_is_kept_and_made_live_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        live(root, "uki-a", "0.1.0");
        keep_running_set(root, Slot::A).unwrap();
        let kept = set_dir(root, Slot::A);
        assert_eq!(
            fs::read_to_string(kept.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            "uki-a"
        );
        assert!(
            !kept.join("config.json").exists(),
            "config.json is the device's, not a release file"
        );
        // The live set changes (a commit of another release), then goes back.
        live(root, "uki-b", "0.2.0");
        assert_eq!(make_live(root, Slot::A).unwrap(), 2);
        let boot = root.join(BOOT);
        assert_eq!(
            fs::read_to_string(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            "uki-a"
        );
        assert_eq!(
            make_live(root, Slot::A).unwrap(),
            0,
            "nothing left to change"
        );
        assert_eq!(make_live(root, Slot::B).unwrap(), 0, "no set kept for B");
    }

    #[test]
    fn recovered_chains_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        live(root, "uki-a", "0.1.0");
        let boot = root.join(BOOT);
        fs::write(boot.join("FSCK0000.REC"), vec![0u8; 100]).unwrap();
        fs::write(boot.join("fsck0001.rec"), vec![0u8; 20]).unwrap();
        fs::write(boot.join("FSCKNOTE.REC"), "keep").unwrap();
        assert_eq!(remove_recovered_chains(root).unwrap(), 120);
        assert!(!boot.join("FSCK0000.REC").exists());
        assert!(boot.join("FSCKNOTE.REC").exists());
        assert!(boot.join("config.json").exists());
    }

    #[test]
    fn space_check_names_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        live(root, "uki-a", "0.1.0");
        check_space(root, Slot::A, Slot::B, 1024).unwrap();
        let err = check_space(root, Slot::A, Slot::B, u64::MAX / 4).unwrap_err();
        assert!(format!("{err:#}").contains("boot partition"), "{err:#}");
    }
}
