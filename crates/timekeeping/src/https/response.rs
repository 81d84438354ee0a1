//! Reading the status line and headers of the answer.

use std::io::Read;
use std::time::SystemTime;

use crate::formats::parse_http_date;

/// The most header bytes read before giving up.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers an answer may have.
const MAX_HEADERS: usize = 64;

/// The status and date of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub date: Option<SystemTime>,
}

/// Why an answer could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The transport failed (including timeouts and TLS errors).
    Io(std::io::Error),
    /// The bytes are not an HTTP answer.
    Http(String),
}

/// Reads from `reader` until the end of the headers and parses them. Any body is left unread.
pub(crate) fn read_head(reader: &mut impl Read) -> Result<Head, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // rustls reports a close without close_notify this way.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if n == 0 {
            return Err(ReadError::Http(if buf.is_empty() {
                "the connection closed without an answer".to_owned()
            } else {
                "the connection closed before the end of the headers".to_owned()
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf).map_err(ReadError::Http)? {
            return Ok(head);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::Http(format!(
                "the headers are longer than {MAX_HEAD} bytes"
            )));
        }
    }
}

/// Parses a complete answer head, or returns `None` when `buf` ends before it does.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) => {}
        Err(e) => return Err(format!("not an HTTP/1.x answer: {e}")),
    }
    let status = response.code.ok_or("the answer has no status code")?;
    let date = match response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("date"))
    {
        None => None,
        Some(header) => {
            let value = std::str::from_utf8(header.value)
                .map_err(|_| "the Date header is not text".to_owned())?;
            Some(parse_http_date(value).map_err(|e| e.to_string())?)
        }
    };
    Ok(Some(Head { status, date }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn status_and_date_are_read() {
        let head =
            b"HTTP/1.1 204 No Content\r\nServer: x\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n";
        assert_eq!(
            parse_head(head),
            Ok(Some(Head {
                status: 204,
                date: Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
            }))
        );
        let head = b"HTTP/1.0 302 Found\r\nLocation: http://portal/\r\n\r\nbody";
        assert_eq!(
            parse_head(head),
            Ok(Some(Head {
                status: 302,
                date: None
            }))
        );
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert_eq!(parse_head(b"HTTP/1.1 204 No Con"), Ok(None));
        assert_eq!(
            parse_head(b"HTTP/1.1 204 No Content\r\nDate: Sun"),
            Ok(None)
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(
            parse_head(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            Err("not an HTTP/1.x answer: invalid HTTP version".to_owned())
        );
        let bad_date = b"HTTP/1.1 204 No Content\r\nDate: yesterday\r\n\r\n";
        assert!(
            parse_head(bad_date)
                .unwrap_err()
                .starts_with("invalid HTTP Date \"yesterday\"")
        );
    }

    #[test]
    fn read_head_stops_at_the_end_of_the_headers() {
        let mut answer: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\nignored";
        assert_eq!(
            read_head(&mut answer).unwrap(),
            Head {
                status: 204,
                date: None
            }
        );
        let mut cut: &[u8] = b"HTTP/1.1 204 No Content\r\n";
        assert!(matches!(read_head(&mut cut), Err(ReadError::Http(m))
            if m == "the connection closed before the end of the headers"));
        let mut empty: &[u8] = b"";
        assert!(matches!(read_head(&mut empty), Err(ReadError::Http(m))
            if m == "the connection closed without an answer"));
    }
}
