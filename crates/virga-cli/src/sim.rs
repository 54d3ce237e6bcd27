//! `virga sim`: keep-alive policies compared on a trace or a synthetic
//! workload, by the simulator (`virga-sim`) that drives the scheduler's own
//! policy objects on a virtual clock.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use virga_lab::plot::{self, Line};
use virga_lab::report::{esc, html_table, page};
use virga_lab::run::Host;
use virga_sim::{
    synthetic, trace, PolicySpec, SimOptions, SimReport, SyntheticOptions, TraceOptions,
};
use virga_spec::pricing::Profile;

#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// A directory holding the Azure Functions 2019 trace
    /// (invocations_per_function_md.anon.dNN.csv, and optionally
    /// function_durations_percentiles.anon.dNN.csv and
    /// app_memory_percentiles.anon.dNN.csv).
    #[arg(
        long,
        value_name = "DIR",
        conflicts_with = "synthetic",
        required_unless_present = "synthetic"
    )]
    trace: Option<PathBuf>,
    /// Generate this many functions shaped like the Azure trace instead.
    #[arg(long, value_name = "N")]
    synthetic: Option<usize>,
    /// Seeds the synthetic workload and the spread of invocations within
    /// their minute.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days to replay (the trace's first days, or generated).
    #[arg(long, default_value_t = 1)]
    days: u32,
    /// Policies to compare: fixed:DURATION (e.g. fixed:10m), hybrid-histogram,
    /// greedy-dual.
    #[arg(
        long,
        default_value = "fixed:10m,fixed:20m,hybrid-histogram,greedy-dual"
    )]
    policy: String,
    /// Greedy-dual's memory budget for all instances, in GB (default: the
    /// peak memory of the first fixed policy).
    #[arg(long, value_name = "GB")]
    memory_budget_gb: Option<f64>,
    /// The cold-start time of every traced function (the trace has none).
    #[arg(long, default_value_t = 500)]
    cold_start_ms: u64,
    /// A Lambda pricing profile for the users' bill (name or file).
    #[arg(long, default_value = "lambda-x86")]
    profile: String,
    /// Threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Where results.json, summary.md and report.html go.
    #[arg(long, default_value = "results/sim")]
    out: PathBuf,
}

/// `results.json`: the simulator's report and where it ran.
#[derive(Debug, Serialize)]
struct SimResults<'a> {
    #[serde(flatten)]
    report: &'a SimReport,
    host: Host,
    command: String,
}

fn load_profile(name: &str) -> Result<Profile> {
    match Profile::built_in(name) {
        Ok(p) => Ok(p),
        Err(_) => {
            let text = std::fs::read_to_string(name)
                .with_context(|| format!("{name}: not a built-in profile nor a readable file"))?;
            Ok(Profile::parse(&text, name)?)
        }
    }
}

