//! Device-type files: the built-in ones, validation messages, loading, `device-type.json`.

use std::path::Path;

use buildconf::{Arch, DeviceState, DeviceType, PartitionSizes};

/// A small valid device-type file; tests replace one line with `with`.
const VALID: &str = r#"slug = "testboard"
name = "Test board"
arch = "arm64"
machine = "test_board"
state = "experimental"
getting_started_link = "https://example.org/start"
efi_boot_file = "EFI/BOOT/BOOTAA64.EFI"
kernel_package = "linux-image-arm64"
kernel_cmdline = "console=ttyAMA0,115200n8"
boot_modules = ["virtio_blk", "usb-storage"]
boot_size_mib = 40
root_size_mib = 640
state_size_mib = 20
data_size_mib = 4
"#;

/// `VALID` with the line of `key` replaced by `line` (or removed if `line` is empty), or with
/// `line` appended if no line has that key.
fn with(key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut found = false;
    let mut lines: Vec<&str> = Vec::new();
    for l in VALID.lines() {
        if l.starts_with(&prefix) {
            found = true;
            if !line.is_empty() {
                lines.push(line);
            }
        } else {
            lines.push(l);
        }
    }
    if !found {
        lines.push(line);
    }
    lines.join("\n")
}

fn error(text: &str) -> String {
    match DeviceType::from_toml_str(text, "devices/testboard.toml") {
        Ok(device) => panic!("accepted: {device:?}"),
        Err(e) => e.to_string(),
    }
}

fn repo_devices_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../devices"))
}

#[test]
fn builtin_device_types_all_parse() {
    let builtin = DeviceType::builtin();
    let slugs: Vec<&str> = builtin.iter().map(|d| d.slug.as_str()).collect();
    assert_eq!(slugs, ["genericx86-64-ext", "qemux86-64"]);
    for device in &builtin {
        assert_eq!(DeviceType::find(&device.slug).unwrap(), *device);
    }
}

#[test]
fn builtin_device_types_are_the_repository_files() {
    assert_eq!(
        DeviceType::load_dir(repo_devices_dir()).unwrap(),
        DeviceType::builtin()
    );
}

#[test]
fn qemux86_64() {
    let qemu = DeviceType::find("qemux86-64").unwrap();
    assert_eq!(qemu.name, "QEMU X86 64bit");
    assert_eq!(qemu.arch, Arch::Amd64);
    assert_eq!(qemu.machine, "qemux86-64");
    assert_eq!(qemu.state, DeviceState::Released);
    assert_eq!(qemu.efi_boot_file, "EFI/BOOT/BOOTX64.EFI");
    assert_eq!(qemu.kernel_package.as_str(), "linux-image-amd64");
    assert_eq!(
        qemu.kernel_cmdline_for(false),
        "console=ttyS0,115200n8 panic=10 quiet"
    );
    assert_eq!(
        qemu.kernel_cmdline_for(true),
        "console=ttyS0,115200n8 panic=10"
    );
    let modules: Vec<&str> = qemu.boot_modules.iter().map(|m| m.as_str()).collect();
    assert_eq!(
        modules,
        [
            "virtio_pci",
            "virtio_blk",
            "crc32c_generic",
            "ext4",
            "efivarfs"
        ]
    );
    assert_eq!(
        qemu.sizes,
        PartitionSizes {
            boot_mib: 100,
            root_mib: 640,
            state_mib: 80,
            data_mib: 192
        }
    );
    assert!(qemu.packages.is_empty());
    // A virtual machine has no GPU, sound card, Wi-Fi card, camera or InfiniBand adapter.
    let omitted: Vec<&str> = qemu.omit_modules.iter().map(|m| m.as_str()).collect();
    for tree in [
        "kernel/drivers/gpu",
        "kernel/drivers/media",
        "kernel/sound",
        "kernel/drivers/net/wireless/intel",
        "kernel/drivers/infiniband",
    ] {
        assert!(omitted.contains(&tree), "{tree} missing from {omitted:?}");
    }
    // The Wi-Fi stack and the simulated radio the `country` test uses stay.
    assert!(
        !omitted.iter().any(|t| *t == "kernel/drivers/net/wireless"
            || t.starts_with("kernel/net/") && t.contains("80211")),
        "{omitted:?}"
    );
}

