//! libFuzzer target: `hookrelay::fuzzing::ingest_body` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookrelay::fuzzing::ingest_body(data));
