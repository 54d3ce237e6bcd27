//! The model runtime: loads the function's model once at init and answers
//! inference requests.
//!
//! Request: `{"instances": [[f64, ...], ...]}` (a batch of rows), or for
//! image classification `{"image": "<base64 JPEG/PNG>", "top_k": 5}` (or
//! `"images": [...]` for a batch), or for text embedding `{"inputs": ["...", ...]}`
//! answered with `{"embeddings": [[...], ...]}`.
//! Response: `{"predictions": [...], "model": {...}, "preprocess_ms",
//! "inference_ms", "postprocess_ms"}`, plus `init_ms` on the first request of
//! the instance. `{"metadata": true}` returns the model's description.
//! Bad input is a function error (`InvalidInput`); the instance stays warm.

use std::time::Instant;

use serde_json::{json, Value};
use virga_engine::{check_rows, Model};

use crate::{Context, FunctionError, Handler};

/// Settings passed by the platform in the environment.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub engine: String,
    pub task: String,
    pub path: String,
    pub max_batch: usize,
}

impl ModelConfig {
    pub fn from_env() -> Result<ModelConfig, FunctionError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = var("VIRGA_MODEL_PATH").ok_or_else(|| {
            FunctionError::new(
                "Runtime.ModelNotConfigured",
                "VIRGA_MODEL_PATH is not set: deploy with runtime = \"model\"",
            )
        })?;
        Ok(ModelConfig {
            engine: var("VIRGA_MODEL_ENGINE").unwrap_or_else(|| "classical".into()),
            task: var("VIRGA_MODEL_TASK").unwrap_or_else(|| "tabular-classification".into()),
            path,
            max_batch: var("VIRGA_MODEL_MAX_BATCH")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
        })
    }
}

pub struct ModelHandler {
    model: Box<dyn Model>,
    max_batch: usize,
    /// Reported once, on the instance's first (cold) response.
    init_ms: Option<f64>,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

impl ModelHandler {
    /// Loads the model; its error becomes the instance's `init/error`.
    pub fn load(config: &ModelConfig) -> Result<ModelHandler, FunctionError> {
        let t = Instant::now();
        let load_error = |e: virga_engine::EngineError| {
            FunctionError::new("Runtime.ModelLoadError", e.to_string())
        };
        let task = virga_engine::Task::parse(&config.task).map_err(load_error)?;
        let model = virga_engine::load(&config.engine, std::path::Path::new(&config.path), task)
            .map_err(load_error)?;
        Ok(ModelHandler {
            model,
            max_batch: config.max_batch,
            init_ms: Some(ms(t)),
        })
    }

