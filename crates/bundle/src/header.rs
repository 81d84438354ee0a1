//! The fixed 20-byte header at the start of every bundle.

use crate::Error;

/// The first eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"BALEENB\0";
/// The bundle format version this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the fixed header: magic, format version, manifest length, signature block length.
pub const HEADER_LEN: usize = 20;
/// Largest manifest accepted (1 MiB). Read into memory before it is verified, so it is bounded.
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;
/// Largest signature block accepted (64 KiB).
pub const MAX_SIGNATURES_LEN: u32 = 64 << 10;

/// The decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub manifest_len: u32,
    pub signatures_len: u32,
}

impl Header {
    /// The header bytes, all integers little-endian.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.signatures_len.to_le_bytes());
        out
    }

    /// Checks the magic, the format version and both lengths' limits.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, Error> {
        if bytes[..8] != MAGIC {
            return Err(Error::NotABundle {
                found: bytes[..8].to_vec(),
            });
        }
        let word = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let version = word(8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header = Self {
            manifest_len: word(12),
            signatures_len: word(16),
        };
        check_len("manifest", header.manifest_len, MAX_MANIFEST_LEN)?;
        check_len("signature block", header.signatures_len, MAX_SIGNATURES_LEN)?;
        Ok(header)
    }
}

fn check_len(section: &'static str, len: u32, max: u32) -> Result<(), Error> {
    if len == 0 || len > max {
        return Err(Error::BadHeaderLength { section, len, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_documented_bytes() {
        let header = Header {
            manifest_len: 0x0102,
            signatures_len: 2,
        };
        assert_eq!(
            header.encode(),
            *b"BALEENB\0\x01\0\0\0\x02\x01\0\0\x02\0\0\0"
        );
        assert_eq!(Header::decode(&header.encode()).unwrap(), header);
    }

    #[test]
    fn refuses_other_magic_versions_and_lengths() {
        let good = Header {
            manifest_len: 10,
            signatures_len: 2,
        }
        .encode();

        let mut bad = good;
        bad[..4].copy_from_slice(b"\x7fELF");
        assert!(
            Header::decode(&bad).unwrap_err().to_string().starts_with(
                "not a baleen bundle: it starts with [7f, 45, 4c, 46, 45, 4e, 42, 00]"
            )
        );

        let mut bad = good;
        bad[8] = 2;
        assert_eq!(
            Header::decode(&bad).unwrap_err().to_string(),
            "bundle format version 2 is not supported (this baleen reads version 1): make the \
             bundle with a baleen release that writes version 1, or update to an OS release that \
             reads version 2 first"
        );

        let mut bad = good;
        bad[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            Header::decode(&bad).unwrap_err().to_string(),
            "bundle header is invalid: the manifest length 0 is outside 1..=1048576 bytes"
        );

        let mut bad = good;
        bad[16..20].copy_from_slice(&(MAX_SIGNATURES_LEN + 1).to_le_bytes());
        assert_eq!(
            Header::decode(&bad).unwrap_err().to_string(),
            "bundle header is invalid: the signature block length 65537 is outside 1..=65536 bytes"
        );
    }
}
