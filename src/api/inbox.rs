//! The built-in test receiver: `POST /inbox/{token}` keeps what it receives (headers, body,
//! whether the Standard Webhooks signature verified) in the store; the tenant lists it.
//!
//! An inbox has an unguessable token (its URL needs no other authentication; the store
//! finds the inbox by the token's SHA-256 and keeps the token itself sealed) and a signing
//! secret: point an endpoint at the inbox's URL with that secret and every delivery shows
//! up as `valid`; anything signed otherwise shows up as `invalid`. Each inbox keeps its
//! newest [`KEEP`] messages, and at most [`MAX_BODY`] bytes of each body.

use std::collections::BTreeMap;

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, Id, InTenant, List, PageQuery, Query};
use crate::{
    domain::{self, new_id},
    signing,
    store::ops::{Inbox, InboxMessage, Verification},
};

/// Messages kept per inbox (the oldest go first).
pub const KEEP: u32 = 100;
/// Bytes of a body kept (the signature is checked on the whole body).
pub const MAX_BODY: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/inboxes",
            post(create_inbox).get(list_inboxes),
        )
        .route(
            "/v1/tenants/{tenant}/inboxes/{id}",
            get(get_inbox).delete(delete_inbox),
        )
        .route(
            "/v1/tenants/{tenant}/inboxes/{id}/messages",
            get(list_messages),
        )
        .route("/inbox/{token}", post(receive))
}

pub use crate::service::inboxes::CreateInbox;

/// An inbox as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxOut {
    pub id: String,
    pub tenant_id: String,
    /// Where to send: `/inbox/{token}` on this server.
    pub path: String,
    /// `path` on the address this request came to (from its `Host` header).
    pub url: Option<String>,
    /// The secret signatures are verified with.
    pub secret: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl InboxOut {
    pub fn new(i: Inbox, headers: &HeaderMap) -> Self {
        let path = format!("/inbox/{}", i.token);
        let url = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|host| format!("http://{host}{path}"));
        Self {
            id: i.id,
            tenant_id: i.tenant_id,
            path,
            url,
            secret: i.secret,
            description: i.description,
            created_at: i.created_at,
        }
    }
}

/// One received request.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub received_at: DateTime<Utc>,
    pub method: String,
    /// Request headers, lower-case names (`authorization` and `cookie` redacted).
    pub headers: BTreeMap<String, String>,
    /// The body as text, cut at 64 KiB.
    pub body: String,
    pub truncated: bool,
    /// `valid`, `invalid`, `unsigned` or `no_secret`.
    pub verification: Verification,
    /// Why the signature did not verify.
    pub verify_error: Option<String>,
}

impl From<InboxMessage> for MessageOut {
    fn from(m: InboxMessage) -> Self {
        Self {
            id: m.id,
            received_at: m.received_at,
            method: m.method,
            headers: m.headers,
            body: m.body,
            truncated: m.truncated,
            verification: m.verification,
            verify_error: m.verify_error,
        }
    }
}

/// Create an inbox: a test receiver at `/inbox/{token}`.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/inboxes", tag = "inbox",
    params(("tenant" = String, Path)), request_body = Option<CreateInbox>,
    responses((status = 201, body = InboxOut), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_inbox(
    call: InTenant,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<InboxOut>), ApiError> {
    let req: CreateInbox = super::optional_json(&body)?;
    let inbox = call
        .service()
        .create_inbox(&call.caller(), &call.tenant, req)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InboxOut::new(inbox, &headers)),
    ))
}

