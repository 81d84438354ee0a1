//! The HTTPS probe against local servers on 127.0.0.1, with certificates made by the test.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use timekeeping::chain::{Answer, HttpsDecision, https_decision};
use timekeeping::https::{ProbeError, probe};

const TIMEOUT: Duration = Duration::from_secs(5);
const DATE: &str = "Tue, 24 Nov 2026 14:24:05 GMT";

fn at(unix_secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix_secs)
}

/// 2026-11-24 14:24:05 UTC.
const DATE_SECS: u64 = 1_795_530_245;
/// rcgen's default validity: 1975-01-01 to 4096-01-01.
const DEFAULT_WINDOW: (u64, u64) = (157_766_400, 67_090_118_400);

/// A CA that signs leaves and writes itself as a trust bundle.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    /// Intermediate certificates the server sends after its leaf.
    chain: Vec<CertificateDer<'static>>,
}

type Validity = ((i32, u8, u8), (i32, u8, u8));

fn set_validity(params: &mut CertificateParams, validity: Option<Validity>) {
    if let Some(((y1, m1, d1), (y2, m2, d2))) = validity {
        params.not_before = rcgen::date_time_ymd(y1, m1, d1);
        params.not_after = rcgen::date_time_ymd(y2, m2, d2);
    }
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    fn new(name: &str) -> Ca {
        let params = ca_params(name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
            chain: Vec::new(),
        }
    }

    /// An intermediate CA signed by this one, whose leaves' servers send it along.
    fn intermediate(&self, validity: Option<Validity>) -> Ca {
        let mut params = ca_params("baleen test intermediate");
        set_validity(&mut params, validity);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
            chain: vec![CertificateDer::from(cert.der().to_vec())],
        }
    }

    fn bundle(&self, dir: &tempfile::TempDir) -> PathBuf {
        let path = dir.path().join("ca-certificates.crt");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// A server configuration with a leaf for `name`, valid between the given dates (rcgen's
    /// default when `None`).
    fn server(&self, name: &str, validity: Option<Validity>) -> Arc<ServerConfig> {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        set_validity(&mut params, validity);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut chain = vec![CertificateDer::from(cert.der().to_vec())];
        chain.extend(self.chain.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// Serves one connection on 127.0.0.1 with `answer`, over TLS when `tls` is given. The thread
/// returns the request it read, or `None` when the connection failed.
fn serve(tls: Option<Arc<ServerConfig>>, answer: &str) -> (u16, JoinHandle<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = answer.to_owned();
    let handle = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().ok()?;
        tcp.set_read_timeout(Some(TIMEOUT)).ok()?;
        match tls {
            None => exchange(&mut tcp, &answer),
            Some(config) => {
                let mut connection = rustls::ServerConnection::new(config).ok()?;
                let mut stream = rustls::Stream::new(&mut connection, &mut tcp);
                let request = exchange(&mut stream, &answer)?;
                stream.conn.send_close_notify();
                stream.flush().ok()?;
                Some(request)
            }
        }
    });
    (port, handle)
}

fn exchange(stream: &mut (impl Read + Write), answer: &str) -> Option<String> {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        request.push(byte[0]);
    }
    stream.write_all(answer.as_bytes()).ok()?;
    stream.flush().ok()?;
    String::from_utf8(request).ok()
}

fn no_content(date: &str) -> String {
    format!("HTTP/1.1 204 No Content\r\nDate: {date}\r\nServer: test\r\n\r\n")
}

#[test]
fn https_204_gives_status_date_and_window() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("baleen test CA");
    let (port, server) = serve(Some(ca.server("127.0.0.1", None)), &no_content(DATE));
    let uri = format!("https://127.0.0.1:{port}/connectivity-check");

    let answer = probe(&uri, &ca.bundle(&dir), TIMEOUT).unwrap();
    assert_eq!(answer.status, 204);
    assert_eq!(answer.date, Some(at(DATE_SECS)));
    assert_eq!(
        answer.cert_validity,
        Some((at(DEFAULT_WINDOW.0), at(DEFAULT_WINDOW.1)))
    );
    assert_eq!(
        server.join().unwrap().unwrap(),
        format!(
            "HEAD /connectivity-check HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             User-Agent: baleen-time\r\nConnection: close\r\n\r\n"
        )
    );
}

