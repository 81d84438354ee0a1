//! The one door through which baleen runs external programs: argv is logged at
//! debug, stderr is captured into the error, a timeout bounds every run, and a
//! program that is missing is reported with the Debian package that provides it.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{program} not found: install the Debian package {package}")]
    NotFound { program: String, package: String },
    #[error("starting {argv}")]
    Spawn {
        argv: String,
        source: std::io::Error,
    },
    #[error("{argv} failed ({status}): {stderr}")]
    Failed {
        argv: String,
        status: String,
        stderr: String,
    },
    #[error("{argv} did not finish within {secs} s and was killed")]
    Timeout { argv: String, secs: u64 },
}

impl Error {
    /// The exit code, for a program that ran and exited non-zero.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::Failed { status, .. } => status
                .strip_prefix("exit code ")
                .and_then(|c| c.parse().ok()),
            _ => None,
        }
    }
}

/// What a finished program left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A program to run: `Cmd::new("mkfs.ext4").package("e2fsprogs").arg(..).run()`.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    package: Option<String>,
    timeout: Duration,
    ok_codes: Vec<i32>,
    cwd: Option<std::path::PathBuf>,
    envs: Vec<(OsString, OsString)>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            package: None,
            timeout: Duration::from_secs(600),
            ok_codes: vec![0],
            cwd: None,
            envs: Vec::new(),
        }
    }

    /// The Debian package that provides the program, named when it is missing.
    pub fn package(mut self, package: &str) -> Self {
        self.package = Some(package.to_string());
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Exit codes that count as success (default: only 0).
    pub fn ok_codes(mut self, codes: &[i32]) -> Self {
        self.ok_codes = codes.to_vec();
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line as one string, for messages.
    pub fn argv(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the program to completion, capturing stdout and stderr.
    pub fn run(&self) -> Result<Output, Error> {
        let argv = self.argv();
        tracing::debug!(%argv, "running");
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .map_err(|source| match (source.kind(), &self.package) {
                (std::io::ErrorKind::NotFound, Some(package)) => Error::NotFound {
                    program: self.program.to_string_lossy().into_owned(),
                    package: package.clone(),
                },
                _ => Error::Spawn {
                    argv: argv.clone(),
                    source,
                },
            })?;
        // Drain both pipes on threads so a chatty program cannot block on a full pipe.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > self.timeout => {
                    // The child is ours: end it by its handle.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Timeout {
                        argv,
                        secs: self.timeout.as_secs(),
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(source) => return Err(Error::Spawn { argv, source }),
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let code = status.code().unwrap_or(-1);
        if !self.ok_codes.contains(&code) {
            let status = match status.code() {
                Some(c) => format!("exit code {c}"),
                None => format!("{status}"),
            };
            return Err(Error::Failed {
                argv,
                status,
                stderr: stderr.trim().to_string(),
            });
        }
        Ok(Output {
            code,
            stdout,
            stderr,
        })
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Whether a program can be found on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stdout() {
        let out = Cmd::new("sh").args(["-c", "echo hi"]).run().unwrap();
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn failure_carries_stderr_and_code() {
        let err = Cmd::new("sh")
            .args(["-c", "echo bad >&2; exit 3"])
            .run()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo bad >&2; exit 3 failed (exit code 3): bad"
        );
        assert_eq!(err.exit_code(), Some(3));
    }

    #[test]
    fn accepted_codes_are_success() {
        let out = Cmd::new("sh")
            .args(["-c", "exit 1"])
            .ok_codes(&[0, 1])
            .run()
            .unwrap();
        assert_eq!(out.code, 1);
    }

    #[test]
    fn missing_program_names_the_package() {
        let err = Cmd::new("baleen-no-such-tool")
            .package("baleen-tools")
            .run()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "baleen-no-such-tool not found: install the Debian package baleen-tools"
        );
    }

    #[test]
    fn timeout_kills_the_child() {
        let err = Cmd::new("sleep")
            .arg("5")
            .timeout(Duration::from_millis(100))
            .run()
            .unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
    }
}
