//! Routing beyond event types: payload filters (in hookrelay and in `dispatch_webhook`),
//! transformations, and ordered delivery per key, up to two dispatcher processes on
//! PostgreSQL with a `kill -9`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{http::StatusCode, response::IntoResponse};
use serde_json::{json, Value};

use crate::{crash::start_server, helpers::*};

/// Filter cases shared by the Rust evaluator and the SQL one: (filter, data, actor, match).
fn filter_cases() -> Vec<(Value, Value, Option<&'static str>, bool)> {
    let order = json!({"status": "paid", "amount": 120, "customer": {"country": "DE", "email": null},
                       "items": [{"sku": "A-1"}]});
    vec![
        (
            json!({"field": "data.status", "eq": "paid"}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.status", "eq": "open"}),
            order.clone(),
            None,
            false,
        ),
        (
            json!({"field": "data.missing", "ne": "x"}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.status", "in": ["paid", "refunded"]}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.amount", "gt": 100}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.amount", "lte": 119.5}),
            order.clone(),
            None,
            false,
        ),
        (
            json!({"field": "data.amount", "eq": 120.0}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.status", "gt": 1}),
            order.clone(),
            None,
            false,
        ),
        (
            json!({"field": "data.customer.email", "exists": true}),
            order.clone(),
            None,
            false,
        ),
        (
            json!({"field": "data.customer.country", "exists": true}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "data.items.0.sku", "prefix": "A-"}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "type", "prefix": "order."}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"field": "actor", "eq": "u1"}),
            order.clone(),
            Some("u1"),
            true,
        ),
        (
            json!({"field": "actor", "exists": true}),
            order.clone(),
            None,
            false,
        ),
        (
            json!({"and": [{"field": "data.status", "eq": "paid"}, {"not": {"field": "data.amount", "lt": 100}}]}),
            order.clone(),
            None,
            true,
        ),
        (
            json!({"or": [{"field": "data.status", "eq": "open"}, {"field": "data.customer.country", "in": ["FR"]}]}),
            order,
            None,
            false,
        ),
    ]
}

async fn payload_filters_decide_fan_out(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let mut endpoints = Vec::new();
    for (filter, _, _, _) in filter_cases() {
        let ep = app.endpoint(json!({"url": r.url, "filter": filter})).await;
        assert_eq!(ep["filter"], filter, "the answer shows the filter as given");
        endpoints.push(ep["id"].as_str().unwrap().to_owned());
    }
    for (i, (filter, data, actor, want)) in filter_cases().into_iter().enumerate() {
        let (s, ingested) = app
            .post(
                "/v1/tenants/default/events",
                json!({"type": "order.updated", "data": data, "actor": actor}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let to: Vec<&str> = ingested["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["endpoint_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            to.contains(&endpoints[i].as_str()),
            want,
            "{filter} on {data}"
        );
    }
    // PATCH replaces the filter; null removes it.
    let path = format!("/v1/tenants/default/endpoints/{}", endpoints[1]);
    let (s, b) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"filter": {"field": "data", "gt": "x"}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_routing");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("filter.gt: must be a number"));
    let (s, b) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"filter": null})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b.get("filter").is_none());
    app.stop().await;
}

async fn invalid_routing_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let path = "/v1/tenants/default/endpoints";
    for (body, needle) in [
        (
            json!({"filter": {"field": "data.a", "gtt": 1}}),
            "filter: unknown operator \"gtt\"",
        ),
        (
            json!({"filter": {"or": [{"field": "x", "eq": 1}]}}),
            "filter.or[0].field",
        ),
        (json!({"filter": "a == b"}), "filter: must be an object"),
        (
            json!({"transform": [{"drop": ["a"]}]}),
            "transform[0]: unknown step",
        ),
        (json!({"ordering": {"key": "type"}}), "ordering.key"),
        (
            json!({"ordering": {"key": "data.a", "on_failure": "ignore"}}),
            "on_failure",
        ),
    ] {
        let mut body = body;
        body["url"] = json!("http://127.0.0.1:9/");
        let (s, b) = app.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (_, list) = app.get(path).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    app.stop().await;
}

