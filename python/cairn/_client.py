"""A small HTTP client of Cairn's REST API (``http.client``, no dependencies): ``Http`` for any call
(the SDK), ``Client`` for one run's endpoints (the in-job runtime).

Every call opens its own connection with a socket timeout, sends the run's bearer token and
turns failures into :class:`CairnError` values that say whether retrying may help. This
module knows nothing about batching, threads or retries; see ``_batcher.py`` and ``_retry.py``.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import zlib
from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlencode, urlsplit

from ._version import __version__ as _version

#: Size of the pieces an artifact is streamed in.
CHUNK_BYTES = 1 << 20

#: Statuses below 500 that are worth retrying (timeouts and rate limits, not bad requests).
_RETRYABLE_4XX = frozenset({408, 429})


class CairnError(Exception):
    """Base class of the errors the runtime raises for server or network failures."""

    #: Whether the same request may succeed if tried again later.
    retryable: bool = False


class ServerError(CairnError):
    """The server answered with an error status.

    Attributes:
        status: the HTTP status code.
        code: the stable error code of the ``{"error": {"code", "message"}}`` body (or ``"http_<status>"``).
        message: the server's explanation.
    """

    def __init__(self, status: int, code: str, message: str, method: str = "", path: str = "") -> None:
        self.status = status
        self.code = code
        self.message = message
        self.retryable = status >= 500 or status in _RETRYABLE_4XX
        where = f" ({method} {path})" if method else ""
        super().__init__(f"HTTP {status} {code}: {message}{where}")


class ConnectionFailed(CairnError):
    """The server could not be reached or the connection broke (always retryable)."""

    retryable = True


class BadRequest(ServerError):
    """400 or 422: the request itself is wrong (the message names the field or rule)."""


class Unauthorized(ServerError):
    """401: the token is missing, wrong or revoked."""


class Forbidden(ServerError):
    """403: the token's role or workspace scope does not allow this."""


class NotFound(ServerError):
    """404: the named workspace, datastore, run, environment … does not exist."""


class Conflict(ServerError):
    """409: the name is taken, or files differ and overwriting was not asked."""


_ERROR_CLASSES = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 422: BadRequest}


def server_error(status: int, code: str, message: str, method: str = "", path: str = "") -> ServerError:
    """The most precise :class:`ServerError` subclass for ``status``."""
    return _ERROR_CLASSES.get(status, ServerError)(status, code, message, method, path)


