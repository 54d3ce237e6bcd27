//! The seam of asynchronous invocation: where an accepted event lives until
//! it is delivered or dead-lettered. [`super::durable::Durable`] (SQLite,
//! `events.db`) is the default and, for now, the only implementation; a
//! broker (a JetStream stream with its consumer's acks, redeliveries and
//! max-deliver) can take its place without the delivery code changing.
//!
//! Delivery itself (ready queues, concurrency, backoff, depth and age) stays
//! in [`super::Events`]; the queue only keeps what must survive a crash.

use std::future::Future;
use std::pin::Pin;

use super::durable::{DurableError, EventRow};

/// What a store's asynchronous operations return: boxed, so the queue can
/// be chosen at start-up (`dyn EventQueue`).
pub type QueueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DurableError>> + Send + 'a>>;

pub trait EventQueue: Send + Sync {
    /// Stores accepted events. Resolves only once they are durable (on disk,
    /// or acknowledged by the broker's stream): the caller acknowledges the
    /// accept after this and never before.
    fn enqueue(&self, rows: Vec<EventRow>) -> QueueFuture<'_, ()>;

    /// Events waiting for delivery, oldest first; at start-up, whatever was
    /// pending or in flight when the last run stopped (at least once).
    fn pending(&self) -> Result<Vec<EventRow>, DurableError>;

    /// The event was delivered: forget it.
    fn complete(&self, id: &str);

    /// The event failed `attempts` times: deliver it again at `available_at_ms`.
    fn retry(&self, id: &str, attempts: u32, available_at_ms: i64, error: &str);

    /// The event is given up: keep it among its function's dead letters.
    fn dead_letter(&self, id: &str, attempts: u32, error: &str);

    /// A function's dead letters, oldest first.
    fn dead_letters(&self, function: &str) -> Result<Vec<EventRow>, DurableError>;

    /// Dead letters per function.
    fn dead_counts(&self) -> Result<Vec<(String, u64)>, DurableError>;

    /// Moves a function's dead letters back to pending (attempts reset);
    /// returns them, for delivery.
    fn redrive<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>>;

    /// Writes what is queued, then stops; blocks until then.
    fn close(&self);
}
