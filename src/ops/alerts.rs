//! Alerts: the health rules, checked periodically, announced to alert sinks through
//! hookrelay's own delivery pipeline, so alerts are signed, retried and logged like any
//! delivery.
//!
//! - Each configured sink is an endpoint of the internal tenant [`SYSTEM_TENANT`],
//!   subscribed to `hookrelay.alert.*`, managed from the configuration (`--alert-sink`).
//! - A failing rule about a subject (an endpoint, a dispatcher, or `global`) opens an alert
//!   row in the store; only the process whose insert wins announces it, as an event
//!   `hookrelay.alert.fired` whose idempotency key derives from the alert's episode, so a
//!   crash between the two steps cannot announce it twice, and a restart does not announce
//!   it again. While it stays open nothing more is sent (no alert storm). When the rule
//!   passes again, one `hookrelay.alert.resolved` follows and the row goes.
//! - With `--alert-format slack` the sinks receive the event's data alone, `{"text": …}`,
//!   which Slack (and Slack-compatible chat webhooks) accept; with `json` (the default)
//!   they receive the standard envelope `{"id", "type", "timestamp", "data"}`.
//!
//! If every dispatcher is down, alerts wait in the store like any delivery and go out when
//! one is back: watch `/v1/health` or `/metrics` from outside for that case.

use std::{sync::Arc, time::Duration};

use clap::ValueEnum;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::health::{Snapshot, Thresholds};
use crate::{
    domain::{self, Endpoint, EventType, Tenant},
    ingest::{self, NewEvent, SchemaCache},
    signing,
    store::{ops::AlertRecord, Store, StoreError},
    wake::Waker,
};

/// The internal tenant whose endpoints are the alert sinks.
pub const SYSTEM_TENANT: &str = "hookrelay";
/// Event type of an alert that fired.
pub const FIRED: &str = "hookrelay.alert.fired";
/// Event type of an alert that cleared.
pub const RESOLVED: &str = "hookrelay.alert.resolved";

const JSON_SINK_PREFIX: &str = "ep_jsonsink_";
const SLACK_SINK_PREFIX: &str = "ep_slacksink_";

/// What the sinks receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// The standard webhook envelope; `data` holds the alert.
    #[default]
    Json,
    /// `{"text": "…"}` alone, for Slack-compatible incoming webhooks.
    Slack,
}

/// Alert settings.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub sinks: Vec<url::Url>,
    pub format: AlertFormat,
    /// How often the rules are checked.
    pub interval: Duration,
    pub thresholds: Thresholds,
}

/// The id of the managed endpoint of a sink: the format and a hash of the URL, so every
/// process derives the same one.
pub fn sink_endpoint_id(url: &str, format: AlertFormat) -> String {
    let hash = hex::encode(Sha256::digest(url.as_bytes()));
    let prefix = match format {
        AlertFormat::Json => JSON_SINK_PREFIX,
        AlertFormat::Slack => SLACK_SINK_PREFIX,
    };
    format!("{prefix}{}", &hash[..24])
}

/// Whether an endpoint id is one of a managed sink's.
pub fn is_managed_sink(id: &str) -> bool {
    id.starts_with(JSON_SINK_PREFIX) || id.starts_with(SLACK_SINK_PREFIX)
}

/// How urgent a rule's alerts are: `critical` when events stop moving (a growing backlog,
/// a stalled dispatcher, a source that cannot read), `warning` for the rest. A sink whose URL
/// ends in `#critical` gets the critical ones only.
pub fn severity(rule: &str) -> &'static str {
    match rule {
        "pending" | "dispatcher_stalled" | "source_failing" => "critical",
        _ => "warning",
    }
}

/// A configured sink: the URL deliveries go to (without the severity fragment) and whether
/// it takes critical alerts only (`#critical`; `#warning`, or none, takes every alert).
pub fn sink_target(sink: &url::Url) -> (String, bool) {
    let critical = sink.fragment() == Some("critical");
    let mut target = sink.clone();
    if matches!(sink.fragment(), Some("critical" | "warning")) {
        target.set_fragment(None);
    }
    (target.to_string(), critical)
}

