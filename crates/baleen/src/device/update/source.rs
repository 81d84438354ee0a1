//! Where an update bundle is read from on the device: a local file or an `http://` /
//! `https://` URL, both as one sequential reader.
//!
//! A download streams: nothing is staged on disk or in memory. When the connection drops, or a
//! read times out, before the whole body (as announced by `Content-Length`) has arrived, the
//! reader reconnects with `Range: bytes=<offset>-` and `If-Range`, and carries on where it
//! stopped; the caller sees one uninterrupted stream. HTTPS trusts only the certificates of the
//! device's PEM bundle (which carries a `balenaRootCA` from config.json when one is set).

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{RootCertStore, SupportedCipherSuite};

/// The device's CA bundle.
pub const DEFAULT_TRUST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The longest wait between two resume attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Read buffer of a file source.
const FILE_BUFFER: usize = 256 * 1024;

/// Where a bundle comes from: a local file or an http:// / https:// URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    File(PathBuf),
    Url(String),
}

impl SourceSpec {
    /// An argument starting with `http://` or `https://` (in any case) is a URL; anything else a
    /// path.
    pub fn parse(arg: &str) -> SourceSpec {
        let scheme = |s: &str| {
            arg.get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s))
        };
        if scheme("http://") || scheme("https://") {
            SourceSpec::Url(arg.to_owned())
        } else {
            SourceSpec::File(PathBuf::from(arg))
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::File(path) => write!(f, "{}", path.display()),
            SourceSpec::Url(url) => f.write_str(url),
        }
    }
}

/// How far reading a source has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SourceStats {
    /// Bytes handed to the reader so far.
    pub bytes: u64,
    /// Times a download reconnected to continue after an interruption.
    pub resumes: u32,
    /// The whole size, when known: the file's length or the first response's `Content-Length`.
    pub total: Option<u64>,
}

/// How to open a source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// PEM bundle of the CA certificates trusted for HTTPS.
    pub trust_bundle: PathBuf,
    /// How many times a download may reconnect after an interruption.
    pub max_resumes: u32,
    /// Per-connection connect, read and write timeout.
    pub timeout: Duration,
    /// Wait before the first resume; doubled for each further one, up to 5 s.
    pub retry_delay: Duration,
}

