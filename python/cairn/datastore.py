"""``cairn.Datastore``: upload and download files, and name them as job inputs.

Uploads follow the CLI's protocol (``crates/cairn-client/src/transfer.rs``): ask the server for
an **upload plan** by path and size (``POST …/upload-plan``: send, skip, conflict, or ``checksum``
when a file of that size is already there), hash (SHA-256) just the files the plan asks about and
ask again for those, refuse before writing anything if a file conflicts, then send: small files
(up to 256 KiB) together, up to 100 files or 1 MiB per ``POST …/upload-batch`` (one
``multipart/form-data`` request, stored whole or not at all), larger ones with a ``PUT`` each.
A file hashed for the plan goes with its ``x-cairn-sha256``; the others are read once with the
CRC-32 of what was read as ``x-cairn-crc32`` (a part header in a batch, a trailer after a chunked
``PUT``). Either way the server verifies before the file becomes visible, and a file whose size
or modification time changed while it was read is refused, so nothing of it is stored.
Downloads write each file under a temporary name and rename it when complete.

:meth:`Datastore.as_mount` and :meth:`Datastore.as_download` return :class:`DataReference`
values that :class:`~cairn.experiment.ScriptRunConfig` turns into job inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import sys
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from ._client import CairnError, Conflict
from .workspace import Workspace

#: Files announced per upload-plan request (as the CLI).
PLAN_CHUNK = 1000
#: Requests in flight at once.
CONCURRENCY = 4
#: Files up to this size travel in batches, larger ones alone (the CLI's limits:
#: ``crates/cairn-client/src/transfer.rs``).
BATCH_FILE_MAX = 256 * 1024
#: Most files, and most bytes of content, per batch.
BATCH_FILES = 100
BATCH_BYTES = 1024 * 1024
_BUF = 256 * 1024

T = TypeVar("T")


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_BUF), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Planned:
    """A local file to upload: where it goes, its size, its SHA-256 once the plan asked for it,
    and the plan's answer."""

    __slots__ = ("local", "remote", "size", "sha256", "action", "reason")

    def __init__(self, local: Path, remote: str, size: int) -> None:
        self.local, self.remote, self.size = local, remote, size
        self.sha256: Optional[str] = None
        self.action = ""
        self.reason = ""


def _unchanged(local: Path, body: Any) -> Any:
    """A check, for after ``body`` (``local``, open) has been read: refuses if its size or
    modification time changed meanwhile (rsync and tar check the same way)."""
    before = os.fstat(body.fileno())

    def check() -> None:
        after = os.fstat(body.fileno())
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise CairnError(
                f"{local} changed while it was being uploaded; nothing was stored for it; upload again "
                "once it no longer changes"
            )

    return check


def _units(files: List[T], size_of: Callable[[T], int]) -> List[List[T]]:
    """What each request moves, in order: a large file alone, small ones in batches (a lone
    small file alone too: a plain ``PUT`` or ``GET`` costs less than a batch of one)."""
    units: List[List[T]] = []
    batch: List[T] = []
    size = 0
    for f in files:
        if size_of(f) > BATCH_FILE_MAX:
            units.append([f])
            continue
        if len(batch) == BATCH_FILES or size + size_of(f) > BATCH_BYTES:
            units.append(batch)
            batch, size = [], 0
        batch.append(f)
        size += size_of(f)
    if batch:
        units.append(batch)
    return units


def _read_part(f: _Planned) -> Tuple[str, bytes, Tuple[str, str]]:
    """A small file read whole, as a part of a batch: its path, content and checksum (the plan's
    SHA-256 if it has one, else the CRC-32 of what was read). A file whose size or modification
    time changed from the start to the end of the read is refused."""
    with open(f.local, "rb") as body:
        check = _unchanged(f.local, body)
        content = body.read()
        check()
    if len(content) != f.size:
        raise CairnError(
            f"{f.local} changed while it was being uploaded ({f.size} bytes when listed, {len(content)} "
            "when read); nothing was stored for it; upload again once it no longer changes"
        )
    if f.sha256 is not None:
        return f.remote, content, ("x-cairn-sha256", f.sha256)
    return f.remote, content, ("x-cairn-crc32", f"{zlib.crc32(content):08x}")


