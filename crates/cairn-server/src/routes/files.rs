//! Files in a datastore: upload plans, uploads, downloads, listings, deletes.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use cairn_blob::{BlobStore, Checksum, Trailer, Trailing};
use cairn_core::api::{
    download_part_disposition, DownloadBatchRequest, FileEntry, Page, PutFileResult, PutStatus, Role,
    UploadBatchResult, UploadPlan, UploadPlanRequest, BATCH_MAX_BYTES, BATCH_MAX_FILES,
    DOWNLOAD_BATCH_MAX_BYTES, DOWNLOAD_BATCH_MAX_FILES,
};
use cairn_core::{Error, RelPath};
use cairn_store::DatastoreRecord;
use http_body_util::BodyExt;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Caller;
use crate::datastores::{BatchFile, UploadChecks};
use crate::error::ApiResult;
use crate::extract;
use crate::state::AppState;

/// Resolves the workspace and datastore of a request after checking the caller's rights.
async fn datastore(
    state: &AppState,
    caller: &Caller,
    role: Role,
    ws: &str,
    ds: &str,
) -> Result<DatastoreRecord, Error> {
    caller.require(role, Some(ws))?;
    state.datastore_record(ws, ds).await
}

/// Announces files to upload with their sizes and SHA-256; the answer says which to send,
/// which are already there, and which conflict with different existing content.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/datastores/{ds}/upload-plan", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name")),
    request_body = UploadPlanRequest,
    responses((status = 200, body = UploadPlan), (status = 400, body = cairn_core::api::ErrorBody)))]
