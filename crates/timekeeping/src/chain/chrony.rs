//! Reading `chronyc` output and chrony's health check (balenaOS `chrony-healthcheck`).

use super::Source;

/// `chronyc` arguments listing the sources without name lookups.
pub const SOURCES_ARGS: [&str; 2] = ["-n", "sources"];
/// `chronyc` arguments showing the tracking state without name lookups.
pub const TRACKING_ARGS: [&str; 2] = ["-n", "tracking"];
/// `chronyc` arguments sending four quick measurements to every source.
pub const BURST_ARGS: [&str; 2] = ["burst", "4/4"];
/// `chronyc` arguments stepping the clock to the current estimate.
pub const MAKESTEP_ARGS: [&str; 1] = ["makestep"];
/// `chronyc` arguments waiting up to 60 s for an offset of at most 0.1 s.
pub const WAITSYNC_ARGS: [&str; 5] = ["waitsync", "60", "0.1", "0.0", "1"];
/// What the failing health check logs (balenaOS wording).
pub const LOST_SYNC_MESSAGE: &str = "NTP time lost synchronization - restarting chronyd";

/// `chronyc` output that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChronyError {
    /// A line the output must have is not there.
    #[error("chronyc tracking output has no {field:?} line")]
    MissingField {
        /// The field name, e.g. `Leap status`.
        field: &'static str,
    },
    /// A line whose value cannot be read.
    #[error("invalid {field:?} value {value:?} in chronyc tracking output")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// The value as printed.
        value: String,
    },
}

/// One source line of `chronyc -n sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    /// The two-character mode and state column: `^*` is a selected server, `^+` a combined
    /// one, `^-` a not-combined one, `^?` an unreachable one, `=` a peer, `#` a reference clock.
    pub mode_state: String,
    /// The address (or reference clock name).
    pub name: String,
}

/// Reads the source lines of `chronyc -n sources`, skipping the header, the `=====` rule and
/// anything else that is not a source line.
pub fn parse_sources(output: &str) -> Vec<SourceLine> {
    output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let mode_state = fields.next()?;
            let name = fields.next()?;
            let mut chars = mode_state.chars();
            let (mode, state) = (chars.next()?, chars.next()?);
            let is_source =
                chars.next().is_none() && "^=#".contains(mode) && "*+-?x~".contains(state);
            is_source.then(|| SourceLine {
                mode_state: mode_state.to_owned(),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// Whether chrony has selected a source to synchronise to (a state of `*`).
pub fn has_selected(sources: &[SourceLine]) -> bool {
    sources
        .iter()
        .any(|s| s.mode_state.chars().nth(1) == Some('*'))
}

/// The parts of `chronyc -n tracking` the OS cares about.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracking {
    /// The reference ID in hexadecimal, `00000000` when not synchronised.
    pub reference_id: String,
    /// The address or name after the ID, `None` when empty.
    pub reference_name: Option<String>,
    /// How far the system clock is ahead of NTP time, in seconds (negative when behind;
    /// chronyc prints `fast` or `slow`). chronyd slews this away.
    pub system_time_offset_secs: f64,
    /// The leap status; [`LeapStatus::NotSynchronised`] when chrony has no time.
    pub leap_status: LeapStatus,
}

impl Tracking {
    /// The [`Source`] to report for the system time: [`Source::Ntp`] when synchronised.
    pub fn source(&self) -> Source {
        if self.leap_status == LeapStatus::NotSynchronised {
            Source::Unchanged
        } else {
            Source::Ntp
        }
    }
}

/// chrony's leap status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeapStatus {
    /// Synchronised, no leap second pending.
    Normal,
    /// A leap second will be inserted.
    InsertSecond,
    /// A leap second will be deleted.
    DeleteSecond,
    /// Not synchronised.
    NotSynchronised,
    /// Anything a newer chrony may print.
    Other(String),
}

/// Reads `chronyc -n tracking` output.
pub fn parse_tracking(output: &str) -> Result<Tracking, ChronyError> {
    let field = |name: &'static str| {
        output
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim())
            .ok_or(ChronyError::MissingField { field: name })
    };
    let invalid = |field: &'static str, value: &str| ChronyError::InvalidField {
        field,
        value: value.to_owned(),
    };

    let reference = field("Reference ID")?;
    let (reference_id, rest) = reference.split_once(' ').unwrap_or((reference, ""));
    if reference_id.is_empty() || !reference_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid("Reference ID", reference));
    }
    let reference_name = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .filter(|name| !name.is_empty())
        .map(str::to_owned);

    let system = field("System time")?;
    let system_time_offset_secs = match system.split_whitespace().collect::<Vec<_>>()[..] {
        [number, "seconds", direction, "of", "NTP", "time"] => {
            let secs: f64 = number.parse().map_err(|_| invalid("System time", system))?;
            match direction {
                "fast" => secs,
                "slow" => -secs,
                _ => return Err(invalid("System time", system)),
            }
        }
        _ => return Err(invalid("System time", system)),
    };

    let leap_status = match field("Leap status")? {
        "Normal" => LeapStatus::Normal,
        "Insert second" => LeapStatus::InsertSecond,
        "Delete second" => LeapStatus::DeleteSecond,
        "Not synchronised" => LeapStatus::NotSynchronised,
        other => LeapStatus::Other(other.to_owned()),
    };

    Ok(Tracking {
        reference_id: reference_id.to_owned(),
        reference_name,
        system_time_offset_secs,
        leap_status,
    })
}

