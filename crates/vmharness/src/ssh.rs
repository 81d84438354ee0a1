//! SSH into a guest with the system `ssh` client: non-interactive, no host-key bookkeeping, no
//! user configuration, optionally from inside a network namespace.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, Input, Output, Sink, shell_quote};
use crate::error::{Error, Result};

/// The port balenaOS (and baleen) guests run sshd on.
pub const GUEST_SSH_PORT: u16 = 22222;

/// How to reach one guest's sshd.
#[derive(Debug, Clone)]
pub struct Ssh {
    host: String,
    port: u16,
    user: String,
    key: Option<PathBuf>,
    netns: Option<String>,
    program: OsString,
}

impl Ssh {
    /// `root@host:port`, no key (development images allow passwordless root).
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Ssh {
            host: host.into(),
            port,
            user: "root".into(),
            key: None,
            netns: None,
            program: "ssh".into(),
        }
    }

    /// Authenticates with this private key (`ssh -i`).
    pub fn with_key(mut self, key: Option<PathBuf>) -> Self {
        self.key = key;
        self
    }

    /// Runs `ssh` inside this network namespace (`ip netns exec`).
    pub fn in_netns(mut self, netns: Option<String>) -> Self {
        self.netns = netns;
        self
    }

    /// Uses another client binary taking OpenSSH's arguments (default `ssh` from `PATH`).
    pub fn with_program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// `host:port`, for messages.
    pub fn target(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The port ssh connects to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The full argv that runs `remote` on the guest. Pure.
    pub fn argv(&self, remote: &str, connect_timeout: Duration) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.extend(["ip", "netns", "exec", ns.as_str()].map(OsString::from));
        }
        argv.push(self.program.clone());
        for opt in [
            "BatchMode=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=6",
            // Not OpenSSH 9's default post-quantum hybrid: the classic exchange costs the
            // emulated guest 0.3 s less per command, and the test talks to its own VM.
            "KexAlgorithms=curve25519-sha256",
        ] {
            argv.extend(["-o".into(), opt.into()]);
        }
        argv.extend([
            "-o".into(),
            format!("ConnectTimeout={}", connect_timeout.as_secs().max(1)).into(),
        ]);
        // Ignore ~/.ssh/config and the agent: the test decides the identity.
        argv.extend(["-F".into(), "/dev/null".into()]);
        if let Some(key) = &self.key {
            argv.extend([
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-i".into(),
                key.clone().into_os_string(),
            ]);
        }
        argv.extend([
            "-p".into(),
            self.port.to_string().into(),
            format!("{}@{}", self.user, self.host).into(),
            "--".into(),
            remote.into(),
        ]);
        argv
    }

    fn command(&self, remote: &str, connect_timeout: Duration) -> Command {
        let argv = self.argv(remote, connect_timeout);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// Runs a shell command on the guest; a non-zero exit is not an error here.
    pub fn run(&self, remote: &str, timeout: Duration) -> Result<Output> {
        cmd::run(
            &mut self.command(remote, Duration::from_secs(10)),
            Input::Null,
            timeout,
        )
    }

    /// Runs a shell command on the guest and returns its stdout; fails on a non-zero exit with
    /// the command's stderr in the message.
    pub fn run_ok(&self, remote: &str, timeout: Duration) -> Result<String> {
        let out = self.run(remote, timeout)?;
        self.ok(remote, out).map(|o| o.stdout)
    }

    fn ok(&self, remote: &str, out: Output) -> Result<Output> {
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Remote {
                command: remote.to_owned(),
                target: format!("{}@{}", self.user, self.target()),
                status: out.status.to_string(),
                stderr: out.stderr,
            })
        }
    }

    /// One quick connection attempt running `true`: Ok when the guest answered.
    pub fn probe(&self, connect_timeout: Duration) -> Result<()> {
        let out = cmd::run(
            &mut self.command("true", connect_timeout),
            Input::Null,
            connect_timeout + Duration::from_secs(20),
        )?;
        self.ok("true", out).map(drop)
    }

    /// Copies a local file to `remote` on the guest (streamed through `cat`, no scp needed).
    pub fn copy_to(&self, local: &Path, remote: &str, timeout: Duration) -> Result<()> {
        let file = File::open(local).map_err(|e| Error::io_path("opening", local, e))?;
        let script = format!("cat > {}", shell_quote(remote));
        let out = cmd::run(
            &mut self.command(&script, Duration::from_secs(10)),
            Input::File(file),
            timeout,
        )?;
        self.ok(&script, out).map(drop)
    }

    /// Writes `contents` to the file `remote` on the guest.
    pub fn write(&self, remote: &str, contents: &[u8], timeout: Duration) -> Result<()> {
        let script = format!("cat > {}", shell_quote(remote));
        let out = cmd::run(
            &mut self.command(&script, Duration::from_secs(10)),
            Input::Bytes(contents.to_vec()),
            timeout,
        )?;
        self.ok(&script, out).map(drop)
    }

    /// Copies `remote` from the guest into a local file.
    pub fn copy_from(&self, remote: &str, local: &Path, timeout: Duration) -> Result<()> {
        let file = File::create(local).map_err(|e| Error::io_path("creating", local, e))?;
        let script = format!("cat {}", shell_quote(remote));
        let out = cmd::run_to(
            &mut self.command(&script, Duration::from_secs(10)),
            Input::Null,
            Sink::File(file),
            timeout,
        )?;
        self.ok(&script, out).map(drop)
    }
}

