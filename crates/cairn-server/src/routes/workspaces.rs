//! `/api/v1/workspaces`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::{CreateWorkspace, Page, Role, Workspace, WorkspaceDetail};
use cairn_core::validate_name;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Pagination of every list: `page_size` (1–1000, default 100) and the `page_token` returned
/// as `next_page_token` by the previous page.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete even if the workspace holds datastores or files.
    #[serde(default)]
    pub force: bool,
}

/// Lists the workspaces the caller can see, by name.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", params(PageQuery),
    responses((status = 200, body = Page<Workspace>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    extract::Query(q): extract::Query<PageQuery>,
) -> ApiResult<Json<Page<Workspace>>> {
    cairn_core::api::check_page_size(q.page_size)?;
    if let Some(own) = &caller.token.workspace {
        let ws = state.store.workspace(own).await?;
        return Ok(Json(Page { items: vec![ws], next_page_token: None }));
    }
    Ok(Json(state.store.list_workspaces(q.page_token.as_deref(), q.page_size).await?))
}

/// Creates a workspace and its `default` datastore. Admin only.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    extract::Json(req): extract::Json<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    caller.require(Role::Admin, None)?;
    validate_name("workspace name", &req.name)?;
    let ws = state.store.create_workspace(&req.name, &req.description).await?;
    tracing::info!(workspace = %ws.name, "workspace created");
    Ok((StatusCode::CREATED, Json(ws)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace name")),
    responses((status = 200, body = WorkspaceDetail), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<WorkspaceDetail>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let mlflow_tracking_uri = format!("{}/workspaces/{}/mlflow", state.public_url(), workspace.name);
    let otlp_traces_endpoint = format!("{mlflow_tracking_uri}/v1/traces");
    Ok(Json(WorkspaceDetail { workspace, mlflow_tracking_uri, otlp_traces_endpoint }))
}

/// Deletes a workspace and revokes the tokens scoped to it; refuses one that holds datastores or
/// files unless `force=true`.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}", tag = "workspaces",
    params(("ws" = String, Path, description = "workspace name"), DeleteQuery),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Query(q): extract::Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, None)?;
    let workspace = state.store.workspace(&ws).await?;
    state.delete_workspace(&workspace, q.force).await?;
    tracing::info!(workspace = %ws, force = q.force, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}
