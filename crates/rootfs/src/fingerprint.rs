//! `balenaos.fingerprint`: an md5 manifest of every regular file, in the
//! format `md5sum -c` checks (`<md5>  <path>`), sorted by path.

use crate::{Error, Result};
use md5::{Digest, Md5};
use std::io::Read;
use std::path::Path;

/// Files never fingerprinted in a root: they differ per device by design.
pub const ROOT_EXCLUDES: [&str; 4] = [
    "etc/hostname",
    "etc/machine-id",
    ".rnd",
    "balenaos.fingerprint",
];

/// Fingerprint lines for the regular files under `dir`, with paths written as
/// `prefix` + relative path (`/` for a root, `` for the boot partition),
/// leaving out the relative paths in `exclude`.
pub fn manifest(dir: &Path, prefix: &str, exclude: &[&str]) -> Result<String> {
    let mut files: Vec<String> = crate::regular_files(dir)?
        .iter()
        .map(|path| {
            path.strip_prefix(dir)
                .expect("walk stays under dir")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.retain(|rel| !is_excluded(rel, exclude));
    files.sort();
    let mut out = String::new();
    for rel in files {
        let path = dir.join(&rel);
        out.push_str(&format!("{}  {prefix}{rel}\n", md5_file(&path)?));
    }
    Ok(out)
}

fn md5_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Whether `rel` is named in `exclude`, or lies under an entry ending in `/`.
pub fn is_excluded(rel: &str, exclude: &[&str]) -> bool {
    exclude
        .iter()
        .any(|e| *e == rel || (e.ends_with('/') && rel.starts_with(e)))
}

/// Writes `/balenaos.fingerprint` into a root, leaving out [`ROOT_EXCLUDES`]
/// and `extra_excludes` (paths hidden at run time, e.g. `var/log/`).
pub fn write_root(root: &Path, extra_excludes: &[String]) -> Result<()> {
    let mut exclude: Vec<&str> = ROOT_EXCLUDES.to_vec();
    exclude.extend(extra_excludes.iter().map(String::as_str));
    let text = manifest(root, "/", &exclude)?;
    crate::write(&root.join("balenaos.fingerprint"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_md5sum_format_sorted_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("etc")).unwrap();
        std::fs::write(d.join("etc/b"), b"hello\n").unwrap();
        std::fs::write(d.join("a"), b"").unwrap();
        std::fs::write(d.join("etc/machine-id"), b"x").unwrap();
        std::os::unix::fs::symlink("a", d.join("link")).unwrap();
        assert_eq!(
            manifest(d, "/", &ROOT_EXCLUDES).unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e  /a\nb1946ac92492d2347c6235b4d2611184  /etc/b\n"
        );
    }

    #[test]
    fn directory_excludes_cover_their_content() {
        assert!(is_excluded("var/log/apt/history.log", &["var/log/"]));
        assert!(!is_excluded("var/logs", &["var/log/"]));
        assert!(is_excluded("etc/hostname", &ROOT_EXCLUDES));
    }
}
