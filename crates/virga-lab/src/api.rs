//! A typed client of the platform's public HTTP API (the Lambda Invoke API
//! and `/v1/`), shared by the lab and the CLI. Answers are `virga-spec`'s
//! types, the same ones the gateway sends.

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use virga_spec::api::{
    DeadLetter, FunctionInfo, InstanceInfo, ObjectMeta, Published, Queues, StoredObject,
};
use virga_spec::{InvocationRecord, Status};

/// Why a request to the platform failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// cannot reach the endpoint
    #[error("cannot reach {endpoint}")]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// the platform refused the request, with Lambda's error name
    #[error("{kind} ({status}): {message}")]
    Refused {
        status: u16,
        kind: String,
        message: String,
    },
    /// the answer is not what the API promises
    #[error("unexpected answer from {url}: {detail}")]
    Protocol { url: String, detail: String },
    /// the request could not be signed with the credentials given
    #[error("cannot sign the request")]
    Signing(#[source] virga_sigv4::SignError),
}

impl ApiError {
    /// The HTTP status the platform answered, 0 when there was no answer.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Refused { status, .. } => *status,
            _ => 0,
        }
    }
}

/// A synchronous invocation's answer.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub request_id: Option<String>,
    pub status: u16,
    /// `Some(errorType)` when the function failed (`X-Amz-Function-Error`).
    pub function_error: Option<String>,
    /// The end of the invocation's log (`X-Amz-Log-Result`), decoded.
    pub log_tail: Option<String>,
    pub body: Bytes,
}

impl Invoked {
    /// The `REPORT` line of the log tail.
    pub fn report_line(&self) -> Option<&str> {
        self.log_tail
            .as_deref()?
            .lines()
            .rev()
            .find(|l| l.starts_with("REPORT "))
    }
}

/// The client. Cheap to clone (one connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// Signs every request (AWS Signature V4) when set.
    signer: Option<virga_sigv4::Signer>,
}

