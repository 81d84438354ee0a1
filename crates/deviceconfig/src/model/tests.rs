use super::*;
use serde_json::json;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";
const UUID: &str = "0123456789abcdef0123456789abcdef";

fn raw(value: Value) -> Raw {
    match value {
        Value::Object(map) => Raw(map),
        other => panic!("not an object: {other}"),
    }
}

fn check(value: Value) -> Validated {
    validate(&raw(value))
}

/// The error messages of validating `value`.
fn errors(value: Value) -> Vec<String> {
    check(value)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn encode_base64(data: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let mut n = [0u8; 3];
        n[..chunk.len()].copy_from_slice(chunk);
        let acc = u32::from_be_bytes([0, n[0], n[1], n[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((acc >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// --- Raw ----------------------------------------------------------------

const TEXT: &str = r#"{
  "zeta": {
    "custom": [
      1,
      "two",
      null
    ]
  },
  "uuid": "0123456789abcdef0123456789abcdef",
  "os": {
    "network": {
      "wifi": {
        "randomMacAddressScan": false
      }
    },
    "vendorThing": 12345678901234567890
  },
  "alpha": true
}
"#;

#[test]
fn round_trip_keeps_unknown_keys_text_and_order() {
    let parsed = Raw::parse("config.json", TEXT.as_bytes()).unwrap();
    assert_eq!(parsed.to_text(), TEXT);
    let again = Raw::parse("config.json", parsed.to_text().as_bytes()).unwrap();
    assert_eq!(again, parsed);
    assert_eq!(
        parsed.as_map().keys().collect::<Vec<_>>(),
        ["zeta", "uuid", "os", "alpha"]
    );
}

#[test]
fn get_set_and_unset_by_dotted_path() {
    let mut r = Raw::parse("config.json", TEXT.as_bytes()).unwrap();
    assert_eq!(
        r.get("os.network.wifi.randomMacAddressScan"),
        Some(&json!(false))
    );
    assert_eq!(r.get("os.network.missing"), None);
    assert_eq!(r.get("zeta.custom.0"), None, "paths do not enter arrays");
    assert_eq!(r.get("os..network"), None);
    assert_eq!(r.get(""), None);

    // An existing key keeps its place; new ones go last, with their parents.
    r.set("uuid", json!("ffffffffffffffffffffffffffffffff"))
        .unwrap();
    r.set("os.network.connectivity.interval", json!("0"))
        .unwrap();
    r.set("installer.migrate.force", json!(true)).unwrap();
    assert_eq!(
        r.as_map().keys().collect::<Vec<_>>(),
        ["zeta", "uuid", "os", "alpha", "installer"]
    );
    assert_eq!(
        r.get("os")
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["network", "vendorThing"]
    );
    assert_eq!(r.get("os.network.connectivity.interval"), Some(&json!("0")));
    assert_eq!(
        r.get("installer"),
        Some(&json!({"migrate": {"force": true}}))
    );

    // Unset removes the leaf only and keeps the order of the rest.
    assert_eq!(
        r.unset("uuid"),
        Some(json!("ffffffffffffffffffffffffffffffff"))
    );
    assert_eq!(r.unset("installer.migrate.force"), Some(json!(true)));
    assert_eq!(r.unset("installer.migrate.force"), None);
    assert_eq!(r.unset("alpha.beta"), None);
    assert_eq!(
        r.as_map().keys().collect::<Vec<_>>(),
        ["zeta", "os", "alpha", "installer"]
    );
    assert_eq!(r.get("installer"), Some(&json!({"migrate": {}})));
    assert_eq!(r.get("zeta"), Some(&json!({"custom": [1, "two", null]})));
    assert_eq!(
        r.get("os.vendorThing"),
        Some(&json!(12345678901234567890u64))
    );
}

#[test]
fn set_refuses_to_go_through_a_value_that_is_not_an_object() {
    let mut r = raw(json!({"os": {"network": "wired"}, "hostname": null}));
    let e = r
        .set("os.network.wifi.randomMacAddressScan", json!(true))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot set os.network.wifi.randomMacAddressScan: os.network is a string, not an object (unset os.network first)"
    );
    let e = r.set("os..x", json!(1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"os..x\" is not a key path: write keys separated by single dots, such as os.network.wifi.randomMacAddressScan"
    );
    // A null parent is replaced.
    r.set("hostname.x", json!(1)).unwrap();
    assert_eq!(r.get("hostname"), Some(&json!({"x": 1})));
}

#[test]
fn parse_errors_name_the_file_and_the_position() {
    let e = Raw::parse("/mnt/boot/config.json", b"{\n  \"a\": 1,\n}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "/mnt/boot/config.json:3:1: not valid JSON: trailing comma"
    );
    let e = Raw::parse("c.json", b"").unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.json:1:0: not valid JSON: EOF while parsing a value"
    );
    let e = Raw::parse("c.json", b"[1]").unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.json: must hold a JSON object, found an array"
    );
}

// --- defaults -----------------------------------------------------------

#[test]
fn the_default_is_an_empty_file() {
    let v = validate(&Raw::default());
    assert_eq!(v.config, Config::default());
    assert!(v.errors.is_empty() && v.warnings.is_empty());
    let c = Config::default();
    assert_eq!(c.dns_servers.addresses(), vec![DEFAULT_DNS]);
    assert_eq!(c.connectivity.interval, Some(3600));
    assert_eq!(c.connectivity.uri, None);
    assert!(!c.connectivity.is_enabled());
    assert!(!c.development_mode && !c.persistent_logging);
    assert_eq!(c.hostname(), None);
}

#[test]
fn a_full_valid_config() {
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    let v = check(json!({
        "apiEndpoint": "https://api.balena-cloud.com",
        "apiKey": "pr0v1s10n",
        "deviceApiKey": "abcdef0123456789abcdef0123456789",
        "deviceApiKeys": {"api.balena-cloud.com": "abcdef0123456789abcdef0123456789"},
        "uuid": UUID,
        "applicationId": 1234567,
        "deviceType": "raspberrypi4-64",
        "deviceId": "42",
        "registered_at": 1700000000000u64,
        "hostname": "my-device",
        "persistentLogging": "true",
        "country": "DE",
        "dnsServers": "1.1.1.1  2606:4700:4700::1111",
        "ntpServers": "time.example.com 192.168.1.1",
        "balenaRootCA": encode_base64(pem.as_bytes()),
        "developmentMode": true,
        "listenPort": 48484,
        "mixpanelToken": "tok",
        "deltaEndpoint": "https://delta.balena-cloud.com",
        "os": {
            "network": {
                "connectivity": {"uri": "http://example.com/check", "interval": "600", "response": "ok"},
                "wifi": {"randomMacAddressScan": true}
            },
            "udevRules": {"64-usb": "ACTION==\"add\"\nSUBSYSTEM==\"usb\"\n"},
            "sshKeys": [format!("  {KEY}  ")],
            "fan": {"profile": "quiet"},
            "power": {"mode": "low"},
            "kernel": {"extraFirmwareVol": "extra-firmware"}
        },
        "installer": {
            "secureboot": true,
            "migrate": {"force": true},
            "target_devices": "mmcblk0 nvme*",
            "whitelist_pcr2": true
        },
        "debug": "1",
        "appUpdatePollInterval": 900000,
        "vpnPort": 443
    }));
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let c = v.config;
    assert_eq!(
        c.api_endpoint.as_deref(),
        Some("https://api.balena-cloud.com")
    );
    assert_eq!(c.api_key.as_deref(), Some("pr0v1s10n"));
    assert_eq!(c.device_api_keys.len(), 1);
    assert_eq!(c.application_id, Some(1234567));
    assert_eq!(c.device_id, Some(42));
    assert_eq!(c.registered_at.as_deref(), Some("1700000000000"));
    assert_eq!(c.hostname(), Some("my-device"));
    assert!(c.persistent_logging && c.development_mode && c.debug);
    assert_eq!(c.country.as_deref(), Some("DE"));
    assert_eq!(
        c.dns_servers,
        DnsServers::List(vec![
            "1.1.1.1".parse().unwrap(),
            "2606:4700:4700::1111".parse().unwrap()
        ])
    );
    assert_eq!(c.ntp_servers, ["time.example.com", "192.168.1.1"]);
    assert_eq!(c.balena_root_ca.as_deref(), Some(pem));
    assert_eq!(c.listen_port, Some(48484));
    assert_eq!(
        c.connectivity,
        Connectivity {
            uri: Some("http://example.com/check".into()),
            interval: Some(600),
            response: Some("ok".into()),
        }
    );
    assert_eq!(c.random_mac_scan, Some(true));
    assert_eq!(
        c.udev_rules["64-usb"],
        "ACTION==\"add\"\nSUBSYSTEM==\"usb\"\n"
    );
    assert_eq!(c.ssh_keys, [KEY]);
    assert_eq!(c.fan_profile.as_deref(), Some("quiet"));
    assert_eq!(c.power_mode.as_deref(), Some("low"));
    assert_eq!(c.extra_firmware_vol.as_deref(), Some("extra-firmware"));
    assert_eq!(
        c.installer,
        Installer {
            secureboot: true,
            migrate_force: true,
            target_devices: vec!["mmcblk0".into(), "nvme*".into()],
            whitelist_pcr2: true,
        }
    );
}

// --- per-key isolation --------------------------------------------------

#[test]
fn one_invalid_key_leaves_the_others_usable() {
    let v = check(json!({
        "hostname": "bad name",
        "uuid": UUID,
        "developmentMode": true,
        "dnsServers": "1.1.1.1",
        "os": {"sshKeys": [KEY], "fan": "loud"}
    }));
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "hostname = \"bad name\": contains ' '; expected one DNS label of 1 to 63 letters, digits and inner hyphens",
            "os.fan = \"loud\": is a string; expected an object",
        ]
    );
    let c = v.config;
    assert_eq!(c.hostname, None);
    assert_eq!(c.hostname(), Some("0123456"), "falls back to the uuid");
    assert!(c.development_mode);
    assert_eq!(
        c.dns_servers,
        DnsServers::List(vec!["1.1.1.1".parse().unwrap()])
    );
    assert_eq!(c.ssh_keys, [KEY]);
    assert_eq!(c.fan_profile, None);
}

#[test]
fn null_and_empty_strings_are_missing() {
    let v = check(json!({
        "hostname": "", "uuid": null, "apiEndpoint": "", "country": "",
        "applicationId": "", "listenPort": null, "persistentLogging": null,
        "os": null, "installer": {"migrate": null}
    }));
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.config, Config::default());
}

// --- error messages, one family at a time -------------------------------

#[test]
fn endpoint_and_key_errors() {
    assert_eq!(
        errors(json!({
            "apiEndpoint": "ftp://api.example.com",
            "deltaEndpoint": "https://",
            "apiKey": "two words",
            "deviceApiKey": 12,
            "mixpanelToken": "x".repeat(300),
            "deviceApiKeys": {"api.example.com": "ok", "api.other.com": "bad\nkey"}
        })),
        [
            "apiEndpoint = \"ftp://api.example.com\": is not an http:// or https:// URL; expected an http:// or https:// URL",
            "apiKey = \"two words\": contains ' '; expected a key of printable characters without spaces",
            "deviceApiKey = 12: is a number; expected a key of printable characters without spaces",
            format!("mixpanelToken = \"{}...: is 300 characters long; expected a key of printable characters without spaces", "x".repeat(76)).as_str(),
            "deltaEndpoint = \"https://\": has no host; expected an http:// or https:// URL",
            "deviceApiKeys[\"api.other.com\"] = \"bad\\nkey\": contains '\\n'; expected a key of printable characters without spaces",
        ]
    );
    assert_eq!(
        errors(json!({"apiEndpoint": "https://api.example.com/a path", "deviceApiKeys": []})),
        [
            "apiEndpoint = \"https://api.example.com/a path\": contains ' '; expected an http:// or https:// URL",
            "deviceApiKeys = []: is an array; expected an object mapping API hosts to device API keys",
        ]
    );
}

#[test]
fn identity_errors() {
    assert_eq!(
        errors(json!({
            "uuid": "0123456789ABCDEF0123456789abcdef",
            "applicationId": "12a",
            "deviceType": "Raspberry Pi",
            "deviceId": -1,
            "registered_at": true,
            "hostname": "-x"
        })),
        [
            "uuid = \"0123456789ABCDEF0123456789abcdef\": contains 'A'; expected 32 lower-case hex digits (62 on older devices)",
            "applicationId = \"12a\": is not a whole number; expected a whole number (or a string of digits)",
            "deviceType = \"Raspberry Pi\": contains 'R'; expected a device type slug such as \"raspberrypi4-64\" (lower-case letters, digits, '-' and '_')",
            "deviceId = -1: is negative; expected a whole number (or a string of digits)",
            "registered_at = true: is a boolean; expected a timestamp (a number or a string)",
            "hostname = \"-x\": starts or ends with a hyphen; expected one DNS label of 1 to 63 letters, digits and inner hyphens",
        ]
    );
    assert_eq!(
        errors(json!({"uuid": "abc", "hostname": "x;reboot", "applicationId": 1.5})),
        [
            "uuid = \"abc\": is 3 characters long; expected 32 lower-case hex digits (62 on older devices)",
            "applicationId = 1.5: is not a whole number; expected a whole number (or a string of digits)",
            "hostname = \"x;reboot\": contains ';'; expected one DNS label of 1 to 63 letters, digits and inner hyphens",
        ]
    );
    assert_eq!(
        errors(json!({"hostname": "a".repeat(64), "deviceId": "99999999999999999999999"})),
        [
            "deviceId = \"99999999999999999999999\": is too large; expected a whole number (or a string of digits)",
            format!("hostname = \"{}\": is 64 characters long; expected one DNS label of 1 to 63 letters, digits and inner hyphens", "a".repeat(64)).as_str(),
        ]
    );
    assert_eq!(
        errors(json!({"hostname": "new\nline"})),
        [
            "hostname = \"new\\nline\": contains '\\n'; expected one DNS label of 1 to 63 letters, digits and inner hyphens"
        ]
    );
    let legacy = "a".repeat(62);
    let c = check(json!({"uuid": legacy})).config;
    assert_eq!(c.hostname(), Some("aaaaaaa"));
}

#[test]
fn boolean_errors_and_string_forms() {
    assert_eq!(
        errors(json!({
            "developmentMode": "yes",
            "persistentLogging": "yes",
            "debug": "yes",
            "installer": {"secureboot": 1, "migrate": {"force": "true"}, "whitelist_pcr2": [true]}
        })),
        [
            "persistentLogging = \"yes\": is a string; expected true or false",
            "developmentMode = \"yes\": is a string; expected true or false",
            "debug = \"yes\": is not \"1\" or \"0\"; expected \"1\" to trace update hooks, or \"0\"",
            "installer.secureboot = 1: is a number; expected true or false",
            "installer.migrate.force = \"true\": is a string; expected true or false",
            "installer.whitelist_pcr2 = [true]: is an array; expected true or false",
        ]
    );
    let on = |v: Value| {
        check(json!({"persistentLogging": v}))
            .config
            .persistent_logging
    };
    assert!(on(json!(true)) && on(json!("true")));
    assert!(!on(json!(false)) && !on(json!("false")) && !on(json!("yes")));
    let dev = |v: Value| check(json!({"developmentMode": v})).config.development_mode;
    assert!(dev(json!(true)));
    assert!(
        !dev(json!("true")),
        "only a JSON boolean turns development mode on"
    );
    let debug = |v: Value| check(json!({"debug": v})).config.debug;
    assert!(debug(json!("1")) && debug(json!(1)) && debug(json!(true)));
    assert!(!debug(json!("0")) && !debug(json!(0)) && !debug(json!("")));
}

#[test]
fn country_errors() {
    assert_eq!(
        errors(json!({"country": "de"})),
        [
            "country = \"de\": is in lower case; expected an upper-case ISO 3166-1 alpha-2 country code such as \"DE\", or \"00\" for the world regulatory domain"
        ]
    );
    assert_eq!(
        errors(json!({"country": "XX"})),
        [
            "country = \"XX\": is not an assigned ISO 3166-1 alpha-2 code; expected an upper-case ISO 3166-1 alpha-2 country code such as \"DE\", or \"00\" for the world regulatory domain"
        ]
    );
    assert_eq!(
        errors(json!({"country": 49})),
        [
            "country = 49: is a number; expected an upper-case ISO 3166-1 alpha-2 country code such as \"DE\", or \"00\" for the world regulatory domain"
        ]
    );
    for ok in ["00", "GB", "US", "ZW", "AD"] {
        assert_eq!(
            check(json!({"country": ok})).config.country.as_deref(),
            Some(ok)
        );
    }
}

#[test]
fn the_country_list_is_sorted_and_complete() {
    assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
    assert!(
        ISO_3166_ALPHA2
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
    );
    for removed in ["UK", "YU", "AN", "CS", "EU", "XK"] {
        assert!(!ISO_3166_ALPHA2.contains(&removed), "{removed}");
    }
}

#[test]
fn dns_servers_cases() {
    let dns = |v: Option<Value>| {
        let mut r = Raw::default();
        if let Some(v) = v {
            r.set("dnsServers", v).unwrap();
        }
        validate(&r)
    };
    assert_eq!(dns(None).config.dns_servers, DnsServers::Default);
    assert_eq!(
        dns(Some(json!(null))).config.dns_servers,
        DnsServers::Default
    );
    assert_eq!(
        dns(Some(json!("null"))).config.dns_servers,
        DnsServers::None
    );
    assert_eq!(dns(Some(json!(""))).config.dns_servers, DnsServers::None);
    assert!(
        dns(Some(json!("")))
            .config
            .dns_servers
            .addresses()
            .is_empty()
    );
    let v = dns(Some(json!("1.1.1.1 dns.google\t::1 8.8.8.8\n9.9.9.9")));
    assert_eq!(
        v.config.dns_servers,
        DnsServers::List(vec!["1.1.1.1".parse().unwrap(), "::1".parse().unwrap()])
    );
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "dnsServers[1] = \"dns.google\": is not an IP address; expected an IPv4 or IPv6 address",
            "dnsServers[3] = \"8.8.8.8\\n9.9.9.9\": contains '\\n'; expected an IPv4 or IPv6 address",
        ]
    );
    // Nothing usable: the default, as for a missing key.
    let v = dns(Some(json!("server=/x/1.2.3.4")));
    assert_eq!(v.config.dns_servers, DnsServers::Default);
    assert_eq!(
        v.errors[0].to_string(),
        "dnsServers[0] = \"server=/x/1.2.3.4\": is not an IP address; expected an IPv4 or IPv6 address"
    );
    let v = dns(Some(json!(["1.1.1.1"])));
    assert_eq!(v.config.dns_servers, DnsServers::Default);
    assert_eq!(
        v.errors[0].to_string(),
        "dnsServers = [\"1.1.1.1\"]: is an array; expected a string of IP addresses separated by spaces, or \"null\" for none"
    );
}

