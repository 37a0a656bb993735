//! Trace context: the W3C `traceparent` an event carries joins the producer's trace, the
//! attempt spans and the receiver's trace (see [`crate::telemetry`] for the export).

use std::collections::HashMap;

use opentelemetry::{
    propagation::{TextMapCompositePropagator, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::domain::Event;

/// Makes `span` a child of the remote span named by `traceparent` (when spans are exported).
fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent.filter(|tp| valid_traceparent(tp)) else {
        return;
    };
    let carrier: HashMap<String, String> = [("traceparent".to_owned(), tp.to_owned())].into();
    let cx = propagator().extract(&carrier);
    let _ = span.set_parent(cx);
}

fn propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![Box::new(TraceContextPropagator::new())])
}

/// The `traceparent` that names `span`, when spans are exported (otherwise `None`: the
/// event's own `traceparent` is sent unchanged).
pub fn outgoing_traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    propagator().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The trace context an event keeps: the producer's when it gave a well-formed one; else,
/// when spans are exported, the span it was taken in (the ingest span, so the attempts join
/// hookrelay's own trace); else a new one. Every event thus carries a trace id that its
/// deliveries send on and its attempts' log lines share.
pub fn event_traceparent(given: Option<String>) -> String {
    given
        .filter(|tp| valid_traceparent(tp))
        .or_else(|| outgoing_traceparent(&tracing::Span::current()))
        .unwrap_or_else(new_traceparent)
}

/// A new W3C trace context: random trace and parent ids (never all zero), sampled.
pub fn new_traceparent() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let trace: u128 = rng.gen::<u128>() | 1;
    let parent: u64 = rng.gen::<u64>() | 1;
    format!("00-{trace:032x}-{parent:016x}-01")
}

/// The trace id (32 hex digits) of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: Option<&str>) -> Option<&str> {
    let tp = traceparent?;
    valid_traceparent(tp).then(|| tp.get(3..35)).flatten()
}

/// The span of one ingest, carrying the producer's trace id.
pub fn ingest_span(tenant: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!("ingest", tenant = %tenant, trace_id = trace_id(traceparent));
    adopt(&span, traceparent);
    span
}

/// The span of one attempt, carrying the event's trace id.
pub fn attempt_span(
    event: &Event,
    endpoint_id: &str,
    delivery_id: &str,
    attempt: u32,
) -> tracing::Span {
    let span = tracing::info_span!(
        "attempt",
        event_id = %event.id,
        endpoint_id = %endpoint_id,
        delivery_id = %delivery_id,
        attempt,
        trace_id = trace_id(event.traceparent.as_deref()),
    );
    adopt(&span, event.traceparent.as_deref());
    span
}

/// Checks a W3C `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`).
pub fn valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("garbage"));
    }

    #[test]
    fn events_without_a_trace_context_get_a_new_one() {
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(event_traceparent(Some(given.into())), given);
        let made = event_traceparent(None);
        assert!(valid_traceparent(&made), "{made}");
        assert!(made.ends_with("-01"));
        let bad = event_traceparent(Some("garbage".into()));
        assert!(valid_traceparent(&bad));
        assert_ne!(trace_id(Some(&made)), trace_id(Some(&bad)));
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id(Some(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            )),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(Some("garbage")), None);
        assert_eq!(trace_id(None), None);
    }

    #[test]
    fn without_an_exporter_the_producers_traceparent_goes_on_unchanged() {
        let span = tracing::info_span!("x");
        adopt(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(outgoing_traceparent(&span), None);
    }
}
