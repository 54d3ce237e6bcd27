//! One instance: a sandboxed process, the Runtime API listener it talks to, and
//! the hand-off of invocations between the scheduler and that listener.
//!
//! Lifecycle: `Starting` (spawned, initialising) -> `Ready` (first
//! `invocation/next` seen: that instant ends the cold start) -> `Dead` (the
//! process exited, on its own or killed). A death fails whatever the instance
//! was doing with the error Lambda would report.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use virga_spec::api::InstanceRole;
use virga_spec::contract::ForkOrder;
pub use virga_spec::Isolation;

use crate::logs::LogRing;
use crate::runtime_api;
use crate::sandbox::{self, Cgroup, Cgroups, SandboxError, SpawnSpec};

/// One event on its way to the runtime.
#[derive(Debug)]
pub struct Job {
    pub request_id: String,
    pub payload: Bytes,
    /// Unix milliseconds (`Lambda-Runtime-Deadline-Ms`).
    pub deadline_ms: u64,
    pub function_arn: String,
    pub trace_id: String,
    /// With batching: how many events the payload's `{"batch": [...]}` holds.
    pub batch_size: Option<usize>,
    pub reply: oneshot::Sender<Reply>,
}

/// What the runtime posted for a job.
#[derive(Debug)]
pub enum Reply {
    Response(Bytes),
    /// `invocation/{id}/error`: Lambda's error JSON (normalised) and its type.
    Error {
        error_type: String,
        body: Bytes,
    },
    /// A response over the size limit; the runtime was told 413.
    TooLarge {
        bytes: usize,
    },
}

/// Why an instance is gone, in Lambda's words.
#[derive(Debug, Clone, PartialEq)]
pub struct Death {
    /// `Runtime.ExitError`, `Runtime.InitError`, `Runtime.OutOfMemory`, ...
    pub error_type: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Starting,
    Ready { init_ms: f64 },
    Dead(Death),
}

/// State shared with the instance's Runtime API handlers.
pub(crate) struct Shared {
    pub(crate) jobs_tx: mpsc::Sender<Job>,
    pub(crate) jobs_rx: tokio::sync::Mutex<mpsc::Receiver<Job>>,
    pub(crate) pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    pub(crate) phase: watch::Sender<Phase>,
    pub(crate) init_error: Mutex<Option<Death>>,
    pub(crate) spawned_at: Instant,
    /// A spare's release: its restore is timed from here, not its fork.
    released_at: std::sync::OnceLock<Instant>,
    /// Set when the platform kills the instance (timeout, reap, drain).
    stopping: AtomicBool,
    pid: std::sync::OnceLock<u32>,
    /// Peak memory read just before the group was removed.
    final_peak: std::sync::OnceLock<u64>,
    /// Log lines of the invocation in flight, for `X-Amz-Log-Type: Tail`.
    capture: Mutex<Option<Vec<String>>>,
    /// A snap-start template's fork orders.
    pub(crate) desk: Option<ForkDesk>,
    /// Told (`notify_waiters`) when the instance got its next job or went
    /// back to its pool: the Runtime API's answer to a reply waits for it
    /// (a moment at most), so that answer and the runtime's pipelined next
    /// poll can leave in one write.
    pub(crate) settled: tokio::sync::Notify,
}

/// A template's side of the fork protocol (see `virga_worker::template`):
/// orders wait here for the template's long poll, and each waits in turn
/// for the template's report of the child it forked.
pub(crate) struct ForkDesk {
    orders_tx: mpsc::Sender<Order>,
    pub(crate) orders_rx: tokio::sync::Mutex<mpsc::Receiver<Order>>,
    pub(crate) placing: Mutex<HashMap<String, oneshot::Sender<Placement>>>,
}

/// What the template's next long poll takes.
pub(crate) enum Order {
    /// A fork, and where its report goes.
    Fork {
        order: ForkOrder,
        placed: oneshot::Sender<Placement>,
    },
    /// Let a held spare go on.
    Release { id: String },
}

