//! NATS JetStream: a JetStream publish with `Nats-Msg-Id` = webhook-id (the stream drops
//! duplicates within its window), waiting for the stream's ack.
//!
//! `nats://[USER:PASS@]HOST:PORT/SUBJECT`. One connection per server and user (the client
//! reconnects by itself); a subject must be bound to a stream, or the publish is retried.

use std::time::Duration;

use super::{
    options::{credentials, decode, Options, Password},
    router::{acked, permanent, retryable, within, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// A parsed `nats://` URL.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `nats://HOST:PORT`: the server, without credentials.
    server: String,
    user: Option<String>,
    password: Option<Password>,
    pub subject: String,
}

impl NatsConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = crate::destinations::options::broker_url(raw)?;
        let host =
            crate::destinations::options::host(&url, "nats:// url", "nats://HOST:PORT/SUBJECT")?;
        Options::parse("nats", url.query(), &[])?;
        let subject = decode(url.path().trim_start_matches('/'));
        validate_subject(&subject)?;
        let (user, password) = credentials(&url);
        Ok(Self {
            server: format!("nats://{host}:{}", url.port().unwrap_or(4222)),
            user,
            password,
            subject,
        })
    }

    fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.server,
            self.user.as_deref().unwrap_or(""),
            self.password.as_ref().map_or("", Password::expose)
        )
    }
}

fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("nats:// url needs a subject as its path: nats://HOST:PORT/SUBJECT".into());
    }
    if subject.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "nats subject {subject:?} may not contain spaces or '/' (tokens are separated by '.')"
        ));
    }
    if subject
        .split('.')
        .any(|t| t.is_empty() || t == "*" || t == ">")
    {
        return Err(format!(
            "nats subject {subject:?} must be a concrete subject: no empty tokens and no wildcards"
        ));
    }
    Ok(())
}

#[derive(Clone)]
struct Connection {
    jetstream: async_nats::jetstream::Context,
}

/// The NATS JetStream destination.
pub struct Nats {
    settings: BrokerSettings,
    pool: Pool<Connection>,
}

impl Nats {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            pool: Pool::default(),
        }
    }

    pub async fn send(&self, config: &NatsConfig, message: &Message) -> Result<Ack, SendError> {
        let timeout = self.settings.timeout;
        let connect_timeout = self.settings.connect_timeout;
        let conn = self
            .pool
            .get(&config.key(), || async {
                let mut options = async_nats::ConnectOptions::new()
                    .connection_timeout(connect_timeout)
                    .request_timeout(Some(timeout))
                    .name("hookrelay");
                if let (Some(u), Some(p)) = (&config.user, &config.password) {
                    options = options.user_and_password(u.clone(), p.expose().to_owned());
                } else if let Some(token) = &config.user {
                    options = options.token(token.clone());
                }
                let client = within(
                    connect_timeout + Duration::from_millis(100),
                    "connecting to nats",
                    async {
                        options
                            .connect(config.server.as_str())
                            .await
                            .map_err(|e| retryable(format!("nats: cannot connect: {e}")))
                    },
                )
                .await?;
                let mut jetstream = async_nats::jetstream::new(client);
                jetstream.set_timeout(timeout);
                Ok(Connection { jetstream })
            })
            .await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in &message.headers {
            headers.insert(name.as_str(), value.as_str());
        }
        headers.insert("Nats-Msg-Id", message.id.as_str());
        let publish = conn
            .jetstream
            .publish_with_headers(
                config.subject.clone(),
                headers,
                bytes::Bytes::from(message.body.clone()),
            )
            .await
            .map_err(|e| classify(&e))?;
        // The client reconnects by itself; nothing to evict on failure.
        let ack = publish.await.map_err(|e| classify(&e))?;
        Ok(acked(format!(
            "stream {} sequence {}{}",
            ack.stream,
            ack.sequence,
            if ack.duplicate { " (duplicate)" } else { "" }
        )))
    }
}

fn classify(e: &async_nats::jetstream::context::PublishError) -> SendError {
    use async_nats::jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::StreamNotFound => retryable(
            "nats: no JetStream stream takes this subject (create one; deliveries are retried)",
        ),
        K::WrongLastMessageId | K::WrongLastSequence => permanent(format!("nats: {e}")),
        _ => retryable(format!("nats: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = NatsConfig::parse("nats://u:p@127.0.0.1:4223/orders.created").unwrap();
        assert_eq!(c.subject, "orders.created");
        assert_eq!(c.server, "nats://127.0.0.1:4223");
        assert_eq!(c.user.as_deref(), Some("u"));
        assert_eq!(
            NatsConfig::parse("nats://h/s").unwrap().server,
            "nats://h:4222"
        );
        crate::destinations::options::refuses(
            NatsConfig::parse,
            &[
                ("nats://h", "needs a subject"),
                ("nats://h/", "needs a subject"),
                ("nats://h/a.*", "wildcards"),
                ("nats://h/a.>", "wildcards"),
                ("nats://h/a..b", "empty tokens"),
                ("nats://h/a/b", "'/'"),
                ("nats://h/a?x=1", "take no options"),
            ],
        );
    }
}
