//! The dashboard: server-rendered pages at `/ui`, in the binary (templates are `maud`
//! macros, the one stylesheet is embedded), no JavaScript.
//!
//! Login takes the admin token or a tenant token, verified as the API verifies bearer
//! tokens. The session is a cookie signed with a per-process random key (HMAC-SHA256): it
//! names the principal, the SHA-256 of its token (checked against the store on every
//! request, so a revoked token ends its sessions), an expiry and a random nonce. It is
//! `HttpOnly`, `SameSite=Strict`, `Path=/ui` (and `Secure` behind https). Every form
//! carries a CSRF token derived from the nonce, checked on every POST, and a POST whose
//! `Origin` is another site is refused. Every page is rendered through `maud`, which
//! escapes all text; a strict Content-Security-Policy forbids scripts anyway.
//!
//! Pages read through the same store calls as the API and act through the API's own
//! handlers, so the business rules live in one place. Lists are cursor pages, newest
//! first; no page counts a whole table.

use std::sync::OnceLock;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use maud::{html, Markup, DOCTYPE};
use rand::RngCore;
use serde::{de::DeserializeOwned, Deserialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{
    api::{hash_token, principal_for_hash, Actor, ApiError, AppState, Principal},
    domain::DEFAULT_TENANT,
    store::{cursor, Page},
};

mod audit;
mod endpoints;
use crate::api::guard;
mod inbox;
mod log;
mod overview;
pub mod portal;
mod sources;

/// Rows per list page.
pub const PAGE_SIZE: u32 = 50;
/// How long a session lasts.
const SESSION_HOURS: i64 = 12;
const SESSION_COOKIE: &str = "hr_session";
const LOGIN_COOKIE: &str = "hr_login";
const CSS: &str = include_str!("app.css");

/// The dashboard's routes, all under `/ui`, and the consumer portal's, under `/portal`.
pub fn router(state: &AppState) -> Router<AppState> {
    dashboard().merge(portal::router(state))
}

fn dashboard() -> Router<AppState> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/assets/app.css", get(css))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/switch", get(switch_tenant))
        .route("/ui/t/{tenant}", get(overview::page))
        .route("/ui/t/{tenant}/search", get(log::search))
        .merge(endpoints::router())
        .merge(log::router())
        .merge(inbox::router())
        .merge(sources::router())
        .merge(audit::router())
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "same-origin");
    set(h, header::CACHE_CONTROL, "no-store");
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        CSS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Signing: sessions, CSRF tokens, login nonces.

/// The per-process signing key (sessions end when the process restarts).
fn key() -> &'static [u8; 64] {
    static KEY: OnceLock<[u8; 64]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut k);
        k
    })
}

fn mac(purpose: &str, data: &str) -> String {
    let mut m = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*key()).into());
    m.update(purpose.as_bytes());
    m.update(b"\0");
    m.update(data.as_bytes());
    b64(&m.finalize().into_bytes())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn nonce() -> String {
    let mut n = [0u8; 18];
    rand::thread_rng().fill_bytes(&mut n);
    b64(&n)
}

/// A logged-in dashboard user.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// Who the audit trail names for this session's changes (checked on every request).
    pub actor: Actor,
    token_hash: [u8; 32],
    expires: i64,
    nonce: String,
}

impl Session {
    fn new(principal: Principal, actor: Actor, token_hash: [u8; 32]) -> Self {
        Self {
            principal,
            actor,
            token_hash,
            expires: (crate::domain::now() + chrono::Duration::hours(SESSION_HOURS)).timestamp(),
            nonce: nonce(),
        }
    }

    /// The cookie value: `payload.signature`.
    fn encode(&self) -> String {
        let (kind, tenant) = match &self.principal {
            Principal::Admin => ("a", ""),
            Principal::Tenant(t) => ("t", t.as_str()),
        };
        let payload = format!(
            "{kind}.{}.{}.{}.{}",
            b64(tenant.as_bytes()),
            b64(&self.token_hash),
            self.expires,
            self.nonce
        );
        let sig = mac("session", &payload);
        format!("{payload}.{sig}")
    }

    /// A cookie value this process signed and that has not expired (not yet checked
    /// against the store).
    fn decode(value: &str) -> Option<Self> {
        let (payload, sig) = value.rsplit_once('.')?;
        if !same(&mac("session", payload), sig) {
            return None;
        }
        let mut parts = payload.split('.');
        let kind = parts.next()?;
        let tenant = String::from_utf8(unb64(parts.next()?)?).ok()?;
        let token_hash: [u8; 32] = unb64(parts.next()?)?.try_into().ok()?;
        let expires: i64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_owned();
        if parts.next().is_some() || expires < crate::domain::now().timestamp() {
            return None;
        }
        let principal = match kind {
            "a" => Principal::Admin,
            "t" => Principal::Tenant(tenant),
            _ => return None,
        };
        Some(Self {
            principal,
            // Filled from the store when the session is checked.
            actor: Actor(String::new()),
            token_hash,
            expires,
            nonce,
        })
    }

