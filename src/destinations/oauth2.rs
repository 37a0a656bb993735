//! OAuth2 access tokens for HTTP deliveries (the client-credentials grant): fetched from the
//! endpoint's token URL, cached per endpoint until shortly before they expire, and shared by
//! every delivery to that endpoint. One fetch at a time per endpoint: deliveries that need a
//! token while one is being fetched wait for it instead of asking again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::domain::OAuth2;

/// The most of a token response read.
const MAX_RESPONSE: usize = 64 * 1024;

/// How long a token without `expires_in` is used.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// A token is fetched again this long before it expires (at most a tenth of its lifetime).
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Why no token could be had; the attempt fails with this text.
#[derive(Debug, thiserror::Error)]
#[error("OAuth2 token request to the token URL failed: {0}")]
pub struct TokenError(pub String);

struct Token {
    /// The credentials it was fetched with: a changed endpoint gets a new token.
    credentials: OAuth2,
    access_token: String,
    refresh_at: Instant,
}

/// Each endpoint's current token, behind a lock of its own that a fetch holds.
type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The access tokens of every endpoint with OAuth2 credentials.
#[derive(Default)]
pub struct Tokens {
    slots: Mutex<HashMap<String, Slot>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl Tokens {
    /// A token for `endpoint_id` with `credentials`: the cached one unless it is about to
    /// expire, was fetched with other credentials, or is `rejected` (a receiver answered
    /// `401` to it); else a new one from the token URL.
    pub async fn get(
        &self,
        client: &reqwest::Client,
        endpoint_id: &str,
        credentials: &OAuth2,
        rejected: Option<&str>,
    ) -> Result<String, TokenError> {
        let slot = {
            // A poisoned map lock only means another delivery panicked while holding it;
            // the map itself is still whole.
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.entry(endpoint_id.to_owned()).or_default().clone()
        };
        let mut current = slot.lock().await;
        if let Some(t) = current.as_ref() {
            let usable = t.credentials == *credentials
                && Instant::now() < t.refresh_at
                && rejected != Some(t.access_token.as_str());
            if usable {
                return Ok(t.access_token.clone());
            }
        }
        *current = None;
        let token = self.fetch(client, credentials).await?;
        let access_token = token.access_token.clone();
        *current = Some(token);
        Ok(access_token)
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        credentials: &OAuth2,
    ) -> Result<Token, TokenError> {
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &credentials.scope {
                form.append_pair("scope", scope);
            }
            if let Some(audience) = &credentials.audience {
                form.append_pair("audience", audience);
            }
            form.finish()
        };
        let started = Instant::now();
        let mut response = client
            .post(&credentials.token_url)
            .basic_auth(&credentials.client_id, Some(&credentials.client_secret))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| {
                // The token URL is named by the message's prefix, never printed: it may
                // carry credentials.
                let e = e.without_url();
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                TokenError(format!("{kind}: {}", super::http::describe(&e)))
            })?;
        let status = response.status();
        let mut body = Vec::new();
        while body.len() < MAX_RESPONSE {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return Err(TokenError(format!("reading the answer: {e}"))),
            }
        }
        if !status.is_success() {
            return Err(TokenError(format!(
                "HTTP {}: {}",
                status.as_u16(),
                super::excerpt(&body)
            )));
        }
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| TokenError(format!("the answer is not a token response ({e})")))?;
        if parsed.access_token.is_empty()
            || reqwest::header::HeaderValue::from_str(&parsed.access_token).is_err()
        {
            return Err(TokenError(
                "the access token is empty or not fit for a header".into(),
            ));
        }
        let lifetime = parsed
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        Ok(Token {
            credentials: credentials.clone(),
            access_token: parsed.access_token,
            refresh_at: started + lifetime.saturating_sub(margin),
        })
    }
}
