//! Deliveries: the delivery log, attempts, and manual retry.

use axum::{
    http::StatusCode,
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Id, InTenant, List, PageQuery, Query};
use crate::{
    domain::{Attempt, Delivery, DeliveryStatus},
    store::DeliveryFilter,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/deliveries", get(list_deliveries))
        .route("/v1/tenants/{tenant}/deliveries/{id}", get(get_delivery))
        .route(
            "/v1/tenants/{tenant}/deliveries/{id}/retry",
            post(retry_delivery),
        )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries to this endpoint id.
    pub endpoint: Option<String>,
    /// Only deliveries of this event id.
    pub event: Option<String>,
    /// Only deliveries created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only deliveries created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// The delivery log, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/deliveries", tag = "deliveries",
    params(("tenant" = String, Path), DeliveriesQuery),
    responses((status = 200, body = List<Delivery>), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    call: InTenant,
    Query(q): Query<DeliveriesQuery>,
) -> Result<axum::Json<List<Delivery>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let filter = DeliveryFilter {
        status: q.status,
        endpoint_id: q.endpoint,
        event_id: q.event,
        since: q.since,
        until: q.until,
        page: page.clone(),
    };
    let data = call
        .state
        .store
        .list_deliveries(&call.tenant, &filter)
        .await?;
    Ok(axum::Json(List::new(data, &page, |d| &d.id)))
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

/// Get a delivery with its attempts.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/deliveries/{id}", tag = "deliveries",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = DeliveryDetail), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_delivery(
    call: InTenant,
    Id(id): Id,
) -> Result<axum::Json<DeliveryDetail>, ApiError> {
    let store = &call.state.store;
    let delivery = store
        .get_delivery(&call.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let attempts = store.list_attempts(&delivery.id).await?;
    Ok(axum::Json(DeliveryDetail { delivery, attempts }))
}

/// How many deliveries a replay made pending again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub replayed: u64,
}

/// Deliver again now, with a fresh budget of attempts. The message keeps its `webhook-id`,
/// so receivers can recognise it. A pending delivery cannot be retried (409).
#[utoipa::path(post, path = "/v1/tenants/{tenant}/deliveries/{id}/retry", tag = "deliveries",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 202, body = Delivery), (status = 404, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    call: InTenant,
    Id(id): Id,
) -> Result<(StatusCode, axum::Json<Delivery>), ApiError> {
    let delivery = call.service().retry_delivery(&call.tenant, &id).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(delivery)))
}
