//! Compute pages: `/w/{ws}/compute` and a compute target's nodes, queue and running jobs.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
