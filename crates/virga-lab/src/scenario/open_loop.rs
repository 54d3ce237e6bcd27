//! `open-loop`: arrivals at a fixed rate regardless of responses; latency
//! counted from each request's intended start.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f1, f2, opt, positive};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// `rate` arrivals per second for `duration_s` over `connections`
/// (corrected for coordinated omission).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenLoop {
    pub rate: f64,
    pub duration_s: f64,
    #[serde(default = "constant")]
    pub arrival: Arrival,
    #[serde(default = "default_connections")]
    pub connections: u32,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

/// Arrival process of an open-loop scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    Constant,
    Poisson,
}

fn constant() -> Arrival {
    Arrival::Constant
}

fn default_connections() -> u32 {
    16
}

impl OpenLoop {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.rate, 20.0);
        super::cap(&mut self.duration_s, 1.0);
        super::cap(&mut self.connections, 4);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        positive("rate", self.rate)?;
        positive("duration_s", self.duration_s)?;
        positive("connections", f64::from(self.connections))
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let OpenLoop {
            rate,
            duration_s,
            arrival,
            connections,
            seed,
        } = *self;
        r.columns = columns(&[
            "function",
            "rate/s",
            "arrival",
            "sent",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "uncorrected p99 ms",
            "errors",
        ]);
        for f in functions {
            let job = lab.job(f, payload, None)?;
            let schedule = load::arrivals(
                rate,
                Duration::from_secs_f64(duration_s),
                arrival == Arrival::Poisson,
                seed,
            );
            let pb = bar(schedule.len() as u64, format!("{f} open loop {rate}/s"));
            let pb2 = pb.clone();
            let t = std::time::Instant::now();
            let samples = load::open_loop(
                &lab.target,
                &job,
                schedule,
                connections,
                &lab.stop,
                move || pb2.inc(1),
            )
            .await;
            let wall = t.elapsed().as_secs_f64();
            pb.finish_and_clear();
            let g = lab
                .group(
                    format!("{f} {rate}/s"),
                    f,
                    cfg(&[("rate", json!(rate))]),
                    samples,
                    wall,
                )
                .await?;
            let st = &g.stats;
            let c = st.client.clone().unwrap_or_default();
            r.rows.push(vec![
                f.clone(),
                f1(rate),
                format!("{arrival:?}").to_lowercase(),
                st.requests.to_string(),
                opt(st.throughput_rps, f1),
                f2(c.p50),
                f2(c.p99),
                f2(c.p999),
                f2(c.max),
                opt(st.service.as_ref().map(|s| s.p99), f2),
                st.errors.to_string(),
            ]);
            r.groups.push(g);
        }
        r.notes.push(format!(
            "open loop over {connections} connections: latency counted from each request's intended start (corrected for coordinated omission); 'uncorrected' counts from the actual send"
        ));
        Ok(())
    }
}
