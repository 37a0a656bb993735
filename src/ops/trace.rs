//! Trace context: the W3C `traceparent` an event carries joins the producer's trace, the
//! attempt spans and the receiver's trace.

use crate::domain::Event;

/// The trace id (32 hex digits) of a `traceparent`, if it is well formed.
pub fn trace_id(traceparent: Option<&str>) -> Option<&str> {
    let tp = traceparent?;
    crate::ingest::valid_traceparent(tp)
        .then(|| tp.get(3..35))
        .flatten()
}

/// The span of one ingest, carrying the producer's trace id.
pub fn ingest_span(tenant: &str, traceparent: Option<&str>) -> tracing::Span {
    tracing::info_span!("ingest", tenant = %tenant, trace_id = trace_id(traceparent))
}

/// The span of one attempt, carrying the event's trace id.
pub fn attempt_span(
    event: &Event,
    endpoint_id: &str,
    delivery_id: &str,
    attempt: u32,
) -> tracing::Span {
    tracing::info_span!(
        "attempt",
        event_id = %event.id,
        endpoint_id = %endpoint_id,
        delivery_id = %delivery_id,
        attempt,
        trace_id = trace_id(event.traceparent.as_deref()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
