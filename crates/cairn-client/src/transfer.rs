//! Folder uploads and downloads: small files travel many to a request (upload and download
//! batches), larger ones one by one, streamed, several requests at once. An upload asks the
//! server for a plan by path and size (what to send, what may already be there, what conflicts),
//! hashes (SHA-256) only the files that may already be there and asks again for those, refuses
//! before writing anything if something conflicts, then sends the files with bounded memory.
//! Files are read on a blocking thread each, once: a file not hashed for the plan gets the CRC-32
//! of what was sent as an HTTP trailer, which lets the server check the transfer without the
//! client paying for a SHA-256 the server computes anyway. A file whose size or modification time
//! changes while it is read is not stored (the server discards the cut body) and the upload says
//! so. A download never leaves a half-written file: each is written under a temporary name and
//! renamed when whole.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::api::{PlanAction, PlannedFile, UploadPlanRequest, CRC32_HEADER, SHA256_HEADER};
use cairn_core::RelPath;
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::{Client, ClientError, Result};

/// Files announced per upload-plan request.
const PLAN_CHUNK: usize = 1000;
/// Read buffer for hashing (at most: a small file gets a buffer of its own size).
const BUF: usize = 256 * 1024;
/// Read size when sending: bigger reads mean fewer system calls and hand-offs per byte.
const SEND_CHUNK: usize = 1024 * 1024;
/// Chunks read ahead of the network per file being sent.
const READ_AHEAD: usize = 4;

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
    /// Local entries that are not regular files (broken links, sockets, FIFOs, devices, a link
    /// that loops), left out, each with why.
    pub ignored: Vec<String>,
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
    /// Known when the plan needed it; otherwise computed while sending.
    sha256: Option<String>,
    action: PlanAction,
    /// The plan's reason, for a clash.
    reason: Option<String>,
}

