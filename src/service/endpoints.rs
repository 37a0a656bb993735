//! Endpoints: their rules (what a URL, secret, header, rate or routing may be; who may
//! point one at a broker), creation, change, rotation, deletion and replay.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{check_description, Caller, Error, Result, Service};
use crate::{
    destinations::{is_broker_url, validate_headers_for, validate_url},
    domain::routing::{OrderingSpec, Routing, RoutingSpec},
    domain::{
        self, Breaker, ClientTls, DeliveryFormat, DeliveryStatus, Endpoint, OAuth2, RatePeriod,
        SignatureHeaders,
    },
    ingest::validate_type_name,
    secrets::redact_url,
    signing,
    store::{ReplayFilter, StoreError},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateEndpoint {
    /// Where events go: `https://…` (or `http://`), or a broker URL (`sqs://`, `pubsub://`,
    /// `kafka://`, `amqp://`, `nats://`, `redis://`, `mqtt://`; admin token only). A
    /// password in the URL is shown as `***` in answers.
    pub url: String,
    /// Exact names or `prefix.*` wildcards; absent or empty means every type.
    pub event_types: Option<Vec<String>>,
    /// `whsec_<base64>` (HMAC) or `whsk_<base64>` (Ed25519); generated when absent. With
    /// the `community` format, any string of 1 to 512 bytes, used as given.
    pub secret: Option<String>,
    /// `hmac-sha256` (the default, `v1` signatures) or `ed25519` (`v1a` signatures,
    /// verified with the answer's `public_key`). Must match `secret` when both are given.
    pub signing_scheme: Option<SigningScheme>,
    /// `standard-webhooks` (the default) or `community`: the community platform's body
    /// and `X-Webhook-Signature: sha256=<hex>` header, for receivers built for it.
    pub format: Option<DeliveryFormat>,
    pub description: Option<String>,
    /// Deliveries per second (a number), or a rate with its period: `"30/min"`, `"5/s"`.
    #[schema(value_type = Option<RateLimitInput>)]
    pub rate_limit: Option<serde_json::Value>,
    /// What a numeric `rate_limit` counts per: `second` (the default) or `minute`.
    pub rate_limit_period: Option<RatePeriod>,
    /// Attempts before a delivery fails for good.
    pub max_attempts: Option<u32>,
    /// Extra headers sent with every delivery.
    pub headers: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    /// Payload filter: events that do not match get no delivery here (see the README's
    /// *Routing*), e.g. `{"field": "data.amount", "gt": 100}`.
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    /// Ordered delivery per key, e.g. `{"key": "data.order_id"}`.
    pub ordering: Option<OrderingSpec>,
    /// Steps that reshape the delivered body, e.g. `[{"rename": {"data.message": "text"}}]`.
    #[schema(value_type = Option<Vec<Object>>)]
    pub transform: Option<serde_json::Value>,
    /// OAuth2 client credentials (HTTP(S) endpoints only): deliveries carry
    /// `Authorization: Bearer <access token>` beside the signature.
    pub oauth2: Option<OAuth2Input>,
    /// Other names for `webhook-id`, `webhook-timestamp` and `webhook-signature`, for a
    /// receiver that demands them (`standard-webhooks` format only), e.g.
    /// `{"signature": "X-Signature"}`. The values stay the same.
    pub signature_headers: Option<SignatureHeaders>,
    /// A client certificate for mutual TLS (HTTPS endpoints only).
    pub tls: Option<TlsInput>,
    /// Admin token only: the proxy this endpoint's deliveries leave through instead of
    /// `--egress-proxy` (`http://[user:password@]host:port`), or `direct` for none.
    pub proxy: Option<String>,
}

/// Only the admin token sets or clears an endpoint's own proxy: it reaches the operator's
/// network.
fn check_proxy_access(caller: &Caller<'_>) -> Result<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "an endpoint's own proxy needs the admin token".into(),
        ))
    }
}

/// Checks an endpoint's own proxy: who sets it, and what it may be.
fn check_proxy(caller: &Caller<'_>, proxy: &str, url: &str) -> Result<()> {
    check_proxy_access(caller)?;
    if is_broker_url(url) {
        return Err(Error::invalid("proxy: only HTTP(S) endpoints use a proxy"));
    }
    if proxy == crate::destinations::http::DIRECT {
        return Ok(());
    }
    if crate::secrets::url_password_looks_sealed(proxy) {
        return Err(Error::invalid(
            "proxy: the password may not start with `enc1%3A` (marks sealed values)",
        ));
    }
    crate::destinations::egress::EgressProxy::new(proxy, &[])
        .map(|_| ())
        .map_err(|e| Error::invalid(format!("proxy {e}")))
}

