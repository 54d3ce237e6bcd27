//! Object keys: an accepted key stays below its bucket.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/virga-platform/tests/invariants/mod.rs"]
#[allow(dead_code)]
mod invariants;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = std::str::from_utf8(data) {
        invariants::object_key(key);
    }
});
