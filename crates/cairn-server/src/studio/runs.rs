//! The runs table: one experiment's runs (`/w/{ws}/experiments/{name}`) or all of a workspace's (`/w/{ws}/runs`).

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
