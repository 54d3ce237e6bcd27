//! Property tests of the pure pools: any interleaving of acquire, release,
//! discard, start failure, a waiter leaving (cancel), reaping and scaling
//! keeps the pool within its limits and never loses a slot.

use std::time::Duration;

use proptest::prelude::*;
use virga_policy::handoff::{Empty, Inbox, Mailbox};
use virga_policy::{Acquire, Grant, PoolLimits, Released};

/// A virtual clock, as a simulator runs the pools: time since the start.
type Time = Duration;
type Pool<I> = virga_policy::Pool<I, Time, Mailbox>;
type ServicePool<I> = virga_policy::ServicePool<I, Time, Mailbox>;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    /// Finish a held slot healthy (a started slot's new instance included).
    Release(usize),
    /// The instance died, or a start failed.
    Discard(usize),
    /// A queued request's caller leaves.
    Cancel(usize),
    /// Time passes, then keep-alive (function) or the autoscaler (service).
    Tick(u64, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Discard),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (0u64..3000, 0usize..5).prop_map(|(ms, n)| Op::Tick(ms, n)),
    ]
}

/// What a caller holds: a warm instance, or the right to start one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    Instance(u32),
    Start,
}

fn held(g: Grant<u32>) -> Held {
    match g {
        Grant::Warm(i) => Held::Instance(i),
        Grant::Spawn => Held::Start,
    }
}

/// A waiter leaving as the scheduler's `Waiting` does: close, then give
/// back a grant that raced in.
fn cancel(mut rx: Inbox<Grant<u32>>) -> Option<Held> {
    rx.close();
    rx.try_recv().ok().map(held)
}

/// Moves grants that reached waiters into the held list.
fn poll(waiters: &mut Vec<Inbox<Grant<u32>>>, holding: &mut Vec<Held>) {
    waiters.retain_mut(|rx| match rx.try_recv() {
        Ok(g) => {
            holding.push(held(g));
            false
        }
        Err(Empty::Pending) => true,
        Err(Empty::Dropped) => false,
    });
}

fn function_pool_case(max: usize, queue: usize, min: usize, ops: Vec<Op>) {
    let limits = PoolLimits {
        max_instances: max,
        max_queue: queue,
        keep_alive: Duration::from_millis(1000),
        min_instances: min.min(max),
    };
    let mut pool: Pool<u32> = Pool::new(limits);
    let mut now = Time::ZERO;
    let mut next = 0u32;
    let mut holding: Vec<Held> = Vec::new();
    let mut waiters = Vec::new();
    // A release says where the instance went: to a waiter (the idle list
    // unchanged) or idle. The fixed policy never stops one at its release.
    let release = |pool: &mut Pool<u32>, h: Held, next: &mut u32, now: Time| {
        let inst = match h {
            Held::Instance(i) => i,
            Held::Start => {
                *next += 1;
                *next
            }
        };
        let idle = pool.idle_count();
        match pool.release(inst, now) {
            Released::Handed => assert_eq!(pool.idle_count(), idle, "handed, yet idle"),
            Released::Idle => assert_eq!(pool.idle_count(), idle + 1, "idle, yet not kept"),
            Released::Stop(i) => panic!("the fixed policy stopped {i} at its release"),
        }
    };
    for op in ops {
        match op {
            Op::Acquire => match pool.acquire(now) {
                Acquire::Warm(i) => holding.push(Held::Instance(i)),
                Acquire::Spawn => holding.push(Held::Start),
                Acquire::Wait(rx) => waiters.push(rx),
                Acquire::Throttle => {
                    assert_eq!(pool.idle_count() + pool.active_count(), max);
                    assert_eq!(pool.idle_count(), 0, "throttled with an idle instance");
                    assert_eq!(pool.queued(), queue);
                }
            },
            Op::Release(k) if !holding.is_empty() => {
                let h = holding.remove(k % holding.len());
                release(&mut pool, h, &mut next, now);
            }
            Op::Discard(k) if !holding.is_empty() => {
                holding.remove(k % holding.len());
                pool.discard();
            }
            Op::Cancel(k) if !waiters.is_empty() => {
                let rx = waiters.remove(k % waiters.len());
                match cancel(rx) {
                    Some(h @ Held::Instance(_)) => release(&mut pool, h, &mut next, now),
                    Some(Held::Start) => pool.discard(),
                    None => {}
                }
            }
            Op::Tick(ms, _) => {
                now += Duration::from_millis(ms);
                pool.reap(now);
                let mut started = 0;
                while pool.deficit() > 0 && pool.reserve() {
                    started += 1;
                }
                for _ in 0..started {
                    release(&mut pool, Held::Start, &mut next, now);
                }
            }
            _ => {}
        }
        poll(&mut waiters, &mut holding);
        assert!(pool.idle_count() + pool.active_count() <= max);
        assert_eq!(
            pool.active_count(),
            holding.len(),
            "every busy or starting slot is held by exactly one caller"
        );
        if pool.idle_count() > 0 {
            assert_eq!(pool.queued(), 0, "a request waits while an instance idles");
        }
    }
    // Everyone leaves: nothing stays counted.
    for rx in waiters.drain(..) {
        match cancel(rx) {
            Some(h @ Held::Instance(_)) => release(&mut pool, h, &mut next, now),
            Some(Held::Start) => pool.discard(),
            None => {}
        }
    }
    for h in holding.drain(..) {
        release(&mut pool, h, &mut next, now);
    }
    assert_eq!(pool.active_count(), 0);
    assert!(matches!(
        pool.acquire(now),
        Acquire::Warm(_) | Acquire::Spawn
    ));
}

