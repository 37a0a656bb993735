//! Inboxes, the built-in test receivers: creation (its token and secret).

use rand::RngCore;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{check_description, Caller, Error, Result, Service};
use crate::{
    domain::{self, new_id},
    signing,
    store::ops::Inbox,
};

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct CreateInbox {
    /// `whsec_<base64>` to verify signatures with; generated when absent.
    pub secret: Option<String>,
    pub description: Option<String>,
}

impl Service<'_> {
    /// Creates an inbox of `tenant` (the caller has checked access to it), with an
    /// unguessable token and the given or a new signing secret.
    pub async fn create_inbox(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        req: CreateInbox,
    ) -> Result<Inbox> {
        let secret = match req.secret {
            Some(s) => {
                signing::validate_secret(&s).map_err(|e| Error::invalid(e.to_string()))?;
                s
            }
            None => signing::generate_secret(),
        };
        check_description(req.description.as_ref())?;
        let mut token = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut token);
        let token = hex::encode(token);
        let inbox = Inbox {
            id: new_id("inb"),
            tenant_id: tenant.to_owned(),
            token_hash: Inbox::hash_token(&token),
            token,
            secret: Some(secret),
            description: req.description,
            created_at: domain::now(),
        };
        self.store.create_inbox(&inbox).await?;
        self.audit(
            caller,
            Some(&inbox.tenant_id),
            "inbox.created",
            Some(&inbox.id),
            serde_json::json!({ "description": inbox.description }),
        )
        .await;
        Ok(inbox)
    }

    /// Deletes an inbox of `tenant` and what it received.
    pub async fn delete_inbox(&self, caller: &Caller<'_>, tenant: &str, id: &str) -> Result<()> {
        let existed = self.store.delete_inbox(tenant, id).await?;
        self.deleted(caller, tenant, existed, ("inbox", "inbox.deleted"), id)
            .await
    }
}
