//! The files `config.json` renders to, as exact text, and what a running
//! device must re-apply when a key changes.
//!
//! Everything here is pure: functions take plain, already validated values
//! (see [`crate::model`]) and return file contents, argv lists or plans. The
//! applier writes them (atomically, only when the bytes differ) under the root
//! it is given, then runs the [`Action`]s of the keys that changed. Path
//! constants are relative to that root, as `Path::join` wants them; paths
//! written *inside* files are absolute, as the running system sees them.
//!
//! Where balenaOS has a known bug (reference §8) the renderer fixes it and the
//! item says so:
//!
//! * 15 — the connectivity check is disabled with `enabled=false`, never with
//!   `uri=null` ([`networkmanager_fragment`]);
//! * 16 — NetworkManager reloads its configuration when a connectivity or
//!   Wi-Fi key changes, and `os.network.connectivity.response` is mapped
//!   ([`KEY_ACTIONS`]);
//! * 17 — custom udev rules: `README` is never deleted, no 60 s sleep
//!   ([`udev_plan`]).

use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// chrony

/// chronyd's configuration (Debian's path; balenaOS uses `/etc/chrony.conf`).
pub const CHRONY_CONF: &str = "etc/chrony/chrony.conf";
/// chronyd reads every `*.sources` file here at start and on `reload sources`.
pub const CHRONY_SOURCE_DIR: &str = "run/baleen/chrony";
/// The default pools (always: `ntpServers` adds to them).
pub const CHRONY_DEFAULT_SOURCES: &str = "run/baleen/chrony/default.sources";
/// The servers of `ntpServers`.
pub const CHRONY_CONFIG_SOURCES: &str = "run/baleen/chrony/added_config.sources";

/// balenaOS's default NTP servers.
pub const DEFAULT_NTP_POOLS: [&str; 4] = [
    "0.resinio.pool.ntp.org",
    "1.resinio.pool.ntp.org",
    "2.resinio.pool.ntp.org",
    "3.resinio.pool.ntp.org",
];

/// Server names of a list whose entries may each hold several names: every
/// entry is split on white space, so no entry can add a line of its own.
fn words(list: &[String]) -> impl Iterator<Item = &str> {
    list.iter().flat_map(|entry| entry.split_whitespace())
}

/// One chrony source line per server, balenaOS's format: one address per
/// name (`maxsources 1`), polled every 2^14 s (about 4.5 h).
fn pool_lines<'a>(servers: impl Iterator<Item = &'a str>) -> String {
    servers
        .map(|server| format!("pool {server} iburst minpoll 14 maxpoll 14 maxsources 1\n"))
        .collect()
}

/// `/etc/chrony/chrony.conf`, read by chronyd; shipped in the image.
///
/// balenaOS's directives in its order, except that the resinio pools moved to
/// `/run/baleen/chrony/default.sources` ([`chrony_sources`]), next to the
/// sources `ntpServers` and DHCP add. `makestep 1 -1`: step the clock
/// whenever it is more than 1 s off, at any time, not only at start.
///
/// The sources live in `/run/baleen/chrony`, not `/run/chrony`: Debian's
/// unit makes `/run/chrony` its `RuntimeDirectory=`, which systemd deletes
/// when chronyd stops.
pub fn chrony_conf() -> String {
    "\
# baleen: chronyd as balenaOS sets it up. Servers come from /run/baleen/chrony/*.sources:
# default.sources (the resinio pools), added_config.sources (ntpServers, added to the pools)
# and added_dhcp_<interface>.sources (NTP servers from DHCP).
sourcedir /run/baleen/chrony
driftfile /var/lib/chrony/drift
maxupdateskew 100
makestep 1 -1
logchange 1
maxdistance 16
hwtimestamp *
rtcsync
acquisitionport 1234
"
    .to_string()
}

/// The two `config.json`-driven source files in `/run/baleen/chrony`; `None` means
/// the file must not exist (the applier removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChronySources {
    /// `/run/baleen/chrony/default.sources`.
    pub default_sources: Option<String>,
    /// `/run/baleen/chrony/added_config.sources`.
    pub added_config: Option<String>,
}

