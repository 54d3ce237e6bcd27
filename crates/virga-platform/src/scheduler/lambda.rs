//! The Lambda identity of functions and invocations: ARNs and X-Ray trace ids.

use super::*;

/// An X-Ray-shaped trace id, derived from the request id.
pub(super) fn trace_id(request_id: &str) -> String {
    trace_id_at(request_id, chrono::Utc::now().timestamp())
}

/// `Root=1-{secs:08x}-{24 hex of the id};Parent={16 of them};Sampled=0`
/// (once per invocation). An ASCII id (the platform's own are UUIDs) has
/// its undashed start gathered on the stack and copied twice; any other
/// has its characters pushed one by one.
fn trace_id_at(request_id: &str, secs: i64) -> String {
    use std::fmt::Write;
    let mut t = String::with_capacity(80);
    let _ = write!(t, "Root=1-{secs:08x}-");
    if request_id.is_ascii() {
        let mut hex = [0u8; 24];
        let mut n = 0;
        for &b in request_id.as_bytes().iter().filter(|&&b| b != b'-') {
            if n == hex.len() {
                break;
            }
            hex[n] = b;
            n += 1;
        }
        let hex = std::str::from_utf8(&hex[..n]).unwrap_or_default();
        t.push_str(hex);
        t.push_str(";Parent=");
        t.push_str(&hex[..n.min(16)]);
    } else {
        let undashed = || request_id.chars().filter(|&c| c != '-');
        t.extend(undashed().take(24));
        t.push_str(";Parent=");
        t.extend(undashed().take(16));
    }
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
        assert_eq!(trace_id_at("---", 1), "Root=1-00000001-;Parent=;Sampled=0");
        let long = "0123456789abcdef-".repeat(3);
        assert_eq!(
            trace_id_at(&long, 1),
            "Root=1-00000001-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=0"
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
