//! The PostgreSQL store's own behaviour, beyond the conformance suite: claims that skip
//! rows locked by other processes, the `dispatch_webhook` and `hookrelay_ulid` SQL functions
//! inside an application's transaction, wake-ups, grants and old installations. (Tests of
//! its internals, such as the outbox relay and ordered parking, are unit tests beside it.)

use std::{collections::HashSet, time::Duration};

use hookrelay::{
    domain::{self, new_id, prefix, DeliveryStatus, Tenant},
    store::{postgres::PostgresStore, Catalog, DeliveryFilter, PgSchemas, Store, StoreError},
    wake::Waker,
};
use sqlx::Connection;

use crate::conformance::{endpoint, event, far, ingest, page};
use crate::helpers::*;

/// A fresh database with hookrelay's schema and a store on it.
struct Db {
    name: String,
    url: String,
    store: PostgresStore,
}

impl Db {
    async fn new() -> Self {
        let (url, name) = create_pg_database().await;
        let store = PostgresStore::connect(&url, 16, &PgSchemas::default())
            .await
            .unwrap();
        Self { name, url, store }
    }

    /// A connection of its own, as an application would have, that also sees
    /// hookrelay's tables (the application's functions are in `public`).
    async fn connection(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&with_hookrelay_tables(&self.url))
            .await
            .unwrap()
    }

    async fn close(self) {
        drop(self.store);
        drop_pg_database(&self.name).await;
    }
}

/// Returns once no wake-up has come for longer than the follow-ups of a move last.
async fn let_wake_ups_run_out(waker: &Waker) {
    let quiet = hookrelay::store::postgres::WAKE_FOLLOW_UP + Duration::from_millis(500);
    while tokio::time::timeout(quiet, waker.woken()).await.is_ok() {}
}

/// Waits for a wake-up, failing after ten seconds.
async fn woken(waker: &Waker, why: &str) {
    tokio::time::timeout(Duration::from_secs(10), waker.woken())
        .await
        .unwrap_or_else(|_| panic!("not woken: {why}"));
}

