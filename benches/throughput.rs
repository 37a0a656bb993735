//! Throughput and latency benchmark: the release binary on SQLite, a loopback receiver and
//! a load generator in this process.
//!
//! `cargo bench --bench throughput` (env: BENCH_DATABASE, `sqlite` (default) or `postgres`
//! (a fresh database on BENCH_POSTGRES, default postgres://postgres@127.0.0.1:5432);
//! BENCH_DISPATCHERS, processes sharing the database, default 1; BENCH_EVENTS, default 20000;
//! BENCH_RATE, default 1000 events/s; BENCH_SECONDS, default 10; BENCH_PRODUCERS, default 64;
//! BENCH_RUNS, runs each on a fresh database and process, default 1; BENCH_BINARY, the
//! hookrelay binary to run instead of this build's).
//!
//! On PostgreSQL each run first measures plain single-row inserts into an ordinary table
//! from as many connections as there are producers, for 4 s, before hookrelay starts: what
//! that PostgreSQL commits on its own (ingest and delivery are also printed as ratios to
//! it). Each run then posts BENCH_EVENTS requests straight to the receiver from the same
//! producers (the raw HTTP rate the delivery rate is compared with). Phase 1 posts
//! BENCH_EVENTS events as fast as BENCH_PRODUCERS concurrent producers can and reports the
//! ingest rate, the delivery rate (events per second from the first post to the last
//! receipt) and the end-to-end latency under that load. Phase 2 posts at a fixed rate and
//! reports end-to-end latency (post sent → request received). Both print a latency histogram,
//! the slowest delivery and when in the phase it was sent, how long ingest took to answer,
//! and the hookrelay process's peak resident memory (sampled every 20 ms from /proc); phase 1
//! also its CPU time per delivered event by kind of thread, and the whole machine's: CPU time
//! per delivered event of every hookrelay process, of PostgreSQL's processes, of this bench
//! (producers and receiver), and how busy the cores were. At the end, the number of deliveries
//! received more than once (by `webhook-id`): with every process healthy it must be 0. With
//! several runs, a summary gives min, median and max of each figure.
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
use common::{
    create_endpoint, env_or, machine_cpu, plain_insert_rate, postgres_cpu, process_cpu,
    produce_with, start_hookrelay, stat_seconds, TOKEN,
};

struct Sink {
    count: AtomicUsize,
    /// Requests posted straight to the receiver (the raw HTTP baseline), not deliveries.
    raw: AtomicUsize,
    /// Every `webhook-id` received: one seen twice is a duplicate delivery.
    ids: Mutex<std::collections::HashSet<String>>,
    duplicates: AtomicUsize,
    base: Instant,
    /// (sent at, latency) in microseconds, sent at as an offset from `base`.
    latencies: Mutex<Vec<(u64, u64)>>,
}

