//! Device types: one TOML data file per device type, in `devices/<slug>.toml`.
//!
//! The files in the repository's `devices/` directory are built into the crate
//! ([`DeviceType::builtin`]); a directory of further files can be loaded at run time
//! ([`DeviceType::load_dir`]). Both go through the same validation.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::Error;
use crate::debian::{Arch, HttpUrl, PACKAGE, PACKAGES, PackageName, URL};
use crate::schema::{self, Key, Kind, invalid, key, names, quote};

/// The device-type files built into baleen, as `(slug, text)`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "genericx86-64-ext",
        include_str!("../../../devices/genericx86-64-ext.toml"),
    ),
    (
        "qemux86-64",
        include_str!("../../../devices/qemux86-64.toml"),
    ),
];

/// Partition sizes must be multiples of this (balenaOS's `BALENA_IMAGE_ALIGNMENT`, 4096 KiB).
pub const PARTITION_ALIGNMENT_MIB: u64 = 4;

/// A validated device type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceType {
    /// The slug (`deviceType` in `config.json`, `SLUG` in os-release), e.g. `qemux86-64`.
    pub slug: String,
    /// The human-readable name, e.g. `QEMU X86 64bit`.
    pub name: String,
    /// The CPU architecture.
    pub arch: Arch,
    /// `MACHINE` in os-release (the Yocto machine name in balenaOS).
    pub machine: String,
    /// The support state shown by balena's tools.
    pub state: DeviceState,
    /// Provisioning instructions for `device-type.json` (may contain HTML, as balena's do).
    pub instructions: Vec<String>,
    /// The getting-started page for `device-type.json`.
    pub getting_started_link: HttpUrl,
    /// Where the firmware looks for the boot image on the boot partition, e.g.
    /// `EFI/BOOT/BOOTX64.EFI`.
    pub efi_boot_file: String,
    /// The Debian package providing the kernel and its modules.
    pub kernel_package: PackageName,
    /// The kernel command line shared by both variants (without `root=`: the boot stage adds it).
    pub kernel_cmdline: String,
    /// Appended to [`Self::kernel_cmdline`] on production images.
    pub production_cmdline_extra: String,
    /// Appended to [`Self::kernel_cmdline`] on development images.
    pub development_cmdline_extra: String,
    /// Kernel modules the boot stage loads, in this order (their dependencies are resolved at
    /// build time from `modules.dep`).
    pub boot_modules: Vec<ModuleName>,
    /// Module trees of the kernel package the device cannot use (hardware a QEMU machine never
    /// has), removed from the root filesystem, e.g. `kernel/drivers/gpu`.
    pub omit_modules: Vec<ModuleTree>,
    /// Device-specific Debian packages added to the root filesystem.
    pub packages: Vec<PackageName>,
    /// Partition sizes.
    pub sizes: PartitionSizes,
}

/// The support state of a device type (`state` in `device-type.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Supported and tested.
    Released,
    /// Newly added.
    New,
    /// Works, without guarantees.
    Experimental,
    /// No longer supported.
    Discontinued,
}

impl DeviceState {
    /// Every state.
    pub const ALL: [DeviceState; 4] = [
        DeviceState::Released,
        DeviceState::New,
        DeviceState::Experimental,
        DeviceState::Discontinued,
    ];

    /// The name used in device-type files and `device-type.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Released => "released",
            DeviceState::New => "new",
            DeviceState::Experimental => "experimental",
            DeviceState::Discontinued => "discontinued",
        }
    }
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Partition sizes in MiB, each a positive multiple of [`PARTITION_ALIGNMENT_MIB`]:
/// the image layout's own type, validated here.
pub use diskimage::PartitionSizes;

/// A kernel module name, `[a-z0-9_-]+` (as `modprobe` takes it, without `.ko`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleName(String);

impl ModuleName {
    /// The rule, for error messages.
    pub const RULE: &'static str = "[a-z0-9_-]+";

