//! The AWS Lambda Runtime API, served to one instance on its own 127.0.0.1:0
//! listener (`AWS_LAMBDA_RUNTIME_API`), so unmodified runtime clients work.
//!
//! Routes (`/2018-06-01/runtime/...`): `invocation/next` (long poll),
//! `invocation/{id}/response`, `invocation/{id}/error`, `init/error`.
//! Anything malformed gets a 4xx and never reaches the scheduler.
//!
//! Several `invocation/next` polls may be outstanding at once (a service
//! instance told `AWS_LAMBDA_MAX_CONCURRENCY=n` polls from n threads): each
//! takes the next job in turn, and replies are matched by request id. A
//! batch carries `Virga-Batch-Size: n` beside the Lambda headers.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use virga_spec::contract::TemplateOrder;

use crate::instance::{Death, Reply, Shared};

/// Largest synchronous response Lambda returns (6 MB).
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Largest error or init-error document accepted from a runtime.
const MAX_ERROR_BYTES: usize = 1024 * 1024;

/// How long the answer to a runtime's reply waits for the instance's next
/// job (`Shared::settled`): every path that takes a reply settles the
/// instance within microseconds (its lease gives it back, even when
/// dropped), so this only bounds a wait a bug would leave unended. A
/// second, not less: a timer no earlier than the scheduler's pacemaker's
/// (`scheduler::timers::Pacemaker`, at most a second ahead) does not make
/// tokio wake its timer driver, which a 2 ms one did on every reply.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves the Runtime API on `listener` until this future is dropped
/// (the instance's end), its connections with it. HTTP/1.1 with pipelined
/// answers flushed together: a runtime that sends its reply and its next
/// poll in one write (`virga_worker`'s does) gets the 202 and its next
/// event in one.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            conn = crate::gateway::accept(&listener) => conn,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, std::convert::Infallible>(dispatch(shared, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .pipeline_flush(true)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::trace!(error = %e, "Runtime API connection ended with an error");
            }
        });
    }
}

/// Routes one request. Six routes, matched by hand: a router's per-request
/// work (boxed services, path parameters and matched-path extensions)
/// cost more than the rest of an answer to `next`, twice per invocation.
/// Unknown paths get 404, a known path with the wrong method 405, an id
/// that does not decode 400, each as Lambda's error JSON.
async fn dispatch(shared: Arc<Shared>, req: hyper::Request<hyper::body::Incoming>) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(body);
    let path = parts.uri.path();
    let Some(route) = Route::of(path) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "UnknownOperation",
            &format!("no Runtime API route {path}"),
        );
    };
    let method = route.method();
    if parts.method.as_str() != method {
        let mut r = api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{path} takes {method}"),
        );
        r.headers_mut()
            .insert(axum::http::header::ALLOW, HeaderValue::from_static(method));
        return r;
    }
    match route {
        Route::Next => next(shared).await,
        Route::Response(id) => match decode_id(id) {
            Some(id) => response(shared, id, body).await,
            None => undecodable_id(),
        },
        Route::Error(id) => match decode_id(id) {
            Some(id) => error(shared, id, &parts.headers, body).await,
            None => undecodable_id(),
        },
        Route::InitError => init_error(shared, &parts.headers, body).await,
        Route::TemplateNext => template_next(shared).await,
        Route::TemplateForked => template_forked(shared, body).await,
    }
}

enum Route<'a> {
    Next,
    Response(&'a str),
    Error(&'a str),
    InitError,
    TemplateNext,
    TemplateForked,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Option<Route<'a>> {
        if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
            return match rest.split_once('/') {
                None if rest == "next" => Some(Route::Next),
                Some((id, "response")) if !id.is_empty() => Some(Route::Response(id)),
                Some((id, "error")) if !id.is_empty() => Some(Route::Error(id)),
                _ => None,
            };
        }
        match path {
            "/2018-06-01/runtime/init/error" => Some(Route::InitError),
            p if p == virga_spec::contract::TEMPLATE_NEXT_PATH => Some(Route::TemplateNext),
            p if p == virga_spec::contract::TEMPLATE_FORKED_PATH => Some(Route::TemplateForked),
            _ => None,
        }
    }

    fn method(&self) -> &'static str {
        match self {
            Route::Next | Route::TemplateNext => "GET",
            _ => "POST",
        }
    }
}