    /// The CSRF token of this session's forms.
    pub fn csrf(&self) -> String {
        mac("csrf", &self.nonce)
    }

    /// The tenant shown by default.
    pub fn home_tenant(&self) -> &str {
        match &self.principal {
            Principal::Admin => DEFAULT_TENANT,
            Principal::Tenant(t) => t,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether the request came over https (directly or through a proxy that says so).
fn https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if https(headers) { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let session = cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|v| Session::decode(&v))
            .ok_or_else(to_login)?;
        if state.ui_guard.is_revoked(&session.nonce) {
            return Err(to_login());
        }
        // The token must still exist and still name the same principal.
        match principal_for_hash(state, &session.token_hash).await {
            Ok(Some((p, actor))) if p == session.principal => Ok(Session { actor, ..session }),
            Ok(_) => Err(to_login()),
            Err(e) => Err(UiError::from(ApiError::from(e)).into_response()),
        }
    }
}

/// Whether a POST comes from this site: an `Origin` header, when present, must be this
/// host, and a browser's `Sec-Fetch-Site` must not say `cross-site`.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// A POSTed form of a logged-in session, its CSRF token and origin checked: every
/// dashboard action takes one, so none can skip the checks.
pub struct Form<T>(pub Session, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Form<T> {
    type Rejection = Response;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers) {
            return Err(UiError::forbidden("cross-site request refused").into_response());
        }
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let field: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| UiError::bad_request("invalid form").into_response())?;
        if !same(&field.csrf, &session.csrf()) {
            return Err(
                UiError::forbidden("invalid or missing CSRF token; reload the page")
                    .into_response(),
            );
        }
        let form: T = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| UiError::bad_request(format!("invalid form: {e}")).into_response())?;
        Ok(Form(session, form))
    }
}

// ---------------------------------------------------------------------------------------
// Errors.

/// An error page.
#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        // ApiError's messages are written for clients (internal ones are generic).
        Self::new(e.status, e.message)
    }
}

impl From<crate::service::Error> for UiError {
    fn from(e: crate::service::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl Ctx {
    /// The session's caller, as the services see it.
    pub fn caller(&self) -> crate::service::Caller<'_> {
        crate::api::caller(&self.session.principal, &self.session.actor)
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        self.page(" · hookrelay", None, ("/ui", "Back to the dashboard"))
    }
}

impl UiError {
    /// The error page: the status and message, `title_suffix` after the title, `main_id`
    /// on its content and a link `back` (`(href, text)`).
    pub fn page(self, title_suffix: &str, main_id: Option<&str>, back: (&str, &str)) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head { meta charset="utf-8"; title { (title) (title_suffix) } (stylesheet()) }
                body.error {
                    main id=[main_id] {
                        h1 { (self.status.as_u16()) " " (title) }
                        p.message { (self.message) }
                        p { a href=(back.0) { (back.1) } }
                    }
                }
            }
        };
        (self.status, body).into_response()
    }
}

pub type UiResult<T = Markup> = Result<T, UiError>;

// ---------------------------------------------------------------------------------------
// Layout.

/// What every page of a tenant needs: the session, the tenant shown, the CSRF token.
pub struct Ctx {
    pub session: Session,
    pub tenant: String,
    pub csrf: String,
}

impl Ctx {
    /// Checks that the session may see `tenant` and that it exists (another tenant's
    /// pages are a 404, as in the API).
    pub async fn new(state: &AppState, session: Session, tenant: String) -> UiResult<Self> {
        session.principal.tenant(state, &tenant).await?;
        let csrf = session.csrf();
        Ok(Self {
            session,
            tenant,
            csrf,
        })
    }

    /// `/ui/t/{tenant}{rest}`.
    pub fn href(&self, rest: &str) -> String {
        format!("/ui/t/{}{rest}", urlencode(&self.tenant))
    }

    /// The hidden CSRF field of a form.
    pub fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn stylesheet() -> Markup {
    html! { link rel="stylesheet" href=(format!("/ui/assets/app.css?v={}", env!("CARGO_PKG_VERSION"))); }
}

/// Which item of the navigation is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Endpoints,
    Events,
    Deliveries,
    Inbox,
    Sources,
    Audit,
}

