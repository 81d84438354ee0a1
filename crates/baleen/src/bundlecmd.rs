//! `baleen bundle create`: an update bundle (the `bundle` crate's format, docs/updates.md) from
//! an image `baleen build` made, signed with the build's update key. This module finds the
//! image, its build manifest and the key, and reports; [`image`] reads the image into payloads.
//! `baleen bundle verify` ([`verify`]) checks a bundle on the host.

mod image;
mod verify;

use crate::build::updatekey;
use anyhow::{Context, Result, bail};
use bundle::{ManifestFields, SigningKey};
use clap::Subcommand;
use osversion::HostOsVersion;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether a boot partition path (`EFI/BOOT/BOOTX64.EFI`, `os-release`…) belongs to a release
/// (travels in a bundle's `boot` payload) rather than to the device.
pub fn is_release_boot_file(path: &str) -> bool {
    image::is_release_file(path)
}

/// `apiVersion` of `--json` output.
const API_VERSION: u32 = 1;

#[derive(Subcommand)]
pub enum Command {
    /// Make a signed update bundle from an image `baleen build` made: the root filesystem
    /// (resin-rootA) and the release's boot files, compressed, with a signed manifest.
    Create(CreateArgs),
    /// Check a bundle on the host: its signature, and every payload's sizes and SHA-256 sums
    /// (the decompressed one too, which devices leave to their read-back).
    Verify(verify::VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The image (`<device>.img`, with `<device>.manifest.json` beside it).
    #[arg(long, value_name = "IMAGE", conflicts_with = "out_dir")]
    pub image: Option<PathBuf>,
    /// The build's output directory (`baleen build --out`); it must hold one image.
    /// [default: out]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Private key to sign with (ed25519, PKCS#8 PEM): the one the image was built with.
    /// [default: <cache-dir>/update-keys/baleen-update.key, the build's]
    #[arg(long, env = "BALEEN_UPDATE_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// The build's cache directory, where the default key lives.
    #[arg(long, env = "BALEEN_CACHE_DIR", default_value = "/var/cache/baleen")]
    pub cache_dir: PathBuf,
    /// Oldest running OS version the bundle may update (`X.Y.Z[-betaN][+revN]`); default: any.
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub min_from_version: Option<HostOsVersion>,
    /// Without a key at the default path, make an unsigned bundle instead of failing
    /// (development only: devices refuse unsigned bundles unless told to allow them).
    #[arg(long)]
    pub allow_unsigned_output: bool,
    /// The bundle file to write (replaced if it exists).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Print the result as versioned JSON (`apiVersion`) on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_version(text: &str) -> Result<HostOsVersion, String> {
    text.parse().map_err(|e: osversion::Error| e.to_string())
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Create(args) => create(&args),
        Command::Verify(args) => verify::verify(&args),
    }
}

fn create(args: &CreateArgs) -> Result<()> {
    let source = locate(args.image.as_deref(), args.out_dir.as_deref())?;
    let built = BuildManifest::load(&source.manifest)?;
    let os_version: HostOsVersion = built.os_version.parse().with_context(|| {
        format!(
            "reading osVersion from {}: rebuild the image with this baleen",
            source.manifest.display()
        )
    })?;
    check_min_from(args.min_from_version, os_version)?;
    check_output(&args.output, &source.image)?;
    let key_path = updatekey::key_path(args.key.as_deref(), &args.cache_dir);
    let signer = match choose_signer(
        args.key.is_some(),
        &key_path,
        key_present(&key_path)?,
        args.allow_unsigned_output,
    )? {
        Signer::Key(path) => {
            let key =
                SigningKey::load(&path).map_err(|e| updatekey::read_hint(e, &path, "--key"))?;
            Some((key, path))
        }
        Signer::Unsigned => None,
    };
    warn_about_keys(&built, signer.as_ref().map(|(k, _)| k));

    let fields = ManifestFields {
        device_type: built.device.clone(),
        os_version,
        min_from_version: args.min_from_version,
        created:
            time::OffsetDateTime::from_unix_timestamp(crate::build::time::build_epoch() as i64)
                .context("the build time (SOURCE_DATE_EPOCH) is out of range")?,
    };
    let made = image::make_bundle(
        &source.image,
        &fields,
        signer.as_ref().map(|(k, _)| k),
        &args.output,
    )?;
    let image_meta = std::fs::metadata(&source.image)
        .with_context(|| format!("reading {}", source.image.display()))?;
    let report = Report {
        api_version: API_VERSION,
        bundle: args.output.display().to_string(),
        bundle_bytes: made.bundle_bytes,
        image: source.image.display().to_string(),
        image_bytes: image_meta.len(),
        image_allocated_bytes: image_meta.blocks() * 512,
        device_type: built.device.clone(),
        os_version: os_version.to_string(),
        min_from_version: args.min_from_version.map(|v| v.to_string()),
        key_id: signer.as_ref().map(|(k, _)| k.key_id().to_string()),
        key_file: signer.as_ref().map(|(_, p)| p.display().to_string()),
        payloads: made
            .manifest
            .payloads
            .iter()
            .map(|p| PayloadReport {
                name: p.name.clone(),
                size: p.size,
                compressed_size: p.compressed_size,
                sha256: p.sha256.to_string(),
            })
            .collect(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.bundle);
        eprint!("{}", report.summary());
    }
    Ok(())
}

