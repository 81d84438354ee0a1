//! Taking the time from the connectivity URI's `Date` header.
//!
//! balenaOS runs `curl -k -I` on the connectivity URI until it answers `204`, then sets the
//! clock from the `Date` header when it is more than 2 s off. baleen keeps those rules and adds
//! three checks, because nothing else vouches for the answer: the date must not be before the
//! build time, must lie inside the server certificate's validity window (for `https`), and two
//! answers must agree.

use std::time::{Duration, SystemTime};

use super::signed_secs;
use crate::formats::describe;

/// The clock is stepped only when it is off by more than this (balenaOS: 2 s).
pub const STEP_THRESHOLD: Duration = Duration::from_secs(2);

/// Two answers agree when their dates differ by at most this much more than the monotonic time
/// between them. `Date` has a resolution of one second, so this allows for rounding and
/// network delay.
pub const AGREEMENT_TOLERANCE: Duration = Duration::from_secs(2);

/// The first retry delay.
pub const BACKOFF_START: Duration = Duration::from_secs(2);

/// The longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(64);

/// One answer of the connectivity URI, as [`crate::https::probe`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The `Date` header, when present (a malformed one is a probe error instead).
    pub date: Option<SystemTime>,
    /// When the answer's headers were read, on the [`crate::monotonic_now`] clock.
    pub received_at_mono: Duration,
    /// For `https`: the window `[latest notBefore, earliest notAfter]` of the certificates the
    /// server sent, inside which the chain was verified.
    pub cert_validity: Option<(SystemTime, SystemTime)>,
}

/// What to do after the latest answer.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpsDecision {
    /// Two answers agree and the clock is off by more than [`STEP_THRESHOLD`]: set it to `to`.
    /// `offset_secs` is `to - now`, negative when the clock goes back.
    Step {
        /// The time to set.
        to: SystemTime,
        /// How far the clock moves, in seconds.
        offset_secs: f64,
    },
    /// Two answers agree and the clock is within [`STEP_THRESHOLD`] of them.
    InSync {
        /// `server time - now`, in seconds.
        offset_secs: f64,
    },
    /// The latest answer is a `204` without a `Date` header: give up without error, as
    /// balenaOS does (warn and exit 0).
    NoDate(String),
    /// The latest answer cannot be trusted: back off and probe again.
    Untrusted(String),
    /// The latest answer is acceptable but nothing agrees with it yet: probe again.
    Retry(String),
}

