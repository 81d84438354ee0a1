//! VM tests of host OS updates: `baleen update install` of the `next` image's bundle (0.2.0)
//! on the dev image (0.1.0), served over HTTP or HTTPS from the test's own LAN or copied to the
//! device; the A/B switch, the health window and its rollback, the boot stage's fallback
//! (altboot), refusals of bad bundles, and a power cut at every step of an install.
//!
//! Every VM boots a throwaway overlay of the dev image on a private [`Lan`] whose host side
//! runs `bundle-http-server` twice over a scratch folder holding the bundle and, where a test
//! needs them, bad bundles derived from it ([`systests::bundles`]): plain HTTP on
//! `10.0.2.2:8080`, and TLS on `10.0.2.2:8443` with a certificate of a test CA that the device
//! trusts only once config.json's `balenaRootCA` names it.
//!
//! Figures (install time and throughput, downtime, raw write speed) are printed, never
//! asserted: run with `--nocapture` to see them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bootenv::{BootEnv, Slot};
use serde_json::Value;
use systests::bundles::{self, BundleServer, Defect, Faults};
use systests::lan::Lan;
use systests::timeservers::generate_certs;
use systests::{Scratch, json_holds};
use vmharness::{Vm, shell_quote};

const SSH_WAIT: Duration = Duration::from_secs(600);
const INSTALL_WAIT: Duration = Duration::from_secs(900);
const ROLLBACK_WAIT: Duration = Duration::from_secs(1200);
/// The unit that repairs and cleans up at boot (oneshot, active once it ran).
const BOOT_UNIT: &str = "baleen-update-boot.service";
/// How long the boot-time cleanup gets to remove stale breadcrumbs after a power cut.
const CLEANUP_WAIT: Duration = Duration::from_secs(120);
/// Where the LAN's bundle servers listen, on the LAN's host address: HTTP and HTTPS.
const PORT: u16 = 8080;
const TLS_PORT: u16 = 8443;
/// The dev image's version, and the `next` image's (its bundle's).
const OLD: &str = "0.1.0";
const NEW: &str = "0.2.0";
/// The good bundle's name on the server.
const NEXT_BUNDLE: &str = "next.bundle";
/// The health window of every install, in seconds: it starts with the health service, a few
/// seconds before SSH answers, and nothing a test checks between SSH answering and the commit
/// depends on the update still being on trial (the commit is waited for), so it only has to
/// leave the checks time to run.
const WINDOW: u64 = 20;
/// The health window of the install that is rebooted cleanly during it: it must outlast SSH
/// answering, two commands and the shutdown (about 10 s here, 45 s leaves room for a host
/// four times slower); after the reboot the device waits for all of it again.
const CLEAN_REBOOT_WINDOW: u64 = 45;
const INTERVAL: u64 = 5;
/// A shell condition: no rollback breadcrumb is left.
const NO_BREADCRUMBS: &str = "! ls /mnt/state/rollback-*-breadcrumb >/dev/null 2>&1";
/// Prints the SHA-256 of the running root partition.
const ACTIVE_ROOT_SUM: &str =
    "sha256sum \"$(readlink -f /dev/disk/by-state/active)\" | cut -d' ' -f1";
/// Prints the SHA-256 of the data partition's canary file.
const CANARY_SUM: &str = "sha256sum /mnt/data/canary | cut -d' ' -f1";
const BREADCRUMBS: [&str; 2] = [
    "/mnt/state/rollback-health-breadcrumb",
    "/mnt/state/rollback-altboot-breadcrumb",
];

/// What a refused install must say, per bad bundle: any of these words, case-insensitively.
const REFUSALS: [(Defect, &[&str]); 6] = [
    (Defect::CorruptedPayload, &["sha256", "corrupt", "damaged"]),
    (Defect::BadSignature, &["signature"]),
    (Defect::Unsigned, &["unsigned"]),
    (Defect::WrongDeviceType, &["device type"]),
    (
        Defect::TooLarge,
        &["larger than", "too large", "holds only"],
    ),
    (Defect::Truncated, &["truncated", "ended"]),
];

/// The install's pause points (`BALEEN_UPDATE_PAUSE_AT`), in the order it reaches them.
const PAUSE_POINTS: [&str; 20] = [
    "open",
    "rootfs:10",
    "rootfs:30",
    "rootfs:50",
    "rootfs:70",
    "rootfs:90",
    "rootfs-written",
    "rootfs-synced",
    "verify:50",
    "verified",
    "boot-files:1",
    "boot-files:3",
    "boot-files-unpacked",
    "boot-files-installed",
    "hooks-before",
    "hooks-forward",
    "hooks-after",
    "breadcrumbs",
    "bootenv-staged",
    "committed",
];
/// The one pause point after which the new OS boots.
const COMMIT_POINT: &str = "committed";

// ---------------------------------------------------------------------------------------------
// The rig: LAN, bundle server, VM
// ---------------------------------------------------------------------------------------------

