//! The inputs the test images were built from: devices/qemux86-64.toml and
//! tests/build-<variant>.toml. Expected values come from here, never from
//! the image under test.

use std::path::Path;

use systests::{DEVICE, workspace_root};

fn read_toml(path: &Path) -> toml::Table {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// devices/qemux86-64.toml.
pub fn device_type() -> toml::Table {
    read_toml(&workspace_root().join(format!("devices/{DEVICE}.toml")))
}

/// tests/build-<variant>.toml, the build file of that test image.
pub fn build_file(variant: &str) -> toml::Table {
    read_toml(&workspace_root().join(format!("tests/build-{variant}.toml")))
}

pub fn toml_str<'t>(table: &'t toml::Table, key: &str) -> &'t str {
    table
        .get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("no string {key} in {table:?}"))
}

pub fn toml_u64(table: &toml::Table, key: &str) -> u64 {
    table
        .get(key)
        .and_then(toml::Value::as_integer)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or_else(|| panic!("no size {key} in {table:?}"))
}

pub fn is_development(variant: &str) -> bool {
    build_file(variant)
        .get("development")
        .and_then(toml::Value::as_bool)
        .unwrap_or_else(|| panic!("tests/build-{variant}.toml sets no development flag"))
}
