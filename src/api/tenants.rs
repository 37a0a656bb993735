//! Tenants, tenant-scoped tokens and the event-type catalog.

use axum::{
    http::StatusCode,
    routing::{delete, get, post},
    Router,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, Call, InTenant, Json, List, PageQuery, Path, Principal, Query};
use crate::domain::{EventType, Tenant};
pub use crate::service::tenants::{CreateEventType, CreateTenant, CreatedToken};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{tenant}",
            get(get_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/tenants/{tenant}/tokens",
            post(create_token).get(list_tokens),
        )
        .route("/v1/tenants/{tenant}/tokens/{id}", delete(revoke_token))
        .route(
            "/v1/event-types",
            post(create_event_type).get(list_event_types),
        )
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    call: Call,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<Tenant>), ApiError> {
    let tenant = call.service().create_tenant(&call.caller(), body).await?;
    Ok((StatusCode::CREATED, axum::Json(tenant)))
}

/// List tenants (admin; a tenant token sees only its own).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery),
    responses((status = 200, body = List<Tenant>)), security(("bearer" = [])))]
pub async fn list_tenants(
    call: Call,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<Tenant>>, ApiError> {
    let page = q.page()?;
    let store = &call.state.store;
    let data = match &call.principal {
        Principal::Admin => store.list_tenants(&page).await?,
        Principal::Tenant(own) => store.get_tenant(own).await?.into_iter().collect(),
    };
    Ok(axum::Json(List::new(data, &page, |t| &t.id)))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_tenant(call: InTenant) -> Result<axum::Json<Tenant>, ApiError> {
    let found = call.state.store.get_tenant(&call.tenant).await?;
    found
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("tenant"))
}

/// Delete a tenant and everything it owns (admin). The default tenant cannot be deleted.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_tenant(call: Call, Path(tenant): Path<String>) -> Result<StatusCode, ApiError> {
    call.service()
        .delete_tenant(&call.caller(), &tenant)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a tenant-scoped token (admin). The token is shown once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 201, body = CreatedToken), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    call: Call,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let created = call.service().create_token(&call.caller(), &tenant).await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

/// Register an event type (admin).
#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", request_body = CreateEventType,
    responses((status = 201, body = EventType), (status = 400, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_event_type(
    call: Call,
    Json(body): Json<CreateEventType>,
) -> Result<(StatusCode, axum::Json<EventType>), ApiError> {
    let et = call
        .service()
        .create_event_type(&call.caller(), body)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(et)))
}

/// The event-type catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    responses((status = 200, body = List<EventType>)), security(("bearer" = [])))]
pub async fn list_event_types(call: Call) -> Result<axum::Json<List<EventType>>, ApiError> {
    let data = call.state.store.list_event_types().await?;
    Ok(axum::Json(List {
        data,
        next_cursor: None,
    }))
}

/// A tenant token as listed: never the token itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub tenant_id: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// List a tenant's tokens (admin).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = List<TokenInfo>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tokens(
    call: Call,
    Path(tenant): Path<String>,
) -> Result<axum::Json<List<TokenInfo>>, ApiError> {
    // Admin first: a tenant token learns nothing about other tenants here.
    call.principal.require_admin()?;
    call.tenant(&tenant).await?;
    let data = call
        .state
        .store
        .list_tokens(&tenant)
        .await?
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            tenant_id: tenant.clone(),
            created_at: t.created_at,
        })
        .collect();
    Ok(axum::Json(List {
        data,
        next_cursor: None,
    }))
}

/// Revoke a tenant token (admin): it stops working at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/tokens/{id}", tag = "tenants",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_token(
    call: Call,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    call.service()
        .revoke_token(&call.caller(), &tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
