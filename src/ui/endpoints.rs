//! Endpoints: the list (success rate, breaker, rate limit, last attempt) with a create
//! form, and the detail page (recent attempts, test, enable/disable, rotate secret, bulk
//! replay). Every action goes through the API's handler.

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use futures::future::try_join_all;
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    badge, layout, next_link, non_empty, opt_time, page_after, time, Ctx, Form, Nav, Session,
    UiError, UiResult,
};
use crate::{
    api::{
        endpoints::{CreateEndpoint, EndpointOut, ReplayRequest, UpdateEndpoint},
        ops::run_test,
        ApiError, AppState, Path,
    },
    domain::{Attempt, Delivery, DeliveryStatus, Endpoint},
    store::{DeliveryFilter, Page},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/t/{tenant}/endpoints", get(list).post(create))
        .route("/ui/t/{tenant}/endpoints/{id}", get(detail))
        .route("/ui/t/{tenant}/endpoints/{id}/test", post(test))
        .route("/ui/t/{tenant}/endpoints/{id}/enabled", post(set_enabled))
        .route("/ui/t/{tenant}/endpoints/{id}/rotate-secret", post(rotate))
        .route("/ui/t/{tenant}/endpoints/{id}/replay", post(replay))
}

/// Deliveries looked at for an endpoint's success rate.
const RATE_WINDOW: u32 = 50;

#[derive(Deserialize)]
pub struct ListQuery {
    after: Option<String>,
}

/// Success rate over the last finished deliveries, and when it was last attempted.
pub(super) struct Recent {
    rate: Option<(u64, u64)>,
    pub(super) last_attempt: Option<DateTime<Utc>>,
}

pub(super) async fn recent(state: &AppState, tenant: &str, ep: &Endpoint) -> UiResult<Recent> {
    let deliveries = state
        .store
        .list_deliveries(
            tenant,
            &DeliveryFilter {
                endpoint_id: Some(ep.id.clone()),
                page: Page {
                    after_id: None,
                    limit: RATE_WINDOW,
                },
                ..Default::default()
            },
        )
        .await?;
    let delivered = deliveries
        .iter()
        .filter(|d| d.status == DeliveryStatus::Delivered)
        .count() as u64;
    let finished = deliveries
        .iter()
        .filter(|d| matches!(d.status, DeliveryStatus::Delivered | DeliveryStatus::Failed))
        .count() as u64;
    Ok(Recent {
        rate: (finished > 0).then_some((delivered, finished)),
        last_attempt: deliveries
            .iter()
            .filter(|d| d.attempts > 0)
            .map(|d| d.updated_at)
            .max(),
    })
}

pub(super) fn rate_text(r: &Recent) -> String {
    match r.rate {
        Some((ok, n)) => format!("{:.0} % ({ok}/{n})", ok as f64 * 100.0 / n as f64),
        None => "–".into(),
    }
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<ListQuery>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    list_page(&state, &ctx, q.after.as_deref(), None).await
}

