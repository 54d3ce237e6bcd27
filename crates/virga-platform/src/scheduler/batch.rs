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
//! [`BatchPolicy`] is pure (time is passed in); [`gather`] applies it to a
//! channel and is tested on a paused clock.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Weight of the newest gap in the smoothed inter-arrival gap.
const GAP_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone)]
pub struct BatchPolicy {
    max_size: usize,
    max_delay: Duration,
    last_arrival: Option<Instant>,
    /// Smoothed gap between arrivals, in seconds.
    gap_s: Option<f64>,
}

impl BatchPolicy {
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
    pub fn observe(&mut self, at: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = at.saturating_duration_since(last).as_secs_f64();
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
    pub fn wait_until(&self, now: Instant, first: Instant, len: usize) -> Option<Instant> {
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

/// Gathers one batch: `first`, what already waits in `rx`, then (as the
/// policy allows) what arrives before the deadline. `arrived` says when a
/// request arrived.
pub async fn gather<T>(
    rx: &mut mpsc::Receiver<T>,
    first: T,
    policy: &mut BatchPolicy,
    arrived: impl Fn(&T) -> Instant,
) -> Vec<T> {
    let first_at = arrived(&first);
    let mut batch = vec![first];
    while batch.len() < policy.max_size() {
        match rx.try_recv() {
            Ok(m) => {
                policy.observe(arrived(&m));
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    while let Some(deadline) = policy.wait_until(Instant::now(), first_at, batch.len()) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(m)) => {
                policy.observe(arrived(&m));
                batch.push(m);
            }
            Ok(None) | Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_request_waits_at_most_the_delay() {
        let (_tx, mut rx) = mpsc::channel::<Instant>(16);
        let mut p = BatchPolicy::new(8, ms(5));
        // Never saw traffic: dispatch at once.
        let t0 = Instant::now();
        p.observe(t0);
        let b = gather(&mut rx, t0, &mut p, |t| *t).await;
        assert_eq!((b.len(), Instant::now() - t0), (1, ms(0)));
        // Busy traffic (1 ms gaps), then a lone request: it waits, but only
        // until its deadline.
        for _ in 0..20 {
            tokio::time::sleep(ms(1)).await;
            p.observe(Instant::now());
        }
        let t1 = Instant::now();
        let b = gather(&mut rx, t1, &mut p, |t| *t).await;
        assert_eq!(b.len(), 1);
        assert!(Instant::now() - t1 <= ms(5), "{:?}", Instant::now() - t1);
    }

    #[tokio::test(start_paused = true)]
    async fn sizes_never_exceed_the_maximum_and_waiting_requests_ride_together() {
        let (tx, mut rx) = mpsc::channel::<Instant>(100);
        let mut p = BatchPolicy::new(8, ms(5));
        let now = Instant::now();
        for _ in 0..20 {
            p.observe(now);
            tx.send(now).await.unwrap();
        }
        let mut sizes = Vec::new();
        while let Ok(first) = rx.try_recv() {
            sizes.push(gather(&mut rx, first, &mut p, |t| *t).await.len());
        }
        assert_eq!(sizes, vec![8, 8, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn under_steady_load_a_batch_fills_within_the_delay() {
        let (tx, mut rx) = mpsc::channel::<Instant>(100);
        let mut p = BatchPolicy::new(4, ms(10));
        // Arrivals every 2 ms.
        let producer = tokio::spawn(async move {
            for _ in 0..12 {
                tx.send(Instant::now()).await.unwrap();
                tokio::time::sleep(ms(2)).await;
            }
        });
        let mut sizes = Vec::new();
        while let Some(first) = rx.recv().await {
            p.observe(first);
            let t = Instant::now();
            let b = gather(&mut rx, first, &mut p, |t| *t).await;
            assert!(Instant::now() - t <= ms(10));
            assert!(b.len() <= 4);
            sizes.push(b.len());
        }
        producer.await.unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 12);
        // Once the gap is known, batches fill to the maximum.
        assert!(
            sizes.iter().skip(1).filter(|&&s| s == 4).count() >= 2,
            "{sizes:?}"
        );
    }
}