/// A client certificate an endpoint presents (mutual TLS), and CA certificates it trusts for
/// the receiver, all PEM; at least one of `certificate` and `ca`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TlsInput {
    /// The client certificate, then any intermediates.
    pub certificate: Option<String>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1). Required when the endpoint has no client
    /// certificate yet; left out of a change, the stored one is kept (it must still belong
    /// to the certificate). Never shown again.
    pub key: Option<String>,
    /// CA certificates to trust for the receiver's server, beside the public roots.
    pub ca: Option<String>,
}

/// An endpoint's client certificate as answers show it: never the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct TlsOut {
    /// The client certificate's subject (RFC 4514), when there is one.
    pub subject: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub key_set: bool,
    pub ca_set: bool,
}

impl From<&ClientTls> for TlsOut {
    fn from(t: &ClientTls) -> Self {
        let info = t
            .identity
            .as_ref()
            .and_then(|i| domain::tls::describe(&i.certificate).ok());
        Self {
            subject: info.as_ref().map(|i| i.subject.clone()),
            expires_at: info.map(|i| i.expires_at),
            key_set: t.identity.is_some(),
            ca_set: t.ca.is_some(),
        }
    }
}

/// Checks a client certificate for the endpoint at `url`; `stored` is the endpoint's
/// current one (its key is kept when the input leaves it out).
fn tls_from(input: TlsInput, url: &str, stored: Option<&ClientTls>) -> Result<ClientTls> {
    if !url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    {
        return Err(Error::invalid(
            "tls: client certificates are for https:// endpoints",
        ));
    }
    let stored_key = stored
        .and_then(|t| t.identity.as_ref())
        .map(|i| i.key.clone());
    let identity = match input.certificate {
        Some(certificate) => Some(domain::TlsIdentity {
            certificate,
            key: input
                .key
                .or(stored_key)
                .ok_or_else(|| Error::invalid("tls.key is required with a certificate"))?,
        }),
        None if input.key.is_some() => {
            return Err(Error::invalid("tls.certificate is required with a key"));
        }
        None => None,
    };
    let tls = ClientTls {
        identity,
        ca: input.ca,
    };
    domain::tls::check(&tls).map_err(|(field, e)| Error::invalid(format!("tls.{field} {e}")))?;
    Ok(tls)
}

/// OAuth2 client credentials for an endpoint (the client-credentials grant, RFC 6749 4.4).
#[derive(Debug, Deserialize, ToSchema)]
pub struct OAuth2Input {
    /// The authorization server's token endpoint, `https://…` (or `http://`); the rules of
    /// endpoint URLs (private networks, `--allow-network`) apply to it.
    pub token_url: String,
    pub client_id: String,
    /// Sent with the client id in HTTP Basic authentication. Required when the endpoint has
    /// no OAuth2 credentials yet; left out of a change, the stored one is kept. Never shown
    /// again: answers say only `client_secret_set`.
    pub client_secret: Option<String>,
    /// Space-separated scopes to ask for.
    pub scope: Option<String>,
    /// The `audience` parameter some servers (Auth0, Okta) ask for.
    pub audience: Option<String>,
}

/// An endpoint's OAuth2 client credentials as answers show them: never the secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct OAuth2Out {
    pub token_url: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub client_secret_set: bool,
}

impl From<&OAuth2> for OAuth2Out {
    fn from(o: &OAuth2) -> Self {
        Self {
            token_url: o.token_url.clone(),
            client_id: o.client_id.clone(),
            scope: o.scope.clone(),
            audience: o.audience.clone(),
            client_secret_set: !o.client_secret.is_empty(),
        }
    }
}

/// Checks what an endpoint's headers, signature header names, OAuth2 credentials and format
/// say together: every header name once, and `Authorization` only from OAuth2.
fn check_header_names(ep: &Endpoint) -> Result<()> {
    let names = &ep.signature_headers;
    if !names.is_standard() {
        if ep.format == DeliveryFormat::Community {
            return Err(Error::invalid(
                "signature_headers apply to the standard-webhooks format only",
            ));
        }
        let custom = [&names.id, &names.timestamp, &names.signature];
        for name in custom.into_iter().flatten() {
            let lower = name.to_ascii_lowercase();
            let taken = (RESERVED_HEADERS.contains(&lower.as_str())
                && !lower.starts_with("webhook-"))
                || lower == "authorization";
            if name.len() > 64
                || axum::http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || taken
            {
                return Err(Error::invalid(format!(
                    "signature_headers: {name:?} is not a header name hookrelay can use"
                )));
            }
        }
    }
    let used = names.names();
    if used[0] == used[1] || used[0] == used[2] || used[1] == used[2] {
        return Err(Error::invalid(
            "signature_headers: the three names must differ",
        ));
    }
    for name in ep.headers.keys() {
        let lower = name.to_ascii_lowercase();
        if used.contains(&lower) {
            return Err(Error::invalid(format!(
                "header {name:?} is a signature header of this endpoint"
            )));
        }
        if lower == "authorization" && ep.oauth2.is_some() {
            return Err(Error::invalid(
                "header \"Authorization\" is set by oauth2 on this endpoint",
            ));
        }
    }
    Ok(())
}

