//! Running a preset: deploy its functions, run each scenario, join the
//! client's samples with the platform's records, summarise.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::{json, Value};
use virga_spec::InvocationRecord;

use crate::load::{self, Job, Sample, Stop, Target};
use crate::payload;
use crate::preset::{Arrival, FunctionSpec, Preset, Scenario};
use crate::stats::{self, Summary};
use crate::{Api, LabError};

/// What the platform recorded of one request (joined by request id).
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    pub cold: bool,
    pub queue_ms: f64,
    pub init_ms: Option<f64>,
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
            cold: r.cold,
            queue_ms: r.queue_ms,
            init_ms: r.init_ms,
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
    /// Successful requests per second of wall time.
    pub throughput_rps: Option<f64>,
    pub client: Option<Summary>,
    /// Open loop: latency from the actual send (without queueing in the client).
    pub service: Option<Summary>,
    pub server_duration: Option<Summary>,
    pub init: Option<Summary>,
    pub inference: Option<Summary>,
    pub billed_mean_ms: Option<f64>,
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
    pub samples: Vec<Measured>,
    /// Wall seconds the group ran (throughput's denominator).
    pub wall_s: f64,
}

impl Group {
    pub fn config_f64(&self, key: &str) -> Option<f64> {
        self.config.get(key).and_then(Value::as_f64)
    }
}

/// A scenario's outcome: its table (shaped like the study's) and its groups.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub kind: String,
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
    pub info: Option<Value>,
}

/// Everything one `virga bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub preset: String,
    pub description: String,
    pub reproduces: Option<String>,
    pub endpoint: String,
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
    pub scenarios: Vec<ScenarioResult>,
}

/// Options of a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub endpoint: String,
    pub embedded: bool,
    pub quick: bool,
    pub limits_enforced: Option<bool>,
    /// Print progress and tables as the run goes.
    pub verbose: bool,
    /// Signs the run's requests (AWS Signature V4) when set.
    pub signer: Option<virga_sigv4::Signer>,
}

struct Lab<'a> {
    api: Api,
    target: Target,
    preset: &'a Preset,
    stop: Stop,
    managed: bool,
    verbose: bool,
    profiles: Vec<virga_spec::pricing::Profile>,
    /// Function info (memory, vCPU, mode) by deployed name.
    info: BTreeMap<String, Value>,
    deployed: Vec<Deployed>,
}

