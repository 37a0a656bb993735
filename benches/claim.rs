//! Claim latency with an empty history versus 1,000,000 finished deliveries, on SQLite and
//! PostgreSQL: the partial index on pending deliveries should keep it flat. Then with a held
//! backlog as well: pending deliveries, due and older than every other, that no claim may
//! take (those of a disabled endpoint, and those of an ordering key behind a failed head).
//!
//! `cargo bench --bench claim` (env: CLAIM_FINISHED, default 1000000; CLAIM_HELD, held
//! deliveries of each kind, default 100000; CLAIM_POSTGRES, default
//! postgres://postgres@127.0.0.1:5432).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Instant};

use hookrelay::{
    domain::{self, new_id, prefix, Endpoint, Event},
    store::{self, DataCheck, Store},
};
use sqlx::Connection;

struct NoCheck;
impl DataCheck for NoCheck {
    fn check(&self, _: &domain::EventType, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

const PENDING: usize = 1000;
const BATCH: u32 = 100;
const ROUNDS: usize = 300;

/// Median and p99 of `ROUNDS` claims of `BATCH` (leases end at once, so the same pending
/// rows are claimable again each round).
async fn measure(store: &dyn Store) -> (f64, f64) {
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let now = domain::now();
        let started = Instant::now();
        let got = store
            .claim(now, now, &new_id("lse"), BATCH, &Default::default())
            .await
            .unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(got.len(), BATCH as usize);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    (times[ROUNDS / 2], times[ROUNDS * 99 / 100])
}

/// Ids of the flowing endpoint, the last event, a disabled endpoint and an ordered one.
async fn setup(store: &dyn Store) -> [String; 4] {
    let new = || {
        Endpoint::new(
            "default",
            "http://127.0.0.1:9/",
            hookrelay::signing::generate_secret(),
        )
    };
    let endpoint = new();
    let mut disabled = new();
    disabled.enabled = false;
    let ordered = new();
    for ep in [&endpoint, &disabled, &ordered] {
        store.create_endpoint(ep, u32::MAX).await.unwrap();
    }
    let mut last = String::new();
    for i in 0..PENDING {
        let event = Event {
            id: new_id(prefix::EVENT),
            tenant_id: "default".into(),
            event_type: "bench.claim".into(),
            data: serde_json::json!({ "i": i }),
            actor: None,
            idempotency_key: None,
            traceparent: None,
            created_at: domain::now(),
            deliver_at: None,
        };
        last = event.id.clone();
        store.ingest(event, 15, Arc::new(NoCheck)).await.unwrap();
    }
    // The ordered endpoint subscribes to nothing that was ingested: its rows come below.
    [endpoint.id, last, disabled.id, ordered.id]
}

/// Runs `sql` on the database at `url`, then vacuums and analyzes PostgreSQL's deliveries
/// (as autovacuum would in time): the figures are of a steady state, not of the bloat this
/// bench's own repeated claims leave behind.
async fn execute(url: &str, sql: &str) {
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
    } else {
        // hookrelay's tables are in its own schema.
        let url = format!("{url}?options[search_path]=hookrelay");
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut c).await.unwrap();
        sqlx::query("VACUUM ANALYZE deliveries")
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// SQL text for a fill: the ids of [`setup`] as quoted literals.
type Fill = dyn Fn(&[String; 4]) -> String;

/// SQL text for a held backlog: of the disabled endpoint (`false`) or of the ordered one.
type Hold = dyn Fn(&[String; 4], bool) -> String;

async fn run(name: &str, url: &str, fill: &Fill, hold: &Hold, finished: usize, held: usize) {
    let store = store::connect(url, 10, &Default::default(), None)
        .await
        .unwrap();
    let ids = setup(store.as_ref()).await;
    let quoted = ids.clone().map(|id| format!("'{id}'"));
    let (empty_p50, empty_p99) = measure(store.as_ref()).await;
    let started = Instant::now();
    execute(url, &fill(&quoted)).await;
    let fill_secs = started.elapsed().as_secs_f64();
    let (full_p50, full_p99) = measure(store.as_ref()).await;
    println!(
        "{name}: claim of {BATCH} among {PENDING} pending: empty history p50 {empty_p50:.2} ms p99 {empty_p99:.2} ms; \
         with {finished} finished p50 {full_p50:.2} ms p99 {full_p99:.2} ms (ratio p50 {:.2}; fill took {fill_secs:.0} s)",
        full_p50 / empty_p50
    );
    for (ordered, what) in [
        (false, "for a disabled endpoint"),
        (true, "behind a failed ordered head"),
    ] {
        execute(url, &hold(&quoted, ordered)).await;
        let (held_p50, held_p99) = measure(store.as_ref()).await;
        println!(
            "{name}: and {held} more held {what}: p50 {held_p50:.2} ms p99 {held_p99:.2} ms \
             (ratio to empty p50 {:.2})",
            held_p50 / empty_p50
        );
    }
}

#[tokio::main]
async fn main() {
    let finished: usize = std::env::var("CLAIM_FINISHED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let held: usize = std::env::var("CLAIM_HELD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("claim.db").display());
    let sqlite_fill = move |[ep, ev, _, _]: &[String; 4]| {
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {finished}) \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, created_at, updated_at) \
             SELECT 'dlv_fill_' || x, 'default', {ev}, {ep}, 'delivered', 1, 15, NULL, 0, 0 FROM c"
        )
    };
    // Due since 1970, before everything else; the ordered head failed and blocks its key.
    let sqlite_hold = move |[_, ev, off, ord]: &[String; 4], ordered: bool| {
        let rows = if ordered {
            format!(
                "SELECT 'dlv_ord_' || x, 'default', {ev}, {ord}, \
                 CASE WHEN x = 0 THEN 'failed' ELSE 'pending' END, 0, 15, 1, 0, 0, 'k', 1 \
                 FROM (SELECT 0 AS x UNION ALL SELECT x FROM c)"
            )
        } else {
            format!(
                "SELECT 'dlv_off_' || x, 'default', {ev}, {off}, 'pending', 0, 15, 1, 0, 0, \
                 NULL, 0 FROM c"
            )
        };
        format!(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {held}) \
             INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, created_at, updated_at, ordering_key, ordering_blocks) \
             {rows}"
        )
    };
    run(
        "sqlite",
        &sqlite,
        &sqlite_fill,
        &sqlite_hold,
        finished,
        held,
    )
    .await;

    let server = std::env::var("CLAIM_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("hr_claim_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let pg_fill = move |[ep, ev, _, _]: &[String; 4]| {
        format!(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, created_at, updated_at) \
             SELECT 'dlv_fill_' || x, 'default', {ev}, {ep}, 'delivered', 1, 15, NULL, \
             to_timestamp(0), to_timestamp(0) FROM generate_series(1, {finished}) x"
        )
    };
    let pg_hold = move |[_, ev, off, ord]: &[String; 4], ordered: bool| {
        let rows = if ordered {
            format!(
                "SELECT 'dlv_ord_' || x, 'default', {ev}, {ord}, \
                 CASE WHEN x = 0 THEN 'failed' ELSE 'pending' END, 0, 15, to_timestamp(0.001), \
                 to_timestamp(0), to_timestamp(0), 'k', true FROM generate_series(0, {held}) x"
            )
        } else {
            format!(
                "SELECT 'dlv_off_' || x, 'default', {ev}, {off}, 'pending', 0, 15, \
                 to_timestamp(0.001), to_timestamp(0), to_timestamp(0), NULL, false \
                 FROM generate_series(1, {held}) x"
            )
        };
        format!(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
             max_attempts, next_attempt_at, created_at, updated_at, ordering_key, ordering_blocks) \
             {rows}"
        )
    };
    run(
        "postgres",
        &format!("{server}/{name}"),
        &pg_fill,
        &pg_hold,
        finished,
        held,
    )
    .await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
