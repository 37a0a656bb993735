//! The checks behind the fuzz targets: input from the wire must never make hookrelay panic,
//! and what hookrelay makes itself must round-trip. Each function takes raw bytes; the
//! libFuzzer targets under `fuzz/` call them, and the unit tests below run them over seeded
//! random and mutated inputs as the campaign's short form in CI.
//!
//! Not an API: public only so that the fuzz crate can reach it.

use std::sync::Arc;

use crate::{
    api::CreateEvent,
    destinations::{self, net::NetworkPolicy},
    domain::routing::{self, Routing, RoutingSpec},
    domain::{self, Endpoint, Event},
    ingest, signing,
    store::{self, cursor},
};

/// Splits fuzz input into `n` fields at `0xFF` bytes (never valid UTF-8, so a field never
/// contains one); missing fields are empty.
fn fields(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0xFF).collect();
    out.resize(n, &[]);
    out
}

fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A fixed "now" for signatures made here.
const NOW: i64 = 1_700_000_000;

/// Signature headers and keys from the wire: `verify`, `validate_secret` and `public_key`
/// never panic, and a signature made by `sign` verifies, also next to a foreign one.
///
/// Fields: keys (newline separated), `webhook-id`, `webhook-timestamp`, `webhook-signature`,
/// body, secret seed.
pub fn signature(data: &[u8]) {
    let f = fields(data, 6);
    let keys: Vec<&str> = text(f[0]).map(|k| k.lines().collect()).unwrap_or_default();
    let (id, ts, sig) = (text(f[1]), text(f[2]), text(f[3]));
    let body = f[4];
    let now = ts.and_then(|t| t.trim().parse::<i64>().ok()).unwrap_or(NOW);
    let _ = signing::verify(&keys, id, ts, sig, body, now);
    for key in &keys {
        let _ = signing::validate_secret(key);
        let _ = signing::public_key(key);
    }
    // A real secret of 24 to 32 bytes from the seed signs; verify must accept it.
    let seed: Vec<u8> = f[5].iter().copied().chain(0..32).take(32).collect();
    let len = 24 + usize::from(seed[0] % 9);
    let secret = format!(
        "whsec_{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &seed[..len])
    );
    let id = id.unwrap_or("msg_1");
    let own = signing::sign(&[&secret], id, NOW, body);
    let header = match sig {
        Some(extra) if !extra.contains(' ') => format!("{extra} {own}"),
        _ => own,
    };
    let verdict = signing::verify(
        &[&secret],
        Some(id),
        Some(&NOW.to_string()),
        Some(&header),
        body,
        NOW,
    );
    assert_eq!(verdict, Ok(()), "own signature refused: {header:?}");
}

/// Schemes tried in front of every fuzzed URL.
const SCHEMES: &[&str] = &[
    "",
    "http://",
    "https://",
    "sqs://",
    "pubsub://",
    "kafka://",
    "amqp://",
    "nats://",
    "redis://",
    "mqtt://",
    "ftp://",
];

/// Endpoint URLs of every scheme: validation never panics, and an accepted HTTP URL carries
/// no credentials. HTTP URLs naming a host by DNS name are skipped (no look-ups while
/// fuzzing); IP literals go through the network policy, broker URLs through their parsers.
pub fn url(data: &[u8]) {
    let Some(raw) = text(data) else {
        return;
    };
    let policy = NetworkPolicy::default();
    for scheme in SCHEMES {
        let candidate = format!("{scheme}{raw}");
        let parsed = url::Url::parse(&candidate).ok();
        let http = parsed
            .as_ref()
            .is_some_and(|u| matches!(u.scheme(), "http" | "https"));
        if http
            && matches!(
                parsed.as_ref().and_then(url::Url::host),
                Some(url::Host::Domain(_))
            )
        {
            continue;
        }
        let verdict = futures::executor::block_on(destinations::validate_url(&candidate, &policy));
        if let (Ok(()), true, Some(u)) = (verdict, http, &parsed) {
            assert!(
                u.username().is_empty() && u.password().is_none(),
                "accepted a URL with credentials: {candidate:?}"
            );
        }
    }
}

/// The body of `POST /v1/tenants/{tenant}/events`: deserialization into the API's request
/// type, the ingest checks that need no store, and the data compiled as a JSON Schema (event
/// types carry one from the wire). None may panic.
pub fn ingest_body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<CreateEvent>(data) else {
        return;
    };
    let new = ingest::NewEvent {
        event_type: body.event_type,
        data: body.data,
        actor: body.actor,
        idempotency_key: body.idempotency_key,
        deliver_at: body.deliver_at,
        traceparent: None,
    };
    let _ = ingest::validate(&new);
    let _ = crate::telemetry::trace::valid_traceparent(&new.event_type);
    if let Ok(validator) = ingest::compile_schema(&new.data) {
        let _ = validator.is_valid(&new.data);
    }
}

