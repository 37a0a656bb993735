//! The audit trail: every configuration change, who made it and what changed (see
//! [`crate::store::ops::AuditEntry`]). The admin token lists every entry; a tenant token
//! lists its tenant's.

use axum::{routing::get, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ApiError, AppState, Call, InTenant, List, PageQuery, Query};
use crate::store::ops::{AuditEntry, AuditFilter};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(list_all))
        .route("/v1/tenants/{tenant}/audit", get(list_tenant))
}

/// Filters of the audit trail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this tenant's entries (`/v1/audit` only).
    pub tenant: Option<String>,
    /// Only this action, e.g. `endpoint.updated`.
    pub action: Option<String>,
    /// Only changes by this actor: a token id, `admin` or `system`.
    pub actor: Option<String>,
    /// Only changes of this object (an endpoint id, a token id, …).
    pub target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl AuditQuery {
    fn filter(self, tenant: Option<String>) -> Result<AuditFilter, ApiError> {
        let page = PageQuery {
            limit: self.limit,
            cursor: self.cursor,
        }
        .page()?;
        Ok(AuditFilter {
            tenant_id: tenant,
            action: self.action,
            actor: self.actor,
            target: self.target,
            since: self.since,
            until: self.until,
            page,
        })
    }
}

/// Every tenant's audit trail, newest first (admin token).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = List<AuditEntry>), (status = 400, body = super::ErrorBody),
              (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_all(
    call: Call,
    Query(mut q): Query<AuditQuery>,
) -> Result<axum::Json<List<AuditEntry>>, ApiError> {
    call.principal.require_admin()?;
    let tenant = q.tenant.take();
    let filter = q.filter(tenant)?;
    let data = call.state.store.list_audit(&filter).await?;
    Ok(axum::Json(List::new(data, &filter.page, |e| &e.id)))
}

/// A tenant's audit trail, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "audit",
    params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, body = List<AuditEntry>), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_tenant(
    call: InTenant,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<List<AuditEntry>>, ApiError> {
    if q.tenant.as_ref().is_some_and(|t| *t != call.tenant) {
        return Err(ApiError::invalid(
            "tenant is given by the path here; use /v1/audit to filter by tenant",
        ));
    }
    let filter = q.filter(Some(call.tenant.clone()))?;
    let data = call.state.store.list_audit(&filter).await?;
    Ok(axum::Json(List::new(data, &filter.page, |e| &e.id)))
}
