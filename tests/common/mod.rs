//! Starting the real `virga` binary for end-to-end tests, and for the
//! benchmarks that measure it as a process of its own (`soak`, `iris`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub fn virga_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virga"))
}

/// Runs the `virga` CLI with no server: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    output(Command::new(virga_bin()).args(args))
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn runtimes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/runtimes")
}

/// A manifest running tests/runtimes/behave.py, with `extra` lines appended.
pub fn manifest(name: &str, extra: &str) -> String {
    let script = runtimes_dir().join("behave.py");
    format!(
        "name = \"{name}\"\ncommand = [\"python3\", \"{}\"]\n{extra}\n",
        script.display()
    )
}

/// The functions of the chaos test (and the soak benchmark): `ok` (behave.py,
/// 3 instances), `flaky` (behave.py, a 600 ms timeout, 128 MB, one retry) and
/// `svc` (service.py in service mode, two tasks of two slots).
pub fn chaos_functions() -> Vec<(&'static str, String)> {
    let service = runtimes_dir().join("service.py");
    vec![
        (
            "ok",
            manifest(
                "ok",
                "max_concurrency = 3\nmax_queue = 40\ntimeout_ms = 2000\nmemory_mb = 128",
            ),
        ),
        (
            "flaky",
            manifest(
                "flaky",
                "max_concurrency = 2\nmax_queue = 40\ntimeout_ms = 600\nmemory_mb = 128\nmax_retries = 1\nretry_delay_ms = 50",
            ),
        ),
        (
            "svc",
            format!(
                "name = \"svc\"\ncommand = [\"python3\", \"{}\"]\nmode = \"service\"\ncpu = 0.5\nmemory_mb = 256\ninstance_concurrency = 2\nmax_instances = 2\nmax_queue = 40\ntimeout_ms = 2000\n",
                service.display()
            ),
        ),
    ]
}