/// Checks a configured sink: an http(s) or smtp URL, with at most a severity fragment.
pub fn check_sink(sink: &url::Url) -> Result<(), String> {
    let (target, _) = sink_target(sink);
    match sink.scheme() {
        "http" | "https" => Ok(()),
        "smtp" => crate::destinations::smtp::SmtpConfig::parse(&target).map(|_| ()),
        other => Err(format!(
            "alert sinks must be http://, https:// or smtp:// URLs, got {other}://"
        )),
    }
    .map_err(|e| crate::destinations::options::scrub(e, sink.as_str()))?;
    match sink.fragment() {
        None | Some("critical" | "warning") => Ok(()),
        Some(_) if sink.scheme() != "smtp" => Ok(()),
        Some(other) => Err(format!(
            "an alert sink may end in #critical or #warning (the alerts it takes), got #{other}"
        )),
    }
}

/// The routing of a sink endpoint: Slack-format sinks get the event's `{"text": …}` alone,
/// through the same transformation any endpoint can have (so it is signed as sent); a
/// critical-only sink filters on the alert's severity.
fn sink_routing(
    format: AlertFormat,
    critical_only: bool,
) -> std::sync::Arc<crate::domain::routing::Routing> {
    let spec = crate::domain::routing::RoutingSpec {
        transform: (format == AlertFormat::Slack).then(|| {
            serde_json::json!([
                {"rename": {"data.text": "text"}},
                {"pick": ["text"]}
            ])
        }),
        filter: critical_only
            .then(|| serde_json::json!({"field": "data.severity", "eq": "critical"})),
        ..Default::default()
    };
    // A constant, valid routing: compiling it cannot fail.
    crate::domain::routing::Routing::compile(spec)
        .map(std::sync::Arc::new)
        .unwrap_or_default()
}

/// The tenant that owns the sink endpoints.
pub fn system_tenant() -> Tenant {
    Tenant {
        id: SYSTEM_TENANT.into(),
        name: "hookrelay alerts".into(),
        created_at: domain::now(),
    }
}

/// The event types alerts are announced as.
pub fn alert_event_types() -> Vec<EventType> {
    [(FIRED, "fired"), (RESOLVED, "resolved")]
        .into_iter()
        .map(|(name, what)| EventType {
            name: name.into(),
            description: Some(format!("A hookrelay alert {what} (see /v1/health).")),
            schema: None,
            created_at: domain::now(),
        })
        .collect()
}

/// The managed endpoints the configured sinks want, by id.
pub fn sink_endpoints(config: &AlertConfig) -> Vec<Endpoint> {
    config
        .sinks
        .iter()
        .map(|url| {
            let (target, critical_only) = sink_target(url);
            Endpoint {
                id: sink_endpoint_id(url.as_str(), config.format),
                description: Some("alert sink (managed by --alert-sink)".into()),
                event_types: vec!["hookrelay.alert.*".into()],
                routing: sink_routing(config.format, critical_only),
                ..Endpoint::new(SYSTEM_TENANT, &target, signing::generate_secret())
            }
        })
        .collect()
}

/// Checks the rules and announces what changed, every `config.interval`, until `stop`.
pub struct Evaluator {
    pub store: Arc<dyn Store>,
    pub config: AlertConfig,
    pub waker: Waker,
    pub default_max_attempts: u32,
    pub ops: Option<Arc<super::Ops>>,
}

