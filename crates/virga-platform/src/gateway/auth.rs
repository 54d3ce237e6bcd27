//! The door's guard, the one place the gateway decides access:
//!
//! 1. the Host check (every request): on a loopback bind, a `Host` that is
//!    not a loopback name (or an `--allow-host` one) gets 403, so a web
//!    page cannot reach the API by rebinding its own name to 127.0.0.1;
//! 2. `authorize` (every route): who the caller is (a SigV4 signature or a
//!    bearer token of a live key, under `--auth sigv4`) and whether the
//!    policy (`access::policy`) lets them do what the route does. The
//!    caller travels on to the handlers as an extension.
//!
//! Both run as one tower layer, [`GuardLayer`], that passes a request it
//! can decide at once straight to the route (the invoke path under
//! `--auth none` allocates nothing here).
//!
//! Denials and every deploy and delete go to the audit log. Errors are
//! Lambda's (`InvalidSignatureException`, `UnrecognizedClientException`,
//! `AccessDeniedException`, 403); on `/v2` they are V2's `{"error"}`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request};
use axum::http::{header, Method};
use tower::ServiceExt as _;

use super::*;
use crate::access::{Action, AuditEntry, AuthMode, Caller, SERVICE};

/// Largest body read to check a signature: the largest any route takes.
const MAX_SIGNED_BODY: usize = MAX_OBJECT_BYTES;

/// A refusal: its Lambda error name, status and message.
#[derive(Debug)]
pub(super) struct Denial {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl Denial {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Denial {
        Denial {
            status,
            kind,
            message: message.into(),
        }
    }

    fn invalid_signature(message: impl Into<String>) -> Denial {
        Denial::new(StatusCode::FORBIDDEN, "InvalidSignatureException", message)
    }

    fn unrecognized(message: impl Into<String>) -> Denial {
        Denial::new(
            StatusCode::FORBIDDEN,
            "UnrecognizedClientException",
            message,
        )
    }

    fn access_denied(message: impl Into<String>) -> Denial {
        Denial::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
    }

    /// The answer in the shape of the door it was asked at.
    fn respond(self, path: &str) -> Response {
        if path == "/v2" || path.starts_with("/v2/") {
            let mut resp = v2_error(self.status, self.message).into_response();
            resp.headers_mut().insert(
                HeaderName::from_static("x-amzn-errortype"),
                HeaderValue::from_static(self.kind),
            );
            resp
        } else {
            ApiError::new(self.status, self.kind, self.message).into_response()
        }
    }
}

impl From<crate::access::AccessError> for Denial {
    fn from(e: crate::access::AccessError) -> Denial {
        Denial::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            e.to_string(),
        )
    }
}

fn source(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_string(), |c| c.0.to_string())
}

/// The answer to a `Host` that is not loopback on a loopback bind, or
/// `None` when the request may go on.
fn host_denial(state: &AppState, req: &Request) -> Option<Response> {
    // A request without Host (HTTP/1.0) comes from no browser.
    let host = req.headers().get(header::HOST)?;
    let host = String::from_utf8_lossy(host.as_bytes());
    if state.access.host_allowed(&host) {
        return None;
    }
    let message = format!(
        "Host {host:?} is not a loopback name: this server listens on loopback and answers only requests for localhost, 127.0.0.1 or [::1] (name others with `virga serve --allow-host NAME`)"
    );
    state.access.audit.record(
        &AuditEntry::now("denied", "-", &source(req)).detail(format!(
            "{} {}: {message}",
            req.method(),
            req.uri().path()
        )),
    );
    Some(Denial::access_denied(message).respond(req.uri().path()))
}

/// Whether `authorize` has nothing to decide: under `--auth none`
/// everything is allowed, and only deploys and deletes, which are audited,
/// need to know more.
fn allowed_as_local(state: &AppState, req: &Request) -> bool {
    state.access.mode == AuthMode::None
        && !(matches!(*req.method(), Method::PUT | Method::DELETE)
            && req
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|m| m.as_str() == "/v1/functions/{name}"))
}

/// Which of the two checks a [`Guard`] makes.
#[derive(Clone, Copy)]
pub(super) enum Check {
    /// `host_denial`, on every request (a layer over the whole router).
    Host,
    /// `authorize`, on every route (a route layer: it reads the route).
    Access,
}

/// The two checks as a tower layer. A request the check passes without
/// waiting (every request under `--auth none` but deploys and deletes)
/// goes straight to the inner service: no boxed `Next` or future per
/// request, which `axum::middleware::from_fn` costs on every call.
#[derive(Clone)]
pub(super) struct GuardLayer {
    pub(super) state: Arc<AppState>,
    pub(super) check: Check,
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            state: self.state.clone(),
            check: self.check,
            inner,
        }
    }
}

#[derive(Clone)]
pub(super) struct Guard<S> {
    state: Arc<AppState>,
    check: Check,
    inner: S,
}

type BoxedAnswer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
>;

