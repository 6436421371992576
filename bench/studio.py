#!/usr/bin/env python3
"""Studio benchmark (issue 7): server time of the studio's runs table and metric chart, Cairn
against the calls MLflow's own UI makes for the same views (`mlflow server`, SQLite backend).

The same data goes into both servers through their bulk APIs:
- one experiment `studio` with N_RUNS runs, each with N_PARAMS params and N_METRICS metrics
  (Cairn: `POST …/runs` + one `…/runs/ID/log-batch`; MLflow: `runs/create` + one `runs/log-batch`);
- one run (experiment `studio-series`, so the table keeps exactly N_RUNS runs) with a
  SERIES_POINTS-point series of the metric `loss`, in requests of BATCH points.

Then, after WARMUP untimed requests, N_REQUESTS timed requests of each case, the cases and the two
servers interleaved:
- runs table, first page: Cairn's page `GET /w/{ws}/experiments/studio` (the whole HTML page, signed
  in with the session cookie) against MLflow UI's `POST /ajax-api/2.0/mlflow/runs/search` with the
  body its runs table sends (`max_results` 100, `order_by` ["attributes.start_time DESC"],
  `run_view_type` ACTIVE_ONLY);
- runs table sorted by a metric: the same with `order=metrics.m0 DESC` /
  `order_by` ["metrics.m0 DESC"];
- metric chart: Cairn's `GET /w/{ws}/runs/{id}/metrics/loss/series?points=1000` (LTTB server-side)
  against MLflow UI's chart call `GET /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval
  ?run_ids=ID&metric_key=loss&max_results=320` (the parameters MLflow 3.x's UI sends; its
  `maxResults` default is 320).

Times are wall-clock from a keep-alive http.client connection on loopback, request sent to answer
fully read: the server's time plus loopback transfer, the same for both. Every answer is checked
(status 200, the expected rows / points) before it counts.

Run it through bench/studio.sh (which makes .venv-bench with mlflow) or bench/run.sh studio.

Environment:
  CAIRN_BIN                     the cairn binary (required)
  N_RUNS=10000                  runs in the experiment
  N_PARAMS=10, N_METRICS=20     per run
  SERIES_POINTS=1000000         points of the long series
  BATCH=1000                    points per log-batch request (both servers' maximum)
  SETUP_CLIENTS=4               threads loading the runs
  N_REQUESTS=15                 timed requests per case and server (median and p90 reported)
  WARMUP=3                      untimed requests per case and server first
  MLFLOW_WORKERS=1              `mlflow server --workers`
  MLFLOW_URL=http://…           with REUSE_MLFLOW=1: an `mlflow server` already serving the reused
                                data (its start on a loaded machine can exceed tracking.py's 180 s)
  REUSE_MLFLOW=1                keep MLflow's loaded data in BENCH_DATA/studio/mlflow and reuse it on
                                the next run with the same settings (its load takes ~15 min)
  BENCH_DATA=bench/data         servers' data directories go to BENCH_DATA/studio
  BENCH_OUT=bench/out           results: studio.md
  KEEP_DATA=1                   keep the servers' data directories
"""

import http.client
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tracking  # noqa: E402  (its servers, HTTP client and helpers; one place for each)
from tracking import Conn, mlflow_version, pct, peak_rss_mb, start_cairn, start_mlflow  # noqa: E402
from cairnbench import env_int  # noqa: E402


CAIRN_BIN = os.environ.get("CAIRN_BIN")
N_RUNS = env_int("N_RUNS", 10_000)
N_PARAMS = env_int("N_PARAMS", 10)
N_METRICS = env_int("N_METRICS", 20)
SERIES_POINTS = env_int("SERIES_POINTS", 1_000_000)
BATCH = env_int("BATCH", 1000)
SETUP_CLIENTS = env_int("SETUP_CLIENTS", 4)
N_REQUESTS = env_int("N_REQUESTS", 15)
WARMUP = env_int("WARMUP", 3)
REUSE_MLFLOW = os.environ.get("REUSE_MLFLOW") == "1"
KEEP_DATA = os.environ.get("KEEP_DATA") == "1"
DATA = os.path.join(os.environ.get("BENCH_DATA", os.path.join(HERE, "data")), "studio")
OUT = os.environ.get("BENCH_OUT", os.path.join(HERE, "out"))
WS = "bench"
EXP = "studio"
SERIES_EXP = "studio-series"
SERIES_KEY = "loss"
SORT_KEY = "m0"
CAIRN_POINTS = 1000
MLFLOW_UI_POINTS = 320  # MLflow UI's get-history-bulk-interval max_results
MLFLOW_UI_PAGE = 100    # MLflow UI's runs/search max_results

