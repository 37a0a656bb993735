//! Sources: entries added to a Redis stream by a plain Redis client become events, reach a
//! receiver once each, survive a `kill -9`, and are shared by two processes without an
//! event created twice. Against the machine's Redis on 6379, a stream per test.

use std::{collections::HashMap, time::Duration};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::{crash::start_server, helpers::*};

fn stream_name() -> String {
    format!("hr-src-{}", ulid::Ulid::new().to_string().to_lowercase())
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379/0")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis is reachable (scripts/services starts it)")
}

/// Adds entries `from..to`, each `type=job.done`, `data={"n": i}`, in one pipeline.
async fn add_jobs(conn: &mut redis::aio::MultiplexedConnection, stream: &str, from: u32, to: u32) {
    let mut pipe = redis::pipe();
    for n in from..to {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("type")
            .arg("job.done")
            .arg("data")
            .arg(json!({ "n": n }).to_string())
            .ignore();
    }
    let () = pipe.query_async(conn).await.unwrap();
}

/// The group's `(pending, lag)` as Redis reports them.
async fn group_backlog(conn: &mut redis::aio::MultiplexedConnection, stream: &str) -> (u64, u64) {
    let groups: redis::streams::StreamInfoGroupsReply =
        redis::AsyncCommands::xinfo_groups(conn, stream)
            .await
            .unwrap();
    let g = groups
        .groups
        .iter()
        .find(|g| g.name == "hookrelay")
        .expect("hookrelay created its group");
    (g.pending as u64, g.lag.unwrap_or(u64::MAX as usize) as u64)
}

async fn drop_stream(conn: &mut redis::aio::MultiplexedConnection, stream: &str) {
    let _: i64 = redis::cmd("DEL")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap();
}

/// `n` of every request the receiver got, with the distinct `webhook-id`s each came with.
fn ids_by_n(r: &Receiver) -> HashMap<u64, std::collections::HashSet<String>> {
    let mut by_n: HashMap<u64, std::collections::HashSet<String>> = HashMap::new();
    for req in r.requests() {
        let n = req.json()["data"]["n"].as_u64().expect("data.n");
        by_n.entry(n)
            .or_default()
            .insert(req.header("webhook-id").to_owned());
    }
    by_n
}

