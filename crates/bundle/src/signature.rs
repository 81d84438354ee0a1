//! The signature block and the trust decision (pure).
//!
//! The block is a JSON list of `{"key_id", "algorithm", "signature"}` objects over the exact
//! manifest bytes. Entries with an algorithm other than `ed25519` are ignored (room for new
//! algorithms), and so are extra fields in an entry; the block itself is not signed, so
//! nothing in it can add trust, only a signature that verifies.

use serde::{Deserialize, Serialize};

use crate::{Error, KeyId, SigningKey, TrustedKeys};

/// The only signature algorithm this version makes and checks.
pub const ED25519: &str = "ed25519";

/// What the device may accept besides bundles signed by a trusted key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Accept bundles that carry no signature by a trusted key: unsigned ones, and ones signed
    /// only by keys the device does not know (which prove no more than no signature).
    /// A signature by a trusted key that fails to verify is refused even then. For
    /// development images only.
    pub allow_unsigned: bool,
}

/// Why a bundle was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A signature by this trusted key verified.
    Signed {
        /// The key.
        key_id: KeyId,
    },
    /// No signature at all; accepted because the policy allows unsigned bundles.
    Unsigned,
    /// Signatures only by unknown keys; accepted because the policy allows unsigned bundles.
    UntrustedSigners {
        /// The keys that signed.
        key_ids: Vec<KeyId>,
    },
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trust::Signed { key_id } => write!(f, "signed by trusted key {key_id}"),
            Trust::Unsigned => {
                f.write_str("UNSIGNED, accepted because unsigned bundles are allowed")
            }
            Trust::UntrustedSigners { key_ids } => write!(
                f,
                "signed only by unknown keys ({}), accepted because unsigned bundles are allowed",
                key_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RawSignature {
    key_id: String,
    algorithm: String,
    signature: String,
}

/// The signature block for `manifest`: `[]` without a signer.
pub(crate) fn encode_block(manifest: &[u8], signer: Option<&SigningKey>) -> Vec<u8> {
    let entries: Vec<RawSignature> = signer
        .map(|key| RawSignature {
            key_id: key.key_id().to_string(),
            algorithm: ED25519.to_owned(),
            signature: hex::encode(key.sign(manifest)),
        })
        .into_iter()
        .collect();
    // Strings only: serializing to memory cannot fail.
    serde_json::to_vec(&entries).unwrap_or_else(|_| b"[]".to_vec())
}

/// Decides whether `manifest` is trusted, from its signature block.
///
/// Accepted when any ed25519 signature by a trusted key verifies. Otherwise refused with the
/// most telling reason: a trusted key's signature that does not verify (tampering or damage),
/// then signatures by unknown keys, then no signature; the last two pass when the policy
/// allows unsigned bundles.
pub(crate) fn verify(
    manifest: &[u8],
    block: &[u8],
    trusted: &TrustedKeys,
    policy: Policy,
) -> Result<Trust, Error> {
    let entries: Vec<RawSignature> =
        serde_json::from_slice(block).map_err(|e| Error::InvalidSignatureBlock {
            reason: e.to_string(),
        })?;
    let mut signers = Vec::new();
    let mut failed = None;
    for (i, entry) in entries.iter().enumerate() {
        let key_id: KeyId = entry
            .key_id
            .parse()
            .map_err(|e| Error::InvalidSignatureBlock {
                reason: format!("entry {i}: {e}"),
            })?;
        if entry.algorithm != ED25519 {
            continue;
        }
        let signature =
            parse_signature(&entry.signature).map_err(|reason| Error::InvalidSignatureBlock {
                reason: format!("entry {i}: {reason}"),
            })?;
        let mut known = false;
        for key in trusted.with_id(key_id) {
            known = true;
            if key.verify(manifest, &signature) {
                return Ok(Trust::Signed { key_id });
            }
        }
        if known {
            failed.get_or_insert(key_id);
        } else if !signers.contains(&key_id) {
            signers.push(key_id);
        }
    }
    if let Some(key_id) = failed {
        return Err(Error::BadSignature { key_id });
    }
    match (signers.is_empty(), policy.allow_unsigned) {
        (true, true) => Ok(Trust::Unsigned),
        (false, true) => Ok(Trust::UntrustedSigners { key_ids: signers }),
        (true, false) => Err(Error::Unsigned {
            trusted: trusted.len(),
            keys_dir: trusted.dir().map(ToOwned::to_owned),
        }),
        (false, false) => Err(Error::UntrustedSigner {
            signers,
            trusted: trusted.key_ids(),
            keys_dir: trusted.dir().map(ToOwned::to_owned),
        }),
    }
}

fn parse_signature(text: &str) -> Result<[u8; 64], String> {
    if text.len() != 128 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("the ed25519 signature is not 128 lower-case hex digits".into());
    }
    let mut out = [0u8; 64];
    hex::decode_to_slice(text, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = b"{\"format_version\":1}";

    fn key(n: u8) -> SigningKey {
        SigningKey::from_seed(&[n; 32])
    }

    fn trusting(keys: &[&SigningKey]) -> TrustedKeys {
        TrustedKeys::from_keys(keys.iter().map(|k| k.public_key()))
    }

    const STRICT: Policy = Policy {
        allow_unsigned: false,
    };
    const LAX: Policy = Policy {
        allow_unsigned: true,
    };

    #[test]
    fn block_is_a_json_list_of_hex_signatures() {
        assert_eq!(encode_block(MANIFEST, None), b"[]");
        let text = String::from_utf8(encode_block(MANIFEST, Some(&key(1)))).unwrap();
        let sig = hex::encode(key(1).sign(MANIFEST));
        assert_eq!(
            text,
            format!(
                "[{{\"key_id\":\"{}\",\"algorithm\":\"ed25519\",\"signature\":\"{sig}\"}}]",
                key(1).key_id()
            )
        );
    }

    #[test]
    fn trusted_signature_verifies() {
        let block = encode_block(MANIFEST, Some(&key(1)));
        assert_eq!(
            verify(MANIFEST, &block, &trusting(&[&key(2), &key(1)]), STRICT).unwrap(),
            Trust::Signed {
                key_id: key(1).key_id()
            }
        );
    }

    #[test]
    fn changed_manifest_fails_even_when_unsigned_is_allowed() {
        let block = encode_block(MANIFEST, Some(&key(1)));
        let err = verify(
            b"{\"format_version\":2}",
            &block,
            &trusting(&[&key(1)]),
            LAX,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "bundle signature by trusted key {} does not match the manifest: the bundle was \
                 modified or damaged after it was signed; download or copy it again, or rebuild it",
                key(1).key_id()
            )
        );
    }

    #[test]
    fn one_good_signature_among_several_is_enough() {
        let good: Vec<serde_json::Value> =
            serde_json::from_slice(&encode_block(MANIFEST, Some(&key(1)))).unwrap();
        let other: Vec<serde_json::Value> =
            serde_json::from_slice(&encode_block(b"other", Some(&key(2)))).unwrap();
        let unknown = serde_json::json!({
            "key_id": "0011223344556677", "algorithm": "ml-dsa-65", "signature": "zz", "extra": 1
        });
        let block = serde_json::to_vec(&vec![unknown, other[0].clone(), good[0].clone()]).unwrap();
        assert_eq!(
            verify(MANIFEST, &block, &trusting(&[&key(1), &key(2)]), STRICT).unwrap(),
            Trust::Signed {
                key_id: key(1).key_id()
            }
        );
    }

    #[test]
    fn unsigned_needs_the_policy() {
        let mut trusted = trusting(&[&key(1)]);
        let err = verify(MANIFEST, b"[]", &trusted, STRICT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle is not signed, and this device only installs bundles signed by one of its 1 \
             trusted key(s): make the bundle with a signing key, or allow unsigned bundles \
             (development images only)"
        );
        assert_eq!(
            verify(MANIFEST, b"[]", &trusted, LAX).unwrap(),
            Trust::Unsigned
        );
        trusted = TrustedKeys::new();
        assert!(verify(MANIFEST, b"[]", &trusted, STRICT).is_err());
    }

    #[test]
    fn untrusted_signer_is_named() {
        let block = encode_block(MANIFEST, Some(&key(3)));
        let err = verify(MANIFEST, &block, &trusting(&[&key(1)]), STRICT).unwrap_err();
        let (k3, k1) = (key(3).key_id(), key(1).key_id());
        assert_eq!(
            err.to_string(),
            format!(
                "bundle is signed only by untrusted key(s) {k3} and this device trusts only {k1}: \
                 sign the bundle with a trusted key, or add the public key file of {k3} to the \
                 image's trusted keys"
            )
        );
        assert_eq!(
            verify(MANIFEST, &block, &trusting(&[&key(1)]), LAX).unwrap(),
            Trust::UntrustedSigners { key_ids: vec![k3] }
        );
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let trusted = trusting(&[&key(1)]);
        for (block, reason) in [
            (&b"{}"[..], "invalid type: map, expected a sequence at line 1 column 0"),
            (
                b"[{\"key_id\":\"x\",\"algorithm\":\"ed25519\",\"signature\":\"\"}]",
                "entry 0: key id \"x\" is not 16 lower-case hex digits",
            ),
            (
                b"[{\"key_id\":\"0011223344556677\",\"algorithm\":\"ed25519\",\"signature\":\"ab\"}]",
                "entry 0: the ed25519 signature is not 128 lower-case hex digits",
            ),
        ] {
            assert_eq!(
                verify(MANIFEST, block, &trusted, LAX).unwrap_err().to_string(),
                format!("bundle signature block is invalid: {reason}")
            );
        }
    }
}
