//! The boot partition's files (balenaOS §1.3).

use std::collections::BTreeMap;

use serde_json::json;
use systests::{DEVICE, manifest, test_image};

use crate::inputs::{build_file, device_type, is_development, toml_str};
use crate::readers::{
    boot_files, file, fingerprint_lines, md5_hex, os_release_fields, text, unquote,
};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

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
    let mut found: Vec<(usize, &str)> = expected
        .as_object()
        .expect("object")
        .keys()
        .map(|k| {
            let at = config
                .find(&format!("\"{k}\""))
                .unwrap_or_else(|| panic!("{variant}: key {k} not in config.json:\n{config}"));
            (at, k.as_str())
        })
        .collect();
    found.sort();
    let in_text: Vec<&str> = found.into_iter().map(|(_, k)| k).collect();
    let mut sorted = in_text.clone();
    sorted.sort();
    assert_eq!(
        in_text, sorted,
        "{variant}: config.json keys are not sorted (jq -S order):\n{config}"
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
    // The root's command line comes from the device file; the boot stage's
    // own kernel runs with it plus `quiet`.
    assert_eq!(
        cmdline,
        bootstage::stage_cmdline(&expected.join(" ")),
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
