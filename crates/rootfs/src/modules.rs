//! The kernel modules of the staging root: the trees a device type does not ship
//! (`omit_modules` in its file) are removed, plain `.ko` files are stored zstd-compressed (as
//! Debian trixie's kernel ships them xz-compressed; kmod decompresses them when loading), and
//! the module index is rebuilt by the root's own `depmod`, so that `modprobe` and the boot
//! stage's build-time resolution see what is there.

use std::path::{Path, PathBuf};

use subprocess::Cmd;

use crate::{Error, Result};

/// The kernel versions installed in `root`: the directories of `usr/lib/modules` that hold a
/// `modules.dep`, sorted.
pub fn kernel_versions(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("usr/lib/modules");
    let read_error = |source| Error::Read {
        path: dir.clone(),
        source,
    };
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        if entry.path().join("modules.dep").is_file() {
            versions.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    versions.sort();
    Ok(versions)
}

/// Removes every tree of `trees` (paths such as `kernel/drivers/gpu`, relative to
/// `usr/lib/modules/<version>/`) from each installed kernel ([`reindex`] rebuilds the index
/// afterwards). A tree that a kernel does not have is an error naming it: a typo or a changed
/// kernel package, either way the device type's list needs a look. Returns the bytes removed.
pub fn omit(root: &Path, trees: &[&str]) -> Result<u64> {
    if trees.is_empty() {
        return Ok(0);
    }
    let versions = kernel_versions(root)?;
    // Every tree must exist before any is removed.
    for version in &versions {
        let base = root.join("usr/lib/modules").join(version);
        for tree in trees {
            if base.join(tree).symlink_metadata().is_err() {
                return Err(Error::MissingModuleTree {
                    tree: (*tree).to_owned(),
                    kernel: version.clone(),
                    dir: base,
                });
            }
        }
    }
    let mut removed = 0;
    for version in &versions {
        let base = root.join("usr/lib/modules").join(version);
        for tree in trees {
            let path = base.join(tree);
            removed += if path.is_dir() {
                let bytes = tree_bytes(&path)?;
                std::fs::remove_dir_all(&path).map_err(|source| Error::Write { path, source })?;
                bytes
            } else {
                let bytes = path.symlink_metadata().map_or(0, |m| m.len());
                std::fs::remove_file(&path).map_err(|source| Error::Write { path, source })?;
                bytes
            };
        }
    }
    Ok(removed)
}

/// The zstd level of compressed modules: close to the best ratio, still fast to build.
const ZSTD_LEVEL: i32 = 12;

/// Compresses every plain `*.ko` file under `usr/lib/modules` to `*.ko.zst` (same mode), then
/// removes the plain file. Returns the bytes before and after.
pub fn compress(root: &Path) -> Result<(u64, u64)> {
    let (mut before, mut after) = (0, 0);
    for version in kernel_versions(root)? {
        let base = root.join("usr/lib/modules").join(version).join("kernel");
        for path in crate::regular_files(&base)? {
            if path.extension().is_none_or(|ext| ext != "ko") {
                continue;
            }
            let data = std::fs::read(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            let packed =
                zstd::bulk::compress(&data, ZSTD_LEVEL).map_err(|source| Error::Write {
                    path: path.clone(),
                    source,
                })?;
            let mut name = path.clone().into_os_string();
            name.push(".zst");
            let target = PathBuf::from(name);
            crate::write(&target, &packed)?;
            let mode = std::fs::metadata(&path)
                .map_err(|source| Error::Read {
                    path: path.clone(),
                    source,
                })?
                .permissions();
            std::fs::set_permissions(&target, mode).map_err(|source| Error::Write {
                path: target.clone(),
                source,
            })?;
            std::fs::remove_file(&path).map_err(|source| Error::Write {
                path: path.clone(),
                source,
            })?;
            before += data.len() as u64;
            after += packed.len() as u64;
        }
    }
    Ok((before, after))
}

/// Rebuilds the module index of every installed kernel with the root's own `depmod` (run in a
/// chroot, so the index matches the root's kmod).
pub fn reindex(root: &Path) -> Result<()> {
    for version in kernel_versions(root)? {
        Cmd::new("chroot")
            .package("coreutils")
            .arg(root)
            .args(["/usr/sbin/depmod", "-a", version.as_str()])
            .run()?;
    }
    Ok(())
}

/// Where [`write_static_nodes`] puts the device nodes: the name `kmod-static-nodes.service`
/// writes under `/run/tmpfiles.d` at every boot (masked on baleen), so a run-time copy would
/// still take precedence.
pub const STATIC_NODES: &str = "usr/lib/tmpfiles.d/static-nodes.conf";

/// Writes the tmpfiles.d lines for the device nodes that load their module on first open
/// (`/dev/fuse`, `/dev/net/tun`, `/dev/loop-control`, …), from the `modules.devname` of every
/// installed kernel: what `kmod static-nodes --format=tmpfiles` prints at every boot on Debian,
/// computed once at build time for the kernel the read-only root ships (one process less per
/// boot, 0.9 s under emulation). Returns the number of nodes.
pub fn write_static_nodes(root: &Path) -> Result<usize> {
    let mut lines: Vec<String> = Vec::new();
    for version in kernel_versions(root)? {
        let path = root
            .join("usr/lib/modules")
            .join(version)
            .join("modules.devname");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Read { path, source }),
        };
        for line in static_node_lines(&text) {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
    }
    let nodes = lines.iter().filter(|l| !l.starts_with("d ")).count();
    let mut text = String::from(
        "# Written by baleen's build from modules.devname (as `kmod static-nodes` would be at \
         boot).\n",
    );
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    crate::write(&root.join(STATIC_NODES), text)?;
    Ok(nodes)
}

/// The tmpfiles.d lines for one `modules.devname` text (`module devname c|bMAJOR:MINOR` per
/// line, `#` comments): the node's parent directories first, nodes `0600`, as kmod writes them.
/// Malformed lines are skipped, as kmod skips them.
fn static_node_lines(devname: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for line in devname.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(_module), Some(node), Some(dev)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let kind = match dev.chars().next() {
            Some(kind @ ('c' | 'b')) => kind,
            _ => continue,
        };
        let Some((major, minor)) = dev[1..].split_once(':') else {
            continue;
        };
        if major.parse::<u32>().is_err() || minor.parse::<u32>().is_err() || node.contains("..") {
            continue;
        }
        if let Some((dir, _)) = node.rsplit_once('/') {
            lines.push(format!("d /dev/{dir} 0755 - - -"));
        }
        lines.push(format!("{kind}! /dev/{node} 0600 - - - {major}:{minor}"));
    }
    lines
}

