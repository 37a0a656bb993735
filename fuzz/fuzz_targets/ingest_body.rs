//! The body of POST /v1/tenants/{tenant}/events: deserialization into the API's request
//! type, then the ingest checks that need no store. Neither may panic.
#![no_main]

use hookrelay::{api::CreateEvent, ingest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<CreateEvent>(data) else {
        return;
    };
    let new = ingest::NewEvent {
        event_type: body.event_type,
        data: body.data,
        actor: body.actor,
        idempotency_key: body.idempotency_key,
        deliver_at: body.deliver_at,
        traceparent: None,
    };
    let _ = ingest::validate(&new);
    let _ = ingest::valid_traceparent(&new.event_type);
    // A schema from the wire (event types carry one): compiling and checking must not panic.
    if let Ok(validator) = ingest::compile_schema(&new.data) {
        let _ = validator.is_valid(&new.data);
    }
});
