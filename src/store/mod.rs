//! The store: the one source of truth. One trait, one implementation per database.
//!
//! The store knows only domain types. Fan-out happens inside [`Store::ingest`] so that the
//! event row and its delivery rows are written in one transaction, against the endpoints as
//! they are at that moment (read-your-writes: an endpoint that a create call returned is
//! used by the very next event).

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::domain::{
    Attempt, Breaker, BreakerPolicy, Delivery, DeliveryStatus, Endpoint, Event, EventType, Tenant,
};

pub mod ops;
pub mod postgres;
mod rows;
pub mod sealed;
mod sql;
pub mod sqlite;

pub use ops::OpsStore;
pub use sql::RECOVERY_WINDOW;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique key is taken (tenant id, event-type name, …).
    #[error("{0} already exists")]
    Conflict(String),
    /// The database cannot be reached right now; the caller may retry later.
    #[error("store unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be decoded (a bug or a manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An event names a tenant that does not exist.
    #[error("tenant {0} not found")]
    UnknownTenant(String),
    /// An event's data fails its type's schema (the message says where and why).
    #[error("{0}")]
    InvalidData(String),
    /// A limit would be exceeded; the message says which.
    #[error("{0}")]
    LimitReached(String),
    /// The strict catalog is on and the event's type is not in it.
    #[error("event type {0} is not in the catalog")]
    UnknownEventType(String),
    /// The URL names no supported database.
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The database cannot be prepared for hookrelay (its schema, the application's
    /// functions); the message says why and what to do.
    #[error("{0}")]
    Setup(String),
}

impl StoreError {
    /// Classifies an sqlx error: connection trouble is `Unavailable`, the rest `Database`.
    pub fn from_sqlx(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            other => StoreError::Database(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Text from the outside world (a response excerpt, a received body, an error message) made
/// storable in every store: PostgreSQL text cannot hold NUL, which becomes U+FFFD, so that
/// one such byte cannot fail a write.
pub fn storable(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// A bearer token as stored: only its SHA-256 hash is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    /// `None` for an admin token.
    pub tenant_id: Option<String>,
    pub hash: String,
    pub created_at: DateTime<Utc>,
}

/// Cursor pagination: items strictly after `cursor` in the list's order (newest first).
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The id of the last item of the previous page.
    pub after_id: Option<String>,
    pub limit: u32,
}

/// Opaque cursors: base64url of the last id of a page.
pub mod cursor {
    use super::*;

    pub fn encode(id: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
    }

    /// `None` when the cursor is not one that [`encode`] made.
    pub fn decode(cursor: &str) -> Option<String> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .ok()?;
        let id = String::from_utf8(bytes).ok()?;
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        valid.then_some(id)
    }
}

/// Filters of the event log.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    /// Events created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Events created before this time.
    pub until: Option<DateTime<Utc>>,
    pub page: Page,
}

/// Filters of the delivery log.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<DeliveryStatus>,
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    /// Deliveries created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Deliveries created before this time.
    pub until: Option<DateTime<Utc>>,
    pub page: Page,
}

/// Which finished deliveries a bulk replay makes pending again.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub endpoint_id: Option<String>,
    pub event_id: Option<String>,
    /// Deliveries created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Deliveries created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Statuses to replay (never `pending`).
    pub statuses: Vec<DeliveryStatus>,
}

/// What an ingest did.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// A new event, with the deliveries fanned out to it.
    Created(Event, Vec<Delivery>),
    /// The idempotency key was seen before: the first event and its deliveries.
    Existing(Event, Vec<Delivery>),
}

/// Validates event data against the JSON Schema of its type; the store calls it during
/// ingest with the event type as stored.
pub trait DataCheck: Send + Sync {
    /// `Err` with a message naming the failing path.
    fn check(&self, event_type: &EventType, data: &serde_json::Value) -> Result<(), String>;

    /// Whether events of a type missing from the catalog are accepted; `false` is the
    /// strict catalog, where the store refuses them with [`StoreError::UnknownEventType`].
    fn accepts_unknown_types(&self) -> bool {
        true
    }
}

/// A delivery claimed by a dispatcher, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub delivery: Delivery,
    pub event: Event,
    pub endpoint: Endpoint,
    /// The claim's lease token; completion must present it.
    pub lease_id: String,
    /// Set when the event's stored data cannot be read: the delivery fails with this,
    /// nothing is sent.
    pub unreadable: Option<String>,
}