/// List cursors from query strings: `decode` never panics, and accepts exactly what `encode`
/// makes of a valid id.
pub fn cursor(data: &[u8]) {
    let Some(text) = text(data) else {
        return;
    };
    if let Some(id) = cursor::decode(text) {
        assert_eq!(
            cursor::decode(&cursor::encode(&id)).as_deref(),
            Some(id.as_str())
        );
    }
    let round = cursor::decode(&cursor::encode(text));
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    assert_eq!(round.is_some(), valid, "{text:?}");
}

/// Endpoint routings from the wire and from the store, and an event delivered through them:
/// nothing panics or overflows the stack (which aborts the process). A document the API
/// accepts (parsed as the endpoint API does, validated by `Routing::compile`) is stored as
/// the store writes it and read back as the store reads it, and must come back the same and
/// usable; any text at all, as a row written past hookrelay, is read back the same way and
/// delivered through too (failing cleanly where it is unusable). Delivering is what the
/// dispatcher does: fan-out (filter and ordering key), then the signed message (transform).
///
/// Fields: routing document, event data.
pub fn routing(data: &[u8]) {
    let f = fields(data, 2);
    let event = Event {
        id: "evt_1".into(),
        tenant_id: "t".into(),
        event_type: "order.updated".into(),
        // The API's parser bounds the depth of event data, as here.
        data: serde_json::from_slice(f[1]).unwrap_or_else(|_| serde_json::json!({"a": 1})),
        actor: Some("u_1".into()),
        idempotency_key: None,
        traceparent: None,
        created_at: chrono::DateTime::from_timestamp(NOW, 0).unwrap_or_default(),
        deliver_at: None,
    };
    if let Ok(spec) = serde_json::from_slice::<RoutingSpec>(f[0]) {
        if let Ok(accepted) = Routing::compile(spec) {
            let accepted = endpoint(Arc::new(accepted));
            let stored = store::routing_text(&accepted);
            let read = routing::compiled(stored.as_deref());
            assert_eq!(
                read.error(),
                None,
                "an accepted routing is unusable once stored"
            );
            assert!(
                *read == *accepted.routing,
                "stored routing changed: {stored:?}"
            );
            deliver(&event, &endpoint(read));
        }
    }
    if let Some(row) = text(f[0]) {
        let read = routing::compiled(Some(row));
        let ep = endpoint(read.clone());
        deliver(&event, &ep);
        if read.error().is_some() {
            assert_eq!(
                store::routing_text(&ep).as_deref(),
                Some(row),
                "kept as stored"
            );
        }
    }
}

fn endpoint(routing: Arc<Routing>) -> Endpoint {
    Endpoint {
        routing,
        ..Endpoint::new(
            "t",
            "http://127.0.0.1:9/",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        )
    }
}

