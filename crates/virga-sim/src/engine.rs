//! The discrete-event core: one function's instances driven through the
//! scheduler's own [`Pool`] and keep-alive [`Tracker`] on a virtual clock (a
//! `Duration` since the start).
//!
//! Under `fixed` and `hybrid-histogram` functions do not interact, so each is
//! simulated alone, from its first arrival to the horizon, on whichever
//! thread takes it. Under `greedy-dual` they share a memory budget: one loop
//! takes every function's arrivals in time order, a minute at a time (drawn
//! and sorted on another thread), handles each function's completions when
//! that function next acts or an eviction needs them (a [`RadixHeap`] of
//! busy functions), and takes evictions from a binary heap of each
//! function's cheapest idle instance (its *floor*; priorities only grow
//! within a function, so the floor changes seldom).
//!
//! Instances are indices into a per-function table whose slots are reused,
//! so a run allocates as its peak concurrency grows, not per event.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Duration;

use virga_policy::handoff::Mailbox;
use virga_policy::{Acquire, GreedyDualClock, KeepAlive, Pool, PoolLimits, Tracker};
use virga_spec::Start;

use crate::queue::RadixHeap;
use crate::workload::{FunctionModel, Workload, MINUTE_NS};

type SimPool = Pool<u32, Duration, Mailbox>;

/// What happened to one function under one policy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FnStats {
    pub invocations: u64,
    pub cold: u64,
    pub prewarmed: u64,
    /// Memory held by idle (or pre-warming) instances, MB x seconds.
    pub wasted_mb_s: f64,
    pub prewarms: u64,
    pub expiries: u64,
    pub evictions: u64,
    /// Arrivals, completions, pre-warms, expiries and evictions.
    pub events: u64,
}

impl FnStats {
    pub fn add(&mut self, o: &FnStats) {
        self.invocations += o.invocations;
        self.cold += o.cold;
        self.prewarmed += o.prewarmed;
        self.wasted_mb_s += o.wasted_mb_s;
        self.prewarms += o.prewarms;
        self.expiries += o.expiries;
        self.evictions += o.evictions;
        self.events += o.events;
    }
}

/// Memory held by instances, per minute of the run (MB x seconds in each).
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline(pub Vec<f64>);

impl Timeline {
    pub fn new(minutes: u32) -> Self {
        Timeline(vec![0.0; minutes as usize])
    }

    /// `mb` held from `from` to `to`.
    fn add(&mut self, from: Duration, to: Duration, mb: f64) {
        let (a, b) = (from.as_secs_f64(), to.as_secs_f64());
        let mut m = (a / 60.0) as usize;
        while m < self.0.len() && (m as f64) * 60.0 < b {
            let lo = a.max(m as f64 * 60.0);
            let hi = b.min((m + 1) as f64 * 60.0);
            self.0[m] += (hi - lo).max(0.0) * mb;
            m += 1;
        }
    }

    pub fn merge(&mut self, other: &Timeline) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The highest average memory over a minute, in GB.
    pub fn peak_gb(&self) -> f64 {
        self.0.iter().fold(0.0f64, |m, v| m.max(*v)) / 60.0 / 1024.0
    }

    /// The average memory over the run, in GB.
    pub fn mean_gb(&self) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.iter().sum::<f64>() / self.0.len() as f64 / 60.0 / 1024.0
    }
}

#[derive(Debug, Clone, Copy)]
struct Inst {
    born: Duration,
    /// Since when it has held memory without serving (idle or pre-warming).
    idle_since: Duration,
    /// Started ahead and not used yet.
    fresh: bool,
    /// A pre-warm still starting.
    starting: bool,
}

/// One function under one policy.
pub struct FnSim {
    pool: SimPool,
    /// Runs and pre-warm starts in progress, by when they end.
    busy: BinaryHeap<Reverse<(Duration, u32)>>,
    insts: Vec<Inst>,
    alive: Vec<bool>,
    free: Vec<u32>,
    /// Reused for what each expiry reaps.
    reaped: Vec<u32>,
    mb: f64,
    duration: Duration,
    cold_start: Duration,
    /// The floor last pushed to greedy-dual's heap.
    floor: Option<f64>,
    pub stats: FnStats,
    /// Each invocation's start, when asked for (tests).
    pub starts: Option<Vec<Start>>,
}

