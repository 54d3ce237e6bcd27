//! Soak: minutes of mixed load against a real `virga serve` process, with
//! its resources read from /proc before and after. The goal is flat: after
//! the load stops and the platform settles, the same RSS, descriptors and
//! threads as before, and no instance process or cgroup left behind.
//!
//! The load, from this process (the platform is a process of its own, so
//! what /proc says about it is its own): synchronous invokes of a no-op Rust
//! runtime (whose latency is the one that should stay flat) and of a Python
//! runtime, asynchronous (`Event`) invokes, callers that hang up
//! mid-invocation, a service-mode function, and a function that crashes,
//! hangs past its timeout, runs out of memory, answers garbage or fails
//! (`tests/runtimes/behave.py`); meanwhile functions are redeployed every
//! few seconds and one is deleted and deployed again.
//!
//! "Before" and "after" are taken in the same state: every function
//! deployed and warmed once, instances stopped (scale to zero), then
//! `SETTLE` of quiet so idle runtime threads have gone. The load runs in
//! two halves with the same reading between them ("middle"): bounded
//! structures that the first half fills (each function's log ring,
//! SQLite's page cache, the allocator's partly used pages) make the first
//! half grow, while a leak grows with the load and shows in both halves.
//! A leak is memory the platform still holds, so the second half is judged
//! by the live heap the binary's allocator counts (`virga_heap_live_bytes`),
//! not by RSS, which also holds the pages the allocator keeps for reuse.
//!
//! Run with `cargo bench -p virga-cli --bench soak` (a release build; 10
//! minutes). `VIRGA_SOAK_SECS` sets the seconds of load (default 600),
//! `VIRGA_SOAK_CALLERS` the concurrent callers (default 12),
//! `VIRGA_SOAK_SEED` the seed of the mix (default: the clock; printed).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use common::{Rng, Server};
use support::env_num;

/// Quiet before each measurement of the platform: longer than the 10 s a
/// tokio blocking thread lingers idle.
const SETTLE: Duration = Duration::from_secs(12);
/// Pause of a caller between two requests, at most (uniform): the soak is
/// about time under load, not about saturating the host.
const THINK_MS: u64 = 20;
/// Every this long one function is redeployed with a changed manifest.
const REDEPLOY_EVERY: Duration = Duration::from_secs(5);
/// Every this long `churn` is deleted and deployed again.
const DELETE_EVERY: Duration = Duration::from_secs(15);

/// The chaos test's functions, plus the no-op Rust runtime twice: `echo`,
/// whose latency is watched, and `churn`, deleted and deployed again.
fn functions() -> Vec<(&'static str, String)> {
    let echo = |name: &str| {
        format!("name = \"{name}\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 128\nmax_concurrency = 4\nmax_queue = 100\ntimeout_ms = 3000\n")
    };
    let mut all = vec![("echo", echo("echo")), ("churn", echo("churn"))];
    for (name, mut text) in common::chaos_functions() {
        if name == "svc" {
            // Short autoscaler windows: with the default 60 s one, a task
            // stopped by scale-to-zero comes back while the window still
            // remembers the load, and "after" would count it.
            text.push_str("[scaling]\nstable_window_ms = 2000\nscale_down_delay_ms = 2000\n");
        }
        all.push((name, text));
    }
    all
}

/// What `flaky` is asked to do: mostly misbehave.
fn chaos_event(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => json!({"action": "crash"}),
        1 => json!({"action": "sleep", "seconds": 3}),
        2 => json!({"action": "alloc", "mb": 400}),
        3 => json!({"action": "garbage"}),
        4 => json!({"action": "error"}),
        _ => json!({"action": "echo"}),
    }
    .to_string()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// Counts of one sampling window (and, merged, of the whole run).
