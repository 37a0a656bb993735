//! PostgreSQL store: many `hookrelay serve` processes share one database.
//!
//! Unlike SQLite, Postgres has real concurrent writers, so nothing here is serialised in
//! the process: dispatchers of every process claim due deliveries with one
//! `UPDATE … FOR UPDATE SKIP LOCKED` statement under a lease; concurrent ingests share one
//! write statement (group commit, see [`ingest`]: events and deliveries together, the
//! idempotency race settled by the unique index); a batch of attempt results is one
//! statement. No transaction spans more than one round trip except in the rare
//! `delete_endpoint` and `retry_delivery`, so no lock is held while the process waits.
//! Every write that makes deliveries due (by hookrelay, or by the `dispatch_webhook` SQL
//! function inside an application's transaction) draws a number from
//! [`WAKE_SEQUENCE`]; [`Store::listen`] reads it every [`WAKE_PROBE_INTERVAL`] and turns
//! its moves into wake-ups. NOTIFY is not used: its database-wide lock at commit would
//! serialise the applications' commits.
//!
//! Times are `timestamptz` columns holding whole milliseconds. They cross the wire as
//! epoch milliseconds (`to_timestamp($n / 1000.0)` in, `(extract(epoch FROM col) * 1000)::int8`
//! out), because sqlx's `chrono` feature is not enabled. JSON values are `jsonb`, sent and
//! read as text.

use std::{collections::HashSet, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::rows::{
    assemble_claims, collect, ms, to_json, DeliveryRow, EndpointRow, EventRow, EventTypeRow,
};
use super::sql::{catalog::columns, db, has_nul, write_error, Db, Dialect, Pools, SqlStore};
use super::{
    storable, Claimed, Completion, DataCheck, Ingested, PgSchemas, Result, Store, StoreError,
    TenantShare,
};
use crate::domain::{self, from_millis, Breaker, BreakerPolicy, Endpoint, Event};

mod ingest;
mod ops;
mod outbox;
mod pool;
pub mod schema;

/// The sequence from which every write that makes deliveries due draws a number (new
/// deliveries, from hookrelay's ingest or `dispatch_webhook()`; manual retries, replays,
/// re-enabled endpoints), so that the waiting dispatchers of every process see it move.
/// It replaces NOTIFY, whose database-wide lock at commit serialised the commits of the
/// applications calling `dispatch_webhook()` (see migration 0032).
pub const WAKE_SEQUENCE: &str = "hookrelay_wake_seq";

/// How often each process reads [`WAKE_SEQUENCE`]: an idle dispatcher starts within this
/// (plus one claim) of a commit in any process. One read costs a few microseconds of
/// PostgreSQL's time: 100 reads a second per process.
pub const WAKE_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// How long after a move of [`WAKE_SEQUENCE`] the probe keeps waking the dispatcher (at
/// doubling gaps), for writers that commit a while after they drew their number.
pub const WAKE_FOLLOW_UP: Duration = Duration::from_secs(2);

/// How long a request waits for a free connection before the store counts as unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest pause between two attempts to reconnect the wake-up probe.
const PROBE_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How often an ingest is re-run when a concurrent ingest with the same idempotency key
/// won the race but its event cannot be read back (it was deleted in between).
const INGEST_RACE_RETRIES: usize = 3;

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// Dropping the store (and with it this sender) stops its wake-up probes.
    stop: watch::Sender<()>,
    probe_check: super::ProbeClock,
    /// Spaces out the sweep that releases ordered deliveries left parked by a race.
    ordered_check: super::ProbeClock,
    /// Whether a closed breaker's backlog may still be parked.
    recovering: super::Recovering,
    /// [`WAKE_FOLLOW_UP`]; tests that count wake-ups turn it off.
    wake_follow_up: Duration,
    /// Ingests on their way to the group commit (see [`ingest`]).
    ingest_tx: tokio::sync::mpsc::Sender<super::IngestJob>,
    pub(super) sealer: super::sealed::Sealer,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://…` or `postgresql://…`) with a pool of
    /// up to `max_connections` and applies the migrations. Processes starting together are
    /// safe: the migrator holds an advisory lock while it runs.
    ///
    /// hookrelay's tables live in their own schema (see [`PgSchemas`]), created if needed:
    /// every connection of the pool has it as its only `search_path`, so nothing of the
    /// application's is seen or touched. The functions that applications call are
    /// installed into the function schema after the migrations.
    pub async fn connect(url: &str, max_connections: u32, schemas: &PgSchemas) -> Result<Self> {
        let base = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(crate::secrets::redact_url(url).into_owned()))?
            .application_name("hookrelay");
        let schema = schema::prepare(&base, schemas).await?;
        // No JIT: hookrelay's statements are short, and with a long history the planner's
        // cost estimates crossed `jit_above_cost`, so a claim that runs in under a
        // millisecond spent about 300 ms compiling itself.
        let options = base.options([("jit", "off"), ("search_path", schema.as_str())]);
        let (pool, plans) = pool::open(options, max_connections, ACQUIRE_TIMEOUT).await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        schema::install_functions(&pool, &schema, &schemas.functions).await?;
        let (stop, _) = watch::channel(());
        let store = Self {
            ingest_tx: ingest::start(pool.clone()),
            pool,
            stop,
            probe_check: Default::default(),
            ordered_check: Default::default(),
            recovering: Default::default(),
            wake_follow_up: WAKE_FOLLOW_UP,
            sealer: Default::default(),
        };
        super::sql::ops::hash_inbox_tokens(&store).await?;
        if !plans.settle(&store.pool, pool::GROWN_PAGES).await? {
            plans.watch(store.pool.clone(), store.stop.subscribe());
        }
        Ok(store)
    }
}

