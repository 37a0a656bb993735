//! AWS SQS with the official AWS SDK for Rust: `SendMessage` with the webhook headers as
//! message attributes. FIFO queues (`.fifo`) get `MessageGroupId` (the
//! `message_group_id` option, by default the endpoint id) and
//! `MessageDeduplicationId` = webhook-id, so a retry within SQS's 5-minute window is not
//! delivered twice.
//!
//! `sqs://QUEUE_NAME?region=R&endpoint=URL&message_group_id=G`, a queue URL's host and path
//! (`sqs://sqs.eu-west-1.amazonaws.com/1234/q`, sent over https), or a full queue URL,
//! percent-encoded, as the host: `sqs://https%3A%2F%2Fsqs.eu-west-1.amazonaws.com%2F1234%2Fq`.
//! Credentials come from the usual AWS chain (environment, profile, web identity, ECS,
//! instance metadata); `endpoint` points at an SQS-compatible server.

use std::collections::HashMap;

use aws_sdk_sqs::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::MessageAttributeValue,
    Client,
};

use super::{
    options::{decode, Options},
    router::{acked, permanent, retryable, BrokerSettings, Pool},
    Ack, Message, SendError,
};
use crate::domain::Endpoint;

/// SQS allows 10 message attributes; webhook-id, -timestamp, -signature and traceparent
/// take four.
pub const MAX_CUSTOM_HEADERS: usize = 6;

/// Which queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Queue {
    /// A name, resolved to its URL once per client (`GetQueueUrl`).
    Name(String),
    /// A full queue URL.
    Url(String),
}

/// A parsed `sqs://` URL.
#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub queue: Queue,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub message_group_id: Option<String>,
    pub fifo: bool,
}

fn validate_name(name: &str) -> Result<(), String> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if name.is_empty()
        || name.len() > 80
        || base.is_empty()
        || !base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "sqs queue name {name:?} is invalid: 1 to 80 of a-z, A-Z, 0-9, '-' and '_', with an optional .fifo suffix"
        ));
    }
    Ok(())
}

impl SqsConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::parse_with(raw, &[]).map(|(config, _)| config)
    }

    /// Parses an `sqs://` URL that may also carry the options `extra`, returned for the
    /// caller to read (a source's own options).
    pub(crate) fn parse_with(raw: &str, extra: &[&str]) -> Result<(Self, Options), String> {
        let url = crate::destinations::options::broker_url(raw)?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("sqs:// url needs a queue: sqs://QUEUE_NAME?region=R")?;
        // The queue URL's host and path, as people write it:
        // sqs://sqs.us-east-1.amazonaws.com/123456789012/orders?region=us-east-1.
        let written_out = if !url.path().is_empty() && url.path() != "/" {
            let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
            let account_ok =
                |a: &str| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric());
            if segments.len() != 2 || !account_ok(segments[0]) || !host.contains('.') {
                return Err(format!(
                    "sqs:// url has a path ({:?}) that is not /ACCOUNT/QUEUE of a queue URL's host; \
                     write sqs://QUEUE_NAME, sqs://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE or a \
                     percent-encoded queue URL (sqs://https%3A%2F%2F…)",
                    url.path()
                ));
            }
            Some(format!("https://{host}/{}/{}", segments[0], segments[1]))
        } else {
            None
        };
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(
                "sqs:// urls take no credentials or port: credentials come from the AWS chain"
                    .into(),
            );
        }
        let mut known = vec!["region", "endpoint", "message_group_id"];
        known.extend_from_slice(extra);
        let options = Options::parse("sqs", url.query(), &known)?;
        let host = written_out.unwrap_or_else(|| decode(host));
        let (queue, name) = if host.starts_with("https://") || host.starts_with("http://") {
            let q = url::Url::parse(&host).map_err(|e| format!("invalid sqs queue URL: {e}"))?;
            let name = q
                .path_segments()
                .and_then(|mut s| s.next_back())
                .unwrap_or("")
                .to_owned();
            (Queue::Url(host.clone()), name)
        } else {
            (Queue::Name(host.clone()), host.clone())
        };
        validate_name(&name)?;
        let mut region = options.string("region").map(str::to_owned);
        if region.is_none() {
            if let Queue::Url(u) = &queue {
                // https://sqs.REGION.amazonaws.com/ACCOUNT/NAME
                region = u
                    .split("://")
                    .nth(1)
                    .and_then(|h| h.split('/').next())
                    .and_then(|h| h.strip_prefix("sqs."))
                    .and_then(|h| h.split('.').next())
                    .map(str::to_owned);
            }
        }
        if let Some(r) = &region {
            if r.is_empty() || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("sqs region {r:?} is invalid (example: eu-west-1)"));
            }
        }
        let endpoint = options.string("endpoint").map(str::to_owned);
        if let Some(e) = &endpoint {
            let u = url::Url::parse(e)
                .map_err(|err| format!("sqs option endpoint {e:?} is not a URL: {err}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("sqs option endpoint {e:?} must be an http(s) URL"));
            }
        }
        let fifo = name.ends_with(".fifo");
        let message_group_id = options.string("message_group_id").map(str::to_owned);
        if message_group_id.is_some() && !fifo {
            return Err(
                "sqs option message_group_id applies to FIFO queues (names ending in .fifo) only"
                    .into(),
            );
        }
        if let Some(g) = &message_group_id {
            if g.len() > 128 {
                return Err("sqs message_group_id is at most 128 characters".into());
            }
        }
        Ok((
            Self {
                queue,
                region,
                endpoint,
                message_group_id,
                fifo,
            },
            options,
        ))
    }

    fn client_key(&self) -> String {
        format!(
            "{}|{}",
            self.region.as_deref().unwrap_or(""),
            self.endpoint.as_deref().unwrap_or("")
        )
    }
}

