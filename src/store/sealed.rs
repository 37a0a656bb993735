//! [`SealedStore`]: credentials encrypted at rest around any [`Store`].
//!
//! Endpoint signing secrets, header values and URL passwords, and inbox tokens and secrets,
//! are sealed on their way in (`create_endpoint`, `update_endpoint`, `create_inbox`) and
//! opened on their way out (`get_endpoint`, `list_endpoints`, `claim`, the inbox reads), so
//! neither the stores nor their callers deal with ciphertext. (Inboxes are found by their
//! token's hash, which is not sealed.) Everything else passes through.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    ops::{
        AlertRecord, AuditEntry, AuditFilter, BatchStats, DispatcherBeat, EndpointHistory,
        FlaggedEndpoint, Inbox, InboxMessage, MinuteStats, PendingSummary, Source, SourceRejection,
    },
    Catalog, Claimed, Completion, DataCheck, DeliveryFilter, EventFilter, Ingested, OpsStore, Page,
    ReplayFilter, Result, Store, StoreError, TenantShare, TokenRecord,
};
use crate::{
    domain::{Attempt, BreakerPolicy, Delivery, Endpoint, Event, EventType, Tenant},
    secrets::Keyring,
};

/// Associated data of a header value: bound to its endpoint and its name.
fn header_aad(endpoint_id: &str, name: &str) -> String {
    format!("{endpoint_id}#header:{}", name.to_ascii_lowercase())
}

/// Associated data of a URL's password.
fn url_aad(endpoint_id: &str) -> String {
    format!("{endpoint_id}#url")
}

/// Associated data of an inbox's token.
fn token_aad(inbox_id: &str) -> String {
    format!("{inbox_id}#token")
}

/// A store whose endpoint secrets are sealed with `keys`.
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Keyring,
}

impl SealedStore {
    pub fn new(inner: Arc<dyn Store>, keys: Keyring) -> Self {
        Self { inner, keys }
    }

