//! The boot stage's initramfs and the unified kernel image (UKI) that carries
//! it: `\EFI\BOOT\BOOTX64.EFI` = systemd's EFI stub + kernel + initramfs +
//! command line, joined with objcopy (Debian bookworm has no ukify).
//!
//! Everything placed in the initramfs comes from the target root filesystem
//! (modules, e2fsprogs, busybox), so it matches the kernel and architecture.

pub mod archive;
pub mod elf;
pub mod modules;
pub mod uki;

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
    #[error(
        "kernel module {name} not found in {modules_dep} (is it spelled right, and built for kernel {kernel}?)"
    )]
    UnknownModule {
        name: String,
        modules_dep: PathBuf,
        kernel: String,
    },
    #[error("no kernel found in {0}: expected exactly one /usr/lib/modules/<version> directory")]
    NoKernel(PathBuf),
    #[error("several kernels in {root}: {versions}; baleen boots exactly one")]
    SeveralKernels { root: PathBuf, versions: String },
    #[error("{path} is not an ELF file this build understands: {reason}")]
    BadElf { path: PathBuf, reason: String },
    #[error("{what} needs {library}, which is not in the root filesystem")]
    MissingLibrary { what: String, library: String },
    #[error(
        "{path} must be statically linked (it runs as PID 1 before any library exists); build it with scripts/build.sh"
    )]
    NotStatic { path: PathBuf },
    #[error(
        "architecture {0} has no UEFI stub: unified kernel images are made for amd64, arm64 and i386"
    )]
    NoEfiStub(String),
    #[error("{0}")]
    Resolve(#[from] bootstage::ResolveError),
    #[error(transparent)]
    Tool(#[from] subprocess::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
