//! balenaOS host OS versions, as meta-balena's README defines them.
//!
//! * [`MetaVersion`]: the meta-balena version, `X.Y.Z` with an optional `-betaN` label
//!   (`1.2.3`, `1.2.3-beta1`, `2.0.0-beta1`).
//! * [`HostOsVersion`]: the board (`balena-<board>`) version, used as `HOSTOS_VERSION`. The first
//!   board release on a meta version carries that version unchanged; later board revisions append
//!   `+revN` (`1.2.3`, `1.2.3+rev1`, `1.2.3+rev2`). Moving to a new meta version resets the
//!   revision: `1.2.3+rev4` becomes `1.2.4`.
//!
//! Both parse strictly (no whitespace, no leading zeros, no `+rev0`) and order like semver: a
//! beta comes before its release, betas compare numerically, then revisions do.

mod error;
mod hostos;
mod meta;
mod number;

pub use error::{Error, Problem};
pub use hostos::HostOsVersion;
pub use meta::MetaVersion;
