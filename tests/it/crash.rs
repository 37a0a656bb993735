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
    // The first lines it prints, to show why it did not start.
    let early = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let early_lines = early.clone();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(r#""message":"attempt""#) {
                counter.fetch_add(1, Ordering::Relaxed);
            } else if !sent && line.contains("hookrelay started") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
                sent = true;
            } else if !sent {
                early_lines.lock().unwrap().push(line);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            let exited = child.try_wait().ok().flatten();
            panic!(
                "hookrelay did not print its address (exit: {exited:?}); it printed:\n{}",
                early.lock().unwrap().join("\n")
            )
        });
    Server {
        child,
        base: format!("http://{addr}"),
        attempts,
    }
}

/// How often the receiver got each `webhook-id`.
fn webhook_ids(r: &Receiver) -> HashMap<String, usize> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for req in r.requests() {
        *seen.entry(req.header("webhook-id").to_owned()).or_default() += 1;
    }
    seen
}

/// Waits until no delivery is pending: after recovery nothing may stay stuck.
async fn assert_nothing_pending(http: &reqwest::Client, base: &str) {
    let pending = eventually(Duration::from_secs(30), || async {
        let (_, list) = send(
            http.get(format!(
                "{base}/v1/tenants/default/deliveries?status=pending"
            ))
            .bearer_auth(ADMIN),
        )
        .await;
        list["data"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert!(pending.is_some(), "deliveries stuck pending after recovery");
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
    let seen = eventually(Duration::from_secs(60), || async {
        let seen = webhook_ids(&receiver);
        (seen.len() >= 1000).then_some(seen)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "only {} of 1000 events arrived",
            webhook_ids(&receiver).len()
        )
    });
    for id in &ingested {
        assert!(seen.contains_key(id), "event {id} was lost");
    }

    // Nothing stays pending.
    assert_nothing_pending(&http, &server.base).await;
    // Duplicates are bounded by what was in flight (the concurrency) and keep their id.
    let duplicates: usize = webhook_ids(&receiver).values().map(|n| n - 1).sum();
    eprintln!("kill -9: {at_kill} received before the kill, {duplicates} duplicates after restart, 0 lost");
    assert!(
        duplicates <= 64,
        "{duplicates} duplicates exceed what was in flight"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

/// Kill rounds for [`kill_9_at_random_moments`]: `HOOKRELAY_KILL_ROUNDS`, 4 by default (CI);
/// `scripts/campaign-faults` runs 20.
fn kill_rounds() -> usize {
    std::env::var("HOOKRELAY_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_under_load_loses_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("rounds.db").display());
    kill_9_at_random_moments("SQLite", &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_at_random_moments_under_load_loses_nothing_postgres() {
    let (url, name) = create_pg_database().await;
    kill_9_at_random_moments("PostgreSQL", &url).await;
    drop_pg_database(&name).await;
}

/// Events stream in at a steady rate while hookrelay is killed with SIGKILL at random moments
/// and restarted on the same database, [`kill_rounds`] times. The producer retries each event
/// with its idempotency key until an answer comes, as a client should; every event that was
/// answered must arrive (at least once) and nothing may stay pending afterwards.
async fn kill_9_at_random_moments(store: &str, db: &str) {
    use rand::{Rng, SeedableRng};
    use std::sync::{atomic::AtomicBool, Mutex};

    let rounds = kill_rounds();
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let receiver = Arc::new(
        Receiver::start(Duration::from_millis(20), |_, _| {
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
        "32",
        "--retry-base",
        "100ms",
    ];
    let mut server = start_server(db, &flags);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let (s, ep) = send(
        http.post(format!("{}/v1/tenants/default/endpoints", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({"url": receiver.url})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");

    // The producer: about 200 events a second, each retried until answered.
    let base = Arc::new(Mutex::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (http, base, stop) = (http.clone(), base.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ingested = Vec::new();
            let mut retries = 0usize;
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            for i in 0.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                pace.tick().await;
                loop {
                    let url = format!("{}/v1/tenants/default/events", base.lock().unwrap());
                    let answer = http
                        .post(url)
                        .bearer_auth(ADMIN)
                        .header("idempotency-key", format!("kill-{i}"))
                        .json(&json!({"type": "crash.rounds", "data": {"i": i}}))
                        .send()
                        .await;
                    if let Ok(r) = answer {
                        if r.status().is_success() {
                            if let Ok(ev) = r.json::<serde_json::Value>().await {
                                ingested.push(ev["id"].as_str().unwrap().to_owned());
                                break;
                            }
                        }
                    }
                    // The server is down or restarting: try again shortly, same key.
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (ingested, retries)
        })
    };

    let mut slowest_restart = Duration::ZERO;
    for _ in 0..rounds {
        // A random moment: the wait is the point of the test, not a synchronization.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
        server.kill();
        let started = std::time::Instant::now();
        server = tokio::task::block_in_place(|| start_server(db, &flags));
        slowest_restart = slowest_restart.max(started.elapsed());
        *base.lock().unwrap() = server.base.clone();
    }
    stop.store(true, Ordering::SeqCst);
    let (ingested, retries) = producer.await.unwrap();
    assert!(!ingested.is_empty());

    let all_arrived = eventually(Duration::from_secs(120), || async {
        let seen = webhook_ids(&receiver);
        ingested
            .iter()
            .all(|id| seen.contains_key(id))
            .then_some(())
    })
    .await;
    let seen = webhook_ids(&receiver);
    let lost: Vec<_> = ingested
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        all_arrived.is_some(),
        "{} of {} events lost (seed {seed}), e.g. {:?}",
        lost.len(),
        ingested.len(),
        lost.first()
    );
    assert_nothing_pending(&http, &server.base).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    // Events the producer never saw answered may still have been stored and delivered.
    let extra = seen.len() - ingested.len();
    eprintln!(
        "kill -9 rounds ({store}): {rounds} kills, {} ingested, {} delivered, {duplicates} duplicates, \
         0 lost, {extra} stored but unanswered, {retries} ingest retries, slowest restart {} ms (seed {seed})",
        ingested.len(),
        ingested.len(),
        slowest_restart.as_millis()
    );
}

/// An application commits `dispatch_webhook()` events one transaction at a time while
/// hookrelay is killed with SIGKILL at random moments ([`kill_rounds`] times) and restarted:
/// the outbox rows of every committed event are fanned out exactly once and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_an_application_calls_dispatch_webhook_loses_nothing() {
    use rand::{Rng, SeedableRng};
    use sqlx::Connection;

    let (db, name) = create_pg_database().await;
    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let receiver = Receiver::ok().await;
    // A lease of 3 s: deliveries claimed by a killed process come back soon.
    let flags = [
        "--lease",
        "3s",
        "--request-timeout",
        "1s",
        "--retry-base",
        "100ms",
    ];
    let mut server = start_server(&db, &flags);
    let (s, ep) = send(
        reqwest::Client::new()
            .post(format!("{}/v1/tenants/default/endpoints", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": receiver.url })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");

    let app_db = db.clone();
    let writer = tokio::spawn(async move {
        let mut app = sqlx::PgConnection::connect(&app_db).await.unwrap();
        let mut ids = Vec::new();
        for n in 0..400 {
            let mut tx = app.begin().await.unwrap();
            let (id,): (String,) = sqlx::query_as(
                "SELECT dispatch_webhook('order.paid', jsonb_build_object('n', $1::int))",
            )
            .bind(n)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            ids.push(id);
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        ids
    });
    for _ in 0..kill_rounds() {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        server.kill();
        server = tokio::task::block_in_place(|| start_server(&db, &flags));
    }
    let committed = writer.await.unwrap();

    let all_seen = eventually(Duration::from_secs(60), || async {
        let seen = webhook_ids(&receiver);
        committed
            .iter()
            .all(|id| seen.contains_key(id))
            .then_some(())
    })
    .await;
    let seen = webhook_ids(&receiver);
    let lost = committed
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .count();
    println!(
        "kill -9 during dispatch_webhook() (seed {seed}): {} committed, {lost} lost, {} duplicates",
        committed.len(),
        seen.values().map(|n| n - 1).sum::<usize>()
    );
    assert!(
        all_seen.is_some(),
        "{lost} committed events never arrived (seed {seed})"
    );
    assert_nothing_pending(&reqwest::Client::new(), &server.base).await;
    let mut check = sqlx::PgConnection::connect(&with_hookrelay_tables(&db))
        .await
        .unwrap();
    let (left, events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM hookrelay_outbox), (SELECT count(*) FROM events)",
    )
    .fetch_one(&mut check)
    .await
    .unwrap();
    assert_eq!(
        (left, events),
        (0, 400),
        "each outbox row fanned out exactly once"
    );
    drop(check);
    drop(server);
    drop_pg_database(&name).await;
}
