//! Opening a bundle from a stream: verify the manifest first, then hand out the payloads one
//! after the other, each checked against the manifest as it is read.

use std::io::{self, BufReader, Read, Write};
use std::sync::{Arc, mpsc};

use osversion::HostOsVersion;
use sha2::Digest;

use crate::header::{HEADER_LEN, Header, MAGIC};
use crate::signature::{self, Policy, Trust};
use crate::{Error, Manifest, PayloadInfo, ROOTFS, Sha256Sum, TrustedKeys};

/// Largest zstd window a payload may need: 2^24 bytes (16 MiB) of decoder memory.
pub const MAX_WINDOW_LOG: u32 = 24;

const CHUNK: usize = 1 << 20;
/// Chunks in flight to the hashing thread.
const HASH_QUEUE: usize = 4;
/// Bytes of the compressed stream gathered before they go to its hashing thread together:
/// reads come in pieces of a TLS record (16 KiB) or less, and waking the thread for each cost
/// more than hashing them.
const COMPRESSED_HASH_BATCH: usize = 256 * 1024;
/// Batches in flight to the compressed stream's hashing thread.
const COMPRESSED_HASH_QUEUE: usize = 8;

/// An opened bundle whose manifest is verified; its payloads are still to be read.
///
/// Works on any reader, seekable or not (a file, an HTTP body): payloads come in manifest
/// order through [`next_payload`](Self::next_payload).
pub struct Bundle<R> {
    manifest: Manifest,
    trust: Trust,
    reader: R,
    state: StreamState,
}

/// Where the payload stream is.
#[derive(Debug, Default)]
struct StreamState {
    /// The index of the next payload to hand out.
    next: usize,
    /// A payload handed out and not yet verified.
    open: Option<usize>,
    /// A payload whose reading failed: nothing further can be read.
    failed: Option<usize>,
}

impl<R: Read> Bundle<R> {
    /// Reads the header, the manifest and the signature block, decides trust and parses the
    /// manifest. Reads nothing of the payloads; no payload byte reaches the caller before this
    /// returns `Ok`.
    pub fn open(mut reader: R, trusted: &TrustedKeys, policy: Policy) -> Result<Self, Error> {
        let mut head = [0u8; HEADER_LEN];
        let got = read_full(&mut reader, &mut head, "header")?;
        if got < HEADER_LEN {
            let seen = got.min(MAGIC.len());
            if head[..seen] != MAGIC[..seen] {
                return Err(Error::NotABundle {
                    found: head[..seen].to_vec(),
                });
            }
            return Err(Error::Truncated {
                section: "header",
                expected: HEADER_LEN as u64,
                got: got as u64,
            });
        }
        let header = Header::decode(&head)?;
        let manifest_bytes = read_section(&mut reader, header.manifest_len, "manifest")?;
        let block = read_section(&mut reader, header.signatures_len, "signature block")?;
        let trust = signature::verify(&manifest_bytes, &block, trusted, policy)?;
        let manifest = Manifest::from_bytes(&manifest_bytes)?;
        Ok(Self {
            manifest,
            trust,
            reader,
            state: StreamState::default(),
        })
    }

    /// The verified manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Why the bundle was accepted.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// See [`Manifest::check_compatible`].
    pub fn check_compatible(
        &self,
        device_type: &str,
        running_version: &str,
        partition_size: u64,
    ) -> Result<(), Error> {
        self.manifest
            .check_compatible(device_type, running_version, partition_size)
    }

