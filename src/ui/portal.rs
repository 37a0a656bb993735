//! The consumer portal at `/portal`: a tenant's customers manage their own webhooks, from a
//! link the operator made (`POST /v1/tenants/{tenant}/portal-links`).
//!
//! Opening the link (`/portal/open/<token>`) sets a cookie holding the link's token and
//! goes to the endpoints. Every request looks the link up again, so an expired or revoked
//! link ends its sessions at once, in every process. A session sees one tenant only:
//! every read names the link's tenant, and another tenant's ids are not found. It never
//! reaches the dashboard (`/ui`), tokens, sources, inboxes or the audit trail.
//!
//! Every form carries a CSRF token derived from the link's token and is refused from
//! another origin; a read-only link refuses every form. Endpoint URLs go through the same
//! network rules as the API's; broker destinations only when the link allows them; event
//! types only from the link's list when it has one.
//!
//! Embedding: `--portal-frame-ancestors` names the origins whose pages may frame the
//! portal (`frame-ancestors`); the cookie is `SameSite=None; Secure; Partitioned` over
//! https (and on loopback, which browsers treat as secure), so it works inside their
//! iframe. `?embed=1` on the link drops the portal's own header for a page that has one.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{
    badge,
    endpoints::{parse_time, rate_text, recent},
    opt_time, page_after, same, same_origin, time, UiError,
};
use crate::{
    api::{
        endpoints::{CreateEndpoint, ReplayRequest, UpdateEndpoint},
        ops::{run_test, TEST_EVENT_TYPE},
        AppState, Path,
    },
    destinations::is_broker_url,
    domain::{DeliveryFormat, DeliveryStatus, Endpoint, EventType},
    service::{
        portal::{portal_actor, Refused},
        Caller,
    },
    store::{ops::PortalLink, DeliveryFilter, Page},
};

const COOKIE: &str = "hr_portal";

/// The portal's routes, all under `/portal`.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/portal", get(|| async { Redirect::to("/portal/endpoints") }))
        .route("/portal/open/{token}", get(open))
        .route("/portal/theme.css", get(theme))
        .route("/portal/endpoints", get(endpoints).post(create))
        .route("/portal/endpoints/{id}", get(endpoint).post(update))
        .route("/portal/endpoints/{id}/enabled", post(set_enabled))
        .route("/portal/endpoints/{id}/delete", post(delete))
        .route("/portal/endpoints/{id}/secret", post(reveal))
        .route("/portal/endpoints/{id}/rotate-secret", post(rotate))
        .route("/portal/endpoints/{id}/test", post(test))
        .route("/portal/endpoints/{id}/replay", post(replay))
        .route("/portal/deliveries", get(deliveries))
        .route("/portal/deliveries/{id}", get(delivery))
        .route("/portal/deliveries/{id}/retry", post(retry))
        .route("/portal/event-types", get(event_types))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            |State(state): State<AppState>, response: Response| async move {
                headers(&state, response)
            },
        ))
}

/// The portal's security headers: the dashboard's, except that the origins of
/// `--portal-frame-ancestors` may frame it.
fn headers(state: &AppState, mut response: Response) -> Response {
    let ancestors = &state.config.portal.frame_ancestors;
    let frame = if ancestors.is_empty() {
        "'none'".to_owned()
    } else {
        ancestors.join(" ")
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors {frame}; base-uri 'none'"
    );
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if ancestors.is_empty() {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: browsers then send `Origin: null` with forms.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

// ---------------------------------------------------------------------------------------
// Errors.

/// An error page of the portal: [`UiError`]'s, leading back to the portal.
pub struct PortalError(UiError);

type PortalResult = Result<Response, PortalError>;

impl From<UiError> for PortalError {
    fn from(e: UiError) -> Self {
        Self(e)
    }
}

impl From<crate::store::StoreError> for PortalError {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.into())
    }
}

impl From<crate::service::Error> for PortalError {
    fn from(e: crate::service::Error) -> Self {
        Self(e.into())
    }
}

impl From<crate::api::ApiError> for PortalError {
    fn from(e: crate::api::ApiError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for PortalError {
    fn into_response(self) -> Response {
        self.0.page(
            "",
            Some("portal-error"),
            ("/portal/endpoints", "Back to the endpoints"),
        )
    }
}

// ---------------------------------------------------------------------------------------
// The session.

/// A portal session: the link it was opened with, checked on this request.
pub struct Portal {
    pub link: PortalLink,
    actor: String,
    /// Opened with `?embed=1`: the page has no header of its own.
    pub embedded: bool,
    csrf: String,
}

impl Portal {
    fn new(link: PortalLink, token: &str, embedded: bool) -> Self {
        let digest = Sha256::digest(format!("portal-csrf\0{token}").as_bytes());
        Self {
            actor: portal_actor(&link),
            link,
            embedded,
            csrf: hex::encode(&digest[..16]),
        }
    }

    fn tenant(&self) -> &str {
        &self.link.tenant_id
    }

    /// The caller the services see: the link (`portal:<link id>` in the audit trail).
    fn caller(&self) -> Caller<'_> {
        Caller {
            actor: &self.actor,
            admin: false,
            brokers: self.link.allow_brokers,
        }
    }

    /// Whether this session may see `ep`: broker endpoints only when the link allows
    /// brokers.
    fn shows(&self, ep: &Endpoint) -> bool {
        self.link.allow_brokers || !is_broker_url(&ep.url)
    }

    /// Whether this session may see events of `event_type`: all, or the link's list (and
    /// the portal's own tests).
    fn sees_type(&self, event_type: &str) -> bool {
        event_type == TEST_EVENT_TYPE
            || self
                .link
                .event_types
                .as_ref()
                .is_none_or(|allowed| allowed.iter().any(|t| t == event_type))
    }

    /// Records what the session did in the audit trail (as `portal:<link id>`).
    async fn audit(&self, state: &AppState, action: &str, target: &str) {
        state
            .service()
            .audit(
                &self.caller(),
                Some(self.tenant()),
                action,
                Some(target),
                serde_json::json!({}),
            )
            .await;
    }

    fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }

