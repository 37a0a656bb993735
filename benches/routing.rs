//! What routing costs, measured side by side in one run on SQLite:
//!
//! 1. Fan-out with 1,000 endpoints: events ingested per second when no endpoint has a
//!    filter (and none subscribes, so no deliveries are written), when every endpoint has a
//!    filter that the event fails (the filter cost alone), and when each endpoint filters on
//!    its own customer id so that each event goes to exactly one.
//! 2. Delivery rate of an ordered endpoint (100 keys) versus an unordered one, for the same
//!    events to a loopback receiver.
//!
//! `cargo bench --bench routing` (env: ROUTING_EVENTS, default 5000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hookrelay::{
    config::Config,
    domain::routing::{Routing, RoutingSpec},
    domain::{self, new_id, prefix, Endpoint, Event},
    store::{self, DataCheck, Store},
};
use serde_json::json;

struct NoCheck;
impl DataCheck for NoCheck {
    fn check(&self, _: &domain::EventType, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

fn events() -> usize {
    std::env::var("ROUTING_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

fn endpoint(event_types: Vec<String>, filter: Option<serde_json::Value>) -> Endpoint {
    let spec = RoutingSpec {
        filter,
        ..Default::default()
    };
    Endpoint {
        event_types,
        routing: Arc::new(Routing::compile(spec).unwrap()),
        ..Endpoint::new(
            "default",
            "http://127.0.0.1:9/",
            hookrelay::signing::generate_secret(),
        )
    }
}

/// Events ingested per second with 64 concurrent producers, and deliveries written.
async fn ingest_rate(store: Arc<dyn Store>, n: usize) -> (f64, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let deliveries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (store, next, deliveries) = (store.clone(), next.clone(), deliveries.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let event = Event {
                        id: new_id(prefix::EVENT),
                        tenant_id: "default".into(),
                        event_type: "order.paid".into(),
                        data: json!({"customer": i % 1000, "amount": 50, "status": "paid"}),
                        actor: None,
                        idempotency_key: None,
                        traceparent: None,
                        created_at: domain::now(),
                        deliver_at: None,
                    };
                    let got = store.ingest(event, 15, Arc::new(NoCheck)).await.unwrap();
                    if let store::Ingested::Created(_, ds) = got {
                        deliveries.fetch_add(ds.len(), Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    (
        n as f64 / started.elapsed().as_secs_f64(),
        deliveries.load(Ordering::Relaxed),
    )
}

async fn fan_out(n: usize) {
    println!("fan-out, 1,000 endpoints, {n} events, 64 producers (SQLite):");
    let cases: [(&str, &dyn Fn(usize) -> Endpoint); 3] = [
        ("no filter, not subscribed", &|_| {
            endpoint(vec!["other.type".into()], None)
        }),
        ("a filter every event fails", &|_| {
            endpoint(
                vec![],
                Some(json!({"and": [{"field": "data.status", "eq": "paid"},
                                    {"field": "data.amount", "gt": 1000}]})),
            )
        }),
        ("filter on customer, 1 match", &|i| {
            endpoint(vec![], Some(json!({"field": "data.customer", "eq": i})))
        }),
    ];
    let mut first = None;
    for (name, make) in cases {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("fanout.db").display());
        let store = store::connect(&url, 5, &Default::default(), None)
            .await
            .unwrap();
        for i in 0..1000 {
            store.create_endpoint(&make(i), u32::MAX).await.unwrap();
        }
        let (rate, deliveries) = ingest_rate(store, n).await;
        let base = *first.get_or_insert(rate);
        println!(
            "  {name:<30} {rate:>8.0} events/s  ({deliveries} deliveries)  x{:.2}",
            rate / base
        );
    }
}

/// Delivers `n` events (already ingested) to a loopback receiver; returns deliveries/s.
async fn delivery_rate(n: usize, ordering: Option<serde_json::Value>) -> f64 {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let recv = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("order.db").display()),
        admin_token: Some("bench-admin-token-0123456789abcdefghij".into()),
        allow_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    config.role = hookrelay::config::Role::Api;
    let api = hookrelay::App::build(config.clone()).await.unwrap();
    let base = format!("http://{}", api.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(api.run(async {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let mut body = json!({"url": format!("http://{recv}/hook")});
    if let Some(o) = ordering {
        body["ordering"] = o;
    }
    let r = http
        .post(format!("{base}/v1/tenants/default/endpoints"))
        .bearer_auth("bench-admin-token-0123456789abcdefghij")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Ingest everything first, so the dispatcher alone is measured.
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (http, base, next) = (http.clone(), base.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let r = http
                        .post(format!("{base}/v1/tenants/default/events"))
                        .bearer_auth("bench-admin-token-0123456789abcdefghij")
                        .json(&json!({"type": "bench.order", "data": {"key": i % 100, "n": i}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let _ = stop_tx.send(());
    let _ = api_task.await;
    config.role = hookrelay::config::Role::Dispatcher;
    let dispatcher = hookrelay::App::build(config).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(dispatcher.run(async {
        let _ = stop_rx.await;
    }));
    while received.load(Ordering::Relaxed) < n {
        assert!(started.elapsed() < Duration::from_secs(300), "stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = task.await;
    rate
}

#[tokio::main]
async fn main() {
    let n = events();
    fan_out(n).await;
    println!("delivery of {n} pre-ingested events to one loopback endpoint (SQLite):");
    let plain = delivery_rate(n, None).await;
    println!("  unordered                      {plain:>8.0} deliveries/s");
    let ordered = delivery_rate(n, Some(json!({"key": "data.key"}))).await;
    println!(
        "  ordered, 100 keys              {ordered:>8.0} deliveries/s  x{:.2}",
        ordered / plain
    );
}
