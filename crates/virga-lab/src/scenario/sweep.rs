//! `sweep`: a grid of configurations; each cell redeploys the function and
//! measures cold and warm invocations with their cost.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{bar, columns, f1, f2, opt, positive};
use crate::load::{self, Job, Sample};
use crate::preset::{PayloadSpec, Preset};
use crate::run::{cfg, Lab, ScenarioResult};
use crate::LabError;

/// Each cell redeploys the function with `memory_mb`, `max_concurrency` and
/// a payload of `batch_size` rows, then sends `cold` forced-cold and
/// `requests - cold` warm invocations from `users`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    #[serde(default)]
    pub memory_mb: Vec<u32>,
    #[serde(default)]
    pub max_concurrency: Vec<u32>,
    /// Rows per request (the payload must be of kind `rows`).
    #[serde(default)]
    pub batch_size: Vec<u32>,
    pub requests: u32,
    #[serde(default)]
    pub cold: u32,
    #[serde(default = "one_u32")]
    pub users: u32,
}

fn one_u32() -> u32 {
    1
}

impl Sweep {
    pub(super) fn quick(&mut self) {
        self.memory_mb.truncate(2);
        self.max_concurrency.truncate(1);
        self.batch_size.truncate(1);
        super::cap(&mut self.requests, 3);
        super::cap(&mut self.cold, 1);
        super::cap(&mut self.users, 2);
    }

    pub(super) fn check(
        &self,
        preset: &Preset,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), String> {
        let Sweep {
            memory_mb,
            max_concurrency,
            batch_size,
            requests,
            cold,
            users,
        } = self;
        if memory_mb.is_empty() && max_concurrency.is_empty() && batch_size.is_empty() {
            return Err(
                "bad grid: give at least one of `memory_mb`, `max_concurrency`, `batch_size`"
                    .into(),
            );
        }
        if let Some(m) = memory_mb.iter().find(|m| !(128..=10240).contains(*m)) {
            return Err(format!(
                "bad grid: memory_mb {m} is out of range: use 128..=10240"
            ));
        }
        if max_concurrency.contains(&0) || batch_size.contains(&0) {
            return Err("bad grid: max_concurrency and batch_size must be > 0".into());
        }
        for f in functions {
            let p = preset.payload_for(payload, f).unwrap_or_default();
            if !batch_size.is_empty()
                && !matches!(preset.payloads.get(p), Some(PayloadSpec::Rows { .. }))
            {
                return Err(format!(
                    "bad grid: `batch_size` needs a payload of kind \"rows\" ({p:?} is not)"
                ));
            }
        }
        if cold > requests {
            return Err(format!("`cold` ({cold}) exceeds `requests` ({requests})"));
        }
        positive("requests", f64::from(*requests))?;
        positive("users", f64::from(*users))
    }

    pub(super) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
    ) -> Result<(), LabError> {
        let Sweep {
            memory_mb,
            max_concurrency,
            batch_size,
            requests,
            cold,
            users,
        } = self;
        let (requests, cold, users) = (*requests, *cold, *users);
        r.columns = columns(&[
            "function",
            "memory_mb",
            "vcpu",
            "max_conc",
            "batch",
            "n",
            "cold",
            "init mean ms",
            "processing p50 ms",
            "billed mean ms",
            "client p50 ms",
        ]);
        r.columns.extend(lab.cost_columns());
        let opt_list = |v: &[u32]| -> Vec<Option<u32>> {
            if v.is_empty() {
                vec![None]
            } else {
                v.iter().copied().map(Some).collect()
            }
        };
        let cells: Vec<(Option<u32>, Option<u32>, Option<u32>)> = opt_list(memory_mb)
            .into_iter()
            .flat_map(|m| {
                opt_list(max_concurrency)
                    .into_iter()
                    .flat_map(move |c| opt_list(batch_size).into_iter().map(move |b| (m, c, b)))
            })
            .collect();
        let pb = bar((cells.len() * functions.len()) as u64, "sweep cells".into());
        for f in functions {
            let spec = lab
                .preset
                .function(f)
                .cloned()
                .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
            for &(m, c, b) in &cells {
                if lab.stop.stopped() {
                    break;
                }
                let (mut name, extra) = super::cell(f, m, c);
                if let Some(b) = b {
                    name.push_str(&format!("-b{b}"));
                }
                let target_name = if lab.managed {
                    lab.deploy(&spec, &extra, &name).await?;
                    name.clone()
                } else {
                    f.clone()
                };
                let job = lab.job_as(f, &target_name, payload, b)?;
                let mut samples = Vec::new();
                for _ in 0..cold {
                    lab.force_cold(&target_name).await?;
                    samples.extend(load::sequential(&lab.target, &job, 1, &lab.stop).await);
                }
                let warm = requests - cold;
                let t = std::time::Instant::now();
                if users <= 1 {
                    samples.extend(load::sequential(&lab.target, &job, warm, &lab.stop).await);
                } else {
                    samples.extend(fixed_count(lab, &job, warm, users).await);
                }
                let wall = t.elapsed().as_secs_f64();
                let mut config = cfg(&[("batch_size", json!(b))]);
                config.insert("memory_mb".into(), json!(m));
                config.insert("max_concurrency".into(), json!(c));
                // The preset's name of the cell's function, for references.
                config.insert("function".into(), json!(f));
                config.retain(|_, v| !v.is_null());
                let g = lab
                    .group(name.clone(), &target_name, config, samples, wall)
                    .await?;
                let st = &g.stats;
                let mut row = vec![
                    f.clone(),
                    g.config
                        .get("memory_mb")
                        .map_or("-".into(), Value::to_string),
                    g.config_f64("vcpu")
                        .map_or("-".into(), |v| format!("{v:.2}")),
                    g.config
                        .get("max_concurrency")
                        .map_or("-".into(), Value::to_string),
                    b.map_or("-".into(), |b| b.to_string()),
                    st.requests.to_string(),
                    st.cold.to_string(),
                    opt(st.init.as_ref().map(|s| s.mean), f2),
                    opt(st.server_duration.as_ref().map(|s| s.p50), f2),
                    opt(st.billed_mean_ms, f1),
                    opt(st.client.as_ref().map(|s| s.p50), f2),
                ];
                row.extend(lab.cost_cells(&g));
                r.rows.push(row);
                r.groups.push(g);
                pb.inc(1);
                if lab.managed {
                    // Free the cell's instances before the next one.
                    let _ = lab.api.delete_function(&target_name).await;
                }
            }
        }
        pb.finish_and_clear();
        r.notes.push(format!(
            "each cell redeployed; {cold} forced-cold + {} warm invocations from {users} user(s); processing = the instance's duration; cost from the cell's records",
            requests - cold
        ));
        Ok(())
    }
}

/// Sends exactly `n` requests from `users` closed-loop users.
async fn fixed_count(lab: &Lab<'_>, job: &Job, n: u32, users: u32) -> Vec<Sample> {
    let left = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::from(n)));
    let mut tasks = Vec::new();
    for _ in 0..users {
        let (target, job, stop, left) = (
            lab.target.clone(),
            job.clone(),
            lab.stop.clone(),
            left.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = load::Conn::new(&target);
            let t0 = std::time::Instant::now();
            let mut out = Vec::new();
            while left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 0 && !stop.stopped() {
                let mut s = conn.invoke(&job, t0, None).await;
                s.users = users;
                out.push(s);
            }
            out
        }));
    }
    load::gather(tasks).await
}
