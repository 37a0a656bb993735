//! Sources: brokers whose messages become a tenant's events (see [`crate::sources`]).
//!
//! Creating and deleting a source needs the admin token (a source reads from the
//! operator's own infrastructure, like a broker destination); a tenant token reads its
//! tenant's sources, with URL passwords hidden, and their rejected messages.

use axum::{http::StatusCode, routing::get, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, Call, Id, InTenant, Json, List, PageQuery, Path, Query};
use crate::{
    ops::source_states::SourceState,
    sources::SourceUrl,
    store::ops::{Source, SourceRejection},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/sources",
            axum::routing::post(create_source).get(list_sources),
        )
        .route(
            "/v1/tenants/{tenant}/sources/{id}",
            get(get_source).delete(delete_source),
        )
        .route(
            "/v1/tenants/{tenant}/sources/{id}/rejections",
            get(list_rejections),
        )
}

pub use crate::service::sources::CreateSource;

/// A source as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceOut {
    pub id: String,
    pub tenant_id: String,
    /// The URL, its password shown as `***`.
    pub url: String,
    /// `redis`, `nats`, `sqs`, `amqp` or `kafka`.
    pub kind: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The consumer of this source in the process that answered (absent on a process that
    /// runs no dispatcher, or for a moment after the source was created).
    pub state: Option<SourceState>,
}

impl SourceOut {
    pub(crate) fn new(s: Source, state: &AppState) -> Self {
        let kind = SourceUrl::parse(&s.url)
            .map(|u| u.kind().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let consumer = state.ops.sources.lock().get(&s.id).cloned();
        Self {
            url: crate::secrets::redact_url(&s.url).into_owned(),
            kind,
            state: consumer,
            id: s.id,
            tenant_id: s.tenant_id,
            description: s.description,
            created_at: s.created_at,
        }
    }
}

/// A message a source could not turn into an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct RejectionOut {
    pub id: String,
    pub source_id: String,
    /// The broker's id of the message (the entry id of a Redis stream, the stream
    /// sequence of a JetStream message, an SQS `MessageId`, an AMQP `message_id`, a Kafka
    /// `partition:offset`).
    pub message_id: String,
    pub reason: String,
    /// The message as text, cut at 4 KiB.
    pub body: String,
    pub truncated: bool,
    pub received_at: DateTime<Utc>,
}

impl From<SourceRejection> for RejectionOut {
    fn from(r: SourceRejection) -> Self {
        Self {
            id: r.id,
            source_id: r.source_id,
            message_id: r.message_id,
            reason: r.reason,
            body: r.body,
            truncated: r.truncated,
            received_at: r.received_at,
        }
    }
}

/// Create a source (admin token only): hookrelay starts consuming it at once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/sources", tag = "sources",
    params(("tenant" = String, Path)), request_body = CreateSource,
    responses((status = 201, body = SourceOut), (status = 400, body = super::ErrorBody),
              (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody),
              (status = 409, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_source(
    call: Call,
    Path(tenant): Path<String>,
    Json(req): Json<CreateSource>,
) -> Result<(StatusCode, axum::Json<SourceOut>), ApiError> {
    // Admin first: a tenant token learns nothing about other tenants here.
    call.principal.require_admin()?;
    call.tenant(&tenant).await?;
    let source = call
        .service()
        .create_source(&call.caller(), &tenant, req)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(SourceOut::new(source, &call.state)),
    ))
}

/// A tenant's sources, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sources", tag = "sources",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = List<SourceOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_sources(
    call: InTenant,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<SourceOut>>, ApiError> {
    let page = q.page()?;
    let sources = call
        .state
        .store
        .list_sources(Some(&call.tenant), &page)
        .await?;
    let data = sources
        .into_iter()
        .map(|s| SourceOut::new(s, &call.state))
        .collect();
    Ok(axum::Json(List::new(data, &page, |s| &s.id)))
}

/// The source `id` of the caller's tenant.
async fn load(call: &InTenant, id: &str) -> Result<Source, ApiError> {
    call.state
        .store
        .get_source(&call.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("source"))
}

/// A source, with its consumer's state in the process that answered.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sources/{id}", tag = "sources",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SourceOut), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_source(call: InTenant, Id(id): Id) -> Result<axum::Json<SourceOut>, ApiError> {
    let source = load(&call, &id).await?;
    Ok(axum::Json(SourceOut::new(source, &call.state)))
}

/// Delete a source (admin token only) and its rejections: hookrelay stops consuming it
/// (every process within a few seconds). The broker's data is left as it is.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/sources/{id}", tag = "sources",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_source(
    call: Call,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    // Admin first, as for create.
    call.principal.require_admin()?;
    call.tenant(&tenant).await?;
    call.service()
        .delete_source(&call.caller(), &tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Messages a source could not turn into events, newest first (each source keeps its
/// newest 1,000).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/sources/{id}/rejections", tag = "sources",
    params(("tenant" = String, Path), ("id" = String, Path), PageQuery),
    responses((status = 200, body = List<RejectionOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_rejections(
    call: InTenant,
    Id(id): Id,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<RejectionOut>>, ApiError> {
    let page = q.page()?;
    load(&call, &id).await?;
    let rejections = call.state.store.list_source_rejections(&id, &page).await?;
    let data = rejections.into_iter().map(RejectionOut::from).collect();
    Ok(axum::Json(List::new(data, &page, |r| &r.id)))
}
