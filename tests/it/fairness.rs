//! Tenant fairness: a tenant with a slow backlog cannot take every delivery slot.

use std::time::{Duration, Instant};

use axum::{http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::helpers::*;

/// How long the slow tenant's receivers take to answer (under the request timeout, so no
/// breaker opens).
const SLOW: Duration = Duration::from_millis(1000);
/// The bound on the fast tenant's delivery latency: far below the ~8 s it waited before
/// per-tenant caps, with room for a loaded machine.
const BOUND: Duration = Duration::from_secs(4);

async fn slow_receiver() -> Receiver {
    Receiver::start(SLOW, |_, _| (StatusCode::OK, "ok").into_response()).await
}

async fn tenant(app: &TestApp, id: &str) {
    let (s, b) = app.post("/v1/tenants", json!({"id": id, "name": id})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn endpoint(app: &TestApp, tenant: &str, url: &str) {
    let (s, b) = app
        .post(
            &format!("/v1/tenants/{tenant}/endpoints"),
            json!({ "url": url }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

async fn event(app: &TestApp, tenant: &str) {
    let (s, b) = app
        .post(
            &format!("/v1/tenants/{tenant}/events"),
            json!({"type": "fair.test", "data": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
}

/// Tenant A: two slow endpoints and 16 events (32 deliveries, 8 s of work for 4 slots).
/// Tenant B: one fast endpoint. B's event, sent once A holds every slot it may, is delivered
/// within [`BOUND`]; before per-tenant caps it waited behind A's whole backlog (~8 s).
async fn a_slow_backlog_does_not_starve_another_tenant(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.dispatch.concurrency = 4;
        c.dispatch.request_timeout = Duration::from_secs(5);
    })
    .await;
    tenant(&app, "slow").await;
    tenant(&app, "fast").await;
    let slow = [slow_receiver().await, slow_receiver().await];
    for r in &slow {
        endpoint(&app, "slow", &r.url).await;
    }
    let fast = Receiver::ok().await;
    endpoint(&app, "fast", &fast.url).await;

    for _ in 0..16 {
        event(&app, "slow").await;
    }
    // The slow tenant is sending: its slots are taken.
    eventually(Duration::from_secs(10), || async {
        (slow.iter().map(Receiver::count).sum::<usize>() >= 2).then_some(())
    })
    .await
    .expect("the slow tenant's deliveries started");

    let sent = Instant::now();
    event(&app, "fast").await;
    fast.wait_for(1, Duration::from_secs(30)).await;
    let latency = sent.elapsed();
    let slow_done: usize = slow.iter().map(Receiver::count).sum();
    eprintln!("fast tenant's delivery took {latency:?}; slow tenant had {slow_done} of 32 started");
    assert!(
        latency < BOUND,
        "the fast tenant waited {latency:?} behind the slow tenant's backlog (bound {BOUND:?})"
    );
    assert!(
        slow_done < 32,
        "the slow backlog should still be draining ({slow_done} of 32 started)"
    );
    app.stop().await;
}

/// A tenant cannot park deliveries for longer than 30 days: `deliver_at` further ahead is
/// refused, naming the limit, and stores nothing.
async fn deliver_at_is_bounded(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    app.endpoint(json!({ "url": r.url })).await;
    let far = chrono::Utc::now() + chrono::Duration::days(31);
    let (s, b) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "fair.later", "data": {}, "deliver_at": far}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deliver_at is more than 30 days ahead"),
        "{b}"
    );
    let (_, events) = app.get("/v1/tenants/default/events").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 0, "{events}");
    let near = chrono::Utc::now() + chrono::Duration::days(29);
    let (s, b) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "fair.later", "data": {}, "deliver_at": near}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.stop().await;
}

crate::both_stores!(
    a_slow_backlog_does_not_starve_another_tenant,
    deliver_at_is_bounded
);

/// Endpoint tests send at once, outside the dispatcher's slots: a tenant runs at most a
/// few at a time (the rest answer 429 and change nothing), and another tenant's test is
/// not held up by them.
#[tokio::test]
async fn endpoint_tests_are_few_at_a_time_per_tenant() {
    let app = spawn_app().await;
    let slow = slow_receiver().await;
    let fast = Receiver::ok().await;
    tenant(&app, "busy").await;
    tenant(&app, "calm").await;
    let (_, busy_ep) = app
        .post("/v1/tenants/busy/endpoints", json!({"url": slow.url}))
        .await;
    let (_, calm_ep) = app
        .post("/v1/tenants/calm/endpoints", json!({"url": fast.url}))
        .await;
    let busy_test = format!(
        "/v1/tenants/busy/endpoints/{}/test",
        busy_ep["id"].as_str().unwrap()
    );
    let calm_test = format!(
        "/v1/tenants/calm/endpoints/{}/test",
        calm_ep["id"].as_str().unwrap()
    );
    let many = futures::future::join_all((0..6).map(|_| app.post(&busy_test, json!({}))));
    let calm = async {
        // Once the busy tenant's tests are under way.
        slow.wait_for(1, Duration::from_secs(10)).await;
        let started = Instant::now();
        let (s, b) = app.post(&calm_test, json!({})).await;
        (s, b, started.elapsed())
    };
    let (answers, (calm_status, calm_body, calm_took)) = tokio::join!(many, calm);
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok, 4, "{answers:?}");
    assert_eq!(refused.len(), 2, "{answers:?}");
    assert_eq!(refused[0].1["error"]["code"], "too_many_tests");
    assert_eq!(calm_status, StatusCode::OK, "{calm_body}");
    assert!(
        calm_took < BOUND,
        "the other tenant's test took {calm_took:?}"
    );
    assert_eq!(slow.count(), 4, "refused tests sent nothing");
    // The slots come back.
    let (s, b) = app.post(&busy_test, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    app.stop().await;
}
