//! Cairn's HTTP control plane: the axum router of the native REST API (`/api/v1/…`), its
//! authentication, its OpenAPI document, and the server's start-up and shutdown.
//!
//! Layers, one direction: `routes/*` parse requests and shape responses; `datastores` and `models`
//! hold the little logic that spans the metadata store and the blob store; `auth` turns a bearer
//! token into a [`auth::Caller`]. `endpoints` holds online endpoints' logic (keys, tokens, credential
//! checks) shared by their control plane (`routes/endpoints.rs`) and the scoring gateway
//! (`gateway.rs`); `secret` seals endpoint keys and signs tokens with the server secret. Nothing here
//! writes SQL or touches files directly: that is `cairn-store`'s and
//! `cairn-blob`'s job.

pub mod auth;
pub mod datastores;
pub mod deployments;
pub mod endpoints;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod gc;
pub mod jobs;
pub mod linger;
pub mod metrics;
pub mod mlflow;
pub mod models;
pub mod openapi;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod serving;
pub mod startup;
pub mod state;
pub mod studio;

pub use startup::{serve, ServerConfig};
pub use state::AppState;
