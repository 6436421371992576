//! Online endpoints' control plane: `/api/v1/workspaces/{ws}/endpoints[/{name}[/keys|regenerate-keys|token]]`.
//! Readers see endpoints; keys and tokens are for writers and admins only.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_core::api::Role;
use cairn_core::endpoints::*;

use crate::auth::Caller;
use crate::endpoints;
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Secrets must not be kept by caches or proxies.
fn no_store<T: serde::Serialize>(body: T) -> Response {
    let mut r = Json(body).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name")), responses((status = 200, body = Vec<Endpoint>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Endpoint>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let list = state.store.list_endpoints(&workspace).await?;
    Ok(Json(list.iter().map(|e| endpoints::view(&state, e)).collect()))
}

/// Creates an endpoint (Azure ML v2 online-endpoint YAML, as JSON) with two fresh keys.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/endpoints", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateEndpoint,
    responses((status = 201, body = Endpoint), (status = 400, body = cairn_core::api::ErrorBody),
        (status = 409, description = "the name is taken on this server", body = cairn_core::api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateEndpoint>,
) -> ApiResult<(StatusCode, Json<Endpoint>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = endpoints::create(&state, &workspace, req).await?;
    tracing::info!(workspace = %ws, endpoint = %e.name, auth_mode = e.auth_mode.as_str(), "endpoint created");
    Ok((StatusCode::CREATED, Json(endpoints::view(&state, &e))))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    responses((status = 200, body = Endpoint), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Endpoint>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(endpoints::view(&state, &state.store.endpoint(&workspace, &name).await?)))
}

/// Changes description, tags, auth mode or traffic; the fields not given stay as they are.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/endpoints/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    request_body = UpdateEndpoint,
    responses((status = 200, body = Endpoint), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
    extract::Json(req): extract::Json<UpdateEndpoint>,
) -> ApiResult<Json<Endpoint>> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = endpoints::update(&state, &workspace, &name, req).await?;
    tracing::info!(workspace = %ws, endpoint = %name, "endpoint updated");
    Ok(Json(endpoints::view(&state, &e)))
}

/// Deletes an endpoint and everything of it (its keys, its metrics, later its deployments).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/endpoints/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &name).await?;
    // No deployment is created beside this delete (see `deployments::create`).
    let endpoint_lock = state.deployments.endpoint_lock(&e.id);
    let _deleting = endpoint_lock.lock().await;
    for d in state.store.list_deployments(&e.id).await? {
        crate::deployments::delete(&state, &workspace, &d).await?;
    }
    state.store.delete_endpoint(&workspace, &name).await?;
    state.metrics.remove(&name);
    tracing::info!(workspace = %ws, endpoint = %name, "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The two keys of a key-mode endpoint (writer or admin).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{name}/keys", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    responses((status = 200, body = EndpointKeys), (status = 403, body = cairn_core::api::ErrorBody)))]
pub async fn keys(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &name).await?;
    Ok(no_store(endpoints::keys(&state, &e)?))
}

/// Replaces the primary or the secondary key; the other keeps working. Answers 204, like Azure's
/// regenerateKeys: the keys are read with `GET …/keys` (and the other key may have been sealed with a
/// former server secret, which must not make regenerating this one fail).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/endpoints/{name}/regenerate-keys", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    request_body = RegenerateKey,
    responses((status = 204), (status = 403, body = cairn_core::api::ErrorBody)))]
pub async fn regenerate_key(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
    extract::Json(req): extract::Json<RegenerateKey>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let mut e = state.store.endpoint(&workspace, &name).await?;
    endpoints::regenerate_key(&state, &mut e, req.key_type).await?;
    tracing::info!(workspace = %ws, endpoint = %name, key_type = ?req.key_type, "endpoint key regenerated");
    Ok(StatusCode::NO_CONTENT)
}

/// A short-lived token for a token-mode endpoint (writer or admin).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/endpoints/{name}/token", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "endpoint name")),
    request_body = TokenRequest,
    responses((status = 200, body = EndpointToken), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn token(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
    extract::Json(req): extract::Json<TokenRequest>,
) -> ApiResult<Response> {
    caller.require(Role::Writer, Some(&ws))?;
    let lifetime = token_lifetime(&req)?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &name).await?;
    Ok(no_store(endpoints::token(&state, &e, lifetime)?))
}