/// An SQS client for `config`'s region and endpoint, credentials from the AWS chain.
pub(crate) async fn sdk_client(
    config: &SqsConfig,
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<Client, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(connect_timeout)
                .operation_attempt_timeout(timeout)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2));
    if let Some(r) = &config.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(e) = &config.endpoint {
        loader = loader.endpoint_url(e.clone());
    }
    let sdk = loader.load().await;
    if sdk.region().is_none() {
        return Err("sqs: no region: add ?region=R to the url or set AWS_REGION".into());
    }
    Ok(Client::new(&sdk))
}

/// The SQS destination.
pub struct Sqs {
    settings: BrokerSettings,
    clients: Pool<Client>,
    /// Queue URLs resolved from names, by client key and name.
    queue_urls: Pool<String>,
}

fn classify<E, R>(e: &SdkError<E, R>) -> SendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!("sqs: {}", DisplayErrorContext(e));
    match e {
        SdkError::ServiceError(service) => match service.err().code() {
            Some(
                "InvalidMessageContents"
                | "InvalidParameterValue"
                | "InvalidAttributeName"
                | "InvalidAttributeValue"
                | "UnsupportedOperation"
                | "MissingParameter"
                | "InvalidParameterCombination",
            ) => permanent(text),
            Some(code)
                if code.contains("NonExistentQueue") || code.contains("QueueDoesNotExist") =>
            {
                retryable("sqs: the queue does not exist (create it; deliveries are retried)")
            }
            _ => retryable(text),
        },
        SdkError::ConstructionFailure(_) => permanent(text),
        _ => retryable(text),
    }
}