/// How one claim shares itself out between tenants, so that a tenant with a slow backlog
/// cannot take every delivery slot: the claim takes at most `per_tenant` deliveries of each
/// tenant (fewer for those in `room`), round-robin across tenants (each tenant's oldest due
/// first, then each tenant's second, …).
#[derive(Debug, Clone, Default)]
pub struct TenantShare {
    /// Most deliveries of one tenant in this claim (`0`: the claim's whole limit).
    pub per_tenant: u32,
    /// Tenants allowed fewer than `per_tenant` (they already have deliveries in flight):
    /// `(tenant id, most)`. A tenant with `0` is skipped without reading its backlog.
    pub room: Vec<(String, u32)>,
}

impl TenantShare {
    /// The per-tenant bound of a claim of `limit`.
    pub(crate) fn per_tenant(&self, limit: u32) -> u32 {
        if self.per_tenant == 0 {
            limit
        } else {
            self.per_tenant.min(limit)
        }
    }

    /// The tenants with less room than `per_tenant(limit)`, and their room.
    pub(crate) fn room(&self, limit: u32) -> (Vec<String>, Vec<i64>) {
        let cap = self.per_tenant(limit);
        self.room
            .iter()
            .filter(|(_, n)| *n < cap)
            .map(|(t, n)| (t.clone(), i64::from(*n)))
            .unzip()
    }
}

/// The result of one attempt, to be written back.
#[derive(Debug, Clone)]
pub struct Completion {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub lease_id: String,
    pub attempt: Attempt,
    /// New status: `Pending` to retry at `next_attempt_at`, or final.
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Disable the endpoint with this reason (e.g. `410 Gone`).
    pub disable_endpoint: Option<String>,
    /// The delivery has an ordering key: finishing it may free the next one of its key.
    pub ordered: bool,
}

/// The store's plain reads and writes: tenants, tokens, event types, endpoints, the reads
/// of events, deliveries and attempts, and the writes that make deliveries due again
/// (retry, replay, import). Written once for both databases (`store/sql/catalog.rs`);
/// [`Store`] requires it.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// Cheap liveness check of the database.
    async fn ping(&self) -> Result<()>;

    /// Deletes at most `limit` attempts of delivered deliveries that started before
    /// `older_than`; returns how many. Small batches keep a live system responsive.
    async fn prune_attempts(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64>;

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()>;
    async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>>;
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Deletes the tenant and everything it owns. `false` when it did not exist.
    async fn delete_tenant(&self, id: &str) -> Result<bool>;

    async fn create_token(&self, token: &TokenRecord) -> Result<()>;
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// A tenant's tokens (hashes only), newest first.
    async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<TokenRecord>>;
    /// Revokes a tenant's token. `false` when it did not exist.
    async fn delete_token(&self, tenant_id: &str, id: &str) -> Result<bool>;
    /// Whether any admin token is stored (the generated one).
    async fn has_admin_token(&self) -> Result<bool>;
    /// Revokes every stored (generated) admin token; returns how many there were.
    async fn delete_admin_tokens(&self) -> Result<u64>;

    async fn create_event_type(&self, event_type: &EventType) -> Result<()>;
    async fn list_event_types(&self) -> Result<Vec<EventType>>;
    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>>;
    async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>>;
    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>>;
    async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>>;
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>>;

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>>;
    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>>;
    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>>;

    /// Creates an endpoint unless its tenant already has `max_per_tenant` of them
    /// ([`StoreError::LimitReached`]); the count and the insert are one atomic step.
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: u32) -> Result<()>;
    /// Replaces the endpoint's mutable fields. `false` when it did not exist.
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<bool>;
    /// Deletes the endpoint and cancels its pending deliveries. `false` when it did not exist.
    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<bool>;

    /// Makes a delivery that is not pending due now, with `extra_attempts` more attempts.
    /// `None` when it does not exist; `Some` with its (possibly unchanged) state otherwise.
    async fn retry_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        now: DateTime<Utc>,
        extra_attempts: u32,
    ) -> Result<Option<Delivery>>;

    /// Bulk replay: makes up to `limit` deliveries matching `filter` (of endpoints that
    /// still exist, last changed before `now`) pending and due at `now`, each with
    /// `extra_attempts` more attempts, keeping their ids and so their `webhook-id`.
    /// Returns how many; call again until it returns less than `limit`.
    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: DateTime<Utc>,
        extra_attempts: u32,
        limit: u32,
    ) -> Result<u64>;

    /// Writes an event and pending deliveries made elsewhere (`hookrelay import`) as they
    /// are, in one transaction: the event unless its id exists, each delivery unless its
    /// id exists or its event does not. Returns how many deliveries were written; the
    /// dispatchers of every process are told (PostgreSQL) or find them on their next poll.
    async fn import(&self, event: &Event, deliveries: &[Delivery]) -> Result<u64>;

    /// With encryption keys, rewrites every endpoint, inbox and source whose credentials
    /// are plaintext or sealed with an older key, so that after a start with a (new) key
    /// the database holds no other kind. Returns how many rows were rewritten.
    async fn reseal(&self) -> Result<u64>;
}

