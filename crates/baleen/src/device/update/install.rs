//! `baleen update install`: a bundle into the inactive root, the new boot
//! files beside the running ones, the hooks, the breadcrumbs, and then the
//! one `bootenv` write that is the commit point.
//!
//! Everything before that write touches only the inactive root partition,
//! the staging directory of its boot files and the update record, so any
//! failure (or power cut) before it leaves the device booting what it ran.

use anyhow::{Context, Result, bail};
use bootenv::{BootEnv, Slot};
use bundle::{BOOT, Bundle, Policy, ROOTFS, TrustedKeys};
use serde_json::json;
use std::fs;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use subprocess::Cmd;
use xxhash_rust::xxh64::xxh64;

use super::bootfiles;
use super::health;
use super::hooks::{self, Phase, Runner};
use super::prefetch::Prefetch;
use super::progress::Progress;
use super::record::{self, Record, SlotState, UpdateRecord, UpdateResult};
use super::slots::{self, Slots};
use super::source::{Source, SourceOptions, SourceSpec};

/// Default health window after the reboot into the new OS.
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Default time between two rounds of health checks.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// Where the new root is mounted (read-only) to run its hooks.
const NEW_ROOT: &str = "run/baleen/update/newroot";
/// Serialises installs.
const LOCK: &str = "run/baleen/update.lock";

#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub source: String,
    pub json: bool,
    pub allow_unsigned: bool,
    pub health_window: Duration,
    pub health_interval: Duration,
    pub no_hooks: bool,
}

/// What an install did, for the final report.
#[derive(Debug)]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
}

/// What the device is, read before anything is written.
struct Device {
    slots: Slots,
    target: Slot,
    target_dev: PathBuf,
    partition_size: u64,
    device_type: String,
    version: String,
    development: bool,
}

impl Device {
    fn probe(root: &Path) -> Result<Device> {
        let slots = Slots::probe(root)?;
        let target = slots.inactive();
        let target_dev = slots.device(target).to_path_buf();
        let partition_size = slots::device_size(&target_dev)?;
        let os_release = root.join("etc/os-release");
        let field = |key: &str| {
            record::os_release_field(&os_release, key)
                .with_context(|| format!("{} has no {key}", os_release.display()))
        };
        let device_type = field("SLUG")?;
        let version = field("VERSION")?;
        let development = record::os_release_field(&os_release, "VARIANT_ID")
            .is_some_and(|v| v == "dev")
            || record::os_release_field(&os_release, "VARIANT")
                .is_some_and(|v| v.eq_ignore_ascii_case("development"));
        Ok(Device {
            slots,
            target,
            target_dev,
            partition_size,
            device_type,
            version,
            development,
        })
    }
}

