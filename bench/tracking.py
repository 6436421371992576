#!/usr/bin/env python3
"""Tracking benchmark: Cairn against an `mlflow server` (SQLite backend), both on loopback.

Measures, through each server's REST API and with the same client code:

1. metric ingestion (metrics/s) through the batch API, from 1 client and from CLIENTS
   concurrent clients (threads, one keep-alive connection each, each logging to its own run);
   request bodies are encoded before the clock starts, so the client's JSON work is not counted;
2. the setup of N_RUNS runs in one experiment, each with 5 metrics and 3 params (one create and
   one log-batch request per run, SETUP_CLIENTS threads) — reported for information;
3. search latency over those runs: `metrics.m0 < 0.5 and params.p0 = 'a'`, ordered by
   `metrics.m1 ASC`, first page of 100; median and p90 of N_QUERIES queries per server, after
   2 warm-up queries, the two servers' queries interleaved. Both servers' pages are checked
   against the expected answer computed here.

Run it through bench/tracking.sh (which makes the venv with mlflow) or bench/run.sh tracking.

Environment:
  CAIRN_BIN                       the cairn binary (required)
  N_METRICS=200000                metrics logged in each ingestion case (split over the clients)
  BATCH=1000                      metrics per log-batch request (both servers' maximum is 1000)
  CLIENTS=8                       concurrent clients of the second ingestion case
  INGEST_REPS=3                   repetitions of each ingestion case (the median is reported)
  N_RUNS=10000                    runs created for the search case
  SETUP_CLIENTS=4                 threads creating those runs
  N_QUERIES=20                    timed search queries per server
  MLFLOW_WORKERS=1                `mlflow server --workers`
  BENCH_DATA=bench/data           servers' data directories go to BENCH_DATA/tracking
  BENCH_OUT=bench/out             results: tracking.md
  KEEP_DATA=1                     keep the servers' data directories
"""

import atexit
import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import cairnbench  # noqa: E402  (starting cairn server: one way for every Python benchmark)
from cairnbench import env_int  # noqa: E402


CAIRN_BIN = os.environ.get("CAIRN_BIN")
N_METRICS = env_int("N_METRICS", 200_000)
BATCH = env_int("BATCH", 1000)
CLIENTS = env_int("CLIENTS", 8)
INGEST_REPS = env_int("INGEST_REPS", 3)
N_RUNS = env_int("N_RUNS", 10_000)
SETUP_CLIENTS = env_int("SETUP_CLIENTS", 4)
N_QUERIES = env_int("N_QUERIES", 20)
MLFLOW_WORKERS = env_int("MLFLOW_WORKERS", 1)
DATA = os.path.join(os.environ.get("BENCH_DATA", os.path.join(HERE, "data")), "tracking")
OUT = os.environ.get("BENCH_OUT", os.path.join(HERE, "out"))
KEEP_DATA = os.environ.get("KEEP_DATA") == "1"

METRIC_KEYS = ["loss", "accuracy", "lr", "grad_norm", "throughput"]  # ingestion: 5 series per run
FILTER = "metrics.m0 < 0.5 and params.p0 = 'a'"
ORDER_BY = ["metrics.m1 ASC"]
PAGE = 100


def log(msg):
    print(f"[tracking] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Servers

_procs = []  # (Popen, is_group_leader)


def _stop_all():
    for proc, group in reversed(_procs):
        if proc.poll() is not None:
            continue
        try:
            if group:
                os.killpg(proc.pid, signal.SIGTERM)
            else:
                proc.terminate()
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                if group:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except ProcessLookupError:
                pass
    _procs.clear()
    if not KEEP_DATA:
        shutil.rmtree(DATA, ignore_errors=True)


atexit.register(_stop_all)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))


