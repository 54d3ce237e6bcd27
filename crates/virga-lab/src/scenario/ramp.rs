//! `ramp`: users over time through stages; a time series per bucket.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{columns, f1, f2, opt, positive, spinner};
use crate::load;
use crate::run::{buckets, Lab, ScenarioResult};
use crate::LabError;

/// Users over time through `stages`; one row per `bucket_s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub stages: Vec<Stage>,
    #[serde(default = "super::one")]
    pub bucket_s: f64,
    /// Think time between a user's requests.
    #[serde(default)]
    pub think_ms: f64,
}

/// One ramp stage: move to `users` over `ramp_s`, then hold for `hold_s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub users: u32,
    #[serde(default)]
    pub ramp_s: f64,
    #[serde(default)]
    pub hold_s: f64,
}

impl Ramp {
    pub(super) fn quick(&mut self) {
        self.stages.truncate(3);
        for s in self.stages.iter_mut() {
            super::cap(&mut s.users, 3);
            super::cap(&mut s.ramp_s, 0.5);
            super::cap(&mut s.hold_s, 0.5);
        }
        super::cap(&mut self.bucket_s, 0.25);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.stages.is_empty() {
            return Err("`stages` is empty".into());
        }
        if self.stages.iter().all(|s| s.ramp_s + s.hold_s <= 0.0) {
            return Err("every stage lasts 0 s: give `ramp_s` or `hold_s`".into());
        }
        positive("bucket_s", self.bucket_s)?;
        super::think(self.think_ms)
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let Ramp {
            stages,
            bucket_s,
            think_ms,
        } = self;
        r.columns = columns(&[
            "function", "t s", "users", "hits/s", "mean ms", "max ms", "errors", "cold",
        ]);
        let plan: Vec<(u32, Duration, Duration)> = stages
            .iter()
            .map(|s| {
                (
                    s.users,
                    Duration::from_secs_f64(s.ramp_s),
                    Duration::from_secs_f64(s.hold_s),
                )
            })
            .collect();
        let total: f64 = stages.iter().map(|s| s.ramp_s + s.hold_s).sum();
        for f in functions {
            let job = lab.job(f, payload, None)?;
            let pb = spinner(format!("{f} ramp ({total:.0} s)"));
            let pb2 = pb.clone();
            let samples = load::ramp(
                &lab.target,
                &job,
                &plan,
                Duration::from_secs_f64(think_ms / 1000.0),
                &lab.stop,
                move || pb2.inc(1),
            )
            .await;
            pb.finish_and_clear();
            let g = lab
                .group(format!("{f} ramp"), f, BTreeMap::new(), samples, total)
                .await?;
            let series = buckets(&g.samples, *bucket_s, None);
            for b in &series {
                r.rows.push(vec![
                    f.clone(),
                    f1(b.t_s),
                    b.users.to_string(),
                    f1(b.hits_per_s),
                    opt(b.mean_ms, f2),
                    opt(b.max_ms, f2),
                    b.errors.to_string(),
                    b.cold.to_string(),
                ]);
            }
            r.series.extend(series);
            if let Some(note) = lab.cost_note(&g) {
                r.notes.push(note);
            }
            r.groups.push(g);
        }
        let shape: Vec<String> = stages
            .iter()
            .map(|s| {
                format!(
                    "{} users (ramp {} s, hold {} s)",
                    s.users, s.ramp_s, s.hold_s
                )
            })
            .collect();
        r.notes.push(format!(
            "stages: {}; one row per {bucket_s} s",
            shape.join(" -> ")
        ));
        Ok(())
    }
}
