//! Egress through a proxy (`--egress-proxy`): outgoing HTTP deliveries and OAuth2 token
//! requests leave through one HTTP(S) proxy, so that receivers see one fixed source address,
//! except for the destinations in `--egress-no-proxy`.
//!
//! A proxied request's host is resolved by the proxy, not by hookrelay's guarded resolver:
//! [`EgressProxy::check`] resolves it first and refuses it unless every address it has is
//! one the network rules allow, so the proxy is never a way into a private network.

use std::net::IpAddr;

use ipnet::IpNet;

use super::net::NetworkPolicy;

/// The proxy and the destinations that bypass it.
#[derive(Debug, Clone)]
pub struct EgressProxy {
    url: reqwest::Url,
    exceptions: Vec<Exception>,
}

/// One `--egress-no-proxy` entry.
#[derive(Debug, Clone, PartialEq)]
enum Exception {
    /// `*`: nothing goes through the proxy.
    All,
    /// A host name and its subdomains (`example.com`), or only its subdomains
    /// (`.example.com`).
    Domain { name: String, subdomains_only: bool },
    /// An IP address or network, matched against IP-literal hosts.
    Network(IpNet),
}

impl EgressProxy {
    /// The proxy at `url` (`http://` or `https://`, credentials allowed), bypassed for the
    /// `no_proxy` entries.
    pub fn new(url: &str, no_proxy: &[String]) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("must be an http:// or https:// URL with a host".into());
        }
        let exceptions = no_proxy
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(Exception::parse)
            .collect::<Result<_, _>>()?;
        Ok(Self { url, exceptions })
    }

    /// The proxy's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// The proxy's host, when it is a name (the guarded resolver resolves it as given: the
    /// operator chose it, private address or not).
    pub fn host_name(&self) -> Option<String> {
        match self.url.host()? {
            url::Host::Domain(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        }
    }

    /// Whether a request to `url` goes through the proxy.
    pub fn applies_to(&self, url: &reqwest::Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        !self.exceptions.iter().any(|e| e.matches(&host))
    }

    /// Checks a destination the proxy will resolve itself: refused unless it resolves only
    /// to addresses `policy` allows (an IP literal is checked as it is).
    pub async fn check(&self, policy: &NetworkPolicy, url: &reqwest::Url) -> Result<(), String> {
        let host = match url.host() {
            Some(url::Host::Domain(name)) => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => return permitted(policy, ip.into(), &ip.to_string()),
            Some(url::Host::Ipv6(ip)) => return permitted(policy, ip.into(), &ip.to_string()),
            None => return Err("the URL has no host".into()),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = policy.lookup().resolve(&host, port).await.map_err(|e| {
            format!("{host} could not be resolved to check it before the proxy is asked: {e}")
        })?;
        if addrs.is_empty() {
            return Err(format!("{host} has no address"));
        }
        for ip in addrs {
            permitted(policy, ip, &host)?;
        }
        Ok(())
    }
}

fn permitted(policy: &NetworkPolicy, ip: IpAddr, host: &str) -> Result<(), String> {
    if policy.permits(ip) {
        Ok(())
    } else {
        Err(format!(
            "{host} is {ip}, a private, loopback or link-local address (see --allow-network); the proxy was not asked"
        ))
    }
}

impl Exception {
    fn parse(entry: &str) -> Result<Self, String> {
        if entry == "*" {
            return Ok(Self::All);
        }
        let bare = entry.trim_start_matches('[').trim_end_matches(']');
        if let Ok(net) = bare.parse::<IpNet>() {
            return Ok(Self::Network(net));
        }
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Network(IpNet::from(ip)));
        }
        let (name, subdomains_only) = match entry.strip_prefix('.') {
            Some(rest) => (rest, true),
            None => (entry, false),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !valid {
            return Err(format!(
                "--egress-no-proxy entry {entry:?} is not a host name, IP address, network or *"
            ));
        }
        Ok(Self::Domain {
            name: name.to_ascii_lowercase(),
            subdomains_only,
        })
    }

    fn matches(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (Self::All, _) => true,
            (Self::Network(net), url::Host::Ipv4(ip)) => net.contains(&IpAddr::from(*ip)),
            (Self::Network(net), url::Host::Ipv6(ip)) => net.contains(&IpAddr::from(*ip)),
            (
                Self::Domain {
                    name,
                    subdomains_only,
                },
                url::Host::Domain(host),
            ) => {
                let host = host.to_ascii_lowercase();
                let below = host
                    .strip_suffix(name.as_str())
                    .is_some_and(|rest| rest.ends_with('.'));
                below || (!subdomains_only && host == *name)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(no_proxy: &[&str]) -> EgressProxy {
        let list: Vec<String> = no_proxy.iter().map(|s| s.to_string()).collect();
        EgressProxy::new("http://user:pw@proxy.internal:3128", &list).unwrap()
    }

    fn applies(p: &EgressProxy, url: &str) -> bool {
        p.applies_to(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn exceptions_match_names_subdomains_addresses_and_networks() {
        let p = proxy(&[
            "example.com",
            ".corp.test",
            "10.0.0.0/8",
            "192.0.2.7",
            "::1",
        ]);
        for direct in [
            "https://example.com/hook",
            "https://API.example.com/hook",
            "https://a.corp.test/",
            "http://10.1.2.3:8080/",
            "http://192.0.2.7/",
            "http://[::1]:9/",
        ] {
            assert!(!applies(&p, direct), "{direct} bypasses the proxy");
        }
        for proxied in [
            "https://notexample.com/",
            "https://corp.test/",
            "https://example.com.evil.test/",
            "http://11.0.0.1/",
            "http://192.0.2.8/",
        ] {
            assert!(applies(&p, proxied), "{proxied} goes through the proxy");
        }
        assert!(!applies(&proxy(&["*"]), "https://anything.test/"));
        assert!(applies(&proxy(&[]), "https://anything.test/"));
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in ["not a url", "ftp://proxy:21", "socks5://proxy:1080"] {
            assert!(EgressProxy::new(bad, &[]).is_err(), "{bad}");
        }
        for bad in ["bad host", "a..b", "exa_mple.com"] {
            let err = EgressProxy::new("http://p:1", &[bad.to_string()]).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!(proxy(&[]).host_name().as_deref(), Some("proxy.internal"));
        let literal = EgressProxy::new("http://127.0.0.1:3128", &[]).unwrap();
        assert_eq!(literal.host_name(), None);
    }

    #[tokio::test]
    async fn a_proxied_destination_must_resolve_to_allowed_addresses_only() {
        let p = proxy(&[]);
        let policy = NetworkPolicy::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let err = p
            .check(&policy, &url("http://127.0.0.1:9/"))
            .await
            .unwrap_err();
        assert!(err.contains("the proxy was not asked"), "{err}");
        let err = p
            .check(&policy, &url("http://localhost:9/"))
            .await
            .unwrap_err();
        assert!(err.contains("localhost"), "{err}");
        assert!(p
            .check(&policy, &url("http://93.184.215.14/"))
            .await
            .is_ok());
    }
}
