//! Operations: health numbers, Prometheus metrics, trace context, alerts, the test tools and
//! retention. Everything here reads the store and the dispatcher's results; nothing here
//! changes how deliveries flow.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::warn;

use crate::{
    destinations::Destination,
    domain,
    store::{ops::DispatcherBeat, Store},
};

pub mod alerts;
pub mod endpoint_stats;
pub mod health;
pub mod metrics;
pub mod retention;
pub mod source_states;

/// How often a dispatcher process reports that it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

/// What the operations side of one running hookrelay shares.
pub struct Ops {
    pub metrics: metrics::Metrics,
    /// This process's dispatcher id (`dsp_…`), under which its statistics and heartbeats
    /// are kept.
    pub dispatcher_id: String,
    /// The destination the test endpoint sends through (the dispatcher's own kind).
    pub destination: Arc<dyn Destination>,
    /// The last answer of the open `/status` route and when it was read: it is served
    /// from here for [`metrics::STORE_GAUGES_MAX_AGE`], so an open route costs the store
    /// at most one report that often.
    pub status: tokio::sync::Mutex<Option<(std::time::Instant, health::Status)>>,
    /// The states of this process's source consumers.
    pub sources: source_states::States,
    /// Poked when this process's API changes a source, so its consumers follow at once.
    pub sources_changed: tokio::sync::Notify,
}

impl Ops {
    pub fn new(destination: Arc<dyn Destination>) -> Result<Self, prometheus::Error> {
        Ok(Self {
            metrics: metrics::Metrics::new()?,
            dispatcher_id: domain::new_id("dsp"),
            destination,
            status: Default::default(),
            sources: Default::default(),
            sources_changed: Default::default(),
        })
    }
}

/// Reports this dispatcher alive every [`HEARTBEAT_INTERVAL`] until `stop`, then records
/// that it stopped cleanly (a stopped dispatcher is not "stalled").
pub async fn heartbeat(store: Arc<dyn Store>, id: String, mut stop: watch::Receiver<bool>) {
    let started_at = domain::now();
    let mut beat = DispatcherBeat {
        id,
        hostname: hostname(),
        pid: std::process::id(),
        started_at,
        last_heartbeat: started_at,
        stopped_at: None,
    };
    while !*stop.borrow() {
        beat.last_heartbeat = domain::now();
        if let Err(e) = store.heartbeat(&beat).await {
            warn!(error = %e, "dispatcher heartbeat failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            _ = stop.changed() => {}
        }
    }
    let now = domain::now();
    beat.last_heartbeat = now;
    beat.stopped_at = Some(now);
    if let Err(e) = store.heartbeat(&beat).await {
        warn!(error = %e, "recording the dispatcher's stop failed");
    }
}

/// This machine's name, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
