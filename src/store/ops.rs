//! What the store keeps for operations: per-minute delivery counters, dispatcher
//! heartbeats, alert state, the built-in test receiver (inbox) and retention.
//!
//! Kept apart from [`super::Store`]'s core (ingest, claim, complete) in a trait of its own,
//! [`OpsStore`], which every store also implements; `Store` requires it, so an
//! `Arc<dyn Store>` offers both.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Completion, Page, Result};
use crate::domain::{from_millis, BreakerPolicy, Delivery, Event};

/// Upper bounds (milliseconds) of the end-to-end latency buckets kept per minute; a last
/// bucket counts everything slower.
pub const E2E_BOUNDS_MS: [u64; 16] = [
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
    3_600_000, 21_600_000,
];

/// Number of end-to-end latency buckets, the open-ended one included.
pub const E2E_BUCKETS: usize = E2E_BOUNDS_MS.len() + 1;

/// The minute of a time: Unix milliseconds / 60,000.
pub fn minute_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis().div_euclid(60_000)
}

/// Delivery counters of one minute (of one dispatcher when written, of all when read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteStats {
    /// [`minute_of`] the time the attempts finished.
    pub minute: i64,
    /// Deliveries that reached `delivered`.
    pub delivered: u64,
    /// Deliveries that failed for good.
    pub failed: u64,
    /// Failed attempts with another attempt scheduled.
    pub retried: u64,
    /// Every attempt.
    pub attempts: u64,
    /// Sum of attempt durations.
    pub attempt_ms: u64,
    /// Sum of end-to-end latencies of the delivered deliveries.
    pub e2e_ms: u64,
    /// Delivered deliveries by end-to-end latency bucket ([`E2E_BOUNDS_MS`]).
    pub e2e_buckets: [u64; E2E_BUCKETS],
}

impl MinuteStats {
    /// Counts one attempt. `delivered_after_ms` is the end-to-end latency when the attempt
    /// delivered the message.
    pub fn add(
        &mut self,
        status: crate::domain::DeliveryStatus,
        attempt_ms: u64,
        e2e_ms: Option<u64>,
    ) {
        use crate::domain::DeliveryStatus;
        self.attempts += 1;
        self.attempt_ms = self.attempt_ms.saturating_add(attempt_ms);
        match status {
            DeliveryStatus::Delivered => {
                self.delivered += 1;
                if let Some(ms) = e2e_ms {
                    self.e2e_ms = self.e2e_ms.saturating_add(ms);
                    let i = E2E_BOUNDS_MS
                        .iter()
                        .position(|b| ms <= *b)
                        .unwrap_or(E2E_BOUNDS_MS.len());
                    self.e2e_buckets[i] += 1;
                }
            }
            DeliveryStatus::Failed | DeliveryStatus::Cancelled => self.failed += 1,
            DeliveryStatus::Pending => self.retried += 1,
        }
    }

    /// Adds another minute's counters to these.
    pub fn merge(&mut self, o: &MinuteStats) {
        self.delivered += o.delivered;
        self.failed += o.failed;
        self.retried += o.retried;
        self.attempts += o.attempts;
        self.attempt_ms = self.attempt_ms.saturating_add(o.attempt_ms);
        self.e2e_ms = self.e2e_ms.saturating_add(o.e2e_ms);
        for (a, b) in self.e2e_buckets.iter_mut().zip(o.e2e_buckets.iter()) {
            *a += b;
        }
    }
}

/// One endpoint's counters of one minute, with when it last succeeded and failed (Unix ms)
/// and the last failure's error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointMinute {
    pub endpoint_id: String,
    pub stats: MinuteStats,
    pub last_success_at: Option<i64>,
    pub last_failure_at: Option<i64>,
    pub last_error: Option<String>,
}

