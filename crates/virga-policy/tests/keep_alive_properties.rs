//! Property tests of the keep-alive policies: the fixed policy decides
//! exactly as the pool did before policies existed, and the hybrid
//! histogram's windows cover the idle times it saw as its percentiles say.

use std::time::Duration;

use proptest::prelude::*;
use virga_policy::handoff::Mailbox;
use virga_policy::{Acquire, HybridConfig, KeepAlive, PoolLimits, Tracker};

type Time = Duration;
type Pool = virga_policy::Pool<u32, Time, Mailbox>;

/// The function pool as it was with one fixed keep-alive: idle instances
/// oldest first, reaped by a prefix of expired ones, sparing the minimum.
struct Reference {
    limits: PoolLimits,
    idle: Vec<(u32, Time)>,
    active: usize,
}

impl Reference {
    fn acquire(&mut self) -> Option<Option<u32>> {
        if let Some((i, _)) = self.idle.pop() {
            self.active += 1;
            return Some(Some(i));
        }
        if self.idle.len() + self.active < self.limits.max_instances {
            self.active += 1;
            return Some(None);
        }
        None
    }

    fn release(&mut self, i: u32, now: Time) {
        self.active -= 1;
        self.idle.push((i, now));
    }

    fn reap(&mut self, now: Time) -> Vec<u32> {
        let spare = (self.idle.len() + self.active).saturating_sub(self.limits.min_instances);
        let n = self
            .idle
            .iter()
            .take_while(|(_, t)| now.saturating_sub(*t) >= self.limits.keep_alive)
            .count()
            .min(spare);
        self.idle.drain(..n).map(|(i, _)| i).collect()
    }

    fn next_expiry(&self) -> Option<Time> {
        if self.idle.len() + self.active <= self.limits.min_instances {
            return None;
        }
        self.idle.first().map(|(_, t)| *t + self.limits.keep_alive)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Release(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Release),
        2 => (0u64..5_000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_fixed_policy_decides_as_the_pool_always_did(
        max in 1usize..6,
        min in 0usize..3,
        keep_ms in 0u64..4_000,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let limits = PoolLimits {
            max_instances: max,
            max_queue: 0,
            keep_alive: Duration::from_millis(keep_ms),
            min_instances: min.min(max),
        };
        let mut pool = Pool::new(limits);
        let mut reference = Reference { limits, idle: Vec::new(), active: 0 };
        let mut now = Time::ZERO;
        let mut next = 0u32;
        let mut busy: Vec<u32> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let got = match pool.acquire(now) {
                        Acquire::Warm(i) => Some(Some(i)),
                        Acquire::Spawn => Some(None),
                        Acquire::Throttle => None,
                        Acquire::Wait(_) => panic!("no queue"),
                    };
                    prop_assert_eq!(got, reference.acquire());
                    match got {
                        Some(Some(i)) => busy.push(i),
                        Some(None) => {
                            next += 1;
                            busy.push(next);
                        }
                        None => {}
                    }
                }
                Op::Release(k) if !busy.is_empty() => {
                    let i = busy.remove(k % busy.len());
                    prop_assert!(pool.release(i, now).stop().is_none());
                    reference.release(i, now);
                }
                Op::Tick(ms) => {
                    now += Duration::from_millis(ms);
                    prop_assert_eq!(pool.reap(now), reference.reap(now));
                }
                Op::Release(_) => {}
            }
            prop_assert_eq!(pool.next_expiry(), reference.next_expiry());
            prop_assert_eq!(pool.next_prewarm(), None);
        }
    }

    #[test]
    fn hybrid_windows_cover_the_idle_times_their_percentiles_say(
        idle_s in prop::collection::vec(prop_oneof![0u64..600, 0u64..20_000, 14_400u64..40_000], 1..400),
    ) {
        let cfg = HybridConfig::default();
        let mut t = Tracker::new(KeepAlive::HybridHistogram(cfg));
        for s in &idle_s {
            t.arrival(1);
            t.idle_time(Duration::from_secs(*s));
        }
        let w = t.windows();
        let keep = w.keep_alive.expect("the hybrid policy always has a window");
        let out_of_range = idle_s.iter().filter(|s| Duration::from_secs(**s) >= cfg.range).count();
        let n_all = idle_s.len();
        if n_all >= cfg.min_samples as usize && 2 * out_of_range >= n_all {
            // The forecast's case, left out: nothing kept.
            prop_assert_eq!(w, virga_policy::Windows { prewarm: Duration::ZERO, keep_alive: Some(Duration::ZERO) });
        } else if !t.is_representative() {
            prop_assert_eq!(w.prewarm, Duration::ZERO);
            prop_assert_eq!(keep, cfg.fallback);
        } else {
            let in_range: Vec<Duration> = idle_s
                .iter()
                .map(|s| Duration::from_secs(*s))
                .filter(|d| *d < cfg.range)
                .collect();
            let n = in_range.len() as f64;
            let covered = in_range.iter().filter(|d| **d < w.prewarm + keep).count() as f64;
            let early = in_range.iter().filter(|d| **d < w.prewarm).count() as f64;
            prop_assert!(covered >= 0.99 * n, "{covered} of {n} within {w:?}");
            prop_assert!(early <= 0.05 * n, "{early} of {n} before the pre-warm {w:?}");
        }
    }
}
