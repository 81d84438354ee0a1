use super::*;

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// chrony

#[test]
fn render_chrony_conf() {
    assert_eq!(
        chrony_conf(),
        "# baleen: chronyd as balenaOS sets it up. Servers come from /run/baleen/chrony/*.sources:\n\
         # default.sources (the resinio pools), added_config.sources (ntpServers, added to the pools)\n\
         # and added_dhcp_<interface>.sources (NTP servers from DHCP).\n\
         sourcedir /run/baleen/chrony\n\
         driftfile /var/lib/chrony/drift\n\
         maxupdateskew 100\n\
         makestep 1 -1\n\
         logchange 1\n\
         maxdistance 16\n\
         hwtimestamp *\n\
         rtcsync\n\
         acquisitionport 1234\n"
    );
}

#[test]
fn render_chrony_sources_default_pools() {
    assert_eq!(
        chrony_sources(None),
        ChronySources {
            default_sources: Some(
                "pool 0.resinio.pool.ntp.org iburst minpoll 14 maxpoll 14 maxsources 1\n\
                 pool 1.resinio.pool.ntp.org iburst minpoll 14 maxpoll 14 maxsources 1\n\
                 pool 2.resinio.pool.ntp.org iburst minpoll 14 maxpoll 14 maxsources 1\n\
                 pool 3.resinio.pool.ntp.org iburst minpoll 14 maxpoll 14 maxsources 1\n"
                    .into()
            ),
            added_config: None,
        }
    );
}

#[test]
fn render_chrony_sources_configured_are_added_to_the_pools() {
    let servers = list(&["time.example.com", "10.0.2.2\n192.0.2.1"]);
    let sources = chrony_sources(Some(&servers));
    assert_eq!(
        sources.default_sources,
        chrony_sources(None).default_sources
    );
    assert_eq!(
        sources.added_config.as_deref(),
        Some(
            "pool time.example.com iburst minpoll 14 maxpoll 14 maxsources 1\n\
             pool 10.0.2.2 iburst minpoll 14 maxpoll 14 maxsources 1\n\
             pool 192.0.2.1 iburst minpoll 14 maxpoll 14 maxsources 1\n"
        )
    );
}

#[test]
fn render_chrony_sources_none_configured_keeps_the_pools() {
    for none in [list(&[]), list(&[" "])] {
        let sources = chrony_sources(Some(&none));
        assert_eq!(sources.added_config, None);
        assert_eq!(
            sources.default_sources,
            chrony_sources(None).default_sources
        );
    }
}

#[test]
fn render_dhcp_ntp_sources() {
    assert_eq!(
        dhcp_ntp_file_name("eth0").as_deref(),
        Some("added_dhcp_eth0.sources")
    );
    for bad in ["", ".", "..", "../etc", "a b", "averyveryverylong0"] {
        assert_eq!(dhcp_ntp_file_name(bad), None, "{bad:?}");
    }
    assert_eq!(
        dhcp_ntp_sources(&list(&["10.0.2.2", "10.0.2.3"])).as_deref(),
        Some(
            "pool 10.0.2.2 iburst minpoll 14 maxpoll 14 maxsources 1\n\
             pool 10.0.2.3 iburst minpoll 14 maxpoll 14 maxsources 1\n"
        )
    );
    assert_eq!(dhcp_ntp_sources(&[]), None);
}

// DNS

#[test]
fn render_dnsmasq_servers_default() {
    // dnsServers missing or JSON null.
    assert_eq!(dnsmasq_servers(None), "server=8.8.8.8\n");
}

#[test]
fn render_dnsmasq_servers_none() {
    // dnsServers "null" and "" both mean no server from config.json.
    assert_eq!(dnsmasq_servers(Some(&[])), "");
    assert_eq!(dnsmasq_servers(Some(&list(&[""]))), "");
}

#[test]
fn render_dnsmasq_servers_list() {
    assert_eq!(
        dnsmasq_servers(Some(&list(&["1.1.1.1", "9.9.9.9 2001:db8::1"]))),
        "server=1.1.1.1\nserver=9.9.9.9\nserver=2001:db8::1\n"
    );
}

#[test]
fn render_dnsmasq_argv() {
    assert_eq!(
        dnsmasq_argv(false),
        [
            "/usr/sbin/dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--pid-file=/run/dnsmasq.pid",
            "--listen-address=127.0.0.2",
            "--bind-interfaces",
            "--conf-dir=/etc/dnsmasq.d,*.conf",
            "--resolv-file=/run/NetworkManager/resolv.conf",
            "--servers-file=/run/dnsmasq.servers",
        ]
    );
    assert_eq!(
        dnsmasq_argv(true)[4],
        "--listen-address=127.0.0.2,10.114.102.1"
    );
}

