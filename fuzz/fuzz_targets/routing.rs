//! libFuzzer target: `hookrelay::fuzzing::routing` (see there for what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hookrelay::fuzzing::routing(data));
