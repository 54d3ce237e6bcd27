//! `virga cost` and `virga tune`: pricing recorded or hypothetical workloads,
//! and power tuning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use virga_lab::table;
use virga_lab::tune::TuneConfig;
use virga_lab::Client;
use virga_spec::pricing::{estimate, price_records, Bill, Profile, Workload};

/// A built-in profile name, or the path of a profile file.
pub fn load_profile(spec: &str) -> Result<Profile> {
    let path = Path::new(spec);
    if spec.ends_with(".toml") || spec.contains('/') {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read pricing profile {spec}"))?;
        return Ok(Profile::parse(&text, spec)?);
    }
    Ok(Profile::built_in(spec)?)
}

fn usd(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 0.01 {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

pub fn print_bill(bill: &Bill) {
    for e in &bill.explain {
        println!("  - {e}");
    }
    let rows: Vec<Vec<String>> = bill
        .lines
        .iter()
        .map(|l| {
            vec![
                l.item.clone(),
                format!("{:.6}", l.quantity),
                l.unit.clone(),
                format!("{:.10}", l.rate_usd),
                usd(l.cost_usd),
            ]
        })
        .collect();
    for line in table::text(&["item", "quantity", "unit", "rate_usd", "cost_usd"], &rows).lines() {
        println!("    {line}");
    }
    println!("    total: ${}", usd(bill.total_usd));
}

pub struct CostQuery {
    pub function: Option<String>,
    pub since: Option<String>,
    pub profiles: Vec<String>,
    pub requests_per_month: Option<u64>,
    pub explain: bool,
    pub json: bool,
}

pub async fn cost(endpoint: &str, signer: Option<virga_sigv4::Signer>, q: CostQuery) -> Result<()> {
    let profiles: Vec<Profile> = q
        .profiles
        .iter()
        .map(|p| load_profile(p))
        .collect::<Result<_>>()?;
    let api = Client::new(endpoint).signed(signer);
    let mut records = api.records(q.function.as_deref(), None, None).await?;
    if let Some(since) = &q.since {
        // RFC 3339 times in one format compare as strings; a bare date means its midnight.
        records.retain(|r| r.received_at.as_str() >= since.as_str());
    }
    let mut by_function: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for r in records {
        by_function.entry(r.function.clone()).or_default().push(r);
    }
    if by_function.is_empty() {
        bail!(
            "no recorded invocations{}: invoke something first",
            q.function.map(|f| format!(" of {f}")).unwrap_or_default()
        );
    }
    let mut results = Vec::new();
    for (f, recs) in &by_function {
        for p in &profiles {
            results.push(price_records(p, f, recs, q.requests_per_month));
        }
    }
    if q.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.function.clone(),
                r.profile.clone(),
                r.requests.to_string(),
                usd(r.bill.total_usd),
                usd(r.per_1000_requests_usd),
                r.monthly.as_ref().map_or("-".into(), |m| usd(m.total_usd)),
            ]
        })
        .collect();
    let monthly_col = match q.requests_per_month {
        Some(n) => format!("monthly_usd@{n}"),
        None => "monthly_usd".into(),
    };
    print!(
        "{}",
        table::text(
            &[
                "function",
                "profile",
                "requests",
                "total_usd",
                "per_1000_usd",
                &monthly_col
            ],
            &rows
        )
    );
    if q.explain {
        for r in &results {
            println!("\n{} under {}: recorded invocations", r.function, r.profile);
            print_bill(&r.bill);
            if let Some(m) = &r.monthly {
                println!("{} under {}: projected month", r.function, r.profile);
                print_bill(m);
            }
        }
    }
    Ok(())
}

pub fn estimate_cmd(profiles: &[String], w: Workload, json: bool) -> Result<()> {
    let bills: Vec<Bill> = profiles
        .iter()
        .map(|p| load_profile(p).map(|p| estimate(&p, &w)))
        .collect::<Result<_>>()?;
    if json {
        if bills.len() == 1 {
            println!("{}", serde_json::to_string_pretty(&bills[0])?);
        } else {
            println!("{}", serde_json::to_string_pretty(&bills)?);
        }
        return Ok(());
    }
    for b in &bills {
        println!(
            "{}: ${} for {} requests (${} per 1000)",
            b.profile,
            usd(b.total_usd),
            w.requests,
            usd(if w.requests > 0 {
                b.total_usd / w.requests as f64 * 1000.0
            } else {
                0.0
            })
        );
        print_bill(b);
    }
    Ok(())
}

pub async fn tune(
    endpoint: &str,
    signer: Option<virga_sigv4::Signer>,
    cfg: TuneConfig,
    out: PathBuf,
) -> Result<()> {
    if !(0.0..=1.0).contains(&cfg.balanced_weight) {
        bail!("--balanced-weight must be between 0 and 1");
    }
    let api = Client::new(endpoint).signed(signer);
    println!(
        "tuning {} over {} memory sizes, {} warm invocations each ({})",
        cfg.function,
        cfg.memories.len(),
        cfg.invocations,
        cfg.profile.name
    );
    let result = virga_lab::tune::tune(&api, &cfg, |p| {
        println!(
            "  {:>5} MB: p50 {:.2} ms, billed {:.1} ms, ${:.3e} per invocation{}",
            p.memory_mb,
            p.p50_ms,
            p.mean_billed_ms,
            p.cost_per_invocation_usd,
            match (&p.first_error, p.errors) {
                (Some(e), n) => format!(", {n} errors; the first: {e}"),
                (None, 0) => String::new(),
                (None, n) => format!(", {n} errors"),
            }
        )
    })
    .await?;
    let rows: Vec<Vec<String>> = result
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            vec![
                p.memory_mb.to_string(),
                format!("{:.2}", p.p50_ms),
                format!("{:.2}", p.mean_ms),
                format!("{:.1}", p.mean_billed_ms),
                format!("{:.3e}", p.cost_per_invocation_usd),
                p.errors.to_string(),
                if Some(i) == result.recommended {
                    "<- recommended".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect();
    let summary = table::text(
        &[
            "memory_mb",
            "p50_ms",
            "mean_ms",
            "billed_ms",
            "usd_per_invocation",
            "errors",
            "",
        ],
        &rows,
    );
    println!();
    print!("{summary}");
    match result.recommended {
        Some(i) => println!(
            "\nrecommended for {:?}: {} MB (rule: {})",
            result.strategy, result.points[i].memory_mb, result.rule
        ),
        None => println!(
            "\nno recommendation: every memory size had errors (shown above); \
             if the function needs an input, give one with --payload (default: {{}})"
        ),
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let stem = out.join(format!("tune-{}", result.function));
    let svg = virga_lab::tune::chart(&result);
    std::fs::write(
        stem.with_extension("json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(stem.with_extension("svg"), &svg)?;
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>virga tune {f}</title>\
         <body style=\"font-family:sans-serif;max-width:800px;margin:2em auto\">\
         <h1>Power tuning: {f}</h1><p>{n} warm invocations per memory size, priced with {p}. \
         Recommended ({s:?}): <b>{rec}</b>. Rule: {rule}.</p>{svg}\
         <pre>{table}</pre></body>",
        f = result.function,
        n = cfg.invocations,
        p = result.profile,
        s = result.strategy,
        rec = result.recommended.map_or("none".into(), |i| format!(
            "{} MB",
            result.points[i].memory_mb
        )),
        rule = result.rule,
        table = summary,
    );
    std::fs::write(stem.with_extension("html"), html)?;
    println!("wrote {}.json, .svg and .html", stem.display());
    Ok(())
}
