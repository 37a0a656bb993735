//! The event and delivery logs: filterable cursor pages, event and delivery detail (every
//! attempt), retry and replay, and a search by id.

use axum::{
    extract::{Query, State},
    response::Redirect,
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;

use super::{
    badge, endpoints::parse_time, layout, next_link, non_empty, opt_time, page_after, time,
    urlencode, Ctx, Form, Nav, Session, UiError, UiResult,
};
use crate::{
    api::{AppState, Path},
    domain::DeliveryStatus,
    store::{DeliveryFilter, EventFilter, Page},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/t/{tenant}/events", get(events))
        .route("/ui/t/{tenant}/events/{id}", get(event))
        .route("/ui/t/{tenant}/events/{id}/replay", post(replay))
        .route("/ui/t/{tenant}/deliveries", get(deliveries))
        .route("/ui/t/{tenant}/deliveries/{id}", get(delivery))
        .route("/ui/t/{tenant}/deliveries/{id}/retry", post(retry))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `GET …/search?q=<id>`: jumps to the event, delivery or endpoint with that id.
pub async fn search(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<SearchQuery>,
) -> Result<Redirect, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let q = non_empty(&q.q).unwrap_or_default();
    let id = urlencode(&q);
    let to = match q.split_once('_').map(|(p, _)| p) {
        Some("evt") => format!("/events/{id}"),
        Some("dlv") => format!("/deliveries/{id}"),
        Some("ep") => format!("/endpoints/{id}"),
        Some("inb") => format!("/inboxes/{id}"),
        _ if q.is_empty() => "/events".into(),
        // Anything else is taken for an event type.
        _ => format!("/events?type={id}"),
    };
    Ok(Redirect::to(&ctx.href(&to)))
}

/// A creation-time window from the filter form: `since` inclusive, `until` exclusive, UTC.
struct Window {
    since_text: Option<String>,
    until_text: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Window {
    fn parse(since: &Option<String>, until: &Option<String>) -> UiResult<Self> {
        let (since_text, until_text) = (non_empty(since), non_empty(until));
        Ok(Self {
            since: parse_time(&since_text)?,
            until: parse_time(&until_text)?,
            since_text,
            until_text,
        })
    }

    /// The window as query parameters for the next page's link.
    fn push_query(&self, query: &mut String) {
        for (k, v) in [("since", &self.since_text), ("until", &self.until_text)] {
            if let Some(v) = v {
                query.push_str(&format!("{k}={}&", urlencode(v)));
            }
        }
    }

    fn fields(&self) -> maud::Markup {
        html! {
            label { "Since (UTC) " input type="datetime-local" name="since" value=(self.since_text.as_deref().unwrap_or("")); }
            label { "Until (UTC) " input type="datetime-local" name="until" value=(self.until_text.as_deref().unwrap_or("")); }
        }
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

async fn events(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<EventsQuery>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let event_type = non_empty(&q.event_type);
    let window = Window::parse(&q.since, &q.until)?;
    let page = page_after(q.after.as_deref())?;
    let list = state
        .store
        .list_events(
            &ctx.tenant,
            &EventFilter {
                event_type: event_type.clone(),
                since: window.since,
                until: window.until,
                page,
            },
        )
        .await?;
    let mut query = String::new();
    if let Some(t) = &event_type {
        query.push_str(&format!("type={}&", urlencode(t)));
    }
    window.push_query(&mut query);
    let content = html! {
        form.filters method="get" action=(ctx.href("/events")) {
            label { "Type " input type="text" name="type" value=(event_type.as_deref().unwrap_or("")) placeholder="user.created"; }
            (window.fields())
            button type="submit" { "Filter" }
        }
        table.list id="events" {
            thead { tr { th { "Event" } th { "Type" } th { "Created" } th { "Actor" } } }
            tbody {
                @for e in &list {
                    tr {
                        td { a href=(ctx.href(&format!("/events/{}", e.id))) { (e.id) } }
                        td { (e.event_type) }
                        td { (time(e.created_at)) }
                        td { (e.actor.as_deref().unwrap_or("")) }
                    }
                }
                @if list.is_empty() { tr { td colspan="4" { "No events." } } }
            }
        }
        (next_link(&list, |e| &e.id, &ctx.href("/events"), &query))
    };
    Ok(layout(&state, &ctx, Nav::Events, "Events", content).await)
}

async fn event(
    State(state): State<AppState>,
    session: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    event_page(&state, &ctx, &id, None).await
}

async fn event_page(state: &AppState, ctx: &Ctx, id: &str, notice: Option<String>) -> UiResult {
    let e = state
        .store
        .get_event(&ctx.tenant, id)
        .await?
        .ok_or_else(|| UiError::not_found("event"))?;
    let deliveries = state
        .store
        .list_deliveries(
            &ctx.tenant,
            &DeliveryFilter {
                event_id: Some(e.id.clone()),
                page: Page {
                    after_id: None,
                    limit: 1000,
                },
                ..Default::default()
            },
        )
        .await?;
    let payload = serde_json::to_string_pretty(&e.data).unwrap_or_default();
    let content = html! {
        @if let Some(n) = notice { p.flash.good id="notice" { (n) } }
        section.card {
            table.kv {
                tr { th { "ID" } td id="event-id" { (e.id) } }
                tr { th { "Type" } td { (e.event_type) } }
                tr { th { "Created" } td { (time(e.created_at)) } }
                tr { th { "Actor" } td { (e.actor.as_deref().unwrap_or("")) } }
                tr { th { "Idempotency key" } td { (e.idempotency_key.as_deref().unwrap_or("")) } }
                tr { th { "Deliver at" } td { (opt_time(e.deliver_at)) } }
            }
            h2 { "Payload" }
            pre.payload id="payload" { (payload) }
            form method="post" action=(ctx.href(&format!("/events/{}/replay", e.id))) {
                (ctx.csrf_field())
                button type="submit" id="replay-event" { "Replay event (delivered and failed deliveries)" }
            }
        }
        section.card {
            h2 { "Deliveries" }
            (delivery_table(ctx, &deliveries))
        }
    };
    Ok(layout(state, ctx, Nav::Events, &format!("Event {}", e.id), content).await)
}

fn delivery_table(ctx: &Ctx, list: &[crate::domain::Delivery]) -> maud::Markup {
    html! {
        table.list id="deliveries" {
            thead { tr { th { "Delivery" } th { "Status" } th { "Endpoint" } th { "Event" } th { "Attempts" } th { "Updated" } th { "Last error" } } }
            tbody {
                @for d in list {
                    tr {
                        td { a.delivery href=(ctx.href(&format!("/deliveries/{}", d.id))) { (d.id) } }
                        td { (badge(d.status.as_str())) }
                        td { a href=(ctx.href(&format!("/endpoints/{}", d.endpoint_id))) { (d.endpoint_id) } }
                        td { a href=(ctx.href(&format!("/events/{}", d.event_id))) { (d.event_id) } }
                        td { (d.attempts) " / " (d.max_attempts) }
                        td { (time(d.updated_at)) }
                        td.clip { (d.last_error.as_deref().unwrap_or("")) }
                    }
                }
                @if list.is_empty() { tr { td colspan="7" { "No deliveries." } } }
            }
        }
    }
}

async fn replay(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let replayed = state.service().replay_event(&ctx.tenant, &id).await?;
    let notice = format!("{replayed} deliveries replayed; they are due now.");
    event_page(&state, &ctx, &id, Some(notice)).await
}

#[derive(Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    endpoint: Option<String>,
    event: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
}

async fn deliveries(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<DeliveriesQuery>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let status_text = non_empty(&q.status);
    let status = super::parse_status(status_text.as_deref())?;
    let endpoint = non_empty(&q.endpoint);
    let event = non_empty(&q.event);
    let window = Window::parse(&q.since, &q.until)?;
    let list = state
        .store
        .list_deliveries(
            &ctx.tenant,
            &DeliveryFilter {
                status,
                endpoint_id: endpoint.clone(),
                event_id: event.clone(),
                since: window.since,
                until: window.until,
                page: page_after(q.after.as_deref())?,
            },
        )
        .await?;
    let mut query = String::new();
    for (k, v) in [
        ("status", &status_text),
        ("endpoint", &endpoint),
        ("event", &event),
    ] {
        if let Some(v) = v {
            query.push_str(&format!("{k}={}&", urlencode(v)));
        }
    }
    window.push_query(&mut query);
    let statuses = ["pending", "delivered", "failed", "cancelled"];
    let content = html! {
        form.filters method="get" action=(ctx.href("/deliveries")) {
            label { "Status " select name="status" {
                option value="" { "any" }
                @for s in statuses { option value=(s) selected[status_text.as_deref() == Some(s)] { (s) } }
            } }
            label { "Endpoint " input type="text" name="endpoint" value=(endpoint.as_deref().unwrap_or("")) placeholder="ep_…"; }
            label { "Event " input type="text" name="event" value=(event.as_deref().unwrap_or("")) placeholder="evt_…"; }
            (window.fields())
            button type="submit" { "Filter" }
        }
        (delivery_table(&ctx, &list))
        (next_link(&list, |d| &d.id, &ctx.href("/deliveries"), &query))
    };
    Ok(layout(&state, &ctx, Nav::Deliveries, "Deliveries", content).await)
}

async fn delivery(
    State(state): State<AppState>,
    session: Session,
    Path((tenant, id)): Path<(String, String)>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let d = state
        .store
        .get_delivery(&ctx.tenant, &id)
        .await?
        .ok_or_else(|| UiError::not_found("delivery"))?;
    let attempts = state.store.list_attempts(&d.id).await?;
    let content = html! {
        section.card {
            table.kv {
                tr { th { "ID" } td id="delivery-id" { (d.id) } }
                tr { th { "Status" } td id="delivery-status" { (badge(d.status.as_str())) } }
                tr { th { "Event" } td { a href=(ctx.href(&format!("/events/{}", d.event_id))) { (d.event_id) } } }
                tr { th { "Endpoint" } td { a href=(ctx.href(&format!("/endpoints/{}", d.endpoint_id))) { (d.endpoint_id) } } }
                tr { th { "Attempts" } td { (d.attempts) " of " (d.max_attempts) } }
                tr { th { "Next attempt" } td { (opt_time(d.next_attempt_at)) } }
                tr { th { "Last error" } td { (d.last_error.as_deref().unwrap_or("")) } }
                tr { th { "Created" } td { (time(d.created_at)) } }
            }
            @if d.status != DeliveryStatus::Pending {
                form method="post" action=(ctx.href(&format!("/deliveries/{}/retry", d.id))) {
                    (ctx.csrf_field())
                    button type="submit" id="retry" { "Retry now" }
                }
            }
        }
        section.card {
            h2 { "Attempts" }
            table.list id="attempts" {
                thead { tr { th { "#" } th { "Started" } th { "Outcome" } th { "HTTP" } th { "Latency" } th { "Response" } th { "Error" } th { "Next attempt" } } }
                tbody {
                    @for a in &attempts {
                        tr.attempt {
                            td { (a.attempt_number) }
                            td { (time(a.started_at)) }
                            td { (badge(a.outcome.as_str())) }
                            td { (a.status_code.map(|c| c.to_string()).unwrap_or_else(|| "–".into())) }
                            td { (a.duration_ms) " ms" }
                            td { @if let Some(r) = &a.response { pre.excerpt { (r) } } }
                            td.clip { (a.error.as_deref().unwrap_or("")) }
                            td { (opt_time(a.next_attempt_at)) }
                        }
                    }
                    @if attempts.is_empty() { tr { td colspan="8" { "No attempts yet." } } }
                }
            }
        }
    };
    Ok(layout(
        &state,
        &ctx,
        Nav::Deliveries,
        &format!("Delivery {}", d.id),
        content,
    )
    .await)
}

async fn retry(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> Result<Redirect, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    state.service().retry_delivery(&ctx.tenant, &id).await?;
    Ok(Redirect::to(&ctx.href(&format!("/deliveries/{id}"))))
}
