//! Google Cloud Pub/Sub over gRPC (the `gcloud-pubsub` client): one publish per delivery,
//! the webhook headers as attributes, an optional ordering key; the ack is the message id.
//!
//! `pubsub://PROJECT/TOPIC?ordering_key=event_id|actor|data.FIELD&credentials_file=/path`.
//! Credentials: the key file named by `credentials_file`, else Google's usual chain
//! (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application default credentials, the
//! metadata server). When `PUBSUB_EMULATOR_HOST` is set (as for Google's own clients),
//! every Pub/Sub destination goes to that emulator, without credentials.

use std::{sync::Arc, time::Duration};

use gcloud_gax::{
    conn::{ConnectionOptions, Environment},
    grpc::{Code, Status},
    retry::RetrySetting,
};
use gcloud_googleapis::pubsub::v1::PubsubMessage;
use gcloud_pubsub::{
    client::{google_cloud_auth::credentials::CredentialsFile, Client, ClientConfig},
    publisher::Publisher,
};

use super::{
    options::{decode, KeySpec, Options},
    router::{acked, permanent, retryable, within, BrokerSettings, Pool},
    Ack, Message, SendError,
};

/// A parsed `pubsub://` URL.
#[derive(Debug, Clone)]
pub struct PubsubConfig {
    pub project: String,
    pub topic: String,
    pub ordering_key: Option<KeySpec>,
    pub credentials_file: Option<String>,
}

impl PubsubConfig {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = crate::destinations::options::broker_url(raw)?;
        let project = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("pubsub:// url needs a project: pubsub://PROJECT/TOPIC")?;
        let project = decode(project);
        if !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c))
        {
            return Err(format!(
                "pubsub project {project:?} is invalid: a project id has lowercase letters, digits and hyphens"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err("pubsub:// urls take no credentials or port; use credentials_file or the Google credential chain".into());
        }
        let topic = decode(url.path().trim_start_matches('/'));
        validate_topic(&topic)?;
        let options = Options::parse("pubsub", url.query(), &["ordering_key", "credentials_file"])?;
        let credentials_file = options.string("credentials_file").map(str::to_owned);
        if let Some(f) = &credentials_file {
            if !f.starts_with('/') {
                return Err(format!(
                    "pubsub option credentials_file must be an absolute path, got {f:?}"
                ));
            }
        }
        Ok(Self {
            project,
            topic,
            ordering_key: options.key("ordering_key")?,
            credentials_file,
        })
    }

    fn client_key(&self) -> String {
        format!(
            "{}|{}",
            self.project,
            self.credentials_file.as_deref().unwrap_or("")
        )
    }
}

fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("pubsub:// url needs a topic: pubsub://PROJECT/TOPIC".into());
    }
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "-_.~+%".contains(c);
    if !(3..=255).contains(&topic.len())
        || !topic.starts_with(|c: char| c.is_ascii_alphabetic())
        || !topic.chars().all(valid_char)
        || topic.starts_with("goog")
    {
        return Err(format!(
            "pubsub topic {topic:?} is invalid: 3 to 255 characters, starting with a letter, of letters, digits and - _ . ~ + %, not starting with goog"
        ));
    }
    Ok(())
}

/// The Pub/Sub destination.
pub struct Pubsub {
    settings: BrokerSettings,
    clients: Pool<Client>,
    publishers: Pool<Arc<Publisher>>,
}

fn classify(status: &Status) -> SendError {
    let text = format!("pubsub: {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => permanent(text),
        Code::NotFound => retryable(format!(
            "pubsub: the topic does not exist (create it; deliveries are retried): {}",
            status.message()
        )),
        _ => retryable(text),
    }
}

impl Pubsub {
    pub fn new(settings: BrokerSettings) -> Self {
        Self {
            settings,
            clients: Pool::default(),
            publishers: Pool::default(),
        }
    }

    async fn client(&self, config: &PubsubConfig) -> Result<Client, SendError> {
        let settings = &self.settings;
        self.clients
            .get(&config.client_key(), || {
                within(settings.connect_timeout, "connecting to pubsub", async {
                    let mut cc = ClientConfig {
                        project_id: Some(config.project.clone()),
                        connection_option: ConnectionOptions {
                            timeout: Some(settings.timeout),
                            connect_timeout: Some(settings.connect_timeout),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    match &settings.pubsub_emulator_host {
                        Some(host) => cc.environment = Environment::Emulator(host.clone()),
                        // The default environment is Google Cloud (or the emulator named
                        // by this process's PUBSUB_EMULATOR_HOST, as Google's clients do);
                        // with_auth adds credentials only for Google Cloud.
                        None => {
                            cc = match &config.credentials_file {
                                Some(path) => {
                                    let file = CredentialsFile::new_from_file(path.clone())
                                        .await
                                        .map_err(|e| {
                                        retryable(format!(
                                            "pubsub: cannot read credentials_file: {e}"
                                        ))
                                    })?;
                                    cc.with_credentials(file).await
                                }
                                None => cc.with_auth().await,
                            }
                            .map_err(|e| retryable(format!("pubsub: no credentials: {e}")))?;
                        }
                    }
                    Client::new(cc)
                        .await
                        .map_err(|e| retryable(format!("pubsub: cannot connect: {e}")))
                })
            })
            .await
    }

    pub async fn send(&self, config: &PubsubConfig, message: &Message) -> Result<Ack, SendError> {
        let client = self.client(config).await?;
        let key = format!("{}|{}", config.client_key(), config.topic);
        let publisher = self
            .publishers
            .get(&key, || async {
                let topic = client.topic(&config.topic);
                Ok(Arc::new(topic.new_publisher(None)))
            })
            .await?;
        let msg = PubsubMessage {
            data: message.body.clone(),
            attributes: message
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ordering_key: config
                .ordering_key
                .as_ref()
                .and_then(|k| k.extract(message))
                .or_else(|| message.ordering_key.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let retry = RetrySetting {
            from_millis: 50,
            max_delay: Some(Duration::from_secs(1)),
            factor: 1,
            take: 2,
            codes: vec![Code::Unavailable, Code::Unknown, Code::Aborted],
        };
        let ids = publisher
            .publish_immediately(vec![msg], Some(retry))
            .await
            .map_err(|e| classify(&e))?;
        let id = ids
            .into_iter()
            .next()
            .ok_or_else(|| retryable("pubsub: the publish returned no message id"))?;
        Ok(acked(format!("message id {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let c = PubsubConfig::parse("pubsub://my-project/user-events?ordering_key=actor").unwrap();
        assert_eq!(
            (c.project.as_str(), c.topic.as_str()),
            ("my-project", "user-events")
        );
        assert_eq!(c.ordering_key, Some(KeySpec::Actor));
        crate::destinations::options::refuses(
            PubsubConfig::parse,
            &[
                ("pubsub://p", "needs a topic"),
                ("pubsub://p/ab", "invalid"),
                ("pubsub://p/1abc", "invalid"),
                ("pubsub://p/goog-x", "invalid"),
                ("pubsub://p/topic?ordering_key=x", "not a key"),
                ("pubsub://p/topic?credentials_file=key.json", "absolute"),
                ("pubsub://p/topic?orderingkey=actor", "unknown option"),
            ],
        );
    }
}
