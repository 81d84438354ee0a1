//! The config agent: applies `config.json` to the running device.
//!
//! [`reconcile`] reads config.json through the power-safe store, validates
//! it, and for each subsystem compares what the configuration asks for with
//! what is on the system right now: it writes only the files that differ and
//! runs only the actions those files need (reload udev, reload
//! NetworkManager's configuration, restart avahi, …). Applying an unchanged
//! configuration writes nothing and restarts nothing. One bad key is reported
//! and left out; invalid JSON changes nothing at all.
//!
//! [`run`] is the resident side (`baleen device config-agent`,
//! `baleen-config.service`): it reconciles at start (covering edits made
//! from a host while the device was off), then on every change inotify sees
//! in `/mnt/boot`: writes in place, rename-over (`jq … > tmp && mv tmp
//! config.json`), `mv` from another filesystem, editors' swap dances.

use super::{logs, ssh};
use anyhow::{Context, Result};
use deviceconfig::model::{self, Config, Raw};
use deviceconfig::render;
use deviceconfig::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subprocess::Cmd;

/// Where the agent reports what it applied (`baleen status` reads it).
pub const STATUS: &str = "run/baleen/config-status.json";

/// A file change a subsystem needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOp {
    /// Replace the file (temporary + rename) with this content and mode.
    Write {
        path: PathBuf,
        content: String,
        mode: u32,
    },
    /// Rewrite in place: a file bound from the state partition, which a
    /// rename cannot replace.
    WriteInPlace {
        path: PathBuf,
        content: String,
    },
    Remove {
        path: PathBuf,
    },
}

impl FileOp {
    fn path(&self) -> &Path {
        match self {
            FileOp::Write { path, .. }
            | FileOp::WriteInPlace { path, .. }
            | FileOp::Remove { path } => path,
        }
    }

    fn describe(&self) -> String {
        match self {
            FileOp::Write { path, .. } | FileOp::WriteInPlace { path, .. } => {
                format!("write {}", path.display())
            }
            FileOp::Remove { path } => format!("remove {}", path.display()),
        }
    }

    fn apply(&self) -> Result<()> {
        match self {
            FileOp::Write {
                path,
                content,
                mode,
            } => write_replace(path, content.as_bytes(), *mode),
            FileOp::WriteInPlace { path, content } => {
                std::fs::write(path, content).with_context(|| format!("writing {}", path.display()))
            }
            FileOp::Remove { path } => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => Ok(()),
            },
        }
    }
}

fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.baleen-tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(mode)))
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// A command the change needs, run after the files are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub argv: Vec<String>,
    /// A failure is logged but not an error (e.g. a unit that is not running).
    pub may_fail: bool,
    /// The daemon (process name) the step tells to re-read its files: with no such process
    /// running, the step is skipped, as the daemon reads them when it starts. At boot the
    /// agent's first pass comes before NetworkManager, chronyd and dnsmasq; their reloads
    /// cost a process each (`nmcli` alone over a second under emulation) for nothing.
    pub daemon: Option<&'static str>,
}

impl Step {
    fn new(argv: &[&str]) -> Step {
        Step {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            may_fail: false,
            daemon: None,
        }
    }

    fn lenient(argv: &[&str]) -> Step {
        Step {
            may_fail: true,
            ..Step::new(argv)
        }
    }

    /// A lenient step that only a running `daemon` needs (see [`Step::daemon`]).
    fn reload(daemon: &'static str, argv: &[&str]) -> Step {
        Step {
            daemon: Some(daemon),
            ..Step::lenient(argv)
        }
    }

    fn from_action(action: render::Action) -> Vec<Step> {
        action
            .commands()
            .iter()
            .map(|argv| Step::new(argv))
            .collect()
    }
}

