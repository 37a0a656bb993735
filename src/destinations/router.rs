//! The router: one [`Destination`] that picks the adapter by the endpoint URL's scheme, and
//! the connection pool the broker adapters share.
//!
//! HTTP goes straight to [`HttpDestination`] after a prefix check (no parsing, no lock).
//! A broker URL is parsed once into its typed config (cached by URL); each adapter keeps
//! one client per connection target, created on first use, shared by every delivery to
//! it, and dropped after a failure so the next delivery connects afresh.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::{
    amqp, http::HttpDestination, kafka, mqtt, nats, options, pubsub, redis, smtp, sqs, Ack,
    Destination, Message, Scheme, SendError,
};
use crate::domain::Endpoint;

/// Settings shared by the broker adapters.
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Longest time one delivery may take, connecting included.
    pub timeout: Duration,
    /// Longest time a new connection may take.
    pub connect_timeout: Duration,
    /// `host:port` of a Pub/Sub emulator (`PUBSUB_EMULATOR_HOST`), used instead of Google.
    pub pubsub_emulator_host: Option<String>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            pubsub_emulator_host: None,
        }
    }
}

/// A broker URL, parsed.
#[derive(Debug)]
pub enum Target {
    Sqs(sqs::SqsConfig),
    Pubsub(pubsub::PubsubConfig),
    Kafka(kafka::KafkaConfig),
    Amqp(amqp::AmqpConfig),
    Nats(nats::NatsConfig),
    Redis(redis::RedisConfig),
    Mqtt(mqtt::MqttConfig),
    Smtp(smtp::SmtpConfig),
}

impl Target {
    /// Parses a broker URL of a known scheme; `Err` says precisely what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.contains('#') {
            return Err(
                "broker urls may not have a fragment: '#' starts one (percent-encode it as %23)"
                    .into(),
            );
        }
        match Scheme::of(raw) {
            Some(Scheme::Sqs) => sqs::SqsConfig::parse(raw).map(Self::Sqs),
            Some(Scheme::Pubsub) => pubsub::PubsubConfig::parse(raw).map(Self::Pubsub),
            Some(Scheme::Kafka) => kafka::KafkaConfig::parse(raw).map(Self::Kafka),
            Some(Scheme::Amqp) => amqp::AmqpConfig::parse(raw).map(Self::Amqp),
            Some(Scheme::Nats) => nats::NatsConfig::parse(raw).map(Self::Nats),
            Some(Scheme::Redis) => redis::RedisConfig::parse(raw).map(Self::Redis),
            Some(Scheme::Mqtt) => mqtt::MqttConfig::parse(raw).map(Self::Mqtt),
            Some(Scheme::Smtp) => smtp::SmtpConfig::parse(raw).map(Self::Smtp),
            Some(Scheme::Http) | None => Err("not a broker url".into()),
        }
    }
}

/// Every destination behind one [`Destination`].
pub struct Destinations {
    http: HttpDestination,
    settings: BrokerSettings,
    targets: Mutex<HashMap<String, Arc<Target>>>,
    sqs: sqs::Sqs,
    pubsub: pubsub::Pubsub,
    kafka: kafka::Kafka,
    amqp: amqp::Amqp,
    nats: nats::Nats,
    redis: redis::Redis,
    mqtt: mqtt::Mqtt,
    smtp: smtp::Smtp,
}

/// Parsed URLs kept at most; beyond, the cache starts over (URLs are cheap to parse).
const MAX_TARGETS: usize = 10_000;

impl Destinations {
    pub fn new(http: HttpDestination, settings: BrokerSettings) -> Self {
        Self {
            http,
            sqs: sqs::Sqs::new(settings.clone()),
            pubsub: pubsub::Pubsub::new(settings.clone()),
            kafka: kafka::Kafka::new(settings.clone()),
            amqp: amqp::Amqp::new(settings.clone()),
            nats: nats::Nats::new(settings.clone()),
            redis: redis::Redis::new(settings.clone()),
            mqtt: mqtt::Mqtt::new(settings.clone()),
            smtp: smtp::Smtp::new(settings.clone()),
            settings,
            targets: Mutex::new(HashMap::new()),
        }
    }

    fn target(&self, url: &str) -> Result<Arc<Target>, SendError> {
        if let Some(t) = self.targets.lock().ok().and_then(|m| m.get(url).cloned()) {
            return Ok(t);
        }
        let target = Arc::new(Target::parse(url).map_err(|e| SendError::Permanent {
            reason: format!("invalid url: {e}"),
            status_code: None,
            response: None,
            disable_endpoint: false,
        })?);
        if let Ok(mut m) = self.targets.lock() {
            if m.len() >= MAX_TARGETS {
                m.clear();
            }
            m.insert(url.to_owned(), target.clone());
        }
        Ok(target)
    }