/// A request id from its path segment, percent-decoded as a path
/// parameter is; `None` when that is not UTF-8.
fn decode_id(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

fn undecodable_id() -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        "the request id is not UTF-8 once decoded",
    )
}

/// Hands `reply` to the invocation waiting for it, then waits (at most
/// `SETTLE_WAIT`) until the instance has its next job or is back in its
/// pool, so the answer to this post and to the runtime's pipelined next
/// poll leave together.
async fn deliver(shared: &Shared, to: tokio::sync::oneshot::Sender<Reply>, reply: Reply) {
    // Registered before the send: the invocation may settle at once.
    let settled = shared.settled.notified();
    let mut settled = std::pin::pin!(settled);
    settled.as_mut().enable();
    if to.send(reply).is_ok() {
        let _ = tokio::time::timeout(SETTLE_WAIT, settled).await;
    }
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errorType": error_type, "errorMessage": message })),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

async fn next(shared: Arc<Shared>) -> Response {
    shared.mark_ready();
    // Cancel-safe: if the runtime hangs up while waiting, no job is taken.
    let job = {
        let mut rx = shared.jobs_rx.lock().await;
        match rx.recv().await {
            Some(job) => job,
            None => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "instance is shutting down",
                )
            }
        }
    };
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.request_id.clone(), job.reply);
    // Straight into the answer's own map (a map of our own would be
    // merged into it name by name).
    let mut answer = (StatusCode::OK, job.payload).into_response();
    let headers = answer.headers_mut();
    let mut put = |name: &HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put(&REQUEST_ID, &job.request_id);
    put(&INVOKED_FUNCTION_ARN, &job.function_arn);
    put(&TRACE_ID, &job.trace_id);
    headers.insert(&DEADLINE_MS, HeaderValue::from(job.deadline_ms));
    if let Some(n) = job.batch_size {
        headers.insert(&*BATCH_SIZE, HeaderValue::from(n));
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

// The event's headers, parsed once: a `&'static str` name is parsed, and a
// custom one copied, on every insert.
static REQUEST_ID: HeaderName = HeaderName::from_static("lambda-runtime-aws-request-id");
static DEADLINE_MS: HeaderName = HeaderName::from_static("lambda-runtime-deadline-ms");
static INVOKED_FUNCTION_ARN: HeaderName =
    HeaderName::from_static("lambda-runtime-invoked-function-arn");
static TRACE_ID: HeaderName = HeaderName::from_static("lambda-runtime-trace-id");
static BATCH_SIZE: std::sync::LazyLock<HeaderName> = std::sync::LazyLock::new(|| {
    HeaderName::from_bytes(virga_spec::contract::BATCH_SIZE_HEADER.as_bytes())
        .expect("the contract's header name is valid")
});

/// What any other instance's listener answers on the template routes.
fn not_a_template() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "NotATemplate",
        "this instance is not a snap-start template",
    )
}

/// A snap-start template's long poll for its next fork order; its first
/// poll ends its initialisation. Only a template's listener answers it.
async fn template_next(shared: Arc<Shared>) -> Response {
    let Some(desk) = &shared.desk else {
        return not_a_template();
    };
    shared.mark_ready();
    // Cancel-safe as `next`: an order is taken only once it is answered.
    let order = {
        let mut rx = desk.orders_rx.lock().await;
        match rx.recv().await {
            Some(o) => o,
            None => {
                return api_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ServiceException",
                    "template is shutting down",
                )
            }
        }
    };
    let order = match order {
        crate::instance::Order::Fork { order, placed } => {
            desk.placing
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(order.id.clone(), placed);
            TemplateOrder::Fork(order)
        }
        crate::instance::Order::Release { id } => TemplateOrder::Release { id },
    };
    (StatusCode::OK, axum::Json(order)).into_response()
}

