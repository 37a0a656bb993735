//! Reading one endpoint's statistics with 1,000,000 attempts stored, on SQLite and
//! PostgreSQL: the read sums the endpoint's per-minute counters (here a full day of them,
//! from two dispatcher processes, beside other endpoints' days), never the attempt log, so
//! it should stay in the low milliseconds.
//!
//! `cargo bench --bench endpoint_stats` (env: STATS_ATTEMPTS, default 1000000;
//! STATS_POSTGRES, default postgres://postgres@127.0.0.1:5432).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use hookrelay::{
    domain::Endpoint,
    ops::endpoint_stats::{report, since_minute},
    store,
};
use sqlx::Connection;

const READS: usize = 200;

/// Runs `sql` with `?1` = now (Unix ms) and `?2` = the endpoint id.
async fn execute(url: &str, sql: &str, now_ms: i64, endpoint: &str) {
    if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(sql)
            .bind(now_ms)
            .bind(endpoint)
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let url = format!("{url}?options[search_path]=hookrelay");
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let sql = sql.replace("?1", "$1").replace("?2", "$2");
        sqlx::query(&sql)
            .bind(now_ms)
            .bind(endpoint)
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("VACUUM ANALYZE").execute(&mut c).await.unwrap();
    }
}

async fn run(name: &str, url: &str, attempts: usize) {
    let store = store::connect(url, 10, &Default::default(), None)
        .await
        .unwrap();
    let endpoint = Endpoint::new(
        "default",
        "http://127.0.0.1:9/",
        hookrelay::signing::generate_secret(),
    );
    store.create_endpoint(&endpoint, 100).await.unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let pg = !url.starts_with("sqlite");
    let (series, day, pad, ts) = if pg {
        (
            format!("WITH n(i) AS (SELECT generate_series(1, {attempts}))"),
            "WITH m(i) AS (SELECT generate_series(0, 1439))",
            "lpad(i::text, 26, '0')",
            "to_timestamp(?1 / 1000.0)",
        )
    } else {
        (
            format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {attempts})"),
            "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < 1439)",
            "printf('%026d', i)",
            "?1",
        )
    };
    let buckets: Vec<String> = (0..17).map(|i| format!("e2e_b{i:02}")).collect();
    let started = Instant::now();
    for sql in [
        format!(
            "{series} INSERT INTO events (id, tenant_id, type, data, created_at) \
             SELECT 'evt_' || {pad}, 'default', 'bulk.x', '{{}}', {ts} FROM n"
        ),
        format!(
            "{series} INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, \
             attempts, max_attempts, created_at, updated_at) \
             SELECT 'dlv_' || {pad}, 'default', 'evt_' || {pad}, ?2, 'delivered', 1, 5, \
                    {ts}, {ts} FROM n"
        ),
        format!(
            "{series} INSERT INTO attempts (id, delivery_id, attempt_number, started_at, \
             duration_ms, status_code, outcome) \
             SELECT 'att_' || {pad}, 'dlv_' || {pad}, 1, {ts}, 12, 200, 'success' FROM n"
        ),
        // A full day of counters for this endpoint from two processes, and for 50 others.
        format!(
            "{day}, e(id) AS (SELECT ?2 UNION ALL SELECT 'ep_other_' || i FROM m WHERE i < 50), \
             d(id) AS (SELECT 'dsp_a' UNION ALL SELECT 'dsp_b') \
             INSERT INTO endpoint_stats_minutely (endpoint_id, minute, dispatcher, delivered, \
               attempts, attempt_ms, e2e_ms, {b}, last_success_at) \
             SELECT e.id, ?1 / 60000 - m.i, d.id, 10, 10, 120, 300, {ones}, ?1 - m.i * 60000 \
             FROM m, e, d",
            b = buckets.join(", "),
            ones = buckets.iter().map(|_| "1").collect::<Vec<_>>().join(", "),
        ),
    ] {
        execute(url, &sql, now_ms, &endpoint.id).await;
    }
    println!(
        "{name}: {attempts} attempts and 51 endpoints' days of counters written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut times = Vec::with_capacity(READS);
    let mut last = None;
    for _ in 0..READS {
        let now = hookrelay::domain::now();
        let t = Instant::now();
        let history = store
            .endpoint_stats_since(&endpoint.id, since_minute(now))
            .await
            .unwrap();
        let stats = report(&endpoint.id, &history, now);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        last = Some(stats);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let stats = last.unwrap();
    // A full day of counters; the oldest minute may have left the window meanwhile.
    assert!(stats.last_24_hours.attempts >= 1439 * 2 * 10);
    println!(
        "{name}: one endpoint's statistics read in p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({READS} reads)",
        times[READS / 2],
        times[READS * 99 / 100],
        times[READS - 1]
    );
}

#[tokio::main]
async fn main() {
    let attempts: usize = std::env::var("STATS_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("stats.db").display());
    run("sqlite", &sqlite, attempts).await;

    let server = std::env::var("STATS_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("hr_bench_stats_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    run("postgres", &format!("{server}/{name}"), attempts).await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
}
