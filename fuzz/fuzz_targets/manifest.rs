//! `Manifest::parse` on any text: never panics; what parses writes back.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/virga-spec/tests/invariants/mod.rs"]
#[allow(dead_code)]
mod invariants;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        invariants::manifest(text);
    }
});
