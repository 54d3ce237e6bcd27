//! Keep-alive policies: how long an idle instance lives, whether to start one
//! ahead of the next invocation, and which idle instance to give up when
//! memory runs short.
//!
//! A [`KeepAlive`] names the policy and its parameters; a [`Tracker`] is one
//! function's state under it, which the [`Pool`](crate::Pool) asks at each
//! arrival and each release. Three policies:
//!
//! - **fixed**: an idle instance expires a fixed time after its last request
//!   (Lambda's and Azure's practice, and virga's `keep_alive_ms`).
//! - **hybrid-histogram** (Shahrad et al., *Serverless in the Wild*, USENIX
//!   ATC'20): a per-function histogram of idle times (4 h range, 1-minute
//!   bins). The paper's unit is an app image serving concurrent requests, and
//!   its idle time the gap between the end of one execution and the start of
//!   the next. Here an instance serves one request at a time, so an idle time
//!   is an instance's: from its release to its reuse, or, when a request
//!   finds none idle, to that request from the release of the instance last
//!   stopped (how long it would have had to wait). With one instance at a
//!   time the two are the same; with many, instances deep in the pool wait
//!   longer between uses and the histogram sees it. When the histogram is
//!   representative (enough samples; bin counts concentrated: a coefficient
//!   of variation of at least 2), the instance is stopped at once and a fresh
//!   one pre-warmed at the 5th percentile's bin minus a 10% margin, kept
//!   until the 99th percentile's bin end plus 10%. When it is not, the
//!   instance is kept for a fixed window (the histogram's range, as the
//!   paper does). When most idle times exceed the range the paper forecasts
//!   the next one with ARIMA; that forecast is left out here: such an
//!   instance is stopped at once, as the forecast would have done, but no
//!   pre-warm follows.
//! - **greedy-dual** (FaaSCache, ASPLOS'21): keep-alive as caching. An idle
//!   instance stays until memory is needed; then the one with the lowest
//!   priority `clock + frequency x cold-start cost / memory` goes, and the
//!   clock (shared by every function, a [`GreedyDualClock`]) rises to the
//!   evicted priority, so instances untouched for long age out.
//!
//! Pure: no clock, no I/O; the pool measures idle times and reports them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A keep-alive policy and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    /// An idle instance expires this long after its last request.
    Fixed(Duration),
    HybridHistogram(HybridConfig),
    GreedyDual(GreedyDualConfig),
}

impl KeepAlive {
    /// The policy's name, as manifests and `virga sim` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            KeepAlive::Fixed(_) => "fixed",
            KeepAlive::HybridHistogram(_) => "hybrid-histogram",
            KeepAlive::GreedyDual(_) => "greedy-dual",
        }
    }
}

/// The hybrid histogram policy's parameters; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HybridConfig {
    /// Idle times the histogram covers; longer ones count as out of range.
    pub range: Duration,
    /// Width of one bin.
    pub bin: Duration,
    /// Percentile (0..100) whose bin start sets the pre-warm window.
    pub head_pct: f64,
    /// Percentile (0..100) whose bin end sets the keep-alive window.
    pub tail_pct: f64,
    /// Pre-warm that much earlier and keep that much longer (0.1 = 10%).
    pub margin: f64,
    /// Fewer idle times than this: not representative yet.
    pub min_samples: u32,
    /// Bin counts whose coefficient of variation is below this are spread
    /// too evenly to predict from.
    pub cv_threshold: f64,
    /// Share of idle times beyond the range from which the histogram is not
    /// used (the paper's time-series case): instances are stopped at once.
    pub out_of_range_threshold: f64,
    /// The window when the histogram is not representative.
    pub fallback: Duration,
}

impl Default for HybridConfig {
    fn default() -> Self {
        HybridConfig {
            range: Duration::from_secs(4 * 3600),
            bin: Duration::from_secs(60),
            head_pct: 5.0,
            tail_pct: 99.0,
            margin: 0.1,
            min_samples: 5,
            cv_threshold: 2.0,
            out_of_range_threshold: 0.5,
            fallback: Duration::from_secs(4 * 3600),
        }
    }
}

/// The greedy-dual policy's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GreedyDualConfig {
    /// An idle instance also expires after this long; `None`: only memory
    /// pressure stops it.
    pub max_idle: Option<Duration>,
}

/// What the policy decided when an instance went idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Zero: keep the instance. Otherwise stop it now and start a fresh one
    /// this long after the release, just before the next request is due.
    pub prewarm: Duration,
    /// How long the idle (or pre-warmed) instance lives; `None`: until
    /// evicted for memory.
    pub keep_alive: Option<Duration>,
}

