//! The VM tests' servers (time, connectivity check, bundles over TLS), tested from the host
//! side without a VM: each in a fresh network namespace, queried by a client in that namespace.
//! They need root (network namespaces), chrony and curl (`scripts/install-deps.sh`), like the
//! rest of the system suite, and take a few seconds.

use std::fs;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use systests::timeservers::{Answer, DateSpec, HttpsTime, NtpServer, PORTAL_LOCATION};
use vmharness::NetNs;

/// How far the host's clock moved against the monotonic clock while `f` ran: zero but for
/// scheduling noise, unless something stepped the clock.
fn realtime_drift<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let (wall, mono) = (SystemTime::now(), Instant::now());
    let out = f();
    let wall = SystemTime::now()
        .duration_since(wall)
        .map_or_else(|e| -e.duration().as_secs_f64(), |d| d.as_secs_f64());
    (out, wall - mono.elapsed().as_secs_f64())
}

#[test]
fn ntp_server_serves_the_host_clock_and_never_moves_it() {
    systests::require_root("network namespaces");
    let ns = NetNs::create("ntp-selftest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ((ntp, query), drift) = realtime_drift(|| {
        let ntp = NtpServer::start(&ns, dir.path()).unwrap();
        // A one-shot client in the namespace: -Q measures the offset and never sets the clock.
        let conf = dir.path().join("client.conf");
        fs::write(
            &conf,
            format!(
                "server {} iburst\ncmdport 0\nbindcmdaddress /\n",
                ntp.addr()
            ),
        )
        .unwrap();
        let query = ns
            .exec(&[
                &systests::timeservers::chronyd_binary()
                    .unwrap()
                    .display()
                    .to_string(),
                "-Q",
                // As the server: the chrony package is unpacked, not installed, so its
                // `_chrony` user need not exist on the host.
                "-u",
                "root",
                "-t",
                "15",
                "-f",
                &conf.display().to_string(),
            ])
            .unwrap();
        (ntp, query)
    });
    let log = fs::read_to_string(ntp.log()).unwrap();
    assert!(log.contains("Disabled control of system clock"), "{log}");
    let output = format!("{}{}", query.stdout, query.stderr);
    let offset: f64 = output
        .split("System clock wrong by ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!("no offset in the client's output:\n{output}\n--- server\n{log}")
        });
    assert!(offset.abs() < 0.5, "offset {offset} s:\n{output}");
    assert!(drift.abs() < 0.5, "the host's clock moved by {drift} s");
    let pid = ntp.pid();
    ntp.close().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(dir.path().join("chronyd/chronyd.conf").is_file());
    assert!(dir.path().join("chronyd/chronyd.log").is_file());
}

/// A response's status and header fields, as `curl -D -` prints them.
struct Head {
    status: u16,
    fields: Vec<(String, String)>,
}

