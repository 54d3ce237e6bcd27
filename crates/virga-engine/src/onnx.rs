//! ONNX models run with tract (pure Rust).
//!
//! Tabular models take `[N, F]` float rows and give `[N, C]` scores (the
//! label is the arg-max, named by `classes`), `[N]`/`[N, 1]` values
//! (regression), or `[N, K]` rows (decomposition). What a model is — its task,
//! class names, feature names — lives beside it in `<model>.json`, not in
//! code: `{"task": "tabular-classification", "classes": ["a", "b"]}`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use tract_onnx::prelude::*;

use crate::{EngineError, Model, ModelInfo, Task};

/// The sidecar description of an ONNX model.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    pub task: Option<Task>,
    #[serde(default)]
    pub classes: Vec<String>,
    /// A file of class names, one a line, relative to the model.
    #[serde(default)]
    pub classes_file: Option<String>,
    /// Image models: how to turn an image into the input tensor.
    #[serde(default)]
    pub preprocess: Option<crate::image::Recipe>,
    /// The output is already probabilities (else logits, softmaxed here).
    #[serde(default)]
    pub probabilities: bool,
    /// Text models: the tokenizer (`tokenizer.json` format), relative to the model.
    #[serde(default)]
    pub tokenizer: Option<String>,
    /// Text models: how token states become one vector (`mean` over real tokens).
    #[serde(default)]
    pub pooling: Option<String>,
    /// Text models: L2-normalise the embedding.
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub feature_names: Vec<String>,
    #[serde(default)]
    pub dataset: Option<String>,
}

pub struct OnnxModel {
    plan: TypedSimplePlan<TypedModel>,
    info: ModelInfo,
    recipe: Option<crate::image::Recipe>,
    probabilities: bool,
    text: Option<TextSetup>,
}

/// What a text-embedding model needs besides its graph.
struct TextSetup {
    tokenizer: tokenizers::Tokenizer,
    normalize: bool,
}

fn err(path: &Path) -> impl Fn(TractError) -> EngineError + '_ {
    move |e| EngineError::Format(path.display().to_string(), format!("{e:#}"))
}

impl OnnxModel {
    /// Loads and optimises `path`; `task` is the manifest's, unless the
    /// sidecar says otherwise (then they must agree).
    pub fn load(path: &Path, task: Task) -> Result<OnnxModel, EngineError> {
        let sidecar_path = path.with_extension("json");
        let sidecar: Sidecar = match std::fs::read(&sidecar_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Format(sidecar_path.display().to_string(), e.to_string())
            })?,
            Err(_) => Sidecar::default(),
        };
        if let Some(t) = sidecar.task {
            if t != task {
                return Err(EngineError::Format(
                    path.display().to_string(),
                    format!("the model is for {t:?} but the manifest says {task:?}"),
                ));
            }
        }
        if !path.is_file() {
            return Err(EngineError::Read(
                path.display().to_string(),
                "no such file".into(),
            ));
        }
        let mut classes = sidecar.classes;
        if let Some(file) = &sidecar.classes_file {
            let p = path.parent().unwrap_or(Path::new(".")).join(file);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| EngineError::Read(p.display().to_string(), e.to_string()))?;
            classes = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
        }
        let mut model = tract_onnx::onnx().model_for_path(path).map_err(err(path))?;
        let recipe = match task {
            Task::ImageClassification => {
                let r = sidecar.preprocess.unwrap_or_default();
                r.validate()
                    .map_err(|m| EngineError::Format(sidecar_path.display().to_string(), m))?;
                // One image per run, NCHW.
                let (h, w) = r.size();
                model = model
                    .with_input_fact(0, f32::fact([1, 3, h, w]).into())
                    .map_err(err(path))?;
                Some(r)
            }
            Task::TextEmbedding => {
                // input_ids, attention_mask, position_ids: [batch, seq], any size.
                let batch = model.symbols.sym("batch");
                let seq = model.symbols.sym("seq");
                for i in 0..3 {
                    model = model
                        .with_input_fact(i, i64::fact([batch.to_dim(), seq.to_dim()]).into())
                        .map_err(err(path))?;
                }
                None
            }
            _ => None,
        };
        let text = match task {
            Task::TextEmbedding => {
                if sidecar.pooling.as_deref().is_some_and(|p| p != "mean") {
                    return Err(EngineError::Format(
                        sidecar_path.display().to_string(),
                        "pooling: only \"mean\" is supported".into(),
                    ));
                }
                let file = sidecar.tokenizer.as_deref().ok_or_else(|| {
                    EngineError::Format(
                        sidecar_path.display().to_string(),
                        "a text-embedding model needs \"tokenizer\": \"<file>.tokenizer.json\""
                            .into(),
                    )
                })?;
                let p = path.parent().unwrap_or(Path::new(".")).join(file);
                let tokenizer = tokenizers::Tokenizer::from_file(&p)
                    .map_err(|e| EngineError::Read(p.display().to_string(), e.to_string()))?;
                Some(TextSetup {
                    tokenizer,
                    normalize: sidecar.normalize,
                })
            }
            _ => None,
        };
        let typed = model.into_optimized().map_err(err(path))?;
        let input = typed.input_fact(0).map_err(err(path))?.clone();
        let n_features = if recipe.is_some() || text.is_some() {
            0
        } else {
            input
                .shape
                .dims()
                .last()
                .and_then(|d| d.to_i64().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    EngineError::Format(
                        path.display().to_string(),
                        format!("input {input:?} has no fixed feature width: tabular models take [N, F]"),
                    )
                })? as usize
        };
        let output_width = typed
            .output_fact(0)
            .ok()
            .and_then(|f| f.shape.dims().get(1).and_then(|d| d.to_i64().ok()))
            .unwrap_or(1) as usize;
        let plan = typed.into_runnable().map_err(err(path))?;
        Ok(OnnxModel {
            plan,
            info: ModelInfo {
                engine: "tract",
                task,
                algorithm: "onnx".into(),
                dataset: sidecar.dataset.unwrap_or_default(),
                n_features,
                feature_names: sidecar.feature_names,
                classes,
                output_width,
                metrics: Default::default(),
            },
            recipe,
            probabilities: sidecar.probabilities,
            text,
        })
    }

    /// The raw output scores of a batch: `[N, C]` as rows.
    pub fn scores(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f32>>, EngineError> {
        let n = rows.len();
        let f = self.info.n_features;
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        let input = tract_ndarray::Array2::from_shape_vec((n, f), flat)
            .map_err(|e| EngineError::Input(e.to_string()))?
            .into_tensor();
        self.run(input, n)
    }

    fn run(&self, input: Tensor, n: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let out = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| EngineError::Inference(format!("{e:#}")))?;
        let view = out[0]
            .to_array_view::<f32>()
            .map_err(|e| EngineError::Inference(format!("{e:#}")))?;
        let per_row = if view.ndim() <= 1 {
            1
        } else {
            view.len() / n.max(1)
        };
        let values: Vec<f32> = view.iter().copied().collect();
        Ok(values.chunks(per_row.max(1)).map(<[f32]>::to_vec).collect())
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 {
                (i, x)
            } else {
                best
            }
        })
        .0
}

