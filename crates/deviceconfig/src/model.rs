//! The typed model of `config.json`, in stages:
//!
//! 1. [`Raw`]: the file as a JSON object. Keys stay in file order, unknown
//!    keys are kept, and keys are addressed by dotted paths
//!    (`os.network.wifi.randomMacAddressScan`).
//! 2. [`validate`]: every key balenaOS reads (behaviour reference §3) is
//!    checked on its own into a [`Config`] of typed values, with a
//!    [`KeyError`] for each bad value (naming the key path, the value and
//!    what was expected) and a [`Warning`] for each key baleen does not know.
//! 3. Each subsystem takes its slice of [`Config`]. [`diff_paths`] tells the
//!    agent which keys changed between two versions of the file, and so what
//!    to apply again.
//!
//! **Per-key isolation.** A bad value is reported and then treated as if the
//! key were missing, so it gets its default (each field of [`Config`] says
//! which). The other keys are still used. In lists (`os.sshKeys`,
//! `dnsServers`, `ntpServers`, `os.udevRules`, `deviceApiKeys`,
//! `installer.target_devices`) each bad entry is reported and dropped, and
//! the good entries are kept.
//!
//! **JSON null means missing** for every key and every map or list entry, as
//! with balenaOS's `jq '.key // default'`. For string keys whose balenaOS
//! default is `""`, an empty string also counts as missing.
//!
//! Where balenaOS has a bug (reference §8), the model follows the documented
//! intent. Where balenaOS's behaviour is odd but deliberate, the model keeps
//! it:
//!
//! * `dnsServers` (§8.13): a missing key or JSON null gives 8.8.8.8; the
//!   strings `"null"` and `""` give no server at all (kept from balenaOS).
//! * `ntpServers` (§8.14) are added to the built-in pools; they do not
//!   replace them (kept).
//! * `os.network.connectivity.uri` (§8.15): `"null"` and `""` turn the check
//!   off. balenaOS writes `uri=null` for the first and uses the default URL
//!   for the second (fixed).
//! * Because keys keep their full dotted path, two keys with the same leaf
//!   name can never collide (§8.18 cannot happen).
//! * Connectivity default: `apiEndpoint` with its trailing `/` removed, then
//!   `/connectivity-check`. balenaOS produces `//connectivity-check` for an
//!   endpoint that ends in `/` (fixed).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

// ---------------------------------------------------------------------------
// Stage 1: the raw file
// ---------------------------------------------------------------------------

/// config.json as a JSON object: keys in file order, every key kept.
///
/// Dotted paths address members of nested objects: `os.sshKeys` is the
/// `sshKeys` member of the `os` object. Paths cannot step into arrays, and
/// keys that contain a dot themselves cannot be addressed. No key the OS reads
/// has a dot in its name; map entries such as `deviceApiKeys` hosts are read
/// through their parent object.
///
/// Values go through serde_json, so [`Raw::to_text`] keeps every value. Two
/// things may be spelled differently: strings are written with serde_json's
/// minimal escaping (`"\u00e9"` becomes `"é"`), and non-integer numbers take
/// their shortest form (`1.50` becomes `1.5`). Integers up to 64 bits are
/// written exactly as they were read. If a key appears twice, the last
/// value wins, as with jq.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Raw(Map<String, Value>);

/// config.json could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{path}:{line}:{column}: not valid JSON: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: must hold a JSON object, found {found}")]
    NotAnObject { path: String, found: &'static str },
}

/// A dotted path that [`Raw::set`] cannot write to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "{path:?} is not a key path: write keys separated by single dots, such as os.network.wifi.randomMacAddressScan"
    )]
    Invalid { path: String },
    #[error("cannot set {path}: {parent} is {found}, not an object (unset {parent} first)")]
    NotAnObject {
        path: String,
        parent: String,
        found: &'static str,
    },
}

impl Raw {
    /// Parses config.json. `path` only names the file in error messages.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Raw, ParseError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            ParseError::Syntax {
                path: path.to_string(),
                line: e.line(),
                column: e.column(),
                message: full.strip_suffix(&position).unwrap_or(&full).to_string(),
            }
        })?;
        match value {
            Value::Object(map) => Ok(Raw(map)),
            other => Err(ParseError::NotAnObject {
                path: path.to_string(),
                found: kind(&other),
            }),
        }
    }

    /// The value at a dotted path, if every part of it exists.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let parts = split_path(path)?;
        let (last, parents) = parts.split_last()?;
        let mut map = &self.0;
        for part in parents {
            map = map.get(*part)?.as_object()?;
        }
        map.get(*last)
    }

    /// Sets the value at a dotted path. Missing objects on the way, and JSON
    /// nulls, are replaced by new empty objects. An existing key keeps its
    /// place and a new key goes last. It is an error to go through a value
    /// that is not an object.
    pub fn set(&mut self, path: &str, value: Value) -> Result<(), PathError> {
        let parts = split_path(path).ok_or_else(|| PathError::Invalid {
            path: path.to_string(),
        })?;
        let Some((last, parents)) = parts.split_last() else {
            return Err(PathError::Invalid {
                path: path.to_string(),
            });
        };
        let mut map = &mut self.0;
        for (i, part) in parents.iter().enumerate() {
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if entry.is_null() {
                *entry = Value::Object(Map::new());
            }
            map = match entry {
                Value::Object(inner) => inner,
                other => {
                    return Err(PathError::NotAnObject {
                        path: path.to_string(),
                        parent: parts[..=i].join("."),
                        found: kind(other),
                    });
                }
            };
        }
        map.insert(last.to_string(), value);
        Ok(())
    }

    /// Removes the value at a dotted path and returns it. Only the leaf is
    /// removed: parent objects stay even if they become empty, as balenaOS's
    /// `jq 'del(.a.b)'` leaves them. The other keys keep their order.
    pub fn unset(&mut self, path: &str) -> Option<Value> {
        let parts = split_path(path)?;
        let (last, parents) = parts.split_last()?;
        let mut map = &mut self.0;
        for part in parents {
            map = map.get_mut(*part)?.as_object_mut()?;
        }
        map.shift_remove(*last)
    }

    /// The file as baleen writes it: pretty-printed with two-space indents,
    /// keys in their existing order, and a final newline.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.0).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }
}

