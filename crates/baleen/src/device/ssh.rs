//! SSH access on the device, from config.json at every boot:
//!
//! * the host key is generated once into `/etc/ssh/hostkeys` (state-backed);
//! * `os.sshKeys` go to `~root/.ssh/authorized_keys_local`, merged with
//!   `authorized_keys_remote` (cloud keys) into `authorized_keys`, as
//!   balenaOS's `ssh_keys_merger` does;
//! * the policy: production takes keys only; development lets root in
//!   without a password while no key is configured (and then keys only).
//!   The development flag file also gates the console gettys.
use anyhow::{Context, Result};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use subprocess::Cmd;

/// Where `baleen device access` writes sshd's runtime configuration.
pub const RUN_DIR: &str = "run/baleen/ssh";
/// Host keys, kept on the state partition (relative to the root).
pub const HOSTKEY_DIR: &str = "etc/ssh/hostkeys";
/// root's SSH directory (state-backed).
pub const ROOT_SSH: &str = "root/.ssh";
/// The development flag (see `rootfs::units::DEVELOPMENT_FLAG`).
pub const DEVELOPMENT_FLAG: &str = "run/baleen/development";

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

    /// Passwordless root: development mode with no key configured anywhere.
    pub fn open_root(&self, remote_keys: bool) -> bool {
        self.development && self.keys.is_empty() && !remote_keys
    }

    /// sshd configuration included first by `/etc/ssh/sshd_config` (first value wins).
    pub fn sshd_config(&self, remote_keys: bool, host_key: &str) -> String {
        let open = self.open_root(remote_keys);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        format!(
            "# Written by baleen device access from config.json; do not edit.\n\
             HostKey {host_key}\n\
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

    /// `authorized_keys_local`: one key per line.
    pub fn local_keys(&self) -> String {
        self.keys.iter().map(|k| format!("{k}\n")).collect()
    }
}

/// `authorized_keys` from the remote and local files, each preceded by where
/// it came from (balenaOS's `ssh_keys_merger` format).
pub fn merge_keys(remote: Option<&str>, local: Option<&str>) -> String {
    let mut out = String::new();
    for (name, text) in [
        ("authorized_keys_remote", remote),
        ("authorized_keys_local", local),
    ] {
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            out.push_str(&format!("# From {name}\n{text}"));
            if !text.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

/// Writes host key, keys, policy and the development flag under `root`.
/// `access` is None when no configuration is usable: the keys in place stay.
/// Returns whether root may log in without a password.
pub fn apply(root: &Path, access: Option<&Access>) -> Result<bool> {
    let dir = root.join(RUN_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    // Kept on the state partition; in /run when that is not writable (a
    // device booted without its state partition stays reachable).
    if let Err(e) = ensure_host_key(&root.join(HOSTKEY_DIR)) {
        tracing::warn!("{e:#}; using a host key in /{RUN_DIR} for this boot");
        ensure_host_key(&dir)?;
    }
    let ssh_dir = root.join(ROOT_SSH);
    let (remote, local_text) = match write_keys(&ssh_dir, access) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("{e:#}; authorized keys go to /{RUN_DIR} for this boot");
            let local_text = access.map(Access::local_keys);
            write_private(
                &dir.join("authorized_keys"),
                &merge_keys(None, local_text.as_deref()),
            )?;
            (None, local_text)
        }
    };
    let remote_keys = remote.is_some_and(|t| t.lines().any(|l| check_key(l.trim()).is_ok()));
    // Without a usable configuration: production rules with the keys in place.
    let fallback = Access {
        development: false,
        keys: local_text
            .iter()
            .flat_map(|t| t.lines().map(str::to_string))
            .collect(),
        rejected: Vec::new(),
    };
    let access = access.unwrap_or(&fallback);
    write_private(
        &dir.join("sshd_config"),
        &access.sshd_config(remote_keys, &host_key_path(root)),
    )?;
    let flag = root.join(DEVELOPMENT_FLAG);
    match deviceconfig::render::development_env(access.development) {
        Some(text) => {
            std::fs::write(&flag, text).with_context(|| format!("writing {}", flag.display()))?
        }
        None => {
            let _ = std::fs::remove_file(&flag);
        }
    }
    Ok(access.open_root(remote_keys))
}

/// The host key sshd uses: the kept one, or this boot's in /run.
pub fn host_key_path(root: &Path) -> String {
    let kept = format!("/{HOSTKEY_DIR}/ssh_host_ed25519_key");
    if root.join(&kept[1..]).exists() {
        kept
    } else {
        format!("/{RUN_DIR}/ssh_host_ed25519_key")
    }
}

/// Generates an ed25519 host key in `dir` unless one is there.
fn ensure_host_key(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = dir.join("ssh_host_ed25519_key");
    if !key.exists() {
        let _ = std::fs::remove_file(key.with_extension("pub"));
        Cmd::new("ssh-keygen")
            .package("openssh-client")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "baleen host key",
                "-f",
            ])
            .arg(&key)
            .run()?;
    }
    Ok(())
}

