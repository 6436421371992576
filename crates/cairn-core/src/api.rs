//! The bodies of Cairn's REST API, shared by the server (which produces them), the Rust client
//! and the CLI (which consume them). Request bodies refuse unknown fields so that a typo is a
//! clear 400 instead of a silently ignored option.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a token may do. Ordered: an admin can do what a writer can, a writer what a reader can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read anything the token's scope covers.
    Reader,
    /// Also create, change and delete resources inside workspaces (datastores, files, …).
    Writer,
    /// Also manage workspaces and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One page of a list, with the token that fetches the next one (absent on the last page).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// An API token as listed: never the secret itself.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    /// The one workspace this token is limited to; absent for a token valid everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// The one run this token may write to (the token a job receives); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub workspace: Option<String>,
}

/// Returned once, at creation: the only time the secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// Who the caller is, as the server sees the presented token.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Whoami {
    pub token_name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub description: String,
    pub created_at: i64,
}

/// A workspace as `GET /workspaces/{ws}` shows it: with the tracking URI the MLflow client takes
/// (`MLFLOW_TRACKING_URI`), and where OpenTelemetry exporters send spans (OTLP/HTTP, with an
/// `x-mlflow-experiment-id` header).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceDetail {
    #[serde(flatten)]
    pub workspace: Workspace,
    pub mlflow_tracking_uri: String,
    #[serde(default)]
    pub otlp_traces_endpoint: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// Where a datastore keeps its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DatastoreKind {
    /// Inside the server's artifact store; created with the workspace, deleted with it.
    Default,
    /// A directory on the server's machine.
    Local,
    /// An S3 (or S3-compatible) bucket and prefix; credentials come from the server's environment.
    S3,
}

impl DatastoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DatastoreKind::Default => "default",
            DatastoreKind::Local => "local",
            DatastoreKind::S3 => "s3",
        }
    }
    pub fn parse(s: &str) -> Option<DatastoreKind> {
        match s {
            "default" => Some(DatastoreKind::Default),
            "local" => Some(DatastoreKind::Local),
            "s3" => Some(DatastoreKind::S3),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Datastore {
    pub name: String,
    pub workspace: String,
    pub kind: DatastoreKind,
    /// The directory (`local`) or `s3://bucket/prefix` URL (`s3`); empty for `default`.
    pub location: String,
    pub description: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatastore {
    pub name: String,
    pub kind: DatastoreKind,
    /// Absolute directory path for `local`, `s3://bucket/prefix` for `s3`.
    pub location: String,
    #[serde(default)]
    pub description: String,
}

/// A file the client intends to upload, as announced in an upload plan.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedFile {
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the content. May be left out: a client that hashes while it
    /// sends (HTTP trailer) announces only paths and sizes, and hashes just the files the plan
    /// answers `checksum` for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadPlanRequest {
    pub files: Vec<PlannedFile>,
    #[serde(default)]
    pub overwrite: bool,
}

/// What the server will do with one announced file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanAction {
    /// Absent, or different and `overwrite` was asked: send it.
    Upload,
    /// The same content is already there: nothing to send.
    Skip,
    /// A different file is there and `overwrite` was not asked: refused.
    Conflict,
    /// Announced without a checksum, and a file of the same size is there: only the checksum can
    /// tell whether it is the same content; announce it again with its `sha256`.
    Checksum,
    /// The path cannot hold a file, with or without `overwrite`: in a datastore kept in a local
    /// directory a path is a file or a folder, not both, and this one is a folder, or one of its
    /// folders is a file (there, or in this same plan). `reason` says which.
    Clash,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanEntry {
    pub path: String,
    pub action: PlanAction,
    /// Why, for a `clash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadPlan {
    pub files: Vec<PlanEntry>,
}

/// What a file upload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PutStatus {
    Created,
    Replaced,
    Unchanged,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PutFileResult {
    pub path: String,
    pub size: u64,
    /// The content's SHA-256 when the server computed it: always for a file the client gave a
    /// SHA-256 for, and for small files; a large file sent with only a CRC-32 (or no checksum) is
    /// not hashed on arrival, and its SHA-256 is computed when first needed (an upload plan that
    /// compares it).
    pub sha256: Option<String>,
    pub status: PutStatus,
}

/// `POST …/datastores/{ds}/upload-batch`: many small files in one `multipart/form-data` request,
/// one part per file (its `filename` is the path in the datastore; `x-cairn-sha256` or
/// `x-cairn-crc32` part headers are checked as on a single upload). All of them are stored, or
/// none: every checksum is checked before anything is written, and a file that turns out to
/// exist (without `overwrite`) undoes the files the batch had created.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadBatchResult {
    pub files: Vec<PutFileResult>,
}

/// Refuses a list's `page_size` below 1 (400); a larger one than the list allows is cut to its
/// maximum, as MLflow's and S3's lists do.
pub fn check_page_size(size: Option<i64>) -> Result<(), crate::Error> {
    match size {
        Some(n) if n < 1 => Err(crate::Error::invalid(format!("page_size {n}: must be at least 1"))),
        _ => Ok(()),
    }
}

/// Most files in one upload batch.
pub const BATCH_MAX_FILES: usize = 1000;
/// Most bytes of file content in one upload batch (and so in any one file of it).
pub const BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;

/// `POST …/datastores/{ds}/download-batch`: the files to send back in one response, in this
/// order. The answer is `multipart/mixed`, one part per file in the order asked, each with its
/// path ([`download_part_disposition`]) and its `Content-Length`; it is sent only when every file
/// was found and read (404 naming a missing one), so a batch is never cut short by a missing file.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadBatchRequest {
    pub paths: Vec<String>,
}

