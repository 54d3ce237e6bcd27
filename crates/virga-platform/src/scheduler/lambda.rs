//! The Lambda identity of functions and invocations: ARNs and X-Ray trace ids.

use super::*;

/// An X-Ray-shaped trace id, derived from the request id.
pub(super) fn trace_id(request_id: &str) -> String {
    trace_id_at(request_id, chrono::Utc::now().timestamp())
}

/// `Root=1-{secs:08x}-{24 hex of the id};Parent={16 of them};Sampled=0`,
/// the id's characters pushed one by one rather than collected into a
/// string of their own (once per invocation).
fn trace_id_at(request_id: &str, secs: i64) -> String {
    use std::fmt::Write;
    let undashed = || request_id.chars().filter(|&c| c != '-');
    let mut t = String::with_capacity(80);
    let _ = write!(t, "Root=1-{secs:08x}-");
    t.extend(undashed().take(24));
    t.push_str(";Parent=");
    t.extend(undashed().take(16));
    t.push_str(";Sampled=0");
    t
}

impl Scheduler {
    pub(super) fn arn_of(&self, name: &str) -> String {
        format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
    }
}

pub(super) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_written_as_the_format_did() {
        let id = "0f4c2a5e-1111-2222-3333-444455556666";
        for secs in [0, 0x5f5e_1000, 0x1_0000_0000, 1_764_700_000] {
            let hex: String = id.chars().filter(|c| *c != '-').take(24).collect();
            assert_eq!(
                trace_id_at(id, secs),
                format!("Root=1-{secs:08x}-{hex};Parent={};Sampled=0", &hex[..16])
            );
        }
        // A short id keeps what it has; characters, not bytes, are counted.
        assert_eq!(
            trace_id_at("ab-c", 1),
            "Root=1-00000001-abc;Parent=abc;Sampled=0"
        );
        let wide = "é-".repeat(30);
        assert_eq!(
            trace_id_at(&wide, 1),
            format!(
                "Root=1-00000001-{};Parent={};Sampled=0",
                "é".repeat(24),
                "é".repeat(16)
            )
        );
    }

    #[test]
    fn trace_ids_are_xray_shaped() {
        let t = trace_id("0f4c2a5e-1111-2222-3333-444455556666");
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(t.contains(";Parent=") && t.ends_with(";Sampled=0"), "{t}");
    }
}
