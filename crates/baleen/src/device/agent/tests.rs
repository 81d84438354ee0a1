use super::*;
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

fn root_with(config: &serde_json::Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in [
        "mnt/boot",
        "run/baleen",
        "etc/udev/rules.d",
        "etc/NetworkManager/conf.d",
        "root/.ssh",
        "proc/sys/kernel",
        "usr/share/ca-certificates/balena",
        "etc/ssl/certs",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("etc/hostname"), "balena\n").unwrap();
    std::fs::write(r.join("proc/sys/kernel/hostname"), "balena\n").unwrap();
    std::fs::write(
        r.join("mnt/boot/config.json"),
        serde_json::to_vec_pretty(config).unwrap(),
    )
    .unwrap();
    dir
}

fn config_of(value: &serde_json::Value) -> Config {
    let raw = Raw::parse("config.json", value.to_string().as_bytes()).unwrap();
    model::validate(&raw).config
}

/// Applies only the file changes of every plan (no commands).
fn apply_files(root: &Path, config: &Config) -> usize {
    let mut n = 0;
    for (_, plan) in plan_all(root, config) {
        for op in plan.unwrap().files {
            op.apply().unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn a_second_apply_of_the_same_config_writes_nothing_and_runs_nothing() {
    let value = json!({
        "uuid": "0123456789abcdef0123456789abcdef",
        "hostname": "dev1",
        "developmentMode": true,
        "os": {
            "sshKeys": [KEY],
            "udevRules": {"56-test": "ACTION==\"add\", SYMLINK+=\"x\""},
            "network": {"connectivity": {"uri": "http://10.0.2.2/check", "interval": "60"}}
        }
    });
    let dir = root_with(&value);
    let config = config_of(&value);
    assert!(apply_files(dir.path(), &config) > 0);
    for (name, plan) in plan_all(dir.path(), &config) {
        let plan = plan.unwrap();
        assert!(plan.is_empty(), "{name} still wants {plan:?}");
    }
}

#[test]
fn hostname_plan_writes_both_names_and_restarts_avahi() {
    let value = json!({"hostname": "dev1"});
    let dir = root_with(&value);
    let plan = plan_hostname(dir.path(), &config_of(&value)).unwrap();
    assert_eq!(plan.files.len(), 2);
    assert_eq!(
        plan.steps,
        vec![Step::lenient(&[
            "systemctl",
            "try-restart",
            "avahi-daemon.service"
        ])]
    );
}

#[test]
fn udev_rules_follow_the_config_and_removed_keys_remove_files() {
    let value = json!({"os": {"udevRules": {"56-a": "X", "57-b": "Y"}}});
    let dir = root_with(&value);
    apply_files(dir.path(), &config_of(&value));
    let rules = dir.path().join("etc/udev/rules.d");
    assert_eq!(
        std::fs::read_to_string(rules.join("56-a.rules")).unwrap(),
        "X\n"
    );
    let smaller = json!({"os": {"udevRules": {"57-b": "Y"}}});
    let plan = plan_udev(dir.path(), &config_of(&smaller)).unwrap();
    assert_eq!(
        plan.files,
        vec![FileOp::Remove {
            path: rules.join("56-a.rules")
        }]
    );
    assert_eq!(plan.steps[0].argv, ["udevadm", "control", "--reload-rules"]);
}

#[test]
fn development_mode_change_restarts_gettys_and_keys_only_change_does_not() {
    let dev = json!({"developmentMode": true});
    let dir = root_with(&dev);
    let plan = plan_access(dir.path(), &config_of(&dev)).unwrap();
    assert!(
        plan.steps
            .iter()
            .any(|s| s.argv.contains(&"getty.target".to_string()))
    );
    apply_files(dir.path(), &config_of(&dev));
    let with_key = json!({"developmentMode": true, "os": {"sshKeys": [KEY]}});
    let plan = plan_access(dir.path(), &config_of(&with_key)).unwrap();
    assert!(plan.steps.is_empty(), "{plan:?}");
    assert!(!plan.files.is_empty());
}

#[test]
fn invalid_json_changes_nothing_and_reports_the_position() {
    let dir = root_with(&json!({}));
    std::fs::write(dir.path().join("mnt/boot/config.json"), "{\"hostname\": ").unwrap();
    let report = reconcile(dir.path(), false);
    let err = report.last_error.unwrap();
    assert!(err.contains("config.json:1:"), "{err}");
    assert!(err.contains("nothing changed"), "{err}");
    assert!(report.subsystems.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(),
        "balena\n"
    );
}

#[test]
fn one_invalid_key_is_reported_and_the_others_apply() {
    let value = json!({"hostname": "bad name", "uuid": "0123456789abcdef0123456789abcdef",
                       "os": {"udevRules": {"56-a": "X"}}});
    let dir = root_with(&value);
    let report = reconcile(dir.path(), true);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("hostname = \"bad name\""),
        "{:?}",
        report.errors
    );
    let planned: Vec<&str> = report
        .subsystems
        .iter()
        .filter(|s| s.result == "planned")
        .map(|s| s.subsystem.as_str())
        .collect();
    assert!(
        planned.contains(&"hostname") && planned.contains(&"udev"),
        "{planned:?}"
    );
    // A dry run writes nothing.
    assert!(!dir.path().join("etc/udev/rules.d/56-a.rules").exists());
}

#[test]
fn a_root_ca_joins_the_image_bundle_and_removal_restores_it() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let b64 = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    let value = json!({ "balenaRootCA": b64 });
    let dir = root_with(&value);
    let r = dir.path();
    std::fs::create_dir_all(r.join("mnt/sysroot/active/etc/ssl/certs")).unwrap();
    std::fs::write(r.join(PRISTINE_BUNDLE), "IMAGE CAS\n").unwrap();
    std::fs::write(r.join(BUNDLE), "IMAGE CAS\n").unwrap();
    let config = config_of(&value);
    assert_eq!(config.balena_root_ca.as_deref(), Some(pem));
    let plan = plan_ca(r, &config).unwrap();
    assert_eq!(plan.files.len(), 3, "{plan:?}");
    assert_eq!(plan.steps.len(), 1, "the hash link");
    apply_files(r, &config);
    assert_eq!(
        std::fs::read_to_string(r.join(BUNDLE)).unwrap(),
        format!("IMAGE CAS\n{pem}")
    );
    assert!(plan_ca(r, &config).unwrap().is_empty());
    let plan = plan_ca(r, &config_of(&json!({}))).unwrap();
    apply_files(r, &config_of(&json!({})));
    assert_eq!(
        std::fs::read_to_string(r.join(BUNDLE)).unwrap(),
        "IMAGE CAS\n"
    );
    assert!(!r.join(CA_IN_STORE).exists());
    assert_eq!(plan.steps[0].argv[0], "find");
}
