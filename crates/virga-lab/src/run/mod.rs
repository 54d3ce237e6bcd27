//! Running a preset: deploy its functions, run each scenario (the kinds live
//! in [`crate::scenario`]), join the client's samples with the platform's
//! records, summarise.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use virga_spec::api::FunctionInfo;
use virga_spec::InvocationRecord;

use crate::load::{Job, Sample, Stop, Target};
use crate::payload;
use crate::preset::{FunctionSpec, Preset};
use crate::scenario::Scenario;
use crate::stats;
use crate::{Client, LabError};

mod result;

pub use result::{
    buckets, unique_instances, Bucket, Deployed, Group, GroupStats, Host, Measured, PlotData,
    Point, RunResult, ScenarioResult, Server,
};

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
    /// The client link to emulate; `None`: the preset's `link`, if any.
    pub link: Option<crate::load::Link>,
}

/// A run in progress: what every scenario kind runs with.
pub(crate) struct Lab<'a> {
    pub(crate) api: Client,
    pub(crate) target: Target,
    pub(crate) preset: &'a Preset,
    pub(crate) stop: Stop,
    /// Whether the endpoint has the `/v1/` API (deploys, records).
    pub(crate) managed: bool,
    verbose: bool,
    profiles: Vec<virga_spec::pricing::Profile>,
    /// Function info (memory, vCPU, mode) by deployed name.
    info: BTreeMap<String, FunctionInfo>,
    deployed: Vec<Deployed>,
    /// `optional` functions the platform refused, with its reason.
    skipped: BTreeMap<String, String>,
}

/// Runs `preset` against `opts.endpoint`. Returns what was measured even
/// when stopped early (then `interrupted` is set).
pub async fn run(preset: &Preset, opts: &RunOptions, stop: Stop) -> Result<RunResult, LabError> {
    let started_at = now();
    let api = Client::new(&opts.endpoint).signed(opts.signer.clone());
    let link = match opts.link {
        Some(l) => Some(l),
        None => preset.link().map_err(LabError::Config)?,
    };
    let target = Target::parse(&opts.endpoint)?
        .signed(opts.signer.clone())
        .over(link);
    let managed = api.functions().await.is_ok();
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
        skipped: BTreeMap::new(),
    };
    if managed {
        for f in &preset.functions {
            match lab.deploy(f, &toml::Table::new(), &f.name).await {
                Err(e) if f.optional => {
                    if lab.verbose {
                        println!("note: {}: skipped: {e}", f.name);
                    }
                    lab.skipped.insert(f.name.clone(), e.to_string());
                }
                other => other?,
            }
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
            print!("{}", crate::table::text(&r.columns, &r.rows));
            for n in &r.notes {
                println!("  note: {n}");
            }
        }
        scenarios.push(r);
    }
    let mut host = Host::here();
    host.limits_enforced = opts.limits_enforced;
    let reference = crate::reference::join(
        &preset.references,
        &preset.reference_tables,
        &scenarios,
        &lab.profiles,
    );
    Ok(RunResult {
        preset: preset.name.clone(),
        description: preset.description.clone(),
        reproduces: preset.reproduces.clone(),
        endpoint: opts.endpoint.clone(),
        link: link.map(|l| l.label()),
        embedded: opts.embedded,
        quick: opts.quick,
        started_at,
        finished_at: now(),
        host,
        interrupted: stop.stopped(),
        managed,
        pricing_profiles: preset.pricing.profiles.clone(),
        functions: lab.deployed,
        skipped: lab.skipped,
        scenarios,
        reference,
    })
}