impl From<Map<String, Value>> for Raw {
    fn from(map: Map<String, Value>) -> Raw {
        Raw(map)
    }
}

fn split_path(path: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(parts)
}

/// "a string", "an array" and so on, for messages.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// The keys
// ---------------------------------------------------------------------------

/// A node in the tree of known keys.
enum Node {
    /// A key compared and applied as a whole.
    Leaf,
    /// An object whose members are known keys.
    Branch(&'static [(&'static str, Node)]),
}

use Node::{Branch, Leaf};

const OS_KEYS: &[(&str, Node)] = &[
    (
        "network",
        Branch(&[
            (
                "connectivity",
                Branch(&[("uri", Leaf), ("interval", Leaf), ("response", Leaf)]),
            ),
            ("wifi", Branch(&[("randomMacAddressScan", Leaf)])),
        ]),
    ),
    ("udevRules", Leaf),
    ("sshKeys", Leaf),
    ("fan", Branch(&[("profile", Leaf)])),
    ("power", Branch(&[("mode", Leaf)])),
    ("kernel", Branch(&[("extraFirmwareVol", Leaf)])),
];

const INSTALLER_KEYS: &[(&str, Node)] = &[
    ("secureboot", Leaf),
    ("migrate", Branch(&[("force", Leaf)])),
    ("target_devices", Leaf),
    ("whitelist_pcr2", Leaf),
];

/// Every top-level key baleen knows: the keys of §3, then keys that other
/// balena components read (the supervisor's config.json schema, the keys that
/// balenaCloud and the balena CLI write into a downloaded config.json, and
/// `hostappExtensions` from older balenaOS). baleen does not use the second
/// group, but it does not warn about those keys either.
const TOP_KEYS: &[(&str, Node)] = &[
    ("apiEndpoint", Leaf),
    ("apiKey", Leaf),
    ("deviceApiKey", Leaf),
    ("deviceApiKeys", Leaf),
    ("uuid", Leaf),
    ("applicationId", Leaf),
    ("deviceType", Leaf),
    ("deviceId", Leaf),
    ("registered_at", Leaf),
    ("hostname", Leaf),
    ("persistentLogging", Leaf),
    ("country", Leaf),
    ("dnsServers", Leaf),
    ("ntpServers", Leaf),
    ("balenaRootCA", Leaf),
    ("developmentMode", Leaf),
    ("listenPort", Leaf),
    ("mixpanelToken", Leaf),
    ("deltaEndpoint", Leaf),
    ("os", Branch(OS_KEYS)),
    ("installer", Branch(INSTALLER_KEYS)),
    ("debug", Leaf),
    // Read by other balena components only.
    ("version", Leaf),
    ("appUpdatePollInterval", Leaf),
    ("registryEndpoint", Leaf),
    ("apiTimeout", Leaf),
    ("statePatchInterval", Leaf),
    ("bootstrapRetryDelay", Leaf),
    ("initialDeviceName", Leaf),
    ("supervisorOfflineMode", Leaf),
    ("userId", Leaf),
    ("username", Leaf),
    ("applicationName", Leaf),
    ("vpnPort", Leaf),
    ("vpnEndpoint", Leaf),
    ("pubnubSubscribeKey", Leaf),
    ("pubnubPublishKey", Leaf),
    ("hostappExtensions", Leaf),
];

/// The ISO 3166-1 officially assigned alpha-2 codes (249), sorted.
pub const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// The wireless regulatory database's world domain, which `iw reg set` also
/// accepts as `country`.
pub const WORLD_REGDOMAIN: &str = "00";

/// The DNS server used when `dnsServers` is missing or JSON null.
pub const DEFAULT_DNS: IpAddr = IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8));

/// The connectivity check interval when none is given, in seconds.
pub const DEFAULT_CONNECTIVITY_INTERVAL: u32 = 3600;

/// The SSH key types accepted in `os.sshKeys`.
pub const SSH_KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

// ---------------------------------------------------------------------------
// Stage 2: the typed configuration
// ---------------------------------------------------------------------------

