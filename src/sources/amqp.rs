//! RabbitMQ (AMQP 0-9-1) source: a consumer of an existing queue with manual
//! acknowledgements, each message acknowledged only once its event is committed.
//!
//! `amqp://USER:PASS@HOST:PORT/VHOST?queue=NAME&prefetch=N`
//!
//! - Every process consumes the queue; RabbitMQ hands each message to one consumer.
//! - A message whose consumer died unacknowledged is redelivered. Its `message_id`
//!   property (or the envelope's `idempotency_key`) is the idempotency key, so such a
//!   message creates no second event; a message with neither has no key, and may become
//!   a second event after a crash.
//! - When the store cannot take a message it is rejected with requeue, and comes back.
//!
//! The message body is the envelope as a JSON object.

use std::time::Duration;

use futures::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};

use super::{Consumer, Message, BACKLOG_EVERY};
use crate::destinations::amqp::connection_uri;

/// A parsed RabbitMQ source URL.
#[derive(Clone, Debug)]
pub struct AmqpSource {
    connection: crate::destinations::options::ConnectionUrl,
    pub queue: String,
    /// Messages RabbitMQ hands this process before it acknowledges (and at most taken, and
    /// committed, together).
    pub prefetch: u16,
}

impl AmqpSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (connection, options) = connection_uri(raw, &["queue", "prefetch"])?;
        let queue = options
            .string("queue")
            .ok_or("amqp:// source url needs the queue: ?queue=NAME")?
            .to_owned();
        if queue.len() > 255 {
            return Err("the queue name is at most 255 bytes".into());
        }
        let prefetch = options.number("prefetch", 1..=1000)?.unwrap_or(500);
        Ok(Self {
            connection: crate::destinations::options::ConnectionUrl(connection),
            queue,
            // At most 1,000: a checked range.
            prefetch: u16::try_from(prefetch).unwrap_or(500),
        })
    }
}

impl super::Session for AmqpSource {
    async fn session(&self, c: &mut Consumer) -> Result<(), String> {
        let amqp = |e: lapin::Error| format!("amqp: {e}");
        let connection = tokio::time::timeout(
            Duration::from_secs(5),
            Connection::connect(&self.connection, ConnectionProperties::default()),
        )
        .await
        .map_err(|_| "amqp: connecting timed out".to_owned())?
        .map_err(amqp)?;
        let channel = connection.create_channel().await.map_err(amqp)?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp)?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str(),
                format!("hookrelay-{}", c.name).as_str(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
        let mut deliveries = consumer.ready_chunks(usize::from(self.prefetch));
        c.intake.running(&c.source);
        let mut last_backlog: Option<std::time::Instant> = None;
        loop {
            if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(std::time::Instant::now());
                // A passive declare reads the queue's ready messages without changing it.
                let q = channel
                    .queue_declare(
                        self.queue.as_str(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(amqp)?;
                c.intake
                    .backlog(&c.source, Some(u64::from(q.message_count())), None);
            }
            let chunk = tokio::select! {
                _ = c.stop.wait_for(|s| *s) => None,
                chunk = tokio::time::timeout(BACKLOG_EVERY, deliveries.next()) => Some(chunk),
            };
            let chunk = match chunk {
                None => {
                    let _ = connection.close(200, "hookrelay stopping").await;
                    return Ok(());
                }
                Some(chunk) => chunk,
            };
            let chunk = match chunk {
                Err(_) => continue,
                Ok(None) => return Err("amqp: the consumer was cancelled".into()),
                Ok(Some(chunk)) => chunk,
            };
            let mut received = Vec::with_capacity(chunk.len());
            for d in chunk {
                received.push(d.map_err(amqp)?);
            }
            let batch: Vec<Message> = received
                .iter()
                .map(|d| {
                    // No id, no key: see the module documentation.
                    let id = d.properties.message_id().as_ref().map(|m| m.to_string());
                    Message::json(id.unwrap_or_default(), &d.data)
                })
                .collect();
            let answers = c.intake.take_batch(&c.source, batch).await;
            let mut failure = None;
            for (d, answer) in received.iter().zip(answers) {
                match answer {
                    Ok(_) => {
                        d.acker
                            .ack(BasicAckOptions::default())
                            .await
                            .map_err(amqp)?;
                    }
                    Err(e) => {
                        failure = Some(format!("store: {e}"));
                        d.acker
                            .nack(BasicNackOptions {
                                requeue: true,
                                ..Default::default()
                            })
                            .await
                            .map_err(amqp)?;
                    }
                }
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
        let s = AmqpSource::parse("amqp://guest:pw@127.0.0.1:5672/%2f?queue=jobs").unwrap();
        assert_eq!((s.queue.as_str(), s.prefetch), ("jobs", 500));
        assert!(!format!("{s:?}").contains("pw"));
        let s = AmqpSource::parse("amqp://h/v?queue=jobs&prefetch=10&heartbeat=5").unwrap();
        assert_eq!(s.prefetch, 10);
        assert!(s.connection.contains("heartbeat=5"));
        crate::destinations::options::refuses(
            AmqpSource::parse,
            &[
                ("amqp://h/v", "queue"),
                ("amqp://h/v?queue=q&prefetch=0", "prefetch"),
                ("amqp://h/v?queue=q&exchange=x", "unknown option"),
            ],
        );
    }
}
