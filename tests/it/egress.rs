//! What leaves hookrelay for a receiver that demands it: other names for the signature
//! headers.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{send, spawn_app, Receiver};

#[tokio::test]
async fn signature_headers_can_have_other_names_and_still_verify() {
    let app = spawn_app().await;
    let receiver = Receiver::ok().await;
    let ep = app
        .endpoint(json!({
            "url": receiver.url,
            "signature_headers": {"id": "X-Webhook-Id", "signature": "X-Signature"},
            "headers": {"X-Team": "billing"},
        }))
        .await;
    assert_eq!(ep["signature_headers"]["signature"], "X-Signature", "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_owned();
    app.event("order.paid", json!({"n": 1})).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    let r = &got[0];
    assert_eq!(
        r.header("webhook-id"),
        "",
        "the standard name is not sent as well"
    );
    assert_eq!(r.header("webhook-signature"), "");
    assert_eq!(r.header("x-team"), "billing");
    hookrelay::signing::verify(
        &[secret.as_str()],
        Some(r.header("x-webhook-id")),
        Some(r.header("webhook-timestamp")),
        Some(r.header("x-signature")),
        &r.body,
        chrono::Utc::now().timestamp(),
    )
    .expect("the signature verifies under its new name");

    // `{}` restores the standard names.
    let path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let (status, back) = send(
        app.req(reqwest::Method::PATCH, &path)
            .json(&json!({"signature_headers": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    assert!(back.get("signature_headers").is_none(), "{back}");
    app.event("order.paid", json!({"n": 2})).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert!(!got[1].header("webhook-signature").is_empty());
    app.stop().await;
}

#[tokio::test]
async fn unusable_signature_header_names_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::ok().await;
    let oauth2 = json!({"token_url": "http://127.0.0.1:9/token", "client_id": "c",
                        "client_secret": "s"});
    for (body, says) in [
        (
            json!({"signature_headers": {"id": "X-Same", "signature": "x-same"}}),
            "must differ",
        ),
        (
            json!({"signature_headers": {"signature": "Content-Type"}}),
            "Content-Type",
        ),
        (
            json!({"signature_headers": {"signature": "bad header"}}),
            "bad header",
        ),
        (
            json!({"signature_headers": {"id": "Authorization"}}),
            "Authorization",
        ),
        (
            json!({"signature_headers": {"signature": "X-Sig"}, "headers": {"x-sig": "v"}}),
            "x-sig",
        ),
        (
            json!({"signature_headers": {"signature": "X-Sig"}, "format": "community",
                   "secret": "plain"}),
            "standard-webhooks",
        ),
        (
            json!({"headers": {"Authorization": "Basic abc"}, "oauth2": oauth2}),
            "oauth2",
        ),
    ] {
        let mut body = body;
        body["url"] = json!(receiver.url);
        let (status, answer) = app
            .post("/v1/tenants/default/endpoints", body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body} → {answer}");
    }
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    app.stop().await;
}