/// Runs `preset` against `opts.endpoint`. Returns what was measured even
/// when stopped early (then `interrupted` is set).
pub async fn run(preset: &Preset, opts: &RunOptions, stop: Stop) -> Result<RunResult, LabError> {
    let started_at = now();
    let api = Api::new(&opts.endpoint).signed(opts.signer.clone());
    let target = Target::parse(&opts.endpoint)?.signed(opts.signer.clone());
    let managed = api.get("/v1/functions").await.is_ok();
    let profiles = preset
        .pricing
        .profiles
        .iter()
        .map(|p| {
            virga_spec::pricing::Profile::built_in(p).map_err(|e| LabError::Config(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut lab = Lab {
        api,
        target,
        preset,
        stop: stop.clone(),
        managed,
        verbose: opts.verbose,
        profiles,
        info: BTreeMap::new(),
        deployed: Vec::new(),
    };
    if managed {
        for f in &preset.functions {
            lab.deploy(f, &toml::Table::new(), &f.name).await?;
        }
    } else if lab.verbose {
        println!(
            "note: {} has no /v1/ management API: functions must already exist there; only client-side numbers are measured",
            opts.endpoint
        );
    }
    let mut scenarios = Vec::new();
    for (i, s) in preset.scenarios.iter().enumerate() {
        if stop.stopped() {
            break;
        }
        if lab.verbose {
            println!(
                "\n== scenario {}/{}: {} ({})",
                i + 1,
                preset.scenarios.len(),
                s.title(),
                s.kind()
            );
        }
        let r = lab.scenario(s).await?;
        if lab.verbose {
            print!("{}", crate::report::text_table(&r.columns, &r.rows));
            for n in &r.notes {
                println!("  note: {n}");
            }
        }
        scenarios.push(r);
    }
    let mut host = Host::here();
    host.limits_enforced = opts.limits_enforced;
    Ok(RunResult {
        preset: preset.name.clone(),
        description: preset.description.clone(),
        reproduces: preset.reproduces.clone(),
        endpoint: opts.endpoint.clone(),
        embedded: opts.embedded,
        quick: opts.quick,
        started_at,
        finished_at: now(),
        host,
        interrupted: stop.stopped(),
        managed,
        pricing_profiles: preset.pricing.profiles.clone(),
        functions: lab.deployed,
        scenarios,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn bar(len: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("  {msg:30} [{bar:30}] {pos}/{len} {elapsed}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_message(msg);
    pb
}

fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("  {spinner} {msg:30} {pos} requests {elapsed}")
            .expect("static template"),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}
fn f2(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}
fn usd(v: f64) -> String {
    format!("{v:.6}")
}

impl Lab<'_> {
    /// Deploys `spec` (plus `extra` overrides) under `name`.
    async fn deploy(
        &mut self,
        spec: &FunctionSpec,
        extra: &toml::Table,
        name: &str,
    ) -> Result<(), LabError> {
        let path = self.preset.dir.join(&spec.manifest);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LabError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| LabError::Config(format!("{}: {e}", path.display())))?;
        table.insert("name".into(), toml::Value::String(name.into()));
        for (k, v) in spec.set.iter().chain(extra.iter()) {
            table.insert(k.clone(), v.clone());
        }
        let manifest = toml::to_string(&table)
            .map_err(|e| LabError::Config(format!("{}: {e}", path.display())))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ".".into());
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let info = self
            .api
            .deploy(name, &manifest, &base.display().to_string())
            .await
            .map_err(|e| {
                LabError::Config(format!("deploying {name} (from {}): {e}", path.display()))
            })?;
        self.info.insert(name.into(), info.clone());
        self.deployed.retain(|d| d.name != name);
        self.deployed.push(Deployed {
            name: name.into(),
            manifest,
            info: Some(info),
        });
        Ok(())
    }

    /// The request `function` gets: the scenario's payload, else the
    /// function's own (`deployed` may be a sweep cell's name).
    fn job(
        &self,
        function: &str,
        payload: Option<&str>,
        rows: Option<u32>,
    ) -> Result<Job, LabError> {
        self.job_as(function, function, payload, rows)
    }

    fn job_as(
        &self,
        spec_name: &str,
        deployed: &str,
        payload: Option<&str>,
        rows: Option<u32>,
    ) -> Result<Job, LabError> {
        let name = self
            .preset
            .payload_for(payload, spec_name)
            .ok_or_else(|| LabError::Config(format!("no payload for {spec_name}")))?;
        let function = deployed;
        let spec = &self.preset.payloads[name];
        let body = payload::build(spec, &self.preset.dir, rows)?;
        Ok(Job {
            function: function.into(),
            body: Bytes::from(body),
        })
    }

    /// Stops the function's idle instances and waits until none is left, so
    /// the next invocation is cold. Gives up quietly after a second (a
    /// service with `min_instances` re-provisions at once): the record says
    /// whether each invocation was cold, and the tables count those.
    async fn force_cold(&self, function: &str) -> Result<(), LabError> {
        if !self.managed {
            return Ok(());
        }
        for _ in 0..100 {
            self.api
                .delete(&format!("/v1/functions/{function}/instances"))
                .await?;
            let v = self
                .api
                .get(&format!("/v1/functions/{function}/instances"))
                .await?;
            if v["instances"].as_array().is_none_or(|a| a.is_empty()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Joins samples with the function's records and computes the stats.
    async fn group(
        &self,
        label: String,
        function: &str,
        mut config: BTreeMap<String, Value>,
        samples: Vec<Sample>,
        wall_s: f64,
    ) -> Result<Group, LabError> {
        let mut records: BTreeMap<String, InvocationRecord> = BTreeMap::new();
        if self.managed && !samples.is_empty() {
            // The platform's records are written off the invoke path: wait
            // briefly until every answered request has one.
            let want = samples.iter().filter(|s| s.request_id.is_some()).count();
            for attempt in 0..50 {
                let recs = self
                    .api
                    .records(Some(function), Some(samples.len() + 64))
                    .await?;
                records = recs
                    .into_iter()
                    .map(|r| (r.request_id.clone(), r))
                    .collect();
                let have = samples
                    .iter()
                    .filter(|s| {
                        s.request_id
                            .as_ref()
                            .is_some_and(|id| records.contains_key(id))
                    })
                    .count();
                if have >= want || attempt == 49 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(info) = self.info.get(function) {
            for k in ["memory_mb", "vcpu", "max_concurrency", "runtime", "mode"] {
                if let Some(v) = info.get(k) {
                    config.entry(k.to_string()).or_insert(v.clone());
                }
            }
        }
        let measured: Vec<Measured> = samples
            .into_iter()
            .map(|s| {
                let server = s
                    .request_id
                    .as_ref()
                    .and_then(|id| records.get(id))
                    .map(Server::from);
                Measured { sample: s, server }
            })
            .collect();
        let mine: Vec<InvocationRecord> = measured
            .iter()
            .filter_map(|m| {
                m.sample
                    .request_id
                    .as_ref()
                    .and_then(|id| records.get(id))
                    .cloned()
            })
            .collect();
        let stats = self.stats(&measured, &mine, wall_s);
        Ok(Group {
            label,
            function: function.into(),
            config,
            stats,
            samples: measured,
            wall_s,
        })
    }

    fn stats(&self, m: &[Measured], records: &[InvocationRecord], wall_s: f64) -> GroupStats {
        let ok: Vec<&Measured> = m.iter().filter(|x| x.sample.ok()).collect();
        let client: Vec<f64> = ok.iter().map(|x| x.sample.client_ms).collect();
        let service: Vec<f64> = ok.iter().map(|x| x.sample.service_ms).collect();
        let servers: Vec<&Server> = ok.iter().filter_map(|x| x.server.as_ref()).collect();
        let duration: Vec<f64> = servers.iter().map(|s| s.duration_ms).collect();
        let init: Vec<f64> = servers.iter().filter_map(|s| s.init_ms).collect();
        let inference: Vec<f64> = servers.iter().filter_map(|s| s.inference_ms).collect();
        let billed: Vec<f64> = servers.iter().map(|s| s.billed_ms as f64).collect();
        let mut cost = BTreeMap::new();
        if !records.is_empty() {
            for p in &self.profiles {
                let c = virga_spec::pricing::price_records(p, &records[0].function, records, None);
                cost.insert(p.name.clone(), c.per_1000_requests_usd);
            }
        }
        GroupStats {
            requests: m.len(),
            errors: m.len() - ok.len(),
            cold: servers.iter().filter(|s| s.cold).count(),
            throughput_rps: (wall_s > 0.0).then(|| ok.len() as f64 / wall_s),
            client: stats::summarize(&client),
            service: stats::summarize(&service),
            server_duration: stats::summarize(&duration),
            init: stats::summarize(&init),
            inference: stats::summarize(&inference),
            billed_mean_ms: (!billed.is_empty())
                .then(|| billed.iter().sum::<f64>() / billed.len() as f64),
            cost_per_1000: cost,
        }
    }

    /// "f: USD per 1000 requests: profile $x, ..." for tables without cost columns.
    fn cost_note(&self, g: &Group) -> Option<String> {
        if g.stats.cost_per_1000.is_empty() {
            return None;
        }
        let costs: Vec<String> = g
            .stats
            .cost_per_1000
            .iter()
            .map(|(p, c)| format!("{p} ${c:.6}"))
            .collect();
        Some(format!(
            "{}: USD per 1000 requests (from its records): {}",
            g.function,
            costs.join(", ")
        ))
    }

    fn cost_columns(&self) -> Vec<String> {
        self.profiles
            .iter()
            .map(|p| format!("USD/1000 {}", p.name))
            .collect()
    }

    fn cost_cells(&self, g: &Group) -> Vec<String> {
        self.profiles
            .iter()
            .map(|p| {
                g.stats
                    .cost_per_1000
                    .get(&p.name)
                    .map_or("-".into(), |v| usd(*v))
            })
            .collect()
    }

    async fn scenario(&mut self, s: &Scenario) -> Result<ScenarioResult, LabError> {
        let mut r = ScenarioResult {
            kind: s.kind().into(),
            title: s.title(),
            notes: Vec::new(),
            columns: Vec::new(),
            rows: Vec::new(),
            groups: Vec::new(),
            series: Vec::new(),
        };
        match s {
            Scenario::ColdStart {
                functions,
                payload,
                repetitions,
                warm,
                ..
            } => {
                self.cold_start(&mut r, functions, payload.as_deref(), *repetitions, *warm)
                    .await?
            }
            Scenario::WarmLatency {
                functions,
                payloads,
                requests,
                ..
            } => {
                self.warm_latency(&mut r, functions, payloads, *requests)
                    .await?
            }
            Scenario::Throughput {
                functions,
                payload,
                users,
                duration_s,
                warmup_s,
                ..
            } => {
                self.throughput(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    users,
                    *duration_s,
                    *warmup_s,
                )
                .await?
            }
            Scenario::Compare {
                functions,
                payload,
                users,
                duration_s,
                warmup_s,
                ..
            } => {
                self.throughput(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    &[*users],
                    *duration_s,
                    *warmup_s,
                )
                .await?;
                r.notes.push(
                    "the same closed-loop workload against each deployment; cost columns price each deployment's own records"
                        .into(),
                );
            }
            Scenario::Ramp {
                functions,
                payload,
                stages,
                bucket_s,
                think_ms,
                ..
            } => {
                self.ramp(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    stages,
                    *bucket_s,
                    *think_ms,
                )
                .await?
            }
            Scenario::KeepAlive {
                functions,
                payload,
                gaps,
                unit_s,
                keep_alive_units,
                ..
            } => {
                self.keep_alive(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    gaps,
                    *unit_s,
                    *keep_alive_units,
                )
                .await?
            }
            Scenario::Trace {
                functions,
                payload,
                counts,
                csv,
                csv_row,
                interval_s,
                time_scale,
                seed,
                ..
            } => {
                let counts = match csv {
                    Some(c) => crate::trace::azure_counts(&self.preset.dir.join(c), *csv_row)?,
                    None => counts.clone(),
                };
                self.trace(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    &counts,
                    *interval_s,
                    *time_scale,
                    *seed,
                )
                .await?
            }
            Scenario::Sweep {
                functions,
                payload,
                memory_mb,
                max_concurrency,
                batch_size,
                requests,
                cold,
                users,
                ..
            } => {
                self.sweep(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    memory_mb,
                    max_concurrency,
                    batch_size,
                    *requests,
                    *cold,
                    *users,
                )
                .await?
            }
            Scenario::OpenLoop {
                functions,
                payload,
                rate,
                duration_s,
                arrival,
                connections,
                seed,
                ..
            } => {
                self.open_loop(
                    &mut r,
                    functions,
                    payload.as_deref(),
                    *rate,
                    *duration_s,
                    *arrival,
                    *connections,
                    *seed,
                )
                .await?
            }
        }
        for g in &r.groups {
            if g.stats.errors > 0 {
                let first = g
                    .samples
                    .iter()
                    .find_map(|m| m.sample.error.clone())
                    .unwrap_or_default();
                r.notes.push(format!(
                    "{}: {} of {} requests failed, e.g. {first}",
                    g.label, g.stats.errors, g.stats.requests
                ));
            }
        }
        if !self.managed {
            r.notes.push(
                "the endpoint keeps no records: server-side split, cold starts and cost are not available"
                    .into(),
            );
        }
        Ok(r)
    }

    async fn cold_start(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        repetitions: u32,
        warm: u32,
    ) -> Result<(), LabError> {
        r.columns = [
            "function",
            "memory_mb",
            "vcpu",
            "cold n",
            "init p50 ms",
            "init mean ms",
            "init ci95 ms",
            "cold total p50 ms",
            "warm p50 ms",
            "cold/warm",
        ]
        .map(String::from)
        .to_vec();
        for f in functions {
            let job = self.job(f, payload, None)?;
            let pb = bar(u64::from(repetitions + warm), format!("{f} cold"));
            let mut cold_samples = Vec::new();
            for _ in 0..repetitions {
                if self.stop.stopped() {
                    break;
                }
                self.force_cold(f).await?;
                cold_samples.extend(load::sequential(&self.target, &job, 1, &self.stop).await);
                pb.inc(1);
            }
            let warm_samples = load::sequential(&self.target, &job, warm, &self.stop).await;
            pb.inc(u64::from(warm));
            pb.finish_and_clear();
            let cold_g = self
                .group(
                    format!("{f} cold"),
                    f,
                    cfg(&[("phase", json!("cold"))]),
                    cold_samples,
                    0.0,
                )
                .await?;
            let warm_g = self
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
            r.rows.push(vec![
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
                opt(cs.init.as_ref().map(|s| s.mean), f2),
                opt(cs.init.as_ref().and_then(|s| s.ci95), f2),
                opt(cold_p50, f2),
                opt(warm_p50, f2),
                match (cold_p50, warm_p50) {
                    (Some(c), Some(w)) if w > 0.0 => format!("{:.1}x", c / w),
                    _ => "-".into(),
                },
            ]);
            r.groups.push(cold_g);
            r.groups.push(warm_g);
        }
        r.notes.push(format!(
            "{repetitions} forced cold invocations per function (idle instances stopped before each); init = spawn to the runtime's first invocation/next, from the platform's records"
        ));
        Ok(())
    }

    async fn warm_latency(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payloads: &[String],
        requests: u32,
    ) -> Result<(), LabError> {
        r.columns = [
            "function",
            "payload",
            "payload KB",
            "n",
            "p50 ms",
            "mean ms",
            "ci95 ms",
            "p99 ms",
            "server p50 ms",
            "inference p50 ms",
        ]
        .map(String::from)
        .to_vec();
        for f in functions {
            for p in payloads {
                let job = self.job(f, Some(p), None)?;
                // One warm-up (it may be cold) that is not kept.
                let _ = load::sequential(&self.target, &job, 1, &self.stop).await;
                let pb = bar(u64::from(requests), format!("{f} {p}"));
                let mut samples = Vec::new();
                for _ in 0..requests {
                    if self.stop.stopped() {
                        break;
                    }
                    samples.extend(load::sequential(&self.target, &job, 1, &self.stop).await);
                    pb.inc(1);
                }
                pb.finish_and_clear();
                let kb = job.body.len() as f64 / 1024.0;
                let g = self
                    .group(
                        format!("{f} {p}"),
                        f,
                        cfg(&[("payload", json!(p)), ("payload_kb", json!(kb))]),
                        samples,
                        0.0,
                    )
                    .await?;
                let c = g.stats.client.clone().unwrap_or_default();
                r.rows.push(vec![
                    f.clone(),
                    p.clone(),
                    format!("{kb:.1}"),
                    g.stats.requests.to_string(),
                    f2(c.p50),
                    f2(c.mean),
                    opt(c.ci95, f2),
                    f2(c.p99),
                    opt(g.stats.server_duration.as_ref().map(|s| s.p50), f2),
                    opt(g.stats.inference.as_ref().map(|s| s.p50), f2),
                ]);
                r.groups.push(g);
            }
        }
        r.notes.push("sequential warm invocations after one discarded warm-up; payload KB is the request body (base64 JSON for images)".into());
        Ok(())
    }

    async fn throughput(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        users: &[u32],
        duration_s: f64,
        warmup_s: f64,
    ) -> Result<(), LabError> {
        r.columns = [
            "function", "mode", "users", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms",
            "max ms", "errors %", "cold",
        ]
        .map(String::from)
        .to_vec();
        r.columns.extend(self.cost_columns());
        for f in functions {
            let job = self.job(f, payload, None)?;
            for &u in users {
                if self.stop.stopped() {
                    break;
                }
                let pb = spinner(format!("{f} x{u} users"));
                let pb2 = pb.clone();
                let t = std::time::Instant::now();
                let samples = load::closed_loop(
                    &self.target,
                    &job,
                    u,
                    Duration::from_secs_f64(warmup_s),
                    Duration::from_secs_f64(duration_s),
                    &self.stop,
                    move || pb2.inc(1),
                )
                .await;
                pb.finish_and_clear();
                // Measured time: less than asked when stopped early.
                let wall = (t.elapsed().as_secs_f64() - warmup_s).clamp(1e-3, duration_s);
                let g = self
                    .group(
                        format!("{f} x{u}"),
                        f,
                        cfg(&[("users", json!(u))]),
                        samples,
                        wall,
                    )
                    .await?;
                let st = &g.stats;
                let c = st.client.clone().unwrap_or_default();
                let mut row = vec![
                    f.clone(),
                    g.config
                        .get("mode")
                        .and_then(Value::as_str)
                        .unwrap_or("function")
                        .into(),
                    u.to_string(),
                    st.requests.to_string(),
                    opt(st.throughput_rps, f1),
                    f2(c.p50),
                    f2(c.p90),
                    f2(c.p99),
                    f2(c.max),
                    if st.requests == 0 {
                        "-".into()
                    } else {
                        format!("{:.1}", 100.0 * st.errors as f64 / st.requests as f64)
                    },
                    st.cold.to_string(),
                ];
                row.extend(self.cost_cells(&g));
                r.rows.push(row);
                r.groups.push(g);
            }
        }
        r.notes.push(format!(
            "closed loop: each user sends its next request when the previous returns; {duration_s} s measured after {warmup_s} s warm-up; errors include throttling (429)"
        ));
        Ok(())
    }

    async fn ramp(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        stages: &[crate::preset::Stage],
        bucket_s: f64,
        think_ms: f64,
    ) -> Result<(), LabError> {
        r.columns = [
            "function", "t s", "users", "hits/s", "mean ms", "max ms", "errors", "cold",
        ]
        .map(String::from)
        .to_vec();
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
            let job = self.job(f, payload, None)?;
            let pb = spinner(format!("{f} ramp ({total:.0} s)"));
            let pb2 = pb.clone();
            let samples = load::ramp(
                &self.target,
                &job,
                &plan,
                Duration::from_secs_f64(think_ms / 1000.0),
                &self.stop,
                move || pb2.inc(1),
            )
            .await;
            pb.finish_and_clear();
            let g = self
                .group(format!("{f} ramp"), f, BTreeMap::new(), samples, total)
                .await?;
            let series = buckets(&g.samples, bucket_s, None);
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
            if let Some(note) = self.cost_note(&g) {
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

    async fn keep_alive(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        gaps: &[f64],
        unit_s: f64,
        keep_alive_units: f64,
    ) -> Result<(), LabError> {
        r.columns = [
            "function",
            "gap units",
            "gap s",
            "cold",
            "client ms",
            "init ms",
            "server ms",
        ]
        .map(String::from)
        .to_vec();
        let keep_alive_ms = (keep_alive_units * unit_s * 1000.0).round() as i64;
        for f in functions {
            if self.managed {
                let spec = self
                    .preset
                    .function(f)
                    .cloned()
                    .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
                let mut extra = toml::Table::new();
                extra.insert(
                    "keep_alive_ms".into(),
                    toml::Value::Integer(keep_alive_ms.max(1)),
                );
                self.deploy(&spec, &extra, f).await?;
            }
            let job = self.job(f, payload, None)?;
            // Start warm: the first gap is measured from this request.
            let _ = load::sequential(&self.target, &job, 1, &self.stop).await;
            let pb = bar(gaps.len() as u64, format!("{f} keep-alive"));
            for &gap in gaps {
                if !self.stop.sleep(Duration::from_secs_f64(gap * unit_s)).await {
                    break;
                }
                let samples = load::sequential(&self.target, &job, 1, &self.stop).await;
                pb.inc(1);
                let g = self
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

    #[allow(clippy::too_many_arguments)]
    async fn trace(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        counts: &[u32],
        interval_s: f64,
        time_scale: f64,
        seed: u64,
    ) -> Result<(), LabError> {
        r.columns = [
            "function", "interval", "planned", "sent", "mean ms", "max ms", "errors", "cold",
        ]
        .map(String::from)
        .to_vec();
        let wall_interval = interval_s * time_scale;
        let schedule = crate::trace::schedule(counts, wall_interval, seed);
        let total = wall_interval * counts.len() as f64;
        for f in functions {
            let job = self.job(f, payload, None)?;
            let pb = bar(schedule.len() as u64, format!("{f} trace ({total:.0} s)"));
            let pb2 = pb.clone();
            let conns = counts.iter().copied().max().unwrap_or(1).clamp(1, 64);
            let samples = load::open_loop(
                &self.target,
                &job,
                schedule.clone(),
                conns,
                &self.stop,
                move || pb2.inc(1),
            )
            .await;
            pb.finish_and_clear();
            let g = self
                .group(format!("{f} trace"), f, BTreeMap::new(), samples, total)
                .await?;
            let series = buckets(&g.samples, wall_interval, Some(counts));
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
            if let Some(note) = self.cost_note(&g) {
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

    #[allow(clippy::too_many_arguments)]
    async fn sweep(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        memory_mb: &[u32],
        max_concurrency: &[u32],
        batch_size: &[u32],
        requests: u32,
        cold: u32,
        users: u32,
    ) -> Result<(), LabError> {
        r.columns = [
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
        ]
        .map(String::from)
        .to_vec();
        r.columns.extend(self.cost_columns());
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
            let spec = self
                .preset
                .function(f)
                .cloned()
                .ok_or_else(|| LabError::Config(format!("unknown function {f}")))?;
            for &(m, c, b) in &cells {
                if self.stop.stopped() {
                    break;
                }
                let mut extra = toml::Table::new();
                let mut name = f.clone();
                if let Some(m) = m {
                    extra.insert("memory_mb".into(), toml::Value::Integer(m.into()));
                    name.push_str(&format!("-m{m}"));
                }
                if let Some(c) = c {
                    extra.insert("max_concurrency".into(), toml::Value::Integer(c.into()));
                    name.push_str(&format!("-c{c}"));
                }
                if let Some(b) = b {
                    name.push_str(&format!("-b{b}"));
                }
                let target_name = if self.managed {
                    self.deploy(&spec, &extra, &name).await?;
                    name.clone()
                } else {
                    f.clone()
                };
                let job = self.job_as(f, &target_name, payload, b)?;
                let mut samples = Vec::new();
                for _ in 0..cold {
                    self.force_cold(&target_name).await?;
                    samples.extend(load::sequential(&self.target, &job, 1, &self.stop).await);
                }
                let warm = requests - cold;
                let t = std::time::Instant::now();
                if users <= 1 {
                    samples.extend(load::sequential(&self.target, &job, warm, &self.stop).await);
                } else {
                    samples.extend(self.fixed_count(&job, warm, users).await);
                }
                let wall = t.elapsed().as_secs_f64();
                let mut config = cfg(&[("batch_size", json!(b))]);
                config.insert("memory_mb".into(), json!(m));
                config.insert("max_concurrency".into(), json!(c));
                config.retain(|_, v| !v.is_null());
                let g = self
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
                row.extend(self.cost_cells(&g));
                r.rows.push(row);
                r.groups.push(g);
                pb.inc(1);
                if self.managed {
                    // Free the cell's instances before the next one.
                    let _ = self
                        .api
                        .delete(&format!("/v1/functions/{target_name}"))
                        .await;
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

    /// Sends exactly `n` requests from `users` closed-loop users.
    async fn fixed_count(&self, job: &Job, n: u32, users: u32) -> Vec<Sample> {
        let left = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::from(n)));
        let mut tasks = Vec::new();
        for _ in 0..users {
            let (target, job, stop, left) = (
                self.target.clone(),
                job.clone(),
                self.stop.clone(),
                left.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut conn = load::Conn::new(&target);
                let t0 = std::time::Instant::now();
                let mut out = Vec::new();
                while left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 0 && !stop.stopped()
                {
                    let mut s = conn.invoke(&job, t0, None).await;
                    s.users = users;
                    out.push(s);
                }
                out
            }));
        }
        load::gather(tasks).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_loop(
        &mut self,
        r: &mut ScenarioResult,
        functions: &[String],
        payload: Option<&str>,
        rate: f64,
        duration_s: f64,
        arrival: Arrival,
        connections: u32,
        seed: u64,
    ) -> Result<(), LabError> {
        r.columns = [
            "function",
            "rate/s",
            "arrival",
            "sent",
            "achieved/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "uncorrected p99 ms",
            "errors",
        ]
        .map(String::from)
        .to_vec();
        for f in functions {
            let job = self.job(f, payload, None)?;
            let schedule = load::arrivals(
                rate,
                Duration::from_secs_f64(duration_s),
                arrival == Arrival::Poisson,
                seed,
            );
            let pb = bar(schedule.len() as u64, format!("{f} open loop {rate}/s"));
            let pb2 = pb.clone();
            let t = std::time::Instant::now();
            let samples = load::open_loop(
                &self.target,
                &job,
                schedule,
                connections,
                &self.stop,
                move || pb2.inc(1),
            )
            .await;
            let wall = t.elapsed().as_secs_f64();
            pb.finish_and_clear();
            let g = self
                .group(
                    format!("{f} {rate}/s"),
                    f,
                    cfg(&[("rate", json!(rate))]),
                    samples,
                    wall,
                )
                .await?;
            let st = &g.stats;
            let c = st.client.clone().unwrap_or_default();
            r.rows.push(vec![
                f.clone(),
                f1(rate),
                format!("{arrival:?}").to_lowercase(),
                st.requests.to_string(),
                opt(st.throughput_rps, f1),
                f2(c.p50),
                f2(c.p99),
                f2(c.p999),
                f2(c.max),
                opt(st.service.as_ref().map(|s| s.p99), f2),
                st.errors.to_string(),
            ]);
            r.groups.push(g);
        }
        r.notes.push(format!(
            "open loop over {connections} connections: latency counted from each request's intended start (corrected for coordinated omission); 'uncorrected' counts from the actual send"
        ));
        Ok(())
    }
}

fn cfg(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
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
                cold,
                queue_ms: 0.0,
                init_ms: None,
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
}