/// Writes `authorized_keys_local` and the merged `authorized_keys` in root's
/// SSH directory; returns the remote and local key texts found there.
fn write_keys(ssh_dir: &Path, access: Option<&Access>) -> Result<(Option<String>, Option<String>)> {
    std::fs::create_dir_all(ssh_dir).with_context(|| format!("creating {}", ssh_dir.display()))?;
    std::fs::set_permissions(ssh_dir, std::fs::Permissions::from_mode(0o700))?;
    let local = ssh_dir.join("authorized_keys_local");
    if let Some(access) = access {
        if access.keys.is_empty() {
            match std::fs::remove_file(&local) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", local.display()));
                }
                _ => {}
            }
        } else {
            write_private(&local, &access.local_keys())?;
        }
    }
    let remote = std::fs::read_to_string(ssh_dir.join("authorized_keys_remote")).ok();
    let local_text = std::fs::read_to_string(&local).ok();
    let merged = merge_keys(remote.as_deref(), local_text.as_deref());
    let authorized = ssh_dir.join("authorized_keys");
    if std::fs::read_to_string(&authorized).ok().as_deref() != Some(merged.as_str()) {
        write_private(&authorized, &merged)?;
    }
    Ok((remote, local_text))
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
        assert!(!a.open_root(false));
        assert!(a.sshd_config(false, "/k").contains("PermitRootLogin prohibit-password\nPasswordAuthentication no\nPermitEmptyPasswords no\n"));
        assert_eq!(a.local_keys(), "");
    }

    #[test]
    fn development_without_keys_opens_root() {
        let a = Access::from_config(&json!({"developmentMode": true}));
        assert!(a.sshd_config(false, "/k").contains(
            "PermitRootLogin yes\nPasswordAuthentication yes\nPermitEmptyPasswords yes\n"
        ));
        assert!(!a.open_root(true), "cloud keys count as keys");
    }

    #[test]
    fn development_with_keys_takes_keys_only() {
        let a = Access::from_config(&json!({"developmentMode": true, "os": {"sshKeys": [KEY]}}));
        assert!(!a.open_root(false));
        assert_eq!(a.local_keys(), format!("{KEY}\n"));
    }

    #[test]
    fn keys_are_merged_remote_first_with_their_origin() {
        assert_eq!(merge_keys(None, None), "");
        assert_eq!(
            merge_keys(Some("r1\n"), Some("l1\nl2")),
            "# From authorized_keys_remote\nr1\n# From authorized_keys_local\nl1\nl2\n"
        );
        assert_eq!(
            merge_keys(Some("  \n"), Some("l\n")),
            "# From authorized_keys_local\nl\n"
        );
    }

    fn fake_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(HOSTKEY_DIR)).unwrap();
        // A host key in place: the test does not need ssh-keygen.
        std::fs::write(
            dir.path().join(HOSTKEY_DIR).join("ssh_host_ed25519_key"),
            "k",
        )
        .unwrap();
        dir
    }

    #[test]
    fn apply_writes_keys_policy_and_flag_and_keeps_keys_without_a_config() {
        let dir = fake_root();
        let root = dir.path();
        let dev = Access::from_config(&json!({"developmentMode": true, "os": {"sshKeys": [KEY]}}));
        assert!(!apply(root, Some(&dev)).unwrap());
        let authorized =
            std::fs::read_to_string(root.join(ROOT_SSH).join("authorized_keys")).unwrap();
        assert_eq!(authorized, format!("# From authorized_keys_local\n{KEY}\n"));
        assert!(root.join(DEVELOPMENT_FLAG).exists());
        // Config unusable: the keys stay, development is off.
        assert!(!apply(root, None).unwrap());
        assert!(!root.join(DEVELOPMENT_FLAG).exists());
        let again = std::fs::read_to_string(root.join(ROOT_SSH).join("authorized_keys")).unwrap();
        assert_eq!(again, authorized);
        let policy = std::fs::read_to_string(root.join(RUN_DIR).join("sshd_config")).unwrap();
        assert!(policy.contains("PasswordAuthentication no"));
        // Keys removed from the config: the local file goes away.
        let open = Access::from_config(&json!({"developmentMode": true}));
        assert!(apply(root, Some(&open)).unwrap());
        assert!(!root.join(ROOT_SSH).join("authorized_keys_local").exists());
        let policy = std::fs::read_to_string(root.join(RUN_DIR).join("sshd_config")).unwrap();
        assert!(policy.contains("PermitEmptyPasswords yes"));
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