/// A whole page: header with navigation, tenant, search and logout, then `content`.
pub async fn layout(state: &AppState, ctx: &Ctx, nav: Nav, title: &str, content: Markup) -> Markup {
    let tenants = if ctx.session.is_admin() {
        state
            .store
            .list_tenants(&Page {
                after_id: None,
                limit: 100,
            })
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let items = [
        (Nav::Overview, "Overview", ""),
        (Nav::Endpoints, "Endpoints", "/endpoints"),
        (Nav::Events, "Events", "/events"),
        (Nav::Deliveries, "Deliveries", "/deliveries"),
        (Nav::Inbox, "Inbox", "/inboxes"),
        (Nav::Sources, "Sources", "/sources"),
        (Nav::Audit, "Audit", "/audit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, "hookrelay", html! {}))
            body {
                header.top {
                    a.brand href=(ctx.href("")) { "hookrelay" }
                    nav {
                        @for (item, label, path) in items {
                            a.current[item == nav] href=(ctx.href(path)) { (label) }
                        }
                    }
                    form.search method="get" action=(ctx.href("/search")) {
                        input type="search" name="q" placeholder="evt_… / dlv_… / ep_… id" aria-label="Search by id";
                    }
                    @if ctx.session.is_admin() {
                        form.tenant method="get" action="/ui/switch" {
                            label { "Tenant "
                                select name="tenant" id="tenant-select" {
                                    @if !tenants.iter().any(|t| t.id == ctx.tenant) {
                                        option value=(ctx.tenant) selected { (ctx.tenant) }
                                    }
                                    @for t in &tenants {
                                        option value=(t.id) selected[t.id == ctx.tenant] { (t.id) }
                                    }
                                }
                            }
                            button type="submit" { "Go" }
                        }
                    } @else {
                        span.tenant { "Tenant " strong { (ctx.tenant) } }
                    }
                    form.logout method="post" action="/ui/logout" {
                        (ctx.csrf_field())
                        span.who { @if ctx.session.is_admin() { "admin" } @else { "tenant token" } }
                        button type="submit" id="logout" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// `2026-01-02 15:04:05`, UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "–".into())
}

/// A status badge.
pub fn badge(text: &str) -> Markup {
    html! { span class=(format!("badge {text}")) { (text) } }
}

/// The cursor page a list asks for: `?after=<cursor>`.
pub fn page_after(after: Option<&str>) -> UiResult<Page> {
    let after_id = match after.filter(|a| !a.is_empty()) {
        None => None,
        Some(c) => Some(cursor::decode(c).ok_or_else(|| UiError::bad_request("invalid cursor"))?),
    };
    Ok(Page {
        after_id,
        limit: PAGE_SIZE,
    })
}

/// "Next page" link when the page was full; `query` is the rest of the query string.
pub fn next_link<T>(items: &[T], id: impl Fn(&T) -> &str, base: &str, query: &str) -> Markup {
    pager(items.len(), items.last().map(id), base, query)
}

/// "Next page" link when a page of `len` rows read from the store was full, continuing
/// after `last` (for lists that show fewer rows than they read).
pub fn pager(len: usize, last: Option<&str>, base: &str, query: &str) -> Markup {
    let next = (len == PAGE_SIZE as usize)
        .then(|| last.map(cursor::encode))
        .flatten();
    html! {
        @if let Some(c) = next {
            p.pager { a.next href=(format!("{base}?{query}after={c}")) { "Older →" } }
        }
    }
}

/// An empty optional form field is absent.
pub fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A delivery status from a form or a query; `None` when absent or empty.
pub fn parse_status(s: Option<&str>) -> UiResult<Option<crate::domain::DeliveryStatus>> {
    match s.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => crate::domain::DeliveryStatus::parse(s)
            .map(Some)
            .ok_or_else(|| UiError::bad_request(format!("unknown status {s:?}"))),
    }
}

/// An endpoint page's enable/disable button, posting to `action`.
pub fn enabled_form(action: &str, csrf: Markup, enabled: bool) -> Markup {
    html! {
        form method="post" action=(action) {
            (csrf)
            @if enabled {
                input type="hidden" name="enabled" value="false";
                button type="submit" id="disable" { "Disable" }
            } @else {
                input type="hidden" name="enabled" value="true";
                button type="submit" id="enable" { "Enable" }
            }
        }
    }
}

/// An endpoint page's replay form (finished deliveries of a status in a time window),
/// posting to `action`.
pub fn replay_form(action: &str, csrf: Markup, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) id="replay-form" {
            (csrf)
            strong { (label) " " }
            label { "status " select name="status" {
                option value="failed" selected { "failed" }
                option value="delivered" { "delivered" }
                option value="cancelled" { "cancelled" }
            } }
            label { "from (UTC) " input type="datetime-local" name="since"; }
            label { "until (UTC) " input type="datetime-local" name="until"; }
            button type="submit" id="replay" { "Replay" }
        }
    }
}

/// A page's `<head>`: `title · site`, the stylesheet, and `extra`.
pub fn head(title: &str, site: &str, extra: Markup) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · " (site) }
            (stylesheet())
            (extra)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Login, logout, home.

fn login_form(error: Option<&str>, nonce: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · hookrelay" }
                (stylesheet())
            }
            body.login {
                main {
                    h1 { "hookrelay" }
                    p { "Log in with the admin token or a tenant token." }
                    @if let Some(e) = error { p.flash.bad { (e) } }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(mac("login", nonce));
                        label { "Token" input type="password" name="token" id="token" autocomplete="off" required autofocus; }
                        button type="submit" id="login" { "Log in" }
                    }
                }
            }
        }
    }
}

