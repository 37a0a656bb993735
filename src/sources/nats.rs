//! NATS JetStream source: a durable pull consumer on an existing stream, messages
//! acknowledged only once their event is committed.
//!
//! `nats://[USER:PASS@]HOST:PORT/STREAM?consumer=NAME&subject=FILTER&start=new|all&ack_wait_ms=N&batch=N`
//!
//! - Every process pulls from the same durable consumer, so JetStream hands each message
//!   to one process.
//! - A message not acknowledged within `ack_wait_ms` (its process was killed) is
//!   redelivered; its stream sequence is the idempotency key, so a message redelivered after
//!   its event was committed creates no second event.
//! - When the store cannot take a message it is negatively acknowledged with a delay, and
//!   comes back.
//!
//! The message payload is the envelope as a JSON object.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;

use super::{Consumer, Message, BACKLOG_EVERY};
use crate::destinations::options::{broker_url, credentials, decode, host, Options, Password};

/// How long to wait before a message the store could not take comes back.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// A parsed NATS JetStream source URL.
#[derive(Clone, Debug)]
pub struct NatsSource {
    /// `nats://HOST:PORT`: the server, without credentials.
    server: String,
    user: Option<String>,
    password: Option<Password>,
    pub stream: String,
    pub consumer: String,
    /// Only messages of subjects matching this filter (default: the whole stream).
    pub subject: Option<String>,
    /// Where a consumer hookrelay creates starts: only messages stored from now on (`new`,
    /// the default) or every message in the stream (`all`).
    pub start_at_beginning: bool,
    pub ack_wait: Duration,
    pub batch: usize,
}

/// A stream or consumer name as NATS allows it.
fn valid_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 256
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!(
            "invalid nats {what} name {name:?}: 1 to 256 characters, no spaces, '.', '*', '>', '/' or '\\'"
        ));
    }
    Ok(())
}

impl NatsSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = broker_url(raw)?;
        let host = host(&url, "nats:// source url", "nats://HOST:PORT/STREAM")?;
        let stream = decode(url.path().trim_start_matches('/'));
        if stream.is_empty() {
            return Err(
                "nats:// source url needs the stream as its path: nats://HOST:PORT/STREAM".into(),
            );
        }
        valid_name("stream", &stream)?;
        let options = Options::parse(
            "nats",
            url.query(),
            &["consumer", "subject", "start", "ack_wait_ms", "batch"],
        )?;
        let consumer = options.string("consumer").unwrap_or("hookrelay").to_owned();
        valid_name("consumer", &consumer)?;
        let subject = options.string("subject").map(str::to_owned);
        if subject
            .as_deref()
            .is_some_and(|s| s.len() > 256 || s.contains(char::is_whitespace))
        {
            return Err(
                "the subject filter may not contain spaces (at most 256 characters)".into(),
            );
        }
        let start_at_beginning = super::start_at_beginning(&options)?;
        let ack_wait_ms = options
            .number("ack_wait_ms", 1_000..=86_400_000)?
            .unwrap_or(30_000);
        let batch = options.number("batch", 1..=1000)?.unwrap_or(500);
        let (user, password) = credentials(&url);
        Ok(Self {
            server: format!("nats://{host}:{}", url.port().unwrap_or(4222)),
            user,
            password,
            stream,
            consumer,
            subject,
            start_at_beginning,
            ack_wait: Duration::from_millis(ack_wait_ms),
            // At most 1,000: a checked range.
            batch: usize::try_from(batch).unwrap_or(500),
        })
    }
}

impl super::Session for NatsSource {
    async fn session(&self, c: &mut Consumer) -> Result<(), String> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .name("hookrelay-source");
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            options = options.user_and_password(u.clone(), p.expose().to_owned());
        } else if let Some(token) = &self.user {
            options = options.token(token.clone());
        }
        let client = options
            .connect(&self.server)
            .await
            .map_err(|e| format!("nats: {e}"))?;
        let js = jetstream::new(client);
        let stream = js
            .get_stream(&self.stream)
            .await
            .map_err(|e| format!("nats: stream {}: {e}", self.stream))?;
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &self.consumer,
                pull::Config {
                    durable_name: Some(self.consumer.clone()),
                    ack_wait: self.ack_wait,
                    filter_subject: self.subject.clone().unwrap_or_default(),
                    deliver_policy: if self.start_at_beginning {
                        jetstream::consumer::DeliverPolicy::All
                    } else {
                        jetstream::consumer::DeliverPolicy::New
                    },
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("nats: consumer {}: {e}", self.consumer))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.batch)
            .messages()
            .await
            .map_err(|e| format!("nats: {e}"))?
            .ready_chunks(self.batch);
        c.intake.running(&c.source);
        let mut last_backlog: Option<std::time::Instant> = None;
        loop {
            if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(std::time::Instant::now());
                let info = consumer.info().await.map_err(|e| format!("nats: {e}"))?;
                c.intake.backlog(
                    &c.source,
                    Some(info.num_pending),
                    Some(info.num_ack_pending as u64),
                );
            }
            let chunk = tokio::select! {
                _ = c.stop.wait_for(|s| *s) => return Ok(()),
                chunk = tokio::time::timeout(BACKLOG_EVERY, messages.next()) => chunk,
            };
            let chunk = match chunk {
                Err(_) => continue,
                Ok(None) => return Err("nats: the message stream ended".into()),
                Ok(Some(chunk)) => chunk,
            };
            let mut received = Vec::with_capacity(chunk.len());
            for m in chunk {
                received.push(m.map_err(|e| format!("nats: {e}"))?);
            }
            let batch: Vec<Message> = received
                .iter()
                .map(|m| {
                    let id = m.info().map(|i| i.stream_sequence.to_string());
                    Message::json(id.unwrap_or_default(), &m.payload)
                })
                .collect();
            let answers = c.intake.take_batch(&c.source, batch).await;
            let mut failure = None;
            for (m, answer) in received.iter().zip(answers) {
                let ack = match answer {
                    Ok(_) => m.ack().await,
                    Err(e) => {
                        failure = Some(format!("store: {e}"));
                        m.ack_with(AckKind::Nak(Some(RETRY_AFTER))).await
                    }
                };
                ack.map_err(|e| format!("nats: acknowledging: {e}"))?;
            }
            if let Some(e) = failure {
                c.intake.failing(&c.source, &e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_mistakes() {
        let s = NatsSource::parse("nats://u:pw@127.0.0.1:4223/JOBS").unwrap();
        assert_eq!(s.server, "nats://127.0.0.1:4223");
        assert_eq!(
            (s.stream.as_str(), s.consumer.as_str()),
            ("JOBS", "hookrelay")
        );
        assert_eq!((s.ack_wait, s.batch), (Duration::from_secs(30), 500));
        assert!(!s.start_at_beginning && s.subject.is_none());
        assert!(!format!("{s:?}").contains("pw"));
        let s = NatsSource::parse(
            "nats://h/JOBS?consumer=c1&subject=jobs.%3E&start=all&ack_wait_ms=2000&batch=5",
        )
        .unwrap();
        assert_eq!(s.subject.as_deref(), Some("jobs.>"));
        assert!(s.start_at_beginning);
        crate::destinations::options::refuses(
            NatsSource::parse,
            &[
                ("nats://h", "stream"),
                ("nats://h/a.b", "invalid nats stream"),
                ("nats://h/S?consumer=a.b", "invalid nats consumer"),
                ("nats://h/S?ack_wait_ms=5", "ack_wait_ms"),
                ("nats://h/S?start=x", "start"),
                ("nats://h/S?maxlen=1", "unknown option"),
            ],
        );
    }
}
