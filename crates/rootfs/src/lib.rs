//! The root filesystem of a baleen image: Debian packages installed by
//! mmdebstrap (cached by the hash of everything that shapes it), then baleen's
//! own binaries, units and files written into the staging tree. Every function
//! takes the root directory as an argument.

pub mod bootstrap;
pub mod customize;
pub mod daemons;
pub mod fingerprint;
pub mod modules;
pub mod osrelease;
pub mod timeunits;
pub mod units;
pub mod updateunits;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mmdebstrap failed for {release} (log: {log})")]
    Bootstrap {
        release: String,
        log: PathBuf,
        source: subprocess::Error,
    },
    #[error(
        "omit_modules: {tree} is not in the modules of kernel {kernel} ({}): fix the path in the \
         device type or remove it from the list",
        dir.display()
    )]
    MissingModuleTree {
        tree: String,
        kernel: String,
        dir: PathBuf,
    },
    #[error(transparent)]
    Tool(#[from] subprocess::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn write(path: &std::path::Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| Error::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    std::fs::write(path, data).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

/// The regular files under `dir` (not following symbolic links), sorted.
pub(crate) fn regular_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let read_error = |path: PathBuf| move |source| Error::Read { path, source };
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(read_error(dir.clone()))? {
            let entry = entry.map_err(read_error(dir.clone()))?;
            let kind = entry.file_type().map_err(read_error(entry.path()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}
