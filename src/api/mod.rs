//! The HTTP API: routing, authentication, errors and extractors shared by the handlers.
//!
//! Handlers read the request, call the services (`crate::service`) or the store, and show
//! the answer; [`InTenant`] checks the caller against the tenant a path names. Every client mistake becomes a
//! 4xx with `{"error": {"code", "message"}}`; internal errors are logged once and the client
//! gets a generic message.

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        DefaultBodyLimit, FromRequest, FromRequestParts, Request,
    },
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::error;
use utoipa::ToSchema;

use crate::{
    config::Config,
    destinations::net::NetworkPolicy,
    ingest::{IngestError, SchemaCache},
    store::{cursor, Page, Store, StoreError},
    wake::Waker,
};

pub(crate) mod audit;
pub(crate) mod deliveries;
pub(crate) mod endpoints;
pub(crate) mod events;
pub mod guard;
pub(crate) mod inbox;
pub mod openapi;
pub(crate) mod ops;
pub(crate) mod portal;
pub(crate) mod sources;
pub(crate) mod tenants;

/// The body of `POST /v1/tenants/{tenant}/events` (public for the fuzz targets).
pub use events::CreateEvent;

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub policy: Arc<NetworkPolicy>,
    pub waker: Waker,
    pub schemas: Arc<SchemaCache>,
    /// Metrics, the dispatcher id and the destination of the test endpoint.
    pub ops: Arc<crate::ops::Ops>,
    /// SHA-256 of the configured admin token, if one is configured.
    admin_hash: Option<[u8; 32]>,
    /// Dashboard sessions logged out and failed dashboard logins.
    pub ui_guard: guard::Guard,
    /// Endpoint tests running now, per tenant (they send outside the dispatcher's slots).
    pub endpoint_tests: ops::TestSlots,
    /// The settings the services' rules read.
    rules: crate::service::Rules,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        policy: Arc<NetworkPolicy>,
        waker: Waker,
        ops: Arc<crate::ops::Ops>,
    ) -> Self {
        let admin_hash = config
            .admin_token
            .as_ref()
            .map(|t| hash_token(secrecy::ExposeSecret::expose_secret(t)));
        let schemas = Arc::new(SchemaCache::new(config.strict_event_types));
        let rules = crate::service::Rules {
            strict_event_types: config.strict_event_types,
            max_endpoints_per_tenant: config.max_endpoints_per_tenant,
            rotation_grace: config.rotation_grace,
            max_attempts: config.retry.max_attempts,
            portal_max_lifetime: config.portal.max_lifetime,
        };
        Self(Arc::new(Inner {
            rules,
            store,
            config,
            policy,
            waker,
            schemas,
            ops,
            admin_hash,
            ui_guard: Default::default(),
            endpoint_tests: Default::default(),
        }))
    }
}

/// The whole HTTP surface of hookrelay: the API, with `dashboard` (the server-rendered
/// pages, [`crate::ui::router`]) behind the same limits, fallbacks and panic guard.
impl AppState {
    /// The services, over this server's store, policy, waker and settings.
    pub fn service(&self) -> crate::service::Service<'_> {
        crate::service::Service {
            store: self.store.as_ref(),
            policy: &self.policy,
            waker: &self.waker,
            sources_changed: &self.ops.sources_changed,
            rules: &self.rules,
        }
    }
}

/// The caller as the services see it.
pub(crate) fn caller<'a>(principal: &Principal, actor: &'a Actor) -> crate::service::Caller<'a> {
    let admin = matches!(principal, Principal::Admin);
    crate::service::Caller {
        actor: &actor.0,
        admin,
        brokers: admin,
    }
}

pub fn router(state: AppState, dashboard: Router<AppState>) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .merge(tenants::router())
        .merge(endpoints::router())
        .merge(events::router())
        .merge(deliveries::router())
        .merge(ops::router())
        .merge(inbox::router())
        .merge(sources::router())
        .merge(audit::router())
        .merge(portal::router())
        .merge(dashboard)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    error!("handler panicked");
    ApiError::internal().into_response()
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    match state.store.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            error!(error = %e, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store cannot be reached",
            )
            .into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method",
    )
}

