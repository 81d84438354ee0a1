//! The host OS (board) version, `X.Y.Z[-betaN][+revN]`.

use std::fmt;
use std::str::FromStr;

use crate::meta::check_text;
use crate::{Error, MetaVersion, Problem, number};

/// A host OS version (`HOSTOS_VERSION`): a meta-balena version plus a board revision.
///
/// Revision 0 is the first board release on that meta version and is written bare (`1.2.3`);
/// later ones append `+revN` (`1.2.3+rev1`). Ordered by meta version, then revision:
/// `1.2.3 < 1.2.3+rev1 < 1.2.3+rev2 < 1.2.4-beta1 < 1.2.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostOsVersion {
    /// The meta-balena version the board release is based on.
    pub meta: MetaVersion,
    /// The board revision on top of `meta`; 0 for the first.
    pub rev: u32,
}

impl HostOsVersion {
    /// Board revision `rev` of `meta`.
    pub const fn new(meta: MetaVersion, rev: u32) -> Self {
        Self { meta, rev }
    }

    /// The first board release on a newer meta-balena version: revision 0 of `new_meta`, so
    /// `1.2.3+rev4` with meta `1.2.4` becomes `1.2.4`.
    ///
    /// Refuses a `new_meta` that is not higher than the current one: the result would not be
    /// newer than `self` (`1.2.3+rev4` would go back to `1.2.3`).
    pub fn bump_meta(&self, new_meta: MetaVersion) -> Result<Self, Error> {
        if new_meta <= self.meta {
            return Err(Error::MetaNotNewer {
                current: *self,
                new: new_meta,
            });
        }
        Ok(Self::new(new_meta, 0))
    }

    /// The next board revision on the same meta version: `1.2.3` → `1.2.3+rev1`.
    pub fn next_revision(&self) -> Result<Self, Error> {
        let rev = self
            .rev
            .checked_add(1)
            .ok_or(Error::RevisionOverflow { current: *self })?;
        Ok(Self::new(self.meta, rev))
    }
}

impl From<MetaVersion> for HostOsVersion {
    /// The first board release on `meta` (revision 0).
    fn from(meta: MetaVersion) -> Self {
        Self::new(meta, 0)
    }
}

impl FromStr for HostOsVersion {
    type Err = Error;

    /// Parses `X.Y.Z[-betaN][+revN]` exactly: no whitespace, no leading zeros, no `+rev0`.
    fn from_str(s: &str) -> Result<Self, Error> {
        let parse = || {
            check_text(s)?;
            let (meta, rev) = match s.split_once('+') {
                None => (s, 0),
                Some((meta, suffix)) => {
                    let Some(rev) = suffix.strip_prefix("rev") else {
                        return Err(Problem::UnknownSuffix {
                            suffix: suffix.to_owned(),
                        });
                    };
                    match number::parse("revision", rev)? {
                        0 => return Err(Problem::RevisionZero),
                        rev => (meta, rev),
                    }
                }
            };
            Ok(Self::new(MetaVersion::parse_part(meta)?, rev))
        };
        parse().map_err(|problem| Error::InvalidHostOs {
            input: s.to_owned(),
            problem,
        })
    }
}