/// `/run/baleen/chrony/default.sources` and `/run/baleen/chrony/added_config.sources`,
/// read by chronyd (then `chronyc reload sources`), from `ntpServers`.
///
/// | `ntp_servers` | `config.json` `ntpServers` | Sources |
/// |---|---|---|
/// | `None` or `Some(&[])` | missing, `null`, `""`, `"null"` | the four resinio pools |
/// | `Some(list)` | `"a b"` | the pools, and `a` and `b` |
///
/// As balenaOS (reference §8 item 14), configured servers are **added to**
/// the pools: a device whose own servers fail still finds the time.
pub fn chrony_sources(ntp_servers: Option<&[String]>) -> ChronySources {
    let added = ntp_servers.map(|list| pool_lines(words(list)));
    ChronySources {
        default_sources: Some(pool_lines(DEFAULT_NTP_POOLS.into_iter())),
        added_config: added.filter(|lines| !lines.is_empty()),
    }
}

/// The file name, in `/run/baleen/chrony`, of the NTP servers DHCP offered on
/// `interface`: `added_dhcp_<interface>.sources`. `None` when `interface`
/// is not a usable network interface name (1 to 15 bytes, no `/`, no white
/// space, not `.` or `..`), so a name can never point outside the directory.
pub fn dhcp_ntp_file_name(interface: &str) -> Option<String> {
    let usable = !interface.is_empty()
        && interface.len() <= 15
        && interface != "."
        && interface != ".."
        && !interface
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control());
    usable.then(|| format!("added_dhcp_{interface}.sources"))
}

/// `/run/baleen/chrony/added_dhcp_<interface>.sources`, read by chronyd, from the
/// NTP servers a DHCP lease offers (option 42; NetworkManager's
/// `DHCP4_NTP_SERVERS`). `None` when none are offered: the file is removed,
/// as it is when the interface goes down. Same line format as balenaOS's
/// `98dhcp_ntp` dispatcher script.
pub fn dhcp_ntp_sources(servers: &[String]) -> Option<String> {
    let lines = pool_lines(words(servers));
    (!lines.is_empty()).then_some(lines)
}

// ---------------------------------------------------------------------------
// DNS: dnsmasq at 127.0.0.2

/// Upstream servers from `config.json` `dnsServers`, read by dnsmasq.
pub const DNSMASQ_SERVERS: &str = "run/dnsmasq.servers";
/// The system resolver's configuration: dnsmasq only. Shipped in the image.
pub const RESOLV_CONF: &str = "etc/resolv.conf";
/// The upstream servers NetworkManager learnt (DHCP, connection profiles).
/// NetworkManager writes this file whatever `rc-manager` says, as long as
/// `/etc/resolv.conf` is not a symlink to it.
pub const DNS_UPSTREAM: &str = "run/NetworkManager/resolv.conf";
/// Where the host's dnsmasq answers.
pub const DNS_LISTEN_ADDRESS: &str = "127.0.0.2";
/// The address of balenaOS's `resin-dns` bridge (the supervisor's and the
/// engine's `--dns`), when the image has one.
pub const DNS_BRIDGE_ADDRESS: &str = "10.114.102.1";
/// What `dnsServers` means when it is missing.
pub const DEFAULT_DNS_SERVER: &str = "8.8.8.8";

/// `/run/dnsmasq.servers`, read by dnsmasq (`--servers-file`, on start and
/// SIGHUP), from `dnsServers`: one `server=<address>` line per server.
///
/// | `dns_servers` | `config.json` `dnsServers` | File |
/// |---|---|---|
/// | `None` | missing or `null` | `server=8.8.8.8` |
/// | `Some(&[])` | `"null"` or `""` | empty |
/// | `Some(list)` | `"1.1.1.1 9.9.9.9"` | one line each |
///
/// `""` meaning "none" contradicts balenaOS's README but is what balenaOS
/// does (reference §8 item 13); baleen keeps the behaviour. balenaOS starts
/// the file with an empty line; baleen does not (dnsmasq skips it anyway).
pub fn dnsmasq_servers(dns_servers: Option<&[String]>) -> String {
    let line = |server: &str| format!("server={server}\n");
    match dns_servers {
        None => line(DEFAULT_DNS_SERVER),
        Some(list) => words(list).map(line).collect(),
    }
}

