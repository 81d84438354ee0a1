//! `baleen device persistent-logs`: with `persistentLogging: true` in
//! config.json, the journal moves to the data partition
//! (`/mnt/data/root-overlay/var/log/journal`, bound at `/var/log/journal`)
//! and survives reboots; otherwise it stays in memory. Turning it off takes
//! effect at the next boot, as on balenaOS.

use super::config;
use anyhow::Result;
use serde_json::Value;
use std::path::Path;
use subprocess::Cmd;

/// Whether a configuration asks for persistent logs (`true`, or balenaOS's
/// string form `"true"`).
pub fn wanted(config: &serde_json::Map<String, Value>) -> bool {
    match config.get("persistentLogging") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

pub fn apply(root: &Path) -> Result<()> {
    let loaded = config::load(root);
    if !wanted(&loaded.config) {
        tracing::info!("persistentLogging is off: the journal stays in memory");
        return Ok(());
    }
    let store = root
        .join(layout::DATA_MOUNT.trim_start_matches('/'))
        .join(layout::DATA_JOURNAL);
    let target = root.join("var/log/journal");
    std::fs::create_dir_all(&store)?;
    std::fs::create_dir_all(&target)?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !super::bootpart::is_mounted(&mountinfo, &target.to_string_lossy()) {
        Cmd::new("mount")
            .package("mount")
            .arg("--bind")
            .arg(&store)
            .arg(&target)
            .run()?;
    }
    Cmd::new("journalctl")
        .package("systemd")
        .arg("--flush")
        .run()?;
    tracing::info!(
        "persistentLogging is on: the journal is kept in {}",
        store.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_true_turns_it_on() {
        let on = |v: Value| wanted(json!({ "persistentLogging": v }).as_object().unwrap());
        assert!(on(json!(true)));
        assert!(on(json!("true")));
        assert!(!on(json!(false)));
        assert!(!on(json!("yes")));
        assert!(!on(json!(null)));
        assert!(!wanted(json!({}).as_object().unwrap()));
    }
}
