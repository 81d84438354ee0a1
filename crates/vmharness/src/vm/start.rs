//! Preparing a VM's files and launching its QEMU process.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{TAIL_LINES, Vm};
use crate::cmd;
use crate::config::{Layout, Net, VmConfig, qemu_argv};
use crate::error::{Error, Result};
use crate::logdir;
use crate::overlay::{self, DiskFormat};
use crate::qmp::Qmp;
use crate::scaled;
use crate::serial::SerialLog;
use crate::ssh::{GUEST_SSH_PORT, Ssh};

/// How long QEMU gets to open its QMP socket after being spawned.
const QMP_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts at starting QEMU when an automatically picked SSH port was taken meanwhile.
const PORT_ATTEMPTS: u32 = 5;

static SOCKET_DIRS: AtomicU32 = AtomicU32::new(0);

impl VmConfig {
    /// Prepares the log folder, overlays and NVRAM copy, then starts QEMU and connects QMP.
    pub fn start(self) -> Result<Vm> {
        self.validate()?;
        let (log_dir, own_log_dir) = match &self.log_dir {
            Some(d) => {
                fs::create_dir_all(d).map_err(|e| Error::io_path("creating", d, e))?;
                let abs = std::path::absolute(d).map_err(|e| Error::io_path("resolving", d, e))?;
                (abs, false)
            }
            None => (
                logdir::create_unique(&logdir::log_root(), &self.name)?,
                true,
            ),
        };
        let (disk0, disk0_format) = prepare_disks(&self, &log_dir)?;
        let extra = self
            .extra_disks
            .iter()
            .enumerate()
            .map(|(i, (path, format))| {
                let ov = log_dir.join(format!("disk{}.qcow2", i + 1));
                overlay::create_overlay(path, *format, &ov, None).map(|_| ov)
            })
            .collect::<Result<Vec<_>>>()?;
        let vars = log_dir.join("OVMF_VARS.fd");
        fs::copy(&self.ovmf_vars, &vars).map_err(|e| {
            Error::io(
                format!("copying {} to {}", self.ovmf_vars.display(), vars.display()),
                e,
            )
        })?;
        let (qmp, socket_dir) = qmp_socket_path(&log_dir)?;
        let auto_port = self.ssh_port.is_none() && self.netns.is_none();
        let (net, ssh) = match &self.netns {
            Some(ns) => (
                Net::Tap {
                    netns: ns.name().to_owned(),
                    ifname: ns.add_tap()?,
                },
                Ssh::new(&self.guest_addr, GUEST_SSH_PORT).in_netns(Some(ns.name().to_owned())),
            ),
            None => {
                let port = match self.ssh_port {
                    Some(p) => p,
                    None => free_port()?,
                };
                (Net::User { ssh_port: port }, Ssh::new("127.0.0.1", port))
            }
        };
        let ssh = shared(ssh.with_key(self.ssh_key.clone()));
        let mut vm = Vm {
            config: self,
            log_dir,
            own_log_dir,
            layout: Layout {
                disk0,
                disk0_format,
                extra,
                vars,
                qmp,
                net,
            },
            ssh,
            serial: SerialLog::new(),
            child: None,
            reader: None,
            qmp: None,
            started_at: Instant::now(),
            run: 0,
            boot_hang_rescued: false,
            passed: false,
            socket_dir,
        };
        let mut attempt = 1;
        loop {
            match vm.launch() {
                Ok(()) => break,
                Err(e @ Error::QemuExited { .. })
                    if auto_port
                        && attempt < PORT_ATTEMPTS
                        && vm
                            .qemu_log_tail()
                            .contains("Could not set up host forwarding") =>
                {
                    tracing::warn!(error = %e, "SSH port taken, retrying with another");
                    let port = free_port()?;
                    vm.layout.net = Net::User { ssh_port: port };
                    vm.ssh =
                        shared(Ssh::new("127.0.0.1", port).with_key(vm.config.ssh_key.clone()));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(vm)
    }
}

/// The boot disk: the image itself (persist) or a fresh overlay on it.
fn prepare_disks(cfg: &VmConfig, log_dir: &Path) -> Result<(PathBuf, DiskFormat)> {
    let (path, format) = cfg.disk.clone().expect("validated: disk is set");
    if cfg.persist {
        let abs = fs::canonicalize(&path).map_err(|e| Error::io_path("resolving", &path, e))?;
        Ok((abs, format))
    } else {
        let ov = log_dir.join("disk0.qcow2");
        overlay::create_overlay(&path, format, &ov, cfg.overlay_size)?;
        Ok((ov, DiskFormat::Qcow2))
    }
}

/// `<log dir>/qmp.sock`, or a short temporary folder when that path would exceed the 108-byte
/// limit of unix socket addresses.
fn qmp_socket_path(log_dir: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    let abs = std::path::absolute(log_dir).map_err(|e| Error::io_path("resolving", log_dir, e))?;
    let sock = abs.join("qmp.sock");
    if sock.as_os_str().len() < 100 {
        return Ok((sock, None));
    }
    let dir = std::env::temp_dir().join(format!(
        "baleen-qmp-{}-{}",
        std::process::id(),
        SOCKET_DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).map_err(|e| Error::io_path("creating", &dir, e))?;
    Ok((dir.join("qmp.sock"), Some(dir)))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("picking a free port on 127.0.0.1", e))
}

impl Vm {
    /// Spawns QEMU on the prepared files and connects QMP.
    pub(super) fn launch(&mut self) -> Result<()> {
        if self.layout.qmp.exists() {
            fs::remove_file(&self.layout.qmp)
                .map_err(|e| Error::io_path("removing stale socket", &self.layout.qmp, e))?;
        }
        let argv = qemu_argv(&self.config, &self.layout);
        // QEMU ends with whoever started it, even when that is killed and never drops the
        // `Vm` (a test binary hit by a signal, `baleen run` ended with `kill`): util-linux's
        // setpriv sets the parent-death signal and execs the rest.
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "TERM", "--"]).args(&argv);
        let desc = cmd::describe(&command);
        let qemu_log = self.log_dir.join("qemu.log");
        // A reused log folder starts over on the first run; restarts append.
        let mut stderr = File::options()
            .create(true)
            .write(true)
            .append(self.run > 0)
            .truncate(self.run == 0)
            .open(&qemu_log)
            .map_err(|e| Error::io_path("opening", &qemu_log, e))?;
        writeln!(stderr, "---- QEMU run #{}: {desc} ----", self.run)
            .map_err(|e| Error::io_path("writing", &qemu_log, e))?;
        let cmdline = self.log_dir.join("qemu.cmdline");
        fs::write(&cmdline, format!("{desc}\n"))
            .map_err(|e| Error::io_path("writing", &cmdline, e))?;
        let stdin = if self.config.console {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        command.stdin(stdin).stdout(Stdio::piped()).stderr(stderr);
        tracing::info!(vm = %self.config.name, run = self.run, command = %desc, "starting QEMU");
        self.started_at = Instant::now();
        let mut child = command
            .spawn()
            .map_err(|e| Error::io(format!("starting `{desc}`"), e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        self.child = Some(child);
        self.reader = Some(self.serial.attach(
            stdout,
            self.run,
            self.started_at,
            &self.log_dir.join("serial.log"),
            self.config.console,
        )?);

        let deadline = Instant::now() + scaled(QMP_TIMEOUT);
        loop {
            self.check_alive("waiting for the QMP socket")?;
            match Qmp::connect(&self.layout.qmp) {
                Ok(q) => {
                    self.qmp = Some(q);
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        what: format!("QMP socket {} ({e})", self.layout.qmp.display()),
                        waited: scaled(QMP_TIMEOUT),
                        serial_tail: self.serial.tail(TAIL_LINES),
                    });
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// `ssh`, sharing one connection among commands unless `$BALEEN_SSH_MUX` is `0`.
fn shared(ssh: Ssh) -> Ssh {
    if crate::ssh_mux() {
        ssh.multiplexed()
    } else {
        ssh
    }
}
