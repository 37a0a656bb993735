//! Redis Streams source: a consumer group read with `XREADGROUP`, entries acknowledged
//! (`XACK`) only once their event is committed.
//!
//! `redis://[:PASSWORD@]HOST:PORT/DB?stream=NAME&group=G&start=new|all&claim_idle_ms=N&batch=N`
//!
//! - Every process reads as its own consumer of the group (`hookrelay-<dispatcher id>`), so
//!   the group hands each entry to one process.
//! - Entries another consumer read and never acknowledged (its process was killed) are taken
//!   over with `XAUTOCLAIM` once idle for `claim_idle_ms`; the entry id is the idempotency
//!   key, so an entry taken over after its event was committed creates no second event.
//! - Consumers of the group named `hookrelay-…` that hold nothing and have been idle for an
//!   hour (processes gone) are removed.
//!
//! An entry is either the envelope's members as fields (`type`, `data` as JSON text,
//! `actor`, `idempotency_key`, `traceparent`) or one field `body` holding the envelope as a
//! JSON object.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use redis::{
    aio::MultiplexedConnection,
    streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply,
        StreamInfoGroupsReply, StreamReadOptions, StreamReadReply,
    },
    AsyncCommands, Value,
};

use super::{Consumer, Envelope, Message, BACKLOG_EVERY};
use crate::destinations::options::Options;

/// Prefix of the consumer names hookrelay uses in a group.
const CONSUMER_PREFIX: &str = "hookrelay-";
/// How long one `XREADGROUP` waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Idle time after which a consumer holding nothing is removed from the group.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(3600);

/// A parsed Redis Streams source URL.
#[derive(Clone, Debug)]
pub struct RedisSource {
    connection: crate::destinations::options::ConnectionUrl,
    pub stream: String,
    pub group: String,
    /// Where a group created by hookrelay starts: only entries added from now on (`new`,
    /// the default) or every entry in the stream (`all`).
    pub start_at_beginning: bool,
    pub claim_idle: Duration,
    pub batch: usize,
}

impl RedisSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = crate::destinations::options::broker_url(raw)?;
        let connection = crate::destinations::redis::connection_url(&url)?;
        let options = Options::parse(
            "redis",
            url.query(),
            &["stream", "group", "start", "claim_idle_ms", "batch"],
        )?;
        let stream = options
            .string("stream")
            .ok_or("redis:// source url needs the stream name: ?stream=NAME")?
            .to_owned();
        let group = options.string("group").unwrap_or("hookrelay").to_owned();
        for (what, value) in [("stream", &stream), ("group", &group)] {
            if value.len() > 256 {
                return Err(format!("the {what} name is longer than 256 characters"));
            }
        }
        let start_at_beginning = super::start_at_beginning(&options)?;
        let claim_idle_ms = options
            .number("claim_idle_ms", 100..=86_400_000)?
            .unwrap_or(30_000);
        let batch = options.number("batch", 1..=1000)?.unwrap_or(500);
        Ok(Self {
            connection: crate::destinations::options::ConnectionUrl(connection),
            stream,
            group,
            start_at_beginning,
            claim_idle: Duration::from_millis(claim_idle_ms),
            // At most 1,000: a checked range.
            batch: usize::try_from(batch).unwrap_or(500),
        })
    }
}

