//! Standard Webhooks signing and verification.
//!
//! Secret generation, signing with several secrets at once (rotation), and a verifier that
//! takes plain header values (for the CLI, the inbox and receivers that are not `http`-based).
//! Signatures are over the body's bytes, whatever they are: the official `standardwebhooks`
//! crate refuses bodies that are not UTF-8, so the HMAC is computed here; the tests check it
//! against the specification's reference vector and the official crate.
//!
//! Two schemes, told apart by the key's prefix as the specification does:
//! - `whsec_<base64 key>`: HMAC-SHA256, signatures `v1,<base64>`; sender and receiver share it.
//! - `whsk_<base64 key>`: Ed25519 (asymmetric), signatures `v1a,<base64>`; the receiver holds
//!   only the public key `whpk_<base64 32 bytes>`, so it can verify but never forge. The secret
//!   key is the 64-byte libsodium form (seed then public key); a bare 32-byte seed is accepted.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Header names, as the specification spells them.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The signature header of the community platform's format
/// ([`crate::domain::DeliveryFormat::Community`]).
pub const HEADER_COMMUNITY_SIGNATURE: &str = "x-webhook-signature";
/// Longest secret an endpoint of the community platform's format may have.
pub const MAX_COMMUNITY_SECRET_LEN: usize = 512;

/// How far a timestamp may be from now before a receiver rejects it.
pub const TOLERANCE_SECS: i64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";
const ED25519_SECRET_PREFIX: &str = "whsk_";
const ED25519_PUBLIC_PREFIX: &str = "whpk_";

/// Why a secret or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("secret must be whsec_ followed by base64 of 24 to 64 bytes, or whsk_ followed by base64 of a 32- or 64-byte Ed25519 key")]
    InvalidSecret,
    #[error("key must be whsec_ (HMAC secret), whpk_ (Ed25519 public key) or whsk_ (Ed25519 secret key) followed by base64")]
    InvalidKey,
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    InvalidTimestamp,
    #[error("timestamp is more than 5 minutes in the past")]
    TimestampTooOld,
    #[error("timestamp is more than 5 minutes in the future")]
    TimestampInFuture,
    #[error("no signature matches")]
    NoMatch,
}

/// A new random HMAC secret in `whsec_<base64>` form (32 bytes of key).
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", B64.encode(key))
}

/// A new random Ed25519 secret key in `whsk_<base64>` form (64 bytes: seed, public key).
pub fn generate_ed25519_secret() -> String {
    let mut seed = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    format!(
        "{ED25519_SECRET_PREFIX}{}",
        B64.encode(key.to_keypair_bytes())
    )
}

/// The signing schemes, named as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC-SHA256 with a shared `whsec_` secret (`v1` signatures).
    Hmac,
    /// Ed25519 with a `whsk_` secret key (`v1a` signatures).
    Ed25519,
}

impl Scheme {
    /// The scheme a signing secret belongs to, from its prefix.
    pub fn of(secret: &str) -> Self {
        if secret.starts_with(ED25519_SECRET_PREFIX) {
            Self::Ed25519
        } else {
            Self::Hmac
        }
    }