    fn seal(&self, ep: &Endpoint) -> Endpoint {
        let mut sealed = ep.clone();
        sealed.secret = self.keys.seal(&ep.id, &ep.secret);
        sealed.previous_secret = ep
            .previous_secret
            .as_deref()
            .map(|s| self.keys.seal(&ep.id, s));
        sealed.headers = ep
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    self.keys.seal(&header_aad(&ep.id, name), value),
                )
            })
            .collect();
        sealed.url = self.keys.seal_url(&url_aad(&ep.id), &ep.url);
        sealed
    }

    fn open(&self, mut ep: Endpoint) -> Result<Endpoint> {
        let unreadable = |e: crate::secrets::SecretsError| {
            StoreError::Corrupt(format!("secret of endpoint {}: {e}", ep.id))
        };
        ep.secret = self.keys.open(&ep.id, &ep.secret).map_err(unreadable)?;
        if let Some(prev) = &ep.previous_secret {
            ep.previous_secret = Some(self.keys.open(&ep.id, prev).map_err(unreadable)?);
        }
        let mut headers = std::collections::BTreeMap::new();
        for (name, value) in &ep.headers {
            let plain = self
                .keys
                .open(&header_aad(&ep.id, name), value)
                .map_err(unreadable)?;
            headers.insert(name.clone(), plain);
        }
        ep.headers = headers;
        ep.url = self
            .keys
            .open_url(&url_aad(&ep.id), &ep.url)
            .map_err(unreadable)?;
        Ok(ep)
    }

    /// Whether every credential of a stored endpoint is sealed with the current key.
    fn is_current(&self, raw: &Endpoint) -> bool {
        self.keys.is_current(&raw.secret)
            && raw
                .previous_secret
                .as_deref()
                .is_none_or(|s| self.keys.is_current(s))
            && raw.headers.values().all(|v| self.keys.is_current(v))
            && self.keys.url_is_current(&raw.url)
    }

    fn seal_inbox(&self, inbox: &Inbox) -> Inbox {
        let mut sealed = inbox.clone();
        sealed.token = self.keys.seal(&token_aad(&inbox.id), &inbox.token);
        sealed.secret = inbox
            .secret
            .as_deref()
            .map(|s| self.keys.seal(&inbox.id, s));
        sealed
    }

    fn open_source(&self, mut source: Source) -> Result<Source> {
        source.url = self
            .keys
            .open_url(&url_aad(&source.id), &source.url)
            .map_err(|e| StoreError::Corrupt(format!("url of source {}: {e}", source.id)))?;
        Ok(source)
    }

    fn open_inbox(&self, mut inbox: Inbox) -> Result<Inbox> {
        let unreadable = |what: &str, e: crate::secrets::SecretsError| {
            StoreError::Corrupt(format!("{what} of inbox {}: {e}", inbox.id))
        };
        let token = self
            .keys
            .open(&token_aad(&inbox.id), &inbox.token)
            .map_err(|e| unreadable("token", e))?;
        let secret = match &inbox.secret {
            Some(secret) => Some(
                self.keys
                    .open(&inbox.id, secret)
                    .map_err(|e| unreadable("secret", e))?,
            ),
            None => None,
        };
        inbox.token = token;
        inbox.secret = secret;
        Ok(inbox)
    }

    /// Whether an inbox's token and secret are sealed with the current key.
    fn inbox_is_current(&self, raw: &Inbox) -> bool {
        self.keys.is_current(&raw.token)
            && raw
                .secret
                .as_deref()
                .is_none_or(|s| self.keys.is_current(s))
    }

    /// Rewrites every endpoint and inbox whose credentials are plaintext or sealed with an
    /// older key, so that after a start with a (new) key, the database holds no other kind.
    /// Returns how many endpoints and inboxes were rewritten.
    pub async fn seal_all(&self) -> Result<u64> {
        let mut rewritten = 0;
        let mut tenants = Page {
            limit: 500,
            after_id: None,
        };
        loop {
            let batch = self.inner.list_tenants(&tenants).await?;
            for tenant in &batch {
                let mut page = Page {
                    limit: 500,
                    after_id: None,
                };
                loop {
                    let endpoints = self.inner.list_endpoints(&tenant.id, &page).await?;
                    for raw in &endpoints {
                        if !self.is_current(raw) {
                            let plain = self.open(raw.clone())?;
                            if self.inner.update_endpoint(&self.seal(&plain)).await? {
                                rewritten += 1;
                            }
                        }
                    }
                    match endpoints.last() {
                        Some(last) if endpoints.len() == page.limit as usize => {
                            page.after_id = Some(last.id.clone());
                        }
                        _ => break,
                    }
                }
                let mut page = Page {
                    limit: 500,
                    after_id: None,
                };
                loop {
                    let inboxes = self.inner.list_inboxes(&tenant.id, &page).await?;
                    for raw in &inboxes {
                        if !self.inbox_is_current(raw) {
                            let plain = self.open_inbox(raw.clone())?;
                            if self
                                .set_inbox_credentials(
                                    &plain.id,
                                    &plain.token,
                                    plain.secret.as_deref(),
                                )
                                .await?
                            {
                                rewritten += 1;
                            }
                        }
                    }
                    match inboxes.last() {
                        Some(last) if inboxes.len() == page.limit as usize => {
                            page.after_id = Some(last.id.clone());
                        }
                        _ => break,
                    }
                }
            }
            match batch.last() {
                Some(last) if batch.len() == tenants.limit as usize => {
                    tenants.after_id = Some(last.id.clone());
                }
                _ => break,
            }
        }
        Ok(rewritten)
    }
}

#[async_trait]
impl Catalog for SealedStore {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
    async fn prune_attempts(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.inner.prune_attempts(older_than, limit).await
    }
    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        self.inner.create_tenant(tenant).await
    }
    async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>> {
        self.inner.list_tenants(page).await
    }
    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.inner.get_tenant(id).await
    }
    async fn delete_tenant(&self, id: &str) -> Result<bool> {
        self.inner.delete_tenant(id).await
    }
    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        self.inner.create_token(token).await
    }
    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.inner.find_token(hash).await
    }
    async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<TokenRecord>> {
        self.inner.list_tokens(tenant_id).await
    }
    async fn delete_token(&self, tenant_id: &str, id: &str) -> Result<bool> {
        self.inner.delete_token(tenant_id, id).await
    }
    async fn has_admin_token(&self) -> Result<bool> {
        self.inner.has_admin_token().await
    }
    async fn delete_admin_tokens(&self) -> Result<u64> {
        self.inner.delete_admin_tokens().await
    }
    async fn create_event_type(&self, event_type: &EventType) -> Result<()> {
        self.inner.create_event_type(event_type).await
    }
    async fn list_event_types(&self) -> Result<Vec<EventType>> {
        self.inner.list_event_types().await
    }
    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        self.inner.get_event_type(name).await
    }
    async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>> {
        self.inner
            .list_endpoints(tenant_id, page)
            .await?
            .into_iter()
            .map(|e| self.open(e))
            .collect()
    }
    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>> {
        self.inner
            .get_endpoint(tenant_id, id)
            .await?
            .map(|e| self.open(e))
            .transpose()
    }
    async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>> {
        self.inner.list_events(tenant_id, filter).await
    }
    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        self.inner.get_event(tenant_id, id).await
    }
    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        self.inner.list_deliveries(tenant_id, filter).await
    }
    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>> {
        self.inner.get_delivery(tenant_id, id).await
    }
    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>> {
        self.inner.list_attempts(delivery_id).await
    }
    async fn create_endpoint(&self, endpoint: &Endpoint, max_per_tenant: u32) -> Result<()> {
        self.inner
            .create_endpoint(&self.seal(endpoint), max_per_tenant)
            .await
    }
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<bool> {
        self.inner.update_endpoint(&self.seal(endpoint)).await
    }
    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<bool> {
        self.inner.delete_endpoint(tenant_id, id).await
    }
    async fn retry_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        now: DateTime<Utc>,
        extra_attempts: u32,
    ) -> Result<Option<Delivery>> {
        self.inner
            .retry_delivery(tenant_id, id, now, extra_attempts)
            .await
    }
    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: DateTime<Utc>,
        extra_attempts: u32,
        limit: u32,
    ) -> Result<u64> {
        self.inner
            .replay(tenant_id, filter, now, extra_attempts, limit)
            .await
    }
    async fn import(&self, event: &Event, deliveries: &[Delivery]) -> Result<u64> {
        self.inner.import(event, deliveries).await
    }
}

