//! Sources: brokers an application already has, whose messages become events.
//!
//! A source belongs to one tenant and names a broker in the style of destination URLs
//! (`redis://HOST:PORT/DB?stream=NAME`). Every process that runs the dispatcher consumes
//! every source: the [`Supervisor`] starts one consumer task per source and stops it when
//! the source is deleted. A message goes through [`Intake::take_batch`], the HTTP API's
//! path (validation, idempotency, schema check, fan-out), and is acknowledged to the broker
//! only after its event is committed. The message's broker id is its idempotency key unless
//! the message carries one, so a message the broker hands out again creates no second
//! event. A message that cannot become an event is kept with its reason
//! ([`crate::store::ops::SourceRejection`]), counted, and acknowledged: it never blocks the
//! ones behind it.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    domain::{self, new_id},
    ingest::{ingest, IngestError, NewEvent, SchemaCache},
    ops::{
        source_states::{SourceState, SourceStatus},
        Ops,
    },
    store::{
        ops::{Source, SourceRejection},
        storable, Ingested, Page, Store, StoreError,
    },
    wake::Waker,
};

pub mod amqp;
pub mod kafka;
pub mod nats;
pub mod redis;
pub mod sqs;

/// Rejected messages kept per source (the oldest go first).
pub const KEEP_REJECTIONS: u32 = 1_000;
/// Bytes of a rejected message kept.
pub const MAX_KEPT_BODY: usize = 4 * 1024;
/// How often every process re-reads the list of sources (changes made through this
/// process's API are picked up at once).
pub const RESCAN: Duration = Duration::from_secs(2);

/// A parsed source URL.
#[derive(Debug, Clone)]
pub enum SourceUrl {
    Redis(redis::RedisSource),
    Nats(nats::NatsSource),
    Sqs(sqs::SqsSource),
    Amqp(amqp::AmqpSource),
    Kafka(kafka::KafkaSource),
}

impl SourceUrl {
    /// Parses and checks a source URL; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() > 2048 {
            return Err("url is longer than 2048 characters".into());
        }
        let scheme = raw.split_once("://").map(|(s, _)| s).unwrap_or_default();
        match scheme {
            "redis" => redis::RedisSource::parse(raw).map(Self::Redis),
            "nats" => nats::NatsSource::parse(raw).map(Self::Nats),
            "sqs" => sqs::SqsSource::parse(raw).map(Self::Sqs),
            "amqp" | "amqps" => amqp::AmqpSource::parse(raw).map(Self::Amqp),
            "kafka" => kafka::KafkaSource::parse(raw).map(Self::Kafka),
            _ => Err(format!(
                "unsupported source url scheme {scheme:?}: sources read redis:// (Redis Streams), nats:// (NATS JetStream), sqs:// (AWS SQS), amqp:// (RabbitMQ) and kafka:// (Kafka)"
            )),
        }
    }

    /// The kind of broker: `redis`, `nats`, `sqs`, `amqp`, `kafka`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Nats(_) => "nats",
            Self::Sqs(_) => "sqs",
            Self::Amqp(_) => "amqp",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// The documented envelope of a message: the members of `POST /v1/tenants/{t}/events`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub data: serde_json::Value,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
}

impl Envelope {
    /// Reads an envelope from a JSON object; the error says what is wrong with it.
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("malformed message: {e}"))
    }
}

/// One message read from a broker.
#[derive(Debug)]
pub struct Message {
    /// The broker's id of the message: stable across redeliveries.
    pub id: String,
    /// The message as text, for the rejection record.
    pub raw: String,
    pub envelope: Result<Envelope, String>,
}

