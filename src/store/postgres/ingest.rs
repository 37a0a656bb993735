//! Ingest on PostgreSQL with group commit: ingests that arrive while a batch is being
//! written go into the next one, so many events share one write statement (one WAL flush)
//! instead of each paying its own commit.
//!
//! A batch is a few reads, run side by side on pooled connections, and one write
//! statement, atomic on its own: the events with `ON CONFLICT DO NOTHING` on the
//! idempotency index, their deliveries (only for the events actually inserted, and only to
//! endpoints still there, held in KEY SHARE mode until commit), and one draw from the
//! wake-up sequence. Every ingest is answered after that statement has committed. A batch
//! that fails as a whole (a tenant deleted meanwhile, a value PostgreSQL refuses) is
//! written again one event at a time, so only the faulty event fails.
//!
//! Idempotency stays exact under races: a key already stored is answered from the store; two
//! ingests with one key in the same batch get one event; a concurrent batch in another
//! process that wins the key makes this insert wait for its commit, and this one then
//! answers with the winner's event.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use sqlx::PgPool;
use tokio::sync::{mpsc, Mutex};

use super::{
    collect, db, distinct, ingest_error, ms, DeliveryRow, EndpointRow, EventRow, EventTypeRow,
    INGEST_RACE_RETRIES,
};
use crate::store::sql::{catalog::columns, Dialect};
use crate::{
    domain::{self, Delivery, Endpoint, Event, EventType},
    store::{rows::corrupt, IngestJob, Ingested, Result, StoreError},
};

/// Most events written by one statement.
const INGEST_BATCH: usize = 256;

/// Batches written at the same time, each on a connection of its own: while one waits
/// for its commit, the next one is read and sent.
const INGEST_WRITERS: usize = 2;

/// Starts the batch writers on `pool`; they stop when the returned sender (and every
/// clone of it) is dropped.
pub(super) fn start(pool: PgPool) -> mpsc::Sender<IngestJob> {
    let (tx, rx) = mpsc::channel(INGEST_BATCH * 4);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..INGEST_WRITERS {
        tokio::spawn(writer(pool.clone(), rx.clone()));
    }
    tx
}

/// Takes whatever has arrived (up to a batch) and writes it, until the channel closes.
async fn writer(pool: PgPool, rx: Arc<Mutex<mpsc::Receiver<IngestJob>>>) {
    let mut jobs = Vec::with_capacity(INGEST_BATCH);
    loop {
        // The lock is held only while waiting: the other writer takes the next batch
        // while this one is being written.
        let received = rx.lock().await.recv_many(&mut jobs, INGEST_BATCH).await;
        if received == 0 {
            return;
        }
        let batch = std::mem::take(&mut jobs);
        let results = ingest_jobs(&pool, &batch).await;
        for (job, result) in batch.into_iter().zip(results) {
            // The request may have gone away; its event is committed all the same.
            let _ = job.reply.send(result);
        }
    }
}

/// Writes `jobs`, isolating failures: one result per job, in order.
async fn ingest_jobs(pool: &PgPool, jobs: &[IngestJob]) -> Vec<Result<Ingested>> {
    match write_batch(pool, jobs).await {
        Ok(results) => {
            let mut out = Vec::with_capacity(jobs.len());
            for (job, result) in jobs.iter().zip(results) {
                out.push(match result {
                    Ok(Some(done)) => Ok(done),
                    // Lost an idempotency race to an event that is gone again.
                    Ok(None) => ingest_one(pool, job).await,
                    Err(e) => Err(e),
                });
            }
            out
        }
        // PostgreSQL cannot be reached: every job fails at once (one at a time, each would
        // wait for a connection in turn).
        Err(StoreError::Unavailable(e)) => {
            let message = e.to_string();
            jobs.iter()
                .map(|_| {
                    let again =
                        std::io::Error::new(std::io::ErrorKind::NotConnected, message.clone());
                    Err(StoreError::Unavailable(sqlx::Error::Io(again)))
                })
                .collect()
        }
        Err(_) if jobs.len() > 1 => {
            let mut out = Vec::with_capacity(jobs.len());
            for job in jobs {
                out.push(ingest_one(pool, job).await);
            }
            out
        }
        Err(e) => vec![Err(e)],
    }
}