impl<S> tower::Service<Request> for Guard<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<S::Future, BoxedAnswer>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        use futures_util::future::Either;
        match self.check {
            Check::Host => match host_denial(&self.state, &req) {
                None => Either::Left(self.inner.call(req)),
                Some(denied) => Either::Right(Box::pin(std::future::ready(Ok(denied)))),
            },
            Check::Access if allowed_as_local(&self.state, &req) => {
                req.extensions_mut().insert(Caller::Local);
                Either::Left(self.inner.call(req))
            }
            Check::Access => {
                // The ready service goes into the future; a clone stays.
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                let state = self.state.clone();
                Either::Right(Box::pin(
                    async move { Ok(authorize(state, req, ready).await) },
                ))
            }
        }
    }
}

/// Authenticates the caller, applies the policy, audits; then `inner`
/// answers.
async fn authorize<S>(state: Arc<AppState>, req: Request, inner: S) -> Response
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
{
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let (mut parts, body) = req.into_parts();
    let params = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &state)
        .await
        .map(|p| p.0)
        .unwrap_or_default();
    let action = classify(
        &parts.method,
        &route,
        params.get("name").map(String::as_str),
    );
    let req = Request::from_parts(parts, body);
    let path = req.uri().path().to_string();
    let source = source(&req);
    let method = req.method().clone();
    let audit_denial = |key: &str, message: &str| {
        state.access.audit.record(
            &AuditEntry::now("denied", key, &source)
                .function(action.function())
                .detail(format!("{method} {path}: {message}")),
        );
    };
    let (mut req, caller) = match authenticate(&state, req).await {
        Ok(ok) => ok,
        Err((key, denial)) => {
            audit_denial(&key, &denial.message);
            return denial.respond(&path);
        }
    };
    if !caller.may(&action) {
        let denial = match &caller {
            Caller::Anonymous => Denial::unrecognized(
                "Missing credentials: this server (--auth sigv4) needs requests signed with AWS Signature V4 by a key from `virga keys create` (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials), or `Authorization: Bearer TOKEN` with a token from `virga keys create --token`",
            ),
            _ => Denial::access_denied(format!(
                "key {} is not authorized to {}{}: its role does not allow it (`virga keys ls` shows roles and functions)",
                caller.key_id(),
                action.name(),
                action
                    .function()
                    .map(|f| format!(" function {f}"))
                    .unwrap_or_default(),
            )),
        };
        audit_denial(caller.key_id(), &denial.message);
        return denial.respond(&path);
    }
    req.extensions_mut().insert(caller.clone());
    let Ok(resp) = inner.oneshot(req).await;
    if matches!(action, Action::Deploy(_) | Action::Delete(_)) && resp.status().is_success() {
        state.access.audit.record(
            &AuditEntry::now(action.name(), caller.key_id(), &source).function(action.function()),
        );
    }
    resp
}

/// Who sent the request. Under `--auth none` everyone is `Local` and
/// nothing is checked (signed requests pass whatever their keys).
async fn authenticate(
    state: &AppState,
    req: Request,
) -> Result<(Request, Caller), (String, Denial)> {
    if state.access.mode == AuthMode::None {
        return Ok((req, Caller::Local));
    }
    let no_key = |d: Denial| ("-".to_string(), d);
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok((req, Caller::Anonymous));
    };
    let value = value
        .to_str()
        .map_err(|_| {
            no_key(Denial::invalid_signature(
                "the Authorization header is not ASCII",
            ))
        })?
        .to_string();
    let keys = &state.access.keys;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return match keys.token(token.trim()).map_err(|e| no_key(e.into()))? {
            Some((id, grant)) => Ok((req, Caller::Key { id, grant })),
            None => Err(no_key(Denial::unrecognized(
                "The bearer token is invalid: not a token of this server, or revoked (`virga keys ls` on its data dir)",
            ))),
        };
    }
    let auth = match virga_sigv4::Authorization::parse(&value) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(no_key(Denial::invalid_signature(e.to_string()))),
        None => {
            return Err(no_key(Denial::invalid_signature(
                "the Authorization header is neither AWS Signature V4 (AWS4-HMAC-SHA256) nor `Bearer TOKEN`",
            )))
        }
    };
    let key = auth.access_key_id.clone();
    let Some((secret, grant)) = keys.secret(&key).map_err(|e| (key.clone(), e.into()))? else {
        return Err((
            key.clone(),
            Denial::unrecognized(format!(
                "The security token included in the request is invalid: access key id {key} is not a key of this server, or is revoked (`virga keys ls` on its data dir)"
            )),
        ));
    };
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (hash, body) = if declared.as_deref() == Some(virga_sigv4::UNSIGNED_PAYLOAD) {
        (virga_sigv4::UNSIGNED_PAYLOAD.to_string(), body)
    } else {
        let bytes = to_bytes(body, MAX_SIGNED_BODY).await.map_err(|_| {
            (
                key.clone(),
                Denial::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestTooLargeException",
                    format!("a request must be smaller than {MAX_SIGNED_BODY} bytes"),
                ),
            )
        })?;
        let actual = virga_sigv4::sha256_hex(&bytes);
        if declared.as_ref().is_some_and(|d| *d != actual) {
            return Err((
                key,
                Denial::invalid_signature(
                    "x-amz-content-sha256 is not the SHA-256 of the body (chunked signing is not supported)",
                ),
            ));
        }
        (actual, Body::from(bytes))
    };
    let checked = auth.verify(
        &virga_sigv4::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
        },
        &hash,
        &secret,
        SERVICE,
        chrono::Utc::now(),
    );
    if let Err(e) = checked {
        return Err((key, Denial::invalid_signature(e.to_string())));
    }
    Ok((
        Request::from_parts(parts, body),
        Caller::Key { id: key, grant },
    ))
}

