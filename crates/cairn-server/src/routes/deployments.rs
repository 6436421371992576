//! Online deployments' control plane:
//! `/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments[/{name}[/logs]]`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::Role;
use cairn_core::deployments::*;

use crate::auth::Caller;
use crate::deployments;
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Creates a deployment; answers at once with state Creating (the replicas start in the background).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name")),
    request_body = CreateDeployment,
    responses((status = 201, body = Deployment), (status = 400, body = cairn_core::api::ErrorBody),
        (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint)): Path<(String, String)>,
    extract::Json(req): extract::Json<CreateDeployment>,
) -> ApiResult<(StatusCode, Json<Deployment>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    let d = deployments::create(&state, &workspace, &e, req).await?;
    tracing::info!(workspace = %ws, endpoint = %endpoint, deployment = %d.name, "deployment created");
    Ok((StatusCode::CREATED, Json(deployments::view(&d))))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name")),
    responses((status = 200, body = Vec<Deployment>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Deployment>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    Ok(Json(state.store.list_deployments(&e.id).await?.iter().map(deployments::view).collect()))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name")),
    responses((status = 200, body = Deployment), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Deployment>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    Ok(Json(deployments::view(&state.store.deployment(&e.id, &e.name, &name).await?)))
}

/// Stops the replicas and deletes the deployment; its model version is no longer in use.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    if e.traffic.get(&name).is_some_and(|p| *p > 0) {
        return Err(cairn_core::Error::conflict(format!(
            "deployment \"{name}\" still takes {}% of endpoint \"{endpoint}\"'s traffic: move it first \
             (`cairn endpoint update {endpoint} --traffic …`)",
            e.traffic[&name]
        ))
        .into());
    }
    let d = state.store.deployment(&e.id, &e.name, &name).await?;
    deployments::delete(&state, &workspace, &d).await?;
    tracing::info!(workspace = %ws, endpoint = %endpoint, deployment = %name, "deployment deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The tail of the deployment's log: cairn's lines and the replicas' stderr.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}/logs", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name")),
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
) -> ApiResult<String> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    let d = state.store.deployment(&e.id, &e.name, &name).await?;
    Ok(deployments::logs(&state, &d))
}
