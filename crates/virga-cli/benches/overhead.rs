//! What one warm invocation costs the platform, measured from outside:
//! `virga serve` runs as a process of its own, the client (this bench) in
//! another, and a bare axum server in this process is measured in the same
//! run by the same client.
//!
//! - **Platform CPU per warm invocation** at concurrency 64: the CPU time
//!   (user + system, all threads) of the `virga serve` process over a run,
//!   divided by the requests it answered; likewise for its instances'
//!   processes (the runtime side). Two configurations of the no-op runtime
//!   (`virga worker`, handler `echo`, `memory_mb = 1769`, one vCPU per
//!   instance): `max_concurrency = 2` (one instance per core) and 64, on
//!   a platform with its default threads (half the host's cores, at least
//!   two), and the first again on a second platform process given
//!   `--threads 1`.
//! - **req/s against the bare server** at the same concurrency. The Lambda
//!   protocol costs three HTTP exchanges per invocation (the caller's, the
//!   runtime's `next` answer, its `response` POST), so about a third of a
//!   bare server's rate is the protocol's own bound on one host.
//! - **The official runtime client**: the same no-op built with AWS's
//!   `lambda_runtime` crate (`bench/peers/lambda-noop/`, built on first use
//!   into `target/peers/lambda-noop`), `max_concurrency = 2`. It does not
//!   pipeline its answer with its next poll, so each invocation is three
//!   exchanges where `virga worker`'s is two; both are reported.
//! - **At concurrency 1**: the platform's own share of each invocation, the
//!   client's latency minus the record's `duration_ms` (dispatch to the
//!   runtime's response, which contains the runtime), and the total
//!   overhead, virga's p50 minus the bare server's. Measured from two
//!   clients: hyper's pooled client, whose own task hops count in its
//!   latency, and a blocking client on a thread of its own (as wrk is),
//!   from which the goals are read.
//!
//! Run with `cargo bench -p virga-cli --bench overhead` (a release build).
//! `VIRGA_BENCH_SECS` sets the seconds per measurement (default 5),
//! `VIRGA_BENCH_ROUNDS` the interleaved rounds (default 3; medians are
//! kept). The server logs at `virga serve`'s default level (`info`) unless
//! `RUST_LOG` says otherwise.

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use support::{closed_loop, env_num, median};

const PING: &[u8] = b"{\"ping\":1}";
const CONCURRENCY: usize = 64;

/// The no-op function's manifest: `program` (`virga-worker`, or the
/// official client's peer by path) answers each event with itself.
fn noop(name: &str, program: &str, max_concurrency: u32) -> String {
    // A JSON string is a TOML basic string.
    let program = serde_json::to_string(program).unwrap();
    format!(
        "name = \"{name}\"\nruntime = \"command\"\ncommand = [{program}]\nhandler = \"echo\"\n\
         memory_mb = 1769\ntimeout_ms = 3000\nmax_concurrency = {max_concurrency}\nmax_queue = 1000\n\
         keep_alive_ms = 600000\n"
    )
}

/// Builds the `lambda_runtime` peer (a no-op, fetched dependencies pinned by
/// its lock file) into target/peers/lambda-noop; its program.
fn official_noop() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = root.join("target/peers/lambda-noop");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("(building the official-runtime no-op into target/peers/lambda-noop)");
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(root.join("bench/peers/lambda-noop/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "bench/peers/lambda-noop did not build: {status}"
    );
    let program = target.join("release/lambda-noop").canonicalize().unwrap();
    program.to_str().expect("a UTF-8 path").to_string()
}

/// CPU seconds (user + system, every thread) process `pid` has used.
fn cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After "(comm)": utime and stime are the 12th and 13th fields.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_s()
}

fn clock_ticks_per_s() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf runs");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    })
}

/// Every process below `pid` (its instances, their sandbox helpers).
fn descendants(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for c in common::children(p) {
            all.push(c);
            frontier.push(c);
        }
    }
    all
}

struct Measured {
    rps: f64,
    platform_us: f64,
    runtimes_us: f64,
    errors: u64,
}

/// A closed loop at `CONCURRENCY` against `uri` on the server `pid`, with
/// the CPU its process and its instances' processes used meanwhile.
async fn measure(client: &support::HttpClient, uri: &str, pid: u32, secs: f64) -> Measured {
    let kids = descendants(pid);
    let kids_cpu = |k: &[u32]| k.iter().map(|&p| cpu_s(p)).sum::<f64>();
    let (p0, k0) = (cpu_s(pid), kids_cpu(&kids));
    let run = closed_loop(client, uri, PING, CONCURRENCY, secs).await;
    let (p1, k1) = (cpu_s(pid), kids_cpu(&kids));
    let n = run.rps * secs;
    Measured {
        rps: run.rps,
        platform_us: (p1 - p0) / n * 1e6,
        runtimes_us: (k1 - k0) / n * 1e6,
        errors: run.errors,
    }
}

