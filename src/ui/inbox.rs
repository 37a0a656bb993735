//! The inbox: the built-in test receiver's inboxes and the requests they captured, with
//! their signature verification.

use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use maud::html;
use serde::Deserialize;

use super::{
    badge, layout, next_link, non_empty, page_after, time, Ctx, Form, Nav, Session, UiError,
    UiResult,
};
use crate::api::{inbox::CreateInbox, AppState, Path};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/t/{tenant}/inboxes", get(list).post(create))
        .route("/ui/t/{tenant}/inboxes/{id}", get(detail))
}

#[derive(Deserialize)]
struct PageQ {
    after: Option<String>,
}

/// The inbox's URL on the address this request came to.
fn inbox_url(headers: &HeaderMap, token: &str) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8400");
    let scheme = if super::https(headers) {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}/inbox/{token}")
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(q): Query<PageQ>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let inboxes = state
        .store
        .list_inboxes(&ctx.tenant, &page_after(q.after.as_deref())?)
        .await?;
    let content = html! {
        p { "An inbox receives webhooks at its URL and keeps the newest requests, with whether their signature verified against its secret. Point an endpoint at it with that secret." }
        section.card {
            form.inline method="post" action=(ctx.href("/inboxes")) id="create-inbox" {
                (ctx.csrf_field())
                label { "Description " input type="text" name="description" maxlength="1024"; }
                button type="submit" id="create-inbox-submit" { "Create inbox" }
            }
        }
        table.list id="inboxes" {
            thead { tr { th { "Inbox" } th { "URL" } th { "Description" } th { "Created" } } }
            tbody {
                @for i in &inboxes {
                    tr {
                        td { a href=(ctx.href(&format!("/inboxes/{}", i.id))) { (i.id) } }
                        td { code.inbox-url { (inbox_url(&headers, &i.token)) } }
                        td { (i.description.as_deref().unwrap_or("")) }
                        td { (time(i.created_at)) }
                    }
                }
                @if inboxes.is_empty() { tr { td colspan="4" { "No inboxes yet." } } }
            }
        }
        (next_link(&inboxes, |i| &i.id, &ctx.href("/inboxes"), ""))
    };
    Ok(layout(&state, &ctx, Nav::Inbox, "Inbox", content).await)
}

#[derive(Deserialize)]
struct CreateForm {
    description: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Form(session, f): Form<CreateForm>,
) -> Result<Response, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let request = CreateInbox {
        secret: None,
        description: non_empty(&f.description),
    };
    let inbox = state
        .service()
        .create_inbox(&ctx.caller(), &ctx.tenant, request)
        .await?;
    Ok(Redirect::to(&ctx.href(&format!("/inboxes/{}", inbox.id))).into_response())
}

async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path((tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<PageQ>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let inbox = state
        .store
        .get_inbox(&ctx.tenant, &id)
        .await?
        .ok_or_else(|| UiError::not_found("inbox"))?;
    let messages = state
        .store
        .list_inbox_messages(&inbox.id, &page_after(q.after.as_deref())?)
        .await?;
    let base = ctx.href(&format!("/inboxes/{}", inbox.id));
    let content = html! {
        section.card {
            table.kv {
                tr { th { "URL" } td { code id="inbox-url" { (inbox_url(&headers, &inbox.token)) } } }
                tr { th { "Secret" } td { details { summary { "show" } code id="inbox-secret" { (inbox.secret.as_deref().unwrap_or("none")) } } } }
                tr { th { "Description" } td { (inbox.description.as_deref().unwrap_or("")) } }
                tr { th { "Keeps" } td { "the newest " (crate::api::inbox::KEEP) " requests" } }
            }
        }
        h2 { "Received" }
        @if messages.is_empty() { p { "Nothing received yet." } }
        @for m in &messages {
            article.card.message {
                header {
                    strong { (m.method) } " " (time(m.received_at)) " "
                    (badge(m.verification.as_str()))
                    @if let Some(e) = &m.verify_error { " " span.error { (e) } }
                    @if m.truncated { " " span.note { "(body truncated)" } }
                }
                details {
                    summary { "Headers" }
                    table.kv {
                        @for (k, v) in &m.headers { tr { th { (k) } td { (v) } } }
                    }
                }
                pre.payload { (m.body) }
            }
        }
        (next_link(&messages, |m| &m.id, &base, ""))
    };
    Ok(layout(
        &state,
        &ctx,
        Nav::Inbox,
        &format!("Inbox {}", inbox.id),
        content,
    )
    .await)
}
