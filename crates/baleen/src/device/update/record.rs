//! What the device remembers about updates, on the state partition:
//!
//! * balenaOS's breadcrumbs in `/mnt/state` (`rollback-health-breadcrumb`,
//!   `rollback-altboot-breadcrumb`, `rollback-health-variables`, the
//!   `*-triggered` flags and `rollback-health-failed`), with their meaning kept;
//! * baleen's own record `/mnt/state/baleen/update.json`: each slot's version
//!   and state, the last update and the last rollback with its reason, for
//!   `baleen status`.

use anyhow::{Context, Result};
use bootenv::Slot;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::slots::sync_dir;

/// The state partition, relative to the root.
pub const STATE: &str = "mnt/state";
/// Run the health checks on the next boot of the new root.
pub const HEALTH_BREADCRUMB: &str = "rollback-health-breadcrumb";
/// Check for a boot-stage fallback on the next boot; also: clear the boot count on a clean
/// shutdown.
pub const ALTBOOT_BREADCRUMB: &str = "rollback-altboot-breadcrumb";
/// What was healthy before the update (shell variables, as balenaOS).
pub const HEALTH_VARIABLES: &str = "rollback-health-variables";
/// A health-check rollback happened.
pub const HEALTH_TRIGGERED: &str = "rollback-health-triggered";
/// The boot stage fell back to the old root.
pub const ALTBOOT_TRIGGERED: &str = "rollback-altboot-triggered";
/// A health rollback could not run the old root's hooks.
pub const HEALTH_FAILED: &str = "rollback-health-failed";
/// baleen's record, relative to the state partition.
pub const RECORD: &str = "baleen/update.json";

/// The files an update in progress leaves on the state partition.
pub const BREADCRUMBS: [&str; 3] = [HEALTH_BREADCRUMB, ALTBOOT_BREADCRUMB, HEALTH_VARIABLES];

/// A slot's state as the record knows it (the running slot is always `active`; `pending`
/// comes from the bootenv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// Never written by an update.
    Empty,
    /// An install is writing it (or was cut off while writing it).
    Writing,
    /// A verified OS installed by an update that has not been committed yet.
    Installed,
    /// An OS that ran and was committed (or the one an update came from).
    Good,
    /// An OS that failed (rolled back from) or a write that did not finish.
    Bad,
}

/// One slot in the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRecord {
    pub version: Option<String>,
    pub state: SlotState,
}

/// How the last update went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateResult {
    /// Being written.
    Installing,
    /// Installed; waiting for the reboot, or on trial in the health window.
    Pending,
    /// Passed its health window.
    Committed,
    /// Failed to boot or failed its health checks; the old OS runs again.
    RolledBack,
    /// The install itself failed; nothing was switched.
    Failed,
}

/// The last update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRecord {
    pub source: String,
    pub from_version: String,
    pub from_slot: String,
    pub to_version: String,
    pub to_slot: String,
    pub started: String,
    pub finished: Option<String>,
    pub result: UpdateResult,
    /// Why it failed or was rolled back.
    pub reason: Option<String>,
    pub health_window_secs: u64,
    pub health_interval_secs: u64,
    /// The network was up when the update was installed (so it must be up after).
    pub network_was_up: bool,
    /// The container engine answered its health check when the update was installed.
    pub engine_was_healthy: bool,
}

/// Which rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RollbackKind {
    /// The boot stage gave up on the new root after its boot attempts.
    Altboot,
    /// The new root booted but failed its health checks.
    Health,
}

/// The last rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackRecord {
    pub kind: RollbackKind,
    pub at: String,
    pub from_version: Option<String>,
    pub from_slot: String,
    pub to_slot: String,
    pub reason: String,
}

/// `/mnt/state/baleen/update.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(default)]
    pub slots: BTreeMap<String, SlotRecord>,
    pub last_update: Option<UpdateRecord>,
    pub last_rollback: Option<RollbackRecord>,
}