    /// Returns the name if it follows the rule.
    pub fn parse(name: &str) -> Option<ModuleName> {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        ok.then(|| ModuleName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tree of kernel modules, relative to `/usr/lib/modules/<version>/`: `kernel/` followed by
/// plain path components, e.g. `kernel/drivers/gpu` or `kernel/sound`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleTree(String);

impl ModuleTree {
    /// Returns the path if it is `kernel/` followed by at least one plain component
    /// (`[A-Za-z0-9._-]+`, not `.` or `..`).
    pub fn parse(path: &str) -> Option<ModuleTree> {
        let rest = path.strip_prefix("kernel/")?;
        rest.split('/')
            .all(is_plain_component)
            .then(|| ModuleTree(path.to_owned()))
    }

    /// The path, relative to the kernel's modules directory.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModuleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The serde mirror of a device-type file; [`validate`](RawDeviceType::validate) turns it into a
/// [`DeviceType`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviceType {
    slug: String,
    name: String,
    arch: String,
    machine: String,
    state: String,
    #[serde(default)]
    instructions: Vec<String>,
    getting_started_link: String,
    efi_boot_file: String,
    kernel_package: String,
    kernel_cmdline: String,
    #[serde(default)]
    production_cmdline_extra: String,
    #[serde(default)]
    development_cmdline_extra: String,
    boot_modules: Vec<String>,
    #[serde(default)]
    omit_modules: Vec<String>,
    #[serde(default)]
    packages: Vec<String>,
    boot_size_mib: i64,
    root_size_mib: i64,
    state_size_mib: i64,
    data_size_mib: i64,
}

const SLUG: &str = "a device-type slug ([a-z0-9][a-z0-9-]*)";
const MACHINE: &str = "a machine name ([a-z0-9][a-z0-9_-]*)";
const NAME: &str = "a non-empty name on one line";
const ARCH: &str = "one of amd64, arm64, armhf, i386";
const STATE: &str = "one of released, new, experimental, discontinued";
const INSTRUCTIONS: &str = "an array of non-empty strings";
const EFI_FILE: &str =
    "a relative path on the boot partition ending in .EFI, e.g. \"EFI/BOOT/BOOTX64.EFI\"";
const CMDLINE: &str =
    "kernel parameters in printable ASCII, without root= (the boot stage adds root=UUID=...)";
const MODULE: &str = "a kernel module name ([a-z0-9_-]+)";
const MODULES: &str = "an array of kernel module names";
const MODULE_TREE: &str =
    "a path of the kernel's modules directory starting with kernel/, e.g. \"kernel/drivers/gpu\"";
const MODULE_TREES: &str = "an array of paths such as \"kernel/drivers/gpu\"";
const SIZE: &str = "a size in MiB, a positive multiple of 4";

/// The keys of a device-type file, in the order the error messages list them.
const KEYS: &[Key] = &[
    key("slug", Kind::String, true, SLUG),
    key("name", Kind::String, true, NAME),
    key("arch", Kind::String, true, ARCH),
    key("machine", Kind::String, true, MACHINE),
    key("state", Kind::String, true, STATE),
    key("instructions", Kind::StringArray, false, INSTRUCTIONS),
    key("getting_started_link", Kind::String, true, URL),
    key("efi_boot_file", Kind::String, true, EFI_FILE),
    key("kernel_package", Kind::String, true, PACKAGE),
    key("kernel_cmdline", Kind::String, true, CMDLINE),
    key("production_cmdline_extra", Kind::String, false, CMDLINE),
    key("development_cmdline_extra", Kind::String, false, CMDLINE),
    key("boot_modules", Kind::StringArray, true, MODULES),
    key("omit_modules", Kind::StringArray, false, MODULE_TREES),
    key("packages", Kind::StringArray, false, PACKAGES),
    key("boot_size_mib", Kind::Integer, true, SIZE),
    key("root_size_mib", Kind::Integer, true, SIZE),
    key("state_size_mib", Kind::Integer, true, SIZE),
    key("data_size_mib", Kind::Integer, true, SIZE),
];

impl RawDeviceType {
    fn validate(self, origin: &str) -> Result<DeviceType, Error> {
        let bad =
            |key: &str, value: &str, expected: &str| invalid(origin, key, quote(value), expected);
        if !is_slug(&self.slug, false) {
            return Err(bad("slug", &self.slug, SLUG));
        }
        if self.name.trim().is_empty() || self.name.chars().any(char::is_control) {
            return Err(bad("name", &self.name, NAME));
        }
        let arch = Arch::from_debian(&self.arch).ok_or_else(|| bad("arch", &self.arch, ARCH))?;
        if !is_slug(&self.machine, true) {
            return Err(bad("machine", &self.machine, MACHINE));
        }
        let state = DeviceState::ALL
            .into_iter()
            .find(|s| s.as_str() == self.state)
            .ok_or_else(|| bad("state", &self.state, STATE))?;
        for (i, text) in self.instructions.iter().enumerate() {
            if text.trim().is_empty() {
                return Err(bad(
                    &format!("instructions[{i}]"),
                    text,
                    "a non-empty string",
                ));
            }
        }
        let getting_started_link = HttpUrl::parse(&self.getting_started_link)
            .ok_or_else(|| bad("getting_started_link", &self.getting_started_link, URL))?;
        if !is_efi_path(&self.efi_boot_file) {
            return Err(bad("efi_boot_file", &self.efi_boot_file, EFI_FILE));
        }
        let kernel_package = PackageName::parse(&self.kernel_package)
            .ok_or_else(|| bad("kernel_package", &self.kernel_package, PACKAGE))?;
        let cmdline = |key: &str, value: &str| {
            cmdline_ok(value)
                .then(|| join_cmdline([value]))
                .ok_or_else(|| bad(key, value, CMDLINE))
        };
        let boot_modules = names(
            origin,
            "boot_modules",
            &self.boot_modules,
            MODULE,
            ModuleName::parse,
        )?;
        let omit_modules = names(
            origin,
            "omit_modules",
            &self.omit_modules,
            MODULE_TREE,
            ModuleTree::parse,
        )?;
        let packages = names(
            origin,
            "packages",
            &self.packages,
            PACKAGE,
            PackageName::parse,
        )?;
        let size = |key: &str, mib: i64| {
            u64::try_from(mib)
                .ok()
                .filter(|&mib| mib > 0 && mib % PARTITION_ALIGNMENT_MIB == 0)
                .ok_or_else(|| invalid(origin, key, mib.to_string(), SIZE))
        };
        Ok(DeviceType {
            kernel_cmdline: cmdline("kernel_cmdline", &self.kernel_cmdline)?,
            production_cmdline_extra: cmdline(
                "production_cmdline_extra",
                &self.production_cmdline_extra,
            )?,
            development_cmdline_extra: cmdline(
                "development_cmdline_extra",
                &self.development_cmdline_extra,
            )?,
            sizes: PartitionSizes {
                boot_mib: size("boot_size_mib", self.boot_size_mib)?,
                root_mib: size("root_size_mib", self.root_size_mib)?,
                state_mib: size("state_size_mib", self.state_size_mib)?,
                data_mib: size("data_size_mib", self.data_size_mib)?,
            },
            slug: self.slug,
            name: self.name,
            arch,
            machine: self.machine,
            state,
            instructions: self.instructions,
            getting_started_link,
            efi_boot_file: self.efi_boot_file,
            kernel_package,
            boot_modules,
            omit_modules,
            packages,
        })
    }
}

/// `[a-z0-9][a-z0-9-]*`, also allowing `_` when `underscore` is set.
fn is_slug(s: &str, underscore: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (underscore && c == '_')
        })
}

/// A path component of `[A-Za-z0-9._-]+` that is not `.` or `..`.
fn is_plain_component(part: &str) -> bool {
    !part.is_empty()
        && part != "."
        && part != ".."
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A relative `/`-separated path of plain components, the last one ending in `.efi` (any case).
fn is_efi_path(path: &str) -> bool {
    path.split('/').all(is_plain_component) && path.to_ascii_lowercase().ends_with(".efi")
}

/// Printable ASCII only, and no `root=` parameter.
fn cmdline_ok(cmdline: &str) -> bool {
    cmdline.chars().all(|c| c == ' ' || c.is_ascii_graphic())
        && !cmdline.split(' ').any(|param| param.starts_with("root="))
}

/// Joins command-line fragments with single spaces, dropping empty ones.
fn join_cmdline<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    parts
        .into_iter()
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
}

impl DeviceType {
    /// Parses and validates a device-type file's text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<DeviceType, Error> {
        schema::parse::<RawDeviceType>(text, origin, KEYS)?.validate(origin)
    }

