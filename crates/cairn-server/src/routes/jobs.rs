//! Code snapshots, content-addressed blobs, job submission, cancel and logs.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_blob::{BlobStore, PutOpts};
use cairn_core::api::Role;
use cairn_core::runs::*;
use cairn_core::{Error, RelPath};
use cairn_store::NewRun;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::jobs::runner::parse_datastore_uri;
use crate::state::AppState;

/// Content-addressed file contents of a workspace (code snapshots), keyed by SHA-256.
pub fn blobs_of(state: &AppState, ws_id: &str) -> BlobStore {
    state.artifacts.child(&format!("workspaces/{ws_id}/blobs"))
}

pub(crate) fn snapshots_of(state: &AppState, ws_id: &str) -> BlobStore {
    state.artifacts.child(&format!("workspaces/{ws_id}/snapshots"))
}

/// Largest code snapshot accepted (files are listed by the client before upload).
pub const MAX_SNAPSHOT_BYTES: u64 = 300 * 1024 * 1024;

pub async fn read_snapshot(state: &AppState, ws_id: &str, id: &str) -> Result<Vec<SnapshotFile>, Error> {
    let path = RelPath::parse(&format!("{id}.json"))?;
    let (_, mut stream) = snapshots_of(state, ws_id)
        .get_stream(&path)
        .await
        .map_err(|_| Error::not_found("code snapshot", id))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = futures::StreamExt::next(&mut stream).await {
        bytes.extend_from_slice(&chunk?);
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(format!("snapshot {id} is unreadable: {e}")))
}

/// Records a code snapshot's manifest; answers which contents still have to be uploaded.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/snapshots", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name")), request_body = CreateSnapshot,
    responses((status = 201, body = SnapshotCreated), (status = 413, body = cairn_core::api::ErrorBody)))]
pub async fn create_snapshot(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(mut req): extract::Json<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<SnapshotCreated>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let total: u64 = req.files.iter().map(|f| f.size).sum();
    if total > MAX_SNAPSHOT_BYTES {
        return Err(Error::TooLarge(format!(
            "the code snapshot is {total} bytes; the limit is {MAX_SNAPSHOT_BYTES}: keep data out of the code folder \
             (use a datastore) or list it in .amlignore"
        ))
        .into());
    }
    for f in &req.files {
        RelPath::parse(&f.path)?;
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("sha256 of {} must be 64 hexadecimal digits", f.path)).into());
        }
    }
    req.files.sort_by(|a, b| a.path.cmp(&b.path));
    req.files.dedup_by(|a, b| a.path == b.path);
    let manifest = serde_json::to_vec(&req.files).map_err(Error::internal)?;
    let id = hex::encode(Sha256::digest(&manifest));
    let blobs = blobs_of(&state, &workspace.id);
    // Blobs found here must not be collected before the manifest naming them is stored.
    let _refs = state.blob_refs.read().await;
    let mut missing = Vec::new();
    for f in &req.files {
        if !missing.contains(&f.sha256) && blobs.head(&RelPath::parse(&f.sha256)?).await?.is_none() {
            missing.push(f.sha256.to_lowercase());
        }
    }
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(manifest))]);
    let opts = PutOpts { overwrite: true, ..Default::default() };
    snapshots_of(&state, &workspace.id)
        .put_stream(&RelPath::parse(&format!("{id}.json"))?, body, opts)
        .await?;
    Ok((StatusCode::CREATED, Json(SnapshotCreated { id, missing })))
}

/// Uploads one content-addressed blob; its name must be its SHA-256 (422 otherwise).
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/blobs/{sha256}", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name"), ("sha256" = String, Path, description = "content hash")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201), (status = 422, body = cairn_core::api::ErrorBody)))]
pub async fn upload_blob(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, sha)): Path<(String, String)>,
    request: Request,
) -> ApiResult<StatusCode> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            Error::invalid(format!("blob name {sha:?} must be a 64-digit hexadecimal SHA-256")).into()
        );
    }
    // One blob may be a large model file: the snapshot limit applies to manifests (create_snapshot).
    let opts = PutOpts {
        expected_sha256: Some(&sha),
        expected_crc32: None,
        max_bytes: Some(state.max_upload_bytes),
        overwrite: true,
        ..Default::default()
    };
    blobs_of(&state, &workspace.id)
        .put_stream(&RelPath::parse(&sha.to_lowercase())?, request.into_body().into_data_stream(), opts)
        .await?;
    Ok(StatusCode::CREATED)
}

