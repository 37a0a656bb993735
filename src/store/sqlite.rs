//! SQLite store: the embedded default.
//!
//! WAL mode, `synchronous = NORMAL` (a committed transaction survives a process crash, even
//! `kill -9`; only an OS crash or power cut can lose the last few), one writer connection
//! (SQLite has one writer anyway; a single connection means no `SQLITE_BUSY` storms) and a
//! small pool of readers.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};

use std::collections::HashMap;

use tokio::sync::mpsc;

mod ops;

use super::rows::{
    assemble_claims, collect, corrupt, ms, DeliveryRow, EndpointRow, EventRow, EventTypeRow,
};
use super::sql::{catalog::columns, db, Db, Dialect, Pools, SqlStore};
use super::{
    storable, Claimed, Completion, DataCheck, IngestJob, Ingested, Result, Store, StoreError,
    TenantShare,
};
use crate::domain::{
    self, from_millis, Breaker, BreakerPolicy, Delivery, Endpoint, Event, EventType,
};

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    ingest_tx: mpsc::Sender<IngestJob>,
    probe_check: super::ProbeClock,
    /// Spaces out the sweep that releases ordered deliveries left parked by a race.
    ordered_check: super::ProbeClock,
    /// Whether a closed breaker's backlog may still be parked.
    recovering: super::Recovering,
    /// The background checkpointer stops once the store is gone.
    _alive: Arc<()>,
    pub(super) sealer: super::sealed::Sealer,
}

/// Page caches, as SQLite's `cache_size` (negative: KiB). The writer's holds the pages every
/// commit touches (the tails of the tables and the inner pages of their indexes); each of the
/// four readers' holds what one claim or API read needs. Together 6 MB: a page not cached is
/// read from the operating system's file cache, a system call rather than a disk read. In the
/// throughput benchmark, caches of 80 MB, 12 MB and 6 MB delivered at the same rate and
/// latency; each halving made the process 6 MB smaller under load, and the 80 MB ones grew it
/// past 100 MB in long runs as they filled.
const WRITER_CACHE: &str = "-4096";
const READER_CACHE: &str = "-512";

/// How often the WAL is copied into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL pages past which the checkpointer has the writer finish the copy, so that the WAL
/// starts over (4 MB). A quiet WAL is all copied between commits and starts over by itself.
const WAL_RESTART_PAGES: i64 = 1024;

/// Keeps the WAL short without stalling the writer. Every [`CHECKPOINT_EVERY`], while the
/// store (`alive`) exists:
/// 1. a passive checkpoint on a connection of its own copies what no reader still needs
///    into the database file and syncs both files: the bulk of the work, and the writer
///    goes on meanwhile;
/// 2. if the WAL has grown past [`WAL_RESTART_PAGES`], a second passive checkpoint on the
///    writer itself copies the few pages committed during the first (1-3 ms). Nothing is
///    left to copy, so the next commit starts the WAL over;
/// 3. unless a reader still on the WAL kept step 2 from copying all of it, or the next
///    commit from starting it over: a look 20 ms later (step 1 again) tells, and then
///    step 2 runs again.
///
/// Without step 2, under steady load the WAL is never all copied when a commit begins, so
/// it is never started over; it grows to `wal_autocheckpoint` and the commit that crosses it
/// checkpoints on the writer, syncing everything written since the last sync: measured at
/// 1,000 events/s, 2-17 ms on the writer every 0.6 s, with every ingest waiting behind it.
async fn checkpointer(pool: SqlitePool, writer: SqlitePool, alive: std::sync::Weak<()>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if alive.upgrade().is_none() {
            break;
        }
        // The WAL's length when the writer last copied all of it: shorter now means it was
        // started over since.
        let mut copied_whole = None;
        for look in 0..4 {
            if look > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let pages = match wal_checkpoint(&pool).await {
                Ok((_, pages, _)) => pages,
                Err(e) => {
                    tracing::warn!(error = %e, "checkpointing the WAL failed; the next commit past its limit will");
                    break;
                }
            };
            if pages <= WAL_RESTART_PAGES || copied_whole.is_some_and(|c| pages < c) {
                break;
            }
            copied_whole = finish_on_writer(&writer).await;
        }
    }
    pool.close().await;
}

/// `PRAGMA wal_checkpoint(PASSIVE)` on `pool`: (busy, WAL pages, pages copied).
async fn wal_checkpoint(pool: &SqlitePool) -> sqlx::Result<(i64, i64, i64)> {
    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await
}

