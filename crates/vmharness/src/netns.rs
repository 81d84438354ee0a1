//! Network namespaces for tests that bring their own servers (NTP, HTTPS, registry, DNS): a
//! bridge with the host-side address, tap devices for VMs, and processes spawned inside.
//!
//! Layout inside namespace `baleen-<name>-<pid>-<n>`: `lo` up, bridge `br0` holding the host
//! address (default `10.0.2.2/24`, the gateway address QEMU user networking uses too, so guests
//! see the same network in both modes), and one `tapN` per VM enslaved to `br0`.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::cmd::{self, Output};
use crate::error::{Error, Result};

const IP_TIMEOUT: Duration = Duration::from_secs(60);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by this process; deleted when the last handle drops.
#[derive(Clone, Debug)]
pub struct NetNs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    host_cidr: String,
    next_tap: AtomicU32,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = cmd::run_checked(
            Command::new("ip").args(["netns", "del", &self.name]),
            IP_TIMEOUT,
        ) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete network namespace");
        }
    }
}

impl NetNs {
    /// Creates a namespace with bridge `br0` at `10.0.2.2/24`. Needs root.
    pub fn create(name: &str) -> Result<NetNs> {
        NetNs::create_with_addr(name, "10.0.2.2/24")
    }

    /// Creates a namespace whose bridge has the host address `cidr` (e.g. `192.168.7.1/24`).
    pub fn create_with_addr(name: &str, cidr: &str) -> Result<NetNs> {
        remove_stale();
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let ns_name = format!(
            "baleen-{safe}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &ns_name])?;
        // From here on, dropping `ns` deletes the namespace, also when a later step fails.
        let ns = NetNs {
            inner: Arc::new(Inner {
                name: ns_name,
                host_cidr: cidr.to_owned(),
                next_tap: AtomicU32::new(0),
            }),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["addr", "add", cidr, "dev", "br0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        tracing::info!(netns = %ns.name(), %cidr, "created network namespace");
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The bridge's address without prefix length (where the test's servers listen).
    pub fn host_addr(&self) -> &str {
        self.inner
            .host_cidr
            .split('/')
            .next()
            .unwrap_or(&self.inner.host_cidr)
    }

    /// Creates the next tap device (`tap0`, `tap1`, …) on the bridge and returns its name.
    pub fn add_tap(&self) -> Result<String> {
        let tap = format!("tap{}", self.inner.next_tap.fetch_add(1, Ordering::Relaxed));
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", "br0"])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs it:
    /// the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name()]).arg(program);
        c
    }

    /// Runs `argv` inside the namespace to completion; fails on a non-zero exit.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Config("empty argv for netns exec".into()))?;
        cmd::run_checked(self.command(program).args(args), IP_TIMEOUT)
    }

    /// Starts a long-running process (a test server) inside the namespace, output discarded.
    pub fn spawn(&self, argv: &[&str]) -> Result<NsProcess> {
        self.spawn_inner(argv, None)
    }

    /// Like [`NetNs::spawn`], appending the process's stdout and stderr to `log`.
    pub fn spawn_logged(&self, argv: &[&str], log: &Path) -> Result<NsProcess> {
        self.spawn_inner(argv, Some(log))
    }

    fn spawn_inner(&self, argv: &[&str], log: Option<&Path>) -> Result<NsProcess> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| Error::Config("empty argv for netns spawn".into()))?;
        let mut c = self.command(program);
        c.args(args).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io_path("opening", path, e))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| Error::io_path("duplicating handle of", path, e))?;
                c.stdout(f).stderr(f2);
            }
            None => {
                c.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let desc = cmd::describe(&c);
        tracing::debug!(command = %desc, "spawning in netns");
        let child = c
            .spawn()
            .map_err(|e| Error::io(format!("starting `{desc}`"), e))?;
        Ok(NsProcess {
            child,
            desc,
            _ns: self.clone(),
        })
    }

    fn ip(&self, args: &[&str]) -> Result<()> {
        let mut full = vec!["-n", self.name()];
        full.extend_from_slice(args);
        ip(&full)
    }
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::run_checked(Command::new("ip").args(args), IP_TIMEOUT).map(drop)
}

/// Deletes namespaces named `baleen-*-<pid>-<n>` whose creating process is gone (left behind
/// when a test process was killed before its `Drop` ran). Best effort, never fails.
fn remove_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = stale_owner(&name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                tracing::info!(netns = %name, "removing stale network namespace");
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
}

/// The creator's PID encoded in a harness namespace name. Pure.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("baleen-")?;
    let mut parts = rest.rsplitn(3, '-');
    let counter = parts.next()?;
    let pid = parts.next()?;
    parts.next()?; // the test's name
    counter.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// A process started inside a namespace; killed (SIGKILL, by its own handle) on drop. Keeps the
/// namespace alive while it runs.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    desc: String,
    _ns: NetNs,
}

impl NsProcess {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and reaps it.
    pub fn kill(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        if self.is_running() {
            self.child
                .kill()
                .map_err(|e| Error::io(format!("killing `{}`", self.desc), e))?;
        }
        self.child
            .wait()
            .map(drop)
            .map_err(|e| Error::io(format!("reaping `{}`", self.desc), e))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "could not stop netns process");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_is_parsed_from_names() {
        assert_eq!(stale_owner("baleen-ntp-1234-0"), Some(1234));
        assert_eq!(stale_owner("baleen-a-b-c-99-12"), Some(99));
        assert_eq!(stale_owner("baleen-1234-0"), None);
        assert_eq!(stale_owner("other-ntp-1234-0"), None);
        assert_eq!(stale_owner("baleen-ntp-x-0"), None);
    }
}
