//! The transactional outbox on PostgreSQL: what `dispatch_webhook()` costs the application
//! that calls it, and how soon an idle dispatcher delivers what it committed.
//!
//! `cargo bench --bench outbox` (env: BENCH_POSTGRES, default
//! postgres://postgres@127.0.0.1:5432, where a fresh database is made and dropped;
//! BENCH_SECONDS per measurement, default 8; BENCH_SAMPLES latency samples, default 300;
//! BENCH_BINARY, the hookrelay binary to run instead of this build's).
//!
//! 1. Write rates, each from 16 and 64 client connections, every figure also as a ratio to
//!    the first one, measured in the same run on the same PostgreSQL:
//!    - a plain single-row insert of the same payload into an ordinary table (autocommit);
//!    - `SELECT dispatch_webhook(…)` on its own (autocommit, one statement like the insert);
//!    - `BEGIN; SELECT dispatch_webhook(…); COMMIT`;
//!    - an application transaction without the outbox (`BEGIN; INSERT …; COMMIT`), and the
//!      same transaction calling `dispatch_webhook()`: the time the call adds.
//!
//!    hookrelay is stopped meanwhile: this measures the caller's side alone.
//! 2. hookrelay starts, fans out and delivers the backlog that phase 1 left (deliveries/s).
//! 3. Commit-to-first-attempt latency with an idle dispatcher: one `dispatch_webhook()`
//!    transaction at a time, 20–60 ms apart; from the commit's return to the receiver's
//!    first byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    process::Child,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::StatusCode, Router};
use rand::Rng;
use sqlx::{Connection, PgConnection};

mod common;
use common::{create_endpoint, env_or, start_hookrelay, PLAIN_TABLE};

/// The payload every writer stores.
const PAYLOAD: &str = r#"{"user_id": "u_42", "community": "rust", "role": "member"}"#;

struct Sink {
    count: AtomicUsize,
    base: Instant,
    /// Sample number → arrival, in microseconds since `base`.
    arrivals: Mutex<HashMap<u64, u64>>,
}

async fn receive(State(sink): State<Arc<Sink>>, body: Bytes) -> StatusCode {
    let now = sink.base.elapsed().as_micros() as u64;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(n) = v["data"]["sample"].as_u64() {
            sink.arrivals.lock().unwrap().entry(n).or_insert(now);
        }
    }
    sink.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// What a writer does in one transaction.
#[derive(Clone, Copy)]
enum Work {
    PlainInsert,
    /// `SELECT dispatch_webhook(…)` on its own: one statement, its own transaction, as the
    /// plain insert is.
    OutboxAutocommit,
    Outbox,
    AppTx,
    AppTxWithOutbox,
}

impl Work {
    fn label(self) -> &'static str {
        match self {
            Work::PlainInsert => "plain insert (autocommit)",
            Work::OutboxAutocommit => "dispatch_webhook() (autocommit)",
            Work::Outbox => "BEGIN; dispatch_webhook(); COMMIT",
            Work::AppTx => "app tx: BEGIN; INSERT; COMMIT",
            Work::AppTxWithOutbox => "app tx + dispatch_webhook()",
        }
    }

    async fn run(self, c: &mut PgConnection) {
        let insert = "INSERT INTO bench_plain (type, data) VALUES ('user.joined', $1::jsonb)";
        let outbox = "SELECT dispatch_webhook('user.joined', $1::jsonb)";
        match self {
            // One statement, its own transaction.
            Work::PlainInsert | Work::OutboxAutocommit => {
                let one = if matches!(self, Work::PlainInsert) {
                    insert
                } else {
                    outbox
                };
                sqlx::query(one)
                    .bind(PAYLOAD)
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
            Work::Outbox | Work::AppTx | Work::AppTxWithOutbox => {
                let mut tx = c.begin().await.unwrap();
                if !matches!(self, Work::Outbox) {
                    sqlx::query(insert)
                        .bind(PAYLOAD)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                if !matches!(self, Work::AppTx) {
                    sqlx::query(outbox)
                        .bind(PAYLOAD)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
        }
    }
}

/// Runs `work` from `clients` connections for `seconds`: (transactions/s, mean ms).
async fn measure(url: &str, work: Work, clients: usize, seconds: u64) -> (f64, f64) {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(PgConnection::connect(url).await.unwrap());
    }
    // Warm up each connection's prepared statements.
    for c in &mut conns {
        work.run(c).await;
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let (mut n, mut busy) = (0u64, Duration::ZERO);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    work.run(&mut c).await;
                    busy += t.elapsed();
                    n += 1;
                }
                (n, busy)
            })
        })
        .collect();
    let (mut n, mut busy) = (0u64, Duration::ZERO);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        n += a;
        busy += b;
    }
    let secs = start.elapsed().as_secs_f64();
    (n as f64 / secs, busy.as_secs_f64() * 1000.0 / n as f64)
}

