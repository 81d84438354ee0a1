//! Shared fixtures for the image and VM suites.
//!
//! Both suites test what `scripts/test.sh` builds, found through two
//! environment variables it exports:
//!
//! * `BALEEN_BIN`: the static `baleen` binary (`scripts/build.sh`), with
//!   `baleen-boot` beside it;
//! * `BALEEN_TEST_IMAGES`: a directory holding one build output per variant
//!   ([`VARIANTS`]), each with `qemux86-64.img` and `qemux86-64.manifest.json`;
//!   `next/` also holds the update bundle `qemux86-64.bundle`.
//!
//! Without them every fixture panics with a message saying how to get them:
//! these suites never pass by testing nothing.

pub mod bundles;
pub mod lan;
mod logwait;
pub mod timeservers;

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The device type the test images are built for.
pub const DEVICE: &str = "qemux86-64";

/// The image variants `scripts/test.sh` builds: `tests/build-dev.toml`,
/// `tests/build-prod.toml`, `tests/build-trixie.toml`, and `tests/build-dev-next.toml`
/// (the dev image one release later, with its update bundle: the update tests' target).
pub const VARIANTS: [&str; 4] = ["dev", "prod", "trixie", "next"];

const HOW_TO_RUN: &str = "the image and VM suites test the binaries and images that \
     scripts/test.sh builds: run scripts/test.sh as root, or build them the way it does and \
     export BALEEN_BIN and BALEEN_TEST_IMAGES";

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(value) if !value.is_empty() => {
            let path = PathBuf::from(value);
            assert!(
                path.is_absolute(),
                "{name}={} must be an absolute path (tests run in their crate's directory): \
                 {HOW_TO_RUN}",
                path.display()
            );
            path
        }
        _ => panic!("{name} is not set: {HOW_TO_RUN}"),
    }
}

/// The `baleen` binary under test (`$BALEEN_BIN`).
pub fn baleen_bin() -> PathBuf {
    let bin = env_path("BALEEN_BIN");
    assert!(
        bin.is_file(),
        "BALEEN_BIN={} is not a file: {HOW_TO_RUN}",
        bin.display()
    );
    bin
}

/// The build output directory of `variant` (one of [`VARIANTS`]).
pub fn variant_dir(variant: &str) -> PathBuf {
    assert!(
        VARIANTS.contains(&variant),
        "unknown image variant {variant:?}: the test images are {VARIANTS:?}"
    );
    env_path("BALEEN_TEST_IMAGES").join(variant)
}

/// The test image of `variant`: `$BALEEN_TEST_IMAGES/<variant>/qemux86-64.img`.
///
/// Shared by every test: read it, or boot it through an overlay, but change
/// only a [`copy_image`].
pub fn test_image(variant: &str) -> PathBuf {
    let image = variant_dir(variant).join(format!("{DEVICE}.img"));
    assert!(
        image.is_file(),
        "test image {} not found: {HOW_TO_RUN}",
        image.display()
    );
    image
}

/// The update bundle made from `variant`'s test image:
/// `$BALEEN_TEST_IMAGES/<variant>/qemux86-64.bundle` (`scripts/test.sh` makes `next`'s).
pub fn bundle_path(variant: &str) -> PathBuf {
    let bundle = variant_dir(variant).join(format!("{DEVICE}.bundle"));
    assert!(
        bundle.is_file(),
        "update bundle {} not found: {HOW_TO_RUN}",
        bundle.display()
    );
    bundle
}

/// Path of the build manifest written beside the test image of `variant`.
pub fn manifest_path(variant: &str) -> PathBuf {
    variant_dir(variant).join(format!("{DEVICE}.manifest.json"))
}

/// The build manifest of `variant`'s test image, parsed.
pub fn manifest(variant: &str) -> serde_json::Value {
    let path = manifest_path(variant);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "reading build manifest {}: {e}: {HOW_TO_RUN}",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("build manifest {} is not JSON: {e}", path.display()))
}

/// Copies `src` into `dst_dir` (created if needed) under the same file name,
/// keeping it sparse (`cp --sparse=always`): a multi-GiB image copies in a
/// fraction of a second and takes only its data's room.
pub fn copy_image(src: &Path, dst_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dst_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", dst_dir.display()));
    let name = src
        .file_name()
        .unwrap_or_else(|| panic!("image path {} has no file name", src.display()));
    let dst = dst_dir.join(name);
    let out = run(Command::new("cp").arg("--sparse=always").arg(src).arg(&dst));
    assert!(
        out.success(),
        "cp --sparse=always {} {}: {out}",
        src.display(),
        dst.display()
    );
    dst
}

/// The workspace's root directory (device type files, build files, scripts).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/systests sits two levels below the workspace root")
        .to_path_buf()
}

/// What a finished command did. Its `Display` (exit status, stdout, stderr)
/// is meant for assertion messages.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Outcome {
    /// Whether the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "exit code {code}")?,
            None => write!(f, "killed by a signal")?,
        }
        write!(
            f,
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout_text(),
            self.stderr
        )
    }
}

/// Runs `cmd` to completion, capturing its output; panics only when it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Outcome {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd.get_program()));
    Outcome {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the `baleen` under test with `args`.
pub fn baleen<I, S>(args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new(baleen_bin()).args(args))
}

/// A scratch folder for one test, under the VM log root; removed when the
/// test passes (kept for a look when it fails).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = vmharness::log_root().join(format!("scratch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A sparse copy of a test image, for tests that change it before boot.
    pub fn copy_of(&self, variant: &str) -> PathBuf {
        copy_image(&test_image(variant), &self.0)
    }

    /// A copy of `variant` with `config` as its config.json (`baleen config inject`).
    pub fn image_with_config(&self, variant: &str, config: &serde_json::Value) -> PathBuf {
        let image = self.copy_of(variant);
        let path = self.0.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let out = baleen([
            "config".as_ref(),
            "inject".as_ref(),
            image.as_os_str(),
            path.as_os_str(),
        ]);
        assert!(out.success(), "{out}");
        image
    }
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Fails the test unless it runs as root, saying what needs it.
pub fn require_root(needs: &str) {
    assert!(is_root(), "the system suite runs as root ({needs})");
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Scratch {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A guest shell condition: the JSON that `command` prints satisfies the jq `filter` (its last
/// output is neither `false` nor `null`).
///
/// Through `jq -en 'input | …'`, so that a command printing nothing (it failed, or ran before
/// its files existed) fails the condition: Debian 12's jq 1.6 exits 0 from a bare `jq -e` on
/// empty input.
pub fn json_holds(command: &str, filter: &str) -> String {
    format!(
        "{command} | jq -en {} >/dev/null",
        vmharness::shell_quote(&format!("input | {filter}"))
    )
}

/// The filesystem UUID of the guest's block device `dev` (`blkid`).
pub fn blkid_uuid(vm: &vmharness::Vm, dev: &str) -> String {
    vm.run_ok(&format!("blkid -s UUID -o value {dev}"))
        .unwrap()
        .trim()
        .to_string()
}

/// The `root=UUID=` of the guest's kernel command line: the UUID the kernel was told to mount
/// as root.
pub fn cmdline_root_uuid(vm: &vmharness::Vm) -> String {
    let cmdline = vm.run_ok("cat /proc/cmdline").unwrap();
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root=UUID="))
        .unwrap_or_else(|| panic!("no root=UUID= in /proc/cmdline: {cmdline}"))
        .to_string()
}
