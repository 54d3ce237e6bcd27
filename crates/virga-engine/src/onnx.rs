//! ONNX models, run by an engine: tract (pure Rust, here) or onnxruntime
//! ([`crate::onnxruntime`], with the `ort` feature).
//!
//! Tabular models take `[N, F]` float rows and give `[N, C]` scores (the
//! label is the arg-max, named by `classes`), `[N]`/`[N, 1]` values
//! (regression), or `[N, K]` rows (decomposition). What a model is — its task,
//! class names, feature names — lives beside it in `<model>.json`, not in
//! code: `{"task": "tabular-classification", "classes": ["a", "b"]}`.
//!
//! Everything but running the graph is shared by the engines: the sidecar,
//! image preprocessing, tokenisation, pooling and labels. An engine only
//! loads a graph and runs tensors through it (a [`Graph`]).

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

/// An input tensor of a graph: its shape and values.
#[derive(Debug, Clone)]
pub enum Input {
    F32(Vec<usize>, Vec<f32>),
    I64(Vec<usize>, Vec<i64>),
}

/// The first output of a run: its shape and values.
#[derive(Debug, Clone)]
pub struct Output {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// What an engine does with a loaded graph: run input tensors (in the
/// graph's input order) and return its first output, as `f32`.
pub trait Graph: Send + Sync {
    fn run(&self, inputs: Vec<Input>) -> Result<Output, EngineError>;

    /// See [`crate::Model::concurrent`].
    fn concurrent(&self) -> bool {
        true
    }
}

/// What an engine is asked to load.
#[derive(Debug, Clone, Copy)]
pub struct GraphRequest<'a> {
    pub path: &'a Path,
    pub task: Task,
    /// Image models: the `(height, width)` of the one-image `[1, 3, H, W]` input.
    pub image: Option<(usize, usize)>,
    /// Intra-op threads (engines that have a thread pool).
    pub threads: usize,
}

/// A graph as an engine loaded it, with what it knows of its shapes.
pub struct LoadedGraph {
    pub graph: Box<dyn Graph>,
    /// The dims of input 0 (`None`: not fixed).
    pub input_dims: Vec<Option<usize>>,
    /// The second dim of output 0, where fixed.
    pub output_width: Option<usize>,
}

/// An ONNX model: the engine's graph and what the sidecar says around it.
pub struct OnnxModel {
    graph: Box<dyn Graph>,
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

/// A tract error, shown with its causes as `{:#}` does: tract's top message
/// is often only the step that failed, the reason is below it.
#[derive(Debug)]
struct TractFailure(TractError);

impl std::fmt::Display for TractFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for TractFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn err(path: &Path) -> impl Fn(TractError) -> EngineError + '_ {
    move |e| EngineError::format(path.display().to_string(), TractFailure(e))
}

fn inference(e: TractError) -> EngineError {
    EngineError::inference(TractFailure(e))
}

/// A graph run by tract.
struct TractGraph {
    plan: TypedSimplePlan<TypedModel>,
}

impl Graph for TractGraph {
    fn run(&self, inputs: Vec<Input>) -> Result<Output, EngineError> {
        let inputs = inputs
            .into_iter()
            .map(|input| {
                let tensor = match input {
                    Input::F32(shape, v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)
                        .map_err(|e| EngineError::Input(e.to_string()))?
                        .into_tensor(),
                    Input::I64(shape, v) => tract_ndarray::ArrayD::from_shape_vec(shape, v)
                        .map_err(|e| EngineError::Input(e.to_string()))?
                        .into_tensor(),
                };
                Ok(tensor.into())
            })
            .collect::<Result<TVec<TValue>, EngineError>>()?;
        let out = self.plan.run(inputs).map_err(inference)?;
        let view = out[0].to_array_view::<f32>().map_err(inference)?;
        Ok(Output {
            shape: view.shape().to_vec(),
            values: view.iter().copied().collect(),
        })
    }
}

/// Loads and optimises a graph with tract (single-threaded: `threads` is not used).
fn load_tract(req: GraphRequest) -> Result<LoadedGraph, EngineError> {
    let path = req.path;
    let mut model = tract_onnx::onnx().model_for_path(path).map_err(err(path))?;
    if let Some((h, w)) = req.image {
        // One image per run, NCHW.
        model = model
            .with_input_fact(0, f32::fact([1, 3, h, w]).into())
            .map_err(err(path))?;
    }
    if req.task == Task::TextEmbedding {
        // input_ids, attention_mask, position_ids: [batch, seq], any size.
        let batch = model.symbols.sym("batch");
        let seq = model.symbols.sym("seq");
        for i in 0..3 {
            model = model
                .with_input_fact(i, i64::fact([batch.to_dim(), seq.to_dim()]).into())
                .map_err(err(path))?;
        }
    }
    let typed = model.into_optimized().map_err(err(path))?;
    let fixed = |d: &TDim| d.to_i64().ok().filter(|&n| n >= 0).map(|n| n as usize);
    let input_dims = typed
        .input_fact(0)
        .map_err(err(path))?
        .shape
        .dims()
        .iter()
        .map(fixed)
        .collect();
    let output_width = typed
        .output_fact(0)
        .ok()
        .and_then(|f| f.shape.dims().get(1).and_then(fixed));
    let plan = typed.into_runnable().map_err(err(path))?;
    Ok(LoadedGraph {
        graph: Box::new(TractGraph { plan }),
        input_dims,
        output_width,
    })
}

impl OnnxModel {
    /// Loads and optimises `path` with tract; `task` is the manifest's,
    /// unless the sidecar says otherwise (then they must agree).
    pub fn load(path: &Path, task: Task) -> Result<OnnxModel, EngineError> {
        Self::load_with("tract", path, task, &crate::LoadOptions::default())
    }

