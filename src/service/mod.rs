//! The rules of hookrelay's resources, written once. The HTTP API and the dashboard call
//! these functions; they only read their input (JSON, a form) and show the answer. A
//! service checks what a caller may do and what it gives, writes through the store, wakes
//! the dispatchers when work became due, and records the change in the audit trail.
//!
//! Data flows one way: `api`, `ui` → `service` → `store`. The service never sees HTTP:
//! its errors say what went wrong ([`Error`]), and the API turns them into answers.

use std::time::Duration;

use crate::{
    destinations::net::NetworkPolicy,
    store::{Store, StoreError},
    wake::Waker,
};

pub mod alerts;
pub mod deliveries;
pub mod endpoints;
pub mod inboxes;
pub mod portal;
pub mod sources;
pub mod tenants;

/// What the services work with: the store, the network policy for destination URLs, the
/// dispatchers' waker and the settings the rules read.
#[derive(Clone, Copy)]
pub struct Service<'a> {
    pub store: &'a dyn Store,
    pub policy: &'a NetworkPolicy,
    pub waker: &'a Waker,
    /// Told when sources are created or deleted (the running sources follow).
    pub sources_changed: &'a tokio::sync::Notify,
    pub rules: &'a Rules,
}

/// The settings the rules read (from the server's configuration).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Every exact event type an endpoint names must be in the catalog.
    pub strict_event_types: bool,
    /// Endpoints a tenant may have.
    pub max_endpoints_per_tenant: u32,
    /// How long a rotated-out secret keeps signing.
    pub rotation_grace: Duration,
    /// The attempts a replayed delivery gets.
    pub max_attempts: u32,
    /// The longest lifetime of a portal link.
    pub portal_max_lifetime: Duration,
}

/// Who asks: the name the audit trail records, and whether the caller holds the admin
/// token (some resources are the operator's alone).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub actor: &'a str,
    pub admin: bool,
    /// May point endpoints at broker destinations: the admin token, or a portal link
    /// that allows them.
    pub brokers: bool,
}

impl Caller<'_> {
    /// `Forbidden` unless the caller holds the admin token.
    pub fn require_admin(&self) -> Result<()> {
        if self.admin {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "this operation needs the admin token".into(),
            ))
        }
    }
}

/// Why a service refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule; `code` names the kind (`invalid_request` unless more
    /// precise), the message what to change.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// There is no such resource (of the caller's tenant).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// Bad input, as `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    /// Bad input of a named kind.
    pub fn code(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A description: at most 1,024 bytes.
pub(crate) fn check_description(d: Option<&String>) -> Result<()> {
    if d.is_some_and(|d| d.len() > 1024) {
        return Err(Error::invalid("description is longer than 1024 characters"));
    }
    Ok(())
}

impl Service<'_> {
    /// Records a change in the audit trail. A failure to record is logged, never the
    /// caller's error: the change itself is done.
    pub async fn audit(
        &self,
        caller: &Caller<'_>,
        tenant: Option<&str>,
        action: &str,
        target: Option<&str>,
        changes: serde_json::Value,
    ) {
        let entry = crate::store::ops::AuditEntry {
            id: crate::domain::new_id("aud"),
            tenant_id: tenant.map(str::to_owned),
            actor: caller.actor.to_owned(),
            action: action.to_owned(),
            target: target.map(str::to_owned),
            changes,
            created_at: crate::domain::now(),
        };
        if let Err(e) = self.store.add_audit(&entry).await {
            tracing::error!(error = %e, action, "could not record an audit entry");
        }
    }

    /// Records a delete in the audit trail when there was something to delete; `NotFound`
    /// naming `what` when there was not.
    pub async fn deleted(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        existed: bool,
        (what, action): (&'static str, &str),
        id: &str,
    ) -> Result<()> {
        if !existed {
            return Err(Error::NotFound(what));
        }
        self.audit(
            caller,
            Some(tenant),
            action,
            Some(id),
            serde_json::json!({}),
        )
        .await;
        Ok(())
    }
}
