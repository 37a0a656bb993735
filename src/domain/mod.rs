//! Domain types shared by every layer: ids, tenants, endpoints, events, deliveries, attempts.
//!
//! These types know nothing of storage or transport. Timestamps are UTC with millisecond
//! precision, the precision every store keeps.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod retry;
pub mod routing;
pub mod tls;

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

/// `t + d`. The settings and delays added to times are far inside chrono's range; one that
/// is not (an absurd setting such as `--lease 1000000000years`) saturates at the latest time
/// chrono holds, rather than becoming zero or panicking.
pub fn after(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the earliest time chrono holds (see [`after`]).
pub fn before(t: DateTime<Utc>, d: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `d` as a chrono duration, saturating at the longest one (see [`after`]).
pub fn span(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A new sortable id with the given prefix, e.g. `evt_01J…`. Ids made later sort after
/// ids made earlier (ULID), which keeps cursor pagination cheap.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

/// A new id made at `t`: its time part is `t`, so filtering by creation time can use the id.
/// Events and deliveries get their ids this way from their `created_at`.
pub fn new_id_at(prefix: &str, t: DateTime<Utc>) -> String {
    format!("{prefix}_{}", ulid::Ulid::from_datetime(t.into()))
}

/// The smallest id with this prefix that [`new_id`] can make at `t`: ids made at or after `t`
/// sort at or after it, ids made before sort before it. Turns a time window into an id range,
/// which the stores' `(tenant_id, id)` indexes answer without a scan.
pub fn first_id_at(prefix: &str, t: DateTime<Utc>) -> String {
    // A ULID holds 48 bits of milliseconds; times outside that clamp to its ends.
    const MAX_MS: u64 = (1 << 48) - 1;
    let ms = u64::try_from(t.timestamp_millis()).unwrap_or(0).min(MAX_MS);
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, 0))
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

/// Where a tenant's events go. Its `Debug` output hides the secrets, header values and the
/// URL's password.
#[derive(Clone, Serialize, Deserialize, ToSchema, PartialEq)]
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
    /// Deliveries per [`Endpoint::rate_period`]; `None` means unlimited.
    pub rate_limit: Option<u32>,
    /// What `rate_limit` counts per: a second (the default) or a minute.
    pub rate_period: RatePeriod,
    /// Attempts before a delivery fails for good; `None` uses the server default.
    pub max_attempts: Option<u32>,
    /// Extra headers sent with every delivery.
    pub headers: std::collections::BTreeMap<String, String>,
    pub enabled: bool,
    /// Why the endpoint was disabled, when it was disabled by hookrelay (e.g. `410 Gone`).
    pub disabled_reason: Option<String>,
    /// The circuit breaker, as stored (shared by every dispatcher process).
    pub breaker: Breaker,
    /// Payload filter, ordering and transformation, compiled ([`crate::routing`]).
    #[serde(skip)]
    pub routing: std::sync::Arc<routing::Routing>,
    /// The body shape and signature deliveries carry.
    pub format: DeliveryFormat,
    /// OAuth2 client credentials: deliveries carry a bearer token fetched with them.
    #[schema(value_type = Option<Object>)]
    pub oauth2: Option<OAuth2>,
    /// Other names for the signature headers, where a receiver demands them.
    pub signature_headers: SignatureHeaders,
    /// A client certificate for mutual TLS, and a CA to trust for the receiver.
    #[schema(value_type = Option<Object>)]
    pub tls: Option<ClientTls>,
    /// The proxy this endpoint's deliveries leave through instead of `--egress-proxy`
    /// (a URL), or `direct` for none; `None` follows `--egress-proxy`.
    pub proxy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The names of the Standard Webhooks headers an endpoint's deliveries carry: each one left
/// out keeps its standard name (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
/// Only the names change; the values, and how the signature is made, stay the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignatureHeaders {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
}

impl SignatureHeaders {
    /// Whether every name is the standard one.
    pub fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    /// The three names in use, lowercase: id, timestamp, signature.
    pub fn names(&self) -> [String; 3] {
        let name = |custom: &Option<String>, standard: &str| {
            custom.as_deref().unwrap_or(standard).to_ascii_lowercase()
        };
        [
            name(&self.id, crate::signing::HEADER_ID),
            name(&self.timestamp, crate::signing::HEADER_TIMESTAMP),
            name(&self.signature, crate::signing::HEADER_SIGNATURE),
        ]
    }
}

/// What an endpoint's HTTPS deliveries present and trust (mutual TLS): a client certificate
/// with its private key, and CA certificates to trust for the receiver's server beside the
/// public roots; either may be absent. All PEM. Its `Debug` output hides the key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientTls {
    pub identity: Option<TlsIdentity>,
    pub ca: Option<String>,
}

