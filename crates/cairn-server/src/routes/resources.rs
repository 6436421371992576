//! Environments, compute targets and compute sizes:
//! `/api/v1/workspaces/{ws}/environments|computes|sizes`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use cairn_core::api::Role;
use cairn_core::names::parse_environment_ref;
use cairn_core::runs::*;
use cairn_core::{validate_name, Error};
use cairn_jobs::compute::NodeState;
use cairn_jobs::env::spec::EnvironmentSpec;
use cairn_store::ComputeRecord;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/environments", tag = "environments",
    params(("ws" = String, Path, description = "workspace name")), responses((status = 200, body = Vec<Environment>)))]
pub async fn list_environments(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Environment>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(state.store.list_environments(&workspace).await?))
}

/// Registers a version of an environment from its resolved spec (the CLI resolves files).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/environments", tag = "environments",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateEnvironment,
    responses((status = 201, body = Environment), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create_environment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateEnvironment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    caller.require(Role::Writer, Some(&ws))?;
    cairn_core::names::validate_asset_name("environment name", &req.name)?;
    let spec: EnvironmentSpec = serde_json::from_value(req.spec.clone())
        .map_err(|e| Error::invalid(format!("invalid environment spec: {e}")))?;
    let spec = spec.canonicalize().map_err(Error::from)?;
    let workspace = state.store.workspace(&ws).await?;
    let canonical = serde_json::to_value(&spec).map_err(Error::internal)?;
    let env = state
        .store
        .create_environment(&workspace, &req.name, req.version, &req.description, &canonical, &spec.hash())
        .await?;
    Ok((StatusCode::CREATED, Json(env)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/environments/{name}", tag = "environments",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "name or name@version")),
    responses((status = 200, body = Environment), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show_environment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Environment>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let (n, v) = parse_environment_ref(&name)?;
    Ok(Json(state.store.environment(&workspace, &n, v).await?))
}

/// Builds (or finds cached) the environment's venv; answers with the build log.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/environments/{name}/build", tag = "environments",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "name or name@version")),
    responses((status = 200, body = EnvironmentBuild), (status = 422, body = cairn_core::api::ErrorBody)))]
pub async fn build_environment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<EnvironmentBuild>> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let (n, v) = parse_environment_ref(&name)?;
    let env = state.store.environment(&workspace, &n, v).await?;
    let spec: EnvironmentSpec = serde_json::from_value(env.spec.clone()).map_err(Error::internal)?;
    let builder = state.env_builder()?;
    match builder.ensure(&spec).await {
        Ok(built) => Ok(Json(EnvironmentBuild {
            hash: env.hash.clone(),
            ready: true,
            reused: built.reused,
            log: builder.build_log(&env.hash).unwrap_or_default(),
        })),
        Err(e) => Err(Error::Unprocessable(format!("{}@{}: {e}", env.name, env.version)).into()),
    }
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/environments/{name}", tag = "environments",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "name@version")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn delete_environment(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let (n, v) = parse_environment_ref(&name)?;
    let v = v.ok_or_else(|| Error::invalid(format!("give the version to delete: {n}@VERSION")))?;
    let _no_new_uses = crate::deployments::environment_use(&state, &workspace.id, true).await?;
    let users = deployments_using(&state, &workspace, &n, v).await?;
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "cannot delete environment {n}@{v}: it is in use by deployment(s) {}; update or delete those first",
            users.join(", ")
        ))
        .into());
    }
    state.store.delete_environment(&workspace, &n, v).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The deployments (`ENDPOINT/NAME`) of `ws` whose replicas start in environment `name@version`:
/// named with that version, or with none while it is the latest, by their spec or by the update
/// rolling out. A deployment comes back after a restart in the environment its spec names, so
/// that one must stay.
async fn deployments_using(
    state: &AppState,
    ws: &cairn_core::api::Workspace,
    name: &str,
    version: i64,
) -> Result<Vec<String>, Error> {
    let latest = state.store.environment(ws, name, None).await.ok().map(|e| e.version);
    let mut users = Vec::new();
    for d in state.store.all_deployments().await?.into_iter().filter(|d| d.workspace_id == ws.id) {
        let specs = std::iter::once(&d.spec).chain(d.pending_update.as_ref());
        let uses = specs.filter_map(|s| s.environment.as_deref()).any(|env| {
            parse_environment_ref(env).is_ok_and(|(n, v)| n == name && v.or(latest) == Some(version))
        });
        if uses {
            users.push(format!("{}/{}", d.endpoint_name, d.name));
        }
    }
    Ok(users)
}

