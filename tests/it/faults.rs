//! Fault campaign: a receiver that hangs past the timeout, resets connections, sends a huge
//! response, answers 5xx at random, or is down for a while. For each: every ingested event is
//! delivered at least once, duplicates are counted and reported, and nothing stays pending.
//!
//! `HOOKRELAY_FAULT_EVENTS` sets the events per fault (default 40, the short CI run).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::helpers::*;

/// What the chaos receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answer {
    Ok,
    /// Never answers (past the request timeout).
    Hang,
    /// Closes the connection with a TCP reset.
    Reset,
    /// 503.
    ServerError,
    /// 200 followed by a 64 MiB body.
    Huge,
}

type Policy = dyn Fn(usize) -> Answer + Send + Sync;

/// A raw-TCP HTTP/1.1 receiver that decides per request (numbered from 1) how to misbehave.
struct Chaos {
    addr: SocketAddr,
    /// webhook-id -> 2xx answers given.
    delivered: Arc<Mutex<HashMap<String, usize>>>,
    requests: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Chaos {
    async fn start(policy: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(policy))
    }

    async fn start_on(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, Arc::new(|_| Answer::Ok))
    }

    fn serve(listener: TcpListener, policy: Arc<Policy>) -> Self {
        let addr = listener.local_addr().unwrap();
        let delivered = Arc::new(Mutex::new(HashMap::new()));
        let requests = Arc::new(Mutex::new(0));
        let (d, r) = (delivered.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (d, r, policy) = (d.clone(), r.clone(), policy.clone());
                tokio::spawn(async move {
                    let _ = handle(stream, d, r, policy).await;
                });
            }
        });
        Self {
            addr,
            delivered,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn delivered(&self) -> HashMap<String, usize> {
        self.delivered.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests off one connection (keep-alive) and answers each as the policy says.
async fn handle(
    mut stream: TcpStream,
    delivered: Arc<Mutex<HashMap<String, usize>>>,
    requests: Arc<Mutex<usize>>,
    policy: Arc<Policy>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // Headers.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let id = header("webhook-id").unwrap_or_default();
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..head_end + length);
        let n = {
            let mut r = requests.lock().unwrap();
            *r += 1;
            *r
        };
        match policy(n) {
            Answer::Ok => {
                *delivered.lock().unwrap().entry(id).or_default() += 1;
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await?;
            }
            Answer::ServerError => {
                stream
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                    .await?;
            }
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Answer::Reset => {
                // Zero linger does not block on drop: it is exactly the RST wanted here.
                #[allow(deprecated)]
                stream.set_linger(Some(Duration::ZERO))?;
                return Ok(()); // dropped with linger 0: RST
            }
            Answer::Huge => {
                *delivered.lock().unwrap().entry(id).or_default() += 1;
                const SIZE: usize = 64 * 1024 * 1024;
                stream
                    .write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {SIZE}\r\n\r\n").as_bytes(),
                    )
                    .await?;
                let block = vec![b'x'; 64 * 1024];
                for _ in 0..SIZE / block.len() {
                    stream.write_all(&block).await?; // hookrelay may stop reading: fine
                }
            }
        }
    }
}

fn events_per_fault() -> usize {
    std::env::var("HOOKRELAY_FAULT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// Fast retries, a short timeout and a breaker that probes again quickly.
async fn app() -> TestApp {
    spawn_app_on(Backend::Sqlite, |c| {
        c.retry.base = Duration::from_millis(20);
        c.retry.max_delay = Duration::from_millis(300);
        c.retry.max_attempts = 100;
        c.dispatch.request_timeout = Duration::from_millis(500);
        c.dispatch.connect_timeout = Duration::from_millis(500);
        c.breaker.cooldown = Duration::from_millis(200);
    })
    .await
}

async fn ingest(app: &TestApp, n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let ev = app.event("fault.test", json!({"fault": tag, "i": i})).await;
        ids.push(ev["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Waits until every ingested event got a 2xx and no delivery is pending; returns the
/// figures line and asserts lost = 0.
async fn settle(app: &TestApp, chaos: &Chaos, ingested: &[String], tag: &str) -> usize {
    let all = eventually(Duration::from_secs(90), || async {
        let got = chaos.delivered();
        ingested.iter().all(|id| got.contains_key(id)).then_some(())
    })
    .await;
    let got = chaos.delivered();
    let lost: Vec<_> = ingested
        .iter()
        .filter(|id| !got.contains_key(*id))
        .collect();
    assert!(
        all.is_some() && lost.is_empty(),
        "{tag}: {} lost: {lost:?}",
        lost.len()
    );
    let pending = eventually(Duration::from_secs(30), || async {
        let (_, list) = app
            .get("/v1/tenants/default/deliveries?status=pending&limit=250")
            .await;
        list["data"].as_array()?.is_empty().then_some(())
    })
    .await;
    assert!(pending.is_some(), "{tag}: deliveries stuck pending");
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!(
        "fault {tag}: ingested {}, delivered {}, duplicates {duplicates}, lost 0, requests {}",
        ingested.len(),
        got.len(),
        chaos.requests()
    );
    duplicates
}

async fn campaign(tag: &str, policy: impl Fn(usize) -> Answer + Send + Sync + 'static) {
    let app = app().await;
    let chaos = Chaos::start(policy).await;
    app.endpoint(json!({"url": chaos.url()})).await;
    let ids = ingest(&app, events_per_fault(), tag).await;
    settle(&app, &chaos, &ids, tag).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_that_hangs_past_the_timeout() {
    // Every third request hangs for an hour; the 500 ms timeout retries them.
    campaign(
        "hang",
        |n| if n % 3 == 1 { Answer::Hang } else { Answer::Ok },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_that_resets_connections() {
    campaign("reset", |n| {
        if n % 2 == 1 {
            Answer::Reset
        } else {
            Answer::Ok
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_that_sends_a_huge_response() {
    // Every answer is 200 with 64 MiB of body: hookrelay keeps only an excerpt.
    campaign("huge", |_| Answer::Huge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_that_answers_5xx_at_random() {
    campaign("random-5xx", |_| {
        if rand::thread_rng().gen_bool(0.5) {
            Answer::ServerError
        } else {
            Answer::Ok
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_for_a_while_then_up() {
    let app = app().await;
    // A port nobody listens on (yet).
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    app.endpoint(json!({"url": format!("http://{addr}/hook")}))
        .await;
    let ids = ingest(&app, events_per_fault(), "down-up").await;
    // Down until attempts have failed (connection refused) and the breaker has likely opened.
    let failed = eventually(Duration::from_secs(30), || async {
        let (_, list) = app
            .get("/v1/tenants/default/deliveries?status=pending&limit=250")
            .await;
        let all = list["data"].as_array()?;
        let attempts: u64 = all.iter().filter_map(|d| d["attempt_count"].as_u64()).sum();
        (all.len() == ids.len() && attempts >= 5).then_some(())
    })
    .await;
    assert!(failed.is_some(), "the receiver's absence was never noticed");
    let chaos = Chaos::start_on(addr).await;
    settle(&app, &chaos, &ids, "down-up").await;
    app.stop().await;
}
