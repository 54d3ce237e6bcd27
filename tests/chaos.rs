//! A bounded chaos test: a seeded random mix of synchronous and asynchronous
//! invocations, callers hanging up at random moments, functions that crash,
//! hang past their timeout, run out of memory or answer garbage, plus
//! redeploys and deletes. Afterwards nothing is busy or queued, every
//! accepted request has its records, and no process, cgroup or descriptor is
//! left behind. Replay a failure with `VIRGA_CHAOS_SEED=<seed>`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, Server};
use serde_json::json;

/// At most this many requests, sent within this long.
const REQUESTS: usize = 600;
const TRAFFIC: Duration = Duration::from_secs(20);
const CALLERS: usize = 12;

#[derive(Default)]
struct Tally {
    /// Request ids of synchronous calls that got an answer (200).
    completed: HashSet<String>,
    throttled: usize,
    hung_up: usize,
    /// 404s (the function was deleted around the call) and 503s.
    refused: usize,
    /// Request ids of accepted asynchronous events, with their function.
    accepted: HashMap<String, String>,
}

fn event(rng: &mut Rng, function: &str) -> String {
    if function == "svc" {
        return json!({"id": rng.below(1000), "sleep": rng.below(200) as f64 / 1000.0}).to_string();
    }
    match rng.below(20) {
        0..=7 => json!({"action": "echo"}),
        8..=11 => json!({"action": "sleep", "seconds": rng.below(300) as f64 / 1000.0}),
        12..=13 if function == "flaky" => json!({"action": "crash"}),
        14 if function == "flaky" => json!({"action": "sleep", "seconds": 3}),
        15 if function == "flaky" => json!({"action": "alloc", "mb": 400}),
        16 if function == "flaky" => json!({"action": "garbage"}),
        _ => json!({"action": "error"}),
    }
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn chaos_leaves_the_platform_clean() {
    let seed = common::seed("VIRGA_CHAOS_SEED");
    eprintln!("chaos seed {seed} (replay with VIRGA_CHAOS_SEED={seed})");
    let all = common::chaos_functions();
    let s = Server::start(&all).await;
    let pid = s.pid();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    // The baseline: functions deployed, no instance yet, the test's own
    // connection open.
    s.get("/v1/functions").await;
    let fds_before = fds();

    let url = s.url("");
    let tally = Arc::new(Mutex::new(Tally::default()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let client = reqwest::Client::new();
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (tally, sent, url, client) =
                (tally.clone(), sent.clone(), url.clone(), client.clone());
            let all = all.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (c as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while started.elapsed() < TRAFFIC
                    && sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < REQUESTS
                {
                    let (name, text) = &all[rng.below(all.len() as u64) as usize];
                    let roll = rng.below(100);
                    if roll < 2 {
                        // Redeploy with a change, so a new revision takes over.
                        let text = format!("{text}\nenv = {{ CHAOS = \"{}\" }}\n", rng.next());
                        let _ = client
                            .put(format!("{url}/v1/functions/{name}"))
                            .body(text)
                            .send()
                            .await;
                        continue;
                    }
                    if roll < 3 && *name == "flaky" {
                        let _ = client
                            .delete(format!("{url}/v1/functions/flaky"))
                            .send()
                            .await;
                        tokio::time::sleep(Duration::from_millis(rng.below(100))).await;
                        let _ = client
                            .put(format!("{url}/v1/functions/flaky"))
                            .body(text.clone())
                            .send()
                            .await;
                        continue;
                    }
                    let payload = event(&mut rng, name);
                    let path = format!("{url}/2015-03-31/functions/{name}/invocations");
                    if roll < 28 {
                        let resp = client
                            .post(&path)
                            .header("x-amz-invocation-type", "Event")
                            .body(payload)
                            .send()
                            .await;
                        if let Ok(r) = resp {
                            if r.status() == 202 {
                                let id = r.headers()["x-amzn-requestid"]
                                    .to_str()
                                    .unwrap()
                                    .to_string();
                                tally.lock().unwrap().accepted.insert(id, name.to_string());
                            }
                        }
                        continue;
                    }
                    let mut req = client.post(&path).body(payload);
                    let hang_up = roll >= 70;
                    if hang_up {
                        req = req.timeout(Duration::from_millis(5 + rng.below(400)));
                    }
                    match req.send().await {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let id = r
                                .headers()
                                .get("x-amzn-requestid")
                                .map(|v| v.to_str().unwrap().to_string());
                            let body = r.bytes().await;
                            let mut t = tally.lock().unwrap();
                            match (status, id, body) {
                                (200, Some(id), Ok(_)) => {
                                    t.completed.insert(id);
                                }
                                (200, _, Err(_)) => t.hung_up += 1,
                                (429, _, _) => t.throttled += 1,
                                (404 | 503, _, _) => t.refused += 1,
                                (other, _, body) => panic!("seed {seed}: status {other}: {body:?}"),
                            }
                        }
                        Err(e) if e.is_timeout() => tally.lock().unwrap().hung_up += 1,
                        Err(e) => panic!("seed {seed}: {e}"),
                    }
                }
            })
        })
        .collect();
    for c in callers {
        c.await.unwrap();
    }
    drop(client);
    let t = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "chaos seed {seed}: {} answered, {} throttled, {} hung up, {} refused, {} async accepted",
        t.completed.len(),
        t.throttled,
        t.hung_up,
        t.refused,
        t.accepted.len()
    );

    // Quiet: nothing busy or queued, async events all delivered or
    // dead-lettered (their records stop changing).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = usize::MAX;
    let records = loop {
        let records = s.records(None).await;
        let mut settled = true;
        for (name, _) in &all {
            let info = s.get(&format!("/v1/functions/{name}")).await;
            let states = s.instance_states(name).await;
            if info["queued"].as_u64().unwrap_or(0) > 0 || states.iter().any(|x| x != "idle") {
                settled = false;
            }
        }
        let delivered = t.accepted.keys().all(|id| {
            records
                .iter()
                .any(|r| r["request_id"] == id.as_str() && r["status"] != "throttled")
        });
        if settled && delivered && records.len() == last {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the platform did not settle; log: {}",
            s.log()
        );
        last = records.len();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let async_ids: HashSet<&str> = t.accepted.keys().map(String::as_str).collect();
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    let mut sync_records: usize = 0;
    for r in &records {
        let id = r["request_id"].as_str().unwrap();
        if async_ids.contains(id) {
            assert_eq!(
                r["caller_gone"], false,
                "seed {seed}: deliveries have no caller"
            );
            if r["status"] != "throttled" {
                *per_id.entry(id).or_default() += 1;
            }
        } else if r["trigger"] == "http" {
            sync_records += 1;
            *per_id.entry(id).or_default() += 1;
        }
    }
    for id in &t.completed {
        assert_eq!(
            per_id.get(id.as_str()),
            Some(&1),
            "seed {seed}: answered request {id} has exactly one record"
        );
    }
    for (id, function) in &t.accepted {
        let attempts = per_id.get(id.as_str()).copied().unwrap_or(0);
        let most = if function == "flaky" { 2 } else { 3 };
        assert!(
            (1..=most).contains(&attempts),
            "seed {seed}: event {id} to {function} has {attempts} attempt records"
        );
    }
    for (id, n) in &per_id {
        if !async_ids.contains(id) {
            assert_eq!(
                *n, 1,
                "seed {seed}: synchronous request {id} recorded {n} times"
            );
        }
    }
    let unanswered = sync_records
        .checked_sub(t.completed.len() + t.throttled)
        .unwrap_or_else(|| panic!("seed {seed}: fewer records than answers"));
    assert!(
        unanswered <= t.hung_up + t.refused,
        "seed {seed}: {unanswered} records of unanswered calls, {} hung up, {} refused",
        t.hung_up,
        t.refused
    );

    // Nothing is left once the functions are gone.
    for (name, _) in &all {
        s.delete(name).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (children, cgroups) = common::leftovers(pid);
        let now = fds();
        if children == 0 && cgroups.is_empty() && now <= fds_before + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: left behind: {children} processes, cgroups {cgroups:?}, {now} fds (was {fds_before})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
