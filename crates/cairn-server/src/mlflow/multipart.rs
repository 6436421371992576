//! MLflow's proxied multipart artifact uploads (`mlflow-artifacts/mpu/{create,complete,abort}`),
//! which the stock client uses for files of `MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE` or more
//! when `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD` is set or `/api/3.0/mlflow/server-info` advertises
//! them (it does here).
//!
//! The contract (mlflow's `http_artifact_repo.py`): `create` at `…/mpu/create/{artifact dir}` with
//! `{"path": LOCAL_FILE, "num_parts": N}` (the artifact is named after the local file's base
//! name) answers an upload id and one URL per part; the client PUTs each part's bytes to its URL
//! with plain `requests.put`, **without** the tracking token, so each URL carries its own
//! authority: `…/mpu/parts/{upload_id}/{part}?expires=UNIX_S&signature=HMAC` (HMAC-SHA256 under
//! the server secret's URL key over workspace, upload id, part number and expiry, checked in
//! constant time). `complete` (token, writer) assembles the parts in order into the artifact
//! through `BlobStore::put_stream`, so nothing is visible before it and memory stays bounded;
//! `abort` discards them.
//!
//! Parts and the upload's description are staged in the artifact store under
//! `mlflow-uploads/{upload_id}/` (`meta.json`, `part-00001`, …). An upload lives [`UPLOAD_TTL_S`];
//! each `create` sweeps expired staging, and so does `cairn admin gc` ([`sweep_expired`]), so an
//! abandoned upload does not stay forever even when no upload follows it.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cairn_blob::{BlobStore, PutOpts};
use cairn_core::api::Role;
use cairn_core::{now_ms, RelPath};
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::artifacts::{read_only, resolve_for};
use super::wire::{MlError, MlResult, Req};
use crate::auth::Caller;
use crate::secret::ServerSecret;
use crate::state::AppState;

/// How long an upload (and its part URLs) stays valid after `create`.
pub const UPLOAD_TTL_S: i64 = 24 * 3600;
/// S3's limit, which MLflow's client also assumes.
const MAX_PARTS: i64 = 10_000;
/// Where uploads are staged, at the root of the artifact store.
const STAGING: &str = "mlflow-uploads";

/// What `create` records about an upload, read back by its parts, `complete` and `abort`.
#[derive(Serialize, Deserialize)]
struct Meta {
    /// The workspace name of the URL the upload was created under.
    workspace: String,
    /// The artifact URI path (`EXP/RUN/artifacts/…/FILE`) the parts become.
    target: String,
    num_parts: i64,
    /// Unix seconds after which the part URLs and the upload are no longer accepted.
    expires: i64,
}

fn staging(state: &AppState) -> BlobStore {
    state.artifacts.child(STAGING)
}

fn rel(s: &str) -> RelPath {
    // Only ever built from a checked upload id and fixed names.
    RelPath::parse(s).expect("staging paths are valid relative paths")
}

fn part_file(upload_id: &str, part: i64) -> String {
    format!("{upload_id}/part-{part:05}")
}

/// An upload id is 32 lower-case hex digits; anything else is unknown (and never a path).
fn check_upload_id(id: &str) -> MlResult<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(unknown_upload(id))
    }
}

fn unknown_upload(id: &str) -> MlError {
    MlError::does_not_exist(format!(
        "no multipart upload with id {id:?} (never created, completed, aborted or expired)"
    ))
}

fn forbidden(message: &str) -> MlError {
    MlError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
}

/// What a part URL's signature covers.
fn signed_data(ws: &str, upload_id: &str, part: i64, expires: i64) -> String {
    format!("mlflow-mpu-part\0{ws}\0{upload_id}\0{part}\0{expires}")
}

/// The signature of part `part` of an upload (see the module doc).
pub fn sign_part(secret: &ServerSecret, ws: &str, upload_id: &str, part: i64, expires: i64) -> String {
    secret.url_mac(&signed_data(ws, upload_id, part, expires))
}

/// Checks a part URL's signature (constant time) and then its expiry, at `now_s`.
pub fn check_part_signature(
    secret: &ServerSecret,
    ws: &str,
    upload_id: &str,
    part: i64,
    expires: i64,
    signature: &str,
    now_s: i64,
) -> MlResult<()> {
    if !secret.verify_url_mac(&signed_data(ws, upload_id, part, expires), signature) {
        return Err(forbidden("the part URL's signature is not valid for this upload and part"));
    }
    if now_s >= expires {
        return Err(forbidden("the part URL has expired"));
    }
    Ok(())
}

/// The scheme and authority the client reached this server at, so that part URLs work through
/// the same address (a proxy in front included); the listener's URL without a usable `Host`.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b)));
    match host {
        Some(host) => {
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.eq_ignore_ascii_case("https"));
            format!("{}://{host}", if https { "https" } else { "http" })
        }
        None => state.public_url().trim_end_matches('/').to_string(),
    }
}

