//! Debian packages → a root filesystem tarball with mmdebstrap, cached by the
//! hash of the recipe: a warm build skips the download and install entirely.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use subprocess::Cmd;

/// Bumped whenever the way a recipe becomes a tarball changes.
const RECIPE_FORMAT: u32 = 1;

/// Documentation, manuals and translations are left out of device images.
pub const PATH_EXCLUDES: [&str; 5] = [
    "/usr/share/man/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
    "/usr/share/lintian/*",
];

/// Everything that shapes the package set of a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub release: String,
    pub arch: String,
    pub mirror: String,
    /// Debian package names, sorted and unique (see [`Recipe::new`]).
    pub packages: Vec<String>,
    /// Kernel modules the root's own initrd carries (initramfs-tools
    /// `MODULES=list`): what mounting the root needs on this device type,
    /// instead of Debian's `most`, which makes a 37 MB initrd.
    pub initramfs_modules: Vec<String>,
}

impl Recipe {
    pub fn new(
        release: &str,
        arch: &str,
        mirror: &str,
        packages: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut packages: Vec<String> = packages.into_iter().collect();
        packages.sort();
        packages.dedup();
        Recipe {
            release: release.into(),
            arch: arch.into(),
            mirror: mirror.trim_end_matches('/').into(),
            packages,
            initramfs_modules: Vec::new(),
        }
    }

    /// Sets the modules of the root's initrd (names as validated by the device type).
    pub fn with_initramfs_modules(mut self, modules: impl IntoIterator<Item = String>) -> Self {
        self.initramfs_modules = modules.into_iter().collect();
        self
    }

    /// The hook that configures initramfs-tools before the kernel package
    /// installs, so the initrd in the cached tarball is already the small one.
    pub fn initramfs_hook(&self) -> String {
        let modules: String = self
            .initramfs_modules
            .iter()
            .map(|m| format!("{m}\\n"))
            .collect();
        format!(
            "mkdir -p \"$1/etc/initramfs-tools/conf.d\" && \
             printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1/etc/initramfs-tools/conf.d/baleen.conf\" && \
             printf '{modules}' > \"$1/etc/initramfs-tools/modules\""
        )
    }

