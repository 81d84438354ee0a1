//! The one error type of this crate.

/// Everything that can go wrong with a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A string is not a meta-balena version.
    #[error("invalid meta-balena version {input:?}: expected X.Y.Z[-betaN] ({problem})")]
    InvalidMeta {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A string is not a host OS version.
    #[error("invalid OS version {input:?}: expected X.Y.Z[-betaN][+revN] ({problem})")]
    InvalidHostOs {
        /// The string as given.
        input: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// A meta bump to a version that is not higher than the current one.
    #[error(
        "cannot move OS version {current} to meta-balena {new}: the new meta-balena version must be higher than {}",
        .current.meta
    )]
    MetaNotNewer {
        /// The version being bumped.
        current: crate::HostOsVersion,
        /// The meta version asked for.
        new: crate::MetaVersion,
    },
    /// The revision number cannot grow any further.
    #[error(
        "cannot make a revision after OS version {current}: the revision number is at its maximum"
    )]
    RevisionOverflow {
        /// The version whose revision is at `u32::MAX`.
        current: crate::HostOsVersion,
    },
}

/// The specific flaw in a version string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The string is empty.
    #[error("it is empty")]
    Empty,
    /// The string contains a space, tab or newline.
    #[error("it contains whitespace")]
    Whitespace,
    /// The core is not three dot-separated numbers.
    #[error("found {found} dot-separated part(s) instead of 3")]
    PartCount {
        /// How many parts there were.
        found: usize,
    },
    /// A number is empty (`1..3`, `-beta`, `+rev`).
    #[error("the {part} number is empty")]
    EmptyNumber {
        /// Which number: `major`, `minor`, `patch`, `beta` or `revision`.
        part: &'static str,
    },
    /// A number has something other than ASCII digits in it.
    #[error("the {part} number {text:?} is not a decimal number")]
    NotANumber {
        /// Which number.
        part: &'static str,
        /// The text found.
        text: String,
    },
    /// A number has a leading zero (`01`).
    #[error("the {part} number {text:?} has a leading zero")]
    LeadingZero {
        /// Which number.
        part: &'static str,
        /// The text found.
        text: String,
    },
    /// A number does not fit in 32 bits.
    #[error("the {part} number {text:?} is too large")]
    TooLarge {
        /// Which number.
        part: &'static str,
        /// The text found.
        text: String,
    },
    /// A `-` label other than `betaN`.
    #[error("unknown label {label:?}, only betaN is allowed")]
    UnknownLabel {
        /// The text after `-`.
        label: String,
    },
    /// The Yocto-style `-revN` instead of `+revN`.
    #[error("board revisions are written +revN, not -revN")]
    DashRevision,
    /// A `+` suffix other than `revN`.
    #[error("unknown suffix \"+{suffix}\", only +revN is allowed")]
    UnknownSuffix {
        /// The text after `+`.
        suffix: String,
    },
    /// `+rev0`, which is written as the bare version.
    #[error("revision 0 is written without +rev0")]
    RevisionZero,
    /// A `+revN` suffix on a meta-balena version.
    #[error("a meta-balena version has no +revN")]
    RevisionOnMeta,
}
