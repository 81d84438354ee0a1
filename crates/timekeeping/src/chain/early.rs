//! The boot-time steps: build time floor, saved clock, RTC; and saving the clock.

use std::time::{Duration, SystemTime};

use super::{Source, distance};
use crate::formats::describe;

/// How far the RTC must be ahead of the clock before it moves the clock, and behind it before
/// a warning is given (balenaOS `timeinit-rtc`: 2 s).
pub const RTC_TOLERANCE: Duration = Duration::from_secs(2);

/// What the early steps of the chain do to the clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyPlan {
    /// The time to set the clock to, or `None` to leave it alone. Never earlier than `now`.
    pub set_to: Option<SystemTime>,
    /// The last step that moved the time ([`Source::Unchanged`] when none did).
    pub source: Source,
    /// How far forward the clock moves (zero when unchanged).
    pub advance: Duration,
    /// Inputs that were ignored and why, for an info-level log.
    pub notes: Vec<String>,
    /// Conditions an operator should act on, for a warning-level log.
    pub warnings: Vec<String>,
}

/// Plans the clock at boot from the current time `now`, the build time `floor`, the saved clock
/// (`None` when missing or unreadable) and the RTC (`None` when there is none or it cannot be
/// read). Pass `UNIX_EPOCH` as `floor` when `/etc/timestamp` is missing.
///
/// The steps run in balenaOS order on a candidate time that starts at `now`:
///
/// 1. build time: if `now` is earlier than `floor`, the candidate becomes `floor`;
/// 2. saved clock: if later than the candidate, it becomes the candidate;
/// 3. RTC: if more than [`RTC_TOLERANCE`] later than the candidate, it becomes the candidate; if
///    more than that earlier, a warning says the RTC is behind (check its battery). The RTC
///    never moves the clock backwards.
///
/// A saved clock or RTC earlier than the floor is ignored with a note.
pub fn early(
    now: SystemTime,
    floor: SystemTime,
    saved: Option<SystemTime>,
    rtc: Option<SystemTime>,
) -> EarlyPlan {
    let mut candidate = now;
    let mut source = Source::Unchanged;
    let mut notes = Vec::new();
    let mut warnings = Vec::new();

    if now < floor {
        candidate = floor;
        source = Source::BuildTime;
    }

    if let Some(saved) = saved {
        if saved < floor {
            notes.push(format!(
                "saved clock {} is before the build time {}: ignored",
                describe(saved),
                describe(floor)
            ));
        } else if saved > candidate {
            candidate = saved;
            source = Source::SavedClock;
        }
    }

    if let Some(rtc) = rtc {
        if rtc < floor {
            notes.push(format!(
                "RTC {} is before the build time {}: ignored (check the RTC battery)",
                describe(rtc),
                describe(floor)
            ));
        } else if rtc > candidate + RTC_TOLERANCE {
            candidate = rtc;
            source = Source::Rtc;
        } else if rtc + RTC_TOLERANCE < candidate {
            warnings.push(format!(
                "RTC is behind the clock by {} s: check the RTC battery",
                distance(candidate, rtc).as_secs()
            ));
        }
    }

    let advance = distance(candidate, now);
    EarlyPlan {
        set_to: (candidate != now).then_some(candidate),
        source,
        advance,
        notes,
        warnings,
    }
}

