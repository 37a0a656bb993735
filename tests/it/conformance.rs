//! The store conformance suite: the same calls and the same answers from every store. Each
//! test runs on SQLite and on PostgreSQL (`both_stores!`), through the `Store` trait only.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use hookrelay::{
    domain::{
        self, new_id, prefix, Attempt, AttemptOutcome, DeliveryStatus, Endpoint, Event, EventType,
        Tenant,
    },
    store::{
        Claimed, Completion, DataCheck, DeliveryFilter, EventFilter, Ingested, Page, Result, Store,
        StoreError, TokenRecord,
    },
};

use crate::helpers::*;
use crate::store::{open, NoCheck};

/// Drops the store, and its PostgreSQL database if it has one.
async fn close(store: Arc<dyn Store>, pg: Option<String>) {
    drop(store);
    if let Some(name) = pg {
        drop_pg_database(&name).await;
    }
}

/// Refuses data without a `user_id`, like a schema requiring it would.
struct NeedsUserId;
impl DataCheck for NeedsUserId {
    fn check(&self, _: &EventType, data: &serde_json::Value) -> Result<(), String> {
        if data.get("user_id").is_some() {
            Ok(())
        } else {
            Err("/user_id is required".into())
        }
    }
}

fn endpoint(tenant: &str, event_types: &[&str]) -> Endpoint {
    Endpoint {
        description: Some("test".into()),
        event_types: event_types.iter().map(|s| s.to_string()).collect(),
        headers: [("x-test".to_string(), "1".to_string())].into(),
        ..Endpoint::new(tenant, "https://example.com/hook", "whsec_dGVzdA==".into())
    }
}

fn event(tenant: &str, event_type: &str, key: Option<&str>) -> Event {
    let now = domain::now();
    Event {
        id: domain::new_id_at(prefix::EVENT, now),
        tenant_id: tenant.to_owned(),
        event_type: event_type.to_owned(),
        data: serde_json::json!({"user_id": "u_42", "n": 1}),
        actor: Some("u_42".into()),
        idempotency_key: key.map(str::to_owned),
        traceparent: None,
        created_at: now,
        deliver_at: None,
    }
}

/// A horizon beyond anything a test schedules.
fn far() -> DateTime<Utc> {
    domain::now() + chrono::Duration::days(365)
}

async fn ingest(store: &dyn Store, e: Event) -> Result<Ingested> {
    store.ingest(e, 15, Arc::new(NoCheck)).await
}

fn completion(c: &Claimed, status: DeliveryStatus, lease_id: &str) -> Completion {
    let now = domain::now();
    Completion {
        ordered: false,
        delivery_id: c.delivery.id.clone(),
        endpoint_id: c.endpoint.id.clone(),
        lease_id: lease_id.to_owned(),
        attempt: Attempt {
            id: new_id(prefix::ATTEMPT),
            delivery_id: c.delivery.id.clone(),
            attempt_number: c.delivery.attempts + 1,
            started_at: now,
            duration_ms: 12,
            status_code: Some(200),
            response: Some("ok\0".into()),
            error: None,
            outcome: if status == DeliveryStatus::Delivered {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::Retry
            },
            next_attempt_at: None,
        },
        status,
        next_attempt_at: (status == DeliveryStatus::Pending)
            .then(|| now + chrono::Duration::seconds(10)),
        disable_endpoint: None,
    }
}

fn page(limit: u32) -> Page {
    Page {
        after_id: None,
        limit,
    }
}

