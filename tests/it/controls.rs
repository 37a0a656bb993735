//! Delivery controls: the persisted circuit breaker and auto-disable.

use std::{sync::atomic::Ordering, time::Duration};

use axum::{http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::helpers::*;

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

async fn breaker_opens_waits_probes_and_survives_a_restart(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.breaker.threshold = 5;
        c.breaker.cooldown = Duration::from_secs(2);
        c.retry.max_attempts = 50;
        c.retry.max_delay = Duration::from_millis(200);
    })
    .await;
    let (r, healthy) = Receiver::switchable(StatusCode::INTERNAL_SERVER_ERROR).await;
    let ep = app.endpoint(json!({"url": r.url})).await;
    let ep_path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    assert_eq!(ep["breaker"]["state"], "closed");
    let ev = app.event("breaker.test", json!({})).await;
    let dlv = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();

    // Five failures open it.
    let open = eventually(Duration::from_secs(20), || async {
        let (_, e) = app.get(&ep_path).await;
        (e["breaker"]["state"] == "open").then_some(e)
    })
    .await
    .expect("the breaker opened");
    assert_eq!(open["breaker"]["consecutive_failures"], 5);
    let open_until = time(&open["breaker"]["open_until"]);
    assert_eq!(r.count(), 5, "exactly five attempts before it opened");
    // The delivery waits: still pending, attempts not used up.
    let (_, d) = app
        .get(&format!("/v1/tenants/default/deliveries/{dlv}"))
        .await;
    assert_eq!(d["status"], "pending");
    assert_eq!(d["attempts"].as_array().unwrap().len(), 5);

    // A restart keeps it open.
    let app = app.restart().await;
    let (_, after) = app.get(&ep_path).await;
    assert_eq!(after["breaker"]["state"], "open", "{after}");
    assert_eq!(time(&after["breaker"]["open_until"]), open_until);

    // After the cool-down one probe goes; its success closes the breaker.
    healthy.store(true, Ordering::SeqCst);
    app.wait_delivery(&dlv, "delivered").await;
    let got = r.requests();
    assert_eq!(got.len(), 6, "one probe, no other attempt while open");
    let probe_at = chrono::Utc::now() - chrono::Duration::from_std(got[5].at.elapsed()).unwrap();
    assert!(
        probe_at >= open_until - chrono::Duration::milliseconds(50),
        "the probe came before the cool-down ended"
    );
    let (_, closed) = app.get(&ep_path).await;
    assert_eq!(closed["breaker"]["state"], "closed");
    assert_eq!(closed["breaker"]["consecutive_failures"], 0);
    // Deliveries flow again.
    app.event("breaker.test", json!({})).await;
    r.wait_for(7, Duration::from_secs(10)).await;
    app.stop().await;
}

async fn failing_longer_than_the_window_disables_and_reenabling_resumes(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.breaker.threshold = 1000;
        c.breaker.disable_after = Duration::from_millis(800);
        c.retry.max_attempts = 1000;
        c.retry.max_delay = Duration::from_millis(100);
    })
    .await;
    let (r, healthy) = Receiver::switchable(StatusCode::BAD_GATEWAY).await;
    let ep = app.endpoint(json!({"url": r.url})).await;
    let ep_path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let ev = app.event("disable.test", json!({})).await;
    let dlv = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let disabled = eventually(Duration::from_secs(20), || async {
        let (_, e) = app.get(&ep_path).await;
        (e["enabled"] == false).then_some(e)
    })
    .await
    .expect("the endpoint was disabled");
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failing continuously"),
        "{disabled}"
    );
    // Its delivery waits, pending, while the endpoint is disabled.
    let (_, d) = app
        .get(&format!("/v1/tenants/default/deliveries/{dlv}"))
        .await;
    assert_eq!(d["status"], "pending");

    // Re-enabling resumes it, with a fresh breaker.
    healthy.store(true, Ordering::SeqCst);
    let (s, e) = send(
        app.req(reqwest::Method::PATCH, &ep_path)
            .json(&json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e["disabled_reason"], serde_json::Value::Null);
    app.wait_delivery(&dlv, "delivered").await;
    let (_, e) = app.get(&ep_path).await;
    assert_eq!(e["breaker"]["failing_since"], serde_json::Value::Null);
    assert_eq!(e["enabled"], true);
    app.stop().await;
}