/// The store interface. Implementations: [`sqlite::SqliteStore`] (and Postgres). The
/// operations side (statistics, heartbeats, alerts, inbox, retention) is [`OpsStore`].
#[async_trait]
pub trait Store: Catalog + OpsStore + Send + Sync + 'static {
    /// Starts feeding wake-ups from other processes (they committed due deliveries) into
    /// `waker`, and keeps doing so, reconnecting as needed, while the process runs; on
    /// PostgreSQL this also fans out the events that applications committed through
    /// `dispatch_webhook()`. A store whose writers all live in this process (SQLite) needs
    /// nothing: the in-process waker already hears every commit.
    async fn listen(&self, _waker: crate::wake::Waker) -> Result<()> {
        Ok(())
    }

    /// Records the server's default attempt budget where SQL functions can read it
    /// (`dispatch_webhook` on PostgreSQL). Nothing to do for stores without them.
    async fn set_default_max_attempts(&self, _n: u32) -> Result<()> {
        Ok(())
    }

    /// Stores a new event and its deliveries ([`crate::domain::fan_out`] over the tenant's
    /// endpoints as they are in the same transaction), or returns the event that already
    /// carries the same idempotency key.
    ///
    /// The tenant's existence and the type's schema are checked in the same transaction
    /// (`check` validates `data` against the stored schema), so an ingest costs no reads
    /// of its own: under load many events share one transaction.
    async fn ingest(
        &self,
        event: Event,
        default_max_attempts: u32,
        check: Arc<dyn DataCheck>,
    ) -> Result<Ingested>;
    /// Claims up to `limit` due deliveries of enabled endpoints whose breaker is closed, plus
    /// one probe delivery of each endpoint whose open breaker's cool-down has passed (its
    /// breaker turns half-open until the probe's lease ends). Each is leased until
    /// `lease_until` (its `next_attempt_at` moves there, so an abandoned claim is due again
    /// when the lease ends) under the token `lease_id`. The deliveries are shared out between
    /// tenants as `share` says (probes are not counted against it).
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        lease_id: &str,
        limit: u32,
        share: &TenantShare,
    ) -> Result<Vec<Claimed>>;
    /// Writes the attempts and new states of a batch of deliveries in one transaction,
    /// and moves the endpoints' circuit breakers on (see [`crate::domain::Breaker::record`]),
    /// disabling endpoints that have failed for longer than `policy` allows.
    /// A completion whose lease was taken over (expired and claimed again) records its
    /// attempt but leaves the delivery to its new owner.
    async fn complete(&self, completions: &[Completion], policy: &BreakerPolicy) -> Result<()>;
    /// Reserves up to `want` sends to a rate-limited endpoint ([`crate::domain::admit_sends`]
    /// on the state kept in the endpoint row, so the limit holds across processes).
    /// Returns how many may go now and, for the others, when to try each again.
    async fn reserve_sends(
        &self,
        endpoint_id: &str,
        rate: crate::domain::Rate,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<(u32, Vec<DateTime<Utc>>)>;

    /// Hands leased deliveries back without an attempt: `(delivery id, lease id, due at)`.
    async fn release(&self, items: &[(String, String, DateTime<Utc>)]) -> Result<()>;

    /// When the dispatcher next has work, if that is at or before `horizon`: the earliest
    /// `next_attempt_at` among pending deliveries of enabled endpoints with a closed breaker,
    /// or the end of an open breaker's cool-down where the endpoint has pending deliveries.
    /// The horizon (the dispatcher's next poll) bounds the walk over pending rows, which
    /// would otherwise step over every delivery an open breaker holds.
    async fn next_due(&self, horizon: DateTime<Utc>) -> Result<Option<DateTime<Utc>>>;
}

