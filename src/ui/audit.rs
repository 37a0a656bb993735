//! The audit trail of a tenant: who changed what, newest first, filtered by action.

use axum::{
    extract::{Query, State},
    routing::get,
    Router,
};
use maud::html;
use serde::Deserialize;

use super::{layout, next_link, page_after, time, Ctx, Nav, Session, UiResult};
use crate::{
    api::{AppState, Path},
    store::ops::AuditFilter,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/ui/t/{tenant}/audit", get(list))
}

#[derive(Deserialize)]
struct AuditQ {
    after: Option<String>,
    action: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
    Query(q): Query<AuditQ>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let action = q.action.filter(|a| !a.is_empty());
    let entries = state
        .store
        .list_audit(&AuditFilter {
            tenant_id: Some(ctx.tenant.clone()),
            action: action.clone(),
            page: page_after(q.after.as_deref())?,
            ..AuditFilter::default()
        })
        .await?;
    let query = action
        .as_deref()
        .map(|a| format!("action={}&", super::urlencode(a)))
        .unwrap_or_default();
    let content = html! {
        p { "Every configuration change of this tenant: who made it (a token id, admin, or system for hookrelay's own changes) and what changed. Secrets are never recorded." }
        form.inline method="get" action=(ctx.href("/audit")) {
            label { "Action " input type="text" name="action" value=(action.as_deref().unwrap_or("")) placeholder="endpoint.updated"; }
            button type="submit" { "Filter" }
        }
        table.list id="audit" {
            thead { tr { th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Changes" } } }
            tbody {
                @for e in &entries {
                    tr {
                        td { (time(e.created_at)) }
                        td { code { (e.actor) } }
                        td { (e.action) }
                        td { code { (e.target.as_deref().unwrap_or("")) } }
                        td { code { (e.changes.to_string()) } }
                    }
                }
                @if entries.is_empty() { tr { td colspan="5" { "No changes recorded." } } }
            }
        }
        (next_link(&entries, |e| &e.id, &ctx.href("/audit"), &query))
    };
    Ok(layout(&state, &ctx, Nav::Audit, "Audit trail", content).await)
}
