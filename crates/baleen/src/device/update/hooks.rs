//! The host-OS-update hook runner, compatible in meaning with balenaOS's
//! `hostapp-update-hooks-v2`.
//!
//! A hooks directory (`/etc/hostapp-update-hooks.d/`) holds executables that
//! move the boot files and bootloader state between the two root slots. Which
//! phase a hook belongs to is decided by its path, as in balenaOS:
//!
//! * forward: every regular file directly in the directory (v1 hooks, `NN-name`)
//!   plus every regular file at any depth whose path contains `forward`;
//! * before / after / commit / cleanup: every regular file whose path contains
//!   that word (v2 hooks, `NN-dir/NN-{forward,fwd_commit,fwd_cleanup,before,after}_name`).
//!
//! Each list is sorted by the bytes of the path and runs in that order.
//!
//! Deliberate differences from balenaOS:
//!
//! * balenaOS greps the **full** path, so a hooks directory whose own path
//!   contains a reserved word (say `/mnt/before/etc/hostapp-update-hooks.d`)
//!   puts every hook in that phase. We match the path **below** the hooks
//!   directory, so only the hook's own directory and file names count.
//! * a listed hook that is not executable is a failure of that hook with a
//!   message that says how to fix it, instead of a shell "permission denied".
//! * every hook runs under a timeout and is killed when it passes it.
//! * a hook is started as `/bin/sh -c 'exec "$0" 2>&1' HOOK` (inside the root
//!   when chrooted), so its stdout and stderr reach us as one ordered stream
//!   for the log and the failure report. The root therefore needs `/bin/sh`,
//!   which every balenaOS root has (the hooks are shell scripts).
//!
//! Like `find -type f`, the listing takes regular files only: symbolic links
//! are neither listed nor followed into directories.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// The hooks directory, relative to a root.
pub const HOOKS_DIR: &str = "etc/hostapp-update-hooks.d";

/// How long one hook may run before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How many lines of a hook's output a failure report carries.
const TAIL_LINES: usize = 20;

/// Longest line kept in the tail; longer lines are cut.
const MAX_LINE_BYTES: usize = 1024;

/// Runs the hook named by `$0` with its stderr sent to its stdout.
const MERGE_OUTPUT: &str = "exec \"$0\" 2>&1";

/// After a hook ends, how long to wait for its output pipes to close. A hook
/// that leaves a background process holding them open must not hang the update.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Which hooks to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// In the old OS, before the forward hooks (`--before`).
    Before,
    /// Move boot files and bootloader state (the default run); cleanup hooks
    /// run after a failure.
    Forward,
    /// In the old OS, after the forward hooks (`--after`).
    After,
    /// After the new OS proved healthy (`--commit`).
    Commit,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Before => "before",
            Phase::Forward => "forward",
            Phase::After => "after",
            Phase::Commit => "commit",
        })
    }
}

/// The hooks of each phase, as paths relative to the hooks directory, each
/// list sorted by the bytes of the path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub forward: Vec<PathBuf>,
    pub before: Vec<PathBuf>,
    pub after: Vec<PathBuf>,
    pub commit: Vec<PathBuf>,
    pub cleanup: Vec<PathBuf>,
}

impl Hooks {
    /// Sorts relative file paths into phases (pure; see the module docs).
    pub fn classify(files: &[PathBuf]) -> Hooks {
        let mut files = files.to_vec();
        files.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        files.dedup();
        let containing = |word: &str| -> Vec<PathBuf> {
            files
                .iter()
                .filter(|f| contains(f, word))
                .cloned()
                .collect()
        };
        Hooks {
            forward: files
                .iter()
                .filter(|f| f.components().count() == 1 || contains(f, "forward"))
                .cloned()
                .collect(),
            before: containing("before"),
            after: containing("after"),
            commit: containing("commit"),
            cleanup: containing("cleanup"),
        }
    }

    /// The hooks a phase runs.
    pub fn phase(&self, phase: Phase) -> &[PathBuf] {
        match phase {
            Phase::Before => &self.before,
            Phase::Forward => &self.forward,
            Phase::After => &self.after,
            Phase::Commit => &self.commit,
        }
    }
}

fn contains(path: &Path, word: &str) -> bool {
    path.as_os_str()
        .as_bytes()
        .windows(word.len())
        .any(|w| w == word.as_bytes())
}

