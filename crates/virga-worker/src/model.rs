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
//!
//! Batches (the platform's adaptive batching): `{"batch": [request, ...]}` is
//! answered with `{"batch": [response, ...], "errors": [...]}` in order;
//! `errors` is present when a member failed and holds `null` or that
//! member's `{"errorType", "errorMessage"}`. Compatible members (rows;
//! images with the same `top_k`; texts) are merged into one engine call, in
//! chunks of `max_batch`; each response carries `batch_size` and the timing
//! of the batch it rode in. Anything else (`metadata`) is answered alone.
//!
//! Threads: under `AWS_LAMBDA_MAX_CONCURRENCY=n` (a service task) the model
//! is loaded once and shared by the n polling threads ([`ModelHandler::share`]):
//! what loading built is immutable and each call keeps its scratch state to
//! itself, so the threads infer at the same time and the task's init and
//! memory do not grow with n. An engine whose calls would wait for each
//! other (an onnxruntime session behind its lock) says so
//! (`Model::concurrent`), and then each thread loads its own copy, in
//! parallel, so the task's extra vCPUs are not left idle.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};
use virga_engine::{check_rows, Model};
use virga_spec::contract;

use crate::{Context, FunctionError, Handler};

/// Settings passed by the platform in the environment.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub engine: String,
    pub task: String,
    pub path: String,
    pub max_batch: usize,
    /// Intra-op threads (`VIRGA_MODEL_THREADS`), for engines with a thread pool.
    pub threads: usize,
    /// Requests are bucket notifications carrying the uploaded object
    /// (`VIRGA_MODEL_INPUT=object`).
    pub object_input: bool,
}

impl ModelConfig {
    pub fn from_env() -> Result<ModelConfig, FunctionError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = var(contract::MODEL_PATH).ok_or_else(|| {
            FunctionError::new(
                "Runtime.ModelNotConfigured",
                format!(
                    "{} is not set: deploy with runtime = \"model\"",
                    contract::MODEL_PATH
                ),
            )
        })?;
        Ok(ModelConfig {
            engine: var(contract::MODEL_ENGINE).unwrap_or_else(|| "classical".into()),
            task: var(contract::MODEL_TASK).unwrap_or_else(|| "tabular-classification".into()),
            path,
            max_batch: var(contract::MODEL_MAX_BATCH)
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
            threads: var(contract::MODEL_THREADS)
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(1),
            object_input: var(contract::MODEL_INPUT).as_deref() == Some("object"),
        })
    }
}

