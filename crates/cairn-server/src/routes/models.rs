//! The model registry's native API: models, versions (registered from a run's artifacts or from
//! uploaded blobs), tags, aliases, manifests and file downloads. Registration itself is in
//! `crate::models`, shared with the MLflow API.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_core::api::{Page, Role, SHA256_HEADER};
use cairn_core::models::*;
use cairn_core::{validate_name, Error, RelPath};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::routes::jobs::blobs_of;
use crate::routes::runs::artifacts_of;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ModelsQuery {
    /// Only models whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Only models with this tag (`key=value`) on the model or one of its versions.
    pub tag: Option<String>,
    /// Only models with a version of this framework.
    pub framework: Option<String>,
    pub page_token: Option<String>,
    /// 1–1000, default 100.
    pub page_size: Option<i64>,
}

fn parse_version(v: &str) -> Result<VersionRef, Error> {
    VersionRef::parse(v)
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), Error> {
    if let Some(k) = tags.keys().find(|k| k.trim().is_empty()) {
        return Err(Error::invalid(format!("tag key {k:?} must not be empty")));
    }
    Ok(())
}

/// Lists models, most recently updated first.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ModelsQuery),
    responses((status = 200, body = Page<Model>)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Query(q): extract::Query<ModelsQuery>,
) -> ApiResult<Json<Page<Model>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let tag = match q.tag.as_deref() {
        None => None,
        Some(t) => match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => return Err(Error::invalid(format!("tag filter {t:?} must be key=value")).into()),
        },
    };
    cairn_core::api::check_page_size(q.page_size)?;
    let filter = ModelFilter { name_contains: q.name, tag, framework: q.framework };
    Ok(Json(state.store.list_models(&workspace, &filter, q.page_token.as_deref(), q.page_size).await?))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models/{name}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name")),
    responses((status = 200, body = Model), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Model>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.model(&workspace, &name).await?))
}

/// Changes a model's description and tags.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/models/{name}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name")),
    request_body = UpdateModel, responses((status = 200, body = Model)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
    extract::Json(req): extract::Json<UpdateModel>,
) -> ApiResult<Json<Model>> {
    caller.require(Role::Writer, Some(&ws))?;
    check_tags(&req.set_tags)?;
    let workspace = state.store.workspace(&ws).await?;
    let model = state
        .store
        .update_model(&workspace, &name, req.description.as_deref(), &req.set_tags, &req.remove_tags)
        .await?;
    Ok(Json(model))
}

/// Deletes a model and its versions; 409 when a version is in use.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/models/{name}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name")),
    responses((status = 204), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.delete_model(&workspace, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Registers the next version of a model (creating the model on first registration), from a
/// run's artifact path (`run_id` + `path`) or from uploaded blobs (`files`).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/models/{name}/versions", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name")),
    request_body = RegisterModelVersion,
    responses((status = 201, body = ModelVersion), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn register(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
    extract::Json(req): extract::Json<RegisterModelVersion>,
) -> ApiResult<(StatusCode, Json<ModelVersion>)> {
    cairn_core::names::validate_model_name(&name)?;
    check_tags(&req.tags)?;
    let mut new = NewModelVersion {
        name: name.clone(),
        description: req.description,
        tags: req.tags,
        properties: req.properties,
        framework: req.framework.filter(|f| !f.is_empty()),
        framework_version: req.framework_version.filter(|f| !f.is_empty()),
        ..Default::default()
    };
    let version = match (req.run_id, req.path, req.files) {
        (Some(run_id), Some(path), None) => {
            // A job's own token may register from its run (`Run.register_model`).
            caller.require_run(Role::Writer, &ws, &run_id)?;
            let workspace = state.store.workspace(&ws).await?;
            let run = state.store.run(&workspace, &run_id).await?;
            let path = RelPath::parse_dir(&path)?;
            new.run_id = Some(run_id.clone());
            new.experiment_id =
                state.store.find_experiment(&workspace, &run.experiment).await?.map(|(id, _)| id);
            new.source = Some(format!("runs:/{run_id}/{path}"));
            let src = artifacts_of(&state, &workspace.id, &run_id);
            crate::models::register_from_blobs(&state, &caller.token.name, &workspace, &src, &path, new)
                .await?
        }
        (None, None, Some(files)) => {
            caller.require(Role::Writer, Some(&ws))?;
            let workspace = state.store.workspace(&ws).await?;
            crate::models::register_from_manifest(&state, &caller.token.name, &workspace, files, new).await?
        }
        _ => {
            return Err(Error::invalid(
                "give either run_id and path (a run's artifacts) or files (a manifest of uploaded blobs)",
            )
            .into())
        }
    };
    tracing::info!(workspace = %ws, model = %version.id, "model version registered");
    Ok((StatusCode::CREATED, Json(version)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models/{name}/versions", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name")),
    responses((status = 200, body = Vec<ModelVersion>)))]
pub async fn list_versions(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<ModelVersion>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.list_model_versions(&workspace, &name).await?))
}