impl Default for SourceOptions {
    fn default() -> SourceOptions {
        SourceOptions {
            trust_bundle: PathBuf::from(DEFAULT_TRUST_BUNDLE),
            max_resumes: 10,
            timeout: Duration::from_secs(60),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// A sequential reader over the bundle bytes.
pub struct Source {
    what: String,
    progress: Progress,
    body: Body,
}

enum Body {
    File(BufReader<File>),
    Http(Box<Download>),
}

impl Source {
    /// Opens the file, or sends the first GET and checks its status. The body is read later,
    /// through [`Read`].
    pub fn open(spec: &SourceSpec, options: &SourceOptions) -> Result<Source> {
        match spec {
            SourceSpec::File(path) => open_file(path),
            SourceSpec::Url(url) => open_url(url, options),
        }
    }

    /// How far reading has got.
    pub fn stats(&self) -> SourceStats {
        self.progress.stats()
    }

    /// A handle on the same counters, which stays valid when the source is moved away (into a
    /// thread that consumes it, say).
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// The file path or URL, for messages.
    pub fn describe(&self) -> String {
        self.what.clone()
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match &mut self.body {
            Body::File(file) => file.read(buf)?,
            Body::Http(download) => download.read(buf)?,
        };
        self.progress.0.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Shared counters of a [`Source`].
#[derive(Debug, Clone)]
pub struct Progress(Arc<Counters>);

#[derive(Debug)]
struct Counters {
    bytes: AtomicU64,
    resumes: AtomicU32,
    total: Option<u64>,
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        Progress(Arc::new(Counters {
            bytes: AtomicU64::new(0),
            resumes: AtomicU32::new(0),
            total,
        }))
    }

    pub fn stats(&self) -> SourceStats {
        SourceStats {
            bytes: self.0.bytes.load(Ordering::Relaxed),
            resumes: self.0.resumes.load(Ordering::Relaxed),
            total: self.0.total,
        }
    }
}

fn open_file(path: &Path) -> Result<Source> {
    let file = File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the size of bundle {}", path.display()))?;
    Ok(Source {
        what: path.display().to_string(),
        progress: Progress::new(meta.is_file().then_some(meta.len())),
        body: Body::File(BufReader::with_capacity(FILE_BUFFER, file)),
    })
}

fn open_url(url: &str, options: &SourceOptions) -> Result<Source> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(options.timeout)
        .timeout_read(options.timeout)
        .timeout_write(options.timeout)
        .tls_connector(Arc::new(ReadAheadTls(tls_config(
            url,
            &options.trust_bundle,
        )?)))
        .build();
    let response = match call(agent.get(url)) {
        Ok(response) if response.status() == 200 => response,
        Ok(response) => bail!("GET {url}: {}", status_line(&response)),
        Err(failure) => bail!(
            "GET {url}: {failure}{}",
            untrusted_hint(&failure, &options.trust_bundle)
        ),
    };
    // A body in chunks has no announced length, whatever Content-Length says.
    let length = match response.header("transfer-encoding") {
        Some(_) => None,
        None => response
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok()),
    };
    // If-Range takes a strong ETag or a date.
    let if_range = response
        .header("etag")
        .filter(|etag| !etag.starts_with("W/"))
        .or_else(|| response.header("last-modified"))
        .map(str::to_owned);
    let progress = Progress::new(length);
    let download = Download {
        agent,
        url: url.to_owned(),
        body: Some(response.into_reader()),
        offset: 0,
        length,
        if_range,
        max_resumes: options.max_resumes,
        retry_delay: options.retry_delay,
        resumes: 0,
        failed: None,
        progress: progress.clone(),
    };
    Ok(Source {
        what: url.to_owned(),
        progress,
        body: Body::Http(Box::new(download)),
    })
}

/// The TLS client configuration: the roots of `bundle`. An `http://` URL does without them when
/// the bundle cannot be read (then a redirect to HTTPS fails), but never falls back to built-in
/// roots.
fn tls_config(url: &str, bundle: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let roots = match trusted_roots(bundle) {
        Ok(roots) => roots,
        Err(e) if !is_https(url) => {
            tracing::debug!("no trusted certificates for {url}: {e:#}");
            RootCertStore::empty()
        }
        Err(e) => return Err(e),
    };
    let mut provider = rustls::crypto::ring::default_provider();
    prefer_cheapest_cipher(&mut provider.cipher_suites, hardware_aes());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Bytes asked of the socket at once under TLS. rustls asks 4 KiB at a time, which made a
/// system call per 4 KiB of the bundle; a read-ahead buffer makes one per 64 KiB (or what has
/// arrived).
const TLS_READ_AHEAD: usize = 64 * 1024;

/// ureq's rustls connector, over a socket read through a [`TLS_READ_AHEAD`] buffer.
struct ReadAheadTls(Arc<rustls::ClientConfig>);

impl ureq::TlsConnector for ReadAheadTls {
    fn connect(
        &self,
        dns_name: &str,
        io: Box<dyn ureq::ReadWrite>,
    ) -> Result<Box<dyn ureq::ReadWrite>, ureq::Error> {
        self.0.connect(dns_name, Box::new(ReadAhead::new(io)))
    }
}

/// A connection whose reads go through a [`TLS_READ_AHEAD`] buffer; writes go straight
/// through.
#[derive(Debug)]
struct ReadAhead(BufReader<Box<dyn ureq::ReadWrite>>);

impl ReadAhead {
    fn new(inner: Box<dyn ureq::ReadWrite>) -> Self {
        ReadAhead(BufReader::with_capacity(TLS_READ_AHEAD, inner))
    }
}

impl Read for ReadAhead {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        // BufReader would fill its buffer first, waiting for the peer.
        if out.is_empty() {
            return Ok(0);
        }
        self.0.read(out)
    }
}

impl io::Write for ReadAhead {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.get_mut().write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.get_mut().flush()
    }
}

impl ureq::ReadWrite for ReadAhead {
    fn socket(&self) -> Option<&std::net::TcpStream> {
        self.0.get_ref().socket()
    }
}

/// Orders `suites` so that the server, if it follows the client's preference (most do), picks
/// the cipher that costs this device the least to decrypt: the whole bundle goes through it.
/// AES-128-GCM first on a CPU with AES instructions; ChaCha20-Poly1305 first on one without
/// (a Raspberry Pi 3 or 4, where software AES is several times slower), as BoringSSL and Go
/// do; AES-256-GCM after both. TLS 1.3 suites stay ahead of TLS 1.2 ones.
fn prefer_cheapest_cipher(suites: &mut [SupportedCipherSuite], hardware_aes: bool) {
    use rustls::CipherSuite as S;
    suites.sort_by_key(|suite| {
        let bulk = match suite.suite() {
            S::TLS13_AES_128_GCM_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => u8::from(!hardware_aes),
            S::TLS13_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => u8::from(hardware_aes),
            _ => 2,
        };
        (matches!(suite, SupportedCipherSuite::Tls12(_)), bulk)
    });
}

/// Whether the CPU has the instructions AES-GCM needs to run fast: AES rounds and carry-less
/// multiplication.
fn hardware_aes() -> bool {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// What to do about a server certificate the device does not trust; empty for other failures.
fn untrusted_hint(failure: &Failure, bundle: &Path) -> String {
    match failure {
        Failure::Transport(text) if text.contains("invalid peer certificate") => format!(
            "; the device trusts only the CAs in {}: if this server's CA is yours, put it in \
             config.json's balenaRootCA (the PEM, base64-encoded)",
            bundle.display()
        ),
        _ => String::new(),
    }
}

fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

fn trusted_roots(bundle: &Path) -> Result<RootCertStore> {
    let certs = CertificateDer::pem_file_iter(bundle)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading trusted certificates from {}", bundle.display()))?;
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("no usable CA certificate in {}", bundle.display());
    }
    Ok(roots)
}

/// Why a request brought no response to read.
#[derive(Debug)]
enum Failure {
    /// An answer with a status ureq counts as an error (4xx, 5xx): code and status line.
    Status(u16, String),
    /// No answer: connecting, TLS, or the response head failed.
    Transport(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(_, line) | Failure::Transport(line) => f.write_str(line),
        }
    }
}

