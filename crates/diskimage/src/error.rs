//! The crate's one error type.
//!
//! Messages name the operation and the object, lower-case
//! (`reading GPT from disk.img: no GPT header found`). I/O failures keep the
//! `io::Error` as their `source` and do not repeat it in the message, so a
//! binary that prints the error chain shows each cause once.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while writing or reading a disk image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed; `action` says what was being done to what.
    #[error("{action}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    /// No usable GPT was found, or the one found is inconsistent.
    #[error("reading GPT from {}: {reason}", path.display())]
    InvalidGpt { path: PathBuf, reason: String },

    /// A partition table could not be written as asked.
    #[error("writing GPT to {}: {reason}", path.display())]
    GptWrite { path: PathBuf, reason: String },

    /// The last partition could not be grown.
    #[error("growing {label} on {}: {reason}", path.display())]
    Grow {
        path: PathBuf,
        label: String,
        reason: String,
    },

    /// A partition with this label is not in the partition table.
    #[error("partition {label} not found in {}", path.display())]
    PartitionNotFound { path: PathBuf, label: String },

    /// A partition image does not fit into its partition.
    #[error(
        "writing {} into partition {label} of {}: the image is {size} bytes but the partition holds only {capacity}",
        source_path.display(),
        path.display()
    )]
    DoesNotFit {
        source_path: PathBuf,
        path: PathBuf,
        label: String,
        size: u64,
        capacity: u64,
    },

    /// The bytes given as `config.json` do not parse as JSON.
    #[error("config.json for {} is not valid JSON: {error}", path.display())]
    InvalidJson {
        path: PathBuf,
        error: serde_json::Error,
    },

    /// `config.json` parsed but is not a JSON object.
    #[error("config.json for {} must be a JSON object, not {found}", path.display())]
    ConfigNotObject { path: PathBuf, found: &'static str },

    /// A FAT filesystem operation was refused or the filesystem is unusable.
    #[error("{action}: {reason}")]
    Fat { action: String, reason: String },

    /// The bytes where an ext4 superblock should be are not one. `of` is
    /// empty or names the filesystem with a leading space (` of resin-rootA in disk.img`).
    #[error("reading ext4 superblock{of}: {reason}")]
    Ext4 { of: String, reason: String },
}

/// Attach an action description to an `io::Result`, lazily.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, action: F) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, action: F) -> Result<T> {
        self.map_err(|source| Error::Io {
            action: action(),
            source,
        })
    }
}