/// What one subsystem needs to match the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub files: Vec<FileOp>,
    pub steps: Vec<Step>,
    /// Things to tell the user (e.g. "takes effect at the next boot").
    pub notes: Vec<String>,
    /// What the agent notes down once the steps succeeded (the value it
    /// applied to something it cannot read back, such as the kernel's
    /// regulatory domain): a failed step is tried again next time.
    pub records: Vec<FileOp>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.steps.is_empty() && self.records.is_empty()
    }
}

/// Per subsystem: its name and the config keys it applies.
pub const SUBSYSTEMS: [(&str, &str); 12] = [
    ("hostname", "hostname, uuid"),
    ("access", "os.sshKeys, developmentMode"),
    ("udev", "os.udevRules"),
    (
        "networkmanager",
        "os.network.connectivity.*, os.network.wifi.randomMacAddressScan, apiEndpoint",
    ),
    ("ca", "balenaRootCA"),
    ("logging", "persistentLogging"),
    ("dns", "dnsServers"),
    ("ntp", "ntpServers"),
    ("country", "country"),
    ("fan", "os.fan.profile"),
    ("power", "os.power.mode"),
    ("firmware", "os.kernel.extraFirmwareVol"),
];

/// Keys read by the OS that this build does not apply (reported in status).
pub const NOT_APPLIED: [(&str, &str); 1] = [(
    "developmentMode",
    "the container engine's TCP socket: there is no engine in this image yet",
)];

