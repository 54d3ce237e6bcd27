//! Scenarios: what every kind shares (a title, the functions it targets, the
//! payload it sends) and one module per kind with that kind's settings, how
//! `--quick` shrinks them, how they are checked and how the kind runs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use virga_spec::record::Status;
use virga_spec::InvocationRecord;

use crate::preset::Preset;
use crate::run::{Lab, ScenarioResult};
use crate::LabError;

mod burst;
mod cold_start;
mod compare;
mod keep_alive;
mod memory;
mod open_loop;
mod ramp;
mod sweep;
mod throughput;
mod trace;
mod train;
mod warm_latency;

pub use burst::Burst;
pub use cold_start::ColdStart;
pub use compare::Compare;
pub use keep_alive::KeepAlive;
pub use memory::Memory;
pub use open_loop::{Arrival, OpenLoop};
pub use ramp::{Ramp, Stage};
pub use sweep::Sweep;
pub use throughput::Throughput;
pub use trace::Trace;
pub use train::Train;
pub use warm_latency::WarmLatency;

/// One scenario of a preset. Every kind names the functions it targets
/// (deployed by the preset) and the payload it sends (or each function's own
/// `payload`); `kind` says what it does, with that kind's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    #[serde(default)]
    pub title: Option<String>,
    pub functions: Vec<String>,
    /// Warm-latency sends its own list (`payloads`) instead.
    #[serde(default)]
    pub payload: Option<String>,
    // Flattened, so a preset writes `kind = "..."` beside the common fields;
    // each kind's settings refuse fields they do not know.
    #[serde(flatten)]
    pub kind: ScenarioKind,
}

/// What a scenario does, with its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScenarioKind {
    ColdStart(ColdStart),
    WarmLatency(WarmLatency),
    Throughput(Throughput),
    Ramp(Ramp),
    KeepAlive(KeepAlive),
    Trace(Trace),
    Sweep(Sweep),
    Compare(Compare),
    OpenLoop(OpenLoop),
    Burst(Burst),
    Train(Train),
    Memory(Memory),
}

/// A scenario's kind without its settings: what results and reports carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    ColdStart,
    WarmLatency,
    Throughput,
    Ramp,
    KeepAlive,
    Trace,
    Sweep,
    Compare,
    OpenLoop,
    Burst,
    Train,
    Memory,
}

impl Kind {
    /// The name presets and results use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ColdStart => "cold-start",
            Kind::WarmLatency => "warm-latency",
            Kind::Throughput => "throughput",
            Kind::Ramp => "ramp",
            Kind::KeepAlive => "keep-alive",
            Kind::Trace => "trace",
            Kind::Sweep => "sweep",
            Kind::Compare => "compare",
            Kind::OpenLoop => "open-loop",
            Kind::Burst => "burst",
            Kind::Train => "train",
            Kind::Memory => "memory",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ScenarioKind {
    pub fn kind(&self) -> Kind {
        match self {
            ScenarioKind::ColdStart(_) => Kind::ColdStart,
            ScenarioKind::WarmLatency(_) => Kind::WarmLatency,
            ScenarioKind::Throughput(_) => Kind::Throughput,
            ScenarioKind::Ramp(_) => Kind::Ramp,
            ScenarioKind::KeepAlive(_) => Kind::KeepAlive,
            ScenarioKind::Trace(_) => Kind::Trace,
            ScenarioKind::Sweep(_) => Kind::Sweep,
            ScenarioKind::Compare(_) => Kind::Compare,
            ScenarioKind::OpenLoop(_) => Kind::OpenLoop,
            ScenarioKind::Burst(_) => Kind::Burst,
            ScenarioKind::Train(_) => Kind::Train,
            ScenarioKind::Memory(_) => Kind::Memory,
        }
    }
}

impl Scenario {
    pub fn kind(&self) -> Kind {
        self.kind.kind()
    }

    pub fn title(&self) -> String {
        self.title
            .clone()
            .unwrap_or_else(|| self.kind().as_str().to_string())
    }

    /// Shrinks the scenario to a smoke run of a few seconds (`--quick`).
    pub fn quick(&mut self) {
        match &mut self.kind {
            ScenarioKind::ColdStart(k) => k.quick(),
            ScenarioKind::WarmLatency(k) => k.quick(),
            ScenarioKind::Throughput(k) => k.quick(),
            ScenarioKind::Ramp(k) => k.quick(),
            ScenarioKind::KeepAlive(k) => k.quick(),
            ScenarioKind::Trace(k) => k.quick(),
            ScenarioKind::Sweep(k) => k.quick(),
            ScenarioKind::Compare(k) => k.quick(),
            ScenarioKind::OpenLoop(k) => k.quick(),
            ScenarioKind::Burst(k) => k.quick(),
            ScenarioKind::Train(k) => k.quick(),
            ScenarioKind::Memory(k) => k.quick(),
        }
    }

    /// Checks the kind's settings (the preset has checked names already).
    pub(crate) fn check(&self, preset: &Preset) -> Result<(), String> {
        match &self.kind {
            ScenarioKind::ColdStart(k) => k.check(),
            ScenarioKind::WarmLatency(k) => k.check(self.payload.as_deref()),
            ScenarioKind::Throughput(k) => k.check(),
            ScenarioKind::Ramp(k) => k.check(),
            ScenarioKind::KeepAlive(k) => k.check(),
            ScenarioKind::Trace(k) => k.check(),
            ScenarioKind::Sweep(k) => k.check(preset, &self.functions, self.payload.as_deref()),
            ScenarioKind::Compare(k) => k.check(),
            ScenarioKind::OpenLoop(k) => k.check(),
            ScenarioKind::Burst(k) => k.check(),
            ScenarioKind::Train(k) => k.check(),
            ScenarioKind::Memory(k) => k.check(),
        }
    }

