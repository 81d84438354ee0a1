//! A running VM: one QEMU process at a time (restarted after power cuts) over the same disks,
//! with its serial log, QMP session, SSH access and log folder.
//!
//! `start` prepares files and launches QEMU, `console` holds the serial, QMP and power
//! operations, `guest` the SSH ones.

mod console;
mod guest;
mod start;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{Layout, Net, VmConfig};
use crate::error::{Error, Result};
use crate::logdir;
use crate::qmp::Qmp;
use crate::serial::SerialLog;
use crate::ssh::Ssh;

/// Default limit for one command run over SSH.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Serial lines quoted in timeout errors.
const TAIL_LINES: usize = 30;

/// A QEMU virtual machine under test. Dropping it kills QEMU (if still running) and keeps the
/// log folder unless [`Vm::mark_passed`] was called (and `BALEEN_KEEP_LOGS` is unset).
pub struct Vm {
    config: VmConfig,
    log_dir: PathBuf,
    /// The harness made `log_dir` (so it may delete it after a pass).
    own_log_dir: bool,
    layout: Layout,
    ssh: Ssh,
    serial: SerialLog,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
    qmp: Option<Qmp>,
    started_at: Instant,
    /// Number of QEMU starts so far, minus one.
    run: u32,
    /// [`Vm::rescue_boot_hang`] has power-cycled this VM.
    boot_hang_rescued: bool,
    passed: bool,
    socket_dir: Option<PathBuf>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("name", &self.config.name)
            .field("log_dir", &self.log_dir)
            .field("ssh", &self.ssh.target())
            .field("pid", &self.pid())
            .field("run", &self.run)
            .finish()
    }
}

impl Vm {
    /// Starts describing a VM; finish with [`VmConfig::start`].
    pub fn builder(name: &str) -> VmConfig {
        VmConfig::new(name)
    }

    /// Fails with [`Error::QemuExited`] if QEMU is not running.
    fn check_alive(&mut self, doing: &str) -> Result<()> {
        let status = match self.child.as_mut() {
            None => "stopped by the harness".to_owned(),
            Some(c) => match c.try_wait() {
                Ok(None) => return Ok(()),
                Ok(Some(s)) => s.to_string(),
                Err(e) => format!("unknown: {e}"),
            },
        };
        self.reap();
        Err(Error::QemuExited {
            status,
            doing: doing.to_owned(),
            log: self.log_dir.join("qemu.log"),
            qemu_log_tail: self.qemu_log_tail(),
        })
    }

    /// Forgets an exited QEMU: reaps it, finishes the serial reader, drops QMP.
    fn reap(&mut self) {
        self.ssh.stop_master();
        self.qmp = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    fn qemu_log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_dir.join("qemu.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn timeout(&self, what: String, waited: Duration) -> Error {
        Error::Timeout {
            what,
            waited,
            serial_tail: self.serial.tail(TAIL_LINES),
        }
    }

    // ---- identity and state ----

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The folder holding serial.log, qemu.log, qemu.cmdline, overlays and NVRAM.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The boot disk QEMU writes to (the overlay, or the image itself with `persist`).
    pub fn disk_path(&self) -> &Path {
        &self.layout.disk0
    }

    /// How SSH reaches the guest.
    pub fn ssh(&self) -> &Ssh {
        &self.ssh
    }

    /// The forwarded host port on 127.0.0.1 (user networking only).
    pub fn ssh_port(&self) -> Option<u16> {
        match self.layout.net {
            Net::User { ssh_port } => Some(ssh_port),
            Net::Tap { .. } => None,
        }
    }

    /// QEMU's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        self.check_alive("").is_ok()
    }

    /// Time since the current QEMU process started.
    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// Lets `Drop` delete the log folder (unless `BALEEN_KEEP_LOGS` is set or the folder was
    /// given with [`VmConfig::log_dir`]). Call it as the test's last step.
    pub fn mark_passed(&mut self) {
        self.passed = true;
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Err(e) = self.power_cut() {
            tracing::warn!(vm = %self.config.name, error = %e, "could not stop QEMU");
        }
        if let Some(dir) = self.socket_dir.take() {
            let _ = fs::remove_dir_all(dir);
        }
        if self.own_log_dir && logdir::should_delete(self.passed) {
            if let Err(e) = fs::remove_dir_all(&self.log_dir) {
                tracing::warn!(dir = %self.log_dir.display(), error = %e, "could not remove log folder");
            }
        } else {
            tracing::info!(vm = %self.config.name, logs = %self.log_dir.display(), "VM logs kept");
        }
    }
}
