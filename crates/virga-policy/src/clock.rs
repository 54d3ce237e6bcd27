//! Time as the policies see it: a value passed in, never read from a clock.

use std::fmt::Debug;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time on some clock. Anything ordered that a `Duration` can be
/// added to and that subtracts to a `Duration` qualifies: tokio's `Instant`
/// (so the live scheduler's timers run on a paused clock in tests), std's
/// `Instant`, or a plain `Duration` since a simulation's start.
pub trait Moment:
    Copy + Ord + Debug + Add<Duration, Output = Self> + Sub<Self, Output = Duration>
{
    /// Time from `earlier` to `self`; zero when `earlier` is later (a plain
    /// `Duration` would panic on the subtraction).
    fn since(self, earlier: Self) -> Duration {
        if self > earlier {
            self - earlier
        } else {
            Duration::ZERO
        }
    }
}

impl<T> Moment for T where
    T: Copy + Ord + Debug + Add<Duration, Output = T> + Sub<T, Output = Duration>
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_saturates_on_every_clock() {
        let d = Duration::from_secs(3);
        assert_eq!(d.since(Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(Duration::from_secs(1).since(d), Duration::ZERO);
        let t = std::time::Instant::now();
        assert_eq!(t.since(t + d), Duration::ZERO);
        assert_eq!((t + d).since(t), d);
    }
}
