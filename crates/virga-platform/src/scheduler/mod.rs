//! The scheduler: per-function instance pools, cold starts, keep-alive,
//! provisioned instances and the run of one invocation from grant to record.
//!
//! Decisions are made by the pure [`pool::Pool`]; this module carries them
//! out with real instances. It knows nothing of HTTP.

pub mod pool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::Instrument;
use virga_spec::{
    billed_ms, vcpu_for_memory, InvocationRecord, Manifest, ManifestError, Runtime, Status, Trigger,
};

use crate::instance::{Instance, Job, LaunchSpec, Phase, Reply, RunResult};
use crate::logs::LogRing;
use crate::meter::{report_line, Meter};
use crate::sandbox::{resolve_program, Cgroups, Limits, SandboxError, SpawnSpec};
use crate::store::{StoreError, StoredFunction};
use pool::{Acquire, Grant, Pool, PoolLimits};

/// Lambda's limit on the init phase.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
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
    /// the function was redeployed or deleted while the request waited
    #[error("{0} was deleted or redeployed while the request waited for an instance; retry")]
    Withdrawn(String),
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
    /// the model file of a model function is missing
    #[error("{file}: field `path`: no model at {path}; train one with `virga models train` or fetch them with `virga models pull`")]
    ModelMissing { file: String, path: String },
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Host facts and seams the scheduler needs.
pub struct SchedulerConfig {
    /// Where bare program names are looked up (the platform's own directory
    /// first, so `virga-worker` is found, then PATH).
    pub search_path: Vec<PathBuf>,
    pub host_cores: usize,
    pub cgroups: Option<Box<dyn Cgroups>>,
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
    pub memory_mb: u32,
    pub vcpu: f64,
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
    pool: Mutex<Pool<Arc<Instance>>>,
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
        for i in idle {
            i.kill();
        }
        self.wake.notify_one();
    }

    /// Returns a healthy instance to the pool, or lets a dead one go.
    fn give_back(&self, inst: Arc<Instance>, healthy: bool) {
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
}