/// The artifact URI path an mpu request names: the folder in the URL and the base name of the
/// client's local file (`path` in the body), as MLflow's artifact repositories name it.
fn target_of(dir: &str, req: &Req) -> MlResult<String> {
    let local = req.str("path")?;
    let name = local.rsplit('/').next().unwrap_or_default();
    let name =
        RelPath::parse(name).ok().filter(|p| !p.is_root() && !p.as_str().contains('/')).ok_or_else(|| {
            MlError::invalid(format!("'path' {} does not end in a file name", cairn_core::quoted(&local)))
        })?;
    let dir = dir.trim_matches('/');
    Ok(if dir.is_empty() { name.as_str().to_string() } else { format!("{dir}/{}", name.as_str()) })
}

async fn read_meta(state: &AppState, upload_id: &str) -> MlResult<Meta> {
    check_upload_id(upload_id)?;
    let path = rel(&format!("{upload_id}/meta.json"));
    let (_, stream) = staging(state).get_stream(&path).await.map_err(|e| match e {
        cairn_core::Error::NotFound { .. } => unknown_upload(upload_id),
        e => e.into(),
    })?;
    let bytes = stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await?;
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| {
        MlError::from(cairn_core::Error::internal(format!("upload {upload_id}: bad meta.json: {e}")))
    })?;
    if now_ms() / 1000 >= meta.expires {
        discard(state, upload_id).await;
        return Err(unknown_upload(upload_id));
    }
    Ok(meta)
}

async fn discard(state: &AppState, upload_id: &str) {
    if let Err(e) = staging(state).delete_all(&rel(upload_id)).await {
        tracing::warn!(upload_id, error = %e, "could not remove a multipart upload's staging");
    }
}

/// Sweeps expired uploads in the background (when an upload is created) unless a sweep is
/// already running. The sweep's lock is taken before `create` answers, so a `cairn admin gc`
/// that comes after waits for it.
fn sweep(state: &Arc<AppState>) {
    let Ok(guard) = state.upload_sweep.clone().try_lock_owned() else { return };
    let state = state.clone();
    tokio::spawn(async move {
        let _sweeping = guard;
        if let Err(e) = sweep_unlocked(&state, None, false).await {
            tracing::warn!(error = %e, "could not sweep multipart upload staging");
        }
    });
}

/// Removes the staging of expired uploads (of workspace `workspace` only, when given) and
/// returns how many there were and their bytes; a dry run only counts. An upload is expired
/// when its `meta.json` says so or its newest file is older than [`UPLOAD_TTL_S`]; one without a
/// readable `meta.json` (a `create` cut short) is swept only when no workspace is named.
pub async fn sweep_expired(
    state: &AppState,
    workspace: Option<&str>,
    dry_run: bool,
) -> Result<(u64, u64), cairn_core::Error> {
    let _sweeping = state.upload_sweep.lock().await;
    sweep_unlocked(state, workspace, dry_run).await
}

async fn sweep_unlocked(
    state: &AppState,
    workspace: Option<&str>,
    dry_run: bool,
) -> Result<(u64, u64), cairn_core::Error> {
    let store = staging(state);
    let root = RelPath::parse_dir("").expect("the root is a valid folder");
    // (newest modification, total bytes) per upload id.
    let mut uploads: std::collections::BTreeMap<String, (i64, u64)> = Default::default();
    for f in store.list(&root).await? {
        let id = f.path.split('/').next().unwrap_or_default().to_string();
        let u = uploads.entry(id).or_insert((i64::MIN, 0));
        u.0 = u.0.max(f.last_modified);
        u.1 += f.size;
    }
    let now = now_ms();
    let (mut count, mut bytes) = (0, 0);
    for (id, (newest, size)) in uploads {
        if check_upload_id(&id).is_err() {
            continue;
        }
        // Parts cannot arrive after the expiry, so files older than the lifetime also mean an
        // expired upload (whatever its meta.json says, or when it has none).
        let old = newest < now - UPLOAD_TTL_S * 1000;
        let expired = match load_meta(&store, &id).await {
            Some(meta) => {
                (old || now / 1000 >= meta.expires) && workspace.is_none_or(|w| w == meta.workspace)
            }
            None => old && workspace.is_none(),
        };
        if expired {
            if !dry_run {
                discard(state, &id).await;
            }
            count += 1;
            bytes += size;
        }
    }
    Ok((count, bytes))
}