/// `n` sequential invocations: the client's latency of each, keyed by the
/// request id the platform answered with.
async fn sequential(client: &support::HttpClient, uri: &str, n: usize) -> Vec<(String, f64)> {
    let uri: hyper::Uri = uri.parse().unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = hyper::Request::post(uri.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(PING)))
            .unwrap();
        let t = Instant::now();
        let resp = client.request(req).await.unwrap();
        assert!(resp.status().is_success());
        let id = resp.headers()["x-amzn-requestid"]
            .to_str()
            .unwrap()
            .to_string();
        let _ = resp.into_body().collect().await;
        out.push((id, t.elapsed().as_secs_f64() * 1e6));
    }
    out
}

fn main() {
    let secs = env_num("VIRGA_BENCH_SECS", 5.0);
    let rounds = env_num("VIRGA_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    // The server's log level is the CLI's default unless asked for.
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let official_program = official_noop();
    rt.block_on(async move {
        let s = common::Server::start_with(
            &common::virga_bin(),
            &[("RUST_LOG", &level)],
            // As in the lab: 64 instances of 1769 MB exceed a 24 GiB
            // host's budget.
            &["--max-memory-mb", "200000000"],
            &[
                ("noop2", noop("noop2", "virga-worker", 2)),
                ("noop64", noop("noop64", "virga-worker", 64)),
                ("official2", noop("official2", &official_program, 2)),
            ],
        )
        .await;
        let pid = s.pid();
        // The same function on a platform given one thread (the default
        // is half the host's cores, at least two): what threads cost.
        let s2 = common::Server::start_with(
            &common::virga_bin(),
            &[("RUST_LOG", &level)],
            &["--max-memory-mb", "200000000", "--threads", "1"],
            &[("noop2", noop("noop2", "virga-worker", 2))],
        )
        .await;
        let bare = support::bare_axum().await;
        let client = support::http_client();
        let uri = |f: &str| s.url(&format!("/2015-03-31/functions/{f}/invocations"));
        let bare_uri = format!("http://{bare}/hello");

        println!("{}", support::host_line());
        println!(
            "`virga serve` (its own process, log level {level}) vs a bare axum server, one client; \
             {secs} s per measurement, {rounds} interleaved rounds, medians\n"
        );
        let uri2 = s2.url("/2015-03-31/functions/noop2/invocations");
        // Warm up: every instance started, every connection open.
        for f in ["noop2", "noop64", "official2"] {
            closed_loop(&client, &uri(f), PING, CONCURRENCY, 1.5).await;
        }
        closed_loop(&client, &uri2, PING, CONCURRENCY, 1.5).await;
        closed_loop(&client, &bare_uri, PING, CONCURRENCY, 0.5).await;

        let (mut two, mut many, mut bare_rps) = (Vec::new(), Vec::new(), Vec::new());
        let (mut threads1, mut official2) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            two.push(measure(&client, &uri("noop2"), pid, secs).await);
            many.push(measure(&client, &uri("noop64"), pid, secs).await);
            official2.push(measure(&client, &uri("official2"), pid, secs).await);
            threads1.push(measure(&client, &uri2, s2.pid(), secs).await);
            bare_rps.push(closed_loop(&client, &bare_uri, PING, CONCURRENCY, secs).await.rps);
        }
        let bare_rps = median(bare_rps);
        println!(
            "{:<38} {:>9} {:>9} {:>16} {:>16} {:>7}",
            "concurrency 64", "req/s", "vs bare", "platform CPU/inv", "runtime CPU/inv", "errors"
        );
        println!("platform threads: `virga serve`'s default unless said");
        for (name, runs) in [
            ("noop, max_concurrency 2", &two),
            ("noop, max_concurrency 64", &many),
            ("noop, max_concurrency 2, --threads 1", &threads1),
            ("lambda_runtime noop, max_concurrency 2", &official2),
        ] {
            let m = |f: fn(&Measured) -> f64| median(runs.iter().map(f).collect());
            println!(
                "{name:<38} {:>9.0} {:>8.1}% {:>14.1}us {:>14.1}us {:>7}",
                m(|r| r.rps),
                100.0 * m(|r| r.rps) / bare_rps,
                m(|r| r.platform_us),
                m(|r| r.runtimes_us),
                runs.iter().map(|r| r.errors).sum::<u64>()
            );
        }
        println!("{:<38} {bare_rps:>9.0}", "bare axum");
        let platform_us = median(two.iter().map(|r| r.platform_us).collect());
        let official_us = median(official2.iter().map(|r| r.platform_us).collect());
        println!(
            "platform CPU per warm invocation (max_concurrency 2): {platform_us:.1} us with `virga worker`, \
             {official_us:.1} us with `lambda_runtime` (goal <= 50 us: {}, {})",
            if platform_us <= 50.0 { "met" } else { "NOT met" },
            if official_us <= 50.0 { "met" } else { "NOT met" },
        );

        // Concurrency 1: the platform's share and the total overhead, from
        // two clients. hyper's pooled client hands each request to its
        // connection's task and the answer back, two task hops in the
        // client that its latency, and so the share, include; a blocking
        // client on a thread of its own, as wrk is, measures the servers
        // with the least of the client in between. The goals are read
        // from the second.
        let n = 400 * rounds;
        let per_round = n / rounds;
        // Rows of the table: which platform and function, from which client.
        let rows = [
            (&s, "noop2", false),
            (&s, "noop2", true),
            (&s2, "noop2", true),
            (&s, "official2", true),
        ];
        let mut c1: Vec<C1> = rows.iter().map(|_| C1::default()).collect();
        for _ in 0..rounds {
            for (row, &(server, function, blocking)) in rows.iter().enumerate() {
                let uri = server.url(&format!("/2015-03-31/functions/{function}/invocations"));
                let calls = if blocking {
                    tokio::task::spawn_blocking(move || sequential_blocking(&uri, per_round, true))
                        .await
                        .unwrap()
                } else {
                    sequential(&client, &uri, per_round).await
                };
                let records = server
                    .get(&format!("/v1/invocations?function={function}&limit={}", per_round + 10))
                    .await;
                let duration: std::collections::HashMap<&str, f64> = records["invocations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["request_id"].as_str().unwrap(), r["duration_ms"].as_f64().unwrap()))
                    .collect();
                for (id, us) in &calls {
                    c1[row].share.push(us - duration[id.as_str()] * 1e3);
                    c1[row].virga.push(*us);
                }
            }
            // The bare server, from each client once.
            c1[0].bare.extend(sequential_bare(&client, &bare_uri, per_round).await);
            let uri = bare_uri.clone();
            let bare = tokio::task::spawn_blocking(move || sequential_blocking(&uri, per_round, false))
                .await
                .unwrap();
            c1[1].bare.extend(bare.into_iter().map(|(_, us)| us));
        }
        let c1: Vec<[f64; 3]> = c1
            .into_iter()
            .map(|c| [median(c.virga), if c.bare.is_empty() { f64::NAN } else { median(c.bare) }, median(c.share)])
            .collect();
        println!(
            "\nconcurrency 1, {n} invocations, p50 in us   {:>7} {:>7} {:>7} {:>9}",
            "virga", "bare", "share", "overhead"
        );
        for (name, [v, b, sh]) in [
            ("hyper's pooled client", c1[0]),
            ("a blocking client (ureq, one thread)", c1[1]),
            ("  the same, platform with --threads 1", c1[2]),
            ("  the same, `lambda_runtime` no-op", c1[3]),
        ] {
            println!("{name:<42} {v:>7.0} {b:>7.0} {sh:>7.0} {:>9.0}", v - b);
        }
        // The share's goal is read with the official client's runtime (the
        // platform's work differs: three exchanges), the total overhead's
        // with `virga worker`.
        let [v50, b50, own_share] = c1[1];
        let share = c1[3][2];
        println!(
            "the platform's share (client latency - record duration_ms), p50: {share:.0} us with `lambda_runtime`, \
             {own_share:.0} us with `virga worker` (goal <= 100 us: {})\n\
             total overhead with `virga worker` (virga p50 - bare p50): {:.0} us (goal <= 250 us: {})",
            if share <= 100.0 { "met" } else { "NOT met" },
            v50 - b50,
            if v50 - b50 <= 250.0 { "met" } else { "NOT met" },
        );
    });
}

/// Latencies at concurrency 1 from one client, microseconds.
#[derive(Default)]
struct C1 {
    virga: Vec<f64>,
    bare: Vec<f64>,
    share: Vec<f64>,
}

/// `n` sequential POSTs of `PING` from a blocking client on the calling
/// thread (one keep-alive connection): the client's latency of each, keyed
/// by the request id the platform answered with when `ids`.
fn sequential_blocking(uri: &str, n: usize, ids: bool) -> Vec<(String, f64)> {
    let agent = ureq::AgentBuilder::new().max_idle_connections(1).build();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = agent
            .post(uri)
            .set("content-type", "application/json")
            .send_bytes(PING)
            .unwrap();
        let id = if ids {
            resp.header("x-amzn-requestid").unwrap().to_string()
        } else {
            String::new()
        };
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).unwrap();
        out.push((id, t.elapsed().as_secs_f64() * 1e6));
    }
    out
}

async fn sequential_bare(client: &support::HttpClient, uri: &str, n: usize) -> Vec<f64> {
    let uri: hyper::Uri = uri.parse().unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let req = hyper::Request::post(uri.clone())
            .body(Full::new(Bytes::from_static(PING)))
            .unwrap();
        let t = Instant::now();
        let resp = client.request(req).await.unwrap();
        let _ = resp.into_body().collect().await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}