/// Makes a fresh ed25519 key pair `id_ed25519` in `dir` (replacing one that is there); returns
/// the private key's path and the public key line for `authorized_keys` / `config.json`.
pub fn ssh_keygen(dir: &Path) -> Result<(PathBuf, String)> {
    let private = dir.join("id_ed25519");
    let public = dir.join("id_ed25519.pub");
    for p in [&private, &public] {
        match fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io_path("removing", p, e));
            }
            _ => {}
        }
    }
    cmd::run_checked(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "baleen-vmharness",
                "-f",
            ])
            .arg(&private),
        Duration::from_secs(60),
    )?;
    let line = fs::read_to_string(&public).map_err(|e| Error::io_path("reading", &public, e))?;
    Ok((private, line.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(argv: &[OsString]) -> String {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn argv_is_batch_mode_without_host_keys() {
        let ssh = Ssh::new("127.0.0.1", 40123).with_key(Some("/k/id".into()));
        let a = joined(&ssh.argv("uname -a", Duration::from_secs(10)));
        assert!(
            a.starts_with("ssh -o BatchMode=yes -o StrictHostKeyChecking=no"),
            "{a}"
        );
        assert!(a.contains("-o UserKnownHostsFile=/dev/null"), "{a}");
        assert!(a.contains("-o ConnectTimeout=10"), "{a}");
        assert!(a.contains("-o LogLevel=ERROR"), "{a}");
        assert!(a.contains("-F /dev/null"), "{a}");
        assert!(
            a.ends_with("-o IdentitiesOnly=yes -i /k/id -p 40123 root@127.0.0.1 -- uname -a"),
            "{a}"
        );
    }

    #[test]
    fn argv_in_netns_and_without_key() {
        let ssh = Ssh::new("10.0.2.15", GUEST_SSH_PORT).in_netns(Some("baleen-ntp-1".into()));
        let a = joined(&ssh.argv("true", Duration::from_millis(10)));
        assert!(a.starts_with("ip netns exec baleen-ntp-1 ssh "), "{a}");
        assert!(a.contains("ConnectTimeout=1"), "{a}");
        assert!(!a.contains(" -i "), "{a}");
        assert!(a.ends_with("-p 22222 root@10.0.2.15 -- true"), "{a}");
    }

    /// True if `tool` is on PATH; otherwise says the test is skipped.
    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("skipping: `{tool}` is not installed");
        }
        found
    }

    #[test]
    fn failed_probe_names_the_target() {
        if !have("ssh") {
            return;
        }
        // Port 1 on loopback: nothing listens, ssh fails at once with exit 255.
        let err = Ssh::new("127.0.0.1", 1)
            .probe(Duration::from_secs(5))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("`true` on root@127.0.0.1:1 failed (exit status: 255): "),
            "{msg}"
        );
    }

    /// An `ssh` stand-in that runs the remote command locally, to test everything around the
    /// client without an sshd.
    fn fake_ssh(dir: &Path) -> Ssh {
        use std::os::unix::fs::PermissionsExt;
        let fake = dir.join("fake-ssh");
        fs::write(
            &fake,
            "#!/bin/sh\nwhile [ \"$1\" != -- ]; do shift; done\nshift\nexec sh -c \"$1\"\n",
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test thread may briefly hold the write handle (ETXTBSY);
        // once one run works, the script is safe to execute.
        for _ in 0..100 {
            match Command::new(&fake).args(["--", "true"]).status() {
                Err(e) if e.raw_os_error() == Some(26) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        Ssh::new("127.0.0.1", 2222).with_program(fake)
    }

    #[test]
    fn run_ok_returns_stdout_and_fails_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = fake_ssh(dir.path());
        let t = Duration::from_secs(30);
        assert_eq!(ssh.run_ok("echo hi; echo noise >&2", t).unwrap(), "hi\n");
        let out = ssh.run("exit 3", t).unwrap();
        assert_eq!(out.status.code(), Some(3));
        let err = ssh.run_ok("echo broken >&2; exit 2", t).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`echo broken >&2; exit 2` on root@127.0.0.1:2222 failed (exit status: 2): broken"
        );
        ssh.probe(Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn copies_both_ways_with_awkward_names() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = fake_ssh(dir.path());
        let t = Duration::from_secs(30);
        let local = dir.path().join("local.bin");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&local, &data).unwrap();
        let remote_dir = dir.path().join("remote dir");
        fs::create_dir(&remote_dir).unwrap();
        let remote = remote_dir.join("it's here.bin");
        let remote = remote.to_str().unwrap();
        ssh.copy_to(&local, remote, t).unwrap();
        assert_eq!(fs::read(remote).unwrap(), data);
        ssh.write(remote, b"config", t).unwrap();
        let back = dir.path().join("back");
        ssh.copy_from(remote, &back, t).unwrap();
        assert_eq!(fs::read(&back).unwrap(), b"config");
        let err = ssh.copy_from("/nonexistent/file", &back, t).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[test]
    fn keygen_makes_a_usable_pair() {
        if !have("ssh-keygen") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = ssh_keygen(dir.path()).unwrap();
        assert!(private.exists());
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        assert!(public.ends_with(" baleen-vmharness"), "{public}");
        // Running again replaces the pair instead of prompting.
        let (_, again) = ssh_keygen(dir.path()).unwrap();
        assert_ne!(public, again);
    }
}