fn call(request: ureq::Request) -> Result<ureq::Response, Failure> {
    match request.call() {
        Ok(response) => Ok(response),
        Err(ureq::Error::Status(code, response)) => {
            Err(Failure::Status(code, status_line(&response)))
        }
        Err(ureq::Error::Transport(transport)) => {
            // ureq's own Display repeats the URL, which our messages already name.
            let mut text = transport.kind().to_string();
            if let Some(message) = transport.message() {
                text = format!("{text}: {message}");
            }
            let mut cause = std::error::Error::source(&transport);
            while let Some(e) = cause {
                text = format!("{text}: {e}");
                cause = e.source();
            }
            Err(Failure::Transport(text))
        }
    }
}

fn status_line(response: &ureq::Response) -> String {
    format!("{} {}", response.status(), response.status_text())
}

/// The body of a GET, reconnecting with a range request after an interruption.
struct Download {
    agent: ureq::Agent,
    url: String,
    /// The body being read; `None` only between an interruption and the resume.
    body: Option<Box<dyn Read + Send + Sync>>,
    /// Body bytes read so far.
    offset: u64,
    /// The first response's `Content-Length`: without it there is no resuming.
    length: Option<u64>,
    /// The first response's strong ETag, or else its Last-Modified.
    if_range: Option<String>,
    max_resumes: u32,
    retry_delay: Duration,
    resumes: u32,
    /// Set once the download has failed for good; repeated on every later read.
    failed: Option<String>,
    progress: Progress,
}

