//! `baleen reboot`: reboot the device without cutting an application off in
//! the middle of a critical section. This is balenaOS's
//! `/usr/libexec/safe_reboot`, improved.
//!
//! 1. **Override.** If the supervisor's `target-state-config` sets
//!    `SUPERVISOR_OVERRIDE_LOCK` or `RESIN_OVERRIDE_LOCK` (JSON `true`,
//!    `"true"`, `"1"` or `1`), the device reboots at once and no lock is
//!    checked.
//! 2. **Locks.** Every `updates.lock` under the supervisor's `services/`
//!    directory, at any depth, is opened and tried with a non-blocking
//!    exclusive `flock`. While any is held by someone else, one line names the
//!    held locks and the attempt is repeated every `poll_interval`. Once every
//!    lock is free they are all kept locked, so that no application takes one
//!    while the system goes down.
//! 3. **Going down.** `sync`, then `systemctl reboot`. If the system is still
//!    up, the request escalates: `systemctl reboot --force` after
//!    `force_after`, `systemctl reboot --force --force` after
//!    `force_force_after` and `s` then `b` written to `/proc/sysrq-trigger`
//!    after `sysrq_after`, all timed from the first request.
//!
//! Differences from the balenaOS script:
//! - The locks stay held until this process exits, not just while they are
//!   checked. An orderly shutdown may end this process before then; by that
//!   point systemd is already stopping the applications.
//! - Each attempt is all-or-nothing. If one lock is busy, the others are let
//!   go again, so waiting on one application never blocks another.
//! - The waiting line is printed again only when the set of held locks
//!   changes, with a reminder every `remind_every`. It is not printed on
//!   every attempt.
//! - An override written while we wait is honoured on the next attempt.
//! - `lock_timeout` limits the wait. When it runs out, the reboot is refused
//!   with an error that names the held locks, unless `force` is set.
//! - Only regular files count as locks. They are opened with `O_NOFOLLOW` and
//!   `O_NONBLOCK`, so a symlink or FIFO that an application leaves in its lock
//!   directory cannot redirect or stall the reboot.
//! - A lock file that appears while the locks are being taken is caught by a
//!   second scan before the reboot starts.
//!
//! The pure parts (`override_requested`, `find_locks`, `schedule` and the
//! report-on-change logic) are separated from the side effects. The side
//! effects take their paths from [`RebootOptions`] and their commands from a
//! [`Runner`], so tests can run them in a temp dir with a fake runner.

// Until `baleen reboot` is wired into the CLI; remove with that change.

use anyhow::{Context, Result, bail};
use rustix::fs::{FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde_json::Value;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subprocess::Cmd;

/// The supervisor's runtime directory on a device.
pub const SUPERVISOR_DIR: &str = "/tmp/balena-supervisor";
/// The kernel's magic SysRq trigger.
pub const SYSRQ_TRIGGER: &str = "/proc/sysrq-trigger";

/// The name of an application's update lock, under `<supervisor>/services/`.
const LOCK_NAME: &str = "updates.lock";
/// The supervisor's copy of the target state, under the supervisor directory.
const TARGET_STATE: &str = "target-state-config";
/// The keys that tell the supervisor, and us, to ignore update locks.
const OVERRIDE_KEYS: [&str; 2] = ["SUPERVISOR_OVERRIDE_LOCK", "RESIN_OVERRIDE_LOCK"];

/// How a safe reboot finds its inputs and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootOptions {
    /// The directory that holds `target-state-config` and `services/**/updates.lock`.
    pub supervisor_dir: PathBuf,
    /// The file that `s` and `b` are written to as the last resort.
    pub sysrq_trigger: PathBuf,
    /// How long to wait between attempts to take the locks.
    pub poll_interval: Duration,
    /// How often the waiting line is repeated when the held locks stay the same.
    pub remind_every: Duration,
    /// How long to wait for the locks before giving up. `None` means wait forever.
    pub lock_timeout: Option<Duration>,
    /// When `lock_timeout` runs out, reboot anyway instead of returning an error.
    pub force: bool,
    /// The delay after the first reboot request before `systemctl reboot --force`.
    pub force_after: Duration,
    /// The delay after the first reboot request before `systemctl reboot --force --force`.
    pub force_force_after: Duration,
    /// The delay after the first reboot request before the SysRq emergency reboot.
    pub sysrq_after: Duration,
    /// The pause between SysRq `s` (emergency sync) and `b` (reboot).
    pub sysrq_sync_wait: Duration,
}