/// Uploads a file, or a folder's files, to `target_path` in a datastore. A folder's files keep
/// their relative paths under `target_path`; a single file lands at `target_path/NAME`. A folder
/// without files uploads nothing (`files` is 0), which is not an error.
pub async fn upload(
    client: &Client,
    at: Datastore<'_>,
    src: &Path,
    target_path: &str,
    opts: TransferOpts,
    progress: Arc<dyn Progress>,
) -> Result<UploadReport> {
    let ds = at.datastore;
    let TransferOpts { overwrite, concurrency } = opts;
    let target = RelPath::parse_dir(target_path).map_err(|e| ClientError::Local(e.to_string()))?;
    let (found, ignored) = collect(src, &target)?;
    let total: u64 = found.iter().map(|(_, _, size)| size).sum();
    let mut files: Vec<LocalFile> = found
        .into_iter()
        .map(|(local, remote, size)| LocalFile {
            local,
            remote,
            size,
            sha256: None,
            action: PlanAction::Upload,
            reason: None,
        })
        .collect();

    if files.is_empty() {
        // An empty folder uploads nothing, successfully; an empty plan still checks that the
        // datastore is there and that the caller may write to it.
        let req = UploadPlanRequest { files: Vec::new(), overwrite };
        client.upload_plan(at.workspace, at.datastore, &req).await?;
        return Ok(UploadReport { ignored, ..Default::default() });
    }
    // By path and size first: only a file of the same size already there needs a checksum.
    plan(client, at, &mut files.iter_mut().collect::<Vec<_>>(), overwrite).await?;
    let mut unsure: Vec<&mut LocalFile> =
        files.iter_mut().filter(|f| f.action == PlanAction::Checksum).collect();
    if !unsure.is_empty() {
        let bytes = unsure.iter().map(|f| f.size).sum();
        progress.phase("hashing", unsure.len() as u64, bytes);
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hashes: Vec<String> = futures::stream::iter(unsure.iter().map(|f| {
            let (local, size, progress) = (f.local.clone(), f.size, progress.clone());
            async move {
                let sha256 = tokio::task::spawn_blocking({
                    let progress = progress.clone();
                    move || sha256_file_sized(&local, size, &*progress)
                })
                .await
                .map_err(|e| ClientError::Local(e.to_string()))??;
                progress.file_done();
                Ok::<_, ClientError>(sha256)
            }
        }))
        .buffered(workers)
        .try_collect()
        .await?;
        for (f, sha256) in unsure.iter_mut().zip(hashes) {
            f.sha256 = Some(sha256);
        }
        plan(client, at, &mut unsure, overwrite).await?;
    }

    let mut to_send = Vec::new();
    let mut report = UploadReport { files: files.len() as u64, bytes: total, ignored, ..Default::default() };
    let mut conflicts = Vec::new();
    let mut clashes = Vec::new();
    for f in &files {
        match f.action {
            PlanAction::Upload => to_send.push(f),
            PlanAction::Skip => report.skipped.push(f.remote.clone()),
            PlanAction::Conflict => conflicts.push(f.remote.clone()),
            PlanAction::Clash => clashes.push(f.reason.clone().unwrap_or_else(|| f.remote.clone())),
            PlanAction::Checksum => {
                return Err(ClientError::Local(format!(
                    "the server asked again for the checksum of {}, which was sent",
                    f.remote
                )))
            }
        }
    }
    if !clashes.is_empty() {
        return Err(ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: format!(
                "{} file(s) cannot be stored in datastore \"{ds}\": {}; nothing was uploaded (there a path is \
                 a file or a folder, not both, with or without --overwrite)",
                clashes.len(),
                first_few(&clashes, "; ")
            ),
        });
    }
    if !conflicts.is_empty() {
        return Err(ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: format!(
                "{} file(s) already exist in datastore \"{ds}\" with different content: {}; \
                 nothing was uploaded; pass --overwrite (overwrite=True) to replace them",
                conflicts.len(),
                first_few(&conflicts, ", ")
            ),
        });
    }

    let send_bytes: u64 = to_send.iter().map(|f| f.size).sum();
    progress.phase("uploading", to_send.len() as u64, send_bytes);
    let sent: Vec<Vec<String>> =
        futures::stream::iter(in_units(to_send, |f| f.size).into_iter().map(|unit| {
            let progress = progress.clone();
            async move {
                match unit {
                    Unit::One(f) => put_one(client, at, f, overwrite, progress).await.map(|r| vec![r]),
                    Unit::Batch(files) => put_batch(client, at, files, overwrite, progress).await,
                }
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    progress.finish();
    report.bytes_sent = send_bytes;
    report.uploaded = sent.into_iter().flatten().collect();
    report.uploaded.sort();
    Ok(report)
}

/// The first 20 of `items`, joined, and how many more there are.
fn first_few(items: &[String], sep: &str) -> String {
    let shown = items.iter().take(20).cloned().collect::<Vec<_>>().join(sep);
    match items.len().saturating_sub(20) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// Files up to this size travel in batches (one request for many files); larger ones alone,
/// streamed.
const BATCH_FILE_MAX: u64 = 256 * 1024;
/// Most files per batch: enough that a batch's request costs little per file, few enough that
/// an upload of a few hundred files still spreads over several requests at once.
const BATCH_FILES: usize = 100;
/// Most bytes of content per batch (the server takes up to `BATCH_MAX_BYTES`). A batch is held
/// whole in memory on both sides, once per request in flight: this keeps that small.
const BATCH_BYTES: u64 = 1024 * 1024;

/// What one request moves: a file of its own, or a batch of small ones.
enum Unit<T> {
    One(T),
    Batch(Vec<T>),
}

/// Groups the small files into batches, in order; a lone small file goes on its own.
fn in_units<T>(files: Vec<T>, size: impl Fn(&T) -> u64) -> Vec<Unit<T>> {
    let mut units = Vec::new();
    let mut batch: Vec<T> = Vec::new();
    let mut bytes = 0;
    for f in files {
        let size = size(&f);
        if size > BATCH_FILE_MAX {
            units.push(Unit::One(f));
            continue;
        }
        if batch.len() == BATCH_FILES || bytes + size > BATCH_BYTES {
            units.push(Unit::Batch(std::mem::take(&mut batch)));
            bytes = 0;
        }
        bytes += size;
        batch.push(f);
    }
    match batch.len() {
        0 => {}
        1 => units.extend(batch.pop().map(Unit::One)),
        _ => units.push(Unit::Batch(batch)),
    }
    units
}

/// Sends one file by itself, streamed.
async fn put_one(
    client: &Client,
    at: Datastore<'_>,
    f: &LocalFile,
    overwrite: bool,
    progress: Arc<dyn Progress>,
) -> Result<String> {
    let file = std::fs::File::open(&f.local)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", f.local.display())))?;
    // Already hashed for the plan: the SHA-256 goes first, as a header; otherwise the
    // reader computes a CRC-32 of what it sends, which follows the content as a trailer.
    let trailer = f.sha256.is_none();
    let failure = Arc::new(OnceLock::new());
    let body = FileBody::spawn(file, f.local.clone(), f.size, trailer, progress.clone(), failure.clone());
    let opts = crate::PutFile { sha256: f.sha256.as_deref(), overwrite };
    client.put_file_body(at.workspace, at.datastore, &f.remote, body, opts, trailer).await.map_err(|e| {
        match e {
            // The body stopped on a local problem: that is the story, not the cut request.
            _ if failure.get().is_some() => ClientError::Local(failure.get().cloned().unwrap_or_default()),
            ClientError::Api { status, code, message } => {
                ClientError::Api { status, code, message: format!("{}: {message}", f.local.display()) }
            }
            other => other,
        }
    })?;
    progress.file_done();
    Ok(f.remote.clone())
}

/// Sends small files in one request: read whole on a blocking thread (each checked unchanged
/// from start to end of its reading, as [`FileBody`] does), each with its SHA-256 when the plan
/// needed it or else a CRC-32 of what was read.
async fn put_batch(
    client: &Client,
    at: Datastore<'_>,
    files: Vec<&LocalFile>,
    overwrite: bool,
    progress: Arc<dyn Progress>,
) -> Result<Vec<String>> {
    let wanted: Vec<(PathBuf, String, u64, Option<String>)> =
        files.iter().map(|f| (f.local.clone(), f.remote.clone(), f.size, f.sha256.clone())).collect();
    let parts =
        tokio::task::spawn_blocking(move || wanted.into_iter().map(read_part).collect::<Result<Vec<_>>>())
            .await
            .map_err(|e| ClientError::Local(e.to_string()))??;
    let bytes: u64 = parts.iter().map(|p| p.content.len() as u64).sum();
    let answer = client.upload_batch(at.workspace, at.datastore, parts, overwrite).await?;
    progress.advance(bytes);
    for _ in &answer.files {
        progress.file_done();
    }
    Ok(answer.files.into_iter().map(|f| f.path).collect())
}

/// One small file, read whole, as a part of a batch.
fn read_part(
    (local, remote, size, sha256): (PathBuf, String, u64, Option<String>),
) -> Result<crate::BatchPart> {
    let cannot = |e: std::io::Error| ClientError::Local(format!("cannot read {}: {e}", local.display()));
    let mut file = std::fs::File::open(&local).map_err(cannot)?;
    let before = Stamp::of(&file.metadata().map_err(cannot)?);
    // One more byte than the size: a file that grew is read to its end, and refused below.
    let mut content = Vec::with_capacity(size as usize + 1);
    file.read_to_end(&mut content).map_err(cannot)?;
    if Stamp::of(&file.metadata().map_err(cannot)?) != before || content.len() as u64 != size {
        return Err(ClientError::Local(changed(&local)));
    }
    let checksum = match sha256 {
        Some(sha) => (SHA256_HEADER, sha),
        None => (CRC32_HEADER, format!("{:08x}", crc32fast::hash(&content))),
    };
    Ok(crate::BatchPart { path: remote, content, checksum })
}

/// Asks the server's plan for `files` (with their checksums where known) and records each answer.
async fn plan(
    client: &Client,
    at: Datastore<'_>,
    files: &mut [&mut LocalFile],
    overwrite: bool,
) -> Result<()> {
    for chunk in files.chunks_mut(PLAN_CHUNK) {
        let req = UploadPlanRequest {
            files: chunk
                .iter()
                .map(|f| PlannedFile { path: f.remote.clone(), size: f.size, sha256: f.sha256.clone() })
                .collect(),
            overwrite,
        };
        let plan = client.upload_plan(at.workspace, at.datastore, &req).await?;
        if plan.files.len() != chunk.len() {
            return Err(ClientError::Local(format!(
                "the server's upload plan answers for {} files, not the {} announced",
                plan.files.len(),
                chunk.len()
            )));
        }
        for (f, entry) in chunk.iter_mut().zip(plan.files) {
            f.action = entry.action;
            f.reason = entry.reason;
        }
    }
    Ok(())
}

/// What a file's reading thread hands to the request body.
enum Piece {
    Data(Bytes),
    Crc32(u32),
    Failed(std::io::Error),
}

/// A local file as an HTTP request body: a blocking thread reads it in large chunks (sized to the
/// file when small), a few chunks ahead of the network, computing their CRC-32 when asked to; the
/// checksum is then the body's last frame, an `x-cairn-crc32` trailer. If the file's size or
/// modification time at the end differs from the start, the body fails instead of ending, so the
/// server keeps nothing of it (rsync and tar check the same way); a failure's message also goes to
/// `failure`, for the caller to report instead of the cut request.
struct FileBody {
    rx: mpsc::Receiver<Piece>,
    progress: Arc<dyn Progress>,
}

impl FileBody {
    fn spawn(
        mut file: std::fs::File,
        local: PathBuf,
        size: u64,
        checksum: bool,
        progress: Arc<dyn Progress>,
        failure: Arc<OnceLock<String>>,
    ) -> FileBody {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        tokio::task::spawn_blocking(move || {
            let stop = |message: String| {
                let _ = failure.set(message.clone());
                let _ = tx.blocking_send(Piece::Failed(std::io::Error::other(message)));
            };
            let fail = |e: std::io::Error| stop(format!("cannot read {}: {e}", local.display()));
            let before = match file.metadata() {
                Ok(m) => Stamp::of(&m),
                Err(e) => return fail(e),
            };
            let mut crc = checksum.then(crc32fast::Hasher::new);
            // One more byte than the size: a file that grew is still read to its end.
            let chunk = (size as usize).saturating_add(1).min(SEND_CHUNK);
            let started = Instant::now();
            let (mut read, mut queue_full) = (Duration::ZERO, Duration::ZERO);
            loop {
                let mut buf = Vec::with_capacity(chunk);
                let t = Instant::now();
                let got = (&mut file).take(chunk as u64).read_to_end(&mut buf);
                read += t.elapsed();
                match got {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Some(c) = crc.as_mut() {
                            c.update(&buf);
                        }
                        let t = Instant::now();
                        if tx.blocking_send(Piece::Data(Bytes::from(buf))).is_err() {
                            return; // the request ended early: its error says why
                        }
                        queue_full += t.elapsed();
                        if n < chunk {
                            break; // read_to_end stopped short: the end of the file
                        }
                    }
                    Err(e) => return fail(e),
                }
            }
            match file.metadata() {
                Ok(m) if Stamp::of(&m) == before => {}
                Ok(_) => return stop(changed(&local)),
                Err(e) => return fail(e),
            }
            // Where a file's reading time went (CAIRN_LOG=cairn_client=debug): reading (with the
            // CRC-32), and waiting for the network to take what was read. Logged before the last
            // piece goes, so that the line is out before the upload can end.
            tracing::debug!(
                file = %local.display(), size, total = ?started.elapsed(), read = ?read,
                queue_full = ?queue_full, "file read timings"
            );
            if let Some(c) = crc {
                let _ = tx.blocking_send(Piece::Crc32(c.finalize()));
            }
        });
        FileBody { rx, progress }
    }
}

/// What a file that changed while it was read gets said of it.
fn changed(local: &Path) -> String {
    format!(
        "{} changed while it was being uploaded; nothing was stored for it; upload again once it no longer \
         changes",
        local.display()
    )
}

/// What tells that a file changed: its size and modification time (nanoseconds where the
/// filesystem keeps them).
#[derive(PartialEq, Eq)]
struct Stamp(u64, Option<std::time::SystemTime>);

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp(meta.len(), meta.modified().ok())
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(Piece::Data(data)) => {
                self.progress.advance(data.len() as u64);
                Some(Ok(http_body::Frame::data(data)))
            }
            Some(Piece::Crc32(crc)) => {
                let mut trailers = reqwest::header::HeaderMap::new();
                let value = reqwest::header::HeaderValue::from_str(&format!("{crc:08x}"))
                    .expect("hex is a valid header value");
                trailers.insert(CRC32_HEADER, value);
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            Some(Piece::Failed(e)) => Some(Err(e)),
            None => None,
        })
    }
}

