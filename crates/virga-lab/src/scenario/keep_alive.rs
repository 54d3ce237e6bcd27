//! `keep-alive`: the probe of `002`: single requests sent at fixed times
//! (the first is the cold start), repeated under several keep-alive
//! settings: which idle gaps came back cold under which keep-alive.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f2, opt, positive};
use crate::load;
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// Single requests sent `at` these times (in units of `unit_s` seconds from
/// the first, which is counted as the cold start), once per keep-alive in
/// `keep_alive_units` (the function redeployed with it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepAlive {
    pub at: Vec<f64>,
    pub unit_s: f64,
    pub keep_alive_units: Vec<f64>,
}

impl KeepAlive {
    /// When each request is sent, from the probe's start.
    pub fn schedule(&self) -> Vec<Duration> {
        self.at
            .iter()
            .map(|a| Duration::from_secs_f64(a * self.unit_s))
            .collect()
    }

    /// The idle gaps before the second request on, in units.
    pub fn gaps(&self) -> Vec<f64> {
        self.at.windows(2).map(|w| w[1] - w[0]).collect()
    }

    pub(super) fn quick(&mut self) {
        self.at.truncate(4);
        // Keep the shape (which gaps exceed which keep-alive), shrink time.
        let longest = self
            .at
            .iter()
            .chain(&self.keep_alive_units)
            .cloned()
            .fold(0.0, f64::max);
        let budget = 1.5;
        if longest * self.unit_s > budget {
            self.unit_s = budget / longest;
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.at.is_empty() || self.at.iter().any(|a| !(*a >= 0.0 && a.is_finite())) {
            return Err("`at` must list send times >= 0".into());
        }
        if self.at.windows(2).any(|w| w[1] <= w[0]) {
            return Err("`at` must increase".into());
        }
        positive("unit_s", self.unit_s)?;
        if self.keep_alive_units.is_empty() {
            return Err("`keep_alive_units` is empty: list the keep-alives to probe".into());
        }
        for k in &self.keep_alive_units {
            positive("keep_alive_units", *k)?;
        }
        Ok(())
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let unit_s = self.unit_s;
        r.columns = columns(&[
            "function",
            "keep-alive units",
            "sent at",
            "gap units",
            "cold",
            "expected",
            "client ms",
            "init ms",
        ]);
        let schedule = self.schedule();
        let runs = functions.len() * self.keep_alive_units.len();
        let pb = bar((runs * schedule.len()) as u64, "keep-alive probe".into());
        for f in functions {
            for &keep_alive in &self.keep_alive_units {
                if lab.managed {
                    let spec = lab
                        .preset
                        .function(f)
                        .cloned()
                        .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
                    let mut extra = toml::Table::new();
                    let ms = (keep_alive * unit_s * 1000.0).round() as i64;
                    extra.insert("keep_alive_ms".into(), toml::Value::Integer(ms.max(1)));
                    // A new revision: no instance of the last probe survives.
                    lab.deploy(&spec, &extra, f).await?;
                    lab.force_cold(f).await?;
                }
                let job = lab.job(f, payload, None)?;
                let start = tokio::time::Instant::now();
                let mut cold_after = Vec::new();
                for (i, (&at, &when)) in self.at.iter().zip(&schedule).enumerate() {
                    // Sent on the schedule, whatever the last answer took.
                    let wait =
                        (start + when).saturating_duration_since(tokio::time::Instant::now());
                    if !lab.stop.sleep(wait).await {
                        break;
                    }
                    let samples = load::sequential(&lab.target, &job, 1, &lab.stop).await;
                    pb.inc(1);
                    let gap = (i > 0).then(|| at - self.at[i - 1]);
                    let mut config = cfg(&[
                        ("keep_alive_units", json!(keep_alive)),
                        ("at_units", json!(at)),
                        ("first", json!(i == 0)),
                    ]);
                    if let Some(g) = gap {
                        config.insert("gap_units".into(), json!(g));
                        config.insert("gap_s".into(), json!(g * unit_s));
                    }
                    let g = lab
                        .group(
                            format!("{f} keep-alive {keep_alive} at {at}"),
                            f,
                            config,
                            samples,
                            0.0,
                        )
                        .await?;
                    let m = g.samples.first();
                    let server = m.and_then(|m| m.server.as_ref());
                    if let (Some(gap), Some(true)) = (gap, server.map(|s| s.cold)) {
                        cold_after.push(format!("{gap}"));
                    }
                    r.rows.push(vec![
                        f.clone(),
                        format!("{keep_alive}"),
                        format!("{at}"),
                        gap.map_or("-".into(), |g| format!("{g}")),
                        server.map_or("?".into(), |s| if s.cold { "cold" } else { "warm" }.into()),
                        match gap {
                            None => "cold (first)".into(),
                            Some(g) if g > keep_alive => "cold".into(),
                            Some(_) => "warm".into(),
                        },
                        m.map_or("-".into(), |m| f2(m.sample.client_ms)),
                        opt(server.and_then(|s| s.init_ms), f2),
                    ]);
                    r.groups.push(g);
                }
                r.notes.push(if cold_after.is_empty() {
                    format!("{f}, keep-alive {keep_alive} units: warm after every gap")
                } else {
                    format!(
                        "{f}, keep-alive {keep_alive} units: cold after the gaps of {} units",
                        cold_after.join(", ")
                    )
                });
            }
        }
        pb.finish_and_clear();
        r.notes.push(format!(
            "time scaled: 1 unit = {unit_s} s; requests sent at {:?} units, the first counted as the cold start; each keep-alive probed on a fresh deployment",
            self.at
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daitan() -> KeepAlive {
        KeepAlive {
            at: vec![0.0, 6.0, 16.0, 31.0, 61.0],
            unit_s: 60.0,
            keep_alive_units: vec![10.0, 15.0, 20.0],
        }
    }

    #[test]
    fn the_probe_sends_at_minutes_0_6_16_31_61() {
        let k = daitan();
        k.check().unwrap();
        let minutes: Vec<f64> = k
            .schedule()
            .iter()
            .map(|d| d.as_secs_f64() / 60.0)
            .collect();
        assert_eq!(minutes, vec![0.0, 6.0, 16.0, 31.0, 61.0]);
        assert_eq!(k.gaps(), vec![6.0, 10.0, 15.0, 30.0]);
    }

    #[test]
    fn quick_keeps_which_gaps_exceed_which_keep_alive() {
        let mut k = daitan();
        k.quick();
        k.check().unwrap();
        assert_eq!(k.gaps(), vec![6.0, 10.0, 15.0]);
        assert_eq!(k.keep_alive_units, vec![10.0, 15.0, 20.0]);
        let last = *k.schedule().last().unwrap();
        assert!(last <= Duration::from_millis(1500), "{last:?}");
    }

    #[test]
    fn bad_schedules_are_refused() {
        let mut k = daitan();
        k.at = vec![0.0, 6.0, 6.0];
        assert!(k.check().unwrap_err().contains("increase"));
        let mut k = daitan();
        k.keep_alive_units.clear();
        assert!(k.check().unwrap_err().contains("keep_alive_units"));
    }
}
