//! Making a bundle file: compress and hash each payload in one streaming pass, then write
//! header, manifest, signature block and payloads to a temporary file renamed into place.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::Digest;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use crate::header::Header;
use crate::manifest::{check_device_type, check_payload_name};
use crate::{
    Error, FORMAT_VERSION, MAX_PAYLOADS, Manifest, ManifestFields, PayloadInfo, Sha256Sum,
    SigningKey, bootfiles, signature,
};

/// The zstd level [`CreateOptions::default`] uses.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// The highest zstd level accepted: levels above 19 use windows larger than devices are
/// asked to hold (see the format's window limit).
pub const MAX_ZSTD_LEVEL: i32 = 19;

const CHUNK: usize = 256 << 10;

/// How to make a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateOptions {
    /// zstd compression level, 1 to [`MAX_ZSTD_LEVEL`]. Compression runs on one thread.
    pub zstd_level: i32,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// Where a payload's bytes come from. Every source is streamed, never held in memory.
pub enum PayloadSource<'a> {
    /// A file, read from start to end (the root filesystem image).
    File(PathBuf),
    /// Any reader, read to its end.
    Reader(Box<dyn Read + 'a>),
    /// A directory, packed on the fly as a [boot file archive](crate::bootfiles).
    BootDir(PathBuf),
}

/// One payload to put in a bundle.
pub struct PayloadInput<'a> {
    /// The payload's name: [`ROOTFS`](crate::ROOTFS), [`BOOT`](crate::BOOT), or another
    /// `[a-z0-9][a-z0-9_-]*` name.
    pub name: String,
    /// Its bytes.
    pub source: PayloadSource<'a>,
}

impl<'a> PayloadInput<'a> {
    /// The payload `name` read from the file at `path`.
    pub fn file(name: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            source: PayloadSource::File(path.into()),
        }
    }

    /// The payload `name` read from `reader` to its end.
    pub fn reader(name: &str, reader: impl Read + 'a) -> Self {
        Self {
            name: name.to_owned(),
            source: PayloadSource::Reader(Box::new(reader)),
        }
    }

    /// The payload `name` as the boot file archive of the directory `dir`.
    pub fn boot_dir(name: &str, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            source: PayloadSource::BootDir(dir.into()),
        }
    }
}