fn deliver(event: &Event, ep: &Endpoint) {
    let now = chrono::DateTime::from_timestamp(NOW, 0).unwrap_or_default();
    let fanned = domain::fan_out(event, std::slice::from_ref(ep), 5);
    match destinations::Message::new(event, ep, now) {
        Ok(message) => {
            assert!(ep.routing.error().is_none());
            assert!(!message.body.is_empty());
        }
        Err(e) => assert!(
            ep.routing.error() == Some(e.as_str()) || e.contains("nest more than"),
            "unexpected failure: {e}"
        ),
    }
    // An unusable routing lets every event through, to fail visibly.
    if ep.routing.error().is_some() {
        assert_eq!(fanned.len(), 1);
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    /// Inputs per target: seeds, then random mutations of them (bit flips, cut, inserted and
    /// duplicated runs, spliced seeds).
    const RUNS: usize = 3_000;

    fn campaign(target: fn(&[u8]), seeds: &[&[u8]]) {
        let seed: u64 = rand::random();
        let mut rng = StdRng::seed_from_u64(seed);
        for s in seeds {
            target(s);
        }
        for _ in 0..RUNS {
            let mut input = seeds[rng.gen_range(0..seeds.len())].to_vec();
            for _ in 0..rng.gen_range(1..6) {
                mutate(&mut rng, &mut input, seeds);
            }
            let ok = std::panic::catch_unwind(|| target(&input));
            assert!(
                ok.is_ok(),
                "seed {seed}: input {:?} panicked",
                String::from_utf8_lossy(&input)
            );
        }
    }

    fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[&[u8]]) {
        let at = |rng: &mut StdRng, len: usize| rng.gen_range(0..=len);
        match rng.gen_range(0..6) {
            0 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if !input.is_empty() => {
                let i = rng.gen_range(0..input.len());
                input.truncate(i);
            }
            2 => {
                let i = at(rng, input.len());
                let interesting: &[&[u8]] = &[
                    b"\xff",
                    b"\x00",
                    b"%",
                    b"%zz",
                    b"[",
                    b"]",
                    b"{",
                    b"}",
                    b":",
                    b"@",
                    b"//",
                    b"\"",
                    b"\\u0000",
                    b"999999999999999999999",
                    b"-1",
                    b"1e309",
                    b"v1,",
                    b"v1a,",
                    b" ",
                    b"\n",
                    b"whsec_",
                    b"whsk_",
                    b"whpk_",
                    "\u{202e}".as_bytes(),
                ];
                let run = interesting[rng.gen_range(0..interesting.len())];
                input.splice(i..i, run.iter().copied());
            }
            3 if !input.is_empty() => {
                let a = rng.gen_range(0..input.len());
                let b = rng.gen_range(a..=input.len().min(a + 16));
                let run = input[a..b].to_vec();
                let i = at(rng, input.len());
                input.splice(i..i, run);
            }
            4 => {
                let other = seeds[rng.gen_range(0..seeds.len())];
                let i = at(rng, input.len());
                input.truncate(i);
                input.extend_from_slice(&other[at(rng, other.len())..]);
            }
            _ => {
                let i = at(rng, input.len());
                let byte: u8 = rng.gen();
                input.insert(i, byte);
            }
        }
    }

    #[test]
    fn signature_inputs_never_panic_and_own_signatures_verify() {
        let body = br#"{"type":"user.created","data":{"id":1}}"#;
        let sig = signing::sign(
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "msg_1",
            NOW,
            body,
        );
        let mut seed =
            b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nwhpk_x\xffmsg_1\xff1700000000\xff".to_vec();
        seed.extend_from_slice(sig.as_bytes());
        seed.push(0xFF);
        seed.extend_from_slice(body);
        seed.extend_from_slice(b"\xff0123456789abcdef0123456789abcdef");
        campaign(
            signature,
            &[&seed, b"\xff\xff\xff v1,AAAA v1a,BBBB\xff", b""],
        );
    }

    #[test]
    fn url_inputs_never_panic() {
        campaign(
            url,
            &[
                b"127.0.0.1:8080/hook?x=1",
                b"[::1]:9/a",
                b"user:pw@10.0.0.1/",
                b"my-queue?region=us-east-1&endpoint=http%3A%2F%2F127.0.0.1%3A4566",
                b"project/topic?ordering_key=data.id",
                b"127.0.0.1:9092/topic?key=actor",
                b"guest:guest@127.0.0.1:5672/%2f?exchange=x&routing_key=k",
                b"127.0.0.1:6379/stream?maxlen=1000",
                b"127.0.0.1:1883/topic/a?qos=1",
            ],
        );
    }

    #[test]
    fn ingest_bodies_never_panic() {
        campaign(
            ingest_body,
            &[
                br#"{"type":"user.created","data":{"id":1,"name":"a"},"actor":"u_1"}"#,
                br#"{"type":"a.b","data":{"type":"object","properties":{"n":{"type":"integer","minimum":3}},"required":["n"]},"idempotency_key":"k","deliver_at":"2026-01-01T00:00:00Z"}"#,
                br##"{"type":"x","data":{"$ref":"#/definitions/a","pattern":"^(a+)+$"}}"##,
            ],
        );
    }

    #[test]
    fn routings_never_crash_delivery() {
        let long = vec!["a"; 40].join(".");
        let deep_value = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        let deep_data = format!("{}1{}", "[".repeat(126), "]".repeat(126));
        let renames: Vec<String> = (0..8)
            .map(|_| {
                format!(
                    r#"{{"rename":{{"data":"data.{}"}}}}"#,
                    vec!["b"; 30].join(".")
                )
            })
            .collect();
        let seeds: Vec<Vec<u8>> = vec![
            [
                &br#"{"filter":{"and":[{"field":"data.status","eq":"paid"},{"not":{"field":"actor","exists":false}}]},"ordering":{"key":"data.order.id","on_failure":"skip"},"transform":[{"rename":{"data.message":"text"}},{"set":{"a.b":{"c":[1,2]}}},{"pick":["text","a"]}]}"#[..],
                b"\xff",
                br#"{"status":"paid","order":{"id":"o1"},"message":"hi"}"#,
            ]
            .concat(),
            [
                &br#"{"filter":{"or":[{"field":"data.n","in":[1,2,3]},{"field":"data.items.0.sku","prefix":"A-"},{"field":"data.n","gte":1.5}]}}"#[..],
                b"\xff",
                br#"{"n":2,"items":[{"sku":"A-1"}]}"#,
            ]
            .concat(),
            format!(r#"{{"transform":[{{"set":{{"{long}":{deep_value}}}}}]}}"#).into_bytes(),
            format!(r#"{{"transform":[{}]}}"#, renames.join(",")).into_bytes(),
            [
                format!(r#"{{"transform":[{{"rename":{{"data":"{long}"}}}}]}}"#).as_bytes(),
                b"\xff",
                deep_data.as_bytes(),
            ]
            .concat(),
            br#"{"filter":{"field":"data.a","eq":{"x":[[[[1]]]]}},"transform":[{"pick":["data.a.x.0"]}]}"#.to_vec(),
        ];
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        campaign(routing, &seeds);
    }

    #[test]
    fn cursors_never_panic_and_round_trip() {
        let made = cursor::encode("dlv_01JD7Q8G5W6N0B6M5M8YVKX2ZP");
        campaign(cursor, &[made.as_bytes(), b"not-a-cursor", b""]);
    }
}
