//! Folder uploads and downloads built on single-file calls: hash locally, ask the server for a
//! plan (what to send, what is already there, what conflicts), refuse before writing anything if
//! something conflicts, then stream files concurrently with bounded memory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_core::api::{PlanAction, PlannedFile, UploadPlanRequest};
use cairn_core::RelPath;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::{Client, ClientError, Result};

/// Files announced per upload-plan request.
const PLAN_CHUNK: usize = 1000;
/// Read buffer for hashing and sending.
const BUF: usize = 256 * 1024;

/// Receives transfer progress (the CLI draws a bar; tests and scripts ignore it).
pub trait Progress: Send + Sync {
    /// A new phase begins (`hashing`, `uploading`, `downloading`) over this many files and bytes.
    fn phase(&self, _name: &str, _files: u64, _bytes: u64) {}
    /// Bytes were hashed, sent or received.
    fn advance(&self, _bytes: u64) {}
    /// One more file is done.
    fn file_done(&self) {}
    /// The transfer is over.
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A datastore of a workspace.
#[derive(Clone, Copy, Debug)]
pub struct Datastore<'a> {
    pub workspace: &'a str,
    pub datastore: &'a str,
}

/// How a transfer treats existing files and how many files move at once.
#[derive(Clone, Copy, Debug)]
pub struct TransferOpts {
    /// Replace existing files whose content differs.
    pub overwrite: bool,
    /// Files in flight at once.
    pub concurrency: usize,
}

/// What an upload did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UploadReport {
    pub uploaded: Vec<String>,
    pub skipped: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub bytes_sent: u64,
}

/// What a download did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DownloadReport {
    pub files: u64,
    pub bytes: u64,
}

struct LocalFile {
    local: PathBuf,
    remote: String,
    size: u64,
    sha256: String,
}

/// Uploads a file, or a folder's files, to `target_path` in a datastore. A folder's files keep
/// their relative paths under `target_path`; a single file lands at `target_path/NAME`.
pub async fn upload(
    client: &Client,
    at: Datastore<'_>,
    src: &Path,
    target_path: &str,
    opts: TransferOpts,
    progress: Arc<dyn Progress>,
) -> Result<UploadReport> {
    let Datastore { workspace: ws, datastore: ds } = at;
    let TransferOpts { overwrite, concurrency } = opts;
    let target = RelPath::parse_dir(target_path).map_err(|e| ClientError::Local(e.to_string()))?;
    let found = collect(src, &target)?;
    let total: u64 = found.iter().map(|(_, _, size)| size).sum();

    progress.phase("hashing", found.len() as u64, total);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let files: Vec<LocalFile> = futures::stream::iter(found.into_iter().map(|(local, remote, size)| {
        let progress = progress.clone();
        async move {
            let sha256 = tokio::task::spawn_blocking({
                let local = local.clone();
                let progress = progress.clone();
                move || sha256_file(&local, &*progress)
            })
            .await
            .map_err(|e| ClientError::Local(e.to_string()))??;
            progress.file_done();
            Ok::<_, ClientError>(LocalFile { local, remote, size, sha256 })
        }
    }))
    .buffered(workers)
    .try_collect()
    .await?;

    let mut to_send = Vec::new();
    let mut report = UploadReport { files: files.len() as u64, bytes: total, ..Default::default() };
    let mut conflicts = Vec::new();
    for chunk in files.chunks(PLAN_CHUNK) {
        let req = UploadPlanRequest {
            files: chunk
                .iter()
                .map(|f| PlannedFile { path: f.remote.clone(), size: f.size, sha256: f.sha256.clone() })
                .collect(),
            overwrite,
        };
        let plan = client.upload_plan(ws, ds, &req).await?;
        for (f, entry) in chunk.iter().zip(plan.files) {
            match entry.action {
                PlanAction::Upload => to_send.push(f),
                PlanAction::Skip => report.skipped.push(f.remote.clone()),
                PlanAction::Conflict => conflicts.push(f.remote.clone()),
            }
        }
    }
    if !conflicts.is_empty() {
        let shown: Vec<_> = conflicts.iter().take(20).cloned().collect();
        let more =
            if conflicts.len() > 20 { format!(" and {} more", conflicts.len() - 20) } else { String::new() };
        return Err(ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: format!(
                "{} file(s) already exist in datastore \"{ds}\" with different content: {}{more}; \
                 nothing was uploaded; pass --overwrite (overwrite=True) to replace them",
                conflicts.len(),
                shown.join(", ")
            ),
        });
    }

    let send_bytes: u64 = to_send.iter().map(|f| f.size).sum();
    progress.phase("uploading", to_send.len() as u64, send_bytes);
    let sent: Vec<String> = futures::stream::iter(to_send.into_iter().map(|f| {
        let progress = progress.clone();
        async move {
            let file = tokio::fs::File::open(&f.local)
                .await
                .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", f.local.display())))?;
            let counted = tokio_util::io::ReaderStream::with_capacity(file, BUF).inspect_ok({
                let progress = progress.clone();
                move |chunk| progress.advance(chunk.len() as u64)
            });
            client
                .put_file(ws, ds, &f.remote, counted, crate::PutFile { sha256: Some(&f.sha256), overwrite })
                .await
                .map_err(|e| match e {
                    ClientError::Api { status, code, message } => ClientError::Api {
                        status,
                        code,
                        message: format!("{}: {message}", f.local.display()),
                    },
                    other => other,
                })?;
            progress.file_done();
            Ok::<_, ClientError>(f.remote.clone())
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    progress.finish();
    report.bytes_sent = send_bytes;
    report.uploaded = sent;
    report.uploaded.sort();
    Ok(report)
}

/// The regular files to upload, with their remote paths and sizes, in path order.
fn collect(src: &Path, target: &RelPath) -> Result<Vec<(PathBuf, String, u64)>> {
    let meta = std::fs::metadata(src)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", src.display())))?;
    let remote = |rel: &str| -> Result<String> {
        let p = RelPath::parse(rel).map_err(|e| ClientError::Local(e.to_string()))?;
        Ok(target.join(&p).to_string())
    };
    if meta.is_file() {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ClientError::Local(format!("{} has no UTF-8 file name", src.display())))?;
        return Ok(vec![(src.to_path_buf(), remote(name)?, meta.len())]);
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(false).sort_by_file_name() {
        let entry = entry.map_err(|e| ClientError::Local(format!("cannot walk {}: {e}", src.display())))?;
        let meta = match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => m,
            _ => continue,
        };
        let rel = entry.path().strip_prefix(src).expect("walkdir yields paths under its root");
        let rel = rel
            .to_str()
            .ok_or_else(|| ClientError::Local(format!("{} is not a UTF-8 path", entry.path().display())))?;
        out.push((
            entry.path().to_path_buf(),
            remote(&rel.replace(std::path::MAIN_SEPARATOR, "/"))?,
            meta.len(),
        ));
    }
    if out.is_empty() {
        return Err(ClientError::Local(format!("{} holds no files to upload", src.display())));
    }
    Ok(out)
}

/// SHA-256 of a local file, reporting bytes read.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        progress.advance(n as u64);
    }
}

