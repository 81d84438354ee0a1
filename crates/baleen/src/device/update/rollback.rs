//! After the reboot: what the running OS finds (a fallback by the boot stage,
//! a new root on trial, stale breadcrumbs), the health window, the commit and
//! the rollback.

use anyhow::{Context, Result};
use bootenv::{BootEnv, Slot};
use std::path::Path;
use std::time::{Duration, Instant};
use subprocess::Cmd;

use super::bootfiles;
use super::health::{self, Verdict, Window};
use super::hooks::{self, Phase, Runner};
use super::install::{
    DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_WINDOW, Mounts, stop_inactive_automount,
};
use super::record::{self, Record, RollbackKind, SlotState, UpdateResult};
use super::slots::{self, Slots};

/// Where the old root is mounted to run its hooks during a health rollback.
const OLD_ROOT: &str = "run/baleen/update/oldroot";
/// The health window's progress, for `baleen status`.
pub const HEALTH_STATUS: &str = "run/baleen/update-health.json";

/// What the running OS must do about updates at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAction {
    /// Nothing pending.
    Nothing,
    /// The boot stage fell back to this (old) root: repair the bootenv, record the rollback.
    Altboot,
    /// This root is a new one on trial: run the health window.
    Trial,
    /// Breadcrumbs of an install that never reached its commit point (a power cut or a
    /// failure between them and the bootenv switch): remove them.
    CleanStale,
}

/// Decides from the bootenv, the running slot and the breadcrumbs.
pub fn decide(env: &BootEnv, active: Slot, breadcrumbs: bool) -> BootAction {
    match (env.resin_root_part == active, env.upgrade_available) {
        // The bootenv wants the other slot, with an update on trial: the boot stage gave up.
        (false, true) => BootAction::Altboot,
        (true, true) => BootAction::Trial,
        (_, false) if breadcrumbs => BootAction::CleanStale,
        _ => BootAction::Nothing,
    }
}

fn any_breadcrumb(root: &Path) -> bool {
    record::BREADCRUMBS.iter().any(|b| record::has(root, b))
}

/// `baleen device update-boot` (early at boot): altboot repair and stale breadcrumbs.
pub fn at_boot(root: &Path) -> Result<()> {
    crate::device::bootpart::mount_boot(root)?;
    let stored = slots::read_bootenv(root)?;
    let slots = Slots::probe(root)?;
    if let Err(e) = bootfiles::remove_recovered_chains(root) {
        tracing::warn!("{e:#}");
    }
    let action = decide(&stored.env, slots.active, any_breadcrumb(root));
    tracing::info!(
        "bootenv resin_root_part={} upgrade_available={} bootcount={}; running slot {}: {action:?}",
        stored.env.resin_root_part,
        u8::from(stored.env.upgrade_available),
        stored.env.bootcount,
        slots.active
    );
    match action {
        BootAction::Nothing | BootAction::Trial => Ok(()),
        BootAction::CleanStale => {
            tracing::warn!(
                "removing rollback breadcrumbs of an install that did not reach its commit point"
            );
            record::remove(root, &record::BREADCRUMBS)?;
            record::sync_state(root)?;
            let mut rec = Record::load(root);
            if let Some(update) = rec.last_update.as_mut() {
                if matches!(
                    update.result,
                    UpdateResult::Installing | UpdateResult::Pending
                ) {
                    update.result = UpdateResult::Failed;
                    update.reason =
                        Some("the install was interrupted before its commit point".into());
                    rec.set_slot(slots.active.other(), None, SlotState::Bad);
                }
            }
            rec.save(root)
        }
        BootAction::Altboot => altboot(root, &slots, &stored.env),
    }
}

/// The boot stage booted the old root after the new one failed its boot attempts.
fn altboot(root: &Path, slots: &Slots, env: &BootEnv) -> Result<()> {
    let failed = env.resin_root_part;
    let mut rec = Record::load(root);
    let failed_version = rec.slot(failed).and_then(|s| s.version.clone());
    let reason = format!(
        "the boot stage gave up on slot {failed}{} after {} failed boot attempt(s) and booted slot {}",
        failed_version
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default(),
        env.bootcount.min(bootenv::MAX_ATTEMPTS),
        slots.active
    );
    tracing::warn!("rollback (altboot): {reason}");
    // The running (old) OS's hooks put its own files back (DURING_UPDATE=0).
    let current = Runner {
        dir: root.join(hooks::HOOKS_DIR),
        ..Runner::new(None, false)
    };
    if let Err(e) = current.run(Phase::Forward) {
        tracing::error!("the running root's hooks failed during the altboot rollback: {e:#}");
    }
    bootfiles::make_live(root, slots.active)?;
    slots::write_bootenv(
        root,
        &BootEnv {
            resin_root_part: slots.active,
            upgrade_available: false,
            bootcount: 0,
        },
        || (),
    )?;
    record::touch(root, record::ALTBOOT_TRIGGERED, &format!("{reason}\n"))?;
    record::remove(root, &record::BREADCRUMBS)?;
    record::remove(root, &[record::HEALTH_FAILED])?;
    record::sync_state(root)?;
    let running = running_version(root);
    rec.set_slot(slots.active, running.as_deref(), SlotState::Good);
    rec.rolled_back(
        RollbackKind::Altboot,
        failed,
        failed_version,
        slots.active,
        &reason,
    );
    rec.save(root)
}