/// What a route does, from its method and path template. A route this
/// does not know is `Other`, which only admins may use.
pub(super) fn classify(method: &Method, route: &str, name: Option<&str>) -> Action {
    let f = || function_name(name.unwrap_or_default()).to_string();
    match route {
        "/2015-03-31/functions/{name}/invocations"
        | "/v2/models/{name}/infer"
        | "/v2/models/{name}/versions/{version}/infer" => Action::Invoke(f()),
        "/2015-03-31/functions/{name}"
        | "/v2/models/{name}"
        | "/v2/models/{name}/ready"
        | "/v2/models/{name}/versions/{version}"
        | "/v2/models/{name}/versions/{version}/ready" => Action::Describe(f()),
        "/2015-03-31/functions/{name}/code" => Action::Deploy(f()),
        "/v1/functions/{name}" => match *method {
            Method::GET | Method::HEAD => Action::Describe(f()),
            Method::PUT => Action::Deploy(f()),
            Method::DELETE => Action::Delete(f()),
            _ => Action::Other,
        },
        "/2015-03-31/functions" | "/2015-03-31/functions/" | "/v1/functions" | "/v1/cluster" => {
            Action::List
        }
        "/v1/functions/{name}/instances"
        | "/v1/functions/{name}/logs"
        | "/v1/functions/{name}/dlq"
        | "/v1/functions/{name}/dlq/redrive" => Action::Operate(f()),
        "/v1/invocations" => Action::Records,
        "/v1/buckets/{bucket}/objects"
        | "/v1/buckets/{bucket}/objects/{*key}"
        | "/v1/topics/{topic}"
        | "/v1/queues"
        | "/v1/queues/{queue}/messages" => Action::Storage,
        "/v2" | "/v2/health/live" | "/v2/health/ready" => Action::Health,
        "/metrics" => Action::Metrics,
        _ => Action::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_classified() {
        // Every path template `router` serves, with its methods.
        let routes: &[(&str, &[Method])] = &[
            ("/2015-03-31/functions/{name}/invocations", &[Method::POST]),
            ("/2015-03-31/functions/{name}", &[Method::GET]),
            ("/2015-03-31/functions/{name}/code", &[Method::PUT]),
            ("/2015-03-31/functions", &[Method::GET]),
            ("/2015-03-31/functions/", &[Method::GET]),
            ("/v1/functions", &[Method::GET]),
            ("/v1/cluster", &[Method::GET]),
            (
                "/v1/functions/{name}",
                &[Method::GET, Method::PUT, Method::DELETE],
            ),
            (
                "/v1/functions/{name}/instances",
                &[Method::GET, Method::DELETE],
            ),
            ("/v1/functions/{name}/logs", &[Method::GET]),
            ("/v1/functions/{name}/dlq", &[Method::GET]),
            ("/v1/functions/{name}/dlq/redrive", &[Method::POST]),
            ("/v1/invocations", &[Method::GET]),
            ("/v1/buckets/{bucket}/objects", &[Method::GET]),
            (
                "/v1/buckets/{bucket}/objects/{*key}",
                &[Method::GET, Method::PUT, Method::DELETE],
            ),
            ("/v1/topics/{topic}", &[Method::POST]),
            ("/v1/queues", &[Method::GET]),
            ("/v1/queues/{queue}/messages", &[Method::POST]),
            ("/v2", &[Method::GET]),
            ("/v2/models/{name}", &[Method::GET]),
            ("/v2/models/{name}/ready", &[Method::GET]),
            ("/v2/models/{name}/infer", &[Method::POST]),
            ("/v2/models/{name}/versions/{version}", &[Method::GET]),
            ("/v2/models/{name}/versions/{version}/ready", &[Method::GET]),
            (
                "/v2/models/{name}/versions/{version}/infer",
                &[Method::POST],
            ),
            ("/v2/health/live", &[Method::GET]),
            ("/v2/health/ready", &[Method::GET]),
            ("/metrics", &[Method::GET]),
        ];
        for (route, methods) in routes {
            for m in *methods {
                assert_ne!(classify(m, route, Some("f")), Action::Other, "{m} {route}");
            }
        }
        assert_eq!(
            classify(
                &Method::POST,
                "/2015-03-31/functions/{name}/invocations",
                Some("arn:aws:lambda:us-east-1:000000000000:function:echo:$LATEST")
            ),
            Action::Invoke("echo".into())
        );
        assert_eq!(
            classify(&Method::PUT, "/v1/functions/{name}", Some("echo")),
            Action::Deploy("echo".into())
        );
        assert_eq!(classify(&Method::GET, "/new/route", None), Action::Other);
    }
}