# tracking.py's exit handler stops the servers it started for us; its own data directory is not ours
# to delete.
tracking.KEEP_DATA = True


def log(msg):
    print(f"[studio] {msg}", file=sys.stderr, flush=True)


def run_data(i):
    """Run i's params and metrics (the same for both servers)."""
    rng = random.Random(i)
    params = {f"p{k}": str(rng.choice([1, 2, 4, 8, 16, 32]) if k % 2 else rng.choice("abcdef"))
              for k in range(N_PARAMS)}
    metrics = {f"m{k}": rng.random() for k in range(N_METRICS)}
    return params, metrics


def series_value(step):
    return 1.0 / (1.0 + step / 1000.0) + 0.05 * math.sin(step / 50.0)


class Cairn:
    name = "Cairn"

    def __init__(self, url, token):
        self.url, self.token = url, token
        self.base = f"/api/v1/workspaces/{WS}"
        self.cookie = None

    def conn(self):
        return Conn(self.url, self.token)

    def setup(self, conn):
        conn.request("POST", "/api/v1/workspaces", {"name": WS})

    def create_run(self, conn, exp, name):
        return conn.request("POST", f"{self.base}/runs", {"experiment": exp, "display_name": name})["id"]

    def log_batch(self, conn, run_id, metrics, params=()):
        body = {"metrics": metrics}
        if params:
            body["params"] = list(params)
        conn.request("POST", f"{self.base}/runs/{run_id}/log-batch", body)

    def sign_in(self):
        """Signs in through the studio's form, as a browser does; keeps the session cookie."""
        u = urllib.parse.urlparse(self.url)
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        # The form first: its CSRF cookie and field must come back with the post.
        c.request("GET", "/login")
        resp = c.getresponse()
        form = resp.read().decode()
        login = [v for k, v in resp.getheaders() if k.lower() == "set-cookie" and v.startswith("cairn_login=")]
        field = re.search(r'name="csrf" value="([^"]+)"', form)
        if not login or not field:
            raise RuntimeError("Cairn: the sign-in form has no CSRF cookie or field")
        body = urllib.parse.urlencode({"token": self.token, "next": "/", "csrf": field.group(1)})
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": login[0].split(";", 1)[0]}
        c.request("POST", "/login", body=body, headers=headers)
        resp = c.getresponse()
        resp.read()
        cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie" and v.startswith("cairn_session=")]
        if resp.status not in (302, 303) or not cookies:
            raise RuntimeError(f"Cairn: signing in answered {resp.status} without a session cookie")
        self.cookie = cookies[0].split(";", 1)[0]
        c.close()

    def page_conn(self):
        conn = Conn(self.url)
        conn.headers = {"Cookie": self.cookie}
        return conn


class MLflow:
    name = "MLflow"

    def __init__(self, url):
        self.url = url

    def conn(self):
        return Conn(self.url)

    def setup(self, conn):
        pass

    def create_experiment(self, conn, name):
        return conn.request("POST", "/api/2.0/mlflow/experiments/create", {"name": name})["experiment_id"]

    def create_run(self, conn, exp_id, name):
        body = {"experiment_id": exp_id, "run_name": name, "start_time": int(time.time() * 1000)}
        return conn.request("POST", "/api/2.0/mlflow/runs/create", body)["run"]["info"]["run_id"]

    def log_batch(self, conn, run_id, metrics, params=()):
        body = {"run_id": run_id, "metrics": metrics}
        if params:
            body["params"] = list(params)
        conn.request("POST", "/api/2.0/mlflow/runs/log-batch", body)