/// A client certificate (then any intermediates) and its private key (PKCS#8, PKCS#1 or
/// SEC1; sealed at rest, never shown again), PEM.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlsIdentity {
    pub certificate: String,
    pub key: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field(
                "certificate",
                &self.identity.as_ref().map(|i| i.certificate.len()),
            )
            .field("key", &self.identity.as_ref().map(|_| "***"))
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .finish()
    }
}

/// OAuth2 client credentials (RFC 6749, section 4.4) an endpoint's HTTP deliveries
/// authenticate with: hookrelay asks `token_url` for an access token (client id and secret
/// in HTTP Basic authentication) and sends it as `Authorization: Bearer …` beside the
/// signature. Its `Debug` output hides the secret.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuth2 {
    pub token_url: String,
    pub client_id: String,
    /// Sealed at rest like signing secrets; never shown after it is set.
    pub client_secret: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The body shape and signature of what an endpoint receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryFormat {
    /// Standard Webhooks: the body `{"id", "type", "timestamp", "data", "actor"}` and the
    /// `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
    #[default]
    StandardWebhooks,
    /// The community platform's format, for receivers built for it: the body
    /// `{"event", "timestamp", "actor_user_id", "data", "request_id"}` and
    /// `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed with the bytes of
    /// the endpoint's secret as given.
    Community,
}

impl DeliveryFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StandardWebhooks => "standard-webhooks",
            Self::Community => "community",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard-webhooks" => Some(Self::StandardWebhooks),
            "community" => Some(Self::Community),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: std::collections::BTreeMap<&str, &str> =
            self.headers.keys().map(|k| (k.as_str(), "***")).collect();
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("url", &crate::secrets::redact_url(&self.url))
            .field("description", &self.description)
            .field("event_types", &self.event_types)
            .field("secret", &"***")
            .field(
                "previous_secret",
                &self.previous_secret.as_ref().map(|_| "***"),
            )
            .field(
                "previous_secret_expires_at",
                &self.previous_secret_expires_at,
            )
            .field("rate_limit", &self.rate_limit)
            .field("max_attempts", &self.max_attempts)
            .field("headers", &headers)
            .field("enabled", &self.enabled)
            .field("disabled_reason", &self.disabled_reason)
            .field("breaker", &self.breaker)
            .field("routing", &self.routing)
            .field("format", &self.format)
            .field("oauth2", &self.oauth2)
            .field("signature_headers", &self.signature_headers)
            .field("tls", &self.tls)
            .field(
                "proxy",
                &self.proxy.as_deref().map(crate::secrets::redact_url),
            )
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// State of an endpoint's circuit breaker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Deliveries flow.
    #[default]
    Closed,
    /// Too many consecutive failures: deliveries wait (no attempts are used) until
    /// `open_until`, when one probe is sent.
    Open,
    /// One probe is in flight; its success closes the breaker, its failure opens it again.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(Self::Closed),
            "open" => Some(Self::Open),
            "half_open" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

/// An endpoint's circuit breaker, persisted in the store.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Default)]
pub struct Breaker {
    pub state: BreakerState,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// While open: when the probe may go; while half-open: when the probe's lease ends.
    pub open_until: Option<DateTime<Utc>>,
    /// Start of the current run of failures (for auto-disable).
    pub failing_since: Option<DateTime<Utc>>,
}

