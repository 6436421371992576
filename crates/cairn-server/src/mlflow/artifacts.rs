//! MLflow's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts[/{path}]`: PUT upload, GET
//! download or list, DELETE), over Cairn's own artifact stores: a run's artifacts are the native
//! run artifacts (`cairn run show` lists them), a logged model's live under the workspace.
//! [`resolve`] is the one place an MLflow artifact URI becomes a store and a path.
//!
//! Multipart uploads (`mlflow-artifacts/mpu/*`) are `multipart.rs`; they end in the same stores.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_blob::{BlobStore, PutOpts};
use cairn_core::api::{FileEntry, Role, Workspace};
use cairn_core::models::{ModelFile, ModelVersion, VersionRef};
use cairn_core::{Error, RelPath};
use cairn_store::{LoggedModel, TraceRecord};
use serde_json::{json, Value};

use super::wire::{MlError, MlResult, Req};
use super::Ctx;
use crate::auth::Caller;
use crate::routes::jobs::blobs_of;
use crate::routes::runs::artifacts_of;
use crate::state::AppState;

/// Whose artifacts a URI points into.
#[derive(Clone, Debug)]
pub enum Owner {
    Run {
        run_id: String,
    },
    Model(Box<LoggedModel>),
    /// A trace's files: its spans (`traces.json`) and attachments.
    Trace(Box<TraceRecord>),
    /// A registered model version: read-only, its files content-addressed in `blobs` (the
    /// workspace's blobs) through this manifest.
    Version {
        files: Vec<ModelFile>,
        version: Box<ModelVersion>,
    },
}

/// An MLflow artifact URI, resolved: the owner's store and the path inside it (the root for the
/// owner's whole artifact folder).
#[derive(Clone, Debug)]
pub struct Resolved {
    pub blobs: BlobStore,
    pub path: RelPath,
    pub owner: Owner,
}

impl Resolved {
    /// Checks that `caller` may use these artifacts with `role`: a workspace token, or a job's
    /// run-scoped token for its own run's artifacts and the models that run logged.
    pub fn authorize(&self, caller: &Caller, role: Role, ws: &str) -> Result<(), Error> {
        let run = match &self.owner {
            Owner::Run { run_id } => run_id.as_str(),
            Owner::Model(m) if caller.token.run_id.is_some() && !m.source_run_id.is_empty() => {
                m.source_run_id.as_str()
            }
            Owner::Trace(t) if caller.token.run_id.is_some() => {
                match t.metadata.get(cairn_store::SOURCE_RUN) {
                    Some(run) => run.as_str(),
                    None => return caller.require(role, Some(ws)),
                }
            }
            Owner::Model(_) | Owner::Trace(_) | Owner::Version { .. } => {
                return caller.require(role, Some(ws))
            }
        };
        caller.require_run(role, ws, run)
    }
}

/// Where a logged model's files live in the artifact store.
pub fn logged_model_artifacts(state: &AppState, workspace_id: &str, model_id: &str) -> BlobStore {
    state.artifacts.child(&format!("workspaces/{workspace_id}/logged-models/{model_id}/artifacts"))
}

/// Where a trace's files (its spans' `traces.json`, attachments) live in the artifact store.
pub fn trace_files(state: &AppState, workspace_id: &str, trace_id: &str) -> BlobStore {
    state.artifacts.child(&format!("workspaces/{workspace_id}/traces/{trace_id}/artifacts"))
}

