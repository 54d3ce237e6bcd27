//! Asynchronous ingest, measured on the embedded platform:
//!
//! 1. sustained durable accepts: 64 closed-loop clients send
//!    `X-Amz-Invocation-Type: Event` to a no-op function; each 202 comes after
//!    the event is fsync'd (group commit). Reports accepts/s.
//! 2. delivery lag at a fixed open-loop rate of 50% of (1): the records'
//!    `queue_ms` (durable accept -> an instance takes the event), p50/p99.
//!
//! Run with `cargo bench -p virga-cli --bench events`.
//! `VIRGA_BENCH_SECS` sets the seconds of each phase (default 5).

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};

use support::HttpClient;

async fn send_event(client: &HttpClient, uri: &hyper::Uri) -> bool {
    let req = hyper::Request::post(uri.clone())
        .header("x-amz-invocation-type", "Event")
        .body(Full::new(Bytes::from_static(b"{\"ping\":1}")))
        .unwrap();
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 202;
            let _ = resp.into_body().collect().await;
            ok
        }
        Err(_) => false,
    }
}

/// Sends events at `target`/s for `secs` and prints the records' queue_ms percentiles.
async fn lag_at(client: &HttpClient, uri: &hyper::Uri, base: &str, target: f64, secs: f64) {
    // Let the backlog drain before measuring lag.
    let http = reqwest::Client::new();
    for _ in 0..1200 {
        let q: serde_json::Value = http
            .get(format!("{base}/v1/queues"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let busy = q["functions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["ready"] != 0 || f["in_flight"] != 0);
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: serde_json::Value = http
        .get(format!("{base}/v1/invocations?function=noop&limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last_id = before["invocations"][0]["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let period = Duration::from_secs_f64(1.0 / target);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let n = (target * secs) as usize;
    let mut sent = Vec::with_capacity(n);
    for _ in 0..n {
        ticks.tick().await;
        let (client, uri) = (client.clone(), uri.clone());
        sent.push(tokio::spawn(async move { send_event(&client, &uri).await }));
    }
    for s in sent {
        s.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recs: serde_json::Value = http
        .get(format!(
            "{base}/v1/invocations?function=noop&limit={}",
            n + 10
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let mut seen_last = last_id.is_empty();
    for r in recs["invocations"].as_array().unwrap() {
        if !seen_last {
            seen_last = r["request_id"] == last_id.as_str();
            continue;
        }
        if let Some(q) = r["queue_ms"].as_f64() {
            h.record((q * 1000.0).max(1.0) as u64).unwrap();
        }
    }
    println!(
            "delivery lag at {target:.0} events/s (open loop, {} delivered): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
}

fn main() {
    let secs: f64 = std::env::var("VIRGA_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (_data, platform) = support::platform(
            "noop",
            "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1769\nmax_concurrency = 8\n",
        )
        .await;
        let base = format!("http://{}", platform.addr());
        let uri: hyper::Uri = format!("{base}/2015-03-31/functions/noop/invocations").parse().unwrap();
        let client = support::http_client();
        println!("{}; data dir on the local disk", support::host_line());

        // Phase 1: closed-loop ingest.
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (client, uri) = (client.clone(), uri.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    if send_event(&client, &uri).await { ok += 1 } else { failed += 1 }
                }
                (ok, failed)
            }));
        }
        let (mut ok, mut failed) = (0, 0);
        for t in tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed += f;
        }
        let rate = ok as f64 / secs;
        println!("durable accepts: {rate:.0}/s with 64 clients ({ok} accepted, {failed} failed)");

        // Phase 2: delivery lag, open loop: at 2,500 events/s (half the
        // 5,000/s goal) and at half the rate just measured.
        for target in [2500.0, (rate / 2.0).max(1.0)] {
            lag_at(&client, &uri, &base, target, secs).await;
        }
        platform.shutdown().await;
    });
}
