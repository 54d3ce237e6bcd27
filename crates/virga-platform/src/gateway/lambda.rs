//! The AWS Lambda Invoke API and the function reads the AWS CLI and SDKs use.

use super::*;

use axum::http::header::{HeaderName, CONTENT_TYPE};

// Parsed once: a `&'static str` name is parsed, and a custom one copied,
// on every insert.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-amzn-requestid");
static EXECUTED_VERSION: HeaderName = HeaderName::from_static("x-amz-executed-version");
static FUNCTION_ERROR: HeaderName = HeaderName::from_static("x-amz-function-error");
static LOG_RESULT: HeaderName = HeaderName::from_static("x-amz-log-result");
static NODE: HeaderName = HeaderName::from_static("x-virga-node");

pub(super) async fn invoke(
    State(state): State<Arc<AppState>>,
    Path(raw_name): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    // The request's own headers, not a `HeaderMap` extractor's copy.
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let name = function_name(&raw_name).to_string();
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    match invocation_type {
        "RequestResponse" => {}
        "DryRun" => {
            return if state.scheduler.exists(&name) {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Err(ApiError::function_not_found(&name))
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
                resp.headers_mut().insert(&REQUEST_ID, v);
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
    let (outcome, node) = run_sync(&state, name, payload, want_tail).await?;
    let mut resp = (StatusCode::OK, outcome.body).into_response();
    let h = resp.headers_mut();
    if let Some(v) = node.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert(&NODE, v);
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(&EXECUTED_VERSION, HeaderValue::from_static("$LATEST"));
    if let Ok(v) = HeaderValue::from_str(&outcome.request_id) {
        h.insert(&REQUEST_ID, v);
    }
    if outcome.function_error.is_some() {
        h.insert(&FUNCTION_ERROR, HeaderValue::from_static("Unhandled"));
    }
    if want_tail {
        let tail = base64::engine::general_purpose::STANDARD.encode(tail_4kb(&outcome.log));
        if let Ok(v) = HeaderValue::from_str(&tail) {
            h.insert(&LOG_RESULT, v);
        }
    }
    Ok(resp)
}

/// Runs a synchronous call here or, in a cluster, on the node it had
/// better run on (`cluster::route`): one with an idle instance when this
/// one has none, another when this node's share of `max_concurrency` is in
/// use. Returns which other node ran it, if one did.
async fn run_sync(
    state: &AppState,
    name: String,
    payload: bytes::Bytes,
    tail: bool,
) -> Result<(crate::scheduler::Invocation, Option<String>), ApiError> {
    if let Some(c) = &state.cluster {
        if let Some((m, _)) = state.scheduler.manifest(&name) {
            let target = if state.scheduler.share_has_room(&name) {
                c.route(&state.scheduler, &name, &payload)
            } else {
                c.other_node(&payload)
            };
            if let Some(node) = target {
                let timeout = std::time::Duration::from_millis(m.timeout_ms);
                if let Some(r) = c
                    .forward(&node, &name, payload.clone(), tail, timeout)
                    .await
                {
                    return Ok((r.answer?, Some(r.node)));
                }
            }
        }
    }
    let outcome = state
        .scheduler
        .invoke(InvokeRequest::new(name, payload, Trigger::Http).with_tail(tail))
        .await?;
    Ok((outcome, None))
}

/// Lambda refuses payloads that are not JSON (an empty one is allowed).
pub(super) fn check_json(payload: &[u8]) -> Result<(), ApiError> {
    if payload.is_empty() {
        return Ok(());
    }
    // `from_slice` skips over string contents it ignores without checking
    // their UTF-8, and runtimes crash on such bytes: check the whole body.
    let text = std::str::from_utf8(payload).map_err(|e| {
        ApiError::bad_request(format!(
            "Could not parse request body into json: the body is not valid UTF-8 ({e})"
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("Could not parse request body into json: {e}")))
}

/// Lambda's `FunctionConfiguration`, enough for SDKs and the AWS CLI.
pub(super) fn aws_configuration(f: &crate::scheduler::FunctionInfo) -> serde_json::Value {
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

pub(super) async fn aws_get_function(
    State(state): State<Arc<AppState>>,
    Path(raw_name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = function_name(&raw_name);
    let f = state
        .scheduler
        .function(name)
        .ok_or_else(|| ApiError::function_not_found(name))?;
    Ok(Json(json!({ "Configuration": aws_configuration(&f) })))
}

pub(super) async fn aws_list_functions(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    let fs: Vec<_> = state
        .scheduler
        .functions()
        .iter()
        .filter(|f| caller.sees(&f.name))
        .map(aws_configuration)
        .collect();
    Json(json!({ "Functions": fs }))
}

/// Lambda's limit on a zip archive uploaded directly (not through S3).
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;

/// `UpdateFunctionCode` (what `aws lambda update-function-code --zip-file`
/// sends): the function's code becomes the archive's, as a new version
/// with the same manifest.
pub(super) async fn aws_update_code(
    State(state): State<Arc<AppState>>,
    Path(raw_name): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct UpdateCode {
        zip_file: Option<String>,
    }
    let name = function_name(&raw_name).to_string();
    // Base64 makes the archive a third larger.
    let limit = MAX_ZIP_BYTES / 3 * 4 + 4096;
    let bytes = to_bytes(body, limit)
        .await
        .map_err(|_| too_large(MAX_ZIP_BYTES, "A zip archive"))?;
    let req: UpdateCode = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("Could not parse request body into json: {e}"))
    })?;
    let encoded = req.zip_file.ok_or_else(|| {
        ApiError::bad_request("give the code as ZipFile (base64 of a zip archive); S3 locations and images are not supported")
    })?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| ApiError::bad_request(format!("ZipFile is not base64: {e}")))?;
    if let Some(c) = state.cluster.as_ref().filter(|c| !c.reachable()) {
        return Err(c.unreachable().into());
    }
    let scheduler = state.scheduler.clone();
    let info = tokio::task::spawn_blocking(move || scheduler.update_code(&name, &zip)).await??;
    if let Some(c) = &state.cluster {
        c.publish_deploy(&state.scheduler, &info.name).await?;
    }
    Ok(Json(aws_configuration(&info)))
}
