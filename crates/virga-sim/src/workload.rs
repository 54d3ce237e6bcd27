//! What the simulator replays: functions, their apps, and when each is
//! invoked.
//!
//! A function's arrivals come from per-minute counts (the Azure trace's
//! shape, or drawn from a Poisson rate) or from a timer's exact period.
//! Within a minute of `n` invocations, the `i`-th falls at a uniform point of
//! the `i`-th `n`-th of the minute (stratified): sorted without a sort, one
//! draw per invocation, and seeded per function, so every policy replays the
//! very same arrivals.

use std::time::Duration;

use serde::Serialize;

use crate::rng::Rng;

pub const MINUTE_NS: u64 = 60_000_000_000;

/// The trigger groups of the Azure trace (and the paper).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerGroup {
    Http,
    Timer,
    Event,
    Queue,
    Storage,
    Orchestration,
    Others,
}

impl TriggerGroup {
    pub fn parse(s: &str) -> Option<TriggerGroup> {
        Some(match s {
            "http" => TriggerGroup::Http,
            "timer" => TriggerGroup::Timer,
            "event" => TriggerGroup::Event,
            "queue" => TriggerGroup::Queue,
            "storage" => TriggerGroup::Storage,
            "orchestration" => TriggerGroup::Orchestration,
            "others" => TriggerGroup::Others,
            _ => return None,
        })
    }
}

/// When a function is invoked.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `(minute since the start, invocations in it)`, minutes ascending,
    /// no zero counts (a trace).
    Counts(Vec<(u32, u32)>),
    /// A Poisson process of this many invocations per minute, drawn a
    /// minute at a time.
    Poisson { per_minute: f64 },
    /// One invocation every `period`, the first at `phase`.
    Timer { period: Duration, phase: Duration },
    /// Invocations at exactly these times, ascending (a hand-made sequence).
    Exact(Vec<Duration>),
}

/// One function as the simulator models it: a fixed cost per cold start,
/// run time and memory per instance.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionModel {
    /// Index into [`Workload::apps`].
    pub app: u32,
    pub trigger: TriggerGroup,
    pub duration: Duration,
    pub cold_start: Duration,
    pub memory_mb: u32,
    pub source: Source,
}

/// Functions, their apps and the span they are replayed over.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub functions: Vec<FunctionModel>,
    /// App names (trace hashes, or generated).
    pub apps: Vec<String>,
    /// The span replayed, in minutes.
    pub minutes: u32,
    /// Seeds the spread of invocations within their minute (and, for a
    /// synthetic workload, the draws of their counts).
    pub seed: u64,
}

/// The size of a workload, as replayed.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Totals {
    pub functions: usize,
    pub apps: usize,
    pub days: f64,
    pub invocations: u64,
}

impl Workload {
    pub fn horizon(&self) -> Duration {
        Duration::from_secs(u64::from(self.minutes) * 60)
    }

    /// The arrivals of function `index`, in order.
    pub fn arrivals(&self, index: usize) -> Arrivals<'_> {
        Arrivals::new(
            &self.functions[index].source,
            Rng::stream(self.seed, index as u64),
            u64::from(self.minutes) * MINUTE_NS,
        )
    }

    /// Counts every arrival (a pass over the whole workload).
    pub fn totals(&self) -> Totals {
        Totals {
            functions: self.functions.len(),
            apps: self.apps.len(),
            days: f64::from(self.minutes) / 1440.0,
            invocations: (0..self.functions.len())
                .map(|i| self.arrivals(i).count() as u64)
                .sum(),
        }
    }
}

/// The arrival times of one function, in nanoseconds since the start.
#[derive(Debug)]
pub struct Arrivals<'a> {
    source: &'a Source,
    rng: Rng,
    horizon_ns: u64,
    /// Next entry of `Counts`, or the next minute to draw for `Poisson`.
    cursor: u64,
    /// The minute being spread: its start, its count and how many were given.
    minute_ns: u64,
    count: u32,
    given: u32,
    /// The next timer tick.
    next_tick: u64,
}

impl<'a> Arrivals<'a> {
    fn new(source: &'a Source, rng: Rng, horizon_ns: u64) -> Self {
        let next_tick = match source {
            Source::Timer { phase, .. } => phase.as_nanos() as u64,
            _ => 0,
        };
        Arrivals {
            source,
            rng,
            horizon_ns,
            cursor: 0,
            minute_ns: 0,
            count: 0,
            given: 0,
            next_tick,
        }
    }

