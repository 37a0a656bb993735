//! Consumer portal links. An operator (the admin token, or the tenant's own token) makes a
//! link that opens the portal for one tenant, for a lifetime it chooses within the
//! configured maximum, optionally read-only, limited to some event types, or allowed to
//! enter broker destinations. The portal checks its link on every request, so revoking a
//! link ends its sessions at once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::{Caller, Error, Result, Service};
use crate::{
    domain::{self, new_id},
    ingest::validate_type_name,
    store::{ops::PortalLink, Page},
};

/// How long a link lasts when its maker does not say.
pub const DEFAULT_LINK_LIFETIME: Duration = Duration::from_secs(3600);
/// Most event types one link may be limited to.
pub const MAX_LINK_EVENT_TYPES: usize = 100;

/// The body of `POST /v1/tenants/{tenant}/portal-links`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalLink {
    /// Seconds the link opens the portal: 3600 when absent, at most the server's
    /// `--portal-max-lifetime`.
    pub expires_in: Option<u64>,
    /// The portal only shows; nothing can be changed through it.
    #[serde(default)]
    pub read_only: bool,
    /// The event types (from the catalog) that endpoints may subscribe to through the
    /// portal, at most 100; the whole catalog when absent.
    pub event_types: Option<Vec<String>>,
    /// Broker destinations (`sqs://`, `kafka://`, …) may be entered; otherwise only
    /// `http(s)://` URLs.
    #[serde(default)]
    pub allow_brokers: bool,
}

/// A portal link, without its token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PortalLinkOut {
    pub id: String,
    pub tenant_id: String,
    pub read_only: bool,
    /// `null`: the whole catalog.
    pub event_types: Option<Vec<String>>,
    pub allow_brokers: bool,
    /// Who made it (a token id or `admin`).
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether it opens the portal now (neither expired nor revoked).
    pub active: bool,
}

impl From<PortalLink> for PortalLinkOut {
    fn from(l: PortalLink) -> Self {
        let active = link_state(&l, domain::now()).is_ok();
        Self {
            id: l.id,
            tenant_id: l.tenant_id,
            read_only: l.read_only,
            event_types: l.event_types,
            allow_brokers: l.allow_brokers,
            created_by: l.created_by,
            created_at: l.created_at,
            expires_at: l.expires_at,
            revoked_at: l.revoked_at,
            active,
        }
    }
}

/// A new link: the only time its token is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedPortalLink {
    #[serde(flatten)]
    pub link: PortalLinkOut,
    /// The link's secret. Stored only as a hash.
    pub token: String,
    /// The link to hand to the customer: `<base>/portal/open/<token>`, the base being
    /// `--public-url` or the address this request was sent to.
    pub url: String,
}

/// Why a link does not open the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No link has this token.
    Unknown,
    /// The request holds no link at all.
    Missing,
    Expired,
    Revoked,
}

impl Refused {
    /// What the refusal page says.
    pub fn message(self) -> &'static str {
        match self {
            Refused::Unknown => "This portal link is not valid.",
            Refused::Missing => "Open the portal with the link you were given.",
            Refused::Expired => "This portal link has expired. Ask for a new one.",
            Refused::Revoked => "This portal link was revoked. Ask for a new one.",
        }
    }
}

/// Whether `link` opens the portal at `now`.
pub fn link_state(link: &PortalLink, now: DateTime<Utc>) -> std::result::Result<(), Refused> {
    if link.revoked_at.is_some() {
        Err(Refused::Revoked)
    } else if link.expires_at <= now {
        Err(Refused::Expired)
    } else {
        Ok(())
    }
}

