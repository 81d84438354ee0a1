//! baleen host OS update bundles: one file carrying the root filesystem image and the boot
//! files of one OS release for one device type, compressed, with a signed manifest.
//!
//! # Use
//!
//! On the build host:
//!
//! * [`SigningKey::generate`] then [`SigningKey::save`] / [`PublicKey::save`] once; later
//!   [`SigningKey::load`]. The private key stays outside the image; the public key file goes
//!   into the image's trusted key directory ([`TRUSTED_KEYS_DIR`]).
//! * [`create`] with [`ManifestFields`], the payloads ([`PayloadInput::file`] for `rootfs`,
//!   [`PayloadInput::boot_dir`] for `boot`) and the signing key.
//!
//! On the device, with the bundle as any [`Read`](std::io::Read) (a file, an HTTP body):
//!
//! 1. [`TrustedKeys::load_dir`], then [`Bundle::open`]: reads the header, manifest and
//!    signature block and decides trust under a [`Policy`]. No payload byte has been read yet.
//! 2. [`Bundle::check_compatible`]: device type, version rule, partition size.
//! 3. [`Bundle::next_payload`] for each payload in manifest order, copied to its target with
//!    [`PayloadReader::copy_to`]; `Ok` means the payload's sizes and both SHA-256 sums
//!    matched (the compressed one only, after
//!    [`PayloadReader::without_uncompressed_sha256`], for a caller that reads its copy back).
//!    For the `boot` payload, [`bootfiles::ArchiveReader`] unpacks the stream.
//! 4. [`PayloadInfo::verify_copy`] on the written partition: the read-back check.
//!
//! # Bundle format, version 1
//!
//! A bundle is a byte stream, read front to back. All integers are little-endian.
//!
//! | offset     | length | content                                                         |
//! |------------|--------|-----------------------------------------------------------------|
//! | 0          | 8      | magic `BALEENB\0` (`42 41 4c 45 45 4e 42 00`)                   |
//! | 8          | 4      | format version, u32: `1`                                        |
//! | 12         | 4      | manifest length *M*, u32, 1 to 1 MiB ([`MAX_MANIFEST_LEN`])     |
//! | 16         | 4      | signature block length *S*, u32, 1 to 64 KiB ([`MAX_SIGNATURES_LEN`]) |
//! | 20         | *M*    | manifest: UTF-8 JSON object                                     |
//! | 20+*M*     | *S*    | signature block: UTF-8 JSON array                               |
//! | 20+*M*+*S* | rest   | payload area: the payloads' zstd streams, back to back          |
//!
//! The file ends exactly where the last payload's stream ends; extra bytes are an error.
//!
//! ## Manifest
//!
//! A JSON object with exactly these fields; an unknown field is refused (a new field comes
//! with a new format version). [`create`] writes it canonically: compact, no whitespace, fields
//! in this order, `min_from_version` as `null` when absent. The signature covers the bytes as
//! stored: readers verify them and never re-serialize.
//!
//! | field              | JSON           | meaning                                                 |
//! |--------------------|----------------|---------------------------------------------------------|
//! | `format_version`   | number         | `1`, the header's version again (this copy is signed)   |
//! | `device_type`      | string         | balena device type slug, e.g. `qemux86-64`; 1 to 128 of `a-z 0-9 . _ -` |
//! | `os_version`       | string         | the `HOSTOS_VERSION` installed, `X.Y.Z[-betaN][+revN]`, e.g. `6.1.0+rev1` |
//! | `meta_version`     | string         | its meta-balena version, `X.Y.Z[-betaN]`; must equal `os_version` without `+revN` |
//! | `min_from_version` | string or null | the oldest running OS version this bundle may update; `null`: any |
//! | `created`          | string         | RFC 3339 time; [`create`] writes UTC whole seconds, `2026-05-01T12:00:00Z` |
//! | `payloads`         | array          | 1 to 16 payload objects, in storage order               |
//!
//! Each payload object, again exactly these fields in this order:
//!
//! | field               | JSON   | meaning                                                      |
//! |---------------------|--------|--------------------------------------------------------------|
//! | `name`              | string | `rootfs`, `boot`, or another `[a-z0-9][a-z0-9_-]*` of at most 32; unique |
//! | `offset`            | number | where its stream starts, counted from the first byte of the payload area: `0` for the first, previous `offset` + previous `compressed_size` for each next (no gaps, no overlap) |
//! | `compressed_size`   | number | length of its zstd stream, at least 1                        |
//! | `size`              | number | length once decompressed                                     |
//! | `sha256`            | string | SHA-256 of the decompressed bytes, 64 lower-case hex digits  |
//! | `compressed_sha256` | string | SHA-256 of the zstd stream as stored                         |
//!
//! Offsets are relative to the payload area so that the manifest does not depend on the
//! signature block: signatures can be added without changing what they sign.
//!
//! Payload contents, once decompressed:
//!
//! * `rootfs` ([`ROOTFS`]): the ext4 image of the root partition, written at the start of the
//!   inactive root partition (which may be larger).
//! * `boot` ([`BOOT`]): a boot file archive, specified in [`bootfiles`].
//!
//! Each stream is one or more zstd frames (RFC 8878), no dictionary, with a window of at most
//! 16 MiB (window log ≤ 24, [`MAX_WINDOW_LOG`]), so a device needs bounded memory to decompress.
//! [`create`] writes one frame per payload at levels 1 to 19 (default 3) on one thread, with
//! the frame's content checksum (XXH64) set; readers check a checksum when a frame has one.
//!
//! ## Signature block
//!
//! A JSON array of objects `{"key_id": "…", "algorithm": "ed25519", "signature": "…"}`:
//!
//! * `signature`: 128 lower-case hex digits, the Ed25519 signature (RFC 8032, verified
//!   strictly) over exactly the *M* manifest bytes;
//! * `key_id`: 16 lower-case hex digits, the start of the SHA-256 of the signer's 32-byte raw
//!   public key ([`KeyId`]).
//!
//! `[]` means unsigned. Several entries are allowed (key rotation); entries with another
//! `algorithm` and extra fields are ignored. The header and the signature block are not
//! signed: the header's version is repeated in the manifest and its lengths only frame the
//! sections; the manifest binds every payload byte through its two SHA-256 sums.
//!
//! ## Trust
//!
//! A bundle is accepted when an `ed25519` signature by a trusted key verifies ([`Trust`]).
//! Otherwise it is refused, naming the reason: a trusted key's signature that does not verify
//! (the manifest changed); signatures by unknown keys only; no signature. With
//! [`Policy::allow_unsigned`] (development images) the last two pass; the first never does.
//!
//! ## Key files
//!
//! Standard PEM, so OpenSSL can make and inspect them: the private key is PKCS#8
//! (`-----BEGIN PRIVATE KEY-----`, mode 0600, `openssl genpkey -algorithm ed25519`), the
//! public key SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`, `openssl pkey -pubout`).
//! The device trusts every `*.pub` file in its key directory. A key id can be checked with
//! `openssl pkey -pubin -in k.pub -outform DER | tail -c 32 | sha256sum | cut -c1-16`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bootfiles;
mod bundle;
mod create;
mod error;
mod header;
mod keys;
mod manifest;
mod signature;

pub use bundle::{Bundle, MAX_WINDOW_LOG, PayloadReader};
pub use create::{
    CreateOptions, DEFAULT_ZSTD_LEVEL, MAX_ZSTD_LEVEL, PayloadInput, PayloadSource, create,
    encode_head,
};
pub use error::Error;
pub use header::{FORMAT_VERSION, HEADER_LEN, MAGIC, MAX_MANIFEST_LEN, MAX_SIGNATURES_LEN};
pub use keys::{KeyId, PUBLIC_KEY_EXTENSION, PublicKey, SigningKey, SkippedKeyFile, TrustedKeys};
pub use manifest::{BOOT, MAX_PAYLOADS, Manifest, ManifestFields, PayloadInfo, ROOTFS, Sha256Sum};
pub use signature::{ED25519, Policy, Trust};

/// Where the image keeps the public keys whose signatures it accepts, relative to the root of
/// the OS tree (`/usr/share/baleen/update-keys` on a device).
pub const TRUSTED_KEYS_DIR: &str = "usr/share/baleen/update-keys";