#[test]
fn ntp_server_errors() {
    let v = check(
        json!({"ntpServers": "pool.ntp.org 10.0.0.1 bad_host -x.com a..b time.local.\nserver evil"}),
    );
    assert_eq!(v.config.ntp_servers, ["pool.ntp.org", "10.0.0.1", "evil"]);
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "ntpServers[2] = \"bad_host\": contains '_'; expected a host name or an IP address",
            "ntpServers[3] = \"-x.com\": has a label that starts or ends with a hyphen; expected a host name or an IP address",
            "ntpServers[4] = \"a..b\": has an empty label; expected a host name or an IP address",
            "ntpServers[5] = \"time.local.\\nserver\": contains '\\n'; expected a host name or an IP address",
        ]
    );
    assert_eq!(
        errors(json!({"ntpServers": 5})),
        [
            "ntpServers = 5: is a number; expected a string of host names or IP addresses separated by spaces"
        ]
    );
    assert_eq!(
        check(json!({"ntpServers": ""})).config.ntp_servers,
        Vec::<String>::new()
    );
}

#[test]
fn root_ca_errors() {
    let ca = |pem: &str| json!({"balenaRootCA": encode_base64(pem.as_bytes())});
    const EXPECTED: &str =
        "expected base64 of one or more PEM \"-----BEGIN CERTIFICATE-----\" blocks";
    assert_eq!(
        errors(json!({"balenaRootCA": "not base64!"})),
        [format!(
            "balenaRootCA = \"not base64!\": is not base64; {EXPECTED}"
        )]
    );
    assert_eq!(
        errors(json!({"balenaRootCA": encode_base64(&[0xff, 0xfe])})),
        [format!(
            "balenaRootCA = \"//4=\": does not decode to text; {EXPECTED}"
        )]
    );
    assert_eq!(
        errors(ca("hello\n")),
        [format!(
            "balenaRootCA = \"aGVsbG8K\": holds no PEM certificate; {EXPECTED}"
        )]
    );
    let open = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    assert_eq!(
        errors(ca(open)),
        [format!(
            "balenaRootCA = \"{}\": has a certificate without its END line; {EXPECTED}",
            encode_base64(open.as_bytes())
        )]
    );
    let bad_body = "-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n";
    let e = check(ca(bad_body)).errors;
    assert_eq!(e[0].problem, "has a certificate whose body is not base64");
    assert_eq!(e[0].value.chars().count(), 80, "long values are cut");
    assert!(e[0].value.ends_with("..."));
    // Two certificates, CRLF line ends and text between them, wrapped base64.
    let bundle = "subject=CN=a\r\n-----BEGIN CERTIFICATE-----\r\nMIIB\r\n-----END CERTIFICATE-----\r\n-----BEGIN CERTIFICATE-----\nAAAA\nBBBB\n-----END CERTIFICATE-----\n";
    let encoded = encode_base64(bundle.as_bytes());
    let (a, b) = encoded.split_at(40);
    let v = check(json!({"balenaRootCA": format!("{a}\n{b}")}));
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.config.balena_root_ca.as_deref(), Some(bundle));
}

