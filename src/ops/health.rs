//! `GET /v1/health`: numbers a person can read, and the rules that say whether hookrelay is
//! healthy (the same rules raise alerts).
//!
//! Everything comes from small reads: the per-minute counters (at most 1,440 rows, one per
//! minute of the last day, summed over dispatchers), the indexes of pending deliveries, of
//! open breakers and of disabled endpoints, the dispatchers' heartbeats and the alert
//! table. No query reads the delivery or attempt history.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain,
    store::{
        ops::{
            minute_of, AlertRecord, DispatcherBeat, FlaggedEndpoint, MinuteStats, E2E_BOUNDS_MS,
            E2E_BUCKETS,
        },
        Store, StoreError,
    },
};

/// The limits the rules check. Each is a setting (see `config`).
#[derive(Debug, Clone)]
pub struct Thresholds {
    /// Failed share of the attempts of the last hour above which `failure_rate` fails.
    pub failure_rate: f64,
    /// Attempts in the last hour below which the failure rate is not judged.
    pub min_attempts: u64,
    /// Pending deliveries above which `pending` fails.
    pub pending: u64,
    /// A running dispatcher silent for longer than this is stalled.
    pub stall: Duration,
}

/// Totals of a time window.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Window {
    /// `delivered + failed + pending`.
    pub total: u64,
    /// Deliveries delivered within the window.
    pub delivered: u64,
    /// Deliveries that failed for good within the window.
    pub failed: u64,
    /// Deliveries pending now (the same number in every window).
    pub pending: u64,
    /// Attempts made within the window.
    pub attempts: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
    /// Failed share of the window's attempts (retries and final failures), 0 to 1.
    pub failure_rate: f64,
    /// End-to-end latency of the window's delivered deliveries.
    pub latency_ms: Latency,
}

/// Latency percentiles, estimated from histogram buckets (`null` without deliveries).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    pub last_hour: Window,
    pub last_24_hours: Window,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Breakers {
    /// How many endpoints have an open (or half-open) breaker.
    pub open: usize,
    /// Their ids.
    pub endpoints: Vec<String>,
    /// Every endpoint's breaker, counted by state.
    pub by_state: crate::store::ops::BreakerCounts,
}

/// A dispatcher process and when it was last heard of.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DispatcherHealth {
    #[serde(flatten)]
    pub beat: DispatcherBeat,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: f64,
    /// Running, and silent for longer than the stall threshold.
    pub stalled: bool,
}

/// An alert that is firing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FiringAlert {
    pub rule: String,
    pub subject: String,
    pub message: String,
    pub fired_at: DateTime<Utc>,
}

/// The answer of `GET /v1/health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    /// `false` when any rule fails; `reasons` says which.
    pub healthy: bool,
    pub reasons: Vec<String>,
    pub stats: Stats,
    /// Deliveries pending now.
    pub pending: u64,
    /// Age of the oldest pending delivery (`null` when none is pending).
    pub oldest_pending_age_seconds: Option<f64>,
    /// Deliveries per second over the last one to two minutes.
    pub deliveries_per_second: f64,
    /// End-to-end latency of the last hour.
    pub latency_ms: Latency,
    pub circuit_breakers: Breakers,
    /// Endpoints that are disabled, with why.
    pub disabled_endpoints: Vec<FlaggedEndpoint>,
    /// Dispatcher processes running now or heard of in the last 24 hours.
    pub dispatchers: Vec<DispatcherHealth>,
    /// Alerts firing now.
    pub alerts: Vec<FiringAlert>,
    /// The source consumers of the process that answered: status, backlog, last error.
    pub sources: Vec<super::source_states::SourceState>,
    pub generated_at: DateTime<Utc>,
}

/// What the open `/status` route tells an uptime monitor: whether hookrelay is healthy and
/// which rules fail, never an id or a number of a tenant's.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Status {
    pub healthy: bool,
    /// The failing rules, each once: `failure_rate`, `pending`, `breaker_open`,
    /// `endpoint_disabled`, `dispatcher_stalled`, `source_failing`.
    pub failing: Vec<&'static str>,
}

/// The rule a source consumer breaks while its last read or store failed.
pub const SOURCE_FAILING: &str = "source_failing";

