//! The gateway: every HTTP route users call, and the one place where errors
//! become HTTP responses (Lambda's error names and JSON shape).
//!
//! - AWS Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations`,
//!   plus `GetFunction` and `ListFunctions` for SDKs and the AWS CLI;
//! - management under `/v1/`: functions, instances, invocations, logs;
//! - KServe V2 / Open Inference Protocol for model functions: health,
//!   model metadata and readiness, `infer` (tensors <-> `{"instances"}`);
//! - Prometheus metrics: `/metrics`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use virga_spec::{Status, Trigger};

use crate::events::{Events, EventsError};
use crate::logs::tail_4kb;
use crate::scheduler::{DeployError, InvokeError, InvokeRequest, Scheduler};
use crate::store::{RecordFilter, StoreError};

/// Lambda's synchronous request payload limit (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest manifest accepted by the deploy endpoint.
const MAX_MANIFEST_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub events: Arc<Events>,
}

/// Lambda's asynchronous payload limit (1 MB).
pub const MAX_ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest object accepted by `PUT /v1/buckets/...`.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// The whole HTTP surface, without a socket (tests drive it directly).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route("/2015-03-31/functions/{name}", get(aws_get_function))
        .route("/2015-03-31/functions", get(aws_list_functions))
        .route("/2015-03-31/functions/", get(aws_list_functions))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            get(get_function).put(deploy).delete(delete_function),
        )
        .route(
            "/v1/functions/{name}/instances",
            get(list_instances).delete(stop_instances),
        )
        .route("/v1/functions/{name}/logs", get(function_logs))
        .route("/v1/functions/{name}/dlq", get(list_dead_letters))
        .route("/v1/functions/{name}/dlq/redrive", post(redrive))
        .route("/v1/invocations", get(list_invocations))
        .route("/v1/buckets/{bucket}/objects", get(list_objects))
        .route(
            "/v1/buckets/{bucket}/objects/{*key}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .route("/v1/topics/{topic}", post(publish))
        .route("/v1/queues", get(queues))
        .route("/v1/queues/{queue}/messages", post(send_message))
        .route("/v2", get(v2_server))
        .route("/v2/models/{name}", get(v2_metadata))
        .route("/v2/models/{name}/ready", get(v2_ready))
        .route("/v2/models/{name}/infer", post(v2_infer))
        .route("/v2/models/{name}/versions/{version}", get(v2_metadata_at))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(v2_ready_at),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(v2_infer_at),
        )
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found_route)
        .with_state(state)
}

/// An error as Lambda reports it: status, `x-amzn-ErrorType`, and
/// `{"Type": "User", "message": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error_type: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }

    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", what)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let mut body = json!({ "Type": kind, "message": self.message });
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            body["Reason"] = json!("ReservedFunctionConcurrentInvocationLimitExceeded");
        }
        let mut resp = (self.status, Json(body)).into_response();
        resp.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(self.error_type),
        );
        resp
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> Self {
        match e {
            InvokeError::NotFound(_) | InvokeError::Deleted(_) => {
                ApiError::not_found(e.to_string())
            }
            InvokeError::Throttled { .. } | InvokeError::NoMemory { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                e.to_string(),
            ),
            InvokeError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceException",
                e.to_string(),
            ),
        }
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::Store(s) => s.into(),
            other => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                other.to_string(),
            ),
        }
    }
}

impl From<EventsError> for ApiError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::NotFound(_) => ApiError::not_found(e.to_string()),
            EventsError::NoSuchKey { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "NoSuchKey", e.to_string())
            }
            EventsError::Invalid(_) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                e.to_string(),
            ),
            EventsError::Durable(_) | EventsError::Io(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            ),
        }
    }
}

fn too_large(limit: usize, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestTooLargeException",
        format!("{what} must be smaller than {limit} bytes"),
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            e.to_string(),
        )
    }
}

async fn not_found_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        "Unknown operation: see the Lambda Invoke API, /v1/ and /v2/ routes",
    )
}

