"""Serving benchmark (issue 5): Cairn's scoring endpoint against azmlinfsrv, the reference
(azureml-inference-server-http, gunicorn + Flask), with wrk on loopback.

Both serve the same score.py (the walkthrough's: ``json.loads``, ``np.array``, ``predict``,
``.tolist()``) over the same scikit-learn ElasticNet trained on the wine data, in the same venv
(Cairn's deployment uses it as a ``user_managed`` environment), with the same number of worker
processes, each serving one request at a time (WORKERS: azmlinfsrv ``--worker_count``, i.e.
gunicorn's sync workers; Cairn one instance with ``environment_variables: {WORKER_COUNT: WORKERS}``,
as in Azure ML, or INSTANCES instances of WORKERS / INSTANCES workers). For each concurrency
(CONCURRENCY) and body (1 and 100 rows), wrk runs DURATION seconds against each server, alternating
which goes first; requests/s, p50 and p99 latency come from wrk's own report, non-2xx answers and
socket errors are counted and shown (a fast error is not a result).

Also measured in the same run:
- the in-process floor: the Python cost of one call of that score.py's work (json.loads of the
  body, np.array, predict, tolist, json.dumps of the answer), p50 over N_FLOOR calls;
- each server's overhead over that floor at concurrency 1: its wrk p50 minus the floor's p50 (for
  Cairn this is the gateway plus the replica protocol plus HTTP on loopback, so it bounds the
  gateway's own overhead from above);
- the gateway's own time per request (``cairn_gateway_overhead_seconds`` from Cairn's /metrics,
  scraped before and after each wrk cell): the scoring handler's time minus the replica call;
- the CPU time per request of each side (/proc around each wrk run): the server's own process,
  its worker processes, and wrk; and how busy the cores were (whether the cell was CPU-bound);
- deploy-to-first-score: `cairn deployment create` (no --wait) to the first 200 from the scoring
  URI pinned to that deployment, environment already present, DEPLOY_REPS times.

Settings (environment): CAIRN_BIN (required), WORKERS (2), INSTANCES (1), CONCURRENCY ("1,8,32"), DURATION (10 s),
N_FLOOR (3000), DEPLOY_REPS (3), BENCH_OUT (bench/out: serving.md).
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import joblib
import numpy as np
from sklearn.linear_model import ElasticNet

import cairnbench  # starting cairn server: one way for every Python benchmark

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CAIRN = os.environ["CAIRN_BIN"]
WORKERS = int(os.environ.get("WORKERS", "2"))
INSTANCES = int(os.environ.get("INSTANCES", "1"))
assert WORKERS % INSTANCES == 0, "WORKERS must be a multiple of INSTANCES"
CONCURRENCY = [int(c) for c in os.environ.get("CONCURRENCY", "1,8,32").split(",")]
DURATION = int(os.environ.get("DURATION", "10"))
N_FLOOR = int(os.environ.get("N_FLOOR", "3000"))
DEPLOY_REPS = int(os.environ.get("DEPLOY_REPS", "3"))
OUT = Path(os.environ.get("BENCH_OUT", HERE / "out"))

SCORE_PY = """\
import json
import os

import joblib
import numpy as np


def init():
    global model
    root = os.environ["AZUREML_MODEL_DIR"]
    path = next(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f == "wine_model.pkl")
    model = joblib.load(path)


def run(raw_data):
    data = np.array(json.loads(raw_data)["data"])
    return model.predict(data).tolist()