#[test]
fn certificates_outside_the_clock_are_accepted_and_their_window_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("baleen test CA");
    let cases = [
        // Expired by the host's clock: 2020-01-01 to 2020-12-31.
        (
            ((2020, 1, 1), (2020, 12, 31)),
            (1_577_836_800, 1_609_372_800),
        ),
        // Not yet valid by the host's clock: 2090-01-01 to 2091-01-01.
        (((2090, 1, 1), (2091, 1, 1)), (3_786_912_000, 3_818_448_000)),
    ];
    for (validity, (not_before, not_after)) in cases {
        let (port, server) = serve(
            Some(ca.server("127.0.0.1", Some(validity))),
            &no_content(DATE),
        );
        let uri = format!("https://127.0.0.1:{port}/");
        let answer = probe(&uri, &ca.bundle(&dir), TIMEOUT).unwrap();
        assert_eq!(answer.status, 204);
        assert_eq!(answer.cert_validity, Some((at(not_before), at(not_after))));
        server.join().unwrap().unwrap();
    }
}

#[test]
fn the_window_covers_the_intermediates_the_server_sends() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new("baleen test CA");
    // Intermediate 2019-06-01 to 2030-01-01, leaf 2018-01-01 to 2031-01-01.
    let intermediate = root.intermediate(Some(((2019, 6, 1), (2030, 1, 1))));
    let leaf = intermediate.server("127.0.0.1", Some(((2018, 1, 1), (2031, 1, 1))));
    let (port, server) = serve(Some(leaf), &no_content(DATE));
    let answer = probe(
        &format!("https://127.0.0.1:{port}/"),
        &root.bundle(&dir),
        TIMEOUT,
    )
    .unwrap();
    // 2019-06-01 00:00:00 and 2030-01-01 00:00:00 UTC.
    assert_eq!(
        answer.cert_validity,
        Some((at(1_559_347_200), at(1_893_456_000)))
    );
    server.join().unwrap().unwrap();
}

#[test]
fn certificates_never_valid_together_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let root = Ca::new("baleen test CA");
    let intermediate = root.intermediate(Some(((2020, 1, 1), (2020, 12, 31))));
    let leaf = intermediate.server("127.0.0.1", Some(((2021, 1, 1), (2022, 1, 1))));
    let (port, server) = serve(Some(leaf), &no_content(DATE));
    let uri = format!("https://127.0.0.1:{port}/");
    let err = probe(&uri, &root.bundle(&dir), TIMEOUT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "checking the certificate of {uri}: the certificates sent are never valid at the same time (latest notBefore 2021-01-01 00:00:00 UTC, \
             earliest notAfter 2020-12-31 00:00:00 UTC)"
        )
    );
    assert_eq!(server.join().unwrap(), None);
}

#[test]
fn a_certificate_for_another_name_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("baleen test CA");
    let (port, server) = serve(Some(ca.server("other.example", None)), &no_content(DATE));
    let uri = format!("https://127.0.0.1:{port}/");

    let err = probe(&uri, &ca.bundle(&dir), TIMEOUT).unwrap_err();
    assert!(matches!(err, ProbeError::Certificate { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("checking the certificate of {uri}: ")),
        "{message}"
    );
    assert!(message.contains("not valid for name"), "{message}");
    assert_eq!(server.join().unwrap(), None);
}

#[test]
fn a_certificate_from_an_unknown_ca_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = Ca::new("baleen test CA");
    let stranger = Ca::new("someone else's CA");
    let (port, server) = serve(Some(stranger.server("127.0.0.1", None)), &no_content(DATE));
    let uri = format!("https://127.0.0.1:{port}/");

    let err = probe(&uri, &trusted.bundle(&dir), TIMEOUT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("checking the certificate of {uri}: it is not issued by a CA of the trust bundle")
    );
    assert_eq!(server.join().unwrap(), None);
}

#[test]
fn plain_http_works_without_a_bundle() {
    let (port, server) = serve(None, &no_content("Sun Nov  6 08:49:37 1994"));
    let uri = format!("http://127.0.0.1:{port}");
    let answer = probe(&uri, "/nonexistent/bundle.crt".as_ref(), TIMEOUT).unwrap();
    assert_eq!(answer.status, 204);
    assert_eq!(answer.date, Some(at(784_111_777)));
    assert_eq!(answer.cert_validity, None);
    assert!(
        server
            .join()
            .unwrap()
            .unwrap()
            .starts_with("HEAD / HTTP/1.1\r\n")
    );
}

