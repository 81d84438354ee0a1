//! SSH access on the device: host keys generated once per boot into /run (the
//! state partition keeps them from the running-OS work on), authorized keys
//! from `os.sshKeys`, and the policy: production takes keys only; development
//! lets root in without a password while no key is configured.

use anyhow::{Context, Result};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use subprocess::Cmd;

/// Where `baleen device ssh-setup` writes sshd's runtime configuration.
pub const RUN_DIR: &str = "run/baleen/ssh";

/// The access a config.json asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub development: bool,
    pub keys: Vec<String>,
    /// Lines of `os.sshKeys` that are not SSH public keys, with the reason.
    pub rejected: Vec<String>,
}

const KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// Checks one authorized_keys line: `<type> <base64> [comment]`, one line.
pub fn check_key(line: &str) -> Result<(), String> {
    if line.contains(['\n', '\r']) {
        return Err("contains a line break".into());
    }
    let mut words = line.split_whitespace();
    let kind = words.next().ok_or("is empty")?;
    if !KEY_TYPES.contains(&kind) {
        return Err(format!("has unknown key type {kind:?}"));
    }
    let blob = words.next().ok_or("has no key data")?;
    let base64 = blob.len() % 4 == 0
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    if !base64 {
        return Err("key data is not base64".into());
    }
    Ok(())
}

impl Access {
    /// Reads the access settings from a parsed config.json.
    pub fn from_config(config: &Value) -> Access {
        let development = config
            .get("developmentMode")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut keys = Vec::new();
        let mut rejected = Vec::new();
        if let Some(list) = config.pointer("/os/sshKeys").and_then(Value::as_array) {
            for (i, item) in list.iter().enumerate() {
                match item.as_str().map(|s| (s, check_key(s.trim()))) {
                    Some((s, Ok(()))) => keys.push(s.trim().to_string()),
                    Some((_, Err(why))) => rejected.push(format!("os.sshKeys[{i}] {why}")),
                    None => rejected.push(format!("os.sshKeys[{i}] is not a string")),
                }
            }
        }
        Access {
            development,
            keys,
            rejected,
        }
    }

    /// Passwordless root: development images with no keys configured.
    pub fn open_root(&self) -> bool {
        self.development && self.keys.is_empty()
    }

    /// sshd configuration included first by `/etc/ssh/sshd_config` (first value wins).
    pub fn sshd_config(&self) -> String {
        let open = self.open_root();
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "# Written by baleen device ssh-setup from config.json; do not edit.\n\
             HostKey /{RUN_DIR}/ssh_host_ed25519_key\n\
             AuthorizedKeysFile .ssh/authorized_keys /{RUN_DIR}/authorized_keys\n\
             PermitRootLogin {}\n\
             PasswordAuthentication {}\n\
             PermitEmptyPasswords {}\n\
             KbdInteractiveAuthentication no\n\
             UsePAM yes\n",
            if open { "yes" } else { "prohibit-password" },
            yes_no(open),
            yes_no(open),
        )
    }

    pub fn authorized_keys(&self) -> String {
        self.keys.iter().map(|k| format!("{k}\n")).collect()
    }
}

/// Generates the host key if missing and writes the policy under `root`.
pub fn apply(root: &Path, access: &Access) -> Result<()> {
    let dir = root.join(RUN_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let key = dir.join("ssh_host_ed25519_key");
    if !key.exists() {
        Cmd::new("ssh-keygen")
            .package("openssh-client")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .run()?;
    }
    write_private(&dir.join("authorized_keys"), &access.authorized_keys())?;
    write_private(&dir.join("sshd_config"), &access.sshd_config())?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

    #[test]
    fn production_without_keys_lets_nobody_in() {
        let a = Access::from_config(&json!({}));
        assert!(!a.open_root());
        assert!(a.sshd_config().contains("PermitRootLogin prohibit-password\nPasswordAuthentication no\nPermitEmptyPasswords no\n"));
        assert_eq!(a.authorized_keys(), "");
    }

    #[test]
    fn development_without_keys_opens_root() {
        let a = Access::from_config(&json!({"developmentMode": true}));
        assert!(a.sshd_config().contains(
            "PermitRootLogin yes\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n"
        ));
    }

    #[test]
    fn development_with_keys_takes_keys_only() {
        let a = Access::from_config(&json!({"developmentMode": true, "os": {"sshKeys": [KEY]}}));
        assert!(!a.open_root());
        assert_eq!(a.authorized_keys(), format!("{KEY}\n"));
    }

    #[test]
    fn invalid_key_lines_are_skipped_and_reported() {
        let a = Access::from_config(
            &json!({"os": {"sshKeys": [KEY, "ssh-foo AAAA", "ssh-rsa not*base64", 7, "ssh-ed25519 AAAA\nssh-rsa AAAA"]}}),
        );
        assert_eq!(a.keys, vec![KEY.to_string()]);
        assert_eq!(
            a.rejected,
            vec![
                "os.sshKeys[1] has unknown key type \"ssh-foo\"",
                "os.sshKeys[2] key data is not base64",
                "os.sshKeys[3] is not a string",
                "os.sshKeys[4] contains a line break",
            ]
        );
    }
}
