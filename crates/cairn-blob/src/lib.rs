//! File storage for datastores and artifacts, over the `object_store` crate: a local directory or
//! an S3-compatible bucket, chosen by the location string. [`BlobStore`] adds what Cairn needs on
//! top: validated relative paths ([`RelPath`]), streaming writes that hash as they go and become
//! visible only once complete and verified, and errors in Cairn's vocabulary.
//!
//! Large writes to a local directory take a fast path of their own (see [`local`]): a staging
//! file next to the destination, written by a dedicated thread while the caller hashes, then
//! renamed (or linked) into place. `object_store`'s own local multipart upload costs more CPU and
//! memory for the same guarantees.
//!
//! This crate knows nothing of workspaces, HTTP or the metadata store.

mod local;
pub use local::LOCAL_NAME_MAX;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cairn_core::api::FileEntry;
use cairn_core::{quoted, Error, RelPath};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

/// The checksums of a write, computed as its bytes go by. The SHA-256 is dropped only by a large
/// local write whose caller keeps none (see [`PutOpts::lazy_sha256`]).
#[derive(Clone)]
struct Digests {
    sha256: Option<Sha256>,
    crc32: crc32fast::Hasher,
}

impl Default for Digests {
    fn default() -> Self {
        Digests { sha256: Some(Sha256::new()), crc32: crc32fast::Hasher::new() }
    }
}

impl Digests {
    fn update(&mut self, bytes: &[u8]) {
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(bytes);
        }
        self.crc32.update(bytes);
    }
}

/// Bodies up to this size are buffered and written with one atomic put; larger ones stream as a
/// multipart upload in parts of this size, so memory stays bounded whatever the file size.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts in flight per multipart upload.
const PART_CONCURRENCY: usize = 4;

/// A storage location and a prefix inside it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory, for the fast write path.
    local: Option<Arc<LocalFileSystem>>,
    prefix: ObjPath,
    /// Human-readable root, for messages (`/var/lib/cairn/artifacts`, `s3://bucket/prefix`).
    location: String,
}

/// What a completed write produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: String,
}

/// What a write did (see [`BlobStore::put_stream_trailing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// The file is stored.
    Stored(Written),
    /// The file is stored, this many bytes, and no SHA-256 of it was computed (only with
    /// [`PutOpts::lazy_sha256`]).
    StoredUnhashed(u64),
    /// Without `overwrite`, a file was already at the path: nothing was stored. The body was
    /// received whole and verified; this is its size and SHA-256, so that a caller can tell the
    /// same content sent again from different content.
    Taken(Written),
}

impl Put {
    /// What was stored, or the conflict of a path already taken.
    pub fn stored(self, path: &RelPath) -> Result<Written, Error> {
        match self {
            Put::Stored(written) => Ok(written),
            Put::StoredUnhashed(_) => {
                Err(Error::Internal(format!("{path} was stored without the SHA-256 its writer needs")))
            }
            Put::Taken(_) => Err(Error::conflict(format!("{path} already exists"))),
        }
    }
}

/// A checksum a sender may announce for a file's content, before it (a header) or after it (an
/// HTTP trailer). SHA-256 is what Cairn records and what tells whether a file is already there;
/// CRC-32 (zlib's, ISO-HDLC) only checks that the bytes arrived as they were sent, at a small
/// fraction of SHA-256's cost, for a sender that has no SHA-256 of its own to give (as S3's
/// clients send a CRC by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    Sha256,
    Crc32,
}

impl Checksum {
    pub fn name(self) -> &'static str {
        match self {
            Checksum::Sha256 => "sha256",
            Checksum::Crc32 => "crc32",
        }
    }

    /// The header (or trailer) that carries it, as lower-case hex.
    pub fn header(self) -> &'static str {
        match self {
            Checksum::Sha256 => cairn_core::api::SHA256_HEADER,
            Checksum::Crc32 => cairn_core::api::CRC32_HEADER,
        }
    }

    fn digits(self) -> usize {
        match self {
            Checksum::Sha256 => 64,
            Checksum::Crc32 => 8,
        }
    }

    /// Refuses (400) a value that is not this checksum's number of hexadecimal digits.
    pub fn check(self, value: &str) -> Result<(), Error> {
        if value.len() == self.digits() && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "{} {value:?} must be {} hexadecimal digits",
                self.name(),
                self.digits()
            )))
        }
    }
}

/// One checksum that arrives after the content (an HTTP trailer): whoever reads the body sets
/// it before the body stream ends, and [`BlobStore::put_stream_trailing`] checks it then, before
/// the file becomes visible.
#[derive(Clone, Copy, Debug)]
pub struct Trailer<'a> {
    /// Lower-case hex, once received.
    pub value: &'a OnceLock<String>,
    /// The sender declared it (`Trailer:`): refuse, and keep nothing, when it never arrives.
    pub declared: bool,
}

/// The checksums that may arrive after the content.
#[derive(Clone, Copy, Debug)]
pub struct Trailing<'a> {
    pub sha256: Trailer<'a>,
    pub crc32: Trailer<'a>,
}

impl<'a> Trailing<'a> {
    fn get(&self, which: Checksum) -> Trailer<'a> {
        match which {
            Checksum::Sha256 => self.sha256,
            Checksum::Crc32 => self.crc32,
        }
    }
}

/// What [`BlobStore::put_stream`] is asked to guarantee.
#[derive(Clone, Copy, Debug, Default)]
pub struct PutOpts<'a> {
    /// Refuse (and keep nothing) unless the content hashes to this lower-case hex SHA-256.
    pub expected_sha256: Option<&'a str>,
    /// Refuse (and keep nothing) unless the content's CRC-32 is this (8 hex digits).
    pub expected_crc32: Option<&'a str>,
    /// Refuse with `TooLarge` past this many bytes.
    pub max_bytes: Option<u64>,
    /// Replace an existing file; otherwise an existing file is a conflict.
    pub overwrite: bool,
    /// The caller keeps no SHA-256 of what it stores unless it is given one to check: a large
    /// write to a local directory with no SHA-256 announced (header or declared trailer) then
    /// computes only the CRC-32, and is [`Put::StoredUnhashed`]. On this machine SHA-256 runs at
    /// 1.75 GB/s, CRC-32 at ~45: for a file that is never compared, the hash was most of the
    /// server's CPU per byte. A path already taken still gets the received content's SHA-256.
    pub lazy_sha256: bool,
}

