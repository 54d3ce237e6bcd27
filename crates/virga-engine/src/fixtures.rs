//! Small ONNX graphs built in code (no download), for conformance tests,
//! end-to-end tests and examples: a 4-8-3 MLP classifier with seeded weights
//! and its plain-Rust reference, and a colour classifier for images.

use std::path::Path;

use prost::Message;
use tract_onnx::pb;

/// The MLP's parameters: `w1` 4x8, `b1` 8, `w2` 8x3, `b2` 3.
pub type MlpParams = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: data.to_vec(),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[Option<i64>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::dimension::Value as D;
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Some(n) => D::DimValue(*n),
                None => D::DimParam("N".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        attribute: attrs,
        ..Default::default()
    }
}

/// Writes `graph` as an opset-13 ONNX model.
fn save(path: &Path, graph: pb::GraphProto) {
    let model = pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        producer_name: "virga-tests".into(),
        graph: Some(graph),
        ..Default::default()
    };
    std::fs::write(path, model.encode_to_vec()).expect("writable fixture path");
}

/// Deterministic pseudo-random weights, from -1 (inclusive) to 1.
pub fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Writes the MLP to `path` and returns its parameters:
/// `x [N,4] -> MatMul [4,8] -> Add -> Relu -> MatMul [8,3] -> Add -> Softmax -> y [N,3]`
pub fn mlp(path: &Path) -> MlpParams {
    let (w1, b1, w2, b2) = (weights(32, 1), weights(8, 2), weights(24, 3), weights(3, 4));
    let axis = pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    };
    let graph = pb::GraphProto {
        name: "mlp".into(),
        node: vec![
            node("MatMul", &["x", "w1"], "h0", vec![]),
            node("Add", &["h0", "b1"], "h1", vec![]),
            node("Relu", &["h1"], "h2", vec![]),
            node("MatMul", &["h2", "w2"], "h3", vec![]),
            node("Add", &["h3", "b2"], "h4", vec![]),
            node("Softmax", &["h4"], "y", vec![axis]),
        ],
        initializer: vec![
            tensor("w1", &[4, 8], &w1),
            tensor("b1", &[8], &b1),
            tensor("w2", &[8, 3], &w2),
            tensor("b2", &[3], &b2),
        ],
        input: vec![value("x", &[None, Some(4)])],
        output: vec![value("y", &[None, Some(3)])],
        ..Default::default()
    };
    save(path, graph);
    (w1, b1, w2, b2)
}

pub fn reference(x: &[f64], (w1, b1, w2, b2): &MlpParams) -> Vec<f32> {
    let h: Vec<f32> = (0..8)
        .map(|j| ((0..4).map(|i| x[i] as f32 * w1[i * 8 + j]).sum::<f32>() + b1[j]).max(0.0))
        .collect();
    let z: Vec<f32> = (0..3)
        .map(|k| (0..8).map(|j| h[j] * w2[j * 3 + k]).sum::<f32>() + b2[k])
        .collect();
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Writes a tiny image classifier to `path`: the mean of each colour channel
/// of a `[1, 3, S, S]` image, times a 3x3 identity, softmaxed. Its classes
/// are the dominant channel: red, green, blue (with a sidecar saying so).
pub fn colour_classifier(path: &Path, side: i64) {
    let eye = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let graph = pb::GraphProto {
        name: "colours".into(),
        node: vec![
            node("GlobalAveragePool", &["x"], "m", vec![]),
            node("Flatten", &["m"], "f", vec![]),
            node("MatMul", &["f", "w"], "z", vec![]),
        ],
        initializer: vec![tensor("w", &[3, 3], &eye)],
        input: vec![value("x", &[Some(1), Some(3), Some(side), Some(side)])],
        output: vec![value("z", &[Some(1), Some(3)])],
        ..Default::default()
    };
    save(path, graph);
    let sidecar = serde_json::json!({
        "task": "image-classification",
        "classes": ["red", "green", "blue"],
        "preprocess": {"resize_shorter": side, "crop": side, "mean": [0.0, 0.0, 0.0], "std": [25.5, 25.5, 25.5]},
    });
    std::fs::write(path.with_extension("json"), sidecar.to_string())
        .expect("writable fixture path");
}

/// Writes a tiny text encoder and its tokenizer: a WordPiece vocabulary of
/// eight tokens and a graph that looks each token up in a 4-wide table (so
/// "cat" and "dog" are close, "car" and "truck" are close, the two pairs far
/// apart). Inputs are those of a BERT encoder: input_ids, attention_mask,
/// position_ids, each `[batch, seq]`.
pub fn text_encoder(path: &Path) {
    let vocab = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "cat", "dog", "car", "truck",
    ];
    #[rustfmt::skip]
    let table = [
        0.0, 0.0, 0.0, 0.0,   0.0, 1.0, 0.0, 0.0,   0.0, 0.0, 0.0, 0.0,   0.0, 0.0, 0.0, 0.0,
        1.0, 0.0, 0.0, 0.0,   0.9, 0.1, 0.0, 0.0,   0.0, 0.0, 1.0, 0.0,   0.0, 0.0, 0.9, 0.1,
    ];
    let ints = |name: &str| {
        let mut v = value(name, &[None, None]);
        if let Some(pb::type_proto::Value::TensorType(t)) =
            v.r#type.as_mut().and_then(|t| t.value.as_mut())
        {
            t.elem_type = pb::tensor_proto::DataType::Int64 as i32;
        }
        v
    };
    let graph = pb::GraphProto {
        name: "words".into(),
        node: vec![node("Gather", &["table", "input_ids"], "states", vec![])],
        initializer: vec![tensor("table", &[8, 4], &table)],
        input: vec![
            ints("input_ids"),
            ints("attention_mask"),
            ints("position_ids"),
        ],
        output: vec![value("states", &[None, None, Some(4)])],
        ..Default::default()
    };
    save(path, graph);
    let vocab: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), serde_json::json!(i)))
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
    });
    let tok_path = path.with_extension("tokenizer.json");
    std::fs::write(&tok_path, tokenizer.to_string()).expect("writable fixture path");
    let sidecar = serde_json::json!({
        "task": "text-embedding",
        "tokenizer": tok_path.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        "pooling": "mean",
        "normalize": true,
    });
    std::fs::write(path.with_extension("json"), sidecar.to_string())
        .expect("writable fixture path");
}