/// Installs the bundle at `options.source`; returns once the bootenv points at the new root.
pub fn install(root: &Path, options: &InstallOptions) -> Result<Installed> {
    let started = Instant::now();
    let mut progress = Progress::new(root, options.json);
    let _lock = lock(root)?;
    crate::device::bootpart::mount_boot(root)?;
    let stored = slots::read_bootenv(root)?;
    if stored.env.upgrade_available {
        bail!(
            "an update is already pending in slot {} (bootenv upgrade_available=1): reboot into \
             it and let its health window end (commit or rollback) before installing another",
            stored.env.resin_root_part
        );
    }
    let device = Device::probe(root)?;
    if stored.env.resin_root_part != device.slots.active {
        bail!(
            "the bootenv says slot {} but slot {} is running: the last rollback has not been \
             recorded yet (see baleen status); try again after baleen-update-boot.service ran",
            stored.env.resin_root_part,
            device.slots.active
        );
    }
    if options.allow_unsigned && !device.development {
        bail!(
            "--allow-unsigned is accepted on development images only; this image is a production \
             one: sign the bundle with the key the image trusts (baleen bundle create --key …)"
        );
    }

    let keys_dir = root.join(bundle::TRUSTED_KEYS_DIR);
    let trusted = TrustedKeys::load_dir(&keys_dir).with_context(|| {
        format!(
            "loading the trusted update keys from {}",
            keys_dir.display()
        )
    })?;
    let spec = SourceSpec::parse(&options.source);
    let source_options = SourceOptions {
        trust_bundle: root.join("etc/ssl/certs/ca-certificates.crt"),
        ..SourceOptions::default()
    };
    let source = Source::open(&spec, &source_options)?;
    let bundle_bytes = source.stats().total;
    let stats = source.progress();
    let what = source.describe();
    // A download (TLS included) runs on a thread of its own, beside the decompression. A local
    // file is cheap to read: there the handover cost more than it saved (root filesystem 9.0
    // and 9.7 s against 8.2 and 8.9 s, paired in one guest, 2026-11-26).
    let source: Box<dyn Read + Send> = match spec {
        SourceSpec::Url(_) => {
            Box::new(Prefetch::spawn(source).context("starting the thread that reads the bundle")?)
        }
        SourceSpec::File(_) => Box::new(source),
    };
    let mut bundle = Bundle::open(
        BufReader::with_capacity(1 << 20, source),
        &trusted,
        Policy {
            allow_unsigned: options.allow_unsigned,
        },
    )
    .with_context(|| format!("refusing the bundle {what}"))?;
    bundle
        .check_compatible(&device.device_type, &device.version, device.partition_size)
        .with_context(|| format!("refusing the bundle {what}"))?;
    let manifest = bundle.manifest().clone();
    let new_version = manifest.os_version.to_string();
    let boot_size = manifest.require_payload(BOOT)?.size;
    bootfiles::check_space(root, device.slots.active, device.target, boot_size)?;
    progress.event(
        "open",
        json!({"source": what, "version": new_version, "slot": device.target.as_str(),
               "bundleBytes": bundle_bytes, "trust": bundle.trust().to_string()}),
        &format!(
            "installing {} {new_version} from {what} into slot {} ({}); {}",
            manifest.device_type,
            device.target,
            device.target_dev.display(),
            bundle.trust()
        ),
    );
    release_inactive(root, &device.target_dev)?;
    progress.point("open");

    let mut record = Record::load(root);
    record.set_slot(device.slots.active, Some(&device.version), SlotState::Good);
    record.set_slot(device.target, Some(&new_version), SlotState::Writing);
    let health_before = health::Before::probe(root);
    record.last_update = Some(UpdateRecord {
        source: what.clone(),
        from_version: device.version.clone(),
        from_slot: device.slots.active.as_str().to_owned(),
        to_version: new_version.clone(),
        to_slot: device.target.as_str().to_owned(),
        started: record::now(),
        finished: None,
        result: UpdateResult::Installing,
        reason: None,
        health_window_secs: options.health_window.as_secs(),
        health_interval_secs: options.health_interval.as_secs(),
        network_was_up: health_before.network_up,
        engine_was_healthy: health_before.engine_healthy,
    });
    record.save(root)?;

    let result = write_and_switch(
        root,
        options,
        &device,
        &mut bundle,
        &mut progress,
        &health_before,
    );
    let mut record = Record::load(root);
    let finished = record::now();
    match &result {
        Ok(timings) => {
            record.set_slot(device.target, Some(&new_version), SlotState::Installed);
            if let Some(update) = record.last_update.as_mut() {
                update.result = UpdateResult::Pending;
                update.finished = Some(finished);
            }
            record.save(root)?;
            let seconds = started.elapsed().as_secs_f64();
            let rootfs = manifest.require_payload(ROOTFS)?.size;
            let stats = stats.stats();
            let throughput = rootfs as f64 / MIB / timings.rootfs.as_secs_f64().max(1e-3);
            progress.event(
                "done",
                json!({
                    "slot": device.target.as_str(),
                    "version": new_version,
                    "resumes": stats.resumes,
                    "downloadedBytes": stats.bytes,
                    "rootfsBytes": rootfs,
                    "seconds": {
                        "total": round2(seconds),
                        "rootfs": round2(timings.rootfs.as_secs_f64()),
                        "verify": round2(timings.verify.as_secs_f64()),
                        "bootFiles": round2(timings.boot_files.as_secs_f64()),
                        "hooks": round2(timings.hooks.as_secs_f64()),
                    },
                    "throughputMiBps": round2(throughput),
                    "maxRssKiB": max_rss_kib(),
                }),
                &format!(
                    "update to {new_version} installed in slot {} in {seconds:.1} s (root \
                     filesystem {:.1} MiB/s{}); it starts at the next reboot",
                    device.target,
                    throughput,
                    if stats.resumes > 0 {
                        format!(", download resumed {} time(s)", stats.resumes)
                    } else {
                        String::new()
                    }
                ),
            );
            Ok(Installed {
                slot: device.target,
                version: new_version,
            })
        }
        Err(e) => {
            let state = if record
                .slot(device.target)
                .is_some_and(|s| s.state == SlotState::Writing)
            {
                SlotState::Bad
            } else {
                record
                    .slot(device.target)
                    .map_or(SlotState::Bad, |s| s.state)
            };
            record.set_slot(device.target, Some(&new_version), state);
            if let Some(update) = record.last_update.as_mut() {
                update.result = UpdateResult::Failed;
                update.finished = Some(finished);
                update.reason = Some(format!("{e:#}"));
            }
            let _ = record.save(root);
            Err(anyhow::anyhow!("{e:#}"))
        }
    }
}