#[test]
fn listen_port_errors() {
    assert_eq!(
        errors(json!({"listenPort": 0})),
        ["listenPort = 0: is out of range; expected a port number from 1 to 65535"]
    );
    assert_eq!(
        errors(json!({"listenPort": 70000})),
        ["listenPort = 70000: is out of range; expected a port number from 1 to 65535"]
    );
    assert_eq!(
        errors(json!({"listenPort": "abc"})),
        ["listenPort = \"abc\": is not a whole number; expected a port number from 1 to 65535"]
    );
    assert_eq!(
        check(json!({"listenPort": "48484"})).config.listen_port,
        Some(48484)
    );
}

#[test]
fn connectivity_uri_defaults_and_errors() {
    let uri = |v: Value| check(v).config.connectivity.uri;
    assert_eq!(uri(json!({})), None, "no apiEndpoint: no check");
    assert_eq!(
        uri(json!({"apiEndpoint": "https://api.example.com"})),
        Some("https://api.example.com/connectivity-check".into())
    );
    assert_eq!(
        uri(json!({"apiEndpoint": "https://api.example.com/"})),
        Some("https://api.example.com/connectivity-check".into()),
        "no double slash"
    );
    let with = |u: Value| json!({"apiEndpoint": "https://api.example.com", "os": {"network": {"connectivity": {"uri": u}}}});
    assert_eq!(uri(with(json!("null"))), None);
    assert_eq!(uri(with(json!(""))), None);
    assert_eq!(
        uri(with(json!(null))),
        Some("https://api.example.com/connectivity-check".into())
    );
    assert_eq!(
        uri(with(json!("http://x.test/c"))),
        Some("http://x.test/c".into())
    );
    let v = check(with(json!("not a url")));
    assert_eq!(
        v.config.connectivity.uri,
        Some("https://api.example.com/connectivity-check".into()),
        "an invalid uri falls back to the default"
    );
    assert_eq!(
        v.errors[0].to_string(),
        "os.network.connectivity.uri = \"not a url\": is not an http:// or https:// URL; expected an http:// or https:// URL, or \"null\" to turn the check off"
    );
    // An invalid apiEndpoint is no endpoint.
    assert_eq!(uri(json!({"apiEndpoint": "api.example.com"})), None);
}

