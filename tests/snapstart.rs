//! End-to-end: `snap_start = "fork"`. A function version's template loads
//! and warms its model once; cold starts fork it. Forked instances must
//! answer exactly as spawned ones, confined as they are, and the template
//! must live and die with its function version, never with its children.

mod common;

use common::Server;
use serde_json::{json, Value};

/// Writes `<name>.toml` beside the server's models and deploys it.
fn deploy_text(s: &Server, name: &str, manifest: &str) {
    let path = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// A model function's manifest, spawned or forked.
fn model_manifest(name: &str, task: &str, engine: &str, path: &str, fork: bool) -> String {
    format!(
        "name = \"{name}\"\nruntime = \"model\"\nmemory_mb = 1024\nmax_concurrency = 4\n{}[model]\ntask = \"{task}\"\nengine = \"{engine}\"\npath = \"{path}\"\nmax_batch = 8\n",
        if fork { "snap_start = \"fork\"\n" } else { "" }
    )
}

async fn instances(s: &Server, name: &str) -> Vec<Value> {
    s.get(&format!("/v1/functions/{name}/instances")).await["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn with_role<'a>(all: &'a [Value], role: &str) -> Vec<&'a Value> {
    all.iter().filter(|i| i["role"] == role).collect()
}

const ROWS: &str = r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#;

/// A server with a forked iris classifier, which answered [`ROWS`] once;
/// and its manifest.
async fn forked_iris() -> (Server, String) {
    let s = Server::start(&[]).await;
    let iris = common::iris_model(&s);
    let manifest = model_manifest("iris", "tabular-classification", "classical", &iris, true);
    deploy_text(&s, "iris", &manifest);
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    (s, manifest)
}

fn setosa() -> Value {
    json!({"predictions": ["setosa"]})
}

/// Scales `name` to zero and waits until its forked instances are gone.
async fn scale_to_zero(s: &Server, name: &str) {
    let (code, _, err) = s.cli(&["scale-to-zero", name]);
    assert_eq!(code, 0, "{err}");
    assert!(
        common::eventually(10, || async {
            with_role(&instances(s, name).await, "forked").is_empty()
        })
        .await
    );
}

/// Deletes `name`; its process `pid` (`what`) stops and nothing of the
/// server's is left behind.
async fn delete_leaves_nothing(s: &Server, name: &str, pid: u64, what: &str) {
    s.delete(name).await;
    assert!(
        common::eventually(10, || async { !alive(pid) }).await,
        "a deleted function's {what} stops"
    );
    assert!(
        common::eventually(10, || async {
            common::leftovers(s.pid()) == (0, Vec::new())
        })
        .await,
        "{:?}",
        common::leftovers(s.pid())
    );
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

/// The body of a successful invocation, with its answer fields only (the
/// timing split differs between any two calls).
async fn answer(s: &Server, name: &str, payload: &str) -> Value {
    let (status, headers, body) = s.invoke(name, payload).await;
    assert_eq!(status, 200, "{name}: {body}\n{}", s.log());
    assert!(
        headers.get("x-amz-function-error").is_none(),
        "{name}: {body}\n{}",
        s.log()
    );
    let mut v: Value = serde_json::from_str(&body).unwrap();
    let o = v.as_object_mut().unwrap();
    o.retain(|k, _| k == "predictions" || k == "embeddings");
    v
}

/// Every task's forked instance answers exactly as a spawned one, in both
/// isolation modes, and its record says it was restored, not initialised.
#[tokio::test(flavor = "multi_thread")]
async fn forked_instances_answer_as_spawned_ones() {
    use base64::Engine as _;
    for isolation in ["on", "off"] {
        let s =
            Server::start_with(&common::virga_bin(), &[], &["--isolation", isolation], &[]).await;
        let dir = s.dir.path();
        let iris = common::iris_model(&s);
        virga_engine::fixtures::colour_classifier(&dir.join("colours.onnx"), 8);
        virga_engine::fixtures::text_encoder(&dir.join("words.onnx"));
        let png = |rgb| {
            base64::engine::general_purpose::STANDARD
                .encode(virga_engine::image::solid_png(40, 30, rgb))
        };
        let cases = [
            (
                "iris",
                "tabular-classification",
                "classical",
                iris.as_str(),
                json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
            ),
            (
                "colours",
                "image-classification",
                "tract",
                "colours.onnx",
                json!({"images": [png([200, 10, 10]), png([10, 10, 200])], "top_k": 5}),
            ),
            (
                "words",
                "text-embedding",
                "tract",
                "words.onnx",
                json!({"inputs": ["cat", "dog", "truck"]}),
            ),
        ];
        for (name, task, engine, path, payload) in &cases {
            let spawned = format!("{name}-spawn");
            let forked = format!("{name}-fork");
            deploy_text(
                &s,
                &spawned,
                &model_manifest(&spawned, task, engine, path, false),
            );
            deploy_text(
                &s,
                &forked,
                &model_manifest(&forked, task, engine, path, true),
            );
            let payload = payload.to_string();
            let want = answer(&s, &spawned, &payload).await;
            assert!(!want.as_object().unwrap().is_empty(), "{want}");
            assert_eq!(
                answer(&s, &forked, &payload).await,
                want,
                "{name}, isolation {isolation}"
            );
            // Two at once: a second child, the same answer.
            let (a, b) = tokio::join!(answer(&s, &forked, &payload), answer(&s, &forked, &payload));
            assert_eq!((&a, &b), (&want, &want), "{name}");

            let all = instances(&s, &forked).await;
            let templates = with_role(&all, "template");
            assert_eq!(templates.len(), 1, "one template: {all:?}");
            let children = with_role(&all, "forked");
            assert!(!children.is_empty() && children.len() <= 2, "{all:?}");
            let isolated = if isolation == "on" { "sandbox" } else { "none" };
            for c in &children {
                assert_eq!(c["isolation"], isolated, "{c}");
                assert_ne!(c["pid"], templates[0]["pid"]);
            }
            assert_eq!(
                with_role(&instances(&s, &spawned).await, "spawned").len(),
                instances(&s, &spawned).await.len(),
                "a spawned function has no template"
            );

            let recs = s.records(Some(&forked)).await;
            let cold: Vec<&Value> = recs.iter().filter(|r| r["cold"] == true).collect();
            assert!(!cold.is_empty(), "{recs:?}");
            for r in &cold {
                assert!(r["restore_ms"].as_f64().unwrap() > 0.0, "{r}");
                assert!(r["init_ms"].is_null(), "a forked start has no init: {r}");
                assert!(r["billed_ms"].as_u64().unwrap() >= 1, "{r}");
            }
            let spawned_recs = s.records(Some(&spawned)).await;
            assert!(spawned_recs[0]["init_ms"].as_f64().unwrap() > 0.0);
            assert!(spawned_recs[0]["restore_ms"].is_null());
        }
    }
}

/// The template survives scale-to-zero and the death of its children, is
/// made again when it dies, and goes with its function version.
#[tokio::test(flavor = "multi_thread")]
async fn the_template_lives_with_its_version_not_its_children() {
    let (s, manifest) = forked_iris().await;
    let template_pid = |all: &[Value]| with_role(all, "template")[0]["pid"].as_u64().unwrap();
    let all = instances(&s, "iris").await;
    let template = template_pid(&all);
    let child = with_role(&all, "forked")[0]["pid"].as_u64().unwrap();

    // A child killed: the template lives, the next cold start forks again.
    unsafe_kill(child);
    assert!(
        common::eventually(10, || async {
            with_role(&instances(&s, "iris").await, "forked").is_empty()
        })
        .await,
        "the killed child is forgotten"
    );
    assert!(alive(template), "the template outlives its child");
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());

    // Scale to zero: the forked instances go, the template stays.
    scale_to_zero(&s, "iris").await;
    let all = instances(&s, "iris").await;
    assert_eq!(template_pid(&all), template, "{all:?}");
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    let recs = s.records(Some("iris")).await;
    assert!(recs.last().unwrap()["restore_ms"].is_number(), "{recs:?}");

    // The template killed: the next cold start makes a new one.
    unsafe_kill(template);
    let (code, _, err) = s.cli(&["scale-to-zero", "iris"]);
    assert_eq!(code, 0, "{err}");
    assert!(common::eventually(10, || async { instances(&s, "iris").await.is_empty() }).await);
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    let all = instances(&s, "iris").await;
    let second = template_pid(&all);
    assert_ne!(second, template);
    let (_, logs, _) = s.cli(&["logs", "iris"]);
    assert!(
        logs.lines()
            .any(|l| l.contains("snap-start template") && l.contains("died")),
        "the template's death is in the function's log: {logs}"
    );

    // A redeploy retires the old template once its instances are gone; a
    // delete retires the new one. Nothing is left behind.
    deploy_text(
        &s,
        "iris",
        &manifest.replace("max_batch = 8", "max_batch = 9"),
    );
    assert!(
        common::eventually(10, || async { !alive(second) }).await,
        "the old version's template stops"
    );
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    let third = template_pid(&instances(&s, "iris").await);
    delete_leaves_nothing(&s, "iris", third, "template").await;
}

/// The template keeps one spare child forked and placed in its cgroup
/// ahead of need: the next cold start releases it (the instance that
/// answers is the spare), a new spare follows, and a spare that dies costs
/// only the head start.
#[tokio::test(flavor = "multi_thread")]
async fn a_spare_takes_the_next_cold_start() {
    let (s, _) = forked_iris().await;

    let spare = || async {
        let all = instances(&s, "iris").await;
        with_role(&all, "spare").first().map(|v| (*v).clone())
    };
    assert!(
        common::eventually(10, || async { spare().await.is_some() }).await,
        "a spare follows the first cold start: {:?}",
        instances(&s, "iris").await
    );
    let first = spare().await.unwrap();
    let (spare_id, spare_pid) = (
        first["id"].as_str().unwrap().to_string(),
        first["pid"].as_u64().unwrap(),
    );
    assert!(alive(spare_pid));
    assert_eq!(first["invocations"], 0);
    if first["limits_enforced"] == true {
        // Placed before it was needed: already in its own cgroup.
        let groups = std::fs::read_to_string(format!("/proc/{spare_pid}/cgroup")).unwrap();
        assert!(groups.contains(&spare_id), "{groups}");
    }

    // Scale to zero, then a cold start: the spare is the instance that
    // answers, with a restore time, and another spare takes its place.
    scale_to_zero(&s, "iris").await;
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    let recs = s.records(Some("iris")).await;
    let last = recs.last().unwrap();
    assert_eq!(last["instance_id"], spare_id.as_str(), "{last}");
    assert_eq!(last["start"], "cold", "{last}");
    assert!(last["restore_ms"].as_f64().unwrap() > 0.0, "{last}");
    let all = instances(&s, "iris").await;
    let served = with_role(&all, "forked");
    assert_eq!(served.len(), 1, "{all:?}");
    assert_eq!(served[0]["pid"].as_u64().unwrap(), spare_pid);
    assert!(
        common::eventually(10, || async {
            spare().await.is_some_and(|v| v["id"] != spare_id.as_str())
        })
        .await,
        "a new spare: {:?}",
        instances(&s, "iris").await
    );

    // A spare killed: the next cold start forks as without one.
    let second = spare().await.unwrap();
    let second_pid = second["pid"].as_u64().unwrap();
    unsafe_kill(second_pid);
    assert!(
        common::eventually(10, || async {
            spare().await.is_none_or(|v| v["pid"] != second_pid)
        })
        .await
    );
    scale_to_zero(&s, "iris").await;
    assert_eq!(answer(&s, "iris", ROWS).await, setosa());
    let recs = s.records(Some("iris")).await;
    let last = recs.last().unwrap();
    assert_ne!(last["instance_id"], second["id"], "{last}");
    assert!(last["restore_ms"].as_f64().unwrap() > 0.0, "{last}");

    // A delete takes the template's spare with it.
    assert!(common::eventually(10, || async { spare().await.is_some() }).await);
    let third = spare().await.unwrap()["pid"].as_u64().unwrap();
    delete_leaves_nothing(&s, "iris", third, "spare").await;
}

/// The names of process `pid`'s threads.
fn thread_names(pid: u64) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A forked child watches for idle spells to give its free heap back (a
/// thread of its own, started after the fork: the template stays
/// single-threaded); with `VIRGA_HEAP_TRIM_IDLE_MS = "off"` it does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_forked_child_trims_its_heap_unless_told_not_to() {
    let s = Server::start(&[]).await;
    let iris = common::iris_model(&s);
    let manifest = |name: &str, env: &str| {
        model_manifest(name, "tabular-classification", "classical", &iris, true)
            .replace("[model]", &format!("{env}[model]"))
    };
    deploy_text(&s, "trim", &manifest("trim", ""));
    deploy_text(
        &s,
        "keep",
        &manifest("keep", "env = { VIRGA_HEAP_TRIM_IDLE_MS = \"off\" }\n"),
    );
    let rows = ROWS;
    let mut children = Vec::new();
    for name in ["trim", "keep"] {
        answer(&s, name, rows).await;
        let all = instances(&s, name).await;
        let child = with_role(&all, "forked")[0]["pid"].as_u64().unwrap();
        let template = with_role(&all, "template")[0]["pid"].as_u64().unwrap();
        assert!(
            !thread_names(template).iter().any(|n| n == "heap-trim"),
            "{:?}",
            thread_names(template)
        );
        children.push(child);
    }
    // A new thread names itself once it runs: until then it reads as its
    // process's name, so the trimmer is waited for, not sampled.
    let trims = || thread_names(children[0]).iter().any(|n| n == "heap-trim");
    assert!(
        common::eventually(10, || async { trims() }).await,
        "{:?}",
        thread_names(children[0])
    );
    // The child told not to trim started no thread at all, so none is on
    // its way to being named either.
    assert_eq!(
        thread_names(children[1]).len(),
        1,
        "{:?}",
        thread_names(children[1])
    );
}

/// A forked child has its own memory limit: one that runs out of memory
/// dies alone, with Lambda's error, and the template and its other
/// children keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_forked_child_out_of_memory_dies_alone() {
    use base64::Engine as _;
    let s = Server::start(&[]).await;
    let dir = s.dir.path();
    virga_engine::fixtures::colour_classifier(&dir.join("colours.onnx"), 8);
    let manifest = model_manifest(
        "colours",
        "image-classification",
        "tract",
        "colours.onnx",
        true,
    )
    .replace("memory_mb = 1024", "memory_mb = 128");
    deploy_text(&s, "colours", &manifest);
    let png = |side, rgb| {
        base64::engine::general_purpose::STANDARD
            .encode(virga_engine::image::solid_png(side, side, rgb))
    };
    let small = json!({"image": png(32, [200, 10, 10]), "top_k": 1}).to_string();
    // Two children, warm.
    let (a, b) = tokio::join!(answer(&s, "colours", &small), answer(&s, "colours", &small));
    assert_eq!(a, b);
    let before = instances(&s, "colours").await;
    let template = with_role(&before, "template")[0]["pid"].as_u64().unwrap();
    let children: Vec<u64> = with_role(&before, "forked")
        .iter()
        .map(|c| c["pid"].as_u64().unwrap())
        .collect();
    assert!(!children.is_empty(), "{before:?}");

    // A 64-megapixel image decodes to 192 MB: over a 128 MB instance.
    let bomb = json!({"image": png(8000, [1, 2, 3]), "top_k": 1}).to_string();
    let (status, headers, body) = s.invoke("colours", &bomb).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-amz-function-error"], "Unhandled", "{body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        err["errorType"],
        "Runtime.OutOfMemory",
        "{body}\n{}",
        s.log()
    );

    assert!(alive(template), "the template outlives its child's OOM");
    let dead: Vec<u64> = children.iter().copied().filter(|&p| !alive(p)).collect();
    assert_eq!(
        dead.len(),
        1,
        "exactly the child that ran it died: {children:?}"
    );
    assert_eq!(
        answer(&s, "colours", &small).await,
        a,
        "and the function serves on"
    );
    let recs = s.records(Some("colours")).await;
    assert!(
        recs.iter()
            .any(|r| r["error_type"] == "Runtime.OutOfMemory"),
        "{recs:?}"
    );
}

/// A function that cannot fork is refused at deploy, naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn a_snap_start_that_cannot_fork_is_refused_at_deploy() {
    let s = Server::start(&[]).await;
    for (manifest, says) in [
        (
            "name = \"f\"\nruntime = \"model\"\nsnap_start = \"fork\"\n[model]\ntask = \"image-classification\"\nengine = \"ort\"\npath = \"m.onnx\"\n",
            "not fork-safe",
        ),
        (
            "name = \"f\"\nsnap_start = \"fork\"\ncommand = [\"python3\", \"h.py\"]\n",
            "runtime = \\\"model\\\"",
        ),
    ] {
        let resp = s
            .http
            .put(s.url("/v1/functions/f"))
            .body(manifest)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let body = resp.text().await.unwrap();
        assert!(body.contains("snap_start") && body.contains(says), "{body}");
    }
}

fn unsafe_kill(pid: u64) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