/// The SQL evaluator used by `dispatch_webhook()` agrees with hookrelay's on every case,
/// and `dispatch_webhook()` fans out by it.
#[tokio::test]
async fn dispatch_webhook_applies_the_same_filters() {
    let (db, name) = create_pg_database().await;
    let app = spawn_app_on(Backend::Sqlite, |c| c.database_url = db.clone()).await;
    let pool = sqlx::PgPool::connect(&with_hookrelay_tables(&db))
        .await
        .unwrap();
    for (filter, data, actor, want) in filter_cases() {
        let spec: hookrelay::domain::routing::RoutingSpec =
            serde_json::from_value(json!({ "filter": filter })).unwrap();
        let rust = hookrelay::domain::routing::Routing::compile(spec).unwrap();
        let event = hookrelay::domain::Event {
            id: "evt_x".into(),
            tenant_id: "default".into(),
            event_type: "order.updated".into(),
            data: data.clone(),
            actor: actor.map(str::to_owned),
            idempotency_key: None,
            traceparent: None,
            created_at: chrono::Utc::now(),
            deliver_at: None,
        };
        let (sql,): (bool,) = sqlx::query_as(
            "SELECT hookrelay_filter_matches($1::jsonb, 'order.updated', $2, 'evt_x', $3::jsonb)",
        )
        .bind(filter.to_string())
        .bind(actor)
        .bind(data.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(rust.matches(&event), want, "rust: {filter}");
        assert_eq!(sql, want, "sql: {filter}");
    }
    let r = Receiver::ok().await;
    let big = app
        .endpoint(
            json!({"url": r.url, "filter": {"field": "data.amount", "gte": 100},
                         "ordering": {"key": "data.order"}}),
        )
        .await;
    let (id,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('order.paid', '{\"amount\": 250, \"order\": \"o-9\"}')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let (_,): (String,) =
        sqlx::query_as("SELECT dispatch_webhook('order.paid', '{\"amount\": 5}')")
            .fetch_one(&pool)
            .await
            .unwrap();
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), id);
    let (_, list) = app.get("/v1/tenants/default/deliveries").await;
    let deliveries = list["data"].as_array().unwrap();
    assert_eq!(
        deliveries.len(),
        1,
        "the small order was filtered out: {list}"
    );
    assert_eq!(deliveries[0]["endpoint_id"], big["id"]);
    assert_eq!(deliveries[0]["ordering_key"], "o-9");
    pool.close().await;
    app.stop().await;
    drop_pg_database(&name).await;
}

async fn transformed_bodies_are_signed_as_sent(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": r.url, "transform": [
            {"rename": {"data.message": "text"}},
            {"set": {"username": "hookrelay"}},
            {"pick": ["text", "username"]}
        ]}))
        .await;
    app.event(
        "alert.raised",
        json!({"message": "disk full", "host": "db1"}),
    )
    .await;
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        got[0].json(),
        json!({"text": "disk full", "username": "hookrelay"})
    );
    hookrelay::signing::verify(
        &[ep["secret"].as_str().unwrap()],
        Some(got[0].header("webhook-id")),
        Some(got[0].header("webhook-timestamp")),
        Some(got[0].header("webhook-signature")),
        &got[0].body,
        chrono::Utc::now().timestamp(),
    )
    .expect("the signature covers the transformed body");
    app.stop().await;
}

/// The order in which each event was first received with success, per key.
type Firsts = Arc<Mutex<Vec<(String, u64)>>>;

