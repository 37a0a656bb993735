//! Endpoint URLs of every scheme: validation must never panic, and an accepted HTTP URL
//! carries no credentials. HTTP URLs naming a host by DNS name are skipped (no look-ups
//! while fuzzing); IP literals go through the network policy, broker URLs through their
//! scheme's parser.
#![no_main]

use hookrelay::destinations::{self, net::NetworkPolicy};
use libfuzzer_sys::fuzz_target;

const SCHEMES: &[&str] = &[
    "", "http://", "https://", "sqs://", "pubsub://", "kafka://", "amqp://", "nats://",
    "redis://", "mqtt://", "ftp://",
];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let policy = NetworkPolicy::default();
    for scheme in SCHEMES {
        let candidate = format!("{scheme}{raw}");
        if let Ok(url) = url::Url::parse(&candidate) {
            let http = matches!(url.scheme(), "http" | "https");
            if http && matches!(url.host(), Some(url::Host::Domain(_))) {
                continue;
            }
        }
        let verdict = futures::executor::block_on(destinations::validate_url(&candidate, &policy));
        if verdict.is_ok() {
            if let Ok(url) = url::Url::parse(&candidate) {
                if matches!(url.scheme(), "http" | "https") {
                    assert!(url.username().is_empty() && url.password().is_none());
                }
            }
        }
    }
});