/// Answers which of the given contents the workspace's blobs lack (for uploads of model files,
/// which are not code snapshots and have no snapshot size limit).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/blobs/missing", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name")), request_body = cairn_core::models::BlobsQuery,
    responses((status = 200, body = cairn_core::models::MissingBlobs), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn missing_blobs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(req): extract::Json<cairn_core::models::BlobsQuery>,
) -> ApiResult<Json<cairn_core::models::MissingBlobs>> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let blobs = blobs_of(&state, &workspace.id);
    let mut missing = Vec::new();
    for sha in &req.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!("{sha:?} is not a 64-digit hexadecimal SHA-256")).into());
        }
        let sha = sha.to_lowercase();
        if !missing.contains(&sha) && blobs.head(&RelPath::parse(&sha)?).await?.is_none() {
            missing.push(sha);
        }
    }
    Ok(Json(cairn_core::models::MissingBlobs { missing }))
}

/// Submits a command job: validated now (environment, compute, snapshot, inputs, command), then
/// queued durably; the scheduler starts it when its compute has a free node.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/jobs", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name")), request_body = SubmitJob,
    responses((status = 201, body = Run), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(ws): Path<String>,
    extract::Json(job): extract::Json<SubmitJob>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    crate::routes::runs::validate_experiment_name(&job.experiment)?;
    if job.command.trim().is_empty() {
        return Err(Error::invalid("command must not be empty").into());
    }
    let placeholder: Vec<(String, String)> =
        job.inputs.keys().map(|k| (k.clone(), "x".to_string())).collect();
    crate::jobs::runner::substitute(&job.command, &placeholder)?;
    let (env_name, env_version) = cairn_core::names::parse_environment_ref(&job.environment)?;
    let env = state.store.environment(&workspace, &env_name, env_version).await?;
    state.store.compute(&workspace.id, &job.compute).await.map_err(|e| match e {
        Error::NotFound { .. } => Error::NotFound {
            kind: "compute",
            name: format!("{}\" in workspace \"{}", job.compute, workspace.name),
        },
        other => other,
    })?;
    if let Some(snapshot) = &job.snapshot {
        read_snapshot(&state, &workspace.id, snapshot).await?;
    }
    for (name, input) in &job.inputs {
        let JobInput::Data(input) = input else { continue };
        let (ds_name, path) = parse_datastore_uri(&input.path)?;
        let ds = state.store.datastore(&workspace, ds_name).await?;
        let blobs = state.blobs_of(&ds)?;
        if !path.is_root() && blobs.is_empty(&path).await? && blobs.head(&path).await?.is_none() {
            return Err(Error::invalid(format!(
                "input \"{name}\": {} does not exist in datastore \"{ds_name}\"",
                if path.is_root() { "/" } else { path.as_str() }
            ))
            .into());
        }
    }
    let (exp_id, _) = state.store.ensure_experiment(&workspace, &job.experiment).await?;
    let job_json = serde_json::to_value(&job).map_err(Error::internal)?;
    let env_ref = format!("{}@{}", env.name, env.version);
    let id = state
        .store
        .create_run(
            &workspace,
            NewRun {
                experiment_id: &exp_id,
                display_name: job.display_name.as_deref().unwrap_or(""),
                status: RunStatus::Queued,
                job: Some(&job_json),
                compute: Some(&job.compute),
                environment: Some(&env_ref),
                parent_id: None,
                created_by: Some(&caller.token.name),
                tags: &job.tags,
                started_at: None,
            },
        )
        .await?;
    state.jobs.wake();
    tracing::info!(run = %id, workspace = %ws, experiment = %job.experiment, "job queued");
    Ok((StatusCode::CREATED, Json(state.store.run(&workspace, &id).await?)))
}

