//! Host OS updates on the device (docs/updates.md): install a bundle into the
//! inactive root ([`install`]), then, after the reboot, the health window with
//! its commit or rollback, and the repair after a boot-stage fallback
//! ([`rollback`]).

pub mod bootfiles;
pub mod health;
pub mod hooks;
pub mod install;
mod prefetch;
pub mod progress;
pub mod record;
pub mod rollback;
pub mod slots;
pub mod source;

use anyhow::Result;
use std::path::Path;
use std::time::Duration;

const ROOT: &str = "/";

/// `baleen update …`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Install a bundle (a file or an http(s):// URL) into the inactive root; it boots at the
    /// next reboot, on trial until its health window ends.
    Install(InstallArgs),
    /// Both slots, the bootenv, the last update and the last rollback.
    Status {
        /// Versioned JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
pub struct InstallArgs {
    /// The bundle: a path, or an http:// or https:// URL (downloads resume after a dropped
    /// connection; nothing is staged on the device).
    source: String,
    /// Reboot into the new OS when it is installed (waiting for update locks, as baleen reboot).
    #[arg(long)]
    reboot: bool,
    /// Progress and the result as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Accept a bundle that is unsigned or signed by an unknown key (development images only).
    #[arg(long)]
    allow_unsigned: bool,
    /// Health window after the reboot, seconds.
    #[arg(long, value_name = "SECS", default_value_t = install::DEFAULT_HEALTH_WINDOW.as_secs())]
    health_window: u64,
    /// Time between two rounds of health checks, seconds.
    #[arg(long, value_name = "SECS", default_value_t = install::DEFAULT_HEALTH_INTERVAL.as_secs())]
    health_interval: u64,
    /// Do not run the new root's update hooks.
    #[arg(long)]
    no_hooks: bool,
}

pub fn run(command: Command) -> Result<()> {
    let root = Path::new(ROOT);
    match command {
        Command::Install(args) => {
            let options = install::InstallOptions {
                source: args.source,
                json: args.json,
                allow_unsigned: args.allow_unsigned,
                health_window: Duration::from_secs(args.health_window),
                health_interval: Duration::from_secs(args.health_interval.max(1)),
                no_hooks: args.no_hooks,
            };
            let installed = install::install(root, &options)?;
            if args.reboot {
                tracing::info!(
                    "rebooting into slot {} ({})",
                    installed.slot,
                    installed.version
                );
                crate::device::reboot::safe_reboot(&Default::default())?;
            }
            Ok(())
        }
        Command::Status { json } => {
            let status = rollback::status(root);
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
    }
}

/// The human form of [`rollback::status`].
pub fn print_status(status: &serde_json::Value) {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    println!("update:");
    for slot in ["A", "B"] {
        let s = &status["slots"][slot];
        println!(
            "  slot {slot} ({}): {}{} {}",
            text(&s["label"]),
            text(&s["state"]),
            if s["trial"].as_bool() == Some(true) {
                " (on trial)"
            } else {
                ""
            },
            text(&s["version"])
        );
    }
    if let Some(env) = status["bootenv"].as_object() {
        println!(
            "  bootenv: resin_root_part={} upgrade_available={} bootcount={}",
            text(&env["resin_root_part"]),
            u8::from(env["upgrade_available"].as_bool() == Some(true)),
            env["bootcount"]
        );
    }
    if let Some(u) = status["lastUpdate"].as_object() {
        println!(
            "  last update: {} -> {} (slot {}): {}{}",
            text(&u["fromVersion"]),
            text(&u["toVersion"]),
            text(&u["toSlot"]),
            text(&u["result"]),
            u["reason"]
                .as_str()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    if let Some(r) = status["lastRollback"].as_object() {
        println!(
            "  last rollback ({}, {}): {}",
            text(&r["kind"]),
            text(&r["at"]),
            text(&r["reason"])
        );
    }
}

/// `baleen device update-boot`.
pub fn at_boot() -> Result<()> {
    rollback::at_boot(Path::new(ROOT))
}

/// `baleen device update-health`.
pub fn health() -> Result<()> {
    rollback::health_window(Path::new(ROOT))
}

/// `baleen device update-shutdown`.
pub fn at_shutdown() -> Result<()> {
    rollback::at_shutdown(Path::new(ROOT))
}