/// The next step of a health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// chrony is synchronised: the check passes.
    Ok,
    /// No source is selected: run [`BURST_ARGS`] and [`MAKESTEP_ARGS`], then [`WAITSYNC_ARGS`],
    /// then ask again with its result.
    Burst,
    /// A source is selected: run [`WAITSYNC_ARGS`], then ask again with its result.
    WaitSync,
    /// `waitsync` failed: log [`LOST_SYNC_MESSAGE`] and fail the check so chronyd is restarted.
    Restart,
}

/// The health check as a function: `selected` is [`has_selected`] of `chronyc -n sources`;
/// `waitsync_ok` is `None` until `chronyc waitsync` has run, then whether it succeeded.
///
/// balenaOS `chrony-healthcheck`, run periodically by the watchdog wrapper around chronyd:
///
/// 1. `chronyc -n sources` ([`SOURCES_ARGS`]); if no source is selected (`*`), run
///    `chronyc burst 4/4` ([`BURST_ARGS`]) and `chronyc makestep` ([`MAKESTEP_ARGS`]);
/// 2. `chronyc waitsync 60 0.1 0.0 1` ([`WAITSYNC_ARGS`]: up to 60 tries 1 s apart until the
///    offset is at most 0.1 s);
/// 3. if that fails, log [`LOST_SYNC_MESSAGE`] and fail the check, so that the watchdog stops
///    being fed and systemd restarts chronyd.
///
/// ```
/// use timekeeping::chain::{Health, health};
/// assert_eq!(health(false, None), Health::Burst);
/// assert_eq!(health(true, None), Health::WaitSync);
/// assert_eq!(health(false, Some(true)), Health::Ok);
/// assert_eq!(health(true, Some(false)), Health::Restart);
/// ```
pub fn health(selected: bool, waitsync_ok: Option<bool>) -> Health {
    match (selected, waitsync_ok) {
        (_, Some(true)) => Health::Ok,
        (_, Some(false)) => Health::Restart,
        (false, None) => Health::Burst,
        (true, None) => Health::WaitSync,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCES: &str = "\
MS Name/IP address         Stratum Poll Reach LastRx Last sample
===============================================================================
^* 162.159.200.123               3  14   377   12m   +123us[ +456us] +/-   15ms
^- 2001:db8::1                   2  14   377   13m  -1234us[-1234us] +/-   30ms
^? 192.0.2.7                     0  14     0     -     +0ns[   +0ns] +/-    0ns
#x PPS0                          0   4   377     1    +12ns[  +12ns] +/-  100ns
";

    #[test]
    fn sources_lines_are_read_and_headers_skipped() {
        let got = parse_sources(SOURCES);
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|s| (s.mode_state.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("^*", "162.159.200.123"),
                ("^-", "2001:db8::1"),
                ("^?", "192.0.2.7"),
                ("#x", "PPS0")
            ]
        );
        assert!(has_selected(&got));
    }

    #[test]
    fn no_star_means_nothing_selected() {
        let output = "210 Number of sources = 2\n\
                      MS Name/IP address         Stratum Poll Reach LastRx Last sample\n\
                      ==================================================\n\
                      ^+ 192.0.2.1   2  6  377  12  +1us[ +1us] +/- 1ms\n\
                      ^? 192.0.2.2   0  6    0   -  +0ns[ +0ns] +/- 0ns\n";
        let got = parse_sources(output);
        assert_eq!(got.len(), 2);
        assert!(!has_selected(&got));
        assert!(!has_selected(&parse_sources("")));
        let header_only = "MS Name/IP address         Stratum Poll Reach LastRx Last sample\n\
                           ===============================================================\n";
        assert_eq!(parse_sources(header_only), []);
    }

    const TRACKING: &str = "\
Reference ID    : A29FC87B (162.159.200.123)
Stratum         : 4
Ref time (UTC)  : Tue Nov 24 14:24:05 2026
System time     : 0.000001234 seconds slow of NTP time
Last offset     : -0.000012345 seconds
RMS offset      : 0.000012345 seconds
Frequency       : 1.234 ppm fast
Residual freq   : -0.001 ppm
Skew            : 0.012 ppm
Root delay      : 0.012345678 seconds
Root dispersion : 0.001234567 seconds
Update interval : 64.2 seconds
Leap status     : Normal
";

    #[test]
    fn tracking_is_read() {
        let got = parse_tracking(TRACKING).unwrap();
        assert_eq!(
            got,
            Tracking {
                reference_id: "A29FC87B".to_owned(),
                reference_name: Some("162.159.200.123".to_owned()),
                system_time_offset_secs: -0.000001234,
                leap_status: LeapStatus::Normal,
            }
        );
        assert_eq!(got.source(), Source::Ntp);
    }

    #[test]
    fn unsynchronised_tracking_is_read() {
        let output = "Reference ID    : 00000000 ()\n\
                      Stratum         : 0\n\
                      Ref time (UTC)  : Thu Jan 01 00:00:00 1970\n\
                      System time     : 0.500000000 seconds fast of NTP time\n\
                      Leap status     : Not synchronised\n";
        let got = parse_tracking(output).unwrap();
        assert_eq!(got.reference_id, "00000000");
        assert_eq!(got.reference_name, None);
        assert_eq!(got.system_time_offset_secs, 0.5);
        assert_eq!(got.leap_status, LeapStatus::NotSynchronised);
        assert_eq!(got.source(), Source::Unchanged);
    }

    #[test]
    fn ipv6_reference_names_keep_their_colons() {
        let output = TRACKING.replace("A29FC87B (162.159.200.123)", "7F7F0101 (2001:db8::1)");
        let got = parse_tracking(&output).unwrap();
        assert_eq!(got.reference_name.as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn bad_tracking_output_names_the_field() {
        assert_eq!(
            parse_tracking("").unwrap_err().to_string(),
            "chronyc tracking output has no \"Reference ID\" line"
        );
        let output = TRACKING.replace("0.000001234 seconds slow", "0.000001234 seconds sideways");
        assert_eq!(
            parse_tracking(&output).unwrap_err().to_string(),
            "invalid \"System time\" value \"0.000001234 seconds sideways of NTP time\" in \
             chronyc tracking output"
        );
        let output = TRACKING.replace("A29FC87B", "not-hex");
        assert!(matches!(
            parse_tracking(&output),
            Err(ChronyError::InvalidField {
                field: "Reference ID",
                ..
            })
        ));
        let output = TRACKING.replace("Leap status     : Normal\n", "");
        assert_eq!(
            parse_tracking(&output),
            Err(ChronyError::MissingField {
                field: "Leap status"
            })
        );
    }

    #[test]
    fn health_follows_the_balenaos_check() {
        assert_eq!(health(false, None), Health::Burst);
        assert_eq!(health(true, None), Health::WaitSync);
        assert_eq!(health(true, Some(true)), Health::Ok);
        assert_eq!(health(false, Some(true)), Health::Ok);
        assert_eq!(health(true, Some(false)), Health::Restart);
        assert_eq!(health(false, Some(false)), Health::Restart);
    }
}
