//! `baleen bundle verify`: every check a bundle can get without a device, on the host. Unlike
//! the install, it also takes the SHA-256 of each payload's decompressed bytes.

use crate::build::updatekey;
use anyhow::{Context, Result};
use bundle::{Bundle, Policy, PublicKey, SigningKey, TrustedKeys};
use serde::Serialize;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle file.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
    /// Trust this public key file (`-----BEGIN PUBLIC KEY-----`), or every `*.pub` in this
    /// directory (as a device does with /usr/share/baleen/update-keys).
    /// [default: the public half of --key]
    #[arg(long, value_name = "PATH")]
    pub trusted: Option<PathBuf>,
    /// Private key whose public half is trusted.
    /// [default: <cache-dir>/update-keys/baleen-update.key, the build's]
    #[arg(
        long,
        env = "BALEEN_UPDATE_KEY",
        value_name = "PATH",
        conflicts_with = "trusted"
    )]
    pub key: Option<PathBuf>,
    /// The build's cache directory, where the default key lives.
    #[arg(long, env = "BALEEN_CACHE_DIR", default_value = "/var/cache/baleen")]
    pub cache_dir: PathBuf,
    /// Accept an unsigned bundle, or one signed only by unknown keys (and say so).
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print the result as versioned JSON (`apiVersion`) on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    api_version: u32,
    bundle: String,
    device_type: String,
    os_version: String,
    min_from_version: Option<String>,
    trust: String,
    payloads: Vec<Payload>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    name: String,
    size: u64,
    compressed_size: u64,
    sha256: String,
}

pub fn verify(args: &VerifyArgs) -> Result<()> {
    let trusted = trusted_keys(args)?;
    let report = check(&args.bundle, &trusted, args.allow_unsigned)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(())
}

fn trusted_keys(args: &VerifyArgs) -> Result<TrustedKeys> {
    if let Some(path) = &args.trusted {
        if path.is_dir() {
            let keys = TrustedKeys::load_dir(path)?;
            for skipped in keys.skipped() {
                tracing::warn!(
                    "skipping key file {}: {}",
                    skipped.path.display(),
                    skipped.reason
                );
            }
            return Ok(keys);
        }
        return Ok(TrustedKeys::from_keys([PublicKey::load(path)?]));
    }
    let path = updatekey::key_path(args.key.as_deref(), &args.cache_dir);
    let key = SigningKey::load(&path).map_err(|e| updatekey::read_hint(e, &path, "--key"))?;
    Ok(TrustedKeys::from_keys([key.public_key()]))
}

/// Opens the bundle and reads every payload to its end with all checks.
fn check(path: &Path, trusted: &TrustedKeys, allow_unsigned: bool) -> Result<Report> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = BufReader::with_capacity(1 << 20, file);
    let mut bundle = Bundle::open(reader, trusted, Policy { allow_unsigned })
        .with_context(|| format!("verifying {}", path.display()))?;
    bundle
        .verify_remaining()
        .with_context(|| format!("verifying {}", path.display()))?;
    let manifest = bundle.manifest();
    Ok(Report {
        api_version: super::API_VERSION,
        bundle: path.display().to_string(),
        device_type: manifest.device_type.clone(),
        os_version: manifest.os_version.to_string(),
        min_from_version: manifest.min_from_version.map(|v| v.to_string()),
        trust: bundle.trust().to_string(),
        payloads: manifest
            .payloads
            .iter()
            .map(|p| Payload {
                name: p.name.clone(),
                size: p.size,
                compressed_size: p.compressed_size,
                sha256: p.sha256.to_string(),
            })
            .collect(),
    })
}

impl Report {
    fn summary(&self) -> String {
        let mut out = format!(
            "bundle {}: good: {} {}, {}\n",
            self.bundle, self.device_type, self.os_version, self.trust
        );
        for p in &self.payloads {
            out += &format!(
                "  {:<7} {} bytes ({} compressed), sha256 {}\n",
                p.name, p.size, p.compressed_size, p.sha256
            );
        }
        if let Some(min) = &self.min_from_version {
            out += &format!("  updates devices running {min} or newer\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::{CreateOptions, ManifestFields, PayloadInput, ROOTFS, create};

    fn make(dir: &Path, signer: Option<&SigningKey>) -> PathBuf {
        let rootfs = dir.join("rootfs.ext4");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&rootfs, content).unwrap();
        let out = dir.join("b.bundle");
        let fields = ManifestFields {
            device_type: "qemux86-64".into(),
            os_version: "1.2.0".parse().unwrap(),
            min_from_version: None,
            created: time::OffsetDateTime::UNIX_EPOCH,
        };
        create(
            &out,
            &fields,
            vec![PayloadInput::file(ROOTFS, &rootfs)],
            signer,
            &CreateOptions::default(),
        )
        .unwrap();
        out
    }

    #[test]
    fn a_good_bundle_passes_and_any_damage_or_wrong_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[3; 32]);
        let path = make(dir.path(), Some(&key));
        let trusted = TrustedKeys::from_keys([key.public_key()]);
        let report = check(&path, &trusted, false).unwrap();
        assert_eq!(
            report.summary().lines().next().unwrap(),
            format!(
                "bundle {}: good: qemux86-64 1.2.0, signed by trusted key {}",
                path.display(),
                key.key_id()
            )
        );
        assert_eq!(report.payloads[0].size, 300_000);

        let other = TrustedKeys::from_keys([SigningKey::from_seed(&[4; 32]).public_key()]);
        let err = format!("{:#}", check(&path, &other, false).unwrap_err());
        assert!(err.contains("untrusted key"), "{err}");

        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = format!("{:#}", check(&path, &trusted, false).unwrap_err());
        assert!(
            err.starts_with(&format!("verifying {}: payload \"rootfs\"", path.display())),
            "{err}"
        );
    }

    #[test]
    fn unsigned_needs_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = make(dir.path(), None);
        let none = TrustedKeys::new();
        let err = format!("{:#}", check(&path, &none, false).unwrap_err());
        assert!(err.contains("unsigned"), "{err}");
        let report = check(&path, &none, true).unwrap();
        assert!(report.trust.starts_with("UNSIGNED"), "{}", report.trust);
    }
}
