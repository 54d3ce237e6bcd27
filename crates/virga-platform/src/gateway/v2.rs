//! KServe V2 (Open Inference Protocol): server and model metadata,
//! readiness and inference, translated into invocations of model functions.

use super::*;

/// A KServe V2 error: `{"error": "..."}`.
#[derive(Debug)]
pub(super) struct V2Error(pub(super) StatusCode, pub(super) String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(super) fn v2_error(status: StatusCode, message: impl Into<String>) -> V2Error {
    V2Error(status, message.into())
}

/// Finds a model function, or answers as V2 does.
pub(super) fn v2_function(
    state: &AppState,
    name: &str,
) -> Result<crate::scheduler::FunctionInfo, V2Error> {
    match state.scheduler.function(name) {
        Some(f) if f.runtime == virga_spec::Runtime::Model => Ok(f),
        Some(_) => Err(v2_error(
            StatusCode::BAD_REQUEST,
            format!("{name} is not a model function (runtime = \"model\")"),
        )),
        None => Err(v2_error(
            StatusCode::NOT_FOUND,
            format!("model {name} not found"),
        )),
    }
}

/// V2 server metadata.
pub(super) async fn v2_server() -> Json<serde_json::Value> {
    Json(json!({
        "name": "virga",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// A versioned V2 path names the live version: only the running revision
/// of a function serves, so any other version is not found.
pub(super) fn v2_version(state: &AppState, name: &str, version: &str) -> Result<(), V2Error> {
    let f = v2_function(state, name)?;
    if f.version == version {
        Ok(())
    } else {
        Err(v2_error(
            StatusCode::NOT_FOUND,
            format!(
                "model {name} version {version} not found: version {} serves",
                f.version
            ),
        ))
    }
}

pub(super) async fn v2_metadata_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_metadata(State(state), Path(name)).await
}

pub(super) async fn v2_ready_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_ready(State(state), Path(name)).await
}

pub(super) async fn v2_infer_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    body: Body,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_infer(State(state), Path(name), body).await
}

/// Invokes a model function with a JSON event; a function error becomes a V2 error.
pub(super) async fn v2_call(
    state: &AppState,
    name: &str,
    event: serde_json::Value,
) -> Result<serde_json::Value, V2Error> {
    let out = state
        .scheduler
        .invoke(InvokeRequest::new(
            name,
            bytes::Bytes::from(event.to_string()),
            Trigger::Http,
        ))
        .await
        .map_err(|e| {
            let status = match e {
                InvokeError::NotFound(_) | InvokeError::Deleted(_) => StatusCode::NOT_FOUND,
                InvokeError::Throttled { .. }
                | InvokeError::NoMemory { .. }
                | InvokeError::ShareFull { .. } => StatusCode::TOO_MANY_REQUESTS,
                InvokeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            };
            v2_error(status, e.to_string())
        })?;
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap_or_default();
    if let Some(kind) = out.function_error {
        let message = body["errorMessage"].as_str().unwrap_or_default();
        let status = if kind == "InvalidInput" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        return Err(v2_error(status, format!("{kind}: {message}")));
    }
    Ok(body)
}

/// The V2 datatype of a model's predictions.
pub(super) fn v2_output(model: &serde_json::Value) -> (&'static str, serde_json::Value) {
    let width = model["output_width"].as_u64().unwrap_or(1);
    match model["task"].as_str() {
        Some("image-classification") => ("BYTES", json!([-1, -1])),
        Some("text-embedding") => ("FP32", json!([-1, -1])),
        Some("tabular-classification") => ("BYTES", json!([-1])),
        Some("clustering") => ("INT64", json!([-1])),
        Some("decomposition") => ("FP64", json!([-1, width])),
        _ => ("FP64", json!([-1])),
    }
}

pub(super) async fn v2_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, V2Error> {
    let f = v2_function(&state, &name)?;
    let meta = v2_call(&state, &name, json!({ "metadata": true })).await?;
    let model = &meta["model"];
    let (datatype, shape) = v2_output(model);
    Ok(Json(json!({
        "name": name,
        "versions": [f.version],
        "platform": format!("virga-{}", model["engine"].as_str().unwrap_or("model")),
        "inputs": [if model["task"] == "image-classification" {
            json!({ "name": "images", "datatype": "BYTES", "shape": [-1] })
        } else if model["task"] == "text-embedding" {
            json!({ "name": "texts", "datatype": "BYTES", "shape": [-1] })
        } else {
            json!({ "name": "input-0", "datatype": "FP64", "shape": [-1, model["n_features"]] })
        }],
        "outputs": [{ "name": "predictions", "datatype": datatype, "shape": shape }],
        "parameters": {
            "task": model["task"],
            "algorithm": model["algorithm"],
            "dataset": model["dataset"],
            "classes": model["classes"],
            "feature_names": model["feature_names"],
        },
    }))
    .into_response())
}

pub(super) async fn v2_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, V2Error> {
    v2_function(&state, &name)?;
    Ok(Json(json!({ "name": name, "ready": true })).into_response())
}

/// Rows from a V2 input tensor: `shape` [N, F] (or [F] for one row) with
/// `data` flat (row-major) or nested.
pub(super) fn v2_rows(input: &serde_json::Value) -> Result<Vec<Vec<f64>>, String> {
    let shape: Vec<i64> = input["shape"]
        .as_array()
        .ok_or("inputs[0].shape is missing")?
        .iter()
        .map(|d| d.as_i64().ok_or("inputs[0].shape must be integers"))
        .collect::<Result<_, _>>()?;
    let (n, f) = match shape[..] {
        [n, f] if n >= 0 && f > 0 => (n as usize, f as usize),
        [f] if f > 0 => (1, f as usize),
        _ => return Err(format!("inputs[0].shape {shape:?} is not [rows, features]")),
    };
    fn flatten(v: &serde_json::Value, out: &mut Vec<f64>) -> Result<(), String> {
        match v {
            serde_json::Value::Array(a) => a.iter().try_for_each(|x| flatten(x, out)),
            serde_json::Value::Number(x) => {
                out.push(x.as_f64().ok_or("a value is not a number")?);
                Ok(())
            }
            serde_json::Value::Bool(b) => {
                out.push(f64::from(u8::from(*b)));
                Ok(())
            }
            other => Err(format!("{other} is not a number")),
        }
    }
    let mut flat = Vec::with_capacity(n * f);
    flatten(&input["data"], &mut flat)?;
    if flat.len() != n * f {
        return Err(format!(
            "inputs[0] has {} values but its shape {shape:?} needs {}",
            flat.len(),
            n * f
        ));
    }
    Ok(flat.chunks(f).map(<[f64]>::to_vec).collect())
}

pub(super) async fn v2_infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, V2Error> {
    let f = v2_function(&state, &name)?;
    let body = to_bytes(body, MAX_PAYLOAD_BYTES).await.map_err(|_| {
        v2_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request is over {MAX_PAYLOAD_BYTES} bytes"),
        )
    })?;
    let req: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        v2_error(
            StatusCode::BAD_REQUEST,
            format!("the request is not JSON: {e}"),
        )
    })?;
    let Some(input) = req["inputs"].as_array().and_then(|a| a.first()) else {
        return Err(v2_error(
            StatusCode::BAD_REQUEST,
            "send {\"inputs\": [{\"name\", \"shape\": [rows, features], \"datatype\": \"FP64\", \"data\": [...]}]}",
        ));
    };
    if input["datatype"] == "BYTES" {
        let is_text = f
            .manifest
            .model
            .as_ref()
            .is_some_and(|m| m.task == virga_spec::ModelTask::TextEmbedding);
        return if is_text {
            v2_infer_texts(&state, &name, &f.version, &req, input).await
        } else {
            v2_infer_images(&state, &name, &f.version, &req, input).await
        };
    }
    let rows = v2_rows(input).map_err(|e| v2_error(StatusCode::BAD_REQUEST, e))?;
    let n = rows.len();
    let out = v2_call(&state, &name, json!({ "instances": rows })).await?;
    let predictions = out["predictions"].as_array().cloned().unwrap_or_default();
    let (datatype, shape) = match predictions.first() {
        Some(serde_json::Value::String(_)) => ("BYTES", json!([n])),
        Some(serde_json::Value::Array(row)) => ("FP64", json!([n, row.len()])),
        Some(v) if v.is_i64() || v.is_u64() => ("INT64", json!([n])),
        _ => ("FP64", json!([n])),
    };
    let data: Vec<serde_json::Value> = predictions
        .into_iter()
        .flat_map(|p| match p {
            serde_json::Value::Array(row) => row,
            other => vec![other],
        })
        .collect();
    Ok(v2_response(
        &name,
        &f.version,
        &req,
        json!({
            "outputs": [{ "name": "predictions", "shape": shape, "datatype": datatype, "data": data }],
            "parameters": {
                "preprocess_ms": out["preprocess_ms"],
                "inference_ms": out["inference_ms"],
                "postprocess_ms": out["postprocess_ms"],
            },
        }),
    ))
}

