//! Image tests: the images scripts/test.sh built, read without mounting
//! anything (diskimage for the GPT and the FAT boot partition, debugfs for
//! ext4), and the refusals of `baleen config inject` and `baleen build`.
//!
//! Expected values come from the inputs (devices/qemux86-64.toml,
//! tests/build-<variant>.toml), never from the image under test. The shared
//! test images are only read; every test that writes works on a sparse copy.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};
use serde_json::json;
use systests::{
    DEVICE, Outcome, baleen, baleen_bin, copy_image, manifest, run, test_image, workspace_root,
};

const MIB: u64 = 1024 * 1024;
/// balenaOS's BALENA_IMAGE_ALIGNMENT.
const ALIGNMENT: u64 = 4 * MIB;
const SECTOR: u64 = 512;
/// GPT type GUIDs, spelled out rather than taken from diskimage.
const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const LINUX_FS_TYPE: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
const LABELS: [&str; 5] = [
    "resin-boot",
    "resin-rootA",
    "resin-rootB",
    "resin-state",
    "resin-data",
];
const EXT4_LABELS: [&str; 4] = ["resin-rootA", "resin-rootB", "resin-state", "resin-data"];
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

// ---------------------------------------------------------------------------
// Inputs: the device type file and the build files the images were made from.

fn read_toml(path: &Path) -> toml::Table {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// devices/qemux86-64.toml.
fn device_type() -> toml::Table {
    read_toml(&workspace_root().join(format!("devices/{DEVICE}.toml")))
}

/// tests/build-<variant>.toml, the build file of that test image.
fn build_file(variant: &str) -> toml::Table {
    read_toml(&workspace_root().join(format!("tests/build-{variant}.toml")))
}

fn toml_str<'t>(table: &'t toml::Table, key: &str) -> &'t str {
    table
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("no string {key} in {table:?}"))
}

fn toml_u64(table: &toml::Table, key: &str) -> u64 {
    table
        .get(key)
        .and_then(toml::Value::as_integer)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or_else(|| panic!("no size {key} in {table:?}"))
}

fn is_development(variant: &str) -> bool {
    build_file(variant)
        .get("development")
        .and_then(toml::Value::as_bool)
        .unwrap_or_else(|| panic!("tests/build-{variant}.toml sets no development flag"))
}

// ---------------------------------------------------------------------------
// Readers.

fn partitions(image: &Path) -> Vec<diskimage::PartitionInfo> {
    diskimage::read_partition_table(image)
        .unwrap_or_else(|e| panic!("reading the partition table of {}: {e}", image.display()))
}

fn partition(image: &Path, label: &str) -> diskimage::PartitionInfo {
    partitions(image)
        .into_iter()
        .find(|p| p.name == label)
        .unwrap_or_else(|| panic!("no partition {label} in {}", image.display()))
}

/// Every file of the boot partition (path → contents), read through diskimage.
fn boot_files(image: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut disk = diskimage::Disk::open(image).unwrap_or_else(|e| panic!("{e}"));
    let fs = diskimage::open_fat_partition(&mut disk, "resin-boot")
        .unwrap_or_else(|e| panic!("opening resin-boot of {}: {e}", image.display()));
    let paths = fs.list_files().unwrap_or_else(|e| panic!("{e}"));
    paths
        .into_iter()
        .filter(|p| !p.ends_with('/'))
        .map(|p| {
            let data = fs.read_file(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, data)
        })
        .collect()
}

fn file<'f>(files: &'f BTreeMap<String, Vec<u8>>, path: &str) -> &'f [u8] {
    files.get(path).unwrap_or_else(|| {
        panic!(
            "{path} missing from the boot partition, which holds {:?}",
            files.keys().collect::<Vec<_>>()
        )
    })
}

fn text<'f>(files: &'f BTreeMap<String, Vec<u8>>, path: &str) -> &'f str {
    std::str::from_utf8(file(files, path))
        .unwrap_or_else(|e| panic!("{path} on the boot partition is not UTF-8: {e}"))
}

