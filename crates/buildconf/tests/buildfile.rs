//! The build file: defaults, every validation message, derived values.

use buildconf::{
    Arch, BuildConfig, DebianRelease, DeviceType, MetaVersion, RawBuildConfig, StorageDriver,
};

fn parse(text: &str) -> Result<BuildConfig, buildconf::Error> {
    BuildConfig::from_toml_str(text, "build.toml")
}

/// The message of the error `text` gives.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("{text:?} was accepted: {config:?}"),
        Err(e) => e.to_string(),
    }
}

fn names(list: &[buildconf::PackageName]) -> Vec<&str> {
    list.iter().map(|p| p.as_str()).collect()
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.device.slug, "qemux86-64");
    assert_eq!(config.release, DebianRelease::Bookworm);
    assert_eq!(config.meta_version.to_string(), "0.1.0");
    assert_eq!(config.board_revision, 0);
    assert!(!config.development);
    assert_eq!(names(&config.network_manager_packages), ["network-manager"]);
    assert_eq!(config.storage_driver, StorageDriver::Overlay2);
    assert!(config.extra_packages.is_empty());
    assert_eq!(config.mirror.as_str(), "http://deb.debian.org/debian");
    assert_eq!(config.hostos_version(), "0.1.0");
    assert_eq!(config.variant(), "Production");
    assert_eq!(config.variant_id(), "prod");
}

#[test]
fn default_for_matches_an_empty_file() {
    let device = DeviceType::find("qemux86-64").unwrap();
    assert_eq!(BuildConfig::default_for(device), parse("").unwrap());
    let generic = DeviceType::find("genericx86-64-ext").unwrap();
    assert_eq!(
        BuildConfig::default_for(generic).device.slug,
        "genericx86-64-ext"
    );
}

#[test]
fn every_key_set() {
    let config = parse(
        r#"
device = "genericx86-64-ext"
release = "trixie"
meta_version = "2.0.0-beta1"
board_revision = 4
development = true
network_manager_packages = ["network-manager", "modemmanager"]
storage_driver = "overlay2"
extra_packages = ["vim-tiny", "libstdc++6"]
mirror = "https://mirror.example.org/debian/"
"#,
    )
    .unwrap();
    assert_eq!(config.device.slug, "genericx86-64-ext");
    assert_eq!(config.device.arch, Arch::Amd64);
    assert_eq!(config.release, DebianRelease::Trixie);
    assert_eq!(
        config.meta_version,
        MetaVersion {
            major: 2,
            minor: 0,
            patch: 0,
            beta: Some(1)
        }
    );
    assert_eq!(config.board_revision, 4);
    assert!(config.development);
    assert_eq!(
        names(&config.network_manager_packages),
        ["network-manager", "modemmanager"]
    );
    assert_eq!(names(&config.extra_packages), ["vim-tiny", "libstdc++6"]);
    assert_eq!(config.mirror.as_str(), "https://mirror.example.org/debian/");
    assert_eq!(config.hostos_version(), "2.0.0-beta1+rev4");
    assert_eq!(config.variant(), "Development");
    assert_eq!(config.variant_id(), "dev");
}

#[test]
fn hostos_version_examples() {
    let version = |meta: &str, rev: u32| {
        let text = format!("meta_version = \"{meta}\"\nboard_revision = {rev}\n");
        parse(&text).unwrap().hostos_version()
    };
    assert_eq!(version("0.1.0", 0), "0.1.0");
    assert_eq!(version("0.1.0", 3), "0.1.0+rev3");
    assert_eq!(version("1.0.0-beta2", 1), "1.0.0-beta2+rev1");
    assert_eq!(version("1.0.0-beta2", 0), "1.0.0-beta2");
    assert_eq!(version("12.34.56", 78), "12.34.56+rev78");
}

#[test]
fn unknown_key() {
    assert_eq!(
        error("device = \"qemux86-64\"\nfoo = 1\n"),
        "unknown key \"foo\" in build.toml: allowed keys are device, release, meta_version, \
         board_revision, development, network_manager_packages, storage_driver, extra_packages, \
         mirror"
    );
    // A Yocto-style spelling is an unknown key too, and so is a table.
    assert!(
        error("OS_DEVELOPMENT = \"1\"")
            .starts_with("unknown key \"OS_DEVELOPMENT\" in build.toml: ")
    );
    assert!(
        error("[device]\nslug = \"x\"")
            .starts_with("build.toml: device = { slug = \"x\" }: expected")
    );
}

