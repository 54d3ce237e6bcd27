//! What must hold for any input at all: it never panics, and what it
//! accepts behaves. Shared by the property tests beside it and by the fuzz
//! targets in `fuzz/`, which include this file.

use std::time::Duration;

use virga_lab::preset::Preset;
use virga_lab::trace::{parse_azure, schedule};

/// A preset that parses names only functions it declares, writes itself
/// back as TOML that parses again to the same TOML, and shrinks with
/// `--quick`.
pub fn preset(text: &str) {
    let Ok(mut p) = Preset::parse(text, "input.toml") else {
        return;
    };
    let again = toml::to_string(&p).expect("a parsed preset writes back as TOML");
    let back = Preset::parse(&again, "again.toml")
        .unwrap_or_else(|e| panic!("written back, it no longer parses: {e}\n{again}"));
    assert_eq!(toml::to_string(&back).expect("again"), again);
    for s in &p.scenarios {
        for f in &s.functions {
            assert!(p.function(f).is_some(), "scenario {:?} names {f}", s.title);
        }
    }
    p.quick();
}

/// A trace row that parses has one count per minute column, and its
/// arrivals (when few enough to draw) fall in order within their minutes.
pub fn trace_csv(text: &str, row: usize, seed: u64) {
    let Ok(counts) = parse_azure(text, row) else {
        return;
    };
    assert!(!counts.is_empty());
    assert!(counts.len() <= text.matches(',').count() + 1);
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total > 10_000 {
        return;
    }
    let arrivals = schedule(&counts, 60.0, seed);
    assert_eq!(arrivals.len() as u64, total);
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
    if let Some(last) = arrivals.last() {
        assert!(*last < Duration::from_secs(60 * counts.len() as u64));
    }
}
