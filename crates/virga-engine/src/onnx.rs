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
    #[serde(default)]
    pub feature_names: Vec<String>,
    #[serde(default)]
    pub dataset: Option<String>,
}

pub struct OnnxModel {
    plan: TypedSimplePlan<TypedModel>,
    info: ModelInfo,
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
        let model = tract_onnx::onnx().model_for_path(path).map_err(err(path))?;
        let typed = model.into_optimized().map_err(err(path))?;
        let input = typed.input_fact(0).map_err(err(path))?.clone();
        let n_features = input
            .shape
            .dims()
            .last()
            .and_then(|d| d.to_i64().ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                EngineError::Format(
                    path.display().to_string(),
                    format!(
                        "input {input:?} has no fixed feature width: tabular models take [N, F]"
                    ),
                )
            })? as usize;
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
                classes: sidecar.classes,
                output_width,
                metrics: Default::default(),
            },
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
            })
            .collect())
    }
}
