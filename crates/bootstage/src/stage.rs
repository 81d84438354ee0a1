//! The boot stage's flow, step by step. Each step logs to the console.

use crate::firstboot;
use crate::log::Log;
use crate::sys;
use anyhow::{Context, Result, bail};
use bootenv::{BootEnv, Decision, EnvBlock, Slot};
use bootstage::disks::{self, BOOT_LABEL, Disk};
use bootstage::{StageConfig, cmdline, efi};
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const SYSROOT: &str = "/sysroot";
const EFIVARS: &str = "/sys/firmware/efi/efivars";
const BOOTENV: &str = "bootenv";

pub fn read_config() -> Result<StageConfig> {
    let text = std::fs::read_to_string(bootstage::CONFIG_PATH)
        .with_context(|| format!("reading {}", bootstage::CONFIG_PATH))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", bootstage::CONFIG_PATH))
}

/// The pseudo filesystems PID 1 mounts, with the flags and options systemd
/// expects to find when they are handed over to the root (`/run` must not be
/// world-writable: sshd's StrictModes refuses keys below such a directory).
pub const EARLY_MOUNTS: [(&str, &str, libc::c_ulong, &str); 4] = [
    (
        "proc",
        "/proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    (
        "sysfs",
        "/sys",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    ),
    ("devtmpfs", "/dev", libc::MS_NOSUID, "mode=0755"),
    (
        "tmpfs",
        "/run",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=0755",
    ),
];

/// Mounts the pseudo filesystems PID 1 needs.
pub fn early_mounts() -> Result<()> {
    for (fstype, target, flags, data) in EARLY_MOUNTS {
        std::fs::create_dir_all(target)?;
        match sys::mount(fstype, Path::new(target), fstype, flags, data) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            r => r.with_context(|| format!("mounting {fstype} on {target}"))?,
        }
    }
    Ok(())
}

pub fn boot(log: &Log, config: &StageConfig) -> Result<Infallible> {
    let own_cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let params = cmdline::parse(&own_cmdline);

    // Modules load on their own thread while the disk is searched for (the
    // search waits for the disk to appear anyway); mounting needs them all.
    std::thread::scope(|scope| {
        let modules = scope.spawn(|| load_modules(log, &config.module_waves));
        mount_efivars(&modules);
        let disk = wait_for_boot_disk(log, Duration::from_secs(params.root_timeout_secs))?;
        if modules.join().is_err() {
            log.info("the module loader thread panicked");
        }
        boot_from(log, config, disk)
    })
}

fn boot_from(log: &Log, config: &StageConfig, disk: Disk) -> Result<Infallible> {
    let boot_dev = disk
        .partition(BOOT_LABEL)
        .map(|p| p.dev.clone())
        .context("boot partition vanished")?;
    let mut env = read_bootenv(log, &boot_dev);
    let mut decision = bootenv::decide(&env);

    firstboot::regenerate_uuids(log, &disk);

    let mut first_attempt = true;
    loop {
        let Decision {
            slot,
            reason,
            persist,
        } = decision;
        log.info(format!("bootenv: {reason}; booting slot {slot}"));
        if let Some(new_env) = &persist {
            write_bootenv(&boot_dev, new_env).context("persisting the boot count in bootenv")?;
            log.info(format!(
                "bootenv: persisted bootcount={}",
                new_env.bootcount
            ));
            env = *new_env;
        }
        let root_label = slot_label(slot);
        firstboot::check_filesystems(log, &disk, [root_label]);
        // Staging the root's kernel takes the kernel a while (reading, signature
        // check); the other filesystems are checked and grown meanwhile.
        let staged = std::thread::scope(|scope| {
            let staging = scope.spawn(|| prepare_root(log, &disk, slot, &config.root_cmdline));
            if first_attempt {
                let started = Instant::now();
                firstboot::check_filesystems(
                    log,
                    &disk,
                    firstboot::ALL_LABELS
                        .into_iter()
                        .filter(|l| *l != root_label),
                );
                if let Err(e) = firstboot::expand_data(log, &disk) {
                    log.info(format!(
                        "growing resin-data failed (will retry next boot): {e:#}"
                    ));
                }
                log.info(format!(
                    "other filesystems checked in {} ms",
                    started.elapsed().as_millis()
                ));
            }
            staging
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread staging slot {slot} panicked")))
        });
        first_attempt = false;
        match staged {
            Ok(kexec) => return Err(kexec.execute(log, slot)),
            Err(e) => {
                log.info(format!("slot {slot} cannot be booted: {e:#}"));
                let _ = sys::umount(Path::new(SYSROOT));
                decision = bootenv::slot_unbootable(&env, slot).context("no bootable root")?;
            }
        }
    }
}

