"""One replica of an online deployment: ``python -m cairn.replica``.

The Rust gateway owns HTTP, keys, traffic split, queues, timeouts and supervision. This process
only loads the scoring code once and answers requests the gateway forwards over a Unix socket.

Environment
-----------
``CAIRN_REPLICA_SOCKET``      path of the Unix socket to listen on (required; ≤ 107 bytes).
``AZUREML_MODEL_DIR``         the deployment's model files (read-only; see ``cairn.serving``).
``CAIRN_SCORING_SCRIPT``      path of ``score.py``. Its folder goes first on ``sys.path`` and is
                              exported as ``AML_APP_ROOT``; the working directory is not changed.
``CAIRN_SCORING_MODE``        ``script`` (default, needs ``CAIRN_SCORING_SCRIPT``) or ``mlflow``
                              (no script: the MLflow pyfunc model in ``AZUREML_MODEL_DIR`` answers
                              MLflow ``/invocations`` bodies, see ``_mlflow_scoring``).
``CAIRN_REPLICA_CONCURRENCY`` how many ``run()`` calls may overlap in this process (default 1,
                              like the reference's gunicorn sync worker: score.py code is rarely
                              thread-safe). The gateway sets 1 and sends a process one request at a
                              time; an instance's parallelism is its ``WORKER_COUNT`` processes.
                              Pings and swagger never wait for it.
``CAIRN_REPLICA_MAX_BODY_BYTES`` largest request body accepted (default 104857600).
``CAIRN_REPLICA_PARENT_PID``  the gateway's pid (set by it): the replica exits when its parent is
                              no longer that process, even if it was already gone at start.

Lifecycle
---------
The script is imported and ``init()`` called before the socket exists, and what they made is then
frozen out of the garbage collector's passes (``gc.freeze``). On success the socket is
bound under a temporary name, listened on, then renamed to ``CAIRN_REPLICA_SOCKET`` (atomic), and
``cairn replica ready …`` is written to stderr: the path appearing means ready. If the import,
the checks of ``init``/``run`` or ``init()`` fail, the traceback and (part of) the model folder's
tree go to stderr and the process exits with code 3 (the reference server's code); a
configuration error exits with code 2. SIGTERM or SIGINT: stop accepting, remove the socket, let
requests in flight finish (up to 30 s), exit 0. The replica also exits when its parent dies, and
never waits for threads the script started.

Protocol (one request at a time per connection; any number of connections)
--------------------------------------------------------------------------
A connection's frames are read one at a time: the next request frame is read only once the
previous one has been answered, so answers come back in the order of the requests, and a client
may send a request before the previous answer has come (the gateway sends a worker its next
request that way, so that it waits in the socket instead of a round trip away).

Every message, both ways, is one frame::

    u32 big-endian header length H | u32 big-endian body length B | H bytes header | B bytes body

The header is a UTF-8 JSON object; the body is raw bytes (B may be 0). Request header::

    {"id": <any JSON, echoed>, "route": "/score", "method": "POST", "query": "a=1&b=2",
     "content_type": "application/json", "headers": {"x-request-id": "…", …},
     "deadline_ns": 81234567890123}

``route`` is required; ``method`` defaults to POST for ``/score`` and ``/invocations``, else GET;
``query`` (without ``?``), ``content_type``, ``headers`` (the request headers the gateway
chooses to forward, minus ``Authorization``; names case-insensitive) and ``deadline_ns`` are
optional. ``deadline_ns`` is when the gateway stops waiting for the answer, in
``time.monotonic_ns()`` terms (CLOCK_MONOTONIC: gateway and replica share the machine): a scoring
request read after it is answered 504 without calling ``run()`` (the gateway has already answered
its client). Routes:

* ``ping`` — liveness and readiness; answered even while ``run()`` is busy. Body:
  ``{"status": "ready", "pid", "mode", "in_flight", "served", "uptime_s"}``.
* ``/`` — GET: 200 ``Healthy`` (the reference's health route).
* ``/score`` — the scoring script's ``run()`` with the reference's semantics (``_scoring``); in
  ``mlflow`` mode the same as ``/invocations``.
* ``/invocations`` — ``mlflow`` mode only.
* ``/v2/infer`` — ``mlflow`` mode only: an Open Inference Protocol v2 infer body the gateway has
  checked against the model's signature; answers ``{"outputs": […]}`` or ``{"error": …}``.
* ``/swagger.json`` — GET, ``query`` may hold ``version=2|3|3.1``.
* anything else — 404 ``{"message": …}``.

Response header::

    {"id": <echoed>, "status": 200, "content_type": "application/json",
     "headers": {"x-ms-run-fn-exec-ms": "0.412", "x-ms-run-function-failed": "False", …}}

A request header that is not a JSON object or has fields of the wrong type gets a 400 response
(the connection stays usable). A frame that cannot be read (a length over the limits — header
1 MiB, body ``CAIRN_REPLICA_MAX_BODY_BYTES`` — or the peer closing mid-frame) gets a best-effort
400 frame with ``"id": null`` and the connection is closed; the replica keeps serving others.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import Any, Dict, Optional, Tuple

from ._scoring import Reply, UserScript, error_reply, generic_swagger, json_reply

MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_BODY_BYTES = 100 << 20
EXIT_CONFIG = 2
EXIT_SCRIPT = 3
DRAIN_SECONDS = 30.0
_PREFIX = struct.Struct(">II")
# json.dumps with separators builds a new encoder per call; a frame header is encoded per request.
_encode_header = json.JSONEncoder(separators=(",", ":")).encode


class ProtocolError(Exception):
    """The peer sent something that is not a frame; the connection cannot continue."""


# -- framing (also used by tests and the benchmark as the client side) --------------------------

def _frame_head(header: Dict[str, Any], body_len: int) -> bytes:
    head = _encode_header(header).encode()
    return _PREFIX.pack(len(head), body_len) + head


def encode_frame(header: Dict[str, Any], body: bytes = b"") -> bytes:
    return _frame_head(header, len(body)) + body


def _read_exact(reader: Any, n: int, what: str) -> bytes:
    data = reader.read(n) if n else b""
    if len(data) != n:
        raise ProtocolError(f"connection closed in the middle of a frame's {what} "
                            f"({len(data)} of {n} bytes)")
    return data


def read_frame(reader: Any, max_body: int = DEFAULT_MAX_BODY_BYTES) -> Optional[Tuple[Any, bytes]]:
    """One frame from a buffered binary reader: ``(header, body)``, or None at a clean EOF. The
    header is the parsed JSON, whatever its type (the caller checks it); a header that is not JSON
    comes back as a ``ProtocolError`` instance, since the frame was read whole and the connection
    can go on."""
    prefix = reader.read(_PREFIX.size)
    if not prefix:
        return None
    if len(prefix) != _PREFIX.size:
        raise ProtocolError(f"connection closed in the middle of a frame's length prefix "
                            f"({len(prefix)} of {_PREFIX.size} bytes)")
    head_len, body_len = _PREFIX.unpack(prefix)
    if head_len > MAX_HEADER_BYTES:
        raise ProtocolError(f"frame header of {head_len} bytes exceeds the limit of {MAX_HEADER_BYTES}")
    if body_len > max_body:
        raise ProtocolError(f"frame body of {body_len} bytes exceeds the limit of {max_body}")
    head = _read_exact(reader, head_len, "header")
    body = _read_exact(reader, body_len, "body")
    try:
        header = json.loads(head)
    except ValueError as e:
        header = ProtocolError(f"frame header is not valid UTF-8 JSON: {e}")
    return header, body


# -- requests -----------------------------------------------------------------------------------

class _Request:
    __slots__ = ("id", "route", "method", "query", "content_type", "headers", "deadline_ns")

    def __init__(self, raw: Any) -> None:
        if isinstance(raw, ProtocolError):
            raise ValueError(str(raw))
        if not isinstance(raw, dict):
            raise ValueError(f"frame header must be a JSON object, got {type(raw).__name__}")
        self.id = raw.get("id")
        self.route = raw.get("route")
        if not isinstance(self.route, str) or not self.route:
            raise ValueError("frame header needs \"route\" (a non-empty string)")
        default_method = "POST" if self.route in ("/score", "/invocations", "/v2/infer") else "GET"
        self.method = raw.get("method", default_method)
        self.query = raw.get("query", "")
        self.content_type = raw.get("content_type", "")
        headers = raw.get("headers", {})
        for field in ("method", "query", "content_type"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"frame header field {field!r} must be a string")
        self.deadline_ns = raw.get("deadline_ns")
        if self.deadline_ns is not None and (not isinstance(self.deadline_ns, int)
                                             or isinstance(self.deadline_ns, bool)):
            raise ValueError("frame header field 'deadline_ns' must be an integer")
        self.method = self.method.upper()
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("frame header field 'headers' must be an object of strings")
        self.headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if not self.content_type:
            self.content_type = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")


class Replica:
    """The loaded scoring code plus the counters that ``ping`` reports."""

    def __init__(self, mode: str, scorer: Any, concurrency: int) -> None:
        self.mode = mode
        self.scorer = scorer
        # A plain lock when run() is serial: the semaphore is Python code, the lock is not.
        self._slots = threading.Lock() if concurrency == 1 else threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self.in_flight = 0  # run() calls in progress or waiting for a slot (what ping reports)
        self.served = 0
        self.unanswered = 0  # frames read whose answer is not yet written (what shutdown waits for)
        self.started = time.monotonic()

    def handle(self, raw_header: Any, body: bytes) -> Tuple[Any, Reply]:
        try:
            req = _Request(raw_header)
        except ValueError as e:
            rid = raw_header.get("id") if isinstance(raw_header, dict) else None
            return rid, error_reply(400, str(e))
        if req.route == "ping":
            return req.id, json_reply(200, self._status())
        if req.route == "/":
            if req.method != "GET":
                return req.id, error_reply(405, "Method not allowed")
            return req.id, Reply(200, "text/html; charset=utf-8", {}, b"Healthy")
        if req.route == "/swagger.json":
            if req.method != "GET":
                return req.id, error_reply(405, "Method not allowed")
            return req.id, self._swagger(req.query)
        scores = req.route == "/score" or (req.route in ("/invocations", "/v2/infer") and self.mode == "mlflow")
        if not scores:
            return req.id, error_reply(404, f"no route {req.route!r} in a {self.mode}-mode replica")
        if req.deadline_ns is not None and time.monotonic_ns() >= req.deadline_ns:
            return req.id, error_reply(504, "the request's time was up before this worker reached it; "
                                            "run() was not called", run_failed=False)
        with self._lock:
            self.in_flight += 1
        try:
            with self._slots:
                reply = self._score(req, body)
        except Exception:  # a bug here, not in the user's code: say so, keep serving
            sys.stderr.write(f"cairn replica: internal error:\n{traceback.format_exc()}")
            reply = error_reply(500, "An unexpected internal error occurred. Check the logs for more info.")
        finally:
            with self._lock:
                self.in_flight -= 1
                self.served += 1
        return req.id, reply

    def _score(self, req: _Request, body: bytes) -> Reply:
        if self.mode == "mlflow":
            if req.route == "/v2/infer":
                return self.scorer.infer(body)
            return self.scorer.invoke(req.method, req.content_type, body)
        return self.scorer.invoke(req.method, req.query, req.headers, req.content_type, body)

    def _swagger(self, query: str) -> Reply:
        if self.mode == "script":
            return self.scorer.swagger(query)
        from urllib.parse import parse_qsl

        version = dict(parse_qsl(query)).get("version", "2")
        canonical = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}.get(version)
        if canonical is None:
            return error_reply(404, f"Swagger version [{version}] is not valid. Supported versions: [2, 3, 3.1].")
        generic = {"type": "object", "example": {}}
        return json_reply(200, generic_swagger(canonical, generic, generic))

    def _status(self) -> Dict[str, Any]:
        with self._lock:
            return {"status": "ready", "pid": os.getpid(), "mode": self.mode, "in_flight": self.in_flight,
                    "served": self.served, "uptime_s": round(time.monotonic() - self.started, 3)}


# -- serving ------------------------------------------------------------------------------------

def _send(conn: socket.socket, rid: Any, reply: Reply) -> None:
    header = {"id": rid, "status": reply.status, "content_type": reply.content_type, "headers": reply.headers}
    head = _frame_head(header, len(reply.body))
    if len(reply.body) <= 65536:  # one write for the common small answer
        conn.sendall(head + reply.body)
    else:
        conn.sendall(head)
        conn.sendall(reply.body)


def _serve_connection(conn: socket.socket, replica: Replica, max_body: int) -> None:
    reader = conn.makefile("rb")
    try:
        while True:
            try:
                frame = read_frame(reader, max_body)
            except ProtocolError as e:
                sys.stderr.write(f"cairn replica: closing a connection: {e}\n")
                try:
                    _send(conn, None, error_reply(400, str(e)))
                except OSError:
                    pass
                return
            if frame is None:
                return
            with replica._lock:
                replica.unanswered += 1
            try:
                rid, reply = replica.handle(*frame)
                _send(conn, rid, reply)
            finally:
                with replica._lock:
                    replica.unanswered -= 1
    except OSError:
        return  # the gateway went away mid-answer; nothing to tell anyone
    finally:
        reader.close()
        conn.close()


def _listen(path: str) -> socket.socket:
    """Listening socket at ``path``, made visible only once it accepts (bind, listen, rename)."""
    # A short name: AF_UNIX paths hold at most 107 bytes and data directories can be deep.
    tmp = os.path.join(os.path.dirname(path) or ".", f".r{os.getpid()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        sock.bind(tmp)
        sock.listen(128)
        os.replace(tmp, path)
    except BaseException:
        sock.close()
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return sock


def _parent() -> Optional[int]:
    """The process whose end ends this replica: the gateway that started it, named by
    ``CAIRN_REPLICA_PARENT_PID`` so that a replica whose server died while it was starting (its
    parent is then already init or a subreaper) exits too; else whoever started it, unless that is
    init (started by hand and detached: nothing to follow)."""
    named = os.environ.get("CAIRN_REPLICA_PARENT_PID", "")
    if named.isdigit():
        return int(named)
    ppid = os.getppid()
    return None if ppid == 1 else ppid


def serve(path: str, replica: Replica, max_body: int, stop: threading.Event) -> None:
    listener = _listen(path)
    ours = os.stat(path).st_ino
    listener.settimeout(0.5)  # wake up to notice a stop request or a dead parent
    parent = _parent()
    sys.stderr.write(f"cairn replica ready on {path} (pid {os.getpid()}, mode {replica.mode})\n")
    sys.stderr.flush()
    try:
        while not stop.is_set():
            if parent is not None and os.getppid() != parent:
                sys.stderr.write("cairn replica: parent process is gone; exiting\n")
                break
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                if stop.is_set():
                    break
                raise
            conn.settimeout(None)
            threading.Thread(target=_serve_connection, args=(conn, replica, max_body), daemon=True,
                             name="cairn-replica-conn").start()
    finally:
        listener.close()
        try:
            if os.stat(path).st_ino == ours:  # not a successor's socket that took the same path
                os.unlink(path)
        except OSError:
            pass
    deadline = time.monotonic() + DRAIN_SECONDS
    while replica.unanswered and time.monotonic() < deadline:
        time.sleep(0.01)


# -- start-up -----------------------------------------------------------------------------------

def _model_tree(limit: int = 50) -> str:
    root = os.environ.get("AZUREML_MODEL_DIR", "")
    if not root:
        return "AZUREML_MODEL_DIR is not set"
    if not os.path.isdir(root):
        return f"AZUREML_MODEL_DIR={root} is not a folder"
    lines = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            lines.append(os.path.relpath(os.path.join(folder, name), root))
            if len(lines) >= limit:
                return "\n".join([f"model files under {root} (first {limit}):"] + lines + ["…"])
    return "\n".join([f"model files under {root}:"] + (lines or ["<none>"]))


def _int_env(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _configure() -> Tuple[str, str, Any, int, int]:
    path = os.environ.get("CAIRN_REPLICA_SOCKET", "")
    if not path:
        raise ValueError("CAIRN_REPLICA_SOCKET is not set (the Unix socket path to listen on)")
    path = os.path.abspath(path)
    if len(os.fsencode(path)) > 107:
        raise ValueError(f"CAIRN_REPLICA_SOCKET path is {len(os.fsencode(path))} bytes; Unix sockets allow 107")
    mode = os.environ.get("CAIRN_SCORING_MODE", "script") or "script"
    concurrency = _int_env("CAIRN_REPLICA_CONCURRENCY", 1, 1)
    max_body = _int_env("CAIRN_REPLICA_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, 0)
    if mode == "script":
        script = os.environ.get("CAIRN_SCORING_SCRIPT", "")
        if not script:
            raise ValueError("CAIRN_SCORING_SCRIPT is not set (or set CAIRN_SCORING_MODE=mlflow)")
        scorer: Any = UserScript(script)
        os.environ["AML_APP_ROOT"] = scorer.app_root
        os.environ.setdefault("AZUREML_ENTRY_SCRIPT", os.path.basename(scorer.path))
    elif mode == "mlflow":
        from ._mlflow_scoring import MlflowModel

        root = os.environ.get("AZUREML_MODEL_DIR", "")
        if not root:
            raise ValueError("CAIRN_SCORING_MODE=mlflow needs AZUREML_MODEL_DIR")
        scorer = MlflowModel(root)
    else:
        raise ValueError(f"CAIRN_SCORING_MODE={mode!r} is not one of: script, mlflow")
    return path, mode, scorer, concurrency, max_body


def main() -> int:
    # Lines the script prints reach the gateway's log as they happen.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
        except (AttributeError, ValueError):
            pass
    try:
        path, mode, scorer, concurrency, max_body = _configure()
    except (ValueError, OSError) as e:
        sys.stderr.write(f"cairn replica: {e}\n")
        return EXIT_CONFIG
    try:
        if mode == "script":
            scorer.load()
            scorer.init()
        else:
            scorer.load()
    except BaseException:  # SyntaxError, SystemExit from init(), anything: the deployment fails
        sys.stderr.write(f"cairn replica: the scoring code failed to start:\n{traceback.format_exc()}")
        sys.stderr.write(_model_tree() + "\n")
        sys.stderr.flush()
        return EXIT_SCRIPT
    # What the imports and init() made lives as long as the process. Frozen, it is left out of the
    # collector's full passes, which otherwise walk all of it (about 90,000 objects with
    # scikit-learn loaded) inside whichever request triggers one: a script that keeps something
    # per request stalled 65-73 ms in its slowest call, 6-8 ms frozen.
    gc.collect()
    gc.freeze()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        serve(path, Replica(mode, scorer, concurrency), max_body, stop)
    except OSError as e:
        sys.stderr.write(f"cairn replica: cannot listen on {path}: {e}\n")
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not sys.exit: a thread the script started (not a daemon) must not keep a failed or stopped
    # replica alive, or the gateway would wait for an exit that never comes.
    os._exit(code)

