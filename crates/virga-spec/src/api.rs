//! The shapes of the platform's `/v1/` answers, defined once: the gateway
//! sends them, the CLI and the lab read them back. Invocation records are
//! [`crate::InvocationRecord`].

use serde::{Deserialize, Serialize};

use crate::manifest::{Manifest, Mode, Runtime};

/// A deployed function's public description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: String,
    pub version: String,
    pub deployed_at: String,
    pub runtime: Runtime,
    pub mode: Mode,
    pub memory_mb: u32,
    pub vcpu: f64,
    /// Requests one instance serves at once.
    pub instance_concurrency: usize,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub keep_alive_ms: u64,
    pub min_instances: u32,
    pub max_queue: u32,
    pub instances: usize,
    pub busy: usize,
    pub queued: usize,
    pub limits_enforced: bool,
    pub manifest: Manifest,
    /// The manifest's directory: its relative paths are relative to it.
    pub base_dir: String,
}

/// Where an instance is in its life, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Starting,
    Idle,
    Busy,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Starting => "starting",
            InstanceState::Idle => "idle",
            InstanceState::Busy => "busy",
        }
    }
}

/// One instance's public description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    pub function: String,
    pub version: String,
    pub pid: u32,
    pub state: InstanceState,
    pub init_ms: Option<f64>,
    pub invocations: u64,
    pub started_at: String,
    pub limits_enforced: bool,
    /// How the instance is confined.
    #[serde(default)]
    pub isolation: crate::Isolation,
    pub max_memory_mb: Option<u32>,
    /// How the instance came to be: spawned, forked from its function's
    /// snap-start template, or that template (which serves no invocation).
    #[serde(default)]
    pub role: InstanceRole,
}

/// What an instance is to its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceRole {
    /// A process of its own that loaded its function itself.
    #[default]
    Spawned,
    /// Forked from the template (`snap_start = "fork"`); the weights it
    /// shares stay charged to the template's memory.
    Forked,
    /// The loaded, warmed process instances are forked from.
    Template,
    /// A child of the template, forked and placed in its cgroup ahead of
    /// the next cold start, which releases it; until then it runs nothing
    /// and holds no memory of the host's budget.
    Spare,
}

impl InstanceRole {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceRole::Spawned => "spawned",
            InstanceRole::Forked => "forked",
            InstanceRole::Template => "template",
            InstanceRole::Spare => "spare",
        }
    }

    /// Whether it serves invocations (the template and its spare do not).
    pub fn serves(self) -> bool {
        matches!(self, InstanceRole::Spawned | InstanceRole::Forked)
    }
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
    pub last_modified: String,
}

/// The answer to an object upload: the object, and the asynchronous
/// invocations its bucket triggers started (one per matching function), so
/// a caller can find their records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    #[serde(flatten)]
    pub object: ObjectMeta,
    #[serde(default)]
    pub invocations: Vec<Triggered>,
}

/// An invocation started by a trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triggered {
    pub function: String,
    pub request_id: String,
}

/// Queue depth and age of one function's asynchronous events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsyncDepth {
    pub function: String,
    pub ready: usize,
    pub in_flight: usize,
    pub delayed: usize,
    pub oldest_age_ms: Option<i64>,
    pub dead_letters: u64,
    /// In a cluster: the function's events the broker holds for every node
    /// together (waiting, delayed or being delivered); the other counts
    /// are this node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_queued: Option<u64>,
}

/// A queue's depth and age.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub queue: String,
    pub ready: usize,
    pub in_flight: usize,
    pub oldest_age_ms: Option<i64>,
    /// In a cluster: the queue's messages the broker holds for every node
    /// together (waiting or being delivered); `ready` and `in_flight` are
    /// then this node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_queued: Option<u64>,
}

/// `GET /v1/queues`: asynchronous invocations per function, and queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queues {
    pub functions: Vec<AsyncDepth>,
    pub queues: Vec<QueueDepth>,
}

/// A dead-lettered event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub request_id: String,
    pub function: String,
    pub trigger: String,
    pub attempts: u32,
    pub error: Option<String>,
    pub enqueued_at_ms: i64,
    pub payload: serde_json::Value,
}

/// `POST /v1/topics/{topic}`: the message and who it went to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub message_id: String,
    pub subscribers: Vec<String>,
}