/// A tenant's inboxes, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/inboxes", tag = "inbox",
    params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = List<InboxOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_inboxes(
    call: InTenant,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<InboxOut>>, ApiError> {
    let page = q.page()?;
    let inboxes = call.state.store.list_inboxes(&call.tenant, &page).await?;
    let data = inboxes
        .into_iter()
        .map(|i| InboxOut::new(i, &headers))
        .collect();
    Ok(axum::Json(List::new(data, &page, |i| &i.id)))
}

/// The inbox `id` of the caller's tenant.
async fn load(call: &InTenant, id: &str) -> Result<Inbox, ApiError> {
    call.state
        .store
        .get_inbox(&call.tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("inbox"))
}

/// An inbox.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/inboxes/{id}", tag = "inbox",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = InboxOut), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_inbox(
    call: InTenant,
    Id(id): Id,
    headers: HeaderMap,
) -> Result<axum::Json<InboxOut>, ApiError> {
    let inbox = load(&call, &id).await?;
    Ok(axum::Json(InboxOut::new(inbox, &headers)))
}

/// Delete an inbox and what it received.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/inboxes/{id}", tag = "inbox",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_inbox(call: InTenant, Id(id): Id) -> Result<StatusCode, ApiError> {
    call.service()
        .delete_inbox(&call.caller(), &call.tenant, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an inbox received, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/inboxes/{id}/messages", tag = "inbox",
    params(("tenant" = String, Path), ("id" = String, Path), PageQuery),
    responses((status = 200, body = List<MessageOut>), (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_messages(
    call: InTenant,
    Id(id): Id,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<List<MessageOut>>, ApiError> {
    let page = q.page()?;
    load(&call, &id).await?;
    let messages = call.state.store.list_inbox_messages(&id, &page).await?;
    let data = messages.into_iter().map(MessageOut::from).collect();
    Ok(axum::Json(List::new(data, &page, |m| &m.id)))
}

#[derive(Debug, Serialize)]
struct Received {
    id: String,
    verification: Verification,
}

/// A new message id. Monotonic within this process, so that messages arriving in the same
/// millisecond still list in the order they came.
fn message_id() -> String {
    static GENERATOR: std::sync::Mutex<ulid::Generator> =
        std::sync::Mutex::new(ulid::Generator::new());
    let next = GENERATOR.lock().ok().and_then(|mut g| g.generate().ok());
    match next {
        Some(ulid) => format!("msg_{ulid}"),
        None => new_id("msg"),
    }
}

/// Text that every store can keep: no NUL characters.
fn storable(s: String) -> String {
    match crate::store::storable(&s) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(o) => o,
    }
}

/// `POST /inbox/{token}`: keeps the request (no authentication: the token is the secret).
async fn receive(
    State(state): State<AppState>,
    axum::extract::Path(token): axum::extract::Path<String>,
    method: Method,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, axum::Json<Received>), ApiError> {
    let inbox = state
        .store
        .find_inbox(&Inbox::hash_token(&token))
        .await?
        .ok_or_else(|| ApiError::not_found("inbox"))?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (verification, verify_error) = match &inbox.secret {
        None => (Verification::NoSecret, None),
        Some(_) if header(signing::HEADER_SIGNATURE).is_none() => (Verification::Unsigned, None),
        Some(secret) => match signing::verify(
            &[secret.as_str()],
            header(signing::HEADER_ID),
            header(signing::HEADER_TIMESTAMP),
            header(signing::HEADER_SIGNATURE),
            &body,
            domain::now().timestamp(),
        ) {
            Ok(()) => (Verification::Valid, None),
            Err(e) => (Verification::Invalid, Some(e.to_string())),
        },
    };
    let kept: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            let value = if name == "authorization" || name == "cookie" {
                "(redacted)".to_owned()
            } else {
                storable(String::from_utf8_lossy(value.as_bytes()).into_owned())
            };
            (name, value)
        })
        .collect();
    let truncated = body.len() > MAX_BODY;
    // A cut that splits a character shows as U+FFFD, like any invalid UTF-8.
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_BODY)]).into_owned();
    let message = InboxMessage {
        id: message_id(),
        inbox_id: inbox.id,
        received_at: domain::now(),
        method: method.to_string(),
        headers: kept,
        body: storable(text),
        truncated,
        verification,
        verify_error,
    };
    state.store.add_inbox_message(&message, KEEP).await?;
    Ok((
        StatusCode::OK,
        axum::Json(Received {
            id: message.id,
            verification,
        }),
    ))
}