/// An endpoint's routing as stored: its specification's JSON, or `None` when it has none.
/// A stored routing that is unusable is written back as it was, until replaced.
pub(crate) fn routing_text(ep: &Endpoint) -> Option<String> {
    if let Some(text) = ep.routing.unusable_text() {
        return Some(text.to_owned());
    }
    let spec = &ep.routing.spec;
    if *spec == crate::domain::routing::RoutingSpec::default() {
        return None;
    }
    serde_json::to_string(spec).ok()
}

/// One ingest waiting for a store's group commit.
pub(crate) struct IngestJob {
    pub event: Event,
    pub default_max_attempts: u32,
    pub check: Arc<dyn DataCheck>,
    pub reply: tokio::sync::oneshot::Sender<Result<Ingested>>,
}

impl IngestJob {
    /// Hands an event to the group commit behind `queue` and waits for its answer.
    pub(crate) async fn submit(
        queue: &tokio::sync::mpsc::Sender<IngestJob>,
        event: Event,
        default_max_attempts: u32,
        check: Arc<dyn DataCheck>,
    ) -> Result<Ingested> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = IngestJob {
            event,
            default_max_attempts,
            check,
            reply,
        };
        let stopped = || StoreError::Corrupt("the ingest writer stopped".into());
        queue.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The error of a create that would exceed the endpoints-per-tenant limit.
pub(crate) fn endpoint_limit(tenant_id: &str, max: u32) -> StoreError {
    StoreError::LimitReached(format!(
        "tenant {tenant_id} already has {max} endpoints, the most allowed (--max-endpoints-per-tenant); delete one first"
    ))
}

/// Spaces out the breaker-probe check that claims make: open breakers wait minutes, so
/// looking for one whose cool-down ended every 250 ms is soon enough, and the claims in
/// between stay a single statement.
#[derive(Default)]
pub(crate) struct ProbeClock(std::sync::Mutex<Option<DateTime<Utc>>>);

impl ProbeClock {
    pub(crate) fn due(&self, now: DateTime<Utc>) -> bool {
        self.due_every(now, chrono::Duration::milliseconds(250))
    }

    /// True at most once per `every` (and whenever the clock went back).
    pub(crate) fn due_every(&self, now: DateTime<Utc>, every: chrono::Duration) -> bool {
        let Ok(mut last) = self.0.lock() else {
            return true;
        };
        let due = last.is_none_or(|l| now - l >= every || now < l);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// Whether a closed breaker's backlog is still parked, as the claims' breaker check last
/// found. The dispatcher then looks again within the check's period rather than its poll
/// interval, so a recovered backlog comes back window after window even when nothing else
/// is due. (The completion that closes a breaker makes its first window due, and the
/// dispatcher claims it, and checks, at once.)
#[derive(Default)]
pub(crate) struct Recovering(std::sync::atomic::AtomicBool);

impl Recovering {
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// `due`, or the claims' next breaker check if that comes first while a backlog may be
    /// parked.
    pub(crate) fn next_due(&self, due: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        if !self.0.load(std::sync::atomic::Ordering::Relaxed) {
            return due;
        }
        let check = crate::domain::now() + chrono::Duration::milliseconds(250);
        Some(due.map_or(check, |d| d.min(check)))
    }
}

/// The deliveries of a batch with an ordering key: finishing one may release the next of
/// its key (both stores release it in the completing transaction).
pub(crate) fn ordered_ids(completions: &[Completion]) -> Vec<String> {
    completions
        .iter()
        .filter(|c| c.ordered)
        .map(|c| c.delivery_id.clone())
        .collect()
}

/// Splits the endpoints of a batch: those whose last attempt in it succeeded, whose breaker
/// simply resets (no need to read it), and the others, whose breaker must be read and moved
/// on with [`breaker_updates`].
pub fn breaker_plan(completions: &[Completion]) -> (Vec<String>, Vec<String>) {
    let mut last: std::collections::BTreeMap<&str, (DateTime<Utc>, bool)> = Default::default();
    for c in completions {
        let finished = c.attempt.started_at
            + chrono::Duration::milliseconds(i64::try_from(c.attempt.duration_ms).unwrap_or(0));
        let ok = c.status == DeliveryStatus::Delivered;
        let entry = last.entry(c.endpoint_id.as_str()).or_insert((finished, ok));
        if finished >= entry.0 {
            *entry = (finished, ok);
        }
    }
    let (reset, read): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, (_, ok))| *ok);
    (
        reset.into_iter().map(|(id, _)| id.to_owned()).collect(),
        read.into_iter().map(|(id, _)| id.to_owned()).collect(),
    )
}

/// The breakers a batch of completions moves on: for each endpoint in the batch (given its
/// current breaker), the new breaker and, when it must be disabled, why.
pub fn breaker_updates(
    completions: &[Completion],
    current: &std::collections::HashMap<String, Breaker>,
    policy: &BreakerPolicy,
) -> Vec<(String, Breaker, Option<String>)> {
    let mut by_endpoint: std::collections::BTreeMap<&str, Vec<(bool, DateTime<Utc>)>> =
        Default::default();
    for c in completions {
        let finished = c.attempt.started_at
            + chrono::Duration::milliseconds(i64::try_from(c.attempt.duration_ms).unwrap_or(0));
        by_endpoint
            .entry(c.endpoint_id.as_str())
            .or_default()
            .push((c.status == DeliveryStatus::Delivered, finished));
    }
    by_endpoint
        .into_iter()
        .filter_map(|(id, mut outcomes)| {
            let breaker = current.get(id)?;
            outcomes.sort_by_key(|(_, at)| *at);
            let (next, disable) = breaker.record(&outcomes, policy);
            Some((id.to_owned(), next, disable))
        })
        .collect()
}

/// Where hookrelay's objects live on PostgreSQL (SQLite has no schemas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSchemas {
    /// The schema of hookrelay's tables, sequences and helper functions. `None`: the
    /// schema `hookrelay`, unless an installation made before schemas existed keeps its
    /// tables in the connection's default schema, which is then kept (with a warning).
    pub tables: Option<String>,
    /// The schema of the `dispatch_webhook()` functions that applications call.
    pub functions: String,
}

