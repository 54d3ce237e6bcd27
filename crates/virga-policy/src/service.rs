//! The task pool of a service: tasks that each serve up to `per_instance`
//! requests at once, the FIFO of waiting requests, and the pure "which task,
//! start one, wait or throttle?" and "scale to n" decisions.
//!
//! A request goes to the least loaded task with a free slot. With no free
//! slot it starts a task only while fewer than the autoscaler's target run
//! (at least one, so a service at zero activates on its first request);
//! otherwise it waits, and a freed slot or a new task's slots go to the
//! oldest waiter. Scaling down stops idle tasks only, longest idle first.
//!
//! Like [`crate::pool`], no processes, no I/O and no clock of its own.

use std::collections::VecDeque;
use std::fmt;

use crate::clock::Moment;
use crate::handoff::Handoff;
use crate::pool::{Acquire, Grant};

#[derive(Debug)]
struct Task<I, T> {
    inst: I,
    in_flight: usize,
    idle_since: T,
}

/// What the autoscaler's new target asks for.
#[derive(Debug)]
pub struct ScaleStep<I> {
    /// Tasks to start (already counted as starting: report each with
    /// [`ServicePool::add`] or [`ServicePool::start_failed`]).
    pub start: usize,
    /// Idle tasks taken out of the pool: stop them.
    pub stop: Vec<I>,
}

pub struct ServicePool<I, T, H: Handoff> {
    per_instance: usize,
    max_instances: usize,
    max_queue: usize,
    min_instances: usize,
    target: usize,
    tasks: Vec<Task<I, T>>,
    starting: usize,
    waiters: VecDeque<H::Sender<Grant<I>>>,
    draining: bool,
}

impl<I, T, H: Handoff> fmt::Debug for ServicePool<I, T, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePool")
            .field("per_instance", &self.per_instance)
            .field("target", &self.target)
            .field("tasks", &self.tasks.len())
            .field("starting", &self.starting)
            .field("waiters", &self.waiters.len())
            .field("draining", &self.draining)
            .finish()
    }
}

impl<I: Clone, T: Moment, H: Handoff> ServicePool<I, T, H> {
    pub fn new(
        per_instance: usize,
        min_instances: usize,
        max_instances: usize,
        max_queue: usize,
    ) -> Self {
        ServicePool {
            per_instance: per_instance.max(1),
            max_instances,
            max_queue,
            min_instances,
            target: min_instances,
            tasks: Vec::new(),
            starting: 0,
            waiters: VecDeque::new(),
            draining: false,
        }
    }

    pub fn per_instance(&self) -> usize {
        self.per_instance
    }

    /// Running tasks (not counting those starting).
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    pub fn starting(&self) -> usize {
        self.starting
    }

    /// Running tasks serving at least one request.
    pub fn busy(&self) -> usize {
        self.tasks.iter().filter(|t| t.in_flight > 0).count()
    }

    /// Requests being served.
    pub fn in_flight(&self) -> usize {
        self.tasks.iter().map(|t| t.in_flight).sum()
    }

    pub fn queued(&mut self) -> usize {
        self.waiters.retain(|w| !H::is_closed(w));
        self.waiters.len()
    }

    /// The load the autoscaler sees: requests in flight plus waiting.
    pub fn concurrency(&mut self) -> usize {
        self.in_flight() + self.queued()
    }

    /// Tasks this pool may have now: the target, at least one, at most the maximum.
    fn cap(&self) -> usize {
        self.target.max(1).min(self.max_instances)
    }

    /// A request arrived.
    pub fn acquire(&mut self) -> Acquire<I, H::Receiver<Grant<I>>> {
        if self.draining {
            return Acquire::Throttle;
        }
        let per = self.per_instance;
        if let Some(t) = self
            .tasks
            .iter_mut()
            .filter(|t| t.in_flight < per)
            .min_by_key(|t| t.in_flight)
        {
            t.in_flight += 1;
            return Acquire::Warm(t.inst.clone());
        }
        if self.tasks.len() + self.starting < self.cap() {
            self.starting += 1;
            return Acquire::Spawn;
        }
        if self.queued() < self.max_queue {
            let (tx, rx) = H::channel();
            self.waiters.push_back(tx);
            return Acquire::Wait(rx);
        }
        Acquire::Throttle
    }

