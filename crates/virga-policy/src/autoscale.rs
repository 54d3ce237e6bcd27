//! The autoscaler of a service: how many tasks, from the observed load.
//!
//! Knative's KPA is the model: the load is the number of requests in flight
//! or waiting (concurrency), sampled on a tick and averaged over a stable
//! window; the wanted task count is that average over the concurrency one
//! task should carry (`instance_concurrency x target_utilization`). A short
//! panic window (a tenth of the stable one) reacts to bursts: when it asks
//! for at least twice the current tasks, the autoscaler scales up at once
//! and does not scale down while the burst lasts. Scaling up is immediate;
//! scaling down follows the highest want of the last scale-down delay, so it
//! happens only after fewer tasks were wanted for that whole delay. The result is clamped to `min..=max`, so a service
//! scales to zero only when `min_instances = 0`.
//!
//! Pure: no clock of its own (`now` is passed in), no I/O.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::Moment;

/// The autoscaler's settings, from the manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AutoscaleConfig {
    /// Requests one task serves at once.
    pub per_instance: usize,
    /// Fraction of `per_instance` to aim for (0, 1].
    pub target_utilization: f64,
    pub stable_window: Duration,
    pub scale_down_delay: Duration,
    pub min: usize,
    pub max: usize,
}

impl AutoscaleConfig {
    /// The panic window: a tenth of the stable window (Knative's default).
    pub fn panic_window(&self) -> Duration {
        self.stable_window / 10
    }