#[test]
fn render_resolv_conf() {
    assert_eq!(
        resolv_conf(),
        "# baleen: the host's dnsmasq answers on 127.0.0.2, leaving 127.0.0.1 to\n\
         # containers that run their own resolver.\n\
         nameserver 127.0.0.2\n\
         options timeout:15\n"
    );
}

// NetworkManager

#[test]
fn render_networkmanager_conf() {
    assert_eq!(
        networkmanager_conf(),
        "# baleen: NetworkManager as balenaOS sets it up. config.json settings are in\n\
         # conf.d/os-networkmanager.conf. NetworkManager leaves /etc/resolv.conf alone\n\
         # and keeps the upstream DNS servers in /run/NetworkManager/resolv.conf, which\n\
         # the host's dnsmasq (127.0.0.2) reads.\n\
         [main]\n\
         plugins=keyfile\n\
         dhcp=internal\n\
         dns=default\n\
         rc-manager=unmanaged\n\
         autoconnect-retries-default=0\n\
         hostname-mode=none\n\
         \n\
         [keyfile]\n\
         unmanaged-devices=interface-name:balena*;interface-name:resin*;interface-name:br*;type:veth\n"
    );
}

#[test]
fn connectivity_uri_cases() {
    let api = Some("https://api.balena-cloud.com");
    assert_eq!(
        connectivity_uri(None, api).as_deref(),
        Some("https://api.balena-cloud.com/connectivity-check")
    );
    assert_eq!(
        connectivity_uri(Some(""), Some("https://api.example.com/")).as_deref(),
        Some("https://api.example.com/connectivity-check")
    );
    assert_eq!(
        connectivity_uri(Some("http://10.0.2.2/204"), api).as_deref(),
        Some("http://10.0.2.2/204")
    );
    assert_eq!(connectivity_uri(Some("null"), api), None);
    assert_eq!(connectivity_uri(None, None), None);
    assert_eq!(connectivity_uri(None, Some("")), None);
}

const HEADER: &str = "# Written by baleen from config.json (os.network, apiEndpoint); changes here are overwritten.\n";

#[test]
fn render_fragment_enabled_with_defaults() {
    assert_eq!(
        networkmanager_fragment(
            None,
            Some("https://api.balena-cloud.com/connectivity-check"),
            None,
            None
        ),
        format!(
            "{HEADER}\n\
             [connectivity]\n\
             enabled=true\n\
             uri=https://api.balena-cloud.com/connectivity-check\n\
             interval=3600\n\
             response=\n"
        )
    );
}

#[test]
fn render_fragment_all_keys() {
    assert_eq!(
        networkmanager_fragment(
            Some(false),
            Some("http://10.0.2.2/check"),
            Some(300),
            Some("NetworkManager is online")
        ),
        format!(
            "{HEADER}\n\
             [device]\n\
             wifi.scan-rand-mac-address=no\n\
             \n\
             [connectivity]\n\
             enabled=true\n\
             uri=http://10.0.2.2/check\n\
             interval=300\n\
             response=NetworkManager is online\n"
        )
    );
}

#[test]
fn render_fragment_connectivity_disabled() {
    let disabled = format!("{HEADER}\n[connectivity]\nenabled=false\n");
    // No URI at all (no uri, no apiEndpoint).
    assert_eq!(networkmanager_fragment(None, None, None, None), disabled);
    // uri "null" never becomes `uri=null` (§8 item 15).
    assert_eq!(
        networkmanager_fragment(None, Some("null"), None, None),
        disabled
    );
    assert_eq!(
        networkmanager_fragment(None, Some(""), None, None),
        disabled
    );
    // interval 0.
    assert_eq!(
        networkmanager_fragment(None, Some("http://x/"), Some(0), Some("ok")),
        disabled
    );
    // With the Wi-Fi key.
    assert_eq!(
        networkmanager_fragment(Some(true), None, None, None),
        format!(
            "{HEADER}\n\
             [device]\n\
             wifi.scan-rand-mac-address=yes\n\
             \n\
             [connectivity]\n\
             enabled=false\n"
        )
    );
}

#[test]
fn fragment_values_cannot_add_lines() {
    let text = networkmanager_fragment(
        None,
        Some("http://x/a\\b"),
        None,
        Some(" online\n[main]\ndns=none"),
    );
    assert_eq!(
        text,
        format!(
            "{HEADER}\n\
             [connectivity]\n\
             enabled=true\n\
             uri=http://x/a\\\\b\n\
             interval=3600\n\
             response=\\sonline\\n[main]\\ndns=none\n"
        )
    );
}

// udev