#[tokio::test]
async fn concurrent_claims_never_share_a_delivery_and_skip_locked_rows() {
    let db = Db::new().await;
    let store = &db.store;
    store
        .create_endpoint(&endpoint("default", &[]), u32::MAX)
        .await
        .unwrap();
    for _ in 0..200 {
        ingest(store, event("default", "user.joined", None))
            .await
            .unwrap();
    }

    // Rows locked by someone else (a claim in flight in another process) are skipped,
    // not waited for.
    let mut other = db.connection().await;
    let mut tx = other.begin().await.unwrap();
    let locked: Vec<(String,)> =
        sqlx::query_as("SELECT id FROM deliveries ORDER BY next_attempt_at LIMIT 5 FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    let now = domain::now();
    let lease_until = now + chrono::Duration::seconds(60);
    let claims = futures::future::join_all((0..4).map(|i| {
        let lease = format!("lse_{i}");
        async move {
            store
                .claim(now, lease_until, &lease, 60, &Default::default())
                .await
                .unwrap()
        }
    }))
    .await;
    let mut seen = HashSet::new();
    for (i, batch) in claims.iter().enumerate() {
        for c in batch {
            assert!(
                seen.insert(c.delivery.id.clone()),
                "claimed twice: {}",
                c.delivery.id
            );
            assert_eq!(c.lease_id, format!("lse_{i}"));
            assert_eq!(c.event.id, c.delivery.event_id);
            assert_eq!(c.endpoint.id, c.delivery.endpoint_id);
            assert_eq!(c.delivery.next_attempt_at, Some(lease_until));
        }
    }
    assert_eq!(seen.len(), 195, "every unlocked delivery once");
    for (id,) in &locked {
        assert!(!seen.contains(id), "a locked row was claimed");
    }
    tx.rollback().await.unwrap();

    // Leased rows are not due; the five that were locked are.
    let rest = store
        .claim(now, lease_until, "lse_x", 500, &Default::default())
        .await
        .unwrap();
    let rest: HashSet<String> = rest.into_iter().map(|c| c.delivery.id).collect();
    let locked: HashSet<String> = locked.into_iter().map(|(id,)| id).collect();
    assert_eq!(rest, locked);
    assert_eq!(store.next_due(far()).await.unwrap(), Some(lease_until));
    // Beyond the horizon is not looked at.
    assert_eq!(store.next_due(domain::now()).await.unwrap(), None);
    db.close().await;
}

#[tokio::test]
async fn dispatch_webhook_fans_out_inside_the_callers_transaction() {
    let db = Db::new().await;
    let store = &db.store;
    store.set_default_max_attempts(7).await.unwrap();
    let all = endpoint("default", &[]);
    let star = endpoint("default", &["*"]);
    let user = endpoint("default", &["user.*"]);
    let exact = endpoint("default", &["user.joined_community"]);
    let mut own_budget = endpoint("default", &["billing.paid", "user.joined_community"]);
    own_budget.max_attempts = Some(3);
    let users = endpoint("default", &["users.*"]);
    let other = endpoint("default", &["user.left"]);
    let mut disabled = endpoint("default", &[]);
    disabled.enabled = false;
    store
        .create_tenant(&Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            created_at: domain::now(),
        })
        .await
        .unwrap();
    let foreign = endpoint("acme", &[]);
    for ep in [
        &all,
        &star,
        &user,
        &exact,
        &own_budget,
        &users,
        &other,
        &disabled,
        &foreign,
    ] {
        store.create_endpoint(ep, u32::MAX).await.unwrap();
    }
    let waker = Waker::default();
    store.listen(waker.clone()).await.unwrap();
    // The wake-up of the listener's first connection.
    tokio::time::timeout(Duration::from_secs(10), waker.woken())
        .await
        .expect("listener connected");

    let mut app = db.connection().await;
    // Rolled back: nothing exists, nobody is woken.
    let mut tx = app.begin().await.unwrap();
    let (gone,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('user.joined_community', '{\"user_id\": \"u_1\"}'::jsonb)",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.get_event("default", &gone).await.unwrap().is_none());
    // The wake-up sequence is not transactional: a rollback may wake a dispatcher,
    // whose claim then finds nothing.
    let now = domain::now();
    let claimed = store
        .claim(now, far(), "lse_0", 10, &Default::default())
        .await
        .unwrap();
    assert!(claimed.is_empty(), "a rolled-back event was claimed");
    // Let the wake-ups of the rollback's move run out, so the next one is the commit's.
    let_wake_ups_run_out(&waker).await;

    // Committed: the event and one delivery per matching endpoint, and a wake-up.
    let mut tx = app.begin().await.unwrap();
    let (id,): (String,) = sqlx::query_as(
        "SELECT dispatch_webhook('user.joined_community', '{\"user_id\": \"u_42\"}', 'u_42')",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), waker.woken())
        .await
        .expect("woken by the commit");

    let e = store.get_event("default", &id).await.unwrap().unwrap();
    assert_eq!(e.event_type, "user.joined_community");
    assert_eq!(e.data, serde_json::json!({"user_id": "u_42"}));
    assert_eq!(e.actor.as_deref(), Some("u_42"));
    let deliveries = store
        .list_deliveries(
            "default",
            &DeliveryFilter {
                event_id: Some(id.clone()),
                page: page(100),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got: std::collections::HashMap<String, u32> = deliveries
        .iter()
        .map(|d| (d.endpoint_id.clone(), d.max_attempts))
        .collect();
    let want: std::collections::HashMap<String, u32> = [
        (all.id.clone(), 7),
        (star.id.clone(), 7),
        (user.id.clone(), 7),
        (exact.id.clone(), 7),
        (own_budget.id.clone(), 3),
    ]
    .into();
    assert_eq!(got, want);
    // The same fan-out as hookrelay's own ingest.
    let mut endpoints = vec![
        all, star, user, exact, own_budget, users, other, disabled, foreign,
    ];
    for ep in &mut endpoints {
        *ep = store
            .get_endpoint(&ep.tenant_id, &ep.id)
            .await
            .unwrap()
            .unwrap();
    }
    let rust: HashSet<String> = domain::fan_out(&e, &endpoints, 7)
        .into_iter()
        .map(|d| d.endpoint_id)
        .collect();
    assert_eq!(rust, got.keys().cloned().collect::<HashSet<_>>());
    for d in &deliveries {
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts, 0);
        assert_eq!(d.next_attempt_at, Some(e.created_at));
        assert!(d.id.starts_with("dlv_") && d.id.len() == 30, "{}", d.id);
    }
    // They are due now and claimable.
    let now = domain::now();
    let claimed = store
        .claim(
            now,
            now + chrono::Duration::seconds(30),
            "lse_1",
            100,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 5);

    // Refusals raise an exception (the caller's transaction fails).
    for bad in [
        "SELECT dispatch_webhook('user.x', '{}', NULL, 'nope')",
        "SELECT dispatch_webhook('not a type', '{}')",
        "SELECT dispatch_webhook('user.x', 'null')",
    ] {
        let err = sqlx::query(bad).execute(&mut app).await.unwrap_err();
        assert!(err.to_string().contains("dispatch_webhook"), "{err}");
    }
    db.close().await;
}

#[tokio::test]
async fn a_dispatch_webhook_committed_late_is_fanned_out_and_wakes_the_dispatcher() {
    let db = Db::new().await;
    let store = &db.store;
    store
        .create_endpoint(&endpoint("default", &[]), u32::MAX)
        .await
        .unwrap();
    let waker = Waker::default();
    store.listen(waker.clone()).await.unwrap();
    woken(&waker, "first connection").await;
    // Let the follow-ups of the first connection run out.
    let_wake_ups_run_out(&waker).await;

    // The application's transaction calls dispatch_webhook(), then commits 3 s later,
    // after any follow-up of an earlier move would have run out.
    let mut app = db.connection().await;
    let mut tx = sqlx::Connection::begin(&mut app).await.unwrap();
    sqlx::query("SELECT dispatch_webhook('a.b', '{}')")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(3), waker.woken())
            .await
            .is_err(),
        "woken before the commit"
    );
    tx.commit().await.unwrap();
    // Woken once the probe has fanned it out: the claim finds the delivery.
    tokio::time::timeout(Duration::from_secs(1), waker.woken())
        .await
        .expect("woken within a second of the commit");
    let now = domain::now();
    let claimed = store
        .claim(
            now,
            now + chrono::Duration::seconds(30),
            "lse_1",
            10,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the delivery was made before the wake-up");
    db.close().await;
}

