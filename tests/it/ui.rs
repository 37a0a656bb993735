//! The dashboard in a real headless Chromium (through chromedriver), against the real
//! server. Screenshots of every page go to `target/ui-screenshots/<test>-<page>.png`.
//!
//! chromium and chromedriver must be installed (Debian packages `chromium` and
//! `chromium-driver`; `scripts/services` installs them): without them these tests fail.

use std::{path::PathBuf, time::Duration};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{eventually, send, spawn_app, TestApp, ADMIN};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromedriver() -> PathBuf {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "chromedriver not found: install the Debian packages chromium and \
                 chromium-driver (scripts/services installs them when missing)"
            )
        })
}

/// A headless Chromium driven over WebDriver; chromedriver is killed on drop.
pub(crate) struct Browser {
    pub(crate) client: Client,
    test: &'static str,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start(test: &'static str) -> Self {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} not found: install the Debian packages chromium and chromium-driver \
             (scripts/services installs them when missing)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let up = eventually(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(up.is_some(), "chromedriver did not listen on port {port}");
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session starts");
        Self {
            client,
            test,
            _driver: driver,
            _profile: profile,
        }
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub(crate) async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        match self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(selector))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no {selector} on {}: {e}", self.url().await),
        }
    }

    pub(crate) async fn count(&self, selector: &str) -> usize {
        self.client
            .find_all(Locator::Css(selector))
            .await
            .unwrap()
            .len()
    }

    /// Waits (up to 10 s) until `n` elements match: the page may still be loading.
    pub(crate) async fn wait_count(&self, selector: &str, n: usize) {
        let found = eventually(Duration::from_secs(10), || async {
            (self.count(selector).await == n).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "{selector}: {} elements, not {n}, on {}",
            self.count(selector).await,
            self.url().await
        );
    }

    pub(crate) async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    pub(crate) async fn fill(&self, selector: &str, text: &str) {
        let e = self.css(selector).await;
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub(crate) async fn text(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    pub(crate) async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    pub(crate) async fn body(&self) -> String {
        self.text("body").await
    }

    /// Saves a screenshot as `target/ui-screenshots/<test>-<page>.png`.
    pub(crate) async fn shot(&self, page: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
            .join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{}-{page}.png", self.test)), png).unwrap();
    }

    async fn login(&self, app: &TestApp, token: &str) {
        self.goto(&app.url("/ui/login")).await;
        self.fill("#token", token).await;
        self.click("#login").await;
        // Only pages behind the login have the logout button (the login page has a heading
        // too, so waiting for one would race the navigation).
        self.css("#logout").await;
    }

    pub(crate) async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Log in, see the overview, create an inbox and an endpoint pointing at it, send a test
/// event, find the delivery, retry it and see the second attempt; every page screenshotted.
#[tokio::test]
async fn dashboard_walkthrough() {
    let app = spawn_app().await;
    let b = Browser::start("walkthrough").await;

    // Not logged in: every page leads to the login form.
    b.goto(&app.url("/ui/t/default/endpoints")).await;
    b.css("#token").await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.shot("login").await;

    b.fill("#token", "not-a-token").await;
    b.click("#login").await;
    assert!(b.text("p.flash.bad").await.contains("Invalid token"));

    b.login(&app, ADMIN).await;
    assert!(
        b.url().await.ends_with("/ui/t/default"),
        "{}",
        b.url().await
    );
    assert!(b.text("#health").await.contains("Healthy"));
    b.css("svg.chart").await;
    // The charts' axis labels are drawn whole, inside the chart.
    let cut = b
        .client
        .execute(
            "return [...document.querySelectorAll('svg.chart text')].filter(t => \
               !t.ownerSVGElement.viewBox.baseVal || \
               t.getBBox().y + t.getBBox().height > t.ownerSVGElement.viewBox.baseVal.height + 0.01 \
             ).map(t => t.textContent)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(cut, serde_json::json!([]), "chart labels cut off");
    b.shot("overview").await;

    // An inbox to deliver to.
    b.click("header nav a[href$='/inboxes']").await;
    b.click("#create-inbox-submit").await;
    let inbox_url = b.text("#inbox-url").await;
    assert!(inbox_url.contains("/inbox/"), "{inbox_url}");
    let inbox_page = b.url().await;
    let secret = b
        .client
        .execute(
            "return document.getElementById('inbox-secret').textContent",
            vec![],
        )
        .await
        .unwrap();
    let secret = secret.as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    // An endpoint pointing at it.
    b.click("header nav a[href$='/endpoints']").await;
    b.shot("endpoints-empty").await;
    b.fill("#endpoint-url", &inbox_url).await;
    b.fill("#endpoint-secret-input", &secret).await;
    b.click("#create-endpoint-submit").await;
    let endpoint_id = b.text("#endpoint-id").await;
    assert!(endpoint_id.starts_with("ep_"), "{endpoint_id}");
    b.shot("endpoint").await;

    // Send a test event: the result is shown.
    b.click("#send-test").await;
    let result = b.text("#test-result").await;
    assert!(result.contains("delivered"), "{result}");
    assert_eq!(b.text("#test-status").await, "200");
    b.shot("endpoint-tested").await;

    // Its page shows the delivery format and statistics that count the test attempt.
    let endpoint_page = app.url(&format!("/ui/t/default/endpoints/{endpoint_id}"));
    let counted = eventually(Duration::from_secs(20), || async {
        b.goto(&endpoint_page).await;
        let stats = b.text("#endpoint-stats").await;
        stats.contains("100.0 %").then_some(stats)
    })
    .await;
    assert!(counted.is_some(), "no statistics: {}", b.body().await);
    assert_eq!(b.text("#endpoint-format").await, "standard-webhooks");
    b.shot("endpoint-stats").await;

    // The endpoint list shows it with its success rate.
    b.click("header nav a[href$='/endpoints']").await;
    let row = b.text("#endpoints tbody").await;
    assert!(row.contains(&inbox_url) && row.contains("100 %"), "{row}");
    b.shot("endpoints").await;

    // Find the delivery in the log.
    b.click("header nav a[href$='/deliveries']").await;
    b.fill("input[name=endpoint]", &endpoint_id).await;
    b.click("form.filters button").await;
    b.wait_count("#deliveries a.delivery", 1).await;
    b.shot("deliveries").await;
    // The time window filters too: nothing before 2000, the delivery since then.
    let log = app.url(&format!("/ui/t/default/deliveries?endpoint={endpoint_id}"));
    b.goto(&format!("{log}&until=2000-01-01T00:00")).await;
    assert!(b.text("#deliveries").await.contains("No deliveries."));
    b.goto(&format!("{log}&since=2000-01-01T00:00")).await;
    b.wait_count("#deliveries a.delivery", 1).await;
    b.click("#deliveries a.delivery").await;
    b.css("#delivery-id").await;
    b.wait_count("tr.attempt", 1).await;
    assert!(b.text("#delivery-status").await.contains("delivered"));
    b.shot("delivery").await;

    // Replay it; the second attempt shows up.
    b.click("#retry").await;
    let delivery_page = b.url().await;
    let seen = eventually(Duration::from_secs(20), || async {
        b.goto(&delivery_page).await;
        b.css("#attempts").await;
        let n = b.count("tr.attempt").await;
        let delivered = b.text("#delivery-status").await.contains("delivered");
        (n == 2 && delivered).then_some(())
    })
    .await;
    assert!(seen.is_some(), "no second attempt: {}", b.body().await);
    b.shot("delivery-replayed").await;

    // The event log and the inbox show what happened.
    b.click("header nav a[href$='/events']").await;
    assert!(b.text("#events").await.contains("webhook.test"));
    b.shot("events").await;
    // At 1280 px, the event page's tables stay inside their cards.
    b.click("#events tbody a").await;
    b.css("#deliveries").await;
    let overflowing = b
        .client
        .execute(
            "return [...document.querySelectorAll('.card table')].filter(t => \
               t.getBoundingClientRect().right > t.closest('.card').getBoundingClientRect().right + 0.5 \
             ).map(t => t.id || t.className)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        overflowing,
        serde_json::json!([]),
        "tables wider than their card"
    );
    b.goto(&inbox_page).await;
    b.wait_count("article.message", 2).await;
    assert_eq!(b.count("article.message .badge.valid").await, 2);
    b.shot("inbox").await;

    // Logging out ends the session.
    b.click("#logout").await;
    b.css("#token").await;
    b.goto(&app.url("/ui/t/default")).await;
    b.css("#token").await;

    b.close().await;
    app.stop().await;
}

/// A tenant-token login sees its own tenant only: another tenant's pages and ids are 404.
#[tokio::test]
async fn tenant_login_sees_only_its_tenant() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for tenant in ["acme", "globex"] {
        let (s, _) = app
            .post("/v1/tenants", json!({"id": tenant, "name": tenant}))
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, ep) = app
            .post(
                &format!("/v1/tenants/{tenant}/endpoints"),
                json!({"url": format!("http://127.0.0.1:9/{tenant}-hook"), "enabled": false}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{ep}");
        let (s, ev) = app
            .post(
                &format!("/v1/tenants/{tenant}/events"),
                json!({"type": format!("{tenant}.happened"), "data": {"who": tenant}}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
        ids.push((
            ep["id"].as_str().unwrap().to_owned(),
            ev["id"].as_str().unwrap().to_owned(),
        ));
    }
    let (s, token) = app.post("/v1/tenants/acme/tokens", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{token}");
    let token = token["token"].as_str().unwrap().to_owned();
    let (globex_ep, globex_ev) = ids[1].clone();

    let b = Browser::start("tenant").await;
    b.login(&app, &token).await;
    assert!(b.url().await.ends_with("/ui/t/acme"), "{}", b.url().await);
    // No tenant selector, no service-wide numbers.
    assert_eq!(b.count("#tenant-select").await, 0);
    assert_eq!(b.count("#health").await, 0);
    b.shot("overview").await;

    b.click("header nav a[href$='/endpoints']").await;
    let list = b.text("#endpoints").await;
    assert!(list.contains("acme-hook"), "{list}");
    assert!(!list.contains("globex"), "{list}");
    b.shot("endpoints").await;
    b.click("header nav a[href$='/events']").await;
    let events = b.text("#events").await;
    assert!(events.contains("acme.happened") && !events.contains("globex"));
    b.shot("events").await;

    for path in [
        "/ui/t/globex".to_owned(),
        "/ui/t/globex/endpoints".to_owned(),
        "/ui/t/default/events".to_owned(),
        format!("/ui/t/globex/endpoints/{globex_ep}"),
        format!("/ui/t/acme/endpoints/{globex_ep}"),
        format!("/ui/t/acme/events/{globex_ev}"),
        format!("/ui/t/acme/deliveries?endpoint={globex_ep}"),
    ] {
        b.goto(&app.url(&path)).await;
        let body = b.body().await;
        if path.contains("deliveries") {
            assert!(body.contains("No deliveries"), "{path}: {body}");
        } else {
            assert!(body.contains("404"), "{path}: {body}");
        }
        assert!(!body.contains("globex-hook"), "{path}: {body}");
    }
    b.goto(&app.url(&format!("/ui/t/acme/endpoints/{globex_ep}")))
        .await;
    b.shot("other-tenant-404").await;

    b.close().await;
    app.stop().await;
}

/// A payload with HTML and JavaScript in it is shown as text; no script runs.
#[tokio::test]
async fn html_in_payloads_is_shown_as_text() {
    let app = spawn_app().await;
    let evil = "<script>window.pwned=1;document.title='pwned'</script>\
                <img src=x onerror=\"window.pwned=2\"><b>bold</b>";
    let ev = app.event("comment.created", json!({"comment": evil})).await;
    let id = ev["id"].as_str().unwrap();

    let b = Browser::start("xss").await;
    b.login(&app, ADMIN).await;
    b.goto(&app.url(&format!("/ui/t/default/events/{id}")))
        .await;
    let payload = b.text("#payload").await;
    assert!(payload.contains("<script>window.pwned=1;"), "{payload}");
    assert!(payload.contains("<b>bold</b>"), "{payload}");
    assert_eq!(
        b.count("#payload script, #payload img, #payload b").await,
        0
    );
    let pwned = b
        .client
        .execute("return typeof window.pwned", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!("undefined"), "a script in the payload ran");
    let title = b.client.title().await.unwrap();
    assert!(!title.contains("pwned"), "{title}");
    b.shot("event").await;

    // A filter value is echoed back as text too.
    b.goto(&app.url("/ui/t/default/events?type=%3Cscript%3Ewindow.pwned%3D3%3C%2Fscript%3E"))
        .await;
    b.css("#events").await;
    let pwned = b
        .client
        .execute("return typeof window.pwned", vec![])
        .await
        .unwrap();
    assert_eq!(pwned, json!("undefined"));
    b.close().await;
    app.stop().await;
}

/// Forms refuse a POST without the session's CSRF token, or from another origin; the
/// session cookie is HttpOnly and SameSite=Strict.
#[tokio::test]
async fn ui_forms_need_csrf_and_same_origin() {
    let app = spawn_app().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |resp: &reqwest::Response, name: &str| -> (String, String) {
        let header = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie"));
        let value = header
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_owned();
        (header, value)
    };
    let hidden = |html: &str| -> String {
        let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
        html[at..].split('"').next().unwrap().to_owned()
    };

    let page = http.get(app.url("/ui/login")).send().await.unwrap();
    let (_, login_nonce) = cookie_of(&page, "hr_login");
    let login_csrf = hidden(&page.text().await.unwrap());
    // Without the login form's token: refused.
    let resp = http
        .post(app.url("/ui/login"))
        .header("cookie", format!("hr_login={login_nonce}"))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = http
        .post(app.url("/ui/login"))
        .header("cookie", format!("hr_login={login_nonce}"))
        .form(&[("token", ADMIN), ("csrf", &login_csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (header, session) = cookie_of(&resp, "hr_session");
    assert!(header.contains("HttpOnly"), "{header}");
    assert!(header.contains("SameSite=Strict"), "{header}");
    assert!(header.contains("Path=/ui"), "{header}");
    let cookie = format!("hr_session={session}");

    let page = http
        .get(app.url("/ui/t/default/inboxes"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let csrf = hidden(&page.text().await.unwrap());

    let post = |form: Vec<(&'static str, String)>, origin: Option<&'static str>| {
        let mut req = http
            .post(app.url("/ui/t/default/inboxes"))
            .header("cookie", &cookie)
            .form(&form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    let no_token = post(vec![("description", "x".into())], None).await.unwrap();
    assert_eq!(no_token.status(), StatusCode::FORBIDDEN);
    let wrong = post(vec![("csrf", "AAAA".into())], None).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let foreign = post(vec![("csrf", csrf.clone())], Some("http://evil.example"))
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let ok = post(vec![("csrf", csrf.clone())], None).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);

    // A forged cookie is no session.
    let forged = http
        .get(app.url("/ui/t/default"))
        .header("cookie", format!("hr_session={}x", session))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);
    assert_eq!(forged.headers()["location"], "/ui/login");
    // The stylesheet is cached for long.
    let css = http
        .get(app.url("/ui/assets/app.css"))
        .send()
        .await
        .unwrap();
    assert!(css.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
    app.stop().await;
}

/// An admin adds a Redis Streams source from the dashboard, sees its consumer running and a
/// rejected entry with its reason, and deletes it.
#[tokio::test]
async fn sources_page_adds_watches_and_deletes_a_source() {
    let app = spawn_app().await;
    let stream = format!("hr-ui-{}", ulid::Ulid::new().to_string().to_lowercase());
    let b = Browser::start("sources").await;
    b.login(&app, ADMIN).await;
    b.click("header nav a[href$='/sources']").await;
    b.fill(
        "#create-source input[name=url]",
        &format!("redis://127.0.0.1:6379/0?stream={stream}"),
    )
    .await;
    b.click("#create-source-submit").await;
    // The source's own page, once the browser has followed the redirect.
    b.css("#source").await;
    let page = b.url().await;
    assert!(page.contains("/sources/src_"), "{page}");
    let running = eventually(Duration::from_secs(20), || async {
        b.goto(&page).await;
        b.text("#source").await.contains("running").then_some(())
    })
    .await;
    assert!(running.is_some(), "{}", b.text("#source").await);

    let mut conn = redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: String = redis::AsyncCommands::xadd(&mut conn, &stream, "*", &[("oops", "1")])
        .await
        .unwrap();
    let rejected = eventually(Duration::from_secs(20), || async {
        b.goto(&page).await;
        let t = b.text("#rejections").await;
        t.contains("no field \"type\"").then_some(t)
    })
    .await;
    assert!(rejected.is_some(), "{}", b.text("#rejections").await);
    b.shot("source").await;

    b.click("#delete-source button").await;
    assert!(b.text("#sources").await.contains("No sources."));
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    b.close().await;
    app.stop().await;
}

/// The audit page lists the tenant's changes with their actor, filtered by action.
#[tokio::test]
async fn audit_page_lists_changes_by_action() {
    let app = spawn_app().await;
    let ep = app
        .endpoint(json!({ "url": "http://127.0.0.1:9/hook" }))
        .await;
    let id = ep["id"].as_str().unwrap();
    let (s, _) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/default/endpoints/{id}"),
        )
        .json(&json!({ "description": "renamed" })),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let b = Browser::start("audit").await;
    b.login(&app, ADMIN).await;
    b.click("header nav a[href$='/audit']").await;
    let table = b.text("#audit").await;
    assert!(table.contains("endpoint.created"), "{table}");
    assert!(table.contains("endpoint.updated"), "{table}");
    assert!(table.contains("renamed"), "{table}");
    b.goto(&app.url("/ui/t/default/audit?action=endpoint.created"))
        .await;
    let table = b.text("#audit").await;
    assert!(
        table.contains("endpoint.created") && !table.contains("endpoint.updated"),
        "{table}"
    );
    b.shot("audit").await;
    b.close().await;
    app.stop().await;
}

/// The endpoint form takes a per-minute rate limit, and the pages show it as written.
#[tokio::test]
async fn endpoint_form_takes_a_per_minute_rate_limit() {
    let app = spawn_app().await;
    let b = Browser::start("rate").await;
    b.login(&app, ADMIN).await;
    b.click("header nav a[href$='/endpoints']").await;
    b.fill("#endpoint-url", "http://127.0.0.1:9/hook").await;
    b.fill("#endpoint-rate", "30/min").await;
    b.click("#create-endpoint-submit").await;
    let id = b.text("#endpoint-id").await;
    assert!(
        b.body().await.contains("30/min"),
        "the endpoint page shows the limit"
    );
    let (_, ep) = app
        .get(&format!("/v1/tenants/default/endpoints/{id}"))
        .await;
    assert_eq!(ep["rate_limit"], 30);
    assert_eq!(ep["rate_limit_period"], "minute");
    b.close().await;
    app.stop().await;
}
