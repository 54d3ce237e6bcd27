//! `throughput`: closed-loop users for a fixed time, per user count and
//! function.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{columns, f1, f2, opt, positive, spinner};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// Each of `users` closed-loop users for `duration_s` after `warmup_s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub users: Vec<u32>,
    pub duration_s: f64,
    #[serde(default)]
    pub warmup_s: f64,
    /// What each user waits after an answer before its next request (0:
    /// back to back). `--quick` keeps it: it sets the per-user rate.
    #[serde(default)]
    pub think_ms: f64,
}

impl Throughput {
    pub(super) fn quick(&mut self) {
        self.users.truncate(2);
        for u in self.users.iter_mut() {
            super::cap(u, 4);
        }
        super::cap(&mut self.duration_s, 1.0);
        super::cap(&mut self.warmup_s, 0.2);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.users.is_empty() || self.users.contains(&0) {
            return Err("`users` must list user counts > 0".into());
        }
        positive("duration_s", self.duration_s)?;
        super::think(self.think_ms)
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        closed_loop(lab, r, functions, payload, self).await
    }
}

/// One row per function and user count: req/s, percentiles, errors, cost.
/// Shared with `compare`, which runs one user count against several
/// deployments.
pub(super) async fn closed_loop(
    lab: &mut Lab<'_>,
    r: &mut ScenarioResult,
    functions: &[String],
    payload: Option<&str>,
    settings: &Throughput,
) -> Result<(), LabError> {
    let Throughput {
        users,
        duration_s,
        warmup_s,
        think_ms,
    } = settings;
    let (duration_s, warmup_s, think_ms) = (*duration_s, *warmup_s, *think_ms);
    r.columns = columns(&[
        "function", "mode", "users", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
        "errors %", "cold",
    ]);
    r.columns.extend(lab.cost_columns());
    for f in functions {
        let job = lab.job(f, payload, None)?;
        for &u in users {
            if lab.stop.stopped() {
                break;
            }
            let pb = spinner(format!("{f} x{u} users"));
            let pb2 = pb.clone();
            let t = std::time::Instant::now();
            let samples = load::closed_loop(
                &lab.target,
                &job,
                u,
                Duration::from_secs_f64(think_ms / 1000.0),
                Duration::from_secs_f64(warmup_s),
                Duration::from_secs_f64(duration_s),
                &lab.stop,
                move || pb2.inc(1),
            )
            .await;
            pb.finish_and_clear();
            // Measured time: less than asked when stopped early.
            let wall = (t.elapsed().as_secs_f64() - warmup_s).clamp(1e-3, duration_s);
            let g = lab
                .group(
                    format!("{f} x{u}"),
                    f,
                    cfg(&[("users", json!(u))]),
                    samples,
                    wall,
                )
                .await?;
            let st = &g.stats;
            let c = st.client.clone().unwrap_or_default();
            let mut row = vec![
                f.clone(),
                g.config
                    .get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("function")
                    .into(),
                u.to_string(),
                st.requests.to_string(),
                opt(st.throughput_rps, f1),
                f2(c.p50),
                f2(c.p90),
                f2(c.p99),
                f2(c.max),
                if st.requests == 0 {
                    "-".into()
                } else {
                    format!("{:.1}", 100.0 * st.errors as f64 / st.requests as f64)
                },
                st.cold.to_string(),
            ];
            row.extend(lab.cost_cells(&g));
            r.rows.push(row);
            r.groups.push(g);
        }
    }
    let pacing = if think_ms > 0.0 {
        format!("{think_ms} ms after the previous returns (users' first requests spread over that time)")
    } else {
        "when the previous returns".into()
    };
    r.notes.push(format!(
        "closed loop: each user sends its next request {pacing}; {duration_s} s measured after {warmup_s} s warm-up; errors include throttling (429)"
    ));
    Ok(())
}