impl fmt::Display for HostOsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.meta)?;
        if self.rev != 0 {
            write!(f, "+rev{}", self.rev)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> HostOsVersion {
        s.parse().unwrap()
    }

    fn meta(s: &str) -> MetaVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_bare_revised_and_beta_versions() {
        assert_eq!(v("1.2.3"), HostOsVersion::new(MetaVersion::new(1, 2, 3), 0));
        assert_eq!(
            v("1.2.3+rev2"),
            HostOsVersion::new(MetaVersion::new(1, 2, 3), 2)
        );
        assert_eq!(
            v("2.0.0-beta1+rev3"),
            HostOsVersion::new(MetaVersion::new(2, 0, 0).with_beta(1), 3)
        );
    }

    #[test]
    fn displays_what_it_parses() {
        for text in ["1.2.3", "1.2.3+rev1", "1.2.3-beta1", "2.0.0-beta10+rev12"] {
            assert_eq!(v(text).to_string(), text);
        }
        assert_eq!(HostOsVersion::from(meta("1.2.3")).to_string(), "1.2.3");
    }

    #[test]
    fn orders_by_meta_then_revision() {
        let ordered = [
            "1.2.3-beta1",
            "1.2.3-beta1+rev1",
            "1.2.3-beta2",
            "1.2.3",
            "1.2.3+rev1",
            "1.2.3+rev2",
            "1.2.3+rev10",
            "1.2.4-beta1",
            "1.2.4",
            "2.0.0-beta2",
            "2.0.0-beta10",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn meta_bump_resets_the_revision() {
        assert_eq!(
            v("1.2.3+rev4")
                .bump_meta(meta("1.2.4"))
                .unwrap()
                .to_string(),
            "1.2.4"
        );
        assert_eq!(
            v("1.2.3").bump_meta(meta("2.0.0-beta1")).unwrap(),
            v("2.0.0-beta1")
        );
        assert_eq!(
            v("2.0.0-beta1+rev2")
                .bump_meta(meta("2.0.0-beta2"))
                .unwrap(),
            v("2.0.0-beta2")
        );
        assert_eq!(
            v("2.0.0-beta2").bump_meta(meta("2.0.0")).unwrap(),
            v("2.0.0")
        );
    }

    #[test]
    fn meta_bump_refuses_lower_or_equal_meta() {
        assert_eq!(
            v("1.2.3+rev4")
                .bump_meta(meta("1.2.2"))
                .unwrap_err()
                .to_string(),
            "cannot move OS version 1.2.3+rev4 to meta-balena 1.2.2: the new meta-balena version must be higher than 1.2.3"
        );
        assert_eq!(
            v("1.2.3+rev4").bump_meta(meta("1.2.3")),
            Err(Error::MetaNotNewer {
                current: v("1.2.3+rev4"),
                new: meta("1.2.3")
            })
        );
        assert!(v("2.0.0").bump_meta(meta("2.0.0-beta9")).is_err());
    }

    #[test]
    fn next_revision_counts_up() {
        assert_eq!(
            v("1.2.3").next_revision().unwrap().to_string(),
            "1.2.3+rev1"
        );
        assert_eq!(
            v("1.2.3+rev1").next_revision().unwrap().to_string(),
            "1.2.3+rev2"
        );
        assert_eq!(
            v("2.0.0-beta1+rev9").next_revision().unwrap().to_string(),
            "2.0.0-beta1+rev10"
        );
        let last = HostOsVersion::new(meta("1.0.0"), u32::MAX);
        assert_eq!(
            last.next_revision().unwrap_err().to_string(),
            "cannot make a revision after OS version 1.0.0+rev4294967295: the revision number is at its maximum"
        );
    }

    #[test]
    fn refuses_malformed_versions() {
        let cases = [
            ("1.2", "found 2 dot-separated part(s) instead of 3"),
            ("", "it is empty"),
            ("1.2.3 ", "it contains whitespace"),
            ("1.2.3+ rev1", "it contains whitespace"),
            ("1.2.3.", "found 4 dot-separated part(s) instead of 3"),
            (".2.3", "the major number is empty"),
            ("01.2.3", "the major number \"01\" has a leading zero"),
            ("1.02.3", "the minor number \"02\" has a leading zero"),
            ("1.2.3-beta", "the beta number is empty"),
            (
                "1.2.3-betaX",
                "the beta number \"X\" is not a decimal number",
            ),
            ("1.2.3-rev1", "board revisions are written +revN, not -revN"),
            ("1.2.3+rev0", "revision 0 is written without +rev0"),
            ("1.2.3+rev", "the revision number is empty"),
            (
                "1.2.3+rev01",
                "the revision number \"01\" has a leading zero",
            ),
            (
                "1.2.3+rev1+rev2",
                "the revision number \"1+rev2\" is not a decimal number",
            ),
            (
                "1.2.3+build5",
                "unknown suffix \"+build5\", only +revN is allowed",
            ),
            (
                "1.2.3+rev-1",
                "the revision number \"-1\" is not a decimal number",
            ),
            (
                "1.2.3-beta1-beta2",
                "the beta number \"1-beta2\" is not a decimal number",
            ),
        ];
        for (input, problem) in cases {
            assert_eq!(
                input.parse::<HostOsVersion>().unwrap_err().to_string(),
                format!("invalid OS version {input:?}: expected X.Y.Z[-betaN][+revN] ({problem})"),
            );
        }
    }

    #[test]
    fn the_brief_example_message() {
        assert_eq!(
            "1.2".parse::<HostOsVersion>().unwrap_err().to_string(),
            "invalid OS version \"1.2\": expected X.Y.Z[-betaN][+revN] (found 2 dot-separated part(s) instead of 3)"
        );
    }
}
