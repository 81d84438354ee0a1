//! The bootloader environment that picks balenaOS's A/B root partition.
//!
//! Two layers, both pure (no I/O):
//!
//! * [`block`]: the 1024-byte GRUB environment block, byte for byte as `grub-editenv` writes it.
//!   balenaOS keeps its `bootenv` file (and `grubenv`) in this format.
//! * [`state`]: the typed balena keys (`resin_root_part`, `upgrade_available`, `bootcount`) and the
//!   boot picker, an explicit state machine that decides which slot to boot and what must be
//!   written back first.
//!
//! Reading and writing the file is the caller's job; this crate only turns bytes into decisions
//! and decisions into bytes.

pub mod block;
mod error;
pub mod state;

pub use block::{BLOCK_SIZE, EnvBlock, HEADER};
pub use error::Error;
pub use state::{
    BootEnv, Decision, MAX_ATTEMPTS, NoBootableSlot, Reason, Slot, decide, slot_unbootable,
};