"""

WRK_LUA = """\
wrk.method = "POST"
local f = io.open(os.getenv("BODY_FILE"), "rb")
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("AUTH")
if auth ~= nil and auth ~= "" then wrk.headers["Authorization"] = auth end
"""


def log(msg: str) -> None:
    print(f"[serving] {msg}", file=sys.stderr, flush=True)


def load_wine():
    import csv
    with open(ROOT / "examples" / "wine" / "winedata" / "winequality_red.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[float(v) for v in r[:-1]] for r in rows], [float(r[-1]) for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, headers: dict, timeout: float = 5.0):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return 0, str(e).encode()


def cairn(*args: str, env: dict, cwd: Path) -> str:
    out = subprocess.run([CAIRN, *args], env=env, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"cairn {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def in_process_floor(model, body: bytes) -> float:
    times = []
    for i in range(N_FLOOR + 200):
        t0 = time.perf_counter_ns()
        data = np.array(json.loads(body)["data"])
        json.dumps(model.predict(data).tolist())
        if i >= 200:
            times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000.0


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(text: str) -> dict:
    def lat(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50": lat("50"),
        "p99": lat("99"),
        "requests": int(total.group(1)) if total else 0,
        "bad": (int(non2xx.group(1)) if non2xx else 0) + (sum(int(g) for g in errors.groups()) if errors else 0),
    }


def wrk(url: str, conc: int, body_file: Path, lua: Path, auth: str, server: int) -> dict:
    """One wrk run, with the CPU time the server (pid `server`: its own process, and its worker
    processes) and wrk itself used, in µs per request."""
    env = dict(os.environ, BODY_FILE=str(body_file), AUTH=auth)
    cmd = ["wrk", f"-t{min(2, conc)}", f"-c{conc}", f"-d{DURATION}s", "--latency", "--timeout", "10s",
           "-s", str(lua), url]
    import resource

    before, wrk_before = cpu_snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    after, wrk_after = cpu_snapshot(), resource.getrusage(resource.RUSAGE_CHILDREN)
    r = parse_wrk(out)
    used = cpu_between(before, after, server)
    n = max(1, r["requests"])
    r["cpu_us"] = {
        "front": used["root"] / n * 1e6,
        "workers": used["children"] / n * 1e6,
        "wrk": ((wrk_after.ru_utime + wrk_after.ru_stime) - (wrk_before.ru_utime + wrk_before.ru_stime)) / n * 1e6,
        "busy": used["busy"],
    }
    return r


def overhead_scrape(base: str, token: str) -> dict:
    """Cairn's gateway-overhead histogram from /metrics: {"buckets": [(le, cumulative)], "sum", "count"}."""
    req = urllib.request.Request(base + "/metrics", headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    buckets = [(float(le) if le != "+Inf" else float("inf"), int(n)) for le, n in
               re.findall(r'^cairn_gateway_overhead_seconds_bucket\{le="([^"]+)"\} (\d+)$', text, re.M)]
    total = re.search(r"^cairn_gateway_overhead_seconds_sum (\S+)$", text, re.M)
    count = re.search(r"^cairn_gateway_overhead_seconds_count (\d+)$", text, re.M)
    return {"buckets": buckets, "sum": float(total.group(1)) if total else 0.0,
            "count": int(count.group(1)) if count else 0}


def overhead_between(before: dict, after: dict) -> dict:
    """Mean and median bucket (µs) of the requests observed between two scrapes."""
    count = after["count"] - before["count"]
    if count <= 0:
        return {"count": 0, "mean_us": float("nan"), "p50_le_us": float("nan")}
    rank = (count + 1) // 2
    p50 = float("inf")
    for (le, n_after), (_, n_before) in zip(after["buckets"], before["buckets"]):
        if n_after - n_before >= rank:
            p50 = le
            break
    return {"count": count, "mean_us": (after["sum"] - before["sum"]) / count * 1e6, "p50_le_us": p50 * 1e6}


def cpu_snapshot() -> tuple:
    """CPU seconds (user + system) of every process by pid, each one's parent, and the machine's
    busy and total jiffies (from /proc/stat), to attribute a wrk cell's CPU to each side."""
    cpu, parents = {}, {}
    for pid, ppid, _, seconds in cairnbench.proc_stats():
        parents[pid] = ppid
        cpu[pid] = seconds
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:]]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    return cpu, parents, sum(jiffies) - idle, sum(jiffies)


def cpu_between(before: tuple, after: tuple, root: int) -> dict:
    """CPU seconds used between two snapshots by `root` itself and by its descendants, and the
    machine's busy fraction."""
    cpu0, _, busy0, total0 = before
    cpu1, parents, busy1, total1 = after
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    used = {pid: cpu1[pid] - cpu0.get(pid, 0.0) for pid in tree if pid in cpu1}
    return {"root": used.pop(root, 0.0), "children": sum(used.values()),
            "busy": (busy1 - busy0) / max(1, total1 - total0)}


