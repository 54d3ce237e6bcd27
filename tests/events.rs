//! End-to-end: asynchronous invocations and triggers against a real
//! `virga serve`. Waits are bounded polls; nothing asserts speed.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{eventually, manifest, throughout, Server};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn event_invocations_are_stored_then_delivered() {
    let s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    let resp = s
        .invoke_raw("echo", r#"{"x":1}"#, &[("x-amz-invocation-type", "Event")])
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(10, || async {
            s.records(Some("echo"))
                .await
                .iter()
                .any(|r| r["request_id"] == id.as_str())
        })
        .await,
        "the event is delivered"
    );
    let recs = s.records(Some("echo")).await;
    assert_eq!(recs[0]["status"], "success");
    assert_eq!(recs[0]["trigger"], "http");
    let (code, out, _) = s.cli(&["invoke", "echo", "--async", "--payload", "{}"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("queued "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_events_are_retried_then_dead_lettered_and_can_be_redriven() {
    // The cue that fixes the function is a file the test creates later on
    // the host: unsandboxed, since a sandboxed function sees only the code
    // captured at its deploy.
    let s = Server::start_with(
        &common::virga_bin(),
        &[],
        &["--isolation", "off"],
        &[(
            "flaky",
            manifest(
                "flaky",
                "memory_mb = 1769\nmax_retries = 2\nretry_delay_ms = 50",
            ),
        )],
    )
    .await;
    let flag = s.dir.path().join("ready");
    let payload = format!(r#"{{"action":"fail_unless","path":"{}"}}"#, flag.display());
    let resp = s
        .invoke_raw("flaky", &payload, &[("x-amz-invocation-type", "Event")])
        .await;
    assert_eq!(resp.status(), 202);
    let id = resp.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(15, || async {
            !s.get("/v1/functions/flaky/dlq").await["dead_letters"]
                .as_array()
                .unwrap()
                .is_empty()
        })
        .await,
        "after 1 + 2 attempts the event is dead-lettered"
    );
    let recs = s.records(Some("flaky")).await;
    assert_eq!(recs.len(), 3, "one try and two retries");
    assert!(
        recs.iter().all(|r| r["request_id"] == id.as_str()),
        "one request id across retries"
    );
    assert!(recs
        .iter()
        .all(|r| r["status"] == "error" && r["error_type"] == "NotYet"));
    let (code, out, _) = s.cli(&["dlq", "ls", "flaky", "--format", "json"]);
    assert_eq!(code, 0);
    let dead: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(dead[0]["request_id"], id.as_str());
    assert_eq!(dead[0]["attempts"], 3);
    let (code, out, _) = s.cli(&["queues", "--format", "json"]);
    assert_eq!(code, 0);
    let q: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(q["functions"][0]["dead_letters"], 1);

    // Fix the cause, redrive: delivered, and the dead-letter queue is empty.
    std::fs::write(&flag, "").unwrap();
    let (code, out, _) = s.cli(&["dlq", "redrive", "flaky"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("redriven 1"), "{out}");
    assert!(
        eventually(10, || async {
            s.records(Some("flaky"))
                .await
                .iter()
                .any(|r| r["status"] == "success")
        })
        .await
    );
    assert!(s.get("/v1/functions/flaky/dlq").await["dead_letters"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_fan_out_to_every_subscriber() {
    let sub = "memory_mb = 1769\n[[triggers]]\ntype = \"topic\"\ntopic = \"news\"";
    let s = Server::start(&[
        ("a", manifest("a", sub)),
        ("b", manifest("b", sub)),
        ("c", manifest("c", "memory_mb = 1769")),
    ])
    .await;
    let (code, out, err) = s.cli(&["publish", "news", "hello"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 subscribers"), "{out}");
    for f in ["a", "b"] {
        assert!(
            eventually(10, || async { s.records(Some(f)).await.len() == 1 }).await,
            "{f} got it"
        );
        assert_eq!(s.records(Some(f)).await[0]["trigger"], "topic");
        let logs = s.get(&format!("/v1/functions/{f}/logs")).await;
        assert!(
            logs["lines"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l == "sns hello"),
            "{logs}"
        );
    }
    assert!(
        throughout(Duration::from_millis(500), || async {
            s.records(Some("c")).await.is_empty()
        })
        .await,
        "not subscribed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bucket_uploads_fire_matching_triggers_once_and_bad_keys_are_refused() {
    let s = Server::start(&[(
        "thumbs",
        manifest(
            "thumbs",
            "memory_mb = 1769\n[[triggers]]\ntype = \"bucket\"\nbucket = \"uploads\"\nprefix = \"images/\"",
        ),
    )])
    .await;
    let file = s.dir.path().join("cat.jpg");
    std::fs::write(&file, b"not really a jpeg").unwrap();
    for key in ["images/cat.jpg", "docs/readme.txt", "images/dog.jpg"] {
        let (code, out, err) = s.cli(&["put", "uploads", key, file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("etag"), "{out}");
    }
    assert!(eventually(10, || async { s.records(Some("thumbs")).await.len() == 2 }).await);
    assert!(
        throughout(Duration::from_millis(500), || async {
            s.records(Some("thumbs")).await.len() == 2
        })
        .await,
        "one invocation per matching upload"
    );
    let recs = s.records(Some("thumbs")).await;
    assert!(recs.iter().all(|r| r["trigger"] == "bucket"));
    let logs = s.get("/v1/functions/thumbs/logs").await.to_string();
    assert!(
        logs.contains("s3 ObjectCreated:Put images/cat.jpg") && logs.contains("images/dog.jpg"),
        "{logs}"
    );
    assert!(!logs.contains("docs/readme.txt"));

    // The object store itself.
    let got = s
        .http
        .get(s.url("/v1/buckets/uploads/objects/images/cat.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), b"not really a jpeg");
    let list = s.get("/v1/buckets/uploads/objects?prefix=images/").await;
    assert_eq!(list["objects"].as_array().unwrap().len(), 2);
    assert_eq!(
        list["objects"][0]["etag"].as_str().unwrap().len(),
        64,
        "sha256"
    );

    // Encoded slashes keep the client from normalising the dots away.
    for bad in [
        "..%2F..%2Fetc%2Fpasswd",
        "/etc/passwd",
        "a%2F..%2Fb",
        "%2Fabs",
    ] {
        let resp = s
            .http
            .put(s.url(&format!("/v1/buckets/uploads/objects/{bad}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let resp = s
        .http
        .get(s.url("/v1/buckets/uploads/objects/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-amzn-errortype"], "NoSuchKey");
}

fn batch_lines(logs: &Value) -> (Vec<usize>, Vec<String>) {
    let lines: Vec<String> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let batches = lines
        .iter()
        .filter_map(|l| l.strip_prefix("batch "))
        .map(|n| n.parse().unwrap())
        .collect();
    let msgs = lines
        .iter()
        .filter_map(|l| l.strip_prefix("msg "))
        .map(str::to_string)
        .collect();
    (batches, msgs)
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_deliver_in_batches_and_requeue_only_failed_messages() {
    let s = Server::start(&[(
        "worker",
        manifest(
            "worker",
            "memory_mb = 1769\n[[triggers]]\ntype = \"queue\"\nqueue = \"jobs\"\nbatch_size = 3\nbatch_window_ms = 300\nmax_receive = 2",
        ),
    )])
    .await;
    for body in ["m1", "m2", "fail", "m3", "m4", "m5", "m6"] {
        let resp = s
            .http
            .post(s.url("/v1/queues/jobs/messages"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(
        eventually(15, || async {
            let dead = s.get("/v1/functions/worker/dlq").await["dead_letters"]
                .as_array()
                .unwrap()
                .len();
            let (_, msgs) = batch_lines(&s.get("/v1/functions/worker/logs?lines=1000").await);
            dead == 1 && msgs.len() == 8
        })
        .await,
        "six messages delivered once, the failing one twice and then dead-lettered"
    );
    let (batches, msgs) = batch_lines(&s.get("/v1/functions/worker/logs?lines=1000").await);
    assert!(batches.iter().all(|&n| (1..=3).contains(&n)), "{batches:?}");
    for m in ["m1", "m2", "m3", "m4", "m5", "m6"] {
        assert_eq!(
            msgs.iter()
                .filter(|l| l.starts_with(&format!("{m} ")))
                .count(),
            1,
            "{m} once: {msgs:?}"
        );
    }
    let fails: Vec<_> = msgs.iter().filter(|l| l.starts_with("fail ")).collect();
    assert_eq!(
        fails,
        vec!["fail 1", "fail 2"],
        "only the failed message came back, until max_receive"
    );
    let q = s.get("/v1/queues").await;
    assert_eq!(q["queues"][0]["ready"], 0);
    assert!(s
        .records(Some("worker"))
        .await
        .iter()
        .all(|r| r["trigger"] == "queue"));
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_wake_functions_scaled_to_zero() {
    let s = Server::start(&[(
        "tick",
        manifest("tick", "memory_mb = 1769\nkeep_alive_ms = 100\n[[triggers]]\ntype = \"schedule\"\nexpression = \"rate(1 second)\"\ninput = '{\"warm\": true}'"),
    )])
    .await;
    assert!(eventually(10, || async { s.records(Some("tick")).await.len() >= 2 }).await);
    let recs = s.records(Some("tick")).await;
    assert!(recs.iter().all(|r| r["trigger"] == "schedule"));
    assert!(
        recs.iter().all(|r| r["cold"] == true),
        "each tick finds the function scaled to zero"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_accepted_event_is_lost_when_the_server_is_killed() {
    // The evidence must outlive the platform, so the function writes it to
    // the host: unsandboxed (a sandboxed function can write only its /tmp).
    let mut s = Server::start_with(
        &common::virga_bin(),
        &[],
        &["--isolation", "off"],
        &[(
            "sink",
            manifest(
                "sink",
                "memory_mb = 1769\nmax_concurrency = 2\nretry_delay_ms = 50",
            ),
        )],
    )
    .await;
    let log = s.dir.path().join("delivered.txt");
    let payload = format!(r#"{{"action":"append","path":"{}"}}"#, log.display());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let h = s.handle();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..40 {
                let (status, headers, body) = h.invoke_event("sink", &payload).await;
                assert_eq!(status, 202, "{body}");
                ids.push(headers["x-amzn-requestid"].to_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut accepted = HashSet::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    assert_eq!(accepted.len(), 640);
    // Mid-stream: some delivered, most still queued or in flight.
    s.crash_and_restart().await;
    let delivered = || -> HashSet<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert!(
        eventually(60, || async { accepted.is_subset(&delivered()) }).await,
        "missing after restart: {}",
        accepted.difference(&delivered()).count()
    );
    assert!(
        eventually(10, || async {
            let q = s.get("/v1/queues").await;
            q["functions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["ready"] == 0 && f["in_flight"] == 0 && f["delayed"] == 0)
        })
        .await,
        "nothing stuck"
    );
    assert!(s.get("/v1/functions/sink/dlq").await["dead_letters"]
        .as_array()
        .unwrap()
        .is_empty());
}
