//! `kill -9` of the real binary with deliveries in flight: nothing is lost.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::helpers::*;

/// A `hookrelay serve` child process on a port of its own choosing.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Delivery attempts this process has logged.
    pub attempts: Arc<AtomicUsize>,
}

impl Server {
    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the binary and waits for its "hookrelay started" log line to learn the address.
pub fn start_server(db: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db])
        .args(["--admin-token", ADMIN, "--allow-network", "127.0.0.0/8"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hookrelay starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counter = attempts.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(r#""message":"attempt""#) {
                counter.fetch_add(1, Ordering::Relaxed);
            } else if !sent && line.contains("hookrelay started") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
                sent = true;
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server printed its address");
    Server {
        child,
        base: format!("http://{addr}"),
        attempts,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_with_1000_events_in_flight_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    let receiver = Arc::new(
        Receiver::start(Duration::from_millis(200), |_, _| {
            StatusCode::OK.into_response()
        })
        .await,
    );
    let flags = [
        "--lease",
        "3s",
        "--request-timeout",
        "1s",
        "--concurrency",
        "64",
        "--retry-base",
        "100ms",
    ];
    let mut server = start_server(&db, &flags);
    let http = reqwest::Client::new();
    let (s, ep) = send(
        http.post(format!("{}/v1/tenants/default/endpoints", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({"url": receiver.url})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");

    // 1,000 events from 8 concurrent producers.
    let mut producers = Vec::new();
    for p in 0..8 {
        let http = http.clone();
        let base = server.base.clone();
        producers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..125 {
                let (s, ev) = send(
                    http.post(format!("{base}/v1/tenants/default/events"))
                        .bearer_auth(ADMIN)
                        .json(&json!({"type": "crash.test", "data": {"p": p, "i": i}})),
                )
                .await;
                assert_eq!(s, StatusCode::ACCEPTED);
                ids.push(ev["id"].as_str().unwrap().to_owned());
            }
            ids
        }));
    }
    let mut ingested = Vec::new();
    for p in producers {
        ingested.extend(p.await.unwrap());
    }
    assert_eq!(ingested.len(), 1000);

    // Kill while deliveries are in flight: some received, most not yet.
    receiver.wait_for(100, Duration::from_secs(30)).await;
    server.kill();
    let at_kill = receiver.count();
    assert!(
        at_kill < 1000,
        "the kill came too late to test anything ({at_kill} received)"
    );

    let mut server = start_server(&db, &flags);
    let unique = |r: &Receiver| {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for req in r.requests() {
            *seen.entry(req.header("webhook-id").to_owned()).or_default() += 1;
        }
        seen
    };
    let seen = eventually(Duration::from_secs(60), || async {
        let seen = unique(&receiver);
        (seen.len() >= 1000).then_some(seen)
    })
    .await
    .unwrap_or_else(|| panic!("only {} of 1000 events arrived", unique(&receiver).len()));
    for id in &ingested {
        assert!(seen.contains_key(id), "event {id} was lost");
    }

    // Nothing stays pending.
    let pending = eventually(Duration::from_secs(30), || async {
        let (_, list) = send(
            http.get(format!(
                "{}/v1/tenants/default/deliveries?status=pending",
                server.base
            ))
            .bearer_auth(ADMIN),
        )
        .await;
        list["data"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert!(pending.is_some(), "deliveries stuck pending after recovery");
    // Duplicates are bounded by what was in flight (the concurrency) and keep their id.
    let duplicates: usize = unique(&receiver).values().map(|n| n - 1).sum();
    eprintln!("kill -9: {at_kill} received before the kill, {duplicates} duplicates after restart, 0 lost");
    assert!(
        duplicates <= 64,
        "{duplicates} duplicates exceed what was in flight"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}
