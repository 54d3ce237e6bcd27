//! Access control end to end: `virga serve --auth sigv4` with keys from
//! `virga keys create`, through the AWS CLI, the virga CLI and plain HTTP;
//! the Host check on loopback binds; the audit log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{manifest, virga_bin, Server};
use serde_json::Value;

/// A server requiring signatures, serving `echo` and `other`.
async fn signed_server() -> Server {
    Server::start_with(
        &virga_bin(),
        &[],
        &["--auth", "sigv4"],
        &[
            ("echo", manifest("echo", "env = { SECRET = \"hunter2\" }")),
            ("other", manifest("other", "")),
        ],
    )
    .await
}

fn data_dir(s: &Server) -> PathBuf {
    s.dir.path().join("data")
}

/// `virga` with only the given environment of AWS settings (HOME points
/// at an empty dir, so no credentials file of this machine counts).
fn virga(s: &Server, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = Command::new(virga_bin())
        .args(args)
        .env("VIRGA_ENDPOINT", s.url(""))
        .env("HOME", s.dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `virga keys create NAME --role ROLE [extra] --format json` on `dir`.
fn create_key(dir: &Path, name: &str, role: &str, extra: &[&str]) -> Value {
    let out = Command::new(virga_bin())
        .args(["keys", "create", name, "--data-dir"])
        .arg(dir)
        .args(["--role", role, "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn creds(key: &Value) -> [(&'static str, String); 2] {
    [
        (
            "AWS_ACCESS_KEY_ID",
            key["access_key_id"].as_str().unwrap().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            key["secret_access_key"].as_str().unwrap().to_string(),
        ),
    ]
}

fn as_env<'a>(c: &'a [(&'static str, String); 2]) -> [(&'static str, &'a str); 2] {
    [(c[0].0, c[0].1.as_str()), (c[1].0, c[1].1.as_str())]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_works_with_a_created_key_and_gets_lambdas_errors_without() {
    let Ok(version) = Command::new("aws").arg("--version").output() else {
        eprintln!("skipping: the AWS CLI is not installed");
        return;
    };
    let v2 = String::from_utf8_lossy(&version.stdout).starts_with("aws-cli/2");
    let s = signed_server().await;
    // Made while the server runs: it needs no restart to know it.
    let key = create_key(&data_dir(&s), "admin", "admin", &[]);
    let out = s.dir.path().join("out.json");
    let aws = |id: &str, secret: &str, extra: &[&str]| {
        let result = Command::new("aws")
            .args(["lambda", "invoke", "--endpoint-url", &s.url("")])
            .args(["--function-name", "echo"])
            .args(if v2 {
                &["--cli-binary-format", "raw-in-base64-out"][..]
            } else {
                &[]
            })
            .args(["--payload", r#"{"from":"aws"}"#])
            .args(extra)
            .arg(&out)
            .env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("HOME", s.dir.path())
            .output()
            .unwrap();
        (
            result.status.success(),
            String::from_utf8_lossy(&result.stdout).into_owned()
                + &String::from_utf8_lossy(&result.stderr),
        )
    };
    let id = key["access_key_id"].as_str().unwrap();
    let secret = key["secret_access_key"].as_str().unwrap();
    let (ok, text) = aws(id, secret, &[]);
    assert!(ok, "{text}");
    let body: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(body["echo"]["from"], "aws");

    let (ok, text) = aws("VIRGANOTAKEY", secret, &[]);
    assert!(
        !ok && text.contains("UnrecognizedClientException"),
        "{text}"
    );
    let (ok, text) = aws(id, "not-the-secret", &[]);
    assert!(!ok && text.contains("InvalidSignatureException"), "{text}");
    let (ok, text) = aws(id, secret, &["--no-sign-request"]);
    assert!(
        !ok && text.contains("UnrecognizedClientException"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invoke_key_invokes_its_functions_only_until_revoked() {
    let s = signed_server().await;
    let dir = data_dir(&s);
    let admin = creds(&create_key(&dir, "admin", "admin", &[]));
    let ci = create_key(&dir, "ci", "invoke", &["--functions", "ech*"]);
    let ci_creds = creds(&ci);
    let ci_env = as_env(&ci_creds);

    let (code, out, err) = virga(&s, &ci_env, &["invoke", "echo", "--payload", "{\"n\":1}"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"n\": 1"), "{out}");
    let (code, _, err) = virga(&s, &ci_env, &["invoke", "other"]);
    assert_ne!(code, 0);
    assert!(err.contains("AccessDeniedException"), "{err}");
    let fns = s.dir.path().join("fns/other.toml");
    let (code, _, err) = virga(&s, &ci_env, &["deploy", fns.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("AccessDeniedException") && err.contains("deploy"),
        "{err}"
    );
    let (code, _, err) = virga(&s, &ci_env, &["delete", "echo"]);
    assert_ne!(code, 0);
    assert!(err.contains("AccessDeniedException"), "{err}");
    // Its listing shows its functions, and env values hidden.
    let (code, out, err) = virga(&s, &ci_env, &["ls", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"]);

    // The admin deploys; without credentials nothing but health passes.
    let (code, out, err) = virga(&s, &as_env(&admin), &["deploy", fns.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = virga(&s, &[], &["ls"]);
    assert_ne!(code, 0);
    assert!(err.contains("UnrecognizedClientException"), "{err}");
    let health = reqwest::get(s.url("/v2/health/live")).await.unwrap();
    assert_eq!(health.status(), 200);

    // A revoked key stops working at the next request.
    let (code, _, err) = virga(
        &s,
        &[],
        &["keys", "revoke", "ci", "--data-dir", dir.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = virga(&s, &ci_env, &["invoke", "echo"]);
    assert_ne!(code, 0);
    assert!(err.contains("UnrecognizedClientException"), "{err}");

    // The audit log has the story: keys, deploy, denials, with key ids.
    let (code, out, err) = virga(
        &s,
        &[],
        &[
            "audit",
            "--data-dir",
            dir.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let log: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ci_id = ci["access_key_id"].as_str().unwrap();
    let has = |event: &str, key: &str| log.iter().any(|e| e["event"] == event && e["key"] == key);
    assert!(has("key-create", ci_id), "{out}");
    assert!(has("key-revoke", ci_id), "{out}");
    assert!(has("deploy", &admin[0].1), "{out}");
    assert!(has("denied", ci_id), "{out}");
    assert!(log
        .iter()
        .filter(|e| e["event"] == "denied" || e["event"] == "deploy")
        .all(|e| e["source"].as_str().unwrap().starts_with("127.0.0.1:")));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_values_and_bearer_tokens() {
    let s = signed_server().await;
    let dir = data_dir(&s);
    let admin = create_key(&dir, "admin", "admin", &[]);
    let http = reqwest::Client::new();
    // Signed here as the CLI signs, with the admin's key: env in full.
    let signer = virga_sigv4::Signer::new(
        virga_sigv4::Credentials::new(
            admin["access_key_id"].as_str().unwrap(),
            admin["secret_access_key"].as_str().unwrap(),
            None,
        ),
        "us-east-1",
        "lambda",
    );
    let mut req = http.get(s.url("/v1/functions/echo")).build().unwrap();
    signer.sign_reqwest(&mut req).unwrap();
    let f: Value = http.execute(req).await.unwrap().json().await.unwrap();
    assert_eq!(f["manifest"]["env"]["SECRET"], "hunter2", "{f}");
    assert!(f.get("env_redacted").is_none());

    let token = create_key(&dir, "curl", "invoke", &["--token", "--functions", "echo"]);
    let token = token["token"].as_str().unwrap().to_string();
    let get = |auth: Option<String>| {
        let mut req = http.get(s.url("/v1/functions/echo"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let resp = get(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let f: Value = resp.json().await.unwrap();
    assert_eq!(f["manifest"]["env"]["SECRET"], "***");
    assert_eq!(f["env_redacted"], true);
    let resp = http
        .post(s.url("/2015-03-31/functions/echo/invocations"))
        .header("authorization", format!("Bearer {token}"))
        .body("{\"t\":1}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = get(Some("Bearer virga_not_a_token".into())).await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "UnrecognizedClientException"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_binds_answer_loopback_hosts_only() {
    let s = Server::start(&[("echo", manifest("echo", ""))]).await;
    let port = s.url("").rsplit(':').next().unwrap().to_string();
    let http = reqwest::Client::new();
    for (host, status) in [
        ("evil.example".to_string(), 403),
        (format!("evil.example:{port}"), 403),
        ("localhost".to_string(), 200),
        (format!("localhost:{port}"), 200),
        (format!("127.0.0.1:{port}"), 200),
        ("[::1]".to_string(), 200),
        (format!("[::1]:{port}"), 200),
    ] {
        let resp = http
            .get(s.url("/v1/functions"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "Host: {host}");
        if status == 403 {
            assert_eq!(resp.headers()["x-amzn-errortype"], "AccessDeniedException");
        }
    }
    // Without --auth, signed requests pass whatever their keys, as before.
    let (code, out, err) = virga(
        &s,
        &[
            ("AWS_ACCESS_KEY_ID", "anything"),
            ("AWS_SECRET_ACCESS_KEY", "anything"),
        ],
        &["invoke", "echo"],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_non_loopback_bind_without_auth_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(virga_bin())
        .args(["serve", "--addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("without authentication") && err.contains("--auth sigv4"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lab_signs_its_requests() {
    let functions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../functions");
    // The lab deploys the repository's manifests: their directory is one
    // the operator lets deploys capture code from.
    let s = Server::start_with(
        &virga_bin(),
        &[],
        &["--auth", "sigv4", "--code-dir", functions.to_str().unwrap()],
        &[],
    )
    .await;
    let admin = creds(&create_key(&data_dir(&s), "lab", "admin", &[]));
    let echo = functions.join("echo.toml");
    let preset = s.dir.path().join("signed.toml");
    std::fs::write(
        &preset,
        format!(
            "name = \"signed\"\n\
             [[functions]]\nname = \"echo-signed\"\nmanifest = \"{}\"\npayload = \"p\"\n\
             [payloads.p]\nkind = \"json\"\nvalue = '{{\"n\": 1}}'\n\
             [[scenarios]]\nkind = \"open-loop\"\nfunctions = [\"echo-signed\"]\nrate = 10\nduration_s = 1\nconnections = 2\n",
            echo.display()
        ),
    )
    .unwrap();
    let out_dir = s.dir.path().join("results");
    let (code, out, err) = virga(
        &s,
        &as_env(&admin),
        &[
            "--endpoint",
            &s.url(""),
            "bench",
            preset.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let run = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let results: Value =
        serde_json::from_slice(&std::fs::read(run.path().join("results.json")).unwrap()).unwrap();
    // Deployed and read back through /v1 (signed by the lab's API client),
    // invoked by the load generator (signed per request): all succeeded.
    assert_eq!(results["managed"], true);
    let stats = &results["scenarios"][0]["groups"][0]["stats"];
    assert_eq!(stats["requests"], 10, "{stats}");
    assert_eq!(stats["errors"], 0, "{stats}");
    // `virga cost` reads the records through the lab's client too.
    let (code, out, err) = virga(&s, &as_env(&admin), &["cost", "--function", "echo-signed"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_captures_code_only_from_the_servers_code_directories() {
    // A directory of this host the platform can read and a key holder must
    // not: its files would become a function's code.
    let private = tempfile::tempdir().unwrap();
    std::fs::write(private.path().join("secret.txt"), "host secret").unwrap();
    std::fs::write(private.path().join("grab.toml"), manifest("grab", "")).unwrap();
    let grab = private.path().join("grab.toml");

    let s = signed_server().await;
    let admin = creds(&create_key(&data_dir(&s), "admin", "admin", &[]));
    let env = as_env(&admin);
    let (code, _, err) = virga(&s, &env, &["deploy", grab.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("AccessDeniedException") && err.contains("--code-dir"),
        "{err}"
    );
    // Nor through a link inside the allowed --functions directory, nor `..`.
    let link = s.dir.path().join("fns/inside");
    std::os::unix::fs::symlink(private.path(), &link).unwrap();
    for base in [
        link.display().to_string(),
        // Both temporary directories are in the same parent.
        format!(
            "{}/../../{}",
            s.dir.path().join("fns").display(),
            private.path().file_name().unwrap().to_str().unwrap()
        ),
    ] {
        let url = format!("/v1/functions/grab?base_dir={}", base.replace('/', "%2F"));
        let http = reqwest::Client::new();
        let signer = virga_sigv4::Signer::new(
            virga_sigv4::Credentials::new(&admin[0].1, &admin[1].1, None),
            "us-east-1",
            "lambda",
        );
        let mut req = http
            .put(s.url(&url))
            .body(manifest("grab", ""))
            .build()
            .unwrap();
        signer.sign_reqwest(&mut req).unwrap();
        let resp = http.execute(req).await.unwrap();
        assert_eq!(resp.status(), 403, "{base}");
        assert!(
            resp.text().await.unwrap().contains("code directory"),
            "{base}"
        );
    }
    let (_, out, _) = virga(&s, &env, &["ls"]);
    assert!(!out.contains("grab"), "{out}");

    // Named with --code-dir, the directory is the operator's choice.
    let allowed = Server::start_with(
        &virga_bin(),
        &[],
        &[
            "--auth",
            "sigv4",
            "--code-dir",
            private.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let admin = creds(&create_key(&data_dir(&allowed), "admin", "admin", &[]));
    let (code, out, err) = virga(
        &allowed,
        &as_env(&admin),
        &["deploy", grab.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
}