struct Tally {
    sent: u64,
    /// Synchronous calls answered 200 (function errors included).
    answered: u64,
    function_errors: u64,
    async_accepted: u64,
    throttled: u64,
    /// 404 (the function was being redeployed or deleted) and 503.
    refused: u64,
    /// Callers that hung up on purpose before the answer.
    hung_up: u64,
    /// Anything else: a 5xx, a connection error, an answer that never came.
    errors: u64,
    /// Latency of answered calls to the no-op runtime, microseconds.
    echo: Histogram<u64>,
    /// Latency of every answered synchronous call, microseconds.
    all: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            sent: 0,
            answered: 0,
            function_errors: 0,
            async_accepted: 0,
            throttled: 0,
            refused: 0,
            hung_up: 0,
            errors: 0,
            echo: histogram(),
            all: histogram(),
        }
    }

    fn add(&mut self, o: &Tally) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.function_errors += o.function_errors;
        self.async_accepted += o.async_accepted;
        self.throttled += o.throttled;
        self.refused += o.refused;
        self.hung_up += o.hung_up;
        self.errors += o.errors;
        self.echo.add(&o.echo).unwrap();
        self.all.add(&o.all).unwrap();
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        f64::NAN
    } else {
        h.value_at_quantile(q) as f64 / 1e3
    }
}

/// What /proc says about the platform process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kb: u64,
    /// Of which anonymous memory (heap, stacks) and mapped files (the
    /// binary's pages as they are first run, SQLite's shared memory).
    anon_kb: u64,
    file_kb: u64,
    fds: usize,
    threads: u64,
    instances: usize,
    cgroups: usize,
    /// Function revisions the platform holds (`virga_function_revisions`),
    /// read when scaled to zero; retired ones kept would be a leak.
    revisions: usize,
    /// Of `anon_kb`, what sits in mappings of 1 GiB or more: mimalloc
    /// reserves its arenas so, which makes this the Rust heap; the rest is
    /// glibc's heaps (SQLite), thread stacks and the like.
    arena_kb: u64,
    /// Of `arena_kb`, what the platform has allocated and not freed
    /// (`virga_heap_live_bytes`); the rest is pages the allocator keeps.
    /// A leak grows this one. Read only when scaled to zero.
    live_kb: u64,
    /// Bytes of text the functions' log rings hold (bounded: 2,000 lines
    /// in 512 KB each): part of `arena_kb`. Both are read only when
    /// scaled to zero.
    log_kb: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (instances, cgroups) = common::leftovers(pid);
    Usage {
        rss_kb: field("VmRSS:"),
        anon_kb: field("RssAnon:"),
        file_kb: field("RssFile:") + field("RssShmem:"),
        fds: common::fds(pid),
        threads: field("Threads:"),
        instances,
        cgroups: cgroups.len(),
        revisions: 0,
        log_kb: 0,
        arena_kb: 0,
        live_kb: 0,
    }
}

/// One row of the before / middle / after table: a reading's figure.
type Read = fn(&Usage) -> f64;

