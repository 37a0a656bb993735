//! Kafka source: every partition of a topic read from the offsets hookrelay keeps in its
//! own store (the client, rskafka, has no consumer groups).
//!
//! `kafka://HOST:PORT[,HOST:PORT…]/TOPIC?start=new|all&batch=N`
//!
//! - One process reads a source at a time: it holds a lease in the store, renewed every
//!   few seconds; another process takes over when the lease runs out (its holder died).
//! - A partition's position moves past a record only once the record's event is
//!   committed. The idempotency key is `<source id>:<partition>:<offset>`, so a record
//!   read again after a crash (committed, position not yet stored) creates no second event.
//! - When the store cannot take a record, the position stays before it and it is read
//!   again.
//!
//! The record value is the envelope as a JSON object.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rskafka::client::{
    partition::{OffsetAt, UnknownTopicHandling},
    ClientBuilder,
};

use super::{Consumer, Message};
use crate::{
    destinations::{kafka::KafkaConfig, options::Options},
    domain,
};

/// How long a process holds a source after its last renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often the holder renews its lease (and a waiting process tries to take it).
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Longest wait of one fetch for new records.
const FETCH_WAIT_MS: i32 = 200;

/// A parsed Kafka source URL.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: Vec<String>,
    pub topic: String,
    /// Where a partition without a stored position starts: its end (`new`, the default)
    /// or its beginning (`all`).
    pub start_at_beginning: bool,
    /// Bytes fetched from one partition at a time.
    pub max_bytes: i32,
}

impl KafkaSource {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (base, query) = match raw.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (raw, None),
        };
        let options = Options::parse("kafka", query, &["start", "max_bytes"])?;
        let config = KafkaConfig::parse(base)?;
        let start_at_beginning = super::start_at_beginning(&options)?;
        let max_bytes = options
            .number("max_bytes", 1024..=16 * 1024 * 1024)?
            .unwrap_or(1024 * 1024);
        Ok(Self {
            brokers: config.brokers,
            topic: config.topic,
            start_at_beginning,
            // At most 16 MiB: a checked range.
            max_bytes: i32::try_from(max_bytes).unwrap_or(1024 * 1024),
        })
    }

    /// Takes or renews the lease; `false` while another process holds it.
    async fn lease(&self, c: &Consumer) -> Result<bool, String> {
        let now = domain::now();
        let until = domain::after(now, LEASE);
        c.intake
            .store
            .lease_source(&c.source.id, &c.name, until, now)
            .await
            .map_err(|e| format!("store: {e}"))
    }
}

impl super::Session for KafkaSource {
    async fn session(&self, c: &mut Consumer) -> Result<(), String> {
        // Wait until this process holds the source.
        while !self.lease(c).await? {
            c.intake.standby(&c.source);
            c.pause(RENEW_EVERY).await;
            if c.stopping() {
                return Ok(());
            }
        }
        let mut renewed = Instant::now();
        let kafka = |e: rskafka::client::error::Error| format!("kafka: {e}");
        let client = ClientBuilder::new(self.brokers.clone())
            .build()
            .await
            .map_err(kafka)?;
        let topic = client
            .list_topics()
            .await
            .map_err(kafka)?
            .into_iter()
            .find(|t| t.name == self.topic)
            .ok_or_else(|| format!("kafka: topic {} does not exist", self.topic))?;
        let stored: BTreeMap<i32, i64> = c
            .intake
            .store
            .source_positions(&c.source.id)
            .await
            .map_err(|e| format!("store: {e}"))?
            .into_iter()
            .collect();
        let mut partitions = Vec::new();
        for p in topic.partitions {
            let pc = client
                .partition_client(self.topic.clone(), p, UnknownTopicHandling::Error)
                .await
                .map_err(kafka)?;
            let next = match stored.get(&p) {
                Some(n) => *n,
                None => {
                    let at = if self.start_at_beginning {
                        OffsetAt::Earliest
                    } else {
                        OffsetAt::Latest
                    };
                    let n = pc.get_offset(at).await.map_err(kafka)?;
                    // Kept at once, so "new" means new from the source's first read.
                    c.intake
                        .store
                        .set_source_position(&c.source.id, p, n)
                        .await
                        .map_err(|e| format!("store: {e}"))?;
                    n
                }
            };
            partitions.push((p, pc, next, 0_i64));
        }
        c.intake.running(&c.source);
        while !c.stopping() {
            if renewed.elapsed() >= RENEW_EVERY {
                if !self.lease(c).await? {
                    // Taken over (this process stalled past its lease): start over.
                    return Err("kafka: the lease on this source passed to another process".into());
                }
                renewed = Instant::now();
            }
            let mut idle = true;
            for (p, pc, next, high) in partitions.iter_mut() {
                let (records, watermark) = pc
                    .fetch_records(*next, 1..self.max_bytes, FETCH_WAIT_MS)
                    .await
                    .map_err(kafka)?;
                *high = watermark;
                // A fetch may start before `next` (compressed batches): skip those.
                let records: Vec<_> = records.into_iter().filter(|r| r.offset >= *next).collect();
                if records.is_empty() {
                    continue;
                }
                idle = false;
                let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
                let batch: Vec<Message> = records
                    .into_iter()
                    .map(|r| {
                        let value = r.record.value.unwrap_or_default();
                        Message::json(format!("{p}:{}", r.offset), &value)
                    })
                    .collect();
                let answers = c.intake.take_batch(&c.source, batch).await;
                // The position moves to the first record not settled.
                let mut failure = None;
                let mut settled_to = *next;
                for (offset, answer) in offsets.iter().zip(answers) {
                    match answer {
                        Ok(_) => settled_to = offset + 1,
                        Err(e) => {
                            failure = Some(format!("store: {e}"));
                            break;
                        }
                    }
                }
                if settled_to > *next {
                    c.intake
                        .store
                        .set_source_position(&c.source.id, *p, settled_to)
                        .await
                        .map_err(|e| format!("store: {e}"))?;
                    *next = settled_to;
                }
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            let lag: i64 = partitions.iter().map(|(_, _, n, h)| (h - n).max(0)).sum();
            c.intake
                .backlog(&c.source, Some(u64::try_from(lag).unwrap_or(0)), None);
            if idle {
                c.intake.running(&c.source);
            }
        }
        // Stopping: let the next process take the source at once.
        let now = domain::now();
        let _ = c
            .intake
            .store
            .lease_source(&c.source.id, &c.name, now, now)
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_refuse_mistakes() {
        let s = KafkaSource::parse("kafka://127.0.0.1:9092,127.0.0.2:9092/jobs").unwrap();
        assert_eq!(s.brokers.len(), 2);
        assert_eq!(s.topic, "jobs");
        assert!(!s.start_at_beginning);
        let s = KafkaSource::parse("kafka://h:9092/jobs?start=all&max_bytes=4096").unwrap();
        assert!(s.start_at_beginning);
        assert_eq!(s.max_bytes, 4096);
        crate::destinations::options::refuses(
            KafkaSource::parse,
            &[
                ("kafka://h:9092", "topic"),
                ("kafka://h:9092/jobs?start=x", "start"),
                ("kafka://h:9092/jobs?key=actor", "unknown option"),
                ("kafka://h:9092/jobs?max_bytes=1", "max_bytes"),
            ],
        );
    }
}
