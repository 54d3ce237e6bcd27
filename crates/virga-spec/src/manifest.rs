//! Function manifests (`functions/*.toml`).
//!
//! ```toml
//! name = "echo"                        # [a-zA-Z0-9-_]{1,64}
//! runtime = "command"                  # a program speaking the Lambda Runtime API
//! command = ["python3", "handler.py"]  # run in the manifest's directory
//! handler = "main.handler"             # optional, passed on as _HANDLER
//! memory_mb = 512                      # 128..=10240; CPU follows as memory_mb / 1769 vCPU
//! timeout_ms = 3000                    # per invocation; the instance is killed on expiry
//! max_concurrency = 10                 # max instances; 0 = bounded only by the host
//! keep_alive_ms = 600000               # idle instances are stopped after this
//! min_instances = 0                    # provisioned instances, started at deploy, never reaped
//! max_queue = 100                      # sync requests waiting for an instance before 429
//! env = { KEY = "value" }
//! mode = "function"                    # function | service | job (see below)
//! ```
//!
//! Modes: `function` is Lambda-like (one request per instance at a time).
//! `service` is Fargate-like: long-running tasks with an explicit `cpu`
//! (0.25, 0.5, 1, 2 or 4 vCPU), each serving up to `instance_concurrency`
//! requests at once, autoscaled between `min_instances` and `max_instances`
//! by the `[scaling]` policy. `job` starts one fresh task per event, which
//! exits after it (ECS run-task). A function or service may declare
//! `[batching]` (`max_batch_size`, `max_delay_ms`): waiting requests then ride
//! together in one `{"batch": [...]}` invocation. A `command` runtime must opt
//! in with `batch_payload = true`, since it has to understand that payload.
//!
//! A `runtime = "model"` function in `function` mode may set
//! `snap_start = "fork"`: its cold starts fork a template process that has
//! loaded and warmed the model, instead of spawning and loading anew.
//!
//! Unknown fields are refused, and every error names the file, the line and the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleExpression;

/// The name a manifest's `command` uses for virga's built-in runtime (the
/// one `runtime = "model"` runs). The platform resolves it to its own
/// executable, never by a lookup on PATH.
pub const BUILTIN_RUNTIME: &str = "virga-worker";

/// What an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Any program that speaks the AWS Lambda Runtime API.
    #[default]
    Command,
    /// The built-in model runtime (`virga-worker`) hosting the `[model]`.
    Model,
}

/// How instances of a function are run and billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Lambda-like: one request per instance at a time, per-ms billing.
    #[default]
    Function,
    /// Fargate-like: long-running tasks serving several requests at once,
    /// autoscaled on load, billed per second of task time.
    Service,
    /// Run-task: one fresh task per event, which exits after it; per-second
    /// billing with a one-minute minimum.
    Job,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Function => "function",
            Mode::Service => "service",
            Mode::Job => "job",
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "function" => Mode::Function,
            "service" => Mode::Service,
            "job" => Mode::Job,
            _ => return None,
        })
    }
}

/// Fargate's task CPU sizes (vCPU): the values `cpu` accepts.
pub const TASK_CPUS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0];

/// `[scaling]`: the autoscaler of a service (Knative KPA-like).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingSpec {
    /// Fraction of `instance_concurrency` the autoscaler aims to keep busy per task.
    #[serde(default = "defaults::target_utilization")]
    pub target_utilization: f64,
    /// Load is averaged over this window before scaling.
    #[serde(default = "defaults::stable_window_ms")]
    pub stable_window_ms: u64,
    /// A task is stopped only after fewer tasks were wanted for this long.
    #[serde(default = "defaults::scale_down_delay_ms")]
    pub scale_down_delay_ms: u64,
}

impl Default for ScalingSpec {
    fn default() -> Self {
        ScalingSpec {
            target_utilization: defaults::target_utilization(),
            stable_window_ms: defaults::stable_window_ms(),
            scale_down_delay_ms: defaults::scale_down_delay_ms(),
        }
    }
}

/// `[batching]`: gather waiting requests into one invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingSpec {
    /// Most requests in one invocation.
    pub max_batch_size: u32,
    /// Longest a request waits for others to join its batch.
    #[serde(default = "defaults::max_delay_ms")]
    pub max_delay_ms: u64,
    /// A `command` runtime declares that it understands `{"batch": [...]}`.
    #[serde(default)]
    pub batch_payload: bool,
}

/// `[keep_alive]`: the keep-alive policy of a `function` (without it, the
/// fixed `keep_alive_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum KeepAliveSpec {
    /// An idle instance stops `keep_alive_ms` after its last request. (A
    /// struct variant, so parameters that belong elsewhere are refused.)
    Fixed {},
    /// Shahrad et al.'s hybrid histogram: pre-warm before the predicted
    /// next request, keep as long as the idle times seen need.
    HybridHistogram(HistogramSpec),
    /// FaaSCache's greedy-dual: keep idle instances until memory is needed
    /// (`virga serve --max-memory-mb`), then stop the one of lowest
    /// frequency x cold-start cost / memory.
    GreedyDual(GreedyDualSpec),
}

/// The hybrid histogram policy's parameters; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramSpec {
    #[serde(default = "defaults::histogram_range_ms")]
    pub range_ms: u64,
    #[serde(default = "defaults::histogram_bin_ms")]
    pub bin_ms: u64,
    #[serde(default = "defaults::prewarm_percentile")]
    pub prewarm_percentile: f64,
    #[serde(default = "defaults::keep_alive_percentile")]
    pub keep_alive_percentile: f64,
    #[serde(default = "defaults::histogram_margin")]
    pub margin: f64,
    #[serde(default = "defaults::histogram_min_samples")]
    pub min_samples: u32,
    #[serde(default = "defaults::histogram_cv_threshold")]
    pub cv_threshold: f64,
    /// From this share of idle times beyond the range, instances stop at once.
    #[serde(default = "defaults::histogram_out_of_range")]
    pub out_of_range_share: f64,
    /// The window while the histogram is not representative (default: `range_ms`).
    #[serde(default)]
    pub fallback_ms: Option<u64>,
}

/// The greedy-dual policy's parameters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GreedyDualSpec {
    /// Also stop an instance idle this long.
    #[serde(default)]
    pub max_idle_ms: Option<u64>,
}

/// The `[model]` of a `runtime = "model"` function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub task: ModelTask,
    #[serde(default)]
    pub engine: ModelEngine,
    /// The model file, relative to the manifest's directory.
    pub path: String,
    /// Most rows per request.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: u32,
    /// Intra-op threads; default: the instance's vCPU share, at least 1.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Where a request's input comes from.
    #[serde(default)]
    pub input: ModelInput,
}

