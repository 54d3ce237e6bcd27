//! End-to-end: model functions (`runtime = "model"`) trained by
//! `virga models train`, invoked through the Invoke API and KServe V2.

mod common;

use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

/// Trains `algorithm` on `dataset` into the server's dir and returns a manifest for it.
fn model_function(s: &Server, name: &str, algorithm: &str, dataset: &str, task: &str) -> String {
    let path = s.dir.path().join(format!("{dataset}-{algorithm}.model"));
    let (code, out, err) = s.cli(&[
        "models",
        "train",
        "--algorithm",
        algorithm,
        "--dataset",
        dataset,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with(&format!("trained {algorithm} on {dataset}")),
        "{out}"
    );
    format!(
        "name = \"{name}\"\nruntime = \"model\"\nmemory_mb = 1769\n[model]\ntask = \"{task}\"\nengine = \"classical\"\npath = \"{}\"\nmax_batch = 100\n",
        path.display()
    )
}

/// Trains, writes the manifest beside the model and deploys it with the CLI.
fn deploy_model(s: &Server, name: &str, algorithm: &str, dataset: &str, task: &str) {
    deploy_text(s, name, &model_function(s, name, algorithm, dataset, task));
}

/// Writes `<name>.toml` in the server's directory (relative model paths
/// resolve there) and deploys it with the CLI.
fn deploy_text(s: &Server, name: &str, manifest: &str) {
    let path = s.dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// `virga` copied alone into an empty directory serves model functions and
/// `command = ["virga-worker"]`: the built-in runtime is the platform's own
/// executable, never a program found beside it or on PATH.
#[tokio::test(flavor = "multi_thread")]
async fn the_virga_binary_alone_serves_model_functions() {
    let lonely = tempfile::tempdir().unwrap();
    let bin = lonely.path().join("virga");
    std::fs::copy(common::virga_bin(), &bin).unwrap();
    // A decoy on PATH that a lookup would find first.
    let decoy_dir = lonely.path().join("decoy");
    std::fs::create_dir(&decoy_dir).unwrap();
    let decoy = decoy_dir.join("virga-worker");
    std::fs::write(&decoy, "#!/bin/sh\necho decoy >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&decoy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        decoy_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let echo = "name = \"echo\"\ncommand = [\"virga-worker\"]\nhandler = \"echo\"\n";
    let s = Server::start_with(&bin, &[("PATH", &path)], &[], &[("echo", echo.to_string())]).await;
    let (status, _, body) = s.invoke("echo", r#"{"x":1}"#).await;
    assert_eq!(status, 200, "{body}\n{}", s.log());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"x": 1})
    );
    deploy_model(&s, "iris", "logistic", "iris", "tabular-classification");
    let (status, headers, body) = s
        .invoke("iris", r#"{"instances": [[5.1, 3.5, 1.4, 0.2]]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["predictions"][0],
        json!("setosa"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_classical_task_serves_through_the_invoke_api() {
    let s = Server::start(&[]).await;
    let cases = [
        ("iris-lr", "logistic", "tabular-classification"),
        ("iris-rf", "random-forest", "tabular-classification"),
        ("iris-km", "kmeans", "clustering"),
        ("iris-pca", "pca", "decomposition"),
        ("iris-svm", "svm", "tabular-classification"),
        ("iris-gmm", "gmm", "clustering"),
    ];
    for (name, alg, task) in cases {
        deploy_model(&s, name, alg, "iris", task);
    }
    let rows = json!({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).to_string();
    for (name, alg, _) in cases {
        let (status, headers, body) = s.invoke(name, &rows).await;
        assert_eq!(status, 200);
        assert!(
            headers.get("x-amz-function-error").is_none(),
            "{name}: {body}"
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let p = v["predictions"].as_array().unwrap();
        assert_eq!(p.len(), 2, "{name}: one prediction per row");
        match alg {
            "logistic" | "random-forest" | "svm" => {
                assert_eq!(p, &vec![json!("setosa"), json!("virginica")], "{name}")
            }
            "kmeans" | "gmm" => {
                assert!(p[0].is_i64() && p[0] != p[1], "{name}: two clusters {p:?}")
            }
            _ => assert_eq!(
                p[0].as_array().unwrap().len(),
                2,
                "{name}: projected to 2 components"
            ),
        }
        assert!(v["inference_ms"].as_f64().unwrap() >= 0.0);
        assert!(
            v["init_ms"].is_number(),
            "the cold response reports the model load"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_are_function_errors_and_the_instance_stays_warm() {
    let s = Server::start(&[]).await;
    deploy_model(&s, "iris", "logistic", "iris", "tabular-classification");
    let good = json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}).to_string();
    assert_eq!(s.invoke("iris", &good).await.0, 200);
    let too_many = json!({"instances": vec![vec![1.0; 4]; 101]}).to_string();
    for (bad, says) in [
        (r#"{"instances": [[1, 2]]}"#.to_string(), "takes 4"),
        (r#"{"instances": []}"#.to_string(), "empty"),
        (r#"{"rows": [[1, 2, 3, 4]]}"#.to_string(), "instances"),
        (
            r#"{"instances": [["a", 2, 3, 4]]}"#.to_string(),
            "not a number",
        ),
        (too_many, "max_batch"),
    ] {
        let (status, headers, body) = s.invoke("iris", &bad).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-amz-function-error"], "Unhandled", "{bad}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(err["errorType"], "InvalidInput", "{body}");
        assert!(
            err["errorMessage"].as_str().unwrap().contains(says),
            "{body}"
        );
    }
    assert_eq!(s.invoke("iris", &good).await.0, 200);
    let recs = s.records(Some("iris")).await;
    // The worker's own split reaches the records of successful invocations.
    let ok: Vec<_> = recs.iter().filter(|r| r["status"] == "success").collect();
    assert_eq!(ok.len(), 2);
    for r in &ok {
        assert!(r["inference_ms"].as_f64().unwrap() >= 0.0, "{r}");
        assert!(
            r["preprocess_ms"].is_number() && r["postprocess_ms"].is_number(),
            "{r}"
        );
    }
    assert!(recs
        .iter()
        .filter(|r| r["status"] == "error")
        .all(|r| r["inference_ms"].is_null()));
    assert_eq!(
        recs.iter().filter(|r| r["cold"] == true).count(),
        1,
        "one instance served them all"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kserve_v2_metadata_readiness_and_infer() {
    let s = Server::start(&[("echo", common::manifest("echo", "memory_mb = 1769"))]).await;
    deploy_model(
        &s,
        "iris",
        "random-forest",
        "iris",
        "tabular-classification",
    );
    let meta = s.get("/v2/models/iris").await;
    assert_eq!(meta["name"], "iris");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["outputs"][0]["datatype"], "BYTES");
    assert_eq!(
        meta["parameters"]["classes"],
        json!(["setosa", "versicolor", "virginica"])
    );
    assert_eq!(s.get("/v2/models/iris/ready").await["ready"], true);

    let resp = s
        .http
        .post(s.url("/v2/models/iris/infer"))
        .json(&json!({"id": "r1", "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["id"], "r1");
    assert_eq!(v["model_name"], "iris");
    assert_eq!(v["outputs"][0]["shape"], json!([2]));
    assert_eq!(v["outputs"][0]["data"], json!(["setosa", "virginica"]));

    for (body, status) in [
        (
            json!({"inputs": [{"shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}),
            400,
        ),
        (
            json!({"inputs": [{"shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3]}]}),
            400,
        ),
        (json!({"nothing": true}), 400),
    ] {
        let resp = s
            .http
            .post(s.url("/v2/models/iris/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{body}");
        let e: Value = resp.json().await.unwrap();
        assert!(e["error"].is_string(), "V2 error shape: {e}");
    }
    let resp = s
        .http
        .post(s.url("/v2/models/ghost/infer"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = s.http.get(s.url("/v2/models/echo")).send().await.unwrap();
    assert_eq!(resp.status(), 400, "a command function is not a model");
    // The model still serves after the bad requests.
    let resp = s
        .http
        .post(s.url("/v2/models/iris/infer"))
        .json(&json!({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [[5.9, 3.0, 5.1, 1.8]]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Server metadata, and the versioned paths: the live version serves,
    // any other is not found.
    let server: Value = s
        .http
        .get(s.url("/v2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["name"], "virga");
    assert!(server["version"].is_string() && server["extensions"].is_array());
    let meta: Value = s
        .http
        .get(s.url("/v2/models/iris/versions/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["name"], "iris", "{meta}");
    let ready = s
        .http
        .get(s.url("/v2/models/iris/versions/1/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let infer = json!({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]});
    let resp = s
        .http
        .post(s.url("/v2/models/iris/versions/1/infer"))
        .json(&infer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["model_version"], "1", "{out}");
    for path in [
        "/v2/models/iris/versions/7",
        "/v2/models/iris/versions/7/ready",
    ] {
        let resp = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let e: Value = resp.json().await.unwrap();
        assert!(
            e["error"].as_str().unwrap().contains("version 1 serves"),
            "{e}"
        );
    }
    let resp = s
        .http
        .post(s.url("/v2/models/iris/versions/7/infer"))
        .json(&infer)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn deploying_a_model_function_without_its_model_says_how_to_get_one() {
    let s = Server::start(&[]).await;
    let path = s.dir.path().join("m.toml");
    std::fs::write(&path, "name = \"m\"\nruntime = \"model\"\n[model]\ntask = \"clustering\"\npath = \"nowhere.model\"\n").unwrap();
    let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no model at") && err.contains("virga models train"),
        "{err}"
    );
    let out = s.dir.path().join("x.model");
    let (code, _, err) = s.cli(&[
        "models",
        "train",
        "--algorithm",
        "svc",
        "--dataset",
        "iris",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown algorithm") && err.contains("svm"),
        "{err}"
    );
    assert!(!out.exists());
    let (code, _, err) = s.cli(&[
        "models",
        "train",
        "--algorithm",
        "gmm",
        "--dataset",
        "mnist",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("fashion-mnist"), "{err}");
}

/// `virga models train --rows N --json`: a timed run on the first N rows,
/// as the lab's `train` scenario reads it.
#[test]
fn training_on_the_first_rows_reports_its_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.model");
    let (code, stdout, err) = common::cli(&[
        "models",
        "train",
        "--algorithm",
        "logistic",
        "--dataset",
        "winequality",
        "--rows",
        "512",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["rows"], 512, "{v}");
    assert_eq!(v["n_features"], 11);
    assert_eq!(v["algorithm"], "logistic");
    assert!(v["train_ms"].as_f64().unwrap() > 0.0);
    assert!(v["metrics"]["accuracy"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["model_bytes"].as_u64(),
        Some(std::fs::metadata(&out).unwrap().len())
    );
    let (code, _, err) = common::cli(&[
        "models",
        "train",
        "--algorithm",
        "logistic",
        "--dataset",
        "iris",
        "--rows",
        "0",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("rows"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn onnx_models_run_with_tract_through_both_apis() {
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("mlp.onnx");
    let params = virga_engine::fixtures::mlp(&model);
    std::fs::write(
        model.with_extension("json"),
        r#"{"task": "tabular-classification", "classes": ["a", "b", "c"]}"#,
    )
    .unwrap();
    deploy_text(&s, "mlp", "name = \"mlp\"\nruntime = \"model\"\nmemory_mb = 1769\n[model]\ntask = \"tabular-classification\"\nengine = \"tract\"\npath = \"mlp.onnx\"\n");
    let (rows, expected) = mlp_rows(&params);
    let (status, headers, body) = s
        .invoke("mlp", &json!({"instances": rows}).to_string())
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"], json!(expected));
    assert_eq!(v["model"]["engine"], "tract");

    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    let resp = s
        .http
        .post(s.url("/v2/models/mlp/infer"))
        .json(
            &json!({"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP32", "data": flat}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["outputs"][0]["data"], json!(expected));
    let meta = s.get("/v2/models/mlp").await;
    assert_eq!(meta["platform"], "virga-tract");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));

    // A wrong width is the caller's error; the instance serves on.
    let (_, headers, body) = s.invoke("mlp", r#"{"instances": [[1, 2, 3]]}"#).await;
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    assert!(body.contains("takes 4"), "{body}");
    assert_eq!(
        s.invoke("mlp", &json!({"instances": [rows[0]]}).to_string())
            .await
            .0,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_classification_decodes_preprocesses_and_ranks() {
    use base64::Engine as _;
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("colours.onnx");
    virga_engine::fixtures::colour_classifier(&model, 8);
    deploy_text(&s, "colours", "name = \"colours\"\nruntime = \"model\"\nmemory_mb = 1769\n[model]\ntask = \"image-classification\"\nengine = \"tract\"\npath = \"colours.onnx\"\nmax_batch = 4\n");
    let b64 = |rgb| {
        base64::engine::general_purpose::STANDARD
            .encode(virga_engine::image::solid_png(40, 30, rgb))
    };
    let (status, headers, body) = s
        .invoke(
            "colours",
            &json!({"image": b64([20, 200, 20]), "top_k": 2}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"][0]["label"], "green");
    assert_eq!(v["predictions"].as_array().unwrap().len(), 2);
    let batch = json!({"images": [b64([200, 0, 0]), b64([0, 0, 200])], "top_k": 1}).to_string();
    let v: Value = serde_json::from_str(&s.invoke("colours", &batch).await.2).unwrap();
    assert_eq!(v["predictions"][0][0]["label"], "red");
    assert_eq!(v["predictions"][1][0]["label"], "blue");
    for (bad, says) in [
        (json!({"image": "%%%"}), "base64"),
        (
            json!({"image": base64::engine::general_purpose::STANDARD.encode(b"GIF89a garbage")}),
            "image",
        ),
        (json!({"instances": [[1, 2]]}), "image"),
        (json!({"images": vec![b64([1, 2, 3]); 5]}), "1 to 4"),
    ] {
        let (_, headers, body) = s.invoke("colours", &bad.to_string()).await;
        assert_eq!(headers["x-amz-function-error"], "Unhandled", "{bad}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["errorType"], "InvalidInput", "{body}");
        assert!(e["errorMessage"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(
        s.invoke("colours", &json!({"image": b64([9, 9, 200])}).to_string())
            .await
            .0,
        200
    );
    assert_eq!(
        s.records(Some("colours"))
            .await
            .iter()
            .filter(|r| r["cold"] == true)
            .count(),
        1
    );
    // Over KServe V2: base64 images in a BYTES tensor.
    let meta = s.get("/v2/models/colours").await;
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    let resp = s
        .http
        .post(s.url("/v2/models/colours/infer"))
        .json(&json!({"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": [b64([250, 0, 0]), b64([0, 250, 0])]}], "parameters": {"top_k": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["outputs"][0]["shape"], json!([2, 3]));
    assert_eq!(v["outputs"][0]["data"][0], "red");
    assert_eq!(v["outputs"][0]["data"][3], "green");
    assert_eq!(v["outputs"][1]["datatype"], "FP32");
}

#[tokio::test(flavor = "multi_thread")]
async fn text_embeddings_are_unit_vectors_that_keep_meaning() {
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("words.onnx");
    virga_engine::fixtures::text_encoder(&model);
    deploy_text(&s, "words", "name = \"words\"\nruntime = \"model\"\nmemory_mb = 1769\n[model]\ntask = \"text-embedding\"\nengine = \"tract\"\npath = \"words.onnx\"\nmax_batch = 4\n");
    let (status, headers, body) = s
        .invoke(
            "words",
            &json!({"inputs": ["cat", "dog", "truck"]}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let e: Vec<Vec<f64>> = serde_json::from_value(v["embeddings"].clone()).unwrap();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    assert!((dot(&e[0], &e[0]) - 1.0).abs() < 1e-5);
    assert!(dot(&e[0], &e[1]) > dot(&e[0], &e[2]));
    for (bad, says) in [
        (json!({"inputs": []}), "1 to 4"),
        (json!({"inputs": [1, 2]}), "not a string"),
        (json!({"text": "cat"}), "inputs"),
    ] {
        let (_, headers, body) = s.invoke("words", &bad.to_string()).await;
        assert_eq!(headers["x-amz-function-error"], "Unhandled", "{bad}");
        assert!(body.contains(says), "{body}");
    }
    assert_eq!(s.invoke("words", r#"{"inputs": ["car"]}"#).await.0, 200);
    // Over KServe V2: strings in a BYTES tensor, embeddings back.
    let meta = s.get("/v2/models/words").await;
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    assert_eq!(meta["outputs"][0]["datatype"], "FP32");
    let resp = s
        .http
        .post(s.url("/v2/models/words/infer"))
        .json(&json!({"inputs": [{"name": "texts", "shape": [2], "datatype": "BYTES", "data": ["cat", "truck"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["outputs"][0]["name"], "embeddings");
    assert_eq!(v["outputs"][0]["shape"], json!([2, 4]));
    assert_eq!(v["outputs"][0]["data"].as_array().unwrap().len(), 8);
}

/// The `ort` engine through the platform, in a build with `--features ort`
/// and the library pulled (`virga models pull --engine ort`); without the
/// library it is skipped with a note, unless `VIRGA_REQUIRE_ORT=1`.
#[cfg(feature = "ort")]
#[tokio::test(flavor = "multi_thread")]
async fn onnx_models_run_with_ort_through_the_platform() {
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("mlp.onnx");
    let params = virga_engine::fixtures::mlp(&model);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/x.onnx");
    let lib = match virga_engine::onnxruntime::find_library(&root) {
        Ok(lib) => lib,
        Err(e) if std::env::var("VIRGA_REQUIRE_ORT").as_deref() != Ok("1") => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping the ort end-to-end test: {e}"
            );
            return;
        }
        Err(e) => panic!("{e}"),
    };
    std::fs::write(
        model.with_extension("json"),
        r#"{"task": "tabular-classification", "classes": ["a", "b", "c"]}"#,
    )
    .unwrap();
    deploy_text(&s, "mlp", &format!(
            "name = \"mlp\"\nruntime = \"model\"\nmemory_mb = 1769\nenv = {{ ORT_DYLIB_PATH = \"{}\" }}\n[model]\ntask = \"tabular-classification\"\nengine = \"ort\"\npath = \"mlp.onnx\"\nthreads = 2\n",
            lib.display()
        ));
    let (rows, expected) = mlp_rows(&params);
    let (status, headers, body) = s
        .invoke("mlp", &json!({"instances": rows}).to_string())
        .await;
    assert_eq!(status, 200);
    assert!(headers.get("x-amz-function-error").is_none(), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"], json!(expected));
    assert_eq!(v["model"]["engine"], "ort");
    assert_eq!(s.get("/v2/models/mlp").await["platform"], "virga-ort");
}

/// Without the `ort` feature, an `ort` function is refused at deploy,
/// saying how to get the engine (not at every cold start).
#[cfg(not(feature = "ort"))]
#[tokio::test(flavor = "multi_thread")]
async fn ort_functions_in_a_build_without_ort_say_how_to_get_it() {
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("mlp.onnx");
    virga_engine::fixtures::mlp(&model);
    let path = s.dir.path().join("mlp.toml");
    std::fs::write(&path, "name = \"mlp\"\nruntime = \"model\"\n[model]\ntask = \"tabular-classification\"\nengine = \"ort\"\npath = \"mlp.onnx\"\n").unwrap();
    let (code, _, err) = s.cli(&["deploy", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("model.engine") && err.contains("--features ort"),
        "{err}"
    );
    let (status, _, _) = s.invoke("mlp", r#"{"instances": [[1, 2, 3, 4]]}"#).await;
    assert_eq!(status, 404, "nothing was deployed");
}

/// `input = "object"`: an upload to the trigger's bucket is classified by
/// the function, which never reads the bucket itself; the upload names the
/// invocation, whose record is found by it.
#[tokio::test(flavor = "multi_thread")]
async fn model_functions_classify_uploaded_objects() {
    let s = Server::start(&[]).await;
    let model = s.dir.path().join("colours.onnx");
    virga_engine::fixtures::colour_classifier(&model, 8);
    deploy_text(&s, "on-upload", "name = \"on-upload\"\nruntime = \"model\"\nmemory_mb = 1769\nmax_retries = 0\n[model]\ntask = \"image-classification\"\nengine = \"tract\"\npath = \"colours.onnx\"\ninput = \"object\"\n[[triggers]]\ntype = \"bucket\"\nbucket = \"photos\"\nprefix = \"in/\"\nevents = [\"put\"]\n");
    let put = |key: &str, body: Vec<u8>| {
        s.http
            .put(s.url(&format!("/v1/buckets/photos/objects/{key}")))
            .body(body)
            .send()
    };
    let png = virga_engine::image::solid_png(40, 30, [10, 10, 240]);
    let resp = put("in/blue.png", png).await.unwrap();
    assert_eq!(resp.status(), 200);
    let stored: Value = resp.json().await.unwrap();
    assert_eq!(
        stored["invocations"][0]["function"], "on-upload",
        "{stored}"
    );
    let id = stored["invocations"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Outside the prefix: stored, nothing triggered.
    let other: Value = put("out/x.png", b"x".to_vec())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["invocations"], json!([]), "{other}");
    // Not an image: the invocation fails with the model's own error.
    let junk: Value = put("in/junk.png", b"not an image".to_vec())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let junk_id = junk["invocations"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Over what an invocation can carry: the platform says so instead.
    let big: Value = put("in/big.png", vec![7u8; 5 << 20])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let big_id = big["invocations"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    let records = s
        .records_until("on-upload", Duration::from_secs(60), |r| r.len() >= 3)
        .await;
    let of = |id: &str| {
        records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no record of {id}: {records:?}"))
            .clone()
    };
    let ok = of(&id);
    assert_eq!(ok["status"], "success", "{ok}");
    assert_eq!(ok["trigger"], "bucket");
    assert!(
        ok["payload_bytes"].as_u64().unwrap() > 100,
        "the image rode in the event: {ok}"
    );
    let bad = of(&junk_id);
    assert_eq!(bad["status"], "error", "{bad}");
    assert_eq!(bad["error_type"], "InvalidInput", "{bad}");
    let big = of(&big_id);
    assert_eq!(big["error_type"], "ObjectTooLarge", "{big}");
    // The answer itself: the same shape invoked directly, as a test event.
    let event = json!({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "photos"}, "object": {"key": "in/blue.png", "contentBase64": base64_png([240, 10, 10])}}}]});
    let (status, _, body) = s.invoke("on-upload", &event.to_string()).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"][0]["label"], "red", "{v}");
    assert_eq!(v["key"], "in/blue.png");
    // A plain request to an object function says what it takes.
    let (_, headers, body) = s.invoke("on-upload", r#"{"image": "AAAA"}"#).await;
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    assert!(body.contains("input = \\\"object\\\""), "{body}");
}

fn base64_png(rgb: [u8; 3]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(virga_engine::image::solid_png(40, 30, rgb))
}

/// Five seeded rows for the MLP fixture and the labels its plain-Rust
/// reference gives them.
fn mlp_rows(params: &virga_engine::fixtures::MlpParams) -> (Vec<Vec<f64>>, Vec<Value>) {
    let rows: Vec<Vec<f64>> = (0..5)
        .map(|r| {
            virga_engine::fixtures::weights(4, 7 + r)
                .into_iter()
                .map(|v| f64::from(v) * 3.0)
                .collect()
        })
        .collect();
    let expected = rows
        .iter()
        .map(|r| {
            let p = virga_engine::fixtures::reference(r, params);
            let best = (0..3).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            json!(["a", "b", "c"][best])
        })
        .collect();
    (rows, expected)
}