pub fn sim(args: SimArgs) -> Result<ExitCode> {
    let policies = PolicySpec::parse_list(&args.policy)?;
    let profile = load_profile(&args.profile)?;
    let (workload, source) = match (&args.trace, args.synthetic) {
        (Some(dir), _) => {
            let w = trace::load(
                dir,
                &TraceOptions {
                    days: args.days,
                    cold_start: Duration::from_millis(args.cold_start_ms),
                    default_duration: Duration::from_secs(1),
                    default_memory_mb: 170,
                    seed: args.seed,
                },
            )?;
            (w, format!("trace {}", dir.display()))
        }
        (None, Some(n)) => (
            synthetic::generate(&SyntheticOptions {
                functions: n,
                days: args.days,
                seed: args.seed,
            }),
            format!("synthetic, {n} functions, seed {}", args.seed),
        ),
        (None, None) => anyhow::bail!("give --trace DIR or --synthetic N"),
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let report = virga_sim::simulate(
        &workload,
        &SimOptions {
            policies,
            memory_budget_gb: args.memory_budget_gb,
            threads,
            profile,
            as_of: crate::chrono_today(),
            source,
        },
    )?;
    let results = SimResults {
        report: &report,
        host: Host::here(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let write = |name: &str, text: String| -> Result<()> {
        let path = args.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("results.json", serde_json::to_string_pretty(&results)?)?;
    write("summary.md", summary_md(&results))?;
    write("report.html", report_html(&results))?;
    println!("{}", headline(&report));
    print!("{}", virga_lab::table::text(&COLUMNS, &rows(&report)));
    println!("results in {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn headline(r: &SimReport) -> String {
    format!(
        "{}: {} functions, {} apps, {} day(s), {} invocations; {} events in {:.1} s ({:.1} M events/s, {} threads)",
        r.source,
        r.workload.functions,
        r.workload.apps,
        r.workload.days,
        r.workload.invocations,
        r.events,
        r.elapsed_s,
        r.events_per_s / 1e6,
        r.threads
    )
}

const COLUMNS: [&str; 9] = [
    "policy",
    "cold starts",
    "app cold % p50",
    "p75",
    "p90",
    "p99",
    "wasted GB-s",
    "peak GB",
    "bill USD",
];

fn rows(r: &SimReport) -> Vec<Vec<String>> {
    r.policies
        .iter()
        .map(|p| {
            let a = &p.app_cold_start_pct;
            vec![
                p.policy.clone(),
                p.cold_starts.to_string(),
                format!("{:.2}", a.p50),
                format!("{:.2}", a.p75),
                format!("{:.2}", a.p90),
                format!("{:.2}", a.p99),
                format!("{:.0}", p.wasted_memory_gb_s),
                format!("{:.1}", p.peak_memory_gb),
                format!("{:.2}", p.bill_usd),
            ]
        })
        .collect()
}

/// The per-function table and the counts behind both.
fn detail_rows(r: &SimReport) -> (Vec<String>, Vec<Vec<String>>) {
    let columns = [
        "policy",
        "fn cold % p50",
        "p75",
        "p90",
        "p99",
        "invocations",
        "prewarmed",
        "pre-warms",
        "expiries",
        "evictions",
        "budget GB",
        "cpu s",
    ];
    let rows = r
        .policies
        .iter()
        .map(|p| {
            let f = &p.cold_start_pct;
            vec![
                p.policy.clone(),
                format!("{:.2}", f.p50),
                format!("{:.2}", f.p75),
                format!("{:.2}", f.p90),
                format!("{:.2}", f.p99),
                p.invocations.to_string(),
                p.prewarmed_starts.to_string(),
                p.prewarms.to_string(),
                p.expiries.to_string(),
                p.evictions.to_string(),
                p.memory_budget_gb
                    .map_or_else(|| "-".to_string(), |g| format!("{g:.1}")),
                format!("{:.1}", p.cpu_s),
            ]
        })
        .collect();
    (columns.iter().map(|c| c.to_string()).collect(), rows)
}

fn meta(r: &SimResults<'_>) -> Vec<String> {
    let h = &r.host;
    vec![
        headline(r.report),
        format!(
            "host: {} {}, {} cores; {} build; virga {}",
            h.os, h.arch, h.cores, h.build, h.virga_version
        ),
        format!(
            "bill: {} prices, rules as of {}",
            r.report.pricing_profile, r.report.priced_as_of
        ),
        format!("command: {}", r.command),
    ]
}

fn summary_md(r: &SimResults<'_>) -> String {
    let mut out = String::from("# virga sim\n\n");
    for l in meta(r) {
        let _ = writeln!(out, "- {l}");
    }
    out.push_str("\n## Cold starts over apps, memory and bill\n\n");
    out.push_str(&virga_lab::table::markdown(&COLUMNS, &rows(r.report)));
    out.push_str("\n## Cold starts over functions, and counts\n\n");
    let (columns, rows) = detail_rows(r.report);
    out.push_str(&virga_lab::table::markdown(&columns, &rows));
    out.push_str(NOTES_MD);
    out
}

const NOTES_MD: &str =
    "\nCold-start percentages are per app (all its functions' invocations) and per \
function, over those invoked at least once. Wasted memory is what idle and pre-warming \
instances held; the peak is the highest minute's average memory of all instances. The bill \
is the users': billed duration x memory plus requests.\n";

fn report_html(r: &SimResults<'_>) -> String {
    let rep = r.report;
    let mut body = String::from("<h2>Cold starts over apps, memory and bill</h2>");
    let columns: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    body.push_str(&html_table(&columns, &rows(rep)));
    let cdf: Vec<Line> = rep
        .policies
        .iter()
        .map(|p| Line {
            name: p.policy.clone(),
            points: p.app_cdf.iter().map(|[x, y]| (*x, *y)).collect(),
        })
        .collect();
    let tradeoff: Vec<Line> = rep
        .policies
        .iter()
        .map(|p| Line {
            name: p.policy.clone(),
            points: vec![(p.wasted_memory_gb_s, p.cold_starts as f64)],
        })
        .collect();
    for (svg, caption) in [
        (
            plot::lines(
                "Per-app cold starts",
                "cold starts (% of the app's invocations)",
                "fraction of apps",
                &cdf,
            ),
            "CDF of the per-app cold-start percentage, one line per policy: higher and further left is better.",
        ),
        (
            plot::lines(
                "Cold starts against wasted memory",
                "wasted memory (GB-s)",
                "cold starts",
                &tradeoff,
            ),
            "One point per policy: nearer the origin is better on both.",
        ),
    ] {
        let _ = write!(
            body,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            esc(caption)
        );
    }
    body.push_str("<h2>Cold starts over functions, and counts</h2>");
    let (columns, rows) = detail_rows(rep);
    body.push_str(&html_table(&columns, &rows));
    let _ = write!(body, "<p class=note>{}</p>", esc(NOTES_MD.trim()));
    page("virga sim", &meta(r), &body)
}
