//! The boot partition's contents (balenaOS §1.3), rendered into a directory
//! tree that is written into the FAT filesystem and copied to `/resin-boot/`.

use anyhow::{Context, Result};
use buildconf::BuildConfig;
use std::path::Path;

pub const LOGO: &[u8] = include_bytes!("../../../../assets/balena-logo.png");

/// `config.json` as a fresh image carries it: keys sorted as `jq -S` writes them.
pub fn config_json(config: &BuildConfig) -> String {
    // A BTreeMap: serde_json keeps insertion order (preserve_order); jq -S sorts.
    let mut map = std::collections::BTreeMap::<&str, serde_json::Value>::new();
    map.insert("deviceType", config.device.slug.clone().into());
    if config.development {
        map.insert("developmentMode", true.into());
    }
    map.insert("persistentLogging", false.into());
    let mut text = serde_json::to_string_pretty(&map).expect("config serializes");
    text.push('\n');
    text
}

/// The initial bootenv: slot A, no update pending.
pub fn bootenv() -> Vec<u8> {
    let mut block = bootenv::EnvBlock::new();
    bootenv::BootEnv::default().apply_to(&mut block);
    block
        .to_bytes()
        .expect("three keys fit in 1024 bytes")
        .to_vec()
}

pub const FLAG_FILE: &str = "balena-image";
pub const FLAG_CONTENT: &str = "DO NOT REMOVE THIS FILE\n";

const NM_SAMPLE: &str = "\
[connection]
id=balena-wifi
type=wifi

[wifi]
hidden=true
mode=infrastructure
ssid=My_Wifi_Ssid

[ipv4]
method=auto

[ipv6]
addr-gen-mode=stable-privacy
method=auto

[wifi-security]
auth-alg=open
key-mgmt=wpa-psk
psk=super_secret_wifi_password
";

const NM_README: &str = "\
Put NetworkManager connection files (keyfile format) in this directory to have
the device use them. Files ending in .ignore are skipped. See
balena-sample.ignore for a Wi-Fi example; rename it without .ignore to use it.
";

const PROXY_SAMPLE: &str = "\
base {
    log_debug = off;
    log_info = on;
    log = stderr;
    daemon = off;
    redirector = iptables;
}

redsocks {
    type = socks5;
    ip = 192.0.2.1;
    port = 8123;
    local_ip = 127.0.0.1;
    local_port = 12345;
}
";

const PROXY_README: &str = "\
To route the device's traffic through a proxy, rename redsocks.conf.ignore to
redsocks.conf and set the proxy's address. Optionally list hosts that bypass
the proxy, one per line, in a file called no_proxy.
";

/// Everything but the fingerprint and the EFI image: (path, contents).
pub fn files(config: &BuildConfig, os_release: &str, image_name: &str) -> Vec<(String, Vec<u8>)> {
    let device_json = serde_json::to_string_pretty(&config.device.device_type_json())
        .expect("device type serializes")
        + "\n";
    vec![
        ("config.json".into(), config_json(config).into_bytes()),
        ("os-release".into(), os_release.as_bytes().to_vec()),
        ("device-type.json".into(), device_json.into_bytes()),
        ("splash/balena-logo.png".into(), LOGO.to_vec()),
        (
            "system-connections/balena-sample.ignore".into(),
            NM_SAMPLE.as_bytes().to_vec(),
        ),
        (
            "system-connections/README.ignore".into(),
            NM_README.as_bytes().to_vec(),
        ),
        (
            "system-proxy/redsocks.conf.ignore".into(),
            PROXY_SAMPLE.as_bytes().to_vec(),
        ),
        (
            "system-proxy/README.ignore".into(),
            PROXY_README.as_bytes().to_vec(),
        ),
        (FLAG_FILE.into(), FLAG_CONTENT.as_bytes().to_vec()),
        (
            "image-version-info".into(),
            format!("{image_name}\n").into_bytes(),
        ),
        ("bootenv".into(), bootenv()),
    ]
}

/// Writes the files and the EFI image into `dir`, then the fingerprint of
/// all of them except `config.json` (balenaOS §1.3).
pub fn write_tree(
    dir: &Path,
    files: &[(String, Vec<u8>)],
    efi_path: &str,
    efi_image: &Path,
) -> Result<()> {
    for (rel, data) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("file has a parent"))?;
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    let efi = dir.join(efi_path);
    std::fs::create_dir_all(efi.parent().expect("efi path has a parent"))?;
    std::fs::copy(efi_image, &efi)
        .with_context(|| format!("copying {} to {}", efi_image.display(), efi.display()))?;
    let fingerprint =
        rootfs::fingerprint::manifest(dir, "", &["config.json", "balenaos.fingerprint"])?;
    std::fs::write(dir.join("balenaos.fingerprint"), fingerprint)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(development: bool) -> BuildConfig {
        let mut c = BuildConfig::default_for(buildconf::DeviceType::find("qemux86-64").unwrap());
        c.development = development;
        c
    }

    #[test]
    fn config_json_is_sorted_like_jq_s() {
        assert_eq!(
            config_json(&config(true)),
            "{\n  \"developmentMode\": true,\n  \"deviceType\": \"qemux86-64\",\n  \"persistentLogging\": false\n}\n"
        );
        assert_eq!(
            config_json(&config(false)),
            "{\n  \"deviceType\": \"qemux86-64\",\n  \"persistentLogging\": false\n}\n"
        );
    }

    #[test]
    fn bootenv_starts_on_a() {
        let bytes = bootenv();
        assert_eq!(bytes.len(), 1024);
        let env = bootenv::BootEnv::from_block(&bootenv::EnvBlock::parse(&bytes).unwrap()).unwrap();
        assert_eq!(env, bootenv::BootEnv::default());
    }

    #[test]
    fn tree_has_fingerprint_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let efi = dir.path().join("uki.efi");
        std::fs::write(&efi, b"MZ").unwrap();
        let out = dir.path().join("boot");
        write_tree(
            &out,
            &files(&config(false), "ID=x\n", "img"),
            "EFI/BOOT/BOOTX64.EFI",
            &efi,
        )
        .unwrap();
        let fp = std::fs::read_to_string(out.join("balenaos.fingerprint")).unwrap();
        assert!(
            fp.contains("  EFI/BOOT/BOOTX64.EFI\n")
                && fp.contains("  bootenv\n")
                && !fp.contains("config.json"),
            "{fp}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("balena-image")).unwrap(),
            "DO NOT REMOVE THIS FILE\n"
        );
    }
}
