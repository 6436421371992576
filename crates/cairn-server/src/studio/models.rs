//! Registered models pages: `/w/{ws}/models`, a model, a model version with its lineage.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
