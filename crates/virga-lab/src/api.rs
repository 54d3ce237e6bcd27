//! A small client of the platform's public API, for the lab.

use serde_json::Value;
use virga_spec::InvocationRecord;

/// Why a lab run failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// cannot reach the endpoint
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, String),
    /// the platform answered with an error
    #[error("{0} answered {1}: {2}")]
    Api(String, u16, String),
    /// the platform's answer was not what the API promises
    #[error("unexpected answer from {0}: {1}")]
    Protocol(String, String),
    /// a setting of the run is wrong
    #[error("{0}")]
    Config(String),
    /// writing results failed
    #[error("cannot write {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// One invocation as the client saw it.
#[derive(Debug, Clone)]
pub struct Invoked {
    pub request_id: Option<String>,
    pub status: u16,
    pub function_error: Option<String>,
    pub body: Vec<u8>,
    pub client_ms: f64,
}

pub struct Api {
    base: String,
    http: reqwest::Client,
    /// Signs every request (AWS Signature V4) when set.
    signer: Option<virga_sigv4::Signer>,
}

impl Api {
    pub fn new(endpoint: &str) -> Api {
        Api {
            base: endpoint.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            signer: None,
        }
    }

    /// Signs requests with these credentials (none: unsigned).
    pub fn signed(mut self, signer: Option<virga_sigv4::Signer>) -> Api {
        self.signer = signer;
        self
    }

    /// Sends a request, signed when there are credentials.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, LabError> {
        let unreachable =
            |e: reqwest::Error| LabError::Unreachable(self.base.clone(), e.to_string());
        let mut req = req.build().map_err(unreachable)?;
        if let Some(s) = &self.signer {
            s.sign_reqwest(&mut req)
                .map_err(|e| LabError::Config(e.to_string()))?;
        }
        self.http.execute(req).await.map_err(unreachable)
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    async fn check(
        &self,
        url: &str,
        resp: Result<reqwest::Response, LabError>,
    ) -> Result<reqwest::Response, LabError> {
        let resp = resp?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        Err(LabError::Api(url.to_string(), status, message))
    }

    pub async fn get(&self, path: &str) -> Result<Value, LabError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .check(&url, self.send(self.http.get(&url)).await)
            .await?;
        resp.json()
            .await
            .map_err(|e| LabError::Protocol(url, e.to_string()))
    }

    pub async fn delete(&self, path: &str) -> Result<(), LabError> {
        let url = format!("{}{path}", self.base);
        self.check(&url, self.send(self.http.delete(&url)).await)
            .await?;
        Ok(())
    }

    /// Deploys manifest text whose relative paths are relative to `base_dir`.
    pub async fn deploy(
        &self,
        name: &str,
        manifest: &str,
        base_dir: &str,
    ) -> Result<Value, LabError> {
        let url = format!("{}/v1/functions/{name}", self.base);
        let req = self
            .http
            .put(&url)
            .query(&[("base_dir", base_dir)])
            .body(manifest.to_string());
        let resp = self.check(&url, self.send(req).await).await?;
        resp.json()
            .await
            .map_err(|e| LabError::Protocol(url, e.to_string()))
    }

    pub async fn invoke(&self, name: &str, payload: &[u8]) -> Result<Invoked, LabError> {
        let url = format!("{}/2015-03-31/functions/{name}/invocations", self.base);
        let t = std::time::Instant::now();
        let resp = self
            .send(self.http.post(&url).body(payload.to_vec()))
            .await?;
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_id = header("x-amzn-requestid");
        let function_error = header("x-amz-function-error");
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| LabError::Protocol(url, e.to_string()))?
            .to_vec();
        Ok(Invoked {
            request_id,
            status,
            function_error,
            body,
            client_ms: t.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// Records, oldest first, optionally of one function and only the newest `limit`.
    pub async fn records(
        &self,
        function: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<InvocationRecord>, LabError> {
        let mut q = Vec::new();
        if let Some(f) = function {
            q.push(format!("function={f}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let v = self
            .get(&format!("/v1/invocations?{}", q.join("&")))
            .await?;
        serde_json::from_value(v["invocations"].clone())
            .map_err(|e| LabError::Protocol(format!("{}/v1/invocations", self.base), e.to_string()))
    }
}
