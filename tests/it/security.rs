//! Security: asymmetric signing, secrets at rest, limits, the strict catalog, tenant
//! isolation across every route, and the SSRF guard when DNS changes.

use std::time::Duration;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Checks a `v1a` signature the way a receiver with only the public key would, using the
/// Ed25519 library directly (not hookrelay's verifier).
fn v1a_verifies(public_key: &str, req: &Received) -> bool {
    let key: [u8; 32] = B64
        .decode(public_key.strip_prefix("whpk_").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = VerifyingKey::from_bytes(&key).unwrap();
    let content = [
        req.header("webhook-id").as_bytes(),
        b".",
        req.header("webhook-timestamp").as_bytes(),
        b".",
        &req.body,
    ]
    .concat();
    req.header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter_map(|s| B64.decode(s).ok()?.try_into().ok())
        .any(|sig: [u8; 64]| key.verify(&content, &Signature::from_bytes(&sig)).is_ok())
}

#[tokio::test]
async fn ed25519_endpoints_send_v1a_signatures_the_public_key_verifies() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": r.url, "signing_scheme": "ed25519"}))
        .await;
    assert_eq!(ep["signing_scheme"], "ed25519");
    let secret = ep["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsk_"), "{secret}");
    let public = ep["public_key"].as_str().unwrap().to_owned();
    assert!(public.starts_with("whpk_"), "{public}");

    app.event("signing.test", json!({"n": 1})).await;
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    let sig = got[0].header("webhook-signature");
    assert!(sig.starts_with("v1a,") && !sig.contains("v1,"), "{sig}");
    assert!(v1a_verifies(&public, &got[0]));
    // A different key does not verify, and a tampered body does not either.
    let other = json!({"url": r.url, "signing_scheme": "ed25519"});
    let other = app.endpoint(other).await["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!v1a_verifies(&other, &got[0]));
    let mut tampered = got[0].clone();
    tampered.body = b"{}".to_vec().into();
    assert!(!v1a_verifies(&public, &tampered));

    // Lists show the public key (it is not a secret) but never the secret key.
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    let listed = &list["data"].as_array().unwrap()[1];
    assert_eq!(listed["public_key"], public.as_str());
    assert!(listed.get("secret").is_none());

    // Rotating to HMAC keeps the old key signing during the grace: both kinds are sent.
    let (s, rotated) = app
        .post(
            &format!(
                "/v1/tenants/default/endpoints/{}/rotate-secret",
                ep["id"].as_str().unwrap()
            ),
            json!({"signing_scheme": "hmac-sha256"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let hmac = rotated["secret"].as_str().unwrap().to_owned();
    assert!(hmac.starts_with("whsec_"));
    app.event("signing.test", json!({"n": 2})).await;
    let got = r.wait_for(3, Duration::from_secs(10)).await;
    let second = got
        .iter()
        .find(|g| g.json()["data"]["n"] == 2 && v1a_verifies(&public, g))
        .expect("the rotated endpoint's delivery carries a v1a signature of the old key");
    hookrelay::signing::verify(
        &[&hmac],
        Some(second.header("webhook-id")),
        Some(second.header("webhook-timestamp")),
        Some(second.header("webhook-signature")),
        &second.body,
        chrono::Utc::now().timestamp(),
    )
    .unwrap();
    app.stop().await;
}

#[tokio::test]
async fn mismatched_or_malformed_signing_keys_are_refused() {
    let app = spawn_app().await;
    let path = "/v1/tenants/default/endpoints";
    for (body, needle) in [
        (
            json!({"url": "http://127.0.0.1:9/", "signing_scheme": "ed25519",
                   "secret": hookrelay::signing::generate_secret()}),
            "does not match signing_scheme ed25519",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "secret": "whsk_AAAA"}),
            "Ed25519",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "signing_scheme": "rsa"}),
            "signing_scheme",
        ),
    ] {
        let (s, err) = app.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    let (_, list) = app.get(path).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );
    app.stop().await;
}

