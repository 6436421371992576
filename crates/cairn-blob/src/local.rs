//! The write path for large files in a local directory. The body is hashed on the caller's task
//! while a blocking thread writes it, in batches, to a staging file next to the destination
//! (`NAME#DIGITS`, a name `object_store` never lists, reads or accepts as a path). Only when the
//! whole body has arrived and its checksums match is the staging file renamed over the destination
//! (`overwrite`) or hard-linked to it (which fails if the destination appeared meanwhile); on any
//! failure, or if the caller is dropped midway, it is removed. Nothing is synced to disk, as
//! `object_store`'s own local writes do not either.
//!
//! Also the write path for a batch of small files ([`put_many`]): the same staging files and the
//! same rename or link, for all of them in one blocking task.

use std::fs::File;
use std::io::{ErrorKind, IoSlice, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::api::FileEntry;
use cairn_core::{Error, RelPath};
use futures::{Stream, StreamExt};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use tokio::sync::mpsc;

use crate::{check_digests, interrupted, within_limit, Digests, Put, PutOpts, Trailing, Written};

/// Chunks queued for the writing thread. A chunk is what the body stream yields (hyper's are
/// at most a few hundred KiB), so this bounds the memory a write holds to a few tens of MiB.
const QUEUE: usize = 32;
/// Chunks written with one `writev`.
const BATCH: usize = 16;

/// What the caller already took from the body (and hashed) before choosing this path.
pub(crate) struct Received {
    pub head: Vec<Bytes>,
    pub size: u64,
    pub hasher: Digests,
}

/// Writes `received` and the rest of `body` to `dest` (the filesystem path of `path`), visible
/// only once complete and verified.
pub(crate) async fn put<S, E>(
    dest: &Path,
    path: &RelPath,
    received: Received,
    body: S,
    opts: PutOpts<'_>,
    trailing: Option<Trailing<'_>>,
) -> Result<Put, Error>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let Received { head, mut size, mut hasher } = received;
    if opts.lazy_sha256 && opts.expected_sha256.is_none() && !trailing.is_some_and(|t| t.sha256.declared) {
        // The head, already hashed, is a few MiB; the rest is where the time goes.
        hasher.sha256 = None;
    }
    let started = Instant::now();
    let mut times = Phases::default();
    let (file, staged) = {
        let (owned, rel) = (dest.to_path_buf(), path.clone());
        let opened = tokio::task::spawn_blocking(move || {
            let folder = parent_folder(&owned, &rel)?;
            let (file, name) = create_staging(&folder, &rel).map_err(|e| write_err(&owned, &rel, e, ""))?;
            Ok::<_, Error>((file, Staged(Some((folder, name)))))
        });
        opened.await.map_err(|e| Error::Unavailable(format!("writing {path}: {e}")))??
    };
    let mut staged = staged;
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_queue(file, rx));

    let mut body = std::pin::pin!(body);
    let received: Result<(), Error> = async {
        for chunk in head {
            if tx.send(chunk).await.is_err() {
                return Ok(()); // the writer failed: its error says why
            }
        }
        loop {
            let t = Instant::now();
            let Some(chunk) = body.next().await else { break };
            times.receive += t.elapsed();
            let chunk = chunk.map_err(|e| interrupted(path, e))?;
            size += chunk.len() as u64;
            within_limit(path, size, &opts)?;
            let t = Instant::now();
            hasher.update(&chunk);
            times.hash += t.elapsed();
            times.chunks += 1;
            let t = Instant::now();
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
            times.queue_full += t.elapsed();
        }
        Ok(())
    }
    .await;
    drop(tx);
    let t = Instant::now();
    let written = writer.await.map_err(|e| Error::Unavailable(format!("writing {path}: {e}")))?;
    times.drain = t.elapsed();
    received?;
    let (write, writer_idle) = written.map_err(|e| io_err(path, e))?;
    let sha256 = check_digests(hasher, path, &opts, trailing)?;

    let (folder, staging) = staged.0.clone().expect("staging file present until published");
    let (name, overwrite) = (file_name(path).to_string(), opts.overwrite);
    let published = blocking(move || publish(&folder, &staging, &name, overwrite)).await;
    match published {
        Ok(()) => {
            staged.0 = None;
            // Where a large write's time went (CAIRN_LOG=cairn_blob=debug): waiting for the
            // body (the network and the sender), hashing, waiting for the writing thread, and
            // that thread's own time in `writev` and idle.
            tracing::debug!(
                %path, size, chunks = times.chunks, total = ?started.elapsed(), receive = ?times.receive,
                hash = ?times.hash, queue_full = ?times.queue_full, drain = ?times.drain, write = ?write,
                writer_idle = ?writer_idle, "large write timings"
            );
            Ok(match sha256 {
                Some(sha256) => Put::Stored(Written { size, sha256 }),
                None => Put::StoredUnhashed(size),
            })
        }
        // Only a link fails so: the path is taken, by a file (a folder is a clash).
        Err(e) if e.kind() == ErrorKind::AlreadyExists && clash(dest, path).is_none() => {
            let sha256 = match sha256 {
                Some(sha256) => sha256,
                // The caller compares what it sent with what is there: the staging file, still
                // in place until `staged` drops, is hashed now.
                None => {
                    let (folder, staging) = staged.0.clone().expect("staging file present until dropped");
                    blocking(move || sha256_at(&folder, &staging)).await.map_err(|e| io_err(path, e))?
                }
            };
            Ok(Put::Taken(Written { size, sha256 }))
        }
        Err(e) => Err(write_err(dest, path, e, "")),
    }
}

