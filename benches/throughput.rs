//! Throughput and latency benchmark: the release binary on SQLite, a loopback receiver and
//! a load generator in this process.
//!
//! `cargo bench --bench throughput` (env: BENCH_DATABASE, `sqlite` (default) or `postgres`
//! (a fresh database on BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432);
//! BENCH_DISPATCHERS, processes sharing the database, default 1; BENCH_EVENTS, default 20000; BENCH_RATE, default
//! 1000 events/s; BENCH_SECONDS, default 10; BENCH_PRODUCERS, default 64; BENCH_BINARY, the
//! hookrelay binary to run instead of this build's).
//!
//! Phase 1 posts BENCH_EVENTS events as fast as BENCH_PRODUCERS concurrent producers can and reports the ingest rate,
//! the delivery rate (events per second from the first post to the last receipt) and the
//! end-to-end latency under that load.
//! Phase 2 posts at a fixed rate and reports end-to-end latency (post sent → request
//! received) percentiles. At the end, the number of deliveries received more than once
//! (by `webhook-id`): with every process healthy it must be 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Child,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::StatusCode, Router};
use serde_json::json;

mod common;
use common::{create_endpoint, env_or, produce_with, start_hookrelay, TOKEN};

struct Sink {
    count: AtomicUsize,
    /// Every `webhook-id` received: one seen twice is a duplicate delivery.
    ids: Mutex<std::collections::HashSet<String>>,
    duplicates: AtomicUsize,
    base: Instant,
    /// (sent_at offset from `base`, received at offset) in microseconds.
    latencies: Mutex<Vec<u64>>,
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = sink.base.elapsed().as_micros() as u64;
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        if !sink.ids.lock().unwrap().insert(id.to_owned()) {
            sink.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
        if let Some(sent) = v["data"]["sent_us"].as_u64() {
            sink.latencies
                .lock()
                .unwrap()
                .push(now.saturating_sub(sent));
        }
    }
    sink.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// The end-to-end latencies received so far, sorted.
fn latencies(sink: &Sink) -> Vec<u64> {
    let mut lat = sink.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    lat
}

/// One line of latency percentiles, indented under its phase.
fn print_latency(what: &str, sorted: &[u64]) {
    println!(
        "  {what}: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(sorted, 0.50),
        percentile(sorted, 0.95),
        percentile(sorted, 0.99),
        percentile(sorted, 1.0)
    );
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let events = env_or("BENCH_EVENTS", 20_000) as usize;
    let rate = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 10);
    let concurrency = env_or("BENCH_PRODUCERS", 64);

    let sink = Arc::new(Sink {
        count: AtomicUsize::new(0),
        ids: Mutex::new(Default::default()),
        duplicates: AtomicUsize::new(0),
        base: Instant::now(),
        latencies: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv_addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(receive).with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let (db, pg_name) = match std::env::var("BENCH_DATABASE").as_deref() {
        Ok("postgres") => {
            let name = format!("hr_bench_{}", std::process::id());
            let server = std::env::var("BENCH_POSTGRES")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
            admin_sql(&server, &format!("CREATE DATABASE {name}")).await;
            (format!("{server}/{name}"), Some((server, name)))
        }
        _ => (
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            None,
        ),
    };
    let dispatchers = env_or("BENCH_DISPATCHERS", 1).max(1);
    let (mut first, base) = start(&db, "all");
    let base = base.unwrap();
    // More dispatcher processes share the same database (Postgres only).
    let mut others: Vec<Child> = (1..dispatchers)
        .map(|_| start(&db, "dispatcher").0)
        .collect();
    println!("store: {db}, dispatcher processes: {dispatchers}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    create_endpoint(&http, &base, &format!("http://{recv_addr}/hook")).await;
    let url = format!("{base}/v1/tenants/default/events");

    // Phase 1: as fast as possible.
    let start = Instant::now();
    let stamp = sink.clone();
    produce_with(
        &http,
        &base,
        usize::try_from(concurrency).unwrap(),
        events,
        move || {
            let sent_us = stamp.base.elapsed().as_micros() as u64;
            json!({"type": "bench.event", "data": {"sent_us": sent_us}})
        },
    )
    .await;
    let ingest_secs = start.elapsed().as_secs_f64();
    while sink.count.load(Ordering::Relaxed) < events {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "deliveries stalled"
        );
    }
    let deliver_secs = start.elapsed().as_secs_f64();
    println!("phase 1: {events} events, {concurrency} producers");
    println!(
        "  ingest:   {:>8.0} events/s ({ingest_secs:.2} s)",
        events as f64 / ingest_secs
    );
    println!(
        "  delivery: {:>8.0} deliveries/s (first post to last receipt, {deliver_secs:.2} s)",
        events as f64 / deliver_secs
    );

    print_latency("end-to-end latency at full load", &latencies(&sink));

    // Phase 2: fixed rate, end-to-end latency.
    let before = sink.count.load(Ordering::Relaxed);
    sink.latencies.lock().unwrap().clear();
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let (http, url, sink) = (http.clone(), url.clone(), sink.clone());
        inflight.spawn(async move {
            let sent_us = sink.base.elapsed().as_micros() as u64;
            let r = http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({"type": "bench.latency", "data": {"sent_us": sent_us}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        });
    }
    while inflight.join_next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.count.load(Ordering::Relaxed) < before + total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lat = latencies(&sink);
    println!(
        "phase 2: {rate} events/s for {seconds} s ({} delivered)",
        lat.len()
    );
    print_latency("end-to-end latency", &lat);
    println!(
        "duplicates: {} deliveries received more than once",
        sink.duplicates.load(Ordering::Relaxed)
    );
    for c in others.iter_mut().chain(std::iter::once(&mut first)) {
        let _ = c.kill();
        let _ = c.wait();
    }
    if let Some((server, name)) = pg_name {
        admin_sql(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
    }
}

async fn admin_sql(server: &str, sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// Starts `hookrelay serve` with `role`; returns the child and, when it serves the API,
/// its base URL.
fn start(db: &str, role: &str) -> (Child, Option<String>) {
    let (child, addr) = start_hookrelay(db, role, &[]);
    let base = (role != "dispatcher").then(|| format!("http://{addr}"));
    (child, base)
}