/// The hex SHA-256 under which a link's token is stored.
pub fn hash_link_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Service<'_> {
    /// Makes a portal link for `tenant` (the caller has checked access to it).
    pub async fn create_portal_link(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        body: CreatePortalLink,
    ) -> Result<(PortalLink, String)> {
        let max = self.rules.portal_max_lifetime;
        let lifetime = match body.expires_in {
            None => DEFAULT_LINK_LIFETIME.min(max),
            Some(0) => return Err(Error::invalid("expires_in must be at least 1 second")),
            Some(s) if Duration::from_secs(s) > max => {
                return Err(Error::invalid(format!(
                    "expires_in is longer than this server allows ({} s, --portal-max-lifetime)",
                    max.as_secs()
                )))
            }
            Some(s) => Duration::from_secs(s),
        };
        let event_types = match body.event_types {
            None => None,
            Some(types) => Some(self.check_link_event_types(types).await?),
        };
        let token = super::tenants::generate_token("p");
        let now = domain::now();
        let link = PortalLink {
            id: new_id("prt"),
            tenant_id: tenant.to_owned(),
            token_hash: hash_link_token(&token),
            read_only: body.read_only,
            event_types,
            allow_brokers: body.allow_brokers,
            created_by: caller.actor.to_owned(),
            created_at: now,
            expires_at: now
                + chrono::Duration::from_std(lifetime)
                    .map_err(|_| Error::invalid("expires_in is too large"))?,
            revoked_at: None,
        };
        self.store.create_portal_link(&link).await?;
        self.audit(
            caller,
            Some(tenant),
            "portal_link.created",
            Some(&link.id),
            json!({
                "expires_at": link.expires_at,
                "read_only": link.read_only,
                "event_types": link.event_types,
                "allow_brokers": link.allow_brokers,
            }),
        )
        .await;
        Ok((link, token))
    }

    /// A link's event types: names of the catalog, each once, at most
    /// [`MAX_LINK_EVENT_TYPES`].
    async fn check_link_event_types(&self, types: Vec<String>) -> Result<Vec<String>> {
        if types.is_empty() {
            return Err(Error::invalid(
                "event_types may not be empty; leave it out for the whole catalog",
            ));
        }
        if types.len() > MAX_LINK_EVENT_TYPES {
            return Err(Error::invalid(format!(
                "event_types has more than {MAX_LINK_EVENT_TYPES} names"
            )));
        }
        let catalog = self.store.list_event_types().await?;
        let mut out: Vec<String> = Vec::with_capacity(types.len());
        for t in types {
            validate_type_name(&t).map_err(|e| Error::invalid(format!("event_types: {e}")))?;
            if !catalog.iter().any(|c| c.name == t) {
                return Err(Error::invalid(format!(
                    "event_types: {t} is not in the event-type catalog"
                )));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// A tenant's portal links, newest first.
    pub async fn portal_links(&self, tenant: &str, page: &Page) -> Result<Vec<PortalLink>> {
        Ok(self.store.list_portal_links(tenant, page).await?)
    }

    /// Revokes a link of `tenant`: it no longer opens the portal, and its open sessions end.
    pub async fn revoke_portal_link(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        id: &str,
    ) -> Result<PortalLink> {
        let link = self
            .store
            .revoke_portal_link(tenant, id, domain::now())
            .await?
            .ok_or(Error::NotFound("portal link"))?;
        self.audit(
            caller,
            Some(tenant),
            "portal_link.revoked",
            Some(id),
            json!({}),
        )
        .await;
        Ok(link)
    }

    /// The link `token` names, if it opens the portal now.
    pub async fn portal_link(
        &self,
        token: &str,
    ) -> Result<std::result::Result<PortalLink, Refused>> {
        // Tokens are base64url: anything longer or stranger names no link.
        if token.len() > 128 || !token.starts_with("hrp_") {
            return Ok(Err(Refused::Unknown));
        }
        let Some(link) = self.store.find_portal_link(&hash_link_token(token)).await? else {
            return Ok(Err(Refused::Unknown));
        };
        Ok(link_state(&link, domain::now()).map(|()| link))
    }

    /// Records that a link was opened (its use, in the audit trail).
    pub async fn portal_link_opened(&self, link: &PortalLink, embedded: bool) {
        let actor = portal_actor(link);
        let caller = Caller {
            actor: &actor,
            admin: false,
            brokers: false,
        };
        self.audit(
            &caller,
            Some(&link.tenant_id),
            "portal_link.opened",
            Some(&link.id),
            json!({ "embedded": embedded }),
        )
        .await;
    }
}

/// The audit trail's actor for what a portal session does: `portal:<link id>`.
pub fn portal_actor(link: &PortalLink) -> String {
    format!("portal:{}", link.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(expires_in_s: i64, revoked: bool) -> PortalLink {
        let now = domain::now();
        PortalLink {
            id: "prt_1".into(),
            tenant_id: "acme".into(),
            token_hash: hash_link_token("hrp_x"),
            read_only: false,
            event_types: None,
            allow_brokers: false,
            created_by: "admin".into(),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(expires_in_s),
            revoked_at: revoked.then_some(now),
        }
    }

    #[test]
    fn a_link_opens_until_it_expires_or_is_revoked() {
        let now = domain::now();
        assert_eq!(link_state(&link(60, false), now), Ok(()));
        assert_eq!(link_state(&link(-1, false), now), Err(Refused::Expired));
        // Revoked wins over expired: the page says what the operator did.
        assert_eq!(link_state(&link(-1, true), now), Err(Refused::Revoked));
        assert_eq!(hash_link_token("hrp_x").len(), 64);
    }
}
