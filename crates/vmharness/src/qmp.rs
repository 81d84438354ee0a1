//! A small QMP (QEMU Machine Protocol) client over the VM's unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// How long one QMP command may take; `screendump` under TCG is the slowest seen.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// One message from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpMessage {
    /// The banner QEMU sends on connect.
    Greeting { version: String },
    /// A successful reply.
    Return { id: Option<Value>, value: Value },
    /// A failed reply.
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    /// An asynchronous event (`RESET`, `SHUTDOWN`, `STOP`, …), possibly between a command and
    /// its reply.
    Event(QmpEvent),
}

/// An asynchronous QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// Parses one line QEMU sent on the QMP socket. Pure.
pub fn parse_message(line: &str) -> Result<QmpMessage> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| Error::QmpProtocol(format!("not JSON ({e}): {}", line.trim())))?;
    let obj = v
        .as_object()
        .ok_or_else(|| Error::QmpProtocol(format!("not an object: {}", line.trim())))?;
    let id = obj.get("id").cloned();
    if let Some(greeting) = obj.get("QMP") {
        let q = &greeting["version"]["qemu"];
        let version = format!("{}.{}.{}", q["major"], q["minor"], q["micro"]);
        Ok(QmpMessage::Greeting { version })
    } else if let Some(value) = obj.get("return") {
        Ok(QmpMessage::Return {
            id,
            value: value.clone(),
        })
    } else if let Some(err) = obj.get("error") {
        let field = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        Ok(QmpMessage::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        })
    } else if let Some(name) = obj.get("event").and_then(Value::as_str) {
        Ok(QmpMessage::Event(QmpEvent {
            name: name.to_owned(),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
        }))
    } else {
        Err(Error::QmpProtocol(format!(
            "unknown message: {}",
            line.trim()
        )))
    }
}

/// A connected, negotiated QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
    events: Vec<QmpEvent>,
    version: String,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.version)
            .field("pending_events", &self.events.len())
            .finish()
    }
}

impl Qmp {
    /// Connects to a QMP socket and negotiates capabilities (one attempt).
    pub fn connect(path: &Path) -> Result<Qmp> {
        let stream = UnixStream::connect(path)
            .map_err(|e| Error::io_path("connecting to QMP socket", path, e))?;
        Qmp::handshake(stream)
    }