/// Cancels a job: a queued one at once, a running one by stopping its process tree.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/runs/{run}/cancel", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id")),
    responses((status = 202, body = Run), (status = 409, body = cairn_core::api::ErrorBody)))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Run>)> {
    caller.require(Role::Writer, Some(&ws))?;
    let workspace = state.store.workspace(&ws).await?;
    let current = state.store.run(&workspace, &run).await?;
    if current.status.is_terminal() {
        return Err(
            Error::conflict(format!("run {run} has already ended ({})", current.status.as_str())).into()
        );
    }
    // A job of another server: recorded here, and stopped by its server's scheduler, which alone
    // reaches its processes; refused while that server is unreachable (they would run on).
    let elsewhere = current.server.as_ref().filter(|s| s.id != state.server.id);
    if let Some(s) = elsewhere.filter(|s| !s.alive && current.status != RunStatus::Queued) {
        return Err(Error::conflict(format!(
            "run {run} is run by server {} ({}, {}), which is unreachable; cancel it once that server is back",
            s.id, s.host, s.url
        ))
        .into());
    }
    if !state
        .store
        .transition_run(&run, &[RunStatus::Queued, RunStatus::NotStarted], RunStatus::Canceled, None)
        .await?
        && !state.jobs.stop(&run, crate::jobs::StopReason::Canceled)
        && (current.job.is_none() || elsewhere.is_some())
    {
        state.store.transition_run(&run, &[], RunStatus::Canceled, None).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(state.store.run(&workspace, &run).await?)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Byte offset to read from (the `next_offset` of the previous call).
    #[serde(default)]
    pub offset: u64,
    /// Stream the log (`text/plain`, chunked) from `offset` as it is written, until the run ends.
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    pub text: String,
    pub next_offset: u64,
    /// The run has ended: no more text will come.
    pub done: bool,
}

/// Reads a run's log from `offset` (at most 1 MiB at a time); poll with `next_offset` to follow,
/// or ask for `follow=true`: a chunked `text/plain` stream that closes when the run has ended.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/runs/{run}/logs", tag = "jobs",
    params(("ws" = String, Path, description = "workspace name"), ("run" = String, Path, description = "run id"), LogQuery),
    responses((status = 200, description = "a LogChunk; with follow=true, the log as a text/plain stream",
               content((LogChunk = "application/json"), (String = "text/plain")))))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, run)): Path<(String, String)>,
    extract::Query(q): extract::Query<LogQuery>,
    _headers: HeaderMap,
) -> ApiResult<Response> {
    caller.require_run(Role::Reader, &ws, &run)?;
    let workspace = state.store.workspace(&ws).await?;
    let current = state.store.run(&workspace, &run).await?;
    if q.follow {
        return Ok(follow_log(state, workspace, run, q.offset));
    }
    let (bytes, next) = read_log(&state, &run, q.offset).await?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let done = current.status.is_terminal() && text.is_empty();
    Ok(Json(LogChunk { text, next_offset: next, done }).into_response())
}

/// Up to 1 MiB of a run's log from `offset`, and the offset after it.
async fn read_log(state: &AppState, run: &str, offset: u64) -> Result<(Vec<u8>, u64), Error> {
    use std::io::{Read, Seek, SeekFrom};
    let path = crate::jobs::runner::log_path(state, run);
    tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, u64)> {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        // A rotated log restarts at 0: follow from its beginning.
        let start = if offset > len { 0 } else { offset };
        f.seek(SeekFrom::Start(start))?;
        let mut buf = Vec::new();
        f.take(1024 * 1024).read_to_end(&mut buf)?;
        let next = start + buf.len() as u64;
        Ok((buf, next))
    })
    .await
    .map_err(Error::internal)?
    .map_err(Error::internal)
}

/// The log as a stream: new bytes as they are written, ending once the run has ended and
/// everything written before that has been sent. The status is read before the file, so a
/// run seen ended has no text left after an empty read. A stopping server ends it too (the
/// client then sees a run that has not ended).
fn follow_log(state: Arc<AppState>, ws: cairn_core::api::Workspace, run: String, offset: u64) -> Response {
    let stopping = state.stopping.subscribe();
    let stream = futures::stream::unfold(Some(offset), move |offset| {
        let (state, ws, run, mut stopping) = (state.clone(), ws.clone(), run.clone(), stopping.clone());
        async move {
            let mut offset = offset?;
            loop {
                if *stopping.borrow() {
                    return None;
                }
                let step = async {
                    let ended = state.store.run(&ws, &run).await?.status.is_terminal();
                    let (bytes, next) = read_log(&state, &run, offset).await?;
                    Ok::<_, Error>((ended, bytes, next))
                };
                match step.await {
                    Ok((_, bytes, next)) if !bytes.is_empty() => {
                        return Some((Ok(axum::body::Bytes::from(bytes)), Some(next)))
                    }
                    Ok((true, _, _)) => return None,
                    Ok((false, _, next)) => offset = next,
                    Err(e) => return Some((Err(std::io::Error::other(e.to_string())), None)),
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    _ = stopping.wait_for(|stop| *stop) => return None,
                }
            }
        }
    });
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], axum::body::Body::from_stream(stream))
        .into_response()
}
