//! Facts about the root filesystem in resin-rootA.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use systests::{manifest, run, test_image};

use crate::inputs::{build_file, toml_str};
use crate::readers::{Ext4Reader, boot_files, fingerprint_lines, md5_hex, scratch, text};

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
    // The binary is static: it runs on the build host too, and reports the
    // version the manifest records.
    let dir = scratch();
    let copy = dir.path().join("baleen");
    std::fs::write(&copy, &installed).expect("writing the binary out");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .expect("making it executable");
    let version = run(Command::new(&copy).arg("--version"));
    let expected = format!(
        "baleen {}\n",
        m["baleenVersion"].as_str().expect("manifest baleenVersion")
    );
    assert!(
        version.success() && version.stdout_text() == expected,
        "{variant}: /usr/bin/baleen --version should print {expected:?}: {version}"
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