/// The longest token URL, client id, client secret, scope and audience.
const OAUTH2_LIMITS: [(&str, usize); 5] = [
    ("token_url", 2048),
    ("client_id", 512),
    ("client_secret", 2048),
    ("scope", 1024),
    ("audience", 1024),
];

/// Checks OAuth2 credentials for the endpoint at `url`; `stored` are the endpoint's current
/// ones (their secret is kept when the input leaves it out).
async fn oauth2_from(
    svc: &Service<'_>,
    input: OAuth2Input,
    url: &str,
    stored: Option<&OAuth2>,
) -> Result<OAuth2> {
    let client_secret = input
        .client_secret
        .or_else(|| stored.map(|o| o.client_secret.clone()))
        .ok_or_else(|| Error::invalid("oauth2.client_secret is required"))?;
    let oauth2 = OAuth2 {
        token_url: input.token_url,
        client_id: input.client_id,
        client_secret,
        scope: input.scope,
        audience: input.audience,
    };
    let fields = [
        Some(&oauth2.token_url),
        Some(&oauth2.client_id),
        Some(&oauth2.client_secret),
        oauth2.scope.as_ref(),
        oauth2.audience.as_ref(),
    ];
    for ((name, max), value) in OAUTH2_LIMITS.iter().zip(fields) {
        let Some(value) = value else { continue };
        if value.is_empty() || value.len() > *max || value.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "oauth2.{name} must be 1 to {max} bytes without control characters"
            )));
        }
    }
    if is_broker_url(url) {
        return Err(Error::invalid(
            "oauth2: only HTTP(S) endpoints authenticate with OAuth2",
        ));
    }
    let parsed = reqwest::Url::parse(&oauth2.token_url)
        .map_err(|e| Error::invalid(format!("oauth2.token_url is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(
            "oauth2.token_url must be an http:// or https:// URL",
        ));
    }
    validate_url(&oauth2.token_url, svc.policy)
        .await
        .map_err(|m| Error::code("invalid_url", format!("oauth2.token_url: {m}")))?;
    Ok(oauth2)
}

/// How deliveries to an endpoint are signed (Standard Webhooks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SigningScheme {
    /// HMAC-SHA256 with a shared `whsec_` secret: `v1,<base64>` signatures.
    HmacSha256,
    /// Ed25519 with a `whsk_` secret key: `v1a,<base64>` signatures; receivers hold only
    /// the `whpk_` public key.
    Ed25519,
}

impl From<SigningScheme> for signing::Scheme {
    fn from(s: SigningScheme) -> Self {
        match s {
            SigningScheme::HmacSha256 => Self::Hmac,
            SigningScheme::Ed25519 => Self::Ed25519,
        }
    }
}

impl From<signing::Scheme> for SigningScheme {
    fn from(s: signing::Scheme) -> Self {
        match s {
            signing::Scheme::Hmac => Self::HmacSha256,
            signing::Scheme::Ed25519 => Self::Ed25519,
        }
    }
}

/// The secret to use: the given one (validated, and matching `scheme` if both are given),
/// or a new one of `scheme`. The community format takes any plain string and signs with
/// HMAC only.
fn choose_secret(
    given: Option<String>,
    scheme: Option<SigningScheme>,
    default: signing::Scheme,
    format: DeliveryFormat,
) -> Result<String> {
    if format == DeliveryFormat::Community {
        if scheme == Some(SigningScheme::Ed25519) {
            return Err(Error::invalid(
                "the community format signs with HMAC-SHA256: signing_scheme ed25519 is not available",
            ));
        }
        return match given {
            Some(s) => {
                check_community_secret(&s)?;
                Ok(s)
            }
            None => Ok(signing::Scheme::Hmac.generate()),
        };
    }
    match given {
        Some(s) => {
            signing::validate_secret(&s).map_err(|e| Error::invalid(e.to_string()))?;
            if let Some(want) = scheme {
                if signing::Scheme::of(&s) != want.into() {
                    return Err(Error::invalid(format!(
                        "secret does not match signing_scheme {}: whsec_ secrets are hmac-sha256, whsk_ keys are ed25519",
                        signing::Scheme::from(want).as_str()
                    )));
                }
            }
            Ok(s)
        }
        None => Ok(scheme
            .map(signing::Scheme::from)
            .unwrap_or(default)
            .generate()),
    }
}

/// A community-format secret: a plain string, but not an Ed25519 key (that format has
/// HMAC signatures only).
fn check_community_secret(secret: &str) -> Result<()> {
    signing::validate_community_secret(secret).map_err(Error::invalid)?;
    if signing::Scheme::of(secret) == signing::Scheme::Ed25519 {
        return Err(Error::invalid(
            "the community format signs with HMAC-SHA256: use a plain or whsec_ secret, not a whsk_ key",
        ));
    }
    Ok(())
}

