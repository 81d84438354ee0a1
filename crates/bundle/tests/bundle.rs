//! Whole bundles made, opened, streamed and damaged in temp dirs.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bundle::bootfiles::ArchiveReader;
use bundle::{
    BOOT, Bundle, CreateOptions, Error, Manifest, ManifestFields, PayloadInput, Policy, ROOTFS,
    SigningKey, Trust, TrustedKeys, create,
};
use time::OffsetDateTime;

const STRICT: Policy = Policy {
    allow_unsigned: false,
};
const LAX: Policy = Policy {
    allow_unsigned: true,
};

/// Deterministic bytes: runs of noise (stored raw by zstd) and of a repeating pattern.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = (64 << 10).min(len - out.len());
        let noisy = out.len() / run % 2 == 0;
        for i in 0..run {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push(if noisy { state as u8 } else { (i % 251) as u8 });
        }
    }
    out
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

fn trusting(key: &SigningKey) -> TrustedKeys {
    TrustedKeys::from_keys([key.public_key()])
}

fn fields() -> ManifestFields {
    ManifestFields {
        device_type: "qemux86-64".into(),
        os_version: "6.1.0+rev1".parse().unwrap(),
        min_from_version: Some("5.0.0".parse().unwrap()),
        created: OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(),
    }
}

struct Made {
    dir: tempfile::TempDir,
    path: PathBuf,
    manifest: Manifest,
    rootfs: Vec<u8>,
    boot_dir: PathBuf,
}

/// A bundle with a `rootfs` file of `rootfs_len` bytes and a `boot` directory whose EFI
/// binary has `efi_len` bytes.
fn make_with(rootfs_len: usize, efi_len: usize, signer: Option<&SigningKey>) -> Made {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = content(rootfs_len, 42);
    let image = dir.path().join("rootfs.ext4");
    fs::write(&image, &rootfs).unwrap();
    let boot_dir = dir.path().join("boot");
    fs::create_dir_all(boot_dir.join("EFI/BOOT")).unwrap();
    fs::write(boot_dir.join("EFI/BOOT/BOOTX64.EFI"), content(efi_len, 7)).unwrap();
    fs::write(boot_dir.join("grubenv"), "# GRUB Environment Block\n").unwrap();
    let path = dir.path().join("out/update.baleen");
    fs::create_dir(dir.path().join("out")).unwrap();
    let manifest = create(
        &path,
        &fields(),
        vec![
            PayloadInput::file(ROOTFS, &image),
            PayloadInput::boot_dir(BOOT, &boot_dir),
        ],
        signer,
        &CreateOptions::default(),
    )
    .unwrap();
    Made {
        dir,
        path,
        manifest,
        rootfs,
        boot_dir,
    }
}

fn make(rootfs_len: usize, signer: Option<&SigningKey>) -> Made {
    make_with(rootfs_len, 30_000, signer)
}

/// Opens `bytes` and reads every payload; the payloads' bytes, or the first error.
fn read_all(
    bytes: impl Read,
    trusted: &TrustedKeys,
    policy: Policy,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut bundle = Bundle::open(bytes, trusted, policy)?;
    let mut out = Vec::new();
    while let Some(payload) = bundle.next_payload()? {
        let name = payload.info().name.clone();
        let mut data = Vec::new();
        payload.copy_to(&mut data, |_, _| ())?;
        out.push((name, data));
    }
    Ok(out)
}

/// A reader that hands out a few bytes at a time, like a slow network body.
struct Trickle<R>(R, usize);

impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.1 = self.1 % 7 + 1;
        let n = buf.len().min(self.1);
        self.0.read(&mut buf[..n])
    }
}

/// Start of the payload area in a bundle file.
fn payload_area(bytes: &[u8]) -> usize {
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    20 + word(12) + word(16)
}

