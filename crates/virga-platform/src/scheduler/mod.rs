//! The scheduler: per-function instance pools, cold starts, keep-alive,
//! provisioned instances and the run of one invocation from grant to record.
//!
//! Decisions are made by the pure policies of `virga-policy` (pools,
//! autoscaling, batching: state and a `now` in, a decision out), put on
//! tokio's clock by `policy`; the rest carries them out with real
//! instances, in flow order: `registry` (deploy, delete, listings)
//! -> `function` (a revision and its pools) -> `invoke` (admission, a slot
//! held by a `lease`, cold starts within the `budget`, execution, record) and
//! `batcher` (gathering a batch) -> `timers` (keep-alive, autoscaling);
//! `lambda` is the Lambda identity (ARNs, trace ids). It knows nothing of HTTP.

mod batch;
mod batcher;
pub mod budget;
mod function;
mod invoke;
mod lambda;
mod lease;
mod policy;
mod registry;
pub mod share;
mod timers;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tracing::Instrument;
use virga_policy::{keep_alive, KeepAlive};
use virga_spec::{
    billed_ms, task_billed_ms, InvocationRecord, Manifest, ManifestError, Mode, Runtime, SnapStart,
    Start, Status, Trigger, BUILTIN_RUNTIME,
};

use crate::instance::{
    ForkSpec, Instance, InstanceRole, Isolation, Job, LaunchSpec, Phase, Reply, RunResult, Spare,
};
use crate::logs::LogRing;
use crate::meter::{report_line, Meter};
use crate::sandbox::{self, resolve_program, Cgroups, Jail, Limits, SandboxError, SpawnSpec};
use crate::store::{StoreError, StoredFunction};
use budget::{MemoryBudget, Reservation};
use lease::{Lease, Waiting};
use policy::{
    keep_alive_of, Acquire, AutoscaleConfig, Autoscaler, BatchPolicy, Grant, GreedyDualClock, Pool,
    PoolLimits, ServicePool, Tracker,
};

#[doc(hidden)]
pub use batcher::split_batch_answer;
use function::{Function, Load, Pools};
use invoke::{Failure, Pending};
use lambda::{now_rfc3339, trace_id};

/// Lambda's limit on the init phase.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a start waits for stopped idle instances to return their memory.
const MEMORY_WAIT: Duration = Duration::from_secs(3);
/// How often a request may be moved to a newer revision before it gives up.
const MAX_HOPS: u8 = 8;
/// Lines of log kept in memory per function, and their most bytes.
const LOG_LINES: usize = 2000;
const LOG_BYTES: usize = 512 * 1024;
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
    /// this cluster node's share of max_concurrency is in use
    #[error("Rate Exceeded: {function}'s max_concurrency is shared by {nodes} cluster nodes and this node's share ({share}) is in use; retry (another node may have room) or raise max_concurrency")]
    ShareFull {
        function: String,
        share: usize,
        nodes: usize,
    },
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
    /// the built-in runtime lacks the model's engine
    #[error("{file}: field `model.engine`: this platform's runtime has no engine {engine:?} (it has {have}){hint}")]
    EngineUnavailable {
        file: String,
        engine: &'static str,
        have: String,
        hint: &'static str,
    },
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the function's code could not be captured
    #[error(transparent)]
    Code(#[from] crate::code::CodeError),
    /// new code for a function that is not deployed
    #[error("Function not found: {0}; deploy its manifest first")]
    NotFound(String),
}

/// Where a deploy takes the function's code from.
#[derive(Debug, Clone, Copy)]
pub enum CodeSource<'a> {
    /// The manifest's directory (or its `code`), on the platform's host.
    Dir,
    /// No code of its own (a deploy that names no directory).
    Empty,
    /// An uploaded zip archive (`UpdateFunctionCode`).
    Zip(&'a [u8]),
    /// The bundle already kept for the stored version (a restart).
    Stored,
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
    /// The model engines it has (`classical`, `tract`, `ort` in a build
    /// with it): a model function for another is refused at deploy, not at
    /// every cold start. Empty: not checked.
    pub engines: Vec<String>,
}

/// How instances are sandboxed: the helper that confines them (e.g. the
/// platform's own executable with `jail`), and the platform's empty
/// directory each jail mounts its root on.
#[derive(Debug, Clone)]
pub struct IsolationConfig {
    pub helper: PathBuf,
    pub helper_args: Vec<String>,
    pub root: PathBuf,
    /// Never visible inside a jail.
    pub data_dir: PathBuf,
}

/// The first uid (and gid) given to a function's instances; each function
/// gets the next, kept for the platform's life. Far above the host's
/// accounts, so no instance shares a uid with anything on the host.
pub const JAIL_UID_BASE: u32 = 1_000_000;

/// Host facts and seams the scheduler needs.
pub struct SchedulerConfig {
    /// Where bare program names are looked up (PATH).
    pub search_path: Vec<PathBuf>,
    /// The built-in runtime; `None` refuses functions that need it.
    pub builtin: Option<BuiltinRuntime>,
    /// Where function logs are also written; `None` keeps them in memory.
    pub log_files: Option<Arc<crate::logs::LogFiles>>,
    pub host_cores: usize,
    pub cgroups: Option<Box<dyn Cgroups>>,
    /// Sandbox every instance; `None` runs them as plain processes.
    pub isolation: Option<IsolationConfig>,
    /// Where each version's code bundle is kept.
    pub code: crate::code::CodeStore,
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
    /// The caller wants the function's output in `Invocation::log`
    /// (`LogType: Tail`); without it the log has the platform's lines only,
    /// and the invocation skips collecting the instance's output.
    pub tail: bool,
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
            tail: false,
        }
    }

    /// The same request, with the function's output in its log or not.
    pub fn with_tail(self, tail: bool) -> Self {
        InvokeRequest { tail, ..self }
    }
}

