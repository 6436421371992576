//! Experiments, runs and run tracking: `/api/v1/workspaces/{ws}/experiments|runs`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_blob::{BlobStore, PutOpts};
use cairn_core::api::{FileEntry, Role, SHA256_HEADER};
use cairn_core::runs::*;
use cairn_core::{Error, RelPath};
use cairn_store::NewRun;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Where a run's artifacts live in the artifact store.
pub fn artifacts_of(state: &AppState, workspace_id: &str, run_id: &str) -> BlobStore {
    state.artifacts.child(&format!("workspaces/{workspace_id}/runs/{run_id}/artifacts"))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/experiments", tag = "runs",
    params(("ws" = String, Path, description = "workspace name")),
    responses((status = 200, body = Vec<Experiment>)))]
pub async fn list_experiments(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Experiment>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.list_experiments(&workspace).await?))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/experiments", tag = "runs",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateExperiment,
    responses((status = 201, body = Experiment)))]
pub async fn create_experiment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateExperiment>,
) -> ApiResult<(StatusCode, Json<Experiment>)> {
    caller.require(Role::Writer, Some(&ws))?;
    validate_experiment_name(&req.name)?;
    let workspace = state.store.workspace(&ws).await?;
    let (_, exp) = state.store.ensure_experiment(&workspace, &req.name).await?;
    Ok((StatusCode::CREATED, Json(exp)))
}

/// Experiment names are free text (Azure ML and MLflow allow spaces), but bounded and printable.
pub fn validate_experiment_name(name: &str) -> Result<(), Error> {
    if name.trim().is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "invalid experiment name {name:?}: 1 to 255 printable characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs of this experiment.
    pub experiment: Option<String>,
    /// Only the child runs of this run.
    pub parent: Option<String>,
    /// At most this many runs (1–1000, default 100), newest first.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), RunsQuery),
    responses((status = 200, body = Vec<Run>)))]
pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Query(q): extract::Query<RunsQuery>,
) -> ApiResult<Json<Vec<Run>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    if let Some(parent) = &q.parent {
        // An unknown parent is a 404 naming it, not an empty list.
        state.store.run_status(&workspace, parent).await?;
    }
    let runs = state
        .store
        .list_runs(&workspace, q.experiment.as_deref(), q.parent.as_deref(), q.limit.unwrap_or(100))
        .await?;
    Ok(Json(runs))
}

/// Starts a run from outside a job (status `Running`).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs", tag = "runs",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateRun,
    responses((status = 201, body = Run)))]
pub async fn create_run(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateRun>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    caller.require_new_run(&ws, req.parent_run_id.as_deref())?;
    validate_experiment_name(&req.experiment)?;
    let workspace = state.store.workspace(&ws).await?;
    if let Some(parent) = &req.parent_run_id {
        state.store.run(&workspace, parent).await?;
    }
    let (exp_id, _) = state.store.ensure_experiment(&workspace, &req.experiment).await?;
    let id = state
        .store
        .create_run(
            &workspace,
            NewRun {
                experiment_id: &exp_id,
                display_name: req.display_name.as_deref().unwrap_or(""),
                status: RunStatus::Running,
                job: None,
                compute: None,
                environment: None,
                parent_id: req.parent_run_id.as_deref(),
                created_by: Some(&caller.token.name),
                tags: &req.tags,
                started_at: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(state.store.run(&workspace, &id).await?)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs/{run}", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    responses((status = 200, body = Run), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show_run(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
) -> ApiResult<Json<Run>> {
    caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.run(&workspace, &run).await?))
}

