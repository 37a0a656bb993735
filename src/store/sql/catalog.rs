//! [`Catalog`] on both databases: tenants, tokens, event types and the reads of endpoints,
//! events, deliveries and attempts, written once (see [`super`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{query::Query, Database};

use std::sync::LazyLock;

use super::{
    db, fetch_owned, fetch_page, fetch_row, has_nul, on_db, page_key, write_error, Dialect,
    SqlStore, Window,
};
use crate::domain::{
    prefix, Attempt, Delivery, DeliveryStatus, Endpoint, Event, EventType, Tenant,
};
use crate::store::{
    endpoint_limit, routing_text,
    rows::{
        collect, ms, to_json, AttemptRow, DeliveryRow, EndpointRow, EventRow, EventTypeRow,
        TenantRow, TokenRow,
    },
    Catalog, DeliveryFilter, EventFilter, Page, ReplayFilter, Result, StoreError, TokenRecord,
};

/// The columns an [`EndpointRow`] reads.
pub(in crate::store) const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, \
     event_types::text AS event_types, secret, previous_secret, \
     MS(previous_secret_expires_at) AS previous_secret_expires_at, rate_limit, rate_period, \
     max_attempts, headers::text AS headers, enabled, disabled_reason, breaker_state, \
     consecutive_failures, MS(breaker_until) AS breaker_until, \
     MS(failing_since) AS failing_since, routing, format, oauth2, signature_headers, tls, proxy, \
     MS(created_at) AS created_at, MS(updated_at) AS updated_at";

/// The columns an [`EventRow`] reads.
pub(in crate::store) const EVENT_COLUMNS: &str = "id, tenant_id, type, data::text AS data, \
     actor, idempotency_key, traceparent, MS(created_at) AS created_at, \
     MS(deliver_at) AS deliver_at";

/// The columns a [`DeliveryRow`] reads. A delivery held by its endpoint's open breaker waits
/// unscheduled (`next_attempt_at` NULL, see the claims) and reads as due at the probe time.
pub(in crate::store) const DELIVERY_COLUMNS: &str = "id, tenant_id, event_id, endpoint_id, \
     status, attempts, max_attempts, MS(CASE WHEN next_attempt_at IS NULL AND status = 'pending' \
       THEN (SELECT h.breaker_until FROM endpoints h WHERE h.id = endpoint_id AND h.enabled \
        AND h.breaker_state <> 'closed') ELSE next_attempt_at END) AS next_attempt_at, \
     last_error, \
     ordering_key, ordering_blocks, MS(created_at) AS created_at, MS(updated_at) AS updated_at";

/// [`ENDPOINT_COLUMNS`], [`EVENT_COLUMNS`], [`DELIVERY_COLUMNS`] and
/// [`EVENT_TYPE_COLUMNS`] in one database's form, for the hot path written per database.
pub(in crate::store) struct Columns {
    pub endpoint: String,
    pub event: String,
    pub delivery: String,
    pub event_type: String,
}

/// The column lists in `dialect`'s form, made once.
pub(in crate::store) fn columns(dialect: Dialect) -> &'static Columns {
    fn make(d: Dialect) -> Columns {
        Columns {
            endpoint: d.sql(ENDPOINT_COLUMNS).into_owned(),
            event: d.sql(EVENT_COLUMNS).into_owned(),
            delivery: d.sql(DELIVERY_COLUMNS).into_owned(),
            event_type: d.sql(EVENT_TYPE_COLUMNS).into_owned(),
        }
    }
    static SQLITE: LazyLock<Columns> = LazyLock::new(|| make(Dialect::Sqlite));
    static POSTGRES: LazyLock<Columns> = LazyLock::new(|| make(Dialect::Postgres));
    match dialect {
        Dialect::Sqlite => &SQLITE,
        Dialect::Postgres => &POSTGRES,
    }
}

const TENANT_COLUMNS: &str = "id, name, MS(created_at) AS created_at";

const TOKEN_COLUMNS: &str = "id, tenant_id, hash, MS(created_at) AS created_at";

const EVENT_TYPE_COLUMNS: &str =
    "name, description, schema::text AS schema, MS(created_at) AS created_at";

