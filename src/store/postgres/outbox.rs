//! The outbox of `dispatch_webhook()`: applications' transactions write one narrow row
//! each into `hookrelay_outbox`; hookrelay fans those rows out into events and deliveries,
//! in batches, moments after they commit (see migration 0033).
//!
//! A relay is one statement per batch: it deletes the oldest committed outbox rows and
//! writes their events and their deliveries (the same fan-out as `dispatch_webhook()` did
//! in the application's transaction: event-type patterns, payload filters, ordering keys,
//! the endpoints held in KEY SHARE mode until commit), so a row is fanned out exactly once,
//! even across a `kill -9`. One relay runs at a time in the whole database (an advisory
//! lock), in outbox order, so the deliveries of one ordering key keep the order in which
//! their events were written.

use sqlx::{Connection, PgConnection, PgPool};

use super::db;
use crate::store::Result;

/// Most outbox rows fanned out by one statement.
const RELAY_BATCH: i64 = 1000;

/// The advisory lock that lets one relay run at a time (any value unlikely to collide with
/// an application's own advisory locks: "hookrlay" in ASCII).
const RELAY_LOCK: i64 = 0x686f_6f6b_726c_6179;

/// One batch: the outbox rows taken, and the deliveries made.
const RELAY_SQL: &str = "WITH batch AS ( \
       DELETE FROM hookrelay_outbox o WHERE o.seq IN ( \
         SELECT x.seq FROM hookrelay_outbox x ORDER BY x.seq LIMIT $1 FOR UPDATE SKIP LOCKED) \
       RETURNING o.* \
     ), live AS ( \
       SELECT b.* FROM batch b WHERE EXISTS (SELECT 1 FROM tenants t WHERE t.id = b.tenant_id) \
     ), ev AS ( \
       INSERT INTO events (id, tenant_id, type, data, actor, traceparent, created_at) \
       SELECT l.id, l.tenant_id, l.type, l.data::json, l.actor, \
              coalesce(l.traceparent, '00-' || replace(gen_random_uuid()::text, '-', '') || '-' \
                       || left(replace(gen_random_uuid()::text, '-', ''), 16) || '-01'), \
              l.created_at \
       FROM live l ORDER BY l.seq \
       RETURNING 1 \
     ), targets AS ( \
       SELECT l.seq, l.id AS event_id, l.type, l.actor, l.data, l.created_at, ep.id AS endpoint_id, \
              ep.tenant_id, ep.max_attempts, ep.routing \
       FROM live l JOIN endpoints ep ON ep.tenant_id = l.tenant_id \
       WHERE ep.enabled \
         AND (jsonb_array_length(ep.event_types) = 0 \
              OR EXISTS ( \
                SELECT 1 FROM jsonb_array_elements_text(ep.event_types) AS f(pattern) \
                WHERE f.pattern = l.type \
                   OR (right(f.pattern, 1) = '*' AND starts_with(l.type, left(f.pattern, -1))))) \
         AND (ep.routing IS NULL \
              OR hookrelay_filter_matches(ep.routing::jsonb -> 'filter', l.type, l.actor, l.id, l.data)) \
       FOR KEY SHARE OF ep \
     ), dl AS ( \
       INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
                               max_attempts, next_attempt_at, created_at, updated_at, \
                               ordering_key, ordering_blocks) \
       SELECT hookrelay_ulid('dlv', t.created_at), t.tenant_id, t.event_id, t.endpoint_id, \
              'pending', 0, \
              coalesce(t.max_attempts, \
                       (SELECT s.value::bigint FROM settings s WHERE s.key = 'default_max_attempts'), \
                       15), \
              t.created_at, t.created_at, t.created_at, \
              CASE WHEN t.routing IS NOT NULL THEN \
                hookrelay_ordering_key(t.routing::jsonb, t.type, t.actor, t.event_id, t.data) END, \
              t.routing IS NULL \
                OR coalesce(t.routing::jsonb -> 'ordering' ->> 'on_failure', 'block') = 'block' \
       FROM targets t ORDER BY t.seq, t.endpoint_id \
       RETURNING 1 \
     ), woke AS ( \
       SELECT nextval('hookrelay_wake_seq') WHERE EXISTS (SELECT 1 FROM dl) \
     ) \
     SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM dl), (SELECT count(*) FROM woke)";

/// Whether to wait for a relay running elsewhere (a read that must see every committed
/// event) or leave the work to it (the background relay).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    Yes,
    No,
}

/// Fans out the committed outbox rows, batch after batch, until none is left (or, with
/// `Wait::No`, at once if another relay is running). Returns how many deliveries it made.
pub(super) async fn relay(conn: &mut PgConnection, wait: Wait) -> Result<u64> {
    let mut made = 0u64;
    loop {
        let mut tx = conn.begin().await.map_err(db)?;
        let locked: bool = match wait {
            Wait::Yes => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(RELAY_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                true
            }
            Wait::No => sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(RELAY_LOCK)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?,
        };
        if !locked {
            return Ok(made);
        }
        let (taken, deliveries, _woke): (i64, i64, i64) = sqlx::query_as(RELAY_SQL)
            .bind(RELAY_BATCH)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        made += u64::try_from(deliveries).unwrap_or(0);
        if taken < RELAY_BATCH {
            return Ok(made);
        }
    }
}

/// Fans out whatever the outbox holds before a read, so that an event committed by
/// `dispatch_webhook()` is visible as soon as its transaction has committed. When the
/// outbox is empty (the usual case) this is one cheap query.
pub(super) async fn settle(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await.map_err(db)?;
    let waiting: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hookrelay_outbox)")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if waiting {
        relay(&mut conn, Wait::Yes).await?;
    }
    Ok(())
}
