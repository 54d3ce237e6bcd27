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
    Server::start_with(
        &common::virga_bin(),
        &[],
        &[
            "--cluster",
            &broker.url(),
            "--node",
            name,
            "--cluster-credentials",
            creds.to_str().unwrap(),
        ],
        &[],
    )
    .await
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
