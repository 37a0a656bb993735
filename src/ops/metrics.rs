//! Prometheus metrics, served at `/metrics` in the text exposition format.
//!
//! Counters and histograms are this process's (one registry per [`crate::App`], so several
//! apps in one process never mix their numbers); the gauges of the store (pending
//! deliveries, oldest pending age, open breakers, disabled endpoints) are read from the
//! store at scrape time and are the same from every process. `/metrics` needs no
//! authentication, so those reads are shared: at most one every [`STORE_GAUGES_MAX_AGE`],
//! whatever the number of scrapes.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Buckets (seconds) of the attempt duration histogram.
const ATTEMPT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets (seconds) of the end-to-end latency histogram: from the event's creation (or
/// its `deliver_at`) to the end of the attempt that delivered it, retries included.
const E2E_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    21600.0,
];

/// How old the store's gauges may be when scraped: no scrape rate makes the store count
/// its pending deliveries more often than this.
pub const STORE_GAUGES_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// Every metric hookrelay exports.
pub struct Metrics {
    registry: Registry,
    /// When the store's gauges were last read; held while they are read, so concurrent
    /// scrapes wait for one read instead of each making their own.
    pub store_read_at: tokio::sync::Mutex<Option<std::time::Instant>>,
    /// Deliveries that finished, by `outcome` (`delivered`, `failed`) and `destination`.
    pub deliveries: IntCounterVec,
    /// Attempts by `outcome` (`success`, `retry`, `failed`) and `destination`.
    pub attempts: IntCounterVec,
    /// Attempt duration by `destination`.
    pub attempt_duration: HistogramVec,
    /// End-to-end latency of delivered deliveries by `destination`.
    pub delivery_latency: HistogramVec,
    /// Events accepted by the API (idempotent replays not counted).
    pub events_ingested: IntCounter,
    /// Deliveries created by those events.
    pub deliveries_created: IntCounter,
    pub pending: IntGauge,
    pub oldest_pending_age: IntGauge,
    pub open_breakers: IntGauge,
    pub disabled_endpoints: IntGauge,
    pub alerts_firing: IntGauge,
    /// Messages read from sources, by `source` and `outcome` (`ingested`, `duplicate`,
    /// `rejected`).
    pub source_messages: IntCounterVec,
    /// Messages in a source's broker not yet read, by `source`.
    pub source_lag: IntGaugeVec,
}