impl BlobStore {
    /// Opens a location: `s3://bucket[/prefix]` (credentials, region and endpoint from the usual
    /// `AWS_*` environment variables), `file:///dir`, or a plain directory path (created if absent).
    pub fn open(location: &str) -> Result<BlobStore, Error> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::invalid(format!("S3 location {} names no bucket", quoted(location))));
            }
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| Error::invalid(format!("cannot use S3 location {}: {e}", quoted(location))))?;
            let prefix = ObjPath::parse(prefix)
                .map_err(|e| Error::invalid(format!("bad S3 prefix in {}: {e}", quoted(location))))?;
            return Ok(BlobStore {
                store: Arc::new(store),
                local: None,
                prefix,
                location: location.to_string(),
            });
        }
        let dir = location.strip_prefix("file://").unwrap_or(location);
        if dir.is_empty() || !std::path::Path::new(dir).is_absolute() {
            return Err(Error::invalid(format!(
                "storage location {} must be an absolute directory path or s3://bucket/prefix",
                quoted(location)
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_error(&format!("cannot create directory {dir}"), e))?;
        let store = Arc::new(
            LocalFileSystem::new_with_prefix(dir)
                .map_err(|e| Error::invalid(format!("cannot use directory {dir}: {e}")))?,
        );
        Ok(BlobStore {
            store: store.clone(),
            local: Some(store),
            prefix: ObjPath::default(),
            location: dir.to_string(),
        })
    }

    /// The same storage, rooted at `sub` (already a valid relative path).
    pub fn child(&self, sub: &str) -> BlobStore {
        let mut prefix = self.prefix.clone();
        for part in sub.split('/').filter(|p| !p.is_empty()) {
            prefix = prefix.child(part);
        }
        BlobStore {
            store: self.store.clone(),
            local: self.local.clone(),
            location: format!("{}/{}", self.location.trim_end_matches('/'), sub),
            prefix,
        }
    }

    /// Whether the files are in a local directory, where creating a file that exists always
    /// fails (a hard link); on S3 that depends on the service's conditional writes.
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, path: &RelPath) -> Result<ObjPath, Error> {
        let full = if self.prefix.as_ref().is_empty() {
            path.as_str().to_string()
        } else if path.is_root() {
            self.prefix.as_ref().to_string()
        } else {
            format!("{}/{}", self.prefix.as_ref(), path.as_str())
        };
        ObjPath::parse(&full)
            .map_err(|e| Error::invalid(format!("path {} cannot be stored: {e}", quoted(path.as_str()))))
    }

    /// In a local directory: `path`'s place on disk, refused (400) when it leads out of this store
    /// through a symbolic link (`local::confine`). `None` elsewhere.
    fn confined(&self, path: &RelPath) -> Result<Option<std::path::PathBuf>, Error> {
        let Some(fs) = &self.local else { return Ok(None) };
        let full = fs.path_to_filesystem(&self.key(path)?).map_err(|e| map_err(e, path.as_str()))?;
        local::confine(&full, path)?;
        Ok(Some(full))
    }

    fn rel(&self, key: &ObjPath) -> String {
        let raw = key.as_ref();
        let prefix = self.prefix.as_ref();
        if prefix.is_empty() {
            raw.to_string()
        } else {
            raw.strip_prefix(prefix).map(|r| r.trim_start_matches('/')).unwrap_or(raw).to_string()
        }
    }

    /// How a folder is named in messages: the store's location for the root.
    fn shown<'a>(&'a self, dir: &'a RelPath) -> &'a str {
        if dir.is_root() {
            self.location()
        } else {
            dir.as_str()
        }
    }

    /// Size and modification time of a file, or `None` if it does not exist.
    pub async fn head(&self, path: &RelPath) -> Result<Option<FileEntry>, Error> {
        self.confined(path)?;
        match self.store.head(&self.key(path)?).await {
            Ok(meta) => Ok(Some(FileEntry {
                path: path.as_str().to_string(),
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })),
            Err(e) => match map_err(e, path.as_str()) {
                Error::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// Writes `body` to `path`. The file becomes visible only when the whole body has arrived
    /// and matches `opts.expected_sha256`; on any failure (a cut stream, a mismatch, a full disk)
    /// nothing is left visible and an existing file keeps its old content.
    pub async fn put_stream<S, E>(&self, path: &RelPath, body: S, opts: PutOpts<'_>) -> Result<Written, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let opts = PutOpts { lazy_sha256: false, ..opts };
        self.put_stream_trailing(path, body, opts, None).await?.stored(path)
    }

    /// [`BlobStore::put_stream`], also checking a checksum that arrives with the end of the body
    /// (both are checked when both are given). A path already taken (without `overwrite`) is
    /// [`Put::Taken`], with what the body held, rather than an error.
    pub async fn put_stream_trailing<S, E>(
        &self,
        path: &RelPath,
        body: S,
        opts: PutOpts<'_>,
        trailing: Option<Trailing<'_>>,
    ) -> Result<Put, Error>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let key = self.key(path)?;
        self.check_name(path)?;
        self.confined(path)?;
        let mut body = std::pin::pin!(body);
        let mut hasher = Digests::default();
        let mut size: u64 = 0;
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;

        // Buffer up to one part: small files (the common case) are written in one atomic put.
        while head_len < PART_SIZE {
            match body.next().await {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    within_limit(path, size, &opts)?;
                    hasher.update(&chunk);
                    head_len += chunk.len();
                    head.push(chunk);
                }
                Some(Err(e)) => return Err(interrupted(path, e)),
                None => {
                    let written = verify(hasher, size, path, &opts, trailing)?;
                    if let Some(fs) = &self.local {
                        // Written confined to the store (`local::put_small`), not by object_store.
                        let dest = fs.path_to_filesystem(&key).map_err(|e| map_err(e, path.as_str()))?;
                        let (rel, overwrite) = (path.clone(), opts.overwrite);
                        let stored = tokio::task::spawn_blocking(move || {
                            local::put_small(&dest, &rel, &head, overwrite)
                        })
                        .await
                        .map_err(|e| Error::Unavailable(format!("writing {path}: {e}")))??;
                        return Ok(if stored { Put::Stored(written) } else { Put::Taken(written) });
                    }
                    let mode = if opts.overwrite { PutMode::Overwrite } else { PutMode::Create };
                    let payload: PutPayload = head.into_iter().collect();
                    let put =
                        self.store.put_opts(&key, payload, PutOptions { mode, ..Default::default() }).await;
                    return match put {
                        Ok(_) => Ok(Put::Stored(written)),
                        Err(e @ object_store::Error::AlreadyExists { .. }) => match self.clash(path) {
                            Some(clash) => Err(clash),
                            None if opts.overwrite => Err(map_err(e, path.as_str())),
                            None => Ok(Put::Taken(written)),
                        },
                        Err(e) => Err(self.write_err(e, path)),
                    };
                }
            }
        }

        if let Some(fs) = &self.local {
            let dest = fs.path_to_filesystem(&key).map_err(|e| map_err(e, path.as_str()))?;
            let received = local::Received { head, size, hasher };
            return local::put(&dest, path, received, body, opts, trailing).await;
        }

        let upload = self.store.put_multipart(&key).await.map_err(|e| map_err(e, path.as_str()))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in head {
            writer.put(chunk);
        }
        let outcome: Result<(), Error> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| interrupted(path, e))?;
                size += chunk.len() as u64;
                within_limit(path, size, &opts)?;
                hasher.update(&chunk);
                writer.wait_for_capacity(PART_CONCURRENCY).await.map_err(|e| map_err(e, path.as_str()))?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        let verified = outcome.and_then(|()| verify(hasher, size, path, &opts, trailing));
        match verified {
            Ok(written) => {
                if !opts.overwrite && self.head(path).await?.is_some() {
                    let _ = writer.abort().await;
                    return Ok(Put::Taken(written));
                }
                writer.finish().await.map_err(|e| map_err(e, path.as_str()))?;
                Ok(Put::Stored(written))
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%path, error = %abort, "could not discard an unfinished upload");
                }
                Err(e)
            }
        }
    }

    /// Writes small files, each whole in memory (and verified by the caller), as one group:
    /// without `overwrite`, all of them or none (a file that exists is a conflict, and the files
    /// this call created are removed again); with it, a failure to write (a full disk) replaces
    /// nothing, since every file is staged before any is published. On a local directory one
    /// blocking task does it all; elsewhere one put each. Returns, per file, whether it replaced
    /// an existing one.
    pub async fn put_many(&self, files: Vec<(RelPath, Bytes)>, overwrite: bool) -> Result<Vec<bool>, Error> {
        if let Some(fs) = &self.local {
            let mut local = Vec::with_capacity(files.len());
            for (path, data) in files {
                self.check_name(&path)?;
                let dest = fs.path_to_filesystem(&self.key(&path)?).map_err(|e| map_err(e, path.as_str()))?;
                local.push((dest, path, data));
            }
            return tokio::task::spawn_blocking(move || local::put_many(&local, overwrite))
                .await
                .map_err(|e| Error::Unavailable(format!("writing a batch of files: {e}")))?;
        }
        let mut replaced = Vec::with_capacity(files.len());
        let mut created: Vec<ObjPath> = Vec::new();
        for (path, data) in files {
            let key = self.key(&path)?;
            let existed = overwrite && self.head(&path).await?.is_some();
            let mode = if overwrite { PutMode::Overwrite } else { PutMode::Create };
            let put = self
                .store
                .put_opts(&key, PutPayload::from(data), PutOptions { mode, ..Default::default() })
                .await;
            if let Err(e) = put {
                for key in created {
                    let _ = self.store.delete(&key).await;
                }
                return Err(match map_err(e, path.as_str()) {
                    Error::Conflict(_) => Error::conflict(format!(
                        "{path} already exists; pass overwrite=true (--overwrite) to replace it; nothing of this \
                         batch was stored"
                    )),
                    other => other,
                });
            }
            if !overwrite {
                created.push(key);
            }
            replaced.push(existed);
        }
        Ok(replaced)
    }

    /// Refuses (400) a file name this store cannot write: in a local directory, one longer than
    /// [`LOCAL_NAME_MAX`] bytes. Writes check it; so can a caller, before it starts any.
    pub fn check_name(&self, path: &RelPath) -> Result<(), Error> {
        if self.local.is_some() {
            local::check_name(path)?;
        }
        Ok(())
    }

    /// Whether, in a local directory, `path` cannot hold a file because it is a folder or one of
    /// its folders is a file: the 409 that says which (see `local::clash`). A write refused for
    /// that reason already says so; this tells a caller that rewords conflicts which one it has.
    pub fn clash(&self, path: &RelPath) -> Option<Error> {
        let fs = self.local.as_ref()?;
        let dest = fs.path_to_filesystem(&self.key(path).ok()?).ok()?;
        local::clash(&dest, path)
    }

    /// A failed write's error: a clash ([`BlobStore::clash`]), else [`map_err`]'s.
    fn write_err(&self, e: object_store::Error, path: &RelPath) -> Error {
        self.clash(path).unwrap_or_else(|| map_err(e, path.as_str()))
    }

    /// In a local directory, when the file's inode last changed (content or metadata; Unix
    /// milliseconds): `None` elsewhere, or when there is no such file.
    pub async fn changed_at(&self, path: &RelPath) -> Result<Option<i64>, Error> {
        let Some(full) = self.confined(path)? else { return Ok(None) };
        use std::os::unix::fs::MetadataExt;
        Ok(std::fs::metadata(full).ok().map(|m| m.ctime() * 1000 + m.ctime_nsec() / 1_000_000))
    }

    /// Streams a file's content, with its size.
    pub async fn get_stream(
        &self,
        path: &RelPath,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, Error>>), Error> {
        // In a local directory the file is opened confined to the store (the kernel refuses a
        // symbolic link out of it, even one swapped in meanwhile: `local::open_confined`), and a
        // small one is read in the same trip to a blocking thread; object_store would take two or
        // three (open, then each 8 KiB chunk), which bounded how fast a folder of small files
        // could be downloaded. A large one is streamed from that open file.
        let key = self.key(path)?;
        if let Some(fs) = &self.local {
            let file = fs.path_to_filesystem(&key).map_err(|e| map_err(e, path.as_str()))?;
            let rel = path.clone();
            let opened = tokio::task::spawn_blocking(move || local::read_or_open(&file, &rel))
                .await
                .map_err(|e| Error::Unavailable(format!("reading {path}: {e}")))??;
            return Ok(match opened {
                local::Opened::Whole(body) => {
                    let size = body.len() as u64;
                    (size, futures::stream::once(async move { Ok(body) }).boxed())
                }
                local::Opened::Large(file, size) => {
                    let shown = path.clone();
                    let reader = tokio_util::io::ReaderStream::with_capacity(
                        tokio::fs::File::from_std(file),
                        local::STREAM_CHUNK,
                    );
                    (size, reader.map_err(move |e| local::read_err(&shown, e)).boxed())
                }
            });
        }
        let shown = path.as_str().to_string();
        let got = self.store.get(&key).await.map_err(|e| map_err(e, &shown))?;
        let size = got.meta.size;
        let stream = got.into_stream().map_err(move |e| map_err(e, &shown)).boxed();
        Ok((size, stream))
    }

    /// The whole content of each of `paths`, in order, when their sizes add up to at most
    /// `max_total` bytes: a 413 naming the file that goes past it (before that file is read), a
    /// 404 naming one that is missing or is a folder. In a local directory one blocking call
    /// reads them all; elsewhere a few gets run at once.
    pub async fn read_many(&self, paths: Vec<RelPath>, max_total: u64) -> Result<Vec<Bytes>, Error> {
        if let Some(fs) = &self.local {
            let mut files = Vec::with_capacity(paths.len());
            for path in paths {
                let file = fs.path_to_filesystem(&self.key(&path)?).map_err(|e| map_err(e, path.as_str()))?;
                files.push((file, path));
            }
            return tokio::task::spawn_blocking(move || local::read_many(&files, max_total))
                .await
                .map_err(|e| Error::Unavailable(format!("reading a batch of files: {e}")))?;
        }
        let past = |path: &RelPath| Error::TooLarge(format!("{path} takes the files past {max_total} bytes"));
        let mut total = 0u64;
        let mut reads = futures::stream::iter(paths.into_iter().map(|path| async move {
            let shown = path.as_str().to_string();
            let got = self.store.get(&self.key(&path)?).await.map_err(|e| map_err(e, &shown))?;
            // One file past the cap is refused before its content is fetched.
            if got.meta.size > max_total {
                return Err(past(&path));
            }
            let size = got.meta.size;
            let content = got.bytes().await.map_err(|e| map_err(e, &shown))?;
            Ok::<_, Error>((path, size, content))
        }))
        .buffered(8);
        let mut contents = Vec::new();
        while let Some(read) = reads.next().await {
            let (path, size, content) = read?;
            total += size;
            if total > max_total {
                return Err(past(&path));
            }
            contents.push(content);
        }
        Ok(contents)
    }

    /// SHA-256 of a stored file, read in full (for files Cairn did not write itself).
    pub async fn sha256_of(&self, path: &RelPath) -> Result<Written, Error> {
        let (_, mut stream) = self.get_stream(path).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Written { size, sha256: hex::encode(hasher.finalize()) })
    }

    /// Every file under `dir` (recursively), in path order, with paths relative to `dir`'s root
    /// store (not to `dir`).
    pub async fn list(&self, dir: &RelPath) -> Result<Vec<FileEntry>, Error> {
        if self.local.is_some() {
            // The same walk as a page's, which leaves out links out of the store.
            return self.list_page(dir, "", usize::MAX).await;
        }
        let key = self.key(dir)?;
        let prefix = if key.as_ref().is_empty() { None } else { Some(&key) };
        let listed: Result<Vec<FileEntry>, _> = self
            .store
            .list(prefix)
            .map_ok(|meta| FileEntry {
                path: self.rel(&meta.location),
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })
            .try_collect()
            .await;
        let mut entries = absent_is_empty(listed.map_err(|e| map_err(e, self.shown(dir))))?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// One page of [`BlobStore::list`]: the files under `dir` after `after` (a path; "" for the
    /// first page), at most `limit`. A local directory is walked in order, skipping the folders
    /// before `after`; an object store is asked to start after it (S3's `start-after`). Either
    /// way a page costs what it holds more than what the whole folder holds.
    pub async fn list_page(&self, dir: &RelPath, after: &str, limit: usize) -> Result<Vec<FileEntry>, Error> {
        let key = self.key(dir)?;
        if let Some(fs) = &self.local {
            // object_store has no file-system path for its root itself: that is the location.
            let root = match key.as_ref() {
                "" => std::path::PathBuf::from(&self.location),
                _ => fs.path_to_filesystem(&key).map_err(|e| map_err(e, self.shown(dir)))?,
            };
            let (after, rel) = (after.to_string(), dir.clone());
            return tokio::task::spawn_blocking(move || local::list_page(&root, &rel, &after, limit))
                .await
                .map_err(|e| Error::Unavailable(format!("listing {dir}: {e}")))?;
        }
        let prefix = if key.as_ref().is_empty() { None } else { Some(&key) };
        let offset = match after {
            "" => None,
            after => Some(self.key(&RelPath::parse(after)?)?),
        };
        let listed = match &offset {
            Some(offset) => self.store.list_with_offset(prefix, offset),
            None => self.store.list(prefix),
        };
        // S3 lists keys in byte order, the order of the whole sorted listing: the first `limit`
        // are the page.
        let page: Result<Vec<FileEntry>, _> = listed
            .map_ok(|meta| FileEntry {
                path: self.rel(&meta.location),
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })
            .take(limit)
            .try_collect()
            .await;
        absent_is_empty(page.map_err(|e| map_err(e, self.shown(dir))))
    }

    /// One level of `dir`: the names of its subfolders and its files (paths relative to the
    /// store's root, as [`BlobStore::list`] gives them), each sorted. A delimiter listing: it
    /// costs what this level holds, not everything below it (S3 answers it in pages of 1,000).
    pub async fn list_level(&self, dir: &RelPath) -> Result<(Vec<String>, Vec<FileEntry>), Error> {
        self.confined(dir)?;
        let key = self.key(dir)?;
        let prefix = if key.as_ref().is_empty() { None } else { Some(&key) };
        let listed = self.store.list_with_delimiter(prefix).await.map(Some);
        let Some(level) = absent_is_empty(listed.map_err(|e| map_err(e, self.shown(dir))))? else {
            return Ok(Default::default());
        };
        let mut folders: Vec<String> =
            level.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        let mut files: Vec<FileEntry> = level
            .objects
            .into_iter()
            .map(|meta| FileEntry {
                path: self.rel(&meta.location),
                size: meta.size,
                last_modified: meta.last_modified.timestamp_millis(),
            })
            .collect();
        if self.local.is_some() {
            // Links out of the store are left out, as the recursive listing leaves them out.
            let inside = |rel: &str| RelPath::parse(rel).is_ok_and(|p| self.confined(&p).is_ok());
            folders.retain(|name| inside(format!("{}/{name}", dir.as_str()).trim_start_matches('/')));
            files.retain(|f| inside(&f.path));
        }
        folders.sort();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((folders, files))
    }

    /// Deletes `path` and, if it is a folder, everything under it. Returns the files deleted.
    pub async fn delete_all(&self, path: &RelPath) -> Result<u64, Error> {
        let files = self.list(path).await?;
        if files.is_empty() && !path.is_root() {
            // Not a folder: the file itself, if there is one.
            return Ok(self.delete_file(path).await? as u64);
        }
        let mut n = 0;
        for f in &files {
            let rel = RelPath::parse(&f.path)?;
            if self.local.is_some() {
                self.delete_file(&rel).await?;
                n += 1;
                continue;
            }
            let key = self.key(&rel)?;
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
                Err(e) => return Err(map_err(e, &f.path)),
            }
        }
        Ok(n)
    }

    /// Deletes the file at `path`; false if there was none.
    pub async fn delete_file(&self, path: &RelPath) -> Result<bool, Error> {
        if let Some(full) = self.confined(path)? {
            // Unlinked relative to its folder opened confined to the store (`local::delete_confined`).
            let rel = path.clone();
            return tokio::task::spawn_blocking(move || local::delete_confined(&full, &rel))
                .await
                .map_err(|e| Error::Unavailable(format!("deleting {path}: {e}")))?;
        }
        let key = self.key(path)?;
        let deleted = match self.store.delete(&key).await {
            Ok(()) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(map_err(e, path.as_str())),
        };
        Ok(deleted)
    }

    /// True when no file lies under `dir`.
    pub async fn is_empty(&self, dir: &RelPath) -> Result<bool, Error> {
        let key = self.key(dir)?;
        let prefix = if key.as_ref().is_empty() { None } else { Some(&key) };
        let first = self.store.list(prefix).next().await;
        match first {
            None => Ok(true),
            Some(Ok(_)) => Ok(false),
            Some(Err(e)) => Err(map_err(e, self.shown(dir))),
        }
    }
}

