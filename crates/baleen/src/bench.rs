//! `baleen bench`: the figures the project reports, measured here and printed.
//!
//! * `bench build`: image build time cold (empty root filesystem cache) and
//!   warm (cache hit), image and root filesystem sizes.
//! * `bench boot`: seconds from QEMU start to SSH, split into firmware, boot
//!   stage and final boot, for baleen's chain and, on the same kernel and
//!   root filesystem, Debian's usual chain (OVMF → GRUB → kernel).
//! * `bench update`: install throughput against `dd` of the same bytes, bundle size, device
//!   downtime and the install's memory, over rounds of install, reboot and commit.

mod update;

use crate::build;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Build twice: with an empty root filesystem cache, then with the cache warm.
    Build {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "out/bench")]
        out: PathBuf,
    },
    /// Boot an image (development build) and time each stage; compare with GRUB.
    Boot {
        image: PathBuf,
        /// Also boot the same kernel and root through GRUB for comparison.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        grub: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Update a booted image with a bundle, round after round (A→B, B→A, …), from a file on the
    /// device; compare each install with `dd` of the same bytes before and after it.
    Update {
        /// The image to boot (development build).
        image: PathBuf,
        /// The bundle to install (signed by a key the image trusts).
        bundle: PathBuf,
        /// Installs to make, each followed by a reboot and the commit.
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Build { config, out } => bench_build(config, out),
        Command::Boot { image, grub, json } => bench_boot(&image, grub, json),
        Command::Update {
            image,
            bundle,
            rounds,
            json,
        } => update::bench_update(&image, &bundle, rounds, json),
    }
}

fn bench_build(config: Option<PathBuf>, out: PathBuf) -> Result<()> {
    let cache = tempfile::Builder::new()
        .prefix("baleen-bench-cache-")
        .tempdir_in("/var/tmp")?;
    let args = |dir: &str| build::Args {
        device: None,
        config: config.clone(),
        out: out.join(dir),
        cache_dir: cache.path().to_owned(),
        devices_dir: None,
        boot_stage: None,
        // Generated in the throw-away cache: bench images are never updated.
        update_key: None,
    };
    let cold = build::build(&args("cold"))?;
    let warm = build::build(&args("warm"))?;
    println!(
        "build (cold, empty cache)   {:7.1} s",
        cold.manifest.build_seconds
    );
    println!(
        "build (warm, cache hit)     {:7.1} s",
        warm.manifest.build_seconds
    );
    println!(
        "image size                  {:7} MiB ({} MiB allocated)",
        warm.manifest.image.size_bytes >> 20,
        warm.manifest.image.allocated_bytes >> 20
    );
    println!(
        "root filesystem             {:7} MiB",
        warm.manifest.rootfs.bytes >> 20
    );
    Ok(())
}

/// Timings of one boot, seconds since QEMU started.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootTimes {
    pub chain: String,
    pub boot: String,
    /// QEMU start → first kernel prints its banner.
    pub firmware: f64,
    /// First kernel start → kexec (baleen only).
    pub boot_stage: Option<f64>,
    /// The boot stage's own work, PID 1 start → kexec (baleen only).
    pub boot_stage_work: Option<f64>,
    /// Kernel start (or kexec) → SSH answers.
    pub final_boot: f64,
    pub total: f64,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn measure(vm: &mut vmharness::Vm, chain: &str, boot: &str) -> Result<BootTimes> {
    let total = vm.wait_for_ssh(Duration::from_secs(600))?;
    let lines = vm.serial_lines();
    let run = lines.last().map_or(0, |l| l.run);
    let lines: Vec<_> = lines.into_iter().filter(|l| l.run == run).collect();
    // The boot stage's kernel is quiet: its start is the arrival of the boot
    // stage's first line minus the kernel uptime that line carries.
    let stage_start = lines
        .iter()
        .find(|l| l.text.contains("baleen-boot:") && l.text.contains("started"))
        .and_then(|l| {
            let uptime: f64 = l
                .text
                .split('[')
                .nth(1)?
                .split(']')
                .next()?
                .trim()
                .parse()
                .ok()?;
            Some(l.at.saturating_sub(Duration::from_secs_f64(uptime)))
        });
    let banner_at = match stage_start {
        Some(at) => at,
        None => {
            lines
                .iter()
                .find(|l| l.text.contains("Linux version"))
                .context(
                    "no kernel banner on the serial console: bench boot needs a development \
                     image (its kernel is not quiet)",
                )?
                .at
        }
    };
    let kexec = lines
        .iter()
        .find(|l| l.text.contains("baleen-boot:") && l.text.contains("kexec into slot"));
    let work = kexec.and_then(|l| {
        let ms = l.text.split("boot stage work ").nth(1)?.split(' ').next()?;
        ms.parse::<f64>().ok().map(|ms| ms / 1000.0)
    });
    let after = kexec.map_or(banner_at, |k| k.at);
    Ok(BootTimes {
        chain: chain.into(),
        boot: boot.into(),
        firmware: secs(banner_at),
        boot_stage: kexec.map(|k| secs(k.at - banner_at)),
        boot_stage_work: work,
        final_boot: secs(total - after),
        total: secs(total),
    })
}

