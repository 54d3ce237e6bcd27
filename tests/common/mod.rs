//! Starting the real `virga` binary for end-to-end tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub fn virga_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_virga"))
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

/// A `virga serve` process on 127.0.0.1:0 with its own data dir.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
    child: Option<Child>,
    addr: String,
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

impl Server {
    /// Writes each manifest to `fns/<name>.toml` and serves that directory.
    pub async fn start(functions: &[(&str, String)]) -> Server {
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
        let mut child = Command::new(virga_bin())
            .args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .arg("--functions")
            .arg(self.dir.path().join("fns"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("virga binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("listening on http://")
            .nth(1)
            .unwrap_or_else(|| panic!("no listening line: {line:?}; log: {}", self.log()))
            .trim()
            .to_string();
        self.addr = addr;
        self.child = Some(child);
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
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
        let out = Command::new(virga_bin())
            .args(args)
            .env("VIRGA_ENDPOINT", self.url(""))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
