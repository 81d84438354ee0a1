//! The manifest: what a bundle holds and for which device, as canonical JSON.
//!
//! [`Manifest::from_bytes`] parses and validates (pure); [`Manifest::to_bytes`] writes the
//! canonical form. The signature covers the bytes as stored, so readers never re-serialize.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use osversion::{HostOsVersion, MetaVersion};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Error, FORMAT_VERSION};

/// The payload holding the ext4 image of the root partition.
pub const ROOTFS: &str = "rootfs";
/// The payload holding the boot files, as a [boot file archive](crate::bootfiles).
pub const BOOT: &str = "boot";
/// Most payloads a bundle may have.
pub const MAX_PAYLOADS: usize = 16;

/// A SHA-256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Sum(pub [u8; 32]);

impl fmt::Display for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Sum({self})")
    }
}

impl FromStr for Sha256Sum {
    type Err = String;

    /// Exactly 64 lower-case hex digits.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("{s:?} is not 64 lower-case hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(Self(out))
    }
}

/// What the bundle maker states about the release; [`create`](crate::create) adds the payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFields {
    /// The balena device type slug the bundle is for, e.g. `qemux86-64`.
    pub device_type: String,
    /// The OS version the bundle installs (`HOSTOS_VERSION`); its meta version is recorded too.
    pub os_version: HostOsVersion,
    /// The oldest running OS version the bundle may update; `None` for any.
    pub min_from_version: Option<HostOsVersion>,
    /// When the bundle was made (the build's `SOURCE_DATE_EPOCH` for reproducible bundles).
    /// Stored in UTC, whole seconds.
    pub created: OffsetDateTime,
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The bundle format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The device type slug the bundle is for.
    pub device_type: String,
    /// The OS version the bundle installs.
    pub os_version: HostOsVersion,
    /// The meta-balena version of `os_version` (always `os_version.meta`).
    pub meta_version: MetaVersion,
    /// The oldest running OS version the bundle may update; `None` for any.
    pub min_from_version: Option<HostOsVersion>,
    /// When the bundle was made.
    pub created: OffsetDateTime,
    /// The payloads, in the order they are stored.
    pub payloads: Vec<PayloadInfo>,
}

/// One payload as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInfo {
    /// [`ROOTFS`], [`BOOT`], or another `[a-z0-9][a-z0-9_-]*` name (at most 32 characters).
    pub name: String,
    /// Where its zstd stream starts, counted from the first byte of the payload area.
    pub offset: u64,
    /// Length of its zstd stream.
    pub compressed_size: u64,
    /// Length of the payload once decompressed.
    pub size: u64,
    /// SHA-256 of the decompressed bytes.
    pub sha256: Sha256Sum,
    /// SHA-256 of the zstd stream as stored.
    pub compressed_sha256: Sha256Sum,
}

impl Manifest {
    /// The payload called `name`.
    pub fn payload(&self, name: &str) -> Option<&PayloadInfo> {
        self.payloads.iter().find(|p| p.name == name)
    }

