//! Reads the bundle on a thread of its own, ahead of the install: the download (and its TLS
//! decryption) then runs beside the decompression instead of taking turns with it.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

/// Bytes per block handed over.
const BLOCK: usize = 256 * 1024;
/// Blocks read ahead at most: what the read-ahead costs in memory is `BLOCK * DEPTH` (4 MiB).
const DEPTH: usize = 16;

/// What the reading thread hands over: a block of the stream, the end of it, or why reading
/// stopped.
enum Block {
    Data(Vec<u8>),
    End,
    Failed(io::Error),
}

/// A [`Read`] over another reader that a thread of its own reads up to `BLOCK * DEPTH` bytes
/// ahead. Dropping it stops that thread once its pending read returns.
pub struct Prefetch {
    blocks: Receiver<Block>,
    current: Vec<u8>,
    at: usize,
    /// Set once the stream ended or failed: later reads answer the same.
    ended: Option<Ended>,
}

enum Ended {
    Cleanly,
    Failed(io::ErrorKind, String),
}

impl Prefetch {
    /// Starts reading `inner` on a new thread.
    pub fn spawn<R: Read + Send + 'static>(inner: R) -> io::Result<Prefetch> {
        let (to_reader, blocks) = mpsc::sync_channel(DEPTH);
        thread::Builder::new()
            .name("bundle-read".into())
            .spawn(move || pump(inner, &to_reader))?;
        Ok(Prefetch {
            blocks,
            current: Vec::new(),
            at: 0,
            ended: None,
        })
    }
}

/// Reads `inner` to its end (or first error) in whole blocks; stops early when the receiving
/// end is gone.
fn pump<R: Read>(mut inner: R, out: &SyncSender<Block>) {
    loop {
        let mut block = vec![0u8; BLOCK];
        let mut filled = 0;
        let stop = loop {
            match inner.read(&mut block[filled..]) {
                Ok(0) => break Some(Block::End),
                Ok(n) => {
                    filled += n;
                    if filled == BLOCK {
                        break None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(Block::Failed(e)),
            }
        };
        if filled > 0 {
            block.truncate(filled);
            if out.send(Block::Data(block)).is_err() {
                return;
            }
        }
        if let Some(last) = stop {
            // The receiver may be gone already; nothing is left to do either way.
            let _ = out.send(last);
            return;
        }
    }
}

impl Read for Prefetch {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.current.len() {
            match &self.ended {
                Some(Ended::Cleanly) => return Ok(0),
                Some(Ended::Failed(kind, message)) => {
                    return Err(io::Error::new(*kind, message.clone()));
                }
                None => {}
            }
            match self.blocks.recv() {
                Ok(Block::Data(block)) => {
                    self.current = block;
                    self.at = 0;
                }
                Ok(Block::End) => self.ended = Some(Ended::Cleanly),
                Ok(Block::Failed(e)) => {
                    self.ended = Some(Ended::Failed(e.kind(), e.to_string()));
                    return Err(e);
                }
                // Only a panic ends the thread without a last word.
                Err(_) => {
                    self.ended = Some(Ended::Failed(
                        io::ErrorKind::BrokenPipe,
                        "the thread reading the bundle stopped".into(),
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Hands out `data` in reads of at most `step` bytes, then fails with `fail` if given.
    struct Steps {
        data: Vec<u8>,
        at: usize,
        step: usize,
        fail: Option<io::ErrorKind>,
        reads: Arc<AtomicUsize>,
    }

    impl Read for Steps {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            if self.at == self.data.len() {
                return match self.fail {
                    Some(kind) => Err(io::Error::new(kind, "the server went away")),
                    None => Ok(0),
                };
            }
            let n = buf.len().min(self.step).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn steps(len: usize, step: usize, fail: Option<io::ErrorKind>) -> (Steps, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
        let steps = Steps {
            data: data.clone(),
            at: 0,
            step,
            fail,
            reads: Arc::default(),
        };
        (steps, data)
    }

    #[test]
    fn passes_every_byte_in_order_whatever_the_read_sizes() {
        for (len, step) in [
            (0, 1),
            (1, 1),
            (BLOCK - 1, 4096),
            (BLOCK, BLOCK),
            (BLOCK + 1, 16 * 1024 + 5),
            (3 * BLOCK + 777, 100_000),
        ] {
            let (inner, data) = steps(len, step, None);
            let mut ahead = Prefetch::spawn(inner).unwrap();
            let mut out = Vec::new();
            // Odd-sized reads on this side too.
            let mut buf = vec![0u8; 3001];
            loop {
                match ahead.read(&mut buf).unwrap() {
                    0 => break,
                    n => out.extend_from_slice(&buf[..n]),
                }
            }
            assert_eq!(out.len(), data.len(), "len {len} step {step}");
            assert!(out == data, "len {len} step {step}: bytes differ");
            assert_eq!(ahead.read(&mut buf).unwrap(), 0, "the end stays the end");
        }
    }

    #[test]
    fn an_error_comes_after_the_bytes_before_it_and_stays() {
        let (inner, data) = steps(BLOCK + 10, 4096, Some(io::ErrorKind::ConnectionReset));
        let mut ahead = Prefetch::spawn(inner).unwrap();
        let mut out = Vec::new();
        let err = ahead.read_to_end(&mut out).unwrap_err();
        assert_eq!(out, data, "every byte before the error arrives");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(err.to_string().contains("the server went away"), "{err}");
        let again = ahead.read(&mut [0u8; 10]).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(again.to_string(), err.to_string());
    }

    #[test]
    fn reads_at_most_the_blocks_it_may_hold_ahead() {
        let (inner, _) = steps(64 * BLOCK, BLOCK, None);
        let reads = inner.reads.clone();
        let mut ahead = Prefetch::spawn(inner).unwrap();
        let mut first = [0u8; 1];
        ahead.read_exact(&mut first).unwrap();
        // Give the thread time to fill the queue, then look.
        std::thread::sleep(std::time::Duration::from_millis(300));
        // One block taken, DEPTH queued, one waiting to be sent.
        assert!(
            reads.load(Ordering::Relaxed) <= DEPTH + 2,
            "{} reads",
            reads.load(Ordering::Relaxed)
        );
        drop(ahead);
    }
}