def check_relative(path: str, what: str) -> str:
    """``path`` as a clean relative ``a/b`` path; ``..``, absolute paths and backslashes are refused.

    The server checks again (``RelPath``); this catches mistakes before any file is hashed, and
    guards local writes against unsafe names in a server's answer.
    """
    text = path.replace(os.sep, "/") if os.sep != "/" else path
    if text.startswith("/") or "\\" in text or "\0" in text:
        raise ValueError(f"{what} {path!r} must be a relative path without backslashes")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"{what} {path!r} must not contain '..'")
    return "/".join(parts)


class DataReference:
    """A datastore path as a job input: mounted (a read-only copy) or downloaded into the run.

    In :class:`~cairn.experiment.ScriptRunConfig` arguments it becomes the local folder's path.
    """

    def __init__(self, datastore: "Datastore", path_on_datastore: str = "", mode: str = "mount") -> None:
        if mode not in ("mount", "download"):
            raise ValueError(f"mode {mode!r}: use 'mount' or 'download'")
        self.datastore = datastore
        self.path_on_datastore = check_relative(path_on_datastore or "", "path_on_datastore")
        self.mode = mode

    @property
    def uri(self) -> str:
        """``datastore://NAME/path`` (what the job API takes)."""
        return f"datastore://{self.datastore.name}/{self.path_on_datastore}"

    def path(self, path: str) -> "DataReference":
        """The same datastore and mode at ``path`` (relative to this reference)."""
        joined = "/".join(p for p in (self.path_on_datastore, check_relative(path, "path")) if p)
        return DataReference(self.datastore, joined, self.mode)

    def as_mount(self) -> "DataReference":
        return DataReference(self.datastore, self.path_on_datastore, "mount")

    def as_download(self, path_on_compute: Optional[str] = None) -> "DataReference":
        return DataReference(self.datastore, self.path_on_datastore, "download")

    def to_input(self) -> Dict[str, str]:
        """The job API's input body."""
        return {"path": self.uri, "mode": self.mode}

    def __str__(self) -> str:
        return f"$AZUREML_DATAREFERENCE_{self.datastore.name}"

    def __repr__(self) -> str:
        return f"DataReference({self.uri!r}, mode={self.mode!r})"


class UploadReport:
    """What an upload did: files sent and skipped (already there with the same content)."""

    def __init__(self, uploaded: List[str], skipped: List[str], files: int, total_bytes: int) -> None:
        self.uploaded = uploaded
        self.skipped = skipped
        self.files = files
        self.bytes = total_bytes

    def __repr__(self) -> str:
        return f"UploadReport(files={self.files}, uploaded={len(self.uploaded)}, skipped={len(self.skipped)})"


