//! `virga sim`: which keep-alive policy suits a workload, found by replaying
//! it on a virtual clock through the very policy objects the live scheduler
//! runs (`virga_policy::Pool` and its keep-alive `Tracker`), with a model of
//! instances instead of processes: each function has a cold-start cost, a run
//! time and a memory size.
//!
//! The workload is the Azure Functions 2019 trace ([`trace`]) or a seeded
//! synthetic one shaped by the published distributions of the same paper
//! ([`synthetic`], which lists its anchors). Invocations are replayed per
//! minute, spread within their minute by a seeded generator
//! ([`workload`]). Each policy gets, over functions and over apps, the
//! distribution of cold-start percentages, the cold starts, the memory idle
//! instances held (wasted GB-s) and the users' bill ([`report`]).
//!
//! Cost: a run is linear in invocations (each is an arrival and a completion
//! event, plus the policy's pre-warms, expiries and evictions) and in the
//! functions; so, for a given mix, linear in functions x days. `fixed` and
//! `hybrid-histogram` simulate each function alone, in parallel over threads;
//! `greedy-dual` shares one memory budget, so one loop takes every arrival in
//! time order (a thread beside it draws and sorts them a minute at a time):
//! it is the longest of the policies, on one core.
//! Nothing is allocated per event: instance slots and heaps are reused.

pub mod engine;
pub mod queue;
pub mod report;
pub mod rng;
pub mod synthetic;
pub mod trace;
pub mod workload;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use virga_policy::{GreedyDualConfig, HybridConfig, KeepAlive};
use virga_spec::pricing::Profile;

use engine::{FnStats, SharedStats, Timeline};
pub use report::{Percentiles, PolicyResult, SimReport};
pub use synthetic::SyntheticOptions;
pub use trace::{TraceError, TraceOptions};
pub use workload::{FunctionModel, Source, Totals, TriggerGroup, Workload};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// a policy name that is not known
    #[error("unknown policy {0:?}: use fixed:<duration> (e.g. fixed:10m), hybrid-histogram or greedy-dual")]
    UnknownPolicy(String),
    /// a duration that cannot be read
    #[error("bad duration {0:?}: a number with ms, s, m or h (e.g. 10m, 90s)")]
    BadDuration(String),
    /// no policy given
    #[error("no policy to simulate")]
    NoPolicy,
    /// greedy-dual without a budget to run under
    #[error("greedy-dual needs a memory budget: give --memory-budget-gb, or a fixed policy to take the peak memory of")]
    NoBudget,
    /// the trace could not be read
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// A policy to simulate and the label it is reported under.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub label: String,
    pub policy: KeepAlive,
}

/// Reads `10m`, `90s`, `500ms`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, SimError> {
    let bad = || SimError::BadDuration(s.to_string());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1e3,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

impl PolicySpec {
    /// `fixed:10m`, `hybrid-histogram`, `greedy-dual` (the paper's and
    /// FaaSCache's parameters).
    pub fn parse(s: &str) -> Result<PolicySpec, SimError> {
        let s = s.trim();
        let policy = match s.split_once(':') {
            Some(("fixed", d)) => KeepAlive::Fixed(parse_duration(d)?),
            None if s == "hybrid-histogram" => KeepAlive::HybridHistogram(HybridConfig::default()),
            None if s == "greedy-dual" => KeepAlive::GreedyDual(GreedyDualConfig::default()),
            _ => return Err(SimError::UnknownPolicy(s.to_string())),
        };
        Ok(PolicySpec {
            label: s.to_string(),
            policy,
        })
    }

    /// A comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<PolicySpec>, SimError> {
        let list: Vec<PolicySpec> = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(PolicySpec::parse)
            .collect::<Result<_, _>>()?;
        if list.is_empty() {
            return Err(SimError::NoPolicy);
        }
        Ok(list)
    }

    fn shares_memory(&self) -> bool {
        matches!(self.policy, KeepAlive::GreedyDual(_))
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub policies: Vec<PolicySpec>,
    /// Greedy-dual's budget; `None`: the peak memory of the first fixed
    /// policy, so it holds no more at its peak than that window.
    pub memory_budget_gb: Option<f64>,
    pub threads: usize,
    /// Prices the users' bill (a Lambda profile).
    pub profile: Profile,
    /// The date the profile's rules apply on (YYYY-MM-DD).
    pub as_of: String,
    /// Words on where the workload came from, for the report.
    pub source: String,
}

/// One policy's raw outcome, before it is summarised.
struct Outcome {
    stats: Vec<FnStats>,
    shared: SharedStats,
    timeline: Timeline,
    budget_mb: Option<f64>,
    cpu_s: f64,
}