/// Fields to change; absent fields stay as they are, `null` clears a nullable one.
#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// A number (per second, or per `rate_limit_period`), a rate like `"30/min"`, or
    /// `null` for no limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<RateLimitInput>)]
    pub rate_limit: Option<Option<serde_json::Value>>,
    /// What a numeric `rate_limit` counts per: `second` or `minute`.
    pub rate_limit_period: Option<RatePeriod>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<u32>)]
    pub max_attempts: Option<Option<u32>>,
    pub headers: Option<BTreeMap<String, String>>,
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Option<serde_json::Value>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<OrderingSpec>)]
    pub ordering: Option<Option<OrderingSpec>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub transform: Option<Option<serde_json::Value>>,
    /// `standard-webhooks` or `community`. Switching to `standard-webhooks` needs a
    /// `whsec_`/`whsk_` secret (rotate one in first).
    pub format: Option<DeliveryFormat>,
    /// New OAuth2 client credentials (without `client_secret`, the stored secret is kept),
    /// or `null` to stop sending a bearer token.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<OAuth2Input>)]
    pub oauth2: Option<Option<OAuth2Input>>,
    /// New signature header names (`{}` restores the standard ones).
    pub signature_headers: Option<SignatureHeaders>,
    /// Admin token only: a proxy of the endpoint's own, `direct`, or `null` to follow
    /// `--egress-proxy` again.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub proxy: Option<Option<String>>,
    /// A new client certificate (without `key`, the stored key is kept), or `null` to stop
    /// presenting one.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<TlsInput>)]
    pub tls: Option<Option<TlsInput>>,
}

/// Absent → `None`, `null` → `Some(None)`, a value → `Some(Some(v))`.
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointOut {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    /// Deliveries per `rate_limit_period`; `null` for no limit.
    pub rate_limit: Option<u32>,
    /// `second` or `minute`.
    pub rate_limit_period: RatePeriod,
    pub max_attempts: Option<u32>,
    /// Extra headers: values in single-endpoint answers, `***` in lists.
    pub headers: BTreeMap<String, String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The circuit breaker: `closed` (flowing), `open` (deliveries wait until
    /// `open_until`, then one probe), `half_open` (the probe is in flight).
    pub breaker: Breaker,
    pub signing_scheme: SigningScheme,
    /// `standard-webhooks` or `community` (see the create request).
    pub format: DeliveryFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub transform: Option<serde_json::Value>,
    /// For `ed25519` endpoints, the `whpk_` public key receivers verify with (not secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// OAuth2 client credentials, without the secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Out>,
    /// The signature header names, when they are not the standard ones.
    #[serde(skip_serializing_if = "SignatureHeaders::is_standard")]
    pub signature_headers: SignatureHeaders,
    /// The client certificate (mutual TLS): subject and expiry, never the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsOut>,
    /// The endpoint's own proxy (password as `***`), or `direct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The signing secret: in single-endpoint answers, not in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret still signs, after a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
}

impl EndpointOut {
    pub fn new(ep: Endpoint, with_secret: bool) -> Self {
        let spec = ep.routing.spec.clone();
        Self {
            filter: spec.filter,
            ordering: spec.ordering,
            transform: spec.transform,
            signing_scheme: match ep.format {
                DeliveryFormat::Community => SigningScheme::HmacSha256,
                DeliveryFormat::StandardWebhooks => signing::Scheme::of(&ep.secret).into(),
            },
            public_key: match ep.format {
                DeliveryFormat::Community => None,
                DeliveryFormat::StandardWebhooks => signing::public_key(&ep.secret),
            },
            format: ep.format,
            oauth2: ep.oauth2.as_ref().map(OAuth2Out::from),
            signature_headers: ep.signature_headers,
            tls: ep.tls.as_ref().map(TlsOut::from),
            proxy: ep.proxy.as_deref().map(|p| redact_url(p).into_owned()),
            secret: with_secret.then_some(ep.secret),
            previous_secret_expires_at: ep
                .previous_secret_expires_at
                .filter(|t| *t > domain::now()),
            id: ep.id,
            tenant_id: ep.tenant_id,
            url: redact_url(&ep.url).into_owned(),
            description: ep.description,
            event_types: ep.event_types,
            rate_limit: ep.rate_limit,
            rate_limit_period: ep.rate_period,
            max_attempts: ep.max_attempts,
            // Header values often are receivers' API keys: lists show the names only.
            headers: if with_secret {
                ep.headers
            } else {
                ep.headers
                    .into_keys()
                    .map(|name| (name, MASK.to_owned()))
                    .collect()
            },
            enabled: ep.enabled,
            disabled_reason: ep.disabled_reason,
            breaker: ep.breaker,
            created_at: ep.created_at,
            updated_at: ep.updated_at,
        }
    }
}

/// What lists show instead of a header value; sent back in a change, it keeps the value.
const MASK: &str = "***";

/// Headers hookrelay sets itself; an endpoint may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "traceparent",
];

