//! The state partition as the root's initramfs prepares it, before the root's
//! init starts: the factory reset, the persistent machine id and the
//! state-backed paths of [`layout::STATE_PATHS`].
//!
//! balenaOS's `bindmount` creates an *empty* file or directory in the state
//! store when it is missing and so shadows what the root ships there (its
//! build has to move udev rules and NetworkManager scripts out of `/etc` for
//! that reason). Here a missing state copy is seeded from the read-only root,
//! so the first boot (and the boot after a reset) sees the root's content.
//!
//! Everything here is file work under two directories, so it is tested on
//! temporary folders; the initramfs does the mounts with what [`prepare`]
//! returns.

use layout::{Kind, MACHINE_ID, RESET_FLAG, ROOT_OVERLAY, STATE_PATHS, Seed, StatePath};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`prepare`] did, and the bind mounts still to make.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The reset flag was missing: `root-overlay` was wiped and re-seeded.
    /// The caller syncs and then calls [`finish_reset`].
    pub reset: bool,
    /// The machine id was missing or malformed and a new one was written.
    pub new_machine_id: bool,
    /// (source in the state partition, target in the root), in mount order.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Paths left out, with the reason (logged by the caller).
    pub skipped: Vec<String>,
}

/// Resets (when the flag is missing), seeds and lists the binds for the state
/// partition mounted at `state` and the root mounted at `root`.
pub fn prepare(state: &Path, root: &Path) -> io::Result<Prepared> {
    let mut out = Prepared {
        reset: !state.join(RESET_FLAG).exists(),
        ..Prepared::default()
    };
    let overlay = state.join(ROOT_OVERLAY);
    if out.reset {
        remove_all(&overlay)?;
    }
    out.new_machine_id = ensure_machine_id(&state.join(MACHINE_ID))?;
    let machine_id_target = root.join("etc/machine-id");
    if machine_id_target.is_file() {
        out.binds.push((state.join(MACHINE_ID), machine_id_target));
    } else {
        out.skipped
            .push("/etc/machine-id: not a file on the root".to_string());
    }
    for spec in STATE_PATHS {
        match seed(&overlay, root, &spec) {
            Ok(Some(bind)) => out.binds.push(bind),
            Ok(None) => out.skipped.push(format!(
                "{}: not on the root, nothing to bind over",
                spec.path
            )),
            Err(e) => out.skipped.push(format!("{}: {e}", spec.path)),
        }
    }
    Ok(out)
}

/// Writes the reset flag (after the caller synced the seeded content), so a
/// power cut during a reset repeats the reset on the next boot.
pub fn finish_reset(state: &Path) -> io::Result<()> {
    let flag = fs::File::create(state.join(RESET_FLAG))?;
    flag.sync_all()?;
    fs::File::open(state)?.sync_all()
}