def wait_ready(url: str, body: bytes, headers: dict, deadline_s: float) -> float:
    """Seconds until `url` answers 200 to `body` (polling every 20 ms), or raises."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        status, answer = post(url, body, headers, timeout=2)
        if status == 200:
            return time.perf_counter() - t0
        time.sleep(0.02)
    raise RuntimeError(f"{url} not ready after {deadline_s} s (last: {status} {answer[:200]!r})")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cairn-serving-"))
    load_before = open("/proc/loadavg").read().split()[:3]
    X, y = load_wine()
    model = ElasticNet(random_state=0).fit(np.array(X), np.array(y))
    (work / "model").mkdir()
    joblib.dump(model, work / "model" / "wine_model.pkl")
    (work / "code").mkdir()
    (work / "code" / "score.py").write_text(SCORE_PY)
    bodies = {}
    for rows in (1, 100):
        path = work / f"body{rows}.json"
        path.write_text(json.dumps({"data": X[:rows]}))
        bodies[rows] = path
    lua = work / "post.lua"
    lua.write_text(WRK_LUA)
    expected = model.predict(np.array(X[:1])).tolist()

    floors = {rows: in_process_floor(model, bodies[rows].read_bytes()) for rows in bodies}
    log(f"in-process floor p50: {floors[1]:.1f} µs (1 row), {floors[100]:.1f} µs (100 rows)")

    procs = []
    try:
        # --- Cairn: server, workspace, user_managed environment on this venv, model, endpoint ---
        env0 = cairnbench.server_env({"CAIRN_UV": os.environ.get("CAIRN_UV", str(ROOT / ".venv-tools" / "bin" / "uv"))})
        server = cairnbench.start_cairn(CAIRN, work / "cairn", env=dict(env0, CAIRN_LOG="warn,cairn_server::startup=info"))
        procs.append(server.proc)
        url = server.url
        env = dict(env0, CAIRN_URL=url, CAIRN_TOKEN=server.token, CAIRN_WORKSPACE="bench", HOME=str(work))
        cairn("workspace", "create", "bench", env=env, cwd=work)
        (work / "env.yml").write_text(f"name: bench-serving\nuser_managed: true\ninterpreter: {sys.executable}\n")
        cairn("env", "create", "-f", "env.yml", env=env, cwd=work)
        cairn("model", "register", "--name", "wine_model", "--path", "model/wine_model.pkl",
              "--framework", "sklearn", env=env, cwd=work)
        (work / "endpoint.yml").write_text("name: bench\nauth_mode: key\n")
        cairn("endpoint", "create", "-f", "endpoint.yml", env=env, cwd=work)

        def deployment_yml(name: str, count: int, workers: int) -> str:
            # max_concurrent_requests_per_instance only admits (429 beyond): at the highest
            # concurrency nothing is refused; each worker still takes one request at a time.
            return (f"name: {name}\nendpoint_name: bench\nmodel: wine_model:1\n"
                    f"code_configuration:\n  code: ./code\n  scoring_script: score.py\n"
                    f"environment: bench-serving\ninstance_count: {count}\n"
                    f"environment_variables:\n  WORKER_COUNT: \"{workers}\"\n"
                    f"request_settings:\n  request_timeout_ms: 60000\n"
                    f"  max_concurrent_requests_per_instance: {max(CONCURRENCY)}\n")

        (work / "main.yml").write_text(deployment_yml("main", INSTANCES, WORKERS // INSTANCES))
        cairn("deployment", "create", "-f", "main.yml", "--all-traffic", "--wait", env=env, cwd=work)
        keys = json.loads(cairn("endpoint", "get-keys", "bench", "-o", "json", env=env, cwd=work))
        shown = json.loads(cairn("endpoint", "show", "bench", "-o", "json", env=env, cwd=work))
        cairn_url, cairn_auth = shown["scoring_uri"], "Bearer " + keys["primary_key"]

        # --- deploy-to-first-score, with the environment present ---
        deploy_times = []
        for i in range(DEPLOY_REPS):
            name = f"probe{i}"
            (work / f"{name}.yml").write_text(deployment_yml(name, 1, 1))
            t0 = time.perf_counter()
            cairn("deployment", "create", "-f", f"{name}.yml", env=env, cwd=work)
            waited = wait_ready(cairn_url, bodies[1].read_bytes(),
                                {"Authorization": cairn_auth, "azureml-model-deployment": name}, 120)
            deploy_times.append(time.perf_counter() - t0)
            log(f"deploy-to-first-score {name}: {deploy_times[-1]:.2f} s (create returned after "
                f"{deploy_times[-1] - waited:.2f} s)")
            cairn("deployment", "delete", f"bench/{name}", env=env, cwd=work)

        # --- azmlinfsrv, same score.py, model folder, venv and worker count ---
        port, health = free_port(), free_port()
        ref_log = open(work / "azmlinfsrv.log", "w")
        ref = subprocess.Popen([str(Path(sys.executable).parent / "azmlinfsrv"), "--entry_script",
                                str(work / "code" / "score.py"), "--model_dir", str(work / "model"),
                                "--port", str(port), "--health_port", str(health),
                                "--worker_count", str(WORKERS)],
                               cwd=work, stdout=ref_log, stderr=subprocess.STDOUT)
        procs.append(ref)
        ref_url = f"http://127.0.0.1:{port}/score"
        wait_ready(ref_url, bodies[1].read_bytes(), {}, 120)

        for target, auth in ((cairn_url, cairn_auth), (ref_url, "")):
            status, answer = post(target, bodies[1].read_bytes(), {"Authorization": auth} if auth else {})
            assert status == 200 and json.loads(answer) == expected, (target, status, answer[:300])

        # --- wrk, alternating which server goes first ---
        results = []
        for conc in CONCURRENCY:
            for rows in (1, 100):
                order = [("cairn", cairn_url, cairn_auth, server.pid), ("azmlinfsrv", ref_url, "", ref.pid)]
                if len(results) % 2:
                    order.reverse()
                cell = {"conc": conc, "rows": rows}
                for name, target, auth, pid in order:
                    if name == "cairn":
                        before = overhead_scrape(url, env["CAIRN_TOKEN"])
                    cell[name] = wrk(target, conc, bodies[rows], lua, auth, pid)
                    if name == "cairn":
                        cell["overhead"] = overhead_between(before, overhead_scrape(url, env["CAIRN_TOKEN"]))
                    r = cell[name]
                    log(f"c={conc} rows={rows} {name}: {r['rps']:.0f} req/s, p50 {r['p50']:.0f} µs, "
                        f"p99 {r['p99']:.0f} µs, bad {r['bad']}")
                results.append(cell)
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    load_after = open("/proc/loadavg").read().split()[:3]
    lines = [
        f"Cairn ({CAIRN}; {INSTANCES} instance(s) × {WORKERS // INSTANCES} worker(s)) vs azmlinfsrv 1.5.1 "
        f"(--worker_count {WORKERS}), {WORKERS} worker processes each, wrk {DURATION} s per cell, "
        f"loopback; load average before {' '.join(load_before)}, after {' '.join(load_after)}; "
        f"{os.cpu_count()} cores.",
        "",
        "| concurrency | body | Cairn req/s | azmlinfsrv req/s | throughput ratio | Cairn p50 µs | azmlinfsrv p50 µs "
        "| Cairn p99 µs | azmlinfsrv p99 µs | p99 ratio (ref/Cairn) | non-2xx+errors (Cairn / ref) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in results:
        c, r = cell["cairn"], cell["azmlinfsrv"]
        lines.append(
            f"| {cell['conc']} | {cell['rows']} row{'s' if cell['rows'] > 1 else ''} | {c['rps']:.0f} | {r['rps']:.0f} "
            f"| {c['rps'] / r['rps']:.2f}× | {c['p50']:.0f} | {r['p50']:.0f} | {c['p99']:.0f} | {r['p99']:.0f} "
            f"| {r['p99'] / c['p99']:.2f}× | {c['bad']} / {r['bad']} |")
    c1 = {cell["rows"]: cell for cell in results if cell["conc"] == 1}
    lines += ["", "| body | in-process floor p50 µs | Cairn p50 − floor µs | azmlinfsrv p50 − floor µs "
              "| Cairn gateway's own time: mean µs | its median bucket µs (≤) |",
              "|---|---|---|---|---|---|"]
    for rows, floor in floors.items():
        if rows in c1:
            o = c1[rows]["overhead"]
            lines.append(f"| {rows} row{'s' if rows > 1 else ''} | {floor:.1f} | {c1[rows]['cairn']['p50'] - floor:.0f} "
                         f"| {c1[rows]['azmlinfsrv']['p50'] - floor:.0f} | {o['mean_us']:.1f} | {o['p50_le_us']:.0f} |")
    lines += ["", "Gateway's own time per request (`cairn_gateway_overhead_seconds` from /metrics, scraped around "
              "each wrk cell): " + "; ".join(
                  f"c={cell['conc']} {cell['rows']} row(s): mean {cell['overhead']['mean_us']:.1f} µs, "
                  f"median ≤ {cell['overhead']['p50_le_us']:.0f} µs" for cell in results)]
    lines += ["", "CPU time per request (µs, user + system, from /proc around each wrk run): the server's own "
              "process (Cairn's gateway; gunicorn's arbiter), its worker processes, and wrk; and how busy the "
              "machine's cores were.", "",
              "| concurrency | body | Cairn gateway | Cairn workers | wrk→Cairn | azmlinfsrv arbiter | azmlinfsrv workers "
              "| wrk→azmlinfsrv | cores busy (Cairn / ref) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for cell in results:
        c, r = cell["cairn"]["cpu_us"], cell["azmlinfsrv"]["cpu_us"]
        lines.append(f"| {cell['conc']} | {cell['rows']} row{'s' if cell['rows'] > 1 else ''} | {c['front']:.0f} "
                     f"| {c['workers']:.0f} | {c['wrk']:.0f} | {r['front']:.0f} | {r['workers']:.0f} | {r['wrk']:.0f} "
                     f"| {c['busy']:.0%} / {r['busy']:.0%} |")
    lines += ["", f"Deploy-to-first-score (cached environment, instance_count 1): "
              f"median {statistics.median(deploy_times):.2f} s of {', '.join(f'{t:.2f}' for t in deploy_times)} s."]
    text = "\n".join(lines) + "\n"
    (OUT / "serving.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
