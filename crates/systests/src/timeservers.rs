//! The time servers of a test LAN: an HTTPS "connectivity check" whose `Date` the test controls,
//! and an NTP server serving the host's clock. Both run inside a [`NetNs`] (usually a
//! [`Lan`](crate::lan::Lan)'s), listen on its host address (`10.0.2.2`) and are started and ended
//! by the test.
//!
//! ```no_run
//! use std::time::Duration;
//! use systests::timeservers::{Answer, DateSpec, HttpsTime, NtpServer};
//!
//! let lan = systests::lan::Lan::new("time")?;
//! let scratch = tempfile::tempdir().unwrap();
//! let https = HttpsTime::start(lan.ns(), scratch.path())?;
//! let ntp = NtpServer::start(lan.ns(), scratch.path())?;
//! // config.json: "balenaRootCA": https.ca_base64(), "ntpServers": ntp.addr(),
//! //              "os": {"network": {"connectivity": {"uri": https.uri_https()}}}
//! https.set_answer(Answer { status: 204, date: DateSpec::Offset(-3600) });
//! let seen = https.wait_for_requests(1, Duration::from_secs(60))?;
//! assert_eq!(seen[0].status, 204);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # HTTPS: [`HttpsTime`]
//!
//! [`HttpsTime::start`] generates a test CA and a server certificate (for the host address and
//! the name [`SERVER_NAME`]) with `rcgen`, valid from 1975 to 4096 so that a guest whose clock is
//! years off still verifies it, and runs this package's binary `time-https-server` in the
//! namespace on port 443 (TLS, rustls) and port 80 (plain HTTP). Every GET or HEAD, whatever its
//! path, gets the [`Answer`] in the control file `control.json`, which the server re-reads on each
//! request, so [`HttpsTime::set_answer`] changes the answer without a restart. Each request is
//! appended to `requests.jsonl` as one JSON line ([`Request`]).
//!
//! The binary is found next to the running test executable (see [`server_binary`]): cargo builds
//! a package's binaries for its integration tests, so `cargo test -p systests` has it; for
//! `cargo test -p systests --lib`, run `cargo build -p systests --bins` first.
//!
//! # NTP: [`NtpServer`]
//!
//! Debian's `chronyd` serving its host's clock (`local stratum 3`) to the LAN. The system clock is
//! not namespaced, so the one rule is that this chronyd never adjusts it: it runs with `-x` (no
//! control of the system clock; [`NtpServer::start`] also waits for chronyd to confirm that in
//! its log) and a config without `makestep`, `rtcsync` or sources. It keeps every file (config,
//! pid file, drift file, log) in its own directory and opens no command socket (`cmdport 0`,
//! `bindcmdaddress /`), so it never meets a chronyd the host runs.
//!
//! # Files
//!
//! Both keep their files in a subdirectory of the `dir` given to `start` (`https-time/`,
//! `chronyd/`), and leave them there when they end, for a look after a failure.

use crate::logwait::{Failed, log_tail};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vmharness::{NetNs, NsProcess, fmt_duration, scaled};

/// The DNS name the HTTPS server's certificate holds besides the host address.
pub const SERVER_NAME: &str = "time.test";
/// The path of the connectivity check URIs (the server answers any path alike).
pub const CHECK_PATH: &str = "/connectivity-check";
/// Where a `302` answer sends the client.
pub const PORTAL_LOCATION: &str = "http://portal.test/";
/// The file name of the HTTPS server binary (this package's `src/bin/time-https-server.rs`).
pub const SERVER_BIN: &str = "time-https-server";
/// What the server prints once both of its sockets listen.
pub const LISTENING: &str = "time-https-server: listening on";

const STARTUP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// The last instant an HTTP `Date` can show: 9999-12-31T23:59:59Z.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

/// What starting or using a time server failed with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a process in the namespace failed.
    #[error(transparent)]
    Netns(#[from] vmharness::Error),

    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// A program the server needs is not installed.
    #[error(
        "{program} not found on PATH: install the Debian package {package} (scripts/install-deps.sh)"
    )]
    Missing {
        program: &'static str,
        package: &'static str,
    },

    /// The `time-https-server` binary has not been built.
    #[error(
        "{} not found (looked next to the test executable): build it with \
         `cargo build -p systests --bins` (`cargo test -p systests` builds it for the \
         integration tests, `--lib` alone does not)",
        path.display()
    )]
    ServerBinary { path: PathBuf },

    /// The namespace's host address is not an IPv4 address.
    #[error("the namespace's host address {0:?} is not an IPv4 address")]
    Address(String),

    /// Generating the test CA or server certificate failed.
    #[error("generating the test certificates: {0}")]
    Certificate(#[from] rcgen::Error),

    /// A server exited before it was ready.
    #[error("{what} exited while starting; its log ends:\n{log_tail}")]
    Exited { what: String, log_tail: String },

    /// A server did not get ready, or did not see the requests waited for, in time.
    #[error("timed out after {} waiting for {what}; its log ends:\n{log_tail}", fmt_duration(*waited))]
    Timeout {
        what: String,
        waited: Duration,
        log_tail: String,
    },
}