/// A template reports a fork; answered once the platform has placed the
/// child (204: release it) or refused it (4xx/5xx: kill it).
async fn template_forked(shared: Arc<Shared>, body: Body) -> Response {
    let Some(desk) = &shared.desk else {
        return not_a_template();
    };
    let forked: virga_spec::contract::Forked = match to_bytes(body, MAX_ERROR_BYTES)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(f) => f,
        None => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                "send {\"id\": \"...\", \"pid\": n}",
            )
        }
    };
    let Some(placed) = desk
        .placing
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&forked.id)
    else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "no fork order has this id",
        );
    };
    let (done, result) = tokio::sync::oneshot::channel();
    if placed
        .send(crate::instance::Placement {
            pid: forked.pid,
            done,
        })
        .is_err()
    {
        return api_error(
            StatusCode::GONE,
            "OrderCancelled",
            "the fork is no longer wanted",
        );
    }
    match result.await {
        Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
        Ok(Err(why)) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "ForkRefused", &why),
        Err(_) => api_error(
            StatusCode::GONE,
            "OrderCancelled",
            "the fork is no longer wanted",
        ),
    }
}

fn take_pending(shared: &Shared, id: &str) -> Option<tokio::sync::oneshot::Sender<Reply>> {
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
}

async fn response(shared: Arc<Shared>, id: String, body: Body) -> Response {
    let Some(reply) = take_pending(&shared, &id) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        );
    };
    match to_bytes(body, MAX_RESPONSE_BYTES).await {
        Ok(bytes) => {
            deliver(&shared, reply, Reply::Response(bytes)).await;
            accepted()
        }
        Err(_) => {
            let _ = reply.send(Reply::TooLarge {
                bytes: MAX_RESPONSE_BYTES + 1,
            });
            api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                "response payload exceeds 6291456 bytes",
            )
        }
    }
}

/// Turns whatever a runtime posted as an error into Lambda's error JSON.
fn normalise_error(headers: &HeaderMap, body: &Bytes) -> (String, Bytes) {
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) if v.is_object() => {
            let error_type = v
                .get("errorType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
                .or(header_type)
                .unwrap_or_else(|| "Unhandled".into());
            (error_type, body.clone())
        }
        _ => {
            let error_type = header_type.unwrap_or_else(|| "Unhandled".into());
            let doc = json!({
                "errorType": error_type,
                "errorMessage": String::from_utf8_lossy(body),
            });
            (error_type, Bytes::from(doc.to_string()))
        }
    }
}

async fn error(shared: Arc<Shared>, id: String, headers: &HeaderMap, body: Body) -> Response {
    let Some(reply) = take_pending(&shared, &id) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            "Invalid request ID",
        );
    };
    let body = to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_else(|_| Bytes::from_static(b"error document too large"));
    let (error_type, body) = normalise_error(headers, &body);
    deliver(&shared, reply, Reply::Error { error_type, body }).await;
    accepted()
}