/// dnsmasq's command line (for its unit's `ExecStart=`), balenaOS's options
/// spelt long.
///
/// * Answers on 127.0.0.2 only, so a container on the host network can run
///   its own resolver on 127.0.0.1. balenaOS also listens on 10.114.102.1,
///   its `resin-dns` bridge for the supervisor and the engine's containers:
///   baleen does so only when `dns_bridge` says the image makes that bridge
///   (with `--bind-interfaces`, dnsmasq fails to start on a missing address).
/// * Upstream servers: NetworkManager's [`DNS_UPSTREAM`] (re-read when it
///   changes) plus `dnsServers` ([`DNSMASQ_SERVERS`]). balenaOS gets the same
///   list through resolvconf into `/etc/resolv.dnsmasq`; Debian has no
///   resolvconf, and NetworkManager keeps its own copy in `/run` anyway.
/// * Extra configuration: `*.conf` in `/etc/dnsmasq.d` only (balenaOS reads
///   every file there; Debian keeps a `README` in it).
/// * Stays in the foreground and logs to stderr (the journal).
pub fn dnsmasq_argv(dns_bridge: bool) -> Vec<String> {
    let listen = if dns_bridge {
        format!("--listen-address={DNS_LISTEN_ADDRESS},{DNS_BRIDGE_ADDRESS}")
    } else {
        format!("--listen-address={DNS_LISTEN_ADDRESS}")
    };
    [
        "/usr/sbin/dnsmasq",
        "--keep-in-foreground",
        "--log-facility=-",
        "--pid-file=/run/dnsmasq.pid",
        &listen,
        "--bind-interfaces",
        "--conf-dir=/etc/dnsmasq.d,*.conf",
        "--resolv-file=/run/NetworkManager/resolv.conf",
        "--servers-file=/run/dnsmasq.servers",
    ]
    .map(String::from)
    .to_vec()
}

/// `/etc/resolv.conf`, read by every program on the host: dnsmasq only, with
/// balenaOS's 15 s timeout. A regular file shipped in the image — it must
/// not be a symlink to NetworkManager's `/run/NetworkManager/resolv.conf`,
/// or NetworkManager stops writing the upstream list dnsmasq reads.
pub fn resolv_conf() -> String {
    "\
# baleen: the host's dnsmasq answers on 127.0.0.2, leaving 127.0.0.1 to
# containers that run their own resolver.
nameserver 127.0.0.2
options timeout:15
"
    .to_string()
}

// ---------------------------------------------------------------------------
// NetworkManager

/// NetworkManager's main configuration; shipped in the image.
pub const NM_CONF: &str = "etc/NetworkManager/NetworkManager.conf";
/// The fragment rendered from `config.json` (balenaOS's name and directory,
/// so a fragment left on a balenaOS state partition is replaced, not
/// shadowing or shadowed by another file).
pub const NM_FRAGMENT: &str = "etc/NetworkManager/conf.d/os-networkmanager.conf";
/// What `os.network.connectivity.interval` means when it is missing.
pub const DEFAULT_CONNECTIVITY_INTERVAL: u64 = 3600;

/// `/etc/NetworkManager/NetworkManager.conf`, read by NetworkManager;
/// shipped in the image.
///
/// balenaOS's settings: keyfile profiles only, unlimited autoconnect retries
/// (`0`), the hostname left alone (it comes from `config.json`), and the
/// engine's and balenaOS's bridges and veths unmanaged. DNS: `dns=default`
/// with `rc-manager=unmanaged` — NetworkManager leaves `/etc/resolv.conf`
/// ([`resolv_conf`]) alone and only keeps the upstream list in
/// `/run/NetworkManager/resolv.conf`, which dnsmasq reads ([`dnsmasq_argv`]).
/// Not `dns=dnsmasq`: NetworkManager's own dnsmasq takes 127.0.0.1, which
/// balenaOS leaves to containers, and knows nothing of `dnsServers`. The
/// internal DHCP client is named explicitly, as balenaOS is built with it
/// only.
pub fn networkmanager_conf() -> String {
    "\
# baleen: NetworkManager as balenaOS sets it up. config.json settings are in
# conf.d/os-networkmanager.conf. NetworkManager leaves /etc/resolv.conf alone
# and keeps the upstream DNS servers in /run/NetworkManager/resolv.conf, which
# the host's dnsmasq (127.0.0.2) reads.
[main]
plugins=keyfile
dhcp=internal
dns=default
rc-manager=unmanaged
autoconnect-retries-default=0
hostname-mode=none

[keyfile]
unmanaged-devices=interface-name:balena*;interface-name:resin*;interface-name:br*;type:veth
"
    .to_string()
}

