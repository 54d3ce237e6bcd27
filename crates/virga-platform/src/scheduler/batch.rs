//! Gathering a batch on tokio: [`gather`] applies the pure
//! [`virga_policy::BatchPolicy`] (when to stop waiting for more) to a
//! channel, and is tested on a paused clock.

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::policy::BatchPolicy;

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
    use std::time::Duration;

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