/// Ends a run logged from outside a job, or renames it. Jobs' statuses belong to the runner.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/runs/{run}", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    request_body = UpdateRun, responses((status = 200, body = Run)))]
pub async fn update_run(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
    extract::Json(req): extract::Json<UpdateRun>,
) -> ApiResult<Json<Run>> {
    caller.require_run_or_child(&state.store, Role::Writer, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    let current = state.store.run(&workspace, &run).await?;
    if let Some(name) = &req.display_name {
        state.store.set_run_display_name(&run, name).await?;
    }
    if let Some(status) = req.status {
        if current.job.is_some() {
            return Err(Error::conflict(format!(
                "run {run} is a job: its status is set by the runner; use `cairn job cancel {run}` to stop it"
            ))
            .into());
        }
        if !status.is_terminal() {
            return Err(Error::invalid("status may only be set to Completed, Failed or Canceled").into());
        }
        if !state.store.transition_run(&run, &[RunStatus::Running], status, None).await? {
            return Err(Error::conflict(format!(
                "run {run} has already ended ({})",
                current.status.as_str()
            ))
            .into());
        }
    }
    Ok(Json(state.store.run(&workspace, &run).await?))
}

/// Adds immutable properties to a run (Azure ML's `add_properties`); changing one is a 409.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs/{run}/properties", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    request_body = AddProperties,
    responses((status = 200, body = Run), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn add_properties(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
    extract::Json(req): extract::Json<AddProperties>,
) -> ApiResult<Json<Run>> {
    caller.require_run_or_child(&state.store, Role::Writer, &ws, &run).await?;
    if req.properties.len() > MAX_PROPERTIES {
        return Err(Error::invalid(format!(
            "at most {MAX_PROPERTIES} properties may be added at once; this call has {}: split it",
            req.properties.len()
        ))
        .into());
    }
    for (key, value) in &req.properties {
        validate_key("property", key)?;
        if value.chars().count() > MAX_PARAM_VALUE_LEN {
            return Err(Error::invalid(format!(
                "property \"{key}\" is longer than {MAX_PARAM_VALUE_LEN} characters"
            ))
            .into());
        }
    }
    let workspace = state.store.workspace(&ws).await?;
    state.store.run_status(&workspace, &run).await?;
    state.store.add_run_properties(&run, &req.properties).await?;
    Ok(Json(state.store.run(&workspace, &run).await?))
}

/// Keys of metrics, params, tags and properties: 1 to 250 printable characters.
fn validate_key(what: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() || key.chars().count() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        let shown: String = key.chars().take(60).collect();
        return Err(Error::invalid(format!(
            "invalid {what} key {shown:?}: 1 to {MAX_KEY_LEN} printable characters"
        )));
    }
    Ok(())
}

/// Checks a batch against the limits and key rules before anything is written.
pub fn validate_batch(batch: &LogBatch) -> Result<(), Error> {
    let over = |what: &str, n: usize, max: usize| {
        Error::invalid(format!("a batch may hold at most {max} {what}; this one has {n}: split it"))
    };
    if batch.metrics.len() > MAX_BATCH_METRICS {
        return Err(over("metrics", batch.metrics.len(), MAX_BATCH_METRICS));
    }
    if batch.params.len() > MAX_BATCH_PARAMS {
        return Err(over("params", batch.params.len(), MAX_BATCH_PARAMS));
    }
    if batch.tags.len() > MAX_BATCH_TAGS {
        return Err(over("tags", batch.tags.len(), MAX_BATCH_TAGS));
    }
    let keys = batch.metrics.iter().map(|m| ("metric", &m.key)).chain(
        batch.params.iter().map(|p| ("param", &p.key)).chain(batch.tags.iter().map(|t| ("tag", &t.key))),
    );
    for (what, key) in keys {
        validate_key(what, key)?;
    }
    // MLflow's limit counts characters: 4,000 Cyrillic letters (8,000 bytes) are within it.
    if let Some(p) = batch
        .params
        .iter()
        .find(|p| p.value.len() > MAX_PARAM_VALUE_LEN && p.value.chars().count() > MAX_PARAM_VALUE_LEN)
    {
        return Err(Error::invalid(format!(
            "param \"{}\" is longer than {MAX_PARAM_VALUE_LEN} characters",
            p.key
        )));
    }
    Ok(())
}

/// Logs metrics, params and tags in one call (the in-job runtime batches into this).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs/{run}/log-batch", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    request_body = LogBatch, responses((status = 200), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn log_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
    extract::Json(batch): extract::Json<LogBatch>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require_run_or_child(&state.store, Role::Writer, &ws, &run).await?;
    validate_batch(&batch)?;
    let workspace = state.store.workspace(&ws).await?;
    let (status, ended_at) = state.store.run_status(&workspace, &run).await?;
    if status.is_terminal() && ended_at.is_some_and(|t| cairn_core::now_ms() - t > 60_000) {
        return Err(
            Error::conflict(format!("run {run} ended ({}); it takes no more data", status.as_str())).into()
        );
    }
    state.store.log_batch(&run, &batch).await?;
    Ok(Json(serde_json::json!({})))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs/{run}/metrics", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    responses((status = 200, body = RunMetrics)))]
pub async fn run_metrics(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
) -> ApiResult<Json<RunMetrics>> {
    caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run(&workspace, &run).await?;
    Ok(Json(RunMetrics { metrics: state.store.run_metrics(&run).await? }))
}

/// Lists a run's artifacts (its `outputs/`, `logs/` and uploaded files).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs/{run}/artifacts", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    responses((status = 200, body = Vec<FileEntry>)))]
pub async fn list_artifacts(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
) -> ApiResult<Json<Vec<FileEntry>>> {
    caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run(&workspace, &run).await?;
    Ok(Json(artifacts_of(&state, &workspace.id, &run).list(&RelPath::parse_dir("")?).await?))
}

/// Uploads one artifact file (streamed, verified against `x-cairn-sha256` when given).
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/runs/{run}/artifacts/{path}", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id"),
           ("path" = String, Path, description = "artifact path")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = FileEntry), (status = 422, body = cairn_core::api::ErrorBody)))]