impl FnSim {
    pub fn new(model: &FunctionModel, policy: &KeepAlive, clock: &GreedyDualClock) -> Self {
        let mb = f64::from(model.memory_mb);
        let cost_ms = model.cold_start.as_secs_f64() * 1e3;
        let keep = Tracker::new(*policy).greedy_dual(clock.clone(), cost_ms, mb);
        let limits = PoolLimits {
            max_instances: usize::MAX,
            max_queue: 0,
            keep_alive: match policy {
                KeepAlive::Fixed(d) => *d,
                _ => Duration::ZERO,
            },
            min_instances: 0,
        };
        FnSim {
            pool: Pool::with_keep_alive(limits, keep),
            busy: BinaryHeap::new(),
            insts: Vec::new(),
            alive: Vec::new(),
            free: Vec::new(),
            reaped: Vec::new(),
            mb,
            duration: model.duration,
            cold_start: model.cold_start,
            floor: None,
            stats: FnStats::default(),
            starts: None,
        }
    }

    fn alloc(&mut self, now: Duration) -> u32 {
        let inst = Inst {
            born: now,
            idle_since: now,
            fresh: false,
            starting: false,
        };
        match self.free.pop() {
            Some(id) => {
                self.insts[id as usize] = inst;
                self.alive[id as usize] = true;
                id
            }
            None => {
                self.insts.push(inst);
                self.alive.push(true);
                (self.insts.len() - 1) as u32
            }
        }
    }

    fn die(&mut self, id: u32, now: Duration, tl: &mut Timeline) {
        tl.add(self.insts[id as usize].born, now, self.mb);
        self.alive[id as usize] = false;
        self.free.push(id);
    }

    /// Ends an idle stretch at `now`.
    fn unidle(&mut self, id: u32, now: Duration) {
        let since = self.insts[id as usize].idle_since;
        self.stats.wasted_mb_s += now.saturating_sub(since).as_secs_f64() * self.mb;
    }

