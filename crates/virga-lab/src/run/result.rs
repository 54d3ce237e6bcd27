//! What a run measured, as `results.json` holds it: per scenario its table
//! and groups of requests (each request joined with its record), and the
//! time series of ramps and traces.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use virga_spec::api::FunctionInfo;
use virga_spec::InvocationRecord;

use crate::load::Sample;
use crate::reference::Comparison;
use crate::scenario::Kind;
use crate::stats::Summary;

/// What the platform recorded of one request (joined by request id).
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub instance_id: Option<String>,
    pub cold: bool,
    pub queue_ms: f64,
    /// A cold start's cost: the init of a spawned instance, or the restore
    /// of one forked from a snap-start template (`restored`).
    pub init_ms: Option<f64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub max_memory_mb: Option<u32>,
    pub preprocess_ms: Option<f64>,
    pub inference_ms: Option<f64>,
    pub postprocess_ms: Option<f64>,
}

impl From<&InvocationRecord> for Server {
    fn from(r: &InvocationRecord) -> Server {
        Server {
            instance_id: r.instance_id.clone(),
            cold: r.cold,
            queue_ms: r.queue_ms,
            init_ms: r.init_ms.or(r.restore_ms),
            restored: r.restore_ms.is_some(),
            duration_ms: r.duration_ms,
            billed_ms: r.billed_ms,
            max_memory_mb: r.max_memory_mb,
            preprocess_ms: r.split.preprocess_ms,
            inference_ms: r.split.inference_ms,
            postprocess_ms: r.split.postprocess_ms,
        }
    }
}

/// One request: the client's view and, where records exist, the server's.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    #[serde(flatten)]
    pub sample: Sample,
    pub server: Option<Server>,
}

/// The statistics of one group of requests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStats {
    pub requests: usize,
    pub errors: usize,
    pub cold: usize,
    /// Distinct instances that served the group (from the records).
    pub instances: usize,
    /// Successful requests per second of wall time.
    pub throughput_rps: Option<f64>,
    /// Most successful requests started within one second.
    pub peak_rps: Option<f64>,
    pub client: Option<Summary>,
    /// Open loop: latency from the actual send (without queueing in the client).
    pub service: Option<Summary>,
    pub server_duration: Option<Summary>,
    pub init: Option<Summary>,
    pub inference: Option<Summary>,
    /// Per request: the model load its cold start paid (0 when warm) plus
    /// its duration, the studies' "model execution time".
    pub load_inference: Option<Summary>,
    pub billed_mean_ms: Option<f64>,
    /// Peak memory of the instances that served the group (their records).
    pub max_memory_mb: Option<u32>,
    /// USD per 1000 requests, per pricing profile (from the records).
    pub cost_per_1000: BTreeMap<String, f64>,
}

/// One configuration of a scenario (a function, a user count, a grid cell...).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub label: String,
    pub function: String,
    /// What distinguishes it: memory_mb, users, payload, gap...
    pub config: BTreeMap<String, Value>,
    pub stats: GroupStats,
    /// Every request: written once, to `invocations.csv.gz`, never to
    /// `results.json`, whose size must not grow with the run.
    #[serde(skip)]
    pub samples: Vec<Measured>,
    /// What the report's charts need, so they render without the samples.
    pub plot: PlotData,
    /// Wall seconds the group ran (throughput's denominator).
    pub wall_s: f64,
}

/// Points of the timeline charts a group keeps at most (cold ones always).
const TIMELINE_MAX: usize = 1000;

/// A group's charts in small: latency CDFs and a thinned timeline.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PlotData {
    /// CDF of client latency of successful requests: (ms, fraction).
    pub cdf_client: Vec<(f64, f64)>,
    /// CDF of latency from the actual send (differs in open loop).
    pub cdf_service: Vec<(f64, f64)>,
    /// Successful requests in start order: every cold one, the warm ones
    /// thinned evenly to at most `TIMELINE_MAX` in all.
    pub timeline: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t_s: f64,
    pub ms: f64,
    pub cold: bool,
}