impl Default for RebootOptions {
    fn default() -> Self {
        RebootOptions {
            supervisor_dir: PathBuf::from(SUPERVISOR_DIR),
            sysrq_trigger: PathBuf::from(SYSRQ_TRIGGER),
            poll_interval: Duration::from_secs(5),
            remind_every: Duration::from_secs(60),
            lock_timeout: None,
            force: false,
            force_after: Duration::from_secs(120),
            force_force_after: Duration::from_secs(300),
            sysrq_after: Duration::from_secs(600),
            sysrq_sync_wait: Duration::from_secs(2),
        }
    }
}

/// One way of asking the system to go down, from gentle to brutal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `systemctl reboot`: an orderly shutdown.
    Reboot,
    /// `systemctl reboot --force`: skips stopping the units.
    Force,
    /// `systemctl reboot --force --force`: calls reboot(2) without asking systemd.
    ForceForce,
    /// SysRq `s` then `b`: the kernel syncs and resets.
    Sysrq,
}

impl Step {
    /// The `systemctl` arguments for this step, if it is a systemctl step.
    pub fn systemctl_args(self) -> Option<&'static [&'static str]> {
        match self {
            Step::Reboot => Some(&["reboot"]),
            Step::Force => Some(&["reboot", "--force"]),
            Step::ForceForce => Some(&["reboot", "--force", "--force"]),
            Step::Sysrq => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.systemctl_args() {
            Some(args) => write!(f, "systemctl {}", args.join(" ")),
            None => f.write_str("SysRq emergency sync and reboot"),
        }
    }
}

/// The escalation steps and when each one starts, timed from the first reboot
/// request. The steps always run in this order. A step whose time has already
/// passed runs as soon as the step before it is done.
pub fn schedule(opts: &RebootOptions) -> [(Duration, Step); 4] {
    [
        (Duration::ZERO, Step::Reboot),
        (opts.force_after, Step::Force),
        (opts.force_force_after, Step::ForceForce),
        (opts.sysrq_after, Step::Sysrq),
    ]
}

/// The side effects of going down. Tests swap these for a recorder.
pub trait Runner {
    /// Flushes every file system's dirty data (`sync(2)`).
    fn sync(&mut self);
    /// Runs `systemctl` with `args` and kills it after `timeout`.
    fn systemctl(&mut self, args: &[&str], timeout: Duration) -> Result<()>;
}

/// The real machine: `sync(2)` and `systemctl` through the subprocess helper.
#[derive(Debug, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    fn sync(&mut self) {
        rustix::fs::sync();
    }

    fn systemctl(&mut self, args: &[&str], timeout: Duration) -> Result<()> {
        Cmd::new("systemctl")
            .package("systemd")
            .args(args)
            .timeout(timeout)
            .run()?;
        Ok(())
    }
}

/// Reboots the device safely, printing progress on stdout.
///
/// Returns an error when the locks stay held past `lock_timeout` without
/// `force`. In that case nothing is rebooted. On a real device the kernel
/// resets during the SysRq step, so the call only returns after that step if
/// the reboot did not happen.
pub fn safe_reboot(opts: &RebootOptions) -> Result<()> {
    safe_reboot_with(opts, &mut SystemRunner, &mut std::io::stdout().lock())
}

