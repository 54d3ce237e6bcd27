//! `cold-start`: forced cold invocations per function (idle instances stopped
//! before each), then warm ones for contrast.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{bar, columns, f2, opt, positive};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// `repetitions` forced cold invocations per function, then `warm` warm ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColdStart {
    pub repetitions: u32,
    #[serde(default)]
    pub warm: u32,
}

impl ColdStart {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.repetitions, 2);
        super::cap(&mut self.warm, 2);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        positive("repetitions", f64::from(self.repetitions))
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let ColdStart { repetitions, warm } = *self;
        r.columns = columns(&[
            "function",
            "memory_mb",
            "vcpu",
            "cold n",
            "init p50 ms",
            "init p99 ms",
            "init mean ms",
            "init ci95 ms",
            "cold total p50 ms",
            "warm p50 ms",
            "cold/warm",
        ]);
        // Priced from the warm requests' records: what a served request
        // costs once the instance is up (a job's are fresh tasks even so).
        r.columns.extend(lab.cost_columns());
        for f in functions {
            let job = lab.job(f, payload, None)?;
            let pb = bar(u64::from(repetitions + warm), format!("{f} cold"));
            let mut cold_samples = Vec::new();
            for _ in 0..repetitions {
                if lab.stop.stopped() {
                    break;
                }
                lab.force_cold(f).await?;
                cold_samples.extend(load::sequential(&lab.target, &job, 1, &lab.stop).await);
                pb.inc(1);
            }
            let warm_samples = load::sequential(&lab.target, &job, warm, &lab.stop).await;
            pb.inc(u64::from(warm));
            pb.finish_and_clear();
            let cold_g = lab
                .group(
                    format!("{f} cold"),
                    f,
                    cfg(&[("phase", json!("cold"))]),
                    cold_samples,
                    0.0,
                )
                .await?;
            let warm_g = lab
                .group(
                    format!("{f} warm"),
                    f,
                    cfg(&[("phase", json!("warm"))]),
                    warm_samples,
                    0.0,
                )
                .await?;
            let cs = &cold_g.stats;
            let cold_p50 = cs.client.as_ref().map(|s| s.p50);
            let warm_p50 = warm_g.stats.client.as_ref().map(|s| s.p50);
            let mut row = vec![
                f.clone(),
                cold_g
                    .config
                    .get("memory_mb")
                    .map_or("-".into(), Value::to_string),
                cold_g
                    .config_f64("vcpu")
                    .map_or("-".into(), |v| format!("{v:.2}")),
                format!("{}/{}", cs.cold, cs.requests),
                opt(cs.init.as_ref().map(|s| s.p50), f2),
                opt(cs.init.as_ref().map(|s| s.p99), f2),
                opt(cs.init.as_ref().map(|s| s.mean), f2),
                opt(cs.init.as_ref().and_then(|s| s.ci95), f2),
                opt(cold_p50, f2),
                opt(warm_p50, f2),
                match (cold_p50, warm_p50) {
                    (Some(c), Some(w)) if w > 0.0 => format!("{:.1}x", c / w),
                    _ => "-".into(),
                },
            ];
            row.extend(lab.cost_cells(&warm_g));
            r.rows.push(row);
            r.groups.push(cold_g);
            r.groups.push(warm_g);
        }
        r.notes.push(format!(
            "{repetitions} forced cold invocations per function (idle instances stopped before each); init = spawn to the runtime's first invocation/next, from the platform's records (for a snap_start = \"fork\" function: the restore, from the fork or the release of a spare forked ahead to the child's first invocation/next)"
        ));
        if !lab.cost_columns().is_empty() {
            r.notes.push(format!(
                "USD/1000 columns price the {warm} warm requests' records under each profile (a job's requests each run in a fresh task)"
            ));
        }
        Ok(())
    }
}
