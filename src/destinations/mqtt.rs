//! MQTT 5: a QoS 1 publish, the webhook headers as user properties, waiting for PUBACK.
//!
//! `mqtt://[USER:PASS@]HOST:PORT/TOPIC/LEVELS`. One connection per broker and user.
//!
//! rumqttc's client does not hand back the packet id of a publish; its event loop reports
//! each outgoing publish (in the order the requests were queued) and each PUBACK. A task
//! per connection polls the event loop and matches them: requests are queued together
//! with their waiter under one lock, so the n-th outgoing publish belongs to the n-th
//! waiter. Any connection error fails every waiter (they are retried by the dispatcher)
//! and retires the connection, so a reconnection can never shift that order.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use rumqttc::v5::{
    mqttbytes::{
        v5::{Packet, PubAckReason, PublishProperties},
        QoS,
    },
    AsyncClient, Event, EventLoop, MqttOptions,
};
use tokio::sync::oneshot;

use super::{
    options::{broker_url, credentials, decode, host, Options, Password},
    router::{acked, permanent, retryable, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// A parsed `mqtt://` URL.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<Password>,
    pub topic: String,
}

impl MqttConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = broker_url(raw)?;
        let host = host(&url, "mqtt:// url", "mqtt://HOST:PORT/TOPIC")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Options::parse("mqtt", url.query(), &[])?;
        let topic = decode(url.path().trim_start_matches('/'));
        if topic.is_empty() {
            return Err("mqtt:// url needs a topic as its path: mqtt://HOST:PORT/TOPIC".into());
        }
        if topic.contains(['+', '#', '\0']) {
            return Err(format!(
                "mqtt topic {topic:?} must be a concrete topic: no '+' or '#' wildcards"
            ));
        }
        if topic.len() > 65_535 {
            return Err("mqtt topic is longer than 65535 bytes".into());
        }
        let (user, password) = credentials(&url);
        if password.is_some() && user.is_none() {
            return Err("mqtt:// url has a password but no user name".into());
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(1883),
            user,
            password,
            topic,
        })
    }

    fn key(&self) -> String {
        format!(
            "{}:{}|{}|{}",
            self.host,
            self.port,
            self.user.as_deref().unwrap_or(""),
            self.password.as_ref().map_or("", Password::expose)
        )
    }
}

type Waiter = oneshot::Sender<Result<u16, SendError>>;

#[derive(Default)]
struct Waiters {
    /// Queued publishes not yet given a packet id, in queue order.
    queued: VecDeque<Waiter>,
    /// Publishes sent, by packet id, awaiting their PUBACK.
    sent: HashMap<u16, Waiter>,
    /// Set when the connection failed: nothing more may be queued on it.
    dead: Option<String>,
}

impl Waiters {
    fn fail_all(&mut self, reason: &str) {
        self.dead = Some(reason.to_owned());
        for w in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, w)| w))
        {
            let _ = w.send(Err(retryable(reason.to_owned())));
        }
    }
}

/// One broker connection: the client and the state its event-loop task shares.
#[derive(Clone)]
struct Connection {
    client: AsyncClient,
    waiters: Arc<Mutex<Waiters>>,
}

/// The MQTT destination.
pub struct Mqtt {
    settings: BrokerSettings,
    pool: Arc<Pool<Connection>>,
}

/// Publishes that may be queued to one connection at once.
const QUEUE: usize = 1024;

