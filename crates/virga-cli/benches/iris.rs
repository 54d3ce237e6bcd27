//! virga's `iris` function against a FastAPI peer, side by side in one run
//! on one client: the same logistic regression (trained here by `virga
//! models train`, exported to ONNX for the peer by
//! `bench/peers/fastapi-iris/make_model.py`), the same request
//! (`{"instances": [[5.1, 3.5, 1.4, 0.2]]}`) and answer shape, closed loop
//! at concurrency 64: requests/s, p50/p99 and the ratio (goal: virga >= 2x).
//!
//! - virga: `virga serve` as a process of its own; the function has
//!   `memory_mb = 1769` (1 vCPU per instance) and `max_concurrency = 2`,
//!   engine `classical`, 1 thread.
//! - the peer: FastAPI + uvicorn[standard] with 2 workers, onnxruntime with
//!   `intra_op_num_threads = 1`, a plain `def` endpoint with a pydantic body
//!   (`bench/peers/fastapi-iris/`, pinned in its `requirements.txt`).
//!
//! Run with `cargo bench -p virga-cli --bench iris` (a release build).
//! The peer's Python is `VIRGA_PEER_PYTHON` when set, else a virtual
//! environment made once under `target/peers/` from the requirements file
//! (pip needs the package index the first time). `VIRGA_BENCH_SECS` sets the
//! seconds per measurement (default 10), `VIRGA_BENCH_ROUNDS` the
//! interleaved rounds (default 3; medians are kept).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::{closed_loop, env_num, median, Run};

const BODY: &[u8] = b"{\"instances\": [[5.1, 3.5, 1.4, 0.2]]}";
const CONCURRENCY: usize = 64;

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/peers/fastapi-iris")
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// The peer's Python: `VIRGA_PEER_PYTHON`, else a venv under target/ made
/// (again, when the requirements changed) from the requirements file.
fn peer_python() -> PathBuf {
    if let Some(p) = std::env::var_os("VIRGA_PEER_PYTHON") {
        return PathBuf::from(p);
    }
    let requirements = peer_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/peers/fastapi-iris");
    let stamp = venv.join("requirements.txt");
    let python = venv.join("bin/python");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(&wanted) {
        println!("(installing the peer's requirements into target/peers/fastapi-iris)");
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(&python)
            .args(["-m", "pip", "install", "-q", "--no-deps", "-r"])
            .arg(&requirements));
        std::fs::write(&stamp, wanted).unwrap();
    }
    python
}

/// The uvicorn process tree; stopped with SIGTERM (uvicorn stops its
/// workers) when dropped.
struct Peer {
    child: Child,
    addr: String,
}

impl Peer {
    fn start(python: &Path, model: &Path) -> Peer {
        let mut child = Command::new(python)
            .arg(peer_dir().join("serve.py"))
            .args(["--workers", "2"])
            .env("IRIS_MODEL", model)
            .stdout(Stdio::piped())
            .spawn()
            .expect("the peer starts");
        let addr = common::listening_on(&mut child).expect("the peer says where it listens");
        Peer { child, addr }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// POSTs the request once; the answer's predictions.
async fn predictions(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let mut tries = 0;
    loop {
        // The peer's workers may still be loading their model.
        let req = http.post(url).header("content-type", "application/json");
        match req.body(BODY).send().await {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap();
                return v["predictions"].clone();
            }
            other if tries >= 100 => panic!("{url}: {other:?}"),
            _ => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

fn main() {
    let secs = env_num("VIRGA_BENCH_SECS", 10.0);
    let rounds = env_num("VIRGA_BENCH_ROUNDS", 3.0).max(1.0) as usize;
    let python = peer_python();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = common::Server::start(&[]).await;
        let model = common::iris_model(&s);
        s.deploy(
            "iris",
            &format!(
                "name = \"iris\"\nruntime = \"model\"\nmemory_mb = 1769\nmax_concurrency = 2\ntimeout_ms = 3000\n[model]\ntask = \"tabular-classification\"\nengine = \"classical\"\npath = \"{model}\"\nthreads = 1\n"
            ),
        )
        .await;
        let onnx = s.dir.path().join("iris-logistic.onnx");
        run(Command::new(&python)
            .arg(peer_dir().join("make_model.py"))
            .arg(&model)
            .arg(&onnx)
            .stdout(Stdio::null()));
        let peer = Peer::start(&python, &onnx);

        let virga_uri = s.url("/2015-03-31/functions/iris/invocations");
        let peer_uri = format!("http://{}/predict", peer.addr);
        let http = reqwest::Client::new();
        let (ours, theirs) = (
            predictions(&http, &virga_uri).await,
            predictions(&http, &peer_uri).await,
        );
        assert_eq!(ours, theirs, "both servers answer the same");

        println!("{}", support::host_line());
        println!(
            "virga `iris` (2 instances x 1 vCPU) vs FastAPI + uvicorn (2 workers) + onnxruntime; \
             concurrency {CONCURRENCY}, {secs} s per measurement, {rounds} interleaved rounds, medians; \
             both answer {ours}\n"
        );
        let client = support::http_client();
        // Warm up: both instances started, every connection open.
        closed_loop(&client, &virga_uri, BODY, CONCURRENCY, 2.0).await;
        closed_loop(&client, &peer_uri, BODY, CONCURRENCY, 2.0).await;
        let (mut v, mut p): (Vec<Run>, Vec<Run>) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            v.push(closed_loop(&client, &virga_uri, BODY, CONCURRENCY, secs).await);
            p.push(closed_loop(&client, &peer_uri, BODY, CONCURRENCY, secs).await);
        }
        let m = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>8}",
            "server", "req/s", "p50 ms", "p99 ms", "errors"
        );
        for (name, runs) in [("virga", &v), ("fastapi", &p)] {
            println!(
                "{name:<8} {:>10.0} {:>10.2} {:>10.2} {:>8}",
                m(runs, |r| r.rps),
                m(runs, |r| r.p50_us) / 1e3,
                m(runs, |r| r.p99_us) / 1e3,
                runs.iter().map(|r| r.errors).sum::<u64>()
            );
        }
        let ratio = m(&v, |r| r.rps) / m(&p, |r| r.rps);
        println!(
            "\nvirga / fastapi req/s: {ratio:.2}x (goal >= 2x: {})",
            if ratio >= 2.0 { "met" } else { "NOT met" }
        );
        drop(peer);
    });
}