impl Head {
    fn parse(text: &str) -> Head {
        let mut lines = text.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"));
        let fields = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Head { status, fields }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn date(&self) -> Option<SystemTime> {
        self.get("date")
            .map(|d| httpdate::parse_http_date(d).unwrap())
    }
}

/// `curl` in the namespace, trusting only the test CA; returns the response head and body.
fn curl(ns: &NetNs, https: &HttpsTime, extra: &[&str], uri: &str) -> (Head, String) {
    let ca = https.ca_path().display().to_string();
    let mut argv = vec![
        "curl",
        "-sS",
        "--noproxy",
        "*",
        "--max-time",
        "10",
        "--cacert",
        &ca,
        "-D",
        "/dev/stderr",
    ];
    argv.extend_from_slice(extra);
    argv.push(uri);
    let out = ns.exec(&argv).unwrap();
    (Head::parse(&out.stderr), out.stdout)
}

fn secs_from_now(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::now()) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[test]
fn https_time_answers_as_told_and_logs_every_request() {
    systests::require_root("network namespaces");
    let ns = NetNs::create("https-selftest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        systests::timeservers::server_binary().unwrap(),
        std::path::Path::new(env!("CARGO_BIN_EXE_time-https-server"))
    );
    let https = HttpsTime::start(&ns, dir.path()).unwrap();
    assert_eq!(https.uri_https(), "https://10.0.2.2/connectivity-check");
    assert_eq!(https.uri_http(), "http://10.0.2.2/connectivity-check");
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(https.ca_base64())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), https.ca_pem());

    // The default: 204 with the real time, over HTTPS (the certificate names the address).
    let (head, body) = curl(&ns, &https, &[], &https.uri_https());
    assert_eq!(head.status, 204);
    assert!(secs_from_now(head.date().unwrap()).abs() < 5.0);
    assert_eq!(head.get("connection"), Some("close"));
    assert_eq!(body, "");
    // ... and by the certificate's name.
    let (head, _) = curl(
        &ns,
        &https,
        &["--resolve", "time.test:443:10.0.2.2"],
        "https://time.test/connectivity-check",
    );
    assert_eq!(head.status, 204);

    // An hour behind, as HEAD.
    https.set_answer(Answer {
        status: 204,
        date: DateSpec::Offset(-3600),
    });
    let (head, _) = curl(&ns, &https, &["-I"], &https.uri_https());
    assert_eq!(head.status, 204);
    assert!((secs_from_now(head.date().unwrap()) + 3600.0).abs() < 5.0);

    // A captive portal.
    https.set_answer(Answer {
        status: 302,
        date: DateSpec::Offset(0),
    });
    let (head, body) = curl(&ns, &https, &[], &https.uri_https());
    assert_eq!(head.status, 302);
    assert_eq!(head.get("location"), Some(PORTAL_LOCATION));
    assert!(body.contains(PORTAL_LOCATION), "{body}");

    // A fixed date, over plain HTTP, and no date at all.
    let fixed = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    https.set_answer(Answer {
        status: 200,
        date: DateSpec::Fixed(fixed),
    });
    let (head, body) = curl(&ns, &https, &[], &https.uri_http());
    assert_eq!(head.status, 200);
    assert_eq!(head.get("date"), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
    assert!(body.starts_with("<!DOCTYPE html>"), "{body}");
    https.set_answer(Answer {
        status: 204,
        date: DateSpec::Missing,
    });
    let (head, _) = curl(&ns, &https, &[], &https.uri_https());
    assert_eq!((head.status, head.get("date")), (204, None));

    // A client that does not trust the test CA (only the system's): no request, and the failed
    // handshake is in the server's log.
    let untrusted = ns
        .command("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "10"])
        .arg(https.uri_https())
        .output()
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(60), "{untrusted:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(https.log())
        .unwrap()
        .contains("TLS handshake failed")
    {
        assert!(Instant::now() < deadline, "no handshake failure logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Garbage and an unsupported method.
    let out = ns
        .exec(&[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/10.0.2.2/80; printf 'nonsense\\r\\n\\r\\n' >&3; cat <&3",
        ])
        .unwrap();
    assert!(
        out.stdout.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{}",
        out.stdout
    );
    let (head, _) = curl(&ns, &https, &["-X", "POST"], &https.uri_https());
    assert_eq!(head.status, 405);

    let requests = https.wait_for_requests(8, Duration::from_secs(5)).unwrap();
    let summary: Vec<(&str, &str, &str, u16)> = requests
        .iter()
        .map(|r| {
            (
                r.scheme.as_str(),
                r.method.as_str(),
                r.path.as_str(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("https", "GET", "/connectivity-check", 204),
            ("https", "GET", "/connectivity-check", 204),
            ("https", "HEAD", "/connectivity-check", 204),
            ("https", "GET", "/connectivity-check", 302),
            ("http", "GET", "/connectivity-check", 200),
            ("https", "GET", "/connectivity-check", 204),
            ("http", "", "", 400),
            ("https", "POST", "/connectivity-check", 405),
        ]
    );
    assert!(requests.iter().all(|r| r.peer.starts_with("10.0.2.2:")));
    assert_eq!(requests[4].date_time(), Some(fixed));
    assert_eq!(requests[5].date, None);
    assert!((secs_from_now(requests[2].date_time().unwrap()) + 3600.0).abs() < 60.0);
    assert!(secs_from_now(requests[0].received).abs() < 60.0);
    assert!(requests[6].error.as_deref().unwrap().contains("nonsense"));

    // Waiting for more than arrive times out, saying how many came.
    let e = https
        .wait_for_requests(9, Duration::from_millis(200))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("9 requests to the HTTPS time server (8 so far)"),
        "{e}"
    );
    let pid = https.pid();
    let files = https.dir().to_owned();
    https.close().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    for name in ["ca.pem", "control.json", "requests.jsonl", "server.log"] {
        assert!(files.join(name).is_file(), "{name} kept");
    }
}

#[test]
fn bundle_server_over_tls_serves_ranges_and_drops_on_request() {
    use systests::bundles::{BundleServer, Faults};
    systests::require_root("network namespaces");
    let ns = NetNs::create("bundle-tls-selftest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    fs::create_dir(&www).unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(www.join("b.bin"), &body).unwrap();
    let certs = systests::timeservers::generate_certs(ns.host_addr().parse().unwrap()).unwrap();
    let ca = dir.path().join("ca.pem");
    fs::write(&ca, &certs.ca_pem).unwrap();
    let faults = Faults {
        drop_after: Some(100_000),
        drop_count: Some(1),
    };
    let server = BundleServer::start_tls(&ns, ns.host_addr(), 8443, &www, faults, &certs).unwrap();
    let url = server.url("b.bin");
    assert_eq!(url, format!("https://{}:8443/b.bin", ns.host_addr()));
    let got = dir.path().join("got");
    let curl = |trust: bool, extra: &[&str]| {
        let mut cmd = ns.command("curl");
        cmd.args(["-sS", "--noproxy", "*", "--max-time", "20", "-o"])
            .arg(&got)
            .args(extra);
        if trust {
            cmd.arg("--cacert").arg(&ca);
        }
        cmd.arg(&url).output().unwrap()
    };

    // A client that does not trust the test CA gets nothing.
    let untrusted = curl(false, &[]);
    assert!(!untrusted.status.success(), "{untrusted:?}");
    let said = String::from_utf8_lossy(&untrusted.stderr).to_lowercase();
    assert!(said.contains("certificate"), "{said}");

    // The first answer with a body is cut after 100 000 bytes, without TLS's close_notify; a
    // range request fetches the rest.
    let cut = curl(true, &[]);
    assert!(
        !cut.status.success(),
        "the cut answer looked whole: {cut:?}"
    );
    let head = fs::read(&got).unwrap();
    assert_eq!(head, body[..head.len()], "the cut answer's bytes");
    assert!(head.len() <= 100_000, "{} bytes before the cut", head.len());
    let rest = curl(true, &["-r", &format!("{}-", head.len())]);
    assert!(rest.status.success(), "{rest:?}");
    let mut joined = head;
    joined.extend(fs::read(&got).unwrap());
    assert_eq!(joined, body, "the cut answer and the range make the file");

    // The next whole answer is whole.
    let whole = curl(true, &[]);
    assert!(whole.status.success(), "{whole:?}");
    assert_eq!(fs::read(&got).unwrap(), body);
    let requests = fs::read_to_string(dir.path().join("bundle-https-requests.log")).unwrap();
    assert!(requests.contains("TLS handshake failed"), "{requests}");
    assert!(requests.contains("status=206"), "{requests}");
    assert!(requests.contains("(dropped on purpose)"), "{requests}");
}
