//! Credentials encrypted at rest, inside the store.
//!
//! Endpoint signing secrets, header values and URL passwords, inbox tokens and secrets, and
//! source URL passwords are sealed on their way in (creating or updating the row) and
//! opened on their way out (the reads that return them, and `claim`), in the one body of
//! each method in [`super::sql`], so neither the callers nor the SQL deal with
//! ciphertext. (Inboxes are found by their token's hash, which is not sealed.) Without
//! keys the [`Sealer`] lets everything through as it is.

use std::borrow::Cow;

use super::{
    ops::{Inbox, Source},
    Result, StoreError,
};
use crate::{domain::Endpoint, secrets::Keyring};

/// Associated data of a header value: bound to its endpoint and its name.
fn header_aad(endpoint_id: &str, name: &str) -> String {
    format!("{endpoint_id}#header:{}", name.to_ascii_lowercase())
}

/// Associated data of a URL's password.
fn url_aad(owner_id: &str) -> String {
    format!("{owner_id}#url")
}

/// Associated data of an inbox's token.
fn oauth2_aad(endpoint_id: &str) -> String {
    format!("{endpoint_id}#oauth2")
}

fn proxy_aad(endpoint_id: &str) -> String {
    format!("{endpoint_id}#proxy")
}

fn tls_key_aad(endpoint_id: &str) -> String {
    format!("{endpoint_id}#tls-key")
}

fn token_aad(inbox_id: &str) -> String {
    format!("{inbox_id}#token")
}

/// Seals and opens the credentials a store holds, with the configured keys (the first
/// seals); without keys, it passes them through.
#[derive(Debug, Default)]
pub struct Sealer(Option<Keyring>);

impl Sealer {
    pub fn new(keys: Option<Keyring>) -> Self {
        Self(keys)
    }

    /// Whether credentials are sealed at all (keys are configured).
    pub fn seals(&self) -> bool {
        self.0.is_some()
    }