impl Sqs {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            clients: Pool::default(),
            queue_urls: Pool::default(),
        }
    }

    async fn client(&self, config: &SqsConfig) -> Result<Client, SendError> {
        let settings = &self.settings;
        self.clients
            .get(&config.client_key(), || async {
                sdk_client(config, settings.connect_timeout, settings.timeout)
                    .await
                    .map_err(permanent)
            })
            .await
    }

    async fn queue_url(&self, client: &Client, config: &SqsConfig) -> Result<String, SendError> {
        match &config.queue {
            Queue::Url(u) => Ok(u.clone()),
            Queue::Name(name) => {
                let key = format!("{}|{name}", config.client_key());
                self.queue_urls
                    .get(&key, || async {
                        let out = client
                            .get_queue_url()
                            .queue_name(name)
                            .send()
                            .await
                            .map_err(|e| classify(&e))?;
                        out.queue_url
                            .ok_or_else(|| retryable("sqs: GetQueueUrl returned no URL"))
                    })
                    .await
            }
        }
    }

    pub async fn send(
        &self,
        config: &SqsConfig,
        endpoint: &Endpoint,
        message: &Message,
    ) -> Result<Ack, SendError> {
        if message.headers.len() > 10 {
            return Err(permanent(format!(
                "sqs: {} headers, but SQS carries at most 10 message attributes",
                message.headers.len()
            )));
        }
        let body = std::str::from_utf8(&message.body)
            .map_err(|_| permanent("sqs: the body is not UTF-8"))?;
        let client = self.client(config).await?;
        let queue_url = self.queue_url(&client, config).await?;
        let mut attributes = HashMap::with_capacity(message.headers.len());
        for (name, value) in &message.headers {
            let v = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| permanent(format!("sqs: attribute {name}: {e}")))?;
            attributes.insert(name.clone(), v);
        }
        let mut request = client
            .send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .set_message_attributes(Some(attributes));
        if config.fifo {
            request = request
                .message_group_id(
                    config
                        .message_group_id
                        .clone()
                        .or_else(|| message.ordering_key.as_deref().map(group_id))
                        .unwrap_or_else(|| endpoint.id.clone()),
                )
                .message_deduplication_id(&message.id);
        }
        match request.send().await {
            Ok(out) => {
                let mut ack = format!("message id {}", out.message_id.unwrap_or_default());
                if let Some(seq) = out.sequence_number {
                    ack.push_str(&format!(" sequence {seq}"));
                }
                Ok(acked(ack))
            }
            Err(e) => {
                if let Queue::Name(name) = &config.queue {
                    // A queue deleted and created again has a new URL.
                    self.queue_urls
                        .evict(&format!("{}|{name}", config.client_key()));
                }
                Err(classify(&e))
            }
        }
    }
}

/// An ordering key as an SQS message group id: itself when SQS accepts it (1 to 128
/// printable ASCII characters), else a hex digest of it (still one group per key).
fn group_id(key: &str) -> String {
    let valid = !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        key.to_owned()
    } else {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(key.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = SqsConfig::parse("sqs://Orders_1?region=eu-west-1").unwrap();
        assert_eq!(c.queue, Queue::Name("Orders_1".into()));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(!c.fifo);
        let c = SqsConfig::parse(
            "sqs://https%3A%2F%2Fsqs.us-east-2.amazonaws.com%2F123456789012%2Fjobs.fifo?message_group_id=g",
        )
        .unwrap();
        assert_eq!(
            c.queue,
            Queue::Url("https://sqs.us-east-2.amazonaws.com/123456789012/jobs.fifo".into())
        );
        assert_eq!(c.region.as_deref(), Some("us-east-2"));
        assert!(c.fifo);
        // The queue URL's host and path, as the community platform's plan writes it.
        let c = SqsConfig::parse(
            "sqs://sqs.us-east-1.amazonaws.com/123456789012/orders?region=us-east-1",
        )
        .unwrap();
        assert_eq!(
            c.queue,
            Queue::Url("https://sqs.us-east-1.amazonaws.com/123456789012/orders".into())
        );
        assert_eq!(c.region.as_deref(), Some("us-east-1"));
        let c =
            SqsConfig::parse("sqs://sqs.eu-west-1.amazonaws.com/123456789012/jobs.fifo/").unwrap();
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert!(c.fifo);
        let c = SqsConfig::parse("sqs://q?endpoint=http%3A%2F%2F127.0.0.1%3A4566&region=us-east-1")
            .unwrap();
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
        crate::destinations::options::refuses(
            SqsConfig::parse,
            &[
                ("sqs://", "needs a queue"),
                ("sqs://bad%20name", "invalid"),
                ("sqs://q?message_group_id=g", "FIFO"),
                ("sqs://q?endpoint=ftp://x", "http(s)"),
                ("sqs://q?region=eu_west", "region"),
                ("sqs://q?regoin=x", "unknown option"),
                ("sqs://q/extra", "percent-encoded"),
                (
                    "sqs://sqs.us-east-1.amazonaws.com/123/q/more",
                    "/ACCOUNT/QUEUE",
                ),
                ("sqs://sqs.us-east-1.amazonaws.com/12-3/q", "/ACCOUNT/QUEUE"),
                ("sqs://u:p@q", "credentials"),
            ],
        );
    }
}
