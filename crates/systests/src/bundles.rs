//! Update bundles for the update tests: bad bundles derived from a good one, and the LAN's
//! bundle server.
//!
//! # Bad bundles
//!
//! Each fixture copies a good bundle (`baleen bundle create`) into a directory with one defect
//! a device must refuse, and returns the new file's path. The [`Defect`]s:
//!
//! | defect                      | file                       | what changes                      |
//! |-----------------------------|----------------------------|-----------------------------------|
//! | [`corrupted_payload`]       | `corrupted-payload.bundle` | one byte in the middle of the `rootfs` payload's zstd stream |
//! | [`bad_signature`]           | `bad-signature.bundle`     | one hex digit of the signature    |
//! | [`unsigned`]                | `unsigned.bundle`          | signature block `[]`              |
//! | [`wrong_device_type`]       | `wrong-device-type.bundle` | `device_type` `raspberrypi4-64`, signed again |
//! | [`too_large`]               | `too-large.bundle`         | `rootfs` `size` 64 GiB, signed again |
//! | [`truncated`]               | `truncated.bundle`         | only the first half of the file   |
//!
//! Payload offsets count from the start of the payload area, so a manifest of another length
//! moves no payload byte: the re-signed fixtures are a new head ([`bundle::encode_head`])
//! followed by the good bundle's payload area, and only the one check they aim at can refuse
//! them. They are signed with the build's key ([`signing_key`]), the one every test image
//! trusts. Nothing is read into memory beyond the head, so the fixtures work on
//! hundreds of MiB.
//!
//! # The bundle server
//!
//! [`BundleServer::start`] runs this package's `bundle-http-server` in a LAN's namespace: plain
//! HTTP with `Range` support serving one directory's files by name, optionally dropping the
//! connection after some bytes to make the device resume. [`BundleServer::start_tls`] serves
//! the same over TLS, with a certificate from the test CA
//! ([`crate::timeservers::generate_certs`]).

use crate::logwait::{Failed, log_tail};
use crate::timeservers::TestCerts;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bundle::{Manifest, SigningKey};
use vmharness::{NetNs, NsProcess, scaled};

/// Where the build keeps its update signing key, under its cache directory.
pub const SIGNING_KEY_FILE: &str = "update-keys/baleen-update.key";
/// The build's cache directory unless `BALEEN_CACHE_DIR` says otherwise.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/baleen";
/// The device type of [`wrong_device_type`]: valid, and not the test images'.
pub const OTHER_DEVICE_TYPE: &str = "raspberrypi4-64";
/// The `rootfs` size [`too_large`] claims: more than any test disk's root partition.
pub const TOO_LARGE_SIZE: u64 = 64 << 30;

/// What making a fixture or starting the server failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The bundle crate refused something (the good bundle's manifest, the key, a head).
    #[error("{context}: {source}")]
    Bundle {
        context: String,
        #[source]
        source: Box<bundle::Error>,
    },

    /// The good bundle is not one the fixtures can change.
    #[error("{} is not a bundle the fixtures can change: {reason}", path.display())]
    Layout { path: PathBuf, reason: String },

    /// Starting the server in the namespace failed.
    #[error(transparent)]
    Netns(#[from] vmharness::Error),

    /// The server binary is not built.
    #[error(
        "{} not found (looked next to the test executable): build it with \
         `cargo build -p systests --bins`", path.display()
    )]
    ServerBinary { path: PathBuf },

    /// The server exited or stayed silent while starting.
    #[error("bundle-http-server did not start ({why}); its log ends:\n{log_tail}")]
    ServerStart { why: &'static str, log_tail: String },
}

/// Shorthand for results in this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn bundle_err(context: impl Into<String>) -> impl FnOnce(bundle::Error) -> Error {
    let context = context.into();
    move |source| Error::Bundle {
        context,
        source: Box::new(source),
    }
}

// ---------------------------------------------------------------------------------------------
// The signing key
// ---------------------------------------------------------------------------------------------

/// The build's signing key file: `$BALEEN_UPDATE_KEY`, else
/// `${BALEEN_CACHE_DIR:-/var/cache/baleen}/update-keys/baleen-update.key` (as the baleen CLI).
pub fn signing_key_path() -> PathBuf {
    key_path_from(
        std::env::var_os("BALEEN_UPDATE_KEY"),
        std::env::var_os("BALEEN_CACHE_DIR"),
    )
}