    /// The payload called `name`, or an error listing the ones there are.
    pub fn require_payload(&self, name: &str) -> Result<&PayloadInfo, Error> {
        self.payload(name).ok_or_else(|| Error::MissingPayload {
            name: name.to_owned(),
            present: self
                .payloads
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The canonical JSON: compact, fields in the documented order, `min_from_version` written
    /// as `null` when absent, `created` as RFC 3339 (which needs a year in 0..=9999, as
    /// [`create`](crate::create) checks).
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw = RawManifest {
            format_version: self.format_version,
            device_type: self.device_type.clone(),
            os_version: self.os_version.to_string(),
            meta_version: self.meta_version.to_string(),
            min_from_version: self.min_from_version.map(|v| v.to_string()),
            created: self
                .created
                .format(&Rfc3339)
                .unwrap_or_else(|_| self.created.unix_timestamp().to_string()),
            payloads: self
                .payloads
                .iter()
                .map(|p| RawPayload {
                    name: p.name.clone(),
                    offset: p.offset,
                    compressed_size: p.compressed_size,
                    size: p.size,
                    sha256: p.sha256.to_string(),
                    compressed_sha256: p.compressed_sha256.to_string(),
                })
                .collect(),
        };
        // Strings and integers only: serializing to memory cannot fail.
        serde_json::to_vec(&raw).unwrap_or_default()
    }

    /// Parses and validates manifest bytes (after their signature was checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if raw.format_version != FORMAT_VERSION {
            return Err(invalid(format!(
                "format_version is {} but the header says {FORMAT_VERSION}",
                raw.format_version
            )));
        }
        check_device_type(&raw.device_type).map_err(invalid)?;
        let os_version: HostOsVersion = raw
            .os_version
            .parse()
            .map_err(|e| invalid(format!("os_version: {e}")))?;
        let meta_version: MetaVersion = raw
            .meta_version
            .parse()
            .map_err(|e| invalid(format!("meta_version: {e}")))?;
        if meta_version != os_version.meta {
            return Err(invalid(format!(
                "meta_version is {meta_version} but os_version {os_version} is based on {}",
                os_version.meta
            )));
        }
        let min_from_version = raw
            .min_from_version
            .map(|v| v.parse::<HostOsVersion>())
            .transpose()
            .map_err(|e| invalid(format!("min_from_version: {e}")))?;
        let created = OffsetDateTime::parse(&raw.created, &Rfc3339).map_err(|e| {
            invalid(format!(
                "created is {:?}, not an RFC 3339 time ({e})",
                raw.created
            ))
        })?;
        let payloads = raw
            .payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.validate(i))
            .collect::<Result<Vec<_>, _>>()?;
        check_payload_list(&payloads).map_err(invalid)?;
        Ok(Self {
            format_version: raw.format_version,
            device_type: raw.device_type,
            os_version,
            meta_version,
            min_from_version,
            created,
            payloads,
        })
    }
}

impl PayloadInfo {
    /// Checks that `copy` (the partition or file the payload was written to, read from its
    /// start) begins with exactly this payload: `size` bytes whose SHA-256 is `sha256`. Bytes
    /// after `size` are not read. This is the read-back after writing a partition.
    pub fn verify_copy(&self, copy: impl std::io::Read) -> Result<(), Error> {
        use sha2::Digest;
        use std::io::Read;

        let mut hasher = sha2::Sha256::new();
        let mut limited = copy.take(self.size);
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        loop {
            let n = match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::ReadBackMismatch {
                        name: self.name.clone(),
                        detail: format!("reading it back failed after {done} bytes: {e}"),
                    });
                }
            };
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        if done != self.size {
            return Err(Error::ReadBackMismatch {
                name: self.name.clone(),
                detail: format!("only {done} of {} bytes could be read back", self.size),
            });
        }
        let got = Sha256Sum(hasher.finalize().into());
        if got != self.sha256 {
            return Err(Error::ReadBackMismatch {
                name: self.name.clone(),
                detail: format!("its sha256 is {got}, the manifest says {}", self.sha256),
            });
        }
        Ok(())
    }
}

/// The manifest as JSON, field order = canonical order.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format_version: u32,
    device_type: String,
    os_version: String,
    meta_version: String,
    min_from_version: Option<String>,
    created: String,
    payloads: Vec<RawPayload>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    name: String,
    offset: u64,
    compressed_size: u64,
    size: u64,
    sha256: String,
    compressed_sha256: String,
}