/// Where a model function's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelInput {
    /// The invocation's payload is the request (`{"image": ...}`,
    /// `{"instances": ...}`, `{"inputs": ...}`).
    #[default]
    Request,
    /// The invocation is an S3-shaped bucket notification and the request
    /// is the uploaded object: the platform attaches the object's bytes to
    /// the event (`Records[0].s3.object.contentBase64`), because a
    /// confined instance sees neither the network nor the data dir. An
    /// image for image classification, else the task's JSON request.
    Object,
}

impl ModelInput {
    /// The name manifests and `VIRGA_MODEL_INPUT` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelInput::Request => "request",
            ModelInput::Object => "object",
        }
    }
}

/// How a function's cold starts make an instance (Lambda's SnapStart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapStart {
    /// Spawn a fresh process, which loads the model.
    #[default]
    Off,
    /// Fork the function version's template, a process that has loaded
    /// and warmed the model and waits; the weights are shared copy-on-write.
    Fork,
}

impl SnapStart {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapStart::Off => "off",
            SnapStart::Fork => "fork",
        }
    }
}

/// What a model function's model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelTask {
    ImageClassification,
    TextEmbedding,
    TabularClassification,
    TabularRegression,
    Clustering,
    Decomposition,
}

impl ModelTask {
    /// The name manifests and `VIRGA_MODEL_TASK` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelTask::ImageClassification => "image-classification",
            ModelTask::TextEmbedding => "text-embedding",
            ModelTask::TabularClassification => "tabular-classification",
            ModelTask::TabularRegression => "tabular-regression",
            ModelTask::Clustering => "clustering",
            ModelTask::Decomposition => "decomposition",
        }
    }
}

/// Which engine runs a model function's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelEngine {
    /// Models trained by `virga models train` (linfa, smartcore).
    #[default]
    Classical,
    /// ONNX with tract, pure Rust, in every build.
    Tract,
    /// ONNX with onnxruntime: a build with `--features ort` and its library
    /// from `virga models pull --engine ort`.
    Ort,
}

impl ModelEngine {
    /// The name manifests and `VIRGA_MODEL_ENGINE` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelEngine::Classical => "classical",
            ModelEngine::Tract => "tract",
            ModelEngine::Ort => "ort",
        }
    }
}

/// A function, as declared by its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format (absent: 1), so the format can evolve.
    #[serde(default = "defaults::format")]
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub runtime: Runtime,
    /// Program and arguments; relative paths are relative to the manifest's directory.
    #[serde(default)]
    pub command: Vec<String>,
    /// The function's code: a directory relative to the manifest's, captured
    /// at deploy (default: the manifest's directory, without the manifests
    /// in it). Relative paths in `command` are relative to it.
    #[serde(default)]
    pub code: Option<String>,
    /// Passed to the runtime as `_HANDLER` (e.g. `echo` for `virga-worker`).
    #[serde(default)]
    pub handler: Option<String>,
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: u32,
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: u32,
    #[serde(default = "defaults::keep_alive_ms")]
    pub keep_alive_ms: u64,
    #[serde(default)]
    pub min_instances: u32,
    #[serde(default = "defaults::max_queue")]
    pub max_queue: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Size of the instance's `/tmp`, in MB (Lambda's 512..=10240).
    #[serde(default = "defaults::ephemeral_storage_mb")]
    pub ephemeral_storage_mb: u32,
    /// Asynchronous invocations: retries after the first failure (0..=10).
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Asynchronous invocations: events older than this are dead-lettered unrun.
    #[serde(default = "defaults::max_event_age_ms")]
    pub max_event_age_ms: u64,
    /// Asynchronous invocations: the first retry waits this long, each next one twice as long (with jitter).
    #[serde(default = "defaults::retry_delay_ms")]
    pub retry_delay_ms: u64,
    /// Where results of successful asynchronous invocations go: `queue:NAME` or `topic:NAME`.
    #[serde(default)]
    pub on_success: Option<String>,
    /// Where failed asynchronous events go besides the function's dead-letter queue.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// Event sources that invoke this function.
    #[serde(default)]
    pub triggers: Vec<TriggerSpec>,
    /// The model of a `runtime = "model"` function.
    #[serde(default)]
    pub model: Option<ModelSpec>,
    /// `function` (default), `service` or `job`.
    #[serde(default)]
    pub mode: Mode,
    /// Service and job: the task's vCPU (0.25, 0.5, 1, 2 or 4); the CPU quota follows it.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Service: requests one task serves at once (`AWS_LAMBDA_MAX_CONCURRENCY`).
    #[serde(default = "defaults::instance_concurrency")]
    pub instance_concurrency: u32,
    /// Service: most tasks the autoscaler may run.
    #[serde(default)]
    pub max_instances: Option<u32>,
    /// Service: the autoscaler's policy.
    #[serde(default)]
    pub scaling: Option<ScalingSpec>,
    /// Function or service: adaptive batching of waiting requests.
    #[serde(default)]
    pub batching: Option<BatchingSpec>,
    /// Function: the keep-alive policy (default: fixed, `keep_alive_ms`).
    #[serde(default)]
    pub keep_alive: Option<KeepAliveSpec>,
    /// Model functions: cold starts fork a loaded template (`"fork"`) or
    /// spawn (`"off"`, the default).
    #[serde(default)]
    pub snap_start: SnapStart,
}

/// An event source (`[[triggers]]` in the manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum TriggerSpec {
    /// Object uploads (and deletes) in a bucket, filtered by key prefix/suffix.
    Bucket {
        bucket: String,
        #[serde(default)]
        prefix: Option<String>,
        #[serde(default)]
        suffix: Option<String>,
        #[serde(default = "defaults::bucket_events")]
        events: Vec<BucketEvent>,
    },
    /// Messages published to a topic (fan-out: every subscriber gets each one).
    Topic { topic: String },
    /// Messages sent to a queue, delivered in batches (an event source mapping).
    Queue {
        queue: String,
        #[serde(default = "defaults::batch_size")]
        batch_size: u32,
        #[serde(default)]
        batch_window_ms: u64,
        /// Deliveries of a message before it goes to the dead-letter queue.
        #[serde(default = "defaults::max_receive")]
        max_receive: u32,
    },
    /// A rate(...) or cron(...) schedule (e.g. keep-warm pings).
    Schedule {
        /// Parsed when the manifest is, so a firing never parses it again.
        expression: ScheduleExpression,
        /// The event to send, as JSON; default: an EventBridge scheduled event.
        #[serde(default)]
        input: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BucketEvent {
    Put,
    Delete,
}

/// Where an asynchronous result goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Queue(String),
    Topic(String),
}

impl Destination {
    pub fn parse(s: &str) -> Option<Destination> {
        let (kind, name) = s.split_once(':')?;
        if !valid_resource_name(name) {
            return None;
        }
        match kind {
            "queue" => Some(Destination::Queue(name.to_string())),
            "topic" => Some(Destination::Topic(name.to_string())),
            _ => None,
        }
    }
}