/// An upload's `meta.json`, if it is there and readable.
async fn load_meta(store: &BlobStore, upload_id: &str) -> Option<Meta> {
    let (_, stream) = store.get_stream(&rel(&format!("{upload_id}/meta.json"))).await.ok()?;
    let bytes = stream
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Loads an upload for `complete`/`abort` and checks that the request names the same artifact,
/// with the caller's right to write it.
async fn open_upload(
    state: &AppState,
    caller: &Caller,
    ws: &str,
    dir: &str,
    req: &Req,
) -> MlResult<(String, Meta, super::artifacts::Resolved)> {
    let target = target_of(dir, req)?;
    // Resolve (and authorize) first, so a caller without rights learns nothing about uploads.
    let resolved = resolve_for(state, caller, ws, &target, Role::Writer).await?;
    let upload_id = req.str("upload_id")?;
    let meta = read_meta(state, &upload_id).await?;
    if meta.workspace != ws || meta.target != target {
        return Err(MlError::invalid(format!(
            "multipart upload {upload_id} is for artifact {}, not {}",
            cairn_core::quoted(&meta.target),
            cairn_core::quoted(&target)
        )));
    }
    Ok((upload_id, meta, resolved))
}

/// `POST …/mlflow-artifacts/mpu/create/{dir}`: a new upload and its signed part URLs.
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, dir)): Path<(String, String)>,
    headers: HeaderMap,
    req: Req,
) -> MlResult<Json<Value>> {
    let target = target_of(&dir, &req)?;
    let resolved = resolve_for(&state, &caller, &ws, &target, Role::Writer).await?;
    read_only(&resolved)?;
    let num_parts = req.opt_i64("num_parts")?.unwrap_or(1);
    if !(0..=MAX_PARTS).contains(&num_parts) {
        return Err(MlError::invalid(format!("'num_parts' must be from 0 to {MAX_PARTS}, not {num_parts}")));
    }
    sweep(&state);

    let upload_id = {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        hex::encode(id)
    };
    let expires = now_ms() / 1000 + UPLOAD_TTL_S;
    let meta = Meta { workspace: ws.clone(), target, num_parts, expires };
    let body = bytes::Bytes::from(serde_json::to_vec(&meta).expect("meta serializes"));
    staging(&state)
        .put_stream(
            &rel(&format!("{upload_id}/meta.json")),
            futures::stream::iter([Ok::<_, std::convert::Infallible>(body)]),
            PutOpts { overwrite: false, ..Default::default() },
        )
        .await?;

    let base = format!(
        "{}/workspaces/{ws}/mlflow/api/2.0/mlflow-artifacts/mpu/parts/{upload_id}",
        base_url(&state, &headers)
    );
    let credentials: Vec<Value> = (1..=num_parts)
        .map(|part| {
            let signature = sign_part(&state.secret, &ws, &upload_id, part, expires);
            json!({
                "url": format!("{base}/{part}?expires={expires}&signature={signature}"),
                "part_number": part,
                "headers": {},
            })
        })
        .collect();
    Ok(Json(json!({"upload_id": upload_id, "credentials": credentials})))
}

#[derive(Deserialize)]
pub struct PartQuery {
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    signature: Option<String>,
}

/// `PUT …/mpu/parts/{upload_id}/{part}?expires=…&signature=…` (no token: the signature is the
/// authority): the part's bytes, streamed into staging (a retried part replaces the earlier one).
pub async fn put_part(
    State(state): State<Arc<AppState>>,
    Path((ws, upload_id, part)): Path<(String, String, String)>,
    Query(q): Query<PartQuery>,
    request: Request,
) -> MlResult<Response> {
    let part: i64 = part
        .parse()
        .ok()
        .filter(|p| (1..=MAX_PARTS).contains(p))
        .ok_or_else(|| MlError::invalid(format!("part number {part:?} must be from 1 to {MAX_PARTS}")))?;
    let expires = q.expires.as_deref().and_then(|e| e.parse::<i64>().ok());
    let (Some(expires), Some(signature)) = (expires, q.signature.as_deref()) else {
        return Err(forbidden("a part URL must carry 'expires' and 'signature'"));
    };
    check_part_signature(&state.secret, &ws, &upload_id, part, expires, signature, now_ms() / 1000)?;
    let meta = read_meta(&state, &upload_id).await?;
    if part > meta.num_parts {
        return Err(MlError::invalid(format!(
            "part {part} is beyond the {} parts of upload {upload_id}",
            meta.num_parts
        )));
    }
    let opts = PutOpts {
        expected_sha256: None,
        expected_crc32: None,
        max_bytes: Some(state.max_upload_bytes),
        overwrite: true,
        ..Default::default()
    };
    let written = staging(&state)
        .put_stream(&rel(&part_file(&upload_id, part)), request.into_body().into_data_stream(), opts)
        .await?;
    Ok(([(header::ETAG, format!("\"{}\"", written.sha256))], Json(json!({}))).into_response())
}