#[tokio::main]
async fn main() {
    let seconds = env_or("BENCH_SECONDS", 8);
    let samples = env_or("BENCH_SAMPLES", 300);
    let server = std::env::var("BENCH_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
    let name = format!("hr_outbox_{}", std::process::id());
    admin_sql(&server, &format!("CREATE DATABASE {name}")).await;
    let db = format!("{server}/{name}");

    let sink = Arc::new(Sink {
        count: AtomicUsize::new(0),
        base: Instant::now(),
        arrivals: Mutex::new(HashMap::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv_addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(receive).with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The schema and one endpoint, then hookrelay stops: phase 1 measures the callers alone.
    let (mut hookrelay, base) = start(&db);
    let http = reqwest::Client::new();
    create_endpoint(&http, &base, &format!("http://{recv_addr}/hook")).await;
    let _ = hookrelay.kill();
    let _ = hookrelay.wait();
    let mut c = PgConnection::connect(&db).await.unwrap();
    sqlx::query(PLAIN_TABLE).execute(&mut c).await.unwrap();

    println!("phase 1: write rates, {seconds} s each, hookrelay stopped");
    println!(
        "  {:<36} {:>7} {:>11} {:>9} {:>8}",
        "clients / transaction", "clients", "tx/s", "mean ms", "ratio"
    );
    for clients in [16usize, 64] {
        let mut reference = None;
        let mut app_ms = None;
        for work in [
            Work::PlainInsert,
            Work::OutboxAutocommit,
            Work::Outbox,
            Work::AppTx,
            Work::AppTxWithOutbox,
        ] {
            let (rate, mean) = measure(&db, work, clients, seconds).await;
            let plain = *reference.get_or_insert(rate);
            let extra = match (work, app_ms) {
                (Work::AppTx, _) => {
                    app_ms = Some(mean);
                    String::new()
                }
                (Work::AppTxWithOutbox, Some(before)) => {
                    format!("  (+{:.2} ms per transaction)", mean - before)
                }
                _ => String::new(),
            };
            println!(
                "  {:<36} {clients:>7} {rate:>11.0} {mean:>9.2} {:>8.2}{extra}",
                work.label(),
                rate / plain
            );
        }
    }
    // Outbox rows not fanned out yet, and deliveries not made yet or still pending.
    let waiting = "SELECT (SELECT count(*) FROM hookrelay.hookrelay_outbox) \
                   + (SELECT count(*) FROM hookrelay.deliveries WHERE status = 'pending')";
    let backlog: i64 = sqlx::query_scalar(waiting).fetch_one(&mut c).await.unwrap();

    // Phase 2: the backlog drains.
    let before = sink.count.load(Ordering::Relaxed);
    let started = Instant::now();
    let (mut hookrelay, _) = start(&db);
    loop {
        let left: i64 = sqlx::query_scalar(waiting).fetch_one(&mut c).await.unwrap();
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1200),
            "the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained = sink.count.load(Ordering::Relaxed) - before;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "phase 2: {backlog} events left by phase 1, fanned out and delivered by one process (start included)"
    );
    println!(
        "  {:>8.0} deliveries/s ({drained} received in {secs:.1} s)",
        drained as f64 / secs
    );

    // Phase 3: commit-to-first-attempt latency with an idle dispatcher.
    let mut committed = Vec::new();
    for i in 0..samples {
        let pause = rand::thread_rng().gen_range(20..60);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let mut tx = c.begin().await.unwrap();
        sqlx::query(
            "SELECT dispatch_webhook('bench.latency', jsonb_build_object('sample', $1::int8))",
        )
        .bind(i as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        committed.push(sink.base.elapsed().as_micros() as u64);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.arrivals.lock().unwrap().len() < samples as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrivals = sink.arrivals.lock().unwrap().clone();
    let mut lat: Vec<f64> = committed
        .iter()
        .enumerate()
        .filter_map(|(i, at)| {
            let got = arrivals.get(&(i as u64))?;
            Some(got.saturating_sub(*at) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "phase 3: commit to first attempt, idle dispatcher, {} of {samples} samples",
        lat.len()
    );
    println!(
        "  p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.90),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );

    let _ = hookrelay.kill();
    let _ = hookrelay.wait();
    drop(c);
    admin_sql(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

async fn admin_sql(server: &str, sql: &str) {
    let mut c = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// Starts `hookrelay serve` on `db`; returns the child and its base URL.
fn start(db: &str) -> (Child, String) {
    let (child, addr) = start_hookrelay(db, "all", &[]);
    (child, format!("http://{addr}"))
}