/// Every key the OS reads, as typed values with balenaOS's defaults.
/// "Missing" below covers a missing key, JSON null and, where noted, `""`.
/// A bad value is reported by [`validate`] and treated as missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `apiEndpoint`: an http(s) URL, or None when missing or `""`.
    pub api_endpoint: Option<String>,
    /// `apiKey`: the provisioning key. Once registration is done it is
    /// deleted. Printable ASCII without spaces, up to 256 characters.
    pub api_key: Option<String>,
    /// `deviceApiKey`: same rule as `api_key`.
    pub device_api_key: Option<String>,
    /// `deviceApiKeys`: API host → device API key. os-config keeps one key
    /// for each endpoint here. A bad entry is dropped.
    pub device_api_keys: BTreeMap<String, String>,
    /// `uuid`: 32 lower-case hex digits (62 on devices provisioned by older
    /// supervisors). When it is None, a new one is generated.
    pub uuid: Option<String>,
    /// `applicationId`: a whole number, given as a number or as a string of
    /// digits.
    pub application_id: Option<u64>,
    /// `deviceType`: a device type slug such as `raspberrypi4-64`.
    pub device_type: Option<String>,
    /// `deviceId`: like `application_id`.
    pub device_id: Option<u64>,
    /// `registered_at`: when registration happened, a number or a string
    /// kept as text (seconds from balenaOS's register, milliseconds from the
    /// supervisor). It only matters whether it is present.
    pub registered_at: Option<String>,
    /// `hostname`: one DNS label. When it is None, [`Config::hostname`] falls
    /// back to the uuid.
    pub hostname: Option<String>,
    /// `persistentLogging`: `true` or the string `"true"` (and their false
    /// forms). Default false.
    pub persistent_logging: bool,
    /// `country`: an ISO 3166-1 alpha-2 code, or `"00"`. When it is None,
    /// the driver's regulatory domain stays.
    pub country: Option<String>,
    /// `dnsServers`: see [`DnsServers`].
    pub dns_servers: DnsServers,
    /// `ntpServers`: host names or IP addresses, added to the built-in pools.
    pub ntp_servers: Vec<String>,
    /// `balenaRootCA`: the PEM text, decoded from base64. It holds one or
    /// more certificates.
    pub balena_root_ca: Option<String>,
    /// `developmentMode`: only a JSON boolean. Default false. A string
    /// `"true"` is an error, so development mode stays off.
    pub development_mode: bool,
    /// `listenPort`: the supervisor's port, 1–65535. It may be a number or a
    /// string of digits, because it is passed on as an environment variable.
    pub listen_port: Option<u16>,
    /// `mixpanelToken`: same rule as `api_key`.
    pub mixpanel_token: Option<String>,
    /// `deltaEndpoint`: an http(s) URL.
    pub delta_endpoint: Option<String>,
    /// `os.network.connectivity.*`.
    pub connectivity: Connectivity,
    /// `os.network.wifi.randomMacAddressScan`. When it is None,
    /// NetworkManager's default applies.
    pub random_mac_scan: Option<bool>,
    /// `os.udevRules`: rule name (a plain file name) → rules file text. A
    /// bad entry is dropped.
    pub udev_rules: BTreeMap<String, String>,
    /// `os.sshKeys`: authorized_keys lines, trimmed. A bad entry is dropped.
    pub ssh_keys: Vec<String>,
    /// `os.fan.profile`: a device-specific name such as `quiet` or `cool`.
    pub fan_profile: Option<String>,
    /// `os.power.mode`: a device-specific name such as `low`, `mid` or
    /// `high`.
    pub power_mode: Option<String>,
    /// `os.kernel.extraFirmwareVol`: the name of an engine volume that holds
    /// extra firmware.
    pub extra_firmware_vol: Option<String>,
    /// `installer.*`.
    pub installer: Installer,
    /// `debug`: `"1"` (or `1` or `true`) runs update hooks with `sh -x`.
    pub debug: bool,
}

/// `dnsServers`: the upstream servers for dnsmasq.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DnsServers {
    /// The key is missing or JSON null: [`DEFAULT_DNS`]. A string whose
    /// entries are all invalid also ends up here.
    #[default]
    Default,
    /// The string `"null"` or `""`: no server.
    None,
    /// The valid entries of a space-separated list. Only IP addresses are
    /// accepted: balenaOS writes each entry as a dnsmasq `server=` line, and
    /// that syntax has other forms (`/domain/ip`, `ip#port`, interface
    /// names) which a single plain address cannot be confused with.
    List(Vec<IpAddr>),
}

impl DnsServers {
    /// The servers in effect.
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self {
            DnsServers::Default => vec![DEFAULT_DNS],
            DnsServers::None => Vec::new(),
            DnsServers::List(list) => list.clone(),
        }
    }
}

/// NetworkManager's connectivity check, `os.network.connectivity.*`, with
/// the defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connectivity {
    /// `uri`: the URL that was given. If the key is missing or invalid, the
    /// default is `$apiEndpoint/connectivity-check`, or None when there is
    /// no `apiEndpoint`. `"null"` and `""` give None, which turns the check
    /// off.
    pub uri: Option<String>,
    /// `interval`: seconds, given as a number or a string of digits. The
    /// default is 3600. `0` gives None, which turns the check off.
    pub interval: Option<u32>,
    /// `response`: the expected response body, one line, or None for
    /// NetworkManager's default.
    pub response: Option<String>,
}

impl Default for Connectivity {
    fn default() -> Connectivity {
        Connectivity {
            uri: None,
            interval: Some(DEFAULT_CONNECTIVITY_INTERVAL),
            response: None,
        }
    }
}

impl Connectivity {
    /// Whether NetworkManager should check connectivity at all.
    pub fn is_enabled(&self) -> bool {
        self.uri.is_some() && self.interval.is_some()
    }
}

/// `installer.*`: read by the flasher and the migrator. The key is removed
/// when config.json is copied to the installed disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installer {
    /// `installer.secureboot`: only a JSON boolean.
    pub secureboot: bool,
    /// `installer.migrate.force`.
    pub migrate_force: bool,
    /// `installer.target_devices`: kernel device names or globs. When the
    /// list is empty, the device type's internal device is used.
    pub target_devices: Vec<String>,
    /// `installer.whitelist_pcr2`.
    pub whitelist_pcr2: bool,
}

impl Config {
    /// The hostname the device takes: `hostname`, or else the first 7
    /// characters of `uuid`. None when neither is set.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .or_else(|| self.uuid.as_deref().and_then(|uuid| uuid.get(..7)))
    }
}

/// A key whose value is not usable. Its [`Display`](fmt::Display) reads
/// `<path> = <value>: <what is wrong>; expected <what>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} = {value}: {problem}; expected {expected}")]
pub struct KeyError {
    /// The dotted path. Array entries are written `[1]`, map entries
    /// `["name"]`, and entries of space-separated strings are numbered
    /// like array entries.
    pub path: String,
    /// The value as JSON text, cut to about 80 characters.
    pub value: String,
    pub problem: String,
    pub expected: String,
}

/// Something in config.json that is kept but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A key that baleen does not know: a top-level key, or any key under
    /// `os` or `installer`, where it is most likely a typo.
    UnknownKey { path: String },
}

impl Warning {
    pub fn path(&self) -> &str {
        match self {
            Warning::UnknownKey { path } => path,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownKey { path } => {
                write!(f, "{path} is not a key baleen knows; it is kept as is")
            }
        }
    }
}

