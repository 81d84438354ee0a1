//! The test LAN's HTTPS connectivity-check server: answers every GET and HEAD, on TLS and plain
//! HTTP, with the status and `Date` of a control file it re-reads on each request, and appends
//! each request to a JSON-lines log. Started by `systests::timeservers::HttpsTime`.
//!
//! ```text
//! time-https-server --cert server.pem --key server-key.pem --control control.json \
//!     --log requests.jsonl --listen-https 10.0.2.2:443 --listen-http 10.0.2.2:80
//! ```
//!
//! One thread per connection, one request per connection (`Connection: close`). A request that
//! cannot be parsed gets a 400, another method than GET or HEAD a 405, an unreadable control
//! file a 500; all are logged. What it does goes to stderr; exit code 1 when it cannot start.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use systests::timeservers::{
    Answer, LISTENING, Request, head_end, parse_request_head, render_response, server_tls_config,
};

const USAGE: &str = "usage: time-https-server --cert PEM --key PEM --control FILE --log FILE \
                     [--listen-https ADDR:PORT] [--listen-http ADDR:PORT]";
/// How long a client may take to send its request head.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 * 1024;

struct Args {
    cert: PathBuf,
    key: PathBuf,
    control: PathBuf,
    log: PathBuf,
    https: Option<SocketAddr>,
    http: Option<SocketAddr>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let (mut cert, mut key, mut control, mut log, mut https, mut http) =
        (None, None, None, None, None, None);
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let addr = || -> Result<SocketAddr> {
            value
                .parse()
                .with_context(|| format!("{flag} {value:?}: not an ADDR:PORT"))
        };
        match flag.as_str() {
            "--cert" => cert = Some(PathBuf::from(&value)),
            "--key" => key = Some(PathBuf::from(&value)),
            "--control" => control = Some(PathBuf::from(&value)),
            "--log" => log = Some(PathBuf::from(&value)),
            "--listen-https" => https = Some(addr()?),
            "--listen-http" => http = Some(addr()?),
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    let need =
        |v: Option<PathBuf>, flag: &str| v.with_context(|| format!("{flag} is missing\n{USAGE}"));
    let args = Args {
        cert: need(cert, "--cert")?,
        key: need(key, "--key")?,
        control: need(control, "--control")?,
        log: need(log, "--log")?,
        https,
        http,
    };
    if args.https.is_none() && args.http.is_none() {
        bail!("nothing to listen on: give --listen-https, --listen-http or both\n{USAGE}");
    }
    Ok(args)
}

/// What every connection handler shares.
struct Server {
    control: PathBuf,
    log: Mutex<File>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("time-https-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let tls = Arc::new(server_tls_config(&args.cert, &args.key)?);
    let log = File::options()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening request log {}", args.log.display()))?;
    let server = Arc::new(Server {
        control: args.control.clone(),
        log: Mutex::new(log),
    });
    let bind =
        |addr: SocketAddr| TcpListener::bind(addr).with_context(|| format!("listening on {addr}"));
    let https = args.https.map(bind).transpose()?;
    let http = args.http.map(bind).transpose()?;
    let mut listening = Vec::new();
    let mut loops = Vec::new();
    if let Some(listener) = https {
        listening.push(format!("https://{}", listener.local_addr()?));
        let (server, tls) = (server.clone(), tls.clone());
        loops.push(thread::spawn(move || {
            accept_loop(&listener, move |tcp, peer| {
                serve_tls(&server, &tls, tcp, peer);
            });
        }));
    }
    if let Some(listener) = http {
        listening.push(format!("http://{}", listener.local_addr()?));
        let server = server.clone();
        loops.push(thread::spawn(move || {
            accept_loop(&listener, move |tcp, peer| serve_plain(&server, tcp, peer));
        }));
    }
    eprintln!("{LISTENING} {}", listening.join(" and "));
    for l in loops {
        let _ = l.join();
    }
    bail!("stopped accepting connections")
}

/// Accepts connections forever, each handled on its own thread.
fn accept_loop<F>(listener: &TcpListener, handle: F)
where
    F: Fn(TcpStream, SocketAddr) + Clone + Send + 'static,
{
    loop {
        match listener.accept() {
            Ok((tcp, peer)) => {
                let handle = handle.clone();
                thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
                    handle(tcp, peer);
                });
            }
            Err(e) => {
                eprintln!("accepting a connection: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_plain(server: &Server, mut tcp: TcpStream, peer: SocketAddr) {
    if let Err(e) = exchange(server, &mut tcp, "http", peer) {
        eprintln!("http {peer}: {e:#}");
    }
    let _ = tcp.shutdown(Shutdown::Write);
}

fn serve_tls(server: &Server, tls: &Arc<ServerConfig>, tcp: TcpStream, peer: SocketAddr) {
    let conn = match ServerConnection::new(tls.clone()) {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("https {peer}: starting TLS: {e}");
            return;
        }
    };
    let mut stream = StreamOwned::new(conn, tcp);
    match exchange(server, &mut stream, "https", peer) {
        Ok(()) => {
            stream.conn.send_close_notify();
            let _ = stream.flush();
        }
        Err(e) if stream.conn.is_handshaking() => {
            eprintln!("https {peer}: TLS handshake failed: {e:#}");
        }
        Err(e) => eprintln!("https {peer}: {e:#}"),
    }
    let _ = stream.sock.shutdown(Shutdown::Write);
}

/// Reads one request head from `stream` and answers it. Fails only when nothing can be answered:
/// the connection broke, or closed or timed out before a whole request line arrived.
fn exchange(
    server: &Server,
    stream: &mut (impl Read + Write),
    scheme: &str,
    peer: SocketAddr,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    let head = loop {
        if let Some(end) = head_end(&buf) {
            break Ok(&buf[..end]);
        }
        if buf.len() > MAX_HEAD {
            break Err(format!("request head longer than {MAX_HEAD} bytes"));
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => bail!("closed without sending a request"),
            Ok(0) => break Err("connection closed in the middle of the request head".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if buf.is_empty() => return Err(e).context("reading the request"),
            Err(e) => break Err(format!("reading the request head: {e}")),
        }
    };
    let received = SystemTime::now();
    let mut record = Request {
        received,
        scheme: scheme.to_owned(),
        peer: peer.to_string(),
        method: String::new(),
        path: String::new(),
        status: 400,
        date: None,
        error: None,
    };
    let parsed = head.and_then(parse_request_head);
    let response = match parsed {
        Err(e) => {
            record.error = Some(e);
            record.date = http_now(received);
            render_response(400, record.date.as_deref(), false)
        }
        Ok(head) => {
            record.method = head.method;
            record.path = head.path;
            let head_only = record.method == "HEAD";
            if record.method != "GET" && !head_only {
                record.status = 405;
                record.error = Some(format!("method {} is not GET or HEAD", record.method));
                record.date = http_now(received);
                render_response(405, record.date.as_deref(), false)
            } else {
                match answer(server).and_then(|a| Ok((a.status, a.date_header(received)?))) {
                    Ok((status, date)) => {
                        record.status = status;
                        record.date = date;
                    }
                    Err(e) => {
                        record.status = 500;
                        record.error = Some(e);
                        record.date = http_now(received);
                    }
                }
                render_response(record.status, record.date.as_deref(), head_only)
            }
        }
    };
    let written = stream
        .write_all(&response)
        .and_then(|()| stream.flush())
        .context("sending the response");
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.to_owned()
        }
    };
    eprintln!(
        "{scheme} {peer}: {} {} -> {} (Date: {}){}",
        or_dash(&record.method),
        or_dash(&record.path),
        record.status,
        record.date.as_deref().unwrap_or("none"),
        record
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default(),
    );
    log_request(server, &record);
    written
}

/// The answer the control file asks for now.
fn answer(server: &Server) -> Result<Answer, String> {
    let text = std::fs::read_to_string(&server.control)
        .map_err(|e| format!("reading control file {}: {e}", server.control.display()))?;
    Answer::from_control_json(&text).map_err(|e| format!("{}: {e}", server.control.display()))
}

/// The real time as a `Date` header (for errors, which do not follow the control file).
fn http_now(now: SystemTime) -> Option<String> {
    systests::timeservers::http_date(now).ok()
}

fn log_request(server: &Server, record: &Request) {
    let line = record.to_log_line();
    let mut log = server
        .log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(e) = log.write_all(line.as_bytes()) {
        eprintln!("writing the request log: {e}");
    }
}
