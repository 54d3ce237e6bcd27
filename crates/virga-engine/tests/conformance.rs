//! Engine conformance: the same small ONNX models, built here (no download),
//! run by every ONNX engine of this build, compared with a plain reference
//! computation within a stated tolerance.

use virga_engine::fixtures::{mlp, reference, weights};
use virga_engine::{load, Task};

/// Engines that run ONNX in this build, with their tolerance.
const ENGINES: &[(&str, f32)] = &[("tract", 1e-5)];

fn rows() -> Vec<Vec<f64>> {
    (0..7)
        .map(|r| {
            weights(4, 100 + r)
                .into_iter()
                .map(|v| f64::from(v) * 3.0)
                .collect()
        })
        .collect()
}

#[test]
fn every_engine_matches_the_reference_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.onnx");
    let params = mlp(&path);
    std::fs::write(
        path.with_extension("json"),
        r#"{"task": "tabular-classification", "classes": ["a", "b", "c"]}"#,
    )
    .unwrap();
    let rows = rows();
    for &(engine, tol) in ENGINES {
        let model = load(engine, &path, Task::TabularClassification).unwrap();
        assert_eq!(model.info().n_features, 4, "{engine}");
        let labels = model.predict(&rows).unwrap();
        assert_eq!(labels.len(), rows.len());
        for (row, label) in rows.iter().zip(&labels) {
            let want = reference(row, &params);
            let best = want
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > want[b] { i } else { b });
            assert_eq!(
                label,
                &serde_json::json!(["a", "b", "c"][best]),
                "{engine}: {row:?} -> {want:?}"
            );
        }
        // The raw scores agree within the engine's tolerance.
        if engine == "tract" {
            let m =
                virga_engine::onnx::OnnxModel::load(&path, Task::TabularClassification).unwrap();
            for (row, got) in rows.iter().zip(m.scores(&rows).unwrap()) {
                for (g, w) in got.iter().zip(reference(row, &params)) {
                    assert!((g - w).abs() <= tol, "{engine}: {g} vs {w}");
                }
            }
        }
        // One row, and a batch of one hundred: the batch dimension is free.
        assert_eq!(model.predict(&rows[..1]).unwrap().len(), 1);
        assert_eq!(
            model.predict(&vec![rows[0].clone(); 100]).unwrap().len(),
            100
        );
    }
}

#[test]
fn a_task_mismatch_or_a_missing_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.onnx");
    mlp(&path);
    std::fs::write(path.with_extension("json"), r#"{"task": "clustering"}"#).unwrap();
    let err = load("tract", &path, Task::TabularClassification)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("Clustering") && err.contains("manifest"),
        "{err}"
    );
    let err = load(
        "tract",
        &dir.path().join("nope.onnx"),
        Task::TabularClassification,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("nope.onnx"), "{err}");
    std::fs::write(dir.path().join("junk.onnx"), b"not a protobuf").unwrap();
    assert!(load(
        "tract",
        &dir.path().join("junk.onnx"),
        Task::TabularClassification
    )
    .is_err());
    assert!(load("ort", &path, Task::TabularClassification)
        .err()
        .unwrap()
        .to_string()
        .contains("tract"));
}

#[test]
fn image_models_classify_after_the_sidecar_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colours.onnx");
    virga_engine::fixtures::colour_classifier(&path, 8);
    let model = load("tract", &path, Task::ImageClassification).unwrap();
    let png = |rgb| virga_engine::image::solid_png(20, 10, rgb);
    let out = model
        .classify_images(&[png([250, 10, 10]), png([10, 10, 250])], 2)
        .unwrap();
    assert_eq!(out[0][0]["label"], "red");
    assert_eq!(out[1][0]["label"], "blue");
    assert_eq!(out[0].as_array().unwrap().len(), 2, "top_k");
    let p = out[0][0]["score"].as_f64().unwrap();
    assert!(p > 0.99 && p <= 1.0, "{p}");
    assert!(model
        .classify_images(&[b"not an image".to_vec()], 1)
        .is_err());
    assert!(model.predict(&[vec![1.0]]).is_err() || model.info().n_features == 0);
}

#[test]
fn text_models_tokenize_pad_pool_and_normalise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("words.onnx");
    virga_engine::fixtures::text_encoder(&path);
    let model = load("tract", &path, Task::TextEmbedding).unwrap();
    let texts: Vec<String> = ["cat", "dog", "truck", "Cat CAT", "cat zebra truck"]
        .map(String::from)
        .to_vec();
    let e = model.embed(&texts).unwrap();
    assert_eq!(e.len(), 5);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((dot(&e[0], &e[0]) - 1.0).abs() < 1e-5, "unit length");
    assert!(dot(&e[0], &e[1]) > 0.9, "cat ~ dog");
    assert!(dot(&e[0], &e[2]) < 0.1, "cat !~ truck");
    for (a, b) in e[0].iter().zip(&e[3]) {
        assert!(
            (a - b).abs() < 1e-6,
            "lowercased, and padding in a batch changes nothing"
        );
    }
    // The same text alone and in a batch of longer texts gives the same vector.
    let alone = model.embed(&["cat".to_string()]).unwrap();
    for (a, b) in alone[0].iter().zip(&e[0]) {
        assert!((a - b).abs() < 1e-6);
    }
    assert!(model.classify_images(&[vec![1, 2, 3]], 1).is_err());
}
