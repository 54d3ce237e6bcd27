//! The run of one invocation: admission, a slot (warm, or a cold start
//! within the memory budget), execution on the instance, and its record.

use super::*;

/// Stops an instance nobody claimed.
pub(super) struct KillOnDrop(Option<Arc<Instance>>);

impl KillOnDrop {
    pub(super) fn disarm(mut self) {
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

/// The run of one request, boxed so that it can move to a task of its own
/// once started.
pub(super) type Run = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Awaits a run in the awaiting task and, dropped before its end (the
/// caller went away), spawns the rest onto a task of its own: an accepted
/// invocation runs to its end whoever stops waiting for it. Only when no
/// runtime is left to spawn on, or the run itself panicked, is the rest
/// dropped (its lease still gives the slot back).
pub(super) struct RunToEnd(pub(super) Option<Run>);

impl std::future::Future for RunToEnd {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if let Some(run) = self.0.as_mut() {
            std::task::ready!(run.as_mut().poll(cx));
            self.0 = None;
        }
        std::task::Poll::Ready(())
    }
}

impl Drop for RunToEnd {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            // A run unwinding from a panic cannot be polled again.
            if std::thread::panicking() {
                return;
            }
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(run);
            }
        }
    }
}

/// An accepted request on its way: queued, waiting for a batch, running.
/// Its caller waits on the other end of `reply`; whether it still does is
/// `reply.is_closed()`.
pub(super) struct Pending {
    pub(super) req: InvokeRequest,
    pub(super) request_id: String,
    pub(super) received_at: String,
    pub(super) arrived: Instant,
    pub(super) reply: oneshot::Sender<Result<Invocation, InvokeError>>,
    /// Moves to newer revisions so far.
    pub(super) hops: u8,
    pub(super) _track: Track,
    /// In a cluster: its place in this node's share of `max_concurrency`,
    /// held until the request is done.
    pub(super) share: Option<super::share::SharePermit>,
}

impl Pending {
    /// A synchronous caller stopped waiting.
    pub(super) fn caller_gone(&self) -> bool {
        self.req.has_caller && self.reply.is_closed()
    }

    pub(super) fn answer(self, answer: Result<Invocation, InvokeError>) {
        let _ = self.reply.send(answer);
    }
}

/// What running one invocation on an instance gave, before records.
pub(super) struct Executed {
    /// Init (spawned) or restore (forked) time of a cold start.
    pub(super) init_ms: Option<f64>,
    /// The cold start forked a snap-start template: `init_ms` is a restore.
    pub(super) restored: bool,
    /// How the instance started; `None` when none ran it.
    pub(super) start: Option<Start>,
    pub(super) instance_id: Option<String>,
    pub(super) task_started_at: Option<String>,
    pub(super) duration_ms: f64,
    pub(super) max_memory_mb: Option<u32>,
    pub(super) limits_enforced: bool,
    pub(super) isolation: Isolation,
    pub(super) mode: Mode,
    pub(super) vcpu: f64,
    pub(super) batch_size: u32,
    /// For a caller that asked for the tail, the instance's output (none
    /// where it cannot be told apart); `None` when nobody reads a log.
    pub(super) output: Option<Vec<String>>,
    pub(super) outcome: Result<Bytes, Failure>,
}

impl Executed {
    /// Copies what every record of this invocation shares.
    pub(super) fn fill(&self, r: &mut InvocationRecord) {
        r.cold = self.init_ms.is_some();
        r.start = self.start;
        if self.restored {
            r.restore_ms = self.init_ms;
            r.init_ms = None;
        } else {
            r.init_ms = self.init_ms;
        }
        r.instance_id = self.instance_id.clone();
        r.task_started_at = self.task_started_at.clone();
        r.duration_ms = self.duration_ms;
        r.max_memory_mb = self.max_memory_mb.or(r.max_memory_mb);
        r.limits_enforced = self.limits_enforced;
        r.isolation = self.isolation;
        r.mode = self.mode;
        r.vcpu = Some(self.vcpu);
        r.batch_size = self.batch_size;
    }
}

/// A record's billed time: Lambda's per-ms rule for functions (the requests
/// of a batch share their invocation's), per second with a one-minute
/// minimum for a job's task, and nothing per request for a service, whose
/// tasks are billed per second of task time (`virga cost`, Fargate profiles).
pub(super) fn bill(r: &InvocationRecord) -> u64 {
    match r.mode {
        Mode::Function => {
            billed_ms(r.duration_ms, r.init_ms).div_ceil(u64::from(r.batch_size.max(1)))
        }
        Mode::Job => task_billed_ms(r.duration_ms, r.init_ms),
        Mode::Service => 0,
    }
}

