//! Progress of an install: JSON lines on stdout (`--json`), a line on the
//! terminal that rewrites itself, or a line per step when stderr is a log.
//! Also the test pause points (`BALEEN_UPDATE_PAUSE_AT`).

use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The environment variable naming the point where a test wants the install to stop.
pub const PAUSE_ENV: &str = "BALEEN_UPDATE_PAUSE_AT";
/// Written with the point's name when the install stops there.
pub const PAUSED_FILE: &str = "run/baleen/update-paused";

pub struct Progress {
    json: bool,
    tty: bool,
    pause_at: Option<String>,
    root: std::path::PathBuf,
    last_percent: Option<(String, u64)>,
    last_print: Instant,
}

impl Progress {
    pub fn new(root: &Path, json: bool) -> Progress {
        Progress {
            json,
            tty: !json && std::io::stderr().is_terminal(),
            pause_at: std::env::var(PAUSE_ENV).ok().filter(|p| !p.is_empty()),
            root: root.to_path_buf(),
            last_percent: None,
            last_print: Instant::now() - Duration::from_secs(60),
        }
    }

    /// A JSON event (with `--json`) or a message on stderr.
    pub fn event(&mut self, event: &str, fields: Value, message: &str) {
        if self.json {
            let mut line = json!({ "event": event });
            if let (Some(obj), Value::Object(extra)) = (line.as_object_mut(), fields) {
                obj.extend(extra);
            }
            println!("{line}");
            let _ = std::io::stdout().flush();
        } else {
            self.end_line();
            eprintln!("{message}");
        }
    }

    /// Bytes done of a phase; also stops at `<phase>:<percent>` pause points as they are
    /// crossed.
    pub fn bytes(&mut self, phase: &str, done: u64, total: u64) {
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let previous = match &self.last_percent {
            Some((p, value)) if p == phase => Some(*value),
            _ => None,
        };
        if let Some(point) = self.pause_at.clone() {
            if let Some(at) = point
                .strip_prefix(phase)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|n| n.parse::<u64>().ok())
            {
                if percent >= at && previous.is_none_or(|p| p < at) {
                    self.pause_now(&point);
                }
            }
        }
        let changed = previous != Some(percent);
        self.last_percent = Some((phase.to_owned(), percent));
        if !changed {
            return;
        }
        let due = self.last_print.elapsed() >= Duration::from_secs(1) || done == total;
        if self.json {
            if due {
                self.last_print = Instant::now();
                println!(
                    "{}",
                    json!({"event": "progress", "phase": phase, "done": done, "total": total})
                );
                let _ = std::io::stdout().flush();
            }
        } else if self.tty {
            eprint!(
                "\r{phase:>10} [{:<40}] {percent:>3}% {:>7.1}/{:.1} MiB",
                "#".repeat((percent as usize * 40) / 100),
                done as f64 / MIB,
                total as f64 / MIB
            );
        } else if percent % 10 == 0 && due {
            self.last_print = Instant::now();
            eprintln!(
                "{phase}: {percent}% ({:.1} of {:.1} MiB)",
                done as f64 / MIB,
                total as f64 / MIB
            );
        }
    }

    /// Stops here if a test asked for `point`.
    pub fn point(&mut self, point: &str) {
        if self.pause_at.as_deref() == Some(point) {
            self.pause_now(point);
        }
    }

    fn pause_now(&mut self, point: &str) -> ! {
        self.end_line();
        let path = self.root.join(PAUSED_FILE);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&path, point);
        eprintln!("paused at {point} ({PAUSE_ENV}); waiting for the test to cut the power");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }

    fn end_line(&mut self) {
        if self.tty && self.last_percent.is_some() {
            eprintln!();
            self.last_percent = None;
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;