/// Local files found for an upload: (local path, remote path, size).
type Found = Vec<(PathBuf, String, u64)>;

/// The regular files to upload, with their remote paths and sizes, in path order, and what was
/// left out. Symbolic links are followed, to files and to folders alike (as `cp -rL` and Azure's
/// `upload_files` do): a link is how a dataset lives in two places. Anything that is not a regular
/// file in the end is left out and said so, never silently.
fn collect(src: &Path, target: &RelPath) -> Result<(Found, Vec<String>)> {
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
        return Ok((vec![(src.to_path_buf(), remote(name)?, meta.len())], Vec::new()));
    }
    let mut out = Vec::new();
    let mut ignored = Vec::new();
    for entry in walkdir::WalkDir::new(src).follow_links(true).sort_by_file_name() {
        let entry = match entry {
            Ok(entry) => entry,
            // A link that loops, or one that leads nowhere.
            Err(e)
                if e.loop_ancestor().is_some()
                    || e.io_error().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                let at = e.path().map_or_else(|| src.display().to_string(), |p| p.display().to_string());
                let why = if e.loop_ancestor().is_some() { "a link that loops" } else { "a broken link" };
                ignored.push(format!("{at}: {why}"));
                continue;
            }
            Err(e) => return Err(ClientError::Local(format!("cannot walk {}: {e}", src.display()))),
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let meta = match std::fs::metadata(entry.path()) {
            Ok(m) if m.is_file() => m,
            Ok(_) => {
                ignored.push(format!("{}: not a regular file", entry.path().display()));
                continue;
            }
            Err(e) => {
                ignored.push(format!("{}: {e}", entry.path().display()));
                continue;
            }
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
    Ok((out, ignored))
}

/// SHA-256 of a local file, reporting bytes read.
pub fn sha256_file(path: &Path, progress: &dyn Progress) -> Result<String> {
    sha256_file_sized(path, BUF as u64, progress)
}

/// [`sha256_file`] with a read buffer no larger than `size_hint` + 1 bytes (a small file gets a
/// small buffer: zeroing 256 KiB per 4 KiB file costs more than hashing it).
fn sha256_file_sized(path: &Path, size_hint: u64, progress: &dyn Progress) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| ClientError::Local(format!("cannot read {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; (size_hint as usize).saturating_add(1).clamp(1, BUF)];
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

/// Where a download reads files from: a datastore, or a run's artifacts.
#[derive(Clone, Copy, Debug)]
pub enum Remote<'a> {
    Datastore(Datastore<'a>),
    Run { workspace: &'a str, run: &'a str },
}

type ByteStream = futures::stream::BoxStream<'static, Result<Bytes>>;

impl Remote<'_> {
    /// The files under `prefix` (a folder, or the root).
    async fn list(&self, client: &Client, prefix: &RelPath) -> Result<Vec<cairn_core::api::FileEntry>> {
        match *self {
            Remote::Datastore(Datastore { workspace, datastore }) => {
                client.list_files(workspace, datastore, prefix.as_str()).await
            }
            Remote::Run { workspace, run } => {
                let mut all = client.run_artifacts(workspace, run).await?;
                // A folder's files, as a datastore's listing gives them (not `outputs2/` for `outputs`).
                let folder = prefix.as_str();
                all.retain(|f| {
                    prefix.is_root() || f.path.strip_prefix(folder).is_some_and(|rest| rest.starts_with('/'))
                });
                Ok(all)
            }
        }
    }

    async fn one(&self, client: &Client, path: &str) -> Result<ByteStream> {
        Ok(match *self {
            Remote::Datastore(Datastore { workspace, datastore }) => {
                client.get_file(workspace, datastore, path).await?.1.boxed()
            }
            Remote::Run { workspace, run } => client.get_run_artifact(workspace, run, path).await?.boxed(),
        })
    }

    async fn batch(&self, client: &Client, paths: &[String]) -> Result<Vec<Bytes>> {
        match *self {
            Remote::Datastore(Datastore { workspace, datastore }) => {
                client.download_batch(workspace, datastore, paths).await
            }
            Remote::Run { workspace, run } => client.run_download_batch(workspace, run, paths).await,
        }
    }
}

/// Downloads a file or a folder (`""`: everything) from a datastore or a run into `dest`, keeping
/// remote paths (`winedata/x.csv` lands at `dest/winedata/x.csv`). Each file is written to a
/// temporary name and renamed when complete. Existing local files are refused unless `overwrite`.
pub async fn download(
    client: &Client,
    from: Remote<'_>,
    remote: &str,
    dest: &Path,
    opts: TransferOpts,
    progress: Arc<dyn Progress>,
) -> Result<DownloadReport> {
    let TransferOpts { overwrite, concurrency } = opts;
    let prefix = RelPath::parse_dir(remote).map_err(|e| ClientError::Local(e.to_string()))?;
    let mut entries = from.list(client, &prefix).await?;
    if entries.is_empty() && !prefix.is_root() {
        // Not a folder: a single file (or nothing, which the GET reports as a 404).
        entries.push(cairn_core::api::FileEntry { path: prefix.to_string(), size: 0, last_modified: 0 });
    }
    let locals = local_targets(dest, entries.iter().map(|e| e.path.as_str()), overwrite)?;
    // (remote path, local path, size) of each file.
    let files: Vec<(String, PathBuf, u64)> =
        entries.iter().zip(locals).map(|(e, local)| (e.path.clone(), local, e.size)).collect();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    progress.phase("downloading", entries.len() as u64, total);
    // Small files come in batches (one request, written in one trip to a blocking thread),
    // larger ones streamed one by one: a request per small file was what bounded a folder's
    // download.
    let written: Vec<u64> = futures::stream::iter(in_units(files, |f| f.2).into_iter().map(|unit| {
        let progress = progress.clone();
        async move {
            match unit {
                Unit::One((path, local, _)) => {
                    let stream = from.one(client, &path).await?;
                    let advance = |chunk: &[u8]| progress.advance(chunk.len() as u64);
                    let size = save_stream(&local, stream, advance, |_| Ok(())).await?;
                    progress.file_done();
                    Ok::<_, ClientError>(size)
                }
                Unit::Batch(files) => {
                    let paths: Vec<String> = files.iter().map(|f| f.0.clone()).collect();
                    let contents = from.batch(client, &paths).await?;
                    let size: u64 = contents.iter().map(|c| c.len() as u64).sum();
                    let count = contents.len();
                    let writes: Vec<(PathBuf, Bytes)> =
                        files.into_iter().map(|f| f.1).zip(contents).collect();
                    tokio::task::spawn_blocking(move || save_all(&writes))
                        .await
                        .map_err(|e| ClientError::Local(format!("writing downloaded files: {e}")))??;
                    progress.advance(size);
                    (0..count).for_each(|_| progress.file_done());
                    Ok(size)
                }
            }
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .try_collect()
    .await?;
    progress.finish();
    Ok(DownloadReport { files: entries.len() as u64, bytes: written.iter().sum() })
}

/// Files downloaded whole, each written as [`save_stream`] does (a temporary name, then renamed).
fn save_all(files: &[(PathBuf, Bytes)]) -> Result<()> {
    for (local, content) in files {
        write_whole(local, &partial_name(local), content)
            .map_err(|e| ClientError::Local(format!("cannot write {}: {e}", local.display())))?;
    }
    Ok(())
}

/// The temporary name a download is written to before it is renamed to `local`.
fn partial_name(local: &Path) -> PathBuf {
    local.with_file_name(format!(
        ".{}.cairn-partial",
        local.file_name().and_then(|n| n.to_str()).unwrap_or("download")
    ))
}

/// Where each path the server sent lands under `dest` (each checked first: they come from the
/// server); unless `overwrite`, refused as a whole, naming them, when any of them is already there.
pub fn local_targets<'a>(
    dest: &Path,
    remotes: impl IntoIterator<Item = &'a str>,
    overwrite: bool,
) -> Result<Vec<PathBuf>> {
    let mut locals = Vec::new();
    for remote in remotes {
        let rel = RelPath::parse(remote)
            .map_err(|err| ClientError::Local(format!("server sent an unsafe path: {err}")))?;
        locals.push(rel.as_str().split('/').fold(dest.to_path_buf(), |p, c| p.join(c)));
    }
    let existing: Vec<String> =
        locals.iter().filter(|l| !overwrite && l.exists()).map(|l| l.display().to_string()).collect();
    if existing.is_empty() {
        return Ok(locals);
    }
    Err(ClientError::Local(format!(
        "{} local file(s) already exist: {}; nothing was downloaded; pass --overwrite to replace them",
        existing.len(),
        first_few(&existing, ", ")
    )))
}

/// Writes `stream` to `local` (and the folders above it) through `.NAME.cairn-partial` beside it,
/// renamed into place once complete and once `check` accepts the byte count; removed on any
/// failure, so `local` is never seen half-written. `on_chunk` sees every chunk (progress, a
/// checksum). Returns the bytes written.
pub async fn save_stream<S>(
    local: &Path,
    stream: S,
    mut on_chunk: impl FnMut(&[u8]),
    check: impl FnOnce(u64) -> Result<()>,
) -> Result<u64>
where
    S: Stream<Item = Result<Bytes>>,
{
    let partial = partial_name(local);
    let local_err =
        |e: std::io::Error| ClientError::Local(format!("cannot write {}: {e}", partial.display()));
    let mut stream = std::pin::pin!(stream);
    // A small file's body arrives in one piece: then checked first and written in one trip to a
    // blocking thread, instead of the five (folder, create, write, flush, rename) of the loop
    // below, which made a folder of many small files slow to download.
    let first = stream.next().await.transpose()?;
    let second = match first {
        Some(_) => stream.next().await.transpose()?,
        None => None,
    };
    if second.is_none() {
        let body = first.unwrap_or_default();
        let size = body.len() as u64;
        on_chunk(&body);
        check(size)?;
        let (to, tmp) = (local.to_path_buf(), partial.clone());
        tokio::task::spawn_blocking(move || write_whole(&to, &tmp, &body))
            .await
            .map_err(|e| ClientError::Local(format!("writing {}: {e}", partial.display())))?
            .map_err(local_err)?;
        return Ok(size);
    }
    // The two pieces already read go first, then the rest.
    let mut stream = futures::stream::iter(first.into_iter().chain(second).map(Ok)).chain(stream);
    if let Some(parent) = local.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| ClientError::Local(format!("cannot create {}: {e}", parent.display())))?;
    }
    let mut out = tokio::fs::File::create(&partial).await.map_err(local_err)?;
    let mut size = 0u64;
    let copied: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await.map_err(local_err)?;
            size += chunk.len() as u64;
            on_chunk(&chunk);
        }
        out.flush().await.map_err(local_err)?;
        check(size)
    }
    .await;
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(e);
    }
    tokio::fs::rename(&partial, local).await.map_err(local_err)?;
    Ok(size)
}

