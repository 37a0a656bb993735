//! The community platform switches to hookrelay: its database (with an `events` table of
//! its own, its webhook tables, its old `dispatch_webhook()` and its data) goes through the
//! README's migration guide, and afterwards its receivers, its calls and its roles work
//! as before. Everything runs against the machine's PostgreSQL and the real binary.

use std::{process::Command, time::Duration};

use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use sqlx::Connection;

use crate::{crash::start_server, helpers::*};

/// Secrets as that system stored them: plain strings.
const SECRET: &str = "n8n-shared-secret-1";
const CATALOG_SECRET: &str = "catalog receiver secret";
const USER_AGENT: &str = "My Third Place Webhook/1.0";
const ACTOR: &str = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b";
const REQUEST_ID: &str = "0b4e7f2a-1c3d-4e5f-9a8b-7c6d5e4f3a2b";

/// What the seed's receivers do: HMAC-SHA256 of the raw body with the shared secret, as
/// hex, after `sha256=` in `X-Webhook-Signature`.
fn verifies_like_the_seed(secret: &str, r: &Received) -> bool {
    let Some(given) = r.header("x-webhook-signature").strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    hex::encode(mac.finalize().into_bytes()) == given
}

fn hookrelay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The application's database before the switch, built like the seed's: its own `events`
/// table, the webhook tables with a working, a broken and an inactive configuration, a
/// pending, a delivered and a failed delivery, and its old `dispatch_webhook()` that the
/// application's role may execute.
async fn seed(db: &str, receiver: &str, role: &str) {
    let mut c = sqlx::PgConnection::connect(db).await.unwrap();
    let statements = [
        "CREATE TABLE events (id serial PRIMARY KEY, title text NOT NULL)".to_owned(),
        "INSERT INTO events (title) VALUES ('Lisbon Runners meetup'), ('Book club')".into(),
        "CREATE TABLE webhook_configurations (
           id uuid PRIMARY KEY, name text, url text NOT NULL, secret text NOT NULL,
           events text[] NOT NULL, is_active boolean NOT NULL DEFAULT true,
           created_at timestamptz NOT NULL DEFAULT now())"
            .into(),
        "CREATE TABLE webhook_deliveries (
           id uuid PRIMARY KEY, webhook_config_id uuid REFERENCES webhook_configurations(id),
           event_type text NOT NULL, payload jsonb NOT NULL,
           status text NOT NULL DEFAULT 'pending',
           attempts int NOT NULL DEFAULT 0, last_attempt_at timestamptz, error_message text,
           created_at timestamptz NOT NULL DEFAULT now())"
            .into(),
        format!(
            "INSERT INTO webhook_configurations (id, name, url, secret, events, is_active) VALUES
             ('11111111-1111-4111-8111-111111111111', 'n8n', '{receiver}', '{SECRET}',
              ARRAY['user.joined_community', 'user.joined_platform'], true),
             ('22222222-2222-4222-8222-222222222222', 'old ftp', 'ftp://files.example/in', 's',
              ARRAY['user.joined_community'], true),
             ('33333333-3333-4333-8333-333333333333', 'typo', 'https://exa mple.com/hook', 's',
              ARRAY['user.joined_community'], true),
             ('44444444-4444-4444-8444-444444444444', 'paused CRM', '{receiver}?crm', 'k',
              ARRAY['user.posted_comment'], false)"
        ),
        format!(
            "INSERT INTO webhook_deliveries
               (id, webhook_config_id, event_type, payload, status, attempts, error_message) VALUES
             ('aaaaaaaa-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111',
              'user.joined_community',
              '{{\"event\": \"user.joined_community\", \"timestamp\": \"2026-01-29T12:34:56.789Z\",
                \"actor_user_id\": \"{ACTOR}\", \"request_id\": \"{REQUEST_ID}\",
                \"data\": {{\"community_id\": \"c_7\", \"community_name\": \"Lisbon Runners\",
                          \"community_city\": \"Lisbon\", \"member_count\": 43}}}}',
              'pending', 2, 'HTTP 502'),
             ('aaaaaaaa-0000-4000-8000-000000000002', '11111111-1111-4111-8111-111111111111',
              'user.joined_community',
              '{{\"event\": \"user.joined_community\", \"timestamp\": \"2026-01-28T10:00:00.000Z\",
                \"actor_user_id\": null, \"request_id\": \"0b4e7f2a-0000-4000-8000-000000000002\",
                \"data\": {{\"community_id\": \"c_1\"}}}}',
              'delivered', 1, NULL),
             ('aaaaaaaa-0000-4000-8000-000000000003', '11111111-1111-4111-8111-111111111111',
              'user.joined_platform',
              '{{\"event\": \"user.joined_platform\", \"timestamp\": \"2026-01-27T09:00:00.000Z\",
                \"actor_user_id\": null, \"request_id\": \"0b4e7f2a-0000-4000-8000-000000000003\",
                \"data\": {{}}}}',
              'failed', 3, 'HTTP 500'),
             ('aaaaaaaa-0000-4000-8000-000000000004', '22222222-2222-4222-8222-222222222222',
              'user.joined_community',
              '{{\"event\": \"user.joined_community\", \"timestamp\": \"2026-01-29T12:34:56.789Z\",
                \"actor_user_id\": \"{ACTOR}\", \"request_id\": \"{REQUEST_ID}\",
                \"data\": {{\"community_id\": \"c_7\"}}}}',
              'pending', 0, NULL)"
        ),
        // The platform's own function, which hookrelay replaces.
        "CREATE FUNCTION dispatch_webhook(event_type text, event_data jsonb, actor_user_id uuid)
         RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
         BEGIN
           INSERT INTO webhook_deliveries (id, webhook_config_id, event_type, payload)
           SELECT gen_random_uuid(), c.id, event_type, jsonb_build_object('data', event_data)
             FROM webhook_configurations c WHERE event_type = ANY (c.events);
         END $$"
            .into(),
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT EXECUTE ON FUNCTION dispatch_webhook(text, jsonb, uuid) TO {role}"),
    ];
    for sql in statements {
        sqlx::raw_sql(&sql)
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The data of a join that brought the community to `n` members.
fn member_count(n: u32) -> Value {
    json!({"community_id": "c_7", "member_count": n})
}

/// The seed's call, by name with a uuid actor, as the application makes it.
async fn join_by_name(conn: &mut sqlx::PgConnection, members: u32) {
    sqlx::query(
        "SELECT dispatch_webhook(event_type => 'user.joined_community', \
         event_data => $1::jsonb, actor_user_id => $2::uuid)",
    )
    .bind(member_count(members).to_string())
    .bind(ACTOR)
    .execute(conn)
    .await
    .unwrap();
}

/// Drops roles a test made (cluster-wide; their database is dropped first).
async fn drop_roles(roles: &[&str]) {
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_server()))
        .await
        .unwrap();
    for role in roles {
        sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// Everything in the application's tables, as one text.
async fn application_tables(db: &str) -> String {
    let mut c = sqlx::PgConnection::connect(db).await.unwrap();
    let mut all = String::new();
    for table in ["events", "webhook_configurations", "webhook_deliveries"] {
        let rows: Option<String> = sqlx::query_scalar(&format!(
            "SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM public.{table} t"
        ))
        .fetch_one(&mut c)
        .await
        .unwrap();
        all.push_str(&format!("{table}:\n{}\n", rows.unwrap_or_default()));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_community_platform_switches_without_touching_its_callers_or_receivers() {
    let (db, name) = create_pg_database().await;
    let role = format!("app_{}", &name[6..]);
    let receiver = Receiver::ok().await;
    seed(&db, &receiver.url, &role).await;
    let before = application_tables(&db).await;

    // The guide, step by step. 1: install hookrelay into the application's database.
    let out = stdout(&hookrelay(&["migrate", "--database-url", &db]));
    assert!(out.contains("migrations applied"), "{out}");
    // 3: import, dry first (2, switching the old cron dispatcher off, is outside).
    let dry = stdout(&hookrelay(&[
        "import",
        "--from",
        &db,
        "--database-url",
        &db,
        "--dry-run",
        "--allow-network",
        "127.0.0.0/8",
    ]));
    assert!(dry.contains("dry run, nothing written"), "{dry}");
    let imported = stdout(&hookrelay(&[
        "import",
        "--from",
        &db,
        "--database-url",
        &db,
        "--allow-network",
        "127.0.0.0/8",
    ]));
    println!("{imported}");
    for expected in [
        "endpoints: 2 created, 0 existing, 2 refused; deliveries: 1 created, 0 existing, 1 refused; 2 not pending left behind",
        "refused webhook_configurations 22222222-2222-4222-8222-222222222222: unusable url: url scheme \"ftp\" is not supported",
        "refused webhook_configurations 33333333-3333-4333-8333-333333333333: unusable url",
        "refused webhook_deliveries aaaaaaaa-0000-4000-8000-000000000004: its configuration 22222222-2222-4222-8222-222222222222 was not imported",
    ] {
        assert!(imported.contains(expected), "missing {expected:?} in:\n{imported}");
    }
    let again = stdout(&hookrelay(&[
        "import",
        "--from",
        &db,
        "--database-url",
        &db,
        "--allow-network",
        "127.0.0.0/8",
    ]));
    assert!(
        again.contains("endpoints: 0 created, 2 existing, 2 refused; deliveries: 0 created, 1 existing, 1 refused"),
        "a second import creates nothing:\n{again}"
    );
    assert_eq!(
        application_tables(&db).await,
        before,
        "the application's tables are unchanged"
    );

    // 4: serve. The imported pending delivery arrives as the seed's receivers expect it.
    let server = start_server(&db, &[]);
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    let first = &got[0];
    assert!(
        verifies_like_the_seed(SECRET, first),
        "signature of {:?}",
        first.headers
    );
    assert_eq!(first.header("user-agent"), USER_AGENT);
    assert_eq!(
        first.json(),
        json!({
            "event": "user.joined_community", "timestamp": "2026-01-29T12:34:56.789Z",
            "actor_user_id": ACTOR, "request_id": REQUEST_ID,
            "data": {"community_id": "c_7", "community_name": "Lisbon Runners",
                     "community_city": "Lisbon", "member_count": 43}
        })
    );

    // The application's role calls the same function, with a uuid actor, by name; it was
    // granted EXECUTE on the old function only.
    let app_url = db.replace("postgres@", &format!("{role}@"));
    let mut app = sqlx::PgConnection::connect(&app_url).await.unwrap();
    let marker = |n: u32| member_count(n).to_string();
    join_by_name(&mut app, 44).await;
    // A rolled-back call sends nothing.
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SELECT dispatch_webhook('user.joined_community', $1::jsonb, $2::uuid)")
        .bind(marker(45))
        .bind(ACTOR)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    // Bad input: a clear SQL error, and the caller's transaction goes on after a savepoint.
    let mut tx = app.begin().await.unwrap();
    sqlx::query("SAVEPOINT before_webhook")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("SELECT dispatch_webhook('not a type!', '{}'::jsonb, $1::uuid)")
        .bind(ACTOR)
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dispatch_webhook: invalid event type"),
        "{err}"
    );
    sqlx::query("ROLLBACK TO SAVEPOINT before_webhook")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query("SELECT dispatch_webhook('user.joined_community', NULL, $1::uuid)")
        .bind(ACTOR)
        .execute(&mut *tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("event data is required"), "{err}");
    sqlx::query("ROLLBACK TO SAVEPOINT before_webhook")
        .execute(&mut *tx)
        .await
        .unwrap();
    // PostgREST's RPC: the JSON body's keys as named arguments, typed by the function.
    sqlx::query(
        "SELECT public.dispatch_webhook(\"event_type\" := b.\"event_type\", \
         \"event_data\" := b.\"event_data\", \"actor_user_id\" := b.\"actor_user_id\") \
         FROM json_to_record($1::json) AS b(\"event_type\" text, \"event_data\" jsonb, \
         \"actor_user_id\" uuid)",
    )
    .bind(json!({"event_type": "user.joined_community", "event_data": {"community_id": "c_7", "member_count": 46}, "actor_user_id": ACTOR}).to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // hookrelay's tables, which hold the secrets, are out of the role's reach.
    let denied = sqlx::query("SELECT secret FROM hookrelay.endpoints")
        .execute(&mut app)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("permission denied"), "{denied}");

    // A role set up after the switch, granted exactly what the guide says.
    let guided = format!("{role}_guide");
    let mut owner = sqlx::PgConnection::connect(&db).await.unwrap();
    for sql in [
        format!("CREATE ROLE {guided} LOGIN"),
        format!("GRANT EXECUTE ON FUNCTION public.dispatch_webhook(text, jsonb, uuid) TO {guided}"),
    ] {
        sqlx::query(&sql).execute(&mut owner).await.unwrap();
    }
    let mut guided_conn =
        sqlx::PgConnection::connect(&db.replace("postgres@", &format!("{guided}@")))
            .await
            .unwrap();
    join_by_name(&mut guided_conn, 47).await;
    let denied = sqlx::query("SELECT count(*) FROM hookrelay.deliveries")
        .execute(&mut guided_conn)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.contains("permission denied"), "{denied}");
    drop(guided_conn);

    let got = receiver.wait_for(4, Duration::from_secs(30)).await;
    let mut counts: Vec<i64> = got[1..]
        .iter()
        .map(|r| {
            assert!(verifies_like_the_seed(SECRET, r));
            assert_eq!(r.json()["actor_user_id"], ACTOR);
            r.json()["data"]["member_count"].as_i64().unwrap()
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [44, 46, 47],
        "the rolled-back call (45) sent nothing"
    );

    // 5: verify, with the CLI: the imported delivery and the three new ones are delivered
    // (recorded a moment after the receiver answered).
    let base = server.base.clone();
    let delivered = eventually(Duration::from_secs(20), || {
        let base = base.clone();
        async move {
            let out = tokio::task::spawn_blocking(move || {
                Command::new(env!("CARGO_BIN_EXE_hookrelay"))
                    .args(["deliveries", "list", "--status", "delivered"])
                    .env("HOOKRELAY_SERVER", &base)
                    .env("HOOKRELAY_TOKEN", ADMIN)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let listed: Value = serde_json::from_str(&stdout(&out)).unwrap();
            (listed["data"].as_array().unwrap().len() == 4).then_some(())
        }
    })
    .await;
    assert!(
        delivered.is_some(),
        "four deliveries are listed as delivered"
    );

    drop(app);
    drop(server);
    drop(owner);
    drop_pg_database(&name).await;
    drop_roles(&[&role, &guided]).await;
}

/// Every event of the catalog, with the data the seed's code sends, is accepted by the API
/// (against the catalog's schemas) and by `dispatch_webhook()`, and arrives in the
/// community format.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_catalog_event_goes_through_the_api_and_dispatch_webhook() {
    let (db, name) = create_pg_database().await;
    let receiver = Receiver::ok().await;
    let server = start_server(&db, &["--strict-event-types"]);
    let http = reqwest::Client::new();
    let catalog: Vec<Value> =
        serde_json::from_str(include_str!("../../catalog/community.json")).unwrap();
    for entry in &catalog {
        let (s, body) = send(
            http.post(format!("{}/v1/event-types", server.base))
                .bearer_auth(ADMIN)
                .json(entry),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    let (s, ep) = send(
        http.post(format!("{}/v1/tenants/default/endpoints", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({
                "url": receiver.url, "format": "community", "secret": CATALOG_SECRET,
                "headers": {"User-Agent": USER_AGENT}
            })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    assert_eq!(ep["format"], "community");

    let samples: Vec<Value> =
        serde_json::from_str(include_str!("../fixtures/community_samples.json")).unwrap();
    assert_eq!(samples.len(), 9);
    let mut app = sqlx::PgConnection::connect(&db).await.unwrap();
    for sample in &samples {
        let (s, body) = send(
            http.post(format!("{}/v1/tenants/default/events", server.base))
                .bearer_auth(ADMIN)
                .json(&json!({
                    "type": sample["event_type"], "data": sample["event_data"],
                    "actor": sample["actor_user_id"]
                })),
        )
        .await;
        assert!(s.is_success(), "{sample}: {s} {body}");
        sqlx::query(
            "SELECT dispatch_webhook(event_type => $1, event_data => $2::jsonb, \
             actor_user_id => $3::uuid)",
        )
        .bind(sample["event_type"].as_str().unwrap())
        .bind(sample["event_data"].to_string())
        .bind(sample["actor_user_id"].as_str())
        .execute(&mut app)
        .await
        .unwrap();
    }
    let got = receiver.wait_for(18, Duration::from_secs(30)).await;
    for sample in &samples {
        let arrived: Vec<&Received> = got
            .iter()
            .filter(|r| r.json()["event"] == sample["event_type"])
            .collect();
        assert_eq!(arrived.len(), 2, "{sample}");
        for r in arrived {
            assert!(verifies_like_the_seed(CATALOG_SECRET, r));
            assert_eq!(r.json()["data"], sample["event_data"]);
            assert_eq!(r.json()["actor_user_id"], sample["actor_user_id"]);
            assert!(r.json()["request_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36));
        }
    }
    // The seed's payload for joining, with the user as the actor and not in data, is
    // valid; one without the community is not.
    let (s, body) = send(
        http.post(format!("{}/v1/tenants/default/events", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({"type": "user.joined_community", "data": {"member_count": 3}})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    drop(app);
    drop(server);
    drop_pg_database(&name).await;
}

/// The community format on either store: first attempts, retries, replays and the endpoint
/// test all carry its body and signature; secrets are plain strings; bad combinations are
/// refused and change nothing.
async fn the_community_format_applies_to_every_attempt(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    // Fails once, then accepts: the retry must be signed the same way.
    let receiver = Receiver::start(Duration::ZERO, |n, _| {
        if n == 1 {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        } else {
            StatusCode::OK.into_response()
        }
    })
    .await;
    for bad in [
        json!({"url": receiver.url, "format": "community", "secret": ""}),
        json!({"url": receiver.url, "format": "community", "secret": "line\nbreak"}),
        json!({"url": receiver.url, "format": "community", "signing_scheme": "ed25519"}),
        json!({"url": receiver.url, "format": "legacy"}),
    ] {
        let (s, body) = app.post("/v1/tenants/default/endpoints", bad.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let ep = app
        .endpoint(
            json!({"url": receiver.url, "format": "community", "secret": SECRET,
                         "headers": {"User-Agent": USER_AGENT}}),
        )
        .await;
    assert_eq!(ep["format"], "community");
    assert_eq!(ep["secret"], SECRET);
    let id = ep["id"].as_str().unwrap();
    let event = app
        .event("user.joined_community", json!({"community_id": "c_7"}))
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[0].body, got[1].body, "the retry sends the same body");
    for r in &got {
        assert!(verifies_like_the_seed(SECRET, r));
        assert_eq!(r.header("user-agent"), USER_AGENT);
        assert_eq!(
            r.header("webhook-signature"),
            "",
            "no Standard Webhooks signature"
        );
        assert_eq!(r.json()["event"], "user.joined_community");
        assert_eq!(r.json()["actor_user_id"], Value::Null);
    }
    // A replay of the event (once it is recorded as delivered), and the endpoint test.
    app.wait_delivery(event["deliveries"][0]["id"].as_str().unwrap(), "delivered")
        .await;
    let (s, _) = app
        .post(
            &format!(
                "/v1/tenants/default/events/{}/replay",
                event["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, test) = app
        .post(
            &format!("/v1/tenants/default/endpoints/{id}/test"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{test}");
    let got = receiver.wait_for(4, Duration::from_secs(20)).await;
    // The replay and the test arrive in either order.
    let (tests, replays): (Vec<&Received>, Vec<&Received>) = got[2..]
        .iter()
        .partition(|r| r.json()["event"] == "webhook.test");
    assert_eq!((tests.len(), replays.len()), (1, 1));
    assert_eq!(replays[0].json()["request_id"], got[0].json()["request_id"]);
    assert!(got[2..].iter().all(|r| verifies_like_the_seed(SECRET, r)));

    // Back to Standard Webhooks only with a whsec_ secret.
    let (s, body) = send(
        app.req(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/default/endpoints/{id}"),
        )
        .json(&json!({"format": "standard-webhooks"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (_, still) = app
        .get(&format!("/v1/tenants/default/endpoints/{id}"))
        .await;
    assert_eq!(
        still["format"], "community",
        "a refused change changes nothing"
    );
    app.stop().await;
}

crate::both_stores!(the_community_format_applies_to_every_attempt);

/// The import also fills an embedded store: the source is PostgreSQL, hookrelay SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_fills_an_embedded_store_too() {
    let (db, name) = create_pg_database().await;
    let role = format!("app_{}", &name[6..]);
    let receiver = Receiver::ok().await;
    seed(&db, &receiver.url, &role).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("hr.db").display());
    let args = [
        "import",
        "--from",
        &db,
        "--database-url",
        &sqlite,
        "--allow-network",
        "127.0.0.0/8",
    ];
    let out = stdout(&hookrelay(&args));
    assert!(out.contains("deliveries: 1 created"), "{out}");
    let out = stdout(&hookrelay(&args));
    assert!(out.contains("deliveries: 0 created, 1 existing"), "{out}");
    let server = start_server(&sqlite, &[]);
    let got = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert!(verifies_like_the_seed(SECRET, &got[0]));
    assert_eq!(got[0].json()["request_id"], REQUEST_ID);
    drop(server);
    drop_pg_database(&name).await;
    drop_roles(&[&role]).await;
}
