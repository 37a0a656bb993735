//! Server-side session state of the dashboard: sessions ended by logging out, and failed
//! logins per client address (throttled).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failed logins an address may make per [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
/// The window failed logins are counted over.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Addresses tracked at most; beyond, the stalest windows go first.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct Guard {
    /// Nonces of sessions that logged out, with when their cookie expires anyway (unix s).
    revoked: Mutex<HashMap<String, i64>>,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The address failures are counted for: IPv6 clients by their /64, which one holder
/// usually has whole.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

impl Guard {
    /// Ends the session with `nonce` (expiring at `expires`, unix seconds) for good.
    pub fn revoke(&self, nonce: &str, expires: i64, now: i64) {
        let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.retain(|_, e| *e >= now);
        revoked.insert(nonce.to_owned(), expires);
    }

    pub fn is_revoked(&self, nonce: &str) -> bool {
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        revoked.contains_key(nonce)
    }

    /// `Some(wait)` when `ip` made too many failed logins lately.
    pub fn throttled(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = failures.get(&key(ip))?;
        let end = *since + FAILURE_WINDOW;
        (*count >= MAX_FAILURES && end > now).then(|| end - now)
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED {
            failures.retain(|_, (_, since)| *since + FAILURE_WINDOW > now);
        }
        if failures.len() >= MAX_TRACKED {
            if let Some(stalest) = failures
                .iter()
                .min_by_key(|(_, (_, s))| *s)
                .map(|(k, _)| *k)
            {
                failures.remove(&stalest);
            }
        }
        let entry = failures.entry(key(ip)).or_insert((0, now));
        if entry.1 + FAILURE_WINDOW <= now {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&key(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_throttle_an_address_for_the_window_only() {
        let g = Guard::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(g.throttled(a, t0).is_none());
            g.failed(a, t0);
        }
        assert!(g.throttled(a, t0).is_some());
        assert!(g.throttled(b, t0).is_none());
        assert!(g.throttled(a, t0 + FAILURE_WINDOW).is_none());
        // One /64 is one address.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            g.failed(v6a, t0);
        }
        assert!(g.throttled(v6b, t0).is_some());
        g.succeeded(v6b);
        assert!(g.throttled(v6a, t0).is_none());
    }

    #[test]
    fn revoked_sessions_stay_revoked_until_they_expire() {
        let g = Guard::default();
        g.revoke("n1", 100, 0);
        assert!(g.is_revoked("n1") && !g.is_revoked("n2"));
        g.revoke("n2", 300, 200);
        assert!(!g.is_revoked("n1") && g.is_revoked("n2"));
    }
}