/// Receives `body` whole without storing it: its size and SHA-256, checked against the limit and
/// the checksums announced, as a write would (for a body sent to a path already taken, which may
/// be the same content again).
pub async fn receive<S, E>(
    path: &RelPath,
    body: S,
    opts: PutOpts<'_>,
    trailing: Option<Trailing<'_>>,
) -> Result<Written, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut digests = Digests::default();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| interrupted(path, e))?;
        size += chunk.len() as u64;
        within_limit(path, size, &opts)?;
        digests.update(&chunk);
    }
    verify(digests, size, path, &opts, trailing)
}

/// 413 once a body received so far (`size` bytes) is past `opts.max_bytes`.
fn within_limit(path: &RelPath, size: u64, opts: &PutOpts<'_>) -> Result<(), Error> {
    match opts.max_bytes {
        Some(max) if size > max => {
            Err(Error::TooLarge(format!("{path} is larger than the limit of {max} bytes")))
        }
        _ => Ok(()),
    }
}

/// Checks whole in-memory `content` against the checksums announced for it, and gives its size
/// and SHA-256 (for a batch of small files, verified before any is written).
pub fn verify_content(
    path: &RelPath,
    content: &[u8],
    sha256: Option<&str>,
    crc32: Option<&str>,
) -> Result<Written, Error> {
    let mut digests = Digests::default();
    digests.update(content);
    let opts = PutOpts { expected_sha256: sha256, expected_crc32: crc32, ..Default::default() };
    verify(digests, content.len() as u64, path, &opts, None)
}

