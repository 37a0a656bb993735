//! Operations routes: `GET /v1/health`, `GET /metrics`, and the endpoint test
//! (`POST …/endpoints/{id}/test`).

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::error;
use utoipa::ToSchema;

use super::{ApiError, AppState, Id, InTenant, Principal};
use crate::{
    dispatch::{send_test, TestSend},
    domain::{self, AttemptOutcome, DeliveryStatus},
    ops::health::{HealthReport, Snapshot},
};

/// Event type of the messages sent by the endpoint test.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/health", get(health))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route(
            "/v1/tenants/{tenant}/endpoints/{id}/test",
            post(test_endpoint),
        )
}

/// Health: totals of the last hour and day, pending deliveries, latency, open breakers,
/// disabled endpoints, dispatcher heartbeats, firing alerts; `healthy: false` with the
/// reasons when a rule fails, answered with `503`. Admin token only.
#[utoipa::path(get, path = "/v1/health", tag = "operations",
    responses((status = 200, body = HealthReport),
              (status = 503, description = "a rule fails (the same body)", body = HealthReport),
              (status = 403, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn health(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<(StatusCode, axum::Json<HealthReport>), ApiError> {
    principal.require_admin()?;
    let snapshot = Snapshot::read(state.store.as_ref()).await?;
    let report = snapshot
        .report(&state.config.alerts.thresholds)
        .with_sources(state.ops.sources.snapshot());
    Ok((report.http_status(), axum::Json(report)))
}

/// For uptime monitors, without a token: `200 {"healthy": true, "failing": []}`, or `503`
/// with the names of the failing rules. No id or count of any tenant's. Read at most every
/// 5 seconds per process (the route is open).
#[utoipa::path(get, path = "/status", tag = "operations",
    responses((status = 200, body = crate::ops::health::Status),
              (status = 503, description = "a rule fails", body = crate::ops::health::Status)))]
pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut cached = state.ops.status.lock().await;
    let fresh = cached
        .as_ref()
        .filter(|(at, _)| at.elapsed() < crate::ops::metrics::STORE_GAUGES_MAX_AGE)
        .map(|(_, s)| s.clone());
    let status = match fresh {
        Some(s) => s,
        None => {
            let snapshot = Snapshot::read(state.store.as_ref()).await?;
            let s = snapshot.status(&state.config.alerts.thresholds);
            *cached = Some((std::time::Instant::now(), s.clone()));
            s
        }
    };
    let status = status.with_sources(&state.ops.sources.snapshot());
    let code = if status.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((code, axum::Json(status)).into_response())
}

/// Prometheus metrics, text exposition format (no authentication, like `/healthz`).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.ops.metrics;
    // The store's gauges are read at scrape time (so every process reports the same), at
    // most once per STORE_GAUGES_MAX_AGE: the route is open, and counting is not free.
    let mut read_at = m.store_read_at.lock().await;
    if read_at.is_none_or(|at| at.elapsed() >= crate::ops::metrics::STORE_GAUGES_MAX_AGE) {
        refresh_store_gauges(state.store.as_ref(), m).await;
        *read_at = Some(std::time::Instant::now());
    }
    drop(read_at);
    match m.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e, "metrics: cannot render");
            ApiError::internal().into_response()
        }
    }
}

/// Reads the store's gauges into `m` (pending deliveries, the oldest one's age, breakers,
/// disabled endpoints, firing alerts).
async fn refresh_store_gauges(store: &dyn crate::store::Store, m: &crate::ops::metrics::Metrics) {
    match tokio::try_join!(
        store.pending_summary(),
        store.flagged_endpoints(100_000),
        store.list_alerts()
    ) {
        Ok((pending, flagged, alerts)) => {
            let as_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            m.pending
                .set(i64::try_from(pending.count).unwrap_or(i64::MAX));
            m.oldest_pending_age.set(
                pending
                    .oldest_created_at
                    .map(|t| (domain::now() - t).num_seconds().max(0))
                    .unwrap_or(0),
            );
            m.open_breakers.set(as_i64(
                flagged
                    .iter()
                    .filter(|e| e.breaker_state != "closed")
                    .count(),
            ));
            m.disabled_endpoints
                .set(as_i64(flagged.iter().filter(|e| !e.enabled).count()));
            m.alerts_firing.set(as_i64(
                alerts.iter().filter(|a| a.resolved_at.is_none()).count(),
            ));
        }
        Err(e) => error!(error = %e, "metrics: cannot read the store's gauges"),
    }
}

