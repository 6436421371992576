//! The logic that spans metadata and files: where a datastore's files live, upload plans,
//! verified uploads that keep checksums, and which workspaces are empty.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use cairn_blob::{BlobStore, Checksum, Put, PutOpts, Trailing, Written};
use cairn_core::api::{
    CreateDatastore, DatastoreKind, FileEntry, PlanAction, PlanEntry, PutFileResult, PutStatus, UploadPlan,
    UploadPlanRequest, Workspace,
};
use cairn_core::cache::LookupCache;
use cairn_core::runs::RunStatus;
use cairn_core::{quoted, validate_name, Error, RelPath};
use cairn_store::{DatastoreRecord, FileRecord};
use futures::Stream;

use crate::state::AppState;

/// Datastore records by (workspace name, datastore name). Every file request needs one, and a
/// record only ever goes away (deleted with its datastore or workspace; nothing in it is ever
/// updated), so it is looked up once and kept until a datastore or workspace is deleted.
pub type DatastoreCache = LookupCache<(String, String), DatastoreRecord>;

/// Cached datastores at most.
const DATASTORE_CACHE_MAX: usize = 10_000;

pub fn datastore_cache() -> DatastoreCache {
    LookupCache::new(None, DATASTORE_CACHE_MAX)
}

impl AppState {
    /// The datastore `ds` of workspace `ws`, from the cache or the database.
    pub async fn datastore_record(&self, ws: &str, ds: &str) -> Result<DatastoreRecord, Error> {
        let load = || async {
            let workspace = self.store.workspace(ws).await?;
            self.store.datastore(&workspace, ds).await
        };
        self.datastore_cache.get_or_load(&(ws.to_string(), ds.to_string()), load, |_| true).await
    }

    /// Empties the datastore cache; called after a datastore or workspace was deleted.
    pub fn forget_datastores(&self) {
        self.datastore_cache.clear();
    }

    /// The storage behind a datastore (opened once, then cached).
    pub fn blobs_of(&self, ds: &DatastoreRecord) -> Result<BlobStore, Error> {
        if let Some(b) = self.blob_cache.lock().expect("blob cache lock").get(&ds.id) {
            return Ok(b.clone());
        }
        let blobs = match ds.datastore.kind {
            DatastoreKind::Default => self.artifacts.child(&default_prefix(&ds.workspace_id)),
            DatastoreKind::Local | DatastoreKind::S3 => BlobStore::open(&ds.datastore.location)?,
        };
        self.blob_cache.lock().expect("blob cache lock").insert(ds.id.clone(), blobs.clone());
        Ok(blobs)
    }

    /// Checks a datastore to register: its name, and that its location is usable and safe.
    pub async fn validate_new_datastore(&self, req: &CreateDatastore) -> Result<(), Error> {
        validate_name("datastore name", &req.name)?;
        if req.name == "default" {
            return Err(Error::conflict(
                "the name \"default\" is reserved for the workspace's own datastore",
            ));
        }
        match req.kind {
            DatastoreKind::Default => Err(Error::invalid(
                "kind \"default\" cannot be registered: every workspace has exactly one; use \"local\" or \"s3\"",
            )),
            DatastoreKind::Local => {
                let dir = Path::new(&req.location);
                if !dir.is_absolute() {
                    return Err(Error::invalid(format!(
                        "location {} must be an absolute directory path for a local datastore",
                        quoted(&req.location)
                    )));
                }
                let real = dir.canonicalize().map_err(|e| {
                    Error::invalid(format!("location {} is not usable: {e}", quoted(&req.location)))
                })?;
                if !real.is_dir() {
                    return Err(Error::invalid(format!("location {} is not a directory", quoted(&req.location))));
                }
                let data = self.data_dir.canonicalize().unwrap_or_else(|_| self.data_dir.clone());
                if real.starts_with(&data) || data.starts_with(&real) {
                    return Err(Error::invalid(format!(
                        "location {} overlaps the server's data directory, which holds secrets",
                        quoted(&req.location)
                    )));
                }
                Ok(())
            }
            DatastoreKind::S3 => {
                if !req.location.starts_with("s3://") {
                    return Err(Error::invalid(format!(
                        "location {} must look like s3://bucket/prefix for an s3 datastore",
                        quoted(&req.location)
                    )));
                }
                // Registering a bucket that cannot be read would only fail later, in a job.
                let blobs = BlobStore::open(&req.location)?;
                blobs.is_empty(&RelPath::parse_dir("")?).await.map(|_| ()).map_err(|e| {
                    Error::invalid(format!("location {} is not reachable with the server's credentials: {e}", quoted(&req.location)))
                })
            }
        }
    }