/// The result of [`validate`]: every usable value, and what was wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validated {
    pub config: Config,
    pub errors: Vec<KeyError>,
    pub warnings: Vec<Warning>,
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

const EXPECT_URL: &str = "an http:// or https:// URL";
const EXPECT_TOKEN: &str = "a key of printable characters without spaces";
const EXPECT_BOOL: &str = "true or false";
const EXPECT_WHOLE: &str = "a whole number (or a string of digits)";
const EXPECT_OBJECT: &str = "an object";

/// What is wrong with a value, before it is tied to a path.
struct Bad {
    problem: String,
    expected: String,
}

impl Bad {
    fn new(problem: impl Into<String>, expected: &str) -> Bad {
        Bad {
            problem: problem.into(),
            expected: expected.to_string(),
        }
    }

    /// The value has the wrong JSON type.
    fn kind(value: &Value, expected: &str) -> Bad {
        Bad::new(format!("is {}", kind(value)), expected)
    }
}

/// Collects errors and warnings while the keys are read.
#[derive(Default)]
struct Check {
    errors: Vec<KeyError>,
    warnings: Vec<Warning>,
}

impl Check {
    fn error(&mut self, path: &str, value: &Value, bad: Bad) {
        self.errors.push(KeyError {
            path: path.to_string(),
            value: json_text(value),
            problem: bad.problem,
            expected: bad.expected,
        });
    }

    /// Checks one value unless it is missing or null. A bad value is
    /// reported and gives None. `check` returns `Ok(None)` for values that
    /// count as missing (such as `""`).
    fn scalar<T>(
        &mut self,
        path: &str,
        value: Option<&Value>,
        check: impl FnOnce(&Value) -> Result<Option<T>, Bad>,
    ) -> Option<T> {
        let value = present(value)?;
        match check(value) {
            Ok(v) => v,
            Err(bad) => {
                self.error(path, value, bad);
                None
            }
        }
    }

    /// An object member of the tree of known keys. A value that is not an
    /// object is reported, and its members all count as missing.
    fn branch<'a>(
        &mut self,
        path: &str,
        value: Option<&'a Value>,
    ) -> Option<&'a Map<String, Value>> {
        let value = present(value)?;
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.error(path, other, Bad::kind(other, EXPECT_OBJECT));
                None
            }
        }
    }

    /// Checks each entry of a space-separated string (split at spaces and
    /// tabs). A line break stays inside an entry, where it is reported.
    /// Returns None for a missing key, or for a value that is not a string.
    fn words<T>(
        &mut self,
        path: &str,
        value: Option<&Value>,
        expected: &str,
        check: impl Fn(&str) -> Result<T, String>,
        entry_expected: &str,
    ) -> Option<Vec<T>> {
        let value = present(value)?;
        let Value::String(text) = value else {
            self.error(path, value, Bad::kind(value, expected));
            return None;
        };
        let mut out = Vec::new();
        for (i, word) in text
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .enumerate()
        {
            match check(word) {
                Ok(v) => out.push(v),
                Err(problem) => self.error(
                    &format!("{path}[{i}]"),
                    &Value::String(word.to_string()),
                    Bad::new(problem, entry_expected),
                ),
            }
        }
        Some(out)
    }

    /// Warns about keys under `map` that are not in `known`, and goes down
    /// into known objects.
    fn unknown_keys(&mut self, prefix: &str, map: &Map<String, Value>, known: &[(&str, Node)]) {
        for (key, value) in map {
            let path = join(prefix, key);
            match known.iter().find(|(name, _)| name == key) {
                None => self.warnings.push(Warning::UnknownKey { path }),
                Some((_, Branch(children))) => {
                    if let Value::Object(inner) = value {
                        self.unknown_keys(&path, inner, children);
                    }
                }
                Some((_, Leaf)) => {}
            }
        }
    }
}

/// The value unless it is missing or JSON null.
fn present(value: Option<&Value>) -> Option<&Value> {
    value.filter(|v| !v.is_null())
}

fn member<'a>(map: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    map.and_then(|m| m.get(key))
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A value as JSON text for messages, cut to 80 characters.
fn json_text(value: &Value) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() <= 80 {
        return text;
    }
    let mut cut: String = text.chars().take(77).collect();
    cut.push_str("...");
    cut
}