const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempt_number, MS(started_at) AS started_at, \
     duration_ms, status_code, response, error, outcome, MS(next_attempt_at) AS next_attempt_at";

/// `INSERT INTO events` with every column, bound by [`bind_event`].
pub(super) const INSERT_EVENT: &str = "INSERT INTO events (id, tenant_id, type, data, actor, \
     idempotency_key, traceparent, created_at, deliver_at) \
     VALUES ($1, $2, $3, $4::json, $5, $6, $7, TS($8), TS($9))";

/// `INSERT INTO deliveries (…)` with every column, and the values bound by
/// [`bind_delivery`]: `$1`, …, `$12`.
pub(super) const INSERT_DELIVERY: (&str, &str) = (
    "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, \
     max_attempts, next_attempt_at, last_error, lease_id, created_at, updated_at)",
    "$1, $2, $3, $4, $5, $6, $7, TS($8), $9, $10, TS($11), TS($12)",
);

/// A statement's arguments on `DB`.
type Args<'q, DB> = <DB as Database>::Arguments<'q>;

/// Binds `e` to [`INSERT_EVENT`].
pub(super) fn bind_event<'q, DB: Database>(
    q: Query<'q, DB, Args<'q, DB>>,
    e: &Event,
) -> Query<'q, DB, Args<'q, DB>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(e.id.clone())
        .bind(e.tenant_id.clone())
        .bind(e.event_type.clone())
        .bind(e.data.to_string())
        .bind(e.actor.clone())
        .bind(e.idempotency_key.clone())
        .bind(e.traceparent.clone())
        .bind(ms(e.created_at))
        .bind(e.deliver_at.map(ms))
}

/// Binds `d`, leased to `lease_id` when given, to [`INSERT_DELIVERY`]'s values.
pub(super) fn bind_delivery<'q, DB: Database>(
    q: Query<'q, DB, Args<'q, DB>>,
    d: &Delivery,
    lease_id: Option<&str>,
) -> Query<'q, DB, Args<'q, DB>>
where
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    q.bind(d.id.clone())
        .bind(d.tenant_id.clone())
        .bind(d.event_id.clone())
        .bind(d.endpoint_id.clone())
        .bind(d.status.as_str().to_owned())
        .bind(i64::from(d.attempts))
        .bind(i64::from(d.max_attempts))
        .bind(d.next_attempt_at.map(ms))
        .bind(d.last_error.clone())
        .bind(lease_id.map(str::to_owned))
        .bind(ms(d.created_at))
        .bind(ms(d.updated_at))
}

super::tables! {
    TenantRow => "tenants", TENANT_COLUMNS;
    TokenRow => "tokens", TOKEN_COLUMNS;
    EventTypeRow => "event_types", EVENT_TYPE_COLUMNS;
    EndpointRow => "endpoints", ENDPOINT_COLUMNS;
    EventRow => "events", EVENT_COLUMNS;
    DeliveryRow => "deliveries", DELIVERY_COLUMNS;
}

/// An endpoint's OAuth2 credentials as stored: JSON, or NULL.
fn oauth2_text(ep: &Endpoint) -> Result<Option<String>> {
    ep.oauth2.as_ref().map(|o| to_json(o, "oauth2")).transpose()
}

/// An endpoint's signature header names as stored: JSON, or NULL for the standard ones.
fn signature_headers_text(ep: &Endpoint) -> Result<Option<String>> {
    (!ep.signature_headers.is_standard())
        .then(|| to_json(&ep.signature_headers, "signature_headers"))
        .transpose()
}

/// An endpoint's client certificate as stored: JSON (or NULL), and its expiry (Unix ms) for
/// the alert before it expires.
fn tls_columns(ep: &Endpoint) -> Result<(Option<String>, Option<i64>)> {
    let Some(tls) = &ep.tls else {
        return Ok((None, None));
    };
    let expires = tls
        .identity
        .as_ref()
        .and_then(|i| crate::domain::tls::describe(&i.certificate).ok())
        .map(|c| ms(c.expires_at));
    Ok((Some(to_json(tls, "tls")?), expires))
}

