//! The gateway: every HTTP route users call, and the one place where errors
//! become HTTP responses (Lambda's error names and JSON shape).
//!
//! - AWS Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations`,
//!   plus `GetFunction` and `ListFunctions` for SDKs and the AWS CLI;
//! - management under `/v1/`: functions, instances, invocations, logs;
//! - KServe V2 / Open Inference Protocol for model functions: health,
//!   model metadata and readiness, `infer` (tensors <-> `{"instances"}`);
//! - Prometheus metrics: `/metrics`.
//!
//! One module per door: `lambda`, `manage`, `storage`, `v2`; `errors` maps
//! every error to its API's shape.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use virga_spec::{Status, Trigger};

use crate::access::{Access, Caller};
use crate::events::{Events, EventsError};
use crate::logs::tail_4kb;
use crate::scheduler::{CodeSource, DeployError, InvokeError, InvokeRequest, Scheduler};
use crate::store::{RecordFilter, StoreError};

mod auth;
mod errors;
mod lambda;
mod manage;
mod serve;
mod storage;
mod v2;

pub(crate) use serve::accept;
pub use serve::{serve, HEADER_READ_TIMEOUT};

pub(crate) use errors::describe_invoke_error;
use errors::too_large;
pub use errors::ApiError;
use lambda::*;
use manage::*;
use storage::*;
use v2::*;

/// Lambda's synchronous request payload limit (6 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// Largest manifest accepted by the deploy endpoint.
const MAX_MANIFEST_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub scheduler: Arc<Scheduler>,
    pub events: Arc<Events>,
    /// Who may call, and the audit log.
    pub access: Arc<Access>,
    /// This node's cluster, with `--cluster`.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Lambda's asynchronous payload limit (1 MB).
pub const MAX_ASYNC_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Largest object accepted by `PUT /v1/buckets/...`.
pub const MAX_OBJECT_BYTES: usize = 64 * 1024 * 1024;