#[test]
fn genericx86_64_ext_boots_real_hardware_without_qemu_drivers() {
    let generic = DeviceType::find("genericx86-64-ext").unwrap();
    let qemu = DeviceType::find("qemux86-64").unwrap();
    assert_eq!(generic.arch, qemu.arch);
    assert_eq!(generic.efi_boot_file, qemu.efi_boot_file);
    let modules: Vec<&str> = generic.boot_modules.iter().map(|m| m.as_str()).collect();
    for needed in [
        "nvme",
        "ahci",
        "sd_mod",
        "usb-storage",
        "xhci_pci",
        "ehci_pci",
        "ext4",
        "vfat",
    ] {
        assert!(
            modules.contains(&needed),
            "{needed} missing from {modules:?}"
        );
    }
    assert!(
        !modules.iter().any(|m| m.starts_with("virtio")),
        "{modules:?}"
    );
    // Real hardware may have any of them: the whole kernel package ships.
    assert!(generic.omit_modules.is_empty());
}

#[test]
fn unknown_slug_lists_the_known_ones() {
    assert_eq!(
        DeviceType::find("raspberrypi4-64").unwrap_err().to_string(),
        "unknown device type \"raspberrypi4-64\": known device types are genericx86-64-ext, \
         qemux86-64"
    );
}

#[test]
fn minimal_file_and_defaults() {
    let device = DeviceType::from_toml_str(VALID, "devices/testboard.toml").unwrap();
    assert_eq!(device.arch, Arch::Arm64);
    assert_eq!(device.machine, "test_board");
    assert!(device.instructions.is_empty());
    assert!(device.packages.is_empty());
    assert_eq!(device.production_cmdline_extra, "");
    assert_eq!(device.kernel_cmdline_for(false), "console=ttyAMA0,115200n8");
    assert_eq!(device.sizes.data_mib, 4);
}

#[test]
fn unknown_and_missing_keys() {
    assert_eq!(
        error(&with("kernel_version", "kernel_version = \"6.1\"")),
        "unknown key \"kernel_version\" in devices/testboard.toml: allowed keys are slug, name, \
         arch, machine, state, instructions, getting_started_link, efi_boot_file, \
         kernel_package, kernel_cmdline, production_cmdline_extra, development_cmdline_extra, \
         boot_modules, omit_modules, packages, boot_size_mib, root_size_mib, state_size_mib, data_size_mib"
    );
    assert_eq!(
        error(&with("arch", "")),
        "missing key \"arch\" in devices/testboard.toml: it is required"
    );
}

#[test]
fn partition_sizes_are_positive_multiples_of_4_mib() {
    let expected = "expected a size in MiB, a positive multiple of 4";
    for (key, value) in [
        ("boot_size_mib", "0"),
        ("boot_size_mib", "102"),
        ("root_size_mib", "-1024"),
        ("state_size_mib", "1"),
        ("data_size_mib", "0"),
        ("data_size_mib", "193"),
    ] {
        assert_eq!(
            error(&with(key, &format!("{key} = {value}"))),
            format!("devices/testboard.toml: {key} = {value}: {expected}")
        );
    }
    assert_eq!(
        error(&with("root_size_mib", "root_size_mib = \"1G\"")),
        format!("devices/testboard.toml: root_size_mib = \"1G\": {expected}")
    );
}

