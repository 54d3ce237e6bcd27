//! Experiment presets (`experiments/*.toml`): which functions to deploy, which
//! payloads to send, which scenarios to run. Parsed and checked completely
//! before anything runs, so a typo costs a second, not a half-finished run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LabError;

/// A whole experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The source study it reproduces, if any (a file name in the seeds index).
    #[serde(default)]
    pub reproduces: Option<String>,
    #[serde(default)]
    pub functions: Vec<FunctionSpec>,
    #[serde(default)]
    pub payloads: BTreeMap<String, PayloadSpec>,
    #[serde(default)]
    pub pricing: PricingSpec,
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// Directory of the preset file: manifests and files resolve against it.
    #[serde(skip)]
    pub dir: PathBuf,
}

/// A function to deploy: a manifest file plus overrides of its top-level keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// The name it is deployed under (the manifest's own name is replaced).
    pub name: String,
    /// Manifest path, relative to the preset file.
    pub manifest: PathBuf,
    /// Top-level manifest keys to override, e.g. `{ memory_mb = 512 }`.
    #[serde(default)]
    pub set: toml::Table,
    /// The payload scenarios send it when they name none.
    #[serde(default)]
    pub payload: Option<String>,
}

/// How requests are priced in the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingSpec {
    /// Built-in profile names (`virga cost --help` lists them).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
}

impl Default for PricingSpec {
    fn default() -> Self {
        PricingSpec {
            profiles: default_profiles(),
        }
    }
}

fn default_profiles() -> Vec<String> {
    vec!["lambda-x86".into()]
}

/// A request body, described rather than pasted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PayloadSpec {
    /// A literal JSON document.
    Json { value: String },
    /// `{"image": base64 PNG, "top_k": k}` with a seeded noise image of about
    /// `bytes` bytes (noise does not compress, so the size is what is asked).
    Image {
        bytes: usize,
        #[serde(default = "default_top_k")]
        top_k: usize,
    },
    /// `{"instances": rows x features}` of seeded values in `[lo, hi)`.
    Rows {
        rows: usize,
        features: usize,
        #[serde(default)]
        lo: f64,
        #[serde(default = "one")]
        hi: f64,
    },
    /// `{"inputs": [...]}` for text-embedding models.
    Texts { texts: Vec<String> },
    /// A file's bytes, sent as they are (path relative to the preset).
    File { path: PathBuf },
}

fn default_top_k() -> usize {
    5
}
fn one() -> f64 {
    1.0
}

/// One ramp stage: move to `users` over `ramp_s`, then hold for `hold_s`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub users: u32,
    #[serde(default)]
    pub ramp_s: f64,
    #[serde(default)]
    pub hold_s: f64,
}

/// Arrival process of an open-loop scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    Constant,
    Poisson,
}

