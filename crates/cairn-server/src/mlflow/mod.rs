//! The MLflow tracking REST API (2.0, and 3.0's trace RPCs), per workspace, at
//! `/workspaces/{ws}/mlflow/api/2.0/mlflow/…` (and `…/api/3.0/mlflow/traces…`): with `MLFLOW_TRACKING_URI=http://HOST/workspaces/W/mlflow`
//! and `MLFLOW_TRACKING_TOKEN=<a Cairn token>` the stock client logs to Cairn. Everything maps
//! onto Cairn's own experiments and runs (one truth: a run logged here is a `cairn run show` run);
//! validation and storage are the native API's (`routes::runs::validate_batch`, `Store`).
//! Errors have MLflow's shape (`{"error_code", "message"}`), which its client relies on.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get, patch, post, put};
use axum::Router;
use cairn_core::api::Role;
use cairn_core::Error;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub mod artifacts;
mod assessments;
mod experiments;
mod logged_models;
pub(crate) mod multipart;
mod registry;
mod run_names;
mod runs;
pub(crate) mod spans;
mod traces;
mod traces_v2;
mod wire;

pub use experiments::DEFAULT_EXPERIMENT;
pub use wire::{MlError, MlResult};

/// Where the API lives, below which MLflow's own paths follow.
const BASE: &str = "/workspaces/{ws}/mlflow/api/2.0/mlflow";
/// Where MLflow 3's trace RPCs live (`/api/3.0/mlflow/traces…`; their tags and deletion stay
/// under `BASE`, where the client sends them).
const TRACES_V3: &str = "/workspaces/{ws}/mlflow/api/3.0/mlflow/traces";
/// Where the artifact proxy lives (what `mlflow-artifacts:/…` URIs resolve to).
const ARTIFACTS: &str = "/workspaces/{ws}/mlflow/api/2.0/mlflow-artifacts/artifacts";
/// Where multipart artifact uploads are created, completed and aborted, and their parts sent.
const MPU: &str = "/workspaces/{ws}/mlflow/api/2.0/mlflow-artifacts/mpu";