impl Windows {
    fn keep(keep_alive: Option<Duration>) -> Windows {
        Windows {
            prewarm: Duration::ZERO,
            keep_alive,
        }
    }
}

/// Greedy-dual's clock ("inflation"), shared by every function of a host:
/// it rises to each evicted instance's priority. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct GreedyDualClock(Arc<AtomicU64>);

impl GreedyDualClock {
    pub fn new() -> Self {
        GreedyDualClock::default()
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    /// An instance of `priority` was evicted: the clock rises to it (never falls).
    pub fn evicted(&self, priority: f64) {
        if priority > self.get() {
            self.0.store(priority.to_bits(), Ordering::Relaxed);
        }
    }
}

/// The lowest-priority candidate, as greedy-dual evicts: `None` when there is none.
pub fn victim<K>(candidates: impl IntoIterator<Item = (K, f64)>) -> Option<(K, f64)> {
    candidates.into_iter().min_by(|a, b| a.1.total_cmp(&b.1))
}

/// One function's keep-alive state under its policy. It holds no time: the
/// pool measures idle times and reports them.
#[derive(Debug, Clone)]
pub struct Tracker {
    policy: KeepAlive,
    histogram: Option<Box<Histogram>>,
    /// Invocations since the function last had no instance (greedy-dual).
    frequency: u64,
    cost_ms: f64,
    size_mb: f64,
    clock: GreedyDualClock,
}

impl Tracker {
    /// A function's state under `policy`, with greedy-dual's cold-start cost
    /// unknown (zero) and its own clock; see [`Tracker::greedy_dual`].
    pub fn new(policy: KeepAlive) -> Self {
        let histogram = match policy {
            KeepAlive::HybridHistogram(cfg) => Some(Box::new(Histogram::new(&cfg))),
            _ => None,
        };
        Tracker {
            policy,
            histogram,
            frequency: 0,
            cost_ms: 0.0,
            size_mb: 1.0,
            clock: GreedyDualClock::new(),
        }
    }

    /// Sets what greedy-dual weighs: the host's shared clock, a cold start's
    /// cost and the memory an instance holds.
    pub fn greedy_dual(mut self, clock: GreedyDualClock, cost_ms: f64, size_mb: f64) -> Self {
        self.clock = clock;
        self.cost_ms = cost_ms.max(0.0);
        self.size_mb = size_mb.max(1.0);
        self
    }

    /// A cold start took `cost_ms`: greedy-dual weighs the latest one.
    pub fn observe_cold_start(&mut self, cost_ms: f64) {
        self.cost_ms = cost_ms.max(0.0);
    }

    pub fn policy(&self) -> &KeepAlive {
        &self.policy
    }

    pub fn clock(&self) -> &GreedyDualClock {
        &self.clock
    }

    /// A request arrived when the function had `instances` (idle, busy or
    /// starting).
    pub fn arrival(&mut self, instances: usize) {
        // FaaSCache forgets a function's frequency once none of its
        // instances is left.
        if instances == 0 {
            self.frequency = 0;
        }
        self.frequency += 1;
    }

    /// An idle time was observed (see the module's words on which).
    pub fn idle_time(&mut self, idle: Duration) {
        if let Some(h) = self.histogram.as_deref_mut() {
            h.record(idle);
        }
    }

    /// The windows an instance going idle now would get.
    pub fn windows(&self) -> Windows {
        match (&self.policy, self.histogram.as_deref()) {
            (KeepAlive::Fixed(d), _) => Windows::keep(Some(*d)),
            (KeepAlive::HybridHistogram(cfg), Some(h)) => h.windows(cfg),
            (KeepAlive::HybridHistogram(cfg), None) => Windows::keep(Some(cfg.fallback)),
            (KeepAlive::GreedyDual(cfg), _) => Windows::keep(cfg.max_idle),
        }
    }

    /// Greedy-dual's priority of an instance used now: the clock plus
    /// frequency x cost / size. Higher stays longer.
    pub fn priority(&self) -> f64 {
        self.clock.get() + self.frequency as f64 * self.cost_ms / self.size_mb
    }

    /// Whether the hybrid histogram currently predicts (false: fallback, or
    /// another policy).
    pub fn is_representative(&self) -> bool {
        match (&self.policy, self.histogram.as_deref()) {
            (KeepAlive::HybridHistogram(cfg), Some(h)) => h.representative(cfg),
            _ => false,
        }
    }
}

/// A percentile of a histogram, tracked as samples arrive: the bin where it
/// falls and the count below that bin. Each sample moves it a few bins at
/// most, so a release costs O(1) even for functions invoked millions of times.
#[derive(Debug, Clone)]
struct Quantile {
    /// The percentile in basis points (1/100 of a percent), so the rank is
    /// integer arithmetic.
    basis_points: u64,
    bin: usize,
    below: u64,
}

impl Quantile {
    fn new(pct: f64) -> Self {
        Quantile {
            basis_points: (pct * 100.0).round().clamp(1.0, 10_000.0) as u64,
            bin: 0,
            below: 0,
        }
    }

