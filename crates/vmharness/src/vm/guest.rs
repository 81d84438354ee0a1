//! Talking to the guest over SSH: waits, commands, copies, reboots.

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use super::{DEFAULT_COMMAND_TIMEOUT, Vm};
use crate::cmd::Output;
use crate::error::Result;
use crate::scaled;

/// Whether sshd's identification line (`SSH-2.0-…`) arrives on 127.0.0.1:`port` within a second.
fn banner_seen(port: u16) -> bool {
    use std::io::Read;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 4];
    stream.read_exact(&mut buf).is_ok() && &buf == b"SSH-"
}

/// How often [`Vm::wait_until`] evaluates its condition on the guest.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// The most evaluations in one SSH session of [`Vm::wait_until`] (a minute of polling).
const POLLS_PER_SESSION: u64 = 30;

/// A guest shell loop: exit 0 as soon as `check` holds, 3 after `polls` failed evaluations.
/// Pure.
fn poll_script(check: &str, polls: u64) -> String {
    let every = POLL_EVERY.as_secs();
    format!(
        "i=0; until ( {check} ) >/dev/null 2>&1; do i=$((i+1)); \
         [ \"$i\" -lt {polls} ] || exit 3; sleep {every}; done"
    )
}

impl Vm {
    /// Waits until SSH answers; returns the time since the current QEMU start.
    pub fn wait_for_ssh(&mut self, timeout: Duration) -> Result<Duration> {
        // A shared connection from before is to a guest that is gone or going.
        self.ssh.stop_master();
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive(&format!("waiting for SSH on {}", self.ssh.target()))?;
            self.rescue_boot_hang()?;
            // With user networking QEMU accepts the forwarded connection
            // before the guest can answer, and an ssh attempt then hangs for
            // its whole timeout: wait for sshd's banner first, in short steps,
            // so the time measured is when the guest answered.
            if let Some(port) = self.ssh_port() {
                if !banner_seen(port) {
                    if Instant::now() >= deadline {
                        return Err(self
                            .timeout(format!("SSH on 127.0.0.1:{port} (no banner yet)"), timeout));
                    }
                    thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
            let connect = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_secs(1), Duration::from_secs(10));
            let err = match self.ssh.probe(connect) {
                Ok(()) => {
                    let up = self.started_at.elapsed();
                    tracing::info!(vm = %self.config.name, ?up, "SSH is up");
                    return Ok(up);
                }
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(
                    format!("SSH on {} (last attempt: {err})", self.ssh.target()),
                    timeout,
                ));
            }
            thread::sleep(Duration::from_secs(2).min(deadline - now));
        }
    }

    /// Waits until the shell condition `check` holds on the guest (exit status 0; its output is
    /// discarded); returns how long that took.
    ///
    /// The guest evaluates `check` every [`POLL_EVERY`], up to [`POLLS_PER_SESSION`] times in
    /// one SSH session, rather than one login per poll: under emulation a login costs the
    /// guest seconds of CPU, taken from the very work being waited for. A session that ends
    /// early (the guest rebooted, SSH is not up yet) is retried until `timeout` (scaled).
    pub fn wait_until(&self, check: &str, timeout: Duration) -> Result<Duration> {
        let timeout = scaled(timeout);
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let polls = (left.as_secs() / POLL_EVERY.as_secs()).clamp(1, POLLS_PER_SESSION);
            let script = poll_script(check, polls);
            let limit = POLL_EVERY * polls as u32 + Duration::from_secs(60);
            if self.ssh.run(&script, limit).is_ok_and(|o| o.success()) {
                return Ok(started.elapsed());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(format!("`{check}` to hold on the guest"), timeout));
            }
            thread::sleep(Duration::from_secs(1).min(deadline - now));
        }
    }

    /// Runs a shell command on the guest (limit [`DEFAULT_COMMAND_TIMEOUT`]).
    pub fn run(&self, command: &str) -> Result<Output> {
        self.ssh.run(command, scaled(DEFAULT_COMMAND_TIMEOUT))
    }

    /// Runs a shell command on the guest with its own time limit.
    pub fn run_timeout(&self, command: &str, timeout: Duration) -> Result<Output> {
        self.ssh.run(command, scaled(timeout))
    }

    /// Runs a shell command and returns stdout; a non-zero exit is an error carrying stderr.
    pub fn run_ok(&self, command: &str) -> Result<String> {
        self.ssh.run_ok(command, scaled(DEFAULT_COMMAND_TIMEOUT))
    }

    /// Copies a local file to the guest.
    pub fn copy_to(&self, local: &Path, remote: &str) -> Result<()> {
        self.ssh
            .copy_to(local, remote, scaled(DEFAULT_COMMAND_TIMEOUT))
    }

    /// Writes `contents` to a file on the guest.
    pub fn write_file(&self, remote: &str, contents: &[u8]) -> Result<()> {
        self.ssh
            .write(remote, contents, scaled(DEFAULT_COMMAND_TIMEOUT))
    }

    /// Copies a file from the guest.
    pub fn copy_from(&self, remote: &str, local: &Path) -> Result<()> {
        self.ssh
            .copy_from(remote, local, scaled(DEFAULT_COMMAND_TIMEOUT))
    }

    /// The guest kernel's boot ID (changes on every boot).
    pub fn boot_id(&self) -> Result<String> {
        self.run_ok("cat /proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
    }

    /// Reboots the guest over SSH and waits until SSH answers from a new boot (checked by boot
    /// ID). Returns the time from the reboot command to SSH answering again.
    pub fn reboot_wait(&mut self, timeout: Duration) -> Result<Duration> {
        let before = self.boot_id()?;
        let t0 = Instant::now();
        // The connection may drop before `reboot` returns; its outcome says nothing.
        let _ = self.ssh.run("reboot", Duration::from_secs(60));
        self.wait_for_new_boot(&before, timeout)?;
        let took = t0.elapsed();
        tracing::info!(vm = %self.config.name, ?took, "rebooted");
        Ok(took)
    }

    /// Waits until SSH answers from a boot other than `before` (a [`Vm::boot_id`]), for a
    /// reboot the guest was asked for some other way than [`Vm::reboot_wait`]. Returns how long
    /// it waited.
    pub fn wait_for_new_boot(&mut self, before: &str, timeout: Duration) -> Result<Duration> {
        // The shared connection is to the old boot: a reset guest never closes it.
        self.ssh.stop_master();
        let t0 = Instant::now();
        let timeout = scaled(timeout);
        let deadline = t0 + timeout;
        loop {
            self.check_alive("waiting for the guest to reboot")?;
            self.rescue_boot_hang()?;
            // As in `wait_for_ssh`: no ssh attempt (which would hang) before sshd's banner.
            if let Some(port) = self.ssh_port() {
                if !banner_seen(port) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(250));
                    continue;
                }
            }
            let last = match self.ssh.run(
                "cat /proc/sys/kernel/random/boot_id",
                Duration::from_secs(60),
            ) {
                Ok(o) if !o.success() => format!("`cat boot_id` failed: {}", o.stderr.trim()),
                Ok(o) if o.stdout.trim() != before => return Ok(t0.elapsed()),
                Ok(_) => "SSH still answers from the old boot".to_owned(),
                Err(e) => e.to_string(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timeout(
                    format!(
                        "SSH on {} after reboot (boot_id was {before}; last attempt: {last})",
                        self.ssh.target()
                    ),
                    timeout,
                ));
            }
            thread::sleep(Duration::from_secs(1).min(deadline - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poll_loop_runs_in_sh_until_the_check_holds_or_the_polls_run_out() {
        let run = |check: &str, polls: u64| {
            std::process::Command::new("sh")
                .args([
                    "-c",
                    &poll_script(check, polls).replace("sleep 2", "sleep 0"),
                ])
                .status()
                .unwrap()
                .code()
        };
        assert_eq!(run("true", 3), Some(0));
        assert_eq!(run("false", 3), Some(3));
        assert_eq!(run("echo noise; exit 1", 2), Some(3));
        // Holds on the third evaluation.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        let check = format!("echo x >>{0}; test $(wc -l <{0}) -ge 3", f.display());
        assert_eq!(run(&check, 5), Some(0));
        assert_eq!(run(&check, 1), Some(0));
    }
}