/// The size a compute target names: a shipped one (any case) or one defined in its workspace.
pub(crate) async fn resolve_size(
    state: &AppState,
    workspace_id: &str,
    name: &str,
) -> Result<Option<cairn_jobs::compute::Size>, Error> {
    if let Some(s) = cairn_jobs::compute::size(name) {
        return Ok(Some(s));
    }
    Ok(state.store.size(workspace_id, name).await?.map(|s| cairn_jobs::compute::Size {
        name: s.name.into(),
        cores: s.cores,
        memory_gb: s.memory_gb,
    }))
}

fn shipped_sizes() -> impl Iterator<Item = ComputeSize> {
    cairn_jobs::compute::SIZES.iter().map(|s| ComputeSize {
        name: s.name.to_string(),
        cores: s.cores,
        memory_gb: s.memory_gb,
        shipped: true,
        created_by: None,
        created_at: None,
    })
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/sizes", tag = "computes",
    params(("ws" = String, Path, description = "workspace name")), responses((status = 200, body = Vec<ComputeSize>)))]
pub async fn list_sizes(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<ComputeSize>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    Ok(Json(shipped_sizes().chain(state.store.list_sizes(&workspace).await?).collect()))
}

/// Checks a new size against the name rule, the shipped names and this machine.
fn validate_size(req: &CreateComputeSize, machine_cores: u32) -> Result<(), Error> {
    validate_name("size name", &req.name)?;
    if let Some(s) = cairn_jobs::compute::size(&req.name) {
        return Err(Error::conflict(format!(
            "size \"{}\" is shipped with Cairn and cannot be redefined",
            s.name
        )));
    }
    if req.cores == 0 {
        return Err(Error::invalid("cores must be at least 1"));
    }
    if req.cores > machine_cores {
        return Err(Error::invalid(format!(
            "cores {} is more than this machine has ({machine_cores}); a node cannot use more cores than the server",
            req.cores
        )));
    }
    if !(req.memory_gb.is_finite() && req.memory_gb > 0.0) {
        return Err(Error::invalid(format!("memory_gb must be more than 0 (got {})", req.memory_gb)));
    }
    if (req.memory_gb * 1024.0).round() < 1.0 {
        return Err(Error::invalid("memory_gb must be at least 1 MiB (0.001 GB)"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/sizes", tag = "computes",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateComputeSize,
    responses((status = 201, body = ComputeSize), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn create_size(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateComputeSize>,
) -> ApiResult<(StatusCode, Json<ComputeSize>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let machine_cores = std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1);
    validate_size(&req, machine_cores)?;
    let workspace = state.store.workspace(&ws).await?;
    let size = ComputeSize {
        name: req.name,
        cores: req.cores,
        memory_gb: req.memory_gb,
        shipped: false,
        created_by: None,
        created_at: None,
    };
    let created = state.store.create_size(&workspace, &size, &caller.token.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/sizes/{name}", tag = "computes",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "size name")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete_size(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    if let Some(s) = cairn_jobs::compute::size(&name) {
        return Err(Error::conflict(format!(
            "size \"{}\" is shipped with Cairn and cannot be deleted",
            s.name
        ))
        .into());
    }
    let workspace = state.store.workspace(&ws).await?;
    state.store.delete_size(&workspace, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A compute target with what it is doing now (nodes, queue, running runs): the API's view, which
/// the studio's compute pages show as is.
pub(crate) async fn compute_view(state: &AppState, c: &ComputeRecord) -> Result<Compute, Error> {
    let size =
        resolve_size(state, &c.workspace_id, &c.size).await?.unwrap_or(cairn_jobs::compute::SIZES[0].clone());
    let all = RunStatus::ALL;
    let runs = state.store.runs_in_status(&all[1..6]).await?;
    let mine: Vec<_> = runs
        .iter()
        .filter(|r| r.workspace_id == c.workspace_id && r.compute.as_deref() == Some(&c.name))
        .collect();
    let queued: Vec<String> =
        mine.iter().filter(|r| r.status == RunStatus::Queued).map(|r| r.id.clone()).collect();
    let running: Vec<String> = mine.iter().filter(|r| r.status.is_active()).map(|r| r.id.clone()).collect();
    let starting =
        mine.iter().filter(|r| matches!(r.status, RunStatus::Preparing | RunStatus::Starting)).count();
    let nodes = state.jobs.observe_pool(&c.workspace_id, c, starting, running.len() - starting);
    let count = |s: NodeState| nodes.iter().filter(|n| n.state == s).count() as i64;
    Ok(Compute {
        name: c.name.clone(),
        kind: c.kind.clone(),
        size: c.size.clone(),
        cores: size.cores,
        memory_gb: size.memory_gb,
        min_nodes: c.min_nodes,
        max_nodes: c.max_nodes,
        idle_seconds: c.idle_seconds,
        created_at: c.created_at,
        state: Some(ComputeState {
            current_nodes: nodes.len() as i64,
            busy_nodes: count(NodeState::Busy),
            starting_nodes: count(NodeState::Starting),
            idle_nodes: count(NodeState::Idle),
            nodes: nodes
                .iter()
                .map(|n| ComputeNode { id: n.id, state: n.state.as_str().to_string(), since: n.since_ms })
                .collect(),
            queued_runs: queued,
            running_runs: running,
            limits: cairn_jobs::compute::ComputeTarget::limits(&cairn_jobs::compute::LocalTarget, &size),
        }),
    })
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/computes", tag = "computes",
    params(("ws" = String, Path, description = "workspace name")), responses((status = 200, body = Vec<Compute>)))]
pub async fn list_computes(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Compute>>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let mut out = Vec::new();
    for c in state.store.list_computes(&workspace).await? {
        out.push(compute_view(&state, &c).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/computes", tag = "computes",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateCompute,
    responses((status = 201, body = Compute), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn create_compute(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<CreateCompute>,
) -> ApiResult<(StatusCode, Json<Compute>)> {
    caller.require(Role::Writer, Some(&ws))?;
    validate_name("compute name", &req.name)?;
    let kind = match req.kind.to_ascii_lowercase().as_str() {
        "local" | "amlcompute" => "local",
        other => {
            return Err(Error::invalid(format!(
                "compute type {other:?} is not supported here: use \"local\" (or \"amlcompute\")"
            ))
            .into())
        }
    };
    let workspace = state.store.workspace(&ws).await?;
    if resolve_size(&state, &workspace.id, &req.size).await?.is_none() {
        let mut names: Vec<String> = shipped_sizes().map(|s| s.name).collect();
        names.extend(state.store.list_sizes(&workspace).await?.into_iter().map(|s| s.name));
        return Err(Error::invalid(format!(
            "unknown size {:?}; known sizes: {} (add one with `cairn compute size add`)",
            req.size,
            names.join(", ")
        ))
        .into());
    }
    if req.max_instances < 1 || req.min_instances < 0 || req.min_instances > req.max_instances {
        return Err(Error::invalid(format!(
            "need 0 <= min_instances ({}) <= max_instances ({}) and max_instances >= 1",
            req.min_instances, req.max_instances
        ))
        .into());
    }
    if req.idle_time_before_scale_down < 0 {
        return Err(Error::invalid("idle_time_before_scale_down must be 0 or more seconds").into());
    }
    let record = ComputeRecord {
        id: String::new(),
        workspace_id: workspace.id.clone(),
        name: req.name.clone(),
        kind: kind.into(),
        size: req.size.clone(),
        min_nodes: req.min_instances,
        max_nodes: req.max_instances,
        idle_seconds: req.idle_time_before_scale_down,
        created_at: cairn_core::now_ms(),
    };
    state.store.create_compute(&workspace, &record).await?;
    Ok((StatusCode::CREATED, Json(compute_view(&state, &record).await?)))
}

#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/computes/{name}", tag = "computes",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "compute name")),
    responses((status = 200, body = Compute), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn show_compute(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<Json<Compute>> {
    caller.require(Role::Reader, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let c = state.store.compute(&workspace.id, &name).await?;
    Ok(Json(compute_view(&state, &c).await?))
}

#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/computes/{name}", tag = "computes",
    params(("ws" = String, Path, description = "workspace name"), ("name" = String, Path, description = "compute name")),
    responses((status = 204), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn delete_compute(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let c = state.store.compute(&workspace.id, &name).await?;
    let view = compute_view(&state, &c).await?;
    if let Some(s) = view.state {
        if !s.running_runs.is_empty() || !s.queued_runs.is_empty() {
            return Err(Error::conflict(format!(
                "compute \"{name}\" has {} running and {} queued runs; cancel them first",
                s.running_runs.len(),
                s.queued_runs.len()
            ))
            .into());
        }
    }
    state.store.delete_compute(&workspace, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, cores: u32, memory_gb: f64) -> CreateComputeSize {
        CreateComputeSize { name: name.into(), cores, memory_gb }
    }

    #[test]
    fn sizes_are_validated_against_the_machine_and_the_shipped_names() {
        assert!(validate_size(&req("gpu-box", 4, 8.5), 4).is_ok());
        let msg = |r| validate_size(&r, 4).unwrap_err().to_string();
        assert!(msg(req("big", 5, 8.0)).contains("more than this machine has (4)"));
        assert!(msg(req("none", 0, 8.0)).contains("at least 1"));
        assert!(msg(req("nomem", 1, 0.0)).contains("more than 0"));
        assert!(msg(req("nan", 1, f64::NAN)).contains("more than 0"));
        assert!(msg(req("tiny", 1, 0.0001)).contains("1 MiB"));
        assert!(matches!(validate_size(&req("small", 1, 1.0), 4), Err(Error::Conflict(_))));
        assert!(matches!(validate_size(&req("../x", 1, 1.0), 4), Err(Error::Invalid(_))));
    }
}
