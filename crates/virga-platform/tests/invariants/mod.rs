//! What must hold for any input at all: it never panics, and what it
//! accepts behaves. Shared by the property tests beside it and by the fuzz
//! targets in `fuzz/`, which include this file.

use std::path::{Component, Path};

use virga_platform::events::bucket::{validate_key, MAX_KEY_BYTES};
use virga_platform::scheduler::split_batch_answer;

/// A runtime's answer to a batch of `n`, whatever it wrote, gives each
/// member exactly one outcome; an answer handed on is JSON.
pub fn batch_response(body: &[u8], n: usize) {
    let out = split_batch_answer(body, n);
    assert_eq!(out.len(), n);
    for answer in out.iter().flatten() {
        serde_json::from_slice::<serde_json::Value>(answer).expect("a member's answer is JSON");
    }
}

/// An accepted object key is 1 to 1024 bytes and, read as a path, stays
/// below its bucket: no root, no `..`, no `.`.
pub fn object_key(key: &str) {
    if validate_key(key).is_err() {
        return;
    }
    assert!((1..=MAX_KEY_BYTES).contains(&key.len()));
    assert!(
        Path::new(key)
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "{key:?} leaves its bucket"
    );
    assert!(!key.chars().any(char::is_control), "{key:?}");
}
