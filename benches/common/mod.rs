//! Load generation shared by the benches that drive a running hookrelay over HTTP.
// Each bench compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde_json::{json, Value};

/// The admin token the benches start hookrelay with.
pub const TOKEN: &str = "bench-admin-token-0123456789abcdefghij";

/// The number in environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Creates an endpoint to `url` in the default tenant.
pub async fn create_endpoint(http: &reqwest::Client, base: &str, url: &str) {
    let resp = http
        .post(format!("{base}/v1/tenants/default/endpoints"))
        .bearer_auth(TOKEN)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
}

/// Posts `events` copies of `body` from `producers` concurrent tasks, as fast as they go;
/// returns when every one was accepted.
pub async fn produce(
    http: &reqwest::Client,
    base: &str,
    producers: usize,
    events: usize,
    body: Value,
) {
    produce_with(http, base, producers, events, move || body.clone()).await;
}

/// [`produce`] with each event's body made by `body` just before it is sent (to carry the
/// time it was sent, say). Returns, for every post, when it was sent (microseconds after
/// `base`) and how long it took to be answered (microseconds).
pub async fn produce_with(
    http: &reqwest::Client,
    base: &str,
    producers: usize,
    events: usize,
    body: impl Fn() -> Value + Clone + Send + 'static,
) -> Vec<(u64, u64)> {
    let ingest = format!("{base}/v1/tenants/default/events");
    let next = Arc::new(AtomicUsize::new(0));
    let origin = std::time::Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (http, ingest, next, body) =
                (http.clone(), ingest.clone(), next.clone(), body.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < events {
                    let sent = origin.elapsed();
                    let r = http
                        .post(&ingest)
                        .bearer_auth(TOKEN)
                        .json(&body())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    let took = origin.elapsed() - sent;
                    answers.push((sent.as_micros() as u64, took.as_micros() as u64));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(events);
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    answers
}

/// Starts `hookrelay serve` on `db` with `role` (`all`, `api` or `dispatcher`) and the
/// extra environment `env`, and returns the child with the address it listens on, once it
/// has started. BENCH_BINARY runs another build (e.g. the previous commit's) for a
/// side-by-side run.
pub fn start_hookrelay(db: &str, role: &str, env: &[(String, String)]) -> (Child, String) {
    let binary = std::env::var("BENCH_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookrelay").to_owned());
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .args(["--role", role])
        .args(["--admin-token", TOKEN, "--allow-network", "127.0.0.0/8"])
        .env("RUST_LOG", "info,hookrelay::dispatch=warn")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hookrelay");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("hookrelay started") {
                let v: Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
            } else if line.contains("\"WARN\"") || line.contains("\"ERROR\"") {
                // What hookrelay warns of during a bench belongs beside its figures.
                eprintln!("hookrelay: {line}");
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (child, addr)
}
