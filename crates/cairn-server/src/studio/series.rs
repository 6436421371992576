//! Metric series as JSON for the charts (`/w/{ws}/runs/{id}/metrics/{key}/series`), downsampled with LTTB.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