/// Anonymous memory in mappings of at least 1 GiB (`/proc/PID/smaps`).
fn arena_kb(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut big, mut total) = (false, 0);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((a, b)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let size =
                u64::from_str_radix(b, 16).unwrap_or(0) - u64::from_str_radix(a, 16).unwrap_or(0);
            big = size >= 1 << 30;
        } else if first == "Anonymous:" && big {
            total += words
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// One caller: a seeded mix of requests until `until`.
async fn caller(
    client: reqwest::Client,
    base: String,
    mut rng: Rng,
    until: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.below(THINK_MS + 1))).await;
        let roll = rng.below(100);
        // Shares of the mix, in percent: 50 no-op sync, 15 async (a tenth
        // of it chaos), 5 chaos sync, 10 hang-ups, 10 service, 5 Python
        // sync, 5 to the function that is deleted now and then. `flaky`
        // gets a small share: each of its misbehaviours costs a cold start,
        // so it drains about one event a second, and a larger share of
        // async events only grows its backlog for the whole run.
        let (function, payload, event, hang_up) = match roll {
            0..=49 => ("echo", json!({"n": roll}).to_string(), false, None),
            50..=64 => {
                let f = match rng.below(10) {
                    0 => "flaky",
                    1..=4 => "ok",
                    _ => "echo",
                };
                let p = if f == "flaky" {
                    chaos_event(&mut rng)
                } else {
                    json!({"action": "echo"}).to_string()
                };
                (f, p, true, None)
            }
            65..=69 => ("flaky", chaos_event(&mut rng), false, None),
            70..=79 => {
                let secs = rng.below(500) as f64 / 1e3;
                let after = Duration::from_millis(5 + rng.below(400));
                let p = json!({"action": "sleep", "seconds": secs}).to_string();
                ("ok", p, false, Some(after))
            }
            80..=89 => {
                let p = json!({"id": roll, "sleep": rng.below(200) as f64 / 1e3});
                ("svc", p.to_string(), false, None)
            }
            90..=94 => ("ok", json!({"action": "echo"}).to_string(), false, None),
            _ => ("churn", json!({"n": roll}).to_string(), false, None),
        };
        let mut req = client
            .post(format!(
                "{base}/2015-03-31/functions/{function}/invocations"
            ))
            .body(payload);
        if event {
            req = req.header("x-amz-invocation-type", "Event");
        }
        // A bound for every call, so a lost answer is counted, not waited
        // for forever; a hang-up is a much shorter one.
        req = req.timeout(hang_up.unwrap_or(Duration::from_secs(30)));
        let t = Instant::now();
        let outcome = match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let failed = r.headers().contains_key("x-amz-function-error");
                let body = r.bytes().await;
                Ok((status, failed, body.is_ok()))
            }
            Err(e) => Err(e.is_timeout()),
        };
        let us = t.elapsed().as_micros().max(1) as u64;
        let mut t = tally.lock().unwrap();
        t.sent += 1;
        match outcome {
            Ok((202, _, _)) if event => t.async_accepted += 1,
            Ok((200, failed, true)) if !event => {
                t.answered += 1;
                t.function_errors += failed as u64;
                t.all.record(us).unwrap();
                if function == "echo" {
                    t.echo.record(us).unwrap();
                }
            }
            Ok((429, _, _)) => t.throttled += 1,
            Ok((404 | 503, _, _)) => t.refused += 1,
            Ok((200, _, false)) | Err(true) if hang_up.is_some() => t.hung_up += 1,
            _ => t.errors += 1,
        }
    }
}

