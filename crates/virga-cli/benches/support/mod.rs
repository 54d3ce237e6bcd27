//! What the benchmarks share: an embedded platform with one function, and a
//! hyper client (not every bench uses every piece).
#![allow(dead_code)]

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
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
    });
    config.jailer = Some(virga_platform::BuiltinRuntime {
        program: PathBuf::from(env!("CARGO_BIN_EXE_virga")),
        args: vec!["jail".into()],
    });
    // As in the lab: 64 instances of 1769 MB exceed a 24 GiB host's budget.
    config.max_memory_mb = Some(u64::MAX);
    adjust(&mut config);
    let platform = virga_platform::Platform::start(config).await.unwrap();
    (data, platform)
}

pub fn host_line() -> String {
    format!(
        "host: {} cores, {}; build: release",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::env::consts::ARCH
    )
}