impl Record {
    /// Reads the record; a missing or unreadable one is empty (it is status, not state the
    /// device depends on to boot).
    pub fn load(root: &Path) -> Record {
        let path = record_path(root);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{} is not a valid update record ({e}); starting a new one",
                    path.display()
                );
                Record::default()
            }),
            Err(_) => Record::default(),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let path = record_path(root);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::device::config::write_atomic(&path, &bytes)
    }

    pub fn set_slot(&mut self, slot: Slot, version: Option<&str>, state: SlotState) {
        self.slots.insert(
            slot.as_str().to_owned(),
            SlotRecord {
                version: version.map(str::to_owned),
                state,
            },
        );
    }

    /// Records a rollback away from `failed` (now bad) to `to`.
    pub fn rolled_back(
        &mut self,
        kind: RollbackKind,
        failed: Slot,
        failed_version: Option<String>,
        to: Slot,
        reason: &str,
    ) {
        self.set_slot(failed, failed_version.as_deref(), SlotState::Bad);
        if let Some(update) = self.last_update.as_mut() {
            update.result = UpdateResult::RolledBack;
            update.reason = Some(reason.to_owned());
        }
        self.last_rollback = Some(RollbackRecord {
            kind,
            at: now(),
            from_version: failed_version,
            from_slot: failed.as_str().to_owned(),
            to_slot: to.as_str().to_owned(),
            reason: reason.to_owned(),
        });
    }

    pub fn slot(&self, slot: Slot) -> Option<&SlotRecord> {
        self.slots.get(slot.as_str())
    }
}

fn record_path(root: &Path) -> PathBuf {
    root.join(STATE).join(RECORD)
}

/// Path of a breadcrumb or flag on the state partition.
pub fn flag(root: &Path, name: &str) -> PathBuf {
    root.join(STATE).join(name)
}

pub fn has(root: &Path, name: &str) -> bool {
    flag(root, name).exists()
}

/// Creates (or replaces) a flag file with `content`.
pub fn touch(root: &Path, name: &str, content: &str) -> Result<()> {
    let path = flag(root, name);
    fs::write(&path, content).with_context(|| format!("writing {}", path.display()))
}

/// Removes flags; missing ones are fine.
pub fn remove(root: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        let path = flag(root, name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// Flushes the state partition's directory (after touching or removing flags).
pub fn sync_state(root: &Path) -> Result<()> {
    sync_dir(&root.join(STATE))
}

/// Now, RFC 3339 UTC (the device clock; see docs/time.md for how good it is).
pub fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A field of an os-release file (`VERSION`, `SLUG`…), unquoted.
pub fn os_release_field(path: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_tolerates_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(STATE)).unwrap();
        assert_eq!(Record::load(root), Record::default());
        let mut record = Record::default();
        record.set_slot(Slot::B, Some("0.2.0"), SlotState::Installed);
        record.save(root).unwrap();
        assert_eq!(Record::load(root), record);
        let text = fs::read_to_string(root.join(STATE).join(RECORD)).unwrap();
        assert!(text.contains("\"state\": \"installed\""), "{text}");
        fs::write(root.join(STATE).join(RECORD), "{not json").unwrap();
        assert_eq!(Record::load(root), Record::default());
    }

    #[test]
    fn flags_touch_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join(STATE)).unwrap();
        touch(root, HEALTH_BREADCRUMB, "").unwrap();
        assert!(has(root, HEALTH_BREADCRUMB));
        remove(root, &BREADCRUMBS).unwrap();
        assert!(!has(root, HEALTH_BREADCRUMB));
    }

    #[test]
    fn os_release_fields_are_unquoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("os-release");
        fs::write(
            &path,
            "ID=balena-os\nVERSION=\"0.2.0\"\nSLUG=\"qemux86-64\"\n",
        )
        .unwrap();
        assert_eq!(os_release_field(&path, "VERSION").as_deref(), Some("0.2.0"));
        assert_eq!(
            os_release_field(&path, "SLUG").as_deref(),
            Some("qemux86-64")
        );
        assert_eq!(os_release_field(&path, "VERSION_ID"), None);
    }
}