impl PlotData {
    pub fn of(samples: &[Measured]) -> PlotData {
        let ok: Vec<&Measured> = samples.iter().filter(|m| m.sample.ok()).collect();
        let client: Vec<f64> = ok.iter().map(|m| m.sample.client_ms).collect();
        let service: Vec<f64> = ok.iter().map(|m| m.sample.service_ms).collect();
        let cold = |m: &Measured| m.server.as_ref().is_some_and(|s| s.cold);
        let colds = ok.iter().filter(|m| cold(m)).count();
        let warm_room = TIMELINE_MAX.saturating_sub(colds).max(1);
        let stride = (ok.len() - colds).div_ceil(warm_room).max(1);
        let mut warm_seen = 0;
        let timeline = ok
            .iter()
            .filter(|m| {
                if cold(m) {
                    return true;
                }
                warm_seen += 1;
                (warm_seen - 1) % stride == 0
            })
            .map(|m| Point {
                t_s: m.sample.t_ms / 1000.0,
                ms: m.sample.client_ms,
                cold: cold(m),
            })
            .collect();
        PlotData {
            cdf_client: crate::stats::cdf(&client, 200),
            cdf_service: crate::stats::cdf(&service, 200),
            timeline,
        }
    }
}

impl Group {
    pub fn config_f64(&self, key: &str) -> Option<f64> {
        self.config.get(key).and_then(Value::as_f64)
    }
}

/// A scenario's outcome: its table (shaped like the study's) and its groups.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub kind: Kind,
    pub title: String,
    /// Time scaling, substitutions, caveats: said in every output.
    pub notes: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub groups: Vec<Group>,
    /// Time series buckets (ramp, trace): seconds from start, users, hits/s,
    /// mean and max latency, errors.
    pub series: Vec<Bucket>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub t_s: f64,
    pub users: u32,
    /// Requests started in this bucket (answered or not).
    pub requests: usize,
    pub hits_per_s: f64,
    pub mean_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: usize,
    pub cold: usize,
    /// Requests planned in this bucket (trace replay).
    pub planned: Option<u32>,
}

/// The host the run measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Host {
    pub arch: String,
    pub os: String,
    pub cores: usize,
    pub build: String,
    pub virga_version: String,
    pub limits_enforced: Option<bool>,
}

impl Host {
    pub fn here() -> Host {
        Host {
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            virga_version: env!("CARGO_PKG_VERSION").into(),
            limits_enforced: None,
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} cores, {} {}, {} build, virga {}{}",
            self.cores,
            self.arch,
            self.os,
            self.build,
            self.virga_version,
            match self.limits_enforced {
                Some(true) => ", limits enforced with cgroups",
                Some(false) => ", limits NOT enforced (no cgroups)",
                None => "",
            }
        )
    }
}

/// A deployed function as the run used it.
#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
    pub name: String,
    pub manifest: String,
    pub info: Option<FunctionInfo>,
}

/// Everything one `virga bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub preset: String,
    pub description: String,
    pub reproduces: Option<String>,
    pub endpoint: String,
    /// The client link the run emulated, if any (its label).
    pub link: Option<String>,
    pub embedded: bool,
    pub quick: bool,
    pub started_at: String,
    pub finished_at: String,
    pub host: Host,
    /// True when Ctrl-C cut the run short: what is here was measured.
    pub interrupted: bool,
    /// Whether the endpoint is a virga platform (records, deploys) or only
    /// speaks the Invoke API (client-side numbers only).
    pub managed: bool,
    pub pricing_profiles: Vec<String>,
    pub functions: Vec<Deployed>,
    /// `optional` functions the platform refused, and why.
    pub skipped: BTreeMap<String, String>,
    pub scenarios: Vec<ScenarioResult>,
    /// The source study's figures beside this run's.
    pub reference: Comparison,
}

