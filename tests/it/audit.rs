//! The audit trail: every kind of configuration change is recorded with its actor and
//! what changed, never a secret; a tenant token sees only its tenant's entries.

use std::time::Duration;

use axum::{http::StatusCode, response::IntoResponse};
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_stores;
use crate::helpers::*;

both_stores!(every_change_is_recorded_without_secrets);

async fn as_token(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app.http.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    send(req).await
}

/// Every entry of `path` (all pages), oldest first.
async fn entries(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (s, page) = as_token(
            app,
            token,
            Method::GET,
            &format!("{path}{sep}limit=3&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    all.reverse();
    all
}

fn find<'a>(all: &'a [Value], action: &str) -> &'a Value {
    all.iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} in {all:#?}"))
}

async fn every_change_is_recorded_without_secrets(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, tok) = app.post("/v1/tenants/acme/tokens", json!({})).await;
    let token = tok["token"].as_str().unwrap().to_owned();
    let token_id = tok["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .post("/v1/event-types", json!({"name": "audit.checked"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // The tenant's own token makes endpoint changes.
    let secret = "whsec_QXVkaXRTZWNyZXRBdWRpdFNlY3JldEF1ZGl0ISE=";
    let (s, ep) = as_token(
        &app,
        &token,
        Method::POST,
        "/v1/tenants/acme/endpoints",
        Some(json!({
            "url": "http://127.0.0.1:9/hook",
            "secret": secret,
            "headers": {"Authorization": "Bearer header-secret-1"},
            "description": "first",
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let ep_path = format!("/v1/tenants/acme/endpoints/{ep_id}");
    let (s, _) = as_token(
        &app,
        &token,
        Method::PATCH,
        &ep_path,
        Some(json!({
            "description": "second",
            "enabled": false,
            "headers": {"Authorization": "Bearer header-secret-2"},
            "url": "http://127.0.0.1:9/hook2",
        })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, rotated) = as_token(
        &app,
        &token,
        Method::POST,
        &format!("{ep_path}/rotate-secret"),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let (s, inbox) = as_token(
        &app,
        &token,
        Method::POST,
        "/v1/tenants/acme/inboxes",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let inbox_path = format!("/v1/tenants/acme/inboxes/{}", inbox["id"].as_str().unwrap());
    let (s, _) = as_token(&app, &token, Method::DELETE, &inbox_path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = as_token(&app, &token, Method::DELETE, &ep_path, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // Admin changes: a source, and the token revoked.
    let (s, src) = app
        .post(
            "/v1/tenants/acme/sources",
            json!({"url": "redis://:source-password@127.0.0.1:6379/0?stream=hr-audit-never"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{src}");
    let src_path = format!("/v1/tenants/acme/sources/{}", src["id"].as_str().unwrap());
    let (s, _) = send(app.req(Method::DELETE, &src_path)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // hookrelay's own change: a 410 disables an endpoint.
    let gone = Receiver::start(Duration::ZERO, |_, _| StatusCode::GONE.into_response()).await;
    let (s, gone_ep) = app
        .post("/v1/tenants/acme/endpoints", json!({"url": gone.url}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let gone_id = gone_ep["id"].as_str().unwrap().to_owned();
    let (s, _) = app
        .post(
            "/v1/tenants/acme/events",
            json!({"type": "audit.checked", "data": {}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let disabled = eventually(Duration::from_secs(20), || async {
        let (_, list) = app
            .get("/v1/tenants/acme/audit?action=endpoint.disabled")
            .await;
        (list["data"].as_array().unwrap().len() == 1).then_some(list)
    })
    .await
    .expect("the automatic disable is recorded");
    assert_eq!(disabled["data"][0]["actor"], "system");
    assert_eq!(disabled["data"][0]["target"], gone_id.as_str());
    assert!(disabled["data"][0]["changes"]["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));

    // Another tenant's change, which acme's token must not see.
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "other", "name": "Other"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    // What the tenant sees, read with its token before it is revoked.
    let seen = entries(&app, &token, "/v1/tenants/acme/audit").await;
    assert!(seen.iter().all(|e| e["tenant_id"] == "acme"), "{seen:#?}");
    let (s, _) = as_token(&app, &token, Method::GET, "/v1/tenants/other/audit", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = as_token(&app, &token, Method::GET, "/v1/audit", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, _) = send(app.req(
        Method::DELETE,
        &format!("/v1/tenants/acme/tokens/{token_id}"),
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let all = entries(&app, ADMIN, "/v1/audit").await;
    let actions: Vec<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for expected in [
        "tenant.created",
        "token.created",
        "event_type.created",
        "endpoint.created",
        "endpoint.updated",
        "endpoint.secret_rotated",
        "inbox.created",
        "inbox.deleted",
        "endpoint.deleted",
        "source.created",
        "source.deleted",
        "endpoint.disabled",
        "token.revoked",
    ] {
        assert!(
            actions.contains(&expected),
            "{expected} missing from {actions:?}"
        );
    }
    assert_eq!(find(&all, "tenant.created")["actor"], "admin");
    assert_eq!(find(&all, "event_type.created")["tenant_id"], Value::Null);
    let created = find(&all, "endpoint.created");
    assert_eq!(created["actor"], token_id.as_str());
    assert_eq!(created["changes"]["description"], "first");
    let updated = find(&all, "endpoint.updated");
    assert_eq!(updated["actor"], token_id.as_str());
    assert_eq!(
        updated["changes"]["description"],
        json!({"from": "first", "to": "second"})
    );
    assert_eq!(
        updated["changes"]["enabled"],
        json!({"from": true, "to": false})
    );
    assert_eq!(
        updated["changes"]["header_values_changed"],
        json!(["Authorization"])
    );
    assert_eq!(
        updated["changes"]["url"],
        json!({"from": "http://127.0.0.1:9/hook", "to": "http://127.0.0.1:9/hook2"})
    );
    assert_eq!(find(&all, "token.revoked")["target"], token_id.as_str());
    // Entries come back newest first and in time order across pages.
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);

    // Filters: by action, by actor, by target.
    let (_, by_actor) = app
        .get(&format!("/v1/audit?actor={token_id}&limit=250"))
        .await;
    assert!(by_actor["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == token_id.as_str()));
    assert_eq!(by_actor["data"].as_array().unwrap().len(), 6, "{by_actor}");
    let (_, by_target) = app
        .get(&format!("/v1/audit?target={ep_id}&limit=250"))
        .await;
    assert_eq!(
        by_target["data"].as_array().unwrap().len(),
        4,
        "{by_target}"
    );

    // No secret anywhere: signing secrets, header values, URL passwords, tokens.
    let text = serde_json::to_string(&all).unwrap();
    for secret in [
        secret,
        new_secret.as_str(),
        "header-secret-1",
        "header-secret-2",
        "source-password",
        token.as_str(),
        inbox["secret"].as_str().unwrap(),
        inbox["path"]
            .as_str()
            .unwrap()
            .trim_start_matches("/inbox/"),
    ] {
        assert!(!text.contains(secret), "{secret} leaked into {text}");
    }
    app.stop().await;
}
