//! `baleen bench update`: a host OS update's figures, measured on a booted image.
//!
//! The device installs the bundle from a file on its data partition (so the network plays no
//! part), reboots into it, waits for the commit, and does it again from the other slot. Around
//! every install it writes the same bytes to the same partition with `dd` (`bs=4M conv=fsync`,
//! page cache dropped first), so each install is compared with raw writes made minutes apart
//! on the same busy or quiet host, rather than with one sample.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use vmharness::Vm;

/// The health window the bench installs with, seconds (the default is 15 min).
const HEALTH_WINDOW: u64 = 20;
/// Where the bundle and the copy of the root filesystem go on the device.
const BUNDLE_ON_DEVICE: &str = "/mnt/data/bench.bundle";
const ROOTFS_COPY: &str = "/mnt/data/bench-rootfs.img";
/// A shell condition: the last update was committed.
const COMMITTED: &str = "baleen update status --json | \
     jq -en 'input | .lastUpdate.result == \"committed\"' >/dev/null && \
     grep -aqx upgrade_available=0 /mnt/boot/bootenv";

/// One install and what surrounds it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    pub from_slot: String,
    pub to_slot: String,
    /// MiB/s of the root filesystem phase (written and flushed), as the install reports it.
    pub install_mibps: f64,
    /// The install's phases, seconds, as it reports them.
    pub seconds: Value,
    /// Peak resident memory of the install process, KiB.
    pub max_rss_kib: Option<u64>,
    /// `dd` of the same bytes to the same partition, MiB/s: before the install (from the
    /// previous round's copy; none in the first round) and after it.
    pub dd_before_mibps: Option<f64>,
    pub dd_after_mibps: f64,
    /// Reboot command → SSH answering from the new root, seconds.
    pub downtime_secs: f64,
    /// SSH answering → the update committed (the health window), seconds.
    pub commit_secs: f64,
}

/// Everything `bench update` measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub image_bytes: u64,
    pub bundle_bytes: u64,
    pub rootfs_bytes: u64,
    pub rounds: Vec<Round>,
    /// Median install MiB/s over median `dd` MiB/s (goal ≥ 0.9).
    pub install_over_dd: f64,
}

/// The median of `values` (the mean of the middle two for an even count); 0 when empty. Pure.
fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

impl Round {
    /// This round's `dd` runs, MiB/s: before (if any) and after the install.
    fn dd_runs(&self) -> Vec<f64> {
        self.dd_before_mibps
            .into_iter()
            .chain([self.dd_after_mibps])
            .collect()
    }
}

impl Report {
    fn dd_samples(rounds: &[Round]) -> Vec<f64> {
        rounds.iter().flat_map(Round::dd_runs).collect()
    }

    fn new(image_bytes: u64, bundle_bytes: u64, rootfs_bytes: u64, rounds: Vec<Round>) -> Self {
        let install = median(&rounds.iter().map(|r| r.install_mibps).collect::<Vec<_>>());
        let dd = median(&Self::dd_samples(&rounds));
        Report {
            image_bytes,
            bundle_bytes,
            rootfs_bytes,
            install_over_dd: if dd > 0.0 { install / dd } else { 0.0 },
            rounds,
        }
    }

    fn print(&self) {
        const MIB: f64 = (1u64 << 20) as f64;
        println!(
            "{:<6} {:>12} {:>11} {:>10} {:>8} {:>10} {:>9} {:>9}",
            "round",
            "install MiB/s",
            "dd before",
            "dd after",
            "ratio",
            "RSS MiB",
            "downtime",
            "commit"
        );
        for r in &self.rounds {
            let dds = r.dd_runs();
            let around = dds.iter().sum::<f64>() / dds.len() as f64;
            println!(
                "{:<6} {:>12.1} {:>11} {:>10.1} {:>8.2} {:>10} {:>8.1}s {:>8.1}s",
                format!("{}→{}", r.from_slot, r.to_slot),
                r.install_mibps,
                r.dd_before_mibps
                    .map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
                r.dd_after_mibps,
                r.install_mibps / around,
                r.max_rss_kib
                    .map_or_else(|| "-".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
                r.downtime_secs,
                r.commit_secs,
            );
        }
        println!(
            "install / dd (medians of {} installs and {} dd runs): {:.2} (goal >= 0.9)",
            self.rounds.len(),
            Self::dd_samples(&self.rounds).len(),
            self.install_over_dd
        );
        println!(
            "bundle {:.1} MiB for an image of {:.1} MiB ({:.0} %); root filesystem {:.1} MiB",
            self.bundle_bytes as f64 / MIB,
            self.image_bytes as f64 / MIB,
            100.0 * self.bundle_bytes as f64 / self.image_bytes.max(1) as f64,
            self.rootfs_bytes as f64 / MIB
        );
        println!(
            "disk beyond the partition: none when installing from http(s) (streamed); the \
             bundle file itself ({:.1} MiB) when installing from a local file",
            self.bundle_bytes as f64 / MIB
        );
    }
}

/// Runs `command` on the device, which must succeed; returns the seconds it took there.
fn timed(vm: &Vm, command: &str) -> Result<f64> {
    let out = vm.run_timeout(
        &format!(
            "sync; echo 3 >/proc/sys/vm/drop_caches; s=$(date +%s%N); {command} 2>&1 || exit 1; \
             e=$(date +%s%N); echo \"took $(( (e - s) / 1000 ))\""
        ),
        Duration::from_secs(1800),
    )?;
    if !out.success() {
        bail!(
            "`{command}` failed on the device: {}{}",
            out.stdout,
            out.stderr
        );
    }
    let micros: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("took ")?.trim().parse().ok())
        .with_context(|| format!("`{command}` printed no time: {}", out.stdout))?;
    Ok(micros as f64 / 1e6)
}