/// Step 2 of [`checkpointer`]: copies the rest of the WAL on the writer. The WAL's length
/// if all of it was copied; not if a reader still needed the last commit's pages (the next
/// look tries again).
async fn finish_on_writer(writer: &SqlitePool) -> Option<i64> {
    match wal_checkpoint(writer).await {
        Ok((_, pages, copied)) => (copied == pages).then_some(pages),
        Err(e) => {
            tracing::warn!(error = %e, "checkpointing the WAL on the writer failed");
            None
        }
    }
}

/// Most events committed in one ingest transaction.
const INGEST_BATCH: usize = 512;

/// Makes `path` readable and writable by its owner only, creating it (empty, mode 0600)
/// first when `create` says so and it is missing. Credentials live in the database file.
fn owner_only(path: &std::path::Path, create: bool) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| {
            let message = format!("cannot make {} owner-only: {e}", path.display());
            StoreError::Database(sqlx::Error::Io(std::io::Error::new(e.kind(), message)))
        };
        if create && !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
        }
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, create);
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_owned()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", READER_CACHE)
            .pragma("temp_store", "memory")
            // The checkpointer copies the WAL into the database file in the background; a
            // commit checkpoints by itself only if the WAL grows past this many pages
            // (64 MB) anyway, and a WAL that grew is cut back to 64 MB once checkpointed.
            .pragma("wal_autocheckpoint", "16000")
            .pragma("journal_size_limit", "67108864");
        let in_memory = url.contains(":memory:");
        if !in_memory {
            owner_only(options.get_filename(), true)?;
        }
        // Connections are kept for the life of the store: a pool that retires them (sqlx
        // closes connections after 30 minutes by default) would drop the writer's page cache
        // and prepared statements mid-load, a stall every half hour.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone().pragma("cache_size", WRITER_CACHE))
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::migrate!("migrations/sqlite").run(&writer).await?;
        if !in_memory {
            // SQLite gives these the database file's mode when it creates them; files left
            // by an older version may be wider.
            for suffix in ["-wal", "-shm"] {
                let mut name = options.get_filename().as_os_str().to_owned();
                name.push(suffix);
                owner_only(std::path::Path::new(&name), false)?;
            }
        }
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .max_lifetime(None)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options.clone().read_only(true))
                .await
                .map_err(StoreError::from_sqlx)?
        };
        let alive = Arc::new(());
        if !in_memory {
            let checkpoints = SqlitePoolOptions::new()
                .max_connections(1)
                .test_before_acquire(false)
                .connect_with(options.pragma("cache_size", "-256"))
                .await
                .map_err(StoreError::from_sqlx)?;
            tokio::spawn(checkpointer(
                checkpoints,
                writer.clone(),
                Arc::downgrade(&alive),
            ));
        }
        let (ingest_tx, ingest_rx) = mpsc::channel(INGEST_BATCH * 4);
        tokio::spawn(group_commit(writer.clone(), reader.clone(), ingest_rx));
        let store = Self {
            writer,
            reader,
            ingest_tx,
            probe_check: Default::default(),
            ordered_check: Default::default(),
            recovering: Default::default(),
            _alive: alive,
            sealer: Default::default(),
        };
        super::sql::ops::hash_inbox_tokens(&store).await?;
        Ok(store)
    }
}

