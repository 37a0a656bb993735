//! Many processes on one PostgreSQL: work sharing, `kill -9` of one, a database restart,
//! and the transactional outbox.

use std::{
    collections::HashMap,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::{crash::start_server, helpers::*};

/// Posts `n` events from 16 concurrent producers. Each carries an idempotency key and is
/// retried while the API answers 503 or cannot be reached, so an event whose answer was
/// lost is still stored once. Returns the event ids.
async fn produce(base: &str, n: usize, tag: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (http, base, next, tag) = (http.clone(), base.to_owned(), next.clone(), tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return ids;
                }
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    let sent = http
                        .post(format!("{base}/v1/tenants/default/events"))
                        .bearer_auth(ADMIN)
                        .header("Idempotency-Key", format!("{tag}-{i}"))
                        .json(&json!({"type": "scale.test", "data": {"i": i}}))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => {
                            let v: serde_json::Value = r.json().await.unwrap();
                            ids.push(v["id"].as_str().unwrap().to_owned());
                            break;
                        }
                        Ok(r) if r.status() == 503 => {}
                        Ok(r) => panic!(
                            "ingest answered {}: {}",
                            r.status(),
                            r.text().await.unwrap()
                        ),
                        Err(_) => {}
                    }
                    assert!(Instant::now() < deadline, "ingest never recovered");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

fn received_ids(r: &Receiver) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for req in r.requests() {
        *seen.entry(req.header("webhook-id").to_owned()).or_default() += 1;
    }
    seen
}

/// Waits until every id has arrived; returns the receipt counts.
async fn all_arrive(r: &Receiver, ids: &[String], timeout: Duration) -> HashMap<String, usize> {
    eventually(timeout, || async {
        let seen = received_ids(r);
        ids.iter().all(|id| seen.contains_key(id)).then_some(seen)
    })
    .await
    .unwrap_or_else(|| {
        let seen = received_ids(r);
        let lost = ids.iter().filter(|id| !seen.contains_key(*id)).count();
        panic!("{lost} of {} events never arrived", ids.len())
    })
}