/// The connectivity-check URI in effect, from `os.network.connectivity.uri`
/// and `apiEndpoint`; `None` disables the check.
///
/// | `uri` | Result |
/// |---|---|
/// | `"null"` | `None` (the README's way to turn the check off; balenaOS wrote `uri=null`, §8 item 15) |
/// | a URI | that URI |
/// | missing or `""` | `<apiEndpoint>/connectivity-check`, or `None` without `apiEndpoint` |
///
/// A trailing `/` of `apiEndpoint` is dropped before the path is appended
/// (balenaOS would make `…//connectivity-check`). `timesync-https` uses the
/// same URI.
pub fn connectivity_uri(uri: Option<&str>, api_endpoint: Option<&str>) -> Option<String> {
    match uri.map(str::trim) {
        Some("null") => None,
        Some(uri) if !uri.is_empty() => Some(uri.to_string()),
        _ => api_endpoint
            .map(|api| api.trim().trim_end_matches('/'))
            .filter(|api| !api.is_empty())
            .map(|api| format!("{api}/connectivity-check")),
    }
}

/// A value as GLib's key files read it back: backslash escapes for `\`,
/// line breaks and tabs, and `\s` for a leading space. A value can then
/// never end its line early or add a key.
fn keyfile_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if i == 0 => out.push_str("\\s"),
            c => out.push(c),
        }
    }
    out
}

/// `/etc/NetworkManager/conf.d/os-networkmanager.conf`, read by
/// NetworkManager at start and on `nmcli general reload conf`.
///
/// * `[device] wifi.scan-rand-mac-address=yes|no` from
///   `os.network.wifi.randomMacAddressScan`; no `[device]` section when it
///   is unset (NetworkManager's default applies).
/// * `[connectivity]`, always: `uri` is the effective URI
///   ([`connectivity_uri`]), `interval` defaults to 3600 s and `response` to
///   empty (NetworkManager then expects HTTP 204 or an empty body, which is
///   what balenaCloud's endpoint answers). Without a URI, or with an interval
///   of 0, the check is off: `enabled=false` and nothing else — never
///   balenaOS's `uri=null` (§8 item 15). `enabled=true` is explicit so a
///   reload after a disabled state turns the check back on.
pub fn networkmanager_fragment(
    random_mac_scan: Option<bool>,
    uri: Option<&str>,
    interval: Option<u64>,
    response: Option<&str>,
) -> String {
    let mut text = String::from(
        "# Written by baleen from config.json (os.network, apiEndpoint); changes here are overwritten.\n",
    );
    if let Some(random) = random_mac_scan {
        let value = if random { "yes" } else { "no" };
        text.push_str(&format!("\n[device]\nwifi.scan-rand-mac-address={value}\n"));
    }
    let uri = uri.map(str::trim).filter(|u| !u.is_empty() && *u != "null");
    let interval = interval.unwrap_or(DEFAULT_CONNECTIVITY_INTERVAL);
    match uri {
        Some(uri) if interval > 0 => text.push_str(&format!(
            "\n[connectivity]\nenabled=true\nuri={}\ninterval={interval}\nresponse={}\n",
            keyfile_value(uri),
            keyfile_value(response.unwrap_or("")),
        )),
        _ => text.push_str("\n[connectivity]\nenabled=false\n"),
    }
    text
}

// ---------------------------------------------------------------------------
// udev

/// Custom rules from `os.udevRules` (state-backed in balenaOS).
pub const UDEV_RULES_DIR: &str = "etc/udev/rules.d";
/// The file in [`UDEV_RULES_DIR`] that says the directory is managed.
pub const UDEV_README: &str = "README";

