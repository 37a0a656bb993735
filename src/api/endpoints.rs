//! Endpoints over HTTP: the handlers read the request and show the answer; the rules are
//! [`crate::service::endpoints`]'s.

use axum::{http::StatusCode, routing::get, routing::post, Router};

use super::{ApiError, AppState, Id, InTenant, Json, List, PageQuery, Query};
pub use crate::service::endpoints::{
    CreateEndpoint, EndpointOut, ReplayRequest, RotateSecret, UpdateEndpoint,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{id}/replay",
            post(replay_endpoint),
        )
        .route(
            "/v1/tenants/{tenant}/endpoints/{id}/stats",
            get(endpoint_stats),
        )
}

/// Create an endpoint.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/endpoints", tag = "endpoints",
    params(("tenant" = String, Path)), request_body = CreateEndpoint,
    responses((status = 201, body = EndpointOut), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_endpoint(
    call: InTenant,
    Json(body): Json<CreateEndpoint>,
) -> Result<(StatusCode, axum::Json<EndpointOut>), ApiError> {
    let ep = call
        .service()
        .create_endpoint(&call.caller(), &call.tenant, body)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(EndpointOut::new(ep, true))))
}

/// List a tenant's endpoints (newest first; secrets omitted).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/endpoints", tag = "endpoints",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = List<EndpointOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_endpoints(
    call: InTenant,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<EndpointOut>>, ApiError> {
    let page = q.page()?;
    let endpoints = call.state.store.list_endpoints(&call.tenant, &page).await?;
    let data = endpoints
        .into_iter()
        .map(|e| EndpointOut::new(e, false))
        .collect();
    Ok(axum::Json(List::new(data, &page, |e| &e.id)))
}

/// An endpoint's statistics for the last hour and 24 hours: attempts, delivered, failed,
/// success rate, latency p50/p95/p99, last success and last failure with its error. Read
/// from per-minute counters, never from the attempt log.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/endpoints/{id}/stats", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = crate::ops::endpoint_stats::EndpointStats),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn endpoint_stats(
    call: InTenant,
    Id(id): Id,
) -> Result<axum::Json<crate::ops::endpoint_stats::EndpointStats>, ApiError> {
    let ep = call.service().endpoint(&call.tenant, &id).await?;
    let stats = crate::ops::endpoint_stats::read(call.state.store.as_ref(), &ep.id).await?;
    Ok(axum::Json(stats))
}

/// Get an endpoint, with its secret.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/endpoints/{id}", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = EndpointOut), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_endpoint(call: InTenant, Id(id): Id) -> Result<axum::Json<EndpointOut>, ApiError> {
    let ep = call.service().endpoint(&call.tenant, &id).await?;
    Ok(axum::Json(EndpointOut::new(ep, true)))
}

/// Change an endpoint. Re-enabling clears the disabled reason and resumes its deliveries.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/endpoints/{id}", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointOut), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_endpoint(
    call: InTenant,
    Id(id): Id,
    Json(body): Json<UpdateEndpoint>,
) -> Result<axum::Json<EndpointOut>, ApiError> {
    let ep = call
        .service()
        .update_endpoint(&call.caller(), &call.tenant, &id, body)
        .await?;
    Ok(axum::Json(EndpointOut::new(ep, true)))
}

/// Delete an endpoint; its pending deliveries are cancelled, its history kept.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/endpoints/{id}", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_endpoint(call: InTenant, Id(id): Id) -> Result<StatusCode, ApiError> {
    call.service()
        .delete_endpoint(&call.caller(), &call.tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate the signing secret. The old secret keeps signing (both signatures are sent) for
/// the grace period (`--rotation-grace`, 24 hours by default), so receivers can switch
/// without losing a delivery.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/endpoints/{id}/rotate-secret", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = Option<RotateSecret>,
    responses((status = 200, body = EndpointOut), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    call: InTenant,
    Id(id): Id,
    body: axum::body::Bytes,
) -> Result<axum::Json<EndpointOut>, ApiError> {
    let body: RotateSecret = super::optional_json(&body)?;
    let ep = call
        .service()
        .rotate_secret(&call.caller(), &call.tenant, &id, body)
        .await?;
    Ok(axum::Json(EndpointOut::new(ep, true)))
}

/// Bulk replay to one endpoint: its finished deliveries (by default the failed ones, the
/// dead letters) in the time range become pending again, due now, with a fresh budget of
/// attempts. They keep their ids, so receivers see the same `webhook-id`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/endpoints/{id}/replay", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path)), request_body = Option<ReplayRequest>,
    responses((status = 202, body = super::deliveries::Replayed),
              (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn replay_endpoint(
    call: InTenant,
    Id(id): Id,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<super::deliveries::Replayed>), ApiError> {
    let req: ReplayRequest = super::optional_json(&body)?;
    let replayed = call
        .service()
        .replay_endpoint(&call.tenant, &id, req)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(super::deliveries::Replayed { replayed }),
    ))
}
