//! The instance pool of one function: the pure "reuse, spawn, queue or
//! throttle?" and "reap now?" decisions.
//!
//! No processes, no I/O, no clock of its own: callers pass `now`. That keeps
//! the policy testable without processes and reusable by a trace-driven
//! simulator. Instances are an opaque `I`, times a [`Moment`] `T`, and a
//! queued request waits on the receiving end of an `H` hand-off.
//!
//! How long an idle instance lives, and whether to start one ahead of the
//! next request, is the function's keep-alive policy's to say
//! ([`crate::keep_alive`]); [`Pool::new`] uses the fixed one of
//! [`PoolLimits::keep_alive`]: an idle instance expires that long after its
//! last request.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::clock::Moment;
use crate::handoff::Handoff;
use crate::keep_alive::{KeepAlive, Tracker};

/// What a queued request is eventually handed.
#[derive(Debug)]
pub enum Grant<I> {
    /// A warm instance, now busy with this request.
    Warm(I),
    /// A capacity slot: start a new instance for this request.
    Spawn,
}

/// The answer to "a request arrived"; `R` is the receiving end the request
/// waits on.
#[derive(Debug)]
pub enum Acquire<I, R> {
    Warm(I),
    Spawn,
    /// Wait in the FIFO for a released instance or a freed slot.
    Wait(R),
    /// Capacity and queue are full: 429.
    Throttle,
}

/// Where a released instance went ([`Pool::release`]).
#[derive(Debug, PartialEq)]
#[must_use = "an instance returned must be stopped"]
pub enum Released<I> {
    /// To the first live waiter, busy with its request.
    Handed,
    /// Idle in the pool, as the keep-alive policy says.
    Idle,
    /// Back to the caller to stop now: the policy would rather pre-warm a
    /// fresh one later ([`Pool::take_prewarm`]).
    Stop(I),
}

impl<I> Released<I> {
    /// The instance to stop, if the policy gave it back.
    pub fn stop(self) -> Option<I> {
        match self {
            Released::Stop(i) => Some(i),
            Released::Handed | Released::Idle => None,
        }
    }
}

/// The limits of a pool, from the function's manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLimits {
    /// Most instances at once (idle + busy + starting); `usize::MAX` for no limit.
    pub max_instances: usize,
    /// Most requests waiting for an instance.
    pub max_queue: usize,
    /// The fixed policy's window ([`Pool::new`]).
    pub keep_alive: Duration,
    /// Provisioned instances: never reaped.
    pub min_instances: usize,
}

/// An idle instance, when it went idle and when it expires.
struct Idle<I, T> {
    inst: I,
    since: T,
    /// Where its idle time counts from: its release, or for a pre-warmed
    /// instance the release that planned the pre-warm.
    origin: T,
    /// `None`: only evicted for memory (greedy-dual).
    expires: Option<T>,
    /// Greedy-dual's priority when it went idle.
    priority: f64,
}

/// The idle instances, most recently used last, with the soonest expiry and
/// the lowest priority kept at hand: asked at every event of a simulation,
/// they must not cost a scan of hundreds of idle instances each time. Both
/// are recomputed only when the entry holding them leaves.
struct IdleList<I, T> {
    list: Vec<Idle<I, T>>,
    soonest: Option<T>,
    lowest: Option<f64>,
}

impl<I, T: Moment> IdleList<I, T> {
    fn new() -> Self {
        IdleList {
            list: Vec::new(),
            soonest: None,
            lowest: None,
        }
    }

    fn push(&mut self, e: Idle<I, T>) {
        if let Some(x) = e.expires {
            self.soonest = Some(self.soonest.map_or(x, |s| s.min(x)));
        }
        self.lowest = Some(self.lowest.map_or(e.priority, |l| l.min(e.priority)));
        self.list.push(e);
    }

    fn refresh(&mut self) {
        self.soonest = self.list.iter().filter_map(|e| e.expires).min();
        self.lowest = self
            .list
            .iter()
            .map(|e| e.priority)
            .min_by(|a, b| a.total_cmp(b));
    }

    /// Whether `e` held one of the extremes (which must then be recomputed).
    fn held_extreme(&self, e: &Idle<I, T>) -> bool {
        (e.expires.is_some() && e.expires == self.soonest) || Some(e.priority) == self.lowest
    }