impl super::Session for RedisSource {
    /// One connection's life: returns `Ok` when the process stops, `Err` on any failure
    /// (the caller waits and starts again; unacknowledged entries are read again).
    async fn session(&self, c: &mut Consumer) -> Result<(), String> {
        let client = redis::Client::open(&*self.connection)
            .map_err(|e| format!("invalid redis url: {e}"))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(10)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        self.create_group(&mut conn).await?;
        c.intake.running(&c.source);
        let consumer = format!("{CONSUMER_PREFIX}{}", c.name);
        // Entries this consumer read before a reconnect come first.
        let mut own_pending = true;
        let mut last_claim: Option<Instant> = None;
        let mut last_backlog: Option<Instant> = None;
        let claim_every = (self.claim_idle / 2).max(Duration::from_millis(100));
        while !c.stopping() {
            if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(Instant::now());
                self.backlog(&mut conn, c).await?;
            }
            if last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
                last_claim = Some(Instant::now());
                self.take_over(&mut conn, c, &consumer).await?;
            }
            let mut options = StreamReadOptions::default()
                .group(&self.group, &consumer)
                .count(self.batch);
            if !own_pending {
                options = options.block(BLOCK.as_millis() as usize);
            }
            let start = if own_pending { "0" } else { ">" };
            let reply: Option<StreamReadReply> = conn
                .xread_options(&[&self.stream], &[start], &options)
                .await
                .map_err(|e| format!("redis: {e}"))?;
            let entries: Vec<StreamId> = reply
                .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
                .unwrap_or_default();
            if own_pending && entries.is_empty() {
                own_pending = false;
                continue;
            }
            self.take(&mut conn, c, entries).await?;
        }
        Ok(())
    }
}