/// The bytes of the regular files under `dir`.
fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for path in crate::regular_files(dir)? {
        total += path
            .symlink_metadata()
            .map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?
            .len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_kernel(root: &Path, version: &str) -> PathBuf {
        let base = root.join("usr/lib/modules").join(version);
        std::fs::create_dir_all(base.join("kernel/drivers/gpu/drm")).unwrap();
        std::fs::write(base.join("kernel/drivers/gpu/drm/drm.ko"), [0u8; 100]).unwrap();
        std::fs::write(base.join("kernel/drivers/gpu/vga.ko"), [0u8; 20]).unwrap();
        std::fs::create_dir_all(base.join("kernel/fs/ext4")).unwrap();
        std::fs::write(base.join("kernel/fs/ext4/ext4.ko"), [0u8; 7]).unwrap();
        std::fs::write(base.join("modules.dep"), "").unwrap();
        base
    }

    #[test]
    fn static_nodes_are_what_kmod_writes() {
        let devname = "# Device nodes to trigger on-demand module loading.\n\
                       fuse fuse c10:229\n\
                       tun net/tun c10:200\n\
                       dm_mod mapper/control c10:236\n\
                       brd ram0 b1:0\n\
                       broken line\n\
                       bad ../escape c1:2\n\
                       odd odd x1:2\n";
        assert_eq!(
            static_node_lines(devname),
            [
                "c! /dev/fuse 0600 - - - 10:229",
                "d /dev/net 0755 - - -",
                "c! /dev/net/tun 0600 - - - 10:200",
                "d /dev/mapper 0755 - - -",
                "c! /dev/mapper/control 0600 - - - 10:236",
                "b! /dev/ram0 0600 - - - 1:0",
            ]
        );
    }

    #[test]
    fn static_nodes_file_covers_every_kernel_once() {
        let tmp = tempfile::tempdir().unwrap();
        for version in ["6.1.0-1-amd64", "6.1.0-2-amd64"] {
            let dir = fake_kernel(tmp.path(), version);
            std::fs::write(dir.join("modules.devname"), "tun net/tun c10:200\n").unwrap();
        }
        assert_eq!(write_static_nodes(tmp.path()).unwrap(), 1);
        let text = std::fs::read_to_string(tmp.path().join(STATIC_NODES)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["d /dev/net 0755 - - -", "c! /dev/net/tun 0600 - - - 10:200"]
        );
    }

    #[test]
    fn kernel_versions_are_the_directories_with_a_module_index() {
        let root = tempfile::tempdir().unwrap();
        fake_kernel(root.path(), "6.1.0-2-amd64");
        fake_kernel(root.path(), "6.1.0-1-amd64");
        std::fs::create_dir_all(root.path().join("usr/lib/modules/leftover")).unwrap();
        assert_eq!(
            kernel_versions(root.path()).unwrap(),
            ["6.1.0-1-amd64", "6.1.0-2-amd64"]
        );
    }

    #[test]
    fn nothing_to_omit_touches_nothing() {
        // No usr/lib/modules at all: with an empty list, not even read.
        let root = tempfile::tempdir().unwrap();
        assert_eq!(omit(root.path(), &[]).unwrap(), 0);
    }

    #[test]
    fn a_missing_tree_is_named_and_nothing_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let base = fake_kernel(root.path(), "6.1.0-1-amd64");
        let err = omit(root.path(), &["kernel/drivers/gpux", "kernel/drivers/gpu"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "omit_modules: kernel/drivers/gpux is not in the modules of kernel 6.1.0-1-amd64 \
                 ({}): fix the path in the device type or remove it from the list",
                base.display()
            )
        );
        assert!(base.join("kernel/drivers/gpu/drm/drm.ko").exists());
    }

    #[test]
    fn compress_replaces_plain_modules_with_zstd_ones() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let base = fake_kernel(root.path(), "6.1.0-1-amd64");
        let ext4 = base.join("kernel/fs/ext4/ext4.ko");
        std::fs::set_permissions(&ext4, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(base.join("kernel/fs/ext4/already.ko.xz"), b"xz").unwrap();
        let (before, after) = compress(root.path()).unwrap();
        assert_eq!(before, 127);
        assert!(after > 0 && after < before, "{after}");
        assert!(!ext4.exists());
        let packed = base.join("kernel/fs/ext4/ext4.ko.zst");
        assert_eq!(
            zstd::decode_all(std::fs::File::open(&packed).unwrap()).unwrap(),
            [0u8; 7]
        );
        let mode = std::fs::metadata(&packed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Compressed ones and files outside kernel/ are left alone.
        assert_eq!(
            std::fs::read(base.join("kernel/fs/ext4/already.ko.xz")).unwrap(),
            b"xz"
        );
        assert!(base.join("modules.dep").exists());
        // A second pass finds nothing left to do.
        assert_eq!(compress(root.path()).unwrap(), (0, 0));
    }

    #[test]
    fn tree_bytes_counts_regular_files_below() {
        let root = tempfile::tempdir().unwrap();
        let base = fake_kernel(root.path(), "6.1.0-1-amd64");
        assert_eq!(tree_bytes(&base.join("kernel/drivers/gpu")).unwrap(), 120);
    }
}
