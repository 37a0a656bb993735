//! Ingest: validate a new event, apply idempotency, fan it out to the subscribed endpoints
//! (inside the store's transaction) and wake the dispatcher.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::{
    domain::{self, new_id_at, prefix, Event, EventType},
    store::{DataCheck, Ingested, Store, StoreError},
    wake::Waker,
};

/// Why an event was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Invalid(String),
    /// The data fails its type's JSON Schema; the message names the path.
    #[error("{0}")]
    Schema(String),
    #[error("tenant {0} not found")]
    UnknownTenant(String),
    /// The strict catalog is on and the type is not in it.
    #[error("event type {0} is not in the catalog")]
    UnknownEventType(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidData(m) => IngestError::Schema(m),
            StoreError::UnknownTenant(t) => IngestError::UnknownTenant(t),
            StoreError::UnknownEventType(t) => IngestError::UnknownEventType(t),
            other => IngestError::Store(other),
        }
    }
}

/// A new event as a producer hands it over.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    pub event_type: String,
    pub data: serde_json::Value,
    pub actor: Option<String>,
    pub idempotency_key: Option<String>,
    pub deliver_at: Option<DateTime<Utc>>,
    pub traceparent: Option<String>,
}

/// Checks an event-type name: dot-separated segments of letters, digits, `_` and `-`.
pub fn validate_type_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid event type {name:?}: use dot-separated words of letters, digits, '_' and '-' (at most 128 characters), e.g. user.joined_community"
        ))
    }
}

/// Compiled JSON Schemas by event type. Keyed by the schema text as well, so a cached
/// validator can never disagree with the stored schema.
#[derive(Default)]
pub struct SchemaCache {
    compiled: Mutex<HashMap<String, (String, Arc<jsonschema::Validator>)>>,
    /// Refuse events whose type is not in the catalog.
    strict: bool,
}

impl SchemaCache {
    /// A cache that also enforces the strict catalog when `strict` is true.
    pub fn new(strict: bool) -> Self {
        Self {
            strict,
            ..Self::default()
        }
    }

    /// Validates `data` against `schema` (the stored schema of `event_type`).
    pub fn check(
        &self,
        event_type: &str,
        schema: &serde_json::Value,
        data: &serde_json::Value,
    ) -> Result<(), IngestError> {
        let text = schema.to_string();
        let cached = self.compiled.lock().ok().and_then(|m| {
            m.get(event_type)
                .filter(|(t, _)| *t == text)
                .map(|(_, v)| v.clone())
        });
        let validator = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(compile_schema(schema).map_err(|e| {
                    IngestError::Invalid(format!("stored schema of {event_type} is invalid: {e}"))
                })?);
                if let Ok(mut m) = self.compiled.lock() {
                    m.insert(event_type.to_owned(), (text, v.clone()));
                }
                v
            }
        };
        let first_error = validator
            .iter_errors(data)
            .next()
            .map(|e| (e.instance_path.to_string(), e.to_string()));
        match first_error {
            None => Ok(()),
            Some((path, message)) => Err(IngestError::Schema(format!(
                "data does not match the schema of {event_type} at {:?}: {message}",
                if path.is_empty() { "/" } else { &path }
            ))),
        }
    }
}

impl DataCheck for SchemaCache {
    fn check(&self, event_type: &EventType, data: &serde_json::Value) -> Result<(), String> {
        match &event_type.schema {
            Some(schema) => {
                SchemaCache::check(self, &event_type.name, schema, data).map_err(|e| e.to_string())
            }
            None => Ok(()),
        }
    }

    fn accepts_unknown_types(&self) -> bool {
        !self.strict
    }
}

/// Compiles a JSON Schema, refusing one that is not valid.
pub fn compile_schema(schema: &serde_json::Value) -> Result<jsonschema::Validator, String> {
    if !schema.is_object() && !schema.is_boolean() {
        return Err("schema must be a JSON object".into());
    }
    jsonschema::validator_for(schema).map_err(|e| e.to_string())
}

/// The checks of an event that need no store: type name, actor, idempotency key, data.
pub fn validate(new: &NewEvent) -> Result<(), IngestError> {
    validate_type_name(&new.event_type).map_err(IngestError::Invalid)?;
    if let Some(actor) = &new.actor {
        if actor.len() > 256 {
            return Err(IngestError::Invalid(
                "actor is longer than 256 characters".into(),
            ));
        }
    }
    if let Some(key) = &new.idempotency_key {
        if key.is_empty() || key.len() > 256 {
            return Err(IngestError::Invalid(
                "idempotency key must be 1 to 256 characters".into(),
            ));
        }
    }
    if new.data.is_null() {
        return Err(IngestError::Invalid("data is required".into()));
    }
    Ok(())
}

/// How far ahead `deliver_at` may schedule an event: a tenant cannot park deliveries in
/// the store for longer.
pub const MAX_DELIVER_AT_DAYS: i64 = 30;

/// Validates and stores an event for `tenant_id`, fanning it out; wakes the dispatcher.
pub async fn ingest(
    store: &dyn Store,
    schemas: Arc<SchemaCache>,
    waker: &Waker,
    tenant_id: &str,
    default_max_attempts: u32,
    new: NewEvent,
) -> Result<Ingested, IngestError> {
    validate(&new)?;
    let now = domain::now();
    if let Some(at) = new.deliver_at {
        if at > now + chrono::Duration::days(MAX_DELIVER_AT_DAYS) {
            return Err(IngestError::Invalid(format!(
                "deliver_at is more than {MAX_DELIVER_AT_DAYS} days ahead, the most allowed"
            )));
        }
    }
    let event = Event {
        id: new_id_at(prefix::EVENT, now),
        tenant_id: tenant_id.to_owned(),
        event_type: new.event_type,
        data: new.data,
        actor: new.actor,
        idempotency_key: new.idempotency_key,
        traceparent: Some(crate::telemetry::trace::event_traceparent(new.traceparent)),
        created_at: now,
        deliver_at: new.deliver_at.filter(|t| *t > now),
    };
    let result = store.ingest(event, default_max_attempts, schemas).await?;
    if let Ingested::Created(_, deliveries) = &result {
        if !deliveries.is_empty() {
            waker.wake();
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert!(validate_type_name("user.joined_community").is_ok());
        assert!(validate_type_name("a-b.c_d.e1").is_ok());
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a.*",
            "ü.x",
            &"x".repeat(129),
        ] {
            assert!(validate_type_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn schema_errors_name_the_path() {
        let cache = SchemaCache::default();
        let schema = serde_json::json!({
            "type": "object",
            "required": ["user_id"],
            "properties": {"user_id": {"type": "string"}, "n": {"type": "integer"}}
        });
        assert!(cache
            .check("t", &schema, &serde_json::json!({"user_id": "u1"}))
            .is_ok());
        match cache.check(
            "t",
            &schema,
            &serde_json::json!({"user_id": "u1", "n": "x"}),
        ) {
            Err(IngestError::Schema(m)) => assert!(m.contains("\"/n\""), "{m}"),
            other => panic!("expected a schema error, got {other:?}"),
        }
        assert!(cache.check("t", &schema, &serde_json::json!({})).is_err());
    }
}
