//! Reading an image without mounting it: the GPT and the FAT boot partition
//! through diskimage, ext4 through debugfs; and comparing files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use md5::{Digest, Md5};
use systests::run;

pub fn partitions(image: &Path) -> Vec<diskimage::PartitionInfo> {
    diskimage::read_partition_table(image)
        .unwrap_or_else(|e| panic!("reading the partition table of {}: {e}", image.display()))
}

pub fn partition(image: &Path, label: &str) -> diskimage::PartitionInfo {
    partitions(image)
        .into_iter()
        .find(|p| p.name == label)
        .unwrap_or_else(|| panic!("no partition {label} in {}", image.display()))
}

/// Every file of the boot partition (path → contents), read through diskimage.
pub fn boot_files(image: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut disk = diskimage::Disk::open(image).unwrap_or_else(|e| panic!("{e}"));
    let fs = diskimage::open_fat_partition(&mut disk, "resin-boot")
        .unwrap_or_else(|e| panic!("opening resin-boot of {}: {e}", image.display()));
    let paths = fs.list_files().unwrap_or_else(|e| panic!("{e}"));
    paths
        .into_iter()
        .filter(|p| !p.ends_with('/'))
        .map(|p| {
            let data = fs.read_file(&p).unwrap_or_else(|e| panic!("{e}"));
            (p, data)
        })
        .collect()
}

pub fn file<'f>(files: &'f BTreeMap<String, Vec<u8>>, path: &str) -> &'f [u8] {
    files.get(path).unwrap_or_else(|| {
        panic!(
            "{path} missing from the boot partition, which holds {:?}",
            files.keys().collect::<Vec<_>>()
        )
    })
}

pub fn text<'f>(files: &'f BTreeMap<String, Vec<u8>>, path: &str) -> &'f str {
    std::str::from_utf8(file(files, path))
        .unwrap_or_else(|e| panic!("{path} on the boot partition is not UTF-8: {e}"))
}

/// os-release `KEY=value` lines, values as written (quotes kept).
pub fn os_release_fields(text: &str) -> BTreeMap<&str, &str> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("os-release line without '=': {l:?}"))
        })
        .collect()
}

pub fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

pub fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `<md5>  <path>` lines of a balenaos.fingerprint, checked for form.
pub fn fingerprint_lines(fingerprint: &str) -> Vec<(&str, &str)> {
    fingerprint
        .lines()
        .map(|line| {
            let (md5, path) = line
                .split_once("  ")
                .unwrap_or_else(|| panic!("fingerprint line is not `<md5>  <path>`: {line:?}"));
            assert!(
                is_md5_hex(md5),
                "fingerprint line has no md5 (32 lower-case hex digits): {line:?}"
            );
            (md5, path)
        })
        .collect()
}

/// One ext4 partition of an image, read with debugfs through its `?offset=`
/// I/O option: no loop device, no mount.
pub struct Ext4Reader {
    spec: String,
}

impl Ext4Reader {
    pub fn open(image: &Path, label: &str) -> Self {
        let part = partition(image, label);
        Ext4Reader {
            spec: format!("{}?offset={}", image.display(), part.offset_bytes),
        }
    }

    /// Output of one debugfs request. debugfs exits 0 even when the request
    /// fails and reports that on stderr, after its version banner: anything
    /// else on stderr is a failure.
    pub fn request(&self, request: &str) -> Vec<u8> {
        let out = run(Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(&self.spec));
        let complaints: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
            .collect();
        assert!(
            out.success() && complaints.is_empty(),
            "debugfs -R '{request}' {}: {out}",
            self.spec
        );
        out.stdout
    }

    pub fn cat(&self, path: &str) -> Vec<u8> {
        self.request(&format!("cat {path}"))
    }

    pub fn text(&self, path: &str) -> String {
        String::from_utf8(self.cat(path))
            .unwrap_or_else(|e| panic!("{path} in {} is not UTF-8: {e}", self.spec))
    }

    /// `debugfs stat` output: `Type: regular    Mode:  0755` and so on.
    pub fn stat(&self, path: &str) -> String {
        String::from_utf8_lossy(&self.request(&format!("stat {path}"))).into_owned()
    }

    pub fn assert_regular_file(&self, path: &str) -> String {
        let stat = self.stat(path);
        assert!(
            stat.contains("Type: regular"),
            "{path} in {} is not a regular file:\n{stat}",
            self.spec
        );
        stat
    }
}

/// `a` and `b` hold the same bytes; the message names the first difference.
pub fn assert_same_bytes(a: &Path, b: &Path, why: &str) {
    let open = |p: &Path| File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    let len = |f: &File, p: &Path| {
        f.metadata()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .len()
    };
    assert_eq!(
        len(&fa, a),
        len(&fb, b),
        "{why}: {} and {} differ in size",
        a.display(),
        b.display()
    );
    let mut ba = vec![0u8; 8 << 20];
    let mut bb = vec![0u8; 8 << 20];
    let mut offset = 0u64;
    loop {
        let na = read_full(&mut fa, &mut ba);
        let nb = read_full(&mut fb, &mut bb);
        assert_eq!(na, nb, "{why}: short read at {offset}");
        if ba[..na] != bb[..nb] {
            let at = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap_or(0);
            panic!(
                "{why}: {} differs from {} at byte {}",
                a.display(),
                b.display(),
                offset + at as u64
            );
        }
        if na == 0 {
            return;
        }
        offset += na as u64;
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("reading: {e}"),
        }
    }
    n
}

/// A scratch directory beside the build's other temporary files (not /tmp,
/// which may be a small tmpfs), removed when dropped.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("image-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("creating a scratch directory")
}
