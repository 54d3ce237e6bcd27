//! End-to-end: invocations survive their callers. At every synchronous door
//! a caller hangs up mid-invocation; the invocation still runs to its end,
//! is recorded with `caller_gone`, and its instance goes back to its pool,
//! so the next invocations succeed. Caller-less deliveries get faults
//! injected instead (crash, timeout, redeploy, delete, SIGTERM).

mod common;

use std::time::Duration;

use common::{manifest, runtimes_dir, Server};
use serde_json::{json, Value};

const HANG_UP: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_secs(15);

fn sleep_event(seconds: f64) -> String {
    json!({"action": "sleep", "seconds": seconds}).to_string()
}

fn gone(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["caller_gone"] == true)
        .collect()
}

/// A manifest running tests/runtimes/service.py.
fn service_manifest(name: &str, extra: &str) -> String {
    let script = runtimes_dir().join("service.py");
    format!(
        "name = \"{name}\"\ncommand = [\"python3\", \"{}\"]\ntimeout_ms = 10000\n{extra}\n",
        script.display()
    )
}

/// Then `n` invocations in a row succeed.
async fn next_ones_succeed(s: &Server, name: &str, n: usize) {
    for i in 0..n {
        let (status, headers, body) = s.invoke(name, &json!({"id": i}).to_string()).await;
        assert_eq!(status, 200, "invocation {i} after the hang-up: {body}");
        assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_hangs_up_does_not_wedge_the_function() {
    let s = Server::start(&[(
        "one",
        manifest("one", "max_concurrency = 1\ntimeout_ms = 5000"),
    )])
    .await;
    let h = s.handle();
    assert!(
        h.invoke_and_hang_up("one", &sleep_event(1.0), HANG_UP)
            .await
    );
    // The next ones queue behind the abandoned one and then run.
    next_ones_succeed(&s, "one", 3).await;
    s.settled("one", SETTLE).await;
    let records = s.records_until("one", SETTLE, |r| r.len() >= 4).await;
    assert_eq!(records.len(), 4, "every invocation leaves one record");
    let gone = gone(&records);
    assert_eq!(gone.len(), 1, "{records:#?}");
    assert_eq!(gone[0]["status"], "success", "it ran to its end");
    assert!(gone[0]["duration_ms"].as_f64().unwrap() >= 900.0);
    assert_eq!(s.instance_states("one").await, ["idle"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_up_on_a_tail_request_and_while_queued() {
    let s = Server::start(&[(
        "one",
        manifest(
            "one",
            "max_concurrency = 1\ntimeout_ms = 5000\nmax_queue = 10",
        ),
    )])
    .await;
    let h = s.handle();
    // The instance is busy for a second with a caller that waits.
    let busy = {
        let h = h.clone();
        tokio::spawn(async move { h.invoke("one", &sleep_event(1.0)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // This one waits in the queue and its caller leaves there.
    let tail = reqwest::Client::builder().timeout(HANG_UP).build().unwrap();
    let hung_up = tail
        .post(s.url("/2015-03-31/functions/one/invocations"))
        .header("x-amz-log-type", "Tail")
        .body(sleep_event(0.1))
        .send()
        .await
        .is_err();
    assert!(hung_up);
    assert_eq!(busy.await.unwrap().0, 200);
    next_ones_succeed(&s, "one", 2).await;
    s.settled("one", SETTLE).await;
    let records = s.records_until("one", SETTLE, |r| r.len() >= 4).await;
    assert_eq!(records.len(), 4, "{records:#?}");
    let gone = gone(&records);
    assert_eq!(gone.len(), 1, "{records:#?}");
    assert_eq!(gone[0]["status"], "error");
    assert_eq!(gone[0]["error_type"], "ClientClosed");
    assert_eq!(gone[0]["batch_size"], 0, "it never reached an instance");
    let info = s.get("/v1/functions/one").await;
    assert_eq!(info["queued"], 0);
    assert_eq!(info["busy"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_up_during_a_cold_start_lets_the_start_finish_and_run() {
    let s = Server::start(&[
        (
            "slow",
            manifest(
                "slow",
                "max_concurrency = 1\ntimeout_ms = 5000\nenv = { INIT_SLEEP = \"1\" }",
            ),
        ),
        (
            "stuck",
            manifest(
                "stuck",
                "max_concurrency = 1\ntimeout_ms = 5000\nenv = { INIT_SLEEP = \"60\" }",
            ),
        ),
    ])
    .await;
    let h = s.handle();
    assert!(h.invoke_and_hang_up("slow", "{}", HANG_UP).await);
    assert!(h.invoke_and_hang_up("stuck", "{}", HANG_UP).await);
    let records = s.records_until("slow", SETTLE, |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["cold"], true);
    assert_eq!(records[0]["status"], "success");
    assert_eq!(records[0]["caller_gone"], true);
    assert!(records[0]["init_ms"].as_f64().unwrap() >= 900.0);
    next_ones_succeed(&s, "slow", 2).await;
    assert_eq!(s.instance_states("slow").await, ["idle"]);
    // The 10 s init limit holds without a caller.
    let records = s.records_until("stuck", SETTLE, |r| !r.is_empty()).await;
    assert_eq!(records.len(), 1, "{}", s.log());
    assert_eq!(records[0]["status"], "timeout");
    assert_eq!(records[0]["error_type"], "Sandbox.Timedout");
    assert_eq!(records[0]["caller_gone"], true);
    // The record is written as the kill is sent; the process goes after.
    assert!(
        common::eventually(5, || async { s.instance_states("stuck").await.is_empty() }).await,
        "{:?}",
        s.instance_states("stuck").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_member_whose_caller_left_is_still_answered_and_recorded() {
    let s = Server::start(&[(
        "b",
        service_manifest(
            "b",
            "max_concurrency = 1\nmax_queue = 16\n[batching]\nmax_batch_size = 4\nmax_delay_ms = 100\nbatch_payload = true",
        ),
    )])
    .await;
    let h = s.handle();
    // Warm first: a caller that leaves during the cold start leaves while
    // still queued, which is the ClientClosed case, not this one.
    next_ones_succeed(&s, "b", 1).await;
    // A blocker holds the one slot for 1 s while three requests pile up:
    // they leave together as one batch once it ends, and run for 2 s.
    let blocker = {
        let h = h.clone();
        tokio::spawn(async move {
            h.invoke("b", &json!({"id": 8, "sleep": 1}).to_string())
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stay: Vec<_> = (0..2)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                h.invoke("b", &json!({"id": i, "sleep": 2}).to_string())
                    .await
            })
        })
        .collect();
    // Leaves about 1 s into the batch's 2 s.
    let left = h
        .invoke_and_hang_up(
            "b",
            &json!({"id": 9, "sleep": 2}).to_string(),
            Duration::from_millis(1950),
        )
        .await;
    assert!(left);
    for c in stay.into_iter().chain([blocker]) {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    next_ones_succeed(&s, "b", 2).await;
    s.settled("b", SETTLE).await;
    let records = s.records_until("b", SETTLE, |r| r.len() >= 7).await;
    assert_eq!(records.len(), 7, "{records:#?}");
    let gone = gone(&records);
    assert_eq!(gone.len(), 1, "{records:#?}");
    assert_eq!(gone[0]["status"], "success", "{records:#?}");
    assert_eq!(gone[0]["batch_size"], 3, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_keeps_its_other_requests_when_callers_leave() {
    let s = Server::start(&[(
        "svc",
        service_manifest(
            "svc",
            "mode = \"service\"\ncpu = 1\nmemory_mb = 512\ninstance_concurrency = 2\nmax_instances = 1\nmax_queue = 16",
        ),
    )])
    .await;
    let h = s.handle();
    let stay = {
        let h = h.clone();
        tokio::spawn(async move {
            h.invoke("svc", &json!({"id": "stay", "sleep": 1}).to_string())
                .await
        })
    };
    // Four callers that leave: one in flight beside `stay`, three queued.
    let leavers: Vec<_> = (0..4)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                h.invoke_and_hang_up("svc", &json!({"id": i, "sleep": 1}).to_string(), HANG_UP)
                    .await
            })
        })
        .collect();
    for l in leavers {
        assert!(l.await.unwrap());
    }
    let (status, _, body) = stay.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], "stay");
    next_ones_succeed(&s, "svc", 4).await;
    s.settled("svc", SETTLE).await;
    let records = s.records_until("svc", SETTLE, |r| r.len() >= 9).await;
    assert_eq!(records.len(), 9, "{records:#?}");
    let gone = gone(&records);
    assert_eq!(gone.len(), 4, "{records:#?}");
    assert!(gone.iter().any(|r| r["status"] == "success"));
    assert!(gone.iter().any(|r| r["error_type"] == "ClientClosed"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_to_its_end_and_its_task_stops() {
    let s = Server::start(&[(
        "job",
        manifest(
            "job",
            "mode = \"job\"\ncpu = 1\nmemory_mb = 512\nmax_concurrency = 1\ntimeout_ms = 5000",
        ),
    )])
    .await;
    assert!(
        s.handle()
            .invoke_and_hang_up("job", &sleep_event(1.0), HANG_UP)
            .await
    );
    next_ones_succeed(&s, "job", 2).await;
    let records = s.records_until("job", SETTLE, |r| r.len() >= 3).await;
    assert_eq!(records.len(), 3);
    assert_eq!(gone(&records).len(), 1);
    assert_eq!(gone(&records)[0]["status"], "success");
    let deadline = std::time::Instant::now() + SETTLE;
    while !s.instance_states("job").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "job tasks stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kserve_v2_callers_that_leave_at_any_moment() {
    let s = Server::start(&[]).await;
    let model = common::iris_model(&s);
    s.deploy(
        "iris",
        &format!(
            "name = \"iris\"\nruntime = \"model\"\nmemory_mb = 1769\nmax_concurrency = 1\nmax_queue = 64\n[model]\ntask = \"tabular-classification\"\nengine = \"classical\"\npath = \"{}\"\n",
            model
        ),
    )
    .await;
    let infer = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}).to_string();
    // Thirty callers that hang up after 1 to 30 ms, during the cold start,
    // in the queue or mid-inference: wherever they are, they leave.
    let h = s.handle();
    let leavers: Vec<_> = (1..=30u64)
        .map(|ms| {
            let (h, infer) = (h.clone(), infer.clone());
            tokio::spawn(async move {
                h.hang_up("/v2/models/iris/infer", &infer, Duration::from_millis(ms))
                    .await
            })
        })
        .collect();
    let mut left = 0;
    for l in leavers {
        left += usize::from(l.await.unwrap());
    }
    assert!(left > 0, "some callers left before their answer");
    s.settled("iris", SETTLE).await;
    let records = s.records(Some("iris")).await;
    assert!(records.len() <= 30, "{records:#?}");
    assert!(
        !gone(&records).is_empty(),
        "callers that left are recorded as gone: {records:#?}"
    );
    for r in gone(&records) {
        assert!(
            r["status"] == "success" || r["error_type"] == "ClientClosed",
            "a call whose caller left ran to its end or left the queue: {r}"
        );
    }
    for _ in 0..3 {
        let resp = s
            .http
            .post(s.url("/v2/models/iris/infer"))
            .body(infer.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    s.settled("iris", SETTLE).await;
    assert_eq!(s.instance_states("iris").await, ["idle"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unbounded_functions_leave_nothing_behind_after_callers_leave() {
    let s = Server::start(&[(
        "wide",
        manifest(
            "wide",
            "max_concurrency = 0\nmemory_mb = 128\ntimeout_ms = 5000\nkeep_alive_ms = 1500",
        ),
    )])
    .await;
    // A baseline with one warm instance come and gone.
    next_ones_succeed(&s, "wide", 1).await;
    let fds = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let deadline = std::time::Instant::now() + SETTLE;
    while !s.instance_states("wide").await.is_empty() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = fds(s.pid());
    let h = s.handle();
    let leavers: Vec<_> = (0..20)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                h.invoke_and_hang_up("wide", &sleep_event(0.5), HANG_UP)
                    .await
            })
        })
        .collect();
    for l in leavers {
        assert!(l.await.unwrap());
    }
    let records = s.records_until("wide", SETTLE, |r| r.len() >= 21).await;
    assert_eq!(records.len(), 21);
    assert_eq!(gone(&records).len(), 20);
    // Keep-alive reaps them all: no process, cgroup or descriptor is left.
    let deadline = std::time::Instant::now() + SETTLE;
    while !s.instance_states("wide").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "instances are reaped: {:?}",
            s.instance_states("wide").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (children, cgroups) = common::leftovers(s.pid());
    assert_eq!(children, 0, "no instance process is left");
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    // Descriptors back to where they were (a little slack for the
    // connections of this test's own client).
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let now = fds(s.pid());
        if now <= before + 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "descriptors: {before} before, {now} after"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn async_deliveries_survive_crashes_timeouts_redeploys_and_deletes() {
    let slow = manifest(
        "slow",
        "max_concurrency = 1\ntimeout_ms = 800\nmax_retries = 1\nretry_delay_ms = 100",
    );
    let mut s = Server::start(&[("slow", slow.clone())]).await;
    let h = s.handle();
    // A crash and a timeout are retried once, then dead-lettered.
    for ev in [
        json!({"action": "crash"}),
        json!({"action": "sleep", "seconds": 3}),
    ] {
        assert_eq!(h.invoke_event("slow", &ev.to_string()).await.0, 202);
    }
    let records = s.records_until("slow", SETTLE, |r| r.len() >= 4).await;
    assert_eq!(records.len(), 4, "two attempts each: {records:#?}");
    assert!(records.iter().all(|r| r["caller_gone"] == false));
    s.settled("slow", SETTLE).await;
    // A redeploy while one runs and one waits: the running one finishes on
    // the old version, the waiting one runs on the new.
    for _ in 0..2 {
        assert_eq!(h.invoke_event("slow", &sleep_event(0.5)).await.0, 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.deploy("slow", &format!("{slow}\nenv = {{ V = \"2\" }}"))
        .await;
    let records = s.records_until("slow", SETTLE, |r| r.len() >= 6).await;
    assert_eq!(records.len(), 6, "{records:#?}");
    let versions: Vec<&str> = records[4..]
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert!(
        versions.contains(&"1") && versions.contains(&"2"),
        "{versions:?}"
    );
    assert!(records[4..].iter().all(|r| r["status"] == "success"));
    s.settled("slow", SETTLE).await;
    // SIGTERM mid-delivery: the platform lets it finish within its grace,
    // records it, and the event is not delivered again after the restart.
    assert_eq!(h.invoke_event("slow", &sleep_event(0.5)).await.0, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.restart().await;
    let records = s.records_until("slow", SETTLE, |r| r.len() >= 7).await;
    assert_eq!(records.len(), 7, "{records:#?}");
    assert_eq!(records[6]["status"], "success", "{}", s.log());
    assert!(
        common::throughout(Duration::from_millis(800), || async {
            s.records(Some("slow")).await.len() == 7
        })
        .await,
        "not delivered twice"
    );
    // A delete while one runs and one waits: the running one finishes, the
    // waiting one is dead-lettered as ResourceNotFoundException.
    let h = s.handle();
    for _ in 0..2 {
        assert_eq!(h.invoke_event("slow", &sleep_event(0.5)).await.0, 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.delete("slow").await;
    let records = s.records_until("slow", SETTLE, |r| r.len() >= 9).await;
    assert_eq!(records.len(), 9, "{records:#?}");
    assert_eq!(records[7]["status"], "success");
    assert_eq!(records[8]["error_type"], "ResourceNotFoundException");
}