/// Shorthand for results in this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn require(program: &'static str, package: &'static str) -> Result<()> {
    if subprocess::on_path(program) {
        Ok(())
    } else {
        Err(Error::Missing { program, package })
    }
}

fn host_ipv4(ns: &NetNs) -> Result<Ipv4Addr> {
    ns.host_addr()
        .parse()
        .map_err(|_| Error::Address(ns.host_addr().to_owned()))
}

// ---------------------------------------------------------------------------------------------
// Answers and the control file (pure)
// ---------------------------------------------------------------------------------------------

/// What the HTTPS server answers: a status and a `Date`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status code: `204` (what a connectivity check expects), `200`, `302` (a captive
    /// portal, with `Location: http://portal.test/`), or any other in 200..=599.
    pub status: u16,
    pub date: DateSpec,
}

impl Default for Answer {
    /// `204 No Content` with the host's real time: a well-behaved connectivity check.
    fn default() -> Self {
        Answer {
            status: 204,
            date: DateSpec::Offset(0),
        }
    }
}

/// The `Date` header of an [`Answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSpec {
    /// The host's clock at the time of the request, plus this many seconds (negative: behind).
    Offset(i64),
    /// Always this instant (whole seconds; HTTP dates have no fractions).
    Fixed(SystemTime),
    /// No `Date` header at all.
    Missing,
}

/// The control file's JSON: `{"status":204,"date":{"offset":-60}}`,
/// `{"status":204,"date":{"fixed":1577836800}}`, `{"status":200,"date":"missing"}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlJson {
    status: u16,
    date: DateJson,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum DateJson {
    Offset(i64),
    /// Seconds since the epoch.
    Fixed(i64),
    Missing,
}

impl Answer {
    /// The control file's text for this answer. Pure.
    pub fn to_control_json(&self) -> String {
        let date = match self.date {
            DateSpec::Offset(s) => DateJson::Offset(s),
            DateSpec::Fixed(t) => DateJson::Fixed(unix_seconds(t)),
            DateSpec::Missing => DateJson::Missing,
        };
        let json = ControlJson {
            status: self.status,
            date,
        };
        serde_json::to_string(&json).expect("a control struct serializes") + "\n"
    }

    /// Parses a control file and checks its status. Pure.
    pub fn from_control_json(text: &str) -> Result<Answer, String> {
        let json: ControlJson =
            serde_json::from_str(text).map_err(|e| format!("invalid control file: {e}"))?;
        let date = match json.date {
            DateJson::Offset(s) => DateSpec::Offset(s),
            DateJson::Fixed(s) => DateSpec::Fixed(from_unix_seconds(s)),
            DateJson::Missing => DateSpec::Missing,
        };
        let answer = Answer {
            status: json.status,
            date,
        };
        answer.check_status()?;
        Ok(answer)
    }

    fn check_status(&self) -> Result<(), String> {
        if (200..=599).contains(&self.status) {
            Ok(())
        } else {
            Err(format!(
                "status {} is not a final HTTP status (200..=599)",
                self.status
            ))
        }
    }

    /// Checks what can be checked before a request: the status, and that a fixed date can be
    /// written as an HTTP date (1970 to 9999). Pure.
    pub fn validate(&self) -> Result<(), String> {
        self.check_status()?;
        if let DateSpec::Fixed(t) = self.date {
            http_date(t)?;
        }
        Ok(())
    }

    /// The `Date` header value to send for a request received at `now` (the host's clock), or
    /// `None` for [`DateSpec::Missing`]. Pure.
    pub fn date_header(&self, now: SystemTime) -> Result<Option<String>, String> {
        let at = match self.date {
            DateSpec::Offset(s) if s >= 0 => now.checked_add(Duration::from_secs(s.unsigned_abs())),
            DateSpec::Offset(s) => now.checked_sub(Duration::from_secs(s.unsigned_abs())),
            DateSpec::Fixed(t) => Some(t),
            DateSpec::Missing => return Ok(None),
        };
        let at = at.ok_or_else(|| format!("{:?} from {now:?} overflows", self.date))?;
        http_date(at).map(Some)
    }
}

