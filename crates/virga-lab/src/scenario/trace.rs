//! `trace`: replay of per-interval arrival counts, arrivals uniformly random
//! within each interval.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{bar, columns, f2, opt, positive};
use crate::load;
use crate::run::{buckets, Lab, ScenarioResult};
use crate::LabError;

/// Per-interval arrival `counts`, or row `csv_row` of an
/// Azure-Functions-style per-minute `csv`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trace {
    #[serde(default)]
    pub counts: Vec<u32>,
    #[serde(default)]
    pub csv: Option<PathBuf>,
    #[serde(default)]
    pub csv_row: usize,
    /// The trace's interval, in trace seconds (60 for per-minute counts).
    pub interval_s: f64,
    /// Wall seconds per trace second (0.1: a minute replays in 6 s).
    #[serde(default = "super::one")]
    pub time_scale: f64,
    #[serde(default = "super::default_seed")]
    pub seed: u64,
}

impl Trace {
    pub(super) fn quick(&mut self) {
        if self.csv.is_none() {
            self.counts.truncate(2);
            for c in self.counts.iter_mut() {
                super::cap(c, 3);
            }
        }
        // Two intervals of at most one wall second each.
        if self.interval_s * self.time_scale > 1.0 {
            self.time_scale = 1.0 / self.interval_s;
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        match (self.counts.is_empty(), self.csv.is_some()) {
            (true, false) => return Err("give `counts` or `csv`".into()),
            (false, true) => return Err("give `counts` or `csv`, not both".into()),
            _ => {}
        }
        positive("interval_s", self.interval_s)?;
        positive("time_scale", self.time_scale)
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let (interval_s, time_scale, seed) = (self.interval_s, self.time_scale, self.seed);
        let counts = match &self.csv {
            Some(c) => crate::trace::azure_counts(&lab.preset.dir.join(c), self.csv_row)?,
            None => self.counts.clone(),
        };
        r.columns = columns(&[
            "function", "interval", "planned", "sent", "mean ms", "max ms", "errors", "cold",
        ]);
        let wall_interval = interval_s * time_scale;
        let schedule = crate::trace::schedule(&counts, wall_interval, seed);
        let total = wall_interval * counts.len() as f64;
        for f in functions {
            let job = lab.job(f, payload, None)?;
            let pb = bar(schedule.len() as u64, format!("{f} trace ({total:.0} s)"));
            let pb2 = pb.clone();
            let conns = counts.iter().copied().max().unwrap_or(1).clamp(1, 64);
            let samples = load::open_loop(
                &lab.target,
                &job,
                schedule.clone(),
                conns,
                &lab.stop,
                move || pb2.inc(1),
            )
            .await;
            pb.finish_and_clear();
            let g = lab
                .group(format!("{f} trace"), f, BTreeMap::new(), samples, total)
                .await?;
            let series = buckets(&g.samples, wall_interval, Some(&counts));
            for (i, b) in series.iter().enumerate() {
                r.rows.push(vec![
                    f.clone(),
                    (i + 1).to_string(),
                    b.planned.unwrap_or(0).to_string(),
                    b.requests.to_string(),
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
        r.notes.push(format!(
            "replay of {} intervals of {interval_s} s, time scaled x{time_scale} ({wall_interval:.2} wall s each); arrivals uniformly random within each interval (seed {seed}); latency counted from each arrival's intended time",
            counts.len()
        ));
        Ok(())
    }
}