/// Writes whole small files as one group (see [`crate::BlobStore::put_many`]): every file goes to
/// a staging file first, so that a failure to write (a full disk) publishes nothing; then each is
/// renamed (`overwrite`) or linked into place, and a link that finds its destination taken undoes
/// the links made before it. Returns, per file, whether it replaced one. Blocking.
pub(crate) fn put_many(files: &[(PathBuf, RelPath, Bytes)], overwrite: bool) -> Result<Vec<bool>, Error> {
    // Files of one folder share its descriptor.
    let mut folders: std::collections::HashMap<&str, Folder> = std::collections::HashMap::new();
    let mut staged = Vec::with_capacity(files.len());
    for (dest, path, data) in files {
        let parent = path.as_str().rsplit_once('/').map_or("", |(dir, _)| dir);
        let folder = match folders.get(parent) {
            Some(f) => f.clone(),
            None => {
                let f = parent_folder(dest, path)?;
                folders.insert(parent, f.clone());
                f
            }
        };
        let (mut file, staging) = create_staging(&folder, path).map_err(|e| write_err(dest, path, e, ""))?;
        staged.push(Staged(Some((folder, staging))));
        file.write_all(data).map_err(|e| io_err(path, e))?;
    }
    if overwrite {
        // A rename cannot replace a folder; found before anything is published, the batch stays
        // whole or nothing (a link, without overwrite, is undone instead).
        if let Some(clash) = files.iter().filter(|(dest, ..)| dest.is_dir()).find_map(|(d, p, _)| clash(d, p))
        {
            return Err(clash);
        }
    }
    let mut replaced = Vec::with_capacity(files.len());
    let mut linked: Vec<(Folder, &str)> = Vec::new();
    for ((dest, path, _), staging) in files.iter().zip(&mut staged) {
        let (folder, from) = staging.0.clone().expect("staged until published");
        let name = file_name(path);
        let published = if overwrite {
            let existed = rustix::fs::statat(&*folder.0, name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
            rustix::fs::renameat(&*folder.0, from.as_str(), &*folder.0, name).map(|()| {
                staging.0 = None;
                existed
            })
        } else {
            // The staging name is removed when `staged` is dropped.
            rustix::fs::linkat(&*folder.0, from.as_str(), &*folder.0, name, AtFlags::empty()).map(|()| false)
        };
        match published.map_err(std::io::Error::from) {
            Ok(existed) => {
                replaced.push(existed);
                if !overwrite {
                    linked.push((folder, name));
                }
            }
            Err(e) => {
                for (folder, done) in linked {
                    let _ = rustix::fs::unlinkat(&*folder.0, done, AtFlags::empty());
                }
                return Err(write_err(
                    dest,
                    path,
                    e,
                    "; pass overwrite=true (--overwrite) to replace it; nothing of this batch was stored",
                ));
            }
        }
    }
    Ok(replaced)
}

/// Creates `NAME#DIGITS` in `folder` (`NAME`: `path`'s file name), a name no other write uses at
/// the same time; returns it open for writing, and its name.
fn create_staging(folder: &Folder, path: &RelPath) -> std::io::Result<(File, String)> {
    loop {
        let staging = format!("{}#{}", file_name(path), rand_suffix());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        match rustix::fs::openat(&*folder.0, staging.as_str(), flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => return Ok((File::from(fd), staging)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Makes staging file `staging` of `folder` its file `name`: renamed over it (`overwrite`), or
/// linked, which fails if `name` is taken (a rename would replace it), then unlinked.
fn publish(folder: &Folder, staging: &str, name: &str, overwrite: bool) -> std::io::Result<()> {
    let dir = &*folder.0;
    if overwrite {
        rustix::fs::renameat(dir, staging, dir, name)?;
    } else {
        rustix::fs::linkat(dir, staging, dir, name, AtFlags::empty())?;
        let _ = rustix::fs::unlinkat(dir, staging, AtFlags::empty());
    }
    Ok(())
}

/// Writes a small file whole (`chunks`) to `path` (`dest`, its place on disk) through a staging
/// file, as [`put`] does: true when stored, false when the path is taken by a file and not
/// `overwrite` (a folder in its place is a clash error). Blocking.
pub(crate) fn put_small(
    dest: &Path,
    path: &RelPath,
    chunks: &[Bytes],
    overwrite: bool,
) -> Result<bool, Error> {
    let folder = parent_folder(dest, path)?;
    let (mut file, staging) = create_staging(&folder, path).map_err(|e| write_err(dest, path, e, ""))?;
    let mut staged = Staged(Some((folder.clone(), staging.clone())));
    write_all_vectored(&mut file, chunks).map_err(|e| io_err(path, e))?;
    drop(file);
    match publish(&folder, &staging, file_name(path), overwrite) {
        Ok(()) => {
            // Renamed, or linked and already unlinked by `publish`.
            staged.0 = None;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists && !overwrite && clash(dest, path).is_none() => {
            Ok(false)
        }
        Err(e) => Err(write_err(dest, path, e, "")),
    }
}

/// A folder of a local store, opened confined to the store: files are created, renamed, linked
/// and removed relative to its descriptor, so a symbolic link swapped in on its way after it was
/// opened changes nothing.
#[derive(Clone)]
pub(crate) struct Folder(Arc<OwnedFd>);

fn file_name(path: &RelPath) -> &str {
    path.as_str().rsplit('/').next().unwrap_or_default()
}

/// The folder that holds `path` (`full`: its place on disk), opened confined to the store and
/// made, with the folders above it, where missing. The kernel resolves each folder beneath the
/// store's own ([`open_beneath`]), and a missing folder is made (`mkdirat`) inside the one above
/// it, already open. Kernels without `openat2` get [`confine`]'s check, then opens by path.
fn parent_folder(full: &Path, path: &RelPath) -> Result<Folder, Error> {
    let parts: Vec<&str> = path.as_str().split('/').filter(|p| !p.is_empty()).collect();
    let root = full.ancestors().nth(parts.len()).unwrap_or(full);
    let dirs = &parts[..parts.len().saturating_sub(1)];
    let failed = |e: std::io::Error| write_err(full, path, e, "");
    let refused = |e: Beneath| match e {
        Beneath::Errno(e) => failed(e.into()),
        other => other.error(path),
    };
    std::fs::create_dir_all(root).map_err(failed)?;
    let root_fd = rustix::fs::open(root, dir_flags(), Mode::empty()).map_err(|e| failed(e.into()))?;
    if dirs.is_empty() {
        return Ok(Folder(Arc::new(root_fd)));
    }
    match open_beneath(root, &root_fd, &dirs.join("/"), dir_flags()) {
        Ok(fd) => return Ok(Folder(Arc::new(fd))),
        Err(Beneath::Errno(Errno::NOENT)) => {}
        Err(Beneath::Errno(Errno::NOSYS)) => {
            confine(full, path)?;
            let parent = full.parent().unwrap_or(root);
            std::fs::create_dir_all(parent).map_err(failed)?;
            let fd = rustix::fs::open(parent, dir_flags(), Mode::empty()).map_err(|e| failed(e.into()))?;
            return Ok(Folder(Arc::new(fd)));
        }
        Err(e) => return Err(refused(e)),
    }
    let mut above: Option<OwnedFd> = None;
    for depth in 1..=dirs.len() {
        let prefix = dirs[..depth].join("/");
        let opened = match open_beneath(root, &root_fd, &prefix, dir_flags()) {
            Err(Beneath::Errno(Errno::NOENT)) => {
                let at = above.as_ref().unwrap_or(&root_fd);
                match rustix::fs::mkdirat(at, dirs[depth - 1], Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(failed(e.into())),
                }
                open_beneath(root, &root_fd, &prefix, dir_flags())
            }
            other => other,
        };
        above = Some(opened.map_err(refused)?);
    }
    Ok(Folder(Arc::new(above.expect("a path with folders opens at least one"))))
}

/// Deletes stored file `path` (`full`: its place on disk) relative to its folder opened confined
/// to the store (as [`parent_folder`], nothing made), then removes the folders it leaves empty up
/// to the store's own, each relative to the one above it: false when there was no such file.
/// Blocking.
pub(crate) fn delete_confined(full: &Path, path: &RelPath) -> Result<bool, Error> {
    let parts: Vec<&str> = path.as_str().split('/').filter(|p| !p.is_empty()).collect();
    let root = full.ancestors().nth(parts.len()).unwrap_or(full);
    let Some((name, dirs)) = parts.split_last() else { return Ok(false) };
    let Some(folder) = existing_folder(full, path, root, &dirs.join("/"))? else { return Ok(false) };
    let deleted = match rustix::fs::unlinkat(&folder, *name, AtFlags::empty()) {
        Ok(()) => true,
        Err(Errno::NOENT | Errno::ISDIR | Errno::NOTDIR) => false,
        // Linux answers EISDIR for a folder; POSIX allows EPERM.
        Err(Errno::PERM)
            if rustix::fs::statat(&folder, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|s| {
                rustix::fs::FileType::from_raw_mode(s.st_mode) == rustix::fs::FileType::Directory
            }) =>
        {
            false
        }
        Err(e) => return Err(io_err(path, e.into())),
    };
    // Best effort: a folder that is not empty, or that another write just filled, stays.
    for depth in (1..=dirs.len()).rev() {
        let above = dirs[..depth - 1].join("/");
        let Ok(Some(at)) = existing_folder(full, path, root, &above) else { break };
        if rustix::fs::unlinkat(&at, dirs[depth - 1], AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
    Ok(deleted)
}

/// Folder `dir` (relative; "" for the root) of the store at `root`, opened confined to it
/// ([`open_beneath`]); `None` when it does not exist (or is not a folder). Kernels without
/// `openat2` get [`confine`]'s check of `path` (`full`), then an open by path.
fn existing_folder(full: &Path, path: &RelPath, root: &Path, dir: &str) -> Result<Option<OwnedFd>, Error> {
    let absent = |e: Errno| matches!(e, Errno::NOENT | Errno::NOTDIR);
    let root_fd = match rustix::fs::open(root, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent(e) => return Ok(None),
        Err(e) => return Err(io_err(path, e.into())),
    };
    if dir.is_empty() {
        return Ok(Some(root_fd));
    }
    match open_beneath(root, &root_fd, dir, dir_flags()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Beneath::Errno(e)) if absent(e) => Ok(None),
        Err(Beneath::Errno(Errno::NOSYS)) => {
            confine(full, path)?;
            match rustix::fs::open(root.join(dir), dir_flags(), Mode::empty()) {
                Ok(fd) => Ok(Some(fd)),
                Err(e) if absent(e) => Ok(None),
                Err(e) => Err(io_err(path, e.into())),
            }
        }
        Err(e) => Err(e.error(path)),
    }
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::PATH | OFlags::CLOEXEC
}

/// Why [`open_beneath`] opened nothing.
enum Beneath {
    /// What the system said (`NOSYS`: no `openat2`; `NOENT`, `NOTDIR`, …).
    Errno(Errno),
    /// The path leads out of the store through a symbolic link.
    Out,
    /// A symbolic link appeared on the way between its resolution and the open.
    Changed,
}

impl Beneath {
    fn error(self, path: &RelPath) -> Error {
        match self {
            Beneath::Errno(e) => io_err(path, e.into()),
            Beneath::Out => leads_out(path),
            Beneath::Changed => Error::conflict(format!(
                "{path} changed while it was being opened (a symbolic link appeared on its way); try again"
            )),
        }
    }
}

/// Opens `rel` under the store folder `root` (open as `root_fd`) with `flags`, the kernel
/// resolving it beneath `root` (`openat2`, `RESOLVE_BENEATH`): a symbolic link out of the store is
/// refused, even one swapped in during the open. `RESOLVE_BENEATH` also refuses absolute links,
/// even those pointing inside the store: such a path is resolved here and what it resolves to is
/// opened with no link allowed at all, so that what is opened is what was checked.
fn open_beneath(root: &Path, root_fd: &OwnedFd, rel: &str, flags: OFlags) -> Result<OwnedFd, Beneath> {
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(root_fd, rel, flags, Mode::empty(), beneath) {
        Ok(fd) => Ok(fd),
        Err(Errno::XDEV) => {
            let errno = |e: std::io::Error| Beneath::Errno(Errno::from_io_error(&e).unwrap_or(Errno::IO));
            let real = std::fs::canonicalize(root.join(rel)).map_err(errno)?;
            let real_root = std::fs::canonicalize(root).map_err(errno)?;
            let inner = real.strip_prefix(&real_root).map_err(|_| Beneath::Out)?;
            let inner = if inner.as_os_str().is_empty() { Path::new(".") } else { inner };
            let real_fd = rustix::fs::open(&real_root, dir_flags(), Mode::empty()).map_err(Beneath::Errno)?;
            let no_links = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rustix::fs::openat2(&real_fd, inner, flags, Mode::empty(), no_links) {
                Ok(fd) => Ok(fd),
                Err(Errno::LOOP | Errno::XDEV) => Err(Beneath::Changed),
                Err(e) => Err(Beneath::Errno(e)),
            }
        }
        Err(e) => Err(Beneath::Errno(e)),
    }
}

fn rand_suffix() -> u64 {
    let id = uuid::Uuid::new_v4().as_u64_pair().0;
    // object_store treats only all-digit suffixes as staging files: keep it a plain number, of
    // at most 16 digits (`STAGING_SUFFIX_MAX`).
    id % 10_000_000_000_000_000
}

/// Time spent by the receiving side of a large write, per phase.
#[derive(Default)]
struct Phases {
    chunks: u64,
    receive: Duration,
    hash: Duration,
    queue_full: Duration,
    drain: Duration,
}

/// The writing thread: takes queued chunks and writes them in batches until the queue closes.
/// Returns its time writing and its time waiting for chunks.
fn write_queue(mut file: File, mut rx: mpsc::Receiver<Bytes>) -> std::io::Result<(Duration, Duration)> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    let (mut write, mut idle) = (Duration::ZERO, Duration::ZERO);
    loop {
        let t = Instant::now();
        let Some(first) = rx.blocking_recv() else { break };
        idle += t.elapsed();
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(chunk) => batch.push(chunk),
                Err(_) => break,
            }
        }
        let t = Instant::now();
        write_all_vectored(&mut file, &batch)?;
        write += t.elapsed();
        batch.clear();
    }
    Ok((write, idle))
}

fn write_all_vectored(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Removes the staging file (its folder and name) unless it was published, whatever ends the
/// write (an error, or the caller's future being dropped).
struct Staged(Option<(Folder, String)>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some((folder, name)) = self.0.take() {
            // One unlink: cheap enough to do in place, and it must not be skipped.
            match rustix::fs::unlinkat(&*folder.0, name.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => tracing::warn!(staging = %name, error = %e, "could not remove a staging file"),
            }
        }
    }
}

/// The SHA-256 of the file `name` in `folder`. Blocking.
fn sha256_at(folder: &Folder, name: &str) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = File::from(rustix::fs::openat(&*folder.0, name, flags, Mode::empty())?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => return Ok(hex::encode(hasher.finalize())),
            n => hasher.update(&buf[..n]),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

/// A failed write's error: a file and a folder that would share a name ([`clash`]), a file that
/// is already there (`taken` ends the message), or what the I/O error says.
fn write_err(dest: &Path, path: &RelPath, e: std::io::Error, taken: &str) -> Error {
    if let Some(clash) = clash(dest, path) {
        return clash;
    }
    if e.kind() == ErrorKind::AlreadyExists {
        return Error::conflict(format!("{path} already exists{taken}"));
    }
    io_err(path, e)
}

/// In a directory a path cannot be both a file and a folder (S3 keys can): if that is why `path`
/// could not be written at `dest`, the 409 that says which. Looked for only once a write has
/// failed, so writes that succeed pay nothing for it.
pub(crate) fn clash(dest: &Path, path: &RelPath) -> Option<Error> {
    let is_dir = |p: &Path| std::fs::metadata(p).map(|m| m.is_dir());
    if is_dir(dest).unwrap_or(false) {
        return Some(Error::conflict(format!("{path} is a folder here; a file cannot take its place")));
    }
    let parts: Vec<&str> = path.as_str().split('/').collect();
    // `dest`'s folders that belong to `path`, from the top down, beside `path`'s own parts.
    let folders: Vec<&Path> = dest.ancestors().skip(1).take(parts.len().saturating_sub(1)).collect();
    for (depth, folder) in folders.into_iter().rev().enumerate() {
        if is_dir(folder).is_ok_and(|dir| !dir) {
            let file = parts[..=depth].join("/");
            return Some(Error::conflict(format!(
                "{path} cannot be stored: {file} is a file here, not a folder"
            )));
        }
    }
    None
}

/// The longest file name a local directory can store: a write goes to `NAME#DIGITS` first
/// (ours: 16 digits at most; `object_store`'s: a small counter), and the file system's limit of
/// 255 bytes holds for that name too.
pub const LOCAL_NAME_MAX: usize = cairn_core::paths::MAX_COMPONENT_BYTES - STAGING_SUFFIX_MAX;
/// `#` and the 16 digits of [`rand_suffix`].
const STAGING_SUFFIX_MAX: usize = 17;

/// Refuses (400) a file name too long for [`LOCAL_NAME_MAX`], before anything is written.
pub(crate) fn check_name(path: &RelPath) -> Result<(), Error> {
    let name = path.as_str().rsplit('/').next().unwrap_or_default();
    if name.len() > LOCAL_NAME_MAX {
        return Err(Error::invalid(format!(
            "{path}: a file name stored in a local directory is at most {LOCAL_NAME_MAX} bytes, and this \
             one is {} (the rest of the file system's 255 is needed while the file is written)",
            name.len()
        )));
    }
    Ok(())
}

/// Refuses (400) a path of a local store that leads out of the store through a symbolic link:
/// `full` is `path`'s place on disk. A link that stays inside the store is followed; parts of the
/// path that do not exist yet are fine (writing creates real folders there). Without this, a link
/// planted in a datastore's folder (by a job that mounts it, say) would let a reader read, and a
/// writer write or delete, whatever the server can reach — its own admin token included. A link
/// swapped in between this check and the use is not caught here: reads open with
/// [`open_confined`], writes and deletes work in a folder opened by [`parent_folder`] or
/// [`existing_folder`], and listings walk through descriptors ([`list_page`]), where the kernel
/// does the check and the open in one step; this check is what kernels without `openat2` get.
pub(crate) fn confine(full: &Path, path: &RelPath) -> Result<(), Error> {
    let parts: Vec<&str> = path.as_str().split('/').filter(|p| !p.is_empty()).collect();
    let Some(root) = full.ancestors().nth(parts.len()) else {
        return Ok(());
    };
    let mut real_root: Option<PathBuf> = None;
    let mut at = root.to_path_buf();
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if !stays_inside(&at, root, &mut real_root).map_err(|e| io_err(path, e))? {
                    return Err(leads_out(path));
                }
            }
            Ok(_) => {}
            Err(e) if absent(&e) => return Ok(()),
            Err(e) => return Err(io_err(path, e)),
        }
    }
    Ok(())
}

/// Opens stored file `path` (`full`, its place on disk) for reading, confined to its store: the
/// kernel resolves the path beneath the store's folder (`openat2` with `RESOLVE_BENEATH`), so a
/// symbolic link out of the store is refused even when it is swapped in while the file is being
/// opened. `RESOLVE_BENEATH` also refuses absolute links, even those that point inside the store:
/// such a path is resolved here and what it resolves to is opened with no link allowed at all,
/// so that what is opened is what was checked. Kernels without `openat2` (before 5.6) get
/// [`confine`]'s check, then an open. Missing files and folders are 404s.
pub(crate) fn open_confined(full: &Path, path: &RelPath) -> Result<File, Error> {
    let depth = path.as_str().split('/').filter(|p| !p.is_empty()).count();
    let root = full.ancestors().nth(depth).unwrap_or(full);
    let failed = |e: std::io::Error| match e.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            Error::not_found("file", path.as_str())
        }
        _ => io_err(path, e),
    };
    let root_fd = rustix::fs::open(root, dir_flags(), Mode::empty()).map_err(|e| failed(e.into()))?;
    match open_beneath(root, &root_fd, path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Beneath::Errno(Errno::NOSYS)) => {
            confine(full, path)?;
            File::open(full).map_err(failed)
        }
        Err(Beneath::Errno(Errno::LOOP)) => {
            Err(Error::invalid(format!("{path}: too many levels of symbolic links")))
        }
        Err(Beneath::Errno(e)) => Err(failed(e.into())),
        Err(e) => Err(e.error(path)),
    }
}

