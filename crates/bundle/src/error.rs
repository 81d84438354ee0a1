//! The one error type of this crate.
//!
//! Messages name the object (payload, key file, field) and the values involved, and say how to
//! fix the problem where there is a fix. The caller adds the bundle's own file name or URL as
//! context, since [`Bundle::open`](crate::Bundle::open) only sees a reader.

use std::io;
use std::path::PathBuf;

use osversion::HostOsVersion;

use crate::KeyId;

/// Everything that can go wrong making, opening, verifying or unpacking a bundle.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- the container ----
    /// The data does not start with the bundle magic.
    #[error(
        "not a baleen bundle: it starts with {found:02x?} instead of \"BALEENB\\0\"; \
         pass a file made by `baleen bundle create`"
    )]
    NotABundle {
        /// The first bytes found (fewer than 8 when the data is that short).
        found: Vec<u8>,
    },
    /// The bundle uses a format version this code does not read.
    #[error(
        "bundle format version {found} is not supported (this baleen reads version {supported}): \
         make the bundle with a baleen release that writes version {supported}, or update to an \
         OS release that reads version {found} first"
    )]
    UnsupportedFormat {
        /// The version in the header.
        found: u32,
        /// The version this code reads and writes.
        supported: u32,
    },
    /// A length in the header is zero or over its limit.
    #[error("bundle header is invalid: the {section} length {len} is outside 1..={max} bytes")]
    BadHeaderLength {
        /// `manifest` or `signature block`.
        section: &'static str,
        /// The length in the header.
        len: u32,
        /// The largest length accepted.
        max: u32,
    },
    /// The data ends inside the header, the manifest or the signature block.
    #[error(
        "bundle is truncated: it ends inside the {section} ({got} of {expected} bytes); \
         download or copy it again"
    )]
    Truncated {
        /// `header`, `manifest` or `signature block`.
        section: &'static str,
        /// Bytes the section should have.
        expected: u64,
        /// Bytes that were there.
        got: u64,
    },
    /// Reading the bundle failed (outside a payload).
    #[error("reading the bundle's {section}")]
    Read {
        /// The section being read.
        section: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The manifest is not valid JSON of the expected shape, or breaks a rule of the format.
    #[error("bundle manifest is invalid: {reason}")]
    InvalidManifest {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The signature block is not valid JSON of the expected shape.
    #[error("bundle signature block is invalid: {reason}")]
    InvalidSignatureBlock {
        /// What is wrong, naming the entry.
        reason: String,
    },

    // ---- trust ----
    /// A signature by a trusted key does not verify over the manifest.
    #[error(
        "bundle signature by trusted key {key_id} does not match the manifest: the bundle was \
         modified or damaged after it was signed; download or copy it again, or rebuild it"
    )]
    BadSignature {
        /// The trusted key whose signature failed.
        key_id: KeyId,
    },
    /// The bundle carries no signature and the policy requires one.
    #[error(
        "bundle is not signed, and this device only installs bundles signed by one of its \
         {trusted} trusted key(s){}: make the bundle with a signing key, or allow unsigned \
         bundles (development images only)",
        source_suffix(.keys_dir)
    )]
    Unsigned {
        /// How many keys the device trusts.
        trusted: usize,
        /// Where they were loaded from, if from a directory.
        keys_dir: Option<PathBuf>,
    },
    /// Every signature is by a key the device does not trust.
    #[error(
        "bundle is signed only by untrusted key(s) {} and this device trusts {}{}: sign the \
         bundle with a trusted key, or add the public key file of {} to the image's trusted keys",
        join(.signers), trusted_list(.trusted), source_suffix(.keys_dir), join(.signers)
    )]
    UntrustedSigner {
        /// The key ids of the bundle's signatures.
        signers: Vec<KeyId>,
        /// The key ids the device trusts.
        trusted: Vec<KeyId>,
        /// Where they were loaded from, if from a directory.
        keys_dir: Option<PathBuf>,
    },

    // ---- compatibility ----
    /// The bundle was made for another device type.
    #[error(
        "bundle is for device type {bundle:?} but this device is {device:?}: \
         use a bundle built for {device:?}"
    )]
    WrongDeviceType {
        /// The bundle's device type.
        bundle: String,
        /// The device's.
        device: String,
    },
    /// The running OS version given by the caller does not parse.
    #[error("cannot compare versions: the running OS version is not valid")]
    RunningVersion(#[source] osversion::Error),
    /// The running OS is older than the oldest version the bundle updates from.
    #[error(
        "bundle {bundle} updates only from OS {min_from} or newer, but this device runs \
         {running}: install {min_from} (or a later release that allows updating from {running}) \
         first"
    )]
    TooOld {
        /// The bundle's OS version.
        bundle: HostOsVersion,
        /// The bundle's `min_from_version`.
        min_from: HostOsVersion,
        /// The running OS version.
        running: HostOsVersion,
    },
    /// A payload the operation needs is not in the bundle.
    #[error("bundle has no {name:?} payload (it has: {present}): rebuild it with one")]
    MissingPayload {
        /// The payload name looked for.
        name: String,
        /// The payloads it has, comma-separated.
        present: String,
    },
    /// A payload does not fit in its partition.
    #[error(
        "payload {name:?} is {size} bytes ({}) uncompressed but the partition holds only \
         {partition_size} bytes ({}): build a smaller image, or repartition the device",
        human(*.size), human(*.partition_size)
    )]
    PayloadTooLarge {
        /// The payload name.
        name: String,
        /// Its uncompressed size.
        size: u64,
        /// The partition's size.
        partition_size: u64,
    },

    // ---- payload streams ----
    /// Reading a payload's bytes from the bundle failed.
    #[error("reading payload {name:?} from the bundle")]
    PayloadRead {
        /// The payload.
        name: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing a payload's bytes to the caller's writer failed.
    #[error("writing payload {name:?}")]
    PayloadWrite {
        /// The payload.
        name: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The bundle ends inside a payload.
    #[error(
        "bundle is truncated: payload {name:?} ends after {got} of its {expected} compressed \
         bytes; download or copy the bundle again"
    )]
    PayloadTruncated {
        /// The payload.
        name: String,
        /// Compressed bytes the manifest records.
        expected: u64,
        /// Compressed bytes that were there.
        got: u64,
    },
    /// A payload's compressed bytes are not a valid zstd stream.
    #[error(
        "payload {name:?} is damaged: its zstd stream does not decompress ({reason}); \
         download or copy the bundle again"
    )]
    PayloadCorrupt {
        /// The payload.
        name: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A payload's uncompressed size differs from the manifest.
    #[error(
        "payload {name:?} is damaged: it decompresses to {} bytes but the manifest says {expected}; \
         download or copy the bundle again",
        if *.longer { format!("more than {expected}") } else { got.to_string() }
    )]
    PayloadSizeMismatch {
        /// The payload.
        name: String,
        /// The manifest's `size`.
        expected: u64,
        /// Bytes produced (when not `longer`).
        got: u64,
        /// The stream produced more than `expected` (reading stopped there).
        longer: bool,
    },
    /// A payload's sha256 differs from the manifest.
    #[error(
        "payload {name:?} is damaged: the sha256 of its {which} bytes is {got} but the manifest \
         says {expected}; download or copy the bundle again"
    )]
    PayloadHashMismatch {
        /// The payload.
        name: String,
        /// `compressed` or `uncompressed`.
        which: &'static str,
        /// The manifest's hash.
        expected: crate::Sha256Sum,
        /// The hash of the bytes read.
        got: crate::Sha256Sum,
    },
    /// `next_payload` was called before the previous payload was read to its end.
    #[error(
        "payload {name:?} was not read to its end: read it completely (or skip it) before \
         the next payload"
    )]
    PayloadNotFinished {
        /// The unfinished payload.
        name: String,
    },
    /// An earlier payload failed, so the stream position is unknown.
    #[error(
        "reading payload {name:?} failed earlier; the rest of the bundle cannot be read: open it \
         again"
    )]
    Poisoned {
        /// The payload that failed.
        name: String,
    },
    /// Bytes follow the last payload.
    #[error(
        "bundle has extra bytes after its last payload {name:?}: it is damaged or two files \
         were joined; download or copy it again"
    )]
    TrailingData {
        /// The last payload.
        name: String,
    },
    /// Re-reading the written copy of a payload found different bytes.
    #[error(
        "the written copy of payload {name:?} does not match the bundle: {detail}; \
         the target storage may be failing"
    )]
    ReadBackMismatch {
        /// The payload.
        name: String,
        /// What differs.
        detail: String,
    },

    // ---- making bundles ----
    /// The caller's input to [`create`](crate::create) breaks a rule of the format.
    #[error("cannot make the bundle: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// Reading a payload's source failed.
    #[error("reading payload {name:?} from {origin}")]
    PayloadSource {
        /// The payload.
        name: String,
        /// The source path, or `the reader`.
        origin: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the bundle file failed.
    #[error("writing bundle {path}")]
    Output {
        /// The bundle being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },

    // ---- keys ----
    /// Reading or writing a key file (or the key directory) failed.
    #[error("{action} {path}")]
    KeyFile {
        /// `reading key file`, `writing key file`, `listing key directory`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A key file's content is not a key of the expected kind.
    #[error(
        "{origin} is not {expected} ({reason}); make a key pair with \
         `openssl genpkey -algorithm ed25519 -out bundle.key` and \
         `openssl pkey -in bundle.key -pubout -out bundle.pub`, or with baleen's key command"
    )]
    InvalidKey {
        /// The key file, or `PEM text`.
        origin: String,
        /// What was expected.
        expected: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// Saving a key would replace an existing file.
    #[error(
        "refusing to overwrite {path}: move it away first (a lost signing key means devices \
         trusting it can no longer be updated with new bundles)"
    )]
    KeyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The operating system's random number generator failed.
    #[error("generating a key: the system random number generator failed: {reason}")]
    Random {
        /// The generator's error.
        reason: String,
    },

    // ---- boot file archives ----
    /// A boot file archive breaks a rule of its format.
    #[error("boot file archive is invalid: {reason}")]
    InvalidBootArchive {
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// Reading a boot file archive's stream failed.
    #[error("reading {what} of the boot file archive")]
    BootArchiveRead {
        /// The part being read.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Reading or writing boot files (directory or unpacked files) failed.
    #[error("{action} {path}")]
    BootFiles {
        /// What was being done.
        action: &'static str,
        /// The file, directory or archive entry.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Recovers this crate's error from an [`io::Error`] that a [`Read`](std::io::Read)
    /// implementation of this crate returned; any other I/O error goes through `other`.
    pub(crate) fn unwrap_io(err: io::Error, other: impl FnOnce(io::Error) -> Error) -> Self {
        if !err.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            return other(err);
        }
        let kind = err.kind();
        match err.into_inner().map(|inner| inner.downcast::<Error>()) {
            Some(Ok(ours)) => *ours,
            // Not reached: the check above saw one of ours inside.
            _ => other(io::Error::from(kind)),
        }
    }

    /// [`unwrap_io`](Self::unwrap_io) for a payload's stream.
    pub(crate) fn from_payload_io(name: &str, err: io::Error) -> Self {
        Self::unwrap_io(err, |source| Error::PayloadRead {
            name: name.to_owned(),
            source,
        })
    }

    /// This error as an [`io::Error`], for `Read` implementations.
    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

fn join(ids: &[KeyId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn trusted_list(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        "no keys".to_owned()
    } else {
        format!("only {}", join(ids))
    }
}

fn source_suffix(dir: &Option<PathBuf>) -> String {
    dir.as_ref()
        .map(|d| format!(" (from {})", d.display()))
        .unwrap_or_default()
}

/// `1073741824` → `1.0 GiB`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