/// `{"error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `not_found`, `unauthorized`, …
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// 400 for a type outside the strict catalog.
pub(crate) fn unknown_event_type(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "unknown_event_type",
        format!(
            "event type {name:?} is not in the catalog and strict event types are on; create it with POST /v1/event-types first"
        ),
    )
}

impl From<crate::service::Error> for ApiError {
    fn from(e: crate::service::Error) -> Self {
        use crate::service::Error;
        match e {
            Error::Invalid { code, message } => {
                ApiError::new(StatusCode::BAD_REQUEST, code, message)
            }
            Error::NotFound(what) => ApiError::not_found(what),
            Error::Forbidden(m) => ApiError::forbidden(m),
            Error::Conflict(m) => ApiError::conflict(m),
            Error::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            StoreError::UnknownTenant(_) => ApiError::not_found("tenant"),
            StoreError::UnknownEventType(t) => unknown_event_type(&t),
            StoreError::LimitReached(m) => ApiError::new(StatusCode::CONFLICT, "limit_reached", m),
            StoreError::InvalidData(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "schema_validation_failed", m)
            }
            StoreError::Unavailable(_) => {
                error!(error = ?e, "store unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is unavailable; retry later",
                )
            }
            other => {
                error!(error = ?other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(m) => ApiError::invalid(m),
            IngestError::Schema(m) => {
                ApiError::new(StatusCode::BAD_REQUEST, "schema_validation_failed", m)
            }
            IngestError::UnknownTenant(_) => ApiError::not_found("tenant"),
            IngestError::UnknownEventType(t) => unknown_event_type(&t),
            IngestError::Store(s) => s.into(),
        }
    }
}

fn rejection(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            "request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ),
        _ => ApiError::invalid(text),
    }
}

/// JSON body extractor whose rejections are contract errors.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(r) => Err(json_rejection(r)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    rejection(r.status(), r.body_text())
}

/// Query-string extractor whose rejections are contract errors.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r: QueryRejection| rejection(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

/// Path extractor whose rejections are contract errors.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r: PathRejection| rejection(StatusCode::BAD_REQUEST, r.body_text()))
    }
}

/// A JSON body that may be left out: empty means the type's default.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    Admin,
    Tenant(String),
}

/// SHA-256 of a token: tokens are stored and compared only as hashes.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <token> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized("Authorization header must be Bearer <token>"))?;
        let (principal, actor) = principal_for_hash(state, &hash_token(token))
            .await?
            .ok_or_else(|| unauthorized("invalid token"))?;
        parts.extensions.insert(actor);
        Ok(principal)
    }
}

/// Who makes a change, as the audit trail names them: the token's id (`tok_…`), `admin`
/// for the configured admin token, or `system` for hookrelay's own changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl Actor {
    /// hookrelay itself (an endpoint disabled after a 410, …).
    pub fn system() -> Self {
        Self("system".into())
    }
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.extensions.get::<Actor>().is_none() {
            Principal::from_request_parts(parts, state).await?;
        }
        parts
            .extensions
            .get::<Actor>()
            .cloned()
            .ok_or_else(ApiError::internal)
    }
}

/// An authenticated request: the server's state and who calls. What every handler behind a
/// token starts from.
pub struct Call {
    pub state: AppState,
    pub principal: Principal,
    pub actor: Actor,
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let actor = Actor::from_request_parts(parts, state).await?;
        Ok(Self {
            state: state.clone(),
            principal,
            actor,
        })
    }
}

impl Call {
    /// The caller as the services see it.
    pub fn caller(&self) -> crate::service::Caller<'_> {
        caller(&self.principal, &self.actor)
    }

    /// The services, over this server's store, policy, waker and settings.
    pub fn service(&self) -> crate::service::Service<'_> {
        self.state.service()
    }

    /// Checks that the caller may act in `tenant` and that it exists.
    pub async fn tenant(&self, tenant: &str) -> Result<(), ApiError> {
        self.principal.tenant(&self.state, tenant).await
    }
}

