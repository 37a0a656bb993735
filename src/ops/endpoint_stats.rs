//! Per-endpoint statistics: what an operator asks about one webhook (how many attempts,
//! how many delivered and failed, how fast, when it last worked and why it last failed),
//! summed from the endpoint's per-minute counters, never from the attempt log.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::health::percentile;
use crate::store::ops::{minute_of, EndpointHistory, MinuteStats};

/// One endpoint's statistics.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct EndpointStats {
    pub endpoint_id: String,
    pub last_hour: EndpointWindow,
    pub last_24_hours: EndpointWindow,
    /// When an attempt last succeeded (within the last 24 hours).
    pub last_success_at: Option<DateTime<Utc>>,
    /// When an attempt last failed (within the last 24 hours), and its error.
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub generated_at: DateTime<Utc>,
}

/// Totals of one window.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct EndpointWindow {
    /// Attempts that finished within the window.
    pub attempts: u64,
    /// Deliveries delivered within the window.
    pub delivered: u64,
    /// Deliveries that failed for good within the window.
    pub failed: u64,
    /// Failed attempts with another attempt scheduled.
    pub retries: u64,
    /// Successful share of the window's attempts, 0 to 1; `null` without attempts.
    pub success_rate: Option<f64>,
    /// End-to-end latency of the deliveries delivered within the window (from the event's
    /// creation, or its `deliver_at`, to the end of the attempt that delivered it),
    /// estimated within histogram buckets (10 ms … 6 h).
    pub latency_ms: Percentiles,
    /// Mean duration of one attempt (the request and the answer); `null` without attempts.
    pub mean_attempt_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// The statistics of `endpoint_id` at `now` from its history (which
/// [`crate::store::ops::OpsStore::endpoint_stats_since`] read from 24 hours back).
pub fn report(endpoint_id: &str, history: &EndpointHistory, now: DateTime<Utc>) -> EndpointStats {
    let window = |minutes: i64| {
        let from = minute_of(now) - minutes + 1;
        let mut sum = MinuteStats::default();
        for m in history.minutes.iter().filter(|m| m.minute >= from) {
            sum.merge(m);
        }
        let rate = |part: u64| (sum.attempts > 0).then(|| part as f64 / sum.attempts as f64);
        EndpointWindow {
            attempts: sum.attempts,
            delivered: sum.delivered,
            failed: sum.failed,
            retries: sum.retried,
            success_rate: rate(sum.delivered),
            latency_ms: Percentiles {
                p50: percentile(&sum.e2e_buckets, 0.50),
                p95: percentile(&sum.e2e_buckets, 0.95),
                p99: percentile(&sum.e2e_buckets, 0.99),
            },
            mean_attempt_ms: rate(sum.attempt_ms),
        }
    };
    EndpointStats {
        endpoint_id: endpoint_id.to_owned(),
        last_hour: window(60),
        last_24_hours: window(24 * 60),
        last_success_at: history.last_success_at,
        last_failure_at: history.last_failure_at,
        last_error: history.last_error.clone(),
        generated_at: now,
    }
}

/// Reads an endpoint's history from `store` and reports on it, now.
pub async fn read(
    store: &dyn crate::store::Store,
    endpoint_id: &str,
) -> Result<EndpointStats, crate::store::StoreError> {
    let now = crate::domain::now();
    let history = store
        .endpoint_stats_since(endpoint_id, since_minute(now))
        .await?;
    Ok(report(endpoint_id, &history, now))
}

/// How far back [`report`] needs the history: the first minute of the last 24 hours.
pub fn since_minute(now: DateTime<Utc>) -> i64 {
    minute_of(now) - 24 * 60 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DeliveryStatus;

    #[test]
    fn windows_sum_their_minutes_and_rates_follow_attempts() {
        let now = chrono::Utc::now();
        let minute = minute_of(now);
        let mut recent = MinuteStats {
            minute,
            ..Default::default()
        };
        recent.add(DeliveryStatus::Delivered, 20, Some(30));
        recent.add(DeliveryStatus::Pending, 40, None);
        let mut old = MinuteStats {
            minute: minute - 120,
            ..Default::default()
        };
        old.add(DeliveryStatus::Failed, 100, None);
        let history = EndpointHistory {
            minutes: vec![old, recent],
            ..Default::default()
        };
        let r = report("ep_1", &history, now);
        assert_eq!(
            (
                r.last_hour.attempts,
                r.last_hour.delivered,
                r.last_hour.retries
            ),
            (2, 1, 1)
        );
        assert_eq!(r.last_hour.success_rate, Some(0.5));
        assert_eq!(r.last_hour.mean_attempt_ms, Some(30.0));
        assert_eq!(r.last_24_hours.attempts, 3);
        assert_eq!(r.last_24_hours.failed, 1);
        assert!(r.last_hour.latency_ms.p50.is_some());
        let empty = report("ep_1", &EndpointHistory::default(), now);
        assert_eq!(empty.last_hour.success_rate, None);
        assert_eq!(empty.last_hour.latency_ms.p99, None);
    }
}