/// Lists and classifies the hooks in `dir`. A missing directory has no hooks.
pub fn list(dir: &Path) -> anyhow::Result<Hooks> {
    let mut files = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Hooks::default()),
        Err(e) => return Err(e).with_context(|| format!("reading hooks in {}", dir.display())),
        Ok(_) => walk(dir, Path::new(""), &mut files)
            .with_context(|| format!("reading hooks in {}", dir.display()))?,
    }
    Ok(Hooks::classify(&files))
}

fn walk(dir: &Path, rel: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir.join(rel))? {
        let entry = entry?;
        // DirEntry::file_type does not follow symbolic links, like `find -type f`.
        let kind = entry.file_type()?;
        let path = rel.join(entry.file_name());
        if kind.is_dir() {
            walk(dir, &path, files)?;
        } else if kind.is_file() {
            files.push(path);
        }
    }
    Ok(())
}

/// Runs the hooks of one phase.
#[derive(Clone, Debug)]
pub struct Runner {
    /// Run the hooks chrooted into this directory (through the `chroot`
    /// program); `None` runs them in the current root.
    pub root: Option<PathBuf>,
    /// The hooks directory as seen inside the root (default `/` + [`HOOKS_DIR`]).
    pub dir: PathBuf,
    /// Exported as `DURING_UPDATE`: `true` means "the new files are in the
    /// inactive slot, switch to it", `false` "the active slot is authoritative".
    pub during_update: bool,
    /// How long each hook may run before it is killed and counted as failed.
    pub timeout: Duration,
}

/// One hook that ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// Relative to the hooks directory.
    pub hook: PathBuf,
    pub ok: bool,
    /// `exit code 0`, `killed by signal 9`, `timed out after 600 s and was killed`,
    /// `not executable`, `could not start: …`.
    pub status: String,
    pub elapsed: Duration,
}

/// The error a failed phase returns (inside the `anyhow::Error`, for callers
/// that want the details through `downcast_ref`).
#[derive(Debug)]
pub struct HookFailed {
    pub phase: Phase,
    /// The hooks directory as seen inside the root.
    pub dir: PathBuf,
    /// The hook that failed, relative to the hooks directory.
    pub hook: PathBuf,
    pub status: String,
    /// The last lines of the hook's combined stdout and stderr, in the order
    /// it wrote them.
    pub output_tail: Vec<String>,
    /// Every hook that ran, the failed one and any cleanup hooks included.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    pub runs: Vec<HookRun>,
}

impl fmt::Display for HookFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} hook {} in {} failed ({})",
            self.phase,
            self.hook.display(),
            self.dir.display(),
            self.status
        )?;
        if !self.output_tail.is_empty() {
            write!(f, "; its last output:\n{}", self.output_tail.join("\n"))?;
        }
        Ok(())
    }
}

impl std::error::Error for HookFailed {}

/// What one hook left behind.
struct Outcome {
    run: HookRun,
    tail: Vec<String>,
}

