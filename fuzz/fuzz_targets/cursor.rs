//! List cursors from query strings: decode must never panic, and accepts exactly what
//! encode makes of a valid id.
#![no_main]

use hookrelay::store::cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
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
});