    pub(super) fn seal_endpoint<'a>(&self, ep: &'a Endpoint) -> Cow<'a, Endpoint> {
        let Some(keys) = &self.0 else {
            return Cow::Borrowed(ep);
        };
        let mut sealed = ep.clone();
        sealed.secret = keys.seal(&ep.id, &ep.secret);
        sealed.previous_secret = ep.previous_secret.as_deref().map(|s| keys.seal(&ep.id, s));
        sealed.headers = ep
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), keys.seal(&header_aad(&ep.id, name), value)))
            .collect();
        sealed.url = keys.seal_url(&url_aad(&ep.id), &ep.url);
        if let Some(o) = &mut sealed.oauth2 {
            o.client_secret = keys.seal(&oauth2_aad(&ep.id), &o.client_secret);
        }
        if let Some(i) = sealed.tls.as_mut().and_then(|t| t.identity.as_mut()) {
            i.key = keys.seal(&tls_key_aad(&ep.id), &i.key);
        }
        if let Some(proxy) = &ep.proxy {
            sealed.proxy = Some(keys.seal_url(&proxy_aad(&ep.id), proxy));
        }
        Cow::Owned(sealed)
    }

    pub(super) fn open_endpoint(&self, mut ep: Endpoint) -> Result<Endpoint> {
        let Some(keys) = &self.0 else {
            return Ok(ep);
        };
        let unreadable = |e: crate::secrets::SecretsError| {
            StoreError::Corrupt(format!("secret of endpoint {}: {e}", ep.id))
        };
        ep.secret = keys.open(&ep.id, &ep.secret).map_err(unreadable)?;
        if let Some(prev) = &ep.previous_secret {
            ep.previous_secret = Some(keys.open(&ep.id, prev).map_err(unreadable)?);
        }
        let mut headers = std::collections::BTreeMap::new();
        for (name, value) in &ep.headers {
            let plain = keys
                .open(&header_aad(&ep.id, name), value)
                .map_err(unreadable)?;
            headers.insert(name.clone(), plain);
        }
        ep.headers = headers;
        ep.url = keys
            .open_url(&url_aad(&ep.id), &ep.url)
            .map_err(unreadable)?;
        if let Some(o) = &ep.oauth2 {
            let secret = keys
                .open(&oauth2_aad(&ep.id), &o.client_secret)
                .map_err(unreadable)?;
            if let Some(o) = &mut ep.oauth2 {
                o.client_secret = secret;
            }
        }
        if let Some(proxy) = &ep.proxy {
            let plain = keys
                .open_url(&proxy_aad(&ep.id), proxy)
                .map_err(unreadable)?;
            ep.proxy = Some(plain);
        }
        if let Some(i) = ep.tls.as_ref().and_then(|t| t.identity.as_ref()) {
            let key = keys
                .open(&tls_key_aad(&ep.id), &i.key)
                .map_err(unreadable)?;
            if let Some(i) = ep.tls.as_mut().and_then(|t| t.identity.as_mut()) {
                i.key = key;
            }
        }
        Ok(ep)
    }

    /// Whether every credential of a stored endpoint is sealed with the current key.
    pub(super) fn endpoint_is_current(&self, raw: &Endpoint) -> bool {
        let Some(keys) = &self.0 else {
            return true;
        };
        keys.is_current(&raw.secret)
            && raw
                .previous_secret
                .as_deref()
                .is_none_or(|s| keys.is_current(s))
            && raw.headers.values().all(|v| keys.is_current(v))
            && keys.url_is_current(&raw.url)
            && raw
                .oauth2
                .as_ref()
                .is_none_or(|o| keys.is_current(&o.client_secret))
            && raw
                .tls
                .as_ref()
                .and_then(|t| t.identity.as_ref())
                .is_none_or(|i| keys.is_current(&i.key))
            && raw.proxy.as_deref().is_none_or(|p| keys.url_is_current(p))
    }

    /// An inbox's token and secret, sealed.
    pub(super) fn seal_inbox_credentials<'a>(
        &self,
        id: &str,
        token: &'a str,
        secret: Option<&'a str>,
    ) -> (Cow<'a, str>, Option<Cow<'a, str>>) {
        match &self.0 {
            None => (Cow::Borrowed(token), secret.map(Cow::Borrowed)),
            Some(keys) => (
                Cow::Owned(keys.seal(&token_aad(id), token)),
                secret.map(|s| Cow::Owned(keys.seal(id, s))),
            ),
        }
    }

    pub(super) fn open_inbox(&self, mut inbox: Inbox) -> Result<Inbox> {
        let Some(keys) = &self.0 else {
            return Ok(inbox);
        };
        let unreadable = |what: &str, e: crate::secrets::SecretsError| {
            StoreError::Corrupt(format!("{what} of inbox {}: {e}", inbox.id))
        };
        let token = keys
            .open(&token_aad(&inbox.id), &inbox.token)
            .map_err(|e| unreadable("token", e))?;
        let secret = match &inbox.secret {
            Some(secret) => Some(
                keys.open(&inbox.id, secret)
                    .map_err(|e| unreadable("secret", e))?,
            ),
            None => None,
        };
        inbox.token = token;
        inbox.secret = secret;
        Ok(inbox)
    }

    /// Whether an inbox's token and secret are sealed with the current key.
    pub(super) fn inbox_is_current(&self, raw: &Inbox) -> bool {
        let Some(keys) = &self.0 else {
            return true;
        };
        keys.is_current(&raw.token) && raw.secret.as_deref().is_none_or(|s| keys.is_current(s))
    }

    /// A source's URL with its password sealed.
    pub(super) fn seal_source_url<'a>(&self, id: &str, url: &'a str) -> Cow<'a, str> {
        match &self.0 {
            None => Cow::Borrowed(url),
            Some(keys) => Cow::Owned(keys.seal_url(&url_aad(id), url)),
        }
    }

    pub(super) fn open_source(&self, mut source: Source) -> Result<Source> {
        let Some(keys) = &self.0 else {
            return Ok(source);
        };
        source.url = keys
            .open_url(&url_aad(&source.id), &source.url)
            .map_err(|e| StoreError::Corrupt(format!("url of source {}: {e}", source.id)))?;
        Ok(source)
    }

    /// Whether a source's URL password is sealed with the current key (or it has none).
    pub(super) fn source_is_current(&self, raw: &Source) -> bool {
        self.0.as_ref().is_none_or(|k| k.url_is_current(&raw.url))
    }
}