impl Evaluator {
    /// Runs until `stop`. The sinks are installed beforehand
    /// (`Service::install_alert_sinks`).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let schemas = Arc::new(SchemaCache::default());
        while !*stop.borrow() {
            if let Err(e) = self.evaluate(&schemas).await {
                warn!(error = %e, "alert evaluation failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.interval) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One round: open alerts for failing rules, resolve cleared ones, announce.
    pub async fn evaluate(&self, schemas: &Arc<SchemaCache>) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        let snapshot = Snapshot::read(store).await?;
        let findings = snapshot.findings(&self.config.thresholds);
        let now = snapshot.now;
        for f in &findings {
            let open = snapshot
                .alerts
                .iter()
                .any(|a| a.rule == f.rule && a.subject == f.subject);
            if !open {
                let record = AlertRecord {
                    rule: f.rule.into(),
                    subject: f.subject.clone(),
                    episode: domain::new_id("alr"),
                    message: f.message.clone(),
                    details: f.details.clone(),
                    fired_at: now,
                    fired_sent: false,
                    resolved_at: None,
                };
                if store.open_alert(&record).await? {
                    warn!(rule = f.rule, subject = %f.subject, message = %f.message, "alert fired");
                }
            }
        }
        for a in snapshot.alerts.iter().filter(|a| a.resolved_at.is_none()) {
            let failing = findings
                .iter()
                .any(|f| f.rule == a.rule && f.subject == a.subject);
            if !failing {
                store
                    .resolve_alert(&a.rule, &a.subject, &a.episode, now)
                    .await?;
                info!(rule = %a.rule, subject = %a.subject, "alert resolved");
            }
        }
        let alerts = store.list_alerts().await?;
        if let Some(ops) = &self.ops {
            let firing = alerts.iter().filter(|a| a.resolved_at.is_none()).count();
            ops.metrics
                .alerts_firing
                .set(i64::try_from(firing).unwrap_or(i64::MAX));
        }
        for a in alerts {
            if !a.fired_sent {
                self.announce(schemas, &a, false).await?;
                store
                    .alert_sent(&a.rule, &a.subject, &a.episode, false)
                    .await?;
            }
            if a.resolved_at.is_some() {
                self.announce(schemas, &a, true).await?;
                store
                    .alert_sent(&a.rule, &a.subject, &a.episode, true)
                    .await?;
            }
        }
        Ok(())
    }

    /// Hands an announcement to the pipeline: an event of the system tenant, fanned out to
    /// the sinks. Its idempotency key makes a repeat (after a crash, or by a second process)
    /// the same event.
    async fn announce(
        &self,
        schemas: &Arc<SchemaCache>,
        a: &AlertRecord,
        resolved: bool,
    ) -> Result<(), StoreError> {
        if self.config.sinks.is_empty() {
            return Ok(());
        }
        let (event_type, state) = if resolved {
            (RESOLVED, "resolved")
        } else {
            (FIRED, "firing")
        };
        let severity = severity(&a.rule);
        let text = if resolved {
            format!("[hookrelay] RESOLVED {}: {}", a.rule, a.message)
        } else {
            format!("[hookrelay] ALERT {}: {}", a.rule, a.message)
        };
        let data = match self.config.format {
            AlertFormat::Slack => serde_json::json!({ "text": text, "severity": severity }),
            AlertFormat::Json => serde_json::json!({
                "text": text,
                "rule": a.rule,
                "severity": severity,
                "subject": a.subject,
                "state": state,
                "message": a.message,
                "details": a.details,
                "episode": a.episode,
                "fired_at": a.fired_at,
                "resolved_at": a.resolved_at,
            }),
        };
        let new = NewEvent {
            event_type: event_type.into(),
            data,
            idempotency_key: Some(format!("{}-{state}", a.episode)),
            ..Default::default()
        };
        match ingest::ingest(
            self.store.as_ref(),
            schemas.clone(),
            &self.waker,
            SYSTEM_TENANT,
            self.default_max_attempts,
            new,
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(ingest::IngestError::Store(e)) => Err(e),
            Err(e) => {
                // A refusal cannot get better by trying again: log it and move on.
                warn!(error = %e, rule = %a.rule, "alert announcement refused");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_are_http_or_smtp_and_may_take_critical_alerts_only() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let mail = "smtp://u:p@127.0.0.1:2525?from=a%40b.c&to=d%40e.f%2Cg%40h.i";
        assert!(check_sink(&url(mail)).is_ok());
        let critical = url(&format!("{mail}#critical"));
        assert!(check_sink(&critical).is_ok());
        assert_eq!(sink_target(&critical), (mail.to_owned(), true));
        assert_eq!(
            sink_target(&url("https://x.example/hook#warning")),
            ("https://x.example/hook".to_owned(), false)
        );
        for (bad, says) in [
            ("ftp://x.example/", "http://, https:// or smtp://"),
            ("smtp://u:s3cret@x.example?to=d%40e.f", "from="),
            (
                "smtp://x.example?from=a%40b.c&to=d%40e.f#urgent",
                "#critical or #warning",
            ),
        ] {
            let e = check_sink(&url(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        assert_eq!(severity("pending"), "critical");
        assert_eq!(severity("breaker_open"), "warning");
    }

    #[test]
    fn sink_ids_are_stable_and_say_their_format() {
        let a = sink_endpoint_id("https://hooks.slack.com/x", AlertFormat::Slack);
        assert_eq!(
            a,
            sink_endpoint_id("https://hooks.slack.com/x", AlertFormat::Slack)
        );
        assert!(a.starts_with(SLACK_SINK_PREFIX) && is_managed_sink(&a));
        assert!(a.len() <= 64);
        assert_ne!(
            a,
            sink_endpoint_id("https://hooks.slack.com/x", AlertFormat::Json)
        );
    }
}