/// Queue and topic names: 1 to 80 of a-z, A-Z, 0-9, '-' and '_' (SQS/SNS rules).
pub fn valid_resource_name(name: &str) -> bool {
    (1..=80).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Bucket names: 3 to 63 of a-z, 0-9, '.', '-', starting and ending alphanumeric (S3 rules).
pub fn valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

mod defaults {
    pub fn memory_mb() -> u32 {
        128
    }
    pub fn timeout_ms() -> u64 {
        3_000
    }
    pub fn max_concurrency() -> u32 {
        10
    }
    pub fn keep_alive_ms() -> u64 {
        600_000
    }
    pub fn max_queue() -> u32 {
        100
    }
    pub fn ephemeral_storage_mb() -> u32 {
        512
    }
    pub fn max_retries() -> u32 {
        2
    }
    pub fn max_event_age_ms() -> u64 {
        21_600_000
    }
    pub fn retry_delay_ms() -> u64 {
        60_000
    }
    pub fn bucket_events() -> Vec<super::BucketEvent> {
        vec![super::BucketEvent::Put]
    }
    pub fn batch_size() -> u32 {
        10
    }
    pub fn max_receive() -> u32 {
        3
    }
    pub fn format() -> u32 {
        super::MANIFEST_FORMAT
    }
    pub fn max_batch() -> u32 {
        1000
    }
    pub fn instance_concurrency() -> u32 {
        1
    }
    pub fn target_utilization() -> f64 {
        0.7
    }
    pub fn stable_window_ms() -> u64 {
        60_000
    }
    pub fn scale_down_delay_ms() -> u64 {
        30_000
    }
    pub fn max_delay_ms() -> u64 {
        5
    }
    pub fn histogram_range_ms() -> u64 {
        4 * 3_600_000
    }
    pub fn histogram_bin_ms() -> u64 {
        60_000
    }
    pub fn prewarm_percentile() -> f64 {
        5.0
    }
    pub fn keep_alive_percentile() -> f64 {
        99.0
    }
    pub fn histogram_margin() -> f64 {
        0.1
    }
    pub fn histogram_min_samples() -> u32 {
        5
    }
    pub fn histogram_cv_threshold() -> f64 {
        2.0
    }
    pub fn histogram_out_of_range() -> f64 {
        0.5
    }
}

/// Default `max_instances` of a service.
/// The manifest format this build reads.
pub const MANIFEST_FORMAT: u32 = 1;
pub const DEFAULT_MAX_INSTANCES: u32 = 10;
/// Most requests one service task may take at once.
pub const MAX_INSTANCE_CONCURRENCY: u32 = 256;
/// Largest `[batching] max_batch_size`.
pub const MAX_BATCH_SIZE: u32 = 1024;
/// Most instances one function may run at once (Lambda's default account
/// concurrency); `max_concurrency = 0` means "as many as the host allows", not more.
pub const MAX_CONCURRENCY: u32 = 1_000;
/// Most provisioned instances (`min_instances`): each is a process started at
/// deploy, so a manifest must not be able to fork the host to death.
pub const MAX_MIN_INSTANCES: u32 = 100;
/// Most service tasks (`max_instances`).
pub const MAX_INSTANCES: u32 = 1_000;
/// Most synchronous requests waiting for an instance (`max_queue`).
pub const MAX_QUEUE: u32 = 10_000;
/// Lambda's limit on all of a function's environment variables together (4 KB).
pub const MAX_ENV_BYTES: usize = 4 * 1024;

pub const MIN_MEMORY_MB: u32 = 128;
pub const MAX_MEMORY_MB: u32 = 10_240;
/// Lambda's maximum function timeout (15 minutes).
pub const MAX_TIMEOUT_MS: u64 = 900_000;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    /// {file}:{line}:{column}: {message}
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// {file}:{line}: field `{field}`: {message}
    #[error("{file}:{line}: field `{field}`: {message}")]
    Invalid {
        file: String,
        line: usize,
        field: &'static str,
        message: String,
    },
}

