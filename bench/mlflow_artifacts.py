#!/usr/bin/env python3
"""Large MLflow artifact uploads into Cairn (issue 4): the stock client's `log_artifact` of one
SIZE_MB file, as one streamed PUT and as a proxied multipart upload (`mlflow-artifacts/mpu/*`,
CHUNK_MB parts sent in parallel by the client's thread pool), each followed by a download whose
SHA-256 must match. Reports wall times and the server's peak resident memory (sampled every
20 ms) during each upload: staging and assembly stream, so it must not grow with the file.

Environment:
  CAIRN_BIN      the cairn binary (default target/debug/cairn)
  SIZE_MB=512    the artifact's size
  CHUNK_MB=16    multipart part size (MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE)
  PYTHON         a Python with mlflow (default .venv/bin/python)

Run: .venv/bin/python bench/mlflow_artifacts.py
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import cairnbench  # starting cairn server: one way for every Python benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = os.environ.get("CAIRN_BIN", str(ROOT / "target" / "debug" / "cairn"))
SIZE_MB = int(os.environ.get("SIZE_MB", 512))
CHUNK_MB = int(os.environ.get("CHUNK_MB", 16))
PYTHON = os.environ.get("PYTHON", str(ROOT / ".venv" / "bin" / "python"))

DRIVE = """
import hashlib, os, sys, time, mlflow
path, dl = sys.argv[1], sys.argv[2]
mlflow.set_experiment("bench")
t0 = time.perf_counter()
with mlflow.start_run() as run:
    mlflow.log_artifact(path)
up = time.perf_counter() - t0
t0 = time.perf_counter()
out = mlflow.MlflowClient().download_artifacts(run.info.run_id, os.path.basename(path), dl)
h = hashlib.sha256()
with open(out, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(up, time.perf_counter() - t0, h.hexdigest())
"""


def start_server(tmp):
    """Cairn on `tmp/data` (bench/cairnbench.py), with workspace `bench`."""
    server = cairnbench.start_cairn(BIN, tmp / "data", env={"HOME": str(tmp), "CAIRN_LOG": "warn,cairn=info"})
    req = urllib.request.Request(
        f"{server.url}/api/v1/workspaces", method="POST", data=json.dumps({"name": "bench"}).encode(),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    urllib.request.urlopen(req).read()
    return server


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def drive(proc, url, token, path, tmp, multipart):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_TRACKING_URI=f"{url}/workspaces/bench/mlflow",
        MLFLOW_TRACKING_TOKEN=token,
        MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="true" if multipart else "false",
        MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(1 << 20),
        MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE=str(CHUNK_MB << 20),
    )
    base = rss_kb(proc.pid)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(proc.pid))
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    dl = tmp / ("dl-mp" if multipart else "dl-put")
    out = subprocess.run([PYTHON, "-c", DRIVE, str(path), str(dl)], capture_output=True, text=True, env=env)
    done.set()
    if out.returncode != 0:
        sys.exit(f"client failed:\n{out.stderr}")
    up, down, digest = out.stdout.split()[-3:]
    shutil.rmtree(dl, ignore_errors=True)
    return float(up), float(down), digest, base, peak[0]


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="cairn-bench-art-"))
    try:
        path = tmp / "weights.bin"
        h = hashlib.sha256()
        with open(path, "wb") as f:
            for _ in range(SIZE_MB):
                block = os.urandom(1 << 20)
                h.update(block)
                f.write(block)
        server = start_server(tmp)
        try:
            rows = []
            for multipart in (False, True):
                up, down, digest, base, peak = drive(server.proc, server.url, server.token, path, tmp, multipart)
                assert digest == h.hexdigest(), "downloaded bytes differ"
                label = f"multipart ({CHUNK_MB} MiB parts)" if multipart else "one streamed PUT"
                rows.append((label, up, SIZE_MB / up, down, base / 1024, peak / 1024))
        finally:
            server.stop(timeout=30)
        print(f"log_artifact of {SIZE_MB} MiB, stock mlflow client, {BIN}, load {os.getloadavg()[0]:.1f}")
        print("| upload | upload s | MiB/s | download s | server RSS before, MiB | peak, MiB |")
        print("|---|---|---|---|---|---|")
        for label, up, rate, down, base, peak in rows:
            print(f"| {label} | {up:.2f} | {rate:.0f} | {down:.2f} | {base:.0f} | {peak:.0f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
