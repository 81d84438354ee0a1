//! The VM's serial console, QMP session and power: what a test does from the outside.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Vm;
use crate::error::{Error, Result};
use crate::qmp::Qmp;
use crate::scaled;
use crate::serial::{Pattern, SerialLine, SerialMark, WaitOutcome};

impl Vm {
    /// Waits for a serial line of the current QEMU run matching `pattern` (a `&str` substring or
    /// a `regex::Regex`). The unfinished last line counts too, so prompts match.
    pub fn wait_for_serial(
        &mut self,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<SerialLine> {
        let mark = self.serial.run_mark();
        self.wait_for_serial_after(mark, pattern, timeout)
    }

    /// Like [`Vm::wait_for_serial`], only considering lines after `mark`.
    pub fn wait_for_serial_after(
        &mut self,
        mark: SerialMark,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<SerialLine> {
        let pattern = pattern.into();
        let timeout = scaled(timeout);
        match self.serial.wait_for(mark, &pattern, timeout) {
            WaitOutcome::Found(line) => Ok(line),
            WaitOutcome::TimedOut => Err(self.timeout(format!("serial output {pattern}"), timeout)),
            WaitOutcome::Closed => {
                // Stdout closes just before the exit can be reaped; give it a moment.
                let doing = format!("waiting for serial output {pattern}");
                for _ in 0..50 {
                    self.check_alive(&doing)?;
                    thread::sleep(Duration::from_millis(100));
                }
                // stdout closed but the process lives: report like a timeout.
                Err(self.timeout(format!("serial output {pattern} (serial closed)"), timeout))
            }
        }
    }

    /// The current end of the serial log, for [`Vm::wait_for_serial_after`].
    pub fn serial_mark(&self) -> SerialMark {
        self.serial.mark()
    }

    /// All complete serial lines so far, across QEMU runs.
    pub fn serial_lines(&self) -> Vec<SerialLine> {
        self.serial.lines()
    }

    /// True if any serial line so far matches.
    pub fn serial_contains(&self, pattern: impl Into<Pattern>) -> bool {
        self.serial.contains(&pattern.into())
    }

    // ---- QMP ----

    /// The QMP session of the running QEMU.
    pub fn qmp(&mut self) -> Result<&mut Qmp> {
        self.check_alive("using QMP")?;
        self.qmp
            .as_mut()
            .ok_or_else(|| Error::QmpProtocol("no QMP session".into()))
    }

    /// Runs a QMP command.
    pub fn qmp_execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        self.qmp()?.execute(command, arguments)
    }

    /// `query-status` (`running`, `paused`, `prelaunch`, …).
    pub fn status(&mut self) -> Result<String> {
        self.qmp()?.query_status()
    }

    /// Hard reset (the reset button): the guest reboots without shutting down.
    pub fn reset(&mut self) -> Result<()> {
        self.ssh.stop_master();
        self.qmp_execute("system_reset", None).map(drop)
    }

    /// ACPI power button: asks the guest to shut down.
    pub fn system_powerdown(&mut self) -> Result<()> {
        self.ssh.stop_master();
        self.qmp_execute("system_powerdown", None).map(drop)
    }

    /// Saves the display as PNG at `path`; if this QEMU cannot write PNG, as PPM next to it
    /// (extension `.ppm`). Returns the file written.
    pub fn screendump(&mut self, path: &Path) -> Result<PathBuf> {
        let abs = std::path::absolute(path).map_err(|e| Error::io_path("resolving", path, e))?;
        let png = self.qmp_execute(
            "screendump",
            Some(json!({ "filename": abs.to_string_lossy(), "format": "png" })),
        );
        match png {
            Ok(_) => Ok(abs),
            Err(Error::Qmp { .. }) => {
                let ppm = abs.with_extension("ppm");
                self.qmp_execute(
                    "screendump",
                    Some(json!({ "filename": ppm.to_string_lossy() })),
                )?;
                Ok(ppm)
            }
            Err(e) => Err(e),
        }
    }

    // ---- power ----

    /// Pulls the plug: kills QEMU at once (SIGKILL, nothing flushed beyond what the guest had
    /// flushed). The disks stay; [`Vm::restart`] boots them again.
    pub fn power_cut(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            tracing::info!(vm = %self.config.name, pid = c.id(), "power cut");
            if matches!(c.try_wait(), Ok(None)) {
                c.kill()
                    .map_err(|e| Error::io(format!("killing QEMU (pid {})", c.id()), e))?;
            }
        }
        self.reap();
        Ok(())
    }