#[test]
fn bad_names() {
    let cases = [
        (
            "slug",
            "slug = \"Test_Board\"",
            "slug = \"Test_Board\": expected a device-type slug ([a-z0-9][a-z0-9-]*)",
        ),
        (
            "machine",
            "machine = \"-x\"",
            "machine = \"-x\": expected a machine name ([a-z0-9][a-z0-9_-]*)",
        ),
        (
            "name",
            "name = \" \"",
            "name = \" \": expected a non-empty name on one line",
        ),
        (
            "arch",
            "arch = \"aarch64\"",
            "arch = \"aarch64\": expected one of amd64, arm64, armhf, i386",
        ),
        (
            "state",
            "state = \"RELEASED\"",
            "state = \"RELEASED\": expected one of released, new, experimental, discontinued",
        ),
        (
            "boot_modules",
            "boot_modules = [\"virtio_blk\", \"virtio.ko\"]",
            "boot_modules[1] = \"virtio.ko\": expected a kernel module name ([a-z0-9_-]+)",
        ),
        (
            "omit_modules",
            "omit_modules = [\"kernel/sound\", \"drivers/gpu\"]",
            "omit_modules[1] = \"drivers/gpu\": expected a path of the kernel's modules directory \
             starting with kernel/, e.g. \"kernel/drivers/gpu\"",
        ),
        (
            "omit_modules",
            "omit_modules = [\"kernel/../modules.dep\"]",
            "omit_modules[0] = \"kernel/../modules.dep\": expected a path of the kernel's modules \
             directory starting with kernel/, e.g. \"kernel/drivers/gpu\"",
        ),
        (
            "omit_modules",
            "omit_modules = [\"kernel/\"]",
            "omit_modules[0] = \"kernel/\": expected a path of the kernel's modules directory \
             starting with kernel/, e.g. \"kernel/drivers/gpu\"",
        ),
        (
            "kernel_package",
            "kernel_package = \"linux image\"",
            "kernel_package = \"linux image\": expected a Debian package name ([a-z0-9][a-z0-9+.-]+)",
        ),
        (
            "packages",
            "packages = [\"firmware-misc-nonfree\", \"Foo\"]",
            "packages[1] = \"Foo\": expected a Debian package name ([a-z0-9][a-z0-9+.-]+)",
        ),
        (
            "getting_started_link",
            "getting_started_link = \"example.org\"",
            "getting_started_link = \"example.org\": expected an http:// or https:// URL without whitespace",
        ),
        (
            "instructions",
            "instructions = [\"Flash it.\", \"\"]",
            "instructions[1] = \"\": expected a non-empty string",
        ),
    ];
    for (key, line, message) in cases {
        assert_eq!(
            error(&with(key, line)),
            format!("devices/testboard.toml: {message}")
        );
    }
}

#[test]
fn bad_efi_boot_files() {
    let expected = "expected a relative path on the boot partition ending in .EFI, e.g. \
                    \"EFI/BOOT/BOOTX64.EFI\"";
    for bad in [
        "/EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/vmlinuz",
        "EFI/../BOOTX64.EFI",
        "EFI//X.EFI",
        "EFI/BOOT X.EFI",
    ] {
        assert_eq!(
            error(&with(
                "efi_boot_file",
                &format!("efi_boot_file = \"{bad}\"")
            )),
            format!("devices/testboard.toml: efi_boot_file = \"{bad}\": {expected}")
        );
    }
    let ok = with("efi_boot_file", "efi_boot_file = \"EFI/Linux/baleen.efi\"");
    assert!(DeviceType::from_toml_str(&ok, "x").is_ok());
}

#[test]
fn bad_kernel_cmdlines() {
    let expected = "expected kernel parameters in printable ASCII, without root= (the boot \
                    stage adds root=UUID=...)";
    assert_eq!(
        error(&with(
            "kernel_cmdline",
            "kernel_cmdline = \"console=ttyS0 root=/dev/sda2\""
        )),
        format!(
            "devices/testboard.toml: kernel_cmdline = \"console=ttyS0 root=/dev/sda2\": {expected}"
        )
    );
    assert_eq!(
        error(&with(
            "production_cmdline_extra",
            "production_cmdline_extra = \"quiet\\nsplash\""
        )),
        format!(
            "devices/testboard.toml: production_cmdline_extra = \"quiet\\nsplash\": {expected}"
        )
    );
    // rootwait and rootfstype are other parameters, and whitespace is normalised.
    let ok = with(
        "kernel_cmdline",
        "kernel_cmdline = \"  rootwait   rootfstype=ext4 \"",
    );
    let device = DeviceType::from_toml_str(&ok, "x").unwrap();
    assert_eq!(device.kernel_cmdline_for(true), "rootwait rootfstype=ext4");
}