/// Accepts a name, `name:qualifier`, or a full or partial ARN.
fn function_name(raw: &str) -> &str {
    let name = raw.rsplit_once("function:").map_or(raw, |(_, n)| n);
    name.split(':').next().unwrap_or(name)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn invoke(
    State(state): State<AppState>,
    Path(raw_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let name = function_name(&raw_name).to_string();
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    match invocation_type {
        "RequestResponse" => {}
        "DryRun" => {
            return if state.scheduler.exists(&name) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ApiError::not_found(format!("Function not found: {name}")))
            };
        }
        "Event" => {
            let payload = to_bytes(body, MAX_ASYNC_PAYLOAD_BYTES)
                .await
                .map_err(|_| too_large(MAX_ASYNC_PAYLOAD_BYTES, "An asynchronous request"))?;
            check_json(&payload)?;
            let id = state
                .events
                .invoke_async(&name, payload, Trigger::Http)
                .await?;
            let mut resp = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amzn-requestid", v);
            }
            return Ok(resp);
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "X-Amz-Invocation-Type {other:?} is not one of RequestResponse, Event, DryRun"
            )))
        }
    }
    let payload = to_bytes(body, MAX_PAYLOAD_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the InvokeFunction operation"),
        )
    })?;
    check_json(&payload)?;
    let want_tail = header(&headers, "x-amz-log-type") == Some("Tail");
    let outcome = state
        .scheduler
        .invoke(InvokeRequest::new(name, payload, Trigger::Http))
        .await?;
    let mut resp = (StatusCode::OK, outcome.body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "x-amz-executed-version",
        HeaderValue::from_static("$LATEST"),
    );
    if let Ok(v) = HeaderValue::from_str(&outcome.request_id) {
        h.insert("x-amzn-requestid", v);
    }
    if outcome.function_error.is_some() {
        h.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if want_tail {
        let tail = base64::engine::general_purpose::STANDARD.encode(tail_4kb(&outcome.log));
        if let Ok(v) = HeaderValue::from_str(&tail) {
            h.insert("x-amz-log-result", v);
        }
    }
    Ok(resp)
}

/// Lambda refuses payloads that are not JSON (an empty one is allowed).
fn check_json(payload: &[u8]) -> Result<(), ApiError> {
    if payload.is_empty() {
        return Ok(());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(payload)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("Could not parse request body into json: {e}")))
}

/// Lambda's `FunctionConfiguration`, enough for SDKs and the AWS CLI.
fn aws_configuration(f: &crate::scheduler::FunctionInfo) -> serde_json::Value {
    json!({
        "FunctionName": f.name,
        "FunctionArn": format!("arn:aws:lambda:us-east-1:000000000000:function:{}", f.name),
        "Runtime": "provided.al2023",
        "Handler": f.manifest.handler.clone().unwrap_or_default(),
        "MemorySize": f.memory_mb,
        "Timeout": f.timeout_ms.div_ceil(1000),
        "Version": "$LATEST",
        "LastModified": f.deployed_at,
        "State": "Active",
        "PackageType": "Zip",
        "Architectures": [std::env::consts::ARCH.replace("aarch64", "arm64")],
    })
}

async fn aws_get_function(
    State(state): State<AppState>,
    Path(raw_name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = function_name(&raw_name);
    let f = state
        .scheduler
        .function(name)
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
    Ok(Json(json!({ "Configuration": aws_configuration(&f) })))
}

async fn aws_list_functions(State(state): State<AppState>) -> Json<serde_json::Value> {
    let fs: Vec<_> = state
        .scheduler
        .functions()
        .iter()
        .map(aws_configuration)
        .collect();
    Json(json!({ "Functions": fs }))
}

async fn list_functions(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "functions": state.scheduler.functions() }))
}

async fn get_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<crate::scheduler::FunctionInfo>, ApiError> {
    state
        .scheduler
        .function(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))
}

#[derive(Debug, Deserialize)]
struct DeployQuery {
    /// The manifest's directory: relative paths in it are relative to this.
    base_dir: Option<PathBuf>,
    /// How to name the manifest in errors (its file name).
    source: Option<String>,
}