/// Waits until the receiver has every `n` in `0..count`, then checks that each came from
/// one event (one `webhook-id`): no entry became two events. The wait lasts as long as
/// entries keep arriving (a broker server from a package registry, such as moto's SQS, may
/// pass on a thousand messages slowly on a busy machine): it fails once none has arrived
/// for [`STALLED`], or after [`AT_MOST`] in all.
async fn assert_each_once(r: &Receiver, count: u64) {
    const STALLED: Duration = Duration::from_secs(30);
    const AT_MOST: Duration = Duration::from_secs(600);
    let started = std::time::Instant::now();
    let (mut seen, mut last_new) = (0u64, started);
    loop {
        let now = ids_by_n(r).len() as u64;
        if now >= count {
            break;
        }
        if now > seen {
            (seen, last_new) = (now, std::time::Instant::now());
        }
        assert!(
            last_new.elapsed() < STALLED && started.elapsed() < AT_MOST,
            "receiver has {now} of {count} entries, none new for {:?}",
            last_new.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let by_n = ids_by_n(r);
    for n in 0..count {
        let ids = by_n
            .get(&n)
            .unwrap_or_else(|| panic!("entry {n} never arrived"));
        assert_eq!(ids.len(), 1, "entry {n} became {} events", ids.len());
    }
}

/// Waits until the source has `n` rejections; returns them as text.
async fn rejected(app: &TestApp, id: &str, n: usize) -> String {
    let path = format!("/v1/tenants/default/sources/{id}/rejections");
    let found = eventually(Duration::from_secs(20), || async {
        let (_, r) = app.get(&path).await;
        (r["data"].as_array().unwrap().len() == n).then_some(r)
    })
    .await;
    let (_, last) = app.get(&path).await;
    assert!(found.is_some(), "expected {n} rejections: {last}");
    last.to_string()
}

/// Waits until `/v1/health` shows the source's `ingested` events and nothing left unread
/// (nor, with `pending`, unacknowledged) at the broker.
async fn settled(app: &TestApp, pending: bool, ingested: u64) {
    let done = eventually(Duration::from_secs(20), || async {
        let (_, h) = app.get("/v1/health").await;
        let s = &h["sources"][0];
        (s["lag"] == 0 && s["ingested"] == ingested && (!pending || s["pending"] == 0))
            .then_some(())
    })
    .await;
    let (_, h) = app.get("/v1/health").await;
    assert!(done.is_some(), "{}", h["sources"]);
}

async fn create_source(base: &str, http: &reqwest::Client, url: &str) -> Value {
    let (status, src) = send(
        http.post(format!("{base}/v1/tenants/default/sources"))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": url })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{src}");
    src
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stream_entries_arrive_once_and_bad_ones_are_recorded() {
    let app = spawn_app_on(Backend::Sqlite, |c| c.strict_event_types = true).await;
    let (s, body) = app
        .post(
            "/v1/event-types",
            json!({"name": "job.done", "schema": {"type": "object", "required": ["n"]}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url })).await;
    let stream = stream_name();
    let mut conn = redis().await;
    let src = create_source(
        &app.base,
        &app.http,
        &format!("redis://127.0.0.1:6379/0?stream={stream}"),
    )
    .await;
    let id = src["id"].as_str().unwrap().to_owned();
    // The group exists once the consumer started: entries added from then on are read.
    eventually(Duration::from_secs(20), || async {
        let (_, s) = app.get(&format!("/v1/tenants/default/sources/{id}")).await;
        (s["state"]["status"] == "running").then_some(())
    })
    .await
    .expect("the source's consumer starts");

    add_jobs(&mut conn, &stream, 0, 500).await;
    // A malformed entry, one of a type not in the strict catalog, and one failing the
    // schema: each recorded with its reason, none blocking the entries behind it.
    let bad: [&[(&str, &str)]; 3] = [
        &[("type", "job.done"), ("data", "{not json")],
        &[("type", "job.unknown"), ("data", "{}")],
        &[("type", "job.done"), ("data", "{}")],
    ];
    for fields in bad {
        let _: String = redis::AsyncCommands::xadd(&mut conn, &stream, "*", fields)
            .await
            .unwrap();
    }
    add_jobs(&mut conn, &stream, 500, 1000).await;

    assert_each_once(&receiver, 1000).await;
    let rejections = eventually(Duration::from_secs(20), || async {
        let (_, r) = app
            .get(&format!("/v1/tenants/default/sources/{id}/rejections"))
            .await;
        (r["data"].as_array().unwrap().len() == 3).then_some(r)
    })
    .await
    .expect("three rejections recorded");
    let reasons: Vec<&str> = rejections["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not in the catalog")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("schema")), "{reasons:?}");
    assert!(rejections["data"][0]["message_id"]
        .as_str()
        .unwrap()
        .contains('-'));

    // Nothing left pending or unread in the group.
    let settled = eventually(Duration::from_secs(20), || async {
        let mut conn = redis().await;
        (group_backlog(&mut conn, &stream).await == (0, 0)).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{:?}",
        group_backlog(&mut conn, &stream).await
    );

    // Health and metrics show the source.
    let health = eventually(Duration::from_secs(10), || async {
        let (_, h) = app.get("/v1/health").await;
        (h["sources"][0]["ingested"] == 1000 && h["sources"][0]["lag"] == 0).then_some(h)
    })
    .await
    .expect("health shows the source");
    assert_eq!(health["sources"][0]["rejected"], 3, "{health}");
    assert_eq!(health["sources"][0]["status"], "running");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("hookrelay_source_messages_total")
                && l.contains(&format!("source=\"{id}\""))
                && l.contains("outcome=\"rejected\"")
        })
        .unwrap_or_else(|| panic!("no rejected counter in {text}"));
    assert!(line.ends_with(" 3"), "{line}");
    drop_stream(&mut conn, &stream).await;
    app.stop().await;
}

