"""A small HTTP client of the run endpoints of Cairn's REST API (``http.client``, no dependencies).

Every call opens its own connection with a socket timeout, sends the run's bearer token and
turns failures into :class:`CairnError` values that say whether retrying may help. This
module knows nothing about batching, threads or retries; see ``_batcher.py`` and ``_retry.py``.
"""

from __future__ import annotations

import http.client
import json
import ssl
from typing import IO, Any, Dict, Optional, Tuple
from urllib.parse import quote, urlsplit

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


class Client:
    """HTTP client scoped to one run: ``{uri}/api/v1/workspaces/{ws}/runs/{run_id}``."""

    def __init__(
        self, tracking_uri: str, workspace: str, run_id: str, token: str, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"tracking URI {tracking_uri!r} must look like http://host:port or https://host"
            )
        self.tracking_uri = tracking_uri
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._token = token
        self._timeout = timeout
        self._workspace_path = f"{parts.path.rstrip('/')}/api/v1/workspaces/{quote(workspace, safe='')}"
        self._run_path = f"{self._workspace_path}/runs/{quote(run_id, safe='')}"

    # -- run endpoints ----------------------------------------------------------------------

    def log_batch(self, body: Dict[str, Any]) -> None:
        """``POST …/log-batch`` with an already encoded body (metrics, params, tags)."""
        self._json("POST", self._run_path + "/log-batch", body)

    def get_metrics(self) -> Dict[str, Any]:
        """``GET …/metrics``: ``{"metrics": {key: [{"value", "step", "timestamp"}, …]}}``."""
        return self._json("GET", self._run_path + "/metrics")

    def get_run(self) -> Dict[str, Any]:
        """``GET`` the run's JSON (id, status, experiment, params, tags, …)."""
        return self._json("GET", self._run_path)

    def set_status(self, status: str) -> Dict[str, Any]:
        """``PATCH`` the run's status (``Completed``, ``Failed`` or ``Canceled``)."""
        return self._json("PATCH", self._run_path, {"status": status})

    def put_artifact(self, name: str, body: IO[bytes], size: int, sha256: str) -> Dict[str, Any]:
        """Stream ``size`` bytes of ``body`` (from its current position) to ``…/artifacts/{name}``."""
        path = f"{self._run_path}/artifacts/{quote(name, safe='/')}"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(size),
            "x-cairn-sha256": sha256,
        }
        status, data = self._exchange("PUT", path, headers, body=body, size=size)
        return self._result("PUT", path, status, data)

    # -- workspace endpoints ----------------------------------------------------------------

    def register_model(self, name: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """``POST …/workspaces/{ws}/models/{name}/versions``: the next version of model ``name``."""
        return self._json("POST", f"{self._workspace_path}/models/{quote(name, safe='')}/versions", body)

    # -- plumbing ---------------------------------------------------------------------------

    def _json(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
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
            raise ServerError(status, code, message, method, path)
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

    def _exchange(
        self,
        method: str,
        path: str,
        headers: Dict[str, str],
        payload: Optional[bytes] = None,
        body: Optional[IO[bytes]] = None,
        size: int = 0,
    ) -> Tuple[int, bytes]:
        """Send one request and read the whole (small) answer; network failures become ConnectionFailed."""
        conn = self._connection()
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            conn.putheader("Authorization", f"Bearer {self._token}")
            conn.putheader("User-Agent", f"cairn-python/{_version}")
            for name, value in headers.items():
                conn.putheader(name, value)
            if payload is None and body is None and method not in ("GET", "HEAD"):
                conn.putheader("Content-Length", "0")
            conn.endheaders()
            try:
                if payload is not None:
                    conn.send(payload)
                elif body is not None:
                    _send_stream(conn, body, size)
            except OSError:
                # The server may have refused early (401, 413 …) and closed its side: its answer
                # says more than the broken pipe does.
                pass
            response = conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ConnectionFailed(
                f"cannot reach {self.tracking_uri} ({method} {path}): {error.__class__.__name__}: {error}"
            ) from error
        finally:
            conn.close()


def _send_stream(conn: http.client.HTTPConnection, body: IO[bytes], size: int) -> None:
    """Copy exactly ``size`` bytes from ``body`` to the connection, one chunk at a time."""
    left = size
    while left > 0:
        chunk = body.read(min(CHUNK_BYTES, left))
        if not chunk:
            raise CairnError(f"the stream ended {left} bytes early (was the file changed while uploading?)")
        conn.send(chunk)
        left -= len(chunk)


def _error_body(status: int, data: bytes) -> Tuple[str, str]:
    """Read ``{"error": {"code", "message"}}``, falling back to the raw text."""
    text = data.decode("utf-8", errors="replace").strip()
    try:
        error = json.loads(text)["error"]
        return str(error.get("code") or f"http_{status}"), str(error.get("message") or text)
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"http_{status}", text[:500] or http.client.responses.get(status, "error")