// The one-field envelopes `/v1/` wraps its answers in.
#[derive(Deserialize)]
struct Functions {
    functions: Vec<FunctionInfo>,
}
#[derive(Deserialize)]
struct Instances {
    instances: Vec<InstanceInfo>,
}
#[derive(Deserialize)]
struct Stopped {
    stopped: u64,
}
#[derive(Deserialize)]
struct Lines {
    lines: Vec<String>,
}
#[derive(Deserialize)]
struct Invocations {
    invocations: Vec<InvocationRecord>,
}
#[derive(Deserialize)]
struct DeadLetters {
    dead_letters: Vec<DeadLetter>,
}
#[derive(Deserialize)]
struct Redriven {
    redriven: u64,
}
#[derive(Deserialize)]
struct Objects {
    objects: Vec<ObjectMeta>,
}
#[derive(Deserialize)]
struct Sent {
    message_id: String,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        Client {
            base: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            signer: None,
        }
    }

    /// Signs requests with these credentials (none: unsigned).
    pub fn signed(mut self, signer: Option<virga_sigv4::Signer>) -> Client {
        self.signer = signer;
        self
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request, signed when there are credentials; an answer other
    /// than 2xx is [`ApiError::Refused`].
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let unreachable = |source| ApiError::Unreachable {
            endpoint: self.base.clone(),
            source,
        };
        let mut req = req.build().map_err(unreachable)?;
        if let Some(s) = &self.signer {
            s.sign_reqwest(&mut req).map_err(ApiError::Signing)?;
        }
        let resp = self.http.execute(req).await.map_err(unreachable)?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Error")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string))
            .unwrap_or(text);
        Err(ApiError::Refused {
            status,
            kind,
            message,
        })
    }

    async fn json<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ApiError> {
        let resp = self.send(req).await?;
        let url = resp.url().to_string();
        let body = body(resp).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Protocol {
            url,
            detail: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.json(self.http.get(self.url(path))).await
    }

    /// The deployed functions, by name.
    pub async fn functions(&self) -> Result<Vec<FunctionInfo>, ApiError> {
        Ok(self.get::<Functions>("/v1/functions").await?.functions)
    }

    pub async fn function(&self, name: &str) -> Result<FunctionInfo, ApiError> {
        self.get(&format!("/v1/functions/{name}")).await
    }

    /// Deploys manifest text whose relative paths are relative to
    /// `base_dir`; `source` names the manifest in the platform's errors.
    pub async fn deploy(
        &self,
        name: &str,
        manifest: &str,
        base_dir: &str,
        source: Option<&str>,
    ) -> Result<FunctionInfo, ApiError> {
        let mut query = vec![("base_dir", base_dir)];
        query.extend(source.map(|s| ("source", s)));
        let req = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .query(&query)
            .header("content-type", "application/toml")
            .body(manifest.to_string());
        self.json(req).await
    }

    pub async fn delete_function(&self, name: &str) -> Result<(), ApiError> {
        let req = self.http.delete(self.url(&format!("/v1/functions/{name}")));
        self.send(req).await?;
        Ok(())
    }

    pub async fn instances(&self, function: &str) -> Result<Vec<InstanceInfo>, ApiError> {
        let path = format!("/v1/functions/{function}/instances");
        Ok(self.get::<Instances>(&path).await?.instances)
    }

    /// Stops the function's idle instances; returns how many.
    pub async fn stop_idle(&self, function: &str) -> Result<u64, ApiError> {
        let url = self.url(&format!("/v1/functions/{function}/instances"));
        Ok(self.json::<Stopped>(self.http.delete(url)).await?.stopped)
    }

    /// The last `lines` lines of the function's log.
    pub async fn logs(&self, function: &str, lines: usize) -> Result<Vec<String>, ApiError> {
        let path = format!("/v1/functions/{function}/logs?lines={lines}");
        Ok(self.get::<Lines>(&path).await?.lines)
    }

    /// Records, oldest first; optionally of one function, of one status,
    /// and only the newest `limit`.
    pub async fn records(
        &self,
        function: Option<&str>,
        status: Option<Status>,
        limit: Option<usize>,
    ) -> Result<Vec<InvocationRecord>, ApiError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        query.extend(function.map(|f| ("function", f.to_string())));
        query.extend(status.map(|s| ("status", s.as_str().to_string())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        let req = self.http.get(self.url("/v1/invocations")).query(&query);
        Ok(self.json::<Invocations>(req).await?.invocations)
    }

    pub async fn dead_letters(&self, function: &str) -> Result<Vec<DeadLetter>, ApiError> {
        let path = format!("/v1/functions/{function}/dlq");
        Ok(self.get::<DeadLetters>(&path).await?.dead_letters)
    }

    /// Delivers the function's dead letters again; returns how many.
    pub async fn redrive(&self, function: &str) -> Result<u64, ApiError> {
        let url = self.url(&format!("/v1/functions/{function}/dlq/redrive"));
        Ok(self.json::<Redriven>(self.http.post(url)).await?.redriven)
    }

    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
    ) -> Result<StoredObject, ApiError> {
        let url = self.url(&format!("/v1/buckets/{bucket}/objects/{key}"));
        self.json(self.http.put(url).body(body)).await
    }

    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Bytes, ApiError> {
        let url = self.url(&format!("/v1/buckets/{bucket}/objects/{key}"));
        let resp = self.send(self.http.get(url)).await?;
        body(resp).await
    }

    pub async fn objects(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, ApiError> {
        let req = self
            .http
            .get(self.url(&format!("/v1/buckets/{bucket}/objects")))
            .query(&[("prefix", prefix)]);
        Ok(self.json::<Objects>(req).await?.objects)
    }

    pub async fn publish(
        &self,
        topic: &str,
        message: &str,
        subject: Option<&str>,
    ) -> Result<Published, ApiError> {
        let query: Vec<(&str, &str)> = subject.map(|s| ("subject", s)).into_iter().collect();
        let req = self
            .http
            .post(self.url(&format!("/v1/topics/{topic}")))
            .query(&query)
            .body(message.to_string());
        self.json(req).await
    }

    /// Sends a message to a queue; returns its id.
    pub async fn send_message(&self, queue: &str, message: &str) -> Result<String, ApiError> {
        let req = self
            .http
            .post(self.url(&format!("/v1/queues/{queue}/messages")))
            .body(message.to_string());
        Ok(self.json::<Sent>(req).await?.message_id)
    }

    pub async fn queues(&self) -> Result<Queues, ApiError> {
        self.get("/v1/queues").await
    }

    /// Invokes `name` synchronously (`RequestResponse`) with the log tail.
    /// A function's own failure is an answer (`function_error`); a refusal
    /// (throttled, not found...) is [`ApiError::Refused`].
    pub async fn invoke(&self, name: &str, payload: impl Into<Bytes>) -> Result<Invoked, ApiError> {
        let req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("x-amz-invocation-type", "RequestResponse")
            .header("x-amz-log-type", "Tail")
            .body(payload.into());
        let resp = self.send(req).await?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("x-amzn-requestid");
        let function_error = header("x-amz-function-error");
        let log_tail = header("x-amz-log-result").and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        });
        let status = resp.status().as_u16();
        let body = body(resp).await?;
        Ok(Invoked {
            request_id,
            status,
            function_error,
            log_tail,
            body,
        })
    }

    /// Queues an asynchronous invocation (`Event`); returns its request id
    /// once the platform has stored it.
    pub async fn invoke_async(
        &self,
        name: &str,
        payload: impl Into<Bytes>,
    ) -> Result<String, ApiError> {
        let req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("x-amz-invocation-type", "Event")
            .body(payload.into());
        let resp = self.send(req).await?;
        Ok(resp
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }
}

/// The whole body of an answer.
async fn body(resp: reqwest::Response) -> Result<Bytes, ApiError> {
    let url = resp.url().to_string();
    resp.bytes().await.map_err(|e| ApiError::Protocol {
        url,
        detail: e.to_string(),
    })
}