impl RedisSource {
    /// Creates the group (and the stream) unless it exists.
    async fn create_group(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let start = if self.start_at_beginning { "0" } else { "$" };
        let created: Result<(), redis::RedisError> = conn
            .xgroup_create_mkstream(&self.stream, &self.group, start)
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(format!("redis: creating group {}: {e}", self.group)),
        }
    }

    /// Takes over entries idle in other consumers for `claim_idle`, and removes consumers
    /// of gone processes.
    async fn take_over(
        &self,
        conn: &mut MultiplexedConnection,
        c: &mut Consumer,
        consumer: &str,
    ) -> Result<(), String> {
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &self.stream,
                    &self.group,
                    consumer,
                    self.claim_idle.as_millis() as u64,
                    &cursor,
                    StreamAutoClaimOptions::default().count(self.batch),
                )
                .await
                .map_err(|e| format!("redis: {e}"))?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    source = %c.source.id,
                    entries = reply.claimed.len(),
                    "taking over entries another consumer did not acknowledge"
                );
            }
            self.take(conn, c, reply.claimed).await?;
            if reply.next_stream_id == "0-0" || c.stopping() {
                break;
            }
            cursor = reply.next_stream_id;
        }
        let consumers: StreamInfoConsumersReply = conn
            .xinfo_consumers(&self.stream, &self.group)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        for gone in consumers.consumers.iter().filter(|k| {
            k.name.starts_with(CONSUMER_PREFIX)
                && k.name != consumer
                && k.pending == 0
                && k.idle as u128 > FORGET_CONSUMER_AFTER.as_millis()
        }) {
            let _: Result<i64, _> = conn
                .xgroup_delconsumer(&self.stream, &self.group, &gone.name)
                .await;
        }
        Ok(())
    }

    /// Reads the group's lag and pending count.
    async fn backlog(&self, conn: &mut MultiplexedConnection, c: &Consumer) -> Result<(), String> {
        let groups: StreamInfoGroupsReply = conn
            .xinfo_groups(&self.stream)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        if let Some(g) = groups.groups.iter().find(|g| g.name == self.group) {
            c.intake
                .backlog(&c.source, g.lag.map(|n| n as u64), Some(g.pending as u64));
        }
        Ok(())
    }

    /// Turns entries into events and acknowledges those that are settled (an event, a
    /// duplicate or a rejection). `Err` when the store could not take one: it stays pending
    /// and is read again.
    async fn take(
        &self,
        conn: &mut MultiplexedConnection,
        c: &Consumer,
        entries: Vec<StreamId>,
    ) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let messages = entries.into_iter().map(message).collect();
        let answers = c.intake.take_batch(&c.source, messages).await;
        let mut settled = Vec::with_capacity(ids.len());
        let mut failure = None;
        for (id, answer) in ids.into_iter().zip(answers) {
            match answer {
                Ok(_) => settled.push(id),
                Err(e) => failure = Some(format!("store: {e}")),
            }
        }
        if !settled.is_empty() {
            let _: i64 = conn
                .xack(&self.stream, &self.group, &settled)
                .await
                .map_err(|e| format!("redis: {e}"))?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Text of a field value; binary values with invalid UTF-8 are replaced.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// An entry as a message: its fields are the envelope's members, or `body` holds it.
fn message(entry: StreamId) -> Message {
    let fields: HashMap<String, String> = entry
        .map
        .iter()
        .filter_map(|(k, v)| text(v).map(|t| (k.clone(), t)))
        .collect();
    let raw = serde_json::to_string(&fields).unwrap_or_default();
    let envelope = if let (Some(body), false) = (fields.get("body"), fields.contains_key("type")) {
        Envelope::from_json(body)
    } else {
        envelope_of_fields(&fields)
    };
    Message {
        id: entry.id,
        raw,
        envelope,
    }
}

fn envelope_of_fields(fields: &HashMap<String, String>) -> Result<Envelope, String> {
    let event_type = fields
        .get("type")
        .ok_or("malformed message: no field \"type\" (nor a field \"body\" with the envelope)")?
        .clone();
    let data = match fields.get("data") {
        Some(d) => serde_json::from_str(d)
            .map_err(|e| format!("malformed message: field \"data\" is not JSON: {e}"))?,
        None => return Err("malformed message: no field \"data\"".into()),
    };
    Ok(Envelope {
        event_type,
        data,
        actor: fields.get("actor").cloned(),
        idempotency_key: fields.get("idempotency_key").cloned(),
        traceparent: fields.get("traceparent").cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: "1-0".into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn urls_parse_with_defaults_and_refuse_mistakes() {
        let s = RedisSource::parse("redis://:pw@127.0.0.1:6380/2?stream=jobs").unwrap();
        assert_eq!(s.connection, "redis://:pw@127.0.0.1:6380/2");
        assert_eq!((s.stream.as_str(), s.group.as_str()), ("jobs", "hookrelay"));
        assert!(!s.start_at_beginning);
        assert_eq!(s.claim_idle, Duration::from_secs(30));
        assert_eq!(s.batch, 500);
        let s =
            RedisSource::parse("redis://h/0?stream=j&group=g&start=all&claim_idle_ms=500&batch=10")
                .unwrap();
        assert!(s.start_at_beginning);
        assert_eq!((s.group.as_str(), s.batch), ("g", 10));
        crate::destinations::options::refuses(
            RedisSource::parse,
            &[
                ("redis://h/0", "stream"),
                ("redis://h/0?stream=j&start=later", "start"),
                ("redis://h/0?stream=j&claim_idle_ms=1", "claim_idle_ms"),
                ("redis://h/0?stream=j&batch=0", "batch"),
                ("redis://h/0?stream=j&maxlen=3", "unknown option"),
            ],
        );
        assert!(!format!("{s:?}").contains("pw"));
    }

    #[test]
    fn entries_carry_the_envelope_as_fields_or_as_a_body() {
        let m = message(entry(&[
            ("type", "job.done"),
            ("data", r#"{"id":7}"#),
            ("actor", "u"),
        ]));
        let e = m.envelope.unwrap();
        assert_eq!(
            (e.event_type.as_str(), e.data["id"].as_i64()),
            ("job.done", Some(7))
        );
        let m = message(entry(&[("body", r#"{"type":"job.done","data":{}}"#)]));
        assert_eq!(m.envelope.unwrap().event_type, "job.done");
        for (fields, why) in [
            (vec![("data", "{}")], "no field \"type\""),
            (vec![("type", "a"), ("data", "{")], "not JSON"),
            (vec![("type", "a")], "no field \"data\""),
            (vec![("body", "[1]")], "malformed"),
        ] {
            let e = message(entry(&fields)).envelope.unwrap_err();
            assert!(e.contains(why), "{fields:?}: {e}");
        }
    }
}
