//! The probe of the connectivity URI: one `HEAD` request, answered with a status and a `Date`.
//!
//! # Why the certificate is checked without the clock
//!
//! The probe runs precisely when the device clock may be wrong (a new device, a dead RTC
//! battery, months in a drawer), so a certificate's validity period cannot be checked against
//! it. balenaOS gives up on TLS verification entirely (`curl -k`), which lets anyone on the path
//! set the clock. The probe instead verifies everything except the time:
//!
//! * the chain must lead to a CA of the trust bundle, with good signatures, and the certificate
//!   must be valid for the URI's host name or IP address (webpki, as for any TLS client);
//! * validity is checked at the latest `notBefore` of the certificates the server sent, which
//!   is inside their common validity window if there is one (if there is none, the certificate
//!   is rejected), and that window `[latest notBefore, earliest notAfter]` is returned in
//!   [`Answer::cert_validity`];
//! * the handshake signature is checked with the crypto provider's algorithms, proving the
//!   server holds the certificate's key.
//!
//! [`crate::chain::https_decision`] then rejects any `Date` outside that window or before the
//! build time, and steps the clock only when two answers agree. An attacker who controls the
//! network therefore needs a certificate for that name, issued by a trusted CA, together with
//! its private key (for example an expired certificate whose key leaked), and even then can
//! only move the clock inside that certificate's validity window, never below the build time,
//! and must answer consistently twice. Certificates that expired before the image was built are
//! useless to them. Revocation is not checked (there is no trustworthy time to check it at).
//!
//! Plain `http://` URIs are supported, as in balenaOS, but give no such protection.
//!
//! The timeout bounds connecting, the handshake, sending and reading; resolving a DNS name
//! uses the system resolver and its own timeouts.

mod response;
mod uri;
mod verifier;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::chain::Answer;
use response::{ReadError, read_head};
use uri::Target;
use verifier::WindowVerifier;

