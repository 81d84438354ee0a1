//! Reading an image `baleen build` made into the payloads of a bundle: the `rootfs` payload is
//! the root partition's filesystem, streamed from the image file; the `boot` payload the boot
//! partition's [`RELEASE_BOOT_FILES`], read from its FAT filesystem in place.

use anyhow::{Context, Result, bail};
use bundle::{ManifestFields, PayloadInput, SigningKey};
use diskimage::layout::{BOOT_LABEL, ROOT_A_LABEL};
use diskimage::{Disk, PartitionInfo, Slice};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The files of the boot partition that belong to one root version, and so travel in the
/// `boot` payload. An entry ending in `/` stands for every file under that directory.
///
/// * `EFI/`: the EFI boot file (`EFI/BOOT/BOOTX64.EFI` on x86-64, the device type's
///   `efi_boot_file`): the unified kernel image with this release's kernel, boot stage and
///   os-release;
/// * `os-release`, `image-version-info`, `device-type.json`: what the release says about itself.
///
/// Not carried: `config.json` and `bootenv` (the device's own state), the samples
/// (`system-connections/`, `system-proxy/`), the splash logo and the `balena-image` flag
/// (the same in every release, and the device may have changed them), and
/// `balenaos.fingerprint`, which covers the whole partition: the installer writes a new one,
/// as balenaOS's `1-bootfiles` hook does. The whole build-time tree is also in the root
/// filesystem, at `/resin-boot/`.
pub const RELEASE_BOOT_FILES: &[&str] = &[
    "EFI/",
    "os-release",
    "image-version-info",
    "device-type.json",
];

/// A bundle written.
#[derive(Debug)]
pub struct Made {
    pub manifest: bundle::Manifest,
    pub bundle_bytes: u64,
}

/// Reads `image` (GPT, `resin-rootA`, `resin-boot`), checks its boot `os-release` against
/// `fields`, and writes the bundle to `output`.
pub fn make_bundle(
    image: &Path,
    fields: &ManifestFields,
    signer: Option<&SigningKey>,
    output: &Path,
) -> Result<Made> {
    let not_baleen = || {
        format!(
            "reading {}: pass an image made by `baleen build`",
            image.display()
        )
    };
    let mut disk = Disk::open(image)?;
    let parts = diskimage::read_partition_table_from(&mut disk).with_context(not_baleen)?;
    let root = diskimage::find_partition(&parts, ROOT_A_LABEL, image)
        .with_context(not_baleen)?
        .clone();
    let rootfs_len = rootfs_len(&mut disk, &root, image)?;

    let boot_dir = tempfile::Builder::new()
        .prefix("baleen-bundle-boot-")
        .tempdir()
        .context("creating a temporary directory for the boot files")?;
    let files = extract_boot_files(&mut disk, image, boot_dir.path())?;
    let os_release = std::fs::read_to_string(boot_dir.path().join("os-release"))
        .context("reading the extracted os-release")?;
    check_os_release(&os_release, fields, image)?;

    tracing::info!(
        "compressing rootfs ({} MiB of {ROOT_A_LABEL}) and boot ({} files) into {}",
        rootfs_len >> 20,
        files.len(),
        output.display()
    );
    let rootfs = Slice::new(disk.into_file(), root.offset_bytes, rootfs_len);
    let payloads = vec![
        PayloadInput::reader(bundle::ROOTFS, rootfs),
        PayloadInput::boot_dir(bundle::BOOT, boot_dir.path()),
    ];
    let manifest = bundle::create(
        output,
        fields,
        payloads,
        signer,
        &bundle::CreateOptions::default(),
    )
    .with_context(|| {
        format!(
            "making the bundle {} from {}",
            output.display(),
            image.display()
        )
    })?;
    let bundle_bytes = std::fs::metadata(output)
        .with_context(|| format!("reading {}", output.display()))?
        .len();
    Ok(Made {
        manifest,
        bundle_bytes,
    })
}

