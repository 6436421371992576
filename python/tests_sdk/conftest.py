"""A real ``cairn server`` for the SDK tests: the binary on 127.0.0.1 port 0, a temporary data
directory and HOME, the repository's uv and uv cache (the first environment build downloads
from PyPI; later ones reuse the cache).

The binary is ``$CAIRN_BIN``, else ``target/debug/cairn`` (build it with ``cargo build -p cairn``).
Both ``python/`` and ``python/azureml_compat/`` are put on ``sys.path``, as a job has them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "python"), str(ROOT / "python" / "azureml_compat")]

#: Variables that would point the SDK at another server or config.
_CAIRN_VARS = ("CAIRN_URL", "CAIRN_TOKEN", "CAIRN_WORKSPACE", "CAIRN_HOME", "XDG_CONFIG_HOME")


def python310_dir() -> Path:
    """A folder holding a working ``python3.10``, for the walkthrough's environment.

    The walkthrough's ``train.py`` passes a float ``max_depth``, which scikit-learn refuses since
    1.1, and scikit-learn 1.0 has no wheels for Python 3.11; so its environment asks for
    ``python=3.10``, and the server's uv must find one (it cannot download one offline).
    ``$CAIRN_TEST_PYTHON310`` names the interpreter; otherwise PATH and pyenv are searched.
    """
    candidates = [os.environ.get("CAIRN_TEST_PYTHON310", "")]
    candidates += [str(Path(d) / "python3.10") for d in os.environ.get("PATH", "").split(os.pathsep)]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))
    candidates += ["/usr/bin/python3.10", "/usr/local/bin/python3.10"]
    for candidate in filter(None, candidates):
        try:
            ok = subprocess.run([candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 10)"],
                                capture_output=True, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return Path(candidate).resolve().parent
    raise RuntimeError(
        "the walkthrough test needs Python 3.10 (scikit-learn 1.0, which takes the walkthrough's float "
        "max_depth, has no wheels for newer Pythons): install it or set CAIRN_TEST_PYTHON310"
    )


class Server:
    """A running server: ``url``, ``token`` (admin), ``data_dir``, ``home`` and its log lines."""

    def __init__(self) -> None:
        # The binary cargo built (it honours CARGO_TARGET_DIR), unless CAIRN_BIN names another.
        binary = Path(os.environ.get("CAIRN_BIN") or ROOT / os.environ.get("CARGO_TARGET_DIR", "target") / "debug" / "cairn")
        if not binary.is_file():
            raise RuntimeError(f"{binary} does not exist: run `cargo build -p cairn` first (or set CAIRN_BIN)")
        self.tmp = Path(tempfile.mkdtemp(prefix="cairn-sdk-tests-"))
        self.home = self.tmp / "home"
        self.home.mkdir()
        self.data_dir = self.tmp / "data"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAIRN_") and not k.startswith("UV_")}
        # uv finds interpreters on PATH; version-manager shims that fail when queried would stop
        # its search, so they are left out and a real Python 3.10 is put first.
        path = [d for d in env.get("PATH", "").split(os.pathsep) if "shims" not in Path(d).parts]
        env.update(
            PATH=os.pathsep.join([str(python310_dir())] + path),
            HOME=str(self.home),
            CAIRN_LOG="info,sqlx=warn",
            CAIRN_UV=str(ROOT / ".venv-tools" / "bin" / "uv"),
            UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR") or str(ROOT / ".cache" / "uv"),
        )
        self.lines: List[str] = []
        self.process = subprocess.Popen(
            [str(binary), "server", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        found = threading.Event()
        self.url = ""

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                self.lines.append(line)
                match = re.search(r"listening on (http://\S+)", line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60) or not self.url:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "".join(self.lines))
        self.token = (self.data_dir / "admin-token").read_text().strip()

    def environ(self, **extra: str) -> Dict[str, str]:
        """Variables that point the SDK at this server (for ``monkeypatch``-free subprocesses)."""
        env = {k: v for k, v in os.environ.items() if k not in _CAIRN_VARS}
        env.update(CAIRN_URL=self.url, CAIRN_TOKEN=self.token, HOME=str(self.home), **extra)
        return env

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture
def connected(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The SDK's environment points at the test server (and at nothing else)."""
    for name in _CAIRN_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(server.home))
    monkeypatch.setenv("CAIRN_URL", server.url)
    monkeypatch.setenv("CAIRN_TOKEN", server.token)
    return server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ws(connected: Server):
    import cairn

    return cairn.Workspace.create(unique("ws"))


def wait_until(predicate, what: str, seconds: float = 120.0) -> None:
    """Poll ``predicate`` (for server-side state; never used to assert durations)."""
    end = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)