/// Functions per unit of work handed to a thread.
const CHUNK: usize = 64;

/// Runs every policy that simulates functions alone, chunks of functions
/// spread over `threads`.
fn run_alone(w: &Workload, policies: &[&PolicySpec], threads: usize) -> Vec<Outcome> {
    let n = w.functions.len();
    let chunks = n.div_ceil(CHUNK);
    let jobs = policies.len() * chunks;
    let next = AtomicUsize::new(0);
    let outcomes: Vec<Mutex<Outcome>> = policies
        .iter()
        .map(|_| {
            Mutex::new(Outcome {
                stats: vec![FnStats::default(); n],
                shared: SharedStats::default(),
                timeline: Timeline::new(w.minutes),
                budget_mb: None,
                cpu_s: 0.0,
            })
        })
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut tls: Vec<Timeline> =
                    policies.iter().map(|_| Timeline::new(w.minutes)).collect();
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job >= jobs {
                        break;
                    }
                    let (p, c) = (job / chunks, job % chunks);
                    let started = Instant::now();
                    let range = c * CHUNK..((c + 1) * CHUNK).min(n);
                    let stats: Vec<FnStats> = range
                        .clone()
                        .map(|i| engine::run_alone(w, i, &policies[p].policy, &mut tls[p], false).0)
                        .collect();
                    let mut o = outcomes[p].lock().unwrap_or_else(|e| e.into_inner());
                    o.stats[range].copy_from_slice(&stats);
                    o.cpu_s += started.elapsed().as_secs_f64();
                }
                for (p, tl) in tls.iter().enumerate() {
                    let mut o = outcomes[p].lock().unwrap_or_else(|e| e.into_inner());
                    o.timeline.merge(tl);
                }
            });
        }
    });
    outcomes
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

fn run_shared(w: &Workload, spec: &PolicySpec, budget_mb: f64) -> Outcome {
    let started = Instant::now();
    let mut timeline = Timeline::new(w.minutes);
    let (stats, shared) = engine::run_shared(w, &spec.policy, budget_mb, &mut timeline);
    Outcome {
        stats,
        shared,
        timeline,
        budget_mb: Some(budget_mb),
        cpu_s: started.elapsed().as_secs_f64(),
    }
}