    /// Deletes a workspace: refuses when it holds anything unless `force`; with `force`, also
    /// deletes its default datastore's files (never the files of other datastores).
    pub async fn delete_workspace(&self, ws: &Workspace, force: bool) -> Result<(), Error> {
        let datastores = self.store.list_datastores(ws, None, Some(cairn_store::MAX_PAGE_SIZE)).await?;
        let default = datastores.items.iter().find(|d| d.datastore.kind == DatastoreKind::Default);
        let endpoints = self.store.list_endpoints(ws).await?;
        if !force {
            let mut contents = Vec::new();
            if !endpoints.is_empty() {
                let names: Vec<_> = endpoints.iter().map(|e| e.name.as_str()).collect();
                contents.push(format!("endpoints {}", names.join(", ")));
            }
            let others: Vec<_> = datastores
                .items
                .iter()
                .filter(|d| d.datastore.kind != DatastoreKind::Default)
                .map(|d| d.datastore.name.clone())
                .collect();
            if !others.is_empty() {
                contents.push(format!("datastores {}", others.join(", ")));
            }
            for (what, n) in self.store.workspace_contents(ws).await? {
                contents.push(format!("{n} {what}"));
            }
            if let Some(d) = default {
                if !self.blobs_of(d)?.is_empty(&RelPath::parse_dir("")?).await? {
                    contents.push("files in the default datastore".to_string());
                }
            }
            if !contents.is_empty() {
                return Err(Error::conflict(format!(
                    "workspace \"{}\" is not empty ({}); delete them first or pass --force (force=true)",
                    ws.name,
                    contents.join("; ")
                )));
            }
        }
        // What runs on the workspace's behalf stops first: replicas of its deployments and its
        // active jobs (their rows are about to go; their processes must not outlive them).
        // Each endpoint's lock is held until the workspace is gone: a deployment created beside
        // this delete is either found here or finds no endpoint.
        let endpoint_locks: Vec<_> =
            endpoints.iter().map(|e| self.deployments.endpoint_lock(&e.id)).collect();
        let mut _creating_blocked = Vec::new();
        for (e, lock) in endpoints.iter().zip(&endpoint_locks) {
            _creating_blocked.push(lock.lock().await);
            for d in self.store.list_deployments(&e.id).await? {
                crate::deployments::delete(self, ws, &d).await?;
            }
        }
        let active = [
            RunStatus::Queued,
            RunStatus::Preparing,
            RunStatus::Starting,
            RunStatus::Running,
            RunStatus::Finalizing,
        ];
        for run in self.store.runs_in_status(&active).await? {
            if run.workspace_id == ws.id {
                self.store.transition_run(&run.id, &[RunStatus::Queued], RunStatus::Canceled, None).await?;
                self.jobs.stop(&run.id, crate::jobs::StopReason::Canceled);
            }
        }
        self.store.delete_workspace(&ws.name).await?;
        self.forget_datastores();
        for e in &endpoints {
            self.metrics.remove(&e.name);
        }
        {
            let mut cache = self.blob_cache.lock().expect("blob cache lock");
            for d in &datastores.items {
                cache.remove(&d.id);
            }
        }
        // The rows are gone, so the workspace is; its files are cleaned up after, and a failure
        // leaves only unreachable files under a prefix no new workspace will reuse (ids are unique).
        let own = self.artifacts.child(&format!("workspaces/{}", ws.id));
        if let Err(e) = own.delete_all(&RelPath::parse_dir("")?).await {
            tracing::warn!(workspace = %ws.name, error = %e, "could not delete all files of a deleted workspace");
        }
        Ok(())
    }