/// The whole HTTP surface, without a socket (tests drive it directly):
/// every route behind `auth::authorize`, everything behind the Host check.
pub fn router(state: AppState) -> Router {
    // One reference count per request's clones of the state, not four.
    let state = Arc::new(state);
    Router::new()
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route("/2015-03-31/functions/{name}", get(aws_get_function))
        .route(
            "/2015-03-31/functions/{name}/code",
            axum::routing::put(aws_update_code),
        )
        .route("/2015-03-31/functions", get(aws_list_functions))
        .route("/2015-03-31/functions/", get(aws_list_functions))
        .route("/v1/functions", get(list_functions))
        .route("/v1/cluster", get(cluster_members))
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
        .route_layer(auth::GuardLayer {
            state: state.clone(),
            check: auth::Check::Access,
        })
        .fallback(not_found_route)
        .layer(auth::GuardLayer {
            state: state.clone(),
            check: auth::Check::Host,
        })
        .with_state(state)
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

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

async fn ready() -> Json<serde_json::Value> {
    Json(json!({ "ready": true }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Gauges are read off the platform at scrape time.
    for f in state.scheduler.functions() {
        let mut by_state = [("starting", 0usize), ("idle", 0), ("busy", 0)];
        for i in state.scheduler.instances(&f.name).unwrap_or_default() {
            if let Some(n) = by_state.iter_mut().find(|(s, _)| *s == i.state.as_str()) {
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
    metrics::gauge!("virga_function_revisions").set(state.scheduler.revisions() as f64);
    if let Some(bytes) = crate::heap::live_bytes() {
        metrics::gauge!("virga_heap_live_bytes").set(bytes as f64);
    }
    if let Ok(depths) = state.events.async_depths().await {
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
    for q in state.events.queue_depths().await.unwrap_or_default() {
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
        app_with(crate::access::AuthMode::None)
    }

    fn app_with(mode: crate::access::AuthMode) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::store::Store::open(dir.path()).unwrap());
        let scheduler = Scheduler::new(
            crate::scheduler::SchedulerConfig {
                search_path: vec![],
                builtin: None,
                log_files: None,
                host_cores: 1,
                cgroups: None,
                isolation: None,
                code: crate::code::CodeStore::new(dir.path()),
                max_memory_mb: u64::MAX,
            },
            crate::meter::Meter::new(store),
        );
        let events = crate::events::Events::start(dir.path(), scheduler.clone()).unwrap();
        let access = Access::new(dir.path(), mode, "127.0.0.1:9000".parse().unwrap(), &[]).unwrap();
        let access = Arc::new(access);
        (
            dir,
            router(AppState {
                scheduler,
                events,
                access,
                cluster: None,
            }),
        )
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
            Request::put("/v1/functions/b")
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
            Request::put("/v1/functions/a")
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
            Request::put("/v1/functions/w")
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

    /// A request to the app, signed by `signer` when given.
    fn signed(
        method: &str,
        path: &str,
        body: &str,
        signer: Option<&virga_sigv4::Signer>,
    ) -> Request<Body> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1:9000")
            .body(Body::from(body.to_string()))
            .unwrap();
        if let Some(s) = signer {
            let (p, q) = path
                .split_once('?')
                .map_or((path, None), |(p, q)| (p, Some(q)));
            s.sign(
                method,
                "127.0.0.1:9000",
                p,
                q,
                req.headers_mut(),
                Some(body.as_bytes()),
            )
            .unwrap();
        }
        req
    }

    fn key(
        dir: &std::path::Path,
        name: &str,
        role: crate::access::Role,
        functions: &[&str],
    ) -> virga_sigv4::Signer {
        let functions: Vec<String> = functions.iter().map(|s| s.to_string()).collect();
        let crate::access::NewKey::Sigv4 {
            access_key_id,
            secret_access_key,
            ..
        } = crate::access::KeyStore::new(dir)
            .create(name, role, &functions, crate::access::KeyKind::Sigv4)
            .unwrap()
        else {
            unreachable!()
        };
        virga_sigv4::Signer::new(
            virga_sigv4::Credentials::new(&access_key_id, &secret_access_key, None),
            "eu-west-1",
            "lambda",
        )
    }

    /// Deploys function `a` (with a secret in its `env`).
    fn deploy_a(signer: Option<&virga_sigv4::Signer>) -> Request<Body> {
        signed("PUT", "/v1/functions/a", MANIFEST, signer)
    }

    const MANIFEST: &str = "name = \"a\"\ncommand = [\"/bin/sh\"]\nenv = { TOKEN = \"hunter2\" }\n";

    #[tokio::test]
    async fn sigv4_mode_wants_a_live_key_with_the_right() {
        use crate::access::{AuditEntry, Role};
        let (d, app) = app_with(crate::access::AuthMode::Sigv4);
        let admin = key(d.path(), "admin", Role::Admin, &[]);
        let invoker = key(d.path(), "ci", Role::Invoke, &["b*"]);

        // No credentials; then a key the server does not know.
        let (status, headers, body) = call(&app, signed("GET", "/v1/functions", "", None)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "UnrecognizedClientException");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .contains("virga keys create"));
        let stranger = virga_sigv4::Signer::new(
            virga_sigv4::Credentials::new("VIRGANOBODY", "secret", None),
            "us-east-1",
            "lambda",
        );
        let (status, headers, _) =
            call(&app, signed("GET", "/v1/functions", "", Some(&stranger))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "UnrecognizedClientException");
        // A known key with the wrong secret.
        let mut forged = admin.clone();
        forged.credentials.secret_access_key = "not-the-secret".into();
        let (status, headers, body) =
            call(&app, signed("GET", "/v1/functions", "", Some(&forged))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");
        assert!(body["message"].as_str().unwrap().contains("does not match"));
        // The body is signed too.
        let mut req = deploy_a(Some(&admin));
        *req.body_mut() = Body::from(MANIFEST.replace("hunter2", "other"));
        let (status, headers, _) = call(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");

        // The admin deploys; the invoke key may not.
        let (status, _, body) = call(&app, deploy_a(Some(&admin))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, headers, body) = call(
            &app,
            signed("PUT", "/v1/functions/b", MANIFEST, Some(&invoker)),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "AccessDeniedException");
        assert!(
            body["message"].as_str().unwrap().contains("deploy"),
            "{body}"
        );
        // Nor invoke, describe or list a function its patterns miss.
        let (status, headers, _) = call(
            &app,
            signed(
                "POST",
                "/2015-03-31/functions/a/invocations",
                "{}",
                Some(&invoker),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "AccessDeniedException");
        let (status, _, body) =
            call(&app, signed("GET", "/v1/functions", "", Some(&invoker))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["functions"], json!([]));

        // env values reach the admin only.
        let (_, _, body) = call(&app, signed("GET", "/v1/functions/a", "", Some(&admin))).await;
        assert_eq!(body["manifest"]["env"]["TOKEN"], "hunter2");
        assert!(body.get("env_redacted").is_none());
        let reader = key(d.path(), "reader", Role::Invoke, &["a"]);
        let (status, _, body) =
            call(&app, signed("GET", "/v1/functions/a", "", Some(&reader))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["manifest"]["env"]["TOKEN"], "***");
        assert_eq!(body["env_redacted"], true);
        let (_, _, body) = call(&app, signed("GET", "/v1/functions", "", Some(&reader))).await;
        assert_eq!(body["functions"][0]["manifest"]["env"]["TOKEN"], "***");

        // Health needs nobody; a bearer token works where a signature would.
        let (status, _, _) = call(&app, signed("GET", "/v2/health/ready", "", None)).await;
        assert_eq!(status, StatusCode::OK);
        let crate::access::NewKey::Token { token, .. } = crate::access::KeyStore::new(d.path())
            .create(
                "probe",
                Role::Invoke,
                &["a".to_string()],
                crate::access::KeyKind::Token,
            )
            .unwrap()
        else {
            unreachable!()
        };
        let mut req = signed("GET", "/v2/models/a/ready", "", None);
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (status, _, body) = call(&app, req).await;
        // Known to the token, but not a model function: V2's own answer.
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let mut req = signed("GET", "/v2/models/a/ready", "", None);
        req.headers_mut()
            .insert("authorization", "Bearer virga_guess".parse().unwrap());
        let (status, headers, body) = call(&app, req).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-amzn-errortype"], "UnrecognizedClientException");
        assert!(body["error"].as_str().is_some(), "V2 errors on /v2: {body}");

        // Deploys and denials are audited with their key.
        let log = crate::access::audit::read(d.path(), None).unwrap();
        let deploy: Vec<&AuditEntry> = log.iter().filter(|e| e.event == "deploy").collect();
        assert_eq!(deploy.len(), 1);
        assert_eq!(deploy[0].key, admin.credentials.access_key_id);
        assert_eq!(deploy[0].function.as_deref(), Some("a"));
        assert!(log
            .iter()
            .any(|e| e.event == "denied" && e.key == invoker.credentials.access_key_id));
        assert!(log
            .iter()
            .any(|e| e.event == "denied" && e.key == "VIRGANOBODY"));
    }

    #[tokio::test]
    async fn auth_none_serves_everyone_but_foreign_hosts() {
        let (d, app) = app();
        // Any signature passes: it is not checked.
        let stranger = virga_sigv4::Signer::new(
            virga_sigv4::Credentials::new("virga", "virga", None),
            "us-east-1",
            "lambda",
        );
        let (status, _, body) = call(&app, deploy_a(Some(&stranger))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, _, body) = call(&app, signed("GET", "/v1/functions/a", "", None)).await;
        assert_eq!(body["manifest"]["env"]["TOKEN"], "hunter2");
        for (host, ok) in [
            ("evil.example", false),
            ("evil.example:9000", false),
            ("localhost", true),
            ("127.0.0.1:9000", true),
            ("[::1]", true),
        ] {
            let req = Request::get("/v1/functions")
                .header("host", host)
                .body(Body::empty())
                .unwrap();
            let (status, headers, body) = call(&app, req).await;
            if ok {
                assert_eq!(status, StatusCode::OK, "{host}");
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{host}");
                assert_eq!(headers["x-amzn-errortype"], "AccessDeniedException");
                assert!(body["message"].as_str().unwrap().contains("--allow-host"));
            }
        }
        // Unknown routes are checked too.
        let req = Request::get("/nowhere")
            .header("host", "evil.example")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&app, req).await.0, StatusCode::FORBIDDEN);
        let log = crate::access::audit::read(d.path(), None).unwrap();
        assert!(log.iter().any(|e| e.event == "deploy" && e.key == "-"));
        assert_eq!(log.iter().filter(|e| e.event == "denied").count(), 3);
    }
}