/// The login page; sets a short-lived cookie whose nonce the form's CSRF token signs.
async fn login_page(headers: HeaderMap) -> Response {
    login_response(&headers, None, StatusCode::OK)
}

fn login_response(headers: &HeaderMap, error: Option<&str>, status: StatusCode) -> Response {
    let n = nonce();
    let mut resp = (status, login_form(error, &n)).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, LOGIN_COOKIE, &n, 3600),
    );
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// The address a request came from (none when served without connection info).
fn client_ip(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn login(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        return UiError::forbidden("cross-site request refused").into_response();
    }
    let ip = client_ip(&extensions);
    let now = std::time::Instant::now();
    if let Some(wait) = ip.and_then(|ip| state.ui_guard.throttled(ip, now)) {
        let secs = wait.as_secs().max(1);
        let message = format!(
            "Too many failed logins from this address ({} in {} minutes); try again in {secs} s.",
            guard::MAX_FAILURES,
            guard::FAILURE_WINDOW.as_secs() / 60
        );
        let mut resp = login_response(&headers, Some(&message), StatusCode::TOO_MANY_REQUESTS);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return UiError::bad_request("invalid form").into_response();
    };
    let nonce_ok = cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|n| same(&mac("login", &n), &form.csrf) && !form.csrf.is_empty());
    if !nonce_ok {
        return login_response(
            &headers,
            Some("The login form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let token = form.token.trim();
    if token.is_empty() {
        return login_response(&headers, Some("Enter a token."), StatusCode::UNAUTHORIZED);
    }
    let hash = hash_token(token);
    match principal_for_hash(&state, &hash).await {
        Ok(Some((principal, actor))) => {
            if let Some(ip) = ip {
                state.ui_guard.succeeded(ip);
            }
            let session = Session::new(principal, actor, hash);
            let to = format!("/ui/t/{}", urlencode(session.home_tenant()));
            let mut resp = Redirect::to(&to).into_response();
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(
                    &headers,
                    SESSION_COOKIE,
                    &session.encode(),
                    SESSION_HOURS * 3600,
                ),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(&headers, LOGIN_COOKIE, "", 0),
            );
            resp
        }
        Ok(None) => {
            if let Some(ip) = ip {
                state.ui_guard.failed(ip, now);
            }
            login_response(&headers, Some("Invalid token."), StatusCode::UNAUTHORIZED)
        }
        Err(e) => UiError::from(e).into_response(),
    }
}

/// Ends the session here and now: its cookie no longer opens a page, even if kept.
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> Response {
    state.ui_guard.revoke(
        &session.nonce,
        session.expires,
        crate::domain::now().timestamp(),
    );
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", 0),
    );
    resp
}

async fn home(session: Session) -> Redirect {
    Redirect::to(&format!("/ui/t/{}", urlencode(session.home_tenant())))
}

#[derive(Deserialize)]
struct SwitchQuery {
    tenant: String,
}

async fn switch_tenant(
    _session: Session,
    axum::extract::Query(q): axum::extract::Query<SwitchQuery>,
) -> Redirect {
    Redirect::to(&format!("/ui/t/{}", urlencode(q.tenant.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_round_trip_and_reject_tampering() {
        let s = Session::new(
            Principal::Tenant("acme".into()),
            Actor("tok_1".into()),
            [7; 32],
        );
        let v = s.encode();
        let back = Session::decode(&v).unwrap();
        assert_eq!(back.principal, Principal::Tenant("acme".into()));
        assert_eq!(back.csrf(), s.csrf());
        // Changing the principal breaks the signature.
        let forged = v.replacen("t.", "a.", 1);
        assert!(Session::decode(&forged).is_none());
        assert!(Session::decode("a....1.x.y").is_none());
        let mut expired = Session::new(Principal::Admin, Actor("admin".into()), [1; 32]);
        expired.expires = 0;
        assert!(Session::decode(&expired.encode()).is_none());
    }

    #[test]
    fn origin_check() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8400"));
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8400"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_origin(&h));
    }
}
