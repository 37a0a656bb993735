//! Store behaviour that the API does not show directly: retention pruning.

use std::sync::Arc;

use hookrelay::{
    domain::{self, new_id, prefix, Attempt, AttemptOutcome, DeliveryStatus, Endpoint, Event},
    store::{self, Completion, DataCheck, Store},
};

use crate::helpers::*;

pub(crate) struct NoCheck;
impl DataCheck for NoCheck {
    fn check(&self, _: &domain::EventType, _: &serde_json::Value) -> Result<(), String> {
        Ok(())
    }
}

pub(crate) async fn open(
    backend: Backend,
    dir: &tempfile::TempDir,
) -> (Arc<dyn Store>, Option<String>) {
    match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("s.db").display());
            (
                store::connect(&url, 5, &Default::default(), None)
                    .await
                    .unwrap(),
                None,
            )
        }
        Backend::Postgres => {
            let (url, name) = create_pg_database().await;
            (
                store::connect(&url, 5, &Default::default(), None)
                    .await
                    .unwrap(),
                Some(name),
            )
        }
    }
}

/// The completion of a claimed delivery's first attempt, finished for good with `status`.
fn finished(
    c: &store::Claimed,
    status: DeliveryStatus,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Completion {
    Completion {
        ordered: false,
        delivery_id: c.delivery.id.clone(),
        endpoint_id: c.endpoint.id.clone(),
        lease_id: c.lease_id.clone(),
        status,
        next_attempt_at: None,
        disable_endpoint: None,
        attempt: Attempt {
            id: new_id(prefix::ATTEMPT),
            delivery_id: c.delivery.id.clone(),
            attempt_number: 1,
            started_at,
            duration_ms: 3,
            status_code: Some(200),
            response: None,
            error: None,
            outcome: if status == DeliveryStatus::Delivered {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::Failed
            },
            next_attempt_at: None,
        },
    }
}

async fn retention_prunes_only_old_attempts_of_delivered_deliveries(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, pg) = open(backend, &dir).await;
    let now = domain::now();
    store
        .create_endpoint(
            &Endpoint::new(
                "default",
                "http://127.0.0.1:9/",
                hookrelay::signing::generate_secret(),
            ),
            u32::MAX,
        )
        .await
        .unwrap();
    for i in 0..3 {
        let event = Event {
            id: new_id(prefix::EVENT),
            tenant_id: "default".into(),
            event_type: "prune.test".into(),
            data: serde_json::json!({ "i": i }),
            actor: None,
            idempotency_key: None,
            traceparent: None,
            created_at: now,
            deliver_at: None,
        };
        store.ingest(event, 5, Arc::new(NoCheck)).await.unwrap();
    }
    let claimed = store
        .claim(
            domain::now(),
            domain::now() + chrono::Duration::seconds(30),
            "lse_1",
            10,
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    let old = now - chrono::Duration::days(40);
    // Delivered 40 days ago, failed 40 days ago, delivered just now.
    let plan = [
        (DeliveryStatus::Delivered, old),
        (DeliveryStatus::Failed, old),
        (DeliveryStatus::Delivered, now),
    ];
    let completions: Vec<Completion> = claimed
        .iter()
        .zip(plan)
        .map(|(c, (status, started_at))| finished(c, status, started_at))
        .collect();
    store
        .complete(&completions, &Default::default())
        .await
        .unwrap();

    let cutoff = domain::now() - chrono::Duration::days(30);
    assert_eq!(store.prune_attempts(cutoff, 1000).await.unwrap(), 1);
    assert_eq!(store.prune_attempts(cutoff, 1000).await.unwrap(), 0);
    let left: Vec<usize> =
        futures::future::join_all(claimed.iter().map(|c| store.list_attempts(&c.delivery.id)))
            .await
            .into_iter()
            .map(|a| a.unwrap().len())
            .collect();
    assert_eq!(left, vec![0, 1, 1], "only the old delivered attempt goes");
    if let Some(name) = pg {
        drop(store);
        drop_pg_database(&name).await;
    }
}

/// A key's deliveries behind its head wait parked (`next_attempt_at` null, out of the
/// claims' way), and each one that finishes releases the next, on both stores.
async fn a_keys_backlog_waits_parked_and_goes_one_at_a_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, pg) = open(backend, &dir).await;
    let spec = serde_json::json!({"ordering": {"key": "data.k"}});
    let endpoint = Endpoint {
        routing: Arc::new(
            hookrelay::domain::routing::Routing::compile(serde_json::from_value(spec).unwrap())
                .unwrap(),
        ),
        ..Endpoint::new(
            "default",
            "http://127.0.0.1:9/",
            hookrelay::signing::generate_secret(),
        )
    };
    store.create_endpoint(&endpoint, u32::MAX).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let event = Event {
            id: new_id(prefix::EVENT),
            tenant_id: "default".into(),
            event_type: "order.step".into(),
            data: serde_json::json!({ "k": "one", "i": i }),
            actor: None,
            idempotency_key: None,
            traceparent: None,
            created_at: domain::now(),
            deliver_at: None,
        };
        let store::Ingested::Created(_, ds) =
            store.ingest(event, 5, Arc::new(NoCheck)).await.unwrap()
        else {
            panic!("created")
        };
        ids.push(ds[0].id.clone());
    }
    let due = |store: Arc<dyn Store>, ids: Vec<String>| async move {
        let mut out = Vec::new();
        for id in &ids {
            let d = store.get_delivery("default", id).await.unwrap().unwrap();
            out.push(d.next_attempt_at.is_some());
        }
        out
    };
    let lease = domain::now() + chrono::Duration::seconds(60);
    for (round, id) in ids.iter().enumerate() {
        // The claim parks whoever waits (its sweep runs at most every 250 ms).
        let claimed = eventually(std::time::Duration::from_secs(5), || async {
            let c = store
                .claim(domain::now(), lease, "lse_o", 10, &Default::default())
                .await
                .unwrap();
            (!c.is_empty()).then_some(c)
        })
        .await
        .expect("the next of the key is claimable");
        assert_eq!(claimed.len(), 1, "one at a time");
        assert_eq!(&claimed[0].delivery.id, id, "in order");
        let waiting = eventually(std::time::Duration::from_secs(5), || async {
            let d = due(store.clone(), ids[round + 1..].to_vec()).await;
            d.iter().all(|due| !due).then_some(())
        })
        .await;
        assert!(waiting.is_some(), "the rest of the key waits parked");
        let done = Completion {
            ordered: true,
            ..finished(&claimed[0], DeliveryStatus::Delivered, domain::now())
        };
        store.complete(&[done], &Default::default()).await.unwrap();
        if let Some(next) = ids.get(round + 1) {
            let d = store.get_delivery("default", next).await.unwrap().unwrap();
            assert!(
                d.next_attempt_at.is_some(),
                "the finish released the next one"
            );
        }
    }
    if let Some(name) = pg {
        drop(store);
        drop_pg_database(&name).await;
    }
}