fn files_under(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                out.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn round_trip_of_a_multi_mib_bundle() {
    let signer = key(1);
    let made = make_with(6 << 20, 300_000, Some(&signer));
    let bytes = fs::read(&made.path).unwrap();

    // Layout: header, manifest at 20, payloads back to back from the payload area.
    assert_eq!(&bytes[..12], b"BALEENB\0\x01\0\0\0");
    let area = payload_area(&bytes);
    let [rootfs, boot] = &made.manifest.payloads[..] else {
        panic!("two payloads expected: {:?}", made.manifest.payloads);
    };
    assert_eq!((rootfs.name.as_str(), rootfs.offset), (ROOTFS, 0));
    assert_eq!(
        (boot.name.as_str(), boot.offset),
        (BOOT, rootfs.compressed_size)
    );
    assert_eq!(
        bytes.len() as u64,
        area as u64 + rootfs.compressed_size + boot.compressed_size
    );
    assert_eq!(rootfs.size, 6 << 20);
    assert!(
        rootfs.compressed_size < rootfs.size,
        "the pattern runs compress"
    );
    let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    assert_eq!(
        Manifest::from_bytes(&bytes[20..20 + manifest_len]).unwrap(),
        made.manifest
    );
    assert_eq!(&bytes[20 + manifest_len..][..2], b"[{");

    let mut bundle = Bundle::open(
        fs::File::open(&made.path).unwrap(),
        &trusting(&signer),
        STRICT,
    )
    .unwrap();
    assert_eq!(bundle.manifest(), &made.manifest);
    assert_eq!(
        bundle.trust(),
        &Trust::Signed {
            key_id: signer.key_id()
        }
    );
    bundle
        .check_compatible("qemux86-64", "5.0.0", 8 << 20)
        .unwrap();

    // rootfs, with progress.
    let payload = bundle.next_payload().unwrap().unwrap();
    assert_eq!(payload.info().name, ROOTFS);
    let mut partition = Vec::new();
    let mut calls = Vec::new();
    payload
        .copy_to(&mut partition, |done, total| calls.push((done, total)))
        .unwrap();
    assert_eq!(partition, made.rootfs);
    assert!(calls.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(calls.last(), Some(&(6 << 20, 6 << 20)));

    // The read-back check: a partition larger than the image, then a damaged one.
    partition.extend_from_slice(&[0xee; 4096]);
    rootfs.verify_copy(&partition[..]).unwrap();
    partition[123_456] ^= 1;
    assert_eq!(
        rootfs.verify_copy(&partition[..]).unwrap_err().to_string(),
        format!(
            "the written copy of payload \"rootfs\" does not match the bundle: its sha256 is {}, \
             the manifest says {}; the target storage may be failing",
            bundle::Sha256Sum(sha256(&partition[..6 << 20])),
            rootfs.sha256
        )
    );
    assert!(
        rootfs
            .verify_copy(&partition[..1000])
            .unwrap_err()
            .to_string()
            .contains("only 1000 of 6291456 bytes could be read back")
    );

    // boot, unpacked straight from the stream.
    let payload = bundle.next_payload().unwrap().unwrap();
    assert_eq!(payload.info().name, BOOT);
    let staging = made.dir.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let written = ArchiveReader::new(payload)
        .unwrap()
        .unpack(&staging)
        .unwrap();
    assert_eq!(
        written,
        ["EFI", "EFI/BOOT", "EFI/BOOT/BOOTX64.EFI", "grubenv"]
    );
    assert_eq!(files_under(&staging), files_under(&made.boot_dir));

    assert!(bundle.next_payload().unwrap().is_none());
    assert!(bundle.next_payload().unwrap().is_none());
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

#[test]
fn streams_from_a_trickling_reader() {
    let signer = key(1);
    let made = make(300_000, Some(&signer));
    let bytes = fs::read(&made.path).unwrap();
    let payloads = read_all(Trickle(&bytes[..], 0), &trusting(&signer), STRICT).unwrap();
    assert_eq!(payloads[0], (ROOTFS.to_owned(), made.rootfs));
    assert_eq!(payloads[1].0, BOOT);
}

#[test]
fn a_changed_manifest_byte_is_a_signature_error() {
    let signer = key(1);
    let made = make(100_000, Some(&signer));
    let mut bytes = fs::read(&made.path).unwrap();
    let text = String::from_utf8_lossy(&bytes[20..payload_area(&bytes)]).into_owned();
    let at = 20 + text.find("\"size\":100000").unwrap() + "\"size\":".len();
    bytes[at] = b'2'; // 200000
    for policy in [STRICT, LAX] {
        let err = read_all(&bytes[..], &trusting(&signer), policy).unwrap_err();
        assert!(matches!(err, Error::BadSignature { key_id } if key_id == signer.key_id()));
    }
}

#[test]
fn a_changed_payload_byte_is_a_hash_error_naming_the_payload() {
    let signer = key(1);
    let made = make(1 << 20, Some(&signer));
    let bytes = fs::read(&made.path).unwrap();
    let area = payload_area(&bytes);
    let [rootfs, boot] = &made.manifest.payloads[..] else {
        unreachable!()
    };

    // Inside a raw (noise) block of rootfs: decodes fine, the hash catches it.
    let mut damaged = bytes.clone();
    damaged[area + 5000] ^= 0x40;
    let err = read_all(&damaged[..], &trusting(&signer), STRICT).unwrap_err();
    assert!(
        matches!(&err, Error::PayloadHashMismatch { name, which: "compressed", .. } if name == ROOTFS),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("payload \"rootfs\" is damaged: the sha256 of its compressed bytes is ")
    );

    // Anywhere in either payload: an error that names the payload, never success.
    let total = rootfs.compressed_size + boot.compressed_size;
    for step in 0..40u64 {
        let offset = step * total / 40 + 3;
        let name = if offset < rootfs.compressed_size {
            ROOTFS
        } else {
            BOOT
        };
        let mut damaged = bytes.clone();
        damaged[area + offset as usize] ^= 0x01;
        let err = read_all(&damaged[..], &trusting(&signer), STRICT)
            .expect_err(&format!("damage at payload offset {offset} went unnoticed"));
        let text = err.to_string();
        assert!(
            text.contains(&format!("payload \"{name}\"")),
            "damage at {offset}: {text}"
        );
    }
}

#[test]
fn a_truncated_bundle_never_succeeds() {
    let signer = key(1);
    let made = make(100_000, Some(&signer));
    let bytes = fs::read(&made.path).unwrap();
    let area = payload_area(&bytes);
    let rootfs_end = area + made.manifest.payloads[0].compressed_size as usize;
    let mut cuts: Vec<(usize, bool)> = (0..bytes.len()).step_by(997).map(|c| (c, false)).collect();
    for edge in [
        8,
        12,
        16,
        20,
        area - 1,
        area,
        area + 1,
        rootfs_end,
        bytes.len() - 1,
    ] {
        cuts.extend([(edge - 1, true), (edge, true), (edge + 1, true)]);
    }
    cuts.retain(|&(c, _)| c < bytes.len());
    for (cut, trickle) in cuts {
        let result = if trickle {
            read_all(Trickle(&bytes[..cut], 0), &trusting(&signer), STRICT)
        } else {
            read_all(&bytes[..cut], &trusting(&signer), STRICT)
        };
        let err = result.expect_err(&format!("a bundle cut at {cut} of {} passed", bytes.len()));
        let text = err.to_string();
        assert!(
            text.contains("truncated") || text.contains("damaged"),
            "cut at {cut}: {text}"
        );
    }
    // Cut at the end of rootfs: rootfs itself verifies, boot is missing.
    let err = read_all(&bytes[..rootfs_end], &trusting(&signer), STRICT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "bundle is truncated: payload \"boot\" ends after 0 of its {} compressed bytes; \
             download or copy the bundle again",
            made.manifest.payloads[1].compressed_size
        )
    );
    assert_eq!(
        Bundle::open(&bytes[..30], &trusting(&signer), STRICT)
            .err()
            .unwrap()
            .to_string(),
        format!(
            "bundle is truncated: it ends inside the manifest (10 of {} bytes); download or copy \
             it again",
            u32::from_le_bytes(bytes[12..16].try_into().unwrap())
        )
    );
}

#[test]
fn extra_bytes_after_the_last_payload_are_refused() {
    let signer = key(1);
    let made = make(10_000, Some(&signer));
    let mut bytes = fs::read(&made.path).unwrap();
    bytes.push(0);
    assert_eq!(
        read_all(&bytes[..], &trusting(&signer), STRICT)
            .unwrap_err()
            .to_string(),
        "bundle has extra bytes after its last payload \"boot\": it is damaged or two files were \
         joined; download or copy it again"
    );
}

#[test]
fn not_a_bundle() {
    let err = Bundle::open(&b"\x7fELF\x02\x01"[..], &TrustedKeys::new(), LAX)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "not a baleen bundle: it starts with [7f, 45, 4c, 46, 02, 01] instead of \
         \"BALEENB\\0\"; pass a file made by `baleen bundle create`"
    );
}

#[test]
fn unsigned_bundles_are_refused_unless_allowed() {
    let made = make(10_000, None);
    let bytes = fs::read(&made.path).unwrap();
    let trusted = TrustedKeys::from_keys([key(1).public_key()]);
    let err = read_all(&bytes[..], &trusted, STRICT).unwrap_err();
    assert!(matches!(err, Error::Unsigned { trusted: 1, .. }), "{err:?}");
    let bundle = Bundle::open(&bytes[..], &trusted, LAX).unwrap();
    assert_eq!(bundle.trust(), &Trust::Unsigned);
    read_all(&bytes[..], &trusted, LAX).unwrap();
}

#[test]
fn bundles_signed_by_an_untrusted_key_are_refused() {
    let made = make(10_000, Some(&key(2)));
    let bytes = fs::read(&made.path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    key(1)
        .public_key()
        .save(&dir.path().join("release.pub"))
        .unwrap();
    let trusted = TrustedKeys::load_dir(dir.path()).unwrap();
    let err = read_all(&bytes[..], &trusted, STRICT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "bundle is signed only by untrusted key(s) {k2} and this device trusts only {k1} \
             (from {}): sign the bundle with a trusted key, or add the public key file of {k2} to \
             the image's trusted keys",
            dir.path().display(),
            k1 = key(1).key_id(),
            k2 = key(2).key_id(),
        )
    );
    let bundle = Bundle::open(&bytes[..], &trusted, LAX).unwrap();
    assert_eq!(
        bundle.trust(),
        &Trust::UntrustedSigners {
            key_ids: vec![key(2).key_id()]
        }
    );
}

#[test]
fn compatibility_rules() {
    let signer = key(1);
    let made = make(50_000, Some(&signer));
    let bundle = Bundle::open(
        fs::File::open(&made.path).unwrap(),
        &trusting(&signer),
        STRICT,
    )
    .unwrap();
    let check = |device: &str, running: &str, size: u64| {
        bundle
            .check_compatible(device, running, size)
            .map_err(|e| e.to_string())
    };

    assert_eq!(
        check("raspberrypi4-64", "5.0.0", 1 << 30),
        Err(
            "bundle is for device type \"qemux86-64\" but this device is \"raspberrypi4-64\": \
             use a bundle built for \"raspberrypi4-64\""
                .into()
        )
    );

    // min_from_version 5.0.0: older is refused; equal, newer, the same release and a
    // downgrade target are fine.
    assert_eq!(
        check("qemux86-64", "4.2.1+rev3", 1 << 30),
        Err(
            "bundle 6.1.0+rev1 updates only from OS 5.0.0 or newer, but this device runs \
             4.2.1+rev3: install 5.0.0 (or a later release that allows updating from 4.2.1+rev3) \
             first"
                .into()
        )
    );
    assert!(check("qemux86-64", "5.0.0-beta3", 1 << 30).is_err());
    for running in ["5.0.0", "5.0.0+rev1", "6.1.0+rev1", "7.0.0"] {
        assert_eq!(check("qemux86-64", running, 1 << 30), Ok(()), "{running}");
    }
    assert_eq!(
        check("qemux86-64", "v5", 1 << 30),
        Err("cannot compare versions: the running OS version is not valid".into())
    );

    // The rootfs image must fit the partition.
    assert_eq!(check("qemux86-64", "5.0.0", 50_000), Ok(()));
    assert_eq!(
        check("qemux86-64", "5.0.0", 49_999),
        Err(
            "payload \"rootfs\" is 50000 bytes (48.8 KiB) uncompressed but the partition holds \
             only 49999 bytes (48.8 KiB): build a smaller image, or repartition the device"
                .into()
        )
    );

    // No min_from_version: any running version.
    let mut manifest = bundle.manifest().clone();
    manifest.min_from_version = None;
    manifest
        .check_compatible("qemux86-64", "1.0.0", 1 << 30)
        .unwrap();
    // No rootfs payload.
    manifest.payloads.remove(0);
    assert_eq!(
        manifest
            .check_compatible("qemux86-64", "1.0.0", 1 << 30)
            .unwrap_err()
            .to_string(),
        "bundle has no \"rootfs\" payload (it has: boot): rebuild it with one"
    );
}

/// Rewrites a bundle with a changed manifest and no signature.
fn reframe(bytes: &[u8], edit: impl FnOnce(&mut Manifest)) -> Vec<u8> {
    let area = payload_area(bytes);
    let manifest_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let mut manifest = Manifest::from_bytes(&bytes[20..20 + manifest_len]).unwrap();
    edit(&mut manifest);
    let text = manifest.to_bytes();
    let mut out = b"BALEENB\0\x01\0\0\0".to_vec();
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(b"[]");
    out.extend_from_slice(&bytes[area..]);
    out
}

#[test]
fn a_payload_never_yields_more_than_its_size() {
    let made = make(100_000, None);
    let bytes = fs::read(&made.path).unwrap();

    // The manifest claims less than the stream holds: reading stops there.
    let short = reframe(&bytes, |m| m.payloads[0].size = 60_000);
    let mut bundle = Bundle::open(&short[..], &TrustedKeys::new(), LAX).unwrap();
    let mut payload = bundle.next_payload().unwrap().unwrap();
    let mut got = Vec::new();
    let err = io::copy(&mut payload, &mut got).unwrap_err();
    assert!(got.len() <= 60_000);
    assert_eq!(
        err.to_string(),
        "payload \"rootfs\" is damaged: it decompresses to more than 60000 bytes but the \
         manifest says 60000; download or copy the bundle again"
    );
    drop(payload);
    assert_eq!(
        bundle.next_payload().err().unwrap().to_string(),
        "reading payload \"rootfs\" failed earlier; the rest of the bundle cannot be read: open \
         it again"
    );

    // The manifest claims more: an error at the end, not success.
    let long = reframe(&bytes, |m| m.payloads[0].size = 100_001);
    let err = read_all(&long[..], &TrustedKeys::new(), LAX).unwrap_err();
    assert_eq!(
        err.to_string(),
        "payload \"rootfs\" is damaged: it decompresses to 100000 bytes but the manifest says \
         100001; download or copy the bundle again"
    );
}

/// Reads every payload as the install does: `rootfs` without the uncompressed SHA-256.
fn read_all_as_install(bytes: impl Read, policy: Policy) -> Result<Vec<u8>, Error> {
    let mut bundle = Bundle::open(bytes, &TrustedKeys::new(), policy)?;
    let mut rootfs = Vec::new();
    bundle
        .next_payload()?
        .expect("a rootfs payload")
        .without_uncompressed_sha256()
        .copy_to(&mut rootfs, |_, _| ())?;
    bundle.verify_remaining()?;
    Ok(rootfs)
}

#[test]
fn without_the_uncompressed_sha256_every_other_check_stays() {
    let made = make((5 << 20) / 2, None);
    let bytes = fs::read(&made.path).unwrap();
    assert_eq!(read_all_as_install(&bytes[..], LAX).unwrap(), made.rootfs);

    // Whole 1 MiB chunks by value, the last one shorter, with or without the second hash.
    for skip_hash in [false, true] {
        let mut bundle = Bundle::open(&bytes[..], &TrustedKeys::new(), LAX).unwrap();
        let mut payload = bundle.next_payload().unwrap().unwrap();
        if skip_hash {
            payload = payload.without_uncompressed_sha256();
        }
        let mut chunks = Vec::new();
        payload
            .copy_chunks(
                |c| {
                    chunks.push(c);
                    Ok(())
                },
                |_, _| (),
            )
            .unwrap();
        let lens: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lens, [1 << 20, 1 << 20, 1 << 19]);
        assert_eq!(chunks.concat(), made.rootfs);
    }

    // Every frame carries zstd's content checksum (frame header descriptor, bit 2).
    let area = payload_area(&bytes);
    for p in &made.manifest.payloads {
        let frame = &bytes[area + p.offset as usize..];
        assert_eq!(
            frame[..4],
            [0x28, 0xb5, 0x2f, 0xfd],
            "{}: zstd magic",
            p.name
        );
        assert_ne!(frame[4] & 0x04, 0, "{}: no content checksum", p.name);
    }

    // The one check left out: a manifest whose uncompressed sum is wrong.
    let wrong = reframe(&bytes, |m| {
        m.payloads[0].sha256 = m.payloads[0].compressed_sha256
    });
    assert!(matches!(
        read_all(&wrong[..], &TrustedKeys::new(), LAX),
        Err(Error::PayloadHashMismatch {
            which: "uncompressed",
            ..
        })
    ));
    assert_eq!(read_all_as_install(&wrong[..], LAX).unwrap(), made.rootfs);

    // Damage anywhere in the stream, a truncation or a wrong size is still refused.
    let rootfs = &made.manifest.payloads[0];
    for step in 0..40u64 {
        let offset = area + (step * rootfs.compressed_size / 40 + 3) as usize;
        let mut damaged = bytes.clone();
        damaged[offset] ^= 0x01;
        let err = read_all_as_install(&damaged[..], LAX)
            .expect_err(&format!("damage at {offset} went unnoticed"));
        assert!(err.to_string().contains("payload \"rootfs\""), "{err}");
    }
    let cut = &bytes[..area + rootfs.compressed_size as usize / 2];
    assert!(matches!(
        read_all_as_install(cut, LAX),
        Err(Error::PayloadTruncated { .. })
    ));
    let long = reframe(&bytes, |m| m.payloads[0].size += 1);
    assert!(matches!(
        read_all_as_install(&long[..], LAX),
        Err(Error::PayloadSizeMismatch { longer: false, .. })
    ));
}