/// A machine id as systemd writes it: 32 lower-case hex digits and a newline.
pub fn is_machine_id(text: &str) -> bool {
    let id = text.strip_suffix('\n').unwrap_or(text);
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

/// Makes sure `path` holds a machine id; true when a new one was written.
fn ensure_machine_id(path: &Path) -> io::Result<bool> {
    if fs::read_to_string(path).is_ok_and(|t| is_machine_id(&t)) {
        return Ok(false);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    write_atomic(path, format!("{id}\n").as_bytes(), 0o444)?;
    Ok(true)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Seeds the state copy of one path when needed; the bind to make, or None
/// when the root has no mount point for it.
fn seed(overlay: &Path, root: &Path, spec: &StatePath) -> io::Result<Option<(PathBuf, PathBuf)>> {
    let rel = spec.path.trim_start_matches('/');
    let target = root.join(rel);
    let source = overlay.join(rel);
    let Ok(on_root) = fs::metadata(&target) else {
        return Ok(None);
    };
    let root_kind = if on_root.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    if root_kind != spec.kind {
        return Err(io::Error::other(format!(
            "is a {root_kind:?} on the root but a {:?} is expected",
            spec.kind
        )));
    }
    if spec.seed == Seed::EveryBoot {
        remove_all(&source)?;
    }
    if fs::symlink_metadata(&source).is_err() {
        if let Some(parent) = source.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        // Seed into a temporary name first: a power cut mid-copy leaves no
        // half-seeded copy that would be taken as the device's own later.
        let partial = source.with_file_name(format!(
            ".{}.seeding",
            source.file_name().unwrap_or_default().to_string_lossy()
        ));
        remove_all(&partial)?;
        copy_tree(&target, &partial)?;
        fs::rename(&partial, &source)?;
    }
    let kind_now = if fs::metadata(&source)?.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    if kind_now != spec.kind {
        return Err(io::Error::other(format!(
            "the state copy {} is a {kind_now:?}, the root has a {:?}",
            source.display(),
            spec.kind
        )));
    }
    Ok(Some((source, target)))
}

/// Copies `from` to `to` (a new path): regular files, directories and
/// symbolic links, with their modes and owners. Sockets, fifos and device
/// nodes are left out.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if ft.is_dir() {
        fs::DirBuilder::new()
            .mode(meta.mode() & 0o7777)
            .create(to)?;
        let mut names: Vec<_> = fs::read_dir(from)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names {
            copy_tree(&from.join(&name), &to.join(&name))?;
        }
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    } else if ft.is_file() {
        fs::copy(from, to)?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        state: PathBuf,
        root: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let root = dir.path().join("root");
        fs::create_dir_all(&state).unwrap();
        for p in STATE_PATHS {
            let path = root.join(p.path.trim_start_matches('/'));
            match p.kind {
                Kind::Dir => fs::create_dir_all(&path).unwrap(),
                Kind::File => {
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    fs::write(&path, "balena\n").unwrap();
                }
            }
        }
        fs::write(root.join("etc/machine-id"), "").unwrap();
        fs::write(root.join("etc/udev/rules.d/10-root.rules"), "# shipped\n").unwrap();
        fs::set_permissions(root.join("root/.ssh"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("../x.pem", root.join("etc/ssl/certs/x.0")).unwrap();
        Fixture {
            _dir: dir,
            state,
            root,
        }
    }

    #[test]
    fn first_boot_resets_seeds_from_the_root_and_binds_everything() {
        let f = fixture();
        let p = prepare(&f.state, &f.root).unwrap();
        assert!(p.reset);
        assert!(p.new_machine_id);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        assert_eq!(p.binds.len(), STATE_PATHS.len() + 1);
        assert_eq!(p.binds[0].1, f.root.join("etc/machine-id"));
        let overlay = f.state.join(ROOT_OVERLAY);
        // Seeded, not shadowed with empty copies.
        assert_eq!(
            fs::read_to_string(overlay.join("etc/udev/rules.d/10-root.rules")).unwrap(),
            "# shipped\n"
        );
        assert_eq!(
            fs::read_to_string(overlay.join("etc/hostname")).unwrap(),
            "balena\n"
        );
        assert_eq!(
            fs::read_link(overlay.join("etc/ssl/certs/x.0")).unwrap(),
            Path::new("../x.pem")
        );
        let mode = fs::metadata(overlay.join("root/.ssh")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        assert!(is_machine_id(
            &fs::read_to_string(f.state.join(MACHINE_ID)).unwrap()
        ));
        finish_reset(&f.state).unwrap();
        assert!(f.state.join(RESET_FLAG).exists());
    }

    #[test]
    fn later_boots_keep_the_device_content_and_refresh_derived_paths() {
        let f = fixture();
        prepare(&f.state, &f.root).unwrap();
        finish_reset(&f.state).unwrap();
        let id = fs::read_to_string(f.state.join(MACHINE_ID)).unwrap();
        let overlay = f.state.join(ROOT_OVERLAY);
        fs::write(overlay.join("etc/hostname"), "mydevice\n").unwrap();
        fs::write(overlay.join("etc/ssl/certs/added.pem"), "x").unwrap();
        let p = prepare(&f.state, &f.root).unwrap();
        assert!(!p.reset);
        assert!(!p.new_machine_id);
        assert_eq!(fs::read_to_string(f.state.join(MACHINE_ID)).unwrap(), id);
        assert_eq!(
            fs::read_to_string(overlay.join("etc/hostname")).unwrap(),
            "mydevice\n"
        );
        assert!(!overlay.join("etc/ssl/certs/added.pem").exists());
        assert!(overlay.join("etc/ssl/certs/x.0").symlink_metadata().is_ok());
    }

    #[test]
    fn a_missing_flag_wipes_the_overlay_but_keeps_the_machine_id() {
        let f = fixture();
        prepare(&f.state, &f.root).unwrap();
        finish_reset(&f.state).unwrap();
        let id = fs::read_to_string(f.state.join(MACHINE_ID)).unwrap();
        let overlay = f.state.join(ROOT_OVERLAY);
        fs::write(overlay.join("root/.ssh/marker"), "x").unwrap();
        fs::remove_file(f.state.join(RESET_FLAG)).unwrap();
        let p = prepare(&f.state, &f.root).unwrap();
        assert!(p.reset);
        assert!(!overlay.join("root/.ssh/marker").exists());
        assert!(overlay.join("root/.ssh").is_dir());
        assert_eq!(fs::read_to_string(f.state.join(MACHINE_ID)).unwrap(), id);
    }

    #[test]
    fn paths_missing_on_the_root_are_skipped_and_kind_mismatches_reported() {
        let f = fixture();
        fs::remove_dir_all(f.root.join("etc/docker")).unwrap();
        fs::remove_dir_all(f.root.join("var/lib/chrony")).unwrap();
        fs::write(f.root.join("var/lib/chrony"), "").unwrap();
        let p = prepare(&f.state, &f.root).unwrap();
        assert_eq!(p.binds.len(), STATE_PATHS.len() - 1);
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        assert!(p.skipped[0].starts_with("/var/lib/chrony: is a File"));
        assert!(p.skipped[1].starts_with("/etc/docker: not on the root"));
    }

    #[test]
    fn malformed_machine_ids_are_replaced() {
        assert!(is_machine_id("0123456789abcdef0123456789abcdef\n"));
        assert!(!is_machine_id("0123456789ABCDEF0123456789abcdef\n"));
        assert!(!is_machine_id("00000000000000000000000000000000\n"));
        assert!(!is_machine_id(""));
        let f = fixture();
        fs::write(f.state.join(MACHINE_ID), "uninitialized\n").unwrap();
        assert!(prepare(&f.state, &f.root).unwrap().new_machine_id);
    }

    #[test]
    fn an_interrupted_seed_is_redone() {
        let f = fixture();
        let overlay = f.state.join(ROOT_OVERLAY);
        fs::create_dir_all(overlay.join("etc/udev/.rules.d.seeding")).unwrap();
        fs::write(overlay.join("etc/udev/.rules.d.seeding/half"), "").unwrap();
        fs::write(f.state.join(RESET_FLAG), "").unwrap();
        prepare(&f.state, &f.root).unwrap();
        assert!(!overlay.join("etc/udev/.rules.d.seeding").exists());
        assert!(overlay.join("etc/udev/rules.d/10-root.rules").exists());
    }
}
