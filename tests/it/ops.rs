//! Operations: health numbers, Prometheus metrics, trace context from the SQL function,
//! alerts through the pipeline, the endpoint test, the inbox and retention.

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{http::StatusCode, response::IntoResponse};
use hookrelay::{
    domain::{self, DeliveryStatus, Event},
    store::{ops::DispatcherBeat, DataCheck, Ingested, Store},
};
use serde_json::{json, Value};

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// `GET /v1/health` (admin token), polled until `done` holds.
async fn health_when(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let found = eventually(WAIT, || async {
        let (status, h) = app.get("/v1/health").await;
        // 503 exactly when it reports unhealthy, with the same body.
        let want = if h["healthy"] == true {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(status, want, "{h}");
        *last.lock().unwrap() = h.clone();
        done(&h).then_some(h)
    })
    .await;
    found.unwrap_or_else(|| panic!("health never matched: {}", last.lock().unwrap()))
}

async fn health_counts_what_happened(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let ok = Receiver::ok().await;
    let bad = Receiver::start(Duration::ZERO, |_, _| {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
    .await;
    app.endpoint(json!({"url": ok.url, "event_types": ["ok.*", "later.*"]}))
        .await;
    app.endpoint(json!({"url": bad.url, "event_types": ["bad.*"], "max_attempts": 1}))
        .await;
    let (n, m, k) = (5, 3, 2);
    for i in 0..n {
        app.event("ok.done", json!({"i": i})).await;
    }
    for i in 0..m {
        app.event("bad.done", json!({"i": i})).await;
    }
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for i in 0..k {
        let (s, _) = app
            .post(
                "/v1/tenants/default/events",
                json!({"type": "later.done", "data": {"i": i}, "deliver_at": later}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    // Seen under a loaded full run on PostgreSQL: `delivered` already counted the last
    // delivery while `total` did not yet. Wait until every count of both windows agrees.
    let h = health_when(&app, |h| {
        ["last_hour", "last_24_hours"].iter().all(|w| {
            let w = &h["stats"][w];
            w["delivered"] == n && w["failed"] == m && w["total"] == n + m + k
        })
    })
    .await;
    for window in ["last_hour", "last_24_hours"] {
        let w = &h["stats"][window];
        assert_eq!(w["delivered"], n, "{h}");
        assert_eq!(w["failed"], m, "{h}");
        assert_eq!(w["pending"], k, "{h}");
        assert_eq!(w["total"], n + m + k, "{h}");
        assert_eq!(w["attempts"], n + m, "{h}");
        assert_eq!(w["retries"], 0, "{h}");
    }
    assert_eq!(h["pending"], k);
    assert!(h["oldest_pending_age_seconds"].as_f64().unwrap() >= 0.0);
    let p50 = h["latency_ms"]["p50"].as_f64().expect("p50");
    let p95 = h["latency_ms"]["p95"].as_f64().expect("p95");
    assert!(p50 > 0.0 && p50 <= p95 && p95 < 10_000.0, "{h}");
    assert!(h["deliveries_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(h["circuit_breakers"]["open"], 0);
    assert_eq!(
        h["circuit_breakers"]["by_state"],
        json!({"closed": 2, "open": 0, "half_open": 0})
    );
    assert_eq!(h["disabled_endpoints"], json!([]));
    let dispatchers = h["dispatchers"].as_array().unwrap();
    assert_eq!(dispatchers.len(), 1, "{h}");
    assert_eq!(dispatchers[0]["stalled"], false);
    assert_eq!(dispatchers[0]["pid"], std::process::id());
    assert_eq!(h["healthy"], true, "{h}");
    assert_eq!(h["reasons"], json!([]));
    // A monitor's check needs no token.
    let (s, status) = send(app.http.get(app.url("/status"))).await;
    assert_eq!(s, StatusCode::OK, "{status}");
    assert_eq!(status, json!({"healthy": true, "failing": []}));

    // Admin only.
    let (s, t) = app.post("/v1/tenants/default/tokens", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (s, _) = send(
        app.http
            .get(app.url("/v1/health"))
            .bearer_auth(t["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(app.http.get(app.url("/v1/health"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The numbers survive a restart: they are kept in the store.
    let app = app.restart().await;
    let h = health_when(&app, |h| h["stats"]["last_hour"]["delivered"] == n).await;
    assert_eq!(h["stats"]["last_hour"]["failed"], m);
    app.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the text format parses")
}

/// The value of a counter or gauge sample with these labels (0 when absent).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count)
                .unwrap_or(0.0),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

async fn metrics_text(app: &TestApp) -> prometheus_parse::Scrape {
    let resp = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    scrape(&resp.text().await.unwrap())
}

#[tokio::test]
async fn metrics_parse_and_their_counters_move() {
    // The flaky endpoint keeps retrying (no breaker, many attempts) until it is healthy.
    let app = spawn_app_on(Backend::Sqlite, |c| c.breaker.threshold = 1000).await;
    let ok = Receiver::ok().await;
    let (flaky, healthy) = Receiver::switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    app.endpoint(json!({"url": ok.url, "event_types": ["ok.*"]}))
        .await;
    app.endpoint(json!({"url": flaky.url, "event_types": ["flaky.*"], "max_attempts": 1000}))
        .await;
    let before = metrics_text(&app).await;
    assert_eq!(
        value(
            &before,
            "hookrelay_deliveries_total",
            &[("outcome", "delivered")]
        ),
        0.0
    );
    // Process metrics are there (Linux).
    assert!(value(&before, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&before, "process_start_time_seconds", &[]) > 0.0);

    for i in 0..4 {
        app.event("ok.x", json!({"i": i})).await;
    }
    let held = app.event("flaky.x", json!({})).await;
    let held_id = held["deliveries"][0]["id"].as_str().unwrap().to_owned();
    ok.wait_for(4, WAIT).await;
    flaky.wait_for(1, WAIT).await;
    let during = eventually(WAIT, || async {
        let s = metrics_text(&app).await;
        (value(
            &s,
            "hookrelay_deliveries_total",
            &[("outcome", "delivered")],
        ) == 4.0
            && value(&s, "hookrelay_attempts_total", &[("outcome", "retry")]) >= 1.0
            // The store's gauges are read at most every few seconds.
            && value(&s, "hookrelay_pending_deliveries", &[]) == 1.0)
            .then_some(s)
    })
    .await
    .expect("counters moved");
    let http = [("destination", "http")];
    assert_eq!(value(&during, "hookrelay_events_ingested_total", &[]), 5.0);
    assert_eq!(
        value(&during, "hookrelay_deliveries_created_total", &[]),
        5.0
    );
    assert_eq!(
        value(
            &during,
            "hookrelay_attempts_total",
            &[("outcome", "success"), http[0]]
        ),
        4.0
    );
    assert_eq!(
        value(&during, "hookrelay_delivery_latency_seconds", &http),
        4.0,
        "one end-to-end observation per delivered delivery"
    );
    let attempts = value(&during, "hookrelay_attempts_total", &[]);
    assert_eq!(
        value(&during, "hookrelay_attempt_duration_seconds", &http),
        attempts
    );
    assert_eq!(value(&during, "hookrelay_pending_deliveries", &[]), 1.0);
    assert!(value(&during, "hookrelay_oldest_pending_age_seconds", &[]) >= 0.0);
    assert_eq!(value(&during, "hookrelay_open_breakers", &[]), 0.0);
    assert_eq!(value(&during, "hookrelay_disabled_endpoints", &[]), 0.0);

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    app.wait_delivery(&held_id, "delivered").await;
    let after = eventually(WAIT, || async {
        let s = metrics_text(&app).await;
        (value(
            &s,
            "hookrelay_deliveries_total",
            &[("outcome", "delivered")],
        ) == 5.0
            && value(&s, "hookrelay_pending_deliveries", &[]) == 0.0)
            .then_some(s)
    })
    .await
    .expect("the retried delivery counted");
    assert_eq!(value(&after, "hookrelay_pending_deliveries", &[]), 0.0);
    assert_eq!(
        value(
            &after,
            "hookrelay_deliveries_total",
            &[("outcome", "failed")]
        ),
        0.0
    );
    app.stop().await;
}

/// `/metrics` is open to anyone who can reach it: scrapes share one read of the store's
/// gauges per few seconds instead of counting every pending delivery each time.
#[tokio::test]
async fn metrics_scrapes_share_the_store_read() {
    let app = spawn_app_on(Backend::Sqlite, |_| {}).await;
    let (down, _) = Receiver::switchable(StatusCode::SERVICE_UNAVAILABLE).await;
    app.endpoint(json!({"url": down.url, "max_attempts": 100}))
        .await;
    let first = metrics_text(&app).await;
    let read = std::time::Instant::now();
    assert_eq!(value(&first, "hookrelay_pending_deliveries", &[]), 0.0);
    for i in 0..3 {
        app.event("order.paid", json!({"i": i})).await;
    }
    // Many scrapes right away: all answered from the same read.
    let scrapes = futures::future::join_all((0..20).map(|_| metrics_text(&app))).await;
    if read.elapsed() < hookrelay::ops::metrics::STORE_GAUGES_MAX_AGE {
        for s in &scrapes {
            assert_eq!(value(s, "hookrelay_pending_deliveries", &[]), 0.0);
        }
    }
    // And a later scrape sees the store as it is.
    eventually(WAIT, || async {
        let s = metrics_text(&app).await;
        (value(&s, "hookrelay_pending_deliveries", &[]) == 3.0).then_some(())
    })
    .await
    .expect("the gauges are read again");
    app.stop().await;
}

/// An event ingested without a trace context starts its own trace: the event (read back)
/// and the delivered request carry the same new `traceparent`, another one per event.
#[tokio::test]
async fn an_event_without_a_trace_context_gets_one() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    app.endpoint(json!({"url": r.url})).await;
    let mut events = Vec::new();
    for n in [1, 2] {
        let accepted = app.event("order.paid", json!({"n": n})).await;
        let id = accepted["id"].as_str().unwrap();
        let (_, ev) = app.get(&format!("/v1/tenants/default/events/{id}")).await;
        events.push(ev);
    }
    let got = r.wait_for(2, WAIT).await;
    for ev in &events {
        let tp = ev["traceparent"]
            .as_str()
            .expect("the event has a traceparent");
        assert!(hookrelay::telemetry::trace::valid_traceparent(tp), "{tp}");
        let delivered = got
            .iter()
            .find(|g| g.json()["data"]["n"] == ev["data"]["n"])
            .expect("delivered");
        assert_eq!(delivered.header("traceparent"), tp);
    }
    assert_ne!(events[0]["traceparent"], events[1]["traceparent"]);
    app.stop().await;
}

/// A `traceparent` given to `dispatch_webhook()` (its fifth argument) reaches the receiver,
/// as one given on ingest does (see `delivery.rs`).
#[tokio::test]
async fn the_sql_function_carries_a_traceparent_to_the_receiver() {
    use sqlx::Connection;
    let app = spawn_app_on(Backend::Postgres, |_| {}).await;
    let r = Receiver::ok().await;
    app.endpoint(json!({"url": r.url})).await;
    let mut conn = sqlx::PgConnection::connect(app.database_url())
        .await
        .unwrap();
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    sqlx::query("SELECT dispatch_webhook('order.paid', '{\"n\": 1}', NULL, 'default', $1)")
        .bind(tp)
        .execute(&mut conn)
        .await
        .unwrap();
    // Without it, and with a malformed one, a trace is started for the event.
    sqlx::query("SELECT dispatch_webhook('order.paid', '{\"n\": 2}')")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SELECT dispatch_webhook('order.paid', '{\"n\": 3}', NULL, 'default', 'bad')")
        .execute(&mut conn)
        .await
        .unwrap();
    let got = r.wait_for(3, WAIT).await;
    let by_n: HashMap<i64, String> = got
        .iter()
        .map(|g| {
            (
                g.json()["data"]["n"].as_i64().unwrap(),
                g.header("traceparent").to_owned(),
            )
        })
        .collect();
    assert_eq!(by_n[&1], tp);
    assert_eq!(&by_n[&1][3..35], "0af7651916cd43dd8448eb211c80319c");
    for n in [2, 3] {
        let made = &by_n[&n];
        assert!(
            hookrelay::telemetry::trace::valid_traceparent(made),
            "{made}"
        );
        assert_ne!(&made[3..35], "0af7651916cd43dd8448eb211c80319c");
    }
    assert_ne!(by_n[&2][3..35], by_n[&3][3..35], "each event its own trace");
    app.stop().await;
}

/// What a sink received: (event type, rule, subject), in order.
pub(crate) fn announcements(sink: &Receiver) -> Vec<(String, String, String)> {
    sink.requests()
        .iter()
        .map(|r| {
            let b = r.json();
            (
                b["type"].as_str().unwrap_or_default().to_owned(),
                b["data"]["rule"].as_str().unwrap_or_default().to_owned(),
                b["data"]["subject"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

pub(crate) async fn wait_announced(sink: &Receiver, kind: &str, rule: &str, subject: &str) {
    let found = eventually(WAIT, || async {
        announcements(sink)
            .iter()
            .any(|(t, r, s)| t == kind && r == rule && s == subject)
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no {kind} for {rule}/{subject}: {:?}",
        announcements(sink)
    );
}

/// Four deliveries due in an hour, to a new endpoint (returned, with its receiver): more
/// pending than a `pending` threshold of 3.
pub(crate) async fn hold_four_deliveries(app: &TestApp) -> (Value, Receiver) {
    let parked = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": parked.url, "event_types": ["later.*"]}))
        .await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for i in 0..4 {
        app.post(
            "/v1/tenants/default/events",
            json!({"type": "later.x", "data": {"i": i}, "deliver_at": later}),
        )
        .await;
    }
    (ep, parked)
}

/// An endpoint answering 500 until the flag is set (its id, receiver and flag), and three
/// events for it: enough to open a breaker with a threshold of 3, and no more pending.
pub(crate) async fn fail_three_events(
    app: &TestApp,
) -> (String, Receiver, Arc<std::sync::atomic::AtomicBool>) {
    let (flaky, healthy) = Receiver::switchable(StatusCode::INTERNAL_SERVER_ERROR).await;
    let ep = app
        .endpoint(json!({"url": flaky.url, "event_types": ["flaky.*"], "max_attempts": 1000}))
        .await;
    for i in 0..3 {
        app.event("flaky.x", json!({"i": i})).await;
    }
    (ep["id"].as_str().unwrap().to_owned(), flaky, healthy)
}

async fn each_alert_rule_fires_once_reaches_the_sink_and_resolves(backend: Backend) {
    let sink = Receiver::ok().await;
    let sink_url: url::Url = sink.url.parse().unwrap();
    // A sink on a network the URL rules refuse (never contacted) gets nothing; the other
    // still works.
    let refused: url::Url = "http://10.255.255.1/alerts".parse().unwrap();
    let app = spawn_app_on(backend, |c| {
        c.alerts.sinks = vec![refused, sink_url];
        c.alerts.interval = Duration::from_millis(100);
        c.alerts.thresholds.pending = 3;
        c.alerts.thresholds.min_attempts = 4;
        c.alerts.thresholds.stall = Duration::from_secs(60);
        c.breaker.threshold = 3;
        c.breaker.cooldown = Duration::from_millis(300);
    })
    .await;

    // pending: four deliveries due in an hour; resolved when their endpoint goes.
    let (ep, _parked) = hold_four_deliveries(&app).await;
    wait_announced(&sink, "hookrelay.alert.fired", "pending", "global").await;
    // The sink's endpoint was made under the endpoint rules, and audited as the system's;
    // the refused sink has none.
    let (s, audit) = app
        .get("/v1/tenants/hookrelay/audit?action=endpoint.created")
        .await;
    assert_eq!(s, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["actor"], "system", "{audit}");
    let (s, _) = send(app.req(
        reqwest::Method::DELETE,
        &format!(
            "/v1/tenants/default/endpoints/{}",
            ep["id"].as_str().unwrap()
        ),
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_announced(&sink, "hookrelay.alert.resolved", "pending", "global").await;

    // breaker_open and failure_rate: an endpoint that fails, then recovers.
    // Three events (at most three pending: the pending rule stays quiet).
    let (flaky_id, _flaky, healthy) = fail_three_events(&app).await;
    wait_announced(&sink, "hookrelay.alert.fired", "breaker_open", &flaky_id).await;
    // Health counts the breaker by its state (open, or half-open while a probe runs).
    let h = health_when(&app, |h| {
        let s = &h["circuit_breakers"]["by_state"];
        s["open"].as_u64().unwrap_or(0) + s["half_open"].as_u64().unwrap_or(0) == 1
    })
    .await;
    assert!(
        h["circuit_breakers"]["by_state"]["closed"]
            .as_u64()
            .is_some(),
        "{h}"
    );
    wait_announced(&sink, "hookrelay.alert.fired", "failure_rate", "global").await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    wait_announced(&sink, "hookrelay.alert.resolved", "breaker_open", &flaky_id).await;
    // Successes bring the failure rate of the hour under 50 %; one at a time, so that
    // no more than three are ever pending.
    for i in 0..20 {
        let ev = app.event("flaky.x", json!({"ok": i})).await;
        app.wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "delivered")
            .await;
    }
    wait_announced(&sink, "hookrelay.alert.resolved", "failure_rate", "global").await;

    // endpoint_disabled: 410 Gone disables the endpoint; re-enabling resolves it.
    let gone = Receiver::start(Duration::ZERO, |_, _| StatusCode::GONE.into_response()).await;
    let ep = app
        .endpoint(json!({"url": gone.url, "event_types": ["gone.*"]}))
        .await;
    let gone_id = ep["id"].as_str().unwrap().to_owned();
    app.event("gone.x", json!({})).await;
    wait_announced(
        &sink,
        "hookrelay.alert.fired",
        "endpoint_disabled",
        &gone_id,
    )
    .await;
    let (s, _) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/default/endpoints/{gone_id}"),
        )
        .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    wait_announced(
        &sink,
        "hookrelay.alert.resolved",
        "endpoint_disabled",
        &gone_id,
    )
    .await;

    // dispatcher_stalled: a dispatcher that went silent ten minutes ago, then speaks again.
    let now = domain::now();
    let mut ghost = DispatcherBeat {
        id: "dsp_ghost".into(),
        hostname: "elsewhere".into(),
        pid: 4242,
        started_at: now - chrono::Duration::hours(1),
        last_heartbeat: now - chrono::Duration::minutes(10),
        stopped_at: None,
    };
    app.store.heartbeat(&ghost).await.unwrap();
    wait_announced(
        &sink,
        "hookrelay.alert.fired",
        "dispatcher_stalled",
        "dsp_ghost",
    )
    .await;
    let h = health_when(&app, |h| h["healthy"] == false).await;
    assert!(
        h["reasons"].to_string().contains("dsp_ghost"),
        "{}",
        h["reasons"]
    );
    // The monitor's check: 503 with the rule's name, and no id of anyone's.
    let (s, status) = send(app.http.get(app.url("/status"))).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{status}");
    assert_eq!(status["healthy"], false);
    assert!(
        status["failing"]
            .as_array()
            .unwrap()
            .contains(&json!("dispatcher_stalled")),
        "{status}"
    );
    assert!(!status.to_string().contains("dsp_") && !status.to_string().contains("ep_"));
    ghost.last_heartbeat = domain::now();
    app.store.heartbeat(&ghost).await.unwrap();
    wait_announced(
        &sink,
        "hookrelay.alert.resolved",
        "dispatcher_stalled",
        "dsp_ghost",
    )
    .await;

    // Nothing fired twice: each (rule, subject) once fired, once resolved, in that order,
    // even after more evaluation rounds and a restart. Another ghost, announced after all
    // that, marks that the rounds have run (rounds are sequential).
    let app = app.restart().await;
    ghost.id = "dsp_ghost2".into();
    ghost.last_heartbeat = domain::now() - chrono::Duration::minutes(10);
    app.store.heartbeat(&ghost).await.unwrap();
    wait_announced(
        &sink,
        "hookrelay.alert.fired",
        "dispatcher_stalled",
        "dsp_ghost2",
    )
    .await;
    ghost.last_heartbeat = domain::now();
    app.store.heartbeat(&ghost).await.unwrap();
    wait_announced(
        &sink,
        "hookrelay.alert.resolved",
        "dispatcher_stalled",
        "dsp_ghost2",
    )
    .await;
    let got = announcements(&sink);
    let mut seen: HashMap<(String, String), Vec<String>> = HashMap::new();
    for (t, r, s) in &got {
        seen.entry((r.clone(), s.clone()))
            .or_default()
            .push(t.clone());
    }
    for rule in [
        "pending",
        "breaker_open",
        "failure_rate",
        "endpoint_disabled",
        "dispatcher_stalled",
    ] {
        assert!(
            seen.keys().any(|(r, _)| r == rule),
            "{rule} never fired: {got:?}"
        );
    }
    for (key, kinds) in &seen {
        assert_eq!(
            kinds,
            &["hookrelay.alert.fired", "hookrelay.alert.resolved"],
            "{key:?}: {got:?}"
        );
    }
    // The announcements are signed deliveries of the system tenant, in its log.
    let first = &sink.requests()[0];
    assert!(first.header("webhook-signature").starts_with("v1,"));
    // (A receiver sees a request before its attempt is recorded: wait for the records.)
    let recorded = eventually(WAIT, || async {
        let (s, list) = app
            .get("/v1/tenants/hookrelay/deliveries?status=delivered&limit=250")
            .await;
        assert_eq!(s, StatusCode::OK);
        (list["data"].as_array().unwrap().len() == got.len()).then_some(())
    })
    .await;
    assert!(
        recorded.is_some(),
        "every announcement is a delivered delivery"
    );
    app.stop().await;
}

#[tokio::test]
async fn slack_sinks_get_a_text_body() {
    let sink = Receiver::ok().await;
    let sink_url: url::Url = sink.url.parse().unwrap();
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.alerts.sinks = vec![sink_url];
        c.alerts.format = hookrelay::ops::alerts::AlertFormat::Slack;
        c.alerts.interval = Duration::from_millis(100);
        c.alerts.thresholds.pending = 0;
    })
    .await;
    let parked = Receiver::ok().await;
    app.endpoint(json!({"url": parked.url})).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    app.post(
        "/v1/tenants/default/events",
        json!({"type": "later.x", "data": {}, "deliver_at": later}),
    )
    .await;
    let got = sink.wait_for(1, WAIT).await;
    let body = got[0].json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("ALERT pending"), "{text}");
    // Signed over the body it carries, with the sink endpoint's secret.
    let (_, eps) = app.get("/v1/tenants/hookrelay/endpoints").await;
    let id = eps["data"][0]["id"].as_str().unwrap();
    let (_, ep) = app
        .get(&format!("/v1/tenants/hookrelay/endpoints/{id}"))
        .await;
    let secret = ep["secret"].as_str().unwrap();
    hookrelay::signing::verify(
        &[secret],
        Some(got[0].header("webhook-id")),
        Some(got[0].header("webhook-timestamp")),
        Some(got[0].header("webhook-signature")),
        &got[0].body,
        chrono::Utc::now().timestamp(),
    )
    .expect("the Slack body is signed");
    app.stop().await;
}

async fn inbox_keeps_messages_and_judges_signatures(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (s, inbox) = app.post("/v1/tenants/default/inboxes", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{inbox}");
    let inbox_id = inbox["id"].as_str().unwrap().to_owned();
    let secret = inbox["secret"].as_str().unwrap().to_owned();
    let url = app.url(inbox["path"].as_str().unwrap());
    assert_eq!(inbox["url"].as_str().unwrap(), url);

    // One endpoint signs with the inbox's secret, one with another.
    let good = app
        .endpoint(json!({"url": url, "event_types": ["inbox.*"], "secret": secret}))
        .await;
    let bad = app
        .endpoint(json!({"url": url, "event_types": ["inbox.*"]}))
        .await;
    let ev = app.event("inbox.hello", json!({"hello": "world"})).await;
    // And someone posts something unsigned.
    let (s, r) = send(
        app.http
            .post(&url)
            .header("x-probe", "1")
            .body("not json \u{0}at all"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["verification"], "unsigned");

    let path = format!("/v1/tenants/default/inboxes/{inbox_id}/messages");
    let messages = eventually(WAIT, || async {
        let (_, m) = app.get(&path).await;
        (m["data"].as_array().map(Vec::len) == Some(3)).then_some(m)
    })
    .await
    .expect("three messages");
    let check = |messages: &Value| {
        let data = messages["data"].as_array().unwrap();
        let by_verification = |v: &str| {
            data.iter()
                .filter(|m| m["verification"] == v)
                .cloned()
                .collect::<Vec<_>>()
        };
        let valid = by_verification("valid");
        let invalid = by_verification("invalid");
        let unsigned = by_verification("unsigned");
        assert_eq!(
            (valid.len(), invalid.len(), unsigned.len()),
            (1, 1, 1),
            "{messages}"
        );
        for m in valid.iter().chain(&invalid) {
            assert_eq!(m["headers"]["webhook-id"], ev["id"]);
            let body: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["data"], json!({"hello": "world"}));
            assert_eq!(m["method"], "POST");
        }
        assert!(invalid[0]["verify_error"].as_str().unwrap().len() > 3);
        assert_eq!(unsigned[0]["headers"]["x-probe"], "1");
        assert!(unsigned[0]["body"]
            .as_str()
            .unwrap()
            .starts_with("not json"));
    };
    check(&messages);
    let _ = (good, bad);

    // Kept across a restart.
    let app = app.restart().await;
    let (s, again) = app.get(&path).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["data"], messages["data"]);
    check(&again);

    // Unknown tokens are 404; inboxes of another tenant are not visible.
    let (s, _) = send(app.http.post(app.url("/inbox/nope")).body("x")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "other", "name": "o"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .get(&format!("/v1/tenants/other/inboxes/{inbox_id}/messages"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, list) = app.get("/v1/tenants/default/inboxes").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], inbox_id.as_str());
    app.stop().await;
}

async fn the_test_endpoint_sends_now_and_returns_the_attempt(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::start(Duration::ZERO, |_, _| {
        (StatusCode::OK, "pong from receiver").into_response()
    })
    .await;
    let failing = Receiver::start(Duration::ZERO, |_, _| {
        (StatusCode::BAD_GATEWAY, "upstream down").into_response()
    })
    .await;
    // Subscribed to nothing like webhook.test: the test goes to this endpoint anyway, and
    // only to it.
    let ep = app
        .endpoint(json!({"url": r.url, "event_types": ["user.*"]}))
        .await;
    let other = Receiver::ok().await;
    app.endpoint(json!({"url": other.url})).await;
    let id = ep["id"].as_str().unwrap();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (s, t) = send(
        app.req(
            reqwest::Method::POST,
            &format!("/v1/tenants/default/endpoints/{id}/test"),
        )
        .header("traceparent", tp),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "delivered");
    assert_eq!(t["outcome"], "success");
    assert_eq!(t["status_code"], 200);
    assert_eq!(t["response"], "pong from receiver");
    assert!(t["latency_ms"].as_u64().is_some());
    // It arrived, signed, before the answer.
    assert_eq!(r.count(), 1);
    let got = &r.requests()[0];
    assert_eq!(got.json()["type"], "webhook.test");
    assert_eq!(got.header("traceparent"), tp);
    hookrelay::signing::verify(
        &[ep["secret"].as_str().unwrap()],
        Some(got.header("webhook-id")),
        Some(got.header("webhook-timestamp")),
        Some(got.header("webhook-signature")),
        &got.body,
        chrono::Utc::now().timestamp(),
    )
    .expect("signed like any delivery");
    // Recorded like any delivery.
    let d = app
        .wait_delivery(t["delivery_id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);

    // A failing endpoint: the attempt says why; not retried.
    let ep = app
        .endpoint(json!({"url": failing.url, "event_types": ["none"]}))
        .await;
    let id = ep["id"].as_str().unwrap();
    let (s, t) = app
        .post(
            &format!("/v1/tenants/default/endpoints/{id}/test"),
            json!({"data": {"x": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["status"], "failed");
    assert_eq!(t["status_code"], 502);
    assert_eq!(t["response"], "upstream down");
    assert_eq!(failing.requests()[0].json()["data"], json!({"x": 1}));
    let (s, _) = app
        .post("/v1/tenants/default/endpoints/ep_nope/test", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(other.count(), 0, "a test goes to its endpoint only");
    app.stop().await;
}

struct NoCheck;
impl DataCheck for NoCheck {
    fn check(&self, _: &domain::EventType, _: &Value) -> Result<(), String> {
        Ok(())
    }
}

/// An event as if ingested `age` ago (its id and time say so).
fn old_event(age: chrono::Duration) -> Event {
    let at = domain::now() - age;
    Event {
        id: format!(
            "evt_{}",
            ulid::Ulid::from_parts(
                u64::try_from(at.timestamp_millis()).unwrap(),
                rand::random()
            )
        ),
        tenant_id: "default".into(),
        event_type: "old.x".into(),
        data: json!({}),
        actor: None,
        idempotency_key: None,
        traceparent: None,
        created_at: at,
        deliver_at: None,
    }
}

async fn retention_deletes_old_history_but_never_pending_work(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let ep = app.endpoint(json!({"url": r.url})).await;
    let store: Arc<dyn Store> = app.store.clone();
    let day = chrono::Duration::days(1);
    // Forty days old and delivered; forty days old and still pending (its endpoint was
    // disabled before it could go); yesterday's.
    let mut old = Vec::new();
    for _ in 0..3 {
        let Ingested::Created(e, ds) = store
            .ingest(old_event(day * 40), 5, Arc::new(NoCheck))
            .await
            .unwrap()
        else {
            panic!("created")
        };
        old.push((e, ds[0].id.clone()));
    }
    for (_, d) in &old {
        app.wait_delivery(d, "delivered").await;
    }
    let (s, _) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!(
                "/v1/tenants/default/endpoints/{}",
                ep["id"].as_str().unwrap()
            ),
        )
        .json(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let Ingested::Created(_, kept) = store
        .ingest(old_event(day * 40), 5, Arc::new(NoCheck))
        .await
        .unwrap()
    else {
        panic!("created")
    };
    assert!(kept.is_empty(), "a disabled endpoint gets no deliveries");
    // A pending delivery of an old event: made by hand (disabled endpoints get none).
    let stuck = old_event(day * 40);
    let stuck_delivery = hookrelay::domain::Delivery {
        id: hookrelay::domain::new_id("dlv"),
        tenant_id: "default".into(),
        event_id: stuck.id.clone(),
        endpoint_id: ep["id"].as_str().unwrap().into(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        max_attempts: 5,
        next_attempt_at: Some(stuck.created_at),
        last_error: None,
        ordering_key: None,
        ordering_blocks: false,
        created_at: stuck.created_at,
        updated_at: stuck.created_at,
    };
    store
        .insert_leased(&stuck, &stuck_delivery, "lse_none")
        .await
        .unwrap();
    let recent = app.event("new.x", json!({})).await;

    let pass =
        hookrelay::ops::retention::prune_once(store.as_ref(), Duration::from_secs(30 * 86400))
            .await
            .unwrap();
    assert_eq!(
        pass.events, 4,
        "three delivered old events and one without deliveries"
    );
    for (e, d) in &old {
        assert!(store.get_event("default", &e.id).await.unwrap().is_none());
        assert!(store.get_delivery("default", d).await.unwrap().is_none());
        assert!(store.list_attempts(d).await.unwrap().is_empty());
    }
    assert!(store
        .get_event("default", &stuck.id)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get_delivery("default", &stuck_delivery.id)
        .await
        .unwrap()
        .is_some());
    let (s, _) = app
        .get(&format!(
            "/v1/tenants/default/events/{}",
            recent["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Nothing more to do.
    let pass =
        hookrelay::ops::retention::prune_once(store.as_ref(), Duration::from_secs(30 * 86400))
            .await
            .unwrap();
    assert_eq!((pass.events, pass.more), (0, false));
    app.stop().await;
}

/// Per-endpoint statistics match what the receiver saw: every attempt counted once,
/// successes, retries and final failures, the latency within its bucket, the last success
/// and failure with its error; another tenant's token cannot read them.
async fn endpoint_statistics_match_what_the_receiver_saw(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let receiver = Receiver::start(Duration::ZERO, |_, r| {
        if r.json()["data"]["fail"] == true {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    let other = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": receiver.url, "max_attempts": 2, "event_types": ["order.*"]}))
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    // Another endpoint's traffic is not counted here.
    app.endpoint(json!({"url": other.url, "event_types": ["other.*"]}))
        .await;
    let mut sent_at = Vec::new();
    for i in 0..5 {
        sent_at.push(std::time::Instant::now());
        app.event("order.paid", json!({"i": i})).await;
    }
    app.event("order.paid", json!({"fail": true})).await;
    app.event("other.thing", json!({})).await;
    let path = format!("/v1/tenants/default/endpoints/{id}/stats");
    let last = std::sync::Mutex::new(Value::Null);
    let (stats, counted_by) = eventually(WAIT, || async {
        let (s, st) = app.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{st}");
        *last.lock().unwrap() = st.clone();
        let h = &st["last_hour"];
        (h["attempts"] == 7 && h["delivered"] == 5 && h["failed"] == 1)
            .then(|| (st, std::time::Instant::now()))
    })
    .await
    .unwrap_or_else(|| panic!("statistics never matched: {}", last.lock().unwrap()));
    let seen = receiver.requests();
    let ok = seen
        .iter()
        .filter(|r| r.json()["data"]["fail"] != true)
        .count();
    assert_eq!((seen.len(), ok), (7, 5), "what the receiver saw");
    for window in ["last_hour", "last_24_hours"] {
        let w = &stats[window];
        assert_eq!(w["attempts"], 7, "{stats}");
        assert_eq!(w["delivered"], 5, "{stats}");
        assert_eq!(w["failed"], 1, "{stats}");
        assert_eq!(w["retries"], 1, "{stats}");
        let rate = w["success_rate"].as_f64().unwrap();
        assert!((rate - 5.0 / 7.0).abs() < 1e-9, "{stats}");
    }
    // Latency: hookrelay counts a delivery's latency from its event's creation to the
    // end of the attempt, which comes after the receipt (the answer, then the recording).
    // Every such span ends before the statistics showed them all: at most the bucket that
    // holds the span from the first post until then.
    let slowest_ms = counted_by.duration_since(sent_at[0]).as_millis() as u64;
    let bound = hookrelay::store::ops::E2E_BOUNDS_MS
        .iter()
        .find(|b| **b >= slowest_ms)
        .copied()
        .unwrap_or(u64::MAX);
    let p99 = stats["last_hour"]["latency_ms"]["p99"].as_f64().unwrap();
    let p50 = stats["last_hour"]["latency_ms"]["p50"].as_f64().unwrap();
    assert!(
        0.0 <= p50 && p50 <= p99 && p99 <= bound as f64,
        "{stats} counted within {slowest_ms} ms of the first post"
    );
    assert!(stats["last_success_at"].is_string(), "{stats}");
    assert!(stats["last_failure_at"].is_string(), "{stats}");
    assert!(
        stats["last_error"].as_str().unwrap_or("").contains("503"),
        "{stats}"
    );
    // A tenant's token sees only its own endpoints.
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, tok) = app.post("/v1/tenants/acme/tokens", json!({})).await;
    let token = tok["token"].as_str().unwrap();
    let (s, _) = send(app.http.get(app.url(&path)).bearer_auth(token)).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "another tenant's endpoint is not found"
    );
    let (s, _) = send(
        app.http
            .get(app.url(&format!("/v1/tenants/acme/endpoints/{id}/stats")))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await;
}

crate::both_stores!(
    endpoint_statistics_match_what_the_receiver_saw,
    health_counts_what_happened,
    each_alert_rule_fires_once_reaches_the_sink_and_resolves,
    inbox_keeps_messages_and_judges_signatures,
    the_test_endpoint_sends_now_and_returns_the_attempt,
    retention_deletes_old_history_but_never_pending_work,
    health_stays_fast_with_a_long_history,
);

/// `hookrelay inbox tail` prints what arrives; `hookrelay health` prints the report.
#[tokio::test]
async fn the_cli_follows_an_inbox_and_shows_health() {
    let app = spawn_app().await;
    let (_, inbox) = app.post("/v1/tenants/default/inboxes", json!({})).await;
    let id = inbox["id"].as_str().unwrap().to_owned();
    let url = app.url(inbox["path"].as_str().unwrap());
    let (s, _) = send(app.http.post(&url).body("first")).await;
    assert_eq!(s, StatusCode::OK);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
                .args(&args)
                .env("HOOKRELAY_TOKEN", ADMIN)
                .output()
                .unwrap()
        })
    };
    let base = app.base.clone();
    // Follows: the message already there, then one that arrives while it waits.
    let tail = run(vec![
        "inbox".into(),
        "tail".into(),
        id.clone(),
        "--count".into(),
        "2".into(),
        "--interval".into(),
        "100ms".into(),
        "--server".into(),
        base.clone(),
    ]);
    let (s, _) = send(app.http.post(&url).body("second")).await;
    assert_eq!(s, StatusCode::OK);
    let out = tail.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("unsigned") && lines[0].ends_with("first"),
        "{text}"
    );
    assert!(lines[1].ends_with("second"), "{text}");

    let out = run(vec!["health".into(), "--server".into(), base])
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["healthy"], true);
    app.stop().await;
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the binary exports its spans over OTLP/HTTP, the
/// attempt span in the producer's trace, and the receiver gets that span as its parent.
#[tokio::test]
async fn spans_are_exported_over_otlp_and_the_receiver_joins_the_trace() {
    let collector = Receiver::ok().await;
    let collector_base = collector.url.trim_end_matches("/hook").to_owned();
    let r = Receiver::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("otlp.db").display());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .args(["--admin-token", ADMIN, "--allow-network", "127.0.0.0/8"])
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_base)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let (mut child, base) = start_binary(command);
    let http = reqwest::Client::new();
    let (s, _) = send(
        http.post(format!("{base}/v1/tenants/default/endpoints"))
            .bearer_auth(ADMIN)
            .json(&json!({"url": r.url})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer = format!("00-{trace}-00f067aa0ba902b7-01");
    let (s, _) = send(
        http.post(format!("{base}/v1/tenants/default/events"))
            .bearer_auth(ADMIN)
            .header("traceparent", &producer)
            .json(&json!({"type": "order.paid", "data": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let got = r.wait_for(1, WAIT).await;
    let tp = got[0].header("traceparent").to_owned();
    assert_eq!(&tp[3..35], trace, "same trace: {tp}");
    assert_ne!(tp, producer, "the parent is the attempt span: {tp}");
    // The collector receives spans of that trace (protobuf carries the id's 16 bytes).
    let id = hex::decode(trace).unwrap();
    let exported = eventually(WAIT, || async {
        collector
            .requests()
            .iter()
            .any(|q| q.body.windows(16).any(|w| w == id.as_slice()))
            .then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "OTLP: delivered traceparent {tp}, {} export requests",
        collector.count()
    );
    assert!(
        exported.is_some(),
        "no span of the trace reached the collector ({} requests)",
        collector.count()
    );
    assert_eq!(
        collector.requests()[0].header("content-type"),
        "application/x-protobuf"
    );
}

/// `/v1/health` reads no history: with 100,000 finished deliveries (and attempts), 1,000
/// pending ones and a full day of per-minute counters it still answers quickly.
async fn health_stays_fast_with_a_long_history(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let ep = app.endpoint(json!({"url": r.url, "enabled": false})).await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let minute = now_ms / 60_000;
    // One statement per table, generated in the database.
    let (series, day, pad, ts) = match backend {
        Backend::Sqlite => (
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 101000)",
            "WITH RECURSIVE m(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM m WHERE i < 1439)",
            "printf('%026d', i)",
            "?1",
        ),
        Backend::Postgres => (
            "WITH n(i) AS (SELECT generate_series(1, 101000))",
            "WITH m(i) AS (SELECT generate_series(0, 1439))",
            "lpad(i::text, 26, '0')",
            "to_timestamp(?1 / 1000.0)",
        ),
    };
    let statements = [
        format!(
            "{series} INSERT INTO events (id, tenant_id, type, data, created_at) \
             SELECT 'evt_' || {pad}, 'default', 'bulk.x', '{{}}', {ts} FROM n"
        ),
        format!(
            "{series} INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, \
             attempts, max_attempts, next_attempt_at, created_at, updated_at) \
             SELECT 'dlv_' || {pad}, 'default', 'evt_' || {pad}, ?2, \
                    CASE WHEN i <= 100000 THEN 'delivered' ELSE 'pending' END, 1, 5, \
                    CASE WHEN i <= 100000 THEN NULL ELSE {ts} END, {ts}, {ts} FROM n"
        ),
        format!(
            "{series} INSERT INTO attempts (id, delivery_id, attempt_number, started_at, \
             duration_ms, status_code, outcome) \
             SELECT 'att_' || {pad}, 'dlv_' || {pad}, 1, {ts}, 12, 200, 'success' FROM n \
             WHERE i <= 100000"
        ),
        format!(
            "{day} INSERT INTO stats_minutely (minute, dispatcher, delivered, attempts, e2e_b02) \
             SELECT ?3 - i, 'dsp_bulk', 70, 70, 70 FROM m"
        ),
    ];
    let (mut pg, mut sqlite) = match backend {
        Backend::Postgres => {
            use sqlx::Connection;
            let c = sqlx::PgConnection::connect(&with_hookrelay_tables(app.database_url()))
                .await
                .unwrap();
            (Some(c), None)
        }
        Backend::Sqlite => {
            use sqlx::Connection;
            let c = sqlx::SqliteConnection::connect(app.database_url())
                .await
                .unwrap();
            (None, Some(c))
        }
    };
    let started = std::time::Instant::now();
    for sql in &statements {
        let sql = match backend {
            Backend::Postgres => sql
                .replace("?1", "$1")
                .replace("?2", "$2")
                .replace("?3", "$3"),
            Backend::Sqlite => sql.clone(),
        };
        macro_rules! run {
            ($c:expr) => {
                sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(&ep_id)
                    .bind(minute)
                    .execute($c)
                    .await
                    .unwrap()
            };
        }
        if let Some(c) = pg.as_mut() {
            run!(c);
        } else if let Some(c) = sqlite.as_mut() {
            run!(c);
        }
    }
    if let Some(c) = pg.as_mut() {
        sqlx::query("ANALYZE").execute(c).await.unwrap();
    }
    eprintln!("{backend:?}: history written in {:?}", started.elapsed());
    let mut times = Vec::new();
    for _ in 0..20 {
        let t = std::time::Instant::now();
        let (s, h) = app.get("/v1/health").await;
        times.push(t.elapsed());
        assert!(
            s == StatusCode::OK || s == StatusCode::SERVICE_UNAVAILABLE,
            "{s}"
        );
        assert_eq!(h["pending"], 1000, "{h}");
        // (The oldest minute may have left the window meanwhile.)
        let day = h["stats"]["last_24_hours"]["delivered"].as_u64().unwrap();
        assert!((1439 * 70..=1440 * 70).contains(&day), "{day}");
    }
    times.sort();
    eprintln!(
        "{backend:?}: GET /v1/health with 100,000 finished and 1,000 pending deliveries, 1,440 minutes of counters: p50 {:?}, max {:?}",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times[times.len() / 2] < Duration::from_millis(500));
    app.stop().await;
}