/// Group commit: events that arrive while a transaction is being written go into the next
/// one. Each statement is one round trip to SQLite's thread, so a batch of N events costs a
/// handful of round trips instead of N times as many. Every ingest still commits before it
/// is answered.
async fn group_commit(writer: SqlitePool, reader: SqlitePool, mut rx: mpsc::Receiver<IngestJob>) {
    let mut jobs = Vec::with_capacity(INGEST_BATCH);
    let mut seen = Seen::default();
    while rx.recv_many(&mut jobs, INGEST_BATCH).await > 0 {
        let batch: Vec<IngestJob> = std::mem::take(&mut jobs);
        let result = ingest_batch(&writer, &reader, &mut seen, &batch).await;
        if result.is_err() {
            // Perhaps a tenant deleted since it was seen: ask again.
            seen.tenants.clear();
        }
        match result {
            Ok(results) => {
                for (job, r) in batch.into_iter().zip(results) {
                    let _ = job.reply.send(r);
                }
            }
            // Isolate the job that failed: the others must not fail with it.
            Err(_) if batch.len() > 1 => {
                for job in batch {
                    let r = ingest_batch(&writer, &reader, &mut seen, std::slice::from_ref(&job))
                        .await
                        .and_then(|mut v| v.pop().ok_or_else(|| corrupt("ingest", "no result"))?);
                    let _ = job.reply.send(r);
                }
            }
            Err(e) => {
                if let Some(job) = batch.into_iter().next() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}

/// What the ingest task has seen to exist, so that a batch asks a reader only about the
/// rest: tenants (one deleted since fails the insert through its foreign key, and a failed
/// batch forgets them all) and event types (never changed once created). Each set starts
/// over past [`SEEN_MOST`] entries.
#[derive(Default)]
struct Seen {
    tenants: std::collections::HashSet<String>,
    event_types: HashMap<String, EventType>,
}

const SEEN_MOST: usize = 10_000;

impl Seen {
    /// Learns which of this batch's tenants and event types exist, reading those not seen
    /// yet on a reader (both at once).
    async fn learn(&mut self, reader: &SqlitePool, jobs: &[IngestJob]) -> Result<()> {
        if self.tenants.len() > SEEN_MOST {
            self.tenants.clear();
        }
        if self.event_types.len() > SEEN_MOST {
            self.event_types.clear();
        }
        let tenants = unseen(jobs, |j| &j.event.tenant_id, |t| self.tenants.contains(t));
        let types = unseen(
            jobs,
            |j| &j.event.event_type,
            |t| self.event_types.contains_key(t),
        );
        let (found_tenants, found_types) = tokio::try_join!(
            rows_named::<(String,)>(reader, "SELECT id FROM tenants", "id", &tenants),
            rows_named::<EventTypeRow>(
                reader,
                "SELECT name, description, schema, created_at FROM event_types",
                "name",
                &types
            ),
        )?;
        self.tenants
            .extend(found_tenants.into_iter().map(|(id,)| id));
        let found_types: Vec<EventType> = collect(found_types)?;
        self.event_types
            .extend(found_types.into_iter().map(|t| (t.name.clone(), t)));
        Ok(())
    }
}

/// The distinct names `name` gives the jobs, sorted, leaving out those `seen` knows.
fn unseen<'a>(
    jobs: &'a [IngestJob],
    name: impl Fn(&'a IngestJob) -> &'a String,
    seen: impl Fn(&str) -> bool,
) -> Vec<&'a str> {
    let mut names: Vec<&str> = jobs
        .iter()
        .map(|j| name(j).as_str())
        .filter(|n| !seen(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The rows of `select` whose `column` is one of `names`, read on a reader; none asked
/// for when `names` is empty.
async fn rows_named<R>(
    reader: &SqlitePool,
    select: &str,
    column: &str,
    names: &[&str],
) -> Result<Vec<R>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    if names.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(&format!(
        "{select} WHERE {column} IN (SELECT value FROM json_each(?))"
    ))
    .bind(to_json(&names)?)
    .fetch_all(reader)
    .await
    .map_err(db)
}

/// Writes a batch of events with their deliveries in one transaction. The outer error fails
/// the whole batch; an inner one refuses one event (unknown tenant, data failing its schema).
async fn ingest_batch(
    writer: &SqlitePool,
    reader: &SqlitePool,
    seen: &mut Seen,
    jobs: &[IngestJob],
) -> Result<Vec<Result<Ingested>>> {
    // Tenants and event types are read before the write transaction, on a reader.
    seen.learn(reader, jobs).await?;
    let tenants = unseen(jobs, |j| &j.event.tenant_id, |_| false);
    let refusal = |job: &IngestJob| -> Option<StoreError> {
        let e = &job.event;
        if !seen.tenants.contains(&e.tenant_id) {
            return Some(StoreError::UnknownTenant(e.tenant_id.clone()));
        }
        let Some(et) = seen.event_types.get(&e.event_type) else {
            return (!job.check.accepts_unknown_types())
                .then(|| StoreError::UnknownEventType(e.event_type.clone()));
        };
        job.check
            .check(et, &e.data)
            .err()
            .map(StoreError::InvalidData)
    };

    let mut tx = writer.begin().await.map_err(db)?;
    // Idempotency: events already stored under the same (tenant, key).
    let keyed: Vec<(&str, &str)> = jobs
        .iter()
        .filter_map(|j| {
            Some((
                j.event.tenant_id.as_str(),
                j.event.idempotency_key.as_deref()?,
            ))
        })
        .collect();
    let mut existing: HashMap<(String, String), Ingested> = HashMap::new();
    if !keyed.is_empty() {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {event_columns} FROM events WHERE (tenant_id, idempotency_key) IN \
             (SELECT j.value ->> '$[0]', j.value ->> '$[1]' FROM json_each(?) j)",
            event_columns = columns(Dialect::Sqlite).event
        ))
        .bind(to_json(&keyed)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let events: Vec<Event> = collect(rows)?;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let deliveries: Vec<Delivery> = collect(
            sqlx::query_as::<_, DeliveryRow>(&format!(
                "SELECT {delivery_columns} FROM deliveries \
                 WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id",
                delivery_columns = columns(Dialect::Sqlite).delivery
            ))
            .bind(to_json(&ids)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?,
        )?;
        for e in events {
            let key = (
                e.tenant_id.clone(),
                e.idempotency_key.clone().unwrap_or_default(),
            );
            let ds = deliveries
                .iter()
                .filter(|d| d.event_id == e.id)
                .cloned()
                .collect();
            existing.insert(key, Ingested::Existing(e, ds));
        }
    }

    // The tenants' endpoints as they are in this transaction.
    let endpoints: Vec<Endpoint> = collect(
        sqlx::query_as::<_, EndpointRow>(&format!(
            "SELECT {endpoint_columns} FROM endpoints \
             WHERE enabled = 1 AND tenant_id IN (SELECT value FROM json_each(?))",
            endpoint_columns = columns(Dialect::Sqlite).endpoint
        ))
        .bind(to_json(&tenants)?)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?,
    )?;

    let mut results = Vec::with_capacity(jobs.len());
    let mut event_rows = Vec::new();
    let mut delivery_rows = Vec::new();
    for job in jobs {
        let e = &job.event;
        let key = e.idempotency_key.clone().map(|k| (e.tenant_id.clone(), k));
        if let Some(first) = key.as_ref().and_then(|k| existing.get(k)) {
            results.push(Ok(first.clone()));
            continue;
        }
        if let Some(refused) = refusal(job) {
            results.push(Err(refused));
            continue;
        }
        let deliveries = domain::fan_out(e, &endpoints, job.default_max_attempts);
        event_rows.push(serde_json::json!([
            e.id,
            e.tenant_id,
            e.event_type,
            e.data.to_string(),
            e.actor,
            e.idempotency_key,
            e.traceparent,
            ms(e.created_at),
            e.deliver_at.map(ms)
        ]));
        for d in &deliveries {
            delivery_rows.push(serde_json::json!([
                d.id,
                d.tenant_id,
                d.event_id,
                d.endpoint_id,
                d.status.as_str(),
                d.attempts,
                d.max_attempts,
                d.next_attempt_at.map(ms),
                ms(d.created_at),
                ms(d.updated_at),
                d.ordering_key,
                d.ordering_blocks
            ]));
        }
        if let Some(k) = key {
            // A second job with the same key in this batch gets this answer.
            existing.insert(k, Ingested::Existing(e.clone(), deliveries.clone()));
        }
        results.push(Ok(Ingested::Created(e.clone(), deliveries)));
    }
    if !event_rows.is_empty() {
        // Both inserts in one round trip (the parameters bind in order across statements).
        // The endpoints were read in this transaction, so a foreign key that fails is the
        // tenant's.
        sqlx::query(
            "INSERT INTO events (id, tenant_id, type, data, actor, idempotency_key, traceparent, \
                                 created_at, deliver_at) SELECT \
             j.value ->> '$[0]', j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', \
             j.value ->> '$[4]', j.value ->> '$[5]', j.value ->> '$[6]', j.value ->> '$[7]', \
             j.value ->> '$[8]' FROM json_each(?) j; \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, created_at, updated_at, ordering_key, \
             ordering_blocks) SELECT \
             j.value ->> '$[0]', j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', \
             j.value ->> '$[4]', j.value ->> '$[5]', j.value ->> '$[6]', j.value ->> '$[7]', \
             j.value ->> '$[8]', j.value ->> '$[9]', j.value ->> '$[10]', \
             coalesce(j.value ->> '$[11]', 0) FROM json_each(?) j",
        )
        .bind(to_json(&event_rows)?)
        .bind(to_json(&delivery_rows)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| ingest_error(e, &jobs[0].event.tenant_id))?;
    }
    tx.commit().await.map_err(db)?;
    Ok(results)
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    super::rows::to_json(v, "batch parameters")
}

/// Maps a foreign-key failure of an event insert (its tenant was deleted meanwhile).
fn ingest_error(e: sqlx::Error, tenant: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            StoreError::UnknownTenant(tenant.to_owned())
        }
        _ => db(e),
    }
}

/// Ordered deliveries waiting for an earlier one of their key, kept out of the claims' way
/// (as on PostgreSQL, see its store for the reasoning).
impl SqliteStore {
    /// Parks the due deliveries that wait for an earlier one of their endpoint and key
    /// (`next_attempt_at` NULL), and every few seconds releases those a race left parked.
    async fn park_ordered(&self, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_at = NULL WHERE id IN ( \
               SELECT d.id FROM deliveries d \
               WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL \
                 AND d.next_attempt_at <= ?1 AND NOT {IN_ORDER} \
               ORDER BY d.next_attempt_at LIMIT 10000)"
        ))
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(db)?;
        if !self
            .ordered_check
            .due_every(now, chrono::Duration::seconds(5))
        {
            return Ok(());
        }
        let released = sqlx::query(&format!(
            "UPDATE deliveries SET next_attempt_at = ?1 WHERE id IN ( \
               SELECT d.id FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
               WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL \
                 AND d.next_attempt_at IS NULL AND e.enabled = 1 \
                 AND e.breaker_state = 'closed' AND {IN_ORDER})"
        ))
        .bind(ms(now))
        .execute(&self.writer)
        .await
        .map_err(db)?
        .rows_affected();
        if released > 0 {
            tracing::debug!(
                released,
                "released ordered deliveries left waiting by a race"
            );
        }
        Ok(())
    }
}

