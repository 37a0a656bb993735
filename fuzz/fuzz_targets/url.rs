//! Endpoint URLs of every scheme: parsing must never panic; an accepted URL is http(s)
//! with a host and no credentials. IP literals also go through the network policy (no DNS).
#![no_main]

use hookrelay::destinations::{self, net::NetworkPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for candidate in [
        raw.to_owned(),
        format!("http://{raw}"),
        format!("https://{raw}"),
        format!("ftp://{raw}"),
    ] {
        match destinations::parse_url(&candidate) {
            Ok(parsed) => {
                assert!(matches!(parsed.url.scheme(), "http" | "https"));
                assert!(!parsed.host.is_empty());
                assert!(parsed.url.username().is_empty() && parsed.url.password().is_none());
                let literal = parsed.host.trim_start_matches('[').trim_end_matches(']');
                if literal.parse::<std::net::IpAddr>().is_ok() {
                    let policy = NetworkPolicy::default();
                    let _ = futures::executor::block_on(destinations::net::check_host(
                        &policy,
                        &parsed.host,
                        parsed.port,
                    ));
                }
            }
            Err(message) => assert!(!message.is_empty()),
        }
    }
});
