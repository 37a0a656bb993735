//! Endpoint secrets at rest: sealed with XChaCha20-Poly1305 when the operator configures a
//! key, so a copy of the database (a backup, a replica, a stolen disk) does not hand out
//! the keys that sign webhooks.
//!
//! A sealed value reads `enc1:<key id>:<base64 nonce ‖ ciphertext>`. The key id (the first
//! eight hex digits of the key's SHA-256) says which configured key opens it, so keys can
//! be rotated: the first configured key seals, every configured key opens. The endpoint id
//! is the associated data: a sealed secret copied onto another endpoint does not open.
//! Values without the prefix are plaintext (written before a key was configured) and are
//! read as they are.

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use chacha20poly1305::{
    aead::{Aead, KeyInit, Payload},
    XChaCha20Poly1305, XNonce,
};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "enc1:";

/// Why a key or a sealed value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretsError {
    #[error("encryption key must be base64 of exactly 32 bytes (e.g. `openssl rand -base64 32`)")]
    InvalidKey,
    #[error("a secret is sealed with key {0}, which is not configured (--encryption-key)")]
    UnknownKey(String),
    #[error("a sealed secret is corrupt or belongs to another endpoint")]
    Corrupt,
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The configured keys; the first seals.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Keys from their base64 form; `Ok(None)` when there are none (secrets stay plaintext).
    pub fn from_base64(keys: &[secrecy::SecretString]) -> Result<Option<Self>, SecretsError> {
        if keys.is_empty() {
            return Ok(None);
        }
        let keys = keys
            .iter()
            .map(|k| {
                let k = secrecy::ExposeSecret::expose_secret(k);
                let bytes = B64.decode(k.trim()).map_err(|_| SecretsError::InvalidKey)?;
                let bytes: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::InvalidKey)?;
                Ok(Key {
                    id: hex::encode(&Sha256::digest(bytes)[..4]),
                    cipher: XChaCha20Poly1305::new(&bytes.into()),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self { keys }))
    }

    fn sealing(&self) -> &Key {
        // `from_base64` never builds an empty ring.
        &self.keys[0]
    }

    /// Seals `plain` for the endpoint `endpoint_id`.
    pub fn seal(&self, endpoint_id: &str, plain: &str) -> String {
        let key = self.sealing();
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plain.as_bytes(),
            aad: endpoint_id.as_bytes(),
        };
        // Encryption with a valid key and nonce only fails for messages over 256 GiB.
        let sealed = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, B64.encode(out))
    }

    /// Opens a value read from the store; plaintext passes through.
    pub fn open(&self, endpoint_id: &str, stored: &str) -> Result<String, SecretsError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let (id, data) = rest.split_once(':').ok_or(SecretsError::Corrupt)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or_else(|| SecretsError::UnknownKey(id.to_owned()))?;
        let data = B64.decode(data).map_err(|_| SecretsError::Corrupt)?;
        if data.len() < 24 {
            return Err(SecretsError::Corrupt);
        }
        let (nonce, sealed) = data.split_at(24);
        let payload = Payload {
            msg: sealed,
            aad: endpoint_id.as_bytes(),
        };
        let plain = key
            .cipher
            .decrypt(XNonce::from_slice(nonce), payload)
            .map_err(|_| SecretsError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SecretsError::Corrupt)
    }

    /// Whether `stored` is already sealed with the sealing key (nothing to rewrite).
    pub fn is_current(&self, stored: &str) -> bool {
        stored
            .strip_prefix(PREFIX)
            .and_then(|r| r.split_once(':'))
            .is_some_and(|(id, _)| id == self.sealing().id)
    }
}

/// The SHA-256 of a bearer token (API token or inbox token), lowercase hex: the form tokens
/// are stored and looked up in.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a stored value is sealed (by any key).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// A sealed value as it stands in a URL's password: `:`, `+`, `/` and `=` percent-encoded.
const URL_PREFIX: &str = "enc1%3A";

/// Byte range of the password in `scheme://user:PASSWORD@host…`, when there is one.
pub fn url_password_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    (colon + 1 < at).then(|| start + colon + 1..start + at)
}