/// A receiver that fails about `fail_percent` % of requests at random and records, for each
/// event, its first successful receipt as (key, n).
async fn flaky_receiver(fail_percent: u32) -> (Receiver, Firsts) {
    let firsts: Firsts = Arc::default();
    let seen = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let record = firsts.clone();
    let r = Receiver::start(Duration::ZERO, move |_, req| {
        if rand::random::<u32>() % 100 < fail_percent {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let body = req.json();
        if seen
            .lock()
            .unwrap()
            .insert(req.header("webhook-id").to_owned())
        {
            let key = body["data"]["key"].as_str().unwrap_or_default().to_owned();
            let n = body["data"]["n"].as_u64().unwrap_or_default();
            record.lock().unwrap().push((key, n));
        }
        StatusCode::OK.into_response()
    })
    .await;
    (r, firsts)
}

/// Checks that every key's events were first received in order, all of them.
fn assert_in_order(firsts: &Firsts, keys: usize, per_key: u64) {
    let firsts = firsts.lock().unwrap();
    let mut by_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for (k, n) in firsts.iter() {
        by_key.entry(k).or_default().push(*n);
    }
    assert_eq!(by_key.len(), keys);
    for (k, ns) in by_key {
        let want: Vec<u64> = (0..per_key).collect();
        assert_eq!(ns, want, "key {k} arrived out of order");
    }
}

/// Sends `per_key` events for each of `keys` keys: each key's events one after another
/// (the order to keep), the keys concurrently.
async fn produce_keyed(base: &str, keys: usize, per_key: u64) {
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..keys)
        .map(|k| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                for n in 0..per_key {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let sent = http
                            .post(format!("{base}/v1/tenants/default/events"))
                            .bearer_auth(ADMIN)
                            .header("Idempotency-Key", format!("k{k}-{n}"))
                            .json(&json!({"type": "order.updated",
                                          "data": {"key": format!("k{k}"), "n": n}}))
                            .send()
                            .await;
                        if matches!(&sent, Ok(r) if r.status() == 202) {
                            break;
                        }
                        assert!(Instant::now() < deadline, "ingest failed: {sent:?}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn ordered_endpoints_deliver_each_key_in_order(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.retry.base = Duration::from_millis(5);
        c.retry.max_delay = Duration::from_millis(50);
        c.retry.max_attempts = 100;
        c.breaker.threshold = 10_000;
    })
    .await;
    let (r, firsts) = flaky_receiver(20).await;
    app.endpoint(json!({"url": r.url, "ordering": {"key": "data.key"}}))
        .await;
    produce_keyed(&app.base, 4, 50).await;
    eventually(Duration::from_secs(60), || async {
        (firsts.lock().unwrap().len() == 200).then_some(())
    })
    .await
    .expect("all 200 events arrived");
    assert_in_order(&firsts, 4, 50);
    app.stop().await;
}

async fn a_failed_delivery_blocks_or_skips_its_key(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (r, healthy) = Receiver::switchable(StatusCode::BAD_REQUEST).await;
    let block = app
        .endpoint(json!({"url": r.url, "max_attempts": 1,
                         "event_types": ["block.*"], "ordering": {"key": "data.key"}}))
        .await;
    app.endpoint(
        json!({"url": r.url, "max_attempts": 1, "event_types": ["skip.*"],
                        "ordering": {"key": "data.key", "on_failure": "skip"}}),
    )
    .await;
    // Both first events fail for good (400, one attempt).
    let b1 = app.event("block.one", json!({"key": "a"})).await;
    let s1 = app.event("skip.one", json!({"key": "a"})).await;
    let b1_event = b1["id"].as_str().unwrap().to_owned();
    let b1 = b1["deliveries"][0]["id"].as_str().unwrap().to_owned();
    app.wait_delivery(&b1, "failed").await;
    app.wait_delivery(s1["deliveries"][0]["id"].as_str().unwrap(), "failed")
        .await;
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let b2 = app.event("block.two", json!({"key": "a"})).await;
    let s2 = app.event("skip.two", json!({"key": "a"})).await;
    let other = app.event("block.three", json!({"key": "b"})).await;
    // Skip goes on, another key goes on; the blocked key waits.
    app.wait_delivery(s2["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    app.wait_delivery(other["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    let b2_event = b2["id"].as_str().unwrap().to_owned();
    let b2 = b2["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (_, d) = app
        .get(&format!("/v1/tenants/default/deliveries/{b2}"))
        .await;
    assert_eq!(d["status"], "pending");
    assert_eq!(
        d["attempt_count"], 0,
        "the blocked delivery was not attempted"
    );
    // Retrying the failed head delivers it, then the one it held back.
    let (s, _) = app
        .post(
            &format!("/v1/tenants/default/deliveries/{b1}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    app.wait_delivery(&b2, "delivered").await;
    let ids: Vec<String> = r
        .requests()
        .iter()
        .map(|q| q.header("webhook-id").to_owned())
        .collect();
    let last_b1 = ids.iter().rposition(|i| *i == b1_event).unwrap();
    let first_b2 = ids.iter().position(|i| *i == b2_event).unwrap();
    assert!(
        last_b1 < first_b2,
        "the held-back event went after its head"
    );
    let (_, ep) = app
        .get(&format!(
            "/v1/tenants/default/endpoints/{}",
            block["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ep["ordering"]["on_failure"], "block");
    app.stop().await;
}

crate::both_stores!(
    payload_filters_decide_fan_out,
    invalid_routing_is_refused_and_changes_nothing,
    transformed_bodies_are_signed_as_sent,
    ordered_endpoints_deliver_each_key_in_order,
    a_failed_delivery_blocks_or_skips_its_key,
);

/// 1,000 events over 10 keys to a receiver failing 20 % at random, two dispatcher
/// processes on PostgreSQL, one killed with SIGKILL midway: every key in order. An
/// unordered endpoint receiving the same events is timed beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_holds_across_two_dispatchers_and_a_kill_9() {
    let (db, name) = create_pg_database().await;
    let (ordered, firsts) = flaky_receiver(20).await;
    let plain = Receiver::ok().await;
    let dispatcher: &[&str] = &[
        "--role",
        "dispatcher",
        "--lease",
        "3s",
        "--request-timeout",
        "1s",
        "--retry-base",
        "5ms",
        "--retry-max-delay",
        "50ms",
        "--max-attempts",
        "1000",
        "--breaker-threshold",
        "100000",
    ];
    let api = start_server(&db, &["--role", "api"]);
    let mut dispatchers: Vec<_> = (0..2).map(|_| start_server(&db, dispatcher)).collect();
    for body in [
        json!({"url": ordered.url, "ordering": {"key": "data.key"}}),
        json!({"url": plain.url}),
    ] {
        let (s, ep) = send(
            reqwest::Client::new()
                .post(format!("{}/v1/tenants/default/endpoints", api.base))
                .bearer_auth(ADMIN)
                .json(&body),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{ep}");
    }
    let started = Instant::now();
    let base = api.base.clone();
    let producer = tokio::spawn(async move { produce_keyed(&base, 10, 100).await });
    eventually(Duration::from_secs(60), || async {
        (firsts.lock().unwrap().len() >= 300).then_some(())
    })
    .await
    .expect("300 ordered events arrived");
    dispatchers[0].kill();
    let at_kill = firsts.lock().unwrap().len();
    producer.await.unwrap();
    let plain_done = eventually(Duration::from_secs(120), || async {
        (plain.count() >= 1000).then(|| started.elapsed())
    })
    .await
    .expect("the unordered endpoint got everything");
    let ordered_done = eventually(Duration::from_secs(120), || async {
        (firsts.lock().unwrap().len() == 1000).then(|| started.elapsed())
    })
    .await
    .expect("the ordered endpoint got everything");
    eprintln!(
        "ordering: kill -9 at {at_kill} receipts; unordered endpoint done in {plain_done:?}, \
         ordered (10 keys, 20 % failures) in {ordered_done:?}"
    );
    assert_in_order(&firsts, 10, 100);
    drop(dispatchers);
    drop(api);
    drop_pg_database(&name).await;
}

/// The audit's attack: a `set` path of 100,000 segments used to be stored (201) and then
/// overflowed the stack of whatever delivered through it, taking the process down. It is a
/// 400 naming the limit, and nothing is stored.
#[tokio::test]
async fn a_transform_path_beyond_the_bounds_is_refused() {
    let app = spawn_app().await;
    let path = vec!["a"; 100_000].join(".");
    let (s, b) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": "http://127.0.0.1:9/hook", "transform": [{"set": {path: 1}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "invalid_routing");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("transform[0].set"), "{msg}");
    assert!(msg.contains("at most 32 steps"), "{msg}");
    assert!(
        msg.len() < 500,
        "the message quotes the path shortened: {msg}"
    );
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Same for a PATCH of an existing endpoint, which keeps its routing.
    let r = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": r.url, "transform": [{"set": {"a.b": 1}}]}))
        .await;
    let deep = vec!["a"; 33].join(".");
    let (s, b) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!(
                "/v1/tenants/default/endpoints/{}",
                ep["id"].as_str().unwrap()
            ),
        )
        .json(&json!({"transform": [{"set": {deep: 1}}]})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (_, got) = app
        .get(&format!(
            "/v1/tenants/default/endpoints/{}",
            ep["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(got["transform"], json!([{"set": {"a.b": 1}}]));
    app.stop().await;
}

/// Routing rows stored before the bounds existed (planted here straight into the SQLite
/// file, past hookrelay) neither crash nor block anything: the deliveries through them fail
/// for good with an error naming the limit, the server keeps answering, and another
/// endpoint's delivery of the same event succeeds. (The first row used to abort the process
/// on its first delivery; the second was ignored, and the body sent untransformed.)
#[tokio::test]
async fn stored_routings_beyond_the_bounds_fail_their_deliveries_only() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let mut bad = Vec::new();
    let pool = sqlx::SqlitePool::connect(app.database_url()).await.unwrap();
    for (segments, error) in [
        (100_000, "bytes of JSON, more than the 65536 allowed"),
        (33, "at most 32 steps"),
    ] {
        let ep = app
            .endpoint(json!({"url": r.url, "transform": [{"set": {"a": 1}}]}))
            .await;
        let planted =
            json!({"transform": [{"set": {vec!["a"; segments].join("."): 1}}]}).to_string();
        let done = sqlx::query("UPDATE endpoints SET routing = ?1 WHERE id = ?2")
            .bind(&planted)
            .bind(ep["id"].as_str().unwrap())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
        bad.push((ep, error));
    }
    pool.close().await;
    let good = app.endpoint(json!({"url": r.url})).await;

    let ev = app.event("order.paid", json!({"n": 1})).await;
    let deliveries = ev["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3, "{ev}");
    let of = |ep: &Value| {
        deliveries
            .iter()
            .find(|d| d["endpoint_id"] == ep["id"])
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (ep, needle) in &bad {
        let failed = app.wait_delivery(&of(ep), "failed").await;
        let error = failed["last_error"].as_str().unwrap();
        assert!(
            error.starts_with("endpoint routing is unusable: "),
            "{error}"
        );
        assert!(error.contains(needle), "{error}");
        assert_eq!(
            failed["attempts"].as_array().map(Vec::len),
            Some(1),
            "failed for good, not retried: {failed}"
        );
    }
    app.wait_delivery(&of(&good), "delivered").await;
    assert_eq!(r.wait_for(1, Duration::from_secs(10)).await.len(), 1);

    // The test endpoint says the same, the server still answers, and an update that leaves
    // the routing alone keeps the row as it was.
    let (ep, needle) = &bad[0];
    let path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let (s, b) = app.post(&format!("{path}/test"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["error"].as_str().unwrap().contains(needle), "{b}");
    let (s, b) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"description": "still broken"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.post(&format!("{path}/test"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["error"].as_str().unwrap().contains(needle), "{b}");
    // Replacing the routing makes the endpoint deliver again.
    let (s, b) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"transform": [{"set": {"fixed": true}}]})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.post(&format!("{path}/test"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["status"], "delivered", "{b}");
    app.stop().await;
}
