//! Destinations: where a delivery goes, picked from the endpoint URL's scheme.
//!
//! Destinations know the domain and signing, never the store. Each adapter implements the
//! small [`Destination`] trait; its verdict is an [`Ack`] or a [`SendError`] that says
//! whether a retry can help. Only the retry module turns that into a time.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use chrono::SecondsFormat;
use serde::Serialize;

use crate::{
    domain::{DeliveryFormat, Endpoint, Event},
    signing,
};

pub mod amqp;
pub mod egress;
pub mod http;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod net;
pub mod oauth2;
pub mod options;
pub mod pubsub;
pub mod redis;
pub mod router;
pub mod smtp;
pub mod sqs;

pub use router::{BrokerSettings, Destinations};

/// Longest response excerpt kept in the attempt log.
pub const RESPONSE_EXCERPT_BYTES: usize = 1024;

/// A signed message, ready for any destination.
#[derive(Debug, Clone)]
pub struct Message {
    /// The event id: `webhook-id`, stable across retries so receivers can drop duplicates.
    pub id: String,
    /// The JSON body, byte for byte what was signed.
    pub body: Vec<u8>,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`, `traceparent` when known, and
    /// the endpoint's custom headers.
    pub headers: BTreeMap<String, String>,
    /// The delivery's ordering key, for an ordered endpoint: brokers with native ordering
    /// use it by default (Kafka record key, SQS FIFO message group, Pub/Sub ordering key).
    pub ordering_key: Option<String>,
}

#[derive(Serialize)]
struct Payload<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: &'a serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    actor: Option<&'a str>,
}

/// The delivered body: `{"id", "type", "timestamp", "data"}` plus `actor` where given.
pub fn payload(event: &Event) -> Vec<u8> {
    // Serializing a struct of strings and a JSON value cannot fail.
    serde_json::to_vec(&envelope(event)).unwrap_or_default()
}

/// The body of the community platform's format ([`DeliveryFormat::Community`]).
#[derive(Serialize)]
struct CommunityPayload<'a> {
    event: &'a str,
    timestamp: String,
    /// `null` when the event has no actor, as that system sent it.
    actor_user_id: Option<&'a str>,
    data: &'a serde_json::Value,
    request_id: String,
}

fn community_envelope(event: &Event) -> CommunityPayload<'_> {
    CommunityPayload {
        event: &event.event_type,
        timestamp: event
            .created_at
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        actor_user_id: event.actor.as_deref(),
        data: &event.data,
        request_id: request_id(event),
    }
}

/// The community format's `request_id`, the same on every attempt: the event's idempotency
/// key when it is a UUID (events imported from that system keep theirs), else the event
/// id's 128 bits written as a UUID.
pub fn request_id(event: &Event) -> String {
    if let Some(key) = event.idempotency_key.as_deref().filter(|k| is_uuid(k)) {
        return key.to_ascii_lowercase();
    }
    let bits = event
        .id
        .rsplit('_')
        .next()
        .and_then(|u| ulid::Ulid::from_string(u).ok())
        .map(u128::from)
        .unwrap_or_default();
    uuid_text(bits)
}

/// `bits` as a UUID's text, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn uuid_text(bits: u128) -> String {
    let h = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Whether `s` is a UUID's text (any version, either case).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn envelope(event: &Event) -> Payload<'_> {
    Payload {
        id: &event.id,
        event_type: &event.event_type,
        timestamp: event
            .created_at
            .to_rfc3339_opts(SecondsFormat::Millis, true),
        data: &event.data,
        actor: event.actor.as_deref(),
    }
}

impl Message {
    /// Builds and signs the message for `event` to `endpoint` at `now`. An endpoint with a
    /// transformation gets the transformed body, and the signature covers it as sent. Fails
    /// (for good: trying again cannot help) when the endpoint's stored routing is unusable
    /// or its transformation would make a body beyond the bounds.
    pub fn new(
        event: &Event,
        endpoint: &Endpoint,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self, String> {
        let now_secs = now.timestamp();
        if let Some(e) = endpoint.routing.error() {
            return Err(e.to_owned());
        }
        let community = endpoint.format == DeliveryFormat::Community;
        let body = if endpoint.routing.has_transform() {
            // Built as a JSON value directly, not serialized and parsed back.
            let envelope = if community {
                serde_json::to_value(community_envelope(event))
            } else {
                serde_json::to_value(envelope(event))
            }
            .unwrap_or_default();
            // Serializing a JSON value cannot fail; the transformation keeps its depth
            // bounded, so neither this nor dropping it can overflow the stack.
            serde_json::to_vec(&endpoint.routing.transform(envelope)?).unwrap_or_default()
        } else if community {
            // Serializing a struct of strings and a JSON value cannot fail.
            serde_json::to_vec(&community_envelope(event)).unwrap_or_default()
        } else {
            payload(event)
        };
        let mut headers: BTreeMap<String, String> = endpoint
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let [id_header, timestamp_header, signature_header] = endpoint.signature_headers.names();
        headers.insert(id_header, event.id.clone());
        if community {
            // That system's receivers know one signature: the current secret's.
            headers.insert(
                signing::HEADER_COMMUNITY_SIGNATURE.into(),
                signing::sign_community(&endpoint.secret, &body),
            );
        } else {
            let secrets = endpoint.signing_secrets(now);
            let signature = signing::sign(&secrets, &event.id, now_secs, &body);
            headers.insert(timestamp_header, now_secs.to_string());
            headers.insert(signature_header, signature);
        }
        if let Some(tp) = &event.traceparent {
            headers.insert("traceparent".into(), tp.clone());
        }
        Ok(Self {
            id: event.id.clone(),
            body,
            headers,
            ordering_key: None,
        })
    }
}

/// What the destination said when it accepted a message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ack {
    pub status_code: Option<u16>,
    /// Response excerpt, or the broker's message id / offset.
    pub response: Option<String>,
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
        status_code: Option<u16>,
        response: Option<String>,
    },
    #[error("{reason}")]
    Permanent {
        reason: String,
        status_code: Option<u16>,
        response: Option<String>,
        /// The destination said it is gone for good (HTTP 410): disable the endpoint.
        disable_endpoint: bool,
    },
}

impl SendError {
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Retryable { status_code, .. } | Self::Permanent { status_code, .. } => {
                *status_code
            }
        }
    }
    pub fn response(&self) -> Option<&str> {
        match self {
            Self::Retryable { response, .. } | Self::Permanent { response, .. } => {
                response.as_deref()
            }
        }
    }
}

/// One destination adapter.
#[async_trait]
pub trait Destination: Send + Sync {
    async fn send(&self, endpoint: &Endpoint, message: &Message) -> Result<Ack, SendError>;
}

/// The schemes hookrelay can deliver to.
pub const SUPPORTED_SCHEMES: &[&str] = &[
    "http", "https", "sqs", "pubsub", "kafka", "amqp", "nats", "redis", "mqtt", "smtp",
];

/// The kind of destination a URL names, from its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Sqs,
    Pubsub,
    Kafka,
    Amqp,
    Nats,
    Redis,
    Mqtt,
    Smtp,
}

impl Scheme {
    /// The scheme of `url` (case-insensitive), without parsing the rest.
    pub fn of(url: &str) -> Option<Self> {
        let (scheme, _) = url.split_once("://")?;
        let is = |name: &str| scheme.eq_ignore_ascii_case(name);
        Some(if is("https") || is("http") {
            Self::Http
        } else if is("sqs") {
            Self::Sqs
        } else if is("pubsub") {
            Self::Pubsub
        } else if is("kafka") {
            Self::Kafka
        } else if is("amqp") {
            Self::Amqp
        } else if is("nats") {
            Self::Nats
        } else if is("redis") {
            Self::Redis
        } else if is("mqtt") {
            Self::Mqtt
        } else if is("smtp") {
            Self::Smtp
        } else {
            return None;
        })
    }

    /// Its name, as in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Sqs => "sqs",
            Self::Pubsub => "pubsub",
            Self::Kafka => "kafka",
            Self::Amqp => "amqp",
            Self::Nats => "nats",
            Self::Redis => "redis",
            Self::Mqtt => "mqtt",
            Self::Smtp => "smtp",
        }
    }
}

/// Whether `url` names a broker (operator infrastructure: only the admin token may point
/// an endpoint at one).
pub fn is_broker_url(url: &str) -> bool {
    matches!(Scheme::of(url), Some(s) if s != Scheme::Http)
}

/// Validates an endpoint URL: syntax, scheme, the scheme's options and, for HTTP, the
/// network policy. The message says precisely what is wrong, without the URL's password.
pub async fn validate_url(raw: &str, policy: &net::NetworkPolicy) -> Result<(), String> {
    if raw.len() > 2048 {
        return Err("url is longer than 2048 characters".into());
    }
    match Scheme::of(raw) {
        Some(Scheme::Http) => {
            let url = crate::destinations::options::broker_url(raw)?;
            let host = url
                .host_str()
                .filter(|h| !h.is_empty())
                .ok_or("url has no host")?
                .to_owned();
            if !url.username().is_empty() || url.password().is_some() {
                return Err("url must not carry credentials; use endpoint headers".into());
            }
            let port = url.port_or_known_default().unwrap_or(443);
            net::check_host(policy, &host, port).await?;
            Ok(())
        }
        Some(_) => router::Target::parse(raw)
            .map(|_| ())
            .map_err(|e| options::scrub(e, raw)),
        None => {
            let url = crate::destinations::options::broker_url(raw)?;
            Err(format!(
                "url scheme {:?} is not supported; supported schemes: {}",
                url.scheme(),
                SUPPORTED_SCHEMES.join(", ")
            ))
        }
    }
}

/// Checks an endpoint's custom headers against what its destination can carry.
pub fn validate_headers_for(url: &str, custom_headers: usize) -> Result<(), String> {
    if Scheme::of(url) == Some(Scheme::Sqs) && custom_headers > sqs::MAX_CUSTOM_HEADERS {
        return Err(format!(
            "sqs:// endpoints carry at most {} custom headers (SQS allows 10 message attributes, 4 are the webhook headers)",
            sqs::MAX_CUSTOM_HEADERS
        ));
    }
    Ok(())
}

/// Cuts a response to at most [`RESPONSE_EXCERPT_BYTES`], on a character boundary.
pub fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(RESPONSE_EXCERPT_BYTES)]);
    let mut end = text.len().min(RESPONSE_EXCERPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_validated() {
        let open = net::NetworkPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(validate_url("http://127.0.0.1:9/x", &open).await.is_ok());
        let closed = net::NetworkPolicy::default();
        let err = validate_url("http://127.0.0.1:9/x", &closed)
            .await
            .unwrap_err();
        assert!(err.contains("--allow-network"), "{err}");
        let err = validate_url("ftp://example.com/", &open).await.unwrap_err();
        assert!(err.contains("not supported"), "{err}");
        assert!(validate_url("not a url", &open).await.is_err());
        assert!(validate_url("http://user:pw@127.0.0.1/", &open)
            .await
            .is_err());
        assert!(validate_url("http://169.254.169.254/latest", &open)
            .await
            .is_err());
    }

    #[test]
    fn excerpts_are_cut_on_char_boundaries() {
        let long = "é".repeat(1000);
        let cut = excerpt(long.as_bytes());
        assert!(cut.len() <= RESPONSE_EXCERPT_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
