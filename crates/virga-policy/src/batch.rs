//! Adaptive batching: when to stop gathering requests into one invocation.
//!
//! A function with `[batching]` puts its requests in one FIFO. A dispatcher
//! takes the first, waits for a slot on an instance, then takes whatever
//! else is already waiting (up to `max_batch_size`). While requests pile up
//! behind busy instances, batches therefore grow on their own. With a slot
//! in hand and room left, it waits for more only while that is likely to pay:
//! until the first member has waited `max_delay_ms` (never longer), and only
//! when requests arrive faster than that (the smoothed gap between arrivals
//! is shorter than the time left). At low load a lone request is dispatched
//! at once, as Triton's dynamic batcher does with a zero queue delay, and
//! under load batches fill up to the maximum (the BATCH paper's adaptive
//! window). Sizes never exceed `max_batch_size`.
//!
//! [`BatchPolicy`] is pure (time is passed in); the live scheduler's
//! `gather` applies it to a channel and is tested on a paused clock.

use std::time::Duration;

use crate::clock::Moment;

/// Weight of the newest gap in the smoothed inter-arrival gap.
const GAP_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct BatchPolicy<T> {
    max_size: usize,
    max_delay: Duration,
    last_arrival: Option<T>,
    /// Smoothed gap between arrivals, in seconds.
    gap_s: Option<f64>,
}

impl<T: Moment> BatchPolicy<T> {
    pub fn new(max_size: usize, max_delay: Duration) -> Self {
        BatchPolicy {
            max_size: max_size.max(1),
            max_delay,
            last_arrival: None,
            gap_s: None,
        }
    }

    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// A request arrived at `at` (arrivals are observed in order).
    pub fn observe(&mut self, at: T) {
        if let Some(last) = self.last_arrival {
            let gap = at.since(last).as_secs_f64();
            self.gap_s = Some(match self.gap_s {
                Some(g) => g + GAP_WEIGHT * (gap - g),
                None => gap,
            });
        }
        self.last_arrival = Some(self.last_arrival.map_or(at, |l| l.max(at)));
    }

    /// The smoothed gap between arrivals, once two were seen.
    pub fn gap(&self) -> Option<Duration> {
        self.gap_s.map(Duration::from_secs_f64)
    }

    /// With `len` requests gathered, the first of which arrived at `first`:
    /// until when to wait for more, or `None` to dispatch now.
    pub fn wait_until(&self, now: T, first: T, len: usize) -> Option<T> {
        if len >= self.max_size {
            return None;
        }
        let deadline = first + self.max_delay;
        if now >= deadline {
            return None;
        }
        let left = deadline - now;
        match self.gap() {
            // Requests come faster than the time left: someone will likely join.
            Some(gap) if gap < left => Some(deadline),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_only_while_arrivals_come_faster_than_the_time_left() {
        // A virtual clock: time since the start.
        let mut p = BatchPolicy::new(4, ms(10));
        // No gap known yet: dispatch at once.
        p.observe(ms(0));
        assert_eq!(p.wait_until(ms(0), ms(0), 1), None);
        // Arrivals 2 ms apart: wait, but never past the first's deadline.
        for t in 1..=5 {
            p.observe(ms(2 * t));
        }
        assert!(p.gap().is_some_and(|g| g > ms(1) && g < ms(3)));
        assert_eq!(p.wait_until(ms(10), ms(10), 1), Some(ms(20)));
        assert_eq!(p.wait_until(ms(19), ms(10), 1), None, "1 ms left < the gap");
        assert_eq!(p.wait_until(ms(20), ms(10), 1), None, "deadline reached");
        assert_eq!(p.wait_until(ms(10), ms(10), 4), None, "full");
    }
}