/// os-release `KEY=value` lines, values as written (quotes kept).
fn os_release_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("os-release line without '=': {l:?}"))
        })
        .collect()
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<md5>  <path>` lines of a balenaos.fingerprint, checked for form.
fn fingerprint_lines(fingerprint: &str) -> Vec<(&str, &str)> {
    fingerprint
        .lines()
        .map(|line| {
            let (md5, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("fingerprint line is not `<md5>  <path>`: {line:?}"));
            assert!(
                is_md5_hex(md5),
                "fingerprint line has no md5 (32 lower-case hex digits): {line:?}"
            );
            (md5, path)
        })
        .collect()
}

/// One ext4 partition of an image, read with debugfs through its `?offset=`
/// I/O option: no loop device, no mount.
struct Ext4Reader {
    spec: String,
}

impl Ext4Reader {
    fn open(image: &Path, label: &str) -> Self {
        let part = partition(image, label);
        Ext4Reader {
            spec: format!("{}?offset={}", image.display(), part.offset_bytes),
        }
    }

    /// Output of one debugfs request. debugfs exits 0 even when the request
    /// fails and reports that on stderr, after its version banner: anything
    /// else on stderr is a failure.
    fn request(&self, request: &str) -> Vec<u8> {
        let out = run(Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.spec));
        let complaints: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
            .collect();
        assert!(
            out.success() && complaints.is_empty(),
            "debugfs -R '{request}' {}: {out}",
            self.spec
        );
        out.stdout
    }

    fn cat(&self, path: &str) -> Vec<u8> {
        self.request(&format!("cat {path}"))
    }

    fn text(&self, path: &str) -> String {
        String::from_utf8(self.cat(path))
            .unwrap_or_else(|e| panic!("{path} in {} is not UTF-8: {e}", self.spec))
    }

    /// `debugfs stat` output: `Type: regular    Mode:  0755` and so on.
    fn stat(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.request(&format!("stat {path}"))).into_owned()
    }

    fn assert_regular_file(&self, path: &str) -> String {
        let stat = self.stat(path);
        assert!(
            stat.contains("Type: regular"),
            "{path} in {} is not a regular file:\n{stat}",
            self.spec
        );
        stat
    }
}

/// `a` and `b` hold the same bytes; the message names the first difference.
fn assert_same_bytes(a: &Path, b: &Path, why: &str) {
    let open = |p: &Path| File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let len = |f: &File, p: &Path| {
        f.metadata()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len()
    };
    assert_eq!(
        len(&fa, a),
        len(&fb, b),
        "{why}: {} and {} differ in size",
        a.display(),
        b.display()
    );
    let mut ba = vec![0u8; 8 << 20];
    let mut bb = vec![0u8; 8 << 20];
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        assert_eq!(na, nb, "{why}: short read at {offset}");
        if ba[..na] != bb[..nb] {
            let at = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap_or(0);
            panic!(
                "{why}: {} differs from {} at byte {}",
                a.display(),
                b.display(),
                offset + at as u64
            );
        }
        if na == 0 {
            return;
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("reading: {e}"),
        }
    }
    n
}

/// A scratch directory beside the build's other temporary files (not /tmp,
/// which may be a small tmpfs), removed when dropped.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("image-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a scratch directory")
}

// ---------------------------------------------------------------------------
// 1. Partition table.

fn check_partition_table(variant: &str) {
    let image = test_image(variant);
    let parts = partitions(&image);
    let got: Vec<(u32, &str)> = parts.iter().map(|p| (p.number, p.name.as_str())).collect();
    let expected: Vec<(u32, &str)> = (1..).zip(LABELS).collect();
    assert_eq!(got, expected, "GPT partitions of {}", image.display());

    for p in &parts {
        let expected_type = if p.name == "resin-boot" {
            ESP_TYPE
        } else {
            LINUX_FS_TYPE
        };
        assert_eq!(
            p.type_guid.to_string(),
            expected_type,
            "type GUID of {}",
            p.name
        );
        assert_eq!(
            p.offset_bytes % ALIGNMENT,
            0,
            "{} starts at {}, not a multiple of 4 MiB",
            p.name,
            p.offset_bytes
        );
        assert_eq!(
            p.size_bytes % ALIGNMENT,
            0,
            "{} is {} bytes, not a multiple of 4 MiB",
            p.name,
            p.size_bytes
        );
    }
    assert_eq!(
        parts[0].offset_bytes,
        4 * MIB,
        "resin-boot must start at 4 MiB"
    );
    assert_eq!(parts[0].size_bytes, 100 * MIB, "resin-boot must be 100 MiB");
    assert_eq!(
        parts[1].size_bytes, parts[2].size_bytes,
        "resin-rootA and resin-rootB must be the same size"
    );

    let device = device_type();
    let from_device: Vec<u64> = [
        "boot_size_mib",
        "root_size_mib",
        "root_size_mib",
        "state_size_mib",
        "data_size_mib",
    ]
    .iter()
    .map(|key| toml_u64(&device, key) * MIB)
    .collect();
    let sizes: Vec<u64> = parts.iter().map(|p| p.size_bytes).collect();
    assert_eq!(
        sizes, from_device,
        "partition sizes vs devices/{DEVICE}.toml"
    );

    for pair in parts.windows(2) {
        assert!(
            pair[0].offset_bytes + pair[0].size_bytes <= pair[1].offset_bytes,
            "{} ({}+{}) overlaps {} (at {})",
            pair[0].name,
            pair[0].offset_bytes,
            pair[0].size_bytes,
            pair[1].name,
            pair[1].offset_bytes
        );
    }

    let m = manifest(variant);
    let listed: Vec<(u64, String, u64, u64)> = m["partitions"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no partitions array: {m}"))
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().expect("partition number"),
                p["name"].as_str().expect("partition name").to_string(),
                p["offset_bytes"].as_u64().expect("partition offset_bytes"),
                p["size_bytes"].as_u64().expect("partition size_bytes"),
            )
        })
        .collect();
    let read: Vec<(u64, String, u64, u64)> = parts
        .iter()
        .map(|p| {
            (
                u64::from(p.number),
                p.name.clone(),
                p.offset_bytes,
                p.size_bytes,
            )
        })
        .collect();
    assert_eq!(read, listed, "partition table vs the build manifest");

    // The backup GPT, checked with an independent GPT implementation: both
    // headers valid, the backup in the last sector, every partition inside
    // the usable area and before the backup entries.
    let size = std::fs::metadata(&image).expect("image metadata").len();
    assert_eq!(
        m["image"]["size_bytes"].as_u64(),
        Some(size),
        "manifest image size vs the file"
    );
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .only_valid_headers(true)
        .open(&image)
        .unwrap_or_else(|e| panic!("gpt crate reading {}: {e}", image.display()));
    let primary = gpt.primary_header().expect("primary GPT header");
    let backup = gpt.backup_header().expect("backup GPT header");
    let last_lba = size / SECTOR - 1;
    assert_eq!(primary.backup_lba, last_lba, "primary header's backup LBA");
    assert_eq!(backup.current_lba, last_lba, "backup header LBA");
    for p in &parts {
        assert!(
            p.first_lba >= primary.first_usable
                && p.last_lba <= primary.last_usable
                && p.last_lba < backup.part_start,
            "{} (LBA {}..={}) is outside the usable area {}..={} or reaches the backup entries at {}",
            p.name,
            p.first_lba,
            p.last_lba,
            primary.first_usable,
            primary.last_usable,
            backup.part_start
        );
    }
    let theirs: Vec<(u32, String, u64, u64, String)> = gpt
        .partitions()
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(n, p)| {
            (
                *n,
                p.name.clone(),
                p.first_lba,
                p.last_lba,
                p.part_type_guid.guid.to_string(),
            )
        })
        .collect();
    let ours: Vec<(u32, String, u64, u64, String)> = parts
        .iter()
        .map(|p| {
            (
                p.number,
                p.name.clone(),
                p.first_lba,
                p.last_lba,
                p.type_guid.to_string(),
            )
        })
        .collect();
    assert_eq!(ours, theirs, "diskimage vs the gpt crate");
}

#[test]
fn partition_table_dev() {
    check_partition_table("dev");
}

#[test]
fn partition_table_prod() {
    check_partition_table("prod");
}

// ---------------------------------------------------------------------------
// 2. Filesystem labels.

/// `blkid -p` on one partition: an independent witness of type and label.
fn blkid(image: &Path, part: &diskimage::PartitionInfo) -> BTreeMap<String, String> {
    let out = run(Command::new("blkid")
        .args(["-p", "-o", "export", "-O"])
        .arg(part.offset_bytes.to_string())
        .arg(image));
    assert!(
        out.success(),
        "blkid on {} of {}: {out}",
        part.name,
        image.display()
    );
    out.stdout_text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check_labels(variant: &str) {
    let image = test_image(variant);
    for label in EXT4_LABELS {
        let info = diskimage::read_ext4_info(&image, label)
            .unwrap_or_else(|e| panic!("{variant}: {label} is not ext4: {e}"));
        assert_eq!(
            info.label, label,
            "{variant}: ext4 label of partition {label}"
        );
        let part = partition(&image, label);
        assert_eq!(
            info.size_bytes(),
            part.size_bytes,
            "{variant}: the {label} filesystem should fill its partition"
        );
        let ids = blkid(&image, &part);
        assert_eq!(ids.get("TYPE").map(String::as_str), Some("ext4"), "{ids:?}");
        assert_eq!(ids.get("LABEL").map(String::as_str), Some(label), "{ids:?}");
    }

    let mut disk = diskimage::Disk::open(&image).unwrap_or_else(|e| panic!("{e}"));
    let fs = diskimage::open_fat_partition(&mut disk, "resin-boot")
        .unwrap_or_else(|e| panic!("{variant}: resin-boot is not FAT: {e}"));
    assert_eq!(
        fs.label(),
        "resin-boot",
        "{variant}: FAT label of resin-boot"
    );
    drop(fs);
    let ids = blkid(&image, &partition(&image, "resin-boot"));
    assert_eq!(ids.get("TYPE").map(String::as_str), Some("vfat"), "{ids:?}");
    assert_eq!(
        ids.get("LABEL").map(String::as_str),
        Some("resin-boot"),
        "{ids:?}"
    );
}

#[test]
fn labels_dev() {
    check_labels("dev");
}

#[test]
fn labels_prod() {
    check_labels("prod");
}

// ---------------------------------------------------------------------------
// 3. Boot partition files.

fn check_config_json(variant: &str, files: &BTreeMap<String, Vec<u8>>) {
    let config = text(files, "config.json");
    let value: serde_json::Value = serde_json::from_str(config)
        .unwrap_or_else(|e| panic!("{variant}: config.json is not JSON ({e}):\n{config}"));
    let expected = if is_development(variant) {
        json!({"deviceType": DEVICE, "developmentMode": true, "persistentLogging": false})
    } else {
        json!({"deviceType": DEVICE, "persistentLogging": false})
    };
    assert_eq!(value, expected, "{variant}: config.json is\n{config}");
    // Keys sorted in the text itself, as `jq -S` writes them.
    let keys: Vec<&String> = expected.as_object().expect("object").keys().collect();
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            config
                .find(&format!("\"{k}\""))
                .unwrap_or_else(|| panic!("{variant}: key {k} not in config.json:\n{config}"))
        })
        .collect();
    let mut sorted_keys = keys.clone();
    sorted_keys.sort();
    let mut by_position: Vec<(usize, &String)> = positions.into_iter().zip(keys).collect();
    by_position.sort();
    let in_text: Vec<&String> = by_position.into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        in_text, sorted_keys,
        "{variant}: config.json keys are not sorted:\n{config}"
    );
}

fn check_os_release(variant: &str, files: &BTreeMap<String, Vec<u8>>) {
    let os_release = text(files, "os-release");
    let fields = os_release_fields(os_release);
    let build = build_file(variant);
    let m = manifest(variant);
    let field = |key: &str| {
        *fields
            .get(key)
            .unwrap_or_else(|| panic!("{variant}: no {key} in os-release:\n{os_release}"))
    };
    assert_eq!(
        field("SLUG"),
        format!("\"{DEVICE}\""),
        "{variant}: SLUG must be quoted:\n{os_release}"
    );
    assert_eq!(
        unquote(field("VERSION")),
        m["osVersion"].as_str().expect("manifest osVersion"),
        "{variant}: os-release VERSION vs the manifest"
    );
    assert_eq!(
        unquote(field("META_BALENA_VERSION")),
        toml_str(&build, "meta_version"),
        "{variant}: META_BALENA_VERSION vs tests/build-{variant}.toml"
    );
    let (variant_name, variant_id) = if is_development(variant) {
        ("Development", "dev")
    } else {
        ("Production", "prod")
    };
    assert_eq!(unquote(field("VARIANT")), variant_name, "{os_release}");
    assert_eq!(unquote(field("VARIANT_ID")), variant_id, "{os_release}");
}

/// The bytes of one section of a PE image (virtual size, without the file
/// alignment padding).
fn pe_section<'b>(pe: &goblin::pe::PE<'_>, bytes: &'b [u8], name: &str) -> &'b [u8] {
    let section = pe
        .sections
        .iter()
        .find(|s| s.name().ok() == Some(name))
        .unwrap_or_else(|| {
            let names: Vec<&str> = pe.sections.iter().filter_map(|s| s.name().ok()).collect();
            panic!("the EFI image has no {name} section; it has {names:?}")
        });
    let start = section.pointer_to_raw_data as usize;
    let len = match section.virtual_size {
        0 => section.size_of_raw_data,
        v => v.min(section.size_of_raw_data),
    } as usize;
    bytes
        .get(start..start + len)
        .unwrap_or_else(|| panic!("{name} section lies outside the file"))
}

fn trim_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &bytes[..end]
}

fn check_efi_image(variant: &str, files: &BTreeMap<String, Vec<u8>>) {
    let device = device_type();
    let efi_path = toml_str(&device, "efi_boot_file");
    assert_eq!(efi_path, "EFI/BOOT/BOOTX64.EFI");
    let efi = file(files, efi_path);
    assert!(
        efi.starts_with(b"MZ"),
        "{variant}: {efi_path} has no MZ header"
    );
    let pe = goblin::pe::PE::parse(efi)
        .unwrap_or_else(|e| panic!("{variant}: {efi_path} is not a PE image: {e}"));

    let linux = pe_section(&pe, efi, ".linux");
    assert!(
        linux.starts_with(b"MZ") && linux.get(0x202..0x206) == Some(b"HdrS".as_slice()),
        "{variant}: .linux is not an EFI-stub Linux kernel"
    );
    let initrd = pe_section(&pe, efi, ".initrd");
    assert!(
        initrd.len() > 1024,
        "{variant}: .initrd is only {} bytes",
        initrd.len()
    );

    let cmdline = String::from_utf8_lossy(trim_nul(pe_section(&pe, efi, ".cmdline")))
        .trim_end()
        .to_string();
    let extra = if is_development(variant) {
        "development_cmdline_extra"
    } else {
        "production_cmdline_extra"
    };
    let expected: Vec<&str> = [
        toml_str(&device, "kernel_cmdline"),
        toml_str(&device, extra),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    assert_eq!(
        cmdline,
        expected.join(" "),
        "{variant}: .cmdline vs devices/{DEVICE}.toml"
    );

    let osrel = trim_nul(pe_section(&pe, efi, ".osrel"));
    assert_eq!(
        String::from_utf8_lossy(osrel),
        text(files, "os-release"),
        "{variant}: the EFI image's .osrel vs the boot partition's os-release"
    );
}

fn check_fingerprint(variant: &str, files: &BTreeMap<String, Vec<u8>>) {
    let fingerprint = text(files, "balenaos.fingerprint");
    let lines = fingerprint_lines(fingerprint);
    for (md5, path) in &lines {
        assert_eq!(
            md5_hex(file(files, path)),
            *md5,
            "{variant}: md5 of {path} read back from the image vs balenaos.fingerprint"
        );
    }
    let listed: Vec<&str> = lines.iter().map(|(_, p)| *p).collect();
    let expected: Vec<&str> = files
        .keys()
        .map(String::as_str)
        .filter(|p| *p != "config.json" && *p != "balenaos.fingerprint")
        .collect();
    assert_eq!(
        listed, expected,
        "{variant}: balenaos.fingerprint must list every boot file but config.json and itself, sorted"
    );
}

fn check_boot_files(variant: &str) {
    let image = test_image(variant);
    let files = boot_files(&image);

    check_config_json(variant, &files);
    check_os_release(variant, &files);

    let device_json: serde_json::Value =
        serde_json::from_slice(file(&files, "device-type.json")).expect("device-type.json is JSON");
    assert_eq!(
        device_json["slug"], DEVICE,
        "{variant}: device-type.json slug"
    );
    assert_eq!(
        device_json["name"].as_str(),
        Some(toml_str(&device_type(), "name")),
        "{variant}: device-type.json name"
    );

    assert!(
        file(&files, "splash/balena-logo.png").starts_with(PNG_MAGIC),
        "{variant}: splash/balena-logo.png is not a PNG"
    );
    let sample = text(&files, "system-connections/balena-sample.ignore");
    assert!(
        sample.contains("[connection]"),
        "{variant}: balena-sample.ignore is not a NetworkManager keyfile:\n{sample}"
    );
    assert!(
        !text(&files, "system-connections/README.ignore")
            .trim()
            .is_empty(),
        "{variant}: system-connections/README.ignore is empty"
    );
    assert_eq!(
        text(&files, "balena-image").trim_end(),
        "DO NOT REMOVE THIS FILE",
        "{variant}: content of the balena-image flag file"
    );
    assert!(
        !text(&files, "image-version-info").trim().is_empty(),
        "{variant}: image-version-info is empty"
    );

    let bootenv_bytes = file(&files, "bootenv");
    assert_eq!(bootenv_bytes.len(), 1024, "{variant}: bootenv size");
    let block = bootenv::EnvBlock::parse(bootenv_bytes)
        .unwrap_or_else(|e| panic!("{variant}: bootenv is not an environment block: {e}"));
    let env = bootenv::BootEnv::from_block(&block)
        .unwrap_or_else(|e| panic!("{variant}: bootenv keys: {e}"));
    assert_eq!(
        env,
        bootenv::BootEnv {
            resin_root_part: bootenv::Slot::A,
            upgrade_available: false,
            bootcount: 0,
        },
        "{variant}: a fresh image boots slot A with no update pending"
    );

    check_efi_image(variant, &files);
    check_fingerprint(variant, &files);
}

#[test]
fn boot_files_dev() {
    check_boot_files("dev");
}

#[test]
fn boot_files_prod() {
    check_boot_files("prod");
}

// ---------------------------------------------------------------------------
// 4. Root filesystem.

fn check_root_filesystem(variant: &str) {
    let image = test_image(variant);
    let root = Ext4Reader::open(&image, "resin-rootA");
    let boot = boot_files(&image);
    let m = manifest(variant);
    let version = toml_str(&build_file(variant), "meta_version").to_string();

    let os_release = root.text("/etc/os-release");
    assert_eq!(
        os_release,
        text(&boot, "os-release"),
        "{variant}: /etc/os-release vs the boot partition's os-release"
    );
    for issue in ["/etc/issue", "/etc/issue.net"] {
        let content = root.text(issue);
        assert!(
            content.contains(&format!("balenaOS {version}")),
            "{variant}: {issue} should greet with balenaOS {version}:\n{content}"
        );
    }

    let timestamp = root.text("/etc/timestamp");
    let stamp = timestamp.strip_suffix('\n').unwrap_or(&timestamp);
    assert!(
        stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{variant}: /etc/timestamp is not YYYYMMDDhhmmss: {timestamp:?}"
    );
    let version_info = text(&boot, "image-version-info");
    assert!(
        version_info.contains(stamp),
        "{variant}: image-version-info {version_info:?} should name the build time {stamp}"
    );

    let fingerprint = root.text("/balenaos.fingerprint");
    let lines = fingerprint_lines(&fingerprint);
    assert!(
        lines.len() > 1000,
        "{variant}: /balenaos.fingerprint lists only {} files",
        lines.len()
    );
    for (_, path) in &lines {
        assert!(
            path.starts_with('/'),
            "{variant}: fingerprint path {path:?} is not absolute"
        );
    }
    let listed: BTreeMap<&str, &str> = lines.iter().map(|(md5, p)| (*p, *md5)).collect();
    for excluded in ["/etc/hostname", "/etc/machine-id", "/balenaos.fingerprint"] {
        assert!(
            !listed.contains_key(excluded),
            "{variant}: /balenaos.fingerprint must not list {excluded}"
        );
    }
    for path in ["/etc/os-release", "/usr/bin/baleen"] {
        let md5 = listed
            .get(path)
            .unwrap_or_else(|| panic!("{variant}: /balenaos.fingerprint does not list {path}"));
        assert_eq!(
            md5_hex(&root.cat(path)),
            *md5,
            "{variant}: md5 of {path} vs /balenaos.fingerprint"
        );
    }

    assert_eq!(
        root.text("/resin-boot/balena-image").trim_end(),
        "DO NOT REMOVE THIS FILE",
        "{variant}: /resin-boot/balena-image"
    );

    let stat = root.stat("/boot/vmlinuz");
    assert!(
        stat.contains("Type: symlink"),
        "{variant}: /boot/vmlinuz is not a symlink:\n{stat}"
    );
    let target = stat
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fast link dest: "))
        .map(|t| t.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{variant}: no link target in\n{stat}"));
    let kernel = m["kernelVersion"].as_str().expect("manifest kernelVersion");
    assert_eq!(
        target,
        format!("vmlinuz-{kernel}"),
        "{variant}: /boot/vmlinuz target vs the manifest's kernel version"
    );
    root.assert_regular_file(&format!("/boot/{target}"));

    let stat = root.assert_regular_file("/usr/bin/baleen");
    assert!(
        stat.contains("Mode:  0755"),
        "{variant}: /usr/bin/baleen is not mode 0755:\n{stat}"
    );
    let installed = root.cat("/usr/bin/baleen");
    assert!(
        installed.starts_with(b"\x7fELF"),
        "{variant}: /usr/bin/baleen is not an ELF binary"
    );
    let bin = baleen_bin();
    let built_with = std::fs::read(&bin).expect("reading BALEEN_BIN");
    assert!(
        installed == built_with,
        "{variant}: /usr/bin/baleen ({} bytes) is not {} ({} bytes): the test images are older \
         than the binary; rebuild them as scripts/test.sh does",
        installed.len(),
        bin.display(),
        built_with.len()
    );
}

#[test]
fn root_filesystem_dev() {
    check_root_filesystem("dev");
}

#[test]
fn root_filesystem_prod() {
    check_root_filesystem("prod");
}

// ---------------------------------------------------------------------------
// 5. `baleen config inject` and `baleen config show`.

/// Copies the boot partition out of `image` and runs `fsck.fat -n` on it.
fn assert_boot_fs_clean(image: &Path, dir: &Path) {
    let part = partition(image, "resin-boot");
    let mut disk = diskimage::Disk::open(image).unwrap_or_else(|e| panic!("{e}"));
    let copy = dir.join("resin-boot.vfat");
    let mut out = File::create(&copy).expect("creating the partition copy");
    std::io::copy(&mut disk.partition(&part), &mut out).expect("copying resin-boot out");
    out.flush().expect("writing the partition copy");
    drop(out);
    let check = run(Command::new("fsck.fat").arg("-n").arg(&copy));
    assert!(
        check.success(),
        "fsck.fat -n finds errors in resin-boot of {}: {check}",
        image.display()
    );
    std::fs::remove_file(copy).expect("removing the partition copy");
}

/// config.json as an independent FAT reader (mtools) sees it.
fn mtools_config(image: &Path) -> Vec<u8> {
    let part = partition(image, "resin-boot");
    let out = run(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.offset_bytes))
        .arg("::config.json")
        .arg("-"));
    assert!(out.success(), "mcopy config.json: {out}");
    out.stdout
}

fn inject(image: &Path, config: &Path) -> Outcome {
    let mut args = vec!["config".as_ref(), "inject".as_ref()];
    args.push(image.as_os_str());
    args.push(config.as_os_str());
    baleen(args)
}

fn show(image: &Path) -> Outcome {
    baleen(["config".as_ref(), "show".as_ref(), image.as_os_str()])
}

/// Injects `content` and checks every reader gets exactly those bytes back.
fn inject_and_read_back(image: &Path, dir: &Path, name: &str, content: &[u8]) {
    let config = dir.join(name);
    std::fs::write(&config, content).expect("writing the config file");
    let out = inject(image, &config);
    assert!(out.success(), "baleen config inject {name}: {out}");
    let shown = show(image);
    assert!(shown.success(), "baleen config show: {shown}");
    assert!(
        shown.stdout == content,
        "baleen config show after injecting {name}: expected\n{}\ngot\n{}",
        String::from_utf8_lossy(content),
        shown.stdout_text()
    );
    assert!(
        diskimage::read_config(image).expect("diskimage::read_config") == content,
        "diskimage::read_config after injecting {name}"
    );
    assert!(
        mtools_config(image) == content,
        "mtools reads another config.json after injecting {name}"
    );
}

#[test]
fn config_inject_round_trips_bytes() {
    let dir = scratch();
    let original = test_image("dev");
    let image = copy_image(&original, dir.path());
    // Unknown keys, nested values, non-ASCII text and odd spacing without a
    // trailing newline: the file is stored byte for byte, not re-serialized.
    let config = "{ \"deviceType\":\"qemux86-64\",\n\t\"persistentLogging\" : true,\n  \
                  \"hostname\": \"tëst-dévice\", \"frobnicateLater\": {\"nested\": [1, 2.50, \
                  {\"deep\": null}], \"ok\": false}}";
    inject_and_read_back(&image, dir.path(), "new-config.json", config.as_bytes());

    let before = boot_files(&original);
    let after = boot_files(&image);
    let others = |files: &BTreeMap<String, Vec<u8>>| -> Vec<(String, String)> {
        files
            .iter()
            .filter(|(p, _)| *p != "config.json")
            .map(|(p, d)| (p.clone(), md5_hex(d)))
            .collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "injecting config.json changed other boot files"
    );
    assert_boot_fs_clean(&image, dir.path());
}

#[test]
fn config_inject_grows_and_shrinks_config_json() {
    let dir = scratch();
    let image = copy_image(&test_image("dev"), dir.path());
    // Bigger than several FAT clusters, then back to a few bytes: the old
    // tail must not survive.
    let keys: serde_json::Map<String, serde_json::Value> = (0..3000)
        .map(|i| (format!("key{i:04}"), json!(format!("value number {i}"))))
        .collect();
    let big = serde_json::to_vec_pretty(&serde_json::Value::Object(keys)).expect("serializes");
    assert!(
        big.len() > 64 * 1024,
        "the big config is {} bytes",
        big.len()
    );
    inject_and_read_back(&image, dir.path(), "big.json", &big);
    inject_and_read_back(&image, dir.path(), "small.json", b"{}");
    assert_boot_fs_clean(&image, dir.path());
}

/// Runs an inject that must be refused on a copy of the dev image; checks
/// the exit code and that the copy still equals the original byte for byte.
fn assert_inject_refused(config: &Path, dir: &Path) -> Outcome {
    let original = test_image("dev");
    let image = copy_image(&original, dir);
    let out = inject(&image, config);
    assert_eq!(
        out.code,
        Some(1),
        "baleen config inject {} must fail with exit code 1: {out}",
        config.display()
    );
    assert_same_bytes(
        &image,
        &original,
        &format!("a refused inject of {} changed the image", config.display()),
    );
    out
}

#[test]
fn config_inject_refuses_invalid_json() {
    let dir = scratch();
    let config = dir.path().join("truncated.json");
    std::fs::write(&config, b"{\"a\":").expect("writing the config file");
    let out = assert_inject_refused(&config, dir.path());
    assert!(
        out.stderr.contains("config.json")
            && out.stderr.contains("not valid JSON")
            && out.stderr.contains("line 1 column 5"),
        "the error should say config.json is not valid JSON and where: {out}"
    );
}

#[test]
fn config_inject_refuses_json_that_is_not_an_object() {
    let dir = scratch();
    for (name, content, found) in [
        (
            "array.json",
            "[{\"deviceType\": \"qemux86-64\"}]",
            "an array",
        ),
        ("null.json", "null", "null"),
    ] {
        let config = dir.path().join(name);
        std::fs::write(&config, content).expect("writing the config file");
        let out = assert_inject_refused(&config, dir.path());
        assert!(
            out.stderr.contains("config.json")
                && out.stderr.contains("must be a JSON object")
                && out.stderr.contains(found),
            "the error should say config.json must be an object, not {found}: {out}"
        );
    }
}

#[test]
fn config_inject_names_a_missing_config_file() {
    let dir = scratch();
    let config = dir.path().join("no-such-config.json");
    let out = assert_inject_refused(&config, dir.path());
    assert!(
        out.stderr.contains(&config.display().to_string()),
        "the error should name {}: {out}",
        config.display()
    );
}

// ---------------------------------------------------------------------------
// 6. and 7. `baleen build` refusals: bad build files, bad output directory,
// missing host tools. Each must fail before any long work and leave nothing.

struct BuildAttempt {
    outcome: Outcome,
    out: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// `baleen build --config <build.toml> --out <out>`, with a scratch cache
/// directory so a failure can never touch the shared root filesystem cache.
/// `out` is relative to the scratch directory, which `prepare` can fill first.
fn build_attempt(
    build_toml: &str,
    out: &str,
    path_env: Option<&str>,
    prepare: impl FnOnce(&Path),
) -> BuildAttempt {
    let dir = scratch();
    prepare(dir.path());
    let config = dir.path().join("build.toml");
    std::fs::write(&config, build_toml).expect("writing build.toml");
    let out = dir.path().join(out);
    let mut cmd = Command::new(baleen_bin());
    cmd.arg("build")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"));
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    BuildAttempt {
        outcome: run(&mut cmd),
        out,
        config,
        _dir: dir,
    }
}

impl BuildAttempt {
    fn assert_refused(&self, expected: &[&str]) {
        let out = &self.outcome;
        assert_eq!(
            out.code,
            Some(1),
            "baleen build must fail with exit code 1: {out}"
        );
        for text in expected {
            assert!(
                out.stderr.contains(text),
                "stderr should contain {text:?}: {out}"
            );
        }
        self.assert_nothing_left();
    }

    /// No image, no partial image, no manifest, no work directory.
    fn assert_nothing_left(&self) {
        for name in [
            format!("{DEVICE}.img"),
            format!(".{DEVICE}.img.partial"),
            format!("{DEVICE}.manifest.json"),
        ] {
            let path = self.out.join(&name);
            assert!(
                !path.exists(),
                "a failed build left {}: {}",
                path.display(),
                self.outcome
            );
        }
        if self.out.is_dir() {
            let left: Vec<_> = std::fs::read_dir(&self.out)
                .expect("listing the output directory")
                .map(|e| e.expect("directory entry").file_name())
                .collect();
            assert!(
                left.is_empty(),
                "a failed build left {left:?} in {}",
                self.out.display()
            );
        }
    }

    /// The build stopped before its first step (`[   0.0 s] root filesystem: …`).
    fn assert_no_step_started(&self) {
        let started: Vec<&str> = self
            .outcome
            .stderr
            .lines()
            .filter(|l| l.starts_with('[') && l.contains(" s] "))
            .collect();
        assert!(
            started.is_empty(),
            "the build should fail before any long work, but ran {started:?}: {}",
            self.outcome
        );
    }
}

fn assert_build_file_refused(build_toml: &str, expected: &[&str]) {
    let attempt = build_attempt(build_toml, "out", None, |_| {});
    let config = attempt.config.display().to_string();
    let mut expected = expected.to_vec();
    expected.push(&config);
    attempt.assert_refused(&expected);
    attempt.assert_no_step_started();
}

#[test]
fn build_refuses_unknown_key() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nfrobnicate = 1\n",
        &["unknown key \"frobnicate\"", "allowed keys"],
    );
}

#[test]
fn build_refuses_aufs() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nstorage_driver = \"aufs\"\n",
        &["aufs was removed", "overlay2"],
    );
}

#[test]
fn build_refuses_unknown_release() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nrelease = \"buster\"\n",
        &["release", "\"buster\"", "bookworm", "trixie"],
    );
}

#[test]
fn build_refuses_unknown_device() {
    assert_build_file_refused(
        "device = \"nosuch\"\n",
        &["\"nosuch\"", "known device types", DEVICE],
    );
}

fn dev_build_file() -> String {
    let path = workspace_root().join("tests/build-dev.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn build_refuses_an_output_directory_under_a_file() {
    const CONTENT: &[u8] = b"a regular file\n";
    let attempt = build_attempt(&dev_build_file(), "afile/out", None, |dir| {
        std::fs::write(dir.join("afile"), CONTENT).expect("writing afile");
    });
    let out = attempt.out.display().to_string();
    attempt.assert_refused(&[&out]);
    attempt.assert_no_step_started();
    let afile = attempt.out.parent().expect("out has a parent");
    assert_eq!(
        std::fs::read(afile).expect("afile is still a file"),
        CONTENT,
        "the failed build changed {}",
        afile.display()
    );
}

#[test]
fn build_names_the_debian_package_of_a_missing_tool() {
    let attempt = build_attempt(&dev_build_file(), "out", Some("/nonexistent-dir"), |_| {});
    attempt.assert_refused(&[" not found: install the Debian package "]);
    let hint = "install the Debian package";
    assert_eq!(
        attempt.outcome.stderr.matches(hint).count(),
        1,
        "the error chain should give the hint once: {}",
        attempt.outcome
    );
}

#[test]
fn manifest_matches_the_dev_image() {
    let image = test_image("dev");
    let m = manifest("dev");
    let build = build_file("dev");
    assert_eq!(m["apiVersion"], 1, "{m}");
    assert_eq!(m["device"], DEVICE, "{m}");
    assert_eq!(m["variant"], "Development", "{m}");
    assert_eq!(m["debianRelease"], toml_str(&build, "release"), "{m}");
    assert_eq!(m["metaVersion"], toml_str(&build, "meta_version"), "{m}");
    assert_eq!(m["image"]["file"], format!("{DEVICE}.img"), "{m}");
    let sum = run(Command::new("sha256sum").arg(&image));
    assert!(sum.success(), "sha256sum: {sum}");
    let text = sum.stdout_text();
    let sha256 = text.split_whitespace().next().unwrap_or_default();
    assert_eq!(
        m["image"]["sha256"].as_str(),
        Some(sha256),
        "manifest sha256 vs sha256sum of {}",
        image.display()
    );
}
