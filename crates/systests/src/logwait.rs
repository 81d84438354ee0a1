//! Waiting for a daemon the test started to say it is ready in its log.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};
use vmharness::NsProcess;

const POLL: Duration = Duration::from_millis(50);
const LOG_TAIL_LINES: usize = 30;

/// Why a wait ended without the log saying ready; each carries the log's last lines.
pub(crate) enum Failed {
    Exited(String),
    TimedOut(String),
}

/// Waits until `ready(log text)`, failing early when `process` exits.
pub(crate) fn wait_for_log(
    log: &Path,
    process: &mut NsProcess,
    timeout: Duration,
    ready: impl Fn(&str) -> bool,
) -> Result<(), Failed> {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if ready(&text) {
            return Ok(());
        }
        if !process.is_running() {
            return Err(Failed::Exited(log_tail(log)));
        }
        if started.elapsed() >= timeout {
            return Err(Failed::TimedOut(log_tail(log)));
        }
        thread::sleep(POLL);
    }
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}
