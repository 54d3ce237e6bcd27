//! `/v1` management: deploy, delete, list functions, instances, logs,
//! records and dead letters.

use super::*;
use crate::scheduler::FunctionInfo;

/// What a hidden `env` value reads as.
pub(super) const REDACTED: &str = "***";

/// A function as its caller may see it: `env` values (secrets, often)
/// only for callers with every right.
#[derive(Debug, serde::Serialize)]
pub(super) struct Shown {
    #[serde(flatten)]
    info: FunctionInfo,
    /// Set when `env` values were replaced by `***`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    env_redacted: bool,
}

pub(super) fn shown(caller: &Caller, mut info: FunctionInfo) -> Shown {
    let redact = !caller.sees_env() && !info.manifest.env.is_empty();
    if redact {
        for v in info.manifest.env.values_mut() {
            *v = REDACTED.to_string();
        }
    }
    Shown {
        info,
        env_redacted: redact,
    }
}

pub(super) async fn list_functions(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
) -> Json<serde_json::Value> {
    let shown: Vec<Shown> = state
        .scheduler
        .functions()
        .into_iter()
        .filter(|f| caller.sees(&f.name))
        .map(|f| shown(&caller, f))
        .collect();
    Json(json!({ "functions": shown }))
}

pub(super) async fn get_function(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Json<Shown>, ApiError> {
    state
        .scheduler
        .function(&name)
        .map(|f| Json(shown(&caller, f)))
        .ok_or_else(|| ApiError::function_not_found(&name))
}

#[derive(Debug, Deserialize)]
pub(super) struct DeployQuery {
    /// The manifest's directory: relative paths in it are relative to this.
    base_dir: Option<PathBuf>,
    /// How to name the manifest in errors (its file name).
    source: Option<String>,
}

pub(super) async fn deploy(
    State(state): State<Arc<AppState>>,
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
    // Without a directory on this host the function brings no code of its
    // own (an absolute `command`, the built-in runtime, or code uploaded
    // later with UpdateFunctionCode); its relative paths are the server's.
    let (base_dir, code) = match q.base_dir {
        Some(d) if d.is_absolute() => {
            let d = state
                .access
                .code_dir(&d)
                .map_err(|m| ApiError::new(StatusCode::FORBIDDEN, "AccessDeniedException", m))?;
            (d, CodeSource::Dir)
        }
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "base_dir {} must be an absolute path",
                d.display()
            )))
        }
        None => (
            std::env::current_dir().unwrap_or_default(),
            CodeSource::Empty,
        ),
    };
    let source = q.source.unwrap_or_else(|| format!("{name}.toml"));
    // A deploy the other nodes would not see is refused up front.
    if let Some(c) = state.cluster.as_ref().filter(|c| !c.reachable()) {
        return Err(c.unreachable().into());
    }
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
        Ok(scheduler.deploy_with(&text, &source, &base_dir, code)?)
    });
    let info = info.await??;
    if let Some(c) = &state.cluster {
        c.publish_deploy(&state.scheduler, &info.name).await?;
    }
    Ok((StatusCode::OK, Json(info)).into_response())
}

pub(super) async fn delete_function(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if let Some(c) = state.cluster.as_ref().filter(|c| !c.reachable()) {
        return Err(c.unreachable().into());
    }
    if state.scheduler.delete(&name)? {
        if let Some(c) = &state.cluster {
            c.publish_delete(&name).await?;
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::function_not_found(&name))
    }
}

pub(super) async fn list_instances(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = state
        .scheduler
        .instances(&name)
        .ok_or_else(|| ApiError::function_not_found(&name))?;
    Ok(Json(json!({ "instances": list })))
}

pub(super) async fn stop_instances(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = state
        .scheduler
        .stop_idle(&name)
        .ok_or_else(|| ApiError::function_not_found(&name))?;
    Ok(Json(json!({ "stopped": n })))
}

#[derive(Debug, Deserialize)]
pub(super) struct LogsQuery {
    lines: Option<usize>,
}

pub(super) async fn function_logs(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let lines = state
        .scheduler
        .logs(&name, q.lines.unwrap_or(200))
        .ok_or_else(|| ApiError::function_not_found(&name))?;
    Ok(Json(json!({ "lines": lines })))
}

#[derive(Debug, Deserialize)]
pub(super) struct InvocationsQuery {
    function: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list_invocations(
    State(state): State<Arc<AppState>>,
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
    let records = tokio::task::spawn_blocking(move || store.records(&filter)).await??;
    Ok(Json(json!({ "invocations": records })))
}

pub(super) async fn list_dead_letters(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let dead = state.events.dead_letters(&name).await?;
    Ok(Json(json!({ "dead_letters": dead })))
}

pub(super) async fn redrive(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = state.events.redrive(&name).await?;
    Ok(Json(json!({ "redriven": n })))
}

/// This node's name and the live nodes it sees (empty outside a cluster).
pub(super) async fn cluster_members(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(match &state.cluster {
        Some(c) => json!({
            "node": c.node(),
            "nodes": c.members(),
            "broker_connected": c.reachable(),
            "warm": c.warm(),
        }),
        None => json!({ "node": null, "nodes": [], "broker_connected": false }),
    })
}
