//! The build file (`build.toml`), baleen's analogue of Yocto's `local.conf`.
//!
//! Staged as the style guide asks: [`RawBuildConfig`] mirrors the file with serde, and
//! [`RawBuildConfig::validate`] turns it into a typed [`BuildConfig`], with errors that name the
//! file, the key, the value and what was expected.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::debian::{DebianRelease, HttpUrl, PACKAGE, PACKAGES, PackageName, URL};
use crate::device::{DeviceType, known_slugs};
use crate::schema::{self, Key, Kind, invalid, key, names, quote};
use crate::{Error, HostOsVersion, MetaVersion};

/// The device type built when the build file names none.
pub const DEFAULT_DEVICE: &str = "qemux86-64";
/// The meta version used when the build file names none.
pub const DEFAULT_META_VERSION: &str = "0.1.0";
/// The Debian mirror used when the build file names none.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// `NETWORK_MANAGER_PACKAGES` when the build file names none.
pub const DEFAULT_NETWORK_MANAGER_PACKAGES: &[&str] = &["network-manager"];

const RELEASE: &str = "one of bookworm, trixie";
const META_VERSION: &str = "a version X.Y.Z or X.Y.Z-betaN";
const BOARD_REVISION: &str = "a non-negative integer (N of X.Y.Z+revN)";
const STORAGE_DRIVER: &str = "\"overlay2\" (the only storage driver balenaOS supports)";

/// The keys of a build file, in the order the error messages list them.
const KEYS: &[Key] = &[
    key("device", Kind::String, false, "a device-type slug"),
    key("release", Kind::String, false, RELEASE),
    key("meta_version", Kind::String, false, META_VERSION),
    key("board_revision", Kind::Integer, false, BOARD_REVISION),
    key("development", Kind::Bool, false, "true or false"),
    key(
        "network_manager_packages",
        Kind::StringArray,
        false,
        PACKAGES,
    ),
    key("storage_driver", Kind::String, false, STORAGE_DRIVER),
    key("extra_packages", Kind::StringArray, false, PACKAGES),
    key("mirror", Kind::String, false, URL),
];

/// The build file as written: every key optional, nothing validated yet.
///
/// The fields are public so that a caller (e.g. the CLI) can override keys before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBuildConfig {
    /// The file's name or path, used in error messages (not a key of the file).
    #[serde(skip)]
    pub origin: String,
    /// `device`: the device-type slug.
    pub device: Option<String>,
    /// `release`: the Debian release codename.
    pub release: Option<String>,
    /// `meta_version`: `X.Y.Z[-betaN]`.
    pub meta_version: Option<String>,
    /// `board_revision`: N of `+revN`.
    pub board_revision: Option<i64>,
    /// `development`: `OS_DEVELOPMENT`.
    pub development: Option<bool>,
    /// `network_manager_packages`: `NETWORK_MANAGER_PACKAGES`.
    pub network_manager_packages: Option<Vec<String>>,
    /// `storage_driver`: `BALENA_STORAGE`.
    pub storage_driver: Option<String>,
    /// `extra_packages`: further Debian packages.
    pub extra_packages: Option<Vec<String>>,
    /// `mirror`: the Debian mirror URL.
    pub mirror: Option<String>,
}

impl RawBuildConfig {
    /// Parses a build file's text; `origin` names it in errors. Unknown keys and values of the
    /// wrong TOML type are refused here, everything else in [`validate`](Self::validate).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RawBuildConfig, Error> {
        let mut raw: RawBuildConfig = schema::parse(text, origin, KEYS)?;
        raw.origin = origin.to_owned();
        Ok(raw)
    }

    /// Reads and parses a build file.
    pub fn load(path: &Path) -> Result<RawBuildConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            what: "build file",
            path: path.to_owned(),
            source,
        })?;
        RawBuildConfig::from_toml_str(&text, &path.display().to_string())
    }

    /// Checks every value and fills in the defaults; `device_types` are the device types the
    /// `device` key may name.
    pub fn validate(self, device_types: &[DeviceType]) -> Result<BuildConfig, Error> {
        let origin = self.origin.as_str();
        let slug = self.device.as_deref().unwrap_or(DEFAULT_DEVICE);
        let device = DeviceType::find_in(device_types, slug)
            .map_err(|_| {
                let expected = format!(
                    "one of the known device types {}",
                    known_slugs(device_types)
                );
                invalid(origin, "device", quote(slug), &expected)
            })?
            .clone();

        let release = match self.release.as_deref() {
            None => DebianRelease::default(),
            Some(name) => DebianRelease::from_codename(name)
                .ok_or_else(|| invalid(origin, "release", quote(name), RELEASE))?,
        };

        let version = self.meta_version.as_deref().unwrap_or(DEFAULT_META_VERSION);
        let meta_version = version.parse::<MetaVersion>().map_err(|e| {
            let detail = match e {
                osversion::Error::InvalidMeta {
                    problem: osversion::Problem::RevisionOnMeta,
                    ..
                } => "it has no +revN: set board_revision instead".to_owned(),
                osversion::Error::InvalidMeta { problem, .. } => problem.to_string(),
                other => other.to_string(),
            };
            let expected = format!("{META_VERSION} ({detail})");
            invalid(origin, "meta_version", quote(version), &expected)
        })?;

        let board_revision = match self.board_revision {
            None => 0,
            Some(n) => u32::try_from(n)
                .map_err(|_| invalid(origin, "board_revision", n.to_string(), BOARD_REVISION))?,
        };

        let storage_driver = match self.storage_driver.as_deref() {
            None | Some("overlay2") => StorageDriver::Overlay2,
            Some("aufs") => {
                return Err(Error::AufsRemoved {
                    origin: origin.to_owned(),
                });
            }
            Some(other) => {
                return Err(invalid(
                    origin,
                    "storage_driver",
                    quote(other),
                    STORAGE_DRIVER,
                ));
            }
        };

        let network_manager_packages = match &self.network_manager_packages {
            None => DEFAULT_NETWORK_MANAGER_PACKAGES
                .iter()
                .filter_map(|name| PackageName::parse(name))
                .collect(),
            Some(list) => names(
                origin,
                "network_manager_packages",
                list,
                PACKAGE,
                PackageName::parse,
            )?,
        };
        let extra_packages = match &self.extra_packages {
            None => Vec::new(),
            Some(list) => names(origin, "extra_packages", list, PACKAGE, PackageName::parse)?,
        };

        let url = self.mirror.as_deref().unwrap_or(DEFAULT_MIRROR);
        let mirror =
            HttpUrl::parse(url).ok_or_else(|| invalid(origin, "mirror", quote(url), URL))?;

        Ok(BuildConfig {
            device,
            release,
            meta_version,
            board_revision,
            development: self.development.unwrap_or(false),
            network_manager_packages,
            storage_driver,
            extra_packages,
            mirror,
        })
    }
}