fn running_version(root: &Path) -> Option<String> {
    record::os_release_field(&root.join("etc/os-release"), "VERSION")
}

/// `baleen device update-health`: the health window of a new root on trial.
pub fn health_window(root: &Path) -> Result<()> {
    crate::device::bootpart::mount_boot(root)?;
    let stored = slots::read_bootenv(root)?;
    let slots = Slots::probe(root)?;
    if decide(&stored.env, slots.active, any_breadcrumb(root)) != BootAction::Trial {
        tracing::info!("no update on trial in the running slot {}", slots.active);
        return Ok(());
    }
    let rec = Record::load(root);
    let (window, interval, before) = match &rec.last_update {
        Some(u) => (
            Duration::from_secs(u.health_window_secs),
            Duration::from_secs(u.health_interval_secs.max(1)),
            health::Before {
                network_up: u.network_was_up,
                engine_healthy: u.engine_was_healthy,
            },
        ),
        None => (
            DEFAULT_HEALTH_WINDOW,
            DEFAULT_HEALTH_INTERVAL,
            health::Before::default(),
        ),
    };
    tracing::info!(
        "slot {} ({}) is on trial: health checks every {} s for {} s",
        slots.active,
        running_version(root).unwrap_or_default(),
        interval.as_secs(),
        window.as_secs()
    );
    let started = Instant::now();
    let mut judge = Window::default();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    loop {
        let results = health::round(root, &before);
        let over = started.elapsed() >= window;
        let verdict = judge.judge(&results, over);
        for r in &results {
            if r.ok {
                tracing::info!("health round {}: {} ok {}", judge.rounds, r.name, r.detail);
            } else {
                tracing::warn!(
                    "health round {}: {} FAILED: {}",
                    judge.rounds,
                    r.name,
                    r.detail
                );
            }
        }
        let status = serde_json::json!({
            "slot": slots.active.as_str(),
            "rounds": judge.rounds,
            "windowSecs": window.as_secs(),
            "elapsedSecs": started.elapsed().as_secs(),
            "failing": results.iter().filter(|r| !r.ok).map(|r| &r.name).collect::<Vec<_>>(),
        });
        let _ = std::fs::write(root.join(HEALTH_STATUS), format!("{status}\n"));
        match verdict {
            Verdict::Continue => {
                let left = window.saturating_sub(started.elapsed());
                std::thread::sleep(interval.min(left.max(Duration::from_millis(100))));
            }
            Verdict::Commit => return commit(root, &slots),
            Verdict::Rollback(reason) => return health_rollback(root, &slots, &reason),
        }
    }
}

/// The new root passed its window: make its boot files live, clear the trial.
fn commit(root: &Path, slots: &Slots) -> Result<()> {
    let changed = bootfiles::make_live(root, slots.active)?;
    slots::write_bootenv(
        root,
        &BootEnv {
            resin_root_part: slots.active,
            upgrade_available: false,
            bootcount: 0,
        },
        || (),
    )?;
    record::remove(root, &record::BREADCRUMBS)?;
    record::remove(root, &[record::HEALTH_FAILED])?;
    record::sync_state(root)?;
    let current = Runner {
        dir: root.join(hooks::HOOKS_DIR),
        ..Runner::new(None, false)
    };
    if let Err(e) = current.run(Phase::Commit) {
        tracing::error!("commit hooks failed (the update stays committed): {e:#}");
    }
    let mut rec = Record::load(root);
    let version = running_version(root);
    rec.set_slot(slots.active, version.as_deref(), SlotState::Good);
    if let Some(update) = rec.last_update.as_mut() {
        update.result = UpdateResult::Committed;
        update.finished = Some(record::now());
    }
    rec.save(root)?;
    tracing::info!(
        "update to {} committed in slot {} ({changed} live boot file(s) replaced)",
        version.unwrap_or_default(),
        slots.active
    );
    Ok(())
}

/// The new root failed its window: run the old root's hooks, point the bootenv back at it,
/// record why and reboot.
fn health_rollback(root: &Path, slots: &Slots, reason: &str) -> Result<()> {
    let old = slots.inactive();
    tracing::error!("rolling back to slot {old}: {reason}");
    let hooks_ok = run_old_hooks(root, slots.device(old));
    if let Err(e) = &hooks_ok {
        tracing::error!("the old root's hooks failed: {e:#}");
    }
    bootfiles::make_live(root, old)?;
    slots::write_bootenv(
        root,
        &BootEnv {
            resin_root_part: old,
            upgrade_available: false,
            bootcount: 0,
        },
        || (),
    )?;
    let flag = if hooks_ok.is_ok() {
        record::HEALTH_TRIGGERED
    } else {
        record::HEALTH_FAILED
    };
    record::touch(root, flag, &format!("{reason}\n"))?;
    if hooks_ok.is_err() {
        // The bootenv is switched by baleen itself, so the rollback still happens.
        record::touch(root, record::HEALTH_TRIGGERED, &format!("{reason}\n"))?;
    }
    record::remove(root, &record::BREADCRUMBS)?;
    record::sync_state(root)?;
    let mut rec = Record::load(root);
    rec.rolled_back(
        RollbackKind::Health,
        slots.active,
        running_version(root),
        old,
        reason,
    );
    rec.save(root)?;
    rustix::fs::sync();
    tracing::warn!("rebooting into slot {old}");
    Cmd::new("systemctl")
        .package("systemd")
        .args(["reboot"])
        .run()
        .context("rebooting into the old root")?;
    Ok(())
}