def start_cairn(data_dir):
    """Starts `cairn server` (bench/cairnbench.py), stopped at exit; returns (url, token, pid)."""
    server = cairnbench.start_cairn(CAIRN_BIN, data_dir)
    _procs.append((server.proc, False))
    return server.url, server.token, server.pid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(data_dir):
    """Starts `mlflow server` with a SQLite backend; returns the URL."""
    os.makedirs(os.path.join(data_dir, "art"), exist_ok=True)
    port = free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log_path = data_dir + ".log"
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{data_dir}/mlflow.db",
             "--default-artifact-root", f"{data_dir}/art", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(MLFLOW_WORKERS)],
            cwd=data_dir, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
            env={**os.environ, "MLFLOW_TRACKING_URI": ""}, start_new_session=True)
    _procs.append((proc, True))
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"mlflow server exited:\n{open(log_path).read()}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return url
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"mlflow server did not start; see {log_path}")


def mlflow_version():
    try:
        from importlib.metadata import version
        return version("mlflow")
    except Exception:  # noqa: BLE001
        return "?"


# ---------------------------------------------------------------------------------------------
# HTTP: one keep-alive connection per client thread


class Conn:
    def __init__(self, url, token=None):
        u = urllib.parse.urlparse(url)
        self.host, self.port = u.hostname, u.port
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.c = None
        self.retries = 0  # answers 429/503 ("retry shortly") that were retried

    def request(self, method, path, body=None):
        """Sends a request (body: bytes or a JSON-able object); returns the decoded JSON answer.
        A 429 or 503 answer is retried after 10 ms (at most 100 times), as a real client would; the
        retries are counted in self.retries and reported."""
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        for _ in range(100):
            status, data = self._send(method, path, body)
            if status not in (429, 503):
                break
            self.retries += 1
            time.sleep(0.01)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:500]!r}")
        return json.loads(data) if data else None

    def _send(self, method, path, body):
        for attempt in (1, 2):
            if self.c is None:
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=600)
            try:
                self.c.request(method, path, body=body, headers=self.headers)
                resp = self.c.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: reconnect once.
                self.c.close()
                self.c = None
                if attempt == 2:
                    raise
        return resp.status, data

    def close(self):
        if self.c is not None:
            self.c.close()


class Cairn:
    name = "Cairn"

    def __init__(self, url, token, ws):
        self.url, self.token, self.ws = url, token, ws
        self.base = f"/api/v1/workspaces/{ws}"

    def conn(self):
        return Conn(self.url, self.token)

    def create_experiment(self, conn, name):
        return name  # experiments are created with their first run

    def create_run(self, conn, exp):
        return conn.request("POST", f"{self.base}/runs", {"experiment": exp})["id"]

    def batch_body(self, run_id, metrics, params=()):
        body = {"metrics": metrics}
        if params:
            body["params"] = list(params)
        return json.dumps(body).encode()

    def log_batch(self, conn, run_id, body):
        conn.request("POST", f"{self.base}/runs/{run_id}/log-batch", body)

    def search_body(self, exp):
        return json.dumps({"experiment": exp, "filter": FILTER, "order_by": ORDER_BY,
                           "page_size": PAGE}).encode()

    def search(self, conn, body):
        """Returns the page's runs as (m1, p0) pairs."""
        page = conn.request("POST", f"{self.base}/runs/search", body)
        return [(r["metrics"]["m1"]["value"], r["params"]["p0"]) for r in page["runs"]]

    def latest_step(self, conn, run_id, key):
        run = conn.request("GET", f"{self.base}/runs/{run_id}")
        return run["metrics"][key]["step"]


