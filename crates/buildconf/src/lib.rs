//! baleen's build configuration: the build file (`build.toml`, the analogue of Yocto's
//! `local.conf`) and the device types (one TOML data file each, in the repository's `devices/`).
//!
//! ```
//! let config = buildconf::BuildConfig::from_toml_str(
//!     "device = \"qemux86-64\"\nmeta_version = \"1.0.0-beta2\"\nboard_revision = 1\n",
//!     "build.toml",
//! )
//! .unwrap();
//! assert_eq!(config.hostos_version(), "1.0.0-beta2+rev1");
//! assert_eq!(config.device.device_type_json()["slug"], "qemux86-64");
//! ```

mod buildfile;
mod debian;
mod device;
mod device_json;
mod error;
mod schema;

pub use buildfile::{
    BuildConfig, DEFAULT_DEVICE, DEFAULT_META_VERSION, DEFAULT_MIRROR,
    DEFAULT_NETWORK_MANAGER_PACKAGES, RawBuildConfig, StorageDriver,
};
pub use debian::{Arch, DebianRelease, HttpUrl, PackageName};
pub use device::{
    DeviceState, DeviceType, ModuleName, ModuleTree, PARTITION_ALIGNMENT_MIB, PartitionSizes,
};
pub use error::Error;
/// The meta-balena version type of [`BuildConfig::meta_version`], from the `osversion` crate.
pub use osversion::{HostOsVersion, MetaVersion};
