//! The update signing key: where the build keeps it (outside the image), generating it the
//! first time, and the public half the image carries so that it trusts bundles signed with it
//! (see docs/updates.md).

use anyhow::{Context, Result};
use bundle::{PublicKey, SigningKey};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The key file under the cache directory when `--update-key` is not given.
pub const DEFAULT_KEY_FILE: &str = "update-keys/baleen-update.key";

/// The private key file: `explicit` when given (`--update-key`, `BALEEN_UPDATE_KEY`), else
/// [`DEFAULT_KEY_FILE`] under `cache_dir`.
pub fn key_path(explicit: Option<&Path>, cache_dir: &Path) -> PathBuf {
    explicit.map_or_else(|| cache_dir.join(DEFAULT_KEY_FILE), Path::to_path_buf)
}

/// How [`load_or_generate`] got the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Loaded,
    Generated,
}

/// The signing key at `path`; when no file is there, a new key saved there (mode 0600, its
/// directory made 0700 if missing). Refuses a file that is not an ed25519 private key: it is
/// never replaced. `flag` is the option that names the file, for the hints in errors.
pub fn load_or_generate(path: &Path, flag: &str) -> Result<(SigningKey, Origin)> {
    if path.symlink_metadata().is_ok() {
        let key = SigningKey::load(path).map_err(|e| read_hint(e, path, flag))?;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    "update signing key {} is readable by other users (mode {:o}): \
                     chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o7777
                );
            }
        }
        return Ok((key, Origin::Loaded));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| {
                format!(
                    "creating {} for the update signing key: pass {flag} with a writable path",
                    dir.display()
                )
            })?;
    }
    let key = SigningKey::generate()?;
    match key.save(path) {
        Ok(()) => Ok((key, Origin::Generated)),
        // Another build (run beside this one) saved its new key first: both images must trust
        // the same key, so use that one. The save never replaces a key file.
        Err(bundle::Error::KeyExists { .. }) => {
            let key = SigningKey::load(path).map_err(|e| read_hint(e, path, flag))?;
            Ok((key, Origin::Loaded))
        }
        Err(e) => Err(e)
            .with_context(|| format!("saving the new update signing key to {}", path.display())),
    }
}

/// Adds how to fix a key file that cannot be read for lack of permission; `flag` is the option
/// that names the file.
pub fn read_hint(err: bundle::Error, path: &Path, flag: &str) -> anyhow::Error {
    let denied = matches!(
        &err,
        bundle::Error::KeyFile { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied
    );
    let err = anyhow::Error::new(err);
    if denied {
        err.context(format!(
            "the update signing key {} belongs to the user who built the image (root): run as \
             that user or pass {flag} with a copy you may read",
            path.display()
        ))
    } else {
        err
    }
}

/// Where the image keeps `key`, relative to the root: `usr/share/baleen/update-keys/<key id>.pub`.
pub fn public_key_path(key: &PublicKey) -> PathBuf {
    Path::new(bundle::TRUSTED_KEYS_DIR).join(format!(
        "{}.{}",
        key.key_id(),
        bundle::PUBLIC_KEY_EXTENSION
    ))
}

/// Writes `key` into the OS tree at `root` (the build's staging root) so that the image trusts
/// bundles signed with its private half. Returns the file written.
pub fn install_public_key(root: &Path, key: &PublicKey) -> Result<PathBuf> {
    let path = root.join(public_key_path(key));
    let dir = path.parent().expect("the key path has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    key.save(&path)
        .with_context(|| format!("writing the update public key to {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_path_defaults_to_the_cache_dir() {
        assert_eq!(
            key_path(None, Path::new("/var/cache/baleen")),
            Path::new("/var/cache/baleen/update-keys/baleen-update.key")
        );
        assert_eq!(
            key_path(
                Some(Path::new("keys/k.pem")),
                Path::new("/var/cache/baleen")
            ),
            Path::new("keys/k.pem")
        );
    }

    #[test]
    fn builds_started_together_share_one_new_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = key_path(None, dir.path());
            let start = std::sync::Barrier::new(4);
            let ids: Vec<_> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            load_or_generate(&path, "--update-key").unwrap().0.key_id()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let saved = SigningKey::load(&path).unwrap().key_id();
            assert!(ids.iter().all(|id| *id == saved), "{ids:?} vs {saved}");
        }
    }

    #[test]
    fn generates_once_then_loads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = key_path(None, dir.path());
        let (first, origin) = load_or_generate(&path, "--update-key").unwrap();
        assert_eq!(origin, Origin::Generated);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let (again, origin) = load_or_generate(&path, "--update-key").unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(again.key_id(), first.key_id());
    }

    #[test]
    fn a_file_that_is_not_a_key_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = format!("{:#}", load_or_generate(&path, "--update-key").unwrap_err());
        assert!(err.contains("is not an ed25519 private key"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn public_key_lands_in_the_trusted_key_dir_under_its_id() {
        let root = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[7; 32]).public_key();
        let written = install_public_key(root.path(), &key).unwrap();
        assert_eq!(
            written,
            root.path()
                .join(format!("usr/share/baleen/update-keys/{}.pub", key.key_id()))
        );
        let trusted =
            bundle::TrustedKeys::load_dir(&root.path().join(bundle::TRUSTED_KEYS_DIR)).unwrap();
        assert_eq!(trusted.key_ids(), vec![key.key_id()]);
    }
}