/// What came back, with its Lambda-style log (the record goes to the meter).
#[derive(Debug)]
pub struct Invocation {
    pub request_id: String,
    pub body: Bytes,
    /// `Some(errorType)` when the function failed (HTTP 200 + `X-Amz-Function-Error`).
    pub function_error: Option<String>,
    /// START, the function's output, END and REPORT, for a request that
    /// asked for them (`InvokeRequest::tail`); empty otherwise.
    pub log: String,
}

// The API's descriptions of functions and instances are the spec's, so
// clients read back exactly what is sent.
pub use virga_spec::api::{FunctionInfo, InstanceInfo};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Scheduler {
    config: SchedulerConfig,
    /// Bumped on every deploy and delete, so event sources can follow.
    changes: tokio::sync::watch::Sender<u64>,
    functions: RwLock<HashMap<String, Arc<Function>>>,
    /// Held across a deploy's or delete's read of the stored version, its
    /// save and its swap into `functions`, so concurrent deploys of one name
    /// get distinct versions and the live revision is the last one stored.
    deploying: Mutex<()>,
    /// Each function's uid inside its sandbox.
    uids: Mutex<HashMap<String, u32>>,
    logs: Mutex<HashMap<String, Arc<LogRing>>>,
    meter: Meter,
    instance_seq: AtomicU64,
    budget: Arc<MemoryBudget>,
    /// Greedy-dual's clock, shared by every function on this host's budget.
    greedy_dual: GreedyDualClock,
    /// Accepted requests not yet answered.
    in_flight: Arc<InFlight>,
    /// Revisions held in memory: each deployed one, and retired ones until
    /// their last invocation and instance are done with them.
    revisions: Arc<InFlight>,
    /// Set by [`Scheduler::stop_accepting`]: new requests are refused.
    closing: AtomicBool,
    /// In a cluster, this node's share of each `max_concurrency`.
    shares: share::Shares,
    /// Keeps the timer driver's next wake-up near while invocations run.
    pacemaker: Arc<timers::Pacemaker>,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, meter: Meter) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            changes: tokio::sync::watch::channel(0).0,
            functions: RwLock::new(HashMap::new()),
            deploying: Mutex::new(()),
            uids: Mutex::new(HashMap::new()),
            logs: Mutex::new(HashMap::new()),
            meter,
            instance_seq: AtomicU64::new(0),
            budget: MemoryBudget::new(config.max_memory_mb),
            greedy_dual: GreedyDualClock::new(),
            config,
            in_flight: Arc::new(InFlight::default()),
            revisions: Arc::new(InFlight::default()),
            closing: AtomicBool::new(false),
            shares: share::Shares::default(),
            pacemaker: timers::Pacemaker::new(),
        })
    }

    /// This node is at `index` among `nodes` live cluster nodes (sorted by
    /// name): from now on it admits its share of each `max_concurrency`.
    pub fn set_cluster_members(&self, index: usize, nodes: usize) {
        self.shares.set_members(index, nodes);
    }

    /// Whether this node's share of `function`'s `max_concurrency` has
    /// room for one more invocation now (always, outside a cluster).
    pub fn share_has_room(&self, function: &str) -> bool {
        match self.manifest(function) {
            Some((m, _)) if m.mode != virga_spec::Mode::Service => {
                self.shares.has_room(function, m.max_concurrency)
            }
            _ => true,
        }
    }

    /// How many invocations of `function` may run on this node at once:
    /// its `max_concurrency`, or in a cluster this node's share of it;
    /// `None` for no limit.
    pub fn concurrency_limit(&self, function: &str) -> Option<usize> {
        let (m, _) = self.manifest(function)?;
        if m.max_concurrency == 0 {
            return None;
        }
        let share = match m.mode {
            // A service's limit is its tasks', not shared.
            virga_spec::Mode::Service => None,
            _ => self.shares.limit(m.max_concurrency),
        };
        Some(share.unwrap_or(m.max_concurrency as usize))
    }

    /// The host memory budget: (MB held by running instances, limit).
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.used_mb(), self.budget.limit_mb())
    }

    /// Accepted invocations not yet answered (queued, starting or running).
    /// Function revisions held in memory, retired ones still finishing
    /// included: a number that grows with redeploys is a leak.
    pub fn revisions(&self) -> usize {
        self.revisions.count.load(Ordering::SeqCst)
    }

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

    /// Where function logs are written, when they are.
    pub fn log_files(&self) -> Option<Arc<crate::logs::LogFiles>> {
        self.config.log_files.clone()
    }

    pub fn limits_enforced(&self) -> bool {
        self.config.cgroups.is_some()
    }

    /// How new instances are confined.
    pub fn isolation(&self) -> Isolation {
        match self.config.isolation {
            Some(_) => Isolation::Sandbox,
            None => Isolation::None,
        }
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
            if let Some(t) = lock(&f.template).take() {
                t.kill();
                dying.push(t);
            }
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
