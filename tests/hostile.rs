//! Inputs and peers that try to hurt the platform: each test pins one way an
//! attacker or a careless client got through once, and checks the platform
//! and other callers keep being served.

mod common;

use std::time::{Duration, Instant};

use common::{manifest, Server};
use serde_json::Value;
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
        let url = s.url("/v1/functions/race?base_dir=/tmp");
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