pub async fn plan(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
    extract::Json(req): extract::Json<UploadPlanRequest>,
) -> ApiResult<Json<UploadPlan>> {
    let record = datastore(&state, &caller, Role::Writer, &ws, &ds).await?;
    Ok(Json(state.plan_upload(&record, &req).await?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Folder to list (recursively), or a file; the whole datastore when absent.
    pub prefix: Option<String>,
    pub page_size: Option<i64>,
    pub page_token: Option<String>,
}

/// Lists files under a folder, recursively, in path order, with sizes; a prefix that names a
/// file lists that file. A prefix that names neither a file nor a folder holding files is a 404
/// (the datastore's root never is: an empty datastore lists nothing).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/datastores/{ds}/files", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name"), ListQuery),
    responses((status = 200, body = Page<FileEntry>), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
    extract::Query(q): extract::Query<ListQuery>,
) -> ApiResult<Json<Page<FileEntry>>> {
    let record = datastore(&state, &caller, Role::Reader, &ws, &ds).await?;
    let dir = RelPath::parse_dir(q.prefix.as_deref().unwrap_or(""))?;
    cairn_core::api::check_page_size(q.page_size)?;
    let limit = q.page_size.unwrap_or(1000).clamp(1, 10_000) as usize;
    let blobs = state.blobs_of(&record)?;
    let after = q.page_token.unwrap_or_default();
    let mut items = blobs.list_page(&dir, &after, limit + 1).await?;
    if items.is_empty() && after.is_empty() && !dir.is_root() {
        // A prefix that names a file lists that file (as `ls FILE` does); one that names neither a
        // file nor a folder holding files is a 404, as `ls` of a missing path fails. The root is
        // always there: an empty datastore lists nothing.
        items.extend(blobs.head(&dir).await?);
        if items.is_empty() {
            return Err(Error::not_found("file or folder", format!("{dir}\" in datastore \"{ds}")).into());
        }
    }
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|f| f.path.clone())
    } else {
        None
    };
    Ok(Json(Page { items, next_page_token }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Replace an existing file with different content.
    #[serde(default)]
    pub overwrite: bool,
}

/// Uploads one file (streamed; any size up to the server's limit). Send its SHA-256 in the
/// `x-cairn-sha256` header, or, to hash while sending, as a trailer of the same name (chunked
/// body, `Trailer: x-cairn-sha256` declared; a declared trailer that does not arrive is a 400).
/// A client with no SHA-256 of its own may send the content's CRC-32 instead (`x-cairn-crc32`,
/// zlib's, 8 hex digits; header or declared trailer), which checks the transfer for less CPU.
/// Any mismatch is a 422 and nothing changes. None is required: the server always records the
/// SHA-256 of what it received. The file becomes visible atomically once complete and verified.
/// Same content already there: 200 `unchanged`, nothing rewritten (known from a SHA-256 header
/// before the body is read, else from the body's own SHA-256). Different content without
/// `overwrite`: 409, and nothing changes.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/datastores/{ds}/files/{path}", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name"),
           ("path" = String, Path, description = "file path inside the datastore"), UploadQuery,
           ("x-cairn-sha256" = Option<String>, Header, description = "hex SHA-256 of the content"),
           ("x-cairn-crc32" = Option<String>, Header, description = "CRC-32 (zlib's) of the content, 8 hex digits")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = PutFileResult), (status = 200, body = PutFileResult),
              (status = 400, body = cairn_core::api::ErrorBody), (status = 409, body = cairn_core::api::ErrorBody),
              (status = 413, body = cairn_core::api::ErrorBody), (status = 422, body = cairn_core::api::ErrorBody)))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds, path)): Path<(String, String, String)>,
    extract::Query(q): extract::Query<UploadQuery>,
    headers: HeaderMap,
    request: Request,
) -> ApiResult<(StatusCode, Json<PutFileResult>)> {
    let record = datastore(&state, &caller, Role::Writer, &ws, &ds).await?;
    let path = RelPath::parse(&path)?;
    let sha256 = checksum_header(&headers, Checksum::Sha256)?;
    let crc32 = checksum_header(&headers, Checksum::Crc32)?;
    let declared_len = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared_len {
        if len > state.max_upload_bytes {
            return Err(Error::TooLarge(format!(
                "{path} is {len} bytes; this server accepts files up to {} bytes",
                state.max_upload_bytes
            ))
            .into());
        }
    }
    let declared = |which: Checksum| {
        headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|name| name.trim().eq_ignore_ascii_case(which.header()))
    };
    let (sha_trailer, crc_trailer) = (OnceLock::new(), OnceLock::new());
    let trailing = Trailing {
        sha256: Trailer { value: &sha_trailer, declared: declared(Checksum::Sha256) },
        crc32: Trailer { value: &crc_trailer, declared: declared(Checksum::Crc32) },
    };
    let body = data_keeping_trailers(request.into_body(), trailing);
    let checks =
        UploadChecks { sha256: sha256.as_deref(), crc32: crc32.as_deref(), trailing: Some(trailing) };
    let result = state.put_file(&record, &path, body, checks, q.overwrite, declared_len).await?;
    let status = if result.status == PutStatus::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)))
}

/// The data of a request body; the checksum trailers, if they come, go to `trailing` (before the
/// stream ends, so the writer can check them before publishing the file).
fn data_keeping_trailers<'a>(
    body: Body,
    trailing: Trailing<'a>,
) -> impl futures::Stream<Item = Result<Bytes, axum::Error>> + Send + 'a {
    futures::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        loop {
            match body.frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some((Ok(data), Some(body))),
                    Err(frame) => {
                        let Some(trailers) = frame.trailers_ref() else { continue };
                        for (which, cell) in [
                            (Checksum::Sha256, trailing.sha256.value),
                            (Checksum::Crc32, trailing.crc32.value),
                        ] {
                            if let Some(v) = trailers.get(which.header()) {
                                // Not ASCII: kept visibly wrong, so that the check names it.
                                let _ = cell.set(v.to_str().unwrap_or("(not ASCII)").to_string());
                            }
                        }
                    }
                },
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}

/// A batch's body: its files' content, plus room for the parts' own headers.
pub const BATCH_BODY_LIMIT: usize = BATCH_MAX_BYTES + BATCH_MAX_FILES * 1024;