/// Receipts per second over the span from the first to the last receipt.
fn rate(got: &[Received]) -> f64 {
    let span = got
        .last()
        .unwrap()
        .at
        .duration_since(got[0].at)
        .as_secs_f64();
    (got.len() - 1) as f64 / span.max(1e-6)
}

async fn a_rate_limited_endpoint_does_not_slow_another(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let limited = Receiver::ok().await;
    let free = Receiver::ok().await;
    app.endpoint(json!({"url": limited.url, "event_types": ["limited.*"], "rate_limit": 10}))
        .await;
    app.endpoint(json!({"url": free.url, "event_types": ["free.*"]}))
        .await;
    // Posted all at once: on a slow machine, posting 80 events one after the other took
    // longer than the limited endpoint's first three seconds, and the posting, not the
    // limited endpoint, decided when the unlimited one was done.
    futures::future::join_all((0..40).flat_map(|i| {
        [
            app.event("limited.tick", json!({ "i": i })),
            app.event("free.tick", json!({ "i": i })),
        ]
    }))
    .await;
    let fast = free.wait_for(40, Duration::from_secs(20)).await;
    let slow = limited.wait_for(40, Duration::from_secs(30)).await;
    // A burst of one second's worth (10), then 10 per second: 30 more take >= 3 s.
    let limited_span = slow[39].at.duration_since(slow[0].at);
    eprintln!(
        "rate limit 10/s: limited receiver {:.1}/s over {:?}; unlimited receiver {:.0}/s, done {:?} after the first",
        rate(&slow),
        limited_span,
        rate(&fast),
        fast[39].at.duration_since(fast[0].at)
    );
    assert!(
        limited_span >= Duration::from_millis(2800),
        "limit exceeded: {limited_span:?}"
    );
    for w in slow.windows(21) {
        // Any 21 consecutive receipts span at least a second (10 burst + 10/s).
        assert!(w[20].at.duration_since(w[0].at) >= Duration::from_millis(950));
    }
    // The limited endpoint's 40th receipt is 3 s after its first: the unlimited one,
    // never held back by it, is done well before (a margin for a loaded machine).
    assert!(
        fast[39].at < slow[30].at,
        "the unlimited endpoint was slowed down by the limited one"
    );
    app.stop().await;
}

/// A per-minute limit: a burst of a minute's worth, then the rest scheduled one interval
/// apart over the minute; given as "N/min" or as a number with its period, shown the same
/// way back, and refused with a 400 naming the field when malformed.
async fn a_per_minute_rate_limit_spreads_deliveries_over_the_minute(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let receiver = Receiver::ok().await;
    for bad in [
        json!("0/min"),
        json!("abc"),
        json!("5/hour"),
        json!(0),
        json!(-3),
        json!(1.5),
    ] {
        let (s, e) = app
            .post(
                "/v1/tenants/default/endpoints",
                json!({"url": receiver.url, "rate_limit": bad}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("rate_limit"),
            "{e}"
        );
    }
    let (s, e) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": receiver.url, "rate_limit": "3/s", "rate_limit_period": "minute"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    let ep = app
        .endpoint(json!({"url": receiver.url, "rate_limit": "2/min"}))
        .await;
    assert_eq!(
        (ep["rate_limit"].clone(), ep["rate_limit_period"].clone()),
        (json!(2), json!("minute"))
    );
    let id = ep["id"].as_str().unwrap();
    for i in 0..4 {
        app.event("limited.tick", json!({ "i": i })).await;
    }
    // The burst: two at once. The other two wait, due 30 and 60 seconds later.
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let waiting = eventually(Duration::from_secs(20), || async {
        let (_, list) = app
            .get(&format!(
                "/v1/tenants/default/deliveries?status=pending&endpoint={id}"
            ))
            .await;
        let due: Vec<chrono::DateTime<chrono::Utc>> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["next_attempt_at"].as_str().unwrap().parse().unwrap())
            .collect();
        (due.len() == 2
            && due
                .iter()
                .all(|t| *t > chrono::Utc::now() + chrono::Duration::seconds(15)))
        .then_some(due)
    })
    .await;
    assert!(
        waiting.is_some(),
        "the rest were not spread over the minute"
    );
    assert_eq!(receiver.count(), 2, "more than a minute's worth went out");

    // Changed to a number: per second again; with a period: per that period.
    let path = format!("/v1/tenants/default/endpoints/{id}");
    let (_, changed) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"rate_limit": 5})),
    )
    .await;
    assert_eq!(
        (
            changed["rate_limit"].clone(),
            changed["rate_limit_period"].clone()
        ),
        (json!(5), json!("second"))
    );
    let (_, changed) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"rate_limit": 30, "rate_limit_period": "minute"})),
    )
    .await;
    assert_eq!(changed["rate_limit_period"], "minute");
    let (_, cleared) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"rate_limit": null})),
    )
    .await;
    assert_eq!(cleared["rate_limit"], serde_json::Value::Null);
    app.stop().await;
}