    /// Moves to the next minute with invocations; false when none is left.
    fn next_minute(&mut self) -> bool {
        let horizon_min = self.horizon_ns / MINUTE_NS;
        let (minute, count) = match self.source {
            Source::Counts(c) => {
                let Some(&(m, n)) = c.get(self.cursor as usize) else {
                    return false;
                };
                self.cursor += 1;
                (u64::from(m), n)
            }
            Source::Poisson { per_minute } => {
                let lambda = *per_minute;
                if lambda <= 0.0 {
                    return false;
                }
                // A rare function skips its empty minutes in one draw.
                let minute;
                let count;
                if lambda < 0.5 {
                    let p = 1.0 - (-lambda).exp();
                    minute = self.cursor.saturating_add(self.rng.geometric(p));
                    count = self.rng.poisson_at_least_one(lambda);
                } else {
                    loop {
                        if self.cursor >= horizon_min {
                            return false;
                        }
                        let n = self.rng.poisson(lambda);
                        self.cursor += 1;
                        if n > 0 {
                            count = n;
                            break;
                        }
                    }
                    minute = self.cursor - 1;
                }
                self.cursor = minute + 1;
                (minute, count.min(u64::from(u32::MAX)) as u32)
            }
            Source::Timer { .. } | Source::Exact(_) => return false,
        };
        if minute >= horizon_min {
            return false;
        }
        self.minute_ns = minute * MINUTE_NS;
        self.count = count;
        self.given = 0;
        true
    }
}

impl Iterator for Arrivals<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        match self.source {
            Source::Timer { period, .. } => {
                let t = self.next_tick;
                if t >= self.horizon_ns {
                    return None;
                }
                self.next_tick = t + (period.as_nanos() as u64).max(1);
                return Some(Duration::from_nanos(t));
            }
            Source::Exact(times) => {
                let t = *times.get(self.cursor as usize)?;
                self.cursor += 1;
                return (t.as_nanos() < u128::from(self.horizon_ns)).then_some(t);
            }
            _ => {}
        }
        if self.given >= self.count && !self.next_minute() {
            return None;
        }
        let slot = (f64::from(self.given) + self.rng.uniform()) / f64::from(self.count);
        self.given += 1;
        let offset = ((slot * MINUTE_NS as f64) as u64).min(MINUTE_NS - 1);
        Some(Duration::from_nanos(self.minute_ns + offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(source: Source, minutes: u32) -> Workload {
        Workload {
            functions: vec![FunctionModel {
                app: 0,
                trigger: TriggerGroup::Http,
                duration: Duration::from_millis(100),
                cold_start: Duration::from_millis(500),
                memory_mb: 128,
                source,
            }],
            apps: vec!["a".into()],
            minutes,
            seed: 9,
        }
    }

    #[test]
    fn counts_are_spread_within_their_minute_in_order_and_the_same_every_time() {
        let w = workload(Source::Counts(vec![(0, 3), (2, 1), (5, 2)]), 4);
        let a: Vec<Duration> = w.arrivals(0).collect();
        assert_eq!(a, w.arrivals(0).collect::<Vec<_>>(), "seeded");
        // Minute 5 is past the 4-minute span.
        assert_eq!(a.len(), 4);
        assert!(a.windows(2).all(|p| p[0] <= p[1]));
        for (i, t) in a[..3].iter().enumerate() {
            let lo = Duration::from_secs(20 * i as u64);
            assert!(*t >= lo && *t < lo + Duration::from_secs(20), "{t:?}");
        }
        assert!(a[3] >= Duration::from_secs(120) && a[3] < Duration::from_secs(180));
    }

    #[test]
    fn poisson_sources_have_their_rate_and_timers_their_period() {
        for per_minute in [0.01, 0.3, 2.0, 50.0] {
            let w = workload(Source::Poisson { per_minute }, 20_000);
            let n = w.arrivals(0).count() as f64;
            let want = per_minute * 20_000.0;
            assert!(
                (n - want).abs() < 4.0 * want.sqrt() + 1.0,
                "{per_minute}: {n}"
            );
            assert!(w
                .arrivals(0)
                .collect::<Vec<_>>()
                .windows(2)
                .all(|p| p[0] <= p[1]));
        }
        let w = workload(
            Source::Timer {
                period: Duration::from_secs(600),
                phase: Duration::from_secs(30),
            },
            60,
        );
        let a: Vec<u64> = w.arrivals(0).map(|t| t.as_secs()).collect();
        assert_eq!(a, vec![30, 630, 1230, 1830, 2430, 3030]);
        assert_eq!(w.totals().invocations, 6);
    }
}
