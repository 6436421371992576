//! Online endpoints pages: `/w/{ws}/endpoints` and an endpoint with its deployments, keys and test form.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
