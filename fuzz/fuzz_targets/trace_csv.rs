//! Azure-style trace CSV rows: never panic; a row that parses has a count
//! per minute column. The first byte picks the row, the next 8 the seed.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/virga-lab/tests/invariants/mod.rs"]
#[allow(dead_code)]
mod invariants;

fuzz_target!(|data: &[u8]| {
    let Some(([row], rest)) = data.split_first_chunk::<1>() else {
        return;
    };
    let Some((seed, text)) = rest.split_first_chunk::<8>() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(text) {
        invariants::trace_csv(text, usize::from(*row % 8), u64::from_le_bytes(*seed));
    }
});
