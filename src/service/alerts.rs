//! The alert sinks (`--alert-sink`): endpoints of the system tenant that the operator's
//! configuration names (see [`crate::ops::alerts`]), made to match it at every start, under
//! the same URL rules and audit trail as any endpoint.

use std::collections::HashSet;

use super::{endpoints::check_url, Caller, Error, Result, Service};
use crate::{
    ops::alerts::{
        alert_event_types, is_managed_sink, sink_endpoints, system_tenant, AlertConfig,
        SYSTEM_TENANT,
    },
    store::{Page, StoreError},
};

/// Who changes the sinks, in the audit trail.
const SYSTEM: Caller<'static> = Caller {
    actor: "system",
    admin: true,
    brokers: true,
};

/// A create that another process may have made first: done either way.
fn created(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::Conflict(_)) => Ok(()),
        other => other,
    }
}

impl Service<'_> {
    /// Makes the system tenant, the alert event types and one endpoint per configured sink
    /// exist (a sink the endpoint URL rules refuse is logged and left out), and removes
    /// managed sink endpoints that are no longer configured. Safe to run from several
    /// processes at once.
    pub async fn install_alert_sinks(&self, config: &AlertConfig) -> Result<()> {
        if config.sinks.is_empty() {
            if self.store.get_tenant(SYSTEM_TENANT).await?.is_none() {
                return Ok(());
            }
        } else {
            created(self.store.create_tenant(&system_tenant()).await)?;
            for event_type in alert_event_types() {
                created(self.store.create_event_type(&event_type).await)?;
            }
        }
        let wanted = sink_endpoints(config);
        for endpoint in &wanted {
            if self
                .store
                .get_endpoint(SYSTEM_TENANT, &endpoint.id)
                .await?
                .is_some()
            {
                continue;
            }
            // A sink the URL rules refuse gets nothing; the others still work.
            if let Err(e) = check_url(self, &endpoint.url).await {
                tracing::warn!(
                    sink = %crate::secrets::redact_url(&endpoint.url),
                    error = %e,
                    "alert sink refused; it gets no alerts"
                );
                continue;
            }
            if let Err(e) = self.store.create_endpoint(endpoint, u32::MAX).await {
                // Another process may have created it meanwhile.
                if self
                    .store
                    .get_endpoint(SYSTEM_TENANT, &endpoint.id)
                    .await?
                    .is_none()
                {
                    return Err(e.into());
                }
                continue;
            }
            let view = super::endpoints::audit_view(endpoint);
            self.audit(
                &SYSTEM,
                Some(SYSTEM_TENANT),
                "endpoint.created",
                Some(&endpoint.id),
                view,
            )
            .await;
        }
        let keep: HashSet<&str> = wanted.iter().map(|e| e.id.as_str()).collect();
        let page = Page {
            after_id: None,
            limit: 250,
        };
        for ep in self.store.list_endpoints(SYSTEM_TENANT, &page).await? {
            if is_managed_sink(&ep.id) && !keep.contains(ep.id.as_str()) {
                // Another process may have deleted it meanwhile.
                match self.delete_endpoint(&SYSTEM, SYSTEM_TENANT, &ep.id).await {
                    Ok(()) | Err(Error::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}