async fn deploy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<DeployQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let text = to_bytes(body, MAX_MANIFEST_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            format!("a manifest must be smaller than {MAX_MANIFEST_BYTES} bytes"),
        )
    })?;
    let text = std::str::from_utf8(&text)
        .map_err(|_| ApiError::bad_request("the manifest is not UTF-8 text"))?;
    let base_dir = match q.base_dir {
        Some(d) if d.is_absolute() => d,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "base_dir {} must be an absolute path",
                d.display()
            )))
        }
        None => std::env::current_dir().unwrap_or_default(),
    };
    let source = q.source.unwrap_or_else(|| format!("{name}.toml"));
    let scheduler = state.scheduler.clone();
    let text = text.to_string();
    let info = tokio::task::spawn_blocking(move || {
        let m = virga_spec::Manifest::parse(&text, &source).map_err(DeployError::from)?;
        if m.name != name {
            return Err(ApiError::bad_request(format!(
                "{source}: field `name`: the manifest names {:?} but was deployed as {name:?}",
                m.name
            )));
        }
        Ok(scheduler.deploy(&text, &source, &base_dir)?)
    });
    let info = info.await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            e.to_string(),
        )
    })??;
    Ok((StatusCode::OK, Json(info)).into_response())
}

async fn delete_function(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if state.scheduler.delete(&name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("Function not found: {name}")))
    }
}

async fn list_instances(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = state
        .scheduler
        .instances(&name)
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
    Ok(Json(json!({ "instances": list })))
}

async fn stop_instances(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = state
        .scheduler
        .stop_idle(&name)
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
    Ok(Json(json!({ "stopped": n })))
}

#[derive(Debug, Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn function_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let lines = state
        .scheduler
        .logs(&name, q.lines.unwrap_or(200))
        .ok_or_else(|| ApiError::not_found(format!("Function not found: {name}")))?;
    Ok(Json(json!({ "lines": lines })))
}

#[derive(Debug, Deserialize)]
struct InvocationsQuery {
    function: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_invocations(
    State(state): State<AppState>,
    Query(q): Query<InvocationsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status {s:?} is not one of success, error, throttled, timeout"
            ))
        })?),
    };
    let filter = RecordFilter {
        function: q.function,
        status,
        limit: q.limit,
    };
    let store = state.scheduler.meter().store().clone();
    let records = tokio::task::spawn_blocking(move || store.records(&filter))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            )
        })??;
    Ok(Json(json!({ "invocations": records })))
}

async fn list_dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let events = state.events.clone();
    let dead = tokio::task::spawn_blocking(move || events.dead_letters(&name))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            )
        })??;
    Ok(Json(json!({ "dead_letters": dead })))
}

async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = state.events.redrive(&name).await?;
    Ok(Json(json!({ "redriven": n })))
}

#[derive(Debug, Deserialize)]
struct ListObjectsQuery {
    prefix: Option<String>,
}

async fn list_objects(
    State(state): State<AppState>,
    Path(bucket): Path<String>,
    Query(q): Query<ListObjectsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let objects = state
        .events
        .list_objects(&bucket, q.prefix.as_deref().unwrap_or(""))?;
    Ok(Json(json!({ "objects": objects })))
}

async fn put_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    let body = to_bytes(body, MAX_OBJECT_BYTES)
        .await
        .map_err(|_| too_large(MAX_OBJECT_BYTES, "An object"))?;
    let meta = state.events.put_object(&bucket, &key, body).await?;
    let mut resp = Json(&meta).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        resp.headers_mut().insert("etag", v);
    }
    Ok(resp)
}

async fn get_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (meta, body) = state.events.get_object(&bucket, &key).await?;
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.etag)) {
        h.insert("etag", v);
    }
    Ok(resp)
}

async fn delete_object(
    State(state): State<AppState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.events.delete_object(&bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct PublishQuery {
    subject: Option<String>,
}

async fn publish(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    Query(q): Query<PublishQuery>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = to_bytes(body, MAX_ASYNC_PAYLOAD_BYTES)
        .await
        .map_err(|_| too_large(MAX_ASYNC_PAYLOAD_BYTES, "A message"))?;
    let message = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("a message must be UTF-8 text"))?;
    let (id, subscribers) = state
        .events
        .publish(&topic, &message, q.subject.as_deref())
        .await?;
    Ok(Json(
        json!({ "message_id": id, "subscribers": subscribers }),
    ))
}

async fn send_message(
    State(state): State<AppState>,
    Path(queue): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = to_bytes(body, crate::events::sqs::MAX_MESSAGE_BYTES)
        .await
        .map_err(|_| too_large(crate::events::sqs::MAX_MESSAGE_BYTES, "A message"))?;
    let message = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("a message must be UTF-8 text"))?;
    let id = state.events.send_message(&queue, message).await?;
    Ok(Json(json!({ "message_id": id })))
}

