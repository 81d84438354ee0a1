//! `baleen device zram`: swap in compressed memory, as balenaOS's
//! zram-swap-init: one zram device of half the RAM, at most 4096000 KiB,
//! lz4 when the kernel has it, the only swap (priority 100).
//!
//! A service after `local-fs.target`, not a swap unit: a swap unit would sit
//! in `swap.target`, which every tmpfs mount waits for, and put the zram
//! set-up (over a second on a slow board) in front of the whole boot.

use anyhow::{Context, Result};
use std::path::Path;
use subprocess::Cmd;

/// balenaOS's cap.
pub const MAX_KIB: u64 = 4_096_000;

/// The swap size for `MemTotal` (KiB).
pub fn size_kib(mem_total_kib: u64) -> u64 {
    (mem_total_kib / 2).min(MAX_KIB)
}

/// `MemTotal` from a /proc/meminfo text.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The compressor to use from `/sys/block/zramN/comp_algorithm`
/// (`lzo lzo-rle [lz4] zstd`): lz4 when offered, else the current one.
pub fn pick_algorithm(offered: &str) -> Option<String> {
    let names: Vec<&str> = offered
        .split_whitespace()
        .map(|n| n.trim_matches(['[', ']']))
        .collect();
    if names.contains(&"lz4") {
        return Some("lz4".into());
    }
    None
}

pub fn apply() -> Result<()> {
    let swaps = std::fs::read_to_string("/proc/swaps").context("reading /proc/swaps")?;
    if swaps.lines().any(|l| l.starts_with("/dev/zram")) {
        tracing::info!("zram swap is already on");
        return Ok(());
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let total = mem_total_kib(&meminfo).context("no MemTotal in /proc/meminfo")?;
    let size = size_kib(total);
    Cmd::new("modprobe")
        .package("kmod")
        .args(["zram", "num_devices=1"])
        .run()?;
    let sys = Path::new("/sys/block/zram0");
    let algorithms = std::fs::read_to_string(sys.join("comp_algorithm")).unwrap_or_default();
    if let Some(algorithm) = pick_algorithm(&algorithms) {
        std::fs::write(sys.join("comp_algorithm"), &algorithm)
            .with_context(|| format!("choosing {algorithm} for zram0"))?;
    }
    std::fs::write(sys.join("disksize"), format!("{}", size * 1024))
        .context("sizing /dev/zram0")?;
    Cmd::new("mkswap")
        .package("util-linux")
        .args(["-L", "zram-swap", "/dev/zram0"])
        .run()?;
    Cmd::new("swapon")
        .package("mount")
        .args(["-p", "100", "/dev/zram0"])
        .run()?;
    tracing::info!(size_kib = size, "zram swap on /dev/zram0");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_the_ram_capped_like_balenaos() {
        assert_eq!(size_kib(1_000_000), 500_000);
        assert_eq!(size_kib(16_000_000), MAX_KIB);
        assert_eq!(
            mem_total_kib("MemTotal:        975436 kB\nMemFree: 1 kB\n"),
            Some(975_436)
        );
        assert_eq!(mem_total_kib("nothing"), None);
    }

    #[test]
    fn lz4_is_chosen_when_offered() {
        assert_eq!(
            pick_algorithm("lzo [lzo-rle] lz4 zstd").as_deref(),
            Some("lz4")
        );
        assert_eq!(pick_algorithm("[lzo-rle] zstd"), None);
    }
}