/// [`safe_reboot`] with its side effects injected: `runner` syncs and runs
/// systemctl, and progress lines go to `out`.
pub fn safe_reboot_with(
    opts: &RebootOptions,
    runner: &mut dyn Runner,
    out: &mut dyn Write,
) -> Result<()> {
    // The locks are held until this function returns, which on a real device
    // means until the system goes down.
    let _held = take_locks(opts, out)?;
    escalate(opts, runner, out)
}

/// Which override key, if any, a parsed `target-state-config` sets.
pub fn override_requested(config: &Value) -> Option<&'static str> {
    OVERRIDE_KEYS
        .into_iter()
        .find(|key| config.get(key).is_some_and(truthy))
}

/// Accepts `true`, `"true"`, `"1"` and `1`.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s == "true" || s == "1",
        Value::Number(n) => n.as_f64() == Some(1.0),
        _ => false,
    }
}

/// Reads `target-state-config`. A missing file means no override.
fn read_override(path: &Path) -> Result<Option<&'static str>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(override_requested(&config))
}

/// Every regular file named `updates.lock` under `services`, at any depth,
/// sorted. Symlinked directories are not followed. A missing `services`
/// directory means no locks.
pub fn find_locks(services: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut dirs = vec![services.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Gone: never there, or removed while we walk.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .with_context(|| format!("inspecting {}", path.display()))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if entry.file_name() == LOCK_NAME {
                if kind.is_file() {
                    found.push(path);
                } else {
                    tracing::warn!(path = %path.display(), "not a regular file; not a lock");
                }
            }
        }
    }
    found.sort();
    Ok(found)
}

/// What one lock attempt found.
enum Lock {
    Held(File),
    Busy,
    /// The file was removed after the scan.
    Gone,
}

fn try_lock(path: &Path) -> Result<Lock> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Lock::Gone),
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("opening lock {}", path.display()));
        }
    };
    loop {
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Lock::Held(File::from(fd))),
            Err(Errno::WOULDBLOCK) => return Ok(Lock::Busy),
            Err(Errno::INTR) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

/// One pass over every lock.
enum Attempt {
    /// Every lock was free and is now ours.
    AllHeld(Vec<File>),
    /// These are held by someone else; the ones we took are let go again.
    Busy(Vec<PathBuf>),
}

fn try_lock_all(paths: &[PathBuf]) -> Result<Attempt> {
    let mut held = Vec::new();
    let mut busy = Vec::new();
    for path in paths {
        match try_lock(path)? {
            Lock::Held(file) => held.push(file),
            Lock::Busy => busy.push(path.clone()),
            Lock::Gone => {}
        }
    }
    Ok(if busy.is_empty() {
        Attempt::AllHeld(held)
    } else {
        Attempt::Busy(busy)
    })
}

/// Waits until every application lock is free and takes them all, unless an
/// override or a forced timeout says to go ahead without them.
fn take_locks(opts: &RebootOptions, out: &mut dyn Write) -> Result<Vec<File>> {
    let started = Instant::now();
    let services = opts.supervisor_dir.join("services");
    let target_state = opts.supervisor_dir.join(TARGET_STATE);
    let mut reporter = Reporter::new(opts.remind_every);
    let mut override_warned = false;
    loop {
        match read_override(&target_state) {
            Ok(Some(key)) => {
                say(
                    out,
                    format_args!(
                        "{key} is set in {}: rebooting without waiting for application locks",
                        target_state.display()
                    ),
                );
                return Ok(Vec::new());
            }
            Ok(None) => {}
            Err(e) if !override_warned => {
                tracing::warn!("{e:#}; assuming no lock override");
                override_warned = true;
            }
            Err(_) => {}
        }
        let paths = find_locks(&services)?;
        let busy = match try_lock_all(&paths)? {
            Attempt::AllHeld(held) => {
                // A lock created while we were taking the others would be missed.
                let again = find_locks(&services)?;
                if again.iter().all(|p| paths.contains(p)) {
                    tracing::info!(locks = held.len(), "application locks held until shutdown");
                    if !held.is_empty() {
                        say(
                            out,
                            format_args!(
                                "Took {} application {}; holding until the system goes down",
                                held.len(),
                                noun("lock", held.len())
                            ),
                        );
                    }
                    return Ok(held);
                }
                // Drop those and try again straight away with the new one.
                continue;
            }
            Attempt::Busy(busy) => busy,
        };
        let waited = started.elapsed();
        if let Some(line) = reporter.observe(&busy, waited) {
            say(out, line);
        }
        let mut pause = opts.poll_interval;
        if let Some(limit) = opts.lock_timeout {
            if waited >= limit {
                let list = join(&busy);
                if opts.force {
                    say(
                        out,
                        format_args!(
                            "Still waiting on application {} after {limit:?}: {list}; \
                             rebooting anyway (forced)",
                            noun("lock", busy.len())
                        ),
                    );
                    return Ok(Vec::new());
                }
                bail!(
                    "not rebooting: application {} still held after waiting {limit:?}: {list} \
                     (let the application finish, or force the reboot)",
                    noun("lock", busy.len())
                );
            }
            pause = pause.min(limit - waited);
        }
        std::thread::sleep(pause);
    }
}

