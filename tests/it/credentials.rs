//! Credentials: admin tokens, sealing at rest, what lists show, dashboard sessions.

use reqwest::StatusCode;

use crate::helpers::*;

async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.http
        .get(app.url("/v1/tenants"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

async fn a_configured_admin_token_revokes_the_generated_one(backend: Backend) {
    let app = spawn_app_on(backend, |c| c.admin_token = None).await;
    let generated = app
        .generated_admin_token
        .clone()
        .expect("generated on first start");
    assert_eq!(status_with(&app, &generated).await, StatusCode::OK);
    // Still the admin token after a plain restart, and not generated again.
    let app = app.restart().await;
    assert!(app.generated_admin_token.is_none());
    assert_eq!(status_with(&app, &generated).await, StatusCode::OK);

    // Once a token is configured, the generated one stops working.
    let app = app
        .restart_with(|c| c.admin_token = Some(ADMIN.into()))
        .await;
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&app, ADMIN).await, StatusCode::OK);
    assert!(!app.store.has_admin_token().await.unwrap());

    // Rotation: another configured token replaces it; neither older one works.
    let rotated = "rotated-admin-token-0123456789abcdefghij";
    let app = app
        .restart_with(|c| c.admin_token = Some(rotated.into()))
        .await;
    assert_eq!(status_with(&app, ADMIN).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&app, rotated).await, StatusCode::OK);

    // Unset again: a new token is generated; the revoked one stays revoked.
    let app = app.restart_with(|c| c.admin_token = None).await;
    let fresh = app.generated_admin_token.clone().expect("generated again");
    assert_ne!(fresh, generated);
    assert_eq!(status_with(&app, &fresh).await, StatusCode::OK);
    assert_eq!(
        status_with(&app, &generated).await,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
}

/// `(url, headers as JSON text)` of an endpoint and the `secret` of an inbox, as stored.
async fn stored(database_url: &str, sql: &str, id: &str) -> Vec<Option<String>> {
    use sqlx::Row;
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let row = sqlx::query(sql).bind(id).fetch_one(&pool).await.unwrap();
        pool.close().await;
        (0..row.len()).map(|i| row.get(i)).collect()
    } else {
        let pool = sqlx::PgPool::connect(&with_hookrelay_tables(database_url))
            .await
            .unwrap();
        let row = sqlx::query(&sql.replace('?', "$1"))
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (0..row.len()).map(|i| row.get(i)).collect()
    }
}

fn random_key() -> String {
    use base64::Engine;
    let mut k = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut k);
    base64::engine::general_purpose::STANDARD.encode(k)
}