#[test]
fn render_udev_files() {
    assert_eq!(
        udev_readme(),
        "Files here are auto-generated by baleen from config.json os.udevRules. \
         Other .rules files here are removed.\n"
    );
    assert_eq!(udev_rule_file("A"), "A\n");
    assert_eq!(udev_rule_file("A\n\n"), "A\n");
    assert_eq!(udev_rule_file(""), "\n");
}

#[test]
fn udev_plan_first_apply() {
    let wanted = map(&[(
        "64-usb",
        "ACTION==\"add\", SUBSYSTEM==\"tty\", SYMLINK+=\"modem\"",
    )]);
    let plan = udev_plan(&BTreeMap::new(), &wanted);
    assert_eq!(
        plan,
        UdevPlan {
            write: vec![
                (
                    "64-usb.rules".into(),
                    "ACTION==\"add\", SUBSYSTEM==\"tty\", SYMLINK+=\"modem\"\n".into()
                ),
                ("README".into(), udev_readme()),
            ],
            remove: vec![],
            rejected: vec![],
        }
    );
    assert!(plan.needs_reload());
}

#[test]
fn udev_plan_no_change_writes_nothing() {
    let wanted = map(&[("64-usb", "RULE")]);
    let existing = map(&[("64-usb.rules", "RULE\n"), ("README", "anything\n")]);
    let plan = udev_plan(&existing, &wanted);
    assert!(plan.is_empty());
    assert!(!plan.needs_reload());
}

#[test]
fn udev_plan_changes_and_removals_keep_readme() {
    let wanted = map(&[("a", "NEW"), ("../evil", "X"), ("", "Y")]);
    let existing = map(&[
        ("a.rules", "OLD\n"),
        ("b.rules", "B\n"),
        ("README", "Files here are auto-generated…\n"),
        ("notes.txt", "kept\n"),
    ]);
    let plan = udev_plan(&existing, &wanted);
    assert_eq!(plan.write, vec![("a.rules".into(), "NEW\n".into())]);
    assert_eq!(plan.remove, vec!["b.rules".to_string()]);
    assert_eq!(
        plan.rejected,
        vec![
            "os.udevRules.\"\" is empty".to_string(),
            "os.udevRules.\"../evil\" contains '/'".to_string(),
        ]
    );
    // No rules at all: every rule goes, README stays (§8 item 17).
    let plan = udev_plan(&existing, &BTreeMap::new());
    assert_eq!(plan.write, vec![]);
    assert_eq!(
        plan.remove,
        vec!["a.rules".to_string(), "b.rules".to_string()]
    );
    assert!(plan.needs_reload());
    // Only the README missing: written, no reload.
    let plan = udev_plan(&BTreeMap::new(), &BTreeMap::new());
    assert_eq!(plan.write, vec![("README".into(), udev_readme())]);
    assert!(!plan.needs_reload());
}

// CA

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
// base64 of PEM, wrapped as `base64` wraps.
const PEM_B64: &str =
    "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0t\nLQo=";

#[test]
fn render_root_ca() {
    assert_eq!(root_ca(PEM_B64).unwrap(), PEM);
    // Without the final line break nor padding.
    let bare = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUIKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQ";
    assert_eq!(root_ca(bare).unwrap(), PEM);
}

#[test]
fn root_ca_errors() {
    assert_eq!(
        root_ca("abc!").unwrap_err().to_string(),
        "config.json balenaRootCA: '!' at offset 3 is not base64; expected the base64 \
         encoding of a PEM certificate (`base64 -w0 ca.pem`)"
    );
    assert_eq!(root_ca("aGVsbG8=").unwrap_err(), RootCaError::NotPem);
    assert_eq!(root_ca("/w==").unwrap_err(), RootCaError::NotText);
    assert_eq!(
        root_ca("aGVsbG8=aGVsbG8=").unwrap_err(),
        RootCaError::NotBase64 {
            offset: 8,
            found: 'a'
        }
    );
}

#[test]
fn root_ca_changes() {
    assert_eq!(
        root_ca_change(Some(PEM_B64), None),
        Ok(RootCaChange::Write(PEM.into()))
    );
    assert_eq!(
        root_ca_change(Some(PEM_B64), Some(PEM)),
        Ok(RootCaChange::Unchanged)
    );
    assert_eq!(root_ca_change(None, Some(PEM)), Ok(RootCaChange::Remove));
    assert_eq!(
        root_ca_change(Some(" "), Some(PEM)),
        Ok(RootCaChange::Remove)
    );
    assert_eq!(root_ca_change(None, None), Ok(RootCaChange::Unchanged));
    assert_eq!(
        update_ca_certificates_argv(),
        [
            "update-ca-certificates",
            "--fresh",
            "--localcertsdir",
            "/usr/share/ca-certificates/balena"
        ]
    );
}

// Development mode, regulatory domain, hostname

