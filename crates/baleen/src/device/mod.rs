//! Device-side commands, run by systemd units on a booted baleen root. Each
//! takes its paths relative to a root directory so tests run it on a folder.

pub mod agent;
pub mod bootpart;
pub mod bystate;
pub mod config;
pub mod identity;
pub mod logs;
pub mod reboot;
pub mod reset;
pub mod ssh;
pub mod time;
pub mod update;
pub mod zram;

use anyhow::{Context, Result};
use std::path::Path;
use subprocess::Cmd;

const ROOT: &str = "/";

/// Mounts the boot partition unless /etc/fstab's mount did already.
fn boot_mounted(root: &Path) {
    if let Err(e) = bootpart::mount_boot(root) {
        tracing::error!("{e:#}");
    }
}

/// `baleen device access`: SSH host key, authorized keys, sshd policy and the
/// development flag, from config.json.
pub fn access() -> Result<()> {
    let root = Path::new(ROOT);
    boot_mounted(root);
    let loaded = config::load(root);
    let usable = loaded.source != config::Source::Defaults;
    let value = serde_json::Value::Object(loaded.config);
    let access = ssh::Access::from_config(&value);
    for rejected in &access.rejected {
        tracing::warn!("config.json: {rejected}; the line is skipped");
    }
    let open = ssh::apply(root, usable.then_some(&access))?;
    tracing::info!(
        keys = access.keys.len(),
        development = usable && access.development,
        passwordless_root = open,
        "SSH access configured"
    );
    Ok(())
}

/// `baleen device identity`: uuid and hostname.
pub fn identity() -> Result<()> {
    let root = Path::new(ROOT);
    boot_mounted(root);
    let name = identity::apply(root)?;
    tracing::info!(hostname = name, "hostname set");
    Ok(())
}

/// `baleen device data-reset`.
pub fn data_reset() -> Result<()> {
    if reset::data_reset(Path::new(layout::DATA_MOUNT))? {
        tracing::info!(
            "{}/{} was missing: the data partition was wiped",
            layout::DATA_MOUNT,
            layout::RESET_FLAG
        );
    }
    Ok(())
}

/// `baleen device persistent-logs`.
pub fn persistent_logs() -> Result<()> {
    let root = Path::new(ROOT);
    boot_mounted(root);
    logs::apply(root)
}

/// `baleen device recover-ssh`: starts `sshd.socket` again when it is not
/// listening (systemd stops it when connections come faster than its trigger
/// limit; balenaOS's recover-sshd-socket).
pub fn recover_ssh() -> Result<()> {
    let state = Cmd::new("systemctl")
        .package("systemd")
        .args(["show", "-P", "ActiveState", "sshd.socket"])
        .run()
        .context("asking systemd about sshd.socket")?
        .stdout;
    if state.trim() == "active" {
        return Ok(());
    }
    let result = Cmd::new("systemctl")
        .package("systemd")
        .args(["show", "-P", "Result", "sshd.socket"])
        .run()
        .map(|o| o.stdout)
        .unwrap_or_default();
    tracing::warn!(
        state = state.trim(),
        result = result.trim(),
        "sshd.socket is not listening: starting it again"
    );
    Cmd::new("systemctl")
        .package("systemd")
        .args(["reset-failed", "sshd.socket"])
        .run()?;
    Cmd::new("systemctl")
        .package("systemd")
        .args(["start", "sshd.socket"])
        .run()?;
    Ok(())
}