#[test]
fn connectivity_interval_and_response() {
    let conn = |c: Value| {
        check(json!({"apiEndpoint": "https://a.test", "os": {"network": {"connectivity": c}}}))
    };
    let interval = |v: Value| conn(json!({"interval": v})).config.connectivity.interval;
    assert_eq!(interval(json!("0")), None);
    assert_eq!(interval(json!(0)), None);
    assert_eq!(interval(json!("3600")), Some(3600));
    assert_eq!(interval(json!(60)), Some(60));
    assert_eq!(interval(json!(60.0)), Some(60));
    assert_eq!(interval(json!("")), Some(3600));
    assert_eq!(interval(json!("abc")), Some(3600), "invalid: the default");
    assert!(
        !conn(json!({"interval": "0"}))
            .config
            .connectivity
            .is_enabled()
    );
    assert!(conn(json!({})).config.connectivity.is_enabled());
    let expected = "expected a whole number of seconds, 0 to turn the check off";
    let messages =
        |c: Value| -> Vec<String> { conn(c).errors.iter().map(ToString::to_string).collect() };
    assert_eq!(
        messages(json!({"interval": "abc"})),
        [format!(
            "os.network.connectivity.interval = \"abc\": is not a whole number; {expected}"
        )]
    );
    assert_eq!(
        messages(json!({"interval": -5})),
        [format!(
            "os.network.connectivity.interval = -5: is negative; {expected}"
        )]
    );
    assert_eq!(
        messages(json!({"interval": 5000000000u64})),
        [format!(
            "os.network.connectivity.interval = 5000000000: is too large; {expected}"
        )]
    );
    assert_eq!(
        messages(json!({"interval": true})),
        [format!(
            "os.network.connectivity.interval = true: is a boolean; {expected}"
        )]
    );
    assert_eq!(
        messages(json!({"response": "ok\n[main]"})),
        [
            "os.network.connectivity.response = \"ok\\n[main]\": contains '\\n'; expected one line of text"
        ]
    );
    assert_eq!(
        conn(json!({"response": ""})).config.connectivity.response,
        None
    );
}

