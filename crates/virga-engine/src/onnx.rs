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
            _ => None,
        };
        let typed = model.into_optimized().map_err(err(path))?;
        let input = typed.input_fact(0).map_err(err(path))?.clone();
        let n_features = if recipe.is_some() {
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
                Task::ImageClassification => Value::from(argmax(&s)),
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
