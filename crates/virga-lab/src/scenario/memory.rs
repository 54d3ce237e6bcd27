//! `memory`: what n warm instances of a function cost in host memory, as
//! proportional set size (PSS, `/proc/PID/smaps_rollup`): pages shared by
//! several processes (a snap-start template's weights, copy-on-write in its
//! forked children; the binary's text) are split between them, so the sum
//! over processes is what the host really holds. Needs the platform on this
//! host (the embedded one of `virga bench`).

use std::collections::{BTreeMap, BTreeSet};

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;
use virga_spec::api::InstanceInfo;

use super::{bar, columns, f1};
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// For each function and each count in `instances`: from zero, that many
/// requests at once (repeated while fewer instances are warm, at most
/// `attempts` times), then, after `idle_ms` with nothing to do, the PSS of
/// its instances and template.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub instances: Vec<u32>,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// How long the warm instances sit idle before their memory is read:
    /// what keep-alive holds is idle instances (a forked child gives its
    /// free heap back after 10 s idle). 0: at once.
    #[serde(default)]
    pub idle_ms: u64,
}

fn default_attempts() -> u32 {
    5
}

impl Memory {
    pub(super) fn quick(&mut self) {
        for n in &mut self.instances {
            super::cap(n, 2);
        }
        self.instances.dedup();
        super::cap(&mut self.attempts, 2);
        super::cap(&mut self.idle_ms, 1000);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.instances.is_empty() || self.instances.contains(&0) {
            return Err("`instances` must list counts > 0".into());
        }
        super::positive("attempts", f64::from(self.attempts))
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        if !lab.managed || !std::path::Path::new("/proc/self/smaps_rollup").exists() {
            r.notes.push(
                "memory needs the platform's instances on this host (their /proc): skipped".into(),
            );
            return Ok(());
        }
        r.columns = columns(&[
            "function",
            "asked",
            "instances",
            "template PSS MB",
            "instances PSS MB",
            "total PSS MB",
            "per instance MB",
        ]);
        let pb = bar(
            (functions.len() * self.instances.len()) as u64,
            "memory".into(),
        );
        for f in functions {
            let job = lab.job(f, payload, None)?;
            for &n in &self.instances {
                if lab.stop.stopped() {
                    break;
                }
                lab.force_cold(f).await?;
                let mut warm = Vec::new();
                let mut samples = Vec::new();
                let t0 = Instant::now();
                for _ in 0..self.attempts {
                    samples
                        .extend(super::at_once(&lab.api, f, job.body.clone(), n, t0, false).await);
                    warm = lab.api.instances(f).await?;
                    let serving = warm.iter().filter(|i| i.role.serves());
                    if serving.count() >= n as usize {
                        break;
                    }
                }
                if self.idle_ms > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(self.idle_ms)).await;
                    warm = lab.api.instances(f).await?;
                }
                let pss = pss_by_instance(&warm);
                let (template, serving): (Vec<&InstanceInfo>, Vec<&InstanceInfo>) =
                    warm.iter().partition(|i| !i.role.serves());
                let mb = |is: &[&InstanceInfo]| {
                    is.iter()
                        .filter_map(|i| pss.get(&i.pid))
                        .map(|kb| *kb as f64 / 1024.0)
                        .sum::<f64>()
                };
                let (t, s) = (mb(&template), mb(&serving));
                let wall = t0.elapsed().as_secs_f64();
                let config = cfg(&[
                    ("function", json!(f)),
                    ("instances", json!(n)),
                    ("pss_mb", json!(t + s)),
                ]);
                let g = lab
                    .group(format!("{f} x{n}"), f, config, samples, wall)
                    .await?;
                r.groups.push(g);
                r.rows.push(vec![
                    f.clone(),
                    n.to_string(),
                    serving.len().to_string(),
                    if template.is_empty() {
                        "-".into()
                    } else {
                        f1(t)
                    },
                    f1(s),
                    f1(t + s),
                    f1((t + s) / serving.len().max(1) as f64),
                ]);
                pb.inc(1);
            }
            // Free them before the next function's.
            lab.force_cold(f).await?;
        }
        pb.finish_and_clear();
        if self.idle_ms > 0 {
            r.notes.push(format!(
                "memory read after the warm instances sat idle for {} ms",
                self.idle_ms
            ));
        }
        r.notes.push(
            "PSS = proportional set size from /proc/PID/smaps_rollup, summed over each instance's processes (a confined instance's helper, init and runtime; a template's without its forked children, which are instances of their own): shared pages count once in total, split between the processes that share them. asked = requests sent at once from zero (repeated while fewer instances were warm); instances = warm instances then; per instance = total / instances, the template included".into(),
        );
        Ok(())
    }
}

/// PSS (kB) of each instance's processes: the instance's pid and its
/// descendants, except descendants that are instances themselves (the
/// children a template forked) and theirs.
fn pss_by_instance(instances: &[InstanceInfo]) -> BTreeMap<u32, u64> {
    let roots: BTreeSet<u32> = instances.iter().map(|i| i.pid).collect();
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(parent) = parent_of(pid) {
                children.entry(parent).or_default().push(pid);
            }
        }
    }
    roots
        .iter()
        .map(|&root| {
            let mut total = 0;
            let mut stack = vec![root];
            while let Some(p) = stack.pop() {
                total += pss_kb(p).unwrap_or(0);
                for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
                    if !roots.contains(&c) {
                        stack.push(c);
                    }
                }
            }
            (root, total)
        })
        .collect()
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "(comm)", which may hold spaces: state, then the parent's pid.
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn pss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_pss_and_a_parent() {
        let me = std::process::id();
        assert!(pss_kb(me).unwrap() > 0);
        assert_eq!(parent_of(me), Some(std::os::unix::process::parent_id()));
    }

    #[test]
    fn quick_keeps_two_counts_at_most_two() {
        let mut m = Memory {
            instances: vec![1, 8],
            attempts: 5,
            idle_ms: 2000,
        };
        m.quick();
        assert_eq!(m.instances, vec![1, 2]);
        assert_eq!(m.idle_ms, 1000);
        assert!(m.check().is_ok());
        m.instances = vec![0];
        assert!(m.check().is_err());
    }
}