async fn list_page(
    state: &AppState,
    ctx: &Ctx,
    after: Option<&str>,
    error: Option<String>,
) -> UiResult {
    let page = page_after(after)?;
    let endpoints = state.store.list_endpoints(&ctx.tenant, &page).await?;
    let recents = try_join_all(endpoints.iter().map(|e| recent(state, &ctx.tenant, e))).await?;
    let content = html! {
        @if let Some(e) = &error { p.flash.bad id="error" { (e) } }
        section.card {
            h2 { "New endpoint" }
            form.inline method="post" action=(ctx.href("/endpoints")) id="create-endpoint" {
                (ctx.csrf_field())
                label { "URL " input type="url" name="url" id="endpoint-url" required placeholder="https://example.com/webhooks" size="40"; }
                label { "Event types " input type="text" name="event_types" id="endpoint-types" placeholder="user.*, order.paid (empty: all)"; }
                label { "Rate limit " input type="text" name="rate_limit" id="endpoint-rate" placeholder="10/s or 30/min" size="10"; }
                label { "Description " input type="text" name="description" maxlength="1024"; }
                label { "Secret (optional) " input type="text" name="secret" id="endpoint-secret-input" placeholder="whsec_… (generated when empty)"; }
                label { "Format " select name="format" id="endpoint-format" {
                    option value="standard-webhooks" selected { "Standard Webhooks" }
                    option value="community" { "community (X-Webhook-Signature: sha256=)" }
                } }
                details id="endpoint-oauth2" {
                    summary { "OAuth2 client credentials (optional)" }
                    label { "Token URL " input type="url" name="oauth2_token_url" id="oauth2-token-url" maxlength="2048" placeholder="https://auth.example.com/oauth/token" size="40"; }
                    label { "Client id " input type="text" name="oauth2_client_id" id="oauth2-client-id" maxlength="512"; }
                    label { "Client secret " input type="password" name="oauth2_client_secret" id="oauth2-client-secret" maxlength="2048" autocomplete="off"; }
                    label { "Scope " input type="text" name="oauth2_scope" id="oauth2-scope" maxlength="1024"; }
                    label { "Audience " input type="text" name="oauth2_audience" id="oauth2-audience" maxlength="1024"; }
                }
                details id="endpoint-tls-form" {
                    summary { "Mutual TLS (optional, HTTPS endpoints)" }
                    label { "Client certificate (PEM) " textarea name="tls_certificate" id="tls-certificate" rows="3" cols="40" maxlength="32768" {} }
                    label { "Its private key (PEM) " textarea name="tls_key" id="tls-key" rows="3" cols="40" maxlength="32768" autocomplete="off" {} }
                    label { "CA to trust for the receiver (PEM) " textarea name="tls_ca" id="tls-ca" rows="3" cols="40" maxlength="32768" {} }
                }
                details id="endpoint-signature-headers" {
                    summary { "Signature header names (optional)" }
                    label { "Id " input type="text" name="header_id" id="header-id" maxlength="64" placeholder="webhook-id"; }
                    label { "Timestamp " input type="text" name="header_timestamp" id="header-timestamp" maxlength="64" placeholder="webhook-timestamp"; }
                    label { "Signature " input type="text" name="header_signature" id="header-signature" maxlength="64" placeholder="webhook-signature"; }
                }
                button type="submit" id="create-endpoint-submit" { "Create" }
            }
        }
        table.list id="endpoints" {
            thead { tr {
                th { "URL" } th { "Enabled" } th { "Breaker" } th { "Rate limit" }
                th { "Success (last " (RATE_WINDOW) ")" } th { "Last attempt" }
            } }
            tbody {
                @for (ep, r) in endpoints.iter().zip(&recents) {
                    tr {
                        td { a href=(ctx.href(&format!("/endpoints/{}", ep.id))) { (crate::secrets::redact_url(&ep.url)) } br; small.id { (ep.id) } }
                        td { @if ep.enabled { (badge("enabled")) } @else { (badge("disabled")) } }
                        td { (badge(ep.breaker.state.as_str())) }
                        td { (rate_limit_text(ep)) }
                        td { (rate_text(r)) }
                        td { (opt_time(r.last_attempt)) }
                    }
                }
                @if endpoints.is_empty() { tr { td colspan="6" { "No endpoints yet." } } }
            }
        }
        (next_link(&endpoints, |e| &e.id, &ctx.href("/endpoints"), ""))
    };
    Ok(layout(state, ctx, Nav::Endpoints, "Endpoints", content).await)
}

#[derive(Deserialize)]
struct CreateForm {
    url: String,
    event_types: Option<String>,
    rate_limit: Option<String>,
    description: Option<String>,
    secret: Option<String>,
    format: Option<String>,
    oauth2_token_url: Option<String>,
    oauth2_client_id: Option<String>,
    oauth2_client_secret: Option<String>,
    oauth2_scope: Option<String>,
    oauth2_audience: Option<String>,
    tls_certificate: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
    header_id: Option<String>,
    header_timestamp: Option<String>,
    header_signature: Option<String>,
}

/// An endpoint's rate limit as people write it: `10/s`, `30/min`, or `none`.
fn rate_limit_text(ep: &crate::domain::Endpoint) -> String {
    match ep.rate() {
        None => "none".into(),
        Some(r) => match r.period {
            crate::domain::RatePeriod::Second => format!("{}/s", r.count),
            crate::domain::RatePeriod::Minute => format!("{}/min", r.count),
        },
    }
}

