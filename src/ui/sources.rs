//! Sources: the brokers a tenant's events are read from, each with its consumer's state in
//! this process, and the messages that could not become events. Admins add and delete them.

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use maud::html;
use serde::Deserialize;

use super::{
    badge, layout, next_link, non_empty, page_after, time, Ctx, Form, Nav, Session, UiError,
    UiResult,
};
use crate::api::{
    sources::{CreateSource, SourceOut},
    AppState, Path,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui/t/{tenant}/sources", get(list).post(create))
        .route("/ui/t/{tenant}/sources/{id}", get(detail))
        .route("/ui/t/{tenant}/sources/{id}/delete", post(delete))
}

#[derive(Deserialize)]
struct PageQ {
    after: Option<String>,
}

fn count(n: Option<u64>) -> String {
    n.map_or_else(|| "–".to_owned(), |n| n.to_string())
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<PageQ>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let sources: Vec<SourceOut> = state
        .store
        .list_sources(Some(&ctx.tenant), &page_after(q.after.as_deref())?)
        .await?
        .into_iter()
        .map(|s| SourceOut::new(s, &state))
        .collect();
    let content = html! {
        p { "A source reads a broker (Redis Streams, NATS JetStream, SQS, RabbitMQ, Kafka) and turns each message into an event of this tenant, as the events API would. Messages that cannot become events are kept with the reason." }
        @if ctx.session.is_admin() {
            section.card {
                form.inline method="post" action=(ctx.href("/sources")) id="create-source" {
                    (ctx.csrf_field())
                    label { "URL " input type="text" name="url" required size="60" maxlength="2048" placeholder="redis://127.0.0.1:6379/0?stream=jobs"; }
                    label { "Description " input type="text" name="description" maxlength="1024"; }
                    button type="submit" id="create-source-submit" { "Add source" }
                }
            }
        }
        table.list id="sources" {
            thead { tr { th { "Source" } th { "URL" } th { "Status" } th { "Lag" } th { "Pending" } th { "Ingested" } th { "Rejected" } th { "Last error" } } }
            tbody {
                @for s in &sources {
                    tr {
                        td { a href=(ctx.href(&format!("/sources/{}", s.id))) { (s.id) } }
                        td { code { (s.url) } }
                        @match &s.state {
                            Some(st) => {
                                td { (badge(status_text(st))) }
                                td { (count(st.lag)) }
                                td { (count(st.pending)) }
                                td { (st.ingested) }
                                td { (st.rejected) }
                                td { (st.last_error.as_deref().unwrap_or("")) }
                            }
                            None => { td colspan="6" { "not consumed by this process" } }
                        }
                    }
                }
                @if sources.is_empty() { tr { td colspan="8" { "No sources." } } }
            }
        }
        (next_link(&sources, |s| &s.id, &ctx.href("/sources"), ""))
    };
    Ok(layout(&state, &ctx, Nav::Sources, "Sources", content).await)
}

fn status_text(s: &crate::ops::source_states::SourceState) -> &'static str {
    match s.status {
        crate::ops::source_states::SourceStatus::Starting => "starting",
        crate::ops::source_states::SourceStatus::Running => "running",
        crate::ops::source_states::SourceStatus::Standby => "standby",
        crate::ops::source_states::SourceStatus::Failing => "failing",
    }
}

#[derive(Deserialize)]
struct CreateForm {
    url: String,
    description: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    Form(session, f): Form<CreateForm>,
) -> Result<Response, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let request = CreateSource {
        url: f.url.trim().to_owned(),
        description: non_empty(&f.description),
    };
    let source = state
        .service()
        .create_source(&ctx.caller(), &ctx.tenant, request)
        .await?;
    Ok(Redirect::to(&ctx.href(&format!("/sources/{}", source.id))).into_response())
}

async fn delete(
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
    Form(session, _): Form<serde::de::IgnoredAny>,
) -> Result<Response, UiError> {
    let ctx = Ctx::new(&state, session, tenant).await?;
    state
        .service()
        .delete_source(&ctx.caller(), &ctx.tenant, &id)
        .await?;
    Ok(Redirect::to(&ctx.href("/sources")).into_response())
}

async fn detail(
    State(state): State<AppState>,
    session: Session,
    Path((tenant, id)): Path<(String, String)>,
    Query(q): Query<PageQ>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let source = state
        .store
        .get_source(&ctx.tenant, &id)
        .await?
        .ok_or_else(|| UiError::not_found("source"))?;
    let rejections = state
        .store
        .list_source_rejections(&source.id, &page_after(q.after.as_deref())?)
        .await?;
    let source = SourceOut::new(source, &state);
    let base = ctx.href(&format!("/sources/{}", source.id));
    let content = html! {
        section.card {
            table.kv id="source" {
                tr { th { "URL" } td { code { (source.url) } } }
                tr { th { "Kind" } td { (source.kind) } }
                tr { th { "Description" } td { (source.description.as_deref().unwrap_or("")) } }
                tr { th { "Created" } td { (time(source.created_at)) } }
                @if let Some(st) = &source.state {
                    tr { th { "Status" } td { (badge(status_text(st))) } }
                    tr { th { "Lag / pending" } td { (count(st.lag)) " / " (count(st.pending)) } }
                    tr { th { "Ingested / duplicates / rejected" } td { (st.ingested) " / " (st.duplicates) " / " (st.rejected) } }
                    @if let Some(e) = &st.last_error { tr { th { "Last error" } td.error { (e) } } }
                }
            }
            @if ctx.session.is_admin() {
                form.inline method="post" action=(format!("{base}/delete")) id="delete-source" {
                    (ctx.csrf_field())
                    button type="submit" { "Delete source" }
                }
            }
        }
        h2 { "Rejected messages" }
        table.list id="rejections" {
            thead { tr { th { "Received" } th { "Message" } th { "Reason" } th { "Body" } } }
            tbody {
                @for r in &rejections {
                    tr {
                        td { (time(r.received_at)) }
                        td { code { (r.message_id) } }
                        td.error { (r.reason) }
                        td { code { (r.body) } @if r.truncated { " …" } }
                    }
                }
                @if rejections.is_empty() { tr { td colspan="4" { "None." } } }
            }
        }
        (next_link(&rejections, |r| &r.id, &base, ""))
    };
    Ok(layout(
        &state,
        &ctx,
        Nav::Sources,
        &format!("Source {}", source.id),
        content,
    )
    .await)
}
