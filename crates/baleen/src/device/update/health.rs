//! Health checks of a new root on trial, and the window that decides.
//!
//! A round runs every check:
//!
//! * `network`: there is a default route, if there was one when the update was installed;
//! * `engine`: the container engine's health check passes, if it passed at install time
//!   (`/usr/lib/baleen/engine-healthcheck`; images without an engine have none);
//! * every executable in `/usr/lib/baleen/health.d/` (the image's and the device type's) and
//!   `/mnt/data/baleen/health.d/` (the user's), each with a 60 s limit: exit 0 is healthy.
//!
//! Rounds repeat every interval for the window (default 15 min every 60 s). [`Verdict`]:
//! the update is rolled back as soon as one check failed [`FAILURE_STREAK`] rounds in a row,
//! or if the last round of the window fails; it is committed when the window has passed and
//! its last round passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use subprocess::Cmd;

/// Rounds in a row a check may fail before the update is rolled back.
pub const FAILURE_STREAK: u32 = 3;
/// The image's and device type's checks, relative to the root.
pub const IMAGE_CHECKS: &str = "usr/lib/baleen/health.d";
/// The user's checks, on the data partition.
pub const USER_CHECKS: &str = "mnt/data/baleen/health.d";
/// The container engine's own check, when the image has an engine.
pub const ENGINE_CHECK: &str = "usr/lib/baleen/engine-healthcheck";
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What was healthy before the update, so it must be healthy after it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Before {
    pub network_up: bool,
    pub engine_healthy: bool,
}

impl Before {
    pub fn probe(root: &Path) -> Before {
        Before {
            network_up: default_route(),
            engine_healthy: root.join(ENGINE_CHECK).is_file()
                && run_check(&root.join(ENGINE_CHECK)).is_ok(),
        }
    }
}

/// One check's outcome in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Runs every check once.
pub fn round(root: &Path, before: &Before) -> Vec<CheckResult> {
    let mut results = Vec::new();
    if before.network_up {
        let ok = default_route();
        results.push(CheckResult {
            name: "network".into(),
            ok,
            detail: if ok {
                "default route present".into()
            } else {
                "no default route (the network was up before the update)".into()
            },
        });
    }
    if before.engine_healthy {
        results.push(named("engine", run_check(&root.join(ENGINE_CHECK))));
    }
    for check in executables(&root.join(IMAGE_CHECKS))
        .into_iter()
        .chain(executables(&root.join(USER_CHECKS)))
    {
        let name = check.display().to_string();
        let name = name
            .strip_prefix(&root.display().to_string())
            .map(|n| format!("/{}", n.trim_start_matches('/')))
            .unwrap_or(name);
        results.push(named(&name, run_check(&check)));
    }
    results
}

fn named(name: &str, result: Result<String, String>) -> CheckResult {
    match result {
        Ok(detail) => CheckResult {
            name: name.into(),
            ok: true,
            detail,
        },
        Err(detail) => CheckResult {
            name: name.into(),
            ok: false,
            detail,
        },
    }
}

