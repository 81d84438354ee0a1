//! A VM harness for baleen's image and VM tests, in the spirit of PHD (propolis): build a
//! [`Vm`], boot a throwaway qcow2 overlay of a base image under QEMU (TCG, UEFI/OVMF), then
//! assert on the serial log, drive power through QMP and run commands over SSH.
//!
//! ```no_run
//! use std::time::Duration;
//! use vmharness::Vm;
//!
//! let mut vm = Vm::builder("rollback")
//!     .base_image("target/images/qemux86-64.img")
//!     .overlay_size(8 << 30)
//!     .start()?;
//! vm.wait_for_serial("login:", Duration::from_secs(300))?;
//! vm.wait_for_ssh(Duration::from_secs(300))?;
//! assert_eq!(vm.run_ok("cat /mnt/boot/bootenv | wc -c")?.trim(), "1024");
//! vm.power_cut()?;
//! vm.restart()?;
//! vm.wait_for_ssh(Duration::from_secs(300))?;
//! vm.mark_passed();
//! vm.close()?;
//! # Ok::<(), vmharness::Error>(())
//! ```
//!
//! Isolation is fixed by the harness: user networking with `restrict=on` and one forward from
//! 127.0.0.1, or a tap into a [`NetNs`] the test created; always `-accel tcg`; only the harness's
//! own QEMU child is ever killed.
//!
//! Environment: `BALEEN_TIMEOUT_SCALE` multiplies every wait (slow machines),
//! `BALEEN_VMTEST_DIR` moves the log folders, `BALEEN_KEEP_LOGS` keeps them after passes.

mod cmd;
mod config;
mod error;
mod logdir;
mod netns;
mod overlay;
mod qmp;
mod serial;
mod ssh;
mod vm;

use std::time::Duration;

pub use cmd::{Output, shell_quote};
pub use config::{DEFAULT_GUEST_ADDR, OVMF_CODE, OVMF_VARS, QEMU, VmConfig};
pub use error::{Error, Result, fmt_duration};
pub use logdir::{KEEP_LOGS_ENV, LOG_ROOT_ENV, log_root};
pub use netns::{NetNs, NsProcess};
pub use overlay::{DiskFormat, create_overlay, virtual_size};
pub use qmp::{Qmp, QmpEvent, QmpMessage, parse_message};
pub use regex::Regex;
pub use serial::{Pattern, SerialLine, SerialMark};
pub use ssh::{GUEST_SSH_PORT, Ssh, ssh_keygen};
pub use vm::{DEFAULT_COMMAND_TIMEOUT, Vm};

/// Environment variable multiplying every harness wait, e.g. `3` on a slow CI runner.
pub const TIMEOUT_SCALE_ENV: &str = "BALEEN_TIMEOUT_SCALE";

/// Environment variable setting the virtual CPUs of a VM whose test does not choose them
/// (default 2). Fewer is slower alone: a one-vCPU dev image answered SSH after 61 s, a
/// two-vCPU one after 37 s (systemd starts units in parallel).
pub const CPUS_ENV: &str = "BALEEN_VM_CPUS";

/// `$BALEEN_VM_CPUS` when it is a positive whole number, else 2.
pub fn default_cpus() -> u32 {
    std::env::var(CPUS_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(2)
}

/// Environment variable that, set to `0`, makes every VM's commands log in on their own
/// instead of sharing one SSH connection ([`Ssh::multiplexed`]), to measure what sharing saves.
pub const SSH_MUX_ENV: &str = "BALEEN_SSH_MUX";

/// False when `$BALEEN_SSH_MUX` is `0`.
pub fn ssh_mux() -> bool {
    !std::env::var(SSH_MUX_ENV).is_ok_and(|v| v.trim() == "0")
}

/// `d` multiplied by `$BALEEN_TIMEOUT_SCALE` (ignored unless a positive number).
pub fn scaled(d: Duration) -> Duration {
    std::env::var(TIMEOUT_SCALE_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .map_or(d, |f| d.mul_f64(f))
}