    /// Reads and validates one device-type file, which must be named `<slug>.toml`.
    pub fn load(path: &Path) -> Result<DeviceType, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            what: "device-type file",
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        let device = DeviceType::from_toml_str(&text, &origin)?;
        let stem = path.file_stem().and_then(|s| s.to_str());
        if stem != Some(device.slug.as_str()) {
            return Err(Error::SlugMismatch {
                origin,
                slug: device.slug,
            });
        }
        Ok(device)
    }

    /// Reads every `*.toml` file of `dir` as a device type, sorted by slug.
    pub fn load_dir(dir: &Path) -> Result<Vec<DeviceType>, Error> {
        let read_error = |source| Error::Read {
            what: "device-type directory",
            path: dir.to_owned(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_error)? {
            let path = entry.map_err(read_error)?.path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(Error::NoDeviceTypes {
                dir: dir.to_owned(),
            });
        }
        let mut devices = paths
            .iter()
            .map(|path| DeviceType::load(path))
            .collect::<Result<Vec<_>, _>>()?;
        devices.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(devices)
    }

    /// The device types built into baleen (the repository's `devices/` directory), sorted by slug.
    ///
    /// # Panics
    ///
    /// If a built-in file is invalid; the crate's tests make sure none is.
    pub fn builtin() -> Vec<DeviceType> {
        BUILTIN
            .iter()
            .map(|(slug, text)| {
                let origin = format!("devices/{slug}.toml");
                let device = DeviceType::from_toml_str(text, &origin)
                    .unwrap_or_else(|e| panic!("built-in device type is invalid: {e}"));
                assert_eq!(
                    &device.slug, slug,
                    "{origin}: slug does not match the file name"
                );
                device
            })
            .collect()
    }

    /// The built-in device type with this slug.
    pub fn find(slug: &str) -> Result<DeviceType, Error> {
        DeviceType::find_in(&DeviceType::builtin(), slug).cloned()
    }

    /// The device type with this slug in `devices`; the error lists the known slugs.
    pub fn find_in<'a>(devices: &'a [DeviceType], slug: &str) -> Result<&'a DeviceType, Error> {
        devices
            .iter()
            .find(|d| d.slug == slug)
            .ok_or_else(|| Error::UnknownDeviceType {
                slug: slug.to_owned(),
                known: known_slugs(devices),
            })
    }

    /// The full kernel command line of a production or development image (without `root=`).
    pub fn kernel_cmdline_for(&self, development: bool) -> String {
        let extra = if development {
            &self.development_cmdline_extra
        } else {
            &self.production_cmdline_extra
        };
        join_cmdline([self.kernel_cmdline.as_str(), extra.as_str()])
    }
}

/// The slugs of `devices`, comma separated, for error messages.
pub(crate) fn known_slugs(devices: &[DeviceType]) -> String {
    devices
        .iter()
        .map(|d| d.slug.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