impl Status {
    /// Adds the rule about this process's source consumers.
    pub fn with_sources(mut self, sources: &[super::source_states::SourceState]) -> Self {
        if sources.iter().any(failing) && !self.failing.contains(&SOURCE_FAILING) {
            self.failing.push(SOURCE_FAILING);
            self.failing.sort_unstable();
            self.healthy = false;
        }
        self
    }
}

fn failing(s: &super::source_states::SourceState) -> bool {
    s.status == super::source_states::SourceStatus::Failing
}

impl HealthReport {
    /// Adds this process's source consumers; a failing one makes the report unhealthy.
    pub fn with_sources(mut self, sources: Vec<super::source_states::SourceState>) -> Self {
        for s in sources.iter().filter(|s| failing(s)) {
            self.healthy = false;
            self.reasons.push(format!(
                "source {} of tenant {} is failing: {}",
                s.id,
                s.tenant_id,
                s.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        self.sources = sources;
        self
    }

    /// The HTTP status a monitor acts on: `200` when healthy, `503` otherwise.
    pub fn http_status(&self) -> axum::http::StatusCode {
        if self.healthy {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl Snapshot {
    /// The [`Status`] under thresholds `t`.
    pub fn status(&self, t: &Thresholds) -> Status {
        let mut failing: Vec<&'static str> = self.findings(t).iter().map(|f| f.rule).collect();
        failing.sort_unstable();
        failing.dedup();
        Status {
            healthy: failing.is_empty(),
            failing,
        }
    }
}

/// One failing rule about one subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `failure_rate`, `pending`, `breaker_open`, `endpoint_disabled`, `dispatcher_stalled`.
    pub rule: &'static str,
    /// `global`, an endpoint id or a dispatcher id.
    pub subject: String,
    pub message: String,
    pub details: serde_json::Value,
}

/// What the rules look at, read from the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub now: DateTime<Utc>,
    pub minutes: Vec<MinuteStats>,
    pub pending: u64,
    pub oldest_pending: Option<DateTime<Utc>>,
    pub flagged: Vec<FlaggedEndpoint>,
    /// Enabled endpoints whose client certificate expires within [`CERTIFICATE_WARNING`].
    pub expiring: Vec<crate::store::ops::ExpiringCertificate>,
    pub breakers: crate::store::ops::BreakerCounts,
    pub dispatchers: Vec<DispatcherBeat>,
    pub alerts: Vec<AlertRecord>,
}

/// How long before a client certificate expires its alert fires.
pub const CERTIFICATE_WARNING: chrono::Duration = chrono::Duration::days(14);

/// Most flagged endpoints listed.
const FLAGGED_LIMIT: u32 = 1000;

impl Snapshot {
    /// Reads everything the report needs, concurrently.
    pub async fn read(store: &dyn Store) -> Result<Self, StoreError> {
        let now = domain::now();
        let since = minute_of(now) - 24 * 60 + 1;
        let (minutes, pending, flagged, expiring, breakers, dispatchers, alerts) = tokio::try_join!(
            store.stats_since(since),
            store.pending_summary(),
            store.flagged_endpoints(FLAGGED_LIMIT),
            store.expiring_certificates(now + CERTIFICATE_WARNING, FLAGGED_LIMIT),
            store.breaker_counts(),
            store.list_dispatchers(now - chrono::Duration::hours(24)),
            store.list_alerts(),
        )?;
        Ok(Self {
            now,
            minutes,
            pending: pending.count,
            oldest_pending: pending.oldest_created_at,
            flagged,
            expiring,
            breakers,
            dispatchers,
            alerts,
        })
    }

    fn window(&self, minutes: i64) -> Window {
        let from = minute_of(self.now) - minutes + 1;
        let mut sum = MinuteStats::default();
        for m in self.minutes.iter().filter(|m| m.minute >= from) {
            sum.merge(m);
        }
        let failures = sum.retried + sum.failed;
        Window {
            total: sum.delivered + sum.failed + self.pending,
            delivered: sum.delivered,
            failed: sum.failed,
            pending: self.pending,
            attempts: sum.attempts,
            retries: sum.retried,
            failure_rate: if sum.attempts == 0 {
                0.0
            } else {
                failures as f64 / sum.attempts as f64
            },
            latency_ms: Latency {
                p50: percentile(&sum.e2e_buckets, 0.5),
                p95: percentile(&sum.e2e_buckets, 0.95),
            },
        }
    }

    /// The rules, in a fixed order: failure rate, pending, breakers, disabled endpoints,
    /// stalled dispatchers.
    pub fn findings(&self, t: &Thresholds) -> Vec<Finding> {
        let mut out = Vec::new();
        let hour = self.window(60);
        if hour.attempts >= t.min_attempts && hour.failure_rate > t.failure_rate {
            out.push(Finding {
                rule: "failure_rate",
                subject: "global".into(),
                message: format!(
                    "{:.0} % of the {} attempts of the last hour failed (threshold {:.0} %)",
                    hour.failure_rate * 100.0,
                    hour.attempts,
                    t.failure_rate * 100.0
                ),
                details: serde_json::json!({
                    "failure_rate": hour.failure_rate, "attempts": hour.attempts,
                    "threshold": t.failure_rate,
                }),
            });
        }
        if self.pending > t.pending {
            out.push(Finding {
                rule: "pending",
                subject: "global".into(),
                message: format!(
                    "{} deliveries are pending (threshold {})",
                    self.pending, t.pending
                ),
                details: serde_json::json!({"pending": self.pending, "threshold": t.pending}),
            });
        }
        for e in self
            .flagged
            .iter()
            .filter(|e| e.enabled && e.breaker_state != "closed")
        {
            out.push(Finding {
                rule: "breaker_open",
                subject: e.id.clone(),
                message: format!(
                    "the circuit breaker of endpoint {} (tenant {}) is open: its deliveries wait",
                    e.id, e.tenant_id
                ),
                details: serde_json::json!({"endpoint_id": e.id, "tenant_id": e.tenant_id,
                                            "breaker_state": e.breaker_state}),
            });
        }
        // Endpoints disabled by hookrelay (410 Gone, failing too long) carry a reason; one
        // disabled by hand does not, and raises nothing.
        for e in self
            .flagged
            .iter()
            .filter(|e| !e.enabled && e.disabled_reason.is_some())
        {
            out.push(Finding {
                rule: "endpoint_disabled",
                subject: e.id.clone(),
                message: format!(
                    "endpoint {} (tenant {}) was disabled: {}",
                    e.id,
                    e.tenant_id,
                    e.disabled_reason.as_deref().unwrap_or_default()
                ),
                details: serde_json::json!({"endpoint_id": e.id, "tenant_id": e.tenant_id,
                                            "reason": e.disabled_reason}),
            });
        }
        for c in &self.expiring {
            let days = (c.expires_at - self.now).num_hours() as f64 / 24.0;
            let when = if days > 0.0 {
                format!("expires in {days:.1} days")
            } else {
                "has expired".to_owned()
            };
            out.push(Finding {
                rule: "certificate_expiring",
                subject: c.id.clone(),
                message: format!(
                    "the client certificate of endpoint {} (tenant {}) {when} ({})",
                    c.id,
                    c.tenant_id,
                    c.expires_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                details: serde_json::json!({"endpoint_id": c.id, "tenant_id": c.tenant_id,
                                            "expires_at": c.expires_at}),
            });
        }
        for d in self.dispatchers.iter().filter(|d| self.stalled(d, t)) {
            let age = self.age(d.last_heartbeat);
            out.push(Finding {
                rule: "dispatcher_stalled",
                subject: d.id.clone(),
                message: format!(
                    "dispatcher {} ({} pid {}) has not reported for {:.0} s",
                    d.id, d.hostname, d.pid, age
                ),
                details: serde_json::json!({"dispatcher_id": d.id, "hostname": d.hostname,
                                            "pid": d.pid, "last_heartbeat": d.last_heartbeat}),
            });
        }
        out
    }

    fn age(&self, t: DateTime<Utc>) -> f64 {
        ((self.now - t).num_milliseconds().max(0)) as f64 / 1000.0
    }

    fn stalled(&self, d: &DispatcherBeat, t: &Thresholds) -> bool {
        d.stopped_at.is_none() && self.now - d.last_heartbeat > domain::span(t.stall)
    }

    /// The report, with the rules judged against `t`.
    pub fn report(&self, t: &Thresholds) -> HealthReport {
        let findings = self.findings(t);
        let hour = self.window(60);
        let day = self.window(24 * 60);
        let current = minute_of(self.now);
        let recent: u64 = self
            .minutes
            .iter()
            .filter(|m| m.minute >= current - 1)
            .map(|m| m.delivered)
            .sum();
        let into_minute = (self.now.timestamp_millis().rem_euclid(60_000)) as f64 / 1000.0;
        let open: Vec<String> = self
            .flagged
            .iter()
            .filter(|e| e.breaker_state != "closed")
            .map(|e| e.id.clone())
            .collect();
        HealthReport {
            healthy: findings.is_empty(),
            reasons: findings.iter().map(|f| f.message.clone()).collect(),
            pending: self.pending,
            oldest_pending_age_seconds: self.oldest_pending.map(|t| self.age(t)),
            deliveries_per_second: recent as f64 / (60.0 + into_minute),
            latency_ms: hour.latency_ms.clone(),
            stats: Stats {
                last_hour: hour,
                last_24_hours: day,
            },
            circuit_breakers: Breakers {
                open: open.len(),
                endpoints: open,
                by_state: self.breakers,
            },
            disabled_endpoints: self
                .flagged
                .iter()
                .filter(|e| !e.enabled)
                .cloned()
                .collect(),
            dispatchers: self
                .dispatchers
                .iter()
                .map(|d| DispatcherHealth {
                    beat: d.clone(),
                    heartbeat_age_seconds: self.age(d.last_heartbeat),
                    stalled: self.stalled(d, t),
                })
                .collect(),
            alerts: self
                .alerts
                .iter()
                .filter(|a| a.resolved_at.is_none())
                .map(|a| FiringAlert {
                    rule: a.rule.clone(),
                    subject: a.subject.clone(),
                    message: a.message.clone(),
                    fired_at: a.fired_at,
                })
                .collect(),
            sources: Vec::new(),
            generated_at: self.now,
        }
    }
}

/// The `q` quantile (0 to 1) of a latency histogram, in milliseconds: linear within the
/// bucket it falls in; in the open-ended last bucket, that bucket's lower bound.
pub fn percentile(buckets: &[u64; E2E_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let mut seen = 0.0;
    for (i, &n) in buckets.iter().enumerate() {
        let lower = if i == 0 {
            0.0
        } else {
            E2E_BOUNDS_MS[i - 1] as f64
        };
        let Some(&upper) = E2E_BOUNDS_MS.get(i) else {
            return Some(lower);
        };
        if n > 0 && seen + n as f64 >= target {
            let within = (target - seen) / n as f64;
            return Some(lower + (upper as f64 - lower) * within);
        }
        seen += n as f64;
    }
    E2E_BOUNDS_MS.last().map(|b| *b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_within_buckets() {
        let mut b = [0u64; E2E_BUCKETS];
        assert_eq!(percentile(&b, 0.5), None);
        b[0] = 10; // 0..10 ms
        b[1] = 10; // 10..25 ms
        assert_eq!(percentile(&b, 0.5), Some(10.0));
        assert_eq!(percentile(&b, 0.75), Some(17.5));
        b[E2E_BUCKETS - 1] = 1000;
        assert_eq!(
            percentile(&b, 0.99),
            Some(*E2E_BOUNDS_MS.last().unwrap() as f64)
        );
    }

    #[test]
    fn rules_fire_on_their_thresholds() {
        let now = domain::now();
        let t = Thresholds {
            failure_rate: 0.5,
            min_attempts: 10,
            pending: 100,
            stall: Duration::from_secs(300),
        };
        let mut s = Snapshot {
            now,
            ..Default::default()
        };
        assert!(s.findings(&t).is_empty());
        let mut m = MinuteStats {
            minute: minute_of(now),
            ..Default::default()
        };
        for _ in 0..6 {
            m.add(domain::DeliveryStatus::Pending, 1, None);
        }
        for _ in 0..4 {
            m.add(domain::DeliveryStatus::Delivered, 1, Some(5));
        }
        s.minutes = vec![m];
        s.pending = 101;
        s.dispatchers = vec![DispatcherBeat {
            id: "dsp_1".into(),
            hostname: "h".into(),
            pid: 1,
            started_at: now,
            last_heartbeat: now - chrono::Duration::minutes(6),
            stopped_at: None,
        }];
        let rules: Vec<&str> = s.findings(&t).iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["failure_rate", "pending", "dispatcher_stalled"]);
        let r = s.report(&t);
        assert!(!r.healthy);
        assert_eq!(r.stats.last_hour.delivered, 4);
        assert_eq!(r.stats.last_hour.total, 105);
    }
}
