//! The states of this process's source consumers, as `/v1/health` and the dashboard show
//! them: written by the consumers (`crate::sources`), read by health and the dashboard.

use std::{collections::BTreeMap, sync::Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// Whether a source's consumer is reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    /// Connecting for the first time.
    Starting,
    Running,
    /// Another process reads this source (Kafka sources are read by one process at a
    /// time); this one takes over if that one stops.
    Standby,
    /// The last attempt to read or to store failed; it is retried with backoff.
    Failing,
}

/// A source's consumer in this process, as `/v1/health` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SourceState {
    pub id: String,
    pub tenant_id: String,
    /// `redis`, `nats`, `sqs`, `amqp` or `kafka`.
    pub kind: String,
    pub status: SourceStatus,
    /// Messages in the broker not yet read by hookrelay, when the broker says.
    pub lag: Option<u64>,
    /// Messages read but not yet acknowledged, when the broker says.
    pub pending: Option<u64>,
    /// Messages of this process that became events, were duplicates, were rejected.
    pub ingested: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub last_message_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
}

/// The states of this process's consumers, by source id.
#[derive(Default)]
pub struct States(Mutex<BTreeMap<String, SourceState>>);

impl States {
    /// The map; a poisoned lock is taken over (the states are plain counters).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SourceState>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every state, in source id order.
    pub fn snapshot(&self) -> Vec<SourceState> {
        self.lock().values().cloned().collect()
    }
}
