//! The store conformance suite: the same calls and the same answers from every store. Each
//! test runs on SQLite and on PostgreSQL (`both_stores!`), through the `Store` trait only.

use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use hookrelay::{
    domain::{
        self, new_id, prefix, Attempt, AttemptOutcome, BreakerPolicy, BreakerState, Delivery,
        DeliveryStatus, Endpoint, Event, EventType, Rate, RatePeriod, Tenant,
    },
    store::{
        ops::{
            minute_of, AlertRecord, AuditEntry, AuditFilter, BatchStats, BreakerCounts,
            DispatcherBeat, EndpointHistory, EndpointMinute, FlaggedEndpoint, Inbox, InboxMessage,
            MinuteStats, PendingSummary, PortalLink, Source, SourceRejection, Verification,
        },
        Claimed, Completion, DataCheck, DeliveryFilter, EventFilter, Ingested, Page, ReplayFilter,
        Result, Store, StoreError, TokenRecord,
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

pub(crate) fn endpoint(tenant: &str, event_types: &[&str]) -> Endpoint {
    Endpoint {
        description: Some("test".into()),
        event_types: event_types.iter().map(|s| s.to_string()).collect(),
        headers: [("x-test".to_string(), "1".to_string())].into(),
        ..Endpoint::new(tenant, "https://example.com/hook", "whsec_dGVzdA==".into())
    }
}

pub(crate) fn event(tenant: &str, event_type: &str, key: Option<&str>) -> Event {
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
pub(crate) fn far() -> DateTime<Utc> {
    domain::now() + chrono::Duration::days(365)
}

pub(crate) async fn ingest(store: &dyn Store, e: Event) -> Result<Ingested> {
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

pub(crate) fn page(limit: u32) -> Page {
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
    // Its events are refused from now on, although the store has accepted some of them (and
    // may remember that the tenant existed); the events of the others still go in, in the
    // same batch or not.
    let (gone, kept) = tokio::join!(
        ingest(store, event(&made[0].id, "user.created", None)),
        ingest(store, event(&made[1].id, "user.created", None)),
    );
    assert!(
        matches!(&gone, Err(StoreError::UnknownTenant(t)) if *t == made[0].id),
        "{gone:?}"
    );
    assert!(matches!(kept, Ok(Ingested::Created(..))), "{kept:?}");
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
        // The claim parks them out of its index range: a large disabled backlog then
        // costs the claims nothing.
        assert_eq!(d.next_attempt_at, None, "parked out of the claims' way");
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

/// A breaker that one failure opens, for ten minutes (±20 %).
fn quick_breaker() -> BreakerPolicy {
    BreakerPolicy {
        threshold: 1,
        cooldown: Duration::from_secs(600),
        ..Default::default()
    }
}

/// Ingests `n` events of the `default` tenant at once; the ids of their deliveries.
async fn ingest_many(store: &dyn Store, n: usize) -> Vec<String> {
    let ingested = futures::future::join_all(
        (0..n).map(|_| async { ingest(store, event("default", "a.b", None)).await.unwrap() }),
    )
    .await;
    ingested
        .into_iter()
        .flat_map(|i| match i {
            Ingested::Created(_, ds) => ds.into_iter().map(|d| d.id).collect(),
            Ingested::Existing(..) => Vec::new(),
        })
        .collect()
}

/// Makes the one endpoint's first delivery fail under `policy`, which opens its breaker; the
/// id of that delivery.
async fn open_the_breaker(store: &dyn Store, policy: &BreakerPolicy) -> String {
    let first = ingest_many(store, 1).await;
    let claimed = claim_all(store, "lse_1").await;
    assert_eq!(claimed.len(), 1);
    let mut failed = completion(&claimed[0], DeliveryStatus::Pending, "lse_1");
    failed.attempt.outcome = AttemptOutcome::Retry;
    failed.attempt.error = Some("HTTP 503".into());
    store.complete(&[failed], policy).await.unwrap();
    first[0].clone()
}

/// When the endpoint's open breaker lets a probe through.
async fn breaker_until(store: &dyn Store, endpoint_id: &str) -> DateTime<Utc> {
    store
        .get_endpoint("default", endpoint_id)
        .await
        .unwrap()
        .unwrap()
        .breaker
        .open_until
        .expect("the breaker is open")
}

/// An open breaker's backlog waits unscheduled: written once when it falls due, not again
/// at each failed probe (that rewrote the whole backlog on every cool-down), read as due at
/// the probe time, waking the dispatcher then, and due at once when a probe succeeds.
async fn an_open_breakers_backlog_waits_unscheduled_until_a_probe_succeeds(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ep = endpoint("default", &[]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    let policy = quick_breaker();
    let first = open_the_breaker(store, &policy).await;
    let until_1 = breaker_until(store, &ep.id).await;
    let held = ingest_many(store, 3).await;

    // Due now, but held: nothing is claimed, and the backlog waits unscheduled, read as due
    // at the probe time; the dispatcher is woken then.
    let now = domain::now() + chrono::Duration::seconds(1);
    let claimed = claim_at(store, now, far(), "lse_2").await;
    assert!(claimed.is_empty(), "an open breaker's delivery was claimed");
    for id in &held {
        let d = store.get_delivery("default", id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.next_attempt_at, Some(until_1), "due at the probe time");
    }
    assert_eq!(store.next_due(far()).await.unwrap(), Some(until_1));

    // The cool-down ends: one probe, alone; it fails, and the backlog stays as it was,
    // now read as due at the next probe time.
    let at = until_1 + chrono::Duration::milliseconds(1);
    let probe = claim_at(store, at, at + chrono::Duration::seconds(60), "lse_3").await;
    assert_eq!(probe.len(), 1, "one probe");
    let mut failed = completion(&probe[0], DeliveryStatus::Pending, "lse_3");
    failed.attempt.outcome = AttemptOutcome::Retry;
    store.complete(&[failed], &policy).await.unwrap();
    let until_2 = breaker_until(store, &ep.id).await;
    for id in held.iter().filter(|id| **id != probe[0].delivery.id) {
        let d = store.get_delivery("default", id).await.unwrap().unwrap();
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(
            d.next_attempt_at,
            Some(until_2),
            "the held backlog follows the breaker"
        );
    }
    let waiting: Vec<&String> = std::iter::once(&first).chain(&held).collect();

    // The next probe succeeds: the breaker closes and everything left is due at once,
    // the retries it deferred included.
    // (A second later than the last probe check at least: the claims look for cooled-down
    // breakers every 250 ms of the time they are given.)
    let at = until_2.max(until_1) + chrono::Duration::seconds(1);
    let probe = claim_at(store, at, at + chrono::Duration::seconds(60), "lse_4").await;
    assert_eq!(probe.len(), 1, "one probe");
    store
        .complete(
            &[completion(&probe[0], DeliveryStatus::Delivered, "lse_4")],
            &policy,
        )
        .await
        .unwrap();
    let rest: HashSet<String> = claim_all(store, "lse_5")
        .await
        .into_iter()
        .map(|c| c.delivery.id)
        .collect();
    let want: HashSet<String> = waiting
        .into_iter()
        .filter(|id| **id != probe[0].delivery.id)
        .cloned()
        .collect();
    assert_eq!(
        rest, want,
        "the breaker closed: every waiting delivery is due"
    );
    close(opened, pg).await;
}

/// A delivery whose lease ran out while its endpoint's breaker opened is parked with its
/// lease: the attempt's late success still lands, and it is not sent again.
async fn a_late_success_lands_on_a_parked_delivery(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ep = endpoint("default", &[]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    ingest_many(store, 2).await;
    let t0 = domain::now();
    let claimed = claim_at(store, t0, t0 + chrono::Duration::milliseconds(1), "lse_1").await;
    assert_eq!(claimed.len(), 2);
    let mut failed = completion(&claimed[0], DeliveryStatus::Pending, "lse_1");
    failed.attempt.outcome = AttemptOutcome::Retry;
    store.complete(&[failed], &quick_breaker()).await.unwrap();
    // The other's lease has run out: the breaker's hold parks it.
    let t1 = t0 + chrono::Duration::seconds(1);
    assert!(
        claim_at(store, t1, t1 + chrono::Duration::seconds(60), "lse_2")
            .await
            .is_empty()
    );
    let late = completion(&claimed[1], DeliveryStatus::Delivered, "lse_1");
    store.complete(&[late], &quick_breaker()).await.unwrap();
    let d = store
        .get_delivery("default", &claimed[1].delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.status,
        DeliveryStatus::Delivered,
        "the late success was lost"
    );
    close(opened, pg).await;
}

/// An open breaker whose only waiting delivery is behind its key's blocked head has nothing
/// to probe: it stays open, and nothing wakes the dispatcher for it.
async fn an_open_breaker_with_only_a_blocked_key_waiting_is_not_probed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let mut ep = endpoint("default", &[]);
    let spec = serde_json::from_value(serde_json::json!({"ordering": {"key": "actor"}})).unwrap();
    ep.routing = Arc::new(domain::routing::Routing::compile(spec).unwrap());
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    ingest_many(store, 1).await;
    let head = claim_all(store, "lse_1").await;
    assert_eq!(head.len(), 1);
    // The key's head fails for good: that blocks its key, and opens the breaker.
    let mut failed = completion(&head[0], DeliveryStatus::Failed, "lse_1");
    failed.ordered = true;
    failed.attempt.outcome = AttemptOutcome::Failed;
    failed.next_attempt_at = None;
    store.complete(&[failed], &quick_breaker()).await.unwrap();
    let behind = ingest_many(store, 1).await;
    let at = breaker_until(store, &ep.id).await + chrono::Duration::milliseconds(1);
    let claimed = claim_at(store, at, at + chrono::Duration::seconds(60), "lse_2").await;
    assert!(claimed.is_empty(), "a blocked key's delivery was claimed");
    let breaker = store
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .unwrap()
        .breaker;
    assert_eq!(
        breaker.state,
        BreakerState::Open,
        "half-open with nothing to probe"
    );
    assert_eq!(store.next_due(far()).await.unwrap(), None);
    let d = store
        .get_delivery("default", &behind[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, DeliveryStatus::Pending);
    close(opened, pg).await;
}

/// A backlog that an open breaker held comes back a window at a time once the breaker has
/// closed, so that it does not all go before the newer deliveries of the tenant's other
/// endpoints; the claims release the next window as the last one is taken.
async fn a_recovered_backlog_comes_back_a_window_at_a_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let ep = endpoint("default", &[]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    let policy = quick_breaker();
    let window = usize::try_from(hookrelay::store::RECOVERY_WINDOW).unwrap();
    open_the_breaker(store, &policy).await;
    let held = window + 100;
    let made = ingest_many(store, held).await;
    assert_eq!(made.len(), held);
    let now = domain::now() + chrono::Duration::seconds(1);
    let none = claim_at(store, now, far(), "lse_2").await;
    assert!(none.is_empty(), "held by the open breaker");

    let at = breaker_until(store, &ep.id).await + chrono::Duration::milliseconds(1);
    let lease = at + chrono::Duration::seconds(60);
    let probe = claim_at(store, at, lease, "lse_3").await;
    assert_eq!(probe.len(), 1, "one probe");
    store
        .complete(
            &[completion(&probe[0], DeliveryStatus::Delivered, "lse_3")],
            &policy,
        )
        .await
        .unwrap();
    // The first window (and the retry the breaker deferred, unless it was the probe).
    let now = domain::now();
    let first = claim_at(store, now, far(), "lse_4").await;
    assert!(
        (window..=window + 1).contains(&first.len()),
        "one window at first, not the whole backlog: {}",
        first.len()
    );
    // Editing the endpoint releases nothing parked (only enabling a disabled one does).
    let mut edited = store
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .unwrap();
    edited.description = Some("edited".into());
    edited.updated_at = domain::now();
    assert!(store.update_endpoint(&edited).await.unwrap());
    let taken: HashSet<&String> = first.iter().map(|c| &c.delivery.id).collect();
    for id in made.iter().filter(|id| !taken.contains(id)) {
        let d = store.get_delivery("default", id).await.unwrap().unwrap();
        assert_eq!(
            d.next_attempt_at, None,
            "an edit released the parked backlog"
        );
    }
    // The rest is still parked: the dispatcher is told to look again soon, not at its poll
    // interval (the window's leases are all that is scheduled).
    let soon = domain::now() + chrono::Duration::seconds(1);
    assert!(
        store
            .next_due(far())
            .await
            .unwrap()
            .is_some_and(|t| t <= soon),
        "a parked backlog is looked for again soon"
    );
    // The window taken, the next claims' breaker check releases the rest.
    let later = now + chrono::Duration::seconds(1);
    let rest = claim_at(store, later, far(), "lse_5").await;
    assert_eq!(
        first.len() + rest.len(),
        held,
        "every delivery, the probe's aside"
    );
    // Nothing parked is left: the dispatcher waits for the leases again.
    let last = later + chrono::Duration::seconds(1);
    assert!(claim_at(store, last, far(), "lse_6").await.is_empty());
    assert!(store
        .next_due(far())
        .await
        .unwrap()
        .is_some_and(|t| t > domain::now() + chrono::Duration::days(1)));
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
    an_open_breakers_backlog_waits_unscheduled_until_a_probe_succeeds,
    a_recovered_backlog_comes_back_a_window_at_a_time,
    an_open_breaker_with_only_a_blocked_key_waiting_is_not_probed,
    a_late_success_lands_on_a_parked_delivery,
    tokens_are_listed_newest_first_and_revoked_once_within_their_tenant,
    inboxes_are_found_by_tenant_and_token_hash_and_keep_their_newest_messages,
    the_audit_trail_filters_and_pages_newest_first,
    sources_and_their_rejections_are_scoped_paged_and_kept_newest,
    an_alert_opens_once_is_sent_resolves_once_and_is_forgotten,
    dispatchers_heartbeats_and_statistics_add_up_alike,
    import_and_leased_inserts_write_once_and_release_hands_back_only_its_lease,
    replay_moves_finished_deliveries_once_and_reserve_sends_shares_one_bucket,
    retention_prunes_old_events_and_operations_data_within_its_limit,
    listen_wakes_the_dispatcher_when_a_write_makes_deliveries_due,
    credentials_are_sealed_inside_the_store_and_resealed_once,
    portal_links_are_found_by_hash_paged_revoked_once_and_pruned,
);

/// Creates the tenant `id` (each test has a database of its own).
async fn tenant(store: &dyn Store, id: &str) {
    store
        .create_tenant(&Tenant {
            id: id.into(),
            name: id.into(),
            created_at: domain::now(),
        })
        .await
        .unwrap();
}

/// `t` plus `n` milliseconds: ids made at distinct milliseconds sort in that order.
fn ms_after(t: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    t + chrono::Duration::milliseconds(n)
}

fn after(id: &str, limit: u32) -> Page {
    Page {
        after_id: Some(id.to_owned()),
        limit,
    }
}

async fn tokens_are_listed_newest_first_and_revoked_once_within_their_tenant(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let t0 = domain::now();
    let token = |i: i64, tenant_id: Option<&str>| TokenRecord {
        id: domain::new_id_at(prefix::TOKEN, ms_after(t0, i)),
        tenant_id: tenant_id.map(str::to_owned),
        hash: format!("{i:064x}"),
        created_at: ms_after(t0, i),
    };
    let acme: Vec<TokenRecord> = (0..3).map(|i| token(i, Some("acme"))).collect();
    let admins = [token(10, None), token(11, None)];
    let default = token(20, Some("default"));
    for t in acme.iter().chain(&admins).chain([&default]) {
        store.create_token(t).await.unwrap();
    }

    // A tenant's tokens only, newest first; never the admin tokens.
    let newest_first: Vec<TokenRecord> = acme.iter().rev().cloned().collect();
    assert_eq!(store.list_tokens("acme").await.unwrap(), newest_first);
    assert_eq!(store.list_tokens("default").await.unwrap(), vec![default]);
    assert!(store.list_tokens("nope").await.unwrap().is_empty());
    assert!(store.list_tokens("ac\0me").await.unwrap().is_empty());

    // Revoked within its tenant only, once.
    assert!(!store.delete_token("default", &acme[0].id).await.unwrap());
    assert!(!store.delete_token("acme", "tok\0x").await.unwrap());
    assert!(!store.delete_token("ac\0me", &acme[0].id).await.unwrap());
    assert!(store.delete_token("acme", &acme[0].id).await.unwrap());
    assert!(!store.delete_token("acme", &acme[0].id).await.unwrap());
    assert_eq!(store.find_token(&acme[0].hash).await.unwrap(), None);
    assert_eq!(
        store.find_token(&acme[1].hash).await.unwrap(),
        Some(acme[1].clone())
    );
    assert_eq!(store.find_token("ab\0cd").await.unwrap(), None);
    // An admin token is no tenant's: a tenant cannot revoke it.
    assert!(!store.delete_token("acme", &admins[0].id).await.unwrap());

    // Every admin token goes at once, and only those; counted.
    assert!(store.has_admin_token().await.unwrap());
    assert_eq!(store.delete_admin_tokens().await.unwrap(), 2);
    assert_eq!(store.delete_admin_tokens().await.unwrap(), 0);
    assert!(!store.has_admin_token().await.unwrap());
    assert_eq!(store.find_token(&admins[1].hash).await.unwrap(), None);
    assert_eq!(
        store.list_tokens("acme").await.unwrap(),
        vec![acme[2].clone(), acme[1].clone()]
    );
    close(opened, pg).await;
}

fn inbox(tenant_id: &str, at: DateTime<Utc>, token: &str) -> Inbox {
    Inbox {
        id: domain::new_id_at("inb", at),
        tenant_id: tenant_id.into(),
        token: token.into(),
        token_hash: Inbox::hash_token(token),
        secret: Some("whsec_c2VjcmV0".into()),
        description: Some(format!("inbox {token}")),
        created_at: at,
    }
}

fn message(inbox_id: &str, at: DateTime<Utc>, n: u32) -> InboxMessage {
    InboxMessage {
        id: domain::new_id_at("msg", at),
        inbox_id: inbox_id.into(),
        received_at: at,
        method: "POST".into(),
        headers: [
            ("content-type".to_string(), "application/json".to_string()),
            ("webhook-id".to_string(), format!("msg_{n}")),
        ]
        .into(),
        body: format!("{{\"n\": {n}}}"),
        truncated: n % 2 == 1,
        verification: if n.is_multiple_of(2) {
            Verification::Valid
        } else {
            Verification::Invalid
        },
        verify_error: (n % 2 == 1).then(|| "no matching signature".to_string()),
    }
}

async fn inboxes_are_found_by_tenant_and_token_hash_and_keep_their_newest_messages(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let t0 = domain::now();
    let a1 = inbox("acme", t0, "tok-a1");
    let mut a2 = inbox("acme", ms_after(t0, 1), "tok-a2");
    a2.secret = None;
    a2.description = None;
    let d1 = inbox("default", ms_after(t0, 2), "tok-d1");
    for i in [&a1, &a2, &d1] {
        store.create_inbox(i).await.unwrap();
    }

    // Found within its tenant, or by its token's hash; nothing else finds it.
    assert_eq!(
        store.get_inbox("acme", &a1.id).await.unwrap(),
        Some(a1.clone())
    );
    assert_eq!(store.get_inbox("default", &a1.id).await.unwrap(), None);
    assert_eq!(store.get_inbox("acme", "inb\0x").await.unwrap(), None);
    assert_eq!(store.get_inbox("ac\0me", &a1.id).await.unwrap(), None);
    assert_eq!(
        store.find_inbox(&a2.token_hash).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        store
            .find_inbox(&Inbox::hash_token("tok-none"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.find_inbox("ab\0cd").await.unwrap(), None);

    // Listed per tenant, newest first, in pages.
    assert_eq!(
        store.list_inboxes("acme", &page(1)).await.unwrap(),
        vec![a2.clone()]
    );
    assert_eq!(
        store
            .list_inboxes("acme", &after(&a2.id, 10))
            .await
            .unwrap(),
        vec![a1.clone()]
    );
    assert_eq!(
        store.list_inboxes("default", &page(10)).await.unwrap(),
        vec![d1.clone()]
    );
    assert!(store
        .list_inboxes("ac\0me", &page(10))
        .await
        .unwrap()
        .is_empty());

    // New credentials replace the stored ones; the hash (the lookup key) stays.
    assert!(store
        .set_inbox_credentials(&a1.id, "sealed-token", Some("sealed-secret"))
        .await
        .unwrap());
    let changed = Inbox {
        token: "sealed-token".into(),
        secret: Some("sealed-secret".into()),
        ..a1.clone()
    };
    assert_eq!(
        store.get_inbox("acme", &a1.id).await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        store.find_inbox(&a1.token_hash).await.unwrap(),
        Some(changed)
    );
    assert!(store
        .set_inbox_credentials(&a1.id, "tok-a1", None)
        .await
        .unwrap());
    let a1 = Inbox { secret: None, ..a1 };
    assert_eq!(
        store.get_inbox("acme", &a1.id).await.unwrap(),
        Some(a1.clone())
    );
    assert!(!store
        .set_inbox_credentials("inb_nope", "t", None)
        .await
        .unwrap());
    assert!(!store
        .set_inbox_credentials("inb\0x", "t", None)
        .await
        .unwrap());

    // Messages: newest first, in pages, only the `keep` newest of each inbox.
    let mut sent = Vec::new();
    for n in 0..4 {
        let m = message(&a1.id, ms_after(t0, 10 + i64::from(n)), n);
        store.add_inbox_message(&m, 3).await.unwrap();
        sent.push(m);
    }
    assert!(
        store
            .add_inbox_message(&message("inb_nope", t0, 0), 3)
            .await
            .is_err(),
        "no such inbox"
    );
    let other = message(&d1.id, ms_after(t0, 20), 9);
    store.add_inbox_message(&other, 3).await.unwrap();
    let kept = store.list_inbox_messages(&a1.id, &page(10)).await.unwrap();
    assert_eq!(
        kept,
        vec![sent[3].clone(), sent[2].clone(), sent[1].clone()],
        "the 3 newest"
    );
    assert_eq!(
        store.list_inbox_messages(&a1.id, &page(2)).await.unwrap(),
        kept[..2]
    );
    assert_eq!(
        store
            .list_inbox_messages(&a1.id, &after(&kept[1].id, 10))
            .await
            .unwrap(),
        kept[2..]
    );
    assert_eq!(
        store.list_inbox_messages(&d1.id, &page(10)).await.unwrap(),
        vec![other]
    );
    assert!(store
        .list_inbox_messages("inb\0x", &page(10))
        .await
        .unwrap()
        .is_empty());
    // Keeping one keeps the message just added, and only it.
    let last = message(&a1.id, ms_after(t0, 30), 4);
    store.add_inbox_message(&last, 1).await.unwrap();
    assert_eq!(
        store.list_inbox_messages(&a1.id, &page(10)).await.unwrap(),
        vec![last]
    );

    // Deleted within its tenant only, once, with its messages.
    assert!(!store.delete_inbox("default", &a1.id).await.unwrap());
    assert!(!store.delete_inbox("acme", "inb\0x").await.unwrap());
    assert!(!store.delete_inbox("ac\0me", &a1.id).await.unwrap());
    assert!(store.delete_inbox("acme", &a1.id).await.unwrap());
    assert!(!store.delete_inbox("acme", &a1.id).await.unwrap());
    assert_eq!(store.get_inbox("acme", &a1.id).await.unwrap(), None);
    assert_eq!(store.find_inbox(&a1.token_hash).await.unwrap(), None);
    assert!(store
        .list_inbox_messages(&a1.id, &page(10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.list_inboxes("acme", &page(10)).await.unwrap(),
        vec![a2]
    );
    close(opened, pg).await;
}

fn audit(
    tenant_id: Option<&str>,
    at: DateTime<Utc>,
    actor: &str,
    action: &str,
    target: &str,
) -> AuditEntry {
    AuditEntry {
        id: domain::new_id_at("aud", at),
        tenant_id: tenant_id.map(str::to_owned),
        actor: actor.into(),
        action: action.into(),
        target: Some(target.into()),
        changes: serde_json::json!({"url": {"from": "https://a.example", "to": "https://b.example"}, "n": 1}),
        created_at: at,
    }
}

async fn the_audit_trail_filters_and_pages_newest_first(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let t0 = domain::now();
    let mut types = audit(None, t0, "admin", "event_type.created", "user.joined");
    types.changes = serde_json::json!({});
    let entries = vec![
        types,
        audit(
            Some("acme"),
            ms_after(t0, 1),
            "tok_1",
            "endpoint.created",
            "ep_1",
        ),
        audit(
            Some("acme"),
            ms_after(t0, 2),
            "tok_1",
            "endpoint.updated",
            "ep_1",
        ),
        audit(
            Some("acme"),
            ms_after(t0, 3),
            "system",
            "endpoint.disabled",
            "ep_2",
        ),
        audit(
            Some("default"),
            ms_after(t0, 4),
            "admin",
            "endpoint.updated",
            "ep_3",
        ),
    ];
    for e in &entries {
        store.add_audit(e).await.unwrap();
    }
    let list = |f: AuditFilter| async move { store.list_audit(&f).await.unwrap() };
    let pick = |ix: &[usize]| ix.iter().map(|i| entries[*i].clone()).collect::<Vec<_>>();
    let all = AuditFilter {
        page: page(100),
        ..Default::default()
    };
    assert_eq!(list(all.clone()).await, pick(&[4, 3, 2, 1, 0]));
    // In pages, with the last id as cursor.
    let first = list(AuditFilter {
        page: page(2),
        ..all.clone()
    })
    .await;
    assert_eq!(first, pick(&[4, 3]));
    assert_eq!(
        list(AuditFilter {
            page: after(&first[1].id, 2),
            ..all.clone()
        })
        .await,
        pick(&[2, 1])
    );
    // Each filter, and all of them together.
    let acme = AuditFilter {
        tenant_id: Some("acme".into()),
        ..all.clone()
    };
    assert_eq!(list(acme.clone()).await, pick(&[3, 2, 1]));
    assert_eq!(
        list(AuditFilter {
            action: Some("endpoint.updated".into()),
            ..all.clone()
        })
        .await,
        pick(&[4, 2])
    );
    assert_eq!(
        list(AuditFilter {
            actor: Some("admin".into()),
            ..all.clone()
        })
        .await,
        pick(&[4, 0])
    );
    assert_eq!(
        list(AuditFilter {
            target: Some("ep_1".into()),
            ..acme.clone()
        })
        .await,
        pick(&[2, 1])
    );
    // The time window is half-open: `since` includes, `until` excludes.
    assert_eq!(
        list(AuditFilter {
            since: Some(ms_after(t0, 1)),
            until: Some(ms_after(t0, 3)),
            ..all.clone()
        })
        .await,
        pick(&[2, 1])
    );
    assert!(list(AuditFilter {
        since: Some(ms_after(t0, 5)),
        ..all.clone()
    })
    .await
    .is_empty());
    // Unknown or unstorable keys find nothing.
    for bad in [
        AuditFilter {
            tenant_id: Some("nope".into()),
            ..all.clone()
        },
        AuditFilter {
            tenant_id: Some("ac\0me".into()),
            ..all.clone()
        },
        AuditFilter {
            action: Some("endpoint.\0".into()),
            ..all.clone()
        },
        AuditFilter {
            actor: Some("tok\0".into()),
            ..all.clone()
        },
        AuditFilter {
            target: Some("ep\0_1".into()),
            ..all.clone()
        },
    ] {
        assert!(list(bad.clone()).await.is_empty(), "{bad:?}");
    }
    close(opened, pg).await;
}

fn source(tenant_id: &str, at: DateTime<Utc>) -> Source {
    Source {
        id: domain::new_id_at("src", at),
        tenant_id: tenant_id.into(),
        url: "redis://127.0.0.1:6379/0?stream=jobs".into(),
        description: Some("jobs".into()),
        created_at: at,
    }
}

fn rejection(source_id: &str, at: DateTime<Utc>, n: u32) -> SourceRejection {
    SourceRejection {
        id: domain::new_id_at("rej", at),
        source_id: source_id.into(),
        message_id: format!("1700000000000-{n}"),
        reason: "data is not JSON".into(),
        body: format!("not json {n}"),
        truncated: n.is_multiple_of(2),
        received_at: at,
    }
}

async fn sources_and_their_rejections_are_scoped_paged_and_kept_newest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let t0 = domain::now();
    let s1 = source("acme", t0);
    let mut s2 = source("acme", ms_after(t0, 1));
    s2.description = None;
    let s3 = source("default", ms_after(t0, 2));
    for s in [&s1, &s2, &s3] {
        store.create_source(s).await.unwrap();
    }

    assert_eq!(
        store.get_source("acme", &s1.id).await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(store.get_source("default", &s1.id).await.unwrap(), None);
    assert_eq!(store.get_source("acme", "src\0x").await.unwrap(), None);
    assert_eq!(store.get_source("ac\0me", &s1.id).await.unwrap(), None);
    // One tenant's, or every tenant's; newest first, in pages.
    assert_eq!(
        store.list_sources(Some("acme"), &page(10)).await.unwrap(),
        vec![s2.clone(), s1.clone()]
    );
    assert_eq!(
        store.list_sources(None, &page(10)).await.unwrap(),
        vec![s3.clone(), s2.clone(), s1.clone()]
    );
    assert_eq!(
        store.list_sources(None, &page(1)).await.unwrap(),
        vec![s3.clone()]
    );
    assert_eq!(
        store.list_sources(None, &after(&s3.id, 1)).await.unwrap(),
        vec![s2.clone()]
    );
    assert!(store
        .list_sources(Some("nope"), &page(10))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list_sources(Some("ac\0me"), &page(10))
        .await
        .unwrap()
        .is_empty());

    // Rejections: newest first, in pages, only the `keep` newest of each source.
    let mut made = Vec::new();
    for n in 0..4 {
        let r = rejection(&s1.id, ms_after(t0, 10 + i64::from(n)), n);
        store.add_source_rejection(&r, 3).await.unwrap();
        made.push(r);
    }
    assert!(
        store
            .add_source_rejection(&rejection("src_nope", t0, 0), 3)
            .await
            .is_err(),
        "no such source"
    );
    let other = rejection(&s3.id, ms_after(t0, 20), 9);
    store.add_source_rejection(&other, 3).await.unwrap();
    let kept = store
        .list_source_rejections(&s1.id, &page(10))
        .await
        .unwrap();
    assert_eq!(
        kept,
        vec![made[3].clone(), made[2].clone(), made[1].clone()],
        "the 3 newest"
    );
    assert_eq!(
        store
            .list_source_rejections(&s1.id, &after(&kept[0].id, 1))
            .await
            .unwrap(),
        kept[1..2]
    );
    assert_eq!(
        store
            .list_source_rejections(&s3.id, &page(10))
            .await
            .unwrap(),
        vec![other]
    );
    assert!(store
        .list_source_rejections("src\0x", &page(10))
        .await
        .unwrap()
        .is_empty());
    let last = rejection(&s1.id, ms_after(t0, 30), 4);
    store.add_source_rejection(&last, 1).await.unwrap();
    assert_eq!(
        store
            .list_source_rejections(&s1.id, &page(10))
            .await
            .unwrap(),
        vec![last],
        "keeping one keeps the rejection just added"
    );

    assert!(store.source_positions("src\0x").await.unwrap().is_empty());

    // A deleted source takes its rejections with it.
    assert!(!store.delete_source("default", &s1.id).await.unwrap());
    assert!(store.delete_source("acme", &s1.id).await.unwrap());
    assert!(store
        .list_source_rejections(&s1.id, &page(10))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.get_source("acme", &s1.id).await.unwrap(), None);
    close(opened, pg).await;
}

fn alert(rule: &str, subject: &str, at: DateTime<Utc>) -> AlertRecord {
    AlertRecord {
        rule: rule.into(),
        subject: subject.into(),
        episode: domain::new_id_at("alr", at),
        message: format!("{rule} on {subject}"),
        details: serde_json::json!({"rate": 0.5, "window": "5m"}),
        fired_at: at,
        fired_sent: false,
        resolved_at: None,
    }
}

async fn an_alert_opens_once_is_sent_resolves_once_and_is_forgotten(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let t0 = domain::now();
    assert!(store.list_alerts().await.unwrap().is_empty());
    let mut rate = alert("failure_rate", "global", ms_after(t0, 5));
    let stalled = alert("dispatcher_stalled", "dsp_1", t0);
    assert!(store.open_alert(&rate).await.unwrap());
    assert!(store.open_alert(&stalled).await.unwrap());
    // One per rule and subject: another process's firing of the same alert is refused.
    let again = alert("failure_rate", "global", ms_after(t0, 9));
    assert!(!store.open_alert(&again).await.unwrap());
    // Oldest firing first.
    assert_eq!(
        store.list_alerts().await.unwrap(),
        vec![stalled.clone(), rate.clone()]
    );

    // Marked sent only for its own episode.
    store
        .alert_sent("failure_rate", "global", &again.episode, false)
        .await
        .unwrap();
    assert!(!store.list_alerts().await.unwrap()[1].fired_sent);
    store
        .alert_sent("failure_rate", "global", &rate.episode, false)
        .await
        .unwrap();
    rate.fired_sent = true;
    assert_eq!(store.list_alerts().await.unwrap()[1], rate);

    // Resolved once: a later resolution keeps the first time; another episode's changes
    // nothing.
    let r1 = ms_after(t0, 100);
    store
        .resolve_alert("failure_rate", "global", &again.episode, r1)
        .await
        .unwrap();
    assert_eq!(store.list_alerts().await.unwrap()[1].resolved_at, None);
    store
        .resolve_alert("failure_rate", "global", &rate.episode, r1)
        .await
        .unwrap();
    store
        .resolve_alert("failure_rate", "global", &rate.episode, ms_after(t0, 200))
        .await
        .unwrap();
    rate.resolved_at = Some(r1);
    assert_eq!(store.list_alerts().await.unwrap()[1], rate);
    // Still there until its "resolved" message is sent, so a new firing waits for that.
    assert!(!store.open_alert(&again).await.unwrap());

    // Unknown or unstorable keys change nothing and fail nothing.
    for (rule, subject) in [("failure_rate", "glo\0bal"), ("fail\0", "global")] {
        store
            .alert_sent(rule, subject, &rate.episode, true)
            .await
            .unwrap();
        store
            .resolve_alert(rule, subject, &rate.episode, r1)
            .await
            .unwrap();
    }
    store
        .alert_sent("failure_rate", "global", "alr\0x", true)
        .await
        .unwrap();
    assert_eq!(store.list_alerts().await.unwrap().len(), 2);

    // The "resolved" message sent: forgotten, and the alert may fire again.
    store
        .alert_sent("failure_rate", "global", &rate.episode, true)
        .await
        .unwrap();
    assert_eq!(store.list_alerts().await.unwrap(), vec![stalled.clone()]);
    assert!(store.open_alert(&again).await.unwrap());
    assert_eq!(store.list_alerts().await.unwrap(), vec![stalled, again]);
    close(opened, pg).await;
}

/// Claims every delivery due now under `lease`.
/// Claims what is due at `at`, leased until `until`.
async fn claim_at(
    store: &dyn Store,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
    lease: &str,
) -> Vec<Claimed> {
    store
        .claim(at, until, lease, 5000, &Default::default())
        .await
        .unwrap()
}

async fn claim_all(store: &dyn Store, lease: &str) -> Vec<Claimed> {
    let now = domain::now();
    store
        .claim(
            now,
            now + chrono::Duration::seconds(60),
            lease,
            100,
            &Default::default(),
        )
        .await
        .unwrap()
}

async fn dispatchers_heartbeats_and_statistics_add_up_alike(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let t0 = domain::now();
    let ago = |minutes: i64| t0 - chrono::Duration::minutes(minutes);

    // Heartbeats: inserted once, then moved on; a stopped dispatcher is listed while its
    // last heartbeat is recent, a running one always.
    let beat = |id: &str, started: DateTime<Utc>, last: DateTime<Utc>, stopped| DispatcherBeat {
        id: id.into(),
        hostname: format!("host-{id}"),
        pid: 42,
        started_at: started,
        last_heartbeat: last,
        stopped_at: stopped,
    };
    let gone = beat("dsp_gone", ago(180), ago(120), Some(ago(120)));
    let mut running = beat("dsp_running", ago(90), ago(90), None);
    let fresh = beat("dsp_fresh", t0, t0, None);
    for b in [&gone, &running, &fresh] {
        store.heartbeat(b).await.unwrap();
    }
    running.last_heartbeat = ago(1);
    store.heartbeat(&running).await.unwrap();
    assert_eq!(
        store.list_dispatchers(ago(30)).await.unwrap(),
        vec![running.clone(), fresh.clone()],
        "oldest start first"
    );
    assert_eq!(
        store.list_dispatchers(ago(600)).await.unwrap(),
        vec![gone.clone(), running.clone(), fresh.clone()]
    );
    running.stopped_at = Some(t0);
    running.last_heartbeat = t0;
    store.heartbeat(&running).await.unwrap();
    assert_eq!(
        store.list_dispatchers(ago(30)).await.unwrap(),
        vec![running.clone(), fresh.clone()]
    );
    assert_eq!(
        store
            .list_dispatchers(t0 + chrono::Duration::minutes(1))
            .await
            .unwrap(),
        vec![fresh.clone()],
        "stopped and silent since"
    );

    // Nothing pending, no breaker flagged.
    assert_eq!(
        store.pending_summary().await.unwrap(),
        PendingSummary::default()
    );
    assert_eq!(
        store.breaker_counts().await.unwrap(),
        BreakerCounts::default()
    );
    assert!(store.flagged_endpoints(10).await.unwrap().is_empty());

    let ok = endpoint("default", &["ok.*"]);
    let failing = endpoint("default", &["fail.*"]);
    let mut off = endpoint("default", &["off.*"]);
    off.enabled = false;
    off.disabled_reason = Some("manual".into());
    for ep in [&ok, &failing, &off] {
        store.create_endpoint(ep, u32::MAX).await.unwrap();
    }
    let mut first = event("default", "ok.a", None);
    first.created_at = ms_after(first.created_at, -5);
    first.id = domain::new_id_at(prefix::EVENT, first.created_at);
    ingest(store, first.clone()).await.unwrap();
    for t in ["ok.b", "fail.a"] {
        ingest(store, event("default", t, None)).await.unwrap();
    }
    assert_eq!(
        store.pending_summary().await.unwrap(),
        PendingSummary {
            count: 3,
            oldest_created_at: Some(first.created_at),
        }
    );

    // Two dispatchers complete with statistics: per-minute rows add up over dispatchers
    // and over batches of one dispatcher.
    let claimed = claim_all(store, "lse_s").await;
    assert_eq!(claimed.len(), 3);
    let of = |ep: &Endpoint| {
        claimed
            .iter()
            .filter(|c| c.endpoint.id == ep.id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (oks, fails) = (of(&ok), of(&failing));
    let m0 = minute_of(t0) - 2;
    let minute = |m: i64, status: DeliveryStatus, attempt_ms: u64, e2e: Option<u64>| {
        let mut s = MinuteStats {
            minute: m,
            ..Default::default()
        };
        s.add(status, attempt_ms, e2e);
        s
    };
    let ep_minute =
        |ep: &Endpoint, stats: MinuteStats, success, failure, error: Option<&str>| EndpointMinute {
            endpoint_id: ep.id.clone(),
            stats,
            last_success_at: success,
            last_failure_at: failure,
            last_error: error.map(str::to_owned),
        };
    let success_at = t0.timestamp_millis() - 100_000;
    let batch_a = BatchStats {
        minutes: vec![minute(m0, DeliveryStatus::Delivered, 12, Some(30))],
        endpoints: vec![ep_minute(
            &ok,
            minute(m0, DeliveryStatus::Delivered, 12, Some(30)),
            Some(success_at),
            None,
            None,
        )],
    };
    store
        .complete_with_stats(
            &[completion(&oks[0], DeliveryStatus::Delivered, "lse_s")],
            &Default::default(),
            "dsp_running",
            &batch_a,
        )
        .await
        .unwrap();
    let failure_at = t0.timestamp_millis() - 50_000;
    let batch_b = BatchStats {
        minutes: vec![
            minute(m0, DeliveryStatus::Delivered, 20, Some(4_000)),
            minute(m0 + 1, DeliveryStatus::Pending, 7, None),
        ],
        endpoints: vec![
            ep_minute(
                &ok,
                minute(m0, DeliveryStatus::Delivered, 20, Some(4_000)),
                Some(success_at - 1_000),
                None,
                None,
            ),
            ep_minute(
                &failing,
                minute(m0 + 1, DeliveryStatus::Pending, 7, None),
                None,
                Some(failure_at),
                Some("HTTP 503"),
            ),
        ],
    };
    let mut retry = completion(&fails[0], DeliveryStatus::Pending, "lse_s");
    retry.attempt.error = Some("HTTP 503".into());
    store
        .complete_with_stats(
            &[
                completion(&oks[1], DeliveryStatus::Delivered, "lse_s"),
                retry,
            ],
            // One failure opens the breaker.
            &BreakerPolicy {
                threshold: 1,
                ..Default::default()
            },
            "dsp_fresh",
            &batch_b,
        )
        .await
        .unwrap();
    // A later batch of the second dispatcher, in the same minute (its rows add up): an
    // earlier failure than the one recorded, with another error. (Its completion's lease
    // is long gone: the delivery stays as it is.)
    let batch_c = BatchStats {
        minutes: vec![minute(m0 + 1, DeliveryStatus::Failed, 3, None)],
        endpoints: vec![ep_minute(
            &failing,
            minute(m0 + 1, DeliveryStatus::Failed, 3, None),
            None,
            Some(failure_at - 10_000),
            Some("HTTP 500"),
        )],
    };
    store
        .complete_with_stats(
            &[completion(&oks[0], DeliveryStatus::Delivered, "lse_gone")],
            &Default::default(),
            "dsp_fresh",
            &batch_c,
        )
        .await
        .unwrap();

    let mut want_m0 = batch_a.minutes[0].clone();
    want_m0.merge(&batch_b.minutes[0]);
    let mut want_m1 = batch_b.minutes[1].clone();
    want_m1.merge(&batch_c.minutes[0]);
    assert_eq!(
        store.stats_since(m0).await.unwrap(),
        vec![want_m0.clone(), want_m1.clone()],
        "one row per minute, oldest first"
    );
    assert_eq!(store.stats_since(m0 + 1).await.unwrap(), vec![want_m1]);
    assert!(store.stats_since(m0 + 2).await.unwrap().is_empty());

    assert_eq!(
        store.endpoint_stats_since(&ok.id, m0).await.unwrap(),
        EndpointHistory {
            minutes: vec![want_m0],
            last_success_at: Some(domain::from_millis(success_at)),
            last_failure_at: None,
            last_error: None,
        }
    );
    let mut failing_m1 = batch_b.endpoints[1].stats.clone();
    failing_m1.merge(&batch_c.endpoints[0].stats);
    assert_eq!(
        store.endpoint_stats_since(&failing.id, m0).await.unwrap(),
        EndpointHistory {
            minutes: vec![failing_m1],
            last_success_at: None,
            last_failure_at: Some(domain::from_millis(failure_at)),
            last_error: Some("HTTP 503".into()),
        },
        "the latest failure's error"
    );
    assert_eq!(
        store
            .endpoint_stats_since(&failing.id, m0 + 2)
            .await
            .unwrap(),
        EndpointHistory::default()
    );
    for nothing in [off.id.as_str(), "ep_nope", "ep\0x"] {
        assert_eq!(
            store.endpoint_stats_since(nothing, m0).await.unwrap(),
            EndpointHistory::default(),
            "{nothing:?}"
        );
    }

    // The delivered ones are no longer pending; the retry is.
    let summary = store.pending_summary().await.unwrap();
    assert_eq!(summary.count, 1);
    assert_eq!(
        summary.oldest_created_at,
        Some(fails[0].delivery.created_at)
    );

    // Breakers: the failing endpoint's opened; the disabled endpoint is flagged too.
    assert_eq!(
        store.breaker_counts().await.unwrap(),
        BreakerCounts {
            closed: 2,
            open: 1,
            half_open: 0,
        }
    );
    let mut want = vec![
        FlaggedEndpoint {
            id: failing.id.clone(),
            tenant_id: "default".into(),
            enabled: true,
            disabled_reason: None,
            breaker_state: "open".into(),
        },
        FlaggedEndpoint {
            id: off.id.clone(),
            tenant_id: "default".into(),
            enabled: false,
            disabled_reason: Some("manual".into()),
            breaker_state: "closed".into(),
        },
    ];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.flagged_endpoints(10).await.unwrap(), want);
    assert_eq!(store.flagged_endpoints(1).await.unwrap(), want[..1]);
    close(opened, pg).await;
}

/// A pending delivery of `e` to `endpoint_id`, as `hookrelay import` or the test endpoint
/// make them.
fn delivery(e: &Event, endpoint_id: &str, due: Option<DateTime<Utc>>) -> Delivery {
    Delivery {
        id: domain::new_id_at(prefix::DELIVERY, e.created_at),
        tenant_id: e.tenant_id.clone(),
        event_id: e.id.clone(),
        endpoint_id: endpoint_id.into(),
        status: DeliveryStatus::Pending,
        attempts: 1,
        max_attempts: 6,
        next_attempt_at: due,
        last_error: Some("HTTP 502".into()),
        ordering_key: None,
        ordering_blocks: false,
        created_at: e.created_at,
        updated_at: ms_after(e.created_at, 3),
    }
}

async fn import_and_leased_inserts_write_once_and_release_hands_back_only_its_lease(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let ep = endpoint("default", &[]);
    store.create_endpoint(&ep, u32::MAX).await.unwrap();
    let now = domain::now();

    // Import: the event unless it exists, each delivery unless it exists or its event (of
    // its tenant) does not; counted.
    let mut e = event("default", "user.joined", Some("imported"));
    e.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let d1 = delivery(&e, &ep.id, Some(now));
    let d2 = Delivery {
        id: domain::new_id_at(prefix::DELIVERY, ms_after(e.created_at, 1)),
        ..delivery(&e, "ep_deleted_since", Some(now))
    };
    let orphan = Delivery {
        event_id: "evt_missing".into(),
        ..delivery(&e, &ep.id, Some(now))
    };
    let foreign = Delivery {
        tenant_id: "acme".into(),
        ..delivery(&e, &ep.id, Some(now))
    };
    let all = [d1.clone(), d2.clone(), orphan.clone(), foreign.clone()];
    assert_eq!(store.import(&e, &all).await.unwrap(), 2);
    assert_eq!(store.import(&e, &all).await.unwrap(), 0, "written once");
    assert_eq!(
        store.get_event("default", &e.id).await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(
        store.get_delivery("default", &d1.id).await.unwrap(),
        Some(d1.clone())
    );
    assert_eq!(
        store.get_delivery("default", &d2.id).await.unwrap(),
        Some(d2.clone())
    );
    for skipped in [&orphan, &foreign] {
        assert_eq!(
            store
                .get_delivery(&skipped.tenant_id, &skipped.id)
                .await
                .unwrap(),
            None
        );
    }
    // An event already there is kept as it was; new deliveries of it are written.
    let changed = Event {
        data: serde_json::json!({"changed": true}),
        ..e.clone()
    };
    let d3 = Delivery {
        id: domain::new_id_at(prefix::DELIVERY, ms_after(e.created_at, 2)),
        ..delivery(&e, &ep.id, Some(now))
    };
    assert_eq!(
        store
            .import(&changed, std::slice::from_ref(&d3))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_event("default", &e.id).await.unwrap(),
        Some(e.clone())
    );
    // An event of a tenant that does not exist is refused.
    let stray = event("nope", "user.joined", None);
    assert!(store
        .import(&stray, &[delivery(&stray, &ep.id, Some(now))])
        .await
        .is_err());
    // The imported deliveries of a live endpoint are due.
    let claimed = claim_all(store, "lse_i").await;
    let mut got: Vec<&str> = claimed.iter().map(|c| c.delivery.id.as_str()).collect();
    got.sort_unstable();
    let mut want = vec![d1.id.as_str(), d3.id.as_str()];
    want.sort_unstable();
    assert_eq!(got, want);

    // Release: only under the delivery's lease; back without an attempt, due when told.
    let back = ms_after(now, 40_000);
    store
        .release(&[
            (d1.id.clone(), "lse_other".into(), back),
            ("dlv\0x".into(), "lse_i".into(), back),
        ])
        .await
        .unwrap();
    store.release(&[]).await.unwrap();
    let c1 = claimed.iter().find(|c| c.delivery.id == d1.id).unwrap();
    let held = store
        .get_delivery("default", &d1.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.next_attempt_at, c1.delivery.next_attempt_at);
    store
        .release(&[(d1.id.clone(), "lse_i".into(), back)])
        .await
        .unwrap();
    let released = store
        .get_delivery("default", &d1.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (released.status, released.attempts, released.next_attempt_at),
        (DeliveryStatus::Pending, d1.attempts, Some(back))
    );
    // Released means the lease is gone: its holder can no longer move it on.
    store
        .complete(
            &[completion(c1, DeliveryStatus::Delivered, "lse_i")],
            &Default::default(),
        )
        .await
        .unwrap();
    let after_late = store
        .get_delivery("default", &d1.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (after_late.status, after_late.next_attempt_at),
        (DeliveryStatus::Pending, Some(back))
    );
    // Releasing again changes nothing.
    store
        .release(&[(d1.id.clone(), "lse_i".into(), now)])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_delivery("default", &d1.id)
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at,
        Some(back)
    );

    // A leased insert (the test endpoint's send): stored as given, not claimable while
    // its lease runs, handed back by its lease.
    let mut t = event("default", "test.ping", None);
    t.deliver_at = Some(ms_after(t.created_at, 1));
    let lease_end = ms_after(now, 30_000);
    let leased = Delivery {
        attempts: 0,
        last_error: None,
        ..delivery(&t, &ep.id, Some(lease_end))
    };
    store.insert_leased(&t, &leased, "lse_test").await.unwrap();
    assert_eq!(
        store.get_event("default", &t.id).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(
        store.get_delivery("default", &leased.id).await.unwrap(),
        Some(leased.clone())
    );
    assert!(
        store.insert_leased(&t, &leased, "lse_test").await.is_err(),
        "an event id is written once"
    );
    assert!(claim_all(store, "lse_x").await.is_empty(), "leased");
    store
        .release(&[(leased.id.clone(), "lse_test".into(), now)])
        .await
        .unwrap();
    let claimed = claim_all(store, "lse_y").await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, leased.id);
    assert_eq!(claimed[0].event, t);
    close(opened, pg).await;
}

async fn replay_moves_finished_deliveries_once_and_reserve_sends_shares_one_bucket(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let ep = endpoint("default", &["a.*"]);
    let doomed = endpoint("default", &["b.*"]);
    for e in [&ep, &doomed] {
        store.create_endpoint(e, u32::MAX).await.unwrap();
    }
    let mut events = Vec::new();
    for t in ["a.1", "a.2", "a.3", "b.1", "a.4"] {
        let Ingested::Created(e, _) = ingest(store, event("default", t, None)).await.unwrap()
        else {
            panic!("created")
        };
        events.push(e);
    }
    // a.1, a.2 and b.1 fail for good; a.3 is delivered; a.4 stays pending.
    let claimed = claim_all(store, "lse_r").await;
    let by_event = |e: &Event| claimed.iter().find(|c| c.event.id == e.id).unwrap();
    let mut done = Vec::new();
    for (i, status) in [
        (0, DeliveryStatus::Failed),
        (1, DeliveryStatus::Failed),
        (2, DeliveryStatus::Delivered),
        (3, DeliveryStatus::Failed),
    ] {
        let mut c = completion(by_event(&events[i]), status, "lse_r");
        c.next_attempt_at = None;
        done.push(c);
    }
    store.complete(&done, &Default::default()).await.unwrap();
    let pending_one = by_event(&events[4]).delivery.clone();
    assert!(store.delete_endpoint("default", &doomed.id).await.unwrap());
    let finished_at = done
        .iter()
        .map(|c| ms_after(c.attempt.started_at, 12))
        .max()
        .unwrap();

    let failed = ReplayFilter {
        statuses: vec![DeliveryStatus::Failed],
        ..Default::default()
    };
    // Deliveries changed at or after `now` are not moved (they are the replay's own).
    assert_eq!(
        store
            .replay("default", &failed, ms_after(finished_at, -100), 2, 10)
            .await
            .unwrap(),
        0
    );
    let now = ms_after(finished_at, 1_000);
    // In batches of `limit` until fewer come back; the endpoint deleted since is skipped.
    assert_eq!(
        store.replay("default", &failed, now, 2, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.replay("default", &failed, now, 2, 1).await.unwrap(),
        1
    );
    assert_eq!(
        store.replay("default", &failed, now, 2, 1).await.unwrap(),
        0
    );
    for e in &events[..2] {
        let d = store
            .get_delivery("default", &by_event(e).delivery.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.status, d.attempts, d.max_attempts, d.next_attempt_at),
            (DeliveryStatus::Pending, 1, 3, Some(now))
        );
        assert_eq!(d.id, by_event(e).delivery.id, "same id, same webhook-id");
    }
    let gone = store
        .get_delivery("default", &by_event(&events[3]).delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.status, DeliveryStatus::Failed);

    let later = ms_after(now, 1_000);
    // Pending is never replayed; another tenant's or an unstorable key's find nothing.
    let pending = ReplayFilter {
        statuses: vec![DeliveryStatus::Pending],
        ..Default::default()
    };
    assert_eq!(
        store
            .replay("default", &pending, later, 2, 10)
            .await
            .unwrap(),
        0
    );
    let delivered = ReplayFilter {
        statuses: vec![DeliveryStatus::Delivered],
        ..Default::default()
    };
    assert_eq!(
        store
            .replay("acme", &delivered, later, 2, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .replay("def\0ault", &delivered, later, 2, 10)
            .await
            .unwrap(),
        0
    );
    for filter in [
        ReplayFilter {
            endpoint_id: Some(doomed.id.clone()),
            ..delivered.clone()
        },
        ReplayFilter {
            endpoint_id: Some("ep\0x".into()),
            ..delivered.clone()
        },
        ReplayFilter {
            event_id: Some(events[0].id.clone()),
            ..delivered.clone()
        },
        ReplayFilter {
            event_id: Some("evt\0x".into()),
            ..delivered.clone()
        },
        ReplayFilter {
            since: Some(ms_after(events[2].created_at, 1)),
            ..delivered.clone()
        },
        ReplayFilter {
            until: Some(events[2].created_at),
            ..delivered.clone()
        },
    ] {
        assert_eq!(
            store
                .replay("default", &filter, later, 2, 10)
                .await
                .unwrap(),
            0,
            "{filter:?}"
        );
    }
    assert_eq!(
        store
            .replay(
                "default",
                &ReplayFilter {
                    endpoint_id: Some(ep.id.clone()),
                    event_id: Some(events[2].id.clone()),
                    since: Some(events[2].created_at),
                    until: Some(ms_after(events[2].created_at, 1)),
                    ..delivered.clone()
                },
                later,
                0,
                10
            )
            .await
            .unwrap(),
        1
    );
    let d = store
        .get_delivery("default", &by_event(&events[2]).delivery.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.status, d.max_attempts, d.next_attempt_at),
        (DeliveryStatus::Pending, 1, Some(later))
    );
    assert_eq!(
        store
            .get_delivery("default", &pending_one.id)
            .await
            .unwrap()
            .unwrap()
            .next_attempt_at,
        pending_one.next_attempt_at,
        "the pending one was left alone"
    );

    // An endpoint that cannot be stored is not there to update.
    for (tenant_id, id) in [("default", "ep\0x"), ("def\0ault", ep.id.as_str())] {
        let bad = Endpoint {
            tenant_id: tenant_id.into(),
            id: id.into(),
            ..ep.clone()
        };
        assert!(!store.update_endpoint(&bad).await.unwrap(), "{id:?}");
    }

    // Rate limits: one bucket per endpoint, kept in the store (two sends a second, a burst
    // of one second's worth).
    let rate = Rate {
        count: 2,
        period: RatePeriod::Second,
    };
    let t = domain::now();
    assert_eq!(
        store.reserve_sends(&ep.id, rate, 3, t).await.unwrap(),
        (2, vec![ms_after(t, 500)])
    );
    assert_eq!(
        store.reserve_sends(&ep.id, rate, 1, t).await.unwrap(),
        (0, vec![ms_after(t, 500)])
    );
    assert_eq!(
        store
            .reserve_sends(&ep.id, rate, 2, ms_after(t, 500))
            .await
            .unwrap(),
        (1, vec![ms_after(t, 1_000)])
    );
    // Another endpoint's bucket is its own; an endpoint that is not stored (or cannot be)
    // has a full one every time.
    for other in [doomed.id.as_str(), "ep_nope", "ep\0x"] {
        for _ in 0..2 {
            assert_eq!(
                store.reserve_sends(other, rate, 2, t).await.unwrap(),
                (2, vec![]),
                "{other:?}"
            );
        }
    }
    close(opened, pg).await;
}

async fn retention_prunes_old_events_and_operations_data_within_its_limit(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    let now = domain::now();
    let old = now - chrono::Duration::days(40);
    let cutoff = now - chrono::Duration::days(30);
    let at = |t: DateTime<Utc>, etype: &str| {
        let mut e = event("default", etype, None);
        e.created_at = t;
        e.id = domain::new_id_at(prefix::EVENT, t);
        e
    };

    // Events: two old ones without deliveries, an old one whose delivery is pending, an
    // old one whose delivery was cancelled, and a recent one.
    let mut olds = Vec::new();
    for i in 0..2 {
        let e = at(ms_after(old, i), "none.x");
        ingest(store, e.clone()).await.unwrap();
        olds.push(e);
    }
    let keep = endpoint("default", &["keep.*"]);
    let doomed = endpoint("default", &["drop.*"]);
    for ep in [&keep, &doomed] {
        store.create_endpoint(ep, u32::MAX).await.unwrap();
    }
    let old_pending = at(ms_after(old, 2), "keep.x");
    let old_cancelled = at(ms_after(old, 3), "drop.x");
    let recent = at(now, "none.x");
    for e in [&old_pending, &old_cancelled, &recent] {
        ingest(store, e.clone()).await.unwrap();
    }
    assert!(store.delete_endpoint("default", &doomed.id).await.unwrap());
    assert_eq!(store.prune_events(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.prune_events(cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.prune_events(cutoff, 10).await.unwrap(), 0);
    for (e, kept) in [
        (&olds[0], false),
        (&olds[1], false),
        (&old_cancelled, false),
        (&old_pending, true),
        (&recent, true),
    ] {
        assert_eq!(
            store.get_event("default", &e.id).await.unwrap().is_some(),
            kept,
            "{}",
            e.event_type
        );
    }
    let left = store
        .list_deliveries(
            "default",
            &DeliveryFilter {
                page: page(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(left.len(), 1, "the cancelled delivery went with its event");
    assert_eq!(left[0].event_id, old_pending.id);

    // Operations data: inbox messages and audit entries by age, statistics by minute,
    // dispatchers by silence; at most `limit` of each kind per call, all counted.
    let inbox = inbox("default", now, "tok-r");
    store.create_inbox(&inbox).await.unwrap();
    let msgs = [
        message(&inbox.id, old, 0),
        message(&inbox.id, ms_after(old, 1), 1),
        message(&inbox.id, now, 2),
    ];
    for m in &msgs {
        store.add_inbox_message(m, 100).await.unwrap();
    }
    let entries = [
        audit(None, old, "admin", "event_type.created", "a.b"),
        audit(None, now, "admin", "event_type.created", "c.d"),
    ];
    for e in &entries {
        store.add_audit(e).await.unwrap();
    }
    for (id, last) in [("dsp_old", old), ("dsp_new", now)] {
        store
            .heartbeat(&DispatcherBeat {
                id: id.into(),
                hostname: "h".into(),
                pid: 1,
                started_at: last,
                last_heartbeat: last,
                stopped_at: Some(last),
            })
            .await
            .unwrap();
    }
    let claimed = claim_all(store, "lse_p").await;
    assert_eq!(claimed.len(), 1);
    let minute = |m: i64| {
        let mut s = MinuteStats {
            minute: m,
            ..Default::default()
        };
        s.add(DeliveryStatus::Delivered, 5, Some(5));
        s
    };
    let (old_minute, new_minute) = (minute_of(old), minute_of(now));
    let stats = BatchStats {
        minutes: vec![minute(old_minute), minute(new_minute)],
        endpoints: vec![
            EndpointMinute {
                endpoint_id: keep.id.clone(),
                stats: minute(old_minute),
                last_success_at: Some(old.timestamp_millis()),
                ..Default::default()
            },
            EndpointMinute {
                endpoint_id: keep.id.clone(),
                stats: minute(new_minute),
                last_success_at: Some(now.timestamp_millis()),
                ..Default::default()
            },
        ],
    };
    store
        .complete_with_stats(
            &[completion(&claimed[0], DeliveryStatus::Delivered, "lse_p")],
            &Default::default(),
            "dsp_new",
            &stats,
        )
        .await
        .unwrap();

    let stats_cutoff = minute_of(cutoff);
    // One of each kind: a message, an audit entry, a dispatcher minute, an endpoint
    // minute, a dispatcher.
    assert_eq!(
        store
            .prune_operations(cutoff, stats_cutoff, cutoff, 1)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store
            .prune_operations(cutoff, stats_cutoff, cutoff, 10)
            .await
            .unwrap(),
        1,
        "the other old message"
    );
    assert_eq!(
        store
            .prune_operations(cutoff, stats_cutoff, cutoff, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .list_inbox_messages(&inbox.id, &page(10))
            .await
            .unwrap(),
        vec![msgs[2].clone()]
    );
    let trail = store
        .list_audit(&AuditFilter {
            page: page(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(trail, vec![entries[1].clone()]);
    assert_eq!(
        store.stats_since(old_minute).await.unwrap(),
        vec![minute(new_minute)]
    );
    assert_eq!(
        store
            .endpoint_stats_since(&keep.id, old_minute)
            .await
            .unwrap()
            .minutes,
        vec![minute(new_minute)]
    );
    let beats = store
        .list_dispatchers(old - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(
        beats.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        vec!["dsp_new"]
    );
    close(opened, pg).await;
}

/// Wake-ups from other processes: PostgreSQL's store feeds them into the waker it is given
/// (every write that makes deliveries due moves its wake-up sequence, whichever process
/// made it). SQLite's writers all live in one process, whose own waker hears every commit:
/// its `listen` has nothing to do, and returns at once.
async fn listen_wakes_the_dispatcher_when_a_write_makes_deliveries_due(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    // The server records its attempt budget wherever it has to (a no-op on SQLite).
    store.set_default_max_attempts(9).await.unwrap();
    store.set_default_max_attempts(7).await.unwrap();
    store
        .create_endpoint(&endpoint("default", &[]), u32::MAX)
        .await
        .unwrap();
    let waker = hookrelay::wake::Waker::default();
    tokio::time::timeout(Duration::from_secs(10), store.listen(waker.clone()))
        .await
        .expect("listen returns")
        .unwrap();
    if backend == Backend::Postgres {
        // The first connection wakes (a move may have been missed before it); its
        // follow-ups run out within a few seconds.
        tokio::time::timeout(Duration::from_secs(10), waker.woken())
            .await
            .expect("woken once connected");
        let quiet = Duration::from_secs(3);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::timeout(quiet, waker.woken()).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "never quiet");
        }
        ingest(store, event("default", "a.b", None)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), waker.woken())
            .await
            .expect("woken by the ingest's commit");
        let claimed = claim_all(store, "lse_w").await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].delivery.max_attempts, 15, "ingest's own budget");
    }
    close(opened, pg).await;
}

/// A store over the same database as `url`, sealing with `key` (base64) when given.
async fn store_at(url: &str, key: Option<&str>) -> Arc<dyn Store> {
    let keys = key.map(|k| {
        hookrelay::secrets::Keyring::from_base64(&[k.to_owned().into()])
            .unwrap()
            .unwrap()
    });
    hookrelay::store::connect(url, 5, &Default::default(), keys)
        .await
        .unwrap()
}

async fn credentials_are_sealed_inside_the_store_and_resealed_once(backend: Backend) {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("s.db").display()),
            None,
        ),
        Backend::Postgres => {
            let (url, name) = create_pg_database().await;
            (url, Some(name))
        }
    };
    let plain = store_at(&url, None).await;
    // Written before any key: kept as they are.
    let oauth2 = |secret: &str| domain::OAuth2 {
        token_url: "https://auth.example.com/token".into(),
        client_id: "client".into(),
        client_secret: secret.into(),
        scope: Some("webhooks".into()),
        audience: None,
    };
    // A client certificate that expires in three days.
    let tls = {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        let until = domain::now() + chrono::Duration::days(3);
        use chrono::Datelike;
        params.not_after =
            rcgen::date_time_ymd(until.year(), until.month() as u8, until.day() as u8);
        domain::ClientTls {
            identity: Some(domain::TlsIdentity {
                certificate: params.self_signed(&key).unwrap().pem(),
                key: key.serialize_pem(),
            }),
            ca: None,
        }
    };
    let ep = Endpoint {
        event_types: vec!["user.joined".into()],
        headers: [("x-key".to_string(), "header-value-1".to_string())].into(),
        oauth2: Some(oauth2("oauth2-secret-1")),
        tls: Some(tls.clone()),
        proxy: Some("http://u:proxy-password-1@127.0.0.1:3128".into()),
        ..Endpoint::new(
            "default",
            "redis://:url-password-1@127.0.0.1:6379/0?stream=s",
            "whsec_dGVzdA==".into(),
        )
    };
    plain.create_endpoint(&ep, u32::MAX).await.unwrap();
    let ibx = inbox("default", domain::now(), "inbox-token-1");
    plain.create_inbox(&ibx).await.unwrap();
    let mut src = source("default", domain::now());
    src.url = "redis://:source-password-1@127.0.0.1:6379/0?stream=jobs".into();
    plain.create_source(&src).await.unwrap();
    assert_eq!(
        plain.reseal().await.unwrap(),
        0,
        "nothing to seal without a key"
    );

    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let sealed = store_at(&url, Some(&key)).await;
    assert_eq!(
        sealed.reseal().await.unwrap(),
        3,
        "endpoint, inbox and source"
    );
    assert_eq!(sealed.reseal().await.unwrap(), 0, "all current now");

    // The keyed store reads plaintext, everywhere it hands credentials out.
    let back = sealed
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            &back.secret,
            &back.headers,
            &back.url,
            &back.oauth2,
            &back.tls
        ),
        (&ep.secret, &ep.headers, &ep.url, &ep.oauth2, &ep.tls)
    );
    assert_eq!(back.proxy, ep.proxy);
    // The certificate's expiry is kept for the alert before it.
    let soon = sealed
        .expiring_certificates(domain::now() + chrono::Duration::days(14), 10)
        .await
        .unwrap();
    assert_eq!(soon.len(), 1, "{soon:?}");
    assert_eq!(soon[0].id, ep.id);
    assert!(soon[0].expires_at > domain::now() + chrono::Duration::days(2));
    let none = sealed
        .expiring_certificates(domain::now(), 10)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let listed = sealed.list_endpoints("default", &page(10)).await.unwrap();
    assert_eq!(listed[0].headers, ep.headers);
    let got = sealed.get_inbox("default", &ibx.id).await.unwrap().unwrap();
    assert_eq!((&got.token, &got.secret), (&ibx.token, &ibx.secret));
    let found = sealed.find_inbox(&ibx.token_hash).await.unwrap().unwrap();
    assert_eq!(found.token, ibx.token);
    let got = sealed
        .get_source("default", &src.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.url, src.url);
    ingest(sealed.as_ref(), event("default", "user.joined", None))
        .await
        .unwrap();
    let claimed = sealed
        .claim(domain::now(), far(), "lse_1", 10, &Default::default())
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].endpoint.secret, ep.secret);
    assert_eq!(claimed[0].endpoint.headers, ep.headers);
    assert_eq!(claimed[0].endpoint.oauth2, ep.oauth2);
    assert_eq!(claimed[0].endpoint.tls, ep.tls);

    // At rest, and to a store without the key, only sealed values.
    let raw = plain
        .get_endpoint("default", &ep.id)
        .await
        .unwrap()
        .unwrap();
    assert!(raw.secret.starts_with("enc1:"), "{}", raw.secret);
    assert!(raw.headers["x-key"].starts_with("enc1:"));
    assert!(!raw.url.contains("url-password-1"), "{}", raw.url);
    let raw_oauth2 = raw.oauth2.unwrap();
    assert!(raw_oauth2.client_secret.starts_with("enc1:"));
    assert_eq!(raw_oauth2.client_id, "client", "only the secret is sealed");
    let raw_proxy = raw.proxy.clone().unwrap();
    assert!(!raw_proxy.contains("proxy-password-1"), "{raw_proxy}");
    let (raw_tls, tls) = (raw.tls.unwrap().identity.unwrap(), tls.identity.unwrap());
    assert!(raw_tls.key.starts_with("enc1:"));
    assert_eq!(
        raw_tls.certificate, tls.certificate,
        "only the key is sealed"
    );
    let raw = plain.get_inbox("default", &ibx.id).await.unwrap().unwrap();
    assert!(raw.token.starts_with("enc1:") && raw.secret.unwrap().starts_with("enc1:"));
    let raw = plain.get_source("default", &src.id).await.unwrap().unwrap();
    assert!(!raw.url.contains("source-password-1"), "{}", raw.url);

    // What the keyed store writes is sealed as it is written.
    let fresh = Endpoint {
        headers: [("x-key".to_string(), "header-value-2".to_string())].into(),
        oauth2: Some(oauth2("oauth2-secret-2")),
        ..Endpoint::new("default", "https://example.com/", "whsec_dGVzdA==".into())
    };
    sealed.create_endpoint(&fresh, u32::MAX).await.unwrap();
    let raw = plain
        .get_endpoint("default", &fresh.id)
        .await
        .unwrap()
        .unwrap();
    assert!(raw.headers["x-key"].starts_with("enc1:"));
    assert!(raw.oauth2.unwrap().client_secret.starts_with("enc1:"));
    drop(plain);
    close(sealed, pg).await;
}

async fn portal_links_are_found_by_hash_paged_revoked_once_and_pruned(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (opened, pg) = open(backend, &dir).await;
    let store = opened.as_ref();
    tenant(store, "acme").await;
    let t0 = domain::now();
    let link = |i: i64, tenant_id: &str, expires: DateTime<Utc>| PortalLink {
        id: domain::new_id_at("prt", ms_after(t0, i)),
        tenant_id: tenant_id.to_owned(),
        token_hash: format!("{i:064x}"),
        read_only: i % 2 == 0,
        event_types: (i == 1).then(|| vec!["order.paid".to_owned(), "user.*".to_owned()]),
        allow_brokers: i == 2,
        created_by: "admin".into(),
        created_at: ms_after(t0, i),
        expires_at: expires,
        revoked_at: None,
    };
    let later = ms_after(t0, 3_600_000);
    let acme: Vec<PortalLink> = (0..3).map(|i| link(i, "acme", later)).collect();
    let old = link(5, "default", ms_after(t0, -86_400_000));
    for l in acme.iter().chain([&old]) {
        store.create_portal_link(l).await.unwrap();
    }
    // A second link with the same token hash is refused.
    assert!(store
        .create_portal_link(&link(0, "acme", later))
        .await
        .is_err());

    // Found by its hash, whatever its state; nothing for another hash or a NUL.
    assert_eq!(
        store.find_portal_link(&acme[1].token_hash).await.unwrap(),
        Some(acme[1].clone())
    );
    assert_eq!(store.find_portal_link(&"f".repeat(64)).await.unwrap(), None);
    assert_eq!(store.find_portal_link("a\0b").await.unwrap(), None);

    // A tenant's, newest first, in pages.
    let newest_first: Vec<PortalLink> = acme.iter().rev().cloned().collect();
    assert_eq!(
        store.list_portal_links("acme", &page(10)).await.unwrap(),
        newest_first
    );
    assert_eq!(
        store
            .list_portal_links("acme", &after(&acme[2].id, 1))
            .await
            .unwrap(),
        vec![acme[1].clone()]
    );
    assert_eq!(
        store.list_portal_links("default", &page(10)).await.unwrap(),
        vec![old.clone()]
    );

    // Revoked within its tenant only; revoking again keeps the first time.
    let at = ms_after(t0, 10);
    assert_eq!(
        store
            .revoke_portal_link("default", &acme[0].id, at)
            .await
            .unwrap(),
        None
    );
    let revoked = store
        .revoke_portal_link("acme", &acme[0].id, at)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    let again = store
        .revoke_portal_link("acme", &acme[0].id, ms_after(t0, 20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.revoked_at, Some(at));
    assert_eq!(
        store.find_portal_link(&acme[0].token_hash).await.unwrap(),
        Some(revoked)
    );

    // Retention deletes links that expired before its cutoff, and only those.
    assert_eq!(
        store
            .prune_operations(ms_after(t0, -1000), 0, ms_after(t0, -86_400_000 * 400), 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.find_portal_link(&old.token_hash).await.unwrap(), None);
    assert_eq!(
        store
            .list_portal_links("acme", &page(10))
            .await
            .unwrap()
            .len(),
        3
    );
    close(opened, pg).await;
}