#[test]
fn aufs_is_refused() {
    assert_eq!(
        error("storage_driver = \"aufs\""),
        "build.toml: storage_driver = \"aufs\": aufs was removed (balenaOS's sanity check refuses \
         it too); use storage_driver = \"overlay2\""
    );
    assert_eq!(
        error("storage_driver = \"devicemapper\""),
        "build.toml: storage_driver = \"devicemapper\": expected \"overlay2\" (the only storage \
         driver balenaOS supports)"
    );
}

#[test]
fn bad_release() {
    assert_eq!(
        error("release = \"buster\""),
        "build.toml: release = \"buster\": expected one of bookworm, trixie"
    );
    assert_eq!(
        error("release = \"Bookworm\""),
        "build.toml: release = \"Bookworm\": expected one of bookworm, trixie"
    );
    assert_eq!(
        error("release = 12"),
        "build.toml: release = 12: expected one of bookworm, trixie"
    );
}

#[test]
fn bad_meta_versions() {
    let cases = [
        ("1.2", "found 2 dot-separated part(s) instead of 3"),
        ("v1.0.0", "the major number \"v1\" is not a decimal number"),
        ("1.0.0+rev1", "it has no +revN: set board_revision instead"),
        ("1.0.0-rc1", "unknown label \"rc1\", only betaN is allowed"),
        ("1.0.0-beta", "the beta number is empty"),
        ("01.0.0", "the major number \"01\" has a leading zero"),
        ("", "it is empty"),
        ("1.0.0 ", "it contains whitespace"),
    ];
    for (bad, problem) in cases {
        assert_eq!(
            error(&format!("meta_version = \"{bad}\"")),
            format!(
                "build.toml: meta_version = \"{bad}\": expected a version X.Y.Z or X.Y.Z-betaN \
                 ({problem})"
            )
        );
    }
    assert_eq!(
        error("meta_version = 1.0"),
        "build.toml: meta_version = 1.0: expected a version X.Y.Z or X.Y.Z-betaN"
    );
}

#[test]
fn bad_board_revision() {
    let expected = "expected a non-negative integer (N of X.Y.Z+revN)";
    assert_eq!(
        error("board_revision = -1"),
        format!("build.toml: board_revision = -1: {expected}")
    );
    assert_eq!(
        error("board_revision = \"3\""),
        format!("build.toml: board_revision = \"3\": {expected}")
    );
    assert_eq!(
        error("board_revision = 1.5"),
        format!("build.toml: board_revision = 1.5: {expected}")
    );
    assert_eq!(
        error("board_revision = 4294967296"),
        format!("build.toml: board_revision = 4294967296: {expected}")
    );
    assert_eq!(
        parse("board_revision = 4294967295").unwrap().board_revision,
        u32::MAX
    );
}

#[test]
fn bad_package_names() {
    let expected = "expected a Debian package name ([a-z0-9][a-z0-9+.-]+)";
    assert_eq!(
        error("extra_packages = [\"vim\", \"foo bar\"]"),
        format!("build.toml: extra_packages[1] = \"foo bar\": {expected}")
    );
    assert_eq!(
        error("extra_packages = [\"curl;rm -rf /\"]"),
        format!("build.toml: extra_packages[0] = \"curl;rm -rf /\": {expected}")
    );
    assert_eq!(
        error("extra_packages = [\"$(reboot)\"]"),
        format!("build.toml: extra_packages[0] = \"$(reboot)\": {expected}")
    );
    assert_eq!(
        error("network_manager_packages = [\"NetworkManager\"]"),
        format!("build.toml: network_manager_packages[0] = \"NetworkManager\": {expected}")
    );
    assert_eq!(
        error("network_manager_packages = [\"x\"]"),
        format!("build.toml: network_manager_packages[0] = \"x\": {expected}")
    );
    assert_eq!(
        error("extra_packages = \"vim\""),
        "build.toml: extra_packages = \"vim\": expected an array of Debian package names"
    );
    assert_eq!(
        error("extra_packages = [\"vim\", 3]"),
        "build.toml: extra_packages = [\"vim\", 3]: expected an array of Debian package names"
    );
    // An empty network-manager list is allowed (NETWORK_MANAGER_PACKAGES = "").
    assert!(
        parse("network_manager_packages = []")
            .unwrap()
            .network_manager_packages
            .is_empty()
    );
}

