//! The timers of a function: keep-alive (reaping and provisioning) and
//! the autoscaler of a service.

use super::*;

/// What the keep-alive timer of a pool does besides reaping.
pub(crate) struct KeepAliveActions<E, P, W> {
    /// Stop these expired idle instances.
    pub(crate) expire: E,
    /// Start this many provisioned instances (their slots are taken).
    pub(crate) provision: P,
    /// Start one instance ahead of the predicted next request (its slot is
    /// taken; the pool gets it back with `add_prewarmed` or `discard`).
    pub(crate) prewarm: W,
}

/// The keep-alive timer of one pool, generic so it runs on a paused clock in
/// tests: reaps idle instances when their keep-alive runs out, keeps the
/// provisioned minimum, and pre-warms when the policy says.
pub(crate) async fn keep_alive_loop<I>(
    pool: &Mutex<Pool<I>>,
    wake: &Notify,
    retired: impl Fn() -> bool,
    mut act: KeepAliveActions<impl FnMut(Vec<I>), impl FnMut(usize), impl FnMut()>,
) {
    loop {
        if retired() {
            return;
        }
        let (expired, next, missing, prewarm) = {
            let mut p = lock(pool);
            let now = Instant::now();
            let expired = p.reap(now);
            let mut missing = 0;
            while p.deficit() > 0 && p.reserve() {
                missing += 1;
            }
            let prewarm = p.take_prewarm(now);
            let next = p.arm_timer();
            (expired, next, missing, prewarm)
        };
        if !expired.is_empty() {
            (act.expire)(expired);
        }
        if missing > 0 {
            (act.provision)(missing);
        }
        if prewarm {
            (act.prewarm)();
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

/// While invocations keep coming, keeps one timer armed at most `PACE`
/// ahead, so arming an invocation's timeout (seconds ahead) never wakes the
/// timer driver: tokio writes to the driver's eventfd whenever a new timer
/// is earlier than every one it knows, which, with no other timer, was
/// every invocation's at low concurrency (and woke a parked worker for
/// nothing). It stops a `PACE` after the last beat: an idle platform has
/// no timer of its own.
pub(crate) struct Pacemaker {
    beating: AtomicBool,
    /// Milliseconds from `since` to the last beat.
    last: AtomicU64,
    since: Instant,
}

const PACE: Duration = Duration::from_secs(1);

impl Pacemaker {
    pub(crate) fn new() -> Arc<Pacemaker> {
        Arc::new(Pacemaker {
            beating: AtomicBool::new(false),
            last: AtomicU64::new(0),
            since: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.since.elapsed().as_millis() as u64
    }

    fn idle(&self) -> bool {
        self.now_ms()
            .saturating_sub(self.last.load(Ordering::SeqCst))
            >= PACE.as_millis() as u64
    }

    /// An invocation is about to arm its timeout.
    pub(crate) fn beat(self: &Arc<Self>) {
        self.last.store(self.now_ms(), Ordering::SeqCst);
        if self.beating.load(Ordering::SeqCst) || self.beating.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PACE).await;
                let Some(me) = me.upgrade() else { return };
                if !me.idle() {
                    continue;
                }
                me.beating.store(false, Ordering::SeqCst);
                // A beat between the check and the store found it still
                // beating and left: go on for it, unless it started another.
                if me.idle() || me.beating.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    #[cfg(test)]
    pub(crate) fn is_beating(&self) -> bool {
        self.beating.load(Ordering::SeqCst)
    }
}

impl Scheduler {
    /// Keeps a function's pool in shape until it is retired: reaps idle
    /// instances past their keep-alive, and keeps `min_instances` started.
    pub(super) async fn keep_alive(self: Arc<Self>, f: Arc<Function>) {
        let Pools::Function(pool) = &f.pools else {
            return;
        };
        let me = self.clone();
        let fp = f.clone();
        let (warm_me, warm_f) = (self.clone(), f.clone());
        keep_alive_loop(
            pool,
            &f.wake,
            || f.retired.load(Ordering::SeqCst),
            KeepAliveActions {
                expire: |expired: Vec<Arc<Instance>>| {
                    for i in expired {
                        tracing::info!(instance = %i.id, "keep-alive expired: stopping idle instance");
                        i.kill();
                    }
                },
                provision: |n| {
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
                prewarm: || {
                    let me = warm_me.clone();
                    let f = warm_f.clone();
                    tokio::spawn(async move {
                        match me.start_provisioned(&f).await {
                            Ok((inst, _)) => {
                                tracing::info!(instance = %inst.id, "pre-warmed ahead of the predicted request");
                                f.add_prewarmed(inst);
                            }
                            Err(failure) => {
                                // Not worth a retry: the request comes cold.
                                tracing::debug!(function = %f.manifest.name, error = %failure.message, "pre-warm failed");
                                f.give_back_slot();
                            }
                        }
                    });
                },
            },
        )
        .await;
    }

    /// Scales a service's tasks until it is retired: samples its load every
    /// tick, asks the autoscaler for a task count and applies it.
    pub(super) async fn autoscale(self: Arc<Self>, f: Arc<Function>) {
        let Pools::Service(pool) = &f.pools else {
            return;
        };
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
            pool,
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
                                let unneeded = f.add_task(inst);
                                // Started after its service was retired.
                                if let Some(i) = unneeded {
                                    i.kill();
                                }
                            }
                            Err(failure) => {
                                tracing::warn!(function = %f.manifest.name, error = %failure.message, "task failed to start");
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

    /// Starts a provisioned instance or an autoscaled task, if the host's
    /// memory budget has room for it now.
    pub(super) async fn start_provisioned(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacemaker_beats_while_invocations_come_and_stops_after() {
        let p = Pacemaker::new();
        assert!(!p.is_beating());
        p.beat();
        assert!(p.is_beating());
        // Beats every 400 ms for 3 s: it keeps going.
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            p.beat();
            assert!(p.is_beating());
        }
        // Then nothing: it stops within two paces, leaving no timer.
        tokio::time::sleep(PACE * 2 + Duration::from_millis(10)).await;
        assert!(!p.is_beating());
        // And starts again at the next beat.
        p.beat();
        assert!(p.is_beating());
        tokio::time::sleep(PACE * 2 + Duration::from_millis(10)).await;
        assert!(!p.is_beating());
    }

    fn pool(keep_alive_ms: u64, min: usize) -> Mutex<Pool<u32>> {
        Mutex::new(Pool::new(PoolLimits {
            max_instances: 4,
            max_queue: 0,
            keep_alive: Duration::from_millis(keep_alive_ms),
            min_instances: min,
        }))
    }

    /// Instances the keep-alive timer reaped, with when.
    type Reaped = Arc<Mutex<Vec<(u32, Instant)>>>;

    /// `keep_alive_loop` on `p` on a task, until `retired`.
    fn reaper(
        p: &Arc<Mutex<Pool<u32>>>,
        wake: &Arc<Notify>,
        retired: &Arc<AtomicBool>,
    ) -> (tokio::task::JoinHandle<()>, Reaped) {
        let expired = Reaped::default();
        let (p, wake, retired, out) = (p.clone(), wake.clone(), retired.clone(), expired.clone());
        let task = tokio::spawn(async move {
            keep_alive_loop(
                &p,
                &wake,
                || retired.load(Ordering::SeqCst),
                KeepAliveActions {
                    expire: |v: Vec<u32>| {
                        lock(&out).extend(v.into_iter().map(|i| (i, Instant::now())))
                    },
                    provision: |_| {},
                    prewarm: || {},
                },
            )
            .await
        });
        (task, expired)
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_reaps_on_time_on_a_paused_clock() {
        let p = Arc::new(pool(1_000, 0));
        let wake = Arc::new(Notify::new());
        let retired = Arc::new(AtomicBool::new(false));
        let t0 = Instant::now();
        assert!(lock(&p).reserve());
        assert!(lock(&p).release(7, t0).stop().is_none());
        let (task, expired) = reaper(&p, &wake, &retired);
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert!(lock(&expired).is_empty(), "not before keep-alive");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(lock(&expired).len(), 1);
        assert_eq!(lock(&expired)[0].1 - t0, Duration::from_secs(1));

        // An instance released later is reaped one keep-alive after its
        // release: the timer, asleep with nothing to wait for, is late.
        assert!(lock(&p).reserve());
        assert!(lock(&p).release(8, Instant::now()).stop().is_none());
        assert!(lock(&p).timer_late());
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

    /// Releases that expire after the armed wake-up do not wake the timer
    /// (`Pool::timer_late`), yet each instance is reaped on time: the
    /// timer arms itself again for the next expiry whenever it wakes.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_reaps_releases_it_was_not_woken_for() {
        let p = Arc::new(pool(1_000, 0));
        let wake = Arc::new(Notify::new());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(lock(&p).reserve());
        }
        assert!(lock(&p).release(1, t0).stop().is_none());
        let (task, expired) = reaper(&p, &wake, &Arc::new(AtomicBool::new(false)));
        for (id, at) in [(2, 300), (3, 600)] {
            tokio::time::sleep_until(t0 + Duration::from_millis(at)).await;
            let mut pool = lock(&p);
            assert!(pool.release(id, Instant::now()).stop().is_none());
            assert!(!pool.timer_late(), "released {id}");
        }
        tokio::time::sleep_until(t0 + Duration::from_millis(2_000)).await;
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            *lock(&expired),
            vec![(1, at(1_000)), (2, at(1_300)), (3, at(1_600))]
        );
        task.abort();
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
                    KeepAliveActions {
                        expire: |_| panic!("provisioned instances are never reaped"),
                        provision: |n| *lock(&provisioned) += n,
                        prewarm: || {},
                    },
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(*lock(&provisioned), 2);
        // The provisioned instances come up and go idle; hours pass.
        assert!(lock(&p).release(1, Instant::now()).stop().is_none());
        assert!(lock(&p).release(2, Instant::now()).stop().is_none());
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(lock(&p).idle_count(), 2);
        task.abort();
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

    /// Replays `arrivals` through a live pool under `policy` on the paused
    /// clock, with a fake instance backend (no processes): a cold start takes
    /// `cold`, a run `run`; pre-warms start when the keep-alive loop says.
    /// Returns how each invocation started.
    async fn replay_live(
        policy: virga_policy::KeepAlive,
        arrivals: &[Duration],
        cold: Duration,
        run: Duration,
    ) -> Vec<Start> {
        let limits = PoolLimits {
            max_instances: usize::MAX,
            max_queue: 0,
            keep_alive: Duration::ZERO,
            min_instances: 0,
        };
        let pool = Arc::new(Mutex::new(Pool::<u32>::with_keep_alive(
            limits,
            Tracker::new(policy),
        )));
        let wake = Arc::new(Notify::new());
        let next_id = Arc::new(std::sync::atomic::AtomicU32::new(0));
        // Instances started ahead, and those already used.
        let ahead = Arc::new(Mutex::new(std::collections::HashSet::<u32>::new()));
        let used = Arc::new(Mutex::new(std::collections::HashSet::<u32>::new()));
        let timer = {
            let (pool, wake, next_id, ahead) =
                (pool.clone(), wake.clone(), next_id.clone(), ahead.clone());
            tokio::spawn(async move {
                let (p2, w2) = (pool.clone(), wake.clone());
                keep_alive_loop(
                    &pool,
                    &wake,
                    || false,
                    KeepAliveActions {
                        expire: |_: Vec<u32>| {},
                        provision: |_| {},
                        prewarm: || {
                            let id = next_id.fetch_add(1, Ordering::SeqCst);
                            lock(&ahead).insert(id);
                            let (p, w) = (p2.clone(), w2.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(cold).await;
                                lock(&p).add_prewarmed(id, Instant::now());
                                w.notify_one();
                            });
                        },
                    },
                )
                .await
            })
        };
        let t0 = Instant::now();
        let mut starts = Vec::new();
        for at in arrivals {
            tokio::time::sleep_until(t0 + *at).await;
            let (id, start) = match lock(&pool).acquire(Instant::now()) {
                Acquire::Warm(id) => {
                    let first = lock(&used).insert(id);
                    let pre = first && lock(&ahead).contains(&id);
                    (id, if pre { Start::Prewarmed } else { Start::Warm })
                }
                Acquire::Spawn => {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    lock(&used).insert(id);
                    (id, Start::Cold)
                }
                _ => unreachable!("an unlimited pool"),
            };
            starts.push(start);
            let busy = if start == Start::Cold {
                cold + run
            } else {
                run
            };
            let (p, w) = (pool.clone(), wake.clone());
            tokio::spawn(async move {
                tokio::time::sleep(busy).await;
                // Stopped at once when the policy pre-warms a fresh one later.
                let _stopped = lock(&p).release(id, Instant::now());
                w.notify_one();
            });
        }
        timer.abort();
        starts
    }

    #[tokio::test(start_paused = true)]
    async fn the_live_pool_and_the_simulator_decide_alike() {
        use virga_sim::engine::{run_alone, Timeline};
        use virga_sim::{FunctionModel, Source, TriggerGroup, Workload};
        let s = Duration::from_secs;
        // A timer every 10 minutes (learnt, then pre-warmed), a burst of
        // three at once, a long silence, and a few close together.
        let mut arrivals: Vec<Duration> = (0..10).map(|i| s(600 * i + 7)).collect();
        arrivals.extend([s(6_007), s(6_008), s(6_009)]);
        arrivals.extend([s(6_607), s(21_000), s(21_013), s(21_400)]);
        let (cold, run) = (Duration::from_millis(700), Duration::from_millis(1_300));
        let workload = Workload {
            functions: vec![FunctionModel {
                app: 0,
                trigger: TriggerGroup::Timer,
                duration: run,
                cold_start: cold,
                memory_mb: 256,
                source: Source::Exact(arrivals.clone()),
            }],
            apps: vec!["a".into()],
            minutes: 400,
            seed: 1,
        };
        for policy in [
            virga_policy::KeepAlive::HybridHistogram(virga_policy::HybridConfig::default()),
            virga_policy::KeepAlive::Fixed(s(600)),
            virga_policy::KeepAlive::GreedyDual(Default::default()),
        ] {
            let mut tl = Timeline::new(workload.minutes);
            let simulated = run_alone(&workload, 0, &policy, &mut tl, true).1.unwrap();
            let live = replay_live(policy, &arrivals, cold, run).await;
            assert_eq!(live, simulated, "{policy:?}");
            if let virga_policy::KeepAlive::HybridHistogram(_) = policy {
                assert!(live.contains(&Start::Prewarmed), "{live:?}");
                assert!(live.contains(&Start::Cold) && live.contains(&Start::Warm));
            }
        }
    }
}
