//! Domain types shared by every layer: ids, tenants, endpoints, events, deliveries, attempts.
//!
//! These types know nothing of storage or transport. Timestamps are UTC with millisecond
//! precision, the precision every store keeps.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Current time truncated to whole milliseconds, the precision every store keeps.
pub fn now() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

/// Milliseconds since the Unix epoch to a UTC time (out-of-range values clamp to the epoch).
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A new sortable id with the given prefix, e.g. `evt_01J…`. Ids made later sort after
/// ids made earlier (ULID), which keeps cursor pagination cheap.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// Id prefixes, one per kind of object.
pub mod prefix {
    pub const EVENT: &str = "evt";
    pub const ENDPOINT: &str = "ep";
    pub const DELIVERY: &str = "dlv";
    pub const ATTEMPT: &str = "att";
    pub const TOKEN: &str = "tok";
    pub const TENANT: &str = "ten";
}

/// The tenant that exists from the start.
pub const DEFAULT_TENANT: &str = "default";

/// An isolated space: one customer of the platform.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// A named kind of event with an optional JSON Schema for its `data`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct EventType {
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// Where a tenant's events go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    /// Event-type filter: exact names or `prefix.*` wildcards; empty means every type.
    pub event_types: Vec<String>,
    /// Signing secret, `whsec_<base64>`.
    pub secret: String,
    /// The secret before the last rotation, still used to sign until it expires.
    pub previous_secret: Option<String>,
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Deliveries per second; `None` means unlimited.
    pub rate_limit: Option<u32>,
    /// Attempts before a delivery fails for good; `None` uses the server default.
    pub max_attempts: Option<u32>,
    /// Extra headers sent with every delivery.
    pub headers: std::collections::BTreeMap<String, String>,
    pub enabled: bool,
    /// Why the endpoint was disabled, when it was disabled by hookrelay (e.g. `410 Gone`).
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    /// The secrets to sign with at `now`: the current one, and the previous one during the
    /// grace period after a rotation (receivers accept either signature).
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(old), Some(until)) = (&self.previous_secret, self.previous_secret_expires_at) {
            if until > now {
                secrets.push(old);
            }
        }
        secrets
    }

    /// Whether this endpoint subscribes to `event_type`.
    pub fn accepts(&self, event_type: &str) -> bool {
        self.event_types.is_empty()
            || self
                .event_types
                .iter()
                .any(|pattern| type_matches(pattern, event_type))
    }
}

/// Matches an event type against a filter pattern: an exact name, `*`, or `prefix.*`
/// (which matches every type under `prefix.`, at any depth).
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// The deliveries of a new event: one per endpoint that subscribes to its type, due at
/// `deliver_at` or at once. `default_max_attempts` applies where the endpoint sets none.
pub fn fan_out(event: &Event, endpoints: &[Endpoint], default_max_attempts: u32) -> Vec<Delivery> {
    let due = event
        .deliver_at
        .filter(|t| *t > event.created_at)
        .unwrap_or(event.created_at);
    endpoints
        .iter()
        .filter(|ep| ep.enabled && ep.tenant_id == event.tenant_id && ep.accepts(&event.event_type))
        .map(|ep| Delivery {
            id: new_id(prefix::DELIVERY),
            tenant_id: event.tenant_id.clone(),
            event_id: event.id.clone(),
            endpoint_id: ep.id.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            max_attempts: ep.max_attempts.unwrap_or(default_max_attempts),
            next_attempt_at: Some(due),
            last_error: None,
            created_at: event.created_at,
            updated_at: event.created_at,
        })
        .collect()
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` received on ingest, sent again on every delivery.
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Earliest delivery time, when delivery was deferred.
    pub deliver_at: Option<DateTime<Utc>>,
}

/// State of one delivery.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// One event to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Delivery {
    pub id: String,
    pub tenant_id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts allowed before the delivery fails for good.
    pub max_attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What came of one attempt.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The destination accepted the message.
    Success,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed for good (max attempts reached or a permanent error).
    Failed,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Retry => "retry",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Self::Success),
            "retry" => Some(Self::Retry),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Attempt {
    pub id: String,
    pub delivery_id: String,
    /// 1 for the first attempt of the delivery.
    pub attempt_number: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// HTTP status code, for HTTP destinations.
    pub status_code: Option<u16>,
    /// First bytes of the response (at most 1 KiB).
    pub response: Option<String>,
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
    /// When the next attempt was scheduled, for outcome `retry`: the backoff made visible.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_prefixes_only() {
        assert!(type_matches("user.*", "user.joined_community"));
        assert!(type_matches("user.*", "user.a.b"));
        assert!(!type_matches("user.*", "users.joined"));
        assert!(!type_matches("user.*", "discussion.extended"));
        assert!(type_matches("*", "anything"));
        assert!(type_matches("a.b", "a.b"));
        assert!(!type_matches("a.b", "a.bc"));
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = new_id(prefix::EVENT);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id(prefix::EVENT);
        assert!(a.starts_with("evt_"));
        assert!(a < b);
    }
}