/// Resolves an artifact location of workspace `ws`:
/// `mlflow-artifacts:/{exp}/{run}/artifacts[/{path}]` (also with a `//host` part, or as the bare
/// path after `/mlflow-artifacts/artifacts/`), `{exp}/models/{model_id}/artifacts[/{path}]`,
/// `{exp}/traces/{trace_id}/artifacts[/{path}]`,
/// `runs:/{run}[/{path}]` and `models:/{model_id}[/{path}]`. Traversal is refused (400); an
/// unknown run or model is 404. `registry/{name}/{version}[/{path}]` is a registered version's
/// files (read-only), what `model-versions/get-download-uri` hands out, and so are MLflow's
/// `models:/{name}/{version|latest}[/{path}]` and `models:/{name}@{alias}[/{path}]` (what
/// `copy_model_version` registers from).
pub async fn resolve(state: &AppState, ws: &Workspace, uri: &str) -> MlResult<Resolved> {
    if let Some(rest) = uri.strip_prefix("runs:/") {
        let (run, path) = split_first(&RelPath::parse_dir(rest.trim_start_matches('/'))?);
        return run_artifacts(state, ws, None, &run, path).await;
    }
    if let Some(rest) = uri.strip_prefix("models:/") {
        let (model, path) = split_first(&RelPath::parse_dir(rest.trim_start_matches('/'))?);
        if let Some((name, alias)) = model.split_once('@') {
            return version_artifacts(state, ws, name, VersionRef::parse(&format!("@{alias}"))?, path).await;
        }
        let (version, tail) = split_first(&path);
        let numbered = version == "latest" || version.parse::<i64>().is_ok();
        // A logged model's id (`m-…`) may be followed by a path that starts with digits.
        if numbered && !(model.starts_with("m-") && state.store.logged_model_exists(ws, &model).await?) {
            return version_artifacts(state, ws, &model, VersionRef::parse(&version)?, tail).await;
        }
        return model_artifacts(state, ws, None, &model, path).await;
    }
    let mut rest = uri;
    if let Some(r) = rest.strip_prefix("mlflow-artifacts:") {
        rest = r;
        // `mlflow-artifacts://host:port/path` names the server; the path is what matters here.
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('/').map(|i| &r[i..]).unwrap_or("");
        }
        rest = rest.strip_prefix('/').unwrap_or(rest);
    }
    let path = RelPath::parse_dir(rest)?;
    let parts: Vec<&str> = path.as_str().split('/').collect();
    if let ["registry", name, version, ..] = parts.as_slice() {
        let tail = RelPath::parse_dir(&parts[3..].join("/"))?;
        let n = version.parse::<i64>().ok().filter(|v| *v >= 1).ok_or_else(|| {
            MlError::invalid(format!("model version {version:?} in an artifact path must be a number from 1"))
        })?;
        return version_artifacts(state, ws, name, VersionRef::Number(n), tail).await;
    }
    let tail =
        |n: usize| -> MlResult<RelPath> { Ok(RelPath::parse_dir(&parts[n.min(parts.len())..].join("/"))?) };
    match parts.as_slice() {
        [exp, "models", model, "artifacts", ..] => {
            model_artifacts(state, ws, Some(exp), model, tail(4)?).await
        }
        [exp, "traces", trace, "artifacts", ..] => {
            trace_artifacts(state, ws, Some(exp), trace, tail(4)?).await
        }
        [exp, run, "artifacts", ..] => run_artifacts(state, ws, Some(exp), run, tail(3)?).await,
        _ => Err(MlError::invalid(format!(
            "artifact path {} is none of EXPERIMENT/RUN_ID/artifacts/…, \
             EXPERIMENT/models/MODEL_ID/artifacts/… and EXPERIMENT/traces/TRACE_ID/artifacts/…",
            cairn_core::quoted(path.as_str())
        ))),
    }
}

fn split_first(path: &RelPath) -> (String, RelPath) {
    let s = path.as_str();
    let (first, rest) = s.split_once('/').unwrap_or((s, ""));
    // `rest` is a suffix of a valid path, hence valid.
    (first.to_string(), RelPath::parse_dir(rest).unwrap_or_else(|_| RelPath::parse_dir("").unwrap()))
}

/// The experiment segment of a URI must be the owner's (`0` stands for the default experiment).
fn check_experiment(given: Option<&&str>, actual: &str, what: &str) -> MlResult<()> {
    match given {
        Some(&e) if e != actual && e != "0" => {
            Err(MlError::does_not_exist(format!("{what} is not in experiment {e} (it is in {actual})")))
        }
        _ => Ok(()),
    }
}

async fn run_artifacts(
    state: &AppState,
    ws: &Workspace,
    exp: Option<&&str>,
    run_id: &str,
    path: RelPath,
) -> MlResult<Resolved> {
    let not_found = || MlError::does_not_exist(format!("Run with id={run_id} not found"));
    let run = state.store.run(ws, run_id).await.map_err(|_| not_found())?;
    let meta = state.store.mlflow_run_meta(std::slice::from_ref(&run.id)).await?;
    let meta = meta.get(&run.id).ok_or_else(not_found)?;
    check_experiment(exp, &meta.experiment_id, &format!("run {run_id}"))?;
    Ok(Resolved { blobs: artifacts_of(state, &ws.id, &run.id), path, owner: Owner::Run { run_id: run.id } })
}

