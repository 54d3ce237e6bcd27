//! `trace`: replay of per-interval arrival counts, arrivals uniformly random
//! within each interval: as invocations carrying the payload, or (`via =
//! "bucket"`) as object uploads that a bucket trigger turns into
//! asynchronous invocations of a `[model] input = "object"` function, the
//! way `004`'s S3 uploads reached its functions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{bar, columns, f2, opt, positive};
use crate::load::{self, Sample};
use crate::payload;
use crate::run::{buckets, Lab, Measured, ScenarioResult};
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
    /// How each arrival reaches the function.
    #[serde(default)]
    pub via: Via,
    /// `via = "bucket"`: how long to wait for the last upload's answer.
    #[serde(default = "default_wait_s")]
    pub wait_s: f64,
}

/// How a trace's arrivals reach the function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A synchronous invocation carrying the payload.
    #[default]
    Invoke,
    /// An object upload to a bucket whose trigger invokes the function
    /// (deployed as `<function>-upload` with `[model] input = "object"`).
    Bucket,
}

fn default_wait_s() -> f64 {
    300.0
}

/// The bucket `via = "bucket"` uploads to; each function's uploads go
/// under its own prefix.
pub const UPLOAD_BUCKET: &str = "virga-lab-uploads";

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
        super::cap(&mut self.wait_s, 60.0);
    }

    pub(super) fn check(&self) -> Result<(), String> {
        match (self.counts.is_empty(), self.csv.is_some()) {
            (true, false) => return Err("give `counts` or `csv`".into()),
            (false, true) => return Err("give `counts` or `csv`, not both".into()),
            _ => {}
        }
        positive("interval_s", self.interval_s)?;
        positive("wait_s", self.wait_s)?;
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
        if self.via == Via::Bucket && !lab.managed {
            r.notes.push(
                "via = \"bucket\" needs the platform's buckets and records: skipped on an endpoint without /v1/".into(),
            );
            return Ok(());
        }
        let latency = match self.via {
            Via::Invoke => "mean ms",
            Via::Bucket => "upload-to-answer mean ms",
        };
        r.columns = columns(&[
            "function",
            "interval",
            "planned",
            "sent",
            latency,
            "max ms",
            "load + inference mean ms",
            "errors",
            "cold",
        ]);
        let wall_interval = interval_s * time_scale;
        let schedule = crate::trace::schedule(&counts, wall_interval, seed);
        let total = wall_interval * counts.len() as f64;
        for f in functions {
            let pb = bar(schedule.len() as u64, format!("{f} trace ({total:.0} s)"));
            let pb2 = pb.clone();
            let conns = counts.iter().copied().max().unwrap_or(1).clamp(1, 64);
            let (name, samples) = match self.via {
                Via::Invoke => {
                    let job = lab.job(f, payload, None)?;
                    let samples = load::open_loop(
                        &lab.target,
                        &job,
                        schedule.clone(),
                        conns,
                        &lab.stop,
                        move || pb2.inc(1),
                    )
                    .await;
                    (f.clone(), samples)
                }
                Via::Bucket => {
                    let name = format!("{f}-upload");
                    let samples = self
                        .uploads(lab, f, &name, payload, &schedule, conns, move || pb2.inc(1))
                        .await?;
                    (name, samples)
                }
            };
            pb.finish_and_clear();
            let mut config = BTreeMap::new();
            config.insert("function".to_string(), serde_json::json!(f));
            if self.via == Via::Bucket {
                config.insert("via".to_string(), serde_json::json!("bucket"));
            }
            let g = lab
                .group(format!("{f} trace"), &name, config, samples, total)
                .await?;
            let series = buckets(&g.samples, wall_interval, Some(&counts));
            let load_inference = per_interval_load_inference(&g.samples, wall_interval);
            for (i, b) in series.iter().enumerate() {
                r.rows.push(vec![
                    f.clone(),
                    (i + 1).to_string(),
                    b.planned.unwrap_or(0).to_string(),
                    b.requests.to_string(),
                    opt(b.mean_ms, f2),
                    opt(b.max_ms, f2),
                    opt(load_inference.get(&i).copied(), f2),
                    b.errors.to_string(),
                    b.cold.to_string(),
                ]);
            }
            r.series.extend(series);
            if let Some(note) = lab.cost_note(&g) {
                r.notes.push(note);
            }
            r.groups.push(g);
            if self.via == Via::Bucket {
                // Free its instances before the next function's uploads.
                let _ = lab.api.delete_function(&name).await;
            }
        }
        if self.via == Via::Bucket {
            r.notes.push(format!(
                "each arrival is an upload of the payload's object to bucket {UPLOAD_BUCKET}; the bucket trigger invokes <function>-upload (input = \"object\": the platform attaches the object to the S3 notification) asynchronously; upload-to-answer = the upload's own latency (from its intended time) + the record's queue, cold-start init and duration (from the stored object to the function's answer)"
            ));
        }
        r.notes.push(
            "load + inference = per request, the model load its cold start paid (0 when warm) plus its duration: the studies' model execution time".into(),
        );
        r.notes.push(format!(
            "replay of {} intervals of {interval_s} s, time scaled x{time_scale} ({wall_interval:.2} wall s each); arrivals uniformly random within each interval (seed {seed}); latency counted from each arrival's intended time",
            counts.len()
        ));
        Ok(())
    }

    /// Deploys `name` (function `f` triggered by uploads under its own
    /// prefix, taking its input from the object), uploads one object per
    /// arrival, then waits for every invocation's record. Each sample's
    /// latency is upload-to-answer: the upload, then the record's queue,
    /// cold-start init and duration.
    #[allow(clippy::too_many_arguments)]
    async fn uploads(
        &self,
        lab: &mut Lab<'_>,
        f: &str,
        name: &str,
        payload: Option<&str>,
        schedule: &[Duration],
        conns: u32,
        tick: impl Fn() + Send + Sync + 'static,
    ) -> Result<Vec<Sample>, LabError> {
        let spec = lab
            .preset
            .function(f)
            .cloned()
            .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
        let extra: toml::Table = toml::from_str(&format!(
            "model = {{ input = \"object\" }}\n[[triggers]]\ntype = \"bucket\"\nbucket = \"{UPLOAD_BUCKET}\"\nprefix = \"{name}/\"\nevents = [\"put\"]\n"
        ))
        .expect("a valid table");
        lab.deploy(&spec, &extra, name).await?;
        let payload_name = lab
            .preset
            .payload_for(payload, f)
            .ok_or_else(|| LabError::Config(format!("no payload for {f}")))?;
        let object = Bytes::from(payload::object(
            &lab.preset.payloads[payload_name],
            &lab.preset.dir,
        )?);
        let gate = Arc::new(tokio::sync::Semaphore::new(conns as usize));
        let tick = Arc::new(tick);
        let t0 = Instant::now();
        let tasks: Vec<_> = schedule
            .iter()
            .enumerate()
            .map(|(i, &at)| {
                let (api, name, object) = (lab.api.clone(), name.to_string(), object.clone());
                let (gate, tick, stop) = (gate.clone(), tick.clone(), lab.stop.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until((t0 + at).into()).await;
                    if stop.stopped() {
                        return Vec::new();
                    }
                    let _permit = gate.acquire().await;
                    let sent = t0.elapsed();
                    let key = format!("{name}/{i:06}");
                    let answer = api.put_object(UPLOAD_BUCKET, &key, object.to_vec()).await;
                    let done = t0.elapsed();
                    tick();
                    let (status, error, request_id) = match answer {
                        Ok(stored) => {
                            match stored.invocations.into_iter().find(|t| t.function == name) {
                                Some(t) => (202, None, Some(t.request_id)),
                                None => (
                                    200,
                                    Some(format!(
                                        "the upload of {key} triggered no invocation of {name}"
                                    )),
                                    None,
                                ),
                            }
                        }
                        Err(e) => (e.status(), Some(e.to_string()), None),
                    };
                    vec![Sample {
                        t_ms: at.as_secs_f64() * 1000.0,
                        client_ms: (done.saturating_sub(at)).as_secs_f64() * 1000.0,
                        service_ms: (done - sent).as_secs_f64() * 1000.0,
                        status,
                        error,
                        request_id,
                        users: 0,
                    }]
                })
            })
            .collect();
        let mut samples = load::gather(tasks).await;
        let wait = Duration::from_secs_f64(self.wait_s);
        let records = super::settle(lab, name, &mut samples, wait).await?;
        for s in &mut samples {
            if let Some(rec) = s.request_id.as_ref().and_then(|id| records.get(id)) {
                // From the stored object to the function's answer: the
                // record's phases follow each other (queue, then a cold
                // start's init, then the invocation).
                let init = rec.init_ms.filter(|_| rec.cold).unwrap_or(0.0);
                let answer = rec.queue_ms + init + rec.duration_ms;
                s.client_ms += answer;
                s.service_ms += answer;
            }
        }
        Ok(samples)
    }
}

/// Mean load + inference per interval (index), from the records.
fn per_interval_load_inference(samples: &[Measured], interval_s: f64) -> BTreeMap<usize, f64> {
    let mut sums: BTreeMap<usize, (f64, usize)> = BTreeMap::new();
    for m in samples.iter().filter(|m| m.sample.ok()) {
        let Some(s) = &m.server else { continue };
        let i = (m.sample.t_ms / 1000.0 / interval_s).floor() as usize;
        let e = sums.entry(i).or_default();
        e.0 += s.init_ms.filter(|_| s.cold).unwrap_or(0.0) + s.duration_ms;
        e.1 += 1;
    }
    sums.into_iter()
        .map(|(i, (sum, n))| (i, sum / n as f64))
        .collect()
}