crate::both_stores!(
    retention_prunes_only_old_attempts_of_delivered_deliveries,
    a_source_lease_has_one_holder_and_positions_only_move_forward,
    a_keys_backlog_waits_parked_and_goes_one_at_a_time
);

/// A source's lease has one holder until it runs out; its positions never move back (a
/// process that lost the lease cannot undo its successor's progress).
async fn a_source_lease_has_one_holder_and_positions_only_move_forward(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (store, pg) = open(backend, &dir).await;
    let source = store::ops::Source {
        id: new_id("src"),
        tenant_id: "default".into(),
        url: "kafka://127.0.0.1:9092/jobs".into(),
        description: None,
        created_at: domain::now(),
    };
    store.create_source(&source).await.unwrap();
    let now = domain::now();
    let later = now + chrono::Duration::seconds(15);
    assert!(store
        .lease_source(&source.id, "a", later, now)
        .await
        .unwrap());
    assert!(!store
        .lease_source(&source.id, "b", later, now)
        .await
        .unwrap());
    assert!(store
        .lease_source(&source.id, "a", later, now)
        .await
        .unwrap());
    // Once a's lease has run out, b takes it, and a no longer holds it.
    let after = later + chrono::Duration::seconds(1);
    let until = after + chrono::Duration::seconds(15);
    assert!(store
        .lease_source(&source.id, "b", until, after)
        .await
        .unwrap());
    assert!(!store
        .lease_source(&source.id, "a", until, after)
        .await
        .unwrap());

    store.set_source_position(&source.id, 0, 10).await.unwrap();
    store.set_source_position(&source.id, 1, 5).await.unwrap();
    store.set_source_position(&source.id, 0, 7).await.unwrap();
    assert_eq!(
        store.source_positions(&source.id).await.unwrap(),
        vec![(0, 10), (1, 5)]
    );
    // Deleting the source drops its lease and positions.
    assert!(store.delete_source("default", &source.id).await.unwrap());
    assert!(store.source_positions(&source.id).await.unwrap().is_empty());
    if let Some(name) = pg {
        drop_pg_database(&name).await;
    }
}

/// Under steady commits SQLite's WAL is copied into the database file and started over
/// regularly, by the checkpointer rather than by a commit that crosses its limit: that
/// commit would sync everything written since the last sync on the one writer (2-17 ms
/// every 0.6 s at 1,000 events/s), with every ingest waiting behind it. The WAL file keeps
/// its largest size, so it shows whether it was started over before reaching that limit
/// (`wal_autocheckpoint`, 16,000 pages of 4 KiB). Two worker threads, as in a server: on a
/// runtime of one thread, the test's own work delayed the checkpointer's ticks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_starts_the_wal_over_under_steady_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(Backend::Sqlite, &dir).await;
    for i in 0..3 {
        let url = format!("http://127.0.0.1:9/{i}");
        let ep = Endpoint::new("default", &url, hookrelay::signing::generate_secret());
        store.create_endpoint(&ep, u32::MAX).await.unwrap();
    }
    let wal = dir.path().join("s.db-wal");
    let wal_bytes = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    // Each event and its three deliveries write a dozen pages or more: 40,000 pages in
    // all, two and a half times the limit. Started over at each checkpoint (every 250 ms),
    // the WAL stays near half of it.
    let mut largest = 0;
    for i in 0..3_000 {
        let event = Event {
            data: serde_json::json!({ "i": i, "pad": "x".repeat(200) }),
            ..crate::conformance::event("default", "wal.test", None)
        };
        store.ingest(event, 5, Arc::new(NoCheck)).await.unwrap();
        largest = largest.max(wal_bytes());
    }
    let limit = 16_000 * (4096 + 24);
    assert!(
        largest < limit * 9 / 10,
        "the WAL grew to {largest} bytes; its limit is {limit}"
    );
}
