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

#[test]
fn dns_servers_render_default_none_and_list_and_reload_dnsmasq() {
    let cases = [
        (json!({}), "server=8.8.8.8\n"),
        (json!({"dnsServers": "null"}), ""),
        (
            json!({"dnsServers": "1.1.1.1 9.9.9.9"}),
            "server=1.1.1.1\nserver=9.9.9.9\n",
        ),
    ];
    for (value, want) in cases {
        let dir = root_with(&value);
        let plan = network::plan_dns(dir.path(), &config_of(&value));
        assert_eq!(
            plan.files,
            vec![FileOp::Write {
                path: dir.path().join("run/dnsmasq.servers"),
                content: want.to_string(),
                mode: 0o644
            }],
            "{value}"
        );
        assert_eq!(
            plan.steps[0].argv,
            [
                "systemctl",
                "--no-block",
                "try-reload-or-restart",
                "dnsmasq.service"
            ]
        );
        apply_files(dir.path(), &config_of(&value));
        assert!(network::plan_dns(dir.path(), &config_of(&value)).is_empty());
    }
}

#[test]
fn ntp_servers_are_added_to_the_pools_and_removed_again() {
    let value = json!({"ntpServers": "10.0.0.5"});
    let dir = root_with(&value);
    let plan = network::plan_ntp(dir.path(), &config_of(&value));
    assert_eq!(plan.files.len(), 2, "{plan:?}");
    assert_eq!(plan.steps[0].argv, ["chronyc", "-n", "reload", "sources"]);
    apply_files(dir.path(), &config_of(&value));
    let added =
        std::fs::read_to_string(dir.path().join("run/baleen/chrony/added_config.sources")).unwrap();
    assert_eq!(
        added,
        "pool 10.0.0.5 iburst minpoll 14 maxpoll 14 maxsources 1\n"
    );
    let plan = network::plan_ntp(dir.path(), &config_of(&json!({})));
    assert_eq!(
        plan.files,
        vec![FileOp::Remove {
            path: dir.path().join("run/baleen/chrony/added_config.sources")
        }]
    );
}

#[test]
fn country_needs_the_wifi_stack_and_removal_goes_back_to_the_world_domain() {
    let value = json!({"country": "DE"});
    let dir = root_with(&value);
    let plan = network::plan_country(dir.path(), &config_of(&value));
    assert!(plan.steps.is_empty());
    assert!(plan.notes[0].contains("no Wi-Fi support"), "{plan:?}");
    std::fs::create_dir_all(dir.path().join("sys/module/cfg80211")).unwrap();
    let plan = network::plan_country(dir.path(), &config_of(&value));
    assert_eq!(plan.steps[0].argv, ["iw", "reg", "set", "DE"]);
    for op in &plan.records {
        op.apply().unwrap();
    }
    assert!(network::plan_country(dir.path(), &config_of(&value)).is_empty());
    let plan = network::plan_country(dir.path(), &config_of(&json!({})));
    assert_eq!(plan.steps[0].argv, ["iw", "reg", "set", "00"]);
    for op in &plan.records {
        op.apply().unwrap();
    }
    // Back at the world domain: nothing more to do, with the key absent or "00".
    assert!(network::plan_country(dir.path(), &config_of(&json!({}))).is_empty());
    assert!(network::plan_country(dir.path(), &config_of(&json!({"country": "00"}))).is_empty());
}

#[test]
fn fan_and_power_without_a_backend_are_not_supported_notes() {
    let value = json!({"os": {"fan": {"profile": "quiet"}}});
    let dir = root_with(&value);
    std::fs::write(dir.path().join("etc/os-release"), "SLUG=\"qemux86-64\"\n").unwrap();
    let plan = hardware::plan_backend(dir.path(), "os.fan.profile", "fan-profile", Some("quiet"));
    assert!(plan.is_empty());
    assert_eq!(
        plan.notes,
        ["os.fan.profile \"quiet\": not supported on qemux86-64"]
    );
    assert!(hardware::plan_backend(dir.path(), "os.power.mode", "power-mode", None).is_empty());
    let backend = dir.path().join(hardware::BACKENDS_DIR).join("fan-profile");
    std::fs::create_dir_all(backend.parent().unwrap()).unwrap();
    std::fs::write(&backend, "#!/bin/sh\n").unwrap();
    let plan = hardware::plan_backend(dir.path(), "os.fan.profile", "fan-profile", Some("quiet"));
    assert_eq!(
        plan.steps[0].argv,
        ["/usr/lib/baleen/backends/fan-profile", "quiet"]
    );
    assert_eq!(plan.records.len(), 1);
}