/// An installation made before hookrelay had a schema of its own (its tables in the
/// default schema) keeps working: a start without `pg_schema` finds it there and
/// creates no schema.
#[tokio::test]
async fn an_installation_made_before_schemas_keeps_its_tables() {
    let (url, name) = create_pg_database().await;
    let legacy = PgSchemas {
        tables: Some("public".into()),
        ..Default::default()
    };
    let store = PostgresStore::connect(&url, 2, &legacy).await.unwrap();
    let tenant = Tenant {
        id: "acme".into(),
        name: "Acme".into(),
        created_at: domain::now(),
    };
    store.create_tenant(&tenant).await.unwrap();
    drop(store);
    let store = PostgresStore::connect(&url, 2, &PgSchemas::default())
        .await
        .unwrap();
    assert!(store.get_tenant("acme").await.unwrap().is_some());
    drop(store);
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    let (own_schema,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'hookrelay')")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(!own_schema);
    drop(c);
    drop_pg_database(&name).await;
}

/// The functions applications call are not executable by PUBLIC, and grants made on
/// them survive a restart (which installs them again).
#[tokio::test]
async fn the_application_functions_keep_their_grants_and_are_not_public() {
    let db = Db::new().await;
    let suffix = format!("{:016x}", rand::random::<u64>());
    let (caller, stranger) = (format!("hr_caller_{suffix}"), format!("hr_other_{suffix}"));
    let mut c = db.connection().await;
    let uuid_fn = "public.dispatch_webhook(text, jsonb, uuid)";
    let text_fn = "public.dispatch_webhook(text, jsonb, text, text, text)";
    for sql in [
        format!("CREATE ROLE {caller}"),
        format!("CREATE ROLE {stranger}"),
        format!("GRANT EXECUTE ON FUNCTION {uuid_fn} TO {caller}"),
    ] {
        sqlx::query(&sql).execute(&mut c).await.unwrap();
    }
    let restarted = PostgresStore::connect(&db.url, 2, &PgSchemas::default())
        .await
        .unwrap();
    drop(restarted);
    let may =
        |role: &str, f: &str| format!("SELECT has_function_privilege('{role}', '{f}', 'EXECUTE')");
    for (role, f, want) in [
        (&caller, uuid_fn, true),
        (&caller, text_fn, false),
        (&stranger, uuid_fn, false),
        (&stranger, text_fn, false),
    ] {
        let (got,): (bool,) = sqlx::query_as(&may(role, f))
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(got, want, "{role} on {f}");
    }
    for sql in [
        format!("REVOKE ALL ON FUNCTION {uuid_fn} FROM {caller}"),
        format!("DROP ROLE {caller}"),
        format!("DROP ROLE {stranger}"),
    ] {
        sqlx::query(&sql).execute(&mut c).await.unwrap();
    }
    db.close().await;
}