/// `/etc/udev/rules.d/README`, for people: written when missing, never
/// removed (balenaOS deletes it with the last rule, §8 item 17).
pub fn udev_readme() -> String {
    "Files here are auto-generated by baleen from config.json os.udevRules. \
     Other .rules files here are removed.\n"
        .to_string()
}

/// The content of `/etc/udev/rules.d/<name>.rules` for a rule text: the text
/// with its trailing line breaks replaced by exactly one. That is the file
/// balenaOS writes (`echo "$(jq -r …)"`), so its files compare equal and are
/// not rewritten on the first boot after a migration.
pub fn udev_rule_file(text: &str) -> String {
    format!("{}\n", text.trim_end_matches(['\n', '\r']))
}

/// Why `name` cannot name a file in the rules directory, if it cannot.
fn udev_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    }
}

/// What to do in `/etc/udev/rules.d` to match `os.udevRules`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevPlan {
    /// Files to (re)write, `(file name, contents)`, in name order.
    pub write: Vec<(String, String)>,
    /// File names to delete, in name order.
    pub remove: Vec<String>,
    /// Rule names that cannot be file names, with the reason, for the log.
    pub rejected: Vec<String>,
}

impl UdevPlan {
    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty() && self.remove.is_empty()
    }

    /// Whether udev must reload its rules and re-trigger devices: a rule
    /// file was written or removed (the README alone does not count).
    pub fn needs_reload(&self) -> bool {
        !self.remove.is_empty() || self.write.iter().any(|(name, _)| name != UDEV_README)
    }
}

/// The changes that make `/etc/udev/rules.d` (read by systemd-udevd) hold
/// exactly `os.udevRules`: `<name>.rules` per rule ([`udev_rule_file`]), the
/// [`udev_readme`], and no other `*.rules` file.
///
/// `existing` maps the file names currently in the directory to their
/// contents; files whose contents already match are left alone, so applying
/// an unchanged configuration writes nothing and triggers no reload.
/// Only `*.rules` files are removed — other files have no effect on udev —
/// and `README` never is. A rule whose name cannot be a file name (empty,
/// with `/`, starting with `.`) is reported in `rejected` and skipped.
pub fn udev_plan(
    existing: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> UdevPlan {
    let mut plan = UdevPlan::default();
    let mut keep = vec![UDEV_README.to_string()];
    let mut files = BTreeMap::new();
    for (name, text) in wanted {
        match udev_name_problem(name) {
            Some(why) => plan.rejected.push(format!("os.udevRules.{name:?} {why}")),
            None => {
                let file = format!("{name}.rules");
                keep.push(file.clone());
                files.insert(file, udev_rule_file(text));
            }
        }
    }
    if !existing.contains_key(UDEV_README) {
        files.insert(UDEV_README.to_string(), udev_readme());
    }
    plan.write = files
        .into_iter()
        .filter(|(file, text)| existing.get(file) != Some(text))
        .collect();
    plan.remove = existing
        .keys()
        .filter(|file| file.ends_with(".rules") && !keep.contains(file))
        .cloned()
        .collect();
    plan
}

// ---------------------------------------------------------------------------
// Custom root CA

/// The directory of custom CAs (state-backed in balenaOS).
pub const ROOT_CA_DIR: &str = "usr/share/ca-certificates/balena";
/// `balenaRootCA`, decoded.
pub const ROOT_CA: &str = "usr/share/ca-certificates/balena/balenaRootCA.crt";

/// Why `balenaRootCA` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootCaError {
    #[error(
        "config.json balenaRootCA: {found:?} at offset {offset} is not base64; expected the base64 encoding of a PEM certificate (`base64 -w0 ca.pem`)"
    )]
    NotBase64 { offset: usize, found: char },
    #[error(
        "config.json balenaRootCA: decodes to binary data; expected the base64 encoding of a PEM certificate (`base64 -w0 ca.pem`)"
    )]
    NotText,
    #[error(
        "config.json balenaRootCA: decodes to text without a \"-----BEGIN CERTIFICATE-----\" line; expected the base64 encoding of a PEM certificate"
    )]
    NotPem,
}