    /// Whether forms are shown.
    fn writable(&self) -> bool {
        !self.link.read_only
    }

    /// The event types this session may subscribe endpoints to, from the catalog.
    fn allowed<'a>(&self, catalog: &'a [EventType]) -> Vec<&'a EventType> {
        catalog.iter().filter(|t| self.sees_type(&t.name)).collect()
    }
}

/// The refusal page of a link that does not open the portal (or of no session).
fn refused(why: Refused) -> Response {
    let status = match why {
        Refused::Unknown | Refused::Missing => StatusCode::UNAUTHORIZED,
        Refused::Expired | Refused::Revoked => StatusCode::FORBIDDEN,
    };
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Portal link refused" } (super::stylesheet()) }
            body.error {
                main id="portal-refused" {
                    h1 { "This link does not open the portal" }
                    p.message { (why.message()) }
                }
            }
        }
    };
    (status, body).into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<(bool, String)> {
    let value = super::cookie(headers, COOKIE)?;
    let (mode, token) = value.split_once('.')?;
    Some((mode == "e", token.to_owned()))
}

impl FromRequestParts<AppState> for Portal {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let (embedded, token) =
            session_cookie(&parts.headers).ok_or_else(|| refused(Refused::Missing))?;
        match state.service().portal_link(&token).await {
            Ok(Ok(link)) => Ok(Portal::new(link, &token, embedded)),
            Ok(Err(why)) => Err(refused(why)),
            Err(e) => Err(PortalError::from(e).into_response()),
        }
    }
}

/// A POSTed portal form: its session, CSRF token, origin and the link's permission to
/// change things checked; the fields as sent (repeated names kept).
pub struct PortalForm(pub Portal, pub Fields);

/// A form's fields in order.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// Every non-empty value of `name`.
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

impl FromRequest<AppState> for PortalForm {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let portal = Portal::from_request_parts(&mut parts, state).await?;
        if portal.link.read_only {
            return Err(
                PortalError(UiError::forbidden("this portal link is read-only")).into_response(),
            );
        }
        if !same_origin(&parts.headers) {
            return Err(
                PortalError(UiError::forbidden("cross-site request refused")).into_response(),
            );
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = Fields(url::form_urlencoded::parse(&bytes).into_owned().collect());
        if !fields.get("csrf").is_some_and(|c| same(&c, &portal.csrf)) {
            return Err(PortalError(UiError::forbidden(
                "invalid or missing CSRF token; reload the page",
            ))
            .into_response());
        }
        Ok(PortalForm(portal, fields))
    }
}

/// Whether the browser treats the request's origin as secure: https (directly or through
/// a proxy that says so) or loopback.
fn secure_context(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.split_once(']'))
        .map_or_else(|| host.split(':').next().unwrap_or(""), |(h, _)| h);
    super::https(headers) || matches!(name, "localhost" | "127.0.0.1" | "::1")
}

#[derive(Deserialize)]
struct OpenQuery {
    embed: Option<String>,
}