/// Validates every key the OS reads, each on its own. See the module
/// documentation for how bad values are handled.
pub fn validate(raw: &Raw) -> Validated {
    let mut c = Check::default();
    let top = Some(raw.as_map());
    let mut config = Config {
        api_endpoint: c.scalar("apiEndpoint", member(top, "apiEndpoint"), |v| {
            url(v, EXPECT_URL)
        }),
        api_key: c.scalar("apiKey", member(top, "apiKey"), token),
        device_api_key: c.scalar("deviceApiKey", member(top, "deviceApiKey"), token),
        uuid: c.scalar("uuid", member(top, "uuid"), uuid),
        application_id: c.scalar("applicationId", member(top, "applicationId"), |v| {
            whole_number(v, EXPECT_WHOLE)
        }),
        device_type: c.scalar("deviceType", member(top, "deviceType"), device_type),
        device_id: c.scalar("deviceId", member(top, "deviceId"), |v| {
            whole_number(v, EXPECT_WHOLE)
        }),
        registered_at: c.scalar("registered_at", member(top, "registered_at"), registered_at),
        hostname: c.scalar("hostname", member(top, "hostname"), hostname),
        persistent_logging: c
            .scalar(
                "persistentLogging",
                member(top, "persistentLogging"),
                bool_or_string,
            )
            .unwrap_or(false),
        country: c.scalar("country", member(top, "country"), country),
        balena_root_ca: c.scalar("balenaRootCA", member(top, "balenaRootCA"), root_ca),
        development_mode: c
            .scalar("developmentMode", member(top, "developmentMode"), boolean)
            .unwrap_or(false),
        listen_port: c.scalar("listenPort", member(top, "listenPort"), port),
        mixpanel_token: c.scalar("mixpanelToken", member(top, "mixpanelToken"), token),
        delta_endpoint: c.scalar("deltaEndpoint", member(top, "deltaEndpoint"), |v| {
            url(v, EXPECT_URL)
        }),
        debug: c
            .scalar("debug", member(top, "debug"), debug)
            .unwrap_or(false),
        ..Config::default()
    };
    config.device_api_keys = device_api_keys(&mut c, member(top, "deviceApiKeys"));
    config.dns_servers = dns_servers(&mut c, member(top, "dnsServers"));
    config.ntp_servers = c
        .words(
            "ntpServers",
            member(top, "ntpServers"),
            "a string of host names or IP addresses separated by spaces",
            |w| check_host(w).map(|()| w.to_string()),
            "a host name or an IP address",
        )
        .unwrap_or_default();

    let os = c.branch("os", member(top, "os"));
    let network = c.branch("os.network", member(os, "network"));
    let conn = c.branch("os.network.connectivity", member(network, "connectivity"));
    let wifi = c.branch("os.network.wifi", member(network, "wifi"));
    config.connectivity = connectivity(&mut c, conn, config.api_endpoint.as_deref());
    config.random_mac_scan = c.scalar(
        "os.network.wifi.randomMacAddressScan",
        member(wifi, "randomMacAddressScan"),
        |v| {
            v.as_bool()
                .map(Some)
                .ok_or_else(|| Bad::kind(v, "true or false (or null for NetworkManager's default)"))
        },
    );
    config.udev_rules = udev_rules(&mut c, member(os, "udevRules"));
    config.ssh_keys = ssh_keys(&mut c, member(os, "sshKeys"));
    let fan = c.branch("os.fan", member(os, "fan"));
    config.fan_profile = c.scalar("os.fan.profile", member(fan, "profile"), |v| {
        name(v, "a profile name such as \"quiet\" or \"cool\"")
    });
    let power = c.branch("os.power", member(os, "power"));
    config.power_mode = c.scalar("os.power.mode", member(power, "mode"), |v| {
        name(v, "a mode name such as \"low\", \"mid\" or \"high\"")
    });
    let kernel = c.branch("os.kernel", member(os, "kernel"));
    config.extra_firmware_vol = c.scalar(
        "os.kernel.extraFirmwareVol",
        member(kernel, "extraFirmwareVol"),
        volume,
    );

    let installer = c.branch("installer", member(top, "installer"));
    let migrate = c.branch("installer.migrate", member(installer, "migrate"));
    config.installer = Installer {
        secureboot: c
            .scalar(
                "installer.secureboot",
                member(installer, "secureboot"),
                boolean,
            )
            .unwrap_or(false),
        migrate_force: c
            .scalar("installer.migrate.force", member(migrate, "force"), boolean)
            .unwrap_or(false),
        target_devices: c
            .words(
                "installer.target_devices",
                member(installer, "target_devices"),
                "a string of kernel device names or globs separated by spaces",
                |w| check_device_name(w).map(|()| w.to_string()),
                "a kernel device name or glob such as \"mmcblk0\" or \"sd*\"",
            )
            .unwrap_or_default(),
        whitelist_pcr2: c
            .scalar(
                "installer.whitelist_pcr2",
                member(installer, "whitelist_pcr2"),
                boolean,
            )
            .unwrap_or(false),
    };

    c.unknown_keys("", raw.as_map(), TOP_KEYS);
    Validated {
        config,
        errors: c.errors,
        warnings: c.warnings,
    }
}

// --- scalar checks: Ok(None) means "counts as missing" ----------------------

/// A string, with `""` counting as missing.
fn text<'a>(value: &'a Value, expected: &str) -> Result<Option<&'a str>, Bad> {
    match value {
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(Bad::kind(other, expected)),
    }
}

fn boolean(value: &Value) -> Result<Option<bool>, Bad> {
    value
        .as_bool()
        .map(Some)
        .ok_or_else(|| Bad::kind(value, EXPECT_BOOL))
}

/// `persistentLogging`: balenaOS tests the shell value against `true`, so
/// the string `"true"` works too.
fn bool_or_string(value: &Value) -> Result<Option<bool>, Bad> {
    match value {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "true" => Ok(Some(true)),
        Value::String(s) if s == "false" || s.is_empty() => Ok(Some(false)),
        other => Err(Bad::kind(other, EXPECT_BOOL)),
    }
}

fn debug(value: &Value) -> Result<Option<bool>, Bad> {
    const EXPECTED: &str = "\"1\" to trace update hooks, or \"0\"";
    match value {
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "1" => Ok(Some(true)),
        Value::String(s) if s == "0" || s.is_empty() => Ok(Some(false)),
        Value::Number(n) if n.as_u64() == Some(1) => Ok(Some(true)),
        Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(false)),
        Value::String(_) | Value::Number(_) => Err(Bad::new("is not \"1\" or \"0\"", EXPECTED)),
        other => Err(Bad::kind(other, EXPECTED)),
    }
}

/// A whole number, given as a number (also `3600.0`) or a string of digits.
fn whole_number(value: &Value, expected: &str) -> Result<Option<u64>, Bad> {
    match value {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            if n.as_i64().is_some() {
                return Err(Bad::new("is negative", expected));
            }
            match n.as_f64() {
                Some(f) if f < 0.0 => Err(Bad::new("is negative", expected)),
                Some(f) if f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
                _ => Err(Bad::new("is not a whole number", expected)),
            }
        }
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| Bad::new("is too large", expected)),
        Value::String(s) if s.starts_with('-') && s[1..].bytes().all(|b| b.is_ascii_digit()) => {
            Err(Bad::new("is negative", expected))
        }
        Value::String(_) => Err(Bad::new("is not a whole number", expected)),
        other => Err(Bad::kind(other, expected)),
    }
}

