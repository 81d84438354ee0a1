//! `baleen build` refusals: bad build files, a bad output directory, missing
//! host tools. Each must fail before any long work and leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use systests::{DEVICE, Outcome, baleen_bin, run, workspace_root};

use crate::readers::scratch;

struct BuildAttempt {
    outcome: Outcome,
    out: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

/// `baleen build --config <build.toml> --out <out>`, with a scratch cache
/// directory so a failure can never touch the shared root filesystem cache.
/// `out` is relative to the scratch directory, which `prepare` can fill first.
fn build_attempt(
    build_toml: &str,
    out: &str,
    path_env: Option<&str>,
    prepare: impl FnOnce(&Path),
) -> BuildAttempt {
    let dir = scratch();
    prepare(dir.path());
    let config = dir.path().join("build.toml");
    std::fs::write(&config, build_toml).expect("writing build.toml");
    let out = dir.path().join(out);
    let mut cmd = Command::new(baleen_bin());
    cmd.arg("build")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"));
    if let Some(path) = path_env {
        cmd.env("PATH", path);
    }
    BuildAttempt {
        outcome: run(&mut cmd),
        out,
        config,
        _dir: dir,
    }
}

impl BuildAttempt {
    fn assert_refused(&self, expected: &[&str]) {
        let out = &self.outcome;
        assert_eq!(
            out.code,
            Some(1),
            "baleen build must fail with exit code 1: {out}"
        );
        for text in expected {
            assert!(
                out.stderr.contains(text),
                "stderr should contain {text:?}: {out}"
            );
        }
        self.assert_nothing_left();
    }

    /// No image, no partial image, no manifest, no work directory.
    fn assert_nothing_left(&self) {
        for name in [
            format!("{DEVICE}.img"),
            format!(".{DEVICE}.img.partial"),
            format!("{DEVICE}.manifest.json"),
        ] {
            let path = self.out.join(&name);
            assert!(
                !path.exists(),
                "a failed build left {}: {}",
                path.display(),
                self.outcome
            );
        }
        if self.out.is_dir() {
            let left: Vec<_> = std::fs::read_dir(&self.out)
                .expect("listing the output directory")
                .map(|e| e.expect("directory entry").file_name())
                .collect();
            assert!(
                left.is_empty(),
                "a failed build left {left:?} in {}",
                self.out.display()
            );
        }
    }

    /// The build stopped before its first step (`[   0.0 s] root filesystem: …`).
    fn assert_no_step_started(&self) {
        let started: Vec<&str> = self
            .outcome
            .stderr
            .lines()
            .filter(|l| l.starts_with('[') && l.contains(" s] "))
            .collect();
        assert!(
            started.is_empty(),
            "the build should fail before any long work, but ran {started:?}: {}",
            self.outcome
        );
    }
}

fn assert_build_file_refused(build_toml: &str, expected: &[&str]) {
    let attempt = build_attempt(build_toml, "out", None, |_| {});
    let config = attempt.config.display().to_string();
    let mut expected = expected.to_vec();
    expected.push(&config);
    attempt.assert_refused(&expected);
    attempt.assert_no_step_started();
}

#[test]
fn build_refuses_unknown_key() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nfrobnicate = 1\n",
        &["unknown key \"frobnicate\"", "allowed keys"],
    );
}

#[test]
fn build_refuses_aufs() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nstorage_driver = \"aufs\"\n",
        &["aufs was removed", "overlay2"],
    );
}

#[test]
fn build_refuses_unknown_release() {
    assert_build_file_refused(
        "device = \"qemux86-64\"\nrelease = \"buster\"\n",
        &["release", "\"buster\"", "bookworm", "trixie"],
    );
}

#[test]
fn build_refuses_unknown_device() {
    assert_build_file_refused(
        "device = \"nosuch\"\n",
        &["\"nosuch\"", "known device types", DEVICE],
    );
}

fn dev_build_file() -> String {
    let path = workspace_root().join("tests/build-dev.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn build_refuses_an_output_directory_under_a_file() {
    const CONTENT: &[u8] = b"a regular file\n";
    let attempt = build_attempt(&dev_build_file(), "afile/out", None, |dir| {
        std::fs::write(dir.join("afile"), CONTENT).expect("writing afile");
    });
    let out = attempt.out.display().to_string();
    attempt.assert_refused(&[&out]);
    attempt.assert_no_step_started();
    let afile = attempt.out.parent().expect("out has a parent");
    assert_eq!(
        std::fs::read(afile).expect("afile is still a file"),
        CONTENT,
        "the failed build changed {}",
        afile.display()
    );
}

#[test]
fn build_names_the_debian_package_of_a_missing_tool() {
    let attempt = build_attempt(&dev_build_file(), "out", Some("/nonexistent-dir"), |_| {});
    attempt.assert_refused(&[" not found: install the Debian package "]);
    let hint = "install the Debian package";
    assert_eq!(
        attempt.outcome.stderr.matches(hint).count(),
        1,
        "the error chain should give the hint once: {}",
        attempt.outcome
    );
}

/// `baleen build` with the shared root filesystem cache (a hit: only read),
/// for refusals that happen after the root filesystem is unpacked.
fn build_with_shared_cache(out: &Path, extra: &[&str]) -> BuildAttempt {
    let dir = scratch();
    let config = dir.path().join("build.toml");
    std::fs::write(&config, dev_build_file()).expect("writing build.toml");
    let mut cmd = Command::new(baleen_bin());
    cmd.arg("build")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(out)
        .args(extra);
    BuildAttempt {
        outcome: run(&mut cmd),
        out: out.to_owned(),
        config,
        _dir: dir,
    }
}

#[test]
fn build_refuses_a_root_partition_too_small_for_the_root_filesystem() {
    let dir = scratch();
    let devices = dir.path().join("devices");
    std::fs::create_dir_all(&devices).unwrap();
    let original =
        std::fs::read_to_string(workspace_root().join("devices/qemux86-64.toml")).unwrap();
    assert!(
        original.contains("root_size_mib = 640"),
        "devices/qemux86-64.toml changed its root size"
    );
    let small = original.replace("root_size_mib = 640", "root_size_mib = 100");
    std::fs::write(devices.join("qemux86-64.toml"), small).unwrap();
    let out = dir.path().join("out");
    let attempt = build_with_shared_cache(&out, &["--devices-dir", &devices.to_string_lossy()]);
    attempt.assert_refused(&["resin-rootA is 100 MiB", "raise root_size_mib"]);
}

/// A tmpfs mounted for one test, unmounted however the test ends.
struct SmallMount(PathBuf);

impl Drop for SmallMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn build_on_a_full_disk_fails_cleanly() {
    let dir = scratch();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=300m",
            "baleen-test-full",
            &out.to_string_lossy(),
        ])
        .status()
        .expect("running mount");
    assert!(
        mounted.success(),
        "mounting a 300 MiB tmpfs for the test (needs root)"
    );
    let _mount = SmallMount(out.clone());
    let attempt = build_with_shared_cache(&out, &[]);
    attempt.assert_refused(&["No space left on device"]);
}
