//! Slots of a pool, held by one invocation (or one batch) from grant to
//! release.
//!
//! Invariant: every slot acquired is released exactly once, on every path,
//! cancellation and panics included. It holds by construction: a granted
//! slot only ever lives inside a [`Lease`], whose `Drop` gives it back, and a
//! place in a pool's queue only inside a [`Waiting`], whose `Drop` gives back
//! a grant that raced with its owner leaving.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::budget::Reservation;
use super::policy::Grant;
use super::Function;
use crate::instance::Instance;

/// One slot of a function's pool: a warm instance, or the right to start one.
pub(super) struct Lease {
    f: Arc<Function>,
    inst: Option<Arc<Instance>>,
    healthy: bool,
    /// Host memory for the instance this slot will start.
    pub(super) memory: Option<Reservation>,
}

impl Lease {
    pub(super) fn new(f: Arc<Function>, grant: Grant<Arc<Instance>>) -> Lease {
        let inst = match grant {
            Grant::Warm(i) => Some(i),
            Grant::Spawn => None,
        };
        Lease {
            f,
            inst,
            healthy: false,
            memory: None,
        }
    }

    pub(super) fn function(&self) -> &Arc<Function> {
        &self.f
    }

    /// The instance this slot holds; `None` while it is only a right to start one.
    pub(super) fn instance(&self) -> Option<&Arc<Instance>> {
        self.inst.as_ref()
    }

    /// The instance started for this slot is ready: the slot now holds it (a
    /// service task joins its pool, busy with this request).
    pub(super) fn started(&mut self, inst: Arc<Instance>) {
        self.f.started(&inst);
        self.inst = Some(inst);
    }

    /// Gives the slot back: a healthy instance returns to its pool (or to the
    /// first waiter), anything else is stopped and its slot freed.
    pub(super) fn release(mut self, healthy: bool) {
        self.healthy = healthy;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match self.inst.take() {
            Some(i) => self.f.give_back(i, self.healthy),
            None => self.f.give_back_slot(),
        }
    }
}

/// A place in a pool's queue.
pub(super) struct Waiting {
    f: Arc<Function>,
    rx: Option<oneshot::Receiver<Grant<Arc<Instance>>>>,
}

impl Waiting {
    pub(super) fn new(f: Arc<Function>, rx: oneshot::Receiver<Grant<Arc<Instance>>>) -> Waiting {
        Waiting { f, rx: Some(rx) }
    }

    /// Waits for a slot; `None` when the pool stopped taking requests (the
    /// function was redeployed or deleted). Cancel-safe: a grant that arrives
    /// after the wait is dropped is given back by `Drop`.
    pub(super) async fn granted(&mut self) -> Option<Lease> {
        let rx = self.rx.as_mut()?;
        let got = rx.await;
        self.rx = None;
        got.ok().map(|g| Lease::new(self.f.clone(), g))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            // No grant can arrive after `close`; one that arrived before is
            // still in the channel.
            rx.close();
            if let Ok(g) = rx.try_recv() {
                Lease::new(self.f.clone(), g).release(true);
            }
        }
    }
}
