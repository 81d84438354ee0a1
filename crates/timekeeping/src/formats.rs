//! The three textual time formats of the chain, all in UTC.
//!
//! * `/etc/timestamp`, the build-time floor written when the image is built:
//!   `YYYYMMDDhhmmss`, e.g. `20261124142405`.
//! * The saved clock (balenaOS `fake-hwclock.data`): `%Y-%m-%d %H:%M:%S`, e.g.
//!   `2026-11-24 14:24:05`, one line.
//! * An HTTP `Date` header, in any of the three forms RFC 7231 §7.1.1.1 requires a recipient to
//!   accept (parsed by the `httpdate` crate, which also checks that the weekday matches).
//!
//! Parsing trims surrounding whitespace (files end in a newline) and is otherwise strict: exact
//! field widths, ASCII digits, calendar-valid fields. Formatting truncates to the second and only
//! writes years 0000 to 9999.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A time string that cannot be read, or a time that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Text that is not a build timestamp.
    #[error("invalid build timestamp {input:?}: expected YYYYMMDDhhmmss in UTC ({problem})")]
    BuildTimestamp {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// Text that is not a saved clock.
    #[error("invalid saved clock {input:?}: expected YYYY-MM-DD hh:mm:ss in UTC ({problem})")]
    SavedClock {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A header value that is not an HTTP date.
    #[error(
        "invalid HTTP Date {input:?}: expected an RFC 7231 date such as \
         \"Sun, 06 Nov 1994 08:49:37 GMT\" with a matching weekday, between 1970 and 9999"
    )]
    HttpDate {
        /// The header value as given.
        input: String,
    },
    /// A time outside the years the file formats can hold.
    #[error(
        "cannot write the time {unix_secs} s since 1970 as a {format}: only years 0000 to 9999 fit"
    )]
    OutOfRange {
        /// Which format: `build timestamp` or `saved clock`.
        format: &'static str,
        /// Seconds since the Unix epoch (negative before 1970), saturated to the `i64` range.
        unix_secs: i64,
    },
}

/// The specific flaw in a build timestamp or saved clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Nothing but whitespace.
    #[error("it is empty")]
    Empty,
    /// The wrong number of characters.
    #[error("it has {found} characters instead of {expected}")]
    Length {
        /// Characters found (after trimming whitespace).
        found: usize,
        /// Characters the format has.
        expected: usize,
    },
    /// A character other than the one the format has at that place.
    #[error("expected {expected} at position {position}, found {found:?}")]
    Unexpected {
        /// 1-based character position in the trimmed text.
        position: usize,
        /// What the format has there: `a digit`, `'-'`, `' '` or `':'`.
        expected: &'static str,
        /// The character found.
        found: char,
    },
    /// A field outside its calendar range (month 13, 31 April, hour 24, second 60).
    #[error("{field} {value} is out of range")]
    OutOfRange {
        /// `month`, `day`, `hour`, `minute` or `second`.
        field: &'static str,
        /// The value found.
        value: u32,
    },
}

const BUILD_LAYOUT: &str = "DDDDDDDDDDDDDD";
const SAVED_LAYOUT: &str = "DDDD-DD-DD DD:DD:DD";

/// Reads `/etc/timestamp` (`YYYYMMDDhhmmss`, UTC).
pub fn parse_build_timestamp(text: &str) -> Result<SystemTime, FormatError> {
    parse_layout(text, BUILD_LAYOUT).map_err(|problem| FormatError::BuildTimestamp {
        input: text.to_owned(),
        problem,
    })
}

/// Writes a time as `/etc/timestamp` does (`YYYYMMDDhhmmss`, UTC, no newline).
pub fn format_build_timestamp(t: SystemTime) -> Result<String, FormatError> {
    let utc = utc(t, "build timestamp")?;
    Ok(format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    ))
}

/// Reads the saved clock (`YYYY-MM-DD hh:mm:ss`, UTC).
pub fn parse_saved_clock(text: &str) -> Result<SystemTime, FormatError> {
    parse_layout(text, SAVED_LAYOUT).map_err(|problem| FormatError::SavedClock {
        input: text.to_owned(),
        problem,
    })
}