    /// Says, for each announced file, whether it must be sent, can be skipped, or conflicts; or,
    /// for a file announced without a checksum when one of the same size is there, that its
    /// checksum is needed to decide.
    pub async fn plan_upload(
        &self,
        ds: &DatastoreRecord,
        req: &UploadPlanRequest,
    ) -> Result<UploadPlan, Error> {
        let mut paths = Vec::with_capacity(req.files.len());
        for f in &req.files {
            paths.push(RelPath::parse(&f.path)?);
            if let Some(s) = &f.sha256 {
                Checksum::Sha256.check(s)?;
            }
        }
        let blobs = self.blobs_of(ds)?;
        for path in &paths {
            blobs.check_name(path)?;
        }
        let (common, existing) = list_common_dir(&blobs, &paths).await?;
        let shapes =
            if blobs.is_local() { Some(Shapes::of(&blobs, &common, &existing, &paths).await?) } else { None };
        let keys: Vec<&str> = paths.iter().map(RelPath::as_str).collect();
        let records = self.store.file_records(&ds.id, &keys).await?;
        let mut out = Vec::with_capacity(req.files.len());
        for (f, path) in req.files.iter().zip(&paths) {
            if let Some(reason) = shapes.as_ref().and_then(|s| s.clash(path.as_str())) {
                out.push(PlanEntry { path: f.path.clone(), action: PlanAction::Clash, reason: Some(reason) });
                continue;
            }
            let action = match existing.get(path.as_str()) {
                None => PlanAction::Upload,
                Some(entry) => {
                    let same = match &f.sha256 {
                        _ if entry.size != f.size => false,
                        // Same size, no checksum: only the client can settle it, by hashing.
                        None => {
                            out.push(PlanEntry {
                                path: f.path.clone(),
                                action: PlanAction::Checksum,
                                reason: None,
                            });
                            continue;
                        }
                        Some(sha256) => {
                            self.stored_sha256(&blobs, ds, path, entry, records.get(path.as_str())).await?
                                == sha256.to_ascii_lowercase()
                        }
                    };
                    match (same, req.overwrite) {
                        (true, _) => PlanAction::Skip,
                        (false, true) => PlanAction::Upload,
                        (false, false) => PlanAction::Conflict,
                    }
                }
            };
            out.push(PlanEntry { path: f.path.clone(), action, reason: None });
        }
        Ok(UploadPlan { files: out })
    }

    /// The checksum of a stored file: from the record Cairn kept when it wrote the file, unless the
    /// file changed since, in which case it is read and re-recorded. In a local directory "changed"
    /// is the inode's change time, which every write moves and no tool can set back (`cp -p`,
    /// `rsync -a` and `touch -d` set the modification time to the past, which once made an edited
    /// file of the same size look unchanged); in an object store, the object's modification time.
    /// Both are kept coarsely (the kernel's clock tick, whole seconds on some file systems and in
    /// S3's `Last-Modified`), so a change made just after the record can carry an earlier time: a
    /// record written less than `RACY_MS` after the file's last change proves nothing (git's "racy
    /// clean" files) and the file is read again.
    async fn stored_sha256(
        &self,
        blobs: &BlobStore,
        ds: &DatastoreRecord,
        path: &RelPath,
        entry: &FileEntry,
        record: Option<&FileRecord>,
    ) -> Result<String, Error> {
        if let Some(r) = record {
            let changed = match blobs.changed_at(path).await? {
                Some(ctime) => ctime,
                None => entry.last_modified,
            };
            if r.size == entry.size && changed + RACY_MS <= r.updated_at {
                return Ok(r.sha256.clone());
            }
        }
        let written = blobs.sha256_of(path).await?;
        self.store.put_file_record(&ds.id, path.as_str(), written.size, &written.sha256).await?;
        Ok(written.sha256)
    }