    /// The next payload in manifest order, or `None` after the last one.
    ///
    /// The previous payload must have been read to its end (which verifies it) first. After a
    /// payload failed, the stream position is lost and this keeps returning an error.
    pub fn next_payload(&mut self) -> Result<Option<PayloadReader<'_, R>>, Error> {
        let Self {
            manifest,
            reader,
            state,
            ..
        } = self;
        if let Some(i) = state.failed {
            return Err(Error::Poisoned {
                name: manifest.payloads[i].name.clone(),
            });
        }
        if let Some(i) = state.open {
            return Err(Error::PayloadNotFinished {
                name: manifest.payloads[i].name.clone(),
            });
        }
        let index = state.next;
        let Some(info) = manifest.payloads.get(index) else {
            return Ok(None);
        };
        let compressed = Compressed {
            reader,
            remaining: info.compressed_size,
            count: 0,
            hasher: Sha256Stream::background(),
            ended_early: false,
            failed_io: false,
        };
        let decoder = zstd::stream::read::Decoder::new(compressed)
            .and_then(|mut d| d.window_log_max(MAX_WINDOW_LOG).map(|()| d))
            .map_err(|source| Error::PayloadRead {
                name: info.name.clone(),
                source,
            })?;
        state.next += 1;
        state.open = Some(index);
        Ok(Some(PayloadReader {
            info,
            last: index + 1 == manifest.payloads.len(),
            index,
            decoder,
            hasher: Some(sha2::Sha256::new()),
            produced: 0,
            state,
            status: Status::Reading,
        }))
    }

    /// Reads every remaining payload to its end without keeping it, verifying each
    /// (`baleen bundle verify`).
    pub fn verify_remaining(&mut self) -> Result<(), Error> {
        while let Some(payload) = self.next_payload()? {
            payload.skip()?;
        }
        Ok(())
    }
}

impl Manifest {
    /// Whether this bundle may be installed on a device of `device_type` running
    /// `running_version` (its `HOSTOS_VERSION`), with an inactive root partition of
    /// `partition_size` bytes.
    ///
    /// Checks, in order: the device type is the same; `running_version` parses and is not
    /// older than `min_from_version`; the bundle has a `rootfs` payload and its uncompressed
    /// size fits in the partition. Reinstalling the running version and going back to an older
    /// one are allowed: those are the installer's decisions.
    pub fn check_compatible(
        &self,
        device_type: &str,
        running_version: &str,
        partition_size: u64,
    ) -> Result<(), Error> {
        if self.device_type != device_type {
            return Err(Error::WrongDeviceType {
                bundle: self.device_type.clone(),
                device: device_type.to_owned(),
            });
        }
        let running: HostOsVersion = running_version.parse().map_err(Error::RunningVersion)?;
        if let Some(min_from) = self.min_from_version {
            if running < min_from {
                return Err(Error::TooOld {
                    bundle: self.os_version,
                    min_from,
                    running,
                });
            }
        }
        let rootfs = self.require_payload(ROOTFS)?;
        if rootfs.size > partition_size {
            return Err(Error::PayloadTooLarge {
                name: rootfs.name.clone(),
                size: rootfs.size,
                partition_size,
            });
        }
        Ok(())
    }
}

/// One payload being read: the decompressed bytes, checked against the manifest.
///
/// `read` never returns more than the manifest's `size` bytes. It returns `Ok(0)` (end of
/// payload) only once every byte was read and the compressed length, both SHA-256 sums (only
/// the compressed one after [`without_uncompressed_sha256`](Self::without_uncompressed_sha256))
/// and the uncompressed size match the manifest; any mismatch, damage or truncation is an error at the
/// latest where the end would be. The bytes already returned are only trustworthy after that
/// `Ok(0)`: write them somewhere inactive (the other root partition), never in place of
/// something in use. Errors from `read` carry this crate's [`Error`] inside the
/// [`io::Error`]; [`copy_to`](Self::copy_to) returns it directly.
pub struct PayloadReader<'a, R: Read> {
    info: &'a PayloadInfo,
    last: bool,
    index: usize,
    decoder: zstd::stream::read::Decoder<'static, BufReader<Compressed<'a, R>>>,
    /// The uncompressed SHA-256, unless the caller checks the output itself.
    hasher: Option<sha2::Sha256>,
    produced: u64,
    state: &'a mut StreamState,
    status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Reading,
    Verified,
    Failed,
}