/// Opens a link: sets the session cookie and goes to the endpoints.
async fn open(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<OpenQuery>,
    headers: HeaderMap,
) -> Response {
    let link = match state.service().portal_link(&token).await {
        Ok(Ok(link)) => link,
        Ok(Err(why)) => return refused(why),
        Err(e) => return PortalError::from(e).into_response(),
    };
    let embedded = q.embed.is_some_and(|e| e != "0");
    state.service().portal_link_opened(&link, embedded).await;
    let max_age = (link.expires_at - crate::domain::now())
        .num_seconds()
        .max(1);
    // Inside another site's iframe the cookie is third-party: it needs `SameSite=None`,
    // which browsers take only with `Secure`. A full page keeps `Lax`.
    let site = match (embedded, secure_context(&headers)) {
        (true, true) => "SameSite=None; Secure; Partitioned",
        (false, true) => "SameSite=Lax; Secure",
        (_, false) => "SameSite=Lax",
    };
    let mode = if embedded { "e" } else { "f" };
    let cookie =
        format!("{COOKIE}={mode}.{token}; Path=/portal; HttpOnly; {site}; Max-Age={max_age}");
    let mut resp = Redirect::to("/portal/endpoints").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// The operator's accent colour.
async fn theme(State(state): State<AppState>) -> Response {
    let css = format!(
        ":root {{ --accent: {accent}; }}\n\
         body.portal header.top {{ background: var(--accent); }}\n\
         body.portal header.top nav a {{ color: #fff; }}\n\
         body.portal header.top nav a.current {{ background: rgba(0, 0, 0, 0.25); }}\n\
         body.portal.embedded {{ background: transparent; }}\n\
         body.portal.embedded header.top .brand {{ display: none; }}\n\
         body.portal fieldset {{ border: 1px solid var(--line); border-radius: 6px; }}\n\
         body.portal label.type {{ flex-direction: row; gap: 6px; align-items: baseline; }}\n",
        accent = state.config.portal.accent
    );
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        css,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Layout.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Endpoints,
    Deliveries,
    EventTypes,
}

fn layout(state: &AppState, p: &Portal, nav: Nav, title: &str, content: Markup) -> Markup {
    let name = &state.config.portal.name;
    let items = [
        (Nav::Endpoints, "Endpoints", "/portal/endpoints"),
        (Nav::Deliveries, "Deliveries", "/portal/deliveries"),
        (Nav::EventTypes, "Event types", "/portal/event-types"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (super::head(title, name, html! {
                link rel="stylesheet" href=(format!("/portal/theme.css?v={}", env!("CARGO_PKG_VERSION")));
            }))
            body.portal.embedded[p.embedded] id="portal" {
                header.top {
                    span.brand id="portal-name" { (name) }
                    nav {
                        @for (item, label, path) in items {
                            a.current[item == nav] href=(path) { (label) }
                        }
                    }
                    @if p.link.read_only { span.who id="read-only" { "read-only" } }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Endpoints.

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
}

async fn endpoints(
    State(state): State<AppState>,
    p: Portal,
    Query(q): Query<AfterQuery>,
) -> PortalResult {
    endpoints_page(&state, &p, q.after.as_deref(), None, StatusCode::OK).await
}

async fn endpoints_page(
    state: &AppState,
    p: &Portal,
    after: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> PortalResult {
    let page = page_after(after)?;
    let fetched = state.store.list_endpoints(p.tenant(), &page).await?;
    let last = fetched.last().map(|e| e.id.clone());
    let full = fetched.len();
    let list: Vec<Endpoint> = fetched.into_iter().filter(|e| p.shows(e)).collect();
    let recents = try_join_all(list.iter().map(|e| recent(state, p.tenant(), e))).await?;
    let catalog = state.store.list_event_types().await?;
    let content = html! {
        @if let Some(e) = &error { p.flash.bad id="error" { (e) } }
        table.list id="endpoints" {
            thead { tr {
                th { "URL" } th { "Event types" } th { "Status" } th { "Health" }
                th { "Success (recent)" } th { "Last attempt" }
            } }
            tbody {
                @for (ep, r) in list.iter().zip(&recents) {
                    tr {
                        td { a href=(format!("/portal/endpoints/{}", ep.id)) { (crate::secrets::redact_url(&ep.url)) }
                             @if let Some(d) = &ep.description { br; small.id { (d) } } }
                        td { (types_text(ep)) }
                        td { @if ep.enabled { (badge("enabled")) } @else { (badge("disabled")) } }
                        td { (badge(ep.breaker.state.as_str())) }
                        td { (rate_text(r)) }
                        td { (opt_time(r.last_attempt)) }
                    }
                }
                @if list.is_empty() { tr { td colspan="6" { "No endpoints yet." } } }
            }
        }
        (super::pager(full, last.as_deref(), "/portal/endpoints", ""))
        @if p.writable() {
            section.card {
                h2 { "Add an endpoint" }
                form method="post" action="/portal/endpoints" id="create-endpoint" {
                    (p.csrf_field())
                    (endpoint_fields(p, &catalog, None))
                    button type="submit" id="create-endpoint-submit" { "Add endpoint" }
                }
            }
        }
    };
    let body = layout(state, p, Nav::Endpoints, "Endpoints", content);
    Ok((status, body).into_response())
}

fn types_text(ep: &Endpoint) -> String {
    if ep.event_types.is_empty() {
        "all".into()
    } else {
        ep.event_types.join(", ")
    }
}

/// The fields of the endpoint form: URL, description, event types (from the catalog, with
/// their descriptions and schemas), payload filter and format.
fn endpoint_fields(p: &Portal, catalog: &[EventType], ep: Option<&Endpoint>) -> Markup {
    let allowed = p.allowed(catalog);
    let chosen = |name: &str| ep.is_some_and(|e| e.event_types.iter().any(|t| t == name));
    let filter = ep
        .and_then(|e| e.routing.spec.filter.as_ref())
        .map(|f| serde_json::to_string_pretty(f).unwrap_or_default())
        .unwrap_or_default();
    let format = ep.map(|e| e.format).unwrap_or_default();
    html! {
        label { "URL " input type="url" name="url" id="endpoint-url" required size="50"
            maxlength="2048" placeholder="https://example.com/webhooks" value=[ep.map(|e| crate::secrets::redact_url(&e.url))]; }
        label { "Description " input type="text" name="description" id="endpoint-description"
            maxlength="1024" size="50" value=[ep.and_then(|e| e.description.as_deref())]; }
        fieldset id="endpoint-types" {
            legend {
                "Event types"
                @if p.link.event_types.is_none() { " (none chosen: every event type)" }
            }
            @for t in &allowed {
                label.type {
                    input type="checkbox" name="event_types" value=(t.name) checked[chosen(&t.name)];
                    code { (t.name) }
                    @if let Some(d) = &t.description { " — " (d) }
                }
                @if let Some(s) = &t.schema {
                    details { summary { "schema" } pre.excerpt { (serde_json::to_string_pretty(s).unwrap_or_default()) } }
                }
            }
            @if allowed.is_empty() { p.note { "The catalog has no event types yet." } }
        }
        label { "Payload filter (JSON, optional) "
            textarea name="filter" id="endpoint-filter" rows="3" cols="50" maxlength="16384"
                placeholder=r#"{"data.amount": {"$gte": 100}}"# { (filter) } }
        label { "Format " select name="format" id="endpoint-format" {
            option value="standard-webhooks" selected[format == DeliveryFormat::StandardWebhooks] { "Standard Webhooks" }
            option value="community" selected[format == DeliveryFormat::Community] { "X-Webhook-Signature: sha256=" }
        } }
    }
}

/// What the endpoint form says, checked against the link: event types from its list, and
/// only http(s) URLs unless it allows brokers.
struct EndpointInput {
    url: String,
    description: Option<String>,
    event_types: Vec<String>,
    filter: Option<serde_json::Value>,
    format: DeliveryFormat,
}

fn endpoint_input(p: &Portal, f: &Fields) -> Result<EndpointInput, String> {
    let url = f.get("url").ok_or("Enter the endpoint's URL.")?;
    let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
    if !p.link.allow_brokers && !matches!(scheme.as_str(), "http" | "https") {
        return Err("The URL must start with https:// or http://.".into());
    }
    let event_types = f.all("event_types");
    if let Some(t) = event_types.iter().find(|t| !p.sees_type(t)) {
        return Err(format!("The event type {t} cannot be chosen here."));
    }
    let filter = match f.get("filter") {
        None => None,
        Some(text) => Some(
            serde_json::from_str(&text)
                .map_err(|e| format!("The payload filter is not valid JSON: {e}"))?,
        ),
    };
    let format = match f.get("format") {
        None => DeliveryFormat::default(),
        Some(s) => DeliveryFormat::parse(&s).ok_or("Unknown format.")?,
    };
    Ok(EndpointInput {
        url,
        description: f.get("description"),
        event_types,
        filter,
        format,
    })
}

/// With a link limited to some event types, an endpoint must subscribe to at least one
/// (none would mean every type).
fn at_least_one(p: &Portal, input: EndpointInput) -> Result<EndpointInput, String> {
    if p.link.event_types.is_some() && input.event_types.is_empty() {
        return Err("Choose at least one event type.".into());
    }
    Ok(input)
}

/// A service's refusal as the form's error, a server failure as an error page.
fn form_error(e: crate::service::Error) -> Result<(StatusCode, String), PortalError> {
    let e = crate::api::ApiError::from(e);
    if e.status.is_client_error() {
        Ok((e.status, e.message))
    } else {
        Err(e.into())
    }
}

async fn create(State(state): State<AppState>, PortalForm(p, f): PortalForm) -> PortalResult {
    let input = match endpoint_input(&p, &f).and_then(|i| at_least_one(&p, i)) {
        Ok(i) => i,
        Err(m) => return endpoints_page(&state, &p, None, Some(m), StatusCode::BAD_REQUEST).await,
    };
    let body = CreateEndpoint {
        url: input.url,
        event_types: Some(input.event_types),
        secret: None,
        signing_scheme: None,
        format: Some(input.format),
        description: input.description,
        rate_limit: None,
        rate_limit_period: None,
        max_attempts: None,
        headers: None,
        enabled: None,
        filter: input.filter,
        ordering: None,
        transform: None,
        oauth2: None,
        tls: None,
        proxy: None,
        signature_headers: None,
    };
    match state
        .service()
        .create_endpoint(&p.caller(), p.tenant(), body)
        .await
    {
        Ok(ep) => Ok(Redirect::to(&format!("/portal/endpoints/{}", ep.id)).into_response()),
        Err(e) => {
            let (status, message) = form_error(e)?;
            endpoints_page(&state, &p, None, Some(message), status).await
        }
    }
}

async fn load(state: &AppState, p: &Portal, id: &str) -> Result<Endpoint, PortalError> {
    state
        .store
        .get_endpoint(p.tenant(), id)
        .await?
        .filter(|ep| p.shows(ep))
        .ok_or_else(|| UiError::not_found("endpoint").into())
}

async fn endpoint(
    State(state): State<AppState>,
    p: Portal,
    Path(id): Path<String>,
) -> PortalResult {
    endpoint_page(&state, &p, &id, None, StatusCode::OK).await
}

/// Deliveries shown on an endpoint's page.
const RECENT_DELIVERIES: u32 = 10;

async fn endpoint_page(
    state: &AppState,
    p: &Portal,
    id: &str,
    notice: Option<Markup>,
    status: StatusCode,
) -> PortalResult {
    let ep = load(state, p, id).await?;
    let recent_filter = DeliveryFilter {
        endpoint_id: Some(ep.id.clone()),
        page: Page {
            after_id: None,
            limit: RECENT_DELIVERIES,
        },
        ..Default::default()
    };
    let (stats, catalog, recent_deliveries) = tokio::try_join!(
        crate::ops::endpoint_stats::read(state.store.as_ref(), &ep.id),
        state.store.list_event_types(),
        state.store.list_deliveries(p.tenant(), &recent_filter),
    )?;
    let rate = |v: Option<f64>| {
        v.map(|v| format!("{:.1} %", v * 100.0))
            .unwrap_or_else(|| "–".into())
    };
    let ms = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ms"))
            .unwrap_or_else(|| "–".into())
    };
    let base = format!("/portal/endpoints/{}", ep.id);
    let test_types: Vec<&str> = std::iter::once(TEST_EVENT_TYPE)
        .chain(p.allowed(&catalog).iter().map(|t| t.name.as_str()))
        .collect();
    let content = html! {
        @if let Some(n) = notice { (n) }
        section.card id="endpoint-health" {
            h2 { "Health" }
            table.kv {
                tr { th { "Status" } td id="endpoint-enabled" {
                    @if ep.enabled { (badge("enabled")) } @else { (badge("disabled")) " " (ep.disabled_reason.as_deref().unwrap_or("")) } } }
                tr { th { "Circuit breaker" } td id="endpoint-breaker" { (badge(ep.breaker.state.as_str())) " "
                    (ep.breaker.consecutive_failures) " consecutive failures"
                    @if let Some(t) = ep.breaker.open_until { " · next try at " (time(t)) } } }
                tr { th { "Success rate" } td id="endpoint-success" {
                    "last hour " (rate(stats.last_hour.success_rate)) " (" (stats.last_hour.attempts) " attempts) · last 24 hours "
                    (rate(stats.last_24_hours.success_rate)) " (" (stats.last_24_hours.attempts) " attempts)" } }
                tr { th { "Latency (24 h)" } td { "p50 " (ms(stats.last_24_hours.latency_ms.p50)) " · p95 " (ms(stats.last_24_hours.latency_ms.p95)) } }
                tr { th { "Last success" } td { (opt_time(stats.last_success_at)) } }
                tr { th { "Last failure" } td { (opt_time(stats.last_failure_at))
                    @if let Some(e) = &stats.last_error { " (" (e) ")" } } }
            }
        }
        section.card id="endpoint-settings" {
            h2 { "Settings" }
            @if p.writable() {
                form method="post" action=(base) id="update-endpoint" {
                    (p.csrf_field())
                    (endpoint_fields(p, &catalog, Some(&ep)))
                    button type="submit" id="update-endpoint-submit" { "Save" }
                }
            } @else {
                table.kv {
                    tr { th { "URL" } td { (crate::secrets::redact_url(&ep.url)) } }
                    tr { th { "Description" } td { (ep.description.as_deref().unwrap_or("")) } }
                    tr { th { "Event types" } td { (types_text(&ep)) } }
                    tr { th { "Format" } td { (ep.format.as_str()) } }
                }
            }
        }
        section.card id="endpoint-secret-card" {
            h2 { "Signing secret" }
            @if p.writable() {
                div.actions {
                    form method="post" action=(format!("{base}/secret")) {
                        (p.csrf_field())
                        button type="submit" id="reveal-secret" { "Reveal secret" }
                    }
                    form method="post" action=(format!("{base}/rotate-secret")) {
                        (p.csrf_field())
                        button type="submit" id="rotate-secret" { "Rotate secret" }
                    }
                }
            } @else {
                p.note { "This link is read-only: the secret is not shown." }
            }
            (snippets(&ep))
        }
        @if p.writable() {
            section.card.actions id="endpoint-actions" {
                h2 { "Actions" }
                form.inline method="post" action=(format!("{base}/test")) id="test-form" {
                    (p.csrf_field())
                    label { "Event type " select name="event_type" id="test-type" {
                        @for t in &test_types { option value=(t) { (t) } }
                    } }
                    button type="submit" id="send-test" { "Send test event" }
                }
                (super::enabled_form(&format!("{base}/enabled"), p.csrf_field(), ep.enabled))
                (super::replay_form(&format!("{base}/replay"), p.csrf_field(), "Replay"))
                form method="post" action=(format!("{base}/delete")) {
                    (p.csrf_field())
                    button type="submit" id="delete-endpoint" { "Delete endpoint" }
                }
            }
        }
        section.card {
            h2 { "Recent deliveries" }
            (delivery_table(&recent_deliveries))
            p { a href=(format!("/portal/deliveries?endpoint={}", ep.id)) id="endpoint-deliveries" { "All deliveries to this endpoint →" } }
        }
    };
    let title = crate::secrets::redact_url(&ep.url).into_owned();
    Ok((status, layout(state, p, Nav::Endpoints, &title, content)).into_response())
}

/// How the receiver verifies what this endpoint gets, in Python, Node and Go.
fn snippets(ep: &Endpoint) -> Markup {
    let public_key = match ep.format {
        DeliveryFormat::StandardWebhooks => crate::signing::public_key(&ep.secret),
        DeliveryFormat::Community => None,
    };
    let (python, node, go) = match ep.format {
        DeliveryFormat::StandardWebhooks => (
            "# pip install standardwebhooks\n\
             import os\n\
             from standardwebhooks.webhooks import Webhook\n\n\
             wh = Webhook(os.environ[\"WEBHOOK_SECRET\"])  # whsec_…\n\
             # raises if the signature or timestamp is wrong\n\
             payload = wh.verify(request_body_bytes, request_headers)",
            "// npm install standardwebhooks\n\
             import { Webhook } from \"standardwebhooks\";\n\n\
             const wh = new Webhook(process.env.WEBHOOK_SECRET); // whsec_…\n\
             // throws if the signature or timestamp is wrong\n\
             const payload = wh.verify(rawBody, headers);",
            "// go get github.com/standard-webhooks/standard-webhooks/libraries/go\n\
             import standardwebhooks \"github.com/standard-webhooks/standard-webhooks/libraries/go\"\n\n\
             wh, err := standardwebhooks.NewWebhook(os.Getenv(\"WEBHOOK_SECRET\")) // whsec_…\n\
             // an error if the signature or timestamp is wrong\n\
             err = wh.Verify(body, r.Header)",
        ),
        DeliveryFormat::Community => (
            "import hashlib, hmac, os\n\n\
             expected = \"sha256=\" + hmac.new(os.environ[\"WEBHOOK_SECRET\"].encode(),\n\
             \x20                                request_body_bytes, hashlib.sha256).hexdigest()\n\
             ok = hmac.compare_digest(expected, headers[\"X-Webhook-Signature\"])",
            "import { createHmac, timingSafeEqual } from \"node:crypto\";\n\n\
             const expected = \"sha256=\" + createHmac(\"sha256\", process.env.WEBHOOK_SECRET)\n\
             \x20 .update(rawBody).digest(\"hex\");\n\
             const given = req.headers[\"x-webhook-signature\"] ?? \"\";\n\
             const ok = given.length === expected.length &&\n\
             \x20 timingSafeEqual(Buffer.from(given), Buffer.from(expected));",
            "mac := hmac.New(sha256.New, []byte(os.Getenv(\"WEBHOOK_SECRET\")))\n\
             mac.Write(body)\n\
             expected := \"sha256=\" + hex.EncodeToString(mac.Sum(nil))\n\
             ok := hmac.Equal([]byte(expected), []byte(r.Header.Get(\"X-Webhook-Signature\")))",
        ),
    };
    html! {
        details id="verify-snippets" {
            summary { "Verify deliveries in your receiver" }
            @if let Some(key) = public_key {
                p.note { "This endpoint signs with Ed25519: verify with its public key "
                    code { (key) } "." }
            }
            h3 { "Python" } pre id="snippet-python" { (python) }
            h3 { "Node" } pre id="snippet-node" { (node) }
            h3 { "Go" } pre id="snippet-go" { (go) }
        }
    }
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, f): PortalForm,
) -> PortalResult {
    let ep = load(&state, &p, &id).await?;
    let catalog = state.store.list_event_types().await?;
    let input = endpoint_input(&p, &f)
        .map(|i| keep_hidden_types(&p, &catalog, &ep, i))
        .and_then(|i| at_least_one(&p, i))
        .and_then(|i| keep_operator_url(&ep, i));
    let input = match input {
        Ok(i) => i,
        Err(m) => {
            let notice = Some(error_notice(&m));
            return endpoint_page(&state, &p, &id, notice, StatusCode::BAD_REQUEST).await;
        }
    };
    let body = UpdateEndpoint {
        url: (input.url != ep.url).then_some(input.url),
        event_types: Some(input.event_types),
        description: Some(input.description),
        filter: Some(input.filter),
        format: Some(input.format),
        ..Default::default()
    };
    match state
        .service()
        .update_endpoint(&p.caller(), p.tenant(), &id, body)
        .await
    {
        Ok(_) => {
            let notice = html! { p.flash.good id="saved" { "Saved." } };
            endpoint_page(&state, &p, &id, Some(notice), StatusCode::OK).await
        }
        Err(e) => {
            let (status, message) = form_error(e)?;
            endpoint_page(&state, &p, &id, Some(error_notice(&message)), status).await
        }
    }
}

/// The event types the form cannot show (wildcards, names not in the catalog, types
/// outside the link's list) stay subscribed: saving the form never widens or narrows what
/// the operator set.
fn keep_hidden_types(
    p: &Portal,
    catalog: &[EventType],
    ep: &Endpoint,
    mut input: EndpointInput,
) -> EndpointInput {
    let offered = p.allowed(catalog);
    for t in &ep.event_types {
        if !offered.iter().any(|o| &o.name == t) && !input.event_types.contains(t) {
            input.event_types.push(t.clone());
        }
    }
    input
}

/// The URL as stored when the form sends it back as shown (its password as `***`); a new
/// one only for an endpoint without the operator's headers, credentials or proxy, which
/// would otherwise go to wherever the customer points it.
fn keep_operator_url(ep: &Endpoint, mut input: EndpointInput) -> Result<EndpointInput, String> {
    if input.url == crate::secrets::redact_url(&ep.url) || input.url == ep.url {
        input.url = ep.url.clone();
        return Ok(input);
    }
    let operator_set =
        !ep.headers.is_empty() || ep.oauth2.is_some() || ep.tls.is_some() || ep.proxy.is_some();
    if operator_set {
        return Err(
            "This endpoint has settings from your provider (headers, credentials or a \
                    proxy): ask them to change its URL."
                .into(),
        );
    }
    Ok(input)
}

fn error_notice(message: &str) -> Markup {
    html! { p.flash.bad id="error" { (message) } }
}

async fn set_enabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, f): PortalForm,
) -> PortalResult {
    load(&state, &p, &id).await?;
    let enabled = f.get("enabled").as_deref() == Some("true");
    state
        .service()
        .update_endpoint(
            &p.caller(),
            p.tenant(),
            &id,
            UpdateEndpoint {
                enabled: Some(enabled),
                ..Default::default()
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/portal/endpoints/{id}")).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, _): PortalForm,
) -> PortalResult {
    load(&state, &p, &id).await?;
    state
        .service()
        .delete_endpoint(&p.caller(), p.tenant(), &id)
        .await?;
    Ok(Redirect::to("/portal/endpoints").into_response())
}

async fn reveal(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, _): PortalForm,
) -> PortalResult {
    let ep = load(&state, &p, &id).await?;
    p.audit(&state, "endpoint.secret_revealed", &id).await;
    let notice = html! {
        section.card.flash.good id="secret-shown" {
            "Signing secret: " code id="portal-secret" { (ep.secret) }
            @if let Some(t) = ep.previous_secret_expires_at.filter(|t| *t > crate::domain::now()) {
                br; "The previous secret also signs until " (time(t)) "."
            }
        }
    };
    endpoint_page(&state, &p, &id, Some(notice), StatusCode::OK).await
}

async fn rotate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, _): PortalForm,
) -> PortalResult {
    load(&state, &p, &id).await?;
    let ep = state
        .service()
        .rotate_secret(&p.caller(), p.tenant(), &id, Default::default())
        .await?;
    let notice = html! {
        section.card.flash.good id="rotated" {
            "Secret rotated. The new secret is " code id="portal-secret" { (ep.secret) }
            @if let Some(t) = ep.previous_secret_expires_at { "; the previous one keeps signing until " (time(t)) }
            "."
        }
    };
    endpoint_page(&state, &p, &id, Some(notice), StatusCode::OK).await
}

async fn test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, f): PortalForm,
) -> PortalResult {
    let catalog = state.store.list_event_types().await?;
    let event_type = f
        .get("event_type")
        .unwrap_or_else(|| TEST_EVENT_TYPE.to_owned());
    let allowed =
        event_type == TEST_EVENT_TYPE || p.allowed(&catalog).iter().any(|t| t.name == event_type);
    if !allowed {
        return Err(UiError::bad_request(format!(
            "the event type {event_type} cannot be sent here"
        ))
        .into());
    }
    load(&state, &p, &id).await?;
    // Marked as a test in its data: a receiver can tell it from a real event of the type.
    let data = serde_json::json!({
        "test": true,
        "message": format!("Test event from {}", state.config.portal.name),
        "endpoint_id": id,
    });
    let r = run_test(&state, p.tenant(), &id, Some(data), None, &event_type).await?;
    p.audit(&state, "endpoint.tested", &id).await;
    let ok = r.status == DeliveryStatus::Delivered;
    let notice = html! {
        section.card.flash.good[ok].bad[!ok] id="test-result" {
            h2 { "Test " code { (event_type) } ": " (r.status.as_str()) }
            table.kv {
                tr { th { "HTTP status" } td id="test-status" { (r.status_code.map(|c| c.to_string()).unwrap_or_else(|| "no answer".into())) } }
                tr { th { "Latency" } td id="test-latency" { (r.latency_ms) " ms" } }
                tr { th { "Delivery" } td { a id="test-delivery" href=(format!("/portal/deliveries/{}", r.delivery_id)) { (r.delivery_id) } } }
                @if let Some(resp) = &r.response { tr { th { "Response" } td { pre.excerpt id="test-response" { (resp) } } } }
                @if let Some(e) = &r.error { tr { th { "Error" } td { (e) } } }
            }
        }
    };
    endpoint_page(&state, &p, &id, Some(notice), StatusCode::OK).await
}

