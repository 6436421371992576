"""A small stand-in for the run endpoints of Cairn's server, for the runtime's unit tests.

It speaks the HTTP contract the runtime relies on (``log-batch``, ``metrics``, the run, status
``PATCH``, artifact ``PUT``) and records every request, so tests can check what the client sent:
batch sizes, the bearer header, NaN encoding, retries. It is deliberately strict where the real
server is strict (JSON without NaN literals, batch limits, checksums); the real server itself is
exercised by the Rust integration tests.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, NamedTuple, Tuple

TOKEN = "run-token-123"
WORKSPACE = "ws1"
RUN_ID = "run-0001"

_RUN_PATH = re.compile(r"^/api/v1/workspaces/([^/]+)/runs/([^/]+)(/.*)?$")
_RUNS_PATH = f"/api/v1/workspaces/{WORKSPACE}/runs"
_MODEL_VERSIONS_PATH = re.compile(r"^/api/v1/workspaces/([^/]+)/models/([^/]+)/versions$")


class Request(NamedTuple):
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes


def _strict_constant(name: str) -> Any:
    raise ValueError(f"JSON literal {name} is not valid JSON")


class StubServer:
    """Records requests; answers like the server; can be told to be slow or to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.requests: List[Request] = []
        self.batches: List[Dict[str, Any]] = []  # accepted log-batch bodies
        self.metrics: Dict[str, List[Dict[str, Any]]] = {}
        self.params: Dict[str, str] = {}
        self.tags: Dict[str, str] = {}
        self.properties: Dict[str, str] = {}
        # Child runs created through POST …/runs: id -> {"body", "batches", "status"}.
        self.children: Dict[str, Dict[str, Any]] = {}
        self.status = "Running"
        self.artifacts: Dict[str, bytes] = {}
        self.models: Dict[str, List[Dict[str, Any]]] = {}  # name -> registered version bodies
        # Statuses for the next log-batch requests (then log_batch_status).
        self.fail_next: Deque[int] = deque()
        self.log_batch_status = 200
        self.request_started = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def uri(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def env(self, **overrides: str) -> Dict[str, str]:
        """The variables a job runner would set for a run on this server."""
        env = {
            "CAIRN_TRACKING_URI": self.uri,
            "CAIRN_WORKSPACE": WORKSPACE,
            "CAIRN_RUN_ID": RUN_ID,
            "CAIRN_RUN_TOKEN": TOKEN,
            "CAIRN_EXPERIMENT": "wine_expt",
        }
        env.update(overrides)
        return env

    def log_batch_requests(self) -> List[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.endswith("/log-batch")]

    def received_metrics(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [m for batch in self.batches for m in batch["metrics"]]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Poll ``predicate()`` until true (the server is a separate thread; nothing to notify on)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.01)
        return bool(predicate())

    # -- request handling -------------------------------------------------------------------

    def _handler_class(self) -> type:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_PATCH(self) -> None:
                stub._handle(self, "PATCH")

            def do_PUT(self) -> None:
                stub._handle(self, "PUT")

        return Handler

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        self.request_started.set()
        length = int(handler.headers.get("Content-Length") or 0)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        if method == "PUT":
            status, answer = self._put_artifact(handler, headers, length)
            body = b""
        else:
            body = handler.rfile.read(length)
            status, answer = self._route(method, handler.path, headers, body)
        with self.lock:
            self.requests.append(Request(method, handler.path, headers, body))
        if self.delay:
            time.sleep(self.delay)
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _route(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> Tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "missing or wrong bearer token")
        if method == "POST" and path == _RUNS_PATH:
            return self._create_child(body)
        model = _MODEL_VERSIONS_PATH.match(path)
        if method == "POST" and model and model.group(1) == WORKSPACE:
            return self._register_model(model.group(2), json.loads(body))
        match = _RUN_PATH.match(path)
        if match and match.group(1) == WORKSPACE and match.group(2) in self.children:
            return self._child_route(method, match.group(2), match.group(3) or "", body)
        if not match or match.group(1) != WORKSPACE or match.group(2) != RUN_ID:
            return _error(404, "not_found", f"no run at {path}")
        rest = match.group(3) or ""
        if method == "POST" and rest == "/log-batch":
            return self._log_batch(body)
        if method == "GET" and rest == "/metrics":
            with self.lock:
                return 200, {"metrics": {k: list(v) for k, v in self.metrics.items()}}
        if method == "GET" and rest == "":
            with self.lock:
                return 200, {
                    "id": RUN_ID,
                    "status": self.status,
                    "experiment": "wine_expt",
                    "params": dict(self.params),
                    "tags": dict(self.tags),
                    "properties": dict(self.properties),
                }
        if method == "POST" and rest == "/properties":
            return self._add_properties(body)
        if method == "PATCH" and rest == "":
            self.status = json.loads(body)["status"]
            return 200, {"id": RUN_ID, "status": self.status}
        return _error(404, "not_found", f"no route {method} {path}")

    def _register_model(self, name: str, req: Dict[str, Any]) -> Tuple[int, Any]:
        """Like the server: the path must be among the run's artifacts (a file or a folder)."""
        if req.get("run_id") != RUN_ID:
            return _error(404, "not_found", f"run {req.get('run_id')!r} not found")
        path = req["path"]
        with self.lock:
            files = [a for a in self.artifacts if a == path or a.startswith(path + "/")]
            if not files:
                return _error(404, "not_found", f"artifact path {path!r} is not among the artifacts")
            versions = self.models.setdefault(name, [])
            versions.append(req)
            version = len(versions)
        answer = dict(req, name=name, version=version, id=f"{name}:{version}")
        answer.pop("path")
        return 201, answer

    def _log_batch(self, body: bytes) -> Tuple[int, Any]:
        with self.lock:
            status = self.fail_next.popleft() if self.fail_next else self.log_batch_status
        if status != 200:
            return _error(status, "stub_failure", f"told to answer {status}")
        try:
            batch = json.loads(body, parse_constant=_strict_constant)
        except ValueError as error:
            return _error(400, "invalid_json", str(error))
        if len(batch["metrics"]) > 1000 or len(batch["params"]) > 100 or len(batch["tags"]) > 100:
            return _error(400, "batch_too_large", "limits: 1000 metrics, 100 params, 100 tags")
        with self.lock:
            self.batches.append(batch)
            for m in batch["metrics"]:
                point = {"value": m["value"], "step": m["step"], "timestamp": m["timestamp"]}
                self.metrics.setdefault(m["key"], []).append(point)
            self.params.update({p["key"]: p["value"] for p in batch["params"]})
            self.tags.update({t["key"]: t["value"] for t in batch["tags"]})
        return 200, {}

    def _create_child(self, body: bytes) -> Tuple[int, Any]:
        """Like the server for a run token: only children of the token's own run."""
        request = json.loads(body)
        if request.get("parent_run_id") != RUN_ID:
            return _error(403, "forbidden", "this token may only create child runs of its run")
        with self.lock:
            child_id = f"{RUN_ID}-child{len(self.children) + 1}"
            self.children[child_id] = {"body": request, "batches": [], "status": "Running"}
        return 201, {"id": child_id, "parent_id": RUN_ID, "status": "Running"}

    def _child_route(self, method: str, child_id: str, rest: str, body: bytes) -> Tuple[int, Any]:
        child = self.children[child_id]
        if method == "POST" and rest == "/log-batch":
            with self.lock:
                child["batches"].append(json.loads(body, parse_constant=_strict_constant))
            return 200, {}
        if method == "PATCH" and rest == "":
            child["status"] = json.loads(body)["status"]
            return 200, {"id": child_id, "status": child["status"]}
        return _error(404, "not_found", f"no child route {method} {rest}")

    def _add_properties(self, body: bytes) -> Tuple[int, Any]:
        """Like the server: a property that exists must keep its value (409), else all are added."""
        properties = json.loads(body)["properties"]
        with self.lock:
            for key, value in properties.items():
                if key in self.properties and self.properties[key] != value:
                    return _error(409, "conflict", f"property {key!r} is already {self.properties[key]!r}")
            self.properties.update(properties)
            return 200, {"id": RUN_ID, "properties": dict(self.properties)}

    def _put_artifact(
        self, handler: BaseHTTPRequestHandler, headers: Dict[str, str], length: int
    ) -> Tuple[int, Any]:
        digest, parts, left = hashlib.sha256(), [], length
        while left > 0:
            chunk = handler.rfile.read(min(left, 65536))
            if not chunk:
                break
            digest.update(chunk)
            parts.append(chunk)
            left -= len(chunk)
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "missing or wrong bearer token")
        prefix = f"/api/v1/workspaces/{WORKSPACE}/runs/{RUN_ID}/artifacts/"
        if not handler.path.startswith(prefix):
            return _error(404, "not_found", handler.path)
        if digest.hexdigest() != headers.get("x-cairn-sha256"):
            return _error(422, "checksum_mismatch", "body does not match x-cairn-sha256")
        name = handler.path[len(prefix):]
        with self.lock:
            self.artifacts[name] = b"".join(parts)
        return 201, {"path": name, "size": length}


def _error(status: int, code: str, message: str) -> Tuple[int, Any]:
    return status, {"error": {"code": code, "message": message}}


def closed_port_uri() -> str:
    """A URI nobody listens on: bind a port, note it, close it."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def metrics_of(spill_lines: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """All metrics in the batches of a spill file."""
    return [m for line in spill_lines for m in line["batch"]["metrics"]]


def read_jsonl(path: str) -> List[Dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line, parse_constant=_strict_constant) for line in lines if line.strip()]

