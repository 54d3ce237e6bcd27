//! The contract between the platform and its built-in runtime (`virga
//! worker`), defined once for both sides: what a model instance is told in
//! its environment, and how a batch travels.
//!
//! A batch is delivered as `{"batch": [event, ...]}` with the
//! [`BATCH_SIZE_HEADER`] on `invocation/next`, and answered with
//! `{"batch": [response, ...], "errors": [null | {"errorType", "errorMessage"}, ...]}`
//! in the same order.

/// The model file (an absolute path).
pub const MODEL_PATH: &str = "VIRGA_MODEL_PATH";
/// The engine, by [`crate::ModelEngine::as_str`].
pub const MODEL_ENGINE: &str = "VIRGA_MODEL_ENGINE";
/// The task, by [`crate::ModelTask::as_str`].
pub const MODEL_TASK: &str = "VIRGA_MODEL_TASK";
/// Most rows per request.
pub const MODEL_MAX_BATCH: &str = "VIRGA_MODEL_MAX_BATCH";
/// Intra-op threads for engines with a thread pool.
pub const MODEL_THREADS: &str = "VIRGA_MODEL_THREADS";
/// Where the request comes from, by [`crate::manifest::ModelInput::as_str`].
pub const MODEL_INPUT: &str = "VIRGA_MODEL_INPUT";
/// The field of an S3 notification's `s3.object` that carries the object's
/// bytes (base64) to a `[model] input = "object"` function.
pub const OBJECT_CONTENT_FIELD: &str = "contentBase64";
/// Set instead of [`OBJECT_CONTENT_FIELD`] when the platform could not
/// attach the object (deleted before delivery, too large): why.
pub const OBJECT_CONTENT_ERROR_FIELD: &str = "contentError";

/// On `invocation/next`: how many events the `{"batch": [...]}` holds.
pub const BATCH_SIZE_HEADER: &str = "Virga-Batch-Size";
/// The list of events (and of responses) of a batch.
pub const BATCH_FIELD: &str = "batch";
/// Per-member errors of a batch response, `null` where a member succeeded.
pub const BATCH_ERRORS_FIELD: &str = "errors";

/// Set to [`SNAP_START_TEMPLATE`] in a template's environment
/// (`snap_start = "fork"`): load and warm the model, then fork instances on
/// the platform's orders instead of serving invocations.
pub const SNAP_START: &str = "VIRGA_SNAP_START";
/// The value of [`SNAP_START`] that makes a template.
pub const SNAP_START_TEMPLATE: &str = "template";
/// A template's long poll for its next order, beside the Runtime API:
/// answered with a [`TemplateOrder`].
pub const TEMPLATE_NEXT_PATH: &str = "/2018-06-01/virga/template/next";
/// Where a template reports a fork (a [`Forked`]); answered 204 once the
/// platform has put the child in its cgroup, when the child may go on.
pub const TEMPLATE_FORKED_PATH: &str = "/2018-06-01/virga/template/forked";

/// What a template does next.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum TemplateOrder {
    Fork(ForkOrder),
    /// Let a child forked with [`ForkOrder::hold`] go on.
    Release {
        id: String,
    },
}

/// One instance to fork: its id, its own Runtime API address and what it
/// sets in its environment before it polls.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForkOrder {
    pub id: String,
    pub runtime_api: String,
    pub env: Vec<(String, String)>,
    /// Once placed, the child waits for a [`TemplateOrder::Release`] of its
    /// id instead of going on at once: a spare, forked and placed ahead of
    /// the cold start that will take it.
    #[serde(default)]
    pub hold: bool,
}

/// A template's report of one fork: the child's pid as the template sees it
/// (inside its pid namespace when it is confined).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Forked {
    pub id: String,
    pub pid: i32,
}