impl Model for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, EngineError> {
        let scores = self.scores(rows)?;
        Ok(scores
            .into_iter()
            .map(|s| match self.info.task {
                Task::TabularClassification => {
                    let i = argmax(&s);
                    match self.info.classes.get(i) {
                        Some(name) => Value::String(name.clone()),
                        None => Value::from(i),
                    }
                }
                Task::Clustering => Value::from(argmax(&s)),
                Task::TabularRegression => Value::from(f64::from(s[0])),
                Task::Decomposition => {
                    Value::from(s.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>())
                }
                Task::ImageClassification | Task::TextEmbedding => Value::from(argmax(&s)),
            })
            .collect())
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        let Some(setup) = &self.text else {
            return Err(EngineError::Input(format!(
                "this is a {:?} model: it does not embed texts",
                self.info.task
            )));
        };
        let encodings = setup
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EngineError::Input(format!("cannot tokenize: {e}")))?;
        let n = encodings.len();
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        // Each batch is padded to its longest text, with the mask saying which tokens are real.
        let mut ids = vec![0i64; n * len];
        let mut mask = vec![0i64; n * len];
        for (r, e) in encodings.iter().enumerate() {
            for (c, (&id, &m)) in e.get_ids().iter().zip(e.get_attention_mask()).enumerate() {
                ids[r * len + c] = i64::from(id);
                mask[r * len + c] = i64::from(m);
            }
        }
        let positions: Vec<i64> = (0..n).flat_map(|_| 0..len as i64).collect();
        let tensor = |v: Vec<i64>| -> Result<TValue, EngineError> {
            Ok(tract_ndarray::Array2::from_shape_vec((n, len), v)
                .map_err(|e| EngineError::Input(e.to_string()))?
                .into_tensor()
                .into())
        };
        let out = self
            .plan
            .run(tvec!(
                tensor(ids)?,
                tensor(mask.clone())?,
                tensor(positions)?
            ))
            .map_err(|e| EngineError::Inference(format!("{e:#}")))?;
        let states = out[0]
            .to_array_view::<f32>()
            .map_err(|e| EngineError::Inference(format!("{e:#}")))?;
        let dim = *states.shape().last().unwrap_or(&0);
        let flat: Vec<f32> = states.iter().copied().collect();
        Ok((0..n)
            .map(|r| {
                // Mean over the real tokens only.
                let mut v = vec![0f32; dim];
                let mut count = 0f32;
                for c in 0..len {
                    if mask[r * len + c] == 1 {
                        count += 1.0;
                        let row = &flat[(r * len + c) * dim..(r * len + c + 1) * dim];
                        v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
                    }
                }
                v.iter_mut().for_each(|a| *a /= count.max(1.0));
                if setup.normalize {
                    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|a| *a /= norm);
                }
                v
            })
            .collect())
    }

    fn classify_images(&self, images: &[Vec<u8>], top_k: usize) -> Result<Vec<Value>, EngineError> {
        let Some(recipe) = &self.recipe else {
            return Err(EngineError::Input(format!(
                "this is a {:?} model: send {{\"instances\": [[...]]}}, not images",
                self.info.task
            )));
        };
        let (h, w) = recipe.size();
        images
            .iter()
            .map(|bytes| {
                let pixels = recipe.tensor(bytes)?;
                let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), pixels)
                    .map_err(|e| EngineError::Input(e.to_string()))?
                    .into_tensor();
                let scores = self.run(input, 1)?.pop().unwrap_or_default();
                Ok(Value::from(top_k_labels(
                    &scores,
                    self.probabilities,
                    &self.info.classes,
                    top_k,
                )))
            })
            .collect()
    }
}

/// The best `k` labels with their probabilities (a softmax of logits, or the
/// model's own probabilities).
fn top_k_labels(scores: &[f32], probabilities: bool, classes: &[String], k: usize) -> Vec<Value> {
    let probs: Vec<f32> = if probabilities {
        scores.to_vec()
    } else {
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.iter().map(|e| e / sum).collect()
    };
    let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked
        .into_iter()
        .take(k.max(1))
        .map(|(i, p)| {
            serde_json::json!({
                "label": classes.get(i).cloned().unwrap_or_else(|| i.to_string()),
                "score": p,
            })
        })
        .collect()
}