/// A template's report of a fork: the child's pid as the template sees it,
/// and where the platform answers once the child is in its cgroup (or why
/// it is refused, when the template then kills it).
pub(crate) struct Placement {
    pub(crate) pid: i32,
    pub(crate) done: oneshot::Sender<Result<(), String>>,
}

impl Shared {
    pub(crate) fn new(desk: Option<ForkDesk>) -> Arc<Shared> {
        let (jobs_tx, jobs_rx) = mpsc::channel(16);
        let (phase, _) = watch::channel(Phase::Starting);
        Arc::new(Shared {
            jobs_tx,
            jobs_rx: tokio::sync::Mutex::new(jobs_rx),
            pending: Mutex::new(HashMap::new()),
            phase,
            init_error: Mutex::new(None),
            spawned_at: Instant::now(),
            released_at: std::sync::OnceLock::new(),
            stopping: AtomicBool::new(false),
            pid: std::sync::OnceLock::new(),
            capture: Mutex::new(None),
            final_peak: std::sync::OnceLock::new(),
            desk,
            settled: tokio::sync::Notify::new(),
        })
    }

    /// When the instance began: its spawn or fork, or a spare's release.
    fn born(&self) -> Instant {
        self.released_at.get().copied().unwrap_or(self.spawned_at)
    }

    /// `invocation/next` arrived: the first one ends initialisation.
    pub(crate) fn mark_ready(&self) {
        let init_ms = self.born().elapsed().as_secs_f64() * 1e3;
        self.phase.send_if_modified(|p| {
            if *p == Phase::Starting {
                *p = Phase::Ready { init_ms };
                true
            } else {
                false
            }
        });
    }

    /// The runtime reported `init/error`: remember why, then stop it (Lambda
    /// resets an environment whose init failed).
    pub(crate) fn fail_init(&self, death: Death) {
        *lock(&self.init_error) = Some(death);
        self.kill();
    }

