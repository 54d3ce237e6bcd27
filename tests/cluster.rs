//! End-to-end: `virga serve --cluster`. Two nodes, each with its own data
//! dir, on a real NATS JetStream broker (Debian's `nats-server`, installed
//! by `scripts/test.sh`) on a loopback port, with credentials: a deploy
//! through one node runs on the other (which never reads the deploying
//! side's files), records are seen from both, a delete goes everywhere, and
//! a broker that goes away turns what needs it into 503s until it is back.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Server;
use serde_json::Value;

/// A JetStream broker on a loopback port, its store in a temporary dir.
struct Broker {
    port: u16,
    store: PathBuf,
    user: String,
    pass: String,
    child: Option<Child>,
}

impl Broker {
    /// `None` when `nats-server` is not installed and the tests may skip
    /// (`VIRGA_REQUIRE_NATS=1`, as `scripts/test.sh` sets, makes it fail).
    fn start(dir: &Path) -> Option<Broker> {
        if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("VIRGA_REQUIRE_NATS").is_err(),
                "nats-server is not installed (scripts/test.sh installs it)"
            );
            eprintln!("skipped: nats-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut b = Broker {
            port,
            store: dir.join("jetstream"),
            user: "virga".into(),
            pass: format!("p{}", std::process::id()),
            child: None,
        };
        b.run();
        Some(b)
    }

    fn run(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .args(["--user", &self.user, "--pass", &self.pass])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A credentials file for the nodes.
    fn credentials(&self, dir: &Path) -> PathBuf {
        let path = dir.join("nats.creds");
        std::fs::write(&path, format!("{}:{}\n", self.user, self.pass)).unwrap();
        path
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn node(broker: &Broker, name: &str, creds: &Path) -> Server {
    node_with(broker, name, creds, &[]).await
}

/// A node with `args` added to `virga serve`'s.
async fn node_with(broker: &Broker, name: &str, creds: &Path, args: &[&str]) -> Server {
    let url = broker.url();
    let mut all = vec![
        "--cluster",
        &url,
        "--node",
        name,
        "--cluster-credentials",
        creds.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Server::start_with(&common::virga_bin(), &[], &all, &[]).await
}

fn names(functions: &Value) -> Vec<String> {
    functions["functions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn versions(s: &Server) -> Value {
    s.get("/v1/functions/iris").await["version"].clone()
}

const ROWS: &str = r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;

async fn answers_setosa(s: &Server) -> bool {
    let (status, headers, body) = s.invoke("iris", ROWS).await;
    status == 200 && headers.get("x-amz-function-error").is_none() && body.contains("setosa")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_through_one_node_runs_on_the_other() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut broker) = Broker::start(tmp.path()) else {
        return;
    };
    let creds = broker.credentials(tmp.path());
    let mut a = node(&broker, "a", &creds).await;
    let mut b = node(&broker, "b", &creds).await;

    // Deployed through A, from a directory only A was given.
    let model = common::iris_model(&a);
    // In a directory of its own: the code bundle is what is beside it.
    let manifest = a.dir.path().join("iris/iris.toml");
    std::fs::create_dir_all(manifest.parent().unwrap()).unwrap();
    let deploy = |memory_mb: u32| {
        std::fs::write(
            &manifest,
            format!("name = \"iris\"\nruntime = \"model\"\nmemory_mb = {memory_mb}\n[model]\ntask = \"tabular-classification\"\npath = \"{model}\"\n"),
        )
        .unwrap();
        a.cli(&["deploy", manifest.to_str().unwrap()])
    };
    let b_memory = || async { b.get("/v1/functions/iris").await["memory_mb"].clone() };
    let (code, _, err) = deploy(512);
    assert_eq!(code, 0, "{err}");
    assert!(
        common::eventually(10, || async {
            names(&b.get("/v1/functions").await).contains(&"iris".to_string())
        })
        .await,
        "B sees A's deploy: {}",
        b.log()
    );
    // A does not apply its own deploy a second time when it sees it.
    assert_eq!(a.get("/v1/functions/iris").await["version"], "1");
    // The same deploy again is no news for B; a changed one is one version.
    let first = b.get("/v1/functions/iris").await["version"].clone();
    assert_eq!(deploy(512).0, 0);
    assert_eq!(deploy(576).0, 0);
    assert!(common::eventually(10, || async { b_memory().await == 576 }).await);
    let version = |v: &Value| v.as_str().unwrap().parse::<u64>().unwrap();
    assert_eq!(
        version(&b.get("/v1/functions/iris").await["version"]),
        version(&first) + 1
    );
    // B runs it from what the broker holds: A's files may go.
    std::fs::remove_file(&model).unwrap();
    assert!(answers_setosa(&b).await, "{}", b.log());
    let from_b = b.records(Some("iris")).await;
    assert_eq!(from_b.len(), 1, "{from_b:?}");
    let id = from_b[0]["request_id"].clone();
    assert!(
        common::eventually(10, || async {
            a.records(Some("iris"))
                .await
                .iter()
                .any(|r| r["request_id"] == id)
        })
        .await,
        "A indexes B's record"
    );

    // A delete through B reaches A.
    b.delete("iris").await;
    assert!(
        common::eventually(10, || async {
            !names(&a.get("/v1/functions").await).contains(&"iris".to_string())
        })
        .await,
        "A forgets the deleted function"
    );
    let (status, _, _) = a.invoke("iris", ROWS).await;
    assert_eq!(status, 404);

    // Deployed again; then the broker goes away.
    let model = common::iris_model(&a);
    assert!(Path::new(&model).is_file());
    let (code, _, err) = deploy(512);
    assert_eq!(code, 0, "{err}");
    assert!(common::eventually(10, || async { answers_setosa(&b).await }).await);
    broker.stop();
    // What needs the broker answers 503 and says why ...
    assert!(
        common::eventually(10, || async {
            let (code, _, err) = a.cli(&["deploy", manifest.to_str().unwrap()]);
            code != 0 && err.contains("broker") && err.contains("unreachable")
        })
        .await,
        "a deploy without the broker is refused"
    );
    let resp = reqwest::Client::new()
        .delete(b.url("/v1/functions/iris"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-amzn-errortype"], "ServiceException");
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("unreachable"),
        "{err}"
    );
    let (status, headers, body) = a.handle().invoke_event("iris", ROWS).await;
    assert_eq!(status, 503, "an async accept needs the broker: {body}");
    assert_eq!(headers["x-amzn-errortype"], "ServiceException");
    assert!(body.contains("broker"), "{body}");
    // ... and what runs here keeps serving.
    assert!(answers_setosa(&b).await);
    assert!(answers_setosa(&a).await);

    // The broker back on the same port and store: the nodes reconnect by
    // themselves, and a deploy through A reaches B again.
    broker.run();
    assert!(
        common::eventually(20, || async { deploy(640).0 == 0 }).await,
        "deploys work again once the broker is back: {}",
        a.log()
    );
    assert!(
        common::eventually(10, || async { b_memory().await == 640 }).await,
        "B applies the deploy made after the outage"
    );
    assert!(answers_setosa(&b).await);

    // Restarted, each node finds what it ran: nothing is applied again.
    let before = (versions(&a).await, versions(&b).await);
    a.restart().await;
    b.restart().await;
    assert!(common::eventually(10, || async { answers_setosa(&b).await }).await);
    assert!(answers_setosa(&a).await);
    assert_eq!((versions(&a).await, versions(&b).await), before);
}

/// The lines (request ids) the `append` action wrote, with their counts.
fn deliveries(log: &Path) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    seen
}

async fn cluster_queued(s: &Server, function: &str) -> Option<u64> {
    s.get("/v1/queues").await["functions"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)
        .map(|f| f["cluster_queued"].as_u64().unwrap_or(u64::MAX))
}

#[tokio::test(flavor = "multi_thread")]
async fn events_held_by_a_node_that_dies_are_delivered_by_another() {
    let tmp = tempfile::tempdir().unwrap();
    // Unsandboxed, so the function's evidence of delivery outlives A.
    let Some((_broker, mut a, b)) = pair(tmp.path(), &["--isolation", "off"]).await else {
        return;
    };
    deploy_through(
        &a,
        &b,
        "sink",
        &common::manifest(
            "sink",
            "memory_mb = 256\nmax_concurrency = 2\nretry_delay_ms = 50",
        ),
    )
    .await;
    let log = tmp.path().join("delivered.txt");
    let payload = format!(r#"{{"action":"append","path":"{}"}}"#, log.display());
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = a.handle();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..25 {
                let (status, headers, body) = h.invoke_event("sink", &payload).await;
                assert_eq!(status, 202, "{body}");
                ids.push(headers["x-amzn-requestid"].to_str().unwrap().to_string());
            }
            ids
        }));
    }
    let mut accepted = std::collections::HashSet::new();
    for t in tasks {
        accepted.extend(t.await.unwrap());
    }
    assert_eq!(accepted.len(), 500);
    // Mid-delivery: A has delivered some and holds more.
    assert!(
        common::eventually(30, || async { deliveries(&log).len() >= 60 }).await,
        "deliveries start: {}",
        a.log()
    );
    let a_log = a.log();
    a.kill();
    let missing = || {
        let seen = deliveries(&log);
        accepted.iter().filter(|id| !seen.contains_key(*id)).count()
    };
    assert!(
        common::eventually(60, || async { missing() == 0 }).await,
        "{} accepted events never delivered; A: {a_log}\nB: {}",
        missing(),
        b.log()
    );
    // At least once: only what A held when it died may run twice.
    let seen = deliveries(&log);
    let twice = seen.values().filter(|n| **n > 1).count();
    assert!(twice <= 32, "{twice} events delivered more than once");
    assert!(seen.keys().all(|id| accepted.contains(id)));
    assert!(
        common::eventually(20, || async { cluster_queued(&b, "sink").await == Some(0) }).await,
        "nothing left on the broker: {}",
        b.get("/v1/queues").await
    );
    assert!(b.get("/v1/functions/sink/dlq").await["dead_letters"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_the_clusters_and_redrive_from_any_node() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, b)) = pair(tmp.path(), &[]).await else {
        return;
    };
    deploy_through(
        &a,
        &b,
        "failing",
        &common::manifest(
            "failing",
            "memory_mb = 128\nmax_retries = 1\nretry_delay_ms = 50\nenv = { ACTION = \"error\" }",
        ),
    )
    .await;
    let (status, headers, body) = a.handle().invoke_event("failing", "{}").await;
    assert_eq!(status, 202, "{body}");
    let id = headers["x-amzn-requestid"].to_str().unwrap().to_string();
    // Tried twice (one retry, on whichever node), then a dead letter that
    // both nodes list.
    assert!(
        common::eventually(20, || async {
            dead_letters(&b, "failing").await.len() == 1
        })
        .await,
        "B lists the dead letter: {}\n{}",
        a.log(),
        b.log()
    );
    let letter = &dead_letters(&a, "failing").await[0];
    assert_eq!(letter["request_id"], id.as_str());
    assert_eq!(letter["attempts"], 2);
    assert!(
        letter["error"]
            .as_str()
            .unwrap_or_default()
            .contains("ValueError"),
        "{letter}"
    );
    let queues = b.get("/v1/queues").await;
    let f = queues["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "failing")
        .cloned()
        .unwrap();
    assert_eq!(f["dead_letters"], 1, "{queues}");
    // Redriven through B: tried twice more, dead again, never lost.
    let (code, out, err) = b.cli(&["dlq", "redrive", "failing"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("redriven 1"), "{out}");
    let tries = || async {
        b.records(Some("failing"))
            .await
            .iter()
            .filter(|r| r["request_id"] == id.as_str())
            .count()
    };
    assert!(
        common::eventually(20, || async {
            dead_letters(&a, "failing").await.len() == 1 && tries().await == 4
        })
        .await,
        "redriven, tried twice more and dead again: {} records",
        tries().await
    );
}

async fn dead_letters(s: &Server, function: &str) -> Vec<Value> {
    s.get(&format!("/v1/functions/{function}/dlq")).await["dead_letters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn members(s: &Server) -> Vec<String> {
    s.get("/v1/cluster").await["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Statuses of `n` invocations of `function` through `s` sent at once,
/// with the body of one throttled.
async fn burst(s: &Server, function: &str, payload: &str, n: usize) -> (Vec<u16>, Option<String>) {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let h = s.handle();
        let (f, p) = (function.to_string(), payload.to_string());
        tasks.push(tokio::spawn(async move { h.invoke(&f, &p).await }));
    }
    let (mut statuses, mut throttled) = (Vec::new(), None);
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        if status == 429 {
            throttled = Some(body);
        }
        statuses.push(status);
    }
    (statuses, throttled)
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrency_holds_across_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, mut b)) = pair(tmp.path(), &[]).await else {
        return;
    };
    a.deploy(
        "slow",
        &common::manifest(
            "slow",
            "memory_mb = 128\nmax_concurrency = 3\nmax_queue = 0\ntimeout_ms = 20000",
        ),
    )
    .await;
    let both = vec!["a".to_string(), "b".to_string()];
    assert!(
        common::eventually(10, || async {
            members(&a).await == both
                && members(&b).await == both
                && names(&b.get("/v1/functions").await).contains(&"slow".to_string())
        })
        .await,
        "both nodes see each other and the function: {}",
        b.get("/v1/cluster").await
    );
    // Shares of 3 over two nodes: 2 for a, 1 for b. Three callers on each
    // node at once: a call past its door's share tries the other node, and
    // in all three run and three are throttled.
    let sleep = r#"{"action":"sleep","seconds":3}"#;
    let (on_a, on_b) = tokio::join!(burst(&a, "slow", sleep, 3), burst(&b, "slow", sleep, 3));
    let all: Vec<u16> = on_a.0.iter().chain(&on_b.0).copied().collect();
    let count = |code: u16| all.iter().filter(|c| **c == code).count();
    assert_eq!((count(200), count(429)), (3, 3), "{on_a:?} {on_b:?}");
    let why = on_a.1.or(on_b.1).unwrap();
    assert!(why.contains("shared by 2 cluster nodes"), "{why}");
    // The shares are given back: the same again passes the same way.
    let (again, _) = burst(&b, "slow", r#"{"action":"echo"}"#, 1).await;
    assert_eq!(again, [200]);
    // B dies: once its membership expires, A holds the whole limit.
    b.kill();
    assert!(
        common::eventually(20, || async { members(&a).await == ["a".to_string()] }).await,
        "a dead node leaves the cluster: {}",
        a.get("/v1/cluster").await
    );
    let (alone, _) = burst(&a, "slow", r#"{"action":"sleep","seconds":1}"#, 3).await;
    assert_eq!(alone, [200, 200, 200]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_goes_to_a_node_with_a_warm_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, b)) = pair(tmp.path(), &[]).await else {
        return;
    };
    deploy_through(
        &a,
        &b,
        "echo",
        &common::manifest("echo", "memory_mb = 128\nkeep_alive_ms = 60000"),
    )
    .await;
    // Warm on A only.
    let (status, headers, body) = a.invoke("echo", r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-virga-node").is_none(), "A ran it itself");
    assert!(
        common::eventually(10, || async {
            b.get("/v1/cluster").await["warm"]["a"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "echo"))
        })
        .await,
        "B hears that A is warm: {}",
        b.get("/v1/cluster").await
    );
    // Through B: run on A's warm instance, recorded there, B starts none.
    let (status, headers, body) = b.invoke("echo", r#"{"n": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-virga-node"], "a");
    assert!(
        body.contains("\"n\": 2") || body.contains("\"n\":2"),
        "{body}"
    );
    let id = headers["x-amzn-requestid"].to_str().unwrap().to_string();
    assert!(
        b.instance_states("echo").await.is_empty(),
        "B started nothing"
    );
    let on_a = a.records(Some("echo")).await;
    let routed: Vec<_> = on_a
        .iter()
        .filter(|r| r["request_id"] == id.as_str())
        .collect();
    assert_eq!(routed.len(), 1, "{on_a:?}");
    assert_eq!(routed[0]["cold"], false);
    // Function errors and the log tail come back as a local call's would.
    let resp = reqwest::Client::new()
        .post(b.url("/2015-03-31/functions/echo/invocations"))
        .header("x-amz-log-type", "Tail")
        .body(r#"{"action": "error"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-virga-node"], "a");
    assert_eq!(resp.headers()["x-amz-function-error"], "Unhandled");
    assert!(resp.headers().contains_key("x-amz-log-result"));
}

/// Deploys `manifest` as `name` through `a` and waits until `b` has it.
async fn deploy_through(a: &Server, b: &Server, name: &str, manifest: &str) {
    a.deploy(name, manifest).await;
    assert!(
        common::eventually(10, || async {
            names(&b.get("/v1/functions").await).contains(&name.to_string())
        })
        .await,
        "the deploy of {name} reaches the other node: {}",
        b.log()
    );
}

/// A broker and two nodes on it, `a` and `b`, with `args` added to
/// `virga serve`'s; `None` when the tests may skip.
async fn pair(dir: &Path, args: &[&str]) -> Option<(Broker, Server, Server)> {
    let broker = Broker::start(dir)?;
    let creds = broker.credentials(dir);
    let a = node_with(&broker, "a", &creds, args).await;
    let b = node_with(&broker, "b", &creds, args).await;
    Some((broker, a, b))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_on_one_node_works_on_every_node_until_revoked() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, b)) = pair(tmp.path(), &["--auth", "sigv4"]).await else {
        return;
    };
    let a_data = a.dir.path().join("data");
    // Made offline on A's data dir, as `virga keys` does.
    let (code, out, err) = common::cli(&[
        "keys",
        "create",
        "ops",
        "--role",
        "admin",
        "--token",
        "--format",
        "json",
        "--data-dir",
        a_data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let token = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let status_on = |s: &Server| {
        let (url, token) = (s.url("/v1/functions"), token.clone());
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert!(
        common::eventually(10, || async { status_on(&b).await == 200 }).await,
        "B takes the key made on A: {}",
        b.log()
    );
    assert_eq!(status_on(&a).await, 200);
    // Revoked on A: refused on B too.
    let (code, _, err) = common::cli(&[
        "keys",
        "revoke",
        "ops",
        "--data-dir",
        a_data.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        common::eventually(10, || async {
            status_on(&b).await == 403 || status_on(&b).await == 401
        })
        .await,
        "the revocation reaches B"
    );
}

/// The `msg BODY RECEIVE_COUNT` lines behave.py logs for queue batches.
async fn queue_lines(s: &Server, function: &str) -> Vec<String> {
    s.get(&format!("/v1/functions/{function}/logs?lines=5000"))
        .await["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str()?.strip_prefix("msg ").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_messages_are_shared_by_every_nodes_pollers() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, b)) = pair(tmp.path(), &[]).await else {
        return;
    };
    deploy_through(
        &a,
        &b,
        "worker",
        &common::manifest(
            "worker",
            "memory_mb = 128\n[[triggers]]\ntype = \"queue\"\nqueue = \"jobs\"\nbatch_size = 3\nbatch_window_ms = 100\nmax_receive = 2",
        ),
    )
    .await;
    // Sent through B only; the pollers of both nodes compete for them.
    let mut bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    bodies.push("fail".into());
    for body in &bodies {
        let resp = reqwest::Client::new()
            .post(b.url("/v1/queues/jobs/messages"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let all = || async {
        let mut lines = queue_lines(&a, "worker").await;
        lines.extend(queue_lines(&b, "worker").await);
        lines
    };
    assert!(
        common::eventually(30, || async {
            let lines = all().await;
            bodies[..30]
                .iter()
                .all(|m| lines.iter().any(|l| l.starts_with(&format!("{m} "))))
                && dead_letters(&a, "worker").await.len() == 1
        })
        .await,
        "every message delivered, the failing one dead-lettered: {:?}\n{}",
        all().await,
        b.log()
    );
    let lines = all().await;
    let mut fails: Vec<&String> = lines.iter().filter(|l| l.starts_with("fail ")).collect();
    fails.sort();
    assert_eq!(
        fails,
        ["fail 1", "fail 2"],
        "received twice (on either node), then dead"
    );
    let letter = &dead_letters(&b, "worker").await[0];
    assert_eq!(letter["trigger"], "queue");
    assert_eq!(letter["attempts"], 2);
    assert!(
        common::eventually(10, || async {
            b.get("/v1/queues").await["queues"]
                .as_array()
                .unwrap()
                .iter()
                .all(|q| q["queue"] != "jobs" || q["cluster_queued"] == 0)
        })
        .await,
        "nothing left on the broker: {}",
        b.get("/v1/queues").await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn objects_are_the_clusters_and_their_triggers_run_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((_broker, a, b)) = pair(tmp.path(), &[]).await else {
        return;
    };
    deploy_through(
        &a,
        &b,
        "thumbs",
        &common::manifest(
            "thumbs",
            "memory_mb = 128\n[[triggers]]\ntype = \"bucket\"\nbucket = \"uploads\"\nprefix = \"images/\"",
        ),
    )
    .await;
    let http = reqwest::Client::new();
    let body = vec![7u8; 300 * 1024];
    let put = http
        .put(a.url("/v1/buckets/uploads/objects/images/cat.jpg"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    // Read, listed and deleted through the other node.
    let got = http
        .get(b.url("/v1/buckets/uploads/objects/images/cat.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), &body[..]);
    let list = b.get("/v1/buckets/uploads/objects?prefix=images/").await;
    let objects = list["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{list}");
    assert_eq!(objects[0]["key"], "images/cat.jpg");
    assert_eq!(objects[0]["size"], 300 * 1024);
    assert_eq!(
        objects[0]["etag"],
        virga_sigv4::sha256_hex(&body).as_str(),
        "{list}"
    );
    // The upload's notification ran on one node or the other.
    let logs = || async {
        let mut all = a.get("/v1/functions/thumbs/logs").await.to_string();
        all.push_str(&b.get("/v1/functions/thumbs/logs").await.to_string());
        all
    };
    assert!(
        common::eventually(10, || async {
            logs().await.contains("s3 ObjectCreated:Put images/cat.jpg")
        })
        .await,
        "{}",
        logs().await
    );
    let deleted = http
        .delete(b.url("/v1/buckets/uploads/objects/images/cat.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = http
        .get(a.url("/v1/buckets/uploads/objects/images/cat.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert!(b.get("/v1/buckets/uploads/objects").await["objects"]
        .as_array()
        .unwrap()
        .is_empty());
}
