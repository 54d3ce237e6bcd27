//! What must hold for any input at all: it never panics, and what it
//! accepts behaves. Shared by the property tests beside it and by the fuzz
//! targets in `fuzz/`, which include this file.

use chrono::{DateTime, Timelike, Utc};
use virga_spec::schedule::{Schedule, ScheduleExpression};
use virga_spec::Manifest;

/// A manifest that parses writes itself back as TOML that parses to the
/// same manifest (what `virga tune` does with the one it reads from the API).
pub fn manifest(text: &str) {
    match Manifest::parse(text, "input.toml") {
        Ok(m) => {
            let again = toml::to_string(&m).expect("a parsed manifest writes back as TOML");
            let back = Manifest::parse(&again, "again.toml")
                .unwrap_or_else(|e| panic!("written back, it no longer parses: {e}\n{again}"));
            assert_eq!(back, m, "written back as\n{again}");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// A schedule that parses writes itself back as written, and fires after
/// the time asked about (a cron on a whole minute).
pub fn schedule(text: &str, after: DateTime<Utc>) {
    let Ok(e) = ScheduleExpression::parse(text) else {
        return;
    };
    assert_eq!(e.as_str(), text);
    let json = serde_json::to_string(&e).expect("a schedule writes back as JSON");
    assert_eq!(
        serde_json::from_str::<ScheduleExpression>(&json).expect("and reads back"),
        e
    );
    if let Some(next) = e.schedule().next_after(after) {
        assert!(next > after, "{text}: {next} is not after {after}");
        if let Schedule::Cron(_) = e.schedule() {
            assert_eq!((next.second(), next.nanosecond()), (0, 0), "{text}: {next}");
        }
    }
}
