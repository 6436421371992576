"""The serving floor: what one scoring call costs in Python, and what the replica's framed protocol
adds on top, before any gateway exists.

1. In-process floor: for the walkthrough's wine model (scikit-learn ElasticNet trained on
   examples/wine/winedata/winequality_red.csv), the work a replica cannot avoid per request:
   ``json.loads`` of the body, ``np.array``, ``predict``, ``.tolist()`` and the ``json.dumps`` of
   the answer.
2. Round trip over the Unix socket: a real ``python -m cairn.replica`` worker serving the
   walkthrough's score.py with the same model, driven by one client connection that sends a frame
   and reads the answer (so the Python client's own cost is included: the Rust gateway's will be
   lower). Also with a score.py whose run() returns a constant, i.e. the protocol alone.

Per-call times are taken with perf_counter_ns around each call; p50/p99 in µs; calls/s =
calls / total time. Settings (environment): N_CALLS (5000 per case), WARMUP (300).

    .venv/bin/python bench/serving_floor.py [--out bench/out/serving_floor.md]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import joblib
import numpy as np
import sklearn
from sklearn.linear_model import ElasticNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
from cairn.replica import encode_frame, read_frame  # noqa: E402

N_CALLS = int(os.environ.get("N_CALLS", "5000"))
WARMUP = int(os.environ.get("WARMUP", "300"))
WINE_CSV = os.path.join(ROOT, "examples", "wine", "winedata", "winequality_red.csv")

WALKTHROUGH_SCORE = """\
import json
import joblib
import numpy as np
from cairn.serving import Model

def init():
    global model
    model = joblib.load(Model.get_model_path('wine_model'))

def run(raw_data):
    data = np.array(json.loads(raw_data)['data'])
    return model.predict(data).tolist()
"""

CONSTANT_SCORE = """\
def init():
    pass

def run(raw_data):
    return [5.0]
"""


def load_wine() -> Tuple[List[List[float]], List[float]]:
    with open(WINE_CSV, newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[float(v) for v in r[:-1]] for r in rows], [float(r[-1]) for r in rows]


def percentile(sorted_ns: List[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1000.0


def measure(call: Callable[[], object]) -> Dict[str, float]:
    for _ in range(WARMUP):
        call()
    times = []
    start = time.perf_counter_ns()
    for _ in range(N_CALLS):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    total = time.perf_counter_ns() - start
    times.sort()
    return {"p50": percentile(times, 0.50), "p99": percentile(times, 0.99), "rate": N_CALLS / (total / 1e9)}


class Worker:
    def __init__(self, folder: str, script: str, model_dir: str) -> None:
        self.socket_path = os.path.join(folder, f"{os.path.splitext(os.path.basename(script))[0]}.sock")
        env = dict(os.environ, CAIRN_REPLICA_SOCKET=self.socket_path, CAIRN_SCORING_SCRIPT=script,
                   AZUREML_MODEL_DIR=model_dir, PYTHONPATH=os.path.join(ROOT, "python"),
                   OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "cairn.replica"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None:
                raise SystemExit(f"replica failed to start:\n{self.proc.stderr.read().decode()}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def round_trip(socket_path: str, body: bytes) -> Dict[str, float]:
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    reader = sock.makefile("rb")
    frame = encode_frame({"id": 1, "route": "/score", "content_type": "application/json"}, body)

    def call() -> object:
        sock.sendall(frame)
        header, data = read_frame(reader)
        if header["status"] != 200:
            raise SystemExit(f"replica answered {header['status']}: {data[:200]!r}")
        return data

    try:
        return measure(call)
    finally:
        reader.close()
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", help="also write the Markdown table to this file")
    args = parser.parse_args()

    X, y = load_wine()
    model = ElasticNet(random_state=0).fit(np.array(X), np.array(y))
    bodies = {"1 row": json.dumps({"data": X[:1]}).encode(), "100 rows": json.dumps({"data": X[:100]}).encode()}

    results: List[Tuple[str, str, Dict[str, float]]] = []
    for label, body in bodies.items():
        text = body.decode()

        def floor() -> object:
            data = np.array(json.loads(text)["data"])
            return json.dumps(model.predict(data).tolist())

        results.append(("in-process floor: json.loads + predict + json.dumps", label, measure(floor)))

    with tempfile.TemporaryDirectory(prefix="cr-bench-") as tmp:
        model_dir = os.path.join(tmp, "models", "wine_model", "1")
        os.makedirs(model_dir)
        joblib.dump(model, os.path.join(model_dir, "wine_model.pkl"))
        scripts = {}
        for name, source in (("score.py", WALKTHROUGH_SCORE), ("constant.py", CONSTANT_SCORE)):
            scripts[name] = os.path.join(tmp, name)
            with open(scripts[name], "w") as f:
                f.write(source)
        wine = Worker(tmp, scripts["score.py"], model_dir)
        constant = Worker(tmp, scripts["constant.py"], model_dir)
        try:
            for label, body in bodies.items():
                results.append(("replica round trip, walkthrough score.py", label,
                                round_trip(wine.socket_path, body)))
            for label, body in bodies.items():
                results.append(("replica round trip, run() returns a constant", label,
                                round_trip(constant.socket_path, body)))
        finally:
            wine.stop()
            constant.stop()

    floor_p50 = {label: r["p50"] for case, label, r in results if case.startswith("in-process")}
    lines = [
        f"Python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, numpy {np.__version__}; "
        f"{N_CALLS} calls per case after {WARMUP} warm-up; one client connection, "
        "CAIRN_REPLICA_CONCURRENCY=1.",
        "",
        "| case | body | p50 µs | p99 µs | calls/s | p50 over the floor µs |",
        "|---|---|---|---|---|---|",
    ]
    for case, label, r in results:
        over = f"{r['p50'] - floor_p50[label]:.1f}" if "walkthrough" in case else ""
        lines.append(f"| {case} | {label} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rate']:,.0f} | {over} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