pub struct Scheduler {
    config: SchedulerConfig,
    /// Bumped on every deploy and delete, so event sources can follow.
    changes: tokio::sync::watch::Sender<u64>,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    logs: Mutex<HashMap<String, Arc<LogRing>>>,
    meter: Meter,
    instance_seq: AtomicU64,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, meter: Meter) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            config,
            changes: tokio::sync::watch::channel(0).0,
            functions: RwLock::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            meter,
            instance_seq: AtomicU64::new(0),
        })
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
        // A model function runs the built-in model runtime.
        let (program_name, args) = match manifest.runtime {
            Runtime::Command => (manifest.command[0].clone(), manifest.command[1..].to_vec()),
            Runtime::Model => ("virga-worker".to_string(), Vec::new()),
        };
        let program = resolve_program(&program_name, base_dir, &self.config.search_path)
            .ok_or_else(|| DeployError::Program {
                file: source.to_string(),
                program: program_name.clone(),
                looked: if program_name.contains('/') {
                    base_dir.display().to_string()
                } else {
                    "the platform's directory and PATH".into()
                },
            })?;
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
            vcpu: vcpu_for_memory(manifest.memory_mb, self.config.host_cores),
        };
        let spawn = SpawnSpec {
            name: String::new(),
            program,
            args,
            cwd: base_dir.to_path_buf(),
            env: self.instance_env(&manifest, version, base_dir),
            limits,
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
        tokio::spawn(self.clone().keep_alive(function.clone()));
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

    pub fn functions(&self) -> Vec<FunctionInfo> {
        let fs: Vec<Arc<Function>> = self
            .functions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
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
        let (idle, busy, queued) = {
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
            memory_mb: m.memory_mb,
            vcpu: f.spawn.limits.vcpu,
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
        let idle: Vec<String> = lock(&f.pool).idle().map(|(i, _)| i.id.clone()).collect();
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
        if let Some(model) = &m.model {
            let vcpu = vcpu_for_memory(m.memory_mb, self.config.host_cores);
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

    /// Starts an instance of `f` and waits for its initialisation.
    async fn start_instance(
        self: &Arc<Self>,
        f: &Arc<Function>,
        init_type: &str,
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
            lock(&watch_f.instances).remove(&watch_i.id);
            if lock(&watch_f.pool)
                .remove_idle(|i| Arc::ptr_eq(i, &watch_i))
                .is_some()
            {
                tracing::info!(instance = %watch_i.id, "idle instance exited");
                watch_f.wake.notify_one();
            }
        });
        match inst.ready(INIT_TIMEOUT).await {
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

    /// Runs one synchronous invocation end to end.
    pub async fn invoke(self: &Arc<Self>, req: InvokeRequest) -> Result<Invocation, InvokeError> {
        let f = self
            .get(&req.function)
            .ok_or_else(|| InvokeError::NotFound(self.arn_of(&req.function)))?;
        let request_id = req
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span = tracing::info_span!(
            "invoke",
            function = %f.manifest.name,
            request_id = %request_id,
            cold = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        self.invoke_in(f, req, request_id).instrument(span).await
    }

    fn arn_of(&self, name: &str) -> String {
        format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}")
    }

    async fn invoke_in(
        self: &Arc<Self>,
        f: Arc<Function>,
        req: InvokeRequest,
        request_id: String,
    ) -> Result<Invocation, InvokeError> {
        let received_at = now_rfc3339();
        let t0 = Instant::now();
        let acquired = lock(&f.pool).acquire();
        let grant = match acquired {
            Acquire::Warm(i) => Grant::Warm(i),
            Acquire::Spawn => Grant::Spawn,
            Acquire::Wait(rx) => match rx.await {
                Ok(g) => g,
                Err(_) => return Err(InvokeError::Withdrawn(f.manifest.name.clone())),
            },
            Acquire::Throttle => {
                let (instances, queued) = {
                    let mut p = lock(&f.pool);
                    (p.idle_count() + p.active_count(), p.queued())
                };
                let mut rec = self.blank_record(&f, &req, &request_id, received_at);
                rec.status = Status::Throttled;
                rec.error_type = Some("TooManyRequestsException".into());
                rec.queue_ms = req.waited_ms + ms(t0.elapsed());
                tracing::Span::current().record("status", "throttled");
                self.meter.observe(rec);
                return Err(InvokeError::Throttled {
                    function: f.manifest.name.clone(),
                    instances,
                    queued,
                });
            }
        };
        let queue_ms = req.waited_ms + ms(t0.elapsed());
        let mut record = self.blank_record(&f, &req, &request_id, received_at);
        record.queue_ms = queue_ms;
        f.logs.push(format!(
            "START RequestId: {request_id} Version: {}",
            f.version
        ));

        let (inst, init_ms) = match grant {
            Grant::Warm(i) => (i, None),
            Grant::Spawn => match self.start_instance(&f, "on-demand").await {
                Ok((i, init)) => (i, Some(init)),
                Err(failure) => {
                    f.give_back_slot();
                    record.cold = true;
                    record.init_ms = failure.init_ms;
                    return Ok(self.finish_failure(&f, record, failure, Vec::new()));
                }
            },
        };
        record.cold = init_ms.is_some();
        record.init_ms = init_ms;
        record.instance_id = Some(inst.id.clone());
        tracing::Span::current().record("cold", record.cold);
        inst.invocations.fetch_add(1, Ordering::Relaxed);

        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let timeout = Duration::from_millis(f.manifest.timeout_ms);
        let deadline_ms = chrono::Utc::now().timestamp_millis() as u64 + f.manifest.timeout_ms;
        let job = Job {
            request_id: request_id.clone(),
            payload: req.payload,
            deadline_ms,
            function_arn: f.arn.clone(),
            trace_id: trace_id(&request_id),
            reply: reply_tx,
        };
        inst.begin_capture();
        let started = Instant::now();
        let result = inst.run(job, reply_rx, timeout).await;
        record.duration_ms = ms(started.elapsed());
        let output = inst.end_capture().await;
        record.max_memory_mb = inst.peak_memory_mb();
        record.limits_enforced = inst.limits_enforced;

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
        f.give_back(inst, healthy);
        match outcome {
            Ok(body) => {
                if f.manifest.runtime == Runtime::Model {
                    record.split = virga_spec::WorkerSplit::from_response(&body);
                }
                record.status = Status::Success;
                record.response_bytes = body.len() as u64;
                record.billed_ms = billed_ms(record.duration_ms, record.init_ms);
                Ok(self.finish(&f, record, body, None, output))
            }
            Err(failure) => Ok(self.finish_failure(&f, record, failure, output)),
        }
    }

    fn blank_record(
        &self,
        f: &Function,
        req: &InvokeRequest,
        request_id: &str,
        received_at: String,
    ) -> InvocationRecord {
        InvocationRecord {
            request_id: request_id.to_string(),
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
            received_at: received_at.clone(),
            finished_at: received_at,
            split: Default::default(),
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
        record.billed_ms = billed_ms(record.duration_ms, record.init_ms);
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
                        match me.start_instance(&f, "provisioned-concurrency").await {
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

impl Function {
    /// Frees the slot of an instance that never started.
    fn give_back_slot(&self) {
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

/// A failed invocation, before it becomes a record.
#[derive(Debug)]
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
    fn trace_ids_are_xray_shaped() {
        let t = trace_id("0f4c2a5e-1111-2222-3333-444455556666");
        assert!(t.starts_with("Root=1-"), "{t}");
        assert!(t.contains(";Parent=") && t.ends_with(";Sampled=0"), "{t}");
    }
}