#[test]
fn payloads_are_read_in_order_to_their_end() {
    let made = make(100_000, None);
    let bytes = fs::read(&made.path).unwrap();
    let mut bundle = Bundle::open(&bytes[..], &TrustedKeys::new(), LAX).unwrap();
    let mut payload = bundle.next_payload().unwrap().unwrap();
    let mut part = [0u8; 100];
    payload.read_exact(&mut part).unwrap();
    drop(payload);
    assert_eq!(
        bundle.next_payload().err().unwrap().to_string(),
        "payload \"rootfs\" was not read to its end: read it completely (or skip it) before the \
         next payload"
    );

    let mut bundle = Bundle::open(&bytes[..], &TrustedKeys::new(), LAX).unwrap();
    bundle.next_payload().unwrap().unwrap().skip().unwrap();
    bundle.verify_remaining().unwrap();
    assert!(bundle.next_payload().unwrap().is_none());
}

#[test]
fn create_checks_its_input_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.baleen");
    let try_create = |fields: &ManifestFields, payloads, level| {
        create(
            &out,
            fields,
            payloads,
            None,
            &CreateOptions { zstd_level: level },
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let data = || PayloadInput::reader(ROOTFS, &b"abc"[..]);

    assert_eq!(
        try_create(&fields(), vec![data(), data()], 3),
        Err("cannot make the bundle: payload \"rootfs\" is given twice".into())
    );
    assert_eq!(
        try_create(&fields(), vec![data()], 22),
        Err("cannot make the bundle: zstd level 22 is outside 1..=19".into())
    );
    assert_eq!(
        try_create(&fields(), vec![], 3),
        Err("cannot make the bundle: 0 payloads given, expected 1 to 16".into())
    );
    let mut bad = fields();
    bad.device_type = "Raspberry Pi".into();
    assert!(try_create(&bad, vec![data()], 3).is_err());
    let missing = dir.path().join("missing.ext4");
    assert_eq!(
        try_create(&fields(), vec![PayloadInput::file(ROOTFS, &missing)], 3),
        Err(format!(
            "reading payload \"rootfs\" from {}",
            missing.display()
        ))
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp files left"
    );

    // A good one replaces nothing but `out`, and `created` is stored as UTC seconds.
    let mut local = fields();
    local.created = OffsetDateTime::from_unix_timestamp_nanos(1_767_225_600_500_000_000)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
    try_create(&local, vec![data()], 1).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let text = fs::read(&out).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("\"created\":\"2026-01-01T00:00:00Z\""),
        "{text}"
    );
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn key_files_round_trip_with_private_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("release.key");
    let public = dir.path().join("keys/release.pub");
    fs::create_dir(dir.path().join("keys")).unwrap();

    let key = SigningKey::generate().unwrap();
    key.save(&private).unwrap();
    key.public_key().save(&public).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&private), 0o600);
    assert_eq!(mode(&public), 0o644);
    let text = fs::read_to_string(&private).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");

    let loaded = SigningKey::load(&private).unwrap();
    assert_eq!(loaded.key_id(), key.key_id());
    assert_eq!(bundle::PublicKey::load(&public).unwrap(), key.public_key());

    // Never overwritten.
    let other = SigningKey::generate().unwrap();
    assert_ne!(other.key_id(), key.key_id());
    assert_eq!(
        other.save(&private).unwrap_err().to_string(),
        format!(
            "refusing to overwrite {}: move it away first (a lost signing key means devices \
             trusting it can no longer be updated with new bundles)",
            private.display()
        )
    );
    assert_eq!(SigningKey::load(&private).unwrap().key_id(), key.key_id());

    // The trusted key directory: *.pub only, bad files skipped and reported.
    fs::write(dir.path().join("keys/broken.pub"), "not a key").unwrap();
    fs::write(dir.path().join("keys/README"), "ignored").unwrap();
    fs::copy(&public, dir.path().join("keys/same-again.pub")).unwrap();
    let trusted = TrustedKeys::load_dir(&dir.path().join("keys")).unwrap();
    assert_eq!(trusted.key_ids(), vec![key.key_id()]);
    assert_eq!(trusted.skipped().len(), 1);
    assert_eq!(
        trusted.skipped()[0].path,
        dir.path().join("keys/broken.pub")
    );
    assert!(
        trusted.skipped()[0]
            .reason
            .contains("is not an ed25519 public key in PEM"),
        "{:?}",
        trusted.skipped()
    );
    assert!(
        TrustedKeys::load_dir(&dir.path().join("nowhere"))
            .unwrap()
            .is_empty()
    );

    // A private key file where a public one is expected, and the reverse.
    let err = SigningKey::load(&public).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{} is not an ed25519 private key in PKCS#8 PEM",
            public.display()
        )),
        "{err}"
    );
    assert!(bundle::PublicKey::load(&private).is_err());
}