/// `t` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), or why it cannot be one. Pure.
pub fn http_date(t: SystemTime) -> Result<String, String> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= LAST_HTTP_DATE => Ok(httpdate::fmt_http_date(t)),
        _ => Err(format!(
            "{} s since the epoch cannot be an HTTP date (1970 to 9999)",
            unix_seconds(t)
        )),
    }
}

/// Whole seconds since the epoch, rounded down (negative before it).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                -secs - 1
            } else {
                -secs
            }
        }
    }
}

fn from_unix_seconds(s: i64) -> SystemTime {
    let d = Duration::from_secs(s.unsigned_abs());
    if s >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP (pure): request heads and responses
// ---------------------------------------------------------------------------------------------

/// The request line of an HTTP/1.x request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
}

/// Parses a request head (request line and header fields, up to and without the empty line).
/// Accepts HTTP/1.0 and HTTP/1.1 and ignores the header fields. Pure.
pub fn parse_request_head(head: &[u8]) -> Result<RequestHead, String> {
    let text = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8".to_owned())?;
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {line:?}"));
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphabetic());
    if !token(method) {
        return Err(format!("malformed method in request line {line:?}"));
    }
    if !path.starts_with('/') && !path.starts_with("http") {
        return Err(format!("malformed request target in request line {line:?}"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("unsupported HTTP version in request line {line:?}"));
    }
    Ok(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
    })
}

/// The position just past the empty line ending a request head, if `buf` holds one. Pure.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The reason phrase of the statuses the server sends; others get `Status`.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        511 => "Network Authentication Required",
        _ => "Status",
    }
}

/// A complete response: `status`, `date` as the `Date` header (none if `None`), always
/// `Connection: close`. A 302 carries `Location: http://portal.test/`; a 200 a small HTML page;
/// a 204 no body and no `Content-Length`; any other status a one-line text body. With `head_only`
/// (a HEAD request) the header fields stay and the body goes. Pure.
pub fn render_response(status: u16, date: Option<&str>, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if let Some(date) = date {
        out.push_str(&format!("Date: {date}\r\n"));
    }
    out.push_str("Server: time-https-server\r\nConnection: close\r\n");
    if status == 302 {
        out.push_str(&format!("Location: {PORTAL_LOCATION}\r\n"));
    }
    let body = match status {
        204 => None,
        200 => Some((
            "text/html; charset=utf-8",
            "<!DOCTYPE html>\n<html><head><title>time.test</title></head>\
             <body><p>Connectivity check.</p></body></html>\n"
                .to_owned(),
        )),
        302 => Some((
            "text/html; charset=utf-8",
            format!(
                "<!DOCTYPE html>\n<html><body><p>Log in at \
                 <a href=\"{PORTAL_LOCATION}\">the portal</a>.</p></body></html>\n"
            ),
        )),
        _ => Some((
            "text/plain; charset=utf-8",
            format!("{status} {}\n", reason(status)),
        )),
    };
    match body {
        None => out.push_str("\r\n"),
        Some((content_type, body)) => {
            out.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ));
            if !head_only {
                out.push_str(&body);
            }
        }
    }
    out.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The request log (pure)
// ---------------------------------------------------------------------------------------------

/// One request the HTTPS server answered (or refused), from its request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// When the request head was complete, by the host's clock (milliseconds).
    pub received: SystemTime,
    /// `https` or `http`.
    pub scheme: String,
    /// The client's address and port.
    pub peer: String,
    /// The method; empty for a request whose request line could not be parsed.
    pub method: String,
    /// The request target as sent; empty when unparseable.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// The `Date` header sent, if any.
    pub date: Option<String>,
    /// Why the request was refused (a 400 or 405) or answered with a 500.
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestJson {
    received_unix_ms: u64,
    scheme: String,
    peer: String,
    method: String,
    path: String,
    status: u16,
    date: Option<String>,
    error: Option<String>,
}

impl Request {
    /// The `Date` sent, parsed back.
    pub fn date_time(&self) -> Option<SystemTime> {
        self.date
            .as_deref()
            .and_then(|d| httpdate::parse_http_date(d).ok())
    }

    /// The request log's line for this request, newline included. Pure.
    pub fn to_log_line(&self) -> String {
        let received_unix_ms = self
            .received
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let json = RequestJson {
            received_unix_ms,
            scheme: self.scheme.clone(),
            peer: self.peer.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            status: self.status,
            date: self.date.clone(),
            error: self.error.clone(),
        };
        serde_json::to_string(&json).expect("a request record serializes") + "\n"
    }
}