/// Ends a write's checksums and compares them with what the sender announced, before the body
/// (`opts`) or after it (`trailing`); every one given must match.
fn verify(
    digests: Digests,
    size: u64,
    path: &RelPath,
    opts: &PutOpts<'_>,
    trailing: Option<Trailing<'_>>,
) -> Result<Written, Error> {
    match check_digests(digests, path, opts, trailing)? {
        Some(sha256) => Ok(Written { size, sha256 }),
        None => Err(Error::Internal(format!("{path} was received without the SHA-256 its writer needs"))),
    }
}

/// [`verify`] for a write that may have dropped its SHA-256: the SHA-256, if it was computed.
fn check_digests(
    digests: Digests,
    path: &RelPath,
    opts: &PutOpts<'_>,
    trailing: Option<Trailing<'_>>,
) -> Result<Option<String>, Error> {
    let sha256 = digests.sha256.map(|h| hex::encode(h.finalize()));
    let crc32 = format!("{:08x}", digests.crc32.finalize());
    let computed = [
        (Checksum::Sha256, sha256.as_deref(), opts.expected_sha256),
        (Checksum::Crc32, Some(crc32.as_str()), opts.expected_crc32),
    ];
    for (which, got, before) in computed {
        let after = match trailing.map(|t| t.get(which)) {
            None => None,
            Some(t) => match t.value.get() {
                Some(v) => {
                    if which.check(v).is_err() {
                        return Err(Error::invalid(format!(
                            "trailing {} {v:?} of {path} must be {} hexadecimal digits; nothing was stored",
                            which.name(),
                            which.digits()
                        )));
                    }
                    Some(v.as_str())
                }
                None if t.declared => {
                    return Err(Error::invalid(format!(
                        "the {} trailer announced for {path} did not arrive (a proxy may drop trailers; \
                         send the checksum as a header instead); nothing was stored",
                        which.name()
                    )))
                }
                None => None,
            },
        };
        for expected in before.into_iter().chain(after) {
            let Some(got) = got else {
                // Dropped only when none was announced; one sent as an undeclared trailer
                // cannot be checked, and an unchecked checksum is not accepted.
                return Err(Error::invalid(format!(
                    "a sha256 trailer arrived for {path} that its request did not declare \
                     (`Trailer: {}`); nothing was stored",
                    which.header()
                )));
            };
            if !expected.eq_ignore_ascii_case(got) {
                return Err(Error::Unprocessable(format!(
                    "content of {path} does not match its checksum (expected {} {expected}, received {got}); \
                     the file may have changed during upload; nothing was stored",
                    which.name()
                )));
            }
        }
    }
    Ok(sha256)
}