#[tokio::test]
async fn hookrelay_ulid_makes_ids_like_new_id() {
    let db = Db::new().await;
    let rust = new_id(prefix::EVENT);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let (id, at_epoch): (String, String) = sqlx::query_as(
        "SELECT hookrelay_ulid('evt'), \
                hookrelay_ulid('x', to_timestamp(1469918176.385))",
    )
    .fetch_one(&mut db.connection().await)
    .await
    .unwrap();
    assert_eq!(id.len(), 4 + 26, "{id}");
    let ulid = id.strip_prefix("evt_").expect("evt_ prefix");
    assert!(ulid
        .bytes()
        .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b)));
    let parsed = ulid::Ulid::from_string(ulid).expect("a ULID");
    let age = chrono::Utc::now().timestamp_millis() - i64::try_from(parsed.timestamp_ms()).unwrap();
    assert!((0..10_000).contains(&age), "timestamp {age} ms off");
    assert!(rust < id, "SQL ids sort after earlier Rust ids");
    // The timestamp of the ULID specification's example.
    assert!(at_epoch.starts_with("x_01ARYZ6S41"), "{at_epoch}");
    let many: Vec<(String,)> =
        sqlx::query_as("SELECT hookrelay_ulid('evt') FROM generate_series(1, 1000)")
            .fetch_all(&mut db.connection().await)
            .await
            .unwrap();
    // Every random character takes many values (a wrong shift would pin one).
    for position in 14..30 {
        let seen: HashSet<u8> = many.iter().map(|(id,)| id.as_bytes()[position]).collect();
        assert!(seen.len() >= 24, "position {position}: {seen:?}");
    }
    let distinct: HashSet<String> = many.into_iter().map(|(id,)| id).collect();
    assert_eq!(distinct.len(), 1000);
    db.close().await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let err = PostgresStore::connect(
        "postgres://postgres:secret@127.0.0.1:1/none",
        1,
        &Default::default(),
    )
    .await
    .err()
    .expect("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(matches!(
        PostgresStore::connect("postgres://u:secret@[bad/x", 1, &Default::default()).await,
        Err(StoreError::UnsupportedUrl(u)) if !u.contains("secret")
    ));
}
