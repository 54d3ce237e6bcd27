//! End-to-end: `virga sim` on a synthetic workload and on small files in
//! the Azure trace's format.

mod common;

use std::path::Path;

use serde_json::Value;

fn results(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("results.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A row of `invocations_per_function_md`: counts at the given minutes.
fn row(app: &str, function: &str, trigger: &str, at: &[(usize, u32)]) -> String {
    let mut minutes = vec!["0".to_string(); 1440];
    for &(m, c) in at {
        minutes[m] = c.to_string();
    }
    format!("owner,{app},{function},{trigger},{}", minutes.join(","))
}

fn header() -> String {
    let minutes: Vec<String> = (1..=1440).map(|m| m.to_string()).collect();
    format!(
        "HashOwner,HashApp,HashFunction,Trigger,{}",
        minutes.join(",")
    )
}

#[test]
fn sim_compares_the_policies_on_a_synthetic_day() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sim");
    let (code, stdout, stderr) = common::cli(&[
        "sim",
        "--synthetic",
        "200",
        "--days",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    for p in ["fixed:10m", "fixed:20m", "hybrid-histogram", "greedy-dual"] {
        assert!(stdout.contains(p), "{stdout}");
    }
    let r = results(&dir);
    assert_eq!(r["workload"]["functions"], 200);
    let invocations = r["workload"]["invocations"].as_u64().unwrap();
    assert!(invocations > 0);
    assert!(r["events_per_s"].as_f64().unwrap() > 0.0);
    assert!(r["elapsed_s"].as_f64().is_some());
    let policies = r["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 4);
    for p in policies {
        assert_eq!(p["invocations"].as_u64(), Some(invocations), "{p}");
        for q in ["p50", "p75", "p90", "p99"] {
            let v = p["cold_start_pct"][q].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v), "{q} = {v}");
            assert!(p["app_cold_start_pct"][q].as_f64().is_some());
        }
        assert!(p["cold_starts"].as_u64().unwrap() > 0);
        assert!(p["wasted_memory_gb_s"].as_f64().unwrap() >= 0.0);
        assert!(p["bill_usd"].as_f64().unwrap() > 0.0);
    }
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("| hybrid-histogram"), "{md}");
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "a CDF and the trade-off");
    assert!(html.contains("Per-app cold starts"));
}

#[test]
fn sim_replays_a_trace_and_reports_its_bad_rows_by_line() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    std::fs::create_dir(&trace).unwrap();
    // A timer every 10 minutes and an HTTP function twice in minute 30.
    let timer: Vec<(usize, u32)> = (0..144).map(|i| (i * 10, 1)).collect();
    let day = trace.join("invocations_per_function_md.anon.d01.csv");
    let write_day = |second: String| {
        let first = row("a", "tick", "timer", &timer);
        std::fs::write(&day, format!("{}\n{first}\n{second}\n", header())).unwrap();
    };
    write_day(row("b", "page", "http", &[(30, 2)]));
    let out = tmp.path().join("out");
    let args = |policy: &str| {
        vec![
            "sim".to_string(),
            "--trace".into(),
            trace.to_str().unwrap().into(),
            "--policy".into(),
            policy.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run = |policy: &str| {
        let a = args(policy);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        common::cli(&a)
    };
    let (code, _, stderr) = run("fixed:20m,fixed:5m,hybrid-histogram");
    assert_eq!(code, 0, "{stderr}");
    let r = results(&out);
    assert_eq!(r["workload"]["invocations"], 146);
    assert_eq!(r["workload"]["apps"], 2);
    let p = &r["policies"];
    // 20 minutes keeps the timer warm; 5 minutes never does.
    assert_eq!(p[0]["cold_starts"], 2);
    assert_eq!(p[1]["cold_starts"], 145);
    // The histogram learns the period and pre-warms.
    assert!(p[2]["prewarmed_starts"].as_u64().unwrap() > 100, "{}", p[2]);

    // A broken row: refused, with its file and line.
    let mut broken = row("c", "bad", "http", &[]);
    broken.push_str(",1");
    write_day(broken);
    let (code, _, stderr) = run("fixed:10m");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("invocations_per_function_md.anon.d01.csv:3: 1445 fields"),
        "{stderr}"
    );
}