/// Parses the request log. A last line without its newline is one being written and is left
/// out; any other line that is not a request record is an error. Pure.
pub fn parse_request_log(text: &str) -> Result<Vec<Request>, String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            let json: RequestJson = serde_json::from_str(line)
                .map_err(|e| format!("request log line {}: {e}: {line:?}", i + 1))?;
            Ok(Request {
                received: UNIX_EPOCH + Duration::from_millis(json.received_unix_ms),
                scheme: json.scheme,
                peer: json.peer,
                method: json.method,
                path: json.path,
                status: json.status,
                date: json.date,
                error: json.error,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HttpsTime: the server process
// ---------------------------------------------------------------------------------------------

/// The `time-https-server` binary of this build: next to the running executable, or one
/// directory up when that is cargo's `deps` directory (where test executables live:
/// `target/debug/deps/<test>-<hash>` → `target/debug/time-https-server`).
pub fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io_err("finding the running test executable"))?;
    let path = server_binary_near(&exe);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::ServerBinary { path })
    }
}

/// Where [`server_binary`] looks, for the executable `exe`. Pure.
fn server_binary_near(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    let dir = match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir),
        _ => dir,
    };
    dir.join(SERVER_BIN)
}

/// The test CA and the server certificate it signed, PEM-encoded.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

/// Generates a test CA and a server certificate for `addr` and [`SERVER_NAME`], both valid from
/// 1975 to 4096 (rcgen's defaults), ECDSA P-256.
pub fn generate_certs(addr: IpAddr) -> Result<TestCerts> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "baleen test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![SERVER_NAME.to_owned()])?;
    server.subject_alt_names.push(SanType::IpAddress(addr));
    server
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAME);
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&key, &issuer)?;
    Ok(TestCerts {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: key.serialize_pem(),
    })
}

/// The TLS configuration of a test server (ring, the safe default versions, no client
/// certificates) from the PEM files of its certificate chain and private key: what
/// `time-https-server` and `bundle-http-server` serve with.
pub fn server_tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key from {}", key.display()))?;
    rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("choosing TLS versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("loading the server certificate and key")
}

/// The HTTPS connectivity-check server (and its plain HTTP twin) of a test LAN. Dropping it (or
/// [`HttpsTime::close`]) ends the server; its files stay.
#[derive(Debug)]
pub struct HttpsTime {
    server: NsProcess,
    dir: PathBuf,
    addr: String,
    ca_pem: String,
}

