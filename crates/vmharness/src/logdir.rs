//! Per-VM log folders: `<target>/vmtests/<name>-<UTC timestamp>`, kept unless the test passed.

use std::env;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Environment variable overriding the folder that holds all VM log folders.
pub const LOG_ROOT_ENV: &str = "BALEEN_VMTEST_DIR";
/// Environment variable that, when set, keeps log folders even of passing tests.
pub const KEEP_LOGS_ENV: &str = "BALEEN_KEEP_LOGS";

/// The folder holding VM log folders: `$BALEEN_VMTEST_DIR`, else `$CARGO_TARGET_DIR/vmtests`,
/// else `target/vmtests` in the nearest ancestor of the working directory with a `Cargo.lock`
/// (the workspace root), else `./target/vmtests`.
pub fn log_root() -> PathBuf {
    if let Some(dir) = env::var_os(LOG_ROOT_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("vmtests");
    }
    let cwd = env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let root = cwd
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&cwd);
    root.join("target").join("vmtests")
}

/// Creates a fresh folder `<root>/<name>-<YYYYmmdd-HHMMSS>` (with `-2`, `-3`, … if taken).
pub fn create_unique(root: &Path, name: &str) -> Result<PathBuf> {
    fs::create_dir_all(root).map_err(|e| Error::io_path("creating", root, e))?;
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = format!("{}-{}", sanitize(name), utc_stamp(secs));
    for n in 1u32.. {
        let dir = if n == 1 {
            root.join(&base)
        } else {
            root.join(format!("{base}-{n}"))
        };
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io_path("creating", &dir, e)),
        }
    }
    unreachable!("u32 range exhausted")
}

/// Keeps `[A-Za-z0-9._-]`, maps everything else to `-`. Pure.
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("vm{s}")
    } else {
        s
    }
}

/// Whether a log folder should be deleted: only for a passed test without `BALEEN_KEEP_LOGS`.
pub(crate) fn should_delete(passed: bool) -> bool {
    passed && env::var_os(KEEP_LOGS_ENV).is_none() && !std::thread::panicking()
}

/// `YYYYmmdd-HHMMSS` in UTC for seconds since the epoch. Pure.
pub(crate) fn utc_stamp(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_795_527_083), "20261124-133123");
    }

    #[test]
    fn names_are_file_safe() {
        assert_eq!(sanitize("boot/rollback test"), "boot-rollback-test");
        assert_eq!(sanitize(""), "vm");
        assert_eq!(sanitize(".."), "vm..");
    }

    #[test]
    fn unique_folders() {
        let root = tempfile::tempdir().unwrap();
        let a = create_unique(root.path(), "t").unwrap();
        let b = create_unique(root.path(), "t").unwrap();
        assert_ne!(a, b);
        assert!(a.is_dir() && b.is_dir());
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("t-20"));
    }
}