/// An authenticated request under `/v1/tenants/{tenant}`: the caller may act in the tenant
/// the path names, and it exists. A tenant token naming another tenant gets 404, exactly as
/// for a tenant that does not exist.
pub struct InTenant {
    /// The tenant's id.
    pub tenant: String,
    pub call: Call,
}

impl FromRequestParts<AppState> for InTenant {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let call = Call::from_request_parts(parts, state).await?;
        let tenant = path_param(parts, state, "tenant").await?;
        call.tenant(&tenant).await?;
        Ok(Self { tenant, call })
    }
}

impl std::ops::Deref for InTenant {
    type Target = Call;
    fn deref(&self) -> &Call {
        &self.call
    }
}

/// The `{id}` of a route's path.
pub struct Id(pub String);

impl FromRequestParts<AppState> for Id {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        path_param(parts, state, "id").await.map(Id)
    }
}

/// One named parameter of the route's path (a route without it is a bug: 500).
async fn path_param(parts: &mut Parts, state: &AppState, name: &str) -> Result<String, ApiError> {
    let Path(mut params) =
        Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state).await?;
    params.remove(name).ok_or_else(ApiError::internal)
}

/// Who holds the token whose SHA-256 is `hash`: the configured admin token, or a stored
/// admin or tenant token, with the [`Actor`] the audit trail names. `None` when no token
/// has that hash.
pub(crate) async fn principal_for_hash(
    state: &AppState,
    hash: &[u8; 32],
) -> Result<Option<(Principal, Actor)>, StoreError> {
    if let Some(admin) = &state.admin_hash {
        if bool::from(admin.ct_eq(hash)) {
            return Ok(Some((Principal::Admin, Actor("admin".into()))));
        }
    }
    Ok(state
        .store
        .find_token(&hex::encode(hash))
        .await?
        .map(|record| {
            let principal = match record.tenant_id {
                None => Principal::Admin,
                Some(t) => Principal::Tenant(t),
            };
            (principal, Actor(record.id))
        }))
}

impl Principal {
    /// Admin-only operations.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => {
                Err(ApiError::forbidden("this operation needs the admin token"))
            }
        }
    }

    /// Checks that the caller may act in `tenant`, without asking the store whether it
    /// exists (for routes whose store call checks that itself).
    pub fn may_act_in(&self, tenant: &str) -> Result<(), ApiError> {
        match self {
            Principal::Tenant(own) if own != tenant => Err(ApiError::not_found("tenant")),
            _ => Ok(()),
        }
    }

    /// Checks that the caller may act in `tenant` and that it exists. A tenant token asking
    /// for another tenant gets 404, exactly as for a tenant that does not exist.
    pub async fn tenant(&self, state: &AppState, tenant: &str) -> Result<(), ApiError> {
        self.may_act_in(tenant)?;
        match state.store.get_tenant(tenant).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("tenant")),
        }
    }
}

/// `limit` and `cursor` of list routes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 250 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub const MAX_LIMIT: u32 = 250;

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let after_id = match &self.cursor {
            None => None,
            Some(c) if c.is_empty() => None,
            Some(c) => Some(cursor::decode(c).ok_or_else(|| ApiError::invalid("invalid cursor"))?),
        };
        Ok(Page { after_id, limit })
    }
}

/// A page of a list: `data`, newest first, and the cursor of the next page (`null` at the end).
#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// Builds a page; `id` names each item so the cursor can point after the last one.
    pub fn new(data: Vec<T>, page: &Page, id: impl Fn(&T) -> &str) -> Self {
        let next_cursor = if data.len() == page.limit as usize {
            data.last().map(|last| cursor::encode(id(last)))
        } else {
            None
        };
        Self { data, next_cursor }
    }
}

/// A new random admin token.
pub fn generate_admin_token() -> String {
    crate::service::tenants::generate_token("a")
}
