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

use std::time::Duration;

use support::{closed_loop, env_num, median, Run};

const PING: &[u8] = b"{\"ping\":1}";

const NOOP: &str = "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1769\nmax_concurrency = 64\nmax_queue = 1000\n";

/// One cold start on the platform at `addr`: stop its idle instances,
/// invoke once, and read the record's `init_ms`.
async fn cold_start(addr: std::net::SocketAddr) -> f64 {
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    http.delete(format!("{base}/v1/functions/noop/instances"))
        .send()
        .await
        .unwrap();
    // Reaping is asynchronous: wait until the pool is empty.
    for _ in 0..200 {
        let v: serde_json::Value = http
            .get(format!("{base}/v1/functions/noop/instances"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["instances"].as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = http
        .post(format!("{base}/2015-03-31/functions/noop/invocations"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(r.status().is_success());
    let recs: serde_json::Value = http
        .get(format!("{base}/v1/invocations?function=noop&limit=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    recs["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["request_id"] == id.as_str())
        .and_then(|r| r["init_ms"].as_f64())
        .expect("the invocation after a scale-to-zero is cold")
}

fn main() {
    let secs = env_num("VIRGA_BENCH_SECS", 3.0);
    let rounds = env_num("VIRGA_BENCH_ROUNDS", 3.0) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (_data, platform) = support::platform("noop", NOOP).await;
        let bare = support::bare_axum().await;
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

        // Cold starts, sandboxed and not, alternating in one run: stop the
        // idle instances, invoke once, read init_ms back.
        let (_plain_data, plain) = support::platform_with("noop", NOOP, |c| c.isolation = false).await;
        let sandboxed = platform.scheduler().isolation();
        let n = 30;
        let (mut jailed, mut bare_inits) = (Vec::new(), Vec::new());
        for _ in 0..n {
            jailed.push(cold_start(platform.addr()).await);
            bare_inits.push(cold_start(plain.addr()).await);
        }
        let p = |mut v: Vec<f64>, q: f64| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
        };
        println!(
            "\ncold start of the no-op Rust runtime (spawn -> first next), {n} each, alternating:\n  isolation {:<8} p50 {:.2} ms, p90 {:.2} ms\n  isolation {:<8} p50 {:.2} ms, p90 {:.2} ms\n  the sandbox adds {:.2} ms at p50",
            sandboxed.as_str(),
            p(jailed.clone(), 0.5),
            p(jailed.clone(), 0.9),
            "none",
            p(bare_inits.clone(), 0.5),
            p(bare_inits.clone(), 0.9),
            p(jailed, 0.5) - p(bare_inits, 0.5),
        );
        plain.shutdown().await;

        // Warm latency at c=1 with and without AWS Signature V4: the same
        // function behind `--auth none` (unsigned requests) and `--auth
        // sigv4` (every request signed by the client, verified by the gateway).
        let (signed_data, signed) = support::platform_with("noop", NOOP, |c| {
            c.auth = virga_platform::access::AuthMode::Sigv4;
        })
        .await;
        let key = virga_platform::access::KeyStore::new(&signed_data.path().join("data"))
            .create(
                "bench",
                virga_platform::access::Role::Admin,
                &[],
                virga_platform::access::KeyKind::Sigv4,
            )
            .unwrap();
        let virga_platform::access::NewKey::Sigv4 {
            access_key_id,
            secret_access_key,
            ..
        } = key
        else {
            unreachable!("a SigV4 key was asked for")
        };
        let signer = virga_sigv4::Signer::new(
            virga_sigv4::Credentials::new(&access_key_id, &secret_access_key, None),
            "us-east-1",
            "lambda",
        );
        let http = reqwest::Client::new();
        let unsigned_uri = format!("http://{}/2015-03-31/functions/noop/invocations", platform.addr());
        let signed_uri = format!("http://{}/2015-03-31/functions/noop/invocations", signed.addr());
        let (mut plain_us, mut signed_us) = (Vec::new(), Vec::new());
        for round in 0..(rounds * 400) {
            let t = std::time::Instant::now();
            let r = http.post(&unsigned_uri).body("{}").send().await.unwrap();
            assert!(r.status().is_success());
            let _ = r.bytes().await;
            let unsigned_took = t.elapsed();
            let t = std::time::Instant::now();
            let mut req = http.post(&signed_uri).body("{}").build().unwrap();
            signer.sign_reqwest(&mut req).unwrap();
            let r = http.execute(req).await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let _ = r.bytes().await;
            // The first of each is the cold start.
            if round > 0 {
                plain_us.push(unsigned_took.as_secs_f64() * 1e6);
                signed_us.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        let (pu, su) = (median(plain_us), median(signed_us));
        println!(
            "\nwarm invoke at c=1, p50 of {} each, alternating: --auth none unsigned {pu:.0} us, --auth sigv4 signed {su:.0} us ({:+.0} us: signing in the client plus verifying in the gateway)",
            rounds * 400 - 1,
            su - pu
        );
        signed.shutdown().await;
        platform.shutdown().await;
    });
}
