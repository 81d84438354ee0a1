//! The build manifest written beside the image: what went in, how big it is,
//! its sha256, and how long the build took.

use anyhow::{Context, Result};
use buildconf::BuildConfig;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const API_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageFacts {
    pub file: String,
    pub size_bytes: u64,
    /// Bytes the sparse file really occupies on the build host.
    pub allocated_bytes: u64,
    pub sha256: String,
}

impl ImageFacts {
    pub fn of(path: &Path) -> Result<ImageFacts> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let mut file = std::fs::File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(ImageFacts {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes: meta.len(),
            allocated_bytes: meta.blocks() * 512,
            sha256: hex::encode(hasher.finalize()),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionFacts {
    pub number: u32,
    pub name: String,
    pub offset_bytes: u64,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsFacts {
    pub bytes: u64,
    pub cache: String,
    /// `name=version` of every installed Debian package.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub api_version: u32,
    pub device: String,
    pub os_version: String,
    pub meta_version: String,
    pub board_revision: u32,
    pub variant: String,
    pub debian_release: String,
    pub kernel_version: String,
    pub baleen_version: String,
    pub image: ImageFacts,
    pub partitions: Vec<PartitionFacts>,
    pub rootfs: RootfsFacts,
    pub initramfs_entries: usize,
    /// Id of the update signing key the image trusts (`usr/share/baleen/update-keys/<id>.pub`):
    /// bundles for devices running this image must be signed with that key.
    pub update_key_id: String,
    pub build_seconds: f64,
}

impl Manifest {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &BuildConfig,
        version: &str,
        kernel_version: &str,
        image: ImageFacts,
        parts: &[diskimage::PartitionInfo],
        staging: &Path,
        rootfs_bytes: u64,
        cache: rootfs::bootstrap::Cache,
        initramfs_entries: usize,
        update_key_id: bundle::KeyId,
    ) -> Manifest {
        let status =
            std::fs::read_to_string(staging.join("var/lib/dpkg/status")).unwrap_or_default();
        Manifest {
            api_version: API_VERSION,
            device: config.device.slug.clone(),
            os_version: version.to_string(),
            meta_version: config.meta_version.to_string(),
            board_revision: config.board_revision,
            variant: config.variant().to_string(),
            debian_release: config.release.codename().to_string(),
            kernel_version: kernel_version.to_string(),
            baleen_version: env!("CARGO_PKG_VERSION").to_string(),
            image,
            partitions: parts
                .iter()
                .map(|p| PartitionFacts {
                    number: p.number,
                    name: p.name.clone(),
                    offset_bytes: p.offset_bytes,
                    size_bytes: p.size_bytes,
                })
                .collect(),
            rootfs: RootfsFacts {
                bytes: rootfs_bytes,
                cache: match cache {
                    rootfs::bootstrap::Cache::Hit => "hit".into(),
                    rootfs::bootstrap::Cache::Miss => "miss".into(),
                },
                packages: installed_packages(&status),
            },
            initramfs_entries,
            update_key_id: update_key_id.to_string(),
            build_seconds: 0.0,
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("manifest serializes") + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

/// `name=version` of the installed packages in a dpkg status file, sorted.
pub fn installed_packages(status: &str) -> Vec<String> {
    let mut out: Vec<String> = status
        .split("\n\n")
        .filter(|stanza| stanza.lines().any(|l| l == "Status: install ok installed"))
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
            };
            Some(format!("{}={}", field("Package:")?, field("Version:")?))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_from_dpkg_status() {
        let status = "Package: b\nStatus: install ok installed\nVersion: 2\n\nPackage: a\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: c\nStatus: install ok installed\nVersion: 1:3-1\n";
        assert_eq!(installed_packages(status), vec!["b=2", "c=1:3-1"]);
    }
}
