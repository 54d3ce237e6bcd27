//! What the benchmarks share: an embedded platform with one function, a
//! hyper client and its closed loop (not every bench uses every piece).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// Starts an embedded platform (its own temporary data dir) serving one
/// function from `manifest`; the built-in runtime is `virga worker`.
/// Instances are sandboxed where the host allows it.
pub async fn platform(name: &str, manifest: &str) -> (tempfile::TempDir, virga_platform::Platform) {
    platform_with(name, manifest, |_| {}).await
}

/// As [`platform`], with `adjust` applied to the configuration last.
pub async fn platform_with(
    name: &str,
    manifest: &str,
    adjust: impl FnOnce(&mut virga_platform::PlatformConfig),
) -> (tempfile::TempDir, virga_platform::Platform) {
    let data = tempfile::tempdir().unwrap();
    let fns = data.path().join("fns");
    std::fs::create_dir_all(&fns).unwrap();
    std::fs::write(fns.join(format!("{name}.toml")), manifest).unwrap();
    let mut config = virga_platform::PlatformConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        data.path().join("data"),
    );
    config.functions_dir = Some(fns);
    // The bench binary is not `virga`: start the real one's runtime.
    config.builtin_runtime = Some(virga_platform::BuiltinRuntime {
        program: PathBuf::from(env!("CARGO_BIN_EXE_virga")),
        args: vec!["worker".into()],
        engines: Vec::new(),
    });
    config.jailer = Some(virga_platform::BuiltinRuntime {
        program: PathBuf::from(env!("CARGO_BIN_EXE_virga")),
        args: vec!["jail".into()],
        engines: Vec::new(),
    });
    // As in the lab: 64 instances of 1769 MB exceed a 24 GiB host's budget.
    config.max_memory_mb = Some(u64::MAX);
    adjust(&mut config);
    let platform = virga_platform::Platform::start(config).await.unwrap();
    (data, platform)
}

/// A bare axum server echoing `POST /hello`: the baseline the platform's
/// invoke path is measured against.
pub async fn bare_axum() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::post(|body: Bytes| async move { body }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub fn host_line() -> String {
    format!(
        "host: {} cores, {}; build: {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::consts::ARCH,
        // `cargo test --bench` runs a bench in the debug profile: say so.
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

/// One closed-loop measurement.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// `concurrency` users, each POSTing `body` (JSON) to `uri` again as soon as
/// its previous answer is in, for `secs`. A non-2xx answer or a function
/// error (`X-Amz-Function-Error`) counts as an error.
pub async fn closed_loop(
    client: &HttpClient,
    uri: &str,
    body: &'static [u8],
    concurrency: usize,
    secs: f64,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let uri: hyper::Uri = uri.parse().unwrap();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let req = hyper::Request::post(uri.clone())
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(body)))
                    .unwrap();
                let t = Instant::now();
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success()
                            && !resp.headers().contains_key("x-amz-function-error");
                        let _ = resp.into_body().collect().await;
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
            }
            (h, errors)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        all.add(&h).unwrap();
        errors += e;
    }
    Run {
        rps: all.len() as f64 / secs,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
        errors,
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
