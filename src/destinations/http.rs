//! HTTP(S) webhooks: a pooled client that never follows redirects and refuses internal
//! addresses after DNS resolution.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use super::{
    egress::EgressProxy,
    excerpt,
    net::{GuardedResolver, NetworkPolicy},
    oauth2::{TokenError, Tokens},
    Ack, Destination, Message, SendError, RESPONSE_EXCERPT_BYTES,
};
use crate::domain::{retry::parse_retry_after, ClientTls, Endpoint};

/// The HTTP destination.
pub struct HttpDestination {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
    /// The egress proxy (`--egress-proxy`), when there is one.
    egress: Option<Arc<EgressProxy>>,
    timeouts: (Duration, Duration),
    /// OAuth2 access tokens of the endpoints that have client credentials.
    tokens: Tokens,
    /// A route of its own for each endpoint with a client certificate (mutual TLS) or a
    /// proxy of its own, made with what it holds, made again when that changes.
    own_routes: Mutex<HashMap<String, (RouteKey, Route)>>,
}

/// How a request leaves: the client, and the proxy it goes through (when any).
#[derive(Clone)]
struct Route {
    client: reqwest::Client,
    egress: Option<Arc<EgressProxy>>,
}

impl Route {
    /// The proxy a request to `url` goes through, if any.
    fn proxy_for(&self, url: &reqwest::Url) -> Option<&EgressProxy> {
        self.egress.as_deref().filter(|p| p.applies_to(url))
    }
}

/// What an endpoint's own route was made with.
type RouteKey = (Option<ClientTls>, Option<String>);

/// An endpoint's `proxy` that sends it directly, past `--egress-proxy`.
pub const DIRECT: &str = "direct";

impl HttpDestination {
    pub fn new(
        policy: Arc<NetworkPolicy>,
        request_timeout: Duration,
        connect_timeout: Duration,
        egress: Option<EgressProxy>,
    ) -> Result<Self, reqwest::Error> {
        let mut this = Self {
            client: reqwest::Client::new(),
            policy,
            egress: egress.map(Arc::new),
            timeouts: (request_timeout, connect_timeout),
            tokens: Tokens::default(),
            own_routes: Mutex::default(),
        };
        this.client = this.builder(this.egress.as_ref()).build()?;
        Ok(this)
    }

