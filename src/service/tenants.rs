//! Tenants, their tokens and the event-type catalog: the operator's alone (admin token).

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{check_description, Caller, Error, Result, Service};
use crate::{
    domain::{self, new_id, prefix, EventType, Tenant, DEFAULT_TENANT},
    ingest::{compile_schema, validate_type_name},
    store::TokenRecord,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTenant {
    /// Lowercase letters, digits, `_` and `-`, 1 to 64 characters; generated when absent.
    pub id: Option<String>,
    pub name: String,
}

fn validate_tenant_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "tenant id must be 1 to 64 lowercase letters, digits, '_' or '-'",
        ))
    }
}

/// A new tenant-scoped token: the only time the token itself is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub tenant_id: String,
    /// Use as `Authorization: Bearer <token>`. Stored only as a hash: keep it now.
    pub token: String,
}

/// A random bearer token with a readable prefix.
pub fn generate_token(kind: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "hr{kind}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEventType {
    /// Dot-separated name, e.g. `user.joined_community`.
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema that the `data` of events of this type must match.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
}

impl Service<'_> {
    pub async fn create_tenant(&self, caller: &Caller<'_>, body: CreateTenant) -> Result<Tenant> {
        caller.require_admin()?;
        let id = body
            .id
            .unwrap_or_else(|| new_id(prefix::TENANT).to_lowercase());
        validate_tenant_id(&id)?;
        let name = body.name.trim();
        if name.is_empty() || name.len() > 256 {
            return Err(Error::invalid("name must be 1 to 256 characters"));
        }
        let tenant = Tenant {
            id,
            name: name.to_owned(),
            created_at: domain::now(),
        };
        self.store.create_tenant(&tenant).await?;
        let changes = json!({ "name": tenant.name });
        self.audit(
            caller,
            Some(&tenant.id),
            "tenant.created",
            Some(&tenant.id),
            changes,
        )
        .await;
        Ok(tenant)
    }

    /// Deletes a tenant and everything it owns; the default tenant stays.
    pub async fn delete_tenant(&self, caller: &Caller<'_>, tenant: &str) -> Result<()> {
        caller.require_admin()?;
        if tenant == DEFAULT_TENANT {
            return Err(Error::Conflict(
                "the default tenant cannot be deleted".into(),
            ));
        }
        let existed = self.store.delete_tenant(tenant).await?;
        self.deleted(
            caller,
            tenant,
            existed,
            ("tenant", "tenant.deleted"),
            tenant,
        )
        .await
    }

    /// Makes a token for `tenant`, stored as its hash.
    pub async fn create_token(&self, caller: &Caller<'_>, tenant: &str) -> Result<CreatedToken> {
        caller.require_admin()?;
        self.existing_tenant(tenant).await?;
        let token = generate_token("t");
        let record = TokenRecord {
            id: new_id(prefix::TOKEN),
            tenant_id: Some(tenant.to_owned()),
            hash: crate::secrets::token_hash(&token),
            created_at: domain::now(),
        };
        self.store.create_token(&record).await?;
        self.audit(
            caller,
            Some(tenant),
            "token.created",
            Some(&record.id),
            json!({}),
        )
        .await;
        Ok(CreatedToken {
            id: record.id,
            tenant_id: tenant.to_owned(),
            token,
        })
    }

    /// Revokes a token of `tenant`: it stops working at once.
    pub async fn revoke_token(&self, caller: &Caller<'_>, tenant: &str, id: &str) -> Result<()> {
        caller.require_admin()?;
        self.existing_tenant(tenant).await?;
        let existed = self.store.delete_token(tenant, id).await?;
        self.deleted(caller, tenant, existed, ("token", "token.revoked"), id)
            .await
    }

    /// Registers an event type, with the schema its events' `data` must match.
    pub async fn create_event_type(
        &self,
        caller: &Caller<'_>,
        body: CreateEventType,
    ) -> Result<EventType> {
        caller.require_admin()?;
        validate_type_name(&body.name).map_err(Error::invalid)?;
        check_description(body.description.as_ref())?;
        let schema = body.schema.filter(|s| !s.is_null());
        if let Some(schema) = &schema {
            compile_schema(schema).map_err(|e| Error::invalid(format!("invalid schema: {e}")))?;
        }
        let et = EventType {
            name: body.name,
            description: body.description,
            schema,
            created_at: domain::now(),
        };
        self.store.create_event_type(&et).await?;
        let changes = json!({ "description": et.description, "schema": et.schema });
        self.audit(caller, None, "event_type.created", Some(&et.name), changes)
            .await;
        Ok(et)
    }

    async fn existing_tenant(&self, tenant: &str) -> Result<Tenant> {
        self.store
            .get_tenant(tenant)
            .await?
            .ok_or(Error::NotFound("tenant"))
    }
}