    /// Hex sha256 of the canonical recipe text: the cache key.
    pub fn cache_key(&self) -> String {
        let text = format!(
            "format={RECIPE_FORMAT}\nrelease={}\narch={}\nmirror={}\npackages={}\nexcludes={}\ninitramfs={}\n",
            self.release,
            self.arch,
            self.mirror,
            self.packages.join(","),
            PATH_EXCLUDES.join(","),
            self.initramfs_modules.join(",")
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    /// The apt sources: the release, its updates and its security suite.
    /// A mirror whose path ends in `/debian` serves security updates from the
    /// sibling `/debian-security`; for any other mirror layout there is no
    /// way to know, so the security suite is left out (and says so in the log).
    pub fn sources(&self) -> Vec<String> {
        let mut sources = vec![
            format!("deb {} {} main", self.mirror, self.release),
            format!("deb {} {}-updates main", self.mirror, self.release),
        ];
        match self.mirror.strip_suffix("/debian") {
            Some(base) => sources.push(format!(
                "deb {base}/debian-security {}-security main",
                self.release
            )),
            None => {
                tracing::warn!(mirror = %self.mirror, "mirror path does not end in /debian: no security suite")
            }
        }
        sources
    }

    /// mmdebstrap's argument list for writing the tarball `out`.
    pub fn mmdebstrap_args(&self, out: &Path) -> Vec<String> {
        let mut args = vec![
            "--variant=apt".to_string(),
            "--mode=root".to_string(),
            "--format=tar".to_string(),
            format!("--architectures={}", self.arch),
            format!("--include={}", self.packages.join(",")),
        ];
        for pattern in PATH_EXCLUDES {
            args.push(format!("--dpkgopt=path-exclude={pattern}"));
        }
        args.push("--dpkgopt=path-include=/usr/share/doc/*/copyright".into());
        if !self.initramfs_modules.is_empty() {
            args.push(format!("--essential-hook={}", self.initramfs_hook()));
        }
        args.push(self.release.clone());
        args.push(out.display().to_string());
        args.extend(self.sources());
        args
    }
}

/// Whether the tarball came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Hit,
    Miss,
}

/// Returns the cached tarball for `recipe`, running mmdebstrap on a miss.
/// The tarball appears under its final name only once complete.
pub fn tarball(recipe: &Recipe, cache_dir: &Path) -> Result<(PathBuf, Cache)> {
    let key = recipe.cache_key();
    let out = cache_dir.join(format!(
        "rootfs-{}-{}-{}.tar",
        recipe.release,
        recipe.arch,
        &key[..16]
    ));
    if out.exists() {
        return Ok((out, Cache::Hit));
    }
    std::fs::create_dir_all(cache_dir).map_err(|source| Error::Write {
        path: cache_dir.to_owned(),
        source,
    })?;
    // Named per process: two builds of the same packages at once each write their own, and
    // the second rename replaces the first's tarball with an equal one.
    let partial = out.with_extension(format!("tar.partial.{}", std::process::id()));
    let log = out.with_extension("log");
    let result = Cmd::new("mmdebstrap")
        .package("mmdebstrap")
        .args(recipe.mmdebstrap_args(&partial))
        .timeout(Duration::from_secs(3600))
        .run();
    match result {
        Ok(run) => {
            let _ = std::fs::write(&log, format!("{}{}", run.stdout, run.stderr));
            std::fs::rename(&partial, &out).map_err(|source| Error::Write {
                path: out.clone(),
                source,
            })?;
            Ok((out, Cache::Miss))
        }
        Err(source) => {
            let _ = std::fs::remove_file(&partial);
            let _ = std::fs::write(&log, source.to_string());
            Err(Error::Bootstrap {
                release: recipe.release.clone(),
                log,
                source,
            })
        }
    }
}

/// Unpacks a tarball into an empty staging directory, keeping owners and modes.
pub fn unpack(tarball: &Path, staging: &Path) -> Result<()> {
    std::fs::create_dir_all(staging).map_err(|source| Error::Write {
        path: staging.to_owned(),
        source,
    })?;
    Cmd::new("tar")
        .package("tar")
        .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
        .arg(tarball)
        .arg("-C")
        .arg(staging)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(packages: &[&str]) -> Recipe {
        Recipe::new(
            "bookworm",
            "amd64",
            "http://deb.debian.org/debian/",
            packages.iter().map(|s| s.to_string()),
        )
    }

    #[test]
    fn cache_key_ignores_package_order_and_duplicates() {
        assert_eq!(
            recipe(&["b", "a", "a"]).cache_key(),
            recipe(&["a", "b"]).cache_key()
        );
        assert_ne!(recipe(&["a"]).cache_key(), recipe(&["a", "c"]).cache_key());
        let mut trixie = recipe(&["a"]);
        trixie.release = "trixie".into();
        assert_ne!(trixie.cache_key(), recipe(&["a"]).cache_key());
    }

    #[test]
    fn initramfs_modules_shape_the_hook_and_the_key() {
        let plain = recipe(&["a"]);
        let small =
            recipe(&["a"]).with_initramfs_modules(["virtio_blk".to_string(), "ext4".to_string()]);
        assert_ne!(plain.cache_key(), small.cache_key());
        assert!(
            !plain
                .mmdebstrap_args(Path::new("/x.tar"))
                .iter()
                .any(|a| a.starts_with("--essential-hook"))
        );
        assert_eq!(
            small.initramfs_hook(),
            "mkdir -p \"$1/etc/initramfs-tools/conf.d\" && printf 'MODULES=list\\nCOMPRESS=zstd\\n' > \"$1/etc/initramfs-tools/conf.d/baleen.conf\" && printf 'virtio_blk\\next4\\n' > \"$1/etc/initramfs-tools/modules\""
        );
    }

    #[test]
    fn sources_cover_updates_and_security() {
        assert_eq!(
            recipe(&[]).sources(),
            vec![
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn security_suite_only_for_debian_layout_mirrors() {
        let mut r = recipe(&[]);
        r.mirror = "http://mirror.example/debian-archive/debian".into();
        assert_eq!(
            r.sources()[2],
            "deb http://mirror.example/debian-archive/debian-security bookworm-security main"
        );
        r.mirror = "http://mirror.example/pkgs".into();
        assert_eq!(r.sources().len(), 2);
    }

    #[test]
    fn mmdebstrap_args_name_packages_and_output() {
        let args = recipe(&["systemd", "openssh-server"]).mmdebstrap_args(Path::new("/c/x.tar"));
        assert!(args.contains(&"--include=openssh-server,systemd".to_string()));
        assert!(args.contains(&"--dpkgopt=path-exclude=/usr/share/man/*".to_string()));
        let at = args.iter().position(|a| a == "bookworm").unwrap();
        assert_eq!(args[at + 1], "/c/x.tar");
    }
}
