//! A deployed revision of a function and its instances.

use super::policy::Released;
use super::*;

/// The instances of a function, by its mode.
pub(super) enum Pools {
    /// `function` and `job` instances, one request each.
    Function(Box<Mutex<Pool<Arc<Instance>>>>),
    /// `service` tasks, several requests each.
    Service(Mutex<ServicePool<Arc<Instance>>>),
}

/// Instances of a function as the API shows them.
pub(super) struct Load {
    pub(super) idle: usize,
    /// Busy or starting.
    pub(super) busy: usize,
    pub(super) queued: usize,
}

/// A deployed revision of a function and its instances.
pub(super) struct Function {
    pub(super) manifest: Arc<Manifest>,
    pub(super) base_dir: PathBuf,
    pub(super) version: u64,
    pub(super) deployed_at: String,
    pub(super) spawn: SpawnSpec,
    pub(super) pools: Pools,
    /// The queue of the batch dispatcher, with `[batching]`.
    pub(super) batcher: Mutex<Option<mpsc::Sender<Pending>>>,
    pub(super) instances: Mutex<HashMap<String, Arc<Instance>>>,
    /// With `snap_start = "fork"`: the loaded template cold starts fork.
    pub(super) template: Mutex<Option<Arc<Instance>>>,
    /// Held while a template is made, so one is made at a time.
    pub(super) making_template: tokio::sync::Mutex<()>,
    /// The template's spare child, forked and placed for the next cold
    /// start.
    pub(super) spare: Mutex<Option<Spare>>,
    /// Set while a spare is being prepared, so one is at a time.
    pub(super) making_spare: AtomicBool,
    pub(super) wake: Notify,
    pub(super) retired: AtomicBool,
    pub(super) logs: Arc<LogRing>,
    /// Counted in the scheduler's revisions while this revision lives.
    pub(super) _alive: Track,
    pub(super) arn: String,
}

impl Function {
    pub(super) fn retire(self: &Arc<Self>) {
        self.retired.store(true, Ordering::SeqCst);
        drop(lock(&self.spare).take());
        // The template goes once the revision's last instance has: a
        // confined template's children live in its pid namespace, and
        // invocations in flight finish on the old revision.
        if let Some(t) = lock(&self.template).take() {
            let f = self.clone();
            tokio::spawn(async move {
                // Those started meanwhile join the map: look again until
                // every one is dead.
                loop {
                    let live: Vec<Arc<Instance>> = lock(&f.instances)
                        .values()
                        .filter(|i| !i.is_dead())
                        .cloned()
                        .collect();
                    if live.is_empty() {
                        break;
                    }
                    for i in live {
                        i.dead().await;
                    }
                }
                t.kill();
            });
        }
        let idle = match &self.pools {
            Pools::Function(p) => lock(p).drain(),
            Pools::Service(s) => lock(s).drain(),
        };
        for i in idle {
            i.kill();
        }
        // The dispatcher stops once its queue is empty and closed.
        drop(lock(&self.batcher).take());
        self.wake.notify_one();
    }

    pub(super) fn mode(&self) -> Mode {
        self.manifest.mode
    }

    /// Asks this function's pool for an instance; `None` once the function
    /// is retired (checked under the pool's lock, so no request joins a pool
    /// after it was drained).
    pub(super) fn acquire(&self) -> Option<Acquire<Arc<Instance>>> {
        let live = || !self.retired.load(Ordering::SeqCst);
        match &self.pools {
            Pools::Function(p) => {
                let mut pool = lock(p);
                live().then(|| pool.acquire(Instant::now()))
            }
            Pools::Service(s) => {
                let mut pool = lock(s);
                live().then(|| pool.acquire())
            }
        }
    }

