//! Console logging for PID 1: every line goes to the console with the kernel's
//! uptime, so a serial log shows where the boot time went.

use std::io::Write;
use std::time::Instant;

pub struct Log {
    started: Instant,
}

impl Log {
    pub fn new() -> Self {
        Log {
            started: Instant::now(),
        }
    }

    /// Milliseconds since PID 1 started.
    pub fn elapsed_ms(&self) -> u128 {
        self.started.elapsed().as_millis()
    }

    pub fn info(&self, msg: impl std::fmt::Display) {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|u| u.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into());
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "baleen-boot: [{uptime:>8}] {msg}");
    }
}