/// A dev VM on its own LAN with a bundle server. Fields drop in order: the VM first, then the
/// server, the LAN and the scratch folder (kept when the test fails).
struct Rig {
    vm: Vm,
    server: BundleServer,
    /// The same files over TLS (no faults).
    https: BundleServer,
    /// The test CA that signed the HTTPS server's certificate, PEM.
    ca_pem: String,
    _lan: Lan,
    _scratch: Scratch,
}

impl Rig {
    /// Serves the next bundle and the `bad` bundles made from it, boots the dev image and
    /// waits for SSH.
    fn start(name: &str, faults: Faults, bad: &[Defect]) -> Rig {
        Rig::start_with_cpus(name, faults, bad, vmharness::default_cpus())
    }

    /// [`Rig::start`] with `cpus` virtual CPUs.
    fn start_with_cpus(name: &str, faults: Faults, bad: &[Defect], cpus: u32) -> Rig {
        systests::require_root("network namespaces, the build's signing key");
        let scratch = Scratch::new(name);
        let www = serve_dir(scratch.path(), bad);
        let lan = Lan::new(name).unwrap();
        let server = BundleServer::start(lan.ns(), lan.host_addr(), PORT, &www, faults).unwrap();
        let certs = generate_certs(lan.host_addr().parse().unwrap()).unwrap();
        let https = BundleServer::start_tls(
            lan.ns(),
            lan.host_addr(),
            TLS_PORT,
            &www,
            Faults::default(),
            &certs,
        )
        .unwrap();
        let mut vm = Vm::builder(name)
            .base_image(systests::test_image("dev"))
            .overlay_size(8 << 30)
            .cpus(cpus)
            .netns(Some(lan.ns()))
            .start()
            .unwrap();
        let up = vm.wait_for_ssh(SSH_WAIT).unwrap();
        println!(
            "{name}: SSH answered {:.1} s after QEMU started",
            up.as_secs_f64()
        );
        assert_eq!(os_version(&vm), OLD, "the dev image's version");
        assert_eq!(running_slot(&vm), Slot::A);
        Rig {
            vm,
            server,
            https,
            ca_pem: certs.ca_pem,
            _lan: lan,
            _scratch: scratch,
        }
    }

    fn url(&self, name: &str) -> String {
        self.server.url(name)
    }

    fn https_url(&self, name: &str) -> String {
        self.https.url(name)
    }

    /// Both servers' log tails.
    fn server_logs(&self) -> String {
        format!("{}\n{}", self.server.log_tail(), self.https.log_tail())
    }

    /// Makes the device trust the test CA the way a user would: config.json's `balenaRootCA`,
    /// edited on the running device; returns once the device's CA bundle holds it.
    fn trust_test_ca(&self) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        self.vm
            .run_ok(&format!(
                "jq --arg ca {} '.balenaRootCA = $ca' /mnt/boot/config.json >/tmp/config.new && \
                 mv /tmp/config.new /mnt/boot/config.json",
                shell_quote(&b64)
            ))
            .unwrap();
        // A line from the middle of the PEM: the certificate's own bytes.
        let lines: Vec<&str> = self.ca_pem.lines().collect();
        let line = lines[lines.len() / 2];
        let took = wait_until(
            &self.vm,
            &format!(
                "grep -qF {} /etc/ssl/certs/ca-certificates.crt",
                shell_quote(line)
            ),
            Duration::from_secs(120),
        );
        println!(
            "{}: balenaRootCA trusted {:.1} s after config.json changed",
            self.vm.name(),
            took.as_secs_f64()
        );
    }

    fn pass(mut self) {
        self.vm.mark_passed();
    }
}

/// `<scratch>/www` holding the next bundle (hard-linked, or copied across filesystems) and
/// the `bad` bundles derived from it.
fn serve_dir(scratch: &Path, bad: &[Defect]) -> PathBuf {
    let www = scratch.join("www");
    fs::create_dir_all(&www).unwrap();
    let good = systests::bundle_path("next");
    let served = www.join(NEXT_BUNDLE);
    if fs::hard_link(&good, &served).is_err() {
        fs::copy(&good, &served).unwrap();
    }
    if !bad.is_empty() {
        let key = bundles::signing_key().unwrap();
        for defect in bad {
            defect.write(&good, &www, &key).unwrap();
        }
    }
    www
}

// ---------------------------------------------------------------------------------------------
// Reading the device
// ---------------------------------------------------------------------------------------------

fn out(vm: &Vm, command: &str) -> String {
    vm.run_ok(command).unwrap().trim().to_string()
}

/// `VERSION_ID` of the running OS.
fn os_version(vm: &Vm) -> String {
    let version = out(vm, ". /etc/os-release && echo \"$VERSION_ID\"");
    let full = out(vm, ". /etc/os-release && echo \"$VERSION\"");
    assert_eq!(version, full, "VERSION and VERSION_ID of /etc/os-release");
    version
}