fn port(value: &Value) -> Result<Option<u16>, Bad> {
    const EXPECTED: &str = "a port number from 1 to 65535";
    match whole_number(value, EXPECTED)? {
        None => Ok(None),
        Some(n) => match u16::try_from(n) {
            Ok(p) if p > 0 => Ok(Some(p)),
            _ => Err(Bad::new("is out of range", EXPECTED)),
        },
    }
}

fn url(value: &Value, expected: &str) -> Result<Option<String>, Bad> {
    let Some(s) = text(value, expected)? else {
        return Ok(None);
    };
    check_url(s).map_err(|problem| Bad::new(problem, expected))?;
    Ok(Some(s.to_string()))
}

/// An http(s) URL with a host, made only of the characters RFC 3986 allows:
/// no spaces, line breaks, quotes or backslashes.
fn check_url(s: &str) -> Result<(), String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or("is not an http:// or https:// URL")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~:/?#[]@!$&'()*+,;=%".contains(c);
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(format!("contains {c:?}"));
    }
    Ok(())
}

/// API keys and tokens: printable ASCII without spaces, up to 256
/// characters. They end up in HTTP headers and in the VPN's password file.
fn token(value: &Value) -> Result<Option<String>, Bad> {
    let Some(s) = text(value, EXPECT_TOKEN)? else {
        return Ok(None);
    };
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(Bad::new(format!("contains {c:?}"), EXPECT_TOKEN));
    }
    if s.len() > 256 {
        return Err(Bad::new(
            format!("is {} characters long", s.len()),
            EXPECT_TOKEN,
        ));
    }
    Ok(Some(s.to_string()))
}

/// 32 lower-case hex digits, or 62 (uuids made by older supervisors).
fn uuid(value: &Value) -> Result<Option<String>, Bad> {
    const EXPECTED: &str = "32 lower-case hex digits (62 on older devices)";
    let Some(s) = text(value, EXPECTED)? else {
        return Ok(None);
    };
    if let Some(c) = s.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(Bad::new(format!("contains {c:?}"), EXPECTED));
    }
    if s.len() != 32 && s.len() != 62 {
        return Err(Bad::new(
            format!("is {} characters long", s.len()),
            EXPECTED,
        ));
    }
    Ok(Some(s.to_string()))
}

fn device_type(value: &Value) -> Result<Option<String>, Bad> {
    const EXPECTED: &str =
        "a device type slug such as \"raspberrypi4-64\" (lower-case letters, digits, '-' and '_')";
    let Some(s) = text(value, EXPECTED)? else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(Bad::new(format!("contains {c:?}"), EXPECTED));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Bad::new(
            "does not start with a letter or a digit",
            EXPECTED,
        ));
    }
    if s.len() > 64 {
        return Err(Bad::new(
            format!("is {} characters long", s.len()),
            EXPECTED,
        ));
    }
    Ok(Some(s.to_string()))
}

fn registered_at(value: &Value) -> Result<Option<String>, Bad> {
    match value {
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(Bad::kind(other, "a timestamp (a number or a string)")),
    }
}

const EXPECT_HOSTNAME: &str = "one DNS label of 1 to 63 letters, digits and inner hyphens";

fn hostname(value: &Value) -> Result<Option<String>, Bad> {
    let Some(s) = text(value, EXPECT_HOSTNAME)? else {
        return Ok(None);
    };
    check_hostname(s).map_err(|problem| Bad::new(problem, EXPECT_HOSTNAME))?;
    Ok(Some(s.to_string()))
}

/// The `hostname` rule: one DNS label of letters, digits and inner hyphens,
/// 1 to 63 characters, so that `<hostname>.local` resolves over mDNS. The
/// error says what is wrong, such as `contains ' '`.
pub fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!("contains {c:?}"));
    }
    if s.len() > 63 {
        return Err(format!("is {} characters long", s.len()));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("starts or ends with a hyphen".into());
    }
    Ok(())
}

/// A host name (RFC 1123 labels separated by dots, at most 253 characters,
/// with an optional final dot) or an IP address.
fn check_host(s: &str) -> Result<(), String> {
    if s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(format!("contains {c:?}"));
    }
    if s.len() > 253 {
        return Err(format!("is {} characters long", s.len()));
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label".into());
        }
        if label.len() > 63 {
            return Err("has a label longer than 63 characters".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with a hyphen".into());
        }
    }
    Ok(())
}

fn country(value: &Value) -> Result<Option<String>, Bad> {
    const EXPECTED: &str = "an upper-case ISO 3166-1 alpha-2 country code such as \"DE\", or \"00\" for the world regulatory domain";
    let Some(s) = text(value, EXPECTED)? else {
        return Ok(None);
    };
    if s == WORLD_REGDOMAIN || ISO_3166_ALPHA2.binary_search(&s).is_ok() {
        return Ok(Some(s.to_string()));
    }
    let upper = s.to_ascii_uppercase();
    if ISO_3166_ALPHA2.binary_search(&upper.as_str()).is_ok() {
        return Err(Bad::new("is in lower case", EXPECTED));
    }
    Err(Bad::new(
        "is not an assigned ISO 3166-1 alpha-2 code",
        EXPECTED,
    ))
}

fn root_ca(value: &Value) -> Result<Option<String>, Bad> {
    const EXPECTED: &str = "base64 of one or more PEM \"-----BEGIN CERTIFICATE-----\" blocks";
    let Some(s) = text(value, EXPECTED)? else {
        return Ok(None);
    };
    // `base64 -w0` gives one line; wrapped output is accepted too.
    let compact: Vec<u8> = s.bytes().filter(|b| !matches!(b, b'\n' | b'\r')).collect();
    let bytes = decode_base64(&compact).ok_or_else(|| Bad::new("is not base64", EXPECTED))?;
    let pem =
        String::from_utf8(bytes).map_err(|_| Bad::new("does not decode to text", EXPECTED))?;
    check_pem(&pem).map_err(|problem| Bad::new(problem, EXPECTED))?;
    Ok(Some(pem))
}