/// Standard base64 (RFC 4648 alphabet, `=` padding optional), white space
/// ignored, as `base64 -d` reads balenaRootCA in balenaOS.
fn decode_base64(text: &str) -> Result<Vec<u8>, RootCaError> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits, mut padded) = (0u32, 0u32, false);
    for (offset, found) in text.char_indices() {
        let value = match found {
            'A'..='Z' => found as u32 - 'A' as u32,
            'a'..='z' => found as u32 - 'a' as u32 + 26,
            '0'..='9' => found as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            '=' => {
                padded = true;
                continue;
            }
            c if c.is_ascii_whitespace() => continue,
            _ => return Err(RootCaError::NotBase64 { offset, found }),
        };
        if padded {
            return Err(RootCaError::NotBase64 { offset, found });
        }
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// `/usr/share/ca-certificates/balena/balenaRootCA.crt`, read by
/// `update-ca-certificates` ([`update_ca_certificates_argv`]), from
/// `balenaRootCA` (base64 of a PEM file): the decoded PEM, with a final line
/// break added when it lacks one (certificate bundles are concatenations).
pub fn root_ca(encoded: &str) -> Result<String, RootCaError> {
    let bytes = decode_base64(encoded)?;
    let mut pem = String::from_utf8(bytes).map_err(|_| RootCaError::NotText)?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(RootCaError::NotPem);
    }
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    Ok(pem)
}

/// What to do with [`ROOT_CA`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCaChange {
    /// The file already holds the configured CA, or there is none either way.
    Unchanged,
    /// Write the file, then run [`update_ca_certificates_argv`].
    Write(String),
    /// Delete the file, then run [`update_ca_certificates_argv`].
    Remove,
}

/// The change that makes [`ROOT_CA`] match `balenaRootCA`, given the file's
/// current contents (`None`: absent). A missing, empty or blank key removes
/// the CA — balenaOS keeps a removed CA forever (reference §2.4). On an
/// invalid key the caller keeps the current file and reports the error.
pub fn root_ca_change(
    configured: Option<&str>,
    existing: Option<&str>,
) -> Result<RootCaChange, RootCaError> {
    match configured.map(str::trim).filter(|c| !c.is_empty()) {
        Some(encoded) => {
            let pem = root_ca(encoded)?;
            Ok(if existing == Some(pem.as_str()) {
                RootCaChange::Unchanged
            } else {
                RootCaChange::Write(pem)
            })
        }
        None if existing.is_some() => Ok(RootCaChange::Remove),
        None => Ok(RootCaChange::Unchanged),
    }
}

/// Debian's `update-ca-certificates`, rebuilding `/etc/ssl/certs` from
/// scratch (`--fresh`, so a removed CA leaves the bundle too) with the
/// balena directory as the local-CA directory — balenaOS patches the script's
/// `LOCALCERTSDIR` to the same place. No `/etc/ca-certificates.conf` line is
/// needed: every `*.crt` of the local directory is trusted.
pub fn update_ca_certificates_argv() -> Vec<String> {
    [
        "update-ca-certificates",
        "--fresh",
        "--localcertsdir",
        "/usr/share/ca-certificates/balena",
    ]
    .map(String::from)
    .to_vec()
}

// ---------------------------------------------------------------------------
// Development mode, regulatory domain, hostname

/// The development-mode file: gettys start only while it exists (their
/// `ConditionPathExists=`), and the engine reads it as an `EnvironmentFile=`.
/// balenaOS's equivalent is `/var/volatile/development-features`; its
/// `SSHD_OPTS` has no place here, sshd's policy is rendered by
/// `baleen device access`.
pub const DEVELOPMENT_ENV: &str = "run/baleen/development";

/// `/run/baleen/development`, read by systemd (getty conditions, the
/// engine's environment): `Some` in development mode, `None` (remove the
/// file) otherwise. As in balenaOS, development mode opens the engine's
/// **unauthenticated** TCP socket on port 2375.
pub fn development_env(development: bool) -> Option<String> {
    development.then(|| {
        "\
# baleen: development mode (config.json developmentMode). Console logins are
# allowed while this file exists; the container engine listens on TCP 2375.
BALENA_DEVELOPMENT_ARGS=\"-H tcp://0.0.0.0:2375\"
"
        .to_string()
    })
}