async fn a_slow_endpoint_cannot_take_every_slot(backend: Backend) {
    let app = spawn_app_on(backend, |c| {
        c.dispatch.concurrency = 8;
        c.dispatch.endpoint_concurrency = 4;
    })
    .await;
    // Slow enough that a loaded machine's own delays (posting, claiming) are small beside
    // one round of the slow endpoint.
    let slow = Receiver::start(Duration::from_secs(2), |_, _| {
        StatusCode::OK.into_response()
    })
    .await;
    let fast = Receiver::ok().await;
    app.endpoint(json!({"url": slow.url, "event_types": ["slow.*"]}))
        .await;
    app.endpoint(json!({"url": fast.url, "event_types": ["fast.*"]}))
        .await;
    for i in 0..16 {
        app.event("slow.tick", json!({ "i": i })).await;
    }
    let started = std::time::Instant::now();
    futures::future::join_all((0..20).map(|i| app.event("fast.tick", json!({ "i": i })))).await;
    let fast_got = fast.wait_for(20, Duration::from_secs(20)).await;
    let fast_done = started.elapsed();
    eprintln!("slow endpoint backlog of 16 at 2 s each: fast endpoint's 20 done in {fast_done:?}, slow has {} so far", slow.count());
    // The slow endpoint alone needs 16 / 4 * 2 s = 8 s; the fast one never waits for it.
    assert!(
        slow.count() < 16,
        "the slow endpoint finished first: nothing was tested"
    );
    let slow_got = slow.wait_for(16, Duration::from_secs(30)).await;
    // Without the per-endpoint cap the slow backlog (older) would hold all 8 slots, and
    // again after the first round: the fast endpoint's last receipt would come after the
    // slow one's 9th, which the cap puts two rounds (4 s) after its first.
    assert!(
        fast_got[19].at < slow_got[8].at,
        "the fast endpoint waited behind the slow one"
    );
    app.stop().await;
}

