//! hookrelay's connection pool on PostgreSQL: how its connections plan statements, and when
//! a pooled connection is checked before use.
//!
//! **Plans.** sqlx prepares every statement once per connection. After five runs PostgreSQL
//! may switch a prepared statement to a generic plan, made once and kept until the table's
//! statistics change. A generic plan made while hookrelay's tables are nearly empty (a new
//! installation, or one that autovacuum has not analysed yet) reads them with sequential
//! scans and hash joins, and keeps doing so as they grow: in the throughput bench on a fresh
//! database the claim's event read and the completion took 40–75 ms instead of about 1 ms,
//! and delivery fell hundreds of milliseconds behind at 1,000 events/s. So until `events`
//! and `deliveries` have [`GROWN_PAGES`] pages each, every statement is planned with its
//! parameters (`plan_cache_mode = force_custom_plan`). Once they have, new connections use
//! the server's setting again, and older ones are replaced as they are next acquired: a
//! generic plan made on tables of that size uses their indexes, and stays right as they grow.
//! Planning every statement costs about a fifth of the delivery rate at full load on a
//! 2-core machine, which is why it is not kept for good.
//!
//! **Liveness.** A connection that was idle in the pool for less than [`PING_AFTER_IDLE`] is
//! handed out without the round trip of a ping (sqlx pings every one by default, which
//! doubled the round trips of every short statement); one idle for longer is pinged first,
//! so that connections left broken by a PostgreSQL restart are dropped, not used.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    Connection, PgPool,
};
use tokio::sync::watch;
use tracing::{debug, info};

use super::db;
use crate::store::Result;

/// Pages (8 kB each by default) that `events` and `deliveries` must both have before
/// generic plans are let in: 2 MB, a few thousand rows. From about 20 pages on, the
/// planner already prices a sequential scan above the index for hookrelay's lookups by
/// key; 256 leaves a wide margin.
pub(super) const GROWN_PAGES: i64 = 256;

/// How often a process on small tables looks whether they have grown (one cheap
/// statement, until they have).
const GROWTH_CHECK: Duration = Duration::from_secs(1);

/// A pooled connection idle for longer than this is pinged before it is handed out.
const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool and what it needs to let generic plans in later.
pub(super) struct Plans {
    /// The connect options without a plan-cache mode of hookrelay's own.
    server_default: PgConnectOptions,
    /// When generic plans were let in; connections older than that are replaced.
    since: Arc<OnceLock<Instant>>,
}

/// Opens the pool: up to `max_connections` connected with `options`, each planning every
/// statement with its parameters until [`Plans::settle`] lets generic plans in.
pub(super) async fn open(
    options: PgConnectOptions,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<(PgPool, Plans)> {
    let since: Arc<OnceLock<Instant>> = Arc::default();
    let replaced = since.clone();
    let pool = PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            // Connected before generic plans were let in: closed, and another taken.
            let stale = replaced.get().is_some_and(|at| meta.age > at.elapsed());
            let ping = meta.idle_for >= PING_AFTER_IDLE;
            Box::pin(async move {
                if stale {
                    return Ok(false);
                }
                if ping {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(
            options
                .clone()
                .options([("plan_cache_mode", "force_custom_plan")]),
        )
        .await
        .map_err(db)?;
    Ok((
        pool,
        Plans {
            server_default: options,
            since,
        },
    ))
}

impl Plans {
    /// Lets generic plans in once `events` and `deliveries` both have `min_pages` pages;
    /// true when they are in (now or before).
    pub(super) async fn settle(&self, pool: &PgPool, min_pages: i64) -> Result<bool> {
        if self.since.get().is_some() {
            return Ok(true);
        }
        let pages: i64 = sqlx::query_scalar(
            "SELECT least(pg_relation_size('events'), pg_relation_size('deliveries')) \
                    / current_setting('block_size')::int8",
        )
        .fetch_one(pool)
        .await
        .map_err(db)?;
        if pages < min_pages {
            return Ok(false);
        }
        pool.set_connect_options(self.server_default.clone());
        let _ = self.since.set(Instant::now());
        info!(pages, "tables have grown: statements may use generic plans");
        Ok(true)
    }

    /// Checks every [`GROWTH_CHECK`] until the tables have grown or `stop` is dropped.
    pub(super) fn watch(self, pool: PgPool, mut stop: watch::Receiver<()>) {
        tokio::spawn(async move {
            loop {
                match self.settle(&pool, GROWN_PAGES).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => debug!(error = %e, "checking the tables' size failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(GROWTH_CHECK) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