/// Bytes of the root partition the payload carries: the ext4 filesystem's size (the whole
/// partition, as `baleen build` makes it).
fn rootfs_len(disk: &mut Disk, root: &PartitionInfo, image: &Path) -> Result<u64> {
    let info = diskimage::read_ext4_superblock(&mut disk.partition(root)).with_context(|| {
        format!(
            "reading the {ROOT_A_LABEL} filesystem of {}: pass an image made by `baleen build`",
            image.display()
        )
    })?;
    let fs_bytes = info.size_bytes();
    if fs_bytes > root.size_bytes {
        bail!(
            "the {ROOT_A_LABEL} filesystem of {} claims {fs_bytes} bytes but its partition has \
             {}: the image is damaged, build it again",
            image.display(),
            root.size_bytes
        );
    }
    Ok(fs_bytes)
}

/// Whether the boot partition file `path` is matched by the [`RELEASE_BOOT_FILES`] `entry`
/// (ASCII case ignored, as FAT does).
fn matches(entry: &str, path: &str) -> bool {
    if entry.ends_with('/') {
        path.len() > entry.len()
            && path
                .get(..entry.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(entry))
    } else {
        path.eq_ignore_ascii_case(entry)
    }
}

pub(crate) fn is_release_file(path: &str) -> bool {
    RELEASE_BOOT_FILES.iter().any(|entry| matches(entry, path))
}

/// The release files among a boot partition's listing (directories end in `/`), or an error
/// naming those [`RELEASE_BOOT_FILES`] entries that match nothing.
fn select_release_files(listing: &[String]) -> Result<Vec<String>, Vec<&'static str>> {
    let files: Vec<String> = listing
        .iter()
        .filter(|p| !p.ends_with('/') && is_release_file(p))
        .cloned()
        .collect();
    let missing: Vec<&'static str> = RELEASE_BOOT_FILES
        .iter()
        .copied()
        .filter(|entry| !files.iter().any(|f| matches(entry, f)))
        .collect();
    if missing.is_empty() {
        Ok(files)
    } else {
        Err(missing)
    }
}

/// Copies the release files of the image's boot partition into `dest` (directories 0755,
/// files 0644, so the archive does not depend on the umask); returns their paths.
fn extract_boot_files(disk: &mut Disk, image: &Path, dest: &Path) -> Result<Vec<String>> {
    let fs = diskimage::open_fat_partition(disk, BOOT_LABEL)?;
    let listing = fs.list_files()?;
    let files = select_release_files(&listing).map_err(|missing| {
        anyhow::anyhow!(
            "the {BOOT_LABEL} partition of {} lacks {}: pass an image made by `baleen build`",
            image.display(),
            missing.join(", ")
        )
    })?;
    for rel in &files {
        let bytes = fs.read_file(rel)?;
        let path = dest.join(rel);
        let dir = path.parent().expect("a file under dest has a parent");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    fs.close()?;
    Ok(files)
}

/// The value of `key` in os-release text, unquoted.
fn os_release_value(text: &str, key: &str) -> Option<String> {
    let raw = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))?
        .trim();
    let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Some(raw.to_string());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    Some(out)
}