/// Reads [`WAKE_SEQUENCE`] every [`WAKE_PROBE_INTERVAL`] until `stop` is dropped, waking
/// `waker` when it has moved, and after every (re)connection (a move may have been missed
/// while the connection was down).
///
/// Every read also asks whether the outbox of `dispatch_webhook()` holds committed rows; if
/// so they are fanned out (see [`outbox`]) and the dispatcher woken, however long after its
/// number the application's transaction committed.
///
/// hookrelay's own writers draw their number just before they commit (in the statement
/// that commits), so the first claim after a move may not see the rows yet: the loop
/// wakes again 10, 20, 40, … ms after a move, for up to `follow_up`, and the dispatcher's
/// poll interval remains the backstop. Nothing is lost either way: the tables are the
/// truth, and the probe only says when to look.
async fn wake_loop(
    pool: PgPool,
    waker: crate::wake::Waker,
    follow_up: Duration,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut last: Option<i64> = None;
    // The next follow-up wake-up for the last move, and the gap after it.
    let mut follow: Option<(tokio::time::Instant, Duration)> = None;
    let mut tick = tokio::time::interval(WAKE_PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let read: std::result::Result<(i64, bool), sqlx::Error> =
            sqlx::query_as(WAKE_PROBE_SQL).fetch_one(&pool).await;
        let now = tokio::time::Instant::now();
        match read {
            Ok((value, outbox)) => {
                backoff = Duration::from_millis(100);
                let mut wake = false;
                if last != Some(value) {
                    if last.is_none() {
                        debug!("wake-up probe connected to PostgreSQL");
                    }
                    last = Some(value);
                    wake = true;
                    follow = (WAKE_PROBE_INTERVAL <= follow_up)
                        .then_some((now + WAKE_PROBE_INTERVAL, WAKE_PROBE_INTERVAL));
                } else if let Some((at, gap)) = follow {
                    if now >= at {
                        wake = true;
                        let gap = gap * 2;
                        follow = (gap <= follow_up).then_some((now + gap, gap));
                    }
                }
                // Committed dispatch_webhook() events are fanned out first (however late
                // their transaction committed), so that the claim finds their deliveries.
                if outbox {
                    wake = true;
                    let fanned = match pool.acquire().await {
                        Ok(mut conn) => outbox::relay(&mut conn, outbox::Wait::No).await,
                        Err(e) => Err(db(e)),
                    };
                    if let Err(e) = fanned {
                        warn!(error = %e, "fanning out dispatch_webhook() events failed; will retry");
                    }
                }
                if wake {
                    waker.wake();
                }
            }
            Err(e) => {
                if last.take().is_some() {
                    warn!(error = %e, "wake-up probe lost PostgreSQL; reconnecting");
                } else {
                    warn!(error = %e, retry_in = ?backoff, "wake-up probe cannot reach PostgreSQL");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(PROBE_MAX_BACKOFF);
            }
        }
    }
}

/// The probe's one statement: the sequence (one page; a fresh sequence reads 1 before and
/// after its first draw, `is_called` tells them apart) and whether the outbox holds
/// committed rows (an empty index range, in the usual case). Neither takes a lock that
/// anyone waits for.
const WAKE_PROBE_SQL: &str = "SELECT CASE WHEN is_called THEN last_value ELSE 0 END, \
     EXISTS (SELECT 1 FROM hookrelay_outbox) FROM hookrelay_wake_seq";

/// The id of an audit entry hookrelay writes itself.
pub(crate) fn audit_id() -> String {
    domain::new_id("aud")
}

/// Maps the errors of an ingest statement: a foreign-key failure means the tenant is gone.
fn ingest_error(e: sqlx::Error, tenant: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::UnknownTenant(tenant.to_owned())
        }
        _ => write_error(e),
    }
}

fn storable_opt(s: &Option<String>) -> Option<String> {
    s.as_deref().map(|s| storable(s).into_owned())
}

/// Claimable as far as ordering goes (for a delivery `d`): unordered, or no delivery of the
/// same endpoint and key created before it is still pending (in flight counts: a leased
/// delivery is pending) or, where it blocks, failed for good. Several processes agree
/// without locks: the earlier delivery is visible to every claim until it is finished.
const IN_ORDER: &str = "(d.ordering_key IS NULL OR NOT EXISTS ( \
     SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id \
     AND p.ordering_key = d.ordering_key AND p.seq < d.seq \
     AND (p.status = 'pending' OR (p.status = 'failed' AND p.ordering_blocks))))";

