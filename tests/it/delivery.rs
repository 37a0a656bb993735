//! Delivery: signatures, retries with backoff, failure, manual retry, 410, redirects.

use std::time::Duration;

use axum::{
    http::{HeaderMap as AxHeaders, StatusCode},
    response::IntoResponse,
};
use serde_json::json;
use standardwebhooks::Webhook;

use crate::helpers::*;

fn to_http_headers(r: &Received) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in r.headers.iter() {
        h.insert(
            http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    h
}

async fn receiver_gets_every_event_signed_and_verifiable(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": r.url, "event_types": ["user.*"], "headers": {"X-Team": "growth"}}))
        .await;
    let other = Receiver::ok().await;
    app.endpoint(json!({"url": other.url, "event_types": ["discussion.extended"]}))
        .await;
    let secret = ep["secret"].as_str().unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    let mut sent = Vec::new();
    for i in 0..20 {
        let (s, ev) = send(
            app.req(reqwest::Method::POST, "/v1/tenants/default/events")
                .header("traceparent", traceparent)
                .json(&json!({"type": "user.joined_community", "data": {"user_id": format!("u{i}"), "n": i}, "actor": "admin"})),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        sent.push(ev["id"].as_str().unwrap().to_owned());
    }
    app.event("discussion.auto_closed", json!({"discussion_id": "d1"}))
        .await;

    let got = r.wait_for(20, Duration::from_secs(20)).await;
    let wh = Webhook::new(secret).unwrap();
    let mut ids: Vec<String> = Vec::new();
    for req in &got {
        // The official Standard Webhooks library accepts every request.
        wh.verify(&req.body, &to_http_headers(req))
            .expect("signature verifies");
        let body = req.json();
        assert_eq!(req.header("webhook-id"), body["id"]);
        assert_eq!(body["type"], "user.joined_community");
        assert_eq!(body["actor"], "admin");
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["id", "type", "timestamp", "data", "actor"]
        );
        assert_eq!(req.header("content-type"), "application/json");
        assert_eq!(req.header("x-team"), "growth");
        assert_eq!(req.header("traceparent"), traceparent);
        ids.push(req.header("webhook-id").to_owned());

        // A tampered body or an old timestamp fails verification.
        let mut tampered = req.body.to_vec();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        assert!(wh.verify(&tampered, &to_http_headers(req)).is_err());
        let mut old = to_http_headers(req);
        let ts: i64 = req.header("webhook-timestamp").parse().unwrap();
        old.insert("webhook-timestamp", (ts - 600).to_string().parse().unwrap());
        assert!(wh.verify(&req.body, &old).is_err());
        // hookrelay's own verifier agrees.
        let now = chrono::Utc::now().timestamp();
        assert!(hookrelay::signing::verify(
            &[secret],
            Some(req.header("webhook-id")),
            Some(req.header("webhook-timestamp")),
            Some(req.header("webhook-signature")),
            &req.body,
            now
        )
        .is_ok());
        assert!(hookrelay::signing::verify(
            &[secret],
            Some(req.header("webhook-id")),
            Some(&(ts - 600).to_string()),
            Some(req.header("webhook-signature")),
            &req.body,
            now
        )
        .is_err());
    }
    ids.sort();
    sent.sort();
    assert_eq!(ids, sent, "each event exactly once");
    assert_eq!(other.count(), 0, "filters keep other types away");
    app.stop().await;
}

async fn fails_twice_then_succeeds_with_backoff_in_the_log(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::start(Duration::ZERO, |n, _| {
        if n <= 2 {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
        } else {
            (StatusCode::OK, "fine").into_response()
        }
    })
    .await;
    app.endpoint(json!({"url": r.url})).await;
    let ev = app.event("payment.settled", json!({"amount": 10})).await;
    let dlv = ev["deliveries"][0]["id"].as_str().unwrap();
    let d = app.wait_delivery(dlv, "delivered").await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 3, "{d}");
    let a = d["attempts"].as_array().unwrap();
    assert_eq!(a[0]["outcome"], "retry");
    assert_eq!(a[0]["status_code"], 500);
    assert_eq!(a[0]["response"], "boom");
    assert_eq!(a[1]["outcome"], "retry");
    assert_eq!(a[2]["outcome"], "success");
    assert_eq!(a[2]["response"], "fine");
    // The backoff is visible: each retry was scheduled, and happened no earlier.
    for i in 0..2 {
        let next = chrono::DateTime::parse_from_rfc3339(a[i]["next_attempt_at"].as_str().unwrap())
            .unwrap();
        let started =
            chrono::DateTime::parse_from_rfc3339(a[i]["started_at"].as_str().unwrap()).unwrap();
        let then =
            chrono::DateTime::parse_from_rfc3339(a[i + 1]["started_at"].as_str().unwrap()).unwrap();
        assert!(next >= started, "{d}");
        assert!(
            then >= next,
            "attempt {} ran before its scheduled time: {d}",
            i + 2
        );
    }
    // Same webhook-id on every attempt.
    let got = r.requests();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|g| g.header("webhook-id") == ev["id"]));
    // The detail carries both the count and the log.
    assert_eq!(d["attempt_count"], 3, "{d}");
    assert_eq!(d["status"], "delivered");
    app.stop().await;
}

