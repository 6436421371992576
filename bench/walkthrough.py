"""Wall time of the walkthrough (examples/wine/walkthrough.py, steps 1–15 through `azureml.*`)
end to end with a warm environment cache, split by step (issue 6's benchmark).

One `cairn server` (CAIRN_BIN, fresh data directory, embedded SQLite). The walkthrough runs twice
in fresh folders: a warm-up run that builds (or finds in the uv cache) its two environments, then
the workspace is deleted with force (its deployment stops) and the timed run starts from nothing
but the server's environment cache — as a user's second notebook session would.

Step boundaries come from the script's own output lines (timestamped as they arrive, unbuffered)
and from the server's records of the run (its status transitions, in ms since the epoch), all on
the same machine's clock:

  upload            script start → "Done" (after the datastore upload: Python start and
                    `import azureml` included)
  compute + env     "Done" → the run's creation (compute, environment registration, estimator)
  submit-to-running run created → Running (snapshot, environment from cache, job start)
  training          Running → Finalizing (train.py itself)
  finalize          Finalizing → Completed (outputs kept, logs closed)
  register          Completed → the model line ("wine_model\twine_model:N\tN"): the client's
                    wait loop noticing the end, metrics fetched, the model registered
  deploy-to-healthy the model line → "wine-service: Healthy"
  first prediction  "Healthy" → the scoring answer line ("200 [...]")

Target (issue 6): under 30 s in total.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "python" / "tests_sdk"))
from conftest import Server  # noqa: E402  (the SDK tests' server launcher: Python 3.10 on PATH, uv)

WALKTHROUGH = ROOT / "examples" / "wine" / "walkthrough.py"
REPEATS = int(os.environ.get("REPEATS", "1"))


def log(msg):
    print(f"[walkthrough] {msg}", file=sys.stderr, flush=True)


def api(server, method, path):
    req = urllib.request.Request(server.url + "/api/v1" + path, method=method,
                                 headers={"Authorization": "Bearer " + server.token})
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return json.loads(body) if body else None


def run_walkthrough(server):
    """Runs the script once in a fresh folder; returns [(epoch seconds, line)] and the total."""
    env = server.environ(PYTHONPATH=os.pathsep.join([str(ROOT / "python"), str(ROOT / "python" / "azureml_compat")]),
                         PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory(prefix="cairn-walkthrough-") as cwd:
        t0 = time.time()
        proc = subprocess.Popen([sys.executable, str(WALKTHROUGH)], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip("\n")))
        code = proc.wait()
        t1 = time.time()
    if code != 0:
        raise SystemExit("the walkthrough failed:\n" + "\n".join(l for _, l in lines[-40:]))
    return t0, t1, lines


def first(lines, pred, what):
    for t, line in lines:
        if pred(line):
            return t
    raise SystemExit(f"no line {what} in the walkthrough's output")


def steps(server, t0, t1, lines):
    runs = api(server, "GET", "/workspaces/azureml_workspace/runs?limit=5")
    runs = runs["items"] if isinstance(runs, dict) else runs
    run = max(runs, key=lambda r: r["created_at"])
    at = {}
    for tr in run.get("transitions", []):
        at.setdefault(tr["status"], tr["at"] / 1000)
    created = run["created_at"] / 1000
    log("run transitions (s after creation): " + ", ".join(
        f"{tr['status']} {tr['at'] / 1000 - created:.2f}" for tr in run.get("transitions", [])))
    done = first(lines, lambda l: l.strip() == "Done", '"Done"')
    model = first(lines, lambda l: l.startswith("wine_model\twine_model:"), "with the model")
    healthy = first(lines, lambda l: "wine-service: Healthy" in l, '"wine-service: Healthy"')
    scored = first(lines, lambda l: l.startswith("200 ["), '"200 [...]"')
    return [
        ("upload", done - t0),
        ("compute + env", created - done),
        ("submit-to-running", at["Running"] - created),
        ("training", at["Finalizing"] - at["Running"]),
        ("finalize", at["Completed"] - at["Finalizing"]),
        ("register", model - at["Completed"]),
        ("deploy-to-healthy", healthy - model),
        ("first prediction", scored - healthy),
        ("total", t1 - t0),
    ]


def main():
    load_before = open("/proc/loadavg").read().split()[:3]
    server = Server()
    try:
        log(f"cairn server at {server.url}; warm-up run (builds or reuses the environments)")
        t0, t1, _ = run_walkthrough(server)
        log(f"warm-up: {t1 - t0:.1f} s")
        results = []
        for i in range(REPEATS):
            api(server, "DELETE", "/workspaces/azureml_workspace?force=true")
            t0, t1, lines = run_walkthrough(server)
            results.append(steps(server, t0, t1, lines))
            log(f"timed run {i + 1}: {t1 - t0:.1f} s")
    finally:
        server.stop()
    load_after = open("/proc/loadavg").read().split()[:3]
    names = [n for n, _ in results[0]]
    med = {n: statistics.median(r[k][1] for r in results) for k, n in enumerate(names)}
    out = [f"| step | seconds (median of {len(results)}) |", "|---|---|"]
    for n in names:
        out.append(f"| {'**total**' if n == 'total' else n} | {med[n]:.2f} |")
    out.append("")
    verdict = "met" if med["total"] < 30 else "**not met**"
    out.append(f"Target under 30 s in total: {verdict}. Load average before {' '.join(load_before)}, "
               f"after {' '.join(load_after)}; {os.cpu_count()} cores.")
    table = "\n".join(out) + "\n"
    print(table)
    bench_out = os.environ.get("BENCH_OUT")
    if bench_out:
        Path(bench_out).mkdir(parents=True, exist_ok=True)
        Path(bench_out, "walkthrough.md").write_text(table)


if __name__ == "__main__":
    main()
