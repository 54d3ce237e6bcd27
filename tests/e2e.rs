//! End-to-end tests: the real `virga` binary on 127.0.0.1:0, real instance
//! processes (tests/runtimes/behave.py), driven through the public APIs.
//! They assert behaviour, never speed.

mod common;

use std::time::Duration;

use common::{manifest, Server};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn echo_is_cold_then_warm_with_lambda_report_lines() {
    let s = Server::start(&[(
        "echo",
        manifest(
            "echo",
            "memory_mb = 1769\nhandler = \"main.handler\"\nenv = { GREETING = \"hi\" }",
        ),
    )])
    .await;

    let (code, out, err) = s.cli(&["invoke", "echo", "--payload", r#"{"x":1}"#]);
    assert_eq!(code, 0, "{err}");
    let body: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["echo"], json!({"x": 1}));
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_NAME"], "echo");
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "1769");
    assert_eq!(body["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert_eq!(body["env"]["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/echo");
    assert_eq!(body["env"]["_HANDLER"], "main.handler");
    assert_eq!(body["env"]["GREETING"], "hi");
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:echo"
    );
    assert!(err.contains("REPORT RequestId: "), "{err}");
    assert!(err.contains("Billed Duration: "), "{err}");
    assert!(err.contains("Memory Size: 1769 MB"), "{err}");
    assert!(
        err.contains("Init Duration: "),
        "first invoke is cold: {err}"
    );

    let (code, out2, err) = s.cli(&["invoke", "echo", "--payload", r#"{"x":2}"#]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("REPORT RequestId: "), "{err}");
    assert!(
        !err.contains("Init Duration"),
        "second invoke is warm: {err}"
    );
    let body2: Value = serde_json::from_str(out2.trim()).unwrap();
    assert_eq!(body2["echo"]["x"], 2);

    let recs = s.records(Some("echo")).await;
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0]["instance_id"], recs[1]["instance_id"],
        "the warm instance is reused"
    );
    assert_eq!(recs[0]["cold"], true);
    assert_eq!(recs[0]["start"], "cold");
    assert!(recs[0]["init_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(recs[1]["cold"], false);
    assert_eq!(recs[1]["start"], "warm");
    assert_eq!(recs[1]["init_ms"], Value::Null);
    for r in &recs {
        assert_eq!(r["status"], "success");
        assert_eq!(r["trigger"], "http");
        assert_eq!(r["memory_mb"], 1769);
        assert!(
            r["billed_ms"].as_u64().unwrap() >= r["duration_ms"].as_f64().unwrap().floor() as u64
        );
        assert!(r["max_memory_mb"].as_u64().unwrap() > 0);
    }

    // The logs hold the function's output between Lambda's markers.
    let (code, logs, _) = s.cli(&["logs", "echo"]);
    assert_eq!(code, 0);
    assert!(
        logs.contains("START RequestId:") && logs.contains("END RequestId:"),
        "{logs}"
    );
    let (code, ls, _) = s.cli(&["ls"]);
    assert_eq!(code, 0);
    assert!(ls.lines().any(|l| l.starts_with("echo ")), "{ls}");
    let (code, inst, _) = s.cli(&["instances", "echo", "--format", "json"]);
    assert_eq!(code, 0);
    let inst: Value = serde_json::from_str(&inst).unwrap();
    assert_eq!(inst.as_array().unwrap().len(), 1);
    assert_eq!(inst[0]["state"], "idle");
    assert_eq!(inst[0]["invocations"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn log_tail_carries_the_functions_output() {
    let s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    let resp = s
        .invoke_raw(
            "echo",
            r#"{"action":"print"}"#,
            &[("x-amz-log-type", "Tail")],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let tail = resp.headers()["x-amz-log-result"]
        .to_str()
        .unwrap()
        .to_string();
    let rid = resp.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_string();
    use base64::Engine as _;
    let log = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(tail)
            .unwrap(),
    )
    .unwrap();
    assert!(log.starts_with(&format!("START RequestId: {rid}")), "{log}");
    assert!(log.contains(&format!("line 2 of {rid}")), "{log}");
    assert!(log.contains(&format!("END RequestId: {rid}")), "{log}");
    assert!(
        log.trim_end().lines().last().unwrap().starts_with("REPORT"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_expiry_scales_to_zero_and_the_next_call_is_cold() {
    let s = Server::start(&[(
        "ka",
        manifest("ka", "memory_mb = 1769\nkeep_alive_ms = 300"),
    )])
    .await;
    assert_eq!(s.invoke("ka", "{}").await.0, 200);
    // Wait (bounded) until the reaper has stopped the idle instance.
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v = s.get("/v1/functions/ka/instances").await;
        if v["instances"].as_array().unwrap().is_empty() {
            gone = true;
            break;
        }
    }
    assert!(
        gone,
        "the idle instance should be reaped after keep_alive_ms"
    );
    assert_eq!(s.invoke("ka", "{}").await.0, 200);
    let recs = s.records(Some("ka")).await;
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["cold"], true);
    assert_eq!(
        recs[1]["cold"], true,
        "after scale-to-zero the next call starts a new instance"
    );
    assert_ne!(recs[0]["instance_id"], recs[1]["instance_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_beyond_concurrency_and_queue_are_throttled_and_accepted_ones_succeed() {
    let s = Server::start(&[(
        "busy",
        manifest(
            "busy",
            "memory_mb = 1769\nmax_concurrency = 2\nmax_queue = 2\ntimeout_ms = 10000",
        ),
    )])
    .await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let s = s.handle();
        tasks.push(tokio::spawn(async move {
            s.invoke("busy", r#"{"action":"sleep","seconds":0.8}"#)
                .await
        }));
    }
    let mut ok = 0;
    let mut throttled = 0;
    for t in tasks {
        let (status, headers, body) = t.await.unwrap();
        match status {
            200 => {
                assert!(headers.get("x-amz-function-error").is_none(), "{body}");
                ok += 1;
            }
            429 => {
                assert_eq!(headers["x-amzn-errortype"], "TooManyRequestsException");
                assert!(
                    body.contains("max_concurrency"),
                    "the message says what to change: {body}"
                );
                throttled += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + throttled, 10);
    assert!(ok >= 4, "2 running + 2 queued must be served, got {ok}");
    assert!(
        throttled >= 1,
        "10 requests cannot fit 2 instances + 2 queue places"
    );
    let recs = s.records(Some("busy")).await;
    assert_eq!(
        recs.iter().filter(|r| r["status"] == "throttled").count(),
        throttled
    );
    assert_eq!(recs.iter().filter(|r| r["status"] == "success").count(), ok);
    let instances: std::collections::HashSet<_> = recs
        .iter()
        .filter_map(|r| r["instance_id"].as_str())
        .collect();
    assert!(
        instances.len() <= 2,
        "never more than max_concurrency instances"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_instance_and_the_next_request_works() {
    let s = Server::start(&[(
        "slow",
        manifest("slow", "memory_mb = 1769\ntimeout_ms = 500"),
    )])
    .await;
    let (status, headers, body) = s.invoke("slow", r#"{"action":"sleep","seconds":30}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Sandbox.Timedout");
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap()
            .contains("Task timed out after 0.50 seconds"),
        "{body}"
    );
    let (status, headers, _) = s.invoke("slow", r#"{"x":1}"#).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none());
    let recs = s.records(Some("slow")).await;
    assert_eq!(recs[0]["status"], "timeout");
    assert_eq!(recs[0]["error_type"], "Sandbox.Timedout");
    assert_eq!(recs[1]["status"], "success");
    assert_eq!(recs[1]["cold"], true, "the timed-out instance was killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_exits_mid_invocation_gets_exit_error_and_others_keep_serving() {
    let s = Server::start(&[
        ("crashy", manifest("crashy", "memory_mb = 1769")),
        ("steady", manifest("steady", "memory_mb = 1769")),
    ])
    .await;
    assert_eq!(s.invoke("steady", "{}").await.0, 200);
    let (status, headers, body) = s.invoke("crashy", r#"{"action":"crash"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Runtime.ExitError");
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap()
            .contains("exit status 7"),
        "{body}"
    );
    assert_eq!(s.invoke("crashy", "{}").await.0, 200);
    let (status, headers, _) = s.invoke("steady", "{}").await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none());
    let steady = s.records(Some("steady")).await;
    assert_eq!(
        steady[1]["cold"], false,
        "the other function's instance was untouched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn function_errors_and_garbage_keep_the_instance_warm() {
    let s = Server::start(&[("moody", manifest("moody", "memory_mb = 1769"))]).await;
    let (status, headers, body) = s.invoke("moody", r#"{"action":"error"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "ValueError");
    assert_eq!(err["errorMessage"], "bad input");
    let (status, headers, body) = s.invoke("moody", r#"{"action":"garbage"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    let recs = s.records(Some("moody")).await;
    assert_eq!(recs[0]["status"], "error");
    assert_eq!(recs[0]["error_type"], "ValueError");
    assert_eq!(recs[1]["status"], "success");
    assert_eq!(recs[1]["cold"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_failures_are_reported_as_lambda_does() {
    let s = Server::start(&[
        (
            "badinit",
            manifest(
                "badinit",
                "memory_mb = 1769\nenv = { MODE = \"init-error\" }",
            ),
        ),
        (
            "quitter",
            manifest("quitter", "memory_mb = 1769\nenv = { MODE = \"exit\" }"),
        ),
    ])
    .await;
    let (status, headers, body) = s.invoke("badinit", "{}").await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Runtime.InitError");
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap()
            .contains("missing setting FOO"),
        "{body}"
    );
    let (_, _, body) = s.invoke("quitter", "{}").await;
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Runtime.ExitError");
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap()
            .contains("exit status 3"),
        "{body}"
    );
    let recs = s.records(None).await;
    assert!(recs
        .iter()
        .all(|r| r["status"] == "error" && r["cold"] == true));
    // The platform is still healthy.
    assert_eq!(s.get("/v2/health/ready").await["ready"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn exceeding_the_memory_limit_is_out_of_memory_where_cgroups_are_writable() {
    let s = Server::start(&[(
        "hog",
        manifest("hog", "memory_mb = 128\ntimeout_ms = 20000"),
    )])
    .await;
    let info = s.get("/v1/functions/hog").await;
    if info["limits_enforced"] != true {
        eprintln!("skipping: cgroups are not writable on this host");
        return;
    }
    let (status, headers, body) = s.invoke("hog", r#"{"action":"alloc","mb":400}"#).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled", "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Runtime.OutOfMemory", "{body}");
    let (status, headers, body) = s.invoke("hog", r#"{"action":"alloc","mb":1}"#).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-amz-function-error").is_none(),
        "a new instance serves: {body}"
    );
    let recs = s.records(Some("hog")).await;
    assert_eq!(recs[0]["error_type"], "Runtime.OutOfMemory");
    assert_eq!(recs[0]["limits_enforced"], true);
    assert!(
        recs[0]["max_memory_mb"].as_u64().unwrap() >= 100,
        "{:?}",
        recs[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_manifests_are_refused_with_file_line_and_field() {
    let s = Server::start(&[]).await;
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"bad\"\ncommand = [\"python3\"]\nmemroy_mb = 512\n",
    )
    .unwrap();
    let (code, _, err) = s.cli(&["deploy", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("bad.toml:3:") && err.contains("memroy_mb"),
        "{err}"
    );

    std::fs::write(
        &bad,
        "name = \"bad\"\ncommand = [\"python3\"]\nmemory_mb = 20000\n",
    )
    .unwrap();
    let (code, _, err) = s.cli(&["deploy", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(":3: field `memory_mb`") && err.contains("128..=10240"),
        "{err}"
    );

    // The API refuses it too, in Lambda's error shape.
    let resp = s
        .http
        .put(s.url("/v1/functions/bad"))
        .body("name = \"bad\"\ncommand = \"python3\"\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidParameterValueException"
    );
    let v: Value = resp.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("command"), "{v}");

    std::fs::write(
        &bad,
        "name = \"bad\"\ncommand = [\"./no-such-bootstrap\"]\n",
    )
    .unwrap();
    let (code, _, err) = s.cli(&["deploy", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no-such-bootstrap") && err.contains("not found"),
        "{err}"
    );
    assert!(s.get("/v1/functions").await["functions"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_api_errors_use_lambdas_names() {
    let s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    let (status, headers, body) = s.invoke("nope", "{}").await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
    assert!(body.contains("Function not found"), "{body}");

    let (status, headers, _) = s.invoke("echo", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(
        headers["x-amzn-errortype"],
        "InvalidRequestContentException"
    );

    // Valid JSON structure, invalid UTF-8 inside a string: Lambda answers 400
    // and the runtime never sees the bytes.
    let resp = s
        .http
        .post(s.url("/2015-03-31/functions/echo/invocations"))
        .body(b"{\"card\":\"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );
    assert!(resp.text().await.unwrap().contains("UTF-8"));

    let big = format!("\"{}\"", "a".repeat(6 * 1024 * 1024 + 10));
    let (status, headers, _) = s.invoke("echo", &big).await;
    assert_eq!(status, 413);
    assert_eq!(headers["x-amzn-errortype"], "RequestTooLargeException");

    let resp = s
        .invoke_raw("echo", "{}", &[("x-amz-invocation-type", "DryRun")])
        .await;
    assert_eq!(resp.status(), 204);
    let resp = s
        .invoke_raw("nope", "{}", &[("x-amz-invocation-type", "Event")])
        .await;
    assert_eq!(resp.status(), 404);
    let resp = s
        .invoke_raw("echo", "{}", &[("x-amz-invocation-type", "Bogus")])
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );

    // None of that reached an instance; the function still works.
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
    assert_eq!(s.records(Some("echo")).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn records_and_functions_survive_a_restart() {
    let mut s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    let (code, _, err) = s.cli(&[
        "deploy",
        s.dir.path().join("fns/echo.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for _ in 0..3 {
        assert_eq!(s.invoke("echo", "{}").await.0, 200);
    }
    let before = s.records(None).await;
    assert_eq!(before.len(), 3);
    s.restart().await;
    let (code, out, err) = s.cli(&["invocations", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let after: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(after, before, "records are durable and unchanged");
    let (code, csv, _) = s.cli(&["invocations", "--format", "csv", "--function", "echo"]);
    assert_eq!(code, 0);
    assert!(
        csv.starts_with("request_id,function,version,instance_id,trigger,cold,start,status"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4);
    // The deployed function came back too, and serves (cold: a new process).
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
    let recs = s.records(Some("echo")).await;
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[3]["cold"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn redeploy_drains_old_instances_and_bumps_the_version() {
    let s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
    let path = s.dir.path().join("fns/echo.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}\ntimeout_ms = 4000\n")).unwrap();
    let (code, out, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("version 2"), "{out}");
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
    let recs = s.records(Some("echo")).await;
    assert_eq!(recs[1]["version"], "2");
    assert_eq!(
        recs[1]["cold"], true,
        "old instances are not reused by the new version"
    );
    let (code, _, _) = s.cli(&["delete", "echo"]);
    assert_eq!(code, 0);
    assert_eq!(s.invoke("echo", "{}").await.0, 404);
}

/// Retired revisions are let go: after redeploys with invocations between
/// them, once the old instances have stopped the platform holds each
/// function's live revision only (`virga_function_revisions`), in function
/// and in service mode.
#[tokio::test(flavor = "multi_thread")]
async fn redeployed_revisions_are_let_go() {
    let svc = common::chaos_functions()
        .into_iter()
        .find(|f| f.0 == "svc")
        .unwrap()
        .1;
    let s = Server::start(&[
        ("echo", manifest("echo", "memory_mb = 128")),
        ("svc", svc.clone()),
    ])
    .await;
    for round in 0..6 {
        for name in ["echo", "svc"] {
            assert_eq!(s.invoke(name, "{}").await.0, 200, "{name}");
        }
        let timeout = format!("timeout_ms = {}", 3000 + round);
        s.deploy(
            "echo",
            &manifest("echo", &format!("memory_mb = 128\n{timeout}")),
        )
        .await;
        s.deploy("svc", &svc.replace("timeout_ms = 2000", &timeout))
            .await;
    }
    let revisions = || async {
        let text = s.get_text("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix("virga_function_revisions "))
            .map(|v| v.trim().to_string())
    };
    assert!(
        common::eventually(15, || async { revisions().await.as_deref() == Some("2") }).await,
        "revisions held: {:?}",
        revisions().await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioned_instances_start_at_deploy_and_are_warm() {
    let s = Server::start(&[(
        "warm",
        manifest(
            "warm",
            "memory_mb = 1769\nmin_instances = 1\nkeep_alive_ms = 100",
        ),
    )])
    .await;
    let mut ready = false;
    for _ in 0..100 {
        let v = s.get("/v1/functions/warm/instances").await;
        if v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["state"] == "idle")
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "min_instances are started at deploy");
    let (status, _, body) = s.invoke("warm", "{}").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["env"]["AWS_LAMBDA_INITIALIZATION_TYPE"],
        "provisioned-concurrency"
    );
    // Past keep-alive, the provisioned instance is still there.
    assert!(
        common::throughout(Duration::from_millis(500), || async {
            s.get("/v1/functions/warm/instances").await["instances"]
                .as_array()
                .map(Vec::len)
                == Some(1)
        })
        .await
    );
    let recs = s.records(Some("warm")).await;
    assert_eq!(recs[0]["cold"], false);
    assert_eq!(recs[0]["start"], "prewarmed", "its first request");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_periodic_function_is_prewarmed_live_under_the_hybrid_histogram() {
    // 2-second bins: requests 3 s apart fall in bin 1, so once five idle
    // times are known the instance stops at each release and a fresh one
    // starts 1.8 s later, kept until 4.4 s.
    // The built-in runtime starts in milliseconds: the 1.2 s between a
    // pre-warm and the request it is for stays slack on a busy host.
    let s = Server::start(&[(
        "tick",
        "name = \"tick\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1769\n\
         [keep_alive]\npolicy = \"hybrid-histogram\"\nbin_ms = 2000\nrange_ms = 60000\n"
            .to_string(),
    )])
    .await;
    let t0 = tokio::time::Instant::now();
    for i in 0..9u32 {
        tokio::time::sleep_until(t0 + Duration::from_secs(3) * i).await;
        assert_eq!(s.invoke("tick", "{}").await.0, 200);
    }
    let recs = s.records(Some("tick")).await;
    let starts: Vec<&str> = recs.iter().map(|r| r["start"].as_str().unwrap()).collect();
    assert_eq!(starts[0], "cold", "{starts:?}");
    assert!(
        starts[1..6].iter().all(|s| *s == "warm"),
        "the fallback window keeps it meanwhile: {starts:?}"
    );
    let prewarmed = starts[6..].iter().filter(|s| **s == "prewarmed").count();
    assert!(prewarmed >= 2, "{starts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_invokes_through_the_endpoint() {
    let Ok(version) = std::process::Command::new("aws").arg("--version").output() else {
        eprintln!("skipping: the AWS CLI is not installed");
        return;
    };
    // AWS CLI v2 base64-decodes --payload unless told otherwise; v1 has no such flag.
    let v2 = String::from_utf8_lossy(&version.stdout).starts_with("aws-cli/2");
    let s = Server::start(&[("echo", manifest("echo", "memory_mb = 1769"))]).await;
    let out = s.dir.path().join("out.json");
    let result = std::process::Command::new("aws")
        .args([
            "lambda",
            "invoke",
            "--endpoint-url",
            &s.url(""),
            "--function-name",
            "echo",
        ])
        .args(if v2 {
            &["--cli-binary-format", "raw-in-base64-out"][..]
        } else {
            &[]
        })
        .args(["--payload", r#"{"from":"aws"}"#])
        .arg(&out)
        .env("AWS_ACCESS_KEY_ID", "virga")
        .env("AWS_SECRET_ACCESS_KEY", "virga")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let meta: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(meta["StatusCode"], 200);
    let body: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(body["echo"], json!({"from": "aws"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_builtin_rust_runtime_echoes_and_reports_unknown_handlers() {
    let s = Server::start(&[
        (
            "noop",
            "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\nmemory_mb = 1769\n"
                .to_string(),
        ),
        (
            "typo",
            "name = \"typo\"\ncommand = [\"virga-worker\"]\nhandler = \"ecco\"\n".to_string(),
        ),
    ])
    .await;
    for i in 0..3 {
        let (status, headers, body) = s.invoke("noop", &format!(r#"{{"i":{i}}}"#)).await;
        assert_eq!(status, 200);
        assert!(headers.get("x-amz-function-error").is_none());
        assert_eq!(body, format!(r#"{{"i":{i}}}"#));
    }
    let recs = s.records(Some("noop")).await;
    assert_eq!(recs.iter().filter(|r| r["cold"] == true).count(), 1);
    let (status, _, body) = s.invoke("typo", "{}").await;
    assert_eq!(status, 200);
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorType"], "Runtime.InitError");
    assert!(
        err["errorMessage"]
            .as_str()
            .unwrap()
            .contains("unknown handler \\\"ecco\\\"")
            || err["errorMessage"].as_str().unwrap().contains("ecco"),
        "{body}"
    );
}

/// `THP_enabled` of process `pid` (1 or 0), `None` where the kernel does
/// not say.
fn thp_enabled(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// virga's own processes (the platform, the built-in runtime) keep
/// transparent huge pages off, or their allocator would hold megabytes
/// more each; a function's own program runs with the host's policy.
#[tokio::test(flavor = "multi_thread")]
async fn huge_pages_are_off_for_virga_and_as_the_host_says_for_functions() {
    let Some(host) = thp_enabled("self") else {
        eprintln!("skipped: this kernel does not report THP_enabled");
        return;
    };
    let s = Server::start(&[
        ("echo", manifest("echo", "")),
        (
            "noop",
            "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\n".to_string(),
        ),
    ])
    .await;
    assert_eq!(thp_enabled(&s.pid().to_string()), Some(0), "the platform");

    let (status, _, body) = s.invoke("echo", "{}").await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["thp"], json!(host), "a function's program: {body}");

    let (status, _, body) = s.invoke("noop", "{}").await;
    assert_eq!(status, 200, "{body}");
    // The built-in runtime: a descendant of the platform running `worker`.
    let mut pending = vec![s.pid()];
    let mut workers = Vec::new();
    while let Some(pid) = pending.pop() {
        for child in common::children(pid) {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            if cmdline.split(|&b| b == 0).any(|arg| arg == b"worker") {
                workers.push(child);
            }
            pending.push(child);
        }
    }
    assert!(!workers.is_empty(), "no built-in runtime process found");
    for pid in workers {
        assert_eq!(thp_enabled(&pid.to_string()), Some(0), "runtime {pid}");
    }
}

/// A data dir named relative to where `virga serve` starts works like an
/// absolute one: sandboxed instances start (their jailer runs from `/`).
#[tokio::test(flavor = "multi_thread")]
async fn a_relative_data_dir_serves_sandboxed_instances() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("fns")).unwrap();
    std::fs::write(
        dir.path().join("fns/noop.toml"),
        "name = \"noop\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(common::virga_bin())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--functions",
            "fns",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = common::listening_on(&mut child).expect("listening");
    let answer = reqwest::Client::new()
        .post(format!(
            "http://{addr}/2015-03-31/functions/noop/invocations"
        ))
        .body(r#"{"rel":1}"#)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let body = answer.text().await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"rel":1}"#);
}

/// `/metrics` follows Prometheus conventions (HELP text, base units,
/// histograms) and carries the gauges an operator needs; `promtool check
/// metrics` (Debian's `prometheus`) finds nothing wrong where it is
/// installed, and must be where `VIRGA_REQUIRE_PROMTOOL=1`.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_follow_prometheus_conventions() {
    let s = Server::start(&[("m", manifest("m", "max_concurrency = 1\nmax_queue = 0"))]).await;
    for _ in 0..2 {
        assert_eq!(s.invoke("m", "{}").await.0, 200);
    }
    // A throttle: the one instance is busy and nothing may queue.
    let slow = {
        let h = s.handle();
        tokio::spawn(async move { h.invoke("m", r#"{"action":"sleep","seconds":1}"#).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(s.invoke("m", "{}").await.0, 429);
    assert_eq!(slow.await.unwrap().0, 200);
    let (status, _, _) = s.handle().invoke_event("m", "{}").await;
    assert_eq!(status, 202);
    // A queue nobody consumes keeps its message ready.
    let resp = s
        .http
        .post(s.url("/v1/queues/work/messages"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let text = s.get_text("/metrics").await;
    for want in [
        "# HELP virga_invocations_total ",
        "# TYPE virga_invocation_duration_seconds histogram",
        "virga_invocation_duration_seconds_bucket{function=\"m\",le=\"0.005\"}",
        "# TYPE virga_init_duration_seconds histogram",
        "# TYPE virga_queue_duration_seconds histogram",
        "virga_cold_starts_total{function=\"m\"} 1",
        "virga_throttles_total{function=\"m\"} 1",
        "virga_instances{function=\"m\",state=\"idle\"}",
        "virga_waiting_requests{function=\"m\"}",
        "virga_function_revisions 1",
        "virga_async_events{function=\"m\",state=\"ready\"}",
        "virga_dead_letters{function=\"m\"}",
        "virga_queue_messages{queue=\"work\",state=\"ready\"} 1",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The live heap, counted by the binary's allocator: the platform holds
    // megabytes (its tables, rings, runtime), not nothing.
    let heap = common::gauge(&text, "virga_heap_live_bytes")
        .unwrap_or_else(|| panic!("no virga_heap_live_bytes in\n{text}"));
    assert!(
        (100_000.0..1e9).contains(&heap),
        "implausible live heap {heap}"
    );
    assert!(!text.contains("_ms"), "units are seconds:\n{text}");
    assert!(
        !text.contains("quantile="),
        "histograms, not summaries:\n{text}"
    );

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        assert_ne!(
            std::env::var("VIRGA_REQUIRE_PROMTOOL").as_deref(),
            Ok("1"),
            "promtool is required but missing: apt-get install prometheus"
        );
        eprintln!("note: promtool not installed; the exposition was checked by hand only");
        return;
    };
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{text}"
    );
}

/// `--retain-records N` keeps the newest N records, at start and every minute.
#[tokio::test(flavor = "multi_thread")]
async fn old_records_go_past_their_retention() {
    let mut s = Server::start_with(
        &common::virga_bin(),
        &[],
        &["--retain-records", "2"],
        &[("r", manifest("r", ""))],
    )
    .await;
    // Payloads of 8, 9, 10 and 11 bytes tell the records apart.
    for i in 0..4 {
        let payload = format!("{{\"i\":\"{}\"}}", "x".repeat(i));
        assert_eq!(s.invoke("r", &payload).await.0, 200);
    }
    s.restart().await;
    let records = s
        .records_until("r", std::time::Duration::from_secs(15), |r| r.len() <= 2)
        .await;
    assert_eq!(records.len(), 2, "{records:#?}");
    // The newest stay.
    assert_eq!(records[0]["payload_bytes"], 10);
    assert_eq!(records[1]["payload_bytes"], 11);
    let (code, _, err) = s.cli(&["serve", "--retain-records", "7w"]);
    assert_ne!(code, 0);
    assert!(err.contains("not a retention"), "{err}");
}

/// Function logs outlive a restart: they are written to rotated files under
/// the data dir, and `virga logs` after a restart starts from them.
#[tokio::test(flavor = "multi_thread")]
async fn logs_survive_a_restart() {
    let mut s = Server::start(&[("talk", manifest("talk", ""))]).await;
    let (status, headers, _) = s.invoke("talk", r#"{"action":"print"}"#).await;
    assert_eq!(status, 200);
    let id = headers["x-amzn-requestid"].to_str().unwrap().to_string();
    s.restart().await;
    let (code, logs, err) = s.cli(&["logs", "talk"]);
    assert_eq!(code, 0, "{err}");
    assert!(logs.contains(&format!("line 2 of {id}")), "{logs}");
    assert!(logs.contains(&format!("REPORT RequestId: {id}")), "{logs}");
    let file = std::fs::read_to_string(s.dir.path().join("data/logs/talk.log")).unwrap();
    assert!(file.contains(&format!("START RequestId: {id}")), "{file}");
}

#[tokio::test(flavor = "multi_thread")]
async fn greedy_dual_stops_the_idle_instance_of_lowest_priority_for_memory() {
    let gd = |name: &str| {
        (
            name.to_string(),
            manifest(
                name,
                "memory_mb = 1024\n[keep_alive]\npolicy = \"greedy-dual\"",
            ),
        )
    };
    let fns = [gd("hot"), gd("rare"), gd("new")];
    let fns: Vec<(&str, String)> = fns.iter().map(|(n, m)| (n.as_str(), m.clone())).collect();
    // Room for two instances of 1 GB.
    let s = Server::start_with(
        &common::virga_bin(),
        &[],
        &["--max-memory-mb", "2100"],
        &fns,
    )
    .await;
    for _ in 0..10 {
        assert_eq!(s.invoke("hot", "{}").await.0, 200);
    }
    assert_eq!(s.invoke("rare", "{}").await.0, 200);
    let idle = |f: &'static str| {
        let s = &s;
        async move {
            s.get(&format!("/v1/functions/{f}/instances")).await["instances"]
                .as_array()
                .map_or(0, Vec::len)
        }
    };
    assert_eq!(
        (idle("hot").await, idle("rare").await),
        (1, 1),
        "kept: no expiry"
    );
    // A third function needs memory: the rarely used instance goes.
    assert_eq!(s.invoke("new", "{}").await.0, 200);
    assert_eq!(idle("hot").await, 1);
    assert!(
        common::eventually(5, || async { idle("rare").await == 0 }).await,
        "the low-priority instance was stopped"
    );
    assert_eq!(s.invoke("hot", "{}").await.0, 200);
    let recs = s.records(Some("hot")).await;
    assert_eq!(recs.last().unwrap()["start"], "warm");
}
