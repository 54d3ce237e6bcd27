//! Model serving overhead, side by side in one run: for each model, its load
//! time (file -> ready), warm inference p50 as a direct in-process engine
//! call, and warm invoke p50 through the embedded platform (Invoke API ->
//! instance -> model runtime) on the same input; plus the cold start of its
//! function (spawn -> ready) against the load time.
//!
//! Models: a logistic regression trained on iris here, and EfficientNet-Lite0,
//! the synthetic ResNet-50 / Inception-v2 / SqueezeNet and all-MiniLM-L6-v2
//! (a batch of 8 sentences) when `virga models pull` has put them in models/. `VIRGA_BENCH_N` sets the warm calls per model (default 30).
//!
//! Each ONNX model runs with tract and, in a build with `--features ort` and
//! the onnxruntime library pulled (`virga models pull --engine ort`), with
//! onnxruntime too (1 intra-op thread): a closing table gives ort / tract
//! ratios of load time and warm direct p50.

mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;
use virga_engine::Task;

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    engine: &'static str,
    task: Task,
    path: PathBuf,
    payload: serde_json::Value,
}

fn main() {
    let n: usize = std::env::var("VIRGA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scratch = tempfile::tempdir().unwrap();
    let iris = scratch.path().join("iris-logistic.model");
    let table = virga_engine::datasets::load("iris").unwrap();
    virga_engine::classical::ClassicalModel::train(
        virga_engine::classical::Algorithm::Logistic,
        &table,
    )
    .unwrap()
    .save(&iris)
    .unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(virga_engine::image::solid_png(
        320,
        240,
        [120, 80, 200],
    ));
    let mut cases = vec![Case {
        name: "iris-logistic",
        engine: "classical",
        task: Task::TabularClassification,
        path: iris,
        payload: serde_json::json!({"instances": table.rows[..100].to_vec()}),
    }];
    for name in [
        "efficientnet-lite0",
        "squeezenet-synthetic",
        "inception-v2-synthetic",
        "resnet50-synthetic",
    ] {
        let path = root.join("models").join(format!("{name}.onnx"));
        if path.exists() {
            cases.push(Case {
                name,
                engine: "tract",
                task: Task::ImageClassification,
                path,
                payload: serde_json::json!({"image": image, "top_k": 5}),
            });
        } else {
            println!("({name}: not in models/, run `virga models pull` to include it)");
        }
    }
    let minilm = root.join("models/all-minilm-l6-v2.onnx");
    if minilm.exists() {
        let texts: Vec<String> = (0..8)
            .map(|i| format!("A man is eating food number {i} in the kitchen."))
            .collect();
        cases.push(Case {
            name: "all-minilm-l6-v2 (x8)",
            engine: "tract",
            task: Task::TextEmbedding,
            path: minilm,
            payload: serde_json::json!({ "inputs": texts }),
        });
    }

    // Each ONNX model with onnxruntime as well, right after its tract row.
    #[allow(unused_mut)]
    let mut ort_note = "built without --features ort: tract rows only".to_string();
    #[cfg(feature = "ort")]
    if let Some(first) = cases.iter().find(|c| c.engine == "tract") {
        match virga_engine::onnxruntime::find_library(&first.path) {
            Ok(lib) => {
                // The library is loaded once per process: not in any row's load_ms
                // (the cold column, a fresh instance, does include it).
                let t = Instant::now();
                drop(virga_engine::load("ort", &first.path, first.task).unwrap());
                ort_note = format!(
                    "ort: {}; library load + first session {:.1} ms, once per process",
                    lib.display(),
                    t.elapsed().as_secs_f64() * 1e3
                );
                cases = cases
                    .into_iter()
                    .flat_map(|c| {
                        let ort = (c.engine == "tract").then(|| Case {
                            engine: "ort",
                            ..c.clone()
                        });
                        std::iter::once(c).chain(ort)
                    })
                    .collect();
            }
            Err(e) => ort_note = e.to_string(),
        }
    }
    println!("({ort_note})");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{}; 1 inference thread; {n} warm calls per model; medians",
        support::host_line()
    );
    println!(
        "{:<24} {:<9} {:>10} {:>10} {:>12} {:>12} {:>9} {:>10}",
        "model",
        "engine",
        "load_ms",
        "cold_ms",
        "direct_ms",
        "platform_ms",
        "overhead",
        "cold/load"
    );
    // (model, engine, load_ms, direct_ms)
    let mut rows: Vec<(&str, &str, f64, f64)> = Vec::new();
    for c in cases {
        // Direct, in process.
        let t = Instant::now();
        let model = virga_engine::load(c.engine, &c.path, c.task).unwrap();
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let direct: Vec<f64> = (0..n)
            .map(|_| {
                let t = Instant::now();
                if c.task == Task::TextEmbedding {
                    let texts: Vec<String> =
                        serde_json::from_value(c.payload["inputs"].clone()).unwrap();
                    model.embed(&texts).unwrap();
                } else if c.task == Task::ImageClassification {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(c.payload["image"].as_str().unwrap())
                        .unwrap();
                    model.classify_images(&[bytes], 5).unwrap();
                } else {
                    let rows: Vec<Vec<f64>> =
                        serde_json::from_value(c.payload["instances"].clone()).unwrap();
                    model.predict(&rows).unwrap();
                }
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        drop(model);

        // Through the platform: a function with one full vCPU (1769 MB).
        let manifest = format!(
            "name = \"m\"\nruntime = \"model\"\nmemory_mb = 1769\ntimeout_ms = 60000\n[model]\ntask = \"{}\"\nengine = \"{}\"\npath = \"{}\"\nthreads = 1\n",
            serde_json::to_value(c.task).unwrap().as_str().unwrap(),
            c.engine,
            c.path.display()
        );
        let (platform_ms, cold_ms) = rt.block_on(async {
            let (_data, platform) = support::platform("m", &manifest).await;
            let http = reqwest::Client::new();
            let url = format!(
                "http://{}/2015-03-31/functions/m/invocations",
                platform.addr()
            );
            let body = c.payload.to_string();
            let first = http.post(&url).body(body.clone()).send().await.unwrap();
            assert!(first.headers().get("x-amz-function-error").is_none());
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = http.post(&url).body(body.clone()).send().await.unwrap();
                r.bytes().await.unwrap();
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let recs: serde_json::Value = http
                .get(format!(
                    "http://{}/v1/invocations?function=m",
                    platform.addr()
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let cold = recs["invocations"][0]["init_ms"]
                .as_f64()
                .unwrap_or(f64::NAN);
            platform.shutdown().await;
            (p50(times), cold)
        });
        let direct_ms = p50(direct);
        rows.push((c.name, c.engine, load_ms, direct_ms));
        println!(
            "{:<24} {:<9} {:>10.1} {:>10.1} {:>12.3} {:>12.3} {:>8.1}% {:>9.2}x",
            c.name,
            c.engine,
            load_ms,
            cold_ms,
            direct_ms,
            platform_ms,
            100.0 * (platform_ms - direct_ms) / direct_ms,
            cold_ms / load_ms
        );
    }
    let pairs: Vec<_> = rows
        .iter()
        .filter(|r| r.1 == "tract")
        .filter_map(|t| {
            rows.iter()
                .find(|o| o.0 == t.0 && o.1 == "ort")
                .map(|o| (t, o))
        })
        .collect();
    if !pairs.is_empty() {
        println!("\nort / tract (below 1: ort is faster)");
        println!("{:<24} {:>12} {:>16}", "model", "load", "direct p50");
        for (t, o) in pairs {
            println!("{:<24} {:>11.2}x {:>15.2}x", t.0, o.2 / t.2, o.3 / t.3);
        }
    }
}