#[async_trait]
impl Store for SealedStore {
    async fn listen(&self, waker: crate::wake::Waker) -> Result<()> {
        self.inner.listen(waker).await
    }
    async fn set_default_max_attempts(&self, n: u32) -> Result<()> {
        self.inner.set_default_max_attempts(n).await
    }
    async fn ingest(
        &self,
        event: Event,
        default_max_attempts: u32,
        check: Arc<dyn DataCheck>,
    ) -> Result<Ingested> {
        self.inner.ingest(event, default_max_attempts, check).await
    }
    async fn claim(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        lease_id: &str,
        limit: u32,
        share: &TenantShare,
    ) -> Result<Vec<Claimed>> {
        let claimed = self
            .inner
            .claim(now, lease_until, lease_id, limit, share)
            .await?;
        let mut opened = Vec::with_capacity(claimed.len());
        for mut c in claimed {
            match self.open(c.endpoint.clone()) {
                Ok(ep) => {
                    c.endpoint = ep;
                    opened.push(c);
                }
                // An unreadable secret must not sign anything, nor stop other deliveries:
                // the lease runs out and the operator sees the error.
                Err(e) => {
                    tracing::error!(error = %e, delivery = %c.delivery.id, "cannot open secret")
                }
            }
        }
        Ok(opened)
    }
    async fn complete(&self, completions: &[Completion], policy: &BreakerPolicy) -> Result<()> {
        self.inner.complete(completions, policy).await
    }
    async fn reserve_sends(
        &self,
        endpoint_id: &str,
        rate: crate::domain::Rate,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<(u32, Vec<DateTime<Utc>>)> {
        self.inner.reserve_sends(endpoint_id, rate, want, now).await
    }
    async fn release(&self, items: &[(String, String, DateTime<Utc>)]) -> Result<()> {
        self.inner.release(items).await
    }
    async fn next_due(&self, horizon: DateTime<Utc>) -> Result<Option<DateTime<Utc>>> {
        self.inner.next_due(horizon).await
    }
}

#[async_trait]
impl OpsStore for SealedStore {
    async fn complete_with_stats(
        &self,
        completions: &[Completion],
        policy: &BreakerPolicy,
        dispatcher: &str,
        stats: &BatchStats,
    ) -> Result<()> {
        self.inner
            .complete_with_stats(completions, policy, dispatcher, stats)
            .await
    }
    async fn endpoint_stats_since(
        &self,
        endpoint_id: &str,
        since_minute: i64,
    ) -> Result<EndpointHistory> {
        self.inner
            .endpoint_stats_since(endpoint_id, since_minute)
            .await
    }
    async fn stats_since(&self, since_minute: i64) -> Result<Vec<MinuteStats>> {
        self.inner.stats_since(since_minute).await
    }
    async fn pending_summary(&self) -> Result<PendingSummary> {
        self.inner.pending_summary().await
    }
    async fn flagged_endpoints(&self, limit: u32) -> Result<Vec<FlaggedEndpoint>> {
        self.inner.flagged_endpoints(limit).await
    }
    async fn breaker_counts(&self) -> Result<crate::store::ops::BreakerCounts> {
        self.inner.breaker_counts().await
    }
    async fn heartbeat(&self, beat: &DispatcherBeat) -> Result<()> {
        self.inner.heartbeat(beat).await
    }
    async fn list_dispatchers(&self, since: DateTime<Utc>) -> Result<Vec<DispatcherBeat>> {
        self.inner.list_dispatchers(since).await
    }
    async fn insert_leased(
        &self,
        event: &Event,
        delivery: &Delivery,
        lease_id: &str,
    ) -> Result<()> {
        self.inner.insert_leased(event, delivery, lease_id).await
    }
    async fn list_alerts(&self) -> Result<Vec<AlertRecord>> {
        self.inner.list_alerts().await
    }
    async fn open_alert(&self, alert: &AlertRecord) -> Result<bool> {
        self.inner.open_alert(alert).await
    }
    async fn resolve_alert(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.inner.resolve_alert(rule, subject, episode, at).await
    }
    async fn alert_sent(
        &self,
        rule: &str,
        subject: &str,
        episode: &str,
        resolved: bool,
    ) -> Result<()> {
        self.inner
            .alert_sent(rule, subject, episode, resolved)
            .await
    }
    async fn create_inbox(&self, inbox: &Inbox) -> Result<()> {
        self.inner.create_inbox(&self.seal_inbox(inbox)).await
    }
    async fn list_inboxes(&self, tenant_id: &str, page: &Page) -> Result<Vec<Inbox>> {
        self.inner
            .list_inboxes(tenant_id, page)
            .await?
            .into_iter()
            .map(|i| self.open_inbox(i))
            .collect()
    }
    async fn get_inbox(&self, tenant_id: &str, id: &str) -> Result<Option<Inbox>> {
        self.inner
            .get_inbox(tenant_id, id)
            .await?
            .map(|i| self.open_inbox(i))
            .transpose()
    }
    async fn find_inbox(&self, token_hash: &str) -> Result<Option<Inbox>> {
        self.inner
            .find_inbox(token_hash)
            .await?
            .map(|i| self.open_inbox(i))
            .transpose()
    }
    async fn set_inbox_credentials(
        &self,
        id: &str,
        token: &str,
        secret: Option<&str>,
    ) -> Result<bool> {
        let token = self.keys.seal(&token_aad(id), token);
        let secret = secret.map(|s| self.keys.seal(id, s));
        self.inner
            .set_inbox_credentials(id, &token, secret.as_deref())
            .await
    }
    async fn delete_inbox(&self, tenant_id: &str, id: &str) -> Result<bool> {
        self.inner.delete_inbox(tenant_id, id).await
    }
    async fn add_inbox_message(&self, message: &InboxMessage, keep: u32) -> Result<()> {
        self.inner.add_inbox_message(message, keep).await
    }
    async fn list_inbox_messages(&self, inbox_id: &str, page: &Page) -> Result<Vec<InboxMessage>> {
        self.inner.list_inbox_messages(inbox_id, page).await
    }
    async fn create_source(&self, source: &Source) -> Result<()> {
        let mut sealed = source.clone();
        sealed.url = self.keys.seal_url(&url_aad(&source.id), &source.url);
        self.inner.create_source(&sealed).await
    }
    async fn list_sources(&self, tenant_id: Option<&str>, page: &Page) -> Result<Vec<Source>> {
        self.inner
            .list_sources(tenant_id, page)
            .await?
            .into_iter()
            .map(|s| self.open_source(s))
            .collect()
    }
    async fn get_source(&self, tenant_id: &str, id: &str) -> Result<Option<Source>> {
        self.inner
            .get_source(tenant_id, id)
            .await?
            .map(|s| self.open_source(s))
            .transpose()
    }
    async fn delete_source(&self, tenant_id: &str, id: &str) -> Result<bool> {
        self.inner.delete_source(tenant_id, id).await
    }
    async fn add_source_rejection(&self, rejection: &SourceRejection, keep: u32) -> Result<()> {
        self.inner.add_source_rejection(rejection, keep).await
    }
    async fn list_source_rejections(
        &self,
        source_id: &str,
        page: &Page,
    ) -> Result<Vec<SourceRejection>> {
        self.inner.list_source_rejections(source_id, page).await
    }
    async fn lease_source(
        &self,
        source_id: &str,
        holder: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        self.inner.lease_source(source_id, holder, until, now).await
    }
    async fn source_positions(&self, source_id: &str) -> Result<Vec<(i32, i64)>> {
        self.inner.source_positions(source_id).await
    }
    async fn set_source_position(&self, source_id: &str, partition: i32, next: i64) -> Result<()> {
        self.inner
            .set_source_position(source_id, partition, next)
            .await
    }
    async fn add_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.inner.add_audit(entry).await
    }
    async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>> {
        self.inner.list_audit(filter).await
    }
    async fn prune_events(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        self.inner.prune_events(older_than, limit).await
    }
    async fn prune_operations(
        &self,
        older_than: DateTime<Utc>,
        stats_before_minute: i64,
        dispatchers_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64> {
        self.inner
            .prune_operations(older_than, stats_before_minute, dispatchers_before, limit)
            .await
    }
}