    /// A new random secret for this scheme.
    pub fn generate(self) -> String {
        match self {
            Self::Hmac => generate_secret(),
            Self::Ed25519 => generate_ed25519_secret(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hmac => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}

fn decode(encoded: &str) -> Option<Vec<u8>> {
    B64.decode(encoded).ok()
}

/// The Ed25519 key inside a `whsk_` secret: 64 bytes (seed, public key, which must match)
/// or a bare 32-byte seed.
fn ed25519_signing_key(secret: &str) -> Option<SigningKey> {
    let bytes = decode(secret.strip_prefix(ED25519_SECRET_PREFIX)?)?;
    match bytes.len() {
        32 => Some(SigningKey::from_bytes(bytes.as_slice().try_into().ok()?)),
        64 => SigningKey::from_keypair_bytes(bytes.as_slice().try_into().ok()?).ok(),
        _ => None,
    }
}

/// Checks a signing secret: `whsec_` + standard base64 of 24..=64 bytes, or a well-formed
/// `whsk_` Ed25519 secret key.
pub fn validate_secret(secret: &str) -> Result<(), SignatureError> {
    if secret.starts_with(ED25519_SECRET_PREFIX) {
        return ed25519_signing_key(secret)
            .map(|_| ())
            .ok_or(SignatureError::InvalidSecret);
    }
    let key = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(decode)
        .ok_or(SignatureError::InvalidSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(())
    } else {
        Err(SignatureError::InvalidSecret)
    }
}

/// The `whpk_` public key that verifies a `whsk_` secret's signatures; `None` for HMAC
/// secrets (which have no public half) and malformed keys.
pub fn public_key(secret: &str) -> Option<String> {
    let key = ed25519_signing_key(secret)?;
    Some(format!(
        "{ED25519_PUBLIC_PREFIX}{}",
        B64.encode(key.verifying_key().as_bytes())
    ))
}

/// `{id}.{timestamp}.{body}`: what both schemes sign.
fn signed_content(msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// One signature per secret, space separated: `v1,<base64 HMAC-SHA256>` for `whsec_`
/// secrets, `v1a,<base64 Ed25519>` for `whsk_` ones, each over `{id}.{timestamp}.{body}`.
///
/// Secrets are validated when they are stored; an unusable one is skipped here rather
/// than failing the delivery, and if none is usable the result is empty.
pub fn sign(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let content = signed_content(msg_id, timestamp, body);
    secrets
        .iter()
        .filter_map(|s| match Scheme::of(s) {
            Scheme::Hmac => {
                let key = decode(s.strip_prefix(SECRET_PREFIX).unwrap_or(s))?;
                // HMAC takes a key of any length.
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).ok()?;
                mac.update(&content);
                Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
            }
            Scheme::Ed25519 => {
                let key = ed25519_signing_key(s)?;
                Some(format!("v1a,{}", B64.encode(key.sign(&content).to_bytes())))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The community platform's signature: `sha256=<hex HMAC-SHA256 of body>`, keyed with the
/// bytes of `secret` as given (that system stored plain strings, not `whsec_` keys).
pub fn sign_community(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a community-format secret: 1 to [`MAX_COMMUNITY_SECRET_LEN`] bytes, no
/// control characters.
pub fn validate_community_secret(secret: &str) -> Result<(), &'static str> {
    if secret.is_empty() || secret.len() > MAX_COMMUNITY_SECRET_LEN {
        return Err("secret must be 1 to 512 bytes");
    }
    if secret.chars().any(char::is_control) {
        return Err("secret may not contain control characters");
    }
    Ok(())
}

/// Verifies a community-format signature header against `body` in constant time.
pub fn verify_community(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(given) = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// A key a receiver verifies with.
enum VerifyKey {
    Hmac(String),
    Ed25519(VerifyingKey),
}

fn verify_key(key: &str) -> Result<VerifyKey, SignatureError> {
    if let Some(encoded) = key.strip_prefix(ED25519_PUBLIC_PREFIX) {
        let bytes: [u8; 32] = decode(encoded)
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::InvalidKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::InvalidKey)?;
        return Ok(VerifyKey::Ed25519(key));
    }
    if key.starts_with(ED25519_SECRET_PREFIX) {
        let key = ed25519_signing_key(key).ok_or(SignatureError::InvalidKey)?;
        return Ok(VerifyKey::Ed25519(key.verifying_key()));
    }
    validate_secret(key).map_err(|_| SignatureError::InvalidKey)?;
    Ok(VerifyKey::Hmac(key.to_owned()))
}

/// Verifies a request as a receiver would: the timestamp must be within five minutes of
/// `now` and one of the space-separated signatures must match one of the keys: a `v1`
/// signature for a `whsec_` secret, a `v1a` signature for a `whpk_` public key (or the
/// `whsk_` secret key it belongs to).
pub fn verify(
    secrets: &[&str],
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let msg_id = msg_id.ok_or(SignatureError::MissingHeader(HEADER_ID))?;
    let timestamp = timestamp.ok_or(SignatureError::MissingHeader(HEADER_TIMESTAMP))?;
    let signature = signature.ok_or(SignatureError::MissingHeader(HEADER_SIGNATURE))?;
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::InvalidTimestamp)?;
    if now - ts > TOLERANCE_SECS {
        return Err(SignatureError::TimestampTooOld);
    }
    if ts - now > TOLERANCE_SECS {
        return Err(SignatureError::TimestampInFuture);
    }
    let keys = secrets
        .iter()
        .map(|k| verify_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let mut content = None;
    let matched = keys.iter().any(|key| match key {
        VerifyKey::Hmac(secret) => {
            let expected = sign(&[secret], msg_id, ts, body);
            !expected.is_empty()
                && signature.split(' ').any(|given| {
                    given.len() == expected.len()
                        && bool::from(subtle::ConstantTimeEq::ct_eq(
                            given.as_bytes(),
                            expected.as_bytes(),
                        ))
                })
        }
        VerifyKey::Ed25519(public) => {
            let content = content.get_or_insert_with(|| signed_content(msg_id, ts, body));
            signature
                .split(' ')
                .filter_map(|given| given.strip_prefix("v1a,"))
                .filter_map(|sig| decode(sig)?.try_into().ok())
                .any(|sig: [u8; 64]| {
                    public
                        .verify(content, &ed25519_dalek::Signature::from_bytes(&sig))
                        .is_ok()
                })
        }
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The reference vector from the Standard Webhooks specification's libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn reference_vector_signs() {
        assert_eq!(sign(&[SECRET], MSG_ID, TS, BODY), SIG);
    }

    /// Found by the `signature` fuzz target: a body that is not UTF-8 got an empty signature.
    #[test]
    fn bodies_that_are_not_utf8_sign_and_verify() {
        let body = b"\x00\xff\xfe binary \xc3\x28";
        for secret in [SECRET.to_owned(), generate_ed25519_secret()] {
            let sig = sign(&[&secret], MSG_ID, TS, body);
            assert!(!sig.is_empty(), "{secret}");
            let key = public_key(&secret).unwrap_or(secret);
            let ts = TS.to_string();
            assert_eq!(
                verify(&[&key], Some(MSG_ID), Some(&ts), Some(&sig), body, TS),
                Ok(())
            );
        }
    }

    #[test]
    fn the_official_crate_verifies_what_hookrelay_signs() {
        let secret = generate_secret();
        let body = br#"{"type":"user.created","data":{"n":1}}"#;
        let now = chrono::Utc::now().timestamp();
        let mut headers = http::HeaderMap::new();
        headers.insert(HEADER_ID, http::HeaderValue::from_static("msg_1"));
        headers.insert(HEADER_TIMESTAMP, now.to_string().parse().unwrap());
        headers.insert(
            HEADER_SIGNATURE,
            sign(&[&secret], "msg_1", now, body).parse().unwrap(),
        );
        standardwebhooks::Webhook::new(&secret)
            .unwrap()
            .verify(body, &headers)
            .unwrap();
    }

    #[test]
    fn reference_vector_verifies() {
        let ts = TS.to_string();
        assert_eq!(
            verify(&[SECRET], Some(MSG_ID), Some(&ts), Some(SIG), BODY, TS),
            Ok(())
        );
    }

    #[test]
    fn rotation_sends_both_and_either_verifies() {
        let other = generate_secret();
        let both = sign(&[&other, SECRET], MSG_ID, TS, BODY);
        assert_eq!(both.split(' ').count(), 2);
        assert!(both.ends_with(SIG));
        let ts = TS.to_string();
        assert!(verify(&[SECRET], Some(MSG_ID), Some(&ts), Some(&both), BODY, TS).is_ok());
        assert!(verify(&[&other], Some(MSG_ID), Some(&ts), Some(&both), BODY, TS).is_ok());
    }

    #[test]
    fn tampering_fails() {
        let ts = TS.to_string();
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&[SECRET], Some(MSG_ID), Some(&ts), Some(SIG), tampered, TS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&[SECRET], Some("msg_other"), Some(&ts), Some(SIG), BODY, TS),
            Err(SignatureError::NoMatch)
        );
        let wrong = generate_secret();
        assert_eq!(
            verify(&[&wrong], Some(MSG_ID), Some(&ts), Some(SIG), BODY, TS),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_outside_tolerance_fail() {
        let ts = TS.to_string();
        assert_eq!(
            verify(
                &[SECRET],
                Some(MSG_ID),
                Some(&ts),
                Some(SIG),
                BODY,
                TS + 301
            ),
            Err(SignatureError::TimestampTooOld)
        );
        assert_eq!(
            verify(
                &[SECRET],
                Some(MSG_ID),
                Some(&ts),
                Some(SIG),
                BODY,
                TS - 301
            ),
            Err(SignatureError::TimestampInFuture)
        );
        assert_eq!(
            verify(&[SECRET], Some(MSG_ID), Some("soon"), Some(SIG), BODY, TS),
            Err(SignatureError::InvalidTimestamp)
        );
        assert_eq!(
            verify(&[SECRET], None, Some(&ts), Some(SIG), BODY, TS),
            Err(SignatureError::MissingHeader(HEADER_ID))
        );
    }

    #[test]
    fn ed25519_keys_follow_rfc8032() {
        // RFC 8032 section 7.1, test 1: the seed and the public key it derives.
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let public =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap();
        let secret = format!("whsk_{}", B64.encode(&seed));
        assert_eq!(
            public_key(&secret),
            Some(format!("whpk_{}", B64.encode(&public)))
        );
        // The 64-byte form is the seed then the public key; a mismatched pair is refused.
        let pair = format!(
            "whsk_{}",
            B64.encode([seed.clone(), public.clone()].concat())
        );
        assert!(validate_secret(&pair).is_ok());
        let bad_pair = format!("whsk_{}", B64.encode([seed.clone(), seed].concat()));
        assert!(validate_secret(&bad_pair).is_err());
    }

    #[test]
    fn ed25519_signs_v1a_and_verifies_with_the_public_key_only() {
        let secret = generate_ed25519_secret();
        assert_eq!(Scheme::of(&secret), Scheme::Ed25519);
        let public = public_key(&secret).unwrap();
        let sig = sign(&[&secret], MSG_ID, TS, BODY);
        assert!(sig.starts_with("v1a,"), "{sig}");
        let ts = TS.to_string();
        assert_eq!(
            verify(&[&public], Some(MSG_ID), Some(&ts), Some(&sig), BODY, TS),
            Ok(())
        );
        assert_eq!(
            verify(&[&public], Some(MSG_ID), Some(&ts), Some(&sig), b"{}", TS),
            Err(SignatureError::NoMatch)
        );
        let other = public_key(&generate_ed25519_secret()).unwrap();
        assert_eq!(
            verify(&[&other], Some(MSG_ID), Some(&ts), Some(&sig), BODY, TS),
            Err(SignatureError::NoMatch)
        );
        // An HMAC signature never satisfies an Ed25519 key, and the reverse.
        assert_eq!(
            verify(&[&public], Some(MSG_ID), Some(&ts), Some(SIG), BODY, TS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&[SECRET], Some(MSG_ID), Some(&ts), Some(&sig), BODY, TS),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn mixed_rotation_sends_v1_and_v1a() {
        let ed = generate_ed25519_secret();
        let both = sign(&[&ed, SECRET], MSG_ID, TS, BODY);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert!(parts[0].starts_with("v1a,"));
        assert_eq!(parts[1], SIG);
        let ts = TS.to_string();
        let public = public_key(&ed).unwrap();
        assert!(verify(&[&public], Some(MSG_ID), Some(&ts), Some(&both), BODY, TS).is_ok());
        assert!(verify(&[SECRET], Some(MSG_ID), Some(&ts), Some(&both), BODY, TS).is_ok());
        assert_eq!(
            verify(
                &["whpk_nope"],
                Some(MSG_ID),
                Some(&ts),
                Some(&both),
                BODY,
                TS
            ),
            Err(SignatureError::InvalidKey)
        );
    }

    #[test]
    fn secrets_are_validated() {
        assert!(validate_secret(&generate_secret()).is_ok());
        assert!(validate_secret(SECRET).is_ok());
        assert!(validate_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(validate_secret("whsec_!!!").is_err());
        assert!(validate_secret("whsec_c2hvcnQ=").is_err());
    }
}