impl RawPayload {
    fn validate(self, index: usize) -> Result<PayloadInfo, Error> {
        let field = |name: &str| format!("payloads[{index}].{name}");
        check_payload_name(&self.name).map_err(|e| invalid(format!("{}: {e}", field("name"))))?;
        let sha256 = self
            .sha256
            .parse()
            .map_err(|e| invalid(format!("{}: {e}", field("sha256"))))?;
        let compressed_sha256 = self
            .compressed_sha256
            .parse()
            .map_err(|e| invalid(format!("{}: {e}", field("compressed_sha256"))))?;
        Ok(PayloadInfo {
            name: self.name,
            offset: self.offset,
            compressed_size: self.compressed_size,
            size: self.size,
            sha256,
            compressed_sha256,
        })
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidManifest { reason }
}

/// A device type slug: 1 to 128 of `a-z 0-9 . _ -`.
pub(crate) fn check_device_type(slug: &str) -> Result<(), String> {
    let ok = !slug.is_empty()
        && slug.len() <= 128
        && slug
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "device_type {slug:?} is not a device type slug (1 to 128 of a-z 0-9 . _ -)"
        ))
    }
}

/// A payload name: `[a-z0-9][a-z0-9_-]*`, at most 32 characters.
pub(crate) fn check_payload_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 32
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "payload name {name:?} is not 1 to 32 of a-z 0-9 _ - starting with a letter or digit"
        ))
    }
}

