//! `hookrelay import`: brings the community platform's webhook system over to hookrelay.
//!
//! It reads that system's `webhook_configurations` (one endpoint each, in the `community`
//! delivery format so its receivers keep working) and the `webhook_deliveries` still
//! `pending` (one delivery each, with its payload and attempt count), inside one read-only
//! snapshot of the source, and writes them through the store. Every id hookrelay gives is
//! derived from the source row's id and time, so a second run finds everything in place and
//! writes nothing. Rows that cannot be mapped are reported, one line each, and skipped.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{postgres::PgConnectOptions, Connection, PgConnection, Row};

use crate::{
    destinations::{is_uuid, net::NetworkPolicy, validate_url},
    domain::{self, prefix, Delivery, DeliveryFormat, DeliveryStatus, Endpoint, Event},
    ingest::validate_type_name,
    signing,
    store::{Store, StoreError},
};

/// The User-Agent that system's dispatcher sent; imported endpoints send it too.
pub const DEFAULT_USER_AGENT: &str = "My Third Place Webhook/1.0";

/// The source's tables and columns (names as that installation has them).
#[derive(Debug, Clone)]
pub struct SourceNames {
    pub configurations: String,
    pub deliveries: String,
    /// Logical column (`configurations.secret`, `deliveries.payload`, …) to the source's
    /// column name.
    pub columns: HashMap<&'static str, String>,
}

/// The columns [`SourceNames::columns`] maps, with their default names.
pub const COLUMNS: &[&str] = &[
    "configurations.id",
    "configurations.name",
    "configurations.url",
    "configurations.secret",
    "configurations.events",
    "configurations.is_active",
    "configurations.created_at",
    "deliveries.id",
    "deliveries.webhook_config_id",
    "deliveries.event_type",
    "deliveries.payload",
    "deliveries.status",
    "deliveries.attempts",
    "deliveries.error_message",
    "deliveries.created_at",
];

impl Default for SourceNames {
    fn default() -> Self {
        Self {
            configurations: "webhook_configurations".into(),
            deliveries: "webhook_deliveries".into(),
            columns: COLUMNS
                .iter()
                .map(|c| (*c, c.split_once('.').map_or(*c, |(_, n)| n).to_owned()))
                .collect(),
        }
    }
}

impl SourceNames {
    /// Renames a column: `spec` is `table.column=name`, e.g. `configurations.secret=key`.
    pub fn rename(&mut self, spec: &str) -> Result<(), String> {
        let (logical, name) = spec
            .split_once('=')
            .ok_or_else(|| format!("--column {spec:?}: write it as table.column=name"))?;
        let logical = COLUMNS
            .iter()
            .find(|c| **c == logical.trim())
            .ok_or_else(|| {
                format!(
                    "--column {spec:?}: unknown column; known: {}",
                    COLUMNS.join(", ")
                )
            })?;
        self.columns.insert(logical, name.trim().to_owned());
        Ok(())
    }

    /// The quoted column name of `logical`.
    fn col(&self, logical: &str) -> Result<String, ImportError> {
        let name = self.columns.get(logical).map_or(logical, String::as_str);
        quote_ident(name)
    }
}

/// What to import, and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The source database, `postgres://…`.
    pub from: String,
    pub names: SourceNames,
    /// The tenant that receives the endpoints and deliveries.
    pub tenant: String,
    /// Sent as `User-Agent` by imported endpoints; `None` keeps hookrelay's own.
    pub user_agent: Option<String>,
    /// Attempts an imported delivery may make in all (at least one more than it made).
    pub max_attempts: u32,
    /// Most endpoints the tenant may have (the server's limit).
    pub max_endpoints: u32,
    /// Only report what would be done.
    pub dry_run: bool,
}

/// Why an import could not run at all (single rows that cannot be mapped are reported,
/// not errors).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot read the source database: {0}")]
    Source(#[source] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts of one kind of row.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub existing: u64,
    pub refused: u64,
}

/// What an import did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub endpoints: Counts,
    pub deliveries: Counts,
    /// Source deliveries not pending (delivered or failed there): left behind.
    pub not_pending: u64,
}