impl HttpsTime {
    /// Generates the certificates into `dir/https-time/`, writes the default [`Answer`] (204,
    /// real time), starts `time-https-server` in `ns` on its host address, ports 443 and 80, and
    /// returns once both listen.
    pub fn start(ns: &NetNs, dir: &Path) -> Result<HttpsTime> {
        let bin = server_binary()?;
        let addr = host_ipv4(ns)?;
        let dir = dir.join("https-time");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let certs = generate_certs(IpAddr::V4(addr))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))
        };
        write("ca.pem", &certs.ca_pem)?;
        write("server.pem", &certs.server_pem)?;
        write("server-key.pem", &certs.server_key_pem)?;
        write_control(&dir, &Answer::default())?;
        let log = dir.join("server.log");
        let path = |name: &str| dir.join(name).display().to_string();
        let argv = [
            bin.display().to_string(),
            "--cert".into(),
            path("server.pem"),
            "--key".into(),
            path("server-key.pem"),
            "--control".into(),
            path("control.json"),
            "--log".into(),
            path("requests.jsonl"),
            "--listen-https".into(),
            format!("{addr}:443"),
            "--listen-http".into(),
            format!("{addr}:80"),
        ];
        let mut server =
            ns.spawn_logged(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &log)?;
        wait_for_log(SERVER_BIN, &log, &mut server, scaled(STARTUP), |text| {
            text.contains(LISTENING)
        })?;
        tracing::info!(netns = %ns.name(), %addr, "HTTPS time server ready");
        Ok(HttpsTime {
            server,
            dir,
            addr: addr.to_string(),
            ca_pem: certs.ca_pem,
        })
    }

    /// The test CA's certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The test CA's PEM, base64-encoded: the form of config.json's `balenaRootCA`.
    pub fn ca_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// The file holding the test CA's PEM (e.g. for `curl --cacert`).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The address the server listens on (the namespace's host address).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `https://10.0.2.2/connectivity-check`.
    pub fn uri_https(&self) -> String {
        format!("https://{}{CHECK_PATH}", self.addr)
    }

    /// `http://10.0.2.2/connectivity-check`.
    pub fn uri_http(&self) -> String {
        format!("http://{}{CHECK_PATH}", self.addr)
    }

    /// Makes the server answer `answer` from the next request on. Panics when the answer is
    /// invalid (a status outside 200..=599, a fixed date outside 1970..9999) or the control file
    /// cannot be written: a test fixture, like [`crate::copy_image`].
    pub fn set_answer(&self, answer: Answer) {
        if let Err(e) = answer.validate() {
            panic!("invalid answer {answer:?}: {e}");
        }
        if let Err(e) = write_control(&self.dir, &answer) {
            panic!("setting the HTTPS time server's answer: {e}");
        }
        tracing::info!(?answer, "HTTPS time server answer set");
    }

    /// The requests logged so far, oldest first: every request head received, including those
    /// refused (400, 405) or failed (500). A failed TLS handshake (e.g. a client that does not
    /// trust the test CA) or a connection closed before a request is only in [`HttpsTime::log`].
    /// Panics when the log cannot be read or holds something else than request records.
    pub fn requests(&self) -> Vec<Request> {
        self.try_requests().unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_requests(&self) -> Result<Vec<Request>> {
        let path = self.request_log();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        parse_request_log(&text).map_err(|e| Error::Io {
            context: format!("reading {}", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// Waits until at least `n` requests are logged, and returns all of them.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<Vec<Request>> {
        let started = Instant::now();
        loop {
            let requests = self.try_requests()?;
            if requests.len() >= n {
                return Ok(requests);
            }
            if started.elapsed() >= timeout {
                return Err(Error::Timeout {
                    what: format!(
                        "{n} requests to the HTTPS time server ({} so far)",
                        requests.len()
                    ),
                    waited: timeout,
                    log_tail: log_tail(&self.log()),
                });
            }
            thread::sleep(POLL);
        }
    }

    /// The server's own log (its stderr: listening, each request, TLS handshake failures).
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The request log, one JSON line per request ([`parse_request_log`]).
    pub fn request_log(&self) -> PathBuf {
        self.dir.join("requests.jsonl")
    }

    /// The directory holding the server's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process ID.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Ends the server, reporting a failure to do so; its files stay.
    pub fn close(self) -> Result<()> {
        Ok(self.server.kill()?)
    }
}

/// Replaces the control file in `dir` atomically (the server may read it at any moment).
fn write_control(dir: &Path, answer: &Answer) -> Result<()> {
    let path = dir.join("control.json");
    let tmp = dir.join("control.json.tmp");
    fs::write(&tmp, answer.to_control_json())
        .map_err(io_err(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, &path).map_err(io_err(format!(
        "renaming {} to {}",
        tmp.display(),
        path.display()
    )))
}

// ---------------------------------------------------------------------------------------------
// NtpServer: chronyd serving the host's clock
// ---------------------------------------------------------------------------------------------

/// chronyd serving the host's clock to the LAN, never adjusting it. Dropping it (or
/// [`NtpServer::close`]) ends chronyd; its files stay.
#[derive(Debug)]
pub struct NtpServer {
    chronyd: NsProcess,
    dir: PathBuf,
    addr: String,
}

impl NtpServer {
    /// Writes the config into `dir/chronyd/`, starts `chronyd -x` in `ns` on its host address,
    /// port 123, and returns once it has confirmed it leaves the system clock alone and its NTP
    /// socket is open.
    pub fn start(ns: &NetNs, dir: &Path) -> Result<NtpServer> {
        let chronyd_bin = chronyd_binary()?;
        let addr = host_ipv4(ns)?;
        let dir = dir.join("chronyd");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let conf = dir.join("chronyd.conf");
        fs::write(&conf, chrony_conf(&dir, addr))
            .map_err(io_err(format!("writing {}", conf.display())))?;
        let log = dir.join("chronyd.log");
        let argv = chronyd_argv(&chronyd_bin, &conf);
        let mut chronyd =
            ns.spawn_logged(&argv.iter().map(String::as_str).collect::<Vec<_>>(), &log)?;
        let pid = chronyd.pid();
        wait_for_log("chronyd", &log, &mut chronyd, scaled(STARTUP), |text| {
            text.contains("Disabled control of system clock")
                && fs::read_to_string(format!("/proc/{pid}/net/udp"))
                    .is_ok_and(|udp| udp_listens(&udp, addr, 123))
        })?;
        tracing::info!(netns = %ns.name(), %addr, "NTP server (chronyd -x) ready");
        Ok(NtpServer {
            chronyd,
            dir,
            addr: addr.to_string(),
        })
    }

    /// The address chronyd serves on (the namespace's host address), e.g. for `ntpServers`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// chronyd's log (`-d`: everything it logs goes to stderr, i.e. here).
    pub fn log(&self) -> PathBuf {
        self.dir.join("chronyd.log")
    }

    /// The directory holding chronyd's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// chronyd's process ID.
    pub fn pid(&self) -> u32 {
        self.chronyd.pid()
    }

    /// Ends chronyd, reporting a failure to do so; its files stay.
    pub fn close(self) -> Result<()> {
        Ok(self.chronyd.kill()?)
    }
}

/// chronyd's command line: foreground with the log on stderr (`-d`), IPv4 only, and `-x`: never
/// adjust the system clock, which the namespace shares with the host. It keeps root (`-u root`)
/// so that it can write its files in a root-owned directory. Pure.
fn chronyd_argv(chronyd: &Path, conf: &Path) -> Vec<String> {
    [chronyd.display().to_string()]
        .into_iter()
        .chain(["-d", "-x", "-4", "-u", "root", "-f"].map(String::from))
        .chain([conf.display().to_string()])
        .collect()
}

/// Where `scripts/install-deps.sh` unpacks Debian's chrony package: unpacked, not installed,
/// because installing it would replace the host's own time daemon (it conflicts with
/// systemd-timesyncd) and start it.
pub const UNPACKED_CHRONYD: &str = "/var/cache/baleen/host-tools/chrony/usr/sbin/chronyd";

/// The chronyd to run: `$BALEEN_CHRONYD`, the unpacked one, or one on `PATH`.
pub fn chronyd_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("BALEEN_CHRONYD") {
        return Ok(PathBuf::from(path));
    }
    if Path::new(UNPACKED_CHRONYD).is_file() {
        return Ok(PathBuf::from(UNPACKED_CHRONYD));
    }
    require("chronyd", "chrony (unpacked by scripts/install-deps.sh)")?;
    Ok(PathBuf::from("chronyd"))
}

/// The config of the LAN's NTP server: serve the local clock at stratum 3 to the /24 of `addr`,
/// on `addr` only; no sources, no clock steps, no RTC; no command socket; files in `dir`. Pure.
pub fn chrony_conf(dir: &Path, addr: Ipv4Addr) -> String {
    let [a, b, c, _] = addr.octets();
    let file = |name: &str| dir.join(name).display().to_string();
    format!(
        "# The test LAN's NTP server (systests::timeservers). Run with -x: never touches the\n\
         # system clock, which the network namespace shares with the host.\n\
         local stratum 3\n\
         allow {a}.{b}.{c}.0/24\n\
         bindaddress {addr}\n\
         port 123\n\
         cmdport 0\n\
         bindcmdaddress /\n\
         pidfile {}\n\
         driftfile {}\n",
        file("chronyd.pid"),
        file("chronyd.drift"),
    )
}

/// Whether `/proc/<pid>/net/udp` text shows a socket bound to `addr:port`. Pure.
fn udp_listens(text: &str, addr: Ipv4Addr, port: u16) -> bool {
    text.lines().skip(1).any(|line| {
        let Some(local) = line.split_whitespace().nth(1) else {
            return false;
        };
        let Some((ip, p)) = local.split_once(':') else {
            return false;
        };
        // The kernel prints the address as the native-endian u32 of its network-order bytes,
        // and the port in host order.
        let ip = u32::from_str_radix(ip, 16).map(|v| Ipv4Addr::from(v.to_ne_bytes()));
        ip == Ok(addr) && u16::from_str_radix(p, 16) == Ok(port)
    })
}

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Waits until `ready(log text)`, failing early when `process` exits.
fn wait_for_log(
    what: &str,
    log: &Path,
    process: &mut NsProcess,
    timeout: Duration,
    ready: impl Fn(&str) -> bool,
) -> Result<()> {
    crate::logwait::wait_for_log(log, process, timeout, ready).map_err(|failed| match failed {
        Failed::Exited(log_tail) => Error::Exited {
            what: what.to_owned(),
            log_tail,
        },
        Failed::TimedOut(log_tail) => Error::Timeout {
            what: format!("{what} to start"),
            waited: timeout,
            log_tail,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn answers_round_trip_through_the_control_file() {
        for answer in [
            Answer::default(),
            Answer {
                status: 302,
                date: DateSpec::Offset(-3600),
            },
            Answer {
                status: 204,
                date: DateSpec::Fixed(at(1_577_836_800)),
            },
            Answer {
                status: 200,
                date: DateSpec::Missing,
            },
        ] {
            let text = answer.to_control_json();
            assert_eq!(Answer::from_control_json(&text), Ok(answer), "{text}");
        }
        assert_eq!(
            Answer::default().to_control_json(),
            "{\"status\":204,\"date\":{\"offset\":0}}\n"
        );
        assert_eq!(
            Answer {
                status: 204,
                date: DateSpec::Fixed(at(1_577_836_800) + Duration::from_millis(900)),
            }
            .to_control_json(),
            "{\"status\":204,\"date\":{\"fixed\":1577836800}}\n"
        );
        assert_eq!(
            Answer {
                status: 200,
                date: DateSpec::Missing
            }
            .to_control_json(),
            "{\"status\":200,\"date\":\"missing\"}\n"
        );
    }

    #[test]
    fn bad_control_files_say_why() {
        let e = Answer::from_control_json("{\"status\":204}").unwrap_err();
        assert!(
            e.starts_with("invalid control file: missing field `date`"),
            "{e}"
        );
        let e = Answer::from_control_json("{\"status\":204,\"date\":{\"later\":1}}").unwrap_err();
        assert!(
            e.starts_with("invalid control file: unknown variant `later`"),
            "{e}"
        );
        assert_eq!(
            Answer::from_control_json("{\"status\":101,\"date\":\"missing\"}"),
            Err("status 101 is not a final HTTP status (200..=599)".into())
        );
        let before_1970 = Answer {
            status: 204,
            date: DateSpec::Fixed(UNIX_EPOCH - Duration::from_secs(1)),
        };
        assert_eq!(
            before_1970.validate(),
            Err("-1 s since the epoch cannot be an HTTP date (1970 to 9999)".into())
        );
        assert_eq!(
            Answer::from_control_json(&before_1970.to_control_json()),
            Ok(before_1970)
        );
    }

    #[test]
    fn date_headers_follow_the_spec() {
        let now = at(1_700_000_000) + Duration::from_millis(999);
        let date = |date| Answer { status: 204, date }.date_header(now);
        assert_eq!(
            date(DateSpec::Offset(0)),
            Ok(Some("Tue, 14 Nov 2023 22:13:20 GMT".into()))
        );
        assert_eq!(
            date(DateSpec::Offset(-86_400)),
            Ok(Some("Mon, 13 Nov 2023 22:13:20 GMT".into()))
        );
        assert_eq!(
            date(DateSpec::Offset(61)),
            Ok(Some("Tue, 14 Nov 2023 22:14:21 GMT".into()))
        );
        assert_eq!(
            date(DateSpec::Fixed(at(0))),
            Ok(Some("Thu, 01 Jan 1970 00:00:00 GMT".into()))
        );
        assert_eq!(date(DateSpec::Missing), Ok(None));
        assert!(date(DateSpec::Offset(-1_800_000_000)).is_err());
        assert!(date(DateSpec::Fixed(at(LAST_HTTP_DATE))).is_ok());
        assert!(date(DateSpec::Fixed(at(LAST_HTTP_DATE + 1))).is_err());
    }

    #[test]
    fn request_heads_are_parsed() {
        assert_eq!(
            parse_request_head(
                b"HEAD /connectivity-check HTTP/1.1\r\nHost: 10.0.2.2\r\nUser-Agent: x\r\n\r\n"
            ),
            Ok(RequestHead {
                method: "HEAD".into(),
                path: "/connectivity-check".into()
            })
        );
        assert_eq!(
            parse_request_head(b"GET http://10.0.2.2/ HTTP/1.0\r\n\r\n").map(|h| h.path),
            Ok("http://10.0.2.2/".into())
        );
        for bad in [
            &b"garbage\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"G3T / HTTP/1.1\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"\xff / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                parse_request_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            parse_request_head(b"garbage\r\n\r\n"),
            Err("malformed request line \"garbage\"".into())
        );
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn responses_are_rendered() {
        let date = Some("Tue, 14 Nov 2023 22:13:20 GMT");
        let text =
            |status, date, head| String::from_utf8(render_response(status, date, head)).unwrap();
        assert_eq!(
            text(204, date, false),
            "HTTP/1.1 204 No Content\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
             Server: time-https-server\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            text(204, None, true),
            "HTTP/1.1 204 No Content\r\nServer: time-https-server\r\nConnection: close\r\n\r\n"
        );
        let found = text(302, date, false);
        assert!(
            found.starts_with(
                "HTTP/1.1 302 Found\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\
                 Server: time-https-server\r\nConnection: close\r\n\
                 Location: http://portal.test/\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: "
            ),
            "{found}"
        );
        assert!(
            found.ends_with("the portal</a>.</p></body></html>\n"),
            "{found}"
        );
        let ok = text(200, date, false);
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(
            head.ends_with(&format!("Content-Length: {}", body.len())),
            "{ok}"
        );
        assert!(body.starts_with("<!DOCTYPE html>"), "{ok}");
        let ok_head = text(200, date, true);
        assert_eq!(ok_head, format!("{head}\r\n\r\n"));
        assert_eq!(
            text(400, None, false),
            "HTTP/1.1 400 Bad Request\r\nServer: time-https-server\r\nConnection: close\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\n\r\n\
             400 Bad Request\n"
        );
        assert!(text(418, None, false).starts_with("HTTP/1.1 418 Status\r\n"));
    }

    #[test]
    fn the_request_log_round_trips_and_skips_a_partial_line() {
        let request = Request {
            received: at(1_700_000_000) + Duration::from_millis(250),
            scheme: "https".into(),
            peer: "10.0.2.15:40000".into(),
            method: "GET".into(),
            path: CHECK_PATH.into(),
            status: 204,
            date: Some("Tue, 14 Nov 2023 22:13:20 GMT".into()),
            error: None,
        };
        let line = request.to_log_line();
        assert_eq!(
            line,
            "{\"received_unix_ms\":1700000000250,\"scheme\":\"https\",\
             \"peer\":\"10.0.2.15:40000\",\"method\":\"GET\",\"path\":\"/connectivity-check\",\
             \"status\":204,\"date\":\"Tue, 14 Nov 2023 22:13:20 GMT\",\"error\":null}\n"
        );
        assert_eq!(request.date_time(), Some(at(1_700_000_000)));
        let bad = Request {
            method: String::new(),
            path: String::new(),
            status: 400,
            date: None,
            error: Some("malformed request line \"x\"".into()),
            ..request.clone()
        };
        let text = format!("{line}{}{}", bad.to_log_line(), &line[..20]);
        assert_eq!(parse_request_log(&text), Ok(vec![request, bad]));
        assert_eq!(parse_request_log(""), Ok(vec![]));
        assert_eq!(parse_request_log("{\"rece"), Ok(vec![]));
        let e = parse_request_log("nonsense\n").unwrap_err();
        assert!(e.starts_with("request log line 1: "), "{e}");
    }

    #[test]
    fn the_server_binary_is_found_beside_the_test_executable() {
        assert_eq!(
            server_binary_near(Path::new("/w/target/debug/deps/timeservers-0123abcd")),
            Path::new("/w/target/debug/time-https-server")
        );
        assert_eq!(
            server_binary_near(Path::new("/w/target/release/examples/x")),
            Path::new("/w/target/release/examples/time-https-server")
        );
        assert_eq!(
            server_binary_near(Path::new("/w/target/debug/baleen")),
            Path::new("/w/target/debug/time-https-server")
        );
        let e = Error::ServerBinary {
            path: "/w/target/debug/time-https-server".into(),
        };
        assert_eq!(
            e.to_string(),
            "/w/target/debug/time-https-server not found (looked next to the test executable): \
             build it with `cargo build -p systests --bins` (`cargo test -p systests` builds it \
             for the integration tests, `--lib` alone does not)"
        );
    }

    #[test]
    fn certificates_name_the_address_and_the_test_name() {
        let certs = generate_certs("10.0.2.2".parse().unwrap()).unwrap();
        assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(
            certs
                .server_pem
                .starts_with("-----BEGIN CERTIFICATE-----\n")
        );
        assert!(
            certs
                .server_key_pem
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert_ne!(certs.ca_pem, certs.server_pem);
    }

    #[test]
    fn chronyd_never_adjusts_the_clock_and_keeps_its_files_in_its_dir() {
        assert_eq!(
            chronyd_argv(Path::new("chronyd"), Path::new("/s/chronyd/chronyd.conf")).join(" "),
            "chronyd -d -x -4 -u root -f /s/chronyd/chronyd.conf"
        );
        let conf = chrony_conf(Path::new("/s/chronyd"), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(
            conf.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            [
                "local stratum 3",
                "allow 10.0.2.0/24",
                "bindaddress 10.0.2.2",
                "port 123",
                "cmdport 0",
                "bindcmdaddress /",
                "pidfile /s/chronyd/chronyd.pid",
                "driftfile /s/chronyd/chronyd.drift",
            ]
        );
        for directive in ["makestep", "rtcsync", "rtcfile", "server", "pool", "peer"] {
            assert!(
                !conf.lines().any(|l| l.starts_with(directive)),
                "{directive} in {conf}"
            );
        }
    }

    #[test]
    fn bound_udp_sockets_are_read_from_proc() {
        // Captured from /proc/<chronyd>/net/udp (x86-64) serving on 10.0.2.2:123.
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when \
                   retrnsmt   uid  timeout inode ref pointer drops\n \
                   5274: 0202000A:007B 00000000:0000 07 00000000:00000000 00:00000000 \
                   00000000     0        0 582256 2 00000000201b7821 0\n";
        let addr = Ipv4Addr::new(10, 0, 2, 2);
        if cfg!(target_endian = "little") {
            assert!(udp_listens(udp, addr, 123));
        }
        assert!(!udp_listens(udp, addr, 124));
        assert!(!udp_listens(udp, Ipv4Addr::new(10, 0, 2, 3), 123));
        assert!(!udp_listens("header only\n", addr, 123));
    }
}