    fn kill(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(&pid) = self.pid.get() {
            sandbox::kill_group(pid);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start an instance.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub id: String,
    pub spawn: SpawnSpec,
    /// Started before any request asked for it (pre-warmed or provisioned).
    pub ahead: bool,
    /// A snap-start template: it takes fork orders instead of invocations.
    pub template: bool,
}

/// How to fork an instance from a template.
#[derive(Debug, Clone)]
pub struct ForkSpec {
    pub id: String,
    /// The name of its cgroup.
    pub name: String,
    pub limits: sandbox::Limits,
    /// Set in the child before it polls (its log stream, init type).
    pub env: Vec<(String, String)>,
    pub ahead: bool,
}

/// Longest wait for a template to fork a child and report it.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// A child forked and placed in its cgroup, not yet an [`Instance`].
struct Placed {
    id: String,
    pid: u32,
    isolation: Isolation,
    shared: Arc<Shared>,
    cgroup: Option<Arc<dyn Cgroup>>,
    server: AbortHandle,
}

impl Placed {
    fn into_instance(self, ahead: bool) -> Arc<Instance> {
        Arc::new(Instance {
            id: self.id,
            pid: self.pid,
            limits_enforced: self.cgroup.is_some(),
            isolation: self.isolation,
            started: chrono::Utc::now(),
            invocations: std::sync::atomic::AtomicU64::new(0),
            ahead,
            role: InstanceRole::Forked,
            shared: self.shared,
            cgroup: self.cgroup,
            server: self.server,
            netns: None,
        })
    }
}

/// A child a template forked and the platform placed ahead of need, held
/// by the template until a cold start takes it: the fork and the cgroup
/// move (on cgroup v1 a wait for an RCU grace period) are off the cold
/// start's path, which only releases it. Dropped unreleased, it is killed.
pub struct Spare {
    placed: Option<Placed>,
    template: String,
    orders_tx: mpsc::Sender<Order>,
    /// How long forking and placing it took.
    pub prepare_ms: f64,
    pub prepared: chrono::DateTime<chrono::Utc>,
}

impl Spare {
    /// Forks and places a spare of `template` with the identity `spec`
    /// gives it (its id, cgroup and environment).
    pub async fn prepare(
        template: &Instance,
        spec: ForkSpec,
        cgroups: Option<&dyn Cgroups>,
    ) -> Result<Spare, SandboxError> {
        let t0 = Instant::now();
        let placed = Instance::place(template, spec, cgroups, true).await?;
        let orders_tx = match &template.shared.desk {
            Some(desk) => desk.orders_tx.clone(),
            None => unreachable!("placed by a template"),
        };
        Ok(Spare {
            placed: Some(placed),
            template: template.id.clone(),
            orders_tx,
            prepare_ms: t0.elapsed().as_secs_f64() * 1e3,
            prepared: chrono::Utc::now(),
        })
    }

    /// Whether it was forked from `template` and still lives.
    pub fn usable_with(&self, template: &Instance) -> bool {
        self.template == template.id
            && self
                .placed
                .as_ref()
                .is_some_and(|p| !matches!(*p.shared.phase.borrow(), Phase::Dead(_)))
    }

    pub fn id(&self) -> &str {
        self.placed.as_ref().map_or("", |p| &p.id)
    }

    pub fn pid(&self) -> u32 {
        self.placed.as_ref().map_or(0, |p| p.pid)
    }

    pub fn isolation(&self) -> Isolation {
        self.placed
            .as_ref()
            .map_or(Isolation::None, |p| p.isolation)
    }

    pub fn limits_enforced(&self) -> bool {
        self.placed.as_ref().is_some_and(|p| p.cgroup.is_some())
    }

    /// Lets the spare go on as an instance; its restore is timed from now.
    pub async fn release(mut self, ahead: bool) -> Result<Arc<Instance>, SandboxError> {
        let placed = self.placed.take().expect("released once");
        let _ = placed.shared.released_at.set(Instant::now());
        let release = Order::Release {
            id: placed.id.clone(),
        };
        if self.orders_tx.send(release).await.is_err() {
            placed.shared.kill();
            placed.server.abort();
            return Err(SandboxError::Fork("the template is gone".into()));
        }
        Ok(placed.into_instance(ahead))
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some(p) = self.placed.take() {
            p.shared.kill();
            p.server.abort();
        }
    }
}

/// A running (or just died) instance.
pub struct Instance {
    pub id: String,
    /// For display and `/proc` reads only: signals go through `kill_group`.
    pub pid: u32,
    pub limits_enforced: bool,
    pub isolation: Isolation,
    pub started: chrono::DateTime<chrono::Utc>,
    /// Invocations delivered to this instance.
    pub invocations: std::sync::atomic::AtomicU64,
    /// Started before any request asked for it: its first invocation is
    /// recorded as `prewarmed`.
    pub ahead: bool,
    pub role: InstanceRole,
    shared: Arc<Shared>,
    cgroup: Option<Arc<dyn Cgroup>>,
    server: AbortHandle,
    /// A confined template's network namespace: its children's Runtime API
    /// listeners are bound in it.
    netns: Option<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

/// The outcome of running one job.
#[derive(Debug)]
pub enum RunResult {
    Reply(Reply),
    Died(Death),
    TimedOut,
}

impl Instance {
    /// Starts the process with its own Runtime API listener. Returns once the
    /// process is spawned; [`Instance::ready`] waits for its initialisation.
    pub async fn launch(
        spec: LaunchSpec,
        cgroups: Option<&dyn Cgroups>,
        logs: Arc<LogRing>,
    ) -> Result<Arc<Instance>, SandboxError> {
        // A jailed instance gets its own network namespace with the listener
        // inside at Lambda's fixed address; others share the platform's
        // loopback on an ephemeral port.
        let (listener, api_addr, net) = if spec.spawn.jail.is_some() {
            let net = tokio::task::spawn_blocking(sandbox::netns::new_instance_net)
                .await
                .map_err(|e| SandboxError::Listener(std::io::Error::other(e)))?
                .map_err(SandboxError::Listener)?;
            let listener = to_tokio(net.listener)?;
            (
                listener,
                sandbox::netns::RUNTIME_API_ADDR.to_string(),
                Some(net.namespace),
            )
        } else {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(SandboxError::Listener)?;
            let addr = listener.local_addr().map_err(SandboxError::Listener)?;
            (listener, addr.to_string(), None)
        };
        let desk = spec.template.then(|| {
            let (orders_tx, orders_rx) = mpsc::channel(64);
            ForkDesk {
                orders_tx,
                orders_rx: tokio::sync::Mutex::new(orders_rx),
                placing: Mutex::new(HashMap::new()),
            }
        });
        let shared = Shared::new(desk);
        let server = tokio::spawn(runtime_api::serve(listener, shared.clone())).abort_handle();

        let mut spawn_spec = spec.spawn;
        spawn_spec
            .env
            .push(("AWS_LAMBDA_RUNTIME_API".into(), api_addr));
        if spec.template {
            spawn_spec.env.push((
                virga_spec::contract::SNAP_START.into(),
                virga_spec::contract::SNAP_START_TEMPLATE.into(),
            ));
        }
        let spawned = blocking(|| sandbox::spawn(&spawn_spec, cgroups, net.as_ref()));
        // The instance has joined its namespace (or failed to start); a
        // template keeps it for its children's listeners.
        let netns = if spec.template { net } else { None };
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                server.abort();
                return Err(e);
            }
        };
        let mut child = spawned.child;
        // Just spawned, so not yet reaped: the pid is there.
        let pid = child.id();
        if let Some(pid) = pid {
            let _ = shared.pid.set(pid);
        }
        let cgroup: Option<Arc<dyn Cgroup>> = spawned.cgroup.map(Arc::from);

        if let Some(out) = child.stdout.take() {
            tokio::spawn(pump_lines(out, shared.clone(), logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(pump_lines(err, shared.clone(), logs));
        }

        let watcher_shared = shared.clone();
        let watcher_cgroup = cgroup.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let reason = match &status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(code), _) => format!("exit status {code}"),
                    (_, Some(libc::SIGKILL)) => "signal: killed".to_string(),
                    (_, Some(sig)) => format!("signal: {sig}"),
                    _ => "unknown exit".to_string(),
                },
                Err(e) => format!("wait failed: {e}"),
            };
            bury(&watcher_shared, watcher_cgroup, pid, &reason).await;
        });

        Ok(Arc::new(Instance {
            id: spec.id,
            pid: pid.unwrap_or_default(),
            limits_enforced: cgroup.is_some(),
            isolation: if spawn_spec.jail.is_some() {
                Isolation::Sandbox
            } else {
                Isolation::None
            },
            started: chrono::Utc::now(),
            invocations: std::sync::atomic::AtomicU64::new(0),
            ahead: spec.ahead,
            role: if spec.template {
                InstanceRole::Template
            } else {
                InstanceRole::Spawned
            },
            shared,
            cgroup,
            server,
            netns,
        }))
    }

    /// Forks an instance from `template` (a ready snap-start template):
    /// see `Instance::place`; the template then lets the child go at once.
    /// Returns once the child is released; [`Instance::ready`] waits for
    /// its first poll (the restore time).
    pub async fn fork(
        template: &Instance,
        spec: ForkSpec,
        cgroups: Option<&dyn Cgroups>,
    ) -> Result<Arc<Instance>, SandboxError> {
        let ahead = spec.ahead;
        Ok(Instance::place(template, spec, cgroups, false)
            .await?
            .into_instance(ahead))
    }

    /// Binds the child's Runtime API listener (in the template's network
    /// namespace when it is confined), makes its cgroup, orders the fork,
    /// and moves the child into the cgroup before it runs. With `hold`, the
    /// template keeps the child waiting for a release order.
    async fn place(
        template: &Instance,
        spec: ForkSpec,
        cgroups: Option<&dyn Cgroups>,
        hold: bool,
    ) -> Result<Placed, SandboxError> {
        let Some(desk) = &template.shared.desk else {
            return Err(SandboxError::Fork(format!(
                "{} is not a template",
                template.id
            )));
        };
        let listener = match &template.netns {
            Some(ns) => {
                let ns = ns.try_clone().map_err(SandboxError::Listener)?;
                to_tokio(
                    tokio::task::spawn_blocking(move || sandbox::netns::bind_in(&ns))
                        .await
                        .map_err(|e| SandboxError::Listener(std::io::Error::other(e)))?
                        .map_err(SandboxError::Listener)?,
                )?
            }
            None => tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .map_err(SandboxError::Listener)?,
        };
        let api_addr = listener
            .local_addr()
            .map_err(SandboxError::Listener)?
            .to_string();
        let cgroup: Option<Arc<dyn Cgroup>> = match cgroups {
            Some(c) => Some(Arc::from(
                c.create(&spec.name, &spec.limits)
                    .map_err(|e| SandboxError::Cgroup(spec.name.clone(), e))?,
            )),
            None => None,
        };
        let shared = Shared::new(None);
        let server = tokio::spawn(runtime_api::serve(listener, shared.clone())).abort_handle();
        let fail = |e: SandboxError| {
            server.abort();
            if let Some(g) = &cgroup {
                g.remove();
            }
            e
        };

        let (placed_tx, placed_rx) = oneshot::channel();
        let order = Order::Fork {
            order: ForkOrder {
                id: spec.id.clone(),
                runtime_api: api_addr,
                env: spec.env,
                hold,
            },
            placed: placed_tx,
        };
        if desk.orders_tx.send(order).await.is_err() {
            return Err(fail(SandboxError::Fork("the template is gone".into())));
        }
        let placement = tokio::select! {
            waited = tokio::time::timeout(FORK_TIMEOUT, placed_rx) => match waited {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(fail(SandboxError::Fork("the template is gone".into()))),
                Err(_) => {
                    return Err(fail(SandboxError::Fork(format!(
                        "the template did not fork within {} s",
                        FORK_TIMEOUT.as_secs()
                    ))))
                }
            },
            // An order a dead template never took would wait for nothing.
            _ = template.dead() => {
                return Err(fail(SandboxError::Fork("the template died".into())))
            }
        };
        let placed = template
            .host_pid_of(placement.pid)
            .ok_or_else(|| {
                SandboxError::Fork(format!(
                    "the template's child {} is not among its processes",
                    placement.pid
                ))
            })
            .and_then(|pid| {
                if let Some(g) = &cgroup {
                    for file in g.procs_files() {
                        std::fs::write(&file, pid.to_string())
                            .map_err(|e| SandboxError::Cgroup(spec.name.clone(), e))?;
                    }
                }
                let exited = sandbox::ProcessFd::open(pid).map_err(|e| {
                    SandboxError::Fork(format!("cannot watch the forked process {pid}: {e}"))
                })?;
                Ok((pid, exited))
            });
        let (pid, exited) = match placed {
            Ok(p) => p,
            Err(e) => {
                let _ = placement.done.send(Err(e.to_string()));
                return Err(fail(e));
            }
        };
        let _ = shared.pid.set(pid as u32);
        if placement.done.send(Ok(())).is_err() {
            // The template hung up before releasing it: the child waits on
            // a pipe that is now closed, and exits.
            sandbox::kill_group(pid as u32);
        }

        let watcher_shared = shared.clone();
        let watcher_cgroup = cgroup.clone();
        tokio::spawn(async move {
            exited.exited().await;
            // Its exit status is its parent's (the template's) to read.
            let reason = if watcher_shared.stopping.load(Ordering::SeqCst) {
                "signal: killed"
            } else {
                "the forked process ended"
            };
            bury(&watcher_shared, watcher_cgroup, Some(pid as u32), reason).await;
        });

        Ok(Placed {
            id: spec.id,
            pid: pid as u32,
            isolation: template.isolation,
            shared,
            cgroup,
            server,
        })
    }

    /// The platform's pid of a process a template forked, from the pid the
    /// template saw (in its own pid namespace when confined): among the
    /// template's group (where a child starts), the process whose innermost
    /// pid is `inner` and, when confined, which shares its network namespace.
    fn host_pid_of(&self, inner: i32) -> Option<i32> {
        if inner <= 0 {
            return None;
        }
        if self.isolation == Isolation::None {
            return Some(inner);
        }
        let netns = {
            use std::os::fd::AsRawFd;
            let fd = self.netns.as_ref()?.as_raw_fd();
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?
        };
        let candidates: Vec<i32> = match &self.cgroup {
            Some(g) => g.pids(),
            None => std::fs::read_dir("/proc")
                .ok()?
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
        };
        candidates.into_iter().find(|&pid| {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            let nested = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default();
            nested.len() >= 2
                && nested.last() == Some(&inner.to_string().as_str())
                && std::fs::metadata(format!("/proc/{pid}/ns/net"))
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m) == netns)
                    .unwrap_or(false)
        })
    }

    /// Waits for the end of initialisation; returns the init duration (ms).
    pub async fn ready(&self, limit: Duration) -> Result<f64, RunResult> {
        let mut rx = self.shared.phase.subscribe();
        let waited =
            tokio::time::timeout(limit, rx.wait_for(|p| !matches!(p, Phase::Starting))).await;
        match waited {
            Err(_) => {
                self.kill();
                Err(RunResult::TimedOut)
            }
            Ok(Err(_)) => Err(RunResult::Died(self.death())),
            Ok(Ok(p)) => match &*p {
                Phase::Ready { init_ms } => Ok(*init_ms),
                Phase::Dead(d) => Err(RunResult::Died(d.clone())),
                Phase::Starting => unreachable!("waited past Starting"),
            },
        }
    }

    /// Hands `job` to the runtime and waits for its reply, the instance's
    /// death, or `timeout` (which kills the instance).
    pub async fn run(
        &self,
        job: Job,
        reply: oneshot::Receiver<Reply>,
        timeout: Duration,
    ) -> RunResult {
        let mut phase = self.shared.phase.subscribe();
        if self.shared.jobs_tx.send(job).await.is_err() {
            return RunResult::Died(self.death());
        }
        self.shared.settled.notify_waiters();
        let sleep = tokio::time::sleep(timeout);
        let result = tokio::select! {
            biased;
            r = reply => r.ok().map(RunResult::Reply),
            _ = phase.wait_for(|p| matches!(p, Phase::Dead(_))) => None,
            _ = sleep => {
                self.kill();
                return RunResult::TimedOut;
            }
        };
        match result {
            Some(r) => r,
            None => {
                // The reply channel closes when the instance dies: wait for the cause.
                let _ = phase.wait_for(|p| matches!(p, Phase::Dead(_))).await;
                RunResult::Died(self.death())
            }
        }
    }

    fn death(&self) -> Death {
        match &*self.shared.phase.borrow() {
            Phase::Dead(d) => d.clone(),
            _ => Death {
                error_type: "Runtime.ExitError".into(),
                message: "Runtime exited".into(),
            },
        }
    }

    /// Time since the process was spawned, in ms.
    pub fn age_ms(&self) -> f64 {
        self.shared.born().elapsed().as_secs_f64() * 1e3
    }

    pub fn is_dead(&self) -> bool {
        matches!(*self.shared.phase.borrow(), Phase::Dead(_))
    }

    pub fn phase(&self) -> Phase {
        self.shared.phase.borrow().clone()
    }

    /// Resolves once the process has exited.
    pub async fn dead(&self) {
        let mut rx = self.shared.phase.subscribe();
        let _ = rx.wait_for(|p| matches!(p, Phase::Dead(_))).await;
    }

    /// Stops the instance (keep-alive expiry, timeout, redeploy).
    pub fn kill(&self) {
        self.shared.kill();
    }

    /// Peak memory of the instance so far, in MB (rounded up).
    pub fn peak_memory_mb(&self) -> Option<u32> {
        let bytes = match (self.shared.final_peak.get(), &self.cgroup) {
            (Some(&peak), _) => Some(peak),
            (None, Some(g)) => g.peak_memory_bytes(),
            (None, None) => sandbox::vm_hwm_bytes(self.pid),
        }?;
        Some(bytes.div_ceil(1024 * 1024) as u32)
    }

    /// The instance went back to its pool, or was let go: an answer to its
    /// runtime held for it (`Shared::settled`) leaves now.
    pub fn settled(&self) {
        self.shared.settled.notify_waiters();
    }

    /// Starts collecting the instance's output for one invocation's log tail.
    pub fn begin_capture(&self) {
        *lock(&self.shared.capture) = Some(Vec::new());
    }

    /// Ends the collection and returns what was printed.
    pub async fn end_capture(&self) -> Vec<String> {
        // Output written just before the reply may still be in the pipe:
        // give the readers a turn before closing the window.
        tokio::task::yield_now().await;
        lock(&self.shared.capture).take().unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shared.kill();
        self.server.abort();
    }
}

