//! The test LAN's bundle server: serves the files of one directory over HTTP/1.1 (plain, or
//! TLS with `--tls-cert` and `--tls-key`), with byte ranges, so that VM tests can update a device
//! from a URL, and can cut the first responses short to make the device's download resume.
//!
//! ```text
//! bundle-http-server --listen 10.0.2.2:8080 --dir /tmp/bundles \
//!     [--drop-after BYTES --drop-count N] [--log requests.log] \
//!     [--tls-cert server.pem --tls-key server-key.pem]
//! ```
//!
//! `GET /name` and `HEAD /name` answer with `DIR/name` (a name holding `/` or `..` gets a 404):
//! `Content-Length`, `ETag` (`"<length>-<mtime seconds>"`), `Last-Modified`, and for
//! `Range: bytes=N-` or `bytes=N-M` a 206 with `Content-Range`, unless an `If-Range` names
//! another version (then the whole file, 200). With `--drop-after BYTES --drop-count N` the first
//! N GET answers with a body close the connection after BYTES body bytes.
//!
//! One thread per connection, one request per connection (`Connection: close`). Prints
//! `listening on ADDR:PORT` to stdout once bound; logs one line per request to `--log` or
//! stderr; exit code 1 when it cannot start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use systests::timeservers::{head_end, parse_request_head, server_tls_config};

const USAGE: &str = "usage: bundle-http-server --listen ADDR:PORT --dir DIR \
                     [--drop-after BYTES] [--drop-count N] [--log FILE] \
                     [--tls-cert PEM --tls-key PEM]";
/// How long a client may take to send its request head, or to take a piece of the body.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_HEAD: usize = 16 * 1024;
/// The note of an answer cut short on purpose (`--drop-after`).
const DROPPED: &str = "dropped on purpose";