/// Makes due the next parked delivery of each key whose delivery among `ids` has just
/// finished, in the completing transaction.
async fn release_ordered(
    tx: &mut sqlx::SqliteConnection,
    ids: &[String],
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(&format!(
        "UPDATE deliveries AS d SET next_attempt_at = ?2 \
         WHERE d.id IN ( \
           SELECT (SELECT x.id FROM deliveries x \
                   WHERE x.endpoint_id = f.endpoint_id AND x.ordering_key = f.ordering_key \
                     AND x.status = 'pending' AND x.rowid > f.rowid \
                   ORDER BY x.rowid LIMIT 1) \
           FROM deliveries f \
           WHERE f.id IN (SELECT value FROM json_each(?1)) AND f.ordering_key IS NOT NULL) \
           AND d.status = 'pending' AND d.next_attempt_at IS NULL \
           AND (SELECT e.enabled FROM endpoints e WHERE e.id = d.endpoint_id) = 1 \
           AND {IN_ORDER}"
    ))
    .bind(to_json(&ids)?)
    .bind(ms(now))
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// What a completion batch writes, as one text of statements that the writer runs in one
/// round trip; the parameters bind in order across the statements. The attempts (a batch
/// written twice, its first commit's answer lost, records each attempt once), the
/// deliveries (only the holder of the lease may move one on), the breakers that the batch's
/// last successes close (at the time given three times: the retries they deferred go now,
/// and the first window of the backlog they held, see [`super::sql::release_recovered`];
/// those in flight keep their lease; the endpoints are given three times too),
/// and the statistics ([`ops::ADD_STATS`]).
static COMPLETE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms, \
         status_code, response, error, outcome, next_attempt_at) SELECT \
         j.value ->> '$[0]', j.value ->> '$[1]', j.value ->> '$[2]', j.value ->> '$[3]', \
         j.value ->> '$[4]', j.value ->> '$[5]', j.value ->> '$[6]', j.value ->> '$[7]', \
         j.value ->> '$[8]', j.value ->> '$[9]' FROM json_each(?) j \
         WHERE true ON CONFLICT (id) DO NOTHING; \
         UPDATE deliveries SET status = j.value ->> '$[2]', attempts = attempts + 1, \
         next_attempt_at = j.value ->> '$[3]', lease_id = NULL, \
         last_error = j.value ->> '$[4]', updated_at = j.value ->> '$[5]' \
         FROM json_each(?) j \
         WHERE deliveries.id = j.value ->> '$[0]' AND deliveries.lease_id = j.value ->> '$[1]'; \
         UPDATE deliveries SET next_attempt_at = ? \
         WHERE status = 'pending' AND lease_id IS NULL AND next_attempt_at > ? \
         AND endpoint_id IN (SELECT id FROM endpoints \
           WHERE id IN (SELECT value FROM json_each(?)) AND breaker_state <> 'closed'); \
         UPDATE deliveries SET next_attempt_at = ? WHERE id IN (SELECT d.id FROM deliveries d \
           WHERE d.endpoint_id IN (SELECT id FROM endpoints \
             WHERE id IN (SELECT value FROM json_each(?)) AND enabled = 1 \
             AND breaker_state <> 'closed') \
           AND d.status = 'pending' AND d.next_attempt_at IS NULL AND d.ordering_key IS NULL \
           ORDER BY d.created_at LIMIT {window}); \
         UPDATE endpoints SET breaker_state = 'closed', consecutive_failures = 0, \
         breaker_until = NULL, failing_since = NULL \
         WHERE id IN (SELECT value FROM json_each(?)) AND (breaker_state <> 'closed' \
         OR consecutive_failures <> 0 OR failing_since IS NOT NULL); \
         {stats}",
        stats = *ops::ADD_STATS,
        window = super::sql::RECOVERY_WINDOW
    )
});

