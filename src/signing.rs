//! Standard Webhooks signing and verification.
//!
//! The HMAC itself comes from the official `standardwebhooks` crate; this module adds what
//! hookrelay needs around it: secret generation, several secrets at once (rotation), and a
//! verifier that takes plain header values (for the CLI and receivers that are not `http`-based).

use base64::Engine;
use rand::RngCore;
use standardwebhooks::Webhook;

/// Header names, as the specification spells them.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// How far a timestamp may be from now before a receiver rejects it.
pub const TOLERANCE_SECS: i64 = 5 * 60;

const SECRET_PREFIX: &str = "whsec_";

/// Why a secret or a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("secret must be whsec_ followed by base64 of 24 to 64 bytes")]
    InvalidSecret,
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

/// A new random secret in `whsec_<base64>` form (32 bytes of key).
pub fn generate_secret() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Checks that `secret` is `whsec_` + standard base64 of 24..=64 bytes.
pub fn validate_secret(secret: &str) -> Result<(), SignatureError> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or(SignatureError::InvalidSecret)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SignatureError::InvalidSecret)?;
    if (24..=64).contains(&key.len()) {
        Ok(())
    } else {
        Err(SignatureError::InvalidSecret)
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each secret, space separated.
///
/// Secrets are validated when they are stored; an undecodable one is skipped here rather
/// than failing the delivery, and if none is usable the result is empty.
pub fn sign(secrets: &[&str], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .filter_map(|s| Webhook::new(s).ok())
        .filter_map(|wh| wh.sign(msg_id, timestamp, body).ok())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Verifies a request as a receiver would: the timestamp must be within five minutes of
/// `now` and one of the space-separated `v1` signatures must match one of the secrets.
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
    let expected = sign(secrets, msg_id, ts, body);
    let matched = signature.split(' ').any(|given| {
        expected.split(' ').any(|want| {
            given.len() == want.len()
                && subtle::ConstantTimeEq::ct_eq(given.as_bytes(), want.as_bytes()).into()
        })
    });
    if matched && !expected.is_empty() {
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
    fn secrets_are_validated() {
        assert!(validate_secret(&generate_secret()).is_ok());
        assert!(validate_secret(SECRET).is_ok());
        assert!(validate_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(validate_secret("whsec_!!!").is_err());
        assert!(validate_secret("whsec_c2hvcnQ=").is_err());
    }
}