async fn init_error(shared: Arc<Shared>, headers: &HeaderMap, body: Body) -> Response {
    let body = to_bytes(body, MAX_ERROR_BYTES).await.unwrap_or_default();
    let (error_type, doc) = normalise_error(headers, &body);
    let message = serde_json::from_slice::<serde_json::Value>(&doc)
        .ok()
        .and_then(|v| {
            v.get("errorMessage")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_default();
    shared.fail_init(Death {
        error_type: "Runtime.InitError".into(),
        message: format!("{error_type}: {message}"),
    });
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Job;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn job(id: &str) -> (Job, tokio::sync::oneshot::Receiver<Reply>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            request_id: id.into(),
            payload: Bytes::from_static(b"{}"),
            deadline_ms: 1,
            function_arn: "arn".into(),
            trace_id: "t".into(),
            batch_size: None,
            reply,
        };
        (job, rx)
    }

    /// Reads from `s` until `text` has come `n` times; returns all read.
    async fn read_until(s: &mut tokio::net::TcpStream, text: &str, n: usize) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen).matches(text).count() < n {
            let got = s.read(&mut buf).await.unwrap();
            assert!(got > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..got]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    }

    #[tokio::test]
    async fn a_pipelined_reply_and_poll_get_the_202_then_the_next_event() {
        tokio::time::timeout(std::time::Duration::from_secs(10), pipelined())
            .await
            .expect("the exchange finishes");
    }

    async fn pipelined() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(None);
        let server = tokio::spawn(serve(listener, shared.clone()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (first, reply) = job("r1");
        shared.jobs_tx.send(first).await.unwrap();
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut s, "{}", 1).await;
        assert!(got.contains("lambda-runtime-aws-request-id: r1"), "{got}");

        // The scheduler's side: on the reply, the next job, then settled.
        let scheduler = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let Ok(Reply::Response(body)) = reply.await else {
                    panic!("no response")
                };
                assert_eq!(&body[..], b"{\"ok\":1}");
                let (second, r2) = job("r2");
                shared.jobs_tx.send(second).await.unwrap();
                shared.settled.notify_waiters();
                // Kept (a receiver is itself awaitable: boxed in a tuple).
                (r2,)
            })
        };
        s.write_all(b"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"ok\":1}GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut s, "lambda-runtime-aws-request-id: r2", 1).await;
        let (accepted, next) = got.split_at(got.rfind("HTTP/1.1 ").unwrap());
        assert!(accepted.starts_with("HTTP/1.1 202"), "{got}");
        assert!(next.starts_with("HTTP/1.1 200"), "{got}");
        let (r2,) = scheduler.await.unwrap();

        // Nothing settles this time: the 202 still comes, the poll waits.
        s.write_all(b"POST /2018-06-01/runtime/invocation/r2/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut s, "HTTP/1.1 202", 1).await;
        assert!(!got.contains("HTTP/1.1 200"), "{got}");
        assert!(matches!(r2.await, Ok(Reply::Response(_))));
        server.abort();
    }

    /// Sends `request` on a new connection; the whole answer (every answer
    /// here ends its JSON body with `}`).
    async fn ask(addr: std::net::SocketAddr, request: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        read_until(&mut s, "}", 1).await
    }

    #[tokio::test]
    async fn routes_are_matched_by_hand_as_the_runtime_api_defines_them() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(None);
        let server = tokio::spawn(serve(listener, shared.clone()));
        // Unknown paths, and ids that leave the route, are 404s in
        // Lambda's error shape.
        for path in [
            "/nope",
            "/2018-06-01/runtime/invocation/",
            "/2018-06-01/runtime/invocation//response",
            "/2018-06-01/runtime/invocation/a/b/response",
            "/2018-06-01/runtime/invocation/a/answer",
            "/2018-06-01/runtime/invocation/next/",
        ] {
            let got = ask(
                addr,
                &format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}"),
            )
            .await;
            assert!(got.starts_with("HTTP/1.1 404"), "{path}: {got}");
            assert!(got.contains(r#""errorType":"UnknownOperation""#), "{got}");
        }
        // A known route with the wrong method: 405 naming the right one. A
        // HEAD of `next` takes no job.
        let (queued, _reply) = job("r1");
        shared.jobs_tx.send(queued).await.unwrap();
        for (request, allow) in [
            ("HEAD /2018-06-01/runtime/invocation/next", "GET"),
            ("POST /2018-06-01/runtime/invocation/next", "GET"),
            ("GET /2018-06-01/runtime/invocation/r1/response", "POST"),
            ("GET /2018-06-01/runtime/init/error", "POST"),
        ] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("{request} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let got = read_until(&mut s, "\r\n\r\n", 1).await;
            assert!(got.starts_with("HTTP/1.1 405"), "{request}: {got}");
            assert!(
                got.to_lowercase()
                    .contains(&format!("allow: {}", allow.to_lowercase())),
                "{got}"
            );
        }
        let got = ask(
            addr,
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        assert!(
            got.contains("lambda-runtime-aws-request-id: r1"),
            "the job is still there: {got}"
        );
        // The id is percent-decoded, as a path parameter is; one that is
        // not UTF-8 once decoded is refused.
        let got = ask(addr, "POST /2018-06-01/runtime/invocation/r%31/response HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(got.starts_with("HTTP/1.1 202"), "{got}");
        let got = ask(addr, "POST /2018-06-01/runtime/invocation/%FF/error HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        server.abort();
    }

    #[test]
    fn error_documents_are_normalised() {
        let mut h = HeaderMap::new();
        let (t, b) = normalise_error(&h, &Bytes::from_static(b"not json"));
        assert_eq!(t, "Unhandled");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errorMessage"], "not json");

        h.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Bad"),
        );
        let (t, _) = normalise_error(&h, &Bytes::from_static(b"{}"));
        assert_eq!(t, "Bad");
        let (t, b) = normalise_error(
            &h,
            &Bytes::from_static(br#"{"errorType":"ValueError","errorMessage":"x"}"#),
        );
        assert_eq!(t, "ValueError");
        assert_eq!(&b[..], br#"{"errorType":"ValueError","errorMessage":"x"}"#);
    }
}
