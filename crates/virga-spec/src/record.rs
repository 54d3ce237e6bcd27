//! The invocation record: one row per invocation, whatever its outcome.
//!
//! Field names are a public contract (`virga invocations --format json`, CSV
//! exports, the lab): fields may be added, never renamed.

use serde::{Deserialize, Serialize};

pub use crate::manifest::Mode;

/// How the instance that served an invocation started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Started for this invocation: it paid the init.
    Cold,
    /// Reused after an earlier invocation.
    #[default]
    Warm,
    /// Started ahead of the invocation by the keep-alive policy (a
    /// pre-warm) or as a provisioned instance; this is its first.
    Prewarmed,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Warm => "warm",
            Start::Prewarmed => "prewarmed",
        }
    }

    pub fn parse(s: &str) -> Option<Start> {
        Some(match s {
            "cold" => Start::Cold,
            "warm" => Start::Warm,
            "prewarmed" => Start::Prewarmed,
            _ => return None,
        })
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The runtime returned a response.
    Success,
    /// The runtime reported an error, crashed, or failed to start.
    Error,
    /// Rejected for lack of capacity (HTTP 429); never reached an instance.
    Throttled,
    /// Exceeded the function's `timeout_ms`; the instance was killed.
    Timeout,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Error => "error",
            Status::Throttled => "throttled",
            Status::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "success" => Status::Success,
            "error" => Status::Error,
            "throttled" => Status::Throttled,
            "timeout" => Status::Timeout,
            _ => return None,
        })
    }
}

/// What produced the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Http,
    Bucket,
    Topic,
    Queue,
    Schedule,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Http => "http",
            Trigger::Bucket => "bucket",
            Trigger::Topic => "topic",
            Trigger::Queue => "queue",
            Trigger::Schedule => "schedule",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        Some(match s {
            "http" => Trigger::Http,
            "bucket" => Trigger::Bucket,
            "topic" => Trigger::Topic,
            "queue" => Trigger::Queue,
            "schedule" => Trigger::Schedule,
            _ => return None,
        })
    }
}

/// One invocation, as measured by the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationRecord {
    pub request_id: String,
    pub function: String,
    /// The deployment revision of the function that served it ("1", "2", ...).
    pub version: String,
    /// Empty when no instance was involved (throttled).
    pub instance_id: Option<String>,
    pub trigger: Trigger,
    pub cold: bool,
    /// How the instance that served it started; `None` when it reached no
    /// instance (throttled, its caller gone while queued).
    #[serde(default)]
    pub start: Option<Start>,
    pub status: Status,
    /// Lambda's error name (`Runtime.ExitError`, `Sandbox.Timedout`, the function's own type, ...).
    pub error_type: Option<String>,
    /// Time spent waiting for a free instance.
    pub queue_ms: f64,
    /// Spawn to the runtime's first `invocation/next`; only on cold
    /// invocations of a spawned instance.
    pub init_ms: Option<f64>,
    /// From the fork of the function's template (or the release of the
    /// spare it forked ahead) to the child's first `invocation/next`
    /// (Lambda SnapStart's Restore Duration); only on
    /// cold invocations of a forked instance (`snap_start = "fork"`), which
    /// have no `init_ms`.
    #[serde(default)]
    pub restore_ms: Option<f64>,
    /// Delivery to the instance until its response or error.
    pub duration_ms: f64,
    pub billed_ms: u64,
    pub memory_mb: u32,
    /// Peak memory of the instance so far (cgroup, else `VmHWM`).
    pub max_memory_mb: Option<u32>,
    /// Whether memory and CPU limits were enforced by cgroups.
    pub limits_enforced: bool,
    /// How the instance was confined.
    #[serde(default)]
    pub isolation: Isolation,
    pub payload_bytes: u64,
    pub response_bytes: u64,
    /// RFC 3339.
    pub received_at: String,
    /// RFC 3339.
    pub finished_at: String,
    /// The instance's own timing split (model functions report it).
    #[serde(flatten)]
    pub split: WorkerSplit,
    /// The function's mode when it ran (`function`, `service`, `job`).
    #[serde(default)]
    pub mode: Mode,
    /// How many requests rode in the invocation that carried this one (1
    /// without batching; 0 when throttled before reaching an instance).
    #[serde(default = "one")]
    pub batch_size: u32,
    /// The instance's CPU share (vCPU).
    #[serde(default)]
    pub vcpu: Option<f64>,
    /// Service and job: when the task serving this request was spawned
    /// (RFC 3339), so task time can be billed per second from its start.
    #[serde(default)]
    pub task_started_at: Option<String>,
    /// A synchronous caller had disconnected before the answer (always false
    /// for deliveries that have no caller).
    #[serde(default)]
    pub caller_gone: bool,
}