    /// A sample went into bin `b` (already counted in `counts` and `total`).
    /// Keeps `bin` the smallest bin whose cumulative count reaches the rank.
    fn add(&mut self, b: usize, counts: &[u64], total: u64) {
        if b < self.bin {
            self.below += 1;
        }
        let rank = (self.basis_points * total).div_ceil(10_000).max(1);
        while self.bin > 0 && self.below >= rank {
            self.bin -= 1;
            self.below -= counts[self.bin];
        }
        while self.below + counts[self.bin] < rank {
            self.below += counts[self.bin];
            self.bin += 1;
        }
    }
}

/// The idle-time histogram of one function.
#[derive(Debug, Clone)]
struct Histogram {
    bin: Duration,
    counts: Vec<u64>,
    /// Samples in range.
    total: u64,
    out_of_range: u64,
    /// Sum of squared bin counts, for the coefficient of variation.
    sum_sq: u128,
    head: Quantile,
    tail: Quantile,
}

impl Histogram {
    fn new(cfg: &HybridConfig) -> Self {
        let bin = cfg.bin.max(Duration::from_millis(1));
        let n = (cfg.range.as_nanos() / bin.as_nanos()).clamp(1, 100_000) as usize;
        Histogram {
            bin,
            counts: vec![0; n],
            total: 0,
            out_of_range: 0,
            sum_sq: 0,
            head: Quantile::new(cfg.head_pct),
            tail: Quantile::new(cfg.tail_pct),
        }
    }

    fn record(&mut self, idle: Duration) {
        let b = (idle.as_nanos() / self.bin.as_nanos()) as usize;
        let Some(c) = self.counts.get_mut(b) else {
            self.out_of_range += 1;
            return;
        };
        self.sum_sq += 2 * u128::from(*c) + 1;
        *c += 1;
        self.total += 1;
        self.head.add(b, &self.counts, self.total);
        self.tail.add(b, &self.counts, self.total);
    }

    /// Coefficient of variation of the bin counts: high when idle times
    /// gather in a few bins, zero when they spread evenly.
    fn cv(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let n = self.counts.len() as f64;
        let mean = self.total as f64 / n;
        let var = (self.sum_sq as f64 / n - mean * mean).max(0.0);
        var.sqrt() / mean
    }

    fn representative(&self, cfg: &HybridConfig) -> bool {
        let all = self.total + self.out_of_range;
        all >= u64::from(cfg.min_samples)
            && self.total > 0
            && (self.out_of_range as f64) < cfg.out_of_range_threshold * all as f64
            && self.cv() >= cfg.cv_threshold
    }

    fn mostly_out_of_range(&self, cfg: &HybridConfig) -> bool {
        let all = self.total + self.out_of_range;
        all >= u64::from(cfg.min_samples)
            && self.out_of_range as f64 >= cfg.out_of_range_threshold * all as f64
    }

