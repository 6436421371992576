//! `/api/v1/workspaces/{ws}/datastores`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::{CreateDatastore, Datastore, DatastoreKind, Page, Role};
use cairn_core::Error;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::routes::workspaces::PageQuery;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/datastores", tag = "datastores",
    params(("ws" = String, Path, description = "workspace name"), PageQuery),
    responses((status = 200, body = Page<Datastore>), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Query(q): extract::Query<PageQuery>,
) -> ApiResult<Json<Page<Datastore>>> {
    caller.require(Role::Reader, Some(&ws))?;
    cairn_core::api::check_page_size(q.page_size)?;
    let workspace = state.store.workspace(&ws).await?;
    let page = state.store.list_datastores(&workspace, q.page_token.as_deref(), q.page_size).await?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|d| d.datastore).collect(),
        next_page_token: page.next_page_token,
    }))
}

/// Registers a `local` directory or an `s3` location as a datastore. Admin only: a datastore
/// exposes the location to every user of the workspace.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/datastores", tag = "datastores",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateDatastore,
    responses((status = 201, body = Datastore), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateDatastore>,
) -> ApiResult<(StatusCode, Json<Datastore>)> {
    caller.require(Role::Admin, None)?;
    let workspace = state.store.workspace(&ws).await?;
    state.validate_new_datastore(&req).await?;
    let ds = state.store.create_datastore(&workspace, &req).await?;
    tracing::info!(workspace = %ws, datastore = %req.name, kind = req.kind.as_str(), "datastore registered");
    Ok((StatusCode::CREATED, Json(ds.datastore)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/datastores/{ds}", tag = "datastores",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name")),
    responses((status = 200, body = Datastore), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
) -> ApiResult<Json<Datastore>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.datastore(&workspace, &ds).await?.datastore))
}

/// Unregisters a datastore. The files it points at are never deleted.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/datastores/{ds}", tag = "datastores",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Admin, None)?;
    let workspace = state.store.workspace(&ws).await?;
    let record = state.store.datastore(&workspace, &ds).await?;
    if record.datastore.kind == DatastoreKind::Default {
        return Err(Error::conflict(
            "the default datastore belongs to its workspace and is removed only with it",
        )
        .into());
    }
    state.store.delete_datastore(&record).await?;
    state.blob_cache.lock().expect("blob cache lock").remove(&record.id);
    state.forget_datastores();
    tracing::info!(workspace = %ws, datastore = %ds, "datastore removed (its files are kept)");
    Ok(StatusCode::NO_CONTENT)
}
