//! Deliveries: a manual retry, and replays (of an event, or of whatever a filter selects).

use super::{Error, Result, Service};
use crate::{
    domain::{self, Delivery, DeliveryStatus},
    store::ReplayFilter,
};

impl Service<'_> {
    /// Makes a finished delivery of `tenant` (the caller has checked access to it) due now,
    /// with a fresh budget of attempts (its endpoint's, or the server's). A pending
    /// delivery, or one whose endpoint is gone, is a conflict.
    pub async fn retry_delivery(&self, tenant: &str, id: &str) -> Result<Delivery> {
        let current = self
            .store
            .get_delivery(tenant, id)
            .await?
            .ok_or(Error::NotFound("delivery"))?;
        if current.status == DeliveryStatus::Pending {
            return Err(Error::Conflict("delivery is already pending".into()));
        }
        let endpoint = self
            .store
            .get_endpoint(tenant, &current.endpoint_id)
            .await?
            .ok_or_else(|| Error::Conflict("the delivery's endpoint was deleted".into()))?;
        let budget = endpoint.max_attempts.unwrap_or(self.rules.max_attempts);
        let delivery = self
            .store
            .retry_delivery(tenant, id, domain::now(), budget)
            .await?
            .ok_or(Error::NotFound("delivery"))?;
        self.waker.wake();
        Ok(delivery)
    }

    /// Replays one event of `tenant` (the caller has checked access to it): its delivered
    /// and failed deliveries (to endpoints that still exist) are due again. Returns how many.
    pub async fn replay_event(&self, tenant: &str, id: &str) -> Result<u64> {
        self.store
            .get_event(tenant, id)
            .await?
            .ok_or(Error::NotFound("event"))?;
        let filter = ReplayFilter {
            event_id: Some(id.to_owned()),
            statuses: vec![DeliveryStatus::Delivered, DeliveryStatus::Failed],
            ..Default::default()
        };
        self.replay(tenant, &filter).await
    }

    /// Makes every delivery of `tenant` that `filter` selects pending again, due now, in
    /// batches, waking the dispatchers after each. Returns how many.
    pub async fn replay(&self, tenant: &str, filter: &ReplayFilter) -> Result<u64> {
        const BATCH: u32 = 1000;
        let now = domain::now();
        let mut total = 0;
        loop {
            let n = self
                .store
                .replay(tenant, filter, now, self.rules.max_attempts, BATCH)
                .await?;
            total += n;
            if n > 0 {
                self.waker.wake();
            }
            if n < u64::from(BATCH) {
                return Ok(total);
            }
        }
    }
}
