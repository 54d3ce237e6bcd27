//! Platform overhead, side by side in one run on one client:
//!
//! - warm invoke of the no-op Rust runtime (`virga-worker`, handler `echo`)
//!   through the Invoke API, vs a bare axum "hello" server, at concurrency
//!   1, 8 and 64: requests/s and p50/p99, reported as ratios;
//! - cold start of the same runtime (spawn -> first `invocation/next`).
//!
//! Run with `cargo bench -p virga-cli --bench invoke` (a release build).
//! `VIRGA_BENCH_SECS` sets the seconds per measurement (default 3),
//! `VIRGA_BENCH_ROUNDS` the interleaved rounds (default 3; medians are kept).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;

use support::{closed_loop, env_num, median, Run};

async fn bare_axum() -> SocketAddr {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::post(|body: Bytes| async move { body }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

const PING: &[u8] = b"{\"ping\":1}";

fn main() {
    let secs = env_num("VIRGA_BENCH_SECS", 3.0);
    let rounds = env_num("VIRGA_BENCH_ROUNDS", 3.0) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (_data, platform) = support::platform(
            "noop",
            "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1769\nmax_concurrency = 64\nmax_queue = 1000\n",
        )
        .await;
        let bare = bare_axum().await;
        let client = support::http_client();
        let virga_uri = format!("http://{}/2015-03-31/functions/noop/invocations", platform.addr());
        let bare_uri = format!("http://{bare}/hello");

        println!(
            "{}; limits: {}",
            support::host_line(),
            if platform.limits_enforced() { "cgroups" } else { "none" }
        );
        println!("{secs} s per measurement, {rounds} interleaved rounds, medians\n");
        // Warm up: start the instances concurrency 64 needs.
        closed_loop(&client, &virga_uri, PING, 64, 1.0).await;
        closed_loop(&client, &bare_uri, PING, 64, 0.5).await;

        println!("{:<6} {:>12} {:>12} {:>8} {:>10} {:>10} {:>10} {:>10} {:>12}", "conc", "virga req/s", "bare req/s", "ratio", "virga p50", "bare p50", "virga p99", "bare p99", "p50 overhead");
        for conc in [1usize, 8, 64] {
            let mut v = Vec::new();
            let mut b = Vec::new();
            for _ in 0..rounds {
                v.push(closed_loop(&client, &virga_uri, PING, conc, secs).await);
                b.push(closed_loop(&client, &bare_uri, PING, conc, secs).await);
            }
            let errors: u64 = v.iter().chain(&b).map(|r| r.errors).sum();
            let m = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
            let (vr, br) = (m(&v, |r| r.rps), m(&b, |r| r.rps));
            let (v50, b50) = (m(&v, |r| r.p50_us), m(&b, |r| r.p50_us));
            let (v99, b99) = (m(&v, |r| r.p99_us), m(&b, |r| r.p99_us));
            println!(
                "{conc:<6} {vr:>12.0} {br:>12.0} {:>7.1}% {:>8.0}us {:>8.0}us {:>8.0}us {:>8.0}us {:>10.0}us{}",
                100.0 * vr / br,
                v50,
                b50,
                v99,
                b99,
                v50 - b50,
                if errors > 0 { format!("  ({errors} errors)") } else { String::new() }
            );
        }

        // Cold starts: stop the idle instances, invoke once, read init_ms back.
        let http = reqwest::Client::new();
        let base = format!("http://{}", platform.addr());
        let n = 30;
        for _ in 0..n {
            http.delete(format!("{base}/v1/functions/noop/instances")).send().await.unwrap();
            // Reaping is asynchronous: wait until the pool is empty.
            for _ in 0..200 {
                let v: serde_json::Value = http.get(format!("{base}/v1/functions/noop/instances")).send().await.unwrap().json().await.unwrap();
                if v["instances"].as_array().is_some_and(|a| a.is_empty()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let r = http.post(&virga_uri).body("{}").send().await.unwrap();
            assert!(r.status().is_success());
        }
        let recs: serde_json::Value = http
            .get(format!("{base}/v1/invocations?function=noop&limit={n}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let inits: Vec<f64> = recs["invocations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["init_ms"].as_f64())
            .collect();
        let cold = inits.len();
        let mut sorted = inits.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "\ncold start of the no-op Rust runtime (spawn -> first next), {cold} of {n} cold: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
            median(inits),
            sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)],
            sorted[sorted.len() - 1]
        );
        platform.shutdown().await;
    });
}
