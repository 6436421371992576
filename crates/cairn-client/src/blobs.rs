//! Content-addressed uploads (code snapshots, model files): hash local files, ask the server which
//! contents it lacks (`POST …/snapshots` for a code snapshot, which also records its manifest and
//! enforces the snapshot size limit; `POST …/blobs/missing` for model files), and stream only those
//! (`PUT …/blobs/SHA256`), so bytes the workspace already holds are never sent again.

use std::path::{Path, PathBuf};

use cairn_core::runs::{CreateSnapshot, SnapshotCreated, SnapshotFile};

use crate::transfer::{sha256_file, NoProgress};
use crate::{Client, ClientError, Result};

/// A local file to upload, with its path in the snapshot or model.
pub struct LocalFile {
    pub local: PathBuf,
    pub file: SnapshotFile,
}

/// Hashes `files` (local path, path to record) into [`LocalFile`]s.
pub fn hash_files(files: Vec<(PathBuf, String)>) -> Result<Vec<LocalFile>> {
    let mut hashed = Vec::with_capacity(files.len());
    for (local, path) in files {
        let size = std::fs::metadata(&local)
            .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", local.display())))?
            .len();
        let sha256 = sha256_file(&local, &NoProgress)?;
        hashed.push(LocalFile { local, file: SnapshotFile { path, size, sha256 } });
    }
    Ok(hashed)
}

/// Every file of `root` (a file: itself, named by its file name; a folder: everything under it,
/// recursively), as (local path, relative path with `/`).
pub fn walk(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    let meta = std::fs::metadata(root)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", root.display())))?;
    if meta.is_file() {
        let name = root
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ClientError::Local(format!("{} has no UTF-8 file name", root.display())))?;
        return Ok(vec![(root.to_path_buf(), name.to_string())]);
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| ClientError::Local(format!("cannot list {}: {e}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(|e| ClientError::Local(e.to_string()))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| ClientError::Local(e.to_string()))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|r| r.to_str())
                    .ok_or_else(|| ClientError::Local(format!("{} is not a UTF-8 path", path.display())))?
                    .replace('\\', "/");
                out.push((path, rel));
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// Records the manifest of `files` as a code snapshot and uploads the contents the server lacks.
pub async fn upload_snapshot(client: &Client, ws: &str, files: &[LocalFile]) -> Result<SnapshotCreated> {
    let req = CreateSnapshot { files: files.iter().map(|f| f.file.clone()).collect() };
    let created = client.create_snapshot(ws, &req).await?;
    upload(client, ws, files, &created.missing).await?;
    Ok(created)
}

/// Uploads the contents of `files` the server lacks, without recording a snapshot (model files);
/// returns how many distinct contents were sent.
pub async fn upload_missing(client: &Client, ws: &str, files: &[LocalFile]) -> Result<usize> {
    let mut shas: Vec<String> = files.iter().map(|f| f.file.sha256.clone()).collect();
    shas.sort();
    shas.dedup();
    let mut missing = Vec::new();
    for chunk in shas.chunks(1000) {
        missing.extend(client.missing_blobs(ws, chunk.to_vec()).await?);
    }
    upload(client, ws, files, &missing).await
}

async fn upload(client: &Client, ws: &str, files: &[LocalFile], missing: &[String]) -> Result<usize> {
    let mut sent = std::collections::HashSet::new();
    for f in files {
        if missing.contains(&f.file.sha256) && sent.insert(f.file.sha256.clone()) {
            let file = tokio::fs::File::open(&f.local)
                .await
                .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", f.local.display())))?;
            let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            client.put_blob(ws, &f.file.sha256, body).await?;
        }
    }
    Ok(sent.len())
}