/// The image and the build manifest beside it.
#[derive(Debug, PartialEq, Eq)]
struct Source {
    image: PathBuf,
    manifest: PathBuf,
}

const MANIFEST_SUFFIX: &str = ".manifest.json";

/// Finds the image: `--image` with its manifest beside it, or the one image in `--out-dir`
/// (default `out`).
fn locate(image: Option<&Path>, out_dir: Option<&Path>) -> Result<Source> {
    if let Some(image) = image {
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".img").unwrap_or(&name);
        let manifest = image.with_file_name(format!("{stem}{MANIFEST_SUFFIX}"));
        if !image.is_file() {
            bail!(
                "image {} not found: pass the .img file `baleen build` wrote",
                image.display()
            );
        }
        if !manifest.is_file() {
            bail!(
                "no build manifest {} beside the image {}: the bundle takes the device type and \
                 OS version from it; keep the image and its manifest together as `baleen build` \
                 wrote them",
                manifest.display(),
                image.display()
            );
        }
        return Ok(Source {
            image: image.to_path_buf(),
            manifest,
        });
    }
    let dir = out_dir.unwrap_or(Path::new("out"));
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "reading the output directory {}: pass --out-dir with the directory `baleen build \
             --out` wrote to, or --image",
            dir.display()
        )
    })?;
    let mut stems: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(MANIFEST_SUFFIX)?;
            (!stem.is_empty() && !stem.starts_with('.')).then(|| stem.to_string())
        })
        .collect();
    stems.sort();
    match stems.as_slice() {
        [] => bail!(
            "no image in {} (no <device>{MANIFEST_SUFFIX}): build one with `baleen build --out \
             {}`, or pass --image",
            dir.display(),
            dir.display()
        ),
        [stem] => locate(Some(&dir.join(format!("{stem}.img"))), None),
        several => bail!(
            "{} holds several images ({}): pass --image {}/<device>.img",
            dir.display(),
            several.join(", "),
            dir.display()
        ),
    }
}

/// What the bundle needs from the build manifest (`<device>.manifest.json`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildManifest {
    device: String,
    os_version: String,
    #[serde(default)]
    variant: String,
    /// Absent in manifests of images built before update signing.
    #[serde(default)]
    update_key_id: Option<String>,
}

impl BuildManifest {
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "reading the build manifest {}: expected the JSON `baleen build` writes",
                path.display()
            )
        })
    }
}

fn check_min_from(min_from: Option<HostOsVersion>, os_version: HostOsVersion) -> Result<()> {
    match min_from {
        Some(min) if min > os_version => bail!(
            "--min-from-version {min} is newer than the bundle's OS version {os_version}: \
             give a version at most {os_version}"
        ),
        _ => Ok(()),
    }
}

/// Refuses to write the bundle over the image it is made from.
fn check_output(output: &Path, image: &Path) -> Result<()> {
    let same = match (std::fs::canonicalize(output), std::fs::canonicalize(image)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "the output {} is the image itself: pass another -o FILE, e.g. {}",
            output.display(),
            image.with_extension("bundle").display()
        );
    }
    Ok(())
}

/// How the bundle is signed.
#[derive(Debug, PartialEq, Eq)]
enum Signer {
    Key(PathBuf),
    Unsigned,
}

/// Whether the key file exists; errors other than "not found" (a directory we may not read)
/// are errors, never taken as "no key".
fn key_present(path: &Path) -> Result<bool> {
    match path.symlink_metadata() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "looking for the update signing key {}: the build keeps it readable only by the \
             user who built (root); run as that user or pass --key with a copy you may read",
            path.display()
        ))),
    }
}