/// MiB/s of `bytes` in `secs`.
fn mibps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / secs.max(1e-3)
}

fn active_slot(vm: &Vm) -> Result<String> {
    let status: Value = serde_json::from_str(&vm.run_ok("baleen update status --json")?)
        .context("parsing `baleen update status --json`")?;
    status["activeSlot"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no activeSlot in {status}"))
}

/// The device node of root `slot` (`A` or `B`).
fn root_partition(slot: &str) -> String {
    format!("/dev/disk/by-state/resin-root{slot}")
}

/// Writes the copy (`bytes` long) to `slot`'s partition with dd; MiB/s.
fn dd_write(vm: &Vm, slot: &str, bytes: u64) -> Result<f64> {
    let part = root_partition(slot);
    let secs = timed(
        vm,
        &format!("dd if={ROOTFS_COPY} of={part} bs=4M conv=fsync status=none"),
    )?;
    Ok(mibps(bytes, secs))
}

/// One install from the active slot into the other, with its dd runs, reboot and commit.
fn round(vm: &mut Vm, rootfs_bytes: &mut u64, first: bool) -> Result<Round> {
    let from = active_slot(vm)?;
    let to = if from == "A" { "B" } else { "A" };
    let dd_before = if first {
        None
    } else {
        Some(dd_write(vm, to, *rootfs_bytes)?)
    };
    vm.run_ok("sync; echo 3 >/proc/sys/vm/drop_caches")?;
    let out = vm.run_timeout(
        &format!(
            "baleen update install --json --health-window {HEALTH_WINDOW} --health-interval 5 \
             {BUNDLE_ON_DEVICE}"
        ),
        Duration::from_secs(1800),
    )?;
    if !out.success() {
        bail!("the install failed: {}{}", out.stdout, out.stderr);
    }
    let done: Value = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "done")
        .with_context(|| format!("the install printed no \"done\" line: {}", out.stdout))?;
    *rootfs_bytes = done["rootfsBytes"]
        .as_u64()
        .with_context(|| format!("no rootfsBytes in {done}"))?;
    let install_mibps = done["throughputMiBps"]
        .as_f64()
        .with_context(|| format!("no throughputMiBps in {done}"))?;
    // The same bytes the install wrote, copied off the partition and written back.
    let part = root_partition(to);
    vm.run_ok(&format!(
        "dd if={part} of={ROOTFS_COPY} bs=4M iflag=count_bytes count={} conv=fsync status=none",
        *rootfs_bytes
    ))?;
    let dd_after = dd_write(vm, to, *rootfs_bytes)?;

    let downtime = vm.reboot_wait(Duration::from_secs(900))?;
    let commit = vm.wait_until(COMMITTED, Duration::from_secs(HEALTH_WINDOW + 600))?;
    let now = active_slot(vm)?;
    if now != to {
        bail!(
            "after the reboot slot {now} runs, not {to}: the update rolled back (see baleen status)"
        );
    }
    let round = Round {
        from_slot: from,
        to_slot: to.to_owned(),
        install_mibps,
        seconds: done["seconds"].clone(),
        max_rss_kib: done["maxRssKiB"].as_u64(),
        dd_before_mibps: dd_before,
        dd_after_mibps: dd_after,
        downtime_secs: downtime.as_secs_f64(),
        commit_secs: commit.as_secs_f64(),
    };
    eprintln!("bench update: {round:?}");
    Ok(round)
}

/// `baleen bench update IMAGE BUNDLE`.
pub fn bench_update(image: &Path, bundle: &Path, rounds: u32, json: bool) -> Result<()> {
    if rounds == 0 {
        bail!("--rounds 0: nothing to measure; give 1 or more");
    }
    let image =
        std::fs::canonicalize(image).with_context(|| format!("opening {}", image.display()))?;
    let bundle =
        std::fs::canonicalize(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let image_bytes = std::fs::metadata(&image)?.len();
    let bundle_bytes = std::fs::metadata(&bundle)?.len();
    let mut vm = Vm::builder("bench-update")
        .base_image(&image)
        .overlay_size(8 << 30)
        .start()?;
    vm.wait_for_ssh(Duration::from_secs(900))?;
    let started = Instant::now();
    vm.copy_to(&bundle, BUNDLE_ON_DEVICE)?;
    eprintln!(
        "bench update: bundle copied to the device in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut rootfs_bytes = 0;
    let mut done = Vec::new();
    for i in 0..rounds {
        done.push(round(&mut vm, &mut rootfs_bytes, i == 0)?);
    }
    vm.mark_passed();
    vm.close()?;
    let report = Report::new(image_bytes, bundle_bytes, rootfs_bytes, done);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"apiVersion": 1, "update": report}))?
        );
    } else {
        report.print();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(install: f64, before: Option<f64>, after: f64) -> Round {
        Round {
            from_slot: "A".into(),
            to_slot: "B".into(),
            install_mibps: install,
            seconds: Value::Null,
            max_rss_kib: None,
            dd_before_mibps: before,
            dd_after_mibps: after,
            downtime_secs: 0.0,
            commit_secs: 0.0,
        }
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }

    #[test]
    fn the_ratio_is_the_median_install_over_the_median_of_every_dd_run() {
        // dd runs: 80 (after 1), 100 (before 2), 60 (after 2) → median 80; installs 60, 100 → 80.
        let report = Report::new(
            1,
            1,
            1,
            vec![r(60.0, None, 80.0), r(100.0, Some(100.0), 60.0)],
        );
        assert!((report.install_over_dd - 1.0).abs() < 1e-9, "{report:?}");
        assert_eq!(Report::new(1, 1, 1, vec![]).install_over_dd, 0.0);
    }
}