#[derive(Debug, Default)]
struct Timings {
    rootfs: Duration,
    verify: Duration,
    boot_files: Duration,
    hooks: Duration,
}

/// Every write of the install, in order; the last one is the commit point.
fn write_and_switch<R: Read>(
    root: &Path,
    options: &InstallOptions,
    device: &Device,
    bundle: &mut Bundle<R>,
    progress: &mut Progress,
    before: &health::Before,
) -> Result<Timings> {
    let mut timings = Timings::default();

    // 1. The root filesystem, streamed into the partition.
    let started = Instant::now();
    let mut partition = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::EXCL.bits() as i32)
        .open(&device.target_dev)
        .with_context(|| {
            format!(
                "opening {} ({}) for writing; it must not be mounted",
                device.target_dev.display(),
                slots::label(device.target)
            )
        })?;
    let (info, written) = {
        let payload = bundle
            .next_payload()?
            .context("the bundle has no payloads")?;
        if payload.info().name != ROOTFS {
            bail!(
                "the bundle's first payload is {:?}; baleen writes the {ROOTFS:?} payload first",
                payload.info().name
            );
        }
        let info = payload.info().clone();
        // The compressed SHA-256 (signed through the manifest) and zstd's frame checksum vouch
        // for the decompressed bytes, and the read-back below for what reached the disk: a
        // SHA-256 of the whole uncompressed root filesystem on top would cost more CPU than
        // anything else here.
        let payload = payload.without_uncompressed_sha256();
        // Two threads: this one downloads, decompresses and hashes; the other looks for zero
        // runs, digests and writes. A device with two cores does both at once.
        let partition = &mut partition;
        let (copied, wrote) = std::thread::scope(|scope| {
            let (queue, chunks) = mpsc::sync_channel::<Vec<u8>>(WRITE_QUEUE);
            let worker = scope.spawn(move || -> io::Result<Written> {
                let mut writer = PartitionWriter::new(partition);
                for chunk in chunks {
                    writer.write_all(&chunk)?;
                }
                Ok(writer.written)
            });
            // The closure owns the sender: when the copy ends, it is dropped and the writer's
            // loop ends.
            let copied = payload.copy_chunks(
                move |chunk| {
                    // A send fails once the writer stopped; its error is the one reported.
                    queue.send(chunk).map_err(|_| {
                        io::Error::new(io::ErrorKind::BrokenPipe, "the partition writer stopped")
                    })
                },
                |done, total| progress.bytes("rootfs", done, total),
            );
            (copied, worker.join())
        });
        let wrote = wrote
            .map_err(|_| anyhow::anyhow!("the partition writer thread panicked"))?
            .with_context(|| format!("writing {}", device.target_dev.display()));
        // A write error ends the queue, so the copy fails too: report the write's cause.
        let written = match (copied, wrote) {
            (_, Err(e)) => return Err(e),
            (Err(e), Ok(_)) => return Err(e.into()),
            (Ok(()), Ok(written)) => written,
        };
        (info, written)
    };
    progress.point("rootfs-written");
    partition
        .sync_all()
        .with_context(|| format!("flushing {}", device.target_dev.display()))?;
    progress.point("rootfs-synced");
    timings.rootfs = started.elapsed();

    // 2. Read it back from the disk, not from the page cache: the stream was checked against
    //    the manifest as it was written; this checks the disk holds what was written.
    let started = Instant::now();
    rustix::fs::fadvise(&partition, 0, None, rustix::fs::Advice::DontNeed)
        .with_context(|| format!("dropping cached pages of {}", device.target_dev.display()))?;
    partition.seek(SeekFrom::Start(0))?;
    written
        .verify(&mut partition, |done, total| {
            progress.bytes("verify", done, total)
        })
        .with_context(|| {
            format!(
                "reading back {} after writing it: the partition does not hold what was written \
                 (failing storage?)",
                device.target_dev.display()
            )
        })?;
    if written.total() != info.size {
        bail!(
            "wrote {} bytes of the {ROOTFS} payload but the manifest says {}",
            written.total(),
            info.size
        );
    }
    drop(partition);
    progress.point("verified");
    timings.verify = started.elapsed();

    // 3. The new boot files, staged beside the running ones.
    let started = Instant::now();
    bootfiles::keep_running_set(root, device.slots.active)?;
    {
        let payload = bundle
            .next_payload()?
            .context("the bundle has no boot payload")?;
        if payload.info().name != BOOT {
            bail!(
                "the bundle's second payload is {:?}; expected {BOOT:?}",
                payload.info().name
            );
        }
        bootfiles::stage(root, device.target, payload, progress)?;
    }
    progress.point("boot-files-installed");
    bundle.verify_remaining()?;
    timings.boot_files = started.elapsed();

    // 4. Hooks from the new root.
    let started = Instant::now();
    if !options.no_hooks {
        run_new_hooks(root, &device.target_dev, progress)?;
    }
    timings.hooks = started.elapsed();

    // 5. Breadcrumbs: what the new root's first boots must check.
    let variables = format!(
        "BALENAOS_ROLLBACK_VPNONLINE=0\nBALEEN_NETWORK_WAS_UP={}\nBALEEN_ENGINE_WAS_HEALTHY={}\n",
        u8::from(before.network_up),
        u8::from(before.engine_healthy)
    );
    let crumbs = (|| -> Result<()> {
        record::remove(
            root,
            &[
                record::HEALTH_TRIGGERED,
                record::ALTBOOT_TRIGGERED,
                record::HEALTH_FAILED,
            ],
        )?;
        record::touch(root, record::HEALTH_VARIABLES, &variables)?;
        record::touch(root, record::HEALTH_BREADCRUMB, "")?;
        record::touch(root, record::ALTBOOT_BREADCRUMB, "")?;
        record::sync_state(root)
    })();
    if let Err(e) = crumbs {
        let _ = record::remove(root, &record::BREADCRUMBS);
        return Err(e.context("writing the rollback breadcrumbs"));
    }
    progress.point("breadcrumbs");

    // 6. The commit point.
    let env = BootEnv {
        resin_root_part: device.target,
        upgrade_available: true,
        bootcount: 0,
    };
    if let Err(e) = slots::write_bootenv(root, &env, || progress.point("bootenv-staged")) {
        let _ = record::remove(root, &record::BREADCRUMBS);
        let _ = record::sync_state(root);
        return Err(e.context("switching the bootenv to the new root"));
    }
    progress.point("committed");
    Ok(timings)
}

