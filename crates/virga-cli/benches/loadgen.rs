//! Self-check of the lab's load generator against `wrk` on the same bare
//! axum "hello" server, in one run (`cargo bench -p virga-cli --bench loadgen`).
//!
//! - closed loop, 64 users / 64 connections, 5 s, 3 interleaved rounds:
//!   virga-lab req/s vs `wrk -t2 -c64` req/s (goal: >= 90%), both sending
//!   the same request (an Invoke API POST with a 2-byte JSON body);
//! - open loop at a fixed rate below saturation: virga-lab's p99 (counted
//!   from intended start times) vs `wrk` paced by a Lua `delay()` to the same
//!   rate (Debian's wrk has no `-R`; at a rate the server sustains, the
//!   wrk2 correction changes little, so the two p99s should agree within 20%).
//!
//! Needs `wrk` on PATH (Debian package `wrk`); without it only virga's side
//! is printed.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use virga_lab::load::{self, Job, Stop, Target};

const USERS: u32 = 64;
const SECONDS: u64 = 5;
const ROUNDS: usize = 3;

/// The server under test: its own runtime on its own thread, so client and
/// server share the host the way wrk and the server do.
fn start_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(|| async { "hello" });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wrk(args: &[String]) -> Option<String> {
    let out = Command::new("wrk").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wrk_rps(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// wrk's `--latency` distribution line for 99%, in ms.
fn wrk_p99(out: &str) -> Option<f64> {
    let l = out.lines().find(|l| l.trim_start().starts_with("99%"))?;
    let v = l.split_whitespace().nth(1)?;
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

fn main() {
    let addr = start_server();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    let job = Job {
        function: "hello".into(),
        body: Bytes::from_static(b"{}"),
    };
    let url = format!("http://{addr}/2015-03-31/functions/hello/invocations");
    let have_wrk = Command::new("wrk").arg("--version").output().is_ok();
    // wrk sends what the lab sends.
    let post = std::env::temp_dir().join(format!("virga-post-{}.lua", std::process::id()));
    std::fs::write(
        &post,
        "wrk.method = \"POST\"\nwrk.body = \"{}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .unwrap();
    println!("{}", host_line());
    println!("closed loop: {USERS} users, {SECONDS} s, {ROUNDS} interleaved rounds");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let samples = rt.block_on(load::closed_loop(
            &target,
            &job,
            USERS,
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_secs(SECONDS),
            &Stop::new(),
            || {},
        ));
        let rps = samples.iter().filter(|s| s.ok()).count() as f64 / SECONDS as f64;
        ours.push(rps);
        let w = if have_wrk {
            wrk(&[
                "-t2".into(),
                format!("-c{USERS}"),
                format!("-d{SECONDS}s"),
                "-s".into(),
                post.display().to_string(),
                url.clone(),
            ])
            .as_deref()
            .and_then(wrk_rps)
        } else {
            None
        };
        if let Some(w) = w {
            theirs.push(w);
        }
        println!(
            "  round {round}: virga-lab {rps:.0} req/s, wrk {}",
            w.map_or("-".into(), |w| format!("{w:.0} req/s"))
        );
    }
    let ours_m = median(ours);
    if theirs.is_empty() {
        let _ = std::fs::remove_file(&post);
        println!("virga-lab median {ours_m:.0} req/s (wrk not found: apt-get install wrk)");
        return;
    }
    let theirs_m = median(theirs);
    println!(
        "closed loop median: virga-lab {ours_m:.0} req/s, wrk {theirs_m:.0} req/s: {:.1}% of wrk (goal >= 90%)",
        100.0 * ours_m / theirs_m
    );

    // Open loop: a rate the server sustains easily on this host.
    let rate = 2000.0;
    let conns = 16u32;
    let schedule = load::arrivals(rate, Duration::from_secs(SECONDS), false, 1);
    let samples = rt.block_on(load::open_loop(
        &target,
        &job,
        schedule,
        conns,
        &Stop::new(),
        || {},
    ));
    let ms: Vec<f64> = samples
        .iter()
        .filter(|s| s.ok())
        .map(|s| s.client_ms)
        .collect();
    let ours_p99 = virga_lab::stats::summarize(&ms)
        .map(|s| s.p99)
        .unwrap_or(f64::NAN);
    // Each wrk connection waits `conns / rate` between requests.
    let script = std::env::temp_dir().join(format!("virga-pace-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = \"{{}}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nfunction delay() return {} end\n",
            (f64::from(conns) * 1000.0 / rate).round() as u64
        ),
    )
    .unwrap();
    let out = wrk(&[
        "-t2".into(),
        format!("-c{conns}"),
        format!("-d{SECONDS}s"),
        "--latency".into(),
        "-s".into(),
        script.display().to_string(),
        url,
    ]);
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&post);
    let theirs_p99 = out.as_deref().and_then(wrk_p99);
    let achieved = out.as_deref().and_then(wrk_rps);
    println!(
        "open loop at {rate} req/s over {conns} connections: virga-lab p99 {ours_p99:.3} ms (corrected), wrk paced p99 {} (achieved {} req/s){}",
        theirs_p99.map_or("-".into(), |v| format!("{v:.3} ms")),
        achieved.map_or("-".into(), |v| format!("{v:.0}")),
        theirs_p99.map_or(String::new(), |t| format!(
            ": ratio {:.2} (goal within 0.8..1.2)",
            ours_p99 / t
        ))
    );
}

fn host_line() -> String {
    format!(
        "host: {} cores, {}; build: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::consts::ARCH,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}