async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, f): PortalForm,
) -> PortalResult {
    let status = super::parse_status(f.get("status").as_deref())?;
    let request = ReplayRequest {
        status,
        since: parse_time(&f.get("since"))?,
        until: parse_time(&f.get("until"))?,
    };
    let ep = load(&state, &p, &id).await?;
    // With a limited link, only an endpoint of the link's types: a replay must not send
    // events the link does not show.
    let limited = p.link.event_types.is_some()
        && (ep.event_types.is_empty() || !ep.event_types.iter().all(|t| p.sees_type(t)));
    if limited {
        let m = "This endpoint also receives event types this link does not show: ask your \
                 provider to replay it.";
        return endpoint_page(
            &state,
            &p,
            &id,
            Some(error_notice(m)),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let replayed = state
        .service()
        .replay_endpoint(p.tenant(), &id, request)
        .await?;
    p.audit(&state, "endpoint.replayed", &id).await;
    let notice = html! {
        p.flash.good id="replayed" { (replayed) " deliveries replayed; they are due now." }
    };
    endpoint_page(&state, &p, &id, Some(notice), StatusCode::OK).await
}

// ---------------------------------------------------------------------------------------
// Deliveries.

/// A delivery of the link's tenant that this session may see (with its event): not one to
/// a broker endpoint the link does not show, nor of an event type outside its list.
async fn visible_delivery(
    state: &AppState,
    p: &Portal,
    id: &str,
) -> Result<(crate::domain::Delivery, Option<crate::domain::Event>), PortalError> {
    let not_found = || PortalError(UiError::not_found("delivery"));
    let d = state
        .store
        .get_delivery(p.tenant(), id)
        .await?
        .ok_or_else(not_found)?;
    let (event, endpoint) = tokio::try_join!(
        state.store.get_event(p.tenant(), &d.event_id),
        state.store.get_endpoint(p.tenant(), &d.endpoint_id),
    )?;
    let hidden_endpoint = endpoint.is_some_and(|ep| !p.shows(&ep));
    let hidden_type = event.as_ref().is_some_and(|e| !p.sees_type(&e.event_type));
    if hidden_endpoint || hidden_type {
        return Err(not_found());
    }
    Ok((d, event))
}

/// The deliveries of a page that this session may see (see [`visible_delivery`]).
async fn visible_deliveries(
    state: &AppState,
    p: &Portal,
    list: Vec<crate::domain::Delivery>,
) -> Result<Vec<crate::domain::Delivery>, PortalError> {
    let mut endpoints: Vec<&str> = list.iter().map(|d| d.endpoint_id.as_str()).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    let endpoints = try_join_all(
        endpoints
            .iter()
            .map(|id| state.store.get_endpoint(p.tenant(), id)),
    )
    .await?;
    let hidden: Vec<&str> = endpoints
        .iter()
        .flatten()
        .filter(|ep| !p.shows(ep))
        .map(|ep| ep.id.as_str())
        .collect();
    // The event types, read only when the link is limited to some.
    let types: Vec<Option<String>> = if p.link.event_types.is_some() {
        try_join_all(
            list.iter()
                .map(|d| state.store.get_event(p.tenant(), &d.event_id)),
        )
        .await?
        .into_iter()
        .map(|e| e.map(|e| e.event_type))
        .collect()
    } else {
        vec![None; list.len()]
    };
    Ok(list
        .into_iter()
        .zip(types)
        .filter(|(d, t)| {
            !hidden.contains(&d.endpoint_id.as_str()) && t.as_deref().is_none_or(|t| p.sees_type(t))
        })
        .map(|(d, _)| d)
        .collect())
}

fn delivery_table(list: &[crate::domain::Delivery]) -> Markup {
    html! {
        table.list id="deliveries" {
            thead { tr { th { "Delivery" } th { "Status" } th { "Attempts" } th { "Created" } th { "Last change" } th { "Last error" } } }
            tbody {
                @for d in list {
                    tr {
                        td { a href=(format!("/portal/deliveries/{}", d.id)) { (d.id) } }
                        td { (badge(d.status.as_str())) }
                        td { (d.attempts) }
                        td { (time(d.created_at)) }
                        td { (time(d.updated_at)) }
                        td.clip { (d.last_error.as_deref().unwrap_or("")) }
                    }
                }
                @if list.is_empty() { tr { td colspan="6" { "No deliveries." } } }
            }
        }
    }
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    endpoint: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

async fn deliveries(
    State(state): State<AppState>,
    p: Portal,
    Query(q): Query<DeliveriesQuery>,
) -> PortalResult {
    let status = super::parse_status(q.status.as_deref())?;
    let endpoint = super::non_empty(&q.endpoint);
    let (since, until) = (parse_time(&q.since)?, parse_time(&q.until)?);
    let filter = DeliveryFilter {
        status,
        endpoint_id: endpoint.clone(),
        event_id: None,
        since,
        until,
        page: page_after(q.after.as_deref())?,
    };
    let fetched = state.store.list_deliveries(p.tenant(), &filter).await?;
    let (full, last) = (fetched.len(), fetched.last().map(|d| d.id.clone()));
    let list = visible_deliveries(&state, &p, fetched).await?;
    let keep: String = [
        ("status", q.status.as_deref()),
        ("endpoint", q.endpoint.as_deref()),
        ("since", q.since.as_deref()),
        ("until", q.until.as_deref()),
    ]
    .iter()
    .filter_map(|(k, v)| {
        v.filter(|v| !v.is_empty())
            .map(|v| format!("{k}={}&", super::urlencode(v)))
    })
    .collect();
    let value = |t: Option<DateTime<Utc>>| t.map(|t| t.format("%Y-%m-%dT%H:%M").to_string());
    let content = html! {
        form.filters method="get" action="/portal/deliveries" id="delivery-filters" {
            label { "Status " select name="status" id="filter-status" {
                option value="" { "any" }
                @for s in ["pending", "delivered", "failed", "cancelled"] {
                    option value=(s) selected[status.map(|x| x.as_str()) == Some(s)] { (s) }
                }
            } }
            label { "Endpoint id " input type="text" name="endpoint" size="30" value=[endpoint.as_deref()]; }
            label { "From (UTC) " input type="datetime-local" name="since" value=[value(since)]; }
            label { "Until (UTC) " input type="datetime-local" name="until" value=[value(until)]; }
            button type="submit" id="filter" { "Filter" }
        }
        (delivery_table(&list))
        (super::pager(full, last.as_deref(), "/portal/deliveries", &keep))
    };
    Ok(layout(&state, &p, Nav::Deliveries, "Deliveries", content).into_response())
}

async fn delivery(
    State(state): State<AppState>,
    p: Portal,
    Path(id): Path<String>,
) -> PortalResult {
    delivery_page(&state, &p, &id, None).await
}

async fn delivery_page(
    state: &AppState,
    p: &Portal,
    id: &str,
    notice: Option<Markup>,
) -> PortalResult {
    let (d, event) = visible_delivery(state, p, id).await?;
    let attempts = state.store.list_attempts(&d.id).await?;
    let content = html! {
        @if let Some(n) = notice { (n) }
        section.card {
            table.kv {
                tr { th { "Status" } td id="delivery-status" { (badge(d.status.as_str())) } }
                tr { th { "Endpoint" } td { a href=(format!("/portal/endpoints/{}", d.endpoint_id)) { (d.endpoint_id) } } }
                tr { th { "Attempts" } td { (d.attempts) " of " (d.max_attempts) } }
                tr { th { "Next attempt" } td { (opt_time(d.next_attempt_at)) } }
                tr { th { "Created" } td { (time(d.created_at)) } }
                @if let Some(e) = &event {
                    tr { th { "Event" } td { code { (e.event_type) } " " small.id { (e.id) } } }
                }
            }
            @if p.writable() && d.status != DeliveryStatus::Pending {
                form method="post" action=(format!("/portal/deliveries/{}/retry", d.id)) {
                    (p.csrf_field())
                    button type="submit" id="retry" { "Retry now" }
                }
            }
        }
        @if let Some(e) = &event {
            section.card { h2 { "Payload" } pre id="payload" { (serde_json::to_string_pretty(&e.data).unwrap_or_default()) } }
        }
        section.card {
            h2 { "Attempts" }
            table.list id="attempts" {
                thead { tr { th { "#" } th { "Started" } th { "Outcome" } th { "HTTP" } th { "Latency" } th { "Response" } th { "Error" } } }
                tbody {
                    @for a in &attempts {
                        tr {
                            td { (a.attempt_number) }
                            td { (time(a.started_at)) }
                            td { (badge(a.outcome.as_str())) }
                            td.status-code { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                            td { (a.duration_ms) " ms" }
                            td { @if let Some(r) = &a.response { pre.excerpt { (r) } } }
                            td.clip { (a.error.as_deref().unwrap_or("")) }
                        }
                    }
                    @if attempts.is_empty() { tr { td colspan="7" { "No attempts yet." } } }
                }
            }
        }
    };
    let title = format!("Delivery {}", d.id);
    Ok(layout(state, p, Nav::Deliveries, &title, content).into_response())
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    PortalForm(p, _): PortalForm,
) -> PortalResult {
    visible_delivery(&state, &p, &id).await?;
    state.service().retry_delivery(p.tenant(), &id).await?;
    p.audit(&state, "delivery.retried", &id).await;
    let notice = html! { p.flash.good id="retried" { "The delivery is due again." } };
    delivery_page(&state, &p, &id, Some(notice)).await
}

// ---------------------------------------------------------------------------------------
// Event types.

async fn event_types(State(state): State<AppState>, p: Portal) -> PortalResult {
    let catalog = state.store.list_event_types().await?;
    let allowed = p.allowed(&catalog);
    let content = html! {
        table.list id="event-types" {
            thead { tr { th { "Event type" } th { "Description" } th { "Schema" } } }
            tbody {
                @for t in &allowed {
                    tr {
                        td { code { (t.name) } }
                        td { (t.description.as_deref().unwrap_or("")) }
                        td { @if let Some(s) = &t.schema {
                            details { summary { "show" } pre.excerpt { (serde_json::to_string_pretty(s).unwrap_or_default()) } }
                        } }
                    }
                }
                @if allowed.is_empty() { tr { td colspan="3" { "No event types in the catalog." } } }
            }
        }
    };
    Ok(layout(&state, &p, Nav::EventTypes, "Event types", content).into_response())
}
