//! Environments pages: `/w/{ws}/environments`, an environment's versions, spec and build log.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
