//! What a run reports per policy: the distribution of cold-start
//! percentages over functions and over apps (as the paper's figures show
//! them), totals, the memory idle instances held (the operator's cost) and
//! what the users would be billed.

use serde::Serialize;
use virga_spec::pricing::{price_lambda_usage, Bill, Profile};

use crate::engine::{FnStats, SharedStats, Timeline};
use crate::workload::{Totals, Workload};

/// Points of a distribution.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
fn at(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl Percentiles {
    fn of(sorted: &[f64]) -> Self {
        Percentiles {
            p50: at(sorted, 0.50),
            p75: at(sorted, 0.75),
            p90: at(sorted, 0.90),
            p99: at(sorted, 0.99),
        }
    }
}

/// One policy's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub policy: String,
    /// Cold starts as a percentage of each invoked function's invocations.
    pub cold_start_pct: Percentiles,
    /// The same over apps (all their functions' invocations together).
    pub app_cold_start_pct: Percentiles,
    /// The per-app distribution as 101 points `[cold-start %, fraction of
    /// apps at or below]`, for a CDF that does not grow with the apps.
    pub app_cdf: Vec<[f64; 2]>,
    pub invocations: u64,
    pub cold_starts: u64,
    pub prewarmed_starts: u64,
    pub warm_starts: u64,
    /// Instances started ahead of a predicted invocation.
    pub prewarms: u64,
    /// Idle instances stopped when their keep-alive ran out.
    pub expiries: u64,
    /// Idle instances stopped to free memory (greedy-dual).
    pub evictions: u64,
    /// Cold starts that found the budget full with nothing idle to evict.
    pub over_budget: u64,
    /// Memory held by idle or pre-warming instances, GB x seconds.
    pub wasted_memory_gb_s: f64,
    /// The highest minute's average memory held by instances, GB.
    pub peak_memory_gb: f64,
    pub mean_memory_gb: f64,
    /// The memory budget the policy ran under (greedy-dual), GB.
    pub memory_budget_gb: Option<f64>,
    /// Billed GB-seconds under the pricing profile (init billed on cold
    /// starts where the profile says so).
    pub billed_gb_s: f64,
    /// The users' bill for the whole run.
    pub bill_usd: f64,
    pub bill: Option<Bill>,
    pub events: u64,
    /// Processor time this policy took (summed over threads).
    pub cpu_s: f64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Where the workload came from, in words.
    pub source: String,
    pub workload: Totals,
    pub policies: Vec<PolicyResult>,
    pub pricing_profile: String,
    pub priced_as_of: String,
    pub threads: usize,
    pub elapsed_s: f64,
    pub events: u64,
    pub events_per_s: f64,
}

/// What [`PolicyResult::new`] needs besides the per-function stats.
pub(crate) struct Run<'a> {
    pub label: &'a str,
    pub stats: &'a [FnStats],
    pub shared: SharedStats,
    pub timeline: &'a Timeline,
    pub budget_mb: Option<f64>,
    pub cpu_s: f64,
}

fn pct(cold: u64, n: u64) -> f64 {
    100.0 * cold as f64 / n as f64
}

impl PolicyResult {
    pub(crate) fn new(w: &Workload, run: Run<'_>, profile: &Profile, as_of: &str) -> Self {
        let stats = run.stats;
        let mut per_fn: Vec<f64> = Vec::new();
        let mut per_app = vec![(0u64, 0u64); w.apps.len()];
        let mut sum = FnStats::default();
        let mut billed_gb_s = 0.0;
        for (f, s) in w.functions.iter().zip(stats) {
            sum.add(s);
            if s.invocations == 0 {
                continue;
            }
            per_fn.push(pct(s.cold, s.invocations));
            let a = &mut per_app[f.app as usize];
            a.0 += s.cold;
            a.1 += s.invocations;
            // Lambda bills the configured memory, at least 128 MB.
            let gb = f64::from(f.memory_mb.max(128)) / 1024.0;
            let run_ms = f.duration.as_secs_f64() * 1e3;
            let init_ms = f.cold_start.as_secs_f64() * 1e3;
            let warm = profile.lambda_billed_ms(run_ms, None, as_of) as f64;
            let cold = profile.lambda_billed_ms(run_ms, Some(init_ms), as_of) as f64;
            billed_gb_s +=
                gb * ((s.invocations - s.cold) as f64 * warm + s.cold as f64 * cold) / 1e3;
        }
        let mut per_app: Vec<f64> = per_app
            .into_iter()
            .filter(|a| a.1 > 0)
            .map(|(c, n)| pct(c, n))
            .collect();
        per_fn.sort_by(f64::total_cmp);
        per_app.sort_by(f64::total_cmp);
        let bill = price_lambda_usage(profile, sum.invocations, billed_gb_s);
        PolicyResult {
            policy: run.label.to_string(),
            cold_start_pct: Percentiles::of(&per_fn),
            app_cold_start_pct: Percentiles::of(&per_app),
            app_cdf: (0..=100)
                .map(|q| [at(&per_app, f64::from(q) / 100.0), f64::from(q) / 100.0])
                .collect(),
            invocations: sum.invocations,
            cold_starts: sum.cold,
            prewarmed_starts: sum.prewarmed,
            warm_starts: sum.invocations - sum.cold - sum.prewarmed,
            prewarms: sum.prewarms,
            expiries: sum.expiries,
            evictions: sum.evictions,
            over_budget: run.shared.over_budget,
            wasted_memory_gb_s: sum.wasted_mb_s / 1024.0,
            peak_memory_gb: run.timeline.peak_gb(),
            mean_memory_gb: run.timeline.mean_gb(),
            memory_budget_gb: run.budget_mb.map(|mb| mb / 1024.0),
            billed_gb_s,
            bill_usd: bill.as_ref().map_or(0.0, |b| b.total_usd),
            bill,
            events: sum.events,
            cpu_s: run.cpu_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&v);
        assert_eq!((p.p50, p.p75, p.p90, p.p99), (50.0, 75.0, 90.0, 99.0));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
        assert_eq!(at(&[3.0], 0.0), 3.0);
    }
}