#[test]
fn load_checks_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otherboard.toml");
    std::fs::write(&path, VALID).unwrap();
    assert_eq!(
        DeviceType::load(&path).unwrap_err().to_string(),
        format!(
            "{}: slug = \"testboard\" does not match the file name: name the file testboard.toml",
            path.display()
        )
    );
    assert_eq!(
        DeviceType::load_dir(dir.path()).unwrap_err().to_string(),
        format!(
            "{}: slug = \"testboard\" does not match the file name: name the file testboard.toml",
            path.display()
        )
    );
}

#[test]
fn load_dir_reads_toml_files_sorted_by_slug() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("testboard.toml"), VALID).unwrap();
    std::fs::write(
        dir.path().join("aboard.toml"),
        with("slug", "slug = \"aboard\""),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a device type").unwrap();
    let devices = DeviceType::load_dir(dir.path()).unwrap();
    let slugs: Vec<&str> = devices.iter().map(|d| d.slug.as_str()).collect();
    assert_eq!(slugs, ["aboard", "testboard"]);
}

#[test]
fn load_dir_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        DeviceType::load_dir(dir.path()).unwrap_err().to_string(),
        format!("no device-type files (*.toml) in {}", dir.path().display())
    );
    let missing = dir.path().join("missing");
    assert_eq!(
        DeviceType::load_dir(&missing).unwrap_err().to_string(),
        format!("reading device-type directory {}", missing.display())
    );
}

#[test]
fn device_type_json_of_qemux86_64() {
    let json = DeviceType::find("qemux86-64").unwrap().device_type_json();
    let link = "https://docs.balena.io/learn/getting-started/qemux86-64/nodejs/";
    let expected = serde_json::json!({
        "slug": "qemux86-64",
        "version": 1,
        "aliases": ["qemux86-64"],
        "name": "QEMU X86 64bit",
        "arch": "amd64",
        "state": "released",
        "instructions": [
            "Write the image to a file and start it with UEFI firmware and a virtio disk, e.g. \
             <code>qemu-system-x86_64 -machine q35 -m 1024 -smp 2 -bios /usr/share/ovmf/OVMF.fd \
             -drive file=balena-image-qemux86-64.img,format=raw,if=virtio -nic \
             user,model=virtio-net-pci -nographic</code>",
            "Add <code>-accel kvm -cpu host</code> on hosts with KVM.",
        ],
        "gettingStartedLink": { "windows": link, "osx": link, "linux": link },
        "supportsBlink": false,
        "yocto": {
            "machine": "qemux86-64",
            "image": "balena-image",
            "fstype": "balenaos-img",
            "deployArtifact": "balena-image-qemux86-64.balenaos-img",
            "compressed": true,
        },
        "configuration": { "config": { "partition": { "primary": 1 }, "path": "/config.json" } },
        "options": [{
            "isGroup": true,
            "name": "network",
            "message": "Network",
            "options": [
                { "message": "Network Connection", "name": "network", "type": "list",
                  "choices": ["ethernet", "wifi"] },
                { "message": "Wifi SSID", "name": "wifiSsid", "type": "text",
                  "when": { "network": "wifi" } },
                { "message": "Wifi Passphrase", "name": "wifiKey", "type": "password",
                  "when": { "network": "wifi" } },
            ],
        }],
        "initialization": {
            "options": [{ "message": "Select a drive", "type": "drive", "name": "drive" }],
            "operations": [{ "command": "burn" }],
        },
    });
    assert_eq!(json, expected);
    // Key order is stable (the workspace enables serde_json's preserve_order).
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(&keys[..4], ["slug", "version", "aliases", "name"]);
}

#[test]
fn device_type_json_uses_balena_arch_names() {
    let device = DeviceType::from_toml_str(VALID, "x").unwrap();
    let json = device.device_type_json();
    assert_eq!(json["arch"], "aarch64");
    assert_eq!(json["state"], "experimental");
    assert_eq!(
        json["yocto"]["deployArtifact"],
        "balena-image-test_board.balenaos-img"
    );
}