/// Stops the automount of `/mnt/sysroot/inactive` (it comes back at the next boot), so the
/// inactive root can be written or mounted elsewhere.
pub(super) fn stop_inactive_automount() {
    let _ = Cmd::new("systemctl")
        .package("systemd")
        .args([
            "stop",
            "mnt-sysroot-inactive.automount",
            "mnt-sysroot-inactive.mount",
        ])
        .run();
}

/// Makes sure nothing holds the inactive root: the automount of
/// `/mnt/sysroot/inactive` is stopped (it comes back at the next boot).
fn release_inactive(root: &Path, dev: &Path) -> Result<()> {
    stop_inactive_automount();
    let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
    let dev_text = dev.to_string_lossy();
    if let Some(line) = mountinfo.lines().find(|l| {
        l.split(" - ")
            .nth(1)
            .and_then(|t| t.split_whitespace().nth(1))
            == Some(&dev_text)
    }) {
        let target = line.split_whitespace().nth(4).unwrap_or("?");
        bail!(
            "the inactive root {} is mounted at {target}: unmount it (umount {target}) and try again",
            dev.display()
        );
    }
    Ok(())
}

/// Runs the new root's `before`, `forward` and `after` hooks with `DURING_UPDATE=1`; on a
/// failure, the running root's hooks with `DURING_UPDATE=0` put back what the new ones did.
fn run_new_hooks(root: &Path, target_dev: &Path, progress: &mut Progress) -> Result<()> {
    let new_root = root.join(NEW_ROOT);
    fs::create_dir_all(&new_root)?;
    let mounted = Mounts::new_root(target_dev, &new_root)?;
    let hooks_dir = new_root.join(hooks::HOOKS_DIR);
    let result = (|| -> Result<()> {
        let outside = Runner {
            dir: hooks_dir.clone(),
            ..Runner::new(None, true)
        };
        outside.run(Phase::Before)?;
        progress.point("hooks-before");
        let inside = Runner::new(Some(new_root.clone()), true);
        inside.run(Phase::Forward)?;
        progress.point("hooks-forward");
        outside.run(Phase::After)?;
        progress.point("hooks-after");
        Ok(())
    })();
    drop(mounted);
    if let Err(e) = result {
        let recover = Runner {
            dir: root.join(hooks::HOOKS_DIR),
            ..Runner::new(None, false)
        };
        if let Err(again) = recover.run(Phase::Forward) {
            tracing::error!("the running root's hooks (DURING_UPDATE=0) failed too: {again:#}");
        }
        return Err(e.context("the new root's update hooks failed; nothing was switched"));
    }
    Ok(())
}

