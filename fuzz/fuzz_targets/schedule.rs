//! Schedule expressions: never panic; what parses writes back as written
//! and fires later than asked. The first 8 bytes pick the time asked about.
#![no_main]

use chrono::DateTime;
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/virga-spec/tests/invariants/mod.rs"]
#[allow(dead_code)]
mod invariants;

/// Seconds from 1970 to 2200, when EventBridge's years end.
const SPAN_S: u64 = 7_258_118_400;

fuzz_target!(|data: &[u8]| {
    let Some((time, text)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let seconds = (u64::from_le_bytes(*time) % SPAN_S) as i64;
    let after = DateTime::from_timestamp(seconds, 0).expect("in range");
    invariants::schedule(text, after);
});