fn read_opt(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Plans every subsystem for `config` under `root`.
pub fn plan_all(root: &Path, config: &Config) -> Vec<(&'static str, Result<Plan>)> {
    vec![
        ("hostname", plan_hostname(root, config)),
        ("access", plan_access(root, config)),
        ("udev", plan_udev(root, config)),
        ("networkmanager", Ok(plan_networkmanager(root, config))),
        ("ca", plan_ca(root, config)),
        ("logging", Ok(plan_logging(root, config))),
        ("dns", Ok(network::plan_dns(root, config))),
        ("ntp", Ok(network::plan_ntp(root, config))),
        ("country", Ok(network::plan_country(root, config))),
        (
            "fan",
            Ok(hardware::plan_backend(
                root,
                "os.fan.profile",
                "fan-profile",
                config.fan_profile.as_deref(),
            )),
        ),
        (
            "power",
            Ok(hardware::plan_backend(
                root,
                "os.power.mode",
                "power-mode",
                config.power_mode.as_deref(),
            )),
        ),
        ("firmware", Ok(hardware::plan_firmware(root, config))),
    ]
}

fn plan_hostname(root: &Path, config: &Config) -> Result<Plan> {
    let mut plan = Plan::default();
    let Some(name) = config.hostname() else {
        plan.notes
            .push("neither hostname nor uuid is set: the hostname stays as it is".into());
        return Ok(plan);
    };
    let etc = root.join(render::ETC_HOSTNAME);
    let line = render::etc_hostname(name);
    if read_opt(&etc).as_deref() != Some(line.as_str()) {
        plan.files.push(FileOp::WriteInPlace {
            path: etc,
            content: line,
        });
    }
    let kernel = root.join("proc/sys/kernel/hostname");
    if read_opt(&kernel).as_deref().map(str::trim) != Some(name) {
        plan.files.push(FileOp::WriteInPlace {
            path: kernel,
            content: name.to_string(),
        });
    }
    if !plan.files.is_empty() {
        plan.steps.push(Step::lenient(&[
            "systemctl",
            "try-restart",
            render::AVAHI_UNIT,
        ]));
    }
    Ok(plan)
}

fn plan_access(root: &Path, config: &Config) -> Result<Plan> {
    let mut plan = Plan::default();
    let access = ssh::Access {
        development: config.development_mode,
        keys: config.ssh_keys.clone(),
        rejected: Vec::new(),
    };
    let ssh_dir = root.join(ssh::ROOT_SSH);
    let local = ssh_dir.join("authorized_keys_local");
    let local_text = (!access.keys.is_empty()).then(|| access.local_keys());
    match (&local_text, read_opt(&local)) {
        (Some(want), have) if have.as_deref() != Some(want.as_str()) => {
            plan.files.push(FileOp::Write {
                path: local.clone(),
                content: want.clone(),
                mode: 0o600,
            })
        }
        (None, Some(_)) => plan.files.push(FileOp::Remove {
            path: local.clone(),
        }),
        _ => {}
    }
    let remote = read_opt(&ssh_dir.join("authorized_keys_remote"));
    let merged = ssh::merge_keys(remote.as_deref(), local_text.as_deref());
    let authorized = ssh_dir.join("authorized_keys");
    if read_opt(&authorized).as_deref() != Some(merged.as_str()) {
        plan.files.push(FileOp::Write {
            path: authorized,
            content: merged,
            mode: 0o600,
        });
    }
    let remote_keys = remote.is_some_and(|t| t.lines().any(|l| ssh::check_key(l.trim()).is_ok()));
    let policy = root.join(ssh::RUN_DIR).join("sshd_config");
    let want = access.sshd_config(remote_keys, &ssh::host_key_path(root));
    if read_opt(&policy).as_deref() != Some(want.as_str()) {
        plan.files.push(FileOp::Write {
            path: policy,
            content: want,
            mode: 0o600,
        });
    }
    let flag = root.join(render::DEVELOPMENT_ENV);
    let want_flag = render::development_env(config.development_mode);
    let have_flag = read_opt(&flag);
    if want_flag != have_flag {
        // An older flag (empty file) counts as development mode too.
        let was_dev = have_flag.is_some();
        match want_flag {
            Some(content) => plan.files.push(FileOp::Write {
                path: flag,
                content,
                mode: 0o644,
            }),
            None => plan.files.push(FileOp::Remove { path: flag }),
        }
        if was_dev != config.development_mode {
            plan.steps
                .extend(Step::from_action(render::Action::RestartGettys));
        }
    }
    Ok(plan)
}

fn plan_udev(root: &Path, config: &Config) -> Result<Plan> {
    let dir = root.join(render::UDEV_RULES_DIR);
    let mut existing = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                existing.insert(
                    name,
                    std::fs::read_to_string(entry.path()).unwrap_or_default(),
                );
            }
        }
    }
    let udev = render::udev_plan(&existing, &config.udev_rules);
    let mut plan = Plan::default();
    for (name, content) in &udev.write {
        plan.files.push(FileOp::Write {
            path: dir.join(name),
            content: content.clone(),
            mode: 0o644,
        });
    }
    for name in &udev.remove {
        plan.files.push(FileOp::Remove {
            path: dir.join(name),
        });
    }
    plan.notes.extend(udev.rejected.iter().cloned());
    if udev.needs_reload() {
        plan.steps = vec![
            Step::new(&["udevadm", "control", "--reload-rules"]),
            Step::new(&["udevadm", "trigger", "--action=add"]),
        ];
    }
    Ok(plan)
}

fn plan_networkmanager(root: &Path, config: &Config) -> Plan {
    let mut plan = Plan::default();
    let c = &config.connectivity;
    let fragment = render::networkmanager_fragment(
        config.random_mac_scan,
        c.uri.as_deref(),
        c.interval.map(u64::from),
        c.response.as_deref(),
    );
    let path = root.join(render::NM_FRAGMENT);
    if read_opt(&path).as_deref() != Some(fragment.as_str()) {
        plan.files.push(FileOp::Write {
            path,
            content: fragment,
            mode: 0o644,
        });
        plan.steps.push(Step::reload(
            "NetworkManager",
            &["nmcli", "general", "reload", "conf"],
        ));
    }
    plan
}

/// The trust store as the image ships it: `/etc/ssl/certs` itself is a
/// state-backed copy, refreshed from the image at every boot.
const PRISTINE_BUNDLE: &str = "mnt/sysroot/active/etc/ssl/certs/ca-certificates.crt";
const BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";
const CA_IN_STORE: &str = "etc/ssl/certs/balenaRootCA.pem";

