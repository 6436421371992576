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

/// Updates a deployment with a whole new spec (the YAML as for create). Changing only
/// `instance_count` adds or removes replicas; changing code, model, environment, request settings,
/// probes or variables starts a new generation beside the serving one and switches when it is
/// ready (rolling, nothing dropped). Answers at once (Updating); 409 while it is being created,
/// updated or deleted.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name")),
    request_body = CreateDeployment,
    responses((status = 200, body = Deployment), (status = 400, body = cairn_core::api::ErrorBody),
        (status = 404, body = cairn_core::api::ErrorBody), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn replace(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
    extract::Json(req): extract::Json<CreateDeployment>,
) -> ApiResult<Json<Deployment>> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    let d = state.store.deployment(&e.id, &e.name, &name).await?;
    let d = deployments::update(&state, &workspace, &e, d, req).await?;
    tracing::info!(workspace = %ws, endpoint = %endpoint, deployment = %name, "deployment update accepted");
    Ok(Json(deployments::view(&d)))
}

/// Updates a deployment with a JSON merge patch (RFC 7396) of its spec, e.g.
/// `{"instance_count": 3}`; then as `PUT`. `model` and `models` exclude each other, so a patch
/// that sets one nulls the other (`{"models": ["a:1", "b:2"], "model": null}`).
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name")),
    request_body = Object,
    responses((status = 200, body = Deployment), (status = 400, body = cairn_core::api::ErrorBody),
        (status = 404, body = cairn_core::api::ErrorBody), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn patch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
    extract::Json(patch): extract::Json<serde_json::Value>,
) -> ApiResult<Json<Deployment>> {
    caller.require(Role::Writer, Some(&ws))?;
    if !patch.is_object() {
        return Err(cairn_core::Error::invalid(
            "a deployment patch must be a JSON object (RFC 7396 merge patch)",
        )
        .into());
    }
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    let d = state.store.deployment(&e.id, &e.name, &name).await?;
    let mut spec = serde_json::to_value(&d.spec).map_err(cairn_core::Error::internal)?;
    merge_patch(&mut spec, &patch);
    let req: CreateDeployment = serde_json::from_value(spec)
        .map_err(|e| cairn_core::Error::invalid(format!("the patched deployment is not valid: {e}")))?;
    let d = deployments::update(&state, &workspace, &e, d, req).await?;
    tracing::info!(workspace = %ws, endpoint = %endpoint, deployment = %name, "deployment update accepted");
    Ok(Json(deployments::view(&d)))
}

/// RFC 7396: objects merge key by key, `null` removes a key, anything else replaces.
fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    let map = target.as_object_mut().expect("an object");
    for (k, v) in fields {
        if v.is_null() {
            map.remove(k);
        } else {
            merge_patch(map.entry(k.clone()).or_insert(serde_json::Value::Null), v);
        }
    }
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

/// Stops the replicas and deletes the deployment; its model versions are no longer in use.
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

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only the last N lines (1 to 100,000; Azure's `get-logs --lines`). Without it, the last
    /// 256 KiB.
    #[serde(default)]
    pub lines: Option<u32>,
    /// Only what follows this byte offset of generation `generation`'s log (the
    /// `x-cairn-log-offset` and `x-cairn-log-generation` of an earlier answer); the whole tail
    /// when the generation has changed since. Whole lines only; at most the last 256 KiB.
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub generation: Option<i64>,
}

/// The tail of the deployment's log: cairn's lines and the replicas' stderr.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/endpoints/{endpoint}/deployments/{name}/logs", tag = "endpoints",
    params(("ws" = String, Path, description = "workspace name"), ("endpoint" = String, Path, description = "endpoint name"),
        ("name" = String, Path, description = "deployment name"), LogsQuery),
    responses((status = 200, body = String, content_type = "text/plain",
        headers(("x-cairn-log-generation" = i64, description = "the generation whose log this is"),
            ("x-cairn-log-offset" = u64, description = "the offset to pass as `since` to read what follows")))))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, endpoint, name)): Path<(String, String, String)>,
    extract::Query(q): extract::Query<LogsQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    caller.require(Role::Reader, Some(&ws))?;
    if let Some(n) = q.lines.filter(|n| !(1..=deployments::LOG_LINES_MAX).contains(n)) {
        return Err(cairn_core::Error::invalid(format!(
            "lines {n}: must be 1 to {}",
            deployments::LOG_LINES_MAX
        ))
        .into());
    }
    let workspace = state.store.workspace(&ws).await?;
    let e = state.store.endpoint(&workspace, &endpoint).await?;
    let d = state.store.deployment(&e.id, &e.name, &name).await?;
    let (text, offset) = match (q.lines, q.since) {
        (Some(_), Some(_)) => {
            return Err(cairn_core::Error::invalid("give lines or since, not both").into());
        }
        (None, Some(since)) => deployments::logs_since(&state, &d, q.generation.unwrap_or(-1), since),
        (lines, None) => deployments::logs(&state, &d, lines),
    };
    let headers =
        [("x-cairn-log-generation", d.generation.to_string()), ("x-cairn-log-offset", offset.to_string())];
    Ok((headers, text).into_response())
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut spec = json!({"a": 1, "s": {"x": 1, "y": 2}, "gone": true});
        merge_patch(&mut spec, &json!({"a": 2, "s": {"y": null, "z": 3}, "gone": null, "new": [1]}));
        assert_eq!(spec, json!({"a": 2, "s": {"x": 1, "z": 3}, "new": [1]}));
    }
}
