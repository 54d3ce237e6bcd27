//! The scheduler: per-function instance pools, cold starts, keep-alive,
//! provisioned instances and the run of one invocation from grant to record.
//!
//! Decisions are made by the pure [`pool::Pool`]; this module carries them
//! out with real instances. It knows nothing of HTTP.

pub mod autoscale;
pub mod batch;
pub mod budget;
mod lease;
pub mod pool;
pub mod service;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tracing::Instrument;
use virga_spec::{
    billed_ms, task_billed_ms, InvocationRecord, Manifest, ManifestError, Mode, Runtime, Status,
    Trigger, BUILTIN_RUNTIME,
};

use crate::instance::{Instance, Job, LaunchSpec, Phase, Reply, RunResult};
use crate::logs::LogRing;
use crate::meter::{report_line, Meter};
use crate::sandbox::{resolve_program, Cgroups, Limits, SandboxError, SpawnSpec};
use crate::store::{StoreError, StoredFunction};
use autoscale::{AutoscaleConfig, Autoscaler};
use batch::BatchPolicy;
use budget::{MemoryBudget, Reservation};
use lease::{Lease, Waiting};
use pool::{Acquire, Grant, Pool, PoolLimits};
use service::ServicePool;

/// Lambda's limit on the init phase.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a start waits for stopped idle instances to return their memory.
const MEMORY_WAIT: Duration = Duration::from_secs(3);
/// How often a request may be moved to a newer revision before it gives up.
const MAX_HOPS: u8 = 8;
/// Lines of log kept per function.
const LOG_LINES: usize = 2000;
const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";

/// Why an invocation was not run.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Function not found: {0}
    #[error("Function not found: {0}")]
    NotFound(String),
    /// Rate exceeded: all instances busy and the queue full
    #[error("Rate Exceeded: all {instances} instances of {function} are busy and {queued} requests are queued; raise max_concurrency or max_queue")]
    Throttled {
        function: String,
        instances: usize,
        queued: usize,
    },
    /// starting another instance would pass the host's memory budget
    #[error("Rate Exceeded: starting another instance of {function} ({need_mb} MB) would pass the host's memory budget ({used_mb} of {limit_mb} MB held by running instances) and no idle instance could be stopped; raise virga serve --max-memory-mb, lower memory_mb or max_concurrency")]
    NoMemory {
        function: String,
        need_mb: u64,
        used_mb: u64,
        limit_mb: u64,
    },
    /// the function was deleted while the request was queued (recorded)
    #[error("Function not found: {0} was deleted while the request waited for an instance")]
    Deleted(String),
    /// the platform is stopping
    #[error("the platform is shutting down and takes no new invocations; retry after it restarts")]
    ShuttingDown,
}

/// Why a deploy was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// the manifest is invalid
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// the manifest's program cannot be found
    #[error("{file}: field `command`: program {program:?} not found (looked in {looked}); give a path relative to the manifest or a program on PATH")]
    Program {
        file: String,
        program: String,
        looked: String,
    },
    /// the built-in runtime was asked for where the platform has none
    #[error("{file}: this platform was started without virga's built-in runtime ({name:?}, what `runtime = \"model\"` runs); start the platform with the `virga` binary")]
    NoBuiltinRuntime { file: String, name: &'static str },
    /// the model file of a model function is missing
    #[error("{file}: field `path`: no model at {path}; train one with `virga models train` or fetch them with `virga models pull`")]
    ModelMissing { file: String, path: String },
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How the platform starts its built-in runtime (`virga-worker` in a
/// manifest, and what `runtime = "model"` runs). The platform crate links no
/// engine: the binary that embeds it says how to run one, e.g. its own
/// executable with a subcommand.
#[derive(Debug, Clone)]
pub struct BuiltinRuntime {
    pub program: PathBuf,
    /// Arguments before the manifest's own (e.g. the subcommand).
    pub args: Vec<String>,
}

/// Host facts and seams the scheduler needs.
pub struct SchedulerConfig {
    /// Where bare program names are looked up (PATH).
    pub search_path: Vec<PathBuf>,
    /// The built-in runtime; `None` refuses functions that need it.
    pub builtin: Option<BuiltinRuntime>,
    pub host_cores: usize,
    pub cgroups: Option<Box<dyn Cgroups>>,
    /// Most memory (sum of `memory_mb`) running instances may hold at once.
    pub max_memory_mb: u64,
}

/// One synchronous invocation to run.
#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub function: String,
    pub payload: Bytes,
    pub trigger: Trigger,
    /// A stable id (an asynchronous event keeps one across retries); new when `None`.
    pub request_id: Option<String>,
    /// Time the event already waited before reaching the scheduler (async queue age).
    pub waited_ms: f64,
    /// A synchronous caller waits for the answer (false for deliveries of
    /// queued events, which have no caller to lose).
    pub has_caller: bool,
}

impl InvokeRequest {
    /// A fresh synchronous request.
    pub fn new(function: impl Into<String>, payload: Bytes, trigger: Trigger) -> Self {
        InvokeRequest {
            function: function.into(),
            payload,
            trigger,
            request_id: None,
            waited_ms: 0.0,
            has_caller: true,
        }
    }
}

/// What came back, with its Lambda-style log (the record goes to the meter).
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub body: Bytes,
    /// `Some(errorType)` when the function failed (HTTP 200 + `X-Amz-Function-Error`).
    pub function_error: Option<String>,
    /// START, the function's output, END and REPORT.
    pub log: String,
}

/// A deployed function's public description.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionInfo {
    pub name: String,
    pub version: String,
    pub deployed_at: String,
    pub runtime: String,
    /// `function`, `service` or `job`.
    pub mode: String,
    pub memory_mb: u32,
    pub vcpu: f64,
    /// Requests one instance serves at once.
    pub instance_concurrency: usize,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub keep_alive_ms: u64,
    pub min_instances: u32,
    pub max_queue: u32,
    pub instances: usize,
    pub busy: usize,
    pub queued: usize,
    pub limits_enforced: bool,
    pub manifest: Manifest,
    /// The manifest's directory: its relative paths are relative to it.
    pub base_dir: String,
}

/// One instance's public description.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub function: String,
    pub version: String,
    pub pid: u32,
    /// `starting`, `idle` or `busy`.
    pub state: &'static str,
    pub init_ms: Option<f64>,
    pub invocations: u64,
    pub started_at: String,
    pub limits_enforced: bool,
    pub max_memory_mb: Option<u32>,
}

/// A deployed revision of a function and its instances.
struct Function {
    manifest: Arc<Manifest>,
    base_dir: PathBuf,
    version: u64,
    deployed_at: String,
    spawn: SpawnSpec,
    /// Instances of a `function` or `job` (one request each).
    pool: Mutex<Pool<Arc<Instance>>>,
    /// Tasks of a `service` (several requests each).
    service: Mutex<ServicePool<Arc<Instance>>>,
    /// The queue of the batch dispatcher, with `[batching]`.
    batcher: Mutex<Option<mpsc::Sender<Pending>>>,
    instances: Mutex<HashMap<String, Arc<Instance>>>,
    wake: Notify,
    retired: AtomicBool,
    logs: Arc<LogRing>,
    arn: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Function {
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let idle = lock(&self.pool).drain();
        let idle_tasks = lock(&self.service).drain();
        for i in idle.into_iter().chain(idle_tasks) {
            i.kill();
        }
        // The dispatcher stops once its queue is empty and closed.
        drop(lock(&self.batcher).take());
        self.wake.notify_one();
    }

    fn mode(&self) -> Mode {
        self.manifest.mode
    }

    /// Asks the pool of this function's mode for an instance; `None` once
    /// the function is retired (checked under the pool's lock, so no request
    /// joins a pool after it was drained).
    fn acquire(&self) -> Option<Acquire<Arc<Instance>>> {
        match self.mode() {
            Mode::Service => {
                let mut pool = lock(&self.service);
                (!self.retired.load(Ordering::SeqCst)).then(|| pool.acquire())
            }
            Mode::Function | Mode::Job => {
                let mut pool = lock(&self.pool);
                (!self.retired.load(Ordering::SeqCst)).then(|| pool.acquire())
            }
        }
    }

