//! A seeded workload shaped like the Azure Functions trace, for when the
//! trace itself is not at hand.
//!
//! Anchored to what Shahrad et al. (*Serverless in the Wild*, USENIX ATC'20)
//! publish:
//!
//! - **Invocation rates** are drawn per application: `log10(invocations/day)`
//!   is normal with mean 1.6 and deviation 1.77, truncated to [-2, 6]. That
//!   puts 45% of apps at once an hour or less and 81% at once a minute or
//!   less (the paper's Figure 5 text), over eight orders of magnitude
//!   (0.01 to 10^6 a day): most apps rare, a few very hot.
//! - **Functions per app** (Figure 1): 54% of apps have one; the rest follow
//!   a Pareto tail (shape 1.3, from 2) so that 95% have at most ten.
//! - An app's rate is **split over its functions** by Zipf weights (1, 1/2,
//!   1/3, ...): the first function carries most, as in most apps.
//! - **Triggers** by share of functions (Figure 2): HTTP 55%, timer 15.6%,
//!   queue 15.2%, orchestration 6.9%, storage 2.8%, event 2.2%, others 2.2%.
//!   A timer fires at its rate rounded to a usual period (1, 2, 5, 10, 15,
//!   30 minutes, 1, 2, 4, 6, 12, 24 hours) with a random phase; every other
//!   function is a Poisson process at its rate.
//! - **Run times** (Figure 7): log-normal, the paper's fit of average
//!   execution times (mu -0.38, sigma 2.36 on seconds): median 0.68 s, 56%
//!   under a second, 97% under a minute; capped at 10 minutes.
//! - **Memory** (Figure 8): log-normal through the paper's points, half the
//!   apps at most 170 MB and 90% at most 400 MB; every instance of an app's
//!   functions holds the app's memory.
//! - **Cold starts** are not in the paper: log-normal around 500 ms
//!   (sigma 0.5), within 50 ms..10 s: an assumption, stated as such.
//!
//! Everything is drawn from [`Rng`] streams keyed by the seed and the app's
//! index, so a seed gives the same workload in any build and any thread order.

use std::time::Duration;

use crate::rng::Rng;
use crate::workload::{FunctionModel, Source, TriggerGroup, Workload};

/// `log10(invocations per day)` of an app: mean, deviation, bounds.
const RATE_LOG10: (f64, f64, f64, f64) = (1.6, 1.77, -2.0, 6.0);
const SINGLE_FUNCTION_APPS: f64 = 0.54;
const FUNCTIONS_TAIL_SHAPE: f64 = 1.3;
const MAX_FUNCTIONS_PER_APP: usize = 2000;
const TRIGGER_SHARES: [(TriggerGroup, f64); 7] = [
    (TriggerGroup::Http, 0.550),
    (TriggerGroup::Timer, 0.156),
    (TriggerGroup::Queue, 0.152),
    (TriggerGroup::Orchestration, 0.069),
    (TriggerGroup::Storage, 0.028),
    (TriggerGroup::Event, 0.022),
    (TriggerGroup::Others, 0.022),
];
/// Timer periods people write, in minutes.
const TIMER_PERIODS_MIN: [u64; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440];
/// Run time: log-normal on seconds.
const DURATION_MU_SIGMA: (f64, f64) = (-0.38, 2.36);
const MAX_DURATION_S: f64 = 600.0;
/// Memory: median 170 MB, 90th percentile 400 MB.
const MEMORY_MEDIAN_MB: f64 = 170.0;
const MEMORY_P90_MB: f64 = 400.0;
const COLD_START_MEDIAN_MS: f64 = 500.0;
const COLD_START_SIGMA: f64 = 0.5;
/// Keeps app streams apart from the arrival streams of the same seed.
const APP_SALT: u64 = 0x005E_ED0F_A995;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticOptions {
    pub functions: usize,
    pub days: u32,
    pub seed: u64,
}

/// Invocations per day of an app.
fn app_rate(r: &mut Rng) -> f64 {
    let (mean, sd, lo, hi) = RATE_LOG10;
    loop {
        let x = mean + sd * r.normal();
        if (lo..=hi).contains(&x) {
            return 10f64.powf(x);
        }
    }
}

fn functions_per_app(r: &mut Rng) -> usize {
    if r.uniform() < SINGLE_FUNCTION_APPS {
        return 1;
    }
    let u = 1.0 - r.uniform();
    ((2.0 * u.powf(-1.0 / FUNCTIONS_TAIL_SHAPE)).floor() as usize).clamp(2, MAX_FUNCTIONS_PER_APP)
}

fn trigger(r: &mut Rng) -> TriggerGroup {
    let mut u = r.uniform() * TRIGGER_SHARES.iter().map(|t| t.1).sum::<f64>();
    for (t, share) in TRIGGER_SHARES {
        if u < share {
            return t;
        }
        u -= share;
    }
    TriggerGroup::Others
}

/// The usual period nearest (on a log scale) to one invocation per
/// `1440 / per_day` minutes.
fn timer_period(per_day: f64) -> Duration {
    let want = (1440.0 / per_day.max(1e-9)).ln();
    let best = TIMER_PERIODS_MIN
        .iter()
        .min_by(|a, b| {
            let da = ((**a as f64).ln() - want).abs();
            let db = ((**b as f64).ln() - want).abs();
            da.total_cmp(&db)
        })
        .copied()
        .unwrap_or(60);
    Duration::from_secs(best * 60)
}

