//! `baleen config inject` and `baleen config show` on copies of the dev image.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use systests::{Outcome, baleen, copy_image, run, test_image};

use crate::readers::{assert_same_bytes, boot_files, md5_hex, partition, scratch};

/// Copies the boot partition out of `image` and runs `fsck.fat -n` on it.
fn assert_boot_fs_clean(image: &Path, dir: &Path) {
    let part = partition(image, "resin-boot");
    let mut disk = diskimage::Disk::open(image).unwrap_or_else(|e| panic!("{e}"));
    let copy = dir.join("resin-boot.vfat");
    let mut out = File::create(&copy).expect("creating the partition copy");
    std::io::copy(&mut disk.partition(&part), &mut out).expect("copying resin-boot out");
    out.flush().expect("writing the partition copy");
    drop(out);
    let check = run(Command::new("fsck.fat").arg("-n").arg(&copy));
    assert!(
        check.success(),
        "fsck.fat -n finds errors in resin-boot of {}: {check}",
        image.display()
    );
    std::fs::remove_file(copy).expect("removing the partition copy");
}

/// config.json as an independent FAT reader (mtools) sees it.
fn mtools_config(image: &Path) -> Vec<u8> {
    let part = partition(image, "resin-boot");
    let out = run(Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(format!("{}@@{}", image.display(), part.offset_bytes))
        .arg("::config.json")
        .arg("-"));
    assert!(out.success(), "mcopy config.json: {out}");
    out.stdout
}

fn inject(image: &Path, config: &Path) -> Outcome {
    baleen([
        OsStr::new("config"),
        OsStr::new("inject"),
        image.as_os_str(),
        config.as_os_str(),
    ])
}

fn show(image: &Path) -> Outcome {
    baleen([
        OsStr::new("config"),
        OsStr::new("show"),
        OsStr::new("--image"),
        image.as_os_str(),
    ])
}

/// Injects `content` and checks every reader gets exactly those bytes back.
fn inject_and_read_back(image: &Path, dir: &Path, name: &str, content: &[u8]) {
    let config = dir.join(name);
    std::fs::write(&config, content).expect("writing the config file");
    let out = inject(image, &config);
    assert!(out.success(), "baleen config inject {name}: {out}");
    let shown = show(image);
    assert!(shown.success(), "baleen config show: {shown}");
    assert!(
        shown.stdout == content,
        "baleen config show after injecting {name}: expected\n{}\ngot\n{}",
        String::from_utf8_lossy(content),
        shown.stdout_text()
    );
    assert!(
        diskimage::read_config(image).expect("diskimage::read_config") == content,
        "diskimage::read_config after injecting {name}"
    );
    assert!(
        mtools_config(image) == content,
        "mtools reads another config.json after injecting {name}"
    );
}

#[test]
fn config_inject_round_trips_bytes() {
    let dir = scratch();
    let original = test_image("dev");
    let image = copy_image(&original, dir.path());
    // Unknown keys, nested values, non-ASCII text and odd spacing without a
    // trailing newline: the file is stored byte for byte, not re-serialized.
    let config = "{ \"deviceType\":\"qemux86-64\",\n\t\"persistentLogging\" : true,\n  \
                  \"hostname\": \"tëst-dévice\", \"frobnicateLater\": {\"nested\": [1, 2.50, \
                  {\"deep\": null}], \"ok\": false}}";
    inject_and_read_back(&image, dir.path(), "new-config.json", config.as_bytes());

    let before = boot_files(&original);
    let after = boot_files(&image);
    let others = |files: &BTreeMap<String, Vec<u8>>| -> Vec<(String, String)> {
        files
            .iter()
            .filter(|(p, _)| *p != "config.json")
            .map(|(p, d)| (p.clone(), md5_hex(d)))
            .collect()
    };
    assert_eq!(
        others(&after),
        others(&before),
        "injecting config.json changed other boot files"
    );
    assert_boot_fs_clean(&image, dir.path());
}

#[test]
fn config_inject_grows_and_shrinks_config_json() {
    let dir = scratch();
    let image = copy_image(&test_image("dev"), dir.path());
    // Bigger than several FAT clusters, then back to a few bytes: the old
    // tail must not survive.
    let keys: serde_json::Map<String, serde_json::Value> = (0..3000)
        .map(|i| (format!("key{i:04}"), json!(format!("value number {i}"))))
        .collect();
    let big = serde_json::to_vec_pretty(&serde_json::Value::Object(keys)).expect("serializes");
    assert!(
        big.len() > 64 * 1024,
        "the big config is {} bytes",
        big.len()
    );
    inject_and_read_back(&image, dir.path(), "big.json", &big);
    inject_and_read_back(&image, dir.path(), "small.json", b"{}");
    assert_boot_fs_clean(&image, dir.path());
}

/// Runs an inject that must be refused on a copy of the dev image; checks
/// the exit code and that the copy still equals the original byte for byte.
fn assert_inject_refused(config: &Path, dir: &Path) -> Outcome {
    let original = test_image("dev");
    let image = copy_image(&original, dir);
    let out = inject(&image, config);
    assert_eq!(
        out.code,
        Some(1),
        "baleen config inject {} must fail with exit code 1: {out}",
        config.display()
    );
    assert_same_bytes(
        &image,
        &original,
        &format!("a refused inject of {} changed the image", config.display()),
    );
    out
}

#[test]
fn config_inject_refuses_invalid_json() {
    let dir = scratch();
    let config = dir.path().join("truncated.json");
    std::fs::write(&config, b"{\"a\":").expect("writing the config file");
    let out = assert_inject_refused(&config, dir.path());
    assert!(
        out.stderr.contains("config.json")
            && out.stderr.contains("not valid JSON")
            && out.stderr.contains("line 1 column 5"),
        "the error should say config.json is not valid JSON and where: {out}"
    );
}

#[test]
fn config_inject_refuses_json_that_is_not_an_object() {
    let dir = scratch();
    for (name, content, found) in [
        (
            "array.json",
            "[{\"deviceType\": \"qemux86-64\"}]",
            "an array",
        ),
        ("null.json", "null", "null"),
    ] {
        let config = dir.path().join(name);
        std::fs::write(&config, content).expect("writing the config file");
        let out = assert_inject_refused(&config, dir.path());
        assert!(
            out.stderr.contains("config.json")
                && out.stderr.contains("must be a JSON object")
                && out.stderr.contains(found),
            "the error should say config.json must be an object, not {found}: {out}"
        );
    }
}

#[test]
fn config_inject_names_a_missing_config_file() {
    let dir = scratch();
    let config = dir.path().join("no-such-config.json");
    let out = assert_inject_refused(&config, dir.path());
    assert!(
        out.stderr.contains(&config.display().to_string()),
        "the error should name {}: {out}",
        config.display()
    );
}