impl EndpointMinute {
    /// Adds a later (or earlier) record of the same endpoint: counters add up, the latest
    /// success and failure win.
    pub fn merge(&mut self, o: &EndpointMinute) {
        self.stats.merge(&o.stats);
        self.last_success_at = self.last_success_at.max(o.last_success_at);
        if o.last_failure_at > self.last_failure_at {
            self.last_failure_at = o.last_failure_at;
            self.last_error.clone_from(&o.last_error);
        }
    }

    /// As JSON for batch upserts: `[endpoint_id, …stats row…, success, failure, error]`.
    pub(crate) fn to_json(&self, dispatcher: &str) -> serde_json::Value {
        let mut row = vec![serde_json::json!(self.endpoint_id)];
        if let serde_json::Value::Array(stats) = stats_to_json(dispatcher, &self.stats) {
            row.extend(stats);
        }
        row.push(serde_json::json!(self.last_success_at));
        row.push(serde_json::json!(self.last_failure_at));
        row.push(serde_json::json!(self.last_error));
        serde_json::Value::Array(row)
    }
}

/// What a batch of attempts adds to the statistics: the dispatcher's counters per minute,
/// and each endpoint's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchStats {
    pub minutes: Vec<MinuteStats>,
    pub endpoints: Vec<EndpointMinute>,
}

/// An endpoint's statistics as read: the counters of each minute kept (summed over
/// dispatchers), and its last success and failure among them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointHistory {
    pub minutes: Vec<MinuteStats>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The column names of the latency buckets, `e2e_b00` …
pub(crate) fn bucket_columns() -> Vec<String> {
    (0..E2E_BUCKETS).map(|i| format!("e2e_b{i:02}")).collect()
}

/// Pending deliveries, read from the index of pending rows only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PendingSummary {
    pub count: u64,
    /// Creation time of the oldest pending delivery.
    pub oldest_created_at: Option<DateTime<Utc>>,
}

/// How many endpoints' breakers are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct BreakerCounts {
    pub closed: u64,
    pub open: u64,
    pub half_open: u64,
}

impl BreakerCounts {
    /// From `(breaker_state, count)` rows.
    pub(crate) fn from_rows(rows: Vec<(String, i64)>) -> Self {
        let mut c = Self::default();
        for (state, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match state.as_str() {
                "closed" => c.closed += n,
                "open" => c.open += n,
                _ => c.half_open += n,
            }
        }
        c
    }
}

/// An endpoint that needs attention: its breaker is not closed, or it is disabled.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FlaggedEndpoint {
    pub id: String,
    pub tenant_id: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker_state: String,
}

/// An endpoint whose client certificate expires soon.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ExpiringCertificate {
    pub id: String,
    pub tenant_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A dispatcher process as its heartbeats describe it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DispatcherBeat {
    pub id: String,
    pub hostname: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    /// Set when the process stopped cleanly.
    pub stopped_at: Option<DateTime<Utc>>,
}

/// An alert that fired, as kept in the store so that only one process announces it and a
/// restart does not announce it again.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertRecord {
    /// The rule: `failure_rate`, `pending`, `breaker_open`, `endpoint_disabled`,
    /// `dispatcher_stalled`.
    pub rule: String,
    /// What the alert is about: an endpoint or dispatcher id, or `global`.
    pub subject: String,
    /// Unique per firing: the idempotency key of its announcements derives from it.
    pub episode: String,
    pub message: String,
    pub details: serde_json::Value,
    pub fired_at: DateTime<Utc>,
    /// Whether the "fired" announcement has been handed to the delivery pipeline.
    pub fired_sent: bool,
    /// When the condition cleared; the row goes once the "resolved" message is sent.
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A built-in test receiver: `/inbox/{token}` keeps what it receives.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbox {
    pub id: String,
    pub tenant_id: String,
    /// The token in the inbox's URL (sealed in the store when a key is configured).
    pub token: String,
    /// [`Inbox::hash_token`] of the token: what the store finds the inbox by.
    pub token_hash: String,
    /// Secret to verify Standard Webhooks signatures with, if any.
    pub secret: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl Inbox {
    /// SHA-256 of an inbox token, lowercase hex: tokens are looked up only by this.
    pub fn hash_token(token: &str) -> String {
        crate::secrets::token_hash(token)
    }
}

/// How a received message's signature checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verification {
    /// A signature matched the inbox secret.
    Valid,
    /// Signed, but no signature matched (or the timestamp is too far off).
    Invalid,
    /// No signature headers.
    Unsigned,
    /// The inbox has no secret to check with.
    NoSecret,
}

