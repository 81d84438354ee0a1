//! `baleen device data-reset`: the data partition's factory reset. When
//! `/mnt/data/remove_me_to_reset` is missing at boot, everything on the
//! partition is removed (balenaOS removes its engine store, application data
//! and `apps.json`; baleen removes persistent logs too: a reset device keeps
//! nothing of its past), the managed directories are made again, and the
//! flag is written last, so a power cut mid-way repeats the reset.
//!
//! The state partition's reset happens earlier, in the root's initramfs
//! (crates/bootstage/src/state.rs), because the state-backed paths must be in
//! place before the root's init starts.

use anyhow::{Context, Result};
use std::path::Path;

/// Entries kept by a reset: the filesystem's own.
const KEEP: [&str; 1] = ["lost+found"];

/// Resets `data` (the mounted data partition) if its flag is missing; true
/// when it did.
pub fn data_reset(data: &Path) -> Result<bool> {
    let flag = data.join(layout::RESET_FLAG);
    if flag.exists() {
        ensure_dirs(data)?;
        return Ok(false);
    }
    let entries = std::fs::read_dir(data).with_context(|| format!("listing {}", data.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", data.display()))?;
        if KEEP.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    ensure_dirs(data)?;
    std::fs::File::open(data)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("flushing {}", data.display()))?;
    let file =
        std::fs::File::create(&flag).with_context(|| format!("writing {}", flag.display()))?;
    file.sync_all()
        .with_context(|| format!("flushing {}", flag.display()))?;
    Ok(true)
}

fn ensure_dirs(data: &Path) -> Result<()> {
    for dir in [layout::DATA_DOCKER, layout::DATA_RESIN] {
        let path = data.join(dir);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_flag_wipes_everything_but_lost_and_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("lost+found")).unwrap();
        std::fs::create_dir_all(d.join("docker/volumes/x")).unwrap();
        std::fs::write(d.join("docker/volumes/x/marker"), "x").unwrap();
        std::fs::write(d.join("apps.json"), "{}").unwrap();
        assert!(data_reset(d).unwrap());
        let mut names: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["docker", "lost+found", "remove_me_to_reset", "resin-data"]
        );
        assert!(!d.join("docker/volumes").exists());
    }

    #[test]
    fn with_the_flag_nothing_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(layout::RESET_FLAG), "").unwrap();
        std::fs::write(d.join("marker"), "x").unwrap();
        assert!(!data_reset(d).unwrap());
        assert!(d.join("marker").exists());
        assert!(d.join("docker").is_dir());
    }
}