    /// Loads `path` with the named ONNX engine: `tract`, or `ort` (with the
    /// `ort` feature).
    pub fn load_with(
        engine: &str,
        path: &Path,
        task: Task,
        options: &crate::LoadOptions,
    ) -> Result<OnnxModel, EngineError> {
        match engine {
            "tract" => Self::open(path, task, options, "tract", load_tract),
            #[cfg(feature = "ort")]
            "ort" => Self::open(path, task, options, "ort", crate::onnxruntime::load_graph),
            #[cfg(not(feature = "ort"))]
            "ort" => Err(crate::onnxruntime::not_built()),
            other => Err(EngineError::Unknown(format!(
                "unknown ONNX engine {other:?}: use \"tract\" or \"ort\""
            ))),
        }
    }

    /// The engine-independent part of a load: the sidecar, classes, image
    /// recipe and tokenizer, around the graph that `load_graph` gives.
    pub fn open(
        path: &Path,
        task: Task,
        options: &crate::LoadOptions,
        engine: &'static str,
        load_graph: impl FnOnce(GraphRequest) -> Result<LoadedGraph, EngineError>,
    ) -> Result<OnnxModel, EngineError> {
        let sidecar_path = path.with_extension("json");
        let sidecar: Sidecar = match std::fs::read(&sidecar_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| EngineError::format(sidecar_path.display().to_string(), e))?,
            Err(_) => Sidecar::default(),
        };
        if let Some(t) = sidecar.task {
            if t != task {
                return Err(EngineError::format(
                    path.display().to_string(),
                    format!("the model is for {t:?} but the manifest says {task:?}"),
                ));
            }
        }
        if !path.is_file() {
            return Err(EngineError::read(
                path.display().to_string(),
                "no such file",
            ));
        }
        let mut classes = sidecar.classes;
        if let Some(file) = &sidecar.classes_file {
            let p = path.parent().unwrap_or(Path::new(".")).join(file);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| EngineError::read(p.display().to_string(), e))?;
            classes = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
        }
        let recipe = match task {
            Task::ImageClassification => {
                let r = sidecar.preprocess.unwrap_or_default();
                r.validate()
                    .map_err(|m| EngineError::format(sidecar_path.display().to_string(), m))?;
                Some(r)
            }
            _ => None,
        };
        let text = match task {
            Task::TextEmbedding => {
                if sidecar.pooling.as_deref().is_some_and(|p| p != "mean") {
                    return Err(EngineError::format(
                        sidecar_path.display().to_string(),
                        "pooling: only \"mean\" is supported",
                    ));
                }
                let file = sidecar.tokenizer.as_deref().ok_or_else(|| {
                    EngineError::format(
                        sidecar_path.display().to_string(),
                        "a text-embedding model needs \"tokenizer\": \"<file>.tokenizer.json\"",
                    )
                })?;
                let p = path.parent().unwrap_or(Path::new(".")).join(file);
                let tokenizer = tokenizers::Tokenizer::from_file(&p)
                    .map_err(|e| EngineError::read(p.display().to_string(), e))?;
                Some(TextSetup {
                    tokenizer,
                    normalize: sidecar.normalize,
                })
            }
            _ => None,
        };
        let loaded = load_graph(GraphRequest {
            path,
            task,
            image: recipe.as_ref().map(crate::image::Recipe::size),
            threads: options.threads.max(1),
        })?;
        let n_features = if recipe.is_some() || text.is_some() {
            0
        } else {
            loaded
                .input_dims
                .last()
                .copied()
                .flatten()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    let dims: Vec<String> = loaded
                        .input_dims
                        .iter()
                        .map(|d| d.map_or("?".into(), |n| n.to_string()))
                        .collect();
                    EngineError::format(
                        path.display().to_string(),
                        format!(
                            "input [{}] has no fixed feature width: tabular models take [N, F]",
                            dims.join(", ")
                        ),
                    )
                })?
        };
        Ok(OnnxModel {
            graph: loaded.graph,
            info: ModelInfo {
                engine,
                task,
                algorithm: "onnx".into(),
                dataset: sidecar.dataset.unwrap_or_default(),
                n_features,
                feature_names: sidecar.feature_names,
                classes,
                output_width: loaded.output_width.filter(|&w| w > 0).unwrap_or(1),
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
        if let Some((i, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != f) {
            return Err(EngineError::Input(format!(
                "row {i} has {} features; this model takes {f}",
                r.len()
            )));
        }
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        self.run(Input::F32(vec![n, f], flat), n)
    }

    fn run(&self, input: Input, n: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let out = self.graph.run(vec![input])?;
        let per_row = if out.shape.len() <= 1 {
            1
        } else {
            out.values.len() / n.max(1)
        };
        Ok(out
            .values
            .chunks(per_row.max(1))
            .map(<[f32]>::to_vec)
            .collect())
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

    fn concurrent(&self) -> bool {
        self.graph.concurrent()
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
        let shape = vec![n, len];
        let states = self.graph.run(vec![
            Input::I64(shape.clone(), ids),
            Input::I64(shape.clone(), mask.clone()),
            Input::I64(shape, positions),
        ])?;
        let dim = *states.shape.last().unwrap_or(&0);
        if states.shape.len() != 3 || states.values.len() != n * len * dim {
            return Err(EngineError::inference(format!(
                "the model gave {:?}; a text encoder gives token states [batch, seq, dim]",
                states.shape
            )));
        }
        let flat = states.values;
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
                let input = Input::F32(vec![1, 3, h, w], pixels);
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