impl Default for PgSchemas {
    fn default() -> Self {
        Self {
            tables: None,
            functions: "public".to_owned(),
        }
    }
}

/// The default schema of hookrelay's tables on PostgreSQL.
pub const DEFAULT_PG_SCHEMA: &str = "hookrelay";

/// What [`valid_schema_name`] accepts, for error messages.
pub const SCHEMA_NAME_RULE: &str =
    "must be 1 to 63 lowercase letters, digits or '_', starting with a letter or '_' and not with 'pg_'";

/// Whether `name` can name a schema without quoting: it is put into SQL text (a schema
/// cannot be a bind parameter), so only plain lowercase identifiers are accepted.
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
        && !name.starts_with("pg_")
}

/// Opens the store named by `url` and applies its migrations. `pool_size` bounds the
/// connections to PostgreSQL (SQLite uses one writer and a few readers); `schemas` says
/// where hookrelay's objects live there. With `keys`, the credentials it writes are sealed
/// and those it reads opened (see [`sealed`]); call [`Catalog::reseal`] to seal those
/// already stored.
pub async fn connect(
    url: &str,
    pool_size: u32,
    schemas: &PgSchemas,
    keys: Option<crate::secrets::Keyring>,
) -> Result<std::sync::Arc<dyn Store>> {
    let sealer = sealed::Sealer::new(keys);
    if url.starts_with("sqlite:") {
        let mut store = sqlite::SqliteStore::connect(url).await?;
        store.sealer = sealer;
        Ok(std::sync::Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut store = postgres::PostgresStore::connect(url, pool_size, schemas).await?;
        store.sealer = sealer;
        Ok(std::sync::Arc::new(store))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::cursor;

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["hookrelay", "public", "_x", "app_2", &"a".repeat(63)] {
            assert!(super::valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "",
            "Hook",
            "1x",
            "a-b",
            "a.b",
            "a\"b",
            "pg_catalog",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!super::valid_schema_name(bad), "{bad}");
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = cursor::encode("evt_01JABC");
        assert_eq!(cursor::decode(&c).as_deref(), Some("evt_01JABC"));
        assert_eq!(cursor::decode("!!!"), None);
        assert_eq!(cursor::decode(&cursor::encode("a' OR 1=1")), None);
        assert_eq!(cursor::decode(""), None);
    }
}