/// One job on its own, run again while it loses idempotency races to events deleted in
/// between.
async fn ingest_one(pool: &PgPool, job: &IngestJob) -> Result<Ingested> {
    for _ in 0..INGEST_RACE_RETRIES {
        let mut results = write_batch(pool, std::slice::from_ref(job)).await?;
        match results.pop() {
            Some(Ok(Some(done))) => return Ok(done),
            Some(Ok(None)) => continue,
            Some(Err(e)) => return Err(e),
            None => return Err(corrupt("ingest", "no result for the event")),
        }
    }
    Err(StoreError::Conflict(format!(
        "event with idempotency key {:?}",
        job.event.idempotency_key.as_deref().unwrap_or_default()
    )))
}

/// `(tenant, idempotency key)`.
type Key = (String, String);

fn key_of(e: &Event) -> Option<Key> {
    Some((e.tenant_id.clone(), e.idempotency_key.clone()?))
}

/// Writes a batch. The outer error fails the whole batch; an inner one refuses one event;
/// `Ok(None)` is an event that lost an idempotency race to an event deleted since.
async fn write_batch(pool: &PgPool, jobs: &[IngestJob]) -> Result<Vec<Result<Option<Ingested>>>> {
    let tenants = distinct(jobs.iter().map(|j| &j.event.tenant_id));
    let types = distinct(jobs.iter().map(|j| &j.event.event_type));
    let keys: Vec<Key> = {
        let set: HashSet<Key> = jobs.iter().filter_map(|j| key_of(&j.event)).collect();
        set.into_iter().collect()
    };

    // The reads, side by side. The tenants' endpoints are read as they are now: one that a
    // create call returned before this ingest began is among them.
    let (known, event_types, existing, endpoints) = tokio::try_join!(
        async {
            sqlx::query_scalar::<_, String>("SELECT id FROM tenants WHERE id = ANY($1)")
                .bind(&tenants)
                .fetch_all(pool)
                .await
                .map_err(db)
        },
        async {
            sqlx::query_as::<_, EventTypeRow>(&format!(
                "SELECT {event_type_columns} FROM event_types WHERE name = ANY($1)",
                event_type_columns = columns(Dialect::Postgres).event_type
            ))
            .bind(&types)
            .fetch_all(pool)
            .await
            .map_err(db)
        },
        existing_events(pool, &keys),
        async {
            sqlx::query_as::<_, EndpointRow>(&format!(
                "SELECT {endpoint_columns} FROM endpoints \
                 WHERE tenant_id = ANY($1) AND enabled",
                endpoint_columns = columns(Dialect::Postgres).endpoint
            ))
            .bind(&tenants)
            .fetch_all(pool)
            .await
            .map_err(db)
        },
    )?;
    let known: HashSet<String> = known.into_iter().collect();
    let event_types: HashMap<String, EventType> = collect::<_, EventType>(event_types)?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let endpoints: Vec<Endpoint> = collect(endpoints)?;

    // What each job becomes: an answer now, a copy of an earlier job's answer (same key in
    // this batch), or an event to write.
    let mut results: Vec<Option<Result<Option<Ingested>>>> = Vec::with_capacity(jobs.len());
    let mut same_as: Vec<Option<usize>> = vec![None; jobs.len()];
    let mut writing: HashMap<Key, usize> = HashMap::new();
    let mut fanned: Vec<(usize, Vec<Delivery>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let e = &job.event;
        let key = key_of(e);
        if !known.contains(&e.tenant_id) {
            results.push(Some(Err(StoreError::UnknownTenant(e.tenant_id.clone()))));
            continue;
        }
        if let Some(first) = key.as_ref().and_then(|k| existing.get(k)) {
            results.push(Some(Ok(Some(first.clone()))));
            continue;
        }
        if let Some(first) = key.as_ref().and_then(|k| writing.get(k)) {
            same_as[i] = Some(*first);
            results.push(None);
            continue;
        }
        let refused = match event_types.get(&e.event_type) {
            Some(t) => job
                .check
                .check(t, &e.data)
                .err()
                .map(StoreError::InvalidData),
            None if !job.check.accepts_unknown_types() => {
                Some(StoreError::UnknownEventType(e.event_type.clone()))
            }
            None => None,
        };
        if let Some(refused) = refused {
            results.push(Some(Err(refused)));
            continue;
        }
        if let Some(k) = key {
            writing.insert(k, i);
        }
        fanned.push((i, domain::fan_out(e, &endpoints, job.default_max_attempts)));
        results.push(None);
    }

    if !fanned.is_empty() {
        let (inserted, delivered) = write(pool, jobs, &fanned).await?;
        let mut lost: Vec<usize> = Vec::new();
        for (i, mut deliveries) in fanned {
            let event = &jobs[i].event;
            if inserted.contains(&event.id) {
                deliveries.retain(|d| delivered.contains(&d.id));
                results[i] = Some(Ok(Some(Ingested::Created(event.clone(), deliveries))));
            } else {
                lost.push(i);
            }
        }
        if !lost.is_empty() {
            // Another process's ingest with the same key committed first (this insert
            // waited for it): answer with its event.
            let keys: Vec<Key> = lost
                .iter()
                .filter_map(|i| key_of(&jobs[*i].event))
                .collect();
            let winners = existing_events(pool, &keys).await?;
            for i in lost {
                let winner = key_of(&jobs[i].event).and_then(|k| winners.get(&k).cloned());
                results[i] = Some(Ok(winner));
            }
        }
    }

    let mut out = Vec::with_capacity(jobs.len());
    for (i, result) in results.iter_mut().enumerate() {
        let answer = match (result.take(), same_as[i]) {
            (Some(r), _) => r,
            (None, Some(first)) => match out.get(first) {
                Some(Ok(Some(Ingested::Created(e, ds) | Ingested::Existing(e, ds)))) => {
                    Ok(Some(Ingested::Existing(e.clone(), ds.clone())))
                }
                // The first of the key is gone again: this one is written on its own.
                _ => Ok(None),
            },
            (None, None) => return Err(corrupt("ingest", "an event without an answer")),
        };
        out.push(answer);
    }
    Ok(out)
}

