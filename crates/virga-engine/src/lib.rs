//! virga's engines: what loads a model and runs it, inside an instance
//! process (the platform never links this crate).
//!
//! A [`Model`] takes a batch of rows and returns one prediction per row (a
//! class label, a value, a cluster id or a projected row). Engines:
//! - [`classical`]: models trained by `virga models train` (smartcore and
//!   linfa) on the [`datasets`] (iris, winequality, fashion-mnist): logistic
//!   regression, random forest, SVM, k-means, Gaussian mixture, PCA;
//! - [`onnx`]: ONNX graphs run by tract (pure Rust), or by onnxruntime
//!   ([`onnxruntime`], engine `ort`, with the `ort` feature: the library is
//!   loaded at run time, from `virga models pull --engine ort`).
//!
//! Sync, no async runtime: an instance runs one inference at a time.

pub mod classical;
pub mod datasets;
pub mod fixtures;
pub mod image;
pub mod onnx;
pub mod onnxruntime;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// An underlying error kept as the source of an [`EngineError`]: the
/// engines' own error types differ (I/O, JSON, tract, onnxruntime,
/// tokenizers), and a check of our own is a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// cannot read the model file
    #[error("cannot read model {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: BoxError,
    },
    /// the model file is not in a format this engine reads
    #[error("{path} is not a model this engine can load: {source}")]
    Format {
        path: String,
        #[source]
        source: BoxError,
    },
    /// the input does not fit the model
    #[error("{0}")]
    Input(String),
    /// the engine failed
    #[error("inference failed: {0}")]
    Inference(#[source] BoxError),
    /// no such engine / algorithm / dataset
    #[error("{0}")]
    Unknown(String),
    /// the engine is not in this build, or its runtime library is missing
    #[error("{0}")]
    Unavailable(String),
}

impl EngineError {
    pub(crate) fn read(path: impl Into<String>, source: impl Into<BoxError>) -> EngineError {
        EngineError::Read {
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn format(path: impl Into<String>, source: impl Into<BoxError>) -> EngineError {
        EngineError::Format {
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn inference(source: impl Into<BoxError>) -> EngineError {
        EngineError::Inference(source.into())
    }
}

/// How a model is loaded, besides its file and task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Intra-op threads, for engines with a thread pool (`ort`); tract and
    /// the classical models run on the calling thread.
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { threads: 1 }
    }
}

/// What a model does, as manifests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    ImageClassification,
    TextEmbedding,
    TabularClassification,
    TabularRegression,
    Clustering,
    Decomposition,
}

/// A model's public description (KServe V2 metadata is built from it).
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub engine: &'static str,
    pub task: Task,
    pub algorithm: String,
    pub dataset: String,
    /// Features per input row.
    pub n_features: usize,
    pub feature_names: Vec<String>,
    /// Class labels (classification), in the order of their ids.
    pub classes: Vec<String>,
    /// Output values per row: 1, or the number of components (decomposition).
    pub output_width: usize,
    /// Training metrics (accuracy, inertia, ...).
    pub metrics: std::collections::BTreeMap<String, f64>,
}

/// A loaded model. What loading built (weights, the optimised plan, the
/// tokenizer) is immutable and shared by every call; each call keeps its
/// scratch state to itself, so one model serves several threads at once.
pub trait Model: Send + Sync {
    fn info(&self) -> &ModelInfo;

    /// Whether calls from several threads run at the same time. `false`
    /// where the engine would take them one at a time (an onnxruntime
    /// session behind its lock): a host with n threads then loads n.
    fn concurrent(&self) -> bool {
        true
    }

    /// One prediction per row; rows must have `info().n_features` values.
    fn predict(&self, rows: &[Vec<f64>]) -> Result<Vec<Value>, EngineError>;

    /// One embedding per text (text-embedding models).
    fn embed(&self, _texts: &[String]) -> Result<Vec<Vec<f32>>, EngineError> {
        Err(EngineError::Input(format!(
            "this is a {:?} model: it does not embed texts",
            self.info().task
        )))
    }

    /// The `top_k` most likely labels of each encoded image, as
    /// `[{"label", "score"}, ...]` (image-classification models).
    fn classify_images(
        &self,
        _images: &[Vec<u8>],
        _top_k: usize,
    ) -> Result<Vec<Value>, EngineError> {
        Err(EngineError::Input(format!(
            "this is a {:?} model: send {{\"instances\": [[...]]}}, not images",
            self.info().task
        )))
    }
}

impl Task {
    pub fn parse(s: &str) -> Result<Task, EngineError> {
        serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
            EngineError::Unknown(format!(
                "unknown task {s:?}: use image-classification, text-embedding, tabular-classification, tabular-regression, clustering or decomposition"
            ))
        })
    }
}

/// The engines this build has, by the names manifests use.
pub fn engines() -> &'static [&'static str] {
    if cfg!(feature = "ort") {
        &["classical", "tract", "ort"]
    } else {
        &["classical", "tract"]
    }
}

/// Loads a model with the named engine for the manifest's `task` (one
/// intra-op thread).
pub fn load(engine: &str, path: &Path, task: Task) -> Result<Box<dyn Model>, EngineError> {
    load_with(engine, path, task, &LoadOptions::default())
}

/// Loads a model with the named engine for the manifest's `task`.
pub fn load_with(
    engine: &str,
    path: &Path,
    task: Task,
    options: &LoadOptions,
) -> Result<Box<dyn Model>, EngineError> {
    let model: Box<dyn Model> = match engine {
        "classical" => Box::new(classical::ClassicalModel::load(path)?),
        "tract" | "ort" => Box::new(onnx::OnnxModel::load_with(engine, path, task, options)?),
        other => {
            return Err(EngineError::Unknown(format!(
                "unknown engine {other:?}: use \"classical\", \"tract\" or \"ort\""
            )))
        }
    };
    if model.info().task != task {
        return Err(EngineError::format(
            path.display().to_string(),
            format!(
                "the model is for {:?} but the manifest says {task:?}",
                model.info().task
            ),
        ));
    }
    Ok(model)
}

/// Checks a batch against the model's input width.
pub fn check_rows(
    rows: &[Vec<f64>],
    n_features: usize,
    max_batch: usize,
) -> Result<(), EngineError> {
    if rows.is_empty() {
        return Err(EngineError::Input(
            "the batch is empty: send at least one row in \"instances\"".into(),
        ));
    }
    if rows.len() > max_batch {
        return Err(EngineError::Input(format!(
            "the batch has {} rows, over this function's max_batch of {max_batch}",
            rows.len()
        )));
    }
    if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != n_features) {
        return Err(EngineError::Input(format!(
            "row {i} has {} features; this model takes {n_features}",
            r.len()
        )));
    }
    if let Some(i) = rows.iter().position(|r| r.iter().any(|v| !v.is_finite())) {
        return Err(EngineError::Input(format!(
            "row {i} has a value that is not a finite number"
        )));
    }
    Ok(())
}