async fn always_failing_ends_failed_then_manual_retry_delivers(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let r = Receiver::start(Duration::ZERO, move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            StatusCode::NO_CONTENT.into_response()
        } else {
            StatusCode::BAD_GATEWAY.into_response()
        }
    })
    .await;
    app.endpoint(json!({"url": r.url, "max_attempts": 3})).await;
    let ev = app
        .event("user.flagged_comment", json!({"comment_id": "c1"}))
        .await;
    let dlv = ev["deliveries"][0]["id"].as_str().unwrap();
    let d = app.wait_delivery(dlv, "failed").await;
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{d}");
    assert_eq!(attempts[2]["outcome"], "failed");
    assert!(d["last_error"].as_str().unwrap().contains("502"), "{d}");
    let (_, failed) = app
        .get("/v1/tenants/default/deliveries?status=failed")
        .await;
    assert_eq!(failed["data"][0]["id"], dlv);

    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let (s, retried) = app
        .post(
            &format!("/v1/tenants/default/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["status"], "pending");
    let d = app.wait_delivery(dlv, "delivered").await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 4);
    assert!(r
        .requests()
        .iter()
        .all(|g| g.header("webhook-id") == ev["id"]));
    // Retrying a pending delivery is refused; a delivered one may be sent again.
    let (s, _) = app
        .post(
            &format!("/v1/tenants/default/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, b) = app
        .post(
            &format!("/v1/tenants/default/deliveries/{dlv}/retry"),
            json!({}),
        )
        .await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::ACCEPTED,
        "{b}"
    );
    app.stop().await;
}

async fn retry_after_is_honoured(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::start(Duration::ZERO, |n, _| {
        if n == 1 {
            let mut h = AxHeaders::new();
            h.insert("retry-after", "2".parse().unwrap());
            (StatusCode::TOO_MANY_REQUESTS, h, "slow down").into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    app.endpoint(json!({"url": r.url})).await;
    let ev = app.event("a.b", json!({})).await;
    let d = app
        .wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    let a = d["attempts"].as_array().unwrap();
    let started =
        chrono::DateTime::parse_from_rfc3339(a[0]["started_at"].as_str().unwrap()).unwrap();
    let next =
        chrono::DateTime::parse_from_rfc3339(a[0]["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!((next - started).num_milliseconds() >= 2000, "{d}");
    let got = r.requests();
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(1900));
    app.stop().await;
}

async fn gone_disables_the_endpoint_and_redirects_are_not_followed(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let gone = Receiver::start(Duration::ZERO, |_, _| StatusCode::GONE.into_response()).await;
    let ep = app
        .endpoint(json!({"url": gone.url, "event_types": ["x.gone"]}))
        .await;
    let ev = app.event("x.gone", json!({})).await;
    let d = app
        .wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1);
    let (_, ep) = app
        .get(&format!(
            "/v1/tenants/default/endpoints/{}",
            ep["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ep["enabled"], false);
    assert!(ep["disabled_reason"].as_str().unwrap().contains("410"));
    // A disabled endpoint gets no new deliveries.
    let ev = app.event("x.gone", json!({})).await;
    assert!(ev["deliveries"].as_array().unwrap().is_empty());

    let target = Receiver::ok().await;
    let location = target.url.clone();
    let redirect = Receiver::start(Duration::ZERO, move |_, _| {
        let mut h = AxHeaders::new();
        h.insert("location", location.parse().unwrap());
        (StatusCode::FOUND, h).into_response()
    })
    .await;
    app.endpoint(json!({"url": redirect.url, "event_types": ["x.redirect"], "max_attempts": 2}))
        .await;
    let ev = app.event("x.redirect", json!({})).await;
    let d = app
        .wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "failed")
        .await;
    assert!(
        d["last_error"].as_str().unwrap().contains("redirect"),
        "{d}"
    );
    assert_eq!(target.count(), 0, "the redirect target was never called");
    app.stop().await;
}

async fn deliver_at_defers_delivery(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    app.endpoint(json!({"url": r.url})).await;
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let (s, ev) = app
        .post(
            "/v1/tenants/default/events",
            json!({"type": "a.later", "data": {}, "deliver_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (_, d) = app
        .get(&format!(
            "/v1/tenants/default/deliveries/{}",
            ev["deliveries"][0]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(d["status"], "pending");
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    assert!(chrono::Utc::now() >= at);
    assert_eq!(got[0].header("webhook-id"), ev["id"]);
    app.stop().await;
}

async fn a_new_endpoint_gets_the_very_next_event(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    for _ in 0..5 {
        let r = Receiver::ok().await;
        let ep = app
            .endpoint(json!({"url": r.url, "event_types": ["rw.check"]}))
            .await;
        let ev = app.event("rw.check", json!({})).await;
        assert!(
            ev["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["endpoint_id"] == ep["id"]),
            "read-your-writes: {ev}"
        );
    }
    app.stop().await;
}

crate::both_stores!(
    receiver_gets_every_event_signed_and_verifiable,
    fails_twice_then_succeeds_with_backoff_in_the_log,
    always_failing_ends_failed_then_manual_retry_delivers,
    retry_after_is_honoured,
    gone_disables_the_endpoint_and_redirects_are_not_followed,
    deliver_at_defers_delivery,
    a_new_endpoint_gets_the_very_next_event,
);