/// One version: `v` is a number, `latest` or `@alias`.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models/{name}/versions/{v}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("v" = String, Path, description = "version number, `latest` or `@alias`")),
    responses((status = 200, body = ModelVersion), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, v)): Path<(String, String, String)>,
) -> ApiResult<Json<ModelVersion>> {
    caller.require(Role::Reader, Some(&ws))?;
    let v = parse_version(&v)?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.model_version(&workspace, &name, &v).await?))
}

/// Changes a version's description and tags.
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/models/{name}/versions/{v}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("v" = String, Path, description = "version number, `latest` or `@alias`")),
    request_body = UpdateModelVersion, responses((status = 200, body = ModelVersion)))]
pub async fn update_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, v)): Path<(String, String, String)>,
    extract::Json(req): extract::Json<UpdateModelVersion>,
) -> ApiResult<Json<ModelVersion>> {
    caller.require(Role::Writer, Some(&ws))?;
    check_tags(&req.set_tags)?;
    let v = parse_version(&v)?;
    let workspace = state.store.workspace(&ws).await?;
    let number = state.store.model_version(&workspace, &name, &v).await?.version;
    let updated = state
        .store
        .update_model_version(
            &workspace,
            &name,
            number,
            req.description.as_deref(),
            &req.set_tags,
            &req.remove_tags,
        )
        .await?;
    Ok(Json(updated))
}

/// Deletes a version; 409 when it is in use (e.g. by a deployment).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/models/{name}/versions/{v}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("v" = String, Path, description = "version number, `latest` or `@alias`")),
    responses((status = 204), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete_version(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, v)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let v = parse_version(&v)?;
    let workspace = state.store.workspace(&ws).await?;
    let number = state.store.model_version(&workspace, &name, &v).await?.version;
    state.store.delete_model_version(&workspace, &name, number).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Points an alias at a version, moving it if it pointed elsewhere.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/models/{name}/aliases/{alias}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("alias" = String, Path, description = "alias")),
    request_body = SetAlias, responses((status = 200, body = ModelVersion)))]
pub async fn set_alias(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, alias)): Path<(String, String, String)>,
    extract::Json(req): extract::Json<SetAlias>,
) -> ApiResult<Json<ModelVersion>> {
    caller.require(Role::Writer, Some(&ws))?;
    validate_name("alias", &alias)?;
    if alias == "latest" {
        return Err(Error::invalid("\"latest\" is reserved and cannot be an alias").into());
    }
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.set_model_alias(&workspace, &name, &alias, req.version).await?))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/models/{name}/aliases/{alias}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("alias" = String, Path, description = "alias")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn delete_alias(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, alias)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    state.store.delete_model_alias(&workspace, &name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A version's file manifest (path, SHA-256, size).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models/{name}/versions/{v}/files", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("v" = String, Path, description = "version number, `latest` or `@alias`")),
    responses((status = 200, body = Vec<ModelFile>)))]
pub async fn files(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, v)): Path<(String, String, String)>,
) -> ApiResult<Json<Vec<ModelFile>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let v = parse_version(&v)?;
    let workspace = state.store.workspace(&ws).await?;
    let number = state.store.model_version(&workspace, &name, &v).await?.version;
    Ok(Json(state.store.model_version_files(&workspace, &name, number).await?))
}

/// Downloads one file of a version.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/models/{name}/versions/{v}/files/{path}", tag = "models",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "model name"),
           ("v" = String, Path, description = "version number, `latest` or `@alias`"),
           ("path" = String, Path, description = "file path in the version")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn download(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name, v, path)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    caller.require(Role::Reader, Some(&ws))?;
    let v = parse_version(&v)?;
    let path = RelPath::parse(&path)?;
    let workspace = state.store.workspace(&ws).await?;
    let mv = state.store.model_version(&workspace, &name, &v).await?;
    let manifest = state.store.model_version_files(&workspace, &name, mv.version).await?;
    let file = manifest
        .iter()
        .find(|f| f.path == path.as_str())
        .ok_or_else(|| Error::not_found("model file", format!("{path}\" in \"{}", mv.id)))?;
    let (size, stream) = blobs_of(&state, &workspace.id).get_stream(&RelPath::parse(&file.sha256)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::HeaderName::from_static(SHA256_HEADER), file.sha256.clone()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