/// A seed from the environment variable `var`, else from the clock (print
/// it, so a run can be replayed).
pub fn seed(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// xorshift64*: small, seedable, good enough to pick actions.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Polls `check` every 50 ms for at most `secs` seconds: true once it holds.
pub async fn eventually<F, Fut>(secs: u64, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// For "nothing happens" assertions: polls `check` every 50 ms for all of
/// `window` and is false at the first poll where it does not hold (a single
/// look at the window's end would miss what came and went).
pub async fn throughout<F, Fut>(window: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + window;
    loop {
        if !check().await {
            return false;
        }
        if std::time::Instant::now() >= end {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The address in the first line `child` prints to its piped stdout,
/// `... listening on http://<addr>`.
pub fn listening_on(child: &mut Child) -> Option<String> {
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    Some(
        line.split("listening on http://")
            .nth(1)?
            .trim()
            .to_string(),
    )
}

/// A `virga serve` process on 127.0.0.1:0 with its own data dir.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    child: Option<Child>,
    addr: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
}

/// A cheap handle for concurrent requests.
#[derive(Clone)]
pub struct Handle {
    http: reqwest::Client,
    addr: String,
}

impl Handle {
    /// A synchronous invocation: (status, headers, body).
    pub async fn invoke(
        &self,
        function: &str,
        payload: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.invoke_as(function, payload, "RequestResponse").await
    }

    /// Queues an asynchronous invocation (invocation type Event).
    pub async fn invoke_event(
        &self,
        function: &str,
        payload: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.invoke_as(function, payload, "Event").await
    }

    async fn invoke_as(
        &self,
        function: &str,
        payload: &str,
        kind: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self
            .http
            .post(format!(
                "http://{}/2015-03-31/functions/{function}/invocations",
                self.addr
            ))
            .header("x-amz-invocation-type", kind)
            .body(payload.to_string())
            .send()
            .await
            .expect("request reaches the server");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }
}

impl Handle {
    /// A synchronous invocation whose caller hangs up after `after`: true
    /// when it did hang up (no answer came before).
    pub async fn invoke_and_hang_up(&self, function: &str, payload: &str, after: Duration) -> bool {
        self.hang_up(
            &format!("/2015-03-31/functions/{function}/invocations"),
            payload,
            after,
        )
        .await
    }

    /// A POST to `path` whose caller hangs up after `after`: true when it
    /// did hang up.
    pub async fn hang_up(&self, path: &str, body: &str, after: Duration) -> bool {
        let client = reqwest::Client::builder().timeout(after).build().unwrap();
        match client
            .post(format!("http://{}{path}", self.addr))
            .body(body.to_string())
            .send()
            .await
        {
            Ok(resp) => resp.bytes().await.is_err(),
            Err(e) => e.is_timeout(),
        }
    }
}

impl Server {
    /// Writes each manifest to `fns/<name>.toml` and serves that directory.
    pub async fn start(functions: &[(&str, String)]) -> Server {
        Server::start_with(&virga_bin(), &[], &[], functions).await
    }

    /// As [`Server::start`], running the binary at `bin` with `env` added
    /// and `args` after `virga serve`'s own.
    pub async fn start_with(
        bin: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        functions: &[(&str, String)],
    ) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let fns = dir.path().join("fns");
        std::fs::create_dir_all(&fns).unwrap();
        for (name, text) in functions {
            std::fs::write(fns.join(format!("{name}.toml")), text).unwrap();
        }
        let mut s = Server {
            dir,
            http: reqwest::Client::new(),
            child: None,
            addr: String::new(),
            bin: bin.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let mut child = Command::new(&self.bin)
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .arg("--functions")
            .arg(self.dir.path().join("fns"))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("virga binary starts");
        self.addr = listening_on(&mut child)
            .unwrap_or_else(|| panic!("no listening line; log: {}", self.log()));
        self.child = Some(child);
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// Deploys (or redeploys) a manifest through the API.
    pub async fn deploy(&self, name: &str, manifest: &str) {
        let resp = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .body(manifest.to_string())
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// Deletes a function through the API.
    pub async fn delete(&self, name: &str) {
        let resp = self
            .http
            .delete(self.url(&format!("/v1/functions/{name}")))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// The states of a function's instances (`starting`, `idle`, `busy`).
    pub async fn instance_states(&self, name: &str) -> Vec<String> {
        self.get(&format!("/v1/functions/{name}/instances")).await["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| i["state"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits (at most `limit`) until `ok` holds for the records of
    /// `function`; returns them.
    pub async fn records_until(
        &self,
        function: &str,
        limit: Duration,
        ok: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let r = self.records(Some(function)).await;
            if ok(&r) || std::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most `limit`) until no instance of `function` is busy or
    /// starting and nothing is queued; panics otherwise.
    pub async fn settled(&self, function: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let states = self.instance_states(function).await;
            let queued = self.get(&format!("/v1/functions/{function}")).await["queued"]
                .as_u64()
                .unwrap_or(0);
            if queued == 0 && states.iter().all(|s| s == "idle") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{function} did not settle: instances {states:?}, {queued} queued; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Stops the server gracefully (SIGTERM) and starts it again on the same data dir.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the server with SIGKILL (no shutdown at all) and starts it again
    /// on the same data dir.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server with SIGKILL: no shutdown at all.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn handle(&self) -> Handle {
        Handle {
            http: self.http.clone(),
            addr: self.addr.clone(),
        }
    }

    pub async fn invoke(
        &self,
        function: &str,
        payload: &str,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.handle().invoke(function, payload).await
    }

    pub async fn invoke_raw(
        &self,
        function: &str,
        payload: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{function}/invocations")))
            .body(payload.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// GET `path` as text (the Prometheus exposition, say).
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn records(&self, function: Option<&str>) -> Vec<Value> {
        let path = match function {
            Some(f) => format!("/v1/invocations?function={f}"),
            None => "/v1/invocations".into(),
        };
        self.get(&path).await["invocations"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Runs the `virga` CLI against this server: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        output(
            Command::new(virga_bin())
                .args(args)
                .env("VIRGA_ENDPOINT", self.url("")),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Trains a logistic regression on iris into the server's dir and returns its path.
pub fn iris_model(s: &Server) -> String {
    let path = s.dir.path().join("iris-logistic.model");
    let (code, out, err) = s.cli(&[
        "models",
        "train",
        "--algorithm",
        "logistic",
        "--dataset",
        "iris",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    path.display().to_string()
}

/// What the server `pid` has left running: its child processes and the
/// cgroup directories of its instances (named `<instance>-<pid>`).
pub fn leftovers(pid: u32) -> (usize, Vec<String>) {
    let children = children(pid).len();
    let cgroups = [
        "/sys/fs/cgroup/memory/virga",
        "/sys/fs/cgroup/cpu/virga",
        "/sys/fs/cgroup/virga",
    ]
    .iter()
    .filter_map(|root| std::fs::read_dir(root).ok())
    .flat_map(|d| d.flatten())
    .map(|e| e.file_name().to_string_lossy().into_owned())
    .filter(|n| n.ends_with(&format!("-{pid}")))
    .collect();
    (children, cgroups)
}

/// The pids of the child processes of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // After "(comm)": state, then the parent's pid.
            let parent = stat.rsplit(')').next()?.split_whitespace().nth(1)?;
            (parent == pid.to_string()).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

/// A gauge without labels from Prometheus text (`/metrics`).
pub fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Open descriptors of process `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}
