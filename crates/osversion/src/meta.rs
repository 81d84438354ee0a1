//! The meta-balena version, `X.Y.Z[-betaN]`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use crate::{Error, Problem, number};

/// A meta-balena version (`DISTRO_VERSION`): `X.Y.Z` with an optional `-betaN` label.
///
/// Ordered like semver: numbers first, then a beta before its release, then betas numerically
/// (`2.0.0-beta2 < 2.0.0-beta10 < 2.0.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaVersion {
    /// `X`.
    pub major: u32,
    /// `Y`.
    pub minor: u32,
    /// `Z`.
    pub patch: u32,
    /// `N` of a `-betaN` label, `None` for a release.
    pub beta: Option<u32>,
}

impl MetaVersion {
    /// The release `major.minor.patch`.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            beta: None,
        }
    }

    /// The same numbers with the label `-beta{beta}`.
    pub const fn with_beta(self, beta: u32) -> Self {
        Self {
            beta: Some(beta),
            ..self
        }
    }

    /// Whether this is a beta rather than a release.
    pub const fn is_beta(&self) -> bool {
        self.beta.is_some()
    }

    /// Parses `X.Y.Z[-betaN]` with nothing around it; shared with [`crate::HostOsVersion`].
    pub(crate) fn parse_part(text: &str) -> Result<Self, Problem> {
        let (core, label) = match text.split_once('-') {
            Some((core, label)) => (core, Some(label)),
            None => (text, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts[..] else {
            return Err(Problem::PartCount { found: parts.len() });
        };
        let version = Self::new(
            number::parse("major", major)?,
            number::parse("minor", minor)?,
            number::parse("patch", patch)?,
        );
        let Some(label) = label else {
            return Ok(version);
        };
        if let Some(beta) = label.strip_prefix("beta") {
            Ok(version.with_beta(number::parse("beta", beta)?))
        } else if label.starts_with("rev") {
            Err(Problem::DashRevision)
        } else {
            Err(Problem::UnknownLabel {
                label: label.to_owned(),
            })
        }
    }
}

/// Refuses what no version may look like: the empty string and whitespace anywhere.
pub(crate) fn check_text(text: &str) -> Result<(), Problem> {
    if text.is_empty() {
        Err(Problem::Empty)
    } else if text.chars().any(char::is_whitespace) {
        Err(Problem::Whitespace)
    } else {
        Ok(())
    }
}

impl FromStr for MetaVersion {
    type Err = Error;

    /// Parses `X.Y.Z[-betaN]` exactly: no whitespace, no leading zeros, no `+revN`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let parse = || {
            check_text(s)?;
            match s.split_once('+') {
                Some((_, suffix)) if suffix.starts_with("rev") => Err(Problem::RevisionOnMeta),
                Some((_, suffix)) => Err(Problem::UnknownSuffix {
                    suffix: suffix.to_owned(),
                }),
                None => Self::parse_part(s),
            }
        };
        parse().map_err(|problem| Error::InvalidMeta {
            input: s.to_owned(),
            problem,
        })
    }
}

impl fmt::Display for MetaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(beta) = self.beta {
            write!(f, "-beta{beta}")?;
        }
        Ok(())
    }
}

impl Ord for MetaVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let numbers = (self.major, self.minor, self.patch);
        numbers
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.beta, other.beta) {
                (None, None) => Ordering::Equal,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(&b),
            })
    }
}

impl PartialOrd for MetaVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(s: &str) -> MetaVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_releases_and_betas() {
        assert_eq!(meta("1.2.3"), MetaVersion::new(1, 2, 3));
        assert_eq!(meta("2.0.0-beta1"), MetaVersion::new(2, 0, 0).with_beta(1));
        assert_eq!(meta("0.0.0-beta0"), MetaVersion::new(0, 0, 0).with_beta(0));
        assert_eq!(meta("10.20.30"), MetaVersion::new(10, 20, 30));
        assert!(meta("1.2.3-beta1").is_beta());
        assert!(!meta("1.2.3").is_beta());
    }

    #[test]
    fn displays_what_it_parses() {
        for text in ["1.2.3", "1.2.3-beta1", "2.0.0-beta10", "0.0.0"] {
            assert_eq!(meta(text).to_string(), text);
        }
    }

    #[test]
    fn orders_like_semver() {
        let ordered = [
            "1.2.3-beta1",
            "1.2.3-beta2",
            "1.2.3",
            "1.2.4-beta1",
            "1.2.4",
            "1.10.0",
            "2.0.0-beta2",
            "2.0.0-beta10",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(meta(pair[0]) < meta(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn refuses_malformed_versions() {
        let cases = [
            ("", "it is empty"),
            (" 1.2.3", "it contains whitespace"),
            ("1.2.3\n", "it contains whitespace"),
            ("1.2", "found 2 dot-separated part(s) instead of 3"),
            ("1.2.3.4", "found 4 dot-separated part(s) instead of 3"),
            ("1..3", "the minor number is empty"),
            ("01.2.3", "the major number \"01\" has a leading zero"),
            ("v1.2.3", "the major number \"v1\" is not a decimal number"),
            ("1.2.3-beta", "the beta number is empty"),
            ("1.2.3-beta01", "the beta number \"01\" has a leading zero"),
            ("1.2.3-rc1", "unknown label \"rc1\", only betaN is allowed"),
            ("1.2.3-rev1", "board revisions are written +revN, not -revN"),
            ("1.2.3+rev1", "a meta-balena version has no +revN"),
            (
                "1.2.3+dev",
                "unknown suffix \"+dev\", only +revN is allowed",
            ),
        ];
        for (input, problem) in cases {
            assert_eq!(
                input.parse::<MetaVersion>().unwrap_err().to_string(),
                format!(
                    "invalid meta-balena version {input:?}: expected X.Y.Z[-betaN] ({problem})"
                ),
            );
        }
    }
}