fn leads_out(path: &RelPath) -> Error {
    Error::invalid(format!(
        "{path} leads out of its datastore through a symbolic link; Cairn does not follow links out of a datastore"
    ))
}

/// Whether the symbolic link `link` resolves to a place under `root` (`real_root` caches
/// `root`'s own resolution). A broken link counts as inside: there is nothing to reach through it.
fn stays_inside(link: &Path, root: &Path, real_root: &mut Option<PathBuf>) -> std::io::Result<bool> {
    let real = match std::fs::canonicalize(link) {
        Ok(real) => real,
        Err(e) if absent(&e) => return Ok(true),
        Err(e) => return Err(e),
    };
    let root = match real_root {
        Some(root) => root,
        None => real_root.insert(std::fs::canonicalize(root)?),
    };
    Ok(real.starts_with(root))
}

fn absent(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Files up to this size are read whole in one blocking call when downloaded.
pub(crate) const WHOLE_READ_MAX: u64 = 256 << 10;
/// The chunks a larger file is streamed in (each one read on a blocking thread).
pub(crate) const STREAM_CHUNK: usize = 256 << 10;

/// An error while streaming a stored file that was opened.
pub(crate) fn read_err(path: &RelPath, e: std::io::Error) -> Error {
    Error::Unavailable(format!("storage error reading {path}: {e}"))
}

/// A stored file to download: read whole when it is small, else opened, to be streamed.
pub(crate) enum Opened {
    Whole(Bytes),
    Large(File, u64),
}

/// A stored file, opened confined to its store ([`open_confined`]) and read in the same blocking
/// call when it is small. Folders and missing paths are 404s.
pub(crate) fn read_or_open(file: &Path, path: &RelPath) -> Result<Opened, Error> {
    let (f, size) = open_file(file, path)?;
    if size > WHOLE_READ_MAX {
        return Ok(Opened::Large(f, size));
    }
    read_whole(f, size, path).map(Opened::Whole)
}

/// Stored files read whole, in order, in one blocking call, as long as their sizes add up to at
/// most `max_total` (a 413 naming the file that goes past it, before it is read). Folders and
/// missing paths are 404s.
pub(crate) fn read_many(files: &[(PathBuf, RelPath)], max_total: u64) -> Result<Vec<Bytes>, Error> {
    let mut total = 0u64;
    files
        .iter()
        .map(|(file, path)| {
            let (f, size) = open_file(file, path)?;
            total += size;
            if total > max_total {
                return Err(Error::TooLarge(format!("{path} takes the files past {max_total} bytes")));
            }
            read_whole(f, size, path)
        })
        .collect()
}

/// One page of a folder's files, recursively, in path order: those after `after`, at most
/// `limit`. `root` is the folder on disk, `base` its path in the store's terms ("" for the
/// store's root); files are taken as object_store's listing takes them (names as they are,
/// refused if not UTF-8 or holding a control character, staging files `NAME#DIGITS` left out,
/// symbolic links followed, broken ones skipped), so a page equals the same slice of the whole
/// sorted listing. The walk is sorted as it goes, and a folder whose every path precedes `after`
/// is skipped without being read: a page costs what precedes it in its own folders, not the
/// whole tree.
///
/// Confined as reads are ([`open_confined`]): every folder is read, and every file looked at,
/// through a descriptor, either opened from its parent's without following a link, or, for a
/// symbolic link, opened beneath the store's folder by the kernel (`openat2`, `RESOLVE_BENEATH`).
/// A link out of the store is left out as if it were not there, even one swapped in during the
/// walk, and a link back to a folder being walked is not walked again. Kernels without `openat2`
/// get [`list_page_checked`].
pub(crate) fn list_page(
    root: &Path,
    base: &RelPath,
    after: &str,
    limit: usize,
) -> Result<Vec<FileEntry>, Error> {
    let prefix = base.as_str().trim_end_matches('/');
    let depth = prefix.split('/').filter(|p| !p.is_empty()).count();
    let store_root = root.ancestors().nth(depth).unwrap_or(root);
    let failed = |e: Errno| listing_err(prefix, e);
    let root_fd = match rustix::fs::open(store_root, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if absent_errno(e) => return Ok(Vec::new()),
        Err(e) => return Err(failed(e)),
    };
    let at = if prefix.is_empty() { "." } else { prefix };
    let folder = match open_beneath(store_root, &root_fd, at, READ_DIR) {
        Ok(fd) => fd,
        Err(Beneath::Errno(Errno::NOSYS)) => {
            confine(root, base)?;
            return list_page_checked(root, prefix, after, limit);
        }
        Err(Beneath::Errno(e)) if absent_errno(e) => return Ok(Vec::new()),
        Err(Beneath::Errno(e)) => return Err(failed(e)),
        Err(other) => return Err(other.error(base)),
    };
    let mut walk =
        Walk { store_root, root_fd: &root_fd, after, limit, page: Vec::new(), walking: Vec::new() };
    walk.folder(folder, prefix)?;
    Ok(walk.page)
}

/// How [`list_page`] opens a folder to read its entries.
const READ_DIR: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

/// A [`list_page`] walk under way.
struct Walk<'a> {
    store_root: &'a Path,
    root_fd: &'a OwnedFd,
    after: &'a str,
    limit: usize,
    page: Vec<FileEntry>,
    /// `(device, inode)` of the folders being walked, outermost first: a link to one of them
    /// would walk it forever.
    walking: Vec<(u64, u64)>,
}

