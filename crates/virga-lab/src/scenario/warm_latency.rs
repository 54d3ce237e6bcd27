//! `warm-latency`: sequential warm invocations per payload.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f2, opt, positive};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// `requests` sequential warm invocations of each function with each of
/// `payloads` (after one warm-up), `gap_ms` apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmLatency {
    pub payloads: Vec<String>,
    pub requests: u32,
    /// Idle time before each request (0: back to back): a warm instance
    /// that sat idle may have given memory back, or gone cold in a cache.
    #[serde(default)]
    pub gap_ms: u64,
}

impl WarmLatency {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.requests, 3);
        super::cap(&mut self.gap_ms, 1500);
    }

    /// `payload` is the scenario's common one, which this kind does not send.
    pub(super) fn check(&self, payload: Option<&str>) -> Result<(), String> {
        if payload.is_some() {
            return Err("warm-latency sends each of `payloads`: use that, not `payload`".into());
        }
        if self.payloads.is_empty() {
            return Err("`payloads` is empty".into());
        }
        positive("requests", f64::from(self.requests))
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
    ) -> Result<(), LabError> {
        r.columns = columns(&[
            "function",
            "payload",
            "payload KB",
            "n",
            "p50 ms",
            "mean ms",
            "ci95 ms",
            "p99 ms",
            "server p50 ms",
            "inference p50 ms",
        ]);
        for f in functions {
            for p in &self.payloads {
                let job = lab.job(f, Some(p), None)?;
                // One warm-up (it may be cold) that is not kept.
                let _ = load::sequential(&lab.target, &job, 1, &lab.stop).await;
                let pb = bar(u64::from(self.requests), format!("{f} {p}"));
                let mut samples = Vec::new();
                for _ in 0..self.requests {
                    if lab.stop.stopped() {
                        break;
                    }
                    if self.gap_ms > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(self.gap_ms)).await;
                    }
                    samples.extend(load::sequential(&lab.target, &job, 1, &lab.stop).await);
                    pb.inc(1);
                }
                pb.finish_and_clear();
                let kb = job.body.len() as f64 / 1024.0;
                let g = lab
                    .group(
                        format!("{f} {p}"),
                        f,
                        cfg(&[
                            ("payload", json!(p)),
                            ("payload_kb", json!(kb)),
                            ("gap_ms", json!(self.gap_ms)),
                        ]),
                        samples,
                        0.0,
                    )
                    .await?;
                let c = g.stats.client.clone().unwrap_or_default();
                r.rows.push(vec![
                    f.clone(),
                    p.clone(),
                    format!("{kb:.1}"),
                    g.stats.requests.to_string(),
                    f2(c.p50),
                    f2(c.mean),
                    opt(c.ci95, f2),
                    f2(c.p99),
                    opt(g.stats.server_duration.as_ref().map(|s| s.p50), f2),
                    opt(g.stats.inference.as_ref().map(|s| s.p50), f2),
                ]);
                r.groups.push(g);
            }
        }
        r.notes.push("sequential warm invocations after one discarded warm-up; payload KB is the request body (base64 JSON for images)".into());
        if self.gap_ms > 0 {
            r.notes
                .push(format!("each request sent after {} ms idle", self.gap_ms));
        }
        Ok(())
    }
}