fn random_key() -> String {
    use rand::RngCore;
    let mut k = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut k);
    B64.encode(k)
}

/// The stored `secret` and `previous_secret` columns of an endpoint, read past hookrelay.
async fn stored_secrets(database_url: &str, id: &str) -> (String, Option<String>) {
    let sql = "SELECT secret, previous_secret FROM endpoints WHERE id = $1";
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let row = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.unwrap();
        pool.close().await;
        row
    } else {
        let pool = sqlx::PgPool::connect(&with_hookrelay_tables(database_url))
            .await
            .unwrap();
        let row = sqlx::query_as(sql).bind(id).fetch_one(&pool).await.unwrap();
        pool.close().await;
        row
    }
}

async fn secrets_are_encrypted_at_rest_and_keys_rotate(backend: Backend) {
    // Written before any key is configured: plaintext.
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    let before = app.endpoint(json!({"url": r.url})).await;
    let before_id = before["id"].as_str().unwrap().to_owned();
    let before_secret = before["secret"].as_str().unwrap().to_owned();
    let url = app.config().database_url.clone();
    assert_eq!(stored_secrets(&url, &before_id).await.0, before_secret);

    // A start with a key seals what was there, and seals new secrets as they are written.
    let old_key = random_key();
    let app = app
        .restart_with(|c| c.encryption_keys = vec![old_key.as_str().into()])
        .await;
    let (stored, _) = stored_secrets(&url, &before_id).await;
    assert!(stored.starts_with("enc1:"), "{stored}");
    assert!(!stored.contains(&before_secret));
    let (s, got) = app
        .get(&format!("/v1/tenants/default/endpoints/{before_id}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        got["secret"],
        before_secret.as_str(),
        "the API shows it opened"
    );
    let after = app.endpoint(json!({"url": r.url})).await;
    let after_id = after["id"].as_str().unwrap().to_owned();
    let (stored, _) = stored_secrets(&url, &after_id).await;
    assert!(stored.starts_with("enc1:") && !stored.contains(after["secret"].as_str().unwrap()));
    // A rotation seals the previous secret too.
    let (s, _) = app
        .post(
            &format!("/v1/tenants/default/endpoints/{after_id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, prev) = stored_secrets(&url, &after_id).await;
    assert!(prev.unwrap().starts_with("enc1:"));

    // Deliveries are signed with the opened secret.
    app.event("sealed.test", json!({})).await;
    let got = r.wait_for(2, Duration::from_secs(10)).await;
    let signed_by_before = got.iter().any(|g| {
        hookrelay::signing::verify(
            &[&before_secret],
            Some(g.header("webhook-id")),
            Some(g.header("webhook-timestamp")),
            Some(g.header("webhook-signature")),
            &g.body,
            chrono::Utc::now().timestamp(),
        )
        .is_ok()
    });
    assert!(signed_by_before);

    // Key rotation: a new first key re-seals everything at start; the old one still opens.
    let new_key = random_key();
    let (old_sealed, _) = stored_secrets(&url, &before_id).await;
    let app = app
        .restart_with(|c| {
            c.encryption_keys = vec![new_key.as_str().into(), old_key.as_str().into()]
        })
        .await;
    let (new_sealed, _) = stored_secrets(&url, &before_id).await;
    assert_ne!(old_sealed.split(':').nth(1), new_sealed.split(':').nth(1));
    let (_, got) = app
        .get(&format!("/v1/tenants/default/endpoints/{before_id}"))
        .await;
    assert_eq!(got["secret"], before_secret.as_str());

    // Without the key that sealed them, the server refuses to start rather than sign
    // with garbage.
    let mut wrong = app.config().clone();
    wrong.encryption_keys = vec![random_key().into()];
    let mut app = app;
    app.halt_keeping_data().await;
    let err = hookrelay::App::build(wrong).await.err().expect("refused");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(chain.contains("not configured"), "{chain}");
    // A malformed key is refused with a clear message.
    let mut bad = app.config().clone();
    bad.encryption_keys = vec!["c2hvcnQ=".into()];
    let err = hookrelay::App::build(bad).await.err().expect("refused");
    let chain = format!("{:?}", anyhow::Error::from(err));
    assert!(chain.contains("32 bytes"), "{chain}");
    app.stop().await;
}

async fn endpoints_per_tenant_are_limited(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.max_endpoints_per_tenant = 3).await;
    let path = "/v1/tenants/default/endpoints";
    // Concurrent creates cannot overshoot the limit.
    let creates = (0..8).map(|_| app.post(path, json!({"url": "http://127.0.0.1:9/"})));
    let results = futures::future::join_all(creates).await;
    let created = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 3);
    for (s, b) in results.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*s, StatusCode::CONFLICT, "{b}");
        assert_eq!(b["error"]["code"], "limit_reached");
        assert!(b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has 3 endpoints"));
    }
    let (_, list) = app.get(path).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    // Deleting one makes room again.
    let id = list["data"][0]["id"].as_str().unwrap();
    let (s, _) = send(app.req(reqwest::Method::DELETE, &format!("{path}/{id}"))).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.post(path, json!({"url": "http://127.0.0.1:9/"})).await;
    assert_eq!(s, StatusCode::CREATED);
    app.stop().await;
}