fn service_pool_case(per: usize, max: usize, queue: usize, ops: Vec<Op>) {
    let mut pool: ServicePool<u32> = ServicePool::new(per, 0, max, queue);
    let mut now = Time::ZERO;
    let mut next = 0u32;
    let mut holding: Vec<Held> = Vec::new();
    let mut waiters = Vec::new();
    // Tasks the autoscaler asked for that have not started yet.
    let mut scaling = 0usize;
    let release = |pool: &mut ServicePool<u32>, h: Held, next: &mut u32, now: Time| match h {
        Held::Instance(t) => {
            pool.release(|i| *i == t, now);
        }
        Held::Start => {
            *next += 1;
            assert!(pool.add(*next, now, true).is_none());
            let t = *next;
            pool.release(|i| *i == t, now);
        }
    };
    for op in ops {
        match op {
            Op::Acquire => match pool.acquire() {
                Acquire::Warm(i) => holding.push(Held::Instance(i)),
                Acquire::Spawn => holding.push(Held::Start),
                Acquire::Wait(rx) => waiters.push(rx),
                Acquire::Throttle => assert_eq!(pool.queued(), queue),
            },
            Op::Release(k) if !holding.is_empty() => {
                let h = holding.remove(k % holding.len());
                release(&mut pool, h, &mut next, now);
            }
            Op::Discard(k) if !holding.is_empty() => match holding.remove(k % holding.len()) {
                // The task died: every request on it fails with it.
                Held::Instance(t) => {
                    pool.remove(|i| *i == t);
                    holding.retain(|h| *h != Held::Instance(t));
                }
                Held::Start => pool.start_failed(),
            },
            Op::Cancel(k) if !waiters.is_empty() => {
                let rx = waiters.remove(k % waiters.len());
                match cancel(rx) {
                    Some(h @ Held::Instance(_)) => release(&mut pool, h, &mut next, now),
                    Some(Held::Start) => pool.start_failed(),
                    None => {}
                }
            }
            Op::Tick(ms, target) => {
                now += Duration::from_millis(ms);
                // Earlier scale-ups finish starting, then the new target.
                for _ in 0..scaling {
                    next += 1;
                    assert!(pool.add(next, now, false).is_none());
                }
                let step = pool.scale(target);
                scaling = step.start;
                for stopped in step.stop {
                    assert!(
                        !holding.contains(&Held::Instance(stopped)),
                        "scaling stopped a busy task"
                    );
                }
            }
            _ => {}
        }
        poll(&mut waiters, &mut holding);
        assert!(pool.running() + pool.starting() <= max);
        let held_slots = holding
            .iter()
            .filter(|h| matches!(h, Held::Instance(_)))
            .count();
        assert_eq!(pool.in_flight(), held_slots, "slots in use are all held");
        assert!(pool.in_flight() <= pool.running() * per);
        assert_eq!(
            pool.starting(),
            holding.iter().filter(|h| **h == Held::Start).count() + scaling,
            "every starting task is owed by someone"
        );
    }
    for rx in waiters.drain(..) {
        match cancel(rx) {
            Some(h @ Held::Instance(_)) => release(&mut pool, h, &mut next, now),
            Some(Held::Start) => pool.start_failed(),
            None => {}
        }
    }
    for h in holding.drain(..) {
        release(&mut pool, h, &mut next, now);
    }
    for _ in 0..scaling {
        pool.start_failed();
    }
    assert_eq!(pool.in_flight(), 0);
    assert_eq!(pool.starting(), 0);
    assert!(matches!(pool.acquire(), Acquire::Warm(_) | Acquire::Spawn));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn function_pools_keep_their_limits_and_every_slot(
        max in 1usize..5,
        queue in 0usize..4,
        min in 0usize..3,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        function_pool_case(max, queue, min, ops);
    }

    #[test]
    fn service_pools_keep_their_limits_and_every_slot(
        per in 1usize..4,
        max in 1usize..4,
        queue in 0usize..4,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        service_pool_case(per, max, queue, ops);
    }
}
