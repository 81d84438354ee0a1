//! A byte range of a seekable stream, seen as a stream of its own.
//!
//! Filesystem libraries (fatfs) expect a device that starts at offset 0 and
//! ends at the end of the filesystem. A [`Slice`] maps that view onto one
//! partition of a disk image or block device, so a partition can be formatted
//! and edited in place without a loop device.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// The window `[start, start + len)` of `inner`.
///
/// Reads stop at the end of the window; writes past it write nothing
/// (`Ok(0)`, which `write_all` reports as `WriteZero`). Seeking past the end is
/// allowed, as on a file; seeking before the start is an error.
#[derive(Debug)]
pub struct Slice<F> {
    inner: F,
    start: u64,
    len: u64,
    pos: u64,
}

impl<F> Slice<F> {
    /// A view of `len` bytes of `inner` beginning at `start`, positioned at its first byte.
    pub fn new(inner: F, start: u64, len: u64) -> Self {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    /// Offset of the window in the underlying stream.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Size of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Give back the underlying stream.
    pub fn into_inner(self) -> F {
        self.inner
    }

    /// How many bytes may be transferred at the current position, at most `want`.
    fn room(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |left| left.min(want))
    }
}

impl<F: Seek> Slice<F> {
    fn seek_inner(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(())
    }
}

impl<F: Read + Seek> Read for Slice<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.seek_inner()?;
        let read = self.inner.read(&mut buf[..n])?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl<F: Write + Seek> Write for Slice<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.seek_inner()?;
        let written = self.inner.write(&buf[..n])?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<F> Seek for Slice<F> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        match target {
            Some(pos) => {
                self.pos = pos;
                Ok(pos)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the slice",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn reads_and_writes_stay_inside_the_window() {
        let mut data = Cursor::new(vec![0u8; 16]);
        let mut slice = Slice::new(&mut data, 4, 8);
        slice.write_all(b"abcdefgh").unwrap();
        assert_eq!(slice.write(b"x").unwrap(), 0);
        assert!(slice.write_all(b"x").is_err());
        assert_eq!(slice.seek(SeekFrom::End(-2)).unwrap(), 6);
        let mut tail = Vec::new();
        slice.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, b"gh");
        assert!(slice.seek(SeekFrom::Current(-9)).is_err());
        assert_eq!(&data.get_ref()[..], b"\0\0\0\0abcdefgh\0\0\0\0");
    }

    #[test]
    fn seek_past_end_reads_nothing() {
        let mut slice = Slice::new(Cursor::new(vec![1u8; 16]), 0, 4);
        assert_eq!(slice.seek(SeekFrom::Start(10)).unwrap(), 10);
        let mut buf = [0u8; 4];
        assert_eq!(slice.read(&mut buf).unwrap(), 0);
        assert_eq!(slice.len(), 4);
        assert!(!slice.is_empty());
    }
}