/// When breakers open and endpoints get disabled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub threshold: u32,
    /// How long an open breaker waits before its probe (±20 % jitter).
    pub cooldown: std::time::Duration,
    /// An endpoint failing continuously for longer than this is disabled.
    pub disable_after: std::time::Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            threshold: 5,
            cooldown: std::time::Duration::from_secs(300),
            disable_after: std::time::Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl Breaker {
    /// Applies the outcomes of attempts (success or not, with their finish times, in order)
    /// and returns the new state, plus a reason when the endpoint must be disabled because
    /// it has been failing for longer than the policy allows.
    pub fn record(
        &self,
        outcomes: &[(bool, DateTime<Utc>)],
        policy: &BreakerPolicy,
    ) -> (Breaker, Option<String>) {
        let mut b = self.clone();
        for &(success, at) in outcomes {
            if success {
                b = Breaker::default();
                continue;
            }
            b.consecutive_failures = b.consecutive_failures.saturating_add(1);
            b.failing_since.get_or_insert(at);
            let reopen = match b.state {
                // Failures of attempts that were in flight when it opened: keep the cool-down.
                BreakerState::Open => false,
                BreakerState::HalfOpen => true,
                BreakerState::Closed => b.consecutive_failures >= policy.threshold,
            };
            if reopen {
                let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
                let wait = policy.cooldown.mul_f64(jitter);
                b.state = BreakerState::Open;
                b.open_until = Some(after(at, wait));
            }
        }
        let disable = match b.failing_since {
            Some(since) if outcomes.last().is_some_and(|(ok, _)| !ok) => {
                let last = outcomes.last().map(|(_, t)| *t).unwrap_or(since);
                let window = span(policy.disable_after);
                (last - since >= window).then(|| {
                    format!(
                        "failing continuously since {} (longer than {})",
                        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        humantime::format_duration(policy.disable_after)
                    )
                })
            }
            _ => None,
        };
        (b, disable)
    }
}

impl Endpoint {
    /// A new enabled endpoint of `tenant_id` to `url`, signing with `secret`, made now: every
    /// event type, no limits, no extra headers, no routing, a closed breaker. Callers set the
    /// rest with struct update syntax (`Endpoint { rate_limit: Some(5), ..Endpoint::new(…) }`).
    pub fn new(tenant_id: impl Into<String>, url: impl Into<String>, secret: String) -> Self {
        let now = now();
        Self {
            id: new_id(prefix::ENDPOINT),
            tenant_id: tenant_id.into(),
            url: url.into(),
            description: None,
            event_types: Vec::new(),
            secret,
            previous_secret: None,
            previous_secret_expires_at: None,
            rate_limit: None,
            rate_period: RatePeriod::Second,
            max_attempts: None,
            headers: Default::default(),
            enabled: true,
            disabled_reason: None,
            breaker: Default::default(),
            routing: Default::default(),
            format: DeliveryFormat::default(),
            oauth2: None,
            signature_headers: SignatureHeaders::default(),
            tls: None,
            proxy: None,
            created_at: now,
            updated_at: now,
        }
    }

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

/// The deliveries of a new event: one per endpoint that subscribes to its type and whose
/// payload filter it passes, due at `deliver_at` or at once. `default_max_attempts`
/// applies where the endpoint sets none.
pub fn fan_out(event: &Event, endpoints: &[Endpoint], default_max_attempts: u32) -> Vec<Delivery> {
    let due = event
        .deliver_at
        .filter(|t| *t > event.created_at)
        .unwrap_or(event.created_at);
    endpoints
        .iter()
        .filter(|ep| {
            ep.enabled
                && ep.tenant_id == event.tenant_id
                && ep.accepts(&event.event_type)
                && ep.routing.matches(event)
        })
        .map(|ep| Delivery {
            ordering_key: ep.routing.ordering_key(event),
            ordering_blocks: ep.routing.blocks_on_failure(),
            id: new_id_at(prefix::DELIVERY, event.created_at),
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

/// What a rate limit counts per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    #[default]
    Second,
    Minute,
}

impl RatePeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Second => "second",
            Self::Minute => "minute",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "second" => Some(Self::Second),
            "minute" => Some(Self::Minute),
            _ => None,
        }
    }

