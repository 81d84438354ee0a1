//! Role [`bootstage::Role::Root`]: the initramfs of a root's own kernel after
//! the boot stage kexec'd it. The boot stage already chose, checked and
//! counted; all that is left is to mount the root named by `root=UUID=`
//! read-only and hand over to its init, as a classic switch_root does.

use crate::log::Log;
use crate::stage;
use crate::sys;
use anyhow::{Context, Result, bail};
use bootstage::StageConfig;
use bootstage::disks;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SYSROOT: &str = "/sysroot";

/// The partition carrying the ext4 filesystem `uuid`, and its disk's other partitions the
/// root's initramfs mounts (never ones on another disk).
struct Found {
    root: PathBuf,
    state: Option<PathBuf>,
    boot: Option<PathBuf>,
}

fn find_partition(uuid: &str) -> Option<Found> {
    let found = disks::gather(Path::new("/sys/class/block"), Path::new("/dev"));
    disks::holding_ext4_uuid(&found, uuid).map(|(disk, part)| {
        let dev = |label| disk.partition(label).map(|p| p.dev.clone());
        Found {
            root: part.dev.clone(),
            state: dev(layout::label::STATE),
            boot: dev(layout::label::BOOT),
        }
    })
}

pub fn boot(log: &Log, config: &StageConfig) -> Result<Infallible> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let uuid = bootstage::cmdline::root_uuid(&cmdline)
        .context("no root=UUID= on the kernel command line")?;
    stage::load_modules(log, &config.module_waves);
    let timeout = Duration::from_secs(bootstage::cmdline::parse(&cmdline).root_timeout_secs);
    let deadline = Instant::now() + timeout;
    let Found {
        root: dev,
        state,
        boot,
    } = loop {
        if let Some(found) = find_partition(&uuid) {
            break found;
        }
        if Instant::now() > deadline {
            bail!(
                "no partition with filesystem UUID {uuid} appeared within {} s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::create_dir_all(SYSROOT)?;
    sys::mount(
        &dev.to_string_lossy(),
        Path::new(SYSROOT),
        "ext4",
        libc::MS_RDONLY,
        "",
    )
    .with_context(|| format!("mounting {} read-only", dev.display()))?;
    log.info(format!(
        "root {} (UUID={uuid}) mounted read-only",
        dev.display()
    ));
    // Without its state the device still boots (volatile /etc paths): say
    // why and go on rather than stop a device that can still be reached.
    match state {
        Some(state) => {
            if let Err(e) = mount_state(log, &state) {
                log.info(format!(
                    "state partition {}: {e:#}; booting without it",
                    state.display()
                ));
            }
        }
        None => log.info(format!(
            "the root's disk has no {} partition; booting without state",
            layout::label::STATE
        )),
    }
    // Mounted here rather than by systemd: `/mnt/boot` holds config.json, which SSH access,
    // the hostname and the network all wait for, and systemd would mount it only once udev
    // has found the partition, seconds later. Without it the root's fstab entry still
    // mounts it then.
    match boot {
        Some(boot) => match mount_boot(&boot) {
            Ok(()) => log.info(format!(
                "{} mounted at {}",
                boot.display(),
                layout::BOOT_MOUNT
            )),
            Err(e) => log.info(format!(
                "{} ({}): {e:#}; systemd mounts it later",
                layout::BOOT_MOUNT,
                boot.display()
            )),
        },
        None => log.info(format!(
            "the root's disk has no {} partition",
            layout::label::BOOT
        )),
    }
    log.info("starting the root's init");
    Err(switch_root(Path::new(SYSROOT)))
}

/// Moves the pseudo filesystems into `new_root`, makes it `/` and executes its
/// init. Returns only on failure.
fn switch_root(new_root: &Path) -> anyhow::Error {
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        let target = new_root.join(dir.trim_start_matches('/'));
        if let Err(e) = sys::mount(dir, &target, "", libc::MS_MOVE, "") {
            return anyhow::Error::new(e).context(format!("moving {dir} into the root"));
        }
    }
    // The initramfs stays in memory only as long as something refers to it:
    // free what we put there (a few MB) before leaving.
    for dir in ["/usr", "/etc", "/bin", "/init"] {
        let _ = std::fs::remove_dir_all(dir).or_else(|_| std::fs::remove_file(dir));
    }
    if let Err(e) = std::env::set_current_dir(new_root) {
        return anyhow::Error::new(e).context("entering the root");
    }
    if let Err(e) = sys::mount(".", Path::new("/"), "", libc::MS_MOVE, "") {
        return anyhow::Error::new(e).context("moving the root to /");
    }
    if let Err(e) = std::os::unix::fs::chroot(".") {
        return anyhow::Error::new(e).context("entering the root with chroot");
    }
    let _ = std::env::set_current_dir("/");
    let err =
        std::os::unix::process::CommandExt::exec(&mut std::process::Command::new("/sbin/init"));
    anyhow::Error::new(err).context("executing /sbin/init of the root")
}

/// Mounts `resin-boot` at `/mnt/boot` of the root, with the options `/etc/fstab` names.
fn mount_boot(dev: &Path) -> Result<()> {
    let target = Path::new(SYSROOT).join(layout::BOOT_MOUNT.trim_start_matches('/'));
    sys::mount(
        &dev.to_string_lossy(),
        &target,
        "vfat",
        libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        layout::BOOT_FAT_OPTIONS,
    )
    .context("mounting it")
}

/// Mounts the state partition at `/mnt/state` of the root, resets it when its
/// flag is missing, and binds the machine id and the state-backed paths.
fn mount_state(log: &Log, dev: &Path) -> Result<()> {
    let sysroot = Path::new(SYSROOT);
    let target = sysroot.join(layout::STATE_MOUNT.trim_start_matches('/'));
    sys::mount(
        &dev.to_string_lossy(),
        &target,
        "ext4",
        libc::MS_NOATIME | libc::MS_NOSUID | libc::MS_NODEV,
        "",
    )
    .with_context(|| format!("mounting it at {}", layout::STATE_MOUNT))?;
    let prepared = bootstage::state::prepare(&target, sysroot)
        .with_context(|| format!("preparing {}", layout::STATE_MOUNT))?;
    if prepared.reset {
        sys::sync();
        bootstage::state::finish_reset(&target).context("writing the reset flag")?;
        log.info(format!(
            "state: {} was missing: {}/{} wiped and re-seeded from the root",
            layout::RESET_FLAG,
            layout::STATE_MOUNT,
            layout::ROOT_OVERLAY
        ));
    }
    if prepared.new_machine_id {
        log.info("state: new machine id");
    }
    for why in &prepared.skipped {
        log.info(format!("state: {why}"));
    }
    let mut bound = 0;
    for (source, target) in &prepared.binds {
        match sys::mount(&source.to_string_lossy(), target, "", libc::MS_BIND, "") {
            Ok(()) => bound += 1,
            Err(e) => log.info(format!(
                "state: binding {} over {}: {e}",
                source.display(),
                target.display()
            )),
        }
    }
    log.info(format!(
        "state: {} mounted, {bound} paths bound",
        dev.display()
    ));
    Ok(())
}
