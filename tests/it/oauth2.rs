//! OAuth2 client credentials against a real authorization server (oauth2-mock-server from
//! the npm registry, installed by scripts/brokers): one token fetch shared by many
//! deliveries, one refresh after a 401, a token endpoint that is down, bad input.

use std::{
    collections::HashSet,
    io::BufRead,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{http::StatusCode, response::IntoResponse};
use serde_json::{json, Value};

use crate::{
    destinations::free_port,
    helpers::{eventually, spawn_app, spawn_app_on, Backend, Receiver},
};

/// oauth2-mock-server on a free port, counting the tokens it issues.
struct AuthServer {
    child: Child,
    token_url: String,
    issued: Arc<AtomicUsize>,
}

impl AuthServer {
    fn start(lifetime_secs: u64) -> Self {
        let port = free_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/oauth2/server.mjs"
        );
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .arg(lifetime_secs.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node runs (scripts/brokers installs oauth2-mock-server)");
        let stdout = child.stdout.take().unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counter = issued.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.starts_with("listening") {
                    let _ = ready_tx.send(());
                } else if line.starts_with("token ") {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("oauth2-mock-server started");
        Self {
            child,
            token_url: format!("http://127.0.0.1:{port}/token"),
            issued,
        }
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver that takes any bearer token except the revoked ones (401), and none at all.
async fn bearer_receiver(revoked: Arc<Mutex<HashSet<String>>>) -> Receiver {
    Receiver::start(Duration::ZERO, move |_, r| {
        let token = r
            .header("authorization")
            .strip_prefix("Bearer ")
            .unwrap_or("");
        if token.is_empty() || revoked.lock().unwrap().contains(token) {
            StatusCode::UNAUTHORIZED.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await
}

fn bearer(r: &crate::helpers::Received) -> String {
    r.header("authorization")
        .strip_prefix("Bearer ")
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn one_token_serves_many_deliveries_and_a_revoked_one_is_refreshed_once() {
    let auth = AuthServer::start(3600);
    let revoked = Arc::new(Mutex::new(HashSet::new()));
    let receiver = bearer_receiver(revoked.clone()).await;
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.dispatch.endpoint_concurrency = 64;
    })
    .await;
    let ep = app
        .endpoint(json!({
            "url": receiver.url,
            "oauth2": {"token_url": auth.token_url, "client_id": "hookrelay",
                       "client_secret": "s3cret", "scope": "webhooks", "audience": "receivers"},
        }))
        .await;
    assert_eq!(ep["oauth2"]["client_secret_set"], true, "{ep}");
    assert!(ep["oauth2"].get("client_secret").is_none(), "{ep}");
    assert!(!ep.to_string().contains("s3cret"), "{ep}");

    // 1,000 events from 64 producers: deliveries run up to 64 at a time.
    const EVENTS: usize = 1000;
    let next = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..64)
        .map(|_| {
            let (http, url, next) = (
                app.http.clone(),
                app.url("/v1/tenants/default/events"),
                next.clone(),
            );
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::SeqCst) < EVENTS {
                    let r = http
                        .post(&url)
                        .bearer_auth(crate::helpers::ADMIN)
                        .json(&json!({"type": "order.paid", "data": {}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::ACCEPTED);
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let got = receiver.wait_for(EVENTS, Duration::from_secs(60)).await;
    assert_eq!(auth.issued(), 1, "one token fetch for the token's lifetime");
    let first = bearer(&got[0]);
    assert!(!first.is_empty());
    assert!(
        got.iter().all(|r| bearer(r) == first),
        "every delivery carried the one token"
    );
    assert!(
        got.iter()
            .all(|r| !r.header("webhook-signature").is_empty()),
        "signed as well"
    );

    // The receiver revokes it: the next delivery gets a 401, hookrelay fetches one new
    // token and tries again at once, within the same attempt.
    revoked.lock().unwrap().insert(first.clone());
    let ev = app.event("order.paid", json!({"n": "after"})).await;
    let delivery = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let d = app.wait_delivery(&delivery, "delivered").await;
    assert_eq!(d["attempts"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(auth.issued(), 2, "one refresh after the 401");
    let all = receiver.requests();
    let tail: Vec<String> = all[EVENTS..].iter().map(bearer).collect();
    assert_eq!(tail.len(), 2, "the refused try and the retried one");
    assert_eq!(tail[0], first);
    assert_ne!(tail[1], first);
    app.stop().await;
}

#[tokio::test]
async fn a_token_endpoint_that_is_down_fails_attempts_clearly_and_opens_the_breaker() {
    let receiver = Receiver::ok().await;
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.breaker.threshold = 3;
        c.breaker.cooldown = Duration::from_secs(300);
    })
    .await;
    let closed = free_port();
    let ep = app
        .endpoint(json!({
            "url": receiver.url,
            "oauth2": {"token_url": format!("http://127.0.0.1:{closed}/token"),
                       "client_id": "hookrelay", "client_secret": "s3cret"},
        }))
        .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    for n in 0..3 {
        app.event("order.paid", json!({ "n": n })).await;
    }
    let path = format!("/v1/tenants/default/endpoints/{id}");
    let open = eventually(Duration::from_secs(30), || async {
        let (_, ep) = app.get(&path).await;
        (ep["breaker"]["state"] == "open").then_some(ep)
    })
    .await;
    assert!(
        open.is_some(),
        "the breaker opens after the failed token requests"
    );
    let (_, deliveries) = app.get("/v1/tenants/default/deliveries").await;
    let first = deliveries["data"][0]["id"].as_str().unwrap().to_owned();
    let (_, detail) = app
        .get(&format!("/v1/tenants/default/deliveries/{first}"))
        .await;
    let error = detail["attempts"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("OAuth2 token request to the token URL failed: connection failed"),
        "{detail}"
    );
    assert_eq!(receiver.count(), 0, "nothing is sent without a token");
    app.stop().await;
}

#[tokio::test]
async fn bad_oauth2_input_is_refused_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::ok().await;
    let good = |over: Value| {
        let mut o = json!({"token_url": "http://127.0.0.1:9/token", "client_id": "c",
                           "client_secret": "s"});
        for (k, v) in over.as_object().unwrap() {
            o[k] = v.clone();
        }
        json!({"url": receiver.url, "oauth2": o})
    };
    for (body, field) in [
        (good(json!({"token_url": "not a url"})), "oauth2.token_url"),
        (
            good(json!({"token_url": "ftp://127.0.0.1/token"})),
            "oauth2.token_url",
        ),
        (
            good(json!({"token_url": "http://10.1.2.3/token"})),
            "oauth2.token_url",
        ),
        (good(json!({"client_id": ""})), "oauth2.client_id"),
        (good(json!({"client_secret": null})), "oauth2.client_secret"),
        (good(json!({"scope": "a\nb"})), "oauth2.scope"),
        (
            json!({"url": "redis://127.0.0.1:6379/0?stream=s",
                   "oauth2": {"token_url": "http://127.0.0.1:9/t", "client_id": "c", "client_secret": "s"}}),
            "oauth2",
        ),
    ] {
        let (status, answer) = app
            .post("/v1/tenants/default/endpoints", body.clone())
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{body} → {answer}");
    }
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");

    // A change keeps the stored secret when it leaves it out, and `null` removes it all.
    let ep = app.endpoint(good(json!({}))).await;
    let path = format!(
        "/v1/tenants/default/endpoints/{}",
        ep["id"].as_str().unwrap()
    );
    let patch = |body: Value| app.req(reqwest::Method::PATCH, &path).json(&body);
    let (status, changed) = crate::helpers::send(patch(
        json!({"oauth2": {"token_url": "http://127.0.0.1:9/other", "client_id": "c2"}}),
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["oauth2"]["client_id"], "c2");
    assert_eq!(changed["oauth2"]["client_secret_set"], true);
    let (status, bad) = crate::helpers::send(patch(
        json!({"oauth2": {"token_url": "nope", "client_id": "c3"}}),
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (_, still) = app.get(&path).await;
    assert_eq!(
        still["oauth2"]["client_id"], "c2",
        "a refused change changes nothing"
    );
    let (status, cleared) = crate::helpers::send(patch(json!({"oauth2": null}))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cleared.get("oauth2").is_none(), "{cleared}");
    app.stop().await;
}