/// One entry of a folder, as [`Walk::folder`] orders them.
struct Child {
    /// The name, with "/" after a folder's: in this order the walk comes out in path order.
    key: String,
    name: Vec<u8>,
    folder: bool,
    /// A symbolic link (to a file or folder in the store), opened again through the store's root.
    link: bool,
}

impl Walk<'_> {
    /// Lists folder `fd` (path `prefix`) into the page; true once the page is full.
    fn folder(&mut self, fd: OwnedFd, prefix: &str) -> Result<bool, Error> {
        let failed = |e: Errno| listing_err(prefix, e);
        let st = rustix::fs::fstat(&fd).map_err(failed)?;
        let id = (st.st_dev as u64, st.st_ino as u64);
        if self.walking.contains(&id) {
            return Ok(false);
        }
        let mut children = Vec::new();
        let mut dir = rustix::fs::Dir::new(fd).map_err(failed)?;
        let fd = rustix::io::fcntl_dupfd_cloexec(dir.fd().map_err(failed)?, 0).map_err(failed)?;
        for entry in &mut dir {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                match rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => kind = FileType::from_raw_mode(st.st_mode as _),
                    Err(e) if absent_errno(e) => continue,
                    Err(e) => return Err(failed(e)),
                }
            }
            let (folder, link) = match kind {
                FileType::Directory => (true, false),
                FileType::RegularFile => (false, false),
                FileType::Symlink => {
                    // What the link leads to decides its place in the order; a link that leads
                    // out of the store, nowhere, or round in circles is left out.
                    let path = self.path(prefix, name)?;
                    let Some(target) = self.open_child(&fd, &path, name, true, PATH_ONLY)? else { continue };
                    match rustix::fs::fstat(&target).map(|st| FileType::from_raw_mode(st.st_mode as _)) {
                        Ok(FileType::Directory) => (true, true),
                        Ok(FileType::RegularFile) => (false, true),
                        _ => continue,
                    }
                }
                _ => continue,
            };
            let mut key = String::from_utf8_lossy(name).into_owned();
            if folder {
                key.push('/');
            }
            children.push(Child { key, name: name.to_vec(), folder, link });
        }
        drop(dir);
        children.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        self.walking.push(id);
        for child in children {
            let path = self.path(prefix, &child.name)?;
            let open = |flags: OFlags| self.open_child(&fd, &path, &child.name, child.link, flags);
            if child.folder {
                // Skipped unless some of its paths ("P/…") follow `after`: when "P/" itself does,
                // or when `after` is inside it.
                let inner = format!("{path}/");
                if inner.as_str() < self.after && !self.after.starts_with(&inner) {
                    continue;
                }
                let Some(sub) = open(READ_DIR)? else { continue };
                if self.folder(sub, &path)? {
                    return Ok(true);
                }
                continue;
            }
            if is_staging(&path) || path.as_str() <= self.after {
                continue;
            }
            let st = if child.link {
                let Some(file) = open(PATH_ONLY)? else { continue };
                rustix::fs::fstat(&file)
            } else {
                rustix::fs::statat(&fd, child.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            };
            let st = match st {
                Ok(st) => st,
                Err(e) if absent_errno(e) => continue,
                Err(e) => return Err(failed(e)),
            };
            if FileType::from_raw_mode(st.st_mode as _) != FileType::RegularFile {
                continue;
            }
            let modified_ms = st.st_mtime as i64 * 1000 + st.st_mtime_nsec as i64 / 1_000_000;
            self.page.push(FileEntry { path, size: st.st_size as u64, last_modified: modified_ms.max(0) });
            if self.page.len() == self.limit {
                return Ok(true);
            }
        }
        self.walking.pop();
        Ok(false)
    }

    /// Opens entry `name` (store path `path`) of folder `dir`: a symbolic link (`link`) beneath the
    /// store's folder, anything else from `dir` without following a link. `None` for what is gone
    /// meanwhile, was swapped for a link, or (a link) leads out of the store, nowhere, or round in
    /// circles: left out of the listing. Any other failure (a folder it may not read) is an error.
    fn open_child(
        &self,
        dir: &OwnedFd,
        path: &str,
        name: &[u8],
        link: bool,
        flags: OFlags,
    ) -> Result<Option<OwnedFd>, Error> {
        let opened = if link {
            open_beneath(self.store_root, self.root_fd, path, flags)
        } else {
            rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(Beneath::Errno)
        };
        match opened {
            Ok(fd) => Ok(Some(fd)),
            Err(Beneath::Errno(e)) if absent_errno(e) => Ok(None),
            Err(Beneath::Out | Beneath::Changed) => Ok(None),
            Err(Beneath::Errno(e)) => Err(listing_err(path, e)),
        }
    }

    /// The store path of entry `name` of folder `prefix`: refused unless UTF-8 without control
    /// characters, as object_store takes a name.
    fn path(&self, prefix: &str, name: &[u8]) -> Result<String, Error> {
        let valid = std::str::from_utf8(name).ok().filter(|n| !n.chars().any(|c| c.is_ascii_control()));
        let Some(name) = valid else {
            return Err(Error::Unavailable(format!(
                "listing {prefix:?}: the name {:?} is not UTF-8 or holds a control character",
                String::from_utf8_lossy(name)
            )));
        };
        Ok(if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") })
    }
}