    /// The period's length in milliseconds.
    pub fn millis(self) -> f64 {
        match self {
            Self::Second => 1_000.0,
            Self::Minute => 60_000.0,
        }
    }
}

/// A rate limit: `count` sends per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: RatePeriod,
}

impl Endpoint {
    /// The endpoint's rate limit, if it has one.
    pub fn rate(&self) -> Option<Rate> {
        self.rate_limit.map(|count| Rate {
            count,
            period: self.rate_period,
        })
    }
}

/// Rate limiting by GCRA (a token bucket kept as one time): an endpoint allows `rate.count`
/// sends per period with a burst of one period's worth. `tat` is the stored theoretical
/// arrival time. Returns how many of `want` sends may go at `now`, the new `tat`, and when
/// each of the others should be tried (one emission interval apart).
pub fn admit_sends(
    tat: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    rate: Rate,
    want: u32,
) -> (u32, DateTime<Utc>, Vec<DateTime<Utc>>) {
    let count = f64::from(rate.count.max(1));
    let interval = rate.period.millis() / count; // ms between sends
    let burst_window = count * interval; // one period's worth
    let now_ms = now.timestamp_millis() as f64;
    let base = tat
        .map(|t| t.timestamp_millis() as f64)
        .unwrap_or(now_ms)
        .max(now_ms);
    let room = ((now_ms + burst_window - base) / interval).floor().max(0.0);
    let allowed = (room as u32).min(want);
    let new_tat = base + f64::from(allowed) * interval;
    // The next send fits once new_tat - t <= burst_window - interval.
    let next = (new_tat - burst_window + interval).max(now_ms);
    let later = (0..want - allowed)
        .map(|i| from_millis((next + f64::from(i) * interval).ceil() as i64))
        .collect();
    (allowed, from_millis(new_tat.ceil() as i64), later)
}

