//! The guest's serial console: a reader thread turns QEMU's stdout into timestamped lines, kept
//! in memory for assertions and appended to `serial.log` in the VM's log folder.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::error::{Error, Result};

/// One line of serial output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialLine {
    /// Which QEMU process printed it: 0 for the first start, +1 for each restart.
    pub run: u32,
    /// When its first byte arrived, counted from that QEMU process's start.
    pub at: Duration,
    /// The text, without line ending and terminal escape sequences.
    pub text: String,
}

impl fmt::Display for SerialLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, ms) = (self.at.as_secs(), self.at.subsec_millis());
        if self.run == 0 {
            write!(f, "[{s:>4}.{ms:03}] {}", self.text)
        } else {
            write!(f, "[#{} {s:>4}.{ms:03}] {}", self.run, self.text)
        }
    }
}

/// What a serial wait looks for: a substring or a regular expression.
#[derive(Debug, Clone)]
pub enum Pattern {
    Substring(String),
    Regex(Regex),
}

impl Pattern {
    /// Compiles a regular expression pattern.
    pub fn regex(re: &str) -> Result<Pattern> {
        Regex::new(re)
            .map(Pattern::Regex)
            .map_err(|e| Error::Config(format!("bad serial pattern /{re}/: {e}")))
    }

    /// True when `text` contains the pattern.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Substring(s) => text.contains(s.as_str()),
            Pattern::Regex(r) => r.is_match(text),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Substring(s) => write!(f, "{s:?}"),
            Pattern::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern::Substring(s.to_owned())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Pattern::Substring(s)
    }
}

impl From<Regex> for Pattern {
    fn from(r: Regex) -> Self {
        Pattern::Regex(r)
    }
}

impl From<&Regex> for Pattern {
    fn from(r: &Regex) -> Self {
        Pattern::Regex(r.clone())
    }
}

/// A position in the serial log; waits starting from a mark only see later lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SerialMark(pub(crate) usize);

/// How a wait ended.
#[derive(Debug)]
pub(crate) enum WaitOutcome {
    Found(SerialLine),
    TimedOut,
    /// QEMU's stdout closed: the process is gone.
    Closed,
}

/// Splits a byte stream into lines stamped with the arrival time of their first byte. Pure.
#[derive(Debug, Default)]
pub(crate) struct LineAssembler {
    buf: Vec<u8>,
    first_at: Option<Duration>,
}

impl LineAssembler {
    /// Feeds bytes that arrived at `now`; returns the lines they completed.
    pub(crate) fn push(&mut self, bytes: &[u8], now: Duration) -> Vec<(Duration, String)> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push((
                    self.first_at.take().unwrap_or(now),
                    clean(&std::mem::take(&mut self.buf)),
                ));
            } else {
                self.first_at.get_or_insert(now);
                self.buf.push(b);
            }
        }
        out
    }

    /// The unfinished line (e.g. a `login: ` prompt), if any.
    pub(crate) fn partial(&self) -> Option<(Duration, String)> {
        self.first_at.map(|at| (at, clean(&self.buf)))
    }

    /// Ends the stream, returning the unfinished line if there was one.
    pub(crate) fn finish(&mut self) -> Option<(Duration, String)> {
        let p = self.partial();
        self.buf.clear();
        self.first_at = None;
        p
    }
}

/// Decodes a line lossily and drops `\r`, control characters and terminal escape sequences
/// (CSI `ESC [ … final`, OSC `ESC ] … BEL|ESC \`, charset `ESC ( X`, other `ESC X`).
pub(crate) fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                Some('(' | ')' | '*' | '+') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

struct State {
    lines: Vec<SerialLine>,
    partial: Option<SerialLine>,
    run: u32,
    /// Index of the first line of the current run.
    run_start: usize,
    /// False once the current run's stdout closed.
    open: bool,
}