/// Claimable as far as ordering goes (for a delivery `d`): unordered, or no delivery of the
/// same endpoint and key inserted before it (rowid order) is still pending (in flight
/// counts: a leased delivery is pending) or, where it blocks, failed for good.
const IN_ORDER: &str = "(d.ordering_key IS NULL OR NOT EXISTS ( \
     SELECT 1 FROM deliveries p WHERE p.endpoint_id = d.endpoint_id \
     AND p.ordering_key = d.ordering_key AND p.rowid < d.rowid \
     AND (p.status = 'pending' OR (p.status = 'failed' AND p.ordering_blocks))))";

/// Appends `AND id < after ORDER BY id DESC LIMIT n` (newest first, cursor after the last).
/// Records in the audit trail that hookrelay disables an endpoint, when it was enabled
/// until now; in the transaction that disables it.
async fn audit_disable(
    tx: &mut sqlx::SqliteConnection,
    endpoint_id: &str,
    reason: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, tenant_id, actor, action, target, changes, created_at) \
         SELECT ?, tenant_id, 'system', 'endpoint.disabled', id, \
                json_object('enabled', json_object('from', json('true'), 'to', json('false')), \
                            'disabled_reason', ?), ? \
         FROM endpoints WHERE id = ? AND enabled = 1",
    )
    .bind(crate::domain::new_id("aud"))
    .bind(reason)
    .bind(ms(crate::domain::now()))
    .bind(endpoint_id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn reserve_sends(
        &self,
        endpoint_id: &str,
        rate: crate::domain::Rate,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<(u32, Vec<DateTime<Utc>>)> {
        let mut tx = self.writer.begin().await.map_err(db)?;
        let tat: Option<(Option<i64>,)> =
            sqlx::query_as("SELECT rate_tat FROM endpoints WHERE id = ?")
                .bind(endpoint_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let (allowed, new_tat, later) =
            domain::admit_sends(tat.and_then(|(t,)| t).map(from_millis), now, rate, want);
        sqlx::query("UPDATE endpoints SET rate_tat = ? WHERE id = ?")
            .bind(ms(new_tat))
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok((allowed, later))
    }

    async fn release(&self, items: &[(String, String, DateTime<Utc>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, &str, i64)> = items
            .iter()
            .map(|(d, l, at)| (d.as_str(), l.as_str(), ms(*at)))
            .collect();
        sqlx::query(
            "UPDATE deliveries SET next_attempt_at = j.value ->> '$[2]', lease_id = NULL \
             FROM json_each(?) j \
             WHERE deliveries.id = j.value ->> '$[0]' AND deliveries.lease_id = j.value ->> '$[1]'",
        )
        .bind(to_json(&rows)?)
        .execute(&self.writer)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn ingest(
        &self,
        event: Event,
        default_max_attempts: u32,
        check: Arc<dyn DataCheck>,
    ) -> Result<Ingested> {
        IngestJob::submit(&self.ingest_tx, event, default_max_attempts, check).await
    }

    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        lease_id: &str,
        limit: u32,
        share: &TenantShare,
    ) -> Result<Vec<Claimed>> {
        // Probes: endpoints whose open breaker has cooled down, with a delivery due, turn
        // half-open for the lease, and their next due delivery is claimed alone.
        let probing: Vec<(String,)> = if !self.probe_check.due(now) {
            Vec::new()
        } else {
            // Deliveries due to an endpoint that is disabled, or whose breaker holds them,
            // wait unscheduled (`next_attempt_at` NULL, out of every claim's index range):
            // otherwise every claim would step over the whole backlog of a dead endpoint,
            // and delivery to every other endpoint would slow down as that backlog grew.
            // Each is written here once, when it falls due: a failed probe leaves the
            // backlog where it is (rescheduling it at every cool-down rewrote all of it on
            // the one writer, 0.6 s for 77,000 rows). Enabling the endpoint makes them due;
            // the probe's success, a window at a time.
            // (A lease that ran out stays, so that its attempt's late success still lands;
            // at most 10,000 at a time, the rest at the next check.)
            sqlx::query(
                "UPDATE deliveries SET next_attempt_at = NULL WHERE id IN ( \
                   SELECT d.id FROM deliveries d \
                   WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND d.endpoint_id IN \
                     (SELECT id FROM endpoints WHERE enabled = 0 \
                      OR (breaker_state <> 'closed' AND breaker_until > ?1)) \
                   LIMIT 10000)",
            )
            .bind(ms(now))
            .execute(&self.writer)
            .await
            .map_err(db)?;
            self.park_ordered(now).await?;
            super::sql::release_recovered(self, now, &self.recovering).await?;
            // (A parked delivery counts when it is its key's turn: one waiting behind a
            // blocked key would turn the breaker half-open with nothing to probe.)
            sqlx::query_as(&format!(
                "UPDATE endpoints SET breaker_state = 'half_open', breaker_until = ? \
             WHERE enabled = 1 AND breaker_state <> 'closed' AND breaker_until <= ? \
             AND EXISTS (SELECT 1 FROM deliveries d WHERE d.endpoint_id = endpoints.id \
                         AND d.status = 'pending' \
                         AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?) \
                         AND {IN_ORDER}) \
             RETURNING id"
            ))
            .bind(ms(lease_until))
            .bind(ms(now))
            .bind(ms(now))
            .fetch_all(&self.writer)
            .await
            .map_err(db)?
        };
        let mut claimed: Vec<DeliveryRow> = Vec::new();
        for (endpoint_id,) in &probing {
            let probe: Option<DeliveryRow> = sqlx::query_as(&format!(
                "UPDATE deliveries SET next_attempt_at = ?, lease_id = ? WHERE id = ( \
                   SELECT d.id FROM deliveries d WHERE d.endpoint_id = ? AND d.status = 'pending' \
                   AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= ?) AND {IN_ORDER} \
                   ORDER BY d.next_attempt_at LIMIT 1) \
                 RETURNING {delivery_columns}",
                delivery_columns = columns(Dialect::Sqlite).delivery
            ))
            .bind(ms(lease_until))
            .bind(lease_id)
            .bind(endpoint_id)
            .bind(ms(now))
            .fetch_optional(&self.writer)
            .await
            .map_err(db)?;
            claimed.extend(probe);
        }
        // One statement, atomic on its own: the only work the claim puts on the writer.
        // Fair between tenants: each tenant's first few due deliveries (read from the
        // per-tenant index, so a tenant's backlog costs nothing to the others; a tenant with
        // no room left is not read at all), then round-robin: every tenant's oldest, then
        // every tenant's second, …
        let rest = i64::from(limit).saturating_sub(claimed.len() as i64).max(0);
        let per_tenant = i64::from(share.per_tenant(limit));
        let (room_tenants, room) = share.room(limit);
        let flowing: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "UPDATE deliveries SET next_attempt_at = ?1, lease_id = ?2 WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT c.id, c.next_attempt_at, r.room, row_number() OVER \
                   (PARTITION BY c.tenant_id ORDER BY c.next_attempt_at) AS rn \
                 FROM (SELECT t.id, coalesce(x.room, ?4) AS room FROM tenants t \
                       LEFT JOIN (SELECT a.value AS tenant_id, b.value AS room \
                                  FROM json_each(?5) a JOIN json_each(?6) b ON a.key = b.key) x \
                       ON x.tenant_id = t.id) r \
                 JOIN deliveries c ON r.room > 0 AND c.id IN ( \
                   SELECT d.id FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id \
                   WHERE d.tenant_id = r.id AND d.status = 'pending' AND d.next_attempt_at <= ?3 \
                   AND e.enabled = 1 AND e.breaker_state = 'closed' AND {IN_ORDER} \
                   ORDER BY d.next_attempt_at LIMIT ?4)) \
               WHERE rn <= room ORDER BY rn, next_attempt_at LIMIT ?7) \
             RETURNING {delivery_columns}",
            delivery_columns = columns(Dialect::Sqlite).delivery
        ))
        .bind(ms(lease_until))
        .bind(lease_id)
        .bind(ms(now))
        .bind(per_tenant)
        .bind(to_json(&room_tenants)?)
        .bind(to_json(&room)?)
        .bind(rest)
        .fetch_all(&self.writer)
        .await
        .map_err(db)?;
        claimed.extend(flowing);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Events never change and endpoints are read as they are now: readers suffice,
        // and the single writer stays free.
        let event_ids: Vec<&String> = claimed.iter().map(|d| &d.event_id).collect();
        let endpoint_ids: Vec<&String> = claimed.iter().map(|d| &d.endpoint_id).collect();
        let events_sql = format!(
            "SELECT {event_columns} FROM events WHERE id IN (SELECT value FROM json_each(?))",
            event_columns = columns(Dialect::Sqlite).event
        );
        let endpoints_sql = format!(
            "SELECT {endpoint_columns} FROM endpoints WHERE id IN (SELECT value FROM json_each(?))",
            endpoint_columns = columns(Dialect::Sqlite).endpoint
        );
        let (events, endpoints) = tokio::try_join!(
            sqlx::query_as::<_, EventRow>(&events_sql)
                .bind(to_json(&event_ids)?)
                .fetch_all(&self.reader),
            sqlx::query_as::<_, EndpointRow>(&endpoints_sql)
                .bind(to_json(&endpoint_ids)?)
                .fetch_all(&self.reader),
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
        // Deliveries waiting for an earlier one of their key are not due. An open
        // breaker's endpoint with a backlog held unscheduled is due when its cool-down ends.
        let row: (Option<i64>,) = sqlx::query_as(&format!(
            "SELECT MIN(t) FROM ( \
               SELECT MIN(d.next_attempt_at) AS t FROM deliveries d \
               JOIN endpoints e ON e.id = d.endpoint_id \
               WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND e.enabled = 1 \
               AND e.breaker_state = 'closed' AND {IN_ORDER} \
               UNION ALL \
               SELECT MIN(CASE WHEN EXISTS (SELECT 1 FROM deliveries d \
                   WHERE d.endpoint_id = e.id AND d.status = 'pending' \
                   AND d.next_attempt_at IS NULL AND {IN_ORDER}) THEN e.breaker_until \
                 ELSE max(e.breaker_until, (SELECT MIN(d.next_attempt_at) FROM deliveries d \
                   WHERE d.endpoint_id = e.id AND d.status = 'pending')) END) \
               FROM endpoints e WHERE e.enabled = 1 AND e.breaker_state <> 'closed')"
        ))
        .bind(ms(horizon))
        .fetch_one(&self.reader)
        .await
        .map_err(db)?;
        Ok(self.recovering.next_due(row.0.map(from_millis)))
    }
}

#[async_trait]
impl SqlStore for SqliteStore {
    fn pools(&self) -> Pools<'_> {
        Pools::Sqlite(Db {
            reader: &self.reader,
            writer: &self.writer,
            dialect: Dialect::Sqlite,
        })
    }

    fn sealer(&self) -> &super::sealed::Sealer {
        &self.sealer
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
        let attempts: Vec<serde_json::Value> = completions
            .iter()
            .map(|c| {
                let a = &c.attempt;
                serde_json::json!([
                    a.id,
                    a.delivery_id,
                    a.attempt_number,
                    ms(a.started_at),
                    a.duration_ms,
                    a.status_code,
                    a.response.as_deref().map(storable),
                    a.error.as_deref().map(storable),
                    a.outcome.as_str(),
                    a.next_attempt_at.map(ms)
                ])
            })
            .collect();
        let updates: Vec<serde_json::Value> = completions
            .iter()
            .map(|c| {
                let a = &c.attempt;
                let finished = ms(a.started_at) + i64::try_from(a.duration_ms).unwrap_or(0);
                serde_json::json!([
                    c.delivery_id,
                    c.lease_id,
                    c.status.as_str(),
                    c.next_attempt_at.map(ms),
                    a.error.as_deref().map(storable),
                    finished
                ])
            })
            .collect();
        // The endpoints' breakers, moved on by this batch's outcomes: a last success resets
        // one (a no-op write when it is already closed), a last failure needs its state.
        let (reset, read) = super::breaker_plan(completions);
        let (endpoint_stats, minute_stats) = ops::stats_params(stats)?;
        let mut tx = self.writer.begin().await.map_err(db)?;
        // What every batch writes, in one round trip to SQLite's thread.
        let now = ms(domain::now());
        let reset = to_json(&reset)?;
        sqlx::query(&COMPLETE)
            .bind(to_json(&attempts)?)
            .bind(to_json(&updates)?)
            .bind(now)
            .bind(now)
            .bind(&reset)
            .bind(now)
            .bind(&reset)
            .bind(&reset)
            .bind(endpoint_stats)
            .bind(minute_stats)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let mut current: HashMap<String, Breaker> = HashMap::new();
        if !read.is_empty() {
            let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
                "SELECT {endpoint_columns} FROM endpoints WHERE id IN (SELECT value FROM json_each(?))", endpoint_columns = columns(Dialect::Sqlite).endpoint))
            .bind(to_json(&read)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            current = collect::<_, Endpoint>(rows)?
                .into_iter()
                .map(|e| (e.id, e.breaker))
                .collect();
        }
        for (id, b, disable) in super::breaker_updates(completions, &current, policy) {
            if let Some(reason) = &disable {
                audit_disable(&mut tx, &id, reason).await?;
            }
            sqlx::query(
                "UPDATE endpoints SET breaker_state = ?, consecutive_failures = ?, \
                 breaker_until = ?, failing_since = ?, \
                 enabled = CASE WHEN ? IS NULL THEN enabled ELSE 0 END, \
                 disabled_reason = COALESCE(?, disabled_reason) WHERE id = ?",
            )
            .bind(b.state.as_str())
            .bind(i64::from(b.consecutive_failures))
            .bind(b.open_until.map(ms))
            .bind(b.failing_since.map(ms))
            .bind(&disable)
            .bind(&disable)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        for c in completions {
            if let Some(reason) = c.disable_endpoint.as_deref().map(storable) {
                audit_disable(&mut tx, &c.endpoint_id, &reason).await?;
                sqlx::query(
                    "UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? \
                     WHERE id = ?",
                )
                .bind(reason.into_owned())
                .bind(ms(crate::domain::now()))
                .bind(&c.endpoint_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        let ordered = super::ordered_ids(completions);
        if !ordered.is_empty() {
            release_ordered(&mut tx, &ordered, crate::domain::now()).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }
}