impl Message {
    /// A message whose payload is the envelope as a JSON object (invalid UTF-8 replaced).
    pub fn json(id: String, payload: &[u8]) -> Self {
        let raw = String::from_utf8_lossy(payload).into_owned();
        Self {
            id,
            envelope: Envelope::from_json(&raw),
            raw,
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// A new event.
    Created,
    /// An event with the same idempotency key exists (the broker handed it out again).
    Duplicate,
    /// Kept as a rejection with its reason.
    Rejected,
}

impl Taken {
    fn label(self) -> &'static str {
        match self {
            Self::Created => "ingested",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }
}

/// Turns messages into events through the same path as the HTTP API.
pub struct Intake {
    pub store: Arc<dyn Store>,
    pub schemas: Arc<SchemaCache>,
    pub waker: Waker,
    pub default_max_attempts: u32,
    /// Largest message taken, as the API's body limit.
    pub max_bytes: usize,
    pub ops: Arc<Ops>,
}

impl Intake {
    /// Takes a batch of messages of one source, in order, sharing the store's group commit.
    /// Each answer is `Err` only when the store could not take the message now: it must not
    /// be acknowledged, and is read again later.
    pub async fn take_batch(
        &self,
        source: &Source,
        messages: Vec<Message>,
    ) -> Vec<Result<Taken, StoreError>> {
        // A batch was read: the reader is running, whatever the store answers.
        self.running(source);
        // Polled in order, so the ingests reach the store's writer in the broker's order.
        let answers =
            futures::future::join_all(messages.into_iter().map(|m| self.take(source, m))).await;
        let mut states = self.ops.sources.lock();
        let mut state = states.get_mut(&source.id);
        for taken in answers.iter().flatten() {
            self.ops
                .metrics
                .source_messages
                .with_label_values(&[source.id.as_str(), taken.label()])
                .inc();
            if let Some(s) = state.as_deref_mut() {
                match taken {
                    Taken::Created => s.ingested += 1,
                    Taken::Duplicate => s.duplicates += 1,
                    Taken::Rejected => s.rejected += 1,
                }
                s.last_message_at = Some(domain::now());
            }
        }
        drop(states);
        answers
    }

    async fn take(&self, source: &Source, message: Message) -> Result<Taken, StoreError> {
        let reason = match self.event(source, &message) {
            Err(reason) => reason,
            Ok(new) => {
                match ingest(
                    self.store.as_ref(),
                    self.schemas.clone(),
                    &self.waker,
                    &source.tenant_id,
                    self.default_max_attempts,
                    new,
                )
                .await
                {
                    Ok(Ingested::Created(..)) => return Ok(Taken::Created),
                    Ok(Ingested::Existing(..)) => return Ok(Taken::Duplicate),
                    Err(IngestError::Store(e)) => match e {
                        StoreError::LimitReached(m) => m,
                        other => return Err(other),
                    },
                    Err(e) => e.to_string(),
                }
            }
        };
        self.reject(source, &message, reason).await?;
        Ok(Taken::Rejected)
    }

    /// The event a message asks for, or why it cannot be one.
    fn event(&self, source: &Source, message: &Message) -> Result<NewEvent, String> {
        if message.raw.len() > self.max_bytes {
            return Err(format!(
                "message is larger than {} bytes, the most allowed",
                self.max_bytes
            ));
        }
        let envelope = message.envelope.as_ref().map_err(Clone::clone)?;
        if envelope.data.is_null() {
            return Err("malformed message: data is required".into());
        }
        Ok(NewEvent {
            event_type: envelope.event_type.clone(),
            data: envelope.data.clone(),
            actor: envelope.actor.clone(),
            // The message's own key, else its broker id (a message without either, which
            // only RabbitMQ allows, has no key).
            idempotency_key: envelope.idempotency_key.clone().or_else(|| {
                (!message.id.is_empty()).then(|| format!("{}:{}", source.id, message.id))
            }),
            deliver_at: None,
            traceparent: envelope.traceparent.clone(),
        })
    }

    async fn reject(
        &self,
        source: &Source,
        message: &Message,
        reason: String,
    ) -> Result<(), StoreError> {
        let mut body = storable(&message.raw).into_owned();
        let truncated = body.len() > MAX_KEPT_BODY;
        if truncated {
            let mut cut = MAX_KEPT_BODY;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
        }
        tracing::info!(source = %source.id, message = %message.id, %reason, "source message rejected");
        self.store
            .add_source_rejection(
                &SourceRejection {
                    id: new_id("rej"),
                    source_id: source.id.clone(),
                    message_id: storable(&message.id).chars().take(256).collect(),
                    reason: storable(&reason).chars().take(1024).collect(),
                    body,
                    truncated,
                    received_at: domain::now(),
                },
                KEEP_REJECTIONS,
            )
            .await
    }

    /// Records that a source's consumer is connected and reading.
    pub fn running(&self, source: &Source) {
        if let Some(s) = self.ops.sources.lock().get_mut(&source.id) {
            s.status = SourceStatus::Running;
        }
    }

    /// Records that another process reads this source.
    pub fn standby(&self, source: &Source) {
        if let Some(s) = self.ops.sources.lock().get_mut(&source.id) {
            s.status = SourceStatus::Standby;
        }
    }

    /// Records a failure of a source's consumer (it retries by itself).
    pub fn failing(&self, source: &Source, error: &str) {
        tracing::warn!(source = %source.id, error, "source failing");
        if let Some(s) = self.ops.sources.lock().get_mut(&source.id) {
            s.status = SourceStatus::Failing;
            s.last_error = Some(error.chars().take(1024).collect());
            s.last_error_at = Some(domain::now());
        }
    }

    /// Records the broker's backlog: entries not yet read, and read but not acknowledged.
    pub fn backlog(&self, source: &Source, lag: Option<u64>, pending: Option<u64>) {
        if let Some(lag) = lag {
            self.ops
                .metrics
                .source_lag
                .with_label_values(&[source.id.as_str()])
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
        if let Some(s) = self.ops.sources.lock().get_mut(&source.id) {
            s.lag = lag;
            s.pending = pending;
        }
    }
}

/// Starts, and stops, one consumer per source.
pub struct Supervisor {
    pub intake: Arc<Intake>,
    /// This process's consumer name at the brokers.
    pub consumer: String,
}

impl Supervisor {
    /// Runs until `stop`, re-reading the sources every [`RESCAN`] and whenever this process
    /// changes one.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut running: HashMap<String, (String, JoinHandle<()>)> = HashMap::new();
        loop {
            match self.all_sources().await {
                Ok(sources) => self.reconcile(&mut running, sources, &stop),
                Err(e) => tracing::warn!(error = %e, "cannot read the sources"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = self.intake.ops.sources_changed.notified() => {}
                _ = tokio::time::sleep(RESCAN) => {}
            }
        }
        // Each consumer finishes the batch it holds (and acknowledges it), then returns.
        for (_, (_, task)) in running {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    async fn all_sources(&self) -> Result<Vec<Source>, StoreError> {
        let mut all = Vec::new();
        let mut page = Page {
            after_id: None,
            limit: 500,
        };
        loop {
            let batch = self.intake.store.list_sources(None, &page).await?;
            let done = batch.len() < page.limit as usize;
            page.after_id = batch.last().map(|s| s.id.clone());
            all.extend(batch);
            if done {
                return Ok(all);
            }
        }
    }

    fn reconcile(
        &self,
        running: &mut HashMap<String, (String, JoinHandle<()>)>,
        sources: Vec<Source>,
        stop: &watch::Receiver<bool>,
    ) {
        let wanted: HashMap<&str, &Source> = sources.iter().map(|s| (s.id.as_str(), s)).collect();
        running.retain(|id, (url, task)| {
            let keep =
                wanted.get(id.as_str()).is_some_and(|s| s.url == *url) && !task.is_finished();
            if !keep {
                task.abort();
                self.forget(id);
            }
            keep
        });
        for source in sources {
            if running.contains_key(&source.id) {
                continue;
            }
            let url = match SourceUrl::parse(&source.url) {
                Ok(url) => url,
                Err(e) => {
                    // Checked when created; only a manual edit gets here.
                    tracing::warn!(source = %source.id, error = %e, "source url is invalid");
                    continue;
                }
            };
            self.intake.ops.sources.lock().insert(
                source.id.clone(),
                SourceState {
                    id: source.id.clone(),
                    tenant_id: source.tenant_id.clone(),
                    kind: url.kind().to_owned(),
                    status: SourceStatus::Starting,
                    lag: None,
                    pending: None,
                    ingested: 0,
                    duplicates: 0,
                    rejected: 0,
                    last_message_at: None,
                    last_error: None,
                    last_error_at: None,
                },
            );
            let consumer = Consumer {
                source: source.clone(),
                intake: self.intake.clone(),
                name: self.consumer.clone(),
                stop: stop.clone(),
            };
            let task = match url {
                SourceUrl::Redis(r) => tokio::spawn(run(r, consumer)),
                SourceUrl::Nats(n) => tokio::spawn(run(n, consumer)),
                SourceUrl::Sqs(q) => tokio::spawn(run(q, consumer)),
                SourceUrl::Amqp(a) => tokio::spawn(run(a, consumer)),
                SourceUrl::Kafka(k) => tokio::spawn(run(k, consumer)),
            };
            running.insert(source.id.clone(), (source.url.clone(), task));
        }
    }

    /// Drops a stopped consumer's state and metrics.
    fn forget(&self, id: &str) {
        self.intake.ops.sources.lock().remove(id);
        let m = &self.intake.ops.metrics;
        let _ = m.source_lag.remove_label_values(&[id]);
        for outcome in [Taken::Created, Taken::Duplicate, Taken::Rejected] {
            let _ = m
                .source_messages
                .remove_label_values(&[id, outcome.label()]);
        }
    }
}

/// One connection's life of a source's reader: returns `Ok` when the process stops, `Err`
/// on any failure (recorded, then the reader starts again with backoff; what was read and
/// not acknowledged is read again).
pub trait Session {
    fn session(&self, c: &mut Consumer) -> impl Future<Output = Result<(), String>> + Send;
}

/// Reads a source until the process stops, one session after another with backoff.
pub async fn run(reader: impl Session, mut c: Consumer) {
    let mut backoff = Duration::from_millis(100);
    while !c.stopping() {
        match reader.session(&mut c).await {
            Ok(()) => return,
            Err(e) => {
                c.intake.failing(&c.source, &e);
                c.pause(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// How often a reader reads its broker's backlog for `/v1/health` and `/metrics`.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(2);

/// The `start` option: where a reader hookrelay creates at the broker (a group, a
/// consumer, positions) starts: `new` (the default) or `all`.
pub fn start_at_beginning(options: &crate::destinations::options::Options) -> Result<bool, String> {
    match options.string("start").unwrap_or("new") {
        "new" => Ok(false),
        "all" => Ok(true),
        other => Err(format!(
            "start must be new (what arrives from now on) or all (everything the broker holds), got {other:?}"
        )),
    }
}

/// What a consumer task needs.
pub struct Consumer {
    pub source: Source,
    pub intake: Arc<Intake>,
    /// This process's consumer name at the broker.
    pub name: String,
    pub stop: watch::Receiver<bool>,
}

impl Consumer {
    /// Whether the process is stopping.
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `d`, or less when the process stops.
    pub async fn pause(&mut self, d: Duration) {
        let _ = tokio::time::timeout(d, self.stop.wait_for(|s| *s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_parse_or_say_why() {
        let e = Envelope::from_json(r#"{"type":"job.done","data":{"id":1},"actor":"u1"}"#).unwrap();
        assert_eq!(e.event_type, "job.done");
        assert_eq!(e.actor.as_deref(), Some("u1"));
        assert!(Envelope::from_json("not json")
            .unwrap_err()
            .starts_with("malformed message"));
        assert!(Envelope::from_json(r#"{"data":{}}"#)
            .unwrap_err()
            .contains("type"));
    }

    #[test]
    fn source_urls_name_their_kind_or_are_refused() {
        assert_eq!(
            SourceUrl::parse("redis://127.0.0.1:6379/0?stream=jobs")
                .unwrap()
                .kind(),
            "redis"
        );
        assert!(SourceUrl::parse("ftp://x")
            .unwrap_err()
            .contains("unsupported"));
        assert!(
            SourceUrl::parse(&format!("redis://h/0?stream={}", "x".repeat(3000)))
                .unwrap_err()
                .contains("2048")
        );
    }
}
