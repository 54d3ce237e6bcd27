//! Inputs and peers that try to hurt the platform: each test pins one way an
//! attacker or a careless client got through once, and checks the platform
//! and other callers keep being served.

mod common;

use std::time::{Duration, Instant};

use common::{manifest, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn half_sent_request_headers_are_cut_off_and_others_keep_being_served() {
    let s = Server::start(&[("echo", manifest("echo", ""))]).await;
    let addr = s.url("").trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        slow.push(c);
    }
    let started = Instant::now();
    // Everyone else is served meanwhile.
    for _ in 0..5 {
        assert_eq!(s.invoke("echo", "{}").await.0, 200);
    }
    // Each half-sent request is closed once the header timeout passes.
    for mut c in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a half-sent request was held open for 30 s");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "cut off before any reasonable client could finish its headers"
    );
    assert_eq!(s.invoke("echo", "{}").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deploys_of_one_name_get_distinct_versions() {
    let s = Server::start(&[]).await;
    let deploys = (0..30).map(|i| {
        let http = s.http.clone();
        let url = s.url("/v1/functions/race");
        let text = manifest("race", &format!("timeout_ms = {}", 1000 + i));
        async move {
            let resp = http.put(url).body(text).send().await.unwrap();
            assert!(resp.status().is_success());
            let info: Value = resp.json().await.unwrap();
            let version: u64 = info["version"].as_str().unwrap().parse().unwrap();
            (version, info["timeout_ms"].as_u64().unwrap())
        }
    });
    let mut results = futures_join_all(deploys).await;
    results.sort();
    let versions: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert_eq!(versions, (1..=30).collect::<Vec<_>>(), "{results:?}");
    // The live revision is the one stored last.
    let (last_version, last_timeout) = results[29];
    let live = s.get("/v1/functions/race").await;
    assert_eq!(live["version"], last_version.to_string());
    assert_eq!(live["timeout_ms"], last_timeout);
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_dir_is_private_to_the_platform() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut s = Server::start(&[]).await;
    let data = s.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    // A data dir made world-readable by hand is tightened at the next start.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.restart().await;
    assert_eq!(mode(&data), 0o700);
}

// ---- The sandbox: a deployed function attempts each attack and must fail.

fn hostile(name: &str, extra: &str) -> String {
    let script = common::runtimes_dir().join("hostile.py");
    format!(
        "name = \"{name}\"\ncommand = [\"python3\", \"{}\"]\n{extra}\n",
        script.display()
    )
}

/// Whether this process runs as root: only then can the platform sandbox,
/// and then it must.
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// A platform with a hostile function and a victim; `None` where the host
/// cannot sandbox (not root), after saying so.
async fn sandboxed(extra: &str) -> Option<Server> {
    if !root() {
        eprintln!("skipped: only root can sandbox instances");
        return None;
    }
    let s = Server::start(&[
        ("evil", hostile("evil", extra)),
        (
            "victim",
            manifest("victim", "env = { SECRET = \"4111-1111-1111-1111\" }"),
        ),
    ])
    .await;
    assert!(
        s.log().contains("instances are sandboxed"),
        "running as root, the platform must sandbox: {}",
        s.log()
    );
    Some(s)
}

/// Runs one attempt in the hostile function: (succeeded, detail).
async fn attempt(s: &Server, ev: Value) -> (bool, Value) {
    let (status, _, body) = s.invoke("evil", &ev.to_string()).await;
    assert_eq!(status, 200, "{ev}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    (v["ok"].as_bool().unwrap(), v["detail"].clone())
}

/// The platform and the victim still serve, and the victim's secret is its own.
async fn others_unharmed(s: &Server) {
    let (status, _, body) = s.invoke("victim", "{}").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.get("/v1/functions").await["functions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_instance_runs_without_privileges() {
    let Some(s) = sandboxed("").await else { return };
    let (_, me) = attempt(&s, json!({"try": "whoami"})).await;
    let uid = me["uid"].as_u64().unwrap();
    assert!(uid >= 1_000_000, "{me}");
    assert_eq!(me["euid"], uid);
    assert_eq!(me["gid"], uid);
    assert_eq!(me["groups"], json!([]));
    assert_eq!(me["cap_eff"], "0000000000000000", "{me}");
    assert_eq!(me["no_new_privs"], "1");
    assert_eq!(me["seccomp"], "2", "a seccomp filter is installed");
    assert_eq!(me["nofile"], json!([1024, 1024]));
    assert_eq!(me["core"], json!([0, 0]));
    assert_eq!(me["cwd"], "/var/task");
    assert_eq!(me["task_root"], "/var/task");
    assert_eq!(me["runtime_api"], "127.0.0.1:9001");
    assert_eq!(
        me["leaked"],
        json!([]),
        "the jail's spec reached the runtime"
    );
    // Its own pid namespace: the runtime is the jail init's first child.
    assert!(me["pid"].as_u64().unwrap() < 10, "{me}");
    assert_eq!(s.invoke("victim", "{}").await.0, 200);
    let inst = s.get("/v1/functions/evil/instances").await;
    assert_eq!(inst["instances"][0]["isolation"], "sandbox", "{inst}");
    let rec = s.records(Some("evil")).await;
    assert_eq!(rec[0]["isolation"], "sandbox", "{:?}", rec[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_cannot_reach_the_platforms_files() {
    let Some(s) = sandboxed("").await else { return };
    let data = s.dir.path().join("data");
    for path in [
        data.join("virga.db"),
        data.clone(),
        s.dir.path().join("fns/victim.toml"),
        // Its code is its own: the manifests beside it (with their `env`)
        // are not part of it.
        "/var/task/victim.toml".into(),
        "/var/task/evil.toml".into(),
        "/etc/shadow".into(),
        "/root/.bash_history".into(),
        "/sys/fs/cgroup/memory/cgroup.procs".into(),
    ] {
        let (ok, detail) = attempt(&s, json!({"try": "read", "path": path})).await;
        assert!(!ok, "read {}: {detail}", path.display());
    }
    let (ok, _) = attempt(&s, json!({"try": "listdir", "path": data})).await;
    assert!(!ok, "the data dir is visible");
    for path in [
        "/var/task/pwned".to_string(),
        "/usr/pwned".to_string(),
        "/etc/pwned".to_string(),
        "/pwned".to_string(),
        data.join("virga.db").display().to_string(),
        // Moving itself out of its memory and CPU limits.
        "/sys/fs/cgroup/memory/cgroup.procs".to_string(),
        "/sys/fs/cgroup/cpu/cgroup.procs".to_string(),
    ] {
        let (ok, detail) = attempt(&s, json!({"try": "write", "path": path})).await;
        assert!(!ok, "wrote {path}: {detail}");
    }
    let (ok, _) = attempt(&s, json!({"try": "write", "path": "/tmp/mine"})).await;
    assert!(ok, "/tmp is the function's to write");
    others_unharmed(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_cannot_see_signal_or_trace_other_processes() {
    let Some(s) = sandboxed("").await else { return };
    // Start the victim so it has a process to go after.
    assert_eq!(s.invoke("victim", "{}").await.0, 200);
    let victim_pid = s.get("/v1/functions/victim/instances").await["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    let (_, pids) = attempt(&s, json!({"try": "pids"})).await;
    let pids: Vec<u64> = serde_json::from_value(pids).unwrap();
    assert!(
        !pids.contains(&(s.pid() as u64)) && pids.iter().all(|&p| p < 10),
        "other processes are visible: {pids:?}"
    );
    for target in [s.pid() as u64, victim_pid, 1] {
        for signal in [9, 19] {
            let (ok, detail) =
                attempt(&s, json!({"try": "kill", "pid": target, "signal": signal})).await;
            assert!(!ok, "signal {signal} to {target}: {detail}");
        }
        let (ok, _) = attempt(
            &s,
            json!({"try": "read", "path": format!("/proc/{target}/environ")}),
        )
        .await;
        assert!(!ok, "read the environ of {target}");
    }
    for name in [
        "ptrace",
        "mount",
        "unshare_user",
        "unshare_net",
        "setuid0",
        "chroot",
        "keyctl",
        "bpf",
    ] {
        let (ok, detail) = attempt(&s, json!({"try": "syscall", "name": name})).await;
        assert!(!ok, "{name} succeeded: {detail}");
    }
    others_unharmed(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_reaches_neither_the_gateway_nor_the_network() {
    let Some(s) = sandboxed("").await else { return };
    let port: u16 = s.url("").rsplit(':').next().unwrap().parse().unwrap();
    let (ok, detail) = attempt(
        &s,
        json!({"try": "connect", "host": "127.0.0.1", "port": port}),
    )
    .await;
    assert!(!ok, "reached the gateway: {detail}");
    let (ok, detail) = attempt(
        &s,
        json!({"try": "connect", "host": "10.0.0.1", "port": 80}),
    )
    .await;
    assert!(!ok, "reached the network: {detail}");
    // Its own Runtime API is the only thing listening in its namespace.
    let (ok, tcp) = attempt(&s, json!({"try": "read", "path": "/proc/net/tcp"})).await;
    assert!(ok, "{tcp}");
    others_unharmed(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_stops_at_the_pids_limit_and_the_function_keeps_serving() {
    let Some(s) = sandboxed("memory_mb = 2048\ntimeout_ms = 60000").await else {
        return;
    };
    if !std::path::Path::new("/sys/fs/cgroup/pids/virga").exists()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        eprintln!("skipped: no pids controller");
        return;
    }
    let (ok, started) = attempt(&s, json!({"try": "threads", "limit": 5000})).await;
    assert!(!ok, "5000 threads started: {started}");
    assert!(started.as_u64().unwrap() < 1024, "{started}");
    let (ok, _) = attempt(&s, json!({"try": "whoami"})).await;
    assert!(ok);
    others_unharmed(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_limited_to_the_ephemeral_storage() {
    let Some(s) = sandboxed("memory_mb = 1024\ntimeout_ms = 60000").await else {
        return;
    };
    let (ok, detail) = attempt(&s, json!({"try": "fill_tmp", "limit_mb": 700})).await;
    assert!(!ok, "wrote 700 MB to a 512 MB /tmp: {detail}");
    assert_eq!(detail["errno"], "ENOSPC", "{detail}");
    let mb = detail["mb"].as_u64().unwrap();
    assert!((500..=512).contains(&mb), "{detail}");
    let (ok, _) = attempt(&s, json!({"try": "write", "path": "/tmp/after"})).await;
    assert!(ok, "the function keeps serving with /tmp freed");
    others_unharmed(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_process_of_a_function_outlives_its_instance() {
    let Some(s) = sandboxed("").await else { return };
    let (_, me) = attempt(&s, json!({"try": "whoami"})).await;
    let uid = me["uid"].as_u64().unwrap().to_string();
    let (ok, _) = attempt(&s, json!({"try": "escape"})).await;
    assert!(ok);
    let owned_by = |uid: &str| {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("status")).is_ok_and(|st| {
                    st.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .is_some_and(|l| l.split_whitespace().nth(1) == Some(uid))
                })
            })
            .count()
    };
    assert!(
        owned_by(&uid) >= 2,
        "the runtime and its escaped sleeper run"
    );
    // Scale to zero.
    let resp = s
        .http
        .delete(s.url("/v1/functions/evil/instances"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert!(
        common::eventually(10, || async { owned_by(&uid) == 0 }).await,
        "a process of the function survived scale-to-zero"
    );
    others_unharmed(&s).await;
}