/// The events stored under `keys`, with their deliveries, by key.
async fn existing_events(pool: &PgPool, keys: &[Key]) -> Result<HashMap<Key, Ingested>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let (tenants, idempotency): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip();
    let events: Vec<Event> = collect(
        sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {event_columns} FROM events WHERE (tenant_id, idempotency_key) IN \
             (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            event_columns = columns(Dialect::Postgres).event
        ))
        .bind(&tenants)
        .bind(&idempotency)
        .fetch_all(pool)
        .await
        .map_err(db)?,
    )?;
    if events.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    // Committed with their events, so none is missing.
    let deliveries: Vec<Delivery> = collect(
        sqlx::query_as::<_, DeliveryRow>(&format!(
            "SELECT {delivery_columns} FROM deliveries WHERE event_id = ANY($1) ORDER BY id",
            delivery_columns = columns(Dialect::Postgres).delivery
        ))
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(db)?,
    )?;
    let mut by_event: HashMap<&str, Vec<Delivery>> = HashMap::new();
    for d in &deliveries {
        by_event
            .entry(d.event_id.as_str())
            .or_default()
            .push(d.clone());
    }
    Ok(events
        .into_iter()
        .filter_map(|e| {
            let ds = by_event.remove(e.id.as_str()).unwrap_or_default();
            Some((key_of(&e)?, Ingested::Existing(e, ds)))
        })
        .collect())
}

