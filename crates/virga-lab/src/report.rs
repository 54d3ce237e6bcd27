//! What a run leaves behind in `results/<timestamp>-<preset>/`:
//! `results.json` (configurations, statistics, chart data, the source
//! study's figures: what the report needs, whatever the run's length),
//! `invocations.csv.gz` (one row per request, the only place they are
//! kept), `summary.md` (the tables) and `report.html` (one self-contained
//! page with inline SVG charts, readable offline and printable). The last
//! two render from what `results.json` holds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plot::{self, Dot, Line};
use crate::run::{RunResult, ScenarioResult};
use crate::scenario::Kind;
use crate::LabError;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The directory name of a run: `<UTC timestamp>-<preset>`.
pub fn run_dir(out: &Path, r: &RunResult) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    out.join(format!("{stamp}-{}", r.preset))
}

/// Writes every output of `r` into `dir`.
pub fn write_all(dir: &Path, r: &RunResult) -> Result<(), LabError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |e| LabError::Io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let p = dir.join("results.json");
    let json = serde_json::to_vec_pretty(r).expect("results serialise");
    std::fs::write(&p, json).map_err(io(&p))?;
    let p = dir.join("invocations.csv.gz");
    write_gz(&p, invocations_csv(r).as_bytes()).map_err(io(&p))?;
    let p = dir.join("summary.md");
    std::fs::write(&p, summary_md(r)).map_err(io(&p))?;
    let p = dir.join("report.html");
    std::fs::write(&p, html(r)).map_err(io(&p))?;
    Ok(())
}

fn write_gz(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let file = std::fs::File::create(path)?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(bytes)?;
    gz.finish()?.sync_all()
}

/// One row per request; the columns are documented in the guide (Outputs).
pub fn invocations_csv(r: &RunResult) -> String {
    let mut out = String::from(
        "scenario,group,function,t_ms,client_ms,service_ms,status,error,request_id,instance_id,users,cold,queue_ms,init_ms,duration_ms,billed_ms,max_memory_mb,preprocess_ms,inference_ms,postprocess_ms\n",
    );
    let o = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for (i, s) in r.scenarios.iter().enumerate() {
        for g in &s.groups {
            for m in &g.samples {
                let x = &m.sample;
                let sv = m.server.as_ref();
                let _ = writeln!(
                    out,
                    "{},{},{},{:.3},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    csv_cell(&format!("{}:{}", i + 1, s.kind)),
                    csv_cell(&g.label),
                    csv_cell(&g.function),
                    x.t_ms,
                    x.client_ms,
                    x.service_ms,
                    x.status,
                    csv_cell(x.error.as_deref().unwrap_or("")),
                    x.request_id.as_deref().unwrap_or(""),
                    csv_cell(sv.and_then(|s| s.instance_id.as_deref()).unwrap_or("")),
                    x.users,
                    sv.map_or(String::new(), |s| s.cold.to_string()),
                    o(sv.map(|s| s.queue_ms)),
                    o(sv.and_then(|s| s.init_ms)),
                    o(sv.map(|s| s.duration_ms)),
                    sv.map_or(String::new(), |s| s.billed_ms.to_string()),
                    sv.and_then(|s| s.max_memory_mb)
                        .map_or(String::new(), |v| v.to_string()),
                    o(sv.and_then(|s| s.preprocess_ms)),
                    o(sv.and_then(|s| s.inference_ms)),
                    o(sv.and_then(|s| s.postprocess_ms)),
                );
            }
        }
    }
    out
}

fn header_lines(r: &RunResult) -> Vec<String> {
    let mut v = vec![
        format!("host: {}", r.host.line()),
        format!(
            "endpoint: {}{}",
            r.endpoint,
            if r.embedded {
                " (embedded platform)"
            } else {
                ""
            }
        ),
        format!("run: {} .. {}", r.started_at, r.finished_at),
    ];
    if let Some(link) = &r.link {
        v.push(format!(
            "client link: {link}; every latency includes it, the platform's own figures do not"
        ));
    }
    if let Some(s) = &r.reproduces {
        v.push(format!("reproduces: {s}"));
    }
    if r.quick {
        v.push(
            "QUICK smoke run (--quick): shrunk repetitions and durations; not for conclusions"
                .into(),
        );
    }
    if r.interrupted {
        v.push("INTERRUPTED: stopped early; what is here was measured".into());
    }
    v.push(format!(
        "prices: {} (dated profiles; `virga cost --explain` shows the arithmetic)",
        r.pricing_profiles.join(", ")
    ));
    for (f, why) in &r.skipped {
        v.push(format!("SKIPPED {f}: {why}"));
    }
    v
}