/// `balenaRootCA`: the PEM in the balena CA directory (what balenaOS's
/// supervisor reads), and in the trust store: the bundle is the image's
/// bundle plus this CA, the PEM sits in `/etc/ssl/certs` with its OpenSSL
/// hash link. Removing the key restores the image's bundle. This is what
/// `update-ca-certificates` would produce, without its minute of shell loops
/// on a slow board (it remains the fallback when the image's bundle cannot
/// be read).
fn plan_ca(root: &Path, config: &Config) -> Result<Plan> {
    let mut plan = Plan::default();
    let pem = config.balena_root_ca.as_deref();
    let source = root.join(render::ROOT_CA);
    match (pem, read_opt(&source)) {
        (Some(pem), have) if have.as_deref() != Some(pem) => plan.files.push(FileOp::Write {
            path: source,
            content: pem.to_string(),
            mode: 0o644,
        }),
        (None, Some(_)) => plan.files.push(FileOp::Remove { path: source }),
        _ => {}
    }
    let Some(pristine) = read_opt(&root.join(PRISTINE_BUNDLE)) else {
        if !plan.files.is_empty() {
            plan.steps
                .extend(Step::from_action(render::Action::UpdateCaCertificates));
        }
        return Ok(plan);
    };
    let mut bundle = pristine;
    if let Some(pem) = pem {
        if !bundle.ends_with('\n') && !bundle.is_empty() {
            bundle.push('\n');
        }
        bundle.push_str(pem);
    }
    let bundle_path = root.join(BUNDLE);
    if read_opt(&bundle_path).as_deref() != Some(bundle.as_str()) {
        plan.files.push(FileOp::Write {
            path: bundle_path,
            content: bundle,
            mode: 0o644,
        });
    }
    let in_store = root.join(CA_IN_STORE);
    let have = read_opt(&in_store);
    match pem {
        Some(pem) if have.as_deref() != Some(pem) => {
            plan.files.push(FileOp::Write {
                path: in_store,
                content: pem.to_string(),
                mode: 0o644,
            });
            plan.steps.push(Step::new(&[
                "sh",
                "-c",
                "cd /etc/ssl/certs && find . -maxdepth 1 -lname balenaRootCA.pem -delete && \
                 ln -s balenaRootCA.pem \"$(openssl x509 -hash -noout -in balenaRootCA.pem).0\"",
            ]));
        }
        None if have.is_some() => {
            plan.files.push(FileOp::Remove { path: in_store });
            plan.steps.push(Step::new(&[
                "find",
                "/etc/ssl/certs",
                "-maxdepth",
                "1",
                "-lname",
                "balenaRootCA.pem",
                "-delete",
            ]));
        }
        _ => {}
    }
    Ok(plan)
}

fn plan_logging(root: &Path, config: &Config) -> Plan {
    let mut plan = Plan::default();
    let mountinfo = read_opt(Path::new("/proc/self/mountinfo")).unwrap_or_default();
    let target = root.join("var/log/journal");
    let persistent = super::bootpart::is_mounted(&mountinfo, &target.to_string_lossy());
    if config.persistent_logging && !persistent {
        plan.steps.push(Step::new(&[
            "systemctl",
            "restart",
            render::PERSISTENT_LOGS_UNIT,
        ]));
    } else if !config.persistent_logging && persistent {
        plan.notes.push(
            "persistentLogging is off: the journal stays on the data partition until the next boot"
                .into(),
        );
    }
    let _ = logs::wanted; // the boot-time service reads the same key
    plan
}

/// The outcome of one subsystem in one reconcile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub subsystem: String,
    pub keys: String,
    /// "unchanged", "applied", "planned" (dry run) or "failed".
    pub result: String,
    pub changes: Vec<String>,
    pub notes: Vec<String>,
    pub error: Option<String>,
}