    fn pop(&mut self) -> Option<Idle<I, T>> {
        let e = self.list.pop()?;
        if self.held_extreme(&e) {
            self.refresh();
        }
        Some(e)
    }

    fn remove(&mut self, pos: usize) -> Idle<I, T> {
        let e = self.list.remove(pos);
        if self.held_extreme(&e) {
            self.refresh();
        }
        e
    }

    /// Moves up to `most` entries expired by `now` into `out`, oldest first;
    /// returns the latest idle origin among them.
    fn reap_into(&mut self, now: T, most: usize, out: &mut Vec<I>) -> Option<T> {
        if most == 0 || self.soonest.is_none_or(|s| s > now) {
            return None;
        }
        let expired = |e: &Idle<I, T>| e.expires.is_some_and(|x| x <= now);
        let mut latest: Option<T> = None;
        let mut note = |origin: T| latest = Some(latest.map_or(origin, |l| l.max(origin)));
        // Under one fixed window the expired ones are the oldest: one drain.
        let prefix = self
            .list
            .iter()
            .take_while(|e| expired(e))
            .count()
            .min(most);
        let mut left = most - prefix;
        for e in self.list.drain(..prefix) {
            note(e.origin);
            out.push(e.inst);
        }
        let mut i = 0;
        while left > 0 && i < self.list.len() {
            if expired(&self.list[i]) {
                let e = self.list.remove(i);
                note(e.origin);
                out.push(e.inst);
                left -= 1;
            } else {
                i += 1;
            }
        }
        self.refresh();
        latest
    }
}

/// Instances of one function: idle ones (most recently used last) and a count
/// of active ones (busy or starting), plus the FIFO of waiting requests and
/// the function's keep-alive state.
pub struct Pool<I, T, H: Handoff> {
    limits: PoolLimits,
    idle: IdleList<I, T>,
    active: usize,
    waiters: VecDeque<H::Sender<Grant<I>>>,
    keep: Tracker,
    /// When to start a pre-warmed instance.
    prewarm: Option<T>,
    /// The release a planned pre-warm follows.
    planned_at: Option<T>,
    /// The idle origin of the instance stopped last: a request that finds
    /// no idle instance measures the idle time it would have needed from it.
    last_gone: Option<T>,
    /// The keep-alive timer's next wake-up, as it last armed it
    /// ([`Pool::arm_timer`]); `None` while it sleeps until woken.
    timer_at: Option<T>,
}

impl<I, T, H: Handoff> fmt::Debug for Pool<I, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("limits", &self.limits)
            .field("idle", &self.idle.list.len())
            .field("active", &self.active)
            .field("waiters", &self.waiters.len())
            .field("keep_alive", self.keep.policy())
            .finish()
    }
}

impl<I, T: Moment, H: Handoff> Pool<I, T, H> {
    /// A pool under the fixed keep-alive of `limits`.
    pub fn new(limits: PoolLimits) -> Self {
        Pool::with_keep_alive(limits, Tracker::new(KeepAlive::Fixed(limits.keep_alive)))
    }

    /// A pool whose idle instances live as `keep` decides.
    pub fn with_keep_alive(limits: PoolLimits, keep: Tracker) -> Self {
        Pool {
            limits,
            idle: IdleList::new(),
            active: 0,
            waiters: VecDeque::new(),
            keep,
            prewarm: None,
            planned_at: None,
            last_gone: None,
            timer_at: None,
        }
    }

    pub fn keep_alive(&self) -> &Tracker {
        &self.keep
    }