pub fn summary_md(r: &RunResult) -> String {
    let mut out = format!(
        "# virga bench: {}\n\n{}\n\n",
        r.preset,
        r.description.trim()
    );
    for l in header_lines(r) {
        let _ = writeln!(out, "- {l}");
    }
    for (i, s) in r.scenarios.iter().enumerate() {
        let _ = write!(out, "\n## {}. {} ({})\n\n", i + 1, s.title, s.kind);
        out.push_str(&crate::table::markdown(&s.columns, &s.rows));
        for n in &s.notes {
            let _ = writeln!(out, "\n_{n}_");
        }
        let (columns, rows) = per_group(s);
        if !rows.is_empty() {
            out.push_str("\nPer configuration:\n\n");
            out.push_str(&crate::table::markdown(&columns, &rows));
        }
    }
    if !r.reference.rows.is_empty() {
        out.push_str("\n## Source study vs this run\n");
        for (title, columns, rows, lines) in reference_tables(r) {
            let _ = write!(out, "\n### {title}\n\n");
            out.push_str(&crate::table::markdown(&columns, &rows));
            for l in lines {
                let _ = writeln!(out, "\n_{l}_");
            }
        }
    }
    out
}

/// Per group: requests, errors, cold starts, distinct instances and peak
/// memory (from the records).
fn per_group(s: &ScenarioResult) -> (Vec<String>, Vec<Vec<String>>) {
    let columns = [
        "configuration",
        "requests",
        "errors",
        "cold",
        "instances",
        "max memory MB",
    ]
    .iter()
    .map(|c| c.to_string())
    .collect();
    let rows = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.label.clone(),
                g.stats.requests.to_string(),
                g.stats.errors.to_string(),
                g.stats.cold.to_string(),
                g.stats.instances.to_string(),
                g.stats.max_memory_mb.map_or("-".into(), |m| m.to_string()),
            ]
        })
        .collect();
    (columns, rows)
}

