//! The SSRF guard: which IP addresses HTTP destinations may reach.
//!
//! Checked on every attempt, after DNS resolution (DNS answers can change between the
//! endpoint's creation and its deliveries), inside the HTTP client so no caller can skip it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Private networks are refused unless the operator allows them.
#[derive(Debug, Clone, Default)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
    lookup: Lookup,
}

/// How destination host names are resolved.
#[derive(Clone, Default)]
pub enum Lookup {
    /// The system resolver (`getaddrinfo`: /etc/hosts, then resolv.conf).
    #[default]
    System,
    /// A given DNS server, asked directly, without caching (every attempt asks again).
    Server(SocketAddr, Arc<hickory_resolver::TokioResolver>),
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("System"),
            Self::Server(addr, _) => write!(f, "Server({addr})"),
        }
    }
}

impl Lookup {
    /// Resolves through the DNS server at `server` (UDP, then TCP for long answers).
    pub fn server(server: SocketAddr) -> Self {
        use hickory_resolver::{
            config::{NameServerConfigGroup, ResolverConfig, ResolverOpts},
            name_server::TokioConnectionProvider,
            Resolver,
        };
        let group = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build();
        Self::Server(server, Arc::new(resolver))
    }

    /// The addresses of `host`.
    pub async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<IpAddr>> {
        match self {
            Self::System => Ok(tokio::net::lookup_host((host, port))
                .await?
                .map(|a| a.ip())
                .collect()),
            Self::Server(_, resolver) => {
                // A trailing dot: the name is absolute, no search domains are tried.
                let fqdn = format!("{}.", host.trim_end_matches('.'));
                let found = resolver
                    .lookup_ip(fqdn)
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Ok(found.iter().collect())
            }
        }
    }
}

impl NetworkPolicy {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self {
            allowed,
            lookup: Lookup::System,
        }
    }

    /// Resolves destination names with `lookup` instead of the system resolver.
    pub fn with_lookup(mut self, lookup: Lookup) -> Self {
        self.lookup = lookup;
        self
    }

    /// Whether a destination may be reached at `ip`.
    /// How this policy resolves host names.
    pub fn lookup(&self) -> &Lookup {
        &self.lookup
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allowed.iter().any(|net| net.contains(&ip)) || !is_internal(ip)
    }
}

/// Unwraps the IPv6 forms that carry an IPv4 address the packet may end up at, so that
/// `::ffff:127.0.0.1` is judged as the loopback address it is: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`, which
/// a 6to4 relay turns into a.b.c.d: `2002:a9fe:a9fe::` is 169.254.169.254).
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    };
    if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_loopback() && !v6.is_unspecified() {
        return v4(s[6], s[7]);
    }
    if s[0] == 0x2002 {
        return v4(s[1], s[2]);
    }
    ip
}

/// Loopback, private, link-local (cloud metadata), shared, multicast, broadcast,
/// unspecified and reserved addresses.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => is_internal_v6(v6),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (64..128).contains(&o[1])) // shared address space (CGNAT)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast (192.88.99.0/24)
        || (o[0] == 198 && (18..20).contains(&o[1])) // benchmarking
        || o[0] >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (first == 0x64 && ip.segments()[1] == 0xff9b) // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
        || (first == 0x2001 && ip.segments()[1] == 0) // Teredo 2001::/32 (wraps any IPv4)
        || (first == 0x0100 && ip.segments()[1..4] == [0, 0, 0]) // discard-only 100::/64
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
}

/// A DNS resolver for reqwest that drops addresses the policy refuses, and fails when
/// none is left. The egress proxy's own host name (`trusted`), which the operator chose, is
/// resolved as it is.
pub struct GuardedResolver {
    pub policy: Arc<NetworkPolicy>,
    pub trusted: Option<String>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let trusted = self
            .trusted
            .as_deref()
            .is_some_and(|t| name.as_str().eq_ignore_ascii_case(t));
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if trusted {
                let addrs = policy.lookup.resolve(&host, 0).await?;
                let iter: reqwest::dns::Addrs =
                    Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                return Ok(iter);
            }
            let addrs: Vec<SocketAddr> = policy
                .lookup
                .resolve(&host, 0)
                .await?
                .into_iter()
                .filter(|ip| policy.permits(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if addrs.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves only to addresses that are not allowed (private, loopback or link-local; see --allow-network)").into();
                return Err(err);
            }
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}

/// Resolves `host` and checks its addresses against the policy (used when an endpoint is
/// created, to refuse a blocked URL at once). An IP literal is checked without DNS.
pub async fn check_host(policy: &NetworkPolicy, host: &str, port: u16) -> Result<(), String> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match policy.lookup.resolve(host, port).await {
            Ok(found) => found,
            // A name that does not resolve now may later; every attempt is checked again.
            Err(_) => return Ok(()),
        },
    };
    // Like the resolver, which connects only to permitted addresses: refuse when none is.
    match addrs.iter().find(|ip| !policy.permits(**ip)) {
        Some(ip) if !addrs.iter().any(|ip| policy.permits(*ip)) => Err(format!(
            "{host} is {ip}, a private, loopback or link-local address; the operator must allow it with --allow-network"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let p = NetworkPolicy::default();
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "ff02::1",
            // 6to4 wrapping internal IPv4 (169.254.169.254, 127.0.0.1), the relay anycast,
            // Teredo (which wraps an obfuscated IPv4), discard-only, local-use NAT64.
            "2002:a9fe:a9fe::1",
            "2002:7f00:1::",
            "192.88.99.1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "100::1",
            "64:ff9b:1::a9fe:a9fe",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} should be refused");
        }
        for good in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
            // 6to4 around a public IPv4 address is judged as that address.
            "2002:808:808::1",
        ] {
            assert!(p.permits(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_themselves() {
        let p = NetworkPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(p.permits(ip("127.0.0.1")));
        assert!(p.permits(ip("::ffff:127.0.0.1")));
        assert!(!p.permits(ip("10.0.0.1")));
        assert!(!p.permits(ip("::1")));
    }

    #[tokio::test]
    async fn check_host_resolves_names() {
        let p = NetworkPolicy::default();
        assert!(check_host(&p, "localhost", 80).await.is_err());
        assert!(check_host(&p, "[::1]", 80).await.is_err());
        let open = NetworkPolicy::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(check_host(&open, "127.0.0.1", 80).await.is_ok());
    }
}