#[test]
fn render_development_env() {
    assert_eq!(
        development_env(true).as_deref(),
        Some(
            "# baleen: development mode (config.json developmentMode). Console logins are\n\
             # allowed while this file exists; the container engine listens on TCP 2375.\n\
             BALENA_DEVELOPMENT_ARGS=\"-H tcp://0.0.0.0:2375\"\n"
        )
    );
    assert_eq!(development_env(false), None);
}

#[test]
fn render_regulatory_domain() {
    assert_eq!(
        regulatory_domain_argv(Some("gb")),
        Some(list(&["iw", "reg", "set", "GB"]))
    );
    assert_eq!(
        regulatory_domain_argv(Some("00")),
        Some(list(&["iw", "reg", "set", "00"]))
    );
    for bad in [None, Some(""), Some("GBR"), Some("G1"), Some("É")] {
        assert_eq!(regulatory_domain_argv(bad), None, "{bad:?}");
    }
}

#[test]
fn render_etc_hostname() {
    assert_eq!(etc_hostname("a1b2c3d"), "a1b2c3d\n");
}

#[test]
fn paths_agree_with_contents() {
    // The relative paths and the absolute ones inside rendered text.
    assert!(chrony_conf().contains(&format!("sourcedir /{CHRONY_SOURCE_DIR}\n")));
    assert!(CHRONY_DEFAULT_SOURCES.starts_with(CHRONY_SOURCE_DIR));
    assert!(CHRONY_CONFIG_SOURCES.starts_with(CHRONY_SOURCE_DIR));
    let argv = dnsmasq_argv(false);
    assert!(argv.contains(&format!("--resolv-file=/{DNS_UPSTREAM}")));
    assert!(argv.contains(&format!("--servers-file=/{DNSMASQ_SERVERS}")));
    assert!(resolv_conf().contains(&format!("nameserver {DNS_LISTEN_ADDRESS}\n")));
    assert!(ROOT_CA.starts_with(ROOT_CA_DIR));
    assert_eq!(update_ca_certificates_argv()[3], format!("/{ROOT_CA_DIR}"));
    assert_eq!(
        Action::UpdateCaCertificates.commands(),
        vec![update_ca_certificates_argv()]
    );
}

// The restart map

#[test]
fn actions_for_keys() {
    assert_eq!(
        actions_for("hostname"),
        &[
            Action::Restart("baleen-identity.service"),
            Action::Restart("avahi-daemon.service"),
            Action::Restart("dnsmasq.service"),
        ]
    );
    // §8 item 16: response is mapped, and NetworkManager is reloaded.
    assert_eq!(
        actions_for("os.network.connectivity.response"),
        &[Action::ReloadNetworkManagerConf]
    );
    assert_eq!(
        actions_for("os.udevRules.64-usb"),
        &[Action::ReloadUdevRules]
    );
    assert_eq!(actions_for("os.udevRulesX"), &[]);
    assert_eq!(actions_for("mixpanelToken"), &[]);
    assert_eq!(
        actions_for("persistentLogging"),
        &[
            Action::Restart("baleen-persistent-logs.service"),
            Action::AtNextBoot
        ]
    );
}

#[test]
fn actions_for_several_changes() {
    assert_eq!(
        actions_for_changes(["os.network", "developmentMode", "os.sshKeys"]),
        vec![
            Action::Restart("baleen-access.service"),
            Action::RestartGettys,
            Action::TryRestart("balena.service"),
            Action::ReloadNetworkManagerConf,
        ]
    );
    assert_eq!(actions_for_changes(["deviceType"]), vec![]);
}

#[test]
fn action_commands() {
    assert_eq!(
        Action::ReloadNetworkManagerConf.commands(),
        vec![vec!["nmcli", "general", "reload", "conf"]]
    );
    assert_eq!(
        Action::ReloadUdevRules.commands(),
        vec![
            vec!["udevadm", "control", "--reload-rules"],
            vec!["systemctl", "restart", "systemd-udev-trigger.service"],
        ]
    );
    assert_eq!(
        Action::ChronyReloadSources.commands(),
        vec![vec!["chronyc", "-n", "reload", "sources"]]
    );
    assert_eq!(
        Action::RestartGettys.commands(),
        vec![
            vec![
                "systemctl",
                "stop",
                "getty@*.service",
                "serial-getty@*.service"
            ],
            vec!["systemctl", "restart", "getty.target"],
        ]
    );
    assert_eq!(
        Action::Restart("dnsmasq.service").commands(),
        vec![vec!["systemctl", "restart", "dnsmasq.service"]]
    );
    assert!(Action::AtNextBoot.commands().is_empty());
    assert!(Action::SetRegulatoryDomain.commands().is_empty());
}