fn unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Maps a failed insert: a taken key is a [`StoreError::Conflict`] naming `what`.
fn insert_error(what: String) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| {
        if unique_violation(&e) {
            StoreError::Conflict(what)
        } else {
            write_error(e)
        }
    }
}

#[async_trait]
impl<S: SqlStore> Catalog for S {
    async fn ping(&self) -> Result<()> {
        on_db!(self, |p| {
            sqlx::query("SELECT 1")
                .execute(p.reader)
                .await
                .map_err(db)?;
        });
        Ok(())
    }

    async fn prune_attempts(&self, older_than: DateTime<Utc>, limit: u32) -> Result<u64> {
        let done = on_db!(self, |p| {
            let sql = format!(
                "DELETE FROM attempts WHERE id IN ( \
                   SELECT a.id FROM attempts a JOIN deliveries d ON d.id = a.delivery_id \
                   WHERE a.started_at < TS($1) AND d.status = 'delivered' \
                   ORDER BY a.started_at LIMIT $2{})",
                p.dialect.row_locks(" FOR UPDATE OF a SKIP LOCKED")
            );
            sqlx::query(&p.sql(&sql))
                .bind(ms(older_than))
                .bind(i64::from(limit))
                .execute(p.writer)
                .await
                .map_err(db)?
                .rows_affected()
        });
        Ok(done)
    }