#[test]
fn a_damaged_boot_payload_fails_the_unpack_with_the_payload_error() {
    let signer = key(1);
    let made = make_with(10_000, 200_000, Some(&signer));
    let mut bytes = fs::read(&made.path).unwrap();
    let boot = &made.manifest.payloads[1];
    // Deep inside the EFI binary's noise: the archive parses, the payload hash catches it.
    let at = payload_area(&bytes) + (boot.offset + boot.compressed_size / 2) as usize;
    bytes[at] ^= 0x08;

    let mut bundle = Bundle::open(&bytes[..], &trusting(&signer), STRICT).unwrap();
    bundle.next_payload().unwrap().unwrap().skip().unwrap();
    let payload = bundle.next_payload().unwrap().unwrap();
    let staging = made.dir.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let err = ArchiveReader::new(payload)
        .unwrap()
        .unpack(&staging)
        .unwrap_err();
    assert!(
        matches!(&err, Error::PayloadHashMismatch { name, .. } if name == BOOT),
        "{err:?}"
    );
}

#[test]
fn a_payload_needing_a_window_over_16_mib_is_refused() {
    use std::io::Write;

    let data = content(100_000, 3);
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.window_log(25).unwrap();
    encoder.write_all(&data).unwrap();
    let stream = encoder.finish().unwrap();
    let manifest = Manifest {
        format_version: 1,
        device_type: "qemux86-64".into(),
        os_version: "6.1.0".parse().unwrap(),
        meta_version: "6.1.0".parse().unwrap(),
        min_from_version: None,
        created: OffsetDateTime::UNIX_EPOCH,
        payloads: vec![bundle::PayloadInfo {
            name: ROOTFS.into(),
            offset: 0,
            compressed_size: stream.len() as u64,
            size: data.len() as u64,
            sha256: bundle::Sha256Sum(sha256(&data)),
            compressed_sha256: bundle::Sha256Sum(sha256(&stream)),
        }],
    };
    let text = manifest.to_bytes();
    let mut bytes = b"BALEENB\0\x01\0\0\0".to_vec();
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&2u32.to_le_bytes());
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(b"[]");
    bytes.extend_from_slice(&stream);

    let err = read_all(&bytes[..], &TrustedKeys::new(), LAX).unwrap_err();
    assert!(
        matches!(&err, Error::PayloadCorrupt { name, .. } if name == ROOTFS),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "payload \"rootfs\" is damaged: its zstd stream does not decompress (Frame requires too \
         much memory for decoding); download or copy the bundle again"
    );
}
