//! Signature headers and keys from the wire: verify must never panic, and a signature
//! made by `sign` must verify.
#![no_main]

use arbitrary::Arbitrary;
use hookrelay::signing;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    keys: Vec<&'a str>,
    msg_id: Option<&'a str>,
    timestamp: Option<&'a str>,
    signature: Option<&'a str>,
    body: &'a [u8],
    now: i64,
    seed: [u8; 32],
}

const NOW: i64 = 1_700_000_000;

fuzz_target!(|input: Input<'_>| {
    // Arbitrary headers against arbitrary keys.
    let _ = signing::verify(
        &input.keys,
        input.msg_id,
        input.timestamp,
        input.signature,
        input.body,
        input.now,
    );
    for key in &input.keys {
        let _ = signing::validate_secret(key);
        let _ = signing::public_key(key);
    }
    // A real secret signs; verification must accept it, also with fuzzed extra signatures.
    let secret = format!(
        "whsec_{}",
        base64_encode(&input.seed[..24 + usize::from(input.seed[0] % 9)])
    );
    let id = input.msg_id.unwrap_or("msg_1");
    let sig = signing::sign(&[&secret], id, NOW, input.body);
    let header = match input.signature {
        Some(extra) if !extra.contains(' ') => format!("{extra} {sig}"),
        _ => sig,
    };
    let ok = signing::verify(
        &[&secret],
        Some(id),
        Some(&NOW.to_string()),
        Some(&header),
        input.body,
        NOW,
    );
    assert_eq!(ok, Ok(()), "own signature refused: {header:?}");
});

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