/// The MLflow routes, with their own bearer-token check (errors in MLflow's shape).
pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let p = |path: &str| format!("{BASE}{path}");
    Router::new()
        .route(&p("/experiments/create"), post(experiments::create))
        .route(&p("/experiments/get"), get(experiments::get))
        .route(&p("/experiments/get-by-name"), get(experiments::get_by_name))
        .route(&p("/experiments/search"), get(experiments::search).post(experiments::search))
        .route(&p("/experiments/update"), post(experiments::update))
        .route(&p("/experiments/delete"), post(experiments::delete))
        .route(&p("/experiments/restore"), post(experiments::restore))
        .route(&p("/experiments/set-experiment-tag"), post(experiments::set_tag))
        .route(&p("/experiments/delete-experiment-tag"), post(experiments::delete_tag))
        .route(&p("/runs/create"), post(runs::create))
        .route(&p("/runs/get"), get(runs::get))
        .route(&p("/runs/update"), post(runs::update))
        .route(&p("/runs/delete"), post(runs::delete))
        .route(&p("/runs/restore"), post(runs::restore))
        .route(&p("/runs/log-metric"), post(runs::log_metric))
        .route(&p("/runs/log-parameter"), post(runs::log_param))
        .route(&p("/runs/set-tag"), post(runs::set_tag))
        .route(&p("/runs/delete-tag"), post(runs::delete_tag))
        .route(&p("/runs/log-batch"), post(runs::log_batch))
        .route(&p("/runs/search"), get(runs::search).post(runs::search))
        .route(&p("/runs/outputs"), post(runs::log_outputs))
        .route(&p("/runs/log-inputs"), post(runs::log_inputs))
        .route(&p("/runs/log-model"), post(runs::log_model))
        .route(&p("/artifacts/list"), get(artifacts::list_run))
        .route(&p("/metrics/get-history"), get(runs::metric_history))
        .route(&p("/metrics/get-history-bulk-interval"), get(runs::metric_history_bulk_interval))
        .route(&p("/logged-models"), post(logged_models::create))
        .route(&p("/logged-models/search"), post(logged_models::search))
        .route(
            &p("/logged-models/{id}"),
            get(logged_models::get).patch(logged_models::finalize).delete(logged_models::delete),
        )
        .route(&p("/logged-models/{id}/tags"), patch(logged_models::set_tags))
        .route(&p("/logged-models/{id}/tags/{key}"), delete(logged_models::delete_tag))
        .route(&p("/logged-models/{id}/params"), post(logged_models::log_params))
        .route(&p("/registered-models/create"), post(registry::create_model))
        .route(&p("/registered-models/get"), get(registry::get_model))
        .route(&p("/registered-models/search"), get(registry::search_models))
        .route(&p("/registered-models/update"), patch(registry::update_model))
        .route(&p("/registered-models/rename"), post(registry::rename_model))
        .route(&p("/registered-models/delete"), delete(registry::delete_model))
        .route(&p("/registered-models/set-tag"), post(registry::set_model_tag))
        .route(&p("/registered-models/delete-tag"), delete(registry::delete_model_tag))
        .route(
            &p("/registered-models/alias"),
            post(registry::set_alias).delete(registry::delete_alias).get(registry::get_by_alias),
        )
        .route(
            &p("/registered-models/get-latest-versions"),
            post(registry::latest_versions).get(registry::latest_versions),
        )
        .route(&p("/model-versions/create"), post(registry::create_version))
        .route(&p("/model-versions/get"), get(registry::get_version))
        .route(&p("/model-versions/update"), patch(registry::update_version))
        .route(&p("/model-versions/delete"), delete(registry::delete_version))
        .route(&p("/model-versions/search"), get(registry::search_versions))
        .route(&p("/model-versions/set-tag"), post(registry::set_version_tag))
        .route(&p("/model-versions/delete-tag"), delete(registry::delete_version_tag))
        .route(&p("/model-versions/transition-stage"), post(registry::transition_stage))
        .route(&p("/model-versions/get-download-uri"), get(registry::download_uri))
        .route(ARTIFACTS, get(artifacts::list))
        .route(
            &format!("{ARTIFACTS}/{{*path}}"),
            get(artifacts::download).put(artifacts::upload).delete(artifacts::delete),
        )
        .route(&format!("{MPU}/create/{{*path}}"), post(multipart::create))
        .route(&format!("{MPU}/complete/{{*path}}"), post(multipart::complete))
        .route(&format!("{MPU}/abort/{{*path}}"), post(multipart::abort))
        .route(TRACES_V3, post(traces::start))
        .route(&format!("{TRACES_V3}/search"), post(traces::search))
        .route(&format!("{TRACES_V3}/batchGetInfos"), post(traces::batch_get_infos))
        .route(&format!("{TRACES_V3}/get"), get(spans::get_trace))
        .route(&format!("{TRACES_V3}/batchGet"), get(spans::batch_get).post(spans::batch_get))
        .route(&format!("{TRACES_V3}/{{trace_id}}"), get(traces::get_info))
        .route(&format!("{TRACES_V3}/{{trace_id}}/assessments"), post(assessments::create))
        .route(
            &format!("{TRACES_V3}/{{trace_id}}/assessments/{{assessment_id}}"),
            get(assessments::get).patch(assessments::update).delete(assessments::delete),
        )
        .route(&p("/traces"), post(traces_v2::start).get(traces_v2::search))
        .route(&p("/traces/{trace_id}"), patch(traces_v2::end))
        .route(&p("/traces/{trace_id}/info"), get(traces_v2::get_info))
        .route(&p("/traces/{trace_id}/tags"), patch(traces::set_tag).delete(traces::delete_tag))
        .route(&p("/traces/delete-traces"), post(traces::delete_traces))
        .route(&p("/traces/link-to-run"), post(traces::link_to_run))
        .route("/workspaces/{ws}/mlflow/api/3.0/mlflow/server-info", get(multipart::server_info))
        .route("/workspaces/{ws}/mlflow/version", get(spans::version))
        .route(
            "/workspaces/{ws}/mlflow/v1/traces",
            post(spans::export).layer(DefaultBodyLimit::max(spans::OTLP_BODY_LIMIT)),
        )
        .route("/workspaces/{ws}/mlflow/{*rest}", any(unknown_endpoint))
        // A known path with another method (POST …/traces/metrics meets GET …/traces/{id}).
        .method_not_allowed_fallback(wrong_method)
        .route_layer(middleware::from_fn_with_state(state, require_token))
        // Part URLs carry their own signed authority: MLflow's client PUTs them without a token.
        .route(&format!("{MPU}/parts/{{upload_id}}/{{part}}"), put(multipart::put_part))
}

/// The native API's token check, answering in MLflow's error shape.
async fn require_token(
    state: State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, MlError> {
    crate::auth::require_token(state, request, next).await.map_err(|ApiError(e)| e.into())
}

async fn unknown_endpoint(Path((_, rest)): Path<(String, String)>) -> MlError {
    MlError::new(
        axum::http::StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        format!("this server does not implement the MLflow endpoint /{rest}"),
    )
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> MlError {
    MlError::new(
        axum::http::StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        format!("this server does not implement the MLflow endpoint {method} {}", uri.path()),
    )
}

/// What every MLflow handler starts from: the server's state, the authenticated caller and the
/// workspace of the tracking URI (`/workspaces/{ws}/mlflow/…`, every route's `ws` parameter).
pub struct Ctx {
    pub state: Arc<AppState>,
    pub caller: Caller,
    pub ws: String,
}

impl FromRequestParts<Arc<AppState>> for Ctx {
    type Rejection = wire::MlError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Ctx, wire::MlError> {
        // `require_token` (the router's layer) put the caller there before any handler runs.
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Error::Internal("an MLflow route without the token layer".into()))?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::Internal(format!("MLflow route parameters: {e}")))?;
        let ws = params
            .iter()
            .find(|(k, _)| *k == "ws")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| Error::Internal("an MLflow route without {ws}".into()))?;
        Ok(Ctx { state: state.clone(), caller, ws })
    }
}

/// Reading a workspace's experiments: its tokens, and a job's run-scoped token too (the MLflow
/// client in a job looks its experiment up by name).
fn require_read(caller: &Caller, ws: &str) -> Result<(), Error> {
    match &caller.token.run_id {
        Some(own) => caller.require_run(Role::Reader, ws, own),
        None => caller.require(Role::Reader, Some(ws)),
    }
}