/// One scenario. Every kind names the functions it targets (deployed by the
/// preset) and the payload it sends (or each function's own `payload`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Scenario {
    /// `repetitions` forced cold invocations per function (idle instances are
    /// stopped before each), then `warm` warm ones for contrast.
    ColdStart {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        repetitions: u32,
        #[serde(default)]
        warm: u32,
    },
    /// Sequential warm invocations per payload (after one warm-up).
    WarmLatency {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        payloads: Vec<String>,
        requests: u32,
    },
    /// Closed-loop users for a fixed time, per user count and function.
    Throughput {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        users: Vec<u32>,
        duration_s: f64,
        #[serde(default)]
        warmup_s: f64,
    },
    /// Users over time through stages; a time series per `bucket_s`.
    Ramp {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        stages: Vec<Stage>,
        #[serde(default = "one")]
        bucket_s: f64,
        /// Think time between a user's requests.
        #[serde(default)]
        think_ms: f64,
    },
    /// Single requests after growing idle gaps (in units of `unit_s`
    /// seconds); the function's keep-alive is set to `keep_alive_units`.
    KeepAlive {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        gaps: Vec<f64>,
        unit_s: f64,
        keep_alive_units: f64,
    },
    /// Replay of per-interval arrival counts (or an Azure-Functions-style
    /// per-minute CSV row), arrivals uniformly random within each interval.
    Trace {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        #[serde(default)]
        counts: Vec<u32>,
        #[serde(default)]
        csv: Option<PathBuf>,
        #[serde(default)]
        csv_row: usize,
        /// The trace's interval, in trace seconds (60 for per-minute counts).
        interval_s: f64,
        /// Wall seconds per trace second (0.1: a minute replays in 6 s).
        #[serde(default = "one")]
        time_scale: f64,
        #[serde(default = "default_seed")]
        seed: u64,
    },
    /// A grid: each cell redeploys the function with `memory_mb`,
    /// `max_concurrency` and a payload of `batch_size` rows, then sends
    /// `cold` forced-cold and `requests - cold` warm invocations from `users`.
    Sweep {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        #[serde(default)]
        memory_mb: Vec<u32>,
        #[serde(default)]
        max_concurrency: Vec<u32>,
        /// Rows per request (the payload must be of kind `rows`).
        #[serde(default)]
        batch_size: Vec<u32>,
        requests: u32,
        #[serde(default)]
        cold: u32,
        #[serde(default = "one_u32")]
        users: u32,
    },
    /// The same closed-loop workload against several deployments (function,
    /// service, job) of one model.
    Compare {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        users: u32,
        duration_s: f64,
        #[serde(default)]
        warmup_s: f64,
    },
    /// Arrivals at a fixed rate regardless of responses; latency counted from
    /// each request's intended start (corrected for coordinated omission).
    OpenLoop {
        #[serde(default)]
        title: Option<String>,
        functions: Vec<String>,
        #[serde(default)]
        payload: Option<String>,
        rate: f64,
        duration_s: f64,
        #[serde(default = "constant")]
        arrival: Arrival,
        #[serde(default = "default_connections")]
        connections: u32,
        #[serde(default = "default_seed")]
        seed: u64,
    },
}

fn default_seed() -> u64 {
    1998
}
fn one_u32() -> u32 {
    1
}
fn constant() -> Arrival {
    Arrival::Constant
}
fn default_connections() -> u32 {
    16
}