/// The new root mounted read-only with the device's pseudo filesystems and
/// partitions bound inside, unmounted (recursively) on drop.
pub(super) struct Mounts {
    target: PathBuf,
}

impl Mounts {
    pub(super) fn new_root(dev: &Path, target: &Path) -> Result<Mounts> {
        let mount = |args: &[&str]| -> Result<()> {
            Cmd::new("mount").package("mount").args(args).run()?;
            Ok(())
        };
        let t = target.to_string_lossy().into_owned();
        mount(&["-o", "ro", &dev.to_string_lossy(), &t])?;
        let guard = Mounts {
            target: target.to_path_buf(),
        };
        // Private, so nothing mounted below propagates back into /run (where it sits).
        mount(&["--make-private", &t])?;
        mount(&["-t", "proc", "proc", &format!("{t}/proc")])?;
        // Plain binds, not recursive: unmounting never meets the host's busy cgroup mounts.
        for dir in [
            "/dev",
            "/sys",
            "/run",
            "/mnt/boot",
            "/mnt/state",
            "/mnt/data",
        ] {
            let inside = format!("{t}{dir}");
            if Path::new(&inside).is_dir() && Path::new(dir).is_dir() {
                mount(&["--bind", dir, &inside])?;
            }
        }
        mount(&["-t", "tmpfs", "tmpfs", &format!("{t}/tmp")])?;
        Ok(guard)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        let result = Cmd::new("umount")
            .package("mount")
            .args(["-R"])
            .arg(&self.target)
            .run();
        if let Err(e) = result {
            tracing::warn!("unmounting {}: {e}", self.target.display());
            let _ = Cmd::new("umount")
                .package("mount")
                .args(["-R", "-l"])
                .arg(&self.target)
                .run();
        }
    }
}

/// An exclusive lock on `/run/baleen/update.lock`, held while the install runs.
fn lock(root: &Path) -> Result<fs::File> {
    let path = root.join(LOCK);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| {
            anyhow::anyhow!(
                "another baleen update is running (it holds {}); wait for it to finish",
                path.display()
            )
        },
    )?;
    Ok(file)
}

/// Chunks in flight between the decompressing thread and the writing one (1 MiB each).
const WRITE_QUEUE: usize = 4;

/// Writes the partition sequentially; a whole run of zero bytes is zeroed
/// with `fallocate(ZERO_RANGE)` instead (the device zeroes it, often without
/// transferring the bytes; the read-back still checks every byte).
struct PartitionWriter<'a> {
    file: &'a mut fs::File,
    pos: u64,
    written: Written,
}