/// The image's boot `os-release` must state the manifest's device type and version: the
/// manifest beside an image may belong to another build.
fn check_os_release(text: &str, fields: &ManifestFields, image: &Path) -> Result<()> {
    let version = fields.os_version.to_string();
    for (key, expected) in [("SLUG", &fields.device_type), ("VERSION", &version)] {
        let found = os_release_value(text, key);
        if found.as_deref() != Some(expected.as_str()) {
            bail!(
                "the image {} is not the one its build manifest describes: its os-release has \
                 {key}={}, the manifest {expected}; build the image again",
                image.display(),
                found.as_deref().unwrap_or("(none)")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    #[test]
    fn release_boot_files_are_selected() {
        let listing: Vec<String> = [
            "EFI/",
            "EFI/BOOT/",
            "EFI/BOOT/BOOTX64.EFI",
            "balena-image",
            "balenaos.fingerprint",
            "bootenv",
            "config.json",
            "device-type.json",
            "image-version-info",
            "os-release",
            "splash/",
            "splash/balena-logo.png",
            "system-connections/README.ignore",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            select_release_files(&listing).unwrap(),
            [
                "EFI/BOOT/BOOTX64.EFI",
                "device-type.json",
                "image-version-info",
                "os-release"
            ]
        );
        let without_efi: Vec<String> = listing
            .iter()
            .filter(|p| !p.starts_with("EFI") && *p != "os-release")
            .cloned()
            .collect();
        assert_eq!(
            select_release_files(&without_efi).unwrap_err(),
            ["EFI/", "os-release"]
        );
        assert!(
            !is_release_file("EFIX/a") && !is_release_file("EFI/") && is_release_file("efi/boot/x")
        );
    }

    #[test]
    fn os_release_values_are_unquoted() {
        let text = "ID=\"balena-os\"\nVERSION=\"6.1.0+rev1\"\nSLUG=\"qemux86-64\"\nVARIANT=Development\nX=\"a\\\"b\"\n";
        assert_eq!(os_release_value(text, "VERSION").unwrap(), "6.1.0+rev1");
        assert_eq!(os_release_value(text, "VARIANT").unwrap(), "Development");
        assert_eq!(os_release_value(text, "X").unwrap(), "a\"b");
        assert_eq!(os_release_value(text, "VERSION_ID"), None);
        assert_eq!(os_release_value(text, "ID").unwrap(), "balena-os");
    }

    const OS_RELEASE: &str = "ID=\"balena-os\"\nVERSION=\"1.2.3+rev1\"\nSLUG=\"qemux86-64\"\n";
    const EFI: &[u8] = b"MZ not really a UKI";

    /// A small image with baleen's GPT: a FAT boot partition with release and device files,
    /// and a fake ext4 superblock at the start of resin-rootA claiming `fs_blocks` 4 KiB blocks.
    fn fake_image(path: &Path, fs_blocks: u32) -> Vec<PartitionInfo> {
        let layout = diskimage::Layout::compute(&diskimage::PartitionSizes {
            boot_mib: 8,
            root_mib: 4,
            state_mib: 4,
            data_mib: 4,
        });
        let mut disk = Disk::create(path, layout.total_bytes).unwrap();
        let parts = diskimage::write_partition_table(&mut disk, &layout, None).unwrap();
        let boot = diskimage::find_partition(&parts, BOOT_LABEL, path)
            .unwrap()
            .clone();
        diskimage::format_boot_fs(disk.partition(&boot), 0x1234_5678).unwrap();
        let fs = diskimage::FatFs::open(disk.partition(&boot), "test boot").unwrap();
        fs.create_dir_all("EFI/BOOT").unwrap();
        for (rel, data) in [
            ("EFI/BOOT/BOOTX64.EFI", EFI),
            ("os-release", OS_RELEASE.as_bytes()),
            (
                "image-version-info",
                b"baleen-image-qemux86-64-20260101000000\n",
            ),
            ("device-type.json", b"{}\n"),
            ("config.json", b"{\"deviceType\":\"qemux86-64\"}"),
            ("bootenv", &[b'#'; 1024]),
        ] {
            fs.write_file(rel, data).unwrap();
        }
        fs.close().unwrap();
        let root = diskimage::find_partition(&parts, ROOT_A_LABEL, path)
            .unwrap()
            .clone();
        let mut sb = [0u8; 1024];
        sb[0x04..0x08].copy_from_slice(&fs_blocks.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // 1024 << 2 = 4096
        sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        let f = disk.file();
        f.seek(SeekFrom::Start(root.offset_bytes + 1024)).unwrap();
        f.write_all(&sb).unwrap();
        // A marker at the end of the filesystem, and one just after it (not carried).
        let end = root.offset_bytes + u64::from(fs_blocks) * 4096;
        f.seek(SeekFrom::Start(end - 4)).unwrap();
        f.write_all(b"LASTOUT!").unwrap();
        disk.sync().unwrap();
        parts
    }

    fn fields(version: &str) -> ManifestFields {
        ManifestFields {
            device_type: "qemux86-64".into(),
            os_version: version.parse().unwrap(),
            min_from_version: None,
            created: time::OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(),
        }
    }

    #[test]
    fn a_bundle_from_a_fake_image_carries_the_root_range_and_release_files() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("qemux86-64.img");
        let parts = fake_image(&image, 256);
        let key = SigningKey::from_seed(&[3; 32]);
        let out = dir.path().join("b.bundle");
        let made = make_bundle(&image, &fields("1.2.3+rev1"), Some(&key), &out).unwrap();
        assert_eq!(made.bundle_bytes, std::fs::metadata(&out).unwrap().len());

        let trusted = bundle::TrustedKeys::from_keys([key.public_key()]);
        let mut b = bundle::Bundle::open(
            std::fs::File::open(&out).unwrap(),
            &trusted,
            bundle::Policy::default(),
        )
        .unwrap();
        assert_eq!(b.manifest().os_version.to_string(), "1.2.3+rev1");

        // rootfs: exactly the filesystem's 1 MiB of resin-rootA.
        let mut rootfs = Vec::new();
        b.next_payload()
            .unwrap()
            .unwrap()
            .copy_to(&mut rootfs, |_, _| {})
            .unwrap();
        let root = diskimage::find_partition(&parts, ROOT_A_LABEL, &image).unwrap();
        let mut want = vec![0u8; 256 * 4096];
        let mut f = std::fs::File::open(&image).unwrap();
        f.seek(SeekFrom::Start(root.offset_bytes)).unwrap();
        f.read_exact(&mut want).unwrap();
        assert!(want.ends_with(b"LAST"));
        assert!(
            rootfs == want,
            "rootfs payload differs from the partition's first MiB"
        );

        // boot: the release files only.
        let mut archive = Vec::new();
        b.next_payload()
            .unwrap()
            .unwrap()
            .copy_to(&mut archive, |_, _| {})
            .unwrap();
        let unpacked = dir.path().join("boot");
        std::fs::create_dir(&unpacked).unwrap();
        let mut names = bundle::bootfiles::ArchiveReader::new(archive.as_slice())
            .unwrap()
            .unpack(&unpacked)
            .unwrap();
        names.sort();
        assert_eq!(
            names,
            [
                "EFI",
                "EFI/BOOT",
                "EFI/BOOT/BOOTX64.EFI",
                "device-type.json",
                "image-version-info",
                "os-release"
            ]
        );
        assert_eq!(
            std::fs::read(unpacked.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            EFI
        );
        assert!(b.next_payload().unwrap().is_none());
    }

    #[test]
    fn an_image_whose_os_release_disagrees_with_the_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("qemux86-64.img");
        fake_image(&image, 16);
        let out = dir.path().join("b.bundle");
        let err = make_bundle(&image, &fields("1.2.4"), None, &out).unwrap_err();
        assert!(
            err.to_string().contains(
                "its os-release has VERSION=1.2.3+rev1, the manifest 1.2.4; build the image again"
            ),
            "{err:#}"
        );
        assert!(!out.exists());
    }

    #[test]
    fn a_filesystem_larger_than_its_partition_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("qemux86-64.img");
        fake_image(&image, 2048); // 8 MiB in a 4 MiB partition
        let err =
            make_bundle(&image, &fields("1.2.3+rev1"), None, &dir.path().join("b")).unwrap_err();
        assert!(err.to_string().contains("the image is damaged"), "{err:#}");
    }

    #[test]
    fn a_file_that_is_not_an_image_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("x.img");
        std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        let err = make_bundle(&image, &fields("1.0.0"), None, &dir.path().join("b")).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("x.img: pass an image made by `baleen build`"),
            "{err:#}"
        );
    }
}