/// Decides when the waiting line is printed: when the set of held locks
/// changes, and again every `every` while it stays the same. The clock is
/// the time since waiting began, passed in.
struct Reporter {
    every: Duration,
    last: Option<(Vec<PathBuf>, Duration)>,
}

impl Reporter {
    fn new(every: Duration) -> Self {
        Reporter { every, last: None }
    }

    fn observe(&mut self, busy: &[PathBuf], now: Duration) -> Option<String> {
        let what = format!("application {}: {}", noun("lock", busy.len()), join(busy));
        let line = match &self.last {
            Some((set, at)) if set == busy => {
                if now.saturating_sub(*at) < self.every {
                    return None;
                }
                format!(
                    "Reboot still waiting on {what} ({} s so far)",
                    now.as_secs()
                )
            }
            _ => format!("Reboot waiting on {what}"),
        };
        self.last = Some((busy.to_vec(), now));
        Some(line)
    }
}

/// Syncs, asks for a reboot and escalates on schedule while the system stays up.
fn escalate(opts: &RebootOptions, runner: &mut dyn Runner, out: &mut dyn Write) -> Result<()> {
    say(out, "Syncing file systems");
    runner.sync();
    let requested = Instant::now();
    let steps = schedule(opts);
    for (i, &(at, step)) in steps.iter().enumerate() {
        std::thread::sleep(at.saturating_sub(requested.elapsed()));
        if i == 0 {
            say(out, format_args!("Rebooting: {step}"));
        } else {
            say(
                out,
                format_args!("System still up {at:?} after the reboot request: {step}"),
            );
        }
        match step.systemctl_args() {
            Some(args) => {
                // A hung systemctl must not hold up the next step.
                let timeout = steps
                    .get(i + 1)
                    .map(|&(next, _)| next.saturating_sub(requested.elapsed()))
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_secs(1));
                if let Err(e) = runner.systemctl(args, timeout) {
                    tracing::warn!("{e:#}");
                    say(out, format_args!("{step} failed: {e:#}"));
                }
            }
            None => sysrq_reboot(&opts.sysrq_trigger, opts.sysrq_sync_wait)?,
        }
    }
    Ok(())
}