/// Writes the saved clock file's content: `YYYY-MM-DD hh:mm:ss` in UTC and a newline.
pub fn format_saved_clock(t: SystemTime) -> Result<String, FormatError> {
    let utc = utc(t, "saved clock")?;
    Ok(format!("{}\n", saved_layout(utc)))
}

/// Reads an HTTP `Date` header value: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`, two-digit years below 70 are 20xx) or asctime
/// (`Sun Nov  6 08:49:37 1994`). Years before 1970 or after 9999 are refused.
pub fn parse_http_date(value: &str) -> Result<SystemTime, FormatError> {
    httpdate::parse_http_date(value).map_err(|_| FormatError::HttpDate {
        input: value.to_owned(),
    })
}

/// A time for log and error messages: `2026-11-24 14:24:05 UTC`, or seconds since the epoch
/// when it does not fit the calendar.
pub(crate) fn describe(t: SystemTime) -> String {
    match utc(t, "") {
        Ok(utc) => format!("{} UTC", saved_layout(utc)),
        Err(_) => format!("{} s since 1970", unix_secs(t)),
    }
}

fn saved_layout(utc: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    )
}

/// Parses `text` against `layout`, where `D` is an ASCII digit and anything else is literal. The
/// digits are year (4), month, day, hour, minute, second (2 each).
fn parse_layout(text: &str, layout: &str) -> Result<SystemTime, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    let found = text.chars().count();
    if found != layout.len() {
        return Err(Problem::Length {
            found,
            expected: layout.len(),
        });
    }
    let mut digits = Vec::with_capacity(14);
    for (i, (c, l)) in text.chars().zip(layout.chars()).enumerate() {
        let ok = match l {
            'D' => c.is_ascii_digit(),
            _ => c == l,
        };
        if !ok {
            return Err(Problem::Unexpected {
                position: i + 1,
                expected: match l {
                    'D' => "a digit",
                    '-' => "'-'",
                    ' ' => "' '",
                    _ => "':'",
                },
                found: c,
            });
        }
        if l == 'D' {
            digits.push(c as u32 - '0' as u32);
        }
    }
    let number = |range: std::ops::Range<usize>| digits[range].iter().fold(0, |n, d| n * 10 + d);
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    let (hour, minute, second) = (number(8..10), number(10..12), number(12..14));
    let out_of_range = |field, value| Problem::OutOfRange { field, value };
    let month_enum = u8::try_from(month)
        .ok()
        .and_then(|m| Month::try_from(m).ok())
        .ok_or(out_of_range("month", month))?;
    // `year` has four digits and `day` two, so the casts cannot truncate.
    let date = Date::from_calendar_date(year as i32, month_enum, day as u8)
        .map_err(|_| out_of_range("day", day))?;
    for (field, value, max) in [
        ("hour", hour, 23),
        ("minute", minute, 59),
        ("second", second, 59),
    ] {
        if value > max {
            return Err(out_of_range(field, value));
        }
    }
    let time = Time::from_hms(hour as u8, minute as u8, second as u8)
        .map_err(|_| out_of_range("second", second))?;
    Ok(SystemTime::from(
        PrimitiveDateTime::new(date, time).assume_utc(),
    ))
}

/// Whole seconds since the epoch, rounded down (so 1969-12-31 23:59:59.5 is -1).
pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            (-secs).saturating_sub(i64::from(d.subsec_nanos() > 0))
        }
    }
}

fn utc(t: SystemTime, format: &'static str) -> Result<OffsetDateTime, FormatError> {
    let unix_secs = unix_secs(t);
    OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .filter(|utc| (0..=9999).contains(&utc.year()))
        .ok_or(FormatError::OutOfRange { format, unix_secs })
}

