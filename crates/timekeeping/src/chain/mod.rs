//! The decisions of baleen's time chain, free of I/O: every function takes the clock readings
//! and file contents it needs as arguments and returns what to do.
//!
//! The chain, in boot order (balenaOS behaviour, reproduced):
//!
//! 1. [`early`]: before anything else, the clock is moved forward to the build time floor
//!    (`/etc/timestamp`), then to the saved clock, then to the RTC. It never moves backwards.
//! 2. [`save`]: hourly and at shutdown the current time is saved, never below the floor.
//! 3. [`https_decision`]: once the network is up, the time is taken from the `Date` header of a
//!    `204` answer of the connectivity URI, probed by [`crate::https::probe`] and retried with
//!    [`backoff`] until it succeeds.
//! 4. chrony then keeps the time; its health check is [`health`], fed by [`parse_sources`].
//!
//! Every threshold is a named constant so that logs and tests can quote it.

mod chrony;
mod early;
mod https_time;

use std::time::{Duration, SystemTime};

pub use chrony::{
    BURST_ARGS, ChronyError, Health, LOST_SYNC_MESSAGE, LeapStatus, MAKESTEP_ARGS, SOURCES_ARGS,
    SourceLine, TRACKING_ARGS, Tracking, WAITSYNC_ARGS, has_selected, health, parse_sources,
    parse_tracking,
};
pub use early::{EarlyPlan, RTC_TOLERANCE, early, save};
pub use https_time::{
    AGREEMENT_TOLERANCE, Answer, BACKOFF_MAX, BACKOFF_START, HttpsDecision, STEP_THRESHOLD,
    backoff, https_decision,
};

/// Which step of the chain decided the system time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The build time floor, `/etc/timestamp`.
    BuildTime,
    /// The clock saved at the last shutdown or hourly save.
    SavedClock,
    /// The hardware real-time clock.
    Rtc,
    /// The `Date` header of the connectivity URI.
    Https,
    /// chrony.
    Ntp,
    /// Nothing: the clock was left as it was.
    Unchanged,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::BuildTime => "build time",
            Source::SavedClock => "saved clock",
            Source::Rtc => "RTC",
            Source::Https => "HTTPS",
            Source::Ntp => "NTP",
            Source::Unchanged => "unchanged",
        })
    }
}

/// `a - b` in seconds, negative when `a` is earlier.
fn signed_secs(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `|a - b|`.
fn distance(a: SystemTime, b: SystemTime) -> Duration {
    match a.duration_since(b) {
        Ok(d) => d,
        Err(e) => e.duration(),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// 2026-11-24 14:24:05 UTC plus `secs`.
    pub fn t(secs: i64) -> SystemTime {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_530_245);
        if secs >= 0 {
            base + Duration::from_secs(secs.unsigned_abs())
        } else {
            base - Duration::from_secs(secs.unsigned_abs())
        }
    }
}
