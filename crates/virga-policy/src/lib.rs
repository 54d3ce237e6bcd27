//! The scheduling policies of virga: pure functions of state and a time
//! passed in. The live scheduler (`virga-platform`) runs them on tokio's
//! clock; a trace-driven simulator can run the same code on a virtual one.
//!
//! Nothing here spawns, sleeps, reads a clock or does I/O. Two seams make
//! that possible: [`Moment`] (any point in time: tokio's `Instant`, std's,
//! or a `Duration` since a simulation's start) and [`Handoff`] (how a
//! queued request is handed its grant: a tokio oneshot live, a [`Mailbox`]
//! in a simulation or a test).
//!
//! In flow order: [`pool`] (function and job instances: reuse, spawn, queue
//! or throttle; reap idle ones when their keep-alive runs out), [`keep_alive`]
//! (the policies the pool asks: `fixed`, `hybrid-histogram` with pre-warming,
//! `greedy-dual` eviction under a memory budget), [`service`] (service tasks
//! with several slots each; scale to a target), [`autoscale`] (the KPA-like
//! target for a service), [`batch`] (when to stop gathering a batch).

pub mod autoscale;
pub mod batch;
pub mod clock;
pub mod handoff;
pub mod keep_alive;
pub mod pool;
pub mod service;

pub use autoscale::{AutoscaleConfig, Autoscaler};
pub use batch::BatchPolicy;
pub use clock::Moment;
pub use handoff::{Handoff, Mailbox};
pub use keep_alive::{
    GreedyDualClock, GreedyDualConfig, HybridConfig, KeepAlive, Tracker, Windows,
};
pub use pool::{Acquire, Grant, Pool, PoolLimits, Released};
pub use service::{ScaleStep, ServicePool};
