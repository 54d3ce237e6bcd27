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