/// How long the device is left alone before its footprint is read.
const IDLE_SETTLE: Duration = Duration::from_secs(30);

/// What a booted, idle device runs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Footprint {
    processes: usize,
    used_mib: u64,
    baleen_processes: usize,
    baleen_rss_kib: u64,
}

/// Reads `ps -eo rss=,comm=` and the `Mem:` used column of `free -m`.
fn parse_footprint(ps: &str, free: &str) -> Footprint {
    let mut fp = Footprint {
        processes: 0,
        used_mib: 0,
        baleen_processes: 0,
        baleen_rss_kib: 0,
    };
    for line in ps.lines() {
        let mut words = line.split_whitespace();
        let (Some(rss), Some(comm)) = (words.next(), words.next()) else {
            continue;
        };
        // Kernel threads have no RSS and are not the device's processes.
        let rss: u64 = rss.parse().unwrap_or(0);
        if rss == 0 {
            continue;
        }
        fp.processes += 1;
        if comm.starts_with("baleen") {
            fp.baleen_processes += 1;
            fp.baleen_rss_kib += rss;
        }
    }
    fp.used_mib = free
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    fp
}

fn footprint(vm: &vmharness::Vm) -> Result<Footprint> {
    std::thread::sleep(IDLE_SETTLE);
    // The measuring SSH session (sshd, shell, ps) is counted too.
    let ps = vm.run_ok("ps -eo rss=,comm=")?;
    let free = vm.run_ok("free -m")?;
    Ok(parse_footprint(&ps, &free))
}

/// Boots an image twice (first boot, then a cold restart) and times both;
/// also returns the root kernel's command line as the device saw it.
fn time_boots(image: &Path, chain: &str) -> Result<(Vec<BootTimes>, String)> {
    let mut vm = vmharness::Vm::builder(&format!("bench-{chain}"))
        .base_image(image)
        .overlay_size(8 << 30)
        .start()?;
    let first = measure(&mut vm, chain, "first")?;
    let cmdline = vm.run_ok("cat /proc/cmdline")?;
    vm.run("systemctl poweroff")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while vm.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if vm.is_running() {
        vm.power_cut()?;
    }
    vm.restart()?;
    let again = measure(&mut vm, chain, "again")?;
    if chain == "baleen" {
        let idle = footprint(&vm)?;
        eprintln!(
            "idle device, {IDLE_SETTLE:?} after SSH answered: {} processes (with the measuring SSH \
             session), {} MiB memory used; \
             baleen's own resident processes: {} (RSS {} KiB)",
            idle.processes, idle.used_mib, idle.baleen_processes, idle.baleen_rss_kib
        );
    }
    vm.mark_passed();
    vm.close()?;
    Ok((vec![first, again], cmdline.trim().to_string()))
}

fn bench_boot(image: &Path, grub: bool, json: bool) -> Result<()> {
    let image =
        std::fs::canonicalize(image).with_context(|| format!("opening {}", image.display()))?;
    let (mut results, root_cmdline) = time_boots(&image, "baleen")?;
    let work = tempfile::Builder::new()
        .prefix("baleen-bench-")
        .tempdir_in("/var/tmp")?;
    if grub {
        let grub_image = work.path().join("grub.img");
        crate::bench::grub::make_image(&image, &grub_image, work.path(), &root_cmdline)?;
        results.extend(time_boots(&grub_image, "grub")?.0);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"apiVersion": 1, "boots": results}))?
        );
        return Ok(());
    }
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    println!(
        "{:<8} {:<6} {:>9} {:>11} {:>10} {:>11} {:>8}",
        "chain", "boot", "firmware", "boot stage", "(own work)", "final boot", "total"
    );
    for r in &results {
        println!(
            "{:<8} {:<6} {:>9.2} {:>11} {:>10} {:>11.2} {:>8.2}",
            r.chain,
            r.boot,
            r.firmware,
            opt(r.boot_stage),
            opt(r.boot_stage_work),
            r.final_boot,
            r.total
        );
    }
    let again = |chain: &str| {
        results
            .iter()
            .find(|r| r.chain == chain && r.boot == "again")
            .map(|r| r.total)
    };
    if let (Some(b), Some(g)) = (again("baleen"), again("grub")) {
        println!(
            "baleen / GRUB (steady-state boot to SSH): {:.2} (goal <= 1.15)",
            b / g
        );
    }
    if results.iter().any(|r| r.total <= 0.0) {
        bail!("a boot time was not measured");
    }
    Ok(())
}

