//! The seam of asynchronous invocation: where an accepted event lives until
//! it is delivered or dead-lettered. [`super::durable::Durable`] (SQLite,
//! `events.db`) is the single-node queue; [`super::broker::BrokerQueue`]
//! (a JetStream stream and its shared consumer) the cluster's.
//!
//! Delivery itself (ready queues, concurrency, backoff, depth and age) stays
//! in [`super::Events`]; the queue keeps what must survive a crash and, for
//! a broker, decides which node delivers what.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::durable::{DurableError, EventRow};

/// What a store's asynchronous operations return: boxed, so the queue can
/// be chosen at start-up (`dyn EventQueue`).
pub type QueueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DurableError>> + Send + 'a>>;

/// Where a feeding queue hands the events this node is to deliver.
pub type Sink = Arc<dyn Fn(EventRow) + Send + Sync>;

pub trait EventQueue: Send + Sync {
    /// Stores accepted events. Resolves only once they are durable (on disk,
    /// or acknowledged by the broker's stream): the caller acknowledges the
    /// accept after this and never before.
    fn enqueue(&self, rows: Vec<EventRow>) -> QueueFuture<'_, ()>;

    /// Events waiting for delivery, oldest first; at start-up, whatever was
    /// pending or in flight when the last run stopped (at least once).
    fn pending(&self) -> Result<Vec<EventRow>, DurableError>;

    /// Whether the queue itself brings this node its events (through
    /// [`EventQueue::feed`]): what is accepted here may be delivered
    /// elsewhere, and retries and releases come back through the queue.
    /// When false, the delivery code delivers what it accepts and delays
    /// retries itself.
    fn feeds(&self) -> bool {
        false
    }

    /// Starts handing this node its events (a feeding queue only).
    fn feed(self: Arc<Self>, _sink: Sink) {}

    /// The event was delivered: forget it.
    fn complete(&self, id: &str);

    /// The event could not be tried now (no room, or a function this node
    /// does not know yet): give it back for `after`, not counted as an
    /// attempt. Only a feeding queue has anything to do.
    fn release(&self, _id: &str, _after: Duration) {}

    /// The event failed `attempts` times: deliver it again at `available_at_ms`.
    fn retry(&self, id: &str, attempts: u32, available_at_ms: i64, error: &str);

    /// The event is given up: keep it among its function's dead letters.
    fn dead_letter(&self, id: &str, attempts: u32, error: &str);

    /// Stores `row` straight among its function's dead letters (a queue
    /// message received `max_receive` times). Resolves once it is durable.
    fn bury(&self, row: EventRow, error: &str) -> QueueFuture<'_, ()>;

    /// A function's dead letters, oldest first.
    fn dead_letters<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>>;

    /// Dead letters per function.
    fn dead_counts(&self) -> QueueFuture<'_, Vec<(String, u64)>>;

    /// Events per function the queue holds for every node together
    /// (waiting, delayed or in flight); empty when only this node's count,
    /// as for a local store.
    fn queued(&self) -> QueueFuture<'_, Vec<(String, u64)>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Moves a function's dead letters back to pending (attempts reset);
    /// returns them, for delivery.
    fn redrive<'a>(&'a self, function: &'a str) -> QueueFuture<'a, Vec<EventRow>>;

    /// Writes what is queued (or hands back what this node held), then
    /// stops; blocks until then.
    fn close(&self);
}
