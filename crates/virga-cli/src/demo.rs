//! `virga demo`: the embedded platform end to end, measured through the same
//! HTTP door a user uses.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use virga_lab::{table, Client};
use virga_spec::Runtime;

pub async fn run(functions: &Path, warm: usize, out: &Path) -> Result<()> {
    if !functions.is_dir() {
        anyhow::bail!(
            "{} is not a directory of function manifests: run from the repository root or pass --functions",
            functions.display()
        );
    }
    // The example model function needs its model: train it once.
    let model = functions.join("../models/iris-logistic.model");
    if functions.join("iris.toml").exists() && !model.exists() {
        let info = crate::models::train_model("logistic", "iris", None, &model)?;
        println!(
            "trained {} (accuracy {:.3})",
            model.display(),
            info.metrics.get("accuracy").copied().unwrap_or(0.0)
        );
    }
    let data = tempfile::tempdir().context("cannot create a temporary data dir")?;
    let mut config = virga_platform::PlatformConfig::new(
        "127.0.0.1:0".parse().expect("literal address"),
        data.path().to_path_buf(),
    );
    config.functions_dir = Some(functions.to_path_buf());
    config.builtin_runtime = Some(crate::serve::builtin_runtime());
    config.jailer = Some(crate::serve::jailer());
    let platform = virga_platform::Platform::start(config).await?;
    let endpoint = format!("http://{}", platform.addr());
    println!("virga demo: embedded platform listening on {endpoint}");
    let limits = if platform.limits_enforced() {
        "enforced with cgroups"
    } else {
        "NOT enforced (cgroups unavailable)"
    };
    println!(
        "host: {} cores; limits: {limits}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let client = Client::new(&endpoint);
    let result = measure(&client, warm).await;
    platform.shutdown().await;
    let rows = result?;
    let columns = [
        "function",
        "memory_mb",
        "vcpu",
        "cold_init_ms",
        "cold_total_ms",
        "warm_p50_ms",
        "warm_max_ms",
        "server_p50_ms",
    ];
    println!();
    print!("{}", table::text(&columns, &rows));
    println!("\n(cold_total and warm_* are client-side round trips; server_p50 is the instance's own duration)");
    write_report(out, &columns, &rows, warm, limits)?;
    Ok(())
}

async fn measure(client: &Client, warm: usize) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for f in client.functions().await? {
        let name = f.name.clone();
        println!("\n== {name} ({} MB, {:.2} vCPU)", f.memory_mb, f.vcpu);
        let payload = if f.runtime == Runtime::Model {
            serde_json::to_vec(
                &serde_json::json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
            )?
        } else {
            serde_json::to_vec(&serde_json::json!({"hello": "virga", "n": 1}))?
        };
        let t = Instant::now();
        let cold = client.invoke(&name, payload.clone()).await?;
        let cold_total = t.elapsed().as_secs_f64() * 1e3;
        if let Some(r) = cold.report_line() {
            println!("cold  {r}");
        }
        if cold.function_error.is_some() {
            anyhow::bail!("{name} failed: {}", String::from_utf8_lossy(&cold.body));
        }
        if f.runtime == Runtime::Model {
            println!("      -> {}", String::from_utf8_lossy(&cold.body));
        }
        let mut client_ms = Vec::with_capacity(warm);
        for i in 0..warm {
            let t = Instant::now();
            let out = client.invoke(&name, payload.clone()).await?;
            client_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if i < 3 || i + 1 == warm {
                if let Some(r) = out.report_line() {
                    println!("warm  {r}");
                }
            } else if i == 3 {
                println!("warm  ...");
            }
        }
        let recs = client.records(Some(&name), None, None).await?;
        let init = recs.iter().find(|r| r.cold).and_then(|r| r.init_ms);
        let mut server: Vec<f64> = recs
            .iter()
            .filter(|r| !r.cold)
            .map(|r| r.duration_ms)
            .collect();
        rows.push(vec![
            name,
            f.memory_mb.to_string(),
            format!("{:.2}", f.vcpu),
            init.map_or("-".into(), |v| format!("{v:.1}")),
            format!("{cold_total:.1}"),
            fmt_opt(median(&mut client_ms)),
            fmt_opt(client_ms.iter().cloned().reduce(f64::max)),
            fmt_opt(median(&mut server)),
        ]);
    }
    Ok(rows)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The demo's HTML report: what ran, on what, and what was measured.
fn write_report(
    out: &Path,
    columns: &[&str],
    rows: &[Vec<String>],
    warm: usize,
    limits: &str,
) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("demo.html");
    let head: String = columns
        .iter()
        .map(|c| format!("<th>{}</th>", esc(c)))
        .collect();
    let body: String = rows
        .iter()
        .map(|r| {
            format!(
                "<tr>{}</tr>",
                r.iter()
                    .map(|c| format!("<td>{}</td>", esc(c)))
                    .collect::<String>()
            )
        })
        .collect();
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>virga demo</title>\
         <body style=\"font-family:sans-serif;max-width:900px;margin:2em auto\">\
         <h1>virga demo</h1>\
         <p>Every example function invoked once cold and {warm} times warm through the Lambda Invoke API \
         of an embedded platform. Host: {cores} cores, {arch}, {build} build; instance limits {limits}; \
         virga {version}.</p>\
         <table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr>{head}</tr>{body}</table>\
         <p>cold_init_ms: spawn to the runtime's first <code>invocation/next</code> (from the record); \
         cold_total_ms and warm_*: client-side round trips; server_p50_ms: the instance's own duration.</p></body>",
        cores = std::thread::available_parallelism().map_or(1, |n| n.get()),
        arch = std::env::consts::ARCH,
        build = if cfg!(debug_assertions) { "debug" } else { "release" },
        version = env!("CARGO_PKG_VERSION"),
    );
    std::fs::write(&path, html).with_context(|| format!("cannot write {}", path.display()))?;
    println!("report: {}", path.display());
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.2}"))
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}