/// `POST …/mpu/complete/{dir}` with `{"path", "upload_id", "parts": [{"part_number", …}]}`: the
/// parts, in order, become the artifact in one atomic write; the staging is removed.
pub async fn complete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, dir)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let (upload_id, meta, resolved) = open_upload(&state, &caller, &ws, &dir, &req).await?;
    read_only(&resolved)?;
    let mut listed = BTreeSet::new();
    for p in req.array("parts") {
        let n = p
            .get("part_number")
            .and_then(|n| n.as_i64().or_else(|| n.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| MlError::invalid("each entry of 'parts' needs an integer 'part_number'"))?;
        if !(1..=meta.num_parts).contains(&n) || !listed.insert(n) {
            return Err(MlError::invalid(format!(
                "part {n} is listed twice or is not one of the upload's parts 1 to {}",
                meta.num_parts
            )));
        }
    }
    if let Some(missing) = (1..=meta.num_parts).find(|n| !listed.contains(n)) {
        return Err(MlError::invalid(format!("'parts' does not list part {missing} of upload {upload_id}")));
    }
    let store = staging(&state);
    let present: BTreeSet<String> = store.list(&rel(&upload_id)).await?.into_iter().map(|f| f.path).collect();
    if let Some(missing) = (1..=meta.num_parts).find(|n| !present.contains(&part_file(&upload_id, *n))) {
        return Err(MlError::invalid(format!("part {missing} of upload {upload_id} was never uploaded")));
    }
    let parts: Vec<RelPath> = (1..=meta.num_parts).map(|n| rel(&part_file(&upload_id, n))).collect();
    let reader = store.clone();
    let body = futures::stream::iter(parts)
        .then(move |p| {
            let reader = reader.clone();
            // Boxed: a concrete future type keeps the handler's future `Send` for axum.
            async move { reader.get_stream(&p).await.map(|(_, s)| s) }.boxed()
        })
        .try_flatten()
        .boxed();
    let opts = PutOpts {
        expected_sha256: None,
        expected_crc32: None,
        max_bytes: Some(state.max_upload_bytes),
        overwrite: true,
        ..Default::default()
    };
    resolved.blobs.put_stream(&resolved.path, body, opts).await?;
    discard(&state, &upload_id).await;
    Ok(Json(json!({})))
}

/// `POST …/mpu/abort/{dir}` with `{"path", "upload_id"}`: the staged parts are discarded.
pub async fn abort(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, dir)): Path<(String, String)>,
    req: Req,
) -> MlResult<Json<Value>> {
    let (upload_id, _, _) = open_upload(&state, &caller, &ws, &dir, &req).await?;
    discard(&state, &upload_id).await;
    Ok(Json(json!({})))
}

/// `GET …/api/3.0/mlflow/server-info`: what the client asks before choosing multipart uploads.
///
/// Not advertised: through this proxy every byte of a multipart upload is written twice (the
/// staged part, then the assembled artifact), so it measured 2.5× slower than one streamed PUT
/// (docs/benchmarks.md). Clients that want it (a proxy capping request sizes, retries of single
/// parts) set `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true`, which the routes above serve.
pub async fn server_info() -> Json<Value> {
    Json(json!({"multipart_uploads_enabled": false, "multipart_downloads_enabled": false}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_signatures_bind_upload_part_workspace_and_expiry() {
        let secret = ServerSecret::from_material(b"0123456789abcdef0123456789abcdef");
        let id = "0123456789abcdef0123456789abcdef";
        let sig = sign_part(&secret, "w", id, 2, 1000);
        assert!(check_part_signature(&secret, "w", id, 2, 1000, &sig, 999).is_ok());
        // Expired: refused, but only once the signature is genuine.
        let e = check_part_signature(&secret, "w", id, 2, 1000, &sig, 1000).unwrap_err();
        assert_eq!((e.status, e.message.contains("expired")), (StatusCode::FORBIDDEN, true));
        for (ws, part, expires) in [("v", 2, 1000), ("w", 3, 1000), ("w", 2, 5000)] {
            let e = check_part_signature(&secret, ws, id, part, expires, &sig, 999).unwrap_err();
            assert_eq!((e.status, e.message.contains("signature")), (StatusCode::FORBIDDEN, true));
        }
        let other = "f123456789abcdef0123456789abcdef";
        assert!(check_part_signature(&secret, "w", other, 2, 1000, &sig, 999).is_err());
        assert!(check_part_signature(&secret, "w", id, 2, 1000, "zz", 999).is_err());
        let another = ServerSecret::from_material(b"another secret of thirty-two chars!!");
        assert!(check_part_signature(&another, "w", id, 2, 1000, &sig, 999).is_err());
    }

    #[test]
    fn upload_ids_are_hex_only() {
        assert!(check_upload_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "../../etc", "0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcde/"] {
            assert_eq!(check_upload_id(bad).unwrap_err().status, StatusCode::NOT_FOUND, "{bad}");
        }
    }
}