/// Why a probe produced no answer. Every message names the URI (or the trust bundle).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URI is not an `http://` or `https://` URI the probe can use.
    #[error("invalid time URI {uri:?}: {problem}")]
    Uri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The trust bundle cannot be read or holds no CA certificate.
    #[error("reading the trust bundle {}: {problem}", path.display())]
    TrustBundle {
        /// The bundle's path.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The host name does not resolve.
    #[error("resolving the host of {uri}: {source}")]
    Resolve {
        /// The URI.
        uri: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No address of the host accepted a connection.
    #[error("connecting to {uri}: {source}")]
    Connect {
        /// The URI.
        uri: String,
        /// The error of the last address tried.
        source: io::Error,
    },
    /// The timeout passed.
    #[error("{stage} {uri}: timed out after {timeout:?}")]
    Timeout {
        /// The URI.
        uri: String,
        /// What was being done: `connecting to`, `TLS handshake with`, `sending the request
        /// to`, `reading the answer of`.
        stage: &'static str,
        /// The probe's timeout.
        timeout: Duration,
    },
    /// The server's certificate was rejected: unknown CA, wrong name, bad signature, bad
    /// encoding, no common validity window.
    #[error("checking the certificate of {uri}: {}", certificate_problem(source))]
    Certificate {
        /// The URI.
        uri: String,
        /// rustls' error.
        source: rustls::Error,
    },
    /// TLS failed for another reason (protocol, alert from the server, handshake signature).
    #[error("TLS handshake with {uri}: {source}")]
    Tls {
        /// The URI.
        uri: String,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The connection failed while sending or reading.
    #[error("{stage} {uri}: {source}")]
    Io {
        /// The URI.
        uri: String,
        /// What was being done.
        stage: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The answer is not an HTTP/1.x answer, or its `Date` header is malformed.
    #[error("reading the answer of {uri}: {problem}")]
    Http {
        /// The URI.
        uri: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Sends `HEAD <path> HTTP/1.1` to `uri` (`http://` or `https://`, host name or IP literal,
/// optional port) and returns the status, the `Date` header and, for `https`, the certificate
/// validity window (see the module documentation). `trust_bundle` is a PEM file of CA
/// certificates such as `/etc/ssl/certs/ca-certificates.crt`; it is read only for `https`.
///
/// Any status is an answer, including redirects: judging it is
/// [`crate::chain::https_decision`]'s job. A malformed `Date` header is an error; a missing
/// one is `date: None`.
pub fn probe(uri: &str, trust_bundle: &Path, timeout: Duration) -> Result<Answer, ProbeError> {
    let target = Target::parse(uri).map_err(|problem| ProbeError::Uri {
        uri: uri.to_owned(),
        problem,
    })?;
    let tls = if target.tls {
        Some(tls_client(&target, trust_bundle, uri)?)
    } else {
        None
    };
    let fail = Failure { uri, timeout };
    let deadline = Instant::now() + timeout;
    let mut stream = DeadlineStream {
        tcp: connect(&target, deadline, &fail)?,
        deadline,
    };
    let request = target.request();

    let (head, cert_validity) = match tls {
        None => {
            send(&mut stream, &request, &fail)?;
            (read(&mut stream, &fail)?, None)
        }
        Some((config, server_name, verifier)) => {
            let mut connection =
                ClientConnection::new(config, server_name).map_err(|source| fail.tls(source))?;
            while connection.is_handshaking() {
                connection
                    .complete_io(&mut stream)
                    .map_err(|e| fail.io(e, "TLS handshake with"))?;
            }
            let window = verifier.verified_window().ok_or_else(|| {
                fail.tls(rustls::Error::General(
                    "the server certificate was not verified".into(),
                ))
            })?;
            let mut tls_stream = rustls::Stream::new(&mut connection, &mut stream);
            send(&mut tls_stream, &request, &fail)?;
            (read(&mut tls_stream, &fail)?, Some(window))
        }
    };
    Ok(Answer {
        status: head.status,
        date: head.date,
        received_at_mono: crate::monotonic_now(),
        cert_validity,
    })
}

/// rustls prints certificate errors with `Debug`; say the common ones in words.
fn certificate_problem(error: &rustls::Error) -> String {
    use rustls::CertificateError as E;
    match error {
        rustls::Error::InvalidCertificate(E::UnknownIssuer) => {
            "it is not issued by a CA of the trust bundle".to_owned()
        }
        rustls::Error::InvalidCertificate(E::BadSignature) => {
            "a signature in its chain is invalid".to_owned()
        }
        rustls::Error::InvalidCertificate(E::BadEncoding) => "it is malformed".to_owned(),
        rustls::Error::InvalidCertificate(E::Other(other)) => other.0.to_string(),
        other => other.to_string(),
    }
}

type TlsClient = (Arc<ClientConfig>, ServerName<'static>, Arc<WindowVerifier>);

/// The client configuration for one probe: the trust bundle, the window verifier, ring.
fn tls_client(target: &Target, trust_bundle: &Path, uri: &str) -> Result<TlsClient, ProbeError> {
    let bundle_error = |problem: String| ProbeError::TrustBundle {
        path: trust_bundle.to_owned(),
        problem,
    };
    let pem = std::fs::read(trust_bundle).map_err(|e| bundle_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bundle_error(format!("invalid PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bundle_error("it holds no usable CA certificate".to_owned()));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| bundle_error(e.to_string()))?;
    let verifier = Arc::new(WindowVerifier::new(webpki));
    let tls_error = |source| ProbeError::Tls {
        uri: uri.to_owned(),
        source,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    // Every handshake must go through the verifier, so that the window is known.
    config.resumption = Resumption::disabled();

    let server_name = ServerName::try_from(target.host.as_str())
        .map_err(|e| ProbeError::Uri {
            uri: uri.to_owned(),
            problem: format!("{:?} is not a valid TLS server name: {e}", target.host),
        })?
        .to_owned();
    Ok((Arc::new(config), server_name, verifier))
}

/// Connects to the first address of the host that answers before the deadline.
fn connect(target: &Target, deadline: Instant, fail: &Failure) -> Result<TcpStream, ProbeError> {
    let addresses: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|source| ProbeError::Resolve {
            uri: fail.uri.to_owned(),
            source,
        })?
        .collect();
    let mut last_error = io::Error::other("the host has no address");
    for address in addresses {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail.timeout("connecting to"));
        }
        match TcpStream::connect_timeout(&address, left) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last_error = e,
        }
    }
    match last_error.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Err(fail.timeout("connecting to")),
        _ => Err(ProbeError::Connect {
            uri: fail.uri.to_owned(),
            source: last_error,
        }),
    }
}

fn send(stream: &mut impl Write, request: &str, fail: &Failure) -> Result<(), ProbeError> {
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| fail.io(e, "sending the request to"))
}

fn read(stream: &mut impl Read, fail: &Failure) -> Result<response::Head, ProbeError> {
    read_head(stream).map_err(|e| match e {
        ReadError::Io(e) => fail.io(e, "reading the answer of"),
        ReadError::Http(problem) => ProbeError::Http {
            uri: fail.uri.to_owned(),
            problem,
        },
    })
}

/// Turns I/O errors into [`ProbeError`]s naming the URI.
struct Failure<'a> {
    uri: &'a str,
    timeout: Duration,
}

impl Failure<'_> {
    fn timeout(&self, stage: &'static str) -> ProbeError {
        ProbeError::Timeout {
            uri: self.uri.to_owned(),
            stage,
            timeout: self.timeout,
        }
    }

    fn tls(&self, source: rustls::Error) -> ProbeError {
        match source {
            rustls::Error::InvalidCertificate(_) => ProbeError::Certificate {
                uri: self.uri.to_owned(),
                source,
            },
            source => ProbeError::Tls {
                uri: self.uri.to_owned(),
                source,
            },
        }
    }

    /// rustls reports its errors inside `io::Error`s.
    fn io(&self, e: io::Error, stage: &'static str) -> ProbeError {
        if matches!(
            e.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ) {
            return self.timeout(stage);
        }
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return self.tls(tls.clone());
        }
        ProbeError::Io {
            uri: self.uri.to_owned(),
            stage,
            source: e,
        }
    }
}

/// A TCP stream whose reads and writes fail once the deadline has passed.
struct DeadlineStream {
    tcp: TcpStream,
    deadline: Instant,
}

impl DeadlineStream {
    fn time_left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the probe timed out",
            ));
        }
        Ok(left)
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.time_left()?))?;
        self.tcp.read(buf)
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.time_left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}