    /// Hands free slots of the task at `idx` to waiters.
    fn feed_waiters(&mut self, idx: usize) {
        while self.tasks[idx].in_flight < self.per_instance {
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            if H::send(w, Grant::Warm(self.tasks[idx].inst.clone())).is_ok() {
                self.tasks[idx].in_flight += 1;
            }
        }
    }

    /// A task counted as starting is ready; `busy` when the request that
    /// started it takes its first slot. Its other slots go to waiters.
    /// Returns the task when the pool is draining and nobody needs it: stop it.
    #[must_use = "a task returned must be stopped"]
    pub fn add(&mut self, inst: I, now: T, busy: bool) -> Option<I> {
        self.starting = self.starting.saturating_sub(1);
        if self.draining && !busy {
            return Some(inst);
        }
        self.tasks.push(Task {
            inst,
            in_flight: usize::from(busy),
            idle_since: now,
        });
        let idx = self.tasks.len() - 1;
        self.feed_waiters(idx);
        None
    }

    /// If waiters remain and capacity allows, lets the first live one start a task.
    fn spawn_for_waiter(&mut self) {
        while !self.draining && self.tasks.len() + self.starting < self.cap() {
            let Some(w) = self.waiters.pop_front() else {
                return;
            };
            if H::send(w, Grant::Spawn).is_ok() {
                self.starting += 1;
                return;
            }
        }
    }

    /// A task counted as starting failed to start.
    pub fn start_failed(&mut self) {
        self.starting = self.starting.saturating_sub(1);
        self.spawn_for_waiter();
    }

    /// A request on a task finished and the task is healthy. Returns the task
    /// when the pool is draining and it became idle: stop it.
    pub fn release(&mut self, is_it: impl Fn(&I) -> bool, now: T) -> Option<I> {
        let idx = self.tasks.iter().position(|t| is_it(&t.inst))?;
        let t = &mut self.tasks[idx];
        t.in_flight = t.in_flight.saturating_sub(1);
        if t.in_flight == 0 {
            t.idle_since = now;
        }
        if self.draining {
            if self.tasks[idx].in_flight == 0 {
                return Some(self.tasks.remove(idx).inst);
            }
            return None;
        }
        self.feed_waiters(idx);
        None
    }

    /// A task died or was killed: forget it (whatever it was serving), and
    /// let a waiter start a replacement if capacity allows.
    pub fn remove(&mut self, is_it: impl Fn(&I) -> bool) -> Option<I> {
        let idx = self.tasks.iter().position(|t| is_it(&t.inst))?;
        let t = self.tasks.remove(idx);
        self.spawn_for_waiter();
        Some(t.inst)
    }

    /// Applies the autoscaler's target.
    pub fn scale(&mut self, target: usize) -> ScaleStep<I> {
        if self.draining {
            return ScaleStep {
                start: 0,
                stop: Vec::new(),
            };
        }
        self.target = target.clamp(self.min_instances, self.max_instances);
        let have = self.tasks.len() + self.starting;
        let mut step = ScaleStep {
            start: 0,
            stop: Vec::new(),
        };
        if have < self.target {
            step.start = self.target - have;
            self.starting += step.start;
        } else if have > self.target {
            step.stop = self.stop_idle(have - self.target);
        }
        step
    }

