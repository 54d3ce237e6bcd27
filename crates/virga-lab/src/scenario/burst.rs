//! `burst`: `size` asynchronous invocations sent at once, as `003`'s
//! pub/sub fan-out delivers a dataset's batches, per `max_concurrency` (and
//! memory size): init, processing and billed time per invocation and the
//! number of distinct instances the platform used (its Figs 5.10/5.11).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{bar, columns, f1, f2, opt, positive};
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// `size` `Event` invocations at once per cell of `max_concurrency` x
/// `memory_mb` (each cell a fresh deployment).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub size: u32,
    pub max_concurrency: Vec<u32>,
    /// Memory sizes; none: the function's own.
    #[serde(default)]
    pub memory_mb: Vec<u32>,
    /// How long to wait for every invocation's record.
    #[serde(default = "default_wait_s")]
    pub wait_s: f64,
}

fn default_wait_s() -> f64 {
    600.0
}

impl Burst {
    pub(super) fn quick(&mut self) {
        super::cap(&mut self.size, 6);
        for c in &mut self.max_concurrency {
            super::cap(c, 3);
        }
        self.max_concurrency.dedup();
        self.max_concurrency.truncate(2);
        self.memory_mb.truncate(1);
        super::cap(&mut self.wait_s, 60.0);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        positive("size", f64::from(self.size))?;
        positive("wait_s", self.wait_s)?;
        if self.max_concurrency.is_empty() || self.max_concurrency.contains(&0) {
            return Err("`max_concurrency` must list values > 0".into());
        }
        if let Some(m) = self.memory_mb.iter().find(|m| !(128..=10240).contains(*m)) {
            return Err(format!("memory_mb {m} out of range 128..=10240"));
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
        if !lab.managed {
            r.notes.push(
                "burst needs the platform's records (instances, init, billed): skipped on an endpoint without /v1/".into(),
            );
            return Ok(());
        }
        r.columns = columns(&[
            "function",
            "memory_mb",
            "max concurrency",
            "burst",
            "instances",
            "cold",
            "init mean ms",
            "processing mean ms",
            "billed mean ms",
            "queue max ms",
            "all done s",
        ]);
        r.columns.extend(lab.cost_columns());
        let memories: Vec<Option<u32>> = if self.memory_mb.is_empty() {
            vec![None]
        } else {
            self.memory_mb.iter().copied().map(Some).collect()
        };
        let cells = functions.len() * memories.len() * self.max_concurrency.len();
        let pb = bar(cells as u64, "burst".into());
        let host_mb = host_memory_mb();
        for f in functions {
            let spec = lab
                .preset
                .function(f)
                .cloned()
                .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
            for &m in &memories {
                for &c in &self.max_concurrency {
                    if lab.stop.stopped() {
                        break;
                    }
                    let (name, extra) = super::cell(f, m, Some(c));
                    lab.deploy(&spec, &extra, &name).await?;
                    let job = lab.job_as(f, &name, payload, None)?;
                    let t0 = Instant::now();
                    let mut samples =
                        super::at_once(&lab.api, &name, job.body, self.size, t0, true).await;
                    let wait = Duration::from_secs_f64(self.wait_s);
                    super::settle(lab, &name, &mut samples, wait).await?;
                    let wall = t0.elapsed().as_secs_f64();
                    let mut config = cfg(&[
                        ("function", json!(f)),
                        ("max_concurrency", json!(c)),
                        ("burst", json!(self.size)),
                    ]);
                    if let Some(m) = m {
                        config.insert("memory_mb".into(), json!(m));
                    }
                    let g = lab
                        .group(name.clone(), &name, config, samples, wall)
                        .await?;
                    let st = &g.stats;
                    let memory = g.config_f64("memory_mb").unwrap_or(0.0);
                    let queue_max = g
                        .samples
                        .iter()
                        .filter_map(|s| s.server.as_ref().map(|s| s.queue_ms))
                        .fold(None, |a: Option<f64>, q| Some(a.map_or(q, |a| a.max(q))));
                    let mut row = vec![
                        f.clone(),
                        format!("{memory}"),
                        c.to_string(),
                        self.size.to_string(),
                        st.instances.to_string(),
                        st.cold.to_string(),
                        opt(st.init.as_ref().map(|s| s.mean), f2),
                        opt(st.server_duration.as_ref().map(|s| s.mean), f2),
                        opt(st.billed_mean_ms, f1),
                        opt(queue_max, f1),
                        format!("{wall:.2}"),
                    ];
                    row.extend(lab.cost_cells(&g));
                    r.rows.push(row);
                    if let (Some(host), true) = (host_mb, memory > 0.0) {
                        let admits = (budget_mb(host) as f64 / memory).floor() as u64;
                        if admits < u64::from(c.min(self.size)) {
                            r.notes.push(format!(
                                "{name}: this host's memory ({host} MB, a default budget of {} MB for instances) admits {admits} instances of {memory} MB at once: under `virga serve`'s default budget max_concurrency {c} is capped there (the lab's embedded platform, standing in for a cloud, does not cap it)",
                                budget_mb(host)
                            ));
                        }
                    }
                    r.groups.push(g);
                    pb.inc(1);
                    // Free the cell's instances before the next one.
                    let _ = lab.api.delete_function(&name).await;
                }
            }
        }
        pb.finish_and_clear();
        r.notes.push(format!(
            "{} asynchronous invocations (Event) sent at once per cell, as the study's topic fans a dataset's batches out; the platform delivers them under max_concurrency; instances = distinct instances in the records; processing = the instance's duration; all done = from the first send until every record was in; {} host cores are shared by all instances",
            self.size,
            crate::run::Host::here().cores
        ));
        Ok(())
    }
}

/// This host's memory, from `/proc/meminfo` (where the platform runs here).
fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// The platform's default memory budget for instances on a host of `total`
/// MB: all but a tenth, at least 1 GiB, kept for the system.
fn budget_mb(total: u64) -> u64 {
    total.saturating_sub((total / 10).max(1024)).max(128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_keeps_a_burst_above_the_concurrency() {
        let mut b = Burst {
            size: 100,
            max_concurrency: vec![10, 20, 50],
            memory_mb: vec![512, 1024],
            wait_s: 600.0,
        };
        b.check().unwrap();
        b.quick();
        assert_eq!(b.max_concurrency, vec![3]);
        assert!(b.size > b.max_concurrency[0]);
        assert_eq!(b.memory_mb, vec![512]);
    }

    #[test]
    fn bad_bursts_are_refused() {
        let b = Burst {
            size: 10,
            max_concurrency: vec![0],
            memory_mb: vec![],
            wait_s: 1.0,
        };
        assert!(b.check().unwrap_err().contains("max_concurrency"));
    }

    #[test]
    fn the_budget_follows_the_platform() {
        assert_eq!(budget_mb(24 * 1024), 24 * 1024 - 2457);
        assert_eq!(budget_mb(4096), 3072);
    }
}