/// Writes `s` (emergency sync) then `b` (immediate reboot) to the SysRq trigger.
fn sysrq_reboot(trigger: &Path, sync_wait: Duration) -> Result<()> {
    let context = || format!("writing to {}", trigger.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(trigger)
        .with_context(context)?;
    file.write_all(b"s").with_context(context)?;
    std::thread::sleep(sync_wait);
    // On a real trigger the kernel resets inside this write.
    file.write_all(b"b").with_context(context)
}

/// Prints one progress line. A closed stdout must not stop the reboot, so
/// write errors are ignored.
fn say(out: &mut dyn Write, line: impl fmt::Display) {
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn noun(word: &str, n: usize) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::thread::JoinHandle;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Records what a safe reboot asks of the machine, and when.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(String, Instant)>,
        /// A lock tried at every systemctl call, to see whether it is still held.
        probe: Option<PathBuf>,
        /// Make every systemctl call fail.
        fail: bool,
    }

    impl Recorder {
        fn record(&mut self, what: String) {
            self.calls.push((what, Instant::now()));
        }

        fn commands(&self) -> Vec<&str> {
            self.calls.iter().map(|(c, _)| c.as_str()).collect()
        }

        /// When each call came, measured from the first `systemctl reboot`.
        fn offsets(&self) -> Vec<Duration> {
            let first = self
                .calls
                .iter()
                .find(|(c, _)| c == "systemctl reboot")
                .expect("systemctl reboot was run")
                .1;
            self.calls
                .iter()
                .filter(|(c, _)| c.starts_with("systemctl"))
                .map(|(_, at)| at.duration_since(first))
                .collect()
        }
    }

    impl Runner for Recorder {
        fn sync(&mut self) {
            self.record("sync".into());
        }

        fn systemctl(&mut self, args: &[&str], _timeout: Duration) -> Result<()> {
            if let Some(probe) = self.probe.clone() {
                let state = match try_lock(&probe).unwrap() {
                    Lock::Busy => "busy",
                    _ => "free",
                };
                self.record(format!("probe {state}"));
            }
            self.record(format!("systemctl {}", args.join(" ")));
            if self.fail {
                bail!("Failed to connect to bus");
            }
            Ok(())
        }
    }

    /// Options rooted in a temp dir, with instant escalation and fast polling.
    fn fixture() -> (tempfile::TempDir, RebootOptions) {
        let dir = tempfile::tempdir().unwrap();
        let sysrq_trigger = dir.path().join("sysrq-trigger");
        std::fs::write(&sysrq_trigger, "").unwrap();
        let opts = RebootOptions {
            supervisor_dir: dir.path().join("supervisor"),
            sysrq_trigger,
            poll_interval: ms(5),
            remind_every: Duration::from_secs(3600),
            lock_timeout: None,
            force: false,
            force_after: Duration::ZERO,
            force_force_after: Duration::ZERO,
            sysrq_after: Duration::ZERO,
            sysrq_sync_wait: Duration::ZERO,
        };
        (dir, opts)
    }

    fn make_lock(opts: &RebootOptions, dir: &str) -> PathBuf {
        let path = opts
            .supervisor_dir
            .join("services")
            .join(dir)
            .join(LOCK_NAME);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        path
    }

    /// Takes a lock the way an application does: its own open file description.
    fn hold(path: &Path) -> File {
        let file = File::open(path).unwrap();
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).unwrap();
        file
    }

    fn release_after(delay: Duration, lock: File) -> JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            drop(lock);
        })
    }

    fn run(opts: &RebootOptions, runner: &mut Recorder) -> (Result<()>, String) {
        let mut out = Vec::new();
        let result = safe_reboot_with(opts, runner, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    fn waiting_lines(out: &str) -> Vec<&str> {
        out.lines().filter(|l| l.contains("waiting on")).collect()
    }

    const ALL_STEPS: [&str; 4] = [
        "sync",
        "systemctl reboot",
        "systemctl reboot --force",
        "systemctl reboot --force --force",
    ];

    #[test]
    fn override_accepts_true_the_strings_true_and_1_and_the_number_1() {
        for value in [json!(true), json!("true"), json!("1"), json!(1)] {
            for key in OVERRIDE_KEYS {
                let config = json!({ key: value.clone() });
                assert_eq!(override_requested(&config), Some(key), "{config}");
            }
        }
    }

    #[test]
    fn override_rejects_everything_else() {
        for value in [
            json!(false),
            json!("false"),
            json!("0"),
            json!(0),
            json!(2),
            json!("yes"),
            json!(""),
            json!(null),
            json!([true]),
        ] {
            let config = json!({ "SUPERVISOR_OVERRIDE_LOCK": value });
            assert_eq!(override_requested(&config), None, "{config}");
        }
        for config in [
            json!({}),
            json!([]),
            json!("true"),
            json!({ "other": { "SUPERVISOR_OVERRIDE_LOCK": true } }),
        ] {
            assert_eq!(override_requested(&config), None, "{config}");
        }
    }

    #[test]
    fn override_file_missing_means_none_and_garbage_names_the_file() {
        let (dir, _) = fixture();
        let path = dir.path().join(TARGET_STATE);
        assert_eq!(read_override(&path).unwrap(), None);
        std::fs::write(&path, "{ not json").unwrap();
        let err = read_override(&path).unwrap_err();
        assert_eq!(err.to_string(), format!("parsing {}", path.display()));
        std::fs::write(&path, r#"{"RESIN_OVERRIDE_LOCK": "1"}"#).unwrap();
        assert_eq!(read_override(&path).unwrap(), Some("RESIN_OVERRIDE_LOCK"));
    }

    #[test]
    fn finds_locks_at_any_depth_and_only_regular_files() {
        let (_dir, opts) = fixture();
        let services = opts.supervisor_dir.join("services");
        assert_eq!(find_locks(&services).unwrap(), Vec::<PathBuf>::new());

        let shallow = make_lock(&opts, "1");
        let usual = make_lock(&opts, "1/main");
        let deep = make_lock(&opts, "2/web/cache/deep");
        let inside_dir_named_lock = make_lock(&opts, "5/updates.lock");
        std::fs::write(usual.with_file_name("updates.lock.bak"), "").unwrap();
        std::fs::write(services.join("1/other.lock"), "").unwrap();
        std::fs::create_dir_all(services.join("4")).unwrap();
        std::os::unix::fs::symlink(&usual, services.join("4").join(LOCK_NAME)).unwrap();
        std::os::unix::fs::symlink(services.join("2"), services.join("6")).unwrap();

        assert_eq!(
            find_locks(&services).unwrap(),
            vec![usual, shallow, deep, inside_dir_named_lock]
        );
    }

    #[test]
    fn reports_on_change_and_reminds_while_unchanged() {
        let a = PathBuf::from("/s/1/a/updates.lock");
        let b = PathBuf::from("/s/1/b/updates.lock");
        let both = [a.clone(), b.clone()];
        let only_b = [b];
        let mut reporter = Reporter::new(Duration::from_secs(60));
        let mut at = |busy: &[PathBuf], secs| reporter.observe(busy, Duration::from_secs(secs));

        assert_eq!(
            at(&both, 0).as_deref(),
            Some("Reboot waiting on application locks: /s/1/a/updates.lock, /s/1/b/updates.lock")
        );
        assert_eq!(at(&both, 5), None);
        assert_eq!(at(&both, 59), None);
        assert_eq!(
            at(&both, 60).as_deref(),
            Some(
                "Reboot still waiting on application locks: \
                 /s/1/a/updates.lock, /s/1/b/updates.lock (60 s so far)"
            )
        );
        assert_eq!(at(&both, 65), None);
        assert_eq!(
            at(&only_b, 70).as_deref(),
            Some("Reboot waiting on application lock: /s/1/b/updates.lock")
        );
        assert_eq!(at(&only_b, 129), None);
        assert_eq!(
            at(&only_b, 130).as_deref(),
            Some("Reboot still waiting on application lock: /s/1/b/updates.lock (130 s so far)")
        );
        assert!(at(&[a], 131).is_some());
    }

    #[test]
    fn schedule_and_defaults_are_the_production_values() {
        let opts = RebootOptions::default();
        assert_eq!(opts.supervisor_dir, Path::new("/tmp/balena-supervisor"));
        assert_eq!(opts.sysrq_trigger, Path::new("/proc/sysrq-trigger"));
        assert_eq!(opts.poll_interval, Duration::from_secs(5));
        assert_eq!(opts.remind_every, Duration::from_secs(60));
        assert_eq!(opts.lock_timeout, None);
        assert!(!opts.force);
        assert_eq!(
            schedule(&opts),
            [
                (Duration::ZERO, Step::Reboot),
                (Duration::from_secs(120), Step::Force),
                (Duration::from_secs(300), Step::ForceForce),
                (Duration::from_secs(600), Step::Sysrq),
            ]
        );
        let shown: Vec<String> = schedule(&opts).iter().map(|(_, s)| s.to_string()).collect();
        assert_eq!(
            shown,
            [
                "systemctl reboot",
                "systemctl reboot --force",
                "systemctl reboot --force --force",
                "SysRq emergency sync and reboot",
            ]
        );
    }

    #[test]
    fn no_locks_reboots_at_once() {
        let (_dir, opts) = fixture();
        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        result.unwrap();
        assert_eq!(runner.commands(), ALL_STEPS);
        assert!(waiting_lines(&out).is_empty(), "{out}");
        assert!(out.contains("Rebooting: systemctl reboot\n"), "{out}");
    }

    #[test]
    fn override_reboots_without_checking_locks() {
        let (_dir, opts) = fixture();
        let lock = make_lock(&opts, "1/main");
        let _app = hold(&lock);
        let config = opts.supervisor_dir.join(TARGET_STATE);
        std::fs::write(&config, r#"{"SUPERVISOR_OVERRIDE_LOCK": true}"#).unwrap();

        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        result.unwrap();
        assert_eq!(
            out.lines().next(),
            Some(
                format!(
                    "SUPERVISOR_OVERRIDE_LOCK is set in {}: \
                     rebooting without waiting for application locks",
                    config.display()
                )
                .as_str()
            )
        );
        assert!(waiting_lines(&out).is_empty(), "{out}");
        assert_eq!(runner.commands(), ALL_STEPS);
    }

    #[test]
    fn override_set_while_waiting_is_honoured() {
        let (_dir, opts) = fixture();
        let lock = make_lock(&opts, "1/main");
        let _app = hold(&lock);
        let config = opts.supervisor_dir.join(TARGET_STATE);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(ms(50));
            std::fs::write(&config, r#"{"RESIN_OVERRIDE_LOCK": "true"}"#).unwrap();
        });

        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        writer.join().unwrap();
        result.unwrap();
        assert_eq!(waiting_lines(&out).len(), 1, "{out}");
        assert!(out.contains("RESIN_OVERRIDE_LOCK is set in"), "{out}");
        assert_eq!(runner.commands(), ALL_STEPS);
    }

    #[test]
    fn held_lock_waits_then_reboots_once_released() {
        let (_dir, opts) = fixture();
        let lock = make_lock(&opts, "1/main");
        let app = release_after(ms(100), hold(&lock));

        let started = Instant::now();
        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        app.join().unwrap();
        result.unwrap();
        assert!(started.elapsed() >= ms(100));
        assert_eq!(
            waiting_lines(&out),
            [format!(
                "Reboot waiting on application lock: {}",
                lock.display()
            )],
            "reported once, not on every attempt"
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1..],
            [
                "Took 1 application lock; holding until the system goes down",
                "Syncing file systems",
                "Rebooting: systemctl reboot",
                "System still up 0ns after the reboot request: systemctl reboot --force",
                "System still up 0ns after the reboot request: systemctl reboot --force --force",
                "System still up 0ns after the reboot request: SysRq emergency sync and reboot",
            ]
        );
        assert_eq!(runner.commands(), ALL_STEPS);
    }

    #[test]
    fn reports_again_when_the_held_locks_change() {
        let (_dir, opts) = fixture();
        let a = make_lock(&opts, "1/a");
        let b = make_lock(&opts, "2/b");
        let first = release_after(ms(80), hold(&a));
        let second = release_after(ms(160), hold(&b));

        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        first.join().unwrap();
        second.join().unwrap();
        result.unwrap();
        assert_eq!(
            waiting_lines(&out),
            [
                format!(
                    "Reboot waiting on application locks: {}, {}",
                    a.display(),
                    b.display()
                ),
                format!("Reboot waiting on application lock: {}", b.display()),
            ]
        );
        assert!(out.contains("Took 2 application locks;"), "{out}");
    }

    #[test]
    fn locks_stay_held_while_the_system_goes_down() {
        let (_dir, opts) = fixture();
        let lock = make_lock(&opts, "1/main");
        let mut runner = Recorder {
            probe: Some(lock.clone()),
            ..Recorder::default()
        };
        let (result, _) = run(&opts, &mut runner);
        result.unwrap();
        assert_eq!(
            runner.commands()[..3],
            ["sync", "probe busy", "systemctl reboot"]
        );
        assert!(runner.commands().iter().all(|c| *c != "probe free"));
        // Released once safe_reboot returns (on a device: when the process ends).
        assert!(matches!(try_lock(&lock).unwrap(), Lock::Held(_)));
    }

    #[test]
    fn escalates_in_order_on_schedule() {
        let (_dir, mut opts) = fixture();
        opts.force_after = ms(40);
        opts.force_force_after = ms(80);
        opts.sysrq_after = ms(120);
        let mut runner = Recorder::default();
        let started = Instant::now();
        let (result, out) = run(&opts, &mut runner);
        result.unwrap();
        assert!(started.elapsed() >= ms(120));
        assert_eq!(runner.commands(), ALL_STEPS);
        let offsets = runner.offsets();
        assert!(offsets[1] >= ms(40) && offsets[2] >= ms(80), "{offsets:?}");
        assert_eq!(std::fs::read_to_string(&opts.sysrq_trigger).unwrap(), "sb");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "Syncing file systems",
                "Rebooting: systemctl reboot",
                "System still up 40ms after the reboot request: systemctl reboot --force",
                "System still up 80ms after the reboot request: systemctl reboot --force --force",
                "System still up 120ms after the reboot request: SysRq emergency sync and reboot",
            ]
        );
    }

    #[test]
    fn failing_systemctl_still_escalates_to_sysrq() {
        let (_dir, opts) = fixture();
        let mut runner = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let (result, out) = run(&opts, &mut runner);
        result.unwrap();
        assert_eq!(runner.commands(), ALL_STEPS);
        assert!(
            out.contains("systemctl reboot --force failed: Failed to connect to bus\n"),
            "{out}"
        );
        assert_eq!(std::fs::read_to_string(&opts.sysrq_trigger).unwrap(), "sb");
    }

    #[test]
    fn missing_sysrq_trigger_is_an_error_naming_it() {
        let (dir, mut opts) = fixture();
        opts.sysrq_trigger = dir.path().join("no-sysrq");
        let (result, _) = run(&opts, &mut Recorder::default());
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("writing to {}", opts.sysrq_trigger.display())
        );
    }

    #[test]
    fn timeout_without_force_refuses_to_reboot() {
        let (_dir, mut opts) = fixture();
        opts.lock_timeout = Some(ms(50));
        let lock = make_lock(&opts, "1/main");
        let _app = hold(&lock);

        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        let err = result.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "not rebooting: application lock still held after waiting 50ms: {} \
                 (let the application finish, or force the reboot)",
                lock.display()
            )
        );
        assert!(runner.calls.is_empty());
        assert_eq!(waiting_lines(&out).len(), 1, "{out}");
    }

    #[test]
    fn timeout_with_force_reboots_anyway() {
        let (_dir, mut opts) = fixture();
        opts.lock_timeout = Some(ms(50));
        opts.force = true;
        let lock = make_lock(&opts, "1/main");
        let _app = hold(&lock);

        let mut runner = Recorder::default();
        let (result, out) = run(&opts, &mut runner);
        result.unwrap();
        assert!(
            out.contains(&format!(
                "Still waiting on application lock after 50ms: {}; rebooting anyway (forced)\n",
                lock.display()
            )),
            "{out}"
        );
        assert_eq!(runner.commands(), ALL_STEPS);
    }
}