def load(server, exp_ref, series_exp_ref):
    """Loads the runs and the long series; returns (ids by index, series run id, seconds)."""
    t0 = time.perf_counter()
    ids = [None] * N_RUNS
    next_i = iter(range(N_RUNS))
    lock = threading.Lock()
    errors = []
    ts = int(time.time() * 1000)

    def worker():
        conn = server.conn()
        try:
            while True:
                with lock:
                    i = next(next_i, None)
                if i is None:
                    break
                params, metrics = run_data(i)
                run = server.create_run(conn, exp_ref, f"run-{i:05d}")
                server.log_batch(conn, run,
                                 [{"key": k, "value": v, "step": 0, "timestamp": ts + i} for k, v in metrics.items()],
                                 [{"key": k, "value": v} for k, v in params.items()])
                ids[i] = run
                if i % 1000 == 999:
                    log(f"{server.name}: {i + 1} runs")
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(SETUP_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    runs_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    conn = server.conn()
    series = server.create_run(conn, series_exp_ref, "series")
    for start in range(0, SERIES_POINTS, BATCH):
        steps = range(start, min(start + BATCH, SERIES_POINTS))
        server.log_batch(conn, series, [{"key": SERIES_KEY, "value": series_value(s), "step": s,
                                         "timestamp": ts + s} for s in steps])
        if start % 100_000 == 0 and start:
            log(f"{server.name}: {start:,} points")
    conn.close()
    series_s = time.perf_counter() - t1
    return ids, series, runs_s, series_s


def mlflow_marker():
    return {"N_RUNS": N_RUNS, "N_PARAMS": N_PARAMS, "N_METRICS": N_METRICS, "SERIES_POINTS": SERIES_POINTS,
            "version": mlflow_version()}


# ---------------------------------------------------------------------------------------------
# The measured requests: each returns a check of its answer (raises if wrong).

ROW = re.compile(r'<tr[^>]*\bdata-run-id="([^"]+)"')


def timed(conn, method, path, body=None):
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    t0 = time.perf_counter()
    status, data = conn._send(method, path, body)
    dt = (time.perf_counter() - t0) * 1000
    if status != 200:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {data[:300]!r}")
    return dt, data


def main():
    if not CAIRN_BIN:
        raise SystemExit("set CAIRN_BIN to the cairn binary, or run bench/run.sh studio")
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(DATA, exist_ok=True)
    load_before = open("/proc/loadavg").read().split()[:3]
    expected = [run_data(i)[1][SORT_KEY] for i in range(N_RUNS)]
    top = max(range(N_RUNS), key=lambda i: expected[i])  # the run first in "metrics.m0 DESC"

    # MLflow (loaded first: it is the slow one; its data may be reused).
    ml_dir = os.path.join(DATA, "mlflow")
    marker_path = os.path.join(DATA, "mlflow-loaded.json")
    marker = None
    if REUSE_MLFLOW and os.path.exists(marker_path):
        marker = json.load(open(marker_path))
        if marker.get("settings") != mlflow_marker():
            marker = None
    if marker is None:
        shutil.rmtree(ml_dir, ignore_errors=True)
        if os.path.exists(marker_path):
            os.remove(marker_path)
    if os.environ.get("MLFLOW_URL") and marker is not None:
        ml = MLflow(os.environ["MLFLOW_URL"])  # already serving the reused data
    else:
        ml = MLflow(start_mlflow(ml_dir))
    ver = mlflow_version()
    if marker is None:
        c = ml.conn()
        exp_id = ml.create_experiment(c, EXP)
        series_exp_id = ml.create_experiment(c, SERIES_EXP)
        c.close()
        log(f"MLflow {ver}: loading {N_RUNS} runs and a {SERIES_POINTS:,}-point series")
        ml_ids, ml_series, ml_runs_s, ml_series_s = load(ml, exp_id, series_exp_id)
        marker = {"settings": mlflow_marker(), "experiment_id": exp_id, "ids": ml_ids, "series": ml_series,
                  "runs_s": ml_runs_s, "series_s": ml_series_s}
        with open(marker_path, "w") as f:
            json.dump(marker, f)
    else:
        log(f"MLflow {ver}: reusing the data loaded earlier ({marker_path})")
    ml.exp_id, ml.ids, ml.series = marker["experiment_id"], marker["ids"], marker["series"]
    log(f"MLflow: runs loaded in {marker['runs_s']:.0f} s, series in {marker['series_s']:.0f} s")

    # Cairn (always fresh).
    cairn_dir = os.path.join(DATA, "cairn")
    shutil.rmtree(cairn_dir, ignore_errors=True)
    url, token, cairn_pid = start_cairn(cairn_dir)
    cairn = Cairn(url, token)
    c = cairn.conn()
    cairn.setup(c)
    c.close()
    log(f"Cairn: loading {N_RUNS} runs and a {SERIES_POINTS:,}-point series")
    cairn.ids, cairn.series, cairn_runs_s, cairn_series_s = load(cairn, EXP, SERIES_EXP)
    log(f"Cairn: runs loaded in {cairn_runs_s:.0f} s, series in {cairn_series_s:.0f} s")
    cairn.sign_in()

    # The cases: (label, {server: (method, path, body)}, {server: check(data)}).
    def cairn_table(sorted_):
        def check(data):
            rows = ROW.findall(data.decode())
            if not rows:
                raise RuntimeError("Cairn's runs table has no row")
            if sorted_ and rows[0] != cairn.ids[top]:
                raise RuntimeError(f"Cairn's sorted table starts with {rows[0]}, expected {cairn.ids[top]}")
            return f"{len(rows)} rows"
        return check

    def ml_table(sorted_):
        def check(data):
            runs = json.loads(data).get("runs", [])
            if len(runs) != MLFLOW_UI_PAGE:
                raise RuntimeError(f"MLflow returned {len(runs)} runs")
            if sorted_ and runs[0]["info"]["run_id"] != ml.ids[top]:
                raise RuntimeError("MLflow's sorted page does not start with the best run")
            return f"{len(runs)} rows"
        return check

    def cairn_series(data):
        doc = json.loads(data)
        if doc.get("total_points") != SERIES_POINTS or not 0 < len(doc["points"]) <= CAIRN_POINTS:
            raise RuntimeError(f"Cairn's series: total {doc.get('total_points')}, {len(doc.get('points', []))} points")
        return f"{len(doc['points'])} points"

    def ml_series(data):
        doc = json.loads(data)
        n = len(doc.get("metrics", []))
        if not 0 < n <= MLFLOW_UI_POINTS + 2:
            raise RuntimeError(f"MLflow's sampled history has {n} points")
        return f"{n} points"

    def search_body(order):
        return {"experiment_ids": [ml.exp_id], "filter": "", "run_view_type": "ACTIVE_ONLY",
                "max_results": MLFLOW_UI_PAGE, "order_by": [order]}

    q = urllib.parse.quote
    cases = [
        ("runs table, first page (default order)",
         {"Cairn": ("GET", f"/w/{WS}/experiments/{EXP}", None),
          "MLflow": ("POST", "/ajax-api/2.0/mlflow/runs/search", search_body("attributes.start_time DESC"))},
         {"Cairn": cairn_table(False), "MLflow": ml_table(False)}),
        (f"runs table sorted by metrics.{SORT_KEY} DESC",
         {"Cairn": ("GET", f"/w/{WS}/experiments/{EXP}?order={q(f'metrics.{SORT_KEY} DESC')}", None),
          "MLflow": ("POST", "/ajax-api/2.0/mlflow/runs/search", search_body(f"metrics.{SORT_KEY} DESC"))},
         {"Cairn": cairn_table(True), "MLflow": ml_table(True)}),
        (f"metric chart, {SERIES_POINTS:,}-point series",
         {"Cairn": ("GET", f"/w/{WS}/runs/{cairn.series}/metrics/{SERIES_KEY}/series?points={CAIRN_POINTS}", None),
          "MLflow": ("GET", f"/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval?run_ids={ml.series}"
                            f"&metric_key={SERIES_KEY}&max_results={MLFLOW_UI_POINTS}", None)},
         {"Cairn": cairn_series, "MLflow": ml_series}),
    ]
    conns = {"Cairn": cairn.page_conn(), "MLflow": ml.conn()}
    times = {(label, s): [] for label, _, _ in cases for s in ("Cairn", "MLflow")}
    first, sizes, answers = {}, {}, {}
    for i in range(WARMUP + N_REQUESTS):
        for label, reqs, checks in cases:
            for name in (("Cairn", "MLflow") if i % 2 == 0 else ("MLflow", "Cairn")):
                method, path, body = reqs[name]
                dt, data = timed(conns[name], method, path, body)
                if i == 0:
                    first[(label, name)] = dt
                    sizes[(label, name)] = len(data)
                    answers[(label, name)] = checks[name](data)
                    log(f"{name}: {label}: {answers[(label, name)]}, {len(data):,} bytes, first {dt:.1f} ms")
                if i >= WARMUP:
                    times[(label, name)].append(dt)
    for c in conns.values():
        c.close()
    cairn_rss = peak_rss_mb(cairn_pid)
    load_after = open("/proc/loadavg").read().split()[:3]

    lines = [
        f"| view ({N_RUNS:,} runs × {N_PARAMS} params × {N_METRICS} metrics) | Cairn median ms (p90) | "
        f"MLflow {ver} UI call median ms (p90) | MLflow / Cairn | Cairn under 200 ms? |",
        "|---|---|---|---|---|",
    ]
    for label, _, _ in cases:
        a, b = times[(label, "Cairn")], times[(label, "MLflow")]
        ma, mb = statistics.median(a), statistics.median(b)
        lines.append(f"| {label} | {ma:.1f} ({pct(a, 90):.1f}) | {mb:.1f} ({pct(b, 90):.1f}) | {mb / ma:.1f}x | "
                     f"{'yes' if pct(a, 90) < 200 else '**no**'} (p90 {pct(a, 90):.0f} ms) |")
    notes = [
        "",
        f"{N_REQUESTS} timed requests per row and server after {WARMUP} untimed, interleaved. Answers: "
        + "; ".join(f"{label}: Cairn {answers[(label, 'Cairn')]} ({sizes[(label, 'Cairn')]:,} bytes), "
                    f"MLflow {answers[(label, 'MLflow')]} ({sizes[(label, 'MLflow')]:,} bytes)"
                    for label, _, _ in cases) + ".",
        f"Cairn: the full HTML page (session cookie) for the table, `…/series?points={CAIRN_POINTS}` (LTTB) for "
        f"the chart. MLflow: `POST /ajax-api/2.0/mlflow/runs/search` (max_results {MLFLOW_UI_PAGE}, "
        f"run_view_type ACTIVE_ONLY) and `GET /ajax-api/2.0/mlflow/metrics/get-history-bulk-interval` "
        f"(max_results {MLFLOW_UI_POINTS}), as its UI sends them; the UI's page render in the browser is not "
        f"counted on either side. `mlflow server --backend-store-uri sqlite:///… --workers "
        f"{tracking.MLFLOW_WORKERS}`; Cairn `cairn server`, embedded SQLite.",
        f"Loading: Cairn {cairn_runs_s:.0f} s for the runs + {cairn_series_s:.0f} s for the series; MLflow "
        f"{marker['runs_s']:.0f} s + {marker['series_s']:.0f} s ({SETUP_CLIENTS} clients for the runs, 1 for the "
        f"series, {BATCH} points per request)."
        + (f" Cairn server peak RSS {cairn_rss:.0f} MB." if cairn_rss else "")
        + f" Load average before {' '.join(load_before)}, after {' '.join(load_after)}.",
    ]
    table = "\n".join(lines + notes) + "\n"
    print(table)
    with open(os.path.join(OUT, "studio.md"), "w") as f:
        f.write(table)
    tracking._stop_all()
    if not KEEP_DATA:
        shutil.rmtree(cairn_dir, ignore_errors=True)
        if not REUSE_MLFLOW:
            shutil.rmtree(ml_dir, ignore_errors=True)
            if os.path.exists(marker_path):
                os.remove(marker_path)


if __name__ == "__main__":
    main()
