//! Image tests: the images scripts/test.sh built, read without mounting
//! anything (diskimage for the GPT and the FAT boot partition, debugfs for
//! ext4), and the refusals of `baleen config inject` and `baleen build`.
//!
//! Expected values come from the inputs (devices/qemux86-64.toml,
//! tests/build-<variant>.toml), never from the image under test. The shared
//! test images are only read; every test that writes works on a sparse copy.
//!
//! The modules live in tests/image/ (named with `#[path]`: this file is the
//! crate root, and Cargo would take a tests/image/main.rs for a second target).

#[path = "image/boot_partition.rs"]
mod boot_partition;
#[path = "image/build_cli.rs"]
mod build_cli;
#[path = "image/config_cli.rs"]
mod config_cli;
#[path = "image/inputs.rs"]
mod inputs;
#[path = "image/partitions.rs"]
mod partitions;
#[path = "image/readers.rs"]
mod readers;
#[path = "image/root_filesystem.rs"]
mod root_filesystem;

use std::process::Command;

use systests::{DEVICE, manifest, run, test_image};

use inputs::{build_file, toml_str};

#[test]
fn manifest_matches_the_dev_image() {
    let image = test_image("dev");
    let m = manifest("dev");
    let build = build_file("dev");
    assert_eq!(m["apiVersion"], 1, "{m}");
    assert_eq!(m["device"], DEVICE, "{m}");
    assert_eq!(m["variant"], "Development", "{m}");
    assert_eq!(m["debianRelease"], toml_str(&build, "release"), "{m}");
    assert_eq!(m["metaVersion"], toml_str(&build, "meta_version"), "{m}");
    assert_eq!(m["image"]["file"], format!("{DEVICE}.img"), "{m}");
    let sum = run(Command::new("sha256sum").arg(&image));
    assert!(sum.success(), "sha256sum: {sum}");
    let text = sum.stdout_text();
    let sha256 = text.split_whitespace().next().unwrap_or_default();
    assert_eq!(
        m["image"]["sha256"].as_str(),
        Some(sha256),
        "manifest sha256 vs sha256sum of {}",
        image.display()
    );
}
