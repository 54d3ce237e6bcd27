//! virga's benchmark lab: it measures a platform through the same HTTP door a
//! user uses (the Lambda Invoke API and `/v1/`), reads the platform's records
//! back for the server-side split, and reports.
//!
//! Flow of `virga bench`: [`preset`] (parse and check everything first) ->
//! [`run`] (deploy, run each [`scenario`] with the generators of [`load`],
//! join samples with records, summarise with [`stats`]) -> [`report`] (JSON, CSV,
//! Markdown, HTML with [`plot`] charts).
//!
//! Invariant: the lab never links the platform; it speaks HTTP and `virga-spec` only.

pub mod api;
pub mod load;
pub mod payload;
pub mod plot;
pub mod preset;
pub mod reference;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod table;
pub mod trace;
pub mod tune;

pub use api::{ApiError, Client};

/// Why a lab run failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// the platform's API failed
    #[error(transparent)]
    Api(#[from] ApiError),
    /// a setting of the run is wrong
    #[error("{0}")]
    Config(String),
    /// writing results failed
    #[error("cannot write {0}: {1}")]
    Io(String, #[source] std::io::Error),
}
