//! The device's identity: `uuid` in config.json (generated once) and the
//! hostname (`hostname`, or the first 7 characters of `uuid`, as balenaOS).

use super::config::{self, Loaded, Source};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;

/// A balena device uuid: 32 lower-case hex digits.
pub fn is_uuid(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn new_uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether `name` is a usable hostname: 1–63 characters of letters, digits
/// and inner hyphens (one DNS label, as `<name>.local` needs).
pub fn check_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("{name:?} must be 1 to 63 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!(
            "{name:?} may only hold letters, digits and hyphens"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("{name:?} must not start or end with a hyphen"));
    }
    Ok(())
}

/// The hostname a configuration asks for: `hostname` when it is valid (an
/// invalid one is reported and ignored), else the first 7 characters of `uuid`.
pub fn hostname(config: &serde_json::Map<String, Value>) -> Result<String> {
    if let Some(name) = config::string(config, "hostname") {
        match check_hostname(name) {
            Ok(()) => return Ok(name.to_string()),
            Err(why) => tracing::error!(
                "config.json: hostname {why}; using the uuid's first 7 characters instead"
            ),
        }
    }
    match config::string(config, "uuid") {
        Some(uuid) if uuid.len() >= 7 && uuid.is_ascii() => Ok(uuid[..7].to_string()),
        _ => bail!("config.json has neither a usable hostname nor a uuid"),
    }
}

/// `baleen device identity` under `root`: writes a uuid into config.json when
/// it has none, then sets the hostname (`/etc/hostname` and the kernel's).
pub fn apply(root: &Path) -> Result<String> {
    let Loaded { mut config, source } = config::load(root);
    let has_uuid = config::string(&config, "uuid").is_some_and(is_uuid);
    if !has_uuid {
        if let Some(bad) = config::string(&config, "uuid") {
            tracing::warn!("config.json: uuid {bad:?} is not 32 lower-case hex digits; keeping it");
        } else if source == Source::Boot {
            let uuid = new_uuid();
            config.insert("uuid".into(), Value::String(uuid.clone()));
            // Through the power-safe store, under the lock other writers take.
            let _ = std::fs::create_dir_all(root.join("run/baleen"));
            let store = deviceconfig::store::Store::on_device(root);
            let name = store.path().display().to_string();
            store.update(|bytes: &[u8]| -> Result<Vec<u8>> {
                let mut raw = deviceconfig::model::Raw::parse(&name, bytes)?;
                if raw
                    .get("uuid")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    raw.set("uuid", Value::String(uuid.clone()))?;
                }
                Ok(raw.to_text().into_bytes())
            })?;
            tracing::info!(uuid, "config.json: new device uuid");
        } else {
            tracing::warn!("config.json is not usable: no uuid is written until it is fixed");
        }
    }
    let name = hostname(&config)?;
    let etc_hostname = root.join("etc/hostname");
    let line = format!("{name}\n");
    if std::fs::read_to_string(&etc_hostname).ok().as_deref() != Some(line.as_str()) {
        // /etc/hostname is a file bound from the state partition: it is
        // rewritten in place (a rename cannot replace a mount point). It is
        // derived from config.json at every boot, so a torn write heals.
        std::fs::write(&etc_hostname, &line)
            .with_context(|| format!("writing {}", etc_hostname.display()))?;
    }
    let kernel = root.join("proc/sys/kernel/hostname");
    if std::fs::read_to_string(&kernel)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(name.as_str())
    {
        std::fs::write(&kernel, &name)
            .with_context(|| format!("setting the hostname through {}", kernel.display()))?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn root(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for d in ["mnt/boot", "etc", "proc/sys/kernel"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        std::fs::write(dir.path().join(config::CONFIG), config).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "balena\n").unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/hostname"), "balena\n").unwrap();
        dir
    }

    #[test]
    fn a_missing_uuid_is_generated_and_names_the_host() {
        let dir = root(r#"{"deviceType": "qemux86-64", "custom": [1, 2]}"#);
        let name = apply(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(config::CONFIG)).unwrap();
        let written: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        let uuid = written["uuid"].as_str().unwrap();
        assert!(is_uuid(uuid));
        assert_eq!(written["custom"], json!([1, 2]), "unknown keys kept");
        assert_eq!(written.keys().next().unwrap(), "deviceType", "order kept");
        assert_eq!(name, uuid[..7]);
        let etc = std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap();
        assert_eq!(etc, format!("{name}\n"));
        let kernel = std::fs::read_to_string(dir.path().join("proc/sys/kernel/hostname")).unwrap();
        assert_eq!(kernel, name);
        // A second run keeps the uuid.
        assert_eq!(apply(dir.path()).unwrap(), name);
    }

    #[test]
    fn the_hostname_key_wins_and_bad_ones_fall_back_to_the_uuid() {
        let uuid = "0123456789abcdef0123456789abcdef";
        let config = json!({"uuid": uuid, "hostname": "my-device"});
        assert_eq!(hostname(config.as_object().unwrap()).unwrap(), "my-device");
        for bad in ["a b", "-x", "x;reboot", "new\nline", ""] {
            let config = json!({"uuid": uuid, "hostname": bad});
            assert_eq!(hostname(config.as_object().unwrap()).unwrap(), "0123456");
        }
        assert!(hostname(json!({}).as_object().unwrap()).is_err());
    }

    #[test]
    fn a_broken_config_is_not_rewritten() {
        let dir = root("{not json");
        assert!(apply(dir.path()).is_err(), "no hostname and no uuid");
        let text = std::fs::read_to_string(dir.path().join(config::CONFIG)).unwrap();
        assert_eq!(text, "{not json");
    }
}