/// Runs blocking work (cgroup writes, a fork and exec) without stalling
/// the tasks that share this thread: on a multi-threaded runtime the
/// thread's other tasks move on meanwhile; a current-thread runtime (tests)
/// runs it in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A listener bound by std (inside a namespace, on a thread of its own),
/// made the async runtime's.
fn to_tokio(listener: std::net::TcpListener) -> Result<tokio::net::TcpListener, SandboxError> {
    listener
        .set_nonblocking(true)
        .map_err(SandboxError::Listener)?;
    tokio::net::TcpListener::from_std(listener).map_err(SandboxError::Listener)
}

/// After an instance's process ended (`reason`, in Lambda's words): its
/// death as Lambda names it, whatever its group left behind killed, its
/// cgroup removed, and only then the death announced.
async fn bury(
    shared: &Arc<Shared>,
    cgroup: Option<Arc<dyn Cgroup>>,
    pid: Option<u32>,
    reason: &str,
) {
    let oom = cgroup.as_ref().is_some_and(|g| g.oom_killed());
    let death = if let Some(d) = lock(&shared.init_error).take() {
        d
    } else if oom {
        Death {
            error_type: "Runtime.OutOfMemory".into(),
            message: format!("Runtime exited with error: {reason}"),
        }
    } else {
        Death {
            error_type: "Runtime.ExitError".into(),
            message: format!("Runtime exited with error: {reason}"),
        }
    };
    // Whatever the group left behind goes too (a forked helper, say).
    if let Some(pid) = pid {
        sandbox::kill_group(pid);
    }
    // The group goes before the death is announced, so a platform that
    // waits for its instances to die leaves no cgroup behind.
    if let Some(g) = cgroup {
        if let Some(peak) = g.peak_memory_bytes() {
            let _ = shared.final_peak.set(peak);
        }
        let _ = tokio::task::spawn_blocking(move || {
            // A jailed instance's init and runtime die just after the
            // process the platform spawned: wait for them.
            g.empty(std::time::Duration::from_secs(5));
            g.remove()
        })
        .await;
    }
    shared.phase.send_replace(Phase::Dead(death));
    lock(&shared.pending).clear();
    if let Some(desk) = &shared.desk {
        // Forks it reported but the platform had not placed yet are refused.
        lock(&desk.placing).clear();
    }
}

/// Longest log line kept; the rest of a longer line is dropped.
const MAX_LOG_LINE: usize = 16 * 1024;

/// Copies an instance's output, line by line, to the function's log. Reads
/// until the pipe closes whatever it carries (binary, endless lines), so a
/// chatty runtime never blocks on a full pipe.
async fn pump_lines(stream: impl AsyncRead + Unpin, shared: Arc<Shared>, logs: Arc<LogRing>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(b) => b,
        };
        let (chunk, consumed, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if complete {
            emit(&shared, &logs, &line);
            line.clear();
        }
    }
    if !line.is_empty() {
        emit(&shared, &logs, &line);
    }
}

fn emit(shared: &Shared, logs: &LogRing, line: &[u8]) {
    let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
    if let Some(c) = lock(&shared.capture).as_mut() {
        c.push(line.clone().into_owned());
    }
    logs.push(line);
}