/// One or more complete `CERTIFICATE` blocks with base64 bodies. Text
/// outside the blocks is allowed, as in any PEM bundle; TLS libraries ignore
/// it.
fn check_pem(pem: &str) -> Result<(), String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut body: Option<String> = None;
    let mut count = 0;
    for line in pem.lines().map(str::trim) {
        match body.as_mut() {
            None if line == BEGIN => body = Some(String::new()),
            None => {}
            Some(_) if line == BEGIN => {
                return Err("has a BEGIN line inside a certificate".into());
            }
            Some(b) if line == END => {
                if b.is_empty() || decode_base64(b.as_bytes()).is_none() {
                    return Err("has a certificate whose body is not base64".into());
                }
                count += 1;
                body = None;
            }
            Some(b) => b.push_str(line),
        }
    }
    if body.is_some() {
        return Err("has a certificate without its END line".into());
    }
    if count == 0 {
        return Err("holds no PEM certificate".into());
    }
    Ok(())
}

/// Fan profiles and power modes: device-specific names.
fn name(value: &Value, expected: &str) -> Result<Option<String>, Bad> {
    let Some(s) = text(value, expected)? else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(Bad::new(format!("contains {c:?}"), expected));
    }
    if s.len() > 64 {
        return Err(Bad::new(
            format!("is {} characters long", s.len()),
            expected,
        ));
    }
    Ok(Some(s.to_string()))
}

/// An engine volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn volume(value: &Value) -> Result<Option<String>, Bad> {
    const EXPECTED: &str =
        "a volume name of letters, digits, '_', '.' and '-', starting with a letter or a digit";
    let Some(s) = text(value, EXPECTED)? else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(Bad::new(format!("contains {c:?}"), EXPECTED));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Bad::new(
            "does not start with a letter or a digit",
            EXPECTED,
        ));
    }
    if s.len() > 255 {
        return Err(Bad::new(
            format!("is {} characters long", s.len()),
            EXPECTED,
        ));
    }
    Ok(Some(s.to_string()))
}

/// A kernel device name or a shell glob over names (`sda`, `mmcblk*`,
/// `nvme[01]n1`), not a path.
fn check_device_name(s: &str) -> Result<(), String> {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '-' | '.' | ':' | '*' | '?' | '[' | ']' | '!')
    };
    match s.chars().find(|c| !allowed(*c)) {
        Some(c) => Err(format!("contains {c:?}")),
        None => Ok(()),
    }
}

// --- keys with entries -------------------------------------------------------

/// A path for a map entry: `os.udevRules["name"]`.
fn entry_path(path: &str, key: &str) -> String {
    format!("{path}[{}]", json_text(&Value::String(key.to_string())))
}

fn device_api_keys(c: &mut Check, value: Option<&Value>) -> BTreeMap<String, String> {
    const PATH: &str = "deviceApiKeys";
    let mut out = BTreeMap::new();
    let Some(value) = present(value) else {
        return out;
    };
    let Value::Object(map) = value else {
        c.error(
            PATH,
            value,
            Bad::kind(value, "an object mapping API hosts to device API keys"),
        );
        return out;
    };
    for (host, key) in map {
        if let Some(key) = c.scalar(&entry_path(PATH, host), Some(key), token) {
            out.insert(host.clone(), key);
        }
    }
    out
}

fn dns_servers(c: &mut Check, value: Option<&Value>) -> DnsServers {
    if let Some(Value::String(s)) = value {
        if s == "null" || s.trim_matches([' ', '\t']).is_empty() {
            return DnsServers::None;
        }
    }
    let list = c.words(
        "dnsServers",
        value,
        "a string of IP addresses separated by spaces, or \"null\" for none",
        |w| {
            w.parse::<IpAddr>()
                .map_err(|_| match w.chars().find(|c| c.is_control()) {
                    Some(c) => format!("contains {c:?}"),
                    None => "is not an IP address".to_string(),
                })
        },
        "an IPv4 or IPv6 address",
    );
    match list {
        Some(list) if !list.is_empty() => DnsServers::List(list),
        _ => DnsServers::Default,
    }
}

fn connectivity(
    c: &mut Check,
    conn: Option<&Map<String, Value>>,
    api_endpoint: Option<&str>,
) -> Connectivity {
    const PATH: &str = "os.network.connectivity";
    // Some(None): turned off; None: missing or invalid.
    let uri: Option<Option<String>> =
        c.scalar(&format!("{PATH}.uri"), member(conn, "uri"), |v| match v {
            Value::String(s) if s.is_empty() || s == "null" => Ok(Some(None)),
            _ => url(
                v,
                "an http:// or https:// URL, or \"null\" to turn the check off",
            )
            .map(|u| u.map(Some)),
        });
    let uri = match uri {
        Some(explicit) => explicit,
        None => api_endpoint.map(|e| format!("{}/connectivity-check", e.trim_end_matches('/'))),
    };
    const INTERVAL: &str = "a whole number of seconds, 0 to turn the check off";
    let interval =
        c.scalar(
            &format!("{PATH}.interval"),
            member(conn, "interval"),
            |v| match whole_number(v, INTERVAL)? {
                None => Ok(None),
                Some(n) => u32::try_from(n)
                    .map(Some)
                    .map_err(|_| Bad::new("is too large", INTERVAL)),
            },
        );
    let interval = match interval {
        Some(0) => None,
        Some(n) => Some(n),
        None => Some(DEFAULT_CONNECTIVITY_INTERVAL),
    };
    let response = c.scalar(&format!("{PATH}.response"), member(conn, "response"), |v| {
        const EXPECTED: &str = "one line of text";
        let Some(s) = text(v, EXPECTED)? else {
            return Ok(None);
        };
        match s.chars().find(|c| c.is_control()) {
            Some(c) => Err(Bad::new(format!("contains {c:?}"), EXPECTED)),
            None => Ok(Some(s.to_string())),
        }
    });
    Connectivity {
        uri,
        interval,
        response,
    }
}

