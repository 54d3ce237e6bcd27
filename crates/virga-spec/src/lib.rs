//! The vocabulary every other virga crate speaks: function manifests, invocation
//! records, the billing rules that turn durations into billed time, and the
//! pricing profiles that turn billed time into cost.
//!
//! This crate is pure: no I/O beyond what its callers hand it, no async runtime.
//! Manifests are parsed from text the caller read; records are plain data.

pub mod api;
pub mod billing;
pub mod contract;
pub mod events;
pub mod manifest;
pub mod pricing;
pub mod record;
pub mod schedule;

pub use billing::{billed_ms, task_billed_ms, vcpu_for_memory, LAMBDA_MB_PER_VCPU};
pub use manifest::{
    BatchingSpec, BucketEvent, Destination, GreedyDualSpec, HistogramSpec, KeepAliveSpec, Manifest,
    ManifestError, Mode, ModelEngine, ModelInput, ModelSpec, ModelTask, Runtime, ScalingSpec,
    SnapStart, TriggerSpec, BUILTIN_RUNTIME,
};
pub use record::{InvocationRecord, Isolation, Start, Status, Trigger, WorkerSplit};