    /// A client builder with every rule of this destination: no redirects, the guarded
    /// resolver, the egress proxy (and never one from the environment), the timeouts.
    fn builder(&self, egress: Option<&Arc<EgressProxy>>) -> reqwest::ClientBuilder {
        let builder = match egress {
            // Never through a proxy from the environment (HTTP_PROXY, HTTPS_PROXY,
            // ALL_PROXY): the proxy would resolve the name, unchecked.
            None => reqwest::Client::builder().no_proxy(),
            // The configured one, whose destinations `send` checks before asking it.
            Some(proxy) => {
                let proxy = proxy.clone();
                reqwest::Client::builder().proxy(reqwest::Proxy::custom(move |url| {
                    proxy.applies_to(url).then(|| proxy.url().clone())
                }))
            }
        };
        let (request_timeout, connect_timeout) = self.timeouts;
        builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(request_timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                policy: self.policy.clone(),
                trusted: egress.and_then(|p| p.host_name()),
            }))
    }

    /// How requests for `endpoint` leave: the shared client and proxy, or a route of its own
    /// with its client certificate and its own proxy (or none).
    fn route_for(&self, endpoint: &Endpoint) -> Result<Route, SendError> {
        if endpoint.tls.is_none() && endpoint.proxy.is_none() {
            return Ok(Route {
                client: self.client.clone(),
                egress: self.egress.clone(),
            });
        }
        // A poisoned lock only means a delivery panicked while holding it; the map is whole.
        let mut routes = self.own_routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(((tls, proxy), route)) = routes.get(&endpoint.id) {
            if *tls == endpoint.tls && *proxy == endpoint.proxy {
                return Ok(route.clone());
            }
        }
        let unusable = |what: &str, e: String| SendError::Permanent {
            reason: format!("the endpoint's {what} cannot be used: {e}"),
            status_code: None,
            response: None,
            disable_endpoint: false,
        };
        let egress = match endpoint.proxy.as_deref() {
            None => self.egress.clone(),
            Some(DIRECT) => None,
            Some(url) => Some(Arc::new(
                EgressProxy::new(url, &[]).map_err(|e| unusable("proxy", e))?,
            )),
        };
        let failed = |e: reqwest::Error| unusable("client certificate", describe(&e));
        let mut builder = self.builder(egress.as_ref());
        if let Some(tls) = &endpoint.tls {
            if let Some(i) = &tls.identity {
                let pem = format!("{}\n{}", i.certificate, i.key);
                let identity = reqwest::Identity::from_pem(pem.as_bytes()).map_err(failed)?;
                builder = builder.identity(identity);
            }
            if let Some(ca) = &tls.ca {
                for cert in reqwest::Certificate::from_pem_bundle(ca.as_bytes()).map_err(failed)? {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
        let route = Route {
            client: builder.build().map_err(failed)?,
            egress,
        };
        let key: RouteKey = (endpoint.tls.clone(), endpoint.proxy.clone());
        routes.insert(endpoint.id.clone(), (key, route.clone()));
        Ok(route)
    }

    /// The network rules for a request to `url` that the guarded resolver does not see: a
    /// destination the egress proxy will resolve, or an IP literal.
    async fn guard(&self, route: &Route, url: &reqwest::Url) -> Result<(), String> {
        match route.proxy_for(url) {
            Some(proxy) => proxy.check(&self.policy, url).await,
            None => self.check_literal(url),
        }
    }

    /// The resolver guards names; IP literals never reach it, so they are checked here.
    fn check_literal(&self, url: &reqwest::Url) -> Result<(), String> {
        if let Some(host) = url.host_str() {
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>() {
                if !self.policy.permits(ip) {
                    return Err(format!(
                        "{ip} is not an allowed address (private, loopback or link-local; see --allow-network)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// An access token for `endpoint`'s OAuth2 credentials (none without them); a
    /// `rejected` token is not given again.
    async fn token(
        &self,
        route: &Route,
        endpoint: &Endpoint,
        rejected: Option<&str>,
    ) -> Result<Option<String>, SendError> {
        let Some(credentials) = &endpoint.oauth2 else {
            return Ok(None);
        };
        let failed = |e: String| retryable(TokenError(e).to_string());
        let token_url = reqwest::Url::parse(&credentials.token_url)
            .map_err(|e| failed(format!("invalid token URL: {e}")))?;
        self.guard(route, &token_url).await.map_err(failed)?;
        self.tokens
            .get(&route.client, &endpoint.id, credentials, rejected)
            .await
            .map(Some)
            .map_err(|e| retryable(e.to_string()))
    }

    /// Posts `message` to `url`, with `token` as its bearer.
    async fn post(
        &self,
        route: &Route,
        url: &reqwest::Url,
        message: &Message,
        token: Option<&str>,
    ) -> Result<reqwest::Response, SendError> {
        let mut request = route
            .client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(message.body.clone());
        for (name, value) in &message.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let proxied = route.proxy_for(url).is_some();
        request.send().await.map_err(|e| {
            // The URL may be a credential (a capability URL): the error names no URL.
            let e = e.without_url();
            let text = describe(&e);
            let kind = if text.contains("received fatal alert") {
                // TLS 1.3 clients learn of a refused certificate only from the alert.
                "the receiver refused the TLS handshake"
            } else if proxied && text.contains("tunnel") {
                "the proxy did not open a tunnel to the destination"
            } else if proxied && e.is_connect() {
                "connection to the proxy failed"
            } else if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            retryable(format!("{kind}: {text}"))
        })
    }
}

fn retryable(reason: String) -> SendError {
    SendError::Retryable {
        reason,
        retry_after: None,
        status_code: None,
        response: None,
    }
}

/// The error and its causes on one line: reqwest hides the useful part in the chain.
pub(super) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[async_trait]
impl Destination for HttpDestination {
    async fn send(&self, endpoint: &Endpoint, message: &Message) -> Result<Ack, SendError> {
        let url = reqwest::Url::parse(&endpoint.url).map_err(|e| SendError::Permanent {
            reason: format!("invalid url: {e}"),
            status_code: None,
            response: None,
            disable_endpoint: false,
        })?;
        let route = self.route_for(endpoint)?;
        self.guard(&route, &url).await.map_err(retryable)?;
        let token = self.token(&route, endpoint, None).await?;
        let mut response = self.post(&route, &url, message, token.as_deref()).await?;
        // A token the receiver no longer takes (revoked, or expired early): one new one,
        // one more try.
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(rejected) = token.as_deref() {
                let fresh = self.token(&route, endpoint, Some(rejected)).await?;
                response = self.post(&route, &url, message, fresh.as_deref()).await?;
            }
        }
        let status = response.status();
        let response_via_proxy = response.headers().contains_key(reqwest::header::VIA);
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        // Read at most the excerpt: a huge response is not downloaded.
        let mut body = Vec::new();
        while body.len() < RESPONSE_EXCERPT_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        let code = status.as_u16();
        let text = (!body.is_empty()).then(|| excerpt(&body));
        if status.is_success() {
            return Ok(Ack {
                status_code: Some(code),
                response: text,
            });
        }
        if code == 410 {
            return Err(SendError::Permanent {
                reason: "410 Gone: the endpoint asked to stop deliveries".into(),
                status_code: Some(code),
                response: text,
                disable_endpoint: true,
            });
        }
        // A proxy adds `Via` to what it forwards (RFC 9110, 7.6.3): an answer through the
        // proxy without it is the proxy's own, such as tinyproxy's `500 Unable to connect`.
        let from_proxy = route.proxy_for(&url).is_some() && !response_via_proxy;
        let reason = if from_proxy {
            format!("HTTP {code} from the proxy (it did not get an answer from the destination)")
        } else if status.is_redirection() {
            format!("HTTP {code} (redirects are not followed)")
        } else {
            format!("HTTP {code}")
        };
        Err(SendError::Retryable {
            reason,
            retry_after: if code == 429 || code == 503 {
                retry_after
            } else {
                None
            },
            status_code: Some(code),
            response: text,
        })
    }
}