    async fn send_broker(&self, endpoint: &Endpoint, message: &Message) -> Result<Ack, SendError> {
        let target = self.target(&endpoint.url)?;
        let work = async {
            match &*target {
                Target::Sqs(c) => self.sqs.send(c, endpoint, message).await,
                Target::Pubsub(c) => self.pubsub.send(c, message).await,
                Target::Kafka(c) => self.kafka.send(c, message).await,
                Target::Amqp(c) => self.amqp.send(c, message).await,
                Target::Nats(c) => self.nats.send(c, message).await,
                Target::Redis(c) => self.redis.send(c, message).await,
                Target::Mqtt(c) => self.mqtt.send(c, message).await,
                Target::Smtp(c) => self.smtp.send(c, message).await,
            }
        };
        let result = match tokio::time::timeout(self.settings.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(retryable(format!(
                "timed out after {}",
                humantime::format_duration(self.settings.timeout)
            ))),
        };
        // Whatever a client library put in its error, the password does not reach the log.
        result.map_err(|e| match e {
            SendError::Retryable {
                reason,
                retry_after,
                status_code,
                response,
            } => SendError::Retryable {
                reason: options::scrub(reason, &endpoint.url),
                retry_after,
                status_code,
                response,
            },
            SendError::Permanent {
                reason,
                status_code,
                response,
                disable_endpoint,
            } => SendError::Permanent {
                reason: options::scrub(reason, &endpoint.url),
                status_code,
                response,
                disable_endpoint,
            },
        })
    }
}

#[async_trait]
impl Destination for Destinations {
    async fn send(&self, endpoint: &Endpoint, message: &Message) -> Result<Ack, SendError> {
        if matches!(Scheme::of(&endpoint.url), Some(Scheme::Http)) {
            return self.http.send(endpoint, message).await;
        }
        self.send_broker(endpoint, message).await
    }
}

/// A failure a retry may cure.
pub fn retryable(reason: impl Into<String>) -> SendError {
    SendError::Retryable {
        reason: reason.into(),
        retry_after: None,
        status_code: None,
        response: None,
    }
}

/// A failure no retry can cure.
pub fn permanent(reason: impl Into<String>) -> SendError {
    SendError::Permanent {
        reason: reason.into(),
        status_code: None,
        response: None,
        disable_endpoint: false,
    }
}

/// A broker's acknowledgement, recorded as the attempt's response.
pub fn acked(response: String) -> Ack {
    Ack {
        status_code: None,
        response: Some(response),
    }
}

/// One client per connection target, created on first use and shared; a failed creation
/// leaves nothing behind, so the next delivery tries again.
pub struct Pool<C> {
    map: Mutex<HashMap<String, Arc<OnceCell<C>>>>,
}

impl<C> Default for Pool<C> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: Clone> Pool<C> {
    /// The client for `key`, connecting with `connect` when there is none yet.
    pub async fn get<F, Fut>(&self, key: &str, connect: F) -> Result<C, SendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, SendError>>,
    {
        let cell = {
            let mut map = self
                .map
                .lock()
                .map_err(|_| retryable("connection pool unavailable"))?;
            match map.get(key) {
                Some(cell) => cell.clone(),
                None => map.entry(key.to_owned()).or_default().clone(),
            }
        };
        cell.get_or_try_init(connect).await.cloned()
    }

    /// Forgets the client for `key` (after a failure): the next delivery reconnects.
    pub fn evict(&self, key: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(key);
        }
    }
}

/// Runs `f` within `limit`, as a retryable failure naming `what` when it takes longer.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(retryable(format!(
            "{what} timed out after {}",
            humantime::format_duration(limit)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsed_targets_never_show_passwords() {
        for url in [
            "amqp://u:s3cret@h:5672/%2f?routing_key=q",
            "redis://:s3cret@h:6379/0?stream=s",
            "nats://u:s3cret@h:4222/a.b",
            "mqtt://u:s3cret@h:1883/a/b",
        ] {
            let shown = format!("{:?}", Target::parse(url).unwrap());
            assert!(!shown.contains("s3cret"), "{shown}");
        }
    }

    #[test]
    fn schemes_are_recognised() {
        assert_eq!(Scheme::of("HTTPS://x"), Some(Scheme::Http));
        assert_eq!(Scheme::of("kafka://h:1/t"), Some(Scheme::Kafka));
        assert_eq!(Scheme::of("amqps://h/"), None);
        assert_eq!(Scheme::of("no scheme"), None);
        assert!(super::super::is_broker_url("redis://h/0?stream=s"));
        assert!(!super::super::is_broker_url("https://example.com/"));
    }
}
