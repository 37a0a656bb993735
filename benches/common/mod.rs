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

/// CPU time (user + system) a process has used, in seconds, from /proc; 0 when it is gone.
pub fn process_cpu(pid: u32) -> f64 {
    process_ticks(pid, 11..13)
}

/// CPU time of every process named `postgres`, with that of the backends that have exited
/// (reaped by the postmaster, which counts their time as its children's), in seconds.
pub fn postgres_cpu() -> f64 {
    pids_named("postgres")
        .into_iter()
        .map(|pid| process_ticks(pid, 11..15))
        .sum()
}

/// The sum of the /proc/PID/stat `fields` of a process, in seconds (see [`stat_seconds`]);
/// 0 when it is gone.
fn process_ticks(pid: u32, fields: std::ops::Range<usize>) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat_seconds(&stat, fields))
        .unwrap_or(0.0)
}

/// The sum of the `fields` after the command name of a /proc stat line (of a process or a
/// thread), in seconds: 11..13 are utime and stime, 13..15 cutime and cstime (of reaped
/// children), all in USER_HZ ticks, 100 a second on Linux.
pub fn stat_seconds(stat: &str, fields: std::ops::Range<usize>) -> f64 {
    // pid (comm) state ppid …: the name may hold spaces and parentheses.
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let all: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    all.get(fields)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum::<f64>() / 100.0)
        .unwrap_or(0.0)
}

/// The ordinary table that plain single-row inserts, the reference for PostgreSQL figures,
/// go into.
pub const PLAIN_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS bench_plain (id bigserial PRIMARY KEY, type text NOT NULL, \
     data jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())";

/// The ids of every process whose command name is `name` (e.g. every PostgreSQL backend).
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

/// (busy, interrupts, total) CPU time of the whole machine, in seconds of all cores, from
/// /proc/stat; interrupts (hard and soft: most of it the loopback network) are part of busy.
pub fn machine_cpu() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0, 0.0);
    };
    // user nice system idle iowait irq softirq steal, in USER_HZ ticks.
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    (
        (total - at(3) - at(4)) / 100.0,
        (at(5) + at(6)) / 100.0,
        total / 100.0,
    )
}

/// Rate of plain single-row inserts (autocommit) of a small JSON payload into an ordinary
/// table on the PostgreSQL database `db`, from `clients` connections for `seconds`: what
/// this PostgreSQL commits on its own, the reference PostgreSQL figures are compared with.
pub async fn plain_insert_rate(db: &str, clients: usize, seconds: u64) -> f64 {
    use sqlx::{Connection, PgConnection};
    let mut setup = PgConnection::connect(db).await.unwrap();
    sqlx::query(PLAIN_TABLE).execute(&mut setup).await.unwrap();
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(PgConnection::connect(db).await.unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for mut c in conns {
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while std::time::Instant::now() < deadline {
                sqlx::query(
                    "INSERT INTO bench_plain (type, data) VALUES ('bench.plain', $1::jsonb)",
                )
                .bind(format!("{{\"sent_us\": {n}}}"))
                .execute(&mut c)
                .await
                .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_plain")
        .execute(&mut setup)
        .await
        .unwrap();
    rate
}
