"""Fixtures for the MLflow-client suite: a real `cairn server` (the debug binary that
`cargo build`/`cargo test` produced) on an ephemeral port with its own data directory, one
workspace per test, and the stock `mlflow` client pointed at it through the environment.

Run: .venv/bin/python -m pytest python/tests_mlflow (scripts/test.sh does, after the cargo tests).
"""

import json
import os
import pathlib
import queue
import shutil
import subprocess
import tempfile
import threading
import urllib.request
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The binary cargo built (it honours CARGO_TARGET_DIR), unless CAIRN_BIN names another.
BINARY = pathlib.Path(os.environ.get("CAIRN_BIN") or ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "cairn")
# Set to a postgres:// URL to run the suite on PostgreSQL instead of the embedded SQLite.
DATABASE_URL = os.environ.get("CAIRN_MLFLOW_TEST_DATABASE_URL")
WINE = pathlib.Path(os.environ.get("CAIRN_WINE_CSV", "/work/shared/data/winequality_red.csv"))


class Server:
    """A running `cairn server`: its URL, admin token and log."""

    def __init__(self):
        if not BINARY.exists():
            pytest.exit(f"{BINARY} is missing: run `cargo build -p cairn` first", returncode=2)
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="cairn-mlflow-"))
        data = self.tmp / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "MLFLOW_"))}
        env.update(
            HOME=str(self.tmp),
            CAIRN_LOG="info,sqlx=warn",
            CAIRN_UV=str(ROOT / ".venv-tools" / "bin" / "uv"),
            UV_CACHE_DIR=str(ROOT / ".cache" / "uv"),
        )
        args = [str(BINARY), "server", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
        if DATABASE_URL:
            args += ["--database-url", DATABASE_URL]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.tmp,
        )
        self.log = []
        found = queue.Queue()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                if "listening on http://" in line:
                    rest = line.split("listening on ", 1)[1]
                    found.put(rest.split()[0].strip('"'))

        threading.Thread(target=pump, daemon=True).start()
        try:
            self.url = found.get(timeout=60)
        except queue.Empty:
            self.stop()
            pytest.exit("cairn server did not start:\n" + "".join(self.log), returncode=2)
        self.token = (data / "admin-token").read_text().strip()

    def api(self, method, path, body=None):
        """Calls the native API; returns (status, JSON body)."""
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def cli(self, *args):
        """Runs the `cairn` CLI against this server; returns stdout (fails the test on error)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "MLFLOW_"))}
        env.update(HOME=str(self.tmp), CAIRN_URL=self.url, CAIRN_TOKEN=self.token)
        out = subprocess.run([str(BINARY), *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, f"cairn {args} failed:\n{out.stderr}\n{out.stdout}"
        return out.stdout

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def workspace(server, monkeypatch):
    """A fresh workspace, with the MLflow client's environment pointing at it."""
    name = "w" + uuid.uuid4().hex[:10]
    status, body = server.api("POST", "/api/v1/workspaces", {"name": name})
    assert status in (200, 201), body
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{server.url}/workspaces/{name}/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", server.token)
    # Validation failures are 4xx and not retried; a 5xx would be a bug, and fail fast here.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri(f"{server.url}/workspaces/{name}/mlflow")
    # The fluent API remembers the last experiment set; it belongs to another workspace.
    mlflow.tracking.fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    yield name
    if mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def wine():
    """The red-wine quality data: features and target."""
    import pandas as pd

    df = pd.read_csv(WINE)
    return df.drop(columns=["quality"]), df["quality"]