/// Distinct values, in first-seen order.
fn distinct<'a>(values: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .filter(|v| seen.insert(v.as_str()))
        .cloned()
        .collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn reserve_sends(
        &self,
        endpoint_id: &str,
        rate: crate::domain::Rate,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<(u32, Vec<DateTime<Utc>>)> {
        if has_nul(&[endpoint_id]) {
            // No such endpoint: a full bucket, kept nowhere (as for any unknown id).
            let (allowed, _, later) = domain::admit_sends(None, now, rate, want);
            return Ok((allowed, later));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Locked for the read-modify-write, so processes share one bucket.
        let tat: Option<(Option<i64>,)> = sqlx::query_as(concat!(
            "SELECT ",
            "(extract(epoch FROM rate_tat) * 1000)::int8",
            " FROM endpoints WHERE id = $1 FOR NO KEY UPDATE"
        ))
        .bind(endpoint_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let (allowed, new_tat, later) =
            domain::admit_sends(tat.and_then(|(t,)| t).map(from_millis), now, rate, want);
        sqlx::query("UPDATE endpoints SET rate_tat = to_timestamp($1 / 1000.0) WHERE id = $2")
            .bind(ms(new_tat))
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((allowed, later))
    }

    async fn release(&self, items: &[(String, String, DateTime<Utc>)]) -> Result<()> {
        // An item whose ids hold NUL names no leased delivery: there is nothing to release.
        let items: Vec<_> = items
            .iter()
            .filter(|(d, l, _)| !has_nul(&[d.as_str(), l.as_str()]))
            .collect();
        if items.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = items.iter().map(|(d, _, _)| d.as_str()).collect();
        let leases: Vec<&str> = items.iter().map(|(_, l, _)| l.as_str()).collect();
        let due: Vec<i64> = items.iter().map(|(_, _, at)| ms(*at)).collect();
        sqlx::query(
            "UPDATE deliveries d SET next_attempt_at = to_timestamp(x.due / 1000.0), \
                    lease_id = NULL \
             FROM UNNEST($1::text[], $2::text[], $3::int8[]) AS x(id, lease_id, due) \
             WHERE d.id = x.id AND d.lease_id = x.lease_id",
        )
        .bind(&ids)
        .bind(&leases)
        .bind(&due)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn set_default_max_attempts(&self, n: u32) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('default_max_attempts', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(n.to_string())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn listen(&self, waker: crate::wake::Waker) -> Result<()> {
        // A connection of its own, outside the pool: the probe never waits for a busy pool.
        let options = (*self.pool.connect_options())
            .clone()
            .application_name("hookrelay-wake");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        tokio::spawn(wake_loop(
            pool,
            waker,
            self.wake_follow_up,
            self.stop.subscribe(),
        ));
        Ok(())
    }

    async fn ingest(
        &self,
        event: Event,
        default_max_attempts: u32,
        check: Arc<dyn DataCheck>,
    ) -> Result<Ingested> {
        super::IngestJob::submit(&self.ingest_tx, event, default_max_attempts, check).await
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        lease_id: &str,
        limit: u32,
        share: &TenantShare,
    ) -> Result<Vec<Claimed>> {
        // One statement: rows that another process is claiming right now are skipped, not
        // waited for. The partial index on pending rows keeps this fast however long the
        // history is.
        // Probes: an endpoint whose open breaker has cooled down, with a delivery due, turns
        // half-open for the lease (one process wins it) and its next due delivery is
        // claimed alone.
        let probing: Vec<(String,)> = if !self.probe_check.due(now) {
            Vec::new()
        } else {
            // Deliveries due to an endpoint that is disabled, or whose breaker holds them,
            // wait unscheduled (next_attempt_at NULL, out of every claim's index range) until
            // `update_endpoint` enables it again or the breaker's probe succeeds: a large
            // backlog of a dead endpoint costs the claims nothing, and each delivery is
            // written here once (see the SQLite store).
            sqlx::query(
                "UPDATE deliveries SET next_attempt_at = NULL \
                 WHERE id IN ( \
                   SELECT x.id FROM endpoints y JOIN deliveries x ON x.endpoint_id = y.id \
                   WHERE (NOT y.enabled OR (y.breaker_state <> 'closed' \
                          AND y.breaker_until > to_timestamp($1 / 1000.0))) \
                     AND x.status = 'pending' \
                     AND x.next_attempt_at <= to_timestamp($1 / 1000.0) \
                   LIMIT 10000 FOR UPDATE OF x SKIP LOCKED)",
            )
            .bind(ms(now))
            .execute(&self.pool)
            .await
            .map_err(db)?;
            self.park_ordered(now).await?;
            super::sql::release_recovered(self, now, &self.recovering).await?;
            // (A parked delivery counts when it is its key's turn: one waiting behind a
            // blocked key would turn the breaker half-open with nothing to probe.)
            sqlx::query_as(&format!(
                "UPDATE endpoints e SET breaker_state = 'half_open', \
                    breaker_until = to_timestamp($1 / 1000.0) \
             WHERE e.id IN ( \
               SELECT x.id FROM endpoints x \
               WHERE x.enabled AND x.breaker_state <> 'closed' \
                 AND x.breaker_until <= to_timestamp($2 / 1000.0) \
                 AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = x.id \
                             AND d.status = 'pending' \
                             AND (d.next_attempt_at IS NULL \
                                  OR d.next_attempt_at <= to_timestamp($2 / 1000.0)) \
                             AND {IN_ORDER}) \
               FOR NO KEY UPDATE SKIP LOCKED) \
             RETURNING e.id"
            ))
            .bind(ms(lease_until))
            .bind(ms(now))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
        };
        let mut claimed: Vec<DeliveryRow> = Vec::new();
        for (endpoint_id,) in &probing {
            let probe: Option<DeliveryRow> = sqlx::query_as(&format!(
                "UPDATE deliveries SET next_attempt_at = to_timestamp($1 / 1000.0), \
                        lease_id = $2 \
                 WHERE id = ( \
                   SELECT d.id FROM deliveries d WHERE d.endpoint_id = $3 \
                     AND d.status = 'pending' AND (d.next_attempt_at IS NULL \
                          OR d.next_attempt_at <= to_timestamp($4 / 1000.0)) \
                     AND {IN_ORDER} \
                   ORDER BY d.next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING {delivery_columns}",
                delivery_columns = columns(Dialect::Postgres).delivery
            ))
            .bind(ms(lease_until))
            .bind(lease_id)
            .bind(endpoint_id)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
            claimed.extend(probe);
        }
        // Fair between tenants (see the SQLite store): each tenant's first few due deliveries
        // from the per-tenant index (none read for a tenant with no room), round-robin.
        // The row comparison and the ORDER BY name only that index: with the tenant an
        // outer value the planner cannot see how few rows a quiet tenant has, and would
        // otherwise walk the global due index, i.e. the whole backlog, once per tenant.
        // The endpoint is checked per row by a subquery, not joined: with a join and a
        // long history the planner went through the endpoints first and ANDed bitmaps of
        // the whole tenant index (96 ms instead of 0.7 ms with 1,000,000 finished rows).
        let rest = i64::from(limit).saturating_sub(claimed.len() as i64).max(0);
        let per_tenant = i64::from(share.per_tenant(limit));
        let (room_tenants, room) = share.room(limit);
        let flowing: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "UPDATE deliveries SET next_attempt_at = to_timestamp($1 / 1000.0), lease_id = $2 \
             WHERE id IN ( \
               SELECT c.id FROM ( \
                 SELECT x.id, x.next_attempt_at, r.room, row_number() OVER \
                   (PARTITION BY r.id ORDER BY x.next_attempt_at) AS rn \
                 FROM (SELECT t.id, coalesce(g.room, $4) AS room FROM tenants t \
                       LEFT JOIN unnest($5::text[], $6::int8[]) AS g(tenant_id, room) \
                       ON g.tenant_id = t.id) r \
                 CROSS JOIN LATERAL ( \
                   SELECT d.id, d.next_attempt_at FROM deliveries d \
                   WHERE d.tenant_id = r.id AND d.status = 'pending' \
                     AND (d.tenant_id, d.next_attempt_at) <= (r.id, to_timestamp($3 / 1000.0)) \
                     AND (SELECT e.enabled AND e.breaker_state = 'closed' FROM endpoints e \
                          WHERE e.id = d.endpoint_id) \
                     AND {IN_ORDER} \
                   ORDER BY d.tenant_id, d.next_attempt_at LIMIT $4 \
                   FOR UPDATE OF d SKIP LOCKED) x \
                 WHERE r.room > 0) c \
               WHERE c.rn <= c.room ORDER BY c.rn, c.next_attempt_at LIMIT $7) \
             RETURNING {delivery_columns}",
            delivery_columns = columns(Dialect::Postgres).delivery
        ))
        .bind(ms(lease_until))
        .bind(lease_id)
        .bind(ms(now))
        .bind(per_tenant)
        .bind(&room_tenants)
        .bind(&room)
        .bind(rest)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        claimed.extend(flowing);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let event_ids = distinct(claimed.iter().map(|d| &d.event_id));
        let endpoint_ids = distinct(claimed.iter().map(|d| &d.endpoint_id));
        let events_sql = format!(
            "SELECT {event_columns} FROM events WHERE id = ANY($1)",
            event_columns = columns(Dialect::Postgres).event
        );
        let endpoints_sql = format!(
            "SELECT {endpoint_columns} FROM endpoints WHERE id = ANY($1)",
            endpoint_columns = columns(Dialect::Postgres).endpoint
        );
        let (events, endpoints) = tokio::try_join!(
            sqlx::query_as::<_, EventRow>(&events_sql)
                .bind(&event_ids)
                .fetch_all(&self.pool),
            sqlx::query_as::<_, EndpointRow>(&endpoints_sql)
                .bind(&endpoint_ids)
                .fetch_all(&self.pool),
        )
        .map_err(db)?;
        Ok(assemble_claims(
            collect(claimed)?,
            events.into_iter().map(EventRow::into_claimed).collect(),
            collect(endpoints)?,
            lease_id,
            &self.sealer,
        ))
    }

    async fn complete(&self, completions: &[Completion], policy: &BreakerPolicy) -> Result<()> {
        self.complete_in(completions, policy, None).await
    }

    async fn next_due(&self, horizon: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        // The first due delivery of a flowing endpoint (walking the partial index of
        // pending rows in order), and the end of the earliest cool-down of an open breaker
        // whose endpoint has something pending.
        // Deliveries waiting for an earlier one of their key are not due.
        let row: (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
            "SELECT (SELECT (extract(epoch FROM d.next_attempt_at) * 1000)::int8 \
               FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= to_timestamp($1 / 1000.0) \
                 AND e.enabled \
                 AND e.breaker_state = 'closed' AND {IN_ORDER} \
               ORDER BY d.next_attempt_at LIMIT 1), \
             (SELECT (extract(epoch FROM min(GREATEST(e.breaker_until, p.t))) * 1000)::int8 \
               FROM endpoints e, LATERAL (SELECT CASE WHEN EXISTS ( \
                   SELECT 1 FROM deliveries d WHERE d.endpoint_id = e.id \
                   AND d.status = 'pending' AND d.next_attempt_at IS NULL AND {IN_ORDER}) \
                 THEN e.breaker_until ELSE (SELECT min(d.next_attempt_at) FROM deliveries d \
                   WHERE d.endpoint_id = e.id AND d.status = 'pending') END AS t) p \
               WHERE e.enabled AND e.breaker_state <> 'closed' AND p.t IS NOT NULL)"
        ))
        .bind(ms(horizon))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(self.recovering.next_due(
            match row {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
            .map(from_millis),
        ))
    }
}

/// Ordered deliveries waiting for an earlier one of their key, kept out of the claims' way.
impl PostgresStore {
    /// Parks the due deliveries that wait for an earlier one of their endpoint and key
    /// (`next_attempt_at` NULL, out of every claim's index range), so that a key with a
    /// long backlog behind a delivery in flight, retrying or failed for good costs the
    /// claims nothing: without this every claim walked the whole backlog, checking each
    /// row's predecessors, for every tenant's claim. A finished delivery releases the next
    /// of its key ([`Self::release_ordered`]); every few seconds, whatever a race between a
    /// park and a finish left waiting is released here too. Ordering itself never depends on
    /// parking: the claim checks every delivery's predecessors as before.
    async fn park_ordered(&self, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_at = NULL \
             WHERE id IN ( \
               SELECT d.id FROM deliveries d \
               WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL \
                 AND d.next_attempt_at <= to_timestamp($1 / 1000.0) AND NOT {IN_ORDER} \
               ORDER BY d.next_attempt_at LIMIT 10000 FOR UPDATE OF d SKIP LOCKED)"
        ))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        if !self
            .ordered_check
            .due_every(now, chrono::Duration::seconds(5))
        {
            return Ok(());
        }
        // The first open delivery of each key, where it is parked and now in order.
        let released = sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_at = to_timestamp($1 / 1000.0) \
             WHERE status = 'pending' AND next_attempt_at IS NULL AND id IN ( \
               SELECT d.id FROM ( \
                 SELECT DISTINCT ON (x.endpoint_id, x.ordering_key) x.id, x.endpoint_id, \
                        x.ordering_key, x.seq, x.next_attempt_at \
                 FROM deliveries x WHERE x.status = 'pending' AND x.ordering_key IS NOT NULL \
                 ORDER BY x.endpoint_id, x.ordering_key, x.seq) d \
               WHERE d.next_attempt_at IS NULL \
                 AND (SELECT e.enabled AND e.breaker_state = 'closed' FROM endpoints e \
                      WHERE e.id = d.endpoint_id) \
                 AND {IN_ORDER})"
        ))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if released > 0 {
            debug!(
                released,
                "released ordered deliveries left waiting by a race"
            );
        }
        Ok(())
    }

    /// Makes due the next parked delivery of each key whose delivery among `ids` has just
    /// finished (in the completing transaction), and wakes every process if one was.
    async fn release_ordered(
        &self,
        tx: &mut sqlx::PgConnection,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(&format!(
            "WITH released AS ( \
               UPDATE deliveries d SET next_attempt_at = to_timestamp($2 / 1000.0) \
               WHERE d.id IN ( \
                 SELECT (SELECT x.id FROM deliveries x \
                         WHERE x.endpoint_id = f.endpoint_id AND x.ordering_key = f.ordering_key \
                           AND x.status = 'pending' AND x.seq > f.seq \
                         ORDER BY x.seq LIMIT 1) \
                 FROM deliveries f WHERE f.id = ANY($1) AND f.ordering_key IS NOT NULL) \
                 AND d.status = 'pending' AND d.next_attempt_at IS NULL \
                 AND (SELECT e.enabled FROM endpoints e WHERE e.id = d.endpoint_id) \
                 AND {IN_ORDER} \
               RETURNING 1) \
             SELECT CASE WHEN EXISTS (SELECT 1 FROM released) \
                    THEN nextval('{WAKE_SEQUENCE}') END"
        ))
        .bind(ids)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        Ok(())
    }
}

