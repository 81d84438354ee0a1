//! `baleen run`: boot an image in QEMU (OVMF, TCG) with the serial console on
//! this terminal, networking isolated except the SSH forward.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The raw disk image to boot (from `baleen build`).
    pub image: PathBuf,
    /// Host port on 127.0.0.1 forwarded to the device's SSH port 22222.
    #[arg(long, default_value_t = 22222)]
    pub ssh_port: u16,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Boot the image itself, keeping what the device writes. Without it a
    /// throwaway overlay takes the writes and the image stays untouched.
    #[arg(long)]
    pub persist: bool,
    /// Virtual disk size in GiB for the throwaway overlay (resin-data grows into it).
    #[arg(long, default_value_t = 8)]
    pub disk_gib: u64,
}

pub fn run(args: Args) -> Result<()> {
    let image = std::fs::canonicalize(&args.image)
        .with_context(|| format!("opening image {}", args.image.display()))?;
    let log_dir = std::env::temp_dir().join(format!("baleen-run-{}", std::process::id()));
    let mut config = vmharness::Vm::builder("run")
        .base_image(&image)
        .ssh_port(Some(args.ssh_port))
        .memory_mib(args.memory)
        .cpus(args.cpus)
        .persist(args.persist)
        .console(true)
        .log_dir(&log_dir);
    if !args.persist {
        config = config.overlay_size(args.disk_gib << 30);
    }
    eprintln!(
        "baleen run: booting {} (QEMU TCG, UEFI); serial console follows. Logs: {}\n\
         SSH once booted: ssh -p {} root@127.0.0.1   (Ctrl-A X here stops the VM)",
        image.display(),
        log_dir.display(),
        args.ssh_port
    );
    let mut vm = config.start()?;
    while vm.is_running() {
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(vm);
    if !args.persist {
        // The overlay held the device's writes; nothing in it outlives the run.
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    Ok(())
}