#[tokio::test]
async fn sources_are_admin_configured_and_tenant_readable() {
    let app = spawn_app().await;
    let stream = stream_name();
    // Refused with a reason: no stream, unknown scheme, unknown option.
    for (url, why) in [
        ("redis://127.0.0.1:6379/0", "stream"),
        ("mqtt://127.0.0.1:1883/t", "unsupported"),
        (
            "redis://127.0.0.1:6379/0?stream=s&maxlen=3",
            "unknown option",
        ),
    ] {
        let (s, e) = app
            .post("/v1/tenants/default/sources", json!({ "url": url }))
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(why), "{e}");
    }
    let (s, _) = app
        .post(
            "/v1/tenants/nope/sources",
            json!({ "url": format!("redis://127.0.0.1:6379/0?stream={stream}") }),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let src = create_source(
        &app.base,
        &app.http,
        &format!("redis://:hunter2@127.0.0.1:6379/0?stream={stream}"),
    )
    .await;
    assert!(!src.to_string().contains("hunter2"), "{src}");
    assert_eq!(src["kind"], "redis");

    // A tenant token reads its sources but may not create or delete one.
    let (_, tok) = app.post("/v1/tenants/default/tokens", json!({})).await;
    let token = tok["token"].as_str().unwrap();
    let (s, list) = send(
        app.http
            .get(app.url("/v1/tenants/default/sources"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], src["id"]);
    assert!(!list.to_string().contains("hunter2"));
    let (s, _) = send(
        app.http
            .post(app.url("/v1/tenants/default/sources"))
            .bearer_auth(token)
            .json(&json!({ "url": format!("redis://127.0.0.1:6379/0?stream={stream}") })),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let path = format!(
        "/v1/tenants/default/sources/{}",
        src["id"].as_str().unwrap()
    );
    let (s, _) = send(app.http.delete(app.url(&path)).bearer_auth(token)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The wrong password makes the consumer fail, visibly, and hookrelay unhealthy.
    let failing = eventually(Duration::from_secs(20), || async {
        let (code, h) = app.get("/v1/health").await;
        (h["sources"][0]["status"] == "failing").then_some((code, h))
    })
    .await
    .expect("the consumer reports its failure");
    assert_eq!(failing.0, StatusCode::SERVICE_UNAVAILABLE, "{}", failing.1);
    assert!(failing.1["sources"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("redis"));
    let (code, status) = send(app.http.get(app.url("/status"))).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(status["failing"]
        .as_array()
        .unwrap()
        .contains(&json!("source_failing")));

    // Deleted: gone from the list and from health.
    let (s, _) = send(app.req(reqwest::Method::DELETE, &path)).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get(&path).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let gone = eventually(Duration::from_secs(10), || async {
        let (_, h) = app.get("/v1/health").await;
        h["sources"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some());
    app.stop().await;
}

/// Flags of the processes the kill tests start: deliveries leased by a killed process are
/// due again after 3 s.
const KILL_FLAGS: [&str; 4] = ["--lease", "3s", "--request-timeout", "1s"];

/// A `hookrelay serve` on `db` with one endpoint delivering to `receiver`.
async fn server_delivering_to(
    db: &str,
    receiver: &Receiver,
    http: &reqwest::Client,
) -> crate::crash::Server {
    let server = start_server(db, &KILL_FLAGS);
    let (s, _) = send(
        http.post(format!("{}/v1/tenants/default/endpoints", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": receiver.url })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    server
}

/// The first source's state in `base`'s `/v1/health`.
async fn source_state(http: &reqwest::Client, base: &str) -> Value {
    let (_, h) = send(http.get(format!("{base}/v1/health")).bearer_auth(ADMIN)).await;
    h["sources"][0].clone()
}

/// `kill -9` of `server` as soon as its source has taken events in.
async fn kill_once_ingesting(server: &mut crate::crash::Server, http: &reqwest::Client) {
    let started = eventually(Duration::from_secs(30), || async {
        let s = source_state(http, &server.base).await;
        (s["ingested"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .await;
    assert!(started.is_some(), "the source never ingested");
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_consuming_a_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("sources.db").display());
    let receiver = Receiver::ok().await;
    let http = reqwest::Client::new();
    let mut server = server_delivering_to(&db, &receiver, &http).await;
    let stream = stream_name();
    let mut conn = redis().await;
    // Taken over from the killed process's consumer after 500 ms idle.
    create_source(
        &server.base,
        &http,
        &format!("redis://127.0.0.1:6379/0?stream={stream}&start=all&claim_idle_ms=500&batch=20"),
    )
    .await;
    // The producer keeps adding while hookrelay is killed and restarted.
    let producer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut conn = redis().await;
            for round in 0..20 {
                add_jobs(&mut conn, &stream, round * 50, round * 50 + 50).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    // Killed as soon as it has taken entries in: the rest were read or not yet read.
    kill_once_ingesting(&mut server, &http).await;
    let at_kill = group_backlog(&mut conn, &stream).await;
    producer.await.unwrap();
    let server = start_server(&db, &KILL_FLAGS);
    // What the kill left behind: entries read and not acknowledged, entries unread.
    eprintln!("backlog at the kill: (pending, lag) = {at_kill:?}");
    assert_each_once(&receiver, 1000).await;
    let settled = eventually(Duration::from_secs(30), || async {
        let mut conn = redis().await;
        (group_backlog(&mut conn, &stream).await == (0, 0)).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{:?}",
        group_backlog(&mut conn, &stream).await
    );
    drop(server);
    drop_stream(&mut conn, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_share_a_stream_without_creating_an_event_twice() {
    let (db, name) = create_pg_database().await;
    let receiver = Receiver::ok().await;
    let http = reqwest::Client::new();
    let a = start_server(&db, &[]);
    let b = start_server(&db, &[]);
    let (s, _) = send(
        http.post(format!("{}/v1/tenants/default/endpoints", a.base))
            .bearer_auth(ADMIN)
            .json(&json!({ "url": receiver.url })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let stream = stream_name();
    let mut conn = redis().await;
    create_source(
        &a.base,
        &http,
        &format!("redis://127.0.0.1:6379/0?stream={stream}&start=all&batch=10"),
    )
    .await;
    add_jobs(&mut conn, &stream, 0, 1000).await;
    assert_each_once(&receiver, 1000).await;
    // Each entry became an event in exactly one process.
    let ingested = |base: String| {
        let http = http.clone();
        async move {
            source_state(&http, &base).await["ingested"]
                .as_u64()
                .unwrap_or(0)
        }
    };
    let total = eventually(Duration::from_secs(20), || async {
        let sum = ingested(a.base.clone()).await + ingested(b.base.clone()).await;
        (sum == 1000).then_some(sum)
    })
    .await;
    assert_eq!(
        total,
        Some(1000),
        "events created: {} + {}",
        ingested(a.base.clone()).await,
        ingested(b.base.clone()).await
    );
    drop((a, b));
    drop_stream(&mut conn, &stream).await;
    drop_pg_database(&name).await;
}

/// A JetStream stream of its own, bound to `<name>.>`.
async fn nats_stream(name: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect("127.0.0.1:4222")
        .await
        .expect("the test NATS server is reachable (scripts/services starts it)");
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_stream_messages_arrive_once_and_bad_ones_are_recorded() {
    let app = spawn_app_on(Backend::Sqlite, |c| c.strict_event_types = true).await;
    let (s, _) = app
        .post("/v1/event-types", json!({"name": "job.done"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url })).await;
    let name = format!("HR_SRC_{}", ulid::Ulid::new());
    let js = nats_stream(&name).await;
    let subject = format!("{name}.jobs");
    let publish = |payload: String| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    for n in 0..500 {
        publish(json!({"type": "job.done", "data": {"n": n}}).to_string()).await;
    }
    publish("{not json".to_owned()).await;
    publish(json!({"type": "job.unknown", "data": {}}).to_string()).await;
    for n in 500..1000 {
        publish(json!({"type": "job.done", "data": {"n": n}}).to_string()).await;
    }
    // Created after the messages: `start=all` reads the stream from its beginning.
    let src = create_source(
        &app.base,
        &app.http,
        &format!("nats://127.0.0.1:4222/{name}?start=all&ack_wait_ms=2000"),
    )
    .await;
    let id = src["id"].as_str().unwrap().to_owned();
    assert_eq!(src["kind"], "nats");

    assert_each_once(&receiver, 1000).await;
    let text = rejected(&app, &id, 2).await;
    assert!(
        text.contains("malformed") && text.contains("not in the catalog"),
        "{text}"
    );

    // Nothing left to deliver to hookrelay or to acknowledge.
    settled(&app, true, 1000).await;
    let mut stream = js.get_stream(&name).await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("hookrelay").await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    let _ = stream.info().await;
    js.delete_stream(&name).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_while_consuming_nats_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("nats.db").display());
    let receiver = Receiver::ok().await;
    let http = reqwest::Client::new();
    let mut server = server_delivering_to(&db, &receiver, &http).await;
    let name = format!("HR_KILL_{}", ulid::Ulid::new());
    let js = nats_stream(&name).await;
    // Redelivered 1 s after the killed process took them without acknowledging.
    create_source(
        &server.base,
        &http,
        &format!("nats://127.0.0.1:4222/{name}?start=all&ack_wait_ms=1000&batch=20"),
    )
    .await;
    let producer = {
        let (js, subject) = (js.clone(), format!("{name}.jobs"));
        tokio::spawn(async move {
            for n in 0..1000u32 {
                let payload = json!({"type": "job.done", "data": {"n": n}}).to_string();
                js.publish(subject.clone(), payload.into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        })
    };
    kill_once_ingesting(&mut server, &http).await;
    producer.await.unwrap();
    let server = start_server(&db, &KILL_FLAGS);
    assert_each_once(&receiver, 1000).await;
    let settled = eventually(Duration::from_secs(30), || async {
        let s = source_state(&http, &server.base).await;
        (s["lag"] == 0 && s["pending"] == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "messages left unacknowledged");
    drop(server);
    js.delete_stream(&name).await.unwrap();
}

/// Good messages the SQS source test sends: `HOOKRELAY_SQS_SOURCE_MESSAGES`, 300 by default
/// (CI; moto passes about ten a second on a slow machine), 1,000 or more by hand.
fn sqs_source_messages() -> usize {
    std::env::var("HOOKRELAY_SQS_SOURCE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqs_queue_messages_arrive_once_and_bad_ones_are_recorded() {
    use crate::destinations::{aws_env, moto, sqs_client, sqs_create};
    aws_env();
    let server = moto().await;
    let client = sqs_client(server.port);
    let name = format!("hr-src-{}", ulid::Ulid::new().to_string().to_lowercase());
    let queue_url = sqs_create(&client, &name).await;
    let app = spawn_app_on(Backend::Sqlite, |c| c.strict_event_types = true).await;
    let (s, _) = app
        .post("/v1/event-types", json!({"name": "job.done"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url })).await;
    let messages = sqs_source_messages();
    let mut bodies: Vec<String> = (0..messages)
        .map(|n| json!({"type": "job.done", "data": {"n": n}}).to_string())
        .collect();
    bodies.insert(messages * 3 / 10, "{not json".to_owned());
    bodies.insert(
        messages * 6 / 10,
        json!({"type": "job.unknown", "data": {}}).to_string(),
    );
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .unwrap()
            })
            .collect();
        client
            .send_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
    }
    let src = create_source(
        &app.base,
        &app.http,
        &format!(
            "sqs://{name}?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A{}&wait_seconds=1",
            server.port
        ),
    )
    .await;
    let id = src["id"].as_str().unwrap().to_owned();
    assert_eq!(src["kind"], "sqs");

    assert_each_once(&receiver, messages as u64).await;
    let text = rejected(&app, &id, 2).await;
    assert!(
        text.contains("malformed") && text.contains("not in the catalog"),
        "{text}"
    );
    // Every message deleted: none visible, none in flight.
    settled(&app, true, messages as u64).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_queue_messages_arrive_once_and_bad_ones_are_recorded() {
    use lapin::{options::*, types::FieldTable, BasicProperties};
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("RabbitMQ on 127.0.0.1:5672 (scripts/services starts it)");
    let channel = conn.create_channel().await.unwrap();
    let queue = format!("hr-src-{}", ulid::Ulid::new().to_string().to_lowercase());
    channel
        .queue_declare(
            queue.as_str(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let publish = |body: String, id: String| {
        let (channel, queue) = (channel.clone(), queue.clone());
        async move {
            channel
                .basic_publish(
                    "",
                    queue.as_str(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default().with_message_id(id.as_str().into()),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    for n in 0..1000 {
        if n == 300 {
            publish("{not json".into(), "bad-1".into()).await;
        }
        if n == 600 {
            publish(
                json!({"type": "job.unknown", "data": {}}).to_string(),
                "bad-2".into(),
            )
            .await;
        }
        publish(
            json!({"type": "job.done", "data": {"n": n}}).to_string(),
            format!("m-{n}"),
        )
        .await;
    }
    let app = spawn_app_on(Backend::Sqlite, |c| c.strict_event_types = true).await;
    let (s, _) = app
        .post("/v1/event-types", json!({"name": "job.done"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url })).await;
    let src = create_source(
        &app.base,
        &app.http,
        &format!("amqp://guest:guest@127.0.0.1:5672/%2f?queue={queue}&prefetch=50"),
    )
    .await;
    let id = src["id"].as_str().unwrap().to_owned();
    assert_eq!(src["kind"], "amqp");
    assert!(
        !src["url"].as_str().unwrap().contains("guest:guest"),
        "{src}"
    );

    assert_each_once(&receiver, 1000).await;
    let text = rejected(&app, &id, 2).await;
    assert!(
        text.contains("malformed") && text.contains("not in the catalog"),
        "{text}"
    );
    assert!(text.contains("bad-1") && text.contains("bad-2"), "{text}");
    // Every message acknowledged: nothing ready, nothing unacknowledged.
    settled(&app, false, 1000).await;
    app.stop().await;
    // With hookrelay stopped, a message still unacknowledged would be ready again.
    let q = channel
        .queue_declare(
            queue.as_str(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    channel
        .queue_delete(queue.as_str(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_topic_records_arrive_once_and_bad_ones_are_recorded() {
    use rskafka::{
        client::partition::{Compression, UnknownTopicHandling},
        record::Record,
    };
    let server = crate::destinations::tansu().await;
    let broker = format!("127.0.0.1:{}", server.port);
    let client = rskafka::client::ClientBuilder::new(vec![broker.clone()])
        .build()
        .await
        .unwrap();
    let topic = format!("hr-src-{}", ulid::Ulid::new().to_string().to_lowercase());
    client
        .controller_client()
        .unwrap()
        .create_topic(&topic, 2, 1, 5_000)
        .await
        .unwrap();
    let mut bodies: Vec<String> = (0..1000)
        .map(|n| json!({"type": "job.done", "data": {"n": n}}).to_string())
        .collect();
    bodies.insert(300, "{not json".to_owned());
    bodies.insert(600, json!({"type": "job.unknown", "data": {}}).to_string());
    for partition in 0..2 {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        let mine: Vec<Record> = bodies
            .iter()
            .enumerate()
            .filter(|(i, _)| *i as i32 % 2 == partition)
            .map(|(_, b)| Record {
                key: None,
                value: Some(b.clone().into_bytes()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        for chunk in mine.chunks(100) {
            pc.produce(chunk.to_vec(), Compression::NoCompression)
                .await
                .unwrap();
        }
    }
    let app = spawn_app_on(Backend::Sqlite, |c| c.strict_event_types = true).await;
    let (s, _) = app
        .post("/v1/event-types", json!({"name": "job.done"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let receiver = Receiver::ok().await;
    app.endpoint(json!({ "url": receiver.url })).await;
    let src = create_source(
        &app.base,
        &app.http,
        &format!("kafka://{broker}/{topic}?start=all"),
    )
    .await;
    let id = src["id"].as_str().unwrap().to_owned();
    assert_eq!(src["kind"], "kafka");

    assert_each_once(&receiver, 1000).await;
    let text = rejected(&app, &id, 2).await;
    assert!(
        text.contains("malformed") && text.contains("not in the catalog"),
        "{text}"
    );
    settled(&app, false, 1000).await;

    // A restart resumes from the stored positions: nothing is read twice.
    let app = app.restart().await;
    let resumed = eventually(Duration::from_secs(30), || async {
        let (_, h) = app.get("/v1/health").await;
        (h["sources"][0]["status"] == "running").then_some(h)
    })
    .await;
    assert!(resumed.is_some(), "the source did not resume");
    let (_, h) = app.get("/v1/health").await;
    assert_eq!(h["sources"][0]["duplicates"], 0, "{}", h["sources"]);
    app.stop().await;
}