/// The command that sets the Wi-Fi regulatory domain from `country`
/// (ISO 3166 alpha-2, upper-cased; `00` is the world domain), run by the
/// applier. `None` — do nothing — when `country` is unset or not a two-letter
/// code. (The config agent passes `00` when the key was removed, so that
/// removing it undoes it; balenaOS keeps the old domain until the next boot.)
pub fn regulatory_domain_argv(country: Option<&str>) -> Option<Vec<String>> {
    let code = country?.trim().to_ascii_uppercase();
    let valid = code == "00" || (code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
    valid.then(|| vec!["iw".into(), "reg".into(), "set".into(), code])
}

/// The hostname file (state-backed in balenaOS).
pub const ETC_HOSTNAME: &str = "etc/hostname";

/// `/etc/hostname`, read by systemd at boot and by avahi: the name and a
/// line break. Written by `baleen-identity.service`.
pub fn etc_hostname(name: &str) -> String {
    format!("{name}\n")
}

// ---------------------------------------------------------------------------
// The restart map

/// Sets the hostname from `config.json` (`/etc/hostname`, the kernel's).
pub const IDENTITY_UNIT: &str = "baleen-identity.service";
/// SSH keys and policy, the development-mode file.
pub const ACCESS_UNIT: &str = "baleen-access.service";
/// Binds the journal to the data partition.
pub const PERSISTENT_LOGS_UNIT: &str = "baleen-persistent-logs.service";
/// mDNS: publishes `<hostname>.local`.
pub const AVAHI_UNIT: &str = "avahi-daemon.service";
/// The host's DNS forwarder.
pub const DNSMASQ_UNIT: &str = "dnsmasq.service";
/// The container engine (balenaOS's unit name), when the image has one.
pub const ENGINE_UNIT: &str = "balena.service";

/// One step a running device takes, after the applier rewrote the rendered
/// files, so that a changed key takes effect without a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `systemctl restart <unit>`: for units that render their own files at
    /// start (the `baleen-*` oneshots) or read theirs only at start.
    Restart(&'static str),
    /// `systemctl try-restart <unit>`: restart only if it is running; a unit
    /// the image does not ship is skipped.
    TryRestart(&'static str),
    /// Console gettys follow the development-mode file: stop every getty,
    /// then restart `getty.target`, whose gettys start again only if their
    /// `ConditionPathExists=` now holds.
    RestartGettys,
    /// `nmcli general reload conf`: the running NetworkManager re-reads
    /// `NetworkManager.conf` and `conf.d` (connectivity check, `[device]`
    /// defaults) without dropping connections — what balenaOS never did
    /// (§8 item 16).
    ReloadNetworkManagerConf,
    /// `udevadm control --reload-rules`, then replay the boot's `add` events
    /// (`systemctl restart systemd-udev-trigger.service`, as balenaOS) so the
    /// rules apply to devices already present. No 60 s sleep first (§8 item 17).
    ReloadUdevRules,
    /// `chronyc reload sources`: chronyd re-reads `/run/baleen/chrony/*.sources`.
    /// Fails harmlessly while chronyd is not running yet; it reads them at start.
    ChronyReloadSources,
    /// Run [`regulatory_domain_argv`] for the new `country` (nothing when it
    /// is unset).
    SetRegulatoryDomain,
    /// Run [`update_ca_certificates_argv`] after [`root_ca_change`] was applied.
    UpdateCaCertificates,
    /// Part of the change only takes effect at the next boot: the applier
    /// logs that and never reboots by itself. (Turning `persistentLogging`
    /// off: the journal stays on the data partition until then, as in
    /// balenaOS.)
    AtNextBoot,
}

impl Action {
    /// The commands this action runs, in order. Empty for
    /// [`Action::SetRegulatoryDomain`] (its argv depends on the value) and
    /// [`Action::AtNextBoot`] (nothing to run).
    pub fn commands(&self) -> Vec<Vec<&'static str>> {
        match *self {
            Action::Restart(unit) => vec![vec!["systemctl", "restart", unit]],
            Action::TryRestart(unit) => vec![vec!["systemctl", "try-restart", unit]],
            Action::RestartGettys => vec![
                vec![
                    "systemctl",
                    "stop",
                    "getty@*.service",
                    "serial-getty@*.service",
                ],
                vec!["systemctl", "restart", "getty.target"],
            ],
            Action::ReloadNetworkManagerConf => vec![vec!["nmcli", "general", "reload", "conf"]],
            Action::ReloadUdevRules => vec![
                vec!["udevadm", "control", "--reload-rules"],
                vec!["systemctl", "restart", "systemd-udev-trigger.service"],
            ],
            Action::ChronyReloadSources => vec![vec!["chronyc", "-n", "reload", "sources"]],
            Action::SetRegulatoryDomain | Action::AtNextBoot => Vec::new(),
            Action::UpdateCaCertificates => {
                vec![vec![
                    "update-ca-certificates",
                    "--fresh",
                    "--localcertsdir",
                    "/usr/share/ca-certificates/balena",
                ]]
            }
        }
    }
}

/// Hostname changes: `/etc/hostname` and the kernel's name, then the mDNS
/// name; dnsmasq as in balenaOS. Containers sharing the host's UTS namespace
/// see the new name at once, so the engine is not restarted (balenaOS
/// restarts it through `Requires=`).
const HOSTNAME_ACTIONS: &[Action] = &[
    Action::Restart(IDENTITY_UNIT),
    Action::Restart(AVAHI_UNIT),
    Action::Restart(DNSMASQ_UNIT),
];
const NM_CONF_ACTIONS: &[Action] = &[Action::ReloadNetworkManagerConf];

/// For each `config.json` key path the device reads, what makes a change of
/// it take effect, in the order to run. A path under a listed key (an
/// `os.udevRules.<name>`) belongs to that key. Keys not listed take effect
/// without action or are read by other software (the supervisor).
///
/// Differences from balenaOS's `unit-conf.json` (§2.2): the connectivity
/// `response` and `apiEndpoint` (the default connectivity URI) reload
/// NetworkManager, which balenaOS never did; `uuid` counts as a hostname
/// change, being the default hostname; `balenaRootCA` updates the trust store
/// rather than restarting a supervisor.
pub const KEY_ACTIONS: &[(&str, &[Action])] = &[
    ("hostname", HOSTNAME_ACTIONS),
    ("uuid", HOSTNAME_ACTIONS),
    ("os.sshKeys", &[Action::Restart(ACCESS_UNIT)]),
    (
        "developmentMode",
        &[
            Action::Restart(ACCESS_UNIT),
            Action::RestartGettys,
            Action::TryRestart(ENGINE_UNIT),
        ],
    ),
    (
        "persistentLogging",
        &[Action::Restart(PERSISTENT_LOGS_UNIT), Action::AtNextBoot],
    ),
    ("country", &[Action::SetRegulatoryDomain]),
    ("dnsServers", &[Action::Restart(DNSMASQ_UNIT)]),
    ("ntpServers", &[Action::ChronyReloadSources]),
    ("apiEndpoint", NM_CONF_ACTIONS),
    ("os.network.connectivity.uri", NM_CONF_ACTIONS),
    ("os.network.connectivity.interval", NM_CONF_ACTIONS),
    ("os.network.connectivity.response", NM_CONF_ACTIONS),
    ("os.network.wifi.randomMacAddressScan", NM_CONF_ACTIONS),
    ("os.udevRules", &[Action::ReloadUdevRules]),
    ("balenaRootCA", &[Action::UpdateCaCertificates]),
];

/// Whether `path` is `key` or lies under it (`key.` + more).
fn is_under(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The actions for one changed key path: the entry of [`KEY_ACTIONS`] for the
/// path or the key it lies under; empty for keys without any.
pub fn actions_for(path: &str) -> &'static [Action] {
    KEY_ACTIONS
        .iter()
        .filter(|(key, _)| is_under(path, key))
        .max_by_key(|(key, _)| key.len())
        .map_or(&[], |(_, actions)| actions)
}

/// The actions for a set of changed paths, each once, in [`KEY_ACTIONS`]
/// order. A path may also be a parent of listed keys (`os.network` when the
/// whole object appeared or went): all keys under it count as changed.
pub fn actions_for_changes<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<Action> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut out = Vec::new();
    for (key, actions) in KEY_ACTIONS {
        if paths.iter().any(|p| is_under(p, key) || is_under(key, p)) {
            for action in *actions {
                if !out.contains(action) {
                    out.push(*action);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