/// `body` written to `partial`, then renamed to `local` (its folder made first); nothing left
/// behind on failure.
fn write_whole(local: &Path, partial: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = local.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let written = std::fs::write(partial, body).and_then(|()| std::fs::rename(partial, local));
    if written.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::SystemTime;

    #[tokio::test]
    async fn a_saved_stream_is_whole_or_absent_in_one_piece_or_many() {
        let dir = tempfile::tempdir().unwrap();
        let pieces = |parts: &[&'static [u8]]| {
            futures::stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))).collect::<Vec<_>>())
        };
        for (name, parts) in
            [("one/a.txt", vec![&b"whole"[..]]), ("many/b.txt", vec![b"ab", b"cd", b"e"]), ("none/c", vec![])]
        {
            let local = dir.path().join(name);
            let mut seen = 0;
            let n = save_stream(&local, pieces(&parts), |c| seen += c.len(), |_| Ok(())).await.unwrap();
            assert_eq!(std::fs::read(&local).unwrap(), parts.concat(), "{name}");
            assert_eq!((n as usize, seen), (parts.concat().len(), parts.concat().len()), "{name}");
        }
        // A refused byte count leaves nothing, whichever path the body took.
        for (name, parts) in [("x/one", vec![&b"whole"[..]]), ("x/many", vec![b"ab", b"cd"])] {
            let local = dir.path().join(name);
            let refuse = |_| Err(ClientError::Local("wrong size".into()));
            assert!(save_stream(&local, pieces(&parts), |_| (), refuse).await.is_err());
            let left: Vec<_> =
                std::fs::read_dir(dir.path().join("x")).into_iter().flatten().flatten().collect();
            assert!(left.is_empty(), "{name}: {left:?}");
        }
    }

    fn spawn(path: &Path, size: u64, checksum: bool) -> (FileBody, Arc<OnceLock<String>>) {
        let failure = Arc::new(OnceLock::new());
        let file = std::fs::File::open(path).unwrap();
        let body =
            FileBody::spawn(file, path.to_path_buf(), size, checksum, Arc::new(NoProgress), failure.clone());
        (body, failure)
    }

    async fn next(body: &mut FileBody) -> Option<std::io::Result<http_body::Frame<Bytes>>> {
        std::future::poll_fn(|cx| http_body::Body::poll_frame(Pin::new(&mut *body), cx)).await
    }

    /// Everything the body yields: its data, its trailers, and the error that ended it, if any.
    async fn drain(
        body: &mut FileBody,
    ) -> (Vec<u8>, Option<reqwest::header::HeaderMap>, Option<std::io::Error>) {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = next(body).await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(e) => return (data, trailers, Some(e)),
            }
        }
        (data, trailers, None)
    }

    #[tokio::test]
    async fn a_file_is_sent_whole_then_the_crc32_of_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        for size in [0, 5, 3 * SEND_CHUNK + 17] {
            let path = dir.path().join(format!("f{size}.bin"));
            let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(&path, &content).unwrap();
            let (mut body, failure) = spawn(&path, size as u64, true);
            let (data, trailers, error) = drain(&mut body).await;
            assert!(error.is_none() && failure.get().is_none(), "{error:?}");
            assert_eq!(data, content);
            let crc = trailers.expect("a crc32 trailer")[CRC32_HEADER].to_str().unwrap().to_string();
            assert_eq!(crc, format!("{:08x}", crc32fast::hash(&content)));
            // Already hashed (SHA-256 in a header): no trailer.
            let (mut body, _) = spawn(&path, size as u64, false);
            let (data, trailers, error) = drain(&mut body).await;
            assert!(error.is_none() && trailers.is_none() && data == content);
        }
    }

    #[tokio::test]
    async fn a_file_that_changes_while_it_is_read_ends_the_body_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8 * SEND_CHUNK;
        let content = vec![1u8; size];
        // Rewritten in place (same size, another modification time), or grown.
        let changes: [fn(&Path); 2] = [
            |p| {
                let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
                f.write_all(&[2u8; 100]).unwrap();
                f.set_modified(SystemTime::now() - Duration::from_secs(60)).unwrap();
            },
            |p| std::fs::OpenOptions::new().append(true).open(p).unwrap().write_all(b"more").unwrap(),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let path = dir.path().join(format!("changing{i}.bin"));
            std::fs::write(&path, &content).unwrap();
            let (mut body, failure) = spawn(&path, size as u64, true);
            // The reader is at most a few chunks ahead: most of the file is still to be read.
            assert!(next(&mut body).await.unwrap().unwrap().is_data());
            change(&path);
            let (_, trailers, error) = drain(&mut body).await;
            let error = error.expect("the body must fail, not end").to_string();
            assert!(error.contains("changed while it was being uploaded"), "{error}");
            assert!(trailers.is_none(), "no checksum may follow a changed file");
            assert_eq!(failure.get().map(String::as_str), Some(error.as_str()));
        }
    }

    #[test]
    fn small_files_travel_in_batches_and_large_ones_alone() {
        let file = |size: u64| LocalFile {
            local: PathBuf::from("x"),
            remote: format!("r{size}"),
            size,
            sha256: None,
            action: PlanAction::Upload,
            reason: None,
        };
        let mut files: Vec<LocalFile> = (0..250).map(|_| file(10)).collect();
        files.push(file(BATCH_FILE_MAX + 1));
        files.extend((0..3).map(|_| file(BATCH_FILE_MAX)));
        files.push(file(1));
        let shape: Vec<usize> = in_units(files.iter().collect(), |f| f.size)
            .iter()
            .map(|u| match u {
                Unit::One(_) => 0,
                Unit::Batch(b) => b.len(),
            })
            .collect();
        // 250 small ones: 100, 100, then 50 that the later small files join; the large one
        // goes at once, on its own.
        assert_eq!(shape, [100, 100, 0, 54]);
        let alone: Vec<LocalFile> = vec![file(1)];
        assert!(matches!(in_units(alone.iter().collect(), |f| f.size)[..], [Unit::One(_)]));
        let bytes: Vec<LocalFile> = (0..20).map(|_| file(BATCH_FILE_MAX)).collect();
        let shape: Vec<usize> = in_units(bytes.iter().collect(), |f| f.size)
            .iter()
            .map(|u| if let Unit::Batch(b) = u { b.len() } else { 1 })
            .collect();
        assert_eq!(shape, [4, 4, 4, 4, 4], "at most {BATCH_BYTES} bytes per batch");
    }

    #[test]
    fn a_batch_part_carries_a_crc32_or_the_known_sha256_and_refuses_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        std::fs::write(&path, b"content").unwrap();
        let part = read_part((path.clone(), "d/f.txt".into(), 7, None)).unwrap();
        assert_eq!((part.path.as_str(), part.content.as_slice()), ("d/f.txt", b"content".as_slice()));
        assert_eq!(part.checksum, (CRC32_HEADER, format!("{:08x}", crc32fast::hash(b"content"))));
        let part = read_part((path.clone(), "d/f.txt".into(), 7, Some("ab".repeat(32)))).unwrap();
        assert_eq!(part.checksum, (SHA256_HEADER, "ab".repeat(32)));
        // Not the size the plan was made with: it changed since.
        let err = read_part((path, "d/f.txt".into(), 6, None)).unwrap_err().to_string();
        assert!(err.contains("changed while it was being uploaded"), "{err}");
    }
}