    /// When this function's next own event is due: a run or a pre-warm
    /// ending, a pre-warm to start, an idle instance expiring.
    fn next_event(&self) -> Option<Duration> {
        let run = self.busy.peek().map(|r| r.0 .0);
        [run, self.pool.next_prewarm(), self.pool.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles this function's own events due at or before `t`, in order.
    pub fn advance(&mut self, t: Duration, tl: &mut Timeline) {
        while let Some(e) = self.next_event() {
            if e > t {
                break;
            }
            self.stats.events += 1;
            if self.busy.peek().is_some_and(|r| r.0 .0 == e) {
                let Some(Reverse((_, id))) = self.busy.pop() else {
                    unreachable!("peeked")
                };
                let inst = &mut self.insts[id as usize];
                if inst.starting {
                    inst.starting = false;
                    self.pool.add_prewarmed(id, e);
                } else if let Some(stop) = self.pool.release(id, e).stop() {
                    self.die(stop, e, tl);
                } else {
                    self.insts[id as usize].idle_since = e;
                }
            } else if self.pool.next_prewarm() == Some(e) {
                if self.pool.take_prewarm(e) {
                    let id = self.alloc(e);
                    let inst = &mut self.insts[id as usize];
                    inst.fresh = true;
                    inst.starting = true;
                    self.busy.push(Reverse((e + self.cold_start, id)));
                    self.stats.prewarms += 1;
                }
            } else {
                let mut reaped = std::mem::take(&mut self.reaped);
                self.pool.reap_into(e, &mut reaped);
                for id in reaped.drain(..) {
                    self.unidle(id, e);
                    self.die(id, e, tl);
                    self.stats.expiries += 1;
                }
                self.reaped = reaped;
            }
        }
    }

    /// An invocation arrives at `t` (after [`FnSim::advance`] to `t`): when
    /// its run ends and whether it was a cold start.
    pub fn arrive(&mut self, t: Duration) -> (Duration, bool) {
        self.stats.invocations += 1;
        self.stats.events += 1;
        let (id, start) = match self.pool.acquire(t) {
            Acquire::Warm(id) => {
                self.unidle(id, t);
                let inst = &mut self.insts[id as usize];
                let start = if inst.fresh {
                    inst.fresh = false;
                    self.stats.prewarmed += 1;
                    Start::Prewarmed
                } else {
                    Start::Warm
                };
                (id, start)
            }
            Acquire::Spawn => {
                self.stats.cold += 1;
                (self.alloc(t), Start::Cold)
            }
            // An unlimited pool without a queue never makes a request wait.
            Acquire::Wait(_) | Acquire::Throttle => unreachable!("unlimited pool"),
        };
        let end = match start {
            Start::Cold => t + self.cold_start + self.duration,
            _ => t + self.duration,
        };
        self.busy.push(Reverse((end, id)));
        if let Some(s) = self.starts.as_mut() {
            s.push(start);
        }
        (end, start == Start::Cold)
    }

    /// The lowest greedy-dual priority among idle instances, when it moved
    /// since last asked.
    fn new_floor(&mut self) -> Option<f64> {
        let floor = self.pool.lowest_priority();
        if floor == self.floor {
            return None;
        }
        self.floor = floor;
        floor
    }

    /// Gives up the lowest-priority idle instance for memory.
    fn evict(&mut self, now: Duration, tl: &mut Timeline) -> bool {
        let Some(id) = self.pool.evict() else {
            return false;
        };
        self.unidle(id, now);
        self.die(id, now, tl);
        self.stats.evictions += 1;
        self.stats.events += 1;
        true
    }

    /// The run ends at `horizon`: what is still alive stops counting there.
    pub fn finish(&mut self, horizon: Duration, tl: &mut Timeline) {
        let idle: Vec<u32> = self.pool.idle().map(|(i, _)| *i).collect();
        for id in idle {
            self.unidle(id, horizon);
        }
        for Reverse((_, id)) in self.busy.drain() {
            if self.insts[id as usize].starting {
                let since = self.insts[id as usize].idle_since;
                self.stats.wasted_mb_s += horizon.saturating_sub(since).as_secs_f64() * self.mb;
            }
        }
        for id in 0..self.insts.len() {
            if self.alive[id] {
                tl.add(self.insts[id].born, horizon, self.mb);
            }
        }
    }
}

/// Simulates function `index` alone (any policy but greedy-dual).
pub fn run_alone(
    w: &Workload,
    index: usize,
    policy: &KeepAlive,
    tl: &mut Timeline,
    starts: bool,
) -> (FnStats, Option<Vec<Start>>) {
    let mut sim = FnSim::new(&w.functions[index], policy, &GreedyDualClock::new());
    if starts {
        sim.starts = Some(Vec::new());
    }
    for t in w.arrivals(index) {
        sim.advance(t, tl);
        sim.arrive(t);
    }
    let horizon = w.horizon();
    sim.advance(horizon, tl);
    sim.finish(horizon, tl);
    (sim.stats, sim.starts)
}

/// A priority in a heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Priority(f64);

impl Eq for Priority {}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What a greedy-dual run gives besides each function's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SharedStats {
    /// Cold starts that found the budget full and nothing idle to evict:
    /// they ran over the budget.
    pub over_budget: u64,
}

/// Sends every minute's arrivals of every function, sorted by time, on
/// `out`; vectors sent back on `recycled` are reused.
fn minute_batches(
    w: &Workload,
    out: &std::sync::mpsc::SyncSender<Vec<(u64, u32)>>,
    recycled: &std::sync::mpsc::Receiver<Vec<(u64, u32)>>,
) {
    let ns = |t: Duration| t.as_nanos() as u64;
    let mut arrivals: Vec<_> = (0..w.functions.len()).map(|i| w.arrivals(i)).collect();
    // A calendar of minutes: the functions whose next arrival falls in each.
    let mut due: Vec<Vec<u32>> = vec![Vec::new(); w.minutes as usize];
    let mut ahead: Vec<Option<Duration>> = arrivals.iter_mut().map(|a| a.next()).collect();
    for (f, t) in ahead.iter().enumerate() {
        if let Some(t) = t {
            due[(ns(*t) / MINUTE_NS) as usize].push(f as u32);
        }
    }
    for m in 0..due.len() {
        let end = (m as u64 + 1) * MINUTE_NS;
        let mut minute = recycled.try_recv().unwrap_or_default();
        minute.clear();
        for f in std::mem::take(&mut due[m]) {
            let fi = f as usize;
            while let Some(t) = ahead[fi] {
                if ns(t) >= end {
                    if let Some(d) = due.get_mut((ns(t) / MINUTE_NS) as usize) {
                        d.push(f);
                    }
                    break;
                }
                minute.push((ns(t), f));
                ahead[fi] = arrivals[fi].next();
            }
        }
        minute.sort_unstable();
        if out.send(minute).is_err() {
            return;
        }
    }
}

/// Simulates every function together under `policy` (greedy-dual) within
/// `budget_mb` of instance memory.
///
/// Arrivals are taken in time order across functions; a function's own
/// completions are handled when it next has an arrival, which is exact for
/// its own decisions and for greedy-dual's priorities (the shared clock
/// moves only at evictions). An eviction needs every instance idle by then,
/// so it first catches up the completions of every function (a second
/// queue holds each busy function's earliest one).
pub fn run_shared(
    w: &Workload,
    policy: &KeepAlive,
    budget_mb: f64,
    tl: &mut Timeline,
) -> (Vec<FnStats>, SharedStats) {
    let ns = |t: Duration| t.as_nanos() as u64;
    let clock = GreedyDualClock::new();
    let mut sims: Vec<FnSim> = w
        .functions
        .iter()
        .map(|f| FnSim::new(f, policy, &clock))
        .collect();
    // Busy functions by (at most) their earliest completion.
    let mut busy = RadixHeap::new();
    let mut queued = vec![false; sims.len()];
    let mut floors: BinaryHeap<Reverse<(Priority, u32)>> = BinaryHeap::new();
    let mut used_mb = 0.0;
    let mut shared = SharedStats::default();
    let horizon = w.horizon();
    let update_floor = |sim: &mut FnSim, f: usize, floors: &mut BinaryHeap<_>| {
        if let Some(p) = sim.new_floor() {
            floors.push(Reverse((Priority(p), f as u32)));
        }
    };
    let enqueue = |sim: &FnSim, f: usize, queued: &mut [bool], busy: &mut RadixHeap| {
        if !queued[f] {
            if let Some(e) = sim.busy.peek().map(|r| r.0 .0) {
                busy.push(ns(e), f as u64);
                queued[f] = true;
            }
        }
    };
    let alive = |s: &FnSim| (s.insts.len() - s.free.len()) as f64 * s.mb;
    // Arrivals come a minute at a time, in time order, from a thread of
    // their own (drawing them is a tenth of the work), two minutes ahead.
    let (batches, minutes) = std::sync::mpsc::sync_channel::<Vec<(u64, u32)>>(2);
    let (spent, recycled) = std::sync::mpsc::channel::<Vec<(u64, u32)>>();
    std::thread::scope(|scope| {
        scope.spawn(move || minute_batches(w, &batches, &recycled));
        for minute in minutes {
            for &(t, f) in &minute {
                let t = Duration::from_nanos(t);
                let f = f as usize;
                used_mb -= alive(&sims[f]);
                sims[f].advance(t, tl);
                let (_, cold) = sims[f].arrive(t);
                used_mb += alive(&sims[f]);
                if cold && used_mb > budget_mb {
                    // Every instance idle by now is a candidate.
                    while busy.min_key().is_some_and(|k| k <= ns(t)) {
                        let Some((_, g)) = busy.pop() else { break };
                        let g = g as usize;
                        queued[g] = false;
                        used_mb -= alive(&sims[g]);
                        sims[g].advance(t, tl);
                        used_mb += alive(&sims[g]);
                        update_floor(&mut sims[g], g, &mut floors);
                        enqueue(&sims[g], g, &mut queued, &mut busy);
                    }
                    while used_mb > budget_mb {
                        let Some(Reverse((Priority(p), g))) = floors.pop() else {
                            shared.over_budget += 1;
                            break;
                        };
                        let g = g as usize;
                        // A stale entry: that function's floor has moved.
                        if sims[g].pool.lowest_priority() != Some(p) {
                            continue;
                        }
                        if sims[g].evict(t, tl) {
                            used_mb -= sims[g].mb;
                        }
                        update_floor(&mut sims[g], g, &mut floors);
                    }
                }
                update_floor(&mut sims[f], f, &mut floors);
                enqueue(&sims[f], f, &mut queued, &mut busy);
                // Stale floors pile up under churn; rebuild when they dominate.
                if floors.len() > 4 * sims.len() + 1024 {
                    let live: Vec<_> = floors
                        .drain()
                        .filter(|Reverse((p, g))| sims[*g as usize].floor == Some(p.0))
                        .collect();
                    floors.extend(live);
                }
            }
            let _ = spent.send(minute);
        }
    });
    for sim in &mut sims {
        sim.advance(horizon, tl);
        sim.finish(horizon, tl);
    }
    (sims.into_iter().map(|s| s.stats).collect(), shared)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{Source, TriggerGroup};
    use virga_policy::{GreedyDualConfig, HybridConfig};

    fn model(source: Source, mb: u32) -> FunctionModel {
        FunctionModel {
            app: 0,
            trigger: TriggerGroup::Timer,
            duration: Duration::from_secs(1),
            cold_start: Duration::from_millis(500),
            memory_mb: mb,
            source,
        }
    }

    fn one(source: Source, minutes: u32) -> Workload {
        Workload {
            functions: vec![model(source, 256)],
            apps: vec!["a".into()],
            minutes,
            seed: 1,
        }
    }

    fn timer(period_min: u64) -> Source {
        Source::Timer {
            period: Duration::from_secs(60 * period_min),
            phase: Duration::ZERO,
        }
    }

    #[test]
    fn a_fixed_window_shorter_than_the_period_makes_every_start_cold() {
        let w = one(timer(15), 24 * 60);
        let mut tl = Timeline::new(w.minutes);
        let (s, starts) = run_alone(
            &w,
            0,
            &KeepAlive::Fixed(Duration::from_secs(600)),
            &mut tl,
            true,
        );
        assert_eq!(s.invocations, 96);
        assert_eq!(s.cold, 96);
        assert!(starts.unwrap().iter().all(|s| *s == Start::Cold));
        // Each idles its whole 10 minutes: 96 x 600 s x 256 MB.
        assert!(
            (s.wasted_mb_s - 96.0 * 600.0 * 256.0).abs() < 1.0,
            "{}",
            s.wasted_mb_s
        );
        // A longer window keeps it warm after the first.
        let (s, _) = run_alone(
            &w,
            0,
            &KeepAlive::Fixed(Duration::from_secs(1200)),
            &mut tl,
            false,
        );
        assert_eq!(s.cold, 1);
    }

    #[test]
    fn hybrid_prewarms_a_timer_and_wastes_less_than_a_long_fixed_window() {
        let w = one(timer(15), 24 * 60);
        let mut tl = Timeline::new(w.minutes);
        let hybrid = KeepAlive::HybridHistogram(HybridConfig::default());
        let (h, starts) = run_alone(&w, 0, &hybrid, &mut tl, true);
        let starts = starts.unwrap();
        // Cold until the histogram has its five idle times (the fallback
        // keeps the instance warm meanwhile), pre-warmed after.
        assert_eq!(starts[0], Start::Cold);
        assert!(starts[1..6].iter().all(|s| *s == Start::Warm), "{starts:?}");
        assert!(
            starts[6..].iter().all(|s| *s == Start::Prewarmed),
            "{starts:?}"
        );
        assert_eq!(h.prewarmed as usize, starts.len() - 6);
        // One more was started for the period after the run's end.
        assert_eq!(h.prewarms, h.prewarmed + 1);
        let (f, _) = run_alone(
            &w,
            0,
            &KeepAlive::Fixed(Duration::from_secs(1200)),
            &mut tl,
            false,
        );
        assert!(
            h.wasted_mb_s < f.wasted_mb_s / 3.0,
            "{} vs {}",
            h.wasted_mb_s,
            f.wasted_mb_s
        );
    }

    #[test]
    fn greedy_dual_evicts_the_low_priority_instance_under_its_budget() {
        // A hot small function and two rare big ones, half an hour apart;
        // memory for the small one and one big one.
        let hot = model(timer(1), 128);
        let rare = model(timer(30), 512);
        let mut later = rare.clone();
        later.source = Source::Timer {
            period: Duration::from_secs(1800),
            phase: Duration::from_secs(900),
        };
        let w = Workload {
            functions: vec![hot, rare, later],
            apps: vec!["a".into()],
            minutes: 240,
            seed: 1,
        };
        let gd = KeepAlive::GreedyDual(GreedyDualConfig::default());
        let mut tl = Timeline::new(w.minutes);
        let (s, shared) = run_shared(&w, &gd, 640.0, &mut tl);
        assert_eq!(shared.over_budget, 0);
        // Each big one evicts the other (the lower priority), never the hot one.
        assert_eq!((s[0].cold, s[0].evictions), (1, 0), "{s:?}");
        assert_eq!(s[1].cold, s[1].invocations);
        assert_eq!(s[2].cold, s[2].invocations);
        assert!(s[1].evictions >= 7 && s[2].evictions >= 7, "{s:?}");
        // With room for all three nothing is evicted and each starts once.
        let (s, _) = run_shared(&w, &gd, 1152.0, &mut tl);
        assert!(s.iter().all(|f| f.cold == 1 && f.evictions == 0), "{s:?}");
    }

    #[test]
    fn memory_is_accounted_per_minute() {
        let mut tl = Timeline::new(3);
        tl.add(Duration::from_secs(30), Duration::from_secs(150), 1024.0);
        assert_eq!(tl.0, vec![30.0 * 1024.0, 60.0 * 1024.0, 30.0 * 1024.0]);
        assert!((tl.peak_gb() - 1.0).abs() < 1e-9);
    }
}