/// The shared serial buffer of one VM across its QEMU runs.
#[derive(Clone)]
pub(crate) struct SerialLog {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl SerialLog {
    pub(crate) fn new() -> Self {
        SerialLog {
            shared: Arc::new((
                Mutex::new(State {
                    lines: Vec::new(),
                    partial: None,
                    run: 0,
                    run_start: 0,
                    open: false,
                }),
                Condvar::new(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A reader thread never panics while holding the lock; recover the data regardless.
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a reader thread for QEMU run `run`, whose process started at `started`, appending
    /// to the file at `log_path`.
    pub(crate) fn attach(
        &self,
        mut stdout: impl Read + Send + 'static,
        run: u32,
        started: Instant,
        log_path: &Path,
        echo: bool,
    ) -> Result<JoinHandle<()>> {
        // The first run starts the file over (a reused log folder); restarts append.
        let mut file = File::options()
            .create(true)
            .write(true)
            .append(run > 0)
            .truncate(run == 0)
            .open(log_path)
            .map_err(|e| Error::io_path("opening", log_path, e))?;
        if run > 0 {
            let _ = writeln!(file, "---- QEMU run #{run} ----");
        }
        {
            let mut st = self.lock();
            st.run = run;
            st.run_start = st.lines.len();
            st.partial = None;
            st.open = true;
        }
        let log = self.clone();
        let handle = thread::Builder::new()
            .name(format!("serial-run{run}"))
            .spawn(move || {
                let mut asm = LineAssembler::default();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if echo {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    let done = asm.push(&buf[..n], started.elapsed());
                    log.publish(run, done, asm.partial(), &mut file);
                }
                let last = asm.finish().into_iter().collect();
                log.publish(run, last, None, &mut file);
                let (lock, cvar) = &*log.shared;
                lock.lock().unwrap_or_else(|p| p.into_inner()).open = false;
                cvar.notify_all();
            })
            .map_err(|e| Error::io("starting the serial reader thread", e))?;
        Ok(handle)
    }

    fn publish(
        &self,
        run: u32,
        done: Vec<(Duration, String)>,
        partial: Option<(Duration, String)>,
        file: &mut File,
    ) {
        let mut st = self.lock();
        for (at, text) in done {
            let line = SerialLine { run, at, text };
            let _ = writeln!(file, "{line}");
            st.lines.push(line);
        }
        st.partial = partial.map(|(at, text)| SerialLine { run, at, text });
        drop(st);
        self.shared.1.notify_all();
    }

    /// A mark at the current end of the log.
    pub(crate) fn mark(&self) -> SerialMark {
        SerialMark(self.lock().lines.len())
    }

    /// A mark at the first line of the current QEMU run.
    pub(crate) fn run_mark(&self) -> SerialMark {
        SerialMark(self.lock().run_start)
    }

    /// All complete lines so far.
    pub(crate) fn lines(&self) -> Vec<SerialLine> {
        self.lock().lines.clone()
    }

    /// The last line the current QEMU run printed (the unfinished one if there is one).
    pub(crate) fn last_of_run(&self) -> Option<SerialLine> {
        let st = self.lock();
        st.partial
            .clone()
            .or_else(|| st.lines[st.run_start.min(st.lines.len())..].last().cloned())
    }

    /// True if any line (or the unfinished last one) matches.
    pub(crate) fn contains(&self, pattern: &Pattern) -> bool {
        let st = self.lock();
        st.lines
            .iter()
            .chain(st.partial.as_ref())
            .any(|l| pattern.matches(&l.text))
    }

    /// The last `n` lines (and the unfinished one), formatted one per line.
    pub(crate) fn tail(&self, n: usize) -> String {
        let st = self.lock();
        let start = st.lines.len().saturating_sub(n);
        st.lines[start..]
            .iter()
            .chain(st.partial.as_ref())
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a line at or after `from` (or the unfinished last line) matches.
    pub(crate) fn wait_for(
        &self,
        from: SerialMark,
        pattern: &Pattern,
        timeout: Duration,
    ) -> WaitOutcome {
        let deadline = Instant::now() + timeout;
        let mut next = from.0;
        let mut st = self.lock();
        loop {
            if let Some(line) = st.lines[next.min(st.lines.len())..]
                .iter()
                .find(|l| pattern.matches(&l.text))
            {
                return WaitOutcome::Found(line.clone());
            }
            next = next.max(st.lines.len());
            if let Some(p) = st.partial.as_ref().filter(|p| pattern.matches(&p.text)) {
                return WaitOutcome::Found(p.clone());
            }
            if !st.open {
                return WaitOutcome::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return WaitOutcome::TimedOut;
            }
            st = self
                .shared
                .1
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn lines_are_stamped_with_their_first_byte() {
        let mut asm = LineAssembler::default();
        assert!(asm.push(b"Booting ", ms(100)).is_empty());
        assert_eq!(
            asm.push(b"Linux\r\nok\n", ms(250)),
            [(ms(100), "Booting Linux".into()), (ms(250), "ok".into())]
        );
        asm.push(b"login: ", ms(900));
        assert_eq!(asm.partial(), Some((ms(900), "login: ".into())));
        assert_eq!(asm.finish(), Some((ms(900), "login: ".into())));
        assert_eq!(asm.partial(), None);
    }

    #[test]
    fn empty_lines_are_kept() {
        let mut asm = LineAssembler::default();
        assert_eq!(asm.push(b"\n", ms(5)), [(ms(5), String::new())]);
    }

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(clean(b"\x1b[2J\x1b[01;01H\x1b[=3hBdsDxe: ok"), "BdsDxe: ok");
        assert_eq!(clean(b"\x1b[1m\x1b[33m\x1b[40mShell> \x1b[0m"), "Shell> ");
        assert_eq!(clean(b"\x1b]0;title\x07a\x1b(Bb\x1bcc\r"), "abc");
        assert_eq!(clean(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
    }

    #[test]
    fn display_format() {
        let l = SerialLine {
            run: 0,
            at: ms(32_405),
            text: "login:".into(),
        };
        assert_eq!(l.to_string(), "[  32.405] login:");
        let l = SerialLine { run: 2, ..l };
        assert_eq!(l.to_string(), "[#2   32.405] login:");
    }

    #[test]
    fn patterns() {
        assert!(Pattern::from("Welcome").matches("Welcome to Debian"));
        let re = Pattern::regex(r"^baleen login: ?$").unwrap();
        assert!(re.matches("baleen login: "));
        assert!(!re.matches("xbaleen login: "));
        assert_eq!(re.to_string(), "/^baleen login: ?$/");
        assert_eq!(Pattern::from("a\"b").to_string(), r#""a\"b""#);
        assert!(Pattern::regex("(").is_err());
    }

    #[test]
    fn reader_fills_log_file_and_waits_see_lines_and_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let log = SerialLog::new();
        let input = Cursor::new(b"one\r\ntwo\nlogin: ".to_vec());
        log.attach(input, 0, Instant::now(), &path, false)
            .unwrap()
            .join()
            .unwrap();
        let start = SerialMark(0);
        match log.wait_for(start, &"two".into(), ms(10)) {
            WaitOutcome::Found(l) => assert_eq!(l.text, "two"),
            other => panic!("{other:?}"),
        }
        // The unfinished prompt became a line when the stream ended.
        assert_eq!(log.lines().len(), 3);
        assert!(log.contains(&"login:".into()));
        // After the stream closed, a missing pattern ends the wait at once.
        assert!(matches!(
            log.wait_for(start, &"never".into(), Duration::from_secs(60)),
            WaitOutcome::Closed
        ));
        // A mark skips earlier lines.
        assert!(matches!(
            log.wait_for(SerialMark(2), &"one".into(), ms(10)),
            WaitOutcome::Closed
        ));
        let file = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = file.lines().map(|l| &l[11..]).collect();
        assert_eq!(texts, ["one", "two", "login: "]);
        // Stamps depend on how fast the reader ran: check only the shape.
        let tail = log.tail(2);
        assert!(tail.contains("] two\n  ["), "{tail}");
        assert!(tail.ends_with("] login: "), "{tail}");
    }

    #[test]
    fn second_run_is_marked_and_waits_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let log = SerialLog::new();
        log.attach(
            Cursor::new(b"a\n".to_vec()),
            0,
            Instant::now(),
            &path,
            false,
        )
        .unwrap()
        .join()
        .unwrap();
        // A stream that stays open: the wait must time out, not return Closed.
        let (reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let h = log.attach(reader, 1, Instant::now(), &path, false).unwrap();
        assert_eq!(log.run_mark(), SerialMark(1));
        let t = Instant::now();
        assert!(matches!(
            log.wait_for(log.run_mark(), &"a".into(), ms(150)),
            WaitOutcome::TimedOut
        ));
        assert!(t.elapsed() >= ms(150));
        drop(writer);
        h.join().unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("---- QEMU run #1 ----")
        );
    }
}
