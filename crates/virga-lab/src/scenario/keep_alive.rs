//! `keep-alive`: single requests after growing idle gaps, with the
//! function's keep-alive set to match: which were cold.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f2, opt, positive};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// Single requests after idle `gaps` (in units of `unit_s` seconds); the
/// function's keep-alive is set to `keep_alive_units`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepAlive {
    pub gaps: Vec<f64>,
    pub unit_s: f64,
    pub keep_alive_units: f64,
}

impl KeepAlive {
    pub(super) fn quick(&mut self) {
        self.gaps.truncate(3);
        // Keep the shape (which gaps exceed keep-alive), shrink time.
        let longest = self
            .gaps
            .iter()
            .cloned()
            .fold(self.keep_alive_units, f64::max);
        let budget = 2.0;
        if longest * self.unit_s > budget {
            self.unit_s = budget / longest;
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.gaps.is_empty() || self.gaps.iter().any(|g| *g < 0.0) {
            return Err("`gaps` must list idle gaps >= 0".into());
        }
        positive("unit_s", self.unit_s)?;
        positive("keep_alive_units", self.keep_alive_units)
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let KeepAlive {
            gaps,
            unit_s,
            keep_alive_units,
        } = self;
        let (unit_s, keep_alive_units) = (*unit_s, *keep_alive_units);
        r.columns = columns(&[
            "function",
            "gap units",
            "gap s",
            "cold",
            "client ms",
            "init ms",
            "server ms",
        ]);
        let keep_alive_ms = (keep_alive_units * unit_s * 1000.0).round() as i64;
        for f in functions {
            if lab.managed {
                let spec = lab
                    .preset
                    .function(f)
                    .cloned()
                    .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
                let mut extra = toml::Table::new();
                extra.insert(
                    "keep_alive_ms".into(),
                    toml::Value::Integer(keep_alive_ms.max(1)),
                );
                lab.deploy(&spec, &extra, f).await?;
            }
            let job = lab.job(f, payload, None)?;
            // Start warm: the first gap is measured from this request.
            let _ = load::sequential(&lab.target, &job, 1, &lab.stop).await;
            let pb = bar(gaps.len() as u64, format!("{f} keep-alive"));
            for &gap in gaps {
                if !lab.stop.sleep(Duration::from_secs_f64(gap * unit_s)).await {
                    break;
                }
                let samples = load::sequential(&lab.target, &job, 1, &lab.stop).await;
                pb.inc(1);
                let g = lab
                    .group(
                        format!("{f} gap {gap}"),
                        f,
                        cfg(&[("gap_units", json!(gap)), ("gap_s", json!(gap * unit_s))]),
                        samples,
                        0.0,
                    )
                    .await?;
                let m = g.samples.first();
                r.rows.push(vec![
                    f.clone(),
                    format!("{gap}"),
                    format!("{:.2}", gap * unit_s),
                    m.and_then(|m| m.server.as_ref()).map_or("?".into(), |s| {
                        if s.cold {
                            "cold".into()
                        } else {
                            "warm".into()
                        }
                    }),
                    m.map_or("-".into(), |m| f2(m.sample.client_ms)),
                    opt(
                        m.and_then(|m| m.server.as_ref()).and_then(|s| s.init_ms),
                        f2,
                    ),
                    opt(m.and_then(|m| m.server.as_ref()).map(|s| s.duration_ms), f2),
                ]);
                r.groups.push(g);
            }
            pb.finish_and_clear();
        }
        r.notes.push(format!(
            "time scaled: 1 unit = {unit_s} s; the platform's keep-alive set to {keep_alive_units} units ({:.2} s): gaps longer than it should be cold",
            keep_alive_units * unit_s
        ));
        Ok(())
    }
}