/// `"name"`, or `"schema"."name"`, for a plain identifier; anything else is refused.
fn quote_ident(name: &str) -> Result<String, ImportError> {
    let part_ok = |p: &str| {
        let mut c = p.chars();
        matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
            && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && p.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) {
        return Err(ImportError::Usage(format!(
            "{name:?} is not a plain table or column name (letters, digits, '_', optionally schema.name)"
        )));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// An id of hookrelay's made from a source row: the time part is `at` (so time filters and
/// ordering work as for ids made here), the random part comes from the source id, so every
/// run makes the same id.
fn derived_id(prefix: &str, at: DateTime<Utc>, source_id: &str) -> String {
    let digest = Sha256::digest(source_id.as_bytes());
    let mut low = [0u8; 16];
    low.copy_from_slice(&digest[..16]);
    let random = u128::from_be_bytes(low) & ((1u128 << 80) - 1);
    let ms = u64::try_from(at.timestamp_millis())
        .unwrap_or(0)
        .min((1 << 48) - 1);
    format!("{prefix}_{}", ulid::Ulid::from_parts(ms, random))
}

/// One source configuration.
struct Configuration {
    id: String,
    name: Option<String>,
    url: Option<String>,
    secret: Option<String>,
    events: Option<Value>,
    is_active: Option<bool>,
    created_at: Option<DateTime<Utc>>,
}

/// One pending source delivery.
struct SourceDelivery {
    id: String,
    config_id: Option<String>,
    event_type: Option<String>,
    payload: Option<Value>,
    attempts: Option<i64>,
    error_message: Option<String>,
    created_at: Option<DateTime<Utc>>,
}

/// Runs the import, printing one line per row through `say`.
pub async fn run(
    store: &dyn Store,
    policy: &NetworkPolicy,
    opts: &ImportOptions,
    say: &mut (dyn FnMut(String) + Send),
) -> Result<Summary, ImportError> {
    let verb = if opts.dry_run {
        "would create"
    } else {
        "created"
    };
    if store.get_tenant(&opts.tenant).await?.is_none() {
        return Err(ImportError::Usage(format!(
            "tenant {:?} does not exist in hookrelay",
            opts.tenant
        )));
    }
    if let Some(ua) = &opts.user_agent {
        if axum::http::HeaderValue::from_str(ua).is_err() || ua.len() > 4096 {
            return Err(ImportError::Usage(format!(
                "--user-agent {ua:?} is not a valid header value"
            )));
        }
    }
    let (configurations, deliveries, not_pending) = read_source(opts).await?;
    let mut summary = Summary {
        not_pending,
        ..Default::default()
    };

    // Endpoints, by source configuration id.
    let mut endpoints: HashMap<String, Endpoint> = HashMap::new();
    for c in configurations {
        let source = format!("{} {}", opts.names.configurations, c.id);
        let endpoint = match map_configuration(&c, opts, policy).await {
            Ok(e) => e,
            Err(why) => {
                summary.endpoints.refused += 1;
                say(format!("refused {source}: {why}"));
                continue;
            }
        };
        let line = format!(
            "endpoint {} <- {source} ({}, {} event types, {})",
            endpoint.id,
            crate::secrets::redact_url(&endpoint.url),
            endpoint.event_types.len(),
            if endpoint.enabled {
                "active"
            } else {
                "inactive"
            }
        );
        if store
            .get_endpoint(&opts.tenant, &endpoint.id)
            .await?
            .is_some()
        {
            summary.endpoints.existing += 1;
            say(format!("{line}: exists"));
        } else {
            if !opts.dry_run {
                match store.create_endpoint(&endpoint, opts.max_endpoints).await {
                    Ok(()) => {}
                    Err(StoreError::LimitReached(m)) => {
                        summary.endpoints.refused += 1;
                        say(format!("refused {source}: {m}"));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            summary.endpoints.created += 1;
            say(format!("{line}: {verb}"));
        }
        endpoints.insert(c.id, endpoint);
    }

    // Deliveries, grouped into events by the payload's request_id.
    let now = domain::now();
    for d in deliveries {
        let source = format!("{} {}", opts.names.deliveries, d.id);
        let Some(endpoint) = d.config_id.as_ref().and_then(|id| endpoints.get(id)) else {
            summary.deliveries.refused += 1;
            say(format!(
                "refused {source}: its configuration {} was not imported",
                d.config_id.as_deref().unwrap_or("(none)")
            ));
            continue;
        };
        let (event, delivery) = match map_delivery(&d, endpoint, opts, now) {
            Ok(pair) => pair,
            Err(why) => {
                summary.deliveries.refused += 1;
                say(format!("refused {source}: {why}"));
                continue;
            }
        };
        let line = format!(
            "delivery {} <- {source} ({} to {}, {} attempts made)",
            delivery.id, event.event_type, endpoint.id, delivery.attempts
        );
        let exists = store
            .get_delivery(&opts.tenant, &delivery.id)
            .await?
            .is_some();
        if exists {
            summary.deliveries.existing += 1;
            say(format!("{line}: exists"));
            continue;
        }
        if !opts.dry_run
            && store
                .import(&event, std::slice::from_ref(&delivery))
                .await?
                == 0
        {
            summary.deliveries.refused += 1;
            say(format!(
                "refused {source}: its event {} could not be written (its request_id is taken by another event)",
                event.id
            ));
            continue;
        }
        summary.deliveries.created += 1;
        say(format!("{line}: {verb}"));
    }
    say(format!(
        "{}endpoints: {} created, {} existing, {} refused; deliveries: {} created, {} existing, {} refused; {} not pending left behind",
        if opts.dry_run { "dry run, nothing written. " } else { "" },
        summary.endpoints.created,
        summary.endpoints.existing,
        summary.endpoints.refused,
        summary.deliveries.created,
        summary.deliveries.existing,
        summary.deliveries.refused,
        summary.not_pending,
    ));
    Ok(summary)
}

/// Reads both tables in one read-only snapshot.
async fn read_source(
    opts: &ImportOptions,
) -> Result<(Vec<Configuration>, Vec<SourceDelivery>, u64), ImportError> {
    if !(opts.from.starts_with("postgres://") || opts.from.starts_with("postgresql://")) {
        return Err(ImportError::Usage(
            "--from must be a postgres:// URL".into(),
        ));
    }
    let n = &opts.names;
    let options: PgConnectOptions = opts
        .from
        .parse()
        .map_err(|_| ImportError::Usage("--from is not a valid postgres:// URL".into()))?;
    // Nothing in the source can change: every transaction of this session is read-only.
    let options = options
        .application_name("hookrelay-import")
        .options([("default_transaction_read_only", "on")]);
    let mut conn = PgConnection::connect_with(&options)
        .await
        .map_err(ImportError::Source)?;
    let mut tx = conn.begin().await.map_err(ImportError::Source)?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(ImportError::Source)?;
    let c = |l: &str| n.col(&format!("configurations.{l}"));
    let config_sql = format!(
        "SELECT {id}::text AS id, {name}::text AS name, {url}::text AS url, \
         {secret}::text AS secret, to_jsonb({events})::text AS events, \
         {active}::boolean AS is_active, (extract(epoch FROM {created}::timestamptz) * 1000)::int8 AS created_at \
         FROM {table} ORDER BY {created}, {id}",
        id = c("id")?,
        name = c("name")?,
        url = c("url")?,
        secret = c("secret")?,
        events = c("events")?,
        active = c("is_active")?,
        created = c("created_at")?,
        table = quote_ident(&n.configurations)?,
    );
    let configurations = sqlx::query(&config_sql)
        .fetch_all(&mut *tx)
        .await
        .map_err(ImportError::Source)?
        .into_iter()
        .map(|r| Configuration {
            id: r.get("id"),
            name: r.get("name"),
            url: r.get("url"),
            secret: r.get("secret"),
            events: json_column(r.get("events")),
            is_active: r.get("is_active"),
            created_at: r
                .get::<Option<i64>, _>("created_at")
                .map(domain::from_millis),
        })
        .collect();
    let d = |l: &str| n.col(&format!("deliveries.{l}"));
    let table = quote_ident(&n.deliveries)?;
    let status = d("status")?;
    let delivery_sql = format!(
        "SELECT {id}::text AS id, {config}::text AS config_id, {etype}::text AS event_type, \
         {payload}::jsonb::text AS payload, {attempts}::int8 AS attempts, \
         {error}::text AS error_message, \
         (extract(epoch FROM {created}::timestamptz) * 1000)::int8 AS created_at \
         FROM {table} WHERE {status} = 'pending' ORDER BY {created}, {id}",
        id = d("id")?,
        config = d("webhook_config_id")?,
        etype = d("event_type")?,
        payload = d("payload")?,
        attempts = d("attempts")?,
        error = d("error_message")?,
        created = d("created_at")?,
    );
    let deliveries = sqlx::query(&delivery_sql)
        .fetch_all(&mut *tx)
        .await
        .map_err(ImportError::Source)?
        .into_iter()
        .map(|r| SourceDelivery {
            id: r.get("id"),
            config_id: r.get("config_id"),
            event_type: r.get("event_type"),
            payload: json_column(r.get("payload")),
            attempts: r.get("attempts"),
            error_message: r.get("error_message"),
            created_at: r
                .get::<Option<i64>, _>("created_at")
                .map(domain::from_millis),
        })
        .collect();
    let not_pending: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE {status} IS DISTINCT FROM 'pending'"
    ))
    .fetch_one(&mut *tx)
    .await
    .map_err(ImportError::Source)?;
    tx.rollback().await.map_err(ImportError::Source)?;
    let _ = conn.close().await;
    Ok((
        configurations,
        deliveries,
        u64::try_from(not_pending).unwrap_or(0),
    ))
}

/// A JSON column read as text (PostgreSQL wrote it, so it parses).
fn json_column(text: Option<String>) -> Option<Value> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// The endpoint for a configuration, or why there is none.
async fn map_configuration(
    c: &Configuration,
    opts: &ImportOptions,
    policy: &NetworkPolicy,
) -> Result<Endpoint, String> {
    let url = c.url.as_deref().filter(|u| !u.is_empty()).ok_or("no url")?;
    validate_url(url, policy)
        .await
        .map_err(|e| format!("unusable url: {e}"))?;
    let secret = c.secret.as_deref().ok_or("no secret")?;
    signing::validate_community_secret(secret).map_err(|e| format!("unusable secret: {e}"))?;
    let event_types: Vec<String> = match &c.events {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(t)
                    if t == "*"
                        || validate_type_name(t.strip_suffix(".*").unwrap_or(t)).is_ok() =>
                {
                    Ok(t.to_owned())
                }
                _ => Err(format!("invalid event type {v}")),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("events is not a list: {other}")),
    };
    if event_types.len() > 100 {
        return Err("more than 100 event types".into());
    }
    let created_at = c.created_at.unwrap_or_else(domain::now);
    let name = c.name.clone().filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.len() > 1024) {
        return Err("name is longer than 1024 characters".into());
    }
    Ok(Endpoint {
        id: derived_id(prefix::ENDPOINT, created_at, &c.id),
        description: name,
        event_types,
        enabled: c.is_active.unwrap_or(true),
        format: DeliveryFormat::Community,
        headers: opts
            .user_agent
            .iter()
            .map(|ua| ("User-Agent".to_owned(), ua.clone()))
            .collect(),
        created_at,
        updated_at: created_at,
        ..Endpoint::new(opts.tenant.clone(), url, secret.to_owned())
    })
}

/// The event and delivery for a pending source delivery, or why there are none.
///
/// The payload is what that system built: `{"event", "timestamp", "actor_user_id",
/// "data", "request_id"}`. The event keeps each part (its idempotency key is the
/// `request_id`, which the community format sends back), so the body delivered carries
/// the same fields and values.
fn map_delivery(
    d: &SourceDelivery,
    endpoint: &Endpoint,
    opts: &ImportOptions,
    now: DateTime<Utc>,
) -> Result<(Event, Delivery), String> {
    let payload = d.payload.as_ref().ok_or("no payload")?;
    let obj = payload.as_object().ok_or("payload is not a JSON object")?;
    let event_type = obj
        .get("event")
        .and_then(Value::as_str)
        .or(d.event_type.as_deref())
        .ok_or("no event type")?;
    validate_type_name(event_type).map_err(|_| format!("invalid event type {event_type:?}"))?;
    // A payload without the envelope is the event's data itself.
    let data = match obj.get("data") {
        Some(Value::Null) | None if !obj.contains_key("event") => payload.clone(),
        Some(v) => v.clone(),
        None => return Err("payload has no data".into()),
    };
    if data.is_null() {
        return Err("payload data is null".into());
    }
    let actor = match obj.get("actor_user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()),
        Some(other) => return Err(format!("unusable actor_user_id {other}")),
    };
    let request_id = obj
        .get("request_id")
        .and_then(Value::as_str)
        .filter(|r| is_uuid(r))
        .map(str::to_ascii_lowercase);
    let created = d.created_at.unwrap_or(now);
    let timestamp = obj
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(created, |t| t.with_timezone(&Utc));
    // Deliveries of one request (one per configuration) share one event.
    let event_key = request_id.clone().unwrap_or_else(|| d.id.clone());
    let event = Event {
        id: derived_id(prefix::EVENT, timestamp, &event_key),
        tenant_id: opts.tenant.clone(),
        event_type: event_type.to_owned(),
        data,
        actor,
        idempotency_key: request_id,
        traceparent: Some(crate::telemetry::trace::new_traceparent()),
        created_at: timestamp,
        deliver_at: None,
    };
    let attempts = u32::try_from(d.attempts.unwrap_or(0).max(0)).unwrap_or(u32::MAX);
    let delivery = Delivery {
        id: derived_id(prefix::DELIVERY, created, &d.id),
        tenant_id: opts.tenant.clone(),
        event_id: event.id.clone(),
        endpoint_id: endpoint.id.clone(),
        status: DeliveryStatus::Pending,
        attempts,
        max_attempts: opts.max_attempts.max(attempts.saturating_add(1)),
        next_attempt_at: Some(now),
        last_error: d
            .error_message
            .as_deref()
            .map(|e| e.chars().take(1000).collect()),
        ordering_key: None,
        ordering_blocks: false,
        created_at: created,
        updated_at: now,
    };
    Ok((event, delivery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_carry_the_time() {
        let at = DateTime::parse_from_rfc3339("2026-01-29T12:34:56.789Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = derived_id("ep", at, "3f2a0000-0000-4000-8000-000000000001");
        assert_eq!(
            a,
            derived_id("ep", at, "3f2a0000-0000-4000-8000-000000000001")
        );
        assert_ne!(
            a,
            derived_id("ep", at, "3f2a0000-0000-4000-8000-000000000002")
        );
        assert!(a.starts_with("ep_"));
        assert_eq!(
            domain::first_id_at("ep", at)[..13],
            a[..13],
            "same time part"
        );
    }

    #[test]
    fn names_are_quoted_and_only_plain_ones_accepted() {
        assert_eq!(
            quote_ident("webhook_configurations").unwrap(),
            "\"webhook_configurations\""
        );
        assert_eq!(quote_ident("app.hooks").unwrap(), "\"app\".\"hooks\"");
        for bad in ["", "a;b", "a\"b", "a.b.c", "1a", "a b"] {
            assert!(quote_ident(bad).is_err(), "{bad}");
        }
        let mut names = SourceNames::default();
        names.rename("configurations.secret=signing_key").unwrap();
        assert_eq!(
            names.col("configurations.secret").unwrap(),
            "\"signing_key\""
        );
        assert!(names.rename("configurations.nope=x").is_err());
        assert!(names.rename("no-equals").is_err());
    }
}
