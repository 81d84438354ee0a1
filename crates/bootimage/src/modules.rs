//! Kernel modules for the initramfs: names resolved through the root's
//! `modules.dep`, dependencies first, compressed modules unpacked at build.

use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The single kernel version in a root filesystem (`/usr/lib/modules/<version>`).
pub fn kernel_version(root: &Path) -> Result<String> {
    let dir = root.join("usr/lib/modules");
    let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
        path: dir.clone(),
        source,
    })?;
    let mut versions: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("modules.dep").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    match versions.len() {
        0 => Err(Error::NoKernel(root.to_owned())),
        1 => Ok(versions.remove(0)),
        _ => Err(Error::SeveralKernels {
            root: root.to_owned(),
            versions: versions.join(", "),
        }),
    }
}

/// Module name as the kernel spells it: file stem without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parsed `modules.dep`: module name → (relative path, dependency paths).
#[derive(Debug, Default)]
pub struct ModulesDep {
    entries: HashMap<String, (String, Vec<String>)>,
}

impl ModulesDep {
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .filter_map(|line| {
                let (path, deps) = line.split_once(':')?;
                let deps = deps.split_whitespace().map(str::to_string).collect();
                Some((module_name(path), (path.trim().to_string(), deps)))
            })
            .collect();
        ModulesDep { entries }
    }

    /// Relative paths of `names` and everything they depend on, dependencies
    /// before dependants, each once. Names in `builtin` are skipped.
    pub fn closure(
        &self,
        names: &[String],
        builtin: &HashSet<String>,
    ) -> Result<Vec<String>, String> {
        let by_path: HashMap<&str, &str> = self
            .entries
            .iter()
            .map(|(n, (p, _))| (p.as_str(), n.as_str()))
            .collect();
        let mut ordered = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let name = name.replace('-', "_");
            if builtin.contains(&name) {
                continue;
            }
            if !self.entries.contains_key(&name) {
                return Err(name);
            }
            self.visit(&name, &by_path, &mut seen, &mut ordered);
        }
        Ok(ordered)
    }

    fn visit(
        &self,
        name: &str,
        by_path: &HashMap<&str, &str>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.entries.get(name) else {
            return;
        };
        // modules.dep lists the full closure; visiting each keeps the order right.
        for dep in deps {
            if let Some(dep_name) = by_path.get(dep.as_str()) {
                self.visit(dep_name, by_path, seen, out);
            }
        }
        out.push(path.clone());
    }
}

impl ModulesDep {
    /// Groups an ordered closure into waves: every module's dependencies sit
    /// in earlier waves, so the modules of one wave can load concurrently.
    pub fn waves(&self, ordered: &[String]) -> Vec<Vec<String>> {
        let deps: HashMap<&str, &Vec<String>> = self
            .entries
            .values()
            .map(|(p, d)| (p.as_str(), d))
            .collect();
        let mut depth: HashMap<&str, usize> = HashMap::new();
        let mut waves: Vec<Vec<String>> = Vec::new();
        for path in ordered {
            let d = deps.get(path.as_str()).map_or(0, |ds| {
                ds.iter()
                    .filter_map(|dep| depth.get(dep.as_str()))
                    .map(|d| d + 1)
                    .max()
                    .unwrap_or(0)
            });
            depth.insert(path, d);
            if waves.len() <= d {
                waves.resize_with(d + 1, Vec::new);
            }
            waves[d].push(path.clone());
        }
        waves
    }
}

/// Names of the modules built into the kernel (`modules.builtin`).
pub fn builtin(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(module_name)
        .collect()
}

/// Resolves module names for the kernel in `root`; returns (kernel version,
/// waves of module paths relative to `/usr/lib/modules/<version>`).
pub fn resolve(root: &Path, names: &[String]) -> Result<(String, Vec<Vec<String>>)> {
    let version = kernel_version(root)?;
    let dir = root.join("usr/lib/modules").join(&version);
    let dep_path = dir.join("modules.dep");
    let dep = std::fs::read_to_string(&dep_path).map_err(|source| Error::Read {
        path: dep_path.clone(),
        source,
    })?;
    let builtin =
        builtin(&std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default());
    let dep = ModulesDep::parse(&dep);
    let paths = dep
        .closure(names, &builtin)
        .map_err(|name| Error::UnknownModule {
            name,
            modules_dep: dep_path,
            kernel: version.clone(),
        })?;
    Ok((version, dep.waves(&paths)))
}