/// Generates `opts.functions` functions over `opts.days` days.
pub fn generate(opts: &SyntheticOptions) -> Workload {
    let memory_sigma = (MEMORY_P90_MB / MEMORY_MEDIAN_MB).ln() / 1.281_551_565_5;
    let mut functions = Vec::with_capacity(opts.functions);
    let mut apps = Vec::new();
    while functions.len() < opts.functions {
        let a = apps.len() as u32;
        let mut r = Rng::stream(opts.seed ^ APP_SALT, u64::from(a));
        let rate = app_rate(&mut r);
        let n = functions_per_app(&mut r).min(opts.functions - functions.len());
        let memory_mb = r
            .log_normal(MEMORY_MEDIAN_MB, memory_sigma)
            .clamp(16.0, 10_240.0)
            .round() as u32;
        apps.push(format!("app-{a:05}"));
        let norm: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for k in 1..=n {
            let per_day = rate / k as f64 / norm;
            let trigger = trigger(&mut r);
            let (mu, sigma) = DURATION_MU_SIGMA;
            let duration = (mu + sigma * r.normal()).exp().clamp(0.001, MAX_DURATION_S);
            let cold = r
                .log_normal(COLD_START_MEDIAN_MS, COLD_START_SIGMA)
                .clamp(50.0, 10_000.0);
            let source = if trigger == TriggerGroup::Timer {
                let period = timer_period(per_day);
                Source::Timer {
                    period,
                    phase: period.mul_f64(r.uniform()),
                }
            } else {
                Source::Poisson {
                    per_minute: per_day / 1440.0,
                }
            };
            functions.push(FunctionModel {
                app: a,
                trigger,
                duration: Duration::from_secs_f64(duration),
                cold_start: Duration::from_secs_f64(cold / 1e3),
                memory_mb,
                source,
            });
        }
    }
    Workload {
        functions,
        apps,
        minutes: opts.days * 1440,
        seed: opts.seed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(w: &Workload, f: impl Fn(&FunctionModel) -> bool) -> f64 {
        w.functions.iter().filter(|x| f(x)).count() as f64 / w.functions.len() as f64
    }

    #[test]
    fn the_same_seed_gives_the_same_workload() {
        let o = SyntheticOptions {
            functions: 500,
            days: 1,
            seed: 3,
        };
        assert_eq!(generate(&o), generate(&o));
        assert_ne!(generate(&o), generate(&SyntheticOptions { seed: 4, ..o }));
    }

    #[test]
    fn the_generator_lands_on_the_papers_anchors() {
        let w = generate(&SyntheticOptions {
            functions: 20_000,
            days: 1,
            seed: 11,
        });
        assert_eq!(w.functions.len(), 20_000);
        // Apps: rates (45% at most hourly, 81% at most once a minute) and
        // functions per app (54% one, 95% at most ten).
        let mut per_app = vec![(0.0f64, 0usize); w.apps.len()];
        for f in &w.functions {
            let per_day = match f.source {
                Source::Poisson { per_minute } => per_minute * 1440.0,
                Source::Timer { period, .. } => 86_400.0 / period.as_secs_f64(),
                Source::Counts(_) | Source::Exact(_) => unreachable!(),
            };
            per_app[f.app as usize].0 += per_day;
            per_app[f.app as usize].1 += 1;
        }
        let apps = per_app.len() as f64;
        let frac = |f: &dyn Fn(&(f64, usize)) -> bool| {
            per_app.iter().filter(|a| f(a)).count() as f64 / apps
        };
        let hourly = frac(&|a| a.0 <= 24.0);
        let minutely = frac(&|a| a.0 <= 1440.0);
        // Timers' rounding moves a few apps; within a few points.
        assert!((hourly - 0.45).abs() < 0.04, "{hourly}");
        assert!((minutely - 0.81).abs() < 0.04, "{minutely}");
        assert!((frac(&|a| a.1 == 1) - 0.54).abs() < 0.03);
        assert!((frac(&|a| a.1 <= 10) - 0.95).abs() < 0.03);
        // Triggers, run times and memory.
        assert!((share(&w, |f| f.trigger == TriggerGroup::Timer) - 0.156).abs() < 0.02);
        assert!((share(&w, |f| f.trigger == TriggerGroup::Http) - 0.55).abs() < 0.02);
        assert!((share(&w, |f| f.duration < Duration::from_secs(1)) - 0.56).abs() < 0.03);
        let mut mem: Vec<u32> = per_app_memory(&w);
        mem.sort_unstable();
        let p50 = mem[mem.len() / 2];
        let p90 = mem[mem.len() * 9 / 10];
        assert!((150..=190).contains(&p50), "{p50}");
        assert!((360..=440).contains(&p90), "{p90}");
    }

    fn per_app_memory(w: &Workload) -> Vec<u32> {
        let mut m = vec![0; w.apps.len()];
        for f in &w.functions {
            m[f.app as usize] = f.memory_mb;
        }
        m
    }

    #[test]
    fn timers_round_to_usual_periods() {
        assert_eq!(timer_period(1440.0), Duration::from_secs(60));
        assert_eq!(timer_period(144.0), Duration::from_secs(600));
        assert_eq!(timer_period(0.01), Duration::from_secs(86_400));
        assert_eq!(timer_period(1e6), Duration::from_secs(60));
    }
}