/// What a reconcile did, as `baleen status --json` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: u32,
    /// sha256 of the config.json bytes applied (first 16 hex digits).
    pub revision: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub subsystems: Vec<Outcome>,
    pub not_applied: BTreeMap<String, String>,
    /// Files written and commands run.
    pub writes: usize,
    pub commands: usize,
    pub last_error: Option<String>,
}

/// Reads, validates and applies config.json under `root` (`dry_run`: only
/// plan). Invalid JSON changes nothing and is reported in `last_error`.
pub fn reconcile(root: &Path, dry_run: bool) -> Report {
    let mut report = Report {
        api_version: 1,
        revision: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        subsystems: Vec::new(),
        not_applied: NOT_APPLIED
            .iter()
            .map(|(k, why)| (k.to_string(), why.to_string()))
            .collect(),
        writes: 0,
        commands: 0,
        last_error: None,
    };
    let store = Store::on_device(root);
    let bytes = match store.read() {
        Ok(bytes) => bytes,
        Err(e) => {
            report.last_error = Some(format!("{e}; nothing changed"));
            return report;
        }
    };
    report.revision = Some(revision(&bytes));
    let raw = match Raw::parse(&store.path().display().to_string(), &bytes) {
        Ok(raw) => raw,
        Err(e) => {
            report.last_error = Some(format!(
                "{e}; nothing changed, the last applied configuration stays"
            ));
            return report;
        }
    };
    let validated = model::validate(&raw);
    report.errors = validated.errors.iter().map(|e| e.to_string()).collect();
    report.warnings = validated.warnings.iter().map(|w| w.to_string()).collect();
    let keys: BTreeMap<&str, &str> = SUBSYSTEMS.into_iter().collect();
    for (name, plan) in plan_all(root, &validated.config) {
        let mut outcome = Outcome {
            subsystem: name.to_string(),
            keys: keys.get(name).copied().unwrap_or("").to_string(),
            result: "unchanged".into(),
            changes: Vec::new(),
            notes: Vec::new(),
            error: None,
        };
        match plan {
            Err(e) => {
                outcome.result = "failed".into();
                outcome.error = Some(format!("{e:#}"));
            }
            Ok(plan) => {
                outcome.notes = plan.notes.clone();
                outcome.changes = plan
                    .files
                    .iter()
                    .map(FileOp::describe)
                    .chain(plan.steps.iter().map(|s| s.argv.join(" ")))
                    .chain(plan.records.iter().map(FileOp::describe))
                    .collect();
                if !plan.is_empty() {
                    if dry_run {
                        outcome.result = "planned".into();
                    } else {
                        let mut done = Done::default();
                        match execute(root, &plan, &mut done) {
                            Ok(()) => outcome.result = "applied".into(),
                            Err(e) => {
                                outcome.result = "failed".into();
                                outcome.error = Some(format!("{e:#}"));
                            }
                        }
                        report.writes += done.writes;
                        report.commands += done.commands;
                    }
                }
            }
        }
        if let Some(e) = &outcome.error {
            report.last_error = Some(format!("{name}: {e}"));
        }
        report.subsystems.push(outcome);
    }
    report
}

/// Whether a process named `name` (its `comm`, at most 15 bytes) runs, from `root`'s `/proc`.
fn process_running(root: &Path, name: &str) -> bool {
    let Ok(entries) = fs::read_dir(root.join("proc")) else {
        return false;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
            && fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
    })
}

/// What [`execute`] did, counted as it goes: also what it did before an error stopped it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Done {
    /// Files written (records included).
    writes: usize,
    /// Commands run, whether or not they succeeded.
    commands: usize,
}