async fn model_artifacts(
    state: &AppState,
    ws: &Workspace,
    exp: Option<&&str>,
    model_id: &str,
    path: RelPath,
) -> MlResult<Resolved> {
    let model = state
        .store
        .logged_model(ws, model_id)
        .await
        .map_err(|_| MlError::does_not_exist(format!("Logged model with ID '{model_id}' not found.")))?;
    check_experiment(exp, &model.experiment_id, &format!("logged model {model_id}"))?;
    Ok(Resolved {
        blobs: logged_model_artifacts(state, &ws.id, &model.id),
        path,
        owner: Owner::Model(Box::new(model)),
    })
}

async fn trace_artifacts(
    state: &AppState,
    ws: &Workspace,
    exp: Option<&&str>,
    trace_id: &str,
    path: RelPath,
) -> MlResult<Resolved> {
    let trace = super::traces::load(state, ws, trace_id).await?;
    check_experiment(exp, &trace.experiment_id, &format!("trace {trace_id}"))?;
    Ok(Resolved { blobs: trace_files(state, &ws.id, &trace.id), path, owner: Owner::Trace(Box::new(trace)) })
}

async fn version_artifacts(
    state: &AppState,
    ws: &Workspace,
    name: &str,
    version: VersionRef,
    path: RelPath,
) -> MlResult<Resolved> {
    let version = state.store.model_version(ws, name, &version).await.map_err(super::registry::ml)?;
    let files = state.store.model_version_files(ws, name, version.version).await?;
    let owner = Owner::Version { files, version: Box::new(version) };
    Ok(Resolved { blobs: blobs_of(state, &ws.id), path, owner })
}

/// Resolves the artifact path of a request and checks the caller's right to it.
pub(super) async fn resolve_for(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    path: &str,
    role: Role,
) -> MlResult<Resolved> {
    // Reject a token that may not touch this workspace before looking anything up in it.
    if caller.token.run_id.is_none() {
        caller.require(Role::Reader, Some(ws))?;
    }
    let workspace = state.store.workspace(ws).await?;
    let resolved = resolve(state, &workspace, path).await?;
    resolved.authorize(caller, role, ws)?;
    Ok(resolved)
}

/// Registered versions are immutable.
pub(super) fn read_only(r: &Resolved) -> MlResult<()> {
    match r.owner {
        Owner::Version { .. } => {
            Err(MlError::invalid("a registered model version's files cannot be changed"))
        }
        _ => Ok(()),
    }
}

/// `PUT …/artifacts/{path}`: the body, streamed into the store (replacing a file of that name).
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, path)): Path<(String, String)>,
    request: Request,
) -> MlResult<Json<Value>> {
    let r = resolve_for(&state, &caller, &ws, &path, Role::Writer).await?;
    read_only(&r)?;
    if r.path.is_root() {
        return Err(MlError::invalid(format!(
            "artifact path {} names a folder, not a file",
            cairn_core::quoted(&path)
        )));
    }
    // Nothing keeps an MLflow artifact's SHA-256 (registering a model hashes what it copies):
    // a large one is not hashed on arrival. With `overwrite`, a path is never `Taken`.
    let opts = PutOpts {
        max_bytes: Some(state.max_upload_bytes),
        overwrite: true,
        lazy_sha256: true,
        ..Default::default()
    };
    r.blobs.put_stream_trailing(&r.path, request.into_body().into_data_stream(), opts, None).await?;
    Ok(Json(json!({})))
}