/// A figure in its unit: plain numbers, small prices in scientific form.
fn figure(v: f64, unit: &str) -> String {
    let n = if v != 0.0 && v.abs() < 0.001 {
        format!("{v:.3e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    };
    format!("{n} {unit}")
}

type RefTable = (String, Vec<String>, Vec<Vec<String>>, Vec<String>);

/// The section `Source study vs this run`, one table per study table: rows
/// of figures and a line on the shape (then the figures' caveats).
fn reference_tables(r: &RunResult) -> Vec<RefTable> {
    let columns: Vec<String> = ["configuration", "metric", "seed", "virga", "ratio"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    r.reference
        .tables
        .iter()
        .map(|t| {
            let mine: Vec<_> = r
                .reference
                .rows
                .iter()
                .filter(|j| j.study == t.study && j.table == t.table)
                .collect();
            let rows = mine
                .iter()
                .map(|j| {
                    vec![
                        j.configuration.clone(),
                        j.metric.clone(),
                        figure(j.seed, &j.unit),
                        j.virga.map_or("-".into(), |v| figure(v, &j.unit)),
                        j.ratio.map_or("-".into(), |x| {
                            // Small ratios keep their digits: 0.0003, not 0.00.
                            if x != 0.0 && x.abs() < 0.01 {
                                format!("{x:.1e}")
                            } else {
                                format!("{x:.2}")
                            }
                        }),
                    ]
                })
                .collect();
            let mut lines = vec![t.line.clone()];
            lines.extend(
                mine.iter()
                    .filter_map(|j| j.note.as_ref().map(|n| format!("{}: {n}", j.configuration))),
            );
            (
                format!("{} ({})", t.table, t.study),
                columns.clone(),
                rows,
                lines,
            )
        })
        .collect()
}

/// The charts of one scenario, as SVG strings with captions.
pub fn charts(s: &ScenarioResult) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let cdf_of = |service: bool| -> Vec<Line> {
        s.groups
            .iter()
            .filter_map(|g| {
                let points = if service {
                    &g.plot.cdf_service
                } else {
                    &g.plot.cdf_client
                };
                (!points.is_empty()).then(|| Line {
                    name: g.label.clone(),
                    points: points.clone(),
                })
            })
            .collect()
    };
    let timeline = |title: &str, x_desc: &str| {
        let dots: Vec<Dot> = s
            .groups
            .iter()
            .flat_map(|g| g.plot.timeline.iter())
            .map(|p| Dot {
                x: p.t_s,
                y: p.ms,
                hot: p.cold,
            })
            .collect();
        plot::timeline(title, x_desc, "latency (ms)", &dots)
    };
    match s.kind {
        Kind::ColdStart | Kind::WarmLatency | Kind::Compare => {
            let lines = cdf_of(false);
            out.push((
                "Latency CDF per configuration (client side)".into(),
                plot::lines(
                    "Latency CDF",
                    "latency (ms)",
                    "fraction of requests",
                    &lines,
                ),
            ));
            if s.kind == Kind::ColdStart {
                // Request by request, in the order they ran.
                let dots: Vec<Dot> = s
                    .groups
                    .iter()
                    .flat_map(|g| g.plot.timeline.iter())
                    .enumerate()
                    .map(|(i, p)| Dot {
                        x: i as f64 + 1.0,
                        y: p.ms,
                        hot: p.cold,
                    })
                    .collect();
                out.push((
                    "Every request in order: cold starts in red".into(),
                    plot::timeline("Cold and warm requests", "request", "latency (ms)", &dots),
                ));
            }
        }
        Kind::Throughput => {
            let mut by_fn: Vec<Line> = Vec::new();
            let mut p99: Vec<Line> = Vec::new();
            for g in &s.groups {
                let (Some(u), Some(rps)) = (g.config_f64("users"), g.stats.throughput_rps) else {
                    continue;
                };
                let find = |v: &mut Vec<Line>, name: &str| -> usize {
                    match v.iter().position(|l| l.name == name) {
                        Some(i) => i,
                        None => {
                            v.push(Line {
                                name: name.into(),
                                points: Vec::new(),
                            });
                            v.len() - 1
                        }
                    }
                };
                let i = find(&mut by_fn, &g.function);
                by_fn[i].points.push((u, rps));
                if let Some(c) = &g.stats.client {
                    let i = find(&mut p99, &format!("{} p50", g.function));
                    p99[i].points.push((u, c.p50));
                    let i = find(&mut p99, &format!("{} p99", g.function));
                    p99[i].points.push((u, c.p99));
                }
            }
            out.push((
                "Throughput against concurrent users".into(),
                plot::lines(
                    "Throughput vs users",
                    "concurrent users",
                    "successful requests/s",
                    &by_fn,
                ),
            ));
            out.push((
                "Latency percentiles against concurrent users".into(),
                plot::lines("Latency vs users", "concurrent users", "latency (ms)", &p99),
            ));
            let lines = cdf_of(false);
            out.push((
                "Latency CDF per user count".into(),
                plot::lines(
                    "Latency CDF",
                    "latency (ms)",
                    "fraction of requests",
                    &lines,
                ),
            ));
        }
        Kind::Ramp | Kind::Trace => {
            let t = |f: &dyn Fn(&crate::run::Bucket) -> Option<f64>, name: &str| Line {
                name: name.into(),
                points: s
                    .series
                    .iter()
                    .filter_map(|b| f(b).map(|v| (b.t_s, v)))
                    .collect(),
            };
            let mut load = vec![t(&|b| Some(b.hits_per_s), "hits/s")];
            if s.kind == Kind::Ramp {
                load.push(t(&|b| Some(f64::from(b.users)), "users"));
            } else {
                load.push(t(&|b| b.planned.map(f64::from), "planned per interval"));
                load.push(t(&|b| Some(b.requests as f64), "sent per interval"));
            }
            out.push((
                "Load over time".into(),
                plot::lines("Load over time", "time (s)", "", &load),
            ));
            out.push((
                "Mean and max latency over time".into(),
                plot::lines(
                    "Latency over time",
                    "time (s)",
                    "latency (ms)",
                    &[t(&|b| b.mean_ms, "mean"), t(&|b| b.max_ms, "max")],
                ),
            ));
            out.push((
                "Every request: cold starts in red".into(),
                timeline("Cold and warm requests", "time (s)"),
            ));
        }
        Kind::KeepAlive => {
            let dots: Vec<Dot> = s
                .groups
                .iter()
                .filter_map(|g| {
                    Some(Dot {
                        x: g.config_f64("gap_units")?,
                        y: g.stats.client.as_ref()?.mean,
                        hot: g.stats.cold > 0,
                    })
                })
                .collect();
            out.push((
                "Latency after each idle gap: cold starts in red".into(),
                plot::timeline(
                    "Latency after idle gaps",
                    "idle gap (time units)",
                    "latency (ms)",
                    &dots,
                ),
            ));
        }
        Kind::Sweep => {
            let mut dur: Vec<Line> = Vec::new();
            let mut cost: Vec<Line> = Vec::new();
            let x_key = if s.groups.iter().any(|g| g.config.contains_key("memory_mb")) {
                "memory_mb"
            } else if s.groups.iter().any(|g| g.config.contains_key("batch_size")) {
                "batch_size"
            } else {
                "max_concurrency"
            };
            for g in &s.groups {
                let Some(x) = g.config_f64(x_key) else {
                    continue;
                };
                let others: Vec<String> = ["max_concurrency", "batch_size", "memory_mb"]
                    .iter()
                    .filter(|k| **k != x_key)
                    .filter_map(|k| g.config.get(*k).map(|v| format!("{k}={v}")))
                    .filter(|_| true)
                    .collect();
                let name = format!(
                    "{} {}",
                    g.function.split("-m").next().unwrap_or(&g.function),
                    others.join(" ")
                );
                let name = name.trim().to_string();
                if let Some(d) = &g.stats.server_duration {
                    push(&mut dur, &name, (x, d.p50));
                }
                if let Some((_, c)) = g.stats.cost_per_1000.iter().next() {
                    push(&mut cost, &name, (x, *c));
                }
            }
            out.push((
                format!("Processing time (instance duration, p50) against {x_key}"),
                plot::lines(
                    "Duration vs configuration",
                    x_key,
                    "duration p50 (ms)",
                    &dur,
                ),
            ));
            out.push((
                format!("Cost per 1000 requests against {x_key} (first pricing profile)"),
                plot::lines(
                    "Cost vs configuration",
                    x_key,
                    "USD per 1000 requests",
                    &cost,
                ),
            ));
        }
        Kind::Burst => {
            let (mut instances, mut billed) = (Vec::new(), Vec::new());
            for g in &s.groups {
                let Some(c) = g.config_f64("max_concurrency") else {
                    continue;
                };
                let name = match g.config_f64("memory_mb") {
                    Some(m) => format!("{} {m} MB", g.function.split("-m").next().unwrap_or("")),
                    None => g.function.split("-c").next().unwrap_or("").to_string(),
                };
                push(&mut instances, &name, (c, g.stats.instances as f64));
                if let Some(b) = g.stats.billed_mean_ms {
                    push(&mut billed, &name, (c, b));
                }
            }
            out.push((
                "Distinct instances a burst used against max_concurrency".into(),
                plot::lines(
                    "Instances vs max concurrency",
                    "max_concurrency",
                    "instances",
                    &instances,
                ),
            ));
            out.push((
                "Mean billed duration per invocation against max_concurrency".into(),
                plot::lines(
                    "Billed vs max concurrency",
                    "max_concurrency",
                    "billed mean (ms)",
                    &billed,
                ),
            ));
        }
        Kind::Train => {
            let mut line = Vec::new();
            for g in &s.groups {
                if let (Some(x), Some(c)) = (g.config_f64("features"), &g.stats.client) {
                    push(&mut line, "fitting", (x, c.mean));
                }
            }
            out.push((
                "Training time against the feature count".into(),
                plot::lines("Training time", "features", "train mean (ms)", &line),
            ));
        }
        Kind::OpenLoop => {
            let mut lines = cdf_of(false);
            for l in &mut lines {
                l.name = format!("{} (corrected)", l.name);
            }
            let mut raw = cdf_of(true);
            for l in &mut raw {
                l.name = format!("{} (uncorrected)", l.name);
            }
            lines.extend(raw);
            out.push((
                "Latency CDF, corrected for coordinated omission and not".into(),
                plot::lines(
                    "Open-loop latency CDF",
                    "latency (ms)",
                    "fraction of requests",
                    &lines,
                ),
            ));
        }
        // The table is the result: a few numbers per function, no series.
        Kind::Memory => {}
    }
    out.retain(|(_, svg)| !svg.is_empty());
    out
}

fn push(v: &mut Vec<Line>, name: &str, p: (f64, f64)) {
    match v.iter_mut().find(|l| l.name == name) {
        Some(l) => l.points.push(p),
        None => v.push(Line {
            name: name.into(),
            points: vec![p],
        }),
    }
}

/// An HTML table in the reports' style (numbers right-aligned).
pub fn html_table(columns: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<table><thead><tr>");
    for c in columns {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let num = c.parse::<f64>().is_ok();
            let _ = write!(
                out,
                "<td{}>{}</td>",
                if num { " class=n" } else { "" },
                esc(c)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}\
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em}\
th{background:#f3f5f8;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.meta{color:#555;font-size:.92em}.note{color:#555;font-style:italic}.warn{color:#a00;font-weight:bold}\
figure{margin:1em 0;break-inside:avoid}figcaption{color:#555;font-size:.9em}svg{max-width:100%;height:auto}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}\
@media print{body{max-width:none;margin:0}h2{break-after:avoid}a{color:inherit}}";

/// Counts the charts that actually have a size once laid out: the report
/// test reads the result back from the rendered DOM.
const CHECK: &str = "<script>window.addEventListener('load',function(){var s=document.querySelectorAll('figure svg'),ok=0;\
for(var i=0;i<s.length;i++){var b=s[i].getBBox();if(b.width>0&&b.height>0)ok++;}\
document.body.setAttribute('data-charts',String(s.length));document.body.setAttribute('data-charts-rendered',String(ok));});</script>";

/// The start of a report page in the lab's style, up to its title.
fn page_head(title: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{t}</title><style>{CSS}</style></head><body><h1>{t}</h1>",
        t = esc(title)
    )
}

/// A whole report page in the lab's style: a title, `meta` lines (host,
/// versions, how it was run), then `body` (HTML: tables, figures).
pub fn page(title: &str, meta: &[String], body: &str) -> String {
    let mut out = page_head(title);
    out.push_str("<ul class=meta>");
    for l in meta {
        let _ = write!(out, "<li>{}</li>", esc(l));
    }
    let _ = write!(out, "</ul>{body}{CHECK}</body></html>");
    out
}

pub fn html(r: &RunResult) -> String {
    let mut out = page_head(&format!("virga bench: {}", r.preset));
    let _ = write!(out, "<p>{}</p><ul class=meta>", esc(r.description.trim()));
    for l in header_lines(r) {
        let class = if l.starts_with("QUICK") || l.starts_with("INTERRUPTED") {
            " class=warn"
        } else {
            ""
        };
        let _ = write!(out, "<li{class}>{}</li>", esc(&l));
    }
    out.push_str("</ul><nav><ol>");
    for (i, s) in r.scenarios.iter().enumerate() {
        let _ = write!(
            out,
            "<li><a href=\"#s{}\">{} ({})</a></li>",
            i + 1,
            esc(&s.title),
            esc(s.kind.as_str())
        );
    }
    out.push_str("</ol></nav>");
    for (i, s) in r.scenarios.iter().enumerate() {
        let _ = write!(
            out,
            "<h2 id=\"s{}\">{}. {} <small>({})</small></h2>",
            i + 1,
            i + 1,
            esc(&s.title),
            esc(s.kind.as_str())
        );
        out.push_str(&html_table(&s.columns, &s.rows));
        for n in &s.notes {
            let _ = write!(out, "<p class=note>{}</p>", esc(n));
        }
        let (columns, rows) = per_group(s);
        if !rows.is_empty() {
            let _ = write!(
                out,
                "<details><summary>Per configuration</summary>{}</details>",
                html_table(&columns, &rows)
            );
        }
        for (caption, svg) in charts(s) {
            let _ = write!(
                out,
                "<figure>{svg}<figcaption>{}</figcaption></figure>",
                esc(&caption)
            );
        }
    }
    if !r.reference.rows.is_empty() {
        out.push_str("<h2 id=\"reference\">Source study vs this run</h2>");
        for (title, columns, rows, lines) in reference_tables(r) {
            let _ = write!(out, "<h3>{}</h3>", esc(&title));
            out.push_str(&html_table(&columns, &rows));
            for l in lines {
                let _ = write!(out, "<p class=note>{}</p>", esc(&l));
            }
        }
    }
    out.push_str("<h2>Functions as deployed</h2>");
    for f in &r.functions {
        let _ = write!(
            out,
            "<details><summary>{}</summary><pre>{}</pre></details>",
            esc(&f.name),
            esc(&f.manifest)
        );
    }
    let _ = write!(
        out,
        "<p class=meta>Latency is client-side unless marked server (the platform's records). Percentiles from HdrHistogram (3 significant digits); ci95 is the 95% confidence half-width of the mean (Student's t). Data: results.json (statistics and chart data), invocations.csv.gz (every request).</p>{CHECK}</body></html>"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reference::{Comparison, Joined, Shape};
    use crate::run::{Group, GroupStats, Host, Point, ScenarioResult};

    /// A run as `results.json` holds it: statistics and chart data, no
    /// samples.
    fn run_without_samples() -> RunResult {
        let group = Group {
            label: "f cold".into(),
            function: "f".into(),
            config: [("phase".to_string(), "cold".into())].into(),
            stats: GroupStats {
                requests: 2,
                cold: 2,
                instances: 2,
                max_memory_mb: Some(61),
                client: crate::stats::summarize(&[30.0, 50.0]),
                ..GroupStats::default()
            },
            samples: Vec::new(),
            plot: crate::run::PlotData {
                cdf_client: vec![(30.0, 0.5), (50.0, 1.0)],
                cdf_service: vec![(30.0, 0.5), (50.0, 1.0)],
                timeline: vec![
                    Point {
                        t_s: 0.0,
                        ms: 30.0,
                        cold: true,
                    },
                    Point {
                        t_s: 1.0,
                        ms: 50.0,
                        cold: true,
                    },
                ],
            },
            wall_s: 1.0,
        };
        RunResult {
            preset: "p".into(),
            description: String::new(),
            reproduces: Some("000.txt".into()),
            endpoint: "http://127.0.0.1:1".into(),
            link: None,
            embedded: true,
            quick: true,
            started_at: "2024-01-01T00:00:00Z".into(),
            finished_at: "2024-01-01T00:00:01Z".into(),
            host: Host::here(),
            interrupted: false,
            managed: true,
            pricing_profiles: vec!["lambda-x86".into()],
            functions: vec![],
            skipped: [("f-ort".to_string(), "no engine \"ort\"".to_string())].into(),
            scenarios: vec![ScenarioResult {
                kind: Kind::ColdStart,
                title: "Table 1".into(),
                notes: vec![],
                columns: vec!["function".into()],
                rows: vec![vec!["f".into()]],
                groups: vec![group],
                series: vec![],
            }],
            reference: Comparison {
                rows: vec![Joined {
                    study: "000.txt".into(),
                    table: "Table 1".into(),
                    configuration: "Lambda 512MB".into(),
                    metric: "cold start".into(),
                    unit: "ms".into(),
                    seed: 820.0,
                    virga: Some(41.0),
                    ratio: Some(0.05),
                    note: None,
                }],
                tables: vec![Shape {
                    study: "000.txt".into(),
                    table: "Table 1".into(),
                    pairs: 0,
                    agree: 0,
                    line: "Shape not judged".into(),
                }],
            },
        }
    }

    #[test]
    fn summary_and_report_render_without_the_samples() {
        let r = run_without_samples();
        let md = summary_md(&r);
        assert!(md.contains("## Source study vs this run"), "{md}");
        assert!(md.contains("| configuration"), "{md}");
        assert!(md.contains("820 ms") && md.contains("41 ms") && md.contains("0.05"));
        // max memory and instances show per configuration.
        assert!(md.contains("max memory MB") && md.contains("61"), "{md}");
        assert!(md.contains("SKIPPED f-ort: no engine"), "{md}");
        let page = html(&r);
        assert!(page.contains("Source study vs this run"));
        assert!(page.contains("<svg"), "charts come from the chart data");
        // results.json carries no per-request rows.
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("\"samples\""), "{json}");
    }

    #[test]
    fn invocations_are_written_compressed() {
        let dir = tempfile::tempdir().unwrap();
        write_all(dir.path(), &run_without_samples()).unwrap();
        let gz = std::fs::File::open(dir.path().join("invocations.csv.gz")).unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(gz), &mut text).unwrap();
        assert!(text.starts_with("scenario,group,function,"), "{text}");
        assert!(text.lines().next().unwrap().contains(",instance_id,"));
        assert!(!dir.path().join("invocations.csv").exists());
    }

    #[test]
    fn csv_and_html_escape() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(esc("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