impl Runner {
    /// A runner for `/etc/hostapp-update-hooks.d` inside `root` with the default timeout.
    pub fn new(root: Option<PathBuf>, during_update: bool) -> Runner {
        Runner {
            root,
            dir: Path::new("/").join(HOOKS_DIR),
            during_update,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Runs every hook of `phase` in order and returns what ran. The first
    /// failure stops the phase; a failed forward hook is followed by every
    /// cleanup hook (whose own failures are only logged). The error is a
    /// [`HookFailed`].
    pub fn run(&self, phase: Phase) -> anyhow::Result<Vec<HookRun>> {
        let inside = self.dir_inside()?;
        let host = self.dir_on_host(&inside);
        let hooks = list(&host)?;
        let mut runs = Vec::new();
        for hook in hooks.phase(phase) {
            let outcome = self.run_one(phase, &inside, &host, hook);
            runs.push(outcome.run.clone());
            if outcome.run.ok {
                continue;
            }
            if phase == Phase::Forward {
                for cleanup in &hooks.cleanup {
                    let c = self.run_one(phase, &inside, &host, cleanup);
                    if !c.run.ok {
                        tracing::warn!(
                            "cleanup hook {} failed ({}); carrying on",
                            cleanup.display(),
                            c.run.status
                        );
                    }
                    runs.push(c.run);
                }
            }
            return Err(HookFailed {
                phase,
                dir: inside,
                hook: hook.clone(),
                status: outcome.run.status,
                output_tail: outcome.tail,
                runs,
            }
            .into());
        }
        Ok(runs)
    }

    /// The hooks directory as the hooks see it, absolute.
    fn dir_inside(&self) -> anyhow::Result<PathBuf> {
        match &self.root {
            Some(_) => Ok(Path::new("/").join(&self.dir)),
            None => std::path::absolute(&self.dir)
                .with_context(|| format!("resolving hooks directory {}", self.dir.display())),
        }
    }

    /// The hooks directory as this process sees it.
    fn dir_on_host(&self, inside: &Path) -> PathBuf {
        match &self.root {
            Some(root) => root.join(inside.strip_prefix("/").unwrap_or(inside)),
            None => inside.to_owned(),
        }
    }

    fn run_one(&self, phase: Phase, inside: &Path, host: &Path, hook: &Path) -> Outcome {
        let started = Instant::now();
        let finish = |status: String, ok: bool, tail: Vec<String>| Outcome {
            run: HookRun {
                hook: hook.to_owned(),
                ok,
                status,
                elapsed: started.elapsed(),
            },
            tail,
        };
        let on_host = host.join(hook);
        let executable = std::fs::metadata(&on_host)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable {
            let message = format!(
                "{} is not executable; chmod +x it or remove it",
                on_host.display()
            );
            tracing::error!("{message}");
            return finish("not executable".into(), false, vec![message]);
        }

        // `/bin/sh -c 'exec "$0" 2>&1' HOOK`: the hook's stderr joins its
        // stdout in one pipe, so the failure report keeps the order in which
        // the hook wrote; the `exec` leaves the hook itself as the process.
        // The stderr pipe still catches what `chroot` or the shell say.
        let mut command = match &self.root {
            None => Command::new("/bin/sh"),
            Some(root) => {
                let mut c = Command::new("chroot");
                c.arg(root).arg("/bin/sh");
                c
            }
        };
        command
            .args(["-c", MERGE_OUTPUT])
            .arg(inside.join(hook))
            .current_dir("/")
            .env("DURING_UPDATE", if self.during_update { "1" } else { "0" })
            .env("HOOKS_DIR", inside)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::info!(
            during_update = self.during_update,
            "running {phase} hook {}",
            hook.display()
        );
        tracing::debug!(?command, "hook command");
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let status = format!("could not start: {e}");
                tracing::error!("{phase} hook {}: {status}", hook.display());
                return finish(status, false, Vec::new());
            }
        };

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let name = hook.display().to_string();
        let readers = [
            child.stdout.take().map(|p| reader(p, &name, &tail)),
            child.stderr.take().map(|p| reader(p, &name, &tail)),
        ];
        let (status, ok) = match wait(&mut child, self.timeout) {
            Ok(Some(status)) => (describe(status), status.success()),
            Ok(None) => (
                format!(
                    "timed out after {} s and was killed",
                    self.timeout.as_secs_f64()
                ),
                false,
            ),
            Err(e) => (format!("waiting for it failed: {e}"), false),
        };
        let deadline = Instant::now() + OUTPUT_GRACE;
        for r in readers.into_iter().flatten() {
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if r.is_finished() {
                let _ = r.join();
            } else {
                tracing::warn!(
                    "{phase} hook {name} left a process holding its output open; not waiting for it"
                );
            }
        }
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let elapsed = started.elapsed();
        if ok {
            tracing::info!(
                "{phase} hook {name} finished in {:.1} s",
                elapsed.as_secs_f64()
            );
        } else {
            tracing::error!("{phase} hook {name} failed ({status})");
        }
        finish(status, ok, tail)
    }
}