    /// Stores one uploaded file, verified against the checksums the client gave before and after
    /// the body.
    pub async fn put_file<S, E>(
        &self,
        ds: &DatastoreRecord,
        path: &RelPath,
        body: S,
        checks: UploadChecks<'_>,
        overwrite: bool,
        declared_len: Option<u64>,
    ) -> Result<PutFileResult, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let UploadChecks { sha256, crc32, trailing } = checks;
        check_announced(sha256, crc32)?;
        let blobs = self.blobs_of(ds)?;
        // With no checksum to compare and nothing to replace, there is nothing to look at first:
        // the atomic create below finds the file there, if it is, and then compares what it
        // received. That saves a blocking call per file on an upload of many small files (the
        // client plans first, then sends each file's checksum as a trailer, without a length). A
        // request declaring a large body is still looked at first, so that an existing file of
        // another length is refused before its body is read, and so is every file of an S3
        // datastore (whose conditional writes not every service has).
        let look_first = sha256.is_some()
            || overwrite
            || declared_len.is_some_and(|n| n > SMALL_FILE)
            || !blobs.is_local();
        let existing = if look_first { blobs.head(path).await? } else { None };
        if let (Some(entry), Some(expected)) = (&existing, sha256) {
            let records = self.store.file_records(&ds.id, &[path.as_str()]).await?;
            let stored = self.stored_sha256(&blobs, ds, path, entry, records.get(path.as_str())).await?;
            if stored.eq_ignore_ascii_case(expected) {
                return Ok(PutFileResult {
                    path: path.to_string(),
                    size: entry.size,
                    sha256: Some(stored),
                    status: PutStatus::Unchanged,
                });
            }
        }
        let opts = PutOpts {
            expected_sha256: sha256,
            expected_crc32: crc32,
            max_bytes: Some(self.max_upload_bytes),
            overwrite,
            lazy_sha256: true,
        };
        if let (Some(entry), false) = (&existing, overwrite) {
            // Taken, and no checksum said the content is the same: a body of another length (or
            // one whose SHA-256 already differs) is refused before it is read; any other is
            // received, not stored, and compared, as the server hashes what it receives anyway.
            if sha256.is_some() || declared_len.is_some_and(|n| n != entry.size) {
                return Err(different_content(path));
            }
            let received = cairn_blob::receive(path, body, opts, trailing).await?;
            return self.unchanged_or_conflict(&blobs, ds, path, received).await;
        }
        // (A file and a folder that would share the path is an error already worded so.)
        let (size, sha256) = match blobs.put_stream_trailing(path, body, opts, trailing).await? {
            Put::Stored(written) => {
                self.store.put_file_record(&ds.id, path.as_str(), written.size, &written.sha256).await?;
                (written.size, Some(written.sha256))
            }
            Put::StoredUnhashed(size) => {
                // A record of the content it replaced would be stale already (the change time
                // says so), but is not kept either; the SHA-256 is computed when first asked for.
                self.store.delete_file_records(&ds.id, path.as_str()).await?;
                (size, None)
            }
            // Created meanwhile, or (not looked at first) there all along.
            Put::Taken(received) => return self.unchanged_or_conflict(&blobs, ds, path, received).await,
        };
        Ok(PutFileResult {
            path: path.to_string(),
            size,
            sha256,
            status: if existing.is_some() { PutStatus::Replaced } else { PutStatus::Created },
        })
    }

    /// The answer to a body received for a path already taken, without `overwrite`: `unchanged`
    /// when it is the stored file's content (nothing is rewritten), else the 409 that says so.
    async fn unchanged_or_conflict(
        &self,
        blobs: &BlobStore,
        ds: &DatastoreRecord,
        path: &RelPath,
        received: Written,
    ) -> Result<PutFileResult, Error> {
        let Some(entry) = blobs.head(path).await? else {
            return Err(Error::conflict(format!(
                "{path} was deleted by another request while this one was received; send it again"
            )));
        };
        if entry.size == received.size {
            let records = self.store.file_records(&ds.id, &[path.as_str()]).await?;
            let stored = self.stored_sha256(blobs, ds, path, &entry, records.get(path.as_str())).await?;
            if stored == received.sha256 {
                return Ok(PutFileResult {
                    path: path.to_string(),
                    size: entry.size,
                    sha256: Some(stored),
                    status: PutStatus::Unchanged,
                });
            }
        }
        Err(different_content(path))
    }
}

/// The 409 of a file sent, without `overwrite`, where another content is stored.
fn different_content(path: &RelPath) -> Error {
    Error::conflict(format!(
        "{path} already exists with different content; pass overwrite=true (--overwrite) to replace it"
    ))
}

/// One file of an upload batch: where it goes, its content, and the checksums sent with it.
pub struct BatchFile {
    pub path: RelPath,
    pub content: Bytes,
    pub sha256: Option<String>,
    pub crc32: Option<String>,
}