/// `GET …/artifacts/{path}`: the file's bytes, streamed.
pub async fn download(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, path)): Path<(String, String)>,
) -> MlResult<Response> {
    let r = resolve_for(&state, &caller, &ws, &path, Role::Reader).await?;
    if r.path.is_root() {
        return Err(MlError::invalid(format!(
            "artifact path {} names a folder, not a file",
            cairn_core::quoted(&path)
        )));
    }
    let blob = match &r.owner {
        Owner::Version { files, .. } => {
            let f = files.iter().find(|f| f.path == r.path.as_str()).ok_or_else(|| {
                MlError::does_not_exist(format!(
                    "no file {} in this model version",
                    cairn_core::quoted(r.path.as_str())
                ))
            })?;
            RelPath::parse(&f.sha256)?
        }
        _ => r.path.clone(),
    };
    let (size, stream) = r.blobs.get_stream(&blob).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::HeaderName::from_static("x-content-type-options"), "nosniff".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `GET …/artifacts?path=DIR`: the entries directly in `DIR` (`path` is the entry's name,
/// folders with `is_dir` and no size), as MLflow's server answers.
pub async fn list(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let path = req.opt_str("path").unwrap_or_default();
    let files: Vec<Value> = level(&state, &caller, &ws, &path)
        .await?
        .into_iter()
        .map(|(name, size)| file_info(name, size))
        .collect();
    Ok(Json(json!({"files": files})))
}

/// `GET …/mlflow/artifacts/list?run_id=…&path=…`: MLflow's ListArtifacts, one level of a run's
/// artifacts with paths from the run's artifact root, and that root as `root_uri`. The Python
/// client reads a run's `artifact_uri` and lists through the proxy above; this serves the
/// clients that ask the tracking API (MLflow's UI, its REST users).
pub async fn list_run(Ctx { state, caller, ws }: Ctx, req: Req) -> MlResult<Json<Value>> {
    let id = req.run_id()?;
    caller.require_run(Role::Reader, &ws, &id)?;
    let workspace = state.store.workspace(&ws).await?;
    let (run, meta) = super::runs::load(&state, &workspace, &id).await?;
    let path = req.opt_str("path").unwrap_or_default();
    let path = RelPath::parse_dir(&path).map_err(|e| MlError::invalid(e.to_string()))?;
    let root = format!("{}/{}/artifacts", meta.experiment_id, run.id);
    let under = if path.is_root() { root.clone() } else { format!("{root}/{path}") };
    let files: Vec<Value> = level(&state, &caller, &ws, &under)
        .await?
        .into_iter()
        .map(|(name, size)| file_info(if path.is_root() { name } else { format!("{path}/{name}") }, size))
        .collect();
    Ok(Json(json!({"root_uri": format!("mlflow-artifacts:/{root}"), "files": files})))
}

/// One level under a proxy path: each file's name and size, each folder's name (size `None`),
/// in name order. A path that names a file lists nothing (as MLflow does).
async fn level(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    path: &str,
) -> MlResult<Vec<(String, Option<u64>)>> {
    let r = resolve_for(state, caller, ws, path, Role::Reader).await?;
    let mut entries: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let listed = match &r.owner {
        Owner::Version { files, .. } => files
            .iter()
            .map(|f| FileEntry { path: f.path.clone(), size: f.size as u64, last_modified: 0 })
            .collect(),
        _ => r.blobs.list(&r.path).await?,
    };
    for f in listed {
        let Some(rel) = RelPath::parse(&f.path).ok().and_then(|p| p.strip_prefix(&r.path)) else { continue };
        match rel.as_str().split_once('/') {
            Some((dir, _)) => {
                entries.insert(dir.to_string(), None);
            }
            None if !rel.is_root() => {
                entries.insert(rel.as_str().to_string(), Some(f.size));
            }
            // `path` is a file: MLflow lists nothing below it.
            None => {}
        }
    }
    Ok(entries.into_iter().collect())
}

/// MLflow's `FileInfo`: a file with its size, or a folder.
fn file_info(path: String, size: Option<u64>) -> Value {
    match size {
        Some(size) => json!({"path": path, "is_dir": false, "file_size": size}),
        None => json!({"path": path, "is_dir": true}),
    }
}

/// `DELETE …/artifacts/{path}`: the file, or everything under the folder.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, path)): Path<(String, String)>,
) -> MlResult<Json<Value>> {
    let r = resolve_for(&state, &caller, &ws, &path, Role::Writer).await?;
    read_only(&r)?;
    r.blobs.delete_all(&r.path).await?;
    Ok(Json(json!({})))
}
