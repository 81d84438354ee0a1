//! Device-side commands, run by systemd units on a booted baleen root.

pub mod bootpart;
pub mod ssh;

use anyhow::{Context, Result};
use std::path::Path;

/// `baleen device ssh-setup`: mount the boot partition, read config.json and
/// write sshd's host key, authorized keys and policy.
pub fn ssh_setup() -> Result<()> {
    let root = Path::new("/");
    let config = match bootpart::mount_boot(root) {
        Ok(mount) => read_config(&mount.join("config.json")),
        Err(e) => {
            tracing::error!("{e:#}; SSH falls back to keys-only with no keys");
            serde_json::Value::Null
        }
    };
    let access = ssh::Access::from_config(&config);
    for rejected in &access.rejected {
        tracing::warn!("config.json: {rejected}; the line is skipped");
    }
    ssh::apply(root, &access)?;
    tracing::info!(
        keys = access.keys.len(),
        development = access.development,
        passwordless_root = access.open_root(),
        "SSH access configured"
    );
    Ok(())
}

fn read_config(path: &Path) -> serde_json::Value {
    let parsed = std::fs::read(path)
        .with_context(|| format!("reading {}", path.display()))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
        });
    match parsed {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("{e:#}");
            serde_json::Value::Null
        }
    }
}
