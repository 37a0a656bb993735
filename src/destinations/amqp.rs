//! RabbitMQ (AMQP 0-9-1): a persistent, mandatory publish on a channel in confirm mode,
//! the webhook headers as message headers, waiting for the broker's confirm.
//!
//! `amqp://USER:PASS@HOST:PORT/VHOST?exchange=X&routing_key=K`: the AMQP URI spec (the path
//! is the vhost, `%2f` for `/`). One connection and confirm channel per connection URI,
//! replaced after any failure.

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties,
};

use super::{
    options::Options,
    router::{acked, retryable, within, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// A parsed `amqp://` URL.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// The URI handed to the client: the URL without hookrelay's options.
    connection: crate::destinations::options::ConnectionUrl,
    pub exchange: String,
    pub routing_key: String,
}

/// Options of `amqp://` URLs that belong to the client (AMQP URI spec), passed through.
const CLIENT_OPTIONS: &[&str] = &[
    "heartbeat",
    "connection_timeout",
    "channel_max",
    "frame_max",
];

impl AmqpConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (connection, options) = connection_uri(raw, &["exchange", "routing_key"])?;
        let exchange = options.string("exchange").unwrap_or("").to_owned();
        let routing_key = options.string("routing_key").unwrap_or("").to_owned();
        if exchange.is_empty() && routing_key.is_empty() {
            return Err("amqp:// url needs ?exchange=X&routing_key=K (or only ?routing_key=QUEUE for the default exchange)".into());
        }
        if exchange.len() > 255 || routing_key.len() > 255 {
            return Err("amqp exchange and routing_key are at most 255 bytes".into());
        }
        Ok(Self {
            connection: crate::destinations::options::ConnectionUrl(connection),
            exchange,
            routing_key,
        })
    }
}

/// Splits an `amqp://` URL into the URI handed to the client (the client's own options
/// kept) and hookrelay's options among `known`; checks both.
pub(crate) fn connection_uri(raw: &str, known: &[&str]) -> Result<(String, Options), String> {
    let mut url = crate::destinations::options::broker_url(raw)?;
    url.host_str()
        .filter(|h| !h.is_empty())
        .ok_or("amqp:// url has no host; the form is amqp://USER:PASS@HOST:PORT/VHOST?…")?;
    let mut all = known.to_vec();
    all.extend_from_slice(CLIENT_OPTIONS);
    let options = Options::parse("amqp", url.query(), &all)?;
    let passed: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| CLIENT_OPTIONS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.set_query(None);
    if !passed.is_empty() {
        url.query_pairs_mut().extend_pairs(passed);
    }
    let connection = url.to_string();
    connection
        .parse::<lapin::uri::AMQPUri>()
        .map_err(|e| format!("invalid amqp:// url: {e}"))?;
    Ok((connection, options))
}

#[derive(Clone)]
struct Link {
    // Kept so the connection lives as long as the channel is in use.
    _connection: std::sync::Arc<Connection>,
    channel: Channel,
}

/// The AMQP destination.
pub struct Amqp {
    settings: BrokerSettings,
    pool: Pool<Link>,
}

impl Amqp {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            pool: Pool::default(),
        }
    }

    async fn link(&self, config: &AmqpConfig) -> Result<Link, SendError> {
        let connect_timeout = self.settings.connect_timeout;
        let connect = || {
            within(connect_timeout, "connecting to the amqp broker", async {
                let connection =
                    Connection::connect(&config.connection, ConnectionProperties::default())
                        .await
                        .map_err(|e| retryable(format!("amqp: cannot connect: {e}")))?;
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(|e| retryable(format!("amqp: cannot open a channel: {e}")))?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| retryable(format!("amqp: cannot enable confirms: {e}")))?;
                Ok(Link {
                    _connection: std::sync::Arc::new(connection),
                    channel,
                })
            })
        };
        let link = self.pool.get(&config.connection, connect).await?;
        if link.channel.status().connected() {
            return Ok(link);
        }
        // The broker went away since: start over.
        self.pool.evict(&config.connection);
        self.pool.get(&config.connection, connect).await
    }

    pub async fn send(&self, config: &AmqpConfig, message: &Message) -> Result<Ack, SendError> {
        let link = self.link(config).await?;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(
                ShortString::from(name.as_str()),
                AMQPValue::LongString(value.as_str().into()),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_content_type("application/json".into())
            .with_message_id(message.id.as_str().into())
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let result = async {
            let confirm = link
                .channel
                .basic_publish(
                    &config.exchange,
                    &config.routing_key,
                    options,
                    &message.body,
                    properties,
                )
                .await
                .map_err(|e| retryable(format!("amqp: publish failed: {e}")))?;
            confirm
                .await
                .map_err(|e| retryable(format!("amqp: no confirm: {e}")))
        }
        .await;
        let confirmation = match result {
            Ok(c) => c,
            Err(e) => {
                self.pool.evict(&config.connection);
                return Err(e);
            }
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(acked("confirmed".into())),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(retryable(format!(
                    "amqp: unroutable: no queue is bound for exchange {:?} and routing key {:?} ({} {})",
                    config.exchange,
                    config.routing_key,
                    returned.reply_code,
                    returned.reply_text
                )))
            }
            Confirmation::Nack(None) => Err(retryable("amqp: the broker refused the message (nack)")),
            Confirmation::NotRequested => Ok(acked("sent (no confirm)".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = AmqpConfig::parse(
            "amqp://guest:guest@127.0.0.1:5672/%2f?exchange=events&routing_key=user.joined&heartbeat=10",
        )
        .unwrap();
        assert_eq!(c.exchange, "events");
        assert_eq!(c.routing_key, "user.joined");
        assert_eq!(
            c.connection,
            "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10"
        );
        let c = AmqpConfig::parse("amqp://h/vh?routing_key=q").unwrap();
        assert_eq!(c.exchange, "");
        crate::destinations::options::refuses(
            AmqpConfig::parse,
            &[
                ("amqp://h/", "needs ?exchange"),
                ("amqp://h/?exchange=x&key=k", "unknown option"),
                ("amqp://h/?routing_key=q&heartbeat=x", "invalid amqp"),
            ],
        );
    }
}