    /// Starts QEMU again on the same disks and NVRAM after a power cut or shutdown.
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            return Err(Error::Config(
                "QEMU is still running: call power_cut() or shutdown() before restart()".into(),
            ));
        }
        self.run += 1;
        self.launch()
    }

    /// Power-cycles a guest that hangs between the firmware and the kernel, or in a kernel's
    /// first seconds, once per VM.
    ///
    /// Under TCG (`-cpu max`, two vCPUs) a boot now and then stops right after OVMF's
    /// `BdsDxe: starting Boot…` and never prints a kernel line: nothing of ours has run and
    /// the disk is untouched. Once (CI of 2026-11-26) a kexec'd root kernel stopped the same
    /// way 1.2 s into its start (`[    1.159679] IP idents hash table entries…`, then
    /// nothing): early kernel start-up prints without pause, so silence there is a hang too.
    /// After [`BOOT_HANG`] (scaled) of silence at either place, the harness says so on
    /// stderr and in `qemu.log`, and starts QEMU again on the same disks. A second such hang
    /// is left to the caller's timeout.
    pub(crate) fn rescue_boot_hang(&mut self) -> Result<()> {
        if self.boot_hang_rescued {
            return Ok(());
        }
        let last = self.serial.last_of_run();
        let elapsed = self.started_at.elapsed();
        let Some(line) = last.filter(|l| hung_early_in_boot(l, elapsed, scaled(BOOT_HANG))) else {
            return Ok(());
        };
        let note = format!(
            "vmharness: {}: no output for {:.0} s after `{}` (QEMU run #{}): the guest hangs \
             before its kernel or early in its kernel's start; power-cycling it once",
            self.config.name,
            (elapsed - line.at).as_secs_f64(),
            line.text.trim(),
            self.run
        );
        eprintln!("{note}");
        tracing::warn!("{note}");
        let qemu_log = self.log_dir.join("qemu.log");
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&qemu_log) {
            use std::io::Write;
            let _ = writeln!(f, "{note}");
        }
        self.boot_hang_rescued = true;
        self.power_cycle()
    }

    /// [`Vm::power_cut`] then [`Vm::restart`].
    pub fn power_cycle(&mut self) -> Result<()> {
        self.power_cut()?;
        self.restart()
    }

    /// Graceful stop: ACPI power button, wait up to `timeout` for QEMU to exit, else kill it.
    /// Returns true if the guest powered off by itself.
    pub fn shutdown(&mut self, timeout: Duration) -> Result<bool> {
        if !self.is_running() {
            return Ok(true);
        }
        let timeout = scaled(timeout);
        if let Err(e) = self.system_powerdown() {
            tracing::warn!(vm = %self.config.name, error = %e, "system_powerdown failed");
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return Ok(true);
            }
            thread::sleep(Duration::from_millis(200));
        }
        tracing::warn!(vm = %self.config.name, "guest did not power off in {timeout:?}; killing QEMU");
        self.power_cut()?;
        Ok(false)
    }

    /// Shuts down (up to 120 s, then kill) and releases the VM; on the happy path prefer this
    /// over dropping.
    pub fn close(mut self) -> Result<()> {
        self.shutdown(Duration::from_secs(120)).map(drop)
    }
}

/// Silence after OVMF's `BdsDxe: starting`, or after an early kernel message, that
/// [`Vm::rescue_boot_hang`] takes for a hang (before scaling). The boot stage's first line
/// normally follows `BdsDxe` in 5–30 s, and an early kernel message the next in well under 1 s.
pub(crate) const BOOT_HANG: Duration = Duration::from_secs(180);

/// A kernel message stamped before this many seconds is from the kernel's early start-up,
/// which prints without pause until user space starts.
const EARLY_KERNEL_SECS: f64 = 10.0;

/// Whether `last`, the last line of a QEMU run that has been going for `elapsed`, is OVMF
/// starting a boot option, or a kernel message of its first [`EARLY_KERNEL_SECS`], followed
/// by at least `limit` of silence. Pure.
fn hung_early_in_boot(last: &SerialLine, elapsed: Duration, limit: Duration) -> bool {
    (last.text.contains("BdsDxe: starting") || early_kernel_line(&last.text))
        && elapsed.saturating_sub(last.at) >= limit
}

/// Whether `text` is a kernel message (`[    1.159679] …`) stamped before
/// [`EARLY_KERNEL_SECS`]. Pure.
fn early_kernel_line(text: &str) -> bool {
    let Some(rest) = text.trim_start().strip_prefix('[') else {
        return false;
    };
    let Some((stamp, _)) = rest.split_once(']') else {
        return false;
    };
    stamp
        .trim()
        .parse::<f64>()
        .is_ok_and(|secs| secs < EARLY_KERNEL_SECS)
}

#[cfg(test)]
mod boot_hang_tests {
    use super::*;

    fn line(text: &str, at: u64) -> SerialLine {
        SerialLine {
            run: 0,
            at: Duration::from_secs(at),
            text: text.to_owned(),
        }
    }

    #[test]
    fn only_silence_after_bdsdxe_starting_or_early_kernel_lines_is_a_hang() {
        let limit = Duration::from_secs(180);
        let bds = line(
            "BdsDxe: starting Boot0001 \"UEFI Misc Device\" from PciRoot(0x0)",
            4,
        );
        assert!(hung_early_in_boot(&bds, Duration::from_secs(184), limit));
        assert!(hung_early_in_boot(&bds, Duration::from_secs(600), limit));
        assert!(!hung_early_in_boot(&bds, Duration::from_secs(183), limit));
        // A kernel stopped in its early start-up (seen after a kexec): the same.
        let early = line("[    1.159679] IP idents hash table entries: 16384", 244);
        assert!(hung_early_in_boot(&early, Duration::from_secs(424), limit));
        assert!(!hung_early_in_boot(&early, Duration::from_secs(423), limit));
        let banner = line("[    0.000000] Linux version 6.1.0-27-amd64", 16);
        assert!(hung_early_in_boot(&banner, Duration::from_secs(600), limit));
        // Later kernel messages can be followed by silence (a reboot, a guest left idle).
        let late = line("[   33.282719] reboot: machine restart", 125);
        assert!(!hung_early_in_boot(&late, Duration::from_secs(900), limit));
        // A guest that stopped printing later on (e.g. at a login prompt) is not this.
        let login = line("balena login: ", 40);
        assert!(!hung_early_in_boot(&login, Duration::from_secs(900), limit));
        let stage = line("baleen-boot: [    2.80] started, baleen 0.1.0", 10);
        assert!(!hung_early_in_boot(&stage, Duration::from_secs(900), limit));
        for text in ["[", "[ x.5] y", "[   1.0 no bracket", "  [   12.5] late"] {
            assert!(!early_kernel_line(text), "{text:?}");
        }
    }
}
