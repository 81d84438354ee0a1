//! The harness's one error type.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything the harness can fail with. Messages are written for the person reading a failed
/// test: they name what was being done or waited for and, for waits, show the last serial lines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a named object failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A wait ran out of time.
    #[error("timed out after {} waiting for {what}{}", fmt_duration(*waited), serial_suffix(serial_tail))]
    Timeout {
        what: String,
        waited: Duration,
        /// The last serial lines, oldest first, possibly empty.
        serial_tail: String,
    },

    /// An external command ran past its time limit and was killed.
    #[error("`{command}` did not finish within {}; killed it", fmt_duration(*waited))]
    CommandTimeout { command: String, waited: Duration },

    /// QEMU is not running where the harness expected it to.
    #[error("QEMU is not running ({status}) while {doing}; see {}{}", log.display(), log_suffix(qemu_log_tail))]
    QemuExited {
        status: String,
        doing: String,
        log: PathBuf,
        qemu_log_tail: String,
    },

    /// An external command exited unsuccessfully.
    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A command run on the guest over SSH exited unsuccessfully (255: SSH itself failed).
    #[error("`{command}` on {target} failed ({status}){}", stderr_suffix(stderr))]
    Remote {
        command: String,
        target: String,
        status: String,
        stderr: String,
    },

    /// QEMU answered a QMP command with an error.
    #[error("QMP command `{command}` failed: {class}: {desc}")]
    Qmp {
        command: String,
        class: String,
        desc: String,
    },

    /// The QMP peer sent something that is not QMP.
    #[error("QMP protocol error: {0}")]
    QmpProtocol(String),

    /// The VM configuration cannot be started as given.
    #[error("invalid VM configuration: {0}")]
    Config(String),

    /// A disk image could not be used.
    #[error("disk image {}: {reason}", path.display())]
    Image { path: PathBuf, reason: String },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with a lower-case description of the operation and its object.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Io`] for an operation on a path, e.g. `io_path("creating", dir, e)`.
    pub(crate) fn io_path(verb: &str, path: &Path, source: io::Error) -> Self {
        Error::io(format!("{verb} {}", path.display()), source)
    }

    /// True when this error is a [`Error::Timeout`] or [`Error::CommandTimeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::CommandTimeout { .. })
    }
}

/// Formats a duration the way the messages use it: `300s`, `2.5s`, `150ms`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn serial_suffix(tail: &str) -> String {
    if tail.is_empty() {
        "; no serial output".to_owned()
    } else {
        format!("; last serial lines:\n{tail}")
    }
}

fn log_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{tail}")
    }
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_message_names_the_wait_and_the_serial_tail() {
        let e = Error::Timeout {
            what: "SSH on 127.0.0.1:40123".into(),
            waited: Duration::from_secs(300),
            serial_tail: "[   1.000] Booting\n[   2.000] Panic".into(),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 300s waiting for SSH on 127.0.0.1:40123; last serial lines:\n\
             [   1.000] Booting\n[   2.000] Panic"
        );
        assert!(e.is_timeout());
    }

    #[test]
    fn timeout_without_serial_says_so() {
        let e = Error::Timeout {
            what: "x".into(),
            waited: Duration::from_millis(1500),
            serial_tail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "timed out after 1.5s waiting for x; no serial output"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(Duration::from_secs(60)), "60s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(32_400)), "32.4s");
    }

    #[test]
    fn command_error_carries_stderr() {
        let e = Error::Command {
            command: "ip netns add x".into(),
            status: "exit status: 1".into(),
            stderr: "File exists\n".into(),
        };
        assert_eq!(
            e.to_string(),
            "`ip netns add x` failed (exit status: 1): File exists"
        );
    }
}
