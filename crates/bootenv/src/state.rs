//! The A/B boot picker: a pure state machine over the balena keys of the `bootenv`.
//!
//! # Keys
//!
//! | Key | Values | Missing means |
//! |---|---|---|
//! | `resin_root_part` | `A` or `B`: the slot the OS wants booted | `A` |
//! | `upgrade_available` | `1` while a freshly installed root is on trial, else `0` | `0` |
//! | `bootcount` | boot attempts of the root on trial, decimal | `0` |
//!
//! # Policy
//!
//! balenaOS's bootloaders disagree on when to give up on a new root (u-boot after more than 3
//! boots, GRUB on the 2nd, the balena bootloader at 3). baleen picks one rule: the newly installed
//! root gets [`MAX_ATTEMPTS`] = 3 boots.
//!
//! [`decide`], run once per boot before anything else:
//!
//! * `upgrade_available=0`: boot `resin_root_part`; nothing is written ([`Reason::Normal`]).
//! * `upgrade_available=1`: the attempt is counted first. The new `bootcount` is
//!   `bootcount + 1`, capped at `MAX_ATTEMPTS + 1` so it never grows without bound, and must be
//!   written to the bootenv before booting ([`Decision::persist`]); a count already at the cap
//!   needs no write.
//!   * new `bootcount <= MAX_ATTEMPTS`: boot `resin_root_part` ([`Reason::TryingUpdate`]).
//!   * otherwise: boot the other slot ([`Reason::Fallback`]). `resin_root_part` is **not**
//!     changed here: the old OS that comes up runs its rollback service, which repairs the
//!     bootenv, as on balenaOS.
//!
//! The OS that boots commits an update by writing `upgrade_available=0` and `bootcount=0`; that
//! is the updater's business, not the picker's.
//!
//! [`slot_unbootable`], run when the boot stage finds that the chosen slot cannot be booted (no
//! kernel, the root does not mount) before it hands over:
//!
//! * the slot is the update on trial (`upgrade_available=1` and the slot is `resin_root_part`):
//!   its attempts are marked exhausted (`bootcount = MAX_ATTEMPTS + 1`, written first) and the
//!   other slot is booted ([`Reason::Fallback`]), exactly as if it had failed every attempt.
//! * the slot is the fallback target (`upgrade_available=1` and the other slot):
//!   [`NoBootableSlot::FallbackUnbootable`].
//! * no update is pending (`upgrade_available=0`): [`NoBootableSlot::NoUpdatePending`]; the other
//!   slot holds an older or half-written OS, never a known-good one.

use std::fmt;
use std::str::FromStr;

use crate::{EnvBlock, Error};

/// Boots the newly installed root gets before the picker falls back to the other slot.
pub const MAX_ATTEMPTS: u32 = 3;

/// Name of the key holding the slot to boot.
pub const ROOT_PART_KEY: &str = "resin_root_part";
/// Name of the key that is `1` while an update is on trial.
pub const UPGRADE_AVAILABLE_KEY: &str = "upgrade_available";
/// Name of the key counting boot attempts of the update on trial.
pub const BOOTCOUNT_KEY: &str = "bootcount";

/// One of the two root partitions, `resin-rootA` or `resin-rootB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Slot {
    /// `resin-rootA`, the slot a freshly flashed device boots.
    #[default]
    A,
    /// `resin-rootB`.
    B,
}

impl Slot {
    /// The slot that is not `self`.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// The letter as stored in the bootenv.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Slot {
    type Err = Error;

    /// Parses `A` or `B`, exactly as stored in `resin_root_part`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "A" => Ok(Slot::A),
            "B" => Ok(Slot::B),
            _ => Err(Error::BadBootVar {
                key: ROOT_PART_KEY,
                value: s.to_owned(),
                expected: "A or B",
            }),
        }
    }
}

/// The balena keys of a bootenv, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BootEnv {
    /// `resin_root_part`: the slot the OS wants booted.
    pub resin_root_part: Slot,
    /// `upgrade_available`: an update is installed in `resin_root_part` and on trial.
    pub upgrade_available: bool,
    /// `bootcount`: boot attempts of the update on trial.
    pub bootcount: u32,
}

impl BootEnv {
    /// Reads the balena keys; missing keys take their defaults (`A`, `0`, `0`).
    pub fn from_block(block: &EnvBlock) -> Result<Self, Error> {
        let defaults = Self::default();
        let resin_root_part = match block.get(ROOT_PART_KEY) {
            Some(value) => value.parse()?,
            None => defaults.resin_root_part,
        };
        let upgrade_available = match block.get(UPGRADE_AVAILABLE_KEY) {
            Some("0") => false,
            Some("1") => true,
            Some(value) => {
                return Err(Error::BadBootVar {
                    key: UPGRADE_AVAILABLE_KEY,
                    value: value.to_owned(),
                    expected: "0 or 1",
                });
            }
            None => defaults.upgrade_available,
        };
        let bootcount = match block.get(BOOTCOUNT_KEY) {
            Some(value) => parse_count(value)?,
            None => defaults.bootcount,
        };
        Ok(Self {
            resin_root_part,
            upgrade_available,
            bootcount,
        })
    }