class Http:
    """JSON-over-HTTP to ``{base_url}/api/v1/…`` with a bearer token; one connection per call.

    The run-scoped :class:`Client` (in-job runtime) and the SDK's workspace client share it.
    """

    def __init__(self, base_url: str, token: Optional[str], timeout: float = 10.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL {base_url!r} must look like http://host:port or https://host")
        self.base_url = base_url.rstrip("/")
        self.tracking_uri = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._token = token
        self._timeout = timeout

    def with_timeout(self, timeout: float) -> "Http":
        """The same server and token with another socket timeout (for calls that wait long)."""
        clone = Http(self.base_url, self._token, timeout)
        clone._prefix = self._prefix
        return clone

    def api_path(self, *segments: str, query: Optional[Dict[str, Any]] = None) -> str:
        """``/api/v1/seg/seg…?query`` with every segment percent-encoded (``/`` kept only in the last
        one when it is a file path, so pass file paths pre-split)."""
        path = self._prefix + "/api/v1/" + "/".join(quote(s, safe="") for s in segments)
        if query:
            pairs = {k: v for k, v in query.items() if v is not None}
            if pairs:
                path += "?" + urlencode(pairs)
        return path

    def call(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        """One JSON request to ``path`` (from :meth:`api_path`); the decoded answer, or an error."""
        return self._json(method, path, body)

    def put_stream(self, path: str, body: IO[bytes], size: int, headers: Dict[str, str]) -> Any:
        """Stream ``size`` bytes of ``body`` with ``PUT`` and return the JSON answer."""
        all_headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        all_headers.update(headers)
        status, data = self._exchange("PUT", path, all_headers, body=body, size=size)
        return self._result("PUT", path, status, data)

    def put_stream_crc32(self, path: str, body: IO[bytes], check: Callable[[], None]) -> Any:
        """Stream ``body`` to its end with ``PUT``, chunked, then its CRC-32 (zlib's) as an
        ``x-cairn-crc32`` trailer, and return the JSON answer. ``check`` runs once the body is
        read and before the trailer goes: if it raises, the request is cut short and the server
        keeps nothing of it."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Transfer-Encoding": "chunked",
            "Trailer": "x-cairn-crc32",
        }
        status, data = self._exchange("PUT", path, headers, body=body, chunked_check=check)
        return self._result("PUT", path, status, data)

    def post_files(self, path: str, files: Sequence[Tuple[str, bytes, Tuple[str, str]]]) -> Any:
        """``POST`` small files in one ``multipart/form-data`` body and return the JSON answer.

        ``files`` holds ``(name, content, (checksum header, hex value))``: a part per file, its
        name as the part's ``filename`` and its checksum as a header of the part (what the
        server's ``…/upload-batch`` reads)."""
        boundary = _boundary(content for _, content, _ in files)
        pieces = []
        for name, content, (header, value) in files:
            pieces.append(
                (
                    f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; {_filename_param(name)}\r\n"
                    f"Content-Type: application/octet-stream\r\n{header}: {value}\r\n\r\n"
                ).encode("utf-8")
            )
            pieces.append(content)
            pieces.append(b"\r\n")
        pieces.append(f"--{boundary}--\r\n".encode("ascii"))
        payload = b"".join(pieces)
        headers = {
            "Accept": "application/json",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(payload)),
        }
        status, data = self._exchange("POST", path, headers, payload=payload)
        return self._result("POST", path, status, data)

    def fetch_files(self, path: str, names: Sequence[str]) -> List[bytes]:
        """``POST`` ``{"paths": names}`` and return the files of the ``multipart/mixed`` answer (what
        the server's ``…/download-batch`` sends), in order, each checked to be the file asked for
        and whole (every part declares its length)."""
        payload = json.dumps({"paths": list(names)}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        answer: Dict[str, str] = {}
        status, data = self._exchange("POST", path, headers, payload=payload, answer_headers=answer)
        if status >= 400:
            code, message = _error_body(status, data)
            raise server_error(status, code, message, "POST", path)
        try:
            parts = _mixed_parts(answer.get("content-type", ""), data)
        except ValueError as error:
            raise ServerError(status, "invalid_response", str(error), "POST", path) from None
        got = [name for name, _ in parts]
        if got != list(names):
            raise ServerError(
                status, "invalid_response", f"the batch holds {got[:3]}… where {list(names)[:3]}… was asked"
            )
        return [content for _, content in parts]

    def download(self, path: str, out: IO[bytes]) -> int:
        """``GET`` ``path`` and copy the body into ``out`` chunk by chunk; returns the bytes written."""
        conn = self._connection()
        try:
            try:
                conn.putrequest("GET", path, skip_accept_encoding=True)
                self._auth_headers(conn)
                conn.endheaders()
                response = conn.getresponse()
                if response.status >= 400:
                    code, message = _error_body(response.status, response.read())
                    raise server_error(response.status, code, message, "GET", path)
                written = 0
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        return written
                    out.write(chunk)
                    written += len(chunk)
            except (OSError, http.client.HTTPException) as error:
                raise ConnectionFailed(
                    f"cannot reach {self.tracking_uri} (GET {path}): {error.__class__.__name__}: {error}"
                ) from error
        finally:
            conn.close()

    def get_text(self, path: str) -> Tuple[str, Dict[str, str]]:
        """``GET`` ``path``: the (small) text answer and its headers, names in lower case."""
        headers: Dict[str, str] = {}
        status, data = self._exchange("GET", path, {}, answer_headers=headers)
        if status >= 400:
            code, message = _error_body(status, data)
            raise server_error(status, code, message, "GET", path)
        return data.decode("utf-8", "replace"), headers

    # -- plumbing ---------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Optional[Any] = None) -> Any:
        payload: Optional[bytes] = None
        headers = {"Accept": "application/json"}
        if body is not None:
            # allow_nan=False: a stray NaN would make the body invalid JSON; callers encode them.
            payload = json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
            headers["Content-Length"] = str(len(payload))
        status, data = self._exchange(method, path, headers, payload=payload)
        return self._result(method, path, status, data)

    def _result(self, method: str, path: str, status: int, data: bytes) -> Any:
        if status >= 400:
            code, message = _error_body(status, data)
            raise server_error(status, code, message, method, path)
        if not data.strip():
            return {}
        try:
            return json.loads(data.decode("utf-8"))
        except ValueError:
            raise ServerError(status, "invalid_response", "the server's answer is not JSON", method, path) from None

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _auth_headers(self, conn: http.client.HTTPConnection) -> None:
        if self._token:
            conn.putheader("Authorization", f"Bearer {self._token}")
        conn.putheader("User-Agent", f"cairn-python/{_version}")

    def _exchange(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        payload: Optional[bytes] = None,
        body: Optional[IO[bytes]] = None,
        size: int = 0,
        chunked_check: Optional[Callable[[], None]] = None,
        answer_headers: Optional[Dict[str, str]] = None,
    ) -> Tuple[int, bytes]:
        """Send one request and read the whole (small) answer, its headers (names in lower case)
        into ``answer_headers`` when given; network failures become ConnectionFailed."""
        conn = self._connection()
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            self._auth_headers(conn)
            for name, value in headers.items():
                conn.putheader(name, value)
            if payload is None and body is None and method not in ("GET", "HEAD"):
                conn.putheader("Content-Length", "0")
            conn.endheaders()
            try:
                if payload is not None:
                    conn.send(payload)
                elif body is not None and chunked_check is not None:
                    _send_chunked_crc32(conn, body, chunked_check)
                elif body is not None:
                    _send_stream(conn, body, size)
            except OSError:
                # The server may have refused early (401, 413 …) and closed its side: its answer
                # says more than the broken pipe does.
                pass
            response = conn.getresponse()
            if answer_headers is not None:
                answer_headers.update((name.lower(), value) for name, value in response.getheaders())
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ConnectionFailed(
                f"cannot reach {self.tracking_uri} ({method} {path}): {error.__class__.__name__}: {error}"
            ) from error
        finally:
            conn.close()


class Client(Http):
    """HTTP client scoped to one run: ``{uri}/api/v1/workspaces/{ws}/runs/{run_id}``."""

    def __init__(
        self, tracking_uri: str, workspace: str, run_id: str, token: str, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"tracking URI {tracking_uri!r} must look like http://host:port or https://host"
            )
        super().__init__(tracking_uri, token, timeout)
        self.workspace = workspace
        self.run_id = run_id
        self.token = token
        self._runs_path = self.api_path("workspaces", workspace, "runs")
        self._run_path = self.api_path("workspaces", workspace, "runs", run_id)

    # -- run endpoints ----------------------------------------------------------------------

    def log_batch(self, body: Dict[str, Any]) -> None:
        """``POST …/log-batch`` with an already encoded body (metrics, params, tags)."""
        self._json("POST", self._run_path + "/log-batch", body)

    def get_metrics(self) -> Dict[str, Any]:
        """``GET …/metrics``: ``{"metrics": {key: [{"value", "step", "timestamp"}, …]}}``."""
        return self._json("GET", self._run_path + "/metrics")

    def add_properties(self, properties: Dict[str, str]) -> Dict[str, Any]:
        """``POST …/properties``; a property already set to another value is a 409 ``conflict``."""
        return self._json("POST", self._run_path + "/properties", {"properties": properties})

    def create_child_run(self, experiment: str, display_name: str) -> Dict[str, Any]:
        """``POST …/runs`` a run whose parent is this client's run; returns the new run's JSON."""
        body = {"experiment": experiment, "display_name": display_name, "parent_run_id": self.run_id}
        return self._json("POST", self._runs_path, body)

    def register_model(self, name: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """``POST …/workspaces/{ws}/models/{name}/versions``: the next version of model ``name``."""
        return self._json("POST", self.api_path("workspaces", self.workspace, "models", name, "versions"), body)

    def get_run(self) -> Dict[str, Any]:
        """``GET`` the run's JSON (id, status, experiment, params, tags, …)."""
        return self._json("GET", self._run_path)

    def set_status(self, status: str) -> Dict[str, Any]:
        """``PATCH`` the run's status (``Completed``, ``Failed`` or ``Canceled``)."""
        return self._json("PATCH", self._run_path, {"status": status})

    def put_artifact(self, name: str, body: IO[bytes], size: int, sha256: str) -> Dict[str, Any]:
        """Stream ``size`` bytes of ``body`` (from its current position) to ``…/artifacts/{name}``."""
        path = f"{self._run_path}/artifacts/{quote(name, safe='/')}"
        return self.put_stream(path, body, size, {"x-cairn-sha256": sha256})


def _send_stream(conn: http.client.HTTPConnection, body: IO[bytes], size: int) -> None:
    """Copy exactly ``size`` bytes from ``body`` to the connection, one chunk at a time."""
    left = size
    while left > 0:
        chunk = body.read(min(CHUNK_BYTES, left))
        if not chunk:
            raise CairnError(f"the stream ended {left} bytes early (was the file changed while uploading?)")
        conn.send(chunk)
        left -= len(chunk)


def _send_chunked_crc32(conn: http.client.HTTPConnection, body: IO[bytes], check: Callable[[], None]) -> None:
    """Copy ``body`` to its end as HTTP/1.1 chunks, then, if ``check()`` passes, the last chunk
    with the CRC-32 of what was sent as its ``x-cairn-crc32`` trailer."""
    crc = 0
    while True:
        chunk = body.read(CHUNK_BYTES)
        if not chunk:
            break
        crc = zlib.crc32(chunk, crc)
        conn.send(b"%x\r\n" % len(chunk))
        conn.send(chunk)
        conn.send(b"\r\n")
    check()
    conn.send(b"0\r\nx-cairn-crc32: %08x\r\n\r\n" % crc)


def _boundary(contents: Any) -> str:
    """A multipart boundary that occurs in none of ``contents`` (random, so a clash is a
    one-in-2^128 event, but checked all the same: a clash would cut a file short)."""
    blobs = list(contents)
    while True:
        boundary = "cairn-" + os.urandom(16).hex()
        marker = boundary.encode("ascii")
        if not any(marker in blob for blob in blobs):
            return boundary


def _filename_param(name: str) -> str:
    """The part's ``filename`` parameter, UTF-8 in quotes with ``\\`` and ``"`` escaped, as
    reqwest (the CLI's client) writes it: RFC 7578 rules out ``filename*=``, and the server reads
    the quoted form."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\\r").replace("\n", "\\\n")
    return f'filename="{escaped}"'


def _mixed_parts(content_type: str, data: bytes) -> List[Tuple[str, bytes]]:
    """``(path, content)`` of each part of a download batch (``multipart/mixed``; each part with its
    path as ``Content-Disposition: attachment; filename*=UTF-8''PATH`` and its ``Content-Length``).
    ``ValueError`` saying what is wrong for anything else."""
    kind, _, params = content_type.partition(";")
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if kind.strip().lower() != "multipart/mixed" or not boundary:
        raise ValueError(f"the answer is {content_type!r}, not multipart/mixed with a boundary")
    delimiter = b"--" + boundary.encode("ascii")
    parts: List[Tuple[str, bytes]] = []
    at = 0
    while not data.startswith(delimiter + b"--", at):
        if not data.startswith(delimiter + b"\r\n", at):
            raise ValueError(f"part {len(parts) + 1} does not start with the boundary")
        head_end = data.find(b"\r\n\r\n", at)
        if head_end < 0:
            raise ValueError(f"part {len(parts) + 1} has no end to its headers")
        headers = {}
        for line in data[at + len(delimiter) + 2 : head_end].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        encoded = disposition.partition("filename*=")[2].split(";")[0].strip()
        if not encoded.lower().startswith("utf-8''") or not headers.get("content-length", "").isdigit():
            raise ValueError(f"part {len(parts) + 1} does not name its file and length: {headers}")
        start = head_end + 4
        end = start + int(headers["content-length"])
        if data[end : end + 2] != b"\r\n":
            raise ValueError(f"part {len(parts) + 1} is not as long as it declares")
        parts.append((unquote(encoded[7:], errors="strict"), data[start:end]))
        at = end + 2
    return parts


def _error_body(status: int, data: bytes) -> Tuple[str, str]:
    """Read ``{"error": {"code", "message"}}``, falling back to the raw text."""
    text = data.decode("utf-8", errors="replace").strip()
    try:
        error = json.loads(text)["error"]
        return str(error.get("code") or f"http_{status}"), str(error.get("message") or text)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"http_{status}", text[:500] or http.client.responses.get(status, "error")