/// The write statement of a batch: the ids of the events and deliveries it inserted.
async fn write(
    pool: &PgPool,
    jobs: &[IngestJob],
    fanned: &[(usize, Vec<Delivery>)],
) -> Result<(HashSet<String>, HashSet<String>)> {
    // Keyed events go in (tenant, key) order, so that two batches racing for the same keys
    // wait for each other instead of deadlocking.
    let mut order: Vec<&Event> = fanned.iter().map(|(i, _)| &jobs[*i].event).collect();
    order.sort_by(|a, b| {
        (&a.tenant_id, &a.idempotency_key).cmp(&(&b.tenant_id, &b.idempotency_key))
    });
    let col = |f: &dyn Fn(&Event) -> Option<String>| order.iter().map(|e| f(e)).collect();
    let ids: Vec<Option<String>> = col(&|e| Some(e.id.clone()));
    let tenants: Vec<Option<String>> = col(&|e| Some(e.tenant_id.clone()));
    let types: Vec<Option<String>> = col(&|e| Some(e.event_type.clone()));
    let data: Vec<Option<String>> = col(&|e| Some(e.data.to_string()));
    let actors: Vec<Option<String>> = col(&|e| e.actor.clone());
    let keys: Vec<Option<String>> = col(&|e| e.idempotency_key.clone());
    let traces: Vec<Option<String>> = col(&|e| e.traceparent.clone());
    let created: Vec<i64> = order.iter().map(|e| ms(e.created_at)).collect();
    let deliver_at: Vec<Option<i64>> = order.iter().map(|e| e.deliver_at.map(ms)).collect();

    // Deliveries in the order their events arrived (their `seq` orders an ordering key).
    let all: Vec<&Delivery> = fanned.iter().flat_map(|(_, ds)| ds).collect();
    let d_ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    let d_events: Vec<&str> = all.iter().map(|d| d.event_id.as_str()).collect();
    let d_endpoints: Vec<&str> = all.iter().map(|d| d.endpoint_id.as_str()).collect();
    let d_status: Vec<&str> = all.iter().map(|d| d.status.as_str()).collect();
    let d_attempts: Vec<i64> = all.iter().map(|d| i64::from(d.attempts)).collect();
    let d_max: Vec<i64> = all.iter().map(|d| i64::from(d.max_attempts)).collect();
    let d_next: Vec<Option<i64>> = all.iter().map(|d| d.next_attempt_at.map(ms)).collect();
    let d_created: Vec<i64> = all.iter().map(|d| ms(d.created_at)).collect();
    let d_updated: Vec<i64> = all.iter().map(|d| ms(d.updated_at)).collect();
    let d_keys: Vec<Option<&str>> = all.iter().map(|d| d.ordering_key.as_deref()).collect();
    let d_blocks: Vec<bool> = all.iter().map(|d| d.ordering_blocks).collect();

    // - A key stored by a concurrent ingest makes its event insert wait for that ingest;
    //   if it commits, the event is left out here (and its deliveries with it).
    // - Endpoints deleted since they were read are left out; the others are held (KEY
    //   SHARE, as a foreign key would) until commit, so a deleted endpoint never gets a
    //   delivery after `delete_endpoint` cancelled its pending ones.
    // - A tenant deleted since it was read fails the event's foreign key (and the batch).
    // - The wake-up sequence moves when deliveries were made.
    let (inserted, delivered, _woke): (Vec<String>, Vec<String>, i64) = sqlx::query_as(
        "WITH ev AS ( \
           INSERT INTO events (id, tenant_id, type, data, actor, idempotency_key, \
                               traceparent, created_at, deliver_at) \
           SELECT e.id, e.tenant_id, e.type, e.data::json, e.actor, e.idempotency_key, \
                  e.traceparent, to_timestamp(e.created_at / 1000.0), \
                  to_timestamp(e.deliver_at / 1000.0) \
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                       $6::text[], $7::text[], $8::int8[], $9::int8[]) \
                AS e(id, tenant_id, type, data, actor, idempotency_key, traceparent, \
                     created_at, deliver_at) \
           ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL \
           DO NOTHING \
           RETURNING id, tenant_id \
         ), targets AS ( \
           SELECT d.*, ev.tenant_id \
           FROM UNNEST($10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], \
                       $15::int8[], $16::int8[], $17::int8[], $18::int8[], $19::text[], \
                       $20::bool[]) WITH ORDINALITY \
                AS d(id, event_id, endpoint_id, status, attempts, max_attempts, \
                     next_attempt_at, created_at, updated_at, ordering_key, ordering_blocks, n) \
                JOIN ev ON ev.id = d.event_id \
                JOIN endpoints e ON e.id = d.endpoint_id \
           FOR KEY SHARE OF e \
         ), dl AS ( \
           INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
                                   max_attempts, next_attempt_at, created_at, updated_at, \
                                   ordering_key, ordering_blocks) \
           SELECT t.id, t.tenant_id, t.event_id, t.endpoint_id, t.status, t.attempts, \
                  t.max_attempts, to_timestamp(t.next_attempt_at / 1000.0), \
                  to_timestamp(t.created_at / 1000.0), to_timestamp(t.updated_at / 1000.0), \
                  t.ordering_key, t.ordering_blocks \
           FROM targets t ORDER BY t.n \
           RETURNING id \
         ), woke AS ( \
           SELECT nextval('hookrelay_wake_seq') WHERE EXISTS (SELECT 1 FROM dl) \
         ) \
         SELECT ARRAY(SELECT id FROM ev), ARRAY(SELECT id FROM dl), \
                (SELECT count(*) FROM woke)",
    )
    .bind(&ids)
    .bind(&tenants)
    .bind(&types)
    .bind(&data)
    .bind(&actors)
    .bind(&keys)
    .bind(&traces)
    .bind(&created)
    .bind(&deliver_at)
    .bind(&d_ids)
    .bind(&d_events)
    .bind(&d_endpoints)
    .bind(&d_status)
    .bind(&d_attempts)
    .bind(&d_max)
    .bind(&d_next)
    .bind(&d_created)
    .bind(&d_updated)
    .bind(&d_keys)
    .bind(&d_blocks)
    .fetch_one(pool)
    .await
    .map_err(|e| ingest_error(e, order.first().map_or("", |e| e.tenant_id.as_str())))?;
    Ok((
        inserted.into_iter().collect(),
        delivered.into_iter().collect(),
    ))
}