#[test]
fn a_redirect_is_an_answer_that_the_decision_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("baleen test CA");
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://portal.example/\r\nDate: {DATE}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let (port, server) = serve(Some(ca.server("127.0.0.1", None)), &redirect);
    let answer = probe(
        &format!("https://127.0.0.1:{port}/"),
        &ca.bundle(&dir),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(answer.status, 302);
    server.join().unwrap().unwrap();

    let decision = https_decision(at(0), Duration::ZERO, at(0), &[answer]);
    assert_eq!(
        decision,
        HttpsDecision::Untrusted(
            "answered 302, not 204: a captive portal or a wrong URI?".to_owned()
        )
    );
}

#[test]
fn two_real_answers_step_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("baleen test CA");
    let bundle = ca.bundle(&dir);
    let mut answers: Vec<Answer> = Vec::new();
    for _ in 0..2 {
        let (port, server) = serve(Some(ca.server("127.0.0.1", None)), &no_content(DATE));
        answers.push(probe(&format!("https://127.0.0.1:{port}/"), &bundle, TIMEOUT).unwrap());
        server.join().unwrap().unwrap();
    }
    let now = at(DATE_SECS - 3600);
    let mono_now = answers[1].received_at_mono;
    let decision = https_decision(now, mono_now, at(DATE_SECS - 86_400), &answers);
    assert_eq!(
        decision,
        HttpsDecision::Step {
            to: at(DATE_SECS),
            offset_secs: 3600.0
        }
    );
}

#[test]
fn missing_and_malformed_dates() {
    let (port, server) = serve(None, "HTTP/1.1 204 No Content\r\n\r\n");
    let answer = probe(
        &format!("http://127.0.0.1:{port}/"),
        "/none".as_ref(),
        TIMEOUT,
    )
    .unwrap();
    assert_eq!((answer.status, answer.date), (204, None));
    server.join().unwrap().unwrap();

    let (port, server) = serve(None, "HTTP/1.1 204 No Content\r\nDate: soon\r\n\r\n");
    let uri = format!("http://127.0.0.1:{port}/");
    let err = probe(&uri, "/none".as_ref(), TIMEOUT).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "reading the answer of {uri}: invalid HTTP Date \"soon\""
        )),
        "{err}"
    );
    server.join().unwrap().unwrap();
}

#[test]
fn a_silent_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let uri = format!("https://127.0.0.1:{port}/");
    let dir = tempfile::tempdir().unwrap();
    let bundle = Ca::new("baleen test CA").bundle(&dir);
    // The kernel completes the connection; nobody ever answers.
    let err = probe(&uri, &bundle, Duration::from_millis(200)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("TLS handshake with {uri}: timed out after 200ms")
    );
    drop(listener);
}

#[test]
fn a_closed_port_is_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri = format!("http://127.0.0.1:{port}/");
    let err = probe(&uri, "/none".as_ref(), TIMEOUT).unwrap_err();
    assert!(matches!(err, ProbeError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("connecting to {uri}: ")),
        "{err}"
    );
}

#[test]
fn a_non_http_answer_is_an_http_error() {
    let (port, server) = serve(None, "SSH-2.0-OpenSSH_9.6\r\n\r\n");
    let uri = format!("http://127.0.0.1:{port}/");
    let err = probe(&uri, "/none".as_ref(), TIMEOUT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("reading the answer of {uri}: not an HTTP/1.x answer: invalid HTTP version")
    );
    server.join().unwrap().unwrap();
}

#[test]
fn trust_bundle_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.crt");
    let err = probe("https://127.0.0.1:1/", &missing, TIMEOUT).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("reading the trust bundle {}: ", missing.display())),
        "{err}"
    );

    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "no certificates here\n").unwrap();
    let err = probe("https://127.0.0.1:1/", &empty, TIMEOUT).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "reading the trust bundle {}: it holds no usable CA certificate",
            empty.display()
        )
    );
}

#[test]
fn bad_uris_are_refused_before_any_connection() {
    let err = probe("ftp://127.0.0.1/", "/none".as_ref(), TIMEOUT).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid time URI \"ftp://127.0.0.1/\": the scheme \"ftp\" is not http or https"
    );
}
