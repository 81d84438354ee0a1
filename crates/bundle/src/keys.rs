//! Ed25519 signing keys, their files and the set of keys a device trusts.
//!
//! Key files are the standard PEM forms, so OpenSSL makes and reads them too:
//!
//! * private key: PKCS#8 v1 as RFC 8410 and OpenSSL write it (`-----BEGIN PRIVATE KEY-----`),
//!   written mode 0600, never overwritten; `openssl genpkey -algorithm ed25519 -out bundle.key`
//!   makes one. Both PKCS#8 v1 and v2 are read.
//! * public key: SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), conventionally named
//!   `<name>.pub`; `openssl pkey -in bundle.key -pubout -out bundle.pub` derives one.
//!
//! A key's id is the first 16 hex digits of the SHA-256 of its 32 raw public key bytes.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use sha2::Digest;

use crate::Error;

/// The file name extension of public key files in a trusted key directory.
pub const PUBLIC_KEY_EXTENSION: &str = "pub";

/// A key id: the first 8 bytes (16 hex digits) of the SHA-256 of the raw public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = String;

    /// Exactly 16 lower-case hex digits.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(format!("key id {s:?} is not 16 lower-case hex digits"));
        }
        let mut out = [0u8; 8];
        hex::decode_to_slice(s, &mut out).map_err(|e| e.to_string())?;
        Ok(Self(out))
    }
}

/// An Ed25519 public key: what a device trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// The key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Error> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|e| Error::InvalidKey {
                origin: "raw key bytes".into(),
                expected: "an ed25519 public key",
                reason: e.to_string(),
            })
    }

    /// The 32 raw bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// This key's id.
    pub fn key_id(&self) -> KeyId {
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    /// Parses a `-----BEGIN PUBLIC KEY-----` PEM text.
    pub fn from_pem(text: &str) -> Result<Self, Error> {
        Self::parse(text, "PEM text".into())
    }

    /// The `-----BEGIN PUBLIC KEY-----` PEM text, with a final newline.
    pub fn to_pem(&self) -> String {
        // Encoding 32 bytes into a fixed structure cannot fail.
        self.0.to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::KeyFile {
            action: "reading key file",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path.display().to_string())
    }

    /// Writes the public key file (mode 0644); replaces an existing file atomically.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        write_key_file(path, self.to_pem().as_bytes(), 0o644, Replace::Yes)
    }

    fn parse(text: &str, origin: String) -> Result<Self, Error> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(text)
            .map(Self)
            .map_err(|e| Error::InvalidKey {
                origin,
                expected: "an ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)",
                reason: e.to_string(),
            })
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// An Ed25519 private key: what the bundle maker signs with. Its bytes are wiped on drop and
/// never printed.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A new key from the operating system's random number generator.
    pub fn generate() -> Result<Self, Error> {
        use rand::TryRngCore;

        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Random {
                reason: e.to_string(),
            })?;
        let key = Self::from_seed(&seed);
        seed.fill(0);
        Ok(key)
    }

    /// The key whose 32-byte secret is `seed` (for tests and for keys kept elsewhere).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(seed))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The id of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public_key().key_id()
    }

    /// Reads a PKCS#8 PEM private key file (OpenSSL's ed25519 keys included).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::KeyFile {
            action: "reading key file",
            path: path.to_owned(),
            source,
        })?;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&text)
            .map(Self)
            .map_err(|e| Error::InvalidKey {
                origin: path.display().to_string(),
                expected: "an ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----)",
                reason: e.to_string(),
            })
    }

    /// Writes the private key file, mode 0600. Refuses to replace an existing file: a signing
    /// key overwritten by mistake cannot be recovered.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        // PKCS#8 v1 without the public key, as OpenSSL writes it: OpenSSL 3.0 cannot read the
        // v2 form (with the public key) that `SigningKey::to_pkcs8_pem` makes.
        let mut keypair = KeypairBytes {
            secret_key: self.0.to_bytes(),
            public_key: None,
        };
        let pem = keypair.to_pkcs8_pem(LineEnding::LF);
        keypair.secret_key.fill(0);
        let pem = pem.map_err(|e| Error::InvalidKey {
            origin: path.display().to_string(),
            expected: "an encodable ed25519 private key",
            reason: e.to_string(),
        })?;
        write_key_file(path, pem.as_bytes(), 0o600, Replace::No)
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.key_id())
    }
}

#[derive(PartialEq)]
enum Replace {
    Yes,
    No,
}

/// Writes a temporary file with `mode` in the target's directory, flushes it, then renames it
/// over the target (`Replace::Yes`) or hard-links it to the target, which fails if the target
/// exists (`Replace::No`); then flushes the directory.
fn write_key_file(path: &Path, data: &[u8], mode: u32, replace: Replace) -> Result<(), Error> {
    let err = |source| Error::KeyFile {
        action: "writing key file",
        path: path.to_owned(),
        source,
    };
    if replace == Replace::No && fs::symlink_metadata(path).is_ok() {
        return Err(Error::KeyExists {
            path: path.to_owned(),
        });
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".key-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(err)?;
    // The umask may have narrowed the mode; set it exactly.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    (|| {
        let mut file = tmp.as_file();
        file.write_all(data)?;
        file.sync_all()
    })()
    .map_err(err)?;
    match replace {
        Replace::Yes => {
            tmp.persist(path).map_err(|e| err(e.error))?;
        }
        Replace::No => {
            if let Err(e) = fs::hard_link(tmp.path(), path) {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    return Err(Error::KeyExists {
                        path: path.to_owned(),
                    });
                }
                return Err(err(e));
            }
            // Dropping `tmp` removes the temporary name.
        }
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