impl Manifest {
    /// Parses and validates a manifest. `source` names it in errors (a file path).
    pub fn parse(text: &str, source: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            if let Some(bad) = bad_schedule(text, source) {
                return bad;
            }
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            let message = e.message().trim();
            // Type errors point at a value: name the field it belongs to.
            let message = match key_on_line(text, line) {
                Some(key) if !message.contains(&format!("`{key}`")) => {
                    format!("field `{key}`: {message}")
                }
                _ => message.to_string(),
            };
            ManifestError::Syntax {
                file: source.to_string(),
                line,
                column,
                message,
            }
        })?;
        // A bad trigger is named by its own `[[triggers]]` table.
        for (i, t) in manifest.triggers.iter().enumerate() {
            t.validate()
                .map_err(|message| trigger_error(text, source, i, message))?;
        }
        manifest
            .validate()
            .map_err(|(field, message)| ManifestError::Invalid {
                file: source.to_string(),
                line: field_line(text, field),
                field,
                message,
            })?;
        Ok(manifest)
    }

    /// Checks the rules serde cannot express; returns the offending field.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.version != MANIFEST_FORMAT {
            return Err((
                "version",
                format!(
                    "manifest format {} is not one this virga reads (it reads {MANIFEST_FORMAT}): use a newer virga, or write version = {MANIFEST_FORMAT}",
                    self.version
                ),
            ));
        }
        if !valid_name(&self.name) {
            return Err((
                "name",
                format!(
                    "{:?} is not a valid function name: use 1 to 64 of a-z, A-Z, 0-9, '-' and '_'",
                    self.name
                ),
            ));
        }
        match self.runtime {
            Runtime::Command => {
                if self.command.is_empty() || self.command[0].is_empty() {
                    return Err((
                        "command",
                        "runtime \"command\" needs a program to run, e.g. command = [\"python3\", \"handler.py\"]".into(),
                    ));
                }
                if self.model.is_some() {
                    return Err(("model", "[model] needs runtime = \"model\"".into()));
                }
            }
            Runtime::Model => {
                let Some(m) = &self.model else {
                    return Err((
                        "runtime",
                        "runtime \"model\" needs a [model] table with task and path".into(),
                    ));
                };
                if !self.command.is_empty() {
                    return Err((
                        "command",
                        "runtime \"model\" runs the built-in model runtime: remove `command`"
                            .into(),
                    ));
                }
                if m.path.is_empty() {
                    return Err((
                        "path",
                        "the model file is missing: path = \"../models/iris-logistic.model\""
                            .into(),
                    ));
                }
                if m.max_batch == 0 {
                    return Err(("max_batch", "must be at least 1".into()));
                }
            }
        }
        if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&self.memory_mb) {
            return Err((
                "memory_mb",
                format!(
                    "{} is out of range: use {MIN_MEMORY_MB}..={MAX_MEMORY_MB}",
                    self.memory_mb
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err((
                "timeout_ms",
                format!(
                    "{} is out of range: use 1..={MAX_TIMEOUT_MS}",
                    self.timeout_ms
                ),
            ));
        }
        if self.max_concurrency > MAX_CONCURRENCY {
            return Err((
                "max_concurrency",
                format!(
                    "{} is out of range: use 0 (as many as the host allows) or 1..={MAX_CONCURRENCY}",
                    self.max_concurrency
                ),
            ));
        }
        if self.min_instances > MAX_MIN_INSTANCES {
            return Err((
                "min_instances",
                format!(
                    "{} is out of range: use 0..={MAX_MIN_INSTANCES} provisioned instances",
                    self.min_instances
                ),
            ));
        }
        if self.max_queue > MAX_QUEUE {
            return Err((
                "max_queue",
                format!("{} is out of range: use 0..={MAX_QUEUE}", self.max_queue),
            ));
        }
        if self.max_concurrency != 0 && self.min_instances > self.max_concurrency {
            return Err((
                "min_instances",
                format!(
                    "{} provisioned instances exceed max_concurrency = {}",
                    self.min_instances, self.max_concurrency
                ),
            ));
        }
        if let Some(code) = &self.code {
            let p = std::path::Path::new(code);
            if code.is_empty()
                || p.is_absolute()
                || p.components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err((
                    "code",
                    format!(
                        "{code:?} must be a directory inside the manifest's, e.g. code = \"src\""
                    ),
                ));
            }
        }
        if !(512..=10_240).contains(&self.ephemeral_storage_mb) {
            return Err((
                "ephemeral_storage_mb",
                format!(
                    "{} is out of range: use 512..=10240 (MB of /tmp)",
                    self.ephemeral_storage_mb
                ),
            ));
        }
        if self.max_retries > 10 {
            return Err((
                "max_retries",
                format!("{} is out of range: use 0..=10", self.max_retries),
            ));
        }
        if !(1_000..=21_600_000).contains(&self.max_event_age_ms) {
            return Err((
                "max_event_age_ms",
                format!(
                    "{} is out of range: use 1000..=21600000 (6 hours)",
                    self.max_event_age_ms
                ),
            ));
        }
        for (field, dest) in [
            ("on_success", &self.on_success),
            ("on_failure", &self.on_failure),
        ] {
            if let Some(d) = dest {
                if Destination::parse(d).is_none() {
                    return Err((
                        field,
                        format!("{d:?} is not a destination: use \"queue:NAME\" or \"topic:NAME\""),
                    ));
                }
            }
        }
        self.validate_mode()?;
        for t in &self.triggers {
            t.validate().map_err(|m| ("triggers", m))?;
        }
        if let Some(key) = self.env.keys().find(|k| !valid_env_key(k)) {
            return Err((
                "env",
                format!("{key:?} is not a valid environment variable name"),
            ));
        }
        if let Some(key) = self.env.keys().find(|k| is_reserved_env(k)) {
            return Err((
                "env",
                format!("{key:?} is reserved: the platform sets it for every instance"),
            ));
        }
        // A NUL cannot be passed to exec: refuse it here rather than fail every
        // invocation later with an error that blames `command`.
        if let Some((key, _)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err((
                "env",
                format!("the value of {key:?} contains a NUL byte, which no process environment can hold"),
            ));
        }
        if let Some(arg) = self
            .command
            .iter()
            .chain(self.handler.as_ref())
            .find(|a| a.contains('\0'))
        {
            return Err((
                "command",
                format!("{arg:?} contains a NUL byte, which no program argument can hold"),
            ));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_bytes > MAX_ENV_BYTES {
            return Err((
                "env",
                format!(
                    "the variables take {env_bytes} bytes together: Lambda's limit is {MAX_ENV_BYTES}; put large values in a file of the function's code"
                ),
            ));
        }
        Ok(())
    }
}

impl Manifest {
    /// The rules of `[keep_alive]`.
    fn validate_keep_alive(&self) -> Result<(), (&'static str, String)> {
        const WEEK_MS: u64 = 7 * 24 * 3_600_000;
        let Some(k) = &self.keep_alive else {
            return Ok(());
        };
        if self.mode != Mode::Function {
            return Err((
                "keep_alive",
                format!(
                    "mode \"{}\" keeps no idle instances by keep-alive: [keep_alive] needs mode = \"function\"",
                    self.mode.as_str()
                ),
            ));
        }
        match k {
            KeepAliveSpec::Fixed {} => {}
            KeepAliveSpec::HybridHistogram(h) => {
                if !(1_000..=3_600_000).contains(&h.bin_ms) {
                    return Err((
                        "bin_ms",
                        format!("{} is out of range: use 1000..=3600000", h.bin_ms),
                    ));
                }
                if h.range_ms < h.bin_ms || h.range_ms > WEEK_MS || h.range_ms / h.bin_ms > 100_000
                {
                    return Err((
                        "range_ms",
                        format!("{} is out of range: at least bin_ms, at most a week ({WEEK_MS}) and 100000 bins", h.range_ms),
                    ));
                }
                let (head, tail) = (h.prewarm_percentile, h.keep_alive_percentile);
                if !(head >= 0.0 && head < tail && tail <= 100.0) {
                    return Err((
                        "keep_alive_percentile",
                        format!("prewarm_percentile {head} and keep_alive_percentile {tail}: use 0 <= prewarm < keep_alive <= 100"),
                    ));
                }
                if !(0.0..1.0).contains(&h.margin) {
                    return Err((
                        "margin",
                        format!("{} is out of range: use a fraction in [0, 1)", h.margin),
                    ));
                }
                if h.min_samples == 0 {
                    return Err(("min_samples", "must be at least 1".into()));
                }
                if !(h.cv_threshold.is_finite() && h.cv_threshold >= 0.0) {
                    return Err((
                        "cv_threshold",
                        format!(
                            "{} is not a coefficient of variation: use 0 or more",
                            h.cv_threshold
                        ),
                    ));
                }
                if !(h.out_of_range_share > 0.0 && h.out_of_range_share <= 1.0) {
                    return Err((
                        "out_of_range_share",
                        format!(
                            "{} is out of range: use a fraction in (0, 1]",
                            h.out_of_range_share
                        ),
                    ));
                }
                if h.fallback_ms.is_some_and(|f| f > WEEK_MS) {
                    return Err(("fallback_ms", format!("is out of range: use 0..={WEEK_MS}")));
                }
            }
            KeepAliveSpec::GreedyDual(g) => {
                if g.max_idle_ms.is_some_and(|m| m == 0 || m > WEEK_MS) {
                    return Err(("max_idle_ms", format!("is out of range: use 1..={WEEK_MS}")));
                }
            }
        }
        Ok(())
    }

    /// The rules of `mode`, `cpu`, `instance_concurrency`, `max_instances`,
    /// `[scaling]` and `[batching]`.
    fn validate_mode(&self) -> Result<(), (&'static str, String)> {
        let mode = self.mode.as_str();
        match (self.mode, self.cpu) {
            (Mode::Function, Some(_)) => {
                return Err((
                    "cpu",
                    "mode \"function\" gets memory_mb / 1769 vCPU: remove `cpu`, or use mode = \"service\" or \"job\"".into(),
                ))
            }
            (Mode::Service | Mode::Job, None) => {
                return Err((
                    "mode",
                    format!("mode \"{mode}\" needs an explicit cpu: one of 0.25, 0.5, 1, 2, 4"),
                ))
            }
            (Mode::Service | Mode::Job, Some(c)) if !TASK_CPUS.contains(&c) => {
                return Err((
                    "cpu",
                    format!("{c} is not a task size: use one of 0.25, 0.5, 1, 2, 4 (vCPU)"),
                ))
            }
            _ => {}
        }
        if self.mode != Mode::Service {
            if self.instance_concurrency != 1 {
                return Err((
                    "instance_concurrency",
                    format!("mode \"{mode}\" runs one request per instance: instance_concurrency needs mode = \"service\""),
                ));
            }
            if self.max_instances.is_some() {
                return Err((
                    "max_instances",
                    format!("mode \"{mode}\" is capped by max_concurrency: max_instances needs mode = \"service\""),
                ));
            }
            if self.scaling.is_some() {
                return Err(("scaling", "[scaling] needs mode = \"service\"".into()));
            }
        }
        if self.mode == Mode::Service {
            if !(1..=MAX_INSTANCE_CONCURRENCY).contains(&self.instance_concurrency) {
                return Err((
                    "instance_concurrency",
                    format!(
                        "{} is out of range: use 1..={MAX_INSTANCE_CONCURRENCY}",
                        self.instance_concurrency
                    ),
                ));
            }
            let max = self.max_instances();
            if !(1..=MAX_INSTANCES).contains(&max) {
                return Err((
                    "max_instances",
                    format!("{max} is out of range: use 1..={MAX_INSTANCES}"),
                ));
            }
            if self.min_instances > max {
                return Err((
                    "min_instances",
                    format!("{} tasks exceed max_instances = {max}", self.min_instances),
                ));
            }
            if let Some(s) = &self.scaling {
                if !(s.target_utilization > 0.0 && s.target_utilization <= 1.0) {
                    return Err((
                        "target_utilization",
                        format!(
                            "{} is out of range: use a fraction in (0, 1]",
                            s.target_utilization
                        ),
                    ));
                }
                if !(100..=3_600_000).contains(&s.stable_window_ms) {
                    return Err((
                        "stable_window_ms",
                        format!("{} is out of range: use 100..=3600000", s.stable_window_ms),
                    ));
                }
                if s.scale_down_delay_ms > 3_600_000 {
                    return Err((
                        "scale_down_delay_ms",
                        format!("{} is out of range: use 0..=3600000", s.scale_down_delay_ms),
                    ));
                }
            }
        }
        self.validate_keep_alive()?;
        if self.mode == Mode::Job && self.min_instances != 0 {
            return Err((
                "min_instances",
                "mode \"job\" starts a fresh task per event: min_instances must be 0".into(),
            ));
        }
        if let Some(b) = &self.batching {
            if self.mode == Mode::Job {
                return Err((
                    "batching",
                    "mode \"job\" runs one event per task: remove [batching]".into(),
                ));
            }
            if !(1..=MAX_BATCH_SIZE).contains(&b.max_batch_size) {
                return Err((
                    "max_batch_size",
                    format!(
                        "{} is out of range: use 1..={MAX_BATCH_SIZE}",
                        b.max_batch_size
                    ),
                ));
            }
            if b.max_delay_ms > 10_000 {
                return Err((
                    "max_delay_ms",
                    format!("{} is out of range: use 0..=10000", b.max_delay_ms),
                ));
            }
            if self.runtime == Runtime::Command && !b.batch_payload {
                return Err((
                    "batching",
                    "a command runtime receives batches as {\"batch\": [event, ...]} and must answer {\"batch\": [response, ...]}: set batch_payload = true to declare that it does".into(),
                ));
            }
            if self.runtime == Runtime::Model && b.batch_payload {
                return Err((
                    "batch_payload",
                    "the model runtime always understands batches: remove batch_payload".into(),
                ));
            }
        }
        if self.snap_start == SnapStart::Fork {
            if self.runtime != Runtime::Model {
                return Err((
                    "snap_start",
                    "snap_start = \"fork\" forks the built-in model runtime: it needs runtime = \"model\"".into(),
                ));
            }
            if self.mode != Mode::Function {
                return Err((
                    "snap_start",
                    format!(
                        "snap_start = \"fork\" is for mode \"function\"; a {} task loads its model once anyway: remove snap_start",
                        self.mode.as_str()
                    ),
                ));
            }
            if self.model.as_ref().map(|m| m.engine) == Some(ModelEngine::Ort) {
                return Err((
                    "snap_start",
                    "engine \"ort\" is not fork-safe (an onnxruntime session owns thread pools a forked child would not have): use engine = \"tract\", or remove snap_start".into(),
                ));
            }
        }
        Ok(())
    }

    /// Service: the most tasks at once.
    pub fn max_instances(&self) -> u32 {
        self.max_instances.unwrap_or(DEFAULT_MAX_INSTANCES)
    }

    /// The CPU share of one instance: `cpu` in service and job mode, else
    /// Lambda's `memory_mb / 1769`; capped by the host either way.
    pub fn vcpu(&self, host_cores: usize) -> f64 {
        match (self.mode, self.cpu) {
            (Mode::Service | Mode::Job, Some(c)) => c.min(host_cores.max(1) as f64),
            _ => crate::billing::vcpu_for_memory(self.memory_mb, host_cores),
        }
    }

    /// Requests one instance takes at once (1 outside service mode).
    pub fn concurrency_per_instance(&self) -> usize {
        match self.mode {
            Mode::Service => self.instance_concurrency.max(1) as usize,
            _ => 1,
        }
    }
}

impl TriggerSpec {
    fn validate(&self) -> Result<(), String> {
        match self {
            TriggerSpec::Bucket { bucket, events, .. } => {
                if !valid_bucket_name(bucket) {
                    return Err(format!(
                        "bucket {bucket:?}: use 3 to 63 of a-z, 0-9, '.', '-'"
                    ));
                }
                if events.is_empty() {
                    return Err(format!(
                        "bucket {bucket:?}: events must name \"put\", \"delete\" or both"
                    ));
                }
            }
            TriggerSpec::Topic { topic } => {
                if !valid_resource_name(topic) {
                    return Err(format!(
                        "topic {topic:?}: use 1 to 80 of a-z, A-Z, 0-9, '-', '_'"
                    ));
                }
            }
            TriggerSpec::Queue {
                queue,
                batch_size,
                batch_window_ms,
                max_receive,
            } => {
                if !valid_resource_name(queue) {
                    return Err(format!(
                        "queue {queue:?}: use 1 to 80 of a-z, A-Z, 0-9, '-', '_'"
                    ));
                }
                if !(1..=10_000).contains(batch_size) {
                    return Err(format!(
                        "queue {queue:?}: batch_size {batch_size} is out of range 1..=10000"
                    ));
                }
                if *batch_window_ms > 300_000 {
                    return Err(format!("queue {queue:?}: batch_window_ms {batch_window_ms} is over 300000 (5 minutes)"));
                }
                if *max_receive == 0 {
                    return Err(format!("queue {queue:?}: max_receive must be at least 1"));
                }
            }
            TriggerSpec::Schedule { input, .. } => {
                if let Some(i) = input {
                    serde_json::from_str::<serde_json::Value>(i)
                        .map_err(|e| format!("schedule input is not JSON: {e}"))?;
                }
            }
        }
        Ok(())
    }
}

/// A schedule expression that does not parse, named by its own
/// `[[triggers]]` table: serde's error for it points at the whole list.
fn bad_schedule(text: &str, source: &str) -> Option<ManifestError> {
    let table: toml::Table = toml::from_str(text).ok()?;
    let triggers = table.get("triggers")?.as_array()?;
    triggers.iter().enumerate().find_map(|(i, t)| {
        if t.get("type")?.as_str()? != "schedule" {
            return None;
        }
        let e = ScheduleExpression::parse(t.get("expression")?.as_str()?).err()?;
        Some(trigger_error(text, source, i, e.to_string()))
    })
}

/// An error in the `i`th trigger, at its own `[[triggers]]` table.
fn trigger_error(text: &str, source: &str, i: usize, message: String) -> ManifestError {
    ManifestError::Invalid {
        file: source.to_string(),
        line: nth_table_line(text, "triggers", i).unwrap_or_else(|| field_line(text, "triggers")),
        field: "triggers",
        message,
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_env_key(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Variables the platform owns, as Lambda reserves them.
fn is_reserved_env(key: &str) -> bool {
    key.starts_with("AWS_LAMBDA_") || key == "_HANDLER" || key == "LAMBDA_TASK_ROOT"
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The key assigned on a 1-based line (`key = value`), if any.
fn key_on_line(text: &str, line: usize) -> Option<&str> {
    let (key, _) = text.lines().nth(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.contains(char::is_whitespace)).then_some(key)
}

/// The line on which `field` is assigned (or its `[field]` table opens), or 1
/// when it is absent (a default was used).
fn field_line(text: &str, field: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
                || l.trim_end() == format!("[{field}]")
        })
        .map_or(1, |i| i + 1)
}

/// The line of the `n`th (0-based) `[[table]]` header, if there is one.
fn nth_table_line(text: &str, table: &str, n: usize) -> Option<usize> {
    let header = format!("[[{table}]]");
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_trigger_is_reported_at_its_own_table() {
        let text = "name = \"a\"\ncommand = [\"x\"]\n\n[[triggers]]\ntype = \"topic\"\ntopic = \"t\"\n\n[[triggers]]\ntype = \"schedule\"\nexpression = \"often\"\n";
        match Manifest::parse(text, "a.toml") {
            Err(e @ ManifestError::Invalid { .. }) => {
                let ManifestError::Invalid { line, field, .. } = &e else {
                    unreachable!()
                };
                assert_eq!((*line, *field), (8, "triggers"), "{e}");
                assert!(
                    e.to_string().starts_with("a.toml:8: field `triggers`"),
                    "{e}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_format_version_defaults_to_1_and_a_newer_one_is_refused() {
        let m = Manifest::parse("name = \"a\"\ncommand = [\"x\"]\n", "a.toml").unwrap();
        assert_eq!(m.version, 1);
        assert!(
            Manifest::parse("version = 1\nname = \"a\"\ncommand = [\"x\"]\n", "a.toml").is_ok()
        );
        match Manifest::parse("version = 2\nname = \"a\"\ncommand = [\"x\"]\n", "a.toml") {
            Err(ManifestError::Invalid {
                line,
                field,
                message,
                ..
            }) => {
                assert_eq!((line, field), (1, "version"));
                assert!(message.contains("newer virga"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    const ECHO: &str = r#"
name = "echo"
command = ["python3", "handler.py"]
memory_mb = 512
env = { GREETING = "hi" }
"#;

    #[test]
    fn parses_with_lambda_like_defaults() {
        let m = Manifest::parse(ECHO, "echo.toml").unwrap();
        assert_eq!(m.name, "echo");
        assert_eq!(m.runtime, Runtime::Command);
        assert_eq!(m.memory_mb, 512);
        assert_eq!(m.timeout_ms, 3000);
        assert_eq!(m.keep_alive_ms, 600_000);
        assert_eq!(m.max_queue, 100);
        assert_eq!(m.env["GREETING"], "hi");
    }

    #[test]
    fn keep_alive_policies_parse_with_the_papers_defaults_and_are_checked() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n";
        let m = Manifest::parse(base, "a.toml").unwrap();
        assert_eq!(m.keep_alive, None, "keep_alive_ms alone: fixed");
        let m = Manifest::parse(
            &format!("{base}[keep_alive]\npolicy = \"fixed\"\n"),
            "a.toml",
        )
        .unwrap();
        assert_eq!(m.keep_alive, Some(KeepAliveSpec::Fixed {}));
        let m = Manifest::parse(
            &format!("{base}[keep_alive]\npolicy = \"hybrid-histogram\"\nrange_ms = 7200000\n"),
            "a.toml",
        )
        .unwrap();
        let Some(KeepAliveSpec::HybridHistogram(h)) = &m.keep_alive else {
            panic!("{:?}", m.keep_alive)
        };
        assert_eq!(
            (h.range_ms, h.bin_ms, h.min_samples),
            (7_200_000, 60_000, 5)
        );
        assert_eq!(
            (h.prewarm_percentile, h.keep_alive_percentile, h.margin),
            (5.0, 99.0, 0.1)
        );
        let m = Manifest::parse(
            &format!("{base}[keep_alive]\npolicy = \"greedy-dual\"\nmax_idle_ms = 60000\n"),
            "a.toml",
        )
        .unwrap();
        assert_eq!(
            m.keep_alive,
            Some(KeepAliveSpec::GreedyDual(GreedyDualSpec {
                max_idle_ms: Some(60_000)
            }))
        );
        let refused = |extra: &str| {
            Manifest::parse(&format!("{base}{extra}"), "a.toml")
                .unwrap_err()
                .to_string()
        };
        let e = refused("[keep_alive]\npolicy = \"lru\"\n");
        assert!(e.contains("unknown variant"), "{e}");
        let e = refused("[keep_alive]\npolicy = \"greedy-dual\"\nrange_ms = 1\n");
        assert!(e.contains("range_ms"), "{e}");
        let e = refused("[keep_alive]\npolicy = \"fixed\"\nmax_idle_ms = 1\n");
        assert!(e.contains("max_idle_ms"), "{e}");
        let e = refused("[keep_alive]\npolicy = \"hybrid-histogram\"\nprewarm_percentile = 99\n");
        assert!(
            e.contains("a.toml:5: field `keep_alive_percentile`")
                || e.contains("prewarm_percentile 99"),
            "{e}"
        );
        let e = refused("[keep_alive]\npolicy = \"hybrid-histogram\"\nbin_ms = 10\n");
        assert!(e.starts_with("a.toml:5: field `bin_ms`"), "{e}");
        let e = refused("mode = \"job\"\ncpu = 1\n[keep_alive]\npolicy = \"greedy-dual\"\n");
        assert!(e.contains("needs mode = \"function\""), "{e}");
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let text = "name = \"a\"\ncommand = [\"x\"]\nmemroy_mb = 512\n";
        let err = Manifest::parse(text, "fn.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("fn.toml:3:"), "{msg}");
        assert!(msg.contains("memroy_mb"), "{msg}");
    }

    #[test]
    fn out_of_range_memory_names_its_line() {
        let text = "name = \"a\"\ncommand = [\"x\"]\nmemory_mb = 64\n";
        let err = Manifest::parse(text, "fn.toml").unwrap_err();
        assert_eq!(
            err,
            ManifestError::Invalid {
                file: "fn.toml".into(),
                line: 3,
                field: "memory_mb",
                message: "64 is out of range: use 128..=10240".into()
            }
        );
    }

    #[test]
    fn rejects_bad_names_missing_command_and_reserved_env() {
        for (text, field) in [
            ("name = \"a b\"\ncommand = [\"x\"]", "name"),
            ("name = \"\"\ncommand = [\"x\"]", "name"),
            ("name = \"a\"", "command"),
            (
                "name = \"a\"\ncommand = [\"x\"]\ntimeout_ms = 0",
                "timeout_ms",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nmax_concurrency = 1\nmin_instances = 2",
                "min_instances",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nenv = { AWS_LAMBDA_RUNTIME_API = \"x\" }",
                "env",
            ),
            (
                "name = \"a\"\ncommand = [\"x\"]\nenv = { \"1A\" = \"x\" }",
                "env",
            ),
        ] {
            match Manifest::parse(text, "t.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected invalid {field}, got {other:?}"),
            }
        }
        let long = format!("name = \"{}\"\ncommand = [\"x\"]", "a".repeat(65));
        assert!(Manifest::parse(&long, "t.toml").is_err());
    }

    #[test]
    fn refuses_limits_that_would_exhaust_the_host() {
        for (extra, field) in [
            ("max_concurrency = 0\nmin_instances = 200", "min_instances"),
            (
                "max_concurrency = 0\nmin_instances = 4000000000",
                "min_instances",
            ),
            ("max_queue = 4294967295", "max_queue"),
            ("max_concurrency = 100000", "max_concurrency"),
            (
                "mode = \"service\"\ncpu = 1\nmax_instances = 5000",
                "max_instances",
            ),
        ] {
            let text = format!("name = \"a\"\ncommand = [\"x\"]\n{extra}");
            match Manifest::parse(&text, "t.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{text}"),
                other => panic!("{text}: expected invalid {field}, got {other:?}"),
            }
        }
        let edge = format!(
            "name = \"a\"\ncommand = [\"x\"]\nmax_concurrency = 0\nmin_instances = {MAX_MIN_INSTANCES}\nmax_queue = {MAX_QUEUE}"
        );
        Manifest::parse(&edge, "t.toml").unwrap();
    }

    #[test]
    fn refuses_env_and_arguments_a_process_cannot_hold() {
        let huge = "v".repeat(128 * 1024);
        for (extra, field) in [
            ("env = { K = \"a\\u0000b\" }".to_string(), "env"),
            (format!("env = {{ K = \"{huge}\" }}"), "env"),
            ("handler = \"h\\u0000\"".to_string(), "command"),
        ] {
            let text = format!("name = \"a\"\ncommand = [\"x\"]\n{extra}");
            match Manifest::parse(&text, "t.toml") {
                Err(ManifestError::Invalid {
                    field: f, message, ..
                }) => {
                    assert_eq!(f, field, "{message}");
                    assert!(!message.contains(&huge), "the message echoes the value");
                }
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
        let text = "name = \"a\"\ncommand = [\"x\\u0000\"]";
        assert!(Manifest::parse(text, "t.toml").is_err());
    }

    #[test]
    fn triggers_and_async_settings_parse_and_validate() {
        let text = r#"
name = "thumbs"
command = ["x"]
max_retries = 1
retry_delay_ms = 100
on_success = "queue:done"
[[triggers]]
type = "bucket"
bucket = "uploads"
prefix = "images/"
[[triggers]]
type = "topic"
topic = "batches"
[[triggers]]
type = "queue"
queue = "jobs"
batch_size = 5
batch_window_ms = 50
[[triggers]]
type = "schedule"
expression = "rate(1 minute)"
input = '{"warm": true}'
"#;
        let m = Manifest::parse(text, "t.toml").unwrap();
        assert_eq!(m.triggers.len(), 4);
        assert_eq!(
            m.triggers[0],
            TriggerSpec::Bucket {
                bucket: "uploads".into(),
                prefix: Some("images/".into()),
                suffix: None,
                events: vec![BucketEvent::Put]
            }
        );
        // The schedule is parsed with the manifest, and written back as it
        // was written (the API's JSON, a manifest rewritten as TOML).
        let TriggerSpec::Schedule { expression, .. } = &m.triggers[3] else {
            panic!("{:?}", m.triggers[3]);
        };
        assert_eq!(
            expression.schedule(),
            &crate::schedule::Schedule::Rate { every_ms: 60_000 }
        );
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["triggers"][3]["expression"], "rate(1 minute)");
        let back: Manifest = serde_json::from_value(json).unwrap();
        assert_eq!(
            Manifest::parse(&toml::to_string(&back).unwrap(), "t.toml").unwrap(),
            m
        );
        assert_eq!(
            Destination::parse("queue:done"),
            Some(Destination::Queue("done".into()))
        );
        for (bad, field) in [
            (
                "[[triggers]]\ntype = \"bucket\"\nbucket = \"Bad_Bucket\"",
                "triggers",
            ),
            (
                "[[triggers]]\ntype = \"schedule\"\nexpression = \"often\"",
                "triggers",
            ),
            (
                "[[triggers]]\ntype = \"queue\"\nqueue = \"q\"\nbatch_size = 0",
                "triggers",
            ),
            ("on_success = \"lambda:x\"", "on_success"),
            ("max_retries = 11", "max_retries"),
        ] {
            let text = format!("name = \"a\"\ncommand = [\"x\"]\n{bad}\n");
            match Manifest::parse(&text, "t.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let unknown = "name = \"a\"\ncommand = [\"x\"]\n[[triggers]]\ntype = \"topic\"\ntopic = \"t\"\nbogus = 1\n";
        assert!(Manifest::parse(unknown, "t.toml")
            .unwrap_err()
            .to_string()
            .contains("bogus"));
    }

    #[test]
    fn a_misspelt_task_or_engine_is_refused_at_its_line() {
        let ok = "name = \"iris\"\nruntime = \"model\"\n[model]\ntask = \"tabular-classification\"\nengine = \"tract\"\npath = \"m.onnx\"\n";
        let m = Manifest::parse(ok, "t.toml").unwrap();
        let model = m.model.unwrap();
        assert_eq!(model.task, ModelTask::TabularClassification);
        assert_eq!(model.engine, ModelEngine::Tract);
        for (bad, line, want) in [
            (ok.replace("tabular-classification", "poetry"), 4, "`task`"),
            (ok.replace("\"tract\"", "\"trakt\""), 5, "`engine`"),
        ] {
            match Manifest::parse(&bad, "t.toml") {
                Err(ManifestError::Syntax {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{message}");
                    assert!(message.contains(want), "{message}");
                    assert!(message.contains("unknown variant"), "{message}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn model_functions_need_a_model_table_and_no_command() {
        let ok = "name = \"iris\"\nruntime = \"model\"\n[model]\ntask = \"tabular-classification\"\npath = \"m.model\"\n";
        let forked = Manifest::parse(&format!("snap_start = \"fork\"\n{ok}"), "m.toml").unwrap();
        assert_eq!(forked.snap_start, SnapStart::Fork);
        assert_eq!(
            Manifest::parse(ok, "m.toml").unwrap().snap_start,
            SnapStart::Off
        );
        for (text, needle) in [
            (
                "snap_start = \"fork\"\nname = \"e\"\ncommand = [\"x\"]\n".to_string(),
                "runtime = \"model\"",
            ),
            (
                format!("snap_start = \"fork\"\nmode = \"service\"\ncpu = 1\n{ok}"),
                "mode \"function\"",
            ),
            (
                format!(
                    "snap_start = \"fork\"\n{}",
                    ok.replace("path =", "engine = \"ort\"\npath =")
                ),
                "not fork-safe",
            ),
        ] {
            let err = Manifest::parse(&text, "m.toml").unwrap_err().to_string();
            assert!(err.contains("snap_start") && err.contains(needle), "{err}");
        }
        let m = Manifest::parse(ok, "t.toml").unwrap();
        assert_eq!(m.runtime, Runtime::Model);
        assert_eq!(m.model.as_ref().unwrap().engine, ModelEngine::Classical);
        assert_eq!(m.model.as_ref().unwrap().max_batch, 1000);
        for (bad, field) in [
            ("name = \"a\"\nruntime = \"model\"\n", "runtime"),
            (
                &ok.replace(
                    "runtime = \"model\"\n",
                    "runtime = \"model\"\ncommand = [\"x\"]\n",
                )[..],
                "command",
            ),
        ] {
            match Manifest::parse(bad, "t.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn modes_parse_with_their_settings() {
        let m = Manifest::parse(ECHO, "t.toml").unwrap();
        assert_eq!(m.mode, Mode::Function);
        assert_eq!(m.concurrency_per_instance(), 1);
        assert!((m.vcpu(8) - 512.0 / 1769.0).abs() < 1e-9);
        let svc = "name = \"s\"\ncommand = [\"x\"]\nmode = \"service\"\ncpu = 2\nmemory_mb = 4096\ninstance_concurrency = 4\nmin_instances = 1\nmax_instances = 3\n[scaling]\ntarget_utilization = 0.5\n[batching]\nmax_batch_size = 8\nbatch_payload = true\n";
        let m = Manifest::parse(svc, "t.toml").unwrap();
        assert_eq!(m.mode, Mode::Service);
        assert_eq!(m.vcpu(8), 2.0);
        assert_eq!(m.vcpu(1), 1.0);
        assert_eq!(m.concurrency_per_instance(), 4);
        assert_eq!(m.max_instances(), 3);
        let s = m.scaling.as_ref().unwrap();
        assert_eq!((s.target_utilization, s.stable_window_ms), (0.5, 60_000));
        assert_eq!(m.batching.as_ref().unwrap().max_delay_ms, 5);
        let job = "name = \"j\"\ncommand = [\"x\"]\nmode = \"job\"\ncpu = 0.25\n";
        assert_eq!(Manifest::parse(job, "t.toml").unwrap().mode, Mode::Job);
        for m in [Mode::Function, Mode::Service, Mode::Job] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
    }

    #[test]
    fn mode_rules_name_their_field_and_line() {
        let base = "name = \"a\"\ncommand = [\"x\"]\n";
        for (bad, field, line) in [
            ("cpu = 1\n", "cpu", 3),
            ("mode = \"service\"\n", "mode", 3),
            ("mode = \"service\"\ncpu = 3\n", "cpu", 4),
            ("instance_concurrency = 4\n", "instance_concurrency", 3),
            ("max_instances = 2\n", "max_instances", 3),
            (
                "mode = \"job\"\ncpu = 1\nmin_instances = 1\n",
                "min_instances",
                5,
            ),
            (
                "mode = \"service\"\ncpu = 1\nmax_instances = 1\nmin_instances = 2\n",
                "min_instances",
                6,
            ),
            (
                "mode = \"service\"\ncpu = 1\n[scaling]\ntarget_utilization = 1.5\n",
                "target_utilization",
                6,
            ),
            ("[scaling]\n", "scaling", 3),
            ("[batching]\nmax_batch_size = 8\n", "batching", 3),
            (
                "[batching]\nmax_batch_size = 0\nbatch_payload = true\n",
                "max_batch_size",
                4,
            ),
            (
                "mode = \"job\"\ncpu = 1\n[batching]\nmax_batch_size = 2\nbatch_payload = true\n",
                "batching",
                5,
            ),
        ] {
            let text = format!("{base}{bad}");
            match Manifest::parse(&text, "t.toml") {
                Err(ManifestError::Invalid {
                    field: f, line: l, ..
                }) => {
                    assert_eq!((f, l), (field, line), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        let unknown =
            format!("{base}[batching]\nmax_batch_size = 2\nbatch_payload = true\nmax_wait = 1\n");
        let err = Manifest::parse(&unknown, "t.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:") && err.contains("max_wait"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_carry_position() {
        let err = Manifest::parse("name = \"a\"\ncommand = [\n", "bad.toml").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line, .. } if line >= 2),
            "{err}"
        );
        let err = Manifest::parse("name = 5\ncommand=[\"x\"]", "bad.toml").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line: 1, .. }),
            "{err}"
        );
        let err = Manifest::parse("name = \"a\"\ncommand = \"x\"", "bad.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad.toml:2:11: field `command`: "),
            "{err}"
        );
    }
}
