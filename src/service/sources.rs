//! Sources, brokers whose messages become a tenant's events: creation and deletion, the
//! operator's alone (a source reads from the operator's own infrastructure).

use serde::Deserialize;
use utoipa::ToSchema;

use super::{check_description, Caller, Error, Result, Service};
use crate::{
    domain::{self, new_id},
    sources::SourceUrl,
    store::{ops::Source, Page, StoreError},
};

/// Sources one tenant may have.
pub const MAX_PER_TENANT: u32 = 20;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSource {
    /// Where to read: `redis://HOST:PORT/DB?stream=NAME` (options `group`, `start`,
    /// `claim_idle_ms`, `batch`) or `nats://HOST:PORT/STREAM` (options `consumer`,
    /// `subject`, `start`, `ack_wait_ms`, `batch`) or `sqs://QUEUE?region=R` (options
    /// `endpoint`, `wait_seconds`, `visibility_timeout`, `batch`) or
    /// `amqp://USER:PASS@HOST:PORT/VHOST?queue=NAME` (option `prefetch`) or
    /// `kafka://HOST:PORT/TOPIC` (options `start`, `max_bytes`).
    pub url: String,
    pub description: Option<String>,
}

impl Service<'_> {
    /// Creates a source of `tenant` (the caller has checked access to it); the running
    /// sources are told.
    pub async fn create_source(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        req: CreateSource,
    ) -> Result<Source> {
        caller.require_admin()?;
        SourceUrl::parse(&req.url).map_err(Error::invalid)?;
        if crate::secrets::url_password_looks_sealed(&req.url) {
            return Err(Error::invalid(
                "the URL's password may not start with `enc1%3A` (marks sealed values)",
            ));
        }
        check_description(req.description.as_ref())?;
        let existing = self
            .store
            .list_sources(
                Some(tenant),
                &Page {
                    after_id: None,
                    limit: MAX_PER_TENANT,
                },
            )
            .await?;
        if existing.len() >= MAX_PER_TENANT as usize {
            return Err(StoreError::LimitReached(format!(
                "tenant {tenant} has {MAX_PER_TENANT} sources, the most allowed"
            ))
            .into());
        }
        let source = Source {
            id: new_id("src"),
            tenant_id: tenant.to_owned(),
            url: req.url,
            description: req.description,
            created_at: domain::now(),
        };
        self.store.create_source(&source).await?;
        self.audit(
            caller,
            Some(&source.tenant_id),
            "source.created",
            Some(&source.id),
            serde_json::json!({
                "url": crate::secrets::redact_url(&source.url),
                "description": source.description,
            }),
        )
        .await;
        self.sources_changed.notify_one();
        Ok(source)
    }
}

impl Service<'_> {
    /// Deletes a source of `tenant` (the caller has checked access to it); the running
    /// sources are told.
    pub async fn delete_source(&self, caller: &Caller<'_>, tenant: &str, id: &str) -> Result<()> {
        caller.require_admin()?;
        let existed = self.store.delete_source(tenant, id).await?;
        if existed {
            self.sources_changed.notify_one();
        }
        self.deleted(caller, tenant, existed, ("source", "source.deleted"), id)
            .await
    }
}
