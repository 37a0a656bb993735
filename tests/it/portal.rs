//! The consumer portal: links made through the API and the CLI, and the portal's pages in
//! a real headless Chromium (as the dashboard's tests), against the real server.

use std::time::Duration;

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::ui::Browser;

/// Makes `tenant` with an endpoint (that nothing listens at) and a delivery to it; their ids.
async fn tenant_with_data(app: &TestApp, tenant: &str) -> (String, String) {
    let (s, t) = app
        .post("/v1/tenants", json!({"id": tenant, "name": tenant}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (s, ep) = app
        .post(
            &format!("/v1/tenants/{tenant}/endpoints"),
            json!({"url": format!("http://127.0.0.1:9/{tenant}-hook"), "max_attempts": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let (s, ev) = app
        .post(
            &format!("/v1/tenants/{tenant}/events"),
            json!({"type": "order.paid", "data": {"who": tenant}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    let ep = ep["id"].as_str().unwrap().to_owned();
    let delivery = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    (ep, delivery)
}

async fn link(app: &TestApp, tenant: &str, body: Value) -> Value {
    let (s, link) = app
        .post(&format!("/v1/tenants/{tenant}/portal-links"), body)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{link}");
    link
}

async fn catalog(app: &TestApp, names: &[(&str, &str)]) {
    for (name, description) in names {
        let (s, t) = app
            .post(
                "/v1/event-types",
                json!({"name": name, "description": description,
                       "schema": {"type": "object", "properties": {"id": {"type": "string"}}}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
    }
}

fn audit_actions(entries: &Value) -> Vec<String> {
    entries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until `selector`'s text holds `text` (the page may still be the one before).
async fn wait_text(b: &Browser, selector: &str, text: &str) {
    let found = eventually(Duration::from_secs(10), || async {
        let e = b.client.find(Locator::Css(selector)).await.ok()?;
        e.text().await.ok()?.contains(text).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "{selector} never said {text:?}: {}",
        b.body().await
    );
}

/// Runs the CLI against `app` as the admin, in tenant globex; its standard output.
async fn cli(app: &TestApp, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(args)
        .args([
            "--server", &app.base, "--token", ADMIN, "--tenant", "globex",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn portal_links_are_made_listed_and_revoked_through_the_api_and_cli() {
    let app = spawn_app().await;
    catalog(&app, &[("order.paid", "An order was paid")]).await;
    for tenant in ["acme", "globex"] {
        let (s, _) = app
            .post("/v1/tenants", json!({"id": tenant, "name": tenant}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }

    // Defaults: an hour, everything allowed but brokers; the token only in this answer.
    let made = link(&app, "acme", json!({})).await;
    assert!(
        made["token"].as_str().unwrap().starts_with("hrp_"),
        "{made}"
    );
    assert_eq!(
        made["url"].as_str().unwrap(),
        app.url(&format!("/portal/open/{}", made["token"].as_str().unwrap()))
    );
    let lifetime = chrono::DateTime::parse_from_rfc3339(made["expires_at"].as_str().unwrap())
        .unwrap()
        - chrono::DateTime::parse_from_rfc3339(made["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(lifetime.num_seconds(), 3600, "{made}");
    assert_eq!(made["active"], true);
    assert_eq!(made["read_only"], false);
    assert_eq!(made["event_types"], Value::Null);

    // Bad input: a clear 400, nothing made.
    for (body, says) in [
        (json!({"expires_in": 8 * 86400}), "expires_in"),
        (json!({"expires_in": 0}), "expires_in"),
        (json!({"event_types": []}), "event_types"),
        (
            json!({"event_types": ["nope.missing"]}),
            "not in the event-type catalog",
        ),
        (json!({"event_types": ["bad type"]}), "event_types"),
        (json!({"read_only": "yes"}), ""),
        (json!({"lifetime": 60}), "unknown field"),
    ] {
        let (s, e) = app
            .post("/v1/tenants/acme/portal-links", body.clone())
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert!(
            e["error"]["message"].as_str().unwrap().contains(says),
            "{body}: {e}"
        );
    }
    let (_, list) = app.get("/v1/tenants/acme/portal-links").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
    assert!(list["data"][0].get("token").is_none(), "{list}");

    // A tenant token makes links for its own tenant only.
    let (_, token) = app.post("/v1/tenants/acme/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap();
    let (s, own) = send(
        app.http
            .post(app.url("/v1/tenants/acme/portal-links"))
            .bearer_auth(token)
            .json(&json!({"read_only": true, "event_types": ["order.paid"], "expires_in": 600})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{own}");
    assert_eq!(own["read_only"], true);
    assert_eq!(own["event_types"], json!(["order.paid"]));
    let (s, _) = send(
        app.http
            .post(app.url("/v1/tenants/globex/portal-links"))
            .bearer_auth(token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // A link is not an API token.
    let (s, _) = send(
        app.http
            .get(app.url("/v1/tenants/acme/endpoints"))
            .bearer_auth(made["token"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Revoked: listed as inactive; revoking again is fine; another tenant's is not found.
    let id = made["id"].as_str().unwrap();
    let (s, _) = send(app.req(
        Method::DELETE,
        &format!("/v1/tenants/globex/portal-links/{id}"),
    ))
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for _ in 0..2 {
        let (s, _) = send(app.req(
            Method::DELETE,
            &format!("/v1/tenants/acme/portal-links/{id}"),
        ))
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    let (_, list) = app.get("/v1/tenants/acme/portal-links").await;
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id)
        .unwrap();
    assert_eq!(revoked["active"], false);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // The CLI: create (with its URL), list, revoke.
    let created: Value = serde_json::from_str(
        &cli(
            &app,
            &[
                "portal-link",
                "create",
                "--expires-in",
                "10m",
                "--read-only",
                "--event-type",
                "order.paid",
            ],
        )
        .await,
    )
    .unwrap();
    assert!(
        created["url"]
            .as_str()
            .unwrap()
            .contains("/portal/open/hrp_"),
        "{created}"
    );
    assert_eq!(created["read_only"], true);
    assert_eq!(created["event_types"], json!(["order.paid"]));
    let listed: Value = serde_json::from_str(&cli(&app, &["portal-link", "list"]).await).unwrap();
    assert_eq!(listed["data"][0]["id"], created["id"]);
    cli(
        &app,
        &["portal-link", "revoke", created["id"].as_str().unwrap()],
    )
    .await;
    let (_, list) = app.get("/v1/tenants/globex/portal-links").await;
    assert_eq!(list["data"][0]["active"], false, "{list}");

    // Every step is in the audit trail.
    let (_, trail) = app.get("/v1/tenants/acme/audit").await;
    let actions = audit_actions(&trail);
    assert!(
        actions.contains(&"portal_link.created".to_owned()),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"portal_link.revoked".to_owned()),
        "{actions:?}"
    );
    app.stop().await;
}

/// An operator makes a link; the customer opens it, adds an endpoint with two event types,
/// reveals its secret, sends a test and sees the attempt; the endpoint exists in the API
/// for that tenant only, and the link's use is in the audit trail.
#[tokio::test]
async fn portal_walkthrough() {
    let app = spawn_app().await;
    catalog(
        &app,
        &[
            ("order.paid", "An order was paid"),
            ("order.shipped", "An order left the warehouse"),
            ("user.joined", "A user joined"),
        ],
    )
    .await;
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let r = Receiver::ok().await;
    let made = link(&app, "acme", json!({"expires_in": 900})).await;

    let b = Browser::start("portal").await;
    b.goto(made["url"].as_str().unwrap()).await;
    b.css("#endpoints").await;
    assert!(
        b.url().await.ends_with("/portal/endpoints"),
        "{}",
        b.url().await
    );
    assert_eq!(b.text("#portal-name").await, "Webhooks");
    b.shot("endpoints-empty").await;

    // The catalog, with descriptions, to choose from.
    let types = b.text("#endpoint-types").await;
    assert!(
        types.contains("order.paid") && types.contains("An order left the warehouse"),
        "{types}"
    );
    b.fill("#endpoint-url", &r.url).await;
    b.fill("#endpoint-description", "Orders to the ERP").await;
    b.click("input[name=event_types][value='order.paid']").await;
    b.click("input[name=event_types][value='order.shipped']")
        .await;
    b.click("#create-endpoint-submit").await;
    b.css("#endpoint-health").await;
    let ep_id = b.url().await.rsplit('/').next().unwrap().to_owned();
    assert!(ep_id.starts_with("ep_"), "{ep_id}");
    b.shot("endpoint").await;

    b.click("#reveal-secret").await;
    let secret = b.text("#portal-secret").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let snippets = b
        .client
        .find(Locator::Css("#verify-snippets"))
        .await
        .unwrap();
    snippets.click().await.unwrap();
    assert!(b.text("#snippet-python").await.contains("standardwebhooks"));
    assert!(b.text("#snippet-node").await.contains("standardwebhooks"));
    assert!(b.text("#snippet-go").await.contains("standard-webhooks"));
    b.shot("secret").await;

    b.css("#test-type")
        .await
        .select_by_value("order.shipped")
        .await
        .unwrap();
    b.click("#send-test").await;
    assert_eq!(b.text("#test-status").await, "200");
    assert!(b.text("#test-result").await.contains("order.shipped"));
    b.shot("test").await;
    // The receiver got it, signed with the secret the portal showed.
    let got = r.wait_for(1, Duration::from_secs(10)).await;
    let body = got[0].json();
    assert_eq!(body["type"], "order.shipped");
    let mut headers = http::HeaderMap::new();
    for (k, v) in got[0].headers.iter() {
        headers.insert(
            http::HeaderName::from_bytes(k.as_str().as_bytes()).unwrap(),
            http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&got[0].body, &headers)
        .expect("the delivery verifies with the revealed secret");

    // The attempt, from the delivery's page.
    b.click("#test-delivery").await;
    let attempts = b.text("#attempts").await;
    assert!(
        attempts.contains("200") && attempts.contains("success"),
        "{attempts}"
    );
    b.shot("delivery").await;
    // Retry it: a second attempt reaches the receiver.
    let delivery_url = b.url().await;
    b.click("#retry").await;
    b.css("#retried").await;
    r.wait_for(2, Duration::from_secs(10)).await;
    let delivery_id = delivery_url.rsplit('/').next().unwrap().to_owned();
    let path = format!("/v1/tenants/acme/deliveries/{delivery_id}");
    let done = eventually(Duration::from_secs(10), || async {
        let (_, d) = app.get(&path).await;
        (d["status"] == "delivered" && d["attempts"].as_array().map(Vec::len) == Some(2))
            .then_some(())
    })
    .await;
    assert!(done.is_some(), "the retried delivery was not delivered");

    // The list, filtered by status and by a time window.
    b.click("header nav a[href='/portal/deliveries']").await;
    b.css("#deliveries").await;
    for (query, listed) in [
        ("?status=delivered", true),
        ("?status=failed", false),
        ("?since=2000-01-01T00:00&until=2000-01-02T00:00", false),
        ("?since=2000-01-01T00:00", true),
    ] {
        b.goto(&app.url(&format!("/portal/deliveries{query}")))
            .await;
        let list = b.text("#deliveries").await;
        assert_eq!(list.contains(&delivery_id), listed, "{query}: {list}");
    }
    b.shot("deliveries").await;

    // Replay the endpoint's delivered deliveries of a time window: a third attempt.
    b.goto(&app.url(&format!("/portal/endpoints/{ep_id}")))
        .await;
    b.css("#replay-form select[name=status]")
        .await
        .select_by_value("delivered")
        .await
        .unwrap();
    b.click("#replay").await;
    assert!(b
        .text("#replayed")
        .await
        .starts_with("1 deliveries replayed"));
    r.wait_for(3, Duration::from_secs(10)).await;

    // Disable and enable again.
    b.goto(&app.url(&format!("/portal/endpoints/{ep_id}")))
        .await;
    b.click("#disable").await;
    b.css("#enable").await;
    assert!(b.text("#endpoint-enabled").await.contains("disabled"));
    b.click("#enable").await;
    b.css("#disable").await;
    assert!(b.text("#endpoint-enabled").await.contains("enabled"));

    // In the API, for this tenant, with the two types.
    let (s, ep) = app
        .get(&format!("/v1/tenants/acme/endpoints/{ep_id}"))
        .await;
    assert_eq!(s, StatusCode::OK, "{ep}");
    assert_eq!(ep["event_types"], json!(["order.paid", "order.shipped"]));
    assert_eq!(ep["description"], "Orders to the ERP");
    assert_eq!(ep["secret"], secret);
    let (s, _) = app
        .get(&format!("/v1/tenants/default/endpoints/{ep_id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The link's use and the customer's changes are in the audit trail, by the link.
    let (_, trail) = app.get("/v1/tenants/acme/audit").await;
    let actions = audit_actions(&trail);
    assert!(
        actions.contains(&"portal_link.opened".to_owned()),
        "{actions:?}"
    );
    let created = trail["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "endpoint.created")
        .unwrap();
    assert_eq!(
        created["actor"],
        format!("portal:{}", made["id"].as_str().unwrap())
    );

    // Bad input in the form: a clear error, nothing made.
    b.goto(&app.url("/portal/endpoints")).await;
    b.fill("#endpoint-url", "http://10.1.2.3/hook").await;
    b.click("#create-endpoint-submit").await;
    wait_text(&b, "#error", "--allow-network").await;
    b.fill("#endpoint-url", "kafka://127.0.0.1:9092/topic")
        .await;
    b.click("#create-endpoint-submit").await;
    wait_text(&b, "#error", "https://").await;
    let (_, list) = app.get("/v1/tenants/acme/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // Deleted from the portal.
    b.goto(&app.url(&format!("/portal/endpoints/{ep_id}")))
        .await;
    b.click("#delete-endpoint").await;
    b.css("#endpoints").await;
    let (s, _) = app
        .get(&format!("/v1/tenants/acme/endpoints/{ep_id}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    b.close().await;
    app.stop().await;
}

/// Another tenant's ids are not found, admin pages are out of reach, a read-only link
/// changes nothing, a link limited to event types offers only those, and expired and
/// revoked links (and their sessions) are refused with a clear page.
#[tokio::test]
async fn portal_keeps_to_its_tenant_and_its_link() {
    let app = spawn_app().await;
    catalog(
        &app,
        &[("order.paid", "paid"), ("order.shipped", "shipped")],
    )
    .await;
    let (acme_ep, acme_dlv) = tenant_with_data(&app, "acme").await;
    let (globex_ep, globex_dlv) = tenant_with_data(&app, "globex").await;
    let (_, globex_event) = app.get("/v1/tenants/globex/events").await;
    let globex_event = globex_event["data"][0]["id"].as_str().unwrap().to_owned();

    let b = Browser::start("portal-scope").await;
    let made = link(&app, "acme", json!({"event_types": ["order.paid"]})).await;
    b.goto(made["url"].as_str().unwrap()).await;
    let list = b.text("#endpoints").await;
    assert!(
        list.contains("acme-hook") && !list.contains("globex"),
        "{list}"
    );
    // Only the link's event types are offered.
    let offered = b.text("#endpoint-types").await;
    assert!(
        offered.contains("order.paid") && !offered.contains("order.shipped"),
        "{offered}"
    );
    b.goto(&app.url(&format!("/portal/endpoints/{acme_ep}")))
        .await;
    b.css("#endpoint-health").await;
    b.goto(&app.url(&format!("/portal/deliveries/{acme_dlv}")))
        .await;
    b.css("#attempts").await;

    for path in [
        format!("/portal/endpoints/{globex_ep}"),
        format!("/portal/deliveries/{globex_dlv}"),
        format!("/portal/deliveries/{globex_event}"),
    ] {
        b.goto(&app.url(&path)).await;
        let body = b.body().await;
        assert!(body.contains("404"), "{path}: {body}");
        assert!(!body.contains("globex-hook"), "{path}: {body}");
    }
    b.goto(&app.url(&format!("/portal/deliveries?endpoint={globex_ep}")))
        .await;
    assert!(b.text("#deliveries").await.contains("No deliveries"));
    b.shot("other-tenant").await;
    // The dashboard and the API do not take the portal's session.
    for path in ["/ui/t/acme", "/ui/t/acme/endpoints", "/ui/t/default/audit"] {
        b.goto(&app.url(path)).await;
        b.css("#token").await;
        assert!(
            b.url().await.ends_with("/ui/login"),
            "{path}: {}",
            b.url().await
        );
    }
    b.goto(&app.url("/v1/tenants/acme/endpoints")).await;
    assert!(
        b.body().await.contains("unauthorized"),
        "{}",
        b.body().await
    );

    // A form naming a type outside the link's list, or with a forged CSRF token, or from
    // another site, changes nothing.
    let token = made["token"].as_str().unwrap();
    let cookie = format!("hr_portal=f.{token}");
    let page = app
        .http
        .get(app.url("/portal/endpoints"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let post = |form: Vec<(&'static str, String)>, origin: String| {
        app.http
            .post(app.url("/portal/endpoints"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&form)
            .send()
    };
    let url = "http://127.0.0.1:9/new".to_owned();
    let cases = [
        (
            vec![
                ("csrf", csrf.clone()),
                ("url", url.clone()),
                ("event_types", "order.shipped".into()),
            ],
            app.base.clone(),
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("csrf", "forged".into()),
                ("url", url.clone()),
                ("event_types", "order.paid".into()),
            ],
            app.base.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            vec![
                ("csrf", csrf.clone()),
                ("url", url.clone()),
                ("event_types", "order.paid".into()),
            ],
            "http://evil.example".into(),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (form, origin, want) in cases {
        let resp = post(form.clone(), origin).await.unwrap();
        assert_eq!(resp.status(), want, "{form:?}");
    }
    let (_, list) = app.get("/v1/tenants/acme/endpoints").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    // Read-only: no forms, and a POST is refused.
    let ro = link(&app, "acme", json!({"read_only": true})).await;
    b.goto(ro["url"].as_str().unwrap()).await;
    b.css("#endpoints").await;
    assert_eq!(b.count("#create-endpoint").await, 0);
    assert!(b.text("#read-only").await.contains("read-only"));
    b.goto(&app.url(&format!("/portal/endpoints/{acme_ep}")))
        .await;
    b.css("#endpoint-health").await;
    assert_eq!(b.count("form").await, 0, "a read-only page has no form");
    b.goto(&app.url(&format!("/portal/deliveries/{acme_dlv}")))
        .await;
    b.css("#attempts").await;
    assert_eq!(b.count("#retry").await, 0);
    b.shot("read-only").await;
    let ro_cookie = format!("hr_portal=f.{}", ro["token"].as_str().unwrap());
    let ro_page = app
        .http
        .get(app.url("/portal/endpoints"))
        .header("cookie", &ro_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!ro_page.contains("name=\"csrf\""));
    // Whatever the form holds, nothing changes.
    for path in [
        format!("/portal/endpoints/{acme_ep}/enabled"),
        format!("/portal/endpoints/{acme_ep}/delete"),
        format!("/portal/endpoints/{acme_ep}/secret"),
        format!("/portal/deliveries/{acme_dlv}/retry"),
    ] {
        let resp = app
            .http
            .post(app.url(&path))
            .header("cookie", &ro_cookie)
            .form(&[("csrf", "x"), ("enabled", "false")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(resp.text().await.unwrap().contains("read-only"), "{path}");
    }
    let (_, ep) = app
        .get(&format!("/v1/tenants/acme/endpoints/{acme_ep}"))
        .await;
    assert_eq!(ep["enabled"], true, "{ep}");

    // Revoked: the open session ends, and the link no longer opens.
    let (s, _) = send(app.req(
        Method::DELETE,
        &format!(
            "/v1/tenants/acme/portal-links/{}",
            ro["id"].as_str().unwrap()
        ),
    ))
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    b.goto(&app.url("/portal/endpoints")).await;
    assert!(b.text("#portal-refused").await.contains("revoked"));
    b.goto(ro["url"].as_str().unwrap()).await;
    assert!(b.text("#portal-refused").await.contains("revoked"));
    b.shot("revoked").await;

    // Expired (a one-second link, once the API lists it inactive).
    let short = link(&app, "acme", json!({"expires_in": 1})).await;
    let expired = eventually(Duration::from_secs(10), || async {
        let (_, list) = app.get("/v1/tenants/acme/portal-links").await;
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == short["id"] && l["active"] == false)
            .then_some(())
    })
    .await;
    assert!(expired.is_some(), "the link never expired");
    b.goto(short["url"].as_str().unwrap()).await;
    assert!(b.text("#portal-refused").await.contains("expired"));
    b.shot("expired").await;
    // Neither is a made-up link, nor no session at all.
    b.goto(&app.url("/portal/open/hrp_made-up")).await;
    assert!(b.text("#portal-refused").await.contains("not valid"));
    let (s, _) = send(app.http.get(app.url("/portal/endpoints"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    b.close().await;
    app.stop().await;
}

/// Serves, on `listener`, a page that frames `src` and says when the frame has loaded;
/// its address on `localhost`, another site than hookrelay's `127.0.0.1`, so the portal is
/// third-party there.
async fn framing_page(listener: tokio::net::TcpListener, src: &str) -> String {
    let port = listener.local_addr().unwrap().port();
    let html = format!(
        "<!doctype html><title>host</title>\
         <iframe id=\"portal-frame\" src=\"{src}\" width=\"1000\" height=\"700\" \
          onload=\"document.title='loaded'\"></iframe>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://localhost:{port}/")
}

/// The portal inside an iframe of an allowed origin (its cookie works there, embedded
/// mode has no header of its own), and refused inside another's.
#[tokio::test]
async fn portal_in_an_iframe_only_from_allowed_origins() {
    // The allowed host page must exist before the server starts, to name its origin.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let allowed_port = listener.local_addr().unwrap().port();
    drop(listener);
    let app = spawn_app_on(Backend::Sqlite, |c| {
        c.portal.frame_ancestors = vec![format!("http://localhost:{allowed_port}")];
        c.portal.name = "Acme Webhooks".into();
        c.portal.accent = "#aa3300".into();
    })
    .await;
    let (acme_ep, _) = tenant_with_data(&app, "acme").await;
    let made = link(&app, "acme", json!({})).await;
    let src = format!("{}?embed=1", made["url"].as_str().unwrap());

    // The allowed page, on the port its origin names; another on any port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", allowed_port))
        .await
        .unwrap();
    let allowed = framing_page(listener, &src).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = framing_page(listener, &src).await;

    let b = Browser::start("portal-iframe").await;
    let loaded = || async {
        eventually(Duration::from_secs(10), || async {
            (b.client.title().await.ok()? == "loaded").then_some(())
        })
        .await
        .expect("the frame loaded")
    };
    b.goto(&allowed).await;
    loaded().await;
    b.client.enter_frame(0).await.unwrap();
    let list = b.text("#endpoints").await;
    assert!(list.contains("acme-hook"), "{list}");
    // Embedded: the portal's own header name is hidden; the theme is the operator's.
    assert!(!b.css("#portal-name").await.is_displayed().await.unwrap());
    // A second page in the frame still has the session (the cookie works in the iframe).
    b.click(&format!("a[href='/portal/endpoints/{acme_ep}']"))
        .await;
    b.css("#endpoint-health").await;
    b.client.enter_parent_frame().await.unwrap();
    b.shot("allowed").await;

    b.goto(&other).await;
    loaded().await;
    b.client.enter_frame(0).await.unwrap();
    assert_eq!(
        b.count("#portal").await,
        0,
        "the portal showed in a foreign frame"
    );
    b.client.enter_parent_frame().await.unwrap();
    b.shot("refused").await;

    // Full page: the operator's name shows.
    b.goto(made["url"].as_str().unwrap()).await;
    assert_eq!(b.text("#portal-name").await, "Acme Webhooks");
    let css = app
        .http
        .get(app.url("/portal/theme.css"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains("#aa3300"), "{css}");
    b.close().await;
    app.stop().await;
}

/// A portal session over plain HTTP, as a browser would hold it: its cookie and the CSRF
/// token of its forms.
struct Session<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

impl<'a> Session<'a> {
    async fn open(app: &'a TestApp, link: &Value) -> Session<'a> {
        let cookie = format!("hr_portal=f.{}", link["token"].as_str().unwrap());
        let mut s = Session {
            app,
            cookie,
            csrf: String::new(),
        };
        let (status, page) = s.get("/portal/endpoints").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        s.csrf = page
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_owned();
        s
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .app
            .http
            .get(self.app.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String) {
        let mut form: Vec<(&str, &str)> = vec![("csrf", &self.csrf)];
        form.extend_from_slice(fields);
        let r = self
            .app
            .http
            .post(self.app.url(path))
            .header("cookie", &self.cookie)
            .header("origin", &self.app.base)
            .form(&form)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// Broker endpoints only for a link that allows them; saving the form keeps what it cannot
/// show (wildcard types, the operator's headers) and will not move such an endpoint; a
/// limited link sees no delivery of another type.
#[tokio::test]
async fn portal_keeps_to_the_operators_settings() {
    let app = spawn_app().await;
    catalog(&app, &[("order.paid", "paid"), ("user.joined", "joined")]).await;
    let (s, _) = app
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let stream = format!(
        "redis://127.0.0.1:6379/0?stream=hr-portal-{}",
        ulid::Ulid::new()
    );
    let (s, broker) = app
        .post("/v1/tenants/acme/endpoints", json!({"url": stream}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{broker}");
    let broker = broker["id"].as_str().unwrap().to_owned();
    let (s, http) = app
        .post(
            "/v1/tenants/acme/endpoints",
            json!({"url": "http://127.0.0.1:9/orders", "event_types": ["order.*"],
                   "headers": {"X-Api-Key": "operator-secret"}, "enabled": false}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{http}");
    let http = http["id"].as_str().unwrap().to_owned();

    // Without brokers: the broker endpoint is not there at all.
    let plain = Session::open(&app, &link(&app, "acme", json!({})).await).await;
    let (_, list) = plain.get("/portal/endpoints").await;
    assert!(list.contains(&http) && !list.contains(&broker), "{list}");
    for path in [format!("/portal/endpoints/{broker}")] {
        assert_eq!(plain.get(&path).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    for action in [
        "test",
        "secret",
        "rotate-secret",
        "enabled",
        "delete",
        "replay",
    ] {
        let path = format!("/portal/endpoints/{broker}/{action}");
        let (s, _) = plain.post(&path, &[("enabled", "false")]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, page) = plain
        .post("/portal/endpoints", &[("url", stream.as_str())])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");

    // Saving the form as shown (no catalog type ticked) keeps `order.*` and the headers.
    let path = format!("/portal/endpoints/{http}");
    let (s, page) = plain
        .post(
            &path,
            &[("url", "http://127.0.0.1:9/orders"), ("description", "ERP")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let (_, ep) = app.get(&format!("/v1/tenants/acme/endpoints/{http}")).await;
    assert_eq!(ep["event_types"], json!(["order.*"]), "{ep}");
    assert_eq!(ep["description"], "ERP");
    assert_eq!(ep["headers"]["X-Api-Key"], "operator-secret");
    // Moving it elsewhere would take the operator's header along: refused.
    let (s, page) = plain
        .post(&path, &[("url", "http://127.0.0.1:10/mine")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(page.contains("ask them to change its URL"), "{page}");
    let (_, ep) = app.get(&format!("/v1/tenants/acme/endpoints/{http}")).await;
    assert_eq!(ep["url"], "http://127.0.0.1:9/orders");

    // With brokers allowed, the customer may add one.
    let brokers = Session::open(
        &app,
        &link(&app, "acme", json!({"allow_brokers": true})).await,
    )
    .await;
    let (_, list) = brokers.get("/portal/endpoints").await;
    assert!(list.contains(&broker), "{list}");
    let other_stream = format!(
        "redis://127.0.0.1:6379/0?stream=hr-portal-{}",
        ulid::Ulid::new()
    );
    let (s, page) = brokers
        .post("/portal/endpoints", &[("url", other_stream.as_str())])
        .await;
    // (Redirected to the new endpoint's page.)
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("endpoint-health") && page.contains(&other_stream));
    let (_, all) = app.get("/v1/tenants/acme/endpoints").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3, "{all}");

    // A link limited to order.paid (brokers allowed) sees no delivery of user.joined.
    let (s, ev) = app
        .post(
            "/v1/tenants/acme/events",
            json!({"type": "user.joined", "data": {"id": "u1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    let dlv = ev["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let limited = Session::open(
        &app,
        &link(
            &app,
            "acme",
            json!({"event_types": ["order.paid"], "allow_brokers": true}),
        )
        .await,
    )
    .await;
    assert_eq!(
        limited.get(&format!("/portal/deliveries/{dlv}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = limited.get("/portal/deliveries").await;
    assert!(!list.contains(&dlv), "{list}");
    let (s, _) = limited
        .post(&format!("/portal/deliveries/{dlv}/retry"), &[])
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // It goes to a broker endpoint: a link with brokers and every type sees it, one
    // without brokers does not.
    let dlv_path = format!("/portal/deliveries/{dlv}");
    assert_eq!(brokers.get(&dlv_path).await.0, StatusCode::OK);
    assert_eq!(plain.get(&dlv_path).await.0, StatusCode::NOT_FOUND);
    app.stop().await;
}