/// A shell condition: the running OS is `version`.
fn runs_version(version: &str) -> String {
    format!("(. /etc/os-release && test \"$VERSION_ID\" = {version})")
}

/// The slot the running root is in, from `/dev/disk/by-state/active`.
fn running_slot(vm: &Vm) -> Slot {
    let slot = out(
        vm,
        "a=$(readlink -f /dev/disk/by-state/active); \
         for s in A B; do \
           [ \"$a\" = \"$(readlink -f /dev/disk/by-state/resin-root$s)\" ] && echo $s; \
         done; true",
    );
    slot.parse()
        .unwrap_or_else(|_| panic!("/dev/disk/by-state/active is neither root slot: {slot:?}"))
}

fn bootenv_of(vm: &Vm) -> BootEnv {
    let text = vm.run_ok("cat /mnt/boot/bootenv").unwrap();
    let block = bootenv::EnvBlock::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("/mnt/boot/bootenv: {e}\n{text}"));
    BootEnv::from_block(&block).unwrap_or_else(|e| panic!("/mnt/boot/bootenv: {e}\n{text}"))
}

/// The breadcrumbs present.
fn breadcrumbs(vm: &Vm) -> Vec<String> {
    out(
        vm,
        "ls -1 /mnt/state/rollback-*-breadcrumb 2>/dev/null; true",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// `baleen status --json`'s `update` object.
fn update_status(vm: &Vm) -> Value {
    let status: Value = serde_json::from_str(&out(vm, "baleen status --json")).unwrap();
    status["update"].clone()
}

fn slot_state(status: &Value, slot: Slot) -> &str {
    status["slots"][slot.as_str()]["state"]
        .as_str()
        .unwrap_or_else(|| panic!("no slots.{slot}.state in {status}"))
}

/// A shell condition: `baleen update status --json` satisfies the jq `filter`.
fn status_holds(filter: &str) -> String {
    json_holds("baleen update status --json", filter)
}

/// What the device's journal says about updates, for failure messages.
fn update_journal(vm: &Vm) -> String {
    vm.run("journalctl -b --no-pager -u 'baleen-update*' | tail -60")
        .map(|o| o.stdout)
        .unwrap_or_else(|e| format!("(journal unavailable: {e})"))
}

/// Polls `check` (a shell condition on the guest) until it holds, through reboots; returns
/// how long it took.
fn wait_until(vm: &Vm, check: &str, timeout: Duration) -> Duration {
    vm.wait_until(check, timeout)
        .unwrap_or_else(|e| panic!("{e}\n{}", update_journal(vm)))
}

// ---------------------------------------------------------------------------------------------
// Installing
// ---------------------------------------------------------------------------------------------

/// The install command line; `extra` goes before the source.
fn install_cmd(source: &str, window: u64, extra: &str) -> String {
    format!(
        "baleen update install --health-window {window} --health-interval {INTERVAL} {extra} {}",
        shell_quote(source)
    )
}

/// The figures of a finished install.
struct Installed {
    resumes: u64,
    throughput_mibps: Option<f64>,
}

/// Installs the bundle at `source` (from the `running` slot into the other one) with a health
/// window of `window` seconds, and checks its JSON lines; prints the figures.
fn install_from(rig: &Rig, source: &str, running: Slot, window: u64) -> Installed {
    let started = Instant::now();
    let run = rig
        .vm
        .run_timeout(&install_cmd(source, window, "--json"), INSTALL_WAIT)
        .unwrap();
    let wall = started.elapsed();
    assert!(
        run.success(),
        "install from {source} failed: {run:?}\n{}\n{}",
        rig.server_logs(),
        update_journal(&rig.vm)
    );
    let mut phases: Vec<String> = Vec::new();
    let mut done = None;
    for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--json printed a line that is not JSON ({e}): {line}"));
        match event["event"].as_str() {
            Some("progress") => {
                let phase = event["phase"].as_str().unwrap_or_default().to_owned();
                assert!(
                    ["rootfs", "verify", "boot-files", "hooks"].contains(&phase.as_str()),
                    "unknown phase in {line}"
                );
                let (n, total) = (event["done"].as_u64(), event["total"].as_u64());
                assert!(n.is_some() && total.is_some() && n <= total, "{line}");
                if !phases.contains(&phase) {
                    phases.push(phase);
                }
            }
            Some("done") => done = Some(event),
            _ => {}
        }
    }
    let done = done.unwrap_or_else(|| panic!("no \"done\" line:\n{}", run.stdout));
    assert!(phases.iter().any(|p| p == "rootfs"), "phases {phases:?}");
    assert_eq!(done["slot"], running.other().as_str(), "{done}");
    assert_eq!(done["version"], NEW, "{done}");
    let resumes = done["resumes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no resumes in {done}"));
    let throughput_mibps = done["throughputMiBps"].as_f64();
    println!(
        "{}: install {running}→{} from {source}: {:.1} s on the host clock; device: seconds {}, \
         throughput {} MiB/s, resumes {resumes}; progress phases {phases:?}",
        rig.vm.name(),
        running.other(),
        wall.as_secs_f64(),
        done["seconds"],
        done["throughputMiBps"],
    );
    Installed {
        resumes,
        throughput_mibps,
    }
}