pub struct ModelHandler {
    model: Arc<dyn Model>,
    max_batch: usize,
    object_input: bool,
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
        let options = virga_engine::LoadOptions {
            threads: config.threads,
        };
        let model = virga_engine::load_with(
            &config.engine,
            std::path::Path::new(&config.path),
            task,
            &options,
        )
        .map_err(load_error)?;
        Ok(ModelHandler {
            model: Arc::from(model),
            max_batch: config.max_batch,
            object_input: config.object_input,
            init_ms: Some(ms(t)),
        })
    }

    /// Runs one inference on a sample input, so a template's children find
    /// the model's pages and lazily built state already there; best effort.
    pub fn warm(&self) {
        let info = self.model.info();
        let result = match info.task {
            virga_engine::Task::ImageClassification => {
                let grey = virga_engine::image::solid_png(64, 64, [128, 128, 128]);
                self.model.classify_images(&[grey], 1).map(drop)
            }
            virga_engine::Task::TextEmbedding => self
                .model
                .embed(&["A sample sentence to warm the model.".to_string()])
                .map(drop),
            _ => self
                .model
                .predict(&[vec![0.0; info.n_features.max(1)]])
                .map(drop),
        };
        if let Err(e) = result {
            eprintln!(
                "virga worker: warming the model failed (the first request will be slower): {e}"
            );
        }
    }

    /// A forked child's handler: the load was its template's, so its first
    /// answer reports no `init_ms`.
    pub fn forked(&mut self) {
        self.init_ms = None;
    }

    /// Another handler on the same loaded model, for another polling
    /// thread; `None` when the engine runs one call at a time (load another).
    pub fn share(&self) -> Option<ModelHandler> {
        self.model.concurrent().then(|| ModelHandler {
            model: self.model.clone(),
            max_batch: self.max_batch,
            object_input: self.object_input,
            init_ms: self.init_ms,
        })
    }

    /// Reads `{"inputs": ["text", ...]}`.
    fn text_request(&self, v: &Value) -> Result<Vec<String>, FunctionError> {
        let bad = |m: String| FunctionError::new("InvalidInput", m);
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
        Ok(texts)
    }

    /// Embeds `{"inputs": [...]}`; `t` is when the request's decoding began.
    fn texts(&mut self, v: &Value, t: Instant) -> Result<Vec<u8>, FunctionError> {
        let texts = self.text_request(v)?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let embeddings = self.model.embed(&texts).map_err(engine_error)?;
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

    /// Reads `{"image": b64, "top_k": k}` or `{"images": [b64, ...]}`:
    /// (decoded images, whether it was a single image, top_k).
    fn image_request(&self, v: &Value) -> Result<(Vec<Vec<u8>>, bool, usize), FunctionError> {
        use base64::Engine as _;
        let bad = |m: String| FunctionError::new("InvalidInput", m);
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
        Ok((bytes, single, top_k))
    }

    /// Classifies `{"image"}` or `{"images"}`; returns the predictions.
    fn images(&self, v: &Value, t: Instant) -> Result<(Value, f64, f64), FunctionError> {
        let (bytes, single, top_k) = self.image_request(v)?;
        let preprocess_ms = ms(t);
        let t = Instant::now();
        let mut out = self
            .model
            .classify_images(&bytes, top_k)
            .map_err(engine_error)?;
        let predictions = if single {
            out.swap_remove(0)
        } else {
            Value::from(out)
        };
        Ok((predictions, preprocess_ms, ms(t)))
    }

    fn rows(&self, v: &Value) -> Result<Vec<Vec<f64>>, FunctionError> {
        let bad = |m: String| FunctionError::new("InvalidInput", m);
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

/// Batch members (by index) of one mergeable group.
type Members = Vec<(usize, Unit)>;

/// One batch member, parsed and ready to merge.
enum Unit {
    Rows(Vec<Vec<f64>>),
    Images {
        bytes: Vec<Vec<u8>>,
        single: bool,
        top_k: usize,
    },
    Texts(Vec<String>),
}

fn engine_error(e: virga_engine::EngineError) -> FunctionError {
    match e {
        virga_engine::EngineError::Input(m) => FunctionError::new("InvalidInput", m),
        other => FunctionError::new("InferenceError", other.to_string()),
    }
}

/// The bucket and key an object request came from.
type Origin = (String, String);

impl ModelHandler {
    /// Reads an S3 notification of one created object, with the bytes the
    /// platform attached, as the task's own request.
    fn object_request(&self, v: &Value) -> Result<(Value, Origin), FunctionError> {
        use base64::Engine as _;
        let bad = |m: String| FunctionError::new("InvalidInput", m);
        let records = v.get("Records").and_then(Value::as_array).ok_or_else(|| {
            bad("this function takes its input from uploaded objects (input = \"object\"): send an S3 notification {\"Records\": [...]}, or deploy with input = \"request\"".into())
        })?;
        let [record] = records.as_slice() else {
            return Err(bad(format!(
                "an S3 notification carries one record; this one has {}",
                records.len()
            )));
        };
        let object = &record["s3"]["object"];
        let origin = (
            record["s3"]["bucket"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            object["key"].as_str().unwrap_or_default().to_string(),
        );
        let event = record["eventName"].as_str().unwrap_or_default();
        if !event.starts_with("ObjectCreated") {
            return Err(bad(format!(
                "{event} of {}/{}: only created objects have content to run the model on",
                origin.0, origin.1
            )));
        }
        if let Some(why) = object[contract::OBJECT_CONTENT_ERROR_FIELD].as_str() {
            let (kind, _) = why.split_once(':').unwrap_or(("ObjectUnavailable", why));
            return Err(FunctionError::new(kind, why));
        }
        let content = object[contract::OBJECT_CONTENT_FIELD].as_str().ok_or_else(|| {
            bad(format!(
                "the notification has no s3.object.{}: the platform attaches it to bucket notifications of input = \"object\" functions",
                contract::OBJECT_CONTENT_FIELD
            ))
        })?;
        let request = if self.model.info().task == virga_engine::Task::ImageClassification {
            json!({ "image": content })
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(content)
                .map_err(|e| bad(format!("the attached content is not base64: {e}")))?;
            serde_json::from_slice(&bytes).map_err(|e| {
                bad(format!(
                    "{}/{} is not the task's JSON request: {e}",
                    origin.0, origin.1
                ))
            })?
        };
        Ok((request, origin))
    }

    /// Parses one batch member into a unit of work.
    fn unit(&self, v: &Value) -> Result<Unit, FunctionError> {
        let bad = |m: String| FunctionError::new("InvalidInput", m);
        match self.model.info().task {
            virga_engine::Task::TextEmbedding => Ok(Unit::Texts(self.text_request(v)?)),
            virga_engine::Task::ImageClassification => {
                let (bytes, single, top_k) = self.image_request(v)?;
                Ok(Unit::Images {
                    bytes,
                    single,
                    top_k,
                })
            }
            _ => {
                let rows = self.rows(v)?;
                check_rows(&rows, self.model.info().n_features, self.max_batch)
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Unit::Rows(rows))
            }
        }
    }

    /// One engine call (chunked by `max_batch`) over mergeable members;
    /// the outputs of all members, in order.
    fn infer(&self, members: &[&Unit], chunk: usize) -> Result<Vec<Value>, FunctionError> {
        match members[0] {
            Unit::Rows(_) => {
                let rows: Vec<Vec<f64>> = members
                    .iter()
                    .flat_map(|u| match u {
                        Unit::Rows(r) => r.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                rows.chunks(chunk)
                    .map(|c| {
                        self.model
                            .predict(c)
                            .map_err(|e| FunctionError::new("InferenceError", e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.into_iter().flatten().collect())
            }
            Unit::Images { top_k, .. } => {
                let top_k = *top_k;
                let all: Vec<Vec<u8>> = members
                    .iter()
                    .flat_map(|u| match u {
                        Unit::Images { bytes, .. } => bytes.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                all.chunks(chunk)
                    .map(|c| self.model.classify_images(c, top_k).map_err(engine_error))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.into_iter().flatten().collect())
            }
            Unit::Texts(_) => {
                let all: Vec<String> = members
                    .iter()
                    .flat_map(|u| match u {
                        Unit::Texts(t) => t.clone(),
                        _ => Vec::new(),
                    })
                    .collect();
                all.chunks(chunk)
                    .map(|c| self.model.embed(c).map_err(engine_error))
                    .collect::<Result<Vec<_>, _>>()
                    .map(|v| v.into_iter().flatten().map(|e| json!(e)).collect())
            }
        }
    }

    /// `{"metadata": true}`: the model's description.
    fn metadata(&self) -> Result<Vec<u8>, FunctionError> {
        serde_json::to_vec(&json!({ "model": self.model.info() }))
            .map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
    }

    /// Answers `{"batch": [...]}`: merges compatible members into engine
    /// calls of at most `max_batch` inputs and splits the results back.
    fn handle_batch(&mut self, items: &[Value]) -> Result<Vec<u8>, FunctionError> {
        let n = items.len();
        let t = Instant::now();
        let mut results: Vec<Option<Result<Value, FunctionError>>> = (0..n).map(|_| None).collect();
        let mut units: Vec<(usize, Unit)> = Vec::new();
        let mut origins: Vec<Option<Origin>> = vec![None; n];
        for (i, item) in items.iter().enumerate() {
            if item.get("metadata") == Some(&Value::Bool(true)) {
                results[i] = Some(Ok(json!({ "model": self.model.info() })));
                continue;
            }
            let parsed = if self.object_input {
                self.object_request(item).and_then(|(req, origin)| {
                    origins[i] = Some(origin);
                    self.unit(&req)
                })
            } else {
                self.unit(item)
            };
            match parsed {
                Ok(u) => units.push((i, u)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let preprocess_ms = ms(t);
        let t = Instant::now();
        // Groups of mergeable members: by kind, and by top_k for images.
        let mut groups: Vec<(Option<usize>, Members)> = Vec::new();
        for (i, u) in units {
            let key = match &u {
                Unit::Images { top_k, .. } => Some(*top_k),
                _ => None,
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push((i, u)),
                None => groups.push((key, vec![(i, u)])),
            }
        }
        let chunk = self.max_batch.max(1);
        for (_, group) in groups {
            let sizes: Vec<usize> = group
                .iter()
                .map(|(_, u)| match u {
                    Unit::Rows(r) => r.len(),
                    Unit::Images { bytes, .. } => bytes.len(),
                    Unit::Texts(t) => t.len(),
                })
                .collect();
            let members: Vec<&Unit> = group.iter().map(|(_, u)| u).collect();
            let outputs = self.infer(&members, chunk);
            // One bad member (a corrupt image) must not fail the others:
            // on a failed merged call, each member runs alone.
            if outputs.is_err() && group.len() > 1 {
                for ((i, u), k) in group.into_iter().zip(sizes) {
                    results[i] = Some(
                        self.infer(&[&u], chunk)
                            .map(|outs| respond(&u, outs.into_iter().take(k).collect())),
                    );
                }
                continue;
            }
            match outputs {
                Ok(mut outs) => {
                    for ((i, u), k) in group.into_iter().zip(sizes) {
                        let mine: Vec<Value> = outs.drain(..k.min(outs.len())).collect();
                        results[i] = Some(Ok(respond(&u, mine)));
                    }
                }
                Err(e) => {
                    for (i, _) in group {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        let inference_ms = ms(t);
        let info = self.model.info();
        let model =
            json!({ "engine": info.engine, "algorithm": info.algorithm, "dataset": info.dataset });
        let init_ms = self.init_ms.take();
        let mut responses = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        for (r, origin) in results.into_iter().zip(origins) {
            match r.unwrap_or_else(|| Err(FunctionError::new("Runtime.Unknown", "unanswered"))) {
                Ok(mut body) => {
                    if let Some((bucket, key)) = origin {
                        body["bucket"] = json!(bucket);
                        body["key"] = json!(key);
                    }
                    if body.get("model").is_none() && body.get("embeddings").is_none() {
                        body["model"] = model.clone();
                    }
                    body["batch_size"] = json!(n);
                    body["preprocess_ms"] = json!(preprocess_ms);
                    body["inference_ms"] = json!(inference_ms);
                    body["postprocess_ms"] = json!(0.0);
                    if let Some(init) = init_ms {
                        body["init_ms"] = json!(init);
                    }
                    responses.push(body);
                    errors.push(Value::Null);
                }
                Err(e) => {
                    responses.push(Value::Null);
                    errors.push(json!({ "errorType": e.error_type, "errorMessage": e.message }));
                }
            }
        }
        let mut out = json!({ contract::BATCH_FIELD: responses });
        if errors.iter().any(|e| !e.is_null()) {
            out[contract::BATCH_ERRORS_FIELD] = Value::from(errors);
        }
        serde_json::to_vec(&out).map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
    }
}

/// An answer with the bucket and key of the object it is about.
fn with_origin(body: &[u8], (bucket, key): Origin) -> Result<Vec<u8>, FunctionError> {
    let mut v: Value = serde_json::from_slice(body)
        .map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))?;
    v["bucket"] = json!(bucket);
    v["key"] = json!(key);
    serde_json::to_vec(&v).map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
}

/// A member's response body from its share of the outputs.
fn respond(u: &Unit, mine: Vec<Value>) -> Value {
    match u {
        Unit::Texts(_) => json!({ "embeddings": mine }),
        Unit::Images { single: true, .. } => {
            json!({ "predictions": mine.into_iter().next().unwrap_or(Value::Null) })
        }
        _ => json!({ "predictions": mine }),
    }
}

impl Handler for ModelHandler {
    fn handle(&mut self, event: &[u8], ctx: &Context) -> Result<Vec<u8>, FunctionError> {
        // Parsed once: image payloads run to megabytes.
        let t = Instant::now();
        let v: Value = serde_json::from_slice(event).map_err(|e| {
            FunctionError::new("InvalidInput", format!("the request is not JSON: {e}"))
        })?;
        if ctx.batch_size.is_some() {
            if let Some(items) = v.get(contract::BATCH_FIELD).and_then(Value::as_array) {
                return self.handle_batch(items);
            }
        }
        if v.get("metadata") == Some(&Value::Bool(true)) {
            return self.metadata();
        }
        let (v, origin) = if self.object_input {
            let (req, origin) = self.object_request(&v)?;
            (req, Some(origin))
        } else {
            (v, None)
        };
        if self.model.info().task == virga_engine::Task::TextEmbedding {
            let body = self.texts(&v, t)?;
            return match origin {
                None => Ok(body),
                Some(origin) => with_origin(&body, origin),
            };
        }
        let (predictions, preprocess_ms, inference_ms) =
            if self.model.info().task == virga_engine::Task::ImageClassification {
                self.images(&v, t)?
            } else {
                let rows = self.rows(&v)?;
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
        if let Some((bucket, key)) = origin {
            out["bucket"] = json!(bucket);
            out["key"] = json!(key);
        }
        out["postprocess_ms"] = json!(ms(t));
        serde_json::to_vec(&out).map_err(|e| FunctionError::new("Runtime.Unknown", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The platform passes a manifest's task by its name: every task a
    /// manifest accepts is one this runtime knows.
    #[test]
    fn every_manifest_task_is_a_task_here() {
        use virga_spec::ModelTask::*;
        for t in [
            ImageClassification,
            TextEmbedding,
            TabularClassification,
            TabularRegression,
            Clustering,
            Decomposition,
        ] {
            let here = virga_engine::Task::parse(t.as_str()).unwrap();
            assert_eq!(
                serde_json::to_value(here).unwrap(),
                serde_json::to_value(t).unwrap()
            );
        }
    }

    fn handler(dir: &std::path::Path, file: &str, task: &str) -> ModelHandler {
        ModelHandler::load(&ModelConfig {
            engine: "tract".into(),
            task: task.into(),
            path: dir.join(file).display().to_string(),
            max_batch: 8,
            threads: 1,
            object_input: false,
        })
        .unwrap()
    }

    #[test]
    fn threads_share_one_loaded_model_and_infer_at_once() {
        let dir = tempfile::tempdir().unwrap();
        virga_engine::fixtures::mlp(&dir.path().join("m.onnx"));
        let h = handler(dir.path(), "m.onnx", "tabular-classification");
        let others: Vec<ModelHandler> = (0..3).map(|_| h.share().unwrap()).collect();
        assert!(
            others.iter().all(|o| Arc::ptr_eq(&o.model, &h.model)),
            "one load"
        );
        let rows = json!({"instances": [[0.1, 0.2, 0.3, 0.4], [3.0, -1.0, 0.5, 2.0]]});
        let mut all = others;
        all.push(h);
        let answers: Vec<Value> = std::thread::scope(|s| {
            let threads: Vec<_> = all
                .into_iter()
                .map(|mut h| {
                    let rows = rows.clone();
                    s.spawn(move || {
                        (0..50)
                            .map(|_| call(&mut h, &rows, None)["predictions"].clone())
                            .last()
                            .unwrap()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    }

    /// An S3 notification of `key`, with `object` fields the platform adds.
    fn notification(event: &str, key: &str, object: Value) -> Value {
        let mut n = virga_spec::events::s3_event("up", key, 3, "e", true, "t", "1");
        n["Records"][0]["eventName"] = json!(event);
        for (k, v) in object.as_object().unwrap() {
            n["Records"][0]["s3"]["object"][k] = v.clone();
        }
        n
    }

    #[test]
    fn object_input_classifies_the_attached_upload_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        virga_engine::fixtures::colour_classifier(&dir.path().join("c.onnx"), 8);
        let mut h = handler(dir.path(), "c.onnx", "image-classification");
        h.object_input = true;
        let up = notification(
            "ObjectCreated:Put",
            "in/red.png",
            json!({ contract::OBJECT_CONTENT_FIELD: png([250, 10, 10]) }),
        );
        let v = call(&mut h, &up, None);
        assert_eq!(v["predictions"][0]["label"], "red", "{v}");
        assert_eq!(
            (v["bucket"].as_str(), v["key"].as_str()),
            (Some("up"), Some("in/red.png"))
        );
        // The same through the batched path.
        let v = call(
            &mut h,
            &json!({ "batch": [up, {"image": png([1, 2, 3])}] }),
            Some(2),
        );
        assert_eq!(v["batch"][0]["key"], "in/red.png", "{v}");
        assert_eq!(v["errors"][1]["errorType"], "InvalidInput", "{v}");
    }

    #[test]
    fn object_input_refuses_what_carries_no_object() {
        let dir = tempfile::tempdir().unwrap();
        virga_engine::fixtures::mlp(&dir.path().join("m.onnx"));
        let mut h = handler(dir.path(), "m.onnx", "tabular-classification");
        h.object_input = true;
        let err = |h: &mut ModelHandler, v: &Value| {
            h.handle(v.to_string().as_bytes(), &ctx(None)).unwrap_err()
        };
        // Rows in a JSON object work; the answer names the object.
        let rows = json!({"instances": [[0.1, 0.2, 0.3, 0.4]]});
        let b64 = |v: &Value| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(v.to_string())
        };
        let ok = notification(
            "ObjectCreated:Put",
            "rows.json",
            json!({ contract::OBJECT_CONTENT_FIELD: b64(&rows) }),
        );
        assert_eq!(call(&mut h, &ok, None)["key"], "rows.json");
        // A plain request, a delete, a missing or failed attachment, bytes
        // that are not the task's JSON: each a clear error, never a panic.
        let e = err(&mut h, &rows);
        assert!(e.message.contains("input = \"object\""), "{}", e.message);
        let e = err(
            &mut h,
            &notification("ObjectRemoved:Delete", "k", json!({})),
        );
        assert!(e.message.contains("ObjectRemoved"), "{}", e.message);
        let e = err(&mut h, &notification("ObjectCreated:Put", "k", json!({})));
        assert!(
            e.message.contains(contract::OBJECT_CONTENT_FIELD),
            "{}",
            e.message
        );
        let gone = json!({ contract::OBJECT_CONTENT_ERROR_FIELD: "NoSuchKey: up/k is gone" });
        let e = err(&mut h, &notification("ObjectCreated:Put", "k", gone));
        assert_eq!(e.error_type, "NoSuchKey");
        let junk = json!({ contract::OBJECT_CONTENT_FIELD: b64(&json!("not rows")) });
        let e = err(&mut h, &notification("ObjectCreated:Put", "k", junk));
        assert_eq!(e.error_type, "InvalidInput", "{}", e.message);
        let two = json!({"Records": [ok["Records"][0], ok["Records"][0]]});
        assert!(err(&mut h, &two).message.contains("one record"));
    }

    fn ctx(batch: Option<usize>) -> Context {
        Context {
            request_id: "r".into(),
            deadline_ms: u64::MAX,
            invoked_function_arn: "arn".into(),
            trace_id: String::new(),
            batch_size: batch,
        }
    }

    fn call(h: &mut ModelHandler, event: &Value, batch: Option<usize>) -> Value {
        let out = h.handle(event.to_string().as_bytes(), &ctx(batch)).unwrap();
        serde_json::from_slice(&out).unwrap()
    }

    fn png(rgb: [u8; 3]) -> String {
        use base64::Engine as _;
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb(rgb));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        base64::engine::general_purpose::STANDARD.encode(out.into_inner())
    }

    #[test]
    fn a_batch_of_images_answers_each_member_and_a_corrupt_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        virga_engine::fixtures::colour_classifier(&dir.path().join("c.onnx"), 8);
        let mut h = handler(dir.path(), "c.onnx", "image-classification");
        let batch = json!({"batch": [
            {"image": png([250, 10, 10]), "top_k": 1},
            {"image": png([10, 10, 250]), "top_k": 1},
            {"image": "bm90IGFuIGltYWdl", "top_k": 1},
            {"image": png([10, 250, 10]), "top_k": 2},
        ]});
        let v = call(&mut h, &batch, Some(4));
        let label = |i: usize| v["batch"][i]["predictions"][0]["label"].clone();
        assert_eq!(label(0), "red", "{v}");
        assert_eq!(label(1), "blue");
        assert_eq!(label(3), "green");
        assert_eq!(v["batch"][3]["predictions"].as_array().unwrap().len(), 2);
        assert!(v["batch"][2].is_null());
        assert_eq!(v["errors"][2]["errorType"], "InvalidInput", "{v}");
        assert!(v["errors"][0].is_null() && v["errors"][1].is_null());
        assert_eq!(v["batch"][0]["batch_size"], 4);
    }

    #[test]
    fn batched_rows_and_texts_equal_the_unbatched_answers() {
        let dir = tempfile::tempdir().unwrap();
        virga_engine::fixtures::mlp(&dir.path().join("m.onnx"));
        let mut h = handler(dir.path(), "m.onnx", "tabular-classification");
        let a = json!({"instances": [[0.1, 0.2, 0.3, 0.4]]});
        let b = json!({"instances": [[3.0, -1.0, 0.5, 2.0], [-2.0, 1.0, 1.0, 0.0]]});
        let v = call(
            &mut h,
            &json!({"batch": [a, b, {"instances": [[1.0]]}]}),
            Some(3),
        );
        assert_eq!(
            v["batch"][0]["predictions"],
            call(&mut h, &a, None)["predictions"]
        );
        assert_eq!(
            v["batch"][1]["predictions"],
            call(&mut h, &b, None)["predictions"]
        );
        assert_eq!(v["errors"][2]["errorType"], "InvalidInput", "{v}");

        virga_engine::fixtures::text_encoder(&dir.path().join("t.onnx"));
        let mut h = handler(dir.path(), "t.onnx", "text-embedding");
        let a = json!({"inputs": ["cat"]});
        let b = json!({"inputs": ["car", "truck dog"]});
        let v = call(&mut h, &json!({"batch": [a, b]}), Some(2));
        assert_eq!(
            v["batch"][0]["embeddings"],
            call(&mut h, &a, None)["embeddings"]
        );
        assert_eq!(
            v["batch"][1]["embeddings"],
            call(&mut h, &b, None)["embeddings"]
        );
        assert!(v.get("errors").is_none());
    }
}