/// The old root's hooks with `DURING_UPDATE=1` ("the inactive root is the one to boot"),
/// run inside the old root.
fn run_old_hooks(root: &Path, old_dev: &Path) -> Result<()> {
    let target = root.join(OLD_ROOT);
    std::fs::create_dir_all(&target)?;
    stop_inactive_automount();
    let _mounted = Mounts::new_root(old_dev, &target)?;
    Runner::new(Some(target), true)
        .run(Phase::Forward)
        .map(|_| ())
}

/// `baleen device update-shutdown` (on every clean shutdown): a clean reboot during the
/// health window is not a failed boot, so the boot count of the root on trial goes back to 0.
pub fn at_shutdown(root: &Path) -> Result<()> {
    if !record::has(root, record::ALTBOOT_BREADCRUMB) {
        return Ok(());
    }
    let stored = slots::read_bootenv(root)?;
    let slots = Slots::probe(root)?;
    if stored.env.upgrade_available
        && stored.env.resin_root_part == slots.active
        && stored.env.bootcount != 0
    {
        slots::write_bootenv(
            root,
            &BootEnv {
                bootcount: 0,
                ..stored.env
            },
            || (),
        )?;
        tracing::info!(
            "clean shutdown during the health window: bootcount {} -> 0",
            stored.env.bootcount
        );
    }
    Ok(())
}

/// The `update` object of `baleen status --json`.
pub fn status(root: &Path) -> serde_json::Value {
    use serde_json::json;
    let stored = slots::read_bootenv(root).ok();
    let slots = Slots::probe(root).ok();
    let rec = Record::load(root);
    let env = stored.as_ref().map(|s| s.env);
    let slot_json = |slot: Slot| {
        let kept = rec.slot(slot);
        let running = slots.as_ref().is_some_and(|s| s.active == slot);
        let pending = env.is_some_and(|e| e.upgrade_available && e.resin_root_part == slot);
        let state = if running {
            "active"
        } else if pending {
            "pending"
        } else {
            match kept.map(|k| k.state) {
                Some(SlotState::Good) => "good",
                Some(SlotState::Bad | SlotState::Writing | SlotState::Installed) => "bad",
                Some(SlotState::Empty) => "empty",
                None if slot == Slot::B => "empty",
                None => "unknown",
            }
        };
        let version = if running {
            running_version(root)
        } else {
            kept.and_then(|k| k.version.clone())
        };
        json!({
            "label": slots::label(slot),
            "version": version,
            "state": state,
            "trial": running && pending,
        })
    };
    let health = std::fs::read_to_string(root.join(HEALTH_STATUS))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    json!({
        "activeSlot": slots.as_ref().map(|s| s.active.as_str()),
        "bootenv": env.map(|e| json!({
            "resin_root_part": e.resin_root_part.as_str(),
            "upgrade_available": e.upgrade_available,
            "bootcount": e.bootcount,
        })),
        "slots": { "A": slot_json(Slot::A), "B": slot_json(Slot::B) },
        "health": health,
        "lastUpdate": rec.last_update,
        "lastRollback": rec.last_rollback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(part: Slot, upgrade: bool, count: u32) -> BootEnv {
        BootEnv {
            resin_root_part: part,
            upgrade_available: upgrade,
            bootcount: count,
        }
    }

    #[test]
    fn boot_actions_path_by_path() {
        use BootAction::*;
        // Nothing pending.
        assert_eq!(decide(&env(Slot::A, false, 0), Slot::A, false), Nothing);
        // Breadcrumbs without the switch: a cut between them and the commit point.
        assert_eq!(decide(&env(Slot::A, false, 0), Slot::A, true), CleanStale);
        // The new root runs on trial.
        assert_eq!(decide(&env(Slot::B, true, 1), Slot::B, true), Trial);
        assert_eq!(decide(&env(Slot::B, true, 1), Slot::B, false), Trial);
        // The boot stage fell back to A.
        assert_eq!(decide(&env(Slot::B, true, 4), Slot::A, true), Altboot);
        assert_eq!(decide(&env(Slot::B, true, 4), Slot::A, false), Altboot);
        // A bootenv naming the other slot with nothing on trial is not ours to change.
        assert_eq!(decide(&env(Slot::B, false, 0), Slot::A, false), Nothing);
    }
}