/// Sign with the key at `path` when it exists. A missing key named by `--key` (or
/// `BALEEN_UPDATE_KEY`) is an error; a missing default key is an error unless unsigned output
/// is allowed.
fn choose_signer(
    explicit: bool,
    path: &Path,
    exists: bool,
    allow_unsigned: bool,
) -> Result<Signer> {
    if exists {
        return Ok(Signer::Key(path.to_path_buf()));
    }
    if explicit {
        bail!(
            "update signing key {} not found: pass --key (or BALEEN_UPDATE_KEY) with the key the \
             image was built with (`baleen build --update-key`)",
            path.display()
        );
    }
    if allow_unsigned {
        return Ok(Signer::Unsigned);
    }
    bail!(
        "no update signing key at {}, where `baleen build` keeps the key it generates: pass \
         --key with the key the image was built with, --cache-dir with the build's cache \
         directory, or --allow-unsigned-output for an unsigned bundle (development only)",
        path.display()
    )
}

fn warn_about_keys(built: &BuildManifest, signer: Option<&SigningKey>) {
    let signed_with = signer.map(|k| k.key_id().to_string());
    match (&built.update_key_id, &signed_with) {
        (None, _) => tracing::warn!(
            "the image carries no update key (built before update signing): devices running \
             it will refuse every signed bundle"
        ),
        (Some(trusted), Some(key)) if trusted != key => tracing::warn!(
            "the image was built with update key {trusted} but the bundle is signed with key \
             {key}: devices accept it only if their running OS trusts {key}, and once updated \
             they trust only {trusted}"
        ),
        _ => {}
    }
    if signer.is_none() {
        tracing::warn!(
            "making an UNSIGNED bundle ({} image): devices refuse it unless unsigned bundles \
             are explicitly allowed (development images only)",
            if built.variant.is_empty() {
                "unknown"
            } else {
                &built.variant
            }
        );
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PayloadReport {
    name: String,
    size: u64,
    compressed_size: u64,
    sha256: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    api_version: u32,
    bundle: String,
    bundle_bytes: u64,
    image: String,
    image_bytes: u64,
    /// What the sparse image occupies on disk.
    image_allocated_bytes: u64,
    device_type: String,
    os_version: String,
    min_from_version: Option<String>,
    /// `null` for an unsigned bundle.
    key_id: Option<String>,
    key_file: Option<String>,
    payloads: Vec<PayloadReport>,
}

impl Report {
    /// The human summary, on stderr after the path on stdout.
    fn summary(&self) -> String {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64);
        let mut out = format!(
            "bundle {}: {} {}, {} (image {}, {} allocated)\n",
            self.bundle,
            self.device_type,
            self.os_version,
            mib(self.bundle_bytes),
            mib(self.image_bytes),
            mib(self.image_allocated_bytes),
        );
        for p in &self.payloads {
            out += &format!(
                "  {:<7} {} -> {}\n",
                p.name,
                mib(p.size),
                mib(p.compressed_size)
            );
        }
        if let Some(min) = &self.min_from_version {
            out += &format!("  updates devices running {min} or newer\n");
        }
        out += &match (&self.key_id, &self.key_file) {
            (Some(id), Some(file)) => format!("signed with update key {id} ({file})\n"),
            _ => "UNSIGNED: devices refuse it unless unsigned bundles are allowed\n".to_string(),
        };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<CreateArgs, String> {
        let argv = ["baleen", "create"].iter().chain(args);
        match Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Create(a) => Ok(a),
            Command::Verify(_) => Err("not create".into()),
        }
    }

    #[test]
    fn arguments_are_validated() {
        let a = parse(&["-o", "b.bundle", "--min-from-version", "6.1.0+rev2"]).unwrap();
        assert_eq!(a.output, Path::new("b.bundle"));
        assert_eq!(a.min_from_version.unwrap().to_string(), "6.1.0+rev2");
        assert!(!a.allow_unsigned_output);

        let err = parse(&["--image", "x.img", "--out-dir", "out", "-o", "b"]).unwrap_err();
        assert!(err.contains("cannot be used with"), "{err}");
        let err = parse(&["--image", "x.img"]).unwrap_err();
        assert!(err.contains("--output <FILE>"), "{err}");
        let err = parse(&["-o", "b", "--min-from-version", "6.1"]).unwrap_err();
        assert!(err.contains("invalid value '6.1'"), "{err}");
    }

    #[test]
    fn min_from_version_may_not_exceed_the_bundle() {
        let v = |s: &str| s.parse::<HostOsVersion>().unwrap();
        assert!(check_min_from(None, v("1.0.0")).is_ok());
        assert!(check_min_from(Some(v("1.0.0")), v("1.0.0")).is_ok());
        let err = check_min_from(Some(v("1.0.0+rev1")), v("1.0.0")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--min-from-version 1.0.0+rev1 is newer than the bundle's OS version 1.0.0: give a \
             version at most 1.0.0"
        );
    }

    #[test]
    fn signer_choice() {
        let p = Path::new("/c/update-keys/baleen-update.key");
        let key = Signer::Key(p.to_path_buf());
        assert_eq!(choose_signer(false, p, true, false).unwrap(), key);
        assert_eq!(choose_signer(true, p, true, true).unwrap(), key);
        assert_eq!(
            choose_signer(false, p, false, true).unwrap(),
            Signer::Unsigned
        );
        let err = choose_signer(true, p, false, true).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "update signing key /c/update-keys/baleen-update.key not found: pass --key"
            ),
            "{err}"
        );
        let err = choose_signer(false, p, false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--allow-unsigned-output"), "{err}");
    }

    #[test]
    fn key_presence_tells_missing_from_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!key_present(&dir.path().join("k.key")).unwrap());
        std::fs::write(dir.path().join("k.key"), "x").unwrap();
        assert!(key_present(&dir.path().join("k.key")).unwrap());
        // A regular file where a directory should be: not "missing".
        let err = key_present(&dir.path().join("k.key/inner")).unwrap_err();
        assert!(format!("{err:#}").contains("pass --key"), "{err:#}");
    }

    #[test]
    fn locate_finds_the_one_image_and_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = format!("{:#}", locate(None, Some(d)).unwrap_err());
        assert!(
            err.contains("no image in") && err.contains("baleen build --out"),
            "{err}"
        );

        std::fs::write(d.join("qemux86-64.manifest.json"), "{}").unwrap();
        let err = format!("{:#}", locate(None, Some(d)).unwrap_err());
        assert!(err.contains("qemux86-64.img not found"), "{err}");
        std::fs::write(d.join("qemux86-64.img"), "").unwrap();
        let want = Source {
            image: d.join("qemux86-64.img"),
            manifest: d.join("qemux86-64.manifest.json"),
        };
        assert_eq!(locate(None, Some(d)).unwrap(), want);
        assert_eq!(locate(Some(&d.join("qemux86-64.img")), None).unwrap(), want);

        std::fs::write(d.join("other.manifest.json"), "{}").unwrap();
        let err = format!("{:#}", locate(None, Some(d)).unwrap_err());
        assert!(err.contains("several images (other, qemux86-64)"), "{err}");

        std::fs::write(d.join("lone.img"), "").unwrap();
        let err = format!("{:#}", locate(Some(&d.join("lone.img")), None).unwrap_err());
        assert!(err.contains("no build manifest"), "{err}");
    }

    #[test]
    fn the_output_may_not_be_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("a.img");
        std::fs::write(&image, "").unwrap();
        assert!(check_output(&dir.path().join("a.bundle"), &image).is_ok());
        let err = check_output(&image, &image).unwrap_err().to_string();
        assert!(err.contains("is the image itself"), "{err}");
    }

    fn report(key: bool) -> Report {
        Report {
            api_version: API_VERSION,
            bundle: "out/b.bundle".into(),
            bundle_bytes: 195 << 20,
            image: "out/qemux86-64.img".into(),
            image_bytes: 2428 << 20,
            image_allocated_bytes: 744 << 20,
            device_type: "qemux86-64".into(),
            os_version: "6.1.0".into(),
            min_from_version: Some("6.0.0".into()),
            key_id: key.then(|| "eb97d822da8ad43b".into()),
            key_file: key.then(|| "/var/cache/baleen/update-keys/baleen-update.key".into()),
            payloads: vec![PayloadReport {
                name: "rootfs".into(),
                size: 1 << 30,
                compressed_size: 175 << 20,
                sha256: "00".repeat(32),
            }],
        }
    }

    #[test]
    fn report_text_and_json() {
        assert_eq!(
            report(true).summary(),
            "bundle out/b.bundle: qemux86-64 6.1.0, 195.0 MiB (image 2428.0 MiB, 744.0 MiB \
             allocated)\n  rootfs  1024.0 MiB -> 175.0 MiB\n  updates devices running 6.0.0 or \
             newer\nsigned with update key eb97d822da8ad43b \
             (/var/cache/baleen/update-keys/baleen-update.key)\n"
        );
        assert!(
            report(false)
                .summary()
                .ends_with("\nUNSIGNED: devices refuse it unless unsigned bundles are allowed\n")
        );
        let json = serde_json::to_value(report(false)).unwrap();
        assert_eq!(json["apiVersion"], 1);
        assert_eq!(json["keyId"], serde_json::Value::Null);
        assert_eq!(json["bundleBytes"], 195 << 20);
        assert_eq!(json["payloads"][0]["compressedSize"], 175 << 20);
    }
}