    async fn create_tenant(&self, tenant: &Tenant) -> Result<()> {
        let sql = "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, TS($3))";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&tenant.id)
                .bind(&tenant.name)
                .bind(ms(tenant.created_at))
                .execute(p.writer)
                .await
                .map_err(insert_error(format!("tenant {}", tenant.id)))?;
        });
        Ok(())
    }

    async fn list_tenants(&self, page: &Page) -> Result<Vec<Tenant>> {
        let rows: Vec<TenantRow> = fetch_page(self, &[], None, page).await?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    async fn get_tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let row: Option<TenantRow> = fetch_row(self, &[("id", id)]).await?;
        Ok(row.map(Tenant::from))
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool> {
        if has_nul(&[id]) {
            return Ok(false);
        }
        // Endpoint ids are not foreign keys of deliveries (history outlives endpoints), so
        // deliveries go with their events through the cascade.
        let done = on_db!(self, |p| sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(p.writer)
            .await
            .map_err(db)?
            .rows_affected());
        Ok(done > 0)
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        let sql =
            "INSERT INTO tokens (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, TS($4))";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&token.id)
                .bind(&token.tenant_id)
                .bind(&token.hash)
                .bind(ms(token.created_at))
                .execute(p.writer)
                .await
                .map_err(write_error)?;
        });
        Ok(())
    }

    async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let row: Option<TokenRow> = fetch_row(self, &[("hash", hash)]).await?;
        Ok(row.map(TokenRecord::from))
    }

    async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<TokenRecord>> {
        if has_nul(&[tenant_id]) {
            return Ok(Vec::new());
        }
        let sql =
            format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant_id = $1 ORDER BY id DESC");
        let rows: Vec<TokenRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
            .bind(tenant_id)
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    async fn delete_token(&self, tenant_id: &str, id: &str) -> Result<bool> {
        super::delete_owned(self, "tokens", tenant_id, id).await
    }

    async fn has_admin_token(&self) -> Result<bool> {
        let sql = "SELECT 1 FROM tokens WHERE tenant_id IS NULL LIMIT 1";
        let found: Option<(i32,)> = on_db!(self, |p| sqlx::query_as(sql)
            .fetch_optional(p.reader)
            .await
            .map_err(db)?);
        Ok(found.is_some())
    }

    async fn delete_admin_tokens(&self) -> Result<u64> {
        let sql = "DELETE FROM tokens WHERE tenant_id IS NULL";
        Ok(on_db!(self, |p| sqlx::query(sql)
            .execute(p.writer)
            .await
            .map_err(db)?
            .rows_affected()))
    }

    async fn create_event_type(&self, et: &EventType) -> Result<()> {
        let schema = et.schema.as_ref().map(|s| s.to_string());
        let sql = "INSERT INTO event_types (name, description, schema, created_at) \
                   VALUES ($1, $2, $3::jsonb, TS($4))";
        on_db!(self, |p| {
            sqlx::query(&p.sql(sql))
                .bind(&et.name)
                .bind(&et.description)
                .bind(&schema)
                .bind(ms(et.created_at))
                .execute(p.writer)
                .await
                .map_err(insert_error(format!("event type {}", et.name)))?;
        });
        Ok(())
    }

    async fn list_event_types(&self) -> Result<Vec<EventType>> {
        let sql = format!("SELECT {EVENT_TYPE_COLUMNS} FROM event_types ORDER BY name");
        let rows: Vec<EventTypeRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        collect(rows)
    }

    async fn get_event_type(&self, name: &str) -> Result<Option<EventType>> {
        let row: Option<EventTypeRow> = fetch_row(self, &[("name", name)]).await?;
        row.map(EventType::try_from).transpose()
    }

    async fn list_endpoints(&self, tenant_id: &str, page: &Page) -> Result<Vec<Endpoint>> {
        let rows: Vec<EndpointRow> =
            fetch_page(self, &[("tenant_id", tenant_id)], None, page).await?;
        collect(rows)?
            .into_iter()
            .map(|e| self.sealer().open_endpoint(e))
            .collect()
    }

    async fn get_endpoint(&self, tenant_id: &str, id: &str) -> Result<Option<Endpoint>> {
        let row: Option<EndpointRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(|r| self.sealer().open_endpoint(Endpoint::try_from(r)?))
            .transpose()
    }

    async fn list_events(&self, tenant_id: &str, filter: &EventFilter) -> Result<Vec<Event>> {
        self.settle().await?;
        if has_nul(&[
            tenant_id,
            filter.event_type.as_deref().unwrap_or_default(),
            page_key(&filter.page),
        ]) {
            return Ok(Vec::new());
        }
        let mut keys = vec![("tenant_id", tenant_id)];
        keys.extend(filter.event_type.as_deref().map(|t| ("type", t)));
        let window = Window {
            prefix: prefix::EVENT,
            since: filter.since,
            until: filter.until,
        };
        let rows: Vec<EventRow> = fetch_page(self, &keys, Some(window), &filter.page).await?;
        collect(rows)
    }

    async fn get_event(&self, tenant_id: &str, id: &str) -> Result<Option<Event>> {
        self.settle().await?;
        let row: Option<EventRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(Event::try_from).transpose()
    }

    async fn list_deliveries(
        &self,
        tenant_id: &str,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>> {
        self.settle().await?;
        let mut keys = vec![("tenant_id", tenant_id)];
        keys.extend(filter.status.map(|s| ("status", s.as_str())));
        keys.extend(filter.endpoint_id.as_deref().map(|e| ("endpoint_id", e)));
        keys.extend(filter.event_id.as_deref().map(|e| ("event_id", e)));
        let window = Window {
            prefix: prefix::DELIVERY,
            since: filter.since,
            until: filter.until,
        };
        let rows: Vec<DeliveryRow> = fetch_page(self, &keys, Some(window), &filter.page).await?;
        collect(rows)
    }

    async fn get_delivery(&self, tenant_id: &str, id: &str) -> Result<Option<Delivery>> {
        self.settle().await?;
        let row: Option<DeliveryRow> = fetch_owned(self, tenant_id, id).await?;
        row.map(Delivery::try_from).transpose()
    }

    async fn list_attempts(&self, delivery_id: &str) -> Result<Vec<Attempt>> {
        if has_nul(&[delivery_id]) {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 \
             ORDER BY attempt_number, started_at"
        );
        let rows: Vec<AttemptRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
            .bind(delivery_id)
            .fetch_all(p.reader)
            .await
            .map_err(db)?);
        collect(rows)
    }

    async fn create_endpoint(&self, ep: &Endpoint, max_per_tenant: u32) -> Result<()> {
        let ep = &*self.sealer().seal_endpoint(ep);
        let insert = "INSERT INTO endpoints (id, tenant_id, url, description, event_types, \
             secret, previous_secret, previous_secret_expires_at, rate_limit, max_attempts, \
             headers, enabled, disabled_reason, created_at, updated_at, routing, format, \
             rate_period, oauth2, signature_headers, tls, tls_expires_at, proxy) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, TS($8), $9, $10, $11::jsonb, $12, $13, \
             TS($14), TS($15), $16, $17, $18, $19, $20, $21, TS($22), $23)";
        let event_types = to_json(&ep.event_types, "event_types")?;
        let headers = to_json(&ep.headers, "headers")?;
        let (oauth2, signature_headers) = (oauth2_text(ep)?, signature_headers_text(ep)?);
        let (tls, tls_expires_at) = tls_columns(ep)?;
        let count = on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            // Locking the tenant row serializes the creates of one tenant on PostgreSQL (on
            // SQLite the one writer does). The count is a statement of its own, after the
            // lock, so its snapshot includes the creates it waited for.
            let lock = format!(
                "SELECT 1 FROM tenants WHERE id = $1{}",
                p.dialect.row_locks(" FOR UPDATE")
            );
            sqlx::query(&lock)
                .bind(&ep.tenant_id)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            let (count,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM endpoints WHERE tenant_id = $1")
                    .bind(&ep.tenant_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
            if count < i64::from(max_per_tenant) {
                sqlx::query(&p.sql(insert))
                    .bind(&ep.id)
                    .bind(&ep.tenant_id)
                    .bind(&ep.url)
                    .bind(&ep.description)
                    .bind(&event_types)
                    .bind(&ep.secret)
                    .bind(&ep.previous_secret)
                    .bind(ep.previous_secret_expires_at.map(ms))
                    .bind(ep.rate_limit.map(i64::from))
                    .bind(ep.max_attempts.map(i64::from))
                    .bind(&headers)
                    .bind(ep.enabled)
                    .bind(&ep.disabled_reason)
                    .bind(ms(ep.created_at))
                    .bind(ms(ep.updated_at))
                    .bind(routing_text(ep))
                    .bind(ep.format.as_str())
                    .bind(ep.rate_period.as_str())
                    .bind(&oauth2)
                    .bind(&signature_headers)
                    .bind(&tls)
                    .bind(tls_expires_at)
                    .bind(&ep.proxy)
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?;
                tx.commit().await.map_err(write_error)?;
            }
            count
        });
        if count >= i64::from(max_per_tenant) {
            return Err(endpoint_limit(&ep.tenant_id, max_per_tenant));
        }
        Ok(())
    }

    async fn update_endpoint(&self, ep: &Endpoint) -> Result<bool> {
        if has_nul(&[&ep.tenant_id, &ep.id]) {
            return Ok(false);
        }
        let ep = &*self.sealer().seal_endpoint(ep);
        // Re-enabling starts the endpoint afresh: breaker closed, failure window reset.
        let update = "UPDATE endpoints SET url = $1, description = $2, \
             event_types = $3::jsonb, secret = $4, previous_secret = $5, \
             previous_secret_expires_at = TS($6), rate_limit = $7, max_attempts = $8, \
             headers = $9::jsonb, enabled = $10, disabled_reason = $11, updated_at = TS($12), \
             breaker_state = CASE WHEN NOT enabled AND $10 THEN 'closed' ELSE breaker_state END, \
             consecutive_failures = CASE WHEN NOT enabled AND $10 THEN 0 \
                                    ELSE consecutive_failures END, \
             breaker_until = CASE WHEN NOT enabled AND $10 THEN NULL ELSE breaker_until END, \
             failing_since = CASE WHEN NOT enabled AND $10 THEN NULL ELSE failing_since END, \
             routing = $15, format = $16, rate_period = $17, oauth2 = $18, \
             signature_headers = $19, tls = $20, tls_expires_at = TS($21), proxy = $22 \
             WHERE tenant_id = $13 AND id = $14";
        // An endpoint enabled again: the deliveries a claim parked while it was disabled
        // (`next_attempt_at` NULL) are due now. (Any other update leaves parked ones as they
        // are.) (Ordered ones that must
        // still wait are parked again by the next claim, which checks their order anyway.)
        // Those its open breaker holds wait for the probe.
        let unpark = "UPDATE deliveries SET next_attempt_at = TS($1) \
             WHERE endpoint_id = $2 AND status = 'pending' AND next_attempt_at IS NULL \
             AND (SELECT e.breaker_state FROM endpoints e WHERE e.id = $2) = 'closed'";
        let event_types = to_json(&ep.event_types, "event_types")?;
        let headers = to_json(&ep.headers, "headers")?;
        let (oauth2, signature_headers) = (oauth2_text(ep)?, signature_headers_text(ep)?);
        let (tls, tls_expires_at) = tls_columns(ep)?;
        let (updated, enabled_now) = on_db!(self, |p| {
            let was_enabled = format!(
                "SELECT enabled FROM endpoints WHERE tenant_id = $1 AND id = $2{lock}",
                lock = p.dialect.row_locks(" FOR UPDATE")
            );
            let mut tx = p.writer.begin().await.map_err(db)?;
            let was: Option<(bool,)> = sqlx::query_as(&was_enabled)
                .bind(&ep.tenant_id)
                .bind(&ep.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            let updated = sqlx::query(&p.sql(update))
                .bind(&ep.url)
                .bind(&ep.description)
                .bind(&event_types)
                .bind(&ep.secret)
                .bind(&ep.previous_secret)
                .bind(ep.previous_secret_expires_at.map(ms))
                .bind(ep.rate_limit.map(i64::from))
                .bind(ep.max_attempts.map(i64::from))
                .bind(&headers)
                .bind(ep.enabled)
                .bind(&ep.disabled_reason)
                .bind(ms(ep.updated_at))
                .bind(&ep.tenant_id)
                .bind(&ep.id)
                .bind(routing_text(ep))
                .bind(ep.format.as_str())
                .bind(ep.rate_period.as_str())
                .bind(&oauth2)
                .bind(&signature_headers)
                .bind(&tls)
                .bind(tls_expires_at)
                .bind(&ep.proxy)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?
                .rows_affected()
                > 0;
            let enabled_now = updated && ep.enabled && was.is_some_and(|(e,)| !e);
            if enabled_now {
                sqlx::query(&p.sql(unpark))
                    .bind(ms(ep.updated_at))
                    .bind(&ep.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            (updated, enabled_now)
        });
        if enabled_now {
            self.wake_others().await?;
        }
        Ok(updated)
    }

    async fn delete_endpoint(&self, tenant_id: &str, id: &str) -> Result<bool> {
        if has_nul(&[tenant_id, id]) {
            return Ok(false);
        }
        let cancel = "UPDATE deliveries SET status = 'cancelled', lease_id = NULL, \
             last_error = 'endpoint deleted', updated_at = TS($1) \
             WHERE endpoint_id = $2 AND status = 'pending'";
        let deleted = on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            // On PostgreSQL the delete waits for ingests in flight that hold the endpoint
            // (they take it in KEY SHARE mode while inserting its deliveries); the
            // cancellation, a later statement, then sees their deliveries. Later ingests no
            // longer see the endpoint.
            let deleted = sqlx::query("DELETE FROM endpoints WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected()
                > 0;
            if deleted {
                sqlx::query(&p.sql(cancel))
                    .bind(ms(crate::domain::now()))
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            deleted
        });
        Ok(deleted)
    }

    async fn retry_delivery(
        &self,
        tenant_id: &str,
        id: &str,
        now: DateTime<Utc>,
        extra_attempts: u32,
    ) -> Result<Option<Delivery>> {
        self.settle().await?;
        if has_nul(&[tenant_id, id]) {
            return Ok(None);
        }
        let retry = "UPDATE deliveries SET status = 'pending', next_attempt_at = TS($1), \
             lease_id = NULL, max_attempts = attempts + $2, updated_at = TS($1) \
             WHERE tenant_id = $3 AND id = $4 AND status <> 'pending'";
        let read =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2");
        let (moved, row): (bool, Option<DeliveryRow>) = on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            let moved = sqlx::query(&p.sql(retry))
                .bind(ms(now))
                .bind(i64::from(extra_attempts))
                .bind(tenant_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?
                .rows_affected()
                > 0;
            let row = sqlx::query_as(&p.sql(&read))
                .bind(tenant_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            (moved, row)
        });
        if moved {
            self.wake_others().await?;
        }
        row.map(Delivery::try_from).transpose()
    }

    async fn replay(
        &self,
        tenant_id: &str,
        filter: &ReplayFilter,
        now: DateTime<Utc>,
        extra_attempts: u32,
        limit: u32,
    ) -> Result<u64> {
        self.settle().await?;
        let keys = [
            tenant_id,
            filter.endpoint_id.as_deref().unwrap_or_default(),
            filter.event_id.as_deref().unwrap_or_default(),
        ];
        // The statuses are the enum's own names, never client text: they can stand in the
        // SQL as literals.
        let statuses: Vec<String> = filter
            .statuses
            .iter()
            .filter(|s| **s != DeliveryStatus::Pending)
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        if has_nul(&keys) || statuses.is_empty() {
            return Ok(0);
        }
        let moved = on_db!(self, |p| {
            let sql = format!(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = TS($1), \
                        lease_id = NULL, max_attempts = attempts + $2, updated_at = TS($1) \
                 WHERE id IN ( \
                   SELECT id FROM deliveries WHERE tenant_id = $3 AND status IN ({}) \
                   AND ($4::text IS NULL OR endpoint_id = $4) \
                   AND ($5::text IS NULL OR event_id = $5) \
                   AND ($6::int8 IS NULL OR created_at >= TS($6)) \
                   AND ($7::int8 IS NULL OR created_at < TS($7)) \
                   AND updated_at < TS($1) AND endpoint_id IN (SELECT id FROM endpoints) \
                   LIMIT $8{})",
                statuses.join(", "),
                p.dialect.row_locks(" FOR UPDATE SKIP LOCKED")
            );
            sqlx::query(&p.sql(&sql))
                .bind(ms(now))
                .bind(i64::from(extra_attempts))
                .bind(tenant_id)
                .bind(&filter.endpoint_id)
                .bind(&filter.event_id)
                .bind(filter.since.map(ms))
                .bind(filter.until.map(ms))
                .bind(i64::from(limit))
                .execute(p.writer)
                .await
                .map_err(db)?
                .rows_affected()
        });
        if moved > 0 {
            self.wake_others().await?;
        }
        Ok(moved)
    }

    async fn import(&self, e: &Event, deliveries: &[Delivery]) -> Result<u64> {
        // An event or delivery already there (an import run again) is left as it is.
        let event = format!("{INSERT_EVENT} ON CONFLICT DO NOTHING");
        let (insert, values) = INSERT_DELIVERY;
        let delivery = format!(
            "{insert} SELECT {values} \
             WHERE EXISTS (SELECT 1 FROM events WHERE id = $3 AND tenant_id = $2) \
             ON CONFLICT DO NOTHING"
        );
        let written = on_db!(self, |p| {
            let mut tx = p.writer.begin().await.map_err(db)?;
            bind_event(sqlx::query(&p.sql(&event)), e)
                .execute(&mut *tx)
                .await
                .map_err(write_error)?;
            let mut written = 0;
            for d in deliveries {
                written += bind_delivery(sqlx::query(&p.sql(&delivery)), d, None)
                    .execute(&mut *tx)
                    .await
                    .map_err(write_error)?
                    .rows_affected();
            }
            tx.commit().await.map_err(db)?;
            written
        });
        if written > 0 {
            self.wake_others().await?;
        }
        Ok(written)
    }

    async fn reseal(&self) -> Result<u64> {
        if !self.sealer().seals() {
            return Ok(0);
        }
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE id > $1 ORDER BY id LIMIT 500");
        let mut rewritten = 0;
        let mut after = String::new();
        loop {
            let rows: Vec<EndpointRow> = on_db!(self, |p| sqlx::query_as(&p.sql(&sql))
                .bind(&after)
                .fetch_all(p.reader)
                .await
                .map_err(db)?);
            let Some(last) = rows.last() else { break };
            after = last.id.clone();
            for raw in collect::<_, Endpoint>(rows)? {
                if !self.sealer().endpoint_is_current(&raw) {
                    let plain = self.sealer().open_endpoint(raw)?;
                    rewritten += u64::from(self.update_endpoint(&plain).await?);
                }
            }
        }
        Ok(rewritten + super::ops::reseal_inboxes_and_sources(self).await?)
    }
}