/// Simulates `w` under each policy of `opts`.
pub fn simulate(w: &Workload, opts: &SimOptions) -> Result<SimReport, SimError> {
    if opts.policies.is_empty() {
        return Err(SimError::NoPolicy);
    }
    let started = Instant::now();
    let alone: Vec<&PolicySpec> = opts
        .policies
        .iter()
        .filter(|p| !p.shares_memory())
        .collect();
    let shared: Vec<&PolicySpec> = opts.policies.iter().filter(|p| p.shares_memory()).collect();
    let first_fixed = alone
        .iter()
        .position(|p| matches!(p.policy, KeepAlive::Fixed(_)));
    if !shared.is_empty() && opts.memory_budget_gb.is_none() && first_fixed.is_none() {
        return Err(SimError::NoBudget);
    }
    let threads = opts.threads.max(1);
    // Greedy-dual's single loop runs beside the policies that run alone, on
    // a thread of its own; its budget, when not given, is the peak memory
    // of the first fixed policy, which then runs first, on every thread.
    let mut alone_out: Vec<Option<Outcome>> = alone.iter().map(|_| None).collect();
    let budget_mb = match (opts.memory_budget_gb, first_fixed) {
        (Some(gb), _) => gb * 1024.0,
        (None, Some(i)) if !shared.is_empty() => {
            let o = run_alone(w, &[alone[i]], threads).pop();
            let peak = o.as_ref().map_or(0.0, |o| o.timeline.peak_gb());
            alone_out[i] = o;
            peak * 1024.0
        }
        _ => 0.0,
    };
    let rest: Vec<usize> = (0..alone.len())
        .filter(|i| alone_out[*i].is_none())
        .collect();
    let rest_specs: Vec<&PolicySpec> = rest.iter().map(|i| alone[*i]).collect();
    let (rest_out, shared_out) = std::thread::scope(|s| {
        let handles: Vec<_> = shared
            .iter()
            .map(|spec| s.spawn(move || run_shared(w, spec, budget_mb)))
            .collect();
        let a = if rest_specs.is_empty() {
            Vec::new()
        } else {
            run_alone(w, &rest_specs, threads.saturating_sub(shared.len()).max(1))
        };
        let b: Vec<Outcome> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect();
        (a, b)
    });
    for (i, o) in rest.into_iter().zip(rest_out) {
        alone_out[i] = Some(o);
    }
    let alone_out: Vec<Outcome> = alone_out.into_iter().flatten().collect();
    let mut alone_out = alone_out.into_iter();
    let mut shared_out = shared_out.into_iter();
    let mut policies = Vec::new();
    for spec in &opts.policies {
        let out = if spec.shares_memory() {
            shared_out.next()
        } else {
            alone_out.next()
        };
        let Some(o) = out else {
            unreachable!("one outcome per policy")
        };
        policies.push(PolicyResult::new(
            w,
            report::Run {
                label: &spec.label,
                stats: &o.stats,
                shared: o.shared,
                timeline: &o.timeline,
                budget_mb: o.budget_mb,
                cpu_s: o.cpu_s,
            },
            &opts.profile,
            &opts.as_of,
        ));
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let events: u64 = policies.iter().map(|p| p.events).sum();
    let invocations = policies.first().map_or(0, |p| p.invocations);
    Ok(SimReport {
        source: opts.source.clone(),
        workload: Totals {
            functions: w.functions.len(),
            apps: w.apps.len(),
            days: f64::from(w.minutes) / 1440.0,
            invocations,
        },
        policies,
        pricing_profile: opts.profile.name.clone(),
        priced_as_of: opts.as_of.clone(),
        threads,
        elapsed_s,
        events,
        events_per_s: events as f64 / elapsed_s.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(policies: &str, budget: Option<f64>) -> SimOptions {
        SimOptions {
            policies: PolicySpec::parse_list(policies).unwrap(),
            memory_budget_gb: budget,
            threads: 2,
            profile: Profile::built_in("lambda-x86").unwrap(),
            as_of: "2026-01-01".into(),
            source: "test".into(),
        }
    }

    #[test]
    fn policies_and_durations_parse() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10 parsecs").is_err());
        let l = PolicySpec::parse_list("fixed:10m,hybrid-histogram,greedy-dual").unwrap();
        assert_eq!(l[0].policy, KeepAlive::Fixed(Duration::from_secs(600)));
        assert_eq!(l[1].label, "hybrid-histogram");
        assert!(matches!(
            PolicySpec::parse("lru"),
            Err(SimError::UnknownPolicy(_))
        ));
        assert!(matches!(
            PolicySpec::parse_list(""),
            Err(SimError::NoPolicy)
        ));
    }

    #[test]
    fn a_synthetic_day_runs_every_policy_with_the_same_invocations() {
        let w = synthetic::generate(&SyntheticOptions {
            functions: 300,
            days: 1,
            seed: 5,
        });
        let r = simulate(
            &w,
            &opts("fixed:10m,fixed:20m,hybrid-histogram,greedy-dual", None),
        )
        .unwrap();
        assert_eq!(r.policies.len(), 4);
        let n = r.policies[0].invocations;
        assert!(n > 0);
        assert_eq!(n, w.totals().invocations);
        for p in &r.policies {
            assert_eq!(p.invocations, n, "{}", p.policy);
            assert_eq!(p.cold_starts + p.prewarmed_starts + p.warm_starts, n);
            assert!(p.cold_start_pct.p50 <= p.cold_start_pct.p99);
            assert!(p.bill_usd > 0.0);
        }
        let (f10, f20) = (&r.policies[0], &r.policies[1]);
        assert!(
            f20.cold_starts <= f10.cold_starts,
            "a longer window cannot start more"
        );
        assert!(f20.wasted_memory_gb_s >= f10.wasted_memory_gb_s);
        // Greedy-dual ran within the peak memory of fixed:10m.
        let gd = &r.policies[3];
        assert_eq!(gd.memory_budget_gb, Some(f10.peak_memory_gb));
        // Deterministic: the same seed, the same results.
        let again = simulate(&w, &opts("fixed:10m,hybrid-histogram", None)).unwrap();
        assert_eq!(again.policies[0].cold_starts, f10.cold_starts);
        assert_eq!(again.policies[1].cold_starts, r.policies[2].cold_starts);
    }

    #[test]
    fn greedy_dual_alone_needs_a_budget() {
        let w = synthetic::generate(&SyntheticOptions {
            functions: 10,
            days: 1,
            seed: 5,
        });
        assert!(matches!(
            simulate(&w, &opts("greedy-dual", None)),
            Err(SimError::NoBudget)
        ));
        let r = simulate(&w, &opts("greedy-dual", Some(0.5))).unwrap();
        assert_eq!(r.policies[0].memory_budget_gb, Some(0.5));
    }
}
