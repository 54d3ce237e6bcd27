//! virga's control plane, in flow order:
//!
//! event -> [`gateway`] (HTTP) / [`events`] (async queue, triggers) -> [`scheduler`] (pools, cold starts, keep-alive)
//! -> [`instance`] ([`sandbox`]ed process + its [`runtime_api`] listener) -> worker
//! -> [`meter`] (records in the [`store`], metrics, REPORT lines).
//!
//! Invariant: the platform never links an ML engine; models live in instance processes.

pub mod access;
pub mod cluster;
pub mod code;
pub mod events;
pub mod gateway;
pub mod heap;
pub mod instance;
pub mod logs;
pub mod meter;
pub mod runtime_api;
pub mod sandbox;
pub mod scheduler;
pub mod store;
pub mod upkeep;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::meter::Meter;
use crate::scheduler::{DeployError, Scheduler, SchedulerConfig};
use crate::store::{Store, StoreError};

pub use scheduler::{
    BuiltinRuntime, CodeSource, FunctionInfo, InstanceInfo, Invocation, InvokeError, InvokeRequest,
};

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// cannot use the data dir
    #[error("cannot use the data dir {0}: {1}")]
    DataDir(PathBuf, #[source] std::io::Error),
    /// cannot listen on the address
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// cannot read the functions dir
    #[error("cannot read the functions dir {0}: {1}")]
    FunctionsDir(PathBuf, #[source] std::io::Error),
    /// a manifest in the functions dir was refused
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// the store failed
    #[error(transparent)]
    Store(#[from] StoreError),
    /// the event store failed
    #[error(transparent)]
    Events(#[from] events::EventsError),
    /// access control could not be set up (or is missing off loopback)
    #[error(transparent)]
    Access(#[from] access::AccessError),
    /// the cluster's broker could not be joined
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// `virga serve --shutdown-grace-ms`'s default.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

/// How to run the platform.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Manifests (`*.toml`) deployed at start.
    pub functions_dir: Option<PathBuf>,
    /// How to run the built-in runtime (model functions and `command =
    /// ["virga-worker"]`); `None` refuses such functions at deploy.
    pub builtin_runtime: Option<BuiltinRuntime>,
    /// Sandbox every instance where the host allows it (`--isolation`).
    pub isolation: bool,
    /// How to run the jailer (e.g. the platform's own executable with
    /// `jail`); `None` runs instances unsandboxed.
    pub jailer: Option<BuiltinRuntime>,
    /// Use cgroups when the host allows it.
    pub cgroups: bool,
    /// Where cgroup file systems are mounted.
    pub cgroup_root: PathBuf,
    /// Most memory (sum of `memory_mb`) running instances may hold; `None`:
    /// the host's memory minus a reserve.
    pub max_memory_mb: Option<u64>,
    /// How long a shutdown waits for accepted invocations to finish before
    /// it stops their instances.
    pub shutdown_grace: std::time::Duration,
    /// Which invocation records are kept; `None` keeps them all.
    pub retain_records: Option<store::Retention>,
    /// Who may call the gateway: `None` only on a loopback `addr`.
    pub auth: access::AuthMode,
    /// On a loopback bind, Host names served besides loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Under `--auth sigv4`, host directories besides `functions_dir` that
    /// a deploy through the API may capture code from (`base_dir`).
    pub code_dirs: Vec<PathBuf>,
    /// Join a cluster on a NATS JetStream broker (`--cluster`).
    pub cluster: Option<cluster::ClusterConfig>,
}

/// A function's log file rotates past this size ...
const LOG_FILE_BYTES: u64 = 8 << 20;
/// ... and this many rotated files are kept.
const LOG_FILES_KEPT: usize = 3;

/// How often records past their retention are deleted.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl PlatformConfig {
    pub fn new(addr: SocketAddr, data_dir: PathBuf) -> Self {
        PlatformConfig {
            addr,
            data_dir,
            functions_dir: None,
            builtin_runtime: None,
            isolation: true,
            jailer: None,
            cgroups: true,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            max_memory_mb: None,
            shutdown_grace: std::time::Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            retain_records: None,
            auth: access::AuthMode::None,
            allowed_hosts: Vec::new(),
            code_dirs: Vec::new(),
            cluster: None,
        }
    }
}

/// A running platform.
pub struct Platform {
    addr: SocketAddr,
    scheduler: Arc<Scheduler>,
    events: Arc<events::Events>,
    cluster: Option<Arc<cluster::Cluster>>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    grace: std::time::Duration,
}

impl Platform {
    /// Opens the data dir, restores deployed functions, deploys the functions
    /// dir and starts serving. Returns once the listener is bound.
    pub async fn start(mut config: PlatformConfig) -> Result<Platform, PlatformError> {
        // Absolute once: the jail, the code store and the logs derive their
        // paths from it, and an instance's jailer runs from `/`.
        config.data_dir = std::path::absolute(&config.data_dir)
            .map_err(|e| PlatformError::DataDir(config.data_dir.clone(), e))?;
        // Refused before anything starts: no auth off loopback.
        let code_dirs: Vec<PathBuf> = config
            .functions_dir
            .iter()
            .filter(|d| d.is_dir())
            .chain(&config.code_dirs)
            .cloned()
            .collect();
        let access = Arc::new(
            access::Access::new(
                &config.data_dir,
                config.auth,
                config.addr,
                &config.allowed_hosts,
            )?
            .with_code_dirs(&code_dirs)?,
        );
        create_private_dir(&config.data_dir)
            .map_err(|e| PlatformError::DataDir(config.data_dir.clone(), e))?;
        if config.auth == access::AuthMode::Sigv4 && access.keys.live()? == 0 {
            tracing::warn!(
                keys = %access.keys.path().display(),
                "--auth sigv4 without any key: every request but health checks is refused; create one with `virga keys create NAME --role admin`"
            );
        }
        let store = Arc::new(Store::open(&config.data_dir)?);
        let cluster = match &config.cluster {
            Some(c) => {
                let (cluster, records) = cluster::Cluster::join(c, &config.data_dir).await?;
                tracing::info!(node = %c.node, servers = %c.servers.join(","), "joined the cluster");
                Some((cluster, records))
            }
            None => None,
        };
        upkeep::start();
        if let Some(keep) = config.retain_records {
            // Once now, then every minute, off the async threads.
            let store = store.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PRUNE_EVERY);
                loop {
                    tick.tick().await;
                    let store = store.clone();
                    match tokio::task::spawn_blocking(move || store.prune(keep)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => {
                            tracing::info!(deleted = n, "records past their retention deleted")
                        }
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete old records"),
                        Err(_) => return,
                    }
                }
            });
        }
        let cgroups = if config.cgroups {
            sandbox::detect_cgroups(&config.cgroup_root)
        } else {
            None
        };
        match &cgroups {
            Some(c) => tracing::info!(kind = c.kind(), "instance limits enforced with cgroups"),
            None => tracing::warn!(
                "cgroups are not writable here: instances run without memory and CPU limits, and records say limits_enforced=false"
            ),
        }
        let search_path = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let isolation = isolation(&config)?;
        let scheduler = Scheduler::new(
            SchedulerConfig {
                isolation,
                code: code::CodeStore::new(&config.data_dir),
                search_path,
                builtin: config.builtin_runtime.clone(),
                log_files: Some(
                    logs::LogFiles::open(
                        &config.data_dir.join("logs"),
                        LOG_FILE_BYTES,
                        LOG_FILES_KEPT,
                    )
                    .map_err(|e| PlatformError::DataDir(config.data_dir.join("logs"), e))?,
                ),
                host_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                cgroups,
                max_memory_mb: config
                    .max_memory_mb
                    .unwrap_or_else(scheduler::budget::MemoryBudget::host_default_mb),
            },
            match &cluster {
                Some((c, _)) => Meter::with_sink(store, c.records()),
                None => Meter::new(store),
            },
        );
        let restored = scheduler.restore()?;
        if restored > 0 {
            tracing::info!(restored, "restored deployed functions");
        }
        if let Some(dir) = &config.functions_dir {
            deploy_dir(&scheduler, dir)?;
        }
        // The cluster's deployments after this node's own.
        let cluster = cluster.map(|(c, records)| {
            c.start(scheduler.clone(), records, access.clone());
            c
        });
        // After the functions, so resumed events find them.
        let broker = match &cluster {
            Some(c) => Some(c.event_queue().await?),
            None => None,
        };
        let events = events::Events::start_on(&config.data_dir, scheduler.clone(), broker)?;
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| PlatformError::Bind(config.addr, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| PlatformError::Bind(config.addr, e))?;
        let app = gateway::router(gateway::AppState {
            scheduler: scheduler.clone(),
            events: events.clone(),
            access,
            cluster: cluster.clone(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            gateway::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Platform {
            addr,
            scheduler,
            events,
            cluster,
            stop: Some(stop),
            server,
            grace: config.shutdown_grace,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn limits_enforced(&self) -> bool {
        self.scheduler.limits_enforced()
    }

    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }

    /// Stops gracefully: takes no new requests or deliveries, lets accepted
    /// invocations finish (at most the shutdown grace), then stops every
    /// instance and writes every record. Asynchronous events not delivered
    /// stay stored for the next start.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.events.stop();
        self.scheduler.stop_accepting();
        if let Some(c) = &self.cluster {
            c.leave().await;
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        let finished = self.scheduler.drain(self.grace).await && self.events.drain(deadline).await;
        if !finished {
            tracing::warn!(
                in_flight = self.scheduler.in_flight(),
                grace_ms = self.grace.as_millis() as u64,
                "shutdown grace over: stopping instances with invocations in flight"
            );
        }
        self.events.shutdown().await;
        self.scheduler.shutdown().await;
        // In-flight requests end quickly once their instances are gone.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.server).await;
        let store = self.scheduler.meter().store().clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        if let Some(files) = self.scheduler.log_files() {
            let _ = tokio::task::spawn_blocking(move || files.flush()).await;
        }
    }
}

/// The sandbox instances get, or why they get none (said once, here).
fn isolation(config: &PlatformConfig) -> Result<Option<scheduler::IsolationConfig>, PlatformError> {
    if !config.isolation {
        tracing::warn!("isolation is off: instances run as the platform's user, in its namespaces; records say isolation=none");
        return Ok(None);
    }
    let Some(jailer) = &config.jailer else {
        tracing::warn!("no jailer: instances run unsandboxed; records say isolation=none");
        return Ok(None);
    };
    if !sandbox::jail::host_can_sandbox() {
        tracing::warn!(
            "this host cannot sandbox instances (the platform is not root, or namespaces are not available): they run unsandboxed; records say isolation=none"
        );
        return Ok(None);
    }
    let root = config.data_dir.join("jail");
    create_private_dir(&root).map_err(|e| PlatformError::DataDir(root.clone(), e))?;
    tracing::info!("instances are sandboxed (own uid, namespaces, root, seccomp, pids limit)");
    Ok(Some(scheduler::IsolationConfig {
        helper: jailer.program.clone(),
        helper_args: jailer.args.clone(),
        root,
        data_dir: config.data_dir.clone(),
    }))
}

/// Creates `dir` (and its parents) and makes it `0700`: the data dir holds the
/// database, logs, keys and code bundles, none of which is anyone else's.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Deploys every `*.toml` in `dir`, in name order.
pub fn deploy_dir(scheduler: &Arc<Scheduler>, dir: &Path) -> Result<usize, PlatformError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PlatformError::FunctionsDir(dir.to_path_buf(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    for p in &paths {
        let text =
            std::fs::read_to_string(p).map_err(|e| PlatformError::FunctionsDir(p.clone(), e))?;
        scheduler.deploy(&text, &p.display().to_string(), &base)?;
    }
    Ok(paths.len())
}
