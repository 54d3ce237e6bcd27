//! End-to-end: `virga cost` and `virga tune` against a real `virga serve`.

mod common;

use common::Server;
use serde_json::Value;

const NOOP: &str =
    "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1024\n";

#[tokio::test(flavor = "multi_thread")]
async fn cost_prices_recorded_invocations_from_their_records() {
    let s = Server::start(&[("noop", NOOP.to_string())]).await;
    for _ in 0..4 {
        assert_eq!(s.invoke("noop", "{}").await.0, 200);
    }
    let (code, out, err) = s.cli(&[
        "cost",
        "--format",
        "json",
        "--requests-per-month",
        "1000000",
        "--profile",
        "lambda-x86",
        "--profile",
        "fargate-x86",
        "--profile",
        "vm",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 3);
    let lambda = &v[0];
    assert_eq!(lambda["profile"], "lambda-x86");
    assert_eq!(lambda["requests"], 4);
    // The bill follows from the records: sum of billed ms x 1 GB.
    let recs = s.records(Some("noop")).await;
    let billed: f64 = recs.iter().map(|r| r["billed_ms"].as_f64().unwrap()).sum();
    let gb_s = lambda["bill"]["lines"][0]["quantity"].as_f64().unwrap();
    assert!((gb_s - billed / 1000.0).abs() < 1e-9, "{gb_s} vs {billed}");
    let total = lambda["bill"]["total_usd"].as_f64().unwrap();
    assert!((total - (gb_s * 0.0000166667 + 4.0 * 0.2e-6)).abs() < 1e-12);
    assert!(
        lambda["monthly"]["total_usd"].as_f64().unwrap() > 0.2,
        "1M requests cost at least the request price"
    );
    assert_eq!(v[1]["profile"], "fargate-x86");
    assert_eq!(v[2]["profile"], "vm");

    let (code, out, err) = s.cli(&["cost", "--explain", "--profile", "lambda-arm64"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("noop") && out.contains("GB-s") && out.contains("total: $"),
        "{out}"
    );

    let (code, _, err) = s.cli(&["cost", "--profile", "lambda-mars"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("lambda-x86"),
        "the error lists the known profiles: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tune_measures_each_memory_size_recommends_and_restores_the_function() {
    let s = Server::start(&[("noop", NOOP.to_string())]).await;
    let out_dir = s.dir.path().join("results");
    let (code, out, err) = s.cli(&[
        "tune",
        "noop",
        "--memory",
        "256,1024",
        "--invocations",
        "3",
        "--strategy",
        "cost",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recommended for Cost"), "{out}");
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("tune-noop.json")).unwrap())
            .unwrap();
    let points = result["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["memory_mb"], 256);
    assert_eq!(points[1]["memory_mb"], 1024);
    for p in points {
        assert_eq!(p["invocations"], 3);
        assert_eq!(p["errors"], 0);
    }
    assert!(result["recommended"].is_u64());
    let svg = std::fs::read_to_string(out_dir.join("tune-noop.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    assert!(out_dir.join("tune-noop.html").exists());
    // The function is back as it was.
    let f = s.get("/v1/functions/noop").await;
    assert_eq!(f["memory_mb"], 1024);
    // Records of the tuning runs carry the memory size they ran at.
    let recs = s.records(Some("noop")).await;
    assert!(recs.iter().any(|r| r["memory_mb"] == 256));
}

#[tokio::test(flavor = "multi_thread")]
async fn tune_shows_the_first_error_of_each_size_and_hints_at_the_payload() {
    let picky = common::manifest("picky", "[env]\nACTION = \"error\"");
    let s = Server::start(&[("picky", picky)]).await;
    let out_dir = s.dir.path().join("results");
    let (code, out, err) = s.cli(&[
        "tune",
        "picky",
        "--memory",
        "256,512",
        "--invocations",
        "2",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("2 errors; the first: ValueError: bad input")
            .count(),
        2,
        "{out}"
    );
    assert!(
        out.contains("no recommendation") && out.contains("--payload"),
        "{out}"
    );
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("tune-picky.json")).unwrap())
            .unwrap();
    assert_eq!(result["points"][0]["first_error"], "ValueError: bad input");
}
