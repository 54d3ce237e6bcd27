//! A runtime's answer to a batch, whatever it wrote: every member gets one
//! outcome. The first byte is the batch size (0 to 64: the size, not the
//! bytes, is what a runtime cannot choose).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/virga-platform/tests/invariants/mod.rs"]
#[allow(dead_code)]
mod invariants;

fuzz_target!(|data: &[u8]| {
    if let Some((n, body)) = data.split_first() {
        invariants::batch_response(body, usize::from(*n % 65));
    }
});