/// Makes the bundle file `out` and returns its manifest.
///
/// Payloads are stored in the order given. Each is compressed with zstd while the SHA-256 of
/// its uncompressed and compressed bytes are computed, into a temporary file next to `out`;
/// then the header, manifest and signature block (signed by `signer`, or unsigned) are written
/// to a second temporary file, the payloads copied after them, and that file flushed and renamed
/// to `out`. Disk use while it runs is about twice the compressed size; memory use is fixed.
/// On any error `out` is untouched and the temporary files are removed.
pub fn create(
    out: &Path,
    fields: &ManifestFields,
    payloads: Vec<PayloadInput<'_>>,
    signer: Option<&SigningKey>,
    options: &CreateOptions,
) -> Result<Manifest, Error> {
    let created = check_inputs(fields, &payloads, options)?;
    let output_err = |source| Error::Output {
        path: out.to_owned(),
        source,
    };
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    // 1. Payload area: compress and hash each payload.
    let mut area = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.payloads-"))
        .tempfile_in(dir)
        .map_err(output_err)?;
    let mut infos = Vec::with_capacity(payloads.len());
    {
        let mut sink = BufWriter::with_capacity(1 << 20, area.as_file_mut());
        let mut offset = 0u64;
        for input in payloads {
            let info = compress(input, offset, &mut sink, out, options.zstd_level)?;
            offset += info.compressed_size;
            infos.push(info);
        }
        sink.flush().map_err(output_err)?;
    }

    // 2. Manifest and signatures.
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        device_type: fields.device_type.clone(),
        os_version: fields.os_version,
        meta_version: fields.os_version.meta,
        min_from_version: fields.min_from_version,
        created,
        payloads: infos,
    };
    let manifest_bytes = manifest.to_bytes();
    // What the device will parse: check it here, so a bad bundle is never written.
    let reread = Manifest::from_bytes(&manifest_bytes)?;
    let head = encode_head(&manifest_bytes, signer)?;

    // 3. The bundle: header, manifest, signatures, then the payload area.
    let mut bundle = tempfile::Builder::new()
        .prefix(&format!(".{file_name}.tmp-"))
        .tempfile_in(dir)
        .map_err(output_err)?;
    (|| -> io::Result<()> {
        let file = bundle.as_file_mut();
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        file.write_all(&head)?;
        let area = area.as_file_mut();
        area.rewind()?;
        // File to file: the kernel copies (copy_file_range), nothing passes through memory.
        io::copy(area, file)?;
        file.sync_all()
    })()
    .map_err(output_err)?;
    drop(area);
    bundle.persist(out).map_err(|e| output_err(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(output_err)?;
    Ok(reread)
}

/// The bytes before a bundle's payload area: the header, `manifest` exactly as given and the
/// signature block over it (signed by `signer`, or `[]` for unsigned).
///
/// Payload offsets count from the start of the payload area, so the head of an existing bundle
/// can be replaced by another of a different length (an edited manifest, signed again) without
/// moving any payload byte. `manifest` is neither parsed nor validated: tests use this to make
/// bundles a device must refuse. Fails only when a section is longer than the format allows.
pub fn encode_head(manifest: &[u8], signer: Option<&SigningKey>) -> Result<Vec<u8>, Error> {
    let block = signature::encode_block(manifest, signer);
    let header = Header {
        manifest_len: section_len(manifest, "manifest", crate::MAX_MANIFEST_LEN)?,
        signatures_len: section_len(&block, "signature block", crate::MAX_SIGNATURES_LEN)?,
    };
    let mut head = Vec::with_capacity(crate::HEADER_LEN + manifest.len() + block.len());
    head.extend_from_slice(&header.encode());
    head.extend_from_slice(manifest);
    head.extend_from_slice(&block);
    Ok(head)
}

/// Validates what the caller gave; returns `created` in UTC, whole seconds.
fn check_inputs(
    fields: &ManifestFields,
    payloads: &[PayloadInput<'_>],
    options: &CreateOptions,
) -> Result<OffsetDateTime, Error> {
    let invalid = |reason: String| Error::InvalidInput { reason };
    check_device_type(&fields.device_type).map_err(invalid)?;
    if !(1..=MAX_ZSTD_LEVEL).contains(&options.zstd_level) {
        return Err(invalid(format!(
            "zstd level {} is outside 1..={MAX_ZSTD_LEVEL}",
            options.zstd_level
        )));
    }
    if payloads.is_empty() || payloads.len() > MAX_PAYLOADS {
        return Err(invalid(format!(
            "{} payloads given, expected 1 to {MAX_PAYLOADS}",
            payloads.len()
        )));
    }
    for (i, p) in payloads.iter().enumerate() {
        check_payload_name(&p.name).map_err(invalid)?;
        if payloads[..i].iter().any(|q| q.name == p.name) {
            return Err(invalid(format!("payload {:?} is given twice", p.name)));
        }
    }
    let created = fields
        .created
        .to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .map_err(|e| invalid(format!("created: {e}")))?;
    created
        .format(&Rfc3339)
        .map_err(|e| invalid(format!("created {created} has no RFC 3339 form: {e}")))?;
    Ok(created)
}

fn section_len(bytes: &[u8], section: &'static str, max: u32) -> Result<u32, Error> {
    u32::try_from(bytes.len())
        .ok()
        .filter(|&len| len <= max)
        .ok_or_else(|| Error::InvalidInput {
            reason: format!(
                "the {section} would be {} bytes, more than the format's {max}",
                bytes.len()
            ),
        })
}

/// Streams one payload into `sink` (zstd), hashing both sides.
fn compress<W: Write>(
    input: PayloadInput<'_>,
    offset: u64,
    sink: &mut W,
    out: &Path,
    level: i32,
) -> Result<PayloadInfo, Error> {
    let output_err = |source| Error::Output {
        path: out.to_owned(),
        source,
    };
    let mut encoder =
        zstd::stream::write::Encoder::new(Hashing::new(sink), level).map_err(output_err)?;
    // The frame's XXH64 of the content: the decoder checks it at the frame's end, also for a
    // reader that skips the uncompressed SHA-256 (`without_uncompressed_sha256`).
    encoder.include_checksum(true).map_err(output_err)?;
    let mut plain = Hashing::new(encoder);
    let name = input.name;
    match input.source {
        PayloadSource::File(path) => {
            let source_err = |source| Error::PayloadSource {
                name: name.clone(),
                origin: path.display().to_string(),
                source,
            };
            let mut file = File::open(&path).map_err(source_err)?;
            pump(&mut file, &mut plain, source_err, output_err)?;
        }
        PayloadSource::Reader(mut reader) => {
            let source_err = |source| Error::PayloadSource {
                name: name.clone(),
                origin: "the reader".into(),
                source,
            };
            pump(&mut reader, &mut plain, source_err, output_err)?;
        }
        PayloadSource::BootDir(dir) => {
            bootfiles::pack_dir(&dir, &mut plain)?;
        }
    }
    let (encoder, size, sha256) = plain.into_parts();
    let compressed = encoder.finish().map_err(output_err)?;
    let (_, compressed_size, compressed_sha256) = compressed.into_parts();
    Ok(PayloadInfo {
        name,
        offset,
        compressed_size,
        size,
        sha256,
        compressed_sha256,
    })
}

/// Copies `from` to `to`, telling read errors from write errors.
fn pump(
    from: &mut dyn Read,
    to: &mut dyn Write,
    read_err: impl Fn(io::Error) -> Error,
    write_err: impl Fn(io::Error) -> Error,
) -> Result<(), Error> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        to.write_all(&buf[..n]).map_err(&write_err)?;
    }
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }

    fn into_parts(self) -> (W, u64, Sha256Sum) {
        (
            self.inner,
            self.count,
            Sha256Sum(self.hasher.finalize().into()),
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Bundle, Policy, ROOTFS, Trust, TrustedKeys};

    fn fields() -> ManifestFields {
        ManifestFields {
            device_type: "qemux86-64".into(),
            os_version: "0.2.0".parse().unwrap(),
            min_from_version: None,
            created: OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(),
        }
    }

    fn word(bytes: &[u8], at: usize) -> usize {
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize
    }

    #[test]
    fn a_bundle_starts_with_its_head_and_a_new_head_keeps_the_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_seed(&[9; 32]);
        let out = dir.path().join("b.bundle");
        let rootfs: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        create(
            &out,
            &fields(),
            vec![PayloadInput::reader(ROOTFS, &rootfs[..])],
            Some(&key),
            &CreateOptions::default(),
        )
        .unwrap();
        let bytes = fs::read(&out).unwrap();
        let (m, s) = (word(&bytes, 12), word(&bytes, 16));
        let manifest = &bytes[crate::HEADER_LEN..crate::HEADER_LEN + m];
        let area = &bytes[crate::HEADER_LEN + m + s..];
        assert!(bytes.starts_with(&encode_head(manifest, Some(&key)).unwrap()));

        // An edited manifest, signed again: the payloads stay where they are.
        let mut edited = Manifest::from_bytes(manifest).unwrap();
        edited.device_type = "raspberrypi4-64".into();
        let mut bundle = encode_head(&edited.to_bytes(), Some(&key)).unwrap();
        assert_ne!(word(&bundle, 12), m);
        bundle.extend_from_slice(area);
        let trusted = TrustedKeys::from_keys([key.public_key()]);
        let mut opened = Bundle::open(&bundle[..], &trusted, Policy::default()).unwrap();
        assert_eq!(opened.manifest().device_type, "raspberrypi4-64");
        assert_eq!(
            *opened.trust(),
            Trust::Signed {
                key_id: key.key_id()
            }
        );
        let mut read = Vec::new();
        opened
            .next_payload()
            .unwrap()
            .unwrap()
            .copy_to(&mut read, |_, _| ())
            .unwrap();
        assert_eq!(read, rootfs);
        opened.verify_remaining().unwrap();
    }

    #[test]
    fn an_unsigned_head_has_an_empty_block_and_oversized_sections_are_refused() {
        let head = encode_head(b"{}", None).unwrap();
        assert_eq!(head, b"BALEENB\0\x01\0\0\0\x02\0\0\0\x02\0\0\0{}[]");
        let huge = vec![b' '; crate::MAX_MANIFEST_LEN as usize + 1];
        assert_eq!(
            encode_head(&huge, None).unwrap_err().to_string(),
            "cannot make the bundle: the manifest would be 1048577 bytes, more than the format's \
             1048576"
        );
    }
}