impl AppState {
    /// Stores a batch of small files: every checksum is checked before anything is written, then
    /// all files are written as one group (all or none without `overwrite`, see
    /// `BlobStore::put_many`), then their records.
    pub async fn put_batch(
        &self,
        ds: &DatastoreRecord,
        files: Vec<BatchFile>,
        overwrite: bool,
    ) -> Result<Vec<PutFileResult>, Error> {
        let mut seen = std::collections::HashSet::with_capacity(files.len());
        let mut written = Vec::with_capacity(files.len());
        for f in &files {
            if !seen.insert(f.path.as_str()) {
                return Err(Error::invalid(format!(
                    "{} appears twice in one batch; nothing was stored",
                    f.path
                )));
            }
            check_announced(f.sha256.as_deref(), f.crc32.as_deref())?;
            if f.content.len() as u64 > self.max_upload_bytes {
                return Err(Error::TooLarge(format!(
                    "{} is {} bytes; this server accepts files up to {} bytes; nothing was stored",
                    f.path,
                    f.content.len(),
                    self.max_upload_bytes
                )));
            }
            written.push(cairn_blob::verify_content(
                &f.path,
                &f.content,
                f.sha256.as_deref(),
                f.crc32.as_deref(),
            )?);
        }
        let blobs = self.blobs_of(ds)?;
        let paths: Vec<RelPath> = files.iter().map(|f| f.path.clone()).collect();
        let contents: Vec<(RelPath, Bytes)> = files.into_iter().map(|f| (f.path, f.content)).collect();
        // Without overwrite, a batch resent after its answer was lost (or with files already
        // there with the same content) is not a conflict: those files are `unchanged`. Looked at
        // only when the all-or-none write finds a path taken, so a batch of new files costs no
        // listing.
        let mut unchanged = vec![false; paths.len()];
        let replaced = match blobs.put_many(contents.clone(), overwrite).await {
            Ok(replaced) => replaced,
            Err(Error::Conflict(why)) if !overwrite => {
                let (_, existing) = list_common_dir(&blobs, &paths).await?;
                let taken: Vec<&str> =
                    paths.iter().map(RelPath::as_str).filter(|p| existing.contains_key(*p)).collect();
                let records = self.store.file_records(&ds.id, &taken).await?;
                let mut different = Vec::new();
                for (i, path) in paths.iter().enumerate() {
                    let Some(entry) = existing.get(path.as_str()) else { continue };
                    let same = entry.size == written[i].size
                        && self.stored_sha256(&blobs, ds, path, entry, records.get(path.as_str())).await?
                            == written[i].sha256;
                    if same {
                        unchanged[i] = true;
                    } else {
                        different.push(path.as_str());
                    }
                }
                if different.is_empty() && !unchanged.contains(&true) {
                    // Taken by another request between the write and the listing.
                    return Err(Error::Conflict(why));
                }
                if !different.is_empty() {
                    let shown: Vec<String> =
                        different.iter().take(10).map(|p| cairn_core::quoted(p)).collect();
                    return Err(Error::conflict(format!(
                        "{} file(s) of the batch already exist with different content ({}{}); pass \
                         overwrite=true (--overwrite) to replace them; nothing of this batch was stored",
                        different.len(),
                        shown.join(", "),
                        if different.len() > 10 { ", …" } else { "" }
                    )));
                }
                let rest: Vec<(RelPath, Bytes)> =
                    contents.into_iter().zip(&unchanged).filter(|(_, u)| !**u).map(|(f, _)| f).collect();
                let mut done = blobs.put_many(rest, false).await?.into_iter();
                unchanged.iter().map(|u| if *u { false } else { done.next().unwrap_or(false) }).collect()
            }
            Err(e) => return Err(e),
        };
        let records = paths
            .iter()
            .zip(&written)
            .zip(&unchanged)
            .filter(|(_, u)| !**u)
            .map(|((path, w), _)| self.store.put_file_record(&ds.id, path.as_str(), w.size, &w.sha256));
        futures::future::try_join_all(records).await?;
        Ok(paths
            .into_iter()
            .zip(written)
            .zip(replaced.into_iter().zip(unchanged))
            .map(|((path, w), (replaced, unchanged))| PutFileResult {
                path: path.to_string(),
                size: w.size,
                sha256: Some(w.sha256),
                status: match (unchanged, replaced) {
                    (true, _) => PutStatus::Unchanged,
                    (false, true) => PutStatus::Replaced,
                    (false, false) => PutStatus::Created,
                },
            })
            .collect())
    }
}

/// How long after a file's last change its checksum record must have been written to be trusted
/// (see `AppState::stored_sha256`): the coarsest change-time granularity expected.
const RACY_MS: i64 = 1000;

/// Bodies up to this size are written by one atomic put (`cairn_blob::PART_SIZE`).
const SMALL_FILE: u64 = cairn_blob::PART_SIZE as u64;