/// [`signing_key_path`] from the two variables' values; empty counts as unset. Pure.
fn key_path_from(update_key: Option<OsString>, cache_dir: Option<OsString>) -> PathBuf {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(update_key).unwrap_or_else(|| {
        set(cache_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR))
            .join(SIGNING_KEY_FILE)
    })
}

/// The build's signing key (readable by root only, as the build leaves it).
pub fn signing_key() -> Result<SigningKey> {
    let path = signing_key_path();
    SigningKey::load(&path).map_err(bundle_err(format!(
        "loading the update signing key {} (set BALEEN_UPDATE_KEY or BALEEN_CACHE_DIR to the \
         build's)",
        path.display()
    )))
}

// ---------------------------------------------------------------------------------------------
// Reading a bundle's head
// ---------------------------------------------------------------------------------------------

/// The sections before a bundle's payload area, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// The signature block bytes.
    pub signatures: Vec<u8>,
}

impl Head {
    /// Reads the header, manifest and signature block of the bundle at `path`.
    pub fn read(path: &Path) -> Result<Head> {
        let mut file = File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
        let reading = || io_err(format!("reading the head of {}", path.display()));
        let mut header = [0u8; bundle::HEADER_LEN];
        file.read_exact(&mut header).map_err(reading())?;
        if header[..8] != bundle::MAGIC {
            return Err(Error::Layout {
                path: path.to_owned(),
                reason: "no bundle magic".into(),
            });
        }
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let mut manifest = vec![0u8; word(12) as usize];
        file.read_exact(&mut manifest).map_err(reading())?;
        let mut signatures = vec![0u8; word(16) as usize];
        file.read_exact(&mut signatures).map_err(reading())?;
        Ok(Head {
            manifest,
            signatures,
        })
    }

    /// Where the payload area starts in the file.
    pub fn payload_area(&self) -> u64 {
        (bundle::HEADER_LEN + self.manifest.len() + self.signatures.len()) as u64
    }