/// One thing that happened.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Event {
    pub id: String,
    pub tenant_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload: any JSON value but `null`.
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` received on ingest (or, when none came, one hookrelay started for
    /// the event), sent again on every delivery.
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
    #[serde(rename = "attempt_count")]
    pub attempts: u32,
    /// Attempts allowed before the delivery fails for good.
    pub max_attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// For an ordered endpoint: the event's ordering key. Deliveries of one endpoint and
    /// key are attempted one at a time, in the order they were created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// Whether this delivery, failed for good, holds back later ones of its key.
    #[serde(skip)]
    pub ordering_blocks: bool,
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
    fn absurd_durations_saturate_instead_of_vanishing() {
        let now = now();
        let second = std::time::Duration::from_secs(1);
        assert_eq!(after(now, second), now + chrono::Duration::seconds(1));
        assert_eq!(before(now, second), now - chrono::Duration::seconds(1));
        let absurd = std::time::Duration::from_secs(u64::MAX);
        assert_eq!(after(now, absurd), DateTime::<Utc>::MAX_UTC);
        // A retention this long keeps everything: its cutoff is the earliest time.
        assert_eq!(before(now, absurd), DateTime::<Utc>::MIN_UTC);
        assert_eq!(span(absurd), chrono::Duration::MAX);
        assert_eq!(span(second), chrono::Duration::seconds(1));
    }

    #[test]
    fn endpoint_debug_output_hides_credentials() {
        let mut ep = Endpoint::new(
            "default",
            "amqp://user:broker-pass-1@127.0.0.1/%2f?routing_key=q",
            "whsec_c2lnbmluZy1zZWNyZXQtMQ".into(),
        );
        ep.previous_secret = Some("whsec_cHJldmlvdXMtc2VjcmV0".into());
        ep.headers
            .insert("X-Api-Key".into(), "receiver-key-1".into());
        let shown = format!("{ep:?}");
        for secret in [
            "broker-pass-1",
            "whsec_c2lnbmluZy1zZWNyZXQtMQ",
            "whsec_cHJldmlvdXMtc2VjcmV0",
            "receiver-key-1",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("X-Api-Key") && shown.contains(&ep.id),
            "{shown}"
        );
    }

    fn t(secs: i64) -> DateTime<Utc> {
        from_millis(1_700_000_000_000 + secs * 1000)
    }

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let p = BreakerPolicy::default();
        let fails: Vec<_> = (0..4).map(|i| (false, t(i))).collect();
        let (b, off) = Breaker::default().record(&fails, &p);
        assert_eq!(
            (b.state, b.consecutive_failures, off),
            (BreakerState::Closed, 4, None)
        );
        let (b, _) = b.record(&[(false, t(5))], &p);
        assert_eq!(b.state, BreakerState::Open);
        let until = b.open_until.unwrap();
        assert!(
            until >= t(5) + chrono::Duration::seconds(240)
                && until <= t(5) + chrono::Duration::seconds(360)
        );
        // Stragglers that were in flight do not push the probe further away.
        let (b2, _) = b.record(&[(false, t(6))], &p);
        assert_eq!(b2.open_until, Some(until));
        // A failed probe opens it again; a successful one closes it.
        let probing = Breaker {
            state: BreakerState::HalfOpen,
            ..b.clone()
        };
        let (again, _) = probing.record(&[(false, t(400))], &p);
        assert_eq!(again.state, BreakerState::Open);
        assert!(again.open_until.unwrap() > t(400));
        let (closed, _) = probing.record(&[(true, t(400))], &p);
        assert_eq!(closed, Breaker::default());
    }

    #[test]
    fn rate_limits_allow_a_burst_then_the_rate() {
        let ten = Rate {
            count: 10,
            period: RatePeriod::Second,
        };
        let (n, tat, later) = admit_sends(None, t(0), ten, 25);
        assert_eq!(n, 10, "a second's worth at once");
        assert_eq!(later.len(), 15);
        assert_eq!(later[0], t(0) + chrono::Duration::milliseconds(100));
        assert_eq!(later[1] - later[0], chrono::Duration::milliseconds(100));
        // 300 ms later three more fit.
        let (n, tat2, _) = admit_sends(
            Some(tat),
            t(0) + chrono::Duration::milliseconds(300),
            ten,
            25,
        );
        assert_eq!(n, 3);
        assert!(tat2 > tat);
        // After a quiet spell the burst is back, no more.
        let (n, _, _) = admit_sends(Some(tat2), t(60), ten, 100);
        assert_eq!(n, 10);
    }

    #[test]
    fn per_minute_limits_space_sends_over_the_minute() {
        let thirty = Rate {
            count: 30,
            period: RatePeriod::Minute,
        };
        let (n, tat, later) = admit_sends(None, t(0), thirty, 40);
        assert_eq!(n, 30, "a minute's worth at once");
        assert_eq!(later.len(), 10);
        // Then one every two seconds.
        assert_eq!(later[0], t(0) + chrono::Duration::seconds(2));
        assert_eq!(later[1] - later[0], chrono::Duration::seconds(2));
        let (n, _, _) = admit_sends(Some(tat), t(1), thirty, 10);
        assert_eq!(n, 0, "nothing more within the first second");
        let (n, _, _) = admit_sends(Some(tat), t(7), thirty, 10);
        assert_eq!(n, 3, "one per two seconds after the burst");
    }

    #[test]
    fn endpoints_failing_longer_than_the_window_are_disabled() {
        let p = BreakerPolicy {
            disable_after: std::time::Duration::from_secs(60),
            ..BreakerPolicy::default()
        };
        let (b, off) = Breaker::default().record(&[(false, t(0)), (false, t(30))], &p);
        assert!(off.is_none());
        let (_, off) = b.record(&[(false, t(61))], &p);
        assert!(off.unwrap().contains("failing continuously"));
        // A success in between starts the window again.
        let (_, off) = b.record(&[(true, t(40)), (false, t(61))], &p);
        assert!(off.is_none());
    }

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