/// Decides from this run's `answers` (oldest first), the current time `now`, the current
/// monotonic time `mono_now` (same clock as [`Answer::received_at_mono`]) and the build time
/// `floor`.
///
/// The latest answer must be a `204` with a `Date` that is not before `floor` and, when the
/// certificate window is known, inside it. It must agree with an earlier answer that passes the
/// same checks: their dates may differ from the monotonic time between them by at most
/// [`AGREEMENT_TOLERANCE`]. The server time is then the latest date plus the monotonic time
/// elapsed since it was received, and the clock is stepped to it only when off by more than
/// [`STEP_THRESHOLD`].
///
/// # The caller's loop
///
/// With `answers` holding this run's answers, oldest first:
///
/// * after a probe error (no [`Answer`]) or on [`HttpsDecision::Untrusted`], sleep
///   [`backoff`]`(failures)`, count one more failure and probe again (balenaOS retries forever);
/// * on [`HttpsDecision::Retry`], probe again after [`BACKOFF_START`] to get a second answer;
/// * on [`HttpsDecision::NoDate`], warn and stop without error, leaving the time to NTP;
/// * on [`HttpsDecision::Step`], set the clock (warn when `offset_secs` is negative, i.e. the
///   clock goes back), write the RTC and stop;
/// * on [`HttpsDecision::InSync`], stop.
pub fn https_decision(
    now: SystemTime,
    mono_now: Duration,
    floor: SystemTime,
    answers: &[Answer],
) -> HttpsDecision {
    let Some((last, earlier)) = answers.split_last() else {
        return HttpsDecision::Retry("no answer yet".to_owned());
    };
    let date = match trusted_date(last, floor) {
        Ok(date) => date,
        Err(Rejection::NoDate) => {
            return HttpsDecision::NoDate(
                "answered 204 without a Date header: cannot take the time from it".to_owned(),
            );
        }
        Err(rejection) => return HttpsDecision::Untrusted(rejection.message(floor)),
    };

    let mut agreed = false;
    let mut smallest_disagreement: Option<f64> = None;
    for previous in earlier.iter().rev() {
        let Ok(previous_date) = trusted_date(previous, floor) else {
            continue;
        };
        let mono_between =
            last.received_at_mono.as_secs_f64() - previous.received_at_mono.as_secs_f64();
        let disagreement = (signed_secs(date, previous_date) - mono_between).abs();
        if disagreement <= AGREEMENT_TOLERANCE.as_secs_f64() {
            agreed = true;
            break;
        }
        smallest_disagreement =
            Some(smallest_disagreement.map_or(disagreement, |s| s.min(disagreement)));
    }
    if !agreed {
        return HttpsDecision::Retry(match smallest_disagreement {
            None => format!(
                "one answer (Date {}) is not enough: waiting for a second one that agrees",
                describe(date)
            ),
            Some(by) => format!(
                "Date {} disagrees with the earlier answers by {by:.1} s or more (allowed: {} s): \
                 waiting for one that agrees",
                describe(date),
                AGREEMENT_TOLERANCE.as_secs()
            ),
        });
    }

    let to = date + mono_now.saturating_sub(last.received_at_mono);
    let offset_secs = signed_secs(to, now);
    if offset_secs.abs() > STEP_THRESHOLD.as_secs_f64() {
        HttpsDecision::Step { to, offset_secs }
    } else {
        HttpsDecision::InSync { offset_secs }
    }
}

/// The delay before retry number `attempt` (0 for the first retry): 2 s, doubling, at most
/// 64 s (2, 4, 8, 16, 32, 64, 64, ...).
pub fn backoff(attempt: u32) -> Duration {
    let max_doublings = (BACKOFF_MAX.as_secs() / BACKOFF_START.as_secs()).ilog2();
    BACKOFF_START * (1 << attempt.min(max_doublings))
}

/// Why an answer is not used.
enum Rejection {
    Status(u16),
    NoDate,
    BeforeFloor(SystemTime),
    OutsideCertificate(SystemTime, (SystemTime, SystemTime)),
}

impl Rejection {
    fn message(&self, floor: SystemTime) -> String {
        match self {
            Rejection::Status(status) => {
                format!("answered {status}, not 204: a captive portal or a wrong URI?")
            }
            Rejection::NoDate => "answered 204 without a Date header".to_owned(),
            Rejection::BeforeFloor(date) => format!(
                "Date {} is before the build time {}: rejected",
                describe(*date),
                describe(floor)
            ),
            Rejection::OutsideCertificate(date, (not_before, not_after)) => format!(
                "Date {} is outside the validity of the server certificate ({} to {}): rejected",
                describe(*date),
                describe(*not_before),
                describe(*not_after)
            ),
        }
    }
}