/// Applies the plan, counting into `done`.
fn execute(root: &Path, plan: &Plan, done: &mut Done) -> Result<()> {
    for op in &plan.files {
        op.apply()?;
        done.writes += 1;
        tracing::debug!(path = %op.path().display(), "written");
    }
    for step in &plan.steps {
        let (program, args) = step.argv.split_first().context("empty command")?;
        if let Some(daemon) = step.daemon {
            if !process_running(root, daemon) {
                tracing::debug!(
                    "{daemon} is not running (it reads its files when it starts): skipped `{}`",
                    step.argv.join(" ")
                );
                continue;
            }
        }
        done.commands += 1;
        match Cmd::new(program)
            .args(args)
            .timeout(Duration::from_secs(120))
            .run()
        {
            Ok(_) => {}
            Err(e) if step.may_fail => tracing::warn!("{e}"),
            Err(e) => return Err(e.into()),
        }
    }
    for op in &plan.records {
        op.apply()?;
        done.writes += 1;
    }
    Ok(())
}

/// The first 16 hex digits of the sha256 of `bytes`.
pub fn revision(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..16].to_string()
}

/// Logs a report: one line per change, the errors and warnings.
pub fn log_report(report: &Report) {
    for e in &report.errors {
        tracing::error!("config.json: {e}; this key is left out");
    }
    for w in &report.warnings {
        tracing::warn!("config.json: {w}");
    }
    for s in &report.subsystems {
        for change in &s.changes {
            tracing::info!(subsystem = s.subsystem, result = s.result, "{change}");
        }
        for note in &s.notes {
            tracing::info!(subsystem = s.subsystem, "{note}");
        }
        if let Some(e) = &s.error {
            tracing::error!(subsystem = s.subsystem, "{e}");
        }
    }
    if let Some(e) = &report.last_error {
        tracing::error!("{e}");
    }
}

fn write_status(root: &Path, report: &Report) {
    let path = root.join(STATUS);
    let text = serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
    if let Err(e) = write_replace(&path, text.as_bytes(), 0o644) {
        tracing::warn!("{e:#}");
    }
}

/// Reconciles once and records the result for `baleen status`.
pub fn apply_once(root: &Path, dry_run: bool) -> Report {
    let started = Instant::now();
    let report = reconcile(root, dry_run);
    log_report(&report);
    if !dry_run {
        write_status(root, &report);
        let changed = report.writes + report.commands;
        if changed > 0 {
            tracing::info!(
                revision = report.revision.as_deref().unwrap_or("-"),
                writes = report.writes,
                commands = report.commands,
                "config.json applied in {} ms",
                started.elapsed().as_millis()
            );
        }
    }
    report
}

/// The resident agent: reconcile now, then on every change to config.json.
pub fn run(root: &Path) -> Result<()> {
    use inotify::{Inotify, WatchMask};
    let boot = root.join(deviceconfig::store::BOOT_DIR);
    let run_dir = root.join("run/baleen");
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut inotify = Inotify::init().context("starting inotify")?;
    inotify
        .watches()
        .add(
            &boot,
            WatchMask::CLOSE_WRITE
                | WatchMask::MOVED_TO
                | WatchMask::CREATE
                | WatchMask::DELETE
                | WatchMask::ATTRIB,
        )
        .with_context(|| format!("watching {}", boot.display()))?;
    apply_once(root, false);
    // Ready: what is ordered after the agent (dnsmasq, chrony) finds its
    // rendered files in /run.
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut buffer = [0u8; 4096];
    loop {
        let events = inotify
            .read_events_blocking(&mut buffer)
            .context("reading inotify events")?;
        let relevant = events.into_iter().any(|e| {
            e.name
                .is_some_and(|n| n == deviceconfig::store::CONFIG_JSON)
        });
        if !relevant {
            continue;
        }
        // Let a burst of events (an editor's save) settle.
        std::thread::sleep(Duration::from_millis(20));
        while inotify
            .read_events(&mut buffer)
            .map(|mut e| e.next().is_some())
            .unwrap_or(false)
        {}
        apply_once(root, false);
    }
}

mod hardware;
mod network;
#[cfg(test)]
mod tests;