/// Installs the next bundle and checks the state it leaves before the reboot.
fn install_and_check_staged(rig: &Rig) -> Installed {
    install_and_check_staged_from(rig, &rig.url(NEXT_BUNDLE))
}

/// [`install_and_check_staged`] from `source`.
fn install_and_check_staged_from(rig: &Rig, source: &str) -> Installed {
    let running = running_slot(&rig.vm);
    let version = os_version(&rig.vm);
    let installed = install_from(rig, source, running, WINDOW);
    check_staged(&rig.vm, running, &version);
    installed
}

/// Copies the next bundle to the data partition and installs it from there on a terminal
/// (`script`): the progress is a bar that rewrites itself, not JSON lines. Checks the state
/// it leaves before the reboot, then removes the copy.
fn install_on_a_tty_from_a_local_file(rig: &Rig) {
    let vm = &rig.vm;
    let running = running_slot(vm);
    let version = os_version(vm);
    let local = "/mnt/data/next.bundle";
    let started = Instant::now();
    vm.copy_to(&systests::bundle_path("next"), local).unwrap();
    println!(
        "{}: bundle copied to {local} in {:.1} s",
        vm.name(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let run = vm
        .run_timeout(
            &format!(
                "script -qec {} /dev/null",
                shell_quote(&install_cmd(local, WINDOW, ""))
            ),
            INSTALL_WAIT,
        )
        .unwrap();
    // The terminal's output, stderr included, comes out on script's stdout.
    let tty = run.stdout.replace("\r\n", "\n");
    assert!(
        run.success(),
        "install from {local} on a terminal failed: {run:?}\n{}",
        update_journal(vm)
    );
    let target = running.other();
    for expected in [
        format!("from {local} into slot {target}"),
        "\r    rootfs [".to_owned(),
        "] 100%".to_owned(),
        "\r    verify [".to_owned(),
        format!("installed in slot {target}"),
    ] {
        assert!(
            tty.contains(&expected),
            "the terminal lacks {expected:?}:\n{tty:?}"
        );
    }
    assert!(
        !tty.contains("{\"event\""),
        "JSON on a terminal without --json:\n{tty}"
    );
    let last = tty
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    println!(
        "{}: install {running}→{target} from {local} on a terminal: {:.1} s; it ended with \
         {last:?}",
        vm.name(),
        started.elapsed().as_secs_f64()
    );
    vm.run_ok(&format!("rm {local}")).unwrap();
    check_staged(vm, running, &version);
}

/// After an install from `running`, before the reboot: breadcrumbs laid, the other slot
/// staged on trial, the running OS unchanged.
fn check_staged(vm: &Vm, running: Slot, version: &str) {
    for crumb in BREADCRUMBS {
        assert!(
            vm.run(&format!("test -e {crumb}")).unwrap().success(),
            "{crumb} missing after the install"
        );
    }
    assert_eq!(
        bootenv_of(vm),
        BootEnv {
            resin_root_part: running.other(),
            upgrade_available: true,
            bootcount: 0,
        },
        "bootenv after the install"
    );
    assert_eq!(running_slot(vm), running);
    assert_eq!(os_version(vm), version);
    let status = update_status(vm);
    assert_eq!(status["activeSlot"], running.as_str(), "{status}");
    assert_eq!(slot_state(&status, running.other()), "pending", "{status}");
    assert_eq!(status["lastUpdate"]["result"], "pending", "{status}");
}

/// Reboots into the staged update; checks the slot and version and prints the downtime.
fn reboot_into_update(vm: &mut Vm, slot: Slot) {
    let downtime = vm.reboot_wait(SSH_WAIT).unwrap();
    println!(
        "{}: downtime {:.1} s (reboot command → SSH answering on slot {slot})",
        vm.name(),
        downtime.as_secs_f64()
    );
    assert_eq!(running_slot(vm), slot, "{}", update_journal(vm));
    assert_eq!(os_version(vm), NEW);
}

/// Waits for the update running in `slot` to be committed at the end of its health window,
/// then checks bootenv, breadcrumbs and the status.
fn wait_committed(vm: &Vm, slot: Slot, window: u64) {
    let took = wait_until(
        vm,
        &format!(
            "{NO_BREADCRUMBS} && grep -aqx upgrade_available=0 /mnt/boot/bootenv && {}",
            status_holds(".lastUpdate.result == \"committed\"")
        ),
        Duration::from_secs(window + 300),
    );
    println!(
        "{}: committed {:.1} s after SSH answered (health window {window} s)",
        vm.name(),
        took.as_secs_f64()
    );
    assert_eq!(
        bootenv_of(vm),
        BootEnv {
            resin_root_part: slot,
            upgrade_available: false,
            bootcount: 0,
        },
        "bootenv after the commit"
    );
    assert_eq!(running_slot(vm), slot);
    let status = update_status(vm);
    assert_eq!(status["activeSlot"], slot.as_str(), "{status}");
    assert_eq!(slot_state(&status, slot), "active", "{status}");
    assert_eq!(slot_state(&status, slot.other()), "good", "{status}");
    assert_eq!(status["lastUpdate"]["result"], "committed", "{status}");
}

/// Install, reboot, commit: the whole happy path from the running slot.
fn update_and_commit(rig: &mut Rig) -> Installed {
    let source = rig.url(NEXT_BUNDLE);
    update_and_commit_from(rig, &source)
}

/// [`update_and_commit`] from `source`.
fn update_and_commit_from(rig: &mut Rig, source: &str) -> Installed {
    let running = running_slot(&rig.vm);
    let installed = install_and_check_staged_from(rig, source);
    reboot_into_update(&mut rig.vm, running.other());
    wait_committed(&rig.vm, running.other(), WINDOW);
    installed
}

/// Prints how fast the device writes `slot`'s partition raw, against the install's rate: the
/// slot's bytes (just installed) are copied to the data partition and written back unchanged.
fn print_raw_write_speed(vm: &Vm, slot: Slot, install_mibps: Option<f64>) {
    let part = format!("/dev/disk/by-state/resin-root{slot}");
    let size: u64 = out(vm, &format!("blockdev --getsize64 {part}"))
        .parse()
        .unwrap();
    let avail: u64 = out(vm, "df --output=avail -B1 /mnt/data | tail -1")
        .parse()
        .unwrap();
    if avail < size + (256 << 20) {
        println!(
            "{}: raw write speed not measured: /mnt/data has {avail} bytes free, the copy of \
             {part} needs {size}",
            vm.name()
        );
        return;
    }
    let copy = timed(
        vm,
        &format!("dd if={part} of=/mnt/data/rootfs.img bs=4M conv=fsync"),
    );
    let write = timed(
        vm,
        &format!("dd if=/mnt/data/rootfs.img of={part} bs=4M conv=fsync"),
    );
    vm.run_ok("rm /mnt/data/rootfs.img").unwrap();
    let mibps = |took: Duration| size as f64 / f64::from(1 << 20) / took.as_secs_f64().max(0.001);
    let raw = mibps(write);
    println!(
        "{}: copy of {part} to /mnt/data: {:.1} MiB/s",
        vm.name(),
        mibps(copy)
    );
    match install_mibps {
        Some(install) => println!(
            "{}: raw write of {part}: {raw:.1} MiB/s; install: {install:.1} MiB/s; \
             install / raw = {:.2}",
            vm.name(),
            install / raw
        ),
        None => println!(
            "{}: raw write of {part}: {raw:.1} MiB/s (the install reported no throughput)",
            vm.name()
        ),
    }
}

/// Runs `command` on the guest, which must succeed; returns how long it took there.
fn timed(vm: &Vm, command: &str) -> Duration {
    let run = vm
        .run_timeout(
            &format!(
                "s=$(date +%s%N); {command} 2>&1 || exit 1; e=$(date +%s%N); \
                 echo \"took $(( (e - s) / 1000 ))\""
            ),
            INSTALL_WAIT,
        )
        .unwrap();
    assert!(run.success(), "{command}: {run:?}");
    let micros = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("took ")?.parse().ok())
        .unwrap_or_else(|| panic!("{command}: no time in {run:?}"));
    Duration::from_micros(micros)
}

// ---------------------------------------------------------------------------------------------
// Rollbacks
// ---------------------------------------------------------------------------------------------

/// Runs `script` in `slot`'s root filesystem, mounted read-write at /tmp/newroot.
fn edit_root(vm: &Vm, slot: Slot, script: &str) {
    vm.run_ok(&format!(
        "set -e; \
         systemctl stop mnt-sysroot-inactive.automount mnt-sysroot-inactive.mount || true; \
         mkdir -p /tmp/newroot; mount /dev/disk/by-state/resin-root{slot} /tmp/newroot; \
         cd /tmp/newroot; {script}; cd /; umount /tmp/newroot"
    ))
    .unwrap();
}

/// Reboots into the staged update and waits until the device, rolled back, runs `OLD` again
/// with `trigger` (a file under /mnt/state) present, breadcrumbs gone and bootenv repaired.
fn reboot_and_wait_for_rollback(vm: &mut Vm, trigger: &str) {
    let before = vm.boot_id().unwrap();
    let started = Instant::now();
    let _ = vm.run_timeout("reboot", Duration::from_secs(60));
    // The next boot that answers SSH (the harness power-cycles a guest that hangs on the way,
    // once), then the rollback's traces.
    vm.wait_for_new_boot(&before, ROLLBACK_WAIT).unwrap();
    let took = wait_until(
        vm,
        &format!(
            "test \"$(cat /proc/sys/kernel/random/boot_id)\" != {before} && {} && \
             test -e /mnt/state/{trigger} && {NO_BREADCRUMBS} && \
             grep -aqx upgrade_available=0 /mnt/boot/bootenv && {}",
            runs_version(OLD),
            status_holds(".lastUpdate.result == \"rolled-back\"")
        ),
        ROLLBACK_WAIT,
    );
    println!(
        "{}: back on {OLD} after the rollback ({trigger}) {:.1} s after the reboot command \
         (last poll {:.1} s)",
        vm.name(),
        started.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    assert_eq!(running_slot(vm), Slot::A);
    assert!(breadcrumbs(vm).is_empty(), "{:?}", breadcrumbs(vm));
}

/// The status after a rollback of `kind`: its reason, printed and returned.
fn check_last_rollback(vm: &Vm, kind: &str) -> String {
    let status = update_status(vm);
    println!("{}: update status after the rollback: {status}", vm.name());
    assert_eq!(status["lastRollback"]["kind"], kind, "{status}");
    assert_eq!(status["activeSlot"], "A", "{status}");
    assert_eq!(slot_state(&status, Slot::A), "active", "{status}");
    assert_eq!(status["lastUpdate"]["result"], "rolled-back", "{status}");
    status["lastRollback"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_to_b_then_b_to_b() {
    // The first download is cut after 60 MB: the install must resume it.
    let faults = Faults {
        drop_after: Some(60_000_000),
        drop_count: Some(1),
    };
    let mut rig = Rig::start("update-ab", faults, &[]);
    let canary = out(
        &rig.vm,
        &format!("head -c 8M /dev/urandom >/mnt/data/canary && sync && {CANARY_SUM}"),
    );
    assert_eq!(
        bootenv_of(&rig.vm),
        BootEnv {
            resin_root_part: Slot::A,
            upgrade_available: false,
            bootcount: 0,
        }
    );
    let status = update_status(&rig.vm);
    println!("update-ab: update status of a fresh device: {status}");
    assert_eq!(status["activeSlot"], "A", "{status}");
    assert_eq!(slot_state(&status, Slot::A), "active", "{status}");
    assert_eq!(status["slots"]["A"]["version"], OLD, "{status}");
    assert!(status["lastUpdate"].is_null(), "{status}");

    // A → B, resuming the cut download.
    let installed = install_and_check_staged(&rig);
    assert!(
        installed.resumes >= 1,
        "the download was cut after 60 MB, yet the install reports {} resumes\n{}",
        installed.resumes,
        rig.server_logs()
    );
    print_raw_write_speed(&rig.vm, Slot::B, installed.throughput_mibps);
    reboot_into_update(&mut rig.vm, Slot::B);
    wait_committed(&rig.vm, Slot::B, WINDOW);
    assert_eq!(
        out(&rig.vm, CANARY_SUM),
        canary,
        "the data partition's canary changed"
    );
    let status = update_status(&rig.vm);
    assert_eq!(status["slots"]["B"]["version"], NEW, "{status}");
    let mut update_cmd: Value =
        serde_json::from_str(&out(&rig.vm, "baleen update status --json")).unwrap();
    // The command's own output may carry its apiVersion; the object is the same.
    if let Some(fields) = update_cmd.as_object_mut() {
        fields.remove("apiVersion");
    }
    assert_eq!(
        update_cmd, status,
        "`baleen update status --json` vs `baleen status --json`.update"
    );

    // B → A: the same release again, into the other slot. A clean reboot during its health
    // window is not a failed boot: the count starts again, so the boot after it is attempt 1
    // again, not 2 (the window is long enough for the reboot to fall inside it).
    install_from(&rig, &rig.url(NEXT_BUNDLE), Slot::B, CLEAN_REBOOT_WINDOW);
    check_staged(&rig.vm, Slot::B, NEW);
    reboot_into_update(&mut rig.vm, Slot::A);
    let on_trial = BootEnv {
        resin_root_part: Slot::A,
        upgrade_available: true,
        bootcount: 1,
    };
    assert_eq!(
        bootenv_of(&rig.vm),
        on_trial,
        "bootenv on the first trial boot"
    );
    let again = rig.vm.reboot_wait(SSH_WAIT).unwrap();
    println!(
        "update-ab: clean reboot during the health window: SSH again after {:.1} s",
        again.as_secs_f64()
    );
    assert_eq!(running_slot(&rig.vm), Slot::A);
    assert_eq!(
        bootenv_of(&rig.vm),
        on_trial,
        "bootenv after a clean reboot during the health window"
    );
    wait_committed(&rig.vm, Slot::A, CLEAN_REBOOT_WINDOW);
    assert_eq!(running_slot(&rig.vm), Slot::A);
    assert_eq!(out(&rig.vm, CANARY_SUM), canary);
    rig.pass();
}

#[test]
fn broken_health_check_rolls_back() {
    let mut rig = Rig::start("update-health", Faults::default(), &[]);
    install_and_check_staged(&rig);
    edit_root(
        &rig.vm,
        Slot::B,
        "mkdir -p usr/lib/baleen/health.d; \
         printf '#!/bin/sh\\necho broken on purpose; exit 1\\n' \
           >usr/lib/baleen/health.d/50-broken; \
         chmod 755 usr/lib/baleen/health.d/50-broken",
    );
    reboot_and_wait_for_rollback(&mut rig.vm, "rollback-health-triggered");
    assert!(
        rig.vm.serial_contains("kexec into slot B"),
        "the update was never booted"
    );
    let env = bootenv_of(&rig.vm);
    assert_eq!(env.resin_root_part, Slot::A, "{env:?}");
    assert!(!env.upgrade_available, "{env:?}");
    let reason = check_last_rollback(&rig.vm, "health");
    assert!(reason.contains("50-broken"), "rollback reason {reason:?}");

    // The next, unbroken install goes through, over HTTPS: refused while the server's CA is
    // unknown to the device, accepted once config.json's balenaRootCA names it.
    let source = rig.https_url(NEXT_BUNDLE);
    let bootenv_sum = out(&rig.vm, "sha256sum /mnt/boot/bootenv");
    let run = rig
        .vm
        .run_timeout(&install_cmd(&source, WINDOW, ""), INSTALL_WAIT)
        .unwrap();
    assert!(
        !run.success(),
        "installed from an untrusted server: {run:?}"
    );
    let said = run.stderr.trim_end();
    for words in ["invalid peer certificate", "balenaRootCA"] {
        assert!(said.contains(words), "the refusal lacks {words:?}:\n{said}");
    }
    println!(
        "update-health: untrusted HTTPS server refused: {}",
        said.lines().last().unwrap_or("")
    );
    assert_eq!(out(&rig.vm, "sha256sum /mnt/boot/bootenv"), bootenv_sum);
    assert!(
        breadcrumbs(&rig.vm).is_empty(),
        "{:?}",
        breadcrumbs(&rig.vm)
    );
    rig.trust_test_ca();
    // Commit by hand, to measure a raw write of the same bytes beside the HTTPS install.
    let running = running_slot(&rig.vm);
    let installed = install_and_check_staged_from(&rig, &source);
    print_raw_write_speed(&rig.vm, running.other(), installed.throughput_mibps);
    reboot_into_update(&mut rig.vm, running.other());
    wait_committed(&rig.vm, running.other(), WINDOW);
    rig.pass();
}

#[test]
fn unbootable_root_falls_back() {
    let mut rig = Rig::start("update-altboot", Faults::default(), &[]);
    install_on_a_tty_from_a_local_file(&rig);
    // Debian's merged /usr: /sbin/init is usr/sbin/init, a link to systemd.
    edit_root(
        &rig.vm,
        Slot::B,
        "rm usr/sbin/init; test ! -e usr/sbin/init",
    );
    reboot_and_wait_for_rollback(&mut rig.vm, "rollback-altboot-triggered");
    assert_eq!(
        bootenv_of(&rig.vm),
        BootEnv {
            resin_root_part: Slot::A,
            upgrade_available: false,
            bootcount: 0,
        },
        "bootenv after the fallback"
    );
    for line in [
        format!(
            "trying the update, boot attempt {0} of {0}",
            bootenv::MAX_ATTEMPTS
        ),
        "falling back to the previous OS".to_owned(),
    ] {
        assert!(
            rig.vm.serial_contains(line.as_str()),
            "serial log lacks {line:?}"
        );
    }
    check_last_rollback(&rig.vm, "altboot");
    rig.pass();
}

#[test]
fn refusals_leave_the_device_untouched() {
    let defects = REFUSALS.map(|(defect, _)| defect);
    let rig = Rig::start("update-refusals", Faults::default(), &defects);
    let bootenv_sum = out(&rig.vm, "sha256sum /mnt/boot/bootenv");
    let root_sum = out(&rig.vm, ACTIVE_ROOT_SUM);
    for (defect, words) in REFUSALS {
        let run = rig
            .vm
            .run_timeout(
                &install_cmd(&rig.url(&defect.file_name()), WINDOW, ""),
                INSTALL_WAIT,
            )
            .unwrap();
        assert!(!run.success(), "{} was installed: {run:?}", defect.name());
        let said = format!("{}\n{}", run.stdout, run.stderr).to_lowercase();
        assert!(
            words.iter().any(|w| said.contains(w)),
            "refusing {} should mention one of {words:?}:\n{said}",
            defect.name()
        );
        println!(
            "update-refusals: {}: refused: {}",
            defect.name(),
            said.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
        );
        assert_eq!(
            out(&rig.vm, "sha256sum /mnt/boot/bootenv"),
            bootenv_sum,
            "bootenv changed by {}",
            defect.name()
        );
        assert!(
            breadcrumbs(&rig.vm).is_empty(),
            "breadcrumbs after {}: {:?}",
            defect.name(),
            breadcrumbs(&rig.vm)
        );
    }
    assert_eq!(
        out(&rig.vm, ACTIVE_ROOT_SUM),
        root_sum,
        "the running root partition changed"
    );
    let status = update_status(&rig.vm);
    println!("update-refusals: update status: {status}");
    assert_eq!(status["activeSlot"], "A", "{status}");
    for slot in [Slot::A, Slot::B] {
        assert_ne!(slot_state(&status, slot), "pending", "{status}");
    }
    rig.pass();
}

/// Sets the flag when the thread panics, so that the other lane stops early.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// Virtual CPUs of each power-cut VM. Two lanes of two-vCPU TCG guests on a two-core host
/// run four vCPU threads on two cores.
const CUT_LANE_CPUS: u32 = 1;

#[test]
fn power_cut_at_every_step() {
    // Two VMs, each on its own LAN, take every other point; then each updates for real.
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for lane in 0..2 {
            let stop = &stop;
            scope.spawn(move || {
                let _guard = StopOnPanic(stop);
                let points: Vec<&str> =
                    PAUSE_POINTS.iter().copied().skip(lane).step_by(2).collect();
                let mut rig = Rig::start_with_cpus(
                    &format!("update-cut{lane}"),
                    Faults::default(),
                    &[],
                    CUT_LANE_CPUS,
                );
                for point in points {
                    if stop.load(Ordering::Relaxed) {
                        panic!("stopped before {point}: the other VM failed");
                    }
                    cut_power_at(&mut rig, point);
                }
                update_and_commit(&mut rig);
                rig.pass();
            });
        }
    });
}

/// Starts an install that pauses at `point`, cuts the power there, boots again and checks
/// that the device is consistent: the old OS unchanged before the commit point, the update on
/// trial (and then committed) after it.
fn cut_power_at(rig: &mut Rig, point: &str) {
    let name = rig.vm.name().to_owned();
    let running = running_slot(&rig.vm);
    let version = os_version(&rig.vm);
    let window = 20;
    let started = Instant::now();
    let pid = out(
        &rig.vm,
        &format!(
            "rm -f /run/baleen/update-paused; \
             BALEEN_UPDATE_PAUSE_AT={} nohup setsid {} >/run/install.log 2>&1 </dev/null & \
             echo $!",
            shell_quote(point),
            install_cmd(&rig.url(NEXT_BUNDLE), window, "")
        ),
    );
    wait_for_pause(rig, point, &pid);
    let paused = started.elapsed();
    rig.vm.power_cut().unwrap();
    rig.vm.restart().unwrap();
    let up = rig.vm.wait_for_ssh(SSH_WAIT).unwrap();
    let vm = &rig.vm;
    if point == COMMIT_POINT {
        assert_eq!(running_slot(vm), running.other(), "{}", update_journal(vm));
        assert_eq!(os_version(vm), NEW);
        wait_committed(vm, running.other(), window);
    } else {
        assert_eq!(
            os_version(vm),
            version,
            "a cut at {point} changed the running OS"
        );
        assert_eq!(running_slot(vm), running, "a cut at {point}");
        // The boot-time cleanup unit removes stale breadcrumbs (and records why).
        wait_until(
            vm,
            &format!("{NO_BREADCRUMBS} && systemctl -q is-active {BOOT_UNIT}"),
            CLEANUP_WAIT,
        );
        let env = bootenv_of(vm);
        assert_eq!(env.resin_root_part, running, "cut at {point}: {env:?}");
        assert!(!env.upgrade_available, "cut at {point}: {env:?}");
    }
    println!(
        "{name}: power cut at {point}: paused {:.1} s after the start, SSH {:.1} s after the \
         restart, consistent {:.1} s after the start",
        paused.as_secs_f64(),
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Waits until the install (process `pid`) says it paused at `point`; fails early when it
/// exits.
fn wait_for_pause(rig: &Rig, point: &str, pid: &str) {
    let vm = &rig.vm;
    let paused = format!("grep -qx {} /run/baleen/update-paused", shell_quote(point));
    let log = || {
        vm.run("cat /run/install.log")
            .map(|o| o.stdout)
            .unwrap_or_default()
    };
    if let Err(e) = vm.wait_until(
        &format!("{paused} 2>/dev/null || ! kill -0 {pid} 2>/dev/null"),
        INSTALL_WAIT,
    ) {
        panic!(
            "the install never paused at {point}: {e}\n{}\n{}",
            log(),
            rig.server_logs()
        );
    }
    assert!(
        vm.run(&paused).is_ok_and(|o| o.success()),
        "the install ended before pausing at {point}:\n{}",
        log()
    );
    // The file comes first, then the message on stderr.
    wait_until(
        vm,
        &format!(
            "grep -qF {} /run/install.log",
            shell_quote(&format!("paused at {point}"))
        ),
        Duration::from_secs(30),
    );
}
