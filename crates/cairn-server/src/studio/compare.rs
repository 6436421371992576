//! The compare page (`/w/{ws}/compare?runs=…`): overlaid charts, a diff table, scatter and parallel coordinates.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