fn interrupted(path: &RelPath, e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("upload of {path} was interrupted: {e}; nothing was stored"))
}

fn io_error(context: &str, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(28) {
        Error::StorageFull(format!("{context}: no space left on device"))
    } else {
        Error::Unavailable(format!("{context}: {e}"))
    }
}

/// Maps a storage error onto Cairn's vocabulary; `what` names the file for the message.
fn map_err(e: object_store::Error, what: &str) -> Error {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => Error::not_found("file", what),
        // A local path under a file (`a/b` where `a` is a file) is not there either.
        ref other if io_error_kind(other) == Some(std::io::ErrorKind::NotADirectory) => {
            Error::not_found("file", what)
        }
        ref other if io_error_kind(other) == Some(std::io::ErrorKind::InvalidFilename) => Error::invalid(
            format!("{what} cannot be stored: the path is too long for this datastore's file system"),
        ),
        E::AlreadyExists { .. } => Error::conflict(format!("{what} already exists")),
        E::InvalidPath { source } => {
            Error::invalid(format!("path {} cannot be stored: {source}", quoted(what)))
        }
        other => {
            let text = other.to_string();
            if text.contains("No space left") || text.contains("os error 28") {
                Error::StorageFull(format!("storage is full while writing {what}"))
            } else {
                Error::Unavailable(format!("storage error on {what}: {text}"))
            }
        }
    }
}

/// A listing of a folder that is not there (a local folder under a file) holds nothing.
fn absent_is_empty<T: Default>(listed: Result<T, Error>) -> Result<T, Error> {
    match listed {
        Err(Error::NotFound { .. }) => Ok(T::default()),
        other => other,
    }
}

