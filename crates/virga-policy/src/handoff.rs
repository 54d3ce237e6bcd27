//! How a queued request is handed its grant once an instance or a slot is
//! free. The pools keep the sending ends in FIFO order; the request holds
//! the receiving end. Live, that is a tokio oneshot awaited by the request's
//! task; in a simulation or a test, a [`Mailbox`] polled by the driver.

use std::cell::RefCell;
use std::rc::Rc;

/// A kind of one-shot channel. Implemented on a marker type, so a crate that
/// does not own the channel type can still plug it in.
pub trait Handoff {
    type Sender<T>;
    type Receiver<T>;

    fn channel<T>() -> (Self::Sender<T>, Self::Receiver<T>);

    /// The receiver is gone (the request left the queue): skip it.
    fn is_closed<T>(tx: &Self::Sender<T>) -> bool;

    /// Hands `value` over, or gives it back when the receiver is gone.
    fn send<T>(tx: Self::Sender<T>, value: T) -> Result<(), T>;
}

/// A single-threaded hand-off for simulations and tests: nothing awaits,
/// the driver polls the [`Inbox`].
#[derive(Debug, Clone, Copy)]
pub struct Mailbox;

#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    receiver_gone: bool,
}

/// The sending end of a [`Mailbox`].
#[derive(Debug)]
pub struct Letter<T>(Rc<RefCell<Slot<T>>>);

/// The receiving end of a [`Mailbox`]; dropping it closes it.
#[derive(Debug)]
pub struct Inbox<T>(Rc<RefCell<Slot<T>>>);

/// Why [`Inbox::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Empty {
    /// Nothing yet; the sender may still send.
    Pending,
    /// The sender is gone without sending (the pool was drained).
    Dropped,
}

impl<T> Inbox<T> {
    pub fn try_recv(&mut self) -> Result<T, Empty> {
        let mut slot = self.0.borrow_mut();
        match slot.value.take() {
            Some(v) => Ok(v),
            None if Rc::strong_count(&self.0) == 1 => Err(Empty::Dropped),
            None => Err(Empty::Pending),
        }
    }

    /// Leaves the queue: nothing can arrive after this; what arrived before
    /// is still there for [`Inbox::try_recv`].
    pub fn close(&mut self) {
        self.0.borrow_mut().receiver_gone = true;
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        self.close();
    }
}

impl Handoff for Mailbox {
    type Sender<T> = Letter<T>;
    type Receiver<T> = Inbox<T>;

    fn channel<T>() -> (Letter<T>, Inbox<T>) {
        let slot = Rc::new(RefCell::new(Slot {
            value: None,
            receiver_gone: false,
        }));
        (Letter(slot.clone()), Inbox(slot))
    }

    fn is_closed<T>(tx: &Letter<T>) -> bool {
        tx.0.borrow().receiver_gone
    }

    fn send<T>(tx: Letter<T>, value: T) -> Result<(), T> {
        let mut slot = tx.0.borrow_mut();
        if slot.receiver_gone {
            return Err(value);
        }
        slot.value = Some(value);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_behaves_like_a_oneshot() {
        let (tx, mut rx) = Mailbox::channel::<u32>();
        assert_eq!(rx.try_recv(), Err(Empty::Pending));
        assert!(!Mailbox::is_closed(&tx));
        assert_eq!(Mailbox::send(tx, 7), Ok(()));
        // Closing after a send keeps what arrived.
        rx.close();
        assert_eq!(rx.try_recv(), Ok(7));

        let (tx, rx) = Mailbox::channel::<u32>();
        drop(rx);
        assert!(Mailbox::is_closed(&tx));
        assert_eq!(Mailbox::send(tx, 8), Err(8));

        let (tx, mut rx) = Mailbox::channel::<u32>();
        drop(tx);
        assert_eq!(rx.try_recv(), Err(Empty::Dropped));
    }
}