/// The strings of a BYTES input tensor, or the V2 error that says what it must carry.
pub(super) fn v2_strings<'a>(
    input: &'a serde_json::Value,
    what: &str,
) -> Result<&'a Vec<serde_json::Value>, V2Error> {
    input["data"]
        .as_array()
        .filter(|a| !a.is_empty() && a.iter().all(|x| x.is_string()))
        .ok_or_else(|| {
            v2_error(
                StatusCode::BAD_REQUEST,
                format!("a BYTES input carries {what} as strings in \"data\""),
            )
        })
}

/// A V2 inference response, echoing the request's `id`.
pub(super) fn v2_response(
    name: &str,
    version: &str,
    req: &serde_json::Value,
    mut body: serde_json::Value,
) -> Response {
    body["model_name"] = json!(name);
    body["model_version"] = json!(version);
    if let Some(id) = req.get("id") {
        body["id"] = id.clone();
    }
    Json(body).into_response()
}

/// V2 inference for text-embedding models: a BYTES input of strings gives
/// `embeddings` (FP32, `[N, D]`).
pub(super) async fn v2_infer_texts(
    state: &AppState,
    name: &str,
    version: &str,
    req: &serde_json::Value,
    input: &serde_json::Value,
) -> Result<Response, V2Error> {
    let texts = v2_strings(input, "the texts")?;
    let out = v2_call(state, name, json!({ "inputs": texts })).await?;
    let rows = out["embeddings"].as_array().cloned().unwrap_or_default();
    let dim = rows.first().and_then(|r| r.as_array()).map_or(0, Vec::len);
    let data: Vec<serde_json::Value> = rows
        .into_iter()
        .flat_map(|r| r.as_array().cloned().unwrap_or_default())
        .collect();
    Ok(v2_response(
        name,
        version,
        req,
        json!({ "outputs": [{ "name": "embeddings", "shape": [texts.len(), dim], "datatype": "FP32", "data": data }] }),
    ))
}