/// Most endpoint tests one tenant may run at once. A test sends at once, outside the
/// dispatcher's concurrency limits, so this keeps one tenant from opening many outgoing
/// requests at a time through them.
pub const MAX_TESTS_PER_TENANT: usize = 4;

/// Endpoint tests in flight, per tenant (in this process).
#[derive(Default)]
pub struct TestSlots(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One endpoint test in flight; dropping it frees the tenant's slot.
pub struct TestSlot<'a> {
    slots: &'a TestSlots,
    tenant: String,
}

impl TestSlots {
    /// Takes one of `tenant`'s test slots, or answers `429` when all are taken.
    pub fn enter(&self, tenant: &str) -> Result<TestSlot<'_>, ApiError> {
        let mut map = self.0.lock().map_err(|_| ApiError::internal())?;
        let n = map.entry(tenant.to_owned()).or_default();
        if *n >= MAX_TESTS_PER_TENANT {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_tests",
                format!(
                    "at most {MAX_TESTS_PER_TENANT} endpoint tests run at a time per tenant; wait for one to finish"
                ),
            ));
        }
        *n += 1;
        Ok(TestSlot {
            slots: self,
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for TestSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.slots.0.lock() {
            if let Some(n) = map.get_mut(&self.tenant) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(&self.tenant);
                }
            }
        }
    }
}

/// Optional body of an endpoint test.
#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct TestRequest {
    /// The test event's data; a small message by default.
    #[schema(value_type = Option<Value>)]
    pub data: Option<serde_json::Value>,
}

/// What the test attempt did.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The `webhook.test` event (its `webhook-id`).
    pub event_id: String,
    /// The delivery, kept in the log like any other.
    pub delivery_id: String,
    /// `delivered` or `failed`.
    pub status: DeliveryStatus,
    /// `success` or `failed`.
    pub outcome: AttemptOutcome,
    /// The endpoint's HTTP status, when it answered.
    pub status_code: Option<u16>,
    /// Duration of the attempt.
    pub latency_ms: u64,
    /// The first KiB of the answer.
    pub response: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
}

/// Test an endpoint: sends a `webhook.test` event to it now, through the same destination
/// and signing as any delivery (whatever its breaker or enabled state), records the attempt
/// in the log, and answers with the result. The event goes to this endpoint only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/endpoints/{id}/test", tag = "endpoints",
    params(("tenant" = String, Path), ("id" = String, Path),
           ("traceparent" = Option<String>, Header, description = "W3C trace context")),
    request_body = Option<TestRequest>,
    responses((status = 200, body = TestResult), (status = 400, body = super::ErrorBody),
              (status = 429, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_endpoint(
    call: InTenant,
    Id(id): Id,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<TestResult>, ApiError> {
    let req: TestRequest = super::optional_json(&body)?;
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    run_test(
        &call.state,
        &call.tenant,
        &id,
        req.data,
        traceparent,
        TEST_EVENT_TYPE,
    )
    .await
    .map(axum::Json)
}

/// The endpoint test behind the route and the dashboard's and the portal's buttons (the
/// caller has checked access to `tenant`): sends `data` (or a default message) as an event
/// of `event_type` (`webhook.test` from the API).
pub(crate) async fn run_test(
    state: &AppState,
    tenant: &str,
    id: &str,
    data: Option<serde_json::Value>,
    traceparent: Option<String>,
    event_type: &str,
) -> Result<TestResult, ApiError> {
    // Held until the attempt is written: a tenant's tests are few at a time.
    let _slot = state.endpoint_tests.enter(tenant)?;
    let endpoint = state
        .store
        .get_endpoint(tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    let data = match data {
        Some(serde_json::Value::Null) | None => serde_json::json!({
            "message": "Test event from hookrelay",
            "endpoint_id": endpoint.id,
        }),
        Some(d) => d,
    };
    let ctx = TestSend {
        store: state.store.as_ref(),
        ops: &state.ops,
        retry: &state.config.retry,
        breaker: &state.config.breaker,
        lease: state.config.dispatch.lease,
    };
    let (event_id, c) = send_test(ctx, endpoint, event_type, data, traceparent).await?;
    Ok(TestResult {
        event_id,
        delivery_id: c.delivery_id,
        status: c.status,
        outcome: c.attempt.outcome,
        status_code: c.attempt.status_code,
        latency_ms: c.attempt.duration_ms,
        response: c.attempt.response,
        error: c.attempt.error,
        started_at: c.attempt.started_at,
    })
}