async fn queues(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let events = state.events.clone();
    let functions = tokio::task::spawn_blocking(move || events.async_depths())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                e.to_string(),
            )
        })??;
    Ok(Json(
        json!({ "functions": functions, "queues": state.events.queue_depths() }),
    ))
}

/// A KServe V2 error: `{"error": "..."}`.
#[derive(Debug)]
struct V2Error(StatusCode, String);

impl IntoResponse for V2Error {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn v2_error(status: StatusCode, message: impl Into<String>) -> V2Error {
    V2Error(status, message.into())
}

/// Finds a model function, or answers as V2 does.
fn v2_function(state: &AppState, name: &str) -> Result<crate::scheduler::FunctionInfo, V2Error> {
    match state.scheduler.function(name) {
        Some(f) if f.runtime == "model" => Ok(f),
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
async fn v2_server() -> Json<serde_json::Value> {
    Json(json!({
        "name": "virga",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// A versioned V2 path names the live version: only the running revision
/// of a function serves, so any other version is not found.
fn v2_version(state: &AppState, name: &str, version: &str) -> Result<(), V2Error> {
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

async fn v2_metadata_at(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_metadata(State(state), Path(name)).await
}

async fn v2_ready_at(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_ready(State(state), Path(name)).await
}

async fn v2_infer_at(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    body: Body,
) -> Result<Response, V2Error> {
    v2_version(&state, &name, &version)?;
    v2_infer(State(state), Path(name), body).await
}

/// Invokes a model function with a JSON event; a function error becomes a V2 error.
async fn v2_call(
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
                InvokeError::Throttled { .. } | InvokeError::NoMemory { .. } => {
                    StatusCode::TOO_MANY_REQUESTS
                }
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
fn v2_output(model: &serde_json::Value) -> (&'static str, serde_json::Value) {
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

async fn v2_metadata(
    State(state): State<AppState>,
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

async fn v2_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, V2Error> {
    v2_function(&state, &name)?;
    Ok(Json(json!({ "name": name, "ready": true })).into_response())
}

/// Rows from a V2 input tensor: `shape` [N, F] (or [F] for one row) with
/// `data` flat (row-major) or nested.
fn v2_rows(input: &serde_json::Value) -> Result<Vec<Vec<f64>>, String> {
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

async fn v2_infer(
    State(state): State<AppState>,
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
fn v2_strings<'a>(
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
fn v2_response(
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
async fn v2_infer_texts(
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
async fn v2_infer_images(
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

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "ready": true }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Gauges are read off the platform at scrape time.
    for f in state.scheduler.functions() {
        let mut by_state = [("starting", 0usize), ("idle", 0), ("busy", 0)];
        for i in state.scheduler.instances(&f.name).unwrap_or_default() {
            if let Some(n) = by_state.iter_mut().find(|(s, _)| *s == i.state) {
                n.1 += 1;
            }
        }
        for (s, n) in by_state {
            metrics::gauge!("virga_instances", "function" => f.name.clone(), "state" => s)
                .set(n as f64);
        }
        metrics::gauge!("virga_waiting_requests", "function" => f.name.clone())
            .set(f.queued as f64);
    }
    let events = state.events.clone();
    if let Ok(Ok(depths)) = tokio::task::spawn_blocking(move || events.async_depths()).await {
        for d in depths {
            for (s, n) in [
                ("ready", d.ready),
                ("in_flight", d.in_flight),
                ("delayed", d.delayed),
            ] {
                metrics::gauge!("virga_async_events", "function" => d.function.clone(), "state" => s)
                    .set(n as f64);
            }
            metrics::gauge!("virga_async_oldest_age_seconds", "function" => d.function.clone())
                .set(d.oldest_age_ms.unwrap_or(0) as f64 / 1e3);
            metrics::gauge!("virga_dead_letters", "function" => d.function)
                .set(d.dead_letters as f64);
        }
    }
    for q in state.events.queue_depths() {
        for (s, n) in [("ready", q.ready), ("in_flight", q.in_flight)] {
            metrics::gauge!("virga_queue_messages", "queue" => q.queue.clone(), "state" => s)
                .set(n as f64);
        }
        metrics::gauge!("virga_queue_oldest_age_seconds", "queue" => q.queue)
            .set(q.oldest_age_ms.unwrap_or(0) as f64 / 1e3);
    }
    match crate::meter::prometheus() {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceException",
            "metrics are not available in this process",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_tensors_become_rows() {
        let rows =
            v2_rows(&json!({"shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]})).unwrap();
        assert_eq!(rows, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let rows = v2_rows(&json!({"shape": [2, 2], "data": [[1, 2], [3, 4]]})).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            v2_rows(&json!({"shape": [3], "data": [1, 2, 3]}))
                .unwrap()
                .len(),
            1
        );
        assert!(v2_rows(&json!({"shape": [2, 2], "data": [1, 2, 3]}))
            .unwrap_err()
            .contains("needs 4"));
        assert!(v2_rows(&json!({"shape": [2, 2], "data": ["a", 2, 3, 4]})).is_err());
        assert!(v2_rows(&json!({"data": [1]})).is_err());
    }

    #[test]
    fn function_names_accept_arns_and_qualifiers() {
        assert_eq!(function_name("echo"), "echo");
        assert_eq!(function_name("echo:$LATEST"), "echo");
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:000000000000:function:echo"),
            "echo"
        );
        assert_eq!(function_name("000000000000:function:echo:1"), "echo");
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt;

    fn app() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Store::open(dir.path()).unwrap());
        let scheduler = Scheduler::new(
            crate::scheduler::SchedulerConfig {
                search_path: vec![],
                builtin: None,
                host_cores: 1,
                cgroups: None,
                max_memory_mb: u64::MAX,
            },
            crate::meter::Meter::new(store),
        );
        let events = crate::events::Events::start(dir.path(), scheduler.clone()).unwrap();
        (dir, router(AppState { scheduler, events }))
    }

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn unknown_functions_and_routes_get_lambda_errors() {
        let (_d, app) = app();
        let (status, headers, body) = call(
            &app,
            Request::post("/2015-03-31/functions/ghost/invocations")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
        assert_eq!(body["Type"], "User");
        assert!(body["message"].as_str().unwrap().contains("ghost"));

        let (status, headers, _) =
            call(&app, Request::get("/nowhere").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(headers["x-amzn-errortype"], "UnknownOperationException");
    }

    #[tokio::test]
    async fn deploy_refuses_a_name_mismatch_and_relative_base_dirs() {
        let (_d, app) = app();
        let manifest = "name = \"a\"\ncommand = [\"/bin/sh\"]\n";
        let (status, _, body) = call(
            &app,
            Request::put("/v1/functions/b?base_dir=/tmp")
                .body(Body::from(manifest))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("deployed as \"b\""),
            "{body}"
        );
        let (status, _, _) = call(
            &app,
            Request::put("/v1/functions/a?base_dir=rel")
                .body(Body::from(manifest))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, body) = call(
            &app,
            Request::put("/v1/functions/a?base_dir=/tmp")
                .body(Body::from(manifest))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], "1");
        let (status, _, body) = call(
            &app,
            Request::get("/2015-03-31/functions/a")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["Configuration"]["MemorySize"], 128);
    }

    #[tokio::test]
    async fn the_builtin_runtime_is_refused_where_the_platform_has_none() {
        let (_d, app) = app();
        // Not even a `virga-worker` on PATH stands in for it.
        let manifest = "name = \"w\"\ncommand = [\"virga-worker\"]\n";
        let (status, _, body) = call(
            &app,
            Request::put("/v1/functions/w?base_dir=/tmp")
                .body(Body::from(manifest))
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("without virga's built-in runtime"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn bad_query_values_are_explained() {
        let (_d, app) = app();
        let (status, _, body) = call(
            &app,
            Request::get("/v1/invocations?status=meh")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"].as_str().unwrap().contains("success, error"),
            "{body}"
        );
        let (status, _, body) = call(
            &app,
            Request::get("/v2/health/live").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["live"], true);
    }
}
