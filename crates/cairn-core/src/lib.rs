//! Cairn's domain: the vocabulary of the platform (workspaces, datastores, tokens …), the rules
//! that names and paths must follow, and the one error type every layer speaks.
//!
//! This crate does no I/O and knows nothing of HTTP or SQL: the store maps rows onto these types,
//! the server maps [`Error`] onto HTTP statuses, the client deserialises the same types. Keeping
//! the API bodies here means the server and its clients cannot drift apart.

pub mod api;
pub mod cache;
pub mod deployments;
pub mod endpoints;
pub mod error;
pub mod inference;
pub mod lttb;
pub mod models;
pub mod names;
pub mod paths;
pub mod runs;
pub mod search;

pub use error::{quoted, Error, Result};
pub use names::validate_name;
pub use paths::RelPath;

/// Milliseconds since the Unix epoch: the one clock representation stored and exchanged.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