impl Verification {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Unsigned => "unsigned",
            Self::NoSecret => "no_secret",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "valid" => Self::Valid,
            "invalid" => Self::Invalid,
            "unsigned" => Self::Unsigned,
            "no_secret" => Self::NoSecret,
            _ => return None,
        })
    }
}

/// One request an inbox received.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxMessage {
    pub id: String,
    pub inbox_id: String,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body as text (invalid UTF-8 replaced), cut at the inbox limit.
    pub body: String,
    pub truncated: bool,
    pub verification: Verification,
    pub verify_error: Option<String>,
}

/// A broker whose messages become events of one tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: String,
    pub tenant_id: String,
    /// Where to read, in the style of destination URLs (its password sealed in the store
    /// when a key is configured).
    pub url: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A message a source could not turn into an event, kept with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRejection {
    pub id: String,
    pub source_id: String,
    /// The broker's id of the message (a stream entry id, a sequence number, …).
    pub message_id: String,
    pub reason: String,
    /// The message as text (invalid UTF-8 replaced), cut at the kept length.
    pub body: String,
    pub truncated: bool,
    pub received_at: DateTime<Utc>,
}

/// One configuration change in the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    /// The tenant the change belongs to; `null` for changes outside any tenant (event types).
    pub tenant_id: Option<String>,
    /// Who: a token id (`tok_…`), `admin` (the configured admin token) or `system`
    /// (hookrelay itself, e.g. an endpoint disabled after a 410).
    pub actor: String,
    /// What, as `object.verb`: `endpoint.updated`, `token.created`, …
    pub action: String,
    /// The id of the changed object.
    pub target: Option<String>,
    /// What changed (for updates, `{field: {from, to}}`); never a secret.
    #[schema(value_type = Object)]
    pub changes: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// One tenant's entries; `None` lists every entry.
    pub tenant_id: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub page: Page,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    pub(crate) id: String,
    pub(crate) tenant_id: Option<String>,
    pub(crate) actor: String,
    pub(crate) action: String,
    pub(crate) target: Option<String>,
    pub(crate) changes: String,
    pub(crate) created_at: i64,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = super::StoreError;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(Self {
            changes: serde_json::from_str(&r.changes)
                .map_err(|e| super::rows::corrupt("audit changes", e))?,
            id: r.id,
            tenant_id: r.tenant_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            created_at: from_millis(r.created_at),
        })
    }
}

/// A consumer portal link: it opens the portal for one tenant until it expires or is
/// revoked. Only the SHA-256 of its token is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalLink {
    /// `prt_…`.
    pub id: String,
    pub tenant_id: String,
    /// Hex SHA-256 of the link's token.
    pub token_hash: String,
    /// Whether the portal may only be looked at.
    pub read_only: bool,
    /// The event types endpoints may subscribe to through the portal; `None`: the whole
    /// catalog.
    pub event_types: Option<Vec<String>>,
    /// Whether broker destinations (SQS, Kafka, …) may be entered; otherwise only
    /// `http(s)://` URLs.
    pub allow_brokers: bool,
    /// The audit trail's actor of whoever made the link.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct PortalLinkRow {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) token_hash: String,
    pub(crate) read_only: bool,
    pub(crate) event_types: Option<String>,
    pub(crate) allow_brokers: bool,
    pub(crate) created_by: String,
    pub(crate) created_at: i64,
    pub(crate) expires_at: i64,
    pub(crate) revoked_at: Option<i64>,
}

