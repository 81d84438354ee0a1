//! `config.json` in a built image, and other reads of an image's FAT
//! partitions, all through the GPT and fatfs: no loop device, no mount.

use std::fs::File;
use std::path::Path;

use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::fat::FatFs;
use crate::gpt::{find_partition, read_partition_table_from};
use crate::layout::BOOT_LABEL;
use crate::slice::Slice;

/// Name of the configuration file at the root of the boot partition.
pub const CONFIG_JSON: &str = "config.json";

/// Check that `json` is a JSON object, naming `image` in the error.
pub fn validate_config_json(image: &Path, json: &[u8]) -> Result<()> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|error| Error::InvalidJson {
            path: image.to_path_buf(),
            error,
        })?;
    let found = match value {
        serde_json::Value::Object(_) => return Ok(()),
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
    };
    Err(Error::ConfigNotObject {
        path: image.to_path_buf(),
        found,
    })
}

/// Replace `config.json` in the `resin-boot` partition of `image` with `json`,
/// byte for byte.
///
/// `json` is validated first; if it is not a JSON object the image is not even
/// opened for writing, so it stays byte-identical.
pub fn inject_config(image: &Path, json: &[u8]) -> Result<()> {
    validate_config_json(image, json)?;
    let mut disk = Disk::open_rw(image)?;
    let fs = open_fat_partition(&mut disk, BOOT_LABEL)?;
    fs.write_file(CONFIG_JSON, json)?;
    fs.close()?;
    disk.sync()
}

/// The `config.json` of `image`.
pub fn read_config(image: &Path) -> Result<Vec<u8>> {
    read_file(image, BOOT_LABEL, CONFIG_JSON)
}

/// Read the file at `path` from the FAT partition labelled `partition`.
pub fn read_file(image: &Path, partition: &str, path: &str) -> Result<Vec<u8>> {
    let mut disk = Disk::open(image)?;
    let fs = open_fat_partition(&mut disk, partition)?;
    fs.read_file(path)
}

/// Every directory (ending in `/`) and file of the FAT partition labelled `partition`.
pub fn list_files(image: &Path, partition: &str) -> Result<Vec<String>> {
    let mut disk = Disk::open(image)?;
    let fs = open_fat_partition(&mut disk, partition)?;
    fs.list_files()
}

/// Open the FAT filesystem of the partition labelled `label` on `disk`.
///
/// On a read-only [`Disk`] reads work and writes fail. Reading leaves the
/// filesystem untouched: fatfs only writes (the dirty flag, FSInfo) once
/// something has been modified.
pub fn open_fat_partition<'d>(
    disk: &'d mut Disk,
    label: &str,
) -> Result<FatFs<Slice<&'d mut File>>> {
    let parts = read_partition_table_from(disk)?;
    let part = find_partition(&parts, label, disk.path())?.clone();
    let name = format!("{label} in {}", disk.path().display());
    FatFs::open(disk.partition(&part), name)
}