    /// The manifest, parsed.
    pub fn parse_manifest(&self, path: &Path) -> Result<Manifest> {
        Manifest::from_bytes(&self.manifest).map_err(bundle_err(format!(
            "reading the manifest of {}",
            path.display()
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// The fixtures
// ---------------------------------------------------------------------------------------------

/// One way a bundle can be bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    CorruptedPayload,
    BadSignature,
    Unsigned,
    WrongDeviceType,
    TooLarge,
    Truncated,
}

impl Defect {
    /// Every defect, in the table's order.
    pub const ALL: [Defect; 6] = [
        Defect::CorruptedPayload,
        Defect::BadSignature,
        Defect::Unsigned,
        Defect::WrongDeviceType,
        Defect::TooLarge,
        Defect::Truncated,
    ];

    /// The defect's name, e.g. `corrupted-payload`.
    pub fn name(self) -> &'static str {
        match self {
            Defect::CorruptedPayload => "corrupted-payload",
            Defect::BadSignature => "bad-signature",
            Defect::Unsigned => "unsigned",
            Defect::WrongDeviceType => "wrong-device-type",
            Defect::TooLarge => "too-large",
            Defect::Truncated => "truncated",
        }
    }

    /// The fixture's file name: `<name>.bundle`.
    pub fn file_name(self) -> String {
        format!("{}.bundle", self.name())
    }

    /// Writes the fixture of `good` into `dir`; `key` signs the ones signed again.
    pub fn write(self, good: &Path, dir: &Path, key: &SigningKey) -> Result<PathBuf> {
        match self {
            Defect::CorruptedPayload => corrupted_payload(good, dir),
            Defect::BadSignature => bad_signature(good, dir),
            Defect::Unsigned => unsigned(good, dir),
            Defect::WrongDeviceType => wrong_device_type(good, dir, key),
            Defect::TooLarge => too_large(good, dir, key),
            Defect::Truncated => truncated(good, dir),
        }
    }
}

/// `good` with one byte in the middle of the `rootfs` payload's zstd stream inverted.
pub fn corrupted_payload(good: &Path, dir: &Path) -> Result<PathBuf> {
    let head = Head::read(good)?;
    let manifest = head.parse_manifest(good)?;
    let rootfs = manifest
        .payload(bundle::ROOTFS)
        .ok_or_else(|| Error::Layout {
            path: good.to_owned(),
            reason: "no rootfs payload".into(),
        })?;
    let at = head.payload_area() + rootfs.offset + rootfs.compressed_size / 2;
    let out = copy_into(good, dir, Defect::CorruptedPayload)?;
    patch_byte(&out, at, |b| !b)?;
    Ok(out)
}

/// `good` with the first hex digit of its (first) signature changed.
pub fn bad_signature(good: &Path, dir: &Path) -> Result<PathBuf> {
    let head = Head::read(good)?;
    const FIELD: &[u8] = b"\"signature\":\"";
    let digit = head
        .signatures
        .windows(FIELD.len())
        .position(|w| w == FIELD)
        .map(|i| i + FIELD.len())
        .ok_or_else(|| Error::Layout {
            path: good.to_owned(),
            reason: "it is not signed".into(),
        })?;
    let at = (bundle::HEADER_LEN + head.manifest.len() + digit) as u64;
    let out = copy_into(good, dir, Defect::BadSignature)?;
    patch_byte(&out, at, |b| if b == b'0' { b'1' } else { b'0' })?;
    Ok(out)
}

/// `good` with an empty signature block `[]`.
pub fn unsigned(good: &Path, dir: &Path) -> Result<PathBuf> {
    let head = Head::read(good)?;
    with_new_head(good, &head, dir, Defect::Unsigned, &head.manifest, None)
}

/// `good` for [`OTHER_DEVICE_TYPE`], signed again with `key`.
pub fn wrong_device_type(good: &Path, dir: &Path, key: &SigningKey) -> Result<PathBuf> {
    resigned(good, dir, Defect::WrongDeviceType, key, |m| {
        m.device_type = OTHER_DEVICE_TYPE.into();
    })
}

/// `good` claiming a `rootfs` of [`TOO_LARGE_SIZE`] bytes, signed again with `key`.
pub fn too_large(good: &Path, dir: &Path, key: &SigningKey) -> Result<PathBuf> {
    resigned(good, dir, Defect::TooLarge, key, |m| {
        for p in m.payloads.iter_mut().filter(|p| p.name == bundle::ROOTFS) {
            p.size = TOO_LARGE_SIZE;
        }
    })
}

/// The first half of `good`.
pub fn truncated(good: &Path, dir: &Path) -> Result<PathBuf> {
    let out = dir.join(Defect::Truncated.file_name());
    let mut from = File::open(good).map_err(io_err(format!("opening {}", good.display())))?;
    let half = from
        .metadata()
        .map_err(io_err(format!("reading the size of {}", good.display())))?
        .len()
        / 2;
    let mut to = File::create(&out).map_err(io_err(format!("creating {}", out.display())))?;
    io::copy(&mut (&mut from).take(half), &mut to).map_err(io_err(format!(
        "copying {} to {}",
        good.display(),
        out.display()
    )))?;
    Ok(out)
}

fn copy_into(good: &Path, dir: &Path, defect: Defect) -> Result<PathBuf> {
    let out = dir.join(defect.file_name());
    fs::copy(good, &out).map_err(io_err(format!(
        "copying {} to {}",
        good.display(),
        out.display()
    )))?;
    Ok(out)
}

fn patch_byte(path: &Path, at: u64, change: impl FnOnce(u8) -> u8) -> Result<()> {
    let patching = || io_err(format!("changing byte {at} of {}", path.display()));
    let mut file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(patching())?;
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).map_err(patching())?;
    file.read_exact(&mut byte).map_err(patching())?;
    file.seek(SeekFrom::Start(at)).map_err(patching())?;
    file.write_all(&[change(byte[0])]).map_err(patching())?;
    file.sync_all().map_err(patching())
}

fn resigned(
    good: &Path,
    dir: &Path,
    defect: Defect,
    key: &SigningKey,
    edit: impl FnOnce(&mut Manifest),
) -> Result<PathBuf> {
    let head = Head::read(good)?;
    let mut manifest = head.parse_manifest(good)?;
    edit(&mut manifest);
    with_new_head(good, &head, dir, defect, &manifest.to_bytes(), Some(key))
}

/// Writes `manifest` (signed by `signer`) followed by `good`'s payload area.
fn with_new_head(
    good: &Path,
    head: &Head,
    dir: &Path,
    defect: Defect,
    manifest: &[u8],
    signer: Option<&SigningKey>,
) -> Result<PathBuf> {
    let out = dir.join(defect.file_name());
    let new_head = bundle::encode_head(manifest, signer)
        .map_err(bundle_err(format!("making the head of {}", out.display())))?;
    let writing = || io_err(format!("writing {}", out.display()));
    let mut from = File::open(good).map_err(io_err(format!("opening {}", good.display())))?;
    from.seek(SeekFrom::Start(head.payload_area()))
        .map_err(io_err(format!("reading {}", good.display())))?;
    let mut to = File::create(&out).map_err(writing())?;
    to.write_all(&new_head).map_err(writing())?;
    io::copy(&mut from, &mut to).map_err(writing())?;
    to.sync_all().map_err(writing())?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The bundle server
// ---------------------------------------------------------------------------------------------

/// The file name of the server binary (this package's `src/bin/bundle-http-server.rs`).
pub const SERVER_BIN: &str = "bundle-http-server";
/// What the server prints once it listens.
pub const LISTENING: &str = "listening on";
const STARTUP: Duration = Duration::from_secs(30);

/// How the server misbehaves, to make the device resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Close the connection after sending this many body bytes of a response.
    pub drop_after: Option<u64>,
    /// Do that to this many responses (the server's default when `None`).
    pub drop_count: Option<u32>,
}

/// `bundle-http-server` running in a namespace; killed on drop.
#[derive(Debug)]
pub struct BundleServer {
    process: NsProcess,
    base_url: String,
    log: PathBuf,
    requests: PathBuf,
}

impl BundleServer {
    /// Serves `dir`'s files over plain HTTP on `addr:port` in `ns`; returns once the server
    /// listens. Its output goes to `dir/../bundle-http-server.log`, its request log to
    /// `dir/../bundle-http-requests.log`.
    pub fn start(
        ns: &NetNs,
        addr: &str,
        port: u16,
        dir: &Path,
        faults: Faults,
    ) -> Result<BundleServer> {
        BundleServer::launch(ns, addr, port, dir, faults, None)
    }

    /// [`BundleServer::start`] over TLS with `certs`' server certificate (one for `addr`, see
    /// [`crate::timeservers::generate_certs`]): `https://` URLs, logs named `bundle-https-*`,
    /// the certificate and key written to `dir/../bundle-https-tls/`.
    pub fn start_tls(
        ns: &NetNs,
        addr: &str,
        port: u16,
        dir: &Path,
        faults: Faults,
        certs: &TestCerts,
    ) -> Result<BundleServer> {
        BundleServer::launch(ns, addr, port, dir, faults, Some(certs))
    }

    fn launch(
        ns: &NetNs,
        addr: &str,
        port: u16,
        dir: &Path,
        faults: Faults,
        tls: Option<&TestCerts>,
    ) -> Result<BundleServer> {
        let bin = server_binary()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let parent = dir.parent().unwrap_or(dir);
        let log = parent.join(format!("bundle-{scheme}-server.log"));
        let requests = parent.join(format!("bundle-{scheme}-requests.log"));
        let mut argv = server_argv(&bin, &format!("{addr}:{port}"), dir, &requests, faults);
        if let Some(certs) = tls {
            let tls_dir = parent.join("bundle-https-tls");
            fs::create_dir_all(&tls_dir)
                .map_err(io_err(format!("creating {}", tls_dir.display())))?;
            for (flag, name, pem) in [
                ("--tls-cert", "server.pem", &certs.server_pem),
                ("--tls-key", "server-key.pem", &certs.server_key_pem),
            ] {
                let path = tls_dir.join(name);
                fs::write(&path, pem).map_err(io_err(format!("writing {}", path.display())))?;
                argv.extend([flag.to_owned(), path.display().to_string()]);
            }
        }
        let mut process =
            ns.spawn_logged(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &log)?;
        // Only a line that starts with it: a bind error quotes "listening on" too.
        crate::logwait::wait_for_log(&log, &mut process, scaled(STARTUP), |text| {
            text.lines().any(|l| l.starts_with(LISTENING))
        })
        .map_err(|failed| match failed {
            Failed::Exited(log_tail) => Error::ServerStart {
                why: "it exited",
                log_tail,
            },
            Failed::TimedOut(log_tail) => Error::ServerStart {
                why: "it never said it listens",
                log_tail,
            },
        })?;
        tracing::info!(netns = %ns.name(), %addr, port, scheme, "bundle server ready");
        Ok(BundleServer {
            process,
            base_url: format!("{scheme}://{addr}:{port}"),
            log,
            requests,
        })
    }

    /// `http://ADDR:PORT/<name>` (`https://` over TLS).
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }

    /// The last lines of the server's output and of its request log, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- {}\n{}\n--- {}\n{}",
            self.log.display(),
            log_tail(&self.log),
            self.requests.display(),
            log_tail(&self.requests)
        )
    }

    /// Stops the server.
    pub fn close(self) -> Result<()> {
        Ok(self.process.kill()?)
    }
}