impl<'a> PartitionWriter<'a> {
    fn new(file: &'a mut fs::File) -> Self {
        PartitionWriter {
            file,
            pos: 0,
            written: Written::default(),
        }
    }
}

/// What was written, chunk by chunk: a run of zeros, or the bytes' XXH64 digest. Reading the
/// partition back against it checks every byte at the speed of the disk, not of SHA-256.
///
/// XXH64 rather than XXH3: both run at several GiB/s on a device's CPU, far above its storage,
/// but XXH3 leans on SIMD, which QEMU's emulation (TCG) runs instruction by instruction: per
/// 1 MiB chunk under `qemu-x86_64 -cpu max`, XXH3 hashed 0.5 GiB/s and XXH64 2.8 GiB/s (natively
/// 6.6 and 6.0 GiB/s). The digests never leave the install.
#[derive(Debug, Default)]
struct Written {
    chunks: Vec<(u64, Option<u64>)>,
}

impl Written {
    fn push(&mut self, bytes: &[u8], zero: bool) {
        let digest = (!zero).then(|| xxh64(bytes, 0));
        self.chunks.push((bytes.len() as u64, digest));
    }

    fn total(&self) -> u64 {
        self.chunks.iter().map(|(len, _)| len).sum()
    }

    /// Reads the chunks back from `from` (positioned at the start) and compares.
    fn verify(&self, from: &mut impl Read, mut progress: impl FnMut(u64, u64)) -> Result<()> {
        let total = self.total();
        let mut buf = Vec::new();
        let mut done = 0u64;
        for &(len, digest) in &self.chunks {
            buf.resize(len as usize, 0);
            from.read_exact(&mut buf)
                .with_context(|| format!("reading {len} bytes at offset {done}"))?;
            let same = match digest {
                None => diskimage::is_zero(&buf),
                Some(d) => xxh64(&buf, 0) == d,
            };
            if !same {
                bail!("the {len} bytes at offset {done} differ from what was written");
            }
            done += len;
            progress(done, total);
        }
        Ok(())
    }
}

const ZERO_ALIGN: u64 = 4096;

impl Write for PartitionWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        let aligned = self.pos % ZERO_ALIGN == 0 && len % ZERO_ALIGN == 0 && len > 0;
        if aligned && diskimage::is_zero(buf) {
            let zeroed = rustix::fs::fallocate(
                &*self.file,
                rustix::fs::FallocateFlags::ZERO_RANGE | rustix::fs::FallocateFlags::KEEP_SIZE,
                self.pos,
                len,
            );
            if zeroed.is_ok() {
                self.written.push(buf, true);
                self.pos += len;
                self.file.seek(SeekFrom::Start(self.pos))?;
                return Ok(buf.len());
            }
        }
        let n = self.file.write(buf)?;
        self.written.push(&buf[..n], false);
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Peak resident memory of this process (VmHWM), KiB.
fn max_rss_kib() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_catches_any_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partition");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        let zeros = vec![0u8; 8192];
        let written = {
            let mut writer = PartitionWriter::new(&mut file);
            writer.write_all(&data).unwrap();
            writer.write_all(&zeros).unwrap();
            writer.write_all(&data[..100]).unwrap();
            writer.written
        };
        assert_eq!(written.total(), (data.len() + zeros.len() + 100) as u64);
        file.seek(SeekFrom::Start(0)).unwrap();
        written.verify(&mut file, |_, _| ()).unwrap();
        // One byte changed in the zero run, then in the data.
        for offset in [data.len() as u64 + 17, 5] {
            let mut copy = fs::read(&path).unwrap();
            copy[offset as usize] ^= 1;
            let err = written
                .verify(&mut io::Cursor::new(copy), |_, _| ())
                .unwrap_err();
            assert!(format!("{err:#}").contains("differ"), "{err:#}");
        }
        // A partition shorter than what was written.
        let short = fs::read(&path).unwrap()[..4096].to_vec();
        assert!(
            written
                .verify(&mut io::Cursor::new(short), |_, _| ())
                .is_err()
        );
    }
}