/// V2 inference for image models: a BYTES input of base64 images gives
/// `labels` (BYTES) and `scores` (FP32), `[N, top_k]` each.
pub(super) async fn v2_infer_images(
    state: &AppState,
    name: &str,
    version: &str,
    req: &serde_json::Value,
    input: &serde_json::Value,
) -> Result<Response, V2Error> {
    let images = v2_strings(input, "base64-encoded images")?;
    let top_k = req["parameters"]["top_k"].as_u64().unwrap_or(5);
    let out = v2_call(state, name, json!({ "images": images, "top_k": top_k })).await?;
    let per_image = out["predictions"].as_array().cloned().unwrap_or_default();
    let n = per_image.len();
    let k = per_image
        .first()
        .and_then(|p| p.as_array())
        .map_or(0, Vec::len);
    let (mut labels, mut scores) = (Vec::new(), Vec::new());
    for p in per_image.iter().filter_map(|p| p.as_array()) {
        for entry in p {
            labels.push(entry["label"].clone());
            scores.push(entry["score"].clone());
        }
    }
    Ok(v2_response(
        name,
        version,
        req,
        json!({
            "outputs": [
                { "name": "labels", "shape": [n, k], "datatype": "BYTES", "data": labels },
                { "name": "scores", "shape": [n, k], "datatype": "FP32", "data": scores },
            ],
        }),
    ))
}