/// What a failed resume attempt means.
enum Retry {
    /// Worth another attempt (a transport error or a server error): why it failed.
    Again(String),
    /// Not worth another: the whole error message.
    Stop(String),
}

impl Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(message) = &self.failed {
            return Err(io::Error::other(message.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(length) = self.length else {
                return self.read_unsized(buf);
            };
            let left = length - self.offset;
            if left == 0 {
                return Ok(0);
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let interruption = match self.body.as_mut() {
                None => io::Error::other("no connection"),
                Some(body) => match body.read(&mut buf[..want]) {
                    Ok(0) => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the response ended before all bytes were read",
                    ),
                    Ok(n) => {
                        self.offset += n as u64;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => e,
                },
            };
            self.body = None;
            if let Err(message) = self.resume(length, interruption.to_string()) {
                return Err(self.fail(message));
            }
        }
    }

    /// Reads a body of unknown length: to its end, and an interruption is the end of it all.
    fn read_unsized(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(body) = self.body.as_mut() else {
            return Ok(0);
        };
        match body.read(buf) {
            Ok(n) => {
                self.offset += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(format!(
                "GET {}: reading at byte {} (no Content-Length, so no resuming): {e}",
                self.url, self.offset
            ))),
        }
    }

    fn fail(&mut self, message: String) -> io::Error {
        self.failed = Some(message.clone());
        io::Error::other(message)
    }

    /// Reconnects after `why` interrupted the body at `self.offset`, with a back-off, until a
    /// range request succeeds, one fails for good, or the resumes run out.
    fn resume(&mut self, length: u64, why: String) -> Result<(), String> {
        let mut last = why;
        loop {
            if self.resumes >= self.max_resumes {
                return Err(format!(
                    "GET {}: stopped at byte {} of {length} after {} resumes: {last}",
                    self.url, self.offset, self.resumes
                ));
            }
            self.resumes += 1;
            self.progress
                .0
                .resumes
                .store(self.resumes, Ordering::Relaxed);
            let delay = retry_delay(self.retry_delay, self.resumes);
            tracing::warn!(
                "download of {} interrupted at byte {} of {length} ({last}); resume {} of {} in {delay:?}",
                self.url,
                self.offset,
                self.resumes,
                self.max_resumes,
            );
            thread::sleep(delay);
            match self.request_rest(length) {
                Ok(body) => {
                    self.body = Some(body);
                    return Ok(());
                }
                Err(Retry::Again(why)) => last = why,
                Err(Retry::Stop(message)) => return Err(message),
            }
        }
    }

    /// Asks for the bytes from `self.offset` on, of the same version of the file.
    fn request_rest(&self, length: u64) -> Result<Box<dyn Read + Send + Sync>, Retry> {
        let (url, offset) = (&self.url, self.offset);
        let mut request = self
            .agent
            .get(url)
            .set("Range", &format!("bytes={offset}-"));
        if let Some(validator) = &self.if_range {
            request = request.set("If-Range", validator);
        }
        let changed = || {
            Retry::Stop(format!(
                "GET {url}: the bundle changed on the server while downloading (or the server \
                 does not support ranges); start again"
            ))
        };
        let response = match call(request) {
            Ok(response) => response,
            Err(Failure::Transport(why)) => return Err(Retry::Again(why)),
            Err(Failure::Status(code, line)) if code >= 500 || code == 408 || code == 429 => {
                return Err(Retry::Again(line));
            }
            Err(Failure::Status(416, _)) => return Err(changed()),
            Err(Failure::Status(_, line)) => {
                return Err(Retry::Stop(format!("GET {url} from byte {offset}: {line}")));
            }
        };
        match response.status() {
            206 => {}
            200 => return Err(changed()),
            _ => {
                return Err(Retry::Stop(format!(
                    "GET {url} from byte {offset}: {}",
                    status_line(&response)
                )));
            }
        }
        let content_range = response.header("content-range").unwrap_or_default();
        match parse_content_range(content_range) {
            Some(range) if range.start == offset && range.total == Some(length) => {
                Ok(response.into_reader())
            }
            Some(range) if range.total != Some(length) => Err(changed()),
            _ => Err(Retry::Stop(format!(
                "GET {url}: asked for bytes {offset}- of {length}, got Content-Range \
                 {content_range:?}"
            ))),
        }
    }
}

/// The wait before resume number `n` (from 1): `first`, doubled each time, up to 5 s.
fn retry_delay(first: Duration, n: u32) -> Duration {
    first
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(MAX_RETRY_DELAY)
}

/// A `Content-Range: bytes START-END/TOTAL` value (TOTAL may be `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    end: u64,
    total: Option<u64>,
}

fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let range = ContentRange {
        start: start.trim().parse().ok()?,
        end: end.trim().parse().ok()?,
        total: match total.trim() {
            "*" => None,
            t => Some(t.parse().ok()?),
        },
    };
    let in_total = range.total.is_none_or(|total| range.end < total);
    (range.start <= range.end && in_total).then_some(range)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    const LEN: usize = 200_000;

    /// A connection that hands out at most `step` bytes per read and counts the reads.
    #[derive(Debug)]
    struct Trickle {
        data: io::Cursor<Vec<u8>>,
        step: usize,
        reads: Arc<AtomicUsize>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Read for Trickle {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let n = out.len().min(self.step);
            self.data.read(&mut out[..n])
        }
    }

    impl Write for Trickle {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.written.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl ureq::ReadWrite for Trickle {
        fn socket(&self) -> Option<&TcpStream> {
            None
        }
    }

    #[test]
    fn tls_reads_ahead_of_rustls_small_reads() {
        let data = pattern();
        let reads = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(Mutex::new(Vec::new()));
        let mut conn = ReadAhead::new(Box::new(Trickle {
            data: io::Cursor::new(data.clone()),
            step: usize::MAX,
            reads: reads.clone(),
            written: written.clone(),
        }));
        // rustls's 4 KiB reads: one read of the connection per 64 KiB.
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        assert_eq!(conn.read(&mut []).unwrap(), 0);
        loop {
            match conn.read(&mut piece).unwrap() {
                0 => break,
                n => got.extend_from_slice(&piece[..n]),
            }
        }
        assert_eq!(got, data);
        assert_eq!(
            reads.load(Ordering::Relaxed),
            LEN.div_ceil(TLS_READ_AHEAD) + 1
        );
        conn.write_all(b"hello").unwrap();
        assert_eq!(written.lock().unwrap().as_slice(), b"hello");

        // A connection that returns little at a time, and reads larger than the buffer.
        let mut conn = ReadAhead::new(Box::new(Trickle {
            data: io::Cursor::new(data.clone()),
            step: 1000,
            reads: Arc::new(AtomicUsize::new(0)),
            written,
        }));
        let mut got = Vec::new();
        let mut big = vec![0u8; TLS_READ_AHEAD + 1];
        let mut small = [0u8; 333];
        for turn in 0.. {
            let n = if turn % 2 == 0 {
                conn.read(&mut big).unwrap()
            } else {
                conn.read(&mut small).unwrap()
            };
            if n == 0 {
                break;
            }
            got.extend_from_slice(if turn % 2 == 0 {
                &big[..n]
            } else {
                &small[..n]
            });
        }
        assert_eq!(got, data);
    }

    #[test]
    fn the_cheapest_cipher_for_the_cpu_comes_first() {
        use rustls::CipherSuite as S;
        let order = |hardware_aes| {
            let mut suites = rustls::crypto::ring::default_provider().cipher_suites;
            prefer_cheapest_cipher(&mut suites, hardware_aes);
            suites.iter().map(|s| s.suite()).collect::<Vec<_>>()
        };
        let with_aes = order(true);
        assert_eq!(
            with_aes[..3],
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_256_GCM_SHA384
            ]
        );
        let without = order(false);
        assert_eq!(
            without[..3],
            [
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384
            ]
        );
        // TLS 1.2 after 1.3, in the same order of ciphers; nothing added or dropped.
        for (order, first12) in [
            (with_aes, S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            (without, S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
        ] {
            assert_eq!(order[3], first12);
            assert_eq!(
                order.len(),
                rustls::crypto::ring::default_provider().cipher_suites.len()
            );
        }
    }

    fn pattern() -> Vec<u8> {
        (0..LEN)
            .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
            .collect()
    }

    /// What the test server does wrong, on purpose.
    #[derive(Debug, Clone, Default)]
    struct Behaviour {
        /// For the first `drop_count` requests, send only `drop_after` body bytes, then ...
        drop_after: usize,
        drop_count: usize,
        /// ... keep the connection open this long (the client times out) before closing it.
        stall: Option<Duration>,
        /// Answer range requests with the whole body and a 200.
        ignore_range: bool,
        /// Send no Content-Length: the body ends when the connection closes.
        no_length: bool,
    }

    /// The `Range` and `If-Range` header values of a request.
    type Seen = (Option<String>, Option<String>);

    struct TestServer {
        base: String,
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    /// An HTTP/1.1 server on 127.0.0.1 serving `pattern()` at `/bundle` (404 elsewhere), one
    /// thread per connection, one request per connection.
    fn serve(behaviour: Behaviour) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (data, count) = (Arc::new(pattern()), Arc::new(AtomicUsize::new(0)));
        let server_seen = seen.clone();
        thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (data, count, seen) = (data.clone(), count.clone(), server_seen.clone());
                let behaviour = behaviour.clone();
                thread::spawn(move || {
                    let _ = answer(tcp, &data, &behaviour, &count, &seen);
                });
            }
        });
        TestServer { base, seen }
    }

    fn answer(
        mut tcp: TcpStream,
        data: &[u8],
        behaviour: &Behaviour,
        count: &AtomicUsize,
        seen: &Mutex<Vec<Seen>>,
    ) -> io::Result<()> {
        let mut head = Vec::new();
        let mut byte = [0];
        while !head.ends_with(b"\r\n\r\n") {
            if tcp.read(&mut byte)? == 0 {
                return Ok(());
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let range = header("range");
        seen.lock()
            .unwrap()
            .push((range.clone(), header("if-range")));
        let n = count.fetch_add(1, Ordering::SeqCst);
        if path != "/bundle" {
            let body = "not here\n";
            write!(
                tcp,
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return tcp.shutdown(Shutdown::Write);
        }
        let start = range
            .filter(|_| !behaviour.ignore_range)
            .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok());
        let mut out = match start {
            Some(start) => format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{}\r\n",
                data.len() - 1,
                data.len()
            ),
            None => "HTTP/1.1 200 OK\r\n".to_owned(),
        };
        let mut body = &data[start.unwrap_or(0)..];
        out += "ETag: \"v1\"\r\nConnection: close\r\n";
        if !behaviour.no_length {
            out += &format!("Content-Length: {}\r\n", body.len());
        }
        out += "\r\n";
        let cut = n < behaviour.drop_count;
        if cut {
            body = &body[..behaviour.drop_after.min(body.len())];
        }
        tcp.write_all(out.as_bytes())?;
        tcp.write_all(body)?;
        tcp.flush()?;
        if let (true, Some(stall)) = (cut, behaviour.stall) {
            thread::sleep(stall);
        }
        tcp.shutdown(Shutdown::Write)
    }

    fn options() -> SourceOptions {
        SourceOptions {
            trust_bundle: PathBuf::from("/nonexistent/ca-certificates.crt"),
            max_resumes: 10,
            timeout: Duration::from_secs(5),
            retry_delay: Duration::from_millis(5),
        }
    }

    fn open(server: &TestServer, path: &str, options: &SourceOptions) -> Result<Source> {
        Source::open(
            &SourceSpec::parse(&format!("{}{path}", server.base)),
            options,
        )
    }

    fn read_all(source: &mut Source) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        source.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn source_is_send() {
        fn send<T: Send>() {}
        send::<Source>();
        send::<Progress>();
    }

    #[test]
    fn spec_parse() {
        assert_eq!(
            SourceSpec::parse("http://10.0.2.2:8080/next.bundle"),
            SourceSpec::Url("http://10.0.2.2:8080/next.bundle".into())
        );
        assert_eq!(
            SourceSpec::parse("HTTPS://example.com/b"),
            SourceSpec::Url("HTTPS://example.com/b".into())
        );
        assert_eq!(
            SourceSpec::parse("/data/next.bundle"),
            SourceSpec::File("/data/next.bundle".into())
        );
        assert_eq!(SourceSpec::parse("http"), SourceSpec::File("http".into()));
        assert_eq!(
            SourceSpec::parse("ftp://x/y"),
            SourceSpec::File("ftp://x/y".into())
        );
    }

    #[test]
    fn content_range_parse() {
        let range = |start, end, total| Some(ContentRange { start, end, total });
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            range(100, 199, Some(200))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), range(0, 9, None));
        assert_eq!(parse_content_range("bytes 100-199/150"), None);
        assert_eq!(parse_content_range("bytes 9-1/20"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn retry_delay_doubles_up_to_five_seconds() {
        let first = Duration::from_millis(500);
        let delays: Vec<_> = (1..=6).map(|n| retry_delay(first, n)).collect();
        let ms = |ms| Duration::from_millis(ms);
        assert_eq!(
            delays,
            [ms(500), ms(1000), ms(2000), ms(4000), ms(5000), ms(5000)]
        );
        assert_eq!(retry_delay(first, u32::MAX), ms(5000));
    }

    #[test]
    fn url_full_read() {
        let server = serve(Behaviour::default());
        let mut source = open(&server, "/bundle", &options()).unwrap();
        assert_eq!(source.describe(), format!("{}/bundle", server.base));
        assert!(read_all(&mut source).unwrap() == pattern());
        let stats = SourceStats {
            bytes: LEN as u64,
            resumes: 0,
            total: Some(LEN as u64),
        };
        assert_eq!(source.stats(), stats);
        assert_eq!(*server.seen.lock().unwrap(), [(None, None)]);
    }

    #[test]
    fn url_resumes_after_dropped_connections() {
        let server = serve(Behaviour {
            drop_after: 50_000,
            drop_count: 3,
            ..Behaviour::default()
        });
        let mut source = open(&server, "/bundle", &options()).unwrap();
        let progress = source.progress();
        assert!(read_all(&mut source).unwrap() == pattern());
        assert_eq!(progress.stats().resumes, 3);
        assert_eq!(progress.stats().bytes, LEN as u64);
        let resumed = |from: &str| (Some(format!("bytes={from}-")), Some("\"v1\"".to_owned()));
        assert_eq!(
            *server.seen.lock().unwrap(),
            [
                (None, None),
                resumed("50000"),
                resumed("100000"),
                resumed("150000"),
            ]
        );
    }

    #[test]
    fn url_resumes_after_read_timeout() {
        let server = serve(Behaviour {
            drop_after: 70_000,
            drop_count: 1,
            stall: Some(Duration::from_secs(3)),
            ..Behaviour::default()
        });
        let options = SourceOptions {
            timeout: Duration::from_millis(200),
            ..options()
        };
        let mut source = open(&server, "/bundle", &options).unwrap();
        assert!(read_all(&mut source).unwrap() == pattern());
        assert_eq!(source.stats().resumes, 1);
    }

    #[test]
    fn url_gives_up_after_max_resumes() {
        let server = serve(Behaviour {
            drop_after: 1000,
            drop_count: 100,
            ..Behaviour::default()
        });
        let options = SourceOptions {
            max_resumes: 2,
            ..options()
        };
        let mut source = open(&server, "/bundle", &options).unwrap();
        let err = read_all(&mut source).unwrap_err().to_string();
        let expected = format!(
            "GET {}/bundle: stopped at byte 3000 of {LEN} after 2 resumes: ",
            server.base
        );
        assert!(err.starts_with(&expected), "{err}");
        assert_eq!(source.stats().resumes, 2);
        assert_eq!(source.stats().bytes, 3000);
        // The failure sticks.
        let again = source.read(&mut [0; 16]).unwrap_err().to_string();
        assert_eq!(again, err);
    }

    #[test]
    fn url_200_to_a_range_request_means_changed() {
        let server = serve(Behaviour {
            drop_after: 1000,
            drop_count: 1,
            ignore_range: true,
            ..Behaviour::default()
        });
        let mut source = open(&server, "/bundle", &options()).unwrap();
        let err = read_all(&mut source).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "GET {}/bundle: the bundle changed on the server while downloading (or the \
                 server does not support ranges); start again",
                server.base
            )
        );
    }

    #[test]
    fn url_error_status() {
        let server = serve(Behaviour::default());
        let err = open(&server, "/next.bundle", &options()).err().unwrap();
        assert_eq!(
            format!("{err:#}"),
            format!("GET {}/next.bundle: 404 Not Found", server.base)
        );
    }

    #[test]
    fn url_connection_refused() {
        // Bind and close, so nothing listens on the port.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/bundle");
        let err = Source::open(&SourceSpec::parse(&url), &options())
            .err()
            .unwrap();
        let err = format!("{err:#}");
        assert!(
            err.starts_with(&format!("GET {url}: Connection Failed")),
            "{err}"
        );
    }

    #[test]
    fn url_without_length_reads_to_the_end() {
        let server = serve(Behaviour {
            no_length: true,
            ..Behaviour::default()
        });
        let mut source = open(&server, "/bundle", &options()).unwrap();
        assert!(read_all(&mut source).unwrap() == pattern());
        assert_eq!(source.stats().total, None);
        assert_eq!(source.stats().bytes, LEN as u64);
    }

    #[test]
    fn https_needs_the_trust_bundle() {
        let spec = SourceSpec::parse("https://127.0.0.1:9/next.bundle");
        let err = Source::open(&spec, &options()).err().unwrap();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("reading trusted certificates from /nonexistent/ca-certificates.crt: "),
            "{err}"
        );
    }

    #[test]
    fn an_untrusted_server_certificate_points_at_balena_root_ca() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        let untrusted = Failure::Transport(
            "Connection Failed: tls connection init failed: invalid peer certificate: \
             UnknownIssuer"
                .into(),
        );
        let hint = untrusted_hint(&untrusted, bundle);
        assert!(
            hint.contains("/etc/ssl/certs/ca-certificates.crt") && hint.contains("balenaRootCA"),
            "{hint}"
        );
        let refused = Failure::Transport("Connection Failed: Connection refused".into());
        assert_eq!(untrusted_hint(&refused, bundle), "");
        assert_eq!(
            untrusted_hint(&Failure::Status(404, "404 Not Found".into()), bundle),
            ""
        );
    }

    #[test]
    fn file_source() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&pattern()).unwrap();
        let spec = SourceSpec::parse(file.path().to_str().unwrap());
        let mut source = Source::open(&spec, &options()).unwrap();
        assert_eq!(source.describe(), file.path().display().to_string());
        assert_eq!(source.stats().total, Some(LEN as u64));
        assert!(read_all(&mut source).unwrap() == pattern());
        assert_eq!(source.stats().bytes, LEN as u64);
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("next.bundle");
        let err = Source::open(&SourceSpec::File(path.clone()), &options())
            .err()
            .unwrap();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "opening bundle {}: No such file or directory (os error 2)",
                path.display()
            )
        );
    }
}