async fn every_method_answers_the_same(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    store.ping().await.unwrap();

    // Tenants: the default one exists; conflicts; newest first with cursors.
    assert!(store.get_tenant("default").await.unwrap().is_some());
    let mut made = Vec::new();
    for i in 0..3 {
        let t = Tenant {
            // Ids made in one millisecond need not sort in order of creation.
            id: format!("t{i}"),
            name: format!("t{i}"),
            created_at: domain::now(),
        };
        store.create_tenant(&t).await.unwrap();
        made.push(t);
    }
    assert!(matches!(
        store.create_tenant(&made[0]).await,
        Err(StoreError::Conflict(_))
    ));
    let first = store.list_tenants(&page(2)).await.unwrap();
    assert_eq!(first, vec![made[2].clone(), made[1].clone()]);
    let next = store
        .list_tenants(&Page {
            after_id: Some(first[1].id.clone()),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(next[0], made[0]);
    assert_eq!(next.last().map(|t| t.id.as_str()), Some("default"));
    assert!(store.get_tenant("a\0b").await.unwrap().is_none());

    // Tokens.
    assert!(!store.has_admin_token().await.unwrap());
    let token = TokenRecord {
        id: new_id(prefix::TOKEN),
        tenant_id: None,
        hash: "ab".repeat(32),
        created_at: domain::now(),
    };
    store.create_token(&token).await.unwrap();
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(store.find_token(&token.hash).await.unwrap(), Some(token));

    // Event types.
    let et = EventType {
        name: "user.joined".into(),
        description: Some("joined".into()),
        schema: Some(serde_json::json!({"type": "object"})),
        created_at: domain::now(),
    };
    store.create_event_type(&et).await.unwrap();
    assert!(matches!(
        store.create_event_type(&et).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_event_type("user.joined").await.unwrap(),
        Some(et.clone())
    );
    assert_eq!(store.list_event_types().await.unwrap(), vec![et]);

    // Endpoints round-trip every field.
    let mut ep = endpoint(&made[0].id, &["user.*"]);
    ep.previous_secret = Some("whsec_b2xk".into());
    ep.previous_secret_expires_at = Some(domain::now());
    ep.rate_limit = Some(5);
    ep.max_attempts = Some(4);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    assert_eq!(
        store.get_endpoint(&ep.tenant_id, &ep.id).await.unwrap(),
        Some(ep.clone())
    );
    assert!(store
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .is_none());
    ep.enabled = false;
    ep.disabled_reason = Some("manual".into());
    ep.url = "https://example.com/other".into();
    assert!(store.update_endpoint(&ep).await.unwrap());
    assert_eq!(
        store
            .list_endpoints(&ep.tenant_id, &page(10))
            .await
            .unwrap(),
        vec![ep.clone()]
    );
    ep.enabled = true;
    ep.disabled_reason = None;
    assert!(store.update_endpoint(&ep).await.unwrap());

    // Events and deliveries, deferred delivery, filters.
    let mut e = event(&made[0].id, "user.joined", None);
    e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    e.deliver_at = Some(e.created_at + chrono::Duration::minutes(5));
    let Ingested::Created(e, ds) = ingest(store, e).await.unwrap() else {
        panic!("created");
    };
    assert_eq!(ds[0].next_attempt_at, e.deliver_at);
    assert_eq!(ds[0].max_attempts, 4);
    assert_eq!(
        store.get_event(&e.tenant_id, &e.id).await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(store.next_due(far()).await.unwrap(), e.deliver_at);
    // A later millisecond: ids of one millisecond need not sort in order of creation.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let e2 = match ingest(store, event(&made[0].id, "user.left", None))
        .await
        .unwrap()
    {
        Ingested::Created(e, _) => e,
        Ingested::Existing(..) => panic!("created"),
    };
    let listed = store
        .list_events(
            &e.tenant_id,
            &EventFilter {
                page: page(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed, vec![e2.clone(), e.clone()]);
    let typed = store
        .list_events(
            &e.tenant_id,
            &EventFilter {
                event_type: Some("user.joined".into()),
                since: Some(e.created_at),
                until: None,
                page: page(10),
            },
        )
        .await
        .unwrap();
    assert_eq!(typed, vec![e.clone()]);
    // The time window is half-open: `since` includes, `until` excludes.
    let window = |since, until| EventFilter {
        since,
        until,
        page: page(10),
        ..Default::default()
    };
    for (since, until, want) in [
        (Some(e2.created_at), None, vec![e2.clone()]),
        (None, Some(e2.created_at), vec![e.clone()]),
        (Some(e.created_at), Some(e2.created_at), vec![e.clone()]),
        (
            Some(e2.created_at + chrono::Duration::milliseconds(1)),
            None,
            vec![],
        ),
    ] {
        let got = store
            .list_events(&e.tenant_id, &window(since, until))
            .await
            .unwrap();
        assert_eq!(got, want, "events since {since:?} until {until:?}");
    }
    let pending = store
        .list_deliveries(
            &e.tenant_id,
            &DeliveryFilter {
                status: Some(DeliveryStatus::Pending),
                endpoint_id: Some(ep.id.clone()),
                event_id: Some(e.id.clone()),
                page: page(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(pending, ds);
    for (since, until, want) in [
        (Some(e.created_at), None, ds.len()),
        (None, Some(e.created_at), 0),
        (
            None,
            Some(e.created_at + chrono::Duration::milliseconds(1)),
            ds.len(),
        ),
    ] {
        let got = store
            .list_deliveries(
                &e.tenant_id,
                &DeliveryFilter {
                    event_id: Some(e.id.clone()),
                    since,
                    until,
                    page: page(10),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            got.len(),
            want,
            "deliveries since {since:?} until {until:?}"
        );
    }

    // Retry only moves deliveries that are not pending.
    let now = domain::now();
    let same = store
        .retry_delivery(&e.tenant_id, &ds[0].id, now, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(same, ds[0]);
    assert!(store
        .retry_delivery(&e.tenant_id, "dlv_nope", now, 3)
        .await
        .unwrap()
        .is_none());

    // Deleting the endpoint cancels its pending deliveries; retry makes one due again.
    assert!(store.delete_endpoint(&ep.tenant_id, &ep.id).await.unwrap());
    assert!(!store.delete_endpoint(&ep.tenant_id, &ep.id).await.unwrap());
    let d = store
        .get_delivery(&e.tenant_id, &ds[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Cancelled);
    assert_eq!(d.next_attempt_at, None);
    assert_eq!(d.last_error.as_deref(), Some("endpoint deleted"));
    let retried = store
        .retry_delivery(&e.tenant_id, &d.id, now, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(retried.max_attempts, 3);
    assert_eq!(retried.next_attempt_at, Some(now));

    // Deleting the tenant takes everything with it.
    assert!(store.delete_tenant(&made[0].id).await.unwrap());
    assert!(!store.delete_tenant(&made[0].id).await.unwrap());
    assert!(store
        .get_event(&e.tenant_id, &e.id)
        .await
        .unwrap()
        .is_none());
    assert!(store
        .list_endpoints(&made[0].id, &page(100))
        .await
        .unwrap()
        .is_empty());
    let deliveries = DeliveryFilter {
        page: page(100),
        ..Default::default()
    };
    assert!(store
        .list_deliveries(&made[0].id, &deliveries)
        .await
        .unwrap()
        .is_empty());
    close(opened, pg).await;
}

async fn a_completion_with_a_lease_taken_over_leaves_the_delivery_to_its_new_owner(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ep = endpoint("default", &["user.*"]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    ingest(store, event("default", "user.joined", None))
        .await
        .unwrap();

    let t0 = domain::now();
    let first = store
        .claim(
            t0,
            t0 + chrono::Duration::milliseconds(1),
            "lse_old",
            10,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The first lease ran out: another dispatcher claims the delivery.
    let t1 = t0 + chrono::Duration::seconds(1);
    let second = store
        .claim(
            t1,
            t1 + chrono::Duration::seconds(90),
            "lse_new",
            10,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery.id, first[0].delivery.id);

    // The old holder finishes late: its attempt is recorded, the delivery is untouched.
    store
        .complete(
            &[completion(&first[0], DeliveryStatus::Delivered, "lse_old")],
            &Default::default(),
        )
        .await
        .unwrap();
    let d = store
        .get_delivery("default", &first[0].delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.next_attempt_at, Some(t1 + chrono::Duration::seconds(90)));
    let attempts = store.list_attempts(&d.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].response.as_deref(), Some("ok\u{FFFD}"));

    // The new holder moves it on; writing the same batch twice changes nothing more.
    let mut retry = completion(&second[0], DeliveryStatus::Pending, "lse_new");
    retry.attempt.error = Some("HTTP 500".into());
    retry.disable_endpoint = Some("410 Gone".into());
    store
        .complete(&[retry.clone()], &Default::default())
        .await
        .unwrap();
    store
        .complete(&[retry.clone()], &Default::default())
        .await
        .unwrap();
    let d = store.get_delivery("default", &d.id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(d.next_attempt_at, retry.next_attempt_at);
    assert_eq!(store.list_attempts(&d.id).await.unwrap().len(), 2);
    let ep = store
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!ep.enabled);
    assert_eq!(ep.disabled_reason.as_deref(), Some("410 Gone"));
    // Deliveries of a disabled endpoint are neither due nor claimable.
    assert_eq!(store.next_due(far()).await.unwrap(), None);
    let later = t1 + chrono::Duration::hours(1);
    assert!(store
        .claim(later, later, "lse_3", 10, &Default::default())
        .await
        .unwrap()
        .is_empty());
    close(opened, pg).await;
}

async fn ingest_is_idempotent_even_under_a_race(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ep = endpoint("default", &["user.joined"]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();

    let Ingested::Created(first, deliveries) =
        ingest(store, event("default", "user.joined", Some("k1")))
            .await
            .unwrap()
    else {
        panic!("first ingest must create");
    };
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].endpoint_id, ep.id);
    let Ingested::Existing(again, again_deliveries) =
        ingest(store, event("default", "user.joined", Some("k1")))
            .await
            .unwrap()
    else {
        panic!("same key must answer the first event");
    };
    assert_eq!(again, first);
    assert_eq!(again_deliveries, deliveries);
    // The same key in another tenant is another event.
    store
        .create_tenant(&Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            created_at: domain::now(),
        })
        .await
        .unwrap();
    assert!(matches!(
        ingest(store, event("acme", "user.joined", Some("k1"))).await,
        Ok(Ingested::Created(..))
    ));

    // Sixteen concurrent ingests with one key: one event.
    let results = futures::future::join_all(
        (0..16).map(|_| ingest(store, event("default", "user.joined", Some("race")))),
    )
    .await;
    let mut created = 0;
    let mut ids = HashSet::new();
    for r in results {
        match r.unwrap() {
            Ingested::Created(e, _) => {
                created += 1;
                ids.insert(e.id);
            }
            Ingested::Existing(e, ds) => {
                assert_eq!(ds.len(), 1);
                ids.insert(e.id);
            }
        }
    }
    assert_eq!((created, ids.len()), (1, 1));
    let events = EventFilter {
        page: page(100),
        ..Default::default()
    };
    let raced = store
        .list_events("default", &events)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.idempotency_key.as_deref() == Some("race"))
        .count();
    assert_eq!(raced, 1);

    // Refusals: unknown tenant, data failing the schema, unstorable text.
    assert!(matches!(
        ingest(store, event("nope", "user.joined", None)).await,
        Err(StoreError::UnknownTenant(t)) if t == "nope"
    ));
    store
        .create_event_type(&EventType {
            name: "user.left".into(),
            description: None,
            schema: Some(serde_json::json!({"type": "object", "required": ["user_id"]})),
            created_at: domain::now(),
        })
        .await
        .unwrap();
    let mut bad = event("default", "user.left", None);
    bad.data = serde_json::json!({"x": 1});
    assert!(matches!(
        store.ingest(bad, 15, Arc::new(NeedsUserId)).await,
        Err(StoreError::InvalidData(m)) if m.contains("user_id")
    ));
    // Event data is json (not jsonb): kept as posted, key order and NUL escapes included.
    let mut kept = event("default", "user.joined", None);
    kept.data = serde_json::json!({"z": 1, "a": "a\u{0}b"});
    let id = kept.id.clone();
    ingest(store, kept).await.unwrap();
    let back = store.get_event("default", &id).await.unwrap().unwrap();
    assert_eq!(back.data.to_string(), r#"{"z":1,"a":"a\u0000b"}"#);
    close(opened, pg).await;
}

async fn a_disabled_endpoints_backlog_waits_unscheduled_until_it_is_enabled(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let mut ep = endpoint("default", &[]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        let Ingested::Created(_, ds) = ingest(store, event("default", "a.b", None)).await.unwrap()
        else {
            panic!("created");
        };
        made.extend(ds.into_iter().map(|d| d.id));
    }
    ep.enabled = false;
    assert!(store.update_endpoint(&ep).await.unwrap());
    let now = domain::now();
    let claimed = store
        .claim(now, far(), "lse_1", 10, &Default::default())
        .await
        .unwrap();
    assert!(
        claimed.is_empty(),
        "a disabled endpoint's deliveries were claimed"
    );
    for id in &made {
        let d = store.get_delivery("default", id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Pending);
        // PostgreSQL's claim parks them out of its index range (a large disabled backlog
        // then costs its claims nothing); SQLite's claim passes over them where they are.
        if backend == Backend::Postgres {
            assert_eq!(d.next_attempt_at, None, "parked out of the claims' way");
        }
    }

    ep.enabled = true;
    ep.updated_at = domain::now();
    assert!(store.update_endpoint(&ep).await.unwrap());
    let now = domain::now();
    let claimed = store
        .claim(now, far(), "lse_2", 10, &Default::default())
        .await
        .unwrap();
    let mut got: Vec<String> = claimed.into_iter().map(|c| c.delivery.id).collect();
    got.sort();
    made.sort();
    assert_eq!(got, made, "enabled again: every waiting delivery is due");
    close(opened, pg).await;
}

/// Times far outside any real use are clamped alike by both stores (to what PostgreSQL's
/// `timestamptz` holds, about 4400 BC to AD 287000), not kept by one and refused by the
/// other.
async fn extreme_times_are_kept_alike(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ancient = DateTime::<Utc>::from_timestamp_millis(-300_000_000_000_000).unwrap();
    let mut e = event("default", "user.joined", None);
    e.created_at = ancient;
    let id = e.id.clone();
    ingest(store, e).await.unwrap();
    let back = store.get_event("default", &id).await.unwrap().unwrap();
    assert_eq!(back.created_at.timestamp_millis(), -200_000_000_000_000);
    close(opened, pg).await;
}

crate::both_stores!(
    extreme_times_are_kept_alike,
    every_method_answers_the_same,
    a_completion_with_a_lease_taken_over_leaves_the_delivery_to_its_new_owner,
    ingest_is_idempotent_even_under_a_race,
    a_disabled_endpoints_backlog_waits_unscheduled_until_it_is_enabled,
);
