//! How the simulator's cost grows with functions and days: runs a synthetic
//! workload under the four usual policies and prints its size, its time and
//! its events per second.
//!
//! `cargo run --release -p virga-sim --example scale -- [FUNCTIONS] [DAYS] [POLICIES]`

use std::time::Instant;

use virga_sim::{simulate, synthetic, PolicySpec, SimOptions, SyntheticOptions};
use virga_spec::pricing::Profile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let functions: usize = args.next().map_or(Ok(50_000), |a| a.parse())?;
    let days: u32 = args.next().map_or(Ok(1), |a| a.parse())?;
    let policies = args
        .next()
        .unwrap_or_else(|| "fixed:10m,fixed:20m,hybrid-histogram,greedy-dual".into());
    let started = Instant::now();
    let w = synthetic::generate(&SyntheticOptions {
        functions,
        days,
        seed: 1,
    });
    let generated = started.elapsed().as_secs_f64();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let report = simulate(
        &w,
        &SimOptions {
            policies: PolicySpec::parse_list(&policies)?,
            memory_budget_gb: None,
            threads,
            profile: Profile::built_in("lambda-x86")?,
            as_of: "2026-01-01".into(),
            source: format!("synthetic {functions}"),
        },
    )?;
    println!(
        "{functions} functions, {} apps, {days} day(s), {} invocations; generated in {generated:.2} s",
        report.workload.apps, report.workload.invocations
    );
    for p in &report.policies {
        println!(
            "  {:<18} cold {:>10}  app p50 {:>6.2}% p75 {:>6.2}%  fn p75 {:>6.2}%  wasted {:>12.0} GB-s  peak {:>7.1} GB  events {:>11}  cpu {:>6.2} s",
            p.policy,
            p.cold_starts,
            p.app_cold_start_pct.p50,
            p.app_cold_start_pct.p75,
            p.cold_start_pct.p75,
            p.wasted_memory_gb_s,
            p.peak_memory_gb,
            p.events,
            p.cpu_s
        );
    }
    let find = |name: &str| report.policies.iter().find(|p| p.policy == name);
    if let (Some(h), Some(f)) = (find("hybrid-histogram"), find("fixed:10m")) {
        println!(
            "hybrid-histogram / fixed:10m: p75 per-app cold-start % {:.3}, wasted memory {:.3}, cold starts {:.3}",
            h.app_cold_start_pct.p75 / f.app_cold_start_pct.p75,
            h.wasted_memory_gb_s / f.wasted_memory_gb_s,
            h.cold_starts as f64 / f.cold_starts as f64
        );
    }
    println!(
        "elapsed {:.2} s on {} threads, {} events, {:.2} M events/s",
        report.elapsed_s,
        report.threads,
        report.events,
        report.events_per_s / 1e6
    );
    Ok(())
}
