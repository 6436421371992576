//! The links the MLflow client prints open the studio: `mlflow.start_run()` ends with
//! "View run at: {tracking URI}/#/experiments/E/runs/R", and the tracking URI is
//! `/workspaces/{ws}/mlflow`. The part after `#` never reaches a server, so that address answers a
//! page whose script (`studio.js`) reads it and goes to `/w/{ws}/mlflow-link?route=…`, which turns
//! MLflow's ids into the studio's page for that run, experiment or model. Without scripts the page
//! links the workspace's experiments.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use maud::{html, DOCTYPE};
use serde::Deserialize;

use super::layout::{self, seg, OrPage, PageResult};
use super::session::Session;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/workspaces/{ws}/mlflow", get(landing))
        .route("/workspaces/{ws}/mlflow/", get(landing))
        .route("/w/{ws}/mlflow-link", get(resolve))
}

/// The tracking URI opened in a browser. It shows nothing of the workspace (no session needed):
/// the studio page it leads to checks the caller's rights.
async fn landing(Path(ws): Path<String>) -> Response {
    let experiments = format!("{}/experiments", layout::ws_url(&ws));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Opening Cairn's studio" }
                script src=(super::asset_url("studio.js")) defer {}
            }
            body data-mlflow-link={ (layout::ws_url(&ws)) "/mlflow-link" } {
                p { "This is the MLflow tracking URI of workspace " (ws) " on Cairn. "
                    a href=(experiments) { "Open its experiments in the studio" } "." }
            }
        }
    }
    .into_response()
}

#[derive(Deserialize)]
struct Route {
    #[serde(default)]
    route: String,
}

/// `/w/{ws}/mlflow-link?route=/experiments/E/runs/R`: a redirect to the studio's page.
async fn resolve(
    s: Session,
    State(state): State<Arc<AppState>>,
    Path(ws): Path<String>,
    Query(q): Query<Route>,
) -> PageResult {
    let workspace = super::open_workspace(&state, &s, &ws).await?;
    let base = layout::ws_url(&ws);
    let parts: Vec<&str> = q.route.split('/').filter(|p| !p.is_empty()).collect();
    let target = match parts.as_slice() {
        ["experiments", _, "runs", run, ..] => format!("{base}/runs/{}", seg(run)),
        ["experiments", id, ..] => {
            // MLflow's "0" is the workspace's default experiment, as in the MLflow API.
            let found = match *id {
                "0" => state
                    .store
                    .find_experiment(&workspace, crate::mlflow::DEFAULT_EXPERIMENT)
                    .await
                    .or_page(&s)?
                    .map(|(_, e)| e.name),
                _ => state.store.mlflow_experiment_by_id(&workspace, id).await.ok().map(|e| e.name),
            };
            match found {
                Some(name) => format!("{base}/experiments/{}", seg(&name)),
                // Deleted or never there: the list says what there is.
                None => format!("{base}/experiments"),
            }
        }
        ["models", name, "versions", version, ..] => format!("{base}/models/{}/{}", seg(name), seg(version)),
        ["models", name, ..] => format!("{base}/models/{}", seg(name)),
        ["models"] => format!("{base}/models"),
        _ => format!("{base}/experiments"),
    };
    Ok(Redirect::to(&target).into_response())
}
