//! `baleen config …`: read and change `config.json` on the device
//! (`/mnt/boot/config.json`, through the power-safe store and its lock) or in
//! an image (`--image IMAGE`, without mounting anything).

use crate::device::agent;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use deviceconfig::model::{self, Raw};
use deviceconfig::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum Command {
    /// Print the value at a dotted path (`os.network.wifi.randomMacAddressScan`) as JSON.
    Get {
        key: String,
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Set a dotted path to a JSON value (`true`, `42`, `"text"`, `["a"]`); text that is not
    /// JSON is taken as a string. Refused when the new value is invalid.
    Set {
        key: String,
        value: String,
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Remove a dotted path.
    Unset {
        key: String,
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Check config.json: errors (exit 1) and warnings, per key.
    Validate {
        #[arg(long)]
        image: Option<PathBuf>,
        /// Check this file instead.
        #[arg(long, conflicts_with = "image")]
        file: Option<PathBuf>,
    },
    /// Print config.json.
    Show {
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// Apply config.json to this device now (what the agent does on every change).
    Apply {
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Replace config.json in IMAGE's boot partition with CONFIG (must be a JSON object).
    Inject { image: PathBuf, config: PathBuf },
}

const DEVICE_ROOT: &str = "/";

fn device_store() -> Result<Store> {
    let store = Store::on_device(Path::new(DEVICE_ROOT));
    let lock_dir = Path::new("/run/baleen");
    std::fs::create_dir_all(lock_dir)
        .with_context(|| format!("creating {}", lock_dir.display()))?;
    Ok(store)
}

fn read(image: Option<&Path>) -> Result<(String, Vec<u8>)> {
    match image {
        Some(image) => Ok((
            format!("{}:/config.json", image.display()),
            diskimage::read_config(image)?,
        )),
        None => {
            let store = device_store()?;
            Ok((store.path().display().to_string(), store.read()?))
        }
    }
}

/// A command-line value: JSON when it parses, else the text as a string.
pub fn parse_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// Applies `edit` to the configuration and refuses the result when it makes
/// `key` invalid (other keys' existing problems are not this edit's fault).
fn edit_checked(
    name: &str,
    bytes: &[u8],
    key: &str,
    edit: impl FnOnce(&mut Raw) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut raw = Raw::parse(name, bytes)?;
    edit(&mut raw)?;
    let validated = model::validate(&raw);
    let mine: Vec<String> = validated
        .errors
        .iter()
        .filter(|e| {
            e.path == key
                || e.path.starts_with(&format!("{key}."))
                || e.path.starts_with(&format!("{key}["))
        })
        .map(|e| e.to_string())
        .collect();
    if !mine.is_empty() {
        bail!("{}; config.json is unchanged", mine.join("; "));
    }
    Ok(raw.to_text().into_bytes())
}

fn change(
    image: Option<&Path>,
    key: &str,
    edit: impl FnOnce(&mut Raw) -> Result<()>,
) -> Result<()> {
    match image {
        Some(image) => {
            let (name, bytes) = read(Some(image))?;
            let new = edit_checked(&name, &bytes, key, edit)?;
            diskimage::inject_config(image, &new)?;
        }
        None => {
            let store = device_store()?;
            let name = store.path().display().to_string();
            store.update(|bytes: &[u8]| -> Result<Vec<u8>> {
                edit_checked(&name, bytes, key, edit)
            })?;
        }
    }
    Ok(())
}

pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Get { key, image } => {
            let (name, bytes) = read(image.as_deref())?;
            let raw = Raw::parse(&name, &bytes)?;
            match raw.get(&key) {
                Some(v) => println!("{}", serde_json::to_string_pretty(v)?),
                None => bail!("{key} is not set in {name}"),
            }
            Ok(())
        }
        Command::Set { key, value, image } => {
            let value = parse_value(&value);
            change(image.as_deref(), &key, |raw| {
                raw.set(&key, value).map_err(anyhow::Error::from)
            })
        }
        Command::Unset { key, image } => change(image.as_deref(), &key, |raw| {
            if raw.unset(&key).is_none() {
                eprintln!("{key} was not set");
            }
            Ok(())
        }),
        Command::Validate { image, file } => {
            let (name, bytes) = match file {
                Some(file) => (
                    file.display().to_string(),
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
                ),
                None => read(image.as_deref())?,
            };
            let raw = Raw::parse(&name, &bytes)?;
            let validated = model::validate(&raw);
            for w in &validated.warnings {
                println!("warning: {w}");
            }
            for e in &validated.errors {
                println!("error: {e}");
            }
            if !validated.errors.is_empty() {
                bail!("{name}: {} invalid key(s)", validated.errors.len());
            }
            println!("{name}: valid");
            Ok(())
        }
        Command::Show { image } => {
            let (_, bytes) = read(image.as_deref())?;
            print!("{}", String::from_utf8_lossy(&bytes));
            Ok(())
        }
        Command::Apply { dry_run } => {
            let report = agent::apply_once(Path::new(DEVICE_ROOT), dry_run);
            for s in &report.subsystems {
                println!("{:<15} {}", s.subsystem, s.result);
                for c in &s.changes {
                    println!("    {c}");
                }
            }
            match report.last_error {
                Some(e) => bail!(e),
                None => Ok(()),
            }
        }
        Command::Inject { image, config } => {
            let json =
                std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
            diskimage::inject_config(&image, &json)?;
            eprintln!(
                "config.json in {} replaced with {}",
                image.display(),
                config.display()
            );
            Ok(())
        }
    }
}

/// `baleen status [--json]`: what the config agent last applied.
pub fn status(json: bool) -> Result<()> {
    let path = Path::new(DEVICE_ROOT).join(agent::STATUS);
    // Early in a boot the agent may not have written its status yet: the clock and the
    // update slots are still worth showing.
    let mut v: Value = match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({
            "apiVersion": 1,
            "revision": null,
            "subsystems": [],
            "lastError": format!(
                "config.json not applied yet: {} does not exist (baleen-config.service writes it \
                 once it has applied config.json; see `journalctl -u baleen-config`)",
                path.display()
            ),
        }),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let time = crate::device::time::status(Path::new(DEVICE_ROOT));
    let update = crate::device::update::rollback::status(Path::new(DEVICE_ROOT));
    if json {
        v["time"] = time;
        v["update"] = update;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "config.json revision {}",
        v["revision"].as_str().unwrap_or("-")
    );
    if let Some(subsystems) = v["subsystems"].as_array() {
        for s in subsystems {
            println!(
                "  {:<15} {:<10} {}",
                s["subsystem"].as_str().unwrap_or(""),
                s["result"].as_str().unwrap_or(""),
                s["error"].as_str().unwrap_or("")
            );
        }
    }
    for e in v["errors"].as_array().into_iter().flatten() {
        println!("  error: {}", e.as_str().unwrap_or(""));
    }
    if let Some(e) = v["lastError"].as_str() {
        println!("  last error: {e}");
    }
    println!("clock {}", time["clock"].as_str().unwrap_or("-"));
    if let Some(steps) = time["steps"].as_object() {
        for (step, record) in steps {
            let result = record["result"]
                .as_str()
                .map(String::from)
                .or_else(|| record["source"].as_str().map(|s| format!("source {s}")))
                .unwrap_or_default();
            let offset = record["offsetSeconds"].as_f64().unwrap_or(0.0);
            println!(
                "  {step:<15} {result} ({offset:+.1} s) at {}",
                record["at"].as_str().unwrap_or("-")
            );
        }
    }
    println!(
        "  ntp             {}",
        if time["ntp"]["synchronized"] == true {
            "synchronized"
        } else {
            "not synchronized"
        }
    );
    crate::device::update::print_status(&update);
    Ok(())
}