class MLflow:
    name = "MLflow"

    def __init__(self, url):
        self.url = url

    def conn(self):
        return Conn(self.url)

    def create_experiment(self, conn, name):
        return conn.request("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]

    def create_run(self, conn, exp):
        body = {"experiment_id": exp, "start_time": int(time.time() * 1000)}
        return conn.request("POST", "/api/2.0/mlflow/runs/create", body)["run"]["info"]["run_id"]

    def batch_body(self, run_id, metrics, params=()):
        body = {"run_id": run_id, "metrics": metrics}
        if params:
            body["params"] = list(params)
        return json.dumps(body).encode()

    def log_batch(self, conn, run_id, body):
        conn.request("POST", "/api/2.0/mlflow/runs/log-batch", body)

    def search_body(self, exp):
        return json.dumps({"experiment_ids": [exp], "filter": FILTER, "order_by": ORDER_BY,
                           "max_results": PAGE}).encode()

    def search(self, conn, body):
        page = conn.request("POST", "/api/2.0/mlflow/runs/search", body)
        out = []
        for r in page.get("runs", []):
            metrics = {m["key"]: m["value"] for m in r["data"].get("metrics", [])}
            params = {p["key"]: p["value"] for p in r["data"].get("params", [])}
            out.append((metrics["m1"], params["p0"]))
        return out

    def latest_step(self, conn, run_id, key):
        run = conn.request("GET", f"/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
        return max(m["step"] for m in run["data"]["metrics"] if m["key"] == key)


# ---------------------------------------------------------------------------------------------
# Workloads


def ingestion_batches(n_metrics, seed):
    """Lists of metric dicts, BATCH each: METRIC_KEYS series over increasing steps."""
    rng = random.Random(seed)
    t0 = int(time.time() * 1000)
    batches, cur, step = [], [], 0
    for i in range(n_metrics):
        key = METRIC_KEYS[i % len(METRIC_KEYS)]
        cur.append({"key": key, "value": rng.random(), "step": step, "timestamp": t0 + step})
        if i % len(METRIC_KEYS) == len(METRIC_KEYS) - 1:
            step += 1
        if len(cur) == BATCH:
            batches.append(cur)
            cur = []
    if cur:
        batches.append(cur)
    return batches


def ingest(server, clients, n_metrics, exp):
    """Logs n_metrics metrics from `clients` threads, each to its own run.
    Returns (metrics/s, seconds, 429/503 answers retried)."""
    per_client = [n_metrics // clients + (1 if c < n_metrics % clients else 0) for c in range(clients)]
    conns = [server.conn() for _ in range(clients)]
    runs = [server.create_run(conns[c], exp) for c in range(clients)]
    bodies = []
    for c in range(clients):
        batches = ingestion_batches(per_client[c], seed=1000 + c)
        bodies.append([server.batch_body(runs[c], b) for b in batches])
    barrier = threading.Barrier(clients + 1)
    ends = [0.0] * clients
    errors = []

    def client(c):
        try:
            barrier.wait()
            for body in bodies[c]:
                server.log_batch(conns[c], runs[c], body)
            ends[c] = time.perf_counter()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
            ends[c] = time.perf_counter()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = max(ends) - start
    if errors:
        raise errors[0]
    # Everything arrived: each run's latest step is the last one sent.
    retries = sum(c.retries for c in conns)
    for c in range(clients):
        expected = bodies[c] and json.loads(bodies[c][-1])["metrics"][-1]["step"]
        got = server.latest_step(conns[c], runs[c], METRIC_KEYS[0])
        if got != expected and per_client[c] >= len(METRIC_KEYS):
            raise RuntimeError(f"{server.name}: run {runs[c]} has latest step {got}, expected {expected}")
        conns[c].close()
    return n_metrics / elapsed, elapsed, retries


def search_data(n_runs):
    """Each run's 5 metrics and 3 params (the same for both servers)."""
    rng = random.Random(42)
    runs = []
    for _ in range(n_runs):
        metrics = {f"m{k}": rng.random() for k in range(5)}
        params = {"p0": rng.choice("abcd"), "p1": str(rng.randint(1, 10)), "p2": rng.choice(["x", "y"])}
        runs.append((metrics, params))
    return runs


def expected_page(data):
    match = [(m["m1"], p["p0"]) for m, p in data if m["m0"] < 0.5 and p["p0"] == "a"]
    match.sort()
    return match[:PAGE], len(match)


def populate(server, exp, data):
    """Creates one run per item of data (create + one log-batch); returns (seconds, retries)."""
    ts = int(time.time() * 1000)
    errors = []
    retries = []
    next_i = iter(range(len(data)))
    lock = threading.Lock()

    def worker():
        conn = server.conn()
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    break
                metrics, params = data[i]
                run = server.create_run(conn, exp)
                body = server.batch_body(
                    run,
                    [{"key": k, "value": v, "step": 0, "timestamp": ts} for k, v in metrics.items()],
                    [{"key": k, "value": v} for k, v in params.items()])
                server.log_batch(conn, run, body)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            retries.append(conn.retries)
            conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(SETUP_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t0, sum(retries)


def pct(values, p):
    """The p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


# ---------------------------------------------------------------------------------------------


def main():
    if not CAIRN_BIN:
        raise SystemExit("set CAIRN_BIN to the cairn binary, or run bench/run.sh tracking")
    shutil.rmtree(DATA, ignore_errors=True)
    os.makedirs(DATA)
    os.makedirs(OUT, exist_ok=True)
    load_before = open("/proc/loadavg").read().split()[:3]

    url, token, cairn_pid = start_cairn(os.path.join(DATA, "cairn"))
    subprocess.run([CAIRN_BIN, "workspace", "create", "bench"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "CAIRN_URL": url, "CAIRN_TOKEN": token})
    cairn = Cairn(url, token, "bench")
    log(f"cairn server pid {cairn_pid} at {url}")
    ml_url = start_mlflow(os.path.join(DATA, "mlflow"))
    ml = MLflow(ml_url)
    ver = mlflow_version()
    log(f"mlflow {ver} server at {ml_url} (--workers {MLFLOW_WORKERS})")

    for server in (cairn, ml):
        c = server.conn()
        server.exp_ingest = server.create_experiment(c, "ingest")
        server.exp_search = server.create_experiment(c, "search")
        c.close()

    # 1. Ingestion: INGEST_REPS repetitions of each case, alternating which server goes first.
    rates = {}    # (server, clients) -> [metrics/s]
    retried = {}  # (server, clients) -> 429/503 answers retried, over all repetitions
    for clients in (1, CLIENTS):
        for rep in range(INGEST_REPS):
            order = (cairn, ml) if (rep + (clients > 1)) % 2 == 0 else (ml, cairn)
            for server in order:
                rate, secs, retries = ingest(server, clients, N_METRICS, server.exp_ingest)
                rates.setdefault((server.name, clients), []).append(rate)
                retried[(server.name, clients)] = retried.get((server.name, clients), 0) + retries
                log(f"{server.name}: {N_METRICS} metrics from {clients} client(s) in {secs:.2f} s: "
                    f"{rate:,.0f} metrics/s" + (f" ({retries} answers 429/503 retried)" if retries else ""))

    # 2. Search data.
    data = search_data(N_RUNS)
    want, n_match = expected_page(data)
    setup = {}
    for server in (cairn, ml):
        log(f"{server.name}: creating {N_RUNS} runs with 5 metrics and 3 params each ({SETUP_CLIENTS} clients)")
        secs, retries = populate(server, server.exp_search, data)
        setup[server.name] = (secs, retries)
        log(f"{server.name}: {N_RUNS} runs in {secs:.1f} s ({N_RUNS / secs:,.0f} runs/s)"
            + (f" ({retries} answers 429/503 retried)" if retries else ""))

    # 3. Search: 2 warm-up queries each, then N_QUERIES each, interleaved.
    conns = {s.name: s.conn() for s in (cairn, ml)}
    bodies = {s.name: s.search_body(s.exp_search) for s in (cairn, ml)}
    times = {s.name: [] for s in (cairn, ml)}
    first = {}
    for i in range(N_QUERIES + 2):
        for server in ((cairn, ml) if i % 2 == 0 else (ml, cairn)):
            t0 = time.perf_counter()
            page = server.search(conns[server.name], bodies[server.name])
            dt = (time.perf_counter() - t0) * 1000
            if i == 0:
                first[server.name] = dt
                # Values compared to 1e-12: Cairn's JSON parsing may change a float's last bit.
                same = len(page) == len(want) and all(
                    a[1] == b[1] and math.isclose(a[0], b[0], rel_tol=1e-12) for a, b in zip(page, want))
                if not same:
                    diff = [(j, a, b) for j, (a, b) in enumerate(zip(page, want)) if a != b]
                    raise RuntimeError(f"{server.name}: search returned {len(page)} runs, expected "
                                       f"{len(want)}; first differences (index, got, expected): {diff[:3]}")
            if i >= 2:
                times[server.name].append(dt)
    for c in conns.values():
        c.close()
    log(f"search: {n_match} of {N_RUNS} runs match; both servers returned the expected first {len(want)}")
    cairn_rss = peak_rss_mb(cairn_pid)
    load_after = open("/proc/loadavg").read().split()[:3]

    # Report.
    def cell(v, fmt, extra=""):
        return fmt(v) + extra

    def row(label, a, b, fmt, higher_is_better, target, a_extra="", b_extra=""):
        ratio = a / b if higher_is_better else b / a
        return f"| {label} | {cell(a, fmt, a_extra)} | {cell(b, fmt, b_extra)} | {ratio:.1f}x | {target} |"

    def spread(name, clients):
        v = rates[(name, clients)]
        r = retried[(name, clients)]
        out = f" ({min(v):,.0f}–{max(v):,.0f})" if len(v) > 1 else ""
        return out + (f"; {r} answers 503 retried" if r else "")

    per_s = lambda v: f"{v:,.0f}"  # noqa: E731
    one = lambda v: f"{v:.1f}"  # noqa: E731
    med = lambda name, clients: statistics.median(rates[(name, clients)])  # noqa: E731
    reps = f"median of {INGEST_REPS} (min–max)" if INGEST_REPS > 1 else "one repetition"
    lines = [
        f"| measure | Cairn | MLflow {ver} | Cairn advantage | target |",
        "|---|---|---|---|---|",
        row(f"ingestion, 1 client: metrics/s, {reps}; {N_METRICS:,} metrics, {BATCH} per request",
            med("Cairn", 1), med("MLflow", 1), per_s, True, "≥ 10x",
            spread("Cairn", 1), spread("MLflow", 1)),
        row(f"ingestion, {CLIENTS} clients, one run each: metrics/s, {reps}; {N_METRICS:,} metrics in all",
            med("Cairn", CLIENTS), med("MLflow", CLIENTS), per_s, True, "≥ 10x",
            spread("Cairn", CLIENTS), spread("MLflow", CLIENTS)),
        row(f"search over {N_RUNS:,} runs: median ms of {N_QUERIES} ({n_match:,} match; first {PAGE}, "
            f"ordered by metrics.m1)", statistics.median(times["Cairn"]), statistics.median(times["MLflow"]),
            one, False, "≥ 10x"),
        row("search: p90 ms", pct(times["Cairn"], 90), pct(times["MLflow"], 90), one, False, ""),
        row("search: first query ms (untimed warm-up)", first["Cairn"], first["MLflow"], one, False, ""),
        row(f"setup of the {N_RUNS:,} runs (create + log-batch of 5 metrics and 3 params each, "
            f"{SETUP_CLIENTS} clients): s", setup["Cairn"][0], setup["MLflow"][0], one, False, "",
            f"; {setup['Cairn'][1]} answers 503 retried" if setup["Cairn"][1] else "",
            f"; {setup['MLflow'][1]} answers 503 retried" if setup["MLflow"][1] else ""),
    ]
    notes = [
        "",
        f"Search filter `{FILTER}`, order `{ORDER_BY[0]}`, page of {PAGE}; both servers' first pages "
        f"checked against the expected runs. Both servers on 127.0.0.1 of this machine ({os.cpu_count()} cores), "
        f"with the clients (Python threads, one keep-alive http.client connection each, request bodies "
        f"encoded before the clock starts; a 429/503 answer is retried after 10 ms). "
        f"MLflow: `mlflow server --backend-store-uri sqlite:///… --workers {MLFLOW_WORKERS}`; "
        f"Cairn: `cairn server`, embedded SQLite (WAL, synchronous=NORMAL)."
        + (f" Cairn server peak RSS {cairn_rss:.0f} MB." if cairn_rss else "")
        + f" Load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
    ]
    table = "\n".join(lines + notes) + "\n"
    print(table)
    with open(os.path.join(OUT, "tracking.md"), "w") as f:
        f.write(table)


if __name__ == "__main__":
    main()