/// Waits for `child` up to `timeout`; past it, kills the child (by its handle,
/// it is ours) and returns `None`.
fn wait(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            child.kill()?;
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Logs each line of `pipe` prefixed by the hook name and keeps the last
/// [`TAIL_LINES`] of them in `tail`.
fn reader<R: Read + Send + 'static>(
    pipe: R,
    name: &str,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> JoinHandle<()> {
    let name = name.to_owned();
    let tail = Arc::clone(tail);
    std::thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match pipe.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let end = buf.len() - usize::from(buf.ends_with(b"\n"));
            let line = String::from_utf8_lossy(&buf[..end.min(MAX_LINE_BYTES)]).into_owned();
            tracing::info!("{name}: {line}");
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    fn strs(list: &[PathBuf]) -> Vec<String> {
        list.iter().map(|p| p.display().to_string()).collect()
    }

    /// Writes an executable `#!/bin/sh` hook at `dir/rel`.
    fn hook(dir: &Path, rel: &str, body: &str) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn runner(dir: &Path) -> Runner {
        Runner {
            root: None,
            dir: dir.to_owned(),
            during_update: true,
            timeout: Duration::from_secs(30),
        }
    }

    fn ran(runs: &[HookRun]) -> Vec<String> {
        strs(&runs.iter().map(|r| r.hook.clone()).collect::<Vec<_>>())
    }

    #[test]
    fn classifies_v1_and_v2_hooks_like_balenaos() {
        let hooks = Hooks::classify(&paths(&[
            "80-rollback",
            "75-supervisor-db/75-fwd_commit_supervisor-db",
            "1-bootfiles",
            "75-supervisor-db/75-forward_supervisor-db",
            "75-supervisor-db/75-fwd_cleanup_supervisor-db",
            "95-secureboot/1-fwd_commit_apply-dbx",
            "20-x/20-before_x",
            "20-x/20-after_x",
            "30-nested/README",
            "0-signed-update",
            "1-bootfiles",
        ]));
        assert_eq!(
            strs(&hooks.forward),
            [
                "0-signed-update",
                "1-bootfiles",
                "75-supervisor-db/75-forward_supervisor-db",
                "80-rollback",
            ]
        );
        assert_eq!(
            strs(&hooks.commit),
            [
                "75-supervisor-db/75-fwd_commit_supervisor-db",
                "95-secureboot/1-fwd_commit_apply-dbx",
            ]
        );
        assert_eq!(
            strs(&hooks.cleanup),
            ["75-supervisor-db/75-fwd_cleanup_supervisor-db"]
        );
        assert_eq!(strs(&hooks.before), ["20-x/20-before_x"]);
        assert_eq!(strs(&hooks.after), ["20-x/20-after_x"]);
    }

    #[test]
    fn a_top_level_hook_with_a_reserved_word_is_in_both_lists() {
        // `find -maxdepth 1` takes every top-level file, whatever its name.
        let hooks = Hooks::classify(&paths(&["5-cleanup-tmp"]));
        assert_eq!(strs(&hooks.forward), ["5-cleanup-tmp"]);
        assert_eq!(strs(&hooks.cleanup), ["5-cleanup-tmp"]);
    }

    #[test]
    fn sorts_by_bytes_not_numbers_or_components() {
        let hooks = Hooks::classify(&paths(&[
            "2-b",
            "10-a",
            "1-a/forward",
            "1-a-forward",
            "1-a",
        ]));
        // '-' (0x2d) sorts before '/' (0x2f), as `sort` does in the C locale.
        assert_eq!(
            strs(&hooks.forward),
            ["1-a", "1-a-forward", "1-a/forward", "10-a", "2-b"]
        );
    }

    #[test]
    fn lists_regular_files_below_the_dir_only() {
        let tmp = tempfile::tempdir().unwrap();
        // The directory's own path has reserved words: they must not count.
        let dir = tmp.path().join("before-after/commit/hooks.d");
        hook(&dir, "1-bootfiles", "true");
        hook(&dir, "75-db/75-forward_db", "true");
        hook(&dir, "75-db/75-fwd_commit_db", "true");
        hook(&dir, "75-db/notes", "true");
        std::os::unix::fs::symlink(dir.join("1-bootfiles"), dir.join("2-link")).unwrap();
        let hooks = list(&dir).unwrap();
        assert_eq!(
            hooks,
            Hooks {
                forward: paths(&["1-bootfiles", "75-db/75-forward_db"]),
                before: vec![],
                after: vec![],
                commit: paths(&["75-db/75-fwd_commit_db"]),
                cleanup: vec![],
            }
        );
    }

    #[test]
    fn a_missing_dir_has_nothing_to_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nope");
        assert_eq!(list(&dir).unwrap(), Hooks::default());
        assert_eq!(runner(&dir).run(Phase::Forward).unwrap(), vec![]);
    }

    #[test]
    fn hooks_get_during_update_hooks_dir_and_root_cwd() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        let out = tmp.path().join("out");
        hook(
            &dir,
            "1-env",
            &format!(
                "echo \"$DURING_UPDATE $HOOKS_DIR $(pwd)\" >> {}",
                out.display()
            ),
        );
        let runs = runner(&dir).run(Phase::Forward).unwrap();
        assert_eq!(ran(&runs), ["1-env"]);
        assert!(runs[0].ok);
        assert_eq!(runs[0].status, "exit code 0");

        let r = Runner {
            during_update: false,
            ..runner(&dir)
        };
        r.run(Phase::Forward).unwrap();
        assert_eq!(
            fs::read_to_string(&out).unwrap(),
            format!("1 {0} /\n0 {0} /\n", dir.display())
        );
    }

    #[test]
    fn a_failed_forward_hook_runs_the_cleanups_and_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        let log = tmp.path().join("log");
        let note = |name: &str| format!("echo {name} >> {}", log.display());
        hook(&dir, "1-ok", &note("1-ok"));
        hook(
            &dir,
            "2-fail",
            &format!(
                "{}\nfor i in $(seq 1 30); do echo out$i; done\necho oops >&2\nexit 3",
                note("2-fail")
            ),
        );
        hook(&dir, "3-never", &note("3-never"));
        hook(
            &dir,
            "4-x/4-fwd_cleanup_a",
            &format!("{}\nexit 1", note("cleanup_a")),
        );
        hook(&dir, "4-x/4-fwd_cleanup_b", &note("cleanup_b"));
        hook(&dir, "4-x/4-fwd_commit_x", &note("commit"));

        let err = runner(&dir).run(Phase::Forward).unwrap_err();
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "1-ok\n2-fail\ncleanup_a\ncleanup_b\n"
        );
        let failed = err.downcast_ref::<HookFailed>().unwrap();
        assert_eq!(failed.hook, Path::new("2-fail"));
        assert_eq!(failed.status, "exit code 3");
        let tail = &failed.output_tail;
        assert_eq!(tail.len(), TAIL_LINES, "{tail:?}");
        assert_eq!(tail.first().unwrap(), "out12");
        assert_eq!(tail.last().unwrap(), "oops");
        assert_eq!(
            ran(&failed.runs),
            [
                "1-ok",
                "2-fail",
                "4-x/4-fwd_cleanup_a",
                "4-x/4-fwd_cleanup_b"
            ]
        );
        assert_eq!(
            failed.runs.iter().map(|r| r.ok).collect::<Vec<_>>(),
            [true, false, false, true]
        );
        assert_eq!(
            err.to_string(),
            format!(
                "forward hook 2-fail in {} failed (exit code 3); its last output:\n{}",
                dir.display(),
                tail.join("\n")
            )
        );
    }

    #[test]
    fn a_failed_before_hook_stops_without_cleanup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        let log = tmp.path().join("log");
        let note = |name: &str| format!("echo {name} >> {}", log.display());
        hook(&dir, "1-x/1-before_a", &format!("{}\nexit 2", note("a")));
        hook(&dir, "1-x/2-before_b", &note("b"));
        hook(&dir, "1-x/3-fwd_cleanup", &note("cleanup"));
        hook(&dir, "1-x/1-after_a", &note("after"));

        let err = runner(&dir).run(Phase::Before).unwrap_err();
        assert_eq!(fs::read_to_string(&log).unwrap(), "a\n");
        let failed = err.downcast_ref::<HookFailed>().unwrap();
        assert_eq!(failed.phase, Phase::Before);
        assert_eq!(failed.hook, Path::new("1-x/1-before_a"));
        assert_eq!(ran(&failed.runs), ["1-x/1-before_a"]);
        assert_eq!(
            err.to_string(),
            format!(
                "before hook 1-x/1-before_a in {} failed (exit code 2)",
                dir.display()
            )
        );

        let runs = runner(&dir).run(Phase::After).unwrap();
        assert_eq!(ran(&runs), ["1-x/1-after_a"]);
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        // Not `exec`: the orphaned `sleep` keeps the pipes open, which must
        // not hang the runner past the output grace period.
        hook(&dir, "1-hang", "echo started\nsleep 5\necho never");
        let r = Runner {
            timeout: Duration::from_millis(300),
            ..runner(&dir)
        };
        let started = Instant::now();
        let err = r.run(Phase::Forward).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        let failed = err.downcast_ref::<HookFailed>().unwrap();
        assert_eq!(failed.status, "timed out after 0.3 s and was killed");
        assert_eq!(failed.output_tail, ["started"]);
        assert!(!failed.runs[0].ok);
    }

    #[test]
    fn a_non_executable_hook_is_a_failure_that_says_how_to_fix_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        let log = tmp.path().join("log");
        hook(&dir, "1-plain", "true");
        fs::set_permissions(dir.join("1-plain"), fs::Permissions::from_mode(0o644)).unwrap();
        hook(&dir, "2-next", &format!("echo next >> {}", log.display()));
        hook(
            &dir,
            "9-x/fwd_cleanup",
            &format!("echo cleanup >> {}", log.display()),
        );

        let err = runner(&dir).run(Phase::Forward).unwrap_err();
        assert_eq!(fs::read_to_string(&log).unwrap(), "cleanup\n");
        assert_eq!(
            err.to_string(),
            format!(
                "forward hook 1-plain in {0} failed (not executable); its last output:\n\
                 {0}/1-plain is not executable; chmod +x it or remove it",
                dir.display()
            )
        );
    }

    #[test]
    fn a_hook_whose_interpreter_is_missing_is_a_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("hooks.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("1-bad"), "#!/nonexistent/interpreter\n").unwrap();
        fs::set_permissions(dir.join("1-bad"), fs::Permissions::from_mode(0o755)).unwrap();
        let err = runner(&dir).run(Phase::Forward).unwrap_err();
        let failed = err.downcast_ref::<HookFailed>().unwrap();
        assert_eq!(failed.status, "exit code 127");
        let tail = failed.output_tail.join("\n");
        assert!(tail.contains("1-bad: not found"), "{tail}");
    }

    #[test]
    fn the_default_runner_uses_the_etc_hooks_dir() {
        let r = Runner::new(Some("/mnt/sysroot/inactive".into()), true);
        assert_eq!(r.dir, Path::new("/etc/hostapp-update-hooks.d"));
        let inside = r.dir_inside().unwrap();
        assert_eq!(
            r.dir_on_host(&inside),
            Path::new("/mnt/sysroot/inactive/etc/hostapp-update-hooks.d")
        );
        assert_eq!(r.timeout, DEFAULT_TIMEOUT);
    }

    /// Builds a root holding `/bin/sh` and the libraries it links, or `None`
    /// when that is not possible here.
    fn minimal_root(root: &Path) -> Option<()> {
        let sh = fs::canonicalize("/bin/sh").ok()?;
        let ldd = Command::new("ldd").arg(&sh).output().ok()?;
        let mut files = vec![];
        for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
            if word.starts_with('/') {
                files.push(PathBuf::from(word));
            }
        }
        for file in &files {
            let to = root.join(file.strip_prefix("/").ok()?);
            fs::create_dir_all(to.parent()?).ok()?;
            fs::copy(file, &to).ok()?;
        }
        fs::create_dir_all(root.join("bin")).ok()?;
        fs::copy(&sh, root.join("bin/sh")).ok()?;
        let works = Command::new("chroot")
            .arg(root)
            .args(["/bin/sh", "-c", "true"])
            .status()
            .ok()?
            .success();
        works.then_some(())
    }

    #[test]
    fn runs_hooks_inside_a_chroot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        if minimal_root(&root).is_none() {
            eprintln!("skipping: cannot chroot here (needs root and the chroot program)");
            return;
        }
        let dir = root.join(HOOKS_DIR);
        hook(
            &dir,
            "1-x/1-fwd_commit_env",
            "echo \"$DURING_UPDATE $HOOKS_DIR $(pwd)\" > /out",
        );
        let r = Runner {
            during_update: false,
            timeout: Duration::from_secs(30),
            ..Runner::new(Some(root.clone()), true)
        };
        let runs = r.run(Phase::Commit).unwrap();
        assert_eq!(ran(&runs), ["1-x/1-fwd_commit_env"]);
        assert_eq!(
            fs::read_to_string(root.join("out")).unwrap(),
            "0 /etc/hostapp-update-hooks.d /\n"
        );
    }
}