/// Sets `key` in a manifest: tables merge key by key (`{ model = { engine
/// = "ort" } }` keeps the model's path), anything else replaces.
fn merge(table: &mut toml::Table, key: &str, value: &toml::Value) {
    match (table.get_mut(key), value) {
        (Some(toml::Value::Table(have)), toml::Value::Table(set)) => {
            for (k, v) in set {
                merge(have, k, v);
            }
        }
        _ => {
            table.insert(key.to_string(), value.clone());
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
fn usd(v: f64) -> String {
    format!("{v:.6}")
}

impl Lab<'_> {
    /// Deploys `spec` (plus `extra` overrides) under `name`.
    pub(crate) async fn deploy(
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
            merge(&mut table, k, v);
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
            .deploy(name, &manifest, &base.display().to_string(), None)
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

    /// The pricing profiles of the run.
    pub(crate) fn profiles(&self) -> &[virga_spec::pricing::Profile] {
        &self.profiles
    }

    /// Why an `optional` function was not deployed, if it was not.
    pub(crate) fn skipped(&self, function: &str) -> Option<&str> {
        self.skipped.get(function).map(String::as_str)
    }

    /// The request `function` gets: the scenario's payload, else the
    /// function's own (`deployed` may be a sweep cell's name).
    pub(crate) fn job(
        &self,
        function: &str,
        payload: Option<&str>,
        rows: Option<u32>,
    ) -> Result<Job, LabError> {
        self.job_as(function, function, payload, rows)
    }

    pub(crate) fn job_as(
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

    /// Stops the function's idle instances and waits until none is left (but
    /// a snap-start template), so the next invocation is cold. Gives up quietly after a second (a
    /// service with `min_instances` re-provisions at once): the record says
    /// whether each invocation was cold, and the tables count those.
    pub(crate) async fn force_cold(&self, function: &str) -> Result<(), LabError> {
        if !self.managed {
            return Ok(());
        }
        for _ in 0..100 {
            self.api.stop_idle(function).await?;
            // A snap-start template and its spare serve no request: they stay.
            let left = self.api.instances(function).await?;
            if left.iter().all(|i| !i.role.serves()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// Joins samples with the function's records and computes the stats.
    pub(crate) async fn group(
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
                    .records(Some(function), None, Some(samples.len() + 64))
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
            let described = [
                ("memory_mb", json!(info.memory_mb)),
                ("vcpu", json!(info.vcpu)),
                ("max_concurrency", json!(info.max_concurrency)),
                ("runtime", json!(info.runtime)),
                ("mode", json!(info.mode)),
            ];
            for (k, v) in described {
                config.entry(k.to_string()).or_insert(v);
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
            plot: PlotData::of(&measured),
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
        // What the studies call model execution: the load a cold start
        // paid, then the invocation.
        let load_inference: Vec<f64> = servers
            .iter()
            .map(|s| s.init_ms.filter(|_| s.cold).unwrap_or(0.0) + s.duration_ms)
            .collect();
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
            instances: result::unique_instances(m),
            throughput_rps: (wall_s > 0.0).then(|| ok.len() as f64 / wall_s),
            peak_rps: peak_per_second(&ok),
            client: stats::summarize(&client),
            service: stats::summarize(&service),
            server_duration: stats::summarize(&duration),
            init: stats::summarize(&init),
            inference: stats::summarize(&inference),
            load_inference: stats::summarize(&load_inference),
            billed_mean_ms: (!billed.is_empty())
                .then(|| billed.iter().sum::<f64>() / billed.len() as f64),
            max_memory_mb: records.iter().filter_map(|r| r.max_memory_mb).max(),
            cost_per_1000: cost,
        }
    }

    /// "f: USD per 1000 requests: profile $x, ..." for tables without cost columns.
    pub(crate) fn cost_note(&self, g: &Group) -> Option<String> {
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

    pub(crate) fn cost_columns(&self) -> Vec<String> {
        self.profiles
            .iter()
            .map(|p| format!("USD/1000 {}", p.name))
            .collect()
    }

    pub(crate) fn cost_cells(&self, g: &Group) -> Vec<String> {
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
            kind: s.kind(),
            title: s.title(),
            notes: Vec::new(),
            columns: Vec::new(),
            rows: Vec::new(),
            groups: Vec::new(),
            series: Vec::new(),
        };
        s.run(self, &mut r).await?;
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
}

/// The most successful requests started within one whole second.
fn peak_per_second(ok: &[&Measured]) -> Option<f64> {
    let mut per_s: BTreeMap<u64, usize> = BTreeMap::new();
    for m in ok {
        *per_s.entry((m.sample.t_ms / 1000.0) as u64).or_default() += 1;
    }
    per_s.into_values().max().map(|n| n as f64)
}

/// A group's `config` from pairs.
pub(crate) fn cfg(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn overrides_merge_into_tables_and_replace_the_rest() {
        let mut m: toml::Table = toml::from_str(
            "memory_mb = 1024\n[model]\ntask = \"image-classification\"\nengine = \"tract\"\npath = \"m.onnx\"\n",
        )
        .unwrap();
        let set: toml::Table =
            toml::from_str("memory_mb = 512\nmodel = { engine = \"ort\", threads = 1 }\n").unwrap();
        for (k, v) in &set {
            merge(&mut m, k, v);
        }
        assert_eq!(m["memory_mb"].as_integer(), Some(512));
        assert_eq!(m["model"]["engine"].as_str(), Some("ort"));
        assert_eq!(m["model"]["path"].as_str(), Some("m.onnx"), "kept");
        assert_eq!(m["model"]["threads"].as_integer(), Some(1));
    }
}