/// Uploads many small files in one request (`multipart/form-data`, one part per file, its
/// `filename` the path in the datastore, optional `x-cairn-sha256` / `x-cairn-crc32` part
/// headers). Every checksum is checked before anything is written (422 naming the file, nothing
/// stored); without `overwrite` the batch is stored whole or not at all (409 if a file exists).
/// At most 1,000 files and 16 MiB of content per batch (413 beyond); larger files go one by one.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/datastores/{ds}/upload-batch", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name"),
           UploadQuery),
    request_body(content = String, content_type = "multipart/form-data"),
    responses((status = 200, body = UploadBatchResult), (status = 400, body = cairn_core::api::ErrorBody),
              (status = 409, body = cairn_core::api::ErrorBody), (status = 413, body = cairn_core::api::ErrorBody),
              (status = 422, body = cairn_core::api::ErrorBody)))]
pub async fn upload_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
    extract::Query(q): extract::Query<UploadQuery>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Json<UploadBatchResult>> {
    let record = datastore(&state, &caller, Role::Writer, &ws, &ds).await?;
    let mut multipart =
        multipart.map_err(|e| Error::invalid(format!("an upload batch is multipart/form-data: {e}")))?;
    let mut files = Vec::new();
    let mut total = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(batch_error)? {
        let Some(name) = field.file_name() else {
            return Err(
                Error::invalid("every part of an upload batch names its file (filename=\"PATH\")").into()
            );
        };
        let path = RelPath::parse(name)?;
        if files.len() == BATCH_MAX_FILES {
            return Err(Error::TooLarge(format!(
                "an upload batch holds at most {BATCH_MAX_FILES} files; nothing was stored"
            ))
            .into());
        }
        let sha256 = checksum_header(field.headers(), Checksum::Sha256)?;
        let crc32 = checksum_header(field.headers(), Checksum::Crc32)?;
        let content = field.bytes().await.map_err(batch_error)?;
        total += content.len();
        if total > BATCH_MAX_BYTES {
            return Err(Error::TooLarge(format!(
                "an upload batch holds at most {BATCH_MAX_BYTES} bytes of files; nothing was stored"
            ))
            .into());
        }
        files.push(BatchFile { path, content, sha256, crc32 });
    }
    if files.is_empty() {
        return Err(Error::invalid("the upload batch holds no file").into());
    }
    let files = state.put_batch(&record, files, q.overwrite).await?;
    Ok(Json(UploadBatchResult { files }))
}

/// The value of a checksum header (of a request, or of one part of a batch), if there is one.
fn checksum_header(headers: &HeaderMap, which: Checksum) -> Result<Option<String>, Error> {
    headers
        .get(which.header())
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::invalid(format!("header {} is not ASCII", which.header())))
        })
        .transpose()
}

/// A body that breaks off or is not valid multipart: 413 past the size limit, else 400.
fn batch_error(e: MultipartError) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge(format!(
            "an upload batch holds at most {BATCH_MAX_BYTES} bytes of files; nothing was stored"
        ))
    } else {
        Error::invalid(format!("the upload batch could not be read: {}; nothing was stored", e.body_text()))
    }
}