async fn every_credential_is_sealed_and_lists_hide_header_values(backend: Backend) {
    use serde_json::json;
    // Written before a key is configured: plaintext, as before.
    let app = spawn_app_on(backend, |_| {}).await;
    let db = app.database_url().to_owned();
    let r = Receiver::ok().await;
    let ep = app
        .endpoint(json!({"url": r.url, "headers": {"X-Api-Key": "receiver-api-key-1"}}))
        .await;
    let ep_id = ep["id"].as_str().unwrap().to_owned();
    let broker = app
        .endpoint(json!({"url": "redis://:broker-password-1@127.0.0.1:6379/0?stream=creds"}))
        .await;
    let broker_id = broker["id"].as_str().unwrap().to_owned();
    let (s, inbox) = app.post("/v1/tenants/default/inboxes", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{inbox}");
    let inbox_id = inbox["id"].as_str().unwrap().to_owned();
    let inbox_secret = inbox["secret"].as_str().unwrap().to_owned();
    let (s, source) = app
        .post(
            "/v1/tenants/default/sources",
            json!({"url": format!(
                "redis://:source-password-1@127.0.0.1:6379/0?stream=creds-{}",
                random_key().replace(['/', '+', '='], "")
            )}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{source}");
    let source_id = source["id"].as_str().unwrap().to_owned();
    let source_sql = "SELECT url FROM sources WHERE id = ?";
    let url = stored(&db, source_sql, &source_id).await[0]
        .clone()
        .unwrap();
    assert!(url.contains("source-password-1"), "{url}");
    let endpoint_sql = if db.starts_with("sqlite:") {
        "SELECT url, headers FROM endpoints WHERE id = ?"
    } else {
        "SELECT url, headers::text FROM endpoints WHERE id = ?"
    };
    let inbox_sql = "SELECT secret FROM inboxes WHERE id = ?";
    let row = stored(&db, endpoint_sql, &ep_id).await;
    assert!(row[1].as_deref().unwrap().contains("receiver-api-key-1"));

    // A start with a key seals what was there.
    let app = app
        .restart_with(|c| c.encryption_keys = vec![random_key().into()])
        .await;
    let row = stored(&db, endpoint_sql, &ep_id).await;
    let headers = row[1].clone().unwrap();
    assert!(
        !headers.contains("receiver-api-key-1") && headers.contains("enc1:"),
        "{headers}"
    );
    let row = stored(&db, endpoint_sql, &broker_id).await;
    let url = row[0].clone().unwrap();
    assert!(!url.contains("broker-password-1"), "{url}");
    assert!(url.starts_with("redis://:enc1%3A") && url.ends_with("@127.0.0.1:6379/0?stream=creds"));
    let secret = stored(&db, inbox_sql, &inbox_id).await[0].clone().unwrap();
    assert!(
        secret.starts_with("enc1:") && secret != inbox_secret,
        "{secret}"
    );
    let url = stored(&db, source_sql, &source_id).await[0]
        .clone()
        .unwrap();
    assert!(
        !url.contains("source-password-1") && url.starts_with("redis://:enc1%3A"),
        "{url}"
    );
    let (_, got) = app
        .get(&format!("/v1/tenants/default/sources/{source_id}"))
        .await;
    assert!(!got.to_string().contains("source-password-1"), "{got}");

    // New credentials are sealed as they are written.
    let fresh = app
        .endpoint(json!({"url": r.url, "headers": {"Authorization": "Bearer fresh-key-2"}}))
        .await;
    let fresh_id = fresh["id"].as_str().unwrap().to_owned();
    let headers = stored(&db, endpoint_sql, &fresh_id).await[1]
        .clone()
        .unwrap();
    assert!(!headers.contains("fresh-key-2"), "{headers}");
    let (_, fresh_inbox) = app.post("/v1/tenants/default/inboxes", json!({})).await;
    let fresh_inbox_id = fresh_inbox["id"].as_str().unwrap();
    let secret = stored(&db, inbox_sql, fresh_inbox_id).await[0]
        .clone()
        .unwrap();
    assert!(secret.starts_with("enc1:"), "{secret}");

    // Lists show header names, not values; a single read shows them; no answer shows the
    // URL's password.
    let (_, list) = app.get("/v1/tenants/default/endpoints").await;
    let text = list.to_string();
    for secret in ["receiver-api-key-1", "fresh-key-2", "broker-password-1"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == ep_id.as_str())
        .unwrap();
    assert_eq!(listed["headers"]["X-Api-Key"], "***");
    let (_, one) = app
        .get(&format!("/v1/tenants/default/endpoints/{ep_id}"))
        .await;
    assert_eq!(one["headers"]["X-Api-Key"], "receiver-api-key-1");
    let (_, one) = app
        .get(&format!("/v1/tenants/default/endpoints/{broker_id}"))
        .await;
    assert!(!one.to_string().contains("broker-password-1"));
    let (_, got) = app
        .get(&format!("/v1/tenants/default/inboxes/{inbox_id}"))
        .await;
    assert_eq!(got["secret"], inbox_secret.as_str());
    // The masked value sent back keeps the stored one.
    let (s, patched) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/default/endpoints/{ep_id}"),
        )
        .json(&json!({"headers": {"X-Api-Key": "***", "X-Other": "2"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["headers"]["X-Api-Key"], "receiver-api-key-1");
    // Values that would read as sealed are refused.
    let (s, err) = app
        .post(
            "/v1/tenants/default/endpoints",
            json!({"url": r.url, "headers": {"X-Api-Key": "enc1:abcd:xyz"}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{err}");

    // Deliveries carry the opened values.
    app.event("creds.test", json!({})).await;
    let got = r.wait_for(2, std::time::Duration::from_secs(10)).await;
    assert!(got
        .iter()
        .any(|g| g.header("x-api-key") == "receiver-api-key-1"));
    assert!(got
        .iter()
        .any(|g| g.header("authorization") == "Bearer fresh-key-2"));
    app.stop().await;
}

/// Every text column of an inbox's row, as stored.
async fn inbox_row(database_url: &str, id: &str) -> Vec<String> {
    use sqlx::Row;
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        let row = sqlx::query("SELECT * FROM inboxes WHERE id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (0..row.len())
            .filter_map(|i| row.try_get::<Option<String>, _>(i).ok().flatten())
            .collect()
    } else {
        let pool = sqlx::PgPool::connect(&with_hookrelay_tables(database_url))
            .await
            .unwrap();
        let row = sqlx::query("SELECT * FROM inboxes WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        (0..row.len())
            .filter_map(|i| row.try_get::<Option<String>, _>(i).ok().flatten())
            .collect()
    }
}

/// Runs one statement on the database behind hookrelay's back.
async fn execute(database_url: &str, sql: &str, id: &str) {
    if database_url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(database_url).await.unwrap();
        sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(&with_hookrelay_tables(database_url))
            .await
            .unwrap();
        sqlx::query(&sql.replace('?', "$1"))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// Posts to an inbox's URL and checks that the message is kept.
async fn inbox_receives(app: &TestApp, inbox_id: &str, token: &str, probe: &str) {
    let (s, r) = send(
        app.http
            .post(app.url(&format!("/inbox/{token}")))
            .header("x-probe", probe)
            .body("{}"),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, messages) = app
        .get(&format!("/v1/tenants/default/inboxes/{inbox_id}/messages"))
        .await;
    assert_eq!(s, StatusCode::OK, "{messages}");
    assert!(
        messages["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["headers"]["x-probe"] == probe),
        "{messages}"
    );
}

/// A new inbox's id and token.
async fn new_inbox(app: &TestApp) -> (String, String) {
    let (s, inbox) = app
        .post("/v1/tenants/default/inboxes", serde_json::json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{inbox}");
    let path = inbox["path"].as_str().unwrap();
    let token = path.strip_prefix("/inbox/").unwrap().to_owned();
    (inbox["id"].as_str().unwrap().to_owned(), token)
}

async fn inbox_tokens_are_stored_hashed_and_sealed(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let db = app.database_url().to_owned();
    // Created without a key; one as a row written before tokens were hashed.
    let (old_id, old_token) = new_inbox(&app).await;
    let (legacy_id, legacy_token) = new_inbox(&app).await;
    execute(
        &db,
        "UPDATE inboxes SET token_hash = NULL WHERE id = ?",
        &legacy_id,
    )
    .await;
    // Without a key, the start gives it its hash: it receives at its URL again.
    let app = app.restart().await;
    inbox_receives(&app, &legacy_id, &legacy_token, "before-the-key").await;

    // A start with a key: both still receive at their URL; the token is stored nowhere.
    let app = app
        .restart_with(|c| c.encryption_keys = vec![random_key().into()])
        .await;
    let (fresh_id, fresh_token) = new_inbox(&app).await;
    for (id, token) in [
        (&old_id, &old_token),
        (&legacy_id, &legacy_token),
        (&fresh_id, &fresh_token),
    ] {
        let row = inbox_row(&db, id).await;
        assert!(row.len() >= 3, "{row:?}");
        assert!(
            row.iter().all(|v| !v.contains(token.as_str())),
            "token {token} stored in {row:?}"
        );
        inbox_receives(&app, id, token, id).await;
        // The API still shows where to send.
        let (_, got) = app.get(&format!("/v1/tenants/default/inboxes/{id}")).await;
        assert_eq!(got["path"], format!("/inbox/{token}"));
    }
    let (_, list) = app.get("/v1/tenants/default/inboxes").await;
    let text = list.to_string();
    for token in [&old_token, &legacy_token, &fresh_token] {
        assert!(text.contains(&format!("/inbox/{token}")), "{text}");
    }
    // Anything else is unknown, including what is stored.
    let stored_token = inbox_row(&db, &fresh_id).await;
    for wrong in stored_token.iter().map(String::as_str).chain(["0123abcd"]) {
        let (s, _) = send(
            app.http
                .post(app.url(&format!("/inbox/{}", wrong.replace('/', "%2F")))),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{wrong}");
    }
    app.stop().await;
}

crate::both_stores!(
    a_configured_admin_token_revokes_the_generated_one,
    every_credential_is_sealed_and_lists_hide_header_values,
    inbox_tokens_are_stored_hashed_and_sealed,
);

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;
    // A write, so that the WAL and shared-memory files exist.
    let (s, _) = app
        .post("/v1/tenants", serde_json::json!({"name": "perm"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let path = app
        .database_url()
        .strip_prefix("sqlite://")
        .unwrap()
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} has mode {:o}", mode & 0o777);
    }
    app.stop().await;
}

/// A client that keeps redirects to itself, and a session cookie of a dashboard login.
struct Ui {
    http: reqwest::Client,
}

impl Ui {
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self { http }
    }

    fn cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
        resp.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }

    fn csrf(html: &str) -> String {
        let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
        html[at..].split('"').next().unwrap().to_owned()
    }

    /// The login form's cookie and CSRF token.
    async fn login_form(&self, app: &TestApp) -> (String, String) {
        let page = self.http.get(app.url("/ui/login")).send().await.unwrap();
        let nonce = Self::cookie(&page, "hr_login").unwrap();
        (nonce, Self::csrf(&page.text().await.unwrap()))
    }

    async fn login(
        &self,
        app: &TestApp,
        form: &(String, String),
        token: &str,
    ) -> reqwest::Response {
        self.http
            .post(app.url("/ui/login"))
            .header("cookie", &form.0)
            .form(&[("token", token), ("csrf", &form.1)])
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn logging_out_ends_the_session_on_the_server() {
    let app = spawn_app().await;
    let ui = Ui::new();
    let form = ui.login_form(&app).await;
    let resp = ui.login(&app, &form, ADMIN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let session = Ui::cookie(&resp, "hr_session").unwrap();
    let page = ui
        .http
        .get(app.url("/ui/t/default"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csrf = Ui::csrf(&page.text().await.unwrap());
    let out = ui
        .http
        .post(app.url("/ui/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    // The cookie kept (e.g. copied before logging out) opens nothing any more.
    let after = ui
        .http
        .get(app.url("/ui/t/default"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()["location"], "/ui/login");
    // A new login works.
    let resp = ui.login(&app, &form, ADMIN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    app.stop().await;
}

#[tokio::test]
async fn failed_dashboard_logins_are_throttled_per_address() {
    let app = spawn_app().await;
    let ui = Ui::new();
    let form = ui.login_form(&app).await;
    for _ in 0..10 {
        let resp = ui.login(&app, &form, "not-the-token").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    // Even the right token waits: guessing stops here.
    let resp = ui.login(&app, &form, ADMIN).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    let body = resp.text().await.unwrap();
    assert!(body.contains("Too many failed logins"), "{body}");
    // The API's bearer tokens are not affected.
    let (s, _) = app.get("/v1/tenants").await;
    assert_eq!(s, StatusCode::OK);
    app.stop().await;
}