    /// Returns a healthy instance to the pool, or lets a dead one go. A job's
    /// task always goes: it handled its one event.
    fn give_back(&self, inst: Arc<Instance>, healthy: bool) {
        let healthy = healthy && self.mode() != Mode::Job;
        if self.mode() == Mode::Service {
            let same = |i: &Arc<Instance>| Arc::ptr_eq(i, &inst);
            let mut pool = lock(&self.service);
            if healthy && !inst.is_dead() {
                if let Some(stop) = pool.release(same, Instant::now()) {
                    stop.kill();
                }
            } else {
                inst.kill();
                pool.remove(same);
            }
            return;
        }
        let mut pool = lock(&self.pool);
        if healthy && !inst.is_dead() && !self.retired.load(Ordering::SeqCst) {
            pool.release(inst, Instant::now());
        } else {
            inst.kill();
            pool.discard();
        }
        drop(pool);
        self.wake.notify_one();
    }

    /// A freshly started instance joins its pool, busy with its starter.
    fn started(&self, inst: &Arc<Instance>) {
        if self.mode() == Mode::Service {
            // Busy with its starter: never handed back to stop here.
            let _ = lock(&self.service).add(inst.clone(), Instant::now(), true);
        }
    }
}

pub struct Scheduler {
    config: SchedulerConfig,
    /// Bumped on every deploy and delete, so event sources can follow.
    changes: tokio::sync::watch::Sender<u64>,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    logs: Mutex<HashMap<String, Arc<LogRing>>>,
    meter: Meter,
    instance_seq: AtomicU64,
    budget: Arc<MemoryBudget>,
    /// Accepted requests not yet answered.
    in_flight: Arc<InFlight>,
    /// Set by [`Scheduler::stop_accepting`]: new requests are refused.
    closing: AtomicBool,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, meter: Meter) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            changes: tokio::sync::watch::channel(0).0,
            functions: RwLock::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            meter,
            instance_seq: AtomicU64::new(0),
            budget: MemoryBudget::new(config.max_memory_mb),
            config,
            in_flight: Arc::new(InFlight::default()),
            closing: AtomicBool::new(false),
        })
    }

    /// The host memory budget: (MB held by running instances, limit).
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.used_mb(), self.budget.limit_mb())
    }

    /// Accepted invocations not yet answered (queued, starting or running).
    pub fn in_flight(&self) -> usize {
        self.in_flight.count.load(Ordering::SeqCst)
    }

    /// Refuses new invocations from now on ([`InvokeError::ShuttingDown`]);
    /// those already accepted go on.
    pub fn stop_accepting(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until every accepted invocation was answered, at most `grace`;
    /// true when none is left.
    pub async fn drain(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        loop {
            let idle = self.in_flight.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// Notified on every deploy and delete.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// The deployed manifest of a function, with its version.
    pub fn manifest(&self, name: &str) -> Option<(Arc<Manifest>, u64)> {
        self.get(name).map(|f| (f.manifest.clone(), f.version))
    }

    /// Every deployed manifest, with its version.
    pub fn manifests(&self) -> Vec<(Arc<Manifest>, u64)> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|f| (f.manifest.clone(), f.version))
            .collect()
    }

    pub fn limits_enforced(&self) -> bool {
        self.config.cgroups.is_some()
    }

    fn get(&self, name: &str) -> Option<Arc<Function>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Deploys (or redeploys) a function from manifest text. `source` names the
    /// manifest in errors; `base_dir` is its directory. Deploying an unchanged
    /// manifest keeps the running revision and its warm instances.
    pub fn deploy(
        self: &Arc<Self>,
        manifest_text: &str,
        source: &str,
        base_dir: &Path,
    ) -> Result<FunctionInfo, DeployError> {
        let manifest = Manifest::parse(manifest_text, source)?;
        let (program, args) = self.program_of(&manifest, source, base_dir)?;
        if let Some(m) = &manifest.model {
            let path = base_dir.join(&m.path);
            if !path.is_file() {
                return Err(DeployError::ModelMissing {
                    file: source.to_string(),
                    path: path.display().to_string(),
                });
            }
        }
        let store = self.meter.store();
        let base = base_dir.display().to_string();
        let previous = store.function(&manifest.name)?;
        if let (Some(prev), Some(live)) = (&previous, self.get(&manifest.name)) {
            if prev.manifest == manifest_text
                && prev.base_dir == base
                && live.version == prev.version
            {
                return Ok(self.info(&live));
            }
        }
        let version = match &previous {
            // A restart reloading the same manifest keeps its version.
            Some(p) if p.manifest == manifest_text && p.base_dir == base => p.version,
            Some(p) => p.version + 1,
            None => 1,
        };
        let deployed_at = now_rfc3339();
        store.save_function(&StoredFunction {
            name: manifest.name.clone(),
            manifest: manifest_text.to_string(),
            base_dir: base,
            version,
            deployed_at: deployed_at.clone(),
        })?;

        let logs = lock(&self.logs)
            .entry(manifest.name.clone())
            .or_insert_with(|| Arc::new(LogRing::new(LOG_LINES)))
            .clone();
        let limits = Limits {
            memory_mb: manifest.memory_mb,
            vcpu: manifest.vcpu(self.config.host_cores),
        };
        let spawn = SpawnSpec {
            name: String::new(),
            program,
            args,
            cwd: base_dir.to_path_buf(),
            env: self.instance_env(&manifest, version, base_dir),
            limits,
        };
        let service = ServicePool::new(
            manifest.concurrency_per_instance(),
            manifest.min_instances as usize,
            manifest.max_instances() as usize,
            manifest.max_queue as usize,
        );
        let batching = manifest.batching.clone();
        let (batch_tx, batch_rx) = match &batching {
            Some(b) => {
                let (tx, rx) =
                    mpsc::channel((manifest.max_queue as usize + b.max_batch_size as usize).max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let pool_limits = PoolLimits {
            max_instances: match manifest.max_concurrency {
                0 => usize::MAX,
                n => n as usize,
            },
            max_queue: manifest.max_queue as usize,
            keep_alive: Duration::from_millis(manifest.keep_alive_ms),
            min_instances: manifest.min_instances as usize,
        };
        let function = Arc::new(Function {
            arn: format!(
                "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}",
                manifest.name
            ),
            manifest: Arc::new(manifest),
            base_dir: base_dir.to_path_buf(),
            version,
            deployed_at,
            spawn,
            pool: Mutex::new(Pool::new(pool_limits)),
            service: Mutex::new(service),
            batcher: Mutex::new(batch_tx),
            instances: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            retired: AtomicBool::new(false),
            logs,
        });
        let old = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(function.manifest.name.clone(), function.clone());
        if let Some(old) = old {
            old.retire();
        }
        tracing::info!(function = %function.manifest.name, version, "deployed");
        match function.mode() {
            Mode::Service => {
                tokio::spawn(self.clone().autoscale(function.clone()));
            }
            Mode::Function | Mode::Job => {
                tokio::spawn(self.clone().keep_alive(function.clone()));
            }
        }
        if let (Some(b), Some(rx)) = (batching, batch_rx) {
            let policy = BatchPolicy::new(
                b.max_batch_size as usize,
                Duration::from_millis(b.max_delay_ms),
            );
            tokio::spawn(self.clone().dispatch_batches(function.clone(), rx, policy));
        }
        self.changed();
        Ok(self.info(&function))
    }

    /// Removes a function; its busy instances finish their requests first.
    pub fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let removed = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.meter.store().delete_function(name)?;
        match removed {
            Some(f) => {
                f.retire();
                self.changed();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Redeploys every persisted function (after a restart).
    pub fn restore(self: &Arc<Self>) -> Result<usize, StoreError> {
        let stored = self.meter.store().functions()?;
        let mut n = 0;
        for f in stored {
            match self.deploy(&f.manifest, &f.name, Path::new(&f.base_dir)) {
                Ok(_) => n += 1,
                Err(e) => {
                    tracing::warn!(function = %f.name, error = %e, "could not restore function")
                }
            }
        }
        Ok(n)
    }

    /// Stops every instance of every function (platform shutdown) and waits
    /// (bounded) until they are gone.
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Function>> = self
            .functions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, f)| f)
            .collect();
        let mut dying = Vec::new();
        for f in all {
            f.retire();
            for inst in lock(&f.instances).values() {
                inst.kill();
                dying.push(inst.clone());
            }
        }
        let all_dead = async {
            for i in &dying {
                i.dead().await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), all_dead)
            .await
            .is_err()
        {
            tracing::warn!("some instances did not exit within 5 s of shutdown");
        }
    }

    /// Stops the idle instances of a function now (scale to zero); returns how many.
    pub fn stop_idle(&self, name: &str) -> Option<usize> {
        let f = self.get(name)?;
        if f.mode() == Mode::Service {
            let idle = lock(&f.service).stop_idle_above_minimum();
            for i in &idle {
                i.kill();
            }
            return Some(idle.len());
        }
        let idle = {
            let mut pool = lock(&f.pool);
            let keep = pool.limits().min_instances;
            let mut stopped = Vec::new();
            while pool.idle_count() > 0 && pool.idle_count() + pool.active_count() > keep {
                let Some(first) = pool.idle().next().map(|(i, _)| i.id.clone()) else {
                    break;
                };
                if let Some(i) = pool.remove_idle(|i| i.id == first) {
                    stopped.push(i);
                }
            }
            stopped
        };
        for i in &idle {
            i.kill();
        }
        Some(idle.len())
    }

    /// The current revision of every function.
    fn live_functions(&self) -> Vec<Arc<Function>> {
        self.functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn functions(&self) -> Vec<FunctionInfo> {
        let fs = self.live_functions();
        let mut out: Vec<FunctionInfo> = fs.iter().map(|f| self.info(f)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn function(&self, name: &str) -> Option<FunctionInfo> {
        self.get(name).map(|f| self.info(&f))
    }

    pub fn exists(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    fn info(&self, f: &Function) -> FunctionInfo {
        let (idle, busy, queued) = if f.mode() == Mode::Service {
            let mut pool = lock(&f.service);
            let busy = pool.busy() + pool.starting();
            (pool.running() - pool.busy(), busy, pool.queued())
        } else {
            let mut pool = lock(&f.pool);
            (pool.idle_count(), pool.active_count(), pool.queued())
        };
        let m = &f.manifest;
        FunctionInfo {
            name: m.name.clone(),
            version: f.version.to_string(),
            deployed_at: f.deployed_at.clone(),
            runtime: match m.runtime {
                Runtime::Command => "command".into(),
                Runtime::Model => "model".into(),
            },
            mode: m.mode.as_str().into(),
            memory_mb: m.memory_mb,
            vcpu: f.spawn.limits.vcpu,
            instance_concurrency: m.concurrency_per_instance(),
            timeout_ms: m.timeout_ms,
            max_concurrency: m.max_concurrency,
            keep_alive_ms: m.keep_alive_ms,
            min_instances: m.min_instances,
            max_queue: m.max_queue,
            instances: idle + busy,
            busy,
            queued,
            limits_enforced: self.limits_enforced(),
            manifest: Manifest::clone(m),
            base_dir: f.base_dir.display().to_string(),
        }
    }

    pub fn instances(&self, name: &str) -> Option<Vec<InstanceInfo>> {
        let f = self.get(name)?;
        let mut idle: Vec<String> = lock(&f.pool).idle().map(|(i, _)| i.id.clone()).collect();
        idle.extend(
            lock(&f.service)
                .tasks()
                .filter(|(_, is_idle)| *is_idle)
                .map(|(i, _)| i.id.clone()),
        );
        let mut out: Vec<InstanceInfo> = lock(&f.instances)
            .values()
            .map(|i| {
                let phase = i.phase();
                InstanceInfo {
                    id: i.id.clone(),
                    function: name.to_string(),
                    version: f.version.to_string(),
                    pid: i.pid,
                    state: match phase {
                        Phase::Starting => "starting",
                        _ if idle.contains(&i.id) => "idle",
                        _ => "busy",
                    },
                    init_ms: match phase {
                        Phase::Ready { init_ms } => Some(init_ms),
                        _ => None,
                    },
                    invocations: i.invocations.load(Ordering::Relaxed),
                    started_at: i
                        .started
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    limits_enforced: i.limits_enforced,
                    max_memory_mb: i.peak_memory_mb(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        Some(out)
    }

    pub fn logs(&self, name: &str, lines: usize) -> Option<Vec<String>> {
        lock(&self.logs).get(name).map(|r| r.tail(lines))
    }

    /// What an instance of `manifest` runs: a model function and a
    /// `command` naming [`BUILTIN_RUNTIME`] run the built-in runtime; any
    /// other program is found relative to the manifest or on PATH.
    fn program_of(
        &self,
        manifest: &Manifest,
        source: &str,
        base_dir: &Path,
    ) -> Result<(PathBuf, Vec<String>), DeployError> {
        let (name, rest) = match manifest.runtime {
            Runtime::Model => (BUILTIN_RUNTIME, &[][..]),
            Runtime::Command => (manifest.command[0].as_str(), &manifest.command[1..]),
        };
        if name == BUILTIN_RUNTIME {
            let builtin =
                self.config
                    .builtin
                    .as_ref()
                    .ok_or_else(|| DeployError::NoBuiltinRuntime {
                        file: source.to_string(),
                        name: BUILTIN_RUNTIME,
                    })?;
            let args = builtin.args.iter().chain(rest).cloned().collect();
            return Ok((builtin.program.clone(), args));
        }
        let program =
            resolve_program(name, base_dir, &self.config.search_path).ok_or_else(|| {
                DeployError::Program {
                    file: source.to_string(),
                    program: name.to_string(),
                    looked: if name.contains('/') {
                        base_dir.display().to_string()
                    } else {
                        "PATH".into()
                    },
                }
            })?;
        Ok((program, rest.to_vec()))
    }

    /// The standard Lambda environment of an instance, plus the manifest's `env`.
    fn instance_env(&self, m: &Manifest, version: u64, base_dir: &Path) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = ["HOME", "LANG", "TZ"]
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        let path = std::env::join_paths(&self.config.search_path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let date = chrono::Utc::now().format("%Y/%m/%d");
        env.extend(
            [
                ("PATH", path),
                ("AWS_LAMBDA_FUNCTION_NAME", m.name.clone()),
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", m.memory_mb.to_string()),
                ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
                (
                    "AWS_LAMBDA_LOG_GROUP_NAME",
                    format!("/aws/lambda/{}", m.name),
                ),
                ("AWS_LAMBDA_LOG_STREAM_NAME", format!("{date}/[{version}]")),
                ("AWS_REGION", REGION.to_string()),
                ("AWS_DEFAULT_REGION", REGION.to_string()),
                ("LAMBDA_TASK_ROOT", base_dir.display().to_string()),
                ("LAMBDA_RUNTIME_DIR", base_dir.display().to_string()),
                (
                    "_HANDLER",
                    match m.runtime {
                        Runtime::Model => "model".to_string(),
                        Runtime::Command => m.handler.clone().unwrap_or_default(),
                    },
                ),
                ("TZ", ":UTC".to_string()),
            ]
            .map(|(k, v)| (k.to_string(), v)),
        );
        if m.mode == Mode::Service {
            // As Lambda Managed Instances tell a runtime how many requests
            // it may take at once.
            env.push((
                "AWS_LAMBDA_MAX_CONCURRENCY".into(),
                m.concurrency_per_instance().to_string(),
            ));
        }
        if let Some(model) = &m.model {
            let vcpu = m.vcpu(self.config.host_cores);
            env.extend(
                [
                    (
                        "VIRGA_MODEL_PATH",
                        base_dir.join(&model.path).display().to_string(),
                    ),
                    ("VIRGA_MODEL_ENGINE", model.engine.clone()),
                    ("VIRGA_MODEL_TASK", model.task.clone()),
                    ("VIRGA_MODEL_MAX_BATCH", model.max_batch.to_string()),
                    (
                        "VIRGA_MODEL_THREADS",
                        model
                            .threads
                            .unwrap_or(vcpu.ceil().max(1.0) as u32)
                            .to_string(),
                    ),
                ]
                .map(|(k, v)| (k.to_string(), v)),
            );
        }
        env.extend(m.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// Starts an instance of `f` and waits for its initialisation. The
    /// instance holds `memory` until its process is gone.
    async fn start_instance(
        self: &Arc<Self>,
        f: &Arc<Function>,
        init_type: &str,
        memory: Reservation,
    ) -> Result<(Arc<Instance>, f64), Failure> {
        let seq = self.instance_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{:x}", f.manifest.name, f.version, seq);
        let mut spawn = f.spawn.clone();
        spawn.name = format!("{}-{}", id, std::process::id());
        spawn
            .env
            .push(("AWS_LAMBDA_INITIALIZATION_TYPE".into(), init_type.into()));
        if let Some((_, stream)) = spawn
            .env
            .iter_mut()
            .find(|(k, _)| k == "AWS_LAMBDA_LOG_STREAM_NAME")
        {
            stream.push_str(&id);
        }
        let inst = Instance::launch(
            LaunchSpec {
                id: id.clone(),
                spawn,
            },
            self.config.cgroups.as_deref(),
            f.logs.clone(),
        )
        .await
        .map_err(|e| match e {
            SandboxError::Spawn { .. } => {
                Failure::new(Status::Error, "Runtime.InvalidEntrypoint", e.to_string())
            }
            SandboxError::Cgroup(..) => {
                Failure::new(Status::Error, "Runtime.Unknown", e.to_string())
            }
        })?;
        lock(&f.instances).insert(id.clone(), inst.clone());
        // Forget the instance when it dies, wherever it is.
        let watch_f = f.clone();
        let watch_i = inst.clone();
        tokio::spawn(async move {
            watch_i.dead().await;
            drop(memory);
            lock(&watch_f.instances).remove(&watch_i.id);
            if lock(&watch_f.service)
                .remove(|i| Arc::ptr_eq(i, &watch_i))
                .is_some()
            {
                tracing::info!(instance = %watch_i.id, "task exited");
            }
            if lock(&watch_f.pool)
                .remove_idle(|i| Arc::ptr_eq(i, &watch_i))
                .is_some()
            {
                tracing::info!(instance = %watch_i.id, "idle instance exited");
                watch_f.wake.notify_one();
            }
        });
        // Should this wait be dropped, nothing would own the instance: stop it.
        let unclaimed = KillOnDrop(Some(inst.clone()));
        let ready = inst.ready(INIT_TIMEOUT).await;
        unclaimed.disarm();
        match ready {
            Ok(init_ms) => Ok((inst, init_ms)),
            Err(RunResult::Died(d)) => Err(Failure {
                init_ms: Some(inst.age_ms()),
                ..Failure::new(Status::Error, &d.error_type, d.message)
            }),
            Err(_) => Err(Failure {
                init_ms: Some(inst.age_ms()),
                ..Failure::new(
                    Status::Timeout,
                    "Sandbox.Timedout",
                    format!(
                        "Init timed out after {:.2} seconds",
                        INIT_TIMEOUT.as_secs_f64()
                    ),
                )
            }),
        }
    }

    /// Runs one invocation end to end and returns its answer.
    ///
    /// The invocation runs on a task of its own that holds its slot, so a
    /// caller that stops waiting (this future dropped) does not stop it: it
    /// runs to its end, is recorded with `caller_gone`, and its instance goes
    /// back to its pool. A request still queued when its caller leaves is
    /// taken out of the queue and recorded as `ClientClosed`.
    pub async fn invoke(self: &Arc<Self>, req: InvokeRequest) -> Result<Invocation, InvokeError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request_id: req
                .request_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            req,
            received_at: now_rfc3339(),
            arrived: Instant::now(),
            reply,
            hops: 0,
            _track: Track::new(&self.in_flight),
        };
        self.clone().submit(pending, None);
        // The pending request is dropped unanswered only when the runtime
        // stops under it.
        answer.await.unwrap_or(Err(InvokeError::ShuttingDown))
    }

    fn arn_of(&self, name: &str) -> String {
        format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
    }

    /// Routes a request to its function's current revision: into the batch
    /// dispatcher's queue, or onto a task of its own. `prev` is the revision
    /// it was queued on when a redeploy or delete moved it here.
    fn submit(self: Arc<Self>, mut p: Pending, prev: Option<Arc<Function>>) {
        if self.closing.load(Ordering::SeqCst) {
            p.answer(Err(InvokeError::ShuttingDown));
            return;
        }
        loop {
            p.hops += 1;
            let f = match self.get(&p.req.function) {
                Some(f) if p.hops <= MAX_HOPS => f,
                Some(_) => {
                    // Redeployed faster than it could be routed: give up.
                    p.answer(Err(InvokeError::ShuttingDown));
                    return;
                }
                None => {
                    let arn = self.arn_of(&p.req.function);
                    match prev {
                        // It was accepted: it leaves a record.
                        Some(old) => self.fail_queued(
                            &old,
                            p,
                            "ResourceNotFoundException",
                            InvokeError::Deleted(arn),
                        ),
                        None => p.answer(Err(InvokeError::NotFound(arn))),
                    }
                    return;
                }
            };
            let batcher = if f.manifest.batching.is_some() {
                lock(&f.batcher).clone()
            } else {
                None
            };
            let Some(batcher) = batcher else {
                tokio::spawn(self.run_pending(f, p));
                return;
            };
            match batcher.try_send(p) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    let e = self.throttle(&f, &back);
                    back.answer(Err(e));
                    return;
                }
                // Retired between the lookup and the send: look again.
                Err(mpsc::error::TrySendError::Closed(back)) => p = back,
            }
        }
    }

    /// Sends a request queued on a retired revision to the current one.
    fn resubmit(self: &Arc<Self>, old: &Arc<Function>, p: Pending) {
        self.clone().submit(p, Some(old.clone()));
    }

    /// One request on its own task: a slot, the run, the record, the answer.
    async fn run_pending(self: Arc<Self>, f: Arc<Function>, p: Pending) {
        let span = tracing::debug_span!(
            "invoke",
            function = %f.manifest.name,
            request_id = %p.request_id,
        );
        async move {
            let Some((lease, mut p)) = self.lease_for(&f, p).await else {
                return;
            };
            let queue_ms = p.req.waited_ms + ms(p.arrived.elapsed());
            let mut record = self.blank_record(&f, &p);
            record.queue_ms = queue_ms;
            f.logs.push(format!(
                "START RequestId: {} Version: {}",
                p.request_id, f.version
            ));
            let payload = std::mem::take(&mut p.req.payload);
            let run = self.execute(lease, &p.request_id, payload, None).await;
            run.fill(&mut record);
            record.caller_gone = p.caller_gone();
            let answer = self.conclude(&f, record, run.outcome, run.output);
            p.answer(Ok(answer));
        }
        .instrument(span)
        .await
    }

    /// Takes a slot for `p` in `f`'s pool, waiting in its queue if need be,
    /// and memory for a new instance. `None` when `p` was answered instead
    /// (throttled, its caller gone while queued) or moved to a newer revision.
    async fn lease_for(
        self: &Arc<Self>,
        f: &Arc<Function>,
        mut p: Pending,
    ) -> Option<(Lease, Pending)> {
        let lease = match f.acquire() {
            None => {
                self.resubmit(f, p);
                return None;
            }
            Some(Acquire::Warm(i)) => Lease::new(f.clone(), Grant::Warm(i)),
            Some(Acquire::Spawn) => Lease::new(f.clone(), Grant::Spawn),
            Some(Acquire::Throttle) => {
                let e = self.throttle(f, &p);
                p.answer(Err(e));
                return None;
            }
            Some(Acquire::Wait(rx)) => {
                let mut waiting = Waiting::new(f.clone(), rx);
                let granted = if p.req.has_caller {
                    tokio::select! {
                        g = waiting.granted() => Some(g),
                        () = p.reply.closed() => None,
                    }
                } else {
                    Some(waiting.granted().await)
                };
                match granted {
                    Some(Some(lease)) => lease,
                    // The pool stopped taking requests: redeployed or deleted.
                    Some(None) => {
                        drop(waiting);
                        self.resubmit(f, p);
                        return None;
                    }
                    None => {
                        drop(waiting);
                        self.fail_queued(f, p, "ClientClosed", InvokeError::ShuttingDown);
                        return None;
                    }
                }
            }
        };
        let mut lease = lease;
        if lease.instance().is_none() {
            match self.reserve_memory(f).await {
                Ok(r) => lease.memory = Some(r),
                Err(e) => {
                    drop(lease);
                    self.refuse(f, &p, &e);
                    p.answer(Err(e));
                    return None;
                }
            }
        }
        Some((lease, p))
    }

    /// Memory for one more instance of `f` within the host's budget: stops
    /// idle instances (least recently used first) to make room, and waits a
    /// little for them to exit; else refuses.
    async fn reserve_memory(self: &Arc<Self>, f: &Function) -> Result<Reservation, InvokeError> {
        let mb = u64::from(f.manifest.memory_mb);
        let deadline = Instant::now() + MEMORY_WAIT;
        loop {
            let freed = self.budget.freed();
            if let Some(r) = self.budget.try_reserve(mb) {
                return Ok(r);
            }
            let stopping = self.stop_lru_idle();
            if (!stopping && Instant::now() >= deadline)
                || tokio::time::timeout_at(deadline, freed).await.is_err()
            {
                return Err(InvokeError::NoMemory {
                    function: f.manifest.name.clone(),
                    need_mb: mb,
                    used_mb: self.budget.used_mb(),
                    limit_mb: self.budget.limit_mb(),
                });
            }
        }
    }

    /// Stops the least recently used idle instance of any function (never a
    /// provisioned one); false when there is none.
    fn stop_lru_idle(&self) -> bool {
        let fs = self.live_functions();
        let oldest = fs
            .iter()
            .filter(|f| f.mode() != Mode::Service)
            .filter_map(|f| {
                let pool = lock(&f.pool);
                let spare = pool.idle_count() + pool.active_count() > pool.limits().min_instances;
                let (i, t) = pool.idle().next()?;
                spare.then(|| (f.clone(), i.id.clone(), t))
            })
            .min_by_key(|(_, _, t)| *t);
        let Some((f, id, _)) = oldest else {
            return false;
        };
        let Some(inst) = lock(&f.pool).remove_idle(|i| i.id == id) else {
            return false;
        };
        tracing::info!(instance = %inst.id, "host memory budget: stopping the least recently used idle instance");
        inst.kill();
        true
    }

    /// Records a request that was accepted but never ran (its caller left
    /// while it was queued, its function was deleted) and answers it.
    fn fail_queued(&self, f: &Function, p: Pending, error_type: &str, e: InvokeError) {
        let mut rec = self.blank_record(f, &p);
        rec.status = Status::Error;
        rec.error_type = Some(error_type.into());
        rec.queue_ms = p.req.waited_ms + ms(p.arrived.elapsed());
        rec.batch_size = 0;
        rec.caller_gone = p.caller_gone();
        rec.finished_at = now_rfc3339();
        self.meter.observe(rec);
        p.answer(Err(e));
    }

    /// Records an accepted event that cannot be delivered because its
    /// function is gone (no revision is left to describe it).
    pub fn record_undeliverable(&self, req: &InvokeRequest, error_type: &str) {
        let now = now_rfc3339();
        self.meter.observe(InvocationRecord {
            request_id: req.request_id.clone().unwrap_or_default(),
            function: req.function.clone(),
            version: String::new(),
            instance_id: None,
            trigger: req.trigger,
            cold: false,
            status: Status::Error,
            error_type: Some(error_type.into()),
            queue_ms: req.waited_ms,
            init_ms: None,
            duration_ms: 0.0,
            billed_ms: 0,
            memory_mb: 0,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            payload_bytes: req.payload.len() as u64,
            response_bytes: 0,
            received_at: now.clone(),
            finished_at: now,
            split: Default::default(),
            mode: Mode::Function,
            batch_size: 0,
            vcpu: None,
            task_started_at: None,
            caller_gone: false,
        });
    }

    /// Records a request refused before it reached an instance.
    fn refuse(&self, f: &Function, p: &Pending, e: &InvokeError) {
        let mut rec = self.blank_record(f, p);
        rec.status = Status::Throttled;
        rec.error_type = Some("TooManyRequestsException".into());
        rec.queue_ms = p.req.waited_ms + ms(p.arrived.elapsed());
        rec.batch_size = 0;
        rec.finished_at = now_rfc3339();
        tracing::debug!(function = %f.manifest.name, error = %e, "refused");
        self.meter.observe(rec);
    }

    /// Records a throttled request and says why.
    fn throttle(&self, f: &Function, p: &Pending) -> InvokeError {
        let (instances, queued) = if f.mode() == Mode::Service {
            let mut p = lock(&f.service);
            (p.running() + p.starting(), p.queued())
        } else {
            let mut p = lock(&f.pool);
            (p.idle_count() + p.active_count(), p.queued())
        };
        let e = InvokeError::Throttled {
            function: f.manifest.name.clone(),
            instances,
            queued,
        };
        self.refuse(f, p, &e);
        e
    }

    /// Turns an outcome into the caller's answer and its record.
    fn conclude(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        outcome: Result<Bytes, Failure>,
        output: Vec<String>,
    ) -> Invocation {
        match outcome {
            Ok(body) => {
                if f.manifest.runtime == Runtime::Model {
                    record.split = virga_spec::WorkerSplit::from_response(&body);
                }
                record.status = Status::Success;
                record.response_bytes = body.len() as u64;
                record.billed_ms = bill(&record);
                self.finish(f, record, body, None, output)
            }
            Err(failure) => self.finish_failure(f, record, failure, output),
        }
    }

    /// Runs one invocation (a single event or a batch) on the leased slot,
    /// starting an instance first when the slot has none, and gives the slot
    /// back.
    async fn execute(
        self: &Arc<Self>,
        mut lease: Lease,
        request_id: &str,
        payload: Bytes,
        batch: Option<usize>,
    ) -> Executed {
        let f = lease.function().clone();
        let mut run = Executed {
            init_ms: None,
            instance_id: None,
            task_started_at: None,
            duration_ms: 0.0,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            mode: f.mode(),
            vcpu: f.spawn.limits.vcpu,
            batch_size: batch.unwrap_or(1) as u32,
            output: Vec::new(),
            outcome: Ok(Bytes::new()),
        };
        if lease.instance().is_none() {
            let Some(memory) = lease.memory.take() else {
                run.outcome = Err(Failure::new(
                    Status::Error,
                    "Runtime.Unknown",
                    "no host memory was reserved for the new instance",
                ));
                return run;
            };
            match self.start_instance(&f, "on-demand", memory).await {
                Ok((i, init)) => {
                    lease.started(i);
                    run.init_ms = Some(init);
                }
                Err(failure) => {
                    // Dropping the lease frees the slot.
                    run.init_ms = failure.init_ms;
                    run.outcome = Err(failure);
                    return run;
                }
            }
        }
        let Some(inst) = lease.instance().cloned() else {
            unreachable!("the lease holds an instance once started")
        };
        run.instance_id = Some(inst.id.clone());
        if f.mode() != Mode::Function {
            run.task_started_at = Some(
                inst.started
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            );
        }
        inst.invocations.fetch_add(1, Ordering::Relaxed);

        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let timeout = Duration::from_millis(f.manifest.timeout_ms);
        let deadline_ms = chrono::Utc::now().timestamp_millis() as u64 + f.manifest.timeout_ms;
        let job = Job {
            request_id: request_id.to_string(),
            payload,
            deadline_ms,
            function_arn: f.arn.clone(),
            trace_id: trace_id(request_id),
            batch_size: batch,
            reply: reply_tx,
        };
        // Output of an instance serving several requests at once cannot be
        // told apart: only one-at-a-time instances capture a log tail.
        let capture = f.manifest.concurrency_per_instance() == 1;
        if capture {
            inst.begin_capture();
        }
        let started = Instant::now();
        let result = inst.run(job, reply_rx, timeout).await;
        run.duration_ms = ms(started.elapsed());
        if capture {
            run.output = inst.end_capture().await;
        }
        run.max_memory_mb = inst.peak_memory_mb();
        run.limits_enforced = inst.limits_enforced;

        let (healthy, outcome) = match result {
            RunResult::Reply(Reply::Response(body)) => (true, Ok(body)),
            RunResult::Reply(Reply::Error { error_type, body }) => (
                true,
                Err(Failure {
                    body: Some(body),
                    ..Failure::new(Status::Error, &error_type, String::new())
                }),
            ),
            RunResult::Reply(Reply::TooLarge { bytes }) => (
                true,
                Err(Failure::new(
                    Status::Error,
                    "Function.ResponseSizeTooLarge",
                    format!("Response payload size ({bytes} bytes) exceeded maximum allowed payload size (6291456 bytes)."),
                )),
            ),
            RunResult::Died(d) => (
                false,
                Err(Failure::new(Status::Error, &d.error_type, d.message)),
            ),
            RunResult::TimedOut => (
                false,
                Err(Failure::new(
                    Status::Timeout,
                    "Sandbox.Timedout",
                    format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
                )),
            ),
        };
        lease.release(healthy);
        run.outcome = outcome;
        run
    }

    /// The batch dispatcher of one function: takes the first waiting request,
    /// waits for a slot, gathers a batch as the policy allows and runs it.
    async fn dispatch_batches(
        self: Arc<Self>,
        f: Arc<Function>,
        mut rx: mpsc::Receiver<Pending>,
        mut policy: BatchPolicy,
    ) {
        while let Some(first) = rx.recv().await {
            if first.caller_gone() {
                self.fail_queued(&f, first, "ClientClosed", InvokeError::ShuttingDown);
                continue;
            }
            policy.observe(first.arrived);
            // Requests pile up in `rx` while this waits: the batch grows.
            let Some((lease, first)) = self.lease_for(&f, first).await else {
                if f.retired.load(Ordering::SeqCst) {
                    // Redeployed or deleted: what is still queued moves on.
                    rx.close();
                    while let Some(p) = rx.recv().await {
                        self.resubmit(&f, p);
                    }
                    return;
                }
                continue;
            };
            let members = batch::gather(&mut rx, first, &mut policy, |m| m.arrived).await;
            tokio::spawn(self.clone().run_batch(lease, members));
        }
    }

    /// Runs the members of one batch as one invocation; each gets its own
    /// answer and record. Members whose callers left while they were queued
    /// are taken out first.
    async fn run_batch(self: Arc<Self>, lease: Lease, members: Vec<Pending>) {
        let f = lease.function().clone();
        let (gone, members): (Vec<Pending>, Vec<Pending>) =
            members.into_iter().partition(Pending::caller_gone);
        for p in gone {
            self.fail_queued(&f, p, "ClientClosed", InvokeError::ShuttingDown);
        }
        if members.is_empty() {
            lease.release(true);
            return;
        }
        let n = members.len();
        let dispatched = Instant::now();
        // A batch of one is delivered as a plain event.
        let (invocation_id, payload, batch) = if n == 1 {
            (
                members[0].request_id.clone(),
                members[0].req.payload.clone(),
                None,
            )
        } else {
            let payloads: Vec<&[u8]> = members.iter().map(|m| &m.req.payload[..]).collect();
            (
                uuid::Uuid::new_v4().to_string(),
                batch_payload(&payloads),
                Some(n),
            )
        };
        for m in &members {
            f.logs.push(format!(
                "START RequestId: {} Version: {}",
                m.request_id, f.version
            ));
        }
        let run = self.execute(lease, &invocation_id, payload, batch).await;
        let outcomes: Vec<Result<Bytes, Failure>> = match (&run.outcome, batch) {
            (Ok(body), Some(n)) => split_batch_response(body, n),
            (Ok(body), None) => vec![Ok(body.clone())],
            (Err(failure), _) => (0..n).map(|_| Err(failure.clone())).collect(),
        };
        for (m, outcome) in members.into_iter().zip(outcomes) {
            let mut record = self.blank_record(&f, &m);
            record.queue_ms = m.req.waited_ms + ms(dispatched.saturating_duration_since(m.arrived));
            run.fill(&mut record);
            record.caller_gone = m.caller_gone();
            let answer = self.conclude(&f, record, outcome, run.output.clone());
            m.answer(Ok(answer));
        }
    }

    fn blank_record(&self, f: &Function, p: &Pending) -> InvocationRecord {
        let req = &p.req;
        InvocationRecord {
            request_id: p.request_id.clone(),
            function: f.manifest.name.clone(),
            version: f.version.to_string(),
            instance_id: None,
            trigger: req.trigger,
            cold: false,
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: None,
            duration_ms: 0.0,
            billed_ms: 0,
            memory_mb: f.manifest.memory_mb,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            payload_bytes: req.payload.len() as u64,
            response_bytes: 0,
            received_at: p.received_at.clone(),
            finished_at: p.received_at.clone(),
            split: Default::default(),
            mode: f.mode(),
            batch_size: 1,
            vcpu: Some(f.spawn.limits.vcpu),
            task_started_at: None,
            caller_gone: false,
        }
    }

    fn finish_failure(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        failure: Failure,
        mut output: Vec<String>,
    ) -> Invocation {
        record.status = failure.status;
        record.error_type = Some(failure.error_type.clone());
        record.billed_ms = bill(&record);
        let body = failure.body.unwrap_or_else(|| {
            let doc = serde_json::json!({
                "errorType": failure.error_type,
                "errorMessage": format!("RequestId: {} Error: {}", record.request_id, failure.message),
            });
            Bytes::from(doc.to_string())
        });
        record.response_bytes = body.len() as u64;
        if !failure.message.is_empty() {
            let line = format!(
                "{} {} {}",
                now_rfc3339(),
                record.request_id,
                failure.message
            );
            f.logs.push(line.clone());
            output.push(line);
        }
        let error_type = failure.error_type;
        self.finish(f, record, body, Some(error_type), output)
    }

    fn finish(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        body: Bytes,
        function_error: Option<String>,
        output: Vec<String>,
    ) -> Invocation {
        record.finished_at = now_rfc3339();
        tracing::Span::current().record("status", record.status.as_str());
        let start = format!(
            "START RequestId: {} Version: {}",
            record.request_id, record.version
        );
        let end = format!("END RequestId: {}", record.request_id);
        let report = report_line(&record);
        f.logs.push(end.clone());
        f.logs.push(report.clone());
        let mut log = String::with_capacity(256);
        for line in std::iter::once(&start)
            .chain(output.iter())
            .chain([&end, &report])
        {
            log.push_str(line);
            log.push('\n');
        }
        let request_id = record.request_id.clone();
        self.meter.observe(record);
        Invocation {
            request_id,
            body,
            function_error,
            log,
        }
    }

    /// Keeps a function's pool in shape until it is retired: reaps idle
    /// instances past their keep-alive, and keeps `min_instances` started.
    async fn keep_alive(self: Arc<Self>, f: Arc<Function>) {
        let me = self.clone();
        let fp = f.clone();
        keep_alive_loop(
            &f.pool,
            &f.wake,
            || f.retired.load(Ordering::SeqCst),
            |expired: Vec<Arc<Instance>>| {
                for i in expired {
                    tracing::info!(instance = %i.id, "keep-alive expired: stopping idle instance");
                    i.kill();
                }
            },
            |n| {
                for _ in 0..n {
                    let me = me.clone();
                    let f = fp.clone();
                    tokio::spawn(async move {
                        match me.start_provisioned(&f).await {
                            Ok((inst, _)) => f.give_back(inst, true),
                            Err(failure) => {
                                tracing::warn!(function = %f.manifest.name, error = %failure.message, "provisioned instance failed to start");
                                // Back off before the loop tries again.
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                f.give_back_slot();
                            }
                        }
                    });
                }
            },
        )
        .await;
    }
}

impl Scheduler {
    /// Scales a service's tasks until it is retired: samples its load every
    /// tick, asks the autoscaler for a task count and applies it.
    async fn autoscale(self: Arc<Self>, f: Arc<Function>) {
        let m = &f.manifest;
        let scaling = m.scaling.clone().unwrap_or_default();
        let mut scaler = Autoscaler::new(AutoscaleConfig {
            per_instance: m.concurrency_per_instance(),
            target_utilization: scaling.target_utilization,
            stable_window: Duration::from_millis(scaling.stable_window_ms),
            scale_down_delay: Duration::from_millis(scaling.scale_down_delay_ms),
            min: m.min_instances as usize,
            max: m.max_instances() as usize,
        });
        let tick = scaler.config().tick();
        autoscale_loop(
            &f.service,
            &mut scaler,
            tick,
            || f.retired.load(Ordering::SeqCst),
            |stop| {
                for i in stop {
                    tracing::info!(instance = %i.id, "scaling down: stopping idle task");
                    i.kill();
                }
            },
            |n| {
                for _ in 0..n {
                    let me = self.clone();
                    let f = f.clone();
                    tokio::spawn(async move {
                        match me.start_provisioned(&f).await {
                            Ok((inst, _)) => {
                                let unneeded = lock(&f.service).add(inst, Instant::now(), false);
                                // Started after its service was retired.
                                if let Some(i) = unneeded {
                                    i.kill();
                                }
                            }
                            Err(failure) => {
                                tracing::warn!(function = %f.manifest.name, error = %failure.message, "task failed to start");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                lock(&f.service).start_failed();
                            }
                        }
                    });
                }
            },
        )
        .await;
    }
}

/// The autoscaling timer of one service pool, generic so it runs on a paused
/// clock in tests.
pub(crate) async fn autoscale_loop<I: Clone>(
    pool: &Mutex<ServicePool<I>>,
    scaler: &mut Autoscaler,
    tick: Duration,
    retired: impl Fn() -> bool,
    mut stop: impl FnMut(Vec<I>),
    mut start: impl FnMut(usize),
) {
    loop {
        if retired() {
            return;
        }
        let step = {
            let mut p = lock(pool);
            let now = Instant::now();
            scaler.observe(now, p.concurrency() as f64);
            let want = scaler.decide(now, p.running() + p.starting());
            p.scale(want)
        };
        if !step.stop.is_empty() {
            stop(step.stop);
        }
        if step.start > 0 {
            start(step.start);
        }
        tokio::time::sleep(tick).await;
    }
}

impl Scheduler {
    /// Starts a provisioned instance or an autoscaled task, if the host's
    /// memory budget has room for it now.
    async fn start_provisioned(
        self: &Arc<Self>,
        f: &Arc<Function>,
    ) -> Result<(Arc<Instance>, f64), Failure> {
        let mb = u64::from(f.manifest.memory_mb);
        let Some(memory) = self.budget.try_reserve(mb) else {
            return Err(Failure::new(
                Status::Throttled,
                "TooManyRequestsException",
                format!(
                    "the host's memory budget ({} of {} MB in use) has no room for {mb} MB",
                    self.budget.used_mb(),
                    self.budget.limit_mb()
                ),
            ));
        };
        self.start_instance(f, "provisioned-concurrency", memory)
            .await
    }
}

/// Stops an instance nobody claimed.
struct KillOnDrop(Option<Arc<Instance>>);

impl KillOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(i) = self.0.take() {
            i.kill();
        }
    }
}

/// Counts accepted requests not yet answered, for a graceful shutdown.
#[derive(Debug, Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One accepted request, counted in [`InFlight`] until dropped.
struct Track(Arc<InFlight>);

impl Track {
    fn new(counter: &Arc<InFlight>) -> Track {
        counter.count.fetch_add(1, Ordering::SeqCst);
        Track(counter.clone())
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Function {
    /// Frees the slot of an instance that never started.
    fn give_back_slot(&self) {
        if self.mode() == Mode::Service {
            lock(&self.service).start_failed();
            return;
        }
        lock(&self.pool).discard();
        self.wake.notify_one();
    }
}

/// The keep-alive timer of one pool, generic so it runs on a paused clock in tests.
pub(crate) async fn keep_alive_loop<I>(
    pool: &Mutex<Pool<I>>,
    wake: &Notify,
    retired: impl Fn() -> bool,
    mut expire: impl FnMut(Vec<I>),
    mut provision: impl FnMut(usize),
) {
    loop {
        if retired() {
            return;
        }
        let (expired, next, missing) = {
            let mut p = lock(pool);
            let expired = p.reap(Instant::now());
            let mut missing = 0;
            while p.deficit() > 0 && p.reserve() {
                missing += 1;
            }
            (expired, p.next_expiry(), missing)
        };
        if !expired.is_empty() {
            expire(expired);
        }
        if missing > 0 {
            provision(missing);
        }
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// An X-Ray-shaped trace id, derived from the request id.
fn trace_id(request_id: &str) -> String {
    let hex: String = request_id.chars().filter(|c| *c != '-').take(24).collect();
    format!(
        "Root=1-{:08x}-{hex};Parent={};Sampled=0",
        chrono::Utc::now().timestamp(),
        &hex[..16.min(hex.len())]
    )
}

/// An accepted request on its way: queued, waiting for a batch, running.
/// Its caller waits on the other end of `reply`; whether it still does is
/// `reply.is_closed()`.
struct Pending {
    req: InvokeRequest,
    request_id: String,
    received_at: String,
    arrived: Instant,
    reply: oneshot::Sender<Result<Invocation, InvokeError>>,
    /// Moves to newer revisions so far.
    hops: u8,
    _track: Track,
}

impl Pending {
    /// A synchronous caller stopped waiting.
    fn caller_gone(&self) -> bool {
        self.req.has_caller && self.reply.is_closed()
    }

    fn answer(self, answer: Result<Invocation, InvokeError>) {
        let _ = self.reply.send(answer);
    }
}

/// What running one invocation on an instance gave, before records.
struct Executed {
    init_ms: Option<f64>,
    instance_id: Option<String>,
    task_started_at: Option<String>,
    duration_ms: f64,
    max_memory_mb: Option<u32>,
    limits_enforced: bool,
    mode: Mode,
    vcpu: f64,
    batch_size: u32,
    output: Vec<String>,
    outcome: Result<Bytes, Failure>,
}

impl Executed {
    /// Copies what every record of this invocation shares.
    fn fill(&self, r: &mut InvocationRecord) {
        r.cold = self.init_ms.is_some();
        r.init_ms = self.init_ms;
        r.instance_id = self.instance_id.clone();
        r.task_started_at = self.task_started_at.clone();
        r.duration_ms = self.duration_ms;
        r.max_memory_mb = self.max_memory_mb.or(r.max_memory_mb);
        r.limits_enforced = self.limits_enforced;
        r.mode = self.mode;
        r.vcpu = Some(self.vcpu);
        r.batch_size = self.batch_size;
    }
}

/// A record's billed time: Lambda's per-ms rule for functions (the requests
/// of a batch share their invocation's), per second with a one-minute
/// minimum for a job's task, and nothing per request for a service, whose
/// tasks are billed per second of task time (`virga cost`, Fargate profiles).
fn bill(r: &InvocationRecord) -> u64 {
    match r.mode {
        Mode::Function => {
            billed_ms(r.duration_ms, r.init_ms).div_ceil(u64::from(r.batch_size.max(1)))
        }
        Mode::Job => task_billed_ms(r.duration_ms, r.init_ms),
        Mode::Service => 0,
    }
}

/// The payload of a batch: `{"batch": [event, ...]}`, each event as sent
/// (an empty one as `null`).
fn batch_payload(events: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 12);
    out.extend_from_slice(b"{\"batch\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if e.iter().all(u8::is_ascii_whitespace) {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(e);
        }
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Splits a runtime's answer to a batch of `n`: `{"batch": [response, ...]}`
/// in order, with an optional `"errors"` list (index-aligned, `null` for
/// success, else `{"errorType", "errorMessage"}`) for members that failed.
fn split_batch_response(body: &[u8], n: usize) -> Vec<Result<Bytes, Failure>> {
    let invalid = |why: String| -> Vec<Result<Bytes, Failure>> {
        (0..n)
            .map(|_| {
                Err(Failure::new(
                    Status::Error,
                    "Runtime.InvalidBatchResponse",
                    format!("the runtime's answer to a batch of {n} is not {{\"batch\": [response, ...]}} with {n} responses: {why}"),
                ))
            })
            .collect()
    };
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("not JSON ({e})")),
    };
    let Some(items) = v.get("batch").and_then(|b| b.as_array()) else {
        return invalid("no \"batch\" list".into());
    };
    if items.len() != n {
        return invalid(format!("{} responses", items.len()));
    }
    let errors = v.get("errors").and_then(|e| e.as_array());
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match errors.and_then(|e| e.get(i)) {
            Some(err) if !err.is_null() => {
                let error_type = err
                    .get("errorType")
                    .and_then(|t| t.as_str())
                    .unwrap_or("Unhandled")
                    .to_string();
                Err(Failure {
                    body: Some(Bytes::from(err.to_string())),
                    ..Failure::new(Status::Error, &error_type, String::new())
                })
            }
            _ => Ok(Bytes::from(item.to_string())),
        })
        .collect()
}

/// A failed invocation, before it becomes a record.
#[derive(Debug, Clone)]
struct Failure {
    status: Status,
    error_type: String,
    message: String,
    init_ms: Option<f64>,
    /// The runtime's own error document, when it wrote one.
    body: Option<Bytes>,
}

impl Failure {
    fn new(status: Status, error_type: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            error_type: error_type.to_string(),
            message: message.into(),
            init_ms: None,
            body: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(keep_alive_ms: u64, min: usize) -> Mutex<Pool<u32>> {
        Mutex::new(Pool::new(PoolLimits {
            max_instances: 4,
            max_queue: 0,
            keep_alive: Duration::from_millis(keep_alive_ms),
            min_instances: min,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_reaps_on_time_on_a_paused_clock() {
        let p = Arc::new(pool(1_000, 0));
        let wake = Arc::new(Notify::new());
        let retired = Arc::new(AtomicBool::new(false));
        let expired = Arc::new(Mutex::new(Vec::<(u32, Instant)>::new()));
        let t0 = Instant::now();
        assert!(lock(&p).reserve());
        lock(&p).release(7, t0);
        let task = {
            let (p, wake, retired, expired) =
                (p.clone(), wake.clone(), retired.clone(), expired.clone());
            tokio::spawn(async move {
                keep_alive_loop(
                    &p,
                    &wake,
                    || retired.load(Ordering::SeqCst),
                    |v| lock(&expired).extend(v.into_iter().map(|i| (i, Instant::now()))),
                    |_| {},
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(lock(&expired).is_empty(), "not before keep-alive");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(lock(&expired).len(), 1);
        assert_eq!(lock(&expired)[0].1 - t0, Duration::from_secs(1));

        // An instance released later is reaped one keep-alive after its release.
        assert!(lock(&p).reserve());
        lock(&p).release(8, Instant::now());
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(1_001)).await;
        assert_eq!(
            lock(&expired).iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![7, 8]
        );

        retired.store(true, Ordering::SeqCst);
        wake.notify_one();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_provisions_the_minimum_and_never_reaps_it() {
        let p = Arc::new(pool(10, 2));
        let wake = Arc::new(Notify::new());
        let provisioned = Arc::new(Mutex::new(0usize));
        let task = {
            let (p, wake, provisioned) = (p.clone(), wake.clone(), provisioned.clone());
            tokio::spawn(async move {
                keep_alive_loop(
                    &p,
                    &wake,
                    || false,
                    |_| panic!("provisioned instances are never reaped"),
                    |n| *lock(&provisioned) += n,
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(*lock(&provisioned), 2);
        // The provisioned instances come up and go idle; hours pass.
        lock(&p).release(1, Instant::now());
        lock(&p).release(2, Instant::now());
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(lock(&p).idle_count(), 2);
        task.abort();
    }

    #[test]
    fn batches_are_wrapped_and_answers_split_per_member() {
        let p = batch_payload(&[b"{\"a\":1}", b"", b"[2]"]);
        assert_eq!(&p[..], br#"{"batch":[{"a":1},null,[2]]}"#);
        let out = split_batch_response(
            br#"{"batch":[{"x":1},null,3],"errors":[null,{"errorType":"Bad","errorMessage":"no"},null]}"#,
            3,
        );
        assert_eq!(&out[0].as_ref().unwrap()[..], br#"{"x":1}"#);
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.error_type, "Bad");
        assert_eq!(&out[2].as_ref().unwrap()[..], b"3");
        for bad in [&b"nope"[..], br#"{"batch":[1]}"#, br#"{"other":[1,2,3]}"#] {
            let out = split_batch_response(bad, 3);
            assert_eq!(out.len(), 3);
            assert!(out
                .iter()
                .all(|o| o.as_ref().unwrap_err().error_type == "Runtime.InvalidBatchResponse"));
        }
    }

    #[test]
    fn billing_follows_the_mode() {
        let mut r = InvocationRecord {
            request_id: "r".into(),
            function: "f".into(),
            version: "1".into(),
            instance_id: None,
            trigger: Trigger::Http,
            cold: true,
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: Some(100.0),
            duration_ms: 300.0,
            billed_ms: 0,
            memory_mb: 128,
            max_memory_mb: None,
            limits_enforced: false,
            payload_bytes: 0,
            response_bytes: 0,
            received_at: String::new(),
            finished_at: String::new(),
            split: Default::default(),
            mode: Mode::Function,
            batch_size: 4,
            vcpu: None,
            task_started_at: None,
            caller_gone: false,
        };
        assert_eq!(bill(&r), 100, "a batch of 4 shares 400 ms");
        r.mode = Mode::Job;
        assert_eq!(bill(&r), 60_000);
        r.mode = Mode::Service;
        assert_eq!(bill(&r), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn autoscale_loop_starts_tasks_under_load_and_stops_them_after_the_delay() {
        let pool = Arc::new(Mutex::new(ServicePool::<u32>::new(2, 0, 4, 100)));
        let mut scaler = Autoscaler::new(AutoscaleConfig {
            per_instance: 2,
            target_utilization: 1.0,
            stable_window: Duration::from_secs(10),
            scale_down_delay: Duration::from_secs(5),
            min: 0,
            max: 4,
        });
        let tick = scaler.config().tick();
        // Six requests wait: three tasks' worth.
        let waiters: Vec<_> = (0..6).map(|_| lock(&pool).acquire()).collect();
        let started = Arc::new(Mutex::new(Vec::<u32>::new()));
        let stopped = Arc::new(Mutex::new(Vec::<u32>::new()));
        let task = {
            let (pool, started, stopped) = (pool.clone(), started.clone(), stopped.clone());
            tokio::spawn(async move {
                let next = std::sync::atomic::AtomicU32::new(100);
                autoscale_loop(
                    &pool,
                    &mut scaler,
                    tick,
                    || false,
                    |v| lock(&stopped).extend(v),
                    |n| {
                        for _ in 0..n {
                            let id = next.fetch_add(1, Ordering::SeqCst);
                            lock(&started).push(id);
                            let _ = lock(&pool).add(id, Instant::now(), false);
                        }
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        // One task came from the first request (Spawn); the loop added two.
        assert!(matches!(waiters[0], Acquire::Spawn));
        assert_eq!(lock(&started).len(), 2, "{:?}", lock(&started));
        // The waiters were served, then everyone finishes.
        drop(waiters);
        let ids: Vec<u32> = lock(&pool).tasks().map(|(i, _)| *i).collect();
        for id in ids {
            for _ in 0..2 {
                lock(&pool).release(|&i| i == id, Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(lock(&stopped).is_empty(), "not before the scale-down delay");
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(
            lock(&stopped).len(),
            2,
            "down to zero: both idle tasks stop"
        );
        task.abort();
    }

    #[test]
    fn trace_ids_are_xray_shaped() {
        let t = trace_id("0f4c2a5e-1111-2222-3333-444455556666");
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(t.contains(";Parent=") && t.ends_with(";Sampled=0"), "{t}");
    }
}