    /// How often load is sampled: ten samples per panic window, within 50 ms..=1 s.
    pub fn tick(&self) -> Duration {
        (self.panic_window() / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

#[derive(Debug)]
pub struct Autoscaler<T> {
    cfg: AutoscaleConfig,
    samples: VecDeque<(T, f64)>,
    /// Recent recommendations, over the scale-down delay: scaling down
    /// follows their maximum, so only a whole delay of lower wants counts.
    recent: VecDeque<(T, usize)>,
    /// While a burst lasts, never scale down.
    panicking: bool,
}

impl<T: Moment> Autoscaler<T> {
    pub fn new(cfg: AutoscaleConfig) -> Self {
        Autoscaler {
            cfg,
            samples: VecDeque::new(),
            recent: VecDeque::new(),
            panicking: false,
        }
    }

    pub fn config(&self) -> &AutoscaleConfig {
        &self.cfg
    }

    /// Records the concurrency (in flight + waiting) seen at `now`.
    pub fn observe(&mut self, now: T, concurrency: f64) {
        self.samples.push_back((now, concurrency.max(0.0)));
        while let Some(&(t, _)) = self.samples.front() {
            if now.since(t) > self.cfg.stable_window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    fn average(&self, now: T, window: Duration) -> f64 {
        let (sum, n) = self
            .samples
            .iter()
            .filter(|(t, _)| now.since(*t) <= window)
            .fold((0.0, 0usize), |(s, n), (_, c)| (s + c, n + 1));
        if n == 0 {
            0.0
        } else {
            sum / n as f64
        }
    }

    fn want(&self, load: f64) -> usize {
        let per = (self.cfg.per_instance.max(1) as f64 * self.cfg.target_utilization).max(1e-9);
        // A hair of tolerance so 2.0000001 is not 3 tasks.
        (load / per - 1e-9).ceil().max(0.0) as usize
    }

    /// The task count wanted now, given `current` tasks (running + starting).
    pub fn decide(&mut self, now: T, current: usize) -> usize {
        let stable = self.want(self.average(now, self.cfg.stable_window));
        let panic = self.want(self.average(now, self.cfg.panic_window()));
        if panic >= 2 * current.max(1) && panic > current {
            self.panicking = true;
        } else if self.panicking && stable >= panic {
            // The stable average caught up with the burst.
            self.panicking = false;
        }
        let mut desired = if self.panicking {
            panic.max(stable).max(current)
        } else {
            stable
        };
        // Something is waiting and nothing runs: activate from zero at once.
        if current == 0 && self.average(now, self.cfg.tick()) > 0.0 {
            desired = desired.max(1);
        }
        let desired = desired.clamp(self.cfg.min, self.cfg.max.max(self.cfg.min));
        self.recent.push_back((now, desired));
        while let Some(&(t, _)) = self.recent.front() {
            if now.since(t) > self.cfg.scale_down_delay {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if desired >= current {
            return desired;
        }
        // Down only as far as the highest want of the whole delay.
        let held = self.recent.iter().map(|&(_, d)| d).max().unwrap_or(desired);
        match self.recent.front() {
            Some(&(t, _)) if now.since(t) + self.cfg.tick() >= self.cfg.scale_down_delay => {
                held.min(current)
            }
            // Not a whole delay of history yet (just started): hold.
            _ => current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: usize, max: usize) -> AutoscaleConfig {
        AutoscaleConfig {
            per_instance: 2,
            target_utilization: 1.0,
            stable_window: Duration::from_secs(60),
            scale_down_delay: Duration::from_secs(30),
            min,
            max,
        }
    }

    /// A virtual clock: time since the start, advanced by the test alone.
    type Clock = Duration;

    /// Runs the autoscaler under `load` for `secs`, sampling every tick;
    /// returns every decision.
    fn run(
        a: &mut Autoscaler<Clock>,
        now: &mut Clock,
        current: &mut usize,
        load: f64,
        secs: u64,
    ) -> Vec<usize> {
        let mut seen = Vec::new();
        let end = *now + Duration::from_secs(secs);
        while *now < end {
            *now += a.config().tick();
            a.observe(*now, load);
            *current = a.decide(*now, *current);
            seen.push(*current);
        }
        seen
    }

    #[test]
    fn scales_up_under_sustained_load_and_down_after_the_delay() {
        let mut a = Autoscaler::new(cfg(0, 10));
        let mut now = Clock::ZERO;
        let mut n = 1;
        // 8 requests in flight, 2 per task: 4 tasks, reached quickly (panic).
        let seen = run(&mut a, &mut now, &mut n, 8.0, 10);
        assert_eq!(n, 4, "{seen:?}");
        assert!(seen.iter().all(|&s| s <= 4));
        // Load drops to 2 (one task's worth). The stable window still
        // remembers the burst, then the scale-down delay must pass.
        let t_drop = now;
        let mut first_down = None;
        let end = t_drop + Duration::from_secs(200);
        while now < end {
            now += a.config().tick();
            a.observe(now, 2.0);
            let before = n;
            n = a.decide(now, n);
            if n < before && first_down.is_none() {
                first_down = Some(now - t_drop);
            }
        }
        assert_eq!(n, 1);
        let down = first_down.unwrap();
        assert!(
            down >= Duration::from_secs(30),
            "scaled down after {down:?}"
        );
        // No load: scale to zero, because min is 0.
        run(&mut a, &mut now, &mut n, 0.0, 200);
        assert_eq!(n, 0);
    }

    #[test]
    fn keeps_the_minimum_caps_at_the_maximum_and_activates_from_zero() {
        let mut a = Autoscaler::new(cfg(1, 3));
        let mut now = Clock::ZERO;
        let mut n = 1;
        run(&mut a, &mut now, &mut n, 100.0, 30);
        assert_eq!(n, 3, "capped at max");
        run(&mut a, &mut now, &mut n, 0.0, 300);
        assert_eq!(n, 1, "never below min");

        let mut z = Autoscaler::new(cfg(0, 3));
        let mut m = 0;
        let seen = run(&mut z, &mut now, &mut m, 0.5, 1);
        assert_eq!(
            seen.first(),
            Some(&1),
            "a waiting request starts a task at once"
        );
    }

    #[test]
    fn a_short_blip_does_not_scale_down() {
        let mut c = cfg(0, 10);
        c.stable_window = Duration::from_secs(6);
        c.scale_down_delay = Duration::from_secs(10);
        let mut a = Autoscaler::new(c);
        let mut now = Clock::ZERO;
        let mut n = 2;
        run(&mut a, &mut now, &mut n, 4.0, 10);
        assert_eq!(n, 2);
        // 5 s of quiet: less than the delay.
        run(&mut a, &mut now, &mut n, 0.0, 5);
        assert_eq!(n, 2);
        run(&mut a, &mut now, &mut n, 4.0, 10);
        assert_eq!(n, 2);
    }
}