fn validate_event_types(types: &[String]) -> Result<()> {
    if types.len() > 100 {
        return Err(Error::invalid("at most 100 event_types per endpoint"));
    }
    for t in types {
        if t == "*" {
            continue;
        }
        let name = t.strip_suffix(".*").unwrap_or(t);
        validate_type_name(name).map_err(|_| {
            Error::invalid(format!(
                "invalid event_types entry {t:?}: use an event type name, \"prefix.*\" or \"*\""
            ))
        })?;
    }
    Ok(())
}

/// Compiles an endpoint's routing; a bad filter, ordering or transformation is a 400 that
/// names the failing part.
fn compile_routing(spec: RoutingSpec) -> Result<Arc<Routing>> {
    if spec == RoutingSpec::default() {
        return Ok(Arc::default());
    }
    Routing::compile(spec)
        .map(Arc::new)
        .map_err(|m| Error::code("invalid_routing", m))
}

/// With the strict catalog, every exact type an endpoint names must be in the catalog
/// (wildcards may match types created later).
async fn check_catalog(svc: &Service<'_>, types: &[String]) -> Result<()> {
    if !svc.rules.strict_event_types {
        return Ok(());
    }
    for t in types.iter().filter(|t| *t != "*" && !t.ends_with(".*")) {
        if svc.store.get_event_type(t).await?.is_none() {
            return Err(StoreError::UnknownEventType(t.clone()).into());
        }
    }
    Ok(())
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<()> {
    if headers.len() > 20 {
        return Err(Error::invalid("at most 20 custom headers"));
    }
    for (name, value) in headers {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Error::invalid(format!("invalid header name {name:?}")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(Error::invalid(format!(
                "header {name:?} is set by hookrelay and cannot be overridden"
            )));
        }
        if axum::http::HeaderValue::from_str(value).is_err() || value.len() > 4096 {
            return Err(Error::invalid(format!("invalid value for header {name:?}")));
        }
        if crate::secrets::is_sealed(value) {
            return Err(Error::invalid(format!(
                "value of header {name:?} may not start with `enc1:` (marks sealed values)"
            )));
        }
    }
    Ok(())
}

// The OpenAPI schema of `rate_limit` on input; the handlers read a JSON value with
// `parse_rate`, so that every error names the field.
/// A rate limit: a number per second (or per `rate_limit_period`), or a rate with its period.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // A schema only.
pub enum RateLimitInput {
    /// Deliveries per second, or per `rate_limit_period`.
    PerPeriod(u32),
    /// A rate with its period: `"30/min"`, `"5/s"`.
    Rate(String),
}

/// Most sends a rate limit may allow per period.
const MAX_RATE: u32 = 100_000;

/// Reads `rate_limit` as the API takes it: a number per `period` (per second when absent),
/// or text `N/s` or `N/min` (also `sec`, `second`, `m`, `minute`), whose unit must agree
/// with `period` when both are given.
fn parse_rate(value: &serde_json::Value, period: Option<RatePeriod>) -> Result<(u32, RatePeriod)> {
    let bad = || {
        Error::invalid(format!(
            "rate_limit must be a whole number from 1 to {MAX_RATE} (per second, or per rate_limit_period) or a rate like \"30/min\" or \"5/s\", got {value}"
        ))
    };
    let in_range = |n: u64| {
        u32::try_from(n)
            .ok()
            .filter(|n| (1..=MAX_RATE).contains(n))
            .ok_or_else(bad)
    };
    match value {
        serde_json::Value::Number(n) => Ok((
            in_range(n.as_u64().ok_or_else(bad)?)?,
            period.unwrap_or_default(),
        )),
        serde_json::Value::String(text) => {
            let (count, unit) = text.split_once('/').ok_or_else(bad)?;
            let count = in_range(count.trim().parse().map_err(|_| bad())?)?;
            let unit = match unit.trim() {
                "s" | "sec" | "second" => RatePeriod::Second,
                "m" | "min" | "minute" => RatePeriod::Minute,
                _ => return Err(bad()),
            };
            if period.is_some_and(|p| p != unit) {
                return Err(Error::invalid(
                    "rate_limit and rate_limit_period name different periods",
                ));
            }
            Ok((count, unit))
        }
        _ => Err(bad()),
    }
}

fn validate_limits(rate_limit: Option<u32>, max_attempts: Option<u32>) -> Result<()> {
    if rate_limit.is_some_and(|r| !(1..=100_000).contains(&r)) {
        return Err(Error::invalid("rate_limit must be between 1 and 100000"));
    }
    if max_attempts.is_some_and(|m| !(1..=1000).contains(&m)) {
        return Err(Error::invalid("max_attempts must be between 1 and 1000"));
    }
    Ok(())
}

pub(super) async fn check_url(svc: &Service<'_>, url: &str) -> Result<()> {
    if crate::secrets::url_password_looks_sealed(url) {
        return Err(Error::code(
            "invalid_url",
            "the URL's password may not start with `enc1%3A` (marks sealed values)",
        ));
    }
    validate_url(url, svc.policy)
        .await
        .map_err(|m| Error::code("invalid_url", m))
}

/// Broker destinations point into the operator's own infrastructure: only the admin token
/// (or a portal link the operator allowed) may create one, point an endpoint at one, or
/// change one.
fn check_broker_access(caller: &Caller<'_>, urls: &[&str]) -> Result<()> {
    if !caller.brokers && urls.iter().any(|u| is_broker_url(u)) {
        return Err(Error::Forbidden(
            "broker destinations (sqs, pubsub, kafka, amqp, nats, redis, mqtt, smtp) need the admin token".into(),
        ));
    }
    Ok(())
}

fn check_headers_for(url: &str, headers: &BTreeMap<String, String>) -> Result<()> {
    validate_headers_for(url, headers.len()).map_err(Error::invalid)
}

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct RotateSecret {
    /// The new secret, `whsec_<base64>` or `whsk_<base64>` (any plain string for the
    /// `community` format); generated when absent.
    pub secret: Option<String>,
    /// The scheme of the new secret; by default the endpoint's current one. Switching
    /// schemes is a rotation like any other: both signatures are sent during the grace.
    pub signing_scheme: Option<SigningScheme>,
}

/// An endpoint as the audit trail records it: what lists show (no secret, header values
/// and the URL's password masked), without the fields that change by themselves.
pub(super) fn audit_view(ep: &Endpoint) -> serde_json::Value {
    let mut view = serde_json::to_value(EndpointOut::new(ep.clone(), false)).unwrap_or_default();
    if let Some(fields) = view.as_object_mut() {
        for volatile in [
            "id",
            "tenant_id",
            "breaker",
            "created_at",
            "updated_at",
            "secret",
            "public_key",
            "previous_secret_expires_at",
        ] {
            fields.remove(volatile);
        }
    }
    view
}

/// `{field: {from, to}}` for every field an update changed; changed header values and URL
/// credentials are named, never shown.
fn audit_diff(before: &Endpoint, after: &Endpoint) -> serde_json::Value {
    let (from, to) = (audit_view(before), audit_view(after));
    let mut changes = serde_json::Map::new();
    if let Some(fields) = to.as_object() {
        for (name, value) in fields {
            let old = from.get(name).cloned().unwrap_or_default();
            if old != *value {
                changes.insert(
                    name.clone(),
                    serde_json::json!({ "from": old, "to": value }),
                );
            }
        }
    }
    let headers: Vec<&String> = after
        .headers
        .iter()
        .filter(|(name, value)| before.headers.get(*name).is_some_and(|v| v != *value))
        .map(|(name, _)| name)
        .collect();
    if !headers.is_empty() {
        changes.insert("header_values_changed".into(), serde_json::json!(headers));
    }
    if before.proxy != after.proxy && from.get("proxy") == to.get("proxy") {
        changes.insert("proxy_credentials_changed".into(), serde_json::json!(true));
    }
    let key_of = |ep: &Endpoint| {
        ep.tls
            .as_ref()
            .and_then(|t| t.identity.as_ref())
            .map(|i| i.key.clone())
    };
    if before.tls.is_some() && after.tls.is_some() && key_of(before) != key_of(after) {
        changes.insert("tls_key_changed".into(), serde_json::json!(true));
    }
    let secret_of = |ep: &Endpoint| ep.oauth2.as_ref().map(|o| o.client_secret.clone());
    if before.oauth2.is_some() && after.oauth2.is_some() && secret_of(before) != secret_of(after) {
        changes.insert(
            "oauth2_client_secret_changed".into(),
            serde_json::json!(true),
        );
    }
    if before.url != after.url && from.get("url") == to.get("url") {
        changes.insert("url_credentials_changed".into(), serde_json::json!(true));
    }
    serde_json::Value::Object(changes)
}

#[derive(Debug, Deserialize, ToSchema, Default)]
pub struct ReplayRequest {
    /// Only deliveries created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Only deliveries created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Which deliveries: `failed` (the default), `delivered` or `cancelled`.
    pub status: Option<DeliveryStatus>,
}

impl Service<'_> {
    /// A tenant's endpoint (the caller has checked access to `tenant`).
    pub async fn endpoint(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        self.store
            .get_endpoint(tenant, id)
            .await?
            .ok_or(Error::NotFound("endpoint"))
    }

    /// Creates an endpoint of `tenant` (the caller has checked access to it).
    pub async fn create_endpoint(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        body: CreateEndpoint,
    ) -> Result<Endpoint> {
        check_broker_access(caller, &[&body.url])?;
        let event_types = body.event_types.unwrap_or_default();
        validate_event_types(&event_types)?;
        check_catalog(self, &event_types).await?;
        let headers = body.headers.unwrap_or_default();
        validate_headers(&headers)?;
        let (rate_limit, rate_period) = match &body.rate_limit {
            Some(v) if !v.is_null() => {
                let (n, p) = parse_rate(v, body.rate_limit_period)?;
                (Some(n), p)
            }
            _ => (None, body.rate_limit_period.unwrap_or_default()),
        };
        validate_limits(rate_limit, body.max_attempts)?;
        check_description(body.description.as_ref())?;
        let format = body.format.unwrap_or_default();
        let secret = choose_secret(
            body.secret,
            body.signing_scheme,
            signing::Scheme::Hmac,
            format,
        )?;
        let routing = compile_routing(RoutingSpec {
            filter: body.filter,
            ordering: body.ordering,
            transform: body.transform,
        })?;
        check_url(self, &body.url).await?;
        check_headers_for(&body.url, &headers)?;
        let oauth2 = match body.oauth2 {
            Some(input) => Some(oauth2_from(self, input, &body.url, None).await?),
            None => None,
        };
        let endpoint = Endpoint {
            description: body.description,
            event_types,
            rate_limit,
            rate_period,
            max_attempts: body.max_attempts,
            headers,
            enabled: body.enabled.unwrap_or(true),
            routing,
            format,
            oauth2,
            signature_headers: body.signature_headers.unwrap_or_default(),
            tls: match body.tls {
                Some(input) => Some(tls_from(input, &body.url, None)?),
                None => None,
            },
            proxy: match body.proxy {
                Some(proxy) => {
                    check_proxy(caller, &proxy, &body.url)?;
                    Some(proxy)
                }
                None => None,
            },
            ..Endpoint::new(tenant, body.url, secret)
        };
        check_header_names(&endpoint)?;
        self.store
            .create_endpoint(&endpoint, self.rules.max_endpoints_per_tenant)
            .await?;
        self.audit(
            caller,
            Some(&endpoint.tenant_id),
            "endpoint.created",
            Some(&endpoint.id),
            audit_view(&endpoint),
        )
        .await;
        Ok(endpoint)
    }

    /// Changes an endpoint of `tenant` (the caller has checked access to it). Re-enabling
    /// clears the disabled reason and makes its waiting deliveries due.
    pub async fn update_endpoint(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        id: &str,
        body: UpdateEndpoint,
    ) -> Result<Endpoint> {
        let mut ep = self.endpoint(tenant, id).await?;
        let before = ep.clone();
        check_broker_access(caller, &[&ep.url, body.url.as_deref().unwrap_or("")])?;
        if let Some(types) = body.event_types {
            validate_event_types(&types)?;
            check_catalog(self, &types).await?;
            ep.event_types = types;
        }
        if let Some(mut headers) = body.headers {
            // A list's masked value sent back unchanged keeps the stored one.
            for (name, value) in headers.iter_mut() {
                if value == MASK {
                    if let Some(stored) = ep.headers.get(name) {
                        value.clone_from(stored);
                    }
                }
            }
            validate_headers(&headers)?;
            ep.headers = headers;
        }
        if let Some(d) = body.description {
            check_description(d.as_ref())?;
            ep.description = d;
        }
        match (body.rate_limit, body.rate_limit_period) {
            (Some(None), _) => {
                ep.rate_limit = None;
                ep.rate_period = RatePeriod::default();
            }
            (Some(Some(v)), period) => {
                let (n, p) = parse_rate(&v, period)?;
                ep.rate_limit = Some(n);
                ep.rate_period = p;
            }
            (None, Some(period)) => ep.rate_period = period,
            (None, None) => {}
        }
        if let Some(m) = body.max_attempts {
            ep.max_attempts = m;
        }
        validate_limits(ep.rate_limit, ep.max_attempts)?;
        if body.filter.is_some() || body.ordering.is_some() || body.transform.is_some() {
            let mut spec = ep.routing.spec.clone();
            if let Some(f) = body.filter {
                spec.filter = f;
            }
            if let Some(o) = body.ordering {
                spec.ordering = o;
            }
            if let Some(t) = body.transform {
                spec.transform = t;
            }
            ep.routing = compile_routing(spec)?;
        }
        if let Some(url) = body.url {
            // The URL as answers show it (password as ***) sent back unchanged keeps the
            // stored one, password included.
            let unchanged = url.contains("***") && redact_url(&url) == redact_url(&ep.url);
            if !unchanged {
                check_url(self, &url).await?;
                ep.url = url;
            }
        }
        check_headers_for(&ep.url, &ep.headers)?;
        match body.oauth2 {
            Some(Some(input)) => {
                ep.oauth2 = Some(oauth2_from(self, input, &ep.url, ep.oauth2.as_ref()).await?);
            }
            Some(None) => ep.oauth2 = None,
            None if ep.oauth2.is_some() && is_broker_url(&ep.url) => {
                return Err(Error::invalid(
                    "oauth2: only HTTP(S) endpoints authenticate with OAuth2",
                ));
            }
            None => {}
        }
        if let Some(format) = body.format {
            match format {
                DeliveryFormat::Community => check_community_secret(&ep.secret)?,
                DeliveryFormat::StandardWebhooks => {
                    signing::validate_secret(&ep.secret).map_err(|_| {
                        Error::invalid(
                            "format standard-webhooks needs a whsec_ or whsk_ secret: rotate one in first",
                        )
                    })?;
                }
            }
            ep.format = format;
        }
        if let Some(names) = body.signature_headers {
            ep.signature_headers = names;
        }
        match body.proxy {
            // The answer's form (password as ***) sent back keeps the stored proxy.
            Some(Some(p)) if ep.proxy.as_deref().is_some_and(|s| redact_url(s) == p) => {}
            Some(Some(p)) => {
                check_proxy(caller, &p, &ep.url)?;
                ep.proxy = Some(p);
            }
            Some(None) if ep.proxy.is_some() => {
                check_proxy_access(caller)?;
                ep.proxy = None;
            }
            _ => {}
        }
        match body.tls {
            Some(Some(input)) => ep.tls = Some(tls_from(input, &ep.url, ep.tls.as_ref())?),
            Some(None) => ep.tls = None,
            None if ep.tls.is_some() && !ep.url.to_ascii_lowercase().starts_with("https://") => {
                return Err(Error::invalid(
                    "tls: client certificates are for https:// endpoints",
                ));
            }
            None => {}
        }
        check_header_names(&ep)?;
        let resumed = body.enabled == Some(true) && !ep.enabled;
        if let Some(enabled) = body.enabled {
            ep.enabled = enabled;
            if enabled {
                ep.disabled_reason = None;
            }
        }
        ep.updated_at = domain::now();
        if !self.store.update_endpoint(&ep).await? {
            return Err(Error::NotFound("endpoint"));
        }
        if resumed {
            self.waker.wake();
        }
        let changes = audit_diff(&before, &ep);
        if changes.as_object().is_some_and(|c| !c.is_empty()) {
            self.audit(caller, Some(tenant), "endpoint.updated", Some(id), changes)
                .await;
        }
        Ok(ep)
    }

    /// Deletes an endpoint of `tenant` (the caller has checked access to it); its pending
    /// deliveries are cancelled, its history kept.
    pub async fn delete_endpoint(&self, caller: &Caller<'_>, tenant: &str, id: &str) -> Result<()> {
        let existed = self.store.delete_endpoint(tenant, id).await?;
        self.deleted(
            caller,
            tenant,
            existed,
            ("endpoint", "endpoint.deleted"),
            id,
        )
        .await
    }

    /// Rotates the endpoint's signing secret (the caller has checked access to `tenant`):
    /// the new one signs from now on, the old one too until the rotation grace ends.
    pub async fn rotate_secret(
        &self,
        caller: &Caller<'_>,
        tenant: &str,
        id: &str,
        body: RotateSecret,
    ) -> Result<Endpoint> {
        let mut ep = self.endpoint(tenant, id).await?;
        let new_secret = choose_secret(
            body.secret,
            body.signing_scheme,
            signing::Scheme::of(&ep.secret),
            ep.format,
        )?;
        let now = domain::now();
        ep.previous_secret = Some(std::mem::replace(&mut ep.secret, new_secret));
        ep.previous_secret_expires_at = Some(domain::after(now, self.rules.rotation_grace));
        ep.updated_at = now;
        if !self.store.update_endpoint(&ep).await? {
            return Err(Error::NotFound("endpoint"));
        }
        self.audit(
            caller,
            Some(tenant),
            "endpoint.secret_rotated",
            Some(id),
            serde_json::json!({
                "signing_scheme": audit_view(&ep)["signing_scheme"],
                "previous_secret_expires_at": ep.previous_secret_expires_at,
            }),
        )
        .await;
        Ok(ep)
    }

    /// Bulk replay to one endpoint of `tenant` (the caller has checked access to it): its
    /// finished deliveries (by default the failed ones) in the time range become pending
    /// again, due now, with a fresh budget of attempts. Returns how many.
    pub async fn replay_endpoint(&self, tenant: &str, id: &str, req: ReplayRequest) -> Result<u64> {
        self.endpoint(tenant, id).await?;
        let status = req.status.unwrap_or(DeliveryStatus::Failed);
        if status == DeliveryStatus::Pending {
            return Err(Error::invalid(
                "pending deliveries are already due; replay failed, delivered or cancelled ones",
            ));
        }
        let filter = ReplayFilter {
            endpoint_id: Some(id.to_owned()),
            since: req.since,
            until: req.until,
            statuses: vec![status],
            ..Default::default()
        };
        self.replay(tenant, &filter).await
    }
}
