//! Device-specific keys: `os.fan.profile`, `os.power.mode` (through a
//! per-device-type backend) and `os.kernel.extraFirmwareVol` (the kernel's
//! firmware search path).

use super::network::APPLIED_DIR;
use super::{FileOp, Plan, Step, read_opt};
use deviceconfig::model::Config;
use std::path::Path;

/// Device types with a fan or power modes install an executable here, named
/// after the setting (`fan-profile`, `power-mode`); it is run with the value
/// (an empty argument when the key is removed: back to the default).
pub const BACKENDS_DIR: &str = "usr/lib/baleen/backends";

/// The device type slug (os-release `SLUG`), for messages.
fn device_type(root: &Path) -> String {
    read_opt(&root.join("etc/os-release"))
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("SLUG=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "this device type".to_string())
}

/// `os.fan.profile` or `os.power.mode` through the backend `name`: run
/// when the value differs from the one last applied. Without a backend, a
/// set key is reported as not supported on this device type (no error).
pub fn plan_backend(root: &Path, key: &str, name: &str, value: Option<&str>) -> Plan {
    let mut plan = Plan::default();
    let applied_path = root.join(APPLIED_DIR).join(name);
    let applied = read_opt(&applied_path);
    if applied.as_deref() == value {
        return plan;
    }
    let backend = root.join(BACKENDS_DIR).join(name);
    if !backend.is_file() {
        if let Some(value) = value {
            plan.notes.push(format!(
                "{key} {value:?}: not supported on {}",
                device_type(root)
            ));
        }
        return plan;
    }
    let backend = format!("/{BACKENDS_DIR}/{name}");
    plan.steps.push(Step::new(&[&backend, value.unwrap_or("")]));
    plan.records.push(match value {
        Some(value) => FileOp::Write {
            path: applied_path,
            content: value.to_string(),
            mode: 0o644,
        },
        None => FileOp::Remove { path: applied_path },
    });
    plan
}

/// The kernel's extra firmware search path.
const FIRMWARE_PATH: &str = "sys/module/firmware_class/parameters/path";

/// `os.kernel.extraFirmwareVol` → the kernel looks for firmware in that
/// engine volume's directory too (`firmware_class.path`); removing the key
/// clears the path. A volume that does not exist yet is a note: the path is
/// set once it does and the agent runs again.
pub fn plan_firmware(root: &Path, config: &Config) -> Plan {
    let mut plan = Plan::default();
    let param = root.join(FIRMWARE_PATH);
    let Some(have) = read_opt(&param) else {
        if config.extra_firmware_vol.is_some() {
            plan.notes.push(
                "os.kernel.extraFirmwareVol: the kernel has no firmware_class.path parameter"
                    .into(),
            );
        }
        return plan;
    };
    let have = have.trim();
    let want = match config.extra_firmware_vol.as_deref() {
        None => String::new(),
        Some(volume) => {
            let dir = format!("/var/lib/docker/volumes/{volume}/_data");
            if !root.join(dir.trim_start_matches('/')).is_dir() {
                plan.notes.push(format!(
                    "os.kernel.extraFirmwareVol {volume:?}: no volume directory {dir} yet; \
                     create the volume and the path is set at the next change"
                ));
                return plan;
            }
            dir
        }
    };
    if have != want {
        // The kernel keeps the bytes as written (no trailing newline), and
        // reads an empty value as a NUL: a zero-length write never reaches it.
        let content = if want.is_empty() {
            "\0".to_string()
        } else {
            want
        };
        plan.files.push(FileOp::WriteInPlace {
            path: param,
            content,
        });
    }
    plan
}
