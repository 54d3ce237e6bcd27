//! The pure policies of `virga-policy`, on tokio's clock and tokio's
//! oneshot: the same code a simulator runs on a virtual clock, here with
//! instants that a paused clock drives in tests.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use virga_policy::{GreedyDualConfig, Handoff, HybridConfig, KeepAlive};
use virga_spec::{KeepAliveSpec, Manifest};

pub use virga_policy::{AutoscaleConfig, Grant, GreedyDualClock, PoolLimits, Released, Tracker};

/// A queued request awaits its grant on a tokio oneshot.
#[derive(Debug, Clone, Copy)]
pub struct Oneshot;

impl Handoff for Oneshot {
    type Sender<T> = oneshot::Sender<T>;
    type Receiver<T> = oneshot::Receiver<T>;

    fn channel<T>() -> (oneshot::Sender<T>, oneshot::Receiver<T>) {
        oneshot::channel()
    }

    fn is_closed<T>(tx: &oneshot::Sender<T>) -> bool {
        tx.is_closed()
    }

    fn send<T>(tx: oneshot::Sender<T>, value: T) -> Result<(), T> {
        tx.send(value)
    }
}

pub type Pool<I> = virga_policy::Pool<I, Instant, Oneshot>;
pub type ServicePool<I> = virga_policy::ServicePool<I, Instant, Oneshot>;
pub type Acquire<I> = virga_policy::Acquire<I, oneshot::Receiver<Grant<I>>>;
pub type Autoscaler = virga_policy::Autoscaler<Instant>;
pub type BatchPolicy = virga_policy::BatchPolicy<Instant>;

/// A function's keep-alive policy, from its manifest: `[keep_alive]`, else
/// the fixed `keep_alive_ms`.
pub fn keep_alive_of(m: &Manifest) -> KeepAlive {
    let ms = Duration::from_millis;
    match &m.keep_alive {
        None | Some(KeepAliveSpec::Fixed {}) => KeepAlive::Fixed(ms(m.keep_alive_ms)),
        Some(KeepAliveSpec::HybridHistogram(h)) => KeepAlive::HybridHistogram(HybridConfig {
            range: ms(h.range_ms),
            bin: ms(h.bin_ms),
            head_pct: h.prewarm_percentile,
            tail_pct: h.keep_alive_percentile,
            margin: h.margin,
            min_samples: h.min_samples,
            cv_threshold: h.cv_threshold,
            out_of_range_threshold: h.out_of_range_share,
            fallback: ms(h.fallback_ms.unwrap_or(h.range_ms)),
        }),
        Some(KeepAliveSpec::GreedyDual(g)) => KeepAlive::GreedyDual(GreedyDualConfig {
            max_idle: g.max_idle_ms.map(ms),
        }),
    }
}