struct Args {
    listen: SocketAddr,
    dir: PathBuf,
    drop_after: u64,
    drop_count: u64,
    log: Option<PathBuf>,
    /// The server's certificate chain and key: TLS instead of plain HTTP.
    tls: Option<(PathBuf, PathBuf)>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args> {
    let (mut listen, mut dir, mut drop_after, mut drop_count, mut log) =
        (None, None, None, 0, None);
    let (mut cert, mut key) = (None, None);
    while let Some(flag) = argv.next() {
        let value = argv
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = || -> Result<u64> {
            value
                .parse()
                .with_context(|| format!("{flag} {value:?}: not a number"))
        };
        match flag.as_str() {
            "--listen" => {
                listen = Some(
                    value
                        .parse()
                        .with_context(|| format!("{flag} {value:?}: not an ADDR:PORT"))?,
                );
            }
            "--dir" => dir = Some(PathBuf::from(&value)),
            "--drop-after" => drop_after = Some(number()?),
            "--drop-count" => drop_count = number()?,
            "--log" => log = Some(PathBuf::from(&value)),
            "--tls-cert" => cert = Some(PathBuf::from(&value)),
            "--tls-key" => key = Some(PathBuf::from(&value)),
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    let drop_after = match (drop_after, drop_count) {
        (None, 0) => 0,
        (Some(bytes), _) => bytes,
        (None, _) => bail!("--drop-count needs --drop-after\n{USAGE}"),
    };
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => bail!("--tls-cert and --tls-key go together\n{USAGE}"),
    };
    Ok(Args {
        listen: listen.with_context(|| format!("--listen is missing\n{USAGE}"))?,
        dir: dir.with_context(|| format!("--dir is missing\n{USAGE}"))?,
        drop_after,
        drop_count,
        log,
        tls,
    })
}

/// What every connection handler shares.
struct Server {
    dir: PathBuf,
    drop_after: u64,
    drop_count: u64,
    /// GET answers with a body so far.
    gets: AtomicU64,
    log: Mutex<Box<dyn Write + Send>>,
    /// Set when every connection speaks TLS.
    tls: Option<Arc<ServerConfig>>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bundle-http-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    if !args.dir.is_dir() {
        bail!("{} is not a directory", args.dir.display());
    }
    let log: Box<dyn Write + Send> = match &args.log {
        Some(path) => Box::new(
            File::options()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening request log {}", path.display()))?,
        ),
        None => Box::new(io::stderr()),
    };
    let tls = args
        .tls
        .as_ref()
        .map(|(cert, key)| server_tls_config(cert, key).map(Arc::new))
        .transpose()?;
    let server = Arc::new(Server {
        tls,
        dir: args.dir,
        drop_after: args.drop_after,
        drop_count: args.drop_count,
        gets: AtomicU64::new(0),
        log: Mutex::new(log),
    });
    let listener =
        TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let mut stdout = io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")?;
    for tcp in listener.incoming() {
        match tcp {
            Ok(tcp) => {
                let server = server.clone();
                thread::spawn(move || serve(&server, tcp));
            }
            Err(e) => {
                eprintln!("accepting a connection: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
    bail!("stopped accepting connections")
}

/// One request's log line.
struct Record {
    peer: String,
    method: String,
    path: String,
    range: Option<String>,
    status: u16,
    sent: u64,
    note: Option<String>,
}

fn serve(server: &Server, mut tcp: TcpStream) {
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let peer = tcp
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let mut record = Record {
        peer,
        method: "-".into(),
        path: "-".into(),
        range: None,
        status: 0,
        sent: 0,
        note: None,
    };
    match &server.tls {
        None => {
            if let Err(e) = exchange(server, &mut tcp, &mut record) {
                record.note = Some(format!("{e:#}"));
            }
            let _ = tcp.shutdown(Shutdown::Both);
        }
        Some(tls) => {
            match ServerConnection::new(tls.clone()) {
                Ok(conn) => {
                    let mut stream = StreamOwned::new(conn, tcp);
                    match exchange(server, &mut stream, &mut record) {
                        // A dropped answer ends without close_notify: the client sees a
                        // truncated stream, as over plain HTTP.
                        Ok(()) if record.note.as_deref() != Some(DROPPED) => {
                            stream.conn.send_close_notify();
                            let _ = stream.flush();
                        }
                        Ok(()) => {}
                        Err(e) if stream.conn.is_handshaking() => {
                            record.note = Some(format!("TLS handshake failed: {e:#}"));
                        }
                        Err(e) => record.note = Some(format!("{e:#}")),
                    }
                    let _ = stream.sock.shutdown(Shutdown::Both);
                }
                Err(e) => record.note = Some(format!("starting TLS: {e}")),
            }
        }
    }
    log_request(server, &record);
}

/// Reads one request head and answers it, filling in `record` on the way.
fn exchange(server: &Server, tcp: &mut (impl Read + Write), record: &mut Record) -> Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0; 4096];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return respond_error(tcp, record, 400, "request head too long");
        }
        match tcp.read(&mut chunk) {
            Ok(0) if buf.is_empty() => bail!("closed without sending a request"),
            Ok(0) => bail!("connection closed in the middle of the request head"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading the request head"),
        }
    };
    let head = &buf[..end];
    let request = match parse_request_head(head) {
        Ok(request) => request,
        Err(e) => return respond_error(tcp, record, 400, &e),
    };
    record.method = request.method;
    record.path = request.path;
    let text = String::from_utf8_lossy(head);
    record.range = header(&text, "range");
    let head_only = record.method == "HEAD";
    if record.method != "GET" && !head_only {
        return respond_error(tcp, record, 405, "only GET and HEAD");
    }
    let Some(path) = file_path(&server.dir, &record.path) else {
        return respond_error(tcp, record, 404, "no such file");
    };
    let (mut file, length, mtime) = match open_regular(&path) {
        Ok(found) => found,
        Err(e) => return respond_error(tcp, record, 404, &e.to_string()),
    };
    let etag = format!("\"{length}-{}\"", unix_seconds(mtime));
    let last_modified = httpdate::fmt_http_date(mtime);
    let same_version = header(&text, "if-range").is_none_or(|v| v == etag || v == last_modified);
    let range = record
        .range
        .as_deref()
        .filter(|_| same_version)
        .and_then(parse_range);
    let (status, start, end) = match range {
        None => (200, 0, length),
        Some((first, _)) if first >= length => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{length}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            record.status = 416;
            return tcp
                .write_all(head.as_bytes())
                .context("sending the response");
        }
        Some((first, last)) => (206, first, last.map_or(length, |l| l.min(length - 1) + 1)),
    };
    let mut head = if status == 206 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{length}\r\n",
            end - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_owned()
    };
    head += &format!(
        "Content-Length: {}\r\nContent-Type: application/octet-stream\r\nETag: {etag}\r\n\
         Last-Modified: {last_modified}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        end - start
    );
    record.status = status;
    tcp.write_all(head.as_bytes())
        .context("sending the response head")?;
    if head_only {
        return Ok(());
    }
    let mut send = end - start;
    if server.gets.fetch_add(1, Ordering::SeqCst) < server.drop_count && server.drop_after < send {
        send = server.drop_after;
        record.note = Some(DROPPED.into());
    }
    file.seek(SeekFrom::Start(start))
        .with_context(|| format!("seeking in {}", path.display()))?;
    let sent = io::copy(&mut file.take(send), tcp);
    record.sent = *sent.as_ref().unwrap_or(&0);
    sent.context("sending the body")?;
    if record.sent < send {
        bail!("{} shrank while sending it", path.display());
    }
    Ok(())
}

/// `DIR/name` for a request path `/name`; `None` for anything else (no directories, no `..`).
fn file_path(dir: &Path, request_path: &str) -> Option<PathBuf> {
    let name = request_path.strip_prefix('/')?;
    let name = name.split(['?', '#']).next().unwrap_or_default();
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return None;
    }
    Some(dir.join(name))
}

fn open_regular(path: &Path) -> io::Result<(File, u64, SystemTime)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "not a regular file",
        ));
    }
    Ok((file, meta.len(), meta.modified()?))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The value of the first header field `name` in a request head.
fn header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

/// `bytes=N-` or `bytes=N-M` as (N, M); `None` for anything else (which is then ignored, as
/// HTTP allows).
fn parse_range(value: &str) -> Option<(u64, Option<u64>)> {
    let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let first = first.trim().parse().ok()?;
    match last.trim() {
        "" => Some((first, None)),
        last => {
            let last = last.parse().ok()?;
            (first <= last).then_some((first, Some(last)))
        }
    }
}

fn respond_error(
    tcp: &mut (impl Read + Write),
    record: &mut Record,
    status: u16,
    why: &str,
) -> Result<()> {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let body = format!("{status} {reason}: {why}\n");
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{}",
        body.len(),
        if record.method == "HEAD" { "" } else { &body }
    );
    record.status = status;
    record.note = Some(why.to_owned());
    tcp.write_all(response.as_bytes())
        .context("sending the response")
}

fn log_request(server: &Server, r: &Record) {
    let line = format!(
        "{} {} {} range={} status={} sent={}{}\n",
        r.peer,
        r.method,
        r.path,
        r.range.as_deref().unwrap_or("-"),
        r.status,
        r.sent,
        r.note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
    );
    let mut log = server
        .log
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Err(e) = log.write_all(line.as_bytes()).and_then(|()| log.flush()) {
        eprintln!("writing the request log: {e}");
    }
}