/// The columns of [`PortalLinkRow`], for a `SELECT`.
pub(crate) const PORTAL_LINK_COLUMNS: &str = "id, tenant_id, token_hash, read_only, \
     event_types, allow_brokers, created_by, MS(created_at) AS created_at, \
     MS(expires_at) AS expires_at, MS(revoked_at) AS revoked_at";

impl TryFrom<PortalLinkRow> for PortalLink {
    type Error = super::StoreError;
    fn try_from(r: PortalLinkRow) -> Result<Self> {
        let event_types = r
            .event_types
            .map(|t| serde_json::from_str(&t))
            .transpose()
            .map_err(|e| super::rows::corrupt("portal link event types", e))?;
        Ok(Self {
            id: r.id,
            tenant_id: r.tenant_id,
            token_hash: r.token_hash,
            read_only: r.read_only,
            event_types,
            allow_brokers: r.allow_brokers,
            created_by: r.created_by,
            created_at: from_millis(r.created_at),
            expires_at: from_millis(r.expires_at),
            revoked_at: r.revoked_at.map(from_millis),
        })
    }
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pruned {
    /// Events deleted (their deliveries and attempts went with them).
    pub events: u64,
    /// Inbox messages, statistics rows, dispatcher rows.
    pub other: u64,
}

/// The store's operations side. Implemented by every store.
#[async_trait]
pub trait OpsStore: Send + Sync {
    /// [`super::Store::complete`], and in the same transaction adds `stats` to this
    /// dispatcher's per-minute counters and to each endpoint's (rows of their own per
    /// dispatcher, so processes never wait for each other there).
    async fn complete_with_stats(
        &self,
        completions: &[Completion],
        policy: &BreakerPolicy,
        dispatcher: &str,
        stats: &BatchStats,
    ) -> Result<()>;

    /// Counters of every minute from `since_minute` on, summed over dispatchers, oldest
    /// first (at most one row per minute).
    async fn stats_since(&self, since_minute: i64) -> Result<Vec<MinuteStats>>;

    /// One endpoint's counters of every minute from `since_minute` on, summed over
    /// dispatchers, oldest first, with its last success and failure among them. Reads at
    /// most one row per minute and dispatcher, never the attempt log.
    async fn endpoint_stats_since(
        &self,
        endpoint_id: &str,
        since_minute: i64,
    ) -> Result<EndpointHistory>;

    /// How many deliveries are pending and since when the oldest is.
    async fn pending_summary(&self) -> Result<PendingSummary>;

    /// Endpoints whose breaker is not closed or that are disabled (at most `limit`).
    async fn flagged_endpoints(&self, limit: u32) -> Result<Vec<FlaggedEndpoint>>;

