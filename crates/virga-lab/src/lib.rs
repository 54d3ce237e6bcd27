//! virga's benchmark lab: it measures a platform through the same HTTP door a
//! user uses (the Lambda Invoke API and `/v1/`), reads the platform's records
//! back for the server-side split, and reports.
//!
//! Invariant: the lab never links the platform; it speaks HTTP and `virga-spec` only.

pub mod api;
pub mod chart;
pub mod tune;

pub use api::{Api, LabError};