fn slot_label(slot: Slot) -> &'static str {
    match slot {
        Slot::A => "resin-rootA",
        Slot::B => "resin-rootB",
    }
}

pub fn load_modules(log: &Log, waves: &[Vec<String>]) {
    let started = Instant::now();
    let mut loaded = 0;
    for wave in waves {
        let results: Vec<(&String, std::io::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = wave
                .iter()
                .map(|path| {
                    (
                        path,
                        scope.spawn(move || File::open(path).and_then(|f| sys::finit_module(&f))),
                    )
                })
                .collect();
            handles
                .into_iter()
                .map(|(p, h)| {
                    (
                        p,
                        h.join().unwrap_or_else(|_| {
                            Err(std::io::Error::other("loader thread panicked"))
                        }),
                    )
                })
                .collect()
        });
        for (path, result) in results {
            match result {
                Ok(()) => loaded += 1,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => log.info(format!("loading module {path}: {e}")),
            }
        }
    }
    log.info(format!(
        "loaded {loaded} kernel modules in {} ms",
        started.elapsed().as_millis()
    ));
}

/// Mounts efivarfs once its module is in, so the firmware's evidence about the
/// boot disk can be read; gives up when the loader is done and it still fails.
fn mount_efivars(modules: &std::thread::ScopedJoinHandle<'_, ()>) {
    if !Path::new("/sys/firmware/efi").exists() {
        return;
    }
    loop {
        let done = modules.is_finished();
        match sys::mount(
            "efivarfs",
            Path::new(EFIVARS),
            "efivarfs",
            libc::MS_NOSUID | libc::MS_RDONLY,
            "",
        ) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return,
            Err(_) if done => return,
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn wait_for_boot_disk(log: &Log, timeout: Duration) -> Result<Disk> {
    let deadline = Instant::now() + timeout;
    let efivars = Path::new(EFIVARS);
    let loader = efi::loader_device_part_uuid(efivars);
    let firmware_path = efi::boot_current_pci_path(efivars);
    loop {
        let found = disks::gather(Path::new("/sys/class/block"), Path::new("/dev"));
        match disks::select(&found, loader.as_deref(), firmware_path.as_deref()) {
            Ok((disk, evidence)) if has_all_partitions(disk) => {
                let others: Vec<&str> = found
                    .iter()
                    .filter(|d| d.name != disk.name)
                    .map(|d| d.name.as_str())
                    .collect();
                log.info(format!(
                    "boot disk {} ({evidence:?}; loader partition {}; other disks: {})",
                    disk.dev.display(),
                    loader.as_deref().unwrap_or("unknown"),
                    if others.is_empty() {
                        "none".to_string()
                    } else {
                        others.join(", ")
                    }
                ));
                return Ok(disk.clone());
            }
            Ok(_) if Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok((disk, _)) => bail!(
                "boot disk {} lacks the balenaOS partitions (resin-rootA, resin-rootB)",
                disk.dev.display()
            ),
            Err(e) => bail!(
                "{e} within {} s (add roottimeout=<seconds> to wait longer)",
                timeout.as_secs()
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn has_all_partitions(disk: &Disk) -> bool {
    ["resin-rootA", "resin-rootB"]
        .iter()
        .all(|l| disk.partition(l).is_some_and(|p| p.dev.exists()))
}

/// The boot partition's FAT filesystem, opened on the partition device.
fn open_boot_fs(boot_dev: &Path) -> Result<fatfs::FileSystem<File>> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(boot_dev)
        .with_context(|| format!("opening {}", boot_dev.display()))?;
    fatfs::FileSystem::new(dev, fatfs::FsOptions::new())
        .with_context(|| format!("reading the FAT filesystem on {}", boot_dev.display()))
}

/// Reads bootenv; a missing or corrupt file is reported and read as the
/// default (slot A, no update pending) without touching it.
fn read_bootenv(log: &Log, boot_dev: &Path) -> BootEnv {
    let read = || -> Result<BootEnv> {
        let fs = open_boot_fs(boot_dev)?;
        let mut bytes = Vec::new();
        fs.root_dir()
            .open_file(BOOTENV)
            .context("opening bootenv")?
            .read_to_end(&mut bytes)?;
        let block = EnvBlock::parse(&bytes)?;
        Ok(BootEnv::from_block(&block)?)
    };
    match read() {
        Ok(env) => env,
        Err(e) => {
            log.info(format!("bootenv unreadable, booting slot A: {e:#}"));
            BootEnv::default()
        }
    }
}

/// Rewrites bootenv in place, keeping keys the boot stage does not manage.
fn write_bootenv(boot_dev: &Path, env: &BootEnv) -> Result<()> {
    {
        let fs = open_boot_fs(boot_dev)?;
        let mut file = fs
            .root_dir()
            .open_file(BOOTENV)
            .context("opening bootenv")?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut block = EnvBlock::parse(&bytes)?;
        env.apply_to(&mut block);
        let out = block.to_bytes()?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&out)?;
        file.truncate()?;
        file.flush()?;
        drop(file);
        fs.unmount().context("flushing the boot filesystem")?;
    }
    File::open(boot_dev)?.sync_all()?;
    Ok(())
}

/// A root mounted and its kernel staged, ready to jump.
struct Kexec {
    cmdline: String,
}

impl Kexec {
    /// Jumps into the staged kernel; returns only if that failed.
    fn execute(self, log: &Log, slot: Slot) -> anyhow::Error {
        let _ = sys::umount(Path::new(SYSROOT));
        sys::sync();
        log.info(format!(
            "kexec into slot {slot}: {} (boot stage work {} ms)",
            self.cmdline,
            log.elapsed_ms()
        ));
        anyhow::Error::new(sys::reboot_kexec()).context("jumping into the staged kernel")
    }
}

fn prepare_root(log: &Log, disk: &Disk, slot: Slot, root_cmdline: &str) -> Result<Kexec> {
    let label = slot_label(slot);
    let part = disk
        .partition(label)
        .with_context(|| format!("{label} not found on {}", disk.dev.display()))?;
    let uuid = firstboot::ext4_uuid(&part.dev)?;
    std::fs::create_dir_all(SYSROOT)?;
    sys::mount(
        &part.dev.to_string_lossy(),
        Path::new(SYSROOT),
        "ext4",
        libc::MS_RDONLY,
        "",
    )
    .with_context(|| format!("mounting {} ({label}) read-only", part.dev.display()))?;
    let kernel = bootstage::resolve_in_root(Path::new(SYSROOT), bootstage::ROOT_KERNEL)?;
    let initrd = bootstage::resolve_in_root(Path::new(SYSROOT), bootstage::ROOT_INITRD)
        .or_else(|_| bootstage::resolve_in_root(Path::new(SYSROOT), bootstage::ROOT_DEBIAN_INITRD))
        .ok();
    let cmdline = cmdline::for_root(root_cmdline, &uuid, &[]);
    let kernel_file =
        File::open(&kernel).with_context(|| format!("opening {}", kernel.display()))?;
    let initrd_file = initrd.as_ref().map(File::open).transpose()?;
    let started = Instant::now();
    sys::kexec_file_load(&kernel_file, initrd_file.as_ref(), &cmdline)
        .with_context(|| format!("loading {} with kexec_file_load", kernel.display()))?;
    log.info(format!(
        "slot {slot}: staged {} in {} ms",
        kernel.display(),
        started.elapsed().as_millis()
    ));
    Ok(Kexec { cmdline })
}
