//! The pure policies of `virga-policy`, on tokio's clock and tokio's
//! oneshot: the same code a simulator runs on a virtual clock, here with
//! instants that a paused clock drives in tests.

use tokio::sync::oneshot;
use tokio::time::Instant;
use virga_policy::Handoff;

pub use virga_policy::{AutoscaleConfig, Grant, PoolLimits};

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