    /// Embeds `{"inputs": [...]}`.
    fn texts(&mut self, event: &[u8]) -> Result<Vec<u8>, FunctionError> {
        let bad = |m: String| FunctionError::new("InvalidInput", m);
        let t = Instant::now();
        let v: Value = serde_json::from_slice(event)
            .map_err(|e| bad(format!("the request is not JSON: {e}")))?;
        let texts: Vec<String> = v
            .get("inputs")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("send {\"inputs\": [\"a text\", ...]}".into()))?
            .iter()
            .enumerate()
            .map(|(i, x)| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad(format!("input {i} is not a string")))
            })
            .collect::<Result<_, _>>()?;
        if texts.is_empty() || texts.len() > self.max_batch {
            return Err(bad(format!("send 1 to {} texts", self.max_batch)));
        }
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let embeddings = self.model.embed(&texts).map_err(|e| match e {
            virga_engine::EngineError::Input(m) => FunctionError::new("InvalidInput", m),
            other => FunctionError::new("InferenceError", other.to_string()),
        })?;
        let inference_ms = ms(t);
        let mut out = json!({
            "embeddings": embeddings,
            "model": { "engine": self.model.info().engine, "dataset": self.model.info().dataset },
            "preprocess_ms": preprocess_ms,
            "inference_ms": inference_ms,
            "postprocess_ms": 0.0,
        });
        if let Some(init) = self.init_ms.take() {
            out["init_ms"] = json!(init);
        }
        serde_json::to_vec(&out).map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
    }

    /// Classifies `{"image"}` or `{"images"}`; returns the predictions.
    fn images(&self, v: &Value) -> Result<(Value, f64, f64), FunctionError> {
        use base64::Engine as _;
        let bad = |m: String| FunctionError::new("InvalidInput", m);
        let t = Instant::now();
        let (encoded, single): (Vec<&str>, bool) = match (v.get("image"), v.get("images")) {
            (Some(Value::String(s)), _) => (vec![s.as_str()], true),
            (_, Some(Value::Array(a))) => (
                a.iter()
                    .map(|x| {
                        x.as_str()
                            .ok_or_else(|| bad("images must be base64 strings".into()))
                    })
                    .collect::<Result<_, _>>()?,
                false,
            ),
            _ => {
                return Err(bad(
                    "send {\"image\": \"<base64 JPEG or PNG>\", \"top_k\": 5}".into(),
                ))
            }
        };
        if encoded.is_empty() || encoded.len() > self.max_batch {
            return Err(bad(format!("send 1 to {} images", self.max_batch)));
        }
        let top_k = v
            .get("top_k")
            .and_then(Value::as_u64)
            .unwrap_or(5)
            .clamp(1, 1000) as usize;
        let bytes: Vec<Vec<u8>> = encoded
            .iter()
            .enumerate()
            .map(|(i, s)| {
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .map_err(|e| bad(format!("image {i} is not base64: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let mut out = self
            .model
            .classify_images(&bytes, top_k)
            .map_err(|e| match e {
                virga_engine::EngineError::Input(m) => FunctionError::new("InvalidInput", m),
                other => FunctionError::new("InferenceError", other.to_string()),
            })?;
        let predictions = if single {
            out.swap_remove(0)
        } else {
            Value::from(out)
        };
        Ok((predictions, preprocess_ms, ms(t)))
    }

    fn rows(&self, event: &[u8]) -> Result<Vec<Vec<f64>>, FunctionError> {
        let bad = |m: String| FunctionError::new("InvalidInput", m);
        let v: Value = serde_json::from_slice(event)
            .map_err(|e| bad(format!("the request is not JSON: {e}")))?;
        let instances = v
            .get("instances")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("send {\"instances\": [[feature, ...], ...]}".into()))?;
        instances
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.as_array()
                    .ok_or_else(|| bad(format!("instance {i} is not a list of numbers")))?
                    .iter()
                    .map(|x| {
                        x.as_f64().ok_or_else(|| {
                            bad(format!("instance {i} has a value that is not a number"))
                        })
                    })
                    .collect()
            })
            .collect()
    }
}

impl Handler for ModelHandler {
    fn handle(&mut self, event: &[u8], _ctx: &Context) -> Result<Vec<u8>, FunctionError> {
        if serde_json::from_slice::<Value>(event)
            .ok()
            .and_then(|v| v.get("metadata").cloned())
            == Some(Value::Bool(true))
        {
            return serde_json::to_vec(&json!({ "model": self.model.info() }))
                .map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()));
        }
        if self.model.info().task == virga_engine::Task::TextEmbedding {
            return self.texts(event);
        }
        let (predictions, preprocess_ms, inference_ms) =
            if self.model.info().task == virga_engine::Task::ImageClassification {
                let v: Value = serde_json::from_slice(event).map_err(|e| {
                    FunctionError::new("InvalidInput", format!("the request is not JSON: {e}"))
                })?;
                self.images(&v)?
            } else {
                let t = Instant::now();
                let rows = self.rows(event)?;
                check_rows(&rows, self.model.info().n_features, self.max_batch)
                    .map_err(|e| FunctionError::new("InvalidInput", e.to_string()))?;
                let preprocess_ms = ms(t);
                let t = Instant::now();
                let predictions = self
                    .model
                    .predict(&rows)
                    .map_err(|e| FunctionError::new("InferenceError", e.to_string()))?;
                (Value::from(predictions), preprocess_ms, ms(t))
            };
        let t = Instant::now();
        let info = self.model.info();
        let mut out = json!({
            "predictions": predictions,
            "model": { "engine": info.engine, "algorithm": info.algorithm, "dataset": info.dataset },
            "preprocess_ms": preprocess_ms,
            "inference_ms": inference_ms,
        });
        if let Some(init) = self.init_ms.take() {
            out["init_ms"] = json!(init);
        }
        out["postprocess_ms"] = json!(ms(t));
        serde_json::to_vec(&out).map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
    }
}