/// Where a workspace's default datastore lives inside the artifact store.
pub fn default_prefix(workspace_id: &str) -> String {
    format!("workspaces/{workspace_id}/datastores/default")
}

/// Refuses (400) announced checksums that are not well-formed hex of their kind.
fn check_announced(sha256: Option<&str>, crc32: Option<&str>) -> Result<(), Error> {
    for (which, value) in [(Checksum::Sha256, sha256), (Checksum::Crc32, crc32)] {
        if let Some(v) = value {
            which.check(v)?;
        }
    }
    Ok(())
}

/// The checksums a client gave for one uploaded file: before the body (headers) and after it
/// (trailers). Any of them may be absent; every one given must match.
#[derive(Clone, Copy, Debug, Default)]
pub struct UploadChecks<'a> {
    pub sha256: Option<&'a str>,
    pub crc32: Option<&'a str>,
    pub trailing: Option<Trailing<'a>>,
}

/// Lists, in one call, the deepest folder containing all `paths`: that folder, and the files
/// under it keyed by path.
async fn list_common_dir(
    blobs: &BlobStore,
    paths: &[RelPath],
) -> Result<(RelPath, HashMap<String, FileEntry>), Error> {
    let Some(first) = paths.first() else {
        return Ok((RelPath::parse_dir("")?, HashMap::new()));
    };
    let mut common: Vec<&str> = first.as_str().split('/').collect();
    common.pop();
    for p in &paths[1..] {
        let parts: Vec<&str> = p.as_str().split('/').collect();
        let shared = common.iter().zip(&parts[..parts.len() - 1]).take_while(|(a, b)| a == b).count();
        common.truncate(shared);
    }
    let dir = RelPath::parse_dir(&common.join("/"))?;
    let listed = blobs.list(&dir).await?.into_iter().map(|e| (e.path.clone(), e)).collect();
    Ok((dir, listed))
}

/// The folders a path runs through, from the top: `a/b/c` gives `a`, `a/b`.
fn folders_of(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// What a plan's paths would run into in a datastore kept in a local directory, where a path is
/// a file or a folder but not both (S3 keys have no such rule; there this is not consulted).
/// Found up front so that such an upload is refused before anything is written (the writes
/// refuse it too: `cairn_blob::local::clash`).
struct Shapes<'a> {
    /// Files there now, listed under the plan's common folder.
    files: HashSet<&'a str>,
    /// Files there now that the common folder's own path runs through (`a` for a common `a/b`).
    above: Vec<String>,
    /// Folders there now: every folder a listed file is in.
    folders: HashSet<&'a str>,
    /// The plan's own files, and the folders they are in.
    planned: HashSet<&'a str>,
    planned_folders: HashSet<&'a str>,
}

impl<'a> Shapes<'a> {
    async fn of(
        blobs: &BlobStore,
        common: &RelPath,
        existing: &'a HashMap<String, FileEntry>,
        paths: &'a [RelPath],
    ) -> Result<Shapes<'a>, Error> {
        let mut above = Vec::new();
        if !common.is_root() {
            let own = format!("{common}/");
            for folder in folders_of(&own) {
                if blobs.head(&RelPath::parse(folder)?).await?.is_some() {
                    above.push(folder.to_string());
                }
            }
        }
        Ok(Shapes {
            files: existing.keys().map(String::as_str).collect(),
            above,
            folders: existing.keys().flat_map(|p| folders_of(p)).collect(),
            planned: paths.iter().map(RelPath::as_str).collect(),
            planned_folders: paths.iter().flat_map(|p| folders_of(p.as_str())).collect(),
        })
    }

    /// Why `path` cannot hold a file, if it cannot.
    fn clash(&self, path: &str) -> Option<String> {
        for folder in folders_of(path) {
            if self.files.contains(folder) || self.above.iter().any(|f| f == folder) {
                return Some(format!(
                    "{path} cannot be stored: {folder} is a file in this datastore, not a folder"
                ));
            }
            if self.planned.contains(folder) {
                return Some(format!(
                    "{path} cannot be stored: {folder} is a file of this same upload, not a folder"
                ));
            }
        }
        if self.folders.contains(path) {
            return Some(format!("{path} is a folder in this datastore; a file cannot take its place"));
        }
        if self.planned_folders.contains(path) {
            return Some(format!("{path} is a folder of this same upload; it cannot also be a file"));
        }
        None
    }
}