/// `UNIX_EPOCH + secs`, for tests and callers holding epoch seconds.
pub(crate) fn from_unix_secs(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> SystemTime {
        from_unix_secs(secs)
    }

    // 2026-11-24 14:24:05 UTC
    const T: i64 = 1_795_530_245;

    #[test]
    fn build_timestamp_round_trips() {
        assert_eq!(parse_build_timestamp("20261124142405").unwrap(), at(T));
        assert_eq!(parse_build_timestamp("20261124142405\n").unwrap(), at(T));
        assert_eq!(format_build_timestamp(at(T)).unwrap(), "20261124142405");
        let half = at(T) + Duration::from_millis(999);
        assert_eq!(format_build_timestamp(half).unwrap(), "20261124142405");
        assert_eq!(
            format_build_timestamp(UNIX_EPOCH).unwrap(),
            "19700101000000"
        );
    }

    #[test]
    fn saved_clock_round_trips() {
        assert_eq!(parse_saved_clock("2026-11-24 14:24:05\n").unwrap(), at(T));
        assert_eq!(format_saved_clock(at(T)).unwrap(), "2026-11-24 14:24:05\n");
        assert_eq!(
            format_saved_clock(at(-1) + Duration::from_millis(500)).unwrap(),
            "1969-12-31 23:59:59\n"
        );
        assert_eq!(parse_saved_clock("1969-12-31 23:59:59").unwrap(), at(-1));
    }

    #[test]
    fn build_timestamp_errors_name_the_input_and_the_flaw() {
        let cases = [
            ("", "it is empty"),
            ("2026112414240", "it has 13 characters instead of 14"),
            (
                "2026-124142405",
                "expected a digit at position 5, found '-'",
            ),
            ("20261324142405", "month 13 is out of range"),
            ("20261100142405", "day 0 is out of range"),
            ("20260431142405", "day 31 is out of range"),
            ("20260229000000", "day 29 is out of range"),
            ("20261124242405", "hour 24 is out of range"),
            ("20261124146005", "minute 60 is out of range"),
            ("20261124142460", "second 60 is out of range"),
        ];
        for (input, problem) in cases {
            let err = parse_build_timestamp(input).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid build timestamp {input:?}: expected YYYYMMDDhhmmss in UTC ({problem})"
                )
            );
        }
    }

    #[test]
    fn saved_clock_errors_name_the_input_and_the_flaw() {
        let err = parse_saved_clock("2026-11-24T14:24:05").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid saved clock \"2026-11-24T14:24:05\": expected YYYY-MM-DD hh:mm:ss in UTC \
             (expected ' ' at position 11, found 'T')"
        );
        let err = parse_saved_clock("2026-11-24 14:24:0x").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(expected a digit at position 19, found 'x')")
        );
        let err = parse_saved_clock("2026-11-24 14:24:05 UTC").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(it has 23 characters instead of 19)")
        );
        let err = parse_saved_clock("２026-11-24 14:24:05").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(expected a digit at position 1, found '２')")
        );
    }

    #[test]
    fn out_of_range_times_cannot_be_written() {
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(
            format_saved_clock(far).unwrap_err().to_string(),
            "cannot write the time 400000000000 s since 1970 as a saved clock: only years 0000 \
             to 9999 fit"
        );
        assert!(format_build_timestamp(far).is_err());
    }

    #[test]
    fn http_dates_in_all_three_forms() {
        let expected = at(784_111_777); // 1994-11-06 08:49:37 UTC
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            " Sun, 06 Nov 1994 08:49:37 GMT ",
        ] {
            assert_eq!(parse_http_date(value).unwrap(), expected, "{value}");
        }
        assert_eq!(
            parse_http_date("Tue, 24 Nov 2026 14:24:05 GMT").unwrap(),
            at(T)
        );
        // Two-digit years below 70 are in this century.
        assert_eq!(
            parse_http_date("Tuesday, 24-Nov-26 14:24:05 GMT").unwrap(),
            at(T)
        );
    }

    #[test]
    fn bad_http_dates_are_refused() {
        for value in [
            "",
            "garbage",
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 31 Nov 1994 08:49:37 GMT", // no 31 November
            "Sun, 06 Nov 1994 24:49:37 GMT",
            "Sun, 06 Nov 1994 08:60:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Thu, 01 Jan 1960 00:00:00 GMT", // before 1970
            "Sun, 06 Nov 1994 08:49:37 +0000",
        ] {
            let err = parse_http_date(value).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "invalid HTTP Date {value:?}: expected an RFC 7231 date such as \
                     \"Sun, 06 Nov 1994 08:49:37 GMT\" with a matching weekday, between 1970 \
                     and 9999"
                )
            );
        }
    }

    #[test]
    fn describe_is_readable() {
        assert_eq!(describe(at(T)), "2026-11-24 14:24:05 UTC");
    }
}