    /// Runs the scenario, filling `r`'s table, groups and notes.
    pub(crate) async fn run(
        &self,
        lab: &mut Lab<'_>,
        r: &mut ScenarioResult,
    ) -> Result<(), LabError> {
        // Functions the platform could not deploy (`optional` ones) have
        // no rows; the scenario says so.
        let functions: Vec<String> = self
            .functions
            .iter()
            .filter(|f| match lab.skipped(f) {
                Some(why) => {
                    r.notes.push(format!("{f}: skipped: {why}"));
                    false
                }
                None => true,
            })
            .cloned()
            .collect();
        let (functions, payload) = (&functions[..], self.payload.as_deref());
        match &self.kind {
            ScenarioKind::ColdStart(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::WarmLatency(k) => k.run(lab, r, functions).await,
            ScenarioKind::Throughput(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Ramp(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::KeepAlive(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Trace(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Sweep(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Compare(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::OpenLoop(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Burst(k) => k.run(lab, r, functions, payload).await,
            ScenarioKind::Train(k) => k.run(lab, r, functions).await,
            ScenarioKind::Memory(k) => k.run(lab, r, functions, payload).await,
        }
    }
}

/// `n` invocations of `name` sent at once, each on its own task: `Event`
/// ones (a sample per acceptance, 202) or synchronous ones (a sample per
/// answer); every sample counts `n` users.
async fn at_once(
    api: &crate::Client,
    name: &str,
    body: bytes::Bytes,
    n: u32,
    t0: std::time::Instant,
    event: bool,
) -> Vec<crate::load::Sample> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (api, name, body) = (api.clone(), name.to_string(), body.clone());
            tokio::spawn(async move {
                let sent = t0.elapsed();
                let (status, error, request_id) = if event {
                    match api.invoke_async(&name, body).await {
                        Ok(id) => (202, None, Some(id)),
                        Err(e) => (e.status(), Some(e.to_string()), None),
                    }
                } else {
                    match api.invoke(&name, body).await {
                        Ok(a) => (a.status, a.function_error, a.request_id),
                        Err(e) => (e.status(), Some(e.to_string()), None),
                    }
                };
                let ms = (t0.elapsed() - sent).as_secs_f64() * 1000.0;
                vec![crate::load::Sample {
                    t_ms: sent.as_secs_f64() * 1000.0,
                    client_ms: ms,
                    service_ms: ms,
                    status,
                    error,
                    request_id,
                    users: n,
                }]
            })
        })
        .collect();
    crate::load::gather(tasks).await
}

/// Waits until every accepted asynchronous invocation in `samples` has a
/// final record (or `wait` passes), marks those whose final attempt failed
/// (or that have no record), and returns the final records by request id.
async fn settle(
    lab: &Lab<'_>,
    function: &str,
    samples: &mut [crate::load::Sample],
    wait: Duration,
) -> Result<BTreeMap<String, InvocationRecord>, LabError> {
    let deadline = std::time::Instant::now() + wait;
    let ids: Vec<String> = samples
        .iter()
        .filter_map(|s| s.request_id.clone())
        .collect();
    let mut last: BTreeMap<String, InvocationRecord> = BTreeMap::new();
    loop {
        let records = lab
            .api
            .records(Some(function), None, Some(4 * samples.len() + 64))
            .await?;
        last.clear();
        for rec in records {
            // Oldest first: the last one seen is the final attempt.
            last.insert(rec.request_id.clone(), rec);
        }
        let settled = ids
            .iter()
            .all(|id| last.get(id).is_some_and(|r| r.status != Status::Throttled));
        if settled || std::time::Instant::now() >= deadline || lab.stop.stopped() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in samples.iter_mut() {
        let Some(id) = &s.request_id else { continue };
        match last.get(id) {
            Some(r) if r.status == Status::Success => {}
            Some(r) => {
                s.error = Some(
                    r.error_type
                        .clone()
                        .unwrap_or_else(|| r.status.as_str().into()),
                );
            }
            None => s.error = Some(format!("no record within {} s", wait.as_secs_f64())),
        }
    }
    Ok(last)
}

/// A grid cell's deployed name (`f-m512-c10`) and its manifest overrides.
fn cell(f: &str, memory_mb: Option<u32>, max_concurrency: Option<u32>) -> (String, toml::Table) {
    let mut extra = toml::Table::new();
    let mut name = f.to_string();
    if let Some(m) = memory_mb {
        extra.insert("memory_mb".into(), toml::Value::Integer(m.into()));
        name.push_str(&format!("-m{m}"));
    }
    if let Some(c) = max_concurrency {
        extra.insert("max_concurrency".into(), toml::Value::Integer(c.into()));
        name.push_str(&format!("-c{c}"));
    }
    (name, extra)
}

/// `v` is positive and finite, or an error naming `what`.
fn positive(what: &str, v: f64) -> Result<(), String> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        Err(format!("`{what}` must be > 0 (got {v})"))
    }
}

/// The longest think time a closed-loop user may take: a user pausing
/// longer between requests is better described as an open loop's rate.
const MAX_THINK_MS: f64 = 60_000.0;

/// `think_ms` is a finite wait in `0..=MAX_THINK_MS`.
fn think(v: f64) -> Result<(), String> {
    if (0.0..=MAX_THINK_MS).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "`think_ms` must be between 0 and {MAX_THINK_MS} (got {v}); for paced arrivals beyond that use `open-loop`"
        ))
    }
}

fn cap<T: Copy + PartialOrd>(v: &mut T, max: T) {
    if *v > max {
        *v = max;
    }
}

fn one() -> f64 {
    1.0
}

fn default_seed() -> u64 {
    1998
}

/// The column names of a table.
fn columns(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
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
