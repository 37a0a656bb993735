//! SQS source: long-polled `ReceiveMessage`, messages deleted only once their event is
//! committed.
//!
//! The queue is named as for the SQS destination (`sqs://QUEUE_NAME?region=R&endpoint=URL`,
//! a queue URL's host and path, or a full queue URL), with the source options
//! `wait_seconds` (long polling, default 2), `visibility_timeout` (seconds, default 30) and
//! `batch` (messages per receive, 1 to 10, default 10).
//!
//! - A message received and not deleted within `visibility_timeout` (its process was
//!   killed) is received again; its `MessageId` is the idempotency key, so it creates no
//!   second event.
//! - When the store cannot take a message, its visibility is cut to one second, so it
//!   comes back soon.
//!
//! The message body is the envelope as a JSON object.

use std::time::Duration;

use aws_sdk_sqs::{
    error::DisplayErrorContext,
    types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
        QueueAttributeName,
    },
    Client,
};

use super::{Consumer, Message, BACKLOG_EVERY};
use crate::destinations::sqs::{sdk_client, Queue, SqsConfig};

/// A parsed SQS source URL.
#[derive(Debug, Clone)]
pub struct SqsSource {
    config: SqsConfig,
    pub wait_seconds: i32,
    pub visibility_timeout: i32,
    pub batch: i32,
}

fn error(e: impl std::error::Error) -> String {
    format!("sqs: {}", DisplayErrorContext(e))
}

impl SqsSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (config, options) =
            SqsConfig::parse_with(raw, &["wait_seconds", "visibility_timeout", "batch"])?;
        if config.message_group_id.is_some() {
            return Err("message_group_id is an option of sqs destinations, not of sources".into());
        }
        let number = |name: &str, range: std::ops::RangeInclusive<u64>, default: i32| {
            options
                .number(name, range)
                .map(|n| n.map_or(default, |n| i32::try_from(n).unwrap_or(default)))
        };
        Ok(Self {
            wait_seconds: number("wait_seconds", 0..=20, 2)?,
            visibility_timeout: number("visibility_timeout", 1..=43_200, 30)?,
            batch: number("batch", 1..=10, 10)?,
            config,
        })
    }
}

impl super::Session for SqsSource {
    async fn session(&self, c: &mut Consumer) -> Result<(), String> {
        let wait = Duration::from_secs(u64::try_from(self.wait_seconds).unwrap_or(2));
        let client = sdk_client(
            &self.config,
            Duration::from_secs(5),
            wait + Duration::from_secs(10),
        )
        .await?;
        let queue_url = match &self.config.queue {
            Queue::Url(u) => u.clone(),
            Queue::Name(name) => client
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(error)?
                .queue_url
                .ok_or("sqs: GetQueueUrl returned no URL")?,
        };
        c.intake.running(&c.source);
        let mut last_backlog: Option<std::time::Instant> = None;
        while !c.stopping() {
            if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
                last_backlog = Some(std::time::Instant::now());
                self.backlog(&client, &queue_url, c).await?;
            }
            let received = client
                .receive_message()
                .queue_url(&queue_url)
                .max_number_of_messages(self.batch)
                .wait_time_seconds(self.wait_seconds)
                .visibility_timeout(self.visibility_timeout)
                .send()
                .await
                .map_err(error)?
                .messages
                .unwrap_or_default();
            if received.is_empty() {
                continue;
            }
            let batch: Vec<Message> = received
                .iter()
                .map(|m| {
                    let body = m.body.as_deref().unwrap_or_default();
                    Message::json(m.message_id.clone().unwrap_or_default(), body.as_bytes())
                })
                .collect();
            let answers = c.intake.take_batch(&c.source, batch).await;
            let mut settled = Vec::new();
            let mut retry = Vec::new();
            let mut failure = None;
            for (i, (m, answer)) in received.iter().zip(answers).enumerate() {
                let Some(handle) = m.receipt_handle.clone() else {
                    continue;
                };
                match answer {
                    Ok(_) => settled.push(
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                            .map_err(error)?,
                    ),
                    Err(e) => {
                        failure = Some(format!("store: {e}"));
                        retry.push(
                            ChangeMessageVisibilityBatchRequestEntry::builder()
                                .id(i.to_string())
                                .receipt_handle(handle)
                                .visibility_timeout(1)
                                .build()
                                .map_err(error)?,
                        );
                    }
                }
            }
            if !settled.is_empty() {
                client
                    .delete_message_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(settled))
                    .send()
                    .await
                    .map_err(error)?;
            }
            if !retry.is_empty() {
                client
                    .change_message_visibility_batch()
                    .queue_url(&queue_url)
                    .set_entries(Some(retry))
                    .send()
                    .await
                    .map_err(error)?;
            }
            if let Some(e) = failure {
                c.intake.failing(&c.source, &e);
            }
        }
        Ok(())
    }
}

impl SqsSource {
    /// Reads the queue's visible and in-flight message counts.
    async fn backlog(&self, client: &Client, queue_url: &str, c: &Consumer) -> Result<(), String> {
        let attributes = client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(error)?
            .attributes
            .unwrap_or_default();
        let count =
            |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<u64>().ok());
        c.intake.backlog(
            &c.source,
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_mistakes() {
        let s = SqsSource::parse("sqs://jobs?region=us-east-1").unwrap();
        assert_eq!((s.wait_seconds, s.visibility_timeout, s.batch), (2, 30, 10));
        let s = SqsSource::parse(
            "sqs://jobs?region=us-east-1&wait_seconds=0&visibility_timeout=5&batch=3",
        )
        .unwrap();
        assert_eq!((s.wait_seconds, s.visibility_timeout, s.batch), (0, 5, 3));
        crate::destinations::options::refuses(
            SqsSource::parse,
            &[
                ("sqs://jobs?region=us-east-1&batch=11", "batch"),
                (
                    "sqs://jobs?region=us-east-1&wait_seconds=21",
                    "wait_seconds",
                ),
                (
                    "sqs://jobs.fifo?region=us-east-1&message_group_id=g",
                    "not of sources",
                ),
                ("sqs://jobs?region=us-east-1&stream=x", "unknown option"),
            ],
        );
    }
}
