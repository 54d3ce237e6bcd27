//! A client of the platform's public HTTP API: the CLI uses nothing else.

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;

pub struct Client {
    endpoint: String,
    http: reqwest::Client,
    /// Signs every request (AWS Signature V4) when set.
    signer: Option<virga_sigv4::Signer>,
}

/// A synchronous invocation's result, as the Invoke API returned it.
pub struct Invoked {
    pub body: bytes::Bytes,
    pub function_error: Option<String>,
    pub log_tail: Option<String>,
}

impl Client {
    pub fn new(endpoint: &str) -> Client {
        Client {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            signer: None,
        }
    }

    /// Signs requests with these credentials (none: unsigned).
    pub fn signed(mut self, signer: Option<virga_sigv4::Signer>) -> Client {
        self.signer = signer;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    /// Sends a request and turns API errors into messages that say what to fix.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let mut req = req.build()?;
        if let Some(s) = &self.signer {
            s.sign_reqwest(&mut req)?;
        }
        let resp = self.http.execute(req).await.with_context(|| {
            format!(
                "cannot reach virga at {}: is `virga serve` running? (--endpoint / VIRGA_ENDPOINT)",
                self.endpoint
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let kind = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("Error")
            .to_string();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or(text);
        bail!("{kind} ({status}): {message}")
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        Ok(resp.json().await?)
    }

    /// Sends `body` with `method` and returns the JSON answer (null when empty).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Value> {
        let resp = self
            .send(self.http.request(method, self.url(path)).body(body))
            .await?;
        let bytes = resp.bytes().await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes> {
        Ok(self
            .send(self.http.get(self.url(path)))
            .await?
            .bytes()
            .await?)
    }

    /// Queues an asynchronous invocation; returns its request id.
    pub async fn invoke_async(&self, name: &str, payload: Vec<u8>) -> Result<String> {
        let req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("x-amz-invocation-type", "Event")
            .body(payload);
        let resp = self.send(req).await?;
        Ok(resp
            .headers()
            .get("x-amzn-requestid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    pub async fn deploy(
        &self,
        name: &str,
        manifest: String,
        base_dir: &str,
        source: &str,
    ) -> Result<Value> {
        let req = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .query(&[("base_dir", base_dir), ("source", source)])
            .header("content-type", "application/toml")
            .body(manifest);
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn invoke(&self, name: &str, payload: Vec<u8>) -> Result<Invoked> {
        let req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("x-amz-invocation-type", "RequestResponse")
            .header("x-amz-log-type", "Tail")
            .body(payload);
        let resp = self.send(req).await?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let function_error = header("x-amz-function-error");
        let log_tail = header("x-amz-log-result").and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        });
        let body = resp.bytes().await?;
        Ok(Invoked {
            body,
            function_error,
            log_tail,
        })
    }
}

/// The `REPORT` line of a log tail.
pub fn report_line(log: &str) -> Option<&str> {
    log.lines().rev().find(|l| l.starts_with("REPORT "))
}