/// The answer's date, if the answer can be used on its own.
fn trusted_date(answer: &Answer, floor: SystemTime) -> Result<SystemTime, Rejection> {
    if answer.status != 204 {
        return Err(Rejection::Status(answer.status));
    }
    let date = answer.date.ok_or(Rejection::NoDate)?;
    if date < floor {
        return Err(Rejection::BeforeFloor(date));
    }
    if let Some(window) = answer.cert_validity {
        if date < window.0 || date > window.1 {
            return Err(Rejection::OutsideCertificate(date, window));
        }
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::t;

    fn answer(status: u16, date: Option<SystemTime>, mono_secs: u64) -> Answer {
        Answer {
            status,
            date,
            received_at_mono: Duration::from_secs(mono_secs),
            cert_validity: None,
        }
    }

    fn ok(date: SystemTime, mono_secs: u64) -> Answer {
        answer(204, Some(date), mono_secs)
    }

    fn mono(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    const FLOOR: i64 = -86_400;

    #[test]
    fn no_answer_yet_means_retry() {
        assert_eq!(
            https_decision(t(0), mono(0), t(FLOOR), &[]),
            HttpsDecision::Retry("no answer yet".to_owned())
        );
    }

    #[test]
    fn only_204_is_trusted() {
        for status in [200, 302, 404, 503] {
            let got = https_decision(t(0), mono(0), t(FLOOR), &[answer(status, Some(t(0)), 0)]);
            assert_eq!(
                got,
                HttpsDecision::Untrusted(format!(
                    "answered {status}, not 204: a captive portal or a wrong URI?"
                ))
            );
        }
    }

    #[test]
    fn a_302_after_good_answers_is_still_untrusted() {
        let answers = [ok(t(0), 0), ok(t(5), 5), answer(302, Some(t(10)), 10)];
        let got = https_decision(t(0), mono(10), t(FLOOR), &answers);
        assert_eq!(
            got,
            HttpsDecision::Untrusted(
                "answered 302, not 204: a captive portal or a wrong URI?".to_owned()
            )
        );
    }

    #[test]
    fn a_204_without_date_gives_up_without_error() {
        let got = https_decision(t(0), mono(0), t(FLOOR), &[answer(204, None, 0)]);
        assert_eq!(
            got,
            HttpsDecision::NoDate(
                "answered 204 without a Date header: cannot take the time from it".to_owned()
            )
        );
    }

    #[test]
    fn a_date_before_the_build_time_is_rejected() {
        let got = https_decision(t(0), mono(0), t(0), &[ok(t(-1), 0)]);
        assert_eq!(
            got,
            HttpsDecision::Untrusted(
                "Date 2026-11-24 14:24:04 UTC is before the build time 2026-11-24 14:24:05 UTC: \
                 rejected"
                    .to_owned()
            )
        );
    }

    #[test]
    fn a_date_outside_the_certificate_window_is_rejected() {
        let window = (t(-3600), t(3600));
        for date in [t(-3601), t(3601)] {
            let answers = [Answer {
                cert_validity: Some(window),
                ..ok(date, 0)
            }];
            let HttpsDecision::Untrusted(reason) =
                https_decision(t(0), mono(0), t(FLOOR), &answers)
            else {
                panic!("accepted a date outside the certificate window");
            };
            assert!(
                reason.ends_with(
                    "is outside the validity of the server certificate (2026-11-24 13:24:05 UTC \
                     to 2026-11-24 15:24:05 UTC): rejected"
                ),
                "{reason}"
            );
        }
        // The window's edges are inside it.
        let answers = [t(-3600), t(3600)].map(|date| Answer {
            cert_validity: Some(window),
            ..ok(date, 0)
        });
        let got = https_decision(t(0), mono(0), t(FLOOR), &answers[..1]);
        assert!(matches!(got, HttpsDecision::Retry(_)), "{got:?}");
        let got = https_decision(t(0), mono(0), t(FLOOR), &answers[1..]);
        assert!(matches!(got, HttpsDecision::Retry(_)), "{got:?}");
    }

    #[test]
    fn one_answer_is_not_enough() {
        let got = https_decision(t(0), mono(0), t(FLOOR), &[ok(t(3600), 0)]);
        assert_eq!(
            got,
            HttpsDecision::Retry(
                "one answer (Date 2026-11-24 15:24:05 UTC) is not enough: waiting for a second \
                 one that agrees"
                    .to_owned()
            )
        );
    }

    #[test]
    fn untrusted_earlier_answers_do_not_count_towards_agreement() {
        let answers = [
            answer(302, Some(t(3600)), 0),
            answer(204, None, 1),
            ok(t(-90_000), 2),
            ok(t(3603), 3),
        ];
        let got = https_decision(t(0), mono(3), t(FLOOR), &answers);
        assert!(
            matches!(&got, HttpsDecision::Retry(r) if r.starts_with("one answer")),
            "{got:?}"
        );
    }

    #[test]
    fn two_agreeing_answers_step_the_clock_forward() {
        // Answers 10 s apart on both clocks; the decision is taken 5 s after the second.
        let answers = [ok(t(3600), 100), ok(t(3610), 110)];
        let got = https_decision(t(0), mono(115), t(FLOOR), &answers);
        assert_eq!(
            got,
            HttpsDecision::Step {
                to: t(3615),
                offset_secs: 3615.0
            }
        );
    }

    #[test]
    fn two_agreeing_answers_can_step_the_clock_back() {
        let answers = [ok(t(-600), 0), ok(t(-599), 1)];
        let got = https_decision(t(0), mono(1), t(FLOOR), &answers);
        assert_eq!(
            got,
            HttpsDecision::Step {
                to: t(-599),
                offset_secs: -599.0
            }
        );
    }

    #[test]
    fn agreement_allows_two_seconds_after_monotonic_correction() {
        // 60 s of monotonic time between the answers: dates 58 to 62 s apart agree.
        for second in [3658, 3662] {
            let answers = [ok(t(3600), 0), ok(t(second), 60)];
            let got = https_decision(t(0), mono(60), t(FLOOR), &answers);
            assert!(
                matches!(got, HttpsDecision::Step { .. }),
                "{second}: {got:?}"
            );
        }
        for second in [3657, 3663, 3600] {
            let answers = [ok(t(3600), 0), ok(t(second), 60)];
            let got = https_decision(t(0), mono(60), t(FLOOR), &answers);
            assert!(matches!(got, HttpsDecision::Retry(_)), "{second}: {got:?}");
        }
        let answers = [ok(t(3600), 0), ok(t(3600), 60)];
        assert_eq!(
            https_decision(t(0), mono(60), t(FLOOR), &answers),
            HttpsDecision::Retry(
                "Date 2026-11-24 15:24:05 UTC disagrees with the earlier answers by 60.0 s or \
                 more (allowed: 2 s): waiting for one that agrees"
                    .to_owned()
            )
        );
    }

    #[test]
    fn any_earlier_trusted_answer_may_agree() {
        let answers = [ok(t(3600), 0), ok(t(99_999), 10), ok(t(3620), 20)];
        let got = https_decision(t(0), mono(20), t(FLOOR), &answers);
        assert_eq!(
            got,
            HttpsDecision::Step {
                to: t(3620),
                offset_secs: 3620.0
            }
        );
    }

    #[test]
    fn within_two_seconds_is_in_sync() {
        for (now, offset) in [(t(-2), 2.0), (t(2), -2.0), (t(0), 0.0)] {
            let answers = [ok(t(-1), 0), ok(t(0), 1)];
            let got = https_decision(now, mono(1), t(FLOOR), &answers);
            assert_eq!(
                got,
                HttpsDecision::InSync {
                    offset_secs: offset
                }
            );
        }
        let answers = [ok(t(-1), 0), ok(t(0), 1)];
        let got = https_decision(t(-3), mono(1), t(FLOOR), &answers);
        assert_eq!(
            got,
            HttpsDecision::Step {
                to: t(0),
                offset_secs: 3.0
            }
        );
    }

    #[test]
    fn the_step_target_counts_monotonic_time_since_the_answer() {
        let answers = [ok(t(0), 0), ok(t(0), 0)];
        let got = https_decision(
            t(-100),
            mono(30) + Duration::from_millis(500),
            t(FLOOR),
            &answers,
        );
        let to = t(30) + Duration::from_millis(500);
        assert_eq!(
            got,
            HttpsDecision::Step {
                to,
                offset_secs: 130.5
            }
        );
        // A monotonic reading older than the answer counts as no time elapsed.
        let got = https_decision(
            t(-100),
            Duration::ZERO,
            t(FLOOR),
            &[ok(t(0), 5), ok(t(0), 5)],
        );
        assert_eq!(
            got,
            HttpsDecision::Step {
                to: t(0),
                offset_secs: 100.0
            }
        );
    }

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_64() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 64, 64, 64]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(64));
    }
}