    /// Enabled endpoints whose client certificate expires before `before`, soonest first
    /// (at most `limit`).
    async fn expiring_certificates(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ExpiringCertificate>>;

    /// How many endpoints' breakers are closed, open and half-open.
    async fn breaker_counts(&self) -> Result<BreakerCounts>;

    /// Records that a dispatcher is alive (inserting it the first time).
    async fn heartbeat(&self, beat: &DispatcherBeat) -> Result<()>;

    /// Dispatchers that were alive at or after `since`, or are still running (not stopped).
    async fn list_dispatchers(&self, since: DateTime<Utc>) -> Result<Vec<DispatcherBeat>>;

    /// Stores an event and one delivery of it, leased under `lease_id` (used by the test
    /// endpoint, which sends at once: no fan-out, no dispatcher involved).
    async fn insert_leased(&self, event: &Event, delivery: &Delivery, lease_id: &str)
        -> Result<()>;

    /// Every alert that is firing or awaits its "resolved" message.
    async fn list_alerts(&self) -> Result<Vec<AlertRecord>>;

    /// Starts an alert. `false` when one for the same rule and subject exists already.
    async fn open_alert(&self, alert: &AlertRecord) -> Result<bool>;

    /// Marks the alert `episode` resolved at `at` (if it is not already).
    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;

    /// The announcement of `episode` was handed to the pipeline: a fired one is marked
    /// sent; a resolved one is forgotten.
    async fn alert_sent(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        resolved: bool,
    ) -> Result<()>;

    async fn create_inbox(&self, inbox: &Inbox) -> Result<()>;
    async fn list_inboxes(&self, tenant_id: &str, page: &Page) -> Result<Vec<Inbox>>;
    async fn get_inbox(&self, tenant_id: &str, id: &str) -> Result<Option<Inbox>>;
    /// The inbox whose token has this [`Inbox::hash_token`].
    async fn find_inbox(&self, token_hash: &str) -> Result<Option<Inbox>>;
    /// Replaces an inbox's stored token and secret (to seal ones stored in plaintext); the
    /// token hash stays. `false` when the inbox does not exist.
    async fn set_inbox_credentials(
        &self,
        id: &str,
        token: &str,
        secret: Option<&str>,
    ) -> Result<bool>;
    /// Deletes an inbox and its messages. `false` when it did not exist.
    async fn delete_inbox(&self, tenant_id: &str, id: &str) -> Result<bool>;
    /// Keeps a message, and only the `keep` newest messages of its inbox.
    async fn add_inbox_message(&self, message: &InboxMessage, keep: u32) -> Result<()>;
    /// An inbox's messages, newest first.
    async fn list_inbox_messages(&self, inbox_id: &str, page: &Page) -> Result<Vec<InboxMessage>>;

    async fn create_source(&self, source: &Source) -> Result<()>;
    /// The sources of one tenant, or of every tenant when `tenant_id` is `None`.
    async fn list_sources(&self, tenant_id: Option<&str>, page: &Page) -> Result<Vec<Source>>;
    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>>;
    /// Deletes a source and its rejections. `false` when it did not exist.
    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool>;
    /// Keeps a rejection, and only the `keep` newest rejections of its source.
    async fn add_source_rejection(&self, rejection: &SourceRejection, keep: u32) -> Result<()>;
    /// A source's rejections, newest first.
    async fn list_source_rejections(
        &self,
        source_id: &str,
        page: &Page,
    ) -> Result<Vec<SourceRejection>>;

    /// Takes, or renews, the lease on reading a source for `holder` until `until`, unless
    /// another holder's lease runs past `now`. `true` when `holder` holds it.
    async fn lease_source(
        &self,
        source_id: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// A source's positions: the next offset to read, by partition.
    async fn source_positions(&self, source_id: &str) -> Result<Vec<(i32, i64)>>;
    /// Moves a source's position in a partition forward to `next` (never back).
    async fn set_source_position(&self, source_id: &str, partition: i32, next: i64) -> Result<()>;

    async fn create_portal_link(&self, link: &PortalLink) -> Result<()>;
    /// The portal link whose token has this hex SHA-256 (expired and revoked ones too).
    async fn find_portal_link(&self, token_hash: &str) -> Result<Option<PortalLink>>;
    /// A tenant's portal links, newest first.
    async fn list_portal_links(&self, tenant_id: &str, page: &Page) -> Result<Vec<PortalLink>>;
    /// Revokes a tenant's portal link at `at` (a revoked one keeps its first time). The
    /// link as it is now; `None` when there is none.
    async fn revoke_portal_link(
        &self,
        tenant_id: &str,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PortalLink>>;

    /// Appends an entry to the audit trail.
    async fn add_audit(&self, entry: &AuditEntry) -> Result<()>;
    /// Audit entries matching `filter`, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>>;

    /// Retention: deletes at most `limit` events created before `older_than` none of whose
    /// deliveries is pending, with their deliveries and attempts.
    async fn prune_events(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64>;

    /// Retention of operations data: inbox messages received and audit entries made
    /// before `older_than`, portal links expired before it, statistics of minutes before
    /// `stats_before_minute`, and dispatchers silent since before `dispatchers_before`; at
    /// most `limit` rows of each.
    async fn prune_operations(
        &self,
        older_than: DateTime<Utc>,
        stats_before_minute: i64,
        dispatchers_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64>;
}

/// The `ORDER BY`-free row of a stats query, bucket columns as an array.
pub(crate) fn stats_from_row(values: &[i64]) -> MinuteStats {
    let get = |i: usize| u64::try_from(values.get(i).copied().unwrap_or(0)).unwrap_or(0);
    let mut buckets = [0u64; E2E_BUCKETS];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = get(7 + i);
    }
    MinuteStats {
        minute: values.first().copied().unwrap_or(0),
        delivered: get(1),
        failed: get(2),
        retried: get(3),
        attempts: get(4),
        attempt_ms: get(5),
        e2e_ms: get(6),
        e2e_buckets: buckets,
    }
}

/// A stats row as JSON for batch upserts: `[minute, dispatcher, delivered, …, buckets…]`.
pub(crate) fn stats_to_json(dispatcher: &str, s: &MinuteStats) -> serde_json::Value {
    let mut row = vec![
        serde_json::json!(s.minute),
        serde_json::json!(dispatcher),
        serde_json::json!(s.delivered),
        serde_json::json!(s.failed),
        serde_json::json!(s.retried),
        serde_json::json!(s.attempts),
        serde_json::json!(s.attempt_ms),
        serde_json::json!(s.e2e_ms),
    ];
    row.extend(s.e2e_buckets.iter().map(|b| serde_json::json!(b)));
    serde_json::Value::Array(row)
}

/// The counter columns after `minute, dispatcher`, in [`stats_to_json`] order.
pub(crate) fn counter_columns() -> Vec<String> {
    let mut cols: Vec<String> = [
        "delivered",
        "failed",
        "retried",
        "attempts",
        "attempt_ms",
        "e2e_ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cols.extend(bucket_columns());
    cols
}

// Rows shared by the SQL stores: times as epoch milliseconds, JSON as text.

#[derive(sqlx::FromRow)]
pub(crate) struct BeatRow {
    pub(crate) id: String,
    pub(crate) hostname: String,
    pub(crate) pid: i64,
    pub(crate) started_at: i64,
    pub(crate) last_heartbeat: i64,
    pub(crate) stopped_at: Option<i64>,
}

impl From<BeatRow> for DispatcherBeat {
    fn from(r: BeatRow) -> Self {
        Self {
            id: r.id,
            hostname: r.hostname,
            pid: u32::try_from(r.pid).unwrap_or(0),
            started_at: from_millis(r.started_at),
            last_heartbeat: from_millis(r.last_heartbeat),
            stopped_at: r.stopped_at.map(from_millis),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AlertRow {
    pub(crate) rule: String,
    pub(crate) subject: String,
    pub(crate) episode: String,
    pub(crate) message: String,
    pub(crate) details: String,
    pub(crate) fired_at: i64,
    pub(crate) fired_sent: bool,
    pub(crate) resolved_at: Option<i64>,
}

impl TryFrom<AlertRow> for AlertRecord {
    type Error = super::StoreError;
    fn try_from(r: AlertRow) -> Result<Self> {
        Ok(Self {
            details: serde_json::from_str(&r.details)
                .map_err(|e| super::rows::corrupt("alert details", e))?,
            rule: r.rule,
            subject: r.subject,
            episode: r.episode,
            message: r.message,
            fired_at: from_millis(r.fired_at),
            fired_sent: r.fired_sent,
            resolved_at: r.resolved_at.map(from_millis),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct InboxRow {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) token: String,
    pub(crate) token_hash: Option<String>,
    pub(crate) secret: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) created_at: i64,
}

impl From<InboxRow> for Inbox {
    fn from(r: InboxRow) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            token: r.token,
            // Filled when the store starts (rows written before it had the column).
            token_hash: r.token_hash.unwrap_or_default(),
            secret: r.secret,
            description: r.description,
            created_at: from_millis(r.created_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    pub(crate) id: String,
    pub(crate) inbox_id: String,
    pub(crate) received_at: i64,
    pub(crate) method: String,
    pub(crate) headers: String,
    pub(crate) body: String,
    pub(crate) truncated: bool,
    pub(crate) verification: String,
    pub(crate) verify_error: Option<String>,
}

impl TryFrom<MessageRow> for InboxMessage {
    type Error = super::StoreError;
    fn try_from(r: MessageRow) -> Result<Self> {
        Ok(Self {
            headers: serde_json::from_str(&r.headers)
                .map_err(|e| super::rows::corrupt("inbox headers", e))?,
            verification: Verification::parse(&r.verification)
                .ok_or_else(|| super::rows::corrupt("inbox verification", &r.verification))?,
            id: r.id,
            inbox_id: r.inbox_id,
            received_at: from_millis(r.received_at),
            method: r.method,
            body: r.body,
            truncated: r.truncated,
            verify_error: r.verify_error,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SourceRow {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) url: String,
    pub(crate) description: Option<String>,
    pub(crate) created_at: i64,
}

impl From<SourceRow> for Source {
    fn from(r: SourceRow) -> Self {
        Self {
            id: r.id,
            tenant_id: r.tenant_id,
            url: r.url,
            description: r.description,
            created_at: from_millis(r.created_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RejectionRow {
    pub(crate) id: String,
    pub(crate) source_id: String,
    pub(crate) message_id: String,
    pub(crate) reason: String,
    pub(crate) body: String,
    pub(crate) truncated: bool,
    pub(crate) received_at: i64,
}

impl From<RejectionRow> for SourceRejection {
    fn from(r: RejectionRow) -> Self {
        Self {
            id: r.id,
            source_id: r.source_id,
            message_id: r.message_id,
            reason: r.reason,
            body: r.body,
            truncated: r.truncated,
            received_at: from_millis(r.received_at),
        }
    }
}

/// Columns of `sources`, in [`SourceRow`] order (both stores keep times as Unix ms).
pub(crate) const SOURCE_COLUMNS: &str = "id, tenant_id, url, description, created_at";
/// Columns of `source_rejections`, in [`RejectionRow`] order.
pub(crate) const REJECTION_COLUMNS: &str =
    "id, source_id, message_id, reason, body, truncated, received_at";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryStatus;

    #[test]
    fn attempts_land_in_their_counters_and_buckets() {
        let mut m = MinuteStats::default();
        m.add(DeliveryStatus::Delivered, 12, Some(7));
        m.add(DeliveryStatus::Delivered, 12, Some(10));
        m.add(DeliveryStatus::Delivered, 12, Some(11));
        m.add(DeliveryStatus::Delivered, 12, Some(u64::MAX / 4));
        m.add(DeliveryStatus::Pending, 5, None);
        m.add(DeliveryStatus::Failed, 5, None);
        assert_eq!((m.delivered, m.retried, m.failed, m.attempts), (4, 1, 1, 6));
        assert_eq!(m.e2e_buckets[0], 2);
        assert_eq!(m.e2e_buckets[1], 1);
        assert_eq!(m.e2e_buckets[E2E_BUCKETS - 1], 1);
        let json = stats_to_json("d", &m);
        let values: Vec<i64> = json.as_array().unwrap()[2..]
            .iter()
            .map(|v| v.as_i64().unwrap_or(i64::MAX))
            .collect();
        let mut row = vec![m.minute];
        row.extend(values);
        let mut back = stats_from_row(&row);
        back.e2e_ms = m.e2e_ms;
        assert_eq!(back, m);
        assert_eq!(counter_columns().len() + 2, json.as_array().unwrap().len());
    }
}