fn run_check(path: &Path) -> Result<String, String> {
    let any_code: Vec<i32> = (0..=255).collect();
    match Cmd::new(path)
        .timeout(CHECK_TIMEOUT)
        .ok_codes(&any_code)
        .run()
    {
        Ok(out) if out.code == 0 => Ok(last_line(&out.stdout)),
        Ok(out) => {
            let said = [&out.stderr, &out.stdout]
                .into_iter()
                .map(|t| last_line(t))
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            Err(format!("exit code {}: {said}", out.code))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Executable regular files directly in `dir`, sorted.
fn executables(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    out.sort();
    out
}

fn default_route() -> bool {
    ["-4", "-6"].iter().any(|family| {
        Cmd::new("ip")
            .package("iproute2")
            .args([family, "route", "show", "default"])
            .run()
            .is_ok_and(|o| !o.stdout.trim().is_empty())
    })
}

/// What the window says after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep checking.
    Continue,
    /// The window passed and the last round was healthy.
    Commit,
    /// Roll back, with the reason.
    Rollback(String),
}

/// The window's memory: how many rounds in a row each check has failed.
#[derive(Debug, Default)]
pub struct Window {
    streaks: BTreeMap<String, u32>,
    pub rounds: u32,
}

impl Window {
    /// Takes a round's results; `window_over` when the window has passed.
    pub fn judge(&mut self, results: &[CheckResult], window_over: bool) -> Verdict {
        self.rounds += 1;
        let failing: Vec<&CheckResult> = results.iter().filter(|r| !r.ok).collect();
        self.streaks
            .retain(|name, _| failing.iter().any(|r| &r.name == name));
        for r in &failing {
            *self.streaks.entry(r.name.clone()).or_insert(0) += 1;
        }
        if let Some(r) = failing
            .iter()
            .find(|r| self.streaks.get(&r.name).copied().unwrap_or(0) >= FAILURE_STREAK)
        {
            return Verdict::Rollback(format!(
                "health check {} failed {FAILURE_STREAK} rounds in a row: {}",
                r.name, r.detail
            ));
        }
        if window_over {
            return match failing.first() {
                None => Verdict::Commit,
                Some(r) => Verdict::Rollback(format!(
                    "health check {} still failed at the end of the health window: {}",
                    r.name, r.detail
                )),
            };
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, ok: bool) -> CheckResult {
        CheckResult {
            name: name.into(),
            ok,
            detail: if ok {
                "fine".into()
            } else {
                "exit code 1".into()
            },
        }
    }

    #[test]
    fn healthy_rounds_commit_only_at_the_end_of_the_window() {
        let mut w = Window::default();
        assert_eq!(w.judge(&[result("a", true)], false), Verdict::Continue);
        assert_eq!(w.judge(&[result("a", true)], true), Verdict::Commit);
        let mut w = Window::default();
        assert_eq!(
            w.judge(&[], true),
            Verdict::Commit,
            "no checks at all is healthy"
        );
    }

    #[test]
    fn a_failure_streak_rolls_back_early() {
        let mut w = Window::default();
        assert_eq!(w.judge(&[result("a", false)], false), Verdict::Continue);
        assert_eq!(w.judge(&[result("a", false)], false), Verdict::Continue);
        match w.judge(&[result("a", false)], false) {
            Verdict::Rollback(reason) => {
                assert!(
                    reason.contains("health check a failed 3 rounds"),
                    "{reason}"
                )
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_recovered_check_starts_its_streak_again() {
        let mut w = Window::default();
        for ok in [false, false, true, false, false] {
            assert_eq!(w.judge(&[result("a", ok)], false), Verdict::Continue);
        }
    }

    #[test]
    fn failing_at_the_end_of_the_window_rolls_back() {
        let mut w = Window::default();
        assert!(matches!(
            w.judge(&[result("a", true), result("b", false)], true),
            Verdict::Rollback(r) if r.contains("end of the health window")
        ));
    }

    #[test]
    fn checks_are_the_executables_of_both_directories() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (dir, name, body, mode) in [
            (IMAGE_CHECKS, "10-ok", "#!/bin/sh\necho all good\n", 0o755),
            (
                IMAGE_CHECKS,
                "20-bad",
                "#!/bin/sh\necho broken >&2\nexit 1\n",
                0o755,
            ),
            (
                USER_CHECKS,
                "30-not-executable",
                "#!/bin/sh\nexit 1\n",
                0o644,
            ),
        ] {
            let d = root.join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), body).unwrap();
            std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let results = round(root, &Before::default());
        assert_eq!(results.len(), 2, "{results:?}");
        assert_eq!(results[0].name, "/usr/lib/baleen/health.d/10-ok");
        assert!(results[0].ok);
        assert_eq!(results[0].detail, "all good");
        assert!(!results[1].ok);
        assert!(results[1].detail.contains("broken"), "{results:?}");
    }
}
