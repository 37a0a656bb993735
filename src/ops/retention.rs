//! Retention: history older than the configured age is deleted in small batches, so that a
//! live system never sees a long delete and ingest and dispatch go on meanwhile.
//!
//! - events created before the cutoff none of whose deliveries is pending, with their
//!   deliveries and attempts (200 events per transaction);
//! - attempts of delivered deliveries before the cutoff (1,000 per transaction), for
//!   events kept because another of their deliveries is still pending;
//! - inbox messages before the cutoff, per-minute statistics older than two days, and
//!   dispatchers silent for a day.
//!
//! Pending deliveries are never deleted, however old.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    domain,
    store::{ops::minute_of, Store, StoreError},
};

/// Events deleted per transaction (each takes its deliveries and attempts along).
pub const EVENT_BATCH: u32 = 200;
/// Attempts and operations rows deleted per transaction.
pub const ROW_BATCH: u32 = 1000;

/// What one pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pass {
    pub events: u64,
    pub attempts: u64,
    pub other: u64,
    /// Some batch was full: more is left to delete.
    pub more: bool,
}

/// One batch of each kind.
pub async fn prune_once(store: &dyn Store, retention: Duration) -> Result<Pass, StoreError> {
    let now = domain::now();
    // An absurd retention keeps everything (it used to prune everything: cutoff now).
    let cutoff = domain::before(now, retention);
    let events = store.prune_events(cutoff, EVENT_BATCH).await?;
    let attempts = store.prune_attempts(cutoff, ROW_BATCH).await?;
    let other = store
        .prune_operations(
            cutoff,
            minute_of(now) - 2 * 24 * 60,
            now - chrono::Duration::hours(24),
            ROW_BATCH,
        )
        .await?;
    Ok(Pass {
        events,
        attempts,
        other,
        more: events >= u64::from(EVENT_BATCH)
            || attempts >= u64::from(ROW_BATCH)
            || other >= u64::from(ROW_BATCH),
    })
}

/// Prunes until `stop`: batch after batch (50 ms apart) while there is a backlog, then
/// once a minute.
pub async fn run(store: Arc<dyn Store>, retention: Duration, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        let rest = match prune_once(store.as_ref(), retention).await {
            Ok(pass) => {
                if pass.events + pass.attempts > 0 {
                    info!(
                        events = pass.events,
                        attempts = pass.attempts,
                        other = pass.other,
                        "retention: old history deleted"
                    );
                }
                if pass.more {
                    Duration::from_millis(50)
                } else {
                    Duration::from_secs(60)
                }
            }
            Err(e) => {
                warn!(error = %e, "retention: pruning failed");
                Duration::from_secs(60)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(rest) => {}
            _ = stop.changed() => {}
        }
    }
}