impl<R: Read> PayloadReader<'_, R> {
    /// The manifest's entry for this payload.
    pub fn info(&self) -> &PayloadInfo {
        self.info
    }

    /// Leaves out the SHA-256 of the decompressed bytes, for a caller that checks what it
    /// wrote by other means (the install reads the partition back).
    ///
    /// Every other check stays: the compressed bytes' length and SHA-256 (which the signed
    /// manifest pins, and with them every decompressed byte, decompression being a function of
    /// its input), the decompressed size, zstd's own frame checksum (XXH64 of the content, in
    /// bundles that carry it: all made by [`create`](crate::create)) and the end of the bundle.
    /// It spares the caller a second pass over the largest payload with the slowest hash.
    pub fn without_uncompressed_sha256(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Copies the whole payload into `out`, calling `progress(bytes_done, total)` after each
    /// chunk (total = the uncompressed size). `Ok` means every byte was written and the payload
    /// verified; `out` is not flushed or synced.
    pub fn copy_to<W: Write + ?Sized>(
        self,
        out: &mut W,
        progress: impl FnMut(u64, u64),
    ) -> Result<(), Error> {
        self.deliver(&mut |chunk| out.write_all(&chunk), progress)
    }

    /// Like [`copy_to`](Self::copy_to), but hands each decompressed chunk (1 MiB, the last one
    /// shorter) to `sink` by value, e.g. to another thread, without copying it.
    pub fn copy_chunks(
        self,
        mut sink: impl FnMut(Vec<u8>) -> io::Result<()>,
        progress: impl FnMut(u64, u64),
    ) -> Result<(), Error> {
        self.deliver(
            &mut |chunk| sink(Arc::try_unwrap(chunk).unwrap_or_else(|shared| shared.to_vec())),
            progress,
        )
    }

    fn deliver(
        mut self,
        out: &mut dyn FnMut(Arc<Vec<u8>>) -> io::Result<()>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(), Error> {
        if self.status != Status::Reading {
            // Verified already (nothing left) or poisoned: `read` says which.
            let mut nothing = [0u8; 1];
            return self
                .read(&mut nothing)
                .map(drop)
                .map_err(|e| Error::from_payload_io(&self.info.name, e));
        }
        let checked = match self.hasher.take() {
            // The uncompressed SHA-256 is taken on a second thread: on a device with two cores
            // it runs beside decompression and the write instead of after them.
            Some(mut hasher) => {
                let (streamed, hasher) = std::thread::scope(|scope| {
                    let (to_hasher, chunks) = mpsc::sync_channel::<Arc<Vec<u8>>>(HASH_QUEUE);
                    let hashing = scope.spawn(move || {
                        for chunk in chunks {
                            hasher.update(&chunk[..]);
                        }
                        hasher
                    });
                    let streamed = self.stream_chunks(out, Some(&to_hasher), &mut progress);
                    drop(to_hasher);
                    (streamed, hashing.join())
                });
                streamed.and_then(|()| {
                    self.hasher = Some(hasher.expect("the hashing thread panicked"));
                    self.finish()
                })
            }
            None => self
                .stream_chunks(out, None, &mut progress)
                .and_then(|()| self.finish()),
        };
        match checked {
            Ok(()) => {
                self.status = Status::Verified;
                self.state.open = None;
                Ok(())
            }
            Err(e) => {
                self.fail();
                Err(e)
            }
        }
    }

    /// Decompresses the payload to its end in whole chunks, each sent to `hasher` (if any) and
    /// then to `out`. The end checks are the caller's.
    fn stream_chunks(
        &mut self,
        out: &mut dyn FnMut(Arc<Vec<u8>>) -> io::Result<()>,
        hasher: Option<&mpsc::SyncSender<Arc<Vec<u8>>>>,
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(), Error> {
        loop {
            // Whole chunks make large sequential writes to the partition.
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < buf.len() {
                match self.pull(&mut buf[filled..])? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            let chunk = Arc::new(buf);
            if let Some(hasher) = hasher {
                // The hashing thread only stops when this sender is dropped.
                let _ = hasher.send(Arc::clone(&chunk));
            }
            out(chunk).map_err(|source| Error::PayloadWrite {
                name: self.info.name.clone(),
                source,
            })?;
            progress(self.produced, self.info.size);
            if filled < CHUNK {
                // `pull` returned 0: the decoder is at its end.
                return Ok(());
            }
        }
    }

    /// Reads the payload to its end without keeping it, verifying it.
    pub fn skip(self) -> Result<(), Error> {
        self.copy_to(&mut io::sink(), |_, _| ())
    }

    fn fail(&mut self) {
        self.status = Status::Failed;
        self.state.open = None;
        self.state.failed = Some(self.index);
    }

    /// Classifies an error from the decoder (which ends the payload's reading).
    fn stream_error(&mut self, err: io::Error) -> Error {
        let info = self.info;
        let compressed = self.decoder.get_mut().get_mut();
        let name = info.name.clone();
        if compressed.failed_io {
            Error::PayloadRead { name, source: err }
        } else if compressed.ended_early {
            self.truncated()
        } else if let Some(mismatch) = (compressed.remaining == 0)
            .then(|| {
                let hasher = std::mem::take(&mut compressed.hasher).into_hasher();
                check_sum(info, "compressed", info.compressed_sha256, hasher).err()
            })
            .flatten()
        {
            // A frame checksum that fails at the very end: the stream is not the signed one,
            // which says more (damaged in transit) than the decoder's complaint.
            mismatch
        } else {
            Error::PayloadCorrupt {
                name,
                reason: err.to_string(),
            }
        }
    }

    fn truncated(&self) -> Error {
        Error::PayloadTruncated {
            name: self.info.name.clone(),
            expected: self.info.compressed_size,
            got: self.decoder.get_ref().get_ref().count,
        }
    }

    /// The checks at the end of the stream.
    fn finish(&mut self) -> Result<(), Error> {
        let info = self.info;
        let compressed = self.decoder.get_mut().get_mut();
        if compressed.remaining > 0 {
            return Err(self.truncated());
        }
        check_sum(
            info,
            "compressed",
            info.compressed_sha256,
            std::mem::take(&mut compressed.hasher).into_hasher(),
        )?;
        if self.produced != info.size {
            return Err(Error::PayloadSizeMismatch {
                name: info.name.clone(),
                expected: info.size,
                got: self.produced,
                longer: false,
            });
        }
        if let Some(hasher) = self.hasher.take() {
            check_sum(info, "uncompressed", info.sha256, hasher)?;
        }
        if self.last {
            let reader = &mut self.decoder.get_mut().get_mut().reader;
            let mut byte = [0u8; 1];
            loop {
                match reader.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) => {
                        return Err(Error::TrailingData {
                            name: info.name.clone(),
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(source) => {
                        return Err(Error::PayloadRead {
                            name: info.name.clone(),
                            source,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> PayloadReader<'_, R> {
    /// Decompresses into `buf` (not hashed), never past the manifest's size; `Ok(0)` at the
    /// decoder's end, before the end checks.
    fn pull(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            return match self.decoder.read(buf) {
                Ok(n) if self.produced + n as u64 > self.info.size => {
                    Err(Error::PayloadSizeMismatch {
                        name: self.info.name.clone(),
                        expected: self.info.size,
                        got: self.produced + n as u64,
                        longer: true,
                    })
                }
                Ok(n) => {
                    self.produced += n as u64;
                    Ok(n)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.stream_error(e)),
            };
        }
    }
}

impl<R: Read> Read for PayloadReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.status {
            Status::Verified => return Ok(0),
            Status::Failed => {
                return Err(Error::Poisoned {
                    name: self.info.name.clone(),
                }
                .into_io());
            }
            Status::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let result = match self.pull(buf) {
            Ok(0) => self.finish().map(|()| 0),
            Ok(n) => {
                if let Some(hasher) = &mut self.hasher {
                    hasher.update(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(0) => {
                self.status = Status::Verified;
                self.state.open = None;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.fail();
                Err(e.into_io())
            }
        }
    }
}

/// A SHA-256 fed as bytes arrive, taken on a thread of its own where one can be started: on
/// a device the compressed stream's hash then runs beside zstd instead of before it, on the
/// thread that was the install's bottleneck.
enum Sha256Stream {
    Inline(sha2::Sha256),
    Background {
        /// Bytes not sent yet: they go as one batch of [`COMPRESSED_HASH_BATCH`].
        pending: Vec<u8>,
        chunks: mpsc::SyncSender<Vec<u8>>,
        /// Batches the worker hashed, handed back to be filled again.
        spare: mpsc::Receiver<Vec<u8>>,
        worker: std::thread::JoinHandle<sha2::Sha256>,
    },
}

impl Sha256Stream {
    /// Hashing on a new thread; inline if no thread can be started.
    fn background() -> Self {
        let (chunks, queue) = mpsc::sync_channel::<Vec<u8>>(COMPRESSED_HASH_QUEUE);
        let (give_back, spare) = mpsc::channel::<Vec<u8>>();
        let spawned = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut hasher = sha2::Sha256::new();
                for chunk in queue {
                    hasher.update(&chunk);
                    // Once the stream is done with, nobody takes batches back.
                    let _ = give_back.send(chunk);
                }
                hasher
            });
        match spawned {
            Ok(worker) => Sha256Stream::Background {
                pending: Vec::with_capacity(COMPRESSED_HASH_BATCH),
                chunks,
                spare,
                worker,
            },
            Err(_) => Sha256Stream::Inline(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Sha256Stream::Inline(hasher) => hasher.update(data),
            Sha256Stream::Background {
                pending,
                chunks,
                spare,
                ..
            } => {
                pending.extend_from_slice(data);
                if pending.len() >= COMPRESSED_HASH_BATCH {
                    let next = match spare.try_recv() {
                        Ok(mut used) => {
                            used.clear();
                            used
                        }
                        Err(_) => Vec::with_capacity(COMPRESSED_HASH_BATCH),
                    };
                    // The worker only stops when `chunks` is dropped (or if it panicked, which
                    // `into_hasher` reports).
                    let _ = chunks.send(std::mem::replace(pending, next));
                }
            }
        }
    }

    /// The hasher with every byte given to `update` in it.
    fn into_hasher(self) -> sha2::Sha256 {
        match self {
            Sha256Stream::Inline(hasher) => hasher,
            Sha256Stream::Background {
                pending,
                chunks,
                worker,
                ..
            } => {
                if !pending.is_empty() {
                    let _ = chunks.send(pending);
                }
                drop(chunks);
                worker.join().expect("the SHA-256 thread panicked")
            }
        }
    }
}

/// An empty inline hasher (what `std::mem::take` leaves behind).
impl Default for Sha256Stream {
    fn default() -> Self {
        Sha256Stream::Inline(sha2::Sha256::new())
    }
}

/// The compressed side of a payload: at most `remaining` bytes of the bundle, counted and
/// hashed as the decoder pulls them.
struct Compressed<'a, R> {
    reader: &'a mut R,
    remaining: u64,
    count: u64,
    hasher: Sha256Stream,
    /// The bundle ended before `remaining` reached 0.
    ended_early: bool,
    /// The bundle reader returned an error.
    failed_io: bool,
}

impl<R: Read> Read for Compressed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = match self.reader.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.failed_io = true;
                }
                return Err(e);
            }
        };
        if n == 0 {
            self.ended_early = true;
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// `Err(PayloadHashMismatch)` naming `which` sum of `info`'s payload unless `hasher` ends on
/// `expected`.
fn check_sum(
    info: &PayloadInfo,
    which: &'static str,
    expected: Sha256Sum,
    hasher: sha2::Sha256,
) -> Result<(), Error> {
    let got = Sha256Sum(hasher.finalize().into());
    if got == expected {
        return Ok(());
    }
    Err(Error::PayloadHashMismatch {
        name: info.name.clone(),
        which,
        expected,
        got,
    })
}

/// Fills `buf` as far as the data goes; returns how many bytes were read.
fn read_full(
    reader: &mut impl Read,
    buf: &mut [u8],
    section: &'static str,
) -> Result<usize, Error> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Read { section, source }),
        }
    }
    Ok(got)
}

/// Reads exactly `len` bytes (bounded by the header checks) or reports truncation.
fn read_section(reader: &mut impl Read, len: u32, section: &'static str) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; len as usize];
    let got = read_full(reader, &mut buf, section)?;
    if got < buf.len() {
        return Err(Error::Truncated {
            section,
            expected: u64::from(len),
            got: got as u64,
        });
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_hash_equals_the_inline_one_whatever_the_pieces() {
        // Several batches, reused ones, and a remainder; pieces of odd sizes.
        let data: Vec<u8> = (0..COMPRESSED_HASH_BATCH * 5 + 12_345)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        for piece in [1, 16 * 1024 - 3, COMPRESSED_HASH_BATCH + 1, data.len()] {
            let mut stream = Sha256Stream::background();
            assert!(matches!(stream, Sha256Stream::Background { .. }));
            for part in data.chunks(piece) {
                stream.update(part);
            }
            assert_eq!(
                stream.into_hasher().finalize(),
                sha2::Sha256::digest(&data),
                "pieces of {piece} bytes"
            );
        }
        let empty = Sha256Stream::background().into_hasher().finalize();
        assert_eq!(empty, sha2::Sha256::digest(b""));
    }
}