async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Form(session, f): Form<CreateForm>,
) -> Result<Response, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    // A bare number is per second, as in the API; the API checks the rest.
    let rate_limit = non_empty(&f.rate_limit).map(|r| match r.parse::<u32>() {
        Ok(n) => serde_json::json!(n),
        Err(_) => serde_json::json!(r),
    });
    let event_types: Vec<String> = f
        .event_types
        .unwrap_or_default()
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let body = CreateEndpoint {
        url: f.url.trim().to_owned(),
        event_types: Some(event_types),
        secret: non_empty(&f.secret),
        signing_scheme: None,
        format: match non_empty(&f.format) {
            None => None,
            Some(f) => Some(
                crate::domain::DeliveryFormat::parse(&f)
                    .ok_or_else(|| UiError::bad_request("unknown format"))?,
            ),
        },
        description: non_empty(&f.description),
        rate_limit,
        rate_limit_period: None,
        max_attempts: None,
        headers: None,
        enabled: None,
        filter: None,
        ordering: None,
        transform: None,
        // A token URL asks for OAuth2; the service says what else is missing.
        oauth2: non_empty(&f.oauth2_token_url).map(|token_url| {
            crate::service::endpoints::OAuth2Input {
                token_url,
                client_id: non_empty(&f.oauth2_client_id).unwrap_or_default(),
                client_secret: non_empty(&f.oauth2_client_secret),
                scope: non_empty(&f.oauth2_scope),
                audience: non_empty(&f.oauth2_audience),
            }
        }),
        tls: (non_empty(&f.tls_certificate).is_some() || non_empty(&f.tls_ca).is_some()).then(
            || crate::service::endpoints::TlsInput {
                certificate: non_empty(&f.tls_certificate),
                key: non_empty(&f.tls_key),
                ca: non_empty(&f.tls_ca),
            },
        ),
        proxy: None,
        signature_headers: Some(crate::domain::SignatureHeaders {
            id: non_empty(&f.header_id),
            timestamp: non_empty(&f.header_timestamp),
            signature: non_empty(&f.header_signature),
        }),
    };
    match state
        .service()
        .create_endpoint(&ctx.caller(), &ctx.tenant, body)
        .await
        .map_err(ApiError::from)
    {
        Ok(ep) => Ok(Redirect::to(&ctx.href(&format!("/endpoints/{}", ep.id))).into_response()),
        Err(e) if e.status.is_client_error() => {
            let page = list_page(&state, &ctx, None, Some(e.message)).await?;
            Ok((e.status, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn load(state: &AppState, ctx: &Ctx, id: &str) -> UiResult<Endpoint> {
    state
        .store
        .get_endpoint(&ctx.tenant, id)
        .await?
        .ok_or_else(|| UiError::not_found("endpoint"))
}

async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    detail_page(&state, &ctx, &id, None).await
}

/// Deliveries shown on the detail page; the attempts of the first few are listed.
const RECENT_DELIVERIES: u32 = 20;
const WITH_ATTEMPTS: usize = 10;

async fn detail_page(state: &AppState, ctx: &Ctx, id: &str, notice: Option<Markup>) -> UiResult {
    let ep = load(state, ctx, id).await?;
    let deliveries = state
        .store
        .list_deliveries(
            &ctx.tenant,
            &DeliveryFilter {
                endpoint_id: Some(ep.id.clone()),
                page: Page {
                    after_id: None,
                    limit: RECENT_DELIVERIES,
                },
                ..Default::default()
            },
        )
        .await?;
    let attempts: Vec<Vec<Attempt>> = try_join_all(
        deliveries
            .iter()
            .take(WITH_ATTEMPTS)
            .map(|d| state.store.list_attempts(&d.id)),
    )
    .await?;
    let mut recent_attempts: Vec<(&Delivery, Attempt)> = deliveries
        .iter()
        .zip(attempts)
        .flat_map(|(d, atts)| atts.into_iter().map(move |a| (d, a)))
        .collect();
    recent_attempts.sort_by_key(|b| std::cmp::Reverse(b.1.started_at));
    let stats = crate::ops::endpoint_stats::read(state.store.as_ref(), &ep.id).await?;
    let ms = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ms"))
            .unwrap_or_else(|| "–".into())
    };
    let rate = |v: Option<f64>| {
        v.map(|v| format!("{:.1} %", v * 100.0))
            .unwrap_or_else(|| "–".into())
    };
    let base = ctx.href(&format!("/endpoints/{}", ep.id));
    let content = html! {
        @if let Some(n) = notice { (n) }
        section.card {
            table.kv {
                tr { th { "ID" } td id="endpoint-id" { (ep.id) } }
                tr { th { "URL" } td { (crate::secrets::redact_url(&ep.url)) } }
                tr { th { "Description" } td { (ep.description.as_deref().unwrap_or("")) } }
                tr { th { "Event types" } td { @if ep.event_types.is_empty() { "all" } @else { (ep.event_types.join(", ")) } } }
                tr { th { "Enabled" } td id="endpoint-enabled" {
                    @if ep.enabled { (badge("enabled")) } @else { (badge("disabled")) " " (ep.disabled_reason.as_deref().unwrap_or("")) }
                } }
                tr { th { "Circuit breaker" } td { (badge(ep.breaker.state.as_str())) " "
                    (ep.breaker.consecutive_failures) " consecutive failures"
                    @if let Some(t) = ep.breaker.open_until { " · probe at " (time(t)) } } }
                tr { th { "Rate limit" } td { (rate_limit_text(&ep)) } }
                tr { th { "Max attempts" } td { (ep.max_attempts.map(|m| m.to_string()).unwrap_or_else(|| format!("server default ({})", state.config.retry.max_attempts))) } }
                tr { th { "Format" } td id="endpoint-format" { (ep.format.as_str()) } }
                @if let Some(o) = &ep.oauth2 {
                    tr { th { "OAuth2" } td id="endpoint-oauth2" {
                        "client " code { (o.client_id) } " at " code { (o.token_url) }
                        @if let Some(scope) = &o.scope { ", scope " code { (scope) } }
                        @if let Some(aud) = &o.audience { ", audience " code { (aud) } }
                        " (secret set)"
                    } }
                }
                @if let Some(tls) = &ep.tls {
                    @let out = crate::service::endpoints::TlsOut::from(tls);
                    tr { th { "Client certificate" } td id="endpoint-tls" {
                        @if let (Some(subject), Some(expires)) = (&out.subject, out.expires_at) {
                            code { (subject) } " expires "
                            span id="endpoint-tls-expires" { (expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) }
                        } @else { "no client certificate" }
                        @if out.ca_set { " (own CA trusted)" }
                    } }
                }
                @if let Some(proxy) = &ep.proxy {
                    tr { th { "Proxy" } td id="endpoint-proxy" { code { (crate::secrets::redact_url(proxy)) } } }
                }
                @if !ep.signature_headers.is_standard() {
                    tr { th { "Signature headers" } td id="endpoint-signature-headers" {
                        @let [id, timestamp, signature] = ep.signature_headers.names();
                        code { (id) } ", " code { (timestamp) } ", " code { (signature) }
                    } }
                }
                tr { th { "Signing secret" } td { details { summary { "show" } code id="endpoint-secret" { (ep.secret) } }
                    @if let Some(t) = ep.previous_secret_expires_at.filter(|t| *t > crate::domain::now()) {
                        " previous secret also signs until " (time(t))
                    } } }
                tr { th { "Created" } td { (time(ep.created_at)) } }
            }
        }
        section.card {
            h2 { "Statistics" }
            table.list id="endpoint-stats" {
                thead { tr { th { "" } th { "attempts" } th { "delivered" } th { "failed" } th { "retries" }
                    th { "success rate" } th { "p50" } th { "p95" } th { "p99" } } }
                tbody {
                    @for (label, w) in [("last hour", &stats.last_hour), ("last 24 hours", &stats.last_24_hours)] {
                        tr { td { (label) } td { (w.attempts) } td { (w.delivered) } td { (w.failed) } td { (w.retries) }
                            td { (rate(w.success_rate)) } td { (ms(w.latency_ms.p50)) } td { (ms(w.latency_ms.p95)) } td { (ms(w.latency_ms.p99)) } }
                    }
                }
            }
            p { "Last success: " (opt_time(stats.last_success_at)) " · last failure: " (opt_time(stats.last_failure_at))
                @if let Some(e) = &stats.last_error { " (" (e) ")" } }
        }
        section.card.actions {
            h2 { "Actions" }
            form method="post" action=(format!("{base}/test")) {
                (ctx.csrf_field())
                button type="submit" id="send-test" { "Send test event" }
            }
            (super::enabled_form(&format!("{base}/enabled"), ctx.csrf_field(), ep.enabled))
            form method="post" action=(format!("{base}/rotate-secret")) {
                (ctx.csrf_field())
                button type="submit" id="rotate-secret" { "Rotate secret" }
            }
            (super::replay_form(&format!("{base}/replay"), ctx.csrf_field(), "Bulk replay"))
            p { a href=(ctx.href(&format!("/deliveries?endpoint={}", ep.id))) id="endpoint-deliveries" { "All deliveries to this endpoint →" } }
        }
        section.card {
            h2 { "Recent attempts" }
            table.list id="recent-attempts" {
                thead { tr { th { "Started" } th { "Delivery" } th { "#" } th { "Outcome" } th { "HTTP" } th { "Latency" } th { "Error" } } }
                tbody {
                    @for (d, a) in &recent_attempts {
                        tr {
                            td { (time(a.started_at)) }
                            td { a href=(ctx.href(&format!("/deliveries/{}", d.id))) { (d.id) } }
                            td { (a.attempt_number) }
                            td { (badge(a.outcome.as_str())) }
                            td { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                            td { (a.duration_ms) " ms" }
                            td.clip { (a.error.as_deref().unwrap_or("")) }
                        }
                    }
                    @if recent_attempts.is_empty() { tr { td colspan="7" { "No attempts yet." } } }
                }
            }
        }
    };
    let title = format!("Endpoint {}", crate::secrets::redact_url(&ep.url));
    Ok(layout(state, ctx, Nav::Endpoints, &title, content).await)
}

async fn test(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let r = run_test(
        &state,
        &ctx.tenant,
        &id,
        None,
        None,
        crate::api::ops::TEST_EVENT_TYPE,
    )
    .await?;
    let ok = r.status == DeliveryStatus::Delivered;
    let notice = html! {
        section.card.flash.good[ok].bad[!ok] id="test-result" {
            h2 { "Test event " (r.status.as_str()) }
            table.kv {
                tr { th { "HTTP status" } td id="test-status" { (r.status_code.map(|c| c.to_string()).unwrap_or_else(|| "no answer".into())) } }
                tr { th { "Latency" } td { (r.latency_ms) " ms" } }
                tr { th { "Delivery" } td { a id="test-delivery" href=(ctx.href(&format!("/deliveries/{}", r.delivery_id))) { (r.delivery_id) } } }
                @if let Some(resp) = &r.response { tr { th { "Response" } td { pre.excerpt { (resp) } } } }
                @if let Some(e) = &r.error { tr { th { "Error" } td { (e) } } }
            }
        }
    };
    detail_page(&state, &ctx, &id, Some(notice)).await
}

#[derive(Deserialize)]
struct EnabledForm {
    enabled: bool,
}

async fn set_enabled(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, f): Form<EnabledForm>,
) -> Result<Redirect, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    state
        .service()
        .update_endpoint(
            &ctx.caller(),
            &ctx.tenant,
            &id,
            UpdateEndpoint {
                enabled: Some(f.enabled),
                ..Default::default()
            },
        )
        .await?;
    Ok(Redirect::to(&ctx.href(&format!("/endpoints/{id}"))))
}

async fn rotate(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let ep = state
        .service()
        .rotate_secret(&ctx.caller(), &ctx.tenant, &id, Default::default())
        .await?;
    let ep = EndpointOut::new(ep, true);
    let notice = html! {
        p.flash.good id="rotated" {
            "Secret rotated. The new secret is " code { (ep.secret.as_deref().unwrap_or("")) }
            @if let Some(t) = ep.previous_secret_expires_at { "; the previous one keeps signing until " (time(t)) }
            "."
        }
    };
    detail_page(&state, &ctx, &id, Some(notice)).await
}

#[derive(Deserialize)]
struct ReplayForm {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// A `datetime-local` value (or RFC 3339), read as UTC.
pub(super) fn parse_time(s: &Option<String>) -> UiResult<Option<DateTime<Utc>>> {
    let Some(s) = non_empty(s) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&s, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| UiError::bad_request(format!("invalid time {s:?}")))
}

async fn replay(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, f): Form<ReplayForm>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let status = super::parse_status(f.status.as_deref())?;
    let request = ReplayRequest {
        status,
        since: parse_time(&f.since)?,
        until: parse_time(&f.until)?,
    };
    let replayed = state
        .service()
        .replay_endpoint(&ctx.tenant, &id, request)
        .await?;
    let notice = html! {
        p.flash.good id="replayed" { (replayed) " deliveries replayed; they are due now." }
    };
    detail_page(&state, &ctx, &id, Some(notice)).await
}
