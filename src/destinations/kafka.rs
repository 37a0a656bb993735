//! Kafka: one record per delivery, with a key, the webhook headers as record headers, and
//! `acks=all`.
//!
//! `kafka://HOST:PORT[,HOST:PORT…]/TOPIC?key=event_id|actor|data.FIELD`. The client is
//! rskafka (pure Rust: no librdkafka to build from C). Records go to the partition Kafka's
//! own default partitioner would pick for the key (murmur2), so hookrelay's records land
//! where a Java or librdkafka producer's would. rskafka has no idempotent producer: a
//! retry after a lost ack can write a record twice, with the same `webhook-id` header for
//! consumers to drop.

use std::{collections::BTreeMap, sync::Arc};

use rskafka::{
    client::{
        error::{Error as KafkaError, ProtocolError},
        partition::{Compression, PartitionClient, UnknownTopicHandling},
        Client, ClientBuilder,
    },
    record::Record,
    BackoffConfig,
};

use super::{
    options::{KeySpec, Options},
    router::{acked, permanent, retryable, within, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// A parsed `kafka://` URL.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topic: String,
    /// Where the record key comes from. `None` (no `key` option): the delivery's ordering
    /// key for an ordered endpoint, else the event id.
    pub key: Option<KeySpec>,
    /// The brokers as one string: the connection's key.
    brokers_key: String,
}

impl KafkaConfig {
    /// Parses by hand: a list of `host:port` is not a URL authority.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or("not a kafka:// url")?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        if rest.contains('#') {
            return Err("kafka:// url may not have a fragment (#)".into());
        }
        let (authority, topic) = rest
            .split_once('/')
            .ok_or("kafka:// url needs a topic: kafka://HOST:PORT[,HOST:PORT]/TOPIC")?;
        if authority.contains('@') {
            return Err("kafka:// urls do not take credentials (SASL is not supported)".into());
        }
        let mut brokers = Vec::new();
        for b in authority.split(',') {
            let (host, port) = b.rsplit_once(':').ok_or_else(|| {
                format!("kafka broker {b:?} needs a port: HOST:PORT (usually 9092)")
            })?;
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c))
            {
                return Err(format!("kafka broker {b:?} has an invalid host"));
            }
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("kafka broker {b:?} has an invalid port"));
            }
            brokers.push(b.to_owned());
        }
        let topic = super::options::decode(topic);
        validate_topic(&topic)?;
        let options = Options::parse("kafka", query, &["key"])?;
        let key = options.key("key")?;
        Ok(Self {
            brokers_key: brokers.join(","),
            brokers,
            topic,
            key,
        })
    }
}

fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("kafka:// url needs a topic: kafka://HOST:PORT/TOPIC".into());
    }
    if topic.len() > 249
        || topic == "."
        || topic == ".."
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!(
            "kafka topic {topic:?} is invalid: 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Kafka's murmur2 (as in the Java client's default partitioner).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= u32::from(tail[2]) << 16;
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(tail[1]) << 8;
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(tail[0]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key` among `count`.
pub fn partition_for(key: &[u8], count: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % count.max(1)
}

type Partitions = Arc<Vec<Arc<PartitionClient>>>;

/// The Kafka destination.
pub struct Kafka {
    settings: BrokerSettings,
    clients: Pool<Arc<Client>>,
    /// Partition clients of a topic, by `brokers|topic`.
    topics: Pool<Partitions>,
}

fn classify(e: &KafkaError) -> SendError {
    let text = format!("kafka: {e}");
    match e {
        KafkaError::ServerError { protocol_error, .. } => match protocol_error {
            ProtocolError::MessageTooLarge
            | ProtocolError::RecordListTooLarge
            | ProtocolError::InvalidRecord
            | ProtocolError::CorruptMessage => permanent(text),
            ProtocolError::UnknownTopicOrPartition => {
                retryable("kafka: the topic does not exist (create it; deliveries are retried)")
            }
            _ => retryable(text),
        },
        _ => retryable(text),
    }
}

impl Kafka {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            clients: Pool::default(),
            topics: Pool::default(),
        }
    }

    async fn partitions(&self, config: &KafkaConfig) -> Result<Partitions, SendError> {
        let connect_timeout = self.settings.connect_timeout;
        let timeout = self.settings.timeout;
        let client = self
            .clients
            .get(&config.brokers_key, || {
                within(connect_timeout, "connecting to kafka", async {
                    let backoff = BackoffConfig {
                        deadline: Some(timeout),
                        ..Default::default()
                    };
                    ClientBuilder::new(config.brokers.clone())
                        .client_id("hookrelay")
                        .backoff_config(backoff)
                        .build()
                        .await
                        .map(Arc::new)
                        .map_err(|e| classify(&e))
                })
            })
            .await?;
        let key = format!("{}|{}", config.brokers_key, config.topic);
        self.topics
            .get(&key, || async {
                let topics = client.list_topics().await.map_err(|e| classify(&e))?;
                let topic = topics
                    .into_iter()
                    .find(|t| t.name == config.topic)
                    .ok_or_else(|| {
                        retryable(format!(
                            "kafka: topic {:?} does not exist (create it; deliveries are retried)",
                            config.topic
                        ))
                    })?;
                let mut partitions = Vec::with_capacity(topic.partitions.len());
                for p in topic.partitions {
                    let pc = client
                        .partition_client(config.topic.clone(), p, UnknownTopicHandling::Error)
                        .await
                        .map_err(|e| classify(&e))?;
                    partitions.push(Arc::new(pc));
                }
                if partitions.is_empty() {
                    return Err(retryable("kafka: the topic has no partitions"));
                }
                Ok(Arc::new(partitions))
            })
            .await
    }

    pub async fn send(&self, config: &KafkaConfig, message: &Message) -> Result<Ack, SendError> {
        let partitions = self.partitions(config).await?;
        let key = match &config.key {
            Some(spec) => spec.extract(message),
            None => Some(
                message
                    .ordering_key
                    .clone()
                    .unwrap_or_else(|| message.id.clone()),
            ),
        };
        let index = match &key {
            Some(k) => partition_for(k.as_bytes(), partitions.len()),
            // No key (an event without the actor or field): spread by event id.
            None => partition_for(message.id.as_bytes(), partitions.len()),
        };
        let partition = partitions
            .get(index)
            .ok_or_else(|| retryable("kafka: partition out of range"))?;
        let headers: BTreeMap<String, Vec<u8>> = message
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
            .collect();
        let record = Record {
            key: key.map(String::into_bytes),
            value: Some(message.body.clone()),
            headers,
            timestamp: chrono::Utc::now(),
        };
        match partition
            .produce(vec![record], Compression::NoCompression)
            .await
        {
            Ok(offsets) => Ok(acked(format!(
                "topic {} partition {} offset {}",
                config.topic,
                partition.partition(),
                offsets.first().copied().unwrap_or(-1)
            ))),
            Err(e) => {
                // Partitions may have moved or changed: look them up again next time.
                self.topics
                    .evict(&format!("{}|{}", config.brokers_key, config.topic));
                Err(classify(&e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = KafkaConfig::parse("kafka://k1:9092,k2:9093/orders?key=data.user_id").unwrap();
        assert_eq!(c.brokers, ["k1:9092", "k2:9093"]);
        assert_eq!(c.topic, "orders");
        assert_eq!(c.key, Some(KeySpec::Data(vec!["user_id".into()])));
        assert_eq!(KafkaConfig::parse("kafka://k:9092/t").unwrap().key, None);
        crate::destinations::options::refuses(
            KafkaConfig::parse,
            &[
                ("kafka://k:9092", "needs a topic"),
                ("kafka://k:9092/", "needs a topic"),
                ("kafka://k/t", "needs a port"),
                ("kafka://k:x/t", "invalid port"),
                ("kafka://k:9092/a b", "invalid"),
                ("kafka://k:9092/t?key=user", "not a key"),
                ("kafka://k:9092/t?acks=1", "unknown option"),
                ("kafka://u:p@k:9092/t", "credentials"),
            ],
        );
    }

    #[test]
    fn partitioner_matches_kafka() {
        // Values from the Java client's Utils.murmur2 test vectors.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }
}