/// The time to write to the saved clock file, or `None` to write nothing.
///
/// balenaOS `fake-hwclock save` refuses (without `force`) to save a time earlier than the build
/// time, so a clock that somehow went back before the floor never poisons the next boot. This
/// does the same: `now` when it is at or after `floor`, otherwise `None` (the caller keeps the
/// existing file and logs why). There is no `force`.
pub fn save(now: SystemTime, floor: SystemTime) -> Option<SystemTime> {
    (now >= floor).then_some(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::t;

    fn plan(
        set_to: Option<SystemTime>,
        source: Source,
        advance: u64,
        notes: &[&str],
        warnings: &[&str],
    ) -> EarlyPlan {
        EarlyPlan {
            set_to,
            source,
            advance: Duration::from_secs(advance),
            notes: notes.iter().map(|s| s.to_string()).collect(),
            warnings: warnings.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn nothing_to_do_when_the_clock_is_past_everything() {
        let got = early(t(100), t(0), Some(t(50)), Some(t(101)));
        assert_eq!(got, plan(None, Source::Unchanged, 0, &[], &[]));
        assert_eq!(
            early(t(100), t(0), None, None),
            plan(None, Source::Unchanged, 0, &[], &[])
        );
    }

    #[test]
    fn a_clock_before_the_build_time_moves_to_it() {
        let got = early(t(-1000), t(0), None, None);
        assert_eq!(got, plan(Some(t(0)), Source::BuildTime, 1000, &[], &[]));
    }

    #[test]
    fn a_clock_at_the_build_time_stays() {
        let got = early(t(0), t(0), None, None);
        assert_eq!(got, plan(None, Source::Unchanged, 0, &[], &[]));
    }

    #[test]
    fn a_later_saved_clock_wins_over_the_build_time() {
        let got = early(t(-1000), t(0), Some(t(3600)), None);
        assert_eq!(got, plan(Some(t(3600)), Source::SavedClock, 4600, &[], &[]));
    }

    #[test]
    fn an_earlier_saved_clock_is_not_used() {
        let got = early(t(5000), t(0), Some(t(3600)), None);
        assert_eq!(got, plan(None, Source::Unchanged, 0, &[], &[]));
        let got = early(t(-1000), t(0), Some(t(0)), None);
        assert_eq!(got, plan(Some(t(0)), Source::BuildTime, 1000, &[], &[]));
    }

    #[test]
    fn a_saved_clock_before_the_build_time_is_ignored_with_a_note() {
        let got = early(t(-1000), t(0), Some(t(-10)), None);
        assert_eq!(
            got,
            plan(
                Some(t(0)),
                Source::BuildTime,
                1000,
                &[
                    "saved clock 2026-11-24 14:23:55 UTC is before the build time \
                   2026-11-24 14:24:05 UTC: ignored"
                ],
                &[]
            )
        );
    }

    #[test]
    fn the_rtc_moves_the_clock_only_when_more_than_two_seconds_ahead() {
        let got = early(t(100), t(0), None, Some(t(103)));
        assert_eq!(got, plan(Some(t(103)), Source::Rtc, 3, &[], &[]));
        let got = early(t(100), t(0), None, Some(t(102)));
        assert_eq!(got, plan(None, Source::Unchanged, 0, &[], &[]));
    }

    #[test]
    fn the_rtc_is_compared_with_the_saved_clock_not_the_raw_clock() {
        let got = early(t(-1000), t(0), Some(t(3600)), Some(t(3601)));
        assert_eq!(got, plan(Some(t(3600)), Source::SavedClock, 4600, &[], &[]));
        let got = early(t(-1000), t(0), Some(t(3600)), Some(t(7200)));
        assert_eq!(got, plan(Some(t(7200)), Source::Rtc, 8200, &[], &[]));
    }

    #[test]
    fn an_rtc_behind_the_clock_warns_and_never_moves_it_back() {
        let got = early(t(100), t(0), Some(t(40)), Some(t(50)));
        assert_eq!(
            got,
            plan(
                None,
                Source::Unchanged,
                0,
                &[],
                &["RTC is behind the clock by 50 s: check the RTC battery"]
            )
        );
        let got = early(t(100), t(0), None, Some(t(98)));
        assert_eq!(got, plan(None, Source::Unchanged, 0, &[], &[]));
        let got = early(t(-500), t(0), Some(t(200)), Some(t(150)));
        assert_eq!(
            got,
            plan(
                Some(t(200)),
                Source::SavedClock,
                700,
                &[],
                &["RTC is behind the clock by 50 s: check the RTC battery"]
            )
        );
    }

    #[test]
    fn an_rtc_before_the_build_time_is_ignored_with_a_note() {
        let epoch = std::time::UNIX_EPOCH;
        let got = early(epoch, t(0), None, Some(epoch));
        assert_eq!(
            got,
            plan(
                Some(t(0)),
                Source::BuildTime,
                1_795_530_245,
                &[
                    "RTC 1970-01-01 00:00:00 UTC is before the build time 2026-11-24 14:24:05 UTC: \
                   ignored (check the RTC battery)"
                ],
                &[]
            )
        );
    }

    #[test]
    fn save_refuses_times_before_the_build_time() {
        assert_eq!(save(t(10), t(0)), Some(t(10)));
        assert_eq!(save(t(0), t(0)), Some(t(0)));
        assert_eq!(save(t(-1), t(0)), None);
    }
}