    /// Reads the greeting and sends `qmp_capabilities` on an already connected stream.
    pub fn handshake(stream: UnixStream) -> Result<Qmp> {
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| Error::io("setting QMP read timeout", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| Error::io("cloning QMP socket", e))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
            next_id: 1,
            events: Vec::new(),
            version: String::new(),
        };
        match qmp.read_message()? {
            QmpMessage::Greeting { version } => qmp.version = version,
            other => {
                return Err(Error::QmpProtocol(format!(
                    "expected greeting, got {other:?}"
                )));
            }
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// QEMU's version from the greeting, e.g. `7.2.22`.
    pub fn qemu_version(&self) -> &str {
        &self.version
    }

    /// Runs a command and returns its `return` value. Events arriving before the reply are kept
    /// (see [`Qmp::take_events`]).
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        tracing::debug!(%msg, "QMP send");
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(format!("sending QMP command `{command}`"), e))?;
        let want = Some(json!(id));
        loop {
            match self.read_message()? {
                QmpMessage::Return { id, value } if id == want => return Ok(value),
                QmpMessage::Error { id, class, desc } if id == want => {
                    return Err(Error::Qmp {
                        command: command.to_owned(),
                        class,
                        desc,
                    });
                }
                QmpMessage::Event(ev) => self.events.push(ev),
                other => tracing::debug!(?other, "QMP: ignoring unrelated message"),
            }
        }
    }

    /// `query-status`'s `status` field: `running`, `paused`, `prelaunch`, `shutdown`, ….
    pub fn query_status(&mut self) -> Result<String> {
        let v = self.execute("query-status", None)?;
        v["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::QmpProtocol(format!("query-status without status: {v}")))
    }

    /// The events received so far, draining them.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        std::mem::take(&mut self.events)
    }

    fn read_message(&mut self) -> Result<QmpMessage> {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| Error::io("reading from QMP socket", e))?;
            if n == 0 {
                return Err(Error::QmpProtocol("QEMU closed the QMP connection".into()));
            }
            if !line.trim().is_empty() {
                tracing::trace!(line = line.trim(), "QMP recv");
                return parse_message(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::thread;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#;

    #[test]
    fn parses_greeting() {
        assert_eq!(
            parse_message(GREETING).unwrap(),
            QmpMessage::Greeting {
                version: "7.2.22".into()
            }
        );
    }

    #[test]
    fn parses_return_error_and_event() {
        assert_eq!(
            parse_message(r#"{"return": {"status": "running", "running": true}, "id": 3}"#)
                .unwrap(),
            QmpMessage::Return {
                id: Some(json!(3)),
                value: json!({"status": "running", "running": true})
            }
        );
        assert_eq!(
            parse_message(
                r#"{"id": 4, "error": {"class": "CommandNotFound", "desc": "The command fly has not been found"}}"#
            )
            .unwrap(),
            QmpMessage::Error {
                id: Some(json!(4)),
                class: "CommandNotFound".into(),
                desc: "The command fly has not been found".into()
            }
        );
        assert_eq!(
            parse_message(
                r#"{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "RESET", "data": {"guest": false, "reason": "host-qmp-system-reset"}}"#
            )
            .unwrap(),
            QmpMessage::Event(QmpEvent {
                name: "RESET".into(),
                data: json!({"guest": false, "reason": "host-qmp-system-reset"})
            })
        );
    }

    #[test]
    fn rejects_garbage() {
        let e = parse_message("hello").unwrap_err();
        assert!(
            e.to_string().starts_with("QMP protocol error: not JSON"),
            "{e}"
        );
        assert!(parse_message("[1]").is_err());
        assert!(parse_message(r#"{"what": 1}"#).is_err());
    }

    /// A fake QEMU on the other end of a socket pair, answering from a script.
    fn fake_qemu(script: Vec<(&'static str, Vec<String>)>) -> (UnixStream, thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let h = thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            let mut r = BufReader::new(theirs);
            writeln!(w, "{GREETING}").unwrap();
            for (expect, replies) in script {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["execute"], expect, "{line}");
                let id = v["id"].to_string();
                for reply in replies {
                    writeln!(w, "{}", reply.replace("$ID", &id)).unwrap();
                }
            }
        });
        (ours, h)
    }

    #[test]
    fn session_skips_events_before_the_reply() {
        let (sock, h) = fake_qemu(vec![
            ("qmp_capabilities", vec![r#"{"return": {}, "id": $ID}"#.into()]),
            (
                "system_reset",
                vec![
                    r#"{"event": "RESET", "data": {"guest": false}, "timestamp": {"seconds": 1, "microseconds": 2}}"#.into(),
                    r#"{"return": {}, "id": $ID}"#.into(),
                ],
            ),
            (
                "query-status",
                vec![
                    r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 3}}"#.into(),
                    r#"{"return": {"status": "paused", "running": false}, "id": $ID}"#.into(),
                ],
            ),
            (
                "screendump",
                vec![r#"{"id": $ID, "error": {"class": "GenericError", "desc": "no png"}}"#.into()],
            ),
        ]);
        let mut qmp = Qmp::handshake(sock).unwrap();
        assert_eq!(qmp.qemu_version(), "7.2.22");
        assert_eq!(qmp.execute("system_reset", None).unwrap(), json!({}));
        assert_eq!(qmp.query_status().unwrap(), "paused");
        let err = qmp
            .execute(
                "screendump",
                Some(json!({"filename": "/x.png", "format": "png"})),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP command `screendump` failed: GenericError: no png"
        );
        let names: Vec<String> = qmp.take_events().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["RESET", "STOP"]);
        assert!(qmp.take_events().is_empty());
        h.join().unwrap();
        // The peer is gone: the next command fails cleanly.
        let err = qmp.execute("query-status", None).unwrap_err();
        assert!(
            matches!(err, Error::QmpProtocol(_) | Error::Io { .. }),
            "{err}"
        );
    }
}
