//! Consumer portal links over HTTP; the rules are [`crate::service::portal`]'s.

use axum::{
    http::{header, HeaderMap, StatusCode},
    routing::{delete, post},
    Router,
};

use super::{ApiError, AppState, Id, InTenant, List, PageQuery, Query};
pub use crate::service::portal::{CreatePortalLink, CreatedPortalLink, PortalLinkOut};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/portal-links",
            post(create_portal_link).get(list_portal_links),
        )
        .route(
            "/v1/tenants/{tenant}/portal-links/{id}",
            delete(revoke_portal_link),
        )
}

/// Create a portal link: a URL that opens the consumer portal for this tenant only, until
/// it expires or is revoked. The link (and its token) is shown only in this answer.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/portal-links", tag = "portal",
    params(("tenant" = String, Path)), request_body = Option<CreatePortalLink>,
    responses((status = 201, body = CreatedPortalLink), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_portal_link(
    call: InTenant,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<CreatedPortalLink>), ApiError> {
    let body: CreatePortalLink = super::optional_json(&body)?;
    let (link, token) = call
        .service()
        .create_portal_link(&call.caller(), &call.tenant, body)
        .await?;
    let url = format!(
        "{}/portal/open/{token}",
        base_url(call.state.config.portal.public_url.as_ref(), &headers)
    );
    let link = PortalLinkOut::from(link);
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedPortalLink { link, token, url }),
    ))
}

/// List a tenant's portal links, newest first (tokens are never shown again).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/portal-links", tag = "portal",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = List<PortalLinkOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_portal_links(
    call: InTenant,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<PortalLinkOut>>, ApiError> {
    let page = q.page()?;
    let links = call.service().portal_links(&call.tenant, &page).await?;
    let data = links.into_iter().map(PortalLinkOut::from).collect();
    Ok(axum::Json(List::new(data, &page, |l| &l.id)))
}

/// Revoke a portal link: it no longer opens the portal, and the portal sessions it
/// started end at their next request. Revoking a revoked link changes nothing.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/portal-links/{id}", tag = "portal",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_portal_link(call: InTenant, Id(id): Id) -> Result<StatusCode, ApiError> {
    call.service()
        .revoke_portal_link(&call.caller(), &call.tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `--public-url` without a trailing `/`, or the scheme and host this request was sent to.
fn base_url(public: Option<&url::Url>, headers: &HeaderMap) -> String {
    if let Some(url) = public {
        return url.as_str().trim_end_matches('/').to_owned();
    }
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or("localhost");
    format!("{}://{host}", if https { "https" } else { "http" })
}