#[test]
fn wifi_and_device_specific_errors() {
    assert_eq!(
        errors(json!({"os": {
            "network": {"wifi": {"randomMacAddressScan": "yes"}},
            "fan": {"profile": "very quiet"},
            "power": {"mode": 3},
            "kernel": {"extraFirmwareVol": "../firmware"}
        }})),
        [
            "os.network.wifi.randomMacAddressScan = \"yes\": is a string; expected true or false (or null for NetworkManager's default)",
            "os.fan.profile = \"very quiet\": contains ' '; expected a profile name such as \"quiet\" or \"cool\"",
            "os.power.mode = 3: is a number; expected a mode name such as \"low\", \"mid\" or \"high\"",
            "os.kernel.extraFirmwareVol = \"../firmware\": contains '/'; expected a volume name of letters, digits, '_', '.' and '-', starting with a letter or a digit",
        ]
    );
    let scan = |v: Value| {
        check(json!({"os": {"network": {"wifi": {"randomMacAddressScan": v}}}}))
            .config
            .random_mac_scan
    };
    assert_eq!(scan(json!(null)), None);
    assert_eq!(scan(json!(false)), Some(false));
    assert_eq!(
        errors(json!({"os": {"network": []}})),
        ["os.network = []: is an array; expected an object"]
    );
}