/// How an instance is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The platform's sandbox: own user, namespaces, read-only root,
    /// seccomp, pids limit.
    Sandbox,
    /// A plain process of the platform's user (isolation off, or a host
    /// that cannot sandbox).
    #[default]
    None,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Sandbox => "sandbox",
            Isolation::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Isolation> {
        match s {
            "sandbox" => Some(Isolation::Sandbox),
            "none" => Some(Isolation::None),
            _ => None,
        }
    }
}

fn one() -> u32 {
    1
}

/// What a model runtime reports of its own work for one invocation, so
/// reports can split init from processing (fields are null when unreported).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerSplit {
    #[serde(default)]
    pub preprocess_ms: Option<f64>,
    #[serde(default)]
    pub inference_ms: Option<f64>,
    #[serde(default)]
    pub postprocess_ms: Option<f64>,
}

impl WorkerSplit {
    /// Reads the split from a model runtime's JSON response, if it has one.
    pub fn from_response(body: &[u8]) -> WorkerSplit {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return WorkerSplit::default();
        };
        let get = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        WorkerSplit {
            preprocess_ms: get("preprocess_ms"),
            inference_ms: get("inference_ms"),
            postprocess_ms: get("postprocess_ms"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_names_are_the_contract() {
        let r = InvocationRecord {
            request_id: "r".into(),
            function: "f".into(),
            version: "1".into(),
            instance_id: None,
            trigger: Trigger::Http,
            cold: true,
            start: Some(Start::Prewarmed),
            status: Status::Timeout,
            error_type: Some("Sandbox.Timedout".into()),
            queue_ms: 0.0,
            init_ms: Some(1.0),
            restore_ms: None,
            duration_ms: 2.0,
            billed_ms: 3,
            memory_mb: 128,
            max_memory_mb: Some(10),
            limits_enforced: false,
            isolation: Isolation::Sandbox,
            payload_bytes: 1,
            response_bytes: 2,
            received_at: "2026-01-01T00:00:00Z".into(),
            finished_at: "2026-01-01T00:00:00Z".into(),
            split: WorkerSplit::default(),
            mode: Mode::Service,
            batch_size: 4,
            vcpu: Some(2.0),
            task_started_at: Some("2026-01-01T00:00:00Z".into()),
            caller_gone: false,
        };
        let v = serde_json::to_value(&r).unwrap();
        for field in [
            "request_id",
            "function",
            "version",
            "instance_id",
            "trigger",
            "cold",
            "start",
            "status",
            "error_type",
            "queue_ms",
            "init_ms",
            "duration_ms",
            "billed_ms",
            "memory_mb",
            "max_memory_mb",
            "limits_enforced",
            "isolation",
            "payload_bytes",
            "response_bytes",
            "received_at",
            "finished_at",
            "preprocess_ms",
            "inference_ms",
            "postprocess_ms",
            "mode",
            "batch_size",
            "vcpu",
            "task_started_at",
            "caller_gone",
        ] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["status"], "timeout");
        assert_eq!(v["start"], "prewarmed");
        assert_eq!(v["trigger"], "http");
        assert_eq!(v["mode"], "service");
        // Records written before these fields existed still read back.
        let mut old = v.as_object().unwrap().clone();
        for k in [
            "mode",
            "batch_size",
            "vcpu",
            "task_started_at",
            "caller_gone",
        ] {
            old.remove(k);
        }
        let back: InvocationRecord = serde_json::from_value(old.into()).unwrap();
        assert_eq!((back.mode, back.batch_size), (Mode::Function, 1));
        assert!(!back.caller_gone);
        for s in [
            Status::Success,
            Status::Error,
            Status::Throttled,
            Status::Timeout,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
    }
}