/// A listing's failure at store path `at`.
fn listing_err(at: &str, e: Errno) -> Error {
    Error::Unavailable(format!("listing {at:?}: {}", std::io::Error::from(e)))
}

/// How [`list_page`] opens what it only looks at: no read, so a FIFO does not block.
const PATH_ONLY: OFlags = OFlags::PATH.union(OFlags::CLOEXEC);

/// For a listing: gone (`NOENT`, `NOTDIR`), or a link where none was (`LOOP` under `NOFOLLOW`) or
/// round in circles (`LOOP`).
fn absent_errno(e: Errno) -> bool {
    matches!(e, Errno::NOENT | Errno::NOTDIR | Errno::LOOP)
}

/// Whether the last name of `path` is a staging file's (`NAME#DIGITS`).
fn is_staging(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .and_then(|name| name.split_once('#'))
        .is_some_and(|(_, suffix)| !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()))
}

/// [`list_page`] for kernels without `openat2`: each link is checked to stay inside the store
/// ([`stays_inside`]) before the walk follows it, which a link swapped in between can escape.
fn list_page_checked(root: &Path, base: &str, after: &str, limit: usize) -> Result<Vec<FileEntry>, Error> {
    let depth = base.split('/').filter(|p| !p.is_empty()).count();
    let store_root = root.ancestors().nth(depth).unwrap_or(root).to_path_buf();
    let mut real_root: Option<PathBuf> = None;
    // Links out of the store are left out, as if they were not there (see `confine`).
    let mut outside = move |entry: &walkdir::DirEntry| {
        entry.path_is_symlink() && !stays_inside(entry.path(), &store_root, &mut real_root).unwrap_or(false)
    };
    let rel = |entry: &walkdir::DirEntry| -> Option<String> {
        let inner = entry.path().strip_prefix(root).ok()?;
        let mut out = base.to_string();
        for component in inner.components() {
            if !out.is_empty() {
                out.push('/');
            }
            // As object_store takes a name: UTF-8, without control characters.
            let name = component.as_os_str().to_str().filter(|n| !n.chars().any(|c| c.is_ascii_control()))?;
            out.push_str(name);
        }
        Some(out)
    };
    // In a folder, a subfolder's paths all begin "NAME/": ordering children by that key (a file
    // by its name) makes the depth-first walk come out in path order.
    let key = |entry: &walkdir::DirEntry| {
        let mut key = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_dir() {
            key.push('/');
        }
        key
    };
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(true)
        .sort_by(move |a, b| key(a).cmp(&key(b)))
        .into_iter()
        .filter_entry(move |entry| {
            if outside(entry) {
                return false;
            }
            if !entry.file_type().is_dir() {
                return true;
            }
            // Keep a folder unless all of its paths ("P/…") precede `after`: it is kept when
            // "P/" itself does not, or when `after` is inside it.
            match rel(entry) {
                Some(path) => {
                    let folder = path + "/";
                    folder.as_str() >= after || after.starts_with(&folder)
                }
                None => true,
            }
        });
    let mut page = Vec::new();
    for entry in walk {
        let entry = match entry {
            Ok(entry) => entry,
            // A folder that is gone, or that is a file: nothing under it.
            Err(e) if e.io_error().is_some_and(absent) => continue,
            Err(e) => return Err(Error::Unavailable(format!("listing {base:?}: {e}"))),
        };
        if entry.file_type().is_dir() {
            continue;
        }
        let Some(path) = rel(&entry) else {
            return Err(Error::Unavailable(format!(
                "listing {base:?}: the name {:?} is not UTF-8 or holds a control character",
                entry.path()
            )));
        };
        if is_staging(&path) || path.as_str() <= after {
            continue;
        }
        let meta = match entry.metadata() {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(e) if e.io_error().map(std::io::Error::kind) == Some(ErrorKind::NotFound) => continue,
            Err(e) => return Err(Error::Unavailable(format!("listing {base:?}: {e}"))),
        };
        let modified = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
        page.push(FileEntry {
            path,
            size: meta.len(),
            last_modified: modified.map_or(0, |d| d.as_millis() as i64),
        });
        if page.len() == limit {
            break;
        }
    }
    Ok(page)
}

/// A stored file opened for reading ([`open_confined`]) and its size; a folder is a 404.
pub(crate) fn open_file(file: &Path, path: &RelPath) -> Result<(File, u64), Error> {
    let f = open_confined(file, path)?;
    let meta = f.metadata().map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        return Err(Error::not_found("file", path.as_str()));
    }
    Ok((f, meta.len()))
}

fn read_whole(mut f: File, size: u64, path: &RelPath) -> Result<Bytes, Error> {
    use std::io::Read;
    let mut body = Vec::with_capacity(size as usize);
    f.read_to_end(&mut body).map_err(|e| io_err(path, e))?;
    Ok(Bytes::from(body))
}

fn io_err(path: &RelPath, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(28) {
        Error::StorageFull(format!("storage is full while writing {path}"))
    } else if e.kind() == ErrorKind::InvalidFilename {
        Error::invalid(format!(
            "{path} cannot be stored: the path is too long for this datastore's file system"
        ))
    } else {
        Error::Unavailable(format!("storage error on {path}: {e}"))
    }
}