#[test]
fn udev_rule_errors() {
    let long = "r".repeat(201);
    let v = check(json!({"os": {"udevRules": {
        "50-good": "KERNEL==\"sda\"\nRUN+=\"/bin/true\"\n",
        "../evil": "x",
        ".hidden": "x",
        "a/b": "x",
        "a..b": "x",
        "nul\u{0}": "x",
        long.clone(): "x",
        "60-number": 5,
        "70-null": null
    }}}));
    assert_eq!(v.config.udev_rules.keys().collect::<Vec<_>>(), ["50-good"]);
    let expected = "expected a rule name that is a plain file name (no '/', no \"..\", no leading '.', at most 200 characters)";
    let long_json = format!("\"{}...", "r".repeat(76));
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            format!("os.udevRules[\"../evil\"] = \"../evil\": the rule name contains '/'; {expected}"),
            format!("os.udevRules[\".hidden\"] = \".hidden\": the rule name starts with '.'; {expected}"),
            format!("os.udevRules[\"a/b\"] = \"a/b\": the rule name contains '/'; {expected}"),
            format!("os.udevRules[\"a..b\"] = \"a..b\": the rule name contains \"..\"; {expected}"),
            format!("os.udevRules[\"nul\\u0000\"] = \"nul\\u0000\": the rule name contains '\\0'; {expected}"),
            format!("os.udevRules[{long_json}] = {long_json}: the rule name is 201 characters long; {expected}"),
            "os.udevRules[\"60-number\"] = 5: is a number; expected the rules file text as a string".to_string(),
        ]
    );
    assert_eq!(
        errors(json!({"os": {"udevRules": ["x"]}})),
        ["os.udevRules = [\"x\"]: is an array; expected an object mapping rule names to rule text"]
    );
}

