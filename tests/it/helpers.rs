//! Test harness: a hookrelay on port 0 with a fresh database, a real HTTP receiver on
//! loopback, and waiting on conditions with deadlines (never bare sleeps).

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use hookrelay::config::{Config, Role};
use serde_json::Value;
use tokio::sync::oneshot;

pub const ADMIN: &str = "test-admin-token-0123456789abcdefghij";

/// The store a test runs against. Tests written once run on both (see `both_stores!`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Server of the Postgres test databases (trust auth); `HOOKRELAY_TEST_POSTGRES` overrides.
pub fn postgres_server() -> String {
    std::env::var("HOOKRELAY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh database with a unique name on the test Postgres server; returns its URL.
pub async fn create_pg_database() -> (String, String) {
    use sqlx::Connection;
    let name = format!("hr_it_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server()))
        .await
        .expect("the test Postgres server is reachable (scripts/services starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    (format!("{}/{name}", postgres_server()), name)
}

/// `url` with hookrelay's schema first on the search path (then `public`, where the
/// application's functions are), for tests that read or write hookrelay's tables behind
/// its back. A SQLite URL is returned as it is.
pub fn with_hookrelay_tables(url: &str) -> String {
    if url.starts_with("sqlite:") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options[search_path]=hookrelay,public")
}

/// Drops a database made by [`create_pg_database`].
pub async fn drop_pg_database(name: &str) {
    use sqlx::Connection;
    if let Ok(mut admin) =
        sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server())).await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// Generates one `#[tokio::test]` per store for each `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

/// A running hookrelay.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    /// The app's own store (for what the API does not show, e.g. a foreign heartbeat).
    pub store: std::sync::Arc<dyn hookrelay::store::Store>,
    /// The admin token this start generated, when none was configured and none was stored.
    pub generated_admin_token: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    pg_database: Option<String>,
    config: Config,
    _dir: tempfile::TempDir,
}

/// Settings for tests: fast retries, loopback allowed.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.join("hookrelay.db").display()),
        admin_token: Some(ADMIN.into()),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        role: Role::All,
        ..Config::default()
    };
    c.retry.base = Duration::from_millis(50);
    c.retry.max_delay = Duration::from_secs(5);
    c.retry.max_attempts = 5;
    c.dispatch.poll_interval = Duration::from_millis(500);
    c.dispatch.request_timeout = Duration::from_secs(5);
    c.dispatch.lease = Duration::from_secs(10);
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_on(Backend::Sqlite, |_| {}).await
}

/// A hookrelay on port 0 with a fresh database of the given kind.
pub async fn spawn_app_on(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    let mut pg_database = None;
    if backend == Backend::Postgres {
        let (url, name) = create_pg_database().await;
        config.database_url = url;
        pg_database = Some(name);
    }
    tweak(&mut config);
    start(config, dir, pg_database).await
}

async fn start(config: Config, dir: tempfile::TempDir, pg_database: Option<String>) -> TestApp {
    if std::env::var_os("HOOKRELAY_TEST_LOG").is_some() {
        hookrelay::telemetry::init();
    }
    let app = hookrelay::App::build(config.clone())
        .await
        .expect("app builds");
    let base = format!("http://{}", app.local_addr());
    let store = app.store();
    let generated_admin_token = app.generated_admin_token().map(str::to_owned);
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        app.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    TestApp {
        base,
        store,
        generated_admin_token,
        http: reqwest::Client::new(),
        stop: Some(tx),
        done: Some(done),
        pg_database,
        config,
        _dir: dir,
    }
}

impl TestApp {
    /// The database this app runs on.
    pub fn database_url(&self) -> &str {
        &self.config.database_url
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the admin token.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(ADMIN)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.req(reqwest::Method::POST, path).json(&body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.req(reqwest::Method::GET, path)).await
    }

    /// Creates an endpoint in the default tenant and returns its JSON.
    pub async fn endpoint(&self, body: Value) -> Value {
        let (status, ep) = self.post("/v1/tenants/default/endpoints", body).await;
        assert_eq!(status, StatusCode::CREATED, "{ep}");
        ep
    }

    pub async fn event(&self, event_type: &str, data: Value) -> Value {
        let (status, ev) = self
            .post(
                "/v1/tenants/default/events",
                serde_json::json!({"type": event_type, "data": data}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ev}");
        ev
    }

    /// Waits until the delivery reaches `status`, and returns its detail with attempts.
    pub async fn wait_delivery(&self, id: &str, status: &str) -> Value {
        let path = format!("/v1/tenants/default/deliveries/{id}");
        let last = std::sync::Mutex::new(Value::Null);
        let found = eventually(Duration::from_secs(20), || async {
            let (_, d) = self.get(&path).await;
            let done = d["status"] == status;
            *last.lock().unwrap() = d.clone();
            done.then_some(d)
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "delivery {id} never reached {status}: {}",
                last.lock().unwrap()
            )
        })
    }

    /// Stops the server and starts a new one on the same database (a restart).
    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }

    /// A restart with changed settings.
    pub async fn restart_with(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.halt().await;
        let pg = self.pg_database.take();
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        let mut config = self.config.clone();
        tweak(&mut config);
        start(config, dir, pg).await
    }

    /// The settings this app runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops the server but keeps its database, for a test to open directly.
    pub async fn halt_keeping_data(&mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(&name).await;
        }
    }
}

/// Starts the hookrelay binary as `command` describes (its standard error is read here, its
/// standard output dropped) and waits for the "hookrelay started" line; returns the child
/// and the server's base URL.
pub fn start_binary(mut command: std::process::Command) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("hookrelay started") {
                let v: Value = serde_json::from_str(&line).unwrap();
                let _ = tx.send(v["addr"].as_str().unwrap().to_owned());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    (child, format!("http://{addr}"))
}

pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request sent");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// Polls `check` until it yields a value or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Responder = dyn Fn(usize, &Received) -> Response + Send + Sync;

struct ReceiverState {
    requests: Mutex<Vec<Received>>,
    respond: Box<Responder>,
    delay: Duration,
}

/// A real HTTP server on loopback that records what it receives.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let got = Received {
        headers,
        body,
        at: Instant::now(),
    };
    // Recorded on arrival, as a receiver that processes before it answers.
    let n = {
        let mut all = state.requests.lock().unwrap();
        all.push(got.clone());
        all.len()
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    (state.respond)(n, &got)
}

impl Receiver {
    /// Answers each request with `respond(n, request)`, `n` counting from 1.
    pub async fn start(
        delay: Duration,
        respond: impl Fn(usize, &Received) -> Response + Send + Sync + 'static,
    ) -> Self {
        let state = Arc::new(ReceiverState {
            requests: Mutex::new(Vec::new()),
            respond: Box::new(respond),
            delay,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(receive).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            state,
        }
    }

    /// Answers `failing` until the returned switch is set, then 200.
    pub async fn switchable(failing: StatusCode) -> (Self, Arc<std::sync::atomic::AtomicBool>) {
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = healthy.clone();
        let r = Self::start(Duration::ZERO, move |_, _| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                StatusCode::OK.into_response()
            } else {
                failing.into_response()
            }
        })
        .await;
        (r, healthy)
    }

    /// Always 200.
    pub async fn ok() -> Self {
        Self::start(Duration::ZERO, |_, _| {
            (StatusCode::OK, "ok").into_response()
        })
        .await
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, || async {
            (self.count() >= n).then(|| self.requests())
        })
        .await
        .unwrap_or_else(|| panic!("receiver got {} of {n} requests", self.count()))
    }
}