#[test]
fn bad_development_flag() {
    assert_eq!(
        error("development = \"1\""),
        "build.toml: development = \"1\": expected true or false"
    );
}

#[test]
fn bad_mirror() {
    let expected = "expected an http:// or https:// URL without whitespace";
    for bad in [
        "ftp://deb.debian.org/debian",
        "deb.debian.org",
        "http://deb.debian.org/de bian",
        "https://",
    ] {
        assert_eq!(
            error(&format!("mirror = \"{bad}\"")),
            format!("build.toml: mirror = \"{bad}\": {expected}")
        );
    }
    assert_eq!(
        error("mirror = \"http://x/\\ndeb\""),
        format!("build.toml: mirror = \"http://x/\\ndeb\": {expected}")
    );
}

#[test]
fn unknown_device() {
    assert_eq!(
        error("device = \"raspberrypi4-64\""),
        "build.toml: device = \"raspberrypi4-64\": expected one of the known device types \
         genericx86-64-ext, qemux86-64"
    );
}

#[test]
fn toml_syntax_errors_give_line_and_column() {
    assert_eq!(
        error("release = \"trixie\"\ndevice = qemux86-64\n"),
        "build.toml: invalid TOML: line 2, column 10: invalid string; expected `\"`, `'`"
    );
    assert_eq!(
        error("device = \"a\"\ndevice = \"b\"\n"),
        "build.toml: invalid TOML: line 2, column 1: duplicate key `device` in document root"
    );
    assert_eq!(
        error("device = "),
        "build.toml: invalid TOML: line 1, column 10: unexpected end of file"
    );
}

#[test]
fn kernel_cmdline_follows_the_variant() {
    assert_eq!(
        parse("").unwrap().kernel_cmdline(),
        "console=ttyS0,115200n8 panic=10 quiet"
    );
    assert_eq!(
        parse("development = true").unwrap().kernel_cmdline(),
        "console=ttyS0,115200n8 panic=10"
    );
}

#[test]
fn debian_packages_in_order_without_duplicates() {
    let config = parse(
        "network_manager_packages = [\"network-manager\"]\n\
         extra_packages = [\"vim-tiny\", \"network-manager\", \"linux-image-amd64\", \"vim-tiny\"]\n",
    )
    .unwrap();
    assert_eq!(
        names(&config.debian_packages()),
        ["linux-image-amd64", "network-manager", "vim-tiny"]
    );
}

#[test]
fn raw_config_can_be_overridden_and_validated_against_other_device_types() {
    let mut raw = RawBuildConfig::from_toml_str("development = true", "build.toml").unwrap();
    raw.device = Some("genericx86-64-ext".to_owned());
    let only_generic = vec![DeviceType::find("genericx86-64-ext").unwrap()];
    assert_eq!(
        raw.clone().validate(&only_generic).unwrap().device.slug,
        "genericx86-64-ext"
    );

    raw.device = None;
    assert_eq!(
        raw.validate(&only_generic).unwrap_err().to_string(),
        "build.toml: device = \"qemux86-64\": expected one of the known device types \
         genericx86-64-ext"
    );
}

#[test]
fn load_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("build.toml");
    std::fs::write(&path, "release = \"trixie\"\ndevelopment = true\n").unwrap();
    let config = BuildConfig::load(&path).unwrap();
    assert_eq!(config.release, DebianRelease::Trixie);

    std::fs::write(&path, "release = \"sid\"\n").unwrap();
    assert_eq!(
        BuildConfig::load(&path).unwrap_err().to_string(),
        format!(
            "{}: release = \"sid\": expected one of bookworm, trixie",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let e = BuildConfig::load(&missing).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("reading build file {}", missing.display())
    );
    let source = std::error::Error::source(&e).unwrap();
    assert!(source.to_string().contains("No such file"), "{source}");
}
