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
use std::path::Path;
use std::time::{Duration, Instant};

const SYSROOT: &str = "/sysroot";

/// The partition device carrying the ext4 filesystem `uuid`.
fn find_partition(uuid: &str) -> Option<std::path::PathBuf> {
    let found = disks::gather(Path::new("/sys/class/block"), Path::new("/dev"));
    disks::holding_ext4_uuid(&found, uuid).map(|(_, part)| part.dev.clone())
}

pub fn boot(log: &Log, config: &StageConfig) -> Result<Infallible> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let uuid = bootstage::cmdline::root_uuid(&cmdline)
        .context("no root=UUID= on the kernel command line")?;
    stage::load_modules(log, &config.module_waves);
    let timeout = Duration::from_secs(bootstage::cmdline::parse(&cmdline).root_timeout_secs);
    let deadline = Instant::now() + timeout;
    let dev = loop {
        if let Some(dev) = find_partition(&uuid) {
            break dev;
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
        "root {} (UUID={uuid}) mounted read-only; starting its init",
        dev.display()
    ));
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