/// The server's command line. Pure.
fn server_argv(
    bin: &Path,
    listen: &str,
    dir: &Path,
    requests: &Path,
    faults: Faults,
) -> Vec<String> {
    let mut argv = vec![
        bin.display().to_string(),
        "--listen".into(),
        listen.into(),
        "--dir".into(),
        dir.display().to_string(),
        "--log".into(),
        requests.display().to_string(),
    ];
    if let Some(bytes) = faults.drop_after {
        argv.extend(["--drop-after".into(), bytes.to_string()]);
    }
    if let Some(count) = faults.drop_count {
        argv.extend(["--drop-count".into(), count.to_string()]);
    }
    argv
}

/// `bundle-http-server` of this build: beside the running executable, or one directory up from
/// cargo's `deps` directory where test executables live.
pub fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("finding the running test executable"))?;
    let mut dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let path = dir.join(SERVER_BIN);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ServerBinary { path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::{Bundle, CreateOptions, ManifestFields, PayloadInput, Policy, Trust, TrustedKeys};

    const DEVICE: &str = "qemux86-64";
    const LAX: Policy = Policy {
        allow_unsigned: true,
    };

    fn key() -> SigningKey {
        SigningKey::from_seed(&[5; 32])
    }

    fn trusted() -> TrustedKeys {
        TrustedKeys::from_keys([key().public_key()])
    }

    /// A signed bundle with a 400 KB `rootfs` (half noise, so its stream is long) and a small
    /// `boot` payload, in `dir`.
    fn good(dir: &Path) -> PathBuf {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let rootfs: Vec<u8> = (0..400_000u32)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 2 == 0 {
                    state as u8
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        let boot = dir.join("boot");
        fs::create_dir_all(boot.join("EFI/BOOT")).unwrap();
        fs::write(boot.join("EFI/BOOT/BOOTX64.EFI"), b"efi").unwrap();
        let out = dir.join("good.bundle");
        bundle::create(
            &out,
            &ManifestFields {
                device_type: DEVICE.into(),
                os_version: "0.2.0".parse().unwrap(),
                min_from_version: None,
                created: time_of(1_767_225_600),
            },
            vec![
                PayloadInput::reader(bundle::ROOTFS, &rootfs[..]),
                PayloadInput::boot_dir(bundle::BOOT, &boot),
            ],
            Some(&key()),
            &CreateOptions::default(),
        )
        .unwrap();
        out
    }

    fn time_of(unix: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    /// Opens the bundle at `path` the way a device does: trust, compatibility, every payload.
    fn install_check(path: &Path, policy: Policy) -> Result<Trust, bundle::Error> {
        let mut bundle = Bundle::open(File::open(path).unwrap(), &trusted(), policy)?;
        bundle.check_compatible(DEVICE, "0.1.0", 1 << 30)?;
        bundle.verify_remaining()?;
        Ok(bundle.trust().clone())
    }

    #[test]
    fn the_good_bundle_passes_and_every_fixture_is_refused_for_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = good(dir.path());
        let good_len = fs::metadata(&good).unwrap().len();
        assert_eq!(
            install_check(&good, Policy::default()).unwrap(),
            Trust::Signed {
                key_id: key().key_id()
            }
        );
        for defect in Defect::ALL {
            let path = defect.write(&good, dir.path(), &key()).unwrap();
            assert_eq!(path, dir.path().join(defect.file_name()));
            let err = install_check(&path, Policy::default()).unwrap_err();
            let text = err.to_string();
            match defect {
                Defect::CorruptedPayload => {
                    assert!(
                        matches!(
                            err,
                            bundle::Error::PayloadCorrupt { .. }
                                | bundle::Error::PayloadHashMismatch { .. }
                        ),
                        "{text}"
                    );
                    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
                }
                Defect::BadSignature => {
                    assert!(matches!(err, bundle::Error::BadSignature { .. }), "{text}");
                    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
                }
                Defect::Unsigned => {
                    assert!(matches!(err, bundle::Error::Unsigned { .. }), "{text}");
                    // Only the signature is gone: allowed, it installs.
                    assert_eq!(install_check(&path, LAX).unwrap(), Trust::Unsigned);
                }
                Defect::WrongDeviceType => {
                    assert!(
                        matches!(err, bundle::Error::WrongDeviceType { .. }),
                        "{text}"
                    );
                    assert!(text.contains(OTHER_DEVICE_TYPE), "{text}");
                }
                Defect::TooLarge => {
                    assert!(
                        matches!(err, bundle::Error::PayloadTooLarge { .. }),
                        "{text}"
                    );
                    assert!(text.contains(&TOO_LARGE_SIZE.to_string()), "{text}");
                }
                Defect::Truncated => {
                    assert!(
                        matches!(
                            err,
                            bundle::Error::Truncated { .. }
                                | bundle::Error::PayloadTruncated { .. }
                        ),
                        "{text}"
                    );
                    assert_eq!(fs::metadata(&path).unwrap().len(), good_len / 2);
                }
            }
        }
    }

    #[test]
    fn re_signed_fixtures_keep_every_payload_byte() {
        let dir = tempfile::tempdir().unwrap();
        let good = good(dir.path());
        let good_head = Head::read(&good).unwrap();
        let good_bytes = fs::read(&good).unwrap();
        let area = &good_bytes[good_head.payload_area() as usize..];
        for defect in [Defect::Unsigned, Defect::WrongDeviceType, Defect::TooLarge] {
            let path = defect.write(&good, dir.path(), &key()).unwrap();
            let head = Head::read(&path).unwrap();
            let bytes = fs::read(&path).unwrap();
            assert_eq!(&bytes[head.payload_area() as usize..], area, "{defect:?}");
            let manifest = head.parse_manifest(&path).unwrap();
            let rootfs = manifest.payload(bundle::ROOTFS).unwrap();
            let expected_size = if defect == Defect::TooLarge {
                TOO_LARGE_SIZE
            } else {
                good_head
                    .parse_manifest(&good)
                    .unwrap()
                    .payload(bundle::ROOTFS)
                    .unwrap()
                    .size
            };
            assert_eq!(rootfs.size, expected_size, "{defect:?}");
        }
        let unsigned = Head::read(&dir.path().join("unsigned.bundle")).unwrap();
        assert_eq!(unsigned.signatures, b"[]");
        assert_eq!(unsigned.manifest, good_head.manifest);
        // The device type fixture passes on the device it names.
        let path = dir.path().join("wrong-device-type.bundle");
        let bundle =
            Bundle::open(File::open(&path).unwrap(), &trusted(), Policy::default()).unwrap();
        bundle
            .check_compatible(OTHER_DEVICE_TYPE, "0.1.0", 1 << 30)
            .unwrap();
    }

    #[test]
    fn fixtures_of_something_else_say_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_bundle = dir.path().join("x.bundle");
        fs::write(&not_a_bundle, [0u8; 64]).unwrap();
        assert_eq!(
            unsigned(&not_a_bundle, dir.path()).unwrap_err().to_string(),
            format!(
                "{} is not a bundle the fixtures can change: no bundle magic",
                not_a_bundle.display()
            )
        );
        let good = good(dir.path());
        let plain = unsigned(&good, dir.path()).unwrap();
        let err = bad_signature(&plain, dir.path()).unwrap_err();
        assert!(err.to_string().ends_with("it is not signed"), "{err}");
    }

    #[test]
    fn the_key_is_where_the_cli_looks() {
        let os = |s: &str| Some(OsString::from(s));
        assert_eq!(
            key_path_from(None, None),
            Path::new("/var/cache/baleen/update-keys/baleen-update.key")
        );
        assert_eq!(
            key_path_from(None, os("/c")),
            Path::new("/c/update-keys/baleen-update.key")
        );
        assert_eq!(key_path_from(os("/k.pem"), os("/c")), Path::new("/k.pem"));
        assert_eq!(
            key_path_from(os(""), os("")),
            Path::new("/var/cache/baleen/update-keys/baleen-update.key")
        );
    }

    #[test]
    fn the_server_command_line_names_only_the_faults_asked_for() {
        let argv = |faults| {
            server_argv(
                Path::new("/t/bundle-http-server"),
                "10.0.2.2:8080",
                Path::new("/s/www"),
                Path::new("/s/requests.log"),
                faults,
            )
            .join(" ")
        };
        assert_eq!(
            argv(Faults::default()),
            "/t/bundle-http-server --listen 10.0.2.2:8080 --dir /s/www --log /s/requests.log"
        );
        assert_eq!(
            argv(Faults {
                drop_after: Some(60_000_000),
                drop_count: Some(1),
            }),
            "/t/bundle-http-server --listen 10.0.2.2:8080 --dir /s/www --log /s/requests.log \
             --drop-after 60000000 --drop-count 1"
        );
    }
}