#[test]
fn ssh_key_errors() {
    let rsa_label = KEY.replacen("ssh-ed25519", "ssh-rsa", 1);
    let v = check(json!({"os": {"sshKeys": [
        KEY,
        "ssh-foo AAAA",
        "ssh-rsa not*base64",
        7,
        "ssh-ed25519 AAAA\nssh-rsa AAAA",
        rsa_label,
        "ssh-ed25519",
        "",
        "ssh-ed25519 AAAA",
        null
    ]}}));
    assert_eq!(v.config.ssh_keys, [KEY]);
    let expected = "expected an SSH public key line \"<type> <base64> [comment]\"";
    let rsa_json = json_text(&json!(KEY.replacen("ssh-ed25519", "ssh-rsa", 1)));
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            format!(
                "os.sshKeys[1] = \"ssh-foo AAAA\": has unknown key type \"ssh-foo\"; {expected}"
            ),
            format!("os.sshKeys[2] = \"ssh-rsa not*base64\": key data is not base64; {expected}"),
            format!("os.sshKeys[3] = 7: is a number; {expected}"),
            format!(
                "os.sshKeys[4] = \"ssh-ed25519 AAAA\\nssh-rsa AAAA\": contains a line break; {expected}"
            ),
            format!(
                "os.sshKeys[5] = {rsa_json}: key data is for \"ssh-ed25519\", not \"ssh-rsa\"; {expected}"
            ),
            format!("os.sshKeys[6] = \"ssh-ed25519\": has no key data; {expected}"),
            format!("os.sshKeys[7] = \"\": is empty; {expected}"),
            format!(
                "os.sshKeys[8] = \"ssh-ed25519 AAAA\": key data is not an SSH public key; {expected}"
            ),
        ]
    );
    assert_eq!(
        errors(json!({"os": {"sshKeys": KEY}})),
        [format!(
            "os.sshKeys = {}: is a string; expected an array of SSH public key lines",
            json_text(&json!(KEY))
        )]
    );
}

