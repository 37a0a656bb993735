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

/// The error of the first attempt of the delivery at `path`, once there is one.
async fn first_error(app: &crate::helpers::TestApp, path: &str) -> String {
    crate::helpers::eventually(Duration::from_secs(20), || async {
        let (_, d) = app.get(path).await;
        d["attempts"][0]["error"].as_str().map(str::to_owned)
    })
    .await
    .expect("an attempt was made")
}

/// tinyproxy (Debian's package, installed by scripts/brokers) on a free port, logging every
/// request it is asked for.
pub(crate) struct Tinyproxy {
    child: std::process::Child,
    pub(crate) url: String,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tinyproxy {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = crate::destinations::free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 10\nLogFile \"{}\"\nLogLevel Connect\n\
                 MaxClients 100\nAllow 127.0.0.1\n",
                log.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tinyproxy runs (scripts/brokers installs it)");
        let up = crate::helpers::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        assert!(up.is_some(), "tinyproxy listens on {port}");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The requests it was asked to forward (`POST http://…`).
    pub(crate) fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                l.split_once("Request (file descriptor ")
                    .map(|(_, r)| r.to_owned())
            })
            .filter_map(|r| r.split_once("): ").map(|(_, r)| r.to_owned()))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn deliveries_leave_through_the_egress_proxy_except_for_its_exceptions() {
    let proxy = Tinyproxy::start().await;
    let (via_proxy, direct) = (Receiver::ok().await, Receiver::ok().await);
    let proxy_url = proxy.url.clone();
    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Sqlite, |c| {
        c.egress_proxy = Some(proxy_url.as_str().into());
        c.egress_no_proxy = vec!["localhost".into()];
    })
    .await;
    app.endpoint(json!({"url": via_proxy.url, "event_types": ["a.b"]}))
        .await;
    // The same kind of receiver, named by a host in the exception list.
    let bypass = direct.url.replace("127.0.0.1", "localhost");
    app.endpoint(json!({"url": bypass, "event_types": ["c.d"]}))
        .await;
    app.event("a.b", json!({})).await;
    app.event("c.d", json!({})).await;
    let proxied = via_proxy.wait_for(1, Duration::from_secs(20)).await;
    let bypassed = direct.wait_for(1, Duration::from_secs(20)).await;
    assert!(
        proxied[0].header("via").contains("tinyproxy"),
        "{:?}",
        proxied[0].headers
    );
    assert_eq!(bypassed[0].header("via"), "");
    let asked = proxy.requests();
    assert!(
        asked
            .iter()
            .any(|r| r.starts_with(&format!("POST {}", via_proxy.url))),
        "{asked:?}"
    );
    let direct_port = direct.url.rsplit(':').next().unwrap().to_owned();
    assert!(!asked.iter().any(|r| r.contains(&direct_port)), "{asked:?}");
    assert!(!proxied[0].header("webhook-signature").is_empty());

    // A destination the network rules now refuse is refused before the proxy is asked,
    // although the proxy could reach it.
    let refused = Receiver::ok().await;
    let refused_url = refused.url.replace("127.0.0.1", "127.0.0.2");
    app.endpoint(json!({"url": refused_url, "event_types": ["e.f"]}))
        .await;
    let app = app
        .restart_with(|c| c.allow_networks = vec!["127.0.0.1/32".parse().unwrap()])
        .await;
    let ev = app.event("e.f", json!({})).await;
    let id = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tenants/default/deliveries/{id}");
    let failed = first_error(&app, &path).await;
    assert!(failed.contains("the proxy was not asked"), "{failed}");
    assert!(!proxy.requests().iter().any(|r| r.contains("127.0.0.2")));
    assert_eq!(refused.count(), 0);
    app.stop().await;
}

#[tokio::test]
async fn an_egress_proxy_that_is_down_or_cannot_connect_says_so() {
    let receiver = Receiver::ok().await;
    let closed = crate::destinations::free_port();
    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Sqlite, |c| {
        c.egress_proxy = Some(format!("http://127.0.0.1:{closed}").into());
    })
    .await;
    let ev_path = |ev: &serde_json::Value| {
        format!(
            "/v1/tenants/default/deliveries/{}",
            ev["deliveries"][0]["id"].as_str().unwrap()
        )
    };
    app.endpoint(json!({"url": receiver.url})).await;
    let ev = app.event("a.b", json!({})).await;
    let path = ev_path(&ev);
    let error = first_error(&app, &path).await;
    assert!(
        error.starts_with("connection to the proxy failed"),
        "{error}"
    );
    assert_eq!(receiver.count(), 0);
    app.stop().await;

    // A proxy that answers but cannot reach the destination: its own answer says so.
    let proxy = Tinyproxy::start().await;
    let proxy_url = proxy.url.clone();
    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Sqlite, |c| {
        c.egress_proxy = Some(proxy_url.as_str().into());
    })
    .await;
    let gone = crate::destinations::free_port();
    app.endpoint(json!({"url": format!("http://127.0.0.1:{gone}/hook")}))
        .await;
    let ev = app.event("a.b", json!({})).await;
    let path = ev_path(&ev);
    let error = first_error(&app, &path).await;
    assert!(error.contains("from the proxy"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn an_endpoint_can_have_a_proxy_of_its_own_or_go_direct() {
    let (global, own) = (Tinyproxy::start().await, Tinyproxy::start().await);
    let receiver = Receiver::ok().await;
    let global_url = global.url.clone();
    let app = crate::helpers::spawn_app_on(crate::helpers::Backend::Sqlite, |c| {
        c.egress_proxy = Some(global_url.as_str().into());
    })
    .await;
    let own_proxy = own.url.replace("http://", "http://user:pw@");
    let ep = app
        .endpoint(
            json!({"url": format!("{}?own", receiver.url), "event_types": ["own.proxy"],
                         "proxy": own_proxy}),
        )
        .await;
    assert_eq!(
        ep["proxy"],
        own.url.replace("http://", "http://user:***@"),
        "{ep}"
    );
    app.endpoint(
        json!({"url": format!("{}?direct", receiver.url), "event_types": ["no.proxy"],
                        "proxy": "direct"}),
    )
    .await;
    app.event("own.proxy", json!({})).await;
    app.event("no.proxy", json!({})).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(
        got.iter()
            .filter(|r| r.header("via").contains("tinyproxy"))
            .count(),
        1
    );
    assert!(
        own.requests().iter().any(|r| r.contains("?own")),
        "{:?}",
        own.requests()
    );
    assert!(global.requests().is_empty(), "{:?}", global.requests());

    // Only the admin token sets one: it reaches the operator's network.
    let (status, token) = app.post("/v1/tenants/default/tokens", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{token}");
    let (status, answer) = send(
        app.http
            .post(app.url("/v1/tenants/default/endpoints"))
            .bearer_auth(token["token"].as_str().unwrap())
            .json(&json!({"url": receiver.url, "proxy": "direct"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, answer) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": receiver.url, "proxy": "socks5://x:1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    app.stop().await;
}