impl Scenario {
    pub fn kind(&self) -> &'static str {
        match self {
            Scenario::ColdStart { .. } => "cold-start",
            Scenario::WarmLatency { .. } => "warm-latency",
            Scenario::Throughput { .. } => "throughput",
            Scenario::Ramp { .. } => "ramp",
            Scenario::KeepAlive { .. } => "keep-alive",
            Scenario::Trace { .. } => "trace",
            Scenario::Sweep { .. } => "sweep",
            Scenario::Compare { .. } => "compare",
            Scenario::OpenLoop { .. } => "open-loop",
        }
    }

    pub fn title(&self) -> String {
        let t = match self {
            Scenario::ColdStart { title, .. }
            | Scenario::WarmLatency { title, .. }
            | Scenario::Throughput { title, .. }
            | Scenario::Ramp { title, .. }
            | Scenario::KeepAlive { title, .. }
            | Scenario::Trace { title, .. }
            | Scenario::Sweep { title, .. }
            | Scenario::Compare { title, .. }
            | Scenario::OpenLoop { title, .. } => title.clone(),
        };
        t.unwrap_or_else(|| self.kind().to_string())
    }

    pub fn functions(&self) -> &[String] {
        match self {
            Scenario::ColdStart { functions, .. }
            | Scenario::WarmLatency { functions, .. }
            | Scenario::Throughput { functions, .. }
            | Scenario::Ramp { functions, .. }
            | Scenario::KeepAlive { functions, .. }
            | Scenario::Trace { functions, .. }
            | Scenario::Sweep { functions, .. }
            | Scenario::Compare { functions, .. }
            | Scenario::OpenLoop { functions, .. } => functions,
        }
    }

    /// The scenario's own payload, if it names one (warm-latency names a list).
    pub fn payload(&self) -> Option<&str> {
        match self {
            Scenario::WarmLatency { .. } => None,
            Scenario::ColdStart { payload, .. }
            | Scenario::Throughput { payload, .. }
            | Scenario::Ramp { payload, .. }
            | Scenario::KeepAlive { payload, .. }
            | Scenario::Trace { payload, .. }
            | Scenario::Sweep { payload, .. }
            | Scenario::Compare { payload, .. }
            | Scenario::OpenLoop { payload, .. } => payload.as_deref(),
        }
    }

    /// Shrinks the scenario to a smoke run of a few seconds (`--quick`).
    pub fn quick(&mut self) {
        fn cap<T: Copy + PartialOrd>(v: &mut T, max: T) {
            if *v > max {
                *v = max;
            }
        }
        fn first<T>(v: &mut Vec<T>, n: usize) {
            v.truncate(n);
        }
        match self {
            Scenario::ColdStart {
                repetitions, warm, ..
            } => {
                cap(repetitions, 2);
                cap(warm, 2);
            }
            Scenario::WarmLatency { requests, .. } => cap(requests, 3),
            Scenario::Throughput {
                users,
                duration_s,
                warmup_s,
                ..
            } => {
                first(users, 2);
                for u in users.iter_mut() {
                    cap(u, 4);
                }
                cap(duration_s, 1.0);
                cap(warmup_s, 0.2);
            }
            Scenario::Ramp {
                stages, bucket_s, ..
            } => {
                first(stages, 3);
                for s in stages.iter_mut() {
                    cap(&mut s.users, 3);
                    cap(&mut s.ramp_s, 0.5);
                    cap(&mut s.hold_s, 0.5);
                }
                cap(bucket_s, 0.25);
            }
            Scenario::KeepAlive {
                gaps,
                unit_s,
                keep_alive_units,
                ..
            } => {
                first(gaps, 3);
                // Keep the shape (which gaps exceed keep-alive), shrink time.
                let longest = gaps.iter().cloned().fold(*keep_alive_units, f64::max);
                let budget = 2.0;
                if longest * *unit_s > budget {
                    *unit_s = budget / longest;
                }
            }
            Scenario::Trace {
                counts,
                interval_s,
                time_scale,
                csv,
                ..
            } => {
                if csv.is_none() {
                    first(counts, 2);
                    for c in counts.iter_mut() {
                        cap(c, 3);
                    }
                }
                // Two intervals of at most one wall second each.
                if *interval_s * *time_scale > 1.0 {
                    *time_scale = 1.0 / *interval_s;
                }
            }
            Scenario::Sweep {
                memory_mb,
                max_concurrency,
                batch_size,
                requests,
                cold,
                users,
                ..
            } => {
                first(memory_mb, 2);
                first(max_concurrency, 1);
                first(batch_size, 1);
                cap(requests, 3);
                cap(cold, 1);
                cap(users, 2);
            }
            Scenario::Compare {
                users,
                duration_s,
                warmup_s,
                ..
            } => {
                cap(users, 4);
                cap(duration_s, 1.0);
                cap(warmup_s, 0.2);
            }
            Scenario::OpenLoop {
                rate,
                duration_s,
                connections,
                ..
            } => {
                cap(rate, 20.0);
                cap(duration_s, 1.0);
                cap(connections, 4);
            }
        }
    }
}

