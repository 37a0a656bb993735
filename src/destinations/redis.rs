//! Redis Streams: `XADD` of the body and the webhook headers as fields.
//!
//! `redis://[:PASSWORD@]HOST:PORT/DB?stream=NAME&maxlen=N`: the redis URL convention (the
//! path is the database number). One multiplexed, self-reconnecting connection
//! ([`redis::aio::ConnectionManager`]) per server and database.

use super::{
    options::{credentials, Options},
    router::{acked, permanent, retryable, within, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// Field of a stream entry that holds the body; the headers are fields of their own name.
pub const BODY_FIELD: &str = "body";

/// A parsed `redis://` URL.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// The connection URL, without hookrelay's options.
    connection: crate::destinations::options::ConnectionUrl,
    pub stream: String,
    /// Approximate most entries kept (`MAXLEN ~ N`).
    pub maxlen: Option<u64>,
}

impl RedisConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = crate::destinations::options::broker_url(raw)?;
        let connection = connection_url(&url)?;
        let options = Options::parse("redis", url.query(), &["stream", "maxlen"])?;
        let stream = options
            .string("stream")
            .ok_or("redis:// url needs the stream name: ?stream=NAME")?
            .to_owned();
        let maxlen = options.number("maxlen", 1..=u64::from(u32::MAX))?;
        Ok(Self {
            connection: crate::destinations::options::ConnectionUrl(connection),
            stream,
            maxlen,
        })
    }
}

/// The connection part of a `redis://` URL (host, port, database, credentials), without
/// hookrelay's options; checked by the client so that connecting cannot fail on it.
pub(crate) fn connection_url(url: &url::Url) -> Result<String, String> {
    let host = crate::destinations::options::host(
        url,
        "redis:// url",
        "redis://HOST:PORT/DB?stream=NAME",
    )?;
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "the path of a redis:// url is the database number, got {db:?}; the stream goes in ?stream=NAME"
        ));
    }
    let (user, pass) = credentials(url);
    let mut connection = String::from("redis://");
    if user.is_some() || pass.is_some() {
        connection.push_str(url.username());
        if let Some(p) = url.password() {
            connection.push(':');
            connection.push_str(p);
        }
        connection.push('@');
    }
    connection.push_str(host);
    connection.push(':');
    connection.push_str(&url.port().unwrap_or(6379).to_string());
    connection.push('/');
    connection.push_str(if db.is_empty() { "0" } else { db });
    redis::Client::open(connection.as_str()).map_err(|e| format!("invalid redis:// url: {e}"))?;
    Ok(connection)
}

/// The Redis Streams destination.
pub struct Redis {
    settings: BrokerSettings,
    pool: Pool<redis::aio::ConnectionManager>,
}

fn classify(e: &redis::RedisError) -> SendError {
    let text = format!("redis: {e}");
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return retryable(text);
    }
    // WRONGTYPE: the key holds something else than a stream; a retry cannot help.
    if e.code() == Some("WRONGTYPE") {
        return permanent(text);
    }
    retryable(text)
}

impl Redis {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            pool: Pool::default(),
        }
    }

    pub async fn send(&self, config: &RedisConfig, message: &Message) -> Result<Ack, SendError> {
        if message.headers.contains_key(BODY_FIELD) {
            return Err(permanent(
                "a custom header named \"body\" would clash with the body field of the stream entry",
            ));
        }
        let connect_timeout = self.settings.connect_timeout;
        let response_timeout = self.settings.timeout;
        let mut conn = self
            .pool
            .get(&config.connection, || async {
                let client = redis::Client::open(&*config.connection)
                    .map_err(|e| permanent(format!("invalid redis url: {e}")))?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1);
                within(connect_timeout, "connecting to redis", async {
                    client
                        .get_connection_manager_with_config(cfg)
                        .await
                        .map_err(|e| classify(&e))
                })
                .await
            })
            .await?;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&config.stream);
        if let Some(n) = config.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*").arg(BODY_FIELD).arg(&message.body);
        for (name, value) in &message.headers {
            cmd.arg(name).arg(value);
        }
        // The connection manager reconnects by itself; nothing to evict.
        let id: String = cmd.query_async(&mut conn).await.map_err(|e| classify(&e))?;
        Ok(acked(format!("stream {} entry {id}", config.stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c =
            RedisConfig::parse("redis://:pw@127.0.0.1:6380/2?stream=hooks&maxlen=1000").unwrap();
        assert_eq!(c.stream, "hooks");
        assert_eq!(c.maxlen, Some(1000));
        assert_eq!(c.connection, "redis://:pw@127.0.0.1:6380/2");
        let c = RedisConfig::parse("redis://localhost?stream=s").unwrap();
        assert_eq!(c.connection, "redis://localhost:6379/0");
        crate::destinations::options::refuses(
            RedisConfig::parse,
            &[
                ("redis://localhost/0", "stream"),
                ("redis://localhost/hooks?stream=s", "database number"),
                ("redis://localhost/0?stream=s&maxlen=0", "maxlen"),
                ("redis://localhost/0?stream=s&maxlen=x", "maxlen"),
                ("redis://localhost/0?stream=s&max=1", "unknown option"),
            ],
        );
    }
}