pub mod grub {
    //! The comparison image: the same disk, with GRUB on the ESP booting the
    //! root's kernel and baleen's root initrd directly (OVMF → GRUB → kernel, Debian's usual
    //! chain, without the boot stage and its kexec).

    use anyhow::{Context, Result};
    use std::path::Path;
    use subprocess::Cmd;

    /// `cmdline` is the root kernel's command line under baleen; its
    /// `root=UUID=` is replaced by the image's own rootA UUID.
    pub fn make_image(image: &Path, out: &Path, work: &Path, cmdline: &str) -> Result<()> {
        Cmd::new("cp")
            .args(["--sparse=always"])
            .arg(image)
            .arg(out)
            .run()?;
        let parts = diskimage::read_partition_table(out)?;
        let root = diskimage::find_partition(&parts, "resin-rootA", out)?.clone();
        let root_uuid = diskimage::read_ext4_info(out, "resin-rootA")?.uuid;
        // The kernel and initrd come from the root filesystem through debugfs
        // (no mounts); e2fsprogs' I/O manager takes `path?offset=N`.
        let spec = format!("{}?offset={}", out.display(), root.offset_bytes);
        let listing = Cmd::new("debugfs")
            .package("e2fsprogs")
            .args(["-R", "ls -p /boot"])
            .arg(&spec)
            .run()?
            .stdout;
        let kernel = work.join("vmlinuz");
        let initrd = work.join("initrd.img");
        // baleen's own root initrd, as the boot stage's kexec passes it: the root relies on its
        // work (the `/run` handover, `/mnt/boot`), and under Debian's initrd the identity unit
        // and logind fail and logins wait for logind, which timed the failure, not the chain.
        for (prefix, dst) in [("vmlinuz-", &kernel), ("baleen-initrd.img", &initrd)] {
            let name = regular_file_named(&listing, prefix)
                .with_context(|| format!("no /boot/{prefix}* in resin-rootA"))?;
            Cmd::new("debugfs")
                .package("e2fsprogs")
                .arg("-R")
                .arg(format!("dump -p /boot/{name} {}", dst.display()))
                .arg(&spec)
                .run()?;
            // debugfs reports failures on stderr but exits 0.
            if !dst.exists() {
                anyhow::bail!(
                    "debugfs could not read /boot/{name} from resin-rootA of {}",
                    out.display()
                );
            }
        }
        let own_cmdline: Vec<&str> = cmdline
            .split_whitespace()
            .filter(|w| !w.starts_with("root=") && *w != "ro" && *w != "rw")
            .collect();
        let own_cmdline = own_cmdline.join(" ");
        let cfg = work.join("grub.cfg");
        std::fs::write(
            &cfg,
            format!(
                "set timeout=0\nsearch --no-floppy --file --set=root /bench-vmlinuz\n\
                 linux /bench-vmlinuz {own_cmdline} root=UUID={root_uuid} ro\ninitrd /bench-initrd.img\nboot\n"
            ),
        )?;
        let grub_efi = work.join("grubx64.efi");
        Cmd::new("grub-mkstandalone")
            .package("grub-efi-amd64-bin")
            .args([
                "-O",
                "x86_64-efi",
                "--modules=part_gpt fat ext2 linux normal search search_fs_file",
            ])
            .arg("-o")
            .arg(&grub_efi)
            .arg(format!("boot/grub/grub.cfg={}", cfg.display()))
            .run()?;
        let mut disk = diskimage::Disk::open_rw(out)?;
        let fs = diskimage::config::open_fat_partition(&mut disk, "resin-boot")?;
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        fs.write_file("EFI/BOOT/BOOTX64.EFI", &read(&grub_efi)?)?;
        fs.write_file("bench-vmlinuz", &read(&kernel)?)?;
        fs.write_file("bench-initrd.img", &read(&initrd)?)?;
        fs.close()?;
        Ok(())
    }

    /// The name of a regular file starting with `prefix` in `debugfs ls -p` output
    /// (`/inode/mode/uid/gid/name/size/`).
    fn regular_file_named(listing: &str, prefix: &str) -> Option<String> {
        listing.lines().find_map(|l| {
            let f: Vec<&str> = l.split('/').collect();
            (f.len() >= 6 && f[2].starts_with("100") && f[5].starts_with(prefix))
                .then(|| f[5].to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_user_processes_and_baleen_s_own() {
        let ps = "  9000 systemd\n     0 kthreadd\n  1200 baleen\n  3000 sshd\n";
        let free = "               total        used        free\nMem:             952         143         500\nSwap:            475           0         475\n";
        assert_eq!(
            parse_footprint(ps, free),
            Footprint {
                processes: 3,
                used_mib: 143,
                baleen_processes: 1,
                baleen_rss_kib: 1200
            }
        );
    }
}