pub async fn upload_artifact(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run, path)): Path<(String, String, String)>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<(StatusCode, Json<FileEntry>)> {
    caller.require_run_or_child(&state.store, Role::Writer, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run(&workspace, &run).await?;
    let path = RelPath::parse(&path)?;
    let sha = headers.get(SHA256_HEADER).and_then(|v| v.to_str().ok());
    let opts = PutOpts {
        expected_sha256: sha,
        expected_crc32: None,
        max_bytes: Some(state.max_upload_bytes),
        overwrite: true,
        ..Default::default()
    };
    let written = artifacts_of(&state, &workspace.id, &run)
        .put_stream(&path, request.into_body().into_data_stream(), opts)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(FileEntry { path: path.to_string(), size: written.size, last_modified: cairn_core::now_ms() }),
    ))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs/{run}/artifacts/{path}", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id"),
           ("path" = String, Path, description = "artifact path")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)))]
pub async fn download_artifact(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run(&workspace, &run).await?;
    let path = RelPath::parse(&path)?;
    let (size, stream) = artifacts_of(&state, &workspace.id, &run).get_stream(&path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Downloads many small artifacts of a run in one response, as a datastore's `download-batch`
/// does (`multipart/mixed`, one part per path in the order asked; 404 naming a missing file, 413
/// past 1,000 files or 16 MiB).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs/{run}/download-batch", tag = "runs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    request_body = cairn_core::api::DownloadBatchRequest,
    responses((status = 200, content_type = "multipart/mixed", body = Vec<u8>),
              (status = 400, body = cairn_core::api::ErrorBody), (status = 404, body = cairn_core::api::ErrorBody),
              (status = 413, body = cairn_core::api::ErrorBody)))]
pub async fn download_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
    extract::Json(req): extract::Json<cairn_core::api::DownloadBatchRequest>,
) -> ApiResult<Response> {
    caller.require_run_or_child(&state.store, Role::Reader, &ws, &run).await?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.run(&workspace, &run).await?;
    super::files::batch_answer(&artifacts_of(&state, &workspace.id, &run), &req).await
}

/// Searches runs with a filter, an order and pagination.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs/search", tag = "runs",
    params(("ws" = String, Path, description = "workspace name")), request_body = SearchRuns,
    responses((status = 200, body = RunsPage), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn search_runs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<SearchRuns>,
) -> ApiResult<Json<RunsPage>> {
    caller.require(Role::Reader, Some(&ws))?;
    let clauses = cairn_core::search::parse_filter(&req.filter)
        .map_err(|e| Error::invalid(format!("filter {:?}: {e}", req.filter)))?;
    let order = cairn_core::search::parse_order_by(&req.order_by)?;
    cairn_core::api::check_page_size(req.page_size)?;
    let limit = req.page_size.unwrap_or(100).clamp(1, 1000);
    let offset = match &req.page_token {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| Error::invalid(format!("page_token {t:?} is not one this server gave")))?,
        None => 0,
    };
    let workspace = state.store.workspace(&ws).await?;
    let (runs, more) = state
        .store
        .search_runs(&workspace, req.experiment.as_deref(), &clauses, &order, offset, limit)
        .await?;
    Ok(Json(RunsPage { runs, next_page_token: more.then(|| (offset + limit).to_string()) }))
}
