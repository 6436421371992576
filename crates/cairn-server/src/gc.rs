//! Garbage collection of a workspace's content-addressed blobs (`workspaces/{ws}/blobs/{sha256}`,
//! `routes::jobs::blobs_of`): the files of code snapshots and model versions, stored once however
//! often they are referenced, and therefore never deleted with what references them.
//!
//! A blob is kept when a code snapshot manifest (snapshots are what jobs and deployments run) or
//! a model version's manifest (in the store; deployments hold versions, which cannot be deleted
//! while in use) names it, or when it is younger than the grace period: clients upload blobs
//! before they post the manifest that references them. Logged models and run artifacts live in
//! their own folders, not here.
//!
//! Writers that add references to existing blobs (`routes::jobs::create_snapshot`,
//! `models::register_*`) hold [`AppState::blob_refs`] for reading from their "is it there?" check
//! until their manifest is recorded; collection holds it for writing from reading the references
//! until its deletions are done, so a blob is never deleted under a manifest that was just
//! checked against it. The lock is per process: with several servers on one PostgreSQL database,
//! run the collection with a grace period longer than any registration takes.
//!
//! It also removes the staged parts of expired MLflow multipart uploads
//! (`mlflow::multipart::sweep_expired`), which are otherwise only swept when an upload is created.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use cairn_core::api::{GcReport, GcRequest, GcWorkspace, Role, Workspace};
use cairn_core::{now_ms, Error, RelPath};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract;
use crate::routes::jobs::{blobs_of, read_snapshot, snapshots_of};
use crate::state::AppState;

/// Unreferenced blobs younger than this are kept unless the request says otherwise.
pub const DEFAULT_GRACE_SECONDS: u64 = 3600;

fn is_sha256(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `POST /api/v1/admin/gc`: admins only (of the workspace named, or of all of them).
#[utoipa::path(post, path = "/api/v1/admin/gc", tag = "admin", request_body = GcRequest,
    responses((status = 200, body = GcReport), (status = 403, body = cairn_core::api::ErrorBody)))]
pub async fn handle(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    extract::Json(req): extract::Json<GcRequest>,
) -> ApiResult<Json<GcReport>> {
    caller.require(Role::Admin, req.workspace.as_deref())?;
    Ok(Json(collect(&state, &req).await?))
}

/// Collects the blobs of the requested workspace (or of every workspace).
pub async fn collect(state: &AppState, req: &GcRequest) -> Result<GcReport, Error> {
    let grace_seconds = req.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
    let workspaces = match &req.workspace {
        Some(name) => vec![state.store.workspace(name).await?],
        None => {
            let mut all = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = state.store.list_workspaces(token.as_deref(), Some(1000)).await?;
                all.extend(page.items);
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            all
        }
    };
    let cutoff =
        now_ms().saturating_sub(i64::try_from(grace_seconds.saturating_mul(1000)).unwrap_or(i64::MAX));
    let mut report = GcReport { dry_run: req.dry_run, grace_seconds, ..Default::default() };
    for ws in workspaces {
        let found = collect_workspace(state, &ws, cutoff, req.dry_run).await?;
        report.deleted += found.deleted;
        report.deleted_bytes += found.deleted_bytes;
        report.workspaces.push(found);
    }
    let (uploads, bytes) =
        crate::mlflow::multipart::sweep_expired(state, req.workspace.as_deref(), req.dry_run).await?;
    report.expired_uploads = uploads;
    report.expired_upload_bytes = bytes;
    Ok(report)
}

/// Every blob some snapshot or model version of `ws` references.
async fn referenced(state: &AppState, ws: &Workspace) -> Result<HashSet<String>, Error> {
    let mut live = state.store.model_blob_refs(ws).await?;
    for entry in snapshots_of(state, &ws.id).list(&RelPath::parse_dir("")?).await? {
        let Some(id) = entry.path.strip_suffix(".json") else { continue };
        let files = read_snapshot(state, &ws.id, id).await?;
        live.extend(files.into_iter().map(|f| f.sha256.to_lowercase()));
    }
    Ok(live)
}

async fn collect_workspace(
    state: &AppState,
    ws: &Workspace,
    cutoff_ms: i64,
    dry_run: bool,
) -> Result<GcWorkspace, Error> {
    let blobs = blobs_of(state, &ws.id);
    let mut out = GcWorkspace { workspace: ws.name.clone(), ..Default::default() };
    let _exclusive = state.blob_refs.write().await;
    // Listed before the references are read: a blob written after this is not considered.
    let stored = blobs.list(&RelPath::parse_dir("")?).await?;
    let live = referenced(state, ws).await?;
    for blob in stored {
        if !is_sha256(&blob.path) {
            continue;
        }
        if live.contains(&blob.path) {
            out.referenced += 1;
            out.referenced_bytes += blob.size;
        } else if blob.last_modified >= cutoff_ms {
            out.young += 1;
            out.young_bytes += blob.size;
        } else {
            if !dry_run {
                blobs.delete_file(&RelPath::parse(&blob.path)?).await?;
            }
            out.deleted += 1;
            out.deleted_bytes += blob.size;
        }
    }
    if out.deleted > 0 {
        tracing::info!(
            workspace = %ws.name,
            deleted = out.deleted,
            bytes = out.deleted_bytes,
            dry_run,
            "collected unreferenced blobs"
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sha256_names_are_blobs() {
        assert!(super::is_sha256(&"ab".repeat(32)));
        assert!(!super::is_sha256(&"AB".repeat(32)));
        assert!(!super::is_sha256("abc"));
        assert!(!super::is_sha256(&format!("{}#1", "ab".repeat(32))));
    }
}