/// Distinct instances that served `samples` (by their records).
pub fn unique_instances(samples: &[Measured]) -> usize {
    samples
        .iter()
        .filter_map(|m| m.server.as_ref()?.instance_id.as_deref())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Buckets samples by start time: hits/s, mean and max latency, users.
pub fn buckets(samples: &[Measured], bucket_s: f64, planned: Option<&[u32]>) -> Vec<Bucket> {
    let end_s = samples
        .iter()
        .map(|m| m.sample.t_ms / 1000.0)
        .fold(0.0, f64::max);
    let mut n = (end_s / bucket_s).floor() as usize + 1;
    if let Some(p) = planned {
        n = n.max(p.len());
    }
    let mut out: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            t_s: i as f64 * bucket_s,
            users: 0,
            requests: 0,
            hits_per_s: 0.0,
            mean_ms: None,
            max_ms: None,
            errors: 0,
            cold: 0,
            planned: planned.map(|p| p.get(i).copied().unwrap_or(0)),
        })
        .collect();
    let mut sums = vec![(0.0f64, 0usize); n];
    for m in samples {
        let i = ((m.sample.t_ms / 1000.0) / bucket_s).floor() as usize;
        let Some(b) = out.get_mut(i.min(n - 1)) else {
            continue;
        };
        b.users = b.users.max(m.sample.users);
        b.requests += 1;
        if m.server.as_ref().is_some_and(|s| s.cold) {
            b.cold += 1;
        }
        if !m.sample.ok() {
            b.errors += 1;
            continue;
        }
        b.hits_per_s += 1.0 / bucket_s;
        b.max_ms = Some(
            b.max_ms
                .map_or(m.sample.client_ms, |x| x.max(m.sample.client_ms)),
        );
        let s = &mut sums[i.min(n - 1)];
        s.0 += m.sample.client_ms;
        s.1 += 1;
    }
    for (b, (sum, k)) in out.iter_mut().zip(sums) {
        if k > 0 {
            b.mean_ms = Some(sum / k as f64);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t_ms: f64, client_ms: f64, status: u16, cold: bool) -> Measured {
        Measured {
            sample: Sample {
                t_ms,
                client_ms,
                service_ms: client_ms,
                status,
                error: None,
                request_id: None,
                users: 3,
            },
            server: Some(Server {
                instance_id: None,
                cold,
                queue_ms: 0.0,
                init_ms: None,
                restored: false,
                duration_ms: 1.0,
                billed_ms: 1,
                max_memory_mb: None,
                preprocess_ms: None,
                inference_ms: None,
                postprocess_ms: None,
            }),
        }
    }

    #[test]
    fn buckets_count_hits_and_latency() {
        let s = vec![
            m(100.0, 10.0, 200, true),
            m(400.0, 30.0, 200, false),
            m(1500.0, 5.0, 200, false),
            m(1600.0, 5.0, 429, false),
        ];
        let b = buckets(&s, 1.0, Some(&[2, 2, 1]));
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].hits_per_s, 2.0);
        assert_eq!(b[0].mean_ms, Some(20.0));
        assert_eq!(b[0].max_ms, Some(30.0));
        assert_eq!(b[0].cold, 1);
        assert_eq!(b[1].errors, 1);
        assert_eq!(b[1].requests, 2);
        assert_eq!(b[1].hits_per_s, 1.0);
        assert_eq!(b[2].planned, Some(1));
        assert_eq!(b[2].mean_ms, None);
        assert_eq!(b[0].users, 3);
    }

    #[test]
    fn a_burst_counts_its_distinct_instances() {
        // 10 invocations over 3 instances, one without a record.
        let mut s: Vec<Measured> = (0..10)
            .map(|i| {
                let mut x = m(f64::from(i), 5.0, 202, i < 3);
                x.server.as_mut().unwrap().instance_id = Some(format!("i-{}", i % 3));
                x
            })
            .collect();
        s[9].server = None;
        assert_eq!(unique_instances(&s), 3);
        assert_eq!(unique_instances(&s[..2]), 2);
        assert_eq!(unique_instances(&[]), 0);
    }

    #[test]
    fn plot_data_keeps_cold_points_and_thins_warm_ones() {
        let s: Vec<Measured> = (0..5000)
            .map(|i| m(f64::from(i), 10.0, 200, i % 1000 == 0))
            .collect();
        let p = PlotData::of(&s);
        assert!(p.timeline.len() <= TIMELINE_MAX, "{}", p.timeline.len());
        assert_eq!(p.timeline.iter().filter(|x| x.cold).count(), 5);
        assert!(p.cdf_client.len() <= 201 && !p.cdf_client.is_empty());
    }
}
