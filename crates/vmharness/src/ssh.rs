//! SSH into a guest with the system `ssh` client: non-interactive, no host-key bookkeeping, no
//! user configuration, optionally from inside a network namespace, optionally sharing one
//! connection among commands ([`Ssh::multiplexed`]).

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// The shared connection, when commands are multiplexed (clones share it).
    mux: Option<Arc<Mux>>,
}

/// One OpenSSH control master (`ssh -M -N`) and its socket. A login costs an emulated guest
/// seconds (socket-activated sshd: a unit, a fork and an exec per connection, then the key
/// exchange): 2.6 s per command against 0.4 s through a master, measured on a busy host.
#[derive(Debug)]
struct Mux {
    socket: PathBuf,
    /// The master, a child of this process; `None` until a command got through.
    master: Mutex<Option<Child>>,
    /// Masters in a row that ended without listening; at [`MASTER_TRIES`] no more are
    /// started until [`Mux::stop`] (a new boot), so a guest that refuses them costs one login
    /// per command, not two.
    failures: AtomicU32,
}

impl Mux {
    fn master(&self) -> MutexGuard<'_, Option<Child>> {
        self.master.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the master (by its PID: it is our child) and removes its socket.
    fn stop(&self) {
        if let Some(mut child) = self.master().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(&self.socket);
        self.failures.store(0, Ordering::Relaxed);
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Masters that may end without listening before no more are started (until the next boot).
const MASTER_TRIES: u32 = 3;

/// How long a new control master gets to log in before commands go without it.
const MASTER_WAIT: Duration = Duration::from_secs(20);

/// Tells control sockets of one process apart.
static MUX_SERIAL: AtomicU64 = AtomicU64::new(0);

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
            mux: None,
        }
    }

    /// Shares one connection among this value's commands (and its clones'): after the first
    /// command that gets through, a control master (`ssh -M -N`, a child of this process)
    /// keeps the connection; later commands open a session on it, or connect on their own
    /// while there is none. [`Ssh::probe`] always connects on its own: it answers whether a
    /// new login works. Stop the master with [`Ssh::stop_master`] when the guest goes away
    /// (power cut, reset, reboot); it also ends when the connection breaks, and on drop.
    pub fn multiplexed(mut self) -> Self {
        let socket = std::env::temp_dir().join(format!(
            "baleen-ssh-{}-{}",
            std::process::id(),
            MUX_SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        self.mux = Some(Arc::new(Mux {
            socket,
            master: Mutex::new(None),
            failures: AtomicU32::new(0),
        }));
        self
    }

    /// Ends the shared connection, if any; the next command that gets through starts another.
    pub fn stop_master(&self) {
        if let Some(mux) = &self.mux {
            mux.stop();
        }
    }

    /// Starts the control master unless one runs. Called after a command got through, so the
    /// guest is known to answer.
    fn ensure_master(&self) {
        let Some(mux) = &self.mux else { return };
        let mut master = mux.master();
        if let Some(child) = master.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                return;
            }
        }
        if mux.failures.load(Ordering::Relaxed) >= MASTER_TRIES {
            return;
        }
        let _ = fs::remove_file(&mux.socket);
        let mut argv = self.base_argv(Duration::from_secs(10));
        argv.extend(
            ["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-o"].map(OsString::from),
        );
        argv.push(format!("ControlPath={}", mux.socket.display()).into());
        argv.extend(["-N".into(), self.destination().into()]);
        // Like QEMU, the master gets SIGTERM when the thread that started it ends, so a test
        // killed without dropping us leaves none behind; a master that ended is started again
        // by the next command that gets through.
        let spawned = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "--"])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::debug!("starting the SSH control master: {e}");
                return;
            }
        };
        // The socket appears once the master has logged in. Waiting for it costs that one
        // login; not waiting would have the next command log in on its own beside it.
        let deadline = std::time::Instant::now() + MASTER_WAIT;
        while !mux.socket.exists()
            && matches!(child.try_wait(), Ok(None))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if mux.socket.exists() {
            mux.failures.store(0, Ordering::Relaxed);
        } else {
            let failed = mux.failures.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(failed, "the SSH control master did not start listening");
        }
        *master = Some(child);
    }

    /// `user@host`.
    fn destination(&self) -> String {
        format!("{}@{}", self.user, self.host)
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

    /// The full argv that runs `remote` on the guest (through the shared connection when
    /// there is one). Pure.
    pub fn argv(&self, remote: &str, connect_timeout: Duration) -> Vec<OsString> {
        let mut argv = self.base_argv(connect_timeout);
        if let Some(mux) = &self.mux {
            // With no master listening, ssh connects on its own.
            argv.extend(["-o".into(), "ControlMaster=no".into(), "-o".into()]);
            argv.push(format!("ControlPath={}", mux.socket.display()).into());
        }
        argv.extend([self.destination().into(), "--".into(), remote.into()]);
        argv
    }

    /// `ssh` and its options up to the destination: namespace, options, identity, port.
    fn base_argv(&self, connect_timeout: Duration) -> Vec<OsString> {
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
        argv.extend(["-p".into(), self.port.to_string().into()]);
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
        let out = cmd::run(
            &mut self.command(remote, Duration::from_secs(10)),
            Input::Null,
            timeout,
        );
        self.got_through(out)
    }

    /// Starts the shared connection once a command got through: ssh exits with 255 when it
    /// could not connect or log in, with the command's status otherwise.
    fn got_through(&self, out: Result<Output>) -> Result<Output> {
        if let Ok(o) = &out {
            if o.status.code().is_some_and(|c| c != 255) {
                self.ensure_master();
            }
        }
        out
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

    /// One quick connection attempt of its own (never through the shared connection) running
    /// `true`: Ok when the guest answered.
    pub fn probe(&self, connect_timeout: Duration) -> Result<()> {
        let direct = Ssh {
            mux: None,
            ..self.clone()
        };
        let out = cmd::run(
            &mut direct.command("true", connect_timeout),
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
        );
        self.ok(&script, self.got_through(out)?).map(drop)
    }

    /// Writes `contents` to the file `remote` on the guest.
    pub fn write(&self, remote: &str, contents: &[u8], timeout: Duration) -> Result<()> {
        let script = format!("cat > {}", shell_quote(remote));
        let out = cmd::run(
            &mut self.command(&script, Duration::from_secs(10)),
            Input::Bytes(contents.to_vec()),
            timeout,
        );
        self.ok(&script, self.got_through(out)?).map(drop)
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
        );
        self.ok(&script, self.got_through(out)?).map(drop)
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

    #[test]
    fn multiplexed_commands_name_the_control_socket() {
        let ssh = Ssh::new("127.0.0.1", 40123).multiplexed();
        let a = joined(&ssh.argv("true", Duration::from_secs(10)));
        let socket = ssh.mux.as_ref().unwrap().socket.display().to_string();
        assert!(socket.contains(&format!("baleen-ssh-{}-", std::process::id())));
        assert!(
            a.ends_with(&format!(
                "-p 40123 -o ControlMaster=no -o ControlPath={socket} root@127.0.0.1 -- true"
            )),
            "{a}"
        );
        // Clones share the connection; a plain value has none.
        let clone = ssh.clone();
        assert!(Arc::ptr_eq(
            ssh.mux.as_ref().unwrap(),
            clone.mux.as_ref().unwrap()
        ));
        let plain = joined(&Ssh::new("127.0.0.1", 40123).argv("true", Duration::from_secs(10)));
        assert!(!plain.contains("Control"), "{plain}");
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
    fn a_master_that_never_listens_is_given_up_after_three_tries() {
        let dir = tempfile::tempdir().unwrap();
        // The stand-in runs commands but, started as a master (no `--`), exits at once.
        let ssh = fake_ssh(dir.path()).multiplexed();
        let failures = || ssh.mux.as_ref().unwrap().failures.load(Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(
                ssh.run_ok("echo hi", Duration::from_secs(30)).unwrap(),
                "hi\n"
            );
        }
        assert_eq!(failures(), MASTER_TRIES);
        ssh.stop_master();
        assert_eq!(failures(), 0, "a new boot gets new tries");
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