/// A public key file in a trusted key directory that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKeyFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// The public keys a device accepts bundle signatures from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    dir: Option<PathBuf>,
    skipped: Vec<SkippedKeyFile>,
}

impl TrustedKeys {
    /// No keys (only unsigned bundles can pass, and only when the policy allows them).
    pub fn new() -> Self {
        Self::default()
    }

    /// Exactly these keys.
    pub fn from_keys(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        let mut trusted = Self::new();
        for key in keys {
            trusted.insert(key);
        }
        trusted
    }

    /// Adds a key (a key already present is not added twice).
    pub fn insert(&mut self, key: PublicKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Every `*.pub` file in `dir` (the image carries them in
    /// `/usr/share/baleen/update-keys/`), in name order; other files are ignored.
    ///
    /// A missing directory gives an empty set. A `*.pub` file that cannot be read or parsed is
    /// skipped and listed in [`skipped`](Self::skipped) rather than failing the whole set: one
    /// bad file must not leave a device unable to take the update that fixes it.
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let mut trusted = Self {
            dir: Some(dir.to_owned()),
            ..Self::default()
        };
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(trusted),
            Err(source) => {
                return Err(Error::KeyFile {
                    action: "listing key directory",
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::KeyFile {
                action: "listing key directory",
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == PUBLIC_KEY_EXTENSION) {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            match PublicKey::load(&path) {
                Ok(key) => trusted.insert(key),
                Err(e) => trusted.skipped.push(SkippedKeyFile {
                    path,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(trusted)
    }

    /// The trusted keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Their ids, in load order.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(PublicKey::key_id).collect()
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The directory the keys came from, if [`load_dir`](Self::load_dir) made the set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// `*.pub` files that [`load_dir`](Self::load_dir) could not use, with the reason.
    pub fn skipped(&self) -> &[SkippedKeyFile] {
        &self.skipped
    }

    /// The trusted keys with this id (normally zero or one).
    pub(crate) fn with_id(&self, id: KeyId) -> impl Iterator<Item = &PublicKey> {
        self.keys.iter().filter(move |k| k.key_id() == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_the_sha256_prefix_of_the_raw_key() {
        let key = SigningKey::from_seed(&[7; 32]);
        let raw = key.public_key().to_bytes();
        let digest = hex::encode(sha2::Sha256::digest(raw));
        assert_eq!(key.key_id().to_string(), digest[..16]);
        assert_eq!(
            key.key_id().to_string().parse::<KeyId>().unwrap(),
            key.key_id()
        );
        assert!("ABCDEF0123456789".parse::<KeyId>().is_err());
        assert!("abc".parse::<KeyId>().is_err());
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let key = SigningKey::from_seed(&[0x5a; 32]);
        let text = format!("{key:?}");
        assert_eq!(text, format!("SigningKey({})", key.key_id()));
    }

    #[test]
    fn public_key_pem_round_trips() {
        let key = SigningKey::from_seed(&[1; 32]).public_key();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), key);
        assert!(
            PublicKey::from_pem("hello")
                .unwrap_err()
                .to_string()
                .starts_with(
                    "PEM text is not an ed25519 public key in PEM (-----BEGIN PUBLIC KEY-----)"
                )
        );
    }

    /// Made with `openssl genpkey -algorithm ed25519`, `openssl pkey -pubout` and
    /// `openssl pkeyutl -sign -rawin` (OpenSSL 3.0).
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIA2ThvJUEPhRpfT8U76d3kG6xGlcPwp51LzCekQ14VV+
-----END PRIVATE KEY-----
";
    const OPENSSL_PUB: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAqvGM8Ifz02Cr6uDCa9DzxERnq98/wl0mlhnqTGBqwYk=
-----END PUBLIC KEY-----
";
    const OPENSSL_SIGNATURE: &str = "bbc1464bc5c3ae9e4363793be9bc9c96228880d6a8c020a2b0b0bbb635b961d6\
                                     ec2cdd33a37ba42e00e42bce2b76fd1b05bf3beb9f31307594baa1299d95900a";

    #[test]
    fn reads_openssl_key_files_and_signs_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("openssl.key");
        fs::write(&path, OPENSSL_KEY).unwrap();
        let key = SigningKey::load(&path).unwrap();
        let public = PublicKey::from_pem(OPENSSL_PUB).unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(public.to_pem(), OPENSSL_PUB);
        let expected: [u8; 64] = hex::decode(OPENSSL_SIGNATURE).unwrap().try_into().unwrap();
        assert_eq!(key.sign(b"{\"x\":1}"), expected);
        assert!(public.verify(b"{\"x\":1}", &expected));
        assert!(!public.verify(b"{\"x\":2}", &expected));

        // And writes the same file OpenSSL does.
        let again = dir.path().join("again.key");
        key.save(&again).unwrap();
        assert_eq!(fs::read_to_string(&again).unwrap(), OPENSSL_KEY);
    }
}