class Datastore:
    """A named store of files in a workspace (``default`` is created with every workspace)."""

    def __init__(self, workspace: Workspace, name: str, *, _details: Optional[Dict[str, Any]] = None) -> None:
        self.workspace = workspace
        self.name = name
        self._details = _details

    def __repr__(self) -> str:
        return f"Datastore(workspace={self.workspace.name!r}, name={self.name!r})"

    @classmethod
    def get(cls, workspace: Workspace, name: str) -> "Datastore":
        """An existing datastore (``NotFound`` otherwise)."""
        return cls(workspace, name, _details=workspace.call("GET", "datastores", name))

    @classmethod
    def get_default(cls, workspace: Workspace) -> "Datastore":
        return cls.get(workspace, "default")

    def get_details(self) -> Dict[str, Any]:
        self._details = self.workspace.call("GET", "datastores", self.name)
        return dict(self._details)

    # -- data references ---------------------------------------------------------------------

    def as_mount(self) -> DataReference:
        """The datastore's root as a job input, mounted (a read-only copy in the run's folder)."""
        return DataReference(self, "", "mount")

    def as_download(self, path_on_compute: Optional[str] = None) -> DataReference:
        """The datastore's root as a job input, downloaded into the run's folder."""
        return DataReference(self, "", "download")

    def path(self, path: str = "", data_reference_name: Optional[str] = None) -> DataReference:
        """A folder or file of the datastore as a job input (mounted unless ``.as_download()``)."""
        return DataReference(self, path, "mount")

    # -- files -------------------------------------------------------------------------------

    def list_files(self, prefix: str = "") -> List[Dict[str, Any]]:
        """``[{"path", "size", "last_modified"}]`` of every file under ``prefix`` (a folder, or one
        file); ``NotFound`` when ``prefix`` is neither. The datastore's root is always there."""
        prefix = check_relative(prefix, "prefix")
        # The server's largest page: each page of a local directory walks the whole folder.
        query = {"prefix": prefix, "page_size": 10000}
        return list(self.workspace.pages("datastores", self.name, "files", query=query))

    def upload(
        self,
        src_dir: Union[str, Path],
        target_path: Optional[str] = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload a folder's files (or one file) under ``target_path``, keeping relative paths.

        Files already there with the same content are skipped. If any file exists with
        different content and ``overwrite`` is False, nothing is uploaded and ``Conflict`` names
        the files.

        Returns:
            A mount reference to ``target_path``.
        """
        src = Path(src_dir)
        target = check_relative(target_path or "", "target_path")
        found = _collect(src, target)
        if not found:
            warnings.warn(f"{src} holds no files to upload; nothing was uploaded", stacklevel=2)
        self._upload(found, overwrite, show_progress)
        return DataReference(self, target, "mount")

    def upload_files(
        self,
        files: Sequence[Union[str, Path]],
        relative_root: Optional[Union[str, Path]] = None,
        target_path: Optional[str] = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> DataReference:
        """Upload a list of files; their paths relative to ``relative_root`` (default: their common
        folder) are kept under ``target_path``."""
        paths = [Path(f) for f in files]
        if not paths:
            raise ValueError("upload_files: no files given")
        root = Path(relative_root) if relative_root else Path(os.path.commonpath([p.parent for p in paths]))
        target = check_relative(target_path or "", "target_path")
        found = []
        for p in paths:
            if not p.is_file():
                raise ValueError(f"{p} is not a file")
            try:
                rel = p.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                raise ValueError(f"{p} is not under relative_root {root}") from None
            found.append((p, "/".join(x for x in (target, rel) if x), p.stat().st_size))
        self._upload(found, overwrite, show_progress)
        return DataReference(self, target, "mount")

    def _upload(self, found: List[Tuple[Path, str, int]], overwrite: bool, show: bool) -> UploadReport:
        total = sum(size for _, _, size in found)
        if show:
            _say(f"Uploading an estimated of {len(found)} files ({_human(total)}) to datastore {self.name}")
        planned: List[_Planned] = [_Planned(local, remote, size) for local, remote, size in found]
        if not planned:
            # Nothing to send, which is not an error; an empty plan still checks that the
            # datastore is there and that this token may write to it.
            self._ask_plan([], overwrite)
        self._plan(planned, overwrite)
        asked = [f for f in planned if f.action == "checksum"]
        for f in asked:
            f.sha256 = sha256_file(f.local)
        self._plan(asked, overwrite)
        to_send = [f for f in planned if f.action == "upload"]
        skipped = [f.remote for f in planned if f.action == "skip"]
        clashes = [f.reason or f.remote for f in planned if f.action == "clash"]
        if clashes:
            raise Conflict(
                409,
                "conflict",
                f"{len(clashes)} file(s) cannot be stored in datastore \"{self.name}\": {_first_few(clashes, '; ')}; "
                "nothing was uploaded (there a path is a file or a folder, not both, with or without overwrite)",
            )
        conflicts = [f.remote for f in planned if f.action not in ("upload", "skip")]
        if conflicts:
            raise Conflict(
                409,
                "conflict",
                f"{len(conflicts)} file(s) already exist in datastore \"{self.name}\" with different "
                f"content: {_first_few(conflicts, ', ')}; nothing was uploaded; pass overwrite=True "
                "to replace them",
            )
        done = itertools.count(1)  # next() on it is atomic: the threads share it
        http = self.workspace.connection.http
        query = {"overwrite": str(overwrite).lower()}

        def put(f: _Planned) -> None:
            path = self.workspace.path("datastores", self.name, "files", *f.remote.split("/"), query=query)
            with open(f.local, "rb") as body:
                if f.sha256 is not None:
                    call = lambda: http.put_stream(path, body, f.size, {"x-cairn-sha256": f.sha256})  # noqa: E731
                else:
                    call = lambda: http.put_stream_crc32(path, body, _unchanged(f.local, body))  # noqa: E731
                self.workspace.connection.guard(call)

        def send(unit: List[_Planned]) -> List[str]:
            if len(unit) == 1:
                put(unit[0])
            else:
                parts = [_read_part(f) for f in unit]
                path = self.workspace.path("datastores", self.name, "upload-batch", query=query)
                answer = self.workspace.connection.guard(lambda: http.post_files(path, parts))
                if len(answer.get("files", [])) != len(unit):
                    raise ValueError(
                        f"the server stored {len(answer.get('files', []))} files of a batch of {len(unit)}"
                    )
            for f in unit:
                count = next(done)
                if show:
                    _say(f"Uploaded {f.local}, {count} files out of an estimated total of {len(to_send)}")
            return [f.remote for f in unit]

        if show:
            for remote in skipped:
                _say(f"Skipped {remote} (the same content is already there)")
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            uploaded = sorted(remote for sent in pool.map(send, _units(to_send, lambda f: f.size)) for remote in sent)
        if show:
            _say(f"Uploaded {len(uploaded)} files")
        return UploadReport(uploaded, skipped, len(found), total)

    def _plan(self, files: List[_Planned], overwrite: bool) -> None:
        """Asks the server's upload plan for ``files`` (with their SHA-256 where known) and records
        each answer."""
        for start in range(0, len(files), PLAN_CHUNK):
            chunk = files[start : start + PLAN_CHUNK]
            announced: List[Dict[str, Any]] = []
            for f in chunk:
                entry: Dict[str, Any] = {"path": f.remote, "size": f.size}
                if f.sha256 is not None:
                    entry["sha256"] = f.sha256
                announced.append(entry)
            plan = self._ask_plan(announced, overwrite)
            if len(plan["files"]) != len(chunk):
                raise ValueError(
                    f"the server's upload plan answers for {len(plan['files'])} files, not the {len(chunk)} announced"
                )
            for f, answer in zip(chunk, plan["files"]):
                f.action = answer["action"]
                f.reason = answer.get("reason") or ""

    def _ask_plan(self, announced: List[Dict[str, Any]], overwrite: bool) -> Dict[str, Any]:
        return self.workspace.call(
            "POST", "datastores", self.name, "upload-plan", body={"files": announced, "overwrite": overwrite}
        )

    def download(
        self,
        target_path: Union[str, Path],
        prefix: Optional[str] = None,
        overwrite: bool = False,
        show_progress: bool = True,
    ) -> int:
        """Download the files under ``prefix`` (all when None) into the local folder ``target_path``,
        keeping datastore paths, several files at a time. Existing local files are refused (nothing
        is downloaded) unless ``overwrite``. Returns the number of files downloaded."""
        dest = Path(target_path)
        prefix_path = check_relative(prefix or "", "prefix")
        entries = self.list_files(prefix_path)
        if not entries and prefix_path:
            entries = [{"path": prefix_path, "size": 0}]  # a single file (or a 404 below)
        targets = []
        for entry in entries:
            rel = check_relative(entry["path"], "path sent by the server")
            if not rel:
                raise ValueError(f"the server sent an unsafe path {entry['path']!r}")
            targets.append((rel, dest.joinpath(*rel.split("/")), int(entry.get("size", 0))))
        if not overwrite:
            refuse_existing([local for _, local, _ in targets], "overwrite=True")
        download_all(self.workspace, ("datastores", self.name), ("files",), targets, show_progress)
        return len(targets)


def download_all(workspace: Workspace, owner: Sequence[str], files: Sequence[str],
                 targets: List[Tuple[str, Path, int]], show_progress: bool = False) -> None:
    """Downloads ``(remote path, local path, size)`` of a datastore's files or a run's artifacts
    (``owner``: ``("datastores", NAME)`` or ``("runs", ID)``; one file is ``owner/files/PATH``),
    several requests at once: small files in batches (``owner/download-batch``), larger ones one by
    one, each written whole or not at all."""
    done = itertools.count(1)
    http = workspace.connection.http
    batch_path = workspace.path(*owner, "download-batch")

    def fetch(unit: List[Tuple[str, Path, int]]) -> None:
        if len(unit) == 1:
            rel, local, _ = unit[0]
            download_to(workspace, (*owner, *files, *rel.split("/")), local)
        else:
            names = [rel for rel, _, _ in unit]
            contents = workspace.connection.guard(lambda: http.fetch_files(batch_path, names))
            for (_, local, _), content in zip(unit, contents):
                _write_whole(local, content)
        for rel, _, _ in unit:
            count = next(done)
            if show_progress:
                _say(f"Downloaded {rel}, {count} files out of an estimated total of {len(targets)}")

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        for _ in pool.map(fetch, _units(targets, lambda t: t[2])):
            pass


def refuse_existing(locals_: Sequence[Path], flag: str) -> None:
    """Refuses a download that would replace local files (``FileExistsError`` naming them), before
    anything is downloaded; ``flag`` is the argument that allows it."""
    existing = [str(local) for local in locals_ if local.exists()]
    if existing:
        raise FileExistsError(
            f"{len(existing)} local file(s) already exist: {_first_few(existing, ', ')}; nothing was "
            f"downloaded; pass {flag} to replace them"
        )


def download_to(workspace: Workspace, segments: Sequence[str], local: Path, sha256: Optional[str] = None) -> int:
    """GET ``/api/v1/workspaces/<ws>/<segments>`` into ``local`` via a temporary file, renamed into
    place once complete (and, given ``sha256``, once the content is found to have it)."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(local)
    path = workspace.path(*segments)
    try:
        with open(partial, "wb") as out:
            sink = _Hashing(out) if sha256 else out
            size = workspace.connection.guard(lambda: workspace.connection.http.download(path, sink))
        if sha256 and sink.hexdigest() != sha256.lower():
            raise CairnError(
                f"{'/'.join(segments[-1:])} arrived with SHA-256 {sink.hexdigest()}, expected {sha256}: download again"
            )
        os.replace(partial, local)
        return size
    finally:
        if partial.exists():
            partial.unlink()


def _partial(local: Path) -> Path:
    """The temporary name a download is written to before it is renamed to ``local``."""
    return local.with_name(f".{local.name}.cairn-partial")


def _write_whole(local: Path, content: bytes) -> None:
    """``content`` written to ``local`` through its temporary name: never seen half-written."""
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial(local)
    try:
        partial.write_bytes(content)
        os.replace(partial, local)
    finally:
        if partial.exists():
            partial.unlink()


class _Hashing:
    """A file being written that keeps the SHA-256 of what went into it."""

    def __init__(self, out: Any) -> None:
        self._out, self._digest = out, hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self._digest.update(chunk)
        return self._out.write(chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _collect(src: Path, target: str) -> List[Tuple[Path, str, int]]:
    """``(local, remote, size)`` of the regular files to upload, in path order (none for a folder
    without files)."""
    if not src.exists():
        raise FileNotFoundError(f"{src} does not exist")
    join = lambda rel: "/".join(x for x in (target, rel) if x)  # noqa: E731
    if src.is_file():
        return [(src, join(src.name), src.stat().st_size)]
    found = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            local = Path(dirpath) / name
            if not local.is_file():
                continue
            rel = local.relative_to(src).as_posix()
            found.append((local, join(check_relative(rel, "file")), local.stat().st_size))
    return found


def _first_few(items: List[str], sep: str) -> str:
    """The first 20 of ``items``, joined, and how many more there are."""
    more = f" and {len(items) - 20} more" if len(items) > 20 else ""
    return sep.join(items[:20]) + more


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _say(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
