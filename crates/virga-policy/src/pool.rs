//! The instance pool of one function: the pure "reuse, spawn, queue or
//! throttle?" and "reap now?" decisions.
//!
//! No processes, no I/O, no clock of its own: callers pass `now`. That keeps
//! the policy testable without processes and reusable by a trace-driven
//! simulator. Instances are an opaque `I`, times a [`Moment`] `T`, and a
//! queued request waits on the receiving end of an `H` hand-off.
//!
//! Keep-alive is fixed here ([`PoolLimits::keep_alive`]): an idle instance
//! expires that long after its last request.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::clock::Moment;
use crate::handoff::Handoff;

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

/// The limits of a pool, from the function's manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolLimits {
    /// Most instances at once (idle + busy + starting); `usize::MAX` for no limit.
    pub max_instances: usize,
    /// Most requests waiting for an instance.
    pub max_queue: usize,
    pub keep_alive: Duration,
    /// Provisioned instances: never reaped.
    pub min_instances: usize,
}

/// Instances of one function: idle ones (most recently used last) and a count
/// of active ones (busy or starting), plus the FIFO of waiting requests.
pub struct Pool<I, T, H: Handoff> {
    limits: PoolLimits,
    idle: Vec<(I, T)>,
    active: usize,
    waiters: VecDeque<H::Sender<Grant<I>>>,
}

impl<I, T, H: Handoff> fmt::Debug for Pool<I, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("limits", &self.limits)
            .field("idle", &self.idle.len())
            .field("active", &self.active)
            .field("waiters", &self.waiters.len())
            .finish()
    }
}

impl<I, T: Moment, H: Handoff> Pool<I, T, H> {
    pub fn new(limits: PoolLimits) -> Self {
        Pool {
            limits,
            idle: Vec::new(),
            active: 0,
            waiters: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    pub fn active_count(&self) -> usize {
        self.active
    }

    pub fn queued(&mut self) -> usize {
        self.waiters.retain(|w| !H::is_closed(w));
        self.waiters.len()
    }

    fn total(&self) -> usize {
        self.idle.len() + self.active
    }

    /// A request arrived: reuse the most recently used idle instance (so the
    /// least recently used ones age out), else spawn under the limit, else queue.
    pub fn acquire(&mut self) -> Acquire<I, H::Receiver<Grant<I>>> {
        if let Some((inst, _)) = self.idle.pop() {
            self.active += 1;
            return Acquire::Warm(inst);
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
    /// first live waiter, else keep it idle.
    pub fn release(&mut self, mut inst: I, now: T) {
        while let Some(w) = self.waiters.pop_front() {
            match H::send(w, Grant::Warm(inst)) {
                Ok(()) => return,
                // That waiter gave up (its client went away): try the next.
                Err(Grant::Warm(back)) => inst = back,
                Err(Grant::Spawn) => unreachable!("sent Warm"),
            }
        }
        self.active -= 1;
        self.idle.push((inst, now));
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
        let pos = self.idle.iter().position(|(i, _)| is_it(i))?;
        Some(self.idle.remove(pos).0)
    }

    /// Idle instances whose keep-alive has run out, oldest first, sparing the
    /// provisioned minimum.
    pub fn reap(&mut self, now: T) -> Vec<I> {
        let spare = self.total().saturating_sub(self.limits.min_instances);
        let expired = self
            .idle
            .iter()
            .take_while(|(_, t)| now.since(*t) >= self.limits.keep_alive)
            .count()
            .min(spare);
        self.idle.drain(..expired).map(|(i, _)| i).collect()
    }

    /// When the next idle instance expires, if any can.
    pub fn next_expiry(&self) -> Option<T> {
        if self.total() <= self.limits.min_instances {
            return None;
        }
        self.idle.first().map(|(_, t)| *t + self.limits.keep_alive)
    }

    /// How many instances are missing to reach `min_instances`.
    pub fn deficit(&self) -> usize {
        self.limits.min_instances.saturating_sub(self.total())
    }

    /// Takes every idle instance (to stop them) and fails every waiter
    /// (their receivers see the sender dropped).
    pub fn drain(&mut self) -> Vec<I> {
        self.waiters.clear();
        self.idle.drain(..).map(|(i, _)| i).collect()
    }

    /// Idle instances with the time each went idle, oldest first.
    pub fn idle(&self) -> impl Iterator<Item = (&I, T)> {
        self.idle.iter().map(|(i, t)| (i, *t))
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
        assert!(matches!(p.acquire(), Acquire::Spawn));
        assert!(matches!(p.acquire(), Acquire::Spawn));
        let Acquire::Wait(mut rx) = p.acquire() else {
            panic!("third request should queue")
        };
        assert!(matches!(p.acquire(), Acquire::Throttle));
        // A release goes straight to the waiter, not to the idle list.
        p.release(7, Duration::ZERO);
        assert!(matches!(granted(&mut rx), Some(Grant::Warm(7))));
        assert_eq!(p.idle_count(), 0);
        assert_eq!(p.active_count(), 2);
    }

    #[test]
    fn reuses_the_most_recently_used_instance() {
        let mut p: P = Pool::new(limits(3, 0));
        let t = Duration::ZERO;
        for _ in 0..2 {
            assert!(matches!(p.acquire(), Acquire::Spawn));
        }
        p.release(1, t);
        p.release(2, t + Duration::from_secs(1));
        assert!(matches!(p.acquire(), Acquire::Warm(2)));
    }

    #[test]
    fn abandoned_waiters_are_skipped_and_do_not_count() {
        let mut p: P = Pool::new(limits(1, 1));
        assert!(matches!(p.acquire(), Acquire::Spawn));
        let Acquire::Wait(rx) = p.acquire() else {
            panic!()
        };
        drop(rx);
        // The dropped waiter frees its queue place.
        let Acquire::Wait(mut rx2) = p.acquire() else {
            panic!("queue place should be free again")
        };
        p.release(5, Duration::ZERO);
        assert!(matches!(granted(&mut rx2), Some(Grant::Warm(5))));
    }

    #[test]
    fn a_dead_instance_lets_a_waiter_spawn_a_replacement() {
        let mut p: P = Pool::new(limits(1, 4));
        assert!(matches!(p.acquire(), Acquire::Spawn));
        let Acquire::Wait(mut rx) = p.acquire() else {
            panic!()
        };
        p.discard();
        assert!(matches!(granted(&mut rx), Some(Grant::Spawn)));
        assert_eq!(p.active_count(), 1);
        p.discard();
        assert_eq!(p.active_count(), 0);
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
        p.release(1, t0);
        p.release(2, t0 + Duration::from_secs(5));
        p.release(3, t0 + Duration::from_secs(6));
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
            assert!(matches!(p.acquire(), Acquire::Spawn));
        }
    }
}
