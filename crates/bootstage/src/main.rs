//! `baleen-boot`: PID 1 of the initramfs in the unified kernel image.

mod firstboot;
mod log;
mod rootmode;
mod stage;
mod sys;

use log::Log;
use std::time::Duration;

/// How long a failed development boot offers its shell before rebooting.
const SHELL_OFFER: Duration = Duration::from_secs(30);

fn main() {
    let log = Log::new();
    if std::process::id() != 1 {
        eprintln!(
            "baleen-boot runs as PID 1 of baleen's initramfs; it is not a command to run by hand"
        );
        std::process::exit(2);
    }
    if let Err(e) = stage::early_mounts() {
        log.info(format!("mounting /proc, /sys, /dev, /run failed: {e:#}"));
    }
    let config = stage::read_config();
    let version = config.as_ref().map_or("unknown", |c| c.os_version.as_str());
    log.info(format!("started, baleen {version}"));
    let development = config.as_ref().is_ok_and(|c| c.development);
    let result = config.and_then(|config| {
        if development
            && bootstage::cmdline::parse(
                &std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
            )
            .shell
        {
            shell(&log);
        }
        match config.role {
            bootstage::Role::Stage => stage::boot(&log, &config),
            bootstage::Role::Root => rootmode::boot(&log, &config),
        }
    });
    let Err(e) = result;
    {
        log.info(format!("FAILED: {e:#}"));
        if development {
            // Unattended, the device must reboot: an update on trial falls back to the old
            // root only after its boot attempts are used up.
            log.info(format!(
                "development image: press Enter within {} s for a shell on the console \
                 (exit it to reboot); rebooting otherwise",
                SHELL_OFFER.as_secs()
            ));
            if sys::console_input_within(SHELL_OFFER) {
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                shell(&log);
            }
        } else {
            log.info("rebooting in 10 s");
            std::thread::sleep(Duration::from_secs(10));
        }
        sys::sync();
        let err = sys::reboot_restart();
        log.info(format!("reboot failed: {err}"));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Runs the initramfs's busybox shell on the console (development images only).
fn shell(log: &Log) {
    match std::process::Command::new("/bin/sh")
        .env("PS1", "baleen-boot# ")
        .status()
    {
        Ok(_) => {}
        Err(e) => log.info(format!("no shell available: {e}")),
    }
}
