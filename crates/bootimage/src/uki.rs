//! The unified kernel image: systemd's EFI stub with `.osrel`, `.cmdline`,
//! `.linux` and `.initrd` sections added by objcopy, each placed after the
//! stub's own sections at a page-aligned address.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use subprocess::Cmd;

/// Where systemd's EFI stub for a Debian architecture lives, inside the target
/// root (package systemd-boot-efi) or on the build host.
pub fn stub_path(debian_arch: &str) -> Option<&'static str> {
    match debian_arch {
        "amd64" => Some("usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
        "arm64" => Some("usr/lib/systemd/boot/efi/linuxaa64.efi.stub"),
        "i386" => Some("usr/lib/systemd/boot/efi/linuxia32.efi.stub"),
        _ => None,
    }
}

/// Parts of a unified kernel image.
pub struct Parts<'a> {
    pub stub: &'a Path,
    pub os_release: &'a Path,
    pub cmdline: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
}

/// The stub from the target root if it ships one, else the build host's.
pub fn find_stub(root: &Path, debian_arch: &str) -> Result<PathBuf> {
    let stub = stub_path(debian_arch).ok_or_else(|| Error::NoEfiStub(debian_arch.to_string()))?;
    if let Ok(p) = bootstage::resolve_in_root(root, stub) {
        return Ok(p);
    }
    let host = Path::new("/").join(stub);
    if host.exists() {
        return Ok(host);
    }
    Err(Error::Tool(subprocess::Error::NotFound {
        program: host.display().to_string(),
        package: "systemd-boot-efi".into(),
    }))
}

const PAGE: u64 = 4096;

fn align(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// The first free virtual address after the stub's sections (image base included).
pub fn stub_end(stub: &Path) -> Result<u64> {
    let bytes = std::fs::read(stub).map_err(|source| Error::Read {
        path: stub.to_owned(),
        source,
    })?;
    let pe = goblin::pe::PE::parse(&bytes).map_err(|e| Error::BadElf {
        path: stub.to_owned(),
        reason: e.to_string(),
    })?;
    let end = pe
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.size_of_raw_data)))
        .max()
        .unwrap_or(0);
    Ok(pe.image_base + align(end))
}

/// objcopy arguments that add each part at the next aligned address after `start`.
pub fn section_args(start: u64, parts: &[(&str, &Path, u64)]) -> Vec<String> {
    let mut vma = start;
    let mut args = Vec::new();
    for (name, path, size) in parts {
        args.push("--add-section".into());
        args.push(format!("{name}={}", path.display()));
        args.push("--change-section-vma".into());
        args.push(format!("{name}={vma:#x}"));
        vma = align(vma + size);
    }
    args
}

/// Joins the parts into `out` with objcopy.
pub fn build(parts: &Parts, out: &Path) -> Result<()> {
    let size = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.len())
            .map_err(|source| Error::Read {
                path: p.to_owned(),
                source,
            })
    };
    let sections = [
        (".osrel", parts.os_release, size(parts.os_release)?),
        (".cmdline", parts.cmdline, size(parts.cmdline)?),
        (".linux", parts.kernel, size(parts.kernel)?),
        (".initrd", parts.initrd, size(parts.initrd)?),
    ];
    Cmd::new("objcopy")
        .package("binutils")
        .args(section_args(stub_end(parts.stub)?, &sections))
        .arg(parts.stub)
        .arg(out)
        .run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_page_aligned_and_do_not_overlap() {
        let p = Path::new("/x");
        let args = section_args(
            0x20000,
            &[(".osrel", p, 300), (".cmdline", p, 4097), (".linux", p, 10)],
        );
        assert_eq!(
            args,
            vec![
                "--add-section",
                ".osrel=/x",
                "--change-section-vma",
                ".osrel=0x20000",
                "--add-section",
                ".cmdline=/x",
                "--change-section-vma",
                ".cmdline=0x21000",
                "--add-section",
                ".linux=/x",
                "--change-section-vma",
                ".linux=0x23000",
            ]
        );
    }

    #[test]
    fn host_stub_end_is_past_its_sections() {
        let stub = Path::new("/").join(stub_path("amd64").unwrap());
        if !stub.exists() {
            return; // systemd-boot-efi is installed by scripts/install-deps.sh; the image suite covers it.
        }
        let end = stub_end(&stub).unwrap();
        assert_eq!(end % PAGE, 0);
        assert!(end > 0x10000, "{end:#x}");
    }
}
