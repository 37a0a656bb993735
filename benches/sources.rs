//! Intake from a Redis stream against HTTP ingest, side by side in one run: the release
//! binary on SQLite, BENCH_EVENTS events (default 20,000) each way, no endpoint (so both
//! measure intake alone: validation, idempotency, the commit).
//!
//! `cargo bench --bench sources` (env: BENCH_EVENTS; BENCH_PRODUCERS, default 64, for
//! the HTTP side; BENCH_BATCH, default 500, the source's `batch`). Redis is the machine's
//! on 6379.
//!
//! - HTTP: BENCH_PRODUCERS concurrent clients post the events; the rate is events over
//!   the time until the last was accepted.
//! - Source: the events are added to a fresh stream first, then a source is created with
//!   `start=all`; the rate is events over the time from its creation until `/v1/health`
//!   counts them all ingested (polled every 10 ms).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::{env_or, produce, start_hookrelay, TOKEN};

async fn ingested(http: &reqwest::Client, base: &str) -> u64 {
    let h: Value = http
        .get(format!("{base}/v1/health"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    h["sources"][0]["ingested"].as_u64().unwrap_or(0)
        + h["sources"][0]["rejected"].as_u64().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let events = env_or("BENCH_EVENTS", 20_000) as usize;
    let producers = env_or("BENCH_PRODUCERS", 64) as usize;
    let batch = env_or("BENCH_BATCH", 500);
    let http = reqwest::Client::new();
    let body = json!({"type": "job.finished", "data": {"job_id": "j_42", "status": "ok"}});

    // HTTP ingest on a fresh database.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("http.db").display());
    let (mut child, addr) = start_hookrelay(&db, "all", &[]);
    let base = format!("http://{addr}");
    let t = Instant::now();
    produce(&http, &base, producers, events, body.clone()).await;
    let http_rate = events as f64 / t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();

    // The same events from a Redis stream, on another fresh database.
    let stream = format!("hr-bench-{}", std::process::id());
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    let data = body["data"].to_string();
    for chunk in (0..events).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for _ in chunk {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("type")
                .arg("job.finished")
                .arg("data")
                .arg(&data)
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let db = format!("sqlite://{}", dir.path().join("source.db").display());
    let (mut child, addr) = start_hookrelay(&db, "all", &[]);
    let base = format!("http://{addr}");
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/v1/tenants/default/sources"))
        .bearer_auth(TOKEN)
        .json(&json!({
            "url": format!("redis://127.0.0.1:6379/0?stream={stream}&start=all&batch={batch}")
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(600);
    while ingested(&http, &base).await < events as u64 {
        assert!(Instant::now() < deadline, "the source never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let source_rate = events as f64 / t.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();

    println!("intake of {events} events on SQLite (release build, no endpoint)");
    println!("  HTTP ingest, {producers} producers: {http_rate:>8.0} events/s (1.00)");
    println!(
        "  Redis Streams source, batch {batch}: {source_rate:>8.0} events/s ({:.2})",
        source_rate / http_rate
    );
}
