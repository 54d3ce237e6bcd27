//! Code bundles: a function runs the code captured at its deploy, kept per
//! version by the platform, and sees no other function's manifest.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::Server;
use serde_json::{json, Value};

/// A function whose code directory holds its runtime and a data file.
fn code_dir(root: &Path, data: &str) -> std::path::PathBuf {
    let dir = root.join("reader");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        common::runtimes_dir().join("hostile.py"),
        dir.join("handler.py"),
    )
    .unwrap();
    std::fs::write(dir.join("data.txt"), data).unwrap();
    std::fs::write(
        dir.join("reader.toml"),
        "name = \"reader\"\ncommand = [\"python3\", \"handler.py\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("secret.toml"),
        "name = \"secret\"\ncommand = [\"x\"]\nenv = { TOKEN = \"hunter2\" }\n",
    )
    .unwrap();
    dir
}

async fn deploy_from(s: &Server, dir: &Path) -> Value {
    let resp = s
        .http
        .put(s.url(&format!("/v1/functions/reader?base_dir={}", dir.display())))
        .body(std::fs::read_to_string(dir.join("reader.toml")).unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    resp.json().await.unwrap()
}

/// The length of `data.txt` as the function reads it (relative to its code).
async fn data_len(s: &Server) -> u64 {
    let (status, _, body) = s
        .invoke(
            "reader",
            &json!({"try": "read", "path": "data.txt"}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v["detail"].as_u64().unwrap()
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

async fn update_code(s: &Server, zip: &[u8]) -> reqwest::Response {
    use base64::Engine as _;
    s.http
        .put(s.url("/2015-03-31/functions/reader/code"))
        .json(&json!({
            "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)
        }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_runs_the_code_of_its_version() {
    let mut s = Server::start(&[]).await;
    let src = code_dir(s.dir.path(), "aaa");
    let v1 = deploy_from(&s, &src).await;
    assert_eq!(v1["version"], "1");
    assert_eq!(data_len(&s).await, 3);

    // Editing the source changes nothing until the next deploy...
    std::fs::write(src.join("data.txt"), "bbbbb").unwrap();
    s.cli(&["scale-to-zero", "reader"]);
    assert_eq!(data_len(&s).await, 3, "the deployed code was captured");
    // ... which captures it as a new version; the same code again does not.
    assert_eq!(deploy_from(&s, &src).await["version"], "2");
    assert_eq!(data_len(&s).await, 5);
    assert_eq!(deploy_from(&s, &src).await["version"], "2");

    // The other manifests of the directory are not part of the code.
    let (_, _, body) = s
        .invoke(
            "reader",
            &json!({"try": "listdir", "path": "."}).to_string(),
        )
        .await;
    let listing: Value = serde_json::from_str(&body).unwrap();
    let mut names: Vec<String> = serde_json::from_value(listing["detail"].clone()).unwrap();
    names.sort();
    assert_eq!(names, ["data.txt", "handler.py"], "{listing}");

    // Lambda's UpdateFunctionCode: a zip archive becomes version 3.
    let handler = std::fs::read(src.join("handler.py")).unwrap();
    let resp = update_code(
        &s,
        &zip_of(&[("handler.py", &handler), ("data.txt", b"ccccccc")]),
    )
    .await;
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let conf: Value = resp.json().await.unwrap();
    assert_eq!(conf["FunctionName"], "reader");
    assert_eq!(s.get("/v1/functions/reader").await["version"], "3");
    assert_eq!(data_len(&s).await, 7);

    // An archive whose entries climb out of the code is refused whole.
    let resp = update_code(&s, &zip_of(&[("../../escape.txt", b"x")])).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.headers()["x-amzn-errortype"],
        "InvalidParameterValueException"
    );
    let resp = update_code(&s, b"not a zip").await;
    assert_eq!(resp.status(), 400);
    let resp = s
        .http
        .put(s.url("/2015-03-31/functions/nobody/code"))
        .json(&json!({"ZipFile": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(s.get("/v1/functions/reader").await["version"], "3");

    // The platform keeps the code: the source can go, a restart keeps version 3.
    std::fs::remove_dir_all(&src).unwrap();
    s.restart().await;
    assert_eq!(s.get("/v1/functions/reader").await["version"], "3");
    assert_eq!(data_len(&s).await, 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_updates_function_code() {
    if Command::new("aws").arg("--version").output().is_err() {
        eprintln!("skipping: the AWS CLI is not installed");
        return;
    }
    let s = Server::start(&[]).await;
    let src = code_dir(s.dir.path(), "aaa");
    deploy_from(&s, &src).await;
    let handler = std::fs::read(src.join("handler.py")).unwrap();
    let zip = s.dir.path().join("code.zip");
    std::fs::write(
        &zip,
        zip_of(&[("handler.py", &handler), ("data.txt", b"zz")]),
    )
    .unwrap();
    let out = Command::new("aws")
        .args([
            "lambda",
            "update-function-code",
            "--endpoint-url",
            &s.url(""),
        ])
        .args(["--function-name", "reader", "--zip-file"])
        .arg(format!("fileb://{}", zip.display()))
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("HOME", s.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(data_len(&s).await, 2);
}
