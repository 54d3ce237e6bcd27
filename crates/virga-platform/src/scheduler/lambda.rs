//! The Lambda identity of functions and invocations: ARNs and X-Ray trace ids.

use super::*;

/// An X-Ray-shaped trace id, derived from the request id.
pub(super) fn trace_id(request_id: &str) -> String {
    let hex: String = request_id.chars().filter(|c| *c != '-').take(24).collect();
    format!(
        "Root=1-{:08x}-{hex};Parent={};Sampled=0",
        chrono::Utc::now().timestamp(),
        &hex[..16.min(hex.len())]
    )
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
    fn trace_ids_are_xray_shaped() {
        let t = trace_id("0f4c2a5e-1111-2222-3333-444455556666");
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(t.contains(";Parent=") && t.ends_with(";Sampled=0"), "{t}");
    }
}