/// A failed invocation, before it becomes a record.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) status: Status,
    pub(super) error_type: String,
    pub(super) message: String,
    pub(super) init_ms: Option<f64>,
    /// The runtime's own error document, when it wrote one.
    pub(super) body: Option<Bytes>,
}

impl Failure {
    pub(super) fn new(status: Status, error_type: &str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            error_type: error_type.to_string(),
            message: message.into(),
            init_ms: None,
            body: None,
        }
    }
}

/// A start the platform could not carry out, in Lambda's words.
fn start_failure(e: SandboxError) -> Failure {
    match e {
        SandboxError::Spawn { .. } => {
            Failure::new(Status::Error, "Runtime.InvalidEntrypoint", e.to_string())
        }
        // The platform's own fault, not the function's: Lambda reports what
        // it cannot attribute to the function's code as `Runtime.Unknown`.
        // (Its Invoke API `ServiceException` would fail the call before any
        // record; here the attempt is recorded like any failed start.)
        SandboxError::Cgroup(..) | SandboxError::Listener(_) | SandboxError::Fork(_) => {
            Failure::new(Status::Error, "Runtime.Unknown", e.to_string())
        }
    }
}

/// Waits for a started instance's initialisation (its first poll), within
/// the init limit; a death or the limit becomes the start's failure.
async fn await_ready(inst: &Arc<Instance>) -> Result<f64, Failure> {
    // Should this wait be dropped, nothing would own the instance: stop it.
    let unclaimed = KillOnDrop(Some(inst.clone()));
    let ready = inst.ready(INIT_TIMEOUT).await;
    unclaimed.disarm();
    match ready {
        Ok(init_ms) => Ok(init_ms),
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

/// The instance's `AWS_LAMBDA_LOG_STREAM_NAME`: the function's prefix and
/// its id.
fn log_stream(f: &Function, id: &str) -> String {
    let prefix = f
        .spawn
        .env
        .iter()
        .find(|(k, _)| k == "AWS_LAMBDA_LOG_STREAM_NAME")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    format!("{prefix}{id}")
}

/// Appends the instance's id to the log stream a spawn spec (a copy of
/// the function's) carries.
fn set_log_stream(spawn: &mut SpawnSpec, id: &str) {
    if let Some((_, v)) = spawn
        .env
        .iter_mut()
        .find(|(k, _)| k == "AWS_LAMBDA_LOG_STREAM_NAME")
    {
        v.push_str(id);
    }
}

impl Scheduler {
    /// Starts an instance of `f` and waits for its initialisation. The
    /// instance holds `memory` until its process is gone.
    pub(super) async fn start_instance(
        self: &Arc<Self>,
        f: &Arc<Function>,
        init_type: &str,
        memory: Reservation,
    ) -> Result<(Arc<Instance>, f64), Failure> {
        let seq = self.instance_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{:x}", f.manifest.name, f.version, seq);
        let ahead = init_type != "on-demand";
        let launched = if f.manifest.snap_start == SnapStart::Fork {
            let template = self.template_of(f).await?;
            let spare = lock(&f.spare).take().filter(|s| s.usable_with(&template));
            let launched = match spare {
                Some(spare) => spare.release(ahead).await,
                None => {
                    Instance::fork(
                        &template,
                        self.fork_spec(f, id, ahead),
                        self.config.cgroups.as_deref(),
                    )
                    .await
                }
            };
            self.prepare_spare(f, &template);
            launched
        } else {
            let mut spawn = f.spawn.clone();
            spawn.name = format!("{}-{}", id, std::process::id());
            spawn
                .env
                .push(("AWS_LAMBDA_INITIALIZATION_TYPE".into(), init_type.into()));
            set_log_stream(&mut spawn, &id);
            Instance::launch(
                LaunchSpec {
                    id,
                    spawn,
                    ahead,
                    template: false,
                },
                self.config.cgroups.as_deref(),
                f.logs.clone(),
            )
            .await
        };
        let inst = launched.map_err(start_failure)?;
        lock(&f.instances).insert(inst.id.clone(), inst.clone());
        // Forget the instance when it dies, wherever it is.
        let watch_f = f.clone();
        let watch_i = inst.clone();
        tokio::spawn(async move {
            watch_i.dead().await;
            drop(memory);
            lock(&watch_f.instances).remove(&watch_i.id);
            if watch_f.forget(&watch_i) {
                tracing::info!(instance = %watch_i.id, "idle instance exited");
            }
        });
        let init_ms = await_ready(&inst).await?;
        Ok((inst, init_ms))
    }

    /// How to fork an instance `id` of `f`.
    fn fork_spec(&self, f: &Function, id: String, ahead: bool) -> ForkSpec {
        let env = vec![
            // Lambda's value for every SnapStart environment.
            (
                "AWS_LAMBDA_INITIALIZATION_TYPE".to_string(),
                "snap-start".to_string(),
            ),
            ("AWS_LAMBDA_LOG_STREAM_NAME".to_string(), log_stream(f, &id)),
        ];
        ForkSpec {
            name: format!("{}-{}", id, std::process::id()),
            id,
            limits: f.spawn.limits,
            env,
            ahead,
        }
    }

    /// Forks and places the next cold start's spare in the background,
    /// unless one is ready or on its way. A failure only costs the next
    /// cold start its head start: it forks as without a spare.
    fn prepare_spare(self: &Arc<Self>, f: &Arc<Function>, template: &Arc<Instance>) {
        if f.retired.load(Ordering::SeqCst)
            || lock(&f.spare)
                .as_ref()
                .is_some_and(|s| s.usable_with(template))
            || f.making_spare.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let (me, f, template) = (self.clone(), f.clone(), template.clone());
        tokio::spawn(async move {
            let seq = me.instance_seq.fetch_add(1, Ordering::Relaxed);
            let id = format!("{}-{}-{:x}", f.manifest.name, f.version, seq);
            let spec = me.fork_spec(&f, id, false);
            match Spare::prepare(&template, spec, me.config.cgroups.as_deref()).await {
                Ok(spare) => {
                    tracing::debug!(function = %f.manifest.name, spare = %spare.id(), prepare_ms = spare.prepare_ms, "spare forked and placed");
                    let mut slot = lock(&f.spare);
                    // Retired meanwhile: dropping it kills it.
                    if !f.retired.load(Ordering::SeqCst) && !template.is_dead() {
                        *slot = Some(spare);
                    }
                }
                Err(e) => {
                    tracing::warn!(function = %f.manifest.name, error = %e, "cannot prepare a snap-start spare");
                }
            }
            f.making_spare.store(false, Ordering::SeqCst);
        });
    }

    /// The ready snap-start template of `f`, made (load and warm-up) when
    /// there is none or the last one died. It holds `memory_mb` of the
    /// host budget while it lives; its failure to start fails the cold
    /// start that needed it.
    async fn template_of(self: &Arc<Self>, f: &Arc<Function>) -> Result<Arc<Instance>, Failure> {
        let _one_at_a_time = f.making_template.lock().await;
        if let Some(t) = lock(&f.template).as_ref() {
            if !t.is_dead() {
                return Ok(t.clone());
            }
            let why = match t.phase() {
                Phase::Dead(d) => format!("{}: {}", d.error_type, d.message),
                _ => "gone".into(),
            };
            tracing::warn!(function = %f.manifest.name, template = %t.id, %why, "the snap-start template died; making a new one");
            // In the function's log too, where its owner looks.
            f.logs.push(format!(
                "virga: snap-start template {} died ({why}); making a new one",
                t.id
            ));
        }
        let memory = self.reserve_memory(f).await.map_err(|e| {
            Failure::new(
                Status::Error,
                "Runtime.Unknown",
                format!("cannot make the snap-start template: {e}"),
            )
        })?;
        let seq = self.instance_seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-template-{:x}", f.manifest.name, f.version, seq);
        let mut spawn = f.spawn.clone();
        spawn.name = format!("{}-{}", id, std::process::id());
        spawn
            .env
            .push(("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "snap-start".into()));
        set_log_stream(&mut spawn, &id);
        let t = Instance::launch(
            LaunchSpec {
                id,
                spawn,
                ahead: false,
                template: true,
            },
            self.config.cgroups.as_deref(),
            f.logs.clone(),
        )
        .await
        .map_err(start_failure)?;
        await_ready(&t).await.map_err(|f| Failure {
            message: format!("snap-start template: {}", f.message),
            ..f
        })?;
        let watch = t.clone();
        tokio::spawn(async move {
            watch.dead().await;
            drop(memory);
        });
        let mut slot = lock(&f.template);
        if f.retired.load(Ordering::SeqCst) {
            t.kill();
            return Err(Failure::new(
                Status::Error,
                "Runtime.Unknown",
                "the function was redeployed or deleted while its snap-start template started",
            ));
        }
        *slot = Some(t.clone());
        tracing::info!(function = %f.manifest.name, template = %t.id, "snap-start template ready");
        Ok(t)
    }

    /// Runs one invocation end to end and returns its answer.
    ///
    /// The invocation runs in the caller's task while the caller waits (no
    /// task hop between the caller, the dispatch and the answer) inside a
    /// `RunToEnd`, which holds its slot: a caller that stops waiting (this
    /// future dropped) moves the rest onto a task of its own, so it runs to
    /// its end, is recorded with `caller_gone`, and its instance goes back
    /// to its pool. A request still queued when its caller leaves is taken
    /// out of the queue and recorded as `ClientClosed`.
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
            share: None,
        };
        if let Some(run) = self.clone().route(pending, None) {
            RunToEnd(Some(run)).await;
        }
        // The pending request is dropped unanswered only when the runtime
        // stops under it.
        answer.await.unwrap_or(Err(InvokeError::ShuttingDown))
    }

    /// Routes a request to its function's current revision: into the batch
    /// dispatcher's queue, or onto a task of its own. `prev` is the revision
    /// it was queued on when a redeploy or delete moved it here.
    pub(super) fn submit(self: Arc<Self>, p: Pending, prev: Option<Arc<Function>>) {
        if let Some(run) = self.route(p, prev) {
            tokio::spawn(run);
        }
    }

    /// `submit`'s routing: the run of `p` when it is to run on its own (for
    /// the caller to await or spawn), `None` when it went to a batch
    /// dispatcher or was answered already.
    fn route(self: Arc<Self>, mut p: Pending, prev: Option<Arc<Function>>) -> Option<Run> {
        if self.closing.load(Ordering::SeqCst) {
            p.answer(Err(InvokeError::ShuttingDown));
            return None;
        }
        loop {
            p.hops += 1;
            let f = match self.get(&p.req.function) {
                Some(f) if p.hops <= MAX_HOPS => f,
                Some(_) => {
                    // Redeployed faster than it could be routed: give up.
                    p.answer(Err(InvokeError::ShuttingDown));
                    return None;
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
                    return None;
                }
            };
            if p.share.is_none() && f.manifest.mode != Mode::Service {
                match self
                    .shares
                    .admit(&f.manifest.name, f.manifest.max_concurrency)
                {
                    Ok(permit) => p.share = permit,
                    Err(full) => {
                        let e = InvokeError::ShareFull {
                            function: f.manifest.name.clone(),
                            share: full.share,
                            nodes: full.nodes,
                        };
                        self.refuse(&f, &p, &e);
                        p.answer(Err(e));
                        return None;
                    }
                }
            }
            let batcher = if f.manifest.batching.is_some() {
                lock(&f.batcher).clone()
            } else {
                None
            };
            let Some(batcher) = batcher else {
                // Boxed: a pointer moves, not the whole future (kilobytes),
                // into a task's cell or out of a caller that left.
                return Some(Box::pin(self.run_pending(f, p)));
            };
            match batcher.try_send(p) {
                Ok(()) => return None,
                Err(mpsc::error::TrySendError::Full(back)) => {
                    let e = self.throttle(&f, &back);
                    back.answer(Err(e));
                    return None;
                }
                // Retired between the lookup and the send: look again.
                Err(mpsc::error::TrySendError::Closed(back)) => p = back,
            }
        }
    }

    /// Sends a request queued on a retired revision to the current one.
    pub(super) fn resubmit(self: &Arc<Self>, old: &Arc<Function>, p: Pending) {
        self.clone().submit(p, Some(old.clone()));
    }

    /// One request to its end: a slot, the run, the record, the answer.
    pub(super) async fn run_pending(self: Arc<Self>, f: Arc<Function>, p: Pending) {
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
            let run = self
                .execute(lease, &p.request_id, payload, None, p.req.tail)
                .await;
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
    pub(super) async fn lease_for(
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
            match Box::pin(self.reserve_memory(f)).await {
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
    pub(super) async fn reserve_memory(
        self: &Arc<Self>,
        f: &Function,
    ) -> Result<Reservation, InvokeError> {
        let mb = u64::from(f.manifest.memory_mb);
        let deadline = Instant::now() + MEMORY_WAIT;
        loop {
            let freed = self.budget.freed();
            if let Some(r) = self.budget.try_reserve(mb) {
                return Ok(r);
            }
            let stopping = self.stop_idle_for_memory();
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

    /// Stops an idle instance to make room (never a provisioned one): the
    /// lowest greedy-dual priority among functions under that policy, else
    /// the least recently used of any function; false when there is none.
    pub(super) fn stop_idle_for_memory(&self) -> bool {
        let fs = self.live_functions();
        let cached = fs.iter().filter_map(|f| {
            let Pools::Function(p) = &f.pools else {
                return None;
            };
            let pool = lock(p);
            let greedy = matches!(pool.keep_alive().policy(), KeepAlive::GreedyDual(_));
            greedy
                .then(|| pool.lowest_priority())
                .flatten()
                .map(|pr| (f, pr))
        });
        if let Some((f, _)) = keep_alive::victim(cached) {
            if let Pools::Function(p) = &f.pools {
                if let Some(inst) = lock(p).evict() {
                    tracing::info!(instance = %inst.id, "host memory budget: stopping the idle instance of lowest greedy-dual priority");
                    inst.kill();
                    return true;
                }
            }
        }
        let oldest = fs
            .iter()
            .filter_map(|f| {
                let Pools::Function(p) = &f.pools else {
                    return None;
                };
                let pool = lock(p);
                let spare = pool.idle_count() + pool.active_count() > pool.limits().min_instances;
                let (i, t) = pool.idle().next()?;
                spare.then(|| (f.clone(), i.id.clone(), t))
            })
            .min_by_key(|(_, _, t)| *t);
        let Some((f, id, _)) = oldest else {
            return false;
        };
        let Pools::Function(p) = &f.pools else {
            return false;
        };
        let Some(inst) = lock(p).remove_idle(|i| i.id == id) else {
            return false;
        };
        tracing::info!(instance = %inst.id, "host memory budget: stopping the least recently used idle instance");
        inst.kill();
        true
    }

    /// Records a request that was accepted but never ran (its caller left
    /// while it was queued, its function was deleted) and answers it.
    pub(super) fn fail_queued(&self, f: &Function, p: Pending, error_type: &str, e: InvokeError) {
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
            start: None,
            status: Status::Error,
            error_type: Some(error_type.into()),
            queue_ms: req.waited_ms,
            init_ms: None,
            restore_ms: None,
            duration_ms: 0.0,
            billed_ms: 0,
            memory_mb: 0,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            isolation: self.isolation(),
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
    pub(super) fn refuse(&self, f: &Function, p: &Pending, e: &InvokeError) {
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
    pub(super) fn throttle(&self, f: &Function, p: &Pending) -> InvokeError {
        let load = f.load();
        let (instances, queued) = (load.idle + load.busy, load.queued);
        let e = InvokeError::Throttled {
            function: f.manifest.name.clone(),
            instances,
            queued,
        };
        self.refuse(f, p, &e);
        e
    }

    /// Turns an outcome into the caller's answer and its record.
    pub(super) fn conclude(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        outcome: Result<Bytes, Failure>,
        output: Option<Vec<String>>,
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
    pub(super) async fn execute(
        self: &Arc<Self>,
        mut lease: Lease,
        request_id: &str,
        payload: Bytes,
        batch: Option<usize>,
        tail: bool,
    ) -> Executed {
        let f = lease.function().clone();
        let mut run = Executed {
            init_ms: None,
            restored: false,
            start: None,
            instance_id: None,
            task_started_at: None,
            duration_ms: 0.0,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            isolation: self.isolation(),
            mode: f.mode(),
            vcpu: f.spawn.limits.vcpu,
            batch_size: batch.unwrap_or(1) as u32,
            output: tail.then(Vec::new),
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
            // Boxed: a cold start's state is large, and every warm
            // invocation's future (moved onto its task) would carry it.
            match Box::pin(self.start_instance(&f, "on-demand", memory)).await {
                Ok((i, init)) => {
                    run.restored = i.role == InstanceRole::Forked;
                    lease.started(i);
                    run.init_ms = Some(init);
                    run.start = Some(Start::Cold);
                    f.observe_cold_start(init);
                }
                Err(failure) => {
                    // Dropping the lease frees the slot.
                    run.init_ms = failure.init_ms;
                    run.start = failure.init_ms.map(|_| Start::Cold);
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
        let first = inst.invocations.fetch_add(1, Ordering::Relaxed) == 0;
        if run.start.is_none() {
            run.start = Some(if first && inst.ahead {
                Start::Prewarmed
            } else {
                Start::Warm
            });
        }

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
        // told apart: only one-at-a-time instances capture a log tail, and
        // only for a caller that asked for it.
        let capture = tail && f.manifest.concurrency_per_instance() == 1;
        if capture {
            inst.begin_capture();
        }
        self.pacemaker.beat();
        let started = Instant::now();
        let result = inst.run(job, reply_rx, timeout).await;
        run.duration_ms = ms(started.elapsed());
        if capture {
            run.output = Some(inst.end_capture().await);
        }
        run.max_memory_mb = inst.peak_memory_mb();
        run.limits_enforced = inst.limits_enforced;
        run.isolation = inst.isolation;

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

    pub(super) fn blank_record(&self, f: &Function, p: &Pending) -> InvocationRecord {
        let req = &p.req;
        InvocationRecord {
            request_id: p.request_id.clone(),
            function: f.manifest.name.clone(),
            version: f.version.to_string(),
            instance_id: None,
            trigger: req.trigger,
            cold: false,
            start: None,
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: None,
            restore_ms: None,
            duration_ms: 0.0,
            billed_ms: 0,
            memory_mb: f.manifest.memory_mb,
            max_memory_mb: None,
            limits_enforced: self.limits_enforced(),
            isolation: self.isolation(),
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

    pub(super) fn finish_failure(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        failure: Failure,
        mut output: Option<Vec<String>>,
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
            f.logs.push(&line);
            if let Some(output) = &mut output {
                output.push(line);
            }
        }
        let error_type = failure.error_type;
        self.finish(f, record, body, Some(error_type), output)
    }

    pub(super) fn finish(
        &self,
        f: &Function,
        mut record: InvocationRecord,
        body: Bytes,
        function_error: Option<String>,
        output: Option<Vec<String>>,
    ) -> Invocation {
        record.finished_at = now_rfc3339();
        tracing::Span::current().record("status", record.status.as_str());
        let end = format!("END RequestId: {}", record.request_id);
        let report = report_line(&record);
        // The invocation's own log (`LogType: Tail`), written in place, only
        // for a caller that reads it.
        let mut log = String::new();
        if let Some(output) = output {
            use std::fmt::Write;
            log.reserve(256);
            let _ = writeln!(
                log,
                "START RequestId: {} Version: {}",
                record.request_id, record.version
            );
            for line in output.iter().chain([&end, &report]) {
                log.push_str(line);
                log.push('\n');
            }
        }
        f.logs.push(end);
        f.logs.push(report);
        let request_id = record.request_id.clone();
        self.meter.observe(record);
        Invocation {
            request_id,
            body,
            function_error,
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run whose awaiting caller leaves goes on to its end on a task of
    /// its own (the invoke path's cancellation safety rests on this).
    #[tokio::test]
    async fn a_run_dropped_unfinished_ends_on_a_task_of_its_own() {
        let (go_tx, go_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let mut waiting = RunToEnd(Some(Box::pin(async move {
            let _ = go_rx.await;
            let _ = done_tx.send(());
        })));
        assert!(
            tokio::time::timeout(Duration::ZERO, &mut waiting)
                .await
                .is_err(),
            "the run waits for its go"
        );
        drop(waiting);
        go_tx
            .send(())
            .expect("the run is still alive after its caller left");
        tokio::time::timeout(Duration::from_secs(5), done_rx)
            .await
            .expect("the run ended on its own task")
            .expect("the run ended rather than being dropped");
    }

    #[tokio::test]
    async fn a_run_awaited_to_its_end_leaves_nothing_behind() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        RunToEnd(Some(Box::pin(async move {
            tokio::task::yield_now().await;
            r.fetch_add(1, Ordering::SeqCst);
        })))
        .await;
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(Arc::strong_count(&ran), 1, "the finished run was dropped");
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
            start: Some(virga_spec::Start::Cold),
            status: Status::Success,
            error_type: None,
            queue_ms: 0.0,
            init_ms: Some(100.0),
            restore_ms: None,
            duration_ms: 300.0,
            billed_ms: 0,
            memory_mb: 128,
            max_memory_mb: None,
            limits_enforced: false,
            isolation: Isolation::None,
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
}