/// Downloads a file or a folder from a datastore into `dest`, keeping datastore paths
/// (`winedata/x.csv` lands at `dest/winedata/x.csv`). Each file is written to a temporary name
/// and renamed when complete. Existing local files are refused unless `overwrite`.
pub async fn download(
    client: &Client,
    at: Datastore<'_>,
    remote: &str,
    dest: &Path,
    opts: TransferOpts,
    progress: Arc<dyn Progress>,
) -> Result<DownloadReport> {
    let Datastore { workspace: ws, datastore: ds } = at;
    let TransferOpts { overwrite, concurrency } = opts;
    let prefix = RelPath::parse_dir(remote).map_err(|e| ClientError::Local(e.to_string()))?;
    let mut entries = client.list_files(ws, ds, prefix.as_str()).await?;
    if entries.is_empty() && !prefix.is_root() {
        // Not a folder: a single file (or nothing, which the GET reports as a 404).
        entries.push(cairn_core::api::FileEntry { path: prefix.to_string(), size: 0, last_modified: 0 });
    }
    let mut targets = Vec::with_capacity(entries.len());
    let mut existing = Vec::new();
    for e in &entries {
        // Paths come from the server: validate them before they touch the local disk.
        let rel = RelPath::parse(&e.path)
            .map_err(|err| ClientError::Local(format!("server sent an unsafe path: {err}")))?;
        let local = rel.as_str().split('/').fold(dest.to_path_buf(), |p, c| p.join(c));
        if local.exists() && !overwrite {
            existing.push(local.display().to_string());
        }
        targets.push((e.path.clone(), local));
    }
    if !existing.is_empty() {
        return Err(ClientError::Local(format!(
            "{} local file(s) already exist: {}; nothing was downloaded; pass --overwrite to replace them",
            existing.len(),
            existing.iter().take(20).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    progress.phase("downloading", entries.len() as u64, total);
    let sizes: Vec<u64> = futures::stream::iter(targets.into_iter().map(|(path, local)| {
        let progress = progress.clone();
        async move {
            let (_, mut stream) = client.get_file(ws, ds, &path).await?;
            if let Some(parent) = local.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| ClientError::Local(format!("cannot create {}: {e}", parent.display())))?;
            }
            let partial = local.with_file_name(format!(
                ".{}.cairn-partial",
                local.file_name().and_then(|n| n.to_str()).unwrap_or("download")
            ));
            let local_err =
                |e: std::io::Error| ClientError::Local(format!("cannot write {}: {e}", partial.display()));
            let mut out = tokio::fs::File::create(&partial).await.map_err(local_err)?;
            let mut size = 0u64;
            let copied: Result<()> = async {
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk?;
                    out.write_all(&chunk).await.map_err(local_err)?;
                    size += chunk.len() as u64;
                    progress.advance(chunk.len() as u64);
                }
                out.flush().await.map_err(local_err)?;
                Ok(())
            }
            .await;
            if let Err(e) = copied {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
            tokio::fs::rename(&partial, &local).await.map_err(local_err)?;
            progress.file_done();
            Ok::<_, ClientError>(size)
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    progress.finish();
    Ok(DownloadReport { files: sizes.len() as u64, bytes: sizes.iter().sum() })
}
