//! The run page (`/w/{ws}/runs/{id}`): overview, params, metrics charts, outputs, code snapshot and logs.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