/// A module file's contents, uncompressed (the boot stage loads plain `.ko`).
pub fn read_uncompressed(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let (tool, package) = if name.ends_with(".xz") {
        ("xz", "xz-utils")
    } else if name.ends_with(".zst") {
        ("zstd", "zstd")
    } else if name.ends_with(".gz") {
        ("gzip", "gzip")
    } else {
        return std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        });
    };
    // Decompress a copy in place (`tool -d x.ko.xz` leaves `x.ko`) and read it.
    let file_name = path.file_name().unwrap_or_default();
    let dir = tempfile::tempdir().map_err(|source| Error::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let copy = dir.path().join(file_name);
    std::fs::copy(path, &copy).map_err(|source| Error::Write {
        path: copy.clone(),
        source,
    })?;
    subprocess::Cmd::new(tool)
        .package(package)
        .args(["-d", "-f"])
        .arg(&copy)
        .run()?;
    let plain = copy.with_extension("");
    std::fs::read(&plain).map_err(|source| Error::Read {
        path: plain,
        source,
    })
}

/// Path of a module inside the initramfs (compression suffix dropped).
pub fn initramfs_path(version: &str, rel: &str) -> PathBuf {
    let rel = rel
        .trim_end_matches(".xz")
        .trim_end_matches(".zst")
        .trim_end_matches(".gz");
    PathBuf::from(format!("/usr/lib/modules/{version}/{rel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/fs/nls/nls-cp437.ko:
";

    #[test]
    fn names_follow_the_kernel_spelling() {
        assert_eq!(module_name("kernel/fs/nls/nls-cp437.ko"), "nls_cp437");
        assert_eq!(
            module_name("kernel/drivers/block/virtio_blk.ko.xz"),
            "virtio_blk"
        );
    }

    #[test]
    fn closure_orders_dependencies_first_once() {
        let dep = ModulesDep::parse(DEP);
        let names = vec![
            "virtio_blk".to_string(),
            "ext4".to_string(),
            "virtio".to_string(),
            "nls-cp437".to_string(),
        ];
        let order = dep.closure(&names, &HashSet::new()).unwrap();
        assert_eq!(
            order,
            vec![
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/block/virtio_blk.ko.xz",
                "kernel/lib/crc16.ko",
                "kernel/fs/mbcache.ko",
                "kernel/fs/jbd2/jbd2.ko",
                "kernel/fs/ext4/ext4.ko",
                "kernel/fs/nls/nls-cp437.ko",
            ]
        );
    }

    #[test]
    fn waves_put_dependencies_first() {
        let dep = ModulesDep::parse(DEP);
        let order = dep
            .closure(
                &["virtio_blk".to_string(), "ext4".to_string()],
                &HashSet::new(),
            )
            .unwrap();
        assert_eq!(
            dep.waves(&order),
            vec![
                vec![
                    "kernel/drivers/virtio/virtio_ring.ko",
                    "kernel/lib/crc16.ko",
                    "kernel/fs/mbcache.ko",
                    "kernel/fs/jbd2/jbd2.ko"
                ],
                vec!["kernel/drivers/virtio/virtio.ko", "kernel/fs/ext4/ext4.ko"],
                vec!["kernel/drivers/block/virtio_blk.ko.xz"],
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_named() {
        let dep = ModulesDep::parse(DEP);
        let builtin = builtin("kernel/fs/efivarfs/efivarfs.ko\n");
        assert_eq!(
            dep.closure(&["efivarfs".into()], &builtin).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            dep.closure(&["nosuch".into()], &builtin).unwrap_err(),
            "nosuch"
        );
    }

    #[test]
    fn compressed_modules_are_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("m.ko");
        std::fs::write(&module, b"\x7fELF module").unwrap();
        subprocess::Cmd::new("xz").arg(&module).run().unwrap();
        let packed = dir.path().join("m.ko.xz");
        assert_eq!(read_uncompressed(&packed).unwrap(), b"\x7fELF module");
        assert!(packed.exists(), "the source module must stay as it is");
    }

    #[test]
    fn initramfs_paths_drop_compression() {
        assert_eq!(
            initramfs_path("6.12.0", "kernel/a/b.ko.xz"),
            PathBuf::from("/usr/lib/modules/6.12.0/kernel/a/b.ko")
        );
    }
}