#[test]
fn installer_target_device_errors() {
    let v = check(json!({"installer": {"target_devices": "sda /dev/sdb nvme[01]n1"}}));
    assert_eq!(v.config.installer.target_devices, ["sda", "nvme[01]n1"]);
    assert_eq!(
        v.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "installer.target_devices[1] = \"/dev/sdb\": contains '/'; expected a kernel device name or glob such as \"mmcblk0\" or \"sd*\""
        ]
    );
    assert_eq!(
        errors(json!({"installer": "yes"})),
        ["installer = \"yes\": is a string; expected an object"]
    );
}

// --- warnings -------------------------------------------------------------

#[test]
fn unknown_keys_are_warned_about_and_supervisor_keys_are_not() {
    let v = check(json!({
        "appUpdatePollInterval": 60000,
        "registryEndpoint": "registry2.balena-cloud.com",
        "apiTimeout": 15000,
        "version": "6.0.0",
        "hostnmae": "typo",
        "os": {
            "network": {"wifi": {"randomMacAdressScan": true}, "ethernet": {}},
            "udevRules": {"any-name": "x"},
            "sshkeys": []
        },
        "installer": {"secureBoot": true, "migrate": {"forced": true}},
        "deviceApiKeys": {"any.host": "k"}
    }));
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(
        v.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "hostnmae is not a key baleen knows; it is kept as is",
            "os.network.wifi.randomMacAdressScan is not a key baleen knows; it is kept as is",
            "os.network.ethernet is not a key baleen knows; it is kept as is",
            "os.sshkeys is not a key baleen knows; it is kept as is",
            "installer.secureBoot is not a key baleen knows; it is kept as is",
            "installer.migrate.forced is not a key baleen knows; it is kept as is",
        ]
    );
    assert_eq!(v.warnings[0].path(), "hostnmae");
}

// --- diff ---------------------------------------------------------------

#[test]
fn diff_paths_reports_changed_keys_at_the_known_granularity() {
    let old = raw(json!({
        "hostname": "a",
        "dnsServers": null,
        "os": {
            "sshKeys": [KEY],
            "udevRules": {"a": "1", "b": "2"},
            "network": {"connectivity": {"uri": "http://x.test", "interval": 60}},
            "mystery": 1
        },
        "vpnPort": 443,
        "custom": {"x": 1}
    }));
    assert_eq!(diff_paths(&old, &old), Vec::<String>::new());
    let new = raw(json!({
        "hostname": "a",
        "os": {
            "sshKeys": [KEY, KEY],
            "udevRules": {"a": "1", "b": "3"},
            "network": {"connectivity": {"uri": "http://x.test", "interval": 120}, "wifi": {"randomMacAddressScan": true}},
            "mystery": 2
        },
        "vpnPort": 443,
        "custom": {"x": 2},
        "country": "DE"
    }));
    assert_eq!(
        diff_paths(&old, &new),
        [
            "os.sshKeys",
            "os.udevRules",
            "os.network.connectivity.interval",
            "os.network.wifi.randomMacAddressScan",
            "os.mystery",
            "custom",
            "country",
        ]
    );
    // A branch that is not an object counts as empty.
    let odd = raw(json!({"os": "x"}));
    assert_eq!(
        diff_paths(&odd, &raw(json!({"os": {}}))),
        Vec::<String>::new()
    );
    assert_eq!(
        diff_paths(&odd, &raw(json!({"os": {"fan": {"profile": "cool"}}}))),
        ["os.fan.profile"]
    );
    assert_eq!(
        diff_paths(
            &raw(json!({"installer": {"secureboot": true}})),
            &Raw::default()
        ),
        ["installer.secureboot"]
    );
}

// --- base64 -------------------------------------------------------------

#[test]
fn base64_is_strict() {
    for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
        let text = encode_base64(data);
        assert_eq!(
            decode_base64(text.as_bytes()).as_deref(),
            Some(data),
            "{text}"
        );
    }
    assert_eq!(decode_base64(b"Zm9vYg==").as_deref(), Some(&b"foob"[..]));
    for bad in [
        &b"Zm9"[..],
        b"Zm9vY===",
        b"Zm=vYmFy",
        b"Zg==Zm9v",
        b"Zm9v YmFy",
        b"Zm9-",
    ] {
        assert_eq!(decode_base64(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}
