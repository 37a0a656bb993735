//! The overview: healthy or not and why, throughput charts, latency, pending work, open
//! breakers. Read from the same small reads as `GET /v1/health` (per-minute counters and
//! indexes), never from the delivery history.

use axum::extract::State;
use maud::{html, Markup};

use super::{layout, opt_time, Ctx, Nav, Session, UiResult};
use crate::{
    api::{AppState, Path},
    ops::health::Snapshot,
    store::ops::{minute_of, MinuteStats},
};

/// `GET /ui/t/{tenant}`.
pub async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(tenant): Path<String>,
) -> UiResult {
    let ctx = Ctx::new(&state, session, tenant).await?;
    let content = if ctx.session.is_admin() {
        admin_overview(&state, &ctx).await?
    } else {
        tenant_overview(&state, &ctx).await?
    };
    Ok(layout(&state, &ctx, Nav::Overview, "Overview", content).await)
}

/// A tenant sees its own endpoints that need attention; the service-wide numbers are the
/// admin's.
async fn tenant_overview(state: &AppState, ctx: &Ctx) -> UiResult {
    let flagged: Vec<_> = state
        .store
        .flagged_endpoints(1000)
        .await?
        .into_iter()
        .filter(|f| f.tenant_id == ctx.tenant)
        .collect();
    Ok(html! {
        section.card {
            h2 { "Endpoints needing attention" }
            @if flagged.is_empty() {
                p.ok { "All endpoints are enabled and their circuit breakers closed." }
            } @else {
                table {
                    thead { tr { th { "Endpoint" } th { "Breaker" } th { "Enabled" } th { "Reason" } } }
                    tbody {
                        @for f in &flagged {
                            tr {
                                td { a href=(ctx.href(&format!("/endpoints/{}", f.id))) { (f.id) } }
                                td { (super::badge(&f.breaker_state)) }
                                td { (if f.enabled { "yes" } else { "no" }) }
                                td { (f.disabled_reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        p.note { "Service-wide health and throughput are shown to the admin token." }
    })
}

async fn admin_overview(state: &AppState, ctx: &Ctx) -> UiResult {
    let snapshot = Snapshot::read(state.store.as_ref()).await?;
    let report = snapshot.report(&state.config.alerts.thresholds);
    let now_minute = minute_of(snapshot.now);
    let ms = |v: Option<f64>| {
        v.map(|v| format!("{v:.0} ms"))
            .unwrap_or_else(|| "–".into())
    };
    let h = &report.stats.last_hour;
    let d = &report.stats.last_24_hours;
    let open: Vec<_> = snapshot
        .flagged
        .iter()
        .filter(|f| f.breaker_state != "closed")
        .collect();
    Ok(html! {
        section.card.health.good[report.healthy].bad[!report.healthy] id="health" {
            @if report.healthy {
                h2 { "Healthy" }
                p { "Every health rule passes." }
            } @else {
                h2 { "Unhealthy" }
                ul.reasons { @for r in &report.reasons { li { (r) } } }
            }
        }
        div.cards {
            section.card.stat {
                h3 { "Last hour" }
                p.big { (h.delivered) " delivered" }
                p { (h.failed) " failed · " (h.retries) " retries · " (format!("{:.1} %", h.failure_rate * 100.0)) " failing attempts" }
            }
            section.card.stat {
                h3 { "Last 24 hours" }
                p.big { (d.delivered) " delivered" }
                p { (d.failed) " failed · " (d.retries) " retries" }
            }
            section.card.stat {
                h3 { "Latency p95 (end to end)" }
                p.big id="p95" { (ms(h.latency_ms.p95)) }
                p { "last hour; " (ms(d.latency_ms.p95)) " over 24 hours" }
            }
            section.card.stat {
                h3 { "Pending" }
                p.big id="pending" { (report.pending) }
                p { "oldest since " (opt_time(snapshot.oldest_pending)) }
            }
            section.card.stat {
                h3 { "Open breakers" }
                p.big id="open-breakers" { (open.len()) }
                p { (snapshot.flagged.iter().filter(|f| !f.enabled).count()) " endpoints disabled" }
            }
        }
        section.card {
            h2 { "Deliveries per minute, last hour" }
            (chart(&snapshot.minutes, now_minute, 60, 1))
        }
        section.card {
            h2 { "Deliveries per minute, last 24 hours (10-minute averages)" }
            (chart(&snapshot.minutes, now_minute, 144, 10))
        }
        @if !open.is_empty() {
            section.card {
                h2 { "Open circuit breakers" }
                table {
                    thead { tr { th { "Endpoint" } th { "Tenant" } th { "Breaker" } } }
                    tbody {
                        @for f in &open {
                            tr {
                                td { a href=(format!("/ui/t/{}/endpoints/{}", super::urlencode(&f.tenant_id), f.id)) { (f.id) } }
                                td { (f.tenant_id) }
                                td { (super::badge(&f.breaker_state)) }
                            }
                        }
                    }
                }
            }
        }
        @if !report.alerts.is_empty() {
            section.card {
                h2 { "Firing alerts" }
                ul { @for a in &report.alerts { li { strong { (a.rule) } " " (a.message) } } }
            }
        }
        p.note { "Tenant shown: " (ctx.tenant) ". These numbers cover every tenant." }
    })
}

/// Stacked bars (delivered, retrying, failed) of `bars` buckets of `per` minutes each,
/// ending at `now_minute`; values are per minute. Inline SVG, no script.
fn chart(minutes: &[MinuteStats], now_minute: i64, bars: usize, per: i64) -> Markup {
    let span = bars as i64 * per;
    let first = now_minute - span + 1;
    let mut sums = vec![(0u64, 0u64, 0u64); bars];
    for m in minutes
        .iter()
        .filter(|m| m.minute >= first && m.minute <= now_minute)
    {
        let i = usize::try_from((m.minute - first) / per).unwrap_or(0);
        if let Some(s) = sums.get_mut(i) {
            s.0 += m.delivered;
            s.1 += m.retried;
            s.2 += m.failed;
        }
    }
    let per_f = per as f64;
    let values: Vec<(f64, f64, f64)> = sums
        .iter()
        .map(|(d, r, f)| (*d as f64 / per_f, *r as f64 / per_f, *f as f64 / per_f))
        .collect();
    let max = values
        .iter()
        .map(|(d, r, f)| d + r + f)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let (w, h) = (720.0_f64, 140.0_f64);
    let bw = w / bars as f64;
    let scale = |v: f64| v / max * (h - 10.0);
    html! {
        svg.chart viewBox=(format!("0 0 {w} {}", h + 20.0)) role="img" aria-label="deliveries per minute" {
            line x1="0" y1=(h) x2=(w) y2=(h) class="axis" {}
            @for (i, (d, r, f)) in values.iter().enumerate() {
                @let x = i as f64 * bw;
                @let hd = scale(*d);
                @let hr = scale(*r);
                @let hf = scale(*f);
                @let label = format!("{} min ago: {:.1} delivered, {:.1} retrying, {:.1} failed per minute",
                    (bars - i) as i64 * per, d, r, f);
                g {
                    title { (label) }
                    rect.delivered x=(format!("{x:.1}")) y=(format!("{:.1}", h - hd)) width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{hd:.1}")) {}
                    rect.retrying x=(format!("{x:.1}")) y=(format!("{:.1}", h - hd - hr)) width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{hr:.1}")) {}
                    rect.failed x=(format!("{x:.1}")) y=(format!("{:.1}", h - hd - hr - hf)) width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{hf:.1}")) {}
                }
            }
            text x="2" y="10" class="label" { (format!("{max:.1}/min")) }
            text x="2" y=(h + 16.0) class="label" { (format!("−{span} min")) }
            text x=(w - 2.0) y=(h + 16.0) class="label end" { "now" }
        }
        p.legend {
            span.key.delivered {} "delivered " span.key.retrying {} "retrying " span.key.failed {} "failed"
        }
    }
}