    fn windows(&self, cfg: &HybridConfig) -> Windows {
        if self.mostly_out_of_range(cfg) {
            // Where the paper's forecast would pre-warm, nothing is kept.
            return Windows::keep(Some(Duration::ZERO));
        }
        if !self.representative(cfg) {
            return Windows::keep(Some(cfg.fallback));
        }
        let margin = cfg.margin.clamp(0.0, 1.0);
        let prewarm = (self.bin * self.head.bin as u32).mul_f64(1.0 - margin);
        let until = (self.bin * (self.tail.bin as u32 + 1)).mul_f64(1.0 + margin);
        Windows {
            prewarm,
            keep_alive: Some(until.saturating_sub(prewarm)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn min(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    fn hybrid() -> KeepAlive {
        KeepAlive::HybridHistogram(HybridConfig::default())
    }

    /// A tracker that saw `n` idle times of `idle`.
    fn seen(policy: KeepAlive, idle: Duration, n: u32) -> Tracker {
        let mut t = Tracker::new(policy);
        for i in 0..n {
            t.arrival(usize::from(i > 0));
            t.idle_time(idle);
        }
        t
    }

    #[test]
    fn fixed_keeps_every_instance_the_same_time() {
        let t = seen(KeepAlive::Fixed(min(10)), min(3), 20);
        assert_eq!(t.windows(), Windows::keep(Some(min(10))));
    }

    #[test]
    fn a_periodic_function_is_prewarmed_just_before_its_period() {
        // Every 10 minutes, runs of 2 s: idle 9 min 58 s, in bin 9.
        let t = seen(hybrid(), min(10) - Duration::from_secs(2), 12);
        assert!(t.is_representative());
        let w = t.windows();
        // Pre-warm at 9 min - 10%, keep until the bin's end (10 min) + 10%.
        assert_eq!(w.prewarm, Duration::from_secs(9 * 60 * 9 / 10));
        assert_eq!(
            w.prewarm + w.keep_alive.unwrap(),
            Duration::from_secs(11 * 60)
        );
        let next = min(10) - Duration::from_secs(2);
        assert!(w.prewarm < next && next - w.prewarm < min(2), "just before");
        assert!(
            w.prewarm + w.keep_alive.unwrap() > next,
            "alive when it comes"
        );
    }

    #[test]
    fn an_idle_time_past_the_99th_percentile_releases_the_instance() {
        let t = seen(hybrid(), min(5) - Duration::from_secs(1), 200);
        let w = t.windows();
        // Every idle time was under 5 minutes: gone 5.5 minutes after its
        // release, long before a fixed 10 minutes.
        assert_eq!(w.prewarm + w.keep_alive.unwrap(), Duration::from_secs(330));
    }

    #[test]
    fn an_unrepresentative_histogram_falls_back() {
        let cfg = HybridConfig::default();
        // Too few samples.
        let t = seen(hybrid(), min(10), 3);
        assert!(!t.is_representative());
        assert_eq!(t.windows(), Windows::keep(Some(cfg.fallback)));
        // Idle times spread evenly over the whole range: no pattern.
        let mut t = Tracker::new(hybrid());
        for i in 0..2000u64 {
            t.idle_time(min((i * 7) % 240));
        }
        assert!(
            !t.is_representative(),
            "cv {}",
            t.histogram.as_ref().unwrap().cv()
        );
        assert_eq!(t.windows(), Windows::keep(Some(cfg.fallback)));
    }

    #[test]
    fn mostly_out_of_range_idle_times_stop_the_instance_at_once() {
        // Every 5 hours: the paper's forecast case, left out.
        let t = seen(hybrid(), min(5 * 60), 10);
        assert!(!t.is_representative());
        assert_eq!(t.windows(), Windows::keep(Some(Duration::ZERO)));
    }

    #[test]
    fn a_hot_function_keeps_its_instances_about_a_minute() {
        let t = seen(hybrid(), Duration::from_millis(200), 10_000);
        assert_eq!(t.windows(), Windows::keep(Some(Duration::from_secs(66))));
    }

    #[test]
    fn greedy_dual_priority_grows_with_frequency_and_cost_and_shrinks_with_size() {
        let clock = GreedyDualClock::new();
        let policy = KeepAlive::GreedyDual(GreedyDualConfig::default());
        let mut hot = Tracker::new(policy).greedy_dual(clock.clone(), 500.0, 128.0);
        let mut big = Tracker::new(policy).greedy_dual(clock.clone(), 500.0, 1024.0);
        for i in 0..4 {
            hot.arrival(i);
        }
        big.arrival(0);
        assert_eq!(
            hot.windows(),
            Windows::keep(None),
            "kept until memory is needed"
        );
        assert!(hot.priority() > big.priority());
        let (k, p) = victim([("hot", hot.priority()), ("big", big.priority())]).unwrap();
        assert_eq!(k, "big");
        clock.evicted(p);
        assert_eq!(clock.get(), p);
        // The clock never falls, and lifts everyone used after it.
        clock.evicted(0.0);
        assert_eq!(clock.get(), p);
        assert!(big.priority() >= 2.0 * p);
        // A function with no instance left starts counting again.
        hot.arrival(0);
        assert_eq!(hot.frequency, 1);
    }

    #[test]
    fn quantiles_match_a_scan_of_the_bins() {
        let cfg = HybridConfig::default();
        let mut h = Histogram::new(&cfg);
        let mut x = 12345u64;
        for _ in 0..5000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let m = (x >> 33) % 300;
            h.record(min(m) + Duration::from_secs(1));
            for q in [&h.head, &h.tail] {
                let rank = (q.basis_points * h.total).div_ceil(10_000).max(1);
                let mut cum = 0;
                let scan = h.counts.iter().position(|c| {
                    cum += c;
                    cum >= rank
                });
                if h.total > 0 {
                    assert_eq!(Some(q.bin), scan);
                }
            }
        }
    }
}