/// The list rules: 1..=16 payloads, unique names, non-empty streams stored back to back from
/// offset 0 in manifest order.
pub(crate) fn check_payload_list(payloads: &[PayloadInfo]) -> Result<(), String> {
    if payloads.is_empty() || payloads.len() > MAX_PAYLOADS {
        return Err(format!(
            "payloads has {} entries, expected 1 to {MAX_PAYLOADS}",
            payloads.len()
        ));
    }
    let mut names = HashSet::new();
    let mut next_offset = 0u64;
    for (i, p) in payloads.iter().enumerate() {
        if !names.insert(p.name.as_str()) {
            return Err(format!("payloads[{i}].name {:?} appears twice", p.name));
        }
        if p.offset != next_offset {
            return Err(format!(
                "payloads[{i}].offset is {}, expected {next_offset} (payloads are stored back to \
                 back in manifest order)",
                p.offset
            ));
        }
        if p.compressed_size == 0 {
            return Err(format!(
                "payloads[{i}].compressed_size is 0 (a zstd stream is never empty)"
            ));
        }
        next_offset = p
            .offset
            .checked_add(p.compressed_size)
            .ok_or_else(|| format!("payloads[{i}].compressed_size overflows the payload area"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format_version: 1,
            device_type: "qemux86-64".into(),
            os_version: "6.1.0+rev1".parse().unwrap(),
            meta_version: "6.1.0".parse().unwrap(),
            min_from_version: Some("5.0.0".parse().unwrap()),
            created: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
            payloads: vec![
                PayloadInfo {
                    name: ROOTFS.into(),
                    offset: 0,
                    compressed_size: 100,
                    size: 1000,
                    sha256: Sha256Sum([0x11; 32]),
                    compressed_sha256: Sha256Sum([0x22; 32]),
                },
                PayloadInfo {
                    name: BOOT.into(),
                    offset: 100,
                    compressed_size: 10,
                    size: 20,
                    sha256: Sha256Sum([0xab; 32]),
                    compressed_sha256: Sha256Sum([0xcd; 32]),
                },
            ],
        }
    }

    fn reject(text: &str) -> String {
        Manifest::from_bytes(text.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn canonical_form_is_exact_and_round_trips() {
        let bytes = sample().to_bytes();
        let h = |b: u8| hex::encode([b; 32]);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!(
                "{{\"format_version\":1,\"device_type\":\"qemux86-64\",\"os_version\":\"6.1.0+rev1\",\
                 \"meta_version\":\"6.1.0\",\"min_from_version\":\"5.0.0\",\
                 \"created\":\"2023-11-14T22:13:20Z\",\"payloads\":[\
                 {{\"name\":\"rootfs\",\"offset\":0,\"compressed_size\":100,\"size\":1000,\
                 \"sha256\":\"{}\",\"compressed_sha256\":\"{}\"}},\
                 {{\"name\":\"boot\",\"offset\":100,\"compressed_size\":10,\"size\":20,\
                 \"sha256\":\"{}\",\"compressed_sha256\":\"{}\"}}]}}",
                h(0x11),
                h(0x22),
                h(0xab),
                h(0xcd)
            )
        );
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), sample());

        let mut none = sample();
        none.min_from_version = None;
        let text = String::from_utf8(none.to_bytes()).unwrap();
        assert!(text.contains("\"min_from_version\":null,"));
        assert_eq!(Manifest::from_bytes(text.as_bytes()).unwrap(), none);
    }

    #[test]
    fn rejects_fields_that_break_the_rules() {
        let good = String::from_utf8(sample().to_bytes()).unwrap();
        let cases = [
            (
                good.replace("\"format_version\":1", "\"format_version\":2"),
                "bundle manifest is invalid: format_version is 2 but the header says 1",
            ),
            (
                good.replace("qemux86-64", "Qemu X86"),
                "bundle manifest is invalid: device_type \"Qemu X86\" is not a device type slug (1 to 128 of a-z 0-9 . _ -)",
            ),
            (
                good.replace("\"meta_version\":\"6.1.0\"", "\"meta_version\":\"6.0.0\""),
                "bundle manifest is invalid: meta_version is 6.0.0 but os_version 6.1.0+rev1 is based on 6.1.0",
            ),
            (
                good.replace("\"5.0.0\"", "\"5.0\""),
                "bundle manifest is invalid: min_from_version: invalid OS version \"5.0\": expected X.Y.Z[-betaN][+revN] (found 2 dot-separated part(s) instead of 3)",
            ),
            (
                good.replace("2023-11-14T22:13:20Z", "yesterday"),
                "bundle manifest is invalid: created is \"yesterday\", not an RFC 3339 time (the 'year' component could not be parsed)",
            ),
            (
                good.replace("\"offset\":100", "\"offset\":101"),
                "bundle manifest is invalid: payloads[1].offset is 101, expected 100 (payloads are stored back to back in manifest order)",
            ),
            (
                good.replace("\"name\":\"boot\"", "\"name\":\"rootfs\""),
                "bundle manifest is invalid: payloads[1].name \"rootfs\" appears twice",
            ),
            (
                good.replace("\"name\":\"boot\"", "\"name\":\"../boot\""),
                "bundle manifest is invalid: payloads[1].name: payload name \"../boot\" is not 1 to 32 of a-z 0-9 _ - starting with a letter or digit",
            ),
        ];
        for (text, message) in cases {
            assert_ne!(text, good, "the replacement for {message:?} did not apply");
            assert_eq!(reject(&text), message);
        }
        let upper = good.replace(
            &hex::encode([0xab; 32]),
            &hex::encode([0xab; 32]).to_uppercase(),
        );
        assert!(reject(&upper).contains("payloads[1].sha256: \"ABAB"));
    }

    #[test]
    fn rejects_unknown_duplicate_and_missing_fields() {
        let good = String::from_utf8(sample().to_bytes()).unwrap();
        assert!(
            reject(&good.replacen('{', "{\"encrypted\":true,", 1))
                .starts_with("bundle manifest is invalid: unknown field `encrypted`")
        );
        assert!(
            reject(&good.replacen('{', "{\"device_type\":\"other\",", 1))
                .starts_with("bundle manifest is invalid: duplicate field `device_type`")
        );
        assert!(
            reject(&good.replace("\"device_type\":\"qemux86-64\",", ""))
                .starts_with("bundle manifest is invalid: missing field `device_type`")
        );
        let absent = good.replace(",\"min_from_version\":\"5.0.0\"", "");
        assert_ne!(absent, good);
        assert_eq!(
            Manifest::from_bytes(absent.as_bytes())
                .unwrap()
                .min_from_version,
            None,
            "an absent min_from_version reads as none"
        );
    }
}