    pub fn keep_alive_mut(&mut self) -> &mut Tracker {
        &mut self.keep
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    pub fn idle_count(&self) -> usize {
        self.idle.list.len()
    }

    pub fn active_count(&self) -> usize {
        self.active
    }

    pub fn queued(&mut self) -> usize {
        self.waiters.retain(|w| !H::is_closed(w));
        self.waiters.len()
    }

    fn total(&self) -> usize {
        self.idle.list.len() + self.active
    }

    /// A request arrived at `now`: reuse the most recently used idle
    /// instance (so the least recently used ones age out), else spawn under
    /// the limit, else queue. The predicted request came: no pre-warm is due.
    pub fn acquire(&mut self, now: T) -> Acquire<I, H::Receiver<Grant<I>>> {
        self.keep.arrival(self.total());
        self.prewarm = None;
        if let Some(idle) = self.idle.pop() {
            self.keep.idle_time(now.since(idle.origin));
            self.active += 1;
            return Acquire::Warm(idle.inst);
        }
        if let Some(gone) = self.last_gone.take() {
            self.keep.idle_time(now.since(gone));
        }
        if self.total() < self.limits.max_instances {
            self.active += 1;
            return Acquire::Spawn;
        }
        if self.queued() < self.limits.max_queue {
            let (tx, rx) = H::channel();
            self.waiters.push_back(tx);
            return Acquire::Wait(rx);
        }
        Acquire::Throttle
    }

    /// Reserves a slot for a provisioned instance, if capacity allows.
    pub fn reserve(&mut self) -> bool {
        if self.total() < self.limits.max_instances {
            self.active += 1;
            true
        } else {
            false
        }
    }

    /// An active instance finished its request and is healthy: hand it to the
    /// first live waiter, else keep it idle as the keep-alive policy says, or
    /// give it back to be stopped when the policy would rather pre-warm a
    /// fresh one later ([`Pool::take_prewarm`]).
    pub fn release(&mut self, inst: I, now: T) -> Released<I> {
        let Some(inst) = self.hand_to_waiter(inst) else {
            return Released::Handed;
        };
        self.active -= 1;
        let windows = self.keep.windows();
        let spare = self.total() >= self.limits.min_instances;
        if spare && !windows.prewarm.is_zero() {
            // Spare the instance the idle stretch before the next request.
            self.prewarm = Some(now + windows.prewarm);
            self.planned_at = Some(now);
            self.last_gone = Some(now);
            return Released::Stop(inst);
        }
        self.park(inst, now, now, windows.keep_alive);
        Released::Idle
    }

    /// Gives `inst` to the first live waiter; back when there is none.
    fn hand_to_waiter(&mut self, mut inst: I) -> Option<I> {
        while let Some(w) = self.waiters.pop_front() {
            match H::send(w, Grant::Warm(inst)) {
                Ok(()) => return None,
                // That waiter gave up (its client went away): try the next.
                Err(Grant::Warm(back)) => inst = back,
                Err(Grant::Spawn) => unreachable!("sent Warm"),
            }
        }
        Some(inst)
    }

    fn park(&mut self, inst: I, now: T, origin: T, keep_alive: Option<Duration>) {
        self.idle.push(Idle {
            inst,
            since: now,
            origin,
            expires: keep_alive.map(|k| now + k),
            priority: self.keep.priority(),
        });
    }

    /// When a pre-warm is due, if one is planned.
    pub fn next_prewarm(&self) -> Option<T> {
        self.prewarm
    }

    /// A pre-warm is due by `now`: true when the caller should start an
    /// instance (a slot is taken for it; then [`Pool::add_prewarmed`], or
    /// [`Pool::discard`] if it fails). Nothing to start when the function
    /// already has an instance or no room.
    pub fn take_prewarm(&mut self, now: T) -> bool {
        if self.prewarm.is_none_or(|at| at > now) {
            return false;
        }
        self.prewarm = None;
        if self.total() == 0 && self.limits.max_instances > 0 {
            self.active += 1;
            true
        } else {
            false
        }
    }

    /// A pre-warmed instance is ready at `now`: a waiting request gets it,
    /// else it idles for the policy's keep-alive window.
    pub fn add_prewarmed(&mut self, inst: I, now: T) {
        let keep_alive = self.keep.windows().keep_alive;
        let origin = self.planned_at.unwrap_or(now);
        let Some(inst) = self.hand_to_waiter(inst) else {
            return;
        };
        self.active -= 1;
        self.park(inst, now, origin, keep_alive);
    }

    /// An active instance is gone (crashed, killed, failed to start): free its
    /// slot, and let the first live waiter start a replacement.
    pub fn discard(&mut self) {
        while let Some(w) = self.waiters.pop_front() {
            if H::send(w, Grant::Spawn).is_ok() {
                return;
            }
        }
        self.active -= 1;
    }

    /// Removes an idle instance that died on its own.
    pub fn remove_idle(&mut self, mut is_it: impl FnMut(&I) -> bool) -> Option<I> {
        let pos = self.idle.list.iter().position(|e| is_it(&e.inst))?;
        let e = self.idle.remove(pos);
        self.last_gone = Some(e.origin);
        Some(e.inst)
    }

    /// Idle instances whose keep-alive has run out, oldest first, sparing the
    /// provisioned minimum.
    pub fn reap(&mut self, now: T) -> Vec<I> {
        let mut expired = Vec::new();
        self.reap_into(now, &mut expired);
        expired
    }

    /// [`Pool::reap`] into a vector the caller reuses.
    pub fn reap_into(&mut self, now: T, out: &mut Vec<I>) {
        let spare = self.total().saturating_sub(self.limits.min_instances);
        if let Some(origin) = self.idle.reap_into(now, spare, out) {
            self.last_gone = Some(origin);
        }
    }

    /// When the next idle instance expires, if any can.
    pub fn next_expiry(&self) -> Option<T> {
        if self.total() <= self.limits.min_instances {
            return None;
        }
        self.idle.soonest
    }

    /// The pool's next deadline: the soonest idle expiry or planned
    /// pre-warm.
    fn next_deadline(&self) -> Option<T> {
        [self.next_expiry(), self.prewarm]
            .into_iter()
            .flatten()
            .min()
    }

    /// For the keep-alive timer, about to sleep: when it must act next
    /// (`None`: only when woken). Remembered, for [`Pool::timer_late`].
    pub fn arm_timer(&mut self) -> Option<T> {
        self.timer_at = self.next_deadline();
        self.timer_at
    }

    /// Whether the pool now has a deadline before the timer's armed
    /// wake-up, or one while it sleeps with none: then it must be woken.
    /// A release parks its instance with an expiry no sooner than those
    /// already idle, so the releases of a busy function leave the timer
    /// asleep (a wake per invocation was a task wake-up per invocation).
    pub fn timer_late(&self) -> bool {
        match (self.next_deadline(), self.timer_at) {
            (Some(next), Some(at)) => next < at,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// Greedy-dual's candidate: the lowest priority among the idle instances
    /// that may go (never the provisioned minimum).
    pub fn lowest_priority(&self) -> Option<f64> {
        if self.total() <= self.limits.min_instances {
            return None;
        }
        self.idle.lowest
    }

    /// Takes out the idle instance of lowest priority to free its memory, and
    /// advances greedy-dual's clock to that priority.
    pub fn evict(&mut self) -> Option<I> {
        let lowest = self.lowest_priority()?;
        let pos = self.idle.list.iter().position(|e| e.priority == lowest)?;
        self.keep.clock().evicted(lowest);
        let e = self.idle.remove(pos);
        self.last_gone = Some(e.origin);
        Some(e.inst)
    }

    /// How many instances are missing to reach `min_instances`.
    pub fn deficit(&self) -> usize {
        self.limits.min_instances.saturating_sub(self.total())
    }

    /// Takes every idle instance (to stop them) and fails every waiter
    /// (their receivers see the sender dropped).
    pub fn drain(&mut self) -> Vec<I> {
        self.waiters.clear();
        self.prewarm = None;
        let all = self.idle.list.drain(..).map(|e| e.inst).collect();
        self.idle.refresh();
        all
    }

    /// Idle instances with the time each went idle, oldest first.
    pub fn idle(&self) -> impl Iterator<Item = (&I, T)> {
        self.idle.list.iter().map(|e| (&e.inst, e.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::{Inbox, Mailbox};

    /// A pool on a virtual clock (time since the start), as a simulator runs it.
    type P = Pool<u32, Duration, Mailbox>;

    fn granted(rx: &mut Inbox<Grant<u32>>) -> Option<Grant<u32>> {
        rx.try_recv().ok()
    }

    fn limits(max: usize, queue: usize) -> PoolLimits {
        PoolLimits {
            max_instances: max,
            max_queue: queue,
            keep_alive: Duration::from_secs(10),
            min_instances: 0,
        }
    }

    #[test]
    fn spawns_until_the_limit_then_queues_then_throttles() {
        let mut p: P = Pool::new(limits(2, 1));
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        let Acquire::Wait(mut rx) = p.acquire(Duration::ZERO) else {
            panic!("third request should queue")
        };
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Throttle));
        // A release goes straight to the waiter, not to the idle list.
        assert_eq!(p.release(7, Duration::ZERO), Released::Handed);
        assert!(matches!(granted(&mut rx), Some(Grant::Warm(7))));
        assert_eq!(p.idle_count(), 0);
        assert_eq!(p.active_count(), 2);
    }

    #[test]
    fn reuses_the_most_recently_used_instance() {
        let mut p: P = Pool::new(limits(3, 0));
        let t = Duration::ZERO;
        for _ in 0..2 {
            assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        }
        assert_eq!(p.release(1, t), Released::Idle);
        assert_eq!(p.release(2, t + Duration::from_secs(1)), Released::Idle);
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Warm(2)));
    }

    #[test]
    fn abandoned_waiters_are_skipped_and_do_not_count() {
        let mut p: P = Pool::new(limits(1, 1));
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        let Acquire::Wait(rx) = p.acquire(Duration::ZERO) else {
            panic!()
        };
        drop(rx);
        // The dropped waiter frees its queue place.
        let Acquire::Wait(mut rx2) = p.acquire(Duration::ZERO) else {
            panic!("queue place should be free again")
        };
        assert_eq!(p.release(5, Duration::ZERO), Released::Handed);
        assert!(matches!(granted(&mut rx2), Some(Grant::Warm(5))));
    }

    #[test]
    fn a_dead_instance_lets_a_waiter_spawn_a_replacement() {
        let mut p: P = Pool::new(limits(1, 4));
        assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        let Acquire::Wait(mut rx) = p.acquire(Duration::ZERO) else {
            panic!()
        };
        p.discard();
        assert!(matches!(granted(&mut rx), Some(Grant::Spawn)));
        assert_eq!(p.active_count(), 1);
        p.discard();
        assert_eq!(p.active_count(), 0);
    }

    #[test]
    fn the_timer_is_late_only_for_a_deadline_before_its_wake_up() {
        let s = Duration::from_secs;
        let mut p: P = Pool::new(limits(3, 0));
        // Nothing idle: the timer sleeps until woken, and nothing is due.
        assert_eq!(p.arm_timer(), None);
        assert!(!p.timer_late());
        for _ in 0..3 {
            assert!(matches!(p.acquire(s(0)), Acquire::Spawn));
        }
        // The first idle instance while it sleeps with no wake-up: late.
        assert!(p.release(1, s(0)).stop().is_none());
        assert!(p.timer_late());
        let keep_alive = limits(3, 0).keep_alive;
        assert_eq!(p.arm_timer(), Some(s(0) + keep_alive));
        // Later releases expire later: the armed wake-up still comes first.
        assert!(p.release(2, s(1)).stop().is_none());
        assert!(p.release(3, s(2)).stop().is_none());
        assert!(!p.timer_late());
        // The timer woke, reaped the first, armed for the next.
        assert_eq!(p.reap(s(0) + keep_alive), vec![1]);
        assert_eq!(p.arm_timer(), Some(s(1) + keep_alive));
        assert!(!p.timer_late());
    }

    #[test]
    fn reaps_only_expired_instances_and_spares_the_minimum() {
        let mut l = limits(4, 0);
        l.min_instances = 1;
        let mut p: P = Pool::new(l);
        let t0 = Duration::ZERO;
        for _ in 0..3 {
            assert!(p.reserve());
        }
        assert!(p.release(1, t0).stop().is_none());
        assert!(p.release(2, t0 + Duration::from_secs(5)).stop().is_none());
        assert!(p.release(3, t0 + Duration::from_secs(6)).stop().is_none());
        assert_eq!(p.next_expiry(), Some(t0 + Duration::from_secs(10)));
        assert!(p.reap(t0 + Duration::from_secs(9)).is_empty());
        assert_eq!(p.reap(t0 + Duration::from_secs(15)), vec![1, 2]);
        // The last one is the provisioned minimum: never expires.
        assert_eq!(p.next_expiry(), None);
        assert!(p.reap(t0 + Duration::from_secs(100)).is_empty());
        assert_eq!(p.deficit(), 0);
        assert_eq!(p.remove_idle(|&i| i == 3), Some(3));
        assert_eq!(p.deficit(), 1);
    }

    #[test]
    fn unlimited_pools_always_spawn() {
        let mut p: P = Pool::new(limits(usize::MAX, 0));
        for _ in 0..1000 {
            assert!(matches!(p.acquire(Duration::ZERO), Acquire::Spawn));
        }
    }

    fn unlimited() -> PoolLimits {
        limits(usize::MAX, 0)
    }

    fn min(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[test]
    fn a_periodic_function_gets_a_prewarmed_instance_just_before_its_period() {
        use crate::keep_alive::{HybridConfig, KeepAlive, Tracker};
        let keep = Tracker::new(KeepAlive::HybridHistogram(HybridConfig::default()));
        let mut p: P = Pool::with_keep_alive(unlimited(), keep);
        let period = min(10);
        let run = Duration::from_secs(1);
        let mut next_id = 0;
        let mut prewarmed = 0;
        for i in 0..12u32 {
            let at = period * i;
            // The driver starts what the pool asks for before the arrival.
            if p.next_prewarm().is_some_and(|t| t < at) {
                let t = p.next_prewarm().unwrap();
                assert!(at - t < min(2), "pre-warm {t:?} is just before {at:?}");
                assert!(p.take_prewarm(t));
                next_id += 1;
                p.add_prewarmed(next_id, t + Duration::from_millis(500));
                prewarmed += 1;
            }
            let inst = match p.acquire(at) {
                Acquire::Warm(i) => i,
                Acquire::Spawn => {
                    next_id += 1;
                    next_id
                }
                _ => unreachable!(),
            };
            assert!(p.reap(at + run).is_empty());
            if let Released::Stop(stopped) = p.release(inst, at + run) {
                assert_eq!(stopped, inst, "stopped until the pre-warm");
                assert_eq!(p.idle_count(), 0);
            }
        }
        // Cold until the histogram had five idle times; pre-warmed since.
        assert_eq!(prewarmed, 6);
    }

    #[test]
    fn an_instance_idle_past_the_99th_percentile_is_released() {
        use crate::keep_alive::{HybridConfig, KeepAlive, Tracker};
        let keep = Tracker::new(KeepAlive::HybridHistogram(HybridConfig::default()));
        let mut p: P = Pool::with_keep_alive(unlimited(), keep);
        // A request every 30 s for an hour: idle times under a minute.
        let mut at = Duration::ZERO;
        for _ in 0..120 {
            let inst = match p.acquire(at) {
                Acquire::Warm(i) => i,
                _ => 1,
            };
            assert!(p
                .release(inst, at + Duration::from_secs(1))
                .stop()
                .is_none());
            at += Duration::from_secs(30);
        }
        let last = at - Duration::from_secs(29);
        // Kept for the 99th percentile's bin (1 min) + 10%, then reaped.
        assert_eq!(p.next_expiry(), Some(last + Duration::from_secs(66)));
        assert!(p.reap(last + Duration::from_secs(65)).is_empty());
        assert_eq!(p.reap(last + Duration::from_secs(66)), vec![1]);
    }

    #[test]
    fn greedy_dual_evicts_the_lowest_priority_instance_across_functions() {
        use crate::keep_alive::{GreedyDualClock, GreedyDualConfig, KeepAlive, Tracker};
        let clock = GreedyDualClock::new();
        let gd = || Tracker::new(KeepAlive::GreedyDual(GreedyDualConfig::default()));
        // Same cost; one invoked often and small, one once and large.
        let mut hot: P =
            Pool::with_keep_alive(unlimited(), gd().greedy_dual(clock.clone(), 300.0, 128.0));
        let mut big: P =
            Pool::with_keep_alive(unlimited(), gd().greedy_dual(clock.clone(), 300.0, 2048.0));
        for i in 0..5 {
            let inst = match hot.acquire(min(i)) {
                Acquire::Warm(i) => i,
                _ => 1,
            };
            assert!(hot
                .release(inst, min(i) + Duration::from_secs(1))
                .stop()
                .is_none());
        }
        assert!(matches!(big.acquire(Duration::ZERO), Acquire::Spawn));
        assert!(big.release(2, Duration::from_secs(1)).stop().is_none());
        // Never expires on its own.
        assert_eq!(hot.next_expiry(), None);
        assert!(hot.reap(min(10_000)).is_empty());
        let pools = [
            ("hot", hot.lowest_priority()),
            ("big", big.lowest_priority()),
        ];
        let (name, p) =
            crate::keep_alive::victim(pools.iter().filter_map(|(n, p)| p.map(|p| (*n, p))))
                .unwrap();
        assert_eq!(name, "big");
        assert_eq!(big.evict(), Some(2));
        assert_eq!(clock.get(), p, "the clock rose to the evicted priority");
        assert_eq!(hot.idle_count(), 1);
    }
}
