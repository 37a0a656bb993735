//! Tenants, tenant-scoped tokens and the event-type catalog.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{delete, get, post},
    Router,
};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{hash_token, Actor, ApiError, AppState, Json, List, PageQuery, Path, Principal, Query};
use crate::{
    domain::{self, new_id, prefix, EventType, Tenant, DEFAULT_TENANT},
    ingest::{compile_schema, validate_type_name},
    store::TokenRecord,
};
use serde_json::json;

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

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTenant {
    /// Lowercase letters, digits, `_` and `-`, 1 to 64 characters; generated when absent.
    pub id: Option<String>,
    pub name: String,
}

fn validate_tenant_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "tenant id must be 1 to 64 lowercase letters, digits, '_' or '-'",
        ))
    }
}

/// Create a tenant (admin).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = Tenant), (status = 400, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    actor: Actor,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<Tenant>), ApiError> {
    principal.require_admin()?;
    let id = body
        .id
        .unwrap_or_else(|| new_id(prefix::TENANT).to_lowercase());
    validate_tenant_id(&id)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > 256 {
        return Err(ApiError::invalid("name must be 1 to 256 characters"));
    }
    let tenant = Tenant {
        id,
        name: name.to_owned(),
        created_at: domain::now(),
    };
    state.store.create_tenant(&tenant).await?;
    super::audit(
        &state,
        &actor,
        Some(&tenant.id),
        "tenant.created",
        Some(&tenant.id),
        json!({ "name": tenant.name }),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(tenant)))
}

/// List tenants (admin; a tenant token sees only its own).
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery),
    responses((status = 200, body = List<Tenant>)), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<Tenant>>, ApiError> {
    let page = q.page()?;
    let data = match &principal {
        Principal::Admin => state.store.list_tenants(&page).await?,
        Principal::Tenant(own) => state.store.get_tenant(own).await?.into_iter().collect(),
    };
    Ok(axum::Json(List::new(data, &page, |t| &t.id)))
}

/// Get a tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Tenant>, ApiError> {
    principal.tenant(&state, &tenant).await?;
    let found = state.store.get_tenant(&tenant).await?;
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
pub async fn delete_tenant(
    State(state): State<AppState>,
    principal: Principal,
    actor: Actor,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    if tenant == DEFAULT_TENANT {
        return Err(ApiError::conflict("the default tenant cannot be deleted"));
    }
    let existed = state.store.delete_tenant(&tenant).await?;
    super::deleted(
        &state,
        &actor,
        &tenant,
        existed,
        ("tenant", "tenant.deleted"),
        &tenant,
    )
    .await
}

/// A new tenant-scoped token: the only time the token itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub tenant_id: String,
    /// Use as `Authorization: Bearer <token>`. Stored only as a hash: keep it now.
    pub token: String,
}

/// A random bearer token with a readable prefix.
pub fn generate_token(kind: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "hr{kind}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Create a tenant-scoped token (admin). The token is shown once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/tokens", tag = "tenants",
    params(("tenant" = String, Path)),
    responses((status = 201, body = CreatedToken), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    actor: Actor,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    principal.require_admin()?;
    principal.tenant(&state, &tenant).await?;
    let token = generate_token("t");
    let record = TokenRecord {
        id: new_id(prefix::TOKEN),
        tenant_id: Some(tenant.clone()),
        hash: hex::encode(hash_token(&token)),
        created_at: domain::now(),
    };
    state.store.create_token(&record).await?;
    super::audit(
        &state,
        &actor,
        Some(&tenant),
        "token.created",
        Some(&record.id),
        json!({}),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            id: record.id,
            tenant_id: tenant,
            token,
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEventType {
    /// Dot-separated name, e.g. `user.joined_community`.
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema that the `data` of events of this type must match.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
}

/// Register an event type (admin).
#[utoipa::path(post, path = "/v1/event-types", tag = "event-types", request_body = CreateEventType,
    responses((status = 201, body = EventType), (status = 400, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_event_type(
    State(state): State<AppState>,
    principal: Principal,
    actor: Actor,
    Json(body): Json<CreateEventType>,
) -> Result<(StatusCode, axum::Json<EventType>), ApiError> {
    principal.require_admin()?;
    validate_type_name(&body.name).map_err(ApiError::invalid)?;
    if body.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(ApiError::invalid(
            "description is longer than 1024 characters",
        ));
    }
    let schema = body.schema.filter(|s| !s.is_null());
    if let Some(schema) = &schema {
        compile_schema(schema).map_err(|e| ApiError::invalid(format!("invalid schema: {e}")))?;
    }
    let et = EventType {
        name: body.name,
        description: body.description,
        schema,
        created_at: domain::now(),
    };
    state.store.create_event_type(&et).await?;
    super::audit(
        &state,
        &actor,
        None,
        "event_type.created",
        Some(&et.name),
        json!({ "description": et.description, "schema": et.schema }),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(et)))
}

/// The event-type catalog.
#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    responses((status = 200, body = List<EventType>)), security(("bearer" = [])))]
pub async fn list_event_types(
    State(state): State<AppState>,
    _principal: Principal,
) -> Result<axum::Json<List<EventType>>, ApiError> {
    let data = state.store.list_event_types().await?;
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
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant): Path<String>,
) -> Result<axum::Json<List<TokenInfo>>, ApiError> {
    principal.require_admin()?;
    principal.tenant(&state, &tenant).await?;
    let data = state
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
    State(state): State<AppState>,
    principal: Principal,
    actor: Actor,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    principal.tenant(&state, &tenant).await?;
    let existed = state.store.delete_token(&tenant, &id).await?;
    super::deleted(
        &state,
        &actor,
        &tenant,
        existed,
        ("token", "token.revoked"),
        &id,
    )
    .await
}