    /// Writes the balena keys into `block`, keeping every other key and the order of existing
    /// ones. Keys not yet present are appended as `bootcount`, `resin_root_part`,
    /// `upgrade_available`, the order of balenaOS's own env files.
    pub fn apply_to(&self, block: &mut EnvBlock) {
        block.set_valid(BOOTCOUNT_KEY, self.bootcount.to_string());
        block.set_valid(ROOT_PART_KEY, self.resin_root_part.as_str().to_owned());
        let upgrade = if self.upgrade_available { "1" } else { "0" };
        block.set_valid(UPGRADE_AVAILABLE_KEY, upgrade.to_owned());
    }
}

/// `bootcount` as written by the shell (`$((bootcount+1))`): plain decimal digits.
fn parse_count(value: &str) -> Result<u32, Error> {
    let bad = || Error::BadBootVar {
        key: BOOTCOUNT_KEY,
        value: value.to_owned(),
        expected: "a decimal number of boot attempts",
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// Why the picker chose a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No update is on trial; the configured slot boots.
    Normal,
    /// The update in `resin_root_part` is on trial; this is boot `attempt` of `of`.
    TryingUpdate {
        /// 1-based attempt number.
        attempt: u32,
        /// [`MAX_ATTEMPTS`].
        of: u32,
    },
    /// The update failed; the other (previous) slot boots.
    Fallback {
        /// Boot attempts the update used up before it was given up.
        failed_attempts: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Normal => f.write_str("no update pending"),
            Reason::TryingUpdate { attempt, of } => {
                write!(f, "trying the update, boot attempt {attempt} of {of}")
            }
            Reason::Fallback { failed_attempts } => write!(
                f,
                "falling back to the previous OS after {failed_attempts} failed boot attempt(s) of the update"
            ),
        }
    }
}

/// What the boot stage must do: write [`persist`](Self::persist) if set, then boot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The slot to boot.
    pub slot: Slot,
    /// Why.
    pub reason: Reason,
    /// The bootenv to write back **before** booting, if it changed.
    pub persist: Option<BootEnv>,
}

/// No slot can be booted; the boot stage must stop and report instead of booting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoBootableSlot {
    /// The unbootable slot is the fallback target of a failed update in the other slot.
    #[error(
        "slot {slot} cannot be booted and it is already the fallback from the failed update in slot {}",
        .slot.other()
    )]
    FallbackUnbootable {
        /// The slot that cannot be booted.
        slot: Slot,
    },
    /// No update is on trial, so the other slot is not known to be good.
    #[error(
        "slot {slot} cannot be booted and no update is pending, so there is no known-good slot to fall back to"
    )]
    NoUpdatePending {
        /// The slot that cannot be booted.
        slot: Slot,
    },
}

/// Picks the slot to boot; see the [module docs](self) for the policy.
pub fn decide(env: &BootEnv) -> Decision {
    if !env.upgrade_available {
        return Decision {
            slot: env.resin_root_part,
            reason: Reason::Normal,
            persist: None,
        };
    }
    let attempt = env.bootcount.saturating_add(1).min(MAX_ATTEMPTS + 1);
    let persisted = BootEnv {
        bootcount: attempt,
        ..*env
    };
    let persist = (persisted != *env).then_some(persisted);
    if attempt <= MAX_ATTEMPTS {
        Decision {
            slot: env.resin_root_part,
            reason: Reason::TryingUpdate {
                attempt,
                of: MAX_ATTEMPTS,
            },
            persist,
        }
    } else {
        Decision {
            slot: env.resin_root_part.other(),
            reason: Reason::Fallback {
                failed_attempts: MAX_ATTEMPTS,
            },
            persist,
        }
    }
}

/// Re-decides after the boot stage found `slot` unbootable; see the [module docs](self).
///
/// `env` is the bootenv as it is stored now, that is after writing the `persist` of the
/// [`decide`] call that chose `slot`.
pub fn slot_unbootable(env: &BootEnv, slot: Slot) -> Result<Decision, NoBootableSlot> {
    if !env.upgrade_available {
        return Err(NoBootableSlot::NoUpdatePending { slot });
    }
    if slot != env.resin_root_part {
        return Err(NoBootableSlot::FallbackUnbootable { slot });
    }
    let exhausted = BootEnv {
        bootcount: MAX_ATTEMPTS + 1,
        ..*env
    };
    Ok(Decision {
        slot: slot.other(),
        reason: Reason::Fallback {
            failed_attempts: env.bootcount.clamp(1, MAX_ATTEMPTS),
        },
        persist: (env.bootcount <= MAX_ATTEMPTS).then_some(exhausted),
    })
}

#[cfg(test)]
mod tests;
