//! `baleen`: one binary for the host (build images, configure them, run them
//! in QEMU, measure) and the device (apply config.json at boot).
//!
//! Exit codes: 0 success, 1 the operation failed (the message says why and
//! how to fix it), 2 the command line was wrong.

mod bench;
mod build;
mod bundlecmd;
mod configcmd;
mod device;
mod run;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "baleen",
    version,
    about = "balenaOS rebuilt in Rust: build, configure, run and update devices"
)]
struct Cli {
    /// Log more (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a disk image (raw, GPT) and its build manifest.
    Build(build::Args),
    /// Make update bundles from built images.
    #[command(subcommand)]
    Bundle(bundlecmd::Command),
    /// Install host OS updates on the device; show the slots and the last update.
    #[command(subcommand)]
    Update(device::update::Command),
    /// Read, change, check and apply config.json (on the device, or in an image with --image).
    #[command(subcommand)]
    Config(configcmd::Command),
    /// What the device applied from config.json (per key, the last error).
    Status {
        /// Versioned JSON (`apiVersion`).
        #[arg(long)]
        json: bool,
    },
    /// Boot an image in QEMU (UEFI, software emulation), serial console on the terminal.
    Run(run::Args),
    /// Measure builds and boots; prints the figures.
    #[command(subcommand)]
    Bench(bench::Command),
    /// Reboot the device once no application holds an update lock.
    Reboot(RebootArgs),
    /// Device-side commands, run by baleen's systemd units.
    #[command(subcommand)]
    Device(DeviceCommand),
}

#[derive(clap::Args)]
struct RebootArgs {
    /// Give up waiting for update locks after SECS seconds (default: wait as long as they are held).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// With --timeout: reboot anyway when the locks are still held.
    #[arg(long, requires = "timeout")]
    force: bool,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Write sshd's host key, authorized keys, access policy and the development flag from config.json.
    Access,
    /// Write a uuid into config.json when it has none; set the hostname.
    Identity,
    /// udev helper: print by-state properties for DEVNODE if it is on the boot disk.
    StateProbe { devnode: PathBuf, label: String },
    /// Wipe the data partition when its remove_me_to_reset flag is missing.
    DataReset,
    /// Keep the journal on the data partition when persistentLogging is on.
    PersistentLogs,
    /// Start sshd.socket again if systemd stopped it.
    RecoverSsh,
    /// Apply config.json now and on every change (baleen-config.service).
    ConfigAgent,
    /// Turn on the zram swap: half of RAM, at most 4096000 KiB.
    Zram,
    /// Early clock: never before the build time, then the saved clock, then the RTC.
    TimeEarly,
    /// Save the clock to the state partition (never below the build time).
    TimeSave,
    /// Step the clock from the connectivity check's HTTPS Date (before chronyd starts).
    TimeHttps,
    /// Check that chronyd keeps the clock synchronized; restart it if not.
    NtpHealth,
    /// NetworkManager dispatcher: NTP servers from DHCP, chronyd online/offline.
    NtpDispatch { interface: String, action: String },
    /// At boot: repair the bootenv after a boot-stage fallback; drop stale breadcrumbs.
    UpdateBoot,
    /// The health window of a new root on trial: commit or roll back.
    UpdateHealth,
    /// At a clean shutdown during the health window: reset the boot count.
    UpdateShutdown,
}

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BALEEN_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
    if let Err(e) = dispatch(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Build(args) => build::run(args),
        Command::Bundle(command) => bundlecmd::run(command),
        Command::Update(command) => device::update::run(command),
        Command::Config(command) => configcmd::run(command),
        Command::Status { json } => configcmd::status(json),
        Command::Run(args) => run::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Reboot(args) => device::reboot::safe_reboot(&device::reboot::RebootOptions {
            lock_timeout: args.timeout.map(std::time::Duration::from_secs),
            force: args.force,
            ..Default::default()
        }),
        Command::Device(command) => match command {
            DeviceCommand::Access => device::access(),
            DeviceCommand::Identity => device::identity(),
            DeviceCommand::StateProbe { devnode, label } => {
                device::bystate::probe(&devnode, &label)
            }
            DeviceCommand::DataReset => device::data_reset(),
            DeviceCommand::PersistentLogs => device::persistent_logs(),
            DeviceCommand::RecoverSsh => device::recover_ssh(),
            DeviceCommand::Zram => device::zram::apply(),
            DeviceCommand::ConfigAgent => device::agent::run(std::path::Path::new("/")),
            DeviceCommand::TimeEarly => device::time::early(std::path::Path::new("/")),
            DeviceCommand::TimeSave => device::time::save(std::path::Path::new("/")),
            DeviceCommand::TimeHttps => device::time::https(std::path::Path::new("/")),
            DeviceCommand::NtpHealth => device::time::ntp_health(std::path::Path::new("/")),
            DeviceCommand::NtpDispatch { interface, action } => {
                device::time::ntp_dispatch(std::path::Path::new("/"), &interface, &action)
            }
            DeviceCommand::UpdateBoot => device::update::at_boot(),
            DeviceCommand::UpdateHealth => device::update::health(),
            DeviceCommand::UpdateShutdown => device::update::at_shutdown(),
        },
    }
}