    /// Returns a healthy instance to the pool, or lets a dead one go. A job's
    /// task always goes: it handled its one event.
    pub(super) fn give_back(&self, inst: Arc<Instance>, healthy: bool) {
        let healthy = healthy && self.mode() != Mode::Job;
        let settle = inst.clone();
        let handed = match &self.pools {
            Pools::Service(s) => {
                let same = |i: &Arc<Instance>| Arc::ptr_eq(i, &inst);
                let mut pool = lock(s);
                if healthy && !inst.is_dead() {
                    if let Some(stop) = pool.release(same, Instant::now()) {
                        stop.kill();
                    }
                } else {
                    inst.kill();
                    pool.remove(same);
                }
                false
            }
            Pools::Function(p) => {
                let mut pool = lock(p);
                let mut handed = false;
                // The keep-alive timer is woken only when it must act
                // sooner: a slot freed may be one the minimum needs.
                let wake = if healthy && !inst.is_dead() && !self.retired.load(Ordering::SeqCst) {
                    match pool.release(inst, Instant::now()) {
                        Released::Stop(stop) => stop.kill(),
                        Released::Handed => handed = true,
                        Released::Idle => {}
                    }
                    pool.timer_late()
                } else {
                    inst.kill();
                    pool.discard();
                    true
                };
                drop(pool);
                if wake {
                    self.wake.notify_one();
                }
                handed
            }
        };
        // The answer to the runtime's reply (`Instance::settled`) leaves once
        // the instance is where it goes. One handed to a waiter is settled by
        // that waiter's lease, when it sends the job (`Instance::run`) or is
        // given back: settled here, the 202 would leave before the job it
        // can go out with, in a write of its own.
        if !handed {
            settle.settled();
        }
    }

    /// A freshly started instance joins its pool, busy with its starter.
    pub(super) fn started(&self, inst: &Arc<Instance>) {
        if let Pools::Service(s) = &self.pools {
            // Busy with its starter: never handed back to stop here.
            let _ = lock(s).add(inst.clone(), Instant::now(), true);
        }
    }

    /// An autoscaled task that finished starting joins its service idle;
    /// returns it when it is not wanted (the service was retired meanwhile).
    pub(super) fn add_task(&self, inst: Arc<Instance>) -> Option<Arc<Instance>> {
        match &self.pools {
            Pools::Service(s) => lock(s).add(inst, Instant::now(), false),
            Pools::Function(_) => Some(inst),
        }
    }

    /// A pre-warmed instance is ready: a waiting request takes it, else it
    /// idles as the keep-alive policy says. Stopped when the function was
    /// retired while it started.
    pub(super) fn add_prewarmed(&self, inst: Arc<Instance>) {
        let Pools::Function(p) = &self.pools else {
            inst.kill();
            return;
        };
        let mut pool = lock(p);
        if self.retired.load(Ordering::SeqCst) || inst.is_dead() {
            inst.kill();
            pool.discard();
        } else {
            pool.add_prewarmed(inst, Instant::now());
        }
        drop(pool);
        self.wake.notify_one();
    }

    /// A cold start took `init_ms`: what greedy-dual weighs this function's
    /// instances by.
    pub(super) fn observe_cold_start(&self, init_ms: f64) {
        if let Pools::Function(p) = &self.pools {
            lock(p).keep_alive_mut().observe_cold_start(init_ms);
        }
    }

    /// Frees the slot of an instance that never started.
    pub(super) fn give_back_slot(&self) {
        match &self.pools {
            Pools::Service(s) => lock(s).start_failed(),
            Pools::Function(p) => {
                lock(p).discard();
                self.wake.notify_one();
            }
        }
    }

    /// Forgets an instance that died, wherever it was; true when it was
    /// idle (or a task) in the pool.
    pub(super) fn forget(&self, inst: &Arc<Instance>) -> bool {
        let same = |i: &Arc<Instance>| Arc::ptr_eq(i, inst);
        let found = match &self.pools {
            Pools::Service(s) => lock(s).remove(same).is_some(),
            Pools::Function(p) => lock(p).remove_idle(same).is_some(),
        };
        if found {
            self.wake.notify_one();
        }
        found
    }

    /// Idle, busy and queued, as the API lists them.
    pub(super) fn load(&self) -> Load {
        match &self.pools {
            Pools::Service(s) => {
                let mut pool = lock(s);
                Load {
                    idle: pool.running() - pool.busy(),
                    busy: pool.busy() + pool.starting(),
                    queued: pool.queued(),
                }
            }
            Pools::Function(p) => {
                let mut pool = lock(p);
                Load {
                    idle: pool.idle_count(),
                    busy: pool.active_count(),
                    queued: pool.queued(),
                }
            }
        }
    }

    /// Ids of the idle instances (or tasks).
    pub(super) fn idle_ids(&self) -> Vec<String> {
        match &self.pools {
            Pools::Function(p) => lock(p).idle().map(|(i, _)| i.id.clone()).collect(),
            Pools::Service(s) => lock(s)
                .tasks()
                .filter(|(_, is_idle)| *is_idle)
                .map(|(i, _)| i.id.clone())
                .collect(),
        }
    }
}