/// A validated build configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// The device type to build for.
    pub device: DeviceType,
    /// The Debian release of the root filesystem.
    pub release: DebianRelease,
    /// The meta-balena version analogue (`META_BALENA_VERSION`).
    pub meta_version: MetaVersion,
    /// The board revision N (`BALENA_BOARD_REV`); non-zero adds `+revN` to the host OS version.
    pub board_revision: u32,
    /// `OS_DEVELOPMENT`: a development image.
    pub development: bool,
    /// `NETWORK_MANAGER_PACKAGES`: the Debian packages providing network management.
    pub network_manager_packages: Vec<PackageName>,
    /// `BALENA_STORAGE`: the container engine's storage driver.
    pub storage_driver: StorageDriver,
    /// Further Debian packages for the root filesystem.
    pub extra_packages: Vec<PackageName>,
    /// The Debian mirror.
    pub mirror: HttpUrl,
}

impl BuildConfig {
    /// Reads and validates a build file against the built-in device types.
    pub fn load(path: &Path) -> Result<BuildConfig, Error> {
        RawBuildConfig::load(path)?.validate(&DeviceType::builtin())
    }

    /// Parses and validates a build file's text against the built-in device types; `origin`
    /// names the file in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<BuildConfig, Error> {
        RawBuildConfig::from_toml_str(text, origin)?.validate(&DeviceType::builtin())
    }

    /// The configuration an empty build file gives, for `device`.
    pub fn default_for(device: DeviceType) -> BuildConfig {
        let raw = RawBuildConfig {
            device: Some(device.slug.clone()),
            ..RawBuildConfig::default()
        };
        match raw.validate(std::slice::from_ref(&device)) {
            Ok(config) => config,
            // The defaults are constants covered by the tests.
            Err(e) => unreachable!("the default build configuration is invalid: {e}"),
        }
    }

    /// The host OS version (`HOSTOS_VERSION`, os-release `VERSION`): `X.Y.Z[-betaN][+revN]`,
    /// with `+revN` only for a non-zero board revision.
    pub fn hostos_version(&self) -> String {
        self.hostos().to_string()
    }

    /// The host OS version as a value, for comparisons.
    pub fn hostos(&self) -> HostOsVersion {
        HostOsVersion::new(self.meta_version, self.board_revision)
    }

    /// os-release `VARIANT`: `Development` or `Production`.
    pub fn variant(&self) -> &'static str {
        if self.development {
            "Development"
        } else {
            "Production"
        }
    }

    /// os-release `VARIANT_ID`: `dev` or `prod`.
    pub fn variant_id(&self) -> &'static str {
        if self.development { "dev" } else { "prod" }
    }

    /// The kernel command line for this variant (without `root=`, which the boot stage adds).
    pub fn kernel_cmdline(&self) -> String {
        self.device.kernel_cmdline_for(self.development)
    }

    /// Every Debian package the build asks for beyond the base system, in order, without
    /// duplicates: the kernel, the device's packages, the network manager, the extra packages.
    pub fn debian_packages(&self) -> Vec<PackageName> {
        let all = std::iter::once(&self.device.kernel_package)
            .chain(&self.device.packages)
            .chain(&self.network_manager_packages)
            .chain(&self.extra_packages);
        let mut packages: Vec<PackageName> = Vec::new();
        for package in all {
            if !packages.contains(package) {
                packages.push(package.clone());
            }
        }
        packages
    }
}

/// The container engine's storage driver. Only overlay2: aufs was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageDriver {
    /// overlay2.
    #[default]
    Overlay2,
}

impl StorageDriver {
    /// The engine's name for the driver.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageDriver::Overlay2 => "overlay2",
        }
    }
}

impl fmt::Display for StorageDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
