//! Cairn's metadata store: workspaces, datastores, tokens and (later) everything else that is
//! not file content. One implementation over `sqlx::Any` serves both backends — SQLite (embedded,
//! the default) and PostgreSQL — because the schema and queries are written in the SQL both
//! understand (`$N` parameters, or `binds.rs` where their number is known only at run time; BIGINT
//! times; TEXT ids). The same behaviour suite runs against both (`tests/behaviour.rs`).
//!
//! The store knows nothing of HTTP or of file content; it returns domain types from
//! `cairn-core` and [`cairn_core::Error`] values that already say what went wrong.

mod binds;
mod datastores;
mod db;
mod deployments;
mod endpoints;
mod logged_models;
mod mlflow;
mod models;
mod resources;
mod runs;
mod search;
mod series;
mod servers;
mod studio;
mod tokens;
mod traces;
mod workspaces;

pub use datastores::{DatastoreRecord, FileRecord};
pub use db::{Backend, Store};
pub use deployments::DeploymentRecord;
pub use endpoints::{EndpointRecord, StoredKey};
pub use logged_models::{LoggedModel, ModelMetric, NewLoggedModel, RunDataset, RunIo, RunModel};
pub use mlflow::{run_artifact_uri, MlflowExperiment, MlflowRunMeta};
pub use models::READY as MODEL_VERSION_READY;
pub use resources::ComputeRecord;
pub use runs::{NewRun, RunRef};
pub use search::RunScope;
pub use series::MetricSeries;
pub use servers::{Claim, ClusterLock, ServerMark, ServerRecord};
pub use studio::{ExperimentSummary, ModelSummary, RunColumnKeys, RunStatusRow, MAX_COLUMN_KEYS};
pub use tokens::{NewToken, TokenRecord};
pub use traces::{SpanRecord, TraceRecord, TraceSpans, SOURCE_RUN, SPANS_IN_STORE, SPANS_LOCATION};

/// Largest page any list returns, whatever the caller asks for.
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Page size when the caller does not ask for one.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