impl Metrics {
    /// A fresh registry with every metric, and the process metrics (CPU, memory, file
    /// descriptors, start time) on Linux.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let deliveries = IntCounterVec::new(
            Opts::new(
                "hookrelay_deliveries_total",
                "Deliveries that finished, by outcome (delivered, failed) and destination kind.",
            ),
            &["outcome", "destination"],
        )?;
        let attempts = IntCounterVec::new(
            Opts::new(
                "hookrelay_attempts_total",
                "Delivery attempts by outcome (success, retry, failed) and destination kind.",
            ),
            &["outcome", "destination"],
        )?;
        let attempt_duration = HistogramVec::new(
            HistogramOpts::new(
                "hookrelay_attempt_duration_seconds",
                "Duration of one delivery attempt, by destination kind.",
            )
            .buckets(ATTEMPT_BUCKETS.to_vec()),
            &["destination"],
        )?;
        let delivery_latency = HistogramVec::new(
            HistogramOpts::new(
                "hookrelay_delivery_latency_seconds",
                "End-to-end latency of delivered deliveries (event created to delivered, \
                 retries included), by destination kind.",
            )
            .buckets(E2E_BUCKETS.to_vec()),
            &["destination"],
        )?;
        let events_ingested = IntCounter::new(
            "hookrelay_events_ingested_total",
            "Events accepted by this process (the ingest rate is its rate()).",
        )?;
        let deliveries_created = IntCounter::new(
            "hookrelay_deliveries_created_total",
            "Deliveries created by the events this process accepted.",
        )?;
        let pending = IntGauge::new(
            "hookrelay_pending_deliveries",
            "Deliveries pending in the store (all processes).",
        )?;
        let oldest_pending_age = IntGauge::new(
            "hookrelay_oldest_pending_age_seconds",
            "Age of the oldest pending delivery (0 when none).",
        )?;
        let open_breakers = IntGauge::new(
            "hookrelay_open_breakers",
            "Endpoints whose circuit breaker is open or half-open.",
        )?;
        let disabled_endpoints = IntGauge::new(
            "hookrelay_disabled_endpoints",
            "Endpoints that are disabled.",
        )?;
        let alerts_firing = IntGauge::new(
            "hookrelay_alerts_firing",
            "Alerts firing now (see GET /v1/health).",
        )?;
        let source_messages = IntCounterVec::new(
            Opts::new(
                "hookrelay_source_messages_total",
                "Messages read from sources, by source and outcome (ingested, duplicate, rejected).",
            ),
            &["source", "outcome"],
        )?;
        let source_lag = IntGaugeVec::new(
            Opts::new(
                "hookrelay_source_lag",
                "Messages in a source's broker not yet read by hookrelay, by source.",
            ),
            &["source"],
        )?;
        registry.register(Box::new(source_messages.clone()))?;
        registry.register(Box::new(source_lag.clone()))?;
        registry.register(Box::new(deliveries.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        registry.register(Box::new(attempt_duration.clone()))?;
        registry.register(Box::new(delivery_latency.clone()))?;
        registry.register(Box::new(events_ingested.clone()))?;
        registry.register(Box::new(deliveries_created.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(oldest_pending_age.clone()))?;
        registry.register(Box::new(open_breakers.clone()))?;
        registry.register(Box::new(disabled_endpoints.clone()))?;
        registry.register(Box::new(alerts_firing.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            store_read_at: tokio::sync::Mutex::new(None),
            deliveries,
            attempts,
            attempt_duration,
            delivery_latency,
            events_ingested,
            deliveries_created,
            pending,
            oldest_pending_age,
            open_breakers,
            disabled_endpoints,
            alerts_firing,
            source_messages,
            source_lag,
        })
    }

    /// Counts one attempt (and, when it finished the delivery, the delivery).
    pub fn attempt(
        &self,
        destination: &str,
        outcome: crate::domain::AttemptOutcome,
        status: crate::domain::DeliveryStatus,
        duration_ms: u64,
        e2e_ms: Option<u64>,
    ) {
        use crate::domain::DeliveryStatus;
        self.attempts
            .with_label_values(&[outcome.as_str(), destination])
            .inc();
        self.attempt_duration
            .with_label_values(&[destination])
            .observe(duration_ms as f64 / 1000.0);
        match status {
            DeliveryStatus::Delivered => {
                self.deliveries
                    .with_label_values(&["delivered", destination])
                    .inc();
                if let Some(ms) = e2e_ms {
                    self.delivery_latency
                        .with_label_values(&[destination])
                        .observe(ms as f64 / 1000.0);
                }
            }
            DeliveryStatus::Failed | DeliveryStatus::Cancelled => {
                self.deliveries
                    .with_label_values(&["failed", destination])
                    .inc();
            }
            DeliveryStatus::Pending => {}
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// The destination kind of an endpoint URL, the `destination` label: its scheme, with
/// `https` counted as `http`.
pub fn destination_kind(url: &str) -> &'static str {
    let scheme = url.split(':').next().unwrap_or_default();
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => "http",
        "sqs" => "sqs",
        "pubsub" => "pubsub",
        "kafka" => "kafka",
        "amqp" | "amqps" => "amqp",
        "nats" => "nats",
        "redis" | "rediss" => "redis",
        "mqtt" | "mqtts" => "mqtt",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AttemptOutcome, DeliveryStatus};

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new().unwrap();
        m.attempt(
            "http",
            AttemptOutcome::Success,
            DeliveryStatus::Delivered,
            12,
            Some(40),
        );
        let text = m.render().unwrap();
        assert!(
            text.contains(
                "hookrelay_deliveries_total{destination=\"http\",outcome=\"delivered\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("hookrelay_attempt_duration_seconds_bucket"));
        assert_eq!(destination_kind("HTTPS://x"), "http");
        assert_eq!(destination_kind("kafka://h/t"), "kafka");
    }
}