/// Redeploys a function (rotating) every `REDEPLOY_EVERY` and deletes and
/// redeploys `churn` every `DELETE_EVERY`, until `until`: (redeploys,
/// deletes, failures).
async fn operator(s: &Server, until: Instant) -> (u64, u64, u64) {
    let all = functions();
    let (mut redeploys, mut deletes, mut failures) = (0u64, 0u64, 0u64);
    let mut next_delete = Instant::now() + DELETE_EVERY;
    let mut i = 0usize;
    loop {
        tokio::time::sleep(REDEPLOY_EVERY).await;
        if Instant::now() >= until {
            return (redeploys, deletes, failures);
        }
        let (name, text) = &all[i % all.len()];
        i += 1;
        // A changed manifest, so a new revision takes over; the line goes
        // after the first (top-level keys come before any `[table]`).
        let text = text.replacen('\n', &format!("\nenv = {{ SOAK = \"{i}\" }}\n"), 1);
        let ok = s
            .http
            .put(s.url(&format!("/v1/functions/{name}")))
            .body(text)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        redeploys += 1;
        failures += !ok as u64;
        if Instant::now() >= next_delete {
            next_delete += DELETE_EVERY;
            let (_, churn) = &all[1];
            let gone = s
                .http
                .delete(s.url("/v1/functions/churn"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let back = s
                .http
                .put(s.url("/v1/functions/churn"))
                .body(churn.clone())
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            deletes += 1;
            failures += !(gone && back) as u64;
        }
    }
}

/// Asynchronous events not yet delivered (ready, in flight or delayed), per
/// function, from `/metrics`.
async fn async_backlog(s: &Server) -> Vec<(String, f64)> {
    let text = match s.http.get(s.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return vec![("?".into(), f64::NAN)],
    };
    let mut per: Vec<(String, f64)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("virga_async_events{"))
    {
        let function = line
            .split("function=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        match per.iter_mut().find(|(f, _)| f == function) {
            Some((_, sum)) => *sum += n,
            None => per.push((function.to_string(), n)),
        }
    }
    per.retain(|(_, n)| *n != 0.0);
    per
}

async fn backlog_total(s: &Server) -> f64 {
    async_backlog(s).await.iter().map(|(_, n)| n).sum()
}

/// Waits (at most `limit`) until nothing is busy, starting or queued and no
/// asynchronous event is pending: how long it took, or None.
async fn quiet(s: &Server, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let mut idle = backlog_total(s).await == 0.0;
        for (name, _) in functions() {
            let info = s.get(&format!("/v1/functions/{name}")).await;
            idle &= info["queued"].as_u64().unwrap_or(0) == 0;
            idle &= s.instance_states(name).await.iter().all(|x| x == "idle");
        }
        if idle {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Stops every instance (scale to zero), waits until none is left (at most
/// 30 s), lets the platform sit for `SETTLE`, then reads its usage.
async fn scale_to_zero_and_read(s: &Server) -> Usage {
    for (name, _) in functions() {
        let _ = s
            .http
            .delete(s.url(&format!("/v1/functions/{name}/instances")))
            .send()
            .await;
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let (children, cgroups) = common::leftovers(s.pid());
        if children == 0 && cgroups.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let metrics = match s.http.get(s.url("/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let mut log_bytes = 0;
    for (name, _) in functions() {
        let logs = s
            .get(&format!("/v1/functions/{name}/logs?lines=100000"))
            .await;
        log_bytes += logs["lines"].as_array().map_or(0, |l| {
            l.iter()
                .map(|x| x.as_str().map_or(0, str::len) + 1)
                .sum::<usize>()
        });
    }
    Usage {
        log_kb: log_bytes as u64 / 1024,
        arena_kb: arena_kb(s.pid()),
        // Unread counts as a leak: the verdict must not pass blind.
        live_kb: common::gauge(&metrics, "virga_heap_live_bytes")
            .map_or(u64::MAX, |v| v as u64 / 1024),
        revisions: common::gauge(&metrics, "virga_function_revisions")
            .map_or(usize::MAX, |v| v as usize),
        ..usage(s.pid())
    }
}

/// What is left after scaling to zero: the processes, the cgroup
/// directories and what the API still lists.
async fn explain_leftovers(s: &Server) {
    println!("\nleft behind:");
    for child in common::children(s.pid()) {
        let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        println!("  process {child}: {}", cmdline.trim());
    }
    for cgroup in common::leftovers(s.pid()).1 {
        println!("  cgroup {cgroup}");
    }
    for (name, _) in functions() {
        let listed = s.get(&format!("/v1/functions/{name}/instances")).await;
        if listed["instances"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            println!("  {name}: {}", listed["instances"]);
        }
    }
}

/// One half of the load: `secs` of callers and operator, windows printed
/// from `offset` seconds on, then quiet (the async backlog drained) and a
/// reading scaled to zero.
struct Half {
    total: Tally,
    windows: Vec<(f64, f64)>,
    ops: (u64, u64, u64),
    backlog: Vec<(String, f64)>,
    settled: Option<Duration>,
    usage: Usage,
}

async fn half(s: &Server, secs: f64, callers: usize, seed: u64, offset: f64) -> Half {
    let pid = s.pid();
    let base = s.url("");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(secs);
    let window = Arc::new(Mutex::new(Tally::new()));
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            tokio::spawn(caller(
                client.clone(),
                base.clone(),
                rng,
                until,
                window.clone(),
            ))
        })
        .collect();

    // Samples while the load runs: about 10 windows a half.
    let every = Duration::from_secs_f64((secs / 10.0).max(5.0));
    let mut total = Tally::new();
    let mut windows: Vec<(f64, f64)> = Vec::new();
    let monitor = async {
        while Instant::now() < until {
            tokio::time::sleep(every.min(until.saturating_duration_since(Instant::now()))).await;
            let w = std::mem::replace(&mut *window.lock().unwrap(), Tally::new());
            let u = usage(pid);
            let backlog = backlog_total(s).await;
            println!(
                "{:>5.0} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>6.2}ms {:>5.1}ms {:>7} {:>8.1} {:>5} {:>5} {:>5}",
                offset + started.elapsed().as_secs_f64(),
                w.sent,
                w.answered,
                w.async_accepted,
                w.throttled,
                w.refused,
                w.hung_up,
                w.errors,
                ms(&w.echo, 0.5),
                ms(&w.echo, 0.99),
                backlog,
                u.rss_kb as f64 / 1024.0,
                u.fds,
                u.threads,
                u.instances
            );
            windows.push((ms(&w.echo, 0.5), ms(&w.echo, 0.99)));
            total.add(&w);
        }
    };
    let (ops, ()) = tokio::join!(operator(s, until), monitor);
    for t in tasks {
        t.await.unwrap();
    }
    total.add(&window.lock().unwrap());
    drop(client);
    let backlog = async_backlog(s).await;
    let settled = quiet(s, Duration::from_secs(300)).await;
    let usage = scale_to_zero_and_read(s).await;
    Half {
        total,
        windows,
        ops,
        backlog,
        settled,
        usage,
    }
}

fn main() {
    let secs = env_num("VIRGA_SOAK_SECS", 600.0).max(2.0);
    let callers = env_num("VIRGA_SOAK_CALLERS", 12.0).max(1.0) as usize;
    let seed = common::seed("VIRGA_SOAK_SEED");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = Server::start(&functions()).await;
        let pid = s.pid();
        println!("{}; platform: `virga serve` (pid {pid})", support::host_line());
        println!(
            "{secs} s of mixed load from {callers} callers in two halves, seed {seed} (VIRGA_SOAK_SEED); functions: {}",
            functions().iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
        );

        // Warm every path once, so lazily made state is in the baseline.
        for (name, _) in functions() {
            let _ = s.invoke(name, "{\"action\": \"echo\"}").await;
            let _ = s.handle().invoke_event(name, "{\"action\": \"echo\"}").await;
        }
        quiet(&s, Duration::from_secs(30)).await;
        let before = scale_to_zero_and_read(&s).await;

        println!(
            "\n{:>5} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>7} {:>7} {:>7} {:>8} {:>5} {:>5} {:>5}",
            "t s", "sent", "answ", "async", "429", "404", "hung", "err", "echo50", "echo99", "backlog", "RSS MB", "fds", "thr", "inst"
        );
        // The load runs in two equal halves, each followed by the same
        // reading as "before". What the first half leaves is partly
        // bounded structures filling up (log rings, SQLite's cache, the
        // allocator's pages); a leak grows with the load, so it shows
        // again in the second half, while a fill does not.
        let first = half(&s, secs / 2.0, callers, seed, 0.0).await;
        println!(
            "  -- first half done: settled {}, then scaled to zero and read --",
            first.settled.map_or("NOT within 300 s".into(), |d| format!("{:.1} s after", d.as_secs_f64()))
        );
        let second = half(&s, secs / 2.0, callers, seed.rotate_left(17) ^ 0x5eed, secs / 2.0).await;
        let (middle, after) = (first.usage, second.usage);

        let mut total = Tally::new();
        total.add(&first.total);
        total.add(&second.total);
        let (redeploys, deletes, failed_ops) = (
            first.ops.0 + second.ops.0,
            first.ops.1 + second.ops.1,
            first.ops.2 + second.ops.2,
        );
        println!(
            "\nrequests: {} sent, {} answered ({} function errors), {} async accepted, {} throttled, {} refused (404/503), {} hung up on purpose, {} errors",
            total.sent,
            total.answered,
            total.function_errors,
            total.async_accepted,
            total.throttled,
            total.refused,
            total.hung_up,
            total.errors
        );
        println!(
            "operations: {redeploys} redeploys, {deletes} delete + deploy of churn, {failed_ops} failed"
        );
        println!(
            "latency of answered synchronous calls: echo p50 {:.2} ms, p99 {:.1} ms; all (chaos included) p50 {:.2} ms, p99 {:.1} ms",
            ms(&total.echo, 0.5),
            ms(&total.echo, 0.99),
            ms(&total.all, 0.5),
            ms(&total.all, 0.99)
        );
        if let (Some(first), Some(last)) = (first.windows.first(), second.windows.last()) {
            println!(
                "echo latency, first window -> last: p50 {:.2} -> {:.2} ms, p99 {:.1} -> {:.1} ms",
                first.0, last.0, first.1, last.1
            );
        }
        for (which, h) in [("first", &first), ("second", &second)] {
            if !h.backlog.is_empty() {
                let per: Vec<String> = h.backlog.iter().map(|(f, n)| format!("{f} {n}")).collect();
                println!("async backlog when the {which} half stopped: {}", per.join(", "));
            }
        }
        match second.settled {
            Some(d) => println!("settled {:.1} s after the load stopped", d.as_secs_f64()),
            None => println!("NOT settled 300 s after the load stopped"),
        }
        println!(
            "\nplatform, scaled to zero and {} s quiet (goal: flat)",
            SETTLE.as_secs()
        );
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>12} {:>12}",
            "", "before", "middle", "after", "first half", "second half"
        );
        let rows: [(&str, Read); 11] = [
            ("RSS MB", |u: &Usage| u.rss_kb as f64 / 1024.0),
            ("  anonymous MB", |u: &Usage| u.anon_kb as f64 / 1024.0),
            ("    Rust heap MB", |u: &Usage| u.arena_kb as f64 / 1024.0),
            ("      live MB", |u: &Usage| u.live_kb as f64 / 1024.0),
            ("        log rings MB", |u: &Usage| u.log_kb as f64 / 1024.0),
            ("  file-backed MB", |u: &Usage| u.file_kb as f64 / 1024.0),
            ("open fds", |u: &Usage| u.fds as f64),
            ("threads", |u: &Usage| u.threads as f64),
            ("instance processes", |u: &Usage| u.instances as f64),
            ("cgroup dirs", |u: &Usage| u.cgroups as f64),
            ("function revisions", |u: &Usage| u.revisions as f64),
        ];
        for (what, f) in rows {
            let (b, m, a) = (f(&before), f(&middle), f(&after));
            println!(
                "{what:<20} {b:>10.1} {m:>10.1} {a:>10.1} {:>+12.1} {:>+12.1}",
                m - b,
                a - m
            );
        }
        // A leak grows with the load, so the second half would grow about
        // as much as the first. Slack for what a busy minute legitimately
        // leaves: an idle connection or two, a cache still filling (0.5 MB
        // of live heap). Pages the allocator keeps are not a leak (they
        // creep up for a long while: +1.2 MB of anonymous memory over a
        // second half whose live heap grew 0.07 MB), so anonymous memory
        // is only bounded through RSS.
        let flat = |from: &Usage, to: &Usage| {
            to.instances == 0
                && to.cgroups == 0
                && to.revisions <= functions().len()
                && to.fds <= from.fds + 2
                && to.threads <= from.threads + 2
        };
        let flat = flat(&before, &middle)
            && flat(&middle, &after)
            && after.rss_kb as f64 <= before.rss_kb as f64 * 1.5 + 8192.0
            // Unread in the middle (u64::MAX) has no bound, so it fails too.
            && middle.live_kb.checked_add(512).is_some_and(|bound| after.live_kb <= bound);
        println!(
            "verdict: {} (no instance or cgroup left, one revision per function, fds and threads within +2 per half, RSS within 1.5x + 8 MB, live heap within +0.5 MB over the second half)",
            if flat && first.settled.is_some() && second.settled.is_some() { "flat" } else { "NOT flat" }
        );
        if after.instances > 0 || after.cgroups > 0 {
            explain_leftovers(&s).await;
        }
    });
}
