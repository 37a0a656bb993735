//! Row types shared by the SQL stores: both read times as epoch milliseconds and JSON as
//! text, so one set of rows and conversions to domain types serves SQLite and PostgreSQL.

use chrono::{DateTime, Utc};

use super::{Claimed, Result, StoreError};
use crate::domain::{
    from_millis, Attempt, AttemptOutcome, Breaker, BreakerState, Delivery, DeliveryFormat,
    DeliveryStatus, Endpoint, Event, EventType, Tenant,
};

/// Milliseconds since the epoch, as both stores write times: clamped to what PostgreSQL's
/// `timestamptz` can hold, on both stores alike (only absurd times, thousands of years
/// away, are affected).
pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    const MIN: i64 = -200_000_000_000_000; // about 4400 BC
    const MAX: i64 = 9_000_000_000_000_000; // about AD 287000
    t.timestamp_millis().clamp(MIN, MAX)
}

/// Joins claimed deliveries with their events and endpoints, whose credentials `sealer`
/// opens. A delivery whose endpoint or event is gone (deleted since the claim, which
/// cancelled or deleted the delivery too) is left out rather than failing the whole batch;
/// so is one whose endpoint's credentials cannot be opened: an unreadable secret must not
/// sign anything, nor stop other deliveries (the lease runs out and the operator sees the
/// error).
pub(super) fn assemble_claims(
    deliveries: Vec<Delivery>,
    events: Vec<(Event, Option<String>)>,
    endpoints: Vec<Endpoint>,
    lease_id: &str,
    sealer: &super::sealed::Sealer,
) -> Vec<Claimed> {
    let events: std::collections::HashMap<String, (Event, Option<String>)> =
        events.into_iter().map(|e| (e.0.id.clone(), e)).collect();
    let endpoints: std::collections::HashMap<String, Endpoint> = endpoints
        .into_iter()
        .filter_map(|e| match sealer.open_endpoint(e) {
            Ok(e) => Some((e.id.clone(), e)),
            Err(error) => {
                tracing::error!(%error, "cannot open the credentials of a claimed endpoint");
                None
            }
        })
        .collect();
    deliveries
        .into_iter()
        .filter_map(|delivery| {
            let event = events.get(&delivery.event_id).cloned();
            let endpoint = endpoints.get(&delivery.endpoint_id).cloned();
            let (Some((event, unreadable)), Some(endpoint)) = (event, endpoint) else {
                tracing::debug!(delivery = %delivery.id, "claimed delivery lost its endpoint or event meanwhile");
                return None;
            };
            Some(Claimed {
                delivery,
                event,
                endpoint,
                lease_id: lease_id.to_owned(),
                unreadable,
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
pub(super) struct TenantRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct TokenRow {
    pub(super) id: String,
    pub(super) tenant_id: Option<String>,
    pub(super) hash: String,
    pub(super) created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct EventTypeRow {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) schema: Option<String>,
    pub(super) created_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct EndpointRow {
    pub(super) id: String,
    pub(super) tenant_id: String,
    pub(super) url: String,
    pub(super) description: Option<String>,
    pub(super) event_types: String,
    pub(super) secret: String,
    pub(super) previous_secret: Option<String>,
    pub(super) previous_secret_expires_at: Option<i64>,
    pub(super) rate_limit: Option<i64>,
    pub(super) rate_period: String,
    pub(super) max_attempts: Option<i64>,
    pub(super) headers: String,
    pub(super) enabled: bool,
    pub(super) disabled_reason: Option<String>,
    pub(super) breaker_state: String,
    pub(super) consecutive_failures: i64,
    pub(super) breaker_until: Option<i64>,
    pub(super) failing_since: Option<i64>,
    pub(super) routing: Option<String>,
    pub(super) format: String,
    pub(super) oauth2: Option<String>,
    pub(super) signature_headers: Option<String>,
    pub(super) tls: Option<String>,
    pub(super) proxy: Option<String>,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    pub(super) id: String,
    pub(super) tenant_id: String,
    #[sqlx(rename = "type")]
    pub(super) event_type: String,
    pub(super) data: String,
    pub(super) actor: Option<String>,
    pub(super) idempotency_key: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) created_at: i64,
    pub(super) deliver_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
pub(super) struct DeliveryRow {
    pub(super) id: String,
    pub(super) tenant_id: String,
    pub(super) event_id: String,
    pub(super) endpoint_id: String,
    pub(super) status: String,
    pub(super) attempts: i64,
    pub(super) max_attempts: i64,
    pub(super) next_attempt_at: Option<i64>,
    pub(super) last_error: Option<String>,
    pub(super) ordering_key: Option<String>,
    pub(super) ordering_blocks: bool,
    pub(super) created_at: i64,
    pub(super) updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    pub(super) id: String,
    pub(super) delivery_id: String,
    pub(super) attempt_number: i64,
    pub(super) started_at: i64,
    pub(super) duration_ms: i64,
    pub(super) status_code: Option<i64>,
    pub(super) response: Option<String>,
    pub(super) error: Option<String>,
    pub(super) outcome: String,
    pub(super) next_attempt_at: Option<i64>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            id: r.id,
            name: r.name,
            created_at: from_millis(r.created_at),
        }
    }
}

impl TryFrom<EventTypeRow> for EventType {
    type Error = StoreError;
    fn try_from(r: EventTypeRow) -> Result<Self> {
        Ok(EventType {
            schema: r
                .schema
                .map(|s| serde_json::from_str(&s))
                .transpose()
                .map_err(|e| corrupt("event_types.schema", e))?,
            name: r.name,
            description: r.description,
            created_at: from_millis(r.created_at),
        })
    }
}

impl TryFrom<EndpointRow> for Endpoint {
    type Error = StoreError;
    fn try_from(r: EndpointRow) -> Result<Self> {
        Ok(Endpoint {
            routing: crate::domain::routing::compiled(r.routing.as_deref()),
            format: DeliveryFormat::parse(&r.format)
                .ok_or_else(|| corrupt("endpoints.format", &r.format))?,
            event_types: json_column(Some(&r.event_types), "endpoints.event_types")?
                .unwrap_or_default(),
            headers: json_column(Some(&r.headers), "endpoints.headers")?.unwrap_or_default(),
            oauth2: json_column(r.oauth2.as_deref(), "endpoints.oauth2")?,
            signature_headers: json_column(
                r.signature_headers.as_deref(),
                "endpoints.signature_headers",
            )?
            .unwrap_or_default(),
            tls: json_column(r.tls.as_deref(), "endpoints.tls")?,
            proxy: r.proxy,
            rate_limit: r
                .rate_limit
                .map(|v| count("endpoints.rate_limit", v))
                .transpose()?,
            rate_period: crate::domain::RatePeriod::parse(&r.rate_period)
                .ok_or_else(|| corrupt("endpoints.rate_period", &r.rate_period))?,
            max_attempts: r
                .max_attempts
                .map(|v| count("endpoints.max_attempts", v))
                .transpose()?,
            id: r.id,
            tenant_id: r.tenant_id,
            url: r.url,
            description: r.description,
            secret: r.secret,
            previous_secret: r.previous_secret,
            previous_secret_expires_at: r.previous_secret_expires_at.map(from_millis),
            enabled: r.enabled,
            disabled_reason: r.disabled_reason,
            breaker: Breaker {
                state: BreakerState::parse(&r.breaker_state)
                    .ok_or_else(|| corrupt("endpoints.breaker_state", &r.breaker_state))?,
                consecutive_failures: count(
                    "endpoints.consecutive_failures",
                    r.consecutive_failures,
                )?,
                open_until: r.breaker_until.map(from_millis),
                failing_since: r.failing_since.map(from_millis),
            },
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        })
    }
}

impl TryFrom<EventRow> for Event {
    type Error = StoreError;
    fn try_from(r: EventRow) -> Result<Self> {
        let data = serde_json::from_str(&r.data).map_err(|e| corrupt("events.data", e))?;
        Ok(r.with_data(data))
    }
}

impl EventRow {
    /// The event of a claimed delivery. Data that cannot be read (written past the API,
    /// e.g. through `dispatch_webhook()`, and nested deeper than the JSON reader goes) does
    /// not fail the whole claim: the event comes with null data and the reason, and only
    /// its own deliveries fail.
    pub(super) fn into_claimed(self) -> (Event, Option<String>) {
        match serde_json::from_str(&self.data) {
            Ok(data) => (self.with_data(data), None),
            Err(e) => (
                self.with_data(serde_json::Value::Null),
                Some(format!("the event's data cannot be read: {e}")),
            ),
        }
    }

    fn with_data(self, data: serde_json::Value) -> Event {
        let r = self;
        Event {
            data,
            id: r.id,
            tenant_id: r.tenant_id,
            event_type: r.event_type,
            actor: r.actor,
            idempotency_key: r.idempotency_key,
            traceparent: r.traceparent,
            created_at: from_millis(r.created_at),
            deliver_at: r.deliver_at.map(from_millis),
        }
    }
}

impl TryFrom<DeliveryRow> for Delivery {
    type Error = StoreError;
    fn try_from(r: DeliveryRow) -> Result<Self> {
        let status = DeliveryStatus::parse(&r.status)
            .ok_or_else(|| corrupt("deliveries.status", &r.status))?;
        Ok(Delivery {
            id: r.id,
            tenant_id: r.tenant_id,
            event_id: r.event_id,
            endpoint_id: r.endpoint_id,
            status,
            attempts: count("deliveries.attempts", r.attempts)?,
            max_attempts: count("deliveries.max_attempts", r.max_attempts)?,
            next_attempt_at: if status == DeliveryStatus::Pending {
                r.next_attempt_at.map(from_millis)
            } else {
                None
            },
            last_error: r.last_error,
            ordering_key: r.ordering_key,
            ordering_blocks: r.ordering_blocks,
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        })
    }
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = StoreError;
    fn try_from(r: AttemptRow) -> Result<Self> {
        Ok(Attempt {
            outcome: AttemptOutcome::parse(&r.outcome)
                .ok_or_else(|| corrupt("attempts.outcome", &r.outcome))?,
            id: r.id,
            delivery_id: r.delivery_id,
            attempt_number: count("attempts.attempt_number", r.attempt_number)?,
            started_at: from_millis(r.started_at),
            duration_ms: count("attempts.duration_ms", r.duration_ms)?,
            status_code: r
                .status_code
                .map(|c| count("attempts.status_code", c))
                .transpose()?,
            response: r.response,
            error: r.error,
            next_attempt_at: r.next_attempt_at.map(from_millis),
        })
    }
}

pub(super) fn collect<R, T>(rows: Vec<R>) -> Result<Vec<T>>
where
    T: TryFrom<R, Error = StoreError>,
{
    rows.into_iter().map(T::try_from).collect()
}

/// `v` as JSON text; `what` names it in the error (which cannot happen for the plain data
/// the store writes, but is reported rather than assumed).
pub(super) fn to_json<T: serde::Serialize>(v: &T, what: &str) -> Result<String> {
    serde_json::to_string(v).map_err(|e| corrupt(what, e))
}

/// A JSON column read into its type; `None` for NULL, corrupt when it does not parse.
fn json_column<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
    what: &str,
) -> Result<Option<T>> {
    text.map(serde_json::from_str)
        .transpose()
        .map_err(|e| corrupt(what, e))
}

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored count or code in its domain type: a value out of range (negative, or too large)
/// is a corrupt row, not a silent zero that would, say, give a delivery its attempts back.
fn count<T: TryFrom<i64>>(what: &str, value: impl Into<i64>) -> Result<T> {
    let value = value.into();
    T::try_from(value).map_err(|_| corrupt(what, value))
}

impl From<TokenRow> for super::TokenRecord {
    fn from(r: TokenRow) -> Self {
        super::TokenRecord {
            id: r.id,
            tenant_id: r.tenant_id,
            hash: r.hash,
            created_at: from_millis(r.created_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{self, Endpoint, Event};

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            tenant_id: "t".into(),
            event_type: "a.b".into(),
            data: serde_json::json!({}),
            actor: None,
            idempotency_key: None,
            traceparent: None,
            created_at: domain::now(),
            deliver_at: None,
        }
    }

    #[test]
    fn a_delivery_whose_endpoint_or_event_is_gone_is_left_out_alone() {
        let ep = Endpoint::new("t", "https://example.com/", "whsec_dGVzdA==".into());
        let ev = event("evt_1");
        let one = || domain::fan_out(&ev, std::slice::from_ref(&ep), 3).remove(0);
        let kept = one();
        let mut no_endpoint = one();
        no_endpoint.endpoint_id = "ep_gone".into();
        let mut no_event = one();
        no_event.event_id = "evt_gone".into();
        let claimed = assemble_claims(
            vec![no_endpoint, kept.clone(), no_event],
            vec![(ev, None)],
            vec![ep],
            "lse_1",
            &crate::store::sealed::Sealer::default(),
        );
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].delivery.id, kept.id);
        assert_eq!(claimed[0].lease_id, "lse_1");
    }

    #[test]
    fn times_are_clamped_alike() {
        let ancient = DateTime::<Utc>::from_timestamp_millis(-300_000_000_000_000).unwrap();
        assert_eq!(ms(ancient), -200_000_000_000_000);
        let now = domain::now();
        assert_eq!(ms(now), now.timestamp_millis());
    }
}
