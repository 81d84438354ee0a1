//! A server certificate verifier that does not trust the local clock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use crate::formats::{describe, from_unix_secs};

/// Verifies the chain and the name with webpki, at the latest `notBefore` of the certificates
/// the server sent instead of the current time, and remembers their common validity window.
#[derive(Debug)]
pub(crate) struct WindowVerifier {
    inner: Arc<WebPkiServerVerifier>,
    window: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl WindowVerifier {
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> WindowVerifier {
        WindowVerifier {
            inner,
            window: Mutex::new(None),
        }
    }

    /// The validity window of the last chain that passed verification.
    pub fn verified_window(&self) -> Option<(SystemTime, SystemTime)> {
        *self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ServerCertVerifier for WindowVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let (not_before, not_after) =
            validity_window(std::iter::once(end_entity).chain(intermediates))?;
        // A notBefore before 1970 cannot be a UnixTime; verifying at 1970 is then still inside
        // the window unless the window ends before 1970, which webpki reports as expired.
        let at =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(not_before).unwrap_or(0)));
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            at,
        )?;
        *self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((from_unix_secs(not_before), from_unix_secs(not_after)));
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `[max notBefore, min notAfter]` of `certs`, in seconds since 1970.
fn validity_window<'a>(
    certs: impl Iterator<Item = &'a CertificateDer<'a>>,
) -> Result<(i64, i64), Error> {
    let mut window = (i64::MIN, i64::MAX);
    for der in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let validity = cert.validity();
        window.0 = window.0.max(validity.not_before.timestamp());
        window.1 = window.1.min(validity.not_after.timestamp());
    }
    if window.0 > window.1 {
        return Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(NoCommonValidity(window))),
        )));
    }
    Ok(window)
}

/// The certificates a server sent are never valid at the same time.
#[derive(Debug, thiserror::Error)]
#[error(
    "the certificates sent are never valid at the same time (latest notBefore {}, earliest \
     notAfter {})",
    describe(from_unix_secs(.0.0)),
    describe(from_unix_secs(.0.1))
)]
struct NoCommonValidity((i64, i64));