/// Downloads one file, streamed.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/datastores/{ds}/files/{path}", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name"),
           ("path" = String, Path, description = "file path inside the datastore")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
              (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn download(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds, path)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let record = datastore(&state, &caller, Role::Reader, &ws, &ds).await?;
    let path = RelPath::parse(&path)?;
    let blobs = state.blobs_of(&record)?;
    let (size, stream) = match blobs.get_stream(&path).await {
        Ok(found) => found,
        Err(Error::NotFound { .. }) if !blobs.is_empty(&path).await? => {
            return Err(Error::invalid(format!(
                "{path} is a folder; list it with GET …/files?prefix={path} or download its files one by one"
            ))
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Downloads many small files in one response: `multipart/mixed`, one part per path asked for, in
/// that order, each with the path (`Content-Disposition: attachment; filename*=UTF-8''PATH`,
/// percent-encoded) and its `Content-Length`. The files are read whole before the answer starts,
/// so it is complete or it is an error: 404 naming a missing file (or a folder), 413 past 1,000
/// files or 16 MiB of content (larger files are downloaded one by one).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/datastores/{ds}/download-batch", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name")),
    request_body = DownloadBatchRequest,
    responses((status = 200, content_type = "multipart/mixed", body = Vec<u8>),
              (status = 400, body = cairn_core::api::ErrorBody), (status = 404, body = cairn_core::api::ErrorBody),
              (status = 413, body = cairn_core::api::ErrorBody)))]
pub async fn download_batch(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds)): Path<(String, String)>,
    extract::Json(req): extract::Json<DownloadBatchRequest>,
) -> ApiResult<Response> {
    let record = datastore(&state, &caller, Role::Reader, &ws, &ds).await?;
    batch_answer(&state.blobs_of(&record)?, &req).await
}

/// The `multipart/mixed` answer of a download batch from `blobs` (a datastore's files or a run's
/// artifacts): every file read whole first, so the answer is complete or an error.
pub(crate) async fn batch_answer(blobs: &BlobStore, req: &DownloadBatchRequest) -> ApiResult<Response> {
    if req.paths.is_empty() {
        return Err(Error::invalid("the download batch names no file").into());
    }
    if req.paths.len() > DOWNLOAD_BATCH_MAX_FILES {
        return Err(Error::TooLarge(format!(
            "a download batch names at most {DOWNLOAD_BATCH_MAX_FILES} files, not {}",
            req.paths.len()
        ))
        .into());
    }
    let paths = req.paths.iter().map(|p| RelPath::parse(p)).collect::<Result<Vec<_>, _>>()?;
    let contents = match blobs.read_many(paths.clone(), DOWNLOAD_BATCH_MAX_BYTES).await {
        Err(Error::TooLarge(why)) => {
            return Err(Error::TooLarge(format!(
                "a download batch holds at most {DOWNLOAD_BATCH_MAX_BYTES} bytes of files: {why}; download \
                 large files one by one (GET …/PATH)"
            ))
            .into())
        }
        read => read?,
    };
    // Random, so a clash is a one-in-2^122 event, but checked all the same: a clash would cut a
    // file short in a client that looks for the boundary rather than counting.
    let boundary = loop {
        let boundary = format!("cairn-batch-{}", uuid::Uuid::new_v4().simple());
        let finder = memchr::memmem::Finder::new(boundary.as_bytes());
        if contents.iter().all(|c| finder.find(c).is_none()) {
            break boundary;
        }
    };
    let size: usize = contents.iter().map(|c| c.len() + 200).sum();
    let mut body = Vec::with_capacity(size + boundary.len() + 8);
    for (path, content) in paths.iter().zip(contents) {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: {}\r\n\
                 Content-Length: {}\r\n\r\n",
                download_part_disposition(path.as_str()),
                content.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(([(header::CONTENT_TYPE, format!("multipart/mixed; boundary={boundary}"))], body).into_response())
}

/// Deletes a file, or a folder and everything under it.
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}/datastores/{ds}/files/{path}", tag = "files",
    params(("ws" = String, Path, description = "workspace name"), ("ds" = String, Path, description = "datastore name"),
           ("path" = String, Path, description = "file or folder path inside the datastore")),
    responses((status = 204), (status = 404, body = cairn_core::api::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path((ws, ds, path)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let record = datastore(&state, &caller, Role::Writer, &ws, &ds).await?;
    let path = RelPath::parse(path.trim_end_matches('/'))?;
    let deleted = state.blobs_of(&record)?.delete_all(&path).await?;
    if deleted == 0 {
        return Err(Error::not_found("file", path.as_str()).into());
    }
    state.store.delete_file_records(&record.id, path.as_str()).await?;
    Ok(StatusCode::NO_CONTENT)
}
