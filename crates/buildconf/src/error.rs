//! The one error type of this crate.
//!
//! Every message names the file it comes from (its "origin"), the key and the offending value, and
//! says what was expected, so that a user can fix the file without reading the code.

use std::path::PathBuf;

/// An error while reading or validating a build file or a device-type file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("reading {what} {}", path.display())]
    Read {
        /// What kind of file it is ("build file", "device-type file", "device-type directory").
        what: &'static str,
        /// The path that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax {
        /// The file's name or path.
        origin: String,
        /// The TOML parser's message (it shows the line and column).
        message: String,
    },

    /// The file has a key this version of baleen does not know.
    #[error("unknown key {key:?} in {origin}: allowed keys are {allowed}")]
    UnknownKey {
        /// The file's name or path.
        origin: String,
        /// The unknown key.
        key: String,
        /// The allowed keys, comma separated.
        allowed: String,
    },

    /// A required key is missing.
    #[error("missing key {key:?} in {origin}: it is required")]
    MissingKey {
        /// The file's name or path.
        origin: String,
        /// The missing key.
        key: &'static str,
    },

    /// A key has a value of the wrong type or out of range.
    #[error("{origin}: {key} = {value}: expected {expected}")]
    InvalidValue {
        /// The file's name or path.
        origin: String,
        /// The key path, e.g. `release` or `extra_packages[2]`.
        key: String,
        /// The value as written in TOML (strings quoted).
        value: String,
        /// What the key accepts.
        expected: String,
    },

    /// The build file asks for the aufs storage driver, which balenaOS no longer supports.
    #[error(
        "{origin}: storage_driver = \"aufs\": aufs was removed (balenaOS's sanity check refuses \
         it too); use storage_driver = \"overlay2\""
    )]
    AufsRemoved {
        /// The file's name or path.
        origin: String,
    },

    /// No device type has the requested slug.
    #[error("unknown device type {slug:?}: known device types are {known}")]
    UnknownDeviceType {
        /// The requested slug.
        slug: String,
        /// The known slugs, comma separated.
        known: String,
    },

    /// A device-type file's `slug` differs from its file name.
    #[error("{origin}: slug = {slug:?} does not match the file name: name the file {slug}.toml")]
    SlugMismatch {
        /// The file's name or path.
        origin: String,
        /// The slug written in the file.
        slug: String,
    },

    /// A device-type directory holds no device-type files.
    #[error("no device-type files (*.toml) in {}", dir.display())]
    NoDeviceTypes {
        /// The directory searched.
        dir: PathBuf,
    },
}