async fn failed_deliveries_replay_in_bulk_with_their_ids(backend: Backend) {
    // Six failures in a row would open the breaker (threshold 5): keep it out of the way.
    let app = spawn_app_on(backend, |c| c.breaker.threshold = 100).await;
    let (r, healthy) = Receiver::switchable(StatusCode::BAD_GATEWAY).await;
    let ep = app.endpoint(json!({"url": r.url, "max_attempts": 2})).await;
    let ep_path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let ev = app.event("replay.test", json!({ "i": i })).await;
        ids.push(ev["id"].as_str().unwrap().to_owned());
        app.wait_delivery(ev["deliveries"][0]["id"].as_str().unwrap(), "failed")
            .await;
    }
    healthy.store(true, Ordering::SeqCst);
    // Bad requests change nothing.
    let (s, _) = app
        .post(&format!("{ep_path}/replay"), json!({"status": "pending"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .post("/v1/tenants/default/endpoints/ep_nope/replay", json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = app
        .post(
            &format!("{ep_path}/replay"),
            json!({"since": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!((s, b["replayed"].as_u64()), (StatusCode::ACCEPTED, Some(0)));

    let (s, b) = app.post(&format!("{ep_path}/replay"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["replayed"], 3);
    let got = eventually(Duration::from_secs(20), || async {
        let ok: Vec<String> = r
            .requests()
            .into_iter()
            .skip(6) // the two failed attempts of each
            .map(|g| g.header("webhook-id").to_owned())
            .collect();
        (ok.len() >= 3).then_some(ok)
    })
    .await
    .expect("the replayed deliveries arrived");
    let mut got = got;
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "replays keep their webhook-id");
    let (_, failed) = app
        .get("/v1/tenants/default/deliveries?status=failed")
        .await;
    assert!(failed["data"].as_array().unwrap().is_empty());

    // (A receiver sees a request before its attempt is recorded: wait for the records, or
    // the event's delivery may still be pending and not replayable.)
    eventually(Duration::from_secs(20), || async {
        let (_, d) = app
            .get("/v1/tenants/default/deliveries?status=delivered")
            .await;
        (d["data"].as_array().map(Vec::len) == Some(3)).then_some(())
    })
    .await
    .expect("the replayed deliveries were recorded");

    // Replaying one event sends it once more.
    let (s, b) = app
        .post(
            &format!("/v1/tenants/default/events/{}/replay", ids[0]),
            json!({}),
        )
        .await;
    assert_eq!((s, b["replayed"].as_u64()), (StatusCode::ACCEPTED, Some(1)));
    let again = r.wait_for(10, Duration::from_secs(10)).await;
    assert_eq!(again[9].header("webhook-id"), ids[0]);
    app.stop().await;
}

async fn rotation_signs_with_both_secrets_during_the_grace_period(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.rotation_grace = Duration::from_secs(1)).await;
    let r = Receiver::ok().await;
    let ep = app.endpoint(json!({"url": r.url})).await;
    let old = ep["secret"].as_str().unwrap().to_owned();
    let path = format!(
        "/v1/tenants/default/endpoints/{}/rotate-secret",
        ep["id"].as_str().unwrap()
    );
    let (s, rotated) = app.post(&path, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    let grace_ends = time(&rotated["previous_secret_expires_at"]);
    let verifies = |req: &Received, secret: &str| {
        hookrelay::signing::verify(
            &[secret],
            Some(req.header("webhook-id")),
            Some(req.header("webhook-timestamp")),
            Some(req.header("webhook-signature")),
            &req.body,
            chrono::Utc::now().timestamp(),
        )
        .is_ok()
    };
    app.event("rotation.test", json!({})).await;
    let during = r.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        verifies(&during[0], &old),
        "the old secret verifies during the grace period"
    );
    assert!(
        verifies(&during[0], &new),
        "the new secret verifies during the grace period"
    );
    // The grace period is a time: wait for it to end.
    let left = (grace_ends - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
    app.event("rotation.test", json!({})).await;
    let after = r.wait_for(2, Duration::from_secs(10)).await;
    assert!(
        !verifies(&after[1], &old),
        "the old secret no longer verifies"
    );
    assert!(verifies(&after[1], &new));
    app.stop().await;
}

crate::both_stores!(
    rotation_signs_with_both_secrets_during_the_grace_period,
    failed_deliveries_replay_in_bulk_with_their_ids,
    breaker_opens_waits_probes_and_survives_a_restart,
    failing_longer_than_the_window_disables_and_reenabling_resumes,
    a_rate_limited_endpoint_does_not_slow_another,
    a_per_minute_rate_limit_spreads_deliveries_over_the_minute,
    a_slow_endpoint_cannot_take_every_slot,
);
