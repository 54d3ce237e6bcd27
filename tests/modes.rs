//! End-to-end: service mode (tasks serving several requests at once), job
//! mode (one fresh task per event) and adaptive batching.

mod common;

use std::time::Duration;

use common::{runtimes_dir, Server};
use serde_json::{json, Value};

/// A manifest running tests/runtimes/service.py, with `extra` lines appended.
fn manifest(name: &str, extra: &str) -> String {
    let script = runtimes_dir().join("service.py");
    format!(
        "name = \"{name}\"\ncommand = [\"python3\", \"{}\"]\ntimeout_ms = 10000\n{extra}\n",
        script.display()
    )
}

async fn instances(s: &Server, name: &str) -> Vec<Value> {
    s.get(&format!("/v1/functions/{name}/instances")).await["instances"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_task_serves_several_requests_at_once() {
    let s = Server::start(&[(
        "svc",
        manifest(
            "svc",
            "mode = \"service\"\ncpu = 1\nmemory_mb = 512\ninstance_concurrency = 4\nmax_instances = 1",
        ),
    )])
    .await;
    // Four callers that each wait until four invocations are in flight at
    // once: only a task serving them concurrently can answer "met".
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let h = s.handle();
            tokio::spawn(async move {
                h.invoke("svc", &json!({"meet": 4, "id": i}).to_string())
                    .await
            })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], i);
        assert_eq!(v["met"], true, "four requests in flight at once: {body}");
        assert_eq!(v["threads"], 4, "AWS_LAMBDA_MAX_CONCURRENCY is set");
    }
    let mut tasks: Vec<Value> = s
        .records(Some("svc"))
        .await
        .iter()
        .map(|r| r["instance_id"].clone())
        .collect();
    tasks.dedup();
    assert_eq!(tasks.len(), 1, "one task served them all");
    assert_eq!(instances(&s, "svc").await.len(), 1);

    let recs = s.records(Some("svc")).await;
    assert_eq!(recs.len(), 4);
    for r in &recs {
        assert_eq!(r["mode"], "service");
        assert_eq!(r["status"], "success");
        assert_eq!(r["vcpu"], 1.0);
        assert_eq!(
            r["billed_ms"], 0,
            "a service is billed per task second, not per request"
        );
        assert!(r["task_started_at"].is_string());
        assert_eq!(r["instance_id"], recs[0]["instance_id"]);
    }
    let f = s.get("/v1/functions/svc").await;
    assert_eq!(f["mode"], "service");
    assert_eq!(f["instance_concurrency"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_a_minimum_starts_its_tasks_and_keeps_them() {
    let s = Server::start(&[(
        "svc-min",
        manifest(
            "svc-min",
            "mode = \"service\"\ncpu = 0.5\ninstance_concurrency = 2\nmin_instances = 2\nmax_instances = 3\n[scaling]\nstable_window_ms = 1000\nscale_down_delay_ms = 0",
        ),
    )])
    .await;
    let mut ready = 0;
    for _ in 0..100 {
        ready = instances(&s, "svc-min")
            .await
            .iter()
            .filter(|i| i["state"] == "idle")
            .count();
        if ready == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 2, "min_instances tasks start at deploy");
    let (status, _, _) = s.invoke("svc-min", "{\"id\": 1}").await;
    assert_eq!(status, 200);
    assert_eq!(s.records(Some("svc-min")).await[0]["cold"], false);
    // Idle for several windows: never below the minimum.
    assert!(
        common::throughout(Duration::from_millis(1500), || async {
            instances(&s, "svc-min").await.len() == 2
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn job_mode_starts_one_task_per_event_and_none_remain() {
    let s = Server::start(&[(
        "job",
        manifest("job", "mode = \"job\"\ncpu = 0.25\nmax_concurrency = 2"),
    )])
    .await;
    for i in 0..3 {
        let (status, _, body) = s.invoke("job", &json!({"id": i}).to_string()).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["id"], i);
    }
    // Instance ids, not pids: a sandboxed runtime is pid 2 in its namespace.
    let mut ids: Vec<String> = s
        .records(Some("job"))
        .await
        .iter()
        .map(|r| r["instance_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every event gets a fresh task");
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = instances(&s, "job").await.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "no task remains after its event");
    let recs = s.records(Some("job")).await;
    assert_eq!(recs.len(), 3);
    let mut ids: Vec<&str> = recs
        .iter()
        .map(|r| r["instance_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    for r in &recs {
        assert_eq!(r["mode"], "job");
        assert_eq!(r["cold"], true, "every job invocation is a cold start");
        assert_eq!(
            r["billed_ms"], 60_000,
            "per second with a one-minute minimum"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn batching_gathers_waiting_callers_and_each_gets_its_own_answer() {
    let s = Server::start(&[(
        "batched",
        manifest(
            "batched",
            "max_concurrency = 1\n[batching]\nmax_batch_size = 4\nmax_delay_ms = 20\nbatch_payload = true",
        ),
    )])
    .await;
    let n = 16;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let h = s.handle();
            let event = if i == 7 {
                json!({"id": i, "fail": true})
            } else {
                json!({"id": i})
            };
            tokio::spawn(async move { h.invoke("batched", &event.to_string()).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let (status, headers, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if i == 7 {
            assert!(headers.get("x-amz-function-error").is_some(), "{body}");
            assert_eq!(v["errorType"], "ItemFailed");
            continue;
        }
        assert!(headers.get("x-amz-function-error").is_none(), "{body}");
        assert_eq!(v["id"], i, "each caller gets its own answer");
        let size = v["batch_size"].as_u64().unwrap();
        assert!((1..=4).contains(&size), "{body}");
    }
    let recs = s.records(Some("batched")).await;
    assert_eq!(recs.len(), n);
    let sizes: Vec<u64> = recs
        .iter()
        .map(|r| r["batch_size"].as_u64().unwrap())
        .collect();
    assert!(sizes.iter().all(|&b| (1..=4).contains(&b)), "{sizes:?}");
    assert!(
        sizes.iter().any(|&b| b > 1),
        "callers waiting behind one busy instance ride together: {sizes:?}"
    );
    let ok = recs.iter().filter(|r| r["status"] == "success").count();
    assert_eq!(ok, n - 1);
    // A lone request at low load goes alone, unwrapped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = s.invoke("batched", "{\"id\": 99}").await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], 99);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_runtime_gets_batches_only_when_it_opts_in() {
    let s = Server::start(&[]).await;
    let path = s.dir.path().join("no-opt-in.toml");
    std::fs::write(
        &path,
        manifest("no-opt-in", "[batching]\nmax_batch_size = 4"),
    )
    .unwrap();
    let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("batch_payload = true"), "{err}");
    assert!(err.contains("no-opt-in.toml:"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_runtime_merges_batched_requests_and_answers_each_caller() {
    let s = Server::start(&[]).await;
    let model = common::iris_model(&s);
    let table = format!(
        "runtime = \"model\"\nmemory_mb = 512\ntimeout_ms = 10000\n[model]\ntask = \"tabular-classification\"\nengine = \"classical\"\npath = \"{model}\"\nmax_batch = 100\n"
    );
    let plain = format!("name = \"iris-plain\"\n{table}");
    let batched = format!(
        "name = \"iris-svc\"\nmode = \"service\"\ncpu = 1\ninstance_concurrency = 2\nmax_instances = 1\n{table}[batching]\nmax_batch_size = 8\nmax_delay_ms = 10\n"
    );
    for (name, text) in [("iris-plain", plain), ("iris-svc", batched)] {
        let path = s.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
    }
    let rows: Vec<Value> = (0..24)
        .map(|i| {
            let f = i as f64;
            json!([
                4.5 + (f * 0.13) % 3.5,
                2.0 + (f * 0.07) % 2.4,
                1.0 + (f * 0.29) % 5.9,
                0.1 + (f * 0.11) % 2.4
            ])
        })
        .collect();
    // Expected answers, one request at a time, without batching.
    let mut expected = Vec::new();
    for r in &rows {
        let (status, _, body) = s
            .invoke("iris-plain", &json!({"instances": [r]}).to_string())
            .await;
        assert_eq!(status, 200, "{body}");
        expected.push(serde_json::from_str::<Value>(&body).unwrap()["predictions"].clone());
    }
    let calls: Vec<_> = rows
        .iter()
        .map(|r| {
            let h = s.handle();
            let event = json!({"instances": [r]}).to_string();
            tokio::spawn(async move { h.invoke("iris-svc", &event).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        let (status, _, body) = c.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["predictions"], expected[i],
            "caller {i} gets its own prediction"
        );
    }
    let recs = s.records(Some("iris-svc")).await;
    assert_eq!(recs.len(), rows.len());
    for r in &recs {
        assert_eq!(
            r["status"],
            "success",
            "{r}\n{}",
            s.get("/v1/functions/iris-svc/logs").await
        );
        let b = r["batch_size"].as_u64().unwrap();
        assert!((1..=8).contains(&b), "{b}");
    }
    // The model still answers a lone, unbatched request.
    let (status, _, body) = s
        .invoke("iris-svc", &json!({"instances": [rows[0]]}).to_string())
        .await;
    assert_eq!(status, 200, "{body}");
}