/// The kind of the I/O error behind a storage error, if one is behind it.
fn io_error_kind(e: &object_store::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = inner.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn chunks(data: &[u8], n: usize) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        let parts: Vec<Result<Bytes, std::io::Error>> =
            data.chunks(n).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        stream::iter(parts)
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn crc(data: &[u8]) -> String {
        format!("{:08x}", crc32fast::hash(data))
    }

    #[tokio::test]
    async fn a_local_listing_in_pages_is_the_whole_sorted_listing_cut_in_slices() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        // Names that sort around '/' ('-' and '.' before it, '0' and 'b' after), odd characters,
        // deep and empty folders, a staging file and a symbolic link.
        let names = [
            "a-b",
            "a.b",
            "a/x",
            "a/y/z",
            "a0",
            "ab/c",
            "b c/é.txt",
            "b c/%41#x",
            "q\"uote",
            "z/1/2/3/4",
            "m/n-1",
            "m/n/o",
            "m/n.2",
            "m/n0",
            "data/file.bin#12",
        ];
        let root = dir.path().join("ws/default");
        for name in names {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, name.as_bytes()).unwrap();
        }
        std::fs::create_dir_all(root.join("empty/inner")).unwrap();
        std::os::unix::fs::symlink(root.join("a.b"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(root.join("gone"), root.join("broken")).unwrap();
        for prefix in ["", "a", "m", "m/n", "nothing"] {
            let prefix = RelPath::parse_dir(prefix).unwrap();
            let whole: Vec<String> = blobs.list(&prefix).await.unwrap().into_iter().map(|f| f.path).collect();
            if prefix.is_root() {
                assert!(
                    whole.contains(&"link".to_string()) && !whole.iter().any(|p| p.contains("#12")),
                    "{whole:?}"
                );
            }
            for limit in [1, 2, 3, 100] {
                let mut paged = Vec::new();
                let mut after = String::new();
                loop {
                    let page = blobs.list_page(&prefix, &after, limit).await.unwrap();
                    assert!(page.len() <= limit);
                    paged.extend(page.iter().map(|f| f.path.clone()));
                    match page.last() {
                        Some(last) if page.len() == limit => after = last.path.clone(),
                        _ => break,
                    }
                }
                assert_eq!(paged, whole, "prefix {prefix:?}, pages of {limit}");
            }
        }
        // A store opened on the folder itself (a registered local datastore) lists the same.
        let own = BlobStore::open(root.to_str().unwrap()).unwrap();
        let first = own.list_page(&RelPath::parse_dir("").unwrap(), "", 3).await.unwrap();
        let whole = own.list(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert_eq!(
            first.iter().map(|f| &f.path).collect::<Vec<_>>(),
            whole.iter().take(3).map(|f| &f.path).collect::<Vec<_>>()
        );
        // A page starting after a path that is not there starts at the next one.
        let page = blobs.list_page(&RelPath::parse_dir("").unwrap(), "a/xx", 2).await.unwrap();
        assert_eq!(page.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["a/y/z", "a0"]);
        let sizes: Vec<u64> = blobs
            .list_page(&RelPath::parse_dir("m").unwrap(), "", 10)
            .await
            .unwrap()
            .iter()
            .map(|f| f.size)
            .collect();
        assert_eq!(sizes, [5, 5, 5, 4]);
    }

    /// Beside `root/real` (made by the caller): `outside/secret` out of the store (in `dir`),
    /// links out of it to that folder (`rel-out`, relative; `abs-out`, absolute) and to the file
    /// (`secret`), and `rel-in`, a relative link to `real`.
    fn links_in_and_out(dir: &std::path::Path, root: &std::path::Path) {
        use std::os::unix::fs::symlink;
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/secret"), b"secret").unwrap();
        symlink("../outside", root.join("rel-out")).unwrap();
        symlink(dir.join("outside"), root.join("abs-out")).unwrap();
        symlink(dir.join("outside/secret"), root.join("secret")).unwrap();
        symlink("real", root.join("rel-in")).unwrap();
    }

    /// Reads of a local store are confined by the kernel (`openat2`, `RESOLVE_BENEATH`): links out
    /// of it, relative or absolute, are refused; links inside it, relative or absolute, are
    /// followed, for small files read whole and large ones streamed.
    #[tokio::test]
    async fn reads_follow_links_inside_the_store_and_refuse_links_out() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let big: Vec<u8> = (0..(700u32 << 10)).map(|i| (i % 253) as u8).collect();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/in.txt"), b"inside").unwrap();
        std::fs::write(root.join("real/big.bin"), &big).unwrap();
        links_in_and_out(dir.path(), &root);
        symlink(root.join("real"), root.join("abs-in")).unwrap();
        let blobs = BlobStore::open(root.to_str().unwrap()).unwrap();
        let read = |p: &'static str| {
            let blobs = &blobs;
            async move {
                let (size, stream) = blobs.get_stream(&RelPath::parse(p).unwrap()).await?;
                let chunks: Vec<Bytes> = stream.try_collect().await?;
                let body = chunks.concat();
                assert_eq!(size, body.len() as u64, "{p}");
                Ok::<_, Error>(body)
            }
        };
        for p in ["rel-out/secret", "abs-out/secret", "secret"] {
            match read(p).await {
                Err(Error::Invalid(m)) => assert!(m.contains("symbolic link"), "{p}: {m}"),
                other => panic!("{p}: {other:?}"),
            }
        }
        for p in ["real/in.txt", "rel-in/in.txt", "abs-in/in.txt"] {
            assert_eq!(read(p).await.unwrap(), b"inside", "{p}");
        }
        for p in ["real/big.bin", "abs-in/big.bin"] {
            assert_eq!(read(p).await.unwrap(), big, "{p}");
        }
        assert!(matches!(read("real/none").await, Err(Error::NotFound { .. })));
        assert!(matches!(read("real").await, Err(Error::NotFound { .. })), "a folder is not a file");
        // The kernel's refusal, not `confine`'s check: the open alone refuses the way out.
        let p = RelPath::parse("rel-out/secret").unwrap();
        assert!(matches!(local::open_confined(&root.join("rel-out/secret"), &p), Err(Error::Invalid(_))));
    }

    /// Listings of a local store walk through descriptors (`local::list_page`): links inside the
    /// store are followed (relative or absolute, to files or folders), links out, broken links
    /// and links round in a circle are left out, a FIFO is skipped without blocking, pages
    /// agree with the whole listing, and a folder reached through a link out is refused.
    #[tokio::test]
    async fn listings_follow_links_inside_the_store_and_leave_out_the_rest() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join("real/deep")).unwrap();
        std::fs::write(root.join("real/in.txt"), b"inside").unwrap();
        std::fs::write(root.join("real/deep/d.txt"), b"deeper").unwrap();
        std::fs::write(root.join("top.txt"), b"t").unwrap();
        links_in_and_out(dir.path(), &root);
        symlink(root.join("real/in.txt"), root.join("abs-file")).unwrap();
        symlink("nowhere", root.join("broken")).unwrap();
        symlink("..", root.join("real/up")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("real/pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let blobs = BlobStore::open(root.to_str().unwrap()).unwrap();
        let top = RelPath::parse_dir("").unwrap();
        let listed = blobs.list(&top).await.unwrap();
        let all: Vec<String> = listed.iter().map(|f| f.path.clone()).collect();
        // `real/up` leads back to the store's root, which is being walked: not walked again.
        assert_eq!(
            all,
            ["abs-file", "real/deep/d.txt", "real/in.txt", "rel-in/deep/d.txt", "rel-in/in.txt", "top.txt"],
        );
        let sizes: Vec<u64> = listed.iter().map(|f| f.size).collect();
        assert_eq!(sizes, [6, 6, 6, 6, 6, 1]);
        for limit in [1, 2, 4] {
            let mut paged: Vec<String> = Vec::new();
            loop {
                let after = paged.last().cloned().unwrap_or_default();
                let page = blobs.list_page(&top, &after, limit).await.unwrap();
                paged.extend(page.iter().map(|f| f.path.clone()));
                if page.len() < limit {
                    break;
                }
            }
            assert_eq!(paged, all, "pages of {limit}");
        }
        let under_link = blobs.list(&RelPath::parse_dir("rel-in").unwrap()).await.unwrap();
        let paths: Vec<_> = under_link.iter().map(|f| f.path.as_str()).collect();
        // From `rel-in`, `up` leads to the store's root, not being walked this time; in it, `real`
        // and `rel-in` are the folder being walked, and are not walked again.
        assert_eq!(paths, ["rel-in/deep/d.txt", "rel-in/in.txt", "rel-in/up/abs-file", "rel-in/up/top.txt"]);
        for out in ["rel-out", "abs-out"] {
            match blobs.list(&RelPath::parse_dir(out).unwrap()).await {
                Err(Error::Invalid(m)) => assert!(m.contains("symbolic link"), "{out}: {m}"),
                other => panic!("{out}: {other:?}"),
            }
        }
        assert!(blobs.list(&RelPath::parse_dir("none").unwrap()).await.unwrap().is_empty());
    }

    /// Writes of a local store are made relative to folders the kernel opened beneath the store
    /// (`local::parent_folder`): through links inside it (relative or absolute) they land inside,
    /// missing folders are made there, and links out are refused, by the kernel even without the
    /// check made first, for single files small and large and for batches.
    #[tokio::test]
    async fn writes_go_through_links_inside_the_store_and_never_out() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("../outside", root.join("rel-out")).unwrap();
        symlink(dir.path().join("outside"), root.join("abs-out")).unwrap();
        symlink("real", root.join("rel-in")).unwrap();
        symlink(root.join("real"), root.join("abs-in")).unwrap();
        let blobs = BlobStore::open(root.to_str().unwrap()).unwrap();
        let large: Vec<u8> = (0..(PART_SIZE + 4321)).map(|i| (i % 241) as u8).collect();
        for (p, data) in [
            ("rel-in/a.txt", b"a".to_vec()),
            ("abs-in/b.txt", b"b".to_vec()),
            ("abs-in/x/y/c.txt", b"c".to_vec()),
            ("new/dir/d.txt", b"d".to_vec()),
            ("abs-in/large.bin", large.clone()),
        ] {
            let w =
                blobs.put_stream(&RelPath::parse(p).unwrap(), chunks(&data, 65536), PutOpts::default()).await;
            assert_eq!(w.unwrap().size, data.len() as u64, "{p}");
        }
        assert_eq!(std::fs::read(root.join("real/a.txt")).unwrap(), b"a");
        assert_eq!(std::fs::read(root.join("real/b.txt")).unwrap(), b"b");
        assert_eq!(std::fs::read(root.join("real/x/y/c.txt")).unwrap(), b"c");
        assert_eq!(std::fs::read(root.join("new/dir/d.txt")).unwrap(), b"d");
        assert_eq!(std::fs::read(root.join("real/large.bin")).unwrap(), large);
        for p in ["rel-out/e.txt", "abs-out/e.txt", "rel-out/deep/e.txt"] {
            let w = blobs.put_stream(&RelPath::parse(p).unwrap(), chunks(b"e", 1), PutOpts::default()).await;
            assert!(matches!(&w, Err(Error::Invalid(m)) if m.contains("symbolic link")), "{p}: {w:?}");
        }
        // The kernel's refusal alone (no check made first): a single small file and a batch.
        for p in ["rel-out/f.txt", "abs-out/deep/f.txt"] {
            let rel = RelPath::parse(p).unwrap();
            let put = local::put_small(&root.join(p), &rel, &[Bytes::from_static(b"f")], false);
            assert!(matches!(&put, Err(Error::Invalid(m)) if m.contains("symbolic link")), "{p}: {put:?}");
        }
        let batch = vec![
            (root.join("real/g.txt"), RelPath::parse("real/g.txt").unwrap(), Bytes::from_static(b"g")),
            (root.join("rel-out/g.txt"), RelPath::parse("rel-out/g.txt").unwrap(), Bytes::from_static(b"g")),
        ];
        assert!(matches!(local::put_many(&batch, false), Err(Error::Invalid(_))));
        assert!(!root.join("real/g.txt").exists(), "a refused batch stores nothing");
        let outside: Vec<_> = std::fs::read_dir(dir.path().join("outside")).unwrap().flatten().collect();
        assert!(outside.is_empty(), "written outside the store: {outside:?}");
        let staging: Vec<String> = walk_names(&root).into_iter().filter(|n| n.contains('#')).collect();
        assert!(staging.is_empty(), "staging files left: {staging:?}");
    }

    /// Deletes of a local store unlink relative to a folder the kernel opened beneath the store:
    /// through a link inside they work, a link out is refused (by the kernel alone too), and the
    /// folders a delete empties go, up to the store's own.
    #[tokio::test]
    async fn deletes_work_through_links_inside_the_store_and_never_out() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        for f in ["real/a.txt", "real/keep.txt", "real/sub/deeper/b.txt"] {
            std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            std::fs::write(root.join(f), f).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), b"s").unwrap();
        symlink("../outside", root.join("rel-out")).unwrap();
        symlink(root.join("real"), root.join("abs-in")).unwrap();
        let blobs = BlobStore::open(root.to_str().unwrap()).unwrap();
        let rel = |p: &str| RelPath::parse(p).unwrap();
        assert!(matches!(blobs.delete_file(&rel("rel-out/secret")).await, Err(Error::Invalid(_))));
        assert!(matches!(
            local::delete_confined(&root.join("rel-out/secret"), &rel("rel-out/secret")),
            Err(Error::Invalid(_))
        ));
        assert!(dir.path().join("outside/secret").is_file(), "deleted outside the store");
        assert!(blobs.delete_file(&rel("abs-in/a.txt")).await.unwrap());
        assert!(!root.join("real/a.txt").exists());
        assert!(!blobs.delete_file(&rel("real/none")).await.unwrap());
        assert!(!blobs.delete_file(&rel("real")).await.unwrap(), "a folder is not a file");
        assert_eq!(blobs.delete_all(&rel("real/sub")).await.unwrap(), 1);
        assert!(!root.join("real/sub").exists(), "emptied folders go");
        assert!(root.join("real/keep.txt").is_file() && root.is_dir());
    }

    fn walk_names(dir: &std::path::Path) -> Vec<String> {
        walkdir::WalkDir::new(dir).into_iter().flatten().map(|e| e.path().display().to_string()).collect()
    }

    #[tokio::test]
    async fn writes_small_and_large_files_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        let small = b"hello".to_vec();
        let large: Vec<u8> = (0..(PART_SIZE * 2 + 123)).map(|i| (i % 251) as u8).collect();
        for (name, data) in [("a/small.txt", &small), ("a/b/large.bin", &large)] {
            let p = RelPath::parse(name).unwrap();
            let opts = PutOpts { expected_sha256: Some(&sha(data)), ..Default::default() };
            let w = blobs.put_stream(&p, chunks(data, 65536), opts).await.unwrap();
            assert_eq!(w.size, data.len() as u64);
            assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(data));
        }
        let listed = blobs.list(&RelPath::parse_dir("a").unwrap()).await.unwrap();
        let paths: Vec<_> = listed.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/b/large.bin", "a/small.txt"]);
        assert!(dir.path().join("ws/default/a/b/large.bin").is_file());
    }

    #[tokio::test]
    async fn reads_are_whole_up_to_the_bound_streamed_past_it_and_folders_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        let at = local::WHOLE_READ_MAX as usize;
        for (name, size) in [("d/empty", 0), ("d/at-bound", at), ("d/past-bound", at + 1)] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let p = RelPath::parse(name).unwrap();
            blobs.put_stream(&p, chunks(&data, 65536), PutOpts::default()).await.unwrap();
            let (len, stream) = blobs.get_stream(&p).await.unwrap();
            let pieces: Vec<Bytes> = stream.try_collect().await.unwrap();
            assert_eq!((len, pieces.concat()), (size as u64, data), "{name}");
            // Whole (one piece) up to the bound, streamed in pieces past it.
            assert_eq!(pieces.len() <= 1, size <= at, "{name}: {} pieces", pieces.len());
        }
        for missing in ["d", "d/none", "d/empty/under-a-file"] {
            let err = blobs.get_stream(&RelPath::parse(missing).unwrap()).await.err().unwrap();
            assert!(matches!(err, Error::NotFound { .. }), "{missing}: {err}");
        }
    }

    #[tokio::test]
    async fn a_checksum_mismatch_keeps_the_old_content_and_leaves_nothing_visible() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let p = RelPath::parse("f.bin").unwrap();
        let old = vec![1u8; 10];
        blobs.put_stream(&p, chunks(&old, 4), PutOpts::default()).await.unwrap();
        for size in [100, PART_SIZE * 2] {
            let new = vec![2u8; size];
            let wrong = sha(b"something else");
            let opts = PutOpts { expected_sha256: Some(&wrong), overwrite: true, ..Default::default() };
            let err = blobs.put_stream(&p, chunks(&new, 1 << 20), opts).await.unwrap_err();
            assert!(matches!(err, Error::Unprocessable(_)), "{err:?}");
            assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(&old));
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["f.bin"], "no staging file may be left behind");
    }

    #[tokio::test]
    async fn a_file_and_a_folder_cannot_share_a_path_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        let p = |s: &str| RelPath::parse(s).unwrap();
        blobs.put_stream(&p("a"), chunks(b"file", 4), PutOpts::default()).await.unwrap();
        blobs.put_stream(&p("d/e/f.txt"), chunks(b"deep", 4), PutOpts::default()).await.unwrap();
        let large = vec![3u8; PART_SIZE + 1];
        for overwrite in [false, true] {
            let opts = PutOpts { overwrite, ..Default::default() };
            for data in [&b"small"[..], &large[..]] {
                // Under a file: a small write (object_store's), a large one (ours).
                let err = blobs.put_stream(&p("a/b/c.txt"), chunks(data, 1 << 20), opts).await.unwrap_err();
                assert!(matches!(err, Error::Conflict(_)), "{err:?}");
                assert_eq!(err.to_string(), "a/b/c.txt cannot be stored: a is a file here, not a folder");
                // In place of a folder, at either depth.
                for folder in ["d", "d/e"] {
                    let err = blobs.put_stream(&p(folder), chunks(data, 1 << 20), opts).await.unwrap_err();
                    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
                    assert_eq!(
                        err.to_string(),
                        format!("{folder} is a folder here; a file cannot take its place")
                    );
                }
            }
            // In a batch: refused, and the batch's other file undone.
            let batch = vec![(p("ok.txt"), Bytes::from_static(b"ok")), (p("d/e"), Bytes::from_static(b"x"))];
            let err = blobs.put_many(batch, overwrite).await.unwrap_err();
            assert!(err.to_string().contains("d/e is a folder"), "{err}");
            let batch = vec![(p("a/x.txt"), Bytes::from_static(b"x"))];
            let err = blobs.put_many(batch, overwrite).await.unwrap_err();
            assert!(err.to_string().contains("a is a file"), "{err}");
        }
        let all: Vec<String> =
            blobs.list(&RelPath::parse_dir("").unwrap()).await.unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(all, ["a", "d/e/f.txt"], "nothing else stored, no staging file listed");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("ws/default"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no staging file may be left behind: {names:?}");
        // Reading under a file: not there (404), not a storage failure.
        assert!(blobs.head(&p("a/b/c.txt")).await.unwrap().is_none());
        assert!(matches!(blobs.get_stream(&p("a/b")).await.map(|_| ()), Err(Error::NotFound { .. })));
        let under_a_file = RelPath::parse_dir("a/b").unwrap();
        assert!(blobs.list(&under_a_file).await.unwrap().is_empty());
        let (folders, files) = blobs.list_level(&under_a_file).await.unwrap();
        assert!(folders.is_empty() && files.is_empty());
    }

    #[tokio::test]
    async fn a_name_too_long_for_a_local_directory_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        let longest = "n".repeat(LOCAL_NAME_MAX);
        let too_long = "n".repeat(LOCAL_NAME_MAX + 1);
        let large = vec![5u8; PART_SIZE + 1];
        for data in [&b"small"[..], &large[..]] {
            let ok = RelPath::parse(&format!("d/{longest}")).unwrap();
            blobs
                .put_stream(&ok, chunks(data, 1 << 20), PutOpts { overwrite: true, ..Default::default() })
                .await
                .unwrap();
            let refused = RelPath::parse(&format!("d/{too_long}")).unwrap();
            let err =
                blobs.put_stream(&refused, chunks(data, 1 << 20), PutOpts::default()).await.unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains(&format!("at most {LOCAL_NAME_MAX} bytes")), "{err}");
        }
        let batch = vec![(RelPath::parse(&format!("b/{too_long}")).unwrap(), Bytes::from_static(b"x"))];
        assert!(matches!(blobs.put_many(batch, false).await, Err(Error::Invalid(_))));
        let batch = vec![(RelPath::parse(&format!("b/{longest}")).unwrap(), Bytes::from_static(b"x"))];
        blobs.put_many(batch, false).await.unwrap();
        let all = blobs.list(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
    }

    #[tokio::test]
    async fn a_cut_stream_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let p = RelPath::parse("cut.bin").unwrap();
        let parts: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from(vec![0u8; PART_SIZE + 1])), Err(std::io::Error::other("connection reset"))];
        let err = blobs.put_stream(&p, stream::iter(parts), PutOpts::default()).await.unwrap_err();
        assert!(err.to_string().contains("interrupted"), "{err}");
        assert!(blobs.head(&p).await.unwrap().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_trailing_checksum_is_checked_before_anything_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ds");
        // Small files go through one buffered put, large ones through the local staging file.
        for (name, size) in [("small.bin", 1000), ("large.bin", PART_SIZE * 2 + 5)] {
            let p = RelPath::parse(name).unwrap();
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            for which in [Checksum::Sha256, Checksum::Crc32] {
                let put = |value: Option<String>, declared: bool| {
                    let (blobs, p, data) = (blobs.clone(), p.clone(), data.clone());
                    async move {
                        let (cell, other) = (OnceLock::new(), OnceLock::new());
                        if let Some(v) = value {
                            cell.set(v).unwrap();
                        }
                        let given = Trailer { value: &cell, declared };
                        let absent = Trailer { value: &other, declared: false };
                        let trailing = match which {
                            Checksum::Sha256 => Trailing { sha256: given, crc32: absent },
                            Checksum::Crc32 => Trailing { sha256: absent, crc32: given },
                        };
                        blobs
                            .put_stream_trailing(
                                &p,
                                chunks(&data, 300_000),
                                PutOpts::default(),
                                Some(trailing),
                            )
                            .await
                            .and_then(|put| put.stored(&p))
                    }
                };
                let (right, wrong) = match which {
                    Checksum::Sha256 => (sha(&data), sha(b"other")),
                    Checksum::Crc32 => (crc(&data), crc(b"other")),
                };
                let err = put(Some(wrong), true).await.unwrap_err();
                assert!(
                    matches!(err, Error::Unprocessable(_)) && err.to_string().contains(which.name()),
                    "{err:?}"
                );
                let err = put(None, true).await.unwrap_err();
                assert!(
                    matches!(err, Error::Invalid(_)) && err.to_string().contains("did not arrive"),
                    "{err}"
                );
                let err = put(Some("zz".into()), false).await.unwrap_err();
                assert!(matches!(err, Error::Invalid(_)) && err.to_string().contains("hexadecimal"), "{err}");
                assert!(blobs.head(&p).await.unwrap().is_none());
                assert_eq!(
                    std::fs::read_dir(dir.path().join("ds")).map(|d| d.count()).unwrap_or(0),
                    0,
                    "{name}"
                );

                let w = put(Some(right.to_uppercase()), true).await.unwrap();
                // Whatever was checked, the SHA-256 of the content is what is recorded.
                assert_eq!(w.sha256, sha(&data));
                // Not announced and not required: the content's own checksum is what is recorded.
                std::fs::remove_file(dir.path().join("ds").join(name)).unwrap();
                assert_eq!(put(None, false).await.unwrap(), w);
                assert_eq!(blobs.sha256_of(&p).await.unwrap(), w);
                std::fs::remove_file(dir.path().join("ds").join(name)).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_crc32_given_before_the_content_is_checked_too() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let p = RelPath::parse("c.bin").unwrap();
        let old = vec![7u8; 10];
        blobs.put_stream(&p, chunks(&old, 4), PutOpts::default()).await.unwrap();
        for size in [100, PART_SIZE * 2] {
            let new = vec![9u8; size];
            let wrong = crc(&vec![8u8; size]);
            let opts = PutOpts { expected_crc32: Some(&wrong), overwrite: true, ..Default::default() };
            let err = blobs.put_stream(&p, chunks(&new, 1 << 20), opts).await.unwrap_err();
            assert!(matches!(err, Error::Unprocessable(_)) && err.to_string().contains("crc32"), "{err:?}");
            assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(&old));
            let right = crc(&new);
            let opts = PutOpts { expected_crc32: Some(&right), overwrite: true, ..Default::default() };
            assert_eq!(blobs.put_stream(&p, chunks(&new, 1 << 20), opts).await.unwrap().sha256, sha(&new));
            blobs
                .put_stream(&p, chunks(&old, 4), PutOpts { overwrite: true, ..Default::default() })
                .await
                .unwrap();
        }
        // zlib's CRC-32, as Python's zlib.crc32 gives it.
        assert_eq!(crc(b"123456789"), "cbf43926");
    }

    #[tokio::test]
    async fn a_large_local_write_keeps_memory_bounded_and_refuses_to_replace_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let p = RelPath::parse("deep/er/big.bin").unwrap();
        let one = vec![1u8; PART_SIZE * 3];
        let two = vec![2u8; PART_SIZE * 3];
        blobs.put_stream(&p, chunks(&one, 1 << 20), PutOpts::default()).await.unwrap();
        let err = blobs.put_stream(&p, chunks(&two, 1 << 20), PutOpts::default()).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(&one));
        let opts = PutOpts { overwrite: true, ..Default::default() };
        blobs.put_stream(&p, chunks(&two, 1 << 20), opts).await.unwrap();
        assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(&two));
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("deep/er")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["big.bin"], "no staging file may be left behind");
        let listed = blobs.list(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[tokio::test]
    async fn refuses_to_replace_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap();
        let p = RelPath::parse("x").unwrap();
        blobs.put_stream(&p, chunks(b"one", 3), PutOpts::default()).await.unwrap();
        let err = blobs.put_stream(&p, chunks(b"two", 3), PutOpts::default()).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)));
        assert_eq!(blobs.sha256_of(&p).await.unwrap().sha256, sha(b"one"));
    }

    #[tokio::test]
    async fn a_level_lists_its_folders_and_files_but_nothing_deeper() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        for name in ["top.txt", "d/a.csv", "d/sub/deep.csv", "d/sub/deeper/x", "e/f.txt"] {
            blobs
                .put_stream(&RelPath::parse(name).unwrap(), chunks(b"12345", 5), PutOpts::default())
                .await
                .unwrap();
        }
        let (folders, files) = blobs.list_level(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert_eq!(folders, ["d", "e"]);
        assert_eq!(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), ["top.txt"]);
        let (folders, files) = blobs.list_level(&RelPath::parse_dir("d").unwrap()).await.unwrap();
        assert_eq!(folders, ["sub"]);
        assert_eq!(files.iter().map(|f| (f.path.as_str(), f.size)).collect::<Vec<_>>(), [("d/a.csv", 5)]);
        // A file, or nothing at all, has no level.
        for empty in ["top.txt", "nothing/here"] {
            let (folders, files) = blobs.list_level(&RelPath::parse_dir(empty).unwrap()).await.unwrap();
            assert!(folders.is_empty() && files.is_empty(), "{empty}");
        }
    }
    #[tokio::test]
    async fn deleting_the_last_file_of_a_folder_leaves_no_empty_folder_in_listings() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path().to_str().unwrap()).unwrap().child("ws/default");
        for name in ["keep.txt", "a/b/c/one.csv", "a/two.csv", "x/y/z.txt"] {
            blobs
                .put_stream(&RelPath::parse(name).unwrap(), chunks(b"1", 1), PutOpts::default())
                .await
                .unwrap();
        }
        assert!(blobs.delete_file(&RelPath::parse("a/b/c/one.csv").unwrap()).await.unwrap());
        let (folders, _) = blobs.list_level(&RelPath::parse_dir("a").unwrap()).await.unwrap();
        assert!(folders.is_empty(), "a/b and a/b/c went with their last file: {folders:?}");
        assert_eq!(blobs.delete_all(&RelPath::parse_dir("x").unwrap()).await.unwrap(), 1);
        let (folders, files) = blobs.list_level(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert_eq!(folders, ["a"], "x went with its files; a keeps two.csv");
        assert_eq!(files.len(), 1);
        // The store's own root stays, even when it is empty.
        blobs.delete_all(&RelPath::parse_dir("").unwrap()).await.unwrap();
        assert!(dir.path().join("ws/default").is_dir());
    }
}
