//! Client certificates for mutual TLS: what a PEM certificate says (subject, expiry), and
//! whether a private key belongs to it.

use chrono::{DateTime, Utc};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use super::ClientTls;

/// The most bytes of PEM in one field (a chain of a few certificates fits).
pub const MAX_PEM: usize = 32 * 1024;

/// What the API shows of a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateInfo {
    /// The subject, as RFC 4514 writes it (`CN=hookrelay,O=Example`).
    pub subject: String,
    pub expires_at: DateTime<Utc>,
}

/// The certificates of a PEM text, in order; an error unless there is at least one.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    if pem.len() > MAX_PEM {
        return Err(format!("is longer than {MAX_PEM} bytes"));
    }
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// What the API shows of the first certificate of `pem`, and its public key (DER of the
/// SubjectPublicKeyInfo).
fn first(pem: &str) -> Result<(CertificateInfo, Vec<u8>), String> {
    let der = certificates(pem)?.swap_remove(0);
    let cert = parse(&der)?;
    let expires_at = DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or("has an expiry out of range")?;
    let info = CertificateInfo {
        subject: cert.subject().to_string(),
        expires_at,
    };
    Ok((info, cert.public_key().raw.to_vec()))
}

fn parse<'a>(der: &'a [u8]) -> Result<x509_parser::certificate::X509Certificate<'a>, String> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| format!("is not an X.509 certificate: {e}"))
}

/// The subject and expiry of the first certificate of `pem`.
pub fn describe(pem: &str) -> Result<CertificateInfo, String> {
    first(pem).map(|(info, _)| info)
}

/// Checks a client certificate, its key and the CA certificates: each parses, and the key
/// is the certificate's; the certificate's subject and expiry when there is one. The error
/// names the field (`certificate`, `key`, `ca`).
pub fn check(tls: &ClientTls) -> Result<Option<CertificateInfo>, (&'static str, String)> {
    if let Some(ca) = &tls.ca {
        for der in certificates(ca).map_err(|e| ("ca", e))? {
            parse(&der).map_err(|e| ("ca", e))?;
        }
    }
    let Some(identity) = &tls.identity else {
        if tls.ca.is_none() {
            return Err(("certificate", "or ca is needed".into()));
        }
        return Ok(None);
    };
    let (info, public_key) = first(&identity.certificate).map_err(|e| ("certificate", e))?;
    if identity.key.len() > MAX_PEM {
        return Err(("key", format!("is longer than {MAX_PEM} bytes")));
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes())
        .map_err(|e| ("key", format!("is not a PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ("key", format!("is not a key hookrelay can use: {e}")))?;
    let matches = signing
        .public_key()
        .is_some_and(|spki| spki.as_ref() == public_key.as_slice());
    if !matches {
        return Err(("key", "does not belong to the certificate".into()));
    }
    Ok(Some(info))
}
