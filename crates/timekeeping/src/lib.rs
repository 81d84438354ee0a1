//! baleen's time chain: how the system clock gets a trustworthy time from boot on.
//!
//! * [`formats`]: the build timestamp (`/etc/timestamp`), the saved clock file and HTTP `Date`
//!   headers, parsed and written.
//! * [`chain`]: the decisions, with the clock passed in: the boot steps (build time floor,
//!   saved clock, RTC), saving the clock, taking the time from the connectivity URI, retry
//!   delays and chrony's health check.
//! * [`https`]: the probe of the connectivity URI, which verifies the server certificate
//!   without trusting the (possibly wrong) local clock.
//!
//! The services that read files, run `chronyc` and set the clock live elsewhere; this crate
//! does no I/O except in [`https::probe`].

pub mod chain;
pub mod formats;
pub mod https;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The monotonic clock used for [`chain::Answer::received_at_mono`]: time elapsed since the
/// first call in this process. It never goes backwards and ignores changes to the system clock,
/// so it measures the time between answers even when the clock is stepped in between. Readings
/// are only comparable within one process.
pub fn monotonic_now() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}