fn url_encode_sealed(sealed: &str) -> String {
    sealed
        .replace(':', "%3A")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

fn url_decode_sealed(password: &str) -> Option<String> {
    password.starts_with(URL_PREFIX).then(|| {
        password
            .replace("%3A", ":")
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=")
    })
}

impl Keyring {
    /// `url` with its password (if any) sealed for `aad`; the rest stays readable.
    pub fn seal_url(&self, aad: &str, url: &str) -> String {
        match url_password_range(url) {
            Some(r) if !url[r.clone()].starts_with(URL_PREFIX) => {
                let sealed = url_encode_sealed(&self.seal(aad, &url[r.clone()]));
                format!("{}{sealed}{}", &url[..r.start], &url[r.end..])
            }
            _ => url.to_owned(),
        }
    }

    /// `url` with its sealed password opened; other URLs pass through.
    pub fn open_url(&self, aad: &str, url: &str) -> Result<String, SecretsError> {
        let Some(r) = url_password_range(url) else {
            return Ok(url.to_owned());
        };
        let Some(sealed) = url_decode_sealed(&url[r.clone()]) else {
            return Ok(url.to_owned());
        };
        let plain = self.open(aad, &sealed)?;
        Ok(format!("{}{plain}{}", &url[..r.start], &url[r.end..]))
    }

    /// Whether `url` has no password, or one sealed with the sealing key.
    pub fn url_is_current(&self, url: &str) -> bool {
        url_password_range(url).is_none_or(|r| {
            url_decode_sealed(&url[r]).is_some_and(|sealed| self.is_current(&sealed))
        })
    }
}

/// Whether `url` carries a password that reads as sealed (refused from clients).
pub fn url_password_looks_sealed(url: &str) -> bool {
    url_password_range(url).is_some_and(|r| url[r].starts_with(URL_PREFIX))
}

/// The URL with its password replaced by `***`, for answers, logs and attempt records.
/// Works on the text, so it also covers URLs the `url` crate cannot parse.
pub fn redact_url(raw: &str) -> std::borrow::Cow<'_, str> {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return std::borrow::Cow::Borrowed(raw);
    };
    let rest = &raw[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let Some(at) = authority.rfind('@') else {
        return std::borrow::Cow::Borrowed(raw);
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return std::borrow::Cow::Borrowed(raw);
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..start]);
    out.push_str(&userinfo[..=colon]);
    out.push_str("***");
    out.push_str(&rest[at..]);
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> secrecy::SecretString {
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        B64.encode(k).into()
    }

    #[test]
    fn seals_and_opens_bound_to_the_endpoint() {
        let ring = Keyring::from_base64(&[key()]).unwrap().unwrap();
        let sealed = ring.seal("ep_1", "whsec_abc");
        assert!(is_sealed(&sealed) && !sealed.contains("whsec_abc"));
        assert!(ring.is_current(&sealed));
        assert_eq!(ring.open("ep_1", &sealed).unwrap(), "whsec_abc");
        assert_eq!(ring.open("ep_2", &sealed), Err(SecretsError::Corrupt));
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, ring.seal("ep_1", "whsec_abc"));
        // Plaintext from before the key passes through.
        assert_eq!(ring.open("ep_1", "whsec_plain").unwrap(), "whsec_plain");
        // A flipped byte is caught.
        let mut bad = sealed.clone().into_bytes();
        let at = bad.len() - 3;
        bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).unwrap();
        assert_eq!(ring.open("ep_1", &bad), Err(SecretsError::Corrupt));
    }

    #[test]
    fn rotated_rings_open_old_values_and_seal_with_the_first_key() {
        let (old, new) = (key(), key());
        let before = Keyring::from_base64(std::slice::from_ref(&old))
            .unwrap()
            .unwrap();
        let sealed = before.seal("ep_1", "whsec_abc");
        let after = Keyring::from_base64(&[new.clone(), old]).unwrap().unwrap();
        assert!(!after.is_current(&sealed));
        assert_eq!(after.open("ep_1", &sealed).unwrap(), "whsec_abc");
        assert!(after.is_current(&after.seal("ep_1", "x")));
        let only_new = Keyring::from_base64(&[new]).unwrap().unwrap();
        assert!(matches!(
            only_new.open("ep_1", &sealed),
            Err(SecretsError::UnknownKey(_))
        ));
    }

    #[test]
    fn url_passwords_seal_in_place() {
        let ring = Keyring::from_base64(&[key()]).unwrap().unwrap();
        let url = "amqp://user:p%40ss@127.0.0.1:5672/%2f?exchange=x&routing_key=k";
        let sealed = ring.seal_url("ep_1#url", url);
        assert!(!sealed.contains("p%40ss"), "{sealed}");
        assert!(sealed.starts_with("amqp://user:enc1%3A"), "{sealed}");
        assert!(sealed.ends_with("@127.0.0.1:5672/%2f?exchange=x&routing_key=k"));
        assert!(url::Url::parse(&sealed).is_ok());
        assert!(ring.url_is_current(&sealed) && !ring.url_is_current(url));
        assert_eq!(ring.open_url("ep_1#url", &sealed).unwrap(), url);
        assert_eq!(
            ring.seal_url("ep_1#url", &sealed),
            sealed,
            "not sealed twice"
        );
        assert!(ring.open_url("ep_2#url", &sealed).is_err());
        for plain in ["https://h/x", "redis://h:6379/0?stream=s", "nats://u@h/s"] {
            assert_eq!(ring.seal_url("a", plain), plain);
            assert!(ring.url_is_current(plain));
        }
        assert_eq!(
            url_password_range("redis://:pw@h/0").map(|r| r.len()),
            Some(2)
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Keyring::from_base64(&[]).unwrap().is_none());
        for bad in ["", "not base64!", "c2hvcnQ="] {
            assert_eq!(
                Keyring::from_base64(&[bad.into()]).unwrap_err(),
                SecretsError::InvalidKey
            );
        }
    }
}