    /// Takes up to `n` idle tasks out, longest idle first.
    fn stop_idle(&mut self, n: usize) -> Vec<I> {
        let mut idle: Vec<(usize, T)> = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.in_flight == 0)
            .map(|(i, t)| (i, t.idle_since))
            .collect();
        idle.sort_by_key(|&(_, since)| since);
        let mut take: Vec<usize> = idle.into_iter().take(n).map(|(i, _)| i).collect();
        take.sort_unstable_by(|a, b| b.cmp(a));
        take.into_iter()
            .map(|i| self.tasks.remove(i).inst)
            .collect()
    }

    /// Scale to zero now (down to the minimum): the idle tasks to stop.
    pub fn stop_idle_above_minimum(&mut self) -> Vec<I> {
        let excess = self.tasks.len().saturating_sub(self.min_instances);
        self.target = self.min_instances;
        self.stop_idle(excess)
    }

    /// Stops taking requests: fails every waiter and returns the idle tasks;
    /// busy ones come back from [`ServicePool::release`] as they go idle.
    pub fn drain(&mut self) -> Vec<I> {
        self.draining = true;
        self.waiters.clear();
        self.stop_idle(usize::MAX)
    }

    /// Every running task and whether it is idle.
    pub fn tasks(&self) -> impl Iterator<Item = (&I, bool)> {
        self.tasks.iter().map(|t| (&t.inst, t.in_flight == 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handoff::{Inbox, Mailbox};
    use std::time::Duration;

    type P = ServicePool<u32, Duration, Mailbox>;

    fn granted(rx: &mut Inbox<Grant<u32>>) -> Option<Grant<u32>> {
        rx.try_recv().ok()
    }

    #[test]
    fn one_task_takes_requests_up_to_its_concurrency_then_they_wait() {
        let mut p: P = ServicePool::new(3, 0, 1, 10);
        let now = Duration::ZERO;
        assert!(
            matches!(p.acquire(), Acquire::Spawn),
            "activation from zero"
        );
        let Acquire::Wait(mut w1) = p.acquire() else {
            panic!("the task is starting: wait for it")
        };
        let Acquire::Wait(mut w2) = p.acquire() else {
            panic!()
        };
        let Acquire::Wait(mut w3) = p.acquire() else {
            panic!()
        };
        // The task comes up busy with its starter; two slots go to waiters.
        let _ = p.add(7, now, true);
        assert!(matches!(granted(&mut w1), Some(Grant::Warm(7))));
        assert!(matches!(granted(&mut w2), Some(Grant::Warm(7))));
        assert!(granted(&mut w3).is_none());
        assert_eq!((p.in_flight(), p.queued()), (3, 1));
        // A finished request frees a slot for the last waiter.
        assert!(p.release(|&i| i == 7, now).is_none());
        assert!(matches!(granted(&mut w3), Some(Grant::Warm(7))));
        assert_eq!(p.in_flight(), 3);
    }

    #[test]
    fn requests_spread_to_the_least_loaded_task_and_scaling_stops_idle_ones() {
        let mut p: P = ServicePool::new(2, 0, 4, 0);
        let now = Duration::ZERO;
        let step = p.scale(2);
        assert_eq!(step.start, 2);
        let _ = p.add(1, now, false);
        let _ = p.add(2, now, false);
        assert!(matches!(p.acquire(), Acquire::Warm(1)));
        assert!(matches!(p.acquire(), Acquire::Warm(2)));
        assert!(matches!(p.acquire(), Acquire::Warm(1)));
        assert!(matches!(p.acquire(), Acquire::Warm(2)));
        assert!(matches!(p.acquire(), Acquire::Throttle), "full, no queue");
        p.release(|&i| i == 1, now);
        p.release(|&i| i == 1, now);
        let step = p.scale(1);
        assert_eq!((step.start, step.stop), (0, vec![1]));
        // The busy task is never stopped.
        assert!(p.scale(0).stop.is_empty());
        assert_eq!(p.running(), 1);
    }

    #[test]
    fn a_dead_task_lets_a_waiter_start_a_replacement() {
        let mut p: P = ServicePool::new(1, 0, 1, 5);
        let now = Duration::ZERO;
        assert!(matches!(p.acquire(), Acquire::Spawn));
        let _ = p.add(1, now, true);
        let Acquire::Wait(mut w) = p.acquire() else {
            panic!()
        };
        assert_eq!(p.remove(|&i| i == 1), Some(1));
        assert!(matches!(granted(&mut w), Some(Grant::Spawn)));
        assert_eq!(p.starting(), 1);
        p.start_failed();
        assert_eq!(p.starting(), 0);
    }

    #[test]
    fn draining_stops_idle_tasks_now_and_busy_ones_when_they_finish() {
        let mut p: P = ServicePool::new(2, 0, 2, 5);
        let now = Duration::ZERO;
        p.scale(2);
        let _ = p.add(1, now, false);
        let _ = p.add(2, now, true);
        assert_eq!(p.drain(), vec![1]);
        assert!(matches!(p.acquire(), Acquire::Throttle));
        assert_eq!(p.release(|&i| i == 2, now), Some(2));
        assert_eq!(p.running(), 0);
    }

    #[test]
    fn a_task_started_after_the_pool_drained_is_handed_back_to_stop() {
        let mut p: P = ServicePool::new(2, 0, 2, 4);
        let now = Duration::ZERO;
        let step = p.scale(2);
        assert_eq!(step.start, 2);
        assert!(p.drain().is_empty());
        assert_eq!(p.add(1, now, false), Some(1), "nobody needs it");
        assert_eq!(p.add(2, now, true), None, "its starter still needs it");
        assert_eq!(p.release(|i| *i == 2, now), Some(2), "then it stops");
        assert_eq!(p.running(), 0);
    }
}