async fn receive(
    State(sink): State<Arc<Sink>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = sink.base.elapsed().as_micros() as u64;
    let parsed = serde_json::from_slice::<serde_json::Value>(&body);
    if headers.contains_key("x-bench-raw") {
        sink.raw.fetch_add(1, Ordering::Relaxed);
        return StatusCode::OK;
    }
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        if !sink.ids.lock().unwrap().insert(id.to_owned()) {
            sink.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Ok(v) = parsed {
        if let Some(sent) = v["data"]["sent_us"].as_u64() {
            sink.latencies
                .lock()
                .unwrap()
                .push((sent, now.saturating_sub(sent)));
        }
    }
    sink.count.fetch_add(1, Ordering::Relaxed);
    StatusCode::OK
}

/// The (sent at, latency) pairs received so far, sorted by latency.
fn latencies(sink: &Sink) -> Vec<(u64, u64)> {
    let mut lat = sink.latencies.lock().unwrap().clone();
    lat.sort_unstable_by_key(|&(_, l)| l);
    lat
}

/// Latency percentiles, a histogram and the slowest delivery, indented under its phase.
/// `phase_start` is the phase's start as an offset from the sink's base, in microseconds.
/// Returns (p99, max) in milliseconds.
fn print_latency(what: &str, sorted: &[(u64, u64)], phase_start: u64) -> (f64, f64) {
    let only: Vec<u64> = sorted.iter().map(|&(_, l)| l).collect();
    let p99 = percentile(&only, 0.99);
    let max = percentile(&only, 1.0);
    println!(
        "  {what}: p50 {:.1} ms, p95 {:.1} ms, p99 {p99:.1} ms, max {max:.1} ms",
        percentile(&only, 0.50),
        percentile(&only, 0.95),
    );
    let bounds_ms = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
    let mut counts = vec![0usize; bounds_ms.len() + 1];
    for &l in &only {
        let i = bounds_ms
            .iter()
            .position(|&b| l <= b * 1000)
            .unwrap_or(bounds_ms.len());
        counts[i] += 1;
    }
    let mut line = String::from("    histogram:");
    for (i, n) in counts.iter().enumerate() {
        if *n == 0 {
            continue;
        }
        match bounds_ms.get(i) {
            Some(b) => line.push_str(&format!(" ≤{b} ms {n},")),
            None => line.push_str(&format!(" >1 s {n},")),
        }
    }
    println!("{}", line.trim_end_matches(','));
    if let Some(&(sent, l)) = sorted.last() {
        println!(
            "    slowest: {:.1} ms, sent {:.2} s into the phase; {} over 100 ms",
            l as f64 / 1000.0,
            sent.saturating_sub(phase_start) as f64 / 1e6,
            only.iter().filter(|&&l| l > 100_000).count()
        );
    }
    (p99, max)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Samples a process's resident memory (VmRSS, from /proc) every 20 ms; `take_peak` returns
/// the highest sample since the last call, in MB, with how much of it was anonymous memory
/// (heap, stacks) rather than mapped files (the binary's pages).
struct RssSampler {
    /// (VmRSS, RssAnon) of the highest sample, in kB.
    peak_kb: Arc<Mutex<(u64, u64)>>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak_kb = Arc::new(Mutex::new((0, 0)));
        let peak = peak_kb.clone();
        std::thread::spawn(move || loop {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return; // gone, or not Linux
            };
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let sample = (field("VmRSS:"), field("RssAnon:"));
            {
                let mut peak = peak.lock().unwrap();
                if sample.0 > peak.0 {
                    *peak = sample;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        Self { peak_kb }
    }

    /// Prints and returns the peak since the last call, in MB.
    fn take_peak(&self) -> f64 {
        let (rss, anon) = std::mem::take(&mut *self.peak_kb.lock().unwrap());
        let mb = |kb: u64| kb as f64 / 1024.0;
        println!(
            "  peak RSS: {:.1} MB ({:.1} MB anonymous, {:.1} MB mapped files)",
            mb(rss),
            mb(anon),
            mb(rss.saturating_sub(anon))
        );
        mb(rss)
    }
}

/// CPU time (user + system) a process's threads have used, in seconds, summed by thread
/// name with digits dropped (`tokio-runtime-worker`, `sqlx-sqlite-worker-`, …), from /proc.
fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // pid (comm) state …: the thread's name between the parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name: String = stat[open + 1..close]
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *by_name.entry(name).or_insert(0.0) += stat_seconds(&stat, 11..13);
    }
    by_name
}

/// Prints the CPU time each kind of thread used between `before` and now, per event.
fn print_cpu(pid: u32, before: &std::collections::BTreeMap<String, f64>, events: usize) {
    let now = cpu_by_thread(pid);
    let mut line = String::from("  hookrelay CPU per delivered event:");
    let mut total = 0.0;
    for (name, secs) in &now {
        let used = secs - before.get(name).copied().unwrap_or(0.0);
        total += used;
        if used > 0.0 {
            line.push_str(&format!(" {name} {:.0} µs,", used * 1e6 / events as f64));
        }
    }
    println!("{line} total {:.0} µs", total * 1e6 / events as f64);
}

/// CPU time used on the whole machine, split by who used it, at one moment (seconds).
struct Machine {
    hookrelay: f64,
    postgres: f64,
    bench: f64,
    busy: f64,
    interrupts: f64,
    total: f64,
}

impl Machine {
    fn read(hookrelay: &[u32]) -> Self {
        let (busy, interrupts, total) = machine_cpu();
        Self {
            hookrelay: hookrelay.iter().map(|&p| process_cpu(p)).sum(),
            postgres: postgres_cpu(),
            bench: process_cpu(std::process::id()),
            busy,
            interrupts,
            total,
        }
    }

    /// Prints the CPU time used since `before` per delivered event, by whom, and how busy
    /// the machine's cores were: where the time goes when the machine is the limit.
    fn print_since(&self, before: &Machine, events: usize) {
        let per = |now: f64, then: f64| (now - then) * 1e6 / events as f64;
        let (hookrelay, postgres, bench) = (
            per(self.hookrelay, before.hookrelay),
            per(self.postgres, before.postgres),
            per(self.bench, before.bench),
        );
        let busy = per(self.busy, before.busy);
        let interrupts = per(self.interrupts, before.interrupts);
        println!(
            "  machine CPU per delivered event: hookrelay {hookrelay:.0} µs, PostgreSQL {postgres:.0} µs, \
             this bench (producers, receiver) {bench:.0} µs, interrupts (loopback network) \
             {interrupts:.0} µs, other {:.0} µs; cores busy {:.0} %",
            (busy - hookrelay - postgres - bench - interrupts).max(0.0),
            100.0 * (self.busy - before.busy) / (self.total - before.total).max(f64::MIN_POSITIVE)
        );
    }
}

/// One run's figures, for the summary over runs.
#[derive(Default)]
struct Figures {
    raw_rate: f64,
    /// PostgreSQL only: plain single-row inserts per second from as many connections.
    plain_rate: f64,
    ingest_rate: f64,
    delivery_rate: f64,
    full_p99: f64,
    full_max: f64,
    full_rss: f64,
    steady_p99: f64,
    steady_max: f64,
    steady_rss: f64,
    duplicates: usize,
}

#[tokio::main]
async fn main() {
    let runs = env_or("BENCH_RUNS", 1).max(1);
    let mut all = Vec::new();
    for run in 1..=runs {
        if runs > 1 {
            println!("run {run} of {runs}");
        }
        all.push(run_once().await);
    }
    if runs > 1 {
        println!("summary over {runs} runs: min / median / max");
        let show = |what: &str, unit: &str, f: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = all.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let digits = if v[v.len() - 1] < 10.0 { 2 } else { 1 };
            println!(
                "  {what}: {:.digits$} / {:.digits$} / {:.digits$} {unit}",
                v[0],
                v[v.len() / 2],
                v[v.len() - 1]
            );
        };
        show("raw HTTP to the receiver", "requests/s", |f| f.raw_rate);
        show("ingest", "events/s", |f| f.ingest_rate);
        show("delivery", "deliveries/s", |f| f.delivery_rate);
        show("delivery / raw HTTP", "", |f| f.delivery_rate / f.raw_rate);
        if all.iter().all(|f| f.plain_rate > 0.0) {
            show("plain insert", "rows/s", |f| f.plain_rate);
            show("ingest / plain insert", "", |f| {
                f.ingest_rate / f.plain_rate
            });
            show("delivery / plain insert", "", |f| {
                f.delivery_rate / f.plain_rate
            });
        }
        show("full load p99", "ms", |f| f.full_p99);
        show("full load max", "ms", |f| f.full_max);
        show("full load peak RSS", "MB", |f| f.full_rss);
        show("steady p99", "ms", |f| f.steady_p99);
        show("steady max", "ms", |f| f.steady_max);
        show("steady peak RSS", "MB", |f| f.steady_rss);
        show("duplicates", "", |f| f.duplicates as f64);
    }
}

async fn run_once() -> Figures {
    let events = env_or("BENCH_EVENTS", 20_000) as usize;
    let rate = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 10);
    let concurrency = env_or("BENCH_PRODUCERS", 64);
    let mut figures = Figures::default();

    let sink = Arc::new(Sink {
        count: AtomicUsize::new(0),
        raw: AtomicUsize::new(0),
        ids: Mutex::new(Default::default()),
        duplicates: AtomicUsize::new(0),
        base: Instant::now(),
        latencies: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv_addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(receive).with_state(sink.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let (db, pg_name) = match std::env::var("BENCH_DATABASE").as_deref() {
        Ok("postgres") => {
            let name = format!(
                "hr_bench_{}_{}",
                std::process::id(),
                sink.base.elapsed().as_nanos()
            );
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
    let producers = usize::try_from(concurrency).unwrap();
    // On PostgreSQL, the other reference: what it commits of plain single-row inserts,
    // measured before hookrelay starts (its pools would take connections).
    if pg_name.is_some() {
        figures.plain_rate = plain_insert_rate(&db, producers, 4).await;
        println!(
            "plain insert: {:>8.0} rows/s into an ordinary table ({producers} connections, autocommit)",
            figures.plain_rate
        );
    }
    let dispatchers = env_or("BENCH_DISPATCHERS", 1).max(1);
    let (mut first, base) = start(&db, "all");
    let base = base.unwrap();
    let rss = RssSampler::start(first.id());
    // More dispatcher processes share the same database (Postgres only).
    let mut others: Vec<Child> = (1..dispatchers)
        .map(|_| start(&db, "dispatcher").0)
        .collect();
    println!("store: {db}, dispatcher processes: {dispatchers}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();

    // The baseline: the same producers posting the same bodies straight to the receiver.
    let start = Instant::now();
    raw_load(&http, &format!("http://{recv_addr}/raw"), producers, events).await;
    figures.raw_rate = events as f64 / start.elapsed().as_secs_f64();
    assert_eq!(sink.raw.load(Ordering::Relaxed), events);
    println!(
        "raw HTTP: {:>8.0} requests/s straight to the receiver ({producers} producers)",
        figures.raw_rate
    );

    create_endpoint(&http, &base, &format!("http://{recv_addr}/hook")).await;
    let url = format!("{base}/v1/tenants/default/events");
    print!("started:");
    rss.take_peak();

    // Phase 1: as fast as possible.
    let cpu_before = cpu_by_thread(first.id());
    let mut hookrelay_pids: Vec<u32> = others.iter().map(Child::id).collect();
    hookrelay_pids.push(first.id());
    let machine_before = Machine::read(&hookrelay_pids);
    let start = Instant::now();
    let phase_start = sink.base.elapsed().as_micros() as u64;
    let stamp = sink.clone();
    let mut answers = produce_with(&http, &base, producers, events, move || {
        let sent_us = stamp.base.elapsed().as_micros() as u64;
        json!({"type": "bench.event", "data": {"sent_us": sent_us}})
    })
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
    figures.ingest_rate = events as f64 / ingest_secs;
    figures.delivery_rate = events as f64 / deliver_secs;
    println!("phase 1: {events} events, {concurrency} producers");
    println!(
        "  ingest:   {:>8.0} events/s ({ingest_secs:.2} s)",
        figures.ingest_rate
    );
    println!(
        "  delivery: {:>8.0} deliveries/s (first post to last receipt, {deliver_secs:.2} s), {:.2} of raw HTTP",
        figures.delivery_rate,
        figures.delivery_rate / figures.raw_rate
    );
    if figures.plain_rate > 0.0 {
        println!(
            "  as a ratio to the plain insert: ingest {:.2}, delivery {:.2}",
            figures.ingest_rate / figures.plain_rate,
            figures.delivery_rate / figures.plain_rate
        );
    }
    (figures.full_p99, figures.full_max) = print_latency(
        "end-to-end latency at full load",
        &latencies(&sink),
        phase_start,
    );
    answers.sort_unstable_by_key(|&(_, l)| l);
    print_latency("ingest answered (post to 202)", &answers, 0);
    print_cpu(first.id(), &cpu_before, events);
    Machine::read(&hookrelay_pids).print_since(&machine_before, events);
    figures.full_rss = rss.take_peak();

    // Phase 2: fixed rate, end-to-end latency.
    let before = sink.count.load(Ordering::Relaxed);
    sink.latencies.lock().unwrap().clear();
    let phase_start = sink.base.elapsed().as_micros() as u64;
    let total = (rate * seconds) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    // How long each post took to be answered (accepted and committed), in microseconds.
    let answers = Arc::new(Mutex::new(Vec::with_capacity(total)));
    for _ in 0..total {
        ticker.tick().await;
        let (http, url, sink, answers) = (http.clone(), url.clone(), sink.clone(), answers.clone());
        inflight.spawn(async move {
            let clock = Instant::now();
            let sent_us = sink.base.elapsed().as_micros() as u64;
            let r = http
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({"type": "bench.latency", "data": {"sent_us": sent_us}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let took = clock.elapsed().as_micros() as u64;
            answers.lock().unwrap().push((sent_us, took));
        });
        // Reap finished posts as we go: a long run must not hold every task.
        while inflight.try_join_next().is_some() {}
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
    (figures.steady_p99, figures.steady_max) =
        print_latency("end-to-end latency", &lat, phase_start);
    let mut answers = answers.lock().unwrap().clone();
    answers.sort_unstable_by_key(|&(_, l)| l);
    print_latency("ingest answered (post to 202)", &answers, phase_start);
    figures.steady_rss = rss.take_peak();
    figures.duplicates = sink.duplicates.load(Ordering::Relaxed);
    println!(
        "duplicates: {} deliveries received more than once",
        figures.duplicates
    );
    for c in others.iter_mut().chain(std::iter::once(&mut first)) {
        let _ = c.kill();
        let _ = c.wait();
    }
    server.abort();
    if let Some((server, name)) = pg_name {
        admin_sql(&server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
    }
    figures
}

/// Posts `total` small JSON bodies to `url` (the receiver itself) from `producers` tasks.
async fn raw_load(http: &reqwest::Client, url: &str, producers: usize, total: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..producers)
        .map(|_| {
            let (http, url, next) = (http.clone(), url.to_owned(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let r = http
                        .post(&url)
                        .header("x-bench-raw", "1")
                        .json(&json!({"type": "bench.raw", "data": {"sent_us": 0}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
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