#[test]
fn extra_firmware_volume_sets_and_clears_the_kernel_path() {
    let value = json!({"os": {"kernel": {"extraFirmwareVol": "extra-firmware"}}});
    let dir = root_with(&value);
    let param = dir.path().join("sys/module/firmware_class/parameters/path");
    std::fs::create_dir_all(param.parent().unwrap()).unwrap();
    std::fs::write(&param, "\n").unwrap();
    let plan = hardware::plan_firmware(dir.path(), &config_of(&value));
    assert!(
        plan.is_empty() && plan.notes[0].contains("no volume directory"),
        "{plan:?}"
    );
    let volume = "var/lib/docker/volumes/extra-firmware/_data";
    std::fs::create_dir_all(dir.path().join(volume)).unwrap();
    let plan = hardware::plan_firmware(dir.path(), &config_of(&value));
    assert_eq!(
        plan.files,
        vec![FileOp::WriteInPlace {
            path: param.clone(),
            content: format!("/{volume}")
        }]
    );
    std::fs::write(&param, format!("/{volume}\n")).unwrap();
    assert!(hardware::plan_firmware(dir.path(), &config_of(&value)).is_empty());
    let plan = hardware::plan_firmware(dir.path(), &config_of(&json!({})));
    assert_eq!(
        plan.files,
        vec![FileOp::WriteInPlace {
            path: param,
            content: "\0".into()
        }]
    );
}

#[test]
fn reloads_run_only_while_their_daemon_runs() {
    let dir = tempfile::tempdir().unwrap();
    let plan = Plan {
        steps: vec![Step::reload("chronyd", &["true"]), Step::new(&["true"])],
        ..Plan::default()
    };
    let commands = |plan: &Plan| {
        let mut done = Done::default();
        execute(dir.path(), plan, &mut done).unwrap();
        done.commands
    };
    // No /proc at all, then a /proc without the daemon: only the plain step runs.
    assert_eq!(commands(&plan), 1);
    let other = dir.path().join("proc/17");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("comm"), "dnsmasq\n").unwrap();
    std::fs::create_dir_all(dir.path().join("proc/self")).unwrap();
    std::fs::write(dir.path().join("proc/self/comm"), "chronyd\n").unwrap();
    assert_eq!(commands(&plan), 1, "only numeric entries count");
    let daemon = dir.path().join("proc/42");
    std::fs::create_dir_all(&daemon).unwrap();
    std::fs::write(daemon.join("comm"), "chronyd\n").unwrap();
    assert_eq!(commands(&plan), 2);
}

#[test]
fn a_plan_that_fails_part_way_counts_only_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let written = dir.path().join("written");
    let plan = Plan {
        files: vec![FileOp::WriteInPlace {
            path: written.clone(),
            content: "x".into(),
        }],
        steps: vec![
            Step::lenient(&["false"]),
            Step::new(&["false"]),
            Step::new(&["true"]),
        ],
        records: vec![FileOp::WriteInPlace {
            path: dir.path().join("record"),
            content: "y".into(),
        }],
        ..Plan::default()
    };
    let mut done = Done::default();
    assert!(execute(dir.path(), &plan, &mut done).is_err());
    // The file, the lenient failure and the failing command; not the last command nor the
    // record.
    assert_eq!(
        done,
        Done {
            writes: 1,
            commands: 2
        }
    );
    assert!(written.exists());
    assert!(!dir.path().join("record").exists());
}

#[test]
fn daemon_reloads_name_their_daemon() {
    let value = json!({"ntpServers": "10.0.0.5", "dnsServers": "10.0.0.1"});
    let dir = root_with(&value);
    let ntp = network::plan_ntp(dir.path(), &config_of(&value));
    assert_eq!(ntp.steps[0].daemon, Some("chronyd"));
    let dns = network::plan_dns(dir.path(), &config_of(&value));
    assert_eq!(dns.steps[0].daemon, Some("dnsmasq"));
}