async fn the_strict_catalog_refuses_unknown_types(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.strict_event_types = true).await;
    let (s, b) = app
        .post(
            "/v1/event-types",
            json!({"name": "order.paid", "schema": {
                "type": "object", "required": ["amount"],
                "properties": {"amount": {"type": "integer", "minimum": 0}}}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = app
        .post("/v1/event-types", json!({"name": "order.noted"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let r = Receiver::ok().await;
    app.endpoint(json!({"url": r.url})).await;
    let events = "/v1/tenants/default/events";

    let (s, b) = app
        .post(events, json!({"type": "order.shipped", "data": {}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "unknown_event_type");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("order.shipped"));
    // Schema failures name the path.
    let (s, b) = app
        .post(
            events,
            json!({"type": "order.paid", "data": {"amount": -1}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "schema_validation_failed");
    assert!(b["error"]["message"].as_str().unwrap().contains("/amount"));
    // Nothing was stored for the refused events.
    let (_, list) = app.get(events).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Known types pass, with or without a schema.
    let (s, _) = app
        .post(events, json!({"type": "order.paid", "data": {"amount": 5}}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = app
        .post(events, json!({"type": "order.noted", "data": {"x": 1}}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    r.wait_for(2, Duration::from_secs(10)).await;

    // Endpoint filters may not name unknown exact types; wildcards are fine.
    let (s, b) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": r.url, "event_types": ["order.refunded"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["error"]["code"], "unknown_event_type");
    let (s, b) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": r.url, "event_types": ["order.paid", "invoice.*"]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    app.stop().await;
}

/// A plausible body for each route, so that a refusal is about who asks, not what.
fn body_for(method: &reqwest::Method, path: &str, receiver: &str) -> Option<serde_json::Value> {
    use reqwest::Method;
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    Some(if path.ends_with("/endpoints") {
        json!({"url": receiver})
    } else if path.ends_with("/sources") {
        json!({"url": "redis://127.0.0.1:6379/0?stream=hr-intruder"})
    } else if path.ends_with("/events") {
        json!({"type": "matrix.test", "data": {}})
    } else if *method == Method::PATCH {
        json!({"description": "changed by another tenant", "url": receiver})
    } else if path == "/v1/tenants" {
        json!({"name": "intruder"})
    } else if path == "/v1/event-types" {
        json!({"name": "intruder.type"})
    } else {
        json!({})
    })
}

/// Every route of the published API, with another tenant's token: the answer for the
/// victim's real objects is the same refusal as for objects that do not exist (so ids do
/// not leak), never a success; and afterwards the victim's data is unchanged. Routes come
/// from the server's own OpenAPI document, so a new route is covered (or fails this test
/// until a victim object of its kind is added below).
async fn tenant_isolation_holds_on_every_route(backend: Backend) {
    use reqwest::Method;
    let app = spawn_app_on(backend, |_| {}).await;
    let r = Receiver::ok().await;
    // The victim: tenant `default`, with one of everything.
    let ep = app.endpoint(json!({"url": r.url})).await;
    let event = app
        .event("matrix.test", json!({"secret": "victim data"}))
        .await;
    let delivery = app
        .wait_delivery(event["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    let (s, victim_token) = app.post("/v1/tenants/default/tokens", json!({})).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, inbox) = app.post("/v1/tenants/default/inboxes", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{inbox}");
    let (s, source) = app
        .post(
            "/v1/tenants/default/sources",
            json!({"url": format!("redis://127.0.0.1:6379/0?stream=hr-victim-{}", ulid::Ulid::new())}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{source}");
    let (s, portal_link) = app
        .post("/v1/tenants/default/portal-links", json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{portal_link}");
    let victim: std::collections::HashMap<&str, String> = [
        ("endpoints", ep["id"].as_str().unwrap().to_owned()),
        ("events", event["id"].as_str().unwrap().to_owned()),
        ("deliveries", delivery["id"].as_str().unwrap().to_owned()),
        ("tokens", victim_token["id"].as_str().unwrap().to_owned()),
        ("inboxes", inbox["id"].as_str().unwrap().to_owned()),
        ("sources", source["id"].as_str().unwrap().to_owned()),
        (
            "portal-links",
            portal_link["id"].as_str().unwrap().to_owned(),
        ),
    ]
    .into();
    // The attacker: tenant `acme` with its own token.
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, tok) = app.post("/v1/tenants/acme/tokens", json!({})).await;
    let token = tok["token"].as_str().unwrap().to_owned();
    let (_, before_ep) = app
        .get(&format!(
            "/v1/tenants/default/endpoints/{}",
            victim["endpoints"]
        ))
        .await;
    let (_, before_events) = app.get("/v1/tenants/default/events").await;

    let (_, spec) = send(app.http.get(app.url("/openapi.json"))).await;
    let mut checked = 0;
    for (template, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Fill a template: `{tenant}` with `tenant`, `{id}` with `ids(kind)` where the
            // kind is the path segment before it.
            let fill = |tenant: &str, ids: &dyn Fn(&str) -> String| {
                let segments: Vec<&str> = template.split('/').collect();
                segments
                    .iter()
                    .enumerate()
                    .map(|(i, seg)| match *seg {
                        "{tenant}" => tenant.to_owned(),
                        "{id}" => ids(segments[i - 1]),
                        other => {
                            assert!(!other.starts_with('{'), "unknown parameter in {template}");
                            other.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let real = |kind: &str| -> String {
                victim.get(kind).cloned().unwrap_or_else(|| {
                    panic!("no victim object of kind {kind:?} for {template}: add one to this test")
                })
            };
            // An id of the same kind and shape that nothing has.
            let ghost = |kind: &str| {
                let real = real(kind);
                let prefix = real.split_once('_').map_or("", |(p, _)| p);
                format!("{prefix}_{}", ulid::Ulid::new())
            };
            let call = |path: String| {
                let mut req = app
                    .http
                    .request(method.clone(), app.url(&path))
                    .bearer_auth(&token);
                if let Some(body) = body_for(&method, template, &r.url) {
                    req = req.json(&body);
                }
                send(req)
            };
            if template.contains("{tenant}") {
                // The victim's tenant, and the attacker's own tenant with the victim's ids.
                for tenant in ["default", "acme"] {
                    if tenant == "acme" && !template.contains("{id}") {
                        continue;
                    }
                    let (s_real, b_real) = call(fill(tenant, &real)).await;
                    let ghost_tenant = if tenant == "default" { "ghost" } else { "acme" };
                    let (s_ghost, b_ghost) = call(fill(ghost_tenant, &ghost)).await;
                    assert!(
                        s_real == StatusCode::NOT_FOUND || s_real == StatusCode::FORBIDDEN,
                        "{method} {template} as another tenant ({tenant}): {s_real} {b_real}"
                    );
                    assert_eq!(
                        (s_real, &b_real["error"]["code"]),
                        (s_ghost, &b_ghost["error"]["code"]),
                        "{method} {template}: a real id answers differently from a missing one"
                    );
                    checked += 1;
                }
            } else {
                let (s, b) = call(template.clone()).await;
                if method == Method::GET && s != StatusCode::FORBIDDEN {
                    // A shared read (the catalog, the caller's own tenants) shows nothing
                    // of the victim's; an operator-only one is refused.
                    assert_eq!(s, StatusCode::OK, "{method} {template}: {b}");
                    let text = b.to_string();
                    assert!(
                        !text.contains("\"default\""),
                        "{template} shows the victim: {text}"
                    );
                } else {
                    assert_eq!(s, StatusCode::FORBIDDEN, "{method} {template}: {b}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 25, "only {checked} route checks ran");

    // Nothing of the victim's changed, and its token still works.
    let (s, after_ep) = app
        .get(&format!(
            "/v1/tenants/default/endpoints/{}",
            victim["endpoints"]
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(before_ep, after_ep);
    let (_, after_events) = app.get("/v1/tenants/default/events").await;
    assert_eq!(before_events, after_events);
    let (_, links) = app.get("/v1/tenants/default/portal-links").await;
    assert_eq!(links["data"][0]["active"], true, "{links}");
    let (_, d) = app
        .get(&format!(
            "/v1/tenants/default/deliveries/{}",
            victim["deliveries"]
        ))
        .await;
    assert_eq!(d["status"], "delivered");
    assert_eq!(d["attempt_count"], 1, "no retry or replay happened");
    let (s, _) = send(
        app.http
            .get(app.url("/v1/tenants/default/endpoints"))
            .bearer_auth(victim_token["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r.count(), 1);
    let (s, _) = app
        .get(&format!(
            "/v1/tenants/default/inboxes/{}",
            victim["inboxes"]
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "the victim's inbox is still there");
    app.stop().await;
}

crate::both_stores!(
    secrets_are_encrypted_at_rest_and_keys_rotate,
    endpoints_per_tenant_are_limited,
    the_strict_catalog_refuses_unknown_types,
    tenant_isolation_holds_on_every_route,
);

/// A real DNS server (dnsmasq) on a loopback port, answering from a hosts directory that
/// it re-reads when a file changes.
struct Dns {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Dns {
    /// Starts dnsmasq answering `name` = `ip`, once it does. dnsmasq listens on UDP and TCP:
    /// a port another test takes meanwhile makes it exit, and then it is started again on
    /// another port.
    async fn start(name: &str, ip: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts"), format!("{ip} {name}\n")).unwrap();
        for _ in 0..5 {
            // A port free for both TCP and UDP: bind both, read it, release them.
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) else {
                continue;
            };
            drop((tcp, udp));
            let mut child = std::process::Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--no-resolv",
                    "--no-hosts",
                    "--bind-interfaces",
                    "--listen-address=127.0.0.1",
                    "--local-ttl=0",
                    "--cache-size=0",
                    "--pid-file=",
                    "--user=root",
                ])
                .arg(format!("--port={port}"))
                .arg(format!("--hostsdir={}", dir.path().display()))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dnsmasq is installed (scripts/services installs dnsmasq-base)");
            let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
            // Listening on TCP first: a UDP query sent before it listens waits out the
            // resolver's timeout.
            let listening = eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(addr).await.ok()
            })
            .await;
            if listening.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            if answers(addr, name, ip).await {
                return Self { addr, dir, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start answering {name} = {ip} on any of five ports");
    }

    /// Points `name` at `ip` and waits until the server answers so.
    async fn point(&self, name: &str, ip: &str) {
        // Write and rename so dnsmasq never reads half a file.
        let tmp = self.dir.path().join(".hosts.tmp");
        std::fs::write(&tmp, format!("{ip} {name}\n")).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("hosts")).unwrap();
        assert!(
            answers(self.addr, name, ip).await,
            "dnsmasq never answered {name} = {ip}"
        );
    }
}

/// Whether the DNS server at `addr` answers `name` with `ip` within 10 s.
async fn answers(addr: std::net::SocketAddr, name: &str, ip: &str) -> bool {
    let want: std::net::IpAddr = ip.parse().unwrap();
    let lookup = hookrelay::destinations::net::Lookup::server(addr);
    eventually(Duration::from_secs(10), || {
        let lookup = lookup.clone();
        async move {
            lookup
                .resolve(name, 80)
                .await
                .ok()
                .filter(|ips| ips.contains(&want))
        }
    })
    .await
    .is_some()
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every blocked range, refused when an endpoint is created with a name that points at
/// it, and refused on delivery when DNS points an existing endpoint's name at it later.
#[tokio::test]
async fn ssrf_guard_follows_dns_changes() {
    const NAME: &str = "rebind.hookrelay.test";
    const BLOCKED: &[&str] = &[
        "127.0.0.2",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:169.254.169.254",
        // 6to4 around 169.254.169.254, the 6to4 relay anycast, Teredo, discard-only.
        "2002:a9fe:a9fe::1",
        "192.88.99.1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "100::1",
    ];
    let dns = Dns::start(NAME, "127.0.0.1").await;
    // Loopback is allowed for the receiver's sake, but only 127.0.0.1/32: the rest of
    // 127/8 is as blocked as any private range.
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
        c.dns_server = Some(dns.addr);
        c.breaker.threshold = 1000;
    })
    .await;
    let r = Receiver::ok().await;
    let port = r
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let url = format!("http://{NAME}:{port}/");
    // Created while the name is harmless. (No delivery yet: a kept-alive connection would
    // stay with the address checked when it was opened, which is safe but skips DNS.)
    dns.point(NAME, "127.0.0.1").await;
    let ep = app.endpoint(json!({"url": url, "max_attempts": 1})).await;

    for ip in BLOCKED {
        dns.point(NAME, ip).await;
        // At creation.
        let (s, b) = app
            .post("/v1/tenants/default/endpoints", json!({"url": url}))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{ip}: {b}");
        assert_eq!(b["error"]["code"], "invalid_url", "{ip}");
        // Later, for the endpoint created while the name was harmless.
        let event = app.event("ssrf.test", json!({"ip": ip})).await;
        let d = app
            .wait_delivery(event["deliveries"][0]["id"].as_str().unwrap(), "failed")
            .await;
        let (_, detail) = app
            .get(&format!(
                "/v1/tenants/default/deliveries/{}",
                d["id"].as_str().unwrap()
            ))
            .await;
        let error = detail["attempts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("not allowed"), "{ip}: {error}");
    }
    assert_eq!(
        r.count(),
        0,
        "nothing reached the receiver through a blocked address"
    );
    // Back to the allowed address: delivered again.
    dns.point(NAME, "127.0.0.1").await;
    let event = app.event("ssrf.test", json!({})).await;
    app.wait_delivery(event["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    assert_eq!(r.count(), 1);
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{ep}");
    app.stop().await;
}

/// A proxy from the environment never carries a delivery: it would resolve the name itself,
/// past the SSRF guard. The "proxy" here is a plain receiver on loopback; the endpoint's
/// name does not resolve at all, so only a proxy could deliver to it.
#[tokio::test]
async fn deliveries_ignore_proxies_from_the_environment() {
    let proxy = Receiver::ok().await;
    let proxy_url = proxy.url.trim_end_matches("/hook").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("proxy.db").display());
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .args(["--admin-token", ADMIN])
        .env("RUST_LOG", "info")
        .env("HTTP_PROXY", &proxy_url)
        .env("http_proxy", &proxy_url)
        .env("HTTPS_PROXY", &proxy_url)
        .env("ALL_PROXY", &proxy_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let (mut child, base) = start_binary(command);
    // The test's own client must not use the proxy either.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let (s, b) = send(
        http.post(format!("{base}/v1/tenants/default/endpoints"))
            .bearer_auth(ADMIN)
            .json(
                &json!({"url": "http://metadata.hookrelay-test.invalid/hook", "max_attempts": 1}),
            ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, event) = send(
        http.post(format!("{base}/v1/tenants/default/events"))
            .bearer_auth(ADMIN)
            .json(&json!({"type": "order.paid", "data": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{event}");
    let id = event["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let detail = eventually(Duration::from_secs(30), || async {
        let (_, d) = send(
            http.get(format!("{base}/v1/tenants/default/deliveries/{id}"))
                .bearer_auth(ADMIN),
        )
        .await;
        (d["status"] != "pending").then_some(d)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let detail = detail.expect("the delivery finished");
    assert_eq!(proxy.count(), 0, "the proxy carried a delivery: {detail}");
    assert_eq!(detail["status"], "failed", "{detail}");
}

/// A capability URL (the credential in its path or query) never shows in an attempt's
/// error, which tenants and logs see.
#[tokio::test]
async fn attempt_errors_do_not_show_capability_urls() {
    let app = spawn_app().await;
    // Nothing listens on port 1: the attempt fails with a connection error.
    let url = "http://127.0.0.1:1/services/T0/B0/s3cretPathToken?token=s3cretQuery";
    let ep = app.endpoint(json!({"url": url, "max_attempts": 1})).await;
    assert!(ep["id"].is_string(), "{ep}");
    let event = app.event("order.paid", json!({})).await;
    let id = event["deliveries"][0]["id"].as_str().unwrap();
    app.wait_delivery(id, "failed").await;
    let (_, detail) = app
        .get(&format!("/v1/tenants/default/deliveries/{id}"))
        .await;
    let error = detail["attempts"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("connection"), "{error}");
    let text = detail.to_string();
    assert!(
        !text.contains("s3cretPathToken") && !text.contains("s3cretQuery"),
        "{text}"
    );
    app.stop().await;
}

/// Event data written past the API (through `dispatch_webhook()`), nested deeper than
/// hookrelay reads (128 levels): that event's delivery fails with a clear error, once,
/// and deliveries of other events claimed with it still go.
#[tokio::test]
async fn an_unreadable_stored_event_fails_only_its_delivery() {
    use sqlx::Connection;
    let app = spawn_app_on(Backend::Postgres, |_| {}).await;
    let r = Receiver::ok().await;
    app.endpoint(json!({"url": r.url, "max_attempts": 3})).await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let mut conn = sqlx::PgConnection::connect(app.database_url())
        .await
        .unwrap();
    // In one transaction, so one claim most likely takes them together.
    let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
    sqlx::query("SELECT dispatch_webhook('order.paid', '{\"n\": 1}')")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (deep_event,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('order.paid', jsonb_build_object('deep', $1::jsonb))",
    )
    .bind(&deep)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT dispatch_webhook('order.paid', '{\"n\": 2}')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = r.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 2);
    let (_, event) = app
        .get(&format!(
            "/v1/tenants/default/deliveries?event={deep_event}"
        ))
        .await;
    let id = event["data"][0]["id"].as_str().unwrap().to_owned();
    let d = app.wait_delivery(&id, "failed").await;
    let (_, detail) = app
        .get(&format!(
            "/v1/tenants/default/deliveries/{}",
            d["id"].as_str().unwrap()
        ))
        .await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "failed at once, not retried: {detail}");
    let error = attempts[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot be read"), "{error}");
    assert_eq!(r.count(), 2, "nothing was sent for the unreadable event");
    app.stop().await;
}
