//! Shared-library closure of the programs copied into the initramfs
//! (e2fsck and friends), read from the ELF headers of the target's files.

use crate::{Error, Result};
use goblin::elf::Elf;
use std::collections::BTreeSet;
use std::path::Path;

/// What an ELF file needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// `PT_INTERP`, e.g. `/lib64/ld-linux-x86-64.so.2`; `None` for static binaries.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` library names.
    pub libraries: Vec<String>,
}

pub fn needs(path: &Path, bytes: &[u8]) -> Result<Needs> {
    let elf = Elf::parse(bytes).map_err(|e| Error::BadElf {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Needs {
        interpreter: elf.interpreter.map(str::to_string),
        libraries: elf.libraries.iter().map(|s| s.to_string()).collect(),
    })
}

/// Directories (relative to the root) searched for libraries, as the target's
/// dynamic loader would without an ld.so.cache.
pub fn library_dirs(root: &Path) -> Vec<String> {
    let mut dirs = Vec::new();
    for base in ["usr/lib", "lib"] {
        if let Ok(entries) = std::fs::read_dir(root.join(base)) {
            let mut multiarch: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("-linux-gnu"))
                .map(|n| format!("{base}/{n}"))
                .collect();
            multiarch.sort();
            dirs.extend(multiarch);
        }
    }
    dirs.extend(["usr/lib64", "lib64", "usr/lib", "lib"].map(String::from));
    dirs
}

/// Files (absolute paths as seen on the target) that `programs` need: the
/// programs themselves, their interpreter and every library, transitively.
pub fn closure(root: &Path, programs: &[&str]) -> Result<BTreeSet<String>> {
    let dirs = library_dirs(root);
    let mut files = BTreeSet::new();
    let mut pending: Vec<(String, String)> = programs
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
    while let Some((wanted_by, file)) = pending.pop() {
        if !files.insert(file.clone()) {
            continue;
        }
        let real = bootstage::resolve_in_root(root, file.trim_start_matches('/'))?;
        let bytes = std::fs::read(&real).map_err(|source| Error::Read {
            path: real.clone(),
            source,
        })?;
        let needs = needs(&real, &bytes)?;
        if let Some(interp) = needs.interpreter {
            pending.push((file.clone(), interp));
        }
        for lib in needs.libraries {
            let found = dirs
                .iter()
                .map(|d| format!("/{d}/{lib}"))
                .find(|p| bootstage::resolve_in_root(root, p.trim_start_matches('/')).is_ok())
                .ok_or_else(|| Error::MissingLibrary {
                    what: wanted_by.clone(),
                    library: lib.clone(),
                })?;
            pending.push((file.clone(), found));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries_have_a_library_closure() {
        // The build host is a Debian system: its own root is a valid target root.
        let files = closure(Path::new("/"), &["/usr/bin/true"]).unwrap();
        assert!(files.contains("/usr/bin/true"));
        assert!(files.iter().any(|f| f.contains("libc.so.6")), "{files:?}");
        assert!(files.iter().any(|f| f.contains("ld-linux")), "{files:?}");
    }

    #[test]
    fn non_elf_is_refused_with_the_path() {
        let err = needs(Path::new("/x/script"), b"#!/bin/sh\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/x/script is not an ELF file this build understands"),
            "{err}"
        );
    }
}