/// A plain file name: not empty, no `/`, no `..`, no leading `.`, no control
/// characters, at most 200 characters. The rule is written to
/// `/etc/udev/rules.d/<name>.rules`.
fn check_rule_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the rule name is empty".into());
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(format!("the rule name contains {c:?}"));
    }
    if name.starts_with('.') {
        return Err("the rule name starts with '.'".into());
    }
    if name.contains("..") {
        return Err("the rule name contains \"..\"".into());
    }
    let len = name.chars().count();
    if len > 200 {
        return Err(format!("the rule name is {len} characters long"));
    }
    Ok(())
}

fn udev_rules(c: &mut Check, value: Option<&Value>) -> BTreeMap<String, String> {
    const PATH: &str = "os.udevRules";
    let mut out = BTreeMap::new();
    let Some(value) = present(value) else {
        return out;
    };
    let Value::Object(map) = value else {
        c.error(
            PATH,
            value,
            Bad::kind(value, "an object mapping rule names to rule text"),
        );
        return out;
    };
    for (name, rule) in map {
        let path = entry_path(PATH, name);
        if let Err(problem) = check_rule_name(name) {
            c.error(
                &path,
                &Value::String(name.clone()),
                Bad::new(
                    problem,
                    "a rule name that is a plain file name (no '/', no \"..\", no leading '.', at most 200 characters)",
                ),
            );
            continue;
        }
        let text = c.scalar(&path, Some(rule), |v| match v {
            Value::String(s) => Ok(Some(s.clone())),
            other => Err(Bad::kind(other, "the rules file text as a string")),
        });
        if let Some(text) = text {
            out.insert(name.clone(), text);
        }
    }
    out
}

const EXPECT_SSH_KEY: &str = "an SSH public key line \"<type> <base64> [comment]\"";

/// The `os.sshKeys` rule for one authorized_keys line:
/// `<type> <base64> [comment]`, with a type from [`SSH_KEY_TYPES`] and key
/// data that is base64 of a key of that type. The error says what is wrong,
/// such as `key data is not base64`.
pub fn check_ssh_key(line: &str) -> Result<(), String> {
    if line.contains(['\n', '\r']) {
        return Err("contains a line break".into());
    }
    let mut words = line.split_whitespace();
    let kind = words.next().ok_or("is empty")?;
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!("has unknown key type {kind:?}"));
    }
    let blob = words.next().ok_or("has no key data")?;
    let data = decode_base64(blob.as_bytes()).ok_or("key data is not base64")?;
    // The key data starts with its type: a 32-bit big-endian length, then
    // the name.
    let inner = data
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| data.get(4..4 + n))
        .and_then(|name| std::str::from_utf8(name).ok());
    match inner {
        Some(inner) if inner == kind => Ok(()),
        Some(inner) => Err(format!("key data is for {inner:?}, not {kind:?}")),
        None => Err("key data is not an SSH public key".into()),
    }
}

fn ssh_keys(c: &mut Check, value: Option<&Value>) -> Vec<String> {
    const PATH: &str = "os.sshKeys";
    let mut out = Vec::new();
    let Some(value) = present(value) else {
        return out;
    };
    let Value::Array(list) = value else {
        c.error(
            PATH,
            value,
            Bad::kind(value, "an array of SSH public key lines"),
        );
        return out;
    };
    for (i, item) in list.iter().enumerate() {
        let key = c.scalar(&format!("{PATH}[{i}]"), Some(item), |v| {
            let Value::String(s) = v else {
                return Err(Bad::kind(v, EXPECT_SSH_KEY));
            };
            let line = s.trim();
            check_ssh_key(line).map_err(|problem| Bad::new(problem, EXPECT_SSH_KEY))?;
            Ok(Some(line.to_string()))
        });
        out.extend(key);
    }
    out
}

/// Strict standard base64 (RFC 4648 §4) with padding. None when the text is
/// not base64.
fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    fn sextet(b: u8) -> Option<u32> {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        Some(u32::from(v))
    }
    if text.len() % 4 != 0 {
        return None;
    }
    let chunks = text.len() / 4;
    let mut out = Vec::with_capacity(chunks * 3);
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut acc = 0u32;
        for b in &chunk[..4 - pad] {
            acc = (acc << 6) | sextet(*b)?;
        }
        acc <<= 6 * pad as u32;
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Changes
// ---------------------------------------------------------------------------

/// The dotted paths whose values differ between two versions of config.json,
/// at the level of the known keys. `os.udevRules` and `os.sshKeys` are
/// compared as a whole; under `os` and `installer`, each known leaf is
/// compared on its own; an unknown key is compared as a whole and reported
/// by its own path. A missing key and JSON null count as equal. A known
/// object that is not an object (such as `"os": 5`) counts as empty, because
/// validation treats it that way. The paths come in file order: the old
/// file's keys first, then keys that only the new file has.
pub fn diff_paths(old: &Raw, new: &Raw) -> Vec<String> {
    let mut out = Vec::new();
    diff_branch(
        "",
        TOP_KEYS,
        Some(old.as_map()),
        Some(new.as_map()),
        &mut out,
    );
    out
}

fn diff_branch(
    prefix: &str,
    known: &[(&str, Node)],
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    out: &mut Vec<String>,
) {
    let empty = Map::new();
    let old = old.unwrap_or(&empty);
    let new = new.unwrap_or(&empty);
    let keys = old
        .keys()
        .chain(new.keys().filter(|k| !old.contains_key(k.as_str())));
    for key in keys {
        let path = join(prefix, key);
        let a = present(old.get(key));
        let b = present(new.get(key));
        match known.iter().find(|(name, _)| name == key) {
            Some((_, Branch(children))) => diff_branch(
                &path,
                children,
                a.and_then(Value::as_object),
                b.and_then(Value::as_object),
                out,
            ),
            _ => {
                if a != b {
                    out.push(path);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests;