/// Most files one download batch may ask for.
pub const DOWNLOAD_BATCH_MAX_FILES: usize = BATCH_MAX_FILES;
/// Most bytes of content one download batch may add up to (it is read whole before it is sent).
pub const DOWNLOAD_BATCH_MAX_BYTES: u64 = BATCH_MAX_BYTES as u64;

/// Characters a path keeps as they are in a part's `filename*`: RFC 5987's `attr-char`.
const ATTR_CHAR_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The `Content-Disposition` of a download batch's part: the file's path as an RFC 6266
/// `filename*` (UTF-8, percent-encoded; `/` is encoded too, so the value is the whole path).
pub fn download_part_disposition(path: &str) -> String {
    format!("attachment; filename*=UTF-8''{}", percent_encoding::utf8_percent_encode(path, ATTR_CHAR_ESCAPED))
}

/// The path a download batch's part carries in its `Content-Disposition`, if it has one.
pub fn download_part_path(disposition: &str) -> Option<String> {
    let (_, encoded) = disposition.split_once("filename*=")?;
    let encoded = encoded.split(';').next()?.trim();
    let value = encoded.strip_prefix("UTF-8''").or_else(|| encoded.strip_prefix("utf-8''"))?;
    percent_encoding::percent_decode_str(value).decode_utf8().ok().map(|p| p.into_owned())
}

/// One file in a datastore listing.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub last_modified: i64,
}

/// The error body of every failed API call: `{"error": {"code": …, "message": …}}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// The header carrying a file's expected SHA-256 (lower-case hex) on upload. A datastore upload
/// may instead send it as an HTTP/1.1 trailer of the same name (chunked body, declared with
/// `Trailer: x-cairn-sha256`), so that a client can hash the file while sending it.
pub const SHA256_HEADER: &str = "x-cairn-sha256";

/// The header (or, the same way, trailer) carrying a file's CRC-32 on upload: zlib's CRC-32
/// (ISO-HDLC, what Python's `zlib.crc32` gives) as 8 lower-case hex digits. It checks only that
/// the bytes arrived as sent, for a client that hashes while sending and would otherwise pay for
/// SHA-256 twice (once itself, once on the server); the server records the SHA-256 it computes.
pub const CRC32_HEADER: &str = "x-cairn-crc32";

/// `POST /api/v1/admin/gc`: collect the content-addressed blobs (code snapshot and model files)
/// that nothing references any more.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only this workspace; every workspace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Count what would be deleted, delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Keep unreferenced blobs younger than this many seconds (default 3600): an upload whose
    /// manifest is not posted yet must survive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
}

/// What garbage collection found (and, unless a dry run, deleted) in one workspace.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct GcWorkspace {
    pub workspace: String,
    /// Blobs referenced by a code snapshot or a model version: kept.
    pub referenced: u64,
    pub referenced_bytes: u64,
    /// Unreferenced blobs younger than the grace period: kept.
    pub young: u64,
    pub young_bytes: u64,
    /// Unreferenced blobs older than the grace period: deleted (or, in a dry run, to be).
    pub deleted: u64,
    pub deleted_bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct GcReport {
    pub dry_run: bool,
    pub grace_seconds: u64,
    pub workspaces: Vec<GcWorkspace>,
    /// Totals over `workspaces`.
    pub deleted: u64,
    pub deleted_bytes: u64,
    /// MLflow multipart uploads past their expiry whose staged parts were removed (or, in a
    /// dry run, would be), and their bytes.
    #[serde(default)]
    pub expired_uploads: u64,
    #[serde(default)]
    pub expired_upload_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_part_carries_any_path_and_gives_it_back() {
        for path in ["a.csv", "deep/er/b c.csv", "c d é.txt", "q\"uote;semi%pct'apos", "日本/語.bin"] {
            let value = download_part_disposition(path);
            let (_, encoded) = value.split_once("filename*=").unwrap();
            assert!(value.is_ascii() && !encoded.contains(['"', ' ', ';', '/']), "{value}");
            assert_eq!(download_part_path(&value).as_deref(), Some(path), "{value}");
        }
        assert_eq!(download_part_path("attachment; filename=\"a.csv\""), None);
        assert_eq!(download_part_path("attachment; filename*=UTF-8''%FF"), None, "not UTF-8");
    }
}