impl Preset {
    /// Reads and checks a preset file.
    pub fn load(path: &Path) -> Result<Preset, LabError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| LabError::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut p = Preset::parse(&text, &path.display().to_string())?;
        p.dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        p.check_files()?;
        Ok(p)
    }

    /// Parses and validates preset text (`source` names it in errors).
    pub fn parse(text: &str, source: &str) -> Result<Preset, LabError> {
        // toml's messages name the line and, for an unknown scenario kind,
        // list the kinds.
        let p: Preset = toml::from_str(text)
            .map_err(|e| LabError::Config(format!("{source}: {}", e.to_string().trim_end())))?;
        p.validate()
            .map_err(|m| LabError::Config(format!("{source}: {m}")))?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` must not be empty".into());
        }
        if self.scenarios.is_empty() {
            return Err("no [[scenarios]]: add at least one".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &self.functions {
            if !names.insert(f.name.as_str()) {
                return Err(format!("function {:?} is declared twice", f.name));
            }
            if f.set.contains_key("name") {
                return Err(format!(
                    "function {:?}: `set` may not change the name",
                    f.name
                ));
            }
        }
        for p in &self.pricing.profiles {
            virga_spec::pricing::Profile::built_in(p)
                .map_err(|e| format!("[pricing] profiles: {e}"))?;
        }
        for (name, payload) in &self.payloads {
            match payload {
                PayloadSpec::Image { bytes, .. } if *bytes < 100 || *bytes > 4_000_000 => {
                    return Err(format!(
                        "payload {name:?}: image of {bytes} bytes: use 100..=4000000 (the Invoke API takes 6 MB after base64)"
                    ))
                }
                PayloadSpec::Rows { rows, features, .. } if *rows == 0 || *features == 0 => {
                    return Err(format!("payload {name:?}: rows and features must be > 0"))
                }
                PayloadSpec::Json { value } => {
                    serde_json::from_str::<serde_json::Value>(value)
                        .map_err(|e| format!("payload {name:?}: not JSON: {e}"))?;
                }
                _ => {}
            }
        }
        for (i, s) in self.scenarios.iter().enumerate() {
            let at = format!("scenario {} ({})", i + 1, s.kind());
            if s.functions().is_empty() {
                return Err(format!("{at}: `functions` is empty"));
            }
            for f in s.functions() {
                if !names.contains(f.as_str()) {
                    return Err(format!(
                        "{at}: unknown function {f:?}: declare it in [[functions]] (declared: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let mut used: Vec<&str> = Vec::new();
            if let Scenario::WarmLatency { payloads, .. } = s {
                used.extend(payloads.iter().map(String::as_str));
            } else {
                for f in s.functions() {
                    used.push(self.payload_for(s.payload(), f).ok_or_else(|| {
                        format!("{at}: no payload for {f:?}: give the scenario a `payload` or the function one")
                    })?);
                }
            }
            for p in used {
                if !self.payloads.contains_key(p) {
                    return Err(format!(
                        "{at}: unknown payload {p:?}: declare it under [payloads] (declared: {})",
                        self.payloads.keys().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            s.validate_numbers(self).map_err(|m| format!("{at}: {m}"))?;
        }
        Ok(())
    }

    fn check_files(&self) -> Result<(), LabError> {
        for f in &self.functions {
            let path = self.dir.join(&f.manifest);
            if !path.is_file() {
                return Err(LabError::Config(format!(
                    "function {:?}: manifest {} does not exist",
                    f.name,
                    path.display()
                )));
            }
        }
        for (name, p) in &self.payloads {
            if let PayloadSpec::File { path } = p {
                if !self.dir.join(path).is_file() {
                    return Err(LabError::Config(format!(
                        "payload {name:?}: file {} does not exist",
                        self.dir.join(path).display()
                    )));
                }
            }
        }
        for s in &self.scenarios {
            if let Scenario::Trace { csv: Some(c), .. } = s {
                if !self.dir.join(c).is_file() {
                    return Err(LabError::Config(format!(
                        "trace csv {} does not exist",
                        self.dir.join(c).display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The payload a scenario sends `function`: its own, else the function's.
    pub fn payload_for<'a>(&'a self, scenario: Option<&'a str>, function: &str) -> Option<&'a str> {
        scenario.or_else(|| self.function(function).and_then(|f| f.payload.as_deref()))
    }

    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Shrinks every scenario to a smoke run.
    pub fn quick(&mut self) {
        for s in &mut self.scenarios {
            s.quick();
        }
    }
}

impl Scenario {
    fn validate_numbers(&self, preset: &Preset) -> Result<(), String> {
        let positive = |what: &str, v: f64| {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(format!("`{what}` must be > 0 (got {v})"))
            }
        };
        match self {
            Scenario::ColdStart { repetitions, .. } => {
                positive("repetitions", f64::from(*repetitions))
            }
            Scenario::WarmLatency {
                requests, payloads, ..
            } => {
                if payloads.is_empty() {
                    return Err("`payloads` is empty".into());
                }
                positive("requests", f64::from(*requests))
            }
            Scenario::Throughput {
                users, duration_s, ..
            } => {
                if users.is_empty() || users.contains(&0) {
                    return Err("`users` must list user counts > 0".into());
                }
                positive("duration_s", *duration_s)
            }
            Scenario::Ramp {
                stages, bucket_s, ..
            } => {
                if stages.is_empty() {
                    return Err("`stages` is empty".into());
                }
                if stages.iter().all(|s| s.ramp_s + s.hold_s <= 0.0) {
                    return Err("every stage lasts 0 s: give `ramp_s` or `hold_s`".into());
                }
                positive("bucket_s", *bucket_s)
            }
            Scenario::KeepAlive {
                gaps,
                unit_s,
                keep_alive_units,
                ..
            } => {
                if gaps.is_empty() || gaps.iter().any(|g| *g < 0.0) {
                    return Err("`gaps` must list idle gaps >= 0".into());
                }
                positive("unit_s", *unit_s)?;
                positive("keep_alive_units", *keep_alive_units)
            }
            Scenario::Trace {
                counts,
                csv,
                interval_s,
                time_scale,
                ..
            } => {
                match (counts.is_empty(), csv.is_some()) {
                    (true, false) => return Err("give `counts` or `csv`".into()),
                    (false, true) => return Err("give `counts` or `csv`, not both".into()),
                    _ => {}
                }
                positive("interval_s", *interval_s)?;
                positive("time_scale", *time_scale)
            }
            Scenario::Sweep {
                memory_mb,
                max_concurrency,
                batch_size,
                requests,
                cold,
                users,
                payload,
                functions,
                ..
            } => {
                if memory_mb.is_empty() && max_concurrency.is_empty() && batch_size.is_empty() {
                    return Err("bad grid: give at least one of `memory_mb`, `max_concurrency`, `batch_size`".into());
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
                    let p = preset
                        .payload_for(payload.as_deref(), f)
                        .unwrap_or_default();
                    if !batch_size.is_empty()
                        && !matches!(preset.payloads.get(p), Some(PayloadSpec::Rows { .. }))
                    {
                        return Err(format!("bad grid: `batch_size` needs a payload of kind \"rows\" ({p:?} is not)"));
                    }
                }
                if cold > requests {
                    return Err(format!("`cold` ({cold}) exceeds `requests` ({requests})"));
                }
                positive("requests", f64::from(*requests))?;
                positive("users", f64::from(*users))
            }
            Scenario::Compare {
                users, duration_s, ..
            } => {
                positive("users", f64::from(*users))?;
                positive("duration_s", *duration_s)
            }
            Scenario::OpenLoop {
                rate,
                duration_s,
                connections,
                ..
            } => {
                positive("rate", *rate)?;
                positive("duration_s", *duration_s)?;
                positive("connections", f64::from(*connections))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
[[functions]]
name = "iris"
manifest = "fn.toml"
set = { memory_mb = 512 }
[payloads.rows]
kind = "rows"
rows = 2
features = 4
[[scenarios]]
kind = "throughput"
functions = ["iris"]
payload = "rows"
users = [1, 8]
duration_s = 5
"#;

    fn err(text: &str) -> String {
        Preset::parse(text, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn parses_a_good_preset() {
        let p = Preset::parse(OK, "p.toml").unwrap();
        assert_eq!(p.scenarios[0].kind(), "throughput");
        assert_eq!(p.functions[0].set["memory_mb"].as_integer(), Some(512));
    }

    #[test]
    fn unknown_scenario_kind_lists_the_kinds() {
        let e = err(&OK.replace("\"throughput\"", "\"thruput\""));
        assert!(e.contains("p.toml"), "{e}");
        assert!(e.contains("thruput") && e.contains("open-loop"), "{e}");
    }

    #[test]
    fn unknown_function_and_payload_are_named() {
        let e = err(&OK.replace("functions = [\"iris\"]", "functions = [\"ghost\"]"));
        assert!(
            e.contains("unknown function \"ghost\"") && e.contains("iris"),
            "{e}"
        );
        let e = err(&OK.replace("payload = \"rows\"", "payload = \"nope\""));
        assert!(e.contains("unknown payload \"nope\""), "{e}");
        let e = err(&OK.replace("payload = \"rows\"", ""));
        assert!(e.contains("no payload for \"iris\""), "{e}");
        // A function's own payload serves scenarios that name none.
        let own = OK.replace("payload = \"rows\"", "").replace(
            "set = { memory_mb = 512 }",
            "set = { memory_mb = 512 }\npayload = \"rows\"",
        );
        Preset::parse(&own, "p.toml").unwrap();
    }

    #[test]
    fn bad_grids_are_refused() {
        let sweep = |grid: &str| {
            format!(
                "{}\n[[scenarios]]\nkind = \"sweep\"\nfunctions = [\"iris\"]\npayload = \"rows\"\nrequests = 3\n{grid}\n",
                OK
            )
        };
        assert!(err(&sweep("")).contains("bad grid"));
        assert!(err(&sweep("memory_mb = [64]")).contains("out of range"));
        assert!(err(&sweep("max_concurrency = [0]")).contains("bad grid"));
        assert!(err(&sweep("memory_mb = [512]\ncold = 4")).contains("exceeds"));
    }

    #[test]
    fn unknown_fields_and_bad_numbers_are_refused() {
        assert!(err(&OK.replace("duration_s = 5", "duration_s = 5\nspeed = 1")).contains("speed"));
        assert!(err(&OK.replace("duration_s = 5", "duration_s = 0")).contains("duration_s"));
        assert!(err(&OK.replace("users = [1, 8]", "users = []")).contains("users"));
        assert!(err("name = \"x\"").contains("no [[scenarios]]"));
        assert!(err(&format!("{OK}\n[pricing]\nprofiles = [\"heroku\"]")).contains("heroku"));
    }

    #[test]
    fn quick_shrinks_every_kind() {
        let mut s = Scenario::Throughput {
            title: None,
            functions: vec!["f".into()],
            payload: Some("p".into()),
            users: vec![50, 100, 200],
            duration_s: 60.0,
            warmup_s: 10.0,
        };
        s.quick();
        match s {
            Scenario::Throughput {
                users, duration_s, ..
            } => {
                assert_eq!(users, vec![4, 4]);
                assert!(duration_s <= 1.0);
            }
            _ => unreachable!(),
        }
        let mut k = Scenario::KeepAlive {
            title: None,
            functions: vec!["f".into()],
            payload: Some("p".into()),
            gaps: vec![0.0, 6.0, 16.0, 31.0, 61.0],
            unit_s: 1.0,
            keep_alive_units: 15.0,
        };
        k.quick();
        match k {
            Scenario::KeepAlive {
                gaps,
                unit_s,
                keep_alive_units,
                ..
            } => {
                assert_eq!(gaps.len(), 3);
                // 16 units still exceed the 15-unit keep-alive; time shrinks.
                assert!(16.0 * unit_s <= 2.0 + 1e-9 && keep_alive_units == 15.0);
            }
            _ => unreachable!(),
        }
    }
}