async fn create_endpoint(base: &str, url: &str) {
    let (s, ep) = send(
        reqwest::Client::new()
            .post(format!("{base}/v1/tenants/default/endpoints"))
            .bearer_auth(ADMIN)
            .json(&json!({"url": url})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
}

const DISPATCHER: &[&str] = &[
    "--role",
    "dispatcher",
    "--lease",
    "3s",
    "--request-timeout",
    "1s",
];
const API: &[&str] = &["--role", "api"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_dispatchers_share_5000_events_without_duplicates() {
    let (db, name) = create_pg_database().await;
    let r = Receiver::ok().await;
    let api = start_server(&db, API);
    let dispatchers: Vec<_> = (0..3).map(|_| start_server(&db, DISPATCHER)).collect();
    create_endpoint(&api.base, &r.url).await;
    let ids = produce(&api.base, 5000, "share").await;
    let seen = all_arrive(&r, &ids, Duration::from_secs(120)).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let shares: Vec<usize> = dispatchers
        .iter()
        .map(|d| d.attempts.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    eprintln!(
        "3 dispatchers, 5000 events: attempts per process {shares:?}, {duplicates} duplicates"
    );
    assert_eq!(duplicates, 0, "no process was killed, so no duplicates");
    assert_eq!(seen.len(), 5000);
    assert!(
        shares.iter().filter(|n| **n > 0).count() >= 2,
        "work was not shared: {shares:?}"
    );
    drop(dispatchers);
    drop(api);
    drop_pg_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_dispatcher_the_others_finish() {
    let (db, name) = create_pg_database().await;
    let r = Receiver::start(Duration::from_millis(30), |_, _| {
        StatusCode::OK.into_response()
    })
    .await;
    let api = start_server(&db, API);
    let mut dispatchers: Vec<_> = (0..3)
        .map(|_| start_server(&db, &[DISPATCHER, &["--concurrency", "32"]].concat()))
        .collect();
    create_endpoint(&api.base, &r.url).await;
    let base = api.base.clone();
    let producer = tokio::spawn(async move { produce(&base, 3000, "kill").await });
    r.wait_for(500, Duration::from_secs(60)).await;
    let killed_had = dispatchers[0]
        .attempts
        .load(std::sync::atomic::Ordering::Relaxed);
    dispatchers[0].kill();
    let at_kill = r.count();
    assert!(at_kill < 3000, "the kill came too late to test anything");
    assert!(
        killed_had > 0,
        "the killed dispatcher had not delivered anything yet"
    );
    let ids = producer.await.unwrap();
    let seen = all_arrive(&r, &ids, Duration::from_secs(120)).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 of 1 of 3 dispatchers at {at_kill} receipts: 0 lost, {duplicates} duplicates"
    );
    assert!(
        duplicates <= 32,
        "duplicates ({duplicates}) exceed what the killed process had in flight"
    );
    drop(dispatchers);
    drop(api);
    drop_pg_database(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispatch_webhook_delivers_only_committed_events() {
    use sqlx::Connection;
    let (db, name) = create_pg_database().await;
    let r = Receiver::ok().await;
    let server = start_server(&db, &[]);
    create_endpoint(&server.base, &r.url).await;
    let mut app_conn = sqlx::PgConnection::connect(&db).await.unwrap();

    // The application's own transaction: business row and event commit together.
    sqlx::query("CREATE TABLE memberships (user_id text, community_id text)")
        .execute(&mut app_conn)
        .await
        .unwrap();
    let mut tx = app_conn.begin().await.unwrap();
    sqlx::query("INSERT INTO memberships VALUES ('u1', 'c1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (committed,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('user.joined_community', '{\"user_id\": \"u1\", \"community_id\": \"c1\"}'::jsonb, 'u1')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let mut tx = app_conn.begin().await.unwrap();
    sqlx::query("INSERT INTO memberships VALUES ('u2', 'c1')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (rolled_back,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('user.joined_community', '{\"user_id\": \"u2\"}'::jsonb)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let got = r.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].header("webhook-id"), committed);
    assert_eq!(got[0].json()["actor"], "u1");
    assert_eq!(got[0].json()["data"]["user_id"], "u1");
    let http = reqwest::Client::new();
    let (s, _) = send(
        http.get(format!(
            "{}/v1/tenants/default/events/{rolled_back}",
            server.base
        ))
        .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a rolled-back event must not exist"
    );
    let (_, events) = send(
        http.get(format!("{}/v1/tenants/default/events", server.base))
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1);

    // `install-sql` prints the same function for applications with their own schema.
    let out = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("install-sql")
        .output()
        .unwrap();
    assert!(out.status.success());
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(sql.contains("FUNCTION dispatch_webhook"), "{sql}");
    assert!(
        sql.contains("SET search_path = public, pg_catalog;"),
        "{sql}"
    );
    drop(server);
    drop(app_conn);
    drop_pg_database(&name).await;
}

/// A PostgreSQL cluster of the test's own (initdb in a temporary directory, on a free port),
/// so that restarting it disturbs no other test.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
}

fn pg_bin(tool: &str) -> String {
    let version = std::fs::read_dir("/usr/lib/postgresql")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("PostgreSQL server binaries are installed");
    format!("/usr/lib/postgresql/{version}/bin/{tool}")
}

fn as_postgres(args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivatePostgres {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        as_postgres(&[
            &pg_bin("initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ]);
        let pg = Self { dir, port };
        pg.up();
        pg
    }
    fn ctl(&self, action: &[&str]) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        let mut args = vec![
            pg_bin("pg_ctl"),
            "-D".into(),
            data.display().to_string(),
            "-o".into(),
            opts,
            "-w".into(),
        ];
        args.extend(action.iter().map(|a| a.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        as_postgres(&refs);
    }
    fn up(&self) {
        self.ctl(&[
            "-l",
            &self.dir.path().join("log").display().to_string(),
            "start",
        ]);
    }
    fn down(&self) {
        self.ctl(&["-m", "fast", "stop"]);
    }
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_bin("pg_ctl"),
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_loses_nothing() {
    let pg = PrivatePostgres::start();
    let r = Receiver::ok().await;
    let server = start_server(&pg.url(), &["--lease", "3s", "--request-timeout", "1s"]);
    create_endpoint(&server.base, &r.url).await;
    let base = server.base.clone();
    let producer = tokio::spawn(async move { produce(&base, 2000, "restart").await });
    r.wait_for(300, Duration::from_secs(60)).await;
    pg.down();
    // While the store is down, ingest answers 503 (not 500) and the process stays up.
    let (s, b) = send(
        reqwest::Client::new()
            .post(format!("{}/v1/tenants/default/events", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({"type": "scale.test", "data": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    pg.up();
    let ids = producer.await.unwrap();
    assert_eq!(ids.len(), 2000);
    let seen = all_arrive(&r, &ids, Duration::from_secs(120)).await;
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("Postgres restart mid-run: 2000 events, 0 lost, {duplicates} duplicates");
    drop(server);
}
