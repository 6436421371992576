"""Turn ``upload_file``'s ``path_or_stream`` into a re-readable binary source with size and SHA-256.

The server needs the checksum in a header before the body, so the content is read twice:
once to hash it, once to send it. Files and seekable binary streams are re-read in place
(constant memory); other streams (pipes, text streams) are copied to a temporary file while
hashing. Nothing here talks to the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import IO, Any, Optional

from ._client import CHUNK_BYTES

PathOrStream = Any  # str, os.PathLike or a file-like object with read()


def check_artifact_name(name: Any) -> str:
    """Artifact names are relative POSIX paths (``outputs/model.pkl``); raise ValueError otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"artifact name must be a non-empty string, not {name!r}")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(
            f"artifact name {name!r} must be a relative path like 'outputs/model.pkl' "
            "(no leading '/', no empty, '.' or '..' parts, no backslashes)"
        )
    return name


class Source:
    """A binary source positioned for upload; use as a context manager (closes what it opened)."""

    def __init__(self, path_or_stream: PathOrStream) -> None:
        self.size = 0
        self.sha256 = ""
        self.description = ""
        self._file: Optional[IO[bytes]] = None
        self._owned = False
        self._start = 0
        if isinstance(path_or_stream, (str, bytes, os.PathLike)):
            self._open_path(os.fsdecode(path_or_stream))
        elif callable(getattr(path_or_stream, "read", None)):
            self._adopt_stream(path_or_stream)
        else:
            raise TypeError(
                f"upload_file expects a path or a readable stream, not {type(path_or_stream).__name__}"
            )

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._owned and self._file is not None:
            self._file.close()

    def rewind(self) -> IO[bytes]:
        """The source, positioned at the first byte to send (call before every attempt)."""
        assert self._file is not None
        self._file.seek(self._start)
        return self._file

    def _open_path(self, path: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"upload_file: {path!r} is not a file")
        self._file = open(path, "rb")
        self._owned = True
        self.description = path
        self._hash(self._file)

    def _adopt_stream(self, stream: Any) -> None:
        self.description = getattr(stream, "name", None) or type(stream).__name__
        if not isinstance(stream, io.TextIOBase) and _seekable(stream):
            self._file = stream
            self._start = stream.tell()
            self._hash(stream)
            return
        # Not re-readable, or text: keep a binary copy on disk while hashing.
        spool = tempfile.TemporaryFile()
        self._file, self._owned = spool, True
        self._hash(stream, copy_to=spool)

    def _hash(self, stream: Any, copy_to: Optional[IO[bytes]] = None) -> None:
        digest = hashlib.sha256()
        size = 0
        while True:
            chunk = stream.read(CHUNK_BYTES)
            if not chunk:
                break
            if isinstance(chunk, str):
                chunk = chunk.encode("utf-8")
            digest.update(chunk)
            size += len(chunk)
            if copy_to is not None:
                copy_to.write(chunk)
        self.size, self.sha256 = size, digest.hexdigest()


def _seekable(stream: Any) -> bool:
    try:
        return bool(stream.seekable()) and callable(getattr(stream, "tell", None))
    except (AttributeError, OSError, ValueError):
        return False