#[async_trait]
impl SqlStore for PostgresStore {
    fn pools(&self) -> Pools<'_> {
        Pools::Postgres(Db {
            reader: &self.pool,
            writer: &self.pool,
            dialect: Dialect::Postgres,
        })
    }

    fn sealer(&self) -> &super::sealed::Sealer {
        &self.sealer
    }

    async fn settle(&self) -> Result<()> {
        outbox::settle(&self.pool).await
    }

    async fn wake_others(&self) -> Result<()> {
        sqlx::query(&format!("SELECT nextval('{WAKE_SEQUENCE}')"))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn complete_in(
        &self,
        completions: &[Completion],
        policy: &BreakerPolicy,
        stats: Option<(&str, &super::ops::BatchStats)>,
    ) -> Result<()> {
        if completions.is_empty() {
            return Ok(());
        }
        let n = completions.len();
        let mut attempt_ids = Vec::with_capacity(n);
        let mut delivery_ids = Vec::with_capacity(n);
        let mut numbers = Vec::with_capacity(n);
        let mut started = Vec::with_capacity(n);
        let mut durations = Vec::with_capacity(n);
        let mut codes = Vec::with_capacity(n);
        let mut responses = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut outcomes = Vec::with_capacity(n);
        let mut attempt_next = Vec::with_capacity(n);
        let mut leases = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut delivery_next = Vec::with_capacity(n);
        let mut finished = Vec::with_capacity(n);
        let mut disable_ids = Vec::new();
        let mut disable_reasons = Vec::new();
        for c in completions {
            let a = &c.attempt;
            attempt_ids.push(a.id.clone());
            delivery_ids.push(c.delivery_id.clone());
            numbers.push(i64::from(a.attempt_number));
            started.push(ms(a.started_at));
            let duration = i64::try_from(a.duration_ms).unwrap_or(i64::MAX);
            durations.push(duration);
            codes.push(a.status_code.map(i64::from));
            responses.push(storable_opt(&a.response));
            errors.push(storable_opt(&a.error));
            outcomes.push(a.outcome.as_str());
            attempt_next.push(a.next_attempt_at.map(ms));
            leases.push(c.lease_id.clone());
            statuses.push(c.status.as_str());
            delivery_next.push(c.next_attempt_at.map(ms));
            finished.push(ms(a.started_at).saturating_add(duration));
            if let Some(reason) = &c.disable_endpoint {
                disable_ids.push(c.endpoint_id.clone());
                disable_reasons.push(storable(reason).into_owned());
            }
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The endpoints' breakers: locked (in id order, so two batches cannot deadlock; NO
        // KEY UPDATE does not block ingests holding them in KEY SHARE mode) and moved on.
        let (reset, read) = super::breaker_plan(completions);
        // Every endpoint of the batch is locked first, in id order, so that two batches
        // cannot deadlock; only those whose last attempt failed need their state.
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {endpoint_columns} FROM endpoints WHERE id = ANY($1) ORDER BY id \
             FOR NO KEY UPDATE",
            endpoint_columns = columns(Dialect::Postgres).endpoint
        ))
        .bind(reset.iter().chain(&read).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let locked: Vec<Endpoint> = collect(rows)?;
        // Only breakers that are not already reset are written (a healthy endpoint costs
        // no statement here).
        let reset: Vec<String> = locked
            .iter()
            .filter(|e| reset.contains(&e.id) && e.breaker != Breaker::default())
            .map(|e| e.id.clone())
            .collect();
        let current: std::collections::HashMap<String, Breaker> = locked
            .into_iter()
            .filter(|e| read.contains(&e.id))
            .map(|e| (e.id, e.breaker))
            .collect();
        if !reset.is_empty() {
            // A breaker that closes lets the retries it deferred go now (deliveries in
            // flight keep their lease), and the first window of the backlog it held
            // ([`super::sql::release_recovered`] the rest).
            sqlx::query(&format!(
                "WITH held AS ( \
                   UPDATE deliveries SET next_attempt_at = to_timestamp($2 / 1000.0) \
                   WHERE id IN (SELECT d.id FROM deliveries d WHERE d.endpoint_id IN ( \
                       SELECT id FROM endpoints \
                       WHERE id = ANY($1) AND enabled AND breaker_state <> 'closed') \
                     AND d.status = 'pending' AND d.next_attempt_at IS NULL \
                     AND d.ordering_key IS NULL ORDER BY d.created_at LIMIT {window} \
                     FOR UPDATE SKIP LOCKED) \
                   RETURNING 1) \
                 UPDATE deliveries SET next_attempt_at = to_timestamp($2 / 1000.0) \
                 WHERE status = 'pending' AND lease_id IS NULL \
                   AND next_attempt_at > to_timestamp($2 / 1000.0) \
                 AND endpoint_id IN (SELECT id FROM endpoints \
                   WHERE id = ANY($1) AND breaker_state <> 'closed')",
                window = super::sql::RECOVERY_WINDOW
            ))
            .bind(&reset)
            // The process's time, as everywhere else in both stores.
            .bind(ms(crate::domain::now()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            // A last success resets the breaker; rows already closed are not written.
            sqlx::query(
                "UPDATE endpoints SET breaker_state = 'closed', consecutive_failures = 0, \
                 breaker_until = NULL, failing_since = NULL \
                 WHERE id = ANY($1) AND (breaker_state <> 'closed' \
                 OR consecutive_failures <> 0 OR failing_since IS NOT NULL)",
            )
            .bind(&reset)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        // Attempts are inserted once even if this batch is
        // written again (the first commit's answer was lost), and not at all for a delivery
        // deleted meanwhile (its tenant was deleted): neither may block the batch. Only the
        // holder of the lease may move a delivery on; a completion whose lease was taken
        // over records its attempt and leaves the delivery to its new owner.
        // The per-minute counters ride in the same statement (no extra round trip).
        let (stats_rows, endpoint_rows) = match stats {
            Some((dispatcher, stats)) => ops::stats_json(dispatcher, stats)?,
            None => ("[]".to_owned(), "[]".to_owned()),
        };
        sqlx::query(&format!(
            "WITH c AS ( \
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], \
                 $5::int8[], $6::int8[], $7::text[], $8::text[], $9::text[], $10::int8[], \
                 $11::text[], $12::text[], $13::int8[], $14::int8[]) \
               AS c(attempt_id, delivery_id, attempt_number, started_at, duration_ms, \
                    status_code, response, error, outcome, attempt_next, lease_id, status, \
                    delivery_next, finished) \
             ), recorded AS ( \
               INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms, \
                                     status_code, response, error, outcome, next_attempt_at) \
               SELECT c.attempt_id, c.delivery_id, c.attempt_number, \
                      to_timestamp(c.started_at / 1000.0), c.duration_ms, c.status_code, \
                      c.response, c.error, c.outcome, to_timestamp(c.attempt_next / 1000.0) \
               FROM c WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = c.delivery_id) \
               ON CONFLICT (id) DO NOTHING \
               RETURNING 1 \
             ), moved AS ( \
               UPDATE deliveries d SET status = c.status, attempts = d.attempts + 1, \
                      next_attempt_at = to_timestamp(c.delivery_next / 1000.0), \
                      lease_id = NULL, last_error = c.error, \
                      updated_at = to_timestamp(c.finished / 1000.0) \
               FROM c WHERE d.id = c.delivery_id AND d.lease_id = c.lease_id \
               RETURNING 1 \
             ), audited AS ( \
               INSERT INTO audit_log (id, tenant_id, actor, action, target, changes, created_at) \
               SELECT x.audit_id, e.tenant_id, 'system', 'endpoint.disabled', e.id, \
                      jsonb_build_object('enabled', jsonb_build_object('from', true, 'to', false), \
                                         'disabled_reason', x.reason), $17 \
               FROM UNNEST($15::text[], $16::text[], $20::text[]) AS x(id, reason, audit_id) \
               JOIN endpoints e ON e.id = x.id WHERE e.enabled \
               RETURNING 1 \
             ), disabled AS ( \
               UPDATE endpoints e SET enabled = false, disabled_reason = x.reason, \
                      updated_at = to_timestamp($17 / 1000.0) \
               FROM UNNEST($15::text[], $16::text[]) AS x(id, reason) \
               WHERE e.id = x.id \
               RETURNING 1 \
             ), {}, {} \
             SELECT (SELECT count(*) FROM recorded), (SELECT count(*) FROM moved), \
                    (SELECT count(*) FROM disabled), (SELECT count(*) FROM counted), \
                    (SELECT count(*) FROM endpoint_counted)",
            ops::STATS_CTE.as_str(),
            ops::ENDPOINT_STATS_CTE.as_str()
        ))
        .bind(&attempt_ids)
        .bind(&delivery_ids)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(&codes)
        .bind(&responses)
        .bind(&errors)
        .bind(&outcomes)
        .bind(&attempt_next)
        .bind(&leases)
        .bind(&statuses)
        .bind(&delivery_next)
        .bind(&finished)
        .bind(&disable_ids)
        .bind(&disable_reasons)
        .bind(ms(domain::now()))
        .bind(stats_rows)
        .bind(endpoint_rows)
        .bind(disable_ids.iter().map(|_| audit_id()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let ordered = super::ordered_ids(completions);
        if !ordered.is_empty() {
            self.release_ordered(&mut tx, &ordered, domain::now())
                .await?;
        }
        for (id, b, disable) in super::breaker_updates(completions, &current, policy) {
            if let Some(reason) = &disable {
                // Recorded only when it was enabled until now.
                sqlx::query(
                    "INSERT INTO audit_log (id, tenant_id, actor, action, target, changes, created_at) \
                     SELECT $1, tenant_id, 'system', 'endpoint.disabled', id, \
                            jsonb_build_object('enabled', jsonb_build_object('from', true, 'to', false), \
                                               'disabled_reason', $2::text), $3 \
                     FROM endpoints WHERE id = $4 AND enabled",
                )
                .bind(audit_id())
                .bind(storable(reason).into_owned())
                .bind(ms(domain::now()))
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            sqlx::query(
                "UPDATE endpoints SET breaker_state = $1, consecutive_failures = $2, \
                 breaker_until = to_timestamp($3 / 1000.0), \
                 failing_since = to_timestamp($4 / 1000.0), \
                 enabled = CASE WHEN $5::text IS NULL THEN enabled ELSE false END, \
                 disabled_reason = COALESCE($5, disabled_reason) WHERE id = $6",
            )
            .bind(b.state.as_str())
            .bind(i64::from(b.consecutive_failures))
            .bind(b.open_until.map(ms))
            .bind(b.failing_since.map(ms))
            .bind(disable.as_deref().map(storable).map(|s| s.into_owned()))
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against the PostgreSQL at 127.0.0.1:5432 (trust auth): each test makes a database of
    //! its own and drops it afterwards, even when it fails.

    use super::*;
    use crate::store::Catalog;
    use crate::{
        domain::{new_id, prefix, Attempt, AttemptOutcome, DeliveryStatus, EventType, Tenant},
        wake::Waker,
    };
    use sqlx::Connection;

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A fresh database with hookrelay's schema, dropped when this goes out of scope.
    struct TestDb {
        name: String,
        store: PostgresStore,
    }

    impl TestDb {
        async fn new() -> Self {
            let name = format!("hr_unit_{:016x}", rand::random::<u64>());
            let mut admin = sqlx::PgConnection::connect(ADMIN_URL).await.expect("admin");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .await
                .expect("create database");
            let store = PostgresStore::connect(&Self::url_of(&name), 16, &Default::default())
                .await
                .expect("connect");
            Self { name, store }
        }

        fn url_of(name: &str) -> String {
            format!("postgres://postgres@127.0.0.1:5432/{name}")
        }

        fn url(&self) -> String {
            Self::url_of(&self.name)
        }

        /// A connection of its own, as an application would have, that also sees
        /// hookrelay's tables (the application's functions are in `public`).
        async fn connection(&self) -> sqlx::PgConnection {
            sqlx::PgConnection::connect(&format!(
                "{}?options[search_path]=hookrelay,public",
                self.url()
            ))
            .await
            .expect("connect")
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let name = self.name.clone();
            // Drop cannot await: drop the database from a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut admin) = sqlx::PgConnection::connect(ADMIN_URL).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut admin)
                                .await;
                    }
                });
            })
            .join();
        }
    }

    struct NoCheck;
    impl DataCheck for NoCheck {
        fn check(&self, _: &EventType, _: &serde_json::Value) -> Result<(), String> {
            Ok(())
        }
    }

    fn endpoint(tenant: &str, event_types: &[&str]) -> Endpoint {
        Endpoint {
            description: Some("test".into()),
            event_types: event_types.iter().map(|s| s.to_string()).collect(),
            headers: [("x-test".to_string(), "1".to_string())].into(),
            ..Endpoint::new(tenant, "https://example.com/hook", "whsec_dGVzdA==".into())
        }
    }

    fn event(tenant: &str, event_type: &str, key: Option<&str>) -> Event {
        let now = domain::now();
        Event {
            id: domain::new_id_at(prefix::EVENT, now),
            tenant_id: tenant.to_owned(),
            event_type: event_type.to_owned(),
            data: serde_json::json!({"user_id": "u_42", "n": 1}),
            actor: Some("u_42".into()),
            idempotency_key: key.map(str::to_owned),
            traceparent: None,
            created_at: now,
            deliver_at: None,
        }
    }

    /// A horizon beyond anything a test schedules.
    fn far() -> DateTime<Utc> {
        domain::now() + chrono::Duration::days(365)
    }

    async fn ingest(store: &PostgresStore, e: Event) -> Result<Ingested> {
        store.ingest(e, 15, Arc::new(NoCheck)).await
    }

    fn completion(c: &Claimed, status: DeliveryStatus, lease_id: &str) -> Completion {
        let now = domain::now();
        Completion {
            ordered: false,
            delivery_id: c.delivery.id.clone(),
            endpoint_id: c.endpoint.id.clone(),
            lease_id: lease_id.to_owned(),
            attempt: Attempt {
                id: new_id(prefix::ATTEMPT),
                delivery_id: c.delivery.id.clone(),
                attempt_number: c.delivery.attempts + 1,
                started_at: now,
                duration_ms: 12,
                status_code: Some(200),
                response: Some("ok\0".into()),
                error: None,
                outcome: if status == DeliveryStatus::Delivered {
                    AttemptOutcome::Success
                } else {
                    AttemptOutcome::Retry
                },
                next_attempt_at: None,
            },
            status,
            next_attempt_at: (status == DeliveryStatus::Pending)
                .then(|| now + chrono::Duration::seconds(10)),
            disable_endpoint: None,
        }
    }

    /// The next attempt of each delivery of `ids`, in that order.
    async fn due_times(store: &PostgresStore, ids: &[&str]) -> Vec<Option<i64>> {
        let mut out = Vec::new();
        for id in ids {
            let (t,): (Option<i64>,) = sqlx::query_as(
                "SELECT (extract(epoch FROM next_attempt_at) * 1000)::int8 \
                 FROM deliveries WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
            out.push(t);
        }
        out
    }

    #[tokio::test]
    async fn a_keys_backlog_waits_parked_and_each_finish_releases_the_next() {
        let db = TestDb::new().await;
        let store = &db.store;
        let spec = serde_json::json!({"ordering": {"key": "data.user_id"}});
        let ep = Endpoint {
            routing: Arc::new(
                crate::domain::routing::Routing::compile(serde_json::from_value(spec).unwrap())
                    .unwrap(),
            ),
            ..endpoint("default", &["user.*"])
        };
        store.create_endpoint(&ep, 100).await.unwrap();
        let mut ids = Vec::new();
        for _ in 0..4 {
            let Ingested::Created(_, ds) = ingest(store, event("default", "user.joined", None))
                .await
                .unwrap()
            else {
                panic!("created")
            };
            ids.push(ds[0].id.clone());
        }
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let now = domain::now();
        // The three behind the head wait parked; the head stays due.
        store.park_ordered(now).await.unwrap();
        let due = due_times(store, &ids).await;
        assert!(due[0].is_some(), "the head is due");
        assert_eq!(due[1..], [None, None, None], "the rest wait parked");
        let lease = far();
        let got = store
            .claim(now, lease, "lse_1", 10, &Default::default())
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery.id, ids[0]);
        // The head's finish releases the next one only.
        let done = Completion {
            ordered: true,
            ..completion(&got[0], DeliveryStatus::Delivered, "lse_1")
        };
        store.complete(&[done], &Default::default()).await.unwrap();
        let due = due_times(store, &ids).await;
        assert!(due[1].is_some(), "the next one is due");
        assert_eq!(due[2..], [None, None]);
        let got = store
            .claim(domain::now(), lease, "lse_2", 10, &Default::default())
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].delivery.id, ids[1]);
        // A finish that released nothing (as a race between a park and a finish can leave
        // it) is caught up by the sweep.
        let done = completion(&got[0], DeliveryStatus::Delivered, "lse_2");
        store.complete(&[done], &Default::default()).await.unwrap();
        assert_eq!(due_times(store, &ids).await[2], None);
        store
            .park_ordered(domain::now() + chrono::Duration::seconds(10))
            .await
            .unwrap();
        let due = due_times(store, &ids).await;
        assert!(due[2].is_some(), "the sweep released the next one");
        assert_eq!(due[3], None, "and only that one");
    }

    /// Waits for a wake-up, failing after ten seconds.
    async fn woken(waker: &Waker, why: &str) {
        tokio::time::timeout(Duration::from_secs(10), waker.woken())
            .await
            .unwrap_or_else(|_| panic!("not woken: {why}"));
    }

    #[tokio::test]
    async fn retries_re_enabled_endpoints_and_lost_connections_wake_dispatchers() {
        let mut db = TestDb::new().await;
        // Only the moves themselves wake: each wake-up below has the cause it names.
        db.store.wake_follow_up = Duration::ZERO;
        let store = &db.store;
        let mut ep = endpoint("default", &[]);
        ep.enabled = false;
        store.create_endpoint(&ep, u32::MAX).await.unwrap();
        let waker = Waker::default();
        store.listen(waker.clone()).await.unwrap();
        woken(&waker, "first connection").await;

        // A delivery made while the endpoint is disabled.
        let Ingested::Created(_, ds) = ingest(store, event("default", "a.b", None)).await.unwrap()
        else {
            panic!("created");
        };
        assert!(ds.is_empty(), "disabled endpoints get no deliveries");
        ep.enabled = true;
        store.update_endpoint(&ep).await.unwrap();
        woken(&waker, "endpoint enabled").await;
        let Ingested::Created(_, ds) = ingest(store, event("default", "a.b", None)).await.unwrap()
        else {
            panic!("created");
        };
        woken(&waker, "delivery committed").await;
        let now = domain::now();
        let claimed = store
            .claim(
                now,
                now + chrono::Duration::seconds(30),
                "lse_1",
                10,
                &Default::default(),
            )
            .await
            .unwrap();
        let mut done = completion(&claimed[0], DeliveryStatus::Failed, "lse_1");
        done.next_attempt_at = None;
        store.complete(&[done], &Default::default()).await.unwrap();
        let failed = store
            .get_delivery("default", &ds[0].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (failed.status, failed.attempts),
            (DeliveryStatus::Failed, 1)
        );
        store
            .retry_delivery("default", &ds[0].id, domain::now(), 2)
            .await
            .unwrap();
        woken(&waker, "manual retry").await;

        // Nothing moved: no wake-up.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), waker.woken())
                .await
                .is_err(),
            "woken without a cause"
        );

        // The probe's connection is killed: it comes back and sees the next commit (a move
        // while it was away would show too: the sequence keeps its value).
        let killed: (i64,) = sqlx::query_as(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'hookrelay-wake') k",
        )
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert_eq!(killed.0, 1);
        ingest(store, event("default", "a.b", None)).await.unwrap();
        woken(&waker, "commit after the reconnection").await;
    }

    #[tokio::test]
    async fn the_outbox_is_fanned_out_once_in_order_and_drops_deleted_tenants() {
        let db = TestDb::new().await;
        let store = &db.store;
        let mut app = db.connection().await;
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', now())")
            .execute(&mut app)
            .await
            .unwrap();
        for tenant in ["default", "acme"] {
            store
                .create_endpoint(&endpoint(tenant, &[]), u32::MAX)
                .await
                .unwrap();
        }
        let mut ids = Vec::new();
        for (n, tenant) in [(1, "default"), (2, "acme"), (3, "default"), (4, "default")] {
            let (id,): (String,) = sqlx::query_as(
                "SELECT dispatch_webhook('a.b', jsonb_build_object('n', $1::int), NULL, $2)",
            )
            .bind(n)
            .bind(tenant)
            .fetch_one(&mut app)
            .await
            .unwrap();
            ids.push(id);
        }
        // The tenant goes after its event was committed, before the fan-out.
        sqlx::query("DELETE FROM tenants WHERE id = 'acme'")
            .execute(&mut app)
            .await
            .unwrap();

        // Two relays at once: each row is fanned out by one of them, exactly once.
        let (mut a, mut b) = (db.connection().await, db.connection().await);
        let (x, y) = tokio::join!(
            outbox::relay(&mut a, outbox::Wait::Yes),
            outbox::relay(&mut b, outbox::Wait::Yes)
        );
        assert_eq!(
            x.unwrap() + y.unwrap(),
            3,
            "one delivery per event of default"
        );
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM hookrelay_outbox")
            .fetch_one(&mut app)
            .await
            .unwrap();
        assert_eq!(left, 0);
        assert!(store.get_event("acme", &ids[1]).await.unwrap().is_none());
        // In outbox order: the deliveries' sequence follows the events'.
        let order: Vec<String> =
            sqlx::query_scalar("SELECT d.event_id FROM deliveries d ORDER BY d.seq")
                .fetch_all(&mut app)
                .await
                .unwrap();
        assert_eq!(order, vec![ids[0].clone(), ids[2].clone(), ids[3].clone()]);
        let e = store.get_event("default", &ids[3]).await.unwrap().unwrap();
        assert_eq!(e.data, serde_json::json!({"n": 4}));
    }

    async fn plan_mode(pool: &PgPool) -> (String, String) {
        sqlx::query_as("SELECT current_setting('jit'), current_setting('plan_cache_mode')")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn connections_plan_with_parameters_until_the_tables_grow() {
        let db = TestDb::new().await;
        // The store's pool, on tables that are still empty.
        assert_eq!(
            plan_mode(&db.store.pool).await,
            ("off".to_owned(), "force_custom_plan".to_owned())
        );
        // A pool of the same kind: generic plans come in once both tables have grown.
        let options = PgConnectOptions::from_str(&db.url())
            .unwrap()
            .options([("jit", "off"), ("search_path", "hookrelay")]);
        let (pool, plans) = pool::open(options, 2, ACQUIRE_TIMEOUT).await.unwrap();
        assert!(!plans.settle(&pool, 1).await.unwrap(), "empty tables");
        let t = "t_plans";
        db.store
            .create_tenant(&Tenant {
                id: t.into(),
                name: t.into(),
                created_at: Utc::now(),
            })
            .await
            .unwrap();
        db.store
            .create_endpoint(&endpoint(t, &["*"]), 100)
            .await
            .unwrap();
        ingest(&db.store, event(t, "user.created", None))
            .await
            .unwrap();
        assert!(plans.settle(&pool, 1).await.unwrap(), "a page each");
        // Connections made before are replaced as they are acquired: the server's setting.
        assert_eq!(
            plan_mode(&pool).await,
            ("off".to_owned(), "auto".to_owned())
        );
        assert!(
            plans.settle(&pool, i64::MAX).await.unwrap(),
            "once in, in for good"
        );
    }
}