impl Mqtt {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            pool: Arc::new(Pool::default()),
        }
    }

    async fn connect(&self, config: &MqttConfig, key: String) -> Result<Connection, SendError> {
        let id = format!("hookrelay-{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut options = MqttOptions::new(id, config.host.clone(), config.port);
        options
            .set_clean_start(true)
            .set_keep_alive(std::time::Duration::from_secs(30))
            .set_request_channel_capacity(QUEUE)
            .set_connection_timeout(self.settings.connect_timeout.as_secs().max(1));
        if let Some(user) = &config.user {
            options.set_credentials(
                user.clone(),
                config.password.as_ref().map_or("", Password::expose),
            );
        }
        let (client, mut eventloop) = AsyncClient::new(options, QUEUE);
        // Connect before handing the connection out, so that a broker that is down fails
        // this delivery (retried later) instead of queueing it.
        let connected = tokio::time::timeout(self.settings.connect_timeout, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return match ack.code {
                            rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success => Ok(()),
                            code => Err(retryable(format!("mqtt: connection refused: {code:?}"))),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(retryable(format!("mqtt: cannot connect: {e}"))),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(retryable("mqtt: connecting timed out")));
        connected?;
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        tokio::spawn(drive(eventloop, waiters.clone(), self.pool.clone(), key));
        Ok(Connection { client, waiters })
    }

    pub async fn send(&self, config: &MqttConfig, message: &Message) -> Result<Ack, SendError> {
        let key = config.key();
        let conn = self
            .pool
            .get(&key, || self.connect(config, key.clone()))
            .await?;
        let properties = PublishProperties {
            user_properties: message
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            content_type: Some("application/json".into()),
            payload_format_indicator: Some(1),
            ..Default::default()
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = conn
                .waiters
                .lock()
                .map_err(|_| retryable("mqtt: connection state unavailable"))?;
            if let Some(reason) = &waiters.dead {
                // Its event-loop task has already taken it out of the pool.
                return Err(retryable(reason.clone()));
            }
            // Queued and registered under one lock: the order of both is the same.
            conn.client
                .try_publish_with_properties(
                    config.topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    message.body.clone(),
                    properties,
                )
                .map_err(|e| retryable(format!("mqtt: cannot queue the publish: {e}")))?;
            waiters.queued.push_back(tx);
        }
        match rx.await {
            Ok(Ok(pkid)) => Ok(acked(format!("puback packet id {pkid}"))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(retryable("mqtt: the connection closed before the PUBACK")),
        }
    }
}

/// Polls a connection's event loop, matching outgoing publishes and PUBACKs to waiters,
/// until the connection fails; then fails the waiters and retires the connection.
async fn drive(
    mut eventloop: EventLoop,
    waiters: Arc<Mutex<Waiters>>,
    pool: Arc<Pool<Connection>>,
    key: String,
) {
    loop {
        let event = eventloop.poll().await;
        let Ok(mut w) = waiters.lock() else { return };
        match event {
            Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                if let Some(waiter) = w.queued.pop_front() {
                    w.sent.insert(pkid, waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = w.sent.remove(&ack.pkid) {
                    let result = match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(ack.pkid),
                        PubAckReason::TopicNameInvalid
                        | PubAckReason::PayloadFormatInvalid
                        | PubAckReason::NotAuthorized => Err(permanent(format!(
                            "mqtt: the broker refused the publish: {:?}",
                            ack.reason
                        ))),
                        other => Err(retryable(format!(
                            "mqtt: the broker refused the publish: {other:?}"
                        ))),
                    };
                    let _ = waiter.send(result);
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                // Out of the pool before anyone can see it dead, so that no one evicts
                // a newer connection under the same key.
                pool.evict(&key);
                w.fail_all(&format!(
                    "mqtt: the broker disconnected: {:?}",
                    d.reason_code
                ));
                return;
            }
            Ok(_) => {}
            Err(e) => {
                pool.evict(&key);
                w.fail_all(&format!("mqtt: connection lost: {e}"));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = MqttConfig::parse("mqtt://u:p@127.0.0.1:1884/hooks/orders/created").unwrap();
        assert_eq!(c.topic, "hooks/orders/created");
        assert_eq!((c.host.as_str(), c.port), ("127.0.0.1", 1884));
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(MqttConfig::parse("mqtt://h/t").unwrap().port, 1883);
        crate::destinations::options::refuses(
            MqttConfig::parse,
            &[
                ("mqtt://h", "needs a topic"),
                ("mqtt://h/a/+/b", "wildcards"),
                ("mqtt://h/a/%23", "wildcards"),
                ("mqtt://h/a?qos=0", "take no options"),
                ("mqtt://:p@h/a", "no user name"),
            ],
        );
    }
}
