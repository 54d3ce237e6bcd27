//! Synchronous invokes between nodes. A door (the node an Invoke API call
//! reached) with no idle instance of the function hands the call to a node
//! whose last heartbeat reported one, and one whose share of the
//! function's `max_concurrency` is in use tries another node once; the
//! call goes over core NATS request-reply on `virga.invoke.NODE`. The node
//! that runs it records it; a routed call is never routed again. When no
//! node answers in time the door runs it itself.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use virga_spec::Trigger;

use super::{lock, Cluster};
use crate::scheduler::{Invocation, InvokeRequest, Scheduler};

const INVOKE_SUBJECT: &str = "virga.invoke";
/// Above this a call runs where it arrived (the broker's message limit is
/// 1 MB by default; Lambda's payloads go to 6 MB).
const MAX_ROUTED_BYTES: usize = 900 * 1024;
/// Beyond the function's timeout, for a cold start and the hops.
const ROUTE_MARGIN: Duration = Duration::from_secs(15);

const H_FUNCTION: &str = "Virga-Function";
const H_TAIL: &str = "Virga-Tail";
const H_STATUS: &str = "Virga-Status";
const H_ERROR_TYPE: &str = "Virga-Error-Type";
const H_REQUEST: &str = "Virga-Request-Id";
const H_FUNCTION_ERROR: &str = "Virga-Function-Error";
const H_LOG: &str = "Virga-Log-Tail";

/// What a node tells the others with each heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct NodeState {
    pub started: String,
    /// Functions with an idle instance on that node.
    #[serde(default)]
    pub warm: Vec<String>,
}

/// An invocation another node ran.
pub struct Routed {
    /// The node that ran it.
    pub node: String,
    pub answer: Result<Invocation, RemoteError>,
}

/// An error another node answered, as the API shows it.
#[derive(Debug)]
pub struct RemoteError {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

impl Cluster {
    /// Where a synchronous call of `function` should run: `None` here, else
    /// another node (one that reported an idle instance of it, when this
    /// one has none).
    pub fn route(&self, scheduler: &Scheduler, function: &str, payload: &[u8]) -> Option<String> {
        if payload.len() > MAX_ROUTED_BYTES || scheduler.idle(function) > 0 {
            return None;
        }
        self.pick(|node, warm| warm.get(node).is_some_and(|f| f.contains(function)))
    }

    /// Per other node, the functions it had an idle instance of at its
    /// last heartbeat.
    pub fn warm(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        lock(&self.warm)
            .iter()
            .map(|(n, fs)| {
                let mut fs: Vec<String> = fs.iter().cloned().collect();
                fs.sort();
                (n.clone(), fs)
            })
            .collect()
    }

    /// Another live node, for a call this node has no share left for.
    pub fn other_node(&self, payload: &[u8]) -> Option<String> {
        if payload.len() > MAX_ROUTED_BYTES {
            return None;
        }
        self.pick(|_, _| true)
    }

    /// A node other than this one that `ok` accepts, in turn.
    fn pick(&self, ok: impl Fn(&str, &HashMap<String, HashSet<String>>) -> bool) -> Option<String> {
        let warm = lock(&self.warm);
        let candidates: Vec<String> = lock(&self.members)
            .iter()
            .filter(|n| **n != self.node && ok(n, &warm))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Some(candidates[turn % candidates.len()].clone())
    }

    /// Runs a synchronous call of `function` on `node`; `None` when no
    /// answer came (gone, too slow, broker away): the caller runs it itself.
    pub async fn forward(
        &self,
        node: &str,
        function: &str,
        payload: Bytes,
        tail: bool,
        timeout: Duration,
    ) -> Option<Routed> {
        if !self.reachable() {
            return None;
        }
        let mut h = HeaderMap::new();
        h.insert(H_FUNCTION, function);
        if tail {
            h.insert(H_TAIL, "1");
        }
        let request = async_nats::Request::new()
            .payload(payload)
            .headers(h)
            .timeout(Some(timeout + ROUTE_MARGIN));
        let reply = self
            .client
            .send_request(format!("{INVOKE_SUBJECT}.{node}"), request)
            .await
            .map_err(|e| {
                tracing::debug!(%node, error = %e, "a routed call got no answer; running it here");
            })
            .ok()?;
        let get = |name: &str| {
            reply
                .headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_string())
        };
        let status: u16 = get(H_STATUS).and_then(|s| s.parse().ok())?;
        let answer = if status == 200 {
            let log = get(H_LOG)
                .and_then(|b| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            Ok(Invocation {
                request_id: get(H_REQUEST).unwrap_or_default(),
                body: reply.payload.clone(),
                function_error: get(H_FUNCTION_ERROR),
                log,
            })
        } else {
            Err(RemoteError {
                status,
                error_type: get(H_ERROR_TYPE).unwrap_or_else(|| "ServiceException".into()),
                message: String::from_utf8_lossy(&reply.payload).into_owned(),
            })
        };
        Some(Routed {
            node: node.to_string(),
            answer,
        })
    }

    /// Answers the calls other nodes route here; runs as long as the node.
    pub(super) async fn serve_invokes(self: Arc<Self>, scheduler: Arc<Scheduler>) {
        let subject = format!("{INVOKE_SUBJECT}.{}", self.node);
        loop {
            let mut calls = match self.client.subscribe(subject.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take routed calls; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(m) = calls.next().await {
                let (client, scheduler) = (self.client.clone(), scheduler.clone());
                tokio::spawn(async move {
                    let Some(reply) = m.reply.clone() else { return };
                    let header = |name: &str| {
                        m.headers
                            .as_ref()
                            .and_then(|h| h.get(name))
                            .map(|v| v.as_str().to_string())
                    };
                    let Some(function) = header(H_FUNCTION) else {
                        return;
                    };
                    let tail = header(H_TAIL).is_some();
                    let outcome = scheduler
                        .invoke(
                            InvokeRequest::new(function, m.payload.clone(), Trigger::Http)
                                .with_tail(tail),
                        )
                        .await;
                    let mut h = HeaderMap::new();
                    let body = match outcome {
                        Ok(inv) => {
                            h.insert(H_STATUS, "200");
                            h.insert(H_REQUEST, inv.request_id.as_str());
                            if let Some(e) = &inv.function_error {
                                h.insert(H_FUNCTION_ERROR, e.as_str());
                            }
                            if tail {
                                use base64::Engine;
                                let t = base64::engine::general_purpose::STANDARD
                                    .encode(crate::logs::tail_4kb(&inv.log));
                                h.insert(H_LOG, t.as_str());
                            }
                            inv.body
                        }
                        Err(e) => {
                            let (status, error_type) = crate::gateway::describe_invoke_error(&e);
                            h.insert(H_STATUS, status.as_u16().to_string().as_str());
                            h.insert(H_ERROR_TYPE, error_type);
                            Bytes::from(e.to_string())
                        }
                    };
                    let _ = client.publish_with_headers(reply, h, body).await;
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
