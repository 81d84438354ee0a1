//! The one door for the harness's subprocesses: logs argv, feeds stdin, captures output, enforces
//! a timeout and kills (only) the child it started when the timeout expires.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Where a command's stdin comes from.
pub(crate) enum Input {
    Null,
    Bytes(Vec<u8>),
    File(File),
}

/// Where a command's stdout goes.
pub(crate) enum Sink {
    Capture,
    File(File),
}

/// Renders argv for logs and error messages, quoting arguments that need it.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote_arg)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_arg(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
    {
        s.into_owned()
    } else {
        shell_quote(&s)
    }
}

/// Quotes a string for a POSIX shell (single quotes, `'` spelled `'\''`).
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` to completion or until `timeout`, capturing stdout and stderr.
pub(crate) fn run(cmd: &mut Command, input: Input, timeout: Duration) -> Result<Output> {
    run_to(cmd, input, Sink::Capture, timeout)
}

/// Runs `cmd` and fails with [`Error::Command`] (carrying stderr) unless it exits with 0.
pub(crate) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let out = run(cmd, Input::Null, timeout)?;
    check(cmd, out)
}

/// Turns a non-zero exit into [`Error::Command`].
pub(crate) fn check(cmd: &Command, out: Output) -> Result<Output> {
    if out.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command: describe(cmd),
            status: out.status.to_string(),
            stderr: out.stderr,
        })
    }
}

/// Like [`run`], with stdout sent to `sink`.
pub(crate) fn run_to(
    cmd: &mut Command,
    input: Input,
    sink: Sink,
    timeout: Duration,
) -> Result<Output> {
    let desc = describe(cmd);
    tracing::debug!(command = %desc, "running");
    match &input {
        Input::Null => cmd.stdin(Stdio::null()),
        Input::Bytes(_) => cmd.stdin(Stdio::piped()),
        Input::File(f) => cmd
            .stdin(Stdio::from(f.try_clone().map_err(|e| {
                Error::io(format!("duplicating stdin for `{desc}`"), e)
            })?)),
    };
    let capture_stdout = matches!(sink, Sink::Capture);
    match sink {
        Sink::Capture => cmd.stdout(Stdio::piped()),
        Sink::File(f) => cmd.stdout(Stdio::from(f)),
    };
    cmd.stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting `{desc}`"), e))?;

    if let (Input::Bytes(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A command that does not read its stdin must not block us: write from a thread.
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let stdout_rx = child.stdout.take().map(drain);
    let stderr_rx = child.stderr.take().map(drain);

    let mut poll = Duration::from_millis(5);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::io(format!("waiting for `{desc}`"), e)),
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::CommandTimeout {
                command: desc,
                waited: timeout,
            });
        }
        thread::sleep(poll);
        poll = (poll * 2).min(Duration::from_millis(100));
    };

    // A grandchild may keep a pipe open; never wait for it longer than a grace period.
    let grace = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(5));
    let collect = |rx: Option<mpsc::Receiver<Vec<u8>>>| {
        rx.and_then(|rx| rx.recv_timeout(grace).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let stdout = if capture_stdout {
        collect(stdout_rx)
    } else {
        String::new()
    };
    let stderr = collect(stderr_rx);
    tracing::debug!(command = %desc, %status, elapsed = ?started.elapsed(), "finished");
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Input::Null,
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.status.code(), Some(3));
    }

    #[test]
    fn feeds_stdin() {
        let out = run(
            &mut Command::new("cat"),
            Input::Bytes(b"hello".to_vec()),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(out.stdout, "hello");
    }

    #[test]
    fn kills_on_timeout() {
        let t = Instant::now();
        let err = run(
            Command::new("sleep").arg("30"),
            Input::Null,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(
            err.to_string(),
            "`sleep 30` did not finish within 200ms; killed it"
        );
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn checked_failure_names_command_and_stderr() {
        let err = run_checked(
            Command::new("sh").args(["-c", "echo nope >&2; exit 1"]),
            Duration::from_secs(30),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo nope >&2; exit 1'` failed (exit status: 1): nope"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(quote_arg(OsStr::new("a b")), "'a b'");
        assert_eq!(
            quote_arg(OsStr::new("id=d0,format=raw")),
            "id=d0,format=raw"
        );
    }
}
