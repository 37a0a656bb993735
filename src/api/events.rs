//! Events: ingest (with idempotency) and the event log.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Id, InTenant, Json, List, PageQuery, Path, Principal, Query};
use crate::{
    domain::{Delivery, DeliveryStatus, Event},
    ingest::{ingest, NewEvent},
    store::{EventFilter, Ingested},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/events",
            post(create_event).get(list_events),
        )
        .route("/v1/tenants/{tenant}/events/{id}", get(get_event))
        .route(
            "/v1/tenants/{tenant}/events/{id}/replay",
            post(replay_event),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEvent {
    /// Event type, e.g. `user.joined_community`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload, delivered as `data`: any JSON value but `null` (usually an object).
    #[schema(value_type = Value)]
    pub data: serde_json::Value,
    /// Who caused the event; delivered as `actor`.
    pub actor: Option<String>,
    /// Same key, same tenant: one event, and the first answer again. Also accepted as the
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// Deliver no earlier than this time (RFC 3339).
    pub deliver_at: Option<DateTime<Utc>>,
}

/// One delivery created by an ingest.
#[derive(Debug, Serialize, ToSchema, Clone)]
pub struct DeliveryRef {
    pub id: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
}

/// The answer to an ingest: the event id and the deliveries it fanned out to.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    pub deliveries: Vec<DeliveryRef>,
}

fn refs(deliveries: &[Delivery]) -> Vec<DeliveryRef> {
    deliveries
        .iter()
        .map(|d| DeliveryRef {
            id: d.id.clone(),
            endpoint_id: d.endpoint_id.clone(),
            status: DeliveryStatus::Pending,
        })
        .collect()
}

/// Ingest an event: stored with one delivery per subscribed endpoint, in one transaction.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events", tag = "events",
    params(("tenant" = String, Path),
           ("Idempotency-Key" = Option<String>, Header, description = "idempotency key"),
           ("traceparent" = Option<String>, Header, description = "W3C trace context")),
    request_body = CreateEvent,
    responses((status = 202, body = Accepted), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody), (status = 413, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_event(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CreateEvent>,
) -> Result<Response, ApiError> {
    // The ingest transaction checks that the tenant exists.
    principal.may_act_in(&tenant)?;
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::invalid(format!("{name} header is not text")))
            })
            .transpose()
    };
    let header_key = header("idempotency-key")?;
    let idempotency_key = match (body.idempotency_key, header_key) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::invalid(
                "idempotency_key and the Idempotency-Key header differ",
            ))
        }
        (a, b) => a.or(b),
    };
    let new = NewEvent {
        event_type: body.event_type,
        data: body.data,
        actor: body.actor,
        idempotency_key,
        deliver_at: body.deliver_at,
        traceparent: header("traceparent")?,
    };
    let span = crate::telemetry::trace::ingest_span(&tenant, new.traceparent.as_deref());
    let result = tracing::Instrument::instrument(
        ingest(
            state.store.as_ref(),
            state.schemas.clone(),
            &state.waker,
            &tenant,
            state.config.retry.max_attempts,
            new,
        ),
        span,
    )
    .await?;
    let (event, deliveries, replayed) = match result {
        Ingested::Created(e, d) => {
            state.ops.metrics.events_ingested.inc();
            state
                .ops
                .metrics
                .deliveries_created
                .inc_by(u64::try_from(d.len()).unwrap_or(0));
            (e, d, false)
        }
        Ingested::Existing(e, d) => (e, d, true),
    };
    let body = Accepted {
        id: event.id,
        deliveries: refs(&deliveries),
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only events created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only events created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The event log, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/events", tag = "events",
    params(("tenant" = String, Path), EventsQuery),
    responses((status = 200, body = List<Event>), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_events(
    call: InTenant,
    Query(q): Query<EventsQuery>,
) -> Result<axum::Json<List<Event>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let filter = EventFilter {
        event_type: q.event_type,
        since: q.since,
        until: q.until,
        page: page.clone(),
    };
    let data = call.state.store.list_events(&call.tenant, &filter).await?;
    Ok(axum::Json(List::new(data, &page, |e| &e.id)))
}

/// An event with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: Event,
    pub deliveries: Vec<Delivery>,
}

/// Get an event with its deliveries.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/events/{id}", tag = "events",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = EventDetail), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_event(call: InTenant, Id(id): Id) -> Result<axum::Json<EventDetail>, ApiError> {
    let store = &call.state.store;
    let event = store
        .get_event(&call.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let deliveries = store
        .list_deliveries(
            &call.tenant,
            &crate::store::DeliveryFilter {
                event_id: Some(id),
                page: crate::store::Page {
                    after_id: None,
                    limit: 1000,
                },
                ..Default::default()
            },
        )
        .await?;
    Ok(axum::Json(EventDetail { event, deliveries }))
}

/// Replay one event: its delivered and failed deliveries (to endpoints that still exist)
/// are sent again, with the same `webhook-id`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/events/{id}/replay", tag = "events",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = super::deliveries::Replayed),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay_event(
    call: InTenant,
    Id(id): Id,
) -> Result<(StatusCode, axum::Json<super::deliveries::Replayed>), ApiError> {
    let replayed = call.service().replay_event(&call.tenant, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(super::deliveries::Replayed { replayed }),
    ))
}
